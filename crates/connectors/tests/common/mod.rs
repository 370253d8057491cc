//! Scaffolding shared by the runtime-level tests of the Mastodon source: the
//! fake server, the real runtime with the SQLite log and a file channel, and
//! bounded waits on conditions. The waits use tokio's clock, so a test started
//! with paused time (`start_paused = true`) waits in virtual time and can
//! check bounds of minutes or hours exactly, without sleeping.

#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fedistream_connectors::file::{FileSink, FileSinkConfig};
use fedistream_connectors::mastodon::client::Secret;
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::source::{Backfill, MastodonSource, MastodonSourceConfig, ReaderConnection};
use fedistream_connectors::testing::{AccountOpts, FakeConfig, FakeMastodon, Flavor, RecordedRequest};
use fedistream_core::component::{StatusDoc, STATUS_NS};
use fedistream_core::runtime::{self, ChannelSpec, DeliveryConfig, Pipeline, RunSummary, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::{DeadLetter, Log, Source};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "reader-secret-token";
/// Bound of a wait for something that should happen at once (real or virtual time).
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn init_logs() {
    // Shown for failing tests only (captured by the test harness).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("debug,hyper=info,hyper_util=info,reqwest=info,h2=info,tungstenite=info,tokio_tungstenite=info")
        .try_init();
}

/// A fake server of this flavour requiring the reader token, with quick
/// heartbeats (in whatever time the test runs).
pub fn fake_config(flavor: Flavor) -> FakeConfig {
    FakeConfig {
        flavor,
        heartbeat_interval: Duration::from_millis(500),
        ws_ping_interval: Duration::from_millis(500),
        token: Some(TOKEN.into()),
        ..FakeConfig::default()
    }
}

pub async fn fake_with(cfg: FakeConfig, users: &[&str]) -> FakeMastodon {
    let fake = FakeMastodon::start(cfg).await;
    for u in users {
        fake.add_account(u, AccountOpts::default());
    }
    fake
}

/// Source `m` following `users@fake.example` at the fake's address, from now
/// on, with quick reconnects.
pub fn source_config(fake: &FakeMastodon, users: &[&str]) -> MastodonSourceConfig {
    let mut c = MastodonSourceConfig::for_accounts(users.iter().map(|a| format!("{a}@fake.example")).collect());
    c.instance = Some(fake.base_url());
    c.backfill = Backfill::None;
    c.reconnect_initial = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(200);
    c
}

pub struct Harness {
    pub fake: FakeMastodon,
    pub dir: tempfile::TempDir,
    pub log: Option<Arc<SqliteLog>>,
    pub status_interval: Duration,
    stop: CancellationToken,
    run: Option<JoinHandle<RunSummary>>,
}

impl Harness {
    pub fn new(fake: FakeMastodon) -> Harness {
        init_logs();
        Harness {
            fake,
            dir: tempfile::tempdir().unwrap(),
            log: None,
            status_interval: Duration::from_millis(50),
            stop: CancellationToken::new(),
            run: None,
        }
    }

    /// Start the pipeline: the source (with the reader's stream when `reader`),
    /// the SQLite log in the test's directory, a file channel.
    pub fn launch(&mut self, cfg: MastodonSourceConfig, reader: bool) {
        let reader = reader.then(|| ReaderConnection { base_url: self.fake.base_url().parse().unwrap(), token: Secret::new(TOKEN) });
        self.launch_sources(vec![("m", Box::new(MastodonSource::new(cfg, reader, RateLimiters::default())))]);
    }

    /// Start the pipeline with these sources (name, source).
    pub fn launch_sources(&mut self, sources: Vec<(&str, Box<dyn Source>)>) {
        let log = SqliteLog::open(self.dir.path().join("log.db"), SqliteOptions::default()).unwrap();
        self.log = Some(log.clone());
        let delivery = DeliveryConfig::default();
        let sources = sources
            .into_iter()
            .map(|(name, s)| SourceSpec::new(name, s, DeadLetter::new(self.dir.path().join(format!("dl-source-{name}.jsonl")))))
            .collect();
        let p = Pipeline {
            log,
            processors: vec![],
            sources,
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
            options: RuntimeOptions { status_interval: self.status_interval, ..RuntimeOptions::default() },
            progress: None,
        };
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        self.run = Some(tokio::spawn(async move { runtime::run(p, stop).await.unwrap() }));
    }

    pub async fn stop(&mut self) -> RunSummary {
        self.stop.cancel();
        let summary = self.run.take().expect("running").await.unwrap();
        self.log = None;
        summary
    }

    /// Whether the pipeline ended by itself (a source failed, say).
    pub fn finished(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.is_finished())
    }

    pub async fn summary(&mut self) -> RunSummary {
        self.run.take().expect("running").await.unwrap()
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out.jsonl")
    }

    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.out()).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Wait until `pred` holds for the output lines, at most `within` (tokio
    /// time); panic with them after that.
    pub async fn wait_lines(&self, what: &str, within: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let l = self
            .wait(what, within, || {
                let l = self.lines();
                pred(&l).then_some(l)
            })
            .await;
        l
    }

    /// Poll `cond` every 50 ms of tokio time until it gives `Some`, at most `within`.
    pub async fn wait<T>(&self, what: &str, within: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = cond() {
                return t;
            }
            if Instant::now() > deadline {
                panic!("no {what} within {within:?}; output: {:#?}\nrequests: {:#?}", self.lines(), tail(&self.fake.requests(), 30));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The source's last persisted status document.
    pub async fn source_status(&self) -> Option<StatusDoc> {
        self.status_of("m").await
    }

    /// A source's last persisted status document.
    pub async fn status_of(&self, source: &str) -> Option<StatusDoc> {
        let log = self.log.as_ref()?;
        let v = log.state_get(STATUS_NS, &format!("source:{source}")).await.ok()??;
        serde_json::from_str(&v).ok()
    }

    /// Wait until the source's status document satisfies `pred`.
    pub async fn wait_status(&self, what: &str, within: Duration, pred: impl Fn(&StatusDoc) -> bool) -> StatusDoc {
        self.wait_status_of("m", what, within, pred).await
    }

    /// Wait until a source's status document satisfies `pred`.
    pub async fn wait_status_of(&self, source: &str, what: &str, within: Duration, pred: impl Fn(&StatusDoc) -> bool) -> StatusDoc {
        let deadline = Instant::now() + within;
        loop {
            if let Some(d) = self.status_of(source).await.filter(|d| pred(d)) {
                return d;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {what} within {within:?}; status: {:#?}\nrequests: {:#?}",
                    self.status_of(source).await,
                    tail(&self.fake.requests(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the source has a durable checkpoint for `n` accounts.
    pub async fn wait_checkpoints(&self, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(log) = &self.log {
                if log.state_scan("checkpoint").await.map(|c| c.len()).unwrap_or(0) >= n {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no checkpoint");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn tail(r: &[RecordedRequest], n: usize) -> Vec<String> {
    r[r.len().saturating_sub(n)..].iter().map(|r| format!("{} {}?{} -> {}", r.method, r.path, r.query, r.status)).collect()
}

pub fn keys_of(lines: &[Value], kind: &str) -> Vec<String> {
    lines.iter().filter(|l| l["kind"] == kind).map(|l| l["key"].as_str().unwrap().to_string()).collect()
}

pub fn has(lines: &[Value], kind: &str, uri: &str) -> bool {
    keys_of(lines, kind).iter().any(|k| k == uri)
}
