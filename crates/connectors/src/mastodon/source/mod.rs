//! The lossless Mastodon source.
//!
//! For each followed account the profile timeline over REST is the source of
//! truth: it is paged forward from a durable checkpoint at start, after every
//! stream (re)connect, on an adaptive poll schedule when there is no stream, and
//! on a safety interval when there is one. When a reader token is configured,
//! the reader's `user` (or `list`) stream is a low-latency hint: a followed
//! account's `update` is emitted at once, `status.update` becomes an update and
//! `delete` a deletion (attributed through the id index). Stream and REST
//! deliveries of the same post are deduplicated by the runtime's ingestor (by
//! URI and version), and only REST advances checkpoints, so a stream that drops
//! events can never make the source skip them.
//!
//! Consent is on by default: public posts only (unlisted when opted in, private
//! and direct never), and accounts flagged noindex or carrying #nobot / #noindex /
//! #nobridge in their bio are skipped unless the source declares them `owned`.

mod catchup;
pub mod config;
pub mod convert;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fedistream_core::backoff::Backoff;
use fedistream_core::post::Via;
use fedistream_core::{
    DeadLetter, Emitter, ErrorKind, EventKind, Progress, Source, SourceBatch, SourceContext, SourceError, Status,
};
use fedistream_process::consent::ConsentPolicy;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use config::{parse_acct, parse_base_url, Backfill, MastodonSourceConfig, StreamMode};
use convert::{checkpoint_key, deleted_event, ids_key, Converted, Converter, CHECKPOINT_NS, IDS_NS};

use crate::mastodon::client::{ClientConfig, MastodonClient, Secret, USER_AGENT};
use crate::mastodon::ratelimit::RateLimiters;
use crate::mastodon::stream::{spawn_stream, StreamConfig, StreamEvent, StreamName};

/// The reader account whose stream carries hints: a base URL and its token.
#[derive(Clone)]
pub struct ReaderConnection {
    pub base_url: url::Url,
    pub token: Secret,
}

pub struct MastodonSource {
    cfg: MastodonSourceConfig,
    reader: Option<ReaderConnection>,
    limiters: RateLimiters,
}

impl MastodonSource {
    /// Builds the source; no I/O until `run`. `limiters` is shared process-wide so
    /// that every source reading one server paces against one budget.
    pub fn new(cfg: MastodonSourceConfig, reader: Option<ReaderConnection>, limiters: RateLimiters) -> Self {
        MastodonSource { cfg, reader, limiters }
    }
}

/// What catch-up tasks share.
pub(crate) struct Shared {
    pub(crate) name: String,
    emitter: Emitter,
    status: Status,
    dead_letter: DeadLetter,
    progress: Option<Arc<dyn Progress>>,
    policy: ConsentPolicy,
    backfill: Backfill,
    followed: HashSet<String>,
    known_ids: HashMap<String, HashMap<String, String>>,
    /// State reads (the dedup index, for the safety re-read).
    log: Arc<dyn fedistream_core::Log>,
}

impl Shared {
    fn converter(&self) -> Converter<'_> {
        Converter { source: &self.name, policy: &self.policy, followed: &self.followed, known_ids: &self.known_ids }
    }
    async fn emit(&self, batch: SourceBatch) -> Result<(), SourceError> {
        if batch.events.is_empty() && batch.state.is_empty() {
            return Ok(());
        }
        let n = batch.events.len() as u64;
        let s = self.emitter.emit(batch).await?;
        self.status.count("received", n);
        if s.appended > 0 {
            self.status.saw_event();
        }
        Ok(())
    }
    fn skipped(&self, reason: &'static str) {
        self.status.count(&format!("skipped_{reason}"), 1);
        metrics::counter!("fedistream_posts_skipped_total", "component" => "mastodon", "reason" => reason).increment(1);
    }
    fn malformed(&self, reason: &str, raw: &str) {
        warn!(%reason, "Malformed payload; dead-lettered");
        self.status.count("malformed", 1);
        metrics::counter!("fedistream_payloads_malformed_total", "component" => "mastodon").increment(1);
        if let Err(e) = self.dead_letter.raw(&self.name, reason, raw) {
            error!(error = %e, path = %self.dead_letter.path().display(), "Cannot write the dead-letter file");
        }
    }
    fn progress_start(&self, label: &str, total: Option<u64>) {
        if let Some(p) = &self.progress {
            p.start(label, total)
        }
    }
    fn progress_advance(&self, label: &str, n: u64) {
        if let Some(p) = &self.progress {
            p.advance(label, n)
        }
    }
    fn progress_finish(&self, label: &str) {
        if let Some(p) = &self.progress {
            p.finish(label)
        }
    }
}

