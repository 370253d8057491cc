use super::ingest::{ingestor, Fp};
use super::*;
use crate::component::Written;
use crate::component::{AppendSummary, SourceBatch};
use crate::error::SinkError;
use crate::event::{EventKind, LogRecord};
use crate::log::{AppendBatch, StatePut};
use crate::sqlite::{SqliteLog, SqliteOptions};
use crate::testing::{created, post, RecordingSink, VecSource};
use tokio::sync::oneshot;

fn log() -> (tempfile::TempDir, Arc<dyn Log>) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    (dir, log)
}

fn fast_retry() -> RetryConfig {
    RetryConfig { initial: Duration::from_millis(1), max: Duration::from_millis(5), pause: Duration::from_millis(20) }
}

fn channel(name: &str, sink: RecordingSink, dl: &std::path::Path) -> ChannelSpec {
    ChannelSpec {
        name: name.into(),
        group: format!("g.{name}"),
        topic: crate::log::EVENTS.into(),
        sink: Box::new(sink),
        route: None,
        batch: BatchConfig { max_records: 3, max_bytes: 1 << 20, linger: Duration::ZERO },
        retry: fast_retry(),
        dead_letter: DeadLetter::new(dl.join(format!("{name}.jsonl"))),
    }
}

fn pipeline(log: Arc<dyn Log>, batches: Vec<SourceBatch>, channels: Vec<ChannelSpec>) -> Pipeline {
    Pipeline {
        log,
        sources: vec![SourceSpec::new("src", Box::new(VecSource { batches }), DeadLetter::new("/nonexistent/dl.jsonl"))],
        processors: vec![],
        channels,
        options: RuntimeOptions::default(),
        progress: None,
    }
}

fn batch(events: Vec<Event>) -> SourceBatch {
    SourceBatch { events: crate::event::encode_all(events), state: vec![] }
}

#[tokio::test]
async fn finite_run_delivers_everything_once_and_exits() {
    let (d, log) = log();
    let sink = RecordingSink::default();
    let evs: Vec<Event> = (1..=10).map(|n| created("src", "a@example.org", n, "x")).collect();
    let p = pipeline(log, vec![batch(evs[..6].to_vec()), batch(evs[6..].to_vec())], vec![channel("c", sink.clone(), d.path())]);
    let summary = run(p, CancellationToken::new()).await.unwrap();
    assert_eq!(sink.keys(), evs.iter().map(|e| e.key.clone()).collect::<Vec<_>>());
    assert!(*sink.closed.lock().unwrap(), "sink closed at the end");
    assert_eq!(summary.channels[0].counters.get("delivered"), Some(&10));
    assert!(summary.failures.is_empty());
}

#[tokio::test]
async fn duplicates_are_dropped_and_edits_become_updates() {
    let (d, log) = log();
    let sink = RecordingSink::default();
    let first = created("src", "a@example.org", 1, "hello");
    let mut edited_post = post("a@example.org", 1, "hello, edited");
    edited_post.content_html = "<p>hello, edited</p>".into();
    let edited = Event::created("src", edited_post); // REST sees the edit as just "the post"
    let mut deleted = first.clone();
    deleted.kind = EventKind::Deleted;
    deleted.post = None;
    let p = pipeline(
        log.clone(),
        vec![
            batch(vec![first.clone(), first.clone()]), // stream and REST in one batch
            batch(vec![first.clone()]),                // REST again later
            batch(vec![edited]),
            batch(vec![deleted.clone()]),
            batch(vec![deleted, first]), // a late duplicate of a deleted post
        ],
        vec![channel("c", sink.clone(), d.path())],
    );
    let summary = run(p, CancellationToken::new()).await.unwrap();
    assert_eq!(sink.kinds(), vec![EventKind::Created, EventKind::Updated, EventKind::Deleted]);
    assert_eq!(summary.channels[0].counters.get("delivered"), Some(&3));
    // The dedup index is durable: a new run sees the same post as a duplicate.
    let sink2 = RecordingSink::default();
    let p = pipeline(log, vec![batch(vec![created("src", "a@example.org", 1, "hello")])], vec![channel("c2", sink2.clone(), d.path())]);
    run(p, CancellationToken::new()).await.unwrap();
    assert_eq!(
        sink2.kinds(),
        vec![EventKind::Created, EventKind::Updated, EventKind::Deleted],
        "c2 reads the log from the start and nothing new was appended"
    );
}

