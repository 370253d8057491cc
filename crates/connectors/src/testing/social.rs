//! Deleting, boosting and resolving: `DELETE /api/v1/statuses/:id`,
//! `POST /api/v1/statuses/:id/reblog`, `POST /api/v1/statuses/:id/unreblog`
//! and `GET /api/v2/search`.
//!
//! Deletes and unreblogs share one Rack::Attack throttle, which counts every
//! authenticated request before the controller runs (so a 404 counts too).
//! Boosts count against the posting family only when one is created: boosting
//! a post twice returns the existing boost (`ReblogService`). Boosting a boost
//! boosts its original. Like Mastodon's delete-and-redraft, deleting a status
//! frees its uploads for reuse.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde_json::{json, Value};

use super::guard::{query_param, Auth, Caller};
use super::json::{self, Viewer};
use super::ledger::{self, Family};
use super::rest::not_found;
use super::state::{Shared, Status};
use super::text;
use super::writes::{error, render, too_many, writer, Refusal};

/// Counts a delete-family request; the 429 response if the window is full.
fn take_delete(shared: &Shared, account_id: &str) -> Result<Option<ledger::Limit>, Refusal> {
    let limit = shared.ledger().take(shared.family_cfg(Family::Deletes), Family::Deletes, account_id);
    match limit {
        Some(l) if l.throttled => Err(Box::new(too_many(shared, &l))),
        other => Ok(other),
    }
}

fn with_headers(shared: &Shared, mut response: Response, limit: Option<&ledger::Limit>) -> Response {
    if let Some(limit) = limit {
        ledger::set_headers(shared, &mut response, limit);
    }
    response
}

pub(crate) async fn delete(State(shared): State<Arc<Shared>>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    let account_id = match writer(&shared, &caller) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let limit = match take_delete(&shared, &account_id) {
        Ok(limit) => limit,
        Err(response) => return *response,
    };
    let body = {
        let store = shared.store();
        let Some(status) = store.status(&id).filter(|s| s.account_id == account_id) else {
            return with_headers(&shared, not_found(&shared), limit.as_ref());
        };
        let mut body = render(&shared, &store, &id);
        let mut ledger = shared.ledger();
        let source = ledger.source_text.remove(&id).unwrap_or_else(|| text::strip_html(&status.content));
        for upload in ledger.uploads.values_mut() {
            if upload.attached_to.as_deref() == Some(id.as_str()) {
                upload.attached_to = None;
            }
        }
        if let Some(obj) = body.as_object_mut() {
            obj.insert("text".into(), Value::String(source));
        }
        body
    };
    shared.delete(&id);
    with_headers(&shared, Json(body).into_response(), limit.as_ref())
}

/// Sets `reblogged` on a rendered status (and on its `reblog`, if any).
fn mark_reblogged(v: &mut Value, reblogged: bool) {
    if let Some(obj) = v.as_object_mut() {
        obj.insert("reblogged".into(), Value::Bool(reblogged));
        if let Some(inner) = obj.get_mut("reblog").and_then(Value::as_object_mut) {
            inner.insert("reblogged".into(), Value::Bool(reblogged));
        }
    }
}

fn boost_of<'a>(store: &'a super::state::Store, account_id: &str, target: &str) -> Option<&'a Status> {
    store.statuses_by(account_id).find(|s| s.reblog_of.as_deref() == Some(target))
}

