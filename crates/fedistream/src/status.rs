//! `fedistream status`: what the log says about sources and channels. Reads the
//! log read-only, so it works beside a running `fedistream run`.
//!
//! Liveness: a process that died without saying so (kill -9) leaves its last
//! documents behind. On SQLite the log's lock file tells whether a `run` holds
//! the log; on Kafka a worker's documents not rewritten for [`STALE_AFTER`]
//! (they are rewritten every 2 s) mean that worker is gone. Such rows show
//! `not running (last seen …)`.

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

/// A process rewrites its status documents every 2 s; one not rewritten for
/// this long belongs to a process that is gone.
pub(crate) const STALE_AFTER: chrono::Duration = chrono::Duration::seconds(10);

/// States a component ends in: nothing to check.
pub(crate) const FINAL_STATES: [&str; 3] = ["stopped", "finished", "failed"];

/// Whether a `run` process holds the SQLite log's lock file (`None`: cannot
/// tell). Takes a shared lock for an instant when nobody holds it.
fn sqlite_writer_alive(log_path: &Path) -> Option<bool> {
    let lock_path = std::path::PathBuf::from(format!("{}.lock", log_path.display()));
    let file = match std::fs::File::open(&lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    match file.try_lock_shared() {
        Ok(()) => Some(false),
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// Is the process that writes `d` still there? `writer_alive`: what the
/// lock file says (SQLite); else the document's age decides (Kafka workers).
fn alive(d: &StatusDoc, writer_alive: Option<bool>) -> bool {
    if FINAL_STATES.contains(&d.state.as_str()) {
        return true; // shown as it is
    }
    match writer_alive {
        Some(alive) => alive,
        None => Utc::now() - d.updated_at <= STALE_AFTER,
    }
}

/// The state column: the state, or `not running (last seen …)` for a process
/// that died without saying so (kill -9, power loss).
fn shown_state(d: &StatusDoc, writer_alive: Option<bool>) -> (String, String) {
    let detail = d.detail.clone().unwrap_or_default();
    if alive(d, writer_alive) {
        return (d.state.clone(), detail);
    }
    let was = if detail.is_empty() { format!("was {}", d.state) } else { format!("was {}: {detail}", d.state) };
    (format!("not running (last seen {})", ago(d.updated_at)), was)
}

pub async fn run(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    // Status reads only the log: it needs no tokens.
    let Some(cfg) = crate::cli::load_checked(config, false) else {
        return Ok(ExitCode::from(crate::cli::EXIT_INVALID));
    };
    let log: std::sync::Arc<dyn Log> = match (cfg.log.backend, &cfg.log.kafka) {
        #[cfg(feature = "kafka")]
        (crate::config::LogBackend::Kafka, Some(k)) => {
            let log = fedistream_kafka::log::KafkaLog::open(k.clone())
                .await
                .with_context(|| format!("opening the Kafka log at {}", k.brokers))?;
            // The checkpoints of every account: the state of every ingest slot.
            log.own_all_slots().await.context("reading the state of the ingest slots")?;
            log
        }
        #[cfg(not(feature = "kafka"))]
        (crate::config::LogBackend::Kafka, Some(_)) => anyhow::bail!("log.backend: {}", crate::features::Feature::Kafka.missing()),
        _ => SqliteLog::open_read_only(&cfg.log.path)
            .with_context(|| format!("no log yet at {} (has `fedistream run` started?)", cfg.log.path.display()))?,
    };
    let Snapshot { info, docs, checkpoints } = match snapshot(&*log).await {
        Ok(s) => s,
        // Killed during its very first start, before the schema was written.
        Err(e) if e.to_string().contains("no such table") => {
            anyhow::bail!("no log yet at {} (has `fedistream run` started?)", cfg.log.path.display())
        }
        Err(e) => return Err(e),
    };
    let writer_alive = match cfg.log.backend {
        crate::config::LogBackend::Sqlite => sqlite_writer_alive(&cfg.log.path),
        crate::config::LogBackend::Kafka => None,
    };
    if json {
        let out = to_json(&Snapshot { info, docs, checkpoints }, writer_alive);
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
            let (state, detail) = shown_state(d, writer_alive);
            println!(
                "{:<20} {:<12} {:<12} {:<12} {}",
                shown,
                state,
                d.last_event_at.map(ago).unwrap_or_else(|| "never".into()),
                ago(d.updated_at),
                detail
            );
            for (part, problem) in &d.parts {
                println!("{:<20} {part}: {problem}", "");
            }
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
            let (state, mut detail) = shown_state(d, writer_alive);
            if let (Some(r), true) = (d.resumes_at, alive(d, writer_alive)) {
                detail = format!("{detail} (resumes {})", r.format("%H:%M:%S UTC"));
            }
            println!(
                "{:<20} {:<12} {:<8} {:<8} {:<12} {}",
                shown,
                state,
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

/// What the log says: its figures, every component's status document, the
/// sources' checkpoints.
pub struct Snapshot {
    pub info: fedistream_core::log::LogInfo,
    pub docs: Vec<(String, StatusDoc)>,
    pub checkpoints: Vec<(String, String)>,
}

pub async fn snapshot(log: &dyn Log) -> anyhow::Result<Snapshot> {
    let info = log.info().await?;
    let docs = log.state_scan(STATUS_NS).await?.into_iter().filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|d| (k, d))).collect();
    let checkpoints = log.state_scan("checkpoint").await?;
    Ok(Snapshot { info, docs, checkpoints })
}

/// `fedistream status --json` (and the HTTP server's `/api/status`).
/// `writer_alive`: whether the process writing the documents runs (`None`:
/// their age decides, see [`alive`]).
pub fn to_json(s: &Snapshot, writer_alive: Option<bool>) -> serde_json::Value {
    let (info, docs, checkpoints) = (&s.info, &s.docs, &s.checkpoints);
    serde_json::json!({
        "log": { "backend": info.backend, "location": info.location, "events": info.events,
                 "head": info.head.iter().map(|p| p.offset).max().unwrap_or(0) },
        "components": docs.iter().map(|(k, d)| serde_json::json!({"key": k, "running": alive(d, writer_alive) && !FINAL_STATES.contains(&d.state.as_str()), "status": d})).collect::<Vec<_>>(),
        "checkpoints": checkpoints.iter().map(|(k, v)| serde_json::json!({"key": k, "min_id": v})).collect::<Vec<_>>(),
        "groups": info.groups.iter().map(|g| serde_json::json!({"group": g.group,
            "offset": g.committed.iter().map(|p| p.offset).max().unwrap_or(0), "lag": g.lag,
            "partitions": g.committed.iter().map(|p| serde_json::json!({"partition": p.partition, "offset": p.offset})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
    })
}

/// A row's counters on the line below it, with when they started counting
/// (each start of the process counts anew).
fn print_counters(d: &StatusDoc) {
    if !d.counters.is_empty() {
        let c: Vec<String> = d.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let since = d.started_at.map(|t| format!("since {}: ", since(t))).unwrap_or_default();
        println!("{:<20} {since}{}", "", c.join(" "));
    }
}

/// `HH:MM UTC` today, else the date too.
fn since(t: chrono::DateTime<Utc>) -> String {
    if t.date_naive() == Utc::now().date_naive() {
        t.format("%H:%M UTC").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M UTC").to_string()
    }
}

/// The status documents of one source or channel: `KIND:NAME` (one process)
/// and `KIND:NAME@WORKER` (one per process on Kafka), shown as `NAME` and
/// `NAME@WORKER`.
pub(crate) fn docs_of<'a>(docs: &'a [(String, StatusDoc)], kind: &str, name: &str) -> Vec<(String, &'a StatusDoc)> {
    let base = format!("{kind}:{name}");
    docs.iter()
        .filter(|(k, _)| *k == base || k.strip_prefix(base.as_str()).is_some_and(|rest| rest.starts_with('@')))
        .map(|(k, d)| (k[kind.len() + 1..].to_string(), d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(state: &str, age_s: i64) -> StatusDoc {
        StatusDoc { state: state.into(), updated_at: Utc::now() - chrono::Duration::seconds(age_s), ..Default::default() }
    }

    #[test]
    fn rows_of_a_dead_process_say_not_running() {
        // SQLite: the lock file decides.
        assert_eq!(shown_state(&doc("streaming", 1), Some(true)).0, "streaming");
        let (state, detail) = shown_state(&doc("streaming", 22), Some(false));
        assert_eq!((state.as_str(), detail.as_str()), ("not running (last seen 22s ago)", "was streaming"));
        // A component that ended says so itself.
        assert_eq!(shown_state(&doc("stopped", 600), Some(false)).0, "stopped");
        // Kafka: a worker's documents stale for a few intervals.
        assert_eq!(shown_state(&doc("running", 3), None).0, "running");
        assert!(shown_state(&doc("running", 60), None).0.starts_with("not running (last seen 60s ago)"));
    }

    #[test]
    fn no_lock_file_means_no_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("log.db");
        assert_eq!(sqlite_writer_alive(&db), Some(false));
        let lock = std::fs::File::create(format!("{}.lock", db.display())).unwrap();
        assert_eq!(sqlite_writer_alive(&db), Some(false), "a file nobody holds");
        lock.lock().unwrap();
        assert_eq!(sqlite_writer_alive(&db), Some(true), "held by a writer");
    }
}
