//! The dashboard in a real browser: `fedistream run` follows accounts on the
//! fake Mastodon server over its stream and serves the dashboard, and
//! Debian's Chromium, driven by Playwright for Python
//! (tests/browser/dashboard.py), watches a post arrive, an edit replace it
//! and a delete remove it without a reload, checks that a hostile post runs
//! nothing and that the Content-Security-Policy blocks and reports an inline
//! script, sees the SVG charts, and takes a screenshot (its path is printed).
//! The server requires a token: the browser signs in through `/login` first.
//!
//! Needs `FEDISTREAM_CHROMIUM` (scripts/chromium prints it) and
//! `FEDISTREAM_PYTHON` with Playwright (scripts/python-deps); without them the
//! test runs those scripts itself (they install what is missing). It never skips.

// Needs the build's features: the HTTP server.
#![cfg(feature = "http")]

mod common;

use std::process::Stdio;

use common::*;
use fedistream_connectors::testing::{AccountOpts, NewStatus};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "dashboard-reader-token";
const VAR: &str = "E2E_DASHBOARD_TOKEN";
/// The HTTP server's token: the browser signs in at /login with it.
const HTTP_TOKEN: &str = "dashboard-http-token-5d1e";
const HTTP_VAR: &str = "E2E_DASHBOARD_HTTP_TOKEN";

/// `var`, else what `script` prints (it installs what is missing).
fn from_env_or_script(var: &str, script: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        if !v.trim().is_empty() {
            return v;
        }
    }
    let path = repo_root().join("scripts").join(script);
    let out = std::process::Command::new("bash").arg(&path).output().unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    assert!(out.status.success(), "{} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_posts_live_renders_charts_and_runs_no_hostile_content() {
    let chromium = from_env_or_script("FEDISTREAM_CHROMIUM", "chromium");
    let python = from_env_or_script("FEDISTREAM_PYTHON", "python-deps");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fake = start_fake(&["alice"], Some(TOKEN)).await;
    fake.add_account(
        "mallory",
        AccountOpts { display_name: Some("<img src=x onerror=\"window.__pwned='display name'\">Mallory".into()), ..Default::default() },
    );
    // Something for the charts from the start.
    fake.post("alice", NewStatus { tags: vec!["fediverse".into()], ..NewStatus::html("<p>an older post #fediverse</p>") });
    let cfg = format!(
        r#"[log]
path = {log}

[connections.mastodon.reader]
instance = {instance}
token_env = "{VAR}"

[sources.m]
type = "mastodon"
accounts = ["alice@fake.example", "mallory@fake.example"]
instance = {instance}
connection = "reader"
stream = "websocket"
backfill = "last:5"
poll_interval = "1s"
max_poll_interval = "1s"
reconnect_initial = "50ms"
reconnect_max = "200ms"

[channels.out]
type = "file"
path = {out}

[http]
listen = "127.0.0.1:0"
token_env = "{HTTP_VAR}"
"#,
        log = toml_path(&d.join("log.db")),
        instance = toml_str(fake.base_url()),
        out = toml_path(&d.join("out.jsonl")),
    );
    let cfg = write_file(d, "pipeline.toml", &cfg);
    let p = Spawn::new(d, "run", &["run", "--no-progress", "--config", cfg.to_str().unwrap()])
        .env(VAR, TOKEN)
        .env(HTTP_VAR, HTTP_TOKEN)
        .start();
    let addr = http_address(&p).await;
    assert!(fake.wait_for_open_streams(1, DEADLINE).await, "stream connected; stderr:\n{}", p.stderr());
    let out = d.join("out.jsonl");
    wait_for("the backfilled post", || (!complete_lines(&out).is_empty()).then_some(()), || p.stderr()).await;

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let script = repo_root().join("crates/fedistream/tests/browser/dashboard.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(format!("http://{addr}"))
        .arg(&chromium)
        .arg(&shot)
        .env("DASHBOARD_TOKEN", HTTP_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let mut steps = Vec::new();
    let mut posted = None;
    let done = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(120), lines.next_line()).await;
        let Ok(Ok(Some(line))) = line else {
            let mut err = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
            panic!("the browser script stopped after {steps:?}:\n{err}\nfedistream:\n{}", p.stderr());
        };
        match line.as_str() {
            "loaded" => posted = Some(fake.post("alice", NewStatus::html("<p>first version</p>"))),
            "seen-post" => assert!(fake.edit(&posted.as_ref().unwrap().id, "<p>second version</p>")),
            "seen-edit" => assert!(fake.delete(&posted.as_ref().unwrap().id)),
            "seen-delete" => {
                fake.post("mallory", hostile_status());
            }
            l if l.starts_with("done ") => break l.to_string(),
            other => panic!("unexpected line from the browser script: {other}"),
        }
        steps.push(line.clone());
        stdin.write_all(b"ok\n").await.unwrap();
        stdin.flush().await.unwrap();
    };
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status}: {done}");
    assert_eq!(steps, ["loaded", "seen-post", "seen-edit", "seen-delete"]);
    let meta = std::fs::metadata(&shot).expect("the screenshot");
    assert!(meta.len() > 10_000, "a screenshot of {} bytes", meta.len());
    println!("dashboard screenshot: {}", shot.display());

    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "{s}\n{}", p.stderr());
}

/// A post whose every field tries to run `window.__pwned = …`: script tags,
/// event handlers, `javascript:` and `data:` links, SVG, CSS injection, an
/// iframe and a form, in the content, the content warning and the media
/// descriptions (the account's display name tries too).
fn hostile_status() -> NewStatus {
    let content = r#"<p>hostile marker <script>window.__pwned='script'</script>
<img src="x" onerror="window.__pwned='img'">
<a href="javascript:window.__pwned='js-link'">a javascript link</a>
<a href="data:text/html;base64,PHNjcmlwdD53aW5kb3cuX19wd25lZD0xPC9zY3JpcHQ+">a data link</a>
<a href="https://example.org/ok" onclick="window.__pwned='onclick'" onmouseover="window.__pwned='hover'">a real link</a>
<svg onload="window.__pwned='svg'"><script>window.__pwned='svg-script'</script></svg>
<style>body { background: url("javascript:window.__pwned='css'") } #feed { display: none }</style>
<span style="position:fixed;top:0;left:0;width:100%;height:100%" onmouseover="window.__pwned='overlay'">overlay</span>
<iframe src="javascript:window.__pwned='iframe'"></iframe>
<form action="javascript:window.__pwned='form'"><button>go</button></form>
<details open ontoggle="window.__pwned='toggle'"><summary>x</summary></details></p>"#;
    NewStatus {
        spoiler_text: "<img src=x onerror=\"window.__pwned='cw'\">CW".into(),
        sensitive: true,
        media: vec![("image".into(), Some("<img src=x onerror=\"window.__pwned='alt'\">".into()))],
        tags: vec!["<script>".into()],
        ..NewStatus::html(content)
    }
}
