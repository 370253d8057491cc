//! A third-party reader proves the format: Python's `pyarrow` (datasets with
//! Hive partitioning) and `duckdb` (read_parquet, hive_partitioning) read a
//! local archive and return exactly the events the pipeline received, with the
//! right types. Needs the interpreter `FEDISTREAM_PYTHON` names, with pyarrow
//! and duckdb (scripts/python-deps makes it; scripts/test.sh sets it).

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use fedistream_archive::ArchiveSink;
use fedistream_core::component::SourceBatch;
use fedistream_core::post::Mention;
use fedistream_core::runtime::{self, BatchConfig, ChannelSpec, Pipeline, RetryConfig, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::testing::{post, VecSource};
use fedistream_core::{DeadLetter, Event, EventKind};
use tokio_util::sync::CancellationToken;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_duckdb_read_exactly_the_events_with_the_right_types() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let mut evs = Vec::new();
    for n in 1..=6u64 {
        let mut p = post(&format!("user{}@example.org", n % 2), n, &format!("post {n}"));
        p.created_at = Some(at(&format!("2026-12-0{}T{:02}:30:00Z", 1 + n % 2, 7 + n)));
        p.tags = (0..n % 3).map(|i| format!("tag{i}")).collect();
        p.mentions = vec![Mention { acct: format!("m{n}@example.net"), url: None }];
        evs.push(Event::created("src", p));
    }
    let mut del = evs[0].clone();
    del.kind = EventKind::Deleted;
    del.post = None;
    del.observed_at = at("2026-12-03T00:05:00Z");
    evs.push(del);
    let archive = dir.path().join("archive");
    let p = Pipeline {
        log: log.clone(),
        sources: vec![SourceSpec::new(
            "src",
            Box::new(VecSource { batches: vec![SourceBatch { events: fedistream_core::event::encode_all(evs.clone()), state: vec![] }] }),
            DeadLetter::new(dir.path().join("dl-src.jsonl")),
        )],
        processors: vec![],
        channels: vec![ChannelSpec {
            name: "archive".into(),
            group: "g.archive".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(ArchiveSink::new(local_config(&archive))),
            route: None,
            batch: BatchConfig { max_records: 3, max_bytes: 16 << 20, linger: Duration::ZERO },
            retry: RetryConfig::default(),
            dead_letter: DeadLetter::new(dir.path().join("dl.jsonl")),
        }],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let summary = runtime::run(p, CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);

    let python = std::env::var("FEDISTREAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_archive.py");
    let out = std::process::Command::new(&python).arg(script).arg(&archive).output().expect("run python");
    assert!(
        out.status.success(),
        "{python} {script} failed: {}\n(needs pyarrow and duckdb: run scripts/python-deps and set FEDISTREAM_PYTHON to the interpreter it prints)",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let pa = v["pyarrow"].as_array().unwrap();
    assert_eq!(pa.len(), evs.len(), "{pa:?}");
    for (i, (row, ev)) in pa.iter().zip(&evs).enumerate() {
        assert_eq!(row["offset"], i as u64 + 1);
        assert_eq!(row["key"], ev.key.as_str());
        assert_eq!(row["kind"], ev.kind.as_str());
        match &ev.post {
            Some(p) => {
                assert_eq!(row["tags"], serde_json::json!(p.tags));
                assert_eq!(row["mentions"], serde_json::json!([p.mentions[0].acct]));
                let created = p.created_at.unwrap();
                assert_eq!(row["created_at"].as_str().unwrap(), created.to_rfc3339().replace('Z', "+00:00"));
                assert_eq!(row["date"], created.format("%Y-%m-%d").to_string());
                assert_eq!(row["hour"].as_i64().unwrap(), created.format("%H").to_string().parse::<i64>().unwrap());
            }
            None => {
                assert_eq!(row["tags"], serde_json::Value::Null);
                assert_eq!(row["date"], "2026-12-03");
                assert_eq!(row["hour"], 0);
            }
        }
    }
    let types = &v["pyarrow_types"];
    assert_eq!(types["log_offset"], "uint64");
    assert_eq!(types["created_at"], "timestamp[us, tz=UTC]");
    assert_eq!(types["tags"], "list<item: string not null>");
    assert_eq!(types["mentions"], "list<item: struct<acct: string not null, url: string> not null>");

    let duck = v["duckdb"].as_array().unwrap();
    assert_eq!(duck.len(), evs.len());
    for (i, (row, ev)) in duck.iter().zip(&evs).enumerate() {
        assert_eq!(row["offset"], i as u64 + 1);
        assert_eq!(row["key"], ev.key.as_str());
        assert_eq!(row["n_tags"], ev.post.as_ref().map(|p| serde_json::json!(p.tags.len())).unwrap_or(serde_json::Value::Null));
    }
    assert_eq!(duck[0]["created_type"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(duck[0]["tags_type"], "VARCHAR[]");
    assert_eq!(duck[0]["date_type"], "DATE");
    // Hours 08..13, one post each; the deletion is left out.
    assert_eq!(v["posts_per_hour"], serde_json::json!([[8, 1], [9, 1], [10, 1], [11, 1], [12, 1], [13, 1]]));
}
