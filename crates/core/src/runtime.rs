//! Drives a pipeline: sources → ingestor (dedup + durable append) → log →
//! one task per channel (route filter, batching, retries, dead letters, commits).
//!
//! Back-pressure: sources wait on a bounded ingest queue and on the durable
//! append; channels pull from the log at their own pace, so a slow channel never
//! slows ingest or the other channels (the log is the buffer).
//!
//! Shutdown: cancelling the token stops the sources; the ingestor appends what
//! they already handed over; channels deliver up to the head, close their sinks
//! and commit; whatever is still running at the drain deadline is named and
//! aborted (its records stay uncommitted and are delivered on the next start).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::backoff::Backoff;
use crate::component::{
    AppendSummary, DeadLetter, Emitter, IngestRequest, Progress, Sink, Source, SourceContext, Status,
};
use crate::error::{ErrorKind, SinkError};
use crate::event::{EncodedEvent, Event, EventKind, LogRecord, Position};
use crate::log::{AppendBatch, Log, StatePut};

/// Namespace of the dedup index: status URI → fingerprint of the last version stored.
pub const SEEN_NS: &str = "seen";
const DELETED: &str = "deleted";

/// Decides whether a channel wants an event (route + filters).
pub type RouteFn = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub max_records: usize,
    pub max_bytes: usize,
    /// How long to wait for more records before writing a partial batch.
    pub linger: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_records: 500, max_bytes: 4 << 20, linger: Duration::ZERO }
    }
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub initial: Duration,
    pub max: Duration,
    /// How long a paused channel (auth/config error) waits before trying again.
    pub pause: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(60),
            pause: Duration::from_secs(300),
        }
    }
}

/// Per-channel delivery settings, as written in a channel's `[channels.NAME.delivery]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Most records in one write.
    pub max_batch: usize,
    /// Most payload bytes in one write.
    #[serde(with = "crate::units::size")]
    pub max_batch_bytes: u64,
    /// How long to wait for more records before writing a partial batch.
    #[serde(with = "crate::units::duration")]
    pub linger: Duration,
    /// First retry delay after a transient failure (doubles, with jitter).
    #[serde(with = "crate::units::duration")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "crate::units::duration")]
    pub retry_max: Duration,
    /// How long the channel pauses after an authentication or configuration error.
    #[serde(with = "crate::units::duration")]
    pub pause: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let (b, r) = (BatchConfig::default(), RetryConfig::default());
        DeliveryConfig {
            max_batch: b.max_records,
            max_batch_bytes: b.max_bytes as u64,
            linger: b.linger,
            retry_initial: r.initial,
            retry_max: r.max,
            pause: r.pause,
        }
    }
}

impl DeliveryConfig {
    pub fn batch(&self) -> BatchConfig {
        BatchConfig { max_records: self.max_batch.max(1), max_bytes: self.max_batch_bytes.max(1) as usize, linger: self.linger }
    }
    pub fn retry(&self) -> RetryConfig {
        RetryConfig { initial: self.retry_initial, max: self.retry_max, pause: self.pause }
    }
}

pub struct ChannelSpec {
    pub name: String,
    /// Consumer group; one per channel.
    pub group: String,
    pub sink: Box<dyn Sink>,
    /// Which events the channel takes; `None`: all (no decoding needed).
    pub route: Option<RouteFn>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub dead_letter: DeadLetter,
}

pub struct SourceSpec {
    pub name: String,
    pub source: Box<dyn Source>,
    pub dead_letter: DeadLetter,
}

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub drain_deadline: Duration,
    pub ingest_queue: usize,
    /// Most events per log transaction when several batches are waiting.
    pub ingest_max_events: usize,
    /// Appends started and not yet durable (overlap only where the log supports
    /// it, see `Log::start_append`). On Kafka the writer groups what waits into
    /// one transaction: four appends of 4,096 fill its 16,384-event group.
    pub appends_in_flight: usize,
    /// When several processes share one log (Kafka roles): the worker name,
    /// so each keeps its own status documents (`source:NAME@WORKER`).
    pub status_scope: Option<String>,
    pub status_interval: Duration,
    pub retention_interval: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            drain_deadline: Duration::from_secs(30),
            ingest_queue: 64,
            ingest_max_events: 4096,
            appends_in_flight: 4,
            status_scope: None,
            status_interval: Duration::from_secs(2),
            retention_interval: Duration::from_secs(60),
        }
    }
}

