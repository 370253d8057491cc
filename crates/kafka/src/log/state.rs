//! The state view: every process's copy of the state it needs.
//!
//! State lives in two compacted topics:
//! * `…state`, the global one: status documents, channels' and processors'
//!   state, the id index, and whatever names no owner — every process reads
//!   all of it;
//! * `…state.slots`, one partition per ingest slot: the state owned by an
//!   ingest unit ([`StatePut::owner`]: checkpoints, windows, dedup entries),
//!   in the partition of the unit's slot ([`crate::assign::slot_of`]). A
//!   process reads only the partitions of the slots it holds
//!   ([`StateTable::own_slots`]), so that state takes memory in proportion
//!   to the work it does.
//!
//! A background thread reads both (read-committed, from the beginning) and
//! applies each record; this process's own writes are applied as soon as their
//! transaction commits. Each key remembers the offset of the value it holds, so
//! a late copy of an older record never overwrites a newer one, and the time it
//! was written, so entries past the state horizon can be pruned (deleted from
//! the topic with tombstones; a deleted key leaves memory once the reader has
//! passed its tombstone).
//!
//! Reads look at the owned state first, then at the global one: a deployment
//! from before the split kept owned state in the global topic, and it stays
//! readable there. An owned write of a key the global view still holds also
//! deletes it there (in the same transaction), so the old copy can never come
//! back from under a newer owned value or delete; what is never rewritten
//! expires with the state horizon.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fedistream_core::error::LogError;
use fedistream_core::log::{Owner, StatePut};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::{unavailable, watermarks, KafkaLogConfig};
use crate::assign::slot_of;

const SEP: char = '\u{1f}';

/// Where a state record goes: the global topic, or a partition of an owned
/// state topic (the slots topic, a consumer group's state topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dest {
    Global,
    Owned(Arc<str>, i32),
}

/// State puts with their destinations, ready for a transaction.
pub(crate) type Routed = Vec<(Dest, StatePut)>;

/// State puts sent into an open transaction, awaiting their offsets.
pub(crate) struct SentState {
    keys: Vec<String>,
    /// The records' timestamp (milliseconds since the epoch).
    at: i64,
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
}

/// Send `puts` to the state topics inside the producer's open transaction (key
/// `ns \x1f key`, a tombstone for a delete; an owned record to its partition).
pub(crate) async fn send_state(
    producer: &rdkafka::producer::FutureProducer,
    global: &str,
    puts: &[(Dest, StatePut)],
) -> Result<SentState, super::TxnFailure> {
    let keys: Vec<String> = puts.iter().map(|(_, p)| state_key(&p.ns, &p.key)).collect();
    // Set here (not by librdkafka) so this process's view and every reader
    // agree on when each entry was written (pruning goes by it).
    let at = chrono::Utc::now().timestamp_millis();
    let mut deliveries = Vec::with_capacity(puts.len());
    for ((dest, put), key) in puts.iter().zip(&keys) {
        let mut rec = match dest {
            Dest::Global => rdkafka::producer::FutureRecord::<str, str>::to(global),
            Dest::Owned(topic, p) => rdkafka::producer::FutureRecord::<str, str>::to(topic).partition(*p),
        }
        .key(key.as_str())
        .timestamp(at);
        if let Some(v) = &put.value {
            rec = rec.payload(v.as_str());
        }
        deliveries.push(super::send_with_room(producer, rec).await.map_err(|e| super::classify_txn(&e))?);
    }
    Ok(SentState { keys, at, deliveries })
}

