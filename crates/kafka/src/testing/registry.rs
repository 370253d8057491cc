//! [`RegistryStandIn`]: an in-memory stand-in for a Confluent Schema Registry,
//! for tests (no Confluent-compatible server installs here). It serves the REST
//! subset fedistream uses, as Confluent documents it:
//!
//! * `POST /subjects/{subject}/versions` `{"schema": "..."}` → `{"id": N}`. A
//!   schema the subject already has returns its id; a new one must pass the
//!   subject's compatibility rule, BACKWARD (Confluent's default): the new schema
//!   must read data written with the latest version (checked with apache-avro's
//!   `SchemaCompatibility::can_read`), else 409 with `error_code` 409. An
//!   unparsable schema is 422 with `error_code` 42201. Ids are global: the same
//!   schema under two subjects has one id.
//! * `GET /schemas/ids/{id}` → `{"schema": "..."}` (404, `error_code` 40403).
//! * `GET /subjects/{subject}/versions/latest` (or a version number) →
//!   `{"subject", "version", "id", "schema"}` (404, `error_code` 40401 / 40402).
//! * `GET /subjects/{subject}/versions` → `[1, 2]`; `GET /subjects` → names.
//!
//! Responses are `application/vnd.schemaregistry.v1+json`; errors are Confluent's
//! `{"error_code": .., "message": ..}`. Optional basic auth (401 otherwise). It
//! records every request (method, path, content type, whether authorised) so
//! tests can check what a client sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::registry::CONTENT_TYPE;

/// A request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub authorized: bool,
}

struct Stored {
    id: u32,
    text: String,
    json: Value,
}

#[derive(Default)]
struct Registry {
    schemas: Vec<Stored>,
    /// Subject → schema id of each version (version n at index n-1).
    subjects: BTreeMap<String, Vec<u32>>,
}

impl Registry {
    fn by_id(&self, id: u32) -> Option<&Stored> {
        self.schemas.iter().find(|s| s.id == id)
    }
}

struct Shared {
    registry: Mutex<Registry>,
    /// `Basic <base64(user:password)>` when auth is required.
    expected_auth: Option<String>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// The running stand-in; stops when dropped.
pub struct RegistryStandIn {
    url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RegistryStandIn {
    /// Serve on `127.0.0.1:0` without authentication.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// Serve requiring HTTP basic auth with these credentials.
    pub async fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::serve(Some(format!("Basic {}", base64(format!("{user}:{password}").as_bytes())))).await
    }

