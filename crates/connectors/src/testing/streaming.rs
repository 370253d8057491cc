//! SSE streaming (`GET /api/v1/streaming/<path>`) and the channel model shared
//! with the WebSocket handler.
//!
//! Framing follows `streamToHttp` in Mastodon's `streaming/index.js`: `:)` once,
//! then `event: NAME\ndata: PAYLOAD\n\n` per event, and a `:thump` comment every
//! heartbeat interval (framed per [`HeartbeatStyle`]). GoToSocial has no SSE, so
//! the flavour answers 404 there. Every `update`/`status.update`/`delete` reaches
//! every `user` and `list` subscription (the reader follows everyone); `public*`
//! and `hashtag*` subscriptions get what Mastodon's fan-out would give them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::{broadcast, watch};
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use super::guard::{check, presented_token, query_param, Auth};
use super::json;
use super::rest::not_found;
use super::state::{OpenGuard, Scope, Shared, StreamMsg};
use super::types::{Flavor, HeartbeatStyle};

/// A subscribable stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Channel {
    User,
    UserNotification,
    List(String),
    Public { local: bool, remote: bool, media: bool },
    Hashtag { tag: String, local: bool },
    Direct,
}

/// Why a channel could not be opened (HTTP 400 on SSE, an error frame on WS).
pub(crate) enum ChannelError {
    Unknown,
    MissingTag,
    MissingList,
}

impl ChannelError {
    pub fn message(&self, websocket: bool) -> &'static str {
        match self {
            ChannelError::Unknown if websocket => "Unknown stream type",
            ChannelError::Unknown => "Unknown channel requested",
            ChannelError::MissingTag => "Missing tag name parameter",
            ChannelError::MissingList => "Missing list name parameter",
        }
    }
}

impl Channel {
    /// Parses a stream name (`user`, `public:local`, `hashtag`, ...) with its
    /// `tag`/`list` parameter, for the given flavour.
    pub fn parse(flavor: Flavor, name: &str, tag: Option<String>, list: Option<String>) -> Result<Channel, ChannelError> {
        let gts_lacks =
            matches!(name, "user:notification" | "public:remote" | "public:media" | "public:local:media" | "public:remote:media");
        if flavor == Flavor::GoToSocial && gts_lacks {
            return Err(ChannelError::Unknown);
        }
        let tag = tag.filter(|t| !t.is_empty());
        let list = list.filter(|l| !l.is_empty());
        let public = |local, remote, media| Ok(Channel::Public { local, remote, media });
        match name {
            "user" => Ok(Channel::User),
            "user:notification" => Ok(Channel::UserNotification),
            "public" => public(false, false, false),
            "public:media" => public(false, false, true),
            "public:local" => public(true, false, false),
            "public:local:media" => public(true, false, true),
            "public:remote" => public(false, true, false),
            "public:remote:media" => public(false, true, true),
            "hashtag" | "hashtag:local" => match tag {
                Some(tag) => Ok(Channel::Hashtag { tag, local: name == "hashtag:local" }),
                None => Err(ChannelError::MissingTag),
            },
            "list" => list.map(Channel::List).ok_or(ChannelError::MissingList),
            "direct" => Ok(Channel::Direct),
            _ => Err(ChannelError::Unknown),
        }
    }

    /// Whether an event with this scope reaches the channel.
    pub fn wants(&self, scope: &Scope) -> bool {
        match self {
            Channel::User => true,
            // A list we keep ([`super::FakeMastodon::create_list`]) gets its
            // members' posts; any other list id gets everything.
            Channel::List(id) => scope.everywhere || scope.lists.iter().find(|(l, _)| l == id).is_none_or(|(_, member)| *member),
            Channel::UserNotification | Channel::Direct => false,
            // Media variants are not modelled beyond the delete pass-through.
            // A disabled half of a feed gets deletes only (as Mastodon 4.5+).
            Channel::Public { local, remote, media } => {
                let half = if scope.local { "live_feeds.local" } else { "live_feeds.remote" };
                let place = (!*local || scope.local) && (!*remote || !scope.local);
                scope.everywhere || (!*media && scope.public && place && !scope.disabled.iter().any(|d| d == half))
            }
            Channel::Hashtag { tag, local } => {
                let half = if scope.local { "hashtag_feeds.local" } else { "hashtag_feeds.remote" };
                let place = !*local || scope.local;
                scope.everywhere
                    || (scope.tagged && place && scope.tags.contains(&tag.to_lowercase()) && !scope.disabled.iter().any(|d| d == half))
            }
        }
    }

