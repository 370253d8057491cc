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
//! A `503` is not a rate limit: a server that is restarting (GoToSocial answers
//! `503` with `Retry-After: 120` while it starts) is *unavailable*. Requests
//! wait, but one cheap probe may go every [`PROBE_INTERVAL`]
//! ([`RateLimiter::acquire_or_probe`]), and the first answer that is not a 5xx
//! ends the wait, so traffic resumes as soon as the server is back, and at the
//! latest when the asked time is over.
//!
//! Background work (reconciliation) first waits in [`RateLimiter::wait_for_headroom`]:
//! it waits while less than half of the window's budget is left, so it never
//! competes with the catch-up for the last requests of a window. A timeline
//! source does the same with its configured share (`rate_limit_share`): it
//! never takes the part of a window that the account sources on the same
//! (server, token) need.
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
/// While a server is unavailable (503), one probe may go this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);

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
        let key = (host.to_ascii_lowercase(), token.map(|t| self.0.hasher.hash_one(t.expose())));
        let mut map = self.0.limiters.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    }
}

impl std::fmt::Debug for RateLimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.limiters.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("RateLimiters").field("limiters", &n).finish()
    }
}

/// The budget of one (host, token). Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct RateLimiter(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    window: Option<Window>,
    block: Option<Block>,
    /// The server answered 503: wait, probing, until then.
    unavailable: Option<Block>,
    /// When the next probe of an unavailable server may go.
    next_probe: Option<Instant>,
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

/// A hard stop: 429 (or a 503's Retry-After, in `unavailable`).
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
        if let Some(b) = self.unavailable.filter(|b| b.until > now) {
            at = at.max(Some(b.until));
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

/// What [`RateLimiter::acquire_or_probe`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Send the request (it has been counted).
    Go,
    /// The server is unavailable: send one cheap probe (not the request), feed
    /// its answer to [`RateLimiter::observe`], and ask again.
    Probe,
}

impl RateLimiter {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Like [`acquire`](Self::acquire), but while the server is unavailable
    /// (503) the first caller at each [`PROBE_INTERVAL`] gets [`Grant::Probe`]
    /// instead of waiting for the end of the asked time. Cancel-safe.
    pub async fn acquire_or_probe(&self) -> Grant {
        loop {
            let until = {
                let mut st = self.state();
                let now = Instant::now();
                if st.unavailable.is_some_and(|b| b.until > now) {
                    let probe_at = st.next_probe.unwrap_or(now);
                    if probe_at <= now {
                        st.next_probe = Some(now + PROBE_INTERVAL);
                        return Grant::Probe;
                    }
                    let until = st.unavailable.map_or(probe_at, |b| b.until.min(probe_at));
                    Some(until)
                } else {
                    None
                }
            };
            match until {
                // Woken early when a probe succeeds: the next check sees it.
                Some(t) => tokio::time::sleep_until(t.min(Instant::now() + Duration::from_millis(250))).await,
                None => {
                    self.acquire().await;
                    return Grant::Go;
                }
            }
        }
    }

    /// For background work and shared budgets, before
    /// [`acquire_or_probe`](Self::acquire_or_probe): wait while no more than
    /// `reserve` (a fraction, e.g. 0.5) of the window's budget is left (until
    /// its reset), so that what is left stays for the other users of this
    /// limiter. Counts nothing.
    pub async fn wait_for_headroom(&self, reserve: f64) {
        loop {
            let until = {
                let st = self.state();
                let now = Instant::now();
                st.window.filter(|w| w.reset_at > now).and_then(|w| {
                    let kept = w.limit.map_or(PACE_BELOW_WITHOUT_LIMIT, |l| (f64::from(l) * reserve.clamp(0.0, 1.0)).round() as u32);
                    (w.remaining <= kept).then_some(w.reset_at + RESET_MARGIN)
                })
            };
            match until {
                Some(t) => {
                    tracing::debug!(
                        wait_ms = t.saturating_duration_since(Instant::now()).as_millis() as u64,
                        reserve,
                        "Waiting for the next rate-limit window (the rest of this one is left to others)"
                    );
                    tokio::time::sleep_until(t).await;
                }
                None => return,
            }
        }
    }

