//! The Kafka log backend: the same [`Log`] contract as the embedded SQLite log,
//! on Apache Kafka.
//!
//! * Events go to `fedistream.<pipeline>.events`, keyed by account (one account's
//!   events stay in order in one partition).
//! * State goes to compacted topics, keyed `ns \x1f key`; a delete is a
//!   tombstone. What names no owner (status, the id index, channels' maps) to
//!   `fedistream.<pipeline>.state`, which every process reads whole; what an
//!   ingest unit owns (checkpoints, windows, the dedup index) to
//!   `….state.slots`, in the partition of the unit's slot; what a consumer
//!   group keeps per input partition (a processor's state) to
//!   `fedistream.<pipeline>.<group>.state`, in that partition. A process keeps
//!   a view of the global topic and of the owned partitions of the work it
//!   holds ([`KafkaLog::own_slots`], a consumer's assignment), filled from the
//!   beginning and then tailed, so state moves with the work between machines
//!   and takes memory in proportion to it (see `state`).
//!   Entries of the dedup index and the prunable namespaces not written within
//!   the state horizon are deleted (tombstones) and leave memory
//!   ([`KafkaLog::prune_state`]), so the view is bounded by recent activity.
//! * An append is one Kafka transaction holding the events *and* the state puts
//!   (the source's checkpoint): consumers read committed only, so after a crash
//!   either both are there or neither is — the contract of [`Log::append`].
//! * Live feeds read without a group ([`KafkaReader`], [`Log::reader`]): they
//!   commit nothing and hold nothing back.
//! * Each channel is a consumer group; [`Consumer::commit`] commits its offsets,
//!   and when it carries state, the offsets go into the same transaction as the
//!   state records (`send_offsets_to_transaction`).
//! * A broker outage makes appends wait and retry (aborting the open
//!   transaction), so sources feel back-pressure and nothing is lost.
//! * Appends of an ingest run carry its group assignment ([`Fence`], through
//!   [`FencedLog`]): a process whose slots went to another member cannot make
//!   any more of them visible.

mod config;
mod consumer;
mod fence;
mod reader;
mod state;
mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fedistream_core::backoff::Backoff;
use fedistream_core::error::LogError;
use fedistream_core::event::Position;
use fedistream_core::log::{AppendBatch, AppendReceipt, Consumer, GroupInfo, Log, LogInfo, StatePut};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::{mpsc, oneshot, OnceCell};
use tracing::{info, warn};

pub use config::KafkaLogConfig;
pub use consumer::KafkaConsumer;
pub use fence::{Fence, FencedLog};
pub use reader::KafkaReader;
use state::StateTable;
use txn::TxnProducer;

/// The Kafka-backed log. Cheap to share (`Arc`).
pub struct KafkaLog {
    cfg: KafkaLogConfig,
    /// Log topics besides `events` known to exist (created on first use).
    created: Arc<tokio::sync::Mutex<std::collections::HashSet<String>>>,
    events_topic: String,
    state: Arc<StateTable>,
    /// The writer task's queue (see [`Writer`]).
    writer: OnceCell<mpsc::UnboundedSender<Job>>,
    /// Metadata and watermark queries.
    meta: Arc<BaseConsumer>,
    timeout: Duration,
    /// When state was last pruned (at most hourly, see `enforce_retention`).
    last_prune: std::sync::Mutex<Option<std::time::Instant>>,
}

/// librdkafka settings shared by every client of a pipeline.
pub fn client_config(cfg: &KafkaLogConfig) -> Result<ClientConfig, LogError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    c.set("client.id", format!("fedistream-{}", cfg.pipeline));
    // Kafka's own logs go through our error callbacks, not stderr.
    c.set("log_level", "3");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    if let Some(var) = &cfg.sasl_password_env {
        let pw = std::env::var(var)
            .map_err(|_| LogError::Open { path: cfg.brokers.clone(), reason: format!("env var {var} (sasl_password_env) is not set") })?;
        c.set("sasl.password", pw);
    }
    Ok(c)
}

pub(crate) fn unavailable(what: &str, brokers: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("{what} (Kafka at {brokers}): {e}"))
}

/// Whether a transaction error means "abort and redo", "give up on this
/// producer", or (appends under a [`Fence`]) "this assignment is gone".
pub(crate) enum TxnFailure {
    Retry(String),
    Fatal(String),
    /// The group coordinator rejected the fence's offset commit: abort, and
    /// never redo it under the same fence.
    Fenced(String),
}

pub(crate) fn classify_txn(e: &KafkaError) -> TxnFailure {
    match e {
        KafkaError::Transaction(rd) if rd.is_fatal() => TxnFailure::Fatal(rd.string()),
        KafkaError::Transaction(rd) => TxnFailure::Retry(rd.string()),
        other => TxnFailure::Retry(other.to_string()),
    }
}

