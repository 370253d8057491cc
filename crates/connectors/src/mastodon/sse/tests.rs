use futures::executor::block_on;
use futures::{stream, Stream};
use proptest::prelude::*;

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture")
}

/// Decode `chunks` and collect everything, errors included.
fn decode(chunks: Vec<Vec<u8>>) -> Vec<Result<RawStreamEvent, StreamError>> {
    let s = stream::iter(chunks.into_iter().map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c))));
    flat(sse_events(s))
}

/// One item per event, in order, then the error if any.
fn flat(s: impl Stream<Item = Result<Vec<RawStreamEvent>, StreamError>>) -> Vec<Result<RawStreamEvent, StreamError>> {
    let batches = block_on(s.collect::<Vec<_>>());
    assert!(!batches.iter().any(|b| matches!(b, Ok(events) if events.is_empty())), "an empty batch");
    batches
        .into_iter()
        .flat_map(|b| match b {
            Ok(events) => events.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
        .collect()
}

fn events(chunks: Vec<Vec<u8>>) -> Vec<RawStreamEvent> {
    decode(chunks).into_iter().map(|r| r.expect("no error")).collect()
}

fn ev(event: &str, data: &str) -> RawStreamEvent {
    RawStreamEvent { event: event.into(), data: Some(data.into()) }
}

/// An oracle independent of the parser: Mastodon writes exactly one `event:`
/// and one `data:` line per event, and the fixtures have no multi-line data.
fn expected_from_lines(text: &[u8]) -> Vec<RawStreamEvent> {
    let text = std::str::from_utf8(text).unwrap();
    let names = text.lines().filter_map(|l| l.strip_prefix("event: "));
    let datas = text.lines().filter_map(|l| l.strip_prefix("data: "));
    names.zip(datas).map(|(n, d)| ev(n, d)).collect()
}

#[test]
fn assembled_fixture_whole() {
    let body = fixture("sse_user_stream_assembled.txt");
    let got = events(vec![body.clone()]);
    let names: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "update",
            "notification",
            "status.update",
            "filters_changed",
            "announcement",
            "announcement.reaction",
            "announcement.delete",
            "delete"
        ]
    );
    assert_eq!(got, expected_from_lines(&body));
    assert_eq!(got[3], ev("filters_changed", "undefined"));
    assert_eq!(got[7], ev("delete", "108914327388663283"));
    assert!(got[0].data.as_deref().unwrap().starts_with("{\"id\":\"108914327388663283\""));
}

#[test]
fn recorded_fixture_whole_drops_the_cut_off_tail() {
    let body = fixture("sse_user_stream_recorded.txt");
    assert!(body.ends_with(b"\n\n:"), "fixture ends with a lone ':'");
    let got = events(vec![body.clone()]);
    let names: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["update", "notification", "update", "notification", "status.update", "delete"]);
    assert_eq!(got, expected_from_lines(&body));
}

fn check_every_split(name: &str) {
    let body = fixture(name);
    let whole = events(vec![body.clone()]);
    assert!(!whole.is_empty());
    for i in 0..=body.len() {
        let got = events(vec![body[..i].to_vec(), body[i..].to_vec()]);
        assert_eq!(got, whole, "{name} split at byte {i}");
    }
    // And one byte at a time (splits every multi-byte character too).
    let bytes: Vec<Vec<u8>> = body.iter().map(|b| vec![*b]).collect();
    assert_eq!(events(bytes), whole, "{name} byte by byte");
}

#[test]
fn assembled_fixture_split_at_every_byte() {
    check_every_split("sse_user_stream_assembled.txt");
}

#[test]
fn recorded_fixture_split_at_every_byte() {
    check_every_split("sse_user_stream_recorded.txt");
}

