//! fedistream-archive: the `archive` channel and SQL over what it wrote.
//!
//! * [`config`]: `[channels.NAME] type = "archive"` and its checks.
//! * [`store`]: the object store (a local directory or an S3-compatible
//!   bucket, one `object_store` code path) and its error classification.
//! * [`layout`]: Hive-partitioned, deterministic object names.
//! * [`schema`] and [`encode`]: Parquet (zstd) and JSON Lines objects.
//! * [`manifest`]: which objects readers see (the switch of a compaction).
//! * [`compact`]: `fedistream archive compact` (current state, retention),
//!   one run at a time per dataset ([`lease`]).
//! * [`sink`]: the channel itself (buffering, flushing by size and age,
//!   acknowledging only what the store holds, resuming without duplicates).
//! * `sql` (feature `sql`): `fedistream sql` with Apache DataFusion.

pub mod compact;
pub mod config;
pub mod encode;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod schema;
pub mod sink;
#[cfg(feature = "sql")]
pub mod sql;
pub mod store;

pub use config::{ArchiveSinkConfig, Format};
pub use sink::ArchiveSink;
