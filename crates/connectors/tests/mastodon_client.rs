//! The Mastodon transport (REST client, rate limiter, SSE and WebSocket streams)
//! against the in-process fake server (`testing::FakeMastodon`).

use std::time::{Duration, Instant};

use fedistream_connectors::mastodon::client::{ClientConfig, MastodonClient, Page, Secret};
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::stream::{spawn_stream, StreamConfig, StreamEvent, StreamName, Transport};
use fedistream_connectors::testing::{FakeConfig, FakeMastodon, Flavor, NewStatus};
use fedistream_core::ErrorKind;
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "reader-token";
/// Upper bound for anything that should happen "soon"; generous for slow CI.
const SOON: Duration = Duration::from_secs(10);

async fn server(cfg: FakeConfig) -> FakeMastodon {
    FakeMastodon::start(FakeConfig { token: Some(TOKEN.into()), ..cfg }).await
}

fn client_for(fake: &FakeMastodon, token: Option<&str>) -> MastodonClient {
    let mut cfg = ClientConfig::new(fake.base_url().parse().unwrap(), token.map(Secret::new));
    cfg.timeout = Duration::from_secs(5);
    MastodonClient::new(cfg, &RateLimiters::default()).unwrap()
}

fn stream_cfg(transport: Transport) -> StreamConfig {
    StreamConfig {
        transport,
        stream: StreamName::User,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..StreamConfig::default()
    }
}

/// The next event, past reports of failed connect attempts (they only feed
/// the status line).
async fn next(rx: &mut Receiver<StreamEvent>) -> StreamEvent {
    loop {
        match tokio::time::timeout(SOON, rx.recv()).await {
            Ok(Some(StreamEvent::ConnectFailed { .. })) => continue,
            Ok(Some(ev)) => return ev,
            Ok(None) => panic!("stream task ended"),
            Err(_) => panic!("no stream event within {SOON:?}"),
        }
    }
}

async fn expect_connected(rx: &mut Receiver<StreamEvent>) -> Transport {
    match next(rx).await {
        StreamEvent::Connected { transport } => transport,
        other => panic!("expected Connected, got {other:?}"),
    }
}

