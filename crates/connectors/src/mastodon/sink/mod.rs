//! The `mastodon` channel: republishes received posts on a target account,
//! exactly once, with edits, deletes and threads.
//!
//! * **Modes.** `repost` publishes a new status rendered from a template plus an
//!   attribution line ([`render`]); `boost` resolves the original on the target
//!   server and boosts it. A boost received in repost mode is boosted too.
//! * **Exactly once.** A durable map in the log's state (namespace
//!   `sink:<channel>:map`, same store as the channel offset): source URI →
//!   target id, event fingerprint and media ids; `id:<instance>|<status id>` →
//!   target id for thread parents. It is consulted before every send and written
//!   right after each successful request. Every POST carries an `Idempotency-Key`
//!   derived from (source URI, channel, event version), which covers a crash
//!   between the POST and the map write for the server's hour; beyond it, `open`
//!   reconciles: it reads the target account's latest `reconcile_depth` statuses
//!   and indexes those carrying the attribution marker, which is consulted too.
//! * **Pacing** ([`pace`]): local windows for posts, deletes and media, and the
//!   shared limiter's `X-RateLimit-*` state; a spent budget is a transient error
//!   with `retry_after`, so the runtime keeps the queue and retries later.
//! * **Start.** The channel republishes what reaches it from its first open
//!   on (and what the sources backfilled into the log): an *edit* of a post it
//!   never published and that was created before its first open (history before
//!   `backfill = "none"`, or before a backfill's bound) is not published as a
//!   new post (counted `skipped`).
//! * **Loop protection.** Posts of the target account and posts carrying the
//!   marker are never republished. Private and direct posts are never
//!   republished either (a mirror must not widen a post's audience).
//! * **Digests** ([`digest`]): with a `digest` table the channel takes an
//!   `account_stats` processor's records and posts a summary per window,
//!   rendered from a template, instead.
//! * **Errors.** 422 → that record is dead-lettered with the server's reason;
//!   401/403 → the channel pauses; network/5xx/429 → retried.
//!
//! Test-only failpoint (builds with the `test-util` feature only): with
//! `FEDISTREAM_FAILPOINT=mastodon_sink_after_post` in
//! the environment (read once in `open`), the process aborts right after a
//! successful POST, before the map write: the crash window reconciliation covers.

mod config;
mod deliver;
pub mod digest;
mod media;
pub mod pace;
pub mod render;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fedistream_core::log::StatePut;
use fedistream_core::{ErrorKind, Log, LogRecord, Sink, SinkContext, SinkError, Status, Written};
use fedistream_process::CompiledFilter;
use serde::{Deserialize, Serialize};

pub use self::config::{DigestConfig, MastodonSinkConfig, MediaMode, Mentions, Mode};
use self::pace::{Pacer, Window};
pub use self::render::MARKER;
use crate::mastodon::client::{ClientConfig, MastodonClient, MastodonError, Page, Secret};
use crate::mastodon::ratelimit::RateLimiters;

/// The failpoint name (see the module docs).
pub const FAILPOINT_AFTER_POST: &str = "mastodon_sink_after_post";
/// Used when the server does not say (Mastodon's default).
const DEFAULT_MAX_CHARACTERS: usize = 500;

/// What the map holds for one source post.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Mapped {
    /// The repost's (or boost wrapper's) id on the target server.
    pub id: String,
    /// Fingerprint of the version published.
    #[serde(default)]
    pub fp: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
    /// For a boost: the boosted post's id on the target server (to unboost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boost_of: Option<String>,
}

