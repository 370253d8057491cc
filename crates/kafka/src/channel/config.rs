//! [`KafkaChannelConfig`]: the `kafka` channel's TOML table. Pure data plus
//! offline validation ([`KafkaChannelConfig::validate`]); connecting to the
//! brokers and the schema registry waits for [`super::KafkaChannel::open`].
//!
//! Secrets never sit in this table: the registry's basic-auth credentials and
//! secret librdkafka settings (`sasl.password`, ...) are given as the *names* of
//! environment variables.

use std::collections::BTreeMap;
use std::time::Duration;

use fedistream_core::runtime::DeliveryConfig;
use serde::{Deserialize, Serialize};

/// How record values are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The event's JSON, as the log stores it (UTF-8).
    #[default]
    Json,
    /// Avro in the Confluent wire format (magic byte 0, 4-byte big-endian
    /// schema id, Avro binary), the schema registered under `<topic>-value`.
    Avro,
}

impl Format {
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Avro => "avro",
        }
    }
}

/// Producer compression (`compression.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    #[default]
    Zstd,
}

impl Compression {
    pub fn as_str(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaChannelConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic to write to. It must exist, unless `create_topic` is given.
    pub topic: String,
    /// Create the topic at open when it is missing (and check an existing one's
    /// partition count). Absent: a missing topic is a configuration error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_topic: Option<CreateTopic>,
    #[serde(default)]
    pub format: Format,
    /// Base URL of a Confluent-compatible schema registry (required for `avro`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<String>,
    /// Name of the environment variable holding the registry's basic-auth user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry_user_env: Option<String>,
    /// Name of the environment variable holding the registry's basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry_password_env: Option<String>,
    /// Deleted events become tombstones (null value, same key). `false`: they are
    /// written as ordinary records (JSON without `post`, Avro with `post = null`).
    #[serde(default = "default_true")]
    pub tombstones: bool,
    #[serde(default)]
    pub compression: Compression,
    /// Extra librdkafka producer settings (`security.protocol`, `sasl.mechanisms`,
    /// `linger.ms`, ...). Settings the channel owns are refused, and so are secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// librdkafka settings whose values come from environment variables:
    /// `"sasl.password" = "KAFKA_PASSWORD"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties_env: BTreeMap<String, String>,
    /// Bound on the checks at open (topic metadata, schema registration) and on
    /// each registry request.
    #[serde(default = "default_timeout", with = "fedistream_core::units::duration")]
    pub timeout: Duration,
    /// How long the producer keeps trying to deliver a record before the write
    /// fails as transient (`message.timeout.ms`).
    #[serde(default = "default_delivery_timeout", with = "fedistream_core::units::duration")]
    pub delivery_timeout: Duration,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// `create_topic = { partitions = 6, replication = 3, config = { "retention.ms" = "604800000" } }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// Partitions of a topic the channel creates (absent: the brokers'
    /// `num.partitions`). An existing topic with another count is used as it
    /// is, with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replicas of each partition (absent: the brokers' `default.replication.factor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<i32>,
    /// Topic settings (`retention.ms`, `cleanup.policy`, ...), as strings or numbers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "topic_settings")]
    pub config: BTreeMap<String, String>,
}

/// A table of topic settings whose values may be strings, integers or booleans
/// (`"retention.ms" = 604800000` means what `"604800000"` does).
fn topic_settings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Int(i64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Value>::deserialize(d).map_err(|_| {
        serde::de::Error::custom("create_topic.config takes strings, integers or booleans, e.g. { \"retention.ms\" = \"604800000\" }")
    })?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Text(s) => s,
                Value::Int(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

fn default_true() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Producer settings the channel sets itself, and the field to use instead.
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "brokers"),
    ("metadata.broker.list", "brokers"),
    ("enable.idempotence", "nothing: the producer is always idempotent"),
    ("acks", "nothing: the producer always waits for all in-sync replicas"),
    ("request.required.acks", "nothing: the producer always waits for all in-sync replicas"),
    ("compression.type", "compression"),
    ("compression.codec", "compression"),
    ("message.timeout.ms", "delivery_timeout"),
    ("delivery.timeout.ms", "delivery_timeout"),
];

/// librdkafka settings that hold secrets: only through `properties_env`.
const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "sasl.username",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
    "ssl_key",
];

