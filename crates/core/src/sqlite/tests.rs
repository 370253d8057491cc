use super::*;
use crate::component::DeadLetter;
use crate::event::Event;
use crate::testing::{conformance, created};
use std::sync::atomic::{AtomicU64, Ordering};

fn fresh() -> (tempfile::TempDir, Arc<dyn Log>) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    (dir, log)
}

#[tokio::test]
async fn conformance_append_then_consume_in_order() {
    let (_d, log) = fresh();
    conformance::append_then_consume_in_order(log).await;
}

#[tokio::test]
async fn conformance_state_is_written_with_the_append() {
    let (_d, log) = fresh();
    conformance::state_is_written_with_the_append(log).await;
}

#[tokio::test]
async fn conformance_started_appends_keep_their_order() {
    let (_d, log) = fresh();
    conformance::started_appends_keep_their_order(log).await;
}

#[tokio::test]
async fn conformance_groups() {
    let (_d, log) = fresh();
    conformance::groups_are_independent_and_resume_after_commit(log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_poll_wakes_on_append() {
    let (_d, log) = fresh();
    conformance::poll_wakes_on_append(log).await;
}

#[tokio::test]
async fn everything_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    {
        let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
        log.append(AppendBatch {
            events: crate::event::encode_all(vec![created("s", "a@example.org", 1, "one"), created("s", "a@example.org", 2, "two")]),
            state: vec![StatePut::set("checkpoint", "a", "2")],
        })
        .await
        .unwrap();
        let mut c = log.consumer(crate::log::EVENTS, "ch").await.unwrap();
        let got = c.poll(1, Duration::from_millis(10)).await.unwrap();
        c.commit(&[got[0].position], vec![]).await.unwrap();
    }
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(log.state_get("checkpoint", "a").await.unwrap().as_deref(), Some("2"));
    let mut c = log.consumer(crate::log::EVENTS, "ch").await.unwrap();
    let got = c.poll(10, Duration::from_millis(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event().unwrap().status_id, "2");
    let info = log.info().await.unwrap();
    assert_eq!(info.events, 2);
    assert_eq!(info.groups[0].lag, 1);
}

#[tokio::test]
async fn a_second_writer_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let _first = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    let err = SqliteLog::open(&path, SqliteOptions::default()).err().expect("second open must fail");
    assert!(err.to_string().contains("another fedistream process"), "{err}");
    // Read-only access (fedistream status) still works.
    SqliteLog::open_read_only(&path).unwrap();
}

#[tokio::test]
async fn retention_keeps_what_a_live_group_has_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions { max_age: Some(Duration::ZERO), ..Default::default() };
    let log = SqliteLog::open(dir.path().join("log.db"), opts).unwrap();
    let evs: Vec<Event> = (1..=4).map(|n| created("s", "a@example.org", n, "x")).collect();
    log.append(AppendBatch { events: crate::event::encode_all(evs), state: vec![] }).await.unwrap();
    let mut c = log.consumer(crate::log::EVENTS, "ch").await.unwrap();
    let got = c.poll(2, Duration::from_millis(10)).await.unwrap();
    c.commit(&[got[1].position], vec![]).await.unwrap();
    let deleted = log.enforce_retention().await.unwrap();
    assert_eq!(deleted, 2, "only the two committed events may go");
    let rest = c.poll(10, Duration::from_millis(10)).await.unwrap();
    assert_eq!(rest.iter().map(|r| r.event().unwrap().status_id.as_str()).collect::<Vec<_>>(), vec!["3", "4"]);
}

#[tokio::test]
async fn retention_by_size_removes_the_oldest_delivered_events() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions { max_bytes: Some(1 << 20), ..Default::default() };
    let log = SqliteLog::open(dir.path().join("log.db"), opts).unwrap();
    let big = "x".repeat(8 * 1024);
    for chunk in 0..10u64 {
        let evs: Vec<Event> = (0..50).map(|n| created("s", "a@example.org", chunk * 50 + n + 1, &big)).collect();
        log.append(AppendBatch { events: crate::event::encode_all(evs), state: vec![] }).await.unwrap();
    }
    let mut c = log.consumer(crate::log::EVENTS, "ch").await.unwrap();
    // Nothing delivered yet: retention must not remove anything.
    assert_eq!(log.enforce_retention().await.unwrap(), 0);
    let mut last = None;
    loop {
        let got = c.poll(100, Duration::from_millis(10)).await.unwrap();
        let Some(l) = got.last() else { break };
        last = Some(l.position);
    }
    c.commit(&[last.unwrap()], vec![]).await.unwrap();
    let removed = log.enforce_retention().await.unwrap();
    assert!(removed > 0, "over the size limit, delivered events go");
    let info = log.info().await.unwrap();
    assert_eq!(info.events, 500 - removed);
    // What is left is the newest, and offsets keep counting up.
    let head = info.head[0].offset;
    assert_eq!(head, 500);
    let r = log
        .append(AppendBatch { events: crate::event::encode_all(vec![created("s", "a@example.org", 9999, "new")]), state: vec![] })
        .await
        .unwrap();
    assert_eq!(r.positions[0].offset, 501);
}

