//! Posting and editing over HTTP: `POST /api/v1/statuses` and
//! `PUT /api/v1/statuses/:id`, with their parameters, validations, the
//! `Idempotency-Key` header and the per-account posting throttle.
//!
//! Order of checks follows Mastodon's `StatusesController` and
//! `PostStatusService`: token; reply target (`404` "The post you are trying to
//! reply to does not appear to exist."); a remembered idempotency key returns the
//! original status before anything else is looked at; media
//! (`Mastodon::ValidationError`, 422 without the "Validation failed" prefix);
//! the record's validations (422 "Validation failed: ..."); then the posting
//! family, which Mastodon checks when the record is created, so a refused
//! status never counts. An edit (`UpdateStatusService`) replaces text, content
//! warning, sensitivity and media with what the request carries (absent = empty)
//! and keeps the language unless one is given. The GoToSocial flavour ignores
//! `Idempotency-Key`, as the GoToSocial handler does.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde_json::Value;

use super::guard::Caller;
use super::json::{self, Viewer};
use super::ledger::{self, Family, Ledger};
use super::ops::scope_of;
use super::rest::not_found;
use super::state::{IdKey, Media, Shared, Status, Store};
use super::text;
use super::types::Flavor;
use std::sync::Arc;

/// `configuration.statuses.max_characters`.
pub(crate) const MAX_CHARACTERS: usize = 500;
/// `configuration.statuses.max_media_attachments`.
const MAX_MEDIA: usize = 4;

/// A response refusing the request, boxed to keep `Result`s small.
pub(crate) type Refusal = Box<Response>;

/// Request parameters from the query string and a form-encoded or JSON body,
/// the way Rails merges them.
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
    pub media_ids: Vec<String>,
}

impl Params {
    pub fn parse(query: &str, headers: &HeaderMap, body: &[u8]) -> Result<Params, Refusal> {
        let mut params = Params { pairs: Vec::new(), media_ids: Vec::new() };
        params.add_form(query.as_bytes());
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
        if content_type.starts_with("application/json") {
            let parsed: Value = serde_json::from_slice(body).map_err(|_| {
                let body = json::error("Error occurred while parsing request parameters.");
                Box::new((StatusCode::BAD_REQUEST, Json(body)).into_response())
            })?;
            for (k, v) in parsed.as_object().into_iter().flatten() {
                match (k.as_str(), v) {
                    (_, Value::Null) => {}
                    ("media_ids", Value::Array(ids)) => {
                        params.media_ids.extend(ids.iter().filter_map(scalar));
                    }
                    (k, v) => {
                        if let Some(v) = scalar(v) {
                            params.pairs.push((k.to_owned(), v));
                        }
                    }
                }
            }
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            params.add_form(body);
        }
        Ok(params)
    }

    fn add_form(&mut self, form: &[u8]) {
        for (k, v) in url::form_urlencoded::parse(form) {
            if k == "media_ids[]" || k == "media_ids" {
                self.media_ids.push(v.into_owned());
            } else {
                self.pairs.push((k.into_owned(), v.into_owned()));
            }
        }
    }

    /// The last value given for `key` (Rails keeps the last).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Rails' boolean casting: absent or empty → None; "0", "f", "false",
    /// "off" (any case) → false; anything else → true.
    pub fn flag(&self, key: &str) -> Option<bool> {
        let v = self.get(key).filter(|v| !v.is_empty())?;
        Some(!matches!(v.to_ascii_lowercase().as_str(), "0" | "f" | "false" | "off"))
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json::error(message))).into_response()
}

pub(crate) fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "The access token is invalid")
}

pub(crate) fn too_many(shared: &Shared, limit: &ledger::Limit) -> Response {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    ledger::set_headers(shared, &mut response, limit);
    response
}

/// The writing account's id, or the 401 response.
pub(crate) fn writer(shared: &Shared, caller: &Caller) -> Result<String, Refusal> {
    let username = caller.0.as_deref().ok_or_else(|| Box::new(unauthorized()))?;
    shared.store().account_id(username).ok_or_else(|| Box::new(unauthorized()))
}

