//! Tests of the fake Mastodon server (`fedistream_connectors::testing`) over real
//! HTTP and WebSocket connections: paging and `Link` headers, rate-limit headers
//! and 429s, SSE framing, WebSocket frames, auth failures and fault injection.
//!
//! Synchronisation is by reading from the connection (with a timeout as a guard)
//! and by the server's own `wait_for_*` helpers, never by sleeping.

use std::time::Duration;

use fedistream_connectors::testing::{FakeConfig, FakeMastodon, Flavor, HeartbeatStyle, NewStatus, RateLimitConfig};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

const TOKEN: &str = "reader-token";
const WAIT: Duration = Duration::from_secs(5);

fn fast(flavor: Flavor) -> FakeConfig {
    FakeConfig {
        flavor,
        heartbeat_interval: Duration::from_millis(100),
        ws_ping_interval: Duration::from_millis(100),
        token: Some(TOKEN.to_owned()),
        ..FakeConfig::default()
    }
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).send().await.expect("request")
}

async fn get_authed(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).bearer_auth(TOKEN).send().await.expect("request")
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().expect("ascii header").to_owned())
}

fn ids(body: &Value) -> Vec<String> {
    body.as_array().expect("array").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect()
}

/// Posts `n` statuses as `user`; returns their ids oldest first.
fn post_many(server: &FakeMastodon, user: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| server.post(user, NewStatus::html(format!("<p>{i}</p>"))).id).collect()
}

// ---------------------------------------------------------------- REST paging

#[tokio::test]
async fn paging_follows_mastodon_rules() {
    let server = FakeMastodon::start(FakeConfig::default()).await;
    let account = server.add_account("alice", Default::default());
    let posted = post_many(&server, "alice", 12);
    let newest_first: Vec<String> = posted.iter().rev().cloned().collect();
    let base = format!("{}/api/v1/accounts/{account}/statuses", server.base_url());

    // First page: the 5 newest, both links exactly like the fixture.
    let r = get(&format!("{base}?limit=5")).await;
    let link = header(&r, "link").expect("link header");
    let page = ids(&r.json().await.unwrap());
    assert_eq!(page, newest_first[..5]);
    assert_eq!(link, format!("<{base}?limit=5&max_id={}>; rel=\"next\", <{base}?limit=5&min_id={}>; rel=\"prev\"", page[4], page[0]));

    // max_id pages backwards.
    let r = get(&format!("{base}?limit=5&max_id={}", page[4])).await;
    assert_eq!(ids(&r.json().await.unwrap()), newest_first[5..10]);

    // min_id: the items immediately after the cursor, still newest first.
    let r = get(&format!("{base}?limit=5&min_id={}", posted[0])).await;
    assert_eq!(
        ids(&r.json().await.unwrap()),
        vec![posted[5].clone(), posted[4].clone(), posted[3].clone(), posted[2].clone(), posted[1].clone()]
    );

    // since_id: the newest items above the bound; min_id wins over since_id.
    let r = get(&format!("{base}?limit=5&since_id={}", posted[0])).await;
    assert_eq!(ids(&r.json().await.unwrap()), newest_first[..5]);
    let r = get(&format!("{base}?limit=5&since_id={}&min_id={}", posted[0], posted[0])).await;
    assert_eq!(ids(&r.json().await.unwrap())[4], posted[1]);

    // A partial page has prev but no next; an empty page has no Link at all.
    let r = get(&format!("{base}?limit=5&min_id={}", posted[9])).await;
    let link = header(&r, "link").expect("link header");
    assert_eq!(ids(&r.json().await.unwrap()), vec![posted[11].clone(), posted[10].clone()]);
    assert_eq!(link, format!("<{base}?limit=5&min_id={}>; rel=\"prev\"", posted[11]));
    let r = get(&format!("{base}?min_id={}", posted[11])).await;
    assert!(header(&r, "link").is_none());
    assert_eq!(r.json::<Value>().await.unwrap(), Value::Array(vec![]));

    // Default limit 20, cap 40.
    post_many(&server, "alice", 40);
    assert_eq!(ids(&get(&base).await.json().await.unwrap()).len(), 20);
    assert_eq!(ids(&get(&format!("{base}?limit=100")).await.json().await.unwrap()).len(), 40);
}