    /// The WebSocket `stream` array for events of this channel.
    pub fn stream_array(&self) -> Vec<String> {
        match self {
            Channel::User => vec!["user".into()],
            Channel::UserNotification => vec!["user:notification".into()],
            Channel::List(id) => vec!["list".into(), id.clone()],
            Channel::Public { local, remote, media } => {
                let mut name = String::from("public");
                if *local {
                    name.push_str(":local");
                }
                if *remote {
                    name.push_str(":remote");
                }
                if *media {
                    name.push_str(":media");
                }
                vec![name]
            }
            Channel::Hashtag { tag, local } => {
                let name = if *local { "hashtag:local" } else { "hashtag" };
                vec![name.into(), tag.clone()]
            }
            Channel::Direct => vec!["direct".into()],
        }
    }
}

fn sse_path_to_stream(path: &str) -> Option<&'static str> {
    Some(match path.trim_end_matches('/') {
        "user" => "user",
        "user/notification" => "user:notification",
        "public" => "public",
        "public/local" => "public:local",
        "public/remote" => "public:remote",
        "hashtag" => "hashtag",
        "hashtag/local" => "hashtag:local",
        "list" => "list",
        "direct" => "direct",
        _ => return None,
    })
}

fn unauthorized(message: &str) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json::error(message))).into_response()
}

pub(crate) async fn sse(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if shared.cfg.flavor == Flavor::GoToSocial {
        return not_found(&shared);
    }
    let q = q.unwrap_or_default();
    let token = presented_token(&headers, &q, false).map(|(t, _)| t);
    let required = shared.cfg.token.is_some() || shared.faults().revoked;
    match check(&shared, token.as_deref()) {
        Auth::Missing if required => return unauthorized("Missing access token"),
        Auth::Invalid => return unauthorized("Invalid access token"),
        _ => {}
    }
    let Some(name) = sse_path_to_stream(&path) else {
        let body = json::error(ChannelError::Unknown.message(false));
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    // `only_media=true` selects the media variant of the public feeds.
    let name = match (name, query_param(&q, "only_media").as_deref()) {
        ("public", Some("true" | "1")) => "public:media",
        ("public:local", Some("true" | "1")) => "public:local:media",
        ("public:remote", Some("true" | "1")) => "public:remote:media",
        (name, _) => name,
    };
    let channel = match Channel::parse(shared.cfg.flavor, name, query_param(&q, "tag"), query_param(&q, "list")) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json::error(e.message(false)))).into_response(),
    };

    let period = shared.cfg.heartbeat_interval;
    let mut heartbeat = interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let conn = SseConn {
        events: shared.events.subscribe(),
        kill: shared.kill.subscribe(),
        crash: shared.crash.subscribe(),
        heartbeat,
        channel,
        opened: false,
        _open: OpenGuard::new(shared.clone()),
        shared,
    };
    let body = futures::stream::unfold(conn, |mut conn| async move {
        let chunk = conn.next_chunk().await?;
        Some((chunk, conn))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "private, no-store")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// One open SSE response. Dropped (ending the count of open streams) when the
/// client goes away or the body ends.
struct SseConn {
    shared: Arc<Shared>,
    events: broadcast::Receiver<StreamMsg>,
    kill: watch::Receiver<u64>,
    crash: watch::Receiver<u64>,
    heartbeat: Interval,
    channel: Channel,
    opened: bool,
    _open: OpenGuard,
}

impl SseConn {
    /// The next body chunk, `None` to end the response, an error to cut the
    /// connection without ending it (a crash).
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        self.next_bytes().await.map(|r| r.ok_or_else(|| std::io::Error::other("the server went away")))
    }

    /// `Some(None)`: cut the connection.
    async fn next_bytes(&mut self) -> Option<Option<Bytes>> {
        if !self.opened {
            self.opened = true;
            return Some(Some(Bytes::from_static(b":)\n")));
        }
        loop {
            tokio::select! {
                _ = self.kill.changed() => return None,
                _ = self.crash.changed() => return Some(None),
                msg = self.events.recv() => match msg {
                    Ok(StreamMsg::Event { event, payload, scope }) if self.channel.wants(&scope) => {
                        return Some(Some(Bytes::from(format!("event: {event}\ndata: {payload}\n\n"))));
                    }
                    Ok(StreamMsg::Raw(raw)) => return Some(Some(Bytes::from(raw))),
                    Ok(StreamMsg::Event { .. }) => {}
                    // A slow reader loses events, as on the real server.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.heartbeat.tick() => {
                    if self.shared.heartbeats.load(Ordering::SeqCst) {
                        let thump: &'static [u8] = match self.shared.cfg.heartbeat_style {
                            HeartbeatStyle::Legacy => b":thump\n",
                            HeartbeatStyle::Terminated => b":thump\n\n",
                        };
                        return Some(Some(Bytes::from_static(thump)));
                    }
                }
            }
        }
    }
}
