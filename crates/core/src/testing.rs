//! Test helpers (feature `test-util`): a source that emits given events, a
//! recording sink with scripted failures, event builders, and the conformance
//! suite every [`Log`] backend must pass.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::component::{Sink, Source, SourceBatch, SourceContext, Written};
use crate::error::{SinkError, SourceError};
use crate::event::{Event, EventKind, LogRecord, Position};
use crate::log::{AppendBatch, Log, StatePut};
use crate::post::{Account, Counts, Post, Provenance, Via, Visibility};

/// A minimal post by `acct` with `n` in its id, uri and text.
pub fn post(acct: &str, n: u64, text: &str) -> Post {
    let host = acct.split('@').nth(1).unwrap_or("example.org").to_string();
    let user = acct.split('@').next().unwrap_or("user");
    let now = Utc::now();
    Post {
        id: n.to_string(),
        uri: format!("https://{host}/users/{user}/statuses/{n}"),
        url: Some(format!("https://{host}/@{user}/{n}")),
        account: Account {
            id: "1".into(),
            acct: acct.to_string(),
            display_name: user.to_string(),
            url: None,
            bot: false,
            discoverable: Some(true),
            indexable: Some(true),
            noindex: None,
            bio_tags: Default::default(),
        },
        created_at: Some(now),
        edited_at: None,
        visibility: Visibility::Public,
        language: Some("en".into()),
        content_html: format!("<p>{text}</p>"),
        content_text: text.to_string(),
        spoiler_text: String::new(),
        sensitive: false,
        boost_of: None,
        in_reply_to: None,
        tags: vec![],
        mentions: vec![],
        emojis: vec![],
        media: vec![],
        poll: None,
        application: None,
        counts: Counts { replies: 0, reblogs: 0, favourites: 0, observed_at: now, observed_by: host.clone() },
        provenance: Provenance { instance: host, via: Via::Rest, received_at: now },
    }
}

pub fn created(source: &str, acct: &str, n: u64, text: &str) -> Event {
    Event::created(source, post(acct, n, text))
}

/// A finite source that emits the given batches, in order.
pub struct VecSource {
    pub batches: Vec<SourceBatch>,
}

#[async_trait]
impl Source for VecSource {
    fn is_finite(&self) -> bool {
        true
    }
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        for b in self.batches {
            ctx.emitter.emit(b).await?;
        }
        Ok(())
    }
}

/// What the recording sink does on its next writes.
#[derive(Debug, Clone)]
pub enum Script {
    Fail(SinkError),
}

/// Records every delivered record; fails as scripted first.
#[derive(Clone, Default)]
pub struct RecordingSink {
    pub delivered: Arc<Mutex<Vec<LogRecord>>>,
    pub script: Arc<Mutex<VecDeque<Script>>>,
    pub writes: Arc<Mutex<usize>>,
    pub closed: Arc<Mutex<bool>>,
}

impl RecordingSink {
    pub fn fail_next(&self, e: SinkError) {
        self.script.lock().unwrap().push_back(Script::Fail(e));
    }
    pub fn keys(&self) -> Vec<String> {
        self.delivered.lock().unwrap().iter().map(|r| r.event().unwrap().key.clone()).collect()
    }
    pub fn kinds(&self) -> Vec<EventKind> {
        self.delivered.lock().unwrap().iter().map(|r| r.event().unwrap().kind).collect()
    }
}

#[async_trait]
impl Sink for RecordingSink {
    async fn write(&mut self, batch: &[LogRecord]) -> Result<Written, SinkError> {
        *self.writes.lock().unwrap() += 1;
        if let Some(Script::Fail(e)) = self.script.lock().unwrap().pop_front() {
            // A permanent failure at index i means records before i went through.
            if let Some(i) = e.failed_index {
                self.delivered.lock().unwrap().extend(batch[..i.min(batch.len())].iter().cloned());
            }
            return Err(e);
        }
        self.delivered.lock().unwrap().extend(batch.iter().cloned());
        Ok(Written::done())
    }
    async fn close(&mut self) -> Result<(), SinkError> {
        *self.closed.lock().unwrap() = true;
        Ok(())
    }
}