async fn expect_disconnected(rx: &mut Receiver<StreamEvent>) -> String {
    match next(rx).await {
        StreamEvent::Disconnected { reason } => reason,
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

fn status_id(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).expect("status JSON");
    v["id"].as_str().expect("id").to_string()
}

/// Post, edit and delete one status; the stream must deliver all three.
async fn round_trip(fake: &FakeMastodon, rx: &mut Receiver<StreamEvent>) {
    assert!(fake.wait_for_open_streams(1, SOON).await, "the stream is open on the server");
    let posted = fake.post("alice", NewStatus::html("<p>hello</p>"));
    match next(rx).await {
        StreamEvent::Update(json) => assert_eq!(status_id(&json), posted.id),
        other => panic!("expected Update, got {other:?}"),
    }
    assert!(fake.edit(&posted.id, "<p>hello, edited</p>"));
    match next(rx).await {
        StreamEvent::StatusUpdate(json) => {
            assert_eq!(status_id(&json), posted.id);
            assert!(json.contains("edited"));
        }
        other => panic!("expected StatusUpdate, got {other:?}"),
    }
    assert!(fake.delete(&posted.id));
    match next(rx).await {
        StreamEvent::Delete(id) => assert_eq!(id, posted.id),
        other => panic!("expected Delete, got {other:?}"),
    }
}

fn streaming_requests(fake: &FakeMastodon) -> Vec<(String, u16)> {
    fake.requests().into_iter().filter(|r| r.path.starts_with("/api/v1/streaming")).map(|r| (r.path, r.status)).collect()
}

#[tokio::test]
async fn paging_forward_with_min_id_collects_every_status_in_order() {
    let fake = server(FakeConfig::default()).await;
    let posted: Vec<String> = (0..23).map(|i| fake.post("alice", NewStatus::html(format!("<p>{i}</p>"))).id).collect();
    let client = client_for(&fake, None);

    let info = client.instance().await.unwrap();
    assert_eq!(info.domain, fake.host());
    assert!(info.streaming_url.is_some());
    let alice = client.lookup_account("@alice").await.unwrap();
    assert_eq!(alice.username, "alice");

    // The newest page has a next cursor (full page) and a prev cursor.
    let latest = client.account_statuses(&alice.id, Page::Latest { limit: 5 }).await.unwrap();
    assert_eq!(latest.statuses.len(), 5);
    assert_eq!(latest.next_max_id.as_deref(), Some(posted[18].as_str()));
    assert_eq!(latest.prev_min_id.as_deref(), Some(posted[22].as_str()));
    let older = client.account_statuses(&alice.id, Page::Before { max_id: posted[18].clone(), limit: 5 }).await.unwrap();
    assert_eq!(status_id(older.statuses[0].get()), posted[17]);

    // Forward from the beginning: every status exactly once, oldest first.
    let mut cursor = "0".to_string();
    let mut seen = vec![];
    let mut pages = 0;
    loop {
        let page = client.account_statuses(&alice.id, Page::After { min_id: cursor.clone(), limit: 5 }).await.unwrap();
        pages += 1;
        if page.statuses.is_empty() {
            assert_eq!(page.prev_min_id, None);
            break;
        }
        let ids: Vec<String> = page.statuses.iter().map(|s| status_id(s.get())).collect();
        // Newest first within a min_id page, too.
        assert!(ids.windows(2).all(|w| (w[0].len(), &w[0]) > (w[1].len(), &w[1])), "{ids:?}");
        cursor = page.prev_min_id.clone().expect("a non-empty page links rel=prev");
        assert_eq!(cursor, ids[0]);
        seen.extend(ids.into_iter().rev());
    }
    assert_eq!(seen, posted);
    assert_eq!(pages, 6);

    let one = client.status(&posted[3]).await.unwrap();
    assert_eq!(status_id(one.get()), posted[3]);
    let missing = client.status("999999999999999999").await.unwrap_err();
    assert_eq!((missing.status(), missing.kind()), (Some(404), ErrorKind::Permanent));
}

async fn throttled_request_waits_for_the_reset(flavor: Flavor) {
    let fake = server(FakeConfig { flavor, ..FakeConfig::default() }).await;
    let id = fake.add_account("alice", Default::default());
    let client = client_for(&fake, None);
    client.account_statuses(&id, Page::Latest { limit: 1 }).await.unwrap();

    let before = chrono::Utc::now();
    fake.rate_limit_next(Duration::from_millis(1500));
    let err = client.account_statuses(&id, Page::Latest { limit: 1 }).await.unwrap_err();
    assert_eq!((err.status(), err.kind()), (Some(429), ErrorKind::Transient));
    assert!(err.retry_after().is_some_and(|d| d <= Duration::from_secs(3)), "{err:?}");
    assert!(client.limiter().blocked_until().is_some());

    // The next call waits on the limiter and then succeeds.
    client.account_statuses(&id, Page::Latest { limit: 1 }).await.unwrap();
    let api: Vec<_> = fake.requests().into_iter().filter(|r| r.path.ends_with("/statuses")).collect();
    assert_eq!(api.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 429, 200]);
    // GoToSocial's reset has whole seconds; the limiter waits out that second.
    let reset = before + chrono::Duration::milliseconds(1500);
    assert!(api[2].at >= reset, "request at {} before the reset {reset}", api[2].at);
}

#[tokio::test]
async fn a_429_holds_the_next_request_until_the_iso_reset() {
    throttled_request_waits_for_the_reset(Flavor::Mastodon).await;
}

