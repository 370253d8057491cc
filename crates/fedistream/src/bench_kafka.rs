//! `fedistream bench kafka`: the Kafka log backend against what librdkafka itself
//! reaches on the same broker.
//!
//! 1. baseline: the same event payloads (JSON, keyed by account) produced by a
//!    plain idempotent librdkafka producer (acks=all, same compression and
//!    linger), then flushed — the ceiling for one producer;
//! 2. fedistream: the same events appended through `KafkaLog::append` in the
//!    ingestor's batch size, each batch one transaction with a checkpoint;
//!    and again fenced by an ingest group assignment, as `--role ingest`
//!    appends (every transaction also commits the fence's offsets);
//! 3. end to end: replay → parse → normalise → Kafka log → consumer group →
//!    channel, reporting throughput and append→delivery latency percentiles.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use fedistream_connectors::synthetic::Generator;
use fedistream_core::log::{AppendBatch, StatePut};
use fedistream_core::post::Via;
use fedistream_core::runtime::{ChannelSpec, DeliveryConfig, Pipeline, RuntimeOptions, SourceSpec};
use fedistream_core::{DeadLetter, Event, Log, LogRecord, Sink, SinkError};
use fedistream_kafka::log::{send_with_room, KafkaLog, KafkaLogConfig};
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::bench::{median, percentile, LatencySink};

/// A sink that only counts (the bench measures the log, not a channel's I/O).
struct NullSink;

#[async_trait::async_trait]
impl Sink for NullSink {
    async fn write(&mut self, _batch: &[LogRecord]) -> Result<fedistream_core::Written, SinkError> {
        Ok(fedistream_core::Written::done())
    }
}