#[test]
fn both_heartbeat_framings_and_comment_only_blocks_yield_nothing() {
    let old = b":)\n:thump\nevent: delete\ndata: 1\n\n:thump\n:thump\nevent: delete\ndata: 2\n\n".to_vec();
    assert_eq!(events(vec![old]), [ev("delete", "1"), ev("delete", "2")]);
    let new = b":)\n\n:thump\n\n:thump\n\nevent: delete\ndata: 1\n\n:thump\n\n".to_vec();
    assert_eq!(events(vec![new]), [ev("delete", "1")]);
    // Only comments, in every arrangement, and a bare ':'.
    assert!(events(vec![b":)\n".to_vec()]).is_empty());
    assert!(events(vec![b":)\n\n:thump\n\n\n\n:\n\n:thump\n".to_vec()]).is_empty());
    // A heartbeat between the event and data lines does not split the event.
    assert_eq!(events(vec![b"event: delete\n:thump\ndata: 3\n\n".to_vec()]), [ev("delete", "3")]);
}

#[test]
fn unterminated_trailing_events_are_dropped() {
    assert!(events(vec![b"event: delete\ndata: 1".to_vec()]).is_empty());
    assert!(events(vec![b"event: delete\ndata: 1\n".to_vec()]).is_empty());
    assert_eq!(events(vec![b"event: delete\ndata: 1\n\nevent: delete\ndata: 2\n".to_vec()]), [ev("delete", "1")]);
}

#[test]
fn spec_details() {
    // Several data lines are joined with '\n'; CRLF works; no space after ':'.
    let body = b"event: update\ndata: {\"a\":\ndata: 1}\n\nevent:delete\r\ndata:9\r\n\r\n".to_vec();
    assert_eq!(events(vec![body]), [ev("update", "{\"a\":\n1}"), ev("delete", "9")]);
    // An event without `event:` is a "message"; event without data is dropped.
    assert_eq!(events(vec![b"data: x\n\nevent: filters_changed\n\n".to_vec()]), [ev("message", "x")]);
}

#[test]
fn utf8_split_inside_a_character_and_invalid_bytes() {
    let text = "event: update\ndata: 🎉é\n\n".as_bytes().to_vec();
    let cut = text.iter().position(|b| *b == 0xF0).unwrap() + 2;
    assert_eq!(events(vec![text[..cut].to_vec(), text[cut..].to_vec()]), [ev("update", "🎉é")]);
    let bad = b"event: update\ndata: a\xFFb\xE2\x82\n\nevent: delete\ndata: 1\n\n".to_vec();
    assert_eq!(events(vec![bad]), [ev("update", "a\u{FFFD}b\u{FFFD}"), ev("delete", "1")]);
}

#[test]
fn transport_errors_end_the_stream() {
    let chunks: Vec<Result<Bytes, &str>> = vec![
        Ok(Bytes::from_static(b"event: delete\ndata: 1\n\n")),
        Err("reset by peer"),
        Ok(Bytes::from_static(b"event: delete\ndata: 2\n\n")),
    ];
    let got = flat(sse_events(stream::iter(chunks)));
    assert_eq!(got, [Ok(ev("delete", "1")), Err(StreamError::Transport("reset by peer".into()))]);
}

#[test]
fn an_endless_line_is_refused() {
    let chunk = vec![b'x'; 1024 * 1024];
    let mut chunks = vec![b"event: update\ndata: ".to_vec()];
    chunks.extend(std::iter::repeat_n(chunk, 5));
    let got = decode(chunks);
    assert_eq!(got, [Err(StreamError::LineTooLong { limit: MAX_LINE })]);
}

#[test]
fn the_chunk_callback_sees_every_byte() {
    let body = fixture("sse_user_stream_assembled.txt");
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = body.chunks(100).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let mut seen = 0;
    let mut calls = 0;
    let n = flat(sse_events(on_each_chunk(stream::iter(chunks), |len| {
        seen += len;
        calls += 1;
    })))
    .len();
    assert_eq!((n, seen, calls), (8, body.len(), body.len().div_ceil(100)));
}

#[test]
fn each_chunk_yields_the_events_it_completes_at_once() {
    let body = fixture("sse_user_stream_assembled.txt");
    let whole = block_on(sse_events(stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(body.clone()))])).collect::<Vec<_>>());
    assert_eq!(whole.len(), 1, "one chunk, one batch");
    assert_eq!(whole[0].as_ref().unwrap().len(), 8);
    // Two events in the first chunk, the rest (and the end of the third) in the second.
    let text = b"event: delete\ndata: 1\n\nevent: delete\ndata: 2\n\nevent: delete\nda".to_vec();
    let rest = b"ta: 3\n\n:thump\n".to_vec();
    let s = stream::iter([text, rest, b":thump\n".to_vec()].map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c))));
    let batches: Vec<_> = block_on(sse_events(s).collect::<Vec<_>>()).into_iter().map(Result::unwrap).collect();
    assert_eq!(batches, [vec![ev("delete", "1"), ev("delete", "2")], vec![ev("delete", "3")]]);
}