#[tokio::test]
async fn a_429_holds_the_next_request_until_the_unix_reset() {
    throttled_request_waits_for_the_reset(Flavor::GoToSocial).await;
}

#[tokio::test]
async fn server_errors_are_classified() {
    let fake = server(FakeConfig::default()).await;
    let client = client_for(&fake, Some(TOKEN));
    fake.fail_next(502, 1);
    let err = client.verify_credentials().await.unwrap_err();
    assert_eq!((err.status(), err.kind()), (Some(502), ErrorKind::Transient));
    assert_eq!(client.verify_credentials().await.unwrap().username, "reader");
    let wrong = client_for(&fake, Some("wrong-token"));
    let err = wrong.verify_credentials().await.unwrap_err();
    assert_eq!((err.status(), err.kind()), (Some(401), ErrorKind::Auth));
    assert!(!err.to_string().contains("wrong-token"));
}

#[tokio::test]
async fn sse_delivers_update_edit_delete() {
    let fake = server(FakeConfig::default()).await;
    let shutdown = CancellationToken::new();
    let mut rx = spawn_stream(client_for(&fake, Some(TOKEN)), stream_cfg(Transport::Sse), shutdown.clone());
    assert_eq!(expect_connected(&mut rx).await, Transport::Sse);
    round_trip(&fake, &mut rx).await;
    assert_eq!(streaming_requests(&fake), [("/api/v1/streaming/user".to_string(), 200)]);
    shutdown.cancel();
    assert!(tokio::time::timeout(SOON, rx.recv()).await.unwrap().is_none(), "the task ends on shutdown");
}

#[tokio::test]
async fn websocket_delivers_update_edit_delete_and_answers_pings() {
    let cfg = FakeConfig { ws_ping_interval: Duration::from_millis(50), ..FakeConfig::default() };
    let fake = server(cfg).await;
    let shutdown = CancellationToken::new();
    let mut rx = spawn_stream(client_for(&fake, Some(TOKEN)), stream_cfg(Transport::Auto), shutdown.clone());
    assert_eq!(expect_connected(&mut rx).await, Transport::WebSocket);
    round_trip(&fake, &mut rx).await;
    // The fake drops a peer that misses a pong; ten ping intervals pass quietly.
    let quiet = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(quiet.is_err(), "unexpected {quiet:?}");
    assert_eq!(fake.stream_connects(), 1);
    round_trip(&fake, &mut rx).await;
    shutdown.cancel();
    assert!(tokio::time::timeout(SOON, rx.recv()).await.unwrap().is_none());
    assert!(fake.wait_for_open_streams(0, SOON).await, "the socket is closed on shutdown");
}

async fn stalled_stream_reconnects(transport: Transport) {
    let cfg =
        FakeConfig { heartbeat_interval: Duration::from_millis(50), ws_ping_interval: Duration::from_millis(50), ..FakeConfig::default() };
    let fake = server(cfg).await;
    let idle = Duration::from_millis(400);
    let scfg = StreamConfig { sse_idle_timeout: idle, ws_idle_timeout: idle, ..stream_cfg(transport) };
    let shutdown = CancellationToken::new();
    let mut rx = spawn_stream(client_for(&fake, Some(TOKEN)), scfg, shutdown.clone());
    assert_eq!(expect_connected(&mut rx).await, transport);
    // Heartbeats alone keep the connection: several idle periods pass quietly.
    let quiet = tokio::time::timeout(idle * 3, rx.recv()).await;
    assert!(quiet.is_err(), "unexpected {quiet:?}");

    fake.set_heartbeats(false);
    let stalled_at = Instant::now();
    let reason = expect_disconnected(&mut rx).await;
    let took = stalled_at.elapsed();
    assert!(reason.contains("no "), "{reason}");
    assert!(took >= idle - Duration::from_millis(100), "dropped after {took:?}, before the watchdog window");
    // No upper bound on `took`: a loaded machine may run the watchdog late;
    // the reason above shows the watchdog, not an error, dropped the stream.
    fake.set_heartbeats(true);
    assert_eq!(expect_connected(&mut rx).await, transport);
    assert_eq!(fake.stream_connects(), 2);
    round_trip(&fake, &mut rx).await;
    shutdown.cancel();
}

