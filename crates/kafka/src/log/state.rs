//! The state view: every process's copy of the compacted state topic.
//!
//! A background thread reads the topic (read-committed, from the beginning) and
//! applies each record; this process's own writes are applied as soon as their
//! transaction commits. Each key remembers the offset of the value it holds, so
//! a late copy of an older record never overwrites a newer one, and the time it
//! was written, so entries past the state horizon can be pruned (deleted from
//! the topic with tombstones; a deleted key leaves memory once the reader has
//! passed its tombstone).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fedistream_core::error::LogError;
use fedistream_core::log::StatePut;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::{unavailable, watermarks, KafkaLogConfig};

const SEP: char = '\u{1f}';

/// State puts sent into an open transaction, awaiting their offsets.
pub(crate) struct SentState {
    keys: Vec<String>,
    /// The records' timestamp (milliseconds since the epoch).
    at: i64,
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
}

/// Send `puts` to the state topic inside the producer's open transaction (key
/// `ns \x1f key`, a tombstone for a delete).
pub(crate) async fn send_state(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    puts: &[StatePut],
) -> Result<SentState, super::TxnFailure> {
    let keys: Vec<String> = puts.iter().map(|p| state_key(&p.ns, &p.key)).collect();
    // Set here (not by librdkafka) so this process's view and every reader
    // agree on when each entry was written (pruning goes by it).
    let at = chrono::Utc::now().timestamp_millis();
    let mut deliveries = Vec::with_capacity(puts.len());
    for (put, key) in puts.iter().zip(&keys) {
        let mut rec = rdkafka::producer::FutureRecord::<str, str>::to(topic).key(key.as_str()).timestamp(at);
        if let Some(v) = &put.value {
            rec = rec.payload(v.as_str());
        }
        deliveries.push(super::send_with_room(producer, rec).await.map_err(|e| super::classify_txn(&e))?);
    }
    Ok(SentState { keys, at, deliveries })
}

impl SentState {
    /// After the commit: apply the puts to this process's view at their offsets.
    pub(crate) async fn applied_to(self, table: &StateTable, puts: &[StatePut]) -> Result<(), super::TxnFailure> {
        let mut offsets = Vec::with_capacity(self.deliveries.len());
        for d in self.deliveries {
            match d.await {
                Ok(Ok(d)) => offsets.push((d.partition, d.offset)),
                _ => return Err(super::TxnFailure::Fatal("a state record of a committed transaction failed".into())),
            }
        }
        let at = self.at;
        table.apply_local(self.keys.into_iter().zip(puts).zip(offsets).map(|((k, p), (part, off))| (k, p.value.clone(), part, off, at)));
        Ok(())
    }
}

pub(crate) fn state_key(ns: &str, key: &str) -> String {
    let mut s = String::with_capacity(ns.len() + key.len() + 1);
    s.push_str(ns);
    s.push(SEP);
    s.push_str(key);
    s
}

/// A key's value as of (partition, offset), written at `at` (the record's
/// timestamp, milliseconds since the epoch); `value: None`: a delete whose
/// record the reader has not passed yet (see [`View::apply`]).
struct Stored {
    partition: i32,
    offset: i64,
    at: i64,
    value: Option<Box<str>>,
}

#[derive(Default)]
struct View {
    /// ns → key → value with its position.
    map: HashMap<String, HashMap<Box<str>, Stored>>,
    /// Next offset to apply, per partition.
    applied: HashMap<i32, i64>,
}

impl View {
    /// Apply one record of the state topic (read by the tail, or written by
    /// this process and applied once its transaction committed). A key keeps
    /// the newest record of its partition. A delete forgets the key once the
    /// reader has passed the delete's offset — no older record of the key can
    /// arrive after that; until then the tombstone stays, so that the reader
    /// catching up on an older value does not bring the key back. Deleted keys
    /// therefore cost no memory once the reader has caught up.
    fn apply(&mut self, full_key: &str, value: Option<String>, partition: i32, offset: i64, at: i64) {
        let Some((ns, key)) = full_key.split_once(SEP) else { return };
        let read_past = self.applied.get(&partition).copied().unwrap_or(0) > offset;
        if !self.map.contains_key(ns) {
            self.map.insert(ns.to_string(), HashMap::new());
        }
        let Some(slot) = self.map.get_mut(ns) else { return };
        match (slot.get(key), value) {
            (Some(s), _) if s.partition == partition && s.offset > offset => {}
            (Some(s), Some(_)) if s.partition == partition && s.offset == offset => {}
            (_, None) if read_past => {
                slot.remove(key);
            }
            (_, value) => {
                slot.insert(key.into(), Stored { partition, offset, at, value: value.map(String::into_boxed_str) });
            }
        }
    }
}

