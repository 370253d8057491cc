//! One task per channel: a consumer group on one topic of the log, a route
//! filter, batching (up to `max_batch` records or `max_batch_bytes`, or until
//! `linger` passes), the sink's writes with retries and dead letters, and
//! offset commits — only up to records that are delivered or dead-lettered,
//! in log order, however late a sink acknowledges them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::supervise::{wait_after_error, Halt, Supervisor};
use super::{max_positions, ChannelSpec};
use crate::backoff::Backoff;
use crate::component::{AckMsg, Acker, DeadLetter, SinkContext, Status, Written};
use crate::error::{ComponentError, ErrorKind, LogError};
use crate::event::{LogRecord, Position};
use crate::log::{Consumer, Log, StatePut};

/// Run a channel until its input is drained or it is stopped, restarting it
/// (new consumer, sink reopened) after retryable failures of the log.
pub(super) async fn channel_task(
    log: Arc<dyn Log>,
    mut ch: ChannelSpec,
    status: Status,
    mut halt: Halt,
    worker: String,
) -> Result<(), ComponentError> {
    let mut sup = Supervisor::new(&status, &ch.retry);
    loop {
        let r = run_channel(&log, &mut ch, &status, &mut halt, &worker).await;
        if let Some(end) = sup.after(r, &mut halt).await {
            return end;
        }
    }
}

/// A batch handed to the sink and not committed yet.
struct Unacked {
    /// The last position per partition of the batch as read (filtered records included).
    upto: Vec<Position>,
    /// Per partition, the last record the sink still has to acknowledge
    /// (empty once it is delivered).
    needs: HashMap<u32, u64>,
    state: Vec<StatePut>,
    /// The records the sink holds, for dead-lettering what it rejects later.
    records: Vec<LogRecord>,
    delivered: u64,
}

/// Commits in log order: the oldest batches whose records are all delivered.
#[derive(Default)]
struct Ledger {
    batches: VecDeque<Unacked>,
    /// What the sink acknowledged as durable, per partition.
    durable: HashMap<u32, u64>,
    /// State acknowledged with durability, committed with the next offset.
    state: Vec<StatePut>,
    /// The channel's name (the commit-time gauge's label).
    channel: String,
}

impl Ledger {
    fn is_done(&self, b: &Unacked) -> bool {
        b.needs.iter().all(|(p, o)| self.durable.get(p).is_some_and(|d| d >= o))
    }

    /// Commit what is ready; returns how many records that covered.
    async fn commit_ready(&mut self, consumer: &mut Box<dyn Consumer>) -> Result<u64, LogError> {
        let mut upto: HashMap<u32, u64> = HashMap::new();
        let mut state = Vec::new();
        let mut delivered = 0;
        while self.batches.front().is_some_and(|b| self.is_done(b)) {
            let b = self.batches.pop_front().expect("checked");
            for p in b.upto {
                let e = upto.entry(p.partition).or_insert(p.offset);
                *e = (*e).max(p.offset);
            }
            state.extend(b.state);
            delivered += b.delivered;
        }
        if upto.is_empty() {
            return Ok(0);
        }
        state.append(&mut self.state);
        let upto: Vec<Position> = upto.into_iter().map(|(partition, offset)| Position { partition, offset }).collect();
        consumer.commit(&upto, state).await?;
        // `time() - fedistream_channel_last_commit_timestamp_seconds` is the commit age.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("fedistream_channel_last_commit_timestamp_seconds", "name" => self.channel.clone()).set(now);
        Ok(delivered)
    }

    fn record_at(&self, position: Position) -> Option<&LogRecord> {
        self.batches.iter().flat_map(|b| b.records.iter()).find(|r| r.position == position)
    }
}

fn component(ch: &ChannelSpec) -> String {
    format!("channel:{}", ch.name)
}