fn seen_put(key: &str, fp: &str) -> StatePut {
    StatePut::set(crate::runtime::SEEN_NS, key, fp)
}

#[tokio::test]
async fn the_dedup_index_survives_reopening_and_merging() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let n = seen::MERGE_AT + 10;
    let keys: Vec<String> = (0..n).map(|i| format!("https://example.org/statuses/{i}")).collect();
    {
        let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
        // In batches, as the ingestor writes them; the last ones stay in `seen_recent`.
        for chunk in keys.chunks(1000) {
            let state = chunk.iter().enumerate().map(|(i, k)| seen_put(k, &format!("{:016x}", i as u64 * 7919))).collect();
            log.append(AppendBatch { events: vec![], state }).await.unwrap();
        }
        // A value that is not a fingerprint, and a later version of an early key.
        log.append(AppendBatch { events: vec![], state: vec![seen_put(&keys[0], "deleted"), seen_put("u:x", "text value")] })
            .await
            .unwrap();
        let got = log.state_get_many(crate::runtime::SEEN_NS, &keys).await.unwrap();
        assert_eq!(got.len(), n);
        let w = lock(&log.shared.writer);
        let seen::Layout::Indexed { recent: Some(recent) } = &w.seen else { panic!("writer layout") };
        assert!(recent.len() < seen::MERGE_AT, "merged once full: {} recent", recent.len());
        let merged: i64 = w.conn.query_row("SELECT COUNT(*) FROM seen", [], |r| r.get(0)).unwrap();
        assert!(merged >= seen::MERGE_AT as i64);
        let in_state: i64 = w.conn.query_row("SELECT COUNT(*) FROM state WHERE ns = 'seen'", [], |r| r.get(0)).unwrap();
        assert_eq!(in_state, 0, "dedup entries are not in the generic state table");
    }
    for log in [SqliteLog::open(&path, SqliteOptions::default()).unwrap(), SqliteLog::open_read_only(&path).unwrap()] {
        let got = log.state_get_many(crate::runtime::SEEN_NS, &keys).await.unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(got[&keys[0]], "deleted");
        for (i, k) in keys.iter().enumerate().skip(1) {
            assert_eq!(got[k], format!("{:016x}", (i % 1000) as u64 * 7919), "{k}");
        }
        assert_eq!(log.state_get(crate::runtime::SEEN_NS, "u:x").await.unwrap().as_deref(), Some("text value"));
        assert_eq!(log.state_get(crate::runtime::SEEN_NS, "u:never").await.unwrap(), None);
        drop(log);
    }
    // Deleting works for merged and recent entries alike.
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    let last = keys.last().unwrap().clone();
    log.state_put(vec![StatePut::delete("seen", &keys[1]), StatePut::delete("seen", &last)]).await.unwrap();
    let got = log.state_get_many("seen", &[keys[1].clone(), last.clone(), keys[2].clone()]).await.unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), vec![&keys[2]]);
    drop(log);
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(log.state_get("seen", &last).await.unwrap(), None);
    assert_eq!(log.state_get("seen", &keys[1]).await.unwrap(), None);
}

#[test]
fn fingerprints_are_stored_as_numbers_and_read_back_exactly() {
    for v in ["0000000000000000", "ffffffffffffffff", "0123456789abcdef", "8000000000000000"] {
        assert!(matches!(seen::Value::encode(v), seen::Value::Hex(_)), "{v}");
        assert_eq!(seen::Value::encode(v).decode(), v);
    }
    for v in ["", "deleted", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "+123456789abcdef", "ü123456789abcde"] {
        assert_eq!(seen::Value::encode(v), seen::Value::Text(v.into()), "{v}");
        assert_eq!(seen::Value::encode(v).decode(), v);
    }
}

