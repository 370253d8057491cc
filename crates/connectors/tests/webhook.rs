//! The webhook channel through the runtime (SQLite log, a finite source)
//! against a real local HTTP receiver (axum on 127.0.0.1:0) that scripts its
//! answers and records what it got and when.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fedistream_connectors::webhook::render::{discord, len16, slack};
use fedistream_connectors::webhook::{WebhookFormat, WebhookSink, WebhookSinkConfig, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
use fedistream_core::component::SourceBatch;
use fedistream_core::post::Media;
use fedistream_core::runtime::{self, BatchConfig, ChannelSpec, Pipeline, RetryConfig, RunSummary, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::testing::{created, post, VecSource};
use fedistream_core::{DeadLetter, Event};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    key: String,
    signature: Option<String>,
    body: Bytes,
    /// What the receiver answered.
    status: u16,
}

/// A scripted answer: status, headers, body.
type Reply = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
struct Inner {
    got: Vec<Got>,
    script: VecDeque<Reply>,
    /// Answer this slowly (so requests overlap).
    delay: Duration,
    in_flight: usize,
    most_in_flight: usize,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Inner>>);

impl Receiver {
    fn script(&self, replies: Vec<Reply>) {
        self.0.lock().unwrap().script.extend(replies);
    }
    fn got(&self) -> Vec<Got> {
        self.0.lock().unwrap().got.clone()
    }
    /// The bodies accepted (2xx), once per idempotency key, as the receiver
    /// would keep them; and how often a key was accepted.
    fn accepted(&self) -> (Vec<Value>, HashMap<String, usize>) {
        let mut seen = HashMap::new();
        let mut bodies = Vec::new();
        for g in self.got().into_iter().filter(|g| g.status < 300) {
            let n = seen.entry(g.key.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                bodies.push(serde_json::from_slice(&g.body).unwrap());
            }
        }
        (bodies, seen)
    }
}

async fn handle(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let delay = {
        let mut i = r.0.lock().unwrap();
        i.in_flight += 1;
        i.most_in_flight = i.most_in_flight.max(i.in_flight);
        i.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut i = r.0.lock().unwrap();
    i.in_flight -= 1;
    let (status, hs, text) = i.script.pop_front().unwrap_or((200, vec![], String::new()));
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    i.got.push(Got { at: Instant::now(), key: h(IDEMPOTENCY_HEADER).unwrap_or_default(), signature: h(SIGNATURE_HEADER), body, status });
    let mut resp = (StatusCode::from_u16(status).unwrap(), text).into_response();
    for (k, v) in hs {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// A receiver on a free loopback port; its URL.
async fn receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(handle)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, format!("http://{addr}/hook"))
}

fn config(url: &str) -> WebhookSinkConfig {
    let mut c = WebhookSinkConfig::new(url);
    c.delivery.retry_initial = Duration::from_millis(5);
    c.delivery.retry_max = Duration::from_millis(40);
    c.delivery.pause = Duration::from_millis(50);
    c
}

/// Deliver `events` through a webhook channel with `cfg`; the run's summary
/// and the dead-letter file's lines.
async fn run(cfg: WebhookSinkConfig, events: Vec<Event>) -> (RunSummary, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let dl = dir.path().join("dl.jsonl");
    let retry = RetryConfig { initial: Duration::from_millis(5), max: Duration::from_millis(40), pause: Duration::from_millis(50) };
    let channel = ChannelSpec {
        name: "hook".into(),
        group: "g.hook".into(),
        topic: fedistream_core::log::EVENTS.into(),
        sink: Box::new(WebhookSink::new(cfg).expect("valid config")),
        route: None,
        batch: BatchConfig { max_records: 50, max_bytes: 4 << 20, linger: Duration::ZERO },
        retry,
        dead_letter: DeadLetter::new(&dl),
    };
    // Several source batches, so the channel gets several writes.
    let batches = events.chunks(7).map(|c| SourceBatch { events: fedistream_core::event::encode_all(c.to_vec()), state: vec![] }).collect();
    let p = Pipeline {
        log,
        sources: vec![SourceSpec::new("src", Box::new(VecSource { batches }), DeadLetter::new(dir.path().join("src-dl.jsonl")))],
        processors: vec![],
        channels: vec![channel],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let summary =
        tokio::time::timeout(Duration::from_secs(60), runtime::run(p, CancellationToken::new())).await.expect("the run ends").unwrap();
    let dead = std::fs::read_to_string(&dl).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (summary, dead)
}

fn events(accounts: usize, per_account: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for n in 1..=per_account {
        for a in 0..accounts {
            out.push(created("src", &format!("user{a}@example.org"), n * 100 + a as u64, &format!("post {n}")));
        }
    }
    out
}

fn counter(s: &RunSummary, name: &str) -> u64 {
    s.channels[0].counters.get(name).copied().unwrap_or(0)
}

fn rust_verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let (t, v1) = parse_signature(header);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    want == v1
}

fn parse_signature(header: &str) -> (u64, String) {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse().ok(),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    (t.expect("t="), v1.expect("v1="))
}

/// The README's Python verification, run by a real Python (`FEDISTREAM_PYTHON`
/// or `python3`).
fn python_verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body");
    std::fs::write(&path, body).unwrap();
    let script = r#"
import hashlib, hmac, os, sys
header, path = sys.argv[1], sys.argv[2]
parts = dict(p.split("=", 1) for p in header.split(","))
body = open(path, "rb").read()
expected = hmac.new(os.environ["WEBHOOK_SECRET"].encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
sys.exit(0 if hmac.compare_digest(expected, parts["v1"]) else 1)
"#;
    let python = std::env::var("FEDISTREAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(header)
        .arg(&path)
        .env("WEBHOOK_SECRET", secret)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {python} (set FEDISTREAM_PYTHON): {e}"));
    status.success()
}

#[tokio::test]
async fn signatures_verify_in_python_and_rust_and_bodies_are_the_file_channels_lines() {
    let (r, url) = receiver().await;
    let var = "FEDISTREAM_TEST_WEBHOOK_SECRET_SIG";
    let secret = "s3cret with spaces? no: s3cret-☃";
    std::env::set_var(var, secret);
    let mut cfg = config(&url);
    cfg.secret_env = Some(var.into());
    let evs = events(2, 3);
    let (summary, dead) = run(cfg, evs.clone()).await;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(counter(&summary, "delivered"), 6);
    let got = r.got();
    assert_eq!(got.len(), 6);
    for g in &got {
        let sig = g.signature.as_deref().expect("signed");
        assert!(rust_verify(secret, sig, &g.body), "Rust verification of {sig}");
        assert!(python_verify(secret, sig, &g.body), "Python verification of {sig}");
        assert!(!rust_verify("another secret", sig, &g.body));
        let mut tampered = g.body.to_vec();
        tampered[10] ^= 1;
        assert!(!python_verify(secret, sig, &tampered), "a changed body fails");
        let (t, _) = parse_signature(sig);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(t <= now && now - t < 600, "t is the send time");
        // The body is the line the file channel writes.
        let v: Value = serde_json::from_slice(&g.body).unwrap();
        assert!(v["partition"].is_number() && v["offset"].is_number(), "{v}");
        assert_eq!(v["kind"], "created");
        assert_eq!(g.key.len(), 32, "an idempotency key");
    }
    let keys: Vec<&str> = got.iter().map(|g| g.key.as_str()).collect();
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "one key per event");
}

#[tokio::test]
async fn server_errors_are_retried_and_each_event_is_accepted_once() {
    let (r, url) = receiver().await;
    // The first three requests fail (500, 502, then a 503 without Retry-After).
    r.script(vec![(500, vec![], "boom".into()), (502, vec![], String::new()), (503, vec![], String::new())]);
    let evs = events(3, 4);
    let (summary, dead) = run(config(&url), evs.clone()).await;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(counter(&summary, "delivered"), 12);
    assert_eq!(counter(&summary, "retries"), 3);
    let got = r.got();
    assert_eq!(got.len(), 15, "12 events, 3 retried");
    let (bodies, accepted) = r.accepted();
    assert_eq!(accepted.len(), 12, "every event accepted");
    assert!(accepted.values().all(|&n| n == 1), "each exactly once: {accepted:?}");
    let mut keys: Vec<String> = bodies.iter().map(|b| b["key"].as_str().unwrap().to_string()).collect();
    keys.sort();
    let mut want: Vec<String> = evs.iter().map(|e| e.key.clone()).collect();
    want.sort();
    assert_eq!(keys, want);
    // A retried request carries the same key and body as the failed one.
    for failed in got.iter().filter(|g| g.status >= 500) {
        let ok = got.iter().find(|g| g.status == 200 && g.key == failed.key).expect("retried");
        assert_eq!(ok.body, failed.body);
    }
}

#[tokio::test]
async fn retry_after_holds_the_next_request_at_least_that_long() {
    let (r, url) = receiver().await;
    r.script(vec![(429, vec![("retry-after", "1".into())], "slow down".into())]);
    let (summary, dead) = run(config(&url), events(1, 2)).await;
    assert!(dead.is_empty());
    assert_eq!(counter(&summary, "delivered"), 2);
    let got = r.got();
    assert_eq!(got[0].status, 429);
    // Retry-After is a lower bound: the next request came no earlier.
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_secs(1), "{:?}", got[1].at.duration_since(got[0].at));
    assert_eq!(got[1].key, got[0].key, "the same event, retried first (per-account order)");
}

#[tokio::test]
async fn client_errors_are_dead_lettered_with_status_and_body_and_the_rest_goes_on() {
    let (r, url) = receiver().await;
    let long = format!("invalid payload: {}", "x".repeat(5000));
    r.script(vec![(422, vec![], long), (404, vec![], "no such hook".into())]);
    let evs = events(1, 5);
    let mut cfg = config(&url);
    cfg.delivery.max_in_flight = Some(1);
    let (summary, dead) = run(cfg, evs.clone()).await;
    assert_eq!(counter(&summary, "dead_lettered"), 2);
    assert_eq!(counter(&summary, "delivered"), 5, "delivered counts what is done with, dead letters included");
    assert_eq!(dead.len(), 2);
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with(&format!("HTTP 422 Unprocessable Entity from {}: invalid payload: xxx", &url[..url.len() - 5])), "{reason}");
    assert!(reason.len() < 700, "the body is cut: {}", reason.len());
    assert!(!reason.contains("/hook"), "no URL path in reasons (it may be a secret)");
    assert!(
        dead[1]["reason"].as_str().unwrap().contains("HTTP 404 Not Found") && dead[1]["reason"].as_str().unwrap().contains("no such hook")
    );
    let (_, accepted) = r.accepted();
    assert_eq!(accepted.len(), 3);
    assert_eq!(r.got().len(), 5, "refused requests are not retried");
}

