use super::*;
use crate::event::Event;
use crate::testing::{conformance, created};

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
            events: vec![created("s", "a@example.org", 1, "one"), created("s", "a@example.org", 2, "two")],
            state: vec![StatePut::set("checkpoint", "a", "2")],
        })
        .await
        .unwrap();
        let mut c = log.consumer("ch").await.unwrap();
        let got = c.poll(1, Duration::from_millis(10)).await.unwrap();
        c.commit(&[got[0].position], vec![]).await.unwrap();
    }
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(log.state_get("checkpoint", "a").await.unwrap().as_deref(), Some("2"));
    let mut c = log.consumer("ch").await.unwrap();
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
    log.append(AppendBatch { events: evs, state: vec![] }).await.unwrap();
    let mut c = log.consumer("ch").await.unwrap();
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
        log.append(AppendBatch { events: evs, state: vec![] }).await.unwrap();
    }
    let mut c = log.consumer("ch").await.unwrap();
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
    let r = log.append(AppendBatch { events: vec![created("s", "a@example.org", 9999, "new")], state: vec![] }).await.unwrap();
    assert_eq!(r.positions[0].offset, 501);
}
