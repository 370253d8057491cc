//! WebSocket framing of the Mastodon streaming API (`wss://<streaming>/api/v1/streaming`).
//!
//! Server frames are JSON text: `{"stream":[..],"event":..,"payload":"<string>"}`.
//! The payload of `update`/`status.update` is JSON *inside a string*; this module
//! decodes the frame once and hands the payload on as the string it is (the
//! caller decodes it a second time). `delete` payloads are bare ids,
//! `filters_changed` has none, Pleroma omits `stream` on deletes, and error
//! frames (`{"error":..,"status":400}`) become [`StreamError::ServerError`].
//! Connecting, pings and the watchdog live in [`super::stream`].

use serde_json::Value;

pub use super::sse::{RawStreamEvent, StreamError};
use super::stream::StreamName;

/// How much of an undecodable frame is kept for the log.
const MAX_RAW: usize = 2048;

/// Decode one server text frame.
pub fn decode_ws_frame(text: &str) -> Result<RawStreamEvent, StreamError> {
    let malformed = |reason: &str| StreamError::Malformed { raw: clip(text), reason: reason.to_string() };
    let value: Value = serde_json::from_str(text).map_err(|e| malformed(&format!("not JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(malformed("not a JSON object"));
    };
    let event = obj.remove("event");
    if event.is_none() {
        if let Some(err) = obj.remove("error") {
            let message = match err {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let status = obj.get("status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok());
            return Err(StreamError::ServerError { status, message });
        }
    }
    let Some(Value::String(event)) = event else {
        return Err(malformed("no `event` string"));
    };
    let data = match obj.remove("payload") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        // Not what Mastodon sends, but an object payload is unambiguous: keep
        // it as JSON text so the caller's decoding stays the same.
        Some(other) => Some(other.to_string()),
    };
    Ok(RawStreamEvent { event, data })
}

/// The control frame subscribing to `stream`.
pub fn subscribe_frame(stream: &StreamName) -> String {
    let mut v = serde_json::json!({"type": "subscribe", "stream": stream.api_name()});
    if let Some((k, id)) = stream.param() {
        v[k] = id.into();
    }
    v.to_string()
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_RAW) {
        Some((i, _)) => text[..i].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon/");

    fn frames() -> Vec<String> {
        let text = std::fs::read_to_string(format!("{FIXTURES}websocket_server_messages.jsonl")).unwrap();
        text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    }

    #[test]
    fn fixture_frames() {
        let got: Vec<_> = frames().iter().map(|f| decode_ws_frame(f)).collect();
        assert_eq!(got.len(), 8);
        let names: Vec<&str> = got.iter().filter_map(|r| r.as_ref().ok()).map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["update", "notification", "update", "status.update", "delete", "filters_changed", "announcement.delete"]);
        // Decoded once: still a JSON string holding a Status; decoding it again works.
        let update = got[0].as_ref().unwrap();
        let status: Value = serde_json::from_str(update.data.as_deref().unwrap()).unwrap();
        assert_eq!(status["id"], "108914327388663283");
        let edited = got[3].as_ref().unwrap();
        let status: Value = serde_json::from_str(edited.data.as_deref().unwrap()).unwrap();
        assert_eq!(status["id"], "109348684737626801");
        // Delete: the bare id, not JSON.
        assert_eq!(got[4].as_ref().unwrap().data.as_deref(), Some("106692867363994015"));
        // filters_changed: no payload at all.
        assert_eq!(got[5].as_ref().unwrap(), &RawStreamEvent { event: "filters_changed".into(), data: None });
        assert_eq!(got[6].as_ref().unwrap().data.as_deref(), Some("1"));
        assert_eq!(got[7], Err(StreamError::ServerError { status: Some(400), message: "Unknown stream type".into() }));
    }

    #[test]
    fn pleroma_shapes() {
        // Deletes without `stream`.
        let d = decode_ws_frame(r#"{"event":"delete","payload":"AbC123"}"#).unwrap();
        assert_eq!(d, RawStreamEvent { event: "delete".into(), data: Some("AbC123".into()) });
        // pleroma:respond decodes as an event of its own; the stream layer ignores it.
        let r = decode_ws_frame(r#"{"event":"pleroma:respond","payload":"{\"type\":\"subscribe\",\"result\":\"success\"}"}"#).unwrap();
        assert_eq!(r.event, "pleroma:respond");
        // An error frame without status.
        assert_eq!(
            decode_ws_frame(r#"{"error":"Missing access token"}"#),
            Err(StreamError::ServerError { status: None, message: "Missing access token".into() })
        );
    }

    #[test]
    fn malformed_frames() {
        for bad in ["", "not json", "[]", "42", r#"{"stream":["user"]}"#, r#"{"event":5,"payload":"x"}"#] {
            assert!(matches!(decode_ws_frame(bad), Err(StreamError::Malformed { .. })), "{bad:?}");
        }
        let long = "x".repeat(10_000);
        match decode_ws_frame(&long) {
            Err(StreamError::Malformed { raw, .. }) => assert_eq!(raw.len(), MAX_RAW),
            other => panic!("{other:?}"),
        }
        // An object payload is kept as JSON text.
        let e = decode_ws_frame(r#"{"event":"update","payload":{"id":"1"}}"#).unwrap();
        assert_eq!(e.data.as_deref(), Some(r#"{"id":"1"}"#));
    }

    #[test]
    fn subscribe_frames_match_the_documented_ones() {
        let text = std::fs::read_to_string(format!("{FIXTURES}websocket_client_messages.jsonl")).unwrap();
        let docs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let user: Value = serde_json::from_str(&subscribe_frame(&StreamName::User)).unwrap();
        assert_eq!(user, docs[0]);
        let list: Value = serde_json::from_str(&subscribe_frame(&StreamName::List("12249".into()))).unwrap();
        assert_eq!(list, docs[4]);
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let _ = decode_ws_frame(&s);
        }

        #[test]
        fn json_like_strings_never_panic(s in r#"\{("(event|payload|error|status|stream)":("[^"]{0,8}"|[0-9]{1,6}|null|\[\]|\{\}),?){0,4}\}"#) {
            let _ = decode_ws_frame(&s);
        }
    }
}