/// Schedule of one followed account.
struct Account {
    acct: String,
    username: String,
    client: MastodonClient,
    account_id: Option<String>,
    checkpoint_key: String,
    checkpoint: Option<String>,
    interval: Duration,
    due: Instant,
    safety_due: Instant,
    running: bool,
    rerun: bool,
    backoff: Backoff,
}

fn src_err(kind: ErrorKind, msg: impl Into<String>) -> SourceError {
    SourceError::new(kind, msg)
}

#[async_trait]
impl Source for MastodonSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let cfg = self.cfg;
        let client_for = |base: url::Url, token: Option<Secret>| {
            MastodonClient::new(
                ClientConfig { base_url: base, token, user_agent: USER_AGENT.to_string(), timeout: Duration::from_secs(30) },
                &self.limiters,
            )
            .map_err(|e| src_err(ErrorKind::Config, e.to_string()))
        };
        let reader_client = match &self.reader {
            Some(r) => Some(client_for(r.base_url.clone(), Some(r.token.clone()))?),
            None => None,
        };
        let override_base = cfg.instance.as_deref().map(parse_base_url).transpose().map_err(|e| src_err(ErrorKind::Config, e))?;

        // Followed accounts, their home-server clients and durable checkpoints.
        let mut accounts: Vec<Account> = Vec::new();
        let mut followed = HashSet::new();
        let mut clients: HashMap<String, MastodonClient> = HashMap::new();
        let now = Instant::now();
        for raw in &cfg.accounts {
            let (user, host) = parse_acct(raw).map_err(|e| src_err(ErrorKind::Config, e))?;
            let acct = format!("{user}@{host}").to_ascii_lowercase();
            if !followed.insert(acct.clone()) {
                continue;
            }
            let base = match &override_base {
                Some(b) => b.clone(),
                None => parse_base_url(&format!("https://{host}")).map_err(|e| src_err(ErrorKind::Config, e))?,
            };
            // The reader's token also serves REST on its own server (higher limits,
            // limited-federation servers); elsewhere we read anonymously. One
            // client (connection pool, TLS setup) per server, not per account.
            let client = match (&reader_client, &self.reader) {
                (Some(rc), Some(r)) if r.base_url.host_str() == base.host_str() && r.base_url.port() == base.port() => rc.clone(),
                _ => match clients.get(base.as_str()) {
                    Some(c) => MastodonClient::clone(c),
                    None => {
                        let c = client_for(base.clone(), None)?;
                        clients.insert(base.to_string(), c.clone());
                        c
                    }
                },
            };
            let key = checkpoint_key(&ctx.name, &client.host(), &acct);
            let checkpoint = ctx.log.state_get(CHECKPOINT_NS, &key).await?;
            accounts.push(Account {
                acct,
                username: user,
                client,
                account_id: None,
                checkpoint_key: key,
                checkpoint,
                interval: cfg.poll_interval,
                due: now,
                safety_due: now + cfg.safety_interval,
                running: false,
                rerun: false,
                backoff: Backoff::new(Duration::from_secs(2), cfg.max_poll_interval),
            });
        }
        if accounts.is_empty() {
            return Err(src_err(ErrorKind::Config, "no accounts to follow"));
        }

        // The reader: check the token once, learn its server's ids of our accounts
        // (stream payloads use them), and open the stream.
        let mut known_ids: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut stream_rx = None;
        let reader_host = reader_client.as_ref().map(|c| c.host());
        if let (Some(rc), Some(transport)) = (&reader_client, cfg.stream.transport()) {
            match rc.verify_credentials().await {
                Ok(me) => info!(reader = %me.acct, server = %rc.host(), "Reader token accepted"),
                Err(e) if e.kind() == ErrorKind::Auth => {
                    return Err(src_err(ErrorKind::Auth, format!("the reader token for {} was rejected: {e}", rc.host())));
                }
                Err(e) => warn!(error = %e, "Cannot check the reader token now; the stream will retry"),
            }
            let rhost = rc.host();
            for a in &accounts {
                let lookup = if a.client.host() == rhost { a.username.clone() } else { a.acct.clone() };
                match rc.lookup_account(&lookup).await {
                    Ok(found) => {
                        known_ids.entry(rhost.clone()).or_default().insert(found.id.clone(), a.acct.clone());
                    }
                    Err(e) => debug!(acct = %a.acct, error = %e, "Reader's server does not know this account yet; attributing stream posts by handle"),
                }
            }
            let instance = rc.instance().await.ok();
            let scfg = StreamConfig {
                transport,
                stream: match &cfg.list {
                    Some(l) => StreamName::List(l.clone()),
                    None => StreamName::User,
                },
                sse_idle_timeout: cfg.sse_idle_timeout,
                ws_idle_timeout: cfg.ws_idle_timeout,
                backoff_initial: cfg.reconnect_initial,
                backoff_max: cfg.reconnect_max,
                streaming_base: instance.and_then(|i| i.streaming_url),
            };
            stream_rx = Some(spawn_stream(rc.clone(), scfg, ctx.shutdown.clone()));
        }
        // Same-server accounts share ids between REST and stream.
        for a in accounts.iter_mut() {
            if let Some(ids) = known_ids.get(&a.client.host()) {
                a.account_id = ids.iter().find(|(_, acct)| **acct == a.acct).map(|(id, _)| id.clone());
            }
        }

        let sh = Arc::new(Shared {
            name: ctx.name.clone(),
            emitter: ctx.emitter.clone(),
            status: ctx.status.clone(),
            dead_letter: ctx.dead_letter.clone(),
            progress: ctx.progress.clone(),
            policy: ConsentPolicy { allow_unlisted: cfg.include_unlisted, owned: cfg.owned },
            backfill: cfg.backfill.clone(),
            followed,
            known_ids,
            log: ctx.log.clone(),
        });
        let status = ctx.status.clone();
        status.set_state(if stream_rx.is_some() { "connecting" } else { "polling" }, None);
        info!(accounts = accounts.len(), streaming = stream_rx.is_some(), "Mastodon source started");

        let mut tasks: JoinSet<(usize, Result<catchup::Done, catchup::JobError>)> = JoinSet::new();
        let mut streaming = false;
        let concurrency = cfg.concurrency.max(1);
        loop {
            let next_due = accounts.iter().filter(|a| !a.running).map(|a| a.due).min();
            let can_start = tasks.len() < concurrency;
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                ev = async { stream_rx.as_mut().expect("guarded").recv().await }, if stream_rx.is_some() => {
                    match ev {
                        None => { stream_rx = None; streaming = false; }
                        Some(StreamEvent::Connected { transport }) => {
                            info!(?transport, "Stream connected; catching up over REST");
                            streaming = true;
                            status.set_state("streaming", Some(format!("{transport:?}")));
                            status.count("stream_connects", 1);
                            let now = Instant::now();
                            for a in accounts.iter_mut() {
                                if a.running { a.rerun = true } else { a.due = now }
                            }
                        }
                        Some(StreamEvent::Disconnected { reason }) => {
                            info!(%reason, "Stream disconnected; polling until it is back");
                            streaming = false;
                            status.set_state("polling", Some(format!("stream down: {reason}")));
                            let soon = Instant::now() + cfg.poll_interval;
                            for a in accounts.iter_mut() { a.due = a.due.min(soon); }
                        }
                        Some(StreamEvent::Update(raw)) => stream_post(&sh, &raw, reader_host.as_deref().unwrap_or_default(), EventKind::Created).await?,
                        Some(StreamEvent::StatusUpdate(raw)) => stream_post(&sh, &raw, reader_host.as_deref().unwrap_or_default(), EventKind::Updated).await?,
                        Some(StreamEvent::Delete(id)) => {
                            let host = reader_host.as_deref().unwrap_or_default();
                            match ctx.log.state_get(IDS_NS, &ids_key(host, &id)).await? {
                                Some(v) => match deleted_event(&ctx.name, host, &id, &v) {
                                    Some(ev) if sh.followed.contains(&ev.account) => sh.emit(SourceBatch { events: vec![ev.into()], state: vec![] }).await?,
                                    _ => {}
                                },
                                None => {
                                    debug!(id = %id, "Delete of a status we never saw; ignored");
                                    status.count("deletes_unattributed", 1);
                                }
                            }
                        }
                        Some(StreamEvent::Malformed { raw, reason }) => sh.malformed(&format!("stream: {reason}"), &raw),
                        Some(StreamEvent::Fatal { error }) => {
                            return Err(src_err(error.kind(), format!("stream of {} stopped: {error}", reader_host.as_deref().unwrap_or("?"))));
                        }
                    }
                }
                joined = tasks.join_next(), if !tasks.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (i, res) = joined.map_err(|e| src_err(ErrorKind::Internal, format!("catch-up task failed: {e}")))?;
                    let a = &mut accounts[i];
                    a.running = false;
                    let now = Instant::now();
                    match res {
                        Ok(done) => {
                            a.account_id = Some(done.account_id);
                            a.checkpoint = Some(done.checkpoint);
                            a.backoff.reset();
                            a.interval = next_interval(a.interval, done.found, cfg.poll_interval, cfg.max_poll_interval);
                            let wait = if streaming { cfg.safety_interval } else { jitter(a.interval) };
                            a.due = if a.rerun { now } else { now + wait };
                            a.rerun = false;
                        }
                        Err(e) if matches!(e, catchup::JobError::Source(_)) && e.kind() == ErrorKind::Internal => {
                            return Err(src_err(ErrorKind::Internal, e.to_string()));
                        }
                        Err(e) => {
                            let delay = e.retry_after().unwrap_or_else(|| a.backoff.next_delay());
                            let delay = match e.kind() {
                                ErrorKind::Auth | ErrorKind::Config | ErrorKind::Permanent => {
                                    error!(acct = %a.acct, error = %e, retry_in = ?cfg.max_poll_interval, "Cannot read this account");
                                    cfg.max_poll_interval
                                }
                                _ => {
                                    warn!(acct = %a.acct, error = %e, retry_in = ?delay, "Catch-up failed; will retry");
                                    delay
                                }
                            };
                            status.count("errors", 1);
                            a.due = now + delay;
                            a.rerun = false;
                        }
                    }
                }
                _ = sleep_until(next_due), if can_start && next_due.is_some() => {
                    let now = Instant::now();
                    for (i, a) in accounts.iter_mut().enumerate() {
                        if tasks.len() >= concurrency { break; }
                        if a.running || a.due > now { continue; }
                        // The safety pass also re-reads the newest page (edits made while no stream was up).
                        let reread = now >= a.safety_due && (streaming || a.checkpoint.is_some());
                        if reread { a.safety_due = now + cfg.safety_interval; }
                        a.running = true;
                        let job = catchup::Job {
                            index: i,
                            acct: a.acct.clone(),
                            username: a.username.clone(),
                            client: a.client.clone(),
                            account_id: a.account_id.clone(),
                            checkpoint_key: a.checkpoint_key.clone(),
                            checkpoint: a.checkpoint.clone(),
                            reread_latest: reread,
                        };
                        let sh = sh.clone();
                        tasks.spawn(async move { (job.index, catchup::run(sh, job).await) });
                    }
                }
            }
        }
        // Whatever a catch-up handed to the emitter is appended with its checkpoint
        // or not at all, so aborting in-flight work loses nothing.
        tasks.abort_all();
        Ok(())
    }
}

