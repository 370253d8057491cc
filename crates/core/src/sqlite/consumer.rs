//! Consumers of the SQLite log: one per group, reading one topic. Consumers of
//! `events` read the tail cache when they are at the head; every consumer falls
//! back to its own read connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::watch;

use super::{blocking_err, lock, Shared};
use crate::error::LogError;
use crate::event::{LogRecord, Position};
use crate::log::{Commit, Consumer, EVENTS};

pub(super) struct SqliteConsumer {
    shared: Arc<Shared>,
    group: String,
    /// `None` for `events` (its own table and the tail cache).
    topic: Option<String>,
    /// Offset of the last record handed out by `poll` (the tail cache reads it too).
    cursor: Arc<AtomicU64>,
    reader: Arc<Mutex<Connection>>,
    head: watch::Receiver<u64>,
}

fn read_rows(mut rows: rusqlite::Rows<'_>, max: usize) -> Result<Vec<LogRecord>, LogError> {
    let mut out = Vec::with_capacity(max.min(1024));
    while let Some(row) = rows.next()? {
        let offset = row.get::<_, i64>(0)? as u64;
        let appended_at: i64 = row.get(1)?;
        let corrupt = |reason: String| LogError::Corrupt { offset, reason };
        let bytes = row.get_ref(2)?.as_bytes().map_err(|e| corrupt(e.to_string()))?;
        // SIMD validation: std's took 4 % of a core in the pipeline benchmark.
        let payload = simdutf8::basic::from_utf8(bytes)
            .map_err(|_| corrupt(std::str::from_utf8(bytes).err().map(|e| e.to_string()).unwrap_or_default()))?;
        out.push(LogRecord::new(
            Position { partition: 0, offset },
            Utc.timestamp_micros(appended_at).single().unwrap_or_else(Utc::now),
            payload.into(),
        ));
    }
    Ok(out)
}

fn read_after(conn: &Connection, topic: Option<&str>, after: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
    match topic {
        None => {
            let mut stmt =
                conn.prepare_cached("SELECT offset, appended_at, payload FROM events WHERE offset > ?1 ORDER BY offset LIMIT ?2")?;
            let recs = read_rows(stmt.query(params![after as i64, max as i64])?, max);
            recs
        }
        Some(t) => {
            let mut stmt = conn.prepare_cached(
                "SELECT offset, appended_at, payload FROM topic_records WHERE topic = ?1 AND offset > ?2
                 ORDER BY offset LIMIT ?3",
            )?;
            let recs = read_rows(stmt.query(params![t, after as i64, max as i64])?, max);
            recs
        }
    }
}

impl SqliteConsumer {
    pub(super) fn events(shared: Arc<Shared>, group: &str, committed: u64, reader: Connection) -> Self {
        let cursor = Arc::new(AtomicU64::new(committed));
        lock(&shared.tail).cursors.push(Arc::downgrade(&cursor));
        let head = shared.head.subscribe();
        SqliteConsumer { shared, group: group.to_string(), topic: None, cursor, reader: Arc::new(Mutex::new(reader)), head }
    }

    /// A reader of `events` outside any group (group name empty): the tail
    /// cache keeps records for it only within its readers' bound, so a slow
    /// reader holds little memory (it reads SQLite once they are trimmed).
    pub(super) fn events_reader(shared: Arc<Shared>, after: u64, reader: Connection) -> Self {
        let cursor = Arc::new(AtomicU64::new(after));
        lock(&shared.tail).reader_cursors.push(Arc::downgrade(&cursor));
        let head = shared.head.subscribe();
        SqliteConsumer { shared, group: String::new(), topic: None, cursor, reader: Arc::new(Mutex::new(reader)), head }
    }

    pub(super) fn topic(
        shared: Arc<Shared>,
        topic: &str,
        group: &str,
        committed: u64,
        reader: Connection,
        head: watch::Receiver<u64>,
    ) -> Self {
        SqliteConsumer {
            shared,
            group: group.to_string(),
            topic: Some(topic.to_string()),
            cursor: Arc::new(AtomicU64::new(committed)),
            reader: Arc::new(Mutex::new(reader)),
            head,
        }
    }

    fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// Read up to `max` records after the cursor (from the tail cache when it has
    /// them, else from SQLite) and move the cursor past them.
    async fn read_next(&mut self, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let after = self.cursor();
        let cached = if self.topic.is_none() { lock(&self.shared.tail).read_after(after, max) } else { None };
        let recs = match cached {
            Some(recs) => recs,
            None => {
                let (reader, topic) = (self.reader.clone(), self.topic.clone());
                tokio::task::spawn_blocking(move || read_after(&lock(&reader), topic.as_deref(), after, max))
                    .await
                    .map_err(blocking_err)??
            }
        };
        if let Some(last) = recs.last() {
            self.cursor.store(last.position.offset, Ordering::Release);
            if self.topic.is_none() {
                lock(&self.shared.tail).trim();
            }
        }
        Ok(recs)
    }
}

