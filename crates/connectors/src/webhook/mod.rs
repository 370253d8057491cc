//! The `webhook` channel: POSTs each record to an HTTP endpoint — as the JSON
//! line the file channel writes (optionally `batch` of them as a JSON array),
//! or rendered as a Discord or Slack incoming-webhook message ([`render`]).
//!
//! * **Signature.** With `secret_env`, every request carries
//!   `X-Fedistream-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!   ([`client::sign`]); the timestamp is the attempt's, so receivers can
//!   refuse old replays. The secret is never logged.
//! * **Idempotency.** `Idempotency-Key` is derived from what the request
//!   carries (an event's key, kind and version fingerprint — plus the counts
//!   and their observation time for a counts refresh, so successive refreshes
//!   of one version are kept apart; a batch's items' keys), the same on every
//!   attempt and after a restart, so a receiver that remembers keys gets each
//!   event once although delivery is at-least-once.
//! * **Concurrency and order.** Up to `delivery.max_in_flight` requests (4 by
//!   default) are in flight; a request waits until every earlier request
//!   carrying an event of the same account was answered (delivered or
//!   refused), so one account's events arrive in log order. The sink answers
//!   [`Written::Pending`] and acknowledges through the [`Acker`] only up to the
//!   oldest request still open, so offsets are committed in log order.
//! * **Retries** (in the sink: its writes are acknowledged later, so the
//!   runtime's retry of a failed write does not apply): 5xx, 408, 425, 429,
//!   timeouts and connection errors are retried with capped, jittered backoff
//!   (`delivery.retry_initial`, `retry_max`); a `Retry-After` (seconds or an
//!   HTTP date; Discord's JSON `retry_after`) on 429/503 holds *every* request
//!   of the channel until then (up to `max_retry_after`), and so does
//!   Discord's `X-RateLimit-Remaining: 0` for `X-RateLimit-Reset-After`.
//!   401/403 pause the request for `delivery.pause` (a rotated secret must not
//!   dead-letter everything). Any other answer (4xx, 3xx) dead-letters the
//!   request's records with the status and the start of the response body.
//! * **Presets.** Discord and Slack get one message per created or edited
//!   post; deletions, boosts' removals and refreshes of a post's counts
//!   (`updated` events marked `counts_refresh`, from the engagement refresh:
//!   not edits) have no message (skipped, counted `skipped`); records that
//!   are not posts are dead-lettered.

pub mod client;
pub mod config;
pub mod render;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fedistream_core::backoff::Backoff;
use fedistream_core::event::Position;
use fedistream_core::{Acker, ErrorKind, EventKind, LogRecord, Sink, SinkContext, SinkError, Status, Written};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, warn};

use self::client::{digest_key, Client, Outcome, Request};
pub use self::client::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
pub use self::config::{WebhookFormat, WebhookSinkConfig};
use crate::mastodon::client::Secret;

/// The `component` label of the channel's metrics.
const COMPONENT: &str = "webhook";

pub struct WebhookSink {
    cfg: WebhookSinkConfig,
    client: Arc<Client>,
    permits: Arc<Semaphore>,
    /// What this open of the channel shares with its delivery tasks.
    shared: Option<Arc<Shared>>,
    tasks: JoinSet<()>,
    /// Per ordering key (account), the answer of its latest request.
    tails: HashMap<String, watch::Receiver<bool>>,
}

