//! The REST half of the fake: the router, instance metadata, account lookup,
//! profile timelines with Mastodon's paging rules, single statuses and
//! `verify_credentials`. Streaming routes are wired here but served by
//! `streaming.rs` (SSE) and `ws.rs`.
//!
//! Paging follows `app/controllers/api/v1/accounts/statuses_controller.rb` and
//! `Paginable`: newest first; `max_id` pages back; `since_id` gives the newest
//! items above the bound; `min_id` (which wins over `since_id`) gives the items
//! immediately after the cursor, still newest first. `Link` has `rel="next"`
//! (`max_id` = oldest) only for a full page and `rel="prev"` (`min_id` = newest)
//! for any non-empty page; both keep `limit` and the filter parameters.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use super::guard::{self, query_param, Auth, Caller};
use super::json::{self, Viewer};
use super::state::{IdKey, Shared, Status};
use super::types::Flavor;
use super::{media, social, streaming, timelines, writes, ws};

/// Largest upload accepted (Mastodon's default video limit is 99 MiB).
const MEDIA_BODY_LIMIT: usize = 100 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/instance", get(instance_v1))
        .route("/api/v2/instance", get(instance_v2))
        .route("/api/v1/accounts/lookup", get(lookup))
        .route("/api/v1/accounts/verify_credentials", get(verify_credentials))
        .route("/api/v1/accounts/{id}", get(account))
        .route("/api/v1/accounts/{id}/statuses", get(account_statuses))
        .route("/api/v1/timelines/public", get(timelines::public))
        .route("/api/v1/timelines/tag/{hashtag}", get(timelines::tag))
        .route("/api/v1/timelines/list/{id}", get(timelines::list))
        .route("/api/v1/statuses", get(statuses_by_id).post(writes::create))
        .route("/api/v1/statuses/{id}", get(status).put(writes::update).delete(social::delete))
        .route("/api/v1/statuses/{id}/reblog", post(social::reblog))
        .route("/api/v1/statuses/{id}/unreblog", post(social::unreblog))
        .route("/api/v2/search", get(social::search))
        .route("/api/v2/media", post(media::upload).layer(DefaultBodyLimit::max(MEDIA_BODY_LIMIT)))
        .route("/api/v1/media/{id}", get(media::show).put(media::update))
        .route("/system/{*path}", get(media::serve))
        .route("/api/v1/streaming", get(ws::upgrade))
        .route("/api/v1/streaming/health", get(health))
        .route("/api/v1/streaming/{*channel}", get(streaming::sse))
        .fallback(not_found_handler)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard::guard))
        .with_state(shared)
}

/// 404 with the flavour's body: Mastodon `Record not found`, GtS `Not Found`.
pub(crate) fn not_found(shared: &Shared) -> Response {
    let message = match shared.cfg.flavor {
        Flavor::Mastodon => "Record not found",
        Flavor::GoToSocial => "Not Found",
    };
    (StatusCode::NOT_FOUND, Json(json::error(message))).into_response()
}

async fn not_found_handler(State(shared): State<Arc<Shared>>) -> Response {
    not_found(&shared)
}

async fn health() -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], "OK").into_response()
}

async fn instance_v1(State(shared): State<Arc<Shared>>) -> Response {
    let (users, statuses) = {
        let store = shared.store();
        (store.accounts.len(), store.statuses.len())
    };
    Json(json::instance_v1(&shared, users, statuses)).into_response()
}

async fn instance_v2(State(shared): State<Arc<Shared>>) -> Response {
    let users = shared.store().accounts.len();
    Json(json::instance_v2(&shared, users)).into_response()
}

pub(crate) fn viewer(auth: Auth) -> Viewer {
    if auth == Auth::Valid {
        Viewer::Reader
    } else {
        Viewer::Anonymous
    }
}

fn visible(s: &Status, viewer: Viewer) -> bool {
    match viewer {
        Viewer::Reader => s.reader_visible(),
        _ => s.anonymous_visible(),
    }
}

