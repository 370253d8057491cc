//! `/metrics`: the Prometheus text format, through `metrics-exporter-prometheus`
//! (the recorder behind the `metrics` facade the components call).
//!
//! Families (labels are bounded: a component kind and its config name, never an
//! account, post or URL):
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `fedistream_events_appended_total` | counter | `component` |
//! | `fedistream_log_append_seconds` | histogram | `component` |
//! | `fedistream_log_events` | gauge | — |
//! | `fedistream_log_bytes` | gauge | — (SQLite: the database file and its write-ahead log; absent on Kafka) |
//! | `fedistream_component_events_total` | counter | `component`, `name`, `counter` (the status counters: `delivered`, `filtered`, `dead_lettered`, `retries`, `appended`, …) |
//! | `fedistream_component_ready` | gauge | `component`, `name` |
//! | `fedistream_component_last_event_age_seconds` | gauge | `component`, `name` |
//! | `fedistream_channel_lag_events` | gauge | `name` |
//! | `fedistream_channel_last_commit_timestamp_seconds` | gauge | `name` (Unix time of the channel's last offset commit; commit age = `time() - …`) |
//! | `fedistream_events_dead_lettered_total` | counter | `component` |
//! | `fedistream_posts_skipped_total` | counter | `component`, `reason` |
//! | `fedistream_payloads_malformed_total` | counter | `component` |
//! | `fedistream_webhook_requests_total` | counter | `component`, `format`, `outcome` |
//! | `fedistream_channel_errors_total` | counter | `component`, `kind` (`transient`, `permanent`, `auth`, `config`, `internal`) |
//! | `fedistream_stream_connects_total` | counter | `component`, `transport` (`websocket`, `sse`) |
//! | `fedistream_stream_connect_failures_total` | counter | `component`, `transport` |
//! | `fedistream_ratelimit_remaining` | gauge | `component`, `instance` (a server's host), `token` (`yes`, `no`) |
//! | `fedistream_csp_reports_total` | counter | — (Content-Security-Policy violations browsers reported to `/csp-report`) |
//!
//! The `fedistream_component_*`, lag and log gauges are read from the log's
//! status documents and figures at each scrape; the others are recorded where
//! they happen. Status counters count from the start of the process, like any
//! Prometheus counter.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Append latency buckets, seconds: a local SQLite commit is sub-millisecond
/// to a few ms; a Kafka transaction tens of ms.
const APPEND_BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Install the process-wide recorder (once; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let h = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("fedistream_log_append_seconds".into()), &APPEND_BUCKETS)
                .and_then(|b| b.install_recorder())
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            describe();
            Ok(h)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("fedistream_events_appended_total", "Events appended to the log (after deduplication).");
    describe_histogram!("fedistream_log_append_seconds", Unit::Seconds, "From the start of a log append until it is durable.");
    describe_gauge!("fedistream_log_events", "Events stored in the log (after retention).");
    describe_counter!("fedistream_component_events_total", "A component's status counters since the process started.");
    describe_gauge!("fedistream_component_ready", "1 when the component counts as ready (see /readyz), else 0.");
    describe_gauge!("fedistream_component_last_event_age_seconds", Unit::Seconds, "Seconds since the component last saw an event.");
    describe_gauge!("fedistream_channel_lag_events", "Events in the log the channel has not delivered yet.");
    describe_counter!("fedistream_events_dead_lettered_total", "Records written to a dead-letter file.");
    describe_counter!("fedistream_posts_skipped_total", "Posts a source did not take, by reason.");
    describe_counter!("fedistream_payloads_malformed_total", "Payloads a source could not decode.");
    describe_counter!("fedistream_webhook_requests_total", "Webhook requests by outcome (delivered, retried, refused).");
    describe_gauge!("fedistream_log_bytes", Unit::Bytes, "Size of the log on disk (SQLite: database file plus write-ahead log).");
    describe_gauge!(
        "fedistream_channel_last_commit_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the channel's last offset commit (commit age: time() minus this)."
    );
    describe_counter!("fedistream_csp_reports_total", "Content-Security-Policy violation reports browsers sent to /csp-report.");
}

/// The SQLite log's size on disk: the database and its write-ahead log.
fn sqlite_bytes(path: &str) -> Option<u64> {
    let db = std::fs::metadata(path).ok()?.len();
    let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
    Some(db + wal)
}

/// Set the gauges and status counters from the log.
async fn refresh(s: &AppState) -> Result<(), String> {
    let snap = crate::status::snapshot(&*s.log).await.map_err(|e| e.to_string())?;
    let now = Utc::now();
    metrics::gauge!("fedistream_log_events").set(snap.info.events as f64);
    if snap.info.backend == "sqlite" {
        if let Some(b) = sqlite_bytes(&snap.info.location) {
            metrics::gauge!("fedistream_log_bytes").set(b as f64);
        }
    }
    let problems = super::health::not_ready(&s.expected, s.scope.as_deref(), &snap.docs, s.started_at, s.stuck_after, now);
    for (key, d) in &snap.docs {
        // Only this run's documents of this process (counters restart with it).
        if d.started_at.is_none_or(|t| t < s.started_at - chrono::Duration::seconds(1)) {
            continue;
        }
        if let Some(scope) = &s.scope {
            if !key.ends_with(&format!("@{scope}")) {
                continue;
            }
        }
        let (kind, name) = key.split_once(':').unwrap_or(("component", key.as_str()));
        let name = s.scope.as_ref().and_then(|sc| name.strip_suffix(&format!("@{sc}"))).unwrap_or(name);
        let (kind, name) = (kind.to_string(), name.to_string());
        for (counter, v) in &d.counters {
            metrics::counter!("fedistream_component_events_total", "component" => kind.clone(), "name" => name.clone(), "counter" => counter.clone())
                .absolute(*v);
        }
        let ready = !problems.iter().any(|p| &p.component == key);
        metrics::gauge!("fedistream_component_ready", "component" => kind.clone(), "name" => name.clone()).set(if ready {
            1.0
        } else {
            0.0
        });
        if let Some(t) = d.last_event_at {
            metrics::gauge!("fedistream_component_last_event_age_seconds", "component" => kind, "name" => name)
                .set((now - t).num_milliseconds().max(0) as f64 / 1000.0);
        }
    }
    for (channel, group) in &s.groups {
        if let Some(g) = snap.info.groups.iter().find(|g| &g.group == group) {
            metrics::gauge!("fedistream_channel_lag_events", "name" => channel.clone()).set(g.lag as f64);
        }
    }
    Ok(())
}

pub async fn handler(State(s): State<AppState>) -> Response {
    let Some(h) = &s.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not recorded in this process\n").into_response();
    };
    if let Err(e) = refresh(&s).await {
        tracing::warn!(error = %e, "Cannot read the log for /metrics; serving the counters only");
    }
    h.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], h.render()).into_response()
}
