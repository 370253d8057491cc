//! The `kafka` channel: events onto a user's own Kafka topic, independent of
//! which log backend fedistream runs on.
//!
//! * **Records.** The key is the event's key, the status URI, so every version of
//!   a post lands on one partition in order and a compacted topic keeps the
//!   latest. (An account's different posts may spread over partitions.) The
//!   value is the event as JSON (the log's own serialisation) or as Avro in the
//!   Confluent wire format ([`avro`]). With `tombstones` (the default) a deletion
//!   is a null value on the post's key. A channel fed by an `account_stats`
//!   processor ([`RecordKind::Stats`]) writes stats records keyed by their
//!   upsert key, as JSON or as Avro with their own schema ([`avro::stats`]).
//! * **Headers** on every record, tombstones included: `fedistream-event`
//!   (created/updated/deleted), `fedistream-instance`, `fedistream-source` and
//!   `fedistream-schema-version` ([`avro::SCHEMA_VERSION`], for both formats).
//! * **Delivery.** An idempotent producer (`acks=all`). `write` enqueues the
//!   batch, awaits every delivery report and returns `Ok` only when all records
//!   are acknowledged. Errors say who is at fault: unreachable brokers and
//!   timeouts are transient, a record the broker refuses (too large, invalid) is
//!   permanent at its index, refused credentials are `Auth`, a missing topic is
//!   `Config`.
//! * **Open** checks that the topic exists (bounded by `timeout`; with
//!   `create_topic` it creates a missing one, see [`topic`]) and, for Avro,
//!   registers the schema under `<topic>-value` (the registry answers with the
//!   existing id if it has it, 409 if the schema is incompatible with the latest
//!   version there).
//!
//! Retrying, pausing and dead-lettering are the runtime's; this module only
//! classifies.

pub mod avro;
pub mod config;
mod topic;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fedistream_core::{ErrorKind, Event, EventKind, LogRecord, Sink, SinkContext, SinkError, Written};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientContext;

pub use config::{Compression, CreateTopic, Format, KafkaChannelConfig};

use crate::registry::{RegistryClient, Secret};

pub const HEADER_EVENT: &str = "fedistream-event";
pub const HEADER_INSTANCE: &str = "fedistream-instance";
pub const HEADER_SOURCE: &str = "fedistream-source";
pub const HEADER_SCHEMA_VERSION: &str = "fedistream-schema-version";

/// Routes librdkafka's log lines to `tracing` and remembers the last global
/// error (a refused SASL handshake shows up there, not in the metadata call).
#[derive(Clone, Default)]
pub struct ChannelContext {
    last_error: Arc<Mutex<Option<GlobalError>>>,
}

/// A global error's code (if it has one) and librdkafka's reason.
type GlobalError = (Option<RDKafkaErrorCode>, String);

impl ChannelContext {
    fn take_last_error(&self) -> Option<GlobalError> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl ClientContext for ChannelContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::warn!(facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning | RDKafkaLogLevel::Notice => tracing::info!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(error = %error, reason, "librdkafka error");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((error.rdkafka_error_code(), reason.to_string()));
    }
}

type ChannelProducer = FutureProducer<ChannelContext>;

/// Which category a producer or broker error code falls in.
pub fn classify(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge
        | C::InvalidRecord
        | C::InvalidMessage
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidTimestamp
        | C::PolicyViolation
        | C::UnsupportedForMessageFormat
        | C::BadMessage
        | C::KeySerialization
        | C::ValueSerialization => ErrorKind::Permanent,
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState
        | C::SSL => ErrorKind::Auth,
        C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownPartition
        | C::InvalidTopic
        | C::InvalidConfig
        | C::InvalidRequiredAcks
        | C::UnsupportedCompressionType
        | C::InvalidArgument
        | C::NotConfigured
        | C::UnknownProtocol => ErrorKind::Config,
        _ => ErrorKind::Transient,
    }
}

/// What the channel's records are, which decides its Avro schema: post events
/// (the `events` topic) or stats records (an `account_stats` processor's topic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RecordKind {
    #[default]
    Posts,
    Stats,
}

impl RecordKind {
    /// The schema registered and written for this kind.
    pub fn schema_json(&self) -> &'static str {
        match self {
            RecordKind::Posts => avro::SCHEMA_JSON,
            RecordKind::Stats => avro::stats::SCHEMA_JSON,
        }
    }
}

