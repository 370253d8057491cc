//! The runtime's delivery promise under faults: dead letters that cannot be
//! written, log reads that fail, sinks that acknowledge late, batching, and
//! processors.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::component::{SourceBatch, StatusDoc};
use crate::error::{SinkError, StorageClass};
use crate::event::LogRecord;
use crate::log::{AppendBatch, Commit, Consumer, StatePut};
use crate::sqlite::{SqliteLog, SqliteOptions};
use crate::testing::{created, DeferredSink, RecordingSink, VecSource};

fn sqlite() -> (tempfile::TempDir, Arc<dyn Log>) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    (dir, log)
}

fn fast_retry() -> RetryConfig {
    RetryConfig { initial: Duration::from_millis(1), max: Duration::from_millis(5), pause: Duration::from_millis(20) }
}

fn spec(name: &str, sink: Box<dyn Sink>, dl: &std::path::Path, max_records: usize) -> ChannelSpec {
    ChannelSpec {
        name: name.into(),
        group: format!("g.{name}"),
        topic: crate::log::EVENTS.into(),
        sink,
        route: None,
        batch: BatchConfig { max_records, max_bytes: 1 << 20, linger: Duration::ZERO },
        retry: fast_retry(),
        dead_letter: DeadLetter::new(dl.join(format!("{name}.jsonl"))),
    }
}

fn events(n: u64) -> Vec<Event> {
    (1..=n).map(|i| created("src", "a@example.org", i, "x")).collect()
}

fn options() -> RuntimeOptions {
    RuntimeOptions { status_interval: Duration::from_millis(10), ..RuntimeOptions::default() }
}

fn pipeline(log: Arc<dyn Log>, source: Box<dyn Source>, channels: Vec<ChannelSpec>) -> Pipeline {
    Pipeline {
        log,
        sources: vec![SourceSpec::new("src", source, DeadLetter::new("/nonexistent/dl.jsonl"))],
        processors: vec![],
        channels,
        options: options(),
        progress: None,
    }
}

fn finite(evs: Vec<Event>) -> Box<dyn Source> {
    Box::new(VecSource { batches: vec![SourceBatch { events: crate::event::encode_all(evs), state: vec![] }] })
}

/// A source that emits its events, then runs until shutdown (a live source).
struct Live(Vec<Event>);

#[async_trait::async_trait]
impl Source for Live {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), crate::error::SourceError> {
        ctx.emitter.emit(SourceBatch { events: crate::event::encode_all(self.0), state: vec![] }).await?;
        ctx.shutdown.cancelled().await;
        Ok(())
    }
}

async fn committed(log: &Arc<dyn Log>, group: &str) -> u64 {
    log.info().await.unwrap().groups.iter().find(|g| g.group == group).map(|g| g.committed[0].offset).unwrap_or(0)
}

async fn status_doc(log: &Arc<dyn Log>, key: &str) -> Option<StatusDoc> {
    let v = log.state_get(crate::component::STATUS_NS, key).await.unwrap()?;
    serde_json::from_str(&v).ok()
}

/// Poll `check` every 5 ms until it holds (at most 30 s).
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_unwritable_dead_letter_file_keeps_the_event_uncommitted_until_it_can_be_written() {
    let (d, log) = sqlite();
    // The dead-letter directory is a plain file: creating the file fails (even as root).
    let blocker = d.path().join("dead-letter");
    std::fs::write(&blocker, "not a directory").unwrap();
    let sink = RecordingSink::default();
    sink.fail_next(SinkError::permanent_at(0, "422 Validation failed"));
    let mut ch = spec("c", Box::new(sink.clone()), d.path(), 10);
    ch.dead_letter = DeadLetter::new(blocker.join("c.jsonl"));
    let evs = events(3);
    let run = tokio::spawn(run(pipeline(log.clone(), finite(evs.clone()), vec![ch]), CancellationToken::new()));
    until("the channel to retry the dead letter", || async {
        status_doc(&log, "channel:c").await.is_some_and(|d| d.counters.get("retries").copied().unwrap_or(0) >= 3)
    })
    .await;
    assert_eq!(committed(&log, "g.c").await, 0, "nothing is committed while the rejected event is neither delivered nor dead-lettered");
    assert!(sink.keys().is_empty(), "the events after it wait too (order is kept)");
    std::fs::remove_file(&blocker).unwrap();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let dl = std::fs::read_to_string(blocker.join("c.jsonl")).unwrap();
    assert_eq!(dl.lines().count(), 1);
    assert!(dl.contains(&evs[0].key), "{dl}");
    assert_eq!(sink.keys(), vec![evs[1].key.clone(), evs[2].key.clone()]);
    assert_eq!(committed(&log, "g.c").await, 3);
}