pub struct Pipeline {
    pub log: Arc<dyn Log>,
    pub sources: Vec<SourceSpec>,
    pub channels: Vec<ChannelSpec>,
    pub options: RuntimeOptions,
    pub progress: Option<Arc<dyn Progress>>,
}

#[derive(Debug, Clone, Default)]
pub struct ComponentSummary {
    pub name: String,
    pub state: String,
    pub counters: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The ingestor: events appended and duplicates dropped.
    pub log: ComponentSummary,
    pub sources: Vec<ComponentSummary>,
    pub channels: Vec<ComponentSummary>,
    /// Components that failed (name, error).
    pub failures: Vec<(String, String)>,
}

/// Run until every source has finished (then drain and return) or `shutdown` is
/// cancelled. Only returns `Err` if the log itself fails.
pub async fn run(p: Pipeline, shutdown: CancellationToken) -> Result<RunSummary, crate::error::LogError> {
    let log = p.log.clone();
    let opts = p.options.clone();
    let (tx, rx) = mpsc::channel::<IngestRequest>(opts.ingest_queue);
    let emitter = Emitter { tx };
    let (ingest_done_tx, ingest_done_rx) = watch::channel(false);
    let scope = opts.status_scope.as_deref();
    let ingest_status = Status::scoped("ingest", "log", scope);
    let ingest = tokio::spawn(
        ingestor(log.clone(), rx, opts.ingest_max_events, opts.appends_in_flight, ingest_status.clone(), ingest_done_tx)
            .instrument(tracing::info_span!("ingest")),
    );

    let mut statuses: Vec<(String, Status, bool)> = Vec::new();
    let mut failures = Vec::new();

    // Channels first, so they are reading before the first append.
    let mut channel_tasks = JoinSet::new();
    let channel_stop = CancellationToken::new(); // hard stop at the drain deadline
    let drain_deadline = opts.drain_deadline;
    for ch in p.channels {
        let status = Status::scoped("channel", &ch.name, scope);
        statuses.push((ch.name.clone(), status.clone(), false));
        let span = tracing::info_span!("channel", component = "channel", id = %ch.name);
        let (log, done, stop) = (log.clone(), ingest_done_rx.clone(), channel_stop.clone());
        let name = ch.name.clone();
        channel_tasks.spawn(
            async move {
                let halt = Halt { stop, draining: done, drain: drain_deadline, channel_closed: false };
                (name, run_channel(log, ch, status, halt).await)
            }
            .instrument(span),
        );
    }

    let all_finite = !p.sources.is_empty() && p.sources.iter().all(|s| s.source.is_finite());
    let source_token = shutdown.child_token();
    let mut source_tasks = JoinSet::new();
    for s in p.sources {
        let status = Status::scoped("source", &s.name, scope);
        statuses.push((s.name.clone(), status.clone(), true));
        let ctx = SourceContext {
            name: s.name.clone(),
            emitter: emitter.clone(),
            log: log.clone(),
            shutdown: source_token.clone(),
            status: status.clone(),
            dead_letter: s.dead_letter,
            progress: p.progress.clone(),
        };
        let span = tracing::info_span!("source", id = %s.name);
        let name = s.name.clone();
        source_tasks.spawn(
            async move {
                status.set_state("running", None);
                let r = s.source.run(ctx).await;
                match &r {
                    Ok(()) => status.set_state("finished", None),
                    Err(e) => status.set_state("failed", Some(e.to_string())),
                }
                (name, r)
            }
            .instrument(span),
        );
    }
    // Without sources (a deliver-only process on a shared log) other processes
    // append: the input only ends at shutdown, so the ingestor stays open until then.
    let keep_open = statuses.iter().all(|(_, _, is_source)| !is_source).then(|| emitter.clone());
    drop(emitter);
    ingest_status.set_state("running", None);
    // "Last event" survives restarts: a run that has delivered nothing yet still
    // shows when the previous one did.
    for st in statuses.iter().map(|(_, s, _)| s).chain([&ingest_status]) {
        if let Ok(Some(prev)) = log.state_get(crate::component::STATUS_NS, st.key()).await {
            if let Ok(doc) = serde_json::from_str::<crate::component::StatusDoc>(&prev) {
                st.seed_from(&doc);
            }
        }
    }

    // Persist status documents periodically, and apply retention.
    let status_token = CancellationToken::new();
    let status_task = {
        let log = log.clone();
        let all: Vec<Status> =
            statuses.iter().map(|(_, s, _)| s.clone()).chain([ingest_status.clone()]).collect();
        let token = status_token.clone();
        let (si, ri) = (opts.status_interval, opts.retention_interval);
        tokio::spawn(async move {
            let mut status_tick = tokio::time::interval(si);
            let mut retention_tick = tokio::time::interval(ri);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = status_tick.tick() => {
                        if let Err(e) = log.state_put(all.iter().map(|s| s.to_put()).collect()).await {
                            warn!(error = %e, "Cannot record component status");
                        }
                    }
                    _ = retention_tick.tick() => {
                        if let Err(e) = log.enforce_retention().await {
                            warn!(error = %e, "Log retention failed");
                        }
                    }
                }
            }
            let _ = log.state_put(all.iter().map(|s| s.to_put()).collect()).await;
        })
    };

    // Wait for the sources: all finished (finite run) or shutdown.
    let mut sources_left = source_tasks.len();
    loop {
        tokio::select! {
            joined = source_tasks.join_next(), if sources_left > 0 => {
                sources_left -= 1;
                match joined {
                    Some(Ok((name, Err(e)))) => {
                        error!(source = %name, error = %e, kind = e.kind.as_str(), "Source stopped");
                        failures.push((name, e.to_string()));
                    }
                    Some(Ok((name, Ok(())))) => info!(source = %name, "Source finished"),
                    Some(Err(e)) => {
                        error!(error = %e, "Source task panicked");
                        failures.push(("source".into(), e.to_string()));
                    }
                    None => {}
                }
                if sources_left == 0 {
                    if !all_finite && !shutdown.is_cancelled() {
                        warn!("Every source has stopped; draining channels and exiting");
                    }
                    break;
                }
            }
            _ = shutdown.cancelled() => {
                info!("Shutdown requested: stopping sources, draining channels");
                break;
            }
        }
    }
    source_token.cancel();
    drop(keep_open);
    let deadline = tokio::time::Instant::now() + opts.drain_deadline;
    // Sources get until the deadline to hand over what they hold.
    while !source_tasks.is_empty() {
        match tokio::time::timeout_at(deadline, source_tasks.join_next()).await {
            Ok(Some(Ok((name, Err(e))))) => {
                error!(source = %name, error = %e, "Source stopped");
                failures.push((name, e.to_string()));
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                warn!(left = source_tasks.len(), "Sources still running at the drain deadline; aborting them");
                source_tasks.abort_all();
                break;
            }
        }
    }
    // The ingestor ends when the last emitter is gone.
    let mut ingest = ingest;
    let ingest_result = match tokio::time::timeout_at(deadline, &mut ingest).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(crate::error::LogError::Internal(format!("ingest task failed: {e}"))),
        Err(_) => {
            // Unconfirmed batches were not checkpointed: the sources fetch them again.
            warn!("Log writer still busy at the drain deadline; stopping it");
            ingest.abort();
            Ok(())
        }
    };
    if let Err(e) = &ingest_result {
        error!(error = %e, "Log append failed; stopping");
    }
    // Channels drain to the head and exit by themselves; past the deadline they are stopped.
    loop {
        match tokio::time::timeout_at(deadline, channel_tasks.join_next()).await {
            Ok(Some(Ok((_, Ok(()))))) => {}
            Ok(Some(Ok((name, Err(e))))) => {
                error!(channel = %name, error = %e, "Channel failed");
                failures.push((name, e.to_string()));
            }
            Ok(Some(Err(e))) => failures.push(("channel".into(), e.to_string())),
            Ok(None) => break,
            Err(_) => {
                let left: Vec<String> = statuses
                    .iter()
                    .filter(|(_, s, is_src)| !is_src && s.snapshot().state != "stopped")
                    .map(|(n, _, _)| n.clone())
                    .collect();
                warn!(channels = ?left, "Channels still delivering at the drain deadline; stopping them (undelivered events resume on next start)");
                channel_stop.cancel();
                // They stop at their next await point, without committing what is unfinished.
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_secs(5), channel_tasks.join_next()).await
                {}
                channel_tasks.abort_all();
                break;
            }
        }
    }
    ingest_status.set_state("stopped", None);
    status_token.cancel();
    let _ = status_task.await;
    ingest_result?;

    let ingest_doc = ingest_status.snapshot();
    let mut summary = RunSummary {
        failures,
        log: ComponentSummary { name: "log".into(), state: "stopped".into(), counters: ingest_doc.counters },
        ..Default::default()
    };
    for (name, st, is_source) in statuses {
        let doc = st.snapshot();
        let c = ComponentSummary { name, state: doc.state, counters: doc.counters };
        if is_source {
            summary.sources.push(c)
        } else {
            summary.channels.push(c)
        }
    }
    Ok(summary)
}

