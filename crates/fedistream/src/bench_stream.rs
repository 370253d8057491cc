//! `fedistream bench stream`: the live path end to end through the real client
//! code — the fake Mastodon server (in this process) streams the posts of N
//! followed accounts to the reader's home stream, over SSE or WebSocket; the
//! mastodon source appends them to the SQLite log; a file channel delivers them.
//!
//! Two phases: a burst (`count` posts as fast as the pipeline takes them:
//! statuses/s and CPU per status), then a steady rate (`latency_count` posts at
//! `rate`/s: p50/p99 from the server's send to the channel's delivery). Peak RSS
//! at the end. The fake server, and the posting, run on a runtime of their own
//! (threads named `fake-server`), so fedistream's CPU is the process's minus
//! those threads' (from /proc): both are printed.

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

use crate::bench::{cpu_times, peak_rss_kib, percentile};

const TOKEN: &str = "bench-reader-token";

/// What the channel delivered: each post's key (the status URI) and when, in
/// delivery order, and how many so far (watched: the bench waits on the count
/// instead of polling the keys — a scan of every key every few milliseconds,
/// on fedistream's core, cost as much CPU as a good part of the pipeline).
#[derive(Default)]
struct Deliveries {
    log: Mutex<Vec<(String, Instant)>>,
    count: tokio::sync::watch::Sender<usize>,
}

type Delivered = Arc<Deliveries>;

impl Deliveries {
    fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until `n` posts in all were delivered.
    async fn wait_for(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let mut rx = self.count.subscribe();
        let reached = tokio::time::timeout(within, rx.wait_for(|c| *c >= n)).await.is_ok();
        if !reached {
            bail!("{} of {n} posts delivered within {within:?}", self.count());
        }
        Ok(())
    }

    /// When each of `keys` was delivered; fails naming how many were not.
    fn times(&self, keys: &[String]) -> anyhow::Result<HashMap<String, Instant>> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let at: HashMap<&str, Instant> = log.iter().map(|(k, t)| (k.as_str(), *t)).collect();
        let found: HashMap<String, Instant> = keys.iter().filter_map(|k| Some((k.clone(), *at.get(k.as_str())?))).collect();
        if found.len() != keys.len() {
            bail!("{} of {} posts not delivered", keys.len() - found.len(), keys.len());
        }
        Ok(found)
    }
}

/// The file channel, noting what it delivered. It reads each record's key
/// from the head of its stored JSON, as [`LogRecord::kind`] reads the kind:
/// the file channel itself never decodes an event, and neither does the
/// replay path's sink, so a full decode per status here would charge the bench's
/// bookkeeping to the stream path.
struct TimingSink {
    inner: FileSink,
    delivered: Delivered,
}

fn record_key(r: &LogRecord) -> anyhow::Result<String> {
    let head = r.payload.split_once(",\"key\":\"").and_then(|(kind, rest)| Some((kind, rest.split_once('"')?.0)));
    match head {
        Some((kind, key)) if kind.starts_with("{\"kind\":\"") && !kind.contains(',') && !key.contains('\\') => Ok(key.to_owned()),
        _ => Ok(r.event()?.key.clone()),
    }
}

#[async_trait]
impl Sink for TimingSink {
    async fn open(&mut self, ctx: &fedistream_core::SinkContext) -> Result<(), SinkError> {
        self.inner.open(ctx).await
    }
    async fn write(&mut self, batch: &[LogRecord]) -> Result<fedistream_core::Written, SinkError> {
        let w = self.inner.write(batch).await?;
        let now = Instant::now();
        let mut n = 0;
        {
            let mut log = self.delivered.log.lock().unwrap_or_else(|p| p.into_inner());
            for r in batch {
                if let Ok(key) = record_key(r) {
                    log.push((key, now));
                    n += 1;
                }
            }
        }
        self.delivered.count.send_modify(|c| *c += n);
        Ok(w)
    }
    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}

