//! The state view: every process's copy of the compacted state topic.
//!
//! A background thread reads the topic (read-committed, from the beginning) and
//! applies each record; this process's own writes are applied as soon as their
//! transaction commits. Each key remembers the offset of the value it holds, so
//! a late copy of an older record never overwrites a newer one.

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
    let mut deliveries = Vec::with_capacity(puts.len());
    for (put, key) in puts.iter().zip(&keys) {
        let mut rec = rdkafka::producer::FutureRecord::<str, str>::to(topic).key(key.as_str());
        if let Some(v) = &put.value {
            rec = rec.payload(v.as_str());
        }
        deliveries.push(super::send_with_room(producer, rec).await.map_err(|e| super::classify_txn(&e))?);
    }
    Ok(SentState { keys, deliveries })
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
        table.apply_local(self.keys.into_iter().zip(puts).zip(offsets).map(|((k, p), (part, off))| (k, p.value.clone(), part, off)));
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

/// A key's value as of (partition, offset); `None`: deleted.
type Stored = (i32, i64, Option<String>);

#[derive(Default)]
struct View {
    /// ns → key → value with its position.
    map: HashMap<String, HashMap<String, Stored>>,
    /// Next offset to apply, per partition.
    applied: HashMap<i32, i64>,
}

impl View {
    fn apply(&mut self, full_key: &str, value: Option<String>, partition: i32, offset: i64) {
        let Some((ns, key)) = full_key.split_once(SEP) else { return };
        let slot = self.map.entry(ns.to_string()).or_default();
        match slot.get(key) {
            Some((p, o, _)) if *p == partition && *o >= offset => {}
            _ => {
                slot.insert(key.to_string(), (partition, offset, value));
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

    pub(crate) fn len(&self) -> usize {
        self.view.lock().unwrap().map.values().map(|m| m.len()).sum()
    }

    pub(crate) fn get(&self, ns: &str, key: &str) -> Option<String> {
        let v = self.view.lock().unwrap();
        v.map.get(ns).and_then(|m| m.get(key)).and_then(|(_, _, val)| val.clone())
    }

    pub(crate) fn get_many(&self, ns: &str, keys: &[String]) -> HashMap<String, String> {
        let v = self.view.lock().unwrap();
        let Some(m) = v.map.get(ns) else { return HashMap::new() };
        keys.iter().filter_map(|k| m.get(k).and_then(|(_, _, val)| val.clone().map(|val| (k.clone(), val)))).collect()
    }

    pub(crate) fn scan(&self, ns: &str) -> Vec<(String, String)> {
        let v = self.view.lock().unwrap();
        let mut out: Vec<(String, String)> = v
            .map
            .get(ns)
            .map(|m| m.iter().filter_map(|(k, (_, _, val))| val.clone().map(|val| (k.clone(), val))).collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Apply this process's own committed writes: (full key, value, partition, offset).
    pub(crate) fn apply_local(&self, puts: impl Iterator<Item = (String, Option<String>, i32, i64)>) {
        let mut v = self.view.lock().unwrap();
        for (k, val, p, o) in puts {
            v.apply(&k, val, p, o);
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
                let mut v = t.view.lock().unwrap();
                if let Some(k) = key {
                    v.apply(&k, val, m.partition(), m.offset());
                }
                let next = v.applied.entry(m.partition()).or_insert(0);
                *next = (*next).max(m.offset() + 1);
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
