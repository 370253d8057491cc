//! The Processor contract: a consumer group of one topic that turns records
//! into records of other topics, with state.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Status;
use crate::error::ProcessorError;
use crate::event::{LogRecord, Position};
use crate::log::{Log, OutputRecord, StatePut};

/// What a processor gets when it opens.
#[derive(Clone)]
pub struct ProcessorContext {
    /// The processor's name (config key).
    pub name: String,
    /// The topic it reads.
    pub input: String,
    /// The log's state store, to load the processor's state from (namespaces
    /// `proc:<name>:...` are its own). Writes go through [`ProcessorOutput::state`].
    pub log: Arc<dyn Log>,
    pub status: Status,
}

/// What one call of [`Processor::process`] or [`Processor::tick`] produced.
/// The runtime commits all of it, with the input position, in one transaction.
#[derive(Debug, Default)]
pub struct ProcessorOutput {
    pub records: Vec<OutputRecord>,
    pub state: Vec<StatePut>,
    /// Input records the processor cannot use (undecodable): dead-lettered.
    pub rejected: Vec<(Position, String)>,
}

impl ProcessorOutput {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.state.is_empty() && self.rejected.is_empty()
    }
}

/// A stateful transformation driven by the runtime as a consumer group of its
/// input topic.
///
/// * `open` loads the processor's state from the log. It is called before the
///   first batch, after every restart of the processor's task (a failed commit
///   leaves the in-memory state ahead of the committed one: the runtime throws
///   it away by reopening), and — on a partitioned log (Kafka) — whenever the
///   input partitions this process owns change (`partitions`: the new set;
///   `None`: all of them). State kept per partition moves with the partition.
/// * `process` is synchronous and deterministic: a batch of input records in log
///   order in, output records and state changes out. Its results, its state and
///   the input offset commit together, so a restart — or a partition moving to
///   another process — gives the same results as an uninterrupted run.
/// * `tick` runs every `tick_interval` with the wall-clock time (periodic work:
///   emitting an open window early). Its output commits without moving the
///   input position. For results that must not depend on when ticks happen
///   (closing windows), drive them from the input (event time) in `process`.
#[async_trait]
pub trait Processor: Send + 'static {
    async fn open(&mut self, ctx: &ProcessorContext, partitions: Option<&[u32]>) -> Result<(), ProcessorError>;
    fn process(&mut self, batch: &[LogRecord], out: &mut ProcessorOutput) -> Result<(), ProcessorError>;
    fn tick_interval(&self) -> Option<Duration> {
        None
    }
    fn tick(&mut self, now: DateTime<Utc>, out: &mut ProcessorOutput) -> Result<(), ProcessorError> {
        let _ = (now, out);
        Ok(())
    }
}
