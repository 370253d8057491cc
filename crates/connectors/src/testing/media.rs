//! Media: uploads (`POST /api/v2/media`, multipart), polling
//! (`GET /api/v1/media/:id`), description updates (`PUT /api/v1/media/:id`) and
//! the files themselves (`GET /system/media_attachments/...`).
//!
//! Like Mastodon 4.x, still images are processed while the upload waits (200
//! with `url`); GIFs (converted to `gifv`), video and audio are processed later
//! (202 with `url: null`), and `GET /api/v1/media/:id` answers 206 until they are
//! done: here for the first `FakeConfig::media_processing_polls` polls. Other
//! content types are refused (422). Only the owner's unattached uploads can be
//! shown or updated. Uploads count against the media throttle (per account,
//! before the controller runs).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde_json::{json, Value};

use super::guard::Caller;
use super::json;
use super::ledger::{self, Family, Upload};
use super::state::{Media, Shared};
use super::types::UploadedMedia;
use super::writes::{error, too_many, writer, Params};

/// `configuration.media_attachments.description_limit`.
const DESCRIPTION_LIMIT: usize = 1500;

/// One part of a `multipart/form-data` body.
struct Part {
    name: String,
    content_type: Option<String>,
    data: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A minimal RFC 7578 reader: enough for what HTTP clients send.
fn multipart(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let boundary = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = &body[find(body, delimiter.as_bytes())? + delimiter.len()..];
    while !rest.starts_with(b"--") {
        let rest_start = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        let end = find(rest_start, format!("\r\n{delimiter}").as_bytes())?;
        let part = &rest_start[..end];
        rest = &rest_start[end + 2 + delimiter.len()..];
        let split = find(part, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..split]);
        let mut name = String::new();
        let mut part_type = None;
        for line in head.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else { continue };
            if key.eq_ignore_ascii_case("content-disposition") {
                for param in value.split(';').map(str::trim) {
                    if let Some(n) = param.strip_prefix("name=") {
                        name = n.trim_matches('"').to_owned();
                    }
                }
            } else if key.eq_ignore_ascii_case("content-type") {
                part_type = Some(value.trim().to_owned());
            }
        }
        parts.push(Part { name, content_type: part_type, data: part[split + 4..].to_vec() });
    }
    Some(parts)
}

/// Mastodon's attachment type for a content type, and whether it is processed
/// synchronously. `None` = not accepted.
fn kind_of(content_type: &str) -> Option<(&'static str, bool)> {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "image/gif" => Some(("gifv", false)),
        t if t.starts_with("image/") => Some(("image", true)),
        t if t.starts_with("video/") => Some(("video", false)),
        t if t.starts_with("audio/") => Some(("audio", false)),
        _ => None,
    }
}

fn parse_focus(v: &str) -> Option<(f64, f64)> {
    let (x, y) = v.split_once(',')?;
    Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
}

/// The MediaAttachment entity of an upload.
fn attachment(shared: &Shared, id: &str, upload: &Upload) -> Value {
    let m = Media { id: id.to_owned(), kind: upload.kind.clone(), description: upload.media.description.clone() };
    let mut v = json::media(shared, &m);
    if let Some(obj) = v.as_object_mut() {
        if !upload.media.processed {
            obj.insert("url".into(), Value::Null);
            obj.insert("preview_url".into(), Value::Null);
        }
        if let Some((x, y)) = upload.focus {
            obj.insert("meta".into(), json!({ "focus": { "x": x, "y": y } }));
        }
    }
    v
}

fn rendered(shared: &Shared, id: &str, upload: &Upload) -> Response {
    let status = if upload.media.processed { StatusCode::OK } else { StatusCode::PARTIAL_CONTENT };
    (status, Json(attachment(shared, id, upload))).into_response()
}

