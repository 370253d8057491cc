//! Copies the WAL back into the database on its own thread and connection, so
//! appends never pay for a checkpoint (SQLite's automatic checkpoint runs inside
//! the committing transaction: a latency spike of tens of milliseconds).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{lock, open_conn, Durability, Writer};
use crate::error::LogError;

pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// WAL content past which the checkpointer insists on resetting it (see the loop).
pub(super) const WAL_RESTART_BYTES: u64 = 16 << 20;

impl Checkpointer {
    pub(super) fn start(path: &Path, durability: Durability, writer: Arc<Mutex<Writer>>) -> Result<Self, LogError> {
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
