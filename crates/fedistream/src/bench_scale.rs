//! `fedistream bench follow-scale`: one process following many accounts on
//! many servers, inside each server's rate limit, every post delivered once.
//!
//! `servers` fake Mastodon servers run in a child process (this binary again,
//! `bench follow-scale-fakes`, on loopback ports), each with its own
//! fixed-window rate limit — so this process's peak RSS and CPU are
//! fedistream's alone; `accounts` accounts are spread over them, and a
//! poster creates posts at `rate` per second on random accounts. fedistream
//! runs one account source per server (anonymous polling, at the interval
//! the limit allows: printed) and a `local` timeline source on the first
//! `timelines` servers, into the SQLite log and a channel that timestamps
//! deliveries. After `duration` of posting it waits for the stragglers and
//! reports: posts created / delivered / delivered twice, creation → delivery
//! p50/p99 against the polling interval, the busiest server's requests per
//! window against its limit (and any 429), fedistream's CPU per post and peak
//! RSS, and the fake servers' own. The last line is `result {json}` for tests.
//!
//! The two processes talk in lines of JSON over the child's stdin and stdout:
//! the child prints `ready {"hosts": [...]}` once its servers are up, answers
//! `post {"rate", "duration_ms"}` with `created {"posts": [[uri, unix ms], ...]}`
//! once it has posted, and `report` with `report {...}` (its request counts per
//! window, 429s, CPU and peak RSS), then exits.

use std::collections::{BTreeMap, HashMap};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use async_trait::async_trait;
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::source::{
    Backfill, MastodonSource, MastodonSourceConfig, MastodonTimelineConfig, MastodonTimelineSource, ReaderConnection, StreamMode,
    TimelineKind, TimelineServer,
};
use fedistream_connectors::testing::{AccountOpts, FakeConfig, FakeMastodon, NewStatus, RateLimitConfig};
use fedistream_core::runtime::{ChannelSpec, DeliveryConfig, Pipeline, RuntimeOptions, SourceSpec};
use fedistream_core::secret::Secret;
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::{DeadLetter, LogRecord, Sink, SinkError, Source};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

use crate::bench::{cpu_times, peak_rss_kib, percentile};

/// What `follow-scale` is asked to do.
#[derive(Debug, Clone)]
pub struct Scale {
    pub servers: usize,
    pub accounts: usize,
    pub timelines: usize,
    /// Servers (the first ones) where a reader token follows the accounts: their
    /// posts arrive over the reader's `user` stream, REST is the fallback.
    pub streamed: usize,
    pub rate: f64,
    pub duration: Duration,
    /// Requests per window per server (and per IP: all of ours come from one).
    pub limit: u32,
    pub window: Duration,
}

/// The reader token of the streamed servers (a benchmark's fake, not a secret).
const READER_TOKEN: &str = "bench-reader";

/// Deliveries by key: when first (unix ms), and how often.
type Delivered = Arc<Mutex<HashMap<String, (u64, u32)>>>;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct CountingSink {
    delivered: Delivered,
}

#[async_trait]
impl Sink for CountingSink {
    async fn write(&mut self, batch: &[LogRecord]) -> Result<fedistream_core::Written, SinkError> {
        let now = unix_ms();
        let mut d = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        for r in batch {
            if let Ok(e) = r.event() {
                d.entry(e.key.clone()).or_insert((now, 0)).1 += 1;
            }
        }
        Ok(fedistream_core::Written::done())
    }
}

/// Account `i` is `u{i}` on server `i % servers`: both processes derive the
/// same spread from the counts alone.
fn spread(servers: usize, accounts: usize) -> Vec<Vec<String>> {
    let mut users: Vec<Vec<String>> = vec![Vec::new(); servers];
    for i in 0..accounts {
        users[i % servers].push(format!("u{i}"));
    }
    users
}

