//! The `replay` source: reads JSON Lines — Mastodon Status objects, fedistream
//! events, or lines written by the file channel — and feeds them through the
//! pipeline, as fast as possible or paced at a given rate. For demos,
//! benchmarks and reprocessing archives. It is finite: a run whose sources are
//! all replays ends once every channel has drained.
//!
//! Status lines go through the same normalisation and consent policy as live
//! posts. A line that is not valid is counted and dead-lettered with its line
//! number; the replay goes on.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use fedistream_core::component::PendingAppend;
use fedistream_core::post::Via;
use fedistream_core::{ErrorKind, Event, Source, SourceBatch, SourceContext, SourceError};
use fedistream_process::consent::ConsentPolicy;
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplaySourceConfig {
    /// JSON Lines file to read.
    pub path: PathBuf,
    /// Events per second; absent = as fast as the pipeline takes them.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Host recorded as the provenance of Status lines.
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Take unlisted posts too (public only by default; private and direct never).
    #[serde(default)]
    pub include_unlisted: bool,
    /// The operator owns these accounts: ignore noindex / #nobot-style opt-outs.
    #[serde(default)]
    pub owned: bool,
}

fn default_instance() -> String {
    "replay".into()
}

pub struct ReplaySource {
    cfg: ReplaySourceConfig,
}

impl ReplaySource {
    pub fn new(cfg: ReplaySourceConfig) -> Self {
        ReplaySource { cfg }
    }
}

const BATCH: usize = 1000;
const IN_FLIGHT: usize = 4;

/// Marks a line that was not valid UTF-8 (its text follows, with replacement characters).
const INVALID_UTF8: &str = "\u{0}invalid-utf8\u{0}";

/// Turn one input line into an event, or say why not (`Ok(None)`: skipped by policy).
fn line_to_event(
    line: &str,
    source: &str,
    cfg: &ReplaySourceConfig,
    policy: &ConsentPolicy,
) -> Result<Result<Event, &'static str>, String> {
    if let Some(rest) = line.strip_prefix(INVALID_UTF8) {
        return Err(format!("not valid UTF-8 (shown with replacement characters): {}", rest.chars().take(80).collect::<String>()));
    }
    let t = line.trim_start();
    let as_event = |t: &str| -> Result<Event, serde_json::Error> {
        let mut ev: Event = serde_json::from_str(t)?;
        ev.source = source.to_string();
        Ok(ev)
    };
    // Fast path for what fedistream itself writes; key order can differ in
    // archives that went through other tools, hence the fallback below.
    if t.starts_with("{\"kind\"") || t.starts_with("{\"partition\"") {
        return as_event(t).map(Ok).map_err(|e| format!("not a fedistream event: {e}"));
    }
    let ctx = NormalizeContext { instance: &cfg.instance, via: Via::Replay, received_at: Utc::now() };
    let post = match parse_and_normalize(t, &ctx) {
        Ok(p) => p,
        Err(status_err) => {
            return match as_event(t) {
                Ok(ev) => Ok(Ok(ev)),
                Err(_) => Err(format!("not a Mastodon status or fedistream event: {status_err}")),
            }
        }
    };
    if let Err(reason) = policy.check(&post) {
        return Ok(Err(reason.as_str()));
    }
    Ok(Ok(Event::created(source, post)))
}

