//! The Sink contract: a deliverer of records to one external system.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::Status;
use crate::error::SinkError;
use crate::event::{LogRecord, Position};
use crate::log::{Log, StatePut};

/// What a sink gets when it opens.
#[derive(Clone)]
pub struct SinkContext {
    /// The channel's name (config key).
    pub name: String,
    /// The topic the channel reads (`events`, `stats`, …): what the records' payloads are.
    pub topic: String,
    /// This process's worker name (`--worker`, else the host name): sinks that
    /// several processes write at once (files with `{worker}`) tell their
    /// outputs apart by it.
    pub worker: String,
    /// The log's state store: a sink that must remember what it did (a republish
    /// map from source URI to target id) reads and writes it here, in the same
    /// store as its channel's offset. Namespaces `sink:<channel>:...` are its own.
    pub log: Arc<dyn Log>,
    pub status: Status,
    /// How a sink that answered [`Written::Pending`] reports durability later.
    pub acks: Acker,
}

impl SinkContext {
    /// A context for `name` reading `events`, with acknowledgements going nowhere
    /// (tests and tools that drive a sink by hand; the runtime makes its own).
    pub fn new(name: &str, log: Arc<dyn Log>) -> Self {
        SinkContext {
            name: name.to_string(),
            topic: crate::log::EVENTS.to_string(),
            worker: "worker".to_string(),
            log,
            status: Status::new("channel", name),
            acks: Acker::detached(),
        }
    }
}

/// What [`Sink::write`] did with a batch.
#[derive(Debug)]
pub enum Written {
    /// Every record of the batch is delivered (durable at the destination). The
    /// state (for example the republish map's new entries) is committed with
    /// the channel's offset, in one transaction.
    Done(Vec<StatePut>),
    /// Accepted but not durable yet (buffered for a larger object, or requests
    /// still in flight): the sink reports progress through [`Acker::durable`],
    /// and the runtime commits no offset past a record before that.
    Pending,
}

impl Written {
    /// Delivered, nothing to commit besides the offset.
    pub fn done() -> Self {
        Written::Done(Vec::new())
    }
}

/// Messages from a sink to its channel task (see [`Acker`]).
#[derive(Debug)]
pub(crate) enum AckMsg {
    Durable { upto: Vec<Position>, state: Vec<StatePut> },
    Reject { position: Position, reason: String },
}

/// A sink's way to acknowledge records it answered [`Written::Pending`] for,
/// from any task (cloneable).
#[derive(Clone)]
pub struct Acker {
    tx: Option<mpsc::UnboundedSender<AckMsg>>,
}

impl Acker {
    pub(crate) fn new() -> (Acker, mpsc::UnboundedReceiver<AckMsg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Acker { tx: Some(tx) }, rx)
    }

    /// An acker whose messages go nowhere.
    pub fn detached() -> Acker {
        Acker { tx: None }
    }

    /// Every record given to the sink with a position at or below these (per
    /// partition) is durable now. `state` is committed with the offset.
    /// Acknowledgements per partition must not go backwards.
    pub fn durable(&self, upto: Vec<Position>, state: Vec<StatePut>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(AckMsg::Durable { upto, state });
        }
    }

    /// A record the sink will never deliver (the destination refused it): the
    /// runtime dead-letters it with `reason`. The sink still acknowledges it as
    /// durable (past it) with [`Acker::durable`].
    pub fn reject(&self, position: Position, reason: impl Into<String>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(AckMsg::Reject { position, reason: reason.into() });
        }
    }
}

/// A deliverer of records to one external system.
///
/// * `open` is called before the first write, and again after the channel was
///   restarted (a failure of its log reads or commits): it connects, checks
///   credentials, finds where a previous run stopped, and **drops anything it
///   buffered and had not acknowledged** — the runtime delivers it again. An
///   error here is handled like a write error.
/// * `write` gets a batch in log order (one topic, see [`SinkContext::topic`]).
///   [`Written::Done`]: every record of it is delivered. [`Written::Pending`]:
///   accepted; durability comes later through [`SinkContext::acks`]. Records
///   may arrive again after a crash (the runtime is at-least-once); sinks that
///   can tell (file, archive) skip or overwrite what they already hold.
/// * Errors: `Transient` → the runtime retries the batch with backoff (honouring
///   `retry_after`); `Permanent` with `failed_index` → records before it count
///   as delivered, that record is dead-lettered, the rest is retried; `Auth` /
///   `Config` → the channel pauses and retries later while other channels go on.
/// * `tick` runs every `tick_interval` (flush a buffer by age, even when no
///   records arrive); `flush` makes everything written durable and acknowledged
///   (called when the channel drains at shutdown or the end of a finite run,
///   before `close`).
/// * `close` releases; called on shutdown and at the end of finite runs.
///
/// Sinks never commit offsets: the runtime does, only up to what is delivered
/// or dead-lettered, in log order.
#[async_trait]
pub trait Sink: Send + 'static {
    async fn open(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        let _ = ctx;
        Ok(())
    }
    async fn write(&mut self, batch: &[LogRecord]) -> Result<Written, SinkError>;
    /// The partitions this process now delivers for the channel changed (a
    /// distributed log moved work between processes). A sink that finds its own
    /// progress in its output re-reads it for these partitions here, since
    /// another process may have written them. Called before their first records.
    async fn partitions_assigned(&mut self, partitions: &[u32]) -> Result<(), SinkError> {
        let _ = partitions;
        Ok(())
    }
    /// How often the runtime calls [`Sink::tick`]; `None` (the default): never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }
    async fn tick(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
