//! The `mastodon` channel posting digests of stats records on a bot account of
//! the fake server: one post per final record of the configured window, edited
//! for a later revision, never posted twice (redelivery, a restarted channel).

use std::sync::Arc;

use chrono::Utc;
use fedistream_connectors::mastodon::client::Secret;
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::sink::{DigestConfig, MastodonSink, MastodonSinkConfig};
use fedistream_connectors::testing::{FakeConfig, FakeMastodon};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::{Log, LogRecord, Position, Sink, SinkContext};
use serde_json::{json, Value};

const TOKEN: &str = "digest-token";
const BOT: &str = "digests";

fn record(window: &str, start: &str, revision: u32, is_final: bool, posts: u64) -> Value {
    json!({"key": format!("ada@social.example/{window}/{start}"), "account": "ada@social.example", "window": window, "zone": "UTC",
        "start": start, "end": start, "revision": revision, "final": is_final,
        "posts": posts, "originals": posts - 1, "replies_to_self": 1, "replies_to_others": 0, "boosts": 0, "with_media": 0,
        "with_cw": 0, "sensitive": 0, "polls": 0, "edits": 0, "deletes": 0, "languages": {"en": posts}, "applications": {},
        "hours": [0,0,0,0,0,0,0,0,0,posts,0,0,0,0,0,0,0,0,0,0,0,0,0,0], "weekdays": [posts,0,0,0,0,0,0],
        "tags": {"top": [["rust", 2]], "distinct": 1, "total": 2}, "mentions": {"top": [], "distinct": 0, "total": 0},
        "boosted_accounts": {"top": [], "distinct": 0, "total": 0},
        "text": {"posts": posts, "chars": {"mean": 40.0, "median": 40, "p90": 60}, "words": {"mean": 7.0, "median": 7, "p90": 9}},
        "links": 0, "link_domains": {"top": [], "distinct": 0, "total": 0},
        "engagement": {"replies": 1, "boosts": 2, "favourites": 3, "observed_at": "2026-11-04T10:00:00Z", "observed_by": "social.example"}})
}

fn records(values: &[Value], first_offset: u64) -> Vec<LogRecord> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| LogRecord::new(Position { partition: 0, offset: first_offset + i as u64 }, Utc::now(), v.to_string().into()))
        .collect()
}

async fn open(fake: &FakeMastodon, log: &Arc<SqliteLog>) -> MastodonSink {
    let cfg = MastodonSinkConfig { connection: "bot".into(), digest: Some(DigestConfig::default()), ..Default::default() };
    let mut sink = MastodonSink::new(cfg, fake.base_url().parse().unwrap(), Secret::new(TOKEN), RateLimiters::default()).unwrap();
    sink.open(&SinkContext::new("weekly", log.clone() as Arc<dyn Log>)).await.unwrap();
    sink
}

fn text_of(status: &Value) -> String {
    fedistream_process::html_to_text(status["content"].as_str().unwrap())
}

#[tokio::test]
async fn final_weekly_records_become_one_digest_each_edited_for_a_later_revision() {
    let fake = FakeMastodon::start(FakeConfig::default()).await;
    fake.add_token(TOKEN, BOT);
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let mut sink = open(&fake, &log).await;
    let week = "2026-11-02T00:00:00Z";
    let batch = [
        record("week", week, 0, false, 3), // an early look at the open week: no digest
        record("day", week, 0, true, 3),   // another window size: no digest
        record("week", week, 0, true, 12),
    ];
    sink.write(&records(&batch, 1)).await.unwrap();
    let posted = fake.statuses_by(BOT);
    assert_eq!(posted.len(), 1, "{posted:#?}");
    let text = text_of(&posted[0]);
    assert!(text.starts_with("Activity of ada@social.example, week of 2026-11-02:\n12 posts: 11 new, 1 replies, 0 boosts."), "{text}");
    assert!(text.contains("Languages: en 12") && text.contains("Tags: rust"), "{text}");
    assert!(text.chars().count() <= 500);
    assert_eq!(posted[0]["visibility"], "unlisted");
    let id = posted[0]["id"].as_str().unwrap().to_string();

    // Redelivered: nothing new. A correction (revision 1) edits the digest.
    sink.write(&records(&batch[2..], 3)).await.unwrap();
    assert_eq!(fake.posts_created(BOT), 1);
    sink.write(&records(&[record("week", week, 1, true, 13)], 4)).await.unwrap();
    let posted = fake.statuses_by(BOT);
    assert_eq!(posted.len(), 1);
    assert_eq!(fake.edits_of(&id), 1);
    assert!(text_of(&posted[0]).contains("13 posts: 12 new"), "{}", text_of(&posted[0]));

    // A restarted channel remembers what it posted (the map in the log's state).
    drop(sink);
    let mut sink = open(&fake, &log).await;
    sink.write(&records(&[record("week", week, 0, true, 12), record("week", week, 1, true, 13)], 5)).await.unwrap();
    assert_eq!(fake.posts_created(BOT), 1);
    assert_eq!(fake.edits_of(&id), 1);
    // The next week is a new digest; a record that is no stats record is refused at its index.
    let next = record("week", "2026-11-09T00:00:00Z", 0, true, 2);
    sink.write(&records(&[next], 7)).await.unwrap();
    assert_eq!(fake.posts_created(BOT), 2);
    let junk = LogRecord::new(Position { partition: 0, offset: 8 }, Utc::now(), "{\"kind\":\"created\"}".into());
    let e = sink.write(&[junk]).await.unwrap_err();
    assert_eq!(e.failed_index, Some(0));
    assert!(e.message.contains("not a stats record"), "{e}");
}
