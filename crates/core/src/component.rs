//! The component contracts: [`Source`] produces events, [`Sink`] delivers them.
//! The runtime ([`crate::runtime`]) owns everything between: the durable append,
//! deduplication, batching, retries, dead letters, offsets and shutdown.
//!
//! Sources run as tasks rather than being polled with `next()`: the Mastodon
//! source is several cooperating loops (a stream, REST catch-up per account, a
//! poll scheduler) that must share one rate limiter, which a pull interface would
//! only hide. What the pull interface guaranteed is kept by the [`Emitter`]:
//! `emit` returns once the batch and its checkpoint are durable in the log, and it
//! waits while the log is busy, which is the back-pressure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, SinkError, SourceError};
use crate::event::{EncodedEvent, Event, LogRecord};
use crate::log::{Log, StatePut};

/// Events from one source plus the state that becomes true once they are stored
/// (the checkpoint covering them, index entries).
#[derive(Debug, Default, Clone)]
pub struct SourceBatch {
    pub events: Vec<EncodedEvent>,
    pub state: Vec<StatePut>,
}

impl SourceBatch {
    /// Add an event, encoded now (see [`EncodedEvent`]).
    pub fn push(&mut self, ev: Event) {
        self.events.push(ev.into());
    }
}

/// What the ingestor did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendSummary {
    pub appended: usize,
    pub duplicates: usize,
}

pub(crate) type IngestRequest = (SourceBatch, oneshot::Sender<Result<AppendSummary, String>>);

/// A source's handle on the log. Cloneable; each clone may emit concurrently.
#[derive(Clone)]
pub struct Emitter {
    pub(crate) tx: mpsc::Sender<IngestRequest>,
}

/// A batch sent but not yet confirmed durable.
pub struct PendingAppend(oneshot::Receiver<Result<AppendSummary, String>>);

impl PendingAppend {
    pub async fn wait(self) -> Result<AppendSummary, SourceError> {
        match self.0.await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(SourceError::new(ErrorKind::Internal, e)),
            Err(_) => Err(SourceError::new(ErrorKind::Internal, "the log writer stopped")),
        }
    }
}

impl Emitter {
    /// Queue a batch; waits only while the ingest queue is full.
    pub async fn send(&self, batch: SourceBatch) -> Result<PendingAppend, SourceError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((batch, tx))
            .await
            .map_err(|_| SourceError::new(ErrorKind::Internal, "the log writer stopped"))?;
        Ok(PendingAppend(rx))
    }

    /// Append a batch and wait until it is durable (events, then checkpoint, atomically).
    pub async fn emit(&self, batch: SourceBatch) -> Result<AppendSummary, SourceError> {
        self.send(batch).await?.wait().await
    }
}

/// Lifecycle state shown by `fedistream status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusDoc {
    pub component: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumes_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    pub updated_at: DateTime<Utc>,
    /// When this run of the component started: the counters count from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Parts of the component that are not healthy (a source's accounts), each
    /// with what is wrong; healthy parts are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, String>,
}

/// Shared, cheap status handle; the runtime persists it to the log's `status` namespace.
#[derive(Clone)]
pub struct Status {
    key: String,
    doc: Arc<Mutex<StatusDoc>>,
}

pub const STATUS_NS: &str = "status";

impl Status {
    pub fn new(kind: &str, name: &str) -> Self {
        let now = Utc::now();
        let doc = StatusDoc {
            component: kind.to_string(),
            state: "starting".into(),
            updated_at: now,
            started_at: Some(now),
            ..Default::default()
        };
        Status { key: format!("{kind}:{name}"), doc: Arc::new(Mutex::new(doc)) }
    }
    /// A status kept per process when several share one log: the key becomes
    /// `KIND:NAME@SCOPE` (the scope is the worker name).
    pub fn scoped(kind: &str, name: &str, scope: Option<&str>) -> Self {
        match scope {
            Some(scope) => Status::new(kind, &format!("{name}@{scope}")),
            None => Status::new(kind, name),
        }
    }
    fn with<R>(&self, f: impl FnOnce(&mut StatusDoc) -> R) -> R {
        let mut d = self.doc.lock().unwrap_or_else(|p| p.into_inner());
        d.updated_at = Utc::now();
        f(&mut d)
    }
    pub fn set_state(&self, state: &str, detail: Option<String>) {
        self.with(|d| {
            d.state = state.to_string();
            d.detail = detail;
        })
    }
    pub fn set_resumes_at(&self, at: Option<DateTime<Utc>>) {
        self.with(|d| d.resumes_at = at)
    }
    pub fn saw_event(&self) {
        self.with(|d| d.last_event_at = Some(Utc::now()))
    }
    /// Add to a named counter (also exported as a `metrics` counter).
    pub fn count(&self, counter: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.with(|d| *d.counters.entry(counter.to_string()).or_default() += n);
    }
    /// Set (`Some`) or clear (`None`) what is wrong with one part of the
    /// component (a source's account).
    pub fn set_part(&self, part: &str, problem: Option<String>) {
        self.with(|d| match problem {
            Some(p) => {
                d.parts.insert(part.to_string(), p);
            }
            None => {
                d.parts.remove(part);
            }
        })
    }
    pub fn counter(&self, counter: &str) -> u64 {
        self.with(|d| d.counters.get(counter).copied().unwrap_or(0))
    }
    /// The key under which the runtime stores this status (`source:NAME`,
    /// `channel:NAME@WORKER`, ...).
    pub fn key(&self) -> &str {
        &self.key
    }
    /// Carry over what a previous run knew that this one has not seen yet.
    pub fn seed_from(&self, previous: &StatusDoc) {
        self.with(|d| {
            if d.last_event_at.is_none() {
                d.last_event_at = previous.last_event_at;
            }
        })
    }
    pub fn snapshot(&self) -> StatusDoc {
        self.with(|d| d.clone())
    }
    pub fn to_put(&self) -> StatePut {
        let doc = self.snapshot();
        StatePut::set(STATUS_NS, self.key.clone(), serde_json::to_string(&doc).unwrap_or_default())
    }
}