/// One problem found by [`KafkaChannelConfig::validate`]: the key under the
/// channel's table (empty for the table itself) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl KafkaChannelConfig {
    /// The registry subject (TopicNameStrategy).
    pub fn subject(&self) -> String {
        format!("{}-value", self.topic)
    }

    /// Offline checks. `check_env`: also require the named environment variables
    /// to be set (commands that never connect skip it).
    pub fn validate(&self, check_env: bool) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p = |key: &str, reason: String| out.push(Problem { key: key.to_string(), reason });
        if self.brokers.split(',').all(|b| b.trim().is_empty()) {
            p("brokers", "no brokers: give host:port[,host:port...]".into());
        } else {
            for b in self.brokers.split(',').map(str::trim) {
                if let Err(e) = check_broker(b) {
                    p("brokers", e);
                }
            }
        }
        if let Err(e) = check_topic_name(&self.topic) {
            p("topic", e);
        }
        if let Some(ct) = &self.create_topic {
            if ct.partitions.is_some_and(|n| n < 1) {
                p("create_topic.partitions", "must be at least 1".into());
            }
            if ct.replication.is_some_and(|n| !(1..=i32::from(i16::MAX)).contains(&n)) {
                p("create_topic.replication", "must be at least 1 (and at most 32767)".into());
            }
            for k in ct.config.keys() {
                if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
                    p("create_topic.config", format!("`{k}` is not a topic setting name (e.g. retention.ms, cleanup.policy)"));
                }
            }
        }
        match (&self.schema_registry, self.format) {
            (None, Format::Avro) => p("schema_registry", "format = \"avro\" needs a schema_registry URL".into()),
            (Some(url), _) => {
                if let Err(e) = crate::registry::parse_base_url(url) {
                    p("schema_registry", e);
                }
            }
            (None, Format::Json) => {}
        }
        match (&self.schema_registry_user_env, &self.schema_registry_password_env) {
            (Some(_), None) | (None, Some(_)) => {
                p("schema_registry_user_env", "give both schema_registry_user_env and schema_registry_password_env, or neither".into())
            }
            _ => {}
        }
        let mut envs: Vec<(String, &String)> = Vec::new();
        if let Some(v) = &self.schema_registry_user_env {
            envs.push(("schema_registry_user_env".into(), v));
        }
        if let Some(v) = &self.schema_registry_password_env {
            envs.push(("schema_registry_password_env".into(), v));
        }
        for (k, v) in &self.properties_env {
            envs.push((format!("properties_env.\"{k}\""), v));
        }
        for (key, var) in envs {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                p(&key, format!("`{var}` is not an environment variable name"));
            } else if check_env && std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                p(&key, format!("the environment variable {var} is not set"));
            }
        }
        for k in self.properties.keys().chain(self.properties_env.keys()) {
            if let Some((_, instead)) = OWNED_PROPERTIES.iter().find(|(o, _)| o == k) {
                p("properties", format!("`{k}` is set by the channel; use {instead}"));
            }
        }
        for k in self.properties.keys() {
            if SECRET_PROPERTIES.contains(&k.as_str()) {
                p("properties", format!("`{k}` is a secret: name an environment variable in properties_env instead"));
            }
        }
        if self.timeout.is_zero() {
            p("timeout", "must be more than 0".into());
        }
        if self.delivery_timeout < Duration::from_millis(1) || self.delivery_timeout.as_millis() > i32::MAX as u128 {
            p("delivery_timeout", "must be between 1ms and about 24 days".into());
        }
        out
    }
}

/// librdkafka's form: `[proto://]host[:port]` (IPv6 in brackets).
fn check_broker(b: &str) -> Result<(), String> {
    let rest = b.split_once("://").map_or(b, |(_, r)| r);
    if rest.is_empty() || rest.starts_with(':') || rest.contains(['/', ' ', '\t']) {
        return Err(format!("`{b}` is not host:port"));
    }
    let port = match rest.rfind("]:") {
        Some(i) => Some(&rest[i + 2..]),
        None if rest.matches(':').count() == 1 => rest.split_once(':').map(|(_, p)| p),
        None => None,
    };
    match port.map(str::parse::<u16>) {
        Some(Err(_)) | Some(Ok(0)) => Err(format!("`{b}`: `{}` is not a port", port.unwrap_or_default())),
        _ => Ok(()),
    }
}