    async fn serve(expected_auth: Option<String>) -> Self {
        let shared = Arc::new(Shared { registry: Mutex::default(), expected_auth, requests: Mutex::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        RegistryStandIn { url, shared, stop: Some(stop) }
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Subjects and their versions' schema ids.
    pub fn subjects(&self) -> BTreeMap<String, Vec<u32>> {
        self.shared.registry.lock().unwrap_or_else(|p| p.into_inner()).subjects.clone()
    }
}

impl Drop for RegistryStandIn {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The stand-in's routes over `shared` state.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route("/schemas/ids/{id}", get(get_schema))
        .fallback(|| async { error(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found".into()) })
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

fn respond(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn error(status: StatusCode, error_code: i64, message: String) -> Response {
    respond(status, json!({ "error_code": error_code, "message": message }))
}

/// Record the request, then check credentials and the request's media type.
async fn guard(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let text = |h| headers.get(h).and_then(|v: &header::HeaderValue| v.to_str().ok()).map(str::to_string);
    let authorized = match &shared.expected_auth {
        None => true,
        Some(expected) => text(header::AUTHORIZATION).as_deref() == Some(expected.as_str()),
    };
    let content_type = text(header::CONTENT_TYPE);
    shared.requests.lock().unwrap_or_else(|p| p.into_inner()).push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        content_type: content_type.clone(),
        accept: text(header::ACCEPT),
        authorized,
    });
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, 401, "Unauthorized".into());
    }
    // The media types Confluent's REST layer accepts for request bodies.
    if method == Method::POST {
        let ok = match content_type.as_deref().map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase()) {
            None => true,
            Some(c) => matches!(
                c.as_str(),
                "application/vnd.schemaregistry.v1+json"
                    | "application/vnd.schemaregistry+json"
                    | "application/json"
                    | "application/octet-stream"
            ),
        };
        if !ok {
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, 415, "HTTP 415 Unsupported Media Type".into());
        }
    }
    next.run(req).await
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    shared.registry.lock().unwrap_or_else(|p| p.into_inner())
}

async fn list_subjects(State(shared): State<Arc<Shared>>) -> Response {
    let names: Vec<String> = lock(&shared).subjects.keys().cloned().collect();
    respond(StatusCode::OK, json!(names))
}

fn subject_not_found(subject: &str) -> Response {
    error(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found."))
}

async fn list_versions(State(shared): State<Arc<Shared>>, Path(subject): Path<String>) -> Response {
    match lock(&shared).subjects.get(&subject) {
        Some(vs) => respond(StatusCode::OK, json!((1..=vs.len()).collect::<Vec<_>>())),
        None => subject_not_found(&subject),
    }
}

async fn get_version(State(shared): State<Arc<Shared>>, Path((subject, version)): Path<(String, String)>) -> Response {
    let reg = lock(&shared);
    let Some(versions) = reg.subjects.get(&subject) else { return subject_not_found(&subject) };
    let n = match version.as_str() {
        "latest" | "-1" => versions.len(),
        v => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42202,
                    format!("The specified version '{v}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""),
                )
            }
        },
    };
    match versions.get(n - 1).and_then(|id| reg.by_id(*id)) {
        Some(s) => respond(StatusCode::OK, json!({ "subject": subject, "version": n, "id": s.id, "schema": s.text })),
        None => error(StatusCode::NOT_FOUND, 40402, format!("Version {n} not found.")),
    }
}

async fn get_schema(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let found = id.parse::<u32>().ok().and_then(|n| lock(&shared).by_id(n).map(|s| s.text.clone()));
    match found {
        Some(text) => respond(StatusCode::OK, json!({ "schema": text })),
        None => error(StatusCode::NOT_FOUND, 40403, format!("Schema {id} not found")),
    }
}

async fn register(State(shared): State<Arc<Shared>>, Path(subject): Path<String>, body: Bytes) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, 400, format!("Unexpected character in the request body: {e}")),
    };
    let Some(text) = req.get("schema").and_then(Value::as_str) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 422, "Unrecognized request: `schema` (a string) is required".into());
    };
    if let Some(t) = req.get("schemaType").and_then(Value::as_str).filter(|t| *t != "AVRO") {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema type {t} (this stand-in serves AVRO only)"));
    }
    let (parsed, json) = match (Schema::parse_str(text), serde_json::from_str::<Value>(text)) {
        (Ok(s), Ok(j)) => (s, j),
        (Err(e), _) => return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema {text}, details: {e}")),
        (_, Err(e)) => return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema {text}, details: {e}")),
    };
    let mut reg = lock(&shared);
    let versions = reg.subjects.get(&subject).cloned().unwrap_or_default();
    // Already registered under this subject: its id, no compatibility check.
    if let Some(s) = versions.iter().filter_map(|id| reg.by_id(*id)).find(|s| s.json == json) {
        return respond(StatusCode::OK, json!({ "id": s.id }));
    }
    if let Some(latest) = versions.last().and_then(|id| reg.by_id(*id)) {
        // Stored schemas parsed when they were registered.
        let Ok(old) = Schema::parse_str(&latest.text) else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, 50001, "Error in the backend data store".into());
        };
        if let Err(e) = SchemaCompatibility::can_read(&old, &parsed) {
            return error(
                StatusCode::CONFLICT,
                409,
                format!(
                    "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{{errorType:'{}', description:'The new schema cannot read data written with version {}: {e}'}}, {{oldSchemaVersion: {}}}, {{compatibility: 'BACKWARD'}}]",
                    error_type(&e),
                    versions.len(),
                    versions.len()
                ),
            );
        }
    }
    let id = match reg.schemas.iter().find(|s| s.json == json) {
        Some(s) => s.id,
        None => {
            let id = reg.schemas.iter().map(|s| s.id).max().unwrap_or(0) + 1;
            reg.schemas.push(Stored { id, text: text.to_string(), json });
            id
        }
    };
    reg.subjects.entry(subject).or_default().push(id);
    respond(StatusCode::OK, json!({ "id": id }))
}

/// Confluent's name for the kind of incompatibility, where there is one.
fn error_type(e: &apache_avro::error::CompatibilityError) -> &'static str {
    use apache_avro::error::CompatibilityError as E;
    match e {
        E::MissingDefaultValue(_) => "READER_FIELD_MISSING_DEFAULT_VALUE",
        E::FieldTypeMismatch(..) | E::WrongType { .. } | E::TypeExpected { .. } => "TYPE_MISMATCH",
        E::NameMismatch { .. } => "NAME_MISMATCH",
        E::MissingSymbols => "MISSING_ENUM_SYMBOLS",
        E::MissingUnionElements => "MISSING_UNION_BRANCH",
        _ => "INCOMPATIBLE",
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
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
