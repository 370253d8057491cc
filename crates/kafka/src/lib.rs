//! fedistream on Apache Kafka.
