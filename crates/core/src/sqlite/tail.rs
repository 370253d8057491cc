//! The tail cache: the records this process appended to the `events` topic that
//! some in-process consumer has not read yet, shared with the appending side
//! (the payload `Arc`s the append serialised). A consumer at the head reads from
//! here instead of from SQLite: no statement, no copy out of the page cache, no
//! UTF-8 validation, no blocking-pool hop. Filled by the writer right after each
//! commit, under the writer lock, so it is always in offset order and holds only
//! committed records.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::LogRecord;

pub(super) struct Tail {
    pub(super) records: VecDeque<LogRecord>,
    /// Every record with an offset above this one is in `records` (or not yet appended).
    pub(super) covered_from: u64,
    pub(super) bytes: usize,
    max_bytes: usize,
    /// Cursors of the in-process consumers: what all of them have read is dropped.
    pub(super) cursors: Vec<std::sync::Weak<AtomicU64>>,
    /// Cursors of readers outside consumer groups (the HTTP event feed):
    /// records are kept for them too, but only while the cache holds at most
    /// `reader_max_bytes` — a slow or stalled reader costs that much memory
    /// at most, then reads SQLite like any consumer that fell behind.
    pub(super) reader_cursors: Vec<std::sync::Weak<AtomicU64>>,
    reader_max_bytes: usize,
}

/// Upper bound of the tail cache's payload bytes (a few appends of large events).
pub(super) const TAIL_MAX_BYTES: usize = 48 << 20;

/// The most the cache keeps for readers outside groups alone.
pub(super) const TAIL_READER_MAX_BYTES: usize = 8 << 20;

impl Tail {
    pub(super) fn new(head: u64, max_bytes: usize, reader_max_bytes: usize) -> Self {
        Tail {
            records: VecDeque::new(),
            covered_from: head,
            bytes: 0,
            max_bytes,
            cursors: Vec::new(),
            reader_cursors: Vec::new(),
            reader_max_bytes: reader_max_bytes.min(max_bytes),
        }
    }

    pub(super) fn push(&mut self, records: impl IntoIterator<Item = LogRecord>) {
        if self.cursors.is_empty() && self.reader_cursors.is_empty() {
            // Nobody in this process reads: keep nothing, and say so.
            if let Some(last) = records.into_iter().last() {
                self.covered_from = last.position.offset;
            }
            return;
        }
        for r in records {
            self.bytes += r.payload.len();
            self.records.push_back(r);
        }
        self.trim();
    }

    /// Drop what every consumer has read (and every reader, within the
    /// readers' bound), and the oldest records past the size bound.
    pub(super) fn trim(&mut self) {
        fn read_by_all(cursors: &mut Vec<std::sync::Weak<AtomicU64>>) -> u64 {
            cursors.retain(|c| c.strong_count() > 0);
            cursors.iter().filter_map(|c| c.upgrade()).map(|c| c.load(Ordering::Acquire)).min().unwrap_or(u64::MAX)
        }
        let groups = read_by_all(&mut self.cursors);
        let readers = read_by_all(&mut self.reader_cursors);
        while let Some(front) = self.records.front() {
            let o = front.position.offset;
            let wanted = o > groups || (o > readers && self.bytes <= self.reader_max_bytes);
            if wanted && self.bytes <= self.max_bytes {
                break;
            }
            self.bytes -= front.payload.len();
            self.covered_from = o;
            self.records.pop_front();
        }
    }

    /// Up to `max` records after `after`, when the cache holds all of them.
    pub(super) fn read_after(&self, after: u64, max: usize) -> Option<Vec<LogRecord>> {
        if after < self.covered_from {
            return None;
        }
        let start = self.records.partition_point(|r| r.position.offset <= after);
        Some(self.records.range(start..).take(max).cloned().collect())
    }
}
