//! `fedistream bench`: measurements, not tests.
//!
//! * `pipeline` — N synthetic statuses (1.5–9 KB, varied) through parse →
//!   normalise → durable append → file channel; reports statuses/s, MB/s,
//!   append-to-delivery latency percentiles and peak RSS.
//! * `follow-rss` — follow many accounts of a `fake-mastodon` process by polling
//!   and report the peak RSS of a `fedistream run` child process.
//! * `http`, `metrics` — what the HTTP server costs ([`crate::bench_http`]).
//! * `stats-pipeline` — the `pipeline` run with and without an `account_stats`
//!   processor, alternating rounds: the throughput the statistics cost.
//! * `stats-replay` — reprocessing: the `account_stats` processor alone over
//!   an existing log of N synthetic events.
//! * `archive`, `archive-sink`, `archive-s3`, `sql` — the archive channel and `fedistream sql`
//!   ([`crate::bench_archive`]).
//! * `generate` — write synthetic statuses as JSON Lines (demo data, archives).
//!
//! A mode measuring a part this build lacks (`kafka`, `archive`, `sql`,
//! `webhook`, `http` features) is hidden from `--help` and says which feature
//! it needs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use clap::{Args, Subcommand};
use fedistream_connectors::file::{FileSink, FileSinkConfig};
use fedistream_connectors::replay::{ReplaySource, ReplaySourceConfig};
use fedistream_connectors::synthetic::Generator;
use fedistream_core::runtime::{ChannelSpec, DeliveryConfig, Pipeline, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::{DeadLetter, LogRecord, Sink, SinkError};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchKind,
}