/// A sink that buffers what it is given and makes it durable only when told
/// (an archive waiting for its upload): it answers [`Written::Pending`] and
/// acknowledges through the runtime's [`crate::component::Acker`] in
/// [`DeferredSink::ack_all`] and on `flush` (drain).
#[derive(Clone, Default)]
pub struct DeferredSink {
    /// Everything written since the last open (durable or not).
    pub received: Arc<Mutex<Vec<LogRecord>>>,
    /// What was acknowledged as durable, over every open.
    pub durable: Arc<Mutex<Vec<LogRecord>>>,
    acks: Arc<Mutex<Option<crate::component::Acker>>>,
}

impl DeferredSink {
    /// Make everything received so far durable and acknowledge it.
    pub fn ack_all(&self) {
        let received = std::mem::take(&mut *self.received.lock().unwrap());
        let upto: Vec<Position> = crate::runtime::max_positions(received.iter().map(|r| r.position))
            .into_iter()
            .map(|(partition, offset)| Position { partition, offset })
            .collect();
        if upto.is_empty() {
            return;
        }
        self.durable.lock().unwrap().extend(received);
        if let Some(a) = self.acks.lock().unwrap().as_ref() {
            a.durable(upto, vec![]);
        }
    }
    pub fn durable_keys(&self) -> Vec<String> {
        self.durable.lock().unwrap().iter().map(|r| r.event().unwrap().key.clone()).collect()
    }
}

#[async_trait]
impl Sink for DeferredSink {
    async fn open(&mut self, ctx: &crate::component::SinkContext) -> Result<(), SinkError> {
        // What was buffered and never acknowledged is gone: the runtime delivers it again.
        self.received.lock().unwrap().clear();
        *self.acks.lock().unwrap() = Some(ctx.acks.clone());
        Ok(())
    }
    async fn write(&mut self, batch: &[LogRecord]) -> Result<Written, SinkError> {
        self.received.lock().unwrap().extend(batch.iter().cloned());
        Ok(Written::Pending)
    }
    async fn flush(&mut self) -> Result<(), SinkError> {
        self.ack_all();
        Ok(())
    }
}

/// The conformance suite for [`Log`] backends. `open` must return a fresh, empty
/// log each call with `reopen` giving the same storage again (for durability).
pub mod conformance {
    use super::*;