pub(crate) struct StateTable {
    topic: String,
    brokers: String,
    parts: Vec<i32>,
    view: Mutex<View>,
    moved: Condvar,
    stop: AtomicBool,
    meta: Arc<BaseConsumer>,
}

impl StateTable {
    pub(crate) fn start(
        cfg: &KafkaLogConfig,
        base: &ClientConfig,
        parts: Vec<i32>,
        meta: Arc<BaseConsumer>,
    ) -> Result<Arc<StateTable>, LogError> {
        let topic = cfg.state_topic();
        let consumer: BaseConsumer = base
            .clone()
            .set("group.id", format!("{}.state-reader", cfg.prefix()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| unavailable("cannot create the state reader", &cfg.brokers, e))?;
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(&topic, *p, Offset::Beginning)
                .map_err(|e| LogError::Internal(format!("state reader assignment: {e}")))?;
        }
        consumer.assign(&tpl).map_err(|e| unavailable("cannot read the state topic", &cfg.brokers, e))?;
        let table = Arc::new(StateTable {
            topic,
            brokers: cfg.brokers.clone(),
            parts,
            view: Mutex::new(View::default()),
            moved: Condvar::new(),
            stop: AtomicBool::new(false),
            meta,
        });
        let weak = Arc::downgrade(&table);
        std::thread::Builder::new()
            .name("fedistream-state".into())
            .spawn(move || tail(consumer, weak))
            .map_err(|e| LogError::Internal(format!("cannot start the state reader: {e}")))?;
        Ok(table)
    }

    /// Keys held in memory (deletes the reader has not passed yet included).
    pub(crate) fn len(&self) -> usize {
        self.view.lock().unwrap().map.values().map(|m| m.len()).sum()
    }

    pub(crate) fn get(&self, ns: &str, key: &str) -> Option<String> {
        let v = self.view.lock().unwrap();
        v.map.get(ns).and_then(|m| m.get(key)).and_then(|s| s.value.as_deref().map(str::to_string))
    }

    pub(crate) fn get_many(&self, ns: &str, keys: &[String]) -> HashMap<String, String> {
        let v = self.view.lock().unwrap();
        let Some(m) = v.map.get(ns) else { return HashMap::new() };
        keys.iter().filter_map(|k| m.get(k.as_str()).and_then(|s| s.value.as_deref().map(|val| (k.clone(), val.to_string())))).collect()
    }