#[derive(Subcommand, Debug)]
pub enum BenchKind {
    /// Parse → normalise → durable append → file channel, end to end.
    Pipeline {
        /// Number of statuses.
        #[arg(long, default_value_t = 200_000)]
        count: usize,
        /// Offered load in statuses/s (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Distinct authors.
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Working directory (default: a temporary one, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Use this JSON Lines file of statuses instead of generating `count` of them.
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// The `pipeline` run with an `account_stats` processor (hour and day
    /// windows, consuming the events beside the file channel) and without it,
    /// alternating rounds on the same input after one unmeasured warm-up
    /// round of each; reports each round, the medians and their ratio.
    StatsPipeline {
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Measured rounds of each.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Working directory (default: a temporary one, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Reprocessing: the `account_stats` processor (default config) alone over
    /// an existing log. `count` synthetic statuses are normalised and appended
    /// to a fresh SQLite log first (not measured); then each round reads the
    /// log from its start in batches of 4,096, as the runtime hands them over,
    /// and processes them (records and state built, not committed). Reports
    /// events/s of the processor alone and with the log's reads.
    StatsReplay {
        #[arg(long, default_value_t = 1_000_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Measured rounds (after one warm-up round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Working directory (default: a temporary one, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Peak RSS of `fedistream run` polling N accounts on a fake-mastodon process.
    FollowRss {
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// How long to measure.
        #[arg(long, default_value = "60s", value_parser = crate::cli::parse_duration)]
        duration: Duration,
        /// Path of the fake-mastodon binary (default: next to this executable).
        #[arg(long)]
        fake: Option<PathBuf>,
    },
    /// The mastodon (republish) channel against an in-process fake server, pacing off:
    /// throughput, and the overhead the channel adds per post beyond the server's time.
    /// (Built with `--features test-util`.)
    #[cfg(feature = "test-util")]
    Mastodon {
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// The live path: an in-process fake server streams posts of N followed
    /// accounts (SSE or WebSocket) to the mastodon source → SQLite log → file
    /// channel: burst statuses/s and CPU per status, send → delivery latency at
    /// a steady rate, peak RSS. (Built with `--features test-util`.)
    #[cfg(feature = "test-util")]
    Stream {
        /// Posts in the burst phase.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Posts per second in the latency phase.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Posts in the latency phase.
        #[arg(long, default_value_t = 5000)]
        latency_count: usize,
        /// `sse` or `websocket`.
        #[arg(long, default_value = "sse", value_parser = parse_transport)]
        transport: fedistream_connectors::mastodon::source::StreamMode,
    },
    /// One process following many accounts on many servers: fake servers (in
    /// a child process) on loopback ports, each with its own rate limit; account
    /// sources polling at the interval the limits allow, a few timeline
    /// sources; posts created at `rate`/s. Reports posts created, delivered
    /// and delivered twice, creation → delivery p50/p99, the busiest server's
    /// requests per window against its limit, fedistream's CPU per post and
    /// peak RSS (the fake servers' apart).
    /// (Built with `--features test-util`.)
    #[cfg(feature = "test-util")]
    FollowScale {
        #[arg(long, default_value_t = 50)]
        servers: usize,
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// `local` timeline sources, on the first servers.
        #[arg(long, default_value_t = 3)]
        timelines: usize,
        /// Servers with a reader token whose `user` stream carries the posts
        /// (the first ones); the others are polled.
        #[arg(long, default_value_t = 10)]
        streamed: usize,
        /// Posts per second over all accounts.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// How long to post.
        #[arg(long, default_value = "5m", value_parser = crate::cli::parse_duration)]
        duration: Duration,
        /// Requests per window per server (Mastodon: 300 per 5 minutes per IP).
        #[arg(long, default_value_t = 300)]
        limit: u32,
        #[arg(long, default_value = "5m", value_parser = crate::cli::parse_duration)]
        window: Duration,
    },
    /// The fake servers of `follow-scale`, in their own process (started by
    /// `follow-scale`, driven over stdin/stdout).
    #[cfg(feature = "test-util")]
    #[command(hide = true)]
    FollowScaleFakes {
        #[arg(long)]
        servers: usize,
        #[arg(long)]
        accounts: usize,
        #[arg(long)]
        streamed: usize,
        #[arg(long)]
        limit: u32,
        #[arg(long)]
        window_ms: u64,
    },
    /// The webhook channel against a receiver in this process (answering 200 at
    /// once): events per second with `max_in_flight` requests open.
    #[cfg_attr(not(all(feature = "webhook", feature = "http")), command(hide = true))]
    Webhook {
        #[arg(long, default_value_t = 50_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        #[arg(long, default_value_t = 16)]
        max_in_flight: usize,
        /// Records per request (JSON array); default one per request.
        #[arg(long)]
        batch: Option<usize>,
        /// Sign requests (HMAC-SHA256) as with `secret_env`.
        #[arg(long)]
        signed: bool,
    },
    /// The Kafka log backend against librdkafka alone on the same broker, and end
    /// to end through the runtime on Kafka (needs a broker: `scripts/kafka up`).
    #[cfg_attr(not(feature = "kafka"), command(hide = true))]
    Kafka {
        #[arg(long, env = "FEDISTREAM_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Events per append (the ingestor coalesces up to 4096).
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// Measured rounds of the three producers, interleaved (after one
        /// unmeasured warm-up round); medians are reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Memory of the Kafka log's state view as the log grows: appends `count`
    /// statuses with their dedup entries and checkpoints, pruning state older
    /// than `horizon`, and reports the keys held and RSS as it goes; with
    /// `--owners`, then the keys and RSS of each of N processes sharing the
    /// ingest slots (needs a broker: `scripts/kafka up`).
    #[cfg_attr(not(feature = "kafka"), command(hide = true))]
    KafkaState {
        #[arg(long, env = "FEDISTREAM_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Events per append (the ingestor coalesces up to 4096).
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// Prune state written longer ago than this (as `[log] state_horizon`);
        /// without it nothing is pruned.
        #[arg(long, value_parser = crate::cli::parse_duration)]
        horizon: Option<Duration>,
        /// Then, for each N given (e.g. `1,3`), start N processes that share
        /// the ingest slots (round robin) and report the state keys and RSS
        /// each holds once it has loaded the state of its slots.
        #[arg(long, value_delimiter = ',')]
        owners: Vec<usize>,
        /// (Internal: one of those processes.) The pipeline to open…
        #[arg(long, hide = true, requires = "hold_slots")]
        hold_pipeline: Option<String>,
        /// …and the slots to hold.
        #[arg(long, hide = true, value_delimiter = ',', requires = "hold_pipeline")]
        hold_slots: Vec<i32>,
    },
    /// The pipeline bench plain and with the HTTP server on and a client
    /// holding `/api/events` open, alternating rounds; medians and their ratio.
    #[cfg_attr(not(feature = "http"), command(hide = true))]
    Http {
        #[arg(long, default_value_t = 50_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// `/metrics` render time with N followed accounts in the status documents.
    #[cfg_attr(not(feature = "http"), command(hide = true))]
    Metrics {
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        #[arg(long, default_value_t = 1000)]
        iterations: usize,
    },
    /// The archive channel to a local directory against the file channel:
    /// the pipeline bench (replay → SQLite log → channel) with each,
    /// alternating rounds on the same input; medians and their ratio.
    #[cfg_attr(not(feature = "archive"), command(hide = true))]
    Archive {
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Working directory (default: a temporary one, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The archive channel alone to a local directory (records read back
    /// from a log the pipeline filled, written by the sink, flushed): events/s,
    /// the process's CPU time per event, objects and bytes; fresh records each round.
    #[cfg_attr(not(feature = "archive"), command(hide = true))]
    ArchiveSink {
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// The archive channel alone to an S3 server (MinIO: `eval "$(scripts/s3
    /// env)"` for the credentials) — posts/s and bytes/s — beside a plain
    /// multipart upload of the same bytes with the same client; alternating rounds.
    #[cfg_attr(not(feature = "archive"), command(hide = true))]
    ArchiveS3 {
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The server (default: FEDISTREAM_S3_ENDPOINT, else http://127.0.0.1:9000).
        #[arg(long)]
        endpoint: Option<String>,
        /// The bucket (created if missing; default: fedistream-bench-<pid>).
        #[arg(long)]
        bucket: Option<String>,
    },
    /// `fedistream sql` against DuckDB on the same archive (the pipeline
    /// writes it once, kept in --dir for reruns): a group-by on account and
    /// hour, alternating rounds. DuckDB is Python's `duckdb` (--python, else
    /// FEDISTREAM_PYTHON, as `scripts/python-deps` prints).
    #[cfg_attr(not(feature = "sql"), command(hide = true))]
    Sql {
        /// Statuses replayed into the archive.
        #[arg(long, default_value_t = 1_000_000)]
        posts: usize,
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Where the archive is built and kept (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A Python with the `duckdb` package.
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Write synthetic statuses as JSON Lines.
    Generate {
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[arg(long, default_value_t = 12)]
        accounts: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    match a.what {
        BenchKind::Pipeline { count, rate, accounts, dir, input } => pipeline(count, rate, accounts, dir, input).await,
        BenchKind::StatsPipeline { count, accounts, rounds, dir } => stats_pipeline(count, accounts, rounds, dir).await,
        BenchKind::StatsReplay { count, accounts, rounds, dir } => stats_replay(count, accounts, rounds, dir).await,
        BenchKind::FollowRss { accounts, duration, fake } => follow_rss(accounts, duration, fake).await,
        #[cfg(feature = "test-util")]
        BenchKind::Stream { count, accounts, rate, latency_count, transport } => {
            crate::bench_stream::run(count, accounts, rate, latency_count, transport).await
        }
        #[cfg(feature = "test-util")]
        BenchKind::Mastodon { count } => crate::bench_mastodon::run(count).await,
        #[cfg(feature = "test-util")]
        BenchKind::FollowScale { servers, accounts, timelines, streamed, rate, duration, limit, window } => {
            crate::bench_scale::run(crate::bench_scale::Scale { servers, accounts, timelines, streamed, rate, duration, limit, window })
                .await
        }
        #[cfg(feature = "test-util")]
        BenchKind::FollowScaleFakes { servers, accounts, streamed, limit, window_ms } => {
            crate::bench_scale::serve_fakes(servers, accounts, streamed, limit, Duration::from_millis(window_ms)).await
        }
        #[cfg(all(feature = "webhook", feature = "http"))]
        BenchKind::Webhook { count, accounts, max_in_flight, batch, signed } => {
            crate::bench_webhook::run(count, accounts, max_in_flight, batch, signed).await
        }
        // Its receiver is the HTTP server's axum.
        #[cfg(not(all(feature = "webhook", feature = "http")))]
        BenchKind::Webhook { .. } => bail!(
            "{}",
            if cfg!(feature = "webhook") { crate::features::Feature::Http } else { crate::features::Feature::Webhook }.missing()
        ),
        #[cfg(feature = "kafka")]
        BenchKind::Kafka { brokers, count, accounts, batch, rounds } => {
            crate::bench_kafka::run(brokers, count, accounts, batch, rounds).await
        }
        #[cfg(feature = "kafka")]
        BenchKind::KafkaState { brokers, count, accounts, batch, horizon, owners, hold_pipeline, hold_slots } => match hold_pipeline {
            Some(pipeline) => crate::bench_kafka_state::hold(brokers, pipeline, hold_slots).await,
            None => crate::bench_kafka_state::run(brokers, count, accounts, batch, horizon, owners).await,
        },
        #[cfg(not(feature = "kafka"))]
        BenchKind::Kafka { .. } | BenchKind::KafkaState { .. } => bail!("{}", crate::features::Feature::Kafka.missing()),
        #[cfg(feature = "http")]
        BenchKind::Http { count, accounts, rounds } => crate::bench_http::http(count, accounts, rounds).await,
        #[cfg(feature = "http")]
        BenchKind::Metrics { accounts, iterations } => crate::bench_http::metrics(accounts, iterations).await,
        #[cfg(not(feature = "http"))]
        BenchKind::Http { .. } | BenchKind::Metrics { .. } => bail!("{}", crate::features::Feature::Http.missing()),
        #[cfg(feature = "archive")]
        BenchKind::Archive { count, accounts, rounds, dir } => crate::bench_archive::archive(count, accounts, rounds, dir).await,
        #[cfg(feature = "archive")]
        BenchKind::ArchiveSink { count, accounts, rounds } => crate::bench_archive::archive_sink(count, accounts, rounds).await,
        #[cfg(feature = "archive")]
        BenchKind::ArchiveS3 { count, accounts, rounds, endpoint, bucket } => {
            crate::bench_archive::archive_s3(count, accounts, rounds, endpoint, bucket).await
        }
        #[cfg(not(feature = "archive"))]
        BenchKind::Archive { .. } | BenchKind::ArchiveSink { .. } | BenchKind::ArchiveS3 { .. } => {
            bail!("{}", crate::features::Feature::Archive.missing())
        }
        #[cfg(feature = "sql")]
        BenchKind::Sql { posts, accounts, rounds, dir, python } => crate::bench_archive::sql(posts, accounts, rounds, dir, python).await,
        #[cfg(not(feature = "sql"))]
        BenchKind::Sql { .. } => bail!("{}", crate::features::Feature::Sql.missing()),
        BenchKind::Generate { count, accounts, seed, out } => {
            let mut g = Generator::new(seed);
            let mut f = std::io::BufWriter::new(std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?);
            for _ in 0..count {
                writeln!(f, "{}", g.status(accounts))?;
            }
            f.flush()?;
            eprintln!("wrote {count} statuses to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(feature = "test-util")]
fn parse_transport(s: &str) -> Result<fedistream_connectors::mastodon::source::StreamMode, String> {
    use fedistream_connectors::mastodon::source::StreamMode;
    match s {
        "sse" => Ok(StreamMode::Sse),
        "websocket" | "ws" => Ok(StreamMode::Websocket),
        _ => Err(format!("`{s}`: expected sse or websocket")),
    }
}

/// User + system CPU time of this process's threads: (all, those named `fake-server…`).
pub(crate) fn cpu_times() -> (Duration, Duration) {
    let ticks = |stat: &str| -> u64 {
        // Fields after the command name (which may hold spaces): utime is the 14th, stime the 15th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let all = ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    let mut fake = 0;
    for t in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.starts_with("fake-server") {
            fake += ticks(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default());
        }
    }
    // USER_HZ is 100 on Linux.
    (Duration::from_millis(all * 10), Duration::from_millis(fake * 10))
}

/// Peak resident set size of a process, from /proc (Linux).
pub fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Wraps a sink and records, per delivered record, the time since its append.
pub(crate) struct LatencySink {
    pub(crate) inner: Box<dyn Sink>,
    pub(crate) samples: Arc<Mutex<Vec<u64>>>,
}

#[async_trait]
impl Sink for LatencySink {
    async fn open(&mut self, ctx: &fedistream_core::SinkContext) -> Result<(), SinkError> {
        self.inner.open(ctx).await
    }
    async fn write(&mut self, batch: &[LogRecord]) -> Result<fedistream_core::Written, SinkError> {
        let written = self.inner.write(batch).await?;
        let now = chrono::Utc::now();
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.extend(batch.iter().map(|r| (now - r.appended_at).num_microseconds().unwrap_or(0).max(0) as u64));
        Ok(written)
    }
    async fn partitions_assigned(&mut self, partitions: &[u32]) -> Result<(), SinkError> {
        self.inner.partitions_assigned(partitions).await
    }
    fn tick_interval(&self) -> Option<Duration> {
        self.inner.tick_interval()
    }
    async fn tick(&mut self) -> Result<(), SinkError> {
        self.inner.tick().await
    }
    async fn flush(&mut self) -> Result<(), SinkError> {
        self.inner.flush().await
    }
    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn pipeline(
    count: usize,
    rate: Option<f64>,
    accounts: usize,
    dir: Option<PathBuf>,
    given_input: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (dir, _tmp) = work_dir(dir)?;
    let (input, count, bytes) = bench_input(&dir, count, accounts, given_input)?;
    let ReplayMeasured { elapsed, lat, failures, .. } = replay_measure(&input, &dir, count, rate, &BenchChannel::File, None).await?;
    let delivered = lat.len();
    println!("fedistream bench pipeline");
    println!("  statuses in        {count} ({:.1} MB, avg {} B)", bytes as f64 / 1e6, bytes / count.max(1) as u64);
    println!("  offered rate       {}", rate.map(|r| format!("{r}/s")).unwrap_or_else(|| "unpaced".into()));
    println!("  delivered          {delivered} (the rest: private/direct posts skipped by policy)");
    println!("  elapsed            {elapsed:.3} s");
    println!("  throughput         {:.0} statuses/s, {:.1} MB/s", count as f64 / elapsed, bytes as f64 / 1e6 / elapsed);
    println!(
        "  latency append→delivered  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        percentile(&lat, 0.50) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!("  peak RSS           {} MiB", peak_rss_kib(None).unwrap_or(0) / 1024);
    if !failures.is_empty() {
        bail!("failures: {failures:?}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The statuses to replay: `given` (counted), or `count` synthetic ones by
/// `accounts` authors written to `dir`. Returns the file, the count and bytes.
fn bench_input(dir: &Path, count: usize, accounts: usize, given: Option<PathBuf>) -> anyhow::Result<(PathBuf, usize, u64)> {
    let mut count = count;
    let mut bytes = 0u64;
    let input = match given {
        Some(p) => {
            use std::io::BufRead;
            let f = std::fs::File::open(&p).with_context(|| format!("reading {}", p.display()))?;
            count = 0;
            for line in std::io::BufReader::new(f).lines() {
                let line = line?;
                bytes += line.len() as u64 + 1;
                count += !line.trim().is_empty() as usize;
            }
            p
        }
        None => dir.join("input.jsonl"),
    };
    if bytes == 0 {
        bytes = write_input(&input, count, accounts)?;
    }
    Ok((input, count, bytes))
}

/// `bench stats-pipeline`: [`replay_measure`] with and without the processor.
async fn stats_pipeline(count: usize, accounts: usize, rounds: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (dir, _tmp) = work_dir(dir)?;
    let (input, count, _) = bench_input(&dir, count, accounts, None)?;
    let stats = fedistream_process::stats::AccountStatsConfig::default();
    println!("fedistream bench stats-pipeline ({count} statuses, {accounts} accounts, {rounds} rounds each)");
    let (mut off, mut on) = (Vec::new(), Vec::new());
    // CPU per status (user + system, all threads): on a shared machine the
    // wall clock also counts other processes' turns on the core.
    let (mut off_cpu, mut on_cpu) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        for with in [false, true] {
            let m = replay_measure(&input, &dir, count, None, &BenchChannel::File, with.then_some(&stats)).await?;
            if !m.failures.is_empty() {
                bail!("failures: {:?}", m.failures);
            }
            let rate = count as f64 / m.elapsed;
            let cpu_us = m.cpu * 1e6 / count as f64;
            let what = if with { format!("with account_stats ({} records)", m.stats_records) } else { "without".to_string() };
            println!(
                "  round {round}{}  {what:<36} {rate:>9.0} statuses/s   {cpu_us:>6.1} µs CPU/status",
                if round == 0 { " (warm-up)" } else { "" }
            );
            if round > 0 {
                if with { &mut on } else { &mut off }.push(rate);
                if with { &mut on_cpu } else { &mut off_cpu }.push(cpu_us);
            }
        }
    }
    let (off, on) = (median(&off), median(&on));
    let (off_cpu, on_cpu) = (median(&off_cpu), median(&on_cpu));
    println!("  median without     {off:.0} statuses/s   {off_cpu:.1} µs CPU/status");
    println!(
        "  median with stats  {on:.0} statuses/s ({:.0} % of without)   {on_cpu:.1} µs CPU/status ({:.0} % of the throughput by CPU)",
        on / off * 100.0,
        off_cpu / on_cpu * 100.0
    );
    Ok(ExitCode::SUCCESS)
}

/// `bench stats-replay`: see [`BenchKind::StatsReplay`].
async fn stats_replay(count: usize, accounts: usize, rounds: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use fedistream_core::component::{Processor, ProcessorOutput};
    use fedistream_core::event::{EncodedEvent, Event};
    use fedistream_core::log::{AppendBatch, Log, EVENTS};
    use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};
    use fedistream_process::stats::{AccountStatsConfig, AccountStatsProcessor};

    let (dir, _tmp) = work_dir(dir)?;
    let _ = std::fs::remove_file(dir.join("log.db"));
    let log = SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?;
    let mut g = Generator::new(1);
    let ctx = NormalizeContext { instance: "bench", via: fedistream_core::post::Via::Replay, received_at: chrono::Utc::now() };
    let mut bytes = 0u64;
    let mut written = 0;
    while written < count {
        let n = (count - written).min(1000);
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let post = parse_and_normalize(&g.status(accounts), &ctx).map_err(|e| anyhow::anyhow!("a synthetic status: {e}"))?;
            let ev = EncodedEvent::from(Event::created("bench", post));
            bytes += ev.json().len() as u64;
            events.push(ev);
        }
        log.append(AppendBatch { events, state: vec![] }).await?;
        written += n;
    }
    println!(
        "fedistream bench stats-replay ({count} events of {accounts} accounts in the log, {:.0} MB of JSON; batches of 4096)",
        bytes as f64 / 1e6
    );
    let cfg = AccountStatsConfig::default();
    let (mut alone, mut with_reads, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        // (The process's CPU time: on a shared machine the wall clock also counts other processes' turns on the core.)
        let cpu_before = cpu_times().0;
        let mut p = AccountStatsProcessor::new("stats", &cfg, "stats").map_err(anyhow::Error::msg)?;
        let mut consumer = log.consumer(EVENTS, &format!("bench.replay.{round}")).await?;
        let (mut read_s, mut proc_s) = (0f64, 0f64);
        let (mut seen, mut records, mut puts) = (0usize, 0usize, 0usize);
        while seen < count {
            let t = Instant::now();
            let batch = consumer.poll(4096, Duration::ZERO).await?;
            read_s += t.elapsed().as_secs_f64();
            if batch.is_empty() {
                bail!("the log ended after {seen} of {count} events");
            }
            let t = Instant::now();
            let mut out = ProcessorOutput::default();
            p.process(&batch, &mut out)?;
            proc_s += t.elapsed().as_secs_f64();
            if !out.rejected.is_empty() {
                bail!("rejected: {:?}", out.rejected.first());
            }
            seen += batch.len();
            records += out.records.len();
            puts += out.state.len();
        }
        let (a, w) = (seen as f64 / proc_s, seen as f64 / (proc_s + read_s));
        let c = (cpu_times().0 - cpu_before).as_secs_f64() * 1e6 / seen as f64;
        println!(
            "  round {round}{}  processor {a:>9.0} events/s   with the log's reads {w:>9.0} events/s   {c:>5.1} µs CPU/event   ({records} records, {puts} state writes)",
            if round == 0 { " (warm-up)" } else { "" }
        );
        if round > 0 {
            alone.push(a);
            with_reads.push(w);
            cpu.push(c);
        }
    }
    println!("  median processor alone    {:.0} events/s", median(&alone));
    println!("  median with the reads     {:.0} events/s", median(&with_reads));
    println!("  median CPU, reads included  {:.1} µs/event ({:.0} events/s)", median(&cpu), 1e6 / median(&cpu));
    Ok(ExitCode::SUCCESS)
}

/// What one replay run through the pipeline measured.
pub(crate) struct ReplayMeasured {
    pub elapsed: f64,
    /// The process's CPU time (user + system, seconds) over `elapsed`: the run, not the output check after it.
    pub cpu: f64,
    /// Append → delivery, sorted, in µs (one per delivered event).
    pub lat: Vec<u64>,
    pub failures: Vec<String>,
    /// Records the `account_stats` processor wrote (0 without one).
    pub stats_records: usize,
}

/// `count` synthetic statuses (1,000-odd authors at most `accounts`, seed 1)
/// as JSON Lines at `path`; returns the bytes written.
pub(crate) fn write_input(path: &Path, count: usize, accounts: usize) -> anyhow::Result<u64> {
    let mut g = Generator::new(1);
    let mut bytes = 0u64;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    for _ in 0..count {
        let s = g.status(accounts);
        bytes += s.len() as u64 + 1;
        writeln!(f, "{s}")?;
    }
    f.flush()?;
    Ok(bytes)
}

/// The channel at the end of the measured pipeline.
#[derive(Debug, Clone)]
pub(crate) enum BenchChannel {
    /// The file channel, JSON Lines to `out.jsonl` in the run's directory.
    File,
    /// The archive channel with these settings (its directory or bucket is
    /// emptied first when local).
    #[cfg(feature = "archive")]
    Archive(Box<fedistream_archive::ArchiveSinkConfig>),
}

/// The statuses of `input` (JSON Lines, `count` of them) replayed through parse →
/// normalise → SQLite log (in `dir`, fresh) → `channel`, unpaced or at `rate`;
/// with `stats`, an `account_stats` processor consumes the events too.
/// Afterwards the channel's output is checked to hold every delivered event.
pub(crate) async fn replay_measure(
    input: &Path,
    dir: &Path,
    count: usize,
    rate: Option<f64>,
    channel: &BenchChannel,
    stats: Option<&fedistream_process::stats::AccountStatsConfig>,
) -> anyhow::Result<ReplayMeasured> {
    for f in ["log.db", "log.db-wal", "log.db-shm", "out.jsonl"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let log = SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?;
    let samples = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let inner: Box<dyn Sink> = match channel {
        BenchChannel::File => Box::new(FileSink::new(FileSinkConfig {
            path: dir.join("out.jsonl"),
            rotate_bytes: 0,
            rotate_age: None,
            fsync: false,
            delivery: DeliveryConfig::default(),
        })),
        #[cfg(feature = "archive")]
        BenchChannel::Archive(cfg) => {
            if let Some(p) = &cfg.path {
                let _ = std::fs::remove_dir_all(p);
            }
            Box::new(fedistream_archive::ArchiveSink::new((**cfg).clone()))
        }
    };
    let sink = LatencySink { inner, samples: samples.clone() };
    let delivery = DeliveryConfig { max_batch: 1000, ..DeliveryConfig::default() };
    let mut processors = Vec::new();
    if let Some(cfg) = stats {
        // As `pipeline::processors` builds it for `[processors.stats]`.
        processors.push(fedistream_core::runtime::ProcessorSpec {
            name: "stats".into(),
            group: "bench.stats".into(),
            input: fedistream_core::log::EVENTS.into(),
            processor: Box::new(fedistream_process::stats::AccountStatsProcessor::new("stats", cfg, "stats").map_err(anyhow::Error::msg)?),
            batch: fedistream_core::runtime::BatchConfig { max_records: 4096, max_bytes: 64 << 20, linger: Duration::ZERO },
            retry: fedistream_core::runtime::RetryConfig::default(),
            dead_letter: DeadLetter::new(dir.join("dead-letter-stats.jsonl")),
        });
    }
    let p = Pipeline {
        log: log.clone(),
        processors,
        sources: vec![SourceSpec::new(
            "bench",
            Box::new(ReplaySource::new(ReplaySourceConfig {
                path: input.to_path_buf(),
                rate,
                instance: "bench".into(),
                include_unlisted: true,
                owned: true,
            })),
            DeadLetter::new(dir.join("dead-letter.jsonl")),
        )],
        channels: vec![ChannelSpec {
            name: "file".into(),
            group: "bench.file".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(sink),
            route: None,
            batch: delivery.batch(),
            retry: delivery.retry(),
            dead_letter: DeadLetter::new(dir.join("dead-letter-channel.jsonl")),
        }],
        // The processor may finish after the channel: give it time to drain.
        options: RuntimeOptions { drain_deadline: Duration::from_secs(3600), ..RuntimeOptions::default() },
        progress: None,
    };
    let (started, cpu_before) = (Instant::now(), cpu_times().0);
    let summary = fedistream_core::runtime::run(p, CancellationToken::new()).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_times().0 - cpu_before).as_secs_f64();
    let mut lat = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_unstable();
    let delivered = lat.len();
    match channel {
        BenchChannel::File => {
            let n_out = count_newlines(&dir.join("out.jsonl"))?;
            if n_out != delivered {
                bail!("file channel holds {n_out} lines but {delivered} events were delivered");
            }
        }
        #[cfg(feature = "archive")]
        BenchChannel::Archive(cfg) => {
            let archive = fedistream_archive::store::Archive::open(cfg).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let dataset = cfg.dataset_for(fedistream_core::log::EVENTS);
            let rows = fedistream_archive::compact::visible_rows(&archive, &dataset).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
            if rows != delivered as u64 {
                bail!("the archive holds {rows} rows but {delivered} events were delivered");
            }
        }
    }
    let stats_records = if stats.is_some() { log.topic_records("stats").await?.len() } else { 0 };
    Ok(ReplayMeasured { elapsed, cpu, lat, failures: summary.failures.iter().map(|f| format!("{f:?}")).collect(), stats_records })
}

/// `dir` (created), or a temporary directory removed when the guard drops.
/// The median of `v` (the mean of the middle two for an even count; 0 for none).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub(crate) fn work_dir(dir: Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<TempDir>)> {
    Ok(match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            (d, None)
        }
        None => {
            let t = TempDir::new()?;
            (t.0.clone(), Some(t))
        }
    })
}

pub(crate) struct TempDir(pub(crate) PathBuf);
impl TempDir {
    pub(crate) fn new() -> std::io::Result<Self> {
        let p = std::env::temp_dir().join(format!("fedistream-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sibling_exe(name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let p = me.parent()?.join(name);
    p.is_file().then_some(p)
}

async fn follow_rss(accounts: usize, duration: Duration, fake: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let fake = fake.or_else(|| sibling_exe("fake-mastodon")).context(
        "no fake-mastodon binary next to fedistream: build it with \
         `cargo build --release -p fedistream-connectors --features test-util --bin fake-mastodon` or pass --fake",
    )?;
    let mut server = tokio::process::Command::new(&fake)
        .args(["--port", "0", "--accounts", &accounts.to_string(), "--posts-per-account", "3"])
        .args(["--post-interval-ms", "20", "--rate-limit", "100000000", "--rate-window-secs", "300"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", fake.display()))?;
    let stdout = server.stdout.take().context("fake-mastodon stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let base = loop {
        match lines.next_line().await? {
            Some(l) if l.starts_with("LISTENING ") => break l["LISTENING ".len()..].trim().to_string(),
            Some(_) => continue,
            None => bail!("fake-mastodon exited before listening"),
        }
    };
    let tmp = TempDir::new()?;
    let cfg_path = tmp.0.join("follow.toml");
    let accts: Vec<String> = (0..accounts).map(|i| format!("\"user{i}@fake.example\"")).collect();
    std::fs::write(
        &cfg_path,
        format!(
            "[log]\npath = \"{}\"\n\n[sources.many]\ntype = \"mastodon\"\ninstance = \"{base}\"\nstream = \"off\"\n\
             poll_interval = \"5s\"\nmax_poll_interval = \"60s\"\nbackfill = \"last:3\"\nconcurrency = 8\naccounts = [{}]\n\n\
             [channels.null]\ntype = \"file\"\npath = \"{}\"\n",
            tmp.0.join("log.db").display(),
            accts.join(", "),
            tmp.0.join("out.jsonl").display()
        ),
    )?;
    let me = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(me)
        .args(["--log-level", "warn", "run", "--no-progress", "--config"])
        .arg(&cfg_path)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("child pid")?;
    let started = Instant::now();
    let mut peak = 0u64;
    let mut samples = 0u64;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(r) = rss_kib(pid) {
            peak = peak.max(r);
            samples += 1;
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("fedistream run exited early: {st}");
        }
    }
    let hwm = peak_rss_kib(Some(pid)).unwrap_or(peak);
    let delivered = count_lines(&tmp.0.join("out.jsonl"));
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = server.start_kill();
    println!("fedistream bench follow-rss");
    println!("  accounts followed  {accounts} (polling, fake-mastodon posting every 20 ms)");
    println!("  measured           {:.0} s, {samples} samples", duration.as_secs_f64());
    println!("  events delivered   {delivered}");
    println!("  peak RSS           {:.1} MiB (VmHWM)", hwm as f64 / 1024.0);
    Ok(ExitCode::SUCCESS)
}

/// Lines in a file, counted in large chunks (not through tokio's file reads,
/// whose blocking-pool hop per buffer would show in profiles of the run).
fn count_newlines(p: &Path) -> std::io::Result<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(p)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(n),
            k => n += memchr::memchr_iter(b'\n', &buf[..k]).count(),
        }
    }
}

fn count_lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0)
}