    /// Poll until `n` records arrived (a distributed backend needs a moment to
    /// join its group), failing after 60 s.
    pub async fn poll_n(c: &mut Box<dyn crate::log::Consumer>, n: usize) -> Vec<LogRecord> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(std::time::Instant::now() < deadline, "only {} of {n} records after 60 s", got.len());
            got.extend(c.poll(n - got.len(), Duration::from_millis(500)).await.unwrap());
        }
        got
    }

    pub async fn append_then_consume_in_order(log: Arc<dyn Log>) {
        let evs: Vec<Event> = (1..=5).map(|n| created("s", "a@example.org", n, "hi")).collect();
        let r = log.append(AppendBatch { events: crate::event::encode_all(evs.clone()), state: vec![] }).await.unwrap();
        assert_eq!(r.positions.len(), 5);
        assert!(r.positions.windows(2).all(|w| w[0] < w[1]), "positions increase: {:?}", r.positions);
        let mut c = log.consumer(crate::log::EVENTS, "g1").await.unwrap();
        let got = poll_n(&mut c, 5).await;
        assert_eq!(got.iter().map(|r| r.event().unwrap().clone()).collect::<Vec<_>>(), evs);
        assert_eq!(got.iter().map(|r| r.position).collect::<Vec<_>>(), r.positions);
        // Nothing more.
        assert!(c.poll(100, Duration::from_millis(300)).await.unwrap().is_empty());
    }

    /// Appends started one after another without waiting are stored in that
    /// order, each with its state, whatever order their futures are awaited in.
    pub async fn started_appends_keep_their_order(log: Arc<dyn Log>) {
        let evs: Vec<Event> = (1..=9).map(|n| created("s", "a@example.org", n, "hi")).collect();
        let mut started = Vec::new();
        for (i, chunk) in evs.chunks(3).enumerate() {
            let b = AppendBatch {
                events: crate::event::encode_all(chunk.to_vec()),
                state: vec![StatePut::set("checkpoint", "k", (i + 1).to_string())],
            };
            started.push(log.start_append(b).await.unwrap());
        }
        let mut receipts = Vec::new();
        while let Some(done) = started.pop() {
            receipts.push(done.await.unwrap());
        }
        receipts.reverse();
        let positions: Vec<Position> = receipts.iter().flat_map(|r| r.positions.clone()).collect();
        assert_eq!(positions.len(), 9);
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions follow the start order: {positions:?}");
        assert_eq!(log.state_get("checkpoint", "k").await.unwrap().as_deref(), Some("3"), "the last started state wins");
        let mut c = log.consumer(crate::log::EVENTS, "started").await.unwrap();
        let got = poll_n(&mut c, 9).await;
        assert_eq!(got.iter().map(|r| r.event().unwrap().clone()).collect::<Vec<_>>(), evs);
    }

    pub async fn state_is_written_with_the_append(log: Arc<dyn Log>) {
        let ev = created("s", "a@example.org", 1, "hi");
        log.append(AppendBatch { events: crate::event::encode_all(vec![ev]), state: vec![StatePut::set("checkpoint", "k", "1")] })
            .await
            .unwrap();
        assert_eq!(log.state_get("checkpoint", "k").await.unwrap().as_deref(), Some("1"));
        log.append(AppendBatch { events: vec![], state: vec![StatePut::delete("checkpoint", "k")] }).await.unwrap();
        assert_eq!(log.state_get("checkpoint", "k").await.unwrap(), None);
        let many = log.state_get_many("checkpoint", &["k".into(), "x".into()]).await.unwrap();
        assert!(many.is_empty());
    }

    pub async fn groups_are_independent_and_resume_after_commit(log: Arc<dyn Log>) {
        let evs: Vec<Event> = (1..=4).map(|n| created("s", "a@example.org", n, "hi")).collect();
        log.append(AppendBatch { events: crate::event::encode_all(evs), state: vec![] }).await.unwrap();
        let mut a = log.consumer(crate::log::EVENTS, "a").await.unwrap();
        let got = poll_n(&mut a, 2).await;
        a.commit(&[got[1].position], vec![StatePut::set("map", "x", "y")]).await.unwrap();
        assert_eq!(log.state_get("map", "x").await.unwrap().as_deref(), Some("y"));
        drop(a);
        let mut a = log.consumer(crate::log::EVENTS, "a").await.unwrap();
        let rest = poll_n(&mut a, 2).await;
        assert_eq!(rest.iter().map(|r| r.event().unwrap().status_id.clone()).collect::<Vec<_>>(), vec!["3", "4"]);
        // Kafka counts offsets, and a transaction's commit marker takes one.
        let lag = a.lag().await.unwrap();
        assert!((2..=3).contains(&lag), "3 and 4 are read but not committed: lag {lag}");
        let mut b = log.consumer(crate::log::EVENTS, "b").await.unwrap();
        assert_eq!(poll_n(&mut b, 4).await.len(), 4, "a new group starts at the beginning");
    }

    pub async fn poll_wakes_on_append(log: Arc<dyn Log>) {
        let mut c = log.consumer(crate::log::EVENTS, "w").await.unwrap();
        // The poll would wait an hour: returning at all means the append woke it.
        let waiter = tokio::spawn(async move { c.poll(10, Duration::from_secs(3600)).await.unwrap() });
        tokio::task::yield_now().await;
        log.append(AppendBatch { events: crate::event::encode_all(vec![created("s", "a@example.org", 7, "x")]), state: vec![] })
            .await
            .unwrap();
        let got =
            tokio::time::timeout(Duration::from_secs(300), waiter).await.expect("woken by the append, not the hour's timeout").unwrap();
        assert_eq!(got.len(), 1);
    }
}

