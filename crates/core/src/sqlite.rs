//! The embedded log: one SQLite file (WAL) holds every topic, every consumer
//! group's committed offset and all component state, so an append and its
//! checkpoint, or a processor's outputs, state and input offset, commit in one
//! transaction.
//!
//! Writes go through one connection behind a mutex on the blocking pool; each
//! consumer reads through its own connection (WAL lets readers run beside the
//! writer). In-process consumers are woken by a watch channel per topic when its
//! head moves; they also re-check on their poll timeout, which covers appends by
//! other processes.
//!
//! Tables: `events` (the `events` topic, offsets from SQLite's AUTOINCREMENT),
//! `topic_records` + `topics` (every other topic, offsets counted per topic in
//! `topics`, never reused), `groups` (name, topic, committed offset), `state`
//! (namespace, key, value, time of the last write) and, for the dedup index only,
//! `seen` + `seen_recent` (see [`seen`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::watch;

use crate::error::{LogError, StorageClass};
use crate::event::{EncodedEvent, LogRecord, Position};
use crate::log::{AppendBatch, AppendReceipt, Consumer, GroupInfo, Log, LogInfo, StatePut, TopicInfo, EVENTS};

mod checkpoint;
mod consumer;
mod retention;
mod seen;
mod tail;

use checkpoint::Checkpointer;
#[cfg(test)]
use checkpoint::WAL_RESTART_BYTES;
use consumer::SqliteConsumer;
use tail::{Tail, TAIL_MAX_BYTES, TAIL_READER_MAX_BYTES};

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

#[derive(Debug, Clone, Default)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// Delete records older than this (only once every known group has committed them).
    pub max_age: Option<Duration>,
    /// Keep the database file under about this many bytes (same proviso).
    pub max_bytes: Option<u64>,
    /// Bounded state: entries of the dedup index and of the namespaces in
    /// `prunable` not written for this long are removed (see `prune_state`).
    /// `None` keeps them forever.
    pub state_horizon: Option<Duration>,
    /// State namespaces (besides the dedup index) pruned past `state_horizon`.
    pub prunable: Vec<String>,
}

/// `PRAGMA user_version` of a database with this layout: 1 added the dedup
/// tables, 2 topics, the groups' topic and the time of each state write.
pub(crate) const LAYOUT_VERSION: i64 = 2;

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
    at    INTEGER NOT NULL DEFAULT 0, -- seconds since the epoch of the last write
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (
    name       TEXT PRIMARY KEY,
    committed  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    topic      TEXT NOT NULL DEFAULT 'events'
);
";

/// Tables added by layout 2 (also created on older files when they migrate).
const TOPICS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    name        TEXT PRIMARY KEY,
    last_offset INTEGER NOT NULL -- offsets are never reused, even after retention
);
CREATE TABLE IF NOT EXISTS topic_records (
    id          INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    offset      INTEGER NOT NULL,
    appended_at INTEGER NOT NULL,
    key         TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS topic_records_position ON topic_records (topic, offset);
";

impl From<rusqlite::Error> for LogError {
    /// SQLite's errors, classified for the operator: a full disk or an I/O error
    /// is a disk problem to fix (and retry), corruption is corruption.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let class = match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                C::DatabaseBusy | C::DatabaseLocked => StorageClass::Busy,
                C::DiskFull => StorageClass::DiskFull,
                C::SystemIoFailure => StorageClass::Io,
                C::DatabaseCorrupt | C::NotADatabase => StorageClass::Corrupt,
                C::ReadOnly | C::CannotOpen | C::PermissionDenied => StorageClass::ReadOnly,
                _ => StorageClass::Other,
            },
            _ => StorageClass::Other,
        };
        LogError::storage(class, e.to_string())
    }
}

