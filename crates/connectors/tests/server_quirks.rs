//! The Mastodon source against servers fedistream was not written with, through
//! the runtime: a streaming URL advertised on the server's own name, a
//! streaming URL the server could not give at start, a restart answering 503
//! with `Retry-After`, a refused WebSocket upgrade, an undecodable 200,
//! accounts that cannot be read; and what the status says meanwhile. Each
//! test waits for a condition (real time, or virtual time where it checks a
//! bound), never for a fixed time.

mod common;

use std::time::Duration;

use common::*;
use fedistream_connectors::mastodon::source::{Backfill, StreamMode};
use fedistream_connectors::testing::{FakeConfig, Flavor, NewStatus};
use tokio::time::Instant;

/// Post until one reaches the file over the stream; returns its line.
async fn stream_delivers(h: &Harness, user: &str) -> serde_json::Value {
    for i in 0..20 {
        let p = h.fake.post(user, NewStatus::html(format!("<p>probe {i}</p>")));
        let lines = h.wait_lines("the probe post", DEADLINE, |l| has(l, "created", &p.uri)).await;
        let line = lines.into_iter().find(|l| l["key"] == p.uri.as_str()).unwrap();
        if line["via"] == "stream" {
            return line;
        }
    }
    panic!("no post arrived over the stream");
}

fn streaming_cfg(h: &Harness, users: &[&str]) -> fedistream_connectors::mastodon::source::MastodonSourceConfig {
    let mut c = source_config(&h.fake, users);
    // Only stream (re)connects trigger REST here.
    c.poll_interval = Duration::from_secs(3600);
    c.max_poll_interval = Duration::from_secs(3600);
    c.safety_interval = Duration::from_secs(3600);
    c
}

/// Item 3: GoToSocial advertises `wss://<its domain>` even when reached over
/// plain http on loopback; with an `instance` override that domain is reached
/// through the override's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_url_on_the_servers_own_name_is_reached_through_the_override() {
    let fake = fake_with(FakeConfig { domain: Some("fake.example".into()), ..fake_config(Flavor::GoToSocial) }, &["alice"]).await;
    let mut h = Harness::new(fake);
    let cfg = streaming_cfg(&h, &["alice"]);
    h.launch(cfg, true);
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await, "streaming over WebSocket; requests: {:#?}", h.fake.requests());
    let line = stream_delivers(&h, "alice").await;
    assert_eq!(line["via"], "stream");
    h.wait_status("the streaming state", DEADLINE, |d| d.state == "streaming").await;
    h.stop().await;
}

/// Item 3: the instance could not say where streaming is at start (it failed);
/// the stream asks again before the next connect instead of trying the wrong
/// host forever. The streaming server is separate, as Mastodon's often is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streaming_url_is_asked_again_when_the_server_could_not_tell_at_start() {
    let fake = fake_with(FakeConfig { separate_streaming: true, ..fake_config(Flavor::Mastodon) }, &["alice"]).await;
    fake.fail_next_on("/api/v2/instance", 502, 1);
    let mut h = Harness::new(fake);
    let cfg = streaming_cfg(&h, &["alice"]);
    h.launch(cfg, true);
    assert!(h.fake.wait_for_stream_connects(1, DEADLINE).await, "stream connected; requests: {:#?}", h.fake.requests());
    let failed_instance = h.fake.requests().iter().filter(|r| r.path == "/api/v2/instance" && r.status == 502).count();
    assert_eq!(failed_instance, 1, "the first answer failed");
    stream_delivers(&h, "alice").await;
    h.stop().await;
}

/// Item 5: a proxy refuses the WebSocket upgrade with 403 while SSE works; once
/// `verify_credentials` says the token is fine, `auto` falls back to SSE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_websocket_upgrade_falls_back_to_sse_once_the_token_checks_out() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    fake.refuse_websocket(Some(403));
    let mut h = Harness::new(fake);
    let cfg = streaming_cfg(&h, &["alice"]);
    h.launch(cfg, true);
    let doc = h.wait_status("streaming over SSE", DEADLINE, |d| d.state == "streaming").await;
    assert_eq!(doc.detail.as_deref(), Some("Sse"));
    let refused = h.fake.requests().iter().filter(|r| r.path == "/api/v1/streaming" && r.status == 403).count();
    assert!(refused >= 1, "the upgrade was refused");
    stream_delivers(&h, "alice").await;
    h.stop().await;
}