/// A log whose consumers' reads fail while `failing` is set (a disk error).
struct FlakyLog {
    inner: Arc<dyn Log>,
    failing: Arc<AtomicBool>,
    corrupt: bool,
    opened: AtomicUsize,
}

struct FlakyConsumer {
    inner: Box<dyn Consumer>,
    failing: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Consumer for FlakyConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(LogError::storage(StorageClass::Io, "disk I/O error (injected)"));
        }
        self.inner.poll(max, wait).await
    }
    async fn commit_with(&mut self, c: Commit) -> Result<(), LogError> {
        self.inner.commit_with(c).await
    }
    async fn lag(&mut self) -> Result<u64, LogError> {
        self.inner.lag().await
    }
}

#[async_trait::async_trait]
impl Log for FlakyLog {
    async fn append(&self, batch: AppendBatch) -> Result<crate::log::AppendReceipt, LogError> {
        self.inner.append(batch).await
    }
    async fn state_get(&self, ns: &str, key: &str) -> Result<Option<String>, LogError> {
        self.inner.state_get(ns, key).await
    }
    async fn state_get_many(&self, ns: &str, keys: &[String]) -> Result<HashMap<String, String>, LogError> {
        self.inner.state_get_many(ns, keys).await
    }
    async fn state_scan(&self, ns: &str) -> Result<Vec<(String, String)>, LogError> {
        self.inner.state_scan(ns).await
    }
    async fn state_put(&self, puts: Vec<StatePut>) -> Result<(), LogError> {
        self.inner.state_put(puts).await
    }
    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, LogError> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        if self.corrupt {
            return Err(LogError::storage(StorageClass::Corrupt, "database disk image is malformed (injected)"));
        }
        Ok(Box::new(FlakyConsumer { inner: self.inner.consumer(topic, group).await?, failing: self.failing.clone() }))
    }
    async fn info(&self) -> Result<crate::log::LogInfo, LogError> {
        self.inner.info().await
    }
    async fn enforce_retention(&self) -> Result<u64, LogError> {
        self.inner.enforce_retention().await
    }
}

#[tokio::test]
async fn a_channel_whose_log_reads_fail_shows_failed_and_recovers() {
    let (d, inner) = sqlite();
    let failing = Arc::new(AtomicBool::new(true));
    let log: Arc<dyn Log> =
        Arc::new(FlakyLog { inner: inner.clone(), failing: failing.clone(), corrupt: false, opened: Default::default() });
    let sink = RecordingSink::default();
    let evs = events(4);
    let stop = CancellationToken::new();
    let run = tokio::spawn(run(
        pipeline(log.clone(), Box::new(Live(evs.clone())), vec![spec("c", Box::new(sink.clone()), d.path(), 10)]),
        stop.clone(),
    ));
    until("the channel to show it failed", || async {
        status_doc(&inner, "channel:c")
            .await
            .is_some_and(|d| d.state == "failed" && d.detail.as_deref().is_some_and(|m| m.contains("I/O error")) && d.since.is_some())
    })
    .await;
    assert!(sink.keys().is_empty());
    failing.store(false, Ordering::SeqCst);
    until("the channel to recover and deliver", || async { sink.keys().len() == 4 }).await;
    until("the status to say running", || async { status_doc(&inner, "channel:c").await.is_some_and(|d| d.state == "running") }).await;
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.failures.is_empty(), "a recovered channel is not a failure: {:?}", summary.failures);
    let c = &summary.channels[0];
    assert!(c.counters.get("restarts").copied().unwrap_or(0) >= 1, "{c:?}");
    assert_eq!(sink.keys(), evs.iter().map(|e| e.key.clone()).collect::<Vec<_>>(), "each event once, in order");
}

