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
//! Edits and deletions of older posts made while no stream told us are found by
//! reconciliation ([`reconcile`]): each account's recent posts ([`window`]) are
//! checked again within `reconcile_within`, inside the rate limit. With
//! `engagement_refresh`, their interaction counts are read again on that
//! schedule and changed counts flow as `updated` events ([`refresh`]).
//!
//! Accounts that cannot be read (not found, a server that needs a token, a
//! wrong address) are shown per account in the status, retried on a long
//! interval, and end a `follow` when none can be read (`accounts`).
//!
//! Consent is on by default: public posts only (unlisted when opted in, private
//! and direct never), and accounts flagged noindex or carrying #nobot / #noindex /
//! #nobridge in their bio are skipped unless the source declares them `owned`.

mod accounts;
mod catchup;
pub mod config;
pub mod convert;
pub mod reconcile;
mod refresh;
mod rounds;
mod streamed;
pub mod timeline;
pub mod window;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fedistream_core::post::Via;
use fedistream_core::{DeadLetter, Emitter, ErrorKind, EventKind, Progress, Source, SourceBatch, SourceContext, SourceError, Status};
use fedistream_process::consent::ConsentPolicy;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use config::{parse_acct, parse_base_url, Backfill, MastodonSourceConfig, StreamMode};
use convert::{Converted, Converter};
pub use timeline::{MastodonTimelineConfig, MastodonTimelineSource, TimelineKind, TimelineServer};

use self::accounts::Account;
use self::rounds::Rounds;
use self::streamed::{on_stream_event, StreamState};
use self::window::WindowSpec;
use crate::mastodon::client::Secret;
use crate::mastodon::ratelimit::RateLimiters;
use crate::mastodon::stream::{spawn_stream, StreamConfig, StreamName};

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

/// The unit of ingest work of one account of a Mastodon source (`source/account`,
/// the account as configured): what ingest processes share on Kafka, and what
/// owns the account's state (checkpoint, window, dedup entries; see
/// `StatePut::owner`).
pub fn account_unit(source: &str, acct: &str) -> String {
    format!("{source}/{acct}")
}

/// Which ingest unit owns what a source writes (`StatePut::owner`).
#[derive(Default)]
pub(crate) struct Owners {
    /// The source is one unit (a timeline source: its name).
    pub(crate) whole: Option<Arc<str>>,
    /// Else per followed account: its `user@host` and its checkpoint key
    /// (the window's key too) → its unit.
    pub(crate) by_account: HashMap<String, Arc<str>>,
}

impl Owners {
    /// Name the owner of every event (the followed account it was read for)
    /// and of every state put but the id index, which stays global: a stream
    /// delete looks it up before it knows the account.
    fn tag(&self, batch: &mut SourceBatch) {
        for ev in &mut batch.events {
            ev.set_owner(self.whole.clone().or_else(|| self.by_account.get(ev.account()).cloned()));
        }
        for put in batch.state.iter_mut().filter(|p| p.ns != convert::IDS_NS) {
            put.owner = self.whole.clone().or_else(|| self.by_account.get(&put.key).cloned()).map(fedistream_core::log::Owner::Unit);
        }
    }
}

/// Posts whose consent skip was counted, so that re-reads don't count them again.
const SKIPS_REMEMBERED: usize = 4096;

