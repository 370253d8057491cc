//! The ingestor: the single writer between sources and the log. It receives
//! batches from every source through a bounded queue, coalesces what is
//! waiting into one transaction (group commit: a burst of small batches — a
//! stream catching up — becomes one append), deduplicates by status URI and
//! version, and appends events and their checkpoints atomically, with a few
//! appends in flight where the log can overlap them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::component::{AppendSummary, IngestReply, IngestRequest, Status};
use crate::error::LogError;
use crate::event::{EncodedEvent, EventKind};
use crate::log::{AppendBatch, Log, StatePut};

/// Namespace of the dedup index: status URI → fingerprint of the last version stored.
pub const SEEN_NS: &str = "seen";
const DELETED: &str = "deleted";

/// An append started and not yet durable, with who to tell when it is.
struct InFlight {
    done: crate::log::AppendFuture,
    /// Its dedup decisions, kept once it is durable.
    decisions: Staged,
    replies: Vec<IngestReply>,
    summaries: Vec<AppendSummary>,
    /// When the append started (for the append latency histogram).
    started: std::time::Instant,
}

/// Single writer: deduplicates by status URI and appends batches durably, with
/// up to `max_in_flight` appends started and not yet durable (the log keeps
/// their order), so preparing the next batch overlaps the commit of the last.
pub(super) async fn ingestor(
    log: Arc<dyn Log>,
    mut rx: mpsc::Receiver<IngestRequest>,
    max_events: usize,
    max_in_flight: usize,
    status: Status,
    done: watch::Sender<bool>,
) -> Result<(), LogError> {
    // Bounded: a miss costs one indexed read of the log's `seen` table.
    let mut dedup = Dedup::new(50_000);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut open = true;
    let result = async {
        while open || !in_flight.is_empty() {
            let room = open && in_flight.len() < max_in_flight.max(1);
            tokio::select! {
                // Oldest first: the log completes appends in the order they started.
                r = async { in_flight.front_mut().expect("checked non-empty").done.as_mut().await }, if !in_flight.is_empty() => {
                    let f = in_flight.pop_front().expect("checked non-empty");
                    match r {
                        Ok(_) => {
                            let appended: usize = f.summaries.iter().map(|s| s.appended).sum();
                            dedup.commit(f.decisions);
                            status.count("appended", appended as u64);
                            status.count("duplicates_suppressed", f.summaries.iter().map(|s| s.duplicates as u64).sum());
                            metrics::counter!("fedistream_events_appended_total", "component" => "log").increment(appended as u64);
                            // From the start of the append until it is durable.
                            metrics::histogram!("fedistream_log_append_seconds", "component" => "log").record(f.started.elapsed().as_secs_f64());
                            for (reply, s) in f.replies.into_iter().zip(f.summaries) {
                                let _ = reply.send(Ok(s));
                            }
                        }
                        Err(e) => {
                            // Every later append fails too (the log's contract).
                            fail_all(f.replies.into_iter(), in_flight.drain(..), &e);
                            return Err(e);
                        }
                    }
                }
                first = rx.recv(), if room => {
                    let Some(first) = first else {
                        open = false;
                        continue;
                    };
                    // Coalesce whatever else is waiting into one transaction.
                    let mut reqs = vec![first];
                    let mut n = reqs[0].0.events.len();
                    while n < max_events {
                        match rx.try_recv() {
                            Ok(r) => {
                                n += r.0.events.len();
                                reqs.push(r);
                            }
                            Err(_) => break,
                        }
                    }
                    // At their final size: events are large, and doubling moves them.
                    let states: usize = reqs.iter().map(|r| r.0.state.len()).sum();
                    let mut batch = AppendBatch { events: Vec::with_capacity(n), state: Vec::with_capacity(n + states) };
                    let mut summaries = Vec::with_capacity(reqs.len());
                    let missing = dedup.missing(reqs.iter().flat_map(|r| r.0.events.iter().map(|e| e.key())));
                    if let Err(e) = dedup.prefetch(&*log, missing).await {
                        fail_all(reqs.into_iter().map(|r| r.1), in_flight.drain(..), &e);
                        return Err(e);
                    }
                    let mut replies = Vec::with_capacity(reqs.len());
                    for (sb, reply) in reqs {
                        let mut s = AppendSummary::default();
                        for mut ev in sb.events {
                            if dedup.admit(&mut ev, &mut batch.state) {
                                s.appended += 1;
                                batch.events.push(ev);
                            } else {
                                s.duplicates += 1;
                            }
                        }
                        batch.state.extend(sb.state);
                        summaries.push(s);
                        replies.push(reply);
                    }
                    let decisions = dedup.start();
                    let started = std::time::Instant::now();
                    match log.start_append(batch).await {
                        Ok(done) => in_flight.push_back(InFlight { done, decisions, replies, summaries, started }),
                        Err(e) => {
                            fail_all(replies.into_iter(), in_flight.drain(..), &e);
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = done.send(true);
    result
}

fn fail_all(replies: impl Iterator<Item = IngestReply>, in_flight: impl Iterator<Item = InFlight>, e: &LogError) {
    for reply in replies.chain(in_flight.flat_map(|f| f.replies)) {
        let _ = reply.send(Err(e.clone()));
    }
}

/// Dedup decisions of one append: status URI (hashed) → fingerprint.
struct Staged {
    seq: u64,
    decisions: Vec<(u128, Fp)>,
}

/// A status URI as the dedup index keeps it in memory: its 128-bit xxh3 hash
/// (the SQLite log keys its table the same way; a collision, 2^-128 per pair,
/// would make two posts look like one).
fn key_hash(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

/// The hash is already uniform: its low bits are the table hash.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64(bytes);
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type KeyMap<V> = HashMap<u128, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// A fingerprint as stored in the `seen` namespace: 16 hex digits (kept as their
/// number), `deleted`, or (from other writers) any text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fp {
    Never,
    Deleted,
    Hex(u64),
    Text(Box<str>),
}

impl Fp {
    pub(super) fn of(v: &str) -> Fp {
        match v {
            "" => Fp::Never,
            DELETED => Fp::Deleted,
            _ if v.len() == 16 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                u64::from_str_radix(v, 16).map(Fp::Hex).unwrap_or_else(|_| Fp::Text(v.into()))
            }
            _ => Fp::Text(v.into()),
        }
    }
}

/// The dedup index: an in-memory cache in front of the log's `seen` namespace.
/// Decisions are staged per append and only enter the cache once it is durable;
/// meanwhile later batches see them (a post in two batches in flight is
/// appended once).
struct Dedup {
    cache: KeyMap<Fp>,
    /// The batch being built.
    staged: KeyMap<Fp>,
    /// Latest decision per key among appends in flight, with its append's seq.
    in_flight: KeyMap<(u64, Fp)>,
    next_seq: u64,
    capacity: usize,
}

impl Dedup {
    fn new(capacity: usize) -> Self {
        Dedup { cache: KeyMap::default(), staged: KeyMap::default(), in_flight: KeyMap::default(), next_seq: 0, capacity }
    }

    /// Those of `keys` whose index entry is not cached yet.
    fn missing<'k>(&mut self, keys: impl Iterator<Item = &'k str>) -> Vec<String> {
        if self.cache.len() > self.capacity {
            self.cache.clear();
        }
        keys.filter(|k| !self.cache.contains_key(&key_hash(k))).map(str::to_string).collect()
    }

    /// Load the index entries of `missing` (from [`Self::missing`]).
    async fn prefetch(&mut self, log: &dyn Log, missing: Vec<String>) -> Result<(), LogError> {
        if missing.is_empty() {
            return Ok(());
        }
        let found = log.state_get_many(SEEN_NS, &missing).await?;
        for k in missing {
            let v = found.get(&k).map(|v| Fp::of(v)).unwrap_or(Fp::Never);
            self.cache.insert(key_hash(&k), v);
        }
        Ok(())
    }

    /// Whether to append `ev`; may turn a `Created` into an `Updated` (an edit seen
    /// first through REST). Records the new fingerprint in `state`.
    fn admit(&mut self, ev: &mut EncodedEvent, state: &mut Vec<StatePut>) -> bool {
        let h = key_hash(ev.key());
        let fp = Fp::of(ev.fingerprint());
        let keep = match (ev.kind(), self.current(h)) {
            (_, Fp::Deleted) => false,
            (EventKind::Deleted, _) => true,
            // New interaction counts of a version already stored.
            (EventKind::Updated, _) if ev.is_counts_refresh() => true,
            (_, p) if *p == fp => false,
            (EventKind::Created, Fp::Never) => true,
            (EventKind::Created, _) => {
                ev.set_kind(EventKind::Updated);
                true
            }
            (EventKind::Updated, _) => true,
        };
        if keep {
            // Owned by the unit the event was read for: it moves with the unit.
            state.push(StatePut::set(SEEN_NS, ev.key(), ev.fingerprint()).owned_by(ev.owner().cloned()));
            self.staged.insert(h, fp);
        }
        keep
    }

    fn current(&self, h: u128) -> &Fp {
        // Later decisions see earlier ones: this batch's, then those in flight.
        if let Some(v) = self.staged.get(&h) {
            return v;
        }
        if let Some((_, v)) = self.in_flight.get(&h) {
            return v;
        }
        self.cache.get(&h).unwrap_or(&Fp::Never)
    }

    /// The batch being built is handed to the log: its decisions are in flight.
    fn start(&mut self) -> Staged {
        let seq = self.next_seq;
        self.next_seq += 1;
        let decisions: Vec<(u128, Fp)> = self.staged.drain().collect();
        for (k, v) in &decisions {
            self.in_flight.insert(*k, (seq, v.clone()));
        }
        Staged { seq, decisions }
    }

    /// That append is durable: its decisions are the index now.
    fn commit(&mut self, staged: Staged) {
        for (k, v) in staged.decisions {
            if self.in_flight.get(&k).is_some_and(|(seq, _)| *seq == staged.seq) {
                self.in_flight.remove(&k);
            }
            self.cache.insert(k, v);
        }
    }
}