/// A processor for the runtime's tests: counts input records per account in
/// windows of `window` records per partition, and emits each window from its
/// timer once the input has moved past it. What it emits depends only on the
/// order of records within each partition (not on offsets, batching or when
/// the timer fires), so a run killed and restarted anywhere must emit exactly
/// what an uninterrupted run does — which is what the processor tests check.
pub mod counting {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Serialize};

    use crate::component::{Processor, ProcessorContext, ProcessorOutput};
    use crate::error::{ErrorKind, ProcessorError};
    use crate::event::LogRecord;
    use crate::log::{OutputRecord, StatePut};

    pub struct CountingProcessor {
        pub window: u64,
        pub output: String,
        pub tick: Duration,
        ns: String,
        parts: BTreeMap<u32, PartState>,
    }

    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    struct PartState {
        /// Records of the partition processed so far.
        seen: u64,
        /// Open windows: window number → records per account.
        open: BTreeMap<u64, BTreeMap<String, u64>>,
    }

    /// One emitted window.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
    pub struct WindowCount {
        /// The input partition.
        pub input_partition: u32,
        pub window: u64,
        pub accounts: BTreeMap<String, u64>,
    }

    impl CountingProcessor {
        pub fn new(name: &str, window: u64, output: &str, tick: Duration) -> Self {
            CountingProcessor { window: window.max(1), output: output.into(), tick, ns: format!("proc:{name}"), parts: BTreeMap::new() }
        }
    }

    #[async_trait]
    impl Processor for CountingProcessor {
        async fn open(&mut self, ctx: &ProcessorContext, partitions: Option<&[u32]>) -> Result<(), ProcessorError> {
            self.parts.clear();
            for (k, v) in ctx.log.state_scan(&self.ns).await? {
                let Some(p) = k.strip_prefix('p').and_then(|p| p.parse::<u32>().ok()) else { continue };
                if partitions.is_some_and(|ps| !ps.contains(&p)) {
                    continue;
                }
                let st: PartState =
                    serde_json::from_str(&v).map_err(|e| ProcessorError::new(ErrorKind::Internal, format!("state {k}: {e}")))?;
                self.parts.insert(p, st);
            }
            Ok(())
        }

        fn process(&mut self, batch: &[LogRecord], out: &mut ProcessorOutput) -> Result<(), ProcessorError> {
            let mut touched = std::collections::BTreeSet::new();
            for r in batch {
                let account = match r.event() {
                    Ok(ev) => ev.account.clone(),
                    Err(e) => {
                        out.rejected.push((r.position, e.to_string()));
                        continue;
                    }
                };
                let st = self.parts.entry(r.position.partition).or_default();
                *st.open.entry(st.seen / self.window).or_default().entry(account).or_default() += 1;
                st.seen += 1;
                touched.insert(r.position.partition);
            }
            for p in touched {
                out.state.push(StatePut::set(&self.ns, format!("p{p}"), serde_json::to_string(&self.parts[&p]).unwrap_or_default()));
            }
            Ok(())
        }

        fn tick_interval(&self) -> Option<Duration> {
            Some(self.tick)
        }

        fn tick(&mut self, _now: DateTime<Utc>, out: &mut ProcessorOutput) -> Result<(), ProcessorError> {
            for (p, st) in self.parts.iter_mut() {
                // A window is complete once the partition's input moved past it.
                let complete = st.seen / self.window;
                let done: Vec<u64> = st.open.keys().copied().filter(|w| *w < complete).collect();
                if done.is_empty() {
                    continue;
                }
                for w in done {
                    let accounts = st.open.remove(&w).unwrap_or_default();
                    let rec = WindowCount { input_partition: *p, window: w, accounts };
                    out.records.push(OutputRecord {
                        topic: self.output.clone(),
                        key: format!("p{p}"),
                        payload: serde_json::to_string(&rec).unwrap_or_default().into(),
                    });
                }
                out.state.push(StatePut::set(&self.ns, format!("p{p}"), serde_json::to_string(st).unwrap_or_default()));
            }
            Ok(())
        }
    }
}

/// The conformance suite every channel (sink) runs, through the runtime on an
/// embedded log: a batch is accepted; a record the destination refuses for
/// good is dead-lettered and the rest delivered; a transient failure is
/// retried without loss; nothing is committed before the destination holds it
/// (deferred acknowledgements); a crash between a write and its commit
/// redelivers the records — and, for channels that promise exactly once, does
/// not duplicate them. A check a destination cannot take part in is reported
/// as not applicable, with the harness's reason, never skipped silently.
pub mod sink_conformance {
    use super::*;
    use crate::component::{DeadLetter, SinkContext};
    use crate::runtime::{BatchConfig, ChannelSpec, Pipeline, RetryConfig, RuntimeOptions, SourceSpec};
    use crate::sqlite::{SqliteLog, SqliteOptions};
    use tokio_util::sync::CancellationToken;

    /// What the suite needs to know about a channel and its destination.
    #[async_trait]
    pub trait SinkHarness: Send + Sync {
        /// A new sink on the same destination (as a new process would build it).
        fn sink(&self) -> Box<dyn Sink>;
        /// The event keys the destination holds, in order, duplicates included.
        async fn delivered(&self) -> Vec<String>;
        /// An event the destination refuses for good, or why it cannot refuse one.
        fn refused_event(&self) -> Result<Event, String>;
        /// Make the destination fail transiently until [`SinkHarness::recover`],
        /// or say why it cannot.
        async fn fail_transiently(&self) -> Result<(), String>;
        async fn recover(&self);
        /// Whether the channel promises that records redelivered after a crash are not duplicated.
        fn exactly_once(&self) -> bool;
        /// Called before each check, which starts a new log (positions from 1
        /// again): a destination that remembers log positions (a file channel
        /// resumes after the last position it holds) starts afresh here.
        async fn begin(&self, check: &'static str) {
            let _ = check;
        }
    }

