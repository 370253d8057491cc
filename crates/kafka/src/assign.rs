//! Spreading accounts over ingest processes with Kafka's own group membership.
//!
//! Every ingest process joins the consumer group `fedistream.<pipeline>.ingest`
//! on the topic `fedistream.<pipeline>.ingest`, whose partitions are *slots*.
//! Nothing is ever written to that topic: the group protocol only hands each
//! slot to exactly one live member. An account belongs to slot
//! `xxh3(source/account) mod slots`; a process follows the accounts of the slots
//! it holds. When a process dies, the group gives its slots to the others after
//! the session timeout, and they resume those accounts from the checkpoints in
//! the state of those slots (`….state.slots`, read when a slot is assigned,
//! dropped when it is revoked: [`crate::log::KafkaLog::own_slots`]).
//!
//! Hand-over is stop-before-start: on a revoke the member first stops following
//! the revoked accounts (the callback waits for [`Membership::released`]) and only
//! then does the group assign the slots elsewhere, so no account is followed by
//! two processes at once.
//!
//! A process that misses the hand-over (paused or cut off past the session
//! timeout: the group gave its slots away without its revoke) is fenced: each
//! assignment comes with a [`Fence`] (the member's group metadata and slots),
//! and appends made under it commit only while the group still gives this
//! member those slots (see [`crate::log::FencedLog`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use fedistream_core::error::LogError;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::TopicPartitionList;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::log::{client_config, Fence, KafkaLogConfig};

/// The slots a process holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// Increases with every change.
    pub generation: u64,
    pub slots: BTreeSet<i32>,
    pub total: i32,
    /// The group has answered: these are the slots it gives this member (an
    /// empty set included). False before the first assignment and between a
    /// revoke and the assignment that follows it.
    pub assigned: bool,
    /// The proof of this assignment for appends ([`crate::log::KafkaLog::fenced`]);
    /// made when the group assigns slots, `None` while none are held.
    pub fence: Option<Fence>,
}

/// The slot of a unit of work (`source/account`, or a source name).
pub fn slot_of(unit: &str, total: i32) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(unit.as_bytes()) % total.max(1) as u64) as i32
}

impl Assignment {
    pub fn owns(&self, unit: &str) -> bool {
        self.slots.contains(&slot_of(unit, self.total))
    }
}

struct MemberContext {
    tx: watch::Sender<Assignment>,
    group: String,
    topic: String,
    /// Acknowledgements that revoked work has stopped.
    released: Mutex<mpsc::Receiver<u64>>,
    release_timeout: Duration,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if tpl.count() == 0 {
                return;
            }
            let mut generation = 0;
            self.tx.send_modify(|a| {
                for e in tpl.elements() {
                    a.slots.remove(&e.partition());
                }
                a.generation += 1;
                a.assigned = false;
                generation = a.generation;
                // Work still running keeps its fence: the group's generation
                // only moves on once this revoke has returned.
                if a.slots.is_empty() {
                    a.fence = None;
                }
            });
            info!(revoked = tpl.count(), "Ingest slots revoked; stopping their accounts before the hand-over");
            // Wait until the process says the revoked accounts have stopped.
            let rx = self.released.lock().unwrap();
            let deadline = std::time::Instant::now() + self.release_timeout;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(g) if g >= generation => break,
                    Ok(_) => continue,
                    Err(_) => {
                        warn!(timeout = ?self.release_timeout, "Revoked accounts did not stop in time; handing them over anyway");
                        break;
                    }
                }
            }
        }
    }

    fn post_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // The member id and generation this assignment was made for.
                let metadata = c.group_metadata();
                if metadata.is_none() && tpl.count() > 0 {
                    warn!("The ingest group gave no group metadata with the assignment; its appends are not fenced");
                }
                let mut slots = self.tx.borrow().slots.clone();
                slots.extend(tpl.elements().iter().map(|e| e.partition()));
                info!(slots = ?slots, of = self.tx.borrow().total, "Ingest slots assigned");
                if tpl.count() > 0 {
                    wait_for_stable_offsets(c, tpl);
                }
                self.tx.send_modify(|a| {
                    a.slots = slots;
                    a.generation += 1;
                    a.assigned = true;
                    a.fence = match metadata {
                        Some(m) if !a.slots.is_empty() => {
                            Some(Fence::new(m, self.group.clone(), self.topic.clone(), a.slots.iter().copied().collect(), a.generation))
                        }
                        _ => None,
                    };
                });
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "Ingest group rebalance error"),
        }
    }
}

