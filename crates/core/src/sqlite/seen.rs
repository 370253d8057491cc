//! The dedup index (the `seen` state namespace) in its own tables.
//!
//! The ingestor writes one `seen[uri] = fingerprint` entry per appended event,
//! and looks up every incoming URI. In the generic `state` table those rows
//! cost about a fifth of a core in the pipeline benchmark: the keys are URI text
//! (~60 bytes) inserted at random places of a B-tree of 32 KiB pages, so every
//! transaction dirtied (and wrote to the WAL, and later checkpointed) nearly
//! every page of the index — as many bytes as the events themselves.
//!
//! Here the namespace is stored transparently (the `Log` trait does not change):
//!
//! * keys are the 128-bit xxh3 hash of the URI (16-byte BLOB), values (the
//!   fingerprints, 16 hex digits) an 8-byte INTEGER — other values stay TEXT;
//! * new entries are *appended* to `seen_recent` (rowid order: one or two pages
//!   per transaction), in the same transaction as the events, and mirrored in an
//!   in-memory map of at most [`MERGE_AT`] entries that the writer reloads on open;
//! * once the map is full, its entries are merged into `seen` (a `WITHOUT ROWID`
//!   table keyed by the hash) in key order, in one transaction of their own, and
//!   `seen_recent` is emptied: each page of the index is then written at most once
//!   per merge instead of once per append.
//!
//! A lookup reads the map (or, for a read-only handle, `seen_recent`) and then
//! `seen`. Databases of the old layout (`user_version` 0, entries in `state`) are
//! migrated when a writer opens them; a read-only handle on an unmigrated file
//! reads the old rows.

use std::collections::HashMap;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::LogError;

/// The namespace stored here rather than in `state`.
pub(super) const NS: &str = crate::runtime::SEEN_NS;

/// Entries kept in `seen_recent` (and in memory) before they are merged into `seen`.
pub(super) const MERGE_AT: usize = 32_768;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS seen (
    h   BLOB PRIMARY KEY,  -- xxh3-128 of the key (status URI), big-endian
    fp  NOT NULL,          -- INTEGER for a 16-hex-digit fingerprint, else TEXT
    day INTEGER NOT NULL DEFAULT 0 -- days since the epoch of the merge that wrote it (pruning)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_recent (
    id INTEGER PRIMARY KEY,
    h  BLOB NOT NULL,
    fp NOT NULL
);
";

pub(super) type Hash = [u8; 16];

pub(super) fn hash(key: &str) -> Hash {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes()).to_be_bytes()
}

/// A stored value: fingerprints (16 lower-case hex digits) as their 64-bit number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Hex(i64),
    Text(Box<str>),
}