#[tokio::test]
async fn paging_filters_and_visibility() {
    let server = FakeMastodon::start(FakeConfig::default()).await;
    let alice = server.add_account("alice", Default::default());
    server.add_account("bob", Default::default());
    let root = server.post("bob", NewStatus::html("<p>bob</p>")).id;
    let own = server.post("alice", NewStatus::html("<p>thread</p>")).id;
    let self_reply = server.post("alice", NewStatus { in_reply_to_id: Some(own.clone()), ..NewStatus::html("<p>2/2</p>") }).id;
    let reply = server.post("alice", NewStatus { in_reply_to_id: Some(root.clone()), ..NewStatus::html("<p>hi bob</p>") }).id;
    let boost = server.post("alice", NewStatus { reblog_of: Some(root.clone()), ..Default::default() }).id;
    let private = server.post("alice", NewStatus { visibility: "private".into(), ..NewStatus::html("<p>shh</p>") }).id;
    let base = format!("{}/api/v1/accounts/{alice}/statuses", server.base_url());

    let all = ids(&get(&base).await.json().await.unwrap());
    assert_eq!(all, vec![boost.clone(), reply.clone(), self_reply.clone(), own.clone()]);
    let authed = ids(&get_authed(&base).await.json().await.unwrap());
    assert_eq!(authed[0], private);
    let r = get(&format!("{base}?exclude_replies=true&exclude_reblogs=true")).await;
    assert_eq!(ids(&r.json().await.unwrap()), vec![self_reply, own]);

    // The boost wrapper: empty content, /activity uri, the original nested.
    let statuses = get(&base).await.json::<Value>().await.unwrap();
    let wrapper = &statuses[0];
    assert_eq!(wrapper["content"], "");
    assert!(wrapper["uri"].as_str().unwrap().ends_with("/activity"));
    assert_eq!(wrapper["reblog"]["id"], root.as_str());
    assert_eq!(wrapper["reblog"]["reblogs_count"], 1);
    assert!(wrapper.get("favourited").is_none(), "anonymous view has no viewer fields");
}

// ------------------------------------------------------------ entity shapes

#[tokio::test]
async fn entities_and_lookup_match_the_fixtures() {
    let server = FakeMastodon::start(FakeConfig::default()).await;
    let host = server.host();
    let id = server.add_account(
        "alice",
        fedistream_connectors::testing::AccountOpts { note_html: "<p>hi</p>".into(), noindex: Some(true), ..Default::default() },
    );
    let posted = server.post("alice", NewStatus { tags: vec!["Rust".into()], ..NewStatus::html("<p>x</p>") });
    assert_eq!(posted.uri, format!("http://{host}/users/alice/statuses/{}", posted.id));
    assert_eq!(posted.url, format!("http://{host}/@alice/{}", posted.id));
    assert!(posted.id.parse::<u64>().is_ok(), "Mastodon ids are numeric strings");

    for acct in ["alice".to_owned(), format!("alice@{host}")] {
        let r = get(&format!("{}/api/v1/accounts/lookup?acct={acct}", server.base_url())).await;
        let account: Value = r.json().await.unwrap();
        assert_eq!(account["id"], id.as_str());
        assert_eq!(account["acct"], "alice");
        assert_eq!(account["note"], "<p>hi</p>");
        assert_eq!(account["noindex"], true);
        assert_eq!(account["uri"], format!("http://{host}/users/alice"));
    }
    let r = get(&format!("{}/api/v1/accounts/lookup?acct=nobody", server.base_url())).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!({"error": "Record not found"}));
    let r = get(&format!("{}/api/v1/nothing/here", server.base_url())).await;
    assert_eq!(r.status(), 404);

    let r = get(&format!("{}/api/v1/statuses/{}", server.base_url(), posted.id)).await;
    let status: Value = r.json().await.unwrap();
    let created = status["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 24, "millisecond RFC 3339: {created}");
    assert!(status["edited_at"].is_null());
    assert_eq!(status["tags"][0]["name"], "rust");
    assert!(server.edit(&posted.id, "<p>y</p>"));
    let status: Value = get(&format!("{}/api/v1/statuses/{}", server.base_url(), posted.id)).await.json().await.unwrap();
    assert_eq!(status["content"], "<p>y</p>");
    assert!(status["edited_at"].is_string());

    let v2: Value = get(&format!("{}/api/v2/instance", server.base_url())).await.json().await.unwrap();
    assert_eq!(v2["configuration"]["urls"]["streaming"], format!("ws://{host}"));
    assert_eq!(v2["configuration"]["statuses"]["max_characters"], 500);
    let v1: Value = get(&format!("{}/api/v1/instance", server.base_url())).await.json().await.unwrap();
    assert_eq!(v1["urls"]["streaming_api"], format!("ws://{host}"));
}