#[tokio::test]
async fn many_requests_in_flight_keep_each_accounts_order() {
    let (r, url) = receiver().await;
    r.0.lock().unwrap().delay = Duration::from_millis(15);
    // Failures in between, so some requests are late.
    r.script(vec![(500, vec![], String::new()), (200, vec![], String::new()), (503, vec![], String::new())]);
    let evs = events(8, 12);
    let mut cfg = config(&url);
    cfg.delivery.max_in_flight = Some(16);
    let (summary, dead) = run(cfg, evs.clone()).await;
    assert!(dead.is_empty());
    assert_eq!(counter(&summary, "delivered"), 96);
    let (bodies, accepted) = r.accepted();
    assert_eq!(accepted.len(), 96);
    let mut last: HashMap<String, u64> = HashMap::new();
    for b in &bodies {
        let acct = b["account"].as_str().unwrap().to_string();
        let n: u64 = b["status_id"].as_str().unwrap().parse().unwrap();
        if let Some(&prev) = last.get(&acct) {
            assert!(n > prev, "{acct}: {n} arrived after {prev}");
        }
        last.insert(acct, n);
    }
    // Every request of an account is answered before the next one is sent.
    let got = r.got();
    for (i, g) in got.iter().enumerate() {
        let v: Value = serde_json::from_slice(&g.body).unwrap();
        for later in &got[i + 1..] {
            let w: Value = serde_json::from_slice(&later.body).unwrap();
            if w["account"] == v["account"] && w["key"] != v["key"] {
                let (n, m): (u64, u64) =
                    (v["status_id"].as_str().unwrap().parse().unwrap(), w["status_id"].as_str().unwrap().parse().unwrap());
                assert!(m > n || g.status >= 500, "order broken: {m} before {n}");
            }
        }
    }
    let most = r.0.lock().unwrap().most_in_flight;
    assert!(most > 1 && most <= 16, "requests overlapped, within the limit: {most}");
}