/// Why one record was not delivered.
#[derive(Debug)]
pub(crate) enum Failure {
    Remote(MastodonError),
    /// A local budget is spent until then.
    Paced(Duration, &'static str),
    Log(fedistream_core::LogError),
    /// Never deliverable (dead-letter it).
    Reject(String),
}

impl From<MastodonError> for Failure {
    fn from(e: MastodonError) -> Self {
        Failure::Remote(e)
    }
}

impl From<fedistream_core::LogError> for Failure {
    fn from(e: fedistream_core::LogError) -> Self {
        Failure::Log(e)
    }
}

impl Failure {
    fn into_sink_error(self, index: usize) -> SinkError {
        match self {
            Failure::Remote(e) => match e.kind() {
                ErrorKind::Permanent => SinkError::permanent_at(index, format!("the target server refused it: {e}")),
                ErrorKind::Transient => SinkError::transient(e.to_string()).with_retry_after(e.retry_after()),
                kind => SinkError::new(kind, e.to_string()),
            },
            Failure::Paced(d, what) => {
                SinkError::transient(format!("{what} budget spent; resuming in {}s", d.as_secs())).with_retry_after(Some(d))
            }
            Failure::Log(e) => SinkError::new(ErrorKind::Transient, format!("cannot use the channel's map: {e}")),
            Failure::Reject(reason) => SinkError::permanent_at(index, reason),
        }
    }
}

/// What `open` learned.
struct Opened {
    log: Arc<dyn Log>,
    ns: String,
    channel: String,
    status: Status,
    /// `user@domain` of the target account, lower-cased.
    target_acct: String,
    /// The target account's id and profile URL, and the server's `host[:port]`.
    target_id: String,
    target_url: Option<String>,
    target_host: String,
    max_chars: usize,
    /// From reconciliation: source URL/URI → what the target already holds.
    reconciled: HashMap<String, Mapped>,
    failpoint: bool,
    /// When this channel first opened (durable): an edit of a post created
    /// before then that the channel never published is not published as new.
    started_at: DateTime<Utc>,
}

pub struct MastodonSink {
    cfg: MastodonSinkConfig,
    client: MastodonClient,
    filter: CompiledFilter,
    pacer: Pacer,
    opened: Option<Opened>,
}

impl MastodonSink {
    /// Builds the channel for the target server `base_url` and its `token` (the
    /// binary resolves `cfg.connection`); `limiters` is the process-wide registry
    /// so that a source reading with the same token shares its budget. No I/O
    /// until `open`.
    pub fn new(cfg: MastodonSinkConfig, base_url: url::Url, token: Secret, limiters: RateLimiters) -> Result<Self, MastodonError> {
        let client = MastodonClient::new(ClientConfig::new(base_url, Some(token)), &limiters)?;
        let pacer = Pacer {
            posts: Window::new(cfg.posts_per_window, cfg.post_window),
            deletes: Window::new(cfg.deletes_per_window, cfg.delete_window),
            media: Window::new(cfg.media_per_window, cfg.media_window),
        };
        Ok(MastodonSink { filter: cfg.effective_filter().compile(), cfg, client, pacer, opened: None })
    }

    pub fn config(&self) -> &MastodonSinkConfig {
        &self.cfg
    }