async fn stream_post(sh: &Shared, raw: &str, host: &str, kind: EventKind) -> Result<(), SourceError> {
    match sh.converter().convert(raw, host, Via::Stream, kind, None) {
        Converted::Event(ev, index) => {
            sh.status.count("stream_events", 1);
            sh.emit(SourceBatch { events: vec![(*ev).into()], state: vec![index] }).await
        }
        Converted::NotFollowed => Ok(()),
        Converted::Skipped(reason) => {
            sh.skipped(reason);
            Ok(())
        }
        Converted::Malformed(reason) => {
            sh.malformed(&format!("stream: {reason}"), raw);
            Ok(())
        }
    }
}

/// Adaptive polling: an account that had news is polled twice as often (down to
/// `min`), a quiet one half again as rarely (up to `max`).
fn next_interval(current: Duration, found: usize, min: Duration, max: Duration) -> Duration {
    if found > 0 {
        (current / 2).max(min)
    } else {
        current.mul_f64(1.5).min(max)
    }
}

fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.9..1.1))
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_accounts_are_polled_more_often_quiet_ones_less() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(900));
        let mut i = min;
        let mut seen = vec![];
        for _ in 0..8 {
            i = next_interval(i, 0, min, max);
            seen.push(i.as_secs());
        }
        assert_eq!(seen, vec![90, 135, 202, 303, 455, 683, 900, 900]);
        assert_eq!(next_interval(i, 3, min, max), Duration::from_secs(450));
        assert_eq!(next_interval(Duration::from_secs(70), 1, min, max), min);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(100)).as_secs_f64();
            assert!((90.0..=110.0).contains(&j), "{j}");
        }
    }
}