#[tokio::test]
async fn batches_are_json_arrays_with_one_key_per_batch() {
    let (r, url) = receiver().await;
    let mut cfg = config(&url);
    cfg.batch = Some(4);
    let evs = events(2, 5);
    let (summary, dead) = run(cfg, evs.clone()).await;
    assert!(dead.is_empty());
    assert_eq!(counter(&summary, "delivered"), 10);
    let got = r.got();
    let mut keys = Vec::new();
    for g in &got {
        let v: Value = serde_json::from_slice(&g.body).unwrap();
        let items = v.as_array().expect("an array");
        assert!(!items.is_empty() && items.len() <= 4);
        keys.extend(items.iter().map(|i| i["key"].as_str().unwrap().to_string()));
    }
    assert_eq!(keys, evs.iter().map(|e| e.key.clone()).collect::<Vec<_>>(), "every event once, in log order");
}

fn hostile_post(n: u64, cw: &str) -> Event {
    let mut p = post("alice@example.org", n, &format!("@everyone {} ||not a spoiler|| <b>x</b>", "long text ".repeat(700)));
    p.spoiler_text = cw.into();
    p.account.display_name = "Alice".repeat(40);
    p.media = (0..15)
        .map(|i| Media {
            kind: "image".into(),
            url: Some(format!("https://example.org/media/{i}.png")),
            preview_url: None,
            description: Some("a very long description ".repeat(200)),
        })
        .collect();
    Event::created("src", p)
}

