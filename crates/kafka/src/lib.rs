//! fedistream on Apache Kafka:
//! * [`log::KafkaLog`], the Kafka log backend behind the same `Log` trait as the
//!   embedded SQLite log (events topic, compacted state topic, a consumer group
//!   per channel, transactional appends);
//! * [`assign`], group-based assignment of accounts to ingest processes;
//! * [`channel::KafkaChannel`], the `kafka` channel writing to a user's own topic
//!   in JSON or Avro (Confluent wire format) with a schema [`registry`] client;
//! * `testing` (feature `test-util`): where the tests' broker and schema registry
//!   are, and a gate in front of the registry that refuses credentials or fails
//!   on demand.
//!
//! Without the `client` feature (on by default) only the configuration types
//! are built — no librdkafka — so a fedistream built without Kafka still reads
//! and validates a config that names it, and says what is missing.

#[cfg(feature = "client")]
pub mod assign;
#[cfg(feature = "client")]
pub mod channel;
#[cfg(feature = "client")]
pub mod log;

/// The `kafka` channel's configuration (the channel needs the `client` feature).
#[cfg(not(feature = "client"))]
pub mod channel {
    #[path = "config.rs"]
    pub mod config;
    pub use config::{Compression, CreateTopic, Format, KafkaChannelConfig};
}

/// The Kafka log's configuration (the log needs the `client` feature).
#[cfg(not(feature = "client"))]
pub mod log {
    #[path = "config.rs"]
    mod config;
    pub use config::KafkaLogConfig;
}

pub mod registry;
#[cfg(feature = "test-util")]
pub mod testing;
