//! fedistream-connectors: the systems fedistream reads from and writes to.
//!
//! * [`mastodon`]: the Mastodon client API (REST, rate limits, SSE and WebSocket
//!   streaming) and the lossless Mastodon source.
//! * [`file`]: the JSON Lines file channel; [`stdout`]: the terminal channel.
//! * [`replay`]: a finite source reading JSON Lines archives.
//! * [`webhook`]: the HTTP POST channel (signed JSON, Discord and Slack presets).
//! * `testing` (feature `test-util`): a fake Mastodon server for tests and benchmarks.

pub mod file;
pub mod mastodon;
pub mod replay;
pub mod stdout;
pub mod synthetic;
pub mod webhook;

#[cfg(feature = "test-util")]
pub mod testing;
