//! State owned by ingest units, split by slot (`…state.slots`), against a real
//! broker (`scripts/kafka up`): each process holds only the state of the slots
//! it holds, a slot moving carries its state (dedup still suppresses a
//! redelivered event), dropping a slot drops its memory, and state written
//! before the split (the global topic) stays readable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fedistream_core::log::{AppendBatch, Log, StatePut};
use fedistream_core::runtime::{self, Pipeline, RuntimeOptions, SourceSpec, SEEN_NS};
use fedistream_core::testing::{created, VecSource};
use fedistream_core::{DeadLetter, Event, SourceBatch};
use fedistream_kafka::assign::slot_of;
use fedistream_kafka::log::{KafkaLog, KafkaLogConfig};
use fedistream_kafka::testing::brokers;
use tokio_util::sync::CancellationToken;

fn config(test: &str) -> KafkaLogConfig {
    let mut c = KafkaLogConfig::new(brokers(), format!("t-{test}-{}-{:x}", std::process::id(), rand::random::<u32>()));
    c.partitions = 3;
    c.ingest_slots = 4;
    c
}

/// `n` units (accounts of source `src`), by slot.
fn units(cfg: &KafkaLogConfig, n: usize) -> BTreeMap<i32, Vec<String>> {
    let mut by_slot: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for i in 0..n {
        let unit = format!("src/user{i}@x.example");
        by_slot.entry(slot_of(&unit, cfg.ingest_slots)).or_default().push(unit);
    }
    assert_eq!(by_slot.len(), cfg.ingest_slots as usize, "every slot has units: {by_slot:?}");
    by_slot
}

fn event_of(unit: &str, n: u64) -> Event {
    let acct = unit.split_once('/').unwrap().1;
    created("src", acct, n, "hello")
}

/// A unit's state as an ingest run writes it: one event with its dedup
/// entry, and the unit's checkpoint, all owned by the unit.
fn owned_batch(unit: &str) -> SourceBatch {
    let mut b = SourceBatch { events: vec![], state: vec![StatePut::set("checkpoint", unit, "1")] };
    b.push(event_of(unit, 1));
    b.set_owner(&unit.into());
    b
}

/// Run the real ingestor over `batches` on `log`; (appended, duplicates suppressed).
async fn ingest(log: Arc<dyn Log>, batches: Vec<SourceBatch>) -> (u64, u64) {
    let dl = tempfile::tempdir().unwrap();
    let source = SourceSpec::new("src", Box::new(VecSource { batches }), DeadLetter::new(dl.path().join("dl")));
    let p =
        Pipeline { log, sources: vec![source], processors: vec![], channels: vec![], options: RuntimeOptions::default(), progress: None };
    let s = runtime::run(p, CancellationToken::new()).await.unwrap();
    assert!(s.failures.is_empty(), "{:?}", s.failures);
    let c = |k: &str| s.log.counters.get(k).copied().unwrap_or(0);
    (c("appended"), c("duplicates_suppressed"))
}

