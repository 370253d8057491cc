//! fedistream-connectors: the systems fedistream reads from and writes to.
//!
//! * [`mastodon`]: the Mastodon client API (REST, rate limits, SSE and WebSocket
//!   streaming) and the lossless Mastodon source.
//! * [`file`]: the JSON Lines file channel; [`stdout`]: the terminal channel.
//! * [`replay`]: a finite source reading JSON Lines archives.
//! * [`webhook`]: the HTTP POST channel (signed JSON, Discord and Slack presets).
//! * `testing` (feature `test-util`): a fake Mastodon server for tests and benchmarks.
//!
//! Without the `webhook` feature (on by default) only the webhook channel's
//! configuration is built, so a fedistream built without it still reads and
//! validates a config that names it, and says what is missing.

pub mod file;
pub mod mastodon;
pub mod replay;
pub mod stdout;
pub mod synthetic;
#[cfg(feature = "webhook")]
pub mod webhook;

/// The `webhook` channel's configuration (the channel needs the `webhook` feature).
#[cfg(not(feature = "webhook"))]
pub mod webhook {
    #[path = "config.rs"]
    pub mod config;
    pub use config::{WebhookFormat, WebhookSinkConfig};
}

#[cfg(feature = "test-util")]
pub mod testing;