#[tokio::test]
async fn gotosocial_shapes() {
    let server = FakeMastodon::start(fast(Flavor::GoToSocial)).await;
    let a = server.post("zork", NewStatus::html("<p>a</p>"));
    let b = server.post("zork", NewStatus::html("<p>b</p>"));
    assert_eq!(a.id.len(), 26, "ULID");
    assert!(a.id < b.id, "ULIDs increase");
    let status = &server.statuses_of("zork")[1];
    assert_eq!(status["id"], a.id.as_str());
    assert!(status["interaction_policy"].is_object());
    assert_eq!(status["content_type"], "text/plain");
    assert!(status["account"].get("uri").is_none());
    assert!(status.get("quotes_count").is_none());
}

// --------------------------------------------------------------- rate limits

fn assert_mastodon_reset(reset: &str, window: i64) {
    // `2026-08-01T13:55:00.212100Z`: microseconds, at a window boundary (plus
    // the request's sub-second part, as Rack::Attack computes it).
    assert_eq!(reset.len(), 27, "{reset}");
    assert!(reset.ends_with('Z') && reset.as_bytes()[19] == b'.', "{reset}");
    let parsed = chrono::DateTime::parse_from_rfc3339(reset).expect("ISO 8601");
    assert_eq!(parsed.timestamp() % window, 0, "{reset}");
    let ahead = parsed.timestamp() - chrono::Utc::now().timestamp();
    assert!((0..=window).contains(&ahead), "{reset}");
}

#[tokio::test]
async fn mastodon_rate_limit_headers_decrement_and_throttle() {
    // An hour-long window makes a window boundary between the requests unlikely.
    let rate_limit = RateLimitConfig { limit: 3, window: Duration::from_secs(3600) };
    let cfg = FakeConfig { rate_limit, ..Default::default() };
    let server = FakeMastodon::start(cfg).await;
    let url = format!("{}/api/v1/instance", server.base_url());
    for expected in ["2", "1", "0"] {
        let r = get(&url).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some(expected));
        assert_mastodon_reset(&header(&r, "x-ratelimit-reset").unwrap(), 3600);
    }
    let r = get(&url).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!({"error": "Too many requests"}));
    // A token is a separate bucket.
    assert_eq!(get_authed(&url).await.status(), 200);
    // Streaming has no rate-limit headers.
    let r = get(&format!("{}/api/v1/streaming/health", server.base_url())).await;
    assert_eq!(r.text().await.unwrap(), "OK");
}

#[tokio::test]
async fn gotosocial_reset_is_unix_seconds() {
    let server = FakeMastodon::start(fast(Flavor::GoToSocial)).await;
    let r = get(&format!("{}/api/v2/instance", server.base_url())).await;
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("299"));
    let reset: i64 = header(&r, "x-ratelimit-reset").unwrap().parse().expect("unix seconds");
    assert_eq!(reset % 300, 0);
    assert!((0..=300).contains(&(reset - chrono::Utc::now().timestamp())));
}