/// What catch-up and reconciliation tasks share.
pub(crate) struct Shared {
    pub(crate) name: String,
    emitter: Emitter,
    status: Status,
    dead_letter: DeadLetter,
    progress: Option<Arc<dyn Progress>>,
    policy: ConsentPolicy,
    backfill: Backfill,
    followed: HashSet<String>,
    owners: Owners,
    /// A timeline source: every author's posts are taken (consent still applies).
    everyone: bool,
    known_ids: HashMap<String, HashMap<String, String>>,
    names: HashMap<String, String>,
    /// State reads (the dedup index, windows).
    log: Arc<dyn fedistream_core::Log>,
    window_spec: WindowSpec,
    /// Per account (checkpoint key): held while its window is read, changed and appended.
    window_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    lookups: reconcile::LookupSupport,
    skips: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Shared {
    fn converter(&self) -> Converter<'_> {
        Converter {
            source: &self.name,
            policy: &self.policy,
            followed: &self.followed,
            everyone: self.everyone,
            known_ids: &self.known_ids,
            names: &self.names,
        }
    }
    fn window_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.window_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }
    async fn emit(&self, mut batch: SourceBatch) -> Result<(), SourceError> {
        if batch.events.is_empty() && batch.state.is_empty() {
            return Ok(());
        }
        self.owners.tag(&mut batch);
        let n = batch.events.len() as u64;
        let s = self.emitter.emit(batch).await?;
        self.status.count("received", n);
        if s.appended > 0 {
            self.status.saw_event();
        }
        Ok(())
    }
    /// A post refused by the consent policy: counted once per post, however
    /// often it is read again (safety passes, reconciliation, stream and REST).
    fn skipped(&self, reason: &'static str, key: &str) {
        {
            let mut guard = self.skips.lock().unwrap_or_else(|e| e.into_inner());
            let (seen, order) = &mut *guard;
            if !seen.insert(key.to_string()) {
                return;
            }
            order.push_back(key.to_string());
            if order.len() > SKIPS_REMEMBERED {
                if let Some(old) = order.pop_front() {
                    seen.remove(&old);
                }
            }
        }
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

fn src_err(kind: ErrorKind, msg: impl Into<String>) -> SourceError {
    SourceError::new(kind, msg)
}

#[async_trait]
impl Source for MastodonSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let cfg = self.cfg;
        let reader_client = match &self.reader {
            Some(r) => Some(accounts::client_for(&self.limiters, r.base_url.clone(), Some(r.token.clone()))?),
            None => None,
        };
        let reader = self.reader.as_ref().zip(reader_client.as_ref());
        let accounts::Setup { mut accounts, followed, names, owners } =
            accounts::setup(&cfg, &ctx.name, &*ctx.log, &self.limiters, reader).await?;

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
                    Err(e) => {
                        debug!(acct = %a.acct, error = %e, "Reader's server does not know this account yet; attributing stream posts by handle")
                    }
                }
            }
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
                // Asked by the stream task itself, before every connect until the server answers.
                streaming_base: None,
                server_names: names.get(&rhost).into_iter().cloned().collect(),
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
            owners,
            everyone: false,
            known_ids,
            names,
            log: ctx.log.clone(),
            window_spec: cfg.window_spec(),
            window_locks: Mutex::default(),
            lookups: reconcile::LookupSupport::default(),
            skips: Mutex::default(),
        });
        let status = ctx.status.clone();
        status.set_state(if stream_rx.is_some() { "connecting" } else { "polling" }, None);
        info!(accounts = accounts.len(), streaming = stream_rx.is_some(), reconcile_within = ?cfg.reconcile_within, "Mastodon source started");

        let mut tasks: JoinSet<(usize, Result<catchup::Done, catchup::JobError>)> = JoinSet::new();
        let mut passes: JoinSet<(usize, Result<reconcile::PassDone, catchup::JobError>)> = JoinSet::new();
        let mut rounds = Rounds::new(cfg.reconcile_within, accounts.len(), Instant::now());
        let mut refreshes: JoinSet<(usize, Result<refresh::RefreshDone, catchup::JobError>)> = JoinSet::new();
        // Every account's counts are read again within the interval; the first
        // pass comes half an interval after start (the catch-up just read them).
        let mut refresh_rounds = cfg.engagement_refresh.map(|every| {
            let now = Instant::now();
            for a in accounts.iter_mut() {
                a.refresh.gap = false;
                a.refresh.due = now + every / 2;
            }
            Rounds::new(every, accounts.len(), now)
        });
        let mut stream = StreamState::default();
        let concurrency = cfg.concurrency.max(1);
        // When the next job is due: a walk over every account, so it is done
        // again only after something that may have moved a schedule (not after
        // the stream's posts, which in a burst come hundreds of times a second).
        let mut next_due = None;
        let mut schedule_moved = true;
        loop {
            if schedule_moved {
                let can_start = tasks.len() < concurrency;
                let next_catchup = accounts.iter().filter(|a| !a.running).map(|a| a.due).min().filter(|_| can_start);
                let next_pass = rounds.next_wake(accounts.iter().filter(|a| a.reconcilable()).map(|a| &a.reconcile));
                let next_refresh =
                    refresh_rounds.as_ref().and_then(|r| r.next_wake(accounts.iter().filter(|a| a.reconcilable()).map(|a| &a.refresh)));
                next_due = next_catchup.into_iter().chain(next_pass).chain(next_refresh).min();
            }
            schedule_moved = true;
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                ev = async { stream_rx.as_mut().expect("guarded").recv().await }, if stream_rx.is_some() => {
                    let Some(ev) = ev else {
                        stream_rx = None;
                        stream.up = false;
                        continue;
                    };
                    let reader_host = reader_host.as_deref().unwrap_or_default();
                    // Group commit: the posts and edits that arrived while the
                    // last append was in flight go into one append (a burst —
                    // a busy instance, a catch-up after a reconnect — costs one
                    // transaction, not one per post); an idle stream still
                    // appends each post at once. Anything else ends the burst
                    // and is handled after it, in stream order.
                    let rx = stream_rx.as_mut().expect("guarded");
                    let (burst, next) = streamed::burst(ev, rx);
                    if !burst.is_empty() {
                        streamed::stream_posts(&sh, burst, reader_host).await?;
                    }
                    match next {
                        Some(ev) => on_stream_event(&sh, ev, &mut stream, &mut accounts, &rounds, &cfg, reader_host).await?,
                        // Posts and edits only: no account's schedule moved.
                        None => schedule_moved = false,
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
                            a.succeeded(&status);
                            a.interval = next_interval(a.interval, done.found, cfg.poll_interval, cfg.max_poll_interval);
                            let wait = if stream.up { cfg.safety_interval } else { jitter(a.interval) };
                            a.due = if a.rerun { now } else { now + wait };
                            a.rerun = false;
                        }
                        Err(e) if matches!(e, catchup::JobError::Source(_)) && e.kind() == ErrorKind::Internal => {
                            return Err(src_err(ErrorKind::Internal, e.to_string()));
                        }
                        Err(e) => {
                            let delay = a.failed(&e, &cfg, &status);
                            a.due = now + delay;
                            a.rerun = false;
                            if cfg.stop_if_unreadable {
                                if let Some(e) = accounts::none_readable(&accounts) {
                                    return Err(e);
                                }
                            }
                        }
                    }
                }
                joined = passes.join_next(), if !passes.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (i, res) = joined.map_err(|e| src_err(ErrorKind::Internal, format!("reconciliation task failed: {e}")))?;
                    let a = &mut accounts[i];
                    rounds.finished(&mut a.reconcile);
                    match res {
                        Ok(done) => debug!(acct = %a.acct, checked = done.checked, requests = done.requests, "Reconciliation pass done"),
                        Err(e) if matches!(e, catchup::JobError::Source(_)) && e.kind() == ErrorKind::Internal => {
                            return Err(src_err(ErrorKind::Internal, e.to_string()));
                        }
                        Err(e) => {
                            // Tried again at its next turn; the next pass starts over.
                            warn!(acct = %a.acct, error = %e, "Reconciliation pass failed; the account is checked again at its next turn");
                            status.count("reconcile_errors", 1);
                        }
                    }
                }
                joined = refreshes.join_next(), if !refreshes.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (i, res) = joined.map_err(|e| src_err(ErrorKind::Internal, format!("engagement refresh task failed: {e}")))?;
                    let a = &mut accounts[i];
                    if let Some(r) = refresh_rounds.as_mut() {
                        r.finished(&mut a.refresh);
                    }
                    match res {
                        Ok(_) => {}
                        Err(e) if matches!(e, catchup::JobError::Source(_)) && e.kind() == ErrorKind::Internal => {
                            return Err(src_err(ErrorKind::Internal, e.to_string()));
                        }
                        Err(e) => {
                            warn!(acct = %a.acct, error = %e, "Engagement refresh pass failed; the account is refreshed again at its next turn");
                            status.count("refresh_errors", 1);
                        }
                    }
                }
                _ = sleep_until(next_due), if next_due.is_some() => {
                    let now = Instant::now();
                    for (i, a) in accounts.iter_mut().enumerate() {
                        if tasks.len() >= concurrency { break; }
                        if a.running || a.due > now { continue; }
                        // The safety pass also re-reads the newest page (edits made while no stream was up).
                        let reread = now >= a.safety_due && (stream.up || a.checkpoint.is_some());
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
                    while let Some(i) = rounds.pick(accounts.iter().enumerate().filter(|(_, a)| a.reconcilable()).map(|(i, a)| (i, &a.reconcile)), now) {
                        let a = &mut accounts[i];
                        if let Some(late) = rounds.started(&mut a.reconcile, stream.up, now) {
                            warn!(acct = %a.acct, since_last = ?late, bound = ?cfg.reconcile_within, "Reconciliation is behind its bound (the rate limit leaves too little room)");
                            status.count("reconcile_late", 1);
                        }
                        let pass = background_pass(i, a);
                        let sh = sh.clone();
                        passes.spawn(async move { (pass.index, reconcile::run(sh, pass).await) });
                    }
                    if let Some(r) = refresh_rounds.as_mut() {
                        while let Some(i) = r.pick(accounts.iter().enumerate().filter(|(_, a)| a.reconcilable()).map(|(i, a)| (i, &a.refresh)), now) {
                            let a = &mut accounts[i];
                            if let Some(late) = r.started(&mut a.refresh, true, now) {
                                warn!(acct = %a.acct, since_last = ?late, every = ?cfg.engagement_refresh, "Engagement refresh is behind its schedule (the rate limit leaves too little room)");
                                status.count("refresh_late", 1);
                            }
                            let pass = background_pass(i, a);
                            let (sh, max_age) = (sh.clone(), cfg.engagement_window);
                            refreshes.spawn(async move { (pass.index, refresh::run(sh, pass, max_age).await) });
                        }
                    }
                }
            }
        }
        // Whatever a task handed to the emitter is appended with its checkpoint
        // or not at all, so aborting in-flight work loses nothing.
        tasks.abort_all();
        passes.abort_all();
        refreshes.abort_all();
        Ok(())
    }
}

