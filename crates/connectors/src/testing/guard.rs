//! The middleware every request passes: injected 5xx, token checks, the
//! fixed-window rate limiter with its `X-RateLimit-*` headers, and the request log.
//!
//! Order follows a real deployment: a failing proxy answers before anything
//! else; Rack::Attack counts and throttles `/api/` requests before the controller
//! rejects a bad token. The streaming server (`/api/v1/streaming*`) is a separate
//! process on Mastodon and sends no rate-limit headers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};

use super::json;
use super::state::{lock, Canned, Shared};
use super::types::{Flavor, RecordedRequest};

/// The outcome of looking for a token on a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    Missing,
    Invalid,
    Valid,
}

/// The account (username) whose token the request presented, if the token may
/// write: one added with `add_token`, or the configured reader token.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub Option<String>);

/// The first of: `Authorization: Bearer`, `access_token` query parameter, and
/// (WebSocket only) `Sec-WebSocket-Protocol`. The bool says it came from the
/// protocol header, which the upgrade must then echo.
pub(crate) fn presented_token(headers: &HeaderMap, query: &str, allow_protocol: bool) -> Option<(String, bool)> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned());
    if let Some(t) = bearer {
        return Some((t, false));
    }
    if let Some(t) = query_param(query, "access_token") {
        return Some((t, false));
    }
    if allow_protocol {
        let proto = headers.get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
        if let Some(t) = proto.map(str::trim).filter(|t| !t.is_empty()) {
            return Some((t.to_owned(), true));
        }
    }
    None
}

pub(crate) fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

pub(crate) fn check(shared: &Shared, token: Option<&str>) -> Auth {
    let Some(token) = token else { return Auth::Missing };
    if lock(&shared.tokens).contains_key(token) {
        return Auth::Valid;
    }
    if shared.faults().revoked {
        return Auth::Invalid;
    }
    match &shared.cfg.token {
        Some(expected) if expected != token => Auth::Invalid,
        _ => Auth::Valid,
    }
}

pub(crate) async fn guard(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let at = Utc::now();
    let token = presented_token(req.headers(), &query, false).map(|(t, _)| t);
    let auth = check(&shared, token.as_deref());
    let caller = token.as_deref().and_then(|t| shared.token_owner(t));
    let idempotency_key = req.headers().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    req.extensions_mut().insert(auth);
    req.extensions_mut().insert(Caller(caller));
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    let response = respond(&shared, req, next, &path, auth, token.unwrap_or(ip)).await;
    shared.record(RecordedRequest {
        method,
        path,
        query,
        at,
        authorized: auth == Auth::Valid,
        status: response.status().as_u16(),
        idempotency_key,
    });
    response
}

