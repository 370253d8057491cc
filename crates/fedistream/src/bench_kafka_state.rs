//! `fedistream bench kafka-state`: the memory of the Kafka log's state view as
//! the log grows.
//!
//! Appends `count` synthetic statuses of `accounts` accounts as the ingestor
//! does — batches of `batch` events, each with one dedup-index entry per event
//! and the checkpoints of the accounts it covers — and, with a `horizon`,
//! prunes the state written before `now - horizon` as the runtime's retention
//! does (here every quarter of the horizon rather than hourly, so that a run
//! of minutes reaches a steady state). Every `report_every` events it prints
//! the keys the view holds and the process's RSS: flat once the horizon is
//! reached with pruning, growing with the log without.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;
use fedistream_connectors::synthetic::Generator;
use fedistream_core::log::{AppendBatch, StatePut};
use fedistream_core::post::Via;
use fedistream_core::{Event, Log};
use fedistream_kafka::log::{KafkaLog, KafkaLogConfig};
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};

use crate::bench::{peak_rss_kib, rss_kib};

pub async fn run(brokers: String, count: usize, accounts: usize, batch: usize, horizon: Option<Duration>) -> anyhow::Result<ExitCode> {
    let tag = format!("{:x}", rand::random::<u32>());
    let mut cfg = KafkaLogConfig::new(&brokers, format!("bench-state-{tag}"));
    cfg.partitions = 6;
    let log = KafkaLog::open(cfg.clone()).await?;
    let report_every = (count / 20).max(batch);
    let prune_every = horizon.map(|h| (h / 4).max(Duration::from_secs(1)));
    let mut g = Generator::new(11);
    let ctx = NormalizeContext { instance: "bench.example", via: Via::Replay, received_at: Utc::now() };
    let started = Instant::now();
    let mut last_prune = Instant::now();
    let (mut appended, mut next_report, mut pruned) = (0usize, report_every, 0u64);
    let mut pending = std::collections::VecDeque::new();
    let in_flight = fedistream_core::runtime::RuntimeOptions::default().appends_in_flight.max(1);
    println!("fedistream bench kafka-state: {count} statuses of {accounts} accounts, horizon {horizon:?}");
    println!("  {:>9}  {:>10}  {:>9}  {:>8}", "events", "state keys", "RSS MiB", "seconds");
    while appended < count {
        let n = batch.min(count - appended);
        let events: Vec<Event> =
            (0..n).filter_map(|_| parse_and_normalize(&g.status(accounts), &ctx).ok()).map(|p| Event::created("bench", p)).collect();
        let mut state: Vec<StatePut> =
            events.iter().map(|e| StatePut::set(fedistream_core::runtime::SEEN_NS, e.key.clone(), e.fingerprint())).collect();
        let newest: std::collections::HashMap<&str, &str> = events.iter().map(|e| (e.account.as_str(), e.status_id.as_str())).collect();
        state.extend(newest.into_iter().map(|(acct, id)| StatePut::set("checkpoint", format!("bench|{acct}"), id)));
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
    drop(log);
    crate::bench_kafka::drop_topics(&cfg, &[cfg.pipeline.clone()]).await;
    Ok(ExitCode::SUCCESS)
}
