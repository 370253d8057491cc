use tokio::time::Instant;

use super::conn::{classify, dechunk, streaming_url};
use super::supervise::{map_to_base, Plan};
use super::*;
use crate::mastodon::sse::RawStreamEvent;

fn raw(event: &str, data: Option<&str>) -> RawStreamEvent {
    RawStreamEvent { event: event.into(), data: data.map(str::to_string) }
}

#[test]
fn transport_config_values() {
    assert_eq!(serde_json::to_string(&Transport::WebSocket).unwrap(), "\"websocket\"");
    assert_eq!(serde_json::from_str::<Transport>("\"sse\"").unwrap(), Transport::Sse);
    assert_eq!(serde_json::from_str::<Transport>("\"auto\"").unwrap(), Transport::Auto);
    assert!(serde_json::from_str::<Transport>("\"WebSocket\"").is_err());
    let d = StreamConfig::default();
    assert_eq!((d.sse_idle_timeout.as_secs(), d.ws_idle_timeout.as_secs()), (50, 80));
    assert_eq!((d.backoff_initial.as_secs(), d.backoff_max.as_secs()), (1, 300));
}

#[test]
fn streaming_urls() {
    let base: url::Url = "ws://localhost:4000".parse().unwrap();
    assert_eq!(streaming_url(&base, true, &StreamName::User).unwrap().as_str(), "ws://localhost:4000/api/v1/streaming?stream=user");
    assert_eq!(streaming_url(&base, false, &StreamName::User).unwrap().as_str(), "http://localhost:4000/api/v1/streaming/user");
    let base: url::Url = "https://example.social/prefix".parse().unwrap();
    assert_eq!(
        streaming_url(&base, true, &StreamName::List("12".into())).unwrap().as_str(),
        "wss://example.social/prefix/api/v1/streaming?stream=list&list=12"
    );
    assert_eq!(
        streaming_url(&base, false, &StreamName::List("1 2".into())).unwrap().as_str(),
        "https://example.social/prefix/api/v1/streaming/list?list=1+2"
    );
    let token_free: url::Url = "wss://s.example/?access_token=nope".parse().unwrap();
    assert_eq!(streaming_url(&token_free, true, &StreamName::User).unwrap().query(), Some("stream=user"));
    assert!(streaming_url(&"ftp://x.example".parse().unwrap(), true, &StreamName::User).is_err());
    // The timeline source's streams.
    let base: url::Url = "https://s.example".parse().unwrap();
    let local = StreamName::Public { local: true, remote: false };
    assert_eq!(streaming_url(&base, true, &local).unwrap().as_str(), "wss://s.example/api/v1/streaming?stream=public%3Alocal");
    assert_eq!(streaming_url(&base, false, &local).unwrap().as_str(), "https://s.example/api/v1/streaming/public/local");
    let remote = StreamName::Public { local: false, remote: true };
    assert_eq!(streaming_url(&base, false, &remote).unwrap().as_str(), "https://s.example/api/v1/streaming/public/remote");
    let tag = StreamName::Hashtag { tag: "rust".into(), local: true };
    assert_eq!(streaming_url(&base, true, &tag).unwrap().as_str(), "wss://s.example/api/v1/streaming?stream=hashtag%3Alocal&tag=rust");
    assert_eq!(streaming_url(&base, false, &tag).unwrap().as_str(), "https://s.example/api/v1/streaming/hashtag/local?tag=rust");
    let frame: serde_json::Value = serde_json::from_str(&crate::mastodon::ws::subscribe_frame(&tag)).unwrap();
    assert_eq!(frame, serde_json::json!({"type": "subscribe", "stream": "hashtag:local", "tag": "rust"}));
}

#[test]
fn events_we_keep_and_events_we_ignore() {
    let status = r#"{"id":"1","content":"<p>hi</p>"}"#;
    assert!(matches!(classify(raw("update", Some(status))), Some(StreamEvent::Update(s)) if s == status));
    assert!(matches!(classify(raw("status.update", Some(status))), Some(StreamEvent::StatusUpdate(s)) if s == status));
    assert!(matches!(classify(raw("delete", Some("108914327388663283"))), Some(StreamEvent::Delete(s)) if s == "108914327388663283"));
    for ignored in [
        "notification",
        "filters_changed",
        "announcement",
        "announcement.reaction",
        "announcement.delete",
        "conversation",
        "notifications_merged",
        "pleroma:respond",
        "something.new",
    ] {
        assert!(classify(raw(ignored, Some("{}"))).is_none(), "{ignored}");
        assert!(classify(raw(ignored, None)).is_none(), "{ignored}");
    }
    // A payload that is not JSON is the source's to report (it parses the payload once).
    assert!(matches!(classify(raw("update", Some("{not json"))), Some(StreamEvent::Update(s)) if s == "{not json"));
    assert!(matches!(classify(raw("update", None)), Some(StreamEvent::Malformed { .. })));
    assert!(matches!(classify(raw("delete", Some(" "))), Some(StreamEvent::Malformed { .. })));
    assert!(matches!(classify(raw("delete", None)), Some(StreamEvent::Malformed { .. })));
}

