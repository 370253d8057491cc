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
//! * **Topics.** The log holds named topics: [`EVENTS`] (the post events sources
//!   append) and topics processors write ([`STATS`] for account statistics, or
//!   their own). Every consumer group reads one topic. Processors write their
//!   outputs with [`Consumer::commit_with`], in the same transaction as their
//!   input offset and their state, so a restart (or a partition moving to
//!   another process) neither loses nor repeats an output.
//!
//! The embedded backend is [`crate::sqlite::SqliteLog`]; a Kafka backend implements
//! the same traits with partitions, consumer groups and compacted state topics.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::LogError;
use crate::event::{EncodedEvent, LogRecord, Position};

/// The topic sources append post events to.
pub const EVENTS: &str = "events";
/// The topic the account-statistics processor writes.
pub const STATS: &str = "stats";

/// Whether `name` can name a topic: lower-case ASCII letters, digits, `_` and
/// `-`, 1 to 64 characters (it becomes part of table and Kafka topic names).
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A resume point for [`Log::reader`] that names no partition: every
/// partition is read from its start. (An empty one means the head; a
/// partition number no log has stands for "none named".)
pub fn from_start() -> Vec<Position> {
    vec![Position { partition: u32::MAX, offset: 0 }]
}

/// A record a processor writes to a topic (on commit, see [`Consumer::commit_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: String,
    /// The partition key (the account, `user@domain`), so one account's records stay in order.
    pub key: String,
    /// The record's JSON.
    pub payload: std::sync::Arc<str>,
}

/// What a consumer commits in one transaction: its position, its state, and
/// (processors) the records it produced from what it read.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Every record up to and including these positions (per partition) is processed.
    /// Empty: the position does not move (a timer's outputs).
    pub upto: Vec<Position>,
    pub state: Vec<StatePut>,
    pub outputs: Vec<OutputRecord>,
}

/// Who a piece of state belongs to (see [`StatePut::owner`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A unit of ingest work: `source/account` for an account of a Mastodon
    /// source, the source's name for other sources.
    Unit(std::sync::Arc<str>),
    /// A partition of the input topic of the consumer group that commits the
    /// state (a processor's state kept per input partition).
    Partition(u32),
}

/// One key-value write in a state namespace. `value: None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePut {
    pub ns: String,
    pub key: String,
    pub value: Option<String>,
    /// The work the entry belongs to, or `None`: state of the whole pipeline.
    /// A partitioned log keeps owned state with its work, held in memory only
    /// by the process doing that work (on Kafka: a unit's state in the
    /// partition of the unit's ingest slot, a group's partition state in the
    /// same partition of the group's state topic); the embedded log ignores it.
    /// Every write of a key must name the same owner, and owned state is read
    /// only by the process doing its work.
    pub owner: Option<Owner>,
}

impl StatePut {
    pub fn set(ns: &str, key: impl Into<String>, value: impl Into<String>) -> Self {
        StatePut { ns: ns.to_string(), key: key.into(), value: Some(value.into()), owner: None }
    }
    pub fn delete(ns: &str, key: impl Into<String>) -> Self {
        StatePut { ns: ns.to_string(), key: key.into(), value: None, owner: None }
    }
    /// This put, owned by the ingest unit `unit` ([`Owner::Unit`]; `None`: global).
    pub fn owned_by(mut self, unit: Option<std::sync::Arc<str>>) -> Self {
        self.owner = unit.map(Owner::Unit);
        self
    }
    /// This put, kept with input partition `partition` of the consumer group
    /// that commits it ([`Owner::Partition`]).
    pub fn of_partition(mut self, partition: u32) -> Self {
        self.owner = Some(Owner::Partition(partition));
        self
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
    /// The topic the group reads.
    pub topic: String,
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
    /// Offset of the last event appended, per partition (of [`EVENTS`]).
    pub head: Vec<Position>,
    /// Every topic with records: name, record count and last offset per partition.
    pub topics: Vec<TopicInfo>,
    pub groups: Vec<GroupInfo>,
}

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub records: u64,
    pub head: Vec<Position>,
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
    async fn state_get_many(&self, ns: &str, keys: &[String]) -> Result<std::collections::HashMap<String, String>, LogError>;

