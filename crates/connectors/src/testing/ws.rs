//! The multiplexed WebSocket stream (`GET /api/v1/streaming`), both flavours.
//!
//! Like Mastodon's `streaming/index.js`: auth failure on upgrade is a bare 401
//! with `X-Error-Message`; `?stream=` subscribes on connect; `subscribe` /
//! `unsubscribe` text frames manage channels (a repeat subscribe is ignored); an
//! unknown stream gets `{"error":"Unknown stream type","status":400}` and the
//! socket stays open; a binary frame closes it with 1003; events are
//! `{"stream":[..],"event":..,"payload":"<JSON string>"}` (a `delete` payload is
//! the bare id). The server pings every `ws_ping_interval` and terminates a peer
//! that has not answered the previous ping by the next tick.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use super::guard::{check, presented_token, query_param, Auth};
use super::rest::not_found;
use super::state::{OpenGuard, Shared, StreamMsg};
use super::streaming::Channel;

fn bare_401(message: &'static str) -> Response {
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    response.headers_mut().insert("x-error-message", HeaderValue::from_static(message));
    response
}

pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A plain GET on the same host: Mastodon answers 404 (no redirect needed).
    let Ok(ws) = ws else { return not_found(&shared) };
    let refused = shared.faults().refuse_websocket;
    if let Some(code) = refused {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
        return (status, "Forbidden").into_response();
    }
    let q = q.unwrap_or_default();
    let token = presented_token(&headers, &q, true);
    let required = shared.cfg.token.is_some() || shared.faults().revoked;
    match check(&shared, token.as_ref().map(|(t, _)| t.as_str())) {
        Auth::Missing if required => return bare_401("Missing access token"),
        Auth::Invalid => return bare_401("Invalid access token"),
        _ => {}
    }
    // A token sent as the subprotocol must be echoed, or browsers drop the socket.
    let ws = match token {
        Some((token, true)) => ws.protocols([token]),
        _ => ws,
    };
    let initial = query_param(&q, "stream").map(|name| (name, query_param(&q, "tag"), query_param(&q, "list")));
    ws.on_upgrade(move |socket| run(shared, socket, initial))
}

type Initial = Option<(String, Option<String>, Option<String>)>;

async fn run(shared: Arc<Shared>, mut socket: WebSocket, initial: Initial) {
    // Subscribe before counting the stream as open: a test that waits for an open
    // stream and then posts (or drops streams) must see that on it.
    let mut events = shared.events.subscribe();
    let mut kill = shared.kill.subscribe();
    let mut crash = shared.crash.subscribe();
    let _open = OpenGuard::new(shared.clone());
    let period = shared.cfg.ws_ping_interval;
    let mut ping = interval_at(Instant::now() + period, period);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    let mut subs: HashSet<Channel> = HashSet::new();

    if let Some((name, tag, list)) = initial {
        if let Some(err) = subscribe(&shared, &mut subs, &name, tag, list) {
            if send_text(&mut socket, err).await.is_err() {
                return;
            }
        }
    }
    loop {
        tokio::select! {
            _ = kill.changed() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            // A dying process says nothing: the connection just ends.
            _ = crash.changed() => return,
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Binary(_))) => {
                    let frame = CloseFrame { code: 1003, reason: "Unsupported data".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = control(&shared, &mut subs, text.as_str()) {
                        if send_text(&mut socket, reply).await.is_err() {
                            return;
                        }
                    }
                }
            },
            msg = events.recv() => match msg {
                Ok(StreamMsg::Event { event, payload, scope }) => {
                    for channel in subs.iter().filter(|c| c.wants(&scope)) {
                        let frame = json!({ "stream": channel.stream_array(), "event": event, "payload": payload });
                        if send_text(&mut socket, frame.to_string()).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(StreamMsg::Raw(raw)) => {
                    if send_text(&mut socket, raw).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ping.tick() => {
                if shared.heartbeats.load(Ordering::SeqCst) {
                    if awaiting_pong {
                        // Mastodon terminates a peer that missed a ping.
                        return;
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                    awaiting_pong = true;
                }
            }
        }
    }
}

async fn send_text(socket: &mut WebSocket, text: String) -> Result<(), axum::Error> {
    socket.send(Message::Text(text.into())).await
}

/// Handles one client text frame; returns an error frame to send, if any.
fn control(shared: &Shared, subs: &mut HashSet<Channel>, text: &str) -> Option<String> {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        // Mastodon logs and ignores frames it cannot parse.
        return None;
    };
    let field = |k: &str| frame.get(k).and_then(Value::as_str).map(str::to_owned);
    let name = field("stream")?;
    let (tag, list) = (field("tag"), field("list"));
    match frame.get("type").and_then(Value::as_str) {
        Some("subscribe") => subscribe(shared, subs, &name, tag, list),
        Some("unsubscribe") => {
            if let Ok(channel) = Channel::parse(shared.cfg.flavor, &name, tag, list) {
                subs.remove(&channel);
            }
            None
        }
        _ => None,
    }
}

fn subscribe(shared: &Shared, subs: &mut HashSet<Channel>, name: &str, tag: Option<String>, list: Option<String>) -> Option<String> {
    match Channel::parse(shared.cfg.flavor, name, tag, list) {
        Ok(channel) => {
            subs.insert(channel);
            None
        }
        Err(e) => Some(json!({ "error": e.message(true), "status": 400 }).to_string()),
    }
}