#[tokio::test]
async fn injected_429_and_5xx() {
    let server = FakeMastodon::start(FakeConfig::default()).await;
    let url = format!("{}/api/v1/instance", server.base_url());
    let before = chrono::Utc::now();
    server.rate_limit_next(Duration::from_secs(60));
    for _ in 0..2 {
        let r = get(&url).await;
        assert_eq!(r.status(), 429);
        assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
        let reset = chrono::DateTime::parse_from_rfc3339(&header(&r, "x-ratelimit-reset").unwrap()).unwrap();
        let ahead = (reset.with_timezone(&chrono::Utc) - before).num_seconds();
        assert!((59..=61).contains(&ahead), "reset {ahead}s ahead");
    }
    // A throttle that has already expired lets requests through.
    server.rate_limit_next(Duration::ZERO);
    assert_eq!(get(&url).await.status(), 200);

    server.fail_next(503, 2);
    assert_eq!(get(&url).await.status(), 503);
    assert_eq!(get(&url).await.status(), 503);
    assert_eq!(get(&url).await.status(), 200);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 429, 200, 503, 503, 200]);
}

// ---------------------------------------------------------------------- SSE

/// Reads an SSE body chunk by chunk into `buf` until it contains `needle`.
async fn read_until(resp: &mut reqwest::Response, buf: &mut String, needle: &str) {
    let read = async {
        while !buf.contains(needle) {
            match resp.chunk().await.expect("body") {
                Some(chunk) => buf.push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                None => panic!("stream ended before {needle:?}; got {buf:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.unwrap_or_else(|_| panic!("no {needle:?} in {buf:?}"));
}

/// Removes and returns everything up to and including `needle`.
fn take_through(buf: &mut String, needle: &str) -> String {
    let end = buf.find(needle).expect("needle") + needle.len();
    buf.drain(..end).collect()
}

async fn open_sse(server: &FakeMastodon) -> (reqwest::Response, String) {
    let mut resp = get_authed(&format!("{}/api/v1/streaming/user", server.base_url())).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header(&resp, "cache-control").as_deref(), Some("private, no-store"));
    let mut buf = String::new();
    read_until(&mut resp, &mut buf, ":)\n").await;
    assert!(buf.starts_with(":)\n"), "opener first: {buf:?}");
    take_through(&mut buf, ":)\n");
    (resp, buf)
}

#[tokio::test]
async fn sse_framing_opener_events_heartbeat() {
    let server = FakeMastodon::start(fast(Flavor::Mastodon)).await;
    let (mut resp, mut buf) = open_sse(&server).await;
    assert!(server.wait_for_stream_connects(1, WAIT).await);

    let posted = server.post("alice", NewStatus::html("<p>hello</p>"));
    read_until(&mut resp, &mut buf, "\n\n").await;
    // Heartbeats may come first; they are comment lines.
    let event = take_through(&mut buf, "\n\n").replace(":thump\n", "");
    let (head, data) = event.split_once('\n').unwrap();
    assert_eq!(head, "event: update");
    let data = data.strip_prefix("data: ").unwrap().strip_suffix("\n\n").unwrap();
    assert!(!data.contains('\n'));
    let status: Value = serde_json::from_str(data).unwrap();
    assert_eq!(status["id"], posted.id.as_str());
    assert_eq!(status["uri"], posted.uri.as_str());

    server.edit(&posted.id, "<p>edited</p>");
    read_until(&mut resp, &mut buf, "event: status.update\ndata: {").await;
    server.delete(&posted.id);
    read_until(&mut resp, &mut buf, &format!("event: delete\ndata: {}\n\n", posted.id)).await;

    buf.clear();
    read_until(&mut resp, &mut buf, ":thump\n").await;
    assert!(!buf.contains(":thump\n\n"), "legacy heartbeat is unterminated: {buf:?}");
}

#[tokio::test]
async fn sse_terminated_heartbeat_raw_injection_and_pause() {
    let cfg = FakeConfig { heartbeat_style: HeartbeatStyle::Terminated, ..fast(Flavor::Mastodon) };
    let server = FakeMastodon::start(cfg).await;
    let (mut resp, mut buf) = open_sse(&server).await;
    read_until(&mut resp, &mut buf, ":thump\n\n").await;

    server.inject_stream_raw("data: {not json\n\n");
    read_until(&mut resp, &mut buf, "data: {not json\n\n").await;

    server.pause_stream_broadcast(true);
    let lost = server.post("alice", NewStatus::html("<p>lost</p>"));
    server.pause_stream_broadcast(false);
    let seen = server.post("alice", NewStatus::html("<p>seen</p>"));
    read_until(&mut resp, &mut buf, &seen.id).await;
    assert!(!buf.contains(&lost.id), "paused event must not be streamed");
    assert_eq!(server.statuses_of("alice").len(), 2, "but it is stored");
}

#[tokio::test]
async fn stalled_sse_stream_sends_nothing() {
    let server = FakeMastodon::start(fast(Flavor::Mastodon)).await;
    server.set_heartbeats(false);
    let (mut resp, _) = open_sse(&server).await;
    // A negative check needs a bounded wait: several heartbeat intervals.
    let quiet = tokio::time::timeout(Duration::from_millis(400), resp.chunk()).await;
    assert!(quiet.is_err(), "no bytes on a stalled stream");
    server.set_heartbeats(true);
    let mut buf = String::new();
    read_until(&mut resp, &mut buf, ":thump\n").await;
}

#[tokio::test]
async fn sse_auth_and_flavor_errors() {
    let server = FakeMastodon::start(fast(Flavor::Mastodon)).await;
    let url = format!("{}/api/v1/streaming/user", server.base_url());
    let r = get(&url).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Missing access token");
    let r = reqwest::Client::new().get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Invalid access token");
    let r = get(&format!("{url}?access_token={TOKEN}")).await;
    assert_eq!(r.status(), 200);
    drop(r);
    let r = get_authed(&format!("{}/api/v1/streaming/nope", server.base_url())).await;
    assert_eq!(r.status(), 400);
    let r = get_authed(&format!("{}/api/v1/streaming/list", server.base_url())).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Missing list name parameter");

    // REST: verify_credentials needs the token; a wrong token fails public reads too.
    let vc = format!("{}/api/v1/accounts/verify_credentials", server.base_url());
    let r = get(&vc).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "The access token is invalid");
    let me: Value = get_authed(&vc).await.json().await.unwrap();
    assert_eq!(me["username"], "reader");
    assert!(me["source"]["privacy"].is_string());
    let r = reqwest::Client::new().get(format!("{}/api/v1/instance", server.base_url())).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(server.requests().iter().any(|r| r.path.ends_with("verify_credentials") && r.authorized));

    let gts = FakeMastodon::start(fast(Flavor::GoToSocial)).await;
    let r = get_authed(&format!("{}/api/v1/streaming/user", gts.base_url())).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn drop_streams_and_revoke_close_sse() {
    let server = FakeMastodon::start(fast(Flavor::Mastodon)).await;
    let (mut resp, _) = open_sse(&server).await;
    assert!(server.wait_for_open_streams(1, WAIT).await);
    server.drop_streams();
    let end = async { while resp.chunk().await.expect("clean end").is_some() {} };
    tokio::time::timeout(WAIT, end).await.expect("response ends");
    assert!(server.wait_for_open_streams(0, WAIT).await);

    let (mut resp, _) = open_sse(&server).await;
    server.revoke_token();
    let end = async { while resp.chunk().await.expect("clean end").is_some() {} };
    tokio::time::timeout(WAIT, end).await.expect("response ends");
    let r = get_authed(&format!("{}/api/v1/streaming/user", server.base_url())).await;
    assert_eq!(r.status(), 401);
    let r = get_authed(&format!("{}/api/v1/accounts/verify_credentials", server.base_url())).await;
    assert_eq!(r.status(), 401);
    assert_eq!(server.stream_connects(), 2);
}

// ---------------------------------------------------------------- WebSocket

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(server: &FakeMastodon, query: &str) -> String {
    format!("ws://{}/api/v1/streaming{query}", server.host())
}

async fn connect_ws(server: &FakeMastodon, query: &str) -> Ws {
    let mut req = ws_url(server, query).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.expect("upgrade").0
}

/// The next text frame as JSON, skipping pings.
async fn next_json(ws: &mut Ws) -> Value {
    let read = async {
        loop {
            match ws.next().await.expect("socket open").expect("frame") {
                Message::Text(t) => return serde_json::from_str::<Value>(t.as_str()).expect("json frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("a frame in time")
}

/// Subscribes, then proves the subscription is active: frames are handled in
/// order, so the error reply to a bogus subscribe comes after it.
async fn subscribe_user(ws: &mut Ws) {
    for frame in [r#"{"type":"subscribe","stream":"user"}"#, r#"{"type":"subscribe","stream":"bogus"}"#] {
        ws.send(Message::Text(frame.into())).await.unwrap();
    }
    assert_eq!(next_json(ws).await, serde_json::json!({"error": "Unknown stream type", "status": 400}));
}

#[tokio::test]
async fn websocket_subscribe_update_edit_delete() {
    for flavor in [Flavor::Mastodon, Flavor::GoToSocial] {
        let server = FakeMastodon::start(fast(flavor)).await;
        let mut ws = connect_ws(&server, "").await;
        subscribe_user(&mut ws).await;
        assert_eq!(server.open_streams(), 1);

        let posted = server.post("alice", NewStatus::html("<p>hello</p>"));
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["stream"], serde_json::json!(["user"]));
        assert_eq!(frame["event"], "update");
        let payload = frame["payload"].as_str().expect("payload is a JSON string");
        let status: Value = serde_json::from_str(payload).expect("decoded twice");
        assert_eq!(status["id"], posted.id.as_str());

        server.edit(&posted.id, "<p>edited</p>");
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["event"], "status.update");
        let status: Value = serde_json::from_str(frame["payload"].as_str().unwrap()).unwrap();
        assert_eq!(status["content"], "<p>edited</p>");

        server.delete(&posted.id);
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["event"], "delete");
        assert_eq!(frame["payload"], posted.id.as_str(), "delete payload is the bare id");

        // Unsubscribed: the next event is not delivered, the raw injection is.
        ws.send(Message::Text(r#"{"type":"unsubscribe","stream":"user"}"#.into())).await.unwrap();
        ws.send(Message::Text(r#"{"type":"subscribe","stream":"bogus"}"#.into())).await.unwrap();
        next_json(&mut ws).await;
        server.post("alice", NewStatus::html("<p>unseen</p>"));
        server.inject_stream_raw(r#"{"raw":true}"#);
        assert_eq!(next_json(&mut ws).await, serde_json::json!({"raw": true}));
    }
}

#[tokio::test]
async fn websocket_query_stream_pings_and_binary_close() {
    let server = FakeMastodon::start(fast(Flavor::Mastodon)).await;
    let mut ws = connect_ws(&server, "?stream=list&list=42").await;
    assert!(server.wait_for_stream_connects(1, WAIT).await);
    // A ping arrives within a few intervals (tungstenite answers it when read).
    let ping = async {
        loop {
            if let Message::Ping(_) = ws.next().await.unwrap().unwrap() {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, ping).await.expect("server ping");
    let posted = server.post("alice", NewStatus::html("<p>listed</p>"));
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["stream"], serde_json::json!(["list", "42"]));
    assert!(frame["payload"].as_str().unwrap().contains(&posted.id));

    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    let close = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    };
    let frame = tokio::time::timeout(WAIT, close).await.unwrap().expect("close frame");
    assert_eq!(frame.code, CloseCode::Unsupported);
}

#[tokio::test]
async fn websocket_auth() {
    let server = FakeMastodon::start(fast(Flavor::Mastodon)).await;
    let err = tokio_tungstenite::connect_async(ws_url(&server, "")).await.expect_err("401");
    let tungstenite::Error::Http(resp) = err else { panic!("expected HTTP error, got {err:?}") };
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["x-error-message"], "Missing access token");

    // Token as subprotocol (browsers) and as query parameter.
    let mut req = ws_url(&server, "").into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", TOKEN.parse().unwrap());
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.expect("protocol auth");
    assert_eq!(resp.headers()["sec-websocket-protocol"], TOKEN);
    let query = format!("?access_token={TOKEN}&stream=user");
    tokio_tungstenite::connect_async(ws_url(&server, &query)).await.expect("query auth");
    assert!(server.wait_for_stream_connects(2, WAIT).await);
}

#[tokio::test]
async fn drop_streams_and_revoke_close_websockets() {
    let server = FakeMastodon::start(fast(Flavor::GoToSocial)).await;
    let mut ws = connect_ws(&server, "?stream=user").await;
    assert!(server.wait_for_open_streams(1, WAIT).await);
    server.drop_streams();
    let closed = async {
        loop {
            match ws.next().await {
                None | Some(Ok(Message::Close(_))) | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    };
    tokio::time::timeout(WAIT, closed).await.expect("socket closed");
    assert!(server.wait_for_open_streams(0, WAIT).await);

    let _ws = connect_ws(&server, "?stream=user").await;
    assert!(server.wait_for_open_streams(1, WAIT).await);
    server.revoke_token();
    assert!(server.wait_for_open_streams(0, WAIT).await);
    let mut req = ws_url(&server, "").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.expect_err("revoked");
    let tungstenite::Error::Http(resp) = err else { panic!("expected HTTP error, got {err:?}") };
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["x-error-message"], "Invalid access token");
}

// ------------------------------------------------- quirks of other servers

/// `GET /api/v1/statuses?id[]=` as Mastodon 4.3+ serves it (the visible ones,
/// deleted and unknown ids left out, at most 20), and 404 where the server has
/// no such endpoint (GoToSocial, older Mastodon).
#[tokio::test]
async fn statuses_by_id_is_served_like_mastodon_4_3_and_absent_elsewhere() {
    let server = FakeMastodon::start(fast(Flavor::Mastodon)).await;
    let ids = post_many(&server, "alice", 3);
    assert!(server.delete(&ids[1]));
    let url = format!("{}/api/v1/statuses?id[]={}&id[]={}&id[]={}&id[]=404", server.base_url(), ids[0], ids[1], ids[2]);
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(ids_of(&r.json::<Value>().await.unwrap()), vec![ids[0].clone(), ids[2].clone()]);
    let many: String = (0..21).map(|i| format!("id[]={i}&")).collect();
    assert_eq!(get(&format!("{}/api/v1/statuses?{many}", server.base_url())).await.status(), 422);

    for cfg in [fast(Flavor::GoToSocial), FakeConfig { statuses_by_id: Some(false), ..fast(Flavor::Mastodon) }] {
        let server = FakeMastodon::start(cfg).await;
        let ids = post_many(&server, "alice", 1);
        assert_eq!(get(&format!("{}/api/v1/statuses?id[]={}", server.base_url(), ids[0])).await.status(), 404);
    }
}

fn ids_of(body: &Value) -> Vec<String> {
    ids(body)
}

/// GoToSocial's defaults: anonymous reads refused with 401, a streaming URL
/// advertised as `wss://<domain>` however the server is reached.
#[tokio::test]
async fn gotosocial_refuses_anonymous_reads_and_advertises_wss_on_its_domain() {
    let server =
        FakeMastodon::start(FakeConfig { anonymous_reads: false, domain: Some("gts.example".into()), ..fast(Flavor::GoToSocial) }).await;
    let id = server.add_account("alice", Default::default());
    let r = get(&format!("{}/api/v1/accounts/{id}/statuses", server.base_url())).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Unauthorized: token not supplied");
    assert_eq!(get_authed(&format!("{}/api/v1/accounts/{id}/statuses", server.base_url())).await.status(), 200);
    // The instance stays public, and names the server and its streaming base.
    let v1: Value = get(&format!("{}/api/v1/instance", server.base_url())).await.json().await.unwrap();
    assert_eq!((v1["uri"].as_str(), v1["urls"]["streaming_api"].as_str()), (Some("gts.example"), Some("wss://gts.example")));
    let v2: Value = get(&format!("{}/api/v2/instance", server.base_url())).await.json().await.unwrap();
    assert_eq!(
        (v2["domain"].as_str(), v2["configuration"]["urls"]["streaming"].as_str()),
        (Some("gts.example"), Some("wss://gts.example"))
    );
    let looked_up = get_authed(&format!("{}/api/v1/accounts/lookup?acct=alice@gts.example", server.base_url())).await;
    assert_eq!(looked_up.status(), 200, "its own domain in a handle");
}

/// A restart: 503 with `Retry-After` and a chunked HTML page for everything,
/// then normal service.
#[tokio::test]
async fn a_restart_answers_503_with_retry_after_and_a_chunked_html_page() {
    let server = FakeMastodon::start(fast(Flavor::GoToSocial)).await;
    server.set_restarting(Some(120));
    let r = get(&format!("{}/api/v1/instance", server.base_url())).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("120"));
    assert_eq!(header(&r, "transfer-encoding").as_deref(), Some("chunked"));
    assert!(header(&r, "content-type").unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().starts_with("<!DOCTYPE html>"));
    server.set_restarting(None);
    assert_eq!(get(&format!("{}/api/v1/instance", server.base_url())).await.status(), 200);
}

/// Faults aimed at one path: an undecodable 200 (an HTML page), a status code.
#[tokio::test]
async fn faults_aimed_at_one_path_leave_the_others_alone() {
    let server = FakeMastodon::start(fast(Flavor::Mastodon)).await;
    let id = server.add_account("alice", Default::default());
    let statuses = format!("{}/api/v1/accounts/{id}/statuses", server.base_url());
    server.malformed_next_on("/statuses", 1);
    server.fail_next_on("/api/v2/instance", 502, 1);
    assert_eq!(get(&format!("{}/api/v1/instance", server.base_url())).await.status(), 200, "another path");
    let r = get(&statuses).await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err(), "not JSON");
    assert_eq!(get(&statuses).await.status(), 200);
    assert_eq!(get(&format!("{}/api/v2/instance", server.base_url())).await.status(), 502);
    assert_eq!(get(&format!("{}/api/v2/instance", server.base_url())).await.status(), 200);
}

/// A proxy refusing WebSocket upgrades with 403 while SSE works; a separate
/// streaming server that the main host redirects to.
#[tokio::test]
async fn websocket_upgrades_can_be_refused_and_streaming_can_live_elsewhere() {
    let server = FakeMastodon::start(fast(Flavor::Mastodon)).await;
    server.refuse_websocket(Some(403));
    let ws_url = format!("ws://{}/api/v1/streaming?stream=user&access_token={TOKEN}", server.host());
    match tokio_tungstenite::connect_async(ws_url.into_client_request().unwrap()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
        other => panic!("expected a refused upgrade, got {other:?}"),
    }
    let sse = get_authed(&format!("{}/api/v1/streaming/user", server.base_url())).await;
    assert_eq!(sse.status(), 200, "SSE works");

    let server = FakeMastodon::start(FakeConfig { separate_streaming: true, ..fast(Flavor::Mastodon) }).await;
    let streaming = server.streaming_host().expect("a second listener");
    let v2: Value = get(&format!("{}/api/v2/instance", server.base_url())).await.json().await.unwrap();
    assert_eq!(v2["configuration"]["urls"]["streaming"], format!("ws://{streaming}"));
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(format!("{}/api/v1/streaming/user", server.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(header(&r, "location"), Some(format!("http://{streaming}/api/v1/streaming/user")));
    let direct = reqwest::Client::new().get(format!("http://{streaming}/api/v1/streaming/user")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(direct.status(), 200);
}