async fn respond(shared: &Shared, req: Request, next: Next, path: &str, auth: Auth, limiter_key: String) -> Response {
    let restarting = shared.faults().restarting;
    if let Some(retry_after) = restarting {
        return restarting_page(retry_after);
    }
    let targeted = shared.faults().take_targeted(path);
    match targeted {
        Some(Canned::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let reason = status.canonical_reason().unwrap_or("Error");
            return (status, Json(json::error(reason))).into_response();
        }
        Some(Canned::HtmlOk) => {
            let page = "<!DOCTYPE html>\n<html><head><title>Bad Gateway</title></head>\n<body><h1>Upstream hiccup</h1></body></html>\n";
            return ([("content-type", "text/html")], page).into_response();
        }
        Some(Canned::EmptyList) => return Json(serde_json::json!([])).into_response(),
        None => {}
    }
    if let Some(status) = take_failure(shared) {
        let reason = status.canonical_reason().unwrap_or("Error");
        return (status, Json(json::error(reason))).into_response();
    }
    if shared.cfg.separate_streaming && path.starts_with("/api/v1/streaming") && !is_streaming_listener(&req) {
        return redirect_to_streaming(shared, &req);
    }
    let is_api = path.starts_with("/api/") && !path.starts_with("/api/v1/streaming");
    if !is_api {
        return next.run(req).await;
    }
    let limit = rate_limit(shared, &limiter_key);
    let public = matches!(path, "/api/v1/instance" | "/api/v2/instance");
    let mut response = if limit.throttled {
        (StatusCode::TOO_MANY_REQUESTS, Json(json::error("Too many requests"))).into_response()
    } else if auth == Auth::Missing && !shared.cfg.anonymous_reads && !public {
        let message = match shared.cfg.flavor {
            Flavor::GoToSocial => "Unauthorized: token not supplied",
            Flavor::Mastodon => "This API requires an authenticated user",
        };
        (StatusCode::UNAUTHORIZED, Json(json::error(message))).into_response()
    } else if auth == Auth::Invalid {
        (StatusCode::UNAUTHORIZED, Json(json::error("The access token is invalid"))).into_response()
    } else {
        next.run(req).await
    };
    let headers = response.headers_mut();
    // Rails labels JSON with its charset.
    if headers.get("content-type").is_some_and(|v| v == "application/json") {
        headers.insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    }
    // A handler's own throttle (posting family, deletes, media) stays when it
    // has fewer requests left: the headers describe the tightest throttle.
    let tighter = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|own| own <= limit.remaining);
    if tighter {
        return response;
    }
    let reset = shared.format_reset(limit.reset);
    for (name, value) in [
        ("x-ratelimit-limit", limit.limit.to_string()),
        ("x-ratelimit-remaining", limit.remaining.to_string()),
        ("x-ratelimit-reset", reset),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// What a server answers while it starts (GoToSocial: `503` with `Retry-After`
/// and an HTML page), sent chunked as a proxy in front would.
fn restarting_page(retry_after: u64) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html>\n<head><title>503 Service Unavailable</title></head>\n<body>\n<h1>Service Unavailable</h1>\n<p>The server is starting up. Please try again in {retry_after} seconds.</p>\n{}</body>\n</html>\n",
        "<!-- padding so that the page is longer than any sane log line -->\n".repeat(20)
    );
    let chunks = futures::stream::iter([Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(page))]);
    let mut response = Response::new(axum::body::Body::from_stream(chunks));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        headers.insert("retry-after", v);
    }
    response
}

/// Marks requests that came in on the separate streaming listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamingListener;

fn is_streaming_listener(req: &Request) -> bool {
    req.extensions().get::<StreamingListener>().is_some()
}

/// Mastodon's main host answers the streaming paths with `301` to the
/// streaming host when that is another one.
fn redirect_to_streaming(shared: &Shared, req: &Request) -> Response {
    let target = format!("{}{}", shared.streaming_http_base(), req.uri().path_and_query().map(|p| p.as_str()).unwrap_or_default());
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(v) = HeaderValue::from_str(&target) {
        response.headers_mut().insert("location", v);
    }
    response
}

fn take_failure(shared: &Shared) -> Option<StatusCode> {
    let mut faults = shared.faults();
    if faults.fail_count == 0 {
        return None;
    }
    faults.fail_count -= 1;
    StatusCode::from_u16(faults.fail_status).ok()
}

struct Limit {
    limit: u32,
    remaining: u32,
    reset: DateTime<Utc>,
    throttled: bool,
}

/// One fixed, epoch-aligned window per key. Like Rack::Attack's headers, the
/// reset is `now + (period - now.to_i % period)`, so it keeps the sub-second part
/// of the request time (the fixtures show `...13:55:00.212100Z`).
fn rate_limit(shared: &Shared, key: &str) -> Limit {
    let now = Utc::now();
    let cfg = &shared.cfg.rate_limit;
    {
        let mut faults = shared.faults();
        match faults.throttle_until {
            Some(until) if until > now => {
                return Limit { limit: cfg.limit, remaining: 0, reset: until, throttled: true };
            }
            Some(_) => faults.throttle_until = None,
            None => {}
        }
    }
    let period = i64::try_from(cfg.window.as_secs()).unwrap_or(i64::MAX).max(1);
    let secs = now.timestamp();
    let window = secs.div_euclid(period);
    let reset = now + chrono::Duration::seconds(period - secs.rem_euclid(period));
    let mut limiter = lock(&shared.limiter);
    let entry = limiter.entry(key.to_owned()).or_insert((window, 0));
    if entry.0 != window {
        *entry = (window, 0);
    }
    entry.1 = entry.1.saturating_add(1);
    Limit { limit: cfg.limit, remaining: cfg.limit.saturating_sub(entry.1), reset, throttled: entry.1 > cfg.limit }
}
