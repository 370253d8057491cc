//! Client-side rate limiting for the Mastodon client API.
//!
//! Mastodon (and GoToSocial) describe their throttles in `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset`; the reset is an ISO 8601
//! timestamp with microseconds on Mastodon and Unix seconds on GoToSocial. A
//! [`RateLimiter`] learns from those headers ([`RateLimiter::observe`]) and makes
//! callers wait before the next request ([`RateLimiter::acquire`]): never before a
//! known reset once the budget is spent or a 429 arrived, and paced (the remaining
//! budget spread evenly until the reset) once less than half the budget is left.
//! [`RateLimiters`] is the process-wide registry handing out one limiter per
//! (host, token), because the server counts per token or per IP, not per client.
//!
//! This module only decides *when* a request may go; classifying failures and
//! retrying is left to the caller and the runtime.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::client::Secret;

/// Extra wait after a reset, for clock skew between us and the server.
const RESET_MARGIN: Duration = Duration::from_millis(500);
/// How long a 429 blocks when the server said neither reset nor Retry-After.
const DEFAULT_BLOCK: Duration = Duration::from_secs(30);
/// Upper bound for any wait we derive from headers (garbage dates must not park
/// a client for years).
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Resets closer than this belong to the same fixed window: Mastodon's reset
/// carries the request's microseconds, so it jitters within one window.
const SAME_WINDOW: Duration = Duration::from_secs(2);
/// Below this many remaining requests we pace when the limit is unknown.
const PACE_BELOW_WITHOUT_LIMIT: u32 = 20;

/// Process-wide registry: one [`RateLimiter`] per (host, token-or-anonymous).
/// Tokens are identified by a keyed hash (random key per registry); the token
/// itself is never stored here.
#[derive(Clone, Default)]
pub struct RateLimiters(Arc<Registry>);

#[derive(Default)]
struct Registry {
    hasher: RandomState,
    limiters: Mutex<HashMap<(String, Option<u64>), RateLimiter>>,
}

impl RateLimiters {
    pub fn new() -> Self {
        Self::default()
    }

    /// The limiter shared by every client of `host` using `token` (or none).
    pub fn get(&self, host: &str, token: Option<&Secret>) -> RateLimiter {
        let key = (
            host.to_ascii_lowercase(),
            token.map(|t| self.0.hasher.hash_one(t.expose())),
        );
        let mut map = self.0.limiters.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    }
}

impl std::fmt::Debug for RateLimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.limiters.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("RateLimiters")
            .field("limiters", &n)
            .finish()
    }
}

/// The budget of one (host, token). Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct RateLimiter(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    window: Option<Window>,
    block: Option<Block>,
    last_sent: Option<Instant>,
}

/// The throttle window the server last described.
#[derive(Debug, Clone, Copy)]
struct Window {
    limit: Option<u32>,
    remaining: u32,
    reset_at: Instant,
    reset_wall: DateTime<Utc>,
}

/// A hard stop: 429, or Retry-After on 503.
#[derive(Debug, Clone, Copy)]
struct Block {
    until: Instant,
    until_wall: DateTime<Utc>,
}

impl State {
    /// When the next request may go, or `None` for now.
    fn ready_at(&self, now: Instant) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        if let Some(b) = self.block.filter(|b| b.until > now) {
            at = Some(b.until);
        }
        if let Some(w) = self.window.filter(|w| w.reset_at > now) {
            let wait = if w.remaining == 0 {
                Some(w.reset_at + RESET_MARGIN)
            } else if w.remaining <= w.limit.map_or(PACE_BELOW_WITHOUT_LIMIT, |l| l / 2) {
                // Spread what is left evenly over the rest of the window.
                let interval = (w.reset_at - now) / w.remaining;
                self.last_sent.map(|t| t + interval).filter(|t| *t > now)
            } else {
                None
            };
            at = at.max(wait);
        }
        at
    }

    /// Account for a request that is being sent now.
    fn commit(&mut self, now: Instant) {
        self.last_sent = Some(now);
        if let Some(w) = self.window.as_mut().filter(|w| w.reset_at > now) {
            w.remaining = w.remaining.saturating_sub(1);
        }
    }
}

impl RateLimiter {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until a request may be sent, then count it. Cancel-safe: nothing is
    /// counted unless this returns.
    pub async fn acquire(&self) {
        loop {
            let until = {
                let mut st = self.state();
                let now = Instant::now();
                match st.ready_at(now) {
                    None => {
                        st.commit(now);
                        return;
                    }
                    Some(t) => t,
                }
            };
            let wait_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64;
            tracing::debug!(wait_ms, "Waiting for the rate limit");
            tokio::time::sleep_until(until).await;
        }
    }

