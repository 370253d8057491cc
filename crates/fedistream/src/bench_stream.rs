//! `fedistream bench stream`: the live path end to end through the real client
//! code — the fake Mastodon server (in this process) streams the posts of N
//! followed accounts to the reader's home stream, over SSE or WebSocket; the
//! mastodon source appends them to the SQLite log; a file channel delivers them.
//!
//! Two phases: a burst (`count` posts as fast as the server can stream them:
//! statuses/s and CPU per status), then a steady rate (`latency_count` posts at
//! `rate`/s: p50/p99 from the server's send to the channel's delivery). Peak RSS
//! at the end. The CPU is the whole process's: fedistream's and the fake
//! server's (its JSON encoding of each status, its stream writes) together.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use fedistream_connectors::file::{FileSink, FileSinkConfig};
use fedistream_connectors::mastodon::client::Secret;
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::source::{Backfill, MastodonSource, MastodonSourceConfig, ReaderConnection, StreamMode};
use fedistream_connectors::synthetic::Generator;
use fedistream_connectors::testing::{AccountOpts, FakeConfig, FakeMastodon, NewStatus, RateLimitConfig};
use fedistream_core::runtime::{ChannelSpec, DeliveryConfig, Pipeline, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::{DeadLetter, LogRecord, Sink, SinkError};
use tokio_util::sync::CancellationToken;

use crate::bench::{peak_rss_kib, percentile};

const TOKEN: &str = "bench-reader-token";

/// When each post was delivered, by its key (the status URI).
type Delivered = Arc<Mutex<HashMap<String, Instant>>>;

struct TimingSink {
    inner: FileSink,
    delivered: Delivered,
}

#[async_trait]
impl Sink for TimingSink {
    async fn open(&mut self, ctx: &fedistream_core::SinkContext) -> Result<(), SinkError> {
        self.inner.open(ctx).await
    }
    async fn write(&mut self, batch: &[LogRecord]) -> Result<fedistream_core::Written, SinkError> {
        let w = self.inner.write(batch).await?;
        let now = Instant::now();
        let mut d = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        for r in batch {
            if let Ok(e) = r.event() {
                d.insert(e.key.clone(), now);
            }
        }
        Ok(w)
    }
    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces): utime is 14th, stime 15th overall.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

async fn wait_delivered(delivered: &Delivered, keys: &[String], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let missing = {
            let d = delivered.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter().filter(|k| !d.contains_key(*k)).count()
        };
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{missing} of {} posts not delivered within {within:?}", keys.len());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub async fn run(count: usize, accounts: usize, rate: f64, latency_count: usize, transport: StreamMode) -> anyhow::Result<ExitCode> {
    if !matches!(transport, StreamMode::Sse | StreamMode::Websocket) {
        bail!("--transport must be sse or websocket");
    }
    let fake = FakeMastodon::start(FakeConfig {
        token: Some(TOKEN.into()),
        rate_limit: RateLimitConfig { limit: u32::MAX, window: Duration::from_secs(300) },
        ..FakeConfig::default()
    })
    .await;
    let users: Vec<String> = (0..accounts.max(1)).map(|i| format!("u{i}")).collect();
    for u in &users {
        fake.add_account(u, AccountOpts::default());
    }
    // Realistic post bodies: the synthetic generator's HTML (varied length, links, tags).
    let mut g = Generator::new(11);
    let bodies: Vec<String> = (0..512).map(|_| g.status_value(accounts)["content"].as_str().unwrap_or("<p>post</p>").to_owned()).collect();
    let mean_body = bodies.iter().map(String::len).sum::<usize>() / bodies.len();

    let dir = std::env::temp_dir().join(format!("fedistream-bench-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure(&fake, &users, &bodies, &dir, count, rate, latency_count, transport).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (secs, cpu, lat) = result?;
    println!("bench stream ({transport:?}, {} accounts, mean post HTML {mean_body} B)", users.len());
    println!(
        "  burst       {count} statuses in {secs:.2} s: {:.0} statuses/s, CPU {:.0} µs/status (whole process, fake server included)",
        count as f64 / secs,
        cpu.as_secs_f64() * 1e6 / count.max(1) as f64
    );
    println!(
        "  at {rate:.0}/s    {latency_count} statuses, send → delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.50) as f64 / 1e3,
        percentile(&lat, 0.99) as f64 / 1e3,
        lat.last().copied().unwrap_or(0) as f64 / 1e3
    );
    println!("  peak RSS    {} MiB", peak_rss_kib(None).unwrap_or(0) / 1024);
    Ok(ExitCode::SUCCESS)
}

/// Both phases: (burst seconds, burst CPU, sorted latencies in µs).
#[allow(clippy::too_many_arguments)]
async fn measure(
    fake: &FakeMastodon,
    users: &[String],
    bodies: &[String],
    dir: &std::path::Path,
    count: usize,
    rate: f64,
    latency_count: usize,
    transport: StreamMode,
) -> anyhow::Result<(f64, Duration, Vec<u64>)> {
    let dir = dir.to_path_buf();
    let log = SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?;
    let mut cfg = MastodonSourceConfig::for_accounts(users.iter().map(|u| format!("{u}@{}", fake.host())).collect());
    cfg.instance = Some(fake.base_url());
    cfg.backfill = Backfill::None;
    cfg.stream = transport;
    cfg.poll_interval = Duration::from_secs(3600);
    cfg.max_poll_interval = Duration::from_secs(3600);
    cfg.safety_interval = Duration::from_secs(3600);
    let reader = ReaderConnection { base_url: fake.base_url().parse()?, token: Secret::new(TOKEN) };
    let delivered: Delivered = Default::default();
    let delivery = DeliveryConfig::default();
    let sink = TimingSink {
        inner: FileSink::new(FileSinkConfig { path: dir.join("out.jsonl"), rotate_bytes: 0, rotate_age: None, fsync: false, delivery: delivery.clone() }),
        delivered: delivered.clone(),
    };
    let p = Pipeline {
        log,
        processors: vec![],
        sources: vec![SourceSpec::new("m", Box::new(MastodonSource::new(cfg, Some(reader), RateLimiters::default())), DeadLetter::new(dir.join("dl-source.jsonl")))],
        channels: vec![ChannelSpec {
            name: "file".into(),
            group: "fedistream.channel.file".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(sink),
            route: None,
            batch: delivery.batch(),
            retry: delivery.retry(),
            dead_letter: DeadLetter::new(dir.join("dl-channel.jsonl")),
        }],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let stop = CancellationToken::new();
    let run = tokio::spawn(fedistream_core::runtime::run(p, stop.clone()));
    if !fake.wait_for_open_streams(1, Duration::from_secs(60)).await {
        bail!("the stream did not connect within 60 s");
    }
    // Caught up: a first post arrives through the stream and its catch-up.
    let mut n = 0usize;
    let mut post = |fake: &FakeMastodon| {
        n += 1;
        let user = &users[n % users.len()];
        fake.post(user, NewStatus::html(bodies[n % bodies.len()].clone())).uri
    };
    let warm: Vec<String> = (0..users.len().min(50)).map(|_| post(fake)).collect();
    wait_delivered(&delivered, &warm, Duration::from_secs(120)).await?;

    // Phase 1: a burst, as fast as the pipeline takes it. At most `AHEAD`
    // posts are in flight (posted, not delivered): the fake server, like the
    // real one, drops events for a reader that falls too far behind (its
    // stream buffer holds 4,096), and this measures the pipeline, not that.
    const AHEAD: usize = 2_000;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut burst: Vec<String> = Vec::with_capacity(count);
    let before = delivered.lock().unwrap_or_else(|p| p.into_inner()).len();
    while burst.len() < count {
        let done = delivered.lock().unwrap_or_else(|p| p.into_inner()).len() - before;
        let room = (done + AHEAD).saturating_sub(burst.len()).min(count - burst.len());
        if room == 0 {
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        for _ in 0..room.min(256) {
            burst.push(post(fake));
        }
        tokio::task::yield_now().await;
    }
    wait_delivered(&delivered, &burst, Duration::from_secs(600)).await?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu0);

    // Phase 2: a steady rate.
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(latency_count);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..latency_count {
        tick.tick().await;
        let at = Instant::now();
        sent.push((post(fake), at));
    }
    let keys: Vec<String> = sent.iter().map(|(k, _)| k.clone()).collect();
    wait_delivered(&delivered, &keys, Duration::from_secs(120)).await?;
    let mut lat: Vec<u64> = {
        let d = delivered.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter().map(|(k, at)| d[k].saturating_duration_since(*at).as_micros() as u64).collect()
    };
    lat.sort_unstable();
    stop.cancel();
    let summary = run.await.context("runtime task")??;
    if !summary.failures.is_empty() {
        bail!("components failed: {:?}", summary.failures);
    }

    Ok((secs, cpu, lat))
}