/// Wait until no transaction of a previous owner of `slots` is still pending
/// with its fence for them. A fenced append is checked when its transaction
/// sends the fence, not when it commits: a process paused between the two (its
/// fence accepted, its slots then handed over) commits when it resumes. Kafka
/// keeps such a transaction's offsets "unstable" until it commits or aborts
/// (KIP-447), so waiting for stable offsets here means the state read before
/// the accounts start (`KafkaLog::catch_up`) holds its outcome: no post is
/// fetched again that it stored. Without pending transactions (every ordinary
/// hand-over: the old owner stops before releasing) this is one round trip.
/// Bounded by the transaction timeout, after which the broker aborts it.
fn wait_for_stable_offsets(c: &BaseConsumer<MemberContext>, slots: &TopicPartitionList) {
    let deadline = Instant::now() + crate::log::TRANSACTION_TIMEOUT + Duration::from_secs(30);
    let mut said = false;
    loop {
        // librdkafka asks for stable offsets (isolation.level is read_committed)
        // and retries by itself while they are not: a pending transaction shows
        // as a partition error or as the call timing out.
        let pending = match c.committed_offsets(slots.clone(), Duration::from_secs(1)) {
            Ok(got) => {
                got.elements().iter().any(|e| matches!(e.error(), Err(KafkaError::OffsetFetch(RDKafkaErrorCode::UnstableOffsetCommit))))
            }
            Err(e)
                if matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::UnstableOffsetCommit | RDKafkaErrorCode::OperationTimedOut)) =>
            {
                true
            }
            Err(e) => {
                warn!(error = %e, "Cannot check for transactions of the slots' previous owner; following their accounts anyway");
                return;
            }
        };
        if !pending {
            if said {
                info!("No transaction of the slots' previous owner is pending any more");
            }
            return;
        }
        if Instant::now() > deadline {
            warn!("A transaction of the slots' previous owner is still pending; following their accounts anyway");
            return;
        }
        if !said {
            info!(
                "Waiting for a transaction of the slots' previous owner to finish (a process paused mid-append; or the cluster is \
                 slow to answer) before following their accounts"
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// This process's membership in the ingest group. Dropping it leaves the group.
pub struct Membership {
    rx: watch::Receiver<Assignment>,
    release_tx: mpsc::Sender<u64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Membership {
    /// Join the ingest group. `release_timeout` bounds how long a revoke waits for
    /// [`Membership::released`].
    pub fn join(cfg: &KafkaLogConfig, release_timeout: Duration) -> Result<Membership, LogError> {
        let (tx, rx) =
            watch::channel(Assignment { generation: 0, slots: BTreeSet::new(), total: cfg.ingest_slots, assigned: false, fence: None });
        let (release_tx, release_rx) = mpsc::channel();
        let ctx =
            MemberContext { tx, group: cfg.ingest_group(), topic: cfg.ingest_topic(), released: Mutex::new(release_rx), release_timeout };
        let consumer: BaseConsumer<MemberContext> = client_config(cfg)?
            .set("group.id", cfg.ingest_group())
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", cfg.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (cfg.session_timeout.as_millis() / 4).to_string())
            // Revokes wait for the accounts to stop; allow that plus a margin.
            .set("max.poll.interval.ms", (release_timeout.as_millis() as u64 + 60_000).max(300_000).to_string())
            .set("partition.assignment.strategy", "roundrobin")
            .create_with_context(ctx)
            .map_err(|e| LogError::Unavailable(format!("cannot join the ingest group (Kafka at {}): {e}", cfg.brokers)))?;
        consumer
            .subscribe(&[&cfg.ingest_topic()])
            .map_err(|e| LogError::Unavailable(format!("cannot join the ingest group (Kafka at {}): {e}", cfg.brokers)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fedistream-ingest-group".into())
            .spawn(move || {
                // The topic stays empty: polling only runs the group protocol.
                let mut last_warn: Option<std::time::Instant> = None;
                while !s.load(Ordering::Relaxed) {
                    if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
                        if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                            warn!(error = %e, "Ingest group: Kafka error; retrying (repeats silenced for 30 s)");
                            last_warn = Some(std::time::Instant::now());
                        }
                    }
                }
                // Leave the group so the others take over at once.
                consumer.unsubscribe();
                let _ = consumer.poll(Duration::from_millis(100));
            })
            .map_err(|e| LogError::Internal(format!("cannot start the ingest group thread: {e}")))?;
        Ok(Membership { rx, release_tx, stop, thread: Some(thread) })
    }

    /// Watch the assignment.
    pub fn watch(&self) -> watch::Receiver<Assignment> {
        self.rx.clone()
    }

    /// Say that everything revoked up to `generation` has stopped.
    pub fn released(&self, generation: u64) {
        let _ = self.release_tx.send(generation);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a revoke waiting for us.
        let _ = self.release_tx.send(u64::MAX);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_accounts_and_are_stable() {
        let total = 12;
        let units: Vec<String> = (0..1000).map(|i| format!("src/user{i}@example.org")).collect();
        let mut per_slot = vec![0; total as usize];
        for u in &units {
            let s = slot_of(u, total);
            assert_eq!(s, slot_of(u, total));
            per_slot[s as usize] += 1;
        }
        assert!(per_slot.iter().all(|n| (40..=130).contains(n)), "roughly even: {per_slot:?}");
        let a = Assignment { generation: 1, slots: [slot_of(&units[0], total)].into(), total, assigned: true, fence: None };
        assert!(a.owns(&units[0]));
    }
}