    /// Index the target account's latest statuses that carry the attribution
    /// marker (reposts) or boost something (boosts), by source URL and URI.
    async fn reconcile(&self, account_id: &str) -> Result<HashMap<String, Mapped>, MastodonError> {
        let mut index = HashMap::new();
        let mut seen = 0u32;
        let mut page = Page::Latest { limit: 40 };
        while seen < self.cfg.reconcile_depth {
            let p = self.client.account_statuses(account_id, page).await?;
            if p.statuses.is_empty() {
                break;
            }
            let mut last = None;
            for raw in &p.statuses {
                seen += 1;
                let Ok(v) = serde_json::from_str::<serde_json::Value>(raw.get()) else { continue };
                let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
                let Some(id) = s(&v, "id") else { continue };
                last = Some(id.clone());
                if let Some(orig) = v.get("reblog").filter(|r| r.is_object()) {
                    let m = Mapped { id: id.clone(), boost_of: s(orig, "id"), ..Default::default() };
                    for k in ["uri", "url"] {
                        if let Some(u) = s(orig, k) {
                            index.entry(u).or_insert_with(|| m.clone());
                        }
                    }
                } else if let Some(url) = s(&v, "content")
                    .map(|h| fedistream_process::html_to_text(&h))
                    .or_else(|| s(&v, "text"))
                    .and_then(|t| render::parse_attribution(&t))
                {
                    index.entry(url).or_insert(Mapped { id, ..Default::default() });
                }
            }
            match (p.next_max_id.or(last), seen < self.cfg.reconcile_depth) {
                (Some(max_id), true) => page = Page::Before { max_id, limit: 40 },
                _ => break,
            }
        }
        Ok(index)
    }
}

fn open_error(what: &str, e: MastodonError) -> SinkError {
    let kind = e.kind();
    let message = match kind {
        ErrorKind::Auth => format!("{what}: the target server refused the token: {e}"),
        _ => format!("{what}: {e}"),
    };
    let kind = if kind == ErrorKind::Permanent { ErrorKind::Transient } else { kind };
    SinkError::new(kind, message).with_retry_after(e.retry_after())
}

#[async_trait]
impl Sink for MastodonSink {
    async fn open(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        let me = self.client.verify_credentials().await.map_err(|e| open_error("verify_credentials", e))?;
        if !me.raw.get("bot").and_then(|b| b.as_bool()).unwrap_or(false) {
            tracing::warn!(account = %me.acct, "The target account is not marked as a bot; Mastodon asks automated accounts to set the bot flag");
        }
        let instance = self.client.instance().await.map_err(|e| open_error("instance", e))?;
        let target_acct = if me.acct.contains('@') { me.acct.clone() } else { format!("{}@{}", me.username, instance.domain) };
        let reconciled = self.reconcile(&me.id).await.map_err(|e| open_error("reading the target's statuses", e))?;
        let max_chars = instance.max_characters.map_or(DEFAULT_MAX_CHARACTERS, |n| n as usize);
        let started_at = first_open(&*ctx.log, &ctx.name).await?;
        tracing::info!(target = %target_acct, max_chars, reconciled = reconciled.len(), "Mastodon channel ready");
        self.opened = Some(Opened {
            log: ctx.log.clone(),
            ns: format!("sink:{}:map", ctx.name),
            channel: ctx.name.clone(),
            status: ctx.status.clone(),
            target_acct: target_acct.to_lowercase(),
            target_id: me.id.clone(),
            target_url: me.url.clone(),
            target_host: self.client.host(),
            max_chars,
            reconciled,
            // Only in builds with test code (`test-util`): it aborts the process.
            failpoint: cfg!(feature = "test-util") && std::env::var("FEDISTREAM_FAILPOINT").is_ok_and(|v| v == FAILPOINT_AFTER_POST),
            started_at,
        });
        Ok(())
    }

    async fn write(&mut self, batch: &[LogRecord]) -> Result<Written, SinkError> {
        if self.opened.is_none() {
            return Err(SinkError::new(ErrorKind::Internal, "mastodon channel written before open"));
        }
        if self.cfg.digest.is_some() {
            for (i, rec) in batch.iter().enumerate() {
                if let Err(f) = self.handle_digest(rec).await {
                    return Err(f.into_sink_error(i));
                }
            }
            return Ok(Written::done());
        }
        for (i, rec) in batch.iter().enumerate() {
            let ev = match rec.event() {
                Ok(ev) => ev,
                Err(e) => return Err(SinkError::permanent_at(i, e.to_string())),
            };
            if let Err(f) = self.handle(ev).await {
                return Err(f.into_sink_error(i));
            }
        }
        Ok(Written::done())
    }
}

impl Opened {
    async fn get(&self, key: &str) -> Result<Option<Mapped>, Failure> {
        match self.log.state_get(&self.ns, key).await? {
            None => Ok(None),
            Some(v) => Ok(serde_json::from_str(&v).ok()),
        }
    }

    async fn put(&self, puts: Vec<StatePut>) -> Result<(), Failure> {
        Ok(self.log.state_put(puts).await?)
    }
}

/// When the channel `name` first opened, recorded on that first open
/// (namespace `sink:<channel>:meta`, key `started_at`).
async fn first_open(log: &dyn Log, name: &str) -> Result<DateTime<Utc>, SinkError> {
    let ns = format!("sink:{name}:meta");
    let unavailable = |e: fedistream_core::LogError| SinkError::transient(format!("cannot read the channel's start time: {e}"));
    if let Some(v) = log.state_get(&ns, "started_at").await.map_err(unavailable)? {
        if let Ok(t) = DateTime::parse_from_rfc3339(&v) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    let now = Utc::now();
    log.state_put(vec![StatePut::set(&ns, "started_at", now.to_rfc3339())]).await.map_err(unavailable)?;
    Ok(now)
}

fn thread_key(instance: &str, status_id: &str) -> String {
    format!("id:{instance}|{status_id}")
}

#[cfg(test)]
mod tests;
