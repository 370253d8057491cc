//! The Kafka channel's Avro format against a real broker and a real schema
//! registry (`scripts/kafka up`, `scripts/registry up`; found through
//! `FEDISTREAM_KAFKA_BROKERS` and `FEDISTREAM_SCHEMA_REGISTRY`): the Confluent
//! wire format decoded with the schema the registry serves, schema evolution
//! under the registry's BACKWARD rule, basic auth and failures (through a gate
//! in front of the registry), and a Python consumer reading the topic with confluent-kafka's
//! AvroDeserializer. A broker or registry that does not answer fails the tests,
//! saying how to start one.
//!
//! The Python test needs the interpreter named by `FEDISTREAM_PYTHON`, with
//! confluent-kafka[avro] (`scripts/python-deps` makes one and prints its path).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use apache_avro::Schema;
use common::*;
use fedistream_core::{ErrorKind, EventKind, LogRecord, Position, Sink};
use fedistream_kafka::channel::avro;
use fedistream_kafka::channel::{KafkaChannel, KafkaChannelConfig, RecordKind};
use fedistream_kafka::registry::{RegistryClient, RegistryError};
use fedistream_kafka::testing::{schema_registry, RegistryGate};

#[tokio::test]
async fn avro_wire_format_decodes_to_the_source_events() {
    let registry = schema_registry();
    let topic = create_topic("avro", 3).await;
    let mut evs = events();
    // A counts-only refresh is marked in the record (schema version 2).
    assert_eq!(evs[1].kind, EventKind::Updated);
    evs[1].counts_refresh = true;
    let mut ch = KafkaChannel::new(avro_config(&topic, &registry)).unwrap();
    ch.open(&ctx("avro")).await.unwrap();
    let id = ch.schema_id().expect("registered at open");
    ch.write(&records(&evs)).await.unwrap();
    ch.close().await.unwrap();

    // The id in the messages is the one the registry holds for the subject.
    let client = RegistryClient::new(&registry, None, Duration::from_secs(5)).unwrap();
    let latest = client.latest(&format!("{topic}-value")).await.unwrap();
    assert_eq!((latest.id, latest.version), (id, 1));

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
    let registry = schema_registry();
    let client = RegistryClient::new(&registry, None, Duration::from_secs(5)).unwrap();
    let topic = create_topic("evolve", 1).await;
    let subject = format!("{topic}-value");
    let mut ch = KafkaChannel::new(avro_config(&topic, &registry)).unwrap();
    ch.open(&ctx("evolve")).await.unwrap();
    let v1 = ch.schema_id().unwrap();

    // v2: a new optional field with a default reads v1 data → accepted.
    let mut v2: serde_json::Value = serde_json::from_str(avro::SCHEMA_JSON).unwrap();
    v2["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "region", "type": ["null", "string"], "default": null}));
    let v2_id = client.register(&subject, &v2.to_string()).await.unwrap();
    assert_ne!(v2_id, v1);
    assert_eq!(client.latest(&subject).await.unwrap().version, 2);
    // The channel's own schema is still known under the subject: reopening finds its id.
    let mut again = KafkaChannel::new(avro_config(&topic, &registry)).unwrap();
    again.open(&ctx("evolve")).await.unwrap();
    assert_eq!(again.schema_id(), Some(v1));
    again.write(&records(&events()[..1])).await.unwrap();

    // A field without a default is not backward compatible → 409.
    let mut bad: serde_json::Value = serde_json::from_str(avro::SCHEMA_JSON).unwrap();
    bad["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "shard", "type": "int"}));
    match client.register(&subject, &bad.to_string()).await {
        Err(e @ RegistryError::Incompatible { .. }) => {
            eprintln!("what the operator sees: {e}");
            assert_eq!(e.kind(), ErrorKind::Config);
            let msg = e.to_string();
            assert!(msg.contains(&format!("under subject `{subject}`")), "names the subject: {msg}");
            assert!(msg.contains("shard"), "and the field at fault: {msg}");
        }
        other => panic!("expected 409 (is the registry's compatibility BACKWARD, as scripts/registry sets it?), got {other:?}"),
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
    let mut ch2 = KafkaChannel::new(avro_config(&topic2, &registry)).unwrap();
    let e = ch2.open(&ctx("incompatible")).await.unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("schema incompatible with the latest version registered under subject `{subject2}`")), "{msg}");
    assert!(msg.contains(registry.trim_end_matches('/')), "{msg}");
    // Then the registry's own reason.
    let reason = &msg[msg.find(&format!("`{subject2}`: ")).unwrap() + subject2.len() + 4..];
    assert!(reason.to_lowercase().contains("incompatible"), "{msg}");
    assert_eq!(client.latest(&subject2).await.unwrap().version, 1, "nothing registered");
}

/// A deployment whose subject holds the version-1 schema (before
/// `counts_refresh`): the channel registers version 2 beside it (a new field
/// with a default passes the registry's BACKWARD rule), and version-1 records
/// already in the topic still decode through the new schema.
#[tokio::test]
async fn a_subject_holding_schema_version_1_takes_version_2() {
    let registry = schema_registry();
    let client = RegistryClient::new(&registry, None, Duration::from_secs(5)).unwrap();
    let topic = create_topic("upgrade", 1).await;
    let subject = format!("{topic}-value");
    let mut v1: serde_json::Value = serde_json::from_str(avro::SCHEMA_JSON).unwrap();
    v1["fedistream_schema_version"] = serde_json::json!(1);
    v1["fields"].as_array_mut().unwrap().retain(|f| f["name"] != "counts_refresh");
    let v1_id = client.register(&subject, &v1.to_string()).await.unwrap();

    let mut ch = KafkaChannel::new(avro_config(&topic, &registry)).unwrap();
    ch.open(&ctx("upgrade")).await.unwrap();
    let v2_id = ch.schema_id().unwrap();
    assert_ne!(v2_id, v1_id);
    let latest = client.latest(&subject).await.unwrap();
    assert_eq!((latest.id, latest.version), (v2_id, 2));

    // A version-1 datum read with the registry's version 2 as reader.
    let e = events().remove(1);
    let mut value = avro::to_value(&e);
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.retain(|(k, _)| k != "counts_refresh");
    }
    let writer = Schema::parse_str(&client.schema_by_id(v1_id).await.unwrap()).unwrap();
    let reader = Schema::parse_str(&client.schema_by_id(v2_id).await.unwrap()).unwrap();
    let datum = apache_avro::to_avro_datum(&writer, value).unwrap();
    assert_eq!(avro::decode(&writer, Some(&reader), &datum).unwrap(), e);
}

