//! `fedistream bench webhook`: the webhook channel against a receiver in this
//! process (axum on loopback, answering 200 at once): how many events per
//! second the channel delivers with `max_in_flight` requests open.
//!
//! Two runs on one log: the first replays the statuses into the log (with a
//! file channel), the second replays nothing and delivers the whole log
//! through the webhook channel; the rate is taken at the receiver, from its
//! first request to its last, so the ingest is not in it.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use fedistream_connectors::replay::{ReplaySource, ReplaySourceConfig};
use fedistream_connectors::synthetic::Generator;
use fedistream_connectors::webhook::{WebhookSink, WebhookSinkConfig};
use fedistream_core::runtime::{ChannelSpec, Pipeline, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::DeadLetter;
use tokio_util::sync::CancellationToken;

/// Records received, and when the first and the last request came.
type Received = (u64, Option<Instant>, Option<Instant>);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Received>>);

async fn receive(axum::extract::State(seen): axum::extract::State<Seen>, body: axum::body::Bytes) -> axum::http::StatusCode {
    let now = Instant::now();
    let items = if body.first() == Some(&b'[') { bytecount_items(&body) } else { 1 };
    let mut s = seen.0.lock().unwrap_or_else(|p| p.into_inner());
    s.0 += items;
    s.1.get_or_insert(now);
    s.2 = Some(now);
    axum::http::StatusCode::OK
}

/// Records in a batch body: the top-level objects of the array (each starts
/// with `{"partition":`).
fn bytecount_items(body: &[u8]) -> u64 {
    body.windows(13).filter(|w| *w == b"{\"partition\":").count() as u64
}

pub async fn run(count: usize, accounts: usize, max_in_flight: usize, batch: Option<usize>, signed: bool) -> anyhow::Result<ExitCode> {
    let seen = Seen::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(format!("fedistream-bench-webhook-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("input.jsonl");
    {
        let mut g = Generator::new(11);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        for _ in 0..count {
            writeln!(f, "{}", g.status(accounts))?;
        }
        f.flush()?;
    }
    let mut cfg = WebhookSinkConfig::new(&format!("http://{addr}/hook"));
    cfg.delivery.max_in_flight = Some(max_in_flight);
    cfg.batch = batch;
    if signed {
        std::env::set_var("FEDISTREAM_BENCH_WEBHOOK_SECRET", "bench-secret");
        cfg.secret_env = Some("FEDISTREAM_BENCH_WEBHOOK_SECRET".into());
    }
    let delivery = cfg.delivery.clone();
    let sink = WebhookSink::new(cfg).map_err(anyhow::Error::msg)?;
    let log = SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?;
    let replay = |path: std::path::PathBuf| {
        Box::new(ReplaySource::new(ReplaySourceConfig { path, rate: None, instance: "bench".into(), include_unlisted: true, owned: true }))
    };
    // Run 1: ingest.
    let file = fedistream_connectors::file::FileSink::new(fedistream_connectors::file::FileSinkConfig {
        path: dir.join("ingested.jsonl"),
        rotate_bytes: 0,
        rotate_age: None,
        fsync: false,
        delivery: Default::default(),
    });
    let defaults = fedistream_core::runtime::DeliveryConfig::default();
    let ingest = Pipeline {
        log: log.clone(),
        processors: vec![],
        sources: vec![SourceSpec::new("bench", replay(input), DeadLetter::new(dir.join("dl-source.jsonl")))],
        channels: vec![ChannelSpec {
            name: "file".into(),
            group: "bench.file".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(file),
            route: None,
            batch: defaults.batch(),
            retry: defaults.retry(),
            dead_letter: DeadLetter::new(dir.join("dl-file.jsonl")),
        }],
        options: RuntimeOptions::default(),
        progress: None,
    };
    fedistream_core::runtime::run(ingest, CancellationToken::new()).await.context("ingesting")?;
    // Run 2: nothing new; the webhook channel delivers the log.
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "")?;
    let p = Pipeline {
        log,
        processors: vec![],
        sources: vec![SourceSpec::new("bench", replay(empty), DeadLetter::new(dir.join("dl-source.jsonl")))],
        channels: vec![ChannelSpec {
            name: "hook".into(),
            group: "bench.hook".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(sink),
            route: None,
            batch: delivery.batch(),
            retry: delivery.retry(),
            dead_letter: DeadLetter::new(dir.join("dl-channel.jsonl")),
        }],
        options: RuntimeOptions { drain_deadline: Duration::from_secs(600), ..RuntimeOptions::default() },
        progress: None,
    };
    let summary = fedistream_core::runtime::run(p, CancellationToken::new()).await.context("running the pipeline")?;
    let delivered = summary.channels.first().and_then(|c| c.counters.get("delivered").copied()).unwrap_or(0);
    let (n, first, last) = *seen.0.lock().unwrap_or_else(|p| p.into_inner());
    let secs = match (first, last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64().max(1e-9),
        _ => anyhow::bail!("the receiver got nothing"),
    };
    println!("fedistream bench webhook");
    println!(
        "  events             {delivered} delivered, {n} received ({accounts} accounts, max_in_flight {max_in_flight}, batch {}, {})",
        batch.map_or("off".to_string(), |b| b.to_string()),
        if signed { "signed" } else { "unsigned" }
    );
    println!("  throughput         {:.0} events/s (receiver's first to last request)", n as f64 / secs);
    let _ = std::fs::remove_dir_all(&dir);
    if !summary.failures.is_empty() || n < delivered {
        anyhow::bail!("failures: {:?}; received {n} of {delivered}", summary.failures);
    }
    Ok(ExitCode::SUCCESS)
}