impl Account {
    /// Reconciliation needs the account's id and a first catch-up (its window).
    fn reconcilable(&self) -> bool {
        self.account_id.is_some() && self.checkpoint.is_some()
    }
}

/// Converts a status the stream carried into `batch` (one event and its id
/// index entry), or counts why not.
pub(crate) fn stream_post(sh: &Shared, raw: &str, host: &str, kind: EventKind, batch: &mut SourceBatch) {
    match sh.converter().convert(raw, host, Via::Stream, kind, None) {
        Converted::Event(ev, index) => {
            sh.status.count("stream_events", 1);
            batch.events.push((*ev).into());
            batch.state.push(index);
        }
        Converted::NotFollowed => {}
        Converted::Skipped { reason, key } => sh.skipped(reason, &key),
        Converted::Malformed(reason) => sh.malformed(&format!("stream: {reason}"), raw),
    }
}

/// A background pass over account `i` (reconciliation or engagement refresh).
fn background_pass(i: usize, a: &Account) -> reconcile::Pass {
    reconcile::Pass {
        index: i,
        acct: a.acct.clone(),
        client: a.client.background(),
        account_id: a.account_id.clone().unwrap_or_default(),
        checkpoint_key: a.checkpoint_key.clone(),
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

/// Up to a tenth earlier, never later: polls spread out instead of moving in
/// step, and a post still waits at most the interval (the promise of
/// `poll_interval` / `max_poll_interval`).
fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.9..=1.0))
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
    fn a_batch_is_owned_by_the_units_of_its_accounts_but_the_id_index_stays_global() {
        use fedistream_core::log::{Owner, StatePut};
        let unit: Arc<str> = account_unit("src", "@Alice@a.example").into();
        let mut owners = Owners::default();
        owners.by_account.insert("alice@a.example".into(), unit.clone());
        owners.by_account.insert("src|a.example|alice@a.example".into(), unit.clone());
        let mut batch = SourceBatch {
            events: vec![],
            state: vec![
                StatePut::set(convert::CHECKPOINT_NS, "src|a.example|alice@a.example", "9"),
                StatePut::set(window::WINDOW_NS, "src|a.example|alice@a.example", "[]"),
                StatePut::set(convert::IDS_NS, "a.example|9", "uri\talice@a.example"),
            ],
        };
        batch.push(fedistream_core::testing::created("src", "alice@a.example", 9, "hi"));
        batch.push(fedistream_core::testing::created("src", "stranger@b.example", 1, "hi"));
        owners.tag(&mut batch);
        assert_eq!(batch.events[0].owner(), Some(&unit));
        assert_eq!(batch.events[1].owner(), None, "an account this source does not follow: global");
        let owned = |i: usize| batch.state[i].owner.clone();
        assert_eq!((owned(0), owned(1), owned(2)), (Some(Owner::Unit(unit.clone())), Some(Owner::Unit(unit.clone())), None));

        // A source that is one unit (a timeline) owns everything but the id index.
        let whole = Owners { whole: Some("timeline".into()), by_account: HashMap::new() };
        whole.tag(&mut batch);
        assert_eq!(batch.events[1].owner().map(|o| &**o), Some("timeline"));
        assert_eq!(batch.state[2].owner, None);
    }

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
    fn jitter_is_at_most_a_tenth_earlier_and_never_later() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(100)).as_secs_f64();
            assert!((90.0..=100.0).contains(&j), "{j}");
        }
    }
}
