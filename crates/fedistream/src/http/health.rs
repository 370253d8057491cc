//! Readiness: what `/readyz` checks, from the log's status documents.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use fedistream_core::component::StatusDoc;
use serde::Serialize;

use super::AppState;

/// One component that keeps the process from being ready, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotReady {
    pub component: String,
    pub state: String,
    pub reason: String,
}

/// A component is not ready when it has not reported in this run, failed,
/// stopped, or has been retrying or paused for longer than `stuck_after`, or
/// when its document is not being rewritten (the runtime rewrites them every
/// 2 s). A finished (finite) source is ready.
pub fn not_ready(
    expected: &[String],
    scope: Option<&str>,
    docs: &[(String, StatusDoc)],
    started_at: DateTime<Utc>,
    stuck_after: chrono::Duration,
    now: DateTime<Utc>,
) -> Vec<NotReady> {
    let mut out = Vec::new();
    let current = |d: &StatusDoc| d.started_at.is_some_and(|t| t >= started_at - chrono::Duration::seconds(1));
    // The expected components, and any other document of this worker (Kafka).
    let mut keys: Vec<&str> = expected.iter().map(String::as_str).collect();
    if let Some(scope) = scope {
        let suffix = format!("@{scope}");
        keys.extend(docs.iter().filter(|(k, d)| k.ends_with(&suffix) && current(d)).map(|(k, _)| k.as_str()));
    }
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let doc = docs.iter().find(|(k, _)| k == key).map(|(_, d)| d).filter(|d| current(d));
        let Some(d) = doc else {
            out.push(NotReady { component: key.into(), state: "starting".into(), reason: "has not reported in this run yet".into() });
            continue;
        };
        let detail = d.detail.clone().unwrap_or_default();
        let since = d.since.unwrap_or(d.updated_at);
        let reason = match d.state.as_str() {
            "finished" => None,
            "failed" => Some(if detail.is_empty() { "failed".to_string() } else { detail.clone() }),
            "stopped" => Some(format!("stopped{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })),
            "retrying" | "paused" if now - since > stuck_after => {
                Some(format!("{} for {}s: {detail}", d.state, (now - since).num_seconds()))
            }
            _ if now - d.updated_at > crate::status::STALE_AFTER => {
                Some(format!("its status was last written {}s ago (the runtime is stuck)", (now - d.updated_at).num_seconds()))
            }
            _ => None,
        };
        if let Some(reason) = reason {
            out.push(NotReady { component: key.into(), state: d.state.clone(), reason });
        }
    }
    out
}

pub async fn readyz(State(s): State<AppState>) -> Response {
    let docs = match s.log.state_scan(fedistream_core::component::STATUS_NS).await {
        Ok(rows) => rows.into_iter().filter_map(|(k, v)| serde_json::from_str::<StatusDoc>(&v).ok().map(|d| (k, d))).collect::<Vec<_>>(),
        Err(e) => {
            let nr = NotReady { component: "log".into(), state: "unavailable".into(), reason: e.to_string() };
            return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "ready": false, "not_ready": [nr] }))).into_response();
        }
    };
    let problems = not_ready(&s.expected, s.scope.as_deref(), &docs, s.started_at, s.stuck_after, Utc::now());
    if problems.is_empty() {
        Json(serde_json::json!({ "ready": true, "not_ready": [] })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "ready": false, "not_ready": problems }))).into_response()
    }
}