/// An append started and not yet durable, with who to tell when it is.
struct InFlight {
    done: crate::log::AppendFuture,
    /// Its dedup decisions, kept once it is durable.
    decisions: Staged,
    replies: Vec<oneshot::Sender<Result<AppendSummary, String>>>,
    summaries: Vec<AppendSummary>,
}

/// Single writer: deduplicates by status URI and appends batches durably, with
/// up to `max_in_flight` appends started and not yet durable (the log keeps
/// their order), so preparing the next batch overlaps the commit of the last.
async fn ingestor(
    log: Arc<dyn Log>,
    mut rx: mpsc::Receiver<IngestRequest>,
    max_events: usize,
    max_in_flight: usize,
    status: Status,
    done: watch::Sender<bool>,
) -> Result<(), crate::error::LogError> {
    // Bounded: a miss costs one indexed read of the log's `seen` table.
    let mut dedup = Dedup::new(50_000);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut open = true;
    let result = async {
        while open || !in_flight.is_empty() {
            let room = open && in_flight.len() < max_in_flight.max(1);
            tokio::select! {
                // Oldest first: the log completes appends in the order they started.
                r = async { in_flight.front_mut().expect("checked non-empty").done.as_mut().await }, if !in_flight.is_empty() => {
                    let f = in_flight.pop_front().expect("checked non-empty");
                    match r {
                        Ok(_) => {
                            let appended: usize = f.summaries.iter().map(|s| s.appended).sum();
                            dedup.commit(f.decisions);
                            status.count("appended", appended as u64);
                            status.count("duplicates_suppressed", f.summaries.iter().map(|s| s.duplicates as u64).sum());
                            metrics::counter!("fedistream_events_appended_total", "component" => "log").increment(appended as u64);
                            for (reply, s) in f.replies.into_iter().zip(f.summaries) {
                                let _ = reply.send(Ok(s));
                            }
                        }
                        Err(e) => {
                            // Every later append fails too (the log's contract).
                            fail_all(f.replies.into_iter(), in_flight.drain(..), &e);
                            return Err(e);
                        }
                    }
                }
                first = rx.recv(), if room => {
                    let Some(first) = first else {
                        open = false;
                        continue;
                    };
                    // Coalesce whatever else is waiting into one transaction.
                    let mut reqs = vec![first];
                    let mut n = reqs[0].0.events.len();
                    while n < max_events {
                        match rx.try_recv() {
                            Ok(r) => {
                                n += r.0.events.len();
                                reqs.push(r);
                            }
                            Err(_) => break,
                        }
                    }
                    // At their final size: events are large, and doubling moves them.
                    let states: usize = reqs.iter().map(|r| r.0.state.len()).sum();
                    let mut batch = AppendBatch { events: Vec::with_capacity(n), state: Vec::with_capacity(n + states) };
                    let mut summaries = Vec::with_capacity(reqs.len());
                    let missing = dedup.missing(reqs.iter().flat_map(|r| r.0.events.iter().map(|e| e.key())));
                    if let Err(e) = dedup.prefetch(&*log, missing).await {
                        fail_all(reqs.into_iter().map(|r| r.1), in_flight.drain(..), &e);
                        return Err(e);
                    }
                    let mut replies = Vec::with_capacity(reqs.len());
                    for (sb, reply) in reqs {
                        let mut s = AppendSummary::default();
                        for mut ev in sb.events {
                            if dedup.admit(&mut ev, &mut batch.state) {
                                s.appended += 1;
                                batch.events.push(ev);
                            } else {
                                s.duplicates += 1;
                            }
                        }
                        batch.state.extend(sb.state);
                        summaries.push(s);
                        replies.push(reply);
                    }
                    let decisions = dedup.start();
                    match log.start_append(batch).await {
                        Ok(done) => in_flight.push_back(InFlight { done, decisions, replies, summaries }),
                        Err(e) => {
                            fail_all(replies.into_iter(), in_flight.drain(..), &e);
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = done.send(true);
    result
}

fn fail_all(
    replies: impl Iterator<Item = oneshot::Sender<Result<AppendSummary, String>>>,
    in_flight: impl Iterator<Item = InFlight>,
    e: &crate::error::LogError,
) {
    for reply in replies.chain(in_flight.flat_map(|f| f.replies)) {
        let _ = reply.send(Err(e.to_string()));
    }
}

/// Dedup decisions of one append: status URI (hashed) → fingerprint.
struct Staged {
    seq: u64,
    decisions: Vec<(u128, Fp)>,
}

/// A status URI as the dedup index keeps it in memory: its 128-bit xxh3 hash
/// (the SQLite log keys its table the same way; a collision, 2^-128 per pair,
/// would make two posts look like one).
fn key_hash(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

/// The hash is already uniform: its low bits are the table hash.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64(bytes);
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type KeyMap<V> = HashMap<u128, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// A fingerprint as stored in the `seen` namespace: 16 hex digits (kept as their
/// number), `deleted`, or (from other writers) any text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fp {
    Never,
    Deleted,
    Hex(u64),
    Text(Box<str>),
}

impl Fp {
    fn of(v: &str) -> Fp {
        match v {
            "" => Fp::Never,
            DELETED => Fp::Deleted,
            _ if v.len() == 16 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                u64::from_str_radix(v, 16).map(Fp::Hex).unwrap_or_else(|_| Fp::Text(v.into()))
            }
            _ => Fp::Text(v.into()),
        }
    }
}

/// The dedup index: an in-memory cache in front of the log's `seen` namespace.
/// Decisions are staged per append and only enter the cache once it is durable;
/// meanwhile later batches see them (a post in two batches in flight is
/// appended once).
struct Dedup {
    cache: KeyMap<Fp>,
    /// The batch being built.
    staged: KeyMap<Fp>,
    /// Latest decision per key among appends in flight, with its append's seq.
    in_flight: KeyMap<(u64, Fp)>,
    next_seq: u64,
    capacity: usize,
}

impl Dedup {
    fn new(capacity: usize) -> Self {
        Dedup { cache: KeyMap::default(), staged: KeyMap::default(), in_flight: KeyMap::default(), next_seq: 0, capacity }
    }

    /// Those of `keys` whose index entry is not cached yet.
    fn missing<'k>(&mut self, keys: impl Iterator<Item = &'k str>) -> Vec<String> {
        if self.cache.len() > self.capacity {
            self.cache.clear();
        }
        keys.filter(|k| !self.cache.contains_key(&key_hash(k))).map(str::to_string).collect()
    }

    /// Load the index entries of `missing` (from [`Self::missing`]).
    async fn prefetch(&mut self, log: &dyn Log, missing: Vec<String>) -> Result<(), crate::error::LogError> {
        if missing.is_empty() {
            return Ok(());
        }
        let found = log.state_get_many(SEEN_NS, &missing).await?;
        for k in missing {
            let v = found.get(&k).map(|v| Fp::of(v)).unwrap_or(Fp::Never);
            self.cache.insert(key_hash(&k), v);
        }
        Ok(())
    }

    /// Whether to append `ev`; may turn a `Created` into an `Updated` (an edit seen
    /// first through REST). Records the new fingerprint in `state`.
    fn admit(&mut self, ev: &mut EncodedEvent, state: &mut Vec<StatePut>) -> bool {
        let h = key_hash(ev.key());
        let fp = Fp::of(ev.fingerprint());
        let keep = match (ev.kind(), self.current(h)) {
            (_, Fp::Deleted) => false,
            (EventKind::Deleted, _) => true,
            (_, p) if *p == fp => false,
            (EventKind::Created, Fp::Never) => true,
            (EventKind::Created, _) => {
                ev.set_kind(EventKind::Updated);
                true
            }
            (EventKind::Updated, _) => true,
        };
        if keep {
            state.push(StatePut::set(SEEN_NS, ev.key(), ev.fingerprint()));
            self.staged.insert(h, fp);
        }
        keep
    }

    fn current(&self, h: u128) -> &Fp {
        // Later decisions see earlier ones: this batch's, then those in flight.
        if let Some(v) = self.staged.get(&h) {
            return v;
        }
        if let Some((_, v)) = self.in_flight.get(&h) {
            return v;
        }
        self.cache.get(&h).unwrap_or(&Fp::Never)
    }

    /// The batch being built is handed to the log: its decisions are in flight.
    fn start(&mut self) -> Staged {
        let seq = self.next_seq;
        self.next_seq += 1;
        let decisions: Vec<(u128, Fp)> = self.staged.drain().collect();
        for (k, v) in &decisions {
            self.in_flight.insert(*k, (seq, v.clone()));
        }
        Staged { seq, decisions }
    }

    /// That append is durable: its decisions are the index now.
    fn commit(&mut self, staged: Staged) {
        for (k, v) in staged.decisions {
            if self.in_flight.get(&k).is_some_and(|(seq, _)| *seq == staged.seq) {
                self.in_flight.remove(&k);
            }
            self.cache.insert(k, v);
        }
    }
}

/// How a channel task learns it must stop: `stop` at the drain deadline, and
/// `draining` once no more events can arrive (shutdown, or finite sources done).
struct Halt {
    stop: CancellationToken,
    draining: watch::Receiver<bool>,
    drain: Duration,
    channel_closed: bool,
}

impl Halt {
    fn draining(&self) -> bool {
        self.channel_closed || *self.draining.borrow()
    }

    /// Wait `d` before retrying. False when stopped, or when draining and the
    /// wait would outlast the drain deadline: the events stay in the log for
    /// the next start instead of holding the shutdown up.
    async fn sleep(&mut self, d: Duration) -> bool {
        let end = tokio::time::Instant::now() + d;
        loop {
            if self.draining() && end.saturating_duration_since(tokio::time::Instant::now()) > self.drain {
                info!(wait = ?d, "Not waiting past the drain deadline; undelivered events resume on the next start");
                return false;
            }
            let watching = !self.draining();
            tokio::select! {
                _ = tokio::time::sleep_until(end) => return true,
                _ = self.stop.cancelled() => return false,
                r = self.draining.changed(), if watching => {
                    if r.is_err() {
                        self.channel_closed = true;
                    }
                }
            }
        }
    }
}

async fn run_channel(log: Arc<dyn Log>, mut ch: ChannelSpec, status: Status, mut halt: Halt) -> Result<(), String> {
    let mut consumer = log.consumer(&ch.group).await.map_err(|e| e.to_string())?;
    let mut backoff = Backoff::new(ch.retry.initial, ch.retry.max);
    let ctx = crate::component::SinkContext { name: ch.name.clone(), log: log.clone(), status: status.clone() };
    // Open the sink, pausing on auth/config errors like a write would; the
    // hard stop interrupts an open that hangs (an unreachable service).
    loop {
        let opened = tokio::select! {
            r = ch.sink.open(&ctx) => r,
            _ = halt.stop.cancelled() => {
                status.set_state("stopped", Some("drain deadline reached before the channel opened".into()));
                return Ok(());
            }
        };
        match opened {
            Ok(()) => break,
            Err(e) => {
                if !wait_after_error(ch.retry.pause, &status, &e, &mut backoff, &mut halt).await {
                    return Ok(());
                }
            }
        }
    }
    backoff.reset();
    status.set_state("running", None);
    info!(group = %ch.group, "Channel started");
    let wait = ch.batch.linger.max(Duration::from_millis(1));
    loop {
        if halt.stop.is_cancelled() {
            break;
        }
        let finished_input = halt.draining();
        let poll_wait = if finished_input { Duration::ZERO } else { Duration::from_millis(250).max(wait) };
        let mut recs = tokio::select! {
            r = consumer.poll(ch.batch.max_records, poll_wait) => r.map_err(|e| e.to_string())?,
            _ = halt.stop.cancelled() => break,
        };
        if let Some(parts) = consumer.take_assignment() {
            // Before the first records of newly owned partitions.
            loop {
                match ch.sink.partitions_assigned(&parts).await {
                    Ok(()) => break,
                    Err(e) => {
                        if !wait_after_error(ch.retry.pause, &status, &e, &mut backoff, &mut halt).await {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if recs.is_empty() {
            if finished_input {
                break;
            }
            continue;
        }
        // Linger briefly to fill a batch.
        if recs.len() < ch.batch.max_records && !ch.batch.linger.is_zero() && !finished_input {
            let more = consumer
                .poll(ch.batch.max_records - recs.len(), ch.batch.linger)
                .await
                .map_err(|e| e.to_string())?;
            recs.extend(more);
        }
        // The last position of every partition in the batch (a distributed log
        // hands out several partitions at once).
        let upto: Vec<Position> = max_positions(recs.iter().map(|r| r.position))
            .into_iter()
            .map(|(partition, offset)| Position { partition, offset })
            .collect();
        let total = recs.len() as u64;
        let selected: Vec<LogRecord> = match &ch.route {
            None => recs,
            Some(route) => {
                let mut keep = Vec::with_capacity(recs.len());
                for r in recs {
                    match r.event() {
                        Ok(ev) => {
                            if route(ev) {
                                keep.push(r)
                            }
                        }
                        Err(e) => {
                            error!(offset = r.position.offset, error = %e, "Undecodable record in the log; dead-lettered");
                            if let Err(io) = ch.dead_letter.record(&ch.name, &e.to_string(), &r) {
                                return Err(format!("cannot dead-letter a corrupt record: {io}"));
                            }
                            status.count("dead_lettered", 1);
                        }
                    }
                }
                keep
            }
        };
        status.count("filtered", total - selected.len() as u64);
        // Split by bytes as well as count.
        let mut start = 0;
        while start < selected.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < selected.len() && (end == start || bytes + selected[end].payload.len() <= ch.batch.max_bytes) {
                bytes += selected[end].payload.len();
                end += 1;
            }
            if !deliver(&mut ch, &status, &selected[start..end], &mut backoff, &mut halt).await {
                // Stopped at the deadline: leave the rest uncommitted.
                status.set_state("stopped", Some("drain deadline".into()));
                let _ = ch.sink.close().await;
                return Ok(());
            }
            start = end;
        }
        consumer.commit(&upto, vec![]).await.map_err(|e| e.to_string())?;
        status.count("delivered", selected.len() as u64);
        if !selected.is_empty() {
            status.saw_event();
        }
    }
    if let Err(e) = ch.sink.close().await {
        warn!(error = %e, "Channel close failed");
    }
    status.set_state("stopped", None);
    Ok(())
}

/// Deliver one batch, retrying and dead-lettering as the error kinds say.
/// Returns false if stopped before the batch was fully handled.
async fn deliver(
    ch: &mut ChannelSpec,
    status: &Status,
    batch: &[LogRecord],
    backoff: &mut Backoff,
    halt: &mut Halt,
) -> bool {
    let mut rest = batch;
    while !rest.is_empty() {
        let res = tokio::select! {
            r = ch.sink.write(rest) => r,
            _ = halt.stop.cancelled() => return false,
        };
        match res {
            Ok(()) => {
                backoff.reset();
                if status.snapshot().state != "running" {
                    status.set_state("running", None);
                    status.set_resumes_at(None);
                }
                debug!(records = rest.len(), "Batch delivered");
                return true;
            }
            Err(e) if e.kind == ErrorKind::Permanent => {
                let idx = e.failed_index.unwrap_or(0).min(rest.len() - 1);
                let whole = e.failed_index.is_none();
                let bad = if whole { rest } else { &rest[idx..=idx] };
                for rec in bad {
                    warn!(offset = rec.position.offset, reason = %e.message, "Event rejected; dead-lettered");
                    if let Err(io) = ch.dead_letter.record(&ch.name, &e.message, rec) {
                        error!(error = %io, path = %ch.dead_letter.path().display(), "Cannot write the dead-letter file; retrying the event");
                        if !halt.sleep(backoff.next_delay()).await {
                            return false;
                        }
                        continue;
                    }
                    status.count("dead_lettered", 1);
                    metrics::counter!("fedistream_events_dead_lettered_total", "component" => "channel").increment(1);
                }
                rest = if whole { &[] } else { &rest[idx + 1..] };
            }
            Err(e) => {
                if !wait_after_error(ch.retry.pause, status, &e, backoff, halt).await {
                    return false;
                }
            }
        }
    }
    true
}

async fn wait_after_error(
    pause: Duration,
    status: &Status,
    e: &SinkError,
    backoff: &mut Backoff,
    halt: &mut Halt,
) -> bool {
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
    status.set_resumes_at(Some(chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()));
    halt.sleep(delay).await
}

/// The position to resume after, per partition, from a list (helper for sinks
/// that find their own progress in their output).
pub fn max_positions(positions: impl IntoIterator<Item = Position>) -> HashMap<u32, u64> {
    let mut m = HashMap::new();
    for p in positions {
        let e = m.entry(p.partition).or_insert(0);
        *e = (*e).max(p.offset);
    }
    m
}

#[cfg(test)]
mod tests;
