//! Decoding Mastodon's server-sent events (`GET /api/v1/streaming/...`).
//!
//! The SSE grammar itself is eventsource-stream's: comments (`:)`, `:thump`) and
//! comment-only blocks yield nothing, several `data:` lines are joined with
//! `\n`, an unterminated trailing event is dropped at EOF. In front of it sits a
//! small byte guard that this module owns: invalid UTF-8 is replaced (the parser
//! would otherwise buffer forever) and a line longer than [`MAX_LINE`] ends the
//! stream with an error (a hostile or broken server must not grow memory without
//! bound). Mapping events to what fedistream cares about is [`super::stream`]'s job.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{future, Stream, StreamExt};

/// Longest line accepted (a Status JSON is a few KiB, rarely 100 KiB).
pub const MAX_LINE: usize = 4 * 1024 * 1024;

/// One event as the server framed it, before its payload is interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStreamEvent {
    /// `update`, `delete`, `status.update`, `notification`, ...
    pub event: String,
    /// SSE `data` (always present on SSE; `filters_changed` carries the literal
    /// `undefined`), or the WebSocket `payload` string (absent for
    /// `filters_changed`).
    pub data: Option<String>,
}

/// Why a stream (or one frame of it) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The server sent an error frame (`{"error": .., "status": 400}`).
    #[error("server error{}: {message}", status.map(|s| format!(" {s}")).unwrap_or_default())]
    ServerError { status: Option<u16>, message: String },
    /// A frame that is not a Mastodon event; the stream may go on.
    #[error("malformed frame: {reason}")]
    Malformed { raw: String, reason: String },
    /// A line longer than [`MAX_LINE`]; the stream ends.
    #[error("line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    /// The underlying byte stream failed; the stream ends.
    #[error("transport error: {0}")]
    Transport(String),
    /// No byte for the idle timeout: the connection is considered stalled.
    #[error("no data for {0:?}")]
    Idle(Duration),
}

/// Decode a byte stream (an SSE response body) into Mastodon stream events.
/// The stream ends after the first transport error or over-long line.
pub fn sse_events<S, E>(bytes: S) -> impl Stream<Item = Result<RawStreamEvent, StreamError>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    guard_bytes(bytes).eventsource().map(|item| match item {
        Ok(ev) => Ok(RawStreamEvent { event: ev.event, data: Some(ev.data) }),
        Err(EventStreamError::Transport(e)) => Err(e),
        // The guard hands over valid UTF-8, and every line is valid SSE; kept
        // for completeness.
        Err(e @ (EventStreamError::Utf8(_) | EventStreamError::Parser(_))) => {
            Err(StreamError::Malformed { raw: String::new(), reason: e.to_string() })
        }
    })
}

/// Pass a byte stream through, calling `on_chunk` with each chunk's length as it
/// goes by: the idle watchdog must see every byte (heartbeats are comments that
/// [`sse_events`] swallows).
pub fn on_each_chunk<S, E, F>(bytes: S, mut on_chunk: F) -> impl Stream<Item = Result<Bytes, E>>
where
    S: Stream<Item = Result<Bytes, E>>,
    F: FnMut(usize),
{
    bytes.inspect(move |item| {
        if let Ok(b) = item {
            on_chunk(b.len());
        }
    })
}

/// Byte-level state in front of the SSE parser.
#[derive(Default)]
struct Guard {
    /// Bytes of an incomplete UTF-8 sequence held back from the last chunk.
    pending: Vec<u8>,
    /// Length of the current (unterminated) line so far.
    line_len: usize,
    done: bool,
}

impl Guard {
    fn step<E: std::fmt::Display>(&mut self, item: Result<Bytes, E>) -> Option<Result<Bytes, StreamError>> {
        if self.done {
            return None;
        }
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(e) => {
                self.done = true;
                return Some(Err(StreamError::Transport(e.to_string())));
            }
        };
        let out = self.sanitize(&chunk);
        match out.iter().rposition(|b| matches!(b, b'\n' | b'\r')) {
            Some(i) => self.line_len = out.len() - i - 1,
            None => self.line_len += out.len(),
        }
        if self.line_len > MAX_LINE {
            self.done = true;
            return Some(Err(StreamError::LineTooLong { limit: MAX_LINE }));
        }
        Some(Ok(out))
    }

    /// Valid UTF-8 out: complete sequences pass, a split sequence waits for its
    /// next chunk, invalid bytes become U+FFFD.
    fn sanitize(&mut self, chunk: &[u8]) -> Bytes {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(input.len());
        let mut rest = &input[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.extend_from_slice(s.as_bytes());
                    break;
                }
                Err(e) => {
                    let (valid, tail) = rest.split_at(e.valid_up_to());
                    out.extend_from_slice(valid);
                    match e.error_len() {
                        Some(n) => {
                            out.extend_from_slice("\u{FFFD}".as_bytes());
                            rest = &tail[n..];
                        }
                        None => {
                            // Incomplete sequence at the end: at most 3 bytes.
                            self.pending = tail.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        Bytes::from(out)
    }
}

fn guard_bytes<S, E>(bytes: S) -> impl Stream<Item = Result<Bytes, StreamError>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    bytes.scan(Guard::default(), |guard, item| future::ready(guard.step(item)))
}

#[cfg(test)]
mod tests;