/// A refresh of the interaction counts is an `updated` event with the version
/// already stored: kept (not a duplicate), with its new counts; dropped once
/// the post is deleted.
#[tokio::test]
async fn a_counts_refresh_of_a_stored_version_is_kept_as_an_update() {
    let (d, log) = log();
    let sink = RecordingSink::default();
    let first = created("src", "a@example.org", 1, "hello");
    let mut refreshed = first.clone();
    if let Some(p) = refreshed.post.as_mut() {
        p.counts.favourites = 7;
    }
    let refresh = |ev: &Event| SourceBatch { events: vec![crate::event::EncodedEvent::from(ev.clone()).counts_refresh()], state: vec![] };
    let mut deleted = first.clone();
    deleted.kind = EventKind::Deleted;
    deleted.post = None;
    let p = pipeline(
        log,
        vec![
            batch(vec![first.clone()]),
            refresh(&refreshed),
            batch(vec![refreshed.clone()]), // the same counts read again without the mark: a duplicate
            batch(vec![deleted]),
            refresh(&refreshed),
        ],
        vec![channel("c", sink.clone(), d.path())],
    );
    run(p, CancellationToken::new()).await.unwrap();
    assert_eq!(sink.kinds(), vec![EventKind::Created, EventKind::Updated, EventKind::Deleted]);
    let got = sink.delivered.lock().unwrap().clone();
    let ev = got[1].event().unwrap();
    assert_eq!(ev.post.as_ref().map(|p| p.counts.favourites), Some(7));
    assert_eq!(ev.fingerprint(), first.fingerprint(), "the version did not change");
}

#[tokio::test]
async fn transient_errors_are_retried_without_loss_or_duplicates() {
    let (d, log) = log();
    let sink = RecordingSink::default();
    sink.fail_next(SinkError::transient("boom 1"));
    sink.fail_next(SinkError::transient("boom 2"));
    let evs: Vec<Event> = (1..=7).map(|n| created("src", "a@example.org", n, "x")).collect();
    let p = pipeline(log, vec![batch(evs.clone())], vec![channel("c", sink.clone(), d.path())]);
    let summary = run(p, CancellationToken::new()).await.unwrap();
    assert_eq!(sink.keys(), evs.iter().map(|e| e.key.clone()).collect::<Vec<_>>());
    assert_eq!(summary.channels[0].counters.get("retries"), Some(&2));
}