async fn lookup(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let acct = query_param(q.as_deref().unwrap_or_default(), "acct").unwrap_or_default();
    let acct = acct.strip_prefix('@').unwrap_or(&acct);
    // Local accounts may be looked up bare or with this server's domain.
    let username = match acct.split_once('@') {
        Some((user, domain)) if domain.eq_ignore_ascii_case(&shared.host) || domain.eq_ignore_ascii_case(shared.domain()) => user,
        Some(_) => return not_found(&shared),
        None => acct,
    };
    let store = shared.store();
    match store.account_id(username).and_then(|id| store.accounts.get(&id)) {
        Some(a) => Json(json::account(&shared, &store, a)).into_response(),
        None => not_found(&shared),
    }
}

async fn account(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let store = shared.store();
    match store.accounts.get(&id) {
        Some(a) => Json(json::account(&shared, &store, a)).into_response(),
        None => not_found(&shared),
    }
}

async fn verify_credentials(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let open = shared.cfg.token.is_none() && !shared.faults().revoked;
    if auth != Auth::Valid && !open {
        let body = json::error("The access token is invalid");
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    // A publisher's token answers with its own account; any other accepted
    // token is the reader's.
    let username = caller.0.unwrap_or_else(|| "reader".to_owned());
    let store = shared.store();
    match store.account_id(&username).and_then(|id| store.accounts.get(&id)) {
        Some(a) => Json(json::credential_account(&shared, &store, a)).into_response(),
        None => not_found(&shared),
    }
}

async fn status(State(shared): State<Arc<Shared>>, Extension(auth): Extension<Auth>, Path(id): Path<String>) -> Response {
    let store = shared.store();
    match store.status(&id).filter(|s| visible(s, viewer(auth))) {
        Some(s) => Json(json::status(&shared, &store, s, viewer(auth))).into_response(),
        None => not_found(&shared),
    }
}

/// Most ids `GET /api/v1/statuses` takes at once (Mastodon's default limit).
const MAX_IDS: usize = 20;

/// `GET /api/v1/statuses?id[]=..` (Mastodon 4.3+): the statuses the caller may
/// see, in the order asked; unknown, deleted and invisible ids are left out.
async fn statuses_by_id(State(shared): State<Arc<Shared>>, Extension(auth): Extension<Auth>, RawQuery(q): RawQuery) -> Response {
    if !shared.cfg.serves_statuses_by_id() {
        return not_found(&shared);
    }
    let q = q.unwrap_or_default();
    let ids: Vec<String> =
        url::form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == "id[]" || k == "id").map(|(_, v)| v.into_owned()).collect();
    if ids.len() > MAX_IDS {
        let body = json::error(&format!("Validation failed: at most {MAX_IDS} ids"));
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    let viewer = viewer(auth);
    let store = shared.store();
    let mut seen = std::collections::HashSet::new();
    let body: Vec<serde_json::Value> = ids
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .filter_map(|id| store.status(id))
        .filter(|s| visible(s, viewer))
        .map(|s| json::status(&shared, &store, s, viewer))
        .collect();
    Json(body).into_response()
}

/// Parameters kept in pagination links, in the order Rails' `params.slice` emits them.
const KEPT_PARAMS: [&str; 6] = ["limit", "pinned", "tagged", "only_media", "exclude_replies", "exclude_reblogs"];

pub(crate) fn truthy(query: &str, key: &str) -> bool {
    query_param(query, key).is_some_and(|v| matches!(v.as_str(), "true" | "1" | "on" | "t"))
}

async fn account_statuses(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    let viewer = viewer(auth);
    let paging = Paging::parse(&q);
    let exclude_replies = truthy(&q, "exclude_replies");
    let exclude_reblogs = truthy(&q, "exclude_reblogs");
    let only_media = truthy(&q, "only_media");
    let pinned = truthy(&q, "pinned");
    let tagged = query_param(&q, "tagged").map(|t| t.to_lowercase());

    let store = shared.store();
    if !store.accounts.contains_key(&id) {
        return not_found(&shared);
    }
    let candidates = store
        .statuses_by(&id)
        .filter(|s| visible(s, viewer))
        // Nothing is ever pinned here.
        .filter(|_| !pinned)
        .filter(|s| !exclude_reblogs || s.reblog_of.is_none())
        .filter(|s| {
            // Self-replies (threads) stay.
            !exclude_replies || s.in_reply_to_id.is_none() || s.in_reply_to_account_id.as_deref() == Some(s.account_id.as_str())
        })
        .filter(|s| !only_media || !s.media.is_empty())
        .filter(|s| tagged.as_ref().is_none_or(|t| s.tags.iter().any(|x| x.to_lowercase() == *t)));
    let page = paging.page(candidates);
    // Pinned answers carry no Link header.
    let path = format!("/api/v1/accounts/{id}/statuses");
    let links = (!pinned).then_some(Links { query: &q, path: &path, kept: &KEPT_PARAMS, limit: paging.limit });
    paged_response(&shared, &store, &page, viewer, links)
}

/// The paging parameters of a timeline request (`Paginable`).
pub(crate) struct Paging {
    pub limit: usize,
    max_id: Option<IdKey>,
    min_id: Option<IdKey>,
    since_id: Option<IdKey>,
}

impl Paging {
    pub fn parse(q: &str) -> Paging {
        // `limit_param`: absent → 20; otherwise |to_i| capped at 40 (garbage → 0).
        let limit = match query_param(q, "limit") {
            None => 20,
            Some(v) => v.trim().parse::<i64>().map(|n| n.unsigned_abs().min(40)).unwrap_or(0) as usize,
        };
        let id = |k: &str| query_param(q, k).filter(|v| !v.is_empty()).map(|v| IdKey::new(&v));
        Paging { limit, max_id: id("max_id"), min_id: id("min_id"), since_id: id("since_id") }
    }

    /// The page of `candidates` (newest first) the request asks for, newest first.
    pub fn page<'a>(&self, candidates: impl Iterator<Item = &'a Status>) -> Vec<&'a Status> {
        let candidates: Vec<&Status> = candidates.filter(|s| self.max_id.as_ref().is_none_or(|m| IdKey::new(&s.id) < *m)).collect();
        if let Some(min) = &self.min_id {
            let mut after: Vec<&Status> = candidates.into_iter().rev().filter(|s| IdKey::new(&s.id) > *min).take(self.limit).collect();
            after.reverse();
            after
        } else if let Some(since) = &self.since_id {
            candidates.into_iter().filter(|s| IdKey::new(&s.id) > *since).take(self.limit).collect()
        } else {
            candidates.into_iter().take(self.limit).collect()
        }
    }
}