impl Value {
    pub(super) fn encode(v: &str) -> Value {
        if v.len() == 16 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            if let Ok(n) = u64::from_str_radix(v, 16) {
                return Value::Hex(n as i64);
            }
        }
        Value::Text(v.into())
    }

    pub(super) fn decode(&self) -> String {
        match self {
            Value::Hex(n) => format!("{:016x}", *n as u64),
            Value::Text(s) => s.to_string(),
        }
    }

    fn from_sql(v: ValueRef<'_>) -> Result<Value, LogError> {
        match v {
            ValueRef::Integer(n) => Ok(Value::Hex(n)),
            ValueRef::Text(t) => {
                Ok(Value::Text(std::str::from_utf8(t).map_err(|e| LogError::Internal(format!("seen index value: {e}")))?.into()))
            }
            other => Err(LogError::Internal(format!("seen index value of type {:?}", other.data_type()))),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Hex(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// How this handle stores the namespace.
pub(super) enum Layout {
    /// An unmigrated database opened read-only: the entries are rows of `state`.
    Legacy,
    /// `seen` + `seen_recent`. `recent` mirrors `seen_recent` on the writer; a
    /// read-only handle (`None`) reads the table instead.
    Indexed { recent: Option<HashMap<Hash, Value>> },
}

/// A change made by a transaction, applied to the in-memory map once it commits.
pub(super) type Staged = Vec<(Hash, Option<Value>)>;

/// Bring the writer's database to this layout (inside the caller's transaction,
/// which `super::migrate` runs; `previous` is the layout version of an existing
/// file, `None` for a new one) and load `seen_recent`.
pub(super) fn open_writer(tx: &Transaction<'_>, previous: Option<i64>) -> Result<Layout, LogError> {
    if previous == Some(1) {
        tx.execute_batch(&format!("ALTER TABLE seen ADD COLUMN day INTEGER NOT NULL DEFAULT {}", today()))?;
    }
    tx.execute_batch(SCHEMA)?;
    if previous == Some(0) {
        migrate_from_state(tx)?;
    }
    let mut recent = HashMap::new();
    let mut stmt = tx.prepare("SELECT h, fp FROM seen_recent ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        recent.insert(hash_of(row.get_ref(0)?)?, Value::from_sql(row.get_ref(1)?)?);
    }
    Ok(Layout::Indexed { recent: Some(recent) })
}

fn today() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(86_400)
}

/// The layout of a database opened read-only.
pub(super) fn open_read_only(conn: &Connection) -> Result<Layout, LogError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(if version >= 1 { Layout::Indexed { recent: None } } else { Layout::Legacy })
}

/// Layout 0 → 1: move the `seen` rows of `state` into `seen`, in key order.
fn migrate_from_state(tx: &Transaction<'_>) -> Result<(), LogError> {
    let mut rows: Vec<(Hash, Value)> = {
        let mut stmt = tx.prepare("SELECT key, value FROM state WHERE ns = ?1")?;
        let rows = stmt.query_map(params![NS], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|r| r.map(|(k, v)| (hash(&k), Value::encode(&v)))).collect::<Result<_, _>>()?
    };
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_by_key(|r| r.0);
    let mut ins = tx.prepare("INSERT OR REPLACE INTO seen (h, fp, day) VALUES (?1, ?2, ?3)")?;
    let day = today();
    for (h, v) in &rows {
        ins.execute(params![&h[..], v, day])?;
    }
    tx.execute("DELETE FROM state WHERE ns = ?1", params![NS])?;
    tracing::info!(entries = rows.len(), "Moved the dedup index to its own table");
    Ok(())
}

fn hash_of(v: ValueRef<'_>) -> Result<Hash, LogError> {
    v.as_blob().ok().and_then(|b| Hash::try_from(b).ok()).ok_or_else(|| LogError::Internal("seen index key is not a 16-byte hash".into()))
}

/// Write one entry (`None`: delete) inside the caller's transaction; returns what
/// to apply to the in-memory map after the commit.
pub(super) fn put(tx: &Transaction<'_>, layout: &Layout, key: &str, value: Option<&str>, staged: &mut Staged) -> Result<(), LogError> {
    if let Layout::Legacy = layout {
        return Err(LogError::Internal("the log has not been migrated yet (opened read-only)".into()));
    }
    let h = hash(key);
    match value {
        Some(v) => {
            let v = Value::encode(v);
            tx.prepare_cached("INSERT INTO seen_recent (h, fp) VALUES (?1, ?2)")?.execute(params![&h[..], &v])?;
            staged.push((h, Some(v)));
        }
        None => {
            tx.prepare_cached("DELETE FROM seen WHERE h = ?1")?.execute(params![&h[..]])?;
            tx.prepare_cached("DELETE FROM seen_recent WHERE h = ?1")?.execute(params![&h[..]])?;
            staged.push((h, None));
        }
    }
    Ok(())
}

/// After the transaction that wrote `staged` committed.
pub(super) fn committed(layout: &mut Layout, staged: Staged) {
    if let Layout::Indexed { recent: Some(recent) } = layout {
        for (h, v) in staged {
            match v {
                Some(v) => recent.insert(h, v),
                None => recent.remove(&h),
            };
        }
    }
}

/// Look keys up; missing keys are absent from the result.
pub(super) fn get_many<'k>(
    conn: &Connection,
    layout: &Layout,
    keys: impl IntoIterator<Item = &'k String>,
) -> Result<HashMap<String, String>, LogError> {
    let mut out = HashMap::new();
    // One read transaction for all of them: each statement outside one takes
    // and releases SQLite's file locks (fcntl) on its own.
    let tx = conn.unchecked_transaction()?;
    let conn: &Connection = &tx;
    match layout {
        Layout::Legacy => {
            let mut stmt = conn.prepare_cached("SELECT value FROM state WHERE ns = ?1 AND key = ?2")?;
            for k in keys {
                if let Some(v) = stmt.query_row(params![NS, k], |r| r.get::<_, String>(0)).optional()? {
                    out.insert(k.clone(), v);
                }
            }
        }
        Layout::Indexed { recent } => {
            let mut merged = conn.prepare_cached("SELECT fp FROM seen WHERE h = ?1")?;
            for k in keys {
                let h = hash(k);
                let found = match recent {
                    Some(map) => map.get(&h).cloned(),
                    None => lookup(&mut conn.prepare_cached("SELECT fp FROM seen_recent WHERE h = ?1 ORDER BY id DESC LIMIT 1")?, &h)?,
                };
                let found = match found {
                    Some(v) => Some(v),
                    None => lookup(&mut merged, &h)?,
                };
                if let Some(v) = found {
                    out.insert(k.clone(), v.decode());
                }
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

fn lookup(stmt: &mut rusqlite::CachedStatement<'_>, h: &Hash) -> Result<Option<Value>, LogError> {
    let mut rows = stmt.query(params![&h[..]])?;
    match rows.next()? {
        Some(row) => Ok(Some(Value::from_sql(row.get_ref(0)?)?)),
        None => Ok(None),
    }
}

/// Once `seen_recent` holds [`MERGE_AT`] entries: move them into `seen`, in key
/// order, in one transaction. A failure leaves everything as it was.
pub(super) fn maybe_merge(conn: &mut Connection, layout: &mut Layout) -> Result<(), LogError> {
    let Layout::Indexed { recent: Some(recent) } = layout else { return Ok(()) };
    if recent.len() < MERGE_AT {
        return Ok(());
    }
    let mut entries: Vec<(&Hash, &Value)> = recent.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let tx = conn.transaction()?;
    {
        let mut ins = tx.prepare_cached("INSERT OR REPLACE INTO seen (h, fp, day) VALUES (?1, ?2, ?3)")?;
        let day = today();
        for (h, v) in entries {
            ins.execute(params![&h[..], v, day])?;
        }
    }
    tx.execute("DELETE FROM seen_recent", [])?;
    tx.commit()?;
    recent.clear();
    Ok(())
}

/// Remove merged entries last written before `cutoff` (their day of merge).
/// Entries still in `seen_recent` are newer than any sensible horizon and stay.
pub(super) fn prune(conn: &mut Connection, layout: &mut Layout, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, LogError> {
    if let Layout::Legacy = layout {
        return Ok(0);
    }
    let day = cutoff.timestamp().div_euclid(86_400);
    Ok(conn.execute("DELETE FROM seen WHERE day < ?1", params![day])? as u64)
}
