//! The webhook channel through the binary: `fedistream run` replays sample
//! posts into a file channel and a signed webhook channel whose receiver (a
//! local axum server) fails the first requests; the receiver ends up with the
//! file channel's lines, each accepted once.

// Needs the build's features: the webhook channel.
#![cfg(feature = "webhook")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;

/// (status answered, idempotency key, signature, body)
type Got = (u16, String, String, Bytes);

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
}

async fn handle(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut got = r.got.lock().unwrap();
    // The first two requests fail: the channel retries them.
    let status = if got.len() < 2 { 500 } else { 200 };
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    got.push((status, h("idempotency-key"), h("x-fedistream-signature"), body));
    StatusCode::from_u16(status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_delivers_replayed_posts_to_a_webhook_once_each() {
    let r = Receiver::default();
    let app = axum::Router::new().route("/in", axum::routing::post(handle)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = std::fs::read_to_string(repo_root().join("examples/data/sample-posts.jsonl")).unwrap();
    let input = write_file(d, "in.jsonl", &sample.lines().take(30).map(|l| format!("{l}\n")).collect::<String>());
    let cfg = format!(
        "[log]\npath = {}\n\n[sources.r]\ntype = \"replay\"\npath = {}\n\n[channels.f]\ntype = \"file\"\npath = {}\n\n\
         [channels.hook]\ntype = \"webhook\"\nurl = {}\nsecret_env = \"E2E_WEBHOOK_SECRET\"\n\
         [channels.hook.delivery]\nmax_in_flight = 8\nretry_initial = \"10ms\"\nretry_max = \"50ms\"\n",
        toml_path(&d.join("log.db")),
        toml_path(&input),
        toml_path(&d.join("f.jsonl")),
        toml_str(format!("http://{addr}/in")),
    );
    let cfg = write_file(d, "pipeline.toml", &cfg);
    let p = Spawn::new(d, "run", &["run", "--config", cfg.to_str().unwrap()]).env("E2E_WEBHOOK_SECRET", "e2e-secret").start();
    let status = p.wait_exit(DEADLINE).await;
    assert!(status.success(), "{status}\n{}", p.stderr());
    assert!(!p.stderr().contains("e2e-secret"), "the secret is never logged");

    let file = read_events(&d.join("f.jsonl"));
    assert!(file.len() > 10, "the sample has posts: {}", file.len());
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), file.len() + 2, "every event, two of them twice");
    let mut accepted: HashMap<String, serde_json::Value> = HashMap::new();
    for (status, key, sig, body) in &got {
        assert!(sig.starts_with("t=") && sig.contains(",v1="), "signed: {sig}");
        if *status == 200 {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert!(accepted.insert(key.clone(), v).is_none(), "accepted once per key");
        }
    }
    // The receiver holds the file channel's lines.
    let mut want: Vec<String> = file.iter().map(|v| v.to_string()).collect();
    let mut have: Vec<String> = accepted.values().map(|v| v.to_string()).collect();
    want.sort();
    have.sort();
    assert_eq!(have, want);
}