/// Item 10: a stream that never connects shows how often it failed, the last
/// error, and that the source polls meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_connects_shows_its_attempts_last_error_and_polling() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    fake.refuse_websocket(Some(403));
    let mut h = Harness::new(fake);
    let mut cfg = streaming_cfg(&h, &["alice"]);
    cfg.stream = StreamMode::Websocket; // no fallback allowed
    cfg.poll_interval = Duration::from_secs(1);
    cfg.max_poll_interval = Duration::from_secs(1);
    h.launch(cfg, true);
    let doc = h
        .wait_status("a detail with the attempts", DEADLINE, |d| {
            // "stream not connected after N attempts (last, …)", N growing.
            let attempts = d.detail.as_deref().and_then(|s| s.split("after ").nth(1)?.split(' ').next()?.parse::<u32>().ok());
            d.state == "connecting" && attempts.is_some_and(|n| n >= 3)
        })
        .await;
    let detail = doc.detail.unwrap();
    assert!(detail.contains("HTTP 403") && detail.contains("polling meanwhile"), "{detail}");
    // And it does poll.
    let p = h.fake.post("alice", NewStatus::html("<p>polled</p>"));
    h.wait_lines("the polled post", DEADLINE, |l| has(l, "created", &p.uri)).await;
    h.stop().await;
}

/// Item 9: with an `instance` override, events name the account's server, not
/// the address used to reach it — over REST and over the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_name_the_accounts_server_not_the_address_used_to_reach_it() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    let old = fake.post("alice", NewStatus::html("<p>before</p>"));
    let mut h = Harness::new(fake);
    let mut cfg = streaming_cfg(&h, &["alice"]);
    cfg.backfill = Backfill::Last(1);
    h.launch(cfg, true);
    let lines = h.wait_lines("the backfilled post", DEADLINE, |l| has(l, "created", &old.uri)).await;
    let rest = lines.iter().find(|l| l["key"] == old.uri.as_str()).unwrap();
    assert_eq!((rest["instance"].as_str(), rest["account"].as_str()), (Some("fake.example"), Some("alice@fake.example")), "{rest:#}");
    assert_eq!(rest["post"]["provenance"]["instance"], "fake.example");
    let streamed = stream_delivers(&h, "alice").await;
    assert_eq!(streamed["instance"], "fake.example", "{streamed:#}");
    h.stop().await;
}

/// Item 6: one `200` whose body cannot be decoded (a proxy's HTML page) is a
/// transient fault: retried with the short backoff, not after 15 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_undecodable_200_is_retried_soon() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    let mut h = Harness::new(fake);
    let mut cfg = source_config(&h.fake, &["alice"]);
    cfg.stream = StreamMode::Off;
    cfg.poll_interval = Duration::from_secs(1);
    cfg.max_poll_interval = Duration::from_secs(900);
    h.launch(cfg, false);
    h.wait_checkpoints(1).await;
    h.fake.malformed_next_on("/statuses", 1);
    let p = h.fake.post("alice", NewStatus::html("<p>after the hiccup</p>"));
    h.wait_lines("the post after the undecodable answer", DEADLINE, |l| has(l, "created", &p.uri)).await;
    let html = h.fake.requests().iter().filter(|r| r.path.ends_with("/statuses") && r.status == 200).count();
    assert!(html >= 2, "the malformed answer came and was retried");
    let doc = h.source_status().await.unwrap();
    assert_eq!(doc.counters.get("errors"), Some(&1), "{doc:#?}");
    h.stop().await;
}

/// Items 7 and 11: accounts that are not healthy show their own state: not
/// found, waiting for a 429's reset, failing on answers that cannot be decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_accounts_show_their_own_state() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice", "bob"]).await;
    let mut h = Harness::new(fake);
    let mut cfg = source_config(&h.fake, &["alice", "bob", "nobody"]);
    cfg.stream = StreamMode::Off;
    cfg.poll_interval = Duration::from_secs(1);
    cfg.max_poll_interval = Duration::from_secs(1);
    h.launch(cfg, false);
    let doc = h.wait_status("nobody not found", DEADLINE, |d| d.parts.contains_key("nobody@fake.example")).await;
    assert_eq!(doc.parts["nobody@fake.example"], format!("not found on {}", h.fake.host()));
    assert!(!doc.parts.contains_key("alice@fake.example"), "healthy accounts are not listed: {doc:#?}");

    let bob = h.fake.account_id("bob").unwrap();
    h.fake.malformed_next_on(&format!("/accounts/{bob}/statuses"), 1000);
    let doc = h.wait_status("bob failing", DEADLINE, |d| d.parts.get("bob@fake.example").is_some_and(|p| p.starts_with("failing:"))).await;
    let bob_part = &doc.parts["bob@fake.example"];
    assert!(bob_part.contains("expected a JSON array of statuses") && bob_part.contains("<!DOCTYPE html>"), "{bob_part}");

    h.fake.rate_limit_next(Duration::from_secs(60));
    let doc = h
        .wait_status("alice waiting for the reset", DEADLINE, |d| {
            d.parts.get("alice@fake.example").is_some_and(|p| p.starts_with("waiting until"))
        })
        .await;
    assert!(doc.parts["alice@fake.example"].ends_with("(rate limited, 429)"), "{doc:#?}");
    h.stop().await;
}

