//! The Kafka channel against a real broker (`scripts/kafka up`; brokers from
//! `FEDISTREAM_KAFKA_BROKERS`, default 127.0.0.1:9092): JSON records, topics
//! created on request (`create_topic`), error classification. Each test uses
//! its own topic (the broker does not auto-create). A broker that does not
//! answer fails the tests, saying how to start one. The Avro tests, with the
//! schema registry, are in kafka_avro.rs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use fedistream_core::{ErrorKind, Event, EventKind, Sink};
use fedistream_kafka::channel::{CreateTopic, KafkaChannel, KafkaChannelConfig};

#[tokio::test]
async fn json_records_keys_headers_and_tombstones() {
    let topic = create_topic("json", 3).await;
    let evs = events();
    let recs = records(&evs);
    let mut ch = KafkaChannel::new(config(&topic)).unwrap();
    ch.open(&ctx("json")).await.unwrap();
    ch.write(&recs[..5]).await.unwrap();
    ch.write(&recs[5..]).await.unwrap();
    ch.close().await.unwrap();

    let got = consume(&topic, evs.len()).await;
    let keyed = by_key(&got);
    assert_eq!(keyed.len(), 4);
    for chunk in evs.chunks(3) {
        let key = &chunk[0].key;
        let versions = &keyed[key];
        // One partition per key, in the order written.
        assert_eq!(versions.len(), 3, "{versions:?}");
        assert!(versions.iter().all(|g| g.partition == versions[0].partition));
        for (g, e) in versions.iter().zip(chunk) {
            assert_headers(g, e);
            match e.kind {
                EventKind::Deleted => {
                    assert_eq!(g.value, None, "deleted → tombstone on the same key")
                }
                _ => {
                    let v: Event = serde_json::from_slice(g.value.as_deref().unwrap()).unwrap();
                    assert_eq!(&v, e);
                }
            }
        }
    }

    // tombstones = false: the deletion is an ordinary record.
    let topic2 = create_topic("json-no-tombstones", 1).await;
    let mut ch = KafkaChannel::new(KafkaChannelConfig { tombstones: false, ..config(&topic2) }).unwrap();
    ch.open(&ctx("json2")).await.unwrap();
    ch.write(&recs[..3]).await.unwrap();
    let got = consume(&topic2, 3).await;
    let deleted: Event = serde_json::from_slice(got[2].value.as_deref().expect("a value, not a tombstone")).unwrap();
    assert_eq!(deleted, evs[2]);
    assert_eq!(got[2].key, evs[2].key);
    assert_headers(&got[2], &evs[2]);
}

#[tokio::test]
async fn unknown_topic_is_a_config_error_at_open_in_bounded_time() {
    // Checks the broker answers, and gives a topic name that surely does not exist.
    let existing = create_topic("probe", 1).await;
    let topic = format!("{existing}-missing");
    let mut ch = KafkaChannel::new(KafkaChannelConfig { timeout: Duration::from_secs(5), ..config(&topic) }).unwrap();
    // Bounded: a deadline far beyond the 5 s timeout, not a measured duration.
    let e = tokio::time::timeout(Duration::from_secs(120), ch.open(&ctx("missing"))).await.expect("open hung").unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains(&format!("topic `{topic}`")) && e.message.contains("does not exist"), "{e}");
    assert!(e.message.contains("kafka channel `missing`"), "{e}");
    // Without create_topic the channel creates nothing, and says how it could.
    assert!(e.message.contains("create_topic"), "{e}");
    assert_eq!(describe_topic(&topic), None);
}

#[tokio::test]
async fn unreachable_brokers_are_transient_in_bounded_time() {
    // Nothing listens on port 1 of loopback.
    let cfg = KafkaChannelConfig { brokers: "127.0.0.1:1".into(), timeout: Duration::from_secs(2), ..config("anything") };
    let mut ch = KafkaChannel::new(cfg).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(120), ch.open(&ctx("down"))).await.expect("open hung").unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("127.0.0.1:1"), "{e}");
}

#[tokio::test]
async fn a_record_too_large_is_permanent_at_its_index_and_the_rest_is_delivered() {
    let topic = create_topic("too-large", 1).await;
    let mut evs = events();
    evs.truncate(3);
    let mut huge = evs[1].clone();
    if let Some(p) = huge.post.as_mut() {
        p.content_text = "x".repeat(4000);
    }
    evs[1] = huge;
    let cfg = KafkaChannelConfig {
        // librdkafka refuses records above this before sending them.
        properties: [("message.max.bytes".to_string(), "3000".to_string())].into(),
        ..config(&topic)
    };
    let mut ch = KafkaChannel::new(cfg).unwrap();
    ch.open(&ctx("large")).await.unwrap();
    let recs = records(&evs);
    let e = ch.write(&recs).await.unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert_eq!((e.kind, e.failed_index), (ErrorKind::Permanent, Some(1)), "{e}");
    // The runtime dead-letters record 1 and writes the rest.
    ch.write(&recs[2..]).await.unwrap();
    let got = consume(&topic, 2).await;
    assert_eq!(got[0].value.as_deref().map(|v| serde_json::from_slice::<Event>(v).unwrap()), Some(evs[0].clone()));
    assert_eq!((got[1].key.as_str(), got[1].value.as_ref()), (evs[2].key.as_str(), None));
}

/// What was logged on this thread (the channel's `open` runs on the test's
/// single-threaded runtime), from `info` up.
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let sub =
            tracing_subscriber::fmt().with_ansi(false).with_max_level(tracing::Level::INFO).with_writer(move || Buf(w.clone())).finish();
        (Logs(buf), tracing::subscriber::set_default(sub))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn with_create(topic: &str, ct: CreateTopic) -> KafkaChannelConfig {
    KafkaChannelConfig { create_topic: Some(ct), ..config(topic) }
}