/// The writing connection and what it knows about the dedup index.
pub(crate) struct Writer {
    conn: Connection,
    seen: seen::Layout,
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

impl Writer {
    /// Apply `state` inside `tx`; returns the dedup-index changes to apply once it commits.
    fn apply_state(tx: &rusqlite::Transaction<'_>, seen: &seen::Layout, state: &[StatePut]) -> Result<seen::Staged, LogError> {
        let mut staged = Vec::new();
        if state.is_empty() {
            return Ok(staged);
        }
        let mut put = tx.prepare_cached("INSERT OR REPLACE INTO state (ns, key, value, at) VALUES (?1, ?2, ?3, ?4)")?;
        let mut del = tx.prepare_cached("DELETE FROM state WHERE ns = ?1 AND key = ?2")?;
        let at = now_secs();
        for s in state {
            if s.ns == seen::NS && !matches!(seen, seen::Layout::Legacy) {
                seen::put(tx, seen, &s.key, s.value.as_deref(), &mut staged)?;
                continue;
            }
            match &s.value {
                Some(v) => put.execute(params![s.ns, s.key, v, at])?,
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

/// What the log and its consumers share.
pub(crate) struct Shared {
    path: PathBuf,
    durability: Durability,
    writer: Arc<Mutex<Writer>>,
    /// Whose turn it is at the writer: callers queue here, as tasks, before a
    /// blocking thread takes the connection. Without it every waiting caller
    /// held a blocking-pool thread parked on the mutex — thousands of accounts
    /// starting at once grew the pool to dozens of threads, each keeping its
    /// own allocator heap (tens of MiB) and a wake-up per hand-over.
    turn: tokio::sync::Mutex<()>,
    /// The records of `events` this process appended and a consumer has not read.
    tail: Arc<Mutex<Tail>>,
    /// Last offset of `events`.
    head: watch::Sender<u64>,
    /// Last offset of every other topic this process has touched.
    topic_heads: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The file's layout (a read-only handle may see an older one).
    layout: i64,
}

impl Shared {
    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let _turn = self.turn.lock().await;
        let w = self.writer.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&w))).await.map_err(blocking_err)?
    }

    /// The head watch of a topic other than `events`, made on first use.
    fn topic_head(&self, topic: &str, current: impl FnOnce() -> u64) -> watch::Sender<u64> {
        let mut heads = lock(&self.topic_heads);
        heads.entry(topic.to_string()).or_insert_with(|| watch::channel(current()).0).clone()
    }

