//! The `mastodon` channel end to end: events built from the fake server's
//! statuses go through the real runtime and SQLite log into the channel, which
//! republishes them on a target account of the same fake server. Each test waits
//! for a condition on the fake's state (bounded by a deadline), never for a fixed time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use fedistream_connectors::mastodon::client::Secret;
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::sink::{MastodonSink, MastodonSinkConfig, MediaMode, MARKER};
use fedistream_connectors::testing::{FakeConfig, FakeMastodon, NewStatus, Posted};
use fedistream_core::event::{Event, EventKind};
use fedistream_core::post::Via;
use fedistream_core::runtime::{self, ChannelSpec, Pipeline, RunSummary, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::{DeadLetter, Log, LogRecord, Sink, SinkContext, Source, SourceBatch, SourceContext, SourceError};
use fedistream_process::NormalizeContext;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "mirror-token";
const TARGET: &str = "mirror";
const DEADLINE: Duration = Duration::from_secs(20);

/// A source fed by the test, batch by batch.
struct ChanSource(mpsc::UnboundedReceiver<Vec<Event>>);

#[async_trait]
impl Source for ChanSource {
    async fn run(mut self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        loop {
            tokio::select! {
                b = self.0.recv() => match b {
                    Some(events) => { ctx.emitter.emit(SourceBatch { events: fedistream_core::event::encode_all(events), state: vec![] }).await?; }
                    None => return Ok(()),
                },
                _ = ctx.shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

struct Harness {
    fake: FakeMastodon,
    dir: tempfile::TempDir,
    tx: Option<mpsc::UnboundedSender<Vec<Event>>>,
    stop: CancellationToken,
    run: Option<JoinHandle<RunSummary>>,
}

fn sink_config() -> MastodonSinkConfig {
    let mut c = MastodonSinkConfig { connection: "target".into(), ..Default::default() };
    c.delivery.retry_initial = Duration::from_millis(20);
    c.delivery.retry_max = Duration::from_millis(200);
    c
}

impl Harness {
    async fn start(fake_cfg: FakeConfig, cfg: MastodonSinkConfig) -> Harness {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("debug,hyper=info,reqwest=info,h2=info").try_init();
        let fake = FakeMastodon::start(fake_cfg).await;
        fake.add_account("alice", Default::default());
        fake.add_token(TOKEN, TARGET);
        let mut h = Harness { fake, dir: tempfile::tempdir().unwrap(), tx: None, stop: CancellationToken::new(), run: None };
        h.launch(cfg);
        h.wait_open().await;
        h
    }

    fn launch(&mut self, cfg: MastodonSinkConfig) {
        let log = SqliteLog::open(self.dir.path().join("log.db"), SqliteOptions::default()).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx = Some(tx);
        let delivery = cfg.delivery.clone();
        let sink = MastodonSink::new(cfg, self.fake.base_url().parse().unwrap(), Secret::new(TOKEN), RateLimiters::default()).unwrap();
        let p = Pipeline {
            log,
            processors: vec![],
            sources: vec![SourceSpec::new("m", Box::new(ChanSource(rx)), DeadLetter::new(self.dir.path().join("dl-source.jsonl")))],
            channels: vec![ChannelSpec {
                name: "mirror".into(),
                group: "fedistream.channel.mirror".into(),
                topic: fedistream_core::log::EVENTS.into(),
                sink: Box::new(sink),
                route: None,
                batch: delivery.batch(),
                retry: delivery.retry(),
                dead_letter: DeadLetter::new(self.dead_letters_path()),
            }],
            options: RuntimeOptions { status_interval: Duration::from_millis(50), ..RuntimeOptions::default() },
            progress: None,
        };
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        self.run = Some(tokio::spawn(async move { runtime::run(p, stop).await.unwrap() }));
    }

    async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(r) = self.run.take() {
            r.await.unwrap();
        }
    }

    fn dead_letters_path(&self) -> std::path::PathBuf {
        self.dir.path().join("dl-channel.jsonl")
    }

    fn dead_letters(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dead_letters_path()).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The channel has opened: it read the target's statuses (reconciliation).
    async fn wait_open(&self) {
        let id = self.fake.account_id(TARGET).unwrap();
        let path = format!("/api/v1/accounts/{id}/statuses");
        self.wait("the channel to open", || self.fake.requests().iter().any(|r| r.path == path)).await;
    }

    fn send(&self, events: Vec<Event>) {
        self.tx.as_ref().unwrap().send(events).unwrap();
    }

    async fn wait(&self, what: &str, pred: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !pred() {
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; target statuses: {:#?}", self.reposts());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The target account's statuses, newest first.
    fn reposts(&self) -> Vec<Value> {
        self.fake.statuses_by(TARGET)
    }

    fn created(&self) -> usize {
        self.fake.posts_created(TARGET)
    }

    /// `kind` event for a status of the fake server, as the source would build it.
    fn event(&self, kind: EventKind, status_id: &str) -> Event {
        let all: Vec<Value> = ["alice", TARGET].iter().flat_map(|u| self.fake.statuses_by(u)).collect();
        let raw = all.into_iter().find(|s| s["id"] == status_id).unwrap_or_else(|| panic!("no status {status_id}"));
        let ctx = NormalizeContext { instance: &self.fake.host(), via: Via::Rest, received_at: Utc::now() };
        let post = fedistream_process::parse_and_normalize(&raw.to_string(), &ctx).unwrap();
        match kind {
            EventKind::Updated => Event::updated("m", post),
            _ => Event::created("m", post),
        }
    }

    fn deleted(&self, of: &Event) -> Event {
        Event { kind: EventKind::Deleted, post: None, observed_at: Utc::now(), ..of.clone() }
    }

    fn post(&self, html: &str) -> Posted {
        self.fake.post("alice", NewStatus::html(html))
    }
}

fn text(status: &Value) -> String {
    fedistream_process::html_to_text(status["content"].as_str().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_edit_delete_round_trip() {
    let mut h = Harness::start(FakeConfig::default(), sink_config()).await;
    let p = h.post("<p>Hello from <a href=\"https://fake.example/tags/rust\">#rust</a> land</p>");
    let created = h.event(EventKind::Created, &p.id);
    h.send(vec![created.clone()]);
    h.wait("one repost", || h.created() == 1).await;
    let repost = h.reposts()[0].clone();
    let t = text(&repost);
    assert!(t.starts_with("Hello from #rust land"), "{t}");
    assert!(t.contains(MARKER) && t.contains(&p.url), "{t}");
    assert_eq!(repost["visibility"], "unlisted");
    // The only POST carried an Idempotency-Key.
    let posts: Vec<_> = h.fake.requests().into_iter().filter(|r| r.method == "POST" && r.path == "/api/v1/statuses").collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].idempotency_key.as_deref().map(str::len), Some(32));

    assert!(h.fake.edit(&p.id, "<p>Hello, edited</p>"));
    h.send(vec![h.event(EventKind::Updated, &p.id)]);
    let repost_id = repost["id"].as_str().unwrap().to_string();
    h.wait("the repost edited", || h.fake.edits_of(&repost_id) == 1).await;
    assert!(text(&h.reposts()[0]).starts_with("Hello, edited"));
    assert_eq!(h.created(), 1, "an edit is not a new post");

    h.send(vec![h.deleted(&created)]);
    h.wait("the repost deleted", || h.fake.deleted_ids(TARGET).contains(&repost_id)).await;
    assert!(h.reposts().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivery_posts_once() {
    let fake = FakeMastodon::start(FakeConfig::default()).await;
    fake.add_account("alice", Default::default());
    fake.add_token(TOKEN, TARGET);
    let p = fake.post("alice", NewStatus::html("<p>once</p>"));
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let raw = fake.statuses_by("alice")[0].to_string();
    let host = fake.host();
    let ctx = NormalizeContext { instance: &host, via: Via::Rest, received_at: Utc::now() };
    let ev = Event::created("m", fedistream_process::parse_and_normalize(&raw, &ctx).unwrap());
    let rec = LogRecord::from_event(fedistream_core::event::Position { partition: 0, offset: 1 }, Utc::now(), ev.clone());
    let rec_again = LogRecord::from_event(fedistream_core::event::Position { partition: 0, offset: 2 }, Utc::now(), ev);
    let ctx = SinkContext::new("mirror", log.clone() as Arc<dyn Log>);
    for _ in 0..2 {
        // A fresh sink each time: the map, not memory, prevents the second post.
        let mut sink =
            MastodonSink::new(sink_config(), fake.base_url().parse().unwrap(), Secret::new(TOKEN), RateLimiters::default()).unwrap();
        sink.open(&ctx).await.unwrap();
        sink.write(&[rec.clone(), rec_again.clone()]).await.unwrap();
        sink.close().await.unwrap();
    }
    assert_eq!(fake.posts_created(TARGET), 1);
    assert_eq!(fake.statuses_by(TARGET).len(), 1);
    let posts = fake.requests().into_iter().filter(|r| r.method == "POST" && r.path == "/api/v1/statuses").count();
    assert_eq!(posts, 1, "the map is consulted before sending");
    let map = log.state_scan("sink:mirror:map").await.unwrap();
    assert!(map.iter().any(|(k, v)| k == &p.uri && v.contains("\"id\"")), "{map:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_replies_are_chained() {
    let mut h = Harness::start(FakeConfig::default(), sink_config()).await;
    let root = h.post("<p>thread 1/3</p>");
    let mid = h.fake.post("alice", NewStatus { in_reply_to_id: Some(root.id.clone()), ..NewStatus::html("<p>thread 2/3</p>") });
    let last = h.fake.post("alice", NewStatus { in_reply_to_id: Some(mid.id.clone()), ..NewStatus::html("<p>thread 3/3</p>") });
    h.send(vec![h.event(EventKind::Created, &root.id), h.event(EventKind::Created, &mid.id), h.event(EventKind::Created, &last.id)]);
    h.wait("three reposts", || h.created() == 3).await;
    let r = h.reposts(); // newest first
    let by_text = |t: &str| r.iter().find(|s| text(s).starts_with(t)).unwrap().clone();
    let (r1, r2, r3) = (by_text("thread 1/3"), by_text("thread 2/3"), by_text("thread 3/3"));
    assert!(r1["in_reply_to_id"].is_null());
    assert_eq!(r2["in_reply_to_id"], r1["id"]);
    assert_eq!(r3["in_reply_to_id"], r2["id"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_warning_sensitive_and_truncation() {
    let mut h = Harness::start(FakeConfig::default(), sink_config()).await;
    let cw =
        h.fake.post("alice", NewStatus { spoiler_text: "film ending".into(), sensitive: true, ..NewStatus::html("<p>they all die</p>") });
    let long_text = "lorem ipsum ".repeat(60);
    let long = h.post(&format!("<p>{} https://example.org/a/very/long/link/{}</p>", long_text.trim(), "x".repeat(80)));
    h.send(vec![h.event(EventKind::Created, &cw.id), h.event(EventKind::Created, &long.id)]);
    h.wait("two reposts", || h.created() == 2).await;
    let r = h.reposts();
    let cw_repost = r.iter().find(|s| text(s).starts_with("they all die")).unwrap();
    assert_eq!(cw_repost["spoiler_text"], "film ending");
    assert_eq!(cw_repost["sensitive"], true);
    let long_repost = r.iter().find(|s| text(s).starts_with("lorem")).unwrap();
    let t = text(long_repost);
    assert!(t.contains("…"), "{t}");
    assert!(t.contains(&long.url), "the attribution link is kept: {t}");
    assert!(h.dead_letters().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_post_is_dead_lettered_and_the_queue_goes_on() {
    let mut h = Harness::start(FakeConfig::default(), sink_config()).await;
    let bad = h.post("<p>refused</p>");
    let good = h.post("<p>accepted</p>");
    h.fake.fail_next(422, 1);
    h.send(vec![h.event(EventKind::Created, &bad.id), h.event(EventKind::Created, &good.id)]);
    h.wait("the next post", || h.created() == 1).await;
    assert!(text(&h.reposts()[0]).starts_with("accepted"));
    h.wait("the dead letter", || h.dead_letters().len() == 1).await;
    let dl = &h.dead_letters()[0];
    assert!(dl["reason"].as_str().unwrap().contains("422"), "{dl}");
    assert_eq!(dl["event"]["key"], bad.uri);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_limit_headers_hold_posts_back() {
    let fake_cfg = FakeConfig { posting_limit: Some((2, Duration::from_secs(2))), ..FakeConfig::default() };
    let mut h = Harness::start(fake_cfg, sink_config()).await;
    let ids: Vec<Posted> = (0..4).map(|i| h.post(&format!("<p>burst {i}</p>"))).collect();
    h.send(ids.iter().map(|p| h.event(EventKind::Created, &p.id)).collect());
    h.wait("four reposts", || h.created() == 4).await;
    // `X-RateLimit-Remaining: 0` on the second post already holds the rest back.
    let refused = h.fake.requests().iter().filter(|r| r.path == "/api/v1/statuses" && r.status == 429).count();
    assert!(refused <= 1, "waited for the reset instead of hammering: {refused} refusals");
    assert_eq!(h.reposts().len(), 4, "nothing dropped, nothing doubled");
    assert!(h.dead_letters().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_until_the_reset() {
    let mut h = Harness::start(FakeConfig::default(), sink_config()).await;
    let p = h.post("<p>after the reset</p>");
    let reset_at = Utc::now() + chrono::Duration::milliseconds(1500);
    h.fake.rate_limit_next(Duration::from_millis(1500));
    h.send(vec![h.event(EventKind::Created, &p.id)]);
    h.wait("the repost", || h.created() == 1).await;
    let reqs = h.fake.requests();
    let refused: Vec<_> = reqs.iter().filter(|r| r.path == "/api/v1/statuses" && r.status == 429).collect();
    assert_eq!(refused.len(), 1, "one refusal, then a wait: {refused:?}");
    let ok = reqs.iter().find(|r| r.path == "/api/v1/statuses" && r.status == 200).unwrap();
    assert!(ok.at >= reset_at, "posted at {} before the reset {reset_at}", ok.at);
    assert!(h.dead_letters().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_pacing_spreads_posts_without_429() {
    let cfg = MastodonSinkConfig { posts_per_window: 2, post_window: Duration::from_millis(1500), ..sink_config() };
    let mut h = Harness::start(FakeConfig::default(), cfg).await;
    let ids: Vec<Posted> = (0..3).map(|i| h.post(&format!("<p>paced {i}</p>"))).collect();
    let t0 = std::time::Instant::now();
    h.send(ids.iter().map(|p| h.event(EventKind::Created, &p.id)).collect());
    h.wait("two reposts", || h.created() == 2).await;
    h.wait("the third after the window", || h.created() == 3).await;
    assert!(t0.elapsed() >= Duration::from_millis(1000), "the third waited for the window: {:?}", t0.elapsed());
    assert_eq!(h.fake.requests().iter().filter(|r| r.status == 429).count(), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_map_after_the_idempotency_window_is_reconciled() {
    let mut h = Harness::start(FakeConfig::default(), sink_config()).await;
    let p = h.post("<p>only once, ever</p>");
    let ev = h.event(EventKind::Created, &p.id);
    h.send(vec![ev.clone()]);
    h.wait("one repost", || h.created() == 1).await;
    h.shutdown().await;
    // The map (and the channel offset) are gone, and so is the server's memory of the key.
    for f in std::fs::read_dir(h.dir.path()).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap().to_string_lossy().starts_with("log.db") {
            std::fs::remove_file(f).unwrap();
        }
    }
    h.fake.expire_idempotency_keys();
    h.launch(sink_config());
    h.send(vec![ev]);
    let other = h.post("<p>a new one</p>");
    h.send(vec![h.event(EventKind::Created, &other.id)]);
    h.wait("the new post", || h.created() == 2).await;
    assert_eq!(h.reposts().iter().filter(|s| text(s).starts_with("only once")).count(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_loops_are_cut() {
    let mut h = Harness::start(FakeConfig::default(), sink_config()).await;
    let own = h.fake.post(TARGET, NewStatus::html("<p>the target's own post</p>"));
    let marked = h.post(&format!("<p>relayed</p><p>{MARKER} @bob@elsewhere.example https://elsewhere.example/@bob/1</p>"));
    let fine = h.post("<p>original</p>");
    h.send(vec![h.event(EventKind::Created, &own.id), h.event(EventKind::Created, &marked.id), h.event(EventKind::Created, &fine.id)]);
    h.wait("the original reposted", || h.created() == 1).await;
    // The repost itself comes back (a second mirror pointed at the target): not again.
    let repost_id = h.reposts().iter().find(|s| text(s).starts_with("original")).unwrap()["id"].as_str().unwrap().to_string();
    h.send(vec![h.event(EventKind::Created, &repost_id)]);
    let sentinel = h.post("<p>sentinel</p>");
    h.send(vec![h.event(EventKind::Created, &sentinel.id)]);
    h.wait("the sentinel", || h.created() == 2).await;
    let texts: Vec<String> = h.reposts().iter().map(text).collect();
    assert_eq!(texts.len(), 3, "own post + two reposts: {texts:#?}");
    assert!(!texts.iter().any(|t| t.starts_with("relayed")));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_reuploaded_with_alt_text_or_linked() {
    let mut h = Harness::start(FakeConfig::default(), sink_config()).await;
    let pic = h.fake.post("alice", NewStatus { media: vec![("image".into(), Some("a red fox".into()))], ..NewStatus::html("<p>look</p>") });
    h.send(vec![h.event(EventKind::Created, &pic.id)]);
    h.wait("the repost", || h.created() == 1).await;
    let r = h.reposts()[0].clone();
    let media = r["media_attachments"].as_array().unwrap();
    assert_eq!(media.len(), 1, "{r:#}");
    assert_eq!(media[0]["description"], "a red fox");
    // Downloads keep failing: a marked link instead, the post still goes out.
    h.fake.fail_media_downloads(10);
    let pic2 = h.fake.post("alice", NewStatus { media: vec![("image".into(), None)], ..NewStatus::html("<p>again</p>") });
    h.send(vec![h.event(EventKind::Created, &pic2.id)]);
    h.wait("the second repost", || h.created() == 2).await;
    let r = h.reposts().into_iter().find(|s| text(s).starts_with("again")).unwrap();
    assert!(text(&r).contains("[media: http"), "{}", text(&r));
    assert!(r["media_attachments"].as_array().unwrap().is_empty());
    h.shutdown().await;
    let _ = MediaMode::Link;
}

/// Child half of [`crash_between_post_and_map_write`]: with the failpoint set it
/// aborts right after the POST. Does nothing unless the parent set it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by crash_between_post_and_map_write"]
async fn child_posts_then_aborts() {
    let (Ok(base), Ok(dir), Ok(event)) = (std::env::var("FS_TEST_FAKE_URL"), std::env::var("FS_TEST_DIR"), std::env::var("FS_TEST_EVENT"))
    else {
        return;
    };
    let event: Event = serde_json::from_str(&event).unwrap();
    let log = SqliteLog::open(std::path::Path::new(&dir).join("log.db"), SqliteOptions::default()).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(vec![event]).unwrap();
    let cfg = sink_config();
    let sink = MastodonSink::new(cfg.clone(), base.parse().unwrap(), Secret::new(TOKEN), RateLimiters::default()).unwrap();
    let p = Pipeline {
        log,
        processors: vec![],
        sources: vec![SourceSpec::new("m", Box::new(ChanSource(rx)), DeadLetter::new(std::path::Path::new(&dir).join("dl-source.jsonl")))],
        channels: vec![ChannelSpec {
            name: "mirror".into(),
            group: "fedistream.channel.mirror".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(sink),
            route: None,
            batch: cfg.delivery.batch(),
            retry: cfg.delivery.retry(),
            dead_letter: DeadLetter::new(std::path::Path::new(&dir).join("dl-channel.jsonl")),
        }],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let stop = CancellationToken::new();
    let _run = tokio::spawn(runtime::run(p, stop));
    tokio::time::sleep(DEADLINE).await;
    panic!("the failpoint did not fire");
}

/// `kill -9` at the worst moment: the child process aborts after the server took
/// the POST and before the map write. After the idempotency window, a restart on
/// the same log redelivers the event; reconciliation finds the repost, so
/// nothing is posted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_post_and_map_write() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("debug,hyper=info,reqwest=info,h2=info").try_init();
    let fake = FakeMastodon::start(FakeConfig::default()).await;
    fake.add_account("alice", Default::default());
    fake.add_token(TOKEN, TARGET);
    let mut h = Harness { fake, dir: tempfile::tempdir().unwrap(), tx: None, stop: CancellationToken::new(), run: None };
    let p = h.post("<p>crash test</p>");
    let ev = h.event(EventKind::Created, &p.id);
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_posts_then_aborts", "--ignored", "--nocapture", "--test-threads=1"])
        .env("FEDISTREAM_FAILPOINT", "mastodon_sink_after_post")
        .env("FS_TEST_FAKE_URL", h.fake.base_url())
        .env("FS_TEST_DIR", h.dir.path())
        .env("FS_TEST_EVENT", serde_json::to_string(&ev).unwrap())
        .output()
        .await
        .unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(6),
            "the child aborts at the failpoint: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(h.created(), 1, "the server took the post");
    let log = SqliteLog::open_read_only(h.dir.path().join("log.db")).unwrap();
    assert_eq!(log.state_get("sink:mirror:map", &p.uri).await.unwrap(), None, "crashed before the map write");
    drop(log);
    h.fake.expire_idempotency_keys();
    h.launch(sink_config());
    h.wait("the map entry", || {
        let log = SqliteLog::open_read_only(h.dir.path().join("log.db")).unwrap();
        futures::executor::block_on(log.state_get("sink:mirror:map", &p.uri)).unwrap().is_some()
    })
    .await;
    assert_eq!(h.created(), 1, "no duplicate after the restart");
    assert_eq!(h.fake.requests().iter().filter(|r| r.method == "POST" && r.path == "/api/v1/statuses").count(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boost_mode_resolves_boosts_and_unboosts() {
    let cfg = MastodonSinkConfig { mode: fedistream_connectors::mastodon::sink::Mode::Boost, ..sink_config() };
    let mut h = Harness::start(FakeConfig::default(), cfg).await;
    let p = h.post("<p>boost me</p>");
    let ev = h.event(EventKind::Created, &p.id);
    h.send(vec![ev.clone(), ev.clone()]);
    h.wait("the boost", || h.reposts().len() == 1).await;
    let b = h.reposts()[0].clone();
    assert_eq!(b["reblog"]["id"], p.id.as_str(), "{b:#}");
    assert_eq!(h.created(), 0, "a boost, not a new post");
    assert!(h.fake.requests().iter().any(|r| r.path == "/api/v2/search" && r.query.contains("resolve=true")));
    h.send(vec![h.deleted(&ev)]);
    h.wait("the unboost", || h.reposts().is_empty()).await;
    assert!(h.fake.requests().iter().any(|r| r.path.ends_with("/unreblog")));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_skip_content_warned_and_foreign_replies() {
    let cfg = MastodonSinkConfig { skip_content_warned: true, ..sink_config() };
    let mut h = Harness::start(FakeConfig::default(), cfg).await;
    h.fake.add_account("bob", Default::default());
    let bobs = h.fake.post("bob", NewStatus::html("<p>bob's post</p>"));
    let reply_to_bob = h.fake.post("alice", NewStatus { in_reply_to_id: Some(bobs.id.clone()), ..NewStatus::html("<p>@bob hi</p>") });
    let cw = h.fake.post("alice", NewStatus { spoiler_text: "cw".into(), ..NewStatus::html("<p>hidden</p>") });
    let private = h.fake.post("alice", NewStatus { visibility: "private".into(), ..NewStatus::html("<p>followers only</p>") });
    let ok = h.post("<p>plain</p>");
    h.send([&reply_to_bob, &cw, &private, &ok].iter().map(|p| h.event(EventKind::Created, &p.id)).collect());
    h.wait("the plain post", || h.created() == 1).await;
    assert!(text(&h.reposts()[0]).starts_with("plain"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_an_auth_error() {
    let fake = FakeMastodon::start(FakeConfig { token: Some("reader".into()), ..FakeConfig::default() }).await;
    fake.add_token(TOKEN, TARGET);
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let ctx = SinkContext::new("mirror", log as Arc<dyn Log>);
    let mut sink =
        MastodonSink::new(sink_config(), fake.base_url().parse().unwrap(), Secret::new("wrong-token"), RateLimiters::default()).unwrap();
    let err = sink.open(&ctx).await.unwrap_err();
    assert_eq!(err.kind, fedistream_core::ErrorKind::Auth, "{err}");
    assert!(!err.message.contains("wrong-token"), "the token never appears: {err}");
}