    pub(crate) fn scan(&self, ns: &str) -> Vec<(String, String)> {
        let v = self.view.lock().unwrap();
        let mut out: Vec<(String, String)> = v
            .map
            .get(ns)
            .map(|m| m.iter().filter_map(|(k, s)| s.value.as_deref().map(|val| (k.to_string(), val.to_string()))).collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The keys of `namespaces` whose value was last written before `cutoff`
    /// (milliseconds since the epoch), as deletes.
    pub(crate) fn expired(&self, namespaces: &[String], cutoff: i64) -> Vec<StatePut> {
        let v = self.view.lock().unwrap();
        let mut out = Vec::new();
        for ns in namespaces {
            if let Some(m) = v.map.get(ns) {
                out.extend(m.iter().filter(|(_, s)| s.value.is_some() && s.at < cutoff).map(|(k, _)| StatePut::delete(ns, k.to_string())));
            }
        }
        out
    }

    /// Apply this process's own committed writes: (full key, value, partition, offset, timestamp).
    pub(crate) fn apply_local(&self, puts: impl Iterator<Item = (String, Option<String>, i32, i64, i64)>) {
        let mut v = self.view.lock().unwrap();
        for (k, val, p, o, at) in puts {
            v.apply(&k, val, p, o, at);
        }
    }

    /// Wait until the view holds everything committed to the state topic before
    /// this call.
    pub(crate) async fn catch_up(self: &Arc<Self>, timeout: Duration) -> Result<(), LogError> {
        let marks = watermarks(&self.meta, &self.topic, &self.parts).await?;
        let me = self.clone();
        super::blocking(move || {
            let deadline = Instant::now() + timeout;
            let mut v = me.view.lock().unwrap();
            loop {
                let behind: Vec<i32> =
                    marks.iter().filter(|(p, (_, hi))| v.applied.get(p).copied().unwrap_or(0) < *hi).map(|(p, _)| *p).collect();
                if behind.is_empty() {
                    return Ok(());
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(LogError::Unavailable(format!(
                        "the state topic {} could not be read to its end within {timeout:?} (Kafka at {}; partitions behind: {behind:?})",
                        me.topic, me.brokers
                    )));
                }
                v = me.moved.wait_timeout(v, deadline - now).unwrap().0;
            }
        })
        .await?
    }
}

impl Drop for StateTable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The reader thread: runs until the table is dropped.
fn tail(consumer: BaseConsumer, table: std::sync::Weak<StateTable>) {
    let mut last_warn = Instant::now() - Duration::from_secs(60);
    loop {
        let Some(t) = table.upgrade() else { return };
        if t.stop.load(Ordering::Relaxed) {
            return;
        }
        let mut positions_stale = false;
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let val = m.payload().map(|p| String::from_utf8_lossy(p).into_owned());
                let at = m.timestamp().to_millis().unwrap_or(0);
                let mut v = t.view.lock().unwrap();
                // Past this record first: a delete read here forgets its key.
                let next = v.applied.entry(m.partition()).or_insert(0);
                *next = (*next).max(m.offset() + 1);
                if let Some(k) = key {
                    v.apply(&k, val, m.partition(), m.offset(), at);
                }
                drop(v);
                t.moved.notify_all();
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => positions_stale = true,
            Some(Err(e)) => {
                if last_warn.elapsed() > Duration::from_secs(30) {
                    warn!(error = %e, "Reading the Kafka state topic: retrying");
                    last_warn = Instant::now();
                }
            }
        }
        // At the end of a partition the position may sit past records the reader
        // never sees (transaction markers): take it from the consumer.
        if positions_stale {
            if let Ok(tpl) = consumer.position() {
                let mut v = t.view.lock().unwrap();
                for e in tpl.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        let next = v.applied.entry(e.partition()).or_insert(0);
                        *next = (*next).max(o);
                    }
                }
                drop(v);
                t.moved.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> String {
        state_key("seen", k)
    }

    /// The reader reaching `offset` of partition 0 (as `tail` does).
    fn read(v: &mut View, k: &str, value: Option<&str>, offset: i64) {
        let next = v.applied.entry(0).or_insert(0);
        *next = (*next).max(offset + 1);
        v.apply(&key(k), value.map(str::to_string), 0, offset, 0);
    }

    #[test]
    fn a_delete_leaves_memory_once_the_reader_passed_it_and_nothing_older_brings_the_key_back() {
        let mut v = View::default();
        // This process's own delete, committed before the reader got there.
        v.apply(&key("a"), None, 0, 10, 0);
        assert_eq!(v.map["seen"].len(), 1, "the tombstone stays until the reader passes it");
        // The reader catches up on the older value: it must not come back.
        read(&mut v, "a", Some("old"), 5);
        assert!(v.map["seen"]["a"].value.is_none());
        read(&mut v, "a", None, 10);
        assert!(v.map["seen"].is_empty(), "the reader passed the delete: the key is gone");
        // A delete the reader has already passed (own write applied late) goes at once.
        read(&mut v, "b", Some("x"), 11);
        read(&mut v, "b", None, 12);
        v.apply(&key("b"), None, 0, 12, 0);
        assert!(v.map["seen"].is_empty());
        // A newer value is kept against an older record read late.
        v.apply(&key("c"), Some("new".into()), 0, 20, 7);
        read(&mut v, "c", Some("older"), 15);
        assert_eq!(v.map["seen"]["c"].value.as_deref(), Some("new"));
        assert_eq!(v.map["seen"]["c"].at, 7);
    }
}