    /// Every key and value of a namespace (small namespaces: status, checkpoints).
    async fn state_scan(&self, ns: &str) -> Result<Vec<(String, String)>, LogError>;

    /// Write state that is not tied to events (status reports).
    async fn state_put(&self, puts: Vec<StatePut>) -> Result<(), LogError>;

    /// Open a consumer of `topic` for `group`, positioned after the group's
    /// last commit (at the start of the topic for a new group). A group reads
    /// one topic; opening it on another topic is an error.
    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, LogError>;

    /// A reader of `topic` after `after` (an offset per partition) that
    /// belongs to no consumer group: it commits nothing (its commits are
    /// refused) and holds nothing back from retention — for live feeds (the
    /// HTTP server's `/api/events`), which resume from a position the client
    /// remembers. A reader slower than retention misses what retention removed.
    ///
    /// `after` empty: only what comes next (every partition after its head).
    /// Otherwise it is a resume point: each partition named continues after
    /// its offset (clamped to what the log holds), and a partition *not* named
    /// is read from its start — a resume point names every partition that had
    /// records when the first reader opened ([`Consumer::reader_start`]) or
    /// that the client has seen a record of, so one it does not name had
    /// nothing yet (or did not exist).
    async fn reader(&self, topic: &str, after: &[Position]) -> Result<Box<dyn Consumer>, LogError> {
        let _ = (topic, after);
        Err(LogError::Unsupported("this log backend has no readers outside consumer groups".into()))
    }

    /// Head, size and consumer groups.
    async fn info(&self) -> Result<LogInfo, LogError>;

    /// Apply retention (age and size) and prune state past its horizon.
    /// Records that any known consumer group has not committed are kept, whether
    /// or not that group runs in this process, until the group is forgotten
    /// ([`Log::forget_group`]).
    async fn enforce_retention(&self) -> Result<u64, LogError>;

    /// Remove a consumer group (its offset and, with it, the records retention
    /// keeps for it). Returns whether it existed. For an operator who removed a
    /// channel for good (`fedistream channel forget`).
    async fn forget_group(&self, group: &str) -> Result<bool, LogError> {
        let _ = group;
        Err(LogError::Unsupported("this log cannot forget consumer groups".into()))
    }
}

#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` records after the last one returned, waiting up to `wait` for
    /// new ones when none are available. Cancel-safe: dropping the future loses nothing.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError>;

    /// Mark every record up to and including `upto` (per partition) as processed,
    /// storing `state` in the same transaction.
    async fn commit(&mut self, upto: &[Position], state: Vec<StatePut>) -> Result<(), LogError> {
        self.commit_with(Commit { upto: upto.to_vec(), state, outputs: vec![] }).await
    }

    /// Commit a position, state and output records atomically: after a crash
    /// either all of it is visible or none (the Processor contract).
    async fn commit_with(&mut self, commit: Commit) -> Result<(), LogError>;

    /// The group's end-to-end lag in records (head minus committed); for a
    /// reader ([`Log::reader`]), the head minus what it has returned (what a
    /// first read must still fetch to have read the topic as it stands).
    /// Offset-based backends count what occupies offsets: on Kafka, the marker
    /// of a transaction not yet read past adds one.
    async fn lag(&mut self) -> Result<u64, LogError>;

    /// A reader's ([`Log::reader`]) starting point as a resume point: per
    /// partition, the offset after which it started (partitions it reads from
    /// their start are left out). This list, updated with the position of each
    /// record returned since, makes a new reader continue exactly where this
    /// one is, across every partition (the SSE `id` of `/api/events`). Ask
    /// before the first poll. Empty for group consumers.
    fn reader_start(&self) -> Vec<Position> {
        Vec::new()
    }

    /// The partitions this consumer owns, if that changed since the last call
    /// (always `None` for a backend where one consumer owns everything).
    fn take_assignment(&mut self) -> Option<Vec<u32>> {
        None
    }
}
