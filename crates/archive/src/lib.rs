//! fedistream-archive: the `archive` channel and SQL over what it wrote.
//!
//! * [`config`]: `[channels.NAME] type = "archive"`, its checks and the
//!   archive's [`config::Location`].
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
//!
//! Without the `store` feature (on by default) only the configuration types
//! ([`config`], [`layout`]) are built — no object_store, Parquet or Arrow — so
//! a fedistream built without the archive still reads and validates a config
//! that names it, and says what is missing.

#[cfg(feature = "store")]
pub mod compact;
pub mod config;
#[cfg(feature = "store")]
pub mod encode;
pub mod layout;
#[cfg(feature = "store")]
pub mod lease;
#[cfg(feature = "store")]
pub mod manifest;
#[cfg(feature = "store")]
pub mod schema;
#[cfg(feature = "store")]
pub mod sink;
#[cfg(feature = "sql")]
pub mod sql;
#[cfg(feature = "store")]
pub mod store;

pub use config::{ArchiveSinkConfig, Format};
#[cfg(feature = "store")]
pub use sink::ArchiveSink;