/// A topic setting as the broker reports it.
async fn topic_setting(topic: &str, key: &str) -> Option<String> {
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    let got = admin()
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))))
        .await
        .expect("describe_configs");
    let resource = got.into_iter().next().expect("one resource").expect("the topic's settings");
    resource.get(key).and_then(|e| e.value.clone())
}

#[tokio::test]
async fn create_topic_makes_a_missing_topic_with_the_asked_partitions_and_settings() {
    let _ = brokers();
    let topic = fresh_topic_name("create");
    assert_eq!(describe_topic(&topic), None, "a fresh name");
    let ct = CreateTopic {
        partitions: Some(4),
        replication: Some(1),
        config: [("retention.ms".to_string(), "3600000".to_string()), ("cleanup.policy".to_string(), "compact".to_string())].into(),
    };
    let (logs, _guard) = Logs::capture();
    let mut ch = KafkaChannel::new(with_create(&topic, ct.clone())).unwrap();
    ch.open(&ctx("created")).await.unwrap();
    assert_eq!(describe_topic(&topic), Some((4, 1)));
    assert_eq!(topic_setting(&topic, "retention.ms").await.as_deref(), Some("3600000"));
    assert_eq!(topic_setting(&topic, "cleanup.policy").await.as_deref(), Some("compact"));
    let text = logs.text();
    assert!(text.contains("Created the Kafka channel's topic"), "{text}");
    assert!(!text.contains("WARN"), "nothing to warn about:\n{text}");
    // It is usable at once.
    let evs = events();
    ch.write(&records(&evs[..2])).await.unwrap();
    ch.close().await.unwrap();
    let got = consume(&topic, 2).await;
    assert_eq!(serde_json::from_slice::<Event>(got[0].value.as_deref().unwrap()).unwrap(), evs[0]);

    // Opening again (a restart, another deliver process) finds it: no second
    // creation, no warning.
    let (logs, _guard) = Logs::capture();
    let mut again = KafkaChannel::new(with_create(&topic, ct)).unwrap();
    again.open(&ctx("created")).await.unwrap();
    let text = logs.text();
    assert!(!text.contains("Created") && !text.contains("WARN"), "{text}");
}

#[tokio::test]
async fn create_topic_uses_an_existing_topic_with_other_partitions_and_warns() {
    let topic = create_topic("existing", 2).await;
    let (logs, _guard) = Logs::capture();
    let mut ch = KafkaChannel::new(with_create(&topic, CreateTopic { partitions: Some(5), ..Default::default() })).unwrap();
    ch.open(&ctx("existing")).await.unwrap();
    let text = logs.text();
    eprintln!("what the operator sees:\n{text}");
    let warning = text.lines().find(|l| l.contains("WARN")).unwrap_or_else(|| panic!("a warning:\n{text}"));
    assert!(warning.contains("has 2 partitions, create_topic asks for 5"), "{warning}");
    assert!(warning.contains(&topic) && warning.contains("existing"), "names the topic and the channel: {warning}");
    // Used as it is: still two partitions, and records arrive.
    assert_eq!(describe_topic(&topic).map(|(p, _)| p), Some(2));
    let evs = events();
    ch.write(&records(&evs[..1])).await.unwrap();
    assert_eq!(consume(&topic, 1).await[0].key, evs[0].key);
}

#[tokio::test]
async fn create_topic_refused_by_the_cluster_is_a_config_error_naming_the_setting() {
    let _ = brokers();
    let topic = fresh_topic_name("refused");
    // One broker here: replication 3 cannot be met.
    let mut ch =
        KafkaChannel::new(with_create(&topic, CreateTopic { partitions: Some(1), replication: Some(3), ..Default::default() })).unwrap();
    let e = ch.open(&ctx("refused")).await.unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("create_topic") && e.message.contains("replication"), "{e}");
    assert_eq!(describe_topic(&topic), None, "nothing created");
}

/// The channel through the sink conformance suite, on a one-partition topic
/// (one order to compare).
struct Conformance {
    topic: String,
}

#[async_trait::async_trait]
impl fedistream_core::testing::sink_conformance::SinkHarness for Conformance {
    fn sink(&self) -> Box<dyn Sink> {
        let cfg = KafkaChannelConfig {
            // librdkafka refuses records above this before sending them.
            properties: [("message.max.bytes".to_string(), "3000".to_string())].into(),
            ..config(&self.topic)
        };
        Box::new(KafkaChannel::new(cfg).unwrap())
    }
    async fn delivered(&self) -> Vec<String> {
        keys_in(&self.topic).await
    }
    fn refused_event(&self) -> Result<Event, String> {
        Ok(fedistream_core::testing::created("conformance", "large@example.org", 7, &"x".repeat(4000)))
    }
    async fn fail_transiently(&self) -> Result<(), String> {
        Err("the broker is shared with other tests and cannot be stopped; unreachable brokers are \
             unreachable_brokers_are_transient_in_bounded_time"
            .into())
    }
    async fn recover(&self) {}
    fn exactly_once(&self) -> bool {
        // An idempotent producer, not a transactional one: a record written
        // before a crash and redelivered after it is on the topic twice (same
        // key and version, which readers use to dedupe).
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_channel_passes_the_sink_conformance_suite() {
    let h = Conformance { topic: create_topic("conformance", 1).await };
    let r = fedistream_core::testing::sink_conformance::run_all(&h, "kafka").await;
    assert_eq!(r.passed, ["batch accepted", "permanent error dead-lettered", "crash between write and commit"], "{r:?}");
}