#[async_trait]
impl Consumer for SqliteConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let recs = self.read_next(max).await?;
            if !recs.is_empty() {
                return Ok(recs);
            }
            let cursor = self.cursor();
            let head = &mut self.head;
            let woke = tokio::time::timeout_at(deadline, async move { head.wait_for(|h| *h > cursor).await.is_ok() }).await;
            if woke != Ok(true) {
                // Timed out, or the log was dropped: one more read (another process
                // may have appended), then report what there is.
                return self.read_next(max).await;
            }
        }
    }

    fn reader_start(&self) -> Vec<Position> {
        // A reader has no group; before its first poll its cursor is where it starts.
        if self.group.is_empty() {
            vec![Position { partition: 0, offset: self.cursor() }]
        } else {
            Vec::new()
        }
    }

    async fn commit_with(&mut self, commit: Commit) -> Result<(), LogError> {
        if self.group.is_empty() {
            return Err(LogError::Unsupported("a reader outside consumer groups does not commit".into()));
        }
        let Commit { upto, state, outputs } = commit;
        if let Some(o) = outputs.iter().find(|o| o.topic == EVENTS || !crate::log::valid_topic_name(&o.topic)) {
            return Err(LogError::Unsupported(format!(
                "cannot write to the topic `{}` (post events are appended by sources only)",
                o.topic
            )));
        }
        let offset = upto.iter().filter(|p| p.partition == 0).map(|p| p.offset).max();
        if offset.is_none() && state.is_empty() && outputs.is_empty() {
            return Ok(());
        }
        let group = self.group.clone();
        let heads = self
            .shared
            .with_writer(move |w| {
                w.transact(&state, |tx| {
                    if let Some(offset) = offset {
                        tx.prepare_cached("UPDATE groups SET committed = MAX(committed, ?2), updated_at = ?3 WHERE name = ?1")?
                            .execute(params![group, offset as i64, Utc::now().timestamp_millis()])?;
                    }
                    write_outputs(tx, outputs)
                })
            })
            .await?;
        for (topic, last) in heads {
            self.shared.advance_topic(&topic, last);
        }
        Ok(())
    }

    async fn lag(&mut self) -> Result<u64, LogError> {
        if self.group.is_empty() {
            // A reader: the head minus what it has returned.
            return match self.topic {
                None => Ok(self.head.borrow().saturating_sub(self.cursor.load(Ordering::Acquire))),
                Some(_) => Err(LogError::Unsupported("a reader of a topic other than events has no lag".into())),
            };
        }
        let (group, topic) = (self.group.clone(), self.topic.clone());
        self.shared
            .with_writer(move |w| {
                let conn = &w.conn;
                let committed: i64 = conn.query_row("SELECT committed FROM groups WHERE name = ?1", params![group], |r| r.get(0))?;
                let head: i64 = match topic {
                    None => conn.query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get(0))?,
                    Some(t) => {
                        conn.query_row("SELECT last_offset FROM topics WHERE name = ?1", params![t], |r| r.get(0)).optional()?.unwrap_or(0)
                    }
                };
                Ok::<_, LogError>((head - committed).max(0) as u64)
            })
            .await
    }
}

/// Append `outputs` to their topics inside `tx`; returns each topic's new last offset.
fn write_outputs(tx: &rusqlite::Transaction<'_>, outputs: Vec<crate::log::OutputRecord>) -> Result<Vec<(String, u64)>, LogError> {
    if outputs.is_empty() {
        return Ok(vec![]);
    }
    let now = Utc::now().timestamp_micros();
    let mut last: Vec<(String, u64)> = Vec::new();
    let mut ins = tx.prepare_cached("INSERT INTO topic_records (topic, offset, appended_at, key, payload) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for o in outputs {
        let i = match last.iter().position(|(t, _)| *t == o.topic) {
            Some(i) => i,
            None => {
                let current: i64 = tx
                    .prepare_cached("SELECT last_offset FROM topics WHERE name = ?1")?
                    .query_row(params![o.topic], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0);
                last.push((o.topic.clone(), current as u64));
                last.len() - 1
            }
        };
        last[i].1 += 1;
        ins.execute(params![o.topic, last[i].1 as i64, now, o.key, &*o.payload])?;
    }
    let mut upd = tx.prepare_cached(
        "INSERT INTO topics (name, last_offset) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET last_offset = excluded.last_offset",
    )?;
    for (t, l) in &last {
        upd.execute(params![t, *l as i64])?;
    }
    Ok(last)
}