/// Run a blocking librdkafka call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| LogError::Internal(format!("Kafka call failed: {e}")))
}

impl KafkaLog {
    /// Connect, create the pipeline's topics if missing, and load the state view.
    /// Fails within `connect_timeout` with a clear error when the cluster does not answer.
    pub async fn open(cfg: KafkaLogConfig) -> Result<Arc<KafkaLog>, LogError> {
        let problems = cfg.problems();
        if let Some((k, why)) = problems.first() {
            return Err(LogError::Open { path: cfg.brokers.clone(), reason: format!("log.kafka.{k}: {why}") });
        }
        let base = client_config(&cfg)?;
        let timeout = cfg.connect_timeout;
        let meta: BaseConsumer = base
            .clone()
            .set("group.id", format!("{}.meta", cfg.prefix()))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| unavailable("cannot create a Kafka client", &cfg.brokers, e))?;
        let meta = Arc::new(meta);
        {
            let m = meta.clone();
            blocking(move || m.fetch_metadata(None, timeout)).await?.map_err(|e| LogError::Open {
                path: cfg.brokers.clone(),
                reason: format!(
                    "no Kafka broker answered within {timeout:?} ({e}); check log.kafka.brokers, or start one with `scripts/kafka up`"
                ),
            })?;
        }
        ensure_topics(&cfg).await?;
        let state_parts = partitions_of(&meta, &cfg.state_topic(), timeout).await?;
        let slot_parts = partitions_of(&meta, &cfg.state_slots_topic(), timeout).await?;
        if slot_parts.len() != cfg.ingest_slots as usize {
            return Err(LogError::Open {
                path: cfg.brokers.clone(),
                reason: format!(
                    "log.kafka.ingest_slots: is {}, but the topic {} of this pipeline's owned state has {} partitions (one per slot); \
                     the slots of a pipeline cannot change once it has state",
                    cfg.ingest_slots,
                    cfg.state_slots_topic(),
                    slot_parts.len()
                ),
            });
        }
        let state = StateTable::start(&cfg, &base, state_parts, meta.clone())?;
        state.catch_up(timeout.max(Duration::from_secs(30))).await?;
        info!(brokers = %cfg.brokers, pipeline = %cfg.pipeline, keys = state.len(), "Kafka log open");
        Ok(Arc::new(KafkaLog {
            events_topic: cfg.events_topic(),
            created: Default::default(),
            cfg,
            state,
            writer: OnceCell::new(),
            meta,
            timeout,
            last_prune: std::sync::Mutex::new(None),
        }))
    }

    pub fn config(&self) -> &KafkaLogConfig {
        &self.cfg
    }

    /// Create the Kafka topic of log topic `topic` (partitioned like `events`)
    /// if this process has not seen it yet.
    async fn ensure_topic(&self, topic: &str) -> Result<(), LogError> {
        ensure_log_topic(&self.cfg, &self.created, topic).await
    }

    /// Wait until this process's own writes in flight have finished and it has
    /// read every state record committed so far (before taking over accounts or
    /// partitions from another process, or from an earlier run in this one).
    pub async fn catch_up(&self) -> Result<(), LogError> {
        if let Some(jobs) = self.writer.get() {
            let (tx, rx) = oneshot::channel();
            if jobs.send(Job::Barrier(tx)).is_ok() {
                let _ = rx.await;
            }
        }
        self.state.catch_up(Duration::from_secs(60)).await
    }

    /// Keys of the state view held in memory (every namespace): the global
    /// state and that of the ingest slots held ([`KafkaLog::own_slots`]).
    pub fn state_entries(&self) -> usize {
        self.state.len()
    }

    /// Keys held in memory for the ingest slots held, and those slots.
    pub fn slot_state(&self) -> (usize, std::collections::BTreeSet<i32>) {
        self.state.owned_keys(self.state.slots_topic())
    }

    /// Keys held in memory for the input partitions of consumer group
    /// `group` held in this process (state its processors keep per
    /// partition), and those partitions.
    pub fn group_state(&self, group: &str) -> (usize, std::collections::BTreeSet<i32>) {
        self.state.owned_keys(&self.cfg.group_state_topic(group))
    }

    /// Hold the state kept per input partition by consumer group `group`,
    /// every partition of it (tools that read a processor's whole state, such
    /// as `fedistream stats`), then catch up. `topic` is the log topic the
    /// group reads.
    pub async fn own_group_state(&self, group: &str, topic: &str) -> Result<(), LogError> {
        let input = self.cfg.topic(topic);
        let name = ensure_group_state_topic(&self.cfg, &self.meta, group, &input, self.timeout).await?;
        let parts = partitions_of(&self.meta, &input, self.timeout).await?;
        self.state.hold(&name, &parts, &[])?;
        self.catch_up().await
    }

    /// Hold the state owned by the units of exactly these ingest slots
    /// (checkpoints, windows, dedup entries; see `StatePut::owner`): the
    /// state of a slot newly held is read from the beginning of its partition,
    /// that of a slot no longer held leaves memory at once. Then
    /// [`KafkaLog::catch_up`] before following the slots' accounts. A process
    /// holds no slot until it is given some (by the ingest group).
    pub fn own_slots(&self, slots: &std::collections::BTreeSet<i32>) -> Result<(), LogError> {
        self.state.own_slots(slots)
    }

    /// Hold the state of every ingest slot (tools that show the whole
    /// pipeline, such as `fedistream status`), then catch up.
    pub async fn own_all_slots(&self) -> Result<(), LogError> {
        self.state.own_all_slots()?;
        self.catch_up().await
    }

    /// Delete (tombstones on the state topic, and from memory) the entries of
    /// the dedup index and of the prunable namespaces (`prunable` of the
    /// config) last written before `cutoff`. Returns how many went.
    /// (`enforce_retention` calls this hourly with `now - state_horizon`.)
    ///
    /// The writer task picks the entries once every earlier write of this
    /// process is applied, so none of this process's own fresh writes is
    /// deleted. An entry another process rewrites in the instant between
    /// this process reading it as expired and its tombstone committing is
    /// deleted too: the entry was past the horizon, which is the limit of what
    /// dedup promises anyway (`[log] state_horizon` must outlast how far back
    /// sources re-read).
    pub async fn prune_state(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, LogError> {
        let mut namespaces = vec![fedistream_core::runtime::SEEN_NS.to_string()];
        namespaces.extend(self.cfg.prunable.iter().filter(|ns| ns.as_str() != fedistream_core::runtime::SEEN_NS).cloned());
        let (tx, rx) = oneshot::channel();
        self.writer().await?.send(Job::Prune(Prune { namespaces, cutoff: cutoff.timestamp_millis() }, tx)).map_err(|_| writer_stopped())?;
        let removed = rx.await.map_err(|_| writer_stopped())??;
        if removed > 0 {
            info!(removed, horizon_start = %cutoff, "Pruned state entries not written since the horizon");
        }
        Ok(removed)
    }

    /// The writer task's queue; the task and its transactional producer are made
    /// on the first write (status-only users never need one).
    async fn writer(&self) -> Result<&mpsc::UnboundedSender<Job>, LogError> {
        self.writer
            .get_or_try_init(|| async {
                let p = transactional_producer(&self.cfg, "writer", self.timeout).await?;
                let (tx, rx) = mpsc::unbounded_channel();
                let w = Writer {
                    txn: TxnProducer::new(p),
                    events_topic: self.events_topic.clone(),
                    state_table: self.state.clone(),
                    brokers: self.cfg.brokers.clone(),
                };
                tokio::spawn(w.run(rx));
                Ok::<_, LogError>(tx)
            })
            .await
    }

    /// Queue one write (events, then state) for the writer task; its place in
    /// the log is fixed when this returns. The events come encoded (by their
    /// source, see `EncodedEvent`): the writer task only hands bytes to librdkafka.
    async fn start_write(
        &self,
        events: Vec<fedistream_core::EncodedEvent>,
        state: Vec<StatePut>,
        fence: Option<Fence>,
    ) -> Result<oneshot::Receiver<Result<Vec<Position>, LogError>>, LogError> {
        let records = events.into_iter().map(fedistream_core::EncodedEvent::into_stored).collect();
        let state = self.state.route(state, None)?;
        let (tx, rx) = oneshot::channel();
        self.writer().await?.send(Job::Write(Write { records, state, fence }, tx)).map_err(|_| writer_stopped())?;
        Ok(rx)
    }

    /// [`Log::start_append`], under `fence` when given (see [`FencedLog`]).
    pub(crate) async fn start_append_fenced(
        &self,
        batch: AppendBatch,
        fence: Option<Fence>,
    ) -> Result<fedistream_core::log::AppendFuture, LogError> {
        if let Some(why) = fence.as_ref().and_then(Fence::rejection) {
            return Err(LogError::Fenced(why));
        }
        if batch.events.is_empty() && batch.state.is_empty() {
            return Ok(Box::pin(std::future::ready(Ok(AppendReceipt::default()))));
        }
        let done = self.start_write(batch.events, batch.state, fence).await?;
        Ok(Box::pin(async move {
            let positions = done.await.map_err(|_| writer_stopped())??;
            Ok(AppendReceipt { positions })
        }))
    }
}

