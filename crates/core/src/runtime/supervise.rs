//! Shutdown signals for component tasks, and the supervisor that restarts a
//! failed component with backoff.
//!
//! Every component task (source, processor, channel) runs under
//! [`supervise`]: when it fails with a retryable error (the log's disk was
//! full, a broker went away, a read failed) it is shown as `failed` — with the
//! reason and since when — in the status and the log, and started again after a
//! capped, jittered backoff; when it fails with an error restarting cannot fix
//! (configuration, corruption, a bug) it stays `failed`, and the run ends with
//! a non-zero exit code.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::RetryConfig;
use crate::backoff::Backoff;
use crate::component::Status;
use crate::error::{ComponentError, ErrorKind, SinkError};

/// How a task learns it must stop: `stop` at the drain deadline, and
/// `draining` once its input cannot grow any more (shutdown, or finite sources
/// done and, for topics processors write, every processor done).
#[derive(Clone)]
pub(crate) struct Halt {
    pub(crate) stop: CancellationToken,
    pub(crate) draining: watch::Receiver<bool>,
    pub(crate) drain: Duration,
    pub(crate) closed: bool,
}

impl Halt {
    pub(crate) fn draining(&self) -> bool {
        self.closed || *self.draining.borrow()
    }

    /// Wait `d` before retrying. False when stopped, or when draining and the
    /// wait would outlast the drain deadline: the records stay in the log for
    /// the next start instead of holding the shutdown up.
    pub(crate) async fn sleep(&mut self, d: Duration) -> bool {
        let end = tokio::time::Instant::now() + d;
        loop {
            if self.draining() && end.saturating_duration_since(tokio::time::Instant::now()) > self.drain {
                info!(wait = ?d, "Not waiting past the drain deadline; undelivered records resume on the next start");
                return false;
            }
            let watching = !self.draining();
            tokio::select! {
                _ = tokio::time::sleep_until(end) => return true,
                _ = self.stop.cancelled() => return false,
                r = self.draining.changed(), if watching => {
                    if r.is_err() {
                        self.closed = true;
                    }
                }
            }
        }
    }
}

/// Restarts a component after retryable failures, with backoff:
///
/// ```ignore
/// let mut sup = Supervisor::new(&status, &retry);
/// let result = loop {
///     let r = run_once(&mut component).await;
///     if let Some(end) = sup.after(r, &mut halt).await { break end }
/// };
/// ```
pub(crate) struct Supervisor<'a> {
    status: &'a Status,
    backoff: Backoff,
    max: Duration,
    started: tokio::time::Instant,
}

impl<'a> Supervisor<'a> {
    pub(crate) fn new(status: &'a Status, retry: &RetryConfig) -> Self {
        Supervisor {
            status,
            backoff: Backoff::new(retry.initial.max(Duration::from_millis(100)), retry.max),
            max: retry.max,
            started: tokio::time::Instant::now(),
        }
    }

    /// After one run: `Some(result)` ends the component (it finished, or failed
    /// in a way restarting cannot fix, or the run is stopping); `None` means it
    /// was restarted after a backoff: run it again.
    pub(crate) async fn after(&mut self, result: Result<(), ComponentError>, halt: &mut Halt) -> Option<Result<(), ComponentError>> {
        let e = match result {
            Ok(()) => return Some(Ok(())),
            Err(e) => e,
        };
        self.status.set_state("failed", Some(e.message.clone()));
        if !e.is_retryable() {
            error!(component = %e.component, kind = e.kind.as_str(), error = %e.message, "Component failed and cannot recover by restarting; the others go on");
            return Some(Err(e));
        }
        if self.started.elapsed() > self.max {
            // It worked for a while: this is a new problem, start the backoff over.
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        error!(component = %e.component, error = %e.message, restart_in = ?delay, "Component failed; restarting it");
        self.status.count("restarts", 1);
        self.status.set_resumes_at(Some(chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()));
        if !halt.sleep(delay).await {
            return Some(Err(e));
        }
        self.status.set_resumes_at(None);
        self.started = tokio::time::Instant::now();
        None
    }
}

/// After a sink error: pause (auth/config) or back off (transient). False when
/// stopped meanwhile.
pub(crate) async fn wait_after_error(pause: Duration, status: &Status, e: &SinkError, backoff: &mut Backoff, halt: &mut Halt) -> bool {
    let delay = match e.kind {
        ErrorKind::Auth | ErrorKind::Config => {
            error!(error = %e, kind = e.kind.as_str(), pause = ?pause, "Channel paused: fix the credentials or configuration");
            status.set_state("paused", Some(e.message.clone()));
            pause
        }
        _ => {
            let d = e.retry_after.unwrap_or_else(|| backoff.next_delay());
            warn!(error = %e, retry_in = ?d, attempt = backoff.attempts(), "Delivery failed; will retry");
            status.set_state("retrying", Some(e.message.clone()));
            d
        }
    };
    status.count("retries", 1);
    metrics::counter!("fedistream_channel_errors_total", "component" => "channel", "kind" => e.kind.as_str()).increment(1);
    status.set_resumes_at(Some(chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()));
    halt.sleep(delay).await
}
