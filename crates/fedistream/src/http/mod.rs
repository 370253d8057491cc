//! The HTTP server inside `fedistream run` (`[http]`): health, readiness,
//! Prometheus metrics and the status document.
//!
//! * `/healthz`: the process serves requests (no checks).
//! * `/readyz` ([`health`]): every component this process runs has reported
//!   in this run and none failed, is stopped, or has been retrying or paused
//!   for longer than `stuck_after`; the log answers. 503 with the reasons
//!   otherwise.
//! * `/metrics` ([`metrics`]): the Prometheus text format.
//! * `/api/status`: what `fedistream status --json` prints.
//! * `/api/events` ([`events`]): Server-Sent Events of the log's records,
//!   resumable with `Last-Event-ID`.
//! * `/login`, `/logout` ([`login`]): a browser's way in when a token is
//!   required (a form; the session cookie it sets counts as the token).
//! * `/` ([`dashboard`]): the dashboard page, with `/dashboard/app.js`,
//!   `/dashboard/app.css` and the charts `/dashboard/chart/NAME.svg`;
//!   `POST /csp-report` counts Content-Security-Policy violation reports.
//!
//! Every response carries the dashboard's Content-Security-Policy and
//! `nosniff`. Everything but the health endpoints, `/login`, `/logout` and
//! `/csp-report` requires `Authorization: Bearer <token>` or the session
//! cookie of [`login`] when `token_env` is set (a browser asking for a page
//! without either is sent to `/login`). The handlers read the log's status documents (the
//! runtime rewrites them every 2 s), so they work the same for every role and
//! backend; they never see secrets (status documents hold none).

pub mod dashboard;
pub mod events;
pub mod health;
pub mod login;
pub mod metrics;
pub mod throttle;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use fedistream_core::Log;
use sha2::{Digest, Sha256};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub log: Arc<dyn Log>,
    /// Status keys of the components this process must run to be ready
    /// (`source:NAME`, `channel:NAME@WORKER`, …).
    pub expected: Vec<String>,
    /// Documents with another suffix of this worker (Kafka: `@WORKER`) also
    /// count as this process's (the accounts an ingest process was given).
    pub scope: Option<String>,
    /// When this process started: documents written before are a previous run's.
    pub started_at: DateTime<Utc>,
    pub stuck_after: chrono::Duration,
    /// Channel name → its consumer group (for the lag gauge).
    pub groups: Vec<(String, String)>,
    /// SHA-256 of the bearer token, when one is required.
    pub token_sha256: Option<[u8; 32]>,
    /// SHA-256 of the session cookie's value ([`login::session_value`]), when a token is required.
    pub session_sha256: Option<[u8; 32]>,
    /// Mark the session cookie `Secure` (`[http] secure_cookie`).
    pub secure_cookie: bool,
    /// The Prometheus recorder's handle (`None`: metrics not served).
    pub metrics: Option<::metrics_exporter_prometheus::PrometheusHandle>,
    /// What the dashboard shows (`None`: no dashboard).
    pub dashboard: Option<Arc<dashboard::data::Data>>,
    /// Wrong tokens per client address ([`throttle`]).
    pub throttle: Arc<throttle::AuthThrottle>,
}

impl AppState {
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token_sha256 = token.map(digest);
        self.session_sha256 = token.map(|t| Sha256::digest(login::session_value(t)).into());
        self
    }
}

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics::handler))
        .route("/api/status", get(status))
        .route("/api/events", get(events::handler))
        .route("/", get(dashboard::page))
        .route("/dashboard/chart/{file}", get(dashboard::chart))
        .route("/dashboard/{file}", get(dashboard::asset))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/login", get(login::form).post(login::submit).layer(axum::extract::DefaultBodyLimit::max(16 * 1024)))
        .route("/logout", post(login::logout))
        .route("/healthz", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(health::readyz))
        // Browsers send reports without the token; a report is a few hundred bytes.
        .route("/csp-report", post(dashboard::csp_report).layer(axum::extract::DefaultBodyLimit::max(16 * 1024)))
        .merge(protected)
        .layer(axum::middleware::map_response(dashboard::security_headers))
        .with_state(state)
}

