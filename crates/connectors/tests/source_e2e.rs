//! End to end through the runtime: the Mastodon source against the fake server,
//! the SQLite log, and the file channel. Each test waits for a condition on the
//! output (bounded by a deadline), never for a fixed time.

use std::path::PathBuf;
use std::time::Duration;

use fedistream_connectors::file::{FileSink, FileSinkConfig};
use fedistream_connectors::mastodon::client::Secret;
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::source::{Backfill, MastodonSource, MastodonSourceConfig, ReaderConnection, StreamMode};
use fedistream_connectors::testing::{AccountOpts, FakeConfig, FakeMastodon, Flavor, NewStatus};
use fedistream_core::runtime::{self, ChannelSpec, DeliveryConfig, Pipeline, RunSummary, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::DeadLetter;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "reader-secret-token";
const DEADLINE: Duration = Duration::from_secs(20);

struct Harness {
    fake: FakeMastodon,
    dir: tempfile::TempDir,
    stop: CancellationToken,
    run: Option<JoinHandle<RunSummary>>,
}

fn fake_config(flavor: Flavor) -> FakeConfig {
    FakeConfig {
        flavor,
        heartbeat_interval: Duration::from_millis(100),
        ws_ping_interval: Duration::from_millis(200),
        token: Some(TOKEN.into()),
        ..FakeConfig::default()
    }
}

fn source_config(fake: &FakeMastodon, accounts: &[&str]) -> MastodonSourceConfig {
    let mut c = MastodonSourceConfig::for_accounts(accounts.iter().map(|a| format!("{a}@fake.example")).collect());
    c.instance = Some(fake.base_url());
    c.backfill = Backfill::None;
    // Only stream (re)connects and explicit waits trigger REST in these tests.
    c.poll_interval = Duration::from_secs(3600);
    c.max_poll_interval = Duration::from_secs(3600);
    c.safety_interval = Duration::from_secs(3600);
    c.sse_idle_timeout = Duration::from_millis(800);
    c.ws_idle_timeout = Duration::from_millis(800);
    c.reconnect_initial = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(200);
    c
}

impl Harness {
    async fn start(fake: FakeMastodon, cfg: MastodonSourceConfig, streaming: bool) -> Harness {
        // Logs are shown for failing tests only (captured by the test harness).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("debug,hyper=info,reqwest=info,h2=info,tungstenite=info,tokio_tungstenite=info")
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mut h = Harness { fake, dir, stop: CancellationToken::new(), run: None };
        h.launch(cfg, streaming);
        h
    }

    fn launch(&mut self, cfg: MastodonSourceConfig, streaming: bool) {
        let log = SqliteLog::open(self.dir.path().join("log.db"), SqliteOptions::default()).unwrap();
        let reader = streaming.then(|| ReaderConnection { base_url: self.fake.base_url().parse().unwrap(), token: Secret::new(TOKEN) });
        let delivery = DeliveryConfig::default();
        let p = Pipeline {
            log,
            processors: vec![],
            sources: vec![SourceSpec::new(
                "m",
                Box::new(MastodonSource::new(cfg, reader, RateLimiters::default())),
                DeadLetter::new(self.dir.path().join("dl-source.jsonl")),
            )],
            channels: vec![ChannelSpec {
                name: "file".into(),
                group: "fedistream.channel.file".into(),
                topic: fedistream_core::log::EVENTS.into(),
                sink: Box::new(FileSink::new(FileSinkConfig {
                    path: self.out(),
                    rotate_bytes: 0,
                    rotate_age: None,
                    fsync: false,
                    delivery: delivery.clone(),
                })),
                route: None,
                batch: delivery.batch(),
                retry: delivery.retry(),
                dead_letter: DeadLetter::new(self.dir.path().join("dl-channel.jsonl")),
            }],
            options: RuntimeOptions { status_interval: Duration::from_millis(50), ..RuntimeOptions::default() },
            progress: None,
        };
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        self.run = Some(tokio::spawn(async move { runtime::run(p, stop).await.unwrap() }));
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out.jsonl")
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.out()).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Wait until `pred` holds for the output lines; panic with them at the deadline.
    async fn wait_lines(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let l = self.lines();
            if pred(&l) {
                return l;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; output: {l:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until the source has a durable checkpoint for `n` accounts (its first
    /// catch-up is done: posts made from now on are new, whatever the backfill).
    async fn wait_checkpoints(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(log) = SqliteLog::open_read_only(self.dir.path().join("log.db")) {
                use fedistream_core::Log;
                if log.state_scan("checkpoint").await.map(|c| c.len()).unwrap_or(0) >= n {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no checkpoint");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Post until a post reaches the file over the stream (REST catch-ups that
    /// started before may deliver the first ones); returns its line.
    async fn stream_delivers(&self, user: &str) -> Value {
        for i in 0..20 {
            let p = self.fake.post(user, NewStatus::html(format!("<p>probe {i}</p>")));
            let lines = self.wait_lines("probe post", |l| has(l, "created", &p.uri)).await;
            let line = lines.into_iter().find(|l| l["key"] == p.uri.as_str()).unwrap();
            if line["via"] == "stream" {
                return line;
            }
        }
        panic!("no post arrived over the stream");
    }

    async fn stop(&mut self) -> RunSummary {
        self.stop.cancel();
        self.run.take().unwrap().await.unwrap()
    }
}

fn keys_of(lines: &[Value], kind: &str) -> Vec<String> {
    lines.iter().filter(|l| l["kind"] == kind).map(|l| l["key"].as_str().unwrap().to_string()).collect()
}

fn has(lines: &[Value], kind: &str, uri: &str) -> bool {
    keys_of(lines, kind).iter().any(|k| k == uri)
}

fn assert_no_duplicate_events(lines: &[Value]) {
    let mut seen = std::collections::HashSet::new();
    for l in lines {
        let id = (l["kind"].as_str().unwrap().to_string(), l["key"].as_str().unwrap().to_string(), l["post"]["edited_at"].to_string());
        assert!(seen.insert(id.clone()), "duplicate event {id:?} in {lines:#?}");
    }
}

async fn fake_with(flavor: Flavor, users: &[&str]) -> FakeMastodon {
    let fake = FakeMastodon::start(fake_config(flavor)).await;
    for u in users {
        fake.add_account(u, AccountOpts::default());
    }
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_drop_between_posts_is_gap_filled_over_rest() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let cfg = source_config(&fake, &["alice"]);
    let mut h = Harness::start(fake, cfg, true).await;
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await, "stream connected");
    h.wait_checkpoints(1).await;
    let a = h.fake.post("alice", NewStatus::html("<p>before the drop</p>"));
    h.wait_lines("the streamed post", |l| has(l, "created", &a.uri)).await;
    // The server stops streaming (events published meanwhile are lost), then the connection drops.
    h.fake.pause_stream_broadcast(true);
    let b = h.fake.post("alice", NewStatus::html("<p>lost by the stream 1</p>"));
    let c = h.fake.post("alice", NewStatus::html("<p>lost by the stream 2</p>"));
    h.fake.pause_stream_broadcast(false);
    h.fake.drop_streams();
    let lines = h.wait_lines("gap filled after reconnect", |l| has(l, "created", &b.uri) && has(l, "created", &c.uri)).await;
    assert_eq!(keys_of(&lines, "created"), vec![a.uri.clone(), b.uri.clone(), c.uri.clone()], "in order, each once");
    assert!(h.fake.stream_connects() >= 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_post_from_stream_and_rest_is_delivered_once() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let mut cfg = source_config(&fake, &["alice"]);
    // Whenever the first catch-up runs, REST reads A as well as the stream.
    cfg.backfill = Backfill::Last(10);
    let mut h = Harness::start(fake, cfg, true).await;
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await);
    let a = h.fake.post("alice", NewStatus::html("<p>streamed first</p>"));
    h.wait_lines("the streamed post", |l| has(l, "created", &a.uri)).await;
    // B is only visible over REST; the catch-up after the reconnect re-reads A too.
    h.fake.pause_stream_broadcast(true);
    let b = h.fake.post("alice", NewStatus::html("<p>rest only</p>"));
    h.fake.pause_stream_broadcast(false);
    h.fake.drop_streams();
    let lines = h.wait_lines("the REST-only post", |l| has(l, "created", &b.uri)).await;
    let summary = h.stop().await;
    let lines = {
        let _ = lines;
        h.lines()
    };
    assert_eq!(keys_of(&lines, "created"), vec![a.uri.clone(), b.uri.clone()]);
    assert_no_duplicate_events(&lines);
    assert!(
        summary.log.counters.get("duplicates_suppressed").copied().unwrap_or(0) >= 1,
        "REST re-delivered A and it was dropped: {:?} {:#?}",
        summary.log,
        h.fake.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_from_the_stream_reach_the_file() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let cfg = source_config(&fake, &["alice"]);
    let mut h = Harness::start(fake, cfg, true).await;
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await);
    let a = h.fake.post("alice", NewStatus::html("<p>first version</p>"));
    h.wait_lines("created", |l| has(l, "created", &a.uri)).await;
    assert!(h.fake.edit(&a.id, "<p>second version</p>"));
    let lines = h.wait_lines("updated", |l| has(l, "updated", &a.uri)).await;
    let upd = lines.iter().find(|l| l["kind"] == "updated").unwrap();
    assert_eq!(upd["post"]["content_text"], "second version");
    assert!(upd["post"]["edited_at"].is_string());
    assert!(h.fake.delete(&a.id));
    let lines = h.wait_lines("deleted", |l| has(l, "deleted", &a.uri)).await;
    let del = lines.iter().find(|l| l["kind"] == "deleted").unwrap();
    assert_eq!(del["account"], "alice@fake.example");
    assert_eq!(del["status_id"], a.id.as_str());
    assert_eq!(lines.len(), 3, "{lines:#?}");
    h.stop().await;
}

/// A delete right behind its post on the stream finds the id index entry the
/// post's append writes (were the source to send a burst before the previous
/// append is durable, the delete would have to wait for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_right_behind_its_posts_on_the_stream_is_attributed() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.stream = StreamMode::Sse;
    let mut h = Harness::start(fake, cfg, true).await;
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await);
    h.wait_checkpoints(1).await;
    let posts: Vec<_> = (0..50).map(|i| h.fake.post("alice", NewStatus::html(format!("<p>post {i}</p>")))).collect();
    let last = posts.last().unwrap();
    assert!(h.fake.delete(&last.id));
    let lines = h.wait_lines("the delete", |l| has(l, "deleted", &last.uri)).await;
    for p in &posts {
        assert_eq!(lines.iter().filter(|l| l["key"] == p.uri.as_str() && l["kind"] == "created").count(), 1, "{}", p.uri);
    }
    let del = lines.iter().find(|l| l["kind"] == "deleted").unwrap();
    assert_eq!(del["account"], "alice@fake.example");
    let summary = h.stop().await;
    assert_eq!(summary.sources[0].counters.get("deletes_unattributed"), None, "{:?}", summary.sources[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gotosocial_websocket_only_with_ulid_ids() {
    let fake = fake_with(Flavor::GoToSocial, &["bob"]).await;
    let cfg = source_config(&fake, &["bob"]);
    let mut h = Harness::start(fake, cfg, true).await;
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await);
    h.wait_checkpoints(1).await;
    let a = h.fake.post("bob", NewStatus::html("<p>hello from gts</p>"));
    assert_eq!(a.id.len(), 26, "a ULID");
    h.wait_lines("the first post", |l| has(l, "created", &a.uri)).await;
    h.fake.pause_stream_broadcast(true);
    let b = h.fake.post("bob", NewStatus::html("<p>missed</p>"));
    h.fake.pause_stream_broadcast(false);
    h.fake.drop_streams();
    let lines = h.wait_lines("both posts", |l| has(l, "created", &a.uri) && has(l, "created", &b.uri)).await;
    assert_eq!(keys_of(&lines, "created"), vec![a.uri, b.uri]);
    assert!(h.fake.requests().iter().all(|r| !r.path.starts_with("/api/v1/streaming/")), "no SSE attempts needed on the websocket path");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_reconnects_within_the_watchdog_window() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.stream = StreamMode::Sse;
    let mut h = Harness::start(fake, cfg, true).await;
    assert!(h.fake.wait_for_stream_connects(1, DEADLINE).await);
    let stalled_at = std::time::Instant::now();
    h.fake.set_heartbeats(false);
    // The connection stays open but silent: only the watchdog (800 ms) can notice.
    assert!(h.fake.wait_for_stream_connects(2, DEADLINE).await, "reconnected");
    let took = stalled_at.elapsed();
    // A lower bound only: a loaded machine may run the watchdog late, never early.
    assert!(took >= Duration::from_millis(700), "not before the watchdog window: {took:?}");
    h.fake.set_heartbeats(true);
    let a = h.fake.post("alice", NewStatus::html("<p>after the stall</p>"));
    h.wait_lines("post after reconnect", |l| has(l, "created", &a.uri)).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_stream_event_is_counted_dead_lettered_and_the_stream_goes_on() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.stream = StreamMode::Sse;
    let mut h = Harness::start(fake, cfg, true).await;
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await);
    h.fake.inject_stream_raw("event: update\ndata: {\"id\": \"1\", this is not json\n\n");
    let dl_path = h.dir.path().join("dl-source.jsonl");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while std::fs::read_to_string(&dl_path).unwrap_or_default().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no dead-letter entry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream goes on: a later post arrives over the same connection.
    h.stream_delivers("alice").await;
    let summary = h.stop().await;
    assert_eq!(summary.sources[0].counters.get("malformed"), Some(&1), "{:?}", summary.sources[0]);
    let dl = std::fs::read_to_string(h.dir.path().join("dl-source.jsonl")).unwrap();
    let entry: Value = serde_json::from_str(dl.lines().next().unwrap()).unwrap();
    assert!(entry["raw"].as_str().unwrap().contains("this is not json"));
    assert!(entry["reason"].as_str().unwrap().contains("stream"), "{entry}");
    assert_eq!(h.fake.stream_connects(), 1, "the bad event did not cost a reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_means_no_request_before_the_reset() {
    let fake = fake_with(Flavor::Mastodon, &["alice", "carol"]).await;
    let a = fake.post("alice", NewStatus::html("<p>one</p>"));
    let c = fake.post("carol", NewStatus::html("<p>two</p>"));
    fake.rate_limit_next(Duration::from_millis(1500));
    let mut cfg = source_config(&fake, &["alice", "carol"]);
    cfg.backfill = Backfill::Last(5);
    cfg.stream = StreamMode::Off;
    let mut h = Harness::start(fake, cfg, false).await;
    h.wait_lines("both posts after the throttle", |l| has(l, "created", &a.uri) && has(l, "created", &c.uri)).await;
    h.stop().await;
    let reqs = h.fake.requests();
    let first_429 = reqs.iter().position(|r| r.status == 429).expect("the throttle was hit");
    let hit_at = reqs[first_429].at;
    let after: Vec<_> = reqs[first_429 + 1..].iter().collect();
    assert!(!after.is_empty());
    // Requests already in flight may land in the same instant; none may start in the window.
    let in_window: Vec<_> = after
        .iter()
        .filter(|r| r.at > hit_at + chrono::Duration::milliseconds(50) && r.at < hit_at + chrono::Duration::milliseconds(1400))
        .collect();
    assert!(in_window.is_empty(), "requests sent before the reset: {in_window:#?}");
    assert_eq!(
        reqs.iter().filter(|r| r.status == 429).count(),
        reqs[first_429..].iter().take_while(|r| r.status == 429).count(),
        "no hammering after the first 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_without_a_token_backfills_and_respects_consent() {
    let fake = FakeMastodon::start(fake_config(Flavor::Mastodon)).await;
    fake.add_account("alice", AccountOpts::default());
    fake.add_account(
        "nobot",
        AccountOpts {
            note_html: "<p>please no <a href=\"x\" class=\"mention hashtag\">#<span>NoBot</span></a></p>".into(),
            ..Default::default()
        },
    );
    let p1 = fake.post("alice", NewStatus::html("<p>public</p>"));
    fake.post("alice", NewStatus { visibility: "unlisted".into(), ..NewStatus::html("<p>unlisted</p>") });
    let p3 = fake.post("alice", NewStatus::html("<p>public again</p>"));
    fake.post("nobot", NewStatus::html("<p>do not take this</p>"));
    let mut cfg = source_config(&fake, &["alice", "nobot"]);
    cfg.backfill = Backfill::Last(10);
    cfg.stream = StreamMode::Off;
    let mut h = Harness::start(fake, cfg, false).await;
    let lines = h.wait_lines("alice's public posts", |l| l.len() >= 2).await;
    let summary = h.stop().await;
    let lines = {
        let _ = lines;
        h.lines()
    };
    assert_eq!(keys_of(&lines, "created"), vec![p1.uri, p3.uri]);
    let c = &summary.sources[0].counters;
    assert_eq!(c.get("skipped_visibility"), Some(&1), "{c:?}");
    assert_eq!(c.get("skipped_bio_nobot"), Some(&1), "{c:?}");
    assert!(h.fake.requests().iter().all(|r| !r.authorized), "anonymous polling sends no token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_checkpoint_without_loss_or_duplicates() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.stream = StreamMode::Off;
    cfg.backfill = Backfill::Last(40);
    let p1 = fake.post("alice", NewStatus::html("<p>1</p>"));
    let mut h = Harness::start(fake, cfg.clone(), false).await;
    h.wait_lines("first post", |l| has(l, "created", &p1.uri)).await;
    h.stop().await;
    // While fedistream is down, more posts are made.
    let later: Vec<_> = (0..45).map(|i| h.fake.post("alice", NewStatus::html(format!("<p>later {i}</p>")))).collect();
    h.launch(cfg, false);
    let lines = h.wait_lines("all 46 posts", |l| l.len() >= 46).await;
    h.stop().await;
    let mut expected = vec![p1.uri.clone()];
    expected.extend(later.iter().map(|p| p.uri.clone()));
    assert_eq!(keys_of(&lines, "created"), expected, "every post once, in order, across the restart (two pages)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_last_n_and_since_a_date() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let posted: Vec<_> = (0..5).map(|i| fake.post("alice", NewStatus::html(format!("<p>old {i}</p>")))).collect();
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.stream = StreamMode::Off;
    cfg.backfill = Backfill::Last(2);
    let mut h = Harness::start(fake, cfg.clone(), false).await;
    let lines = h.wait_lines("two newest", |l| l.len() >= 2).await;
    h.stop().await;
    assert_eq!(keys_of(&lines, "created"), vec![posted[3].uri.clone(), posted[4].uri.clone()]);

    // A fresh log, backfilling since the creation time of the third post.
    let statuses = h.fake.statuses_of("alice");
    let created = |uri: &str| -> String { statuses.iter().find(|s| s["uri"] == uri).unwrap()["created_at"].as_str().unwrap().to_string() };
    let boundary = created(&posted[2].uri);
    let since = chrono::DateTime::parse_from_rfc3339(&boundary).unwrap().with_timezone(&chrono::Utc);
    let expected: Vec<String> =
        posted.iter().filter(|p| chrono::DateTime::parse_from_rfc3339(&created(&p.uri)).unwrap() >= since).map(|p| p.uri.clone()).collect();
    let fake = std::mem::replace(&mut h.fake, FakeMastodon::start(fake_config(Flavor::Mastodon)).await);
    cfg.backfill = Backfill::Since(since);
    let mut h2 = Harness::start(fake, cfg, false).await;
    let lines = h2.wait_lines("posts since the boundary", |l| l.len() >= expected.len()).await;
    h2.stop().await;
    assert_eq!(keys_of(&lines, "created"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_reread_catches_edits_but_never_publishes_history_before_start() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let history: Vec<_> = (0..3).map(|i| fake.post("alice", NewStatus::html(format!("<p>history {i}</p>")))).collect();
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.stream = StreamMode::Off;
    cfg.backfill = Backfill::None;
    cfg.poll_interval = Duration::from_millis(100);
    cfg.max_poll_interval = Duration::from_millis(200);
    cfg.safety_interval = Duration::from_millis(300);
    let mut h = Harness::start(fake, cfg, false).await;
    h.wait_checkpoints(1).await;
    let p = h.fake.post("alice", NewStatus::html("<p>after start</p>"));
    h.wait_lines("the new post", |l| has(l, "created", &p.uri)).await;
    // Without a stream, an edit is only seen by the safety pass re-reading the newest page,
    // which also contains the history posts.
    assert!(h.fake.edit(&p.id, "<p>after start, edited</p>"));
    let lines = h.wait_lines("the edit", |l| has(l, "updated", &p.uri)).await;
    h.stop().await;
    for old in &history {
        assert!(!lines.iter().any(|l| l["key"] == old.uri.as_str()), "history before start was published: {lines:#?}");
    }
    assert_eq!(lines.len(), 2, "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_found_without_a_stream() {
    let fake = fake_with(Flavor::Mastodon, &["alice"]).await;
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.stream = StreamMode::Off;
    cfg.backfill = Backfill::Last(10);
    cfg.poll_interval = Duration::from_millis(100);
    cfg.max_poll_interval = Duration::from_millis(200);
    cfg.safety_interval = Duration::from_millis(300);
    let a = fake.post("alice", NewStatus::html("<p>to be deleted</p>"));
    let b = fake.post("alice", NewStatus::html("<p>to stay</p>"));
    let mut h = Harness::start(fake, cfg, false).await;
    h.wait_lines("both posts", |l| has(l, "created", &a.uri) && has(l, "created", &b.uri)).await;
    let c = h.fake.post("alice", NewStatus::html("<p>later, also deleted</p>"));
    h.wait_lines("the later post", |l| has(l, "created", &c.uri)).await;
    assert!(h.fake.delete(&a.id));
    assert!(h.fake.delete(&c.id));
    let lines = h.wait_lines("the deletions", |l| has(l, "deleted", &a.uri) && has(l, "deleted", &c.uri)).await;
    h.stop().await;
    let del = lines.iter().find(|l| l["kind"] == "deleted" && l["key"] == a.uri.as_str()).unwrap();
    assert_eq!(del["account"], "alice@fake.example");
    assert_eq!(del["via"], "rest");
    assert!(!has(&lines, "deleted", &b.uri), "{lines:#?}");
    assert_eq!(keys_of(&lines, "deleted").len(), 2, "each deletion once: {lines:#?}");
}