pub async fn run(brokers: String, count: usize, accounts: usize, batch: usize, rounds: usize) -> anyhow::Result<ExitCode> {
    let mut g = Generator::new(7);
    let lines: Vec<String> = (0..count).map(|_| g.status(accounts)).collect();
    let ctx = NormalizeContext { instance: "bench.example", via: Via::Replay, received_at: Utc::now() };
    let events: Vec<Event> = lines.iter().filter_map(|l| parse_and_normalize(l, &ctx).ok()).map(|p| Event::created("bench", p)).collect();
    let payloads: Vec<(String, Vec<u8>)> = events.iter().map(|e| (e.account.clone(), e.to_json().into_bytes())).collect();
    let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
    let n = events.len();
    let tag = format!("{:x}", rand::random::<u32>());
    let batch = batch.max(1);
    let rounds = rounds.max(1);
    let mut cfg = KafkaLogConfig::new(&brokers, format!("bench-{tag}"));
    cfg.partitions = 6;
    let in_flight = RuntimeOptions::default().appends_in_flight;

    // The broker's JVM runs slower for its first seconds of load: one round
    // unmeasured, then the three producers take turns, so drift in the
    // machine's load hits them alike.
    let (mut raw, mut txn, mut log, mut fenced) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Every pipeline (hence topic set) the bench creates, deleted at the end.
    let mut pipelines = Vec::new();
    let mut fresh = |kind: &str, round: usize| {
        let mut c = cfg.clone();
        c.pipeline = format!("bench-{kind}-{tag}-{round}");
        pipelines.push(c.pipeline.clone());
        c
    };
    for round in 0..=rounds {
        let (mut r, mut t, mut l, mut f) = (0.0, 0.0, 0.0, 0.0);
        for k in 0..4 {
            match (k + round) % 4 {
                0 => r = raw_produce(&fresh("raw", round), &payloads).await?,
                1 => t = txn_produce(&fresh("rawtxn", round), &payloads, batch).await?,
                2 => l = log_append(&fresh("log", round), &events, batch, in_flight, false).await?,
                _ => f = log_append(&fresh("fenced", round), &events, batch, in_flight, true).await?,
            }
        }
        if round > 0 {
            eprintln!(
                "  round {round}: librdkafka {:.0}/s, with transactions {:.0}/s, Kafka log append {:.0}/s ({:.0}%), fenced {:.0}/s ({:.0}%)",
                n as f64 / r,
                n as f64 / t,
                n as f64 / l,
                100.0 * r / l,
                n as f64 / f,
                100.0 * r / f
            );
            raw.push(r);
            txn.push(t);
            log.push(l);
            fenced.push(f);
        }
    }
    let (raw_secs, rawtxn_secs, log_secs, fenced_secs) = (median(&raw), median(&txn), median(&log), median(&fenced));

    // What the sources add before appending: encoding each event as JSON.
    let started = Instant::now();
    for e in &events {
        std::hint::black_box(e.to_json());
    }
    let encode_secs = started.elapsed().as_secs_f64();

    // 3. End to end through the runtime.
    let mut cfg3 = cfg.clone();
    cfg3.pipeline = format!("bench-e2e-{tag}");
    let e2e_log = KafkaLog::open(cfg3.clone()).await?;
    let dir = std::env::temp_dir().join(format!("fedistream-bench-kafka-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("input.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n")?;
    let samples = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let delivery = DeliveryConfig { max_batch: 1000, ..DeliveryConfig::default() };
    // Deliver-only and ingest-only runtimes, as `--role deliver` and `--role ingest` run.
    let deliver = Pipeline {
        log: e2e_log.clone(),
        processors: vec![],
        sources: vec![],
        channels: vec![ChannelSpec {
            name: "null".into(),
            group: cfg3.channel_group("null"),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(LatencySink { inner: Box::new(NullSink), samples: samples.clone() }),
            route: None,
            batch: delivery.batch(),
            retry: delivery.retry(),
            dead_letter: DeadLetter::new(dir.join("dl-channel.jsonl")),
        }],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let ingest = Pipeline {
        log: e2e_log.clone(),
        processors: vec![],
        sources: vec![SourceSpec::new(
            "bench",
            Box::new(fedistream_connectors::replay::ReplaySource::new(fedistream_connectors::replay::ReplaySourceConfig {
                path: input.clone(),
                rate: None,
                instance: "bench".into(),
                include_unlisted: true,
                owned: true,
            })),
            DeadLetter::new(dir.join("dl-source.jsonl")),
        )],
        channels: vec![],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let stop = CancellationToken::new();
    let deliver_task = tokio::spawn(fedistream_core::runtime::run(deliver, stop.clone()));
    let started = Instant::now();
    let ingested = fedistream_core::runtime::run(ingest, CancellationToken::new()).await?;
    let appended = ingested.log.counters.get("appended").copied().unwrap_or(0) as usize;
    let deadline = Instant::now() + Duration::from_secs(300);
    while samples.lock().unwrap_or_else(|p| p.into_inner()).len() < appended {
        if Instant::now() > deadline {
            bail!("only {} of {appended} events delivered after 5 minutes", samples.lock().unwrap().len());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let e2e_secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let summary = deliver_task.await??;
    let _ = std::fs::remove_dir_all(&dir);
    drop(e2e_log);
    // Hundreds of partitions per run would slow the broker for the next one.
    pipelines.push(cfg3.pipeline.clone());
    drop_topics(&cfg, &pipelines).await;
    let mut lat = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_unstable();

    let mb = bytes as f64 / 1e6;
    println!(
        "fedistream bench kafka ({brokers}, {n} events, avg {} B JSON, batches of {batch}, {in_flight} appends in flight; median of {rounds} rounds)",
        bytes / n.max(1)
    );
    println!(
        "  librdkafka alone       {:>9.0} events/s  {:>6.1} MB/s   (idempotent producer, acks=all, {})",
        n as f64 / raw_secs,
        mb / raw_secs,
        cfg.compression
    );
    println!(
        "  librdkafka, transactions {:>6.0} events/s  {:>6.1} MB/s   (the same, one transaction per batch of {batch})",
        n as f64 / rawtxn_secs,
        mb / rawtxn_secs
    );
    println!(
        "  Kafka log append       {:>9.0} events/s  {:>6.1} MB/s   {:.0}% of librdkafka alone, {:.0}% of librdkafka with transactions",
        n as f64 / log_secs,
        mb / log_secs,
        100.0 * raw_secs / log_secs,
        100.0 * rawtxn_secs / log_secs
    );
    println!(
        "  Kafka log append, fenced {:>7.0} events/s  {:>6.1} MB/s   {:.0}% of librdkafka alone (as --role ingest appends: under its group assignment)",
        n as f64 / fenced_secs,
        mb / fenced_secs,
        100.0 * raw_secs / fenced_secs
    );
    println!(
        "  (JSON encoding, done by the sources before the append: {:.0} events/s, {:.0}% of the append's time again)",
        n as f64 / encode_secs,
        100.0 * encode_secs / log_secs
    );
    println!(
        "  end to end            {:>9.0} statuses/s  (replay → parse → normalise → Kafka log → consumer group → channel; {} delivered)",
        count as f64 / e2e_secs,
        lat.len()
    );
    println!(
        "  latency append→delivered  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&lat, 0.50) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    if !summary.failures.is_empty() {
        bail!("failures: {:?}", summary.failures);
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds for a plain idempotent librdkafka producer to produce and flush
/// every payload: the ceiling for one producer.
async fn raw_produce(cfg: &KafkaLogConfig, payloads: &[(String, Vec<u8>)]) -> anyhow::Result<f64> {
    // Creates the topics (and proves the broker answers) before timing.
    drop(KafkaLog::open(cfg.clone()).await.with_context(|| format!("Kafka at {}", cfg.brokers))?);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &cfg.compression)
        .set("linger.ms", "5")
        .create()?;
    let topic = cfg.events_topic();
    // The idempotent producer gets its producer id on the first send: before timing.
    if let Some((key, payload)) = payloads.first() {
        let warm = FutureRecord::to(&topic).key(key.as_str()).payload(payload.as_slice());
        if let Ok(Err((e, _))) = send_with_room(&producer, warm).await.context("baseline produce failed")?.await {
            bail!("baseline delivery failed: {e}");
        }
    }
    let started = Instant::now();
    let mut pending = Vec::with_capacity(payloads.len());
    for (key, payload) in payloads {
        let rec = FutureRecord::to(&topic).key(key.as_str()).payload(payload.as_slice());
        pending.push(send_with_room(&producer, rec).await.context("baseline produce failed")?);
    }
    for d in pending {
        if let Ok(Err((e, _))) = d.await {
            bail!("baseline delivery failed: {e}");
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(started.elapsed().as_secs_f64())
}

/// The same with the log's guarantee: one transaction per batch (pre-encoded
/// payloads, no checkpoint record).
async fn txn_produce(cfg: &KafkaLogConfig, payloads: &[(String, Vec<u8>)], batch: usize) -> anyhow::Result<f64> {
    drop(KafkaLog::open(cfg.clone()).await?);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("transactional.id", cfg.prefix())
        .set("acks", "all")
        .set("compression.type", &cfg.compression)
        .set("linger.ms", "5")
        .create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    let topic = cfg.events_topic();
    let started = Instant::now();
    for chunk in payloads.chunks(batch) {
        producer.begin_transaction()?;
        let mut pending = Vec::with_capacity(chunk.len());
        for (key, payload) in chunk {
            let rec = FutureRecord::to(&topic).key(key.as_str()).payload(payload.as_slice());
            pending.push(send_with_room(&producer, rec).await.context("baseline produce failed")?);
        }
        // Wait for the acks first (commit_transaction's own flush polls in 100 ms steps).
        while producer.in_flight_count() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.commit_transaction(Duration::from_secs(60))).await??;
        for d in pending {
            if let Ok(Err((e, _))) = d.await {
                bail!("baseline delivery failed: {e}");
            }
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds to append every event through the Kafka log, `batch` events plus a
/// checkpoint per append, with up to `in_flight` appends started as the
/// ingestor keeps them; `fenced`: under an ingest group assignment, as the
/// ingest role appends.
async fn log_append(cfg: &KafkaLogConfig, events: &[Event], batch: usize, in_flight: usize, fenced: bool) -> anyhow::Result<f64> {
    let kafka = KafkaLog::open(cfg.clone()).await?;
    // The membership lives until the appends are done.
    let mut membership = None;
    let log: Arc<dyn Log> = if fenced {
        let m = fedistream_kafka::assign::Membership::join(cfg, Duration::from_secs(30))?;
        let mut rx = m.watch();
        let a = tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|a| a.fence.is_some()))
            .await
            .context("no ingest group assignment within 60 s")??
            .clone();
        membership = Some(m);
        kafka.fenced(a.fence.expect("waited for it"))
    } else {
        kafka
    };
    // The writer's transactional producer is made on the first write (finding
    // the transaction coordinator and a producer id took up to a second on a
    // fresh pipeline): like the baselines' init_transactions, before timing.
    log.state_put(vec![StatePut::set("bench", "started", "1")]).await?;
    // Batches built before timing: the clone is the bench's, not the log's.
    let batches: Vec<AppendBatch> = events
        .chunks(batch)
        .enumerate()
        .map(|(i, chunk)| AppendBatch {
            events: fedistream_core::event::encode_all(chunk.to_vec()),
            state: vec![StatePut::set("checkpoint", "bench", i.to_string())],
        })
        .collect();
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for b in batches {
        if pending.len() >= in_flight.max(1) {
            let done: fedistream_core::log::AppendFuture = pending.pop_front().expect("non-empty");
            done.await?;
        }
        pending.push_back(log.start_append(b).await?);
    }
    for done in pending {
        done.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(membership);
    Ok(secs)
}

/// Delete the bench's topics (best effort: a failure only leaves them behind).
pub(crate) async fn drop_topics(cfg: &KafkaLogConfig, pipelines: &[String]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        match ClientConfig::new().set("bootstrap.servers", &cfg.brokers).create() {
            Ok(a) => a,
            Err(e) => return eprintln!("  (could not delete the bench's topics: {e})"),
        };
    let topics: Vec<String> = pipelines
        .iter()
        .flat_map(|p| {
            let mut c = cfg.clone();
            c.pipeline = p.clone();
            [c.events_topic(), c.state_topic(), c.state_slots_topic(), c.ingest_topic()]
        })
        .collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = admin.delete_topics(&names, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await {
        eprintln!("  (could not delete the bench's topics: {e})");
    }
}
