//! Test helpers (feature `test-util`): the schema-registry stand-in.

pub mod registry;

pub use registry::RegistryStandIn;
