//! When reconciliation passes start: every account once within the bound
//! (`reconcile_within`), spread over time, accounts whose stream was down first.
//!
//! * Each account is due again half a bound after its last pass started.
//! * Passes start at most one per `bound / (2 × accounts)` (the pace), so a
//!   round over every account takes at most half the bound: a due account waits
//!   at most that long, and the two halves add up to the bound. The pace also
//!   caps the cost: however often the stream drops, there are at most two passes
//!   per account and bound.
//! * An account whose stream was down (every account at start, all of them
//!   after a disconnect, and always without a stream) becomes due at once and
//!   goes before the others.
//! * At most [`MAX_PASSES`] run at a time; a pass only starts once the account's
//!   first catch-up has found its id and checkpoint.
//!
//! Whether the rate limit leaves room is the limiter's business (passes use the
//! background handle); a pass that starts later than the bound says so.

use std::time::Duration;

use tokio::time::Instant;

/// Reconciliation passes running at once, per source.
pub const MAX_PASSES: usize = 2;

/// Reconciliation schedule of one account.
#[derive(Debug, Clone)]
pub struct Slot {
    pub due: Instant,
    /// The stream was down since the last pass (or there is none).
    pub gap: bool,
    pub running: bool,
    pub last_start: Option<Instant>,
}

impl Slot {
    pub fn new(now: Instant) -> Self {
        Slot { due: now, gap: true, running: false, last_start: None }
    }
}

#[derive(Debug)]
pub struct Rounds {
    bound: Duration,
    pace: Duration,
    next_start: Instant,
    running: usize,
}

impl Rounds {
    pub fn new(bound: Duration, accounts: usize, now: Instant) -> Self {
        let pace = bound / (2 * accounts.max(1) as u32);
        Rounds { bound, pace, next_start: now, running: 0 }
    }

    /// The stream went down or came back: what it may have missed is checked first.
    pub fn stream_gap(&self, slots: &mut [&mut Slot], now: Instant) {
        for s in slots.iter_mut() {
            s.gap = true;
            s.due = s.due.min(now);
        }
    }

    /// Which of the `ready` accounts (index, slot) starts a pass now, if any:
    /// gaps first, then the longest due.
    pub fn pick<'a>(&self, ready: impl Iterator<Item = (usize, &'a Slot)>, now: Instant) -> Option<usize> {
        if self.running >= MAX_PASSES || now < self.next_start {
            return None;
        }
        ready.filter(|(_, s)| !s.running && s.due <= now).min_by_key(|(_, s)| (!s.gap, s.due)).map(|(i, _)| i)
    }

    /// When to look again (`None`: only when something changes).
    pub fn next_wake<'a>(&self, ready: impl Iterator<Item = &'a Slot>) -> Option<Instant> {
        if self.running >= MAX_PASSES {
            return None;
        }
        ready.filter(|s| !s.running).map(|s| s.due).min().map(|d| d.max(self.next_start))
    }

    /// A pass of `slot` starts now; `streaming` says whether a stream is up
    /// (without one, every moment is a gap). Returns how late it is compared to
    /// the bound, if it is.
    pub fn started(&mut self, slot: &mut Slot, streaming: bool, now: Instant) -> Option<Duration> {
        let late = slot.last_start.map(|t| now.duration_since(t)).filter(|d| *d > self.bound);
        slot.running = true;
        slot.gap = !streaming;
        slot.last_start = Some(now);
        slot.due = now + self.bound / 2;
        self.running += 1;
        self.next_start = now + self.pace;
        late
    }

    pub fn finished(&mut self, slot: &mut Slot) {
        slot.running = false;
        self.running = self.running.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every account is checked within the bound, passes are spread by the
    /// pace, and an account whose stream was down jumps the queue.
    #[tokio::test(start_paused = true)]
    async fn every_account_within_the_bound_spread_out_gaps_first() {
        let bound = Duration::from_secs(3600);
        let t0 = Instant::now();
        let mut slots: Vec<Slot> = (0..4).map(|_| Slot::new(t0)).collect();
        for s in &mut slots {
            s.gap = false;
        }
        slots[2].gap = true;
        let mut r = Rounds::new(bound, slots.len(), t0);
        let mut starts: Vec<Vec<Instant>> = vec![vec![]; 4];
        let mut now = t0;
        let mut first = None;
        // Simulate 3 hours; passes take no time.
        while now < t0 + 3 * bound {
            if let Some(i) = r.pick(slots.iter().enumerate(), now) {
                first.get_or_insert(i);
                assert!(r.started(&mut slots[i], true, now).is_none(), "late at {:?}", now - t0);
                r.finished(&mut slots[i]);
                starts[i].push(now);
                continue;
            }
            now = r.next_wake(slots.iter()).expect("something is due");
        }
        assert_eq!(first, Some(2), "the account with a gap goes first");
        for (i, s) in starts.iter().enumerate() {
            assert!(s[0] <= t0 + bound / 2, "account {i} first at {:?}", s[0] - t0);
            for w in s.windows(2) {
                assert!(w[1] - w[0] <= bound, "account {i}: {:?} between passes", w[1] - w[0]);
                assert!(w[1] - w[0] >= bound / 2, "account {i}: too often");
            }
        }
        let mut all: Vec<Instant> = starts.concat();
        all.sort();
        for w in all.windows(2) {
            assert!(w[1] - w[0] >= bound / 8, "passes spread by the pace");
        }
        // A gap makes an account due at once; others keep their place.
        let now = now + Duration::from_secs(1);
        let mut refs: Vec<&mut Slot> = slots.iter_mut().take(1).collect();
        r.stream_gap(&mut refs, now);
        assert!(slots[0].gap && slots[0].due <= now);
    }
}
