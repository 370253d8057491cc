//! The embedded log: one SQLite file (WAL) holds the event log, every channel's
//! committed offset and all component state, so an append and its checkpoint, or a
//! channel's offset and its bookkeeping, commit in one transaction.
//!
//! Writes go through one connection behind a mutex on the blocking pool; each
//! consumer reads through its own connection (WAL lets readers run beside the
//! writer). In-process consumers are woken by a watch channel when the head moves;
//! they also re-check on their poll timeout, which covers appends by other processes.
//!
//! The dedup index (the `seen` state namespace) has tables of its own, keyed by a
//! hash of the status URI and written append-only (see [`seen`]); every other
//! namespace lives in the generic `state` table.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::watch;

use crate::error::LogError;
use crate::event::{EncodedEvent, LogRecord, Position};
use crate::log::{AppendBatch, AppendReceipt, Consumer, GroupInfo, Log, LogInfo, StatePut};

/// How hard the log insists on reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Survives a crash of the process (kill -9). SQLite `synchronous=NORMAL` in WAL mode.
    #[default]
    Process,
    /// Also survives power loss: fsync on every commit (`synchronous=FULL`).
    Fsync,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// Delete events older than this (only once every live group has committed them).
    pub max_age: Option<Duration>,
    /// Keep the database file under about this many bytes (same proviso).
    pub max_bytes: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { durability: Durability::Process, max_age: None, max_bytes: None }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    offset      INTEGER PRIMARY KEY AUTOINCREMENT,
    appended_at INTEGER NOT NULL, -- microseconds since the epoch
    account     TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    ns    TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (
    name       TEXT PRIMARY KEY,
    committed  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
";

/// The writing connection and what it knows about the dedup index.
struct Writer {
    conn: Connection,
    seen: seen::Layout,
}

impl Writer {
    /// Apply `state` inside `tx`; returns the dedup-index changes to apply once it commits.
    fn apply_state(tx: &rusqlite::Transaction<'_>, seen: &seen::Layout, state: &[StatePut]) -> Result<seen::Staged, LogError> {
        let mut staged = Vec::new();
        if state.is_empty() {
            return Ok(staged);
        }
        let mut put = tx.prepare_cached("INSERT OR REPLACE INTO state (ns, key, value) VALUES (?1, ?2, ?3)")?;
        let mut del = tx.prepare_cached("DELETE FROM state WHERE ns = ?1 AND key = ?2")?;
        for s in state {
            if s.ns == seen::NS && !matches!(seen, seen::Layout::Legacy) {
                seen::put(tx, seen, &s.key, s.value.as_deref(), &mut staged)?;
                continue;
            }
            match &s.value {
                Some(v) => put.execute(params![s.ns, s.key, v])?,
                None => del.execute(params![s.ns, s.key])?,
            };
        }
        Ok(staged)
    }

    /// One transaction: `f`'s writes plus `state`; the dedup-index map follows the commit.
    fn transact<T>(
        &mut self,
        state: &[StatePut],
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let tx = self.conn.transaction()?;
        let out = f(&tx)?;
        let staged = Self::apply_state(&tx, &self.seen, state)?;
        tx.commit()?;
        let merge = !staged.is_empty();
        seen::committed(&mut self.seen, staged);
        if merge {
            // The commit above stands whatever happens here; a failed merge is retried after the next one.
            if let Err(e) = seen::maybe_merge(&mut self.conn, &mut self.seen) {
                tracing::warn!(error = %e, "Cannot merge the recent dedup entries; will retry");
            }
        }
        Ok(out)
    }
}

pub struct SqliteLog {
    path: PathBuf,
    writer: Arc<Mutex<Writer>>,
    tail: Arc<Mutex<Tail>>,
    head: watch::Sender<u64>,
    options: SqliteOptions,
    live_groups: Mutex<HashSet<String>>,
    // Held for the life of the log: one writer process per database file.
    _lock: Option<std::fs::File>,
    _checkpointer: Option<Checkpointer>,
}

/// The records appended by this process that some in-process consumer has not
/// read yet, shared with the appending side (the payload `Arc`s the append
/// serialised). A consumer at the head reads from here instead of from SQLite:
/// no statement, no copy out of the page cache, no UTF-8 validation, no
/// blocking-pool hop. Filled by the writer right after each commit, under the
/// writer lock, so it is always in offset order and holds only committed records.
struct Tail {
    records: VecDeque<LogRecord>,
    /// Every record with an offset above this one is in `records` (or not yet appended).
    covered_from: u64,
    bytes: usize,
    max_bytes: usize,
    /// Cursors of the in-process consumers: what all of them have read is dropped.
    cursors: Vec<std::sync::Weak<AtomicU64>>,
}

/// Upper bound of the tail cache's payload bytes (a few appends of large events).
const TAIL_MAX_BYTES: usize = 48 << 20;

impl Tail {
    fn new(head: u64, max_bytes: usize) -> Self {
        Tail { records: VecDeque::new(), covered_from: head, bytes: 0, max_bytes, cursors: Vec::new() }
    }

    fn push(&mut self, records: impl IntoIterator<Item = LogRecord>) {
        if self.cursors.is_empty() {
            // Nobody in this process reads: keep nothing, and say so.
            if let Some(last) = records.into_iter().last() {
                self.covered_from = last.position.offset;
            }
            return;
        }
        for r in records {
            self.bytes += r.payload.len();
            self.records.push_back(r);
        }
        self.trim();
    }

    /// Drop what every consumer has read, and the oldest records past the size bound.
    fn trim(&mut self) {
        self.cursors.retain(|c| c.strong_count() > 0);
        let read_by_all = self.cursors.iter().filter_map(|c| c.upgrade()).map(|c| c.load(Ordering::Acquire)).min();
        let read_by_all = read_by_all.unwrap_or(u64::MAX);
        while let Some(front) = self.records.front() {
            if front.position.offset > read_by_all && self.bytes <= self.max_bytes {
                break;
            }
            self.bytes -= front.payload.len();
            self.covered_from = front.position.offset;
            self.records.pop_front();
        }
    }

    /// Up to `max` records after `after`, when the cache holds all of them.
    fn read_after(&self, after: u64, max: usize) -> Option<Vec<LogRecord>> {
        if after < self.covered_from {
            return None;
        }
        let start = self.records.partition_point(|r| r.position.offset <= after);
        Some(self.records.range(start..).take(max).cloned().collect())
    }
}

/// Copies the WAL back into the database on its own thread and connection, so
/// appends never pay for a checkpoint (SQLite's automatic checkpoint runs inside
/// the committing transaction: a latency spike of tens of milliseconds).
struct Checkpointer {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// WAL content past which the checkpointer insists on resetting it (see the loop).
const WAL_RESTART_BYTES: u64 = 16 << 20;

impl Checkpointer {
    fn start(path: &Path, durability: Durability, writer: Arc<Mutex<Writer>>) -> Result<Self, LogError> {
        let conn = open_conn(path, durability, false)?;
        let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))?.max(512) as u64;
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fedistream-checkpoint".into())
            .spawn(move || loop {
                let (lock_, cv) = &*s;
                let guard = lock(lock_);
                let (guard, _) = cv.wait_timeout(guard, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner());
                if *guard {
                    // Final full checkpoint so the database file is complete on exit.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                    return;
                }
                drop(guard);
                // PASSIVE never blocks the writer or readers, but under sustained
                // load it rarely finishes between two commits, and only a finished
                // checkpoint lets the next commit start the WAL over. A WAL that
                // keeps growing is written into fresh page-cache pages (several
                // times slower than rewriting cached ones) and pushes the rest of
                // the page cache out; so once it holds more than a few MiB,
                // RESTART resets it. RESTART needs SQLite's write lock, which
                // back-to-back appends would keep winning against SQLite's
                // sleeping busy handler, so it takes the writer's mutex first:
                // appends wait for the few frames PASSIVE left to copy.
                let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
                match frames {
                    Ok(n) if n.max(0) as u64 * page_size > WAL_RESTART_BYTES => {
                        let _appends_wait = lock(&writer);
                        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                            tracing::warn!(error = %e, "WAL checkpoint (RESTART) failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            })
            .map_err(|e| LogError::Internal(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_conn(path: &Path, durability: Durability, read_only: bool) -> Result<Connection, LogError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| LogError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    conn.busy_timeout(Duration::from_secs(10))?;
    if !read_only {
        // Events are 1.5-9 KB: with SQLite's default 4 KiB pages nearly every row
        // takes a page of its own (or overflow pages). Larger pages pack rows and
        // halve the append cost. Only takes effect when the file is created.
        conn.pragma_update(None, "page_size", 32768)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Checkpoints run on the checkpointer's thread (see `Checkpointer`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // When the WAL starts over, cut a file a burst made large back to this.
        conn.pragma_update(None, "journal_size_limit", WAL_RESTART_BYTES as i64 * 2)?;
    }
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::Fsync => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    Ok(conn)
}

fn blocking_err(e: tokio::task::JoinError) -> LogError {
    LogError::Internal(format!("log task failed: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves SQLite in a consistent state (the
    // transaction is rolled back on drop), so the poison flag carries no meaning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteLog {
    /// Open (creating if needed) the log at `path` for writing. Takes an exclusive
    /// lock on `<path>.lock` so that two `run` processes never share one log.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Arc<Self>, LogError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LogError::Open {
                path: path.display().to_string(),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::Open { path: lock_path.display().to_string(), reason: e.to_string() })?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Open {
                    path: path.display().to_string(),
                    reason: "another fedistream process is using this log (lock file held)".into(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LogError::Open { path: lock_path.display().to_string(), reason: e.to_string() })
            }
        }
        let mut conn = open_conn(&path, options.durability, false)?;
        // One transaction: a crash during the first start (or a migration) never
        // leaves half a schema.
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        let seen = seen::open_writer(&tx)?;
        tx.commit()?;
        let head: u64 = conn.query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get::<_, i64>(0))? as u64;
        let (tx, _) = watch::channel(head);
        let writer = Arc::new(Mutex::new(Writer { conn, seen }));
        let checkpointer = Checkpointer::start(&path, options.durability, writer.clone())?;
        Ok(Arc::new(SqliteLog {
            _checkpointer: Some(checkpointer),
            path,
            writer,
            tail: Arc::new(Mutex::new(Tail::new(head, TAIL_MAX_BYTES))),
            head: tx,
            options,
            live_groups: Mutex::new(HashSet::new()),
            _lock: Some(lock_file),
        }))
    }

    /// Open an existing log read-only (for `fedistream status` while `run` works).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Arc<Self>, LogError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(LogError::Open { path: path.display().to_string(), reason: "no such file".into() });
        }
        let conn = open_conn(&path, Durability::Process, true)?;
        let head: u64 = conn.query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get::<_, i64>(0))? as u64;
        let seen = seen::open_read_only(&conn)?;
        let (tx, _) = watch::channel(head);
        Ok(Arc::new(SqliteLog {
            _checkpointer: None,
            path,
            writer: Arc::new(Mutex::new(Writer { conn, seen })),
            tail: Arc::new(Mutex::new(Tail::new(head, TAIL_MAX_BYTES))),
            head: tx,
            options: SqliteOptions::default(),
            live_groups: Mutex::new(HashSet::new()),
            _lock: None,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let w = self.writer.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&w))).await.map_err(blocking_err)?
    }
}

#[async_trait]
impl Log for SqliteLog {
    async fn append(&self, batch: AppendBatch) -> Result<AppendReceipt, LogError> {
        if batch.events.is_empty() && batch.state.is_empty() {
            return Ok(AppendReceipt::default());
        }
        // Serialise outside the lock: it is the costly part and needs no connection.
        let rows: Vec<(String, Arc<str>)> = batch.events.into_iter().map(EncodedEvent::into_stored).collect();
        let state = batch.state;
        let now = Utc::now().timestamp_micros();
        let appended_at = Utc.timestamp_micros(now).single().unwrap_or_else(Utc::now);
        let tail = self.tail.clone();
        let positions = self
            .with_writer(move |w| {
                let positions = w.transact(&state, |tx| {
                    let mut positions = Vec::with_capacity(rows.len());
                    let mut ins = tx.prepare_cached(
                        "INSERT INTO events (appended_at, account, payload) VALUES (?1, ?2, ?3)",
                    )?;
                    for (account, payload) in &rows {
                        ins.execute(params![now, account, &**payload])?;
                        positions.push(Position { partition: 0, offset: tx.last_insert_rowid() as u64 });
                    }
                    Ok(positions)
                })?;
                // Still under the writer lock: the tail stays in offset order.
                lock(&tail).push(
                    positions.iter().zip(rows).map(|(p, (_, payload))| LogRecord::new(*p, appended_at, payload)),
                );
                Ok(positions)
            })
            .await?;
        if let Some(last) = positions.last() {
            self.head.send_replace(last.offset);
        }
        Ok(AppendReceipt { positions })
    }

    async fn state_get(&self, ns: &str, key: &str) -> Result<Option<String>, LogError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.with_writer(move |w| {
            if ns == seen::NS {
                return Ok(seen::get_many(&w.conn, &w.seen, [&key])?.remove(&key));
            }
            Ok(w.conn
                .prepare_cached("SELECT value FROM state WHERE ns = ?1 AND key = ?2")?
                .query_row(params![ns, key], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn state_get_many(&self, ns: &str, keys: &[String]) -> Result<HashMap<String, String>, LogError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let (ns, keys) = (ns.to_string(), keys.to_vec());
        self.with_writer(move |w| {
            if ns == seen::NS {
                return seen::get_many(&w.conn, &w.seen, &keys);
            }
            // One read transaction for all keys (see `seen::get_many`).
            let tx = w.conn.unchecked_transaction()?;
            let mut out = HashMap::with_capacity(keys.len());
            {
                let mut stmt = tx.prepare_cached("SELECT value FROM state WHERE ns = ?1 AND key = ?2")?;
                for k in keys {
                    if let Some(v) = stmt.query_row(params![ns, k], |r| r.get::<_, String>(0)).optional()? {
                        out.insert(k, v);
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn state_scan(&self, ns: &str) -> Result<Vec<(String, String)>, LogError> {
        let ns = ns.to_string();
        self.with_writer(move |w| {
            if ns == seen::NS && !matches!(w.seen, seen::Layout::Legacy) {
                return Err(LogError::Internal(
                    "the SQLite log stores the dedup index by key hash: it cannot be listed".into(),
                ));
            }
            let mut stmt = w.conn.prepare_cached("SELECT key, value FROM state WHERE ns = ?1 ORDER BY key")?;
            let rows = stmt.query_map(params![ns], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn state_put(&self, puts: Vec<StatePut>) -> Result<(), LogError> {
        if puts.is_empty() {
            return Ok(());
        }
        self.with_writer(move |w| w.transact(&puts, |_| Ok(())))
        .await
    }

    async fn consumer(&self, group: &str) -> Result<Box<dyn Consumer>, LogError> {
        let g = group.to_string();
        let committed = self
            .with_writer(move |w| {
                let conn = &w.conn;
                let now = Utc::now().timestamp_millis();
                conn.execute(
                    "INSERT OR IGNORE INTO groups (name, committed, updated_at) VALUES (?1, 0, ?2)",
                    params![g, now],
                )?;
                Ok(conn.query_row("SELECT committed FROM groups WHERE name = ?1", params![g], |r| {
                    r.get::<_, i64>(0)
                })? as u64)
            })
            .await?;
        lock(&self.live_groups).insert(group.to_string());
        let reader = open_conn(&self.path, self.options.durability, true)?;
        let cursor = Arc::new(AtomicU64::new(committed));
        lock(&self.tail).cursors.push(Arc::downgrade(&cursor));
        Ok(Box::new(SqliteConsumer {
            group: group.to_string(),
            cursor,
            tail: self.tail.clone(),
            reader: Arc::new(Mutex::new(reader)),
            writer: self.writer.clone(),
            head: self.head.subscribe(),
        }))
    }

    async fn info(&self) -> Result<LogInfo, LogError> {
        let location = self.path.display().to_string();
        self.with_writer(move |w| {
            let conn = &w.conn;
            let (events, head): (i64, i64) = conn.query_row(
                "SELECT COUNT(*), COALESCE(MAX(offset), 0) FROM events",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            // AUTOINCREMENT keeps the highest offset ever used even after retention.
            let seq: i64 = conn
                .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0))
                .optional()?
                .unwrap_or(head);
            let mut stmt = conn.prepare("SELECT name, committed FROM groups ORDER BY name")?;
            let groups = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(|(group, committed)| GroupInfo {
                    group,
                    committed: vec![Position { partition: 0, offset: committed as u64 }],
                    lag: (seq - committed).max(0) as u64,
                })
                .collect();
            Ok(LogInfo {
                backend: "sqlite",
                location,
                events: events as u64,
                head: vec![Position { partition: 0, offset: seq as u64 }],
                groups,
            })
        })
        .await
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        let live: Vec<String> = lock(&self.live_groups).iter().cloned().collect();
        let opts = self.options.clone();
        if opts.max_age.is_none() && opts.max_bytes.is_none() {
            return Ok(0);
        }
        self.with_writer(move |w| {
            let conn = &w.conn;
            // Never delete what a live channel has not delivered yet.
            let mut floor = i64::MAX;
            for g in &live {
                let c: Option<i64> = conn
                    .query_row("SELECT committed FROM groups WHERE name = ?1", params![g], |r| r.get(0))
                    .optional()?;
                floor = floor.min(c.unwrap_or(0));
            }
            if live.is_empty() {
                floor = 0;
            }
            let mut deleted = 0u64;
            if let Some(age) = opts.max_age {
                let cutoff = Utc::now().timestamp_micros() - age.as_micros() as i64;
                deleted += conn.execute(
                    "DELETE FROM events WHERE appended_at <= ?1 AND offset <= ?2",
                    params![cutoff, floor],
                )? as u64;
            }
            if let Some(max) = opts.max_bytes {
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
                        params![floor, excess],
                    )? as u64;
                }
            }
            if deleted > 0 {
                tracing::info!(deleted, "Log retention removed old events");
            }
            Ok(deleted)
        })
        .await
    }
}

struct SqliteConsumer {
    group: String,
    /// Offset of the last record handed out by `poll` (the tail cache reads it too).
    cursor: Arc<AtomicU64>,
    tail: Arc<Mutex<Tail>>,
    reader: Arc<Mutex<Connection>>,
    writer: Arc<Mutex<Writer>>,
    head: watch::Receiver<u64>,
}

fn read_after(conn: &Connection, after: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT offset, appended_at, payload FROM events WHERE offset > ?1 ORDER BY offset LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![after as i64, max as i64])?;
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

impl SqliteConsumer {
    fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// Read up to `max` records after the cursor (from the tail cache when it has
    /// them, else from SQLite) and move the cursor past them.
    async fn read_next(&mut self, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let after = self.cursor();
        let cached = lock(&self.tail).read_after(after, max);
        let recs = match cached {
            Some(recs) => recs,
            None => {
                let reader = self.reader.clone();
                tokio::task::spawn_blocking(move || read_after(&lock(&reader), after, max))
                    .await
                    .map_err(blocking_err)??
            }
        };
        if let Some(last) = recs.last() {
            self.cursor.store(last.position.offset, Ordering::Release);
            lock(&self.tail).trim();
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
            let woke = tokio::time::timeout_at(deadline, async move {
                head.wait_for(|h| *h > cursor).await.is_ok()
            })
            .await;
            if woke != Ok(true) {
                // Timed out, or the log was dropped: one more read (another process
                // may have appended), then report what there is.
                return self.read_next(max).await;
            }
        }
    }

    async fn commit(&mut self, upto: &[Position], state: Vec<StatePut>) -> Result<(), LogError> {
        let Some(offset) = upto.iter().filter(|p| p.partition == 0).map(|p| p.offset).max() else {
            return Ok(());
        };
        let (writer, group) = (self.writer.clone(), self.group.clone());
        tokio::task::spawn_blocking(move || {
            lock(&writer).transact(&state, |tx| {
                tx.prepare_cached(
                    "UPDATE groups SET committed = MAX(committed, ?2), updated_at = ?3 WHERE name = ?1",
                )?
                .execute(params![group, offset as i64, Utc::now().timestamp_millis()])?;
                Ok(())
            })
        })
        .await
        .map_err(blocking_err)?
    }

    async fn lag(&mut self) -> Result<u64, LogError> {
        let (writer, group) = (self.writer.clone(), self.group.clone());
        tokio::task::spawn_blocking(move || {
            let w = lock(&writer);
            let conn = &w.conn;
            let committed: i64 =
                conn.query_row("SELECT committed FROM groups WHERE name = ?1", params![group], |r| r.get(0))?;
            let head: i64 = conn.query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get(0))?;
            Ok::<_, LogError>((head - committed).max(0) as u64)
        })
        .await
        .map_err(blocking_err)?
    }
}

mod seen;

#[cfg(test)]
mod tests;