#[async_trait]
impl Source for ReplaySource {
    fn is_finite(&self) -> bool {
        true
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let cfg = self.cfg;
        let file = std::fs::File::open(&cfg.path)
            .map_err(|e| SourceError::new(ErrorKind::Config, format!("cannot open replay file {}: {e}", cfg.path.display())))?;
        let mut lines = spawn_line_reader(file);
        let policy = ConsentPolicy { allow_unlisted: cfg.include_unlisted, owned: cfg.owned };
        let per_tick = cfg.rate.map(|r| (r / 100.0).max(0.0));
        let mut ticker = tokio::time::interval(Duration::from_millis(10));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut credit = 0.0f64;
        let mut pending: VecDeque<PendingAppend> = VecDeque::new();
        let owner: std::sync::Arc<str> = ctx.name.as_str().into();
        let mut line_no = 0u64;
        let mut done = false;
        while !done && !ctx.shutdown.is_cancelled() {
            let want = match per_tick {
                Some(pt) => {
                    ticker.tick().await;
                    credit += pt;
                    let n = credit.floor() as usize;
                    credit -= n as f64;
                    if n == 0 {
                        continue;
                    }
                    n.min(BATCH)
                }
                None => BATCH,
            };
            let mut batch = SourceBatch { events: Vec::with_capacity(want), state: Vec::new() };
            while batch.events.len() < want {
                let raw = match lines.next().await {
                    Some(Ok(l)) => l,
                    None => {
                        done = true;
                        break;
                    }
                    Some(Err(e)) => {
                        return Err(SourceError::new(
                            ErrorKind::Permanent,
                            format!("cannot read {} after line {line_no}: {e}", cfg.path.display()),
                        ))
                    }
                };
                line_no += 1;
                // Invalid UTF-8 stays a line of its own: it is dead-lettered like
                // any other invalid line, and the replay goes on.
                let line = match simdutf8::basic::from_utf8(raw) {
                    Ok(l) => std::borrow::Cow::Borrowed(l),
                    Err(_) => std::borrow::Cow::Owned(format!("{INVALID_UTF8}{}", String::from_utf8_lossy(raw))),
                };
                if line.trim().is_empty() {
                    continue;
                }
                match line_to_event(&line, &ctx.name, &cfg, &policy) {
                    Ok(Ok(ev)) => batch.push(ev),
                    Ok(Err(reason)) => {
                        ctx.status.count(&format!("skipped_{reason}"), 1);
                        metrics::counter!("fedistream_posts_skipped_total", "component" => "replay", "reason" => reason).increment(1);
                    }
                    Err(reason) => {
                        let reason = format!("{}:{line_no}: {reason}", cfg.path.display());
                        tracing::warn!(%reason, "Invalid replay line; dead-lettered");
                        ctx.status.count("malformed", 1);
                        if let Err(e) = ctx.dead_letter.raw(&ctx.name, &reason, &line) {
                            return Err(SourceError::new(
                                ErrorKind::Internal,
                                format!("cannot write the dead-letter file {}: {e}", ctx.dead_letter.path().display()),
                            ));
                        }
                    }
                }
            }
            if batch.events.is_empty() {
                continue;
            }
            ctx.status.count("read", batch.events.len() as u64);
            ctx.status.saw_event();
            // The source is one unit of ingest work: its dedup entries move with it.
            batch.set_owner(&owner);
            pending.push_back(ctx.emitter.send(batch).await?);
            while pending.len() >= IN_FLIGHT {
                if let Some(p) = pending.pop_front() {
                    p.wait().await?;
                }
            }
        }
        for p in pending {
            p.wait().await?;
        }
        tracing::info!(lines = line_no, path = %cfg.path.display(), "Replay finished");
        Ok(())
    }
}

/// Lines of a file, read on a plain thread in blocks of about a megabyte: a file
/// read through tokio costs a blocking-pool hop per buffer and a poll per line,
/// and a `Vec` per line cost an allocation (and several regrowths) per status.
/// Each block holds whole lines; the source borrows them (as bytes: it validates
/// UTF-8 itself, with SIMD, where it uses them).
struct LineReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Block>>,
    block: Block,
    next: usize,
}

/// Whole lines of the file and where each one is (without its `\n` or `\r\n`).
#[derive(Default)]
struct Block {
    data: Vec<u8>,
    lines: Vec<(usize, usize)>,
}

const BLOCK_BYTES: usize = 1 << 20;

