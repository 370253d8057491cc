//! fedistream on Apache Kafka: the Kafka log backend ([`log::KafkaLog`]) behind
//! the same `Log` trait as the embedded SQLite log, and group-based assignment of
//! accounts to ingest processes ([`assign`]).

pub mod assign;
pub mod log;
