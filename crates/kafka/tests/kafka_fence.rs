//! Fencing of ingest appends by the ingest group assignment, against a real
//! broker (`scripts/kafka up`; brokers from `FEDISTREAM_KAFKA_BROKERS`). A member
//! whose slots were handed to another one (a zombie: paused past the session
//! timeout, or here simply holding on to an old assignment) cannot make any
//! more appends visible; the current owners can.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fedistream_core::error::LogError;
use fedistream_core::event::encode_all;
use fedistream_core::log::{AppendBatch, Log, StatePut};
use fedistream_core::testing::created;
use fedistream_kafka::assign::{Assignment, Membership};
use fedistream_kafka::log::{KafkaLog, KafkaLogConfig};
use fedistream_kafka::testing::brokers;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

const ACCT: &str = "a@example.org";

fn config(test: &str) -> KafkaLogConfig {
    let mut c = KafkaLogConfig::new(brokers(), format!("t-{test}-{}-{:x}", std::process::id(), rand::random::<u32>()));
    c.partitions = 3;
    c.ingest_slots = 4;
    c.session_timeout = Duration::from_secs(6);
    c
}

/// Events of one account (one partition, so they are read in append order),
/// with ids `ids`, and a checkpoint named `label`.
fn batch(label: &str, ids: std::ops::Range<u64>) -> AppendBatch {
    AppendBatch { events: encode_all(ids.map(|n| created("s", ACCT, n, label))), state: vec![StatePut::set("checkpoint", label, "done")] }
}

/// Wait until the members' assignments satisfy `cond`, acknowledging every
/// revoke at once as the ingest role does once the revoked work has stopped
/// (nothing runs under these members).
async fn settle(what: &str, members: &[&Membership], cond: impl Fn(&[Assignment]) -> bool) -> Vec<Assignment> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: Vec<Assignment> = members.iter().map(|m| m.watch().borrow().clone()).collect();
        for (m, a) in members.iter().zip(&now) {
            m.released(a.generation);
        }
        if cond(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fenced(r: Result<impl std::fmt::Debug, LogError>) -> String {
    match r {
        Err(LogError::Fenced(why)) => why,
        other => panic!("expected the fenced error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_ingest_assignment_cannot_append_and_the_current_ones_can() {
    logs();
    let cfg = config("fence");
    let log = KafkaLog::open(cfg.clone()).await.unwrap();
    let all: BTreeSet<i32> = (0..cfg.ingest_slots).collect();

    // A joins alone and gets every slot.
    let a = Membership::join(&cfg, Duration::from_secs(30)).unwrap();
    let first = settle("A to hold every slot", &[&a], |n| n[0].slots == all && n[0].fence.is_some()).await;
    let stale = first[0].fence.clone().unwrap();
    assert_eq!(stale.slots(), all.iter().copied().collect::<Vec<_>>().as_slice());
    // While current, A's fence lets its appends through.
    log.fenced(stale.clone()).append(batch("a-before", 1..3)).await.unwrap();

    // B joins: the group splits the slots (A's revoke is acknowledged).
    let b = Membership::join(&cfg, Duration::from_secs(30)).unwrap();
    let split = settle("the slots split between A and B", &[&a, &b], |n| {
        let (sa, sb) = (&n[0], &n[1]);
        sa.fence.is_some()
            && sb.fence.is_some()
            && sa.fence.as_ref() != Some(&stale)
            && !sa.slots.is_empty()
            && !sb.slots.is_empty()
            && sa.slots.is_disjoint(&sb.slots)
            && sa.slots.union(&sb.slots).copied().collect::<BTreeSet<_>>() == all
    })
    .await;
    let (a_now, b_now) = (split[0].fence.clone().unwrap(), split[1].fence.clone().unwrap());
    assert!(a_now.generation() > stale.generation());
    assert!(stale.rejection().is_none(), "nothing has tried the stale fence yet");

    let (stale_log, a_log, b_log) = (log.fenced(stale.clone()), log.fenced(a_now.clone()), log.fenced(b_now.clone()));
    // Queued together, behind an unfenced write that keeps the writer busy:
    // writes under the stale fence, B's, A's current one and unfenced ones.
    // Group commit must not merge writes of different fences: the stale ones
    // fail, every other one commits.
    let u0 = log.start_append(batch("unfenced-0", 5..8)).await.unwrap();
    let s1 = stale_log.start_append(batch("stale-1", 10..13)).await.unwrap();
    let b1 = b_log.start_append(batch("b-1", 20..23)).await.unwrap();
    let s2 = stale_log.start_append(batch("stale-2", 13..16)).await.unwrap();
    let u1 = log.start_append(batch("unfenced-1", 30..33)).await.unwrap();
    let a1 = a_log.start_append(batch("a-1", 40..43)).await.unwrap();
    assert_eq!(u0.await.unwrap().positions.len(), 3);
    let why = fenced(s1.await);
    assert!(why.contains(&cfg.ingest_group()) && why.contains("another member"), "says what happened: {why}");
    assert_eq!(b1.await.unwrap().positions.len(), 3, "B's current fence commits");
    fenced(s2.await);
    assert_eq!(u1.await.unwrap().positions.len(), 3, "unfenced writes go on");
    assert_eq!(a1.await.unwrap().positions.len(), 3, "A's fresh fence commits (its remaining slots)");
    assert!(stale.rejection().is_some(), "the fence is known to be stale now");
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), stale.rejected()).await.unwrap(), stale.rejection().unwrap());

    // Later writes under the stale fence fail at once — refused before anything
    // is queued for the writer, so no transaction is tried again — and the
    // current ones go on.
    fenced(stale_log.start_append(batch("stale-3", 50..53)).await.map(|_| ()));
    b_log.append(batch("b-2", 60..63)).await.unwrap();
    a_log.append(batch("a-2", 70..73)).await.unwrap();
    // State not tied to owned work (status documents) is not fenced.
    stale_log.state_put(vec![StatePut::set("status", "zombie", "still here")]).await.unwrap();

    // Nothing of the stale appends is visible to a read_committed consumer:
    // everything is in one partition, so reading B's and A's last events means
    // every stale record (appended before them) was passed.
    let mut c = log.consumer(fedistream_core::log::EVENTS, &cfg.channel_group("check")).await.unwrap();
    let expected: BTreeSet<String> =
        [1..3, 5..8, 20..23, 30..33, 40..43, 60..63, 70..73].into_iter().flatten().map(|n| created("s", ACCT, n, "").key).collect();
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.is_subset(&got) {
        assert!(Instant::now() < deadline, "only {} of {} events arrived", got.len(), expected.len());
        for r in c.poll(100, Duration::from_millis(200)).await.unwrap() {
            let key = r.event().unwrap().key.clone();
            assert!(got.insert(key.clone()), "{key} read twice");
        }
    }
    assert_eq!(got, expected, "the stale appends' events are not visible");
    // Nor is their state, for this process or any other.
    let fresh = KafkaLog::open(cfg.clone()).await.unwrap();
    for l in [&log, &fresh] {
        for k in ["stale-1", "stale-2", "stale-3"] {
            assert_eq!(l.state_get("checkpoint", k).await.unwrap(), None, "{k}'s checkpoint");
        }
        for k in ["a-before", "unfenced-0", "b-1", "unfenced-1", "a-1", "b-2", "a-2"] {
            assert_eq!(l.state_get("checkpoint", k).await.unwrap().as_deref(), Some("done"), "{k}'s checkpoint");
        }
        assert_eq!(l.state_get("status", "zombie").await.unwrap().as_deref(), Some("still here"));
    }
    drop((a, b));
}