    /// How each check went.
    #[derive(Debug, Default)]
    pub struct Report {
        pub passed: Vec<&'static str>,
        /// (check, why it does not apply to this channel)
        pub not_applicable: Vec<(&'static str, String)>,
    }

    /// Run every check; panics on the first that fails.
    pub async fn run_all(h: &dyn SinkHarness, label: &str) -> Report {
        let mut r = Report::default();
        batch_accepted(h, label).await;
        r.passed.push("batch accepted");
        match permanent_error(h, label).await {
            Ok(()) => r.passed.push("permanent error dead-lettered"),
            Err(why) => r.not_applicable.push(("permanent error dead-lettered", why)),
        }
        match transient_error(h, label).await {
            Ok(()) => r.passed.push("transient error retried"),
            Err(why) => r.not_applicable.push(("transient error retried", why)),
        }
        crash_between_write_and_commit(h, label).await;
        r.passed.push("crash between write and commit");
        eprintln!("sink conformance ({label}): passed {:?}; not applicable {:?}", r.passed, r.not_applicable);
        r
    }

    fn events(label: &str, from: u64, n: u64) -> Vec<Event> {
        // Distinct keys per check and per run: destinations may be shared.
        let run = rand::random::<u32>();
        (from..from + n).map(|i| created("conformance", &format!("{label}{run}@example.org"), i, &format!("post {i}"))).collect()
    }

    struct Setup {
        _dir: tempfile::TempDir,
        log: Arc<dyn Log>,
        dl: std::path::PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).expect("log");
        let dl = dir.path().join("dead-letter.jsonl");
        Setup { _dir: dir, log, dl }
    }

    fn pipeline(s: &Setup, sink: Box<dyn Sink>, source: Box<dyn Source>) -> Pipeline {
        Pipeline {
            log: s.log.clone(),
            sources: vec![SourceSpec::new("conformance", source, DeadLetter::new(s.dl.with_extension("source.jsonl")))],
            processors: vec![],
            channels: vec![ChannelSpec {
                name: "under-test".into(),
                group: "conformance".into(),
                topic: crate::log::EVENTS.into(),
                sink,
                route: None,
                batch: BatchConfig { max_records: 4, max_bytes: 1 << 20, linger: Duration::ZERO },
                retry: RetryConfig {
                    initial: Duration::from_millis(10),
                    max: Duration::from_millis(200),
                    pause: Duration::from_millis(200),
                },
                dead_letter: DeadLetter::new(&s.dl),
            }],
            options: RuntimeOptions { status_interval: Duration::from_millis(10), ..RuntimeOptions::default() },
            progress: None,
        }
    }

    fn source(evs: &[Event]) -> Box<dyn Source> {
        Box::new(VecSource { batches: vec![SourceBatch { events: crate::event::encode_all(evs.to_vec()), state: vec![] }] })
    }

    fn keys(evs: &[Event]) -> Vec<String> {
        evs.iter().map(|e| e.key.clone()).collect()
    }

    async fn committed(log: &Arc<dyn Log>) -> u64 {
        log.info().await.unwrap().groups.iter().find(|g| g.group == "conformance").map(|g| g.committed[0].offset).unwrap_or(0)
    }

    /// What the destination holds of `evs`'s keys (other runs may share it).
    async fn held(h: &dyn SinkHarness, evs: &[Event]) -> Vec<String> {
        let want: std::collections::HashSet<String> = keys(evs).into_iter().collect();
        h.delivered().await.into_iter().filter(|k| want.contains(k)).collect()
    }