#[derive(Serialize, Deserialize)]
struct Ready {
    hosts: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct PostCmd {
    rate: f64,
    duration_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Created {
    /// (post URI, creation in unix ms).
    posts: Vec<(String, u64)>,
}

#[derive(Serialize, Deserialize)]
struct FakesReport {
    /// Requests in the busiest window of the busiest server, per limiter key
    /// (token or address).
    max_per_window: usize,
    /// 429 answers over all servers.
    throttled: usize,
    cpu_ms: u64,
    peak_rss_kib: u64,
}

/// The child's side of the pipe, seen from the parent.
struct Fakes {
    child: tokio::process::Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Fakes {
    async fn spawn(s: &Scale) -> anyhow::Result<(Self, Ready)> {
        let exe = std::env::current_exe().context("locating this binary to start the fake servers")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["--log-level", "warn", "bench", "follow-scale-fakes"])
            .args(["--servers", &s.servers.to_string(), "--accounts", &s.accounts.to_string()])
            .args(["--limit", &s.limit.to_string(), "--window-ms", &s.window.as_millis().to_string()])
            .args(["--streamed", &s.streamed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the fake servers' process")?;
        let stdin = child.stdin.take().context("fake servers' stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("fake servers' stdout")?).lines();
        let mut f = Fakes { child, stdin, stdout };
        let ready = f.expect("ready").await?;
        Ok((f, ready))
    }

    async fn expect<T: for<'de> Deserialize<'de>>(&mut self, tag: &str) -> anyhow::Result<T> {
        let line = self.stdout.next_line().await?.with_context(|| format!("the fake servers' process ended before `{tag}`"))?;
        let json = line.strip_prefix(tag).and_then(|l| l.strip_prefix(' ')).with_context(|| format!("expected `{tag} …`, got {line:?}"))?;
        serde_json::from_str(json).with_context(|| format!("`{tag}` line from the fake servers"))
    }

    async fn send(&mut self, line: String) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }
}

pub async fn run(s: Scale) -> anyhow::Result<ExitCode> {
    if s.servers == 0 || s.accounts < s.servers || s.limit < 10 || s.streamed > s.servers {
        bail!("need at least one server, one account per server, a limit of 10 or more and no more streamed servers than servers");
    }
    let users = spread(s.servers, s.accounts);
    // Each account costs one request per poll; the timeline source one more
    // per poll on its server; keep a fifth of the budget for lookups and slack.
    let per_server = users.iter().map(Vec::len).max().unwrap_or(1) as f64 + if s.timelines > 0 { 1.0 } else { 0.0 };
    let interval = Duration::from_secs_f64((per_server * s.window.as_secs_f64() / (f64::from(s.limit) * 0.8)).max(1.0));
    println!(
        "bench follow-scale: {} accounts on {} servers (limit {} per {:?} each; {} with a reader stream), {} timeline sources, {:.1} posts/s for {:?}",
        s.accounts, s.servers, s.limit, s.window, s.streamed, s.timelines, s.rate, s.duration
    );
    println!("  polling interval the limits allow: {:.1} s per account (servers without a reader stream)", interval.as_secs_f64());

    let (mut fakes, ready) = Fakes::spawn(&s).await?;
    if ready.hosts.len() != s.servers {
        bail!("the fake servers' process started {} servers, not {}", ready.hosts.len(), s.servers);
    }
    let dir = std::env::temp_dir().join(format!("fedistream-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure(&s, &mut fakes, &ready.hosts, &users, interval, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (r, f) = result?;
    let _ = fakes.child.wait().await;
    let per_post = |d: Duration| d.as_secs_f64() * 1e6 / r.delivered.max(1) as f64;
    println!("  posts       {} created, {} delivered, {} delivered twice, {} missing", r.created, r.delivered, r.twice, r.missing);
    println!(
        "  delay       creation → delivery p50 {:.1} s, p99 {:.1} s (polling interval {:.1} s)",
        percentile(&r.lat, 0.5) as f64 / 1e3,
        percentile(&r.lat, 0.99) as f64 / 1e3,
        interval.as_secs_f64()
    );
    println!(
        "  requests    busiest server: {} in one {:?} window for one token or address (limit {}); 429 answers: {}",
        f.max_per_window, s.window, s.limit, f.throttled
    );
    println!("  CPU         fedistream {:.0} µs per post ({:.2}% of a core over the run)", per_post(r.cpu), r.cpu_share * 100.0);
    let rss = peak_rss_kib(None).unwrap_or(0);
    println!("  peak RSS    fedistream {} MiB; the fake servers' process {} MiB", rss / 1024, f.peak_rss_kib / 1024);
    let json = serde_json::json!({
        "created": r.created, "delivered": r.delivered, "twice": r.twice, "missing": r.missing,
        "max_per_window": f.max_per_window, "limit": s.limit, "throttled": f.throttled,
        "p50_ms": percentile(&r.lat, 0.5), "p99_ms": percentile(&r.lat, 0.99), "interval_ms": interval.as_millis() as u64,
        "peak_rss_kib": rss, "fakes_peak_rss_kib": f.peak_rss_kib,
    });
    println!("result {json}");
    Ok(ExitCode::SUCCESS)
}

struct Measured {
    created: usize,
    delivered: usize,
    twice: usize,
    missing: usize,
    /// Creation → delivery in ms, sorted.
    lat: Vec<u64>,
    cpu: Duration,
    cpu_share: f64,
}

async fn measure(
    s: &Scale,
    fakes: &mut Fakes,
    hosts: &[String],
    users: &[Vec<String>],
    interval: Duration,
    dir: &std::path::Path,
) -> anyhow::Result<(Measured, FakesReport)> {
    let limiters = RateLimiters::default();
    let mut sources: Vec<SourceSpec> = Vec::new();
    for (k, host) in hosts.iter().enumerate() {
        let base_url = format!("http://{host}");
        let mut cfg = MastodonSourceConfig::for_accounts(users[k].iter().map(|u| format!("{u}@{host}")).collect());
        cfg.instance = Some(base_url.clone());
        cfg.backfill = Backfill::None;
        let reader = (k < s.streamed)
            .then(|| -> anyhow::Result<_> { Ok(ReaderConnection { base_url: base_url.parse()?, token: Secret::new(READER_TOKEN) }) })
            .transpose()?;
        cfg.stream = if reader.is_some() { StreamMode::Auto } else { StreamMode::Off };
        cfg.poll_interval = interval;
        cfg.max_poll_interval = interval;
        // The safety re-read of the newest page (edits) and reconciliation are
        // further requests inside the same limit, for edits and deletions; the
        // new posts are what is measured here, so they are off.
        cfg.safety_interval = Duration::from_secs(30 * 24 * 3600);
        cfg.reconcile_within = Duration::from_secs(30 * 24 * 3600);
        let src: Box<dyn Source> = Box::new(MastodonSource::new(cfg, reader, limiters.clone()));
        sources.push(SourceSpec::new(format!("s{k}"), src, DeadLetter::new(dir.join(format!("dl-s{k}.jsonl")))));
        if k < s.timelines {
            let mut t = MastodonTimelineConfig::new(vec![TimelineKind::Local]);
            t.stream = StreamMode::Off;
            t.poll_interval = interval;
            let server = TimelineServer { base_url: base_url.parse()?, token: None };
            let src: Box<dyn Source> = Box::new(MastodonTimelineSource::new(t, server, limiters.clone()));
            sources.push(SourceSpec::new(format!("t{k}"), src, DeadLetter::new(dir.join(format!("dl-t{k}.jsonl")))));
        }
    }
    let delivered: Delivered = Default::default();
    let delivery = DeliveryConfig::default();
    let p = Pipeline {
        log: SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?,
        processors: vec![],
        sources,
        channels: vec![ChannelSpec {
            name: "count".into(),
            group: "fedistream.channel.count".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(CountingSink { delivered: delivered.clone() }),
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
    // Started: every account has been looked up and has a checkpoint.
    let log = SqliteLog::open_read_only(dir.join("log.db"))?;
    let want = s.accounts + s.timelines.min(s.servers);
    let deadline = Instant::now() + interval * 4 + Duration::from_secs(60);
    loop {
        use fedistream_core::Log;
        let n = log.state_scan("checkpoint").await.map(|c| c.len()).unwrap_or(0);
        if n >= want {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {want} accounts and feeds started within {:?}", deadline.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Post at `rate` for `duration`, in the fake servers' process.
    let (cpu0, _) = cpu_times();
    let t0 = Instant::now();
    fakes.send(format!("post {}", serde_json::to_string(&PostCmd { rate: s.rate, duration_ms: s.duration.as_millis() as u64 })?)).await?;
    let created: Created = fakes.expect("created").await?;
    let created = created.posts;
    // Stragglers: the last posts need up to one polling interval (and pacing).
    let deadline = Instant::now() + interval * 3 + Duration::from_secs(10);
    loop {
        let missing = {
            let d = delivered.lock().unwrap_or_else(|p| p.into_inner());
            created.iter().filter(|(k, _)| !d.contains_key(k)).count()
        };
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (cpu1, _) = cpu_times();
    let elapsed = t0.elapsed();
    stop.cancel();
    let summary = run.await.context("runtime task")??;
    if !summary.failures.is_empty() {
        bail!("components failed: {:?}", summary.failures);
    }
    fakes.send("report".into()).await?;
    let report: FakesReport = fakes.expect("report").await?;
    let d = delivered.lock().unwrap_or_else(|p| p.into_inner());
    let mut lat: Vec<u64> = created.iter().filter_map(|(k, at)| d.get(k).map(|(t, _)| t.saturating_sub(*at))).collect();
    lat.sort_unstable();
    let cpu = cpu1.saturating_sub(cpu0);
    let m = Measured {
        created: created.len(),
        delivered: created.iter().filter(|(k, _)| d.contains_key(k)).count(),
        twice: d.values().filter(|(_, n)| *n > 1).count(),
        missing: created.iter().filter(|(k, _)| !d.contains_key(k)).count(),
        lat,
        cpu,
        cpu_share: cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
    };
    Ok((m, report))
}

/// The child: `servers` fake servers with `accounts` accounts spread over
/// them, driven by lines on stdin (see the module docs).
pub async fn serve_fakes(servers: usize, accounts: usize, streamed: usize, limit: u32, window: Duration) -> anyhow::Result<ExitCode> {
    let mut fakes = Vec::new();
    for k in 0..servers {
        let token = (k < streamed).then(|| READER_TOKEN.to_owned());
        let cfg = FakeConfig { rate_limit: RateLimitConfig { limit, window }, token, ..FakeConfig::default() };
        fakes.push(FakeMastodon::start(cfg).await);
    }
    let users = spread(servers, accounts);
    for (fake, users) in fakes.iter().zip(&users) {
        for u in users {
            fake.add_account(u, AccountOpts::default());
        }
    }
    let mut out = std::io::stdout();
    let say = |out: &mut std::io::Stdout, tag: &str, json: String| -> anyhow::Result<()> {
        use std::io::Write;
        writeln!(out, "{tag} {json}")?;
        out.flush()?;
        Ok(())
    };
    say(&mut out, "ready", serde_json::to_string(&Ready { hosts: fakes.iter().map(FakeMastodon::host).collect() })?)?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(cmd) = line.strip_prefix("post ") {
            let cmd: PostCmd = serde_json::from_str(cmd).context("`post` command")?;
            let mut created: Vec<(String, u64)> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cmd.rate.max(0.01)));
            let start = Instant::now();
            let mut n = 0usize;
            while start.elapsed() < Duration::from_millis(cmd.duration_ms) {
                tick.tick().await;
                // A spread that is not round-robin: a multiplicative hash of n.
                let k = (n.wrapping_mul(2_654_435_761)) % fakes.len();
                let u = &users[k][(n / fakes.len()) % users[k].len()];
                let p = fakes[k].post(u, NewStatus::html(format!("<p>post {n}</p>")));
                created.push((p.uri, unix_ms()));
                n += 1;
            }
            say(&mut out, "created", serde_json::to_string(&Created { posts: created })?)?;
        } else if line == "report" {
            let mut max_per_window = 0;
            let mut throttled = 0;
            let window = window.as_secs().max(1) as i64;
            for fake in &fakes {
                // Counted as the server counts: per window and per limiter key —
                // the reader's token, or the address for anonymous requests (a
                // streamed server's timeline source reads anonymously).
                let mut per: BTreeMap<(bool, i64), usize> = BTreeMap::new();
                for r in fake.requests().iter().filter(|r| r.path.starts_with("/api/") && !r.path.starts_with("/api/v1/streaming")) {
                    *per.entry((r.authorized, r.at.timestamp().div_euclid(window))).or_default() += 1;
                    throttled += usize::from(r.status == 429);
                }
                max_per_window = max_per_window.max(per.values().copied().max().unwrap_or(0));
            }
            let (cpu, _) = cpu_times();
            let report =
                FakesReport { max_per_window, throttled, cpu_ms: cpu.as_millis() as u64, peak_rss_kib: peak_rss_kib(None).unwrap_or(0) };
            say(&mut out, "report", serde_json::to_string(&report)?)?;
            return Ok(ExitCode::SUCCESS);
        } else {
            bail!("unknown command {line:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
