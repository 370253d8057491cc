//! The write half of the REST client, for the `mastodon` channel: post, edit and
//! delete statuses (posts carry an `Idempotency-Key`), boost and unboost, resolve
//! a remote post by URL, upload media and poll its processing, and download
//! remote media anonymously.
//!
//! Like the read half, every request to the server waits on the shared rate
//! limiter and feeds the answer's headers back into it, and failures come back as
//! classified [`MastodonError`]s (422 → permanent with the server's `error` text,
//! 401/403 → auth, 429 → transient until the reset, 5xx/network → transient).
//! Nothing here retries.

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::{read_body, MastodonClient, MastodonError};
use crate::mastodon::ratelimit::Grant;

/// Largest remote media file [`MastodonClient::download`] accepts.
pub const MAX_DOWNLOAD: usize = 40 * 1024 * 1024;

/// The body of `POST /api/v1/statuses` and `PUT /api/v1/statuses/:id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusForm {
    pub status: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub media_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to_id: Option<String>,
    pub sensitive: bool,
    pub spoiler_text: String,
    /// Ignored by the server on edits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// What the server answered to a post, an edit or a boost.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedStatus {
    pub id: String,
    pub uri: String,
    pub url: Option<String>,
    pub raw: Value,
}

impl PostedStatus {
    fn from_json(path: &str, raw: Value) -> Result<Self, MastodonError> {
        let s = |k: &str| match raw.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Ok(PostedStatus {
            id: s("id").ok_or_else(|| MastodonError::decode(path, "no status `id`"))?,
            uri: s("uri").unwrap_or_default(),
            url: s("url"),
            raw,
        })
    }
}

/// An uploaded attachment: `ready` once the server has processed it.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedMedia {
    pub id: String,
    pub ready: bool,
}

/// A downloaded file.
#[derive(Debug, Clone)]
pub struct Download {
    pub bytes: bytes::Bytes,
    pub content_type: Option<String>,
}

pub(super) enum Body {
    None,
    Json(Value),
    Form(reqwest::multipart::Form),
}

impl MastodonClient {
    /// `POST /api/v1/statuses` with an `Idempotency-Key`: a repeat with the same key
    /// within the server's window (an hour on Mastodon) returns the first status.
    pub async fn post_status(&self, form: &StatusForm, idempotency_key: &str) -> Result<PostedStatus, MastodonError> {
        let body = Body::Json(serde_json::to_value(form).map_err(|e| MastodonError::decode("/api/v1/statuses", e))?);
        let (_, _, v) = self.send_json(Method::POST, &["api", "v1", "statuses"], body, Some(idempotency_key)).await?;
        PostedStatus::from_json("/api/v1/statuses", v)
    }

    /// `PUT /api/v1/statuses/:id` (Mastodon 3.5+).
    pub async fn edit_status(&self, id: &str, form: &StatusForm) -> Result<PostedStatus, MastodonError> {
        let mut form = form.clone();
        form.visibility = None; // not editable
        form.in_reply_to_id = None;
        let body = Body::Json(serde_json::to_value(&form).map_err(|e| MastodonError::decode("/api/v1/statuses/:id", e))?);
        let (_, _, v) = self.send_json(Method::PUT, &["api", "v1", "statuses", id], body, None).await?;
        PostedStatus::from_json("/api/v1/statuses/:id", v)
    }

    /// `DELETE /api/v1/statuses/:id`.
    pub async fn delete_status(&self, id: &str) -> Result<(), MastodonError> {
        self.send_json(Method::DELETE, &["api", "v1", "statuses", id], Body::None, None).await.map(|_| ())
    }

    /// `POST /api/v1/statuses/:id/reblog`; `id` is the post's id on this server.
    /// Returns the boost wrapper.
    pub async fn reblog(&self, id: &str, visibility: Option<&str>) -> Result<PostedStatus, MastodonError> {
        let body = match visibility {
            Some(v) => Body::Json(serde_json::json!({ "visibility": v })),
            None => Body::None,
        };
        let (_, _, v) = self.send_json(Method::POST, &["api", "v1", "statuses", id, "reblog"], body, None).await?;
        PostedStatus::from_json("/api/v1/statuses/:id/reblog", v)
    }

    /// `POST /api/v1/statuses/:id/unreblog`.
    pub async fn unreblog(&self, id: &str) -> Result<(), MastodonError> {
        self.send_json(Method::POST, &["api", "v1", "statuses", id, "unreblog"], Body::None, None).await.map(|_| ())
    }

    /// `GET /api/v2/search?q=URL&resolve=true&type=statuses`: the post's id on this
    /// server, fetching it from its home server if needed. `None` when not found.
    pub async fn search_status(&self, url: &str) -> Result<Option<PostedStatus>, MastodonError> {
        let mut u = self.url_with_segments(&["api", "v2", "search"]);
        u.query_pairs_mut().append_pair("q", url).append_pair("resolve", "true").append_pair("type", "statuses").append_pair("limit", "1");
        let (_, v) = self.request(Method::GET, u, Body::None, None).await.and_then(|(h, b)| {
            let v: Value = serde_json::from_slice(&b).map_err(|e| MastodonError::decode("/api/v2/search", e))?;
            Ok((h, v))
        })?;
        match v.get("statuses").and_then(|s| s.as_array()).and_then(|a| a.first()) {
            Some(s) => PostedStatus::from_json("/api/v2/search", s.clone()).map(Some),
            None => Ok(None),
        }
    }

