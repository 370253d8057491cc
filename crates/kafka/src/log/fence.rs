//! Fencing ingest appends by their group assignment (KIP-447 style).
//!
//! Each ingest process holds its slots through the ingest consumer group (see
//! [`crate::assign`]). A [`Fence`] is one assignment: the ingest consumer's
//! group metadata (group, member id, generation) and the slots it was given.
//! Every append made under it puts, into its own transaction,
//! `send_offsets_to_transaction` for the ingest group with those slots of the
//! (never written) ingest topic at offset 0. The group coordinator accepts that
//! offset commit only from a current member of the current generation, so the
//! transaction of a process whose slots went to another member (it was paused or
//! cut off past the session timeout) is rejected and aborted: none of its events
//! or checkpoints become visible. The writer then marks the fence rejected, fails
//! that write and every later one under the same fence with
//! [`LogError::Fenced`], and the ingest role restarts its sources under the
//! group's next assignment.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use fedistream_core::error::LogError;
use fedistream_core::event::Position;
use fedistream_core::log::{AppendBatch, AppendFuture, AppendReceipt, Consumer, Log, LogInfo, StatePut};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::TopicPartitionList;
use tokio::sync::watch;

use super::KafkaLog;

/// One ingest group assignment, as proof for the appends made under it. Cheap
/// to clone; two fences are equal only if they are clones of one another.
#[derive(Clone)]
pub struct Fence(Arc<Inner>);

struct Inner {
    metadata: Arc<ConsumerGroupMetadata>,
    group: String,
    topic: String,
    slots: Vec<i32>,
    /// The assignment's generation (as counted by [`crate::assign::Assignment`]).
    generation: u64,
    /// Why the cluster rejected the fence, once it has.
    rejected: watch::Sender<Option<String>>,
}

impl Fence {
    pub(crate) fn new(metadata: ConsumerGroupMetadata, group: String, topic: String, slots: Vec<i32>, generation: u64) -> Fence {
        Fence(Arc::new(Inner { metadata: Arc::new(metadata), group, topic, slots, generation, rejected: watch::channel(None).0 }))
    }

    /// The slots held under this fence.
    pub fn slots(&self) -> &[i32] {
        &self.0.slots
    }

    /// The generation of the assignment (see [`crate::assign::Assignment::generation`]).
    pub fn generation(&self) -> u64 {
        self.0.generation
    }

    /// Why the cluster rejected this fence, if it has.
    pub fn rejection(&self) -> Option<String> {
        self.0.rejected.borrow().clone()
    }

    /// Resolves (with the reason) once an append under this fence was rejected.
    pub async fn rejected(&self) -> String {
        let mut rx = self.0.rejected.subscribe();
        let why = rx.wait_for(Option::is_some).await.expect("the fence holds the sender");
        why.clone().unwrap_or_default()
    }

    /// Mark the fence rejected; returns the message every write under it fails with.
    pub(crate) fn reject(&self, cause: &str) -> String {
        let why = format!(
            "the ingest group {} no longer accepts assignment {} of this process (slots {:?}): the slots belong to another member now, \
             and the transaction was aborted ({cause})",
            self.0.group, self.0.generation, self.0.slots
        );
        self.0.rejected.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(why.clone());
                true
            } else {
                false
            }
        });
        self.rejection().unwrap_or(why)
    }

    pub(crate) fn metadata(&self) -> Arc<ConsumerGroupMetadata> {
        self.0.metadata.clone()
    }

    /// Offset 0 of every slot held: the ingest topic is never written, the
    /// commit only proves membership.
    pub(crate) fn offsets(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for s in &self.0.slots {
            let _ = tpl.add_partition_offset(&self.0.topic, *s, rdkafka::Offset::Offset(0));
        }
        tpl
    }
}

impl PartialEq for Fence {
    fn eq(&self, other: &Fence) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Fence {}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("group", &self.0.group)
            .field("generation", &self.0.generation)
            .field("slots", &self.0.slots)
            .field("rejected", &self.rejection().is_some())
            .finish()
    }
}

/// Whether an error of `send_offsets_to_transaction` says the member's
/// assignment is gone (stale generation, member removed, instance fenced, the
/// group rebalancing), as opposed to a cluster that is away for a moment.
pub(crate) fn is_fence_error(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::Transaction(rd) if matches!(
            rd.code(),
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::RebalanceInProgress
        )
    )
}

/// The Kafka log for the work of one ingest assignment: every append carries
/// the [`Fence`], so it becomes visible only if the group still gives this
/// process those slots. Reads, consumers and [`Log::state_put`] (status
/// documents, not tied to owned work) go to the log unchanged.
pub struct FencedLog {
    log: Arc<KafkaLog>,
    fence: Fence,
}

impl KafkaLog {
    /// This log, with every append fenced by `fence` (see [`FencedLog`]).
    pub fn fenced(self: &Arc<Self>, fence: Fence) -> Arc<FencedLog> {
        Arc::new(FencedLog { log: self.clone(), fence })
    }
}

impl FencedLog {
    pub fn fence(&self) -> &Fence {
        &self.fence
    }
}

#[async_trait]
impl Log for FencedLog {
    async fn append(&self, batch: AppendBatch) -> Result<AppendReceipt, LogError> {
        self.start_append(batch).await?.await
    }

    async fn start_append(&self, batch: AppendBatch) -> Result<AppendFuture, LogError> {
        self.log.start_append_fenced(batch, Some(self.fence.clone())).await
    }

    async fn state_get(&self, ns: &str, key: &str) -> Result<Option<String>, LogError> {
        self.log.state_get(ns, key).await
    }

    async fn state_get_many(&self, ns: &str, keys: &[String]) -> Result<HashMap<String, String>, LogError> {
        self.log.state_get_many(ns, keys).await
    }

    async fn state_scan(&self, ns: &str) -> Result<Vec<(String, String)>, LogError> {
        self.log.state_scan(ns).await
    }

    async fn state_put(&self, puts: Vec<StatePut>) -> Result<(), LogError> {
        self.log.state_put(puts).await
    }

    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, LogError> {
        self.log.consumer(topic, group).await
    }

    async fn reader(&self, topic: &str, after: &[Position]) -> Result<Box<dyn Consumer>, LogError> {
        self.log.reader(topic, after).await
    }

    async fn info(&self) -> Result<LogInfo, LogError> {
        self.log.info().await
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        self.log.enforce_retention().await
    }
}