#[test]
fn carriage_returns_end_lines_across_chunks() {
    // CRLF split between chunks is one line end, not two (which would end the event early).
    let chunks = vec![b"event: delete\r".to_vec(), b"\ndata: 1\r".to_vec(), b"\n\r".to_vec(), b"\n".to_vec()];
    assert_eq!(events(chunks), [ev("delete", "1")]);
    // A lone CR ends a line too.
    assert_eq!(events(vec![b"event: delete\rdata: 2\r\r".to_vec(), b"event: delete\r".to_vec()]), [ev("delete", "2")]);
    // A BOM at the start is skipped, later ones are text.
    assert_eq!(events(vec!["\u{FEFF}event: delete\ndata: \u{FEFF}\n\n".as_bytes().to_vec()]), [ev("delete", "\u{FEFF}")]);
}

/// What eventsource-stream (the crate this module's framing replaced) makes of
/// `chunks`, after the same UTF-8 repair.
fn oracle(chunks: &[Vec<u8>]) -> Vec<RawStreamEvent> {
    use eventsource_stream::Eventsource;
    let text = String::from_utf8_lossy(&chunks.concat()).into_owned();
    // Cut where the bytes were cut, as far as the text allows.
    let mut parts = Vec::new();
    let mut from = 0;
    let mut at = 0;
    for c in chunks {
        at += c.len();
        if at <= text.len() && text.is_char_boundary(at) && at > from {
            parts.push(Ok::<_, std::convert::Infallible>(Bytes::from(text[from..at].to_string())));
            from = at;
        }
    }
    if from < text.len() {
        parts.push(Ok(Bytes::from(text[from..].to_string())));
    }
    let got = block_on(stream::iter(parts).eventsource().collect::<Vec<_>>());
    got.into_iter().map(|e| e.map(|e| RawStreamEvent { event: e.event, data: Some(e.data) }).expect("valid UTF-8 parses")).collect()
}

proptest! {
    #[test]
    fn arbitrary_chunks_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)) {
        let _ = decode(chunks);
    }

    #[test]
    fn sse_like_noise_never_panics(chunks in proptest::collection::vec("(event: |data: |:|\r|\n|\n\n|[a-z{}\"]{0,5}|é|🎉)*", 0..16)) {
        let _ = decode(chunks.into_iter().map(String::into_bytes).collect());
    }

    /// The same events as eventsource-stream for SSE-like text cut anywhere
    /// (without a BOM: eventsource-stream panics on one at the start, slicing
    /// inside it).
    /// A final LF: a CR at the very end is a line end to the spec (and here),
    /// while eventsource-stream waits for the byte after it, which never comes.
    #[test]
    fn the_same_events_as_eventsource_stream(chunks in proptest::collection::vec("(event: |event:|data: |data:|data|id: 1|retry: 5|: c|:|\r|\n|\r\n|\n\n|[a-z{}\" ]{0,5}|é|🎉)*", 0..16)) {
        let mut chunks: Vec<Vec<u8>> = chunks.into_iter().map(String::into_bytes).collect();
        chunks.push(b"\n".to_vec());
        prop_assert_eq!(events(chunks.clone()), oracle(&chunks));
    }

    #[test]
    fn any_chunking_of_the_fixture_gives_the_same_events(mut cuts in proptest::collection::vec(0usize..7006, 0..12)) {
        let body = fixture("sse_user_stream_assembled.txt");
        cuts.iter_mut().for_each(|c| *c = (*c).min(body.len()));
        cuts.sort_unstable();
        let mut chunks = vec![];
        let mut from = 0;
        for c in cuts {
            chunks.push(body[from..c].to_vec());
            from = c;
        }
        chunks.push(body[from..].to_vec());
        prop_assert_eq!(events(chunks), expected_from_lines(&body));
    }
}
