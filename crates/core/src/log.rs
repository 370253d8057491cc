//! The log (bus): the durable, ordered record of every event, each channel's
//! position in it, and the small state every component keeps (checkpoints, the
//! dedup index, the id-to-account index).
//!
//! Contract for backends:
//! * [`Log::append`] returns only once the events *and* the state updates in the
//!   same batch are durable, and it applies them together: after a crash either
//!   both are there or neither is. Sources put their checkpoint in the batch that
//!   carries the events it covers, so a checkpoint never runs ahead of the log.
//! * A [`Consumer`] belongs to one group (one per channel). It yields records after
//!   the group's committed position, in order within a partition (the partition
//!   key is the account). [`Consumer::commit`] advances the group's position; state
//!   given with a commit is stored in the same transaction, so a channel's own
//!   bookkeeping (e.g. a source-to-target id map) never disagrees with its offset.
//! * Delivery is at-least-once: after a crash a group re-reads from its last commit.
//!
//! The embedded backend is [`crate::sqlite::SqliteLog`]; a Kafka backend implements
//! the same traits with partitions, consumer groups and compacted state topics.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::LogError;
use crate::event::{EncodedEvent, LogRecord, Position};

/// One key-value write in a state namespace. `value: None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePut {
    pub ns: String,
    pub key: String,
    pub value: Option<String>,
}

impl StatePut {
    pub fn set(ns: &str, key: impl Into<String>, value: impl Into<String>) -> Self {
        StatePut { ns: ns.to_string(), key: key.into(), value: Some(value.into()) }
    }
    pub fn delete(ns: &str, key: impl Into<String>) -> Self {
        StatePut { ns: ns.to_string(), key: key.into(), value: None }
    }
}

/// Events plus the state that becomes true once they are in the log.
#[derive(Debug, Default, Clone)]
pub struct AppendBatch {
    pub events: Vec<EncodedEvent>,
    pub state: Vec<StatePut>,
}

/// What an append stored.
#[derive(Debug, Default, Clone)]
pub struct AppendReceipt {
    /// Positions of the appended events, in the order given.
    pub positions: Vec<Position>,
}

/// A consumer group's standing, for `fedistream status`.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    pub group: String,
    /// Position of the next record the group will read, per partition.
    pub committed: Vec<Position>,
    /// Records appended but not yet committed by the group.
    pub lag: u64,
}

#[derive(Debug, Clone)]
pub struct LogInfo {
    pub backend: &'static str,
    pub location: String,
    /// Number of events in the log (after retention).
    pub events: u64,
    /// Offset the next appended event will get, per partition.
    pub head: Vec<Position>,
    pub groups: Vec<GroupInfo>,
}

/// The rest of an append started with [`Log::start_append`]: resolves once the
/// batch is durable.
pub type AppendFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<AppendReceipt, LogError>> + Send>>;

#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Append events and state atomically and durably. See the module docs.
    async fn append(&self, batch: AppendBatch) -> Result<AppendReceipt, LogError>;

    /// Start an append without waiting for it to be durable, so the caller can
    /// prepare the next batch meanwhile (the ingestor keeps a few in flight).
    ///
    /// When this returns, the batch's place is fixed: batches started one after
    /// another are stored in that order. The returned future resolves as
    /// [`Log::append`] would. If an append fails, every append started after it
    /// fails too, so a later batch's checkpoint never covers events that were
    /// lost. The default does the whole append here (nothing overlaps); a
    /// backend whose commit is a network round trip (Kafka) overrides it.
    async fn start_append(&self, batch: AppendBatch) -> Result<AppendFuture, LogError> {
        let receipt = self.append(batch).await;
        Ok(Box::pin(std::future::ready(receipt)))
    }

    /// Read one state value.
    async fn state_get(&self, ns: &str, key: &str) -> Result<Option<String>, LogError>;

    /// Read many state values of a namespace at once; missing keys are absent from the result.
    async fn state_get_many(
        &self,
        ns: &str,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, String>, LogError>;

    /// Every key and value of a namespace (small namespaces: status, checkpoints).
    async fn state_scan(&self, ns: &str) -> Result<Vec<(String, String)>, LogError>;

    /// Write state that is not tied to events (status reports).
    async fn state_put(&self, puts: Vec<StatePut>) -> Result<(), LogError>;

    /// Open a consumer for `group`, positioned after the group's last commit
    /// (at the start of the log for a new group).
    async fn consumer(&self, group: &str) -> Result<Box<dyn Consumer>, LogError>;

    /// Head, size and consumer groups.
    async fn info(&self) -> Result<LogInfo, LogError>;

    /// Apply retention (age and size). Records a live group has not committed are kept.
    async fn enforce_retention(&self) -> Result<u64, LogError>;
}

#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` records after the last one returned, waiting up to `wait` for
    /// new ones when none are available. Cancel-safe: dropping the future loses nothing.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError>;

    /// Mark every record up to and including `upto` (per partition) as processed,
    /// storing `state` in the same transaction.
    async fn commit(&mut self, upto: &[Position], state: Vec<StatePut>) -> Result<(), LogError>;

    /// The group's end-to-end lag in records (head minus committed). Offset-based
    /// backends count what occupies offsets: on Kafka, the marker of a
    /// transaction not yet read past adds one.
    async fn lag(&mut self) -> Result<u64, LogError>;

    /// The partitions this consumer owns, if that changed since the last call
    /// (always `None` for a backend where one consumer owns everything).
    fn take_assignment(&mut self) -> Option<Vec<u32>> {
        None
    }
}
