//! A client for the subset of the Confluent Schema Registry REST API the Kafka
//! channel needs: register a schema under a subject (which also looks up an
//! already registered one), fetch a schema by id, fetch a subject's latest version.
//!
//! Every request sends and accepts `application/vnd.schemaregistry.v1+json`.
//! Ids are cached per (subject, schema text) and schemas per id, so a channel
//! that reopens does not re-register. Errors keep the HTTP status and Confluent's
//! `error_code`/`message` and say what they mean ([`RegistryError::kind`]).
//! Transient failures (5xx, 429, 408, the connection) are retried with jittered
//! backoff for as long as the client's timeout allows, as Confluent's own
//! clients do (a registry restarting, or whose store fails, answers 5xx). Errors
//! name the registry by its URL, which never holds credentials (basic auth goes
//! in a header, and URLs with a user or password are refused).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedistream_core::ErrorKind;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub use fedistream_core::secret::Secret;

/// Check a registry base URL: `http(s)://host[:port][/path]`, no credentials.
pub fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("`{}` is not a URL: {e}", redact(s)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{}`: the schema registry URL must be http:// or https://", redact(s)));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the schema registry URL must not hold credentials: use schema_registry_user_env and schema_registry_password_env".into()
        );
    }
    if url.host_str().is_none() {
        return Err(format!("`{}` has no host", redact(s)));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{}`: the schema registry URL takes no query or fragment", redact(s)));
    }
    Ok(url)
}

/// A URL-ish string with anything between `://` and `@` hidden.
fn redact(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}://***{}", &s[..a], &s[b..]),
        _ => s.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {registry}: schema incompatible with the latest version registered under subject `{subject}`: {message}")]
    Incompatible { registry: String, subject: String, message: String },
    #[error("schema registry {registry}: the schema for subject `{subject}` was refused as invalid (error {error_code}): {message}")]
    InvalidSchema { registry: String, subject: String, error_code: i64, message: String },
    #[error("schema registry {registry}: {what} not found (error {error_code}): {message}")]
    NotFound { registry: String, what: String, error_code: i64, message: String },
    #[error("schema registry {registry}: credentials refused (HTTP {status}): {message}")]
    Unauthorized { registry: String, status: u16, message: String },
    #[error("schema registry {registry}: {what} failed with HTTP {status} (error {error_code}): {message}")]
    Http { registry: String, what: String, status: u16, error_code: i64, message: String },
    #[error("schema registry {registry}: {what} failed: {message}")]
    Transport { registry: String, what: String, message: String, timeout: bool },
    #[error("schema registry {registry}: {what}: unexpected response: {message}")]
    BadResponse { registry: String, what: String, message: String },
}

impl RegistryError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::Incompatible { .. } | RegistryError::InvalidSchema { .. } => ErrorKind::Config,
            RegistryError::NotFound { .. } | RegistryError::BadResponse { .. } => ErrorKind::Config,
            RegistryError::Unauthorized { .. } => ErrorKind::Auth,
            RegistryError::Http { status, .. } if *status >= 500 || *status == 429 || *status == 408 => ErrorKind::Transient,
            RegistryError::Http { .. } => ErrorKind::Config,
            RegistryError::Transport { .. } => ErrorKind::Transient,
        }
    }
}

/// Confluent's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Debug, Deserialize)]
struct SchemaBody {
    schema: String,
}

/// A subject's version as the registry returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

#[derive(Default)]
struct Cache {
    ids: HashMap<(String, String), u32>,
    schemas: HashMap<u32, Arc<str>>,
}

/// Cloneable; clones share the HTTP connection pool and the caches.
#[derive(Clone)]
pub struct RegistryClient {
    base: Url,
    /// The base URL as shown in messages.
    shown: String,
    http: reqwest::Client,
    auth: Option<(String, Secret)>,
    cache: Arc<Mutex<Cache>>,
    /// Bound on one call, retries included.
    timeout: Duration,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("url", &self.shown).field("auth", &self.auth.is_some()).finish()
    }
}