/// Everything logged in this test binary (the membership logs from its own thread).
fn logs() -> String {
    static LOGS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    static INIT: std::sync::Once = std::sync::Once::new();
    struct Capture;
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            LOGS.lock().unwrap().push_str(&String::from_utf8_lossy(b));
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    INIT.call_once(|| {
        tracing_subscriber::fmt().with_ansi(false).with_writer(|| Capture).init();
    });
    LOGS.lock().unwrap().clone()
}

/// A process that passed its fence check (the offsets of its slots are in its
/// transaction) and then lost the slots before committing (paused in between)
/// commits when it resumes. The slots' new owner must not start before that
/// transaction is over, or it would fetch the posts the transaction stores
/// again from the older checkpoint.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_owner_waits_for_a_pending_transaction_of_the_previous_one() {
    logs();
    let cfg = config("pending");
    let log = KafkaLog::open(cfg.clone()).await.unwrap();
    let all: BTreeSet<i32> = (0..cfg.ingest_slots).collect();

    // The zombie: a member of the ingest group holding every slot...
    let client = |group: bool| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers());
        if group {
            c.set("group.id", cfg.ingest_group()).set("session.timeout.ms", "6000").set("partition.assignment.strategy", "roundrobin");
        }
        c
    };
    let zombie: BaseConsumer = client(true).create().unwrap();
    zombie.subscribe(&[&cfg.ingest_topic()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while zombie.assignment().unwrap().count() < all.len() {
        assert!(Instant::now() < deadline, "the zombie never got its slots");
        zombie.poll(Duration::from_millis(100));
    }
    // ...whose transaction stores a checkpoint and passes the fence check.
    let producer: ThreadedProducer<DefaultProducerContext> =
        client(false).set("transactional.id", format!("{}.zombie", cfg.prefix())).create().unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    producer.send(BaseRecord::to(&cfg.state_topic()).key("checkpoint\u{1f}zombie").payload("stored")).map_err(|(e, _)| e).unwrap();
    let mut slots = rdkafka::TopicPartitionList::new();
    for s in &all {
        slots.add_partition_offset(&cfg.ingest_topic(), *s, rdkafka::Offset::Offset(0)).unwrap();
    }
    producer.send_offsets_to_transaction(&slots, &zombie.group_metadata().unwrap(), Duration::from_secs(30)).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    // Its slots go elsewhere (here it leaves; a paused one times out).
    drop(zombie);
    // The state can be read to its end meanwhile: the open transaction is
    // past the last stable offset, so reading the state alone does not wait for it.
    tokio::time::timeout(Duration::from_secs(20), log.catch_up()).await.expect("catch_up waits for open transactions").unwrap();
    assert_eq!(log.state_get("checkpoint", "zombie").await.unwrap(), None);

    // The new owner gets the slots but does not publish them while the
    // transaction is pending.
    let b = Membership::join(&cfg, Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logs().contains("Waiting for a transaction of the slots' previous owner") {
        assert!(Instant::now() < deadline, "the new owner did not wait:\n{}", logs());
        assert!(b.watch().borrow().slots.is_empty(), "slots published while the previous owner's transaction is pending\n{}", logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b.watch().borrow().slots.is_empty(), "slots published while the previous owner's transaction is pending");
    // The zombie resumes and commits; then the new owner starts, and reads its outcome.
    tokio::task::spawn_blocking(move || producer.commit_transaction(Duration::from_secs(30))).await.unwrap().unwrap();
    settle("the new owner to hold every slot", &[&b], |n| n[0].slots == all && n[0].fence.is_some()).await;
    log.catch_up().await.unwrap();
    assert_eq!(log.state_get("checkpoint", "zombie").await.unwrap().as_deref(), Some("stored"));
}
