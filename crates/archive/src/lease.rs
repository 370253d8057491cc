//! One `fedistream archive compact` at a time per dataset: a lease object,
//! `<dataset>/_compaction.lease`, naming its owner and when it expires.
//!
//! * **Taking it**: a PUT with `PutMode::Create` (put-if-absent: a hard link
//!   on a local disk, `If-None-Match: *` on S3/MinIO), so of two runs only one
//!   stores it. The other reads it and fails with an error naming the holder
//!   and the expiry.
//! * **A stale lease** (past its expiry: its run died, or hung longer than the
//!   lease; or, on the same host, its process is gone) is taken over: the taker first stores a marker
//!   `_compaction.takeover.<token of the stale lease>` with put-if-absent —
//!   of several runs taking over the same stale lease only one stores it —
//!   then overwrites the lease with its own. Only `PutMode::Create` is needed,
//!   which every store the archive supports has (a local disk cannot replace
//!   an object conditionally).
//! * **Held**: the run checks the lease is still its own (and extends it)
//!   between its steps, and stops before switching readers when it is not.
//! * **Released** at the end (deleted, when it is still ours), also after an
//!   error; after a crash it expires.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use fedistream_core::{ErrorKind, SinkError};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::store::Archive;

/// The lease's name inside a dataset directory.
pub const LEASE: &str = "_compaction.lease";
/// The prefix of takeover markers' names.
pub const TAKEOVER: &str = "_compaction.takeover.";

/// What the lease object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it (`fedistream archive compact`, or a test's name).
    pub owner: String,
    /// The holder's host and process: on the same host, a lease whose process
    /// is gone is stale at once (a crashed or killed run), not only once expired.
    pub host: String,
    pub pid: u32,
    /// Unique per acquisition: tells this run's lease from a later one of the same owner.
    pub token: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A held lease; [`LeaseGuard::release`] gives it back.
#[derive(Debug)]
pub struct LeaseGuard {
    archive: Archive,
    path: Path,
    lease: Lease,
    ttl: Duration,
    /// The takeover marker this run stored (deleted on release).
    marker: Option<Path>,
}

fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Whether process `pid` of this host still runs (Linux: /proc; elsewhere
/// unknown, so `true`: the lease's expiry decides).
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl Lease {
    /// Past its expiry, or held by a process of this host that is gone.
    pub fn stale(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now || (self.host == host() && self.pid != std::process::id() && !alive(self.pid))
    }

    /// `OWNER (HOST, pid N)`.
    pub fn holder(&self) -> String {
        format!("{} ({}, pid {})", self.owner, self.host, self.pid)
    }
}

fn held_error(archive: &Archive, dataset: &str, l: &Lease) -> SinkError {
    SinkError::new(
        ErrorKind::Config,
        format!(
            "archive {}: a compaction of `{dataset}` is running: the lease {dataset}/{LEASE} is held by {} since {} until {} \
             (a run that died on another host leaves it until then; it is taken over once expired)",
            archive.display,
            l.holder(),
            l.acquired_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            l.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
}

async fn read(archive: &Archive, path: &Path) -> Result<Option<Lease>, SinkError> {
    let bytes = match archive.store.get(path).await {
        Ok(r) => r.bytes().await.map_err(|e| archive.error("read", path, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(archive.error("read", path, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        SinkError::new(ErrorKind::Config, format!("archive {}: {path} is not a fedistream compaction lease: {e}", archive.display))
    })
}

fn payload(l: &Lease) -> Result<PutPayload, SinkError> {
    let json = serde_json::to_vec_pretty(l).map_err(|e| SinkError::new(ErrorKind::Internal, e.to_string()))?;
    Ok(PutPayload::from(Bytes::from(json)))
}

fn create() -> PutOptions {
    PutOptions { mode: PutMode::Create, ..Default::default() }
}

/// Take the lease of `dataset` for `ttl`, as `owner`.
pub async fn acquire(archive: &Archive, dataset: &str, owner: &str, ttl: Duration) -> Result<LeaseGuard, SinkError> {
    let path = archive.path(&format!("{dataset}/{LEASE}"));
    let ttl_c = chrono::Duration::from_std(ttl).map_err(|e| SinkError::new(ErrorKind::Config, format!("lease duration: {e}")))?;
    // A few rounds: the holder may release between our attempt and our read.
    for _ in 0..5 {
        let now = Utc::now();
        let mine = Lease {
            owner: owner.to_string(),
            host: host(),
            pid: std::process::id(),
            token: token(),
            acquired_at: now,
            expires_at: now + ttl_c,
        };
        match archive.store.put_opts(&path, payload(&mine)?, create()).await {
            Ok(_) => {
                tracing::info!(dataset, owner, expires_at = %mine.expires_at, "Compaction lease taken");
                return Ok(LeaseGuard { archive: archive.clone(), path, lease: mine, ttl, marker: None });
            }
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(archive.error("write", &path, e)),
        }
        let Some(held) = read(archive, &path).await? else { continue };
        if !held.stale(Utc::now()) {
            return Err(held_error(archive, dataset, &held));
        }
        // Stale: of the runs taking it over, the one that stores the marker wins.
        let marker = archive.path(&format!("{dataset}/{TAKEOVER}{}", held.token));
        match archive.store.put_opts(&marker, payload(&mine)?, create()).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                let now_held = read(archive, &path).await?.unwrap_or(held);
                return Err(held_error(archive, dataset, &now_held));
            }
            Err(e) => return Err(archive.error("write", &marker, e)),
        }
        archive.store.put(&path, payload(&mine)?).await.map_err(|e| archive.error("write", &path, e))?;
        tracing::warn!(dataset, owner, stale_holder = %held.holder(), expires_at = %held.expires_at,
            "Compaction lease taken over: the previous holder's lease had expired, or its process is gone");
        return Ok(LeaseGuard { archive: archive.clone(), path, lease: mine, ttl, marker: Some(marker) });
    }
    Err(SinkError::new(
        ErrorKind::Transient,
        format!("archive {}: the compaction lease of `{dataset}` kept changing hands; try again", archive.display),
    ))
}

impl LeaseGuard {
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Check the lease is still ours and extend it by its duration; an error
    /// when another run took it over (ours had expired).
    pub async fn renew(&mut self) -> Result<(), SinkError> {
        match read(&self.archive, &self.path).await? {
            Some(l) if l.token == self.lease.token => {}
            other => {
                let who = other.map(|l| l.holder()).unwrap_or_else(|| "nobody (it was deleted)".into());
                return Err(SinkError::new(
                    ErrorKind::Internal,
                    format!(
                        "archive {}: this run lost the compaction lease {} (it expired at {}; now held by {who}); stopped before switching readers",
                        self.archive.display, self.path, self.lease.expires_at
                    ),
                ));
            }
        }
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::hours(1));
        self.lease.expires_at = Utc::now() + ttl;
        self.archive.store.put(&self.path, payload(&self.lease)?).await.map_err(|e| self.archive.error("write", &self.path, e))?;
        Ok(())
    }

    /// Give the lease back (delete it when it is still ours).
    pub async fn release(self) -> Result<(), SinkError> {
        if let Some(m) = &self.marker {
            match self.archive.store.delete(m).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.archive.error("delete", m, e)),
            }
        }
        if read(&self.archive, &self.path).await?.is_some_and(|l| l.token == self.lease.token) {
            match self.archive.store.delete(&self.path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.archive.error("delete", &self.path, e)),
            }
        }
        tracing::info!(lease = %self.path, "Compaction lease released");
        Ok(())
    }
}