#[test]
fn ws_frames_of_the_fixture_classify() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon/websocket_server_messages.jsonl"))
            .unwrap();
    let kept: Vec<&'static str> = text
        .lines()
        .filter_map(|l| crate::mastodon::ws::decode_ws_frame(l).ok())
        .filter_map(classify)
        .map(|e| match e {
            StreamEvent::Update(s) => {
                assert!(s.starts_with('{'));
                "update"
            }
            StreamEvent::StatusUpdate(_) => "status.update",
            StreamEvent::Delete(_) => "delete",
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kept, ["update", "update", "status.update", "delete"]);
}

#[tokio::test(start_paused = true)]
async fn auto_falls_back_to_sse_and_retries_websocket_later() {
    let mut plan = Plan::new(Transport::Auto);
    let t0 = Instant::now();
    assert_eq!(plan.pick(t0), Transport::WebSocket);
    assert!(plan.failed(Transport::WebSocket, Some(502), t0));
    assert_eq!(plan.pick(t0), Transport::Sse);
    // SSE failures other than 404 keep SSE (no immediate switch).
    assert!(!plan.failed(Transport::Sse, Some(500), t0));
    assert_eq!(plan.pick(t0 + Duration::from_secs(60)), Transport::Sse);
    // Later, WebSocket gets another chance.
    assert_eq!(plan.pick(t0 + Duration::from_secs(16 * 60)), Transport::WebSocket);
    plan.connected(Transport::WebSocket);
    assert_eq!(plan.pick(t0), Transport::WebSocket);
}

#[tokio::test(start_paused = true)]
async fn sse_404_means_websocket_only() {
    let now = Instant::now();
    let mut plan = Plan::new(Transport::Auto);
    assert!(plan.failed(Transport::WebSocket, None, now));
    assert!(plan.failed(Transport::Sse, Some(404), now));
    assert_eq!(plan.pick(now), Transport::WebSocket);
    // No more fallback: WebSocket failures now wait for the backoff.
    assert!(!plan.failed(Transport::WebSocket, Some(502), now));
    assert_eq!(plan.pick(now), Transport::WebSocket);

    let mut sse = Plan::new(Transport::Sse);
    assert_eq!(sse.pick(now), Transport::Sse);
    assert!(sse.failed(Transport::Sse, Some(404), now));
    assert_eq!(sse.pick(now), Transport::WebSocket);

    let mut ws = Plan::new(Transport::WebSocket);
    assert!(!ws.failed(Transport::WebSocket, Some(400), now));
    assert_eq!(ws.pick(now), Transport::WebSocket);
}

#[tokio::test]
async fn no_token_is_fatal_at_once() {
    let cfg = crate::mastodon::client::ClientConfig::new("http://127.0.0.1:9".parse().unwrap(), None);
    let client = MastodonClient::new(cfg, &Default::default()).unwrap();
    let mut rx = spawn_stream(client, StreamConfig::default(), CancellationToken::new());
    match rx.recv().await {
        Some(StreamEvent::Fatal { error }) => {
            assert_eq!(error.kind(), fedistream_core::ErrorKind::Config)
        }
        other => panic!("{other:?}"),
    }
    assert!(rx.recv().await.is_none());
}

#[test]
fn a_chunked_error_body_loses_its_framing() {
    let page = "<!DOCTYPE html>\n<html>down</html>\n";
    let raw = format!("{:x}\r\n{page}\r\n5\r\nmore.\r\n0\r\n\r\n", page.len());
    assert_eq!(String::from_utf8(dechunk(raw.as_bytes())).unwrap(), format!("{page}more."));
    // Cut off in the middle: what arrived, without framing.
    let cut = format!("{:x}\r\n{}", page.len(), &page[..10]);
    assert_eq!(String::from_utf8(dechunk(cut.as_bytes())).unwrap(), &page[..10]);
    assert!(dechunk(b"not chunked at all").is_empty());
}

#[test]
fn a_streaming_url_on_the_servers_own_name_maps_to_the_base_url() {
    let base: url::Url = "http://127.0.0.1:8002/".parse().unwrap();
    let own: url::Url = "wss://gts.example".parse().unwrap();
    // The server's own domain, or a name the source knows it by: the base's address.
    assert_eq!(map_to_base(&own, &base, "gts.example", &[]).as_str(), "http://127.0.0.1:8002/");
    assert_eq!(map_to_base(&own, &base, "other", &["GTS.example".into()]).as_str(), "http://127.0.0.1:8002/");
    // A separate streaming host stays.
    let separate: url::Url = "wss://streaming.mastodon.example".parse().unwrap();
    assert_eq!(map_to_base(&separate, &base, "mastodon.example", &[]), separate);
    // A path prefix is kept.
    let with_path: url::Url = "wss://gts.example/prefix".parse().unwrap();
    assert_eq!(map_to_base(&with_path, &base, "gts.example", &[]).as_str(), "http://127.0.0.1:8002/prefix");
}