    /// Until when the server asked us to stay away with a 503, while it does.
    pub fn unavailable_until(&self) -> Option<DateTime<Utc>> {
        let st = self.state();
        st.unavailable.filter(|b| b.until > Instant::now()).map(|b| b.until_wall)
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
            let ahead = (wall - now_wall).to_std().unwrap_or(Duration::ZERO).min(MAX_WAIT);
            now + ahead
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let limit = header("x-ratelimit-limit").and_then(|v| v.parse::<u32>().ok());
        let remaining = header("x-ratelimit-remaining").and_then(|v| v.parse::<u32>().ok());
        let reset = header("x-ratelimit-reset").and_then(|v| {
            // Whole Unix seconds (GoToSocial) are truncated: the window may end
            // anywhere in that second, so wait it out.
            let coarse = v.len() >= 10 && v.bytes().all(|b| b.is_ascii_digit());
            parse_reset(v, now_wall).map(|t| if coarse { t + chrono::Duration::seconds(1) } else { t })
        });
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(v, now_wall));

        let mut st = self.state();
        if let (Some(remaining), Some(reset_wall)) = (remaining, reset) {
            let remaining = if status == 429 { 0 } else { remaining };
            let new = Window { limit, remaining, reset_at: to_instant(reset_wall), reset_wall };
            st.window = Some(match st.window {
                // Responses can arrive out of order: within one window trust the
                // lowest count seen.
                Some(old) if abs_diff(old.reset_at, new.reset_at) < SAME_WINDOW && old.reset_at > now => {
                    Window { remaining: old.remaining.min(new.remaining), ..new }
                }
                _ => new,
            });
        }
        if status == 429 {
            let until_wall = reset
                .filter(|r| *r > now_wall)
                .or(retry_after)
                .unwrap_or_else(|| now_wall + chrono::Duration::from_std(DEFAULT_BLOCK).unwrap_or_default());
            let until = to_instant(until_wall);
            if st.block.is_none_or(|b| b.until < until) {
                st.block = Some(Block { until, until_wall });
            }
            tracing::warn!(status, until = %until_wall, "Rate limited by the server");
        }
        match (status, retry_after) {
            // Keep the first asked time: every answer of a restarting server
            // asks again from its own now, which would never end.
            (503, Some(until_wall)) if st.unavailable.is_none_or(|b| b.until <= now) => {
                let until = to_instant(until_wall);
                st.unavailable = Some(Block { until, until_wall });
                st.next_probe = Some(now + PROBE_INTERVAL);
                let secs = (until_wall - now_wall).num_seconds().max(0);
                tracing::warn!(
                    retry_after_s = secs,
                    probe_every_s = PROBE_INTERVAL.as_secs(),
                    "Server unavailable (it asked to retry after {secs} s); probing until it is back"
                );
            }
            (s, _) if s < 500 => {
                if st.unavailable.take().is_some_and(|b| b.until > now) {
                    tracing::info!(status, "Server available again");
                }
                st.next_probe = None;
            }
            _ => {}
        }
    }

    /// Until when requests are held back entirely (429, or a spent budget), if
    /// that is in the future. An unavailable server (503) is not a block: it is
    /// probed ([`unavailable_until`](Self::unavailable_until)).
    pub fn blocked_until(&self) -> Option<DateTime<Utc>> {
        let st = self.state();
        let now = Instant::now();
        let block = st.block.filter(|b| b.until > now).map(|b| b.until_wall);
        let spent = st.window.filter(|w| w.remaining == 0 && w.reset_at > now).map(|w| w.reset_wall);
        block.max(spent)
    }

    /// Time left until [`blocked_until`](Self::blocked_until), if blocked.
    pub fn blocked_for(&self) -> Option<Duration> {
        let st = self.state();
        let now = Instant::now();
        let block = st.block.filter(|b| b.until > now).map(|b| b.until);
        let spent = st.window.filter(|w| w.remaining == 0 && w.reset_at > now).map(|w| w.reset_at);
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
    DateTime::parse_from_rfc2822(value).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests;
