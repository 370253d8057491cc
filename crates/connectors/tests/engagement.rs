//! Engagement refresh against the fake server: counts that change on the
//! server arrive as `updated` events within one `engagement_refresh` interval
//! (virtual time), on a server with `GET /api/v1/statuses?id[]=` and on one
//! without it, and a 429 holds every request until its reset (real time: the
//! fake's throttle runs on the wall clock).

mod common;

use std::time::Duration;

use common::*;
use fedistream_connectors::mastodon::source::{Backfill, StreamMode};
use fedistream_connectors::testing::{FakeConfig, Flavor, NewStatus};
use serde_json::Value;
use tokio::time::Instant;

const EVERY: Duration = Duration::from_secs(600);

fn counts_of(l: &Value) -> [u64; 3] {
    let c = &l["post"]["counts"];
    [c["replies"].as_u64().unwrap(), c["reblogs"].as_u64().unwrap(), c["favourites"].as_u64().unwrap()]
}

fn updates_of<'a>(lines: &'a [Value], uri: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == "updated" && l["key"] == uri).collect()
}

/// Three posts archived; then others reply to, boost and favourite one of them
/// on its server. The refresh publishes the new counts within one interval, as
/// an `updated` event of the same version (same text, no edit time), once.
async fn changed_counts_arrive_within_one_interval(fake_cfg: FakeConfig) -> Harness {
    let fake = fake_with(fake_cfg, &["alice"]).await;
    for i in 0..3 {
        fake.post("alice", NewStatus::html(format!("<p>post {i}</p>")));
    }
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.backfill = Backfill::Last(3);
    cfg.stream = StreamMode::Off;
    cfg.engagement_refresh = Some(EVERY);
    let mut h = Harness::new(fake);
    h.status_interval = Duration::from_secs(2);
    h.launch(cfg, false);
    h.wait_lines("the 3 posts", DEADLINE, |l| keys_of(l, "created").len() == 3).await;
    let statuses = h.fake.statuses_of("alice");
    let (id, uri) = (statuses[1]["id"].as_str().unwrap().to_string(), statuses[1]["uri"].as_str().unwrap().to_string());
    // A while later (past the first refresh), others interact with it.
    tokio::time::sleep(EVERY).await;
    assert!(updates_of(&h.lines(), &uri).is_empty(), "no change, no update");
    assert!(h.fake.set_counts(&id, 2, 3, 5));
    let changed = Instant::now();
    let lines = h.wait_lines("the new counts", EVERY + DEADLINE, |l| updates_of(l, &uri).iter().any(|u| counts_of(u) == [2, 3, 5])).await;
    assert!(changed.elapsed() <= EVERY, "picked up after {:?}", changed.elapsed());
    let created = lines.iter().find(|l| l["kind"] == "created" && l["key"] == uri.as_str()).unwrap();
    let updated = updates_of(&lines, &uri)[0].clone();
    assert_eq!(updated["post"]["content_html"], created["post"]["content_html"], "same version");
    assert!(updated["post"].get("edited_at").is_none(), "not an edit: {updated}");
    assert_eq!(updated["post"]["counts"]["observed_by"], "fake.example");
    assert!(updated["post"]["counts"]["observed_at"].as_str() > created["post"]["counts"]["observed_at"].as_str());
    // Unchanged counts are not published again, however many passes run.
    tokio::time::sleep(3 * EVERY).await;
    let lines = h.lines();
    assert_eq!(updates_of(&lines, &uri).len(), 1, "{lines:#?}");
    assert_eq!(keys_of(&lines, "updated").len(), 1, "the other posts did not change: {lines:#?}");
    h.stop().await;
    h
}

#[tokio::test(start_paused = true)]
async fn on_a_server_with_batched_lookups_changed_counts_arrive_within_one_interval() {
    let h = changed_counts_arrive_within_one_interval(fake_config(Flavor::Mastodon)).await;
    let batched: Vec<_> = h.fake.requests().into_iter().filter(|r| r.method == "GET" && r.path == "/api/v1/statuses").collect();
    assert!(!batched.is_empty(), "read with GET /api/v1/statuses?id[]=");
    assert!(batched.iter().all(|r| r.status == 200 && r.query.contains("id%5B%5D=")), "{batched:?}");
}

/// A Mastodon before 4.3 (the batch lookup answers 404): learned once, then the
/// oldest post alone and the timeline paged forward from it.
#[tokio::test(start_paused = true)]
async fn on_a_server_without_batched_lookups_changed_counts_arrive_within_one_interval() {
    let h = changed_counts_arrive_within_one_interval(FakeConfig { statuses_by_id: Some(false), ..fake_config(Flavor::Mastodon) }).await;
    let reqs = h.fake.requests();
    let batched: Vec<_> = reqs.iter().filter(|r| r.method == "GET" && r.path == "/api/v1/statuses").collect();
    assert!(!batched.is_empty() && batched.iter().all(|r| r.status == 404), "{batched:?}");
    assert!(batched.len() <= 2, "learned once per run (reconciliation and refresh may both ask first): {}", batched.len());
    assert!(reqs.iter().any(|r| r.path.starts_with("/api/v1/statuses/") && r.status == 200), "the oldest post asked alone");
}

/// A 429 while refreshing: nothing goes to the server before the reset it
/// announced, and the counts arrive after it. Real time (the fake throttles on
/// the wall clock); one account, so refresh requests go one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_holds_the_refresh_until_its_reset() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    fake.post("alice", NewStatus::html("<p>hello</p>"));
    let mut cfg = source_config(&fake, &["alice"]);
    cfg.backfill = Backfill::Last(1);
    cfg.stream = StreamMode::Off;
    // Nothing but the refresh after the first catch-up.
    cfg.poll_interval = Duration::from_secs(3600);
    cfg.max_poll_interval = Duration::from_secs(3600);
    cfg.reconcile_within = Duration::from_secs(24 * 3600);
    cfg.engagement_refresh = Some(Duration::from_secs(1));
    let mut h = Harness::new(fake);
    h.launch(cfg, false);
    h.wait_lines("the post", DEADLINE, |l| keys_of(l, "created").len() == 1).await;
    let status = h.fake.statuses_of("alice")[0].clone();
    let (id, uri) = (status["id"].as_str().unwrap(), status["uri"].as_str().unwrap());
    let throttle = Duration::from_millis(2500);
    let asked = chrono::Utc::now();
    h.fake.rate_limit_next(throttle);
    // The announced reset is at least this late.
    let reset = asked + chrono::Duration::from_std(throttle).unwrap();
    assert!(h.fake.set_counts(id, 0, 1, 4));
    h.wait_lines("the new counts after the reset", DEADLINE, |l| updates_of(l, uri).iter().any(|u| counts_of(u) == [0, 1, 4])).await;
    h.stop().await;
    let reqs = h.fake.requests();
    let first_429 = reqs.iter().position(|r| r.status == 429).expect("the refresh ran into the 429");
    let later: Vec<_> = reqs[first_429 + 1..].iter().collect();
    assert!(!later.is_empty());
    for r in &later {
        assert!(r.at >= reset, "a request before the reset: {r:?} (reset {reset})");
    }
}