impl SentState {
    /// After the commit: apply the puts to this process's view at their offsets.
    pub(crate) async fn applied_to(self, table: &StateTable, puts: &[(Dest, StatePut)]) -> Result<(), super::TxnFailure> {
        let mut offsets = Vec::with_capacity(self.deliveries.len());
        for d in self.deliveries {
            match d.await {
                Ok(Ok(d)) => offsets.push((d.partition, d.offset)),
                _ => return Err(super::TxnFailure::Fatal("a state record of a committed transaction failed".into())),
            }
        }
        let at = self.at;
        let mut v = table.view.lock().unwrap();
        for ((key, (dest, put)), (part, off)) in self.keys.into_iter().zip(puts).zip(offsets) {
            let view = match dest {
                Dest::Global => Some(&mut v.global),
                // A partition not held here: another process keeps it.
                Dest::Owned(topic, p) => v.owned_view(topic, *p),
            };
            if let Some(view) = view {
                view.apply(&key, put.value.clone(), part, off, at);
            }
        }
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

impl View {
    fn len(&self) -> usize {
        self.map.values().map(|m| m.len()).sum()
    }

    fn value(&self, ns: &str, key: &str) -> Option<&str> {
        self.map.get(ns).and_then(|m| m.get(key)).and_then(|s| s.value.as_deref())
    }

    /// Forget every key of `partitions` and how far they were read (one pass).
    fn drop_partitions(&mut self, partitions: &[i32]) {
        for m in self.map.values_mut() {
            m.retain(|_, s| !partitions.contains(&s.partition));
        }
        self.map.retain(|_, m| !m.is_empty());
        for p in partitions {
            self.applied.remove(p);
        }
    }
}

/// The partitions of an owned state topic this process holds, and their view.
#[derive(Default)]
struct Owned {
    view: View,
    /// Partition → how many holders (consumers of one group in this process) want it.
    held: BTreeMap<i32, usize>,
}

/// The global view, and those of the owned state this process holds.
#[derive(Default)]
struct Views {
    global: View,
    /// Owned state topic → what is held of it.
    owned: HashMap<Arc<str>, Owned>,
}

impl Views {
    /// The view of `partition` of owned state topic `topic`, if it is held.
    fn owned_view(&mut self, topic: &str, partition: i32) -> Option<&mut View> {
        self.owned.get_mut(topic).filter(|o| o.held.contains_key(&partition)).map(|o| &mut o.view)
    }

    fn owned_len(&self) -> usize {
        self.owned.values().map(|o| o.view.len()).sum()
    }
}

pub(crate) struct StateTable {
    global: String,
    slots: Arc<str>,
    brokers: String,
    parts: Vec<i32>,
    /// Ingest slots (partitions of the slots topic).
    slot_count: i32,
    /// The slots asked for by the last [`StateTable::own_slots`].
    slots_held: Mutex<BTreeSet<i32>>,
    consumer: Arc<BaseConsumer>,
    view: Mutex<Views>,
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
        let global = cfg.state_topic();
        let consumer: BaseConsumer = base
            .clone()
            .set("group.id", format!("{}.state-reader", cfg.prefix()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| unavailable("cannot create the state reader", &cfg.brokers, e))?;
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(&global, *p, Offset::Beginning)
                .map_err(|e| LogError::Internal(format!("state reader assignment: {e}")))?;
        }
        consumer.assign(&tpl).map_err(|e| unavailable("cannot read the state topic", &cfg.brokers, e))?;
        let table = Arc::new(StateTable {
            global,
            slots: cfg.state_slots_topic().into(),
            brokers: cfg.brokers.clone(),
            parts,
            slot_count: cfg.ingest_slots,
            slots_held: Mutex::default(),
            consumer: Arc::new(consumer),
            view: Mutex::new(Views::default()),
            moved: Condvar::new(),
            stop: AtomicBool::new(false),
            meta,
        });
        let weak = Arc::downgrade(&table);
        let consumer = table.consumer.clone();
        std::thread::Builder::new()
            .name("fedistream-state".into())
            .spawn(move || tail(consumer, weak))
            .map_err(|e| LogError::Internal(format!("cannot start the state reader: {e}")))?;
        Ok(table)
    }

    /// The global state topic.
    pub(crate) fn global_topic(&self) -> &str {
        &self.global
    }

    /// Route `puts`: a unit's state to the partition of its slot, a
    /// partition's to that partition of `group_topic` (the committing
    /// group's state topic), the rest to the global topic. An owned put of a
    /// key the global view still holds (state from before the split) also
    /// deletes it there.
    pub(crate) fn route(&self, puts: Vec<StatePut>, group_topic: Option<&Arc<str>>) -> Result<Routed, LogError> {
        let v = self.view.lock().unwrap();
        let mut out = Vec::with_capacity(puts.len());
        for put in puts {
            let dest = match (&put.owner, group_topic) {
                (None, _) => Dest::Global,
                (Some(Owner::Unit(unit)), _) => Dest::Owned(self.slots.clone(), slot_of(unit, self.slot_count)),
                (Some(Owner::Partition(p)), Some(topic)) => Dest::Owned(topic.clone(), *p as i32),
                (Some(Owner::Partition(_)), None) => {
                    return Err(LogError::Unsupported(format!(
                        "state {}/{} is kept per input partition: only a consumer group can commit it",
                        put.ns, put.key
                    )))
                }
            };
            if dest != Dest::Global && v.global.value(&put.ns, &put.key).is_some() {
                out.push((Dest::Global, StatePut::delete(&put.ns, put.key.clone())));
            }
            out.push((dest, put));
        }
        Ok(out)
    }

    /// Hold `add` and let go of `release`, partitions of owned state topic
    /// `topic` (counted per holder: a partition is read while anyone holds
    /// it). A partition newly held is read from its beginning; one no longer
    /// held leaves memory at once. Call [`StateTable::catch_up`] before
    /// working on a partition newly held.
    pub(crate) fn hold(&self, topic: &Arc<str>, add: &[i32], release: &[i32]) -> Result<(), LogError> {
        let mut v = self.view.lock().unwrap();
        let o = v.owned.entry(topic.clone()).or_default();
        // The counts after this call; nothing changes unless the reader takes it.
        let mut held = o.held.clone();
        let mut dropped = Vec::new();
        for p in release {
            if let Some(n) = held.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    held.remove(p);
                    dropped.push(*p);
                }
            }
        }
        let mut added = Vec::new();
        for p in add {
            let n = held.entry(*p).or_insert(0);
            *n += 1;
            if *n == 1 && !dropped.contains(p) {
                added.push(*p);
            }
        }
        dropped.retain(|p| !held.contains_key(p));
        if !dropped.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for p in &dropped {
                tpl.add_partition(topic, *p);
            }
            self.consumer.incremental_unassign(&tpl).map_err(|e| unavailable("cannot stop reading owned state", &self.brokers, e))?;
            o.view.drop_partitions(&dropped);
        }
        o.held = held;
        if !added.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for p in &added {
                tpl.add_partition_offset(topic, *p, Offset::Beginning)
                    .map_err(|e| LogError::Internal(format!("state reader assignment: {e}")))?;
            }
            if let Err(e) = self.consumer.incremental_assign(&tpl) {
                for p in &added {
                    o.held.remove(p);
                }
                return Err(unavailable("cannot read owned state", &self.brokers, e));
            }
        }
        if !added.is_empty() || !dropped.is_empty() {
            let held: Vec<i32> = o.held.keys().copied().collect();
            tracing::info!(topic = %topic, added = ?added, dropped = ?dropped, held = ?held, keys = o.view.len(), "Owned state held");
        }
        Ok(())
    }

    /// Hold the state of exactly `slots` (see [`StateTable::hold`]).
    pub(crate) fn own_slots(&self, slots: &BTreeSet<i32>) -> Result<(), LogError> {
        let mut held = self.slots_held.lock().unwrap();
        let added: Vec<i32> = slots.difference(&held).copied().collect();
        let dropped: Vec<i32> = held.difference(slots).copied().collect();
        self.hold(&self.slots, &added, &dropped)?;
        *held = slots.clone();
        Ok(())
    }

    /// Every ingest slot (tools that show the whole pipeline: `fedistream status`).
    pub(crate) fn own_all_slots(&self) -> Result<(), LogError> {
        self.own_slots(&(0..self.slot_count).collect())
    }

    /// Keys held in memory (deletes the reader has not passed yet included):
    /// the global view's and those of the owned state held.
    pub(crate) fn len(&self) -> usize {
        let v = self.view.lock().unwrap();
        v.global.len() + v.owned_len()
    }

    /// Keys held in memory for owned state topic `topic`, and its partitions held.
    pub(crate) fn owned_keys(&self, topic: &str) -> (usize, BTreeSet<i32>) {
        let v = self.view.lock().unwrap();
        v.owned.get(topic).map(|o| (o.view.len(), o.held.keys().copied().collect())).unwrap_or_default()
    }

    pub(crate) fn slots_topic(&self) -> &Arc<str> {
        &self.slots
    }

    pub(crate) fn get(&self, ns: &str, key: &str) -> Option<String> {
        let v = self.view.lock().unwrap();
        v.owned.values().find_map(|o| o.view.value(ns, key)).or_else(|| v.global.value(ns, key)).map(str::to_string)
    }

    pub(crate) fn get_many(&self, ns: &str, keys: &[String]) -> HashMap<String, String> {
        let v = self.view.lock().unwrap();
        let maps: Vec<&HashMap<Box<str>, Stored>> =
            v.owned.values().map(|o| &o.view).chain([&v.global]).filter_map(|view| view.map.get(ns)).collect();
        if maps.is_empty() {
            return HashMap::new();
        }
        keys.iter()
            .filter_map(|k| {
                maps.iter().find_map(|m| m.get(k.as_str()).and_then(|s| s.value.as_deref())).map(|val| (k.clone(), val.to_string()))
            })
            .collect()
    }

    pub(crate) fn scan(&self, ns: &str) -> Vec<(String, String)> {
        let v = self.view.lock().unwrap();
        let mut out: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
        // Owned values last: they replace a global copy of the same key.
        for view in [&v.global].into_iter().chain(v.owned.values().map(|o| &o.view)) {
            if let Some(m) = view.map.get(ns) {
                out.extend(m.iter().filter_map(|(k, s)| s.value.as_deref().map(|val| (&**k, val))));
            }
        }
        out.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The keys of `namespaces` whose value was last written before `cutoff`
    /// (milliseconds since the epoch), as deletes where they are (the global
    /// topic, or the partition of the owned state topic they were read from).
    pub(crate) fn expired(&self, namespaces: &[String], cutoff: i64) -> Routed {
        let v = self.view.lock().unwrap();
        let mut out = Vec::new();
        let views = [(None, &v.global)].into_iter().chain(v.owned.iter().map(|(t, o)| (Some(t), &o.view)));
        for (topic, view) in views {
            for ns in namespaces {
                if let Some(m) = view.map.get(ns) {
                    out.extend(m.iter().filter(|(_, s)| s.value.is_some() && s.at < cutoff).map(|(k, s)| {
                        let dest = match topic {
                            Some(t) => Dest::Owned(t.clone(), s.partition),
                            None => Dest::Global,
                        };
                        (dest, StatePut::delete(ns, k.to_string()))
                    }));
                }
            }
        }
        out
    }

    /// Wait until the view holds everything committed to the state topic, and
    /// to the partitions of owned state held, before this call.
    pub(crate) async fn catch_up(self: &Arc<Self>, timeout: Duration) -> Result<(), LogError> {
        // Per topic (`None`: the global one), the high watermark of each partition held.
        type Marks = HashMap<i32, (i64, i64)>;
        let mut marks: Vec<(Option<Arc<str>>, Marks)> = vec![(None, watermarks(&self.meta, &self.global, &self.parts).await?)];
        let held: Vec<(Arc<str>, Vec<i32>)> = {
            let v = self.view.lock().unwrap();
            v.owned.iter().filter(|(_, o)| !o.held.is_empty()).map(|(t, o)| (t.clone(), o.held.keys().copied().collect())).collect()
        };
        for (topic, parts) in held {
            let m = watermarks(&self.meta, &topic, &parts).await?;
            marks.push((Some(topic), m));
        }
        let me = self.clone();
        super::blocking(move || {
            let deadline = Instant::now() + timeout;
            let mut v = me.view.lock().unwrap();
            loop {
                let mut behind: Vec<String> = Vec::new();
                for (topic, m) in &marks {
                    for (p, (_, hi)) in m {
                        let view = match topic {
                            None => Some(&mut v.global),
                            // A partition let go of meanwhile is no longer waited for.
                            Some(t) => v.owned_view(t, *p),
                        };
                        if view.is_some_and(|view| view.applied.get(p).copied().unwrap_or(0) < *hi) {
                            behind.push(format!("{}/{p}", topic.as_deref().unwrap_or(&me.global)));
                        }
                    }
                }
                if behind.is_empty() {
                    return Ok(());
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(LogError::Unavailable(format!(
                        "the state topics could not be read to their end within {timeout:?} (Kafka at {}; partitions behind: {})",
                        me.brokers,
                        behind.join(", ")
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
fn tail(consumer: Arc<BaseConsumer>, table: std::sync::Weak<StateTable>) {
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
                let view = if m.topic() == t.global { Some(&mut v.global) } else { v.owned_view(m.topic(), m.partition()) };
                // A record of a partition let go of since it was fetched is not kept.
                if let Some(view) = view {
                    // Past this record first: a delete read here forgets its key.
                    let next = view.applied.entry(m.partition()).or_insert(0);
                    *next = (*next).max(m.offset() + 1);
                    if let Some(k) = key {
                        view.apply(&k, val, m.partition(), m.offset(), at);
                    }
                }
                drop(v);
                t.moved.notify_all();
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => positions_stale = true,
            Some(Err(e)) => {
                if last_warn.elapsed() > Duration::from_secs(30) {
                    warn!(error = %e, "Reading the Kafka state topics: retrying");
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
                        let view = if e.topic() == t.global { Some(&mut v.global) } else { v.owned_view(e.topic(), e.partition()) };
                        if let Some(view) = view {
                            let next = view.applied.entry(e.partition()).or_insert(0);
                            *next = (*next).max(o);
                        }
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