/// A database written before the dedup index had its own tables: its `seen`
/// rows live in `state`. A read-only handle reads them there; the first writer
/// moves them, and deduplication against them goes on.
const LAYOUT_0_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    offset      INTEGER PRIMARY KEY AUTOINCREMENT,
    appended_at INTEGER NOT NULL,
    account     TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, committed INTEGER NOT NULL, updated_at INTEGER NOT NULL);
";

#[tokio::test]
async fn an_old_layout_is_migrated_and_its_dedup_entries_still_count() {
    use crate::component::SourceBatch;
    use crate::runtime::{run, ChannelSpec, Pipeline, RuntimeOptions, SourceSpec};
    use crate::testing::{RecordingSink, VecSource};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let old = created("s", "a@example.org", 1, "one");
    {
        // The old layout: the schema of the previous release, user_version 0.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA journal_mode=WAL; BEGIN; {LAYOUT_0_SCHEMA} COMMIT;")).unwrap();
        conn.execute(
            "INSERT INTO events (appended_at, account, payload) VALUES (0, ?1, ?2)",
            params![old.account, serde_json::to_string(&old).unwrap()],
        )
        .unwrap();
        conn.execute("INSERT INTO state (ns, key, value) VALUES ('seen', ?1, ?2)", params![old.key, old.fingerprint()]).unwrap();
        conn.execute("INSERT INTO state (ns, key, value) VALUES ('checkpoint', 'a', '1')", []).unwrap();
    }
    {
        let ro = SqliteLog::open_read_only(&path).unwrap();
        assert_eq!(ro.state_get("seen", &old.key).await.unwrap(), Some(old.fingerprint()));
    }
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    {
        let w = lock(&log.shared.writer);
        let version: i64 = w.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, LAYOUT_VERSION);
        let left: i64 = w.conn.query_row("SELECT COUNT(*) FROM state WHERE ns = 'seen'", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0);
    }
    assert_eq!(log.state_get("seen", &old.key).await.unwrap(), Some(old.fingerprint()));
    assert_eq!(log.state_get("checkpoint", "a").await.unwrap().as_deref(), Some("1"));
    // The same post again, and a new one: only the new one is appended.
    let fresh = created("s", "a@example.org", 2, "two");
    let run_once = |log: Arc<SqliteLog>, group: &str| {
        let sink = RecordingSink::default();
        let p = Pipeline {
            log,
            sources: vec![SourceSpec::new(
                "s",
                Box::new(VecSource {
                    batches: vec![SourceBatch { events: crate::event::encode_all(vec![old.clone(), fresh.clone()]), state: vec![] }],
                }),
                DeadLetter::new(dir.path().join("dl.jsonl")),
            )],
            processors: vec![],
            channels: vec![ChannelSpec {
                name: "c".into(),
                group: group.into(),
                topic: EVENTS.into(),
                sink: Box::new(sink.clone()),
                route: None,
                batch: Default::default(),
                retry: Default::default(),
                dead_letter: DeadLetter::new(dir.path().join("dlc.jsonl")),
            }],
            options: RuntimeOptions::default(),
            progress: None,
        };
        async move { (run(p, tokio_util::sync::CancellationToken::new()).await.unwrap(), sink) }
    };
    let (summary, sink) = run_once(log.clone(), "g.c").await;
    assert_eq!(summary.log.counters.get("duplicates_suppressed"), Some(&1));
    assert_eq!(sink.keys(), vec![old.key.clone(), fresh.key.clone()], "the old event once (from the log), the new one once");
    assert_eq!(log.info().await.unwrap().events, 2);
    drop(log);
    // After a restart both are known: nothing is appended.
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    let (summary, sink) = run_once(log.clone(), "g.c").await;
    assert_eq!(summary.log.counters.get("duplicates_suppressed"), Some(&2));
    assert!(sink.keys().is_empty(), "nothing new to deliver: {:?}", sink.keys());
    assert_eq!(log.info().await.unwrap().events, 2);
}

#[tokio::test]
async fn a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    drop(SqliteLog::open(&path, SqliteOptions::default()).unwrap());
    Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
    let err = SqliteLog::open(&path, SqliteOptions::default()).err().expect("must refuse");
    assert!(err.to_string().contains("newer fedistream"), "{err}");
}

