//! The Kafka log backend against a real broker (`scripts/kafka up`; brokers from
//! `FEDISTREAM_KAFKA_BROKERS`, default 127.0.0.1:9092). Each test uses its own
//! pipeline name, hence its own topics and groups.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedistream_core::log::{AppendBatch, Log, StatePut};
use fedistream_core::testing::{conformance, created};
use fedistream_kafka::log::{KafkaLog, KafkaLogConfig};
use fedistream_kafka::testing::brokers;

fn config(test: &str) -> KafkaLogConfig {
    let mut c = KafkaLogConfig::new(brokers(), format!("t-{test}-{}-{:x}", std::process::id(), rand::random::<u32>()));
    c.partitions = 3;
    c.session_timeout = Duration::from_secs(6);
    c
}

async fn open(cfg: &KafkaLogConfig) -> Arc<dyn Log> {
    KafkaLog::open(cfg.clone()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_append_then_consume_in_order() {
    conformance::append_then_consume_in_order(open(&config("order")).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_state_is_written_with_the_append() {
    conformance::state_is_written_with_the_append(open(&config("state")).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_started_appends_keep_their_order() {
    conformance::started_appends_keep_their_order(open(&config("started")).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_groups_are_independent_and_resume_after_commit() {
    conformance::groups_are_independent_and_resume_after_commit(open(&config("groups")).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_poll_wakes_on_append() {
    conformance::poll_wakes_on_append(open(&config("wake")).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_lives_in_kafka_and_another_process_reads_it() {
    let cfg = config("handover");
    let a = open(&cfg).await;
    a.append(AppendBatch {
        events: fedistream_core::event::encode_all(vec![created("s", "a@example.org", 1, "hi")]),
        state: vec![StatePut::set("checkpoint", "a@example.org", "1"), StatePut::set("seen", "gone", "x")],
    })
    .await
    .unwrap();
    a.state_put(vec![StatePut::delete("seen", "gone")]).await.unwrap();
    // A second process (a fresh view built from the compacted topic).
    let b = KafkaLog::open(cfg.clone()).await.unwrap();
    assert_eq!(b.state_get("checkpoint", "a@example.org").await.unwrap().as_deref(), Some("1"));
    assert_eq!(b.state_get("seen", "gone").await.unwrap(), None, "the delete (tombstone) is seen too");
    // A write by A after B opened reaches B once B catches up.
    a.state_put(vec![StatePut::set("checkpoint", "a@example.org", "2")]).await.unwrap();
    b.catch_up().await.unwrap();
    assert_eq!(b.state_get("checkpoint", "a@example.org").await.unwrap().as_deref(), Some("2"));
    // A channel's commit with state is visible to the other process as well.
    let mut c = b.consumer(fedistream_core::log::EVENTS, &cfg.channel_group("ch")).await.unwrap();
    let got = conformance::poll_n(&mut c, 1).await;
    c.commit(&[got[0].position], vec![StatePut::set("sink:ch:map", "k", "target-1")]).await.unwrap();
    // An idle member steps over the transaction marker that follows the event,
    // so the group shows no lag once it has polled again.
    let committed_past_marker = || async {
        let log = KafkaLog::open(cfg.clone()).await.unwrap();
        let info = log.info().await.unwrap();
        info.groups.iter().find(|g| g.group == cfg.channel_group("ch")).map(|g| g.lag)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(c.poll(10, Duration::from_millis(200)).await.unwrap().is_empty());
        if committed_past_marker().await == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the idle group still shows lag");
    }
    let a2 = KafkaLog::open(cfg.clone()).await.unwrap();
    assert_eq!(a2.state_get("sink:ch:map", "k").await.unwrap().as_deref(), Some("target-1"));
    let info = a2.info().await.unwrap();
    // Offsets: the event and its transaction's commit marker.
    assert!((1..=2).contains(&info.events), "{info:?}");
    assert!(info.groups.iter().any(|g| g.group == cfg.channel_group("ch")), "the channel's group is listed: {info:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_members_of_a_group_split_the_partitions() {
    let cfg = config("split");
    let log = open(&cfg).await;
    let group = cfg.channel_group("file");
    let mut a = log.consumer(fedistream_core::log::EVENTS, &group).await.unwrap();
    let mut b = log.consumer(fedistream_core::log::EVENTS, &group).await.unwrap();
    // Append waves of 30 events over 30 accounts (3 partitions) until both
    // members receive events of the same wave: then the group has split the
    // partitions between them. Everything is committed as it arrives.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen: HashSet<(u32, u64)> = HashSet::new();
    let mut appended = 0;
    for wave in 0u64.. {
        assert!(Instant::now() < deadline, "the two members never shared the work");
        let events: Vec<_> = (0..30).map(|i| created("s", &format!("user{i}@example.org"), wave * 100 + i + 1, "x")).collect();
        log.append(AppendBatch { events: fedistream_core::event::encode_all(events), state: vec![] }).await.unwrap();
        appended += 30;
        let mut parts: [BTreeSet<u32>; 2] = Default::default();
        let wave_deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < appended && Instant::now() < wave_deadline {
            for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
                let recs = c.poll(100, Duration::from_millis(100)).await.unwrap();
                let mut upto = std::collections::HashMap::new();
                for r in &recs {
                    upto.insert(r.position.partition, r.position);
                    parts[i].insert(r.position.partition);
                    seen.insert((r.position.partition, r.position.offset));
                }
                if !upto.is_empty() {
                    c.commit(&upto.into_values().collect::<Vec<_>>(), vec![]).await.unwrap();
                }
            }
        }
        assert_eq!(seen.len(), appended, "every appended record arrives");
        if !parts[0].is_empty() && !parts[1].is_empty() {
            assert!(parts[0].is_disjoint(&parts[1]), "one owner per partition: {parts:?}");
            break;
        }
    }
    let mut c = log.consumer(fedistream_core::log::EVENTS, &group).await.unwrap();
    assert!(c.lag().await.unwrap() <= 3, "everything committed (up to one marker per partition)");
}

/// Wait until the clock is past `t` (milliseconds: the resolution of the
/// state records' timestamps), so what is written next is newer than `t`.
async fn clock_past(t: chrono::DateTime<chrono::Utc>) {
    while chrono::Utc::now().timestamp_millis() <= t.timestamp_millis() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn state_past_the_horizon_is_pruned_from_the_topic_and_from_memory() {
    let mut cfg = config("prune");
    cfg.prunable = vec!["ids".into()];
    let a = KafkaLog::open(cfg.clone()).await.unwrap();
    // Old entries: the dedup index and the id index (pruned), a checkpoint (kept).
    let old: Vec<StatePut> = (0..100)
        .map(|i| StatePut::set("seen", format!("https://x.example/s/{i}"), "00000000000000ff"))
        .chain((0..10).map(|i| StatePut::set("ids", format!("x.example|{i}"), "uri\tacct")))
        .chain([StatePut::set("checkpoint", "src|x.example|a", "100")])
        .collect();
    a.state_put(old).await.unwrap();
    clock_past(chrono::Utc::now()).await;
    let cutoff = chrono::Utc::now();
    clock_past(cutoff).await;
    // Written after the cutoff: new entries, and an old one written again.
    let fresh: Vec<StatePut> = (100..150)
        .map(|i| StatePut::set("seen", format!("https://x.example/s/{i}"), "00000000000000ff"))
        .chain([StatePut::set("seen", "https://x.example/s/0", "00000000000000fe")])
        .collect();
    a.state_put(fresh).await.unwrap();
    assert_eq!(a.state_entries(), 161);

    assert_eq!(a.prune_state(cutoff).await.unwrap(), 99 + 10, "the old dedup and id entries, not the rewritten one");
    a.catch_up().await.unwrap();
    assert_eq!(a.state_entries(), 52, "pruned keys leave memory once the reader passed their tombstones");
    assert_eq!(a.state_get("seen", "https://x.example/s/1").await.unwrap(), None);
    assert_eq!(a.state_get("ids", "x.example|1").await.unwrap(), None);
    assert_eq!(a.state_get("seen", "https://x.example/s/0").await.unwrap().as_deref(), Some("00000000000000fe"));
    assert_eq!(a.state_get("seen", "https://x.example/s/149").await.unwrap().as_deref(), Some("00000000000000ff"));
    assert_eq!(a.state_get("checkpoint", "src|x.example|a").await.unwrap().as_deref(), Some("100"), "checkpoints are never pruned");
    assert_eq!(a.prune_state(cutoff).await.unwrap(), 0, "nothing left to prune");

    // Another process reads the topic from the start: the pruned keys are gone there too.
    let b = KafkaLog::open(cfg.clone()).await.unwrap();
    assert_eq!(b.state_entries(), 52);
    assert_eq!(b.state_scan("ids").await.unwrap(), vec![]);

    // Retention prunes with `state_horizon` (here: everything written before now).
    let mut c_cfg = cfg.clone();
    c_cfg.state_horizon = Some(Duration::ZERO);
    let c = KafkaLog::open(c_cfg).await.unwrap();
    clock_past(chrono::Utc::now()).await;
    c.enforce_retention().await.unwrap();
    c.catch_up().await.unwrap();
    assert_eq!(c.state_entries(), 1, "only the checkpoint is left");
    b.catch_up().await.unwrap();
    assert_eq!(b.state_entries(), 1, "and the other process dropped the pruned keys as it read their tombstones");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_a_clear_error_not_a_hang() {
    let mut cfg = KafkaLogConfig::new("127.0.0.1:1", "unreachable");
    cfg.connect_timeout = Duration::from_secs(3);
    // Bounded: a deadline far beyond the 3 s connect timeout, not a measured duration.
    let err = match tokio::time::timeout(Duration::from_secs(120), KafkaLog::open(cfg)).await.expect("open hung") {
        Ok(_) => panic!("opened a log on a closed port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("127.0.0.1:1"), "names the brokers: {err}");
    assert!(err.contains("scripts/kafka up") && err.contains("log.kafka.brokers"), "says what to do: {err}");
}

/// Readers outside groups: at the head without a position, after each named
/// offset with one, a partition a resume point does not name from its start;
/// they commit nothing and leave no group behind.
#[tokio::test(flavor = "multi_thread")]
async fn readers_start_where_asked_commit_nothing_and_leave_no_group() {
    use fedistream_core::event::Position;
    use fedistream_core::log::EVENTS;
    let cfg = config("reader");
    let log = open(&cfg).await;
    let accounts: Vec<String> = (0..9).map(|i| format!("r{i}@example.org")).collect();
    let round = |n: u64| fedistream_core::event::encode_all(accounts.iter().map(|a| created("s", a, n, "x")).collect::<Vec<_>>());
    let first = log.append(AppendBatch { events: round(1), state: vec![] }).await.unwrap().positions;
    let read_all = |mut r: Box<dyn fedistream_core::log::Consumer>, n: usize| async move {
        let got = conformance::poll_n(&mut r, n).await;
        let mut keys: Vec<String> = got.iter().map(|x| x.event().unwrap().key.clone()).collect();
        keys.sort();
        (keys, got, r)
    };
    // From the start of every partition: the first round. Its lag is what it
    // has not returned yet (plus at most a transaction marker per partition).
    let mut fresh = log.reader(EVENTS, &fedistream_core::log::from_start()).await.unwrap();
    let lag = fresh.lag().await.unwrap();
    assert!((9..=12).contains(&lag), "a fresh reader is behind by the round: {lag}");
    let (keys, got, mut r) = read_all(fresh, 9).await;
    assert_eq!(keys.len(), 9);
    assert!(r.lag().await.unwrap() <= 3, "read up to the head (markers aside)");
    assert!(r.commit(&[got[0].position], vec![]).await.is_err(), "readers do not commit");
    // After the first round's position on one partition only: that partition
    // goes on after it (nothing), the others from their start (their records).
    let p0 = first[0];
    let last_of_p0 = first.iter().filter(|p| p.partition == p0.partition).max().copied().unwrap();
    let others = first.iter().filter(|p| p.partition != p0.partition).count();
    assert!(others > 0, "the accounts spread over partitions: {first:?}");
    let (_, got, _) = read_all(log.reader(EVENTS, &[last_of_p0]).await.unwrap(), others).await;
    assert!(got.iter().all(|x| x.position.partition != p0.partition), "{:?}", got.iter().map(|x| x.position).collect::<Vec<_>>());
    // No position: only what comes next; its start names where it began.
    let live = log.reader(EVENTS, &[]).await.unwrap();
    let start = live.reader_start();
    assert!(!start.is_empty(), "the head of the partitions with records: {start:?}");
    let second = log.append(AppendBatch { events: round(2), state: vec![] }).await.unwrap().positions;
    let (keys, got, _) = read_all(live, 9).await;
    assert!(keys.iter().all(|k| k.ends_with("/2")), "{keys:?}");
    let mut want: Vec<Position> = second.clone();
    want.sort();
    let mut have: Vec<Position> = got.iter().map(|x| x.position).collect();
    have.sort();
    assert_eq!(have, want);
    // Nothing registered with the broker as a group.
    let info = log.info().await.unwrap();
    assert!(info.groups.iter().all(|g| !g.group.ends_with(".reader")), "{:?}", info.groups);
}
