//! WebSocket framing of the Mastodon streaming API (`wss://<streaming>/api/v1/streaming`).
//!
//! Server frames are JSON text: `{"stream":[..],"event":..,"payload":"<string>"}`.
//! The payload of `update`/`status.update` is JSON *inside a string*; this module
//! decodes the frame once and hands the payload on as the string it is (the
//! caller decodes it a second time). `delete` payloads are bare ids,
//! `filters_changed` has none, Pleroma omits `stream` on deletes, and error
//! frames (`{"error":..,"status":400}`) become [`StreamError::ServerError`].
//! Connecting, pings and the watchdog live in [`super::stream`].
//!
//! The frame is read field by field rather than into a [`Value`]: the payload
//! string is unescaped straight into the `String` handed on, and `stream` is
//! skipped without being built (the generic tree, its map and its drop were
//! most of the frame's cost, next to a status that is parsed anyway).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

pub use super::sse::{RawStreamEvent, StreamError};
use super::stream::StreamName;

/// How much of an undecodable frame is kept for the log.
const MAX_RAW: usize = 2048;

/// Decode one server text frame.
pub fn decode_ws_frame(text: &str) -> Result<RawStreamEvent, StreamError> {
    let malformed = |reason: &str| StreamError::Malformed { raw: clip(text), reason: reason.to_string() };
    let frame: Frame = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            malformed("not a JSON object")
        } else {
            malformed(&format!("not JSON: {e}"))
        }
    })?;
    let Frame { event, payload, error, status } = frame;
    if event.is_none() {
        if let Some(err) = error {
            let message = match err {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let status = status.as_ref().and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok());
            return Err(StreamError::ServerError { status, message });
        }
    }
    let Some(Value::String(event)) = event else {
        return Err(malformed("no `event` string"));
    };
    Ok(RawStreamEvent { event, data: payload.and_then(|p| p.0) })
}

/// The fields of a frame fedistream reads (the last of a repeated one counts,
/// as in a JSON object); any other (`stream`) is skipped unread.
#[derive(Default)]
struct Frame {
    event: Option<Value>,
    payload: Option<Payload>,
    error: Option<Value>,
    status: Option<Value>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Event,
    Payload,
    Error,
    Status,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FrameVisitor;
        impl<'de> Visitor<'de> for FrameVisitor {
            type Value = Frame;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame, A::Error> {
                let mut frame = Frame::default();
                while let Some(field) = map.next_key()? {
                    match field {
                        Field::Event => frame.event = Some(map.next_value()?),
                        Field::Payload => frame.payload = Some(map.next_value()?),
                        Field::Error => frame.error = Some(map.next_value()?),
                        Field::Status => frame.status = Some(map.next_value()?),
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(frame)
            }
        }
        d.deserialize_map(FrameVisitor)
    }
}

/// A frame's `payload`: the text of a string (unescaped once, into the
/// `String` handed on), `None` for `null`; anything else — not what Mastodon
/// sends, but unambiguous — is kept as its JSON text, so the caller's decoding
/// stays the same.
struct Payload(Option<String>);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;
        impl PayloadVisitor {
            fn json<E>(v: Value) -> Result<Payload, E> {
                Ok(Payload(Some(v.to_string())))
            }
        }
        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a payload")
            }
            fn visit_str<E>(self, s: &str) -> Result<Payload, E> {
                Ok(Payload(Some(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Payload, E> {
                Ok(Payload(Some(s)))
            }
            fn visit_unit<E>(self) -> Result<Payload, E> {
                Ok(Payload(None))
            }
            fn visit_none<E>(self) -> Result<Payload, E> {
                Ok(Payload(None))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Payload, E> {
                Self::json(b.into())
            }
            fn visit_i64<E>(self, n: i64) -> Result<Payload, E> {
                Self::json(n.into())
            }
            fn visit_u64<E>(self, n: u64) -> Result<Payload, E> {
                Self::json(n.into())
            }
            fn visit_f64<E>(self, n: f64) -> Result<Payload, E> {
                Self::json(n.into())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Payload, A::Error> {
                Self::json(Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Payload, A::Error> {
                Self::json(Value::deserialize(de::value::MapAccessDeserializer::new(map))?)
            }
        }
        d.deserialize_any(PayloadVisitor)
    }
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
    fn payloads_decode_as_the_json_value_would() {
        // Escapes of every kind (a surrogate pair too), other fields in any
        // order, repeated fields (the last counts), numbers and arrays.
        let frames = [
            r#"{"stream":["user",{"x":[1,2]}],"event":"update","payload":"{\"a\":\"\\u00e9\\n\\\"\",\"b\":\"\u00e9\ud83d\ude00\t\/\\\"}"}"#,
            r#"{"payload":"x","event":"delete","stream":"user","payload":"y"}"#,
            r#"{"event":"x","payload":[1,{"b":null}]}"#,
            r#"{"event":"x","payload":12.5}"#,
            r#"{"event":"x","payload":true}"#,
            r#"{"event":"x","payload":null}"#,
            r#"{"event":"filters_changed"}"#,
            r#"{"event":null,"error":{"code":1},"status":403}"#,
            r#"{"error":"x","status":"400"}"#,
        ];
        for f in frames {
            assert_eq!(decode_ws_frame(f), via_value(f), "{f}");
        }
    }

    /// The frame decoded the generic way, as this module did before.
    fn via_value(text: &str) -> Result<RawStreamEvent, StreamError> {
        let Value::Object(mut obj) = serde_json::from_str::<Value>(text).unwrap() else { unreachable!() };
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
            return Err(StreamError::Malformed { raw: clip(text), reason: "no `event` string".into() });
        };
        let data = match obj.remove("payload") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        };
        Ok(RawStreamEvent { event, data })
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
            let got = decode_ws_frame(&s);
            // Every object decodes as the generic tree would have it.
            if matches!(serde_json::from_str::<Value>(&s), Ok(Value::Object(_))) {
                prop_assert_eq!(got, via_value(&s));
            }
        }
    }
}