#[tokio::test]
async fn a_permanent_failure_dead_letters_one_event_and_the_rest_goes_on() {
    let (d, log) = log();
    let sink = RecordingSink::default();
    sink.fail_next(SinkError::permanent_at(1, "422 Validation failed: Text is too long"));
    let evs: Vec<Event> = (1..=5).map(|n| created("src", "a@example.org", n, "x")).collect();
    let p = pipeline(log, vec![batch(evs.clone())], vec![channel("c", sink.clone(), d.path())]);
    let summary = run(p, CancellationToken::new()).await.unwrap();
    let expected: Vec<String> = evs.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, e)| e.key.clone()).collect();
    assert_eq!(sink.keys(), expected);
    let dl = std::fs::read_to_string(d.path().join("c.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(dl.lines().next().unwrap()).unwrap();
    assert_eq!(line["reason"], "422 Validation failed: Text is too long");
    assert_eq!(line["event"]["key"], evs[1].key.as_str());
    assert_eq!(summary.channels[0].counters.get("dead_lettered"), Some(&1));
}

#[tokio::test]
async fn an_auth_error_pauses_one_channel_while_the_other_delivers() {
    let (d, log) = log();
    let paused = RecordingSink::default();
    paused.fail_next(SinkError::new(ErrorKind::Auth, "401 The access token is invalid"));
    let healthy = RecordingSink::default();
    let evs: Vec<Event> = (1..=4).map(|n| created("src", "a@example.org", n, "x")).collect();
    let p = pipeline(
        log,
        vec![batch(evs.clone())],
        vec![channel("paused", paused.clone(), d.path()), channel("healthy", healthy.clone(), d.path())],
    );
    let summary = run(p, CancellationToken::new()).await.unwrap();
    // After its pause the first channel retried and delivered too: nothing lost.
    assert_eq!(healthy.keys().len(), 4);
    assert_eq!(paused.keys().len(), 4);
    let c = summary.channels.iter().find(|c| c.name == "paused").unwrap();
    assert_eq!(c.counters.get("retries"), Some(&1));
}

#[tokio::test]
async fn routes_filter_per_channel() {
    let (d, log) = log();
    let sink = RecordingSink::default();
    let mut ch = channel("c", sink.clone(), d.path());
    ch.route = Some(Arc::new(|e: &Event| e.account == "b@example.org"));
    let evs = vec![created("src", "a@example.org", 1, "x"), created("src", "b@example.org", 2, "y")];
    let p = pipeline(log, vec![batch(evs)], vec![ch]);
    let summary = run(p, CancellationToken::new()).await.unwrap();
    assert_eq!(sink.keys().len(), 1);
    assert_eq!(summary.channels[0].counters.get("filtered"), Some(&1));
}

/// A log whose started appends wait for the test to release them (a network
/// backend's commit in flight), and whose first append can be made to fail.
struct GatedLog {
    inner: Arc<dyn Log>,
    started: mpsc::UnboundedSender<usize>,
    gate: Arc<tokio::sync::Semaphore>,
    fail_first: bool,
    n: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Log for GatedLog {
    async fn append(&self, batch: AppendBatch) -> Result<crate::log::AppendReceipt, crate::error::LogError> {
        self.start_append(batch).await?.await
    }
    async fn start_append(&self, batch: AppendBatch) -> Result<crate::log::AppendFuture, crate::error::LogError> {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = self.started.send(batch.events.len());
        let (inner, gate, fail) = (self.inner.clone(), self.gate.clone(), self.fail_first && n == 0);
        Ok(Box::pin(async move {
            gate.acquire().await.expect("gate open").forget();
            if fail {
                return Err(crate::error::LogError::Unavailable("injected".into()));
            }
            inner.append(batch).await
        }))
    }
    async fn state_get(&self, ns: &str, key: &str) -> Result<Option<String>, crate::error::LogError> {
        self.inner.state_get(ns, key).await
    }
    async fn state_get_many(&self, ns: &str, keys: &[String]) -> Result<HashMap<String, String>, crate::error::LogError> {
        self.inner.state_get_many(ns, keys).await
    }
    async fn state_scan(&self, ns: &str) -> Result<Vec<(String, String)>, crate::error::LogError> {
        self.inner.state_scan(ns).await
    }
    async fn state_put(&self, puts: Vec<StatePut>) -> Result<(), crate::error::LogError> {
        self.inner.state_put(puts).await
    }
    async fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn crate::log::Consumer>, crate::error::LogError> {
        self.inner.consumer(topic, group).await
    }
    async fn info(&self) -> Result<crate::log::LogInfo, crate::error::LogError> {
        self.inner.info().await
    }
    async fn enforce_retention(&self) -> Result<u64, crate::error::LogError> {
        self.inner.enforce_retention().await
    }
}

/// An ingestor fed by hand over a gated log: returns the request queue, the
/// "append started" signals, the gate, and the ingestor task.
#[allow(clippy::type_complexity)]
fn gated_ingestor(
    inner: Arc<dyn Log>,
    fail_first: bool,
) -> (
    mpsc::Sender<IngestRequest>,
    mpsc::UnboundedReceiver<usize>,
    Arc<tokio::sync::Semaphore>,
    tokio::task::JoinHandle<Result<(), crate::error::LogError>>,
) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let log: Arc<dyn Log> = Arc::new(GatedLog { inner, started: started_tx, gate: gate.clone(), fail_first, n: Default::default() });
    let (tx, rx) = mpsc::channel(8);
    let (done, _) = watch::channel(false);
    let task = tokio::spawn(ingestor(log, rx, 4096, 3, Status::new("ingest", "log"), done));
    (tx, started, gate, task)
}

async fn request(tx: &mpsc::Sender<IngestRequest>, events: Vec<Event>) -> oneshot::Receiver<Result<AppendSummary, crate::error::LogError>> {
    let (reply, rx) = oneshot::channel();
    tx.send((batch(events), reply)).await.unwrap();
    rx
}

#[tokio::test]
async fn a_post_in_two_appends_in_flight_is_appended_once() {
    let (_d, inner) = log();
    let (tx, mut started, gate, task) = gated_ingestor(inner.clone(), false);
    let first = request(&tx, vec![created("src", "a@example.org", 1, "x")]).await;
    assert_eq!(started.recv().await, Some(1), "the first append started");
    // The same post (e.g. from REST after the stream) while the first is in flight.
    let second = request(&tx, vec![created("src", "a@example.org", 1, "x"), created("src", "a@example.org", 2, "y")]).await;
    assert_eq!(started.recv().await, Some(1), "the second started before the first was durable, without the duplicate");
    gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap(), AppendSummary { appended: 1, duplicates: 0 });
    assert_eq!(second.await.unwrap().unwrap(), AppendSummary { appended: 1, duplicates: 1 });
    drop(tx);
    task.await.unwrap().unwrap();
    let mut c = inner.consumer(crate::log::EVENTS, "check").await.unwrap();
    let got = crate::testing::conformance::poll_n(&mut c, 2).await;
    assert_eq!(got.iter().map(|r| r.event().unwrap().status_id.clone()).collect::<Vec<_>>(), vec!["1", "2"]);
    assert!(c.poll(10, Duration::from_millis(50)).await.unwrap().is_empty(), "post 1 once");
}

