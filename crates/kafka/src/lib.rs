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

pub mod assign;
pub mod channel;
pub mod log;
pub mod registry;
#[cfg(feature = "test-util")]
pub mod testing;