#[tokio::test]
async fn stalled_sse_reconnects_within_the_watchdog_window() {
    stalled_stream_reconnects(Transport::Sse).await;
}

#[tokio::test]
async fn stalled_websocket_reconnects_within_the_watchdog_window() {
    stalled_stream_reconnects(Transport::WebSocket).await;
}

#[tokio::test]
async fn dropped_streams_reconnect_and_announce_it() {
    for transport in [Transport::WebSocket, Transport::Sse] {
        let fake = server(FakeConfig::default()).await;
        let shutdown = CancellationToken::new();
        let mut rx = spawn_stream(client_for(&fake, Some(TOKEN)), stream_cfg(transport), shutdown.clone());
        assert_eq!(expect_connected(&mut rx).await, transport);
        assert!(fake.wait_for_open_streams(1, SOON).await);
        fake.drop_streams();
        expect_disconnected(&mut rx).await;
        assert_eq!(expect_connected(&mut rx).await, transport, "Connected again after a drop");
        assert!(fake.wait_for_stream_connects(2, SOON).await);
        // A clean close made it check the token once.
        let checks = fake.requests().iter().filter(|r| r.path.ends_with("/verify_credentials")).count();
        assert_eq!(checks, 1, "{transport:?}");
        round_trip(&fake, &mut rx).await;
        shutdown.cancel();
    }
}

#[tokio::test]
async fn auto_falls_back_to_sse_when_the_upgrade_fails() {
    let fake = server(FakeConfig::default()).await;
    fake.fail_next_on("/api/v1/streaming", 502, 1);
    let shutdown = CancellationToken::new();
    let mut rx = spawn_stream(client_for(&fake, Some(TOKEN)), stream_cfg(Transport::Auto), shutdown.clone());
    assert_eq!(expect_connected(&mut rx).await, Transport::Sse);
    let reqs = streaming_requests(&fake);
    assert_eq!(reqs, [("/api/v1/streaming".to_string(), 502), ("/api/v1/streaming/user".to_string(), 200)]);
    round_trip(&fake, &mut rx).await;
    shutdown.cancel();
}

#[tokio::test]
async fn gotosocial_streams_over_websocket_after_sse_404() {
    let fake = server(FakeConfig { flavor: Flavor::GoToSocial, ..FakeConfig::default() }).await;
    let shutdown = CancellationToken::new();
    let mut rx = spawn_stream(client_for(&fake, Some(TOKEN)), stream_cfg(Transport::Sse), shutdown.clone());
    assert_eq!(expect_connected(&mut rx).await, Transport::WebSocket);
    assert_eq!(streaming_requests(&fake), [("/api/v1/streaming/user".to_string(), 404), ("/api/v1/streaming".to_string(), 101)]);
    round_trip(&fake, &mut rx).await;
    // After a drop it stays on WebSocket: no second SSE attempt.
    fake.drop_streams();
    expect_disconnected(&mut rx).await;
    assert_eq!(expect_connected(&mut rx).await, Transport::WebSocket);
    assert_eq!(streaming_requests(&fake).iter().filter(|(_, s)| *s == 404).count(), 1);
    shutdown.cancel();

    // Auto goes straight to WebSocket.
    let shutdown = CancellationToken::new();
    let mut rx = spawn_stream(client_for(&fake, Some(TOKEN)), stream_cfg(Transport::Auto), shutdown.clone());
    assert_eq!(expect_connected(&mut rx).await, Transport::WebSocket);
    shutdown.cancel();
}