pub(crate) async fn reblog(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let account_id = match writer(&shared, &caller) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let params = match super::writes::Params::parse(query.as_deref().unwrap_or_default(), &headers, &body) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let mut store = shared.store();
    let mut ledger = shared.ledger();
    let Some(found) = store.status(&id) else { return not_found(&shared) };
    let target = match &found.reblog_of {
        Some(original) => match store.status(original) {
            Some(s) => s,
            None => return not_found(&shared),
        },
        None => found,
    };
    if !target.anonymous_visible() {
        return error(StatusCode::FORBIDDEN, "This action is not allowed");
    }
    let target_id = target.id.clone();
    let statuses = shared.family_cfg(Family::Statuses);
    if let Some(existing) = boost_of(&store, &account_id, &target_id) {
        let mut body = render(&shared, &store, &existing.id);
        mark_reblogged(&mut body, true);
        let limit = ledger.peek(statuses, Family::Statuses, &account_id);
        return with_headers(&shared, Json(body).into_response(), limit.as_ref());
    }
    let visibility = params.get("visibility").filter(|v| !v.is_empty()).unwrap_or("public").to_owned();
    if !matches!(visibility.as_str(), "public" | "unlisted" | "private") {
        let message = "Validation failed: Visibility is not included in the list";
        return error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    let limit = ledger.take(statuses, Family::Statuses, &account_id);
    if let Some(limit) = limit.as_ref().filter(|l| l.throttled) {
        return too_many(&shared, limit);
    }
    let now = json::truncate_millis(Utc::now());
    let wrapper_id = store.ids.next(now);
    let wrapper = Status {
        id: wrapper_id.clone(),
        account_id,
        created_at: now,
        edited_at: None,
        content: String::new(),
        visibility,
        spoiler_text: String::new(),
        sensitive: false,
        language: None,
        in_reply_to_id: None,
        in_reply_to_account_id: None,
        reblog_of: Some(target_id),
        media: Vec::new(),
        tags: Vec::new(),
        replies_count: 0,
        reblogs_count: 0,
        remote: false,
        favourites_count: 0,
    };
    drop(ledger);
    shared.publish(&mut store, wrapper);
    let mut body = render(&shared, &store, &wrapper_id);
    mark_reblogged(&mut body, true);
    with_headers(&shared, Json(body).into_response(), limit.as_ref())
}

pub(crate) async fn unreblog(State(shared): State<Arc<Shared>>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    let account_id = match writer(&shared, &caller) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let limit = match take_delete(&shared, &account_id) {
        Ok(limit) => limit,
        Err(response) => return *response,
    };
    let wrapper = {
        let store = shared.store();
        if store.status(&id).is_none() {
            return with_headers(&shared, not_found(&shared), limit.as_ref());
        }
        boost_of(&store, &account_id, &id).map(|w| w.id.clone())
    };
    if let Some(wrapper) = wrapper {
        shared.delete(&wrapper);
    }
    let store = shared.store();
    if store.status(&id).is_none() {
        return with_headers(&shared, not_found(&shared), limit.as_ref());
    }
    let mut body = render(&shared, &store, &id);
    mark_reblogged(&mut body, false);
    with_headers(&shared, Json(body).into_response(), limit.as_ref())
}

fn truthy(query: &str, key: &str) -> bool {
    query_param(query, key).is_some_and(|v| matches!(v.as_str(), "true" | "1" | "on" | "t"))
}

/// `GET /api/v2/search`: finds a local status by its `url` or `uri` (what
/// `resolve=true` does for a post this server already knows) and a local account
/// by `@user`, `user@host` or its profile URL. Full-text search is not imitated.
pub(crate) async fn search(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let Some(q) = query_param(&query, "q").filter(|q| !q.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "param is missing or the value is empty: q");
    };
    if auth != Auth::Valid && truthy(&query, "resolve") {
        let message = "Search queries that resolve remote resources are not supported without authentication";
        return error(StatusCode::UNAUTHORIZED, message);
    }
    let kind = query_param(&query, "type").unwrap_or_default();
    let store = shared.store();
    let viewer_id = caller.0.as_deref().and_then(|u| store.account_id(u));
    let mut statuses = Vec::new();
    if kind.is_empty() || kind == "statuses" {
        for s in store.statuses.values().filter(|s| s.reblog_of.is_none()) {
            if !(s.anonymous_visible() || viewer_id.as_deref() == Some(s.account_id.as_str())) {
                continue;
            }
            let v = json::status(&shared, &store, s, Viewer::Reader);
            if v["url"].as_str() == Some(q.as_str()) || v["uri"].as_str() == Some(q.as_str()) {
                statuses.push(v);
            }
        }
    }
    let mut accounts = Vec::new();
    if kind.is_empty() || kind == "accounts" {
        let bare = q.trim_start_matches('@');
        let username = bare
            .strip_suffix(&format!("@{}", shared.host))
            .or_else(|| q.strip_prefix(&format!("{}/@", json::base(&shared))))
            .unwrap_or(bare);
        if let Some(a) = store.account_id(username).and_then(|id| store.accounts.get(&id)) {
            accounts.push(json::account(&shared, &store, a));
        }
    }
    Json(json!({ "accounts": accounts, "statuses": statuses, "hashtags": [] })).into_response()
}