async fn run_channel(
    log: &Arc<dyn Log>,
    ch: &mut ChannelSpec,
    status: &Status,
    halt: &mut Halt,
    worker: &str,
) -> Result<(), ComponentError> {
    let name = component(ch);
    let fail = |e: LogError| ComponentError::new(name.clone(), e.kind(), e.to_string());
    let mut consumer = log.consumer(&ch.topic, &ch.group).await.map_err(fail)?;
    let (acks, mut ack_rx) = Acker::new();
    let ctx = SinkContext {
        name: ch.name.clone(),
        topic: ch.topic.clone(),
        worker: worker.to_string(),
        log: log.clone(),
        status: status.clone(),
        acks,
    };
    let mut backoff = Backoff::new(ch.retry.initial, ch.retry.max);
    // Open the sink, pausing on auth/config errors like a write would; the
    // hard stop interrupts an open that hangs (an unreachable service).
    loop {
        let opened = tokio::select! {
            r = ch.sink.open(&ctx) => r,
            _ = halt.stop.cancelled() => {
                status.set_state("stopped", Some("drain deadline reached before the channel opened".into()));
                return Ok(());
            }
        };
        match opened {
            Ok(()) => break,
            Err(e) => {
                if !wait_after_error(ch.retry.pause, status, &e, &mut backoff, halt).await {
                    status.set_state("stopped", Some(format!("stopped while paused: {}", e.message)));
                    return Ok(());
                }
            }
        }
    }
    backoff.reset();
    status.set_state("running", None);
    info!(group = %ch.group, topic = %ch.topic, "Channel started");

    let mut ledger = Ledger { channel: ch.name.clone(), ..Ledger::default() };
    let mut buffer: Vec<LogRecord> = Vec::new();
    let mut buffered_bytes = 0usize;
    let mut linger_until: Option<Instant> = None;
    let tick_every = ch.sink.tick_interval();
    let mut next_tick = tick_every.map(|d| Instant::now() + d);
    let mut input_done = false;
    loop {
        if halt.stop.is_cancelled() {
            return stopped(status);
        }
        let full = buffer.len() >= ch.batch.max_records || buffered_bytes >= ch.batch.max_bytes;
        let lingered = ch.batch.linger.is_zero() || linger_until.is_some_and(|d| Instant::now() >= d);
        if !buffer.is_empty() && (full || lingered || input_done) {
            let recs = std::mem::take(&mut buffer);
            buffered_bytes = 0;
            linger_until = None;
            if !deliver_batch(ch, status, &mut ledger, recs, &mut backoff, halt).await {
                return stopped(status);
            }
            let n = ledger.commit_ready(&mut consumer).await.map_err(fail)?;
            counted(status, n);
            continue;
        }
        if input_done {
            return drain(ch, status, &mut consumer, &mut ledger, &mut ack_rx, &mut backoff, halt).await.map_err(fail);
        }
        let draining = halt.draining();
        // Once the input can no longer grow, lingering for more is pointless.
        let wait = match linger_until {
            _ if draining => Duration::ZERO,
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(250),
        };
        let room = ch.batch.max_records - buffer.len();
        let stop = halt.stop.clone();
        tokio::select! {
            biased;
            _ = stop.cancelled() => return stopped(status),
            r = halt.draining.changed(), if !draining => {
                if r.is_err() {
                    halt.closed = true;
                }
            }
            Some(msg) = ack_rx.recv() => {
                if !on_ack(&DeadLetterTo::of(ch), status, &mut ledger, msg, &mut backoff, halt).await {
                    return stopped(status);
                }
                let n = ledger.commit_ready(&mut consumer).await.map_err(fail)?;
                counted(status, n);
            }
            _ = sleep_until_opt(next_tick) => {
                next_tick = tick_every.map(|d| Instant::now() + d);
                if let Err(e) = ch.sink.tick().await {
                    if !wait_after_error(ch.retry.pause, status, &e, &mut backoff, halt).await {
                        return stopped(status);
                    }
                }
            }
            r = consumer.poll(room, wait) => {
                let recs = r.map_err(fail)?;
                if let Some(parts) = consumer.take_assignment() {
                    // Before the first records of newly owned partitions.
                    loop {
                        match ch.sink.partitions_assigned(&parts).await {
                            Ok(()) => break,
                            Err(e) => {
                                if !wait_after_error(ch.retry.pause, status, &e, &mut backoff, halt).await {
                                    return stopped(status);
                                }
                            }
                        }
                    }
                }
                if recs.is_empty() {
                    if draining {
                        input_done = true;
                    }
                    continue;
                }
                if buffer.is_empty() {
                    linger_until = Some(Instant::now() + ch.batch.linger);
                }
                buffered_bytes += recs.iter().map(|r| r.payload.len()).sum::<usize>();
                buffer.extend(recs);
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Marks the channel stopped at the drain deadline; its task ends without error.
fn stopped<E>(status: &Status) -> Result<(), E> {
    status.set_state("stopped", Some("drain deadline".into()));
    Ok(())
}

fn counted(status: &Status, delivered: u64) {
    if delivered > 0 {
        status.count("delivered", delivered);
        status.saw_event();
    }
}

/// The input is drained: make the sink durable, wait for its acknowledgements,
/// commit, close.
async fn drain(
    ch: &mut ChannelSpec,
    status: &Status,
    consumer: &mut Box<dyn Consumer>,
    ledger: &mut Ledger,
    ack_rx: &mut mpsc::UnboundedReceiver<AckMsg>,
    backoff: &mut Backoff,
    halt: &mut Halt,
) -> Result<(), LogError> {
    loop {
        let flushed = tokio::select! {
            r = ch.sink.flush() => r,
            _ = halt.stop.cancelled() => return stopped(status),
        };
        match flushed {
            Ok(()) => break,
            Err(e) => {
                if !wait_after_error(ch.retry.pause, status, &e, backoff, halt).await {
                    return stopped(status);
                }
            }
        }
    }
    loop {
        counted(status, ledger.commit_ready(consumer).await?);
        if ledger.batches.is_empty() {
            break;
        }
        tokio::select! {
            Some(msg) = ack_rx.recv() => {
                if !on_ack(&DeadLetterTo::of(ch), status, ledger, msg, backoff, halt).await {
                    return stopped(status);
                }
            }
            _ = halt.stop.cancelled() => {
                warn!(unacknowledged = ledger.batches.len(), "Drain deadline: the sink did not acknowledge everything; it is delivered again on the next start");
                return stopped(status);
            }
        }
    }
    if let Err(e) = ch.sink.close().await {
        warn!(error = %e, "Channel close failed");
    }
    status.set_state("stopped", None);
    Ok(())
}

/// A sink's late acknowledgement or refusal.
async fn on_ack(ch: &DeadLetterTo<'_>, status: &Status, ledger: &mut Ledger, msg: AckMsg, backoff: &mut Backoff, halt: &mut Halt) -> bool {
    match msg {
        AckMsg::Durable { upto, mut state } => {
            for p in upto {
                let e = ledger.durable.entry(p.partition).or_insert(p.offset);
                *e = (*e).max(p.offset);
            }
            ledger.state.append(&mut state);
            true
        }
        AckMsg::Reject { position, reason } => match ledger.record_at(position).cloned() {
            Some(rec) => dead_letter(ch, status, &rec, &reason, backoff, halt).await,
            None => {
                error!(?position, "A sink rejected a record it was not given; ignored");
                true
            }
        },
    }
}

/// Route, split by bytes, write; returns false when stopped before the batch
/// was handed over (nothing of it is committed then).
async fn deliver_batch(
    ch: &mut ChannelSpec,
    status: &Status,
    ledger: &mut Ledger,
    recs: Vec<LogRecord>,
    backoff: &mut Backoff,
    halt: &mut Halt,
) -> bool {
    // The last position of every partition in the batch (a distributed log
    // hands out several partitions at once).
    let upto: Vec<Position> =
        max_positions(recs.iter().map(|r| r.position)).into_iter().map(|(partition, offset)| Position { partition, offset }).collect();
    let total = recs.len() as u64;
    let selected: Vec<LogRecord> = match &ch.route {
        None => recs,
        Some(route) => {
            let mut keep = Vec::with_capacity(recs.len());
            for r in recs {
                match r.event() {
                    Ok(ev) => {
                        if route(ev) {
                            keep.push(r)
                        }
                    }
                    Err(e) => {
                        error!(offset = r.position.offset, error = %e, "Undecodable record in the log; dead-lettered");
                        if !dead_letter(&DeadLetterTo::of(ch), status, &r, &e.to_string(), backoff, halt).await {
                            return false;
                        }
                    }
                }
            }
            keep
        }
    };
    status.count("filtered", total - selected.len() as u64);
    let mut entry = Unacked { upto, needs: HashMap::new(), state: Vec::new(), records: Vec::new(), delivered: 0 };
    let mut start = 0;
    while start < selected.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < selected.len() && (end == start || bytes + selected[end].payload.len() <= ch.batch.max_bytes) {
            bytes += selected[end].payload.len();
            end += 1;
        }
        let chunk = &selected[start..end];
        match deliver(ch, status, chunk, backoff, halt).await {
            None => return false,
            Some(Written::Done(state)) => entry.state.extend(state),
            Some(Written::Pending) => {
                for (p, o) in max_positions(chunk.iter().map(|r| r.position)) {
                    let e = entry.needs.entry(p).or_insert(o);
                    *e = (*e).max(o);
                }
                entry.records.extend_from_slice(chunk);
            }
        }
        start = end;
    }
    entry.delivered = selected.len() as u64;
    ledger.batches.push_back(entry);
    true
}

/// Write one batch, retrying and dead-lettering as the error kinds say. `None`
/// when stopped before the batch was handled. A permanent error with an index
/// means the records before it were delivered.
async fn deliver(ch: &mut ChannelSpec, status: &Status, batch: &[LogRecord], backoff: &mut Backoff, halt: &mut Halt) -> Option<Written> {
    let mut rest = batch;
    let mut state = Vec::new();
    while !rest.is_empty() {
        let res = tokio::select! {
            r = ch.sink.write(rest) => r,
            _ = halt.stop.cancelled() => return None,
        };
        match res {
            Ok(written) => {
                backoff.reset();
                if status.state() != "running" {
                    status.set_state("running", None);
                    status.set_resumes_at(None);
                }
                debug!(records = rest.len(), "Batch written");
                return Some(match written {
                    Written::Done(s) => {
                        state.extend(s);
                        Written::Done(state)
                    }
                    Written::Pending => Written::Pending,
                });
            }
            Err(e) if e.kind == ErrorKind::Permanent => {
                let idx = e.failed_index.unwrap_or(0).min(rest.len() - 1);
                let whole = e.failed_index.is_none();
                let bad = if whole { rest } else { &rest[idx..=idx] };
                for rec in bad {
                    warn!(offset = rec.position.offset, reason = %e.message, "Event rejected; dead-lettered");
                    if !dead_letter(&DeadLetterTo::of(ch), status, rec, &e.message, backoff, halt).await {
                        return None;
                    }
                }
                rest = if whole { &[] } else { &rest[idx + 1..] };
            }
            Err(e) => {
                if !wait_after_error(ch.retry.pause, status, &e, backoff, halt).await {
                    return None;
                }
            }
        }
    }
    Some(Written::Done(state))
}

/// Where a channel's dead letters go (what of the channel is shared across awaits).
struct DeadLetterTo<'a> {
    name: &'a str,
    dead_letter: &'a DeadLetter,
}

impl<'a> DeadLetterTo<'a> {
    fn of(ch: &'a ChannelSpec) -> Self {
        DeadLetterTo { name: &ch.name, dead_letter: &ch.dead_letter }
    }
}

/// Dead-letter one record, retrying until the file takes it: a record is never
/// committed unless it was delivered or dead-lettered. False when stopped
/// first (the record stays uncommitted and comes back on the next start).
async fn dead_letter(
    ch: &DeadLetterTo<'_>,
    status: &Status,
    rec: &LogRecord,
    reason: &str,
    backoff: &mut Backoff,
    halt: &mut Halt,
) -> bool {
    loop {
        match ch.dead_letter.record(ch.name, reason, rec) {
            Ok(()) => {
                status.count("dead_lettered", 1);
                metrics::counter!("fedistream_events_dead_lettered_total", "component" => "channel").increment(1);
                return true;
            }
            Err(io) => {
                let delay = backoff.next_delay();
                error!(
                    error = %io,
                    path = %ch.dead_letter.path().display(),
                    offset = rec.position.offset,
                    retry_in = ?delay,
                    "Cannot write the dead-letter file; the record stays undelivered and uncommitted until it can be written"
                );
                status.set_state("retrying", Some(format!("cannot write the dead-letter file: {io}")));
                status.count("retries", 1);
                if !halt.sleep(delay).await {
                    return false;
                }
            }
        }
    }
}