/// What one record becomes.
struct Prepared {
    key: String,
    value: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

pub struct KafkaChannel {
    cfg: KafkaChannelConfig,
    /// The channel's config key, for messages (known at `open`).
    name: String,
    /// Values of `properties_env`, read at construction.
    secret_properties: Vec<(String, Secret)>,
    producer: Option<ChannelProducer>,
    context: ChannelContext,
    registry: Option<RegistryClient>,
    schema_id: Option<u32>,
    records: RecordKind,
}

impl KafkaChannel {
    /// Builds the channel from a validated config. Reads the environment variables
    /// the config names; no network I/O until `open`.
    pub fn new(cfg: KafkaChannelConfig) -> Result<Self, String> {
        let mut secret_properties = Vec::new();
        for (key, var) in &cfg.properties_env {
            secret_properties.push((key.clone(), Secret::from_env(var).map_err(|e| format!("properties_env.\"{key}\": {e}"))?));
        }
        let registry = match &cfg.schema_registry {
            Some(url) if cfg.format == Format::Avro => {
                let auth = match (&cfg.schema_registry_user_env, &cfg.schema_registry_password_env) {
                    (Some(u), Some(p)) => Some((
                        Secret::from_env(u).map_err(|e| format!("schema_registry_user_env: {e}"))?.expose().to_string(),
                        Secret::from_env(p).map_err(|e| format!("schema_registry_password_env: {e}"))?,
                    )),
                    (None, None) => None,
                    _ => return Err("give both schema_registry_user_env and schema_registry_password_env, or neither".into()),
                };
                Some(RegistryClient::new(url, auth, cfg.timeout).map_err(|e| format!("schema_registry: {e}"))?)
            }
            None if cfg.format == Format::Avro => return Err("format = \"avro\" needs a schema_registry URL".into()),
            _ => None,
        };
        Ok(KafkaChannel {
            cfg,
            name: "kafka".into(),
            secret_properties,
            producer: None,
            context: ChannelContext::default(),
            registry,
            schema_id: None,
            records: RecordKind::Posts,
        })
    }

    /// The channel takes records of this kind (the pipeline knows what its
    /// route brings); posts by default.
    pub fn with_records(mut self, records: RecordKind) -> Self {
        self.records = records;
        self
    }

    /// The registry id the channel writes with (Avro, after `open`).
    pub fn schema_id(&self) -> Option<u32> {
        self.schema_id
    }

    /// The registry client (Avro only).
    pub fn registry(&self) -> Option<&RegistryClient> {
        self.registry.as_ref()
    }

    fn err(&self, kind: ErrorKind, what: impl std::fmt::Display) -> SinkError {
        SinkError::new(kind, format!("kafka channel `{}` (topic `{}`): {what}", self.name, self.cfg.topic))
    }

    fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.cfg.brokers)
            .set("client.id", format!("fedistream-{}", self.name))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.cfg.compression.as_str())
            .set("message.timeout.ms", self.cfg.delivery_timeout.as_millis().min(i32::MAX as u128).to_string())
            // Producing never creates topics (overridable through `properties`);
            // `create_topic` does, with the asked partitions.
            .set("allow.auto.create.topics", "false");
        for (k, v) in &self.cfg.properties {
            c.set(k, v);
        }
        for (k, v) in &self.secret_properties {
            c.set(k, v.expose());
        }
        c
    }

    fn create_producer(&mut self) -> Result<ChannelProducer, SinkError> {
        self.context = ChannelContext::default();
        self.producer_config().create_with_context(self.context.clone()).map_err(|e| self.client_error(e))
    }

    /// Why a client could not be created from [`Self::producer_config`].
    fn client_error(&self, e: KafkaError) -> SinkError {
        match e {
            // Its Display would include the value, which may be a secret.
            KafkaError::ClientConfig(_, desc, key, _) => {
                let secret = self.secret_properties.iter().any(|(k, _)| *k == key);
                let desc = if secret { "invalid value".to_string() } else { desc };
                self.err(ErrorKind::Config, format_args!("producer setting `{key}`: {desc}"))
            }
            e => self.err(ErrorKind::Config, format_args!("cannot create the producer: {e}")),
        }
    }

    /// Drop a producer off the async threads (dropping purges and joins its thread).
    fn discard_producer(&mut self) {
        if let Some(p) = self.producer.take() {
            tokio::task::spawn_blocking(move || drop(p));
        }
    }

    /// Register (or find) the schema under `<topic>-value`.
    async fn check_schema(&mut self) -> Result<(), SinkError> {
        let Some(registry) = &self.registry else { return Ok(()) };
        let subject = self.cfg.subject();
        match registry.register(&subject, self.records.schema_json()).await {
            Ok(id) => {
                self.schema_id = Some(id);
                Ok(())
            }
            Err(e) => Err(self.err(e.kind(), e)),
        }
    }

    fn prepare(&self, rec: &LogRecord) -> Result<Prepared, String> {
        if self.records == RecordKind::Stats && self.cfg.format == Format::Avro {
            return self.prepare_stats(rec);
        }
        let ev: &Event = match rec.event() {
            Ok(ev) => ev,
            Err(e) => return self.prepare_record(rec).ok_or_else(|| e.to_string()),
        };
        let schema_version = avro::SCHEMA_VERSION.to_string();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header { key: HEADER_EVENT, value: Some(ev.kind.as_str()) })
            .insert(Header { key: HEADER_INSTANCE, value: Some(ev.instance.as_str()) })
            .insert(Header { key: HEADER_SOURCE, value: Some(ev.source.as_str()) })
            .insert(Header { key: HEADER_SCHEMA_VERSION, value: Some(schema_version.as_str()) });
        let value = if ev.kind == EventKind::Deleted && self.cfg.tombstones {
            None
        } else {
            Some(match (self.cfg.format, self.schema_id) {
                (Format::Json, _) => rec.payload.as_bytes().to_vec(),
                (Format::Avro, Some(id)) => avro::encode(id, ev).map_err(|e| format!("cannot encode the event as Avro: {e}"))?,
                // `write` checks this before preparing anything.
                (Format::Avro, None) => return Err("the schema is not registered".into()),
            })
        };
        Ok(Prepared { key: ev.key.clone(), value, headers })
    }

    /// A record of a processor's topic (JSON, not an event), as JSON keyed by
    /// its `key` field (the stats upsert key). `None`: not such a record.
    fn prepare_record(&self, rec: &LogRecord) -> Option<Prepared> {
        if self.cfg.format != Format::Json {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&rec.payload).ok()?;
        let key = v.get("key").and_then(|k| k.as_str())?.to_string();
        let schema_version = avro::SCHEMA_VERSION.to_string();
        let headers =
            OwnedHeaders::new_with_capacity(1).insert(Header { key: HEADER_SCHEMA_VERSION, value: Some(schema_version.as_str()) });
        Some(Prepared { key, value: Some(rec.payload.as_bytes().to_vec()), headers })
    }

    /// A stats record as Avro, keyed by its upsert key.
    fn prepare_stats(&self, rec: &LogRecord) -> Result<Prepared, String> {
        let r = fedistream_process::stats::TopicRecord::parse(&rec.payload)
            .map_err(|e| format!("not a stats record (the account_stats processor's output): {e}"))?;
        let Some(id) = self.schema_id else {
            // `write` checks this before preparing anything.
            return Err("the schema is not registered".into());
        };
        let value = avro::stats::encode(id, &r).map_err(|e| format!("cannot encode the stats record as Avro: {e}"))?;
        let schema_version = avro::SCHEMA_VERSION.to_string();
        let headers =
            OwnedHeaders::new_with_capacity(1).insert(Header { key: HEADER_SCHEMA_VERSION, value: Some(schema_version.as_str()) });
        Ok(Prepared { key: r.key().to_string(), value: Some(value), headers })
    }

    fn delivery_error(&mut self, index: usize, e: &KafkaError) -> SinkError {
        let code = e.rdkafka_error_code();
        let kind = code.map(classify).unwrap_or(ErrorKind::Transient);
        if code == Some(RDKafkaErrorCode::Fatal) {
            // An idempotent producer that hit a fatal error cannot go on: start afresh.
            self.discard_producer();
        }
        let what = match code {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                format!("the topic does not exist on {} (any more): {e}", self.cfg.brokers)
            }
            _ => format!("record {index} of the batch was not delivered: {e}"),
        };
        let mut err = self.err(kind, what);
        if kind == ErrorKind::Permanent {
            err.failed_index = Some(index);
        }
        err
    }
}

#[async_trait]
impl Sink for KafkaChannel {
    async fn open(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        self.name = ctx.name.clone();
        self.discard_producer();
        let producer = self.create_producer()?;
        let checked = match self.ensure_topic(&producer).await {
            Ok(()) => self.check_schema().await,
            Err(e) => Err(e),
        };
        self.producer = Some(producer);
        if let Err(e) = checked {
            self.discard_producer();
            return Err(e);
        }
        tracing::info!(
            topic = %self.cfg.topic,
            format = self.cfg.format.as_str(),
            schema_id = ?self.schema_id,
            "Kafka channel open"
        );
        Ok(())
    }

