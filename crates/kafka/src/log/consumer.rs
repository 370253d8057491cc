//! A channel's consumer: one Kafka consumer group per channel. Several processes
//! in the same group split the events topic's partitions; when one dies, the
//! group hands its partitions to the others after the session timeout, and they
//! resume after the last committed offset.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fedistream_core::error::LogError;
use fedistream_core::event::{LogRecord, Position};
use fedistream_core::log::{Commit, Consumer, OutputRecord, StatePut};
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use tracing::{info, warn};

use super::state::{send_state, StateTable};
use super::{blocking, client_config, transactional_producer, unavailable, watermarks, KafkaLogConfig, TxnFailure};

/// Tracks the partitions this member owns.
#[derive(Default)]
pub struct GroupContext {
    assigned: Mutex<HashSet<i32>>,
    changed: Mutex<bool>,
}

impl ClientContext for GroupContext {}

// The callbacks run inside librdkafka's poll: a panic there would abort the
// process, so a lock poisoned by a panic elsewhere is taken over (the sets are
// plain data, always consistent between statements) instead of unwrapped.
impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut a = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
        match rebalance {
            Rebalance::Assign(tpl) => {
                a.extend(tpl.elements().iter().map(|e| e.partition()));
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    a.remove(&e.partition());
                }
            }
            Rebalance::Error(e) => warn!(error = %e, "Consumer group rebalance error"),
        }
        let mut parts: Vec<i32> = a.iter().copied().collect();
        parts.sort();
        info!(partitions = ?parts, "Consumer group assignment");
        *self.changed.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }
}

pub struct KafkaConsumer {
    cfg: KafkaLogConfig,
    group: String,
    topic: String,
    consumer: Arc<StreamConsumer<GroupContext>>,
    state: Arc<StateTable>,
    meta: Arc<BaseConsumer>,
    pending: VecDeque<LogRecord>,
    /// Offset of the last record handed out, per partition.
    returned: HashMap<u32, u64>,
    /// Next offset committed by this member, per partition.
    committed: HashMap<i32, i64>,
    last_warn: Option<std::time::Instant>,
    /// The last catch-up after a rebalance failed; retried before handing out records.
    catching_up: bool,
    /// Owned partitions not yet reported through `take_assignment`.
    assignment: Option<Vec<u32>>,
    /// For commits that carry state or outputs (made on first need).
    txn: Option<super::txn::TxnProducer>,
    /// Output topics known to exist.
    created: Arc<tokio::sync::Mutex<HashSet<String>>>,
    /// The group's state topic (state kept per input partition).
    state_topic: Arc<str>,
    /// Its partitions this member holds in the state view (its own partitions).
    state_held: Vec<i32>,
}

impl KafkaConsumer {
    pub(crate) async fn new(
        cfg: &KafkaLogConfig,
        topic: &str,
        group: &str,
        state: Arc<StateTable>,
        meta: Arc<BaseConsumer>,
        created: Arc<tokio::sync::Mutex<HashSet<String>>>,
    ) -> Result<KafkaConsumer, LogError> {
        let topic = cfg.topic(topic);
        // State kept per input partition: one partition per input partition.
        let state_topic = super::ensure_group_state_topic(cfg, &meta, group, &topic, cfg.connect_timeout).await?;
        let consumer: StreamConsumer<GroupContext> = client_config(cfg)?
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", cfg.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (cfg.session_timeout.as_millis() / 4).to_string())
            .set("partition.assignment.strategy", "range,roundrobin")
            .create_with_context(GroupContext::default())
            .map_err(|e| unavailable("cannot create a Kafka consumer", &cfg.brokers, e))?;
        consumer.subscribe(&[&topic]).map_err(|e| unavailable(&format!("cannot subscribe to {topic}"), &cfg.brokers, e))?;
        Ok(KafkaConsumer {
            cfg: cfg.clone(),
            group: group.to_string(),
            topic,
            consumer: Arc::new(consumer),
            state,
            meta,
            pending: VecDeque::new(),
            returned: HashMap::new(),
            committed: HashMap::new(),
            assignment: None,
            last_warn: None,
            catching_up: false,
            txn: None,
            created,
            state_topic,
            state_held: Vec::new(),
        })
    }