    async fn batch_accepted(h: &dyn SinkHarness, label: &str) {
        h.begin("batch accepted").await;
        let s = setup();
        let evs = events(label, 1, 10);
        // While it runs, nothing may be committed that the destination does not hold.
        let run = tokio::spawn(crate::runtime::run(pipeline(&s, h.sink(), source(&evs)), CancellationToken::new()));
        while !run.is_finished() {
            let c = committed(&s.log).await;
            let holds = held(h, &evs).await.len() as u64;
            assert!(c <= holds, "{label}: committed {c} records while the destination holds {holds}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let summary = run.await.unwrap().unwrap();
        assert!(summary.failures.is_empty(), "{label}: {:?}", summary.failures);
        assert_eq!(held(h, &evs).await, keys(&evs), "{label}: every record once, in order");
        assert_eq!(committed(&s.log).await, 10, "{label}: committed after delivery");
    }

    async fn permanent_error(h: &dyn SinkHarness, label: &str) -> Result<(), String> {
        h.begin("permanent error").await;
        let bad = h.refused_event()?;
        let s = setup();
        let mut evs = events(label, 1, 3);
        evs.insert(1, bad.clone());
        let summary = crate::runtime::run(pipeline(&s, h.sink(), source(&evs)), CancellationToken::new()).await.unwrap();
        assert!(summary.failures.is_empty(), "{label}: {:?}", summary.failures);
        let good: Vec<Event> = evs.iter().filter(|e| e.key != bad.key).cloned().collect();
        assert_eq!(held(h, &good).await, keys(&good), "{label}: the others are delivered");
        assert!(held(h, std::slice::from_ref(&bad)).await.is_empty(), "{label}: the refused record is not at the destination");
        let dl = std::fs::read_to_string(&s.dl).unwrap_or_default();
        assert!(dl.contains(&bad.key), "{label}: the refused record is dead-lettered: {dl}");
        assert_eq!(committed(&s.log).await, 4, "{label}: dead-lettered counts as handled");
        Ok(())
    }

    async fn transient_error(h: &dyn SinkHarness, label: &str) -> Result<(), String> {
        h.begin("transient error").await;
        h.fail_transiently().await?;
        let s = setup();
        let evs = events(label, 1, 6);
        let run = tokio::spawn(crate::runtime::run(pipeline(&s, h.sink(), source(&evs)), CancellationToken::new()));
        // Wait until the channel has retried at least twice, then let the destination recover.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let doc = s.log.state_get(crate::component::STATUS_NS, "channel:under-test").await.unwrap();
            let retries = doc
                .and_then(|d| serde_json::from_str::<crate::component::StatusDoc>(&d).ok())
                .map(|d| d.counters.get("retries").copied().unwrap_or(0))
                .unwrap_or(0);
            if retries >= 2 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{label}: the channel never retried");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(committed(&s.log).await, 0, "{label}: nothing committed while the destination fails");
        h.recover().await;
        let summary = run.await.unwrap().unwrap();
        assert!(summary.failures.is_empty(), "{label}: {:?}", summary.failures);
        let got = held(h, &evs).await;
        if h.exactly_once() {
            assert_eq!(got, keys(&evs), "{label}: every record once after the retries");
        } else {
            let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
            assert_eq!(distinct.len(), evs.len(), "{label}: every record at least once: {got:?}");
        }
        Ok(())
    }

    async fn crash_between_write_and_commit(h: &dyn SinkHarness, label: &str) {
        h.begin("crash between write and commit").await;
        let s = setup();
        let evs = events(label, 1, 5);
        // The first process writes everything and dies before committing.
        s.log.append(AppendBatch { events: crate::event::encode_all(evs.clone()), state: vec![] }).await.unwrap();
        {
            let mut c = s.log.consumer(crate::log::EVENTS, "conformance").await.unwrap();
            let recs = conformance::poll_n(&mut c, 5).await;
            let mut first = h.sink();
            first.open(&SinkContext::new("under-test", s.log.clone())).await.expect("open");
            first.write(&recs).await.expect("write");
            first.flush().await.expect("flush");
        }
        assert_eq!(held(h, &evs).await, keys(&evs), "{label}: the first process delivered");
        // The next process gets the same records again.
        let summary =
            crate::runtime::run(pipeline(&s, h.sink(), Box::new(VecSource { batches: vec![] })), CancellationToken::new()).await.unwrap();
        assert!(summary.failures.is_empty(), "{label}: {:?}", summary.failures);
        assert_eq!(committed(&s.log).await, 5, "{label}: redelivered and committed");
        let got = held(h, &evs).await;
        if h.exactly_once() {
            assert_eq!(got, keys(&evs), "{label}: exactly once across the crash");
        } else {
            assert_eq!(got.len(), 2 * evs.len(), "{label}: at least once (this channel delivers again): {got:?}");
        }
    }
}