/// An append-only JSON Lines file of what could not be processed, with the reason.
#[derive(Clone)]
pub struct DeadLetter {
    path: Arc<PathBuf>,
    file: Arc<Mutex<Option<std::fs::File>>>,
}

#[derive(Serialize)]
struct DeadLetterLine<'a> {
    at: DateTime<Utc>,
    component: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
}

impl DeadLetter {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DeadLetter { path: Arc::new(path.into()), file: Arc::new(Mutex::new(None)) }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    fn write_line(&self, line: &DeadLetterLine<'_>) -> std::io::Result<()> {
        use std::io::Write;
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            *guard = Some(std::fs::OpenOptions::new().create(true).append(true).open(&*self.path)?);
        }
        let mut buf = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        buf.push(b'\n');
        let f = guard.as_mut().expect("opened above");
        f.write_all(&buf)?;
        f.sync_data()
    }
    /// Dead-letter a record a channel could not deliver.
    pub fn record(&self, component: &str, reason: &str, rec: &LogRecord) -> std::io::Result<()> {
        let raw_event: Option<&serde_json::value::RawValue> = serde_json::from_str(&rec.payload).ok();
        self.write_line(&DeadLetterLine {
            at: Utc::now(),
            component,
            reason,
            partition: Some(rec.position.partition),
            offset: Some(rec.position.offset),
            event: raw_event,
            raw: if raw_event.is_none() { Some(&rec.payload) } else { None },
        })
    }
    /// Dead-letter raw input a source could not parse.
    pub fn raw(&self, component: &str, reason: &str, raw: &str) -> std::io::Result<()> {
        self.write_line(&DeadLetterLine {
            at: Utc::now(),
            component,
            reason,
            partition: None,
            offset: None,
            event: None,
            raw: Some(raw),
        })
    }
}

/// Progress of a long first-start backfill (a terminal progress bar implements it).
pub trait Progress: Send + Sync {
    fn start(&self, label: &str, total: Option<u64>);
    fn advance(&self, label: &str, n: u64);
    fn finish(&self, label: &str);
}

/// Everything a source task gets.
pub struct SourceContext {
    pub name: String,
    pub emitter: Emitter,
    /// For reading state (checkpoints, indexes); writes go through the emitter.
    pub log: Arc<dyn Log>,
    /// Cancelled on shutdown: stop taking new input and return.
    pub shutdown: CancellationToken,
    pub status: Status,
    pub dead_letter: DeadLetter,
    pub progress: Option<Arc<dyn Progress>>,
}

/// A producer of events.
///
/// `run` owns the source until it returns: `Ok(())` when a finite source is
/// exhausted or after shutdown was requested, `Err` when it cannot go on (the
/// error's kind says why; an `Auth` error stops only this source). Progress is
/// recorded only through [`Emitter::emit`], atomically with the events.
#[async_trait]
pub trait Source: Send + 'static {
    /// Sources whose input ends (replay) let a run finish by itself.
    fn is_finite(&self) -> bool {
        false
    }
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;
}

/// What a sink gets when it opens.
#[derive(Clone)]
pub struct SinkContext {
    /// The channel's name (config key).
    pub name: String,
    /// The log's state store: a sink that must remember what it did (a republish
    /// map from source URI to target id) reads and writes it here, in the same
    /// store as its channel's offset. Namespaces `sink:<channel>:...` are its own.
    pub log: Arc<dyn Log>,
    pub status: Status,
}

/// A deliverer of events to one external system.
///
/// * `open` is called once before the first write (connect, check credentials,
///   find where a previous run stopped). An error here is reported like a write error.
/// * `write` gets a batch in log order; `Ok` means every record of it is delivered
///   (durable at the destination). Records may arrive again after a crash (the
///   runtime is at-least-once); sinks that can tell (file) skip what they already hold.
/// * Errors: `Transient` → the runtime retries the batch with backoff (honouring
///   `retry_after`); `Permanent` with `failed_index` → records before it count as
///   delivered, that record is dead-lettered, the rest is retried; `Auth`/`Config`
///   → the channel pauses and retries later while other channels go on.
/// * `close` flushes and releases; called on shutdown and at the end of finite runs.
///
/// Sinks never see offsets or acknowledgements: the runtime commits them.
#[async_trait]
pub trait Sink: Send + 'static {
    async fn open(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        let _ = ctx;
        Ok(())
    }
    async fn write(&mut self, batch: &[LogRecord]) -> Result<(), SinkError>;
    /// The partitions this process now delivers for the channel changed (a
    /// distributed log moved work between processes). A sink that finds its own
    /// progress in its output re-reads it for these partitions here, since
    /// another process may have written them. Called before their first records.
    async fn partitions_assigned(&mut self, partitions: &[u32]) -> Result<(), SinkError> {
        let _ = partitions;
        Ok(())
    }
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