impl WebhookSink {
    /// Resolves the URL and secret from the environment (errors name the
    /// variable, never its value) and builds the HTTP client; no network I/O.
    pub fn new(cfg: WebhookSinkConfig) -> Result<Self, String> {
        if let Some(p) = cfg.validate(true).into_iter().next() {
            return Err(format!("{}: {}", p.key, p.reason));
        }
        let url = match (&cfg.url, &cfg.url_env) {
            (Some(u), _) => config::parse_url(u)?,
            (None, Some(var)) => {
                let raw = Secret::from_env(var).map_err(|e| format!("url_env: {e}"))?;
                config::parse_url(raw.expose())
                    .map_err(|e| format!("url_env: the environment variable {var} does not hold a usable URL: {e}"))?
            }
            (None, None) => return Err("url: no url".into()),
        };
        let secret = match &cfg.secret_env {
            // Any bytes make an HMAC key (no token syntax check); used as set.
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                Ok(_) => return Err(format!("secret_env: the environment variable {var} is empty")),
                Err(std::env::VarError::NotPresent) => return Err(format!("secret_env: the environment variable {var} is not set")),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("secret_env: the environment variable {var} is not valid UTF-8"))
                }
            },
            None => None,
        };
        let client = Client::new(url, secret, cfg.timeout)?;
        Ok(WebhookSink {
            permits: Arc::new(Semaphore::new(cfg.max_in_flight().max(1))),
            cfg,
            client: Arc::new(client),
            shared: None,
            tasks: JoinSet::new(),
            tails: HashMap::new(),
        })
    }

    pub fn config(&self) -> &WebhookSinkConfig {
        &self.cfg
    }

    /// Stop every request of a previous open (the runtime delivers their
    /// records again) and forget their order.
    fn abandon(&mut self) {
        self.tasks.abort_all();
        self.tails.clear();
        self.shared = None;
        // Aborted tasks give their permits back when dropped; a fresh
        // semaphore does not wait for that.
        self.permits = Arc::new(Semaphore::new(self.cfg.max_in_flight().max(1)));
    }

    fn reap(&mut self) {
        while let Some(r) = self.tasks.try_join_next() {
            if let Err(e) = r {
                if e.is_panic() {
                    error!(error = %e, "A webhook delivery task panicked; its records stay unacknowledged until the channel restarts");
                }
            }
        }
        if self.tails.len() > 4096 {
            self.tails.retain(|_, rx| !*rx.borrow());
        }
    }

    /// Turn a batch into requests (or immediate answers) in log order.
    fn plan(&self, batch: &[LogRecord]) -> Vec<Planned> {
        match (self.cfg.format, self.cfg.batch) {
            (WebhookFormat::Json, Some(n)) => batch
                .chunks(n.max(1))
                .map(|chunk| {
                    let mut body = Vec::with_capacity(chunk.iter().map(|r| r.payload.len() + 40).sum::<usize>() + 2);
                    body.push(b'[');
                    let mut keys = Vec::with_capacity(chunk.len());
                    let mut accounts = Vec::new();
                    for (i, r) in chunk.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        // Writing into a Vec cannot fail.
                        let _ = r.write_json_line(&mut body);
                        let (key, account) = identity(r);
                        keys.push(key);
                        accounts.push(account);
                    }
                    body.push(b']');
                    accounts.sort();
                    accounts.dedup();
                    let key = digest_key(keys.iter().map(String::as_str));
                    Planned::Send {
                        req: Request { body: Bytes::from(body), idempotency_key: key },
                        positions: chunk.iter().map(|r| r.position).collect(),
                        accounts,
                    }
                })
                .collect(),
            (WebhookFormat::Json, None) => batch
                .iter()
                .map(|r| {
                    let (key, account) = identity(r);
                    Planned::Send {
                        req: Request { body: Bytes::from(r.to_json_line()), idempotency_key: key },
                        positions: vec![r.position],
                        accounts: vec![account],
                    }
                })
                .collect(),
            (format, _) => batch.iter().map(|r| plan_preset(format, r)).collect(),
        }
    }
}

/// The idempotency key of one record and the key its order is kept by: for
/// an event, its key, kind and version fingerprint (and, for a refresh of
/// the counts, the counts and when they were observed: two refreshes of one
/// version are two events), and its account; for any other record (a
/// processor's output), its payload and its partition.
fn identity(r: &LogRecord) -> (String, String) {
    match r.event() {
        Ok(ev) if ev.counts_refresh => {
            let counts =
                ev.post.as_ref().map(|p| &p.counts).map(|c| {
                    format!("{} {} {} {} {}", c.replies, c.reblogs, c.favourites, c.observed_at.timestamp_micros(), c.observed_by)
                });
            let parts = [ev.key.as_str(), ev.kind.as_str(), &ev.fingerprint(), "counts", counts.as_deref().unwrap_or("")];
            (digest_key(parts), ev.account.clone())
        }
        Ok(ev) => (digest_key([ev.key.as_str(), ev.kind.as_str(), &ev.fingerprint()]), ev.account.clone()),
        Err(_) => (digest_key([&*r.payload]), format!("partition:{}", r.position.partition)),
    }
}