impl RegistryClient {
    /// `timeout` bounds each request. `auth`: basic-auth user and password.
    pub fn new(base_url: &str, auth: Option<(String, Secret)>, timeout: Duration) -> Result<Self, String> {
        let base = parse_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("fedistream/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the schema registry client: {e}"))?;
        let shown = base.as_str().trim_end_matches('/').to_string();
        Ok(RegistryClient { base, shown, http, auth, cache: Arc::default(), timeout })
    }

    /// The registry's base URL, as shown in messages.
    pub fn url(&self) -> &str {
        &self.shown
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `parse_base_url` accepted only http(s) URLs with a host, which can be a base.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, url).header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some((user, pass)) = &self.auth {
            rb = rb.basic_auth(user, Some(pass.expose()));
        }
        rb
    }

    /// Send, retrying transient failures while the timeout allows (every
    /// request made here is idempotent: registering a schema the subject has
    /// returns its id), and return the body of a 2xx response or the error.
    async fn send(&self, rb: reqwest::RequestBuilder, what: &str, subject: Option<&str>) -> Result<Vec<u8>, RegistryError> {
        let started = std::time::Instant::now();
        let mut backoff = fedistream_core::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let attempt = rb.try_clone().map(|rb| self.send_once(rb, what, subject));
            let result = match attempt {
                Some(fut) => fut.await,
                // Bodies here are in memory, so requests always clone; if not, no retry.
                None => return self.send_once(rb, what, subject).await,
            };
            match result {
                Err(e) if e.kind() == ErrorKind::Transient => {
                    let delay = backoff.next_delay();
                    if started.elapsed() + delay >= self.timeout {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, retry_in = ?delay, "Schema registry request failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Send once, and return the body of a 2xx response or the classified error.
    async fn send_once(&self, rb: reqwest::RequestBuilder, what: &str, subject: Option<&str>) -> Result<Vec<u8>, RegistryError> {
        let transport = |e: reqwest::Error| RegistryError::Transport {
            registry: self.shown.clone(),
            what: what.to_string(),
            timeout: e.is_timeout(),
            // Without the URL: it is in `registry` already, and a path may hold a subject only.
            message: error_chain(&e.without_url()),
        };
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let (error_code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => (b.error_code, b.message),
            Err(_) => (status.as_u16() as i64, snippet(&body)),
        };
        let registry = self.shown.clone();
        let subject = subject.unwrap_or_default().to_string();
        Err(match status {
            StatusCode::CONFLICT => RegistryError::Incompatible { registry, subject, message },
            StatusCode::UNPROCESSABLE_ENTITY if error_code == 42201 || error_code == 42202 => {
                RegistryError::InvalidSchema { registry, subject, error_code, message }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized { registry, status: status.as_u16(), message },
            StatusCode::NOT_FOUND => RegistryError::NotFound { registry, what: what.to_string(), error_code, message },
            _ => RegistryError::Http { registry, what: what.to_string(), status: status.as_u16(), error_code, message },
        })
    }

    /// Register `schema` (Avro schema JSON) under `subject`, or find its id if the
    /// subject already has it. 409 when it is incompatible with the latest version
    /// under the subject's compatibility rule; 422 when it is not a valid schema.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let key = (subject.to_string(), schema.to_string());
        if let Some(id) = self.lock().ids.get(&key) {
            return Ok(*id);
        }
        let what = format!("registering a schema under subject `{subject}`");
        let body = serde_json::json!({ "schema": schema }).to_string();
        let rb = self
            .request(reqwest::Method::POST, self.endpoint(&["subjects", subject, "versions"]))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body);
        let bytes = self.send(rb, &what, Some(subject)).await?;
        let IdBody { id } = self.parse(&bytes, &what)?;
        let mut cache = self.lock();
        cache.ids.insert(key, id);
        cache.schemas.entry(id).or_insert_with(|| schema.into());
        Ok(id)
    }

    /// The schema registered with `id` (cached: ids never change meaning).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<str>, RegistryError> {
        if let Some(s) = self.lock().schemas.get(&id) {
            return Ok(s.clone());
        }
        let what = format!("fetching schema id {id}");
        let idt = id.to_string();
        let rb = self.request(reqwest::Method::GET, self.endpoint(&["schemas", "ids", &idt]));
        let bytes = self.send(rb, &what, None).await?;
        let SchemaBody { schema } = self.parse(&bytes, &what)?;
        let schema: Arc<str> = schema.into();
        self.lock().schemas.insert(id, schema.clone());
        Ok(schema)
    }

    /// The latest version registered under `subject`.
    pub async fn latest(&self, subject: &str) -> Result<SubjectVersion, RegistryError> {
        let what = format!("fetching the latest version of subject `{subject}`");
        let rb = self.request(reqwest::Method::GET, self.endpoint(&["subjects", subject, "versions", "latest"]));
        let bytes = self.send(rb, &what, Some(subject)).await?;
        self.parse(&bytes, &what)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, body: &[u8], what: &str) -> Result<T, RegistryError> {
        serde_json::from_slice(body).map_err(|e| RegistryError::BadResponse {
            registry: self.shown.clone(),
            what: what.to_string(),
            message: format!("{e} in {}", snippet(body)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The first 200 characters of a body, for messages.
fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.is_empty() {
        return "(empty body)".into();
    }
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// An error and its sources, `: `-joined (reqwest's own Display stops at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert!(parse_base_url("http://127.0.0.1:8081").is_ok());
        assert!(parse_base_url("https://registry.example/sr/").is_ok());
        let e = parse_base_url("https://bob:hunter2@registry.example").unwrap_err();
        assert!(!e.contains("hunter2") && !e.contains("bob"), "{e}");
        let e = parse_base_url("ftp://bob:hunter2@x").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(parse_base_url("registry:8081").is_err());
    }

    #[test]
    fn endpoints_keep_a_path_prefix_and_encode_subjects() {
        let c = RegistryClient::new("https://r.example/sr/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(c.endpoint(&["subjects", "a b/c", "versions"]).as_str(), "https://r.example/sr/subjects/a%20b%2Fc/versions");
        let c = RegistryClient::new("http://127.0.0.1:1", None, Duration::from_secs(1)).unwrap();
        assert_eq!(c.endpoint(&["schemas", "ids", "3"]).as_str(), "http://127.0.0.1:1/schemas/ids/3");
        assert_eq!(c.url(), "http://127.0.0.1:1");
    }

    #[test]
    fn secrets_do_not_print() {
        let c = RegistryClient::new("http://h:1", Some(("u".into(), Secret::new("hunter2"))), Duration::from_secs(1)).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