fn s16(v: &Value) -> usize {
    v.as_str().map(len16).unwrap_or(0)
}

#[tokio::test]
async fn discord_messages_are_within_limits_and_rate_limits_are_honoured() {
    let (r, url) = receiver().await;
    r.script(vec![
        // Discord's 429: the wait in the JSON body (and a shorter header).
        (429, vec![("retry-after", "0".into())], r#"{"message":"You are being rate limited.","retry_after":0.6,"global":false}"#.into()),
        // A success that spends the bucket: the next request waits for the reset.
        (204, vec![("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset-after", "0.7".into())], String::new()),
    ]);
    let mut cfg = config(&url);
    cfg.format = WebhookFormat::Discord;
    let deleted = Event { kind: fedistream_core::EventKind::Deleted, post: None, ..created("src", "alice@example.org", 3, "x") };
    let evs = vec![hostile_post(1, ""), hostile_post(2, "spoilers for the finale"), deleted];
    let (summary, dead) = run(cfg, evs).await;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(counter(&summary, "skipped"), 1, "a deletion has no Discord message");
    let got = r.got();
    assert_eq!(got.len(), 3);
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_millis(600), "429 retry_after honoured");
    assert!(got[2].at.duration_since(got[1].at) >= Duration::from_millis(700), "X-RateLimit-Reset-After honoured");
    for g in &got[1..] {
        let m: Value = serde_json::from_slice(&g.body).unwrap();
        assert!(s16(&m["username"]) <= discord::USERNAME);
        assert!(s16(&m["content"]) <= discord::CONTENT);
        assert_eq!(m["allowed_mentions"]["parse"], serde_json::json!([]));
        let embeds = m["embeds"].as_array().unwrap();
        assert!(!embeds.is_empty() && embeds.len() <= discord::EMBEDS);
        let e = &embeds[0];
        assert!(s16(&e["title"]) <= discord::TITLE && s16(&e["description"]) <= discord::DESCRIPTION);
        assert!(s16(&e["author"]["name"]) <= discord::AUTHOR_NAME && s16(&e["footer"]["text"]) <= discord::FOOTER);
        assert!(s16(&e["title"]) + s16(&e["description"]) + s16(&e["author"]["name"]) + s16(&e["footer"]["text"]) <= discord::EMBED_TOTAL);
    }
    let plain: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(plain["embeds"][0]["image"]["url"], "https://example.org/media/0.png", "first image");
    let cw: Value = serde_json::from_slice(&got[2].body).unwrap();
    let content = cw["content"].as_str().unwrap();
    assert!(content.starts_with("**CW: spoilers for the finale**\n||@everyone"), "{content}");
    assert_eq!(content.matches("||").count(), 2, "the post's own bars cannot end the spoiler: {content}");
    assert!(cw["embeds"][0].get("image").is_none(), "no image shown for a post behind a warning");
}

