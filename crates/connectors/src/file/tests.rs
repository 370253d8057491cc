use chrono::Utc;
use fedistream_core::event::{Event, EventKind, LogRecord, Position};
use fedistream_core::post::Via;
use fedistream_core::Sink;

use super::*;

fn rec(offset: u64) -> LogRecord {
    let ev = Event {
        kind: EventKind::Deleted,
        key: format!("https://example.org/users/a/statuses/{offset}"),
        account: "a@example.org".into(),
        status_id: offset.to_string(),
        instance: "example.org".into(),
        source: "test".into(),
        via: Via::Rest,
        observed_at: Utc::now(),
        post: None,
        counts_refresh: false,
    };
    LogRecord::from_event(Position { partition: 0, offset }, Utc::now(), ev)
}

fn offsets(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| LinePosition::of_line(l).unwrap().offset).collect()
}

fn ctx() -> SinkContext {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let log = fedistream_core::sqlite::SqliteLog::open(dir.path().join("log.db"), Default::default()).unwrap();
    SinkContext::new("file", log)
}

fn cfg(path: PathBuf) -> FileSinkConfig {
    FileSinkConfig { path, rotate_bytes: 0, rotate_age: None, fsync: false, delivery: Default::default() }
}

#[tokio::test]
async fn lines_carry_position_and_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/events.jsonl");
    let mut s = FileSink::new(cfg(path.clone()));
    s.open(&ctx()).await.unwrap();
    done(s.write(&[rec(1), rec(2)]).await);
    s.close().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["offset"], 1);
    assert_eq!(first["partition"], 0);
    assert_eq!(first["kind"], "deleted");
    assert_eq!(first["account"], "a@example.org");
}

#[tokio::test]
async fn redelivery_after_restart_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut s = FileSink::new(cfg(path.clone()));
    s.open(&ctx()).await.unwrap();
    done(s.write(&[rec(1), rec(2), rec(3)]).await);
    drop(s); // as if the process died before committing offsets
    let mut s = FileSink::new(cfg(path.clone()));
    s.open(&ctx()).await.unwrap();
    done(s.write(&[rec(2), rec(3), rec(4)]).await);
    s.close().await.unwrap();
    assert_eq!(offsets(&path), vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn torn_last_line_is_cut_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut s = FileSink::new(cfg(path.clone()));
    s.open(&ctx()).await.unwrap();
    done(s.write(&[rec(1), rec(2)]).await);
    drop(s);
    // A crash in the middle of writing event 3.
    let torn = rec(3).to_json_line();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&torn.as_bytes()[..torn.len() / 2]).unwrap();
    drop(f);
    let mut s = FileSink::new(cfg(path.clone()));
    s.open(&ctx()).await.unwrap();
    done(s.write(&[rec(3)]).await);
    s.close().await.unwrap();
    assert_eq!(offsets(&path), vec![1, 2, 3]);
}

#[tokio::test]
async fn rotates_by_size_and_resumes_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut c = cfg(path.clone());
    c.rotate_bytes = 1; // every batch goes to a fresh file
    let mut s = FileSink::new(c.clone());
    s.open(&ctx()).await.unwrap();
    done(s.write(&[rec(1)]).await);
    done(s.write(&[rec(2)]).await);
    done(s.write(&[rec(3)]).await);
    drop(s);
    let rotated: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(rotated.len(), 3, "active file plus two rotated files");
    // Restart right after a rotation: the active file holds only event 3.
    let mut s = FileSink::new(c);
    s.open(&ctx()).await.unwrap();
    done(s.write(&[rec(2), rec(3)]).await);
    s.close().await.unwrap();
    let mut all: Vec<u64> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).flat_map(|e| offsets(&e.path())).collect();
    all.sort();
    assert_eq!(all, vec![1, 2, 3]);
}

/// The file channel delivers synchronously.
fn done(w: Result<fedistream_core::Written, fedistream_core::SinkError>) {
    assert!(matches!(w, Ok(fedistream_core::Written::Done(_))), "{w:?}");
}

/// A record whose own fields are named like the line's position (a processor's
/// output) is still found in the output: nothing is written twice after a restart.
#[tokio::test]
async fn records_with_their_own_partition_and_offset_fields_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let log: std::sync::Arc<dyn fedistream_core::Log> =
        fedistream_core::sqlite::SqliteLog::open(dir.path().join("log.db"), Default::default()).unwrap();
    let rec = |o: u64| {
        fedistream_core::LogRecord::new(
            fedistream_core::Position { partition: 0, offset: o },
            chrono::Utc::now(),
            format!("{{\"partition\":7,\"offset\":{},\"window\":1}}", o * 100).into(),
        )
    };
    let cfg = FileSinkConfig { path: path.clone(), rotate_bytes: 0, rotate_age: None, fsync: false, delivery: Default::default() };
    let mut s = FileSink::new(cfg.clone());
    s.open(&SinkContext::new("file", log.clone())).await.unwrap();
    done(s.write(&[rec(1), rec(2)]).await);
    drop(s);
    // A new process: the records are delivered again.
    let mut s = FileSink::new(cfg);
    s.open(&SinkContext::new("file", log)).await.unwrap();
    done(s.write(&[rec(1), rec(2), rec(3)]).await);
    let offsets: Vec<u64> = std::fs::read_to_string(&path).unwrap().lines().map(|l| LinePosition::of_line(l).unwrap().offset).collect();
    assert_eq!(offsets, vec![1, 2, 3]);
}

#[test]
fn line_positions_are_read_from_the_prefix() {
    assert_eq!(LinePosition::of_line(r#"{"partition":3,"offset":42,"kind":"created"}"#), Some(LinePosition { partition: 3, offset: 42 }));
    assert_eq!(LinePosition::of_line(r#"{"partition":0,"offset":7}"#), Some(LinePosition { partition: 0, offset: 7 }));
    assert_eq!(LinePosition::of_line(r#"{"partition":0,"offset":7,"partition":9}"#), Some(LinePosition { partition: 0, offset: 7 }));
    assert_eq!(LinePosition::of_line(r#"{"offset":7,"partition":0}"#), None);
    assert_eq!(LinePosition::of_line(r#"{"partition":0,"offset":7x}"#), None);
    assert_eq!(LinePosition::of_line("not json"), None);
}
