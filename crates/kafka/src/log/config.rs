//! `[log.kafka]`: where the Kafka log lives and how its topics are made.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaLogConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Names this pipeline's topics (`fedistream.<pipeline>.events`, `.state`,
    /// `.state.slots`, `.ingest`, `.<group>.state`) and consumer groups
    /// (`fedistream.<pipeline>.<channel>`).
    #[serde(default = "default_pipeline")]
    pub pipeline: String,
    /// Partitions of the events topic (the most deliver processes a channel can use).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Partitions of the ingest topic: the units accounts are spread over across
    /// ingest processes (the most ingest processes that get work). The state
    /// owned by the accounts (checkpoints, dedup index) is split the same way
    /// (`.state.slots`), so this cannot change once the pipeline has state.
    #[serde(default = "default_ingest_slots")]
    pub ingest_slots: i32,
    /// Replication factor of the topics fedistream creates (3 on a real cluster).
    #[serde(default = "default_replication")]
    pub replication: i16,
    /// Producer compression: none, gzip, snappy, lz4, zstd.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// How long a dead process keeps its partitions and accounts before the
    /// group hands them to the others (Kafka's `session.timeout.ms`, 6 s to 5 min).
    #[serde(default = "default_session_timeout", with = "fedistream_core::units::duration")]
    pub session_timeout: Duration,
    /// How long to wait for the cluster at start before giving up with an error.
    #[serde(default = "default_connect_timeout", with = "fedistream_core::units::duration")]
    pub connect_timeout: Duration,
    /// Events topic retention by age (`retention.ms`); None: the broker's default.
    #[serde(default, with = "fedistream_core::units::opt_duration")]
    pub max_age: Option<Duration>,
    /// Events topic retention by size per partition (`retention.bytes`).
    #[serde(default, with = "fedistream_core::units::opt_size")]
    pub max_size: Option<u64>,
    /// Extra librdkafka client settings for every client (security.protocol,
    /// sasl.mechanism, …). Secrets: give `sasl.password` through
    /// `sasl_password_env` instead.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Name of the env var holding `sasl.password`, if the cluster needs one.
    #[serde(default)]
    pub sasl_password_env: Option<String>,
    /// Bounded state: entries of the dedup index and of the namespaces in
    /// `prunable` not written for this long are deleted from the state topic
    /// and from memory (see `KafkaLog::prune_state`); `None` keeps them. Set by
    /// the binary from `[log] state_horizon` (one key for both backends), so
    /// not a `[log.kafka]` key.
    #[serde(skip)]
    pub state_horizon: Option<Duration>,
    /// State namespaces (besides the dedup index) pruned past `state_horizon`.
    #[serde(skip)]
    pub prunable: Vec<String>,
}

fn default_pipeline() -> String {
    "default".into()
}
fn default_partitions() -> i32 {
    6
}
fn default_ingest_slots() -> i32 {
    12
}
fn default_replication() -> i16 {
    1
}
fn default_compression() -> String {
    "zstd".into()
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(15)
}

impl KafkaLogConfig {
    pub fn new(brokers: impl Into<String>, pipeline: impl Into<String>) -> Self {
        KafkaLogConfig {
            brokers: brokers.into(),
            pipeline: pipeline.into(),
            partitions: default_partitions(),
            ingest_slots: default_ingest_slots(),
            replication: default_replication(),
            compression: default_compression(),
            session_timeout: default_session_timeout(),
            connect_timeout: default_connect_timeout(),
            max_age: None,
            max_size: None,
            properties: BTreeMap::new(),
            sasl_password_env: None,
            state_horizon: None,
            prunable: Vec::new(),
        }
    }

    pub fn prefix(&self) -> String {
        format!("fedistream.{}", self.pipeline)
    }
    pub fn events_topic(&self) -> String {
        self.topic(fedistream_core::log::EVENTS)
    }
    /// The Kafka topic of a log topic (`events`, `stats`, …): `fedistream.<pipeline>.<topic>`.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}.{topic}", self.prefix())
    }
    pub fn state_topic(&self) -> String {
        format!("{}.state", self.prefix())
    }
    /// The state owned by ingest units, one partition per ingest slot (see `log::state`).
    pub fn state_slots_topic(&self) -> String {
        format!("{}.state.slots", self.prefix())
    }
    pub fn ingest_topic(&self) -> String {
        format!("{}.ingest", self.prefix())
    }
    /// The compacted topic of the state consumer group `group` keeps per
    /// input partition (a processor's), one partition per input partition.
    /// `fedistream.<pipeline>.<group>.state` (the group without the pipeline's prefix).
    pub fn group_state_topic(&self, group: &str) -> String {
        let prefix = self.prefix();
        let g = group.strip_prefix(prefix.as_str()).and_then(|g| g.strip_prefix('.')).unwrap_or(group);
        format!("{prefix}.{g}.state")
    }
    /// The consumer group of a channel.
    pub fn channel_group(&self, channel: &str) -> String {
        format!("{}.{channel}", self.prefix())
    }
    pub fn ingest_group(&self) -> String {
        format!("{}.ingest", self.prefix())
    }

    /// Problems a config check can find without the network, as (key, reason).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.brokers.trim().is_empty() {
            p.push(("brokers".into(), "must name at least one broker, e.g. \"127.0.0.1:9092\"".into()));
        }
        if self.pipeline.is_empty() || !self.pipeline.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            p.push(("pipeline".into(), "use letters, digits, `.`, `_` and `-` only (it names Kafka topics)".into()));
        }
        if self.partitions < 1 {
            p.push(("partitions".into(), "must be at least 1".into()));
        }
        if self.ingest_slots < 1 {
            p.push(("ingest_slots".into(), "must be at least 1".into()));
        }
        if self.replication < 1 {
            p.push(("replication".into(), "must be at least 1".into()));
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            p.push(("compression".into(), "must be one of none, gzip, snappy, lz4, zstd".into()));
        }
        if self.session_timeout < Duration::from_secs(6) || self.session_timeout > Duration::from_secs(300) {
            p.push(("session_timeout".into(), "must be between 6s and 5m (the broker's group limits)".into()));
        }
        for k in self.properties.keys() {
            if k.contains("password") || k.contains("secret") {
                p.push((format!("properties.{k}"), "secrets do not go in the config file; use sasl_password_env".into()));
            }
        }
        p
    }
}
