//! `/api/events`: Server-Sent Events of the log's records as they are appended
//! — new, edited and deleted posts (`event: created|updated|deleted`), or with
//! `?topic=NAME` a processor's output (`event: record`). Each event's `id` is
//! the feed's position once that event is read: `PARTITION:OFFSET` for every
//! partition, comma-separated (`0:41` on the one-partition SQLite log,
//! `0:17,1:9,2:30` on Kafka) — the event's own position and, for the other
//! partitions, the last record sent or where the feed started
//! ([`fedistream_core::Consumer::reader_start`]). A client reconnecting with
//! `Last-Event-ID` (browsers' `EventSource` do it by themselves) resumes right
//! after it on every partition, losing nothing retention has kept;
//! `?after=…` (the same form) does the same for a first connection (the
//! header wins). Without either the feed starts at the head. `data` is the
//! line the file channel writes.
//!
//! `?format=html` (post events only; the dashboard's feed): `event: post`, and
//! `data` is `{"id", "kind", "html"}` — the post as the dashboard shows it,
//! sanitised on the server ([`super::dashboard::render`]), `html: null` for a
//! deletion, `id` the article's element id.
//!
//! The feed reads the log with a reader outside consumer groups
//! ([`fedistream_core::Log::reader`]): it never slows the pipeline or holds
//! back retention, and a slow client only falls behind. A log without such
//! readers would answer 501 (both backends have them).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{BufMut, Bytes, BytesMut};
use fedistream_core::{LogError, LogRecord, Position};

use super::AppState;

/// `P:O[,P:O…]` → positions; `None` when malformed.
pub fn parse_positions(s: &str) -> Option<Vec<Position>> {
    s.split(',')
        .map(|p| {
            let (part, off) = p.trim().split_once(':')?;
            Some(Position { partition: part.parse().ok()?, offset: off.parse().ok()? })
        })
        .collect()
}

/// The positions as an SSE id: `P:O,P:O…` by partition.
pub fn format_positions(at: impl IntoIterator<Item = (u32, u64)>) -> String {
    let mut out = BytesMut::new();
    put_positions(&mut out, at);
    // Digits, colons and commas only.
    String::from_utf8_lossy(&out).into_owned()
}

/// [`format_positions`] written into `out`.
fn put_positions(out: &mut BytesMut, at: impl IntoIterator<Item = (u32, u64)>) {
    let mut num = itoa::Buffer::new();
    for (i, (p, o)) in at.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(num.format(p).as_bytes());
        out.put_u8(b':');
        out.put_slice(num.format(o).as_bytes());
    }
}

/// The head of one SSE frame — `id` (the feed's positions) and `event` —
/// appended to `out`. The frames of a whole poll share one buffer: one write
/// and one chunk per batch, not per event.
fn frame_head(out: &mut BytesMut, at: &BTreeMap<u32, u64>, event: &str) {
    out.put_slice(b"id: ");
    put_positions(out, at.iter().map(|(p, o)| (*p, *o)));
    out.put_slice(b"\nevent: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\n");
}

/// `data` lines (one `data:` line per line of `data`) and the frame's end.
fn frame_data(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    for line in data.split(|b| *b == b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.put_slice(b"\n");
    }
    out.put_slice(b"\n");
}

fn html_frame(out: &mut BytesMut, rec: &LogRecord, at: &BTreeMap<u32, u64>) {
    let data = match rec.event() {
        Ok(ev) => serde_json::json!({
            "id": super::dashboard::render::dom_id(&ev.key),
            "kind": ev.kind.as_str(),
            "html": super::dashboard::render::article(ev),
        }),
        Err(_) => serde_json::json!({ "id": null, "kind": "unreadable", "html": null }),
    };
    frame_head(out, at, "post");
    frame_data(out, data.to_string().as_bytes());
}

/// The record's file-channel line as `data`, written straight into the frame:
/// no copy of the line besides the one into `out`.
fn record_frame(out: &mut BytesMut, rec: &LogRecord, posts: bool, at: &BTreeMap<u32, u64>) {
    let name = if posts { rec.kind().map(|k| k.as_str()).unwrap_or("record") } else { "record" };
    frame_head(out, at, name);
    out.reserve(rec.payload.len() + 64);
    out.put_slice(b"data: ");
    let start = out.len();
    // Writing into memory cannot fail.
    let _ = rec.write_json_line(&mut (&mut *out).writer());
    // A stored JSON line has no raw line break (JSON escapes them); should a
    // record hold one anyway, it becomes several `data:` lines.
    if memchr::memchr(b'\n', &out[start..]).is_some() {
        let line = out.split_off(start);
        out.truncate(start - b"data: ".len());
        frame_data(out, &line);
    } else {
        out.put_slice(b"\n\n");
    }
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}

