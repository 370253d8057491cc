//! The schema registry tests use: a real one (`scripts/registry up`, Apicurio
//! Registry serving the Confluent API), found through [`schema_registry`].
//!
//! [`RegistryGate`] stands in front of it for what the registry cannot be made
//! to do on demand: refuse credentials (its own basic auth goes through an
//! OpenID Connect server, which the tests do not have), and fail (a 500, as its
//! store answers when it breaks). The gate refuses a request without the
//! expected credentials the way Confluent's registry does (401 with a JSON
//! error body), fails the requests it was told to, and forwards the others
//! unchanged, recording each request so a test can check what a client sent.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// The registry's base URL for Confluent clients: `FEDISTREAM_SCHEMA_REGISTRY`,
/// default `http://127.0.0.1:8081/apis/ccompat/v7` (what `scripts/registry up`
/// serves). Panics, saying how to start one, when nothing accepts connections
/// there: a missing registry fails the tests, it never skips them.
pub fn schema_registry() -> String {
    let url = std::env::var("FEDISTREAM_SCHEMA_REGISTRY").unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".into());
    let parsed = reqwest::Url::parse(&url).unwrap_or_else(|e| panic!("FEDISTREAM_SCHEMA_REGISTRY `{url}` is not a URL: {e}"));
    let reachable = parsed
        .socket_addrs(|| None)
        .ok()
        .and_then(|a| a.into_iter().next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok());
    assert!(reachable, "no schema registry at {url}: start one with `scripts/registry up` (or set FEDISTREAM_SCHEMA_REGISTRY)");
    url
}

/// A request as the gate saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub authorized: bool,
    /// Answered with an injected 500 instead of being forwarded.
    pub failed: bool,
}

struct Shared {
    upstream: String,
    /// `Basic <base64(user:password)>`, when credentials are required.
    expected: Option<String>,
    http: reqwest::Client,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Requests still to fail (see [`RegistryGate::fail_next`]).
    fail: Mutex<usize>,
}

/// The running gate; stops when dropped.
pub struct RegistryGate {
    url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RegistryGate {
    /// Serve on `127.0.0.1:0` in front of the registry at `upstream` (a base
    /// URL such as [`schema_registry`]'s), forwarding every request.
    pub async fn start(upstream: &str) -> Self {
        Self::serve(upstream, None).await
    }

    /// The same, requiring these credentials.
    pub async fn start_with_basic_auth(upstream: &str, user: &str, password: &str) -> Self {
        Self::serve(upstream, Some(format!("Basic {}", base64(format!("{user}:{password}").as_bytes())))).await
    }

    /// Answer the next `n` (authorised) requests with HTTP 500 instead of forwarding them.
    pub fn fail_next(&self, n: usize) {
        *self.shared.fail.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    async fn serve(upstream: &str, expected: Option<String>) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            expected,
            http: reqwest::Client::new(),
            requests: Mutex::default(),
            fail: Mutex::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().fallback(forward).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        RegistryGate { url, shared, stop: Some(stop) }
    }

    /// Base URL, `http://127.0.0.1:PORT`: the registry's API, behind the gate.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for RegistryGate {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn json_response(status: StatusCode, content_type: Option<String>, body: impl Into<axum::body::Body>) -> Response {
    let ct = content_type.unwrap_or_else(|| crate::registry::CONTENT_TYPE.to_string());
    (status, [(header::CONTENT_TYPE, ct)], body.into()).into_response()
}

async fn forward(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let text = |h| headers.get(h).and_then(|v: &header::HeaderValue| v.to_str().ok()).map(str::to_string);
    let authorized = shared.expected.as_ref().is_none_or(|e| text(header::AUTHORIZATION).as_deref() == Some(e.as_str()));
    let failed = authorized && {
        let mut left = shared.fail.lock().unwrap_or_else(|p| p.into_inner());
        let fail = *left > 0;
        *left = left.saturating_sub(1);
        fail
    };
    shared.requests.lock().unwrap_or_else(|p| p.into_inner()).push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        content_type: text(header::CONTENT_TYPE),
        authorized,
        failed,
    });
    if !authorized {
        return json_response(StatusCode::UNAUTHORIZED, None, r#"{"error_code":401,"message":"Unauthorized"}"#);
    }
    if failed {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            r#"{"error_code":50001,"message":"Error in the backend data store (injected)"}"#,
        );
    }
    let target = format!("{}{}", shared.upstream, uri.path_and_query().map_or("", |p| p.as_str()));
    let mut rb = shared.http.request(method, target).body(body);
    for h in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = headers.get(&h) {
            rb = rb.header(h, v);
        }
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => return json_response(StatusCode::BAD_GATEWAY, None, format!(r#"{{"error_code":502,"message":"{e}"}}"#)),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ct = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    match resp.bytes().await {
        Ok(b) => json_response(status, ct, b),
        Err(e) => json_response(StatusCode::BAD_GATEWAY, None, format!(r#"{{"error_code":502,"message":"{e}"}}"#)),
    }
}

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(A[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