    async fn write(&mut self, batch: &[LogRecord]) -> Result<Written, SinkError> {
        if self.producer.is_none() {
            // After a fatal producer error; the topic was checked at open.
            self.producer = Some(self.create_producer()?);
        }
        if self.cfg.format == Format::Avro && self.schema_id.is_none() {
            self.check_schema().await?;
        }
        let Some(producer) = self.producer.clone() else {
            return Err(self.err(ErrorKind::Internal, "no producer"));
        };
        let mut pending = Vec::with_capacity(batch.len());
        // The first record that could not even be enqueued, and why.
        let mut refused: Option<(usize, SinkError)> = None;
        'records: for (i, rec) in batch.iter().enumerate() {
            let p = match self.prepare(rec) {
                Ok(p) => p,
                Err(e) => {
                    let mut err = self.err(ErrorKind::Permanent, format_args!("record {i} of the batch: {e}"));
                    err.failed_index = Some(i);
                    refused = Some((i, err));
                    break;
                }
            };
            let queue_deadline = tokio::time::Instant::now() + self.cfg.delivery_timeout;
            loop {
                let mut fr = FutureRecord::to(&self.cfg.topic).key(p.key.as_bytes()).headers(p.headers.clone());
                if let Some(v) = &p.value {
                    fr = fr.payload(v.as_slice());
                }
                match producer.send_result(fr) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if tokio::time::Instant::now() < queue_deadline =>
                    {
                        // Back-pressure: the producer's own thread drains the queue.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err((e, _)) => {
                        refused = Some((i, self.delivery_error(i, &e)));
                        break 'records;
                    }
                }
            }
        }
        let reports = futures::future::join_all(pending).await;
        let mut first_failure: Option<SinkError> = None;
        for (i, r) in reports.into_iter().enumerate() {
            let e = match r {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => self.delivery_error(i, &e),
                Err(_) => self.err(ErrorKind::Transient, format_args!("record {i}: the producer went away before reporting")),
            };
            first_failure = Some(e);
            break;
        }
        match (first_failure, refused) {
            (Some(e), _) => Err(e),
            (None, Some((_, e))) => Err(e),
            (None, None) => Ok(Written::done()),
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let Some(p) = self.producer.take() else { return Ok(()) };
        let timeout = self.cfg.delivery_timeout;
        let res = tokio::task::spawn_blocking(move || {
            let r = p.flush(timeout);
            drop(p);
            r
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err(ErrorKind::Transient, format_args!("flushing the producer: {e}"))),
            Err(e) => Err(self.err(ErrorKind::Internal, format_args!("flush task failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistream_core::event::Position;

    fn channel(format: Format) -> KafkaChannel {
        let mut cfg: KafkaChannelConfig = serde_json::from_value(serde_json::json!({ "brokers": "127.0.0.1:9", "topic": "t" })).unwrap();
        cfg.format = format;
        if format == Format::Avro {
            cfg.schema_registry = Some("http://127.0.0.1:9".into());
        }
        KafkaChannel::new(cfg).unwrap()
    }

    #[test]
    fn a_processor_record_goes_out_as_its_json_keyed_by_its_key() {
        let payload = r#"{"key":"ada@social.example/day/2026-03-02T00:00:00Z","account":"ada@social.example","posts":3}"#;
        let rec = LogRecord::new(Position { partition: 0, offset: 4 }, chrono::Utc::now(), payload.into());
        let p = channel(Format::Json).prepare(&rec).unwrap();
        assert_eq!(p.key, "ada@social.example/day/2026-03-02T00:00:00Z");
        assert_eq!(p.value.as_deref(), Some(payload.as_bytes()));
        // A channel for posts has no Avro form for them; and a record that is neither is still refused.
        assert!(channel(Format::Avro).prepare(&rec).is_err());
        let junk = LogRecord::new(Position { partition: 0, offset: 5 }, chrono::Utc::now(), "[1,2]".into());
        assert!(channel(Format::Json).prepare(&junk).is_err());
    }

    #[test]
    fn a_stats_channel_in_avro_refuses_what_is_not_a_stats_record() {
        let mut ch = channel(Format::Avro).with_records(RecordKind::Stats);
        ch.schema_id = Some(3);
        let rec = LogRecord::new(Position { partition: 0, offset: 4 }, chrono::Utc::now(), r#"{"key":"k","posts":3}"#.into());
        let e = ch.prepare(&rec).err().unwrap();
        assert!(e.contains("not a stats record"), "{e}");
        assert_eq!(RecordKind::Stats.schema_json(), avro::stats::SCHEMA_JSON);
    }
}