/// What a page's `Link` header is made of.
pub(crate) struct Links<'a> {
    /// The request's query (parameters in `kept` are carried over).
    pub query: &'a str,
    /// Where the links point.
    pub path: &'a str,
    pub kept: &'a [&'a str],
    /// The page size asked for (`rel="next"` only for a full page).
    pub limit: usize,
}

/// A page as JSON with its `Link` header (`None`: no links).
pub(crate) fn paged_response(
    shared: &Shared,
    store: &super::state::Store,
    page: &[&Status],
    viewer: Viewer,
    spec: Option<Links<'_>>,
) -> Response {
    let body: Vec<serde_json::Value> = page.iter().map(|s| json::status(shared, store, s, viewer)).collect();
    let mut links = Vec::new();
    if let Some(Links { query: q, path, kept, limit }) = spec {
        let kept: Vec<String> = kept.iter().filter_map(|k| query_param(q, k).map(|v| format!("{k}={}", encode(&v)))).collect();
        let link = |cursor: &str, value: &str, rel: &str| {
            let mut params = kept.clone();
            params.push(format!("{cursor}={value}"));
            format!("<http://{}{path}?{}>; rel=\"{rel}\"", shared.host, params.join("&"))
        };
        if let (Some(last), true) = (page.last(), page.len() == limit) {
            links.push(link("max_id", &last.id, "next"));
        }
        if let Some(first) = page.first() {
            links.push(link("min_id", &first.id, "prev"));
        }
    }
    let mut response = Json(body).into_response();
    if let Ok(value) = links.join(", ").parse() {
        if !links.is_empty() {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}

pub(crate) fn encode(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
