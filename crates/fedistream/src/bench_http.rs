//! `fedistream bench http` and `fedistream bench metrics`: what the HTTP server
//! costs.
//!
//! * `http` — the pipeline bench (replay → SQLite log → file channel) run
//!   plain and with the HTTP server on and a client holding the event feed
//!   (`/api/events`) open, alternating in one run on the same input; medians
//!   and their ratio.
//! * `metrics` — `/metrics` rendered over a log whose status documents name N
//!   followed accounts (each one reported unhealthy: the largest documents),
//!   timed through the handler.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fedistream_connectors::file::{FileSink, FileSinkConfig};
use fedistream_connectors::replay::{ReplaySource, ReplaySourceConfig};
use fedistream_core::component::Status;
use fedistream_core::runtime::{ChannelSpec, DeliveryConfig, Pipeline, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::{DeadLetter, Log};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::bench::{median, work_dir, write_input};
use crate::http::{dashboard::data::Data, AppState};

fn state(log: Arc<dyn Log>) -> anyhow::Result<AppState> {
    Ok(AppState {
        dashboard: Some(Arc::new(Data::new(log.clone(), None))),
        throttle: Default::default(),
        log,
        expected: vec!["ingest:log".into(), "source:bench".into(), "channel:file".into()],
        scope: None,
        started_at: chrono::Utc::now(),
        stuck_after: chrono::Duration::seconds(300),
        groups: vec![("file".into(), "bench.file".into())],
        token_sha256: None,
        session_sha256: None,
        secure_cookie: false,
        metrics: Some(crate::http::metrics::install().map_err(anyhow::Error::msg)?),
    })
}

/// One pipeline run on a fresh log; with `served`, the server and a feed client too.
/// Statuses per second, the process's CPU time per status (µs) and the events
/// the feed client received.
async fn one(dir: &std::path::Path, input: &std::path::Path, count: usize, served: bool) -> anyhow::Result<(f64, f64, u64)> {
    let _ = std::fs::remove_file(dir.join("log.db"));
    let _ = std::fs::remove_file(dir.join("log.db-wal"));
    let _ = std::fs::remove_file(dir.join("out.jsonl"));
    let log: Arc<dyn Log> = SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?;
    let stop = CancellationToken::new();
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    if served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tasks.push(crate::http::spawn(listener, state(log.clone())?, stop.clone()));
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        // The response head: the reader is placed before the pipeline starts.
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).await?;
        anyhow::ensure!(buf[..n].starts_with(b"HTTP/1.1 200"), "the event feed answered {}", String::from_utf8_lossy(&buf[..n]));
        let (got, stop) = (received.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // Frames are counted by their `\nid: `; one split across reads is
            // found in the seam: the stream's 4 bytes before this read and this
            // read's first 4 (a match there starts before this read, so it is
            // not counted again within it).
            let mut last: Vec<u8> = Vec::with_capacity(8);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut seam = last.clone();
                            seam.extend_from_slice(&buf[..n.min(4)]);
                            let split = memchr::memmem::find_iter(&seam, b"\nid: ").count();
                            let whole = memchr::memmem::find_iter(&buf[..n], b"\nid: ").count();
                            got.fetch_add((split + whole) as u64, Ordering::Relaxed);
                            last.extend_from_slice(&buf[n.saturating_sub(4)..n]);
                            last.drain(..last.len().saturating_sub(4));
                        }
                    },
                }
            }
        }));
    }
    let delivery = DeliveryConfig { max_batch: 1000, ..DeliveryConfig::default() };
    let p = Pipeline {
        log: log.clone(),
        processors: vec![],
        sources: vec![SourceSpec::new(
            "bench",
            Box::new(ReplaySource::new(ReplaySourceConfig {
                path: input.to_path_buf(),
                rate: None,
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
            sink: Box::new(FileSink::new(FileSinkConfig {
                path: dir.join("out.jsonl"),
                rotate_bytes: 0,
                rotate_age: None,
                fsync: false,
                delivery: DeliveryConfig::default(),
            })),
            route: None,
            batch: delivery.batch(),
            retry: delivery.retry(),
            dead_letter: DeadLetter::new(dir.join("dead-letter-channel.jsonl")),
        }],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let (started, cpu) = (Instant::now(), crate::bench::cpu_times().0);
    let summary = fedistream_core::runtime::run(p, CancellationToken::new()).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (crate::bench::cpu_times().0 - cpu).as_secs_f64();
    anyhow::ensure!(summary.failures.is_empty(), "failures: {:?}", summary.failures);
    if served {
        // Let the client read what the feed still had queued, then stop.
        let appended = log.info().await?.head.iter().map(|p| p.offset).max().unwrap_or(0);
        let until = Instant::now() + Duration::from_secs(30);
        while received.load(Ordering::Relaxed) < appended && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = received.load(Ordering::Relaxed);
        anyhow::ensure!(got == appended, "the feed client received {got} events of the {appended} appended");
    }
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    Ok((count as f64 / elapsed, cpu * 1e6 / count as f64, received.load(Ordering::Relaxed)))
}

pub async fn http(count: usize, accounts: usize, rounds: usize) -> anyhow::Result<ExitCode> {
    let (dir, _tmp) = work_dir(None)?;
    let input = dir.join("input.jsonl");
    write_input(&input, count, accounts)?;
    let (mut plain, mut served, mut cpu_plain, mut cpu_served) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    println!("fedistream bench http ({count} statuses, {rounds} rounds, alternating)");
    for round in 1..=rounds {
        let (a, ca, _) = one(&dir, &input, count, false).await?;
        let (b, cb, got) = one(&dir, &input, count, true).await?;
        println!(
            "  round {round}: plain {a:.0}/s ({ca:.1} µs CPU/status), server + feed client {b:.0}/s ({cb:.1} µs CPU/status; the client received {got} events)"
        );
        plain.push(a);
        served.push(b);
        cpu_plain.push(ca);
        cpu_served.push(cb);
    }
    let (a, b) = (median(&plain), median(&served));
    let (ca, cb) = (median(&cpu_plain), median(&cpu_served));
    println!("  median: plain {a:.0} statuses/s, with the server and a feed client {b:.0} statuses/s: {:.1} %", b / a * 100.0);
    println!(
        "  CPU per status (the whole process, the feed client's reads included): plain {ca:.1} µs, served {cb:.1} µs: the feed adds {:.1} %",
        (cb / ca - 1.0) * 100.0
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn metrics(accounts: usize, iterations: usize) -> anyhow::Result<ExitCode> {
    let (dir, _tmp) = work_dir(None)?;
    let log: Arc<dyn Log> = SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?;
    // The recorder first: what the connectors record goes nowhere without it.
    let st = state(log.clone())?;
    let source = Status::new("source", "bench");
    source.set_state("polling", None);
    for i in 0..accounts {
        source.set_part(&format!("user{i}@fake.example"), Some("HTTP 503 from the server; retrying".into()));
        source.count("appended", 1);
    }
    let ingest = Status::new("ingest", "log");
    ingest.set_state("running", None);
    let channel = Status::new("channel", "file");
    channel.set_state("running", None);
    log.state_put(vec![source.to_put(), ingest.to_put(), channel.to_put()]).await?;
    for i in 0..16 {
        metrics::gauge!("fedistream_ratelimit_remaining", "component" => "source", "instance" => format!("host{i}.example"), "token" => "yes").set(300.0);
    }
    let mut times = Vec::with_capacity(iterations);
    let mut bytes = 0;
    for _ in 0..iterations {
        let t = Instant::now();
        let resp = crate::http::metrics::handler(axum::extract::State(st.clone())).await;
        let body = axum::body::to_bytes(resp.into_body(), 1 << 26).await.context("the /metrics body")?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    println!("fedistream bench metrics ({accounts} followed accounts in the status documents, {iterations} renders, {bytes} bytes each)");
    println!("  render /metrics  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms", pct(0.5), pct(0.99), pct(1.0));
    Ok(ExitCode::SUCCESS)
}
