//! Drives a pipeline: sources → ingestor (dedup + durable append) → the
//! `events` topic → processors (each a consumer group writing other topics) →
//! channels (each a consumer group of one topic: route filter, batching,
//! retries, dead letters, commits).
//!
//! * [`ingest`]: the single writer in front of the log (group commit, dedup).
//! * [`processor`]: processor tasks (outputs, state and input offset in one commit).
//! * [`channel`]: channel tasks (deferred acknowledgements, commits in log order).
//! * [`supervise`]: restarts with backoff, drain signals.
//!
//! Back-pressure: sources wait on a bounded ingest queue and on the durable
//! append; processors and channels pull from the log at their own pace, so a
//! slow channel never slows ingest or the other channels (the log is the buffer).
//!
//! Supervision: every component runs under a supervisor. A component that
//! fails with a retryable error (the disk was full, a read failed, a broker went
//! away) is shown as `failed` with its reason, and restarted with backoff; one
//! that cannot recover stays `failed` and makes the run's exit code non-zero.
//!
//! Shutdown: cancelling the token stops the sources; the ingestor appends what
//! they already handed over; processors then channels deliver up to the head,
//! flush and close their sinks and commit; whatever is still running at the
//! drain deadline is named and aborted (its records stay uncommitted and are
//! delivered on the next start).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::component::{DeadLetter, Emitter, IngestRequest, Processor, Progress, Sink, Source, SourceContext, Status};
use crate::error::{ComponentError, ErrorKind, LogError};
use crate::event::{Event, Position};
use crate::log::Log;

mod channel;
mod ingest;
mod processor;
mod supervise;

pub use ingest::SEEN_NS;
use supervise::{Halt, Supervisor};

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
        RetryConfig { initial: Duration::from_millis(200), max: Duration::from_secs(60), pause: Duration::from_secs(300) }
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
    /// Requests a sink may have in flight at once, for sinks that can overlap
    /// them (webhook; unset: the sink's own default, 4 for the webhook):
    /// delivered in order per account, committed in log order. Sinks that
    /// cannot (file, stdout) write one batch at a time whatever it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
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
            max_in_flight: None,
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

/// A channel: a sink fed by a consumer group of one topic.
pub struct ChannelSpec {
    pub name: String,
    /// Consumer group; one per channel.
    pub group: String,
    /// The topic it reads (`events` for posts, `stats`, …).
    pub topic: String,
    pub sink: Box<dyn Sink>,
    /// Which events the channel takes; `None`: all (no decoding needed). Only
    /// for the `events` topic.
    pub route: Option<RouteFn>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub dead_letter: DeadLetter,
}

/// A processor: a consumer group of its input topic writing other topics.
pub struct ProcessorSpec {
    pub name: String,
    pub group: String,
    pub input: String,
    pub processor: Box<dyn Processor>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub dead_letter: DeadLetter,
}

/// Makes a source anew for each (re)start.
pub type SourceFactory = Box<dyn FnMut() -> Box<dyn Source> + Send>;

/// A source, restartable after transient failures when it has a factory.
pub struct SourceSpec {
    pub name: String,
    make: SourceFactory,
    /// Made ahead of the run (to ask whether it is finite); used first.
    made: Option<Box<dyn Source>>,
    restartable: bool,
    pub dead_letter: DeadLetter,
}

impl SourceSpec {
    /// A source that runs once: if it fails, it stays failed.
    pub fn new(name: impl Into<String>, source: Box<dyn Source>, dead_letter: DeadLetter) -> Self {
        let mut once = Some(source);
        let make: SourceFactory = Box::new(move || once.take().unwrap_or_else(|| Box::new(Failed) as Box<dyn Source>));
        SourceSpec { name: name.into(), make, made: None, restartable: false, dead_letter }
    }

    /// A source made by `make`, made anew and restarted after a transient failure.
    pub fn restartable(name: impl Into<String>, make: SourceFactory, dead_letter: DeadLetter) -> Self {
        SourceSpec { name: name.into(), make, made: None, restartable: true, dead_letter }
    }

    /// Whether the source's input ends (a replay), so a run can finish by itself.
    pub fn is_finite(&mut self) -> bool {
        let src = self.made.get_or_insert_with(|| (self.make)());
        src.is_finite()
    }

    fn take(&mut self) -> Box<dyn Source> {
        self.made.take().unwrap_or_else(|| (self.make)())
    }
}

/// Stands in for a run-once source asked to run again (never happens: such a
/// source is not restarted).
struct Failed;

