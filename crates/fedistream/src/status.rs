//! `fedistream status`: what the log says about sources and channels. Reads the
//! log read-only, so it works beside a running `fedistream run`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use fedistream_core::component::{StatusDoc, STATUS_NS};
use fedistream_core::sqlite::SqliteLog;
use fedistream_core::Log;

fn ago(t: chrono::DateTime<Utc>) -> String {
    let s = (Utc::now() - t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

pub async fn run(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    // Status reads only the log: it needs no tokens.
    let Some(cfg) = crate::cli::load_checked(config, false) else {
        return Ok(ExitCode::from(crate::cli::EXIT_INVALID));
    };
    let log: std::sync::Arc<dyn Log> = match (cfg.log.backend, &cfg.log.kafka) {
        (crate::config::LogBackend::Kafka, Some(k)) => fedistream_kafka::log::KafkaLog::open(k.clone())
            .await
            .with_context(|| format!("opening the Kafka log at {}", k.brokers))?,
        _ => SqliteLog::open_read_only(&cfg.log.path)
            .with_context(|| format!("no log yet at {} (has `fedistream run` started?)", cfg.log.path.display()))?,
    };
    let info = match log.info().await {
        Ok(i) => i,
        // Killed during its very first start, before the schema was written.
        Err(e) if e.to_string().contains("no such table") => {
            anyhow::bail!("no log yet at {} (has `fedistream run` started?)", cfg.log.path.display())
        }
        Err(e) => return Err(e.into()),
    };
    let docs: Vec<(String, StatusDoc)> = log
        .state_scan(STATUS_NS)
        .await?
        .into_iter()
        .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|d| (k, d)))
        .collect();
    let checkpoints = log.state_scan("checkpoint").await?;
    if json {
        let out = serde_json::json!({
            "log": { "backend": info.backend, "location": info.location, "events": info.events,
                     "head": info.head.iter().map(|p| p.offset).max().unwrap_or(0) },
            "components": docs.iter().map(|(k, d)| serde_json::json!({"key": k, "status": d})).collect::<Vec<_>>(),
            "checkpoints": checkpoints.iter().map(|(k, v)| serde_json::json!({"key": k, "min_id": v})).collect::<Vec<_>>(),
            "groups": info.groups.iter().map(|g| serde_json::json!({"group": g.group,
                "offset": g.committed.iter().map(|p| p.offset).max().unwrap_or(0), "lag": g.lag,
                "partitions": g.committed.iter().map(|p| serde_json::json!({"partition": p.partition, "offset": p.offset})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let head = info.head.iter().map(|p| p.offset).max().unwrap_or(0);
    println!("log      {} ({}): {} events stored, head offset {}", info.location, info.backend, info.events, head);
    println!();
    println!("SOURCE               STATE        LAST EVENT   UPDATED      DETAIL");
    for name in cfg.sources.keys() {
        let mine = docs_of(&docs, "source", name);
        if mine.is_empty() {
            println!("{name:<20} not started");
        }
        for (shown, d) in mine {
            println!(
                "{:<20} {:<12} {:<12} {:<12} {}",
                shown,
                d.state,
                d.last_event_at.map(ago).unwrap_or_else(|| "never".into()),
                ago(d.updated_at),
                d.detail.clone().unwrap_or_default()
            );
            print_counters(d);
        }
        for (k, v) in checkpoints.iter().filter(|(k, _)| k.starts_with(&format!("{name}|"))) {
            let rest = k.splitn(3, '|').nth(2).unwrap_or(k);
            println!("{:<20} checkpoint {rest}: min_id {v}", "");
        }
    }
    println!();
    println!("CHANNEL              STATE        OFFSET   LAG      LAST EVENT   DETAIL");
    for name in cfg.channels.keys() {
        let group = crate::pipeline::channel_group(&cfg, name);
        let g = info.groups.iter().find(|g| g.group == group);
        let offset = g.map(|g| g.committed.iter().map(|p| p.offset).max().unwrap_or(0).to_string()).unwrap_or_else(|| "-".into());
        let lag = g.map(|g| g.lag.to_string()).unwrap_or_else(|| "-".into());
        let mine = docs_of(&docs, "channel", name);
        if mine.is_empty() {
            println!("{:<20} {:<12} {:<8} {:<8} {:<12}", name, "not started", offset, lag, "never");
        }
        for (shown, d) in mine {
            let mut detail = d.detail.clone().unwrap_or_default();
            if let Some(r) = d.resumes_at {
                detail = format!("{detail} (resumes {})", r.format("%H:%M:%S UTC"));
            }
            println!(
                "{:<20} {:<12} {:<8} {:<8} {:<12} {}",
                shown,
                d.state,
                offset,
                lag,
                d.last_event_at.map(ago).unwrap_or_else(|| "never".into()),
                detail.trim()
            );
            print_counters(d);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A row's counters on the line below it.
fn print_counters(d: &StatusDoc) {
    if !d.counters.is_empty() {
        let c: Vec<String> = d.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{:<20} {}", "", c.join(" "));
    }
}

/// The status documents of one source or channel: `KIND:NAME` (one process)
/// and `KIND:NAME@WORKER` (one per process on Kafka), shown as `NAME` and
/// `NAME@WORKER`.
fn docs_of<'a>(docs: &'a [(String, StatusDoc)], kind: &str, name: &str) -> Vec<(String, &'a StatusDoc)> {
    let base = format!("{kind}:{name}");
    docs.iter()
        .filter(|(k, _)| *k == base || k.strip_prefix(base.as_str()).is_some_and(|rest| rest.starts_with('@')))
        .map(|(k, d)| (k[kind.len() + 1..].to_string(), d))
        .collect()
}