pub async fn run(count: usize, accounts: usize, rate: f64, latency_count: usize, transport: StreamMode) -> anyhow::Result<ExitCode> {
    if !matches!(transport, StreamMode::Sse | StreamMode::Websocket) {
        bail!("--transport must be sse or websocket");
    }
    // The fake server and the posting get threads of their own, so their CPU
    // can be told apart from fedistream's.
    let fake_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("fake-server").enable_all().build()?;
    let fake = fake_rt
        .spawn(FakeMastodon::start(FakeConfig {
            token: Some(TOKEN.into()),
            rate_limit: RateLimitConfig { limit: u32::MAX, window: Duration::from_secs(300) },
            ..FakeConfig::default()
        }))
        .await?;
    let users: Vec<String> = (0..accounts.max(1)).map(|i| format!("u{i}")).collect();
    for u in &users {
        fake.add_account(u, AccountOpts::default());
    }
    // Realistic post bodies: the synthetic generator's HTML (varied length, links, tags).
    let mut g = Generator::new(11);
    let bodies: Vec<String> = (0..512).map(|_| g.status_value(accounts)["content"].as_str().unwrap_or("<p>post</p>").to_owned()).collect();
    let mean_body = bodies.iter().map(String::len).sum::<usize>() / bodies.len();
    let poster = Poster { fake: Arc::new(fake), users: Arc::new(users), bodies: Arc::new(bodies), rt: fake_rt.handle().clone() };

    let dir = std::env::temp_dir().join(format!("fedistream-bench-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure(&poster, &dir, count, rate, latency_count, transport).await;
    // The same burst statuses, as the server rendered them, through the replay
    // path (`bench pipeline --input`) in this process, on the same core.
    let replay = match &result {
        Ok(m) => Some(replay_same(&poster, &dir, &m.burst).await),
        Err(_) => None,
    };
    let _ = std::fs::remove_dir_all(&dir);
    let accounts = poster.users.len();
    drop(poster);
    fake_rt.shutdown_background();
    let Measured { secs, cpu_all, cpu_fake, lat, .. } = result?;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / count.max(1) as f64;
    println!("bench stream ({transport:?}, {accounts} accounts, mean post HTML {mean_body} B)");
    println!(
        "  burst       {count} statuses in {secs:.2} s: {:.0} statuses/s; CPU µs/status: fedistream {:.0}, fake server {:.0}",
        count as f64 / secs,
        per(cpu_all.saturating_sub(cpu_fake)),
        per(cpu_fake)
    );
    println!(
        "  (fedistream alone at that CPU: {:.0} statuses/s per core)",
        count as f64 / cpu_all.saturating_sub(cpu_fake).as_secs_f64().max(1e-9)
    );
    println!(
        "  at {rate:.0}/s    {latency_count} statuses, send → delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.50) as f64 / 1e3,
        percentile(&lat, 0.99) as f64 / 1e3,
        lat.last().copied().unwrap_or(0) as f64 / 1e3
    );
    let (replay_n, replay_secs, replay_cpu) = replay.context("replaying the burst's statuses")??;
    let stream_per_core = count as f64 / cpu_all.saturating_sub(cpu_fake).as_secs_f64().max(1e-9);
    let replay_per_core = replay_n as f64 / replay_cpu.as_secs_f64().max(1e-9);
    println!(
        "  replay      the same {replay_n} statuses through `bench pipeline --input`'s path: {:.0} statuses/s, CPU µs/status {:.0} ({:.0} statuses/s per core)",
        replay_n as f64 / replay_secs,
        replay_cpu.as_secs_f64() * 1e6 / replay_n.max(1) as f64,
        replay_per_core
    );
    println!("  stream/replay, statuses per core-second: {:.0} %", 100.0 * stream_per_core / replay_per_core.max(1e-9));
    println!("  peak RSS    {} MiB (fedistream and the fake server)", peak_rss_kib(None).unwrap_or(0) / 1024);
    Ok(ExitCode::SUCCESS)
}

/// Posts on the fake server's runtime.
struct Poster {
    fake: Arc<FakeMastodon>,
    users: Arc<Vec<String>>,
    bodies: Arc<Vec<String>>,
    rt: tokio::runtime::Handle,
}

impl Poster {
    /// Posts `count` statuses from post number `from` on, round-robin over the
    /// accounts; with `every`, one per tick; with `ahead`, never more than that
    /// many not yet in `delivered`. Returns each post's key and when it was sent.
    async fn post(
        &self,
        from: usize,
        count: usize,
        every: Option<Duration>,
        ahead: Option<(usize, Delivered)>,
    ) -> anyhow::Result<Vec<(String, Instant)>> {
        let (fake, users, bodies) = (self.fake.clone(), self.users.clone(), self.bodies.clone());
        let task = self.rt.spawn(async move {
            let mut sent = Vec::with_capacity(count);
            let mut tick = every.map(|d| {
                let mut t = tokio::time::interval(d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let before = ahead.as_ref().map(|(_, d)| d.count()).unwrap_or(0);
            while sent.len() < count {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                if let Some((limit, d)) = &ahead {
                    let done = d.count() - before;
                    if sent.len() >= done + limit {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                        continue;
                    }
                }
                let n = from + sent.len();
                let posted = fake.post(&users[n % users.len()], NewStatus::html(bodies[n % bodies.len()].clone()));
                sent.push((posted.uri, Instant::now()));
                if sent.len() % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            sent
        });
        Ok(task.await?)
    }
}

/// What the two phases measured.
struct Measured {
    secs: f64,
    cpu_all: Duration,
    cpu_fake: Duration,
    /// Send → delivery, sorted, in µs.
    lat: Vec<u64>,
    /// The burst's statuses, by URI, in the order they were posted.
    burst: Vec<String>,
}

/// Writes the burst's statuses, as the fake server renders them to a reader,
/// to a JSON Lines file in posting order and replays them through the replay
/// pipeline: (statuses, wall seconds, fedistream CPU).
async fn replay_same(poster: &Poster, dir: &std::path::Path, burst: &[String]) -> anyhow::Result<(usize, f64, Duration)> {
    use std::io::Write;
    let mut by_uri: HashMap<String, serde_json::Value> = HashMap::with_capacity(burst.len());
    for u in poster.users.iter() {
        for s in poster.fake.statuses_of(u) {
            if let Some(uri) = s["uri"].as_str() {
                by_uri.insert(uri.to_owned(), s);
            }
        }
    }
    let input = dir.join("same-statuses.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
    let mut n = 0;
    for uri in burst {
        let s = by_uri.get(uri).with_context(|| format!("status {uri} not on the fake server"))?;
        writeln!(f, "{s}")?;
        n += 1;
    }
    f.flush()?;
    drop(f);
    let replay_dir = dir.join("replay");
    std::fs::create_dir_all(&replay_dir)?;
    let (all0, fake0) = cpu_times();
    let m = crate::bench::replay_measure(&input, &replay_dir, n, None, &crate::bench::BenchChannel::File, None).await?;
    let (all1, fake1) = cpu_times();
    if !m.failures.is_empty() {
        bail!("replay failures: {:?}", m.failures);
    }
    if m.lat.len() != n {
        bail!("replay delivered {} of {n} statuses", m.lat.len());
    }
    Ok((n, m.elapsed, all1.saturating_sub(all0).saturating_sub(fake1.saturating_sub(fake0))))
}

async fn measure(
    poster: &Poster,
    dir: &std::path::Path,
    count: usize,
    rate: f64,
    latency_count: usize,
    transport: StreamMode,
) -> anyhow::Result<Measured> {
    let fake = &poster.fake;
    let dir = dir.to_path_buf();
    let log = SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?;
    let mut cfg = MastodonSourceConfig::for_accounts(poster.users.iter().map(|u| format!("{u}@{}", fake.host())).collect());
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
        inner: FileSink::new(FileSinkConfig {
            path: dir.join("out.jsonl"),
            rotate_bytes: 0,
            rotate_age: None,
            fsync: false,
            delivery: delivery.clone(),
        }),
        delivered: delivered.clone(),
    };
    let p = Pipeline {
        log,
        processors: vec![],
        sources: vec![SourceSpec::new(
            "m",
            Box::new(MastodonSource::new(cfg, Some(reader), RateLimiters::default())),
            DeadLetter::new(dir.join("dl-source.jsonl")),
        )],
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
    // Caught up: first posts arrive through the stream.
    let warm = poster.post(0, poster.users.len().min(50), None, None).await?;
    let mut n = warm.len();
    delivered.wait_for(warm.len(), Duration::from_secs(120)).await?;
    delivered.times(&keys(&warm))?;

    // Phase 1: a burst, as fast as the pipeline takes it. At most `AHEAD`
    // posts are in flight (posted, not delivered): the fake server, like the
    // real one, drops events for a reader that falls too far behind (its
    // stream buffer holds 4,096), and this measures the pipeline, not that.
    const AHEAD: usize = 2_000;
    let (all0, fake0) = cpu_times();
    let t0 = Instant::now();
    let burst = poster.post(n, count, None, Some((AHEAD, delivered.clone()))).await?;
    n += burst.len();
    delivered.wait_for(n, Duration::from_secs(600)).await?;
    let secs = t0.elapsed().as_secs_f64();
    let (all1, fake1) = cpu_times();
    delivered.times(&keys(&burst))?;

    // Phase 2: a steady rate.
    let sent = poster.post(n, latency_count, Some(Duration::from_secs_f64(1.0 / rate.max(1.0))), None).await?;
    delivered.wait_for(n + sent.len(), Duration::from_secs(120)).await?;
    let at = delivered.times(&keys(&sent))?;
    let mut lat: Vec<u64> = sent.iter().map(|(k, sent_at)| at[k].saturating_duration_since(*sent_at).as_micros() as u64).collect();
    lat.sort_unstable();
    stop.cancel();
    let summary = run.await.context("runtime task")??;
    if !summary.failures.is_empty() {
        bail!("components failed: {:?}", summary.failures);
    }
    Ok(Measured { secs, cpu_all: all1.saturating_sub(all0), cpu_fake: fake1.saturating_sub(fake0), lat, burst: keys(&burst) })
}

fn keys(sent: &[(String, Instant)]) -> Vec<String> {
    sent.iter().map(|(k, _)| k.clone()).collect()
}
