//! The handlers through `router()` and tower's `oneshot` (no sockets), on a
//! real SQLite log holding real status documents.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use fedistream_core::component::{DeadLetter, Status, StatusDoc, STATUS_NS};
use fedistream_core::log::StatePut;
use fedistream_core::runtime::{self, BatchConfig, ChannelSpec, Pipeline, RetryConfig, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::testing::{created, RecordingSink, VecSource};
use fedistream_core::Log;
use tower::ServiceExt;

use super::*;

fn log() -> (tempfile::TempDir, Arc<dyn Log>) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    (dir, log)
}

fn state(log: Arc<dyn Log>, expected: &[&str]) -> AppState {
    AppState {
        log: log.clone(),
        expected: expected.iter().map(|s| s.to_string()).collect(),
        scope: None,
        started_at: Utc::now() - chrono::Duration::seconds(1),
        stuck_after: chrono::Duration::seconds(300),
        groups: vec![("c".into(), "g.c".into())],
        token_sha256: None,
        session_sha256: None,
        secure_cookie: false,
        metrics: None,
        dashboard: Some(Arc::new(dashboard::data::Data::new(log, None))),
        throttle: Default::default(),
    }
}

async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn put(log: &Arc<dyn Log>, statuses: &[&Status]) {
    log.state_put(statuses.iter().map(|s| s.to_put()).collect()).await.unwrap();
}

