//! Test helpers (feature `test-util`): where the real broker and schema
//! registry are, and a gate in front of the registry that refuses credentials
//! or fails on demand.

pub mod registry;

pub use registry::{schema_registry, RegistryGate};

/// The brokers tests run against: `FEDISTREAM_KAFKA_BROKERS`, default
/// `127.0.0.1:9092`. Panics, saying how to start one, when the first broker does
/// not accept connections: a missing broker fails the tests, it never skips them.
pub fn brokers() -> String {
    let b = std::env::var("FEDISTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = b.split(',').next().unwrap_or_default().to_string();
    let reachable = first
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok());
    assert!(reachable, "no Kafka broker at {b}: start one with `scripts/kafka up` (or set FEDISTREAM_KAFKA_BROKERS)");
    b
}