#[tokio::test]
async fn when_an_append_fails_every_later_one_fails_too() {
    let (_d, inner) = log();
    let (tx, mut started, gate, task) = gated_ingestor(inner.clone(), true);
    let first = request(&tx, vec![created("src", "a@example.org", 1, "x")]).await;
    started.recv().await.unwrap();
    let second = request(&tx, vec![created("src", "a@example.org", 2, "y")]).await;
    started.recv().await.unwrap();
    gate.add_permits(2);
    assert!(first.await.unwrap().is_err());
    assert!(second.await.unwrap().is_err(), "a later batch (and its checkpoint) must not be confirmed");
    assert!(task.await.unwrap().is_err(), "the ingestor stops on a log failure");
    let mut c = inner.consumer(crate::log::EVENTS, "check").await.unwrap();
    assert!(c.poll(10, Duration::from_millis(50)).await.unwrap().is_empty(), "nothing after the failed append was stored");
}

/// A sink whose `open` never finishes (an unreachable service without a timeout).
struct HangingOpen;

#[async_trait::async_trait]
impl Sink for HangingOpen {
    async fn open(&mut self, _ctx: &crate::component::SinkContext) -> Result<(), SinkError> {
        std::future::pending().await
    }
    async fn write(&mut self, _batch: &[LogRecord]) -> Result<Written, SinkError> {
        Ok(Written::done())
    }
}

#[tokio::test]
async fn a_hanging_open_is_stopped_at_the_drain_deadline() {
    let (d, log) = log();
    let mut ch = channel("stuck", RecordingSink::default(), d.path());
    ch.sink = Box::new(HangingOpen);
    let mut p = pipeline(log, vec![batch(vec![created("src", "a@example.org", 1, "x")])], vec![ch]);
    p.options.drain_deadline = Duration::from_millis(200);
    let summary = run(p, CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let c = summary.channels.iter().find(|c| c.name == "stuck").unwrap();
    assert_eq!(c.state, "stopped", "the channel task stopped itself (not aborted mid-open)");
}

#[test]
fn stored_fingerprints_are_read_back_in_every_form() {
    assert_eq!(Fp::of(""), Fp::Never);
    assert_eq!(Fp::of("deleted"), Fp::Deleted);
    assert_eq!(Fp::of("00000000000000ff"), Fp::Hex(255));
    assert_eq!(
        Fp::of(&crate::testing::created("s", "a@b.c", 1, "x").fingerprint()),
        Fp::of(&crate::testing::created("s", "a@b.c", 1, "x").fingerprint())
    );
    // Upper case, other lengths and other text are kept as text, never confused with a number.
    assert_eq!(Fp::of("00000000000000FF"), Fp::Text("00000000000000FF".into()));
    assert_eq!(Fp::of("ff"), Fp::Text("ff".into()));
    assert_ne!(Fp::of("00000000000000ff"), Fp::of("ff"));
}