#[tokio::test]
async fn a_channel_that_cannot_recover_fails_the_run() {
    let (d, inner) = sqlite();
    let flaky = Arc::new(FlakyLog { inner, failing: Default::default(), corrupt: true, opened: Default::default() });
    let log: Arc<dyn Log> = flaky.clone();
    let sink = RecordingSink::default();
    let summary =
        run(pipeline(log, finite(events(2)), vec![spec("c", Box::new(sink), d.path(), 10)]), CancellationToken::new()).await.unwrap();
    assert_eq!(summary.failures.len(), 1, "{:?}", summary.failures);
    let f = &summary.failures[0];
    assert_eq!(f.component, "channel:c");
    assert_eq!(f.kind, ErrorKind::Permanent);
    assert!(f.message.contains("corrupt"), "{}", f.message);
    assert_eq!(flaky.opened.load(Ordering::SeqCst), 1, "corruption is not retried");
    assert_eq!(summary.channels[0].state, "failed");
}

#[tokio::test]
async fn nothing_is_committed_before_a_deferred_sink_acknowledges() {
    let (d, log) = sqlite();
    let sink = DeferredSink::default();
    let evs = events(5);
    let stop = CancellationToken::new();
    let run = tokio::spawn(run(
        pipeline(log.clone(), Box::new(Live(evs.clone())), vec![spec("c", Box::new(sink.clone()), d.path(), 2)]),
        stop.clone(),
    ));
    until("every event handed to the sink", || async { sink.received.lock().unwrap().len() == 5 }).await;
    // Give the channel every chance to commit early: it must not.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(committed(&log, "g.c").await, 0, "buffered, not durable: nothing committed");
    sink.ack_all();
    until("the commit after the acknowledgement", || async { committed(&log, "g.c").await == 5 }).await;
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.channels[0].counters.get("delivered"), Some(&5));
    assert_eq!(sink.durable_keys(), evs.iter().map(|e| e.key.clone()).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_deferred_sink_is_flushed_at_the_end_of_a_finite_run() {
    let (d, log) = sqlite();
    let sink = DeferredSink::default();
    let evs = events(7);
    let summary =
        run(pipeline(log.clone(), finite(evs.clone()), vec![spec("c", Box::new(sink.clone()), d.path(), 3)]), CancellationToken::new())
            .await
            .unwrap();
    assert_eq!(sink.durable_keys().len(), 7);
    assert_eq!(committed(&log, "g.c").await, 7);
    assert_eq!(summary.channels[0].state, "stopped");
}

#[tokio::test]
async fn batches_fill_up_to_max_records_while_lingering() {
    let (d, log) = sqlite();
    let sink = RecordingSink::default();
    let mut ch = spec("c", Box::new(sink.clone()), d.path(), 5);
    // Lingering far longer than the test: batches go out only when full, or at the end.
    ch.batch.linger = Duration::from_secs(3600);
    let evs = events(12);
    // One event per append: the channel sees them arrive one by one.
    let batches = evs.iter().map(|e| SourceBatch { events: crate::event::encode_all(vec![e.clone()]), state: vec![] }).collect();
    let summary = run(pipeline(log, Box::new(VecSource { batches }), vec![ch]), CancellationToken::new()).await.unwrap();
    assert_eq!(*sink.writes.lock().unwrap(), 3, "5 + 5 + the last 2 at the end");
    assert_eq!(sink.keys(), evs.iter().map(|e| e.key.clone()).collect::<Vec<_>>());
    assert_eq!(summary.channels[0].counters.get("delivered"), Some(&12));
}

#[tokio::test]
async fn a_processor_commits_its_outputs_with_its_input_and_a_channel_delivers_them() {
    use crate::testing::counting::{CountingProcessor, WindowCount};
    let (d, log) = sqlite();
    let windows = RecordingSink::default();
    let mut ch = spec("windows", Box::new(windows.clone()), d.path(), 100);
    ch.topic = "counts".into();
    let proc = ProcessorSpec {
        name: "counts".into(),
        group: "p.counts".into(),
        input: crate::log::EVENTS.into(),
        processor: Box::new(CountingProcessor::new("counts", 3, "counts", Duration::from_millis(5))),
        batch: BatchConfig { max_records: 2, max_bytes: 1 << 20, linger: Duration::ZERO },
        retry: fast_retry(),
        dead_letter: DeadLetter::new(d.path().join("p.jsonl")),
    };
    let evs: Vec<Event> = (1..=10).map(|i| created("src", if i % 3 == 0 { "b@example.org" } else { "a@example.org" }, i, "x")).collect();
    let mut p = pipeline(log.clone(), finite(evs), vec![ch]);
    p.processors.push(proc);
    let summary = run(p, CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    // Ten records in windows of three: posts 1-3, 4-6, 7-9 are complete (every
    // third post is b's); post 10 opens a window that is not.
    let got: Vec<WindowCount> = windows.delivered.lock().unwrap().iter().map(|r| serde_json::from_str(&r.payload).unwrap()).collect();
    let want: Vec<WindowCount> = (0..3)
        .map(|window| WindowCount {
            input_partition: 0,
            window,
            accounts: [("a@example.org".to_string(), 2), ("b@example.org".to_string(), 1)].into(),
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(committed(&log, "p.counts").await, 10, "the processor's input offset");
    let state = log.state_get("proc:counts", "p0").await.unwrap().unwrap();
    assert!(state.contains("\"seen\":10"), "{state}");
    let proc_summary = &summary.processors[0];
    assert_eq!(proc_summary.counters.get("processed"), Some(&10));
    assert_eq!(proc_summary.counters.get("produced"), Some(&3));
}

mod conformance {
    use super::*;
    use crate::testing::sink_conformance::{run_all, SinkHarness};

    /// The recording sink, made to fail while `failing` is set.
    struct Recording {
        sink: RecordingSink,
        failing: Arc<AtomicBool>,
    }

    struct FailingWhile(RecordingSink, Arc<AtomicBool>);

    #[async_trait::async_trait]
    impl Sink for FailingWhile {
        async fn write(&mut self, batch: &[LogRecord]) -> Result<crate::component::Written, SinkError> {
            if self.1.load(Ordering::SeqCst) {
                return Err(SinkError::transient("503 Service Unavailable (injected)"));
            }
            // The conformance suite's refused record says so in its text.
            if let Some(i) =
                batch.iter().position(|r| r.event().is_ok_and(|e| e.post.as_ref().is_some_and(|p| p.content_text == "refuse me")))
            {
                self.0.delivered.lock().unwrap().extend(batch[..i].iter().cloned());
                return Err(SinkError::permanent_at(i, "422 refused (injected)"));
            }
            self.0.write(batch).await
        }
    }

    #[async_trait::async_trait]
    impl SinkHarness for Recording {
        fn sink(&self) -> Box<dyn Sink> {
            Box::new(FailingWhile(self.sink.clone(), self.failing.clone()))
        }
        async fn delivered(&self) -> Vec<String> {
            self.sink.keys()
        }
        fn refused_event(&self) -> Result<Event, String> {
            Ok(created("conformance", "refused@example.org", 999, "refuse me"))
        }
        async fn fail_transiently(&self) -> Result<(), String> {
            self.failing.store(true, Ordering::SeqCst);
            Ok(())
        }
        async fn recover(&self) {
            self.failing.store(false, Ordering::SeqCst);
        }
        fn exactly_once(&self) -> bool {
            false
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_recording_sink_passes_the_sink_conformance_suite() {
        let h = Recording { sink: RecordingSink::default(), failing: Default::default() };
        let r = run_all(&h, "recording").await;
        assert!(r.not_applicable.is_empty(), "{r:?}");
    }

    struct Deferred(DeferredSink);

    #[async_trait::async_trait]
    impl SinkHarness for Deferred {
        fn sink(&self) -> Box<dyn Sink> {
            Box::new(self.0.clone())
        }
        async fn delivered(&self) -> Vec<String> {
            self.0.durable_keys()
        }
        fn refused_event(&self) -> Result<Event, String> {
            Err("the test's deferred sink accepts every record".into())
        }
        async fn fail_transiently(&self) -> Result<(), String> {
            Err("the test's deferred sink never fails".into())
        }
        async fn recover(&self) {}
        fn exactly_once(&self) -> bool {
            false
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_sink_passes_the_sink_conformance_suite() {
        let r = run_all(&Deferred(DeferredSink::default()), "deferred").await;
        assert_eq!(r.passed.len(), 2, "{r:?}");
    }
}