fn writer_stopped() -> LogError {
    LogError::Internal("the Kafka writer task stopped".into())
}

/// Work for the writer task, in the order it must reach Kafka.
enum Job {
    Write(Write, oneshot::Sender<Result<Vec<Position>, LogError>>),
    /// Answered once every job queued before it has finished.
    Barrier(oneshot::Sender<()>),
    /// Delete expired state entries (see [`KafkaLog::prune_state`]); answered
    /// with how many went.
    Prune(Prune, oneshot::Sender<Result<u64, LogError>>),
}

struct Prune {
    namespaces: Vec<String>,
    /// Milliseconds since the epoch.
    cutoff: i64,
}

/// Tombstones per pruning transaction.
const PRUNE_BATCH: usize = 16_384;

/// One write: records (key = account, JSON payload) and state puts (with
/// where each goes), under the fence of the ingest assignment it was made
/// for, if any.
struct Write {
    records: Vec<(String, std::sync::Arc<str>)>,
    state: state::Routed,
    fence: Option<Fence>,
}

/// Why a group of writes did not commit.
enum WriteFailure {
    /// The producer failed fatally: this write and every later one fail.
    Fatal(String),
    /// Its fence was rejected: this write and later ones under the same fence fail.
    Fenced(String),
}

/// Most events the writer puts in one transaction when several writes wait.
const MAX_GROUP_EVENTS: usize = 16_384;

