//! REST client for the parts of the Mastodon client API fedistream reads:
//! instance facts, account lookup, credentials, profile timelines (paged with
//! `min_id`/`max_id`, cursors from the `Link` header) and single statuses.
//!
//! Every request first waits on the shared [`RateLimiter`] of its (host, token)
//! and feeds the response headers back into it. Failures come back as classified
//! [`MastodonError`]s; the client never retries or sleeps on its own (the runtime
//! decides), apart from the limiter's wait. The token travels only in the
//! `Authorization` header and is never logged or put into an error.

pub(crate) mod error;
mod secret;
mod types;
mod write;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, LINK};
use serde_json::value::RawValue;

pub use self::error::MastodonError;
pub use self::secret::{token_from_env, token_from_file, Secret};
pub use self::types::{parse_link_header, AccountRef, InstanceInfo, Page, StatusPage};
pub use self::write::{Download, PostedStatus, StatusForm, UploadedMedia};
use super::ratelimit::{RateLimiter, RateLimiters};

/// Descriptive User-Agent, as the API guidelines ask.
pub const USER_AGENT: &str = concat!("fedistream/", env!("CARGO_PKG_VERSION"), " (+https://github.com/fedistream/fedistream)");

/// Responses larger than this are refused (a page of 40 statuses is ~200 KiB).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Most ids one `GET /api/v1/statuses?id[]=` asks for (Mastodon's limit).
pub const MAX_IDS_PER_LOOKUP: usize = 20;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server, e.g. `https://mastodon.social/`.
    pub base_url: url::Url,
    pub token: Option<Secret>,
    pub user_agent: String,
    /// Per REST request (connect + response); streaming is watched separately.
    pub timeout: Duration,
}

impl ClientConfig {
    pub fn new(base_url: url::Url, token: Option<Secret>) -> Self {
        ClientConfig { base_url, token, user_agent: USER_AGENT.to_string(), timeout: Duration::from_secs(30) }
    }
}

/// A Mastodon REST client. Cheap to clone: clones share one connection pool
/// and one rate limiter.
#[derive(Clone)]
pub struct MastodonClient {
    inner: Arc<Inner>,
    /// Requests of this handle go only while more than this fraction of the
    /// rate-limit window's budget is left ([`MastodonClient::background`],
    /// [`MastodonClient::with_share`]); `None`: up to the last request.
    reserve: Option<f64>,
}

struct Inner {
    http: reqwest::Client,
    /// Always ends with `/`, so joining relative paths keeps any prefix.
    base: url::Url,
    token: Option<Secret>,
    auth: Option<HeaderValue>,
    user_agent: String,
    timeout: Duration,
    limiter: RateLimiter,
}

impl std::fmt::Debug for MastodonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MastodonClient").field("base_url", &self.inner.base.as_str()).field("token", &self.inner.token).finish()
    }
}

