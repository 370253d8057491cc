//! What the write API remembers beside the statuses themselves: tokens of
//! publishing accounts, idempotency keys, uploads, per-account throttles of the
//! posting, delete and media families, and counters tests assert on.
//!
//! The throttles are fixed, epoch-aligned windows like Mastodon's `RateLimiter`
//! and Rack::Attack: the window index is `now / period` in whole seconds, and the
//! advertised reset is `now + (period - now % period)`, which keeps the request's
//! sub-second part (fixture `rest_post_status_exchange.json`: `15:00:00.071450Z`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::state::{lock, Shared};
use super::types::{Flavor, UploadedMedia};

/// How long Mastodon keeps `idempotency:status:<account>:<key>` in Redis.
pub(crate) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(3600);

/// The throttled families of write requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    /// Creating statuses, boosts and edits (RateLimiter family `statuses`).
    Statuses,
    /// Deletes and unreblogs (Rack::Attack `throttle_api_delete`).
    Deletes,
    /// Uploads (Rack::Attack `throttle_api_media`).
    Media,
}

/// One throttle's state after a request.
#[derive(Clone, Debug)]
pub(crate) struct Limit {
    pub limit: u32,
    pub remaining: u32,
    pub reset: DateTime<Utc>,
    /// The request was refused (the window was already full).
    pub throttled: bool,
}

/// An upload and who owns it.
pub(crate) struct Upload {
    pub account_id: String,
    pub media: UploadedMedia,
    /// `image`, `gifv`, `video`, `audio`.
    pub kind: String,
    pub focus: Option<(f64, f64)>,
    /// 206 answers left before the upload counts as processed.
    pub polls_left: u32,
    /// The status it is attached to (then it can no longer be shown or updated).
    pub attached_to: Option<String>,
}

#[derive(Default)]
pub(crate) struct Ledger {
    /// (account id, key) → (status id, when remembered).
    pub idempotency: HashMap<(String, String), (String, Instant)>,
    /// Source text of statuses posted over HTTP, for `DELETE` responses.
    pub source_text: HashMap<String, String>,
    pub uploads: HashMap<String, Upload>,
    /// Per account id: statuses created with `POST /api/v1/statuses`.
    pub posts_created: HashMap<String, usize>,
    /// Per account id: ids of its statuses removed (any way), oldest first.
    pub deleted: HashMap<String, Vec<String>>,
    /// Per status id: edits (over HTTP or with `FakeMastodon::edit`).
    pub edits: HashMap<String, usize>,
    /// (family, account id) → (window index, requests counted in it).
    windows: HashMap<(Family, String), (i64, u32)>,
    pub failing_downloads: usize,
    /// The time the write limits count in, when a test holds it still
    /// ([`super::FakeMastodon::set_limit_clock`]); the real clock otherwise.
    pub limit_clock: Option<DateTime<Utc>>,
}

impl Ledger {
    /// The status remembered for this key, forgetting it if older than an hour.
    pub fn idempotent(&mut self, account_id: &str, key: &str) -> Option<String> {
        let slot = (account_id.to_owned(), key.to_owned());
        match self.idempotency.get(&slot) {
            Some((id, at)) if at.elapsed() < IDEMPOTENCY_TTL => Some(id.clone()),
            Some(_) => {
                self.idempotency.remove(&slot);
                None
            }
            None => None,
        }
    }

    /// Counts a request against `family` unless the window is already full.
    /// `None` if the family is not throttled.
    pub fn take(&mut self, cfg: Option<(u32, Duration)>, family: Family, account_id: &str) -> Option<Limit> {
        self.count(cfg, family, account_id, true)
    }

    /// The family's state without counting anything.
    pub fn peek(&mut self, cfg: Option<(u32, Duration)>, family: Family, account_id: &str) -> Option<Limit> {
        self.count(cfg, family, account_id, false)
    }

    fn count(&mut self, cfg: Option<(u32, Duration)>, family: Family, account_id: &str, record: bool) -> Option<Limit> {
        let (limit, window) = cfg?;
        let now = self.limit_clock.unwrap_or_else(Utc::now);
        let period = i64::try_from(window.as_secs()).unwrap_or(i64::MAX).max(1);
        let secs = now.timestamp();
        let index = secs.div_euclid(period);
        // The window's end: the next multiple of the period since the epoch.
        let reset = DateTime::from_timestamp(index.saturating_add(1).saturating_mul(period), 0).unwrap_or(now);
        let entry = self.windows.entry((family, account_id.to_owned())).or_insert((index, 0));
        if entry.0 != index {
            *entry = (index, 0);
        }
        let throttled = record && entry.1 >= limit;
        if record && !throttled {
            entry.1 += 1;
        }
        Some(Limit { limit, remaining: limit.saturating_sub(entry.1), reset, throttled })
    }
}

impl Shared {
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// The configured limit of a family.
    pub fn family_cfg(&self, family: Family) -> Option<(u32, Duration)> {
        match family {
            Family::Statuses => self.cfg.posting_limit,
            Family::Deletes => self.cfg.delete_limit,
            Family::Media => self.cfg.media_limit,
        }
    }

    /// The username a token belongs to, for write endpoints: a token added with
    /// `add_token`, or the configured reader token (unless revoked).
    pub fn token_owner(&self, token: &str) -> Option<String> {
        if let Some(username) = lock(&self.tokens).get(token) {
            return Some(username.clone());
        }
        let reader = self.cfg.token.as_deref() == Some(token) && !self.faults().revoked;
        reader.then(|| "reader".to_owned())
    }

    pub fn format_reset(&self, t: DateTime<Utc>) -> String {
        match self.cfg.flavor {
            Flavor::Mastodon => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            Flavor::GoToSocial => t.timestamp().to_string(),
        }
    }
}

/// Sets `X-RateLimit-*` from `limit`. The guard later replaces them with the
/// general throttle's only if that one has fewer requests left.
pub(crate) fn set_headers(shared: &Shared, response: &mut Response, limit: &Limit) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", limit.limit.to_string()),
        ("x-ratelimit-remaining", limit.remaining.to_string()),
        ("x-ratelimit-reset", shared.format_reset(limit.reset)),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}