/// The single writer: owns the transactional producer and runs the queued
/// writes one transaction at a time, in queue order. Writes that queued up
/// while a transaction committed share the next one (group commit) if they
/// carry the same fence (or none). A transaction is retried whole until it
/// commits; a fatal producer error fails it and every write after it, so no
/// later checkpoint covers lost events. A rejected fence fails its write and
/// every later one under that fence, without a transaction; other writes go on.
/// Callers that stop waiting (shutdown) do not cancel anything: a transaction
/// is never left half done.
struct Writer {
    txn: TxnProducer,
    events_topic: String,
    state_table: Arc<StateTable>,
    brokers: String,
}

impl Writer {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut failed: Option<String> = None;
        let mut held: Option<Job> = None;
        loop {
            let job = match held.take() {
                Some(j) => j,
                None => match jobs.recv().await {
                    Some(j) => j,
                    None => return, // the log was dropped and every write is done
                },
            };
            let (mut group, reply) = match job {
                Job::Barrier(done) => {
                    let _ = done.send(());
                    continue;
                }
                Job::Prune(p, done) => {
                    let result = match &failed {
                        Some(e) => Err(e.clone()),
                        None => self.prune(&p).await.inspect_err(|e| failed = Some(e.clone())),
                    };
                    let _ = done.send(result.map_err(|e| unavailable("the Kafka transaction failed fatally", &self.brokers, e)));
                    continue;
                }
                Job::Write(w, reply) => (w, reply),
            };
            let mut replies = vec![(group.records.len(), reply)];
            while group.records.len() < MAX_GROUP_EVENTS {
                match jobs.try_recv() {
                    // One transaction proves one assignment (or none).
                    Ok(Job::Write(w, reply)) if w.fence == group.fence => {
                        replies.push((w.records.len(), reply));
                        group.records.extend(w.records);
                        group.state.extend(w.state);
                    }
                    Ok(other) => {
                        held = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let result = match (&failed, group.fence.as_ref().and_then(Fence::rejection)) {
                (Some(e), _) => Err(WriteFailure::Fatal(e.clone())),
                (None, Some(why)) => Err(WriteFailure::Fenced(why)),
                (None, None) => self.commit(&group).await,
            };
            match result {
                Ok(positions) => {
                    let mut rest = positions.into_iter();
                    for (n, reply) in replies {
                        let _ = reply.send(Ok(rest.by_ref().take(n).collect()));
                    }
                }
                Err(WriteFailure::Fatal(e)) => {
                    failed = Some(e.clone());
                    for (_, reply) in replies {
                        let _ = reply.send(Err(unavailable("the Kafka transaction failed fatally", &self.brokers, &e)));
                    }
                }
                Err(WriteFailure::Fenced(why)) => {
                    for (_, reply) in replies {
                        let _ = reply.send(Err(LogError::Fenced(why.clone())));
                    }
                }
            }
        }
    }

    /// Write tombstones for the entries `p` finds expired, in transactions of
    /// [`PRUNE_BATCH`]. Runs between writes: every earlier write of this
    /// process is in the view by now.
    /// A failure is the producer's fatal error (no fence: never `Fenced`).
    async fn prune(&mut self, p: &Prune) -> Result<u64, String> {
        let expired = self.state_table.expired(&p.namespaces, p.cutoff);
        let mut removed = 0u64;
        for chunk in expired.chunks(PRUNE_BATCH) {
            let w = Write { records: vec![], state: chunk.to_vec(), fence: None };
            match self.commit(&w).await {
                Ok(_) => removed += chunk.len() as u64,
                Err(WriteFailure::Fatal(e) | WriteFailure::Fenced(e)) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Commit `w` as one transaction, retrying until it commits, the producer
    /// fails fatally, or the group rejects its fence.
    async fn commit(&mut self, w: &Write) -> Result<Vec<Position>, WriteFailure> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.attempt(w).await {
                Ok(pos) => return Ok(pos),
                Err(TxnFailure::Fatal(e)) => return Err(WriteFailure::Fatal(e)),
                Err(TxnFailure::Fenced(e)) => {
                    // Abort now (not at the next begin): nothing of it may
                    // become visible, and the fence is never tried again.
                    match self.txn.abort().await {
                        Ok(()) => {}
                        Err(TxnFailure::Fatal(f) | TxnFailure::Retry(f) | TxnFailure::Fenced(f)) => return Err(WriteFailure::Fatal(f)),
                    }
                    let fence = w.fence.as_ref().expect("only fenced writes are rejected");
                    let why = fence.reject(&e);
                    tracing::debug!(error = %e, generation = fence.generation(), "Kafka append fenced; transaction aborted");
                    return Err(WriteFailure::Fenced(why));
                }
                Err(TxnFailure::Retry(e)) => {
                    let d = backoff.next_delay();
                    warn!(error = %e, retry_in = ?d, attempt = backoff.attempts(), "Kafka append failed; retrying the whole transaction");
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    async fn attempt(&mut self, w: &Write) -> Result<Vec<Position>, TxnFailure> {
        // A failure returns with the transaction open: the next `begin` aborts it.
        let t0 = std::time::Instant::now();
        self.txn.begin().await?;
        let begun = t0.elapsed();
        let producer = &self.txn.producer.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let mut deliveries = Vec::with_capacity(w.records.len());
        for (account, payload) in &w.records {
            let rec = FutureRecord::to(&self.events_topic).key(account.as_str()).payload(payload.as_bytes()).timestamp(now);
            deliveries.push(send_with_room(producer, rec).await.map_err(|e| classify_txn(&e))?);
        }
        let sent_state = state::send_state(producer, self.state_table.global_topic(), &w.state).await?;
        if let Some(fence) = &w.fence {
            // The proof of ownership, as late as possible (the records are on
            // their way meanwhile): the group coordinator rejects it if the
            // assignment is gone, and the transaction is aborted.
            self.txn.send_offsets(fence.offsets(), fence.metadata()).await?;
        }
        let sent = t0.elapsed();
        self.txn.commit().await?;
        tracing::debug!(
            events = w.records.len(),
            begin_us = begun.as_micros() as u64,
            send_us = (sent - begun).as_micros() as u64,
            commit_us = (t0.elapsed() - sent).as_micros() as u64,
            "Kafka transaction committed"
        );
        let mut positions = Vec::with_capacity(w.records.len());
        for d in deliveries {
            let delivered = match d.await {
                Ok(Ok(d)) => d,
                Ok(Err((e, _))) => return Err(TxnFailure::Fatal(format!("a record of a committed transaction failed: {e}"))),
                Err(_) => return Err(TxnFailure::Fatal("the producer dropped a delivery report".into())),
            };
            positions.push(Position { partition: delivered.partition as u32, offset: delivered.offset as u64 });
        }
        sent_state.applied_to(&self.state_table, &w.state).await?;
        Ok(positions)
    }
}

/// Send, waiting for room when the producer's queue is full (also used by
/// `fedistream bench kafka`'s librdkafka baselines).
pub async fn send_with_room<'a, K, P>(
    producer: &FutureProducer,
    mut rec: FutureRecord<'a, K, P>,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(rec) {
            Ok(d) => return Ok(d),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                producer.poll(Duration::from_millis(10));
                tokio::task::yield_now().await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// How long a transaction may stay open before the broker aborts it (a
/// process paused mid-transaction holds it that long at most).
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A transactional, idempotent producer (acks=all), initialised.
pub(crate) async fn transactional_producer(cfg: &KafkaLogConfig, role: &str, timeout: Duration) -> Result<FutureProducer, LogError> {
    let id = format!("{}.{role}.{}-{}-{:08x}", cfg.prefix(), hostname(), std::process::id(), rand::random::<u32>());
    let p: FutureProducer = client_config(cfg)?
        .set("transactional.id", &id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &cfg.compression)
        // A transaction commits only once its last records are sent: linger
        // delays the tail of every one (under load the batches fill anyway).
        .set("linger.ms", "1")
        .set("transaction.timeout.ms", TRANSACTION_TIMEOUT.as_millis().to_string())
        // A transaction begun right after the previous commit can meet the
        // coordinator still writing that one's markers (CONCURRENT_TRANSACTIONS)
        // and is retried after this backoff (librdkafka's default is 100 ms).
        .set("retry.backoff.ms", "5")
        .set("retry.backoff.max.ms", "200")
        .set("message.timeout.ms", "55000")
        .create()
        .map_err(|e| unavailable("cannot create a Kafka producer", &cfg.brokers, e))?;
    let q = p.clone();
    blocking(move || q.init_transactions(timeout))
        .await?
        .map_err(|e| unavailable("cannot start Kafka transactions (is the broker's transaction log available?)", &cfg.brokers, e))?;
    Ok(p)
}

pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "host".into())
}

async fn ensure_topics(cfg: &KafkaLogConfig) -> Result<(), LogError> {
    let events = cfg.events_topic();
    let state = cfg.state_topic();
    let ingest = cfg.ingest_topic();
    let repl = || TopicReplication::Fixed(cfg.replication as i32);
    let retention = Retention::of(cfg);
    let ev = retention.set(NewTopic::new(&events, cfg.partitions, repl()));
    let st = NewTopic::new(&state, cfg.partitions, repl()).set("cleanup.policy", "compact");
    // Owned state: one partition per ingest slot (made on upgrade too).
    let slots = cfg.state_slots_topic();
    let st_slots = NewTopic::new(&slots, cfg.ingest_slots, repl()).set("cleanup.policy", "compact");
    let ing = NewTopic::new(&ingest, cfg.ingest_slots, repl());
    create_topics(cfg, &[&ev, &st, &st_slots, &ing], "the pipeline's topics").await
}

/// The retention of the log topics (events, processor outputs) as topic configs.
struct Retention {
    ms: Option<String>,
    bytes: Option<String>,
}

impl Retention {
    fn of(cfg: &KafkaLogConfig) -> Self {
        Retention { ms: cfg.max_age.map(|d| d.as_millis().to_string()), bytes: cfg.max_size.map(|b| b.to_string()) }
    }

    fn set<'a>(&'a self, mut t: NewTopic<'a>) -> NewTopic<'a> {
        if let Some(ms) = &self.ms {
            t = t.set("retention.ms", ms);
        }
        if let Some(b) = &self.bytes {
            t = t.set("retention.bytes", b);
        }
        t
    }
}

/// Create the compacted state topic `name` with `partitions` partitions if missing.
pub(crate) async fn ensure_state_topic(cfg: &KafkaLogConfig, name: &str, partitions: i32) -> Result<(), LogError> {
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(cfg.replication as i32)).set("cleanup.policy", "compact");
    create_topics(cfg, &[&t], &format!("the topic {name}")).await
}

/// Create the topics `ts` (`what`, for the error) unless they exist.
async fn create_topics(cfg: &KafkaLogConfig, ts: &[&NewTopic<'_>], what: &str) -> Result<(), LogError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(cfg)?.create().map_err(|e| unavailable("cannot create a Kafka admin client", &cfg.brokers, e))?;
    let opts = AdminOptions::new().operation_timeout(Some(cfg.connect_timeout)).request_timeout(Some(cfg.connect_timeout));
    let results =
        admin.create_topics(ts.iter().copied(), &opts).await.map_err(|e| unavailable(&format!("cannot create {what}"), &cfg.brokers, e))?;
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, "Created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(LogError::Open {
                    path: cfg.brokers.clone(),
                    reason: format!("cannot create topic {t}: {code} (check log.kafka.replication and the ACLs)"),
                })
            }
        }
    }
    Ok(())
}