#[tokio::test]
async fn slack_messages_are_within_limits() {
    let (r, url) = receiver().await;
    let mut cfg = config(&url);
    cfg.format = WebhookFormat::Slack;
    let (_, dead) = run(cfg, vec![hostile_post(1, ""), hostile_post(2, "spoilers")]).await;
    assert!(dead.is_empty());
    let got = r.got();
    assert_eq!(got.len(), 2);
    for g in &got {
        let m: Value = serde_json::from_slice(&g.body).unwrap();
        assert!(s16(&m["text"]) <= slack::TEXT);
        let blocks = m["blocks"].as_array().unwrap();
        assert!(blocks.len() <= slack::BLOCKS);
        for b in blocks {
            assert!(s16(&b["text"]["text"]) <= slack::SECTION_TEXT);
            assert!(s16(&b["alt_text"]) <= slack::ALT_TEXT && s16(&b["image_url"]) <= slack::IMAGE_URL);
            for e in b["elements"].as_array().into_iter().flatten() {
                assert!(s16(&e["text"]) <= slack::CONTEXT_TEXT);
            }
        }
        assert!(!m.to_string().contains("<b>"), "mrkdwn-escaped");
    }
    let hidden = got[1].body.clone();
    let hidden = String::from_utf8_lossy(&hidden);
    assert!(hidden.contains("CW: spoilers") && !hidden.contains("long text") && !hidden.contains("media/0.png"), "{hidden}");
}

#[tokio::test]
async fn refused_credentials_pause_and_retry_instead_of_dead_lettering() {
    let (r, url) = receiver().await;
    r.script(vec![(401, vec![], "bad signature".into()), (403, vec![], String::new())]);
    // The URL from the environment (Discord and Slack URLs are secrets).
    let var = "FEDISTREAM_TEST_WEBHOOK_URL_401";
    std::env::set_var(var, &url);
    let mut cfg = config("https://unused.invalid/");
    cfg.url = None;
    cfg.url_env = Some(var.into());
    let (summary, dead) = run(cfg, events(1, 3)).await;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(counter(&summary, "delivered"), 3);
    assert_eq!(counter(&summary, "retries"), 2);
    let got = r.got();
    assert_eq!(got.iter().map(|g| g.status).collect::<Vec<_>>(), vec![401, 403, 200, 200, 200]);
    assert!(got[..3].iter().all(|g| g.key == got[0].key), "the same request until it is accepted");
    assert!(got[2].at.duration_since(got[1].at) >= Duration::from_millis(50), "waited the channel's pause");
}