    pub(crate) fn record(m: &rdkafka::message::BorrowedMessage<'_>) -> LogRecord {
        let payload: Arc<str> = match m.payload() {
            Some(p) => String::from_utf8_lossy(p).into(),
            None => "".into(),
        };
        let at = m.timestamp().to_millis().and_then(DateTime::<Utc>::from_timestamp_millis).unwrap_or_else(Utc::now);
        LogRecord::new(Position { partition: m.partition() as u32, offset: m.offset() as u64 }, at, payload)
    }

    /// After an assignment change, hold the state kept per partition for the
    /// partitions we now own (and let go of the others'), and read the state
    /// other members wrote for them (a processor's per-partition state, a
    /// channel's source-to-target map in the global topic).
    /// Returns false while the state could not be read to its end (the cluster
    /// is away): no records are handed out until it can, and it is tried again
    /// on the next poll.
    async fn after_rebalance(&mut self) -> bool {
        let changed = std::mem::take(&mut *self.consumer.context().changed.lock().unwrap_or_else(PoisonError::into_inner));
        if changed || self.catching_up {
            let owned = self.consumer.context().assigned.lock().unwrap_or_else(PoisonError::into_inner).clone();
            self.pending.retain(|r| owned.contains(&(r.position.partition as i32)));
            if changed {
                let mut parts: Vec<u32> = owned.iter().map(|p| *p as u32).collect();
                parts.sort();
                self.assignment = Some(parts);
                let now: Vec<i32> = owned.iter().copied().collect();
                let added: Vec<i32> = now.iter().filter(|p| !self.state_held.contains(p)).copied().collect();
                let dropped: Vec<i32> = self.state_held.iter().filter(|p| !owned.contains(p)).copied().collect();
                match self.state.hold(&self.state_topic, &added, &dropped) {
                    Ok(()) => self.state_held = now,
                    Err(e) => {
                        warn!(group = %self.group, error = %e, "Cannot read the state of newly assigned partitions yet; holding their records");
                        *self.consumer.context().changed.lock().unwrap_or_else(PoisonError::into_inner) = true;
                        self.catching_up = true;
                        return false;
                    }
                }
            }
            if let Err(e) = self.state.catch_up(Duration::from_secs(30)).await {
                warn!(group = %self.group, error = %e, "Cannot read the state of newly assigned partitions yet; holding their records");
                self.catching_up = true;
                return false;
            }
            self.catching_up = false;
        }
        true
    }

