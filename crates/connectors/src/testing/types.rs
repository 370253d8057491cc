//! The plain data types of the fake server's public API: configuration, what a
//! test passes to create accounts and statuses, and what it gets back.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Which server software the fake imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// Mastodon 4.6: numeric snowflake ids, SSE and WebSocket streaming,
    /// ISO 8601 `X-RateLimit-Reset`.
    #[default]
    Mastodon,
    /// GoToSocial: ULID ids, WebSocket streaming only (SSE paths 404), Unix-seconds
    /// `X-RateLimit-Reset`, `content_type`/`interaction_policy` on statuses.
    GoToSocial,
}

/// How an SSE heartbeat is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeartbeatStyle {
    /// `:thump\n`, as Mastodon wrote it up to 2025.
    #[default]
    Legacy,
    /// `:thump\n\n`, as the 2026 streaming server writes it (mastodon#37379).
    Terminated,
}

/// The general API throttle: `limit` requests per fixed, epoch-aligned `window`
/// per token (or per IP for anonymous callers).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub limit: u32,
    pub window: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { limit: 300, window: Duration::from_secs(300) }
    }
}

/// Server configuration; `Default` is a Mastodon with 15 s heartbeats, 30 s pings,
/// no token required and a 300 per 5 minutes throttle.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub flavor: Flavor,
    pub heartbeat_interval: Duration,
    pub heartbeat_style: HeartbeatStyle,
    pub ws_ping_interval: Duration,
    /// If set, streaming and `verify_credentials` require this token (header
    /// `Authorization: Bearer`, query `access_token`, or for WebSocket
    /// `Sec-WebSocket-Protocol`). Public REST reads work anonymously either way,
    /// but a request presenting a wrong token gets 401, as on Mastodon.
    pub token: Option<String>,
    pub rate_limit: RateLimitConfig,
    /// Mastodon's per-account `statuses` family: creating statuses, boosts and
    /// edits (`None` disables it). Default 300 per 3 hours.
    pub posting_limit: Option<(u32, Duration)>,
    /// `DELETE /api/v1/statuses/:id` and `POST .../unreblog` together, per account.
    /// Default 30 per 30 minutes.
    pub delete_limit: Option<(u32, Duration)>,
    /// `POST /api/v{1,2}/media`, per account. Default 30 per 30 minutes.
    pub media_limit: Option<(u32, Duration)>,
    /// How many `GET /api/v1/media/:id` polls of an upload that answered 202 get
    /// `206 Partial Content` before it is processed. Default 1.
    pub media_processing_polls: u32,
    /// The name the server calls itself (`domain` of `/api/v2/instance`, `uri`
    /// of v1), when it is not the address it is reached at. With it, the
    /// instance advertises its streaming base as `wss://<domain>`, as GoToSocial
    /// always does, even though it is served over plain http on loopback.
    pub domain: Option<String>,
    /// Serve `GET /api/v1/statuses?id[]=` (Mastodon 4.3+). `None`: by flavour
    /// (Mastodon yes, GoToSocial no: there the path answers 404 to `GET`).
    pub statuses_by_id: Option<bool>,
    /// Answer anonymous API reads. `false` refuses them with 401 like
    /// GoToSocial's default (`Unauthorized: token not supplied`) or a Mastodon
    /// in limited-federation mode.
    pub anonymous_reads: bool,
    /// Streaming lives on a second listener (as Mastodon's separate streaming
    /// server does): the instance advertises it, and the main address answers
    /// `301` to the streaming paths.
    pub separate_streaming: bool,
}

impl FakeConfig {
    /// Whether `GET /api/v1/statuses?id[]=` is served.
    pub fn serves_statuses_by_id(&self) -> bool {
        self.statuses_by_id.unwrap_or(self.flavor == Flavor::Mastodon)
    }
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            flavor: Flavor::Mastodon,
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_style: HeartbeatStyle::Legacy,
            ws_ping_interval: Duration::from_secs(30),
            token: None,
            rate_limit: RateLimitConfig::default(),
            posting_limit: Some((300, Duration::from_secs(3 * 3600))),
            delete_limit: Some((30, Duration::from_secs(30 * 60))),
            media_limit: Some((30, Duration::from_secs(30 * 60))),
            media_processing_polls: 1,
            domain: None,
            statuses_by_id: None,
            anonymous_reads: true,
            separate_streaming: false,
        }
    }
}

/// Profile settings of a new account.
#[derive(Debug, Clone, Default)]
pub struct AccountOpts {
    /// Empty string if `None`, like an account that never set one.
    pub display_name: Option<String>,
    pub note_html: String,
    pub bot: bool,
    pub locked: bool,
    /// Serialised only when set (the attribute is optional in Mastodon).
    pub noindex: Option<bool>,
    pub discoverable: Option<bool>,
    /// Profile fields as (name, value HTML).
    pub fields: Vec<(String, String)>,
    /// A remote account as this server knows it (`acct` is `user@domain`):
    /// its posts are on the federated and remote timelines, not the local one.
    pub domain: Option<String>,
}

/// A status to store with [`super::FakeMastodon::post`].
#[derive(Debug, Clone)]
pub struct NewStatus {
    pub content_html: String,
    /// `public` (default), `unlisted`, `private` or `direct`.
    pub visibility: String,
    pub spoiler_text: String,
    pub sensitive: bool,
    pub language: Option<String>,
    pub in_reply_to_id: Option<String>,
    /// Makes this a boost of the given status id; content and media are ignored.
    /// An unknown id is ignored (the status is stored as an ordinary post).
    pub reblog_of: Option<String>,
    /// Attachments as (type, description): `image`, `gifv`, `video`, `audio`.
    pub media: Vec<(String, Option<String>)>,
    /// Hashtag names; served lower-cased in `tags[].name`, like Mastodon.
    pub tags: Vec<String>,
    /// When it was created (default: now). The id still comes from the posting
    /// order, as for a remote post that reached the server late.
    pub created_at: Option<DateTime<Utc>>,
}

impl Default for NewStatus {
    fn default() -> Self {
        NewStatus {
            content_html: String::new(),
            visibility: "public".to_owned(),
            spoiler_text: String::new(),
            sensitive: false,
            language: Some("en".to_owned()),
            in_reply_to_id: None,
            reblog_of: None,
            media: Vec::new(),
            tags: Vec::new(),
            created_at: None,
        }
    }
}

impl NewStatus {
    /// A public post with this HTML content.
    pub fn html(content_html: impl Into<String>) -> Self {
        NewStatus { content_html: content_html.into(), ..Default::default() }
    }
}

/// Identity of a stored status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub id: String,
    pub uri: String,
    pub url: String,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Raw query string (empty if none).
    pub query: String,
    pub at: DateTime<Utc>,
    /// A token was presented and accepted.
    pub authorized: bool,
    /// Status of the response (for streams: of the response head).
    pub status: u16,
    /// The `Idempotency-Key` header, if the request carried one.
    pub idempotency_key: Option<String>,
}

/// A file uploaded with `POST /api/v2/media`, as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedMedia {
    pub bytes: Vec<u8>,
    pub description: Option<String>,
    /// The part's `Content-Type` (`application/octet-stream` if it had none).
    pub content_type: String,
    /// False while `GET /api/v1/media/:id` still answers 206.
    pub processed: bool,
}
