//! The replay source through the runtime: Mastodon statuses, fedistream events
//! and file-channel lines are all accepted; bad lines are dead-lettered and the
//! replay goes on; the consent policy applies.

use std::io::Write;
use std::time::Duration;

use fedistream_connectors::replay::{ReplaySource, ReplaySourceConfig};
use fedistream_core::runtime::{self, ChannelSpec, DeliveryConfig, Pipeline, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::testing::RecordingSink;
use fedistream_core::{DeadLetter, EventKind};
use tokio_util::sync::CancellationToken;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon/");

fn fixture_line(name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}{name}")).unwrap()).unwrap();
    v.to_string()
}

async fn replay(dir: &std::path::Path, input: &[u8], rate: Option<f64>) -> (RecordingSink, runtime::RunSummary) {
    let path = dir.join("in.jsonl");
    std::fs::File::create(&path).unwrap().write_all(input).unwrap();
    let log = SqliteLog::open(dir.join("log.db"), SqliteOptions::default()).unwrap();
    let sink = RecordingSink::default();
    let d = DeliveryConfig::default();
    let p = Pipeline {
        log,
        processors: vec![],
        sources: vec![SourceSpec::new(
            "r",
            Box::new(ReplaySource::new(ReplaySourceConfig {
                path,
                rate,
                instance: "archive.example".into(),
                include_unlisted: false,
                owned: false,
            })),
            DeadLetter::new(dir.join("dl.jsonl")),
        )],
        channels: vec![ChannelSpec {
            name: "c".into(),
            group: "g".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(sink.clone()),
            route: None,
            batch: d.batch(),
            retry: d.retry(),
            dead_letter: DeadLetter::new(dir.join("dl-c.jsonl")),
        }],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let summary = tokio::time::timeout(Duration::from_secs(30), runtime::run(p, CancellationToken::new())).await.unwrap().unwrap();
    (sink, summary)
}

#[tokio::test]
async fn statuses_events_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let plain = fixture_line("status_plain.json");
    let gts = fixture_line("gotosocial_status.json");
    let mut input = format!("{plain}\n\n{{\"id\": \"1\", broken\n{gts}\n").into_bytes();
    input.extend_from_slice(b"\xff\xfe not utf-8 \n");
    // A private post: refused by the default consent policy.
    let private =
        plain.replace("\"visibility\":\"public\"", "\"visibility\":\"private\"").replace("103270115826048975", "103270115826048976");
    input.extend_from_slice(format!("{private}\n").as_bytes());
    let (sink, summary) = replay(dir.path(), &input, None).await;
    let keys = sink.keys();
    assert_eq!(
        keys,
        vec![
            "https://mastodon.social/users/Gargron/statuses/103270115826048975".to_string(),
            serde_json::from_str::<serde_json::Value>(&gts).unwrap()["uri"].as_str().unwrap().to_string(),
        ]
    );
    let src = &summary.sources[0].counters;
    assert_eq!(src.get("malformed"), Some(&2), "{src:?}");
    assert_eq!(src.get("skipped_visibility"), Some(&1), "{src:?}");
    let dl = std::fs::read_to_string(dir.path().join("dl.jsonl")).unwrap();
    let reasons: Vec<String> =
        dl.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].as_str().unwrap().to_string()).collect();
    assert!(reasons[0].contains("in.jsonl:3: not a Mastodon status or fedistream event"), "{reasons:?}");
    assert!(reasons[1].contains("in.jsonl:5: not valid UTF-8"), "{reasons:?}");
}

#[tokio::test]
async fn file_channel_lines_replay_as_events_with_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    // First pass: statuses → events. Second: those events (as the file channel writes them) again.
    let plain = fixture_line("status_plain.json");
    let (sink, _) = replay(dir.path(), format!("{plain}\n").as_bytes(), None).await;
    let mut lines: Vec<String> = sink.delivered.lock().unwrap().iter().map(|r| r.to_json_line()).collect();
    let mut deleted: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    deleted["kind"] = "deleted".into();
    deleted.as_object_mut().unwrap().remove("post");
    lines.push(deleted.to_string());
    let dir2 = tempfile::tempdir().unwrap();
    let (sink2, summary) = replay(dir2.path(), (lines.join("\n") + "\n").as_bytes(), Some(1000.0)).await;
    assert_eq!(sink2.kinds(), vec![EventKind::Created, EventKind::Deleted]);
    assert!(sink2.delivered.lock().unwrap().iter().all(|r| r.event().unwrap().source == "r"), "re-attributed to this source");
    assert!(summary.failures.is_empty());
}
