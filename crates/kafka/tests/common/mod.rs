//! Helpers shared by the Kafka channel tests: topics on the real broker, a
//! consumer reading them back, fixture events.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use fedistream_core::post::Via;
use fedistream_core::{Event, EventKind, Log, LogRecord, Position, SinkContext};
use fedistream_kafka::channel::{Format, KafkaChannelConfig};
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The broker (`scripts/kafka up`); fails, saying how to start one, if none answers.
pub fn brokers() -> String {
    fedistream_kafka::testing::brokers()
}

pub fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("admin client")
}

/// A fresh topic with `partitions` partitions, ready (leaders elected) when this returns.
pub async fn create_topic(label: &str, partitions: i32) -> String {
    let name = format!("fedistream-test-{label}-{:016x}", rand::random::<u64>());
    let admin = admin();
    // Fail loudly, not skip, when there is no broker.
    let md = tokio::task::spawn_blocking({
        let admin_md = ClientConfig::new().set("bootstrap.servers", brokers()).create::<BaseConsumer>().expect("client");
        move || admin_md.fetch_metadata(None, Duration::from_secs(5))
    })
    .await
    .unwrap();
    if let Err(e) = md {
        panic!("the Kafka broker at {} does not answer ({e}): run `scripts/kafka up` (or set FEDISTREAM_KAFKA_BROKERS)", brokers());
    }
    let res = admin
        .create_topics(
            &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    // Poll the metadata until every partition has a leader.
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    loop {
        let ready = probe
            .fetch_metadata(Some(&name), Duration::from_secs(2))
            .ok()
            .and_then(|md| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == name)
                    .map(|t| (t.error().is_none(), t.partitions().len(), t.partitions().iter().all(|p| p.leader() >= 0)))
            })
            .is_some_and(|(ok, n, led)| ok && n == partitions as usize && led);
        if ready {
            return name;
        }
        assert!(Instant::now() < deadline, "topic {name} has no leaders after 20s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A consumed record.
#[derive(Debug, Clone)]
pub struct Got {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
    pub partition: i32,
}

/// Read `n` records from every partition of `topic` from the beginning, failing after 30s.
pub async fn consume(topic: &str, n: usize) -> Vec<Got> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c = reader();
        let md = c.fetch_metadata(Some(&topic), Duration::from_secs(5)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(Instant::now() < deadline, "only {} of {n} records arrived in 30s: {out:?}", out.len());
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.expect("consume");
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
                .unwrap_or_default();
            out.push(Got {
                key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
                partition: m.partition(),
            });
        }
        out
    })
    .await
    .unwrap()
}

pub fn ctx(name: &str) -> SinkContext {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let log = fedistream_core::sqlite::SqliteLog::open(dir.path().join("log.db"), Default::default()).unwrap();
    SinkContext::new(name, log as Arc<dyn Log>)
}

pub fn config(topic: &str) -> KafkaChannelConfig {
    serde_json::from_value(serde_json::json!({ "brokers": brokers(), "topic": topic, "timeout": "10s" })).unwrap()
}

pub fn avro_config(topic: &str, registry: &str) -> KafkaChannelConfig {
    KafkaChannelConfig { format: Format::Avro, schema_registry: Some(registry.into()), ..config(topic) }
}

/// For each status fixture: created, updated (edited text), deleted. Timestamps in
/// whole milliseconds, as Avro carries them.
pub fn events() -> Vec<Event> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon");
    let received_at = Utc.timestamp_millis_opt(1_767_225_600_123).unwrap();
    let ctx = NormalizeContext { instance: "mastodon.example", via: Via::Stream, received_at };
    let mut out = Vec::new();
    for f in ["status_plain.json", "status_media_tags_mentions.json", "status_poll.json", "status_reblog.json"] {
        let post = parse_and_normalize(&std::fs::read_to_string(format!("{dir}/{f}")).unwrap(), &ctx).unwrap();
        let created = Event::created("main", post.clone());
        let mut edited = post;
        edited.content_text = format!("{} (edited)", edited.content_text);
        edited.edited_at = Some(received_at);
        let updated = Event::updated("main", edited);
        let mut deleted = created.clone();
        deleted.kind = EventKind::Deleted;
        deleted.post = None;
        out.extend([created, updated, deleted]);
    }
    out
}

pub fn records(events: &[Event]) -> Vec<LogRecord> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| LogRecord::from_event(Position { partition: 0, offset: i as u64 + 1 }, Utc::now(), e.clone()))
        .collect()
}

/// The consumed records of one key, in partition order.
pub fn by_key(got: &[Got]) -> HashMap<String, Vec<Got>> {
    let mut m: HashMap<String, Vec<Got>> = HashMap::new();
    for g in got {
        m.entry(g.key.clone()).or_default().push(g.clone());
    }
    m
}

pub fn assert_headers(g: &Got, e: &Event) {
    assert_eq!(g.headers.get("fedistream-event").map(String::as_str), Some(e.kind.as_str()), "{g:?}");
    assert_eq!(g.headers.get("fedistream-instance"), Some(&e.instance), "{g:?}");
    assert_eq!(g.headers.get("fedistream-source"), Some(&e.source), "{g:?}");
    assert_eq!(g.headers.get("fedistream-schema-version").map(String::as_str), Some("2"), "{g:?}");
}

/// A topic name no test used before.
pub fn fresh_topic_name(label: &str) -> String {
    format!("fedistream-test-{label}-{:016x}", rand::random::<u64>())
}

/// The partition count and replication the broker reports for `topic` (`None`: it does not exist).
pub fn describe_topic(topic: &str) -> Option<(usize, usize)> {
    let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let md = probe.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() {
        return None;
    }
    Some((t.partitions().len(), t.partitions().first().map_or(0, |p| p.replicas().len())))
}

/// The keys of every record in `topic` now (up to each partition's high
/// watermark), partition by partition, in order.
pub async fn keys_in(topic: &str) -> Vec<String> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c = reader();
        let md = c.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
        let mut out = Vec::new();
        for p in md.topics()[0].partitions() {
            let (low, high) = c.fetch_watermarks(&topic, p.id(), Duration::from_secs(10)).unwrap();
            if high <= low {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p.id(), Offset::Offset(low)).unwrap();
            c.assign(&tpl).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                assert!(Instant::now() < deadline, "partition {} of {topic} not read to {high} in 30s", p.id());
                let Some(m) = c.poll(Duration::from_millis(200)) else { continue };
                let m = m.expect("consume");
                out.push(String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap());
                if m.offset() + 1 >= high {
                    break;
                }
            }
        }
        out
    })
    .await
    .unwrap()
}

/// A consumer of its own (random) group that commits nothing, for reading topics back.
fn reader() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("fedistream-test-{:x}", rand::random::<u64>()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}