#[tokio::test]
async fn a_revoked_token_is_fatal_without_a_reconnect_loop() {
    for transport in [Transport::WebSocket, Transport::Sse] {
        let fake = server(FakeConfig::default()).await;
        let mut rx = spawn_stream(client_for(&fake, Some(TOKEN)), stream_cfg(transport), CancellationToken::new());
        assert_eq!(expect_connected(&mut rx).await, transport);
        assert!(fake.wait_for_open_streams(1, SOON).await);
        let revoked_at = chrono::Utc::now();
        fake.revoke_token();
        expect_disconnected(&mut rx).await;
        match next(&mut rx).await {
            StreamEvent::Fatal { error } => {
                assert_eq!((error.status(), error.kind()), (Some(401), ErrorKind::Auth));
                assert!(!format!("{error} {error:?}").contains(TOKEN));
            }
            other => panic!("expected Fatal, got {other:?}"),
        }
        assert!(tokio::time::timeout(SOON, rx.recv()).await.unwrap().is_none(), "the task ends after Fatal");
        let after: Vec<_> = fake.requests().into_iter().filter(|r| r.at >= revoked_at).collect();
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(after[0].path.ends_with("/verify_credentials"));
    }
}

#[tokio::test]
async fn a_wrong_token_is_fatal_on_the_first_connect() {
    for transport in [Transport::WebSocket, Transport::Sse] {
        let fake = server(FakeConfig::default()).await;
        let mut rx = spawn_stream(client_for(&fake, Some("nope")), stream_cfg(transport), CancellationToken::new());
        match next(&mut rx).await {
            StreamEvent::Fatal { error } => assert_eq!(error.kind(), ErrorKind::Auth),
            other => panic!("expected Fatal, got {other:?}"),
        }
        assert!(tokio::time::timeout(SOON, rx.recv()).await.unwrap().is_none());
        let reqs: Vec<_> = fake.requests().into_iter().map(|r| (r.path, r.status)).collect();
        let expected_stream = if transport == Transport::Sse { "/api/v1/streaming/user" } else { "/api/v1/streaming" };
        assert_eq!(
            reqs,
            [
                // Asked for the streaming URL first (refused as well).
                ("/api/v2/instance".to_string(), 401),
                (expected_stream.to_string(), 401),
                ("/api/v1/accounts/verify_credentials".to_string(), 401)
            ],
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn malformed_frames_are_reported_and_the_stream_goes_on() {
    for transport in [Transport::WebSocket, Transport::Sse] {
        let fake = server(FakeConfig::default()).await;
        let shutdown = CancellationToken::new();
        let mut rx = spawn_stream(client_for(&fake, Some(TOKEN)), stream_cfg(transport), shutdown.clone());
        expect_connected(&mut rx).await;
        assert!(fake.wait_for_open_streams(1, SOON).await);
        // Malformed framing: a delete whose id has a space, a frame that is not JSON.
        let raw = match transport {
            Transport::Sse => "event: delete\ndata: {broken id\n\n",
            _ => "{\"event\":\"update\",\"payload\":{broken",
        };
        fake.inject_stream_raw(raw);
        match next(&mut rx).await {
            StreamEvent::Malformed { raw, .. } => assert!(raw.contains("{broken")),
            other => panic!("expected Malformed, got {other:?}"),
        }
        // A well-framed update whose status is not JSON is handed on as it
        // came: the source parses it (once) and dead-letters it (source_e2e).
        let raw = match transport {
            Transport::Sse => "event: update\ndata: {broken\n\n",
            _ => "{\"event\":\"update\",\"payload\":\"{broken\"}",
        };
        fake.inject_stream_raw(raw);
        match next(&mut rx).await {
            StreamEvent::Update(raw) => assert_eq!(raw, "{broken"),
            other => panic!("expected the update as it came, got {other:?}"),
        }
        round_trip(&fake, &mut rx).await;
        assert_eq!(fake.stream_connects(), 1);
        shutdown.cancel();
    }
}