fn plan_preset(format: WebhookFormat, r: &LogRecord) -> Planned {
    let ev = match r.event() {
        Ok(ev) => ev,
        Err(e) => {
            return Planned::Reject(r.position, format!("format = \"{}\" renders posts; this record is not one: {e}", format.as_str()))
        }
    };
    let post = match (&ev.kind, &ev.post) {
        // A refresh of the counts is no edit: no "(edited)" message.
        (EventKind::Updated, Some(_)) if ev.counts_refresh => return Planned::Skip(r.position),
        (EventKind::Created | EventKind::Updated, Some(p)) => p,
        _ => return Planned::Skip(r.position),
    };
    let msg = match format {
        WebhookFormat::Discord => render::discord(ev, post),
        _ => render::slack(ev, post),
    };
    let (key, account) = identity(r);
    Planned::Send {
        req: Request { body: Bytes::from(msg.to_string()), idempotency_key: key },
        positions: vec![r.position],
        accounts: vec![account],
    }
}

enum Planned {
    Send {
        req: Request,
        positions: Vec<Position>,
        accounts: Vec<String>,
    },
    /// Nothing to send (a deletion, for a preset): delivered as it is.
    Skip(Position),
    /// Never deliverable: dead-letter it.
    Reject(Position, String),
}

/// Which records are given to the sink and not answered yet, per partition.
#[derive(Default)]
struct Tracker {
    open: HashMap<u32, BTreeSet<u64>>,
    given: HashMap<u32, u64>,
    acked: HashMap<u32, u64>,
}

impl Tracker {
    fn add(&mut self, p: Position) {
        self.open.entry(p.partition).or_default().insert(p.offset);
        let g = self.given.entry(p.partition).or_insert(p.offset);
        *g = (*g).max(p.offset);
    }

    /// These are answered: how far each of their partitions is durable now
    /// (only what moved forward).
    fn finish(&mut self, done: &[Position]) -> Vec<Position> {
        let mut parts: Vec<u32> = done.iter().map(|p| p.partition).collect();
        parts.sort_unstable();
        parts.dedup();
        for p in done {
            if let Some(s) = self.open.get_mut(&p.partition) {
                s.remove(&p.offset);
            }
        }
        parts
            .into_iter()
            .filter_map(|part| {
                let upto = match self.open.get(&part).and_then(|s| s.first()) {
                    Some(0) => return None,
                    Some(&oldest) => oldest - 1,
                    None => *self.given.get(&part)?,
                };
                if self.acked.get(&part).is_some_and(|&a| a >= upto) {
                    return None;
                }
                self.acked.insert(part, upto);
                Some(Position { partition: part, offset: upto })
            })
            .collect()
    }
}

/// What one open of the channel shares with its delivery tasks.
struct Shared {
    client: Arc<Client>,
    tracker: Mutex<Tracker>,
    acks: Acker,
    status: Status,
    /// No request before this (a server's Retry-After or spent rate limit).
    gate: Mutex<Option<Instant>>,
    retry_initial: Duration,
    retry_max: Duration,
    pause: Duration,
    max_retry_after: Duration,
    format: &'static str,
}

impl Shared {
    fn track(&self, positions: &[Position]) {
        let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        for p in positions {
            t.add(*p);
        }
    }

    /// Records answered: rejected ones go to the dead letters first, then the
    /// durable mark moves (under the lock, so marks never go backwards and a
    /// rejection always arrives before the mark covering it).
    fn complete(&self, positions: &[Position], rejected: Option<&str>) {
        let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = rejected {
            for p in positions {
                self.acks.reject(*p, reason);
            }
        }
        let upto = t.finish(positions);
        if !upto.is_empty() {
            self.acks.durable(upto, Vec::new());
        }
    }

    /// Hold every request of the channel for `d`.
    fn hold(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut g = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none_or(|t| t < until) {
            *g = Some(until);
        }
    }