pub async fn handler(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let topic = q.get("topic").cloned().unwrap_or_else(|| fedistream_core::log::EVENTS.to_string());
    let after = match headers.get("last-event-id").map(|v| v.to_str().ok().and_then(parse_positions)) {
        None => match q.get("after").map(|a| parse_positions(a)) {
            None => Vec::new(),
            Some(Some(p)) => p,
            Some(None) => {
                return error(StatusCode::BAD_REQUEST, "after must be PARTITION:OFFSET[,PARTITION:OFFSET…] (as sent in `id`)".into())
            }
        },
        Some(Some(p)) => p,
        Some(None) => {
            return error(StatusCode::BAD_REQUEST, "Last-Event-ID must be PARTITION:OFFSET[,PARTITION:OFFSET…] (as sent in `id`)".into())
        }
    };
    let html = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("html") => true,
        Some(other) => return error(StatusCode::BAD_REQUEST, format!("format must be json or html, not `{other}`")),
    };
    let reader = match s.log.reader(&topic, &after).await {
        Ok(r) => r,
        Err(LogError::Unsupported(m)) => return error(StatusCode::NOT_IMPLEMENTED, m),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the log: {e}")),
    };
    let posts = topic == fedistream_core::log::EVENTS;
    if html && !posts {
        return error(StatusCode::BAD_REQUEST, "format=html is for posts (no topic)".into());
    }
    // Where the feed stands on every partition: each event's id.
    let at: BTreeMap<u32, u64> = reader.reader_start().into_iter().map(|p| (p.partition, p.offset)).collect();
    let stream = futures::stream::unfold((reader, at), move |(mut r, mut at)| async move {
        match poll_batch(r.as_mut()).await {
            // Nothing new for the keep-alive interval: a comment keeps proxies
            // and clients from timing the stream out.
            Ok(recs) if recs.is_empty() => Some((Ok::<_, Infallible>(Bytes::from_static(b":\n\n")), (r, at))),
            Ok(recs) => {
                let mut out = BytesMut::with_capacity(recs.iter().map(|r| r.payload.len() + 96).sum());
                for rec in &recs {
                    at.insert(rec.position.partition, rec.position.offset);
                    if html {
                        html_frame(&mut out, rec, &at);
                    } else {
                        record_frame(&mut out, rec, posts, &at);
                    }
                }
                Some((Ok(out.freeze()), (r, at)))
            }
            Err(e) => {
                // The client reconnects with its Last-Event-ID.
                tracing::warn!(error = %e, "Event feed: cannot read the log; ending the stream");
                None
            }
        }
    });
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(stream)).into_response()
}

/// How long the feed waits for new records before sending a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The most records one write of the feed carries.
const FEED_BATCH: usize = 1024;

/// How long the feed lets records gather after the first one of a write:
/// under load, one write (and one wake-up of the client) per this interval
/// rather than one per append; a lone post is this much later on screen.
const FEED_LINGER: Duration = Duration::from_millis(20);

/// The next records for the feed: waits up to [`KEEP_ALIVE`] for the first,
/// then [`FEED_LINGER`] for more to join it (up to [`FEED_BATCH`]).
async fn poll_batch(r: &mut dyn fedistream_core::Consumer) -> Result<Vec<LogRecord>, LogError> {
    let mut recs = r.poll(FEED_BATCH, KEEP_ALIVE).await?;
    if recs.is_empty() || recs.len() >= FEED_BATCH {
        return Ok(recs);
    }
    tokio::time::sleep(FEED_LINGER).await;
    while recs.len() < FEED_BATCH {
        match r.poll(FEED_BATCH - recs.len(), Duration::ZERO).await {
            Ok(more) if !more.is_empty() => recs.extend(more),
            // What was read goes out; an error shows again at the next poll.
            _ => break,
        }
    }
    Ok(recs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rec(offset: u64, payload: &str) -> LogRecord {
        LogRecord::new(Position { partition: 0, offset }, chrono::Utc.timestamp_micros(0).unwrap(), payload.into())
    }

    #[test]
    fn a_frame_carries_the_positions_the_kind_and_the_file_channel_line() {
        let mut out = BytesMut::new();
        let at = BTreeMap::from([(0, 7), (2, 30)]);
        record_frame(&mut out, &rec(7, r#"{"kind":"created","key":"k"}"#), true, &at);
        record_frame(&mut out, &rec(8, "{}"), false, &at);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "id: 0:7,2:30\nevent: created\ndata: {\"partition\":0,\"offset\":7,\"kind\":\"created\",\"key\":\"k\"}\n\n\
             id: 0:7,2:30\nevent: record\ndata: {\"partition\":0,\"offset\":8}\n\n"
        );
    }

    #[test]
    fn a_line_break_in_a_record_becomes_several_data_lines() {
        let mut out = BytesMut::new();
        let at = BTreeMap::from([(0, 3)]);
        record_frame(&mut out, &rec(3, "{\"kind\":\"deleted\",\r\n\"key\":\"k\"}"), true, &at);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "id: 0:3\nevent: deleted\ndata: {\"partition\":0,\"offset\":3,\"kind\":\"deleted\",\ndata: \"key\":\"k\"}\n\n"
        );
    }
}