impl LineReader {
    async fn next(&mut self) -> Option<std::io::Result<&[u8]>> {
        while self.next == self.block.lines.len() {
            match self.rx.recv().await? {
                Ok(block) => {
                    self.block = block;
                    self.next = 0;
                }
                Err(e) => return Some(Err(e)),
            }
        }
        let (start, end) = self.block.lines[self.next];
        self.next += 1;
        Some(Ok(&self.block.data[start..end]))
    }
}

fn spawn_line_reader(mut file: std::fs::File) -> LineReader {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        // The start of a line the last block did not finish.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let mut data = Vec::with_capacity(BLOCK_BYTES.max(2 * carry.len()));
            data.append(&mut carry);
            let mut eof = false;
            // Read at least half a block that ends a line (a longer line makes the block grow).
            loop {
                let before = data.len();
                let want = (data.capacity() - data.len()).max(BLOCK_BYTES / 4) as u64;
                if let Err(e) = (&mut file).take(want).read_to_end(&mut data) {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
                if data.len() == before {
                    eof = true;
                    break;
                }
                if data.len() >= BLOCK_BYTES / 2 && memchr::memrchr(b'\n', &data[before..]).is_some() {
                    break;
                }
            }
            let whole = match memchr::memrchr(b'\n', &data) {
                _ if eof => data.len(),
                Some(nl) => nl + 1,
                None => data.len(),
            };
            carry.extend_from_slice(&data[whole..]);
            data.truncate(whole);
            let mut lines = Vec::with_capacity(data.len() / 2048 + 1);
            let mut start = 0;
            // The last line of a file may lack its newline.
            let unterminated = (!data.is_empty() && !data.ends_with(b"\n")).then_some(data.len());
            for nl in memchr::memchr_iter(b'\n', &data).chain(unterminated) {
                let mut end = nl;
                if nl < data.len() && end > start && data[end - 1] == b'\r' {
                    end -= 1;
                }
                lines.push((start, end));
                start = nl + 1;
            }
            // The receiver is gone when the source stopped early: stop reading.
            if (!lines.is_empty() && tx.blocking_send(Ok(Block { data, lines })).is_err()) || eof {
                return;
            }
        }
    });
    LineReader { rx, block: Block::default(), next: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn read_all(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        let mut r = spawn_line_reader(f);
        let mut out = Vec::new();
        while let Some(l) = r.next().await {
            out.push(l.unwrap().to_vec());
        }
        out
    }

    /// What `BufRead::read_until` gives, with the newline (and a `\r` before it) cut.
    fn expected(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let mut l = piece.to_vec();
            if l.last() == Some(&b'\n') {
                l.pop();
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
            }
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn lines_across_blocks_long_lines_crlf_and_an_unterminated_end() {
        let mut input = Vec::new();
        let mut n = 0u64;
        // Enough lines of varied length to cross several block boundaries.
        while input.len() < 3 * BLOCK_BYTES {
            n += 1;
            let len = (n * 7919) % 9000;
            input.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, len as usize));
            input.extend_from_slice(if n.is_multiple_of(5) { b"\r\n" } else { b"\n" });
        }
        // A line longer than a block, an empty line, a lone \r, invalid UTF-8.
        input.extend(std::iter::repeat_n(b'z', BLOCK_BYTES * 2 + 17));
        input.extend_from_slice(b"\n\n\r\n\xff\xfe\n");
        input.extend_from_slice(b"last line without newline\r");
        let got = read_all(&input).await;
        let want = expected(&input);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "lines differ");
        assert_eq!(got.last().unwrap(), b"last line without newline\r");
    }

    #[tokio::test]
    async fn empty_and_single_line_files() {
        assert!(read_all(b"").await.is_empty());
        assert_eq!(read_all(b"one").await, vec![b"one".to_vec()]);
        assert_eq!(read_all(b"one\n").await, vec![b"one".to_vec()]);
        assert_eq!(read_all(b"\n").await, vec![Vec::<u8>::new()]);
    }
}