pub(crate) async fn upload(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let account_id = match writer(&shared, &caller) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let limit = shared.ledger().take(shared.family_cfg(Family::Media), Family::Media, &account_id);
    if let Some(limit) = limit.as_ref().filter(|l| l.throttled) {
        return too_many(&shared, limit);
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let parts = multipart(content_type, &body).unwrap_or_default();
    let text = |name: &str| parts.iter().find(|p| p.name == name).map(|p| String::from_utf8_lossy(&p.data).into_owned());
    let description = text("description").filter(|d| !d.is_empty());
    let focus = text("focus").as_deref().and_then(parse_focus);
    let Some(file) = parts.iter().find(|p| p.name == "file") else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed: File can't be blank");
    };
    if description.as_ref().is_some_and(|d| d.chars().count() > DESCRIPTION_LIMIT) {
        let message = "Validation failed: Description is too long (maximum is 1500 characters)";
        return error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    let file_type = file.content_type.clone().unwrap_or_else(|| "application/octet-stream".to_owned());
    let Some((kind, synchronous)) = kind_of(&file_type) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed: File content type is invalid");
    };
    let polls = if synchronous { 0 } else { shared.cfg.media_processing_polls };
    let id = shared.store().ids.next(Utc::now());
    let upload = Upload {
        account_id,
        media: UploadedMedia { bytes: file.data.clone(), description, content_type: file_type, processed: polls == 0 },
        kind: kind.to_owned(),
        focus,
        polls_left: polls,
        attached_to: None,
    };
    let status = if synchronous { StatusCode::OK } else { StatusCode::ACCEPTED };
    let mut response = (status, Json(attachment(&shared, &id, &upload))).into_response();
    shared.ledger().uploads.insert(id, upload);
    if let Some(limit) = limit {
        ledger::set_headers(&shared, &mut response, &limit);
    }
    response
}

pub(crate) async fn show(State(shared): State<Arc<Shared>>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    let account_id = match writer(&shared, &caller) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let mut ledger = shared.ledger();
    let Some(upload) = ledger.uploads.get_mut(&id).filter(|u| u.account_id == account_id && u.attached_to.is_none()) else {
        return super::rest::not_found(&shared);
    };
    if upload.polls_left > 0 {
        upload.polls_left -= 1;
    } else {
        upload.media.processed = true;
    }
    rendered(&shared, &id, upload)
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
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (description, focus) = if content_type.starts_with("multipart/") {
        let parts = multipart(content_type, &body).unwrap_or_default();
        let text = |name: &str| parts.iter().find(|p| p.name == name).map(|p| String::from_utf8_lossy(&p.data).into_owned());
        (text("description"), text("focus"))
    } else {
        let params = match Params::parse(query.as_deref().unwrap_or_default(), &headers, &body) {
            Ok(p) => p,
            Err(response) => return *response,
        };
        (params.get("description").map(str::to_owned), params.get("focus").map(str::to_owned))
    };
    if description.as_ref().is_some_and(|d| d.chars().count() > DESCRIPTION_LIMIT) {
        let message = "Validation failed: Description is too long (maximum is 1500 characters)";
        return error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    let mut ledger = shared.ledger();
    let Some(upload) = ledger.uploads.get_mut(&id).filter(|u| u.account_id == account_id && u.attached_to.is_none()) else {
        return super::rest::not_found(&shared);
    };
    if let Some(description) = description {
        upload.media.description = Some(description).filter(|d| !d.is_empty());
    }
    if let Some(focus) = focus.as_deref().and_then(parse_focus) {
        upload.focus = Some(focus);
    }
    rendered(&shared, &id, upload)
}

/// The bytes and content type served for a media id: an upload's own bytes once
/// processed, or a few deterministic bytes per type for media of `post()`.
pub(crate) fn file(shared: &Shared, id: &str) -> Option<(String, Vec<u8>)> {
    let store = shared.store();
    if let Some(u) = shared.ledger().uploads.get(id).filter(|u| u.media.processed) {
        return Some((u.media.content_type.clone(), u.media.bytes.clone()));
    }
    let kind = store.statuses.values().flat_map(|s| &s.media).find(|m| m.id == id)?.kind.clone();
    let (content_type, magic): (&str, &[u8]) = match kind.as_str() {
        "image" => ("image/png", b"\x89PNG\r\n\x1a\n"),
        "audio" => ("audio/mpeg", b"ID3\x04\0\0\0\0\0\0"),
        _ => ("video/mp4", b"\0\0\0\x18ftypmp42"),
    };
    let mut bytes = magic.to_vec();
    bytes.extend_from_slice(format!("fake {kind} {id}").as_bytes());
    Some((content_type.to_owned(), bytes))
}

/// `GET /system/media_attachments/files/<id>/<style>/<name>` (what statuses
/// link to) and `/system/media_attachments/<id>/original.<ext>`.
pub(crate) async fn serve(State(shared): State<Arc<Shared>>, Path(path): Path<String>) -> Response {
    {
        let mut ledger = shared.ledger();
        if ledger.failing_downloads > 0 {
            ledger.failing_downloads -= 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
        }
    }
    let mut segments = path.split('/').skip_while(|s| *s != "media_attachments").skip(1);
    let id = match segments.next() {
        Some("files") => segments.next(),
        other => other,
    };
    match id.and_then(|id| file(&shared, id)) {
        Some((content_type, bytes)) => ([(header::CONTENT_TYPE, content_type)], Body::from(bytes)).into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}