/// Kafka's rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn check_topic_name(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("the topic name is empty".into());
    }
    if t == "." || t == ".." {
        return Err(format!("`{t}` is not a valid topic name"));
    }
    if t.len() > 249 {
        return Err(format!("topic names have at most 249 characters; this one has {}", t.len()));
    }
    if let Some(c) = t.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("`{t}`: topic names may use letters, digits, `.`, `_` and `-` only, not {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The channel's table, written as JSON (serde sees the same shape as TOML).
    fn cfg(json: &str) -> KafkaChannelConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults() {
        let c = cfg(r#"{"brokers": "127.0.0.1:9092", "topic": "posts"}"#);
        assert_eq!(c.format, Format::Json);
        assert!(c.tombstones);
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.subject(), "posts-value");
        assert!(c.validate(true).is_empty(), "{:?}", c.validate(true));
    }

    #[test]
    fn avro_needs_a_registry_and_names_are_checked() {
        let c = cfg(r#"{"brokers": "", "topic": "bad topic", "format": "avro"}"#);
        let keys: Vec<_> = c.validate(false).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["brokers", "topic", "schema_registry"]);
        assert!(check_topic_name(&"x".repeat(250)).is_err());
        assert!(check_topic_name("..").is_err());
        assert!(check_topic_name("a.b_c-D9").is_ok());
        for ok in ["h:1", "kafka", "[::1]:9092", "SSL://broker.example:9093", "10.0.0.1:9092"] {
            assert!(check_broker(ok).is_ok(), "{ok}");
        }
        for bad in ["", ":9092", "h:x", "h:0", "h:99999", "http://h:1/path", "a b:1"] {
            assert!(check_broker(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owned_and_secret_properties_are_refused() {
        let c = cfg(r#"{"brokers": "h:1", "topic": "t",
            "properties": {"acks": "1", "sasl.password": "hunter2", "linger.ms": "5"},
            "properties_env": {"sasl.username": "FEDISTREAM_TEST_SURELY_UNSET_VAR"}}"#);
        let ps = c.validate(true);
        let text = format!("{ps:?}");
        assert!(text.contains("`acks` is set by the channel"), "{text}");
        assert!(text.contains("`sasl.password` is a secret"), "{text}");
        assert!(text.contains("FEDISTREAM_TEST_SURELY_UNSET_VAR is not set"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(c.validate(false).len(), 2);
    }

    #[test]
    fn create_topic_settings() {
        let c = cfg(r#"{"brokers": "h:1", "topic": "t",
            "create_topic": {"partitions": 6, "replication": 3, "config": {"retention.ms": 604800000, "cleanup.policy": "compact", "x.enable": true}}}"#);
        assert!(c.validate(false).is_empty(), "{:?}", c.validate(false));
        let ct = c.create_topic.unwrap();
        assert_eq!((ct.partitions, ct.replication), (Some(6), Some(3)));
        assert_eq!(ct.config["retention.ms"], "604800000");
        assert_eq!(ct.config["cleanup.policy"], "compact");
        assert_eq!(ct.config["x.enable"], "true");
        // Absent: the brokers' defaults.
        let c = cfg(r#"{"brokers": "h:1", "topic": "t", "create_topic": {}}"#);
        assert_eq!(c.create_topic, Some(CreateTopic::default()));
        let c =
            cfg(r#"{"brokers": "h:1", "topic": "t", "create_topic": {"partitions": 0, "replication": 40000, "config": {"bad key": "1"}}}"#);
        let keys: Vec<_> = c.validate(false).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["create_topic.partitions", "create_topic.replication", "create_topic.config"]);
        let e = serde_json::from_str::<KafkaChannelConfig>(
            r#"{"brokers": "h:1", "topic": "t", "create_topic": {"config": {"retention.ms": [1]}}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("strings, integers or booleans"), "{e}");
        let e = serde_json::from_str::<KafkaChannelConfig>(r#"{"brokers": "h:1", "topic": "t", "create_topic": {"partition": 3}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("partition"), "{e}");
    }

    #[test]
    fn registry_urls_without_credentials() {
        let c = cfg(r#"{"brokers": "h:1", "topic": "t", "format": "avro", "schema_registry": "https://u:p@r.example"}"#);
        let ps = c.validate(false);
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(ps[0].reason.contains("credentials"), "{ps:?}");
        assert!(!ps[0].reason.contains("u:p"), "{ps:?}");
    }
}