    /// Learn from a response's headers (any status).
    pub fn observe(&self, headers: &HeaderMap, status: u16) {
        self.observe_at(headers, status, Utc::now());
    }

    /// [`observe`](Self::observe) with the wall clock passed in (tests, replays).
    pub fn observe_at(&self, headers: &HeaderMap, status: u16, now_wall: DateTime<Utc>) {
        let now = Instant::now();
        let to_instant = |wall: DateTime<Utc>| {
            let ahead = (wall - now_wall)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_WAIT);
            now + ahead
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let limit = header("x-ratelimit-limit").and_then(|v| v.parse::<u32>().ok());
        let remaining = header("x-ratelimit-remaining").and_then(|v| v.parse::<u32>().ok());
        let reset = header("x-ratelimit-reset").and_then(|v| {
            // Whole Unix seconds (GoToSocial) are truncated: the window may end
            // anywhere in that second, so wait it out.
            let coarse = v.len() >= 10 && v.bytes().all(|b| b.is_ascii_digit());
            parse_reset(v, now_wall).map(|t| {
                if coarse {
                    t + chrono::Duration::seconds(1)
                } else {
                    t
                }
            })
        });
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(v, now_wall));

        let mut st = self.state();
        if let (Some(remaining), Some(reset_wall)) = (remaining, reset) {
            let remaining = if status == 429 { 0 } else { remaining };
            let new = Window {
                limit,
                remaining,
                reset_at: to_instant(reset_wall),
                reset_wall,
            };
            st.window = Some(match st.window {
                // Responses can arrive out of order: within one window trust the
                // lowest count seen.
                Some(old)
                    if abs_diff(old.reset_at, new.reset_at) < SAME_WINDOW && old.reset_at > now =>
                {
                    Window {
                        remaining: old.remaining.min(new.remaining),
                        ..new
                    }
                }
                _ => new,
            });
        }
        let block_wall = match status {
            429 => Some(
                reset
                    .filter(|r| *r > now_wall)
                    .or(retry_after)
                    .unwrap_or_else(|| {
                        now_wall + chrono::Duration::from_std(DEFAULT_BLOCK).unwrap_or_default()
                    }),
            ),
            503 => retry_after,
            _ => None,
        };
        if let Some(until_wall) = block_wall {
            let until = to_instant(until_wall);
            if st.block.is_none_or(|b| b.until < until) {
                st.block = Some(Block { until, until_wall });
            }
            tracing::warn!(status, until = %until_wall, "Rate limited by the server");
        }
    }

    /// Until when requests are held back entirely (429, Retry-After, or a spent
    /// budget), if that is in the future.
    pub fn blocked_until(&self) -> Option<DateTime<Utc>> {
        let st = self.state();
        let now = Instant::now();
        let block = st.block.filter(|b| b.until > now).map(|b| b.until_wall);
        let spent = st
            .window
            .filter(|w| w.remaining == 0 && w.reset_at > now)
            .map(|w| w.reset_wall);
        block.max(spent)
    }

    /// Time left until [`blocked_until`](Self::blocked_until), if blocked.
    pub fn blocked_for(&self) -> Option<Duration> {
        let st = self.state();
        let now = Instant::now();
        let block = st.block.filter(|b| b.until > now).map(|b| b.until);
        let spent = st
            .window
            .filter(|w| w.remaining == 0 && w.reset_at > now)
            .map(|w| w.reset_at);
        block.max(spent).map(|t| t - now)
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state();
        f.debug_struct("RateLimiter")
            .field("remaining", &st.window.map(|w| w.remaining))
            .field("reset", &st.window.map(|w| w.reset_wall))
            .field("blocked_until", &st.block.map(|b| b.until_wall))
            .finish()
    }
}

fn abs_diff(a: Instant, b: Instant) -> Duration {
    if a > b {
        a - b
    } else {
        b - a
    }
}

/// Parse `X-RateLimit-Reset`: RFC 3339 / ISO 8601 (Mastodon, with or without
/// fraction; a missing offset is read as UTC), or a number of seconds — Unix
/// seconds (GoToSocial) when it looks like an epoch (≥ 10⁹), otherwise seconds
/// from `now`. Anything else is `None`.
pub fn parse_reset(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let v = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = v.parse().ok()?;
    if !secs.is_finite() || secs > 1e11 {
        return None;
    }
    if secs >= 1e9 {
        DateTime::from_timestamp_millis((secs * 1000.0) as i64)
    } else {
        Some(now + chrono::Duration::milliseconds((secs * 1000.0) as i64))
    }
}

/// `Retry-After`: delay seconds or an HTTP date.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(now + chrono::Duration::seconds(secs.min(MAX_WAIT.as_secs()) as i64));
    }
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests;
