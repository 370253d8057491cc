//! The server's feeds over REST: `GET /api/v1/timelines/public` (`local`,
//! `remote`), `/api/v1/timelines/tag/:hashtag` (`local`) and
//! `/api/v1/timelines/list/:id`, paged like every timeline (`rest.rs`), plus
//! who may read them and the reader's lists.
//!
//! What reaches which feed follows `fan_out_on_write_service.rb` (the same
//! rule the streams use, [`super::state::Scope`]): public feeds get public
//! posts that are neither boosts nor replies to others; hashtag feeds public
//! non-boost posts with the tag; a list its members' posts as the reader sees
//! them. Feed access as in Mastodon: `timeline_preview` off (before 4.5)
//! answers anonymous readers of the public and hashtag feeds with 401; the
//! 4.5+ `timelines_access` halves are `public`, `authenticated` (401 for
//! anonymous readers) or `disabled` (an empty array; the streams drop
//! updates); and, as a fault, every feed can be refused with a status
//! (`refuse_feeds`, e.g. 422).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::guard::Auth;
use super::json;
use super::rest::{not_found, paged_response, truthy, viewer, Links, Paging};
use super::state::{lock, Shared, Status};

/// Who may read the public feeds.
#[derive(Debug, Clone)]
pub(crate) struct FeedSettings {
    /// Pre-4.5 "timeline preview": anonymous REST reads of public and hashtag feeds.
    pub timeline_preview: bool,
    /// `timelines_access` halves (`live_feeds.local`, ...) → `public` | `authenticated` | `disabled`.
    pub access: BTreeMap<String, String>,
    /// Every feed request answers this status (a fault).
    pub refuse: Option<u16>,
}

impl Default for FeedSettings {
    fn default() -> Self {
        let access = ["live_feeds.local", "live_feeds.remote", "hashtag_feeds.local", "hashtag_feeds.remote"]
            .into_iter()
            .map(|k| (k.to_string(), "public".to_string()))
            .collect();
        FeedSettings { timeline_preview: true, access, refuse: None }
    }
}

impl FeedSettings {
    pub fn disabled(&self) -> Vec<String> {
        self.access.iter().filter(|(_, v)| *v == "disabled").map(|(k, _)| k.clone()).collect()
    }
    fn get(&self, half: &str) -> &str {
        self.access.get(half).map_or("public", String::as_str)
    }
}

const KEPT: [&str; 4] = ["limit", "local", "remote", "only_media"];

fn unauthenticated() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json::error("This method requires an authenticated user"))).into_response()
}

/// The halves of `group` (`live_feeds`, `hashtag_feeds`) the caller may read,
/// or the refusal. `local`/`remote`: which halves were asked for.
fn readable(shared: &Shared, auth: Auth, group: &str, local: bool, remote: bool) -> Result<(bool, bool), Box<Response>> {
    let feeds = lock(&shared.feeds).clone();
    if let Some(code) = feeds.refuse {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        return Err(Box::new((status, Json(json::error("This feed is not available"))).into_response()));
    }
    let signed_in = auth == Auth::Valid;
    if !feeds.timeline_preview && !signed_in {
        return Err(Box::new(unauthenticated()));
    }
    let (want_local, want_remote) = (local || !remote, remote || !local);
    let mut out = (false, false);
    for (wanted, half, slot) in [(want_local, "local", &mut out.0), (want_remote, "remote", &mut out.1)] {
        if !wanted {
            continue;
        }
        match feeds.get(&format!("{group}.{half}")) {
            "authenticated" if !signed_in => return Err(Box::new(unauthenticated())),
            "disabled" => {}
            _ => *slot = true,
        }
    }
    Ok(out)
}

/// Reaches a public feed: public, not a boost, not a reply to someone else.
fn public_feed(s: &Status) -> bool {
    super::ops::scope_of(s).public
}

pub(crate) async fn public(State(shared): State<Arc<Shared>>, Extension(auth): Extension<Auth>, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    let (local, remote) = (truthy(&q, "local"), truthy(&q, "remote"));
    let (local_ok, remote_ok) = match readable(&shared, auth, "live_feeds", local, remote) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let paging = Paging::parse(&q);
    let store = shared.store();
    let candidates = store.statuses.values().rev().filter(|s| public_feed(s) && if s.remote { remote_ok } else { local_ok });
    let page = paging.page(candidates);
    let links = Links { query: &q, path: "/api/v1/timelines/public", kept: &KEPT, limit: paging.limit };
    paged_response(&shared, &store, &page, viewer(auth), Some(links))
}

pub(crate) async fn tag(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(hashtag): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    let local = truthy(&q, "local");
    let (local_ok, remote_ok) = match readable(&shared, auth, "hashtag_feeds", local, false) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let remote_ok = remote_ok && !local;
    let tag = hashtag.to_lowercase();
    let paging = Paging::parse(&q);
    let store = shared.store();
    let candidates = store.statuses.values().rev().filter(|s| {
        s.visibility == "public"
            && s.reblog_of.is_none()
            && s.tags.iter().any(|t| t.to_lowercase() == tag)
            && if s.remote { remote_ok } else { local_ok }
    });
    let page = paging.page(candidates);
    let path = format!("/api/v1/timelines/tag/{}", super::rest::encode(&hashtag));
    let links = Links { query: &q, path: &path, kept: &KEPT, limit: paging.limit };
    paged_response(&shared, &store, &page, viewer(auth), Some(links))
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    if auth != Auth::Valid {
        let body = json::error("The access token is invalid");
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let q = q.unwrap_or_default();
    let Some(members) = lock(&shared.lists).get(&id).cloned() else {
        return not_found(&shared);
    };
    let paging = Paging::parse(&q);
    let store = shared.store();
    let candidates = store.statuses.values().rev().filter(|s| s.reader_visible() && members.contains(&s.account_id));
    let page = paging.page(candidates);
    let path = format!("/api/v1/timelines/list/{id}");
    let links = Links { query: &q, path: &path, kept: &["limit"], limit: paging.limit };
    paged_response(&shared, &store, &page, viewer(auth), Some(links))
}
