//! One connection attempt and its life: connecting over SSE or WebSocket,
//! turning raw events into [`StreamEvent`]s, and the idle watchdog (SSE: any
//! byte, heartbeats included; WebSocket: any frame, pings included). What to do
//! when a connection fails or ends is `supervise`'s business.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, USER_AGENT};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Emitter, Stop, StreamEvent, StreamName};
use crate::mastodon::client::error::{io_cause, looks_like_plain_http};
use crate::mastodon::client::{MastodonClient, MastodonError};
use crate::mastodon::sse::{on_each_chunk, sse_events, RawStreamEvent, StreamError};
use crate::mastodon::ws::{decode_ws_frame, subscribe_frame};

pub(super) type WsConn = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection that was up came to an end.
#[derive(Debug)]
pub(super) enum Ended {
    Stopped(Stop),
    Dropped {
        reason: String,
        /// The server ended it deliberately (close frame, end of SSE body):
        /// possibly a revoked token.
        clean: bool,
        /// The server refused us in-band (WebSocket error frame 401/403).
        auth: bool,
        /// Raw events received on this connection.
        delivered: u64,
    },
}

fn dropped(reason: impl Into<String>, clean: bool, delivered: u64) -> Ended {
    Ended::Dropped { reason: reason.into(), clean, auth: false, delivered }
}