/// Item 7: a server that refuses anonymous reads (GoToSocial's default) is shown
/// as needing a reader token, not as a bare 401 retried every 15 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_anonymous_reads_is_shown_as_needing_a_token() {
    let fake = fake_with(FakeConfig { anonymous_reads: false, ..fake_config(Flavor::GoToSocial) }, &["alice"]).await;
    let mut h = Harness::new(fake);
    let mut cfg = source_config(&h.fake, &["alice"]);
    cfg.stream = StreamMode::Off;
    h.launch(cfg, false);
    let doc = h.wait_status("alice needing a token", DEADLINE, |d| d.parts.contains_key("alice@fake.example")).await;
    let part = &doc.parts["alice@fake.example"];
    assert!(part.starts_with("needs a reader token"), "{part}");
    assert!(h.fake.requests().iter().any(|r| r.status == 401), "refused");
    h.stop().await;
}

/// Item 4: a restarting server answers 503 with `Retry-After: 120`. That is no
/// rate limit: the server is probed every 10 s and traffic resumes as soon as
/// it is back, not 120 s later. Virtual time.
#[tokio::test(start_paused = true)]
async fn a_restarting_server_is_probed_and_traffic_resumes_as_soon_as_it_is_back() {
    let fake = fake_with(fake_config(Flavor::GoToSocial), &["alice"]).await;
    let mut h = Harness::new(fake);
    h.status_interval = Duration::from_secs(2);
    let mut cfg = source_config(&h.fake, &["alice"]);
    cfg.stream = StreamMode::Off;
    cfg.poll_interval = Duration::from_secs(1);
    cfg.max_poll_interval = Duration::from_secs(1);
    h.launch(cfg, false);
    h.wait_checkpoints(1).await;
    h.fake.set_restarting(Some(120));
    h.wait("a 503", DEADLINE, || h.fake.requests().iter().any(|r| r.status == 503).then_some(())).await;
    let doc = h.wait_status("alice waiting for the server", DEADLINE, |d| d.parts.contains_key("alice@fake.example")).await;
    assert!(doc.parts["alice@fake.example"].contains("server unavailable, 503"), "{doc:#?}");
    // Back after a few seconds, as GoToSocial is.
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.fake.set_restarting(None);
    let back = Instant::now();
    let p = h.fake.post("alice", NewStatus::html("<p>after the restart</p>"));
    h.wait_lines("the post after the restart", Duration::from_secs(300), |l| has(l, "created", &p.uri)).await;
    assert!(back.elapsed() < Duration::from_secs(30), "resumed {:?} after the server was back (it asked for 120 s)", back.elapsed());
    // While it was down: one probe per 10 s, not a request per account and retry.
    let probes = h.fake.requests().iter().filter(|r| r.path == "/api/v2/instance").count();
    assert!(probes <= 2, "{probes} probes");
    h.stop().await;
}

/// Reconciliation's lookups: a batch lookup that answers nothing for posts
/// that exist is not taken as "all deleted"; the server is paged instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_answer_for_existing_posts_deletes_nothing() {
    use fedistream_connectors::mastodon::client::{ClientConfig, MastodonClient, Secret};
    use fedistream_connectors::mastodon::ratelimit::RateLimiters;
    use fedistream_connectors::mastodon::source::reconcile::{LookupSupport, Refetcher};
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    let ids: Vec<String> = (0..3).map(|i| fake.post("alice", NewStatus::html(format!("<p>{i}</p>"))).id).collect();
    let account = fake.account_id("alice").unwrap();
    let client =
        MastodonClient::new(ClientConfig::new(fake.base_url().parse().unwrap(), Some(Secret::new(TOKEN))), &RateLimiters::default())
            .unwrap();
    fake.empty_next_on("/api/v1/statuses", 1);
    let support = LookupSupport::default();
    let mut refetcher = Refetcher::new(&client, &account, ids.clone(), &support);
    let (mut present, mut absent) = (0, Vec::new());
    while let Some(found) = refetcher.next().await.unwrap() {
        present += found.present.len();
        absent.extend(found.absent);
    }
    assert!(absent.is_empty(), "nothing was deleted: {absent:?}");
    assert_eq!(present, 3);
    let paged = fake.requests().iter().any(|r| r.path == format!("/api/v1/accounts/{account}/statuses") && r.query.contains("min_id="));
    assert!(paged, "paged instead: {:#?}", fake.requests());
}