#[async_trait::async_trait]
impl Source for Failed {
    async fn run(self: Box<Self>, _ctx: SourceContext) -> Result<(), crate::error::SourceError> {
        Err(crate::error::SourceError::new(ErrorKind::Internal, "this source cannot be restarted"))
    }
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
    /// This process's worker name (`--worker`, else the host name), handed to
    /// sinks in their context.
    pub worker: String,
    pub status_interval: Duration,
    pub retention_interval: Duration,
    /// Backoff of source restarts after transient failures.
    pub source_retry: RetryConfig,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            drain_deadline: Duration::from_secs(30),
            ingest_queue: 64,
            ingest_max_events: 4096,
            appends_in_flight: 4,
            status_scope: None,
            worker: "worker".into(),
            status_interval: Duration::from_secs(2),
            retention_interval: Duration::from_secs(60),
            source_retry: RetryConfig { initial: Duration::from_secs(1), max: Duration::from_secs(300), pause: Duration::from_secs(300) },
        }
    }
}

pub struct Pipeline {
    pub log: Arc<dyn Log>,
    pub sources: Vec<SourceSpec>,
    pub processors: Vec<ProcessorSpec>,
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
    /// The ingestor: events appended and duplicates suppressed.
    pub log: ComponentSummary,
    pub sources: Vec<ComponentSummary>,
    pub processors: Vec<ComponentSummary>,
    pub channels: Vec<ComponentSummary>,
    /// Components that failed and could not recover.
    pub failures: Vec<ComponentError>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Source,
    Processor,
    Channel,
}