fn tail_record(offset: u64, payload: &str) -> LogRecord {
    LogRecord::new(Position { partition: 0, offset }, Utc::now(), payload.into())
}

#[test]
fn the_tail_cache_keeps_what_a_consumer_has_not_read_and_knows_what_it_lacks() {
    let mut tail = Tail::new(10, 1 << 20, 1 << 20);
    // No consumer in the process: nothing is kept, and reads below go to SQLite.
    tail.push((11..=12).map(|o| tail_record(o, "x")));
    assert!(tail.records.is_empty());
    assert!(tail.read_after(10, 10).is_none());
    assert_eq!(tail.read_after(12, 10).map(|r| r.len()), Some(0));

    let cursor = Arc::new(AtomicU64::new(12));
    tail.cursors.push(Arc::downgrade(&cursor));
    tail.push((13..=17).map(|o| tail_record(o, "payload")));
    let offsets = |recs: Option<Vec<LogRecord>>| recs.map(|r| r.iter().map(|r| r.position.offset).collect::<Vec<_>>());
    assert_eq!(offsets(tail.read_after(12, 10)), Some(vec![13, 14, 15, 16, 17]));
    assert_eq!(offsets(tail.read_after(14, 2)), Some(vec![15, 16]));
    // Read up to 15: those are dropped; older reads are SQLite's again.
    cursor.store(15, Ordering::Release);
    tail.trim();
    assert_eq!(offsets(tail.read_after(15, 10)), Some(vec![16, 17]));
    assert!(tail.read_after(14, 10).is_none());
    assert_eq!(tail.bytes, 2 * "payload".len());
    // A consumer that is gone no longer holds records back.
    drop(cursor);
    tail.push([tail_record(18, "y")]);
    assert!(tail.cursors.is_empty() && tail.records.is_empty());
    assert!(tail.read_after(17, 10).is_none());
    assert_eq!(offsets(tail.read_after(18, 10)), Some(vec![]));
}

#[test]
fn the_tail_cache_drops_the_oldest_records_past_its_size_bound() {
    let mut tail = Tail::new(0, 10, 10);
    let slow = Arc::new(AtomicU64::new(0));
    tail.cursors.push(Arc::downgrade(&slow));
    tail.push((1..=4).map(|o| tail_record(o, "abcd")));
    // 16 bytes > 10: the two oldest go although nobody read them.
    assert_eq!(tail.records.iter().map(|r| r.position.offset).collect::<Vec<_>>(), vec![3, 4]);
    assert!(tail.read_after(0, 10).is_none(), "the slow consumer must read 1 and 2 from SQLite");
    assert!(tail.bytes <= 10);
}

#[test]
fn the_tail_cache_keeps_records_for_a_reader_outside_groups_only_within_the_readers_bound() {
    let offsets = |tail: &Tail| tail.records.iter().map(|r| r.position.offset).collect::<Vec<_>>();
    // A reader alone (no group): records are kept for it.
    let mut tail = Tail::new(0, 100, 12);
    let reader = Arc::new(AtomicU64::new(0));
    tail.reader_cursors.push(Arc::downgrade(&reader));
    tail.push((1..=2).map(|o| tail_record(o, "abcd")));
    assert_eq!(offsets(&tail), vec![1, 2]);
    // A group that has read everything does not drop what the reader has not read...
    let group = Arc::new(AtomicU64::new(0));
    tail.cursors.push(Arc::downgrade(&group));
    group.store(2, Ordering::Release);
    tail.trim();
    assert_eq!(offsets(&tail), vec![1, 2]);
    // ... until the cache holds more than the readers' bound (12 bytes): then
    // the reader's oldest go, though the group's records stay (the overall bound is 100).
    tail.push((3..=5).map(|o| tail_record(o, "abcd")));
    assert_eq!(offsets(&tail), vec![3, 4, 5], "the group has not read 3..5");
    assert!(tail.read_after(0, 10).is_none(), "the reader reads 1 and 2 from SQLite");
    group.store(5, Ordering::Release);
    tail.trim();
    assert_eq!(offsets(&tail), vec![3, 4, 5], "12 bytes: within the readers' bound");
    // The reader reads; what everyone has read goes.
    reader.store(4, Ordering::Release);
    tail.trim();
    assert_eq!(offsets(&tail), vec![5]);
    // A reader that is gone holds nothing back.
    drop(reader);
    tail.trim();
    assert!(tail.records.is_empty() && tail.reader_cursors.is_empty());
}