    /// Tell this process's consumers of `topic` that it grew to `last`.
    fn advance_topic(&self, topic: &str, last: u64) {
        let tx = self.topic_head(topic, || last);
        tx.send_if_modified(|h| {
            let moved = last > *h;
            *h = (*h).max(last);
            moved
        });
    }
}

pub struct SqliteLog {
    shared: Arc<Shared>,
    options: SqliteOptions,
    /// When state was last pruned (at most hourly, see `enforce_retention`).
    last_prune: Mutex<Option<std::time::Instant>>,
    // Held for the life of the log: one writer process per database file.
    _lock: Option<std::fs::File>,
    _checkpointer: Option<Checkpointer>,
}

pub(crate) fn open_conn(path: &Path, durability: Durability, read_only: bool) -> Result<Connection, LogError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| LogError::Open { path: path.display().to_string(), reason: e.to_string() })?;
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
        conn.pragma_update(None, "journal_size_limit", checkpoint::WAL_RESTART_BYTES as i64 * 2)?;
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves SQLite in a consistent state (the
    // transaction is rolled back on drop), so the poison flag carries no meaning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bring the schema to [`LAYOUT_VERSION`] inside `tx` (a new file, or one an
/// older fedistream wrote); returns the dedup layout for the writer.
fn migrate(tx: &rusqlite::Transaction<'_>) -> Result<seen::Layout, LogError> {
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > LAYOUT_VERSION {
        return Err(LogError::Internal(format!(
            "the log was written by a newer fedistream (layout {version}, this one knows {LAYOUT_VERSION})"
        )));
    }
    let existed: bool =
        tx.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'", [], |r| r.get::<_, i64>(0))? > 0;
    if existed && version < 2 {
        // Columns layout 2 added to tables that already exist.
        tx.execute_batch(&format!(
            "ALTER TABLE groups ADD COLUMN topic TEXT NOT NULL DEFAULT 'events';
             ALTER TABLE state ADD COLUMN at INTEGER NOT NULL DEFAULT {now};",
            now = now_secs()
        ))?;
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(TOPICS_SCHEMA)?;
    let layout = seen::open_writer(tx, existed.then_some(version))?;
    tx.execute_batch(&format!("PRAGMA user_version = {LAYOUT_VERSION}"))?;
    Ok(layout)
}

fn events_head(conn: &Connection) -> Result<u64, LogError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get::<_, i64>(0))? as u64)
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
        let lock_path = lock_path(&path);
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
        let seen = migrate(&tx)?;
        tx.commit()?;
        let head = events_head(&conn)?;
        let writer = Arc::new(Mutex::new(Writer { conn, seen }));
        let checkpointer = Checkpointer::start(&path, options.durability, writer.clone())?;
        Ok(Arc::new(SqliteLog {
            shared: Arc::new(Shared {
                path,
                durability: options.durability,
                writer,
                turn: Default::default(),
                tail: Arc::new(Mutex::new(Tail::new(head, TAIL_MAX_BYTES, TAIL_READER_MAX_BYTES))),
                head: watch::channel(head).0,
                topic_heads: Mutex::new(HashMap::new()),
                layout: LAYOUT_VERSION,
            }),
            options,
            last_prune: Mutex::new(None),
            _lock: Some(lock_file),
            _checkpointer: Some(checkpointer),
        }))
    }

    /// Open an existing log read-only (for `fedistream status` while `run` works).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Arc<Self>, LogError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(LogError::Open { path: path.display().to_string(), reason: "no such file".into() });
        }
        let conn = open_conn(&path, Durability::Process, true)?;
        let head = events_head(&conn)?;
        let layout: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let seen = seen::open_read_only(&conn)?;
        Ok(Arc::new(SqliteLog {
            shared: Arc::new(Shared {
                path,
                durability: Durability::Process,
                writer: Arc::new(Mutex::new(Writer { conn, seen })),
                turn: Default::default(),
                tail: Arc::new(Mutex::new(Tail::new(head, TAIL_MAX_BYTES, TAIL_READER_MAX_BYTES))),
                head: watch::channel(head).0,
                topic_heads: Mutex::new(HashMap::new()),
                layout,
            }),
            options: SqliteOptions::default(),
            last_prune: Mutex::new(None),
            _lock: None,
            _checkpointer: None,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether some process holds the write lock of the log at `path` (a `run`
    /// is using it). For `fedistream status`: rows of a dead process are stale.
    pub fn is_in_use(path: impl AsRef<Path>) -> bool {
        let Ok(f) = std::fs::OpenOptions::new().write(true).open(lock_path(path.as_ref())) else { return false };
        match f.try_lock() {
            Ok(()) => {
                let _ = f.unlock();
                false
            }
            Err(_) => true,
        }
    }
}

fn lock_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", path.display()))
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
        let tail = self.shared.tail.clone();
        let positions = self
            .shared
            .with_writer(move |w| {
                let positions = w.transact(&state, |tx| {
                    let mut positions = Vec::with_capacity(rows.len());
                    let mut ins = tx.prepare_cached("INSERT INTO events (appended_at, account, payload) VALUES (?1, ?2, ?3)")?;
                    for (account, payload) in &rows {
                        ins.execute(params![now, account, &**payload])?;
                        positions.push(Position { partition: 0, offset: tx.last_insert_rowid() as u64 });
                    }
                    Ok(positions)
                })?;
                // Still under the writer lock: the tail stays in offset order.
                lock(&tail).push(positions.iter().zip(rows).map(|(p, (_, payload))| LogRecord::new(*p, appended_at, payload)));
                Ok(positions)
            })
            .await?;
        if let Some(last) = positions.last() {
            self.shared.head.send_replace(last.offset);
        }
        Ok(AppendReceipt { positions })
    }

    async fn state_get(&self, ns: &str, key: &str) -> Result<Option<String>, LogError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.shared
            .with_writer(move |w| {
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
        self.shared
            .with_writer(move |w| {
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
        self.shared
            .with_writer(move |w| {
                if ns == seen::NS && !matches!(w.seen, seen::Layout::Legacy) {
                    return Err(LogError::Internal("the SQLite log stores the dedup index by key hash: it cannot be listed".into()));
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
        self.shared.with_writer(move |w| w.transact(&puts, |_| Ok(()))).await
    }

    async fn reader(&self, topic: &str, after: &[Position]) -> Result<Box<dyn Consumer>, LogError> {
        if !crate::log::valid_topic_name(topic) {
            return Err(LogError::Unsupported(format!("`{topic}` is not a valid topic name")));
        }
        let t = topic.to_string();
        let head = self
            .shared
            .with_writer(move |w| {
                let conn = &w.conn;
                let head: i64 = if t == EVENTS {
                    // The last offset ever given (retention may have emptied the table).
                    conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0)).optional()?.unwrap_or(0)
                } else {
                    conn.query_row("SELECT last_offset FROM topics WHERE name = ?1", params![t], |r| r.get(0)).optional()?.unwrap_or(0)
                };
                Ok(head as u64)
            })
            .await?;
        // One partition: 0 (a resume point that does not name it reads it from the start).
        let from = match after.iter().find(|p| p.partition == 0) {
            Some(p) => p.offset,
            None if after.is_empty() => head,
            None => 0,
        };
        let reader = open_conn(&self.shared.path, self.shared.durability, true)?;
        let c = if topic == EVENTS {
            SqliteConsumer::events_reader(self.shared.clone(), from, reader)
        } else {
            let h = self.shared.topic_head(topic, || head);
            SqliteConsumer::topic(self.shared.clone(), topic, "", from, reader, h.subscribe())
        };
        Ok(Box::new(c))
    }

    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, LogError> {
        if !crate::log::valid_topic_name(topic) {
            return Err(LogError::Unsupported(format!("`{topic}` is not a valid topic name")));
        }
        let (g, t) = (group.to_string(), topic.to_string());
        let (committed, stored_topic, topic_head) = self
            .shared
            .with_writer(move |w| {
                let conn = &w.conn;
                let now = Utc::now().timestamp_millis();
                conn.execute(
                    "INSERT OR IGNORE INTO groups (name, committed, updated_at, topic) VALUES (?1, 0, ?2, ?3)",
                    params![g, now, t],
                )?;
                let (committed, stored): (i64, String) =
                    conn.query_row("SELECT committed, topic FROM groups WHERE name = ?1", params![g], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let head: i64 =
                    conn.query_row("SELECT last_offset FROM topics WHERE name = ?1", params![t], |r| r.get(0)).optional()?.unwrap_or(0);
                Ok((committed as u64, stored, head as u64))
            })
            .await?;
        if stored_topic != topic {
            return Err(LogError::Unsupported(format!(
                "consumer group `{group}` reads the topic `{stored_topic}`, not `{topic}` (a channel or processor reads one \
                 topic; give it another name, or remove the old group with `fedistream channel forget`)"
            )));
        }
        let reader = open_conn(&self.shared.path, self.shared.durability, true)?;
        let c = if topic == EVENTS {
            SqliteConsumer::events(self.shared.clone(), group, committed, reader)
        } else {
            let head = self.shared.topic_head(topic, || topic_head);
            SqliteConsumer::topic(self.shared.clone(), topic, group, committed, reader, head.subscribe())
        };
        Ok(Box::new(c))
    }

    async fn info(&self) -> Result<LogInfo, LogError> {
        let location = self.shared.path.display().to_string();
        let layout = self.shared.layout;
        self.shared
            .with_writer(move |w| {
                let conn = &w.conn;
                let (events, head): (i64, i64) =
                    conn.query_row("SELECT COUNT(*), COALESCE(MAX(offset), 0) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
                // AUTOINCREMENT keeps the highest offset ever used even after retention.
                let seq: i64 =
                    conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0)).optional()?.unwrap_or(head);
                let mut heads: HashMap<String, u64> = HashMap::from([(EVENTS.to_string(), seq as u64)]);
                let mut topics = vec![TopicInfo {
                    name: EVENTS.into(),
                    records: events as u64,
                    head: vec![Position { partition: 0, offset: seq as u64 }],
                }];
                if layout >= 2 {
                    let mut stmt = conn.prepare(
                        "SELECT t.name, t.last_offset, (SELECT COUNT(*) FROM topic_records r WHERE r.topic = t.name)
                         FROM topics t ORDER BY t.name",
                    )?;
                    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?;
                    for row in rows {
                        let (name, last, count) = row?;
                        heads.insert(name.clone(), last as u64);
                        topics.push(TopicInfo { name, records: count as u64, head: vec![Position { partition: 0, offset: last as u64 }] });
                    }
                }
                let sql = if layout >= 2 {
                    "SELECT name, committed, topic FROM groups ORDER BY name"
                } else {
                    "SELECT name, committed, 'events' FROM groups ORDER BY name"
                };
                let mut stmt = conn.prepare(sql)?;
                let groups = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .map(|(group, committed, topic)| {
                        let head = heads.get(&topic).copied().unwrap_or(0);
                        GroupInfo {
                            group,
                            committed: vec![Position { partition: 0, offset: committed as u64 }],
                            lag: head.saturating_sub(committed as u64),
                            topic,
                        }
                    })
                    .collect();
                Ok(LogInfo {
                    backend: "sqlite",
                    location,
                    events: events as u64,
                    head: vec![Position { partition: 0, offset: seq as u64 }],
                    topics,
                    groups,
                })
            })
            .await
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        let deleted = retention::enforce(&self.shared, &self.options).await?;
        // State pruning scans whole tables: at most once an hour.
        if let Some(horizon) = self.options.state_horizon {
            let due = {
                let mut last = lock(&self.last_prune);
                let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600));
                if due {
                    *last = Some(std::time::Instant::now());
                }
                due
            };
            if due {
                let cutoff = Utc::now() - chrono::Duration::from_std(horizon).unwrap_or_default();
                self.prune_state(cutoff).await?;
            }
        }
        Ok(deleted)
    }

    async fn forget_group(&self, group: &str) -> Result<bool, LogError> {
        let g = group.to_string();
        self.shared.with_writer(move |w| Ok(w.conn.execute("DELETE FROM groups WHERE name = ?1", params![g])? > 0)).await
    }
}

impl SqliteLog {
    /// Remove dedup-index entries and entries of the prunable namespaces last
    /// written before `cutoff`. Returns how many went. (`enforce_retention` calls
    /// this hourly with `now - state_horizon`.)
    pub async fn prune_state(&self, cutoff: chrono::DateTime<Utc>) -> Result<u64, LogError> {
        let prunable: HashSet<String> = self.options.prunable.iter().cloned().collect();
        self.shared.with_writer(move |w| retention::prune_state(w, cutoff, &prunable)).await
    }

    /// Every record of a processor's topic that retention kept, in offset
    /// order, as (offset, payload), without a consumer group (tools that read
    /// a topic whole, like `fedistream stats`; works on a read-only log).
    pub async fn topic_records(&self, topic: &str) -> Result<Vec<(u64, String)>, LogError> {
        let t = topic.to_string();
        self.shared
            .with_writer(move |w| {
                let mut stmt = w.conn.prepare("SELECT offset, payload FROM topic_records WHERE topic = ?1 ORDER BY offset")?;
                let rows = stmt.query_map(params![t], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }
}

#[cfg(test)]
mod tests;