#[tokio::test]
async fn readiness_follows_a_source_that_fails_and_recovers() {
    let (_d, log) = log();
    let app = router(state(log.clone(), &["ingest:log", "source:s", "channel:c"]));
    // Nothing reported yet: starting.
    let (code, body) = get(&app, "/readyz", None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("\"component\":\"source:s\"") && body.contains("has not reported in this run"), "{body}");
    assert_eq!(get(&app, "/healthz", None).await.0, StatusCode::OK, "the process is up regardless");

    let (ingest, source, channel) = (Status::new("ingest", "log"), Status::new("source", "s"), Status::new("channel", "c"));
    for s in [&ingest, &source, &channel] {
        s.set_state("running", None);
    }
    put(&log, &[&ingest, &source, &channel]).await;
    let (code, body) = get(&app, "/readyz", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["ready"], true);

    source.set_state("failed", Some("the reader token was refused (401)".into()));
    put(&log, &[&source]).await;
    let (code, body) = get(&app, "/readyz", None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(
        v["not_ready"],
        serde_json::json!([{ "component": "source:s", "state": "failed", "reason": "the reader token was refused (401)" }])
    );

    source.set_state("running", None);
    put(&log, &[&source]).await;
    assert_eq!(get(&app, "/readyz", None).await.0, StatusCode::OK, "ready again after recovery");
}

#[tokio::test]
async fn a_channel_retrying_too_long_or_a_previous_runs_document_is_not_ready() {
    let (_d, log) = log();
    let st = state(log.clone(), &["channel:c", "source:s"]);
    let started = st.started_at;
    let app = router(st);
    let now = Utc::now();
    let doc = |state: &str, since: chrono::DateTime<Utc>, started_at: chrono::DateTime<Utc>| StatusDoc {
        component: "x".into(),
        state: state.into(),
        detail: Some("HTTP 503 from https://hooks.example.org".into()),
        since: Some(since),
        started_at: Some(started_at),
        updated_at: now,
        ..Default::default()
    };
    let write = |k: &str, d: StatusDoc| StatePut::set(STATUS_NS, k.to_string(), serde_json::to_string(&d).unwrap());
    log.state_put(vec![
        write("channel:c", doc("retrying", now - chrono::Duration::seconds(30), started)),
        write("source:s", doc("finished", now, started)),
    ])
    .await
    .unwrap();
    assert_eq!(get(&app, "/readyz", None).await.0, StatusCode::OK, "retrying briefly and finished are fine");

    log.state_put(vec![write("channel:c", doc("retrying", now - chrono::Duration::seconds(600), started))]).await.unwrap();
    let (code, body) = get(&app, "/readyz", None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("retrying for 600s: HTTP 503"), "{body}");

    // A document of an earlier run of the process says nothing about this one.
    log.state_put(vec![write("channel:c", doc("running", now, started - chrono::Duration::hours(1)))]).await.unwrap();
    let (code, body) = get(&app, "/readyz", None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("has not reported in this run"), "{body}");
}

#[tokio::test]
async fn the_bearer_token_guards_everything_but_health() {
    let (_d, log) = log();
    let mut st = state(log.clone(), &[]).with_token(Some("t0ken"));
    st.metrics = Some(metrics::install().unwrap());
    let app = router(st);
    for path in ["/metrics", "/api/status", "/", "/dashboard/chart/hours.svg", "/dashboard/app.js"] {
        let (code, body) = get(&app, path, None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(get(&app, path, Some("wrong")).await.0, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(get(&app, path, Some("t0ken!")).await.0, StatusCode::UNAUTHORIZED, "{path}");
        let (code, body) = get(&app, path, Some("t0ken")).await;
        assert_eq!(code, StatusCode::OK, "{path}: {body}");
        assert!(!body.contains("t0ken"));
    }
    assert_eq!(get(&app, "/healthz", None).await.0, StatusCode::OK);
    assert_eq!(get(&app, "/readyz", None).await.0, StatusCode::OK, "nothing expected: ready");
    let (_, body) = get(&app, "/api/status", Some("t0ken")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["log"]["backend"], "sqlite", "{body}");
}

/// Wrong tokens from one address: after the budget, that address gets 429
/// with Retry-After for everything that presents a token (the right one too:
/// guessing cannot go on), and for /login; another address is unaffected, and
/// the health endpoints answer everyone.
#[tokio::test]
async fn an_address_sending_wrong_tokens_is_slowed_down() {
    use axum::extract::ConnectInfo;
    let (_d, log) = log();
    let app = router(state(log.clone(), &[]).with_token(Some("t0ken")));
    let from = |ip: [u8; 4], path: &str, token: Option<&str>| {
        let mut req = Request::builder().uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::from((ip, 40000))));
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap() }
    };
    let (a, b) = ([192, 0, 2, 1], [192, 0, 2, 2]);
    // No credential at all is not a guess.
    for _ in 0..2 * throttle::MAX_FAILURES {
        assert_eq!(from(a, "/api/status", None).await.status(), StatusCode::UNAUTHORIZED);
    }
    for _ in 0..throttle::MAX_FAILURES {
        assert_eq!(from(a, "/api/status", Some("guess")).await.status(), StatusCode::UNAUTHORIZED);
    }
    let r = from(a, "/api/status", Some("t0ken")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=throttle::WINDOW.as_secs()).contains(&wait), "{wait}");
    let mut login =
        Request::post("/login").header("content-type", "application/x-www-form-urlencoded").body(Body::from("token=t0ken")).unwrap();
    login.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::from((a, 40001))));
    assert_eq!(app.clone().oneshot(login).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(from(a, "/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(from(b, "/api/status", Some("t0ken")).await.status(), StatusCode::OK, "another address");
    // Wrong sign-ins count as well.
    for _ in 0..throttle::MAX_FAILURES {
        let mut login =
            Request::post("/login").header("content-type", "application/x-www-form-urlencoded").body(Body::from("token=no")).unwrap();
        login.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::from((b, 40002))));
        assert_eq!(app.clone().oneshot(login).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(from(b, "/api/status", Some("t0ken")).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A browser's way in: the /login form takes the token in a POST body and
/// sets an HttpOnly, SameSite=Strict cookie that is not the token, which then
/// opens everything the bearer header opens; a wrong token is refused without
/// being echoed; /logout clears the cookie.
#[tokio::test]
async fn a_browser_signs_in_with_the_token_and_gets_a_cookie_that_is_not_it() {
    let (_d, log) = log();
    let app = router(state(log.clone(), &[]).with_token(Some("s3cret-t0ken")));
    let post = |path: &str, body: &str| {
        Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let with_cookie = |path: &str, cookie: &str| Request::builder().uri(path).header("cookie", cookie).body(Body::empty()).unwrap();
    let text = |resp: axum::response::Response| async move {
        String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap().to_vec()).unwrap()
    };

    // A browser opening the dashboard is sent to the form; the form is plain HTML.
    let open = Request::builder().uri("/").header("accept", "text/html,application/xhtml+xml").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(open).await.unwrap();
    assert_eq!((resp.status(), resp.headers()["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/login"));
    let (code, form) = get(&app, "/login", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(form.contains("<form method=\"post\" action=\"/login\">") && form.contains("type=\"password\""), "{form}");
    assert!(!form.contains("<script") && !form.contains("style="), "nothing inline: {form}");

    // A wrong token: refused, no cookie, not echoed.
    let resp = app.clone().oneshot(post("/login", "token=guess-123")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(resp.headers().contains_key("content-security-policy"));
    assert!(!text(resp).await.contains("guess-123"), "the guess is not echoed");

    // The right one (form-encoded like a browser sends it): a cookie, back to the dashboard.
    let resp = app.clone().oneshot(post("/login", "token=s3cret%2Dt0ken")).await.unwrap();
    assert_eq!((resp.status(), resp.headers()["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/"));
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(!text(resp).await.contains("s3cret"));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.split("; ").any(|a| a == attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "not Secure unless configured: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("fedistream_session=") && !cookie.contains("s3cret"), "{cookie}");
    let digest: String = sha2::Sha256::digest(b"s3cret-t0ken").iter().map(|b| format!("{b:02x}")).collect();
    assert!(!cookie.contains(&digest), "not the token's plain digest either");

    // The cookie opens what the bearer token opens.
    for path in ["/", "/api/status", "/metrics", "/dashboard/app.js", "/dashboard/chart/hours.svg"] {
        let resp = app.clone().oneshot(with_cookie(path, &format!("theme=dark; {cookie}"))).await.unwrap();
        let code = resp.status();
        // No recorder here: /metrics answers, but not 401.
        assert_ne!(code, StatusCode::UNAUTHORIZED, "{path}");
        let body = text(resp).await;
        assert!(!body.contains("s3cret"), "{path}");
    }
    let resp = app.clone().oneshot(with_cookie("/api/events", &cookie)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the live feed (EventSource sends the cookie)");
    // A forged or stale cookie does not.
    let forged = format!("fedistream_session={}", "0".repeat(64));
    assert_eq!(app.clone().oneshot(with_cookie("/api/status", &forged)).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let other = router(state(log.clone(), &[]).with_token(Some("rotated")));
    assert_eq!(
        other.oneshot(with_cookie("/api/status", &cookie)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "a new token ends sessions"
    );

    // Sign out: the cookie is cleared.
    let resp = app.clone().oneshot(post("/logout", "")).await.unwrap();
    assert_eq!((resp.status(), resp.headers()["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/login"));
    let cleared = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("fedistream_session=;") && cleared.contains("Max-Age=0"), "{cleared}");

    // Behind HTTPS the cookie is Secure.
    let mut st = state(log.clone(), &[]).with_token(Some("s3cret-t0ken"));
    st.secure_cookie = true;
    let resp = router(st).oneshot(post("/login", "token=s3cret-t0ken")).await.unwrap();
    assert!(resp.headers()["set-cookie"].to_str().unwrap().split("; ").any(|a| a == "Secure"));
}

/// Run a small pipeline on `log` (so the real code records its metrics and
/// status documents); the app serving it with metrics on.
async fn ran_pipeline(log: Arc<dyn Log>, dir: &std::path::Path) -> Router {
    let mut st = state(log.clone(), &["ingest:log", "source:s", "channel:c"]);
    st.metrics = Some(metrics::install().unwrap());
    let evs: Vec<_> = (1..=20).map(|n| created("s", "a@example.org", n, "x")).collect();
    // One failed write: retried (and counted by kind).
    let sink = RecordingSink::default();
    sink.fail_next(fedistream_core::SinkError::transient("the disk hiccuped"));
    let channel = ChannelSpec {
        name: "c".into(),
        group: "g.c".into(),
        topic: fedistream_core::log::EVENTS.into(),
        sink: Box::new(sink),
        route: None,
        batch: BatchConfig { max_records: 5, max_bytes: 1 << 20, linger: Duration::ZERO },
        retry: RetryConfig { initial: Duration::from_millis(5), max: Duration::from_millis(20), pause: Duration::from_millis(20) },
        dead_letter: DeadLetter::new(dir.join("dl.jsonl")),
    };
    let source = VecSource {
        batches: vec![fedistream_core::component::SourceBatch { events: fedistream_core::event::encode_all(evs), state: vec![] }],
    };
    let p = Pipeline {
        log,
        sources: vec![SourceSpec::new("s", Box::new(source), DeadLetter::new(dir.join("src.jsonl")))],
        processors: vec![],
        channels: vec![channel],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let summary = runtime::run(p, tokio_util::sync::CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty());
    router(st)
}

/// The families `/metrics` documents (see the module docs of [`metrics`]).
const FAMILIES: [&str; 10] = [
    "fedistream_events_appended_total",
    "fedistream_log_append_seconds",
    "fedistream_log_events",
    "fedistream_log_bytes",
    "fedistream_channel_last_commit_timestamp_seconds",
    "fedistream_component_events_total",
    "fedistream_component_ready",
    "fedistream_component_last_event_age_seconds",
    "fedistream_channel_lag_events",
    "fedistream_channel_errors_total",
];

#[tokio::test]
async fn metrics_carry_the_documented_families_with_bounded_labels() {
    let (d, log) = log();
    let app = ran_pipeline(log, d.path()).await;
    let (code, text) = get(&app, "/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    for f in FAMILIES {
        assert!(text.contains(&format!("# TYPE {f} ")), "{f} missing:\n{text}");
    }
    assert!(text.contains("# TYPE fedistream_log_append_seconds histogram"), "{text}");
    assert!(text.contains(r#"fedistream_component_events_total{component="channel",name="c",counter="delivered"} 20"#), "{text}");
    assert!(text.contains(r#"fedistream_channel_lag_events{name="c"} 0"#), "{text}");
    assert!(text.contains("fedistream_log_events 20"), "{text}");
    let bytes: f64 = text.lines().find_map(|l| l.strip_prefix("fedistream_log_bytes ")).expect("the log's size").parse().unwrap();
    assert!(bytes >= 4096.0, "the database file is at least a page: {bytes}");
    let committed: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"fedistream_channel_last_commit_timestamp_seconds{name="c"} "#))
        .expect("the channel's commit time")
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(committed > now - 3600.0 && committed <= now, "a Unix time of this run: {committed} (now {now})");
    // No per-account or per-post label anywhere.
    assert!(!text.contains("a@example.org") && !text.contains("statuses/"), "{text}");
}

#[tokio::test]
async fn metrics_parse_with_prometheus_clients_own_parser() {
    let (d, log) = log();
    let app = ran_pipeline(log, d.path()).await;
    let (_, text) = get(&app, "/metrics", None).await;
    let path = d.path().join("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
for name in sys.argv[2:]:
    print(name, fams[name].type, len(fams[name].samples))
"#;
    // prometheus_client strips `_total` from counter family names.
    let names: Vec<String> = FAMILIES.iter().map(|f| f.strip_suffix("_total").unwrap_or(f).to_string()).collect();
    let python = python_with_prometheus_client();
    let out = std::process::Command::new(&python).arg("-c").arg(script).arg(&path).args(&names).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{python}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    for (name, line) in names.iter().zip(stdout.lines()) {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts[0], name);
        assert!(parts[2].parse::<usize>().unwrap() > 0, "{line}");
    }
    assert!(stdout.contains("fedistream_log_append_seconds histogram"), "{stdout}");
    assert!(stdout.contains("fedistream_component_events counter"), "{stdout}");
}

/// `FEDISTREAM_PYTHON`, else the interpreter `scripts/python-deps` sets up
/// (a venv with prometheus_client from PyPI).
fn python_with_prometheus_client() -> String {
    if let Ok(p) = std::env::var("FEDISTREAM_PYTHON") {
        return p;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python-deps");
    let out = std::process::Command::new("bash").arg(&script).output().expect("running scripts/python-deps");
    assert!(out.status.success(), "scripts/python-deps failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Read SSE frames from a response body until `n` events arrived; their
/// (id, event, data) fields.
async fn sse_events(body: Body, n: usize) -> (Vec<(String, String, String)>, impl futures::Stream) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no event within 10s; so far: {text}"))
            .expect("the stream ended")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                frame.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim_start().to_string())).unwrap_or_default()
            };
            if !field("id").is_empty() {
                out.push((field("id"), field("event"), field("data")));
            }
        }
    }
    (out, stream)
}

#[tokio::test]
async fn the_event_feed_resumes_after_last_event_id_and_goes_on_live() {
    use fedistream_core::{AppendBatch, Event, EventKind};
    let (_d, log) = log();
    let app = router(state(log.clone(), &[]));
    let mut edited = created("s", "a@example.org", 2, "edited");
    edited.kind = EventKind::Updated;
    let deleted = Event { kind: EventKind::Deleted, post: None, ..created("s", "a@example.org", 1, "") };
    let evs = vec![
        created("s", "a@example.org", 1, "one"),
        created("s", "a@example.org", 2, "two"),
        created("s", "a@example.org", 3, "three"),
        edited,
        deleted,
    ];
    log.append(AppendBatch { events: fedistream_core::event::encode_all(evs), state: vec![] }).await.unwrap();

    let req = Request::builder().uri("/api/events").header("last-event-id", "0:2").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (got, _keep_open) = sse_events(resp.into_body(), 3).await;
    let ids: Vec<&str> = got.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["0:3", "0:4", "0:5"], "right after the last event seen");
    let kinds: Vec<&str> = got.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds, vec!["created", "updated", "deleted"]);
    let line: serde_json::Value = serde_json::from_str(&got[1].2).unwrap();
    assert_eq!((line["offset"].as_u64(), line["post"]["content_text"].as_str()), (Some(4), Some("edited")));

    // Without Last-Event-ID: from the head on, live.
    let resp = app.clone().oneshot(Request::builder().uri("/api/events").body(Body::empty()).unwrap()).await.unwrap();
    // The handler placed its reader at the head before answering.
    let more = vec![created("s", "b@example.org", 9, "new")];
    log.append(AppendBatch { events: fedistream_core::event::encode_all(more), state: vec![] }).await.unwrap();
    let (got, _keep_open) = sse_events(resp.into_body(), 1).await;
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("0:6", "created"), "only what came after connecting");

    let bad = Request::builder().uri("/api/events").header("last-event-id", "yesterday").body(Body::empty()).unwrap();
    assert_eq!(app.clone().oneshot(bad).await.unwrap().status(), StatusCode::BAD_REQUEST);
}

/// The feed on the Kafka log (a real broker, three partitions): it starts at
/// the head, every id names every partition, and a client resuming with its
/// Last-Event-ID gets exactly what followed, on every partition — including
/// partitions it had seen nothing of.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_feed_on_kafka_resumes_on_every_partition() {
    use std::collections::BTreeSet;

    use fedistream_core::AppendBatch;
    use fedistream_kafka::log::{KafkaLog, KafkaLogConfig};
    let mut cfg =
        KafkaLogConfig::new(fedistream_kafka::testing::brokers(), format!("t-http-sse-{}-{:x}", std::process::id(), rand::random::<u32>()));
    cfg.partitions = 3;
    let log: Arc<dyn Log> = KafkaLog::open(cfg).await.unwrap();
    let app = router(state(log.clone(), &[]));
    let accounts: Vec<String> = (0..12).map(|i| format!("user{i}@example.org")).collect();
    let round = |n: u64| accounts.iter().map(|a| created("s", a, n, "x")).collect::<Vec<_>>();
    let key_of = |data: &str| serde_json::from_str::<serde_json::Value>(data).unwrap()["key"].as_str().unwrap().to_string();
    let keys = |evs: &[fedistream_core::Event]| evs.iter().map(|e| e.key.clone()).collect::<BTreeSet<_>>();

    // The only partition with records when the feed opens is the one of user0.
    log.append(AppendBatch { events: fedistream_core::event::encode_all(vec![created("s", &accounts[0], 1, "before")]), state: vec![] })
        .await
        .unwrap();
    // A committed transaction becomes readable once its marker is written
    // (just after the commit returns): wait for it, or "the head" is before it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log.info().await.unwrap().head.iter().map(|p| p.offset).sum::<u64>() < 2 {
        assert!(std::time::Instant::now() < deadline, "the first append never became readable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = app.clone().oneshot(Request::builder().uri("/api/events").body(Body::empty()).unwrap()).await.unwrap();
    if resp.status() != StatusCode::OK {
        let (code, body) = (resp.status(), axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap());
        panic!("{code}: {}", String::from_utf8_lossy(&body));
    }
    let second = round(2);
    log.append(AppendBatch { events: fedistream_core::event::encode_all(second.clone()), state: vec![] }).await.unwrap();
    let (got, keep_open) = sse_events(resp.into_body(), 12).await;
    assert_eq!(got.iter().map(|(_, _, d)| key_of(d)).collect::<BTreeSet<_>>(), keys(&second), "what came after connecting, nothing before");
    let parts_of = |id: &str| events::parse_positions(id).unwrap().iter().map(|p| p.partition).collect::<BTreeSet<_>>();
    assert_eq!(parts_of(&got[11].0), BTreeSet::from([0, 1, 2]), "ids name every partition: {}", got[11].0);
    drop(keep_open);

    // Resume after the fifth event: the other seven, then what came meanwhile.
    let third = round(3);
    log.append(AppendBatch { events: fedistream_core::event::encode_all(third.clone()), state: vec![] }).await.unwrap();
    let req = Request::builder().uri("/api/events").header("last-event-id", got[4].0.as_str()).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (again, _keep_open) = sse_events(resp.into_body(), 19).await;
    let mut want: BTreeSet<String> = got[5..].iter().map(|(_, _, d)| key_of(d)).collect();
    want.extend(keys(&third));
    let resumed: Vec<String> = again.iter().map(|(_, _, d)| key_of(d)).collect();
    assert_eq!(resumed.iter().cloned().collect::<BTreeSet<_>>(), want, "exactly what followed the id");
    assert_eq!(resumed.len(), want.len(), "each once");
}

/// A post whose every remote field is hostile.
fn hostile(n: u64) -> fedistream_core::Event {
    let mut ev = created("s", "eve@example.org", n, "");
    let p = ev.post.as_mut().unwrap();
    p.content_html =
        r#"<p>hi<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1"><a href="javascript:window.__pwned=1">x</a></p>"#
            .into();
    p.account.display_name = "<b onmouseover=\"window.__pwned=1\">Eve</b>".into();
    p.account.url = Some("javascript:window.__pwned=1".into());
    p.spoiler_text = "<i>cw</i>".into();
    p.sensitive = true;
    p.media = vec![fedistream_core::post::Media {
        kind: "image".into(),
        url: Some("data:text/html,<script>window.__pwned=1</script>".into()),
        preview_url: None,
        description: Some("<svg onload=window.__pwned=1>".into()),
    }];
    ev
}

#[tokio::test]
async fn the_dashboard_shows_sanitised_posts_charts_and_a_strict_policy() {
    use fedistream_core::AppendBatch;
    let (_d, log) = log();
    let app = router(state(log.clone(), &[]));
    let evs = vec![created("s", "a@example.org", 1, "hello"), hostile(2)];
    log.append(AppendBatch { events: fedistream_core::event::encode_all(evs), state: vec![] }).await.unwrap();

    let resp = app.clone().oneshot(Request::builder().uri("/").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.starts_with("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'"), "{csp}");
    assert!(csp.contains("report-uri /csp-report"), "{csp}");
    let body = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap().to_vec()).unwrap();
    assert!(body.contains("<script src=\"/dashboard/app.js\" defer></script>"), "{body}");
    assert_eq!(body.matches("<script").count(), 1, "no inline script: {body}");
    assert!(!body.contains("style="), "no inline style: {body}");
    // Markup, not text: the escaped display name still names the handler.
    for bad in ["<img src=x", "<svg", "<b ", "href=\"javascript:", "href=\"data:", "<a href=\"javascript", "onerror=\""] {
        assert!(!body.contains(bad), "{bad} reached the page: {body}");
    }
    assert!(body.contains("&lt;b onmouseover"), "the display name is text: {body}");
    assert!(body.contains("<details class=\"sensitive\"><summary>Sensitive media (1)</summary>"), "{body}");
    assert!(body.contains(&format!("id=\"{}\"", dashboard::render::dom_id(&created("s", "a@example.org", 1, "").key))), "{body}");
    assert!(body.contains("data-after=\"0:2\""), "the feed resumes after what the page shows: {body}");
    for (name, _) in dashboard::charts::CHARTS {
        assert!(body.contains(&format!("src=\"/dashboard/chart/{name}.svg\"")), "{name}: {body}");
    }
    assert!(body.contains("<option value=\"eve@example.org\">"), "{body}");

    let (code, svg) = get(&app, "/dashboard/chart/hours.svg", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(svg.starts_with("<svg role=\"img\" aria-label=\"Posts by hour of day (UTC): 2 in all"), "{svg}");
    let (code, svg) = get(&app, "/dashboard/chart/languages.svg?account=a@example.org", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(svg.contains("Languages, @a@example.org: 1 in all"), "{svg}");
    assert_eq!(get(&app, "/dashboard/chart/nope.svg", None).await.0, StatusCode::NOT_FOUND);
    let (code, js) = get(&app, "/dashboard/app.js", None).await;
    assert!(code == StatusCode::OK && js.contains("EventSource"), "{js}");
    assert_eq!(get(&app, "/dashboard/app.css", None).await.0, StatusCode::OK);

    let report = Request::builder().method("POST").uri("/csp-report").body(Body::from("{\"csp-report\":{}}")).unwrap();
    assert_eq!(app.clone().oneshot(report).await.unwrap().status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_html_feed_sends_sanitised_articles_and_resumes_after_a_position() {
    use fedistream_core::{AppendBatch, Event, EventKind};
    let (_d, log) = log();
    let app = router(state(log.clone(), &[]));
    let mut edited = created("s", "a@example.org", 1, "edited");
    edited.kind = EventKind::Updated;
    let deleted = Event { kind: EventKind::Deleted, post: None, ..created("s", "a@example.org", 1, "") };
    let evs = vec![created("s", "a@example.org", 1, "one"), hostile(2), edited, deleted];
    log.append(AppendBatch { events: fedistream_core::event::encode_all(evs), state: vec![] }).await.unwrap();
    let resp = app.clone().oneshot(Request::builder().uri("/api/events?format=html&after=0:1").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (got, _keep_open) = sse_events(resp.into_body(), 3).await;
    assert_eq!(
        got.iter().map(|g| (g.0.as_str(), g.1.as_str())).collect::<Vec<_>>(),
        vec![("0:2", "post"), ("0:3", "post"), ("0:4", "post")]
    );
    let data: Vec<serde_json::Value> = got.iter().map(|g| serde_json::from_str(&g.2).unwrap()).collect();
    let html = data[0]["html"].as_str().unwrap();
    assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("javascript:") && html.contains("<p>hi"), "{html}");
    let id = dashboard::render::dom_id(&created("s", "a@example.org", 1, "").key);
    assert_eq!((data[1]["id"].as_str(), data[1]["kind"].as_str()), (Some(id.as_str()), Some("updated")));
    assert_eq!(
        (data[2]["id"].as_str(), data[2]["kind"].as_str(), &data[2]["html"]),
        (Some(id.as_str()), Some("deleted"), &serde_json::Value::Null)
    );
    assert_eq!(get(&app, "/api/events?format=xml", None).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn with_an_account_stats_processor_the_charts_add_up_its_windows() {
    use fedistream_process::stats::{AccountStatsConfig, AccountStatsProcessor};
    let (d, log) = log();
    let cfg = AccountStatsConfig::default();
    let evs: Vec<_> = (1..=6).map(|n| created("s", if n % 3 == 0 { "b@example.org" } else { "a@example.org" }, n, "x")).collect();
    let p = Pipeline {
        log: log.clone(),
        sources: vec![SourceSpec::new(
            "s",
            Box::new(VecSource {
                batches: vec![fedistream_core::component::SourceBatch { events: fedistream_core::event::encode_all(evs), state: vec![] }],
            }),
            DeadLetter::new(d.path().join("src.jsonl")),
        )],
        processors: vec![runtime::ProcessorSpec {
            name: "activity".into(),
            group: "proc.activity".into(),
            input: fedistream_core::log::EVENTS.into(),
            processor: Box::new(AccountStatsProcessor::new("activity", &cfg, "activity").unwrap()),
            batch: BatchConfig { max_records: 100, max_bytes: 1 << 20, linger: Duration::ZERO },
            retry: RetryConfig::default(),
            dead_letter: DeadLetter::new(d.path().join("proc.jsonl")),
        }],
        channels: vec![],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let summary = runtime::run(p, tokio_util::sync::CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let mut st = state(log.clone(), &[]);
    st.dashboard = Some(Arc::new(dashboard::data::Data::new(log.clone(), Some(("activity".into(), cfg)))));
    let app = router(st);
    let (code, page) = get(&app, "/", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(page.contains("6 posts, from the account_stats processor `activity`"), "{page}");
    assert!(page.contains("<option value=\"a@example.org\">@a@example.org (4)</option>"), "{page}");
    let (code, svg) = get(&app, "/dashboard/chart/weekdays.svg?account=b@example.org", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(svg.contains("aria-label=\"Posts by weekday, @b@example.org (UTC): 2 in all"), "{svg}");
}
