//! Retention and bounded state.
//!
//! Records go once they are older than `max_age` (or the file is over
//! `max_bytes`) **and every known consumer group of their topic has committed
//! them** — known meaning recorded in `groups`, whether or not it runs in this
//! process: a channel missing from the config for one run still finds its
//! events when it comes back. Only `fedistream channel forget` (which calls
//! [`crate::log::Log::forget_group`]) releases what a group holds.
//!
//! State: dedup-index entries (and entries of the namespaces the binary marks
//! prunable, such as the Mastodon id index) not written within the horizon are
//! deleted, so the state a long-running pipeline keeps is bounded by its recent
//! activity, not by its history.

use std::collections::HashSet;

use chrono::Utc;
use rusqlite::{params, OptionalExtension};

use super::{seen, Shared, SqliteOptions, Writer};
use crate::error::LogError;
use crate::log::EVENTS;

/// The highest offset of `topic` every known group has committed; `None` when no
/// group reads it (nothing is then known to be delivered, so nothing goes).
fn floor(conn: &rusqlite::Connection, topic: &str) -> Result<Option<i64>, LogError> {
    Ok(conn
        .query_row("SELECT MIN(committed) FROM groups WHERE topic = ?1", params![topic], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

pub(super) async fn enforce(shared: &Shared, opts: &SqliteOptions) -> Result<u64, LogError> {
    if opts.max_age.is_none() && opts.max_bytes.is_none() {
        return Ok(0);
    }
    let opts = opts.clone();
    shared
        .with_writer(move |w| {
            let conn = &w.conn;
            let mut deleted = 0u64;
            let events_floor = floor(conn, EVENTS)?;
            if let Some(age) = opts.max_age {
                let cutoff = Utc::now().timestamp_micros() - age.as_micros() as i64;
                if let Some(f) = events_floor {
                    deleted += conn.execute("DELETE FROM events WHERE appended_at <= ?1 AND offset <= ?2", params![cutoff, f])? as u64;
                }
                let topics: Vec<String> =
                    conn.prepare("SELECT name FROM topics")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                for t in topics {
                    if let Some(f) = floor(conn, &t)? {
                        deleted += conn.execute(
                            "DELETE FROM topic_records WHERE topic = ?1 AND appended_at <= ?2 AND offset <= ?3",
                            params![t, cutoff, f],
                        )? as u64;
                    }
                }
            }
            if let (Some(max), Some(f)) = (opts.max_bytes, events_floor) {
                let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                let used = ((pages - free) * page_size) as u64;
                if used > max {
                    let count: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
                    let excess = ((used - max) as f64 / used as f64 * count as f64).ceil() as i64 + 1;
                    deleted += conn.execute(
                        "DELETE FROM events WHERE offset IN
                           (SELECT offset FROM events WHERE offset <= ?1 ORDER BY offset LIMIT ?2)",
                        params![f, excess],
                    )? as u64;
                }
            }
            if deleted > 0 {
                tracing::info!(deleted, "Log retention removed old records");
            }
            Ok(deleted)
        })
        .await
}

pub(super) fn prune_state(w: &mut Writer, cutoff: chrono::DateTime<Utc>, prunable: &HashSet<String>) -> Result<u64, LogError> {
    let mut removed = seen::prune(&mut w.conn, &mut w.seen, cutoff)?;
    if !prunable.is_empty() {
        let tx = w.conn.transaction()?;
        {
            let mut del = tx.prepare("DELETE FROM state WHERE ns = ?1 AND at < ?2")?;
            for ns in prunable {
                removed += del.execute(params![ns, cutoff.timestamp()])? as u64;
            }
        }
        tx.commit()?;
    }
    if removed > 0 {
        tracing::info!(removed, horizon_start = %cutoff, "Pruned state entries not written since the horizon");
    }
    Ok(removed)
}
