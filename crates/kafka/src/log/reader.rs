//! A reader of a log topic outside consumer groups ([`Log::reader`]): the
//! HTTP server's `/api/events` feed on Kafka.
//!
//! It is a plain consumer *assigned* every partition of the topic (no
//! `subscribe`, so it never joins a group, and nothing is ever committed:
//! `enable.auto.commit` off, its commits refused), reading committed records
//! only, like the channels. Where it starts is decided once, at open, from the
//! partitions' watermarks: after the offset `after` names for a partition
//! (clamped into what the broker holds), at the high watermark when `after` is
//! empty, at the start of a partition a non-empty `after` does not name (see
//! the contract of [`Log::reader`]). [`Consumer::reader_start`] gives that
//! starting point back as positions, so a client that remembers it and the
//! records it saw resumes exactly there on every partition. Retention is the
//! broker's and does not know readers: a reader that falls behind it goes on
//! from the oldest record left (`auto.offset.reset = earliest`).
//!
//! [`Log::reader`]: fedistream_core::log::Log::reader

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fedistream_core::error::LogError;
use fedistream_core::event::{LogRecord, Position};
use fedistream_core::log::{Commit, Consumer};
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::consumer::KafkaConsumer;
use super::{client_config, partitions_of, unavailable, watermarks, KafkaLogConfig};

pub struct KafkaReader {
    topic: String,
    consumer: StreamConsumer,
    /// For the partitions' watermarks ([`Consumer::lag`]).
    meta: Arc<BaseConsumer>,
    start: Vec<Position>,
    /// Per partition, the offset after the last record returned (at open: where it starts).
    next: HashMap<i32, i64>,
    pending: VecDeque<LogRecord>,
    last_warn: Option<std::time::Instant>,
}

/// Where a reader starts on one partition: the next offset to read.
fn start_offset(partition: i32, marks: (i64, i64), after: &[Position]) -> i64 {
    let (lo, hi) = marks;
    match after.iter().find(|p| i64::from(p.partition) == i64::from(partition)) {
        Some(p) => i64::try_from(p.offset).unwrap_or(i64::MAX).saturating_add(1).clamp(lo, hi.max(lo)),
        None if after.is_empty() => hi,
        None => lo,
    }
}

impl KafkaReader {
    /// Assign every partition of the Kafka topic `topic` at its starting offset.
    pub(crate) async fn open(
        cfg: &KafkaLogConfig,
        topic: &str,
        meta: &Arc<BaseConsumer>,
        after: &[Position],
    ) -> Result<KafkaReader, LogError> {
        let parts = partitions_of(meta, topic, cfg.connect_timeout).await?;
        let marks = watermarks(meta, topic, &parts).await?;
        // librdkafka wants a group id even for a consumer that only assigns; this
        // one never joins it (no subscribe) and never commits to it.
        let consumer: StreamConsumer = client_config(cfg)?
            .set("group.id", format!("{}.reader", cfg.prefix()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            // What it fetches ahead waits in memory: a few MB, not librdkafka's 64 MB.
            .set("queued.max.messages.kbytes", "4096")
            .create()
            .map_err(|e| unavailable("cannot create a Kafka reader", &cfg.brokers, e))?;
        let mut tpl = TopicPartitionList::new();
        let mut start = Vec::new();
        let mut at = HashMap::new();
        for p in &parts {
            let next = start_offset(*p, marks.get(p).copied().unwrap_or((0, 0)), after);
            at.insert(*p, next);
            tpl.add_partition_offset(topic, *p, Offset::Offset(next))
                .map_err(|e| LogError::Internal(format!("reader of {topic}: partition {p}: {e}")))?;
            if next > 0 {
                start.push(Position { partition: *p as u32, offset: (next - 1) as u64 });
            }
        }
        consumer.assign(&tpl).map_err(|e| unavailable(&format!("cannot read {topic}"), &cfg.brokers, e))?;
        Ok(KafkaReader {
            topic: topic.to_string(),
            consumer,
            meta: meta.clone(),
            start,
            next: at,
            pending: VecDeque::new(),
            last_warn: None,
        })
    }
}

#[async_trait]
impl Consumer for KafkaReader {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        if self.pending.is_empty() {
            match tokio::time::timeout(wait, self.consumer.recv()).await {
                Err(_) => {}
                Ok(Ok(m)) => self.pending.push_back(KafkaConsumer::record(&m)),
                Ok(Err(e)) => {
                    // Transient (a broker away): librdkafka reconnects by itself.
                    if self.last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                        warn!(topic = %self.topic, error = %e, "Kafka reader error; retrying (repeats silenced for 30 s)");
                        self.last_warn = Some(std::time::Instant::now());
                    }
                }
            }
            while self.pending.len() < max {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(m)) => self.pending.push_back(KafkaConsumer::record(&m)),
                    _ => break,
                }
            }
        }
        let n = self.pending.len().min(max);
        let out: Vec<LogRecord> = self.pending.drain(..n).collect();
        for r in &out {
            self.next.insert(r.position.partition as i32, r.position.offset as i64 + 1);
        }
        Ok(out)
    }

    async fn commit_with(&mut self, _commit: Commit) -> Result<(), LogError> {
        Err(LogError::Unsupported("a reader outside consumer groups does not commit".into()))
    }

    /// Records between what this reader has returned and the partitions'
    /// high watermarks now: what a first read must still fetch to have read
    /// the topic as it stands (the dashboard's first page). Like a group's
    /// lag on Kafka, a transaction's commit marker at a partition's end
    /// counts (at most one per partition).
    async fn lag(&mut self) -> Result<u64, LogError> {
        let parts: Vec<i32> = self.next.keys().copied().collect();
        let marks = watermarks(&self.meta, &self.topic, &parts).await?;
        Ok(parts
            .iter()
            .map(|p| {
                let (lo, hi) = marks.get(p).copied().unwrap_or((0, 0));
                (hi - self.next.get(p).copied().unwrap_or(lo).max(lo)).max(0) as u64
            })
            .sum())
    }

    fn reader_start(&self) -> Vec<Position> {
        self.start.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_starts_after_the_named_offset_within_what_the_broker_holds() {
        let at = |p: u32, o: u64| Position { partition: p, offset: o };
        // Nothing named: the head.
        assert_eq!(start_offset(0, (3, 10), &[]), 10);
        // Named: right after it, clamped to the watermarks.
        assert_eq!(start_offset(0, (3, 10), &[at(0, 5)]), 6);
        assert_eq!(start_offset(0, (3, 10), &[at(0, 1)]), 3, "retention removed 1..3");
        assert_eq!(start_offset(0, (3, 10), &[at(0, 40)]), 10, "beyond the head");
        assert_eq!(start_offset(0, (3, 10), &[at(0, u64::MAX)]), 10);
        // Another partition named: this one from its start.
        assert_eq!(start_offset(0, (3, 10), &[at(1, 5)]), 3);
        assert_eq!(start_offset(2, (0, 0), &[at(1, 5)]), 0);
    }
}