/// The event feed's reader reads what was appended from the tail cache while
/// a group consumer moves on, and both see the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_beside_a_group_reads_the_same_records_from_the_cache() {
    let (_d, log) = fresh();
    let mut group = log.consumer(crate::log::EVENTS, "g").await.unwrap();
    let mut reader = log.reader(crate::log::EVENTS, &[]).await.unwrap();
    let events = (0..50).map(|i| created("s", "a@example.org", i, "text").into()).collect();
    log.append(AppendBatch { events, state: vec![] }).await.unwrap();
    let by_group = conformance::poll_n(&mut group, 50).await;
    let by_reader = conformance::poll_n(&mut reader, 50).await;
    let view = |recs: &[LogRecord]| recs.iter().map(|r| (r.position, r.payload.to_string())).collect::<Vec<_>>();
    assert_eq!(view(&by_group), view(&by_reader));
    assert_eq!(by_reader.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_at_the_head_and_behind_it_read_the_same_records() {
    let (_d, log) = fresh();
    let mut head = log.consumer(crate::log::EVENTS, "head").await.unwrap();
    let mut all_head = Vec::new();
    for round in 0..5u64 {
        let events = (0..50).map(|i| created("s", "a@example.org", round * 100 + i, "text").into()).collect();
        log.append(AppendBatch { events, state: vec![] }).await.unwrap();
        all_head.extend(conformance::poll_n(&mut head, 50).await);
    }
    // A group that starts now is behind the tail cache and reads from SQLite.
    let mut behind = log.consumer(crate::log::EVENTS, "behind").await.unwrap();
    let all_behind = conformance::poll_n(&mut behind, 250).await;
    let view = |recs: &[LogRecord]| recs.iter().map(|r| (r.position, r.payload.to_string())).collect::<Vec<_>>();
    assert_eq!(all_head.len(), 250);
    assert_eq!(view(&all_head), view(&all_behind));
    let ids: Vec<String> = all_head.iter().map(|r| r.event().unwrap().status_id.clone()).collect();
    assert_eq!(ids.first().map(String::as_str), Some("0"));
    assert_eq!(ids.last().map(String::as_str), Some("449"));
    assert!(head.poll(10, Duration::from_millis(20)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_appends_do_not_grow_the_wal_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    let wal = dir.path().join("log.db-wal");
    let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let big = "x".repeat(64 << 10);
    let mut n = 0;
    let mut largest = 0;
    let mut restarted_under_load = false;
    // Back-to-back appends of 4 MiB each, up to 1 GiB: the checkpointer must
    // start the WAL over (and the next commit cut the file back) while they
    // keep coming. Without that the file only ever grows.
    for _ in 0..256 {
        let events = (0..32)
            .map(|_| {
                n += 1;
                created("s", "a@example.org", n, &big)
            })
            .map(EncodedEvent::from)
            .collect();
        log.append(AppendBatch { events, state: vec![] }).await.unwrap();
        let now = size();
        if now < largest {
            restarted_under_load = true;
            break;
        }
        largest = now;
    }
    assert!(restarted_under_load, "the WAL grew to {largest} bytes and was never started over");
    assert!(largest > WAL_RESTART_BYTES, "the WAL reached only {largest} bytes: nothing was tested");
    // Once appends pause, the WAL is cut back to its size limit.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while size() > 2 * WAL_RESTART_BYTES {
        assert!(std::time::Instant::now() < deadline, "the WAL is still {} bytes", size());
        log.append(AppendBatch { events: crate::event::encode_all(vec![created("s", "a@example.org", n + 1, "small")]), state: vec![] })
            .await
            .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A channel missing from the config for one run is not in this process; its
/// undelivered events must survive retention all the same, until it is forgotten.
#[tokio::test]
async fn retention_keeps_what_a_group_absent_from_this_run_has_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let opts = SqliteOptions { max_age: Some(Duration::ZERO), ..Default::default() };
    {
        let log = SqliteLog::open(&path, opts.clone()).unwrap();
        let evs: Vec<Event> = (1..=4).map(|n| created("s", "a@example.org", n, "x")).collect();
        log.append(AppendBatch { events: crate::event::encode_all(evs), state: vec![] }).await.unwrap();
        let mut a = log.consumer(EVENTS, "a").await.unwrap();
        let mut b = log.consumer(EVENTS, "b").await.unwrap();
        let got = conformance::poll_n(&mut a, 4).await;
        a.commit(&[got[3].position], vec![]).await.unwrap();
        let got = conformance::poll_n(&mut b, 1).await;
        b.commit(&[got[0].position], vec![]).await.unwrap();
    }
    // The next run has only channel `a`.
    let log = SqliteLog::open(&path, opts).unwrap();
    let _a = log.consumer(EVENTS, "a").await.unwrap();
    assert_eq!(log.enforce_retention().await.unwrap(), 1, "only what every known group committed may go");
    let mut b = log.consumer(EVENTS, "b").await.unwrap();
    let rest = b.poll(10, Duration::from_millis(10)).await.unwrap();
    assert_eq!(rest.iter().map(|r| r.event().unwrap().status_id.as_str()).collect::<Vec<_>>(), vec!["2", "3", "4"]);
    drop(b);
    // Forgotten by the operator: its events are released.
    assert!(log.forget_group("b").await.unwrap());
    assert!(!log.forget_group("b").await.unwrap(), "already gone");
    assert_eq!(log.enforce_retention().await.unwrap(), 3);
    assert_eq!(log.info().await.unwrap().events, 0);
}

/// Dedup entries (and prunable namespaces) not written within the horizon go;
/// what is recent stays.
#[tokio::test]
async fn state_older_than_the_horizon_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions { prunable: vec!["ids".into()], ..Default::default() };
    let log = SqliteLog::open(dir.path().join("log.db"), opts).unwrap();
    let puts: Vec<StatePut> = (0..seen::MERGE_AT + 10).map(|i| seen_put(&format!("https://x/{i}"), "00000000000000aa")).collect();
    log.state_put(puts).await.unwrap();
    log.state_put(vec![StatePut::set("ids", "x|1", "v"), StatePut::set("checkpoint", "a", "1")]).await.unwrap();
    // Nothing is older than a cutoff in the past.
    let yesterday = Utc::now() - chrono::Duration::days(1);
    assert_eq!(log.prune_state(yesterday).await.unwrap(), 0);
    // A cutoff tomorrow removes every merged dedup entry and the id index, not other state.
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    let removed = log.prune_state(tomorrow).await.unwrap();
    assert!(removed >= seen::MERGE_AT as u64, "{removed}");
    assert_eq!(log.state_get("ids", "x|1").await.unwrap(), None);
    assert_eq!(log.state_get("checkpoint", "a").await.unwrap().as_deref(), Some("1"), "checkpoints are never pruned");
    assert_eq!(log.state_get(crate::runtime::SEEN_NS, "https://x/0").await.unwrap(), None);
}

#[tokio::test]
async fn readers_start_where_asked_commit_nothing_and_hold_nothing_back() {
    let (_d, log) = fresh();
    let evs: Vec<Event> = (1..=5).map(|n| created("s", "a@example.org", n, "x")).collect();
    log.append(AppendBatch { events: crate::event::encode_all(evs), state: vec![] }).await.unwrap();
    // From a position: what follows it.
    let mut r = log.reader(EVENTS, &[Position { partition: 0, offset: 2 }]).await.unwrap();
    let got: Vec<u64> = r.poll(10, Duration::ZERO).await.unwrap().iter().map(|x| x.position.offset).collect();
    assert_eq!(got, vec![3, 4, 5]);
    assert!(r.commit(&[Position { partition: 0, offset: 5 }], vec![]).await.is_err(), "readers do not commit");
    // Without a position: only what comes next.
    let mut live = log.reader(EVENTS, &[]).await.unwrap();
    assert!(live.poll(10, Duration::ZERO).await.unwrap().is_empty());
    log.append(AppendBatch { events: crate::event::encode_all(vec![created("s", "a@example.org", 6, "x")]), state: vec![] }).await.unwrap();
    let got: Vec<u64> = live.poll(10, Duration::from_secs(5)).await.unwrap().iter().map(|x| x.position.offset).collect();
    assert_eq!(got, vec![6]);
    // No group was made: retention is not held back by readers.
    assert!(log.info().await.unwrap().groups.is_empty());
}