    /// `POST /api/v2/media` (multipart). `ready` is false when the server answered
    /// 202 (still processing: poll [`Self::get_media`]).
    pub async fn upload_media(
        &self,
        bytes: bytes::Bytes,
        filename: &str,
        content_type: &str,
        description: Option<&str>,
    ) -> Result<UploadedMedia, MastodonError> {
        const PATH: &str = "/api/v2/media";
        let part = reqwest::multipart::Part::stream(bytes)
            .file_name(filename.to_string())
            .mime_str(content_type)
            .map_err(|e| MastodonError::decode(PATH, e))?;
        let mut form = reqwest::multipart::Form::new().part("file", part);
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            form = form.text("description", d.to_string());
        }
        let (status, _, v) = self.send_json(Method::POST, &["api", "v2", "media"], Body::Form(form), None).await?;
        let id = PostedStatus::from_json(PATH, v.clone())?.id;
        Ok(UploadedMedia { id, ready: status != 202 && !v.get("url").is_some_and(Value::is_null) })
    }

    /// `GET /api/v1/media/:id`: `ready` false while the server answers 206.
    pub async fn get_media(&self, id: &str) -> Result<UploadedMedia, MastodonError> {
        let (status, _, v) = self.send_json(Method::GET, &["api", "v1", "media", id], Body::None, None).await?;
        let id = PostedStatus::from_json("/api/v1/media/:id", v)?.id;
        Ok(UploadedMedia { id, ready: status != 206 })
    }

    /// Anonymous `GET` of a remote file (another server's media), at most
    /// [`MAX_DOWNLOAD`] bytes. Not through the rate limiter: the file lives on
    /// another host, whose budget is not this server's.
    pub async fn download(&self, url: &str) -> Result<Download, MastodonError> {
        let parsed: url::Url = url.parse().map_err(|e| MastodonError::decode("media download", e))?;
        let path = parsed.path().to_string();
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(MastodonError::decode(&path, "media URL is not http(s)"));
        }
        let resp = self.http().get(parsed).timeout(self.timeout()).send().await.map_err(|e| MastodonError::network(&path, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if resp.content_length().is_some_and(|n| n > MAX_DOWNLOAD as u64) {
            return Err(MastodonError::decode(&path, "media file too large"));
        }
        let body = read_body(resp, &path).await?;
        if !(200..300).contains(&status) {
            return Err(MastodonError::Http { status, path, message: None, retry_after: None });
        }
        if body.len() > MAX_DOWNLOAD {
            return Err(MastodonError::decode(&path, "media file too large"));
        }
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(Download { bytes: body, content_type })
    }

    async fn send_json(
        &self,
        method: Method,
        segments: &[&str],
        body: Body,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, HeaderMap, Value), MastodonError> {
        let url = self.url_with_segments(segments);
        let path = url.path().to_string();
        let (status, headers, bytes) = self.request_status(method, url, body, idempotency_key).await?;
        let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).map_err(|e| MastodonError::decode(&path, e))? };
        Ok((status, headers, v))
    }

    pub(super) async fn request(
        &self,
        method: Method,
        url: url::Url,
        body: Body,
        idempotency_key: Option<&str>,
    ) -> Result<(HeaderMap, bytes::Bytes), MastodonError> {
        self.request_status(method, url, body, idempotency_key).await.map(|(_, h, b)| (h, b))
    }

    /// While the server is unavailable (503): one cheap request (the instance
    /// document, answered from cache) whose answer tells the limiter whether it
    /// is back. Its failures only mean "not yet".
    async fn probe(&self) {
        let url = self.url_with_segments(&["api", "v2", "instance"]);
        let req = self.http().get(url).timeout(self.timeout());
        match req.send().await {
            Ok(resp) => {
                tracing::debug!(status = resp.status().as_u16(), "Probed an unavailable server");
                self.limiter().observe(resp.headers(), resp.status().as_u16());
            }
            Err(e) => tracing::debug!(error = %MastodonError::network("/api/v2/instance", e), "Probed an unavailable server"),
        }
    }

    /// One authenticated request: limiter, auth, classification.
    async fn request_status(
        &self,
        method: Method,
        url: url::Url,
        body: Body,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, HeaderMap, bytes::Bytes), MastodonError> {
        let path = url.path().to_string();
        if let Some(reserve) = self.reserve() {
            self.limiter().wait_for_headroom(reserve).await;
        }
        while self.limiter().acquire_or_probe().await == Grant::Probe {
            self.probe().await;
        }
        let mut req = self.http().request(method.clone(), url).timeout(self.timeout());
        if let Some(auth) = self.auth_header() {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Form(f) => req.multipart(f),
        };
        let resp = req.send().await.map_err(|e| MastodonError::network(&path, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.limiter().observe(&headers, status);
        if let Some(left) = headers.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok()) {
            // Per server (and whether a token is used): servers are the followed
            // accounts' and the configured ones, never per account.
            let token = if self.has_token() { "yes" } else { "no" };
            metrics::gauge!("fedistream_ratelimit_remaining", "component" => "mastodon", "instance" => self.host(), "token" => token)
                .set(left);
        }
        let bytes = read_body(resp, &path).await?;
        tracing::debug!(method = %method, path = %path, status, bytes = bytes.len(), "Mastodon request");
        if (200..300).contains(&status) {
            Ok((status, headers, bytes))
        } else {
            Err(self.http_error(status, &path, &headers, &bytes))
        }
    }
}