    /// Commit offsets, retrying while the cluster is unavailable (the records
    /// are delivered; giving up would only mean delivering them again).
    async fn commit_offsets(&mut self, tpl: TopicPartitionList) -> Result<(), LogError> {
        let mut backoff = fedistream_core::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let (c, t) = (self.consumer.clone(), tpl.clone());
            match blocking(move || c.commit(&t, CommitMode::Sync)).await? {
                Ok(()) => return Ok(()),
                Err(e) if lost_ownership(&e) => {
                    warn!(group = %self.group, error = %e, "Partitions moved to another member before the commit; it resumes from the previous commit");
                    return Ok(());
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    warn!(group = %self.group, error = %e, retry_in = ?d, "Committing offsets failed; retrying");
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    async fn commit_with_state(
        &mut self,
        tpl: TopicPartitionList,
        state: Vec<StatePut>,
        outputs: Vec<OutputRecord>,
    ) -> Result<(), LogError> {
        for t in outputs.iter().map(|o| o.topic.as_str()).collect::<HashSet<_>>() {
            if t == fedistream_core::log::EVENTS {
                return Err(LogError::Unsupported("post events are appended by sources only".into()));
            }
            super::ensure_log_topic(&self.cfg, &self.created, t).await?;
        }
        if self.txn.is_none() {
            let p = transactional_producer(&self.cfg, "channel", self.cfg.connect_timeout).await?;
            self.txn = Some(super::txn::TxnProducer::new(p));
        }
        let mut txn = self.txn.take().expect("set above");
        let r = self.commit_with_state_on(&mut txn, tpl, state, outputs).await;
        self.txn = Some(txn);
        r
    }

    async fn commit_with_state_on(
        &mut self,
        txn: &mut super::txn::TxnProducer,
        tpl: TopicPartitionList,
        state: Vec<StatePut>,
        outputs: Vec<OutputRecord>,
    ) -> Result<(), LogError> {
        let producer = txn.producer.clone();
        let topics: HashMap<String, String> = outputs.iter().map(|o| (o.topic.clone(), self.cfg.topic(&o.topic))).collect();
        // State kept per input partition goes to the group's state topic.
        let state = self.state.route(state, Some(&self.state_topic))?;
        let mut backoff = fedistream_core::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let r: Result<(), TxnFailure> = async {
                txn.begin().await?;
                let now = chrono::Utc::now().timestamp_millis();
                let mut deliveries = Vec::with_capacity(outputs.len());
                for o in &outputs {
                    let rec = rdkafka::producer::FutureRecord::to(&topics[&o.topic])
                        .key(o.key.as_str())
                        .payload(o.payload.as_bytes())
                        .timestamp(now);
                    deliveries.push(super::send_with_room(&producer, rec).await.map_err(|e| super::classify_txn(&e))?);
                }
                let sent = send_state(&producer, self.state.global_topic(), &state).await?;
                let meta = self.consumer.group_metadata().ok_or_else(|| TxnFailure::Fatal("the consumer has no group metadata".into()))?;
                txn.send_offsets(tpl.clone(), std::sync::Arc::new(meta)).await?;
                txn.commit().await?;
                drop(deliveries);
                sent.applied_to(&self.state, &state).await
            }
            .await;
            match r {
                Ok(()) => return Ok(()),
                Err(TxnFailure::Fatal(e)) => {
                    return Err(unavailable(&format!("cannot commit group {} with its state", self.group), &self.cfg.brokers, e))
                }
                // A stale member of the channel's group (Fenced) is handled as
                // any failed commit: done if the partitions moved, else retried.
                Err(TxnFailure::Retry(e) | TxnFailure::Fenced(e)) => {
                    if self.consumer.context().assigned.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                        warn!(group = %self.group, error = %e, "Partitions moved before the commit; the new owner resumes from the previous commit");
                        return Ok(());
                    }
                    let d = backoff.next_delay();
                    warn!(group = %self.group, error = %e, retry_in = ?d, "Commit with state failed; retrying");
                    tokio::time::sleep(d).await;
                }
            }
        }
    }
}

impl KafkaConsumer {
    /// The offsets to commit for `upto`. When `upto` is the last record handed
    /// out for its partition and nothing of that partition is buffered, commit the
    /// consumer's position instead of `offset + 1`: it also steps over the
    /// transaction markers that follow, so an idle group shows no lag.
    fn commit_offsets_for(&self, upto: &[Position]) -> TopicPartitionList {
        let position = self.consumer.position().ok();
        let mut tpl = TopicPartitionList::new();
        for p in upto {
            let mut next = p.offset as i64 + 1;
            let caught_up =
                self.returned.get(&p.partition) == Some(&p.offset) && !self.pending.iter().any(|r| r.position.partition == p.partition);
            if caught_up {
                if let Some(pos) = position.as_ref().and_then(|t| t.find_partition(&self.topic, p.partition as i32)) {
                    if let rdkafka::Offset::Offset(o) = pos.offset() {
                        next = next.max(o);
                    }
                }
            }
            let _ = tpl.add_partition_offset(&self.topic, p.partition as i32, rdkafka::Offset::Offset(next));
        }
        tpl
    }

    /// Idle and fully committed: if the position has moved past transaction
    /// markers since the last commit, commit it (asynchronously), so the group's
    /// lag reads 0 rather than the number of markers.
    fn step_over_markers(&mut self) {
        let Ok(position) = self.consumer.position() else { return };
        let mut tpl = TopicPartitionList::new();
        for e in position.elements() {
            let (p, rdkafka::Offset::Offset(pos)) = (e.partition(), e.offset()) else { continue };
            let Some(&done) = self.committed.get(&p) else { continue };
            let all_returned_committed = self.returned.get(&(p as u32)).is_some_and(|r| (*r as i64) < done);
            if all_returned_committed && pos > done {
                let _ = tpl.add_partition_offset(&self.topic, p, rdkafka::Offset::Offset(pos));
                self.committed.insert(p, pos);
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "Committing past transaction markers failed; harmless");
            }
        }
    }
}