    async fn wait_gate(&self) {
        loop {
            let until = *self.gate.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// Send until the server accepts or refuses for good; the refusal's reason.
    async fn send(&self, req: &Request) -> Option<String> {
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        let mut failing = false;
        loop {
            self.wait_gate().await;
            let (delay, reason, state) = match self.client.send(req).await {
                Outcome::Delivered { pause } => {
                    if let Some(p) = pause {
                        self.hold(p);
                    }
                    if failing && self.status.state() != "running" {
                        self.status.set_state("running", None);
                    }
                    metrics::counter!("fedistream_webhook_requests_total", "component" => COMPONENT, "format" => self.format, "outcome" => "delivered").increment(1);
                    return None;
                }
                Outcome::Refused { reason } => {
                    metrics::counter!("fedistream_webhook_requests_total", "component" => COMPONENT, "format" => self.format, "outcome" => "refused").increment(1);
                    warn!(reason = %reason, "Webhook refused a request; its records are dead-lettered");
                    return Some(reason);
                }
                Outcome::Retry { reason, after } => {
                    let d = match after {
                        Some(a) => {
                            let a = a.min(self.max_retry_after);
                            self.hold(a);
                            a
                        }
                        None => backoff.next_delay(),
                    };
                    (d, reason, "retrying")
                }
                Outcome::Auth { reason } => (self.pause, reason, "paused"),
            };
            failing = true;
            metrics::counter!("fedistream_webhook_requests_total", "component" => COMPONENT, "format" => self.format, "outcome" => "retried").increment(1);
            warn!(reason = %reason, retry_in = ?delay, "Webhook request failed; retrying");
            self.status.set_state(state, Some(format!("{reason}; retrying in {}", humanize(delay))));
            self.status.count("retries", 1);
            tokio::time::sleep(delay).await;
        }
    }
}

fn humanize(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// One request's task: after the account's earlier requests, send it, answer its records.
async fn deliver(
    shared: Arc<Shared>,
    req: Request,
    positions: Vec<Position>,
    before: Vec<watch::Receiver<bool>>,
    done: watch::Sender<bool>,
    permit: OwnedSemaphorePermit,
) {
    for mut b in before {
        // An error means the earlier task is gone (aborted with this one).
        let _ = b.wait_for(|answered| *answered).await;
    }
    let refused = shared.send(&req).await;
    shared.complete(&positions, refused.as_deref());
    let _ = done.send(true);
    drop(permit);
}

#[async_trait]
impl Sink for WebhookSink {
    async fn open(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        self.abandon();
        let d = &self.cfg.delivery;
        self.shared = Some(Arc::new(Shared {
            client: self.client.clone(),
            tracker: Mutex::new(Tracker::default()),
            acks: ctx.acks.clone(),
            status: ctx.status.clone(),
            gate: Mutex::new(None),
            retry_initial: d.retry_initial,
            retry_max: d.retry_max,
            pause: d.pause,
            max_retry_after: self.cfg.max_retry_after,
            format: self.cfg.format.as_str(),
        }));
        tracing::info!(
            url = %self.client.shown(),
            format = self.cfg.format.as_str(),
            max_in_flight = self.cfg.max_in_flight(),
            signed = self.cfg.secret_env.is_some(),
            "Webhook channel ready"
        );
        Ok(())
    }

    async fn write(&mut self, batch: &[LogRecord]) -> Result<Written, SinkError> {
        let Some(shared) = self.shared.clone() else {
            return Err(SinkError::new(ErrorKind::Internal, "webhook channel written before open"));
        };
        self.reap();
        // From here on nothing fails: every record is sent, skipped or
        // rejected, and answered through the acker.
        for planned in self.plan(batch) {
            match planned {
                Planned::Skip(p) => {
                    shared.track(&[p]);
                    shared.status.count("skipped", 1);
                    shared.complete(&[p], None);
                }
                Planned::Reject(p, reason) => {
                    shared.track(&[p]);
                    shared.complete(&[p], Some(&reason));
                }
                Planned::Send { req, positions, accounts } => {
                    // Back-pressure: wait for room before taking more records.
                    let permit = match self.permits.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return Err(SinkError::new(ErrorKind::Internal, "webhook permits closed")),
                    };
                    shared.track(&positions);
                    let before: Vec<_> = accounts.iter().filter_map(|a| self.tails.get(a).cloned()).collect();
                    let (done, answered) = watch::channel(false);
                    for a in accounts {
                        self.tails.insert(a, answered.clone());
                    }
                    self.tasks.spawn(deliver(shared.clone(), req, positions, before, done, permit));
                }
            }
        }
        Ok(Written::Pending)
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                if e.is_panic() {
                    return Err(SinkError::new(ErrorKind::Internal, format!("a webhook delivery task panicked: {e}")));
                }
            }
        }
        self.tails.clear();
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.abandon();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