/// The state topic of consumer group `group`, which reads log topic `topic`
/// (one partition per input partition), created if missing and known to the
/// metadata client (until it has seen a new topic's partitions, their
/// watermarks — `catch_up` — are "unknown partition").
pub(crate) async fn ensure_group_state_topic(
    cfg: &KafkaLogConfig,
    meta: &Arc<BaseConsumer>,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Arc<str>, LogError> {
    let name: Arc<str> = cfg.group_state_topic(group).into();
    let parts = partitions_of(meta, topic, timeout).await?;
    ensure_state_topic(cfg, &name, parts.len() as i32).await?;
    partitions_of(meta, &name, timeout).await?;
    Ok(name)
}

/// Create the Kafka topic of log topic `topic` once per process (processor
/// outputs such as `stats`), with the events topic's partitions and retention.
pub(crate) async fn ensure_log_topic(
    cfg: &KafkaLogConfig,
    created: &tokio::sync::Mutex<std::collections::HashSet<String>>,
    topic: &str,
) -> Result<(), LogError> {
    let mut known = created.lock().await;
    if known.contains(topic) {
        return Ok(());
    }
    let name = cfg.topic(topic);
    let retention = Retention::of(cfg);
    let t = retention.set(NewTopic::new(&name, cfg.partitions, TopicReplication::Fixed(cfg.replication as i32)));
    create_topics(cfg, &[&t], &format!("the topic {name}")).await?;
    known.insert(topic.to_string());
    Ok(())
}

pub(crate) async fn partitions_of(meta: &Arc<BaseConsumer>, topic: &str, timeout: Duration) -> Result<Vec<i32>, LogError> {
    let m = meta.clone();
    let t = topic.to_string();
    // Freshly created topics can take a moment to show their partitions.
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (m2, t2) = (m.clone(), t.clone());
        let md = blocking(move || m2.fetch_metadata(Some(&t2), timeout)).await?;
        if let Ok(md) = md {
            if let Some(tm) = md.topics().iter().find(|x| x.name() == t) {
                if tm.error().is_none() && !tm.partitions().is_empty() {
                    return Ok(tm.partitions().iter().map(|p| p.id()).collect());
                }
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(LogError::Unavailable(format!("topic {t} has no partitions after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Low and high watermarks per partition; retried for a while, since a freshly
/// created topic answers "not leader" until its partitions have one.
pub(crate) async fn watermarks(meta: &Arc<BaseConsumer>, topic: &str, parts: &[i32]) -> Result<HashMap<i32, (i64, i64)>, LogError> {
    let (m, t, parts) = (meta.clone(), topic.to_string(), parts.to_vec());
    blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut out = HashMap::new();
        for p in parts {
            loop {
                match m.fetch_watermarks(&t, p, Duration::from_secs(10)) {
                    Ok(w) => {
                        out.insert(p, w);
                        break;
                    }
                    Err(e) if std::time::Instant::now() < deadline => {
                        tracing::debug!(topic = %t, partition = p, error = %e, "Watermarks not available yet");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(LogError::Unavailable(format!("watermarks of {t}/{p}: {e}"))),
                }
            }
        }
        Ok(out)
    })
    .await?
}

#[async_trait]
impl Log for KafkaLog {
    async fn append(&self, batch: AppendBatch) -> Result<AppendReceipt, LogError> {
        self.start_append(batch).await?.await
    }

    async fn start_append(&self, batch: AppendBatch) -> Result<fedistream_core::log::AppendFuture, LogError> {
        self.start_append_fenced(batch, None).await
    }

    async fn state_get(&self, ns: &str, key: &str) -> Result<Option<String>, LogError> {
        Ok(self.state.get(ns, key))
    }

    async fn state_get_many(&self, ns: &str, keys: &[String]) -> Result<HashMap<String, String>, LogError> {
        Ok(self.state.get_many(ns, keys))
    }

    async fn state_scan(&self, ns: &str) -> Result<Vec<(String, String)>, LogError> {
        Ok(self.state.scan(ns))
    }

    async fn state_put(&self, puts: Vec<StatePut>) -> Result<(), LogError> {
        self.append(AppendBatch { events: vec![], state: puts }).await.map(|_| ())
    }

    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, LogError> {
        if !fedistream_core::log::valid_topic_name(topic) {
            return Err(LogError::Unsupported(format!("`{topic}` is not a valid topic name")));
        }
        if topic != fedistream_core::log::EVENTS {
            self.ensure_topic(topic).await?;
        }
        let c = KafkaConsumer::new(&self.cfg, topic, group, self.state.clone(), self.meta.clone(), self.created.clone()).await?;
        Ok(Box::new(c))
    }

    async fn reader(&self, topic: &str, after: &[Position]) -> Result<Box<dyn Consumer>, LogError> {
        if !fedistream_core::log::valid_topic_name(topic) {
            return Err(LogError::Unsupported(format!("`{topic}` is not a valid topic name")));
        }
        if topic != fedistream_core::log::EVENTS {
            self.ensure_topic(topic).await?;
        }
        Ok(Box::new(KafkaReader::open(&self.cfg, &self.cfg.topic(topic), &self.meta, after).await?))
    }

    async fn info(&self) -> Result<LogInfo, LogError> {
        let parts = partitions_of(&self.meta, &self.events_topic, self.timeout).await?;
        let marks = watermarks(&self.meta, &self.events_topic, &parts).await?;
        let mut head: Vec<Position> = marks.iter().map(|(p, (_, hi))| Position { partition: *p as u32, offset: *hi as u64 }).collect();
        head.sort();
        let events = marks.values().map(|(lo, hi)| (hi - lo).max(0) as u64).sum();
        let groups = self.groups(&parts, &marks).await?;
        let topics =
            vec![fedistream_core::log::TopicInfo { name: fedistream_core::log::EVENTS.into(), records: events, head: head.clone() }];
        Ok(LogInfo { backend: "kafka", location: format!("{} ({})", self.cfg.brokers, self.events_topic), events, head, topics, groups })
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        // The broker applies the topic's retention.ms / retention.bytes itself;
        // state is pruned here, at most once an hour (as on SQLite).
        if let Some(horizon) = self.cfg.state_horizon {
            let due = {
                let mut last = self.last_prune.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600));
                if due {
                    *last = Some(std::time::Instant::now());
                }
                due
            };
            if due {
                let cutoff = chrono::Utc::now() - chrono::Duration::from_std(horizon).unwrap_or_default();
                self.prune_state(cutoff).await?;
            }
        }
        Ok(0)
    }

    async fn forget_group(&self, group: &str) -> Result<bool, LogError> {
        let admin: AdminClient<DefaultClientContext> =
            client_config(&self.cfg)?.create().map_err(|e| unavailable("cannot create a Kafka admin client", &self.cfg.brokers, e))?;
        let opts = AdminOptions::new().request_timeout(Some(self.timeout));
        let results = admin
            .delete_groups(&[group], &opts)
            .await
            .map_err(|e| unavailable(&format!("cannot delete the consumer group {group}"), &self.cfg.brokers, e))?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(true),
            Some(Err((_, RDKafkaErrorCode::GroupIdNotFound))) => Ok(false),
            Some(Err((g, code))) => Err(LogError::Unavailable(format!(
                "cannot delete the consumer group {g}: {code} (a process still in the group must stop first)"
            ))),
            None => Ok(false),
        }
    }
}

impl KafkaLog {
    /// The lag of each of `groups`, given with the log topic it reads
    /// (`events`, a processor's output): records in that topic after the
    /// group's committed offsets, transaction markers included; 0 when it has
    /// committed the end of every partition. In the order given.
    pub async fn group_lags(&self, groups: &[(String, String)]) -> Result<Vec<(String, u64)>, LogError> {
        let mut out = Vec::with_capacity(groups.len());
        for (g, topic) in groups {
            if topic != fedistream_core::log::EVENTS {
                ensure_log_topic(&self.cfg, &self.created, topic).await?;
            }
            let name = self.cfg.topic(topic);
            let parts = partitions_of(&self.meta, &name, self.timeout).await?;
            let marks = watermarks(&self.meta, &name, &parts).await?;
            let committed = consumer::committed(&self.cfg, g, &name, &parts).await?;
            out.push((g.clone(), lag(&parts, &marks, &committed)));
        }
        Ok(out)
    }

    /// Committed offsets and lag of this pipeline's channel groups.
    async fn groups(&self, parts: &[i32], marks: &HashMap<i32, (i64, i64)>) -> Result<Vec<GroupInfo>, LogError> {
        let meta = self.meta.clone();
        let prefix = format!("{}.", self.cfg.prefix());
        let skip = [self.cfg.ingest_group(), format!("{}.meta", self.cfg.prefix())];
        let names = blocking(move || {
            meta.fetch_group_list(None, Duration::from_secs(10))
                .map(|l| l.groups().iter().map(|g| g.name().to_string()).collect::<Vec<_>>())
        })
        .await?
        .map_err(|e| unavailable("cannot list consumer groups", &self.cfg.brokers, e))?;
        let mut out = Vec::new();
        for g in names.into_iter().filter(|g| g.starts_with(&prefix) && !skip.contains(g)) {
            let committed = consumer::committed(&self.cfg, &g, &self.events_topic, parts).await?;
            let mut pos = Vec::new();
            for p in parts {
                let (lo, _) = marks.get(p).copied().unwrap_or((0, 0));
                let c = committed.get(p).copied().unwrap_or(lo).max(lo);
                pos.push(Position { partition: *p as u32, offset: c as u64 });
            }
            pos.sort();
            let lag = lag(parts, marks, &committed);
            out.push(GroupInfo { group: g, topic: fedistream_core::log::EVENTS.into(), committed: pos, lag });
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(out)
    }
}

/// Records between a group's committed offsets (the low watermark where it
/// has none) and the high watermarks.
fn lag(parts: &[i32], marks: &HashMap<i32, (i64, i64)>, committed: &HashMap<i32, i64>) -> u64 {
    parts
        .iter()
        .map(|p| {
            let (lo, hi) = marks.get(p).copied().unwrap_or((0, 0));
            (hi - committed.get(p).copied().unwrap_or(lo).max(lo)).max(0) as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_name_the_key() {
        let mut c = KafkaLogConfig::new("", "bad name");
        c.compression = "brotli".into();
        c.properties.insert("sasl.password".into(), "x".into());
        let keys: Vec<String> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["brokers", "pipeline", "compression", "properties.sasl.password"]);
        assert!(KafkaLogConfig::new("127.0.0.1:9092", "p1").problems().is_empty());
    }
}