#[tokio::test]
async fn registry_basic_auth_from_env_and_refusals_hide_the_secret() {
    // Credentials come from environment variables. Setting variables in a
    // multi-threaded test is a data race, so use ones cargo sets for every test run.
    let (user_var, pass_var, wrong_var) = ("CARGO_PKG_NAME", "CARGO_MANIFEST_DIR", "CARGO_PKG_VERSION");
    let value = |v: &str| std::env::var(v).unwrap_or_else(|_| panic!("cargo sets {v} when running tests"));
    let registry = RegistryGate::start_with_basic_auth(&schema_registry(), &value(user_var), &value(pass_var)).await;
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
    let posts: Vec<_> = registry.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert!(
        !posts.is_empty() && posts.iter().all(|r| r.content_type.as_deref() == Some("application/vnd.schemaregistry.v1+json")),
        "{posts:?}"
    );

    let mut ch = KafkaChannel::new(with(wrong_var)).unwrap();
    let e = ch.open(&ctx("auth")).await.unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.message.contains(&value(wrong_var)) && !e.message.contains(&value(pass_var)), "{e}");
    assert!(registry.requests().iter().any(|r| !r.authorized));
}

#[tokio::test]
async fn python_confluent_kafka_avro_deserializer_reads_the_topic_through_the_registry() {
    let registry = schema_registry();
    let topic = create_topic("python", 3).await;
    let evs = events();
    let mut ch = KafkaChannel::new(avro_config(&topic, &registry)).unwrap();
    ch.open(&ctx("python")).await.unwrap();
    ch.write(&records(&evs)).await.unwrap();
    ch.close().await.unwrap();
    let id = ch.schema_id().unwrap();

    let python = std::env::var("FEDISTREAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/consume_avro.py");
    let out = tokio::process::Command::new(&python)
        .args([script, "--brokers", &brokers(), "--topic", &topic, "--registry", &registry])
        .args(["--expect", &evs.len().to_string(), "--timeout", "60"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{python} {script} failed ({}): {stderr}\n(needs confluent-kafka[avro]: run scripts/python-deps and set FEDISTREAM_PYTHON to the interpreter it prints)",
        out.status
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
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

/// Stats records (the account_stats processor's golden output) through a
/// channel fed by the processor: registered under their own schema, keyed by
/// their upsert key, and read back in Python with confluent-kafka's
/// AvroDeserializer through the registry.
#[tokio::test]
async fn python_reads_stats_records_in_avro_through_the_registry() {
    let registry = schema_registry();
    let topic = create_topic("stats-avro", 3).await;
    let golden = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../process/tests/expected/stats/kinds.json")).unwrap();
    let stats: Vec<serde_json::Value> = serde_json::from_str(&golden).unwrap();
    assert!(stats.len() >= 3, "{} records", stats.len());
    let recs: Vec<LogRecord> = stats
        .iter()
        .enumerate()
        .map(|(i, v)| LogRecord::new(Position { partition: 0, offset: i as u64 + 1 }, chrono::Utc::now(), v.to_string().into()))
        .collect();
    let mut ch = KafkaChannel::new(avro_config(&topic, &registry)).unwrap().with_records(RecordKind::Stats);
    ch.open(&ctx("stats-avro")).await.unwrap();
    ch.write(&recs).await.unwrap();
    ch.close().await.unwrap();
    let id = ch.schema_id().unwrap();
    let client = RegistryClient::new(&registry, None, Duration::from_secs(5)).unwrap();
    let served: serde_json::Value = serde_json::from_str(&client.schema_by_id(id).await.unwrap()).unwrap();
    let names: Vec<&serde_json::Value> = served.as_array().expect("a union").iter().map(|r| &r["name"]).collect();
    assert_eq!(names, ["StatsRecord", "TotalsRecord"], "registered under its own schema: the union of the two records");
    assert!(stats.iter().any(|v| v.get("scope").is_some()), "the golden output has totals records too");

    let python = std::env::var("FEDISTREAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/consume_avro.py");
    let out = tokio::process::Command::new(&python)
        .args([script, "--brokers", &brokers(), "--topic", &topic, "--registry", &registry])
        .args(["--expect", &stats.len().to_string(), "--timeout", "60"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{python} {script} failed ({}): {stderr}\n(run scripts/python-deps and set FEDISTREAM_PYTHON)",
        out.status
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), stats.len());
    for want in &stats {
        let key = want["key"].as_str().unwrap();
        let got = lines.iter().find(|l| l["key"] == key).unwrap_or_else(|| panic!("{key} not read back: {lines:#?}"));
        assert_eq!(got["schema_id"], id);
        let v = &got["value"];
        if want.get("scope").is_some() {
            for field in ["scope", "key", "name", "partition", "window", "revision", "final", "posts", "accounts"] {
                assert_eq!(v[field], want[field], "{key}: {field}");
            }
            continue;
        }
        for field in ["key", "account", "window", "zone", "revision", "final", "posts", "replies_to_self", "languages", "hours", "weekdays"]
        {
            assert_eq!(v[field], want[field], "{key}: {field}");
        }
        // Top lists as {name, count} records; times as timestamps.
        let tags: Vec<serde_json::Value> =
            want["tags"]["top"].as_array().unwrap().iter().map(|p| serde_json::json!({"name": p[0], "count": p[1]})).collect();
        assert_eq!(v["tags"]["top"], serde_json::Value::Array(tags), "{key}");
        assert_eq!(v["text"]["chars"]["median"], want["text"]["chars"]["median"], "{key}");
        let start = want["start"].as_str().unwrap().replace('T', " ").replace('Z', "+00:00");
        assert_eq!(v["start"], start.as_str(), "{key}: Python's datetime");
        assert_eq!(v["engagement"]["observed_by"], want["engagement"]["observed_by"], "{key}");
    }
}

/// Deliver processes opening their Avro channels at once register at once.
/// Apicurio's in-memory store fails most of such registrations (500) with its
/// default connection pool; scripts/registry gives it one connection, which
/// queues them: every registration succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_all_succeed() {
    let registry = schema_registry();
    let client = RegistryClient::new(&registry, None, Duration::from_secs(30)).unwrap();
    let run = rand::random::<u64>();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let schema = format!(r#"{{"type": "record", "name": "R{i}x{run:x}", "fields": [{{"name": "a", "type": "string"}}]}}"#);
                client.register(&format!("fedistream-test-concurrent-{run:x}-{i}-value"), &schema).await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let id = t.await.unwrap().unwrap_or_else(|e| panic!("a registration failed: {e}"));
        assert!(ids.insert(id), "distinct schemas get distinct ids");
    }
}

/// A registry that fails (500, a broken store, a restart) is retried within
/// the channel's timeout; past it, opening fails as transient, naming the
/// registry, and the runtime retries later.
#[tokio::test]
async fn registry_failures_are_retried_within_the_timeout() {
    let gate = RegistryGate::start(&schema_registry()).await;
    let topic = create_topic("retry", 1).await;
    gate.fail_next(2);
    let mut ch = KafkaChannel::new(avro_config(&topic, gate.url())).unwrap();
    ch.open(&ctx("retry")).await.unwrap();
    let posts: Vec<bool> = gate.requests().iter().filter(|r| r.method == "POST").map(|r| r.failed).collect();
    assert_eq!(posts, [true, true, false], "two failures, then the registration");

    // Failing for longer than the timeout: a transient error at open.
    gate.fail_next(usize::MAX);
    let cfg = KafkaChannelConfig { timeout: Duration::from_secs(1), ..avro_config(&topic, gate.url()) };
    let mut ch = KafkaChannel::new(cfg).unwrap();
    // (A fresh client: the first one cached the id.)
    let e = ch.open(&ctx("retry")).await.unwrap_err();
    eprintln!("what the operator sees: {e}");
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains(gate.url()) && e.message.contains("HTTP 500"), "{e}");
    let failed = gate.requests().iter().filter(|r| r.failed).count();
    assert!(failed > 3, "retried before giving up: {failed} requests");
}
