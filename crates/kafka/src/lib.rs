//! fedistream on Apache Kafka.

pub mod channel;
pub mod registry;
#[cfg(feature = "test-util")]
pub mod testing;