impl Drop for KafkaConsumer {
    /// Its partitions' state leaves memory (unless another member here holds them).
    fn drop(&mut self) {
        if let Err(e) = self.state.hold(&self.state_topic, &[], &self.state_held) {
            tracing::debug!(group = %self.group, error = %e, "Letting go of the group's state");
        }
    }
}

fn lost_ownership(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::NoOffset
        )
    )
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        if !self.after_rebalance().await {
            return Ok(vec![]);
        }
        if self.pending.is_empty() {
            let first = tokio::time::timeout(wait, self.consumer.recv()).await;
            match first {
                Err(_) => {}
                Ok(Ok(m)) => {
                    let r = Self::record(&m);
                    self.pending.push_back(r);
                }
                Ok(Err(e)) => {
                    if self.last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                        warn!(group = %self.group, error = %e, "Kafka consumer error; retrying (repeats silenced for 30 s)");
                        self.last_warn = Some(std::time::Instant::now());
                    }
                }
            }
            // Take whatever else is ready without waiting.
            while self.pending.len() < max {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(m)) => {
                        let r = Self::record(&m);
                        self.pending.push_back(r);
                    }
                    _ => break,
                }
            }
            // Records fetched before a revoke belong to the new owner now.
            if !self.after_rebalance().await {
                return Ok(vec![]);
            }
        }
        if self.pending.is_empty() {
            self.step_over_markers();
        }
        let n = self.pending.len().min(max);
        let out: Vec<LogRecord> = self.pending.drain(..n).collect();
        for r in &out {
            self.returned.insert(r.position.partition, r.position.offset);
        }
        Ok(out)
    }

    async fn commit_with(&mut self, commit: Commit) -> Result<(), LogError> {
        let Commit { upto, state, outputs } = commit;
        let mut tpl = self.commit_offsets_for(&upto);
        for e in tpl.elements() {
            if let rdkafka::Offset::Offset(o) = e.offset() {
                self.committed.insert(e.partition(), o);
            }
        }
        if state.is_empty() && outputs.is_empty() {
            if tpl.count() == 0 {
                return Ok(());
            }
            return self.commit_offsets(tpl).await;
        }
        if tpl.count() == 0 {
            // Outputs of a timer: prove ownership with the offsets already
            // committed for the partitions this member owns, so a member that
            // lost them cannot publish.
            let owned = self.consumer.context().assigned.lock().unwrap_or_else(PoisonError::into_inner).clone();
            for (p, o) in &self.committed {
                if owned.contains(p) {
                    let _ = tpl.add_partition_offset(&self.topic, *p, rdkafka::Offset::Offset(*o));
                }
            }
        }
        self.commit_with_state(tpl, state, outputs).await
    }

    fn take_assignment(&mut self) -> Option<Vec<u32>> {
        self.assignment.take()
    }

    async fn lag(&mut self) -> Result<u64, LogError> {
        let parts = super::partitions_of(&self.meta, &self.topic, Duration::from_secs(10)).await?;
        let marks = watermarks(&self.meta, &self.topic, &parts).await?;
        let committed = committed(&self.cfg, &self.group, &self.topic, &parts).await?;
        Ok(parts
            .iter()
            .map(|p| {
                let (lo, hi) = marks.get(p).copied().unwrap_or((0, 0));
                (hi - committed.get(p).copied().unwrap_or(lo).max(lo)).max(0) as u64
            })
            .sum())
    }
}

/// A group's committed offsets (next offset to read) per partition.
pub(crate) async fn committed(cfg: &KafkaLogConfig, group: &str, topic: &str, parts: &[i32]) -> Result<HashMap<i32, i64>, LogError> {
    let c: BaseConsumer = client_config(cfg)?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| unavailable("cannot create a Kafka client", &cfg.brokers, e))?;
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition(topic, *p);
    }
    let brokers = cfg.brokers.clone();
    let g = group.to_string();
    blocking(move || {
        let got = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| unavailable(&format!("cannot read the offsets of group {g}"), &brokers, e))?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    })
    .await?
}
