//! Reconciliation through the runtime, in virtual time (tokio's paused clock):
//! deletions and edits of posts older than the newest page, made while
//! fedistream was stopped or while its stream missed them, arrive within the
//! bound (`reconcile_within`, 1 hour by default) — on a server with
//! `GET /api/v1/statuses?id[]=` (Mastodon 4.3+) and on one without it
//! (GoToSocial, whose ids are ULIDs).

mod common;

use std::time::Duration;

use common::*;
use fedistream_connectors::mastodon::source::Backfill;
use fedistream_connectors::testing::{FakeConfig, Flavor, NewStatus};
use tokio::time::Instant;

/// The default bound.
const BOUND: Duration = Duration::from_secs(3600);

/// The scenario: 40 posts archived; stopped; the 30th-newest deleted and
/// the 28th-newest edited; restarted with `safety_interval = "30s"`. Then, with
/// the stream up but missing events, the 35th-newest deleted and the
/// 25th-newest edited. Each change arrives within the bound.
async fn older_changes_arrive_within_the_bound(fake_cfg: FakeConfig) -> Harness {
    let fake = fake_with(fake_cfg, &["alice"]).await;
    for i in 0..40 {
        fake.post("alice", NewStatus::html(format!("<p>post {i}</p>")));
    }
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.backfill = Backfill::Last(40);
    cfg.safety_interval = Duration::from_secs(30);
    let mut h = Harness::new(fake);
    // Status documents every 2 s as in production (virtual time is cheap, writes are not).
    h.status_interval = Duration::from_secs(2);
    h.launch(cfg.clone(), true);
    h.wait_lines("the 40 posts", DEADLINE, |l| keys_of(l, "created").len() == 40).await;
    h.stop().await;

    let newest_first: Vec<(String, String)> = h
        .fake
        .statuses_of("alice")
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s["uri"].as_str().unwrap().to_string()))
        .collect();
    let (deleted, edited) = (&newest_first[29], &newest_first[27]);
    assert!(h.fake.delete(&deleted.0));
    assert!(h.fake.edit(&edited.0, "<p>edited while fedistream was stopped</p>"));

    let restarted = Instant::now();
    h.launch(cfg, true);
    h.wait_lines("the deletion and the edit made while stopped", BOUND, |l| has(l, "deleted", &deleted.1) && has(l, "updated", &edited.1))
        .await;
    assert!(restarted.elapsed() <= BOUND, "found after {:?}", restarted.elapsed());

    // Running, with the stream up but losing what happens now.
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await, "stream connected");
    h.fake.pause_stream_broadcast(true);
    let (deleted, edited) = (&newest_first[34], &newest_first[24]);
    assert!(h.fake.delete(&deleted.0));
    assert!(h.fake.edit(&edited.0, "<p>edited while the stream missed it</p>"));
    let changed = Instant::now();
    let lines = h
        .wait_lines("the deletion and the edit the stream missed", BOUND, |l| has(l, "deleted", &deleted.1) && has(l, "updated", &edited.1))
        .await;
    assert!(changed.elapsed() <= BOUND, "found after {:?}", changed.elapsed());
    let updated = lines.iter().find(|l| l["kind"] == "updated" && l["key"] == edited.1.as_str()).unwrap();
    assert_eq!(updated["post"]["content_text"], "edited while the stream missed it");
    // Nothing else changed: no other deletion or update.
    assert_eq!(keys_of(&lines, "deleted").len(), 2, "{lines:#?}");
    assert_eq!(keys_of(&lines, "updated").len(), 2, "{lines:#?}");
    h.stop().await;
    h
}

#[tokio::test(start_paused = true)]
async fn on_a_server_with_batched_lookups_changes_to_older_posts_arrive_within_the_bound() {
    let h = older_changes_arrive_within_the_bound(fake_config(Flavor::Mastodon)).await;
    let batched: Vec<_> = h.fake.requests().into_iter().filter(|r| r.method == "GET" && r.path == "/api/v1/statuses").collect();
    assert!(!batched.is_empty(), "checked with GET /api/v1/statuses?id[]=");
    for r in &batched {
        assert_eq!(r.status, 200, "{r:?}");
        let ids = r.query.matches("id%5B%5D=").count();
        assert!((1..=20).contains(&ids), "{} ids in one request: {}", ids, r.query);
    }
}

#[tokio::test(start_paused = true)]
async fn on_a_server_without_batched_lookups_ulid_timelines_are_paged_forward() {
    let h = older_changes_arrive_within_the_bound(fake_config(Flavor::GoToSocial)).await;
    let reqs = h.fake.requests();
    // Asked once whether the server has the batch lookup (GoToSocial: 404), then paged.
    let batched: Vec<_> = reqs.iter().filter(|r| r.method == "GET" && r.path == "/api/v1/statuses").collect();
    assert!(batched.iter().all(|r| r.status == 404), "{batched:?}");
    assert!(batched.len() <= 2, "learned once per run: {}", batched.len());
    let single: Vec<_> = reqs.iter().filter(|r| r.path.starts_with("/api/v1/statuses/")).collect();
    assert!(!single.is_empty(), "the window's oldest post asked alone");
    let id = h.fake.account_id("alice").unwrap();
    let paged = reqs.iter().filter(|r| r.path == format!("/api/v1/accounts/{id}/statuses") && r.query.contains("min_id=")).count();
    assert!(paged >= 2, "timeline paged forward with min_id");
}
