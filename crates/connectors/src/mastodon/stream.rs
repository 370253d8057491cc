//! One supervised streaming connection to a Mastodon server.
//!
//! [`spawn_stream`] runs a task that keeps one stream ([`StreamName`]) open
//! over WebSocket or SSE and sends [`StreamEvent`]s into a channel. It owns the
//! streaming base (asked from `/api/v2/instance` before every connect until the
//! server answers, and mapped onto the client's address when the server names
//! itself), the transport choice (Auto: WebSocket first, SSE when the upgrade
//! fails — a 401/403 too once the token checks out — WebSocket only where SSE
//! answers 404 as on GoToSocial/Akkoma), the idle watchdog (see `conn`),
//! reconnects with capped jittered [`Backoff`] (each failed attempt reported as
//! [`StreamEvent::ConnectFailed`]), and the revoked-token check: after a
//! 401/403 on connect or a clean close by the server it asks
//! `verify_credentials`, and a 401 there ends the task with [`StreamEvent::Fatal`]
//! instead of looping.
//!
//! The stream is a low-latency hint and loses events across reconnects; the
//! source runs its REST catch-up on every [`StreamEvent::Connected`].

mod conn;
mod supervise;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::client::{MastodonClient, MastodonError};

/// Which transport to use (config value, serde lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket first; SSE when the upgrade fails; WebSocket only if SSE is 404.
    #[default]
    Auto,
    WebSocket,
    Sse,
}

impl Transport {
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
        }
    }
}

/// Which stream to follow. The account source reads `user` or a list (the
/// reader's feeds, filtered on the Rails side only by the reader's own
/// follows); the timeline source reads the public, hashtag and list streams,
/// which drop boosts and (public ones) replies to others and may be disabled
/// server-side: always a hint next to REST, never the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamName {
    /// The token owner's home feed.
    User,
    /// One of the token owner's lists, by id.
    List(String),
    /// `public` (both false), `public:local` or `public:remote`.
    Public { local: bool, remote: bool },
    /// `hashtag` or `hashtag:local`, for one tag.
    Hashtag { tag: String, local: bool },
}

impl StreamName {
    /// The stream's name in the API (`stream` of a subscription).
    pub fn api_name(&self) -> &'static str {
        match self {
            StreamName::User => "user",
            StreamName::List(_) => "list",
            StreamName::Public { local: true, .. } => "public:local",
            StreamName::Public { remote: true, .. } => "public:remote",
            StreamName::Public { .. } => "public",
            StreamName::Hashtag { local: true, .. } => "hashtag:local",
            StreamName::Hashtag { .. } => "hashtag",
        }
    }

    /// The SSE path under `api/v1/streaming/`.
    pub fn sse_path(&self) -> &'static str {
        match self {
            StreamName::User => "user",
            StreamName::List(_) => "list",
            StreamName::Public { local: true, .. } => "public/local",
            StreamName::Public { remote: true, .. } => "public/remote",
            StreamName::Public { .. } => "public",
            StreamName::Hashtag { local: true, .. } => "hashtag/local",
            StreamName::Hashtag { .. } => "hashtag",
        }
    }

    /// The `tag` / `list` parameter the stream needs, if any.
    pub fn param(&self) -> Option<(&'static str, &str)> {
        match self {
            StreamName::List(id) => Some(("list", id)),
            StreamName::Hashtag { tag, .. } => Some(("tag", tag)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub transport: Transport,
    pub stream: StreamName,
    /// SSE: no byte (heartbeats come every 15 s) for this long → reconnect.
    pub sse_idle_timeout: Duration,
    /// WebSocket: no frame or ping (every 30 s) for this long → reconnect.
    pub ws_idle_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Streaming base (`ws(s)://` or `http(s)://`). `None`: ask the server
    /// (`/api/v2/instance`) before connecting, again before every connect until
    /// it answers, and use the client's base URL meanwhile.
    pub streaming_base: Option<url::Url>,
    /// Names of the server the client reaches at its base URL (the followed
    /// accounts' server when the source has an `instance` override). A
    /// streaming URL advertised on one of them, or on the server's own
    /// `domain`, is reached through the base URL's scheme, host and port: a
    /// server reached through another address (GoToSocial on loopback
    /// advertises `wss://<its domain>`) must not send us to that domain.
    pub server_names: Vec<String>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            transport: Transport::Auto,
            stream: StreamName::User,
            sse_idle_timeout: Duration::from_secs(50),
            ws_idle_timeout: Duration::from_secs(80),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            streaming_base: None,
            server_names: Vec::new(),
        }
    }
}

/// What the streaming task reports.
#[derive(Debug)]
pub enum StreamEvent {
    /// A connection is up (after every reconnect too): run the REST catch-up.
    /// `transport` is the one in use (never `Auto`).
    Connected { transport: Transport },
    /// The connection dropped; a reconnect follows unless the task ends.
    Disconnected { reason: String },
    /// A connect attempt failed (`attempt` counts failures since the last
    /// connection); another follows after a delay.
    ConnectFailed { attempt: u32, transport: Transport, error: String },
    /// `update`: the raw Status JSON text, as the server sent it (the
    /// consumer parses it, and reports it when it does not parse).
    Update(String),
    /// `status.update`: the raw Status JSON text of an edited post.
    StatusUpdate(String),
    /// `delete`: the status id.
    Delete(String),
    /// A frame or event that could not be decoded; the stream goes on.
    Malformed { raw: String, reason: String },
    /// The task cannot go on (token revoked, no token); it ends after this.
    Fatal { error: MastodonError },
}

/// Events buffered between the task and its consumer; when full, the task
/// stops reading the socket (backpressure) rather than dropping events.
const CHANNEL_CAPACITY: usize = 1024;

/// Start the streaming task. It runs until `shutdown` is cancelled, the
/// receiver is dropped, or it sent [`StreamEvent::Fatal`].
pub fn spawn_stream(client: MastodonClient, cfg: StreamConfig, shutdown: CancellationToken) -> mpsc::Receiver<StreamEvent> {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let span = tracing::info_span!("mastodon_stream", component = "mastodon", host = %client.host());
    tokio::spawn(supervise::run(client, cfg, Emitter { tx, shutdown }).instrument(span));
    rx
}

/// Why a task stops sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Shutdown,
    ReceiverGone,
}

/// The sending half plus the shutdown token, so every wait can be cancelled.
struct Emitter {
    tx: mpsc::Sender<StreamEvent>,
    shutdown: CancellationToken,
}

impl Emitter {
    async fn send(&self, ev: StreamEvent) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown),
            r = self.tx.send(ev) => r.map_err(|_| Stop::ReceiverGone),
        }
    }

    /// Sleep unless shut down first.
    async fn sleep(&self, d: Duration) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown),
            _ = self.tx.closed() => Err(Stop::ReceiverGone),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