async fn scan_keys(log: &KafkaLog, ns: &str) -> BTreeSet<String> {
    log.state_scan(ns).await.unwrap().into_iter().map(|(k, _)| k).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_process_holds_the_state_of_its_slots_and_a_slot_carries_its_state_when_it_moves() {
    let cfg = config("slots");
    let by_slot = units(&cfg, 24);
    let all: Vec<&String> = by_slot.values().flatten().collect();

    // Ingest every unit once (a process holding no slot can still write:
    // ownership is the ingest group's job, proven by its fence).
    let writer = KafkaLog::open(cfg.clone()).await.unwrap();
    let (appended, dups) = ingest(writer.clone(), all.iter().map(|u| owned_batch(u)).collect()).await;
    assert_eq!((appended, dups), (all.len() as u64, 0));
    writer.state_put(vec![StatePut::set("status", "worker-w", "{}")]).await.unwrap();
    assert_eq!(writer.slot_state().0, 0, "a process holding no slot keeps none of their state, even what it wrote");

    // A holds slots 0 and 1, B slots 2 and 3.
    let (a, b) = (KafkaLog::open(cfg.clone()).await.unwrap(), KafkaLog::open(cfg.clone()).await.unwrap());
    a.own_slots(&[0, 1].into()).unwrap();
    b.own_slots(&[2, 3].into()).unwrap();
    a.catch_up().await.unwrap();
    b.catch_up().await.unwrap();
    let of = |slots: &[i32]| -> BTreeSet<String> { slots.iter().flat_map(|s| by_slot[s].iter().cloned()).collect() };
    assert_eq!(scan_keys(&a, "checkpoint").await, of(&[0, 1]));
    assert_eq!(scan_keys(&b, "checkpoint").await, of(&[2, 3]));
    // Two keys per unit (its checkpoint and its dedup entry), nothing else.
    assert_eq!(a.slot_state(), (2 * of(&[0, 1]).len(), [0, 1].into()));
    assert_eq!(b.slot_state(), (2 * of(&[2, 3]).len(), [2, 3].into()));
    let uri = |unit: &str| event_of(unit, 1).key;
    let (u1, u2) = (&by_slot[&1][0], &by_slot[&2][0]);
    assert!(a.state_get(SEEN_NS, &uri(u1)).await.unwrap().is_some());
    assert_eq!(a.state_get(SEEN_NS, &uri(u2)).await.unwrap(), None, "slot 2's dedup entries are B's alone");
    // Global state (status documents) is everyone's; no dedup entry is global.
    for l in [&a, &b] {
        assert_eq!(l.state_get("status", "worker-w").await.unwrap().as_deref(), Some("{}"));
        assert_eq!(l.state_scan(SEEN_NS).await.unwrap().len(), l.slot_state().0 / 2);
    }

    // Slot 1 moves from A to B: A drops its memory at once, B loads it.
    a.own_slots(&[0].into()).unwrap();
    assert_eq!(a.slot_state(), (2 * of(&[0]).len(), [0].into()), "the revoked slot's state left memory");
    assert_eq!(a.state_get(SEEN_NS, &uri(u1)).await.unwrap(), None);
    b.own_slots(&[1, 2, 3].into()).unwrap();
    b.catch_up().await.unwrap();
    assert_eq!(scan_keys(&b, "checkpoint").await, of(&[1, 2, 3]));
    assert_eq!(b.slot_state().0, 2 * of(&[1, 2, 3]).len());

    // The new owner of slot 1 re-reads its units (a source resuming from
    // older input): the dedup index it took over suppresses every event.
    let again: Vec<SourceBatch> = by_slot[&1].iter().map(|u| owned_batch(u)).collect();
    assert_eq!(ingest(b.clone(), again).await, (0, by_slot[&1].len() as u64), "redelivered events are duplicates after the hand-over");
    // The old owner, had it kept going without the state, would have
    // appended them again: that is what holding the state prevents.
    assert_eq!(a.state_get_many(SEEN_NS, &by_slot[&1].iter().map(|u| uri(u)).collect::<Vec<_>>()).await.unwrap().len(), 0);

    // A process given every slot (as `fedistream status` is) sees every unit.
    let c = KafkaLog::open(cfg.clone()).await.unwrap();
    c.own_all_slots().await.unwrap();
    assert_eq!(scan_keys(&c, "checkpoint").await, of(&[0, 1, 2, 3]));
}

#[tokio::test(flavor = "multi_thread")]
async fn state_from_before_the_split_stays_readable_and_moves_to_its_slot_on_the_next_write() {
    let cfg = config("upgrade");
    let unit = "src/old@x.example";
    let slot = slot_of(unit, cfg.ingest_slots);
    let ev = event_of(unit, 7);
    // What an earlier version wrote: the same state, owned by nobody (the
    // global topic).
    let old = KafkaLog::open(cfg.clone()).await.unwrap();
    old.append(AppendBatch {
        events: fedistream_core::event::encode_all(vec![ev.clone()]),
        state: vec![StatePut::set(SEEN_NS, ev.key.clone(), ev.fingerprint()), StatePut::set("checkpoint", unit, "7")],
    })
    .await
    .unwrap();

    // After the upgrade, the process holding the unit's slot reads it…
    let new = KafkaLog::open(cfg.clone()).await.unwrap();
    new.own_slots(&[slot].into()).unwrap();
    new.catch_up().await.unwrap();
    assert_eq!(new.state_get("checkpoint", unit).await.unwrap().as_deref(), Some("7"));
    // …and its dedup index still suppresses the event the old version stored.
    let mut b = SourceBatch::default();
    b.push(ev.clone());
    b.set_owner(&unit.into());
    assert_eq!(ingest(new.clone(), vec![b]).await, (0, 1));

    // The next write of the checkpoint goes to the slot and deletes the old
    // copy from the global topic, in one transaction.
    new.append(AppendBatch { events: vec![], state: vec![StatePut::set("checkpoint", unit, "8").owned_by(Some(unit.into()))] })
        .await
        .unwrap();
    assert_eq!(new.state_get("checkpoint", unit).await.unwrap().as_deref(), Some("8"));
    let fresh = KafkaLog::open(cfg.clone()).await.unwrap();
    assert_eq!(fresh.state_get("checkpoint", unit).await.unwrap(), None, "no longer in the global topic");
    assert!(fresh.state_get(SEEN_NS, &ev.key).await.unwrap().is_some(), "what was not rewritten stays there until it expires");
    fresh.own_slots(&[slot].into()).unwrap();
    fresh.catch_up().await.unwrap();
    assert_eq!(fresh.state_get("checkpoint", unit).await.unwrap().as_deref(), Some("8"));
    assert_eq!(fresh.slot_state().0, 1);
    // Deleting it now (an owned delete) cannot bring the old value back.
    new.append(AppendBatch { events: vec![], state: vec![StatePut::delete("checkpoint", unit).owned_by(Some(unit.into()))] })
        .await
        .unwrap();
    fresh.catch_up().await.unwrap();
    assert_eq!(fresh.state_get("checkpoint", unit).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mismatch_between_ingest_slots_and_the_slots_topic_is_a_clear_error() {
    let cfg = config("slotcount");
    drop(KafkaLog::open(cfg.clone()).await.unwrap());
    let mut other = cfg.clone();
    other.ingest_slots = 6;
    let e = KafkaLog::open(other).await.err().expect("refused").to_string();
    assert!(e.contains("log.kafka.ingest_slots") && e.contains("is 6") && e.contains("has 4 partitions"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_groups_partition_state_is_held_by_the_member_owning_the_partition_and_moves_with_it() {
    let cfg = config("groupstate");
    let group = cfg.channel_group("proc");
    let ns = "proc:counts";
    let a = KafkaLog::open(cfg.clone()).await.unwrap();
    let events: Vec<Event> = (0..30).map(|i| created("s", &format!("user{i}@example.org"), i + 1, "x")).collect();
    a.append(AppendBatch { events: fedistream_core::event::encode_all(events), state: vec![] }).await.unwrap();

    // A's member of the group gets every partition and commits, with its
    // input position, one state entry per record, kept with its partition.
    let mut ca = a.consumer(fedistream_core::log::EVENTS, &group).await.unwrap();
    let got = fedistream_core::testing::conformance::poll_n(&mut ca, 30).await;
    let mut upto: BTreeMap<u32, fedistream_core::event::Position> = BTreeMap::new();
    let mut puts = Vec::new();
    for r in &got {
        upto.insert(r.position.partition, r.position);
        puts.push(StatePut::set(ns, format!("{}/{}", r.position.partition, r.position.offset), "1").of_partition(r.position.partition));
    }
    let partitions: BTreeSet<i32> = upto.keys().map(|p| *p as i32).collect();
    assert_eq!(partitions.len(), cfg.partitions as usize, "every partition has records");
    let keys: Vec<String> = puts.iter().map(|p| p.key.clone()).collect();
    ca.commit_with(fedistream_core::log::Commit { upto: upto.values().copied().collect(), state: puts, outputs: vec![] }).await.unwrap();
    assert_eq!(a.group_state(&group), (30, partitions.clone()));
    assert_eq!(a.state_get_many(ns, &keys).await.unwrap().len(), 30);

    // Another process holds none of it until it owns the partitions.
    let b = KafkaLog::open(cfg.clone()).await.unwrap();
    assert_eq!(b.group_state(&group).0, 0);
    assert_eq!(b.state_get(ns, &keys[0]).await.unwrap(), None, "not in the global state");

    // A's member leaves: the state leaves A's memory.
    drop(ca);
    assert_eq!(a.group_state(&group), (0, BTreeSet::new()), "the revoked partitions' state left memory");
    assert_eq!(a.state_get(ns, &keys[0]).await.unwrap(), None);

    // B's member takes every partition over, and their state with them,
    // before it hands out anything.
    let mut cb = b.consumer(fedistream_core::log::EVENTS, &group).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(cb.poll(10, std::time::Duration::from_millis(200)).await.unwrap().is_empty(), "everything was committed");
        if cb.take_assignment().is_some_and(|p| p.len() == partitions.len()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B never got the partitions");
    }
    assert_eq!(b.group_state(&group), (30, partitions));
    assert_eq!(b.state_get_many(ns, &keys).await.unwrap().len(), 30);
    // Only a consumer group can commit state kept per partition.
    let e = b.state_put(vec![StatePut::set(ns, "x", "1").of_partition(0)]).await.unwrap_err().to_string();
    assert!(e.contains("only a consumer group"), "{e}");
}
