//! Every channel of this crate through the sink conformance suite
//! (`fedistream_core::testing::sink_conformance`): a batch accepted and
//! committed only once the destination holds it, a permanent refusal
//! dead-lettered at its index, transient failures retried, and a crash between
//! a write and its commit redelivering without a duplicate where the channel
//! promises exactly once. The `stdout` channel writes where no test can read it
//! back; its encoding is the file channel's, tested here.

use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use fedistream_connectors::file::{FileSink, FileSinkConfig};
use fedistream_core::testing::sink_conformance::{run_all, SinkHarness};
use fedistream_core::{Event, Sink};

/// The file channel: a new file per check (a file remembers the log positions
/// it holds, and each check starts a new log).
struct File {
    dir: tempfile::TempDir,
    current: Mutex<PathBuf>,
}

impl File {
    fn new() -> File {
        let dir = tempfile::tempdir().unwrap();
        let current = Mutex::new(dir.path().join("none.jsonl"));
        File { dir, current }
    }
    fn path(&self) -> PathBuf {
        self.current.lock().unwrap().clone()
    }
}

#[async_trait]
impl SinkHarness for File {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(FileSink::new(FileSinkConfig {
            path: self.path(),
            rotate_bytes: 0,
            rotate_age: None,
            fsync: false,
            delivery: Default::default(),
        }))
    }
    async fn delivered(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.path()).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("torn or invalid line {l:?}: {e}"));
                v["key"].as_str().expect("a key").to_owned()
            })
            .collect()
    }
    fn refused_event(&self) -> Result<Event, String> {
        Err("a file takes every record (a record it cannot write is an I/O error, not a refusal)".into())
    }
    async fn fail_transiently(&self) -> Result<(), String> {
        Err("the test runs as root, so permissions cannot make a file fail; a full disk is file_disk_full.rs".into())
    }
    async fn recover(&self) {}
    fn exactly_once(&self) -> bool {
        true
    }
    async fn begin(&self, check: &'static str) {
        *self.current.lock().unwrap() = self.dir.path().join(format!("{}.jsonl", check.replace(' ', "-")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_channel_passes_the_sink_conformance_suite() {
    let r = run_all(&File::new(), "file").await;
    assert_eq!(r.passed, ["batch accepted", "crash between write and commit"], "{r:?}");
}

/// The `mastodon` channel, republishing on an account of the fake server.
struct Mirror {
    fake: fedistream_connectors::testing::FakeMastodon,
}

const MIRROR_TOKEN: &str = "mirror-token";

impl Mirror {
    async fn new() -> Mirror {
        let fake = fedistream_connectors::testing::FakeMastodon::start(Default::default()).await;
        fake.add_token(MIRROR_TOKEN, "mirror");
        Mirror { fake }
    }
}

#[async_trait]
impl SinkHarness for Mirror {
    fn sink(&self) -> Box<dyn Sink> {
        use fedistream_connectors::mastodon::sink::{MastodonSink, MastodonSinkConfig};
        let mut cfg = MastodonSinkConfig { connection: "target".into(), ..Default::default() };
        cfg.delivery.retry_initial = std::time::Duration::from_millis(10);
        cfg.delivery.retry_max = std::time::Duration::from_millis(100);
        let secret = fedistream_connectors::mastodon::client::Secret::new(MIRROR_TOKEN);
        let limits = fedistream_connectors::mastodon::ratelimit::RateLimiters::default();
        Box::new(MastodonSink::new(cfg, self.fake.base_url().parse().unwrap(), secret, limits).unwrap())
    }
    /// The original each repost names in its attribution line, as an event key:
    /// the test posts' URLs are `https://host/@user/n`, their URIs (the keys)
    /// `https://host/users/user/statuses/n`.
    async fn delivered(&self) -> Vec<String> {
        use fedistream_connectors::mastodon::sink::MARKER;
        let mut reposts = self.fake.statuses_by("mirror");
        reposts.reverse(); // oldest first
        reposts
            .iter()
            .filter_map(|s| {
                let text = fedistream_process::html_to_text(s["content"].as_str().unwrap_or_default());
                let url = text[text.rfind(MARKER)? + MARKER.len()..].split_whitespace().nth(1)?.to_owned();
                let (host, rest) = url.strip_prefix("https://")?.split_once("/@")?;
                let (user, n) = rest.split_once('/')?;
                Some(format!("https://{host}/users/{user}/statuses/{n}"))
            })
            .collect()
    }
    fn refused_event(&self) -> Result<Event, String> {
        Err("the channel fits every post to the server's limits (text cut to max_characters, refused media as links); \
             a 422 at an index is mastodon_sink.rs's rejected_post_is_dead_lettered_and_the_queue_goes_on"
            .into())
    }
    async fn fail_transiently(&self) -> Result<(), String> {
        // Posting answers 503 (reading the target's statuses at open still works).
        self.fake.fail_next_on("/api/v1/statuses", 503, usize::MAX);
        Ok(())
    }
    async fn recover(&self) {
        self.fake.clear_targeted_faults();
    }
    fn exactly_once(&self) -> bool {
        // Idempotency keys and the republish map: a redelivered record finds its repost.
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mastodon_channel_passes_the_sink_conformance_suite() {
    let r = run_all(&Mirror::new().await, "mirror").await;
    assert_eq!(r.passed, ["batch accepted", "transient error retried", "crash between write and commit"], "{r:?}");
}