/// SHA-256 of a token.
fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Equal digests, in a time that says nothing about how much of a guess was right.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bearer-token or session-cookie check; compares digests (see [`same`]).
async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let (Some(want), Some(session)) = (s.token_sha256, s.session_sha256) else {
        return next.run(req).await;
    };
    let client = throttle::client_of(req.extensions());
    let session_cookie = login::session_of(req.headers());
    let presented = req.headers().contains_key(header::AUTHORIZATION) || session_cookie.is_some();
    let now = std::time::Instant::now();
    if presented {
        if let Some(wait) = s.throttle.blocked(client, now) {
            return throttle::too_many(wait);
        }
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(&digest(t), &want));
    let cookie = session_cookie.is_some_and(|c| same(&Sha256::digest(c).into(), &session));
    if presented && !(bearer || cookie) {
        s.throttle.failed(client, now);
        tracing::info!("HTTP request refused: wrong token");
    }
    if bearer || cookie {
        next.run(req).await
    } else if req.method() == axum::http::Method::GET
        && req.uri().path() == "/"
        && req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
    {
        // A browser opening the dashboard: to the sign-in form.
        (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({ "error": "a bearer token is required (Authorization: Bearer …)" })),
        )
            .into_response()
    }
}

async fn status(State(s): State<AppState>) -> Response {
    match crate::status::snapshot(&*s.log).await {
        // This process writes the documents: it is alive.
        Ok(snap) => Json(crate::status::to_json(&snap, Some(true))).into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": format!("cannot read the log: {e}") }))).into_response()
        }
    }
}

/// The running server of `fedistream run`: stop it with [`Server::stop`].
pub struct Server {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Start the server `[http]` asks for (`None`: none asked for). Fails when the
/// token's variable is unset or the address cannot be bound.
pub async fn start(
    cfg: &crate::config::Config,
    log: Arc<dyn Log>,
    worker: &str,
    role: crate::roles::Role,
) -> anyhow::Result<Option<Server>> {
    use anyhow::Context;
    let Some(h) = &cfg.http else { return Ok(None) };
    let Some(addr) = h.address().map_err(anyhow::Error::msg).context("http.listen")? else {
        return Ok(None);
    };
    let token = match &h.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => anyhow::bail!("http.token_env: the environment variable {var} is not set"),
        },
        None => None,
    };
    let metrics = metrics::install().map_err(anyhow::Error::msg)?;
    let kafka = cfg.log.backend == crate::config::LogBackend::Kafka;
    let scope = kafka.then(|| worker.replace(['/', '\\'], "_"));
    let key = |kind: &str, name: &str| match &scope {
        Some(w) => format!("{kind}:{name}@{w}"),
        None => format!("{kind}:{name}"),
    };
    let mut expected = Vec::new();
    if !kafka {
        expected.push(key("ingest", "log"));
        expected.extend(cfg.sources.keys().map(|n| key("source", n)));
    }
    if !kafka || role == crate::roles::Role::All {
        expected.extend(cfg.processors.keys().map(|n| key("processor", n)));
    }
    if role != crate::roles::Role::Ingest {
        expected.extend(cfg.channels.keys().map(|n| key("channel", n)));
    }
    let stats = crate::stats::pick_processor(cfg, None).ok();
    let state = AppState {
        dashboard: Some(Arc::new(dashboard::data::Data::new(log.clone(), stats))),
        throttle: Default::default(),
        log,
        expected,
        scope,
        started_at: Utc::now(),
        stuck_after: chrono::Duration::from_std(h.stuck_after).unwrap_or(chrono::Duration::MAX),
        groups: cfg.channels.keys().map(|n| (n.clone(), crate::pipeline::channel_group(cfg, n))).collect(),
        token_sha256: None,
        session_sha256: None,
        secure_cookie: h.secure_cookie,
        metrics: Some(metrics),
    }
    .with_token(token.as_deref());
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("http.listen: cannot listen on {addr}"))?;
    let bound = listener.local_addr().context("http.listen")?;
    tracing::info!(address = %bound, token = token.is_some(), "HTTP server listening");
    let stop = tokio_util::sync::CancellationToken::new();
    let task = spawn(listener, state, stop.clone());
    Ok(Some(Server { stop, task }))
}

/// Start the server on `listener`; it stops when `stop` is cancelled.
pub fn spawn(listener: tokio::net::TcpListener, state: AppState, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
    let app = router(state);
    tokio::spawn(async move {
        // The peer address for the wrong-token budget ([`throttle`]).
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let r = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        if let Err(e) = r {
            tracing::error!(error = %e, "The HTTP server stopped");
        }
    })
}

#[cfg(test)]
mod tests;