impl MastodonClient {
    pub fn new(cfg: ClientConfig, limiters: &RateLimiters) -> Result<Self, MastodonError> {
        let mut base = cfg.base_url;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(MastodonError::Config(format!("Mastodon base URL {base} must be http(s)://host/")));
        }
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let auth = match &cfg.token {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                    .map_err(|_| MastodonError::Config("the access token contains invalid characters".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let user_agent = if cfg.user_agent.is_empty() { USER_AGENT.to_string() } else { cfg.user_agent };
        // No client-wide timeout: it would also cut long-lived SSE bodies. REST
        // requests set `timeout` per request.
        let http = reqwest::Client::builder()
            .user_agent(user_agent.clone())
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| MastodonError::Config(format!("cannot build the HTTP client: {e}")))?;
        let limiter = limiters.get(&host_port(&base), cfg.token.as_ref());
        Ok(MastodonClient {
            inner: Arc::new(Inner { http, base, token: cfg.token, auth, user_agent, timeout: cfg.timeout, limiter }),
            reserve: None,
        })
    }

    /// A handle on the same client whose requests are background work: each
    /// waits while less than half of the rate-limit window's budget is left
    /// (reconciliation must never take the requests the catch-up needs).
    pub fn background(&self) -> MastodonClient {
        MastodonClient { inner: self.inner.clone(), reserve: Some(0.5) }
    }

    /// A handle on the same client that takes at most `share` (0..=1) of each
    /// rate-limit window of its (server, token): its requests wait while less
    /// than `1 - share` of the budget is left, which stays for the other
    /// handles of the same limiter (a timeline source next to account sources).
    pub fn with_share(&self, share: f64) -> MastodonClient {
        let reserve = (1.0 - share.clamp(0.0, 1.0)).max(0.0);
        MastodonClient { inner: self.inner.clone(), reserve: (reserve > 0.0).then_some(reserve) }
    }

    /// The fraction of a window's budget this handle leaves to others.
    pub(crate) fn reserve(&self) -> Option<f64> {
        self.reserve
    }

    pub fn base_url(&self) -> &url::Url {
        &self.inner.base
    }

    /// `host[:port]` of the base URL.
    pub fn host(&self) -> String {
        host_port(&self.inner.base)
    }

    pub fn has_token(&self) -> bool {
        self.inner.token.is_some()
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn auth_header(&self) -> Option<&HeaderValue> {
        self.inner.auth.as_ref()
    }

    pub(crate) fn user_agent(&self) -> &str {
        &self.inner.user_agent
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// `/api/v2/instance`, falling back to `/api/v1/instance` when v2 is missing.
    pub async fn instance(&self) -> Result<InstanceInfo, MastodonError> {
        match self.get_json("api/v2/instance", &[]).await {
            Ok(v) => InstanceInfo::from_v2(&v).ok_or_else(|| MastodonError::decode("/api/v2/instance", "no `domain` in the instance")),
            Err(e) if matches!(e.status(), Some(404 | 410)) => {
                let v = self.get_json("api/v1/instance", &[]).await?;
                InstanceInfo::from_v1(&v).ok_or_else(|| MastodonError::decode("/api/v1/instance", "no `uri` in the instance"))
            }
            Err(e) => Err(e),
        }
    }

    /// `/api/v1/accounts/lookup?acct=`: only accounts the server already knows.
    pub async fn lookup_account(&self, acct: &str) -> Result<AccountRef, MastodonError> {
        let acct = acct.trim().trim_start_matches('@');
        let v = self.get_json("api/v1/accounts/lookup", &[("acct", acct.to_string())]).await?;
        AccountRef::from_json(v).ok_or_else(|| MastodonError::decode("/api/v1/accounts/lookup", "not an account"))
    }

    /// `/api/v1/accounts/verify_credentials`: who the token belongs to. A 401
    /// here means the token is revoked or invalid.
    pub async fn verify_credentials(&self) -> Result<AccountRef, MastodonError> {
        const PATH: &str = "api/v1/accounts/verify_credentials";
        if !self.has_token() {
            return Err(MastodonError::Config("verify_credentials needs an access token".into()));
        }
        let v = self.get_json(PATH, &[]).await?;
        AccountRef::from_json(v).ok_or_else(|| MastodonError::decode(PATH, "not an account"))
    }

    /// One page of `/api/v1/accounts/:id/statuses`, newest first, unparsed.
    pub async fn account_statuses(&self, account_id: &str, page: Page) -> Result<StatusPage, MastodonError> {
        self.status_page(&["api", "v1", "accounts", account_id, "statuses"], &[], page).await
    }

    /// One page of a timeline (`segments` under the base, e.g. `api/v1/timelines/public`,
    /// with `params` besides the paging ones), newest first, unparsed.
    pub async fn status_page(&self, segments: &[&str], params: &[(&'static str, String)], page: Page) -> Result<StatusPage, MastodonError> {
        let url = self.url_with_segments(segments);
        let path = url.path().to_string();
        let mut query = params.to_vec();
        query.extend(page.query());
        let (headers, body) = self.get(url, &query).await?;
        let statuses: Vec<Box<RawValue>> =
            serde_json::from_slice(&body).map_err(|e| MastodonError::undecodable(&path, "a JSON array of statuses", &body, e))?;
        let (next_max_id, prev_min_id) = headers
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(parse_link_header)
            .fold((None, None), |(n, p), (n2, p2)| (n.or(n2), p.or(p2)));
        Ok(StatusPage { statuses, next_max_id, prev_min_id })
    }

    /// `/api/v1/statuses/:id`, unparsed.
    pub async fn status(&self, id: &str) -> Result<Box<RawValue>, MastodonError> {
        let url = self.url_with_segments(&["api", "v1", "statuses", id]);
        let path = url.path().to_string();
        let (_, body) = self.get(url, &[]).await?;
        serde_json::from_slice(&body).map_err(|e| MastodonError::undecodable(&path, "a status", &body, e))
    }

    /// `GET /api/v1/statuses?id[]=..` (Mastodon 4.3+): the statuses among `ids`
    /// that still exist and may be seen, unparsed (at most [`MAX_IDS_PER_LOOKUP`]
    /// ids). `Ok(None)` when the server has no such endpoint (older Mastodon,
    /// GoToSocial: 404, 405, 410; 422 from servers that route the path but
    /// refuse the `id[]` parameter).
    pub async fn statuses_by_id(&self, ids: &[String]) -> Result<Option<Vec<Box<RawValue>>>, MastodonError> {
        const PATH: &str = "/api/v1/statuses";
        let url = self.url_with_segments(&["api", "v1", "statuses"]);
        let query: Vec<(&str, String)> = ids.iter().take(MAX_IDS_PER_LOOKUP).map(|id| ("id[]", id.clone())).collect();
        match self.get(url, &query).await {
            Ok((_, body)) => {
                serde_json::from_slice(&body).map(Some).map_err(|e| MastodonError::undecodable(PATH, "a JSON array of statuses", &body, e))
            }
            Err(e) if matches!(e.status(), Some(404 | 405 | 410 | 422)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn url_with_segments(&self, segments: &[&str]) -> url::Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut s) = url.path_segments_mut() {
            // Base always ends with '/', whose empty last segment we replace.
            s.pop_if_empty().extend(segments);
        }
        url
    }

    async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<serde_json::Value, MastodonError> {
        let segments: Vec<&str> = path.split('/').collect();
        let url = self.url_with_segments(&segments);
        let url_path = url.path().to_string();
        let (_, body) = self.get(url, query).await?;
        serde_json::from_slice(&body).map_err(|e| MastodonError::undecodable(&url_path, "a JSON object", &body, e))
    }

    /// GET with rate limiting, auth and classification (the one request path in
    /// `write.rs`). Returns headers and body of a 2xx answer.
    async fn get(&self, mut url: url::Url, query: &[(&str, String)]) -> Result<(HeaderMap, bytes::Bytes), MastodonError> {
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.request(reqwest::Method::GET, url, write::Body::None, None).await
    }

    pub(crate) fn http_error(&self, status: u16, path: &str, headers: &HeaderMap, body: &[u8]) -> MastodonError {
        let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let message = error::server_message(body, content_type)
            .or_else(|| headers.get("x-error-message").and_then(|v| v.to_str().ok()).map(error::truncate));
        // A 503 is no rate limit: the limiter probes the server and lets
        // requests through once it answers again.
        let retry_after = if status == 429 { self.inner.limiter.blocked_for() } else { None };
        MastodonError::Http { status, path: path.to_string(), message, retry_after }
    }
}

/// Read a body up to [`MAX_BODY`].
async fn read_body(mut resp: reqwest::Response, path: &str) -> Result<bytes::Bytes, MastodonError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(MastodonError::decode(path, "response body too large"));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| MastodonError::network(path, e))? {
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(MastodonError::decode(path, "response body too large"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn host_port(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

#[cfg(test)]
mod tests;
