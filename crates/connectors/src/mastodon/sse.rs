//! Decoding Mastodon's server-sent events (`GET /api/v1/streaming/...`).
//!
//! The SSE grammar (WHATWG, "interpreting an event stream") on bytes: lines end
//! at LF, CRLF or CR; comments (`:)`, `:thump`) and comment-only blocks yield
//! nothing; several `data:` lines are joined with `\n`; a blank line ends an
//! event (none without data; type `message` when it names none); `id` and
//! `retry` mean nothing here and are ignored; a BOM at the very start is
//! skipped; an unterminated trailing event is dropped at EOF. Invalid UTF-8 is
//! replaced (U+FFFD), and a line longer than [`MAX_LINE`] ends the stream with an
//! error (a hostile or broken server must not grow memory without bound).
//!
//! The framing is this module's own rather than eventsource-stream's (the
//! tests check it against that crate): its parser scanned each line char by
//! char and copied the rest of its buffer after every line, which with the
//! UTF-8 pass in front of it was a fifth of the live path's CPU in a burst.
//! Here lines are found with `memchr`, a line within one chunk is never copied
//! before its value is, and each chunk yields the events it completes at once
//! ([`sse_events`]): one hand-off per socket read. Mapping events to what
//! fedistream cares about is [`super::stream`]'s job.

use std::time::Duration;

use bytes::Bytes;
use futures::{future, stream, Stream, StreamExt};

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

/// Decode a byte stream (an SSE response body) into Mastodon stream events:
/// each item holds the events one chunk completed (never empty). The stream
/// ends after the first transport error or over-long line.
pub fn sse_events<S, E>(bytes: S) -> impl Stream<Item = Result<Vec<RawStreamEvent>, StreamError>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    bytes
        .scan(Framer::default(), |framer, item| future::ready(framer.step(item)))
        .flat_map(stream::iter)
        .filter(|item| future::ready(!matches!(item, Ok(events) if events.is_empty())))
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

/// The event stream's parsing state between chunks.
#[derive(Default)]
struct Framer {
    /// The start of a line the chunks so far did not end.
    partial: Vec<u8>,
    /// The last line ended with a CR at the end of its chunk: an LF opening the
    /// next chunk belongs to it.
    after_cr: bool,
    /// A line was seen (a BOM is skipped only before the first).
    started: bool,
    /// The event type buffer.
    event: String,
    /// The data buffer: each `data` line's value and an LF.
    data: String,
    done: bool,
}

impl Framer {
    /// The events `item` completes, then an error that ends the stream.
    fn step<E: std::fmt::Display>(&mut self, item: Result<Bytes, E>) -> Option<Vec<Result<Vec<RawStreamEvent>, StreamError>>> {
        if self.done {
            return None;
        }
        let mut events = Vec::new();
        let ended = match item {
            Ok(chunk) => self.feed(&chunk, &mut events).err(),
            Err(e) => Some(StreamError::Transport(e.to_string())),
        };
        let mut out = vec![Ok(events)];
        if let Some(e) = ended {
            self.done = true;
            out.push(Err(e));
        }
        Some(out)
    }

    fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<RawStreamEvent>) -> Result<(), StreamError> {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            chunk = chunk.strip_prefix(b"\n").unwrap_or(chunk);
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', chunk) {
            if self.partial.is_empty() {
                self.line(&chunk[..i], out);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..i]);
                self.line(&line, out);
                line.clear();
                self.partial = line;
            }
            let cr = chunk[i] == b'\r';
            chunk = &chunk[i + 1..];
            if cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.partial.extend_from_slice(chunk);
        if self.partial.len() > MAX_LINE {
            return Err(StreamError::LineTooLong { limit: MAX_LINE });
        }
        Ok(())
    }

    fn line(&mut self, mut line: &[u8], out: &mut Vec<RawStreamEvent>) {
        if !self.started {
            self.started = true;
            line = line.strip_prefix("\u{FEFF}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch(out);
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(0) => return, // a comment
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => self.event = text(value).into_owned(),
            b"data" => {
                let value = text(value);
                if self.data.is_empty() {
                    // At its final size: a status is a few KiB.
                    self.data.reserve_exact(value.len() + 1);
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<RawStreamEvent>) {
        let mut event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return;
        }
        data.pop(); // the last data line's LF
        if event.is_empty() {
            event = "message".into();
        }
        out.push(RawStreamEvent { event, data: Some(data) });
    }
}

/// A field value as text: invalid UTF-8 replaced (U+FFFD), as the spec's decoder does.
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests;