/// `https`/`http` ↔ `wss`/`ws`, path `api/v1/streaming...` under the base.
pub(super) fn streaming_url(base: &url::Url, websocket: bool, stream: &StreamName) -> Result<url::Url, MastodonError> {
    let mut url = base.clone();
    let scheme = match (url.scheme(), websocket) {
        ("https" | "wss", true) => "wss",
        ("http" | "ws", true) => "ws",
        ("https" | "wss", false) => "https",
        ("http" | "ws", false) => "http",
        (other, _) => return Err(MastodonError::Config(format!("unsupported streaming URL scheme {other}"))),
    };
    url.set_scheme(scheme).map_err(|_| MastodonError::Config(format!("cannot use {scheme} for {base}")))?;
    url.set_query(None);
    url.set_fragment(None);
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    let rel = if websocket { "api/v1/streaming".to_string() } else { format!("api/v1/streaming/{}", stream.sse_path()) };
    let mut url = url.join(&rel).map_err(|e| MastodonError::Config(format!("bad streaming URL: {e}")))?;
    // WebSocket: also name the stream in the query, so the subscription exists
    // from the upgrade on (a subscribe frame is processed some time later); the
    // subscribe frame still follows, and a repeat subscription is ignored.
    // GoToSocial reads a hashtag's `tag` only from this query.
    {
        let mut q = url.query_pairs_mut();
        if websocket {
            q.append_pair("stream", stream.api_name());
        }
        if let Some((k, v)) = stream.param() {
            q.append_pair(k, v);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// Map a raw event to what fedistream consumes; `None` for events it ignores.
/// A status payload is handed on as it came: the source parses it once, and
/// dead-letters what does not parse (checking it here was a second parse of
/// every post).
pub(super) fn classify(raw: RawStreamEvent) -> Option<StreamEvent> {
    let RawStreamEvent { event, data } = raw;
    let status = |make: fn(String) -> StreamEvent, data: Option<String>| match data {
        Some(d) => make(d),
        None => StreamEvent::Malformed { reason: format!("{event} without payload"), raw: String::new() },
    };
    match event.as_str() {
        "update" => Some(status(StreamEvent::Update, data)),
        "status.update" => Some(status(StreamEvent::StatusUpdate, data)),
        "delete" => Some(match data.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() && !id.contains(char::is_whitespace) => StreamEvent::Delete(id.to_string()),
            _ => StreamEvent::Malformed { reason: "delete without a status id".into(), raw: data.unwrap_or_default() },
        }),
        "pleroma:respond" => {
            if data.as_deref().is_some_and(|d| d.contains("\"error\"")) {
                tracing::warn!(payload = data.as_deref().unwrap_or_default(), "Subscription refused by the server");
            }
            None
        }
        _ => {
            tracing::debug!(event = %event, "Ignoring stream event");
            None
        }
    }
}

/// Open the SSE stream; a non-200 answer is an [`MastodonError::Http`].
pub(super) async fn connect_sse(client: &MastodonClient, url: url::Url) -> Result<reqwest::Response, MastodonError> {
    let path = url.path().to_string();
    let mut req = client.http().get(url).header(ACCEPT, "text/event-stream").header(CACHE_CONTROL, "no-store");
    if let Some(auth) = client.auth_header() {
        req = req.header(AUTHORIZATION, auth.clone());
    }
    let resp = match tokio::time::timeout(client.timeout(), req.send()).await {
        Err(_) => return Err(MastodonError::Network { path, timeout: true, message: "no response headers".into() }),
        Ok(Err(e)) => return Err(MastodonError::network(&path, e)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    if status == 200 {
        return Ok(resp);
    }
    let headers = resp.headers().clone();
    client.limiter().observe(&headers, status);
    // The body of an error is small; don't wait long for it.
    let body = tokio::time::timeout(Duration::from_secs(5), resp.bytes()).await.ok().and_then(Result::ok);
    Err(client.http_error(status, &path, &headers, body.as_deref().unwrap_or_default()))
}

/// Read events until the connection ends, stalls, or we are stopped.
pub(super) async fn run_sse(resp: reqwest::Response, idle: Duration, emit: &Emitter) -> Ended {
    let last_byte = Arc::new(Mutex::new(Instant::now()));
    let seen = Arc::clone(&last_byte);
    let bytes = on_each_chunk(resp.bytes_stream(), move |_| *lock(&seen) = Instant::now());
    let events = sse_events(bytes);
    futures::pin_mut!(events);
    let mut delivered = 0u64;
    loop {
        let deadline = *lock(&last_byte) + idle;
        tokio::select! {
            biased;
            _ = emit.shutdown.cancelled() => return Ended::Stopped(Stop::Shutdown),
            item = events.next() => match item {
                None => return dropped("the server ended the event stream", true, delivered),
                Some(Err(e)) => return dropped(e.to_string(), false, delivered),
                Some(Ok(raws)) => {
                    for raw in raws {
                        delivered += 1;
                        if let Some(ev) = classify(raw) {
                            if let Err(stop) = emit.send(ev).await {
                                return Ended::Stopped(stop);
                            }
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                // Chunks may have arrived while no event completed.
                if *lock(&last_byte) + idle <= Instant::now() {
                    return dropped(StreamError::Idle(idle).to_string(), false, delivered);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Upgrade to WebSocket (token in the `Authorization` header) and subscribe.
pub(super) async fn connect_ws(client: &MastodonClient, url: url::Url, stream: &StreamName) -> Result<WsConn, MastodonError> {
    let path = url.path().to_string();
    let net = |message: String, timeout: bool| MastodonError::Network { path: path.clone(), timeout, message };
    let host_url = url.clone();
    let mut req = url.as_str().into_client_request().map_err(|e| MastodonError::Config(format!("bad streaming URL: {e}")))?;
    if let Some(auth) = client.auth_header() {
        let mut v = HeaderValue::from_bytes(auth.as_bytes()).map_err(|_| MastodonError::Config("bad token".into()))?;
        v.set_sensitive(true);
        req.headers_mut().insert(AUTHORIZATION, v);
    }
    if let Ok(ua) = HeaderValue::from_str(client.user_agent()) {
        req.headers_mut().insert(USER_AGENT, ua);
    }
    let (mut ws, _resp) = match tokio::time::timeout(client.timeout(), tokio_tungstenite::connect_async(req)).await {
        Err(_) => return Err(net("WebSocket upgrade timed out".into(), true)),
        Ok(Err(WsError::Http(resp))) => {
            let status = resp.status().as_u16();
            client.limiter().observe(resp.headers(), status);
            // tungstenite hands the body over as it came off the wire.
            let raw = resp.body().as_deref().unwrap_or_default();
            let chunked = resp
                .headers()
                .get("transfer-encoding")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            let body = if chunked { dechunk(raw) } else { raw.to_vec() };
            return Err(client.http_error(status, &path, resp.headers(), &body));
        }
        Ok(Err(WsError::Io(e))) => {
            let host = url_host(&host_url);
            let message = io_cause(&e, host.as_deref())
                .unwrap_or_else(|| format!("cannot connect to {}: {e}", host.as_deref().unwrap_or("the server")));
            return Err(net(message, false));
        }
        Ok(Err(WsError::Tls(e))) => {
            let text = e.to_string();
            return match url_host(&host_url) {
                Some(host) if looks_like_plain_http(&text) => Err(MastodonError::NotTls { host }),
                _ => Err(net(format!("TLS failed: {text}"), false)),
            };
        }
        Ok(Err(e)) => return Err(net(format!("WebSocket upgrade failed: {e}"), false)),
        Ok(Ok(pair)) => pair,
    };
    let sub = subscribe_frame(stream);
    match tokio::time::timeout(client.timeout(), ws.send(Message::text(sub))).await {
        Ok(Ok(())) => Ok(ws),
        Ok(Err(e)) => Err(net(format!("cannot subscribe: {e}"), false)),
        Err(_) => Err(net("subscribing timed out".into(), true)),
    }
}

/// `host[:port]` of a URL.
fn url_host(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// The payload of a chunked body; nothing when it is not one (an error
/// message must never show chunk framing).
pub(super) fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        let Ok(httparse::Status::Complete((start, size))) = httparse::parse_chunk_size(rest) else {
            return out; // incomplete or garbled: keep what was decoded
        };
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size == 0 {
            return out;
        }
        let Some(chunk) = rest.get(start..start.saturating_add(size)) else {
            out.extend_from_slice(&rest[start.min(rest.len())..]);
            return out;
        };
        out.extend_from_slice(chunk);
        rest = rest.get(start + size..).unwrap_or_default();
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
    }
}

/// Read frames until the socket ends, stalls, or we are stopped.
pub(super) async fn run_ws(mut ws: WsConn, idle: Duration, emit: &Emitter) -> Ended {
    let mut last_frame = Instant::now();
    let mut delivered = 0u64;
    loop {
        let msg = tokio::select! {
            biased;
            _ = emit.shutdown.cancelled() => {
                // Say goodbye, but don't let a dead peer hold up shutdown.
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return Ended::Stopped(Stop::Shutdown);
            }
            msg = ws.next() => msg,
            _ = tokio::time::sleep_until(last_frame + idle) => {
                return dropped(format!("no frame or ping for {idle:?}"), false, delivered);
            }
        };
        last_frame = Instant::now();
        let ev = match msg {
            None => return dropped("the WebSocket ended without a close frame", false, delivered),
            Some(Err(e)) => return dropped(format!("WebSocket error: {e}"), false, delivered),
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| format!(" ({} {})", u16::from(f.code), f.reason)).unwrap_or_default();
                return dropped(format!("the server closed the WebSocket{why}"), true, delivered);
            }
            Some(Ok(Message::Ping(_))) => {
                // tungstenite queued the pong; flush it now rather than on the
                // next read, which may be a whole ping interval away.
                if let Err(e) = ws.flush().await {
                    return dropped(format!("cannot answer a ping: {e}"), false, delivered);
                }
                continue;
            }
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(b))) => StreamEvent::Malformed {
                raw: String::from_utf8_lossy(&b[..b.len().min(256)]).into_owned(),
                reason: "unexpected binary frame".into(),
            },
            Some(Ok(Message::Text(text))) => match decode_ws_frame(text.as_str()) {
                Ok(raw) => {
                    delivered += 1;
                    match classify(raw) {
                        Some(ev) => ev,
                        None => continue,
                    }
                }
                Err(StreamError::ServerError { status: Some(s @ (401 | 403)), message }) => {
                    let reason = format!("the server refused the subscription ({s}: {message})");
                    return Ended::Dropped { reason, clean: false, auth: true, delivered };
                }
                Err(StreamError::ServerError { status, message }) => {
                    tracing::warn!(status, message = %message, "Server error frame");
                    StreamEvent::Malformed { raw: text.as_str().to_string(), reason: format!("server error: {message}") }
                }
                Err(StreamError::Malformed { raw, reason }) => StreamEvent::Malformed { raw, reason },
                Err(e) => StreamEvent::Malformed { raw: String::new(), reason: e.to_string() },
            },
        };
        if let Err(stop) = emit.send(ev).await {
            return Ended::Stopped(stop);
        }
    }
}
