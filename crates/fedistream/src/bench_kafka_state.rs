//! `fedistream bench kafka-state`: the memory of the Kafka log's state view as
//! the log grows, and split among the processes that share the ingest slots.
//!
//! Appends `count` synthetic statuses of `accounts` accounts as the ingestor
//! does — batches of `batch` events, each with one dedup-index entry per event
//! and the checkpoints of the accounts it covers, owned by the account's unit
//! (`bench/<account>`), from a process holding every ingest slot — and, with a
//! `horizon`, prunes the state written before `now - horizon` as the runtime's
//! retention does (here every quarter of the horizon rather than hourly, so
//! that a run of minutes reaches a steady state). Every `report_every` events
//! it prints the keys the view holds and the process's RSS: flat once the
//! horizon is reached with pruning, growing with the log without.
//!
//! With `owners` (say `1,3`), it then starts, for each N, N processes of this
//! binary that split the slots round robin (as the ingest group would); each
//! opens the log, loads the state of its slots and reports the keys it holds
//! and its RSS before and after: each of N holds about 1/N of the owned state.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use fedistream_connectors::mastodon::source::account_unit;
use fedistream_connectors::synthetic::Generator;
use fedistream_core::log::{AppendBatch, StatePut};
use fedistream_core::post::Via;
use fedistream_core::{Event, Log};
use fedistream_kafka::log::{KafkaLog, KafkaLogConfig};
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};

use crate::bench::{peak_rss_kib, rss_kib};

pub async fn run(
    brokers: String,
    count: usize,
    accounts: usize,
    batch: usize,
    horizon: Option<Duration>,
    owners: Vec<usize>,
) -> anyhow::Result<ExitCode> {
    let tag = format!("{:x}", rand::random::<u32>());
    let mut cfg = KafkaLogConfig::new(&brokers, format!("bench-state-{tag}"));
    cfg.partitions = 6;
    let log = KafkaLog::open(cfg.clone()).await?;
    // One process holding every slot: the whole pipeline's state.
    log.own_all_slots().await?;
    let report_every = (count / 20).max(batch);
    let prune_every = horizon.map(|h| (h / 4).max(Duration::from_secs(1)));
    let mut g = Generator::new(11);
    let ctx = NormalizeContext { instance: "bench.example", via: Via::Replay, received_at: Utc::now() };
    let started = Instant::now();
    let mut last_prune = Instant::now();
    let (mut appended, mut next_report, mut pruned) = (0usize, report_every, 0u64);
    let mut pending = std::collections::VecDeque::new();
    let in_flight = fedistream_core::runtime::RuntimeOptions::default().appends_in_flight.max(1);
    let unit = |acct: &str| -> Option<std::sync::Arc<str>> { Some(account_unit("bench", acct).into()) };
    println!("fedistream bench kafka-state: {count} statuses of {accounts} accounts, horizon {horizon:?}");
    println!("  {:>9}  {:>10}  {:>9}  {:>8}", "events", "state keys", "RSS MiB", "seconds");
    while appended < count {
        let n = batch.min(count - appended);
        let events: Vec<Event> =
            (0..n).filter_map(|_| parse_and_normalize(&g.status(accounts), &ctx).ok()).map(|p| Event::created("bench", p)).collect();
        let mut state: Vec<StatePut> = events
            .iter()
            .map(|e| StatePut::set(fedistream_core::runtime::SEEN_NS, e.key.clone(), e.fingerprint()).owned_by(unit(&e.account)))
            .collect();
        let newest: std::collections::HashMap<&str, &str> = events.iter().map(|e| (e.account.as_str(), e.status_id.as_str())).collect();
        state.extend(newest.into_iter().map(|(acct, id)| StatePut::set("checkpoint", format!("bench|{acct}"), id).owned_by(unit(acct))));
        if pending.len() >= in_flight {
            let done: fedistream_core::log::AppendFuture = pending.pop_front().expect("non-empty");
            done.await?;
        }
        pending.push_back(log.start_append(AppendBatch { events: fedistream_core::event::encode_all(events), state }).await?);
        appended += n;
        if let (Some(h), Some(every)) = (horizon, prune_every) {
            if last_prune.elapsed() >= every {
                last_prune = Instant::now();
                pruned += log.prune_state(Utc::now() - chrono::Duration::from_std(h)?).await?;
            }
        }
        if appended >= next_report || appended == count {
            next_report += report_every;
            let rss = rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0;
            println!("  {appended:>9}  {:>10}  {rss:>9.1}  {:>8.1}", log.state_entries(), started.elapsed().as_secs_f64());
        }
    }
    for done in pending {
        done.await?;
    }
    println!("  pruned {pruned} entries; peak RSS {:.1} MiB (VmHWM)", peak_rss_kib(None).unwrap_or(0) as f64 / 1024.0);
    let total_keys = log.state_entries();
    drop(log);
    let result = split(&cfg, total_keys, &owners).await;
    crate::bench_kafka::drop_topics(&cfg, &[cfg.pipeline.clone()]).await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// For each N of `owners`, N processes sharing the slots: what each holds.
async fn split(cfg: &KafkaLogConfig, total_keys: usize, owners: &[usize]) -> anyhow::Result<()> {
    if owners.is_empty() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("the bench's own binary")?;
    println!("  {} state keys in all; processes sharing the {} ingest slots (round robin):", total_keys, cfg.ingest_slots);
    println!(
        "  {:>9}  {:>7}  {:>14}  {:>10}  {:>9}  {:>12}  {:>8}",
        "processes", "process", "slots", "state keys", "RSS MiB", "RSS no slots", "load s"
    );
    for &n in owners.iter().filter(|n| **n > 0) {
        // All N at once, as the members of one ingest group.
        let mut children = Vec::new();
        for i in 0..n {
            let slots: Vec<String> = (0..cfg.ingest_slots).filter(|s| *s as usize % n == i).map(|s| s.to_string()).collect();
            let child = tokio::process::Command::new(&exe)
                .args(["--log-level", "warn", "bench", "kafka-state", "--brokers", &cfg.brokers, "--hold-pipeline", &cfg.pipeline])
                .arg("--hold-slots")
                .arg(slots.join(","))
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting a holder process")?;
            children.push(child);
        }
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().await?;
            let line = String::from_utf8_lossy(&out.stdout);
            anyhow::ensure!(out.status.success(), "holder process {i} of {n} failed: {line}");
            let f: Vec<&str> = line.split_whitespace().collect();
            anyhow::ensure!(f.len() == 5, "holder process {i} of {n} said: {line}");
            println!("  {n:>9}  {i:>7}  {:>14}  {:>10}  {:>9}  {:>12}  {:>8}", f[0], f[1], f[2], f[3], f[4]);
        }
    }
    Ok(())
}

/// One of the processes of [`split`]: open the log, measure, hold `slots`,
/// load their state, measure; prints `slots keys rss_mib rss_before_mib seconds`.
pub async fn hold(brokers: String, pipeline: String, slots: Vec<i32>) -> anyhow::Result<ExitCode> {
    let mut cfg = KafkaLogConfig::new(&brokers, pipeline);
    cfg.partitions = 6;
    let log = KafkaLog::open(cfg).await?;
    let mib = || rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0;
    let before = mib();
    let t0 = Instant::now();
    let held: BTreeSet<i32> = slots.iter().copied().collect();
    log.own_slots(&held)?;
    log.catch_up().await?;
    let took = t0.elapsed().as_secs_f64();
    let list = slots.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    println!("{list} {} {:.1} {before:.1} {took:.1}", log.state_entries(), mib());
    Ok(ExitCode::SUCCESS)
}
