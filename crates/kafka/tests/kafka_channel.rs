//! The Kafka channel against a real broker (`scripts/kafka up`; brokers from
//! `FEDISTREAM_KAFKA_BROKERS`, default 127.0.0.1:9092) and the schema-registry
//! stand-in. Each test creates its own topic (the broker does not auto-create).
//! A broker that does not answer fails the tests, saying how to start one.
//!
//! The Python interop test needs `confluent-kafka` and `fastavro` in the
//! interpreter named by `FEDISTREAM_PYTHON` (see tests/python/consume_avro.py).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use chrono::{TimeZone, Utc};
use fedistream_core::post::Via;
use fedistream_core::{ErrorKind, Event, EventKind, Log, LogRecord, Position, Sink, SinkContext};
use fedistream_kafka::channel::avro;
use fedistream_kafka::channel::{Format, KafkaChannel, KafkaChannelConfig};
use fedistream_kafka::registry::{RegistryClient, RegistryError};
use fedistream_kafka::testing::RegistryStandIn;
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

fn brokers() -> String {
    std::env::var("FEDISTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("admin client")
}

/// A fresh topic with `partitions` partitions, ready (leaders elected) when this returns.
async fn create_topic(label: &str, partitions: i32) -> String {
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
struct Got {
    key: String,
    value: Option<Vec<u8>>,
    headers: HashMap<String, String>,
    partition: i32,
}

/// Read `n` records from every partition of `topic` from the beginning, failing after 30s.
async fn consume(topic: &str, n: usize) -> Vec<Got> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("fedistream-test-{:x}", rand::random::<u64>()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
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
            let Some(m) = c.poll(Duration::from_millis(200)) else { continue };
            let m = m.expect("consume");
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
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

fn ctx(name: &str) -> SinkContext {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let log = fedistream_core::sqlite::SqliteLog::open(dir.path().join("log.db"), Default::default()).unwrap();
    SinkContext::new(name, log as Arc<dyn Log>)
}

fn config(topic: &str) -> KafkaChannelConfig {
    serde_json::from_value(serde_json::json!({ "brokers": brokers(), "topic": topic, "timeout": "10s" })).unwrap()
}

fn avro_config(topic: &str, registry: &str) -> KafkaChannelConfig {
    KafkaChannelConfig { format: Format::Avro, schema_registry: Some(registry.into()), ..config(topic) }
}

/// For each status fixture: created, updated (edited text), deleted. Timestamps in
/// whole milliseconds, as Avro carries them.
fn events() -> Vec<Event> {
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

fn records(events: &[Event]) -> Vec<LogRecord> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| LogRecord::from_event(Position { partition: 0, offset: i as u64 + 1 }, Utc::now(), e.clone()))
        .collect()
}

/// The consumed records of one key, in partition order.
fn by_key(got: &[Got]) -> HashMap<String, Vec<Got>> {
    let mut m: HashMap<String, Vec<Got>> = HashMap::new();
    for g in got {
        m.entry(g.key.clone()).or_default().push(g.clone());
    }
    m
}

fn assert_headers(g: &Got, e: &Event) {
    assert_eq!(g.headers.get("fedistream-event").map(String::as_str), Some(e.kind.as_str()), "{g:?}");
    assert_eq!(g.headers.get("fedistream-instance"), Some(&e.instance), "{g:?}");
    assert_eq!(g.headers.get("fedistream-source"), Some(&e.source), "{g:?}");
    assert_eq!(g.headers.get("fedistream-schema-version").map(String::as_str), Some("1"), "{g:?}");
}

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
                EventKind::Deleted => assert_eq!(g.value, None, "deleted → tombstone on the same key"),
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
async fn avro_wire_format_decodes_to_the_source_events() {
    let registry = RegistryStandIn::start().await;
    let topic = create_topic("avro", 3).await;
    let evs = events();
    let mut ch = KafkaChannel::new(avro_config(&topic, registry.url())).unwrap();
    ch.open(&ctx("avro")).await.unwrap();
    let id = ch.schema_id().expect("registered at open");
    ch.write(&records(&evs)).await.unwrap();
    ch.close().await.unwrap();

    // The id in the messages is the one the registry holds for the subject.
    let client = RegistryClient::new(registry.url(), None, Duration::from_secs(5)).unwrap();
    let latest = client.latest(&format!("{topic}-value")).await.unwrap();
    assert_eq!((latest.id, latest.version), (id, 1));
    assert!(registry.requests().iter().filter(|r| r.method == "POST").all(|r| r.content_type.as_deref() == Some("application/vnd.schemaregistry.v1+json")));

    let got = consume(&topic, evs.len()).await;
    let keyed = by_key(&got);
    for chunk in evs.chunks(3) {
        let versions = &keyed[&chunk[0].key];
        assert_eq!(versions.len(), 3);
        for (g, e) in versions.iter().zip(chunk) {
            assert_headers(g, e);
            let Some(bytes) = &g.value else {
                assert_eq!(e.kind, EventKind::Deleted);
                continue;
            };
            assert_eq!(bytes[0], 0, "magic byte");
            let wire_id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
            assert_eq!(wire_id, id);
            // Decode with the schema as the registry serves it, not our copy.
            let schema = Schema::parse_str(&client.schema_by_id(wire_id).await.unwrap()).unwrap();
            let decoded = avro::decode(&schema, None, &bytes[5..]).unwrap();
            assert_eq!(&decoded, e);
        }
    }
}

#[tokio::test]
async fn schema_evolution_backward_compatible_only() {
    let registry = RegistryStandIn::start().await;
    let client = RegistryClient::new(registry.url(), None, Duration::from_secs(5)).unwrap();
    let topic = create_topic("evolve", 1).await;
    let subject = format!("{topic}-value");
    let mut ch = KafkaChannel::new(avro_config(&topic, registry.url())).unwrap();
    ch.open(&ctx("evolve")).await.unwrap();
    let v1 = ch.schema_id().unwrap();

    // v2: a new optional field with a default reads v1 data → accepted.
    let mut v2: serde_json::Value = serde_json::from_str(avro::SCHEMA_JSON).unwrap();
    v2["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "region", "type": ["null", "string"], "default": null}));
    let v2_id = client.register(&subject, &v2.to_string()).await.unwrap();
    assert_ne!(v2_id, v1);
    assert_eq!(client.latest(&subject).await.unwrap().version, 2);
    // The channel's own schema is still known under the subject: reopening finds its id.
    let mut again = KafkaChannel::new(avro_config(&topic, registry.url())).unwrap();
    again.open(&ctx("evolve")).await.unwrap();
    assert_eq!(again.schema_id(), Some(v1));
    again.write(&records(&events()[..1])).await.unwrap();

    // A field without a default is not backward compatible → 409.
    let mut bad: serde_json::Value = serde_json::from_str(avro::SCHEMA_JSON).unwrap();
    bad["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "shard", "type": "int"}));
    match client.register(&subject, &bad.to_string()).await {
        Err(e @ RegistryError::Incompatible { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.to_string().contains("shard"), "{e}");
        }
        other => panic!("expected 409, got {other:?}"),
    }
    // Nor is changing a field's type.
    let mut bad: serde_json::Value = serde_json::from_str(avro::SCHEMA_JSON).unwrap();
    bad["fields"][1]["type"] = serde_json::json!("int");
    assert!(matches!(client.register(&subject, &bad.to_string()).await, Err(RegistryError::Incompatible { .. })));
    // An invalid schema is 422.
    let e = client.register(&subject, r#"{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}"#).await.unwrap_err();
    assert!(matches!(e, RegistryError::InvalidSchema { error_code: 42201, .. }), "{e}");

    // A subject whose latest schema ours cannot read: open fails with Config,
    // naming the registry, the subject and the registry's reason.
    let topic2 = create_topic("incompatible", 1).await;
    let subject2 = format!("{topic2}-value");
    let old = r#"{"type": "record", "name": "PostEvent", "namespace": "org.fedistream", "fields": [{"name": "key", "type": "long"}]}"#;
    client.register(&subject2, old).await.unwrap();
    let mut ch2 = KafkaChannel::new(avro_config(&topic2, registry.url())).unwrap();
    let e = ch2.open(&ctx("incompatible")).await.unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("schema incompatible with the latest version registered under subject `{subject2}`")), "{msg}");
    assert!(msg.contains(registry.url()), "{msg}");
    assert!(msg.contains("Schema being registered is incompatible"), "{msg}");
    assert_eq!(registry.subjects()[&subject2].len(), 1, "nothing registered");
}

#[tokio::test]
async fn unknown_topic_is_a_config_error_at_open_in_bounded_time() {
    // Checks the broker answers, and gives a topic name that surely does not exist.
    let existing = create_topic("probe", 1).await;
    let topic = format!("{existing}-missing");
    let mut ch = KafkaChannel::new(KafkaChannelConfig { timeout: Duration::from_secs(5), ..config(&topic) }).unwrap();
    let started = Instant::now();
    let e = ch.open(&ctx("missing")).await.unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains(&format!("topic `{topic}`")) && e.message.contains("does not exist"), "{e}");
    assert!(e.message.contains("kafka channel `missing`"), "{e}");
}

#[tokio::test]
async fn unreachable_brokers_are_transient_in_bounded_time() {
    // Nothing listens on port 1 of loopback.
    let cfg = KafkaChannelConfig { brokers: "127.0.0.1:1".into(), timeout: Duration::from_secs(2), ..config("anything") };
    let mut ch = KafkaChannel::new(cfg).unwrap();
    let started = Instant::now();
    let e = ch.open(&ctx("down")).await.unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
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

#[tokio::test]
async fn registry_basic_auth_from_env_and_refusals_hide_the_secret() {
    // Credentials come from environment variables. Setting variables in a
    // multi-threaded test is a data race, so use ones cargo sets for every test run.
    let (user_var, pass_var, wrong_var) = ("CARGO_PKG_NAME", "CARGO_MANIFEST_DIR", "CARGO_PKG_VERSION");
    let value = |v: &str| std::env::var(v).unwrap_or_else(|_| panic!("cargo sets {v} when running tests"));
    let registry = RegistryStandIn::start_with_basic_auth(&value(user_var), &value(pass_var)).await;
    let topic = create_topic("auth", 1).await;
    let with = |pass_env: &str| KafkaChannelConfig {
        schema_registry_user_env: Some(user_var.into()),
        schema_registry_password_env: Some(pass_env.into()),
        ..avro_config(&topic, registry.url())
    };
    let mut ch = KafkaChannel::new(with(pass_var)).unwrap();
    ch.open(&ctx("auth")).await.unwrap();
    assert!(ch.schema_id().is_some());
    assert!(registry.requests().iter().all(|r| r.authorized));

    let mut ch = KafkaChannel::new(with(wrong_var)).unwrap();
    let e = ch.open(&ctx("auth")).await.unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.message.contains(&value(wrong_var)) && !e.message.contains(&value(pass_var)), "{e}");
    assert!(registry.requests().iter().any(|r| !r.authorized));
}

#[tokio::test]
async fn python_confluent_kafka_and_fastavro_read_the_topic() {
    let registry = RegistryStandIn::start().await;
    let topic = create_topic("python", 3).await;
    let evs = events();
    let mut ch = KafkaChannel::new(avro_config(&topic, registry.url())).unwrap();
    ch.open(&ctx("python")).await.unwrap();
    ch.write(&records(&evs)).await.unwrap();
    ch.close().await.unwrap();
    let id = ch.schema_id().unwrap();

    let python = std::env::var("FEDISTREAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/consume_avro.py");
    let out = tokio::process::Command::new(&python)
        .args([script, "--brokers", &brokers(), "--topic", &topic, "--registry", registry.url()])
        .args(["--expect", &evs.len().to_string(), "--timeout", "60"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{python} {script} failed ({}): {stderr}\n(needs confluent-kafka and fastavro: see the comment at the top of {script}; set FEDISTREAM_PYTHON)",
        out.status
    );
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), evs.len());
    // Per key, in order: what Python decoded is what was written.
    let mut per_key: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    for l in &lines {
        per_key.entry(l["key"].as_str().unwrap().to_string()).or_default().push(l);
    }
    for chunk in evs.chunks(3) {
        let seen = &per_key[&chunk[0].key];
        assert_eq!(seen.len(), 3);
        for (l, e) in seen.iter().zip(chunk) {
            assert_eq!(l["headers"]["fedistream-event"], e.kind.as_str());
            if e.kind == EventKind::Deleted {
                assert_eq!(l["tombstone"], true, "{l}");
                continue;
            }
            assert_eq!(l["schema_id"], id, "{l}");
            let v = &l["value"];
            assert_eq!(v["kind"], e.kind.as_str(), "{l}");
            assert_eq!(v["key"], e.key.as_str(), "{l}");
            let p = e.post.as_ref().unwrap();
            assert_eq!(v["post"]["content_text"], p.content_text.as_str(), "{l}");
            assert_eq!(v["post"]["account"]["acct"], p.account.acct.as_str(), "{l}");
            assert_eq!(v["post"]["tags"], serde_json::json!(p.tags), "{l}");
        }
    }
}
