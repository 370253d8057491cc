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
        let file = std::fs::File::open(&cfg.path).map_err(|e| {
            SourceError::new(ErrorKind::Config, format!("cannot open replay file {}: {e}", cfg.path.display()))
        })?;
        let mut lines = spawn_line_reader(file);
        let policy = ConsentPolicy { allow_unlisted: cfg.include_unlisted, owned: cfg.owned };
        let per_tick = cfg.rate.map(|r| (r / 100.0).max(0.0));
        let mut ticker = tokio::time::interval(Duration::from_millis(10));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut credit = 0.0f64;
        let mut pending: VecDeque<PendingAppend> = VecDeque::new();
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
                let line = match simdutf8::basic::from_utf8(&raw) {
                    Ok(l) => std::borrow::Cow::Borrowed(l),
                    Err(_) => std::borrow::Cow::Owned(format!("{INVALID_UTF8}{}", String::from_utf8_lossy(&raw))),
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

/// Lines of a file, read on a plain thread in chunks: a file read through tokio
/// costs a blocking-pool hop per buffer and a poll per line, which was the
/// largest single cost of a fast replay.
/// Lines come as bytes: the source validates them (SIMD) where it uses them.
struct LineReader {
    rx: tokio::sync::mpsc::Receiver<Vec<std::io::Result<Vec<u8>>>>,
    chunk: std::vec::IntoIter<std::io::Result<Vec<u8>>>,
}

impl LineReader {
    async fn next(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        loop {
            if let Some(l) = self.chunk.next() {
                return Some(l);
            }
            self.chunk = self.rx.recv().await?.into_iter();
        }
    }
}

fn spawn_line_reader(file: std::fs::File) -> LineReader {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        loop {
            let mut chunk = Vec::with_capacity(256);
            let mut end = false;
            while chunk.len() < 256 {
                let mut raw = Vec::new();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) => {
                        end = true;
                        break;
                    }
                    Ok(_) => {
                        if raw.last() == Some(&b'\n') {
                            raw.pop();
                            if raw.last() == Some(&b'\r') {
                                raw.pop();
                            }
                        }
                        chunk.push(Ok(raw));
                    }
                    Err(e) => {
                        chunk.push(Err(e));
                        end = true;
                        break;
                    }
                }
            }
            // The receiver is gone when the source stopped early: stop reading.
            if (!chunk.is_empty() && tx.blocking_send(chunk).is_err()) || end {
                return;
            }
        }
    });
    LineReader { rx, chunk: Vec::new().into_iter() }
}