/// A post, a refresh of its counts (the engagement refresh: same version,
/// new counts observed later), a real edit, and a second refresh.
fn post_with_refreshes() -> Vec<Event> {
    use chrono::TimeZone;
    let original = created("src", "alice@example.org", 1, "hello");
    let refresh = |ev: &Event, replies: u64, minute: u32| {
        let mut r = ev.clone();
        r.kind = fedistream_core::EventKind::Updated;
        r.counts_refresh = true;
        let c = &mut r.post.as_mut().unwrap().counts;
        c.replies = replies;
        c.observed_at = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, minute, 0).unwrap();
        r
    };
    let first = refresh(&original, 3, 1);
    let mut edit = created("src", "alice@example.org", 1, "hello, edited");
    edit.kind = fedistream_core::EventKind::Updated;
    edit.post.as_mut().unwrap().edited_at = Some(chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 2, 0).unwrap());
    let second = refresh(&edit, 5, 3);
    vec![original, first, edit, second]
}

#[tokio::test]
async fn presets_post_no_message_for_a_refresh_of_the_counts() {
    for format in [WebhookFormat::Discord, WebhookFormat::Slack] {
        let (r, url) = receiver().await;
        let mut cfg = config(&url);
        cfg.format = format;
        let (summary, dead) = run(cfg, post_with_refreshes()).await;
        assert!(dead.is_empty(), "{dead:?}");
        assert_eq!(counter(&summary, "skipped"), 2, "{format:?}: both refreshes skipped, and counted");
        let got = r.got();
        assert_eq!(got.len(), 2, "{format:?}: the post and its edit only");
        let text: Vec<String> = got.iter().map(|g| String::from_utf8_lossy(&g.body).to_string()).collect();
        assert!(text[1].contains("hello, edited"), "{format:?}: {}", text[1]);
    }
}

#[tokio::test]
async fn successive_refreshes_of_one_version_get_their_own_keys_and_a_retry_keeps_its_key() {
    let (r, url) = receiver().await;
    let evs = post_with_refreshes();
    // The first refresh's first attempt fails.
    r.script(vec![(200, vec![], String::new()), (500, vec![], "boom".into())]);
    let refresh_of_the_edit = {
        let mut e = evs[3].clone();
        e.post.as_mut().unwrap().counts.replies = 8;
        e.post.as_mut().unwrap().counts.observed_at += chrono::Duration::minutes(5);
        e
    };
    let mut all = evs.clone();
    // Two refreshes of the edited version, one after the other.
    all.push(refresh_of_the_edit);
    let (summary, dead) = run(config(&url), all).await;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(counter(&summary, "delivered"), 5);
    let got = r.got();
    assert_eq!(got.len(), 6, "five events, one retried");
    let (bodies, accepted) = r.accepted();
    assert_eq!(accepted.len(), 5, "a receiver deduplicating on the key keeps every refresh: {accepted:?}");
    assert!(accepted.values().all(|&n| n == 1), "{accepted:?}");
    let replies: Vec<u64> = bodies.iter().map(|b| b["post"]["counts"]["replies"].as_u64().unwrap()).collect();
    assert_eq!(replies, vec![0, 3, 0, 5, 8]);
    assert_eq!(bodies.iter().filter(|b| b["counts_refresh"] == true).count(), 3, "refreshes say so");
    let failed = got.iter().find(|g| g.status == 500).unwrap();
    let retried = &got[got.iter().position(|g| g.status == 500).unwrap() + 1];
    assert_eq!((&retried.key, &retried.body), (&failed.key, &failed.body), "the retry is the same delivery");
}
