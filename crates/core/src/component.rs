//! The component contracts: [`Source`] produces events, [`Processor`] turns
//! records of one topic into records of others, [`Sink`] delivers records. The
//! runtime ([`crate::runtime`]) owns everything between: the durable append,
//! deduplication, batching, retries, dead letters, offsets, supervision and
//! shutdown.
//!
//! Sources run as tasks rather than being polled with `next()`: the Mastodon
//! source is several cooperating loops (a stream, REST catch-up per account, a
//! poll scheduler) that must share one rate limiter, which a pull interface would
//! only hide. What the pull interface guaranteed is kept by the [`Emitter`]:
//! `emit` returns once the batch and its checkpoint are durable in the log, and it
//! waits while the log is busy, which is the back-pressure.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, LogError, SourceError};
use crate::event::{EncodedEvent, Event};
use crate::log::{Log, StatePut};

mod dead_letter;
mod processor;
mod sink;
mod status;

pub use dead_letter::DeadLetter;
pub use processor::{Processor, ProcessorContext, ProcessorOutput};
pub(crate) use sink::AckMsg;
pub use sink::{Acker, Sink, SinkContext, Written};
pub use status::{Status, StatusDoc, STATUS_NS};

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

    /// Name the ingest unit that owns the whole batch (a source that is one
    /// unit: its name): its events' dedup entries and its state puts (see
    /// [`crate::log::StatePut::owner`]).
    pub fn set_owner(&mut self, owner: &std::sync::Arc<str>) {
        for ev in &mut self.events {
            ev.set_owner(Some(owner.clone()));
        }
        for put in &mut self.state {
            put.owner = Some(crate::log::Owner::Unit(owner.clone()));
        }
    }
}

/// What the ingestor did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendSummary {
    pub appended: usize,
    /// Events already in the log (same post, same version): not stored again.
    pub duplicates: usize,
}

pub(crate) type IngestReply = oneshot::Sender<Result<AppendSummary, LogError>>;
pub(crate) type IngestRequest = (SourceBatch, IngestReply);

/// A source's handle on the log. Cloneable; each clone may emit concurrently.
#[derive(Clone)]
pub struct Emitter {
    pub(crate) tx: mpsc::Sender<IngestRequest>,
}

/// A batch sent but not yet confirmed durable.
pub struct PendingAppend(oneshot::Receiver<Result<AppendSummary, LogError>>);

fn writer_stopped() -> SourceError {
    SourceError::new(ErrorKind::Internal, "the log writer stopped")
}

impl PendingAppend {
    pub async fn wait(self) -> Result<AppendSummary, SourceError> {
        match self.0.await {
            Ok(r) => r.map_err(SourceError::from),
            Err(_) => Err(writer_stopped()),
        }
    }
}

impl Emitter {
    /// Queue a batch; waits only while the ingest queue is full.
    pub async fn send(&self, batch: SourceBatch) -> Result<PendingAppend, SourceError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((batch, tx)).await.map_err(|_| writer_stopped())?;
        Ok(PendingAppend(rx))
    }

    /// Append a batch and wait until it is durable (events, then checkpoint, atomically).
    pub async fn emit(&self, batch: SourceBatch) -> Result<AppendSummary, SourceError> {
        self.send(batch).await?.wait().await
    }
}

/// Progress of a long first-start backfill (a terminal progress bar implements it).
pub trait Progress: Send + Sync {
    fn start(&self, label: &str, total: Option<u64>);
    fn advance(&self, label: &str, n: u64);
    fn finish(&self, label: &str);
}

/// Everything a source task gets.
#[derive(Clone)]
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
/// error's kind says why). The runtime supervises sources: one that fails with
/// a transient error is made anew and restarted with backoff (when it was
/// configured with a factory, see `SourceSpec`); `Auth` and `Config` errors
/// stop only this source and are shown as `failed` in the status. Progress is
/// recorded only through [`Emitter::emit`], atomically with the events, so a
/// restarted source resumes from its checkpoints.
#[async_trait]
pub trait Source: Send + 'static {
    /// Sources whose input ends (replay) let a run finish by itself.
    fn is_finite(&self) -> bool {
        false
    }
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;
}