/// A stored status as its author sees it, with `status` as the HTTP status.
pub(crate) fn render(shared: &Shared, store: &Store, id: &str) -> Value {
    store.status(id).map_or(Value::Null, |s| json::status(shared, store, s, Viewer::Reader))
}

/// Adds the posting family's headers (if it is throttled at all).
fn with_posting_headers(shared: &Shared, ledger: &mut Ledger, account_id: &str, mut response: Response) -> Response {
    if let Some(limit) = ledger.peek(shared.family_cfg(Family::Statuses), Family::Statuses, account_id) {
        ledger::set_headers(shared, &mut response, &limit);
    }
    response
}

/// Checks `media_ids` against the account's uploads; `current` are the ids the
/// edited status already carries. Returns the attachments in request order.
fn media_for(ledger: &Ledger, account_id: &str, ids: &[String], current: &[Media]) -> Result<Vec<Media>, Refusal> {
    if ids.len() > MAX_MEDIA {
        return Err(Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, "Cannot attach more than 4 files")));
    }
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        if let Some(m) = current.iter().find(|m| &m.id == id) {
            out.push(Media { id: m.id.clone(), kind: m.kind.clone(), description: m.description.clone() });
            continue;
        }
        match ledger.uploads.get(id) {
            Some(u) if u.account_id == account_id && u.attached_to.is_none() => {
                if !u.media.processed {
                    return Err(Box::new(error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Cannot attach files that have not finished processing. Try again in a moment!",
                    )));
                }
                out.push(Media { id: id.clone(), kind: u.kind.clone(), description: u.media.description.clone() });
            }
            _ => missing.push(id.clone()),
        }
    }
    if !missing.is_empty() {
        let message = format!("Media {} not found or already attached to another post", missing.join(", "));
        return Err(Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, &message)));
    }
    Ok(out)
}

/// The record validations shared by create and edit.
fn validate(text: &str, spoiler_text: &str, has_media: bool) -> Result<(), Refusal> {
    if text.trim().is_empty() && !has_media {
        return Err(Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed: Text can't be blank")));
    }
    if text::countable_length(text, spoiler_text) > MAX_CHARACTERS {
        let message = format!("Validation failed: Text character limit of {MAX_CHARACTERS} exceeded");
        return Err(Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, &message)));
    }
    Ok(())
}

fn mark_attached(ledger: &mut Ledger, media: &[Media], status_id: &str) {
    for m in media {
        if let Some(u) = ledger.uploads.get_mut(&m.id) {
            u.attached_to = Some(status_id.to_owned());
        }
    }
}

pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let account_id = match writer(&shared, &caller) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let params = match Params::parse(query.as_deref().unwrap_or_default(), &headers, &body) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    // GoToSocial's status-create handler does not read the header.
    let key =
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned).filter(|_| shared.cfg.flavor == Flavor::Mastodon);
    let mut store = shared.store();
    let mut ledger = shared.ledger();
    let reply_to = params.get("in_reply_to_id").filter(|r| !r.is_empty()).map(str::to_owned);
    let reply_target = reply_to.as_deref().and_then(|r| store.status(r));
    let visible_target = reply_target.filter(|t| t.anonymous_visible() || t.account_id == account_id);
    if reply_to.is_some() && visible_target.is_none() {
        let message = "The post you are trying to reply to does not appear to exist.";
        return error(StatusCode::NOT_FOUND, message);
    }
    let in_reply_to_account_id = visible_target.map(|t| t.account_id.clone());
    if let Some(original) = key.as_deref().and_then(|k| ledger.idempotent(&account_id, k)) {
        if store.status(&original).is_none() {
            return not_found(&shared);
        }
        let response = Json(render(&shared, &store, &original)).into_response();
        return with_posting_headers(&shared, &mut ledger, &account_id, response);
    }
    let media = match media_for(&ledger, &account_id, &params.media_ids, &[]) {
        Ok(m) => m,
        Err(response) => return *response,
    };
    let text = params.get("status").unwrap_or_default().to_owned();
    let spoiler_text = params.get("spoiler_text").unwrap_or_default().to_owned();
    if let Err(response) = validate(&text, &spoiler_text, !media.is_empty()) {
        return with_posting_headers(&shared, &mut ledger, &account_id, *response);
    }
    let visibility = params.get("visibility").filter(|v| !v.is_empty()).unwrap_or("public").to_owned();
    if !matches!(visibility.as_str(), "public" | "unlisted" | "private" | "direct") {
        let message = "Validation failed: Visibility is not included in the list";
        return error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    let limit = ledger.take(shared.family_cfg(Family::Statuses), Family::Statuses, &account_id);
    if let Some(limit) = limit.as_ref().filter(|l| l.throttled) {
        return too_many(&shared, limit);
    }
    let now = json::truncate_millis(Utc::now());
    let id = store.ids.next(now);
    let (content, tags) = text::to_html(&text, &json::base(&shared));
    mark_attached(&mut ledger, &media, &id);
    let status = Status {
        id: id.clone(),
        account_id: account_id.clone(),
        created_at: now,
        edited_at: None,
        content,
        visibility,
        sensitive: params.flag("sensitive").unwrap_or(false) || !spoiler_text.is_empty(),
        spoiler_text,
        language: Some(params.get("language").filter(|l| !l.is_empty()).unwrap_or("en").to_owned()),
        in_reply_to_id: reply_to,
        in_reply_to_account_id,
        reblog_of: None,
        media,
        tags,
        replies_count: 0,
        reblogs_count: 0,
        remote: false,
        favourites_count: 0,
    };
    shared.publish(&mut store, status);
    ledger.source_text.insert(id.clone(), text);
    *ledger.posts_created.entry(account_id.clone()).or_default() += 1;
    if let Some(key) = key {
        ledger.idempotency.insert((account_id.clone(), key), (id.clone(), Instant::now()));
    }
    let mut response = Json(render(&shared, &store, &id)).into_response();
    if let Some(limit) = limit {
        ledger::set_headers(&shared, &mut response, &limit);
    }
    response
}

pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let account_id = match writer(&shared, &caller) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let params = match Params::parse(query.as_deref().unwrap_or_default(), &headers, &body) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let mut store = shared.store();
    let mut ledger = shared.ledger();
    let Some(current) = store.status(&id).filter(|s| s.account_id == account_id && s.reblog_of.is_none()) else {
        return not_found(&shared);
    };
    let media = match media_for(&ledger, &account_id, &params.media_ids, &current.media) {
        Ok(m) => m,
        Err(response) => return *response,
    };
    let text = params.get("status").unwrap_or_default().to_owned();
    let spoiler_text = params.get("spoiler_text").unwrap_or_default().to_owned();
    if let Err(response) = validate(&text, &spoiler_text, !media.is_empty()) {
        return with_posting_headers(&shared, &mut ledger, &account_id, *response);
    }
    let limit = ledger.take(shared.family_cfg(Family::Statuses), Family::Statuses, &account_id);
    if let Some(limit) = limit.as_ref().filter(|l| l.throttled) {
        return too_many(&shared, limit);
    }
    let (content, tags) = text::to_html(&text, &json::base(&shared));
    mark_attached(&mut ledger, &media, &id);
    let Some(status) = store.statuses.get_mut(&IdKey::new(&id)) else {
        return not_found(&shared);
    };
    status.content = content;
    status.tags = tags;
    status.sensitive = params.flag("sensitive").unwrap_or(false) || !spoiler_text.is_empty();
    status.spoiler_text = spoiler_text;
    if let Some(language) = params.get("language").filter(|l| !l.is_empty()) {
        status.language = Some(language.to_owned());
    }
    status.media = media;
    status.edited_at = Some(json::truncate_millis(Utc::now()));
    let scope = scope_of(status);
    let broadcastable = status.reader_visible();
    ledger.source_text.insert(id.clone(), text);
    *ledger.edits.entry(id.clone()).or_default() += 1;
    if let (true, Some(payload)) = (broadcastable, json::status_payload(&shared, &store, &id)) {
        shared.broadcast("status.update", payload, scope);
    }
    let mut response = Json(render(&shared, &store, &id)).into_response();
    if let Some(limit) = limit {
        ledger::set_headers(&shared, &mut response, &limit);
    }
    response
}