/// Run until every source has finished (then drain and return) or `shutdown` is
/// cancelled. Only returns `Err` if the log itself fails.
pub async fn run(p: Pipeline, shutdown: CancellationToken) -> Result<RunSummary, LogError> {
    let log = p.log.clone();
    let opts = p.options.clone();
    let (tx, rx) = mpsc::channel::<IngestRequest>(opts.ingest_queue);
    let emitter = Emitter { tx };
    let (ingest_done_tx, ingest_done_rx) = watch::channel(false);
    let scope = opts.status_scope.as_deref();
    let ingest_status = Status::scoped("ingest", "log", scope);
    let ingest = tokio::spawn(
        ingest::ingestor(log.clone(), rx, opts.ingest_max_events, opts.appends_in_flight, ingest_status.clone(), ingest_done_tx)
            .instrument(tracing::info_span!("ingest")),
    );

    let mut statuses: Vec<(String, Status, Kind)> = Vec::new();
    let mut failures: Vec<ComponentError> = Vec::new();
    let hard_stop = CancellationToken::new(); // at the drain deadline
    let halt = |draining: &watch::Receiver<bool>| Halt {
        stop: hard_stop.clone(),
        draining: draining.clone(),
        drain: opts.drain_deadline,
        closed: false,
    };

    // Processors, then channels, so they are reading before the first append.
    // Their input cannot grow once the ingestor is done (events) or, for the
    // topics processors write, once every processor is done too.
    let (procs_done_tx, procs_done_rx) = watch::channel(false);
    let mut processor_tasks = JoinSet::new();
    for spec in p.processors {
        let status = Status::scoped("processor", &spec.name, scope);
        statuses.push((spec.name.clone(), status.clone(), Kind::Processor));
        let span = tracing::info_span!("processor", component = "processor", id = %spec.name);
        let (log, h) = (log.clone(), halt(&ingest_done_rx));
        processor_tasks.spawn(processor::processor_task(log, spec, status, h).instrument(span));
    }
    let mut channel_tasks = JoinSet::new();
    for ch in p.channels {
        let status = Status::scoped("channel", &ch.name, scope);
        statuses.push((ch.name.clone(), status.clone(), Kind::Channel));
        let span = tracing::info_span!("channel", component = "channel", id = %ch.name);
        let input_done = if ch.topic == crate::log::EVENTS { &ingest_done_rx } else { &procs_done_rx };
        let (log, h, worker) = (log.clone(), halt(input_done), opts.worker.clone());
        channel_tasks.spawn(channel::channel_task(log, ch, status, h, worker).instrument(span));
    }

    let all_finite = !p.sources.is_empty();
    let source_token = shutdown.child_token();
    let mut source_tasks = JoinSet::new();
    let mut finite = all_finite;
    let (_never_tx, never_draining) = watch::channel(false);
    for mut s in p.sources {
        let status = Status::scoped("source", &s.name, scope);
        statuses.push((s.name.clone(), status.clone(), Kind::Source));
        finite &= s.is_finite();
        let first = s.take();
        let ctx = SourceContext {
            name: s.name.clone(),
            emitter: emitter.clone(),
            log: log.clone(),
            shutdown: source_token.clone(),
            status: status.clone(),
            dead_letter: s.dead_letter.clone(),
            progress: p.progress.clone(),
        };
        let span = tracing::info_span!("source", id = %s.name);
        // A source waiting to restart stops waiting at shutdown.
        let mut h = Halt { stop: source_token.clone(), draining: never_draining.clone(), drain: opts.drain_deadline, closed: false };
        let retry = opts.source_retry.clone();
        source_tasks.spawn(
            async move {
                let mut sup = Supervisor::new(&status, &retry);
                let mut next = Some(first);
                loop {
                    let src = next.take().unwrap_or_else(|| s.take());
                    status.set_state("running", None);
                    let r = src.run(ctx.clone()).await;
                    let r = match r {
                        Ok(()) => {
                            info!("Source finished");
                            status.set_state("finished", None);
                            Ok(())
                        }
                        Err(e) => {
                            let mut e = ComponentError::new(format!("source:{}", s.name), e.kind, e.message);
                            if !s.restartable || ctx.shutdown.is_cancelled() {
                                // Nothing to restart with, or stopping anyway.
                                e.kind = if e.kind == ErrorKind::Transient { ErrorKind::Internal } else { e.kind };
                            }
                            Err(e)
                        }
                    };
                    if let Some(end) = sup.after(r, &mut h).await {
                        return end;
                    }
                }
            }
            .instrument(span),
        );
    }
    let finite = finite && all_finite;
    // Without sources (a deliver-only process on a shared log) other processes
    // append: the input only ends at shutdown, so the ingestor stays open until then.
    let keep_open = statuses.iter().all(|(_, _, k)| *k != Kind::Source).then(|| emitter.clone());
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
        let all: Vec<Status> = statuses.iter().map(|(_, s, _)| s.clone()).chain([ingest_status.clone()]).collect();
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
                    Some(Ok(Err(e))) => {
                        error!(component = %e.component, error = %e.message, kind = e.kind.as_str(), "Source stopped");
                        failures.push(e);
                    }
                    Some(Ok(Ok(()))) => {}
                    Some(Err(e)) => {
                        error!(error = %e, "Source task panicked");
                        failures.push(ComponentError::new("source", ErrorKind::Internal, e.to_string()));
                    }
                    None => {}
                }
                if sources_left == 0 {
                    if !finite && !shutdown.is_cancelled() {
                        warn!("Every source has stopped; draining channels and exiting");
                    } else {
                        info!("Every source finished; draining channels");
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
            Ok(Some(Ok(Err(e)))) => {
                error!(component = %e.component, error = %e.message, "Source stopped");
                failures.push(e);
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
        Ok(Err(e)) => Err(LogError::Internal(format!("ingest task failed: {e}"))),
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
    // Processors drain their input, then channels theirs; past the deadline they are stopped.
    join_until(&mut processor_tasks, deadline, &hard_stop, &statuses, Kind::Processor, &mut failures).await;
    let _ = procs_done_tx.send(true);
    join_until(&mut channel_tasks, deadline, &hard_stop, &statuses, Kind::Channel, &mut failures).await;
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
    for (name, st, kind) in statuses {
        let doc = st.snapshot();
        let c = ComponentSummary { name, state: doc.state, counters: doc.counters };
        match kind {
            Kind::Source => summary.sources.push(c),
            Kind::Processor => summary.processors.push(c),
            Kind::Channel => summary.channels.push(c),
        }
    }
    Ok(summary)
}

/// Wait for `tasks` until `deadline`; then stop them (hard stop), giving them a
/// moment to leave without committing what is unfinished.
async fn join_until(
    tasks: &mut JoinSet<Result<(), ComponentError>>,
    deadline: tokio::time::Instant,
    hard_stop: &CancellationToken,
    statuses: &[(String, Status, Kind)],
    kind: Kind,
    failures: &mut Vec<ComponentError>,
) {
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(Ok(())))) => {}
            Ok(Some(Ok(Err(e)))) => {
                error!(component = %e.component, error = %e.message, "Component failed");
                failures.push(e);
            }
            Ok(Some(Err(e))) => failures.push(ComponentError::new("task", ErrorKind::Internal, e.to_string())),
            Ok(None) => break,
            Err(_) => {
                let left: Vec<String> =
                    statuses.iter().filter(|(_, s, k)| *k == kind && s.state() != "stopped").map(|(n, _, _)| n.clone()).collect();
                warn!(components = ?left, "Still delivering at the drain deadline; stopping them (undelivered records resume on next start)");
                hard_stop.cancel();
                while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), tasks.join_next()).await {}
                tasks.abort_all();
                break;
            }
        }
    }
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

#[cfg(test)]
mod fault_tests;
