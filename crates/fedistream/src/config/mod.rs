//! The pipeline configuration: one TOML file, typed, `deny_unknown_fields`.
//!
//! [`load`] reads and parses (errors name the file, the key and the reason);
//! [`validate`] checks meaning without any network I/O. Process knobs (log level,
//! drain deadline) are flags or env vars, not part of this file.

pub mod load;
pub mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fedistream_archive::ArchiveSinkConfig;
use fedistream_connectors::file::FileSinkConfig;
use fedistream_connectors::mastodon::sink::MastodonSinkConfig;
use fedistream_connectors::mastodon::source::{MastodonSourceConfig, MastodonTimelineConfig};
use fedistream_connectors::replay::ReplaySourceConfig;
use fedistream_connectors::stdout::StdoutSinkConfig;
use fedistream_connectors::webhook::WebhookSinkConfig;
use fedistream_core::sqlite::Durability;
use fedistream_kafka::channel::KafkaChannelConfig;
use fedistream_process::filter::FilterConfig;
use serde::{Deserialize, Serialize};

pub use load::{load, ConfigError};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub connections: Connections,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Processors: each reads the `events` topic as its own consumer group and
    /// writes a topic named after it (routes take it with `from = ["NAME"]`).
    #[serde(default)]
    pub processors: BTreeMap<String, ProcessorConfig>,
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Which sources (or processors) feed which channels. None: every source to every channel.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The HTTP server of `fedistream run` (health, metrics, status). Absent: no server.
    #[serde(default)]
    pub http: Option<HttpConfig>,
}

/// `[http]`: the server inside `fedistream run` (every role).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `IP:port` to listen on; `""` turns the server off.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// The name of an environment variable holding a bearer token that every
    /// endpoint but `/healthz` and `/readyz` requires.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Listen on a non-loopback address without a token (the operator says so).
    #[serde(default)]
    pub allow_public: bool,
    /// Mark the dashboard's sign-in cookie `Secure` (browsers then send it over
    /// HTTPS only): set it when the server is reached through an HTTPS proxy.
    #[serde(default)]
    pub secure_cookie: bool,
    /// A component retrying or paused for longer than this makes `/readyz` fail.
    #[serde(default = "default_stuck_after", with = "fedistream_core::units::duration")]
    pub stuck_after: Duration,
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_stuck_after() -> Duration {
    Duration::from_secs(300)
}

impl HttpConfig {
    /// The address to listen on; `None`: the server is off. Errors say why.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, String> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("`{}` is not an IP address and port, like 127.0.0.1:8080 (or \"\" for no server)", self.listen))
    }
}

impl Config {
    /// The topic channel `name` reads: `events` unless its routes come from a
    /// processor (validation makes sure a channel reads one topic).
    pub fn channel_topic(&self, name: &str) -> String {
        self.routes
            .iter()
            .filter(|r| r.to.iter().any(|t| t == name))
            .flat_map(|r| r.from.iter())
            .find_map(|f| self.processors.contains_key(f).then(|| f.clone()))
            .unwrap_or_else(|| fedistream_core::log::EVENTS.to_string())
    }
}

/// A processor of the pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessorConfig {
    /// Per-account activity statistics in event-time windows
    /// ([`fedistream_process::stats`]).
    AccountStats(fedistream_process::stats::AccountStatsConfig),
    /// Counts records in windows of log offsets, emitted from a timer: the
    /// runtime's own tests use it (kill -9 equivalence). Built only with the
    /// `test-util` feature.
    #[cfg(feature = "test-util")]
    TestCount(TestCountConfig),
}

#[cfg(feature = "test-util")]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCountConfig {
    /// Offsets per window.
    pub window: u64,
    /// How often the timer emits completed windows.
    #[serde(default = "default_test_tick", with = "fedistream_core::units::duration")]
    pub tick: Duration,
}

#[cfg(feature = "test-util")]
fn default_test_tick() -> Duration {
    Duration::from_millis(200)
}

/// Which log holds the events and state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    /// The embedded SQLite file: one machine, no other service.
    #[default]
    Sqlite,
    /// Apache Kafka (`[log.kafka]`): roles on many machines.
    Kafka,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub backend: LogBackend,
    /// The Kafka log, with `backend = "kafka"`.
    #[serde(default)]
    pub kafka: Option<fedistream_kafka::log::KafkaLogConfig>,
    /// The SQLite file holding the log, offsets and state.
    #[serde(default = "default_log_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub durability: Durability,
    /// Delete delivered events older than this.
    #[serde(default, with = "fedistream_core::units::opt_duration")]
    pub max_age: Option<Duration>,
    /// Keep the log file under about this size (delivered events go first).
    #[serde(default, with = "fedistream_core::units::opt_size")]
    pub max_size: Option<u64>,
    /// Where dead-letter files go (default: `dead-letter/` next to the log).
    #[serde(default)]
    pub dead_letter_dir: Option<PathBuf>,
    /// Bounded state: dedup-index and id-index entries not written for this
    /// long are removed. Must outlast how far back sources re-read posts.
    #[serde(default = "default_state_horizon", with = "fedistream_core::units::duration")]
    pub state_horizon: Duration,
}

fn default_state_horizon() -> Duration {
    Duration::from_secs(30 * 86_400)
}

fn default_log_path() -> PathBuf {
    PathBuf::from("fedistream-data/fedistream.db")
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            backend: LogBackend::Sqlite,
            kafka: None,
            path: default_log_path(),
            durability: Durability::default(),
            max_age: None,
            max_size: None,
            dead_letter_dir: None,
            state_horizon: default_state_horizon(),
        }
    }
}

impl LogConfig {
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.dead_letter_dir
            .clone()
            .unwrap_or_else(|| self.path.parent().map(|p| p.join("dead-letter")).unwrap_or_else(|| PathBuf::from("dead-letter")))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connections {
    #[serde(default)]
    pub mastodon: BTreeMap<String, MastodonConnection>,
}

/// A Mastodon account fedistream acts as: a server and the *name* of the token's
/// env var (or a file holding it). The token itself never goes in this file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MastodonConnection {
    /// Base URL of the server, `https://…` (`http://` only for loopback).
    pub instance: String,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    Mastodon(Box<MastodonSourceConfig>),
    /// A server's feeds: local, federated, remote, hashtags, lists.
    #[serde(rename = "mastodon_timeline")]
    MastodonTimeline(Box<MastodonTimelineConfig>),
    Replay(ReplaySourceConfig),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChannelConfig {
    File(FileSinkConfig),
    Stdout(StdoutSinkConfig),
    Mastodon(Box<MastodonSinkConfig>),
    Kafka(Box<KafkaChannelConfig>),
    Webhook(Box<WebhookSinkConfig>),
    /// Parquet (or JSON Lines) objects in a local directory or an S3 bucket.
    Archive(Box<ArchiveSinkConfig>),
}

impl ChannelConfig {
    pub fn delivery(&self) -> &fedistream_core::runtime::DeliveryConfig {
        match self {
            ChannelConfig::File(c) => &c.delivery,
            ChannelConfig::Stdout(c) => &c.delivery,
            ChannelConfig::Mastodon(c) => &c.delivery,
            ChannelConfig::Kafka(c) => &c.delivery,
            ChannelConfig::Webhook(c) => &c.delivery,
            ChannelConfig::Archive(c) => &c.delivery,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Source names, or one processor's name (its output); empty = every source.
    #[serde(default)]
    pub from: Vec<String>,
    /// Channel names.
    pub to: Vec<String>,
    #[serde(default)]
    pub filter: FilterConfig,
}
