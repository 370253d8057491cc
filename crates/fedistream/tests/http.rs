//! The HTTP server of `fedistream run` over a real socket: health, readiness,
//! the bearer token, metrics and status while a replay is being delivered.

// Needs the build's features: the HTTP server.
#![cfg(feature = "http")]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET; the status code and body.
async fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_metrics_and_status_behind_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = std::fs::read_to_string(repo_root().join("examples/data/sample-posts.jsonl")).unwrap();
    let input = write_file(d, "in.jsonl", &sample.lines().take(40).map(|l| format!("{l}\n")).collect::<String>());
    // A slow replay keeps the process running while the test looks at it.
    let cfg = format!(
        "[log]\npath = {}\n\n[sources.r]\ntype = \"replay\"\npath = {}\nrate = 4\n\n[channels.f]\ntype = \"file\"\npath = {}\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"E2E_HTTP_TOKEN\"\n",
        toml_path(&d.join("log.db")),
        toml_path(&input),
        toml_path(&d.join("f.jsonl")),
    );
    let cfg = write_file(d, "pipeline.toml", &cfg);
    let p = Spawn::new(d, "run", &["run", "--config", cfg.to_str().unwrap()]).env("E2E_HTTP_TOKEN", "tok-123").start();
    let addr = http_address(&p).await;

    assert_eq!(get(&addr, "/healthz", None).await.0, 200);
    assert_eq!(get(&addr, "/metrics", None).await.0, 401, "the token is required");
    assert_eq!(get(&addr, "/api/status", Some("nope")).await.0, 401);
    // Ready once every component has reported (the runtime writes its status every 2 s).
    let mut last = String::new();
    for _ in 0..1000 {
        let (code, body) = get(&addr, "/readyz", None).await;
        if code == 200 {
            last.clear();
            break;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last.is_empty(), "never ready: {last}\n{}", p.stderr());
    // Once the replay's first events are appended.
    let mut metrics = String::new();
    for _ in 0..1000 {
        let (code, body) = get(&addr, "/metrics", Some("tok-123")).await;
        assert_eq!(code, 200);
        metrics = body;
        if metrics.contains("fedistream_events_appended_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for family in
        ["fedistream_events_appended_total", "fedistream_log_append_seconds", "fedistream_component_ready", "fedistream_channel_lag_events"]
    {
        assert!(metrics.contains(&format!("# TYPE {family} ")), "{family}:\n{metrics}");
    }
    let (code, status) = get(&addr, "/api/status", Some("tok-123")).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let keys: Vec<&str> = v["components"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"source:r") && keys.contains(&"channel:f"), "{status}");

    // The event feed from the start of the log: the first post, resumable by its id.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer tok-123\r\nLast-Event-ID: 0:0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    while !seen.contains("id: 0:1\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("an event").unwrap();
        assert!(n > 0, "the feed ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("text/event-stream") && seen.contains("event: created"), "{seen}");
    drop(s);

    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "{s}\n{}", p.stderr());
    assert!(!p.stderr().contains("tok-123"), "the token is never logged");
}
