//! Local posting budgets: Mastodon limits an account to 300 posts, boosts and
//! edits per 3 hours, 30 deletes per 30 minutes and 30 media uploads per 30
//! minutes, and answers 429 past them. The channel counts its own actions in
//! fixed windows and, when one is spent, tells the runtime to come back when it
//! frees (the runtime keeps the queue in the log: nothing is dropped, nothing
//! bursts). The server's `X-RateLimit-*` headers are followed by the client's
//! shared limiter; this covers what the headers only reveal once it is too late.
//!
//! Counts live in memory: after a restart a window starts afresh, and the
//! server's 429 (with its reset) is the backstop.

use std::time::{Duration, Instant};

/// One budget: at most `limit` actions per `len`, in a window that starts with
/// its first action.
#[derive(Debug, Clone)]
pub struct Window {
    limit: u32,
    len: Duration,
    started: Option<Instant>,
    used: u32,
}

impl Window {
    pub fn new(limit: u32, len: Duration) -> Self {
        Window { limit: limit.max(1), len, started: None, used: 0 }
    }

    fn roll(&mut self, now: Instant) {
        if self.started.is_some_and(|s| now.saturating_duration_since(s) >= self.len) {
            self.started = None;
            self.used = 0;
        }
    }

    /// `Ok` when an action may go now, else how long until the window frees.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.roll(now);
        match self.started {
            Some(s) if self.used >= self.limit => Err((s + self.len).saturating_duration_since(now).max(Duration::from_millis(1))),
            _ => Ok(()),
        }
    }

    /// Count one action done at `now`.
    pub fn take(&mut self, now: Instant) {
        self.roll(now);
        if self.started.is_none() {
            self.started = Some(now);
        }
        self.used += 1;
    }

    pub fn used(&self) -> u32 {
        self.used
    }
}

/// The three budgets of one target account.
#[derive(Debug, Clone)]
pub struct Pacer {
    pub posts: Window,
    pub deletes: Window,
    pub media: Window,
}
