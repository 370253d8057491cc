//! The reader token never leaves the process: not on stderr at any log level
//! (`trace` included, dependencies' logging too), not on stdout, not in the
//! output, dead-letter or log files, through REST, streaming over WebSocket and
//! over SSE, reconnects, malformed events, server errors and a revoked token.

mod common;

use std::path::Path;

use common::*;
use fedistream_connectors::testing::NewStatus;

const TOKEN: &str = "tok-7f3a9c1e-SECRET-d0-n0t-l3ak";
const VAR: &str = "FEDISTREAM_TEST_READER_TOKEN";

/// Every file under `dir`, recursively, with its bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn assert_no_token_under(dir: &Path) -> usize {
    let files = files_under(dir);
    for (p, bytes) in &files {
        let hit = bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes());
        assert!(!hit, "the token leaked into {}", p.display());
    }
    files.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_token_appears_in_no_output_log_or_file_over_websocket_at_trace() {
    the_reader_token_appears_nowhere("websocket", "trace").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_token_appears_in_no_output_log_or_file_over_sse_at_trace() {
    the_reader_token_appears_nowhere("sse", "trace").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_token_appears_in_no_output_log_or_file_at_debug() {
    the_reader_token_appears_nowhere("auto", "debug").await;
}

/// REST (the reader's token serves REST on its own server), then the stream
/// over `transport`, at log level `level`.
async fn the_reader_token_appears_nowhere(transport: &str, level: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], Some(TOKEN)).await;
    let first = fake.post("alice", NewStatus::html("<p>before</p>"));
    let text = format!(
        r#"[log]
path = {log}

[connections.mastodon.reader]
instance = {instance}
token_env = "{VAR}"

[sources.m]
type = "mastodon"
accounts = ["alice@fake.example"]
instance = {instance}
connection = "reader"
stream = "{transport}"
backfill = "last:5"
poll_interval = "1s"
max_poll_interval = "1s"
reconnect_initial = "50ms"
reconnect_max = "200ms"

[channels.out]
type = "file"
path = {out}

[channels.screen]
type = "stdout"
format = "jsonl"
"#,
        log = toml_path(&dir.path().join("log.db")),
        instance = toml_str(fake.base_url()),
        out = toml_path(&dir.path().join("out.jsonl")),
    );
    let cfg = write_file(dir.path(), "c.toml", &text);
    let out = dir.path().join("out.jsonl");
    let has = |uri: &str| complete_lines(&out).iter().any(|l| l.contains(uri));

    let p = Spawn::new(dir.path(), "run", &["--log-level", level, "run", "--no-progress", "--config", cfg.to_str().unwrap()])
        .env(VAR, TOKEN)
        .start();
    wait_for("the backfilled post", || has(&first.uri).then_some(()), || p.stderr()).await;
    assert!(fake.wait_for_open_streams(1, DEADLINE).await, "stream connected; stderr:\n{}", p.stderr());
    let streamed = fake.post("alice", NewStatus::html("<p>streamed</p>"));
    wait_for("the streamed post", || has(&streamed.uri).then_some(()), || p.stderr()).await;

    // A malformed event goes to the source's dead-letter file.
    fake.inject_stream_raw("event: update\ndata: {\"id\": \"1\", not json\n\n");
    let dl = dir.path().join("dead-letter/source-m.jsonl");
    wait_for("a dead-letter entry", || (!complete_lines(&dl).is_empty()).then_some(()), || p.stderr()).await;

    // Reconnects and server errors get logged.
    let connects = fake.stream_connects();
    fake.fail_next(502, 2);
    fake.drop_streams();
    assert!(fake.wait_for_stream_connects(connects + 1, DEADLINE).await, "reconnected; stderr:\n{}", p.stderr());
    let after = fake.post("alice", NewStatus::html("<p>after the reconnect</p>"));
    wait_for("the post after the reconnect", || has(&after.uri).then_some(()), || p.stderr()).await;

    // A revoked token: 401s, error logs (the source then stops, and with it the
    // run; whether it exits 0 is not this test's concern).
    fake.revoke_token();
    wait_for("a 401", || fake.requests().iter().any(|r| r.status == 401).then_some(()), || p.stderr()).await;
    if p.exited().is_none() {
        // Not reaped yet, so the pid cannot have been reused even if it just exited.
        p.sigterm();
    }
    p.wait_exit(DEADLINE).await;

    let (stdout, stderr) = (p.stdout(), p.stderr());
    assert!(stderr.contains(&level.to_uppercase()), "{level} logging was on:\n{stderr}");
    // The REST reads went out with the token, and the stream used the transport asked for.
    let reqs = fake.requests();
    assert!(reqs.iter().any(|r| r.authorized && r.path.ends_with("/statuses")), "REST with the token");
    let (stream_path, opened) = if transport == "sse" { ("/api/v1/streaming/user", 200) } else { ("/api/v1/streaming", 101) };
    assert!(reqs.iter().any(|r| r.path == stream_path && r.status == opened && r.authorized), "streamed over {transport}");
    assert!(stdout.contains(&streamed.uri), "the stdout channel printed the posts");
    assert!(fake.requests().iter().any(|r| r.authorized), "the token was used");
    assert!(!stdout.contains(TOKEN), "the token leaked to stdout");
    assert!(
        !stderr.contains(TOKEN),
        "the token leaked to stderr:\n{}",
        stderr.lines().filter(|l| l.contains(TOKEN)).collect::<Vec<_>>().join("\n")
    );
    // stdout/stderr captures, out.jsonl, dead-letter/, the log database.
    let n = assert_no_token_under(dir.path());
    assert!(n >= 5, "checked {n} files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_with_a_token_does_not_print_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], Some(TOKEN)).await;
    let base = fake.base_url();
    let data = dir.path().join("state");
    let args = [
        "--log-level",
        "debug",
        "follow",
        "@alice@fake.example",
        "--instance",
        &base,
        "--token-env",
        VAR,
        "--format",
        "jsonl",
        "--backfill",
        "none",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let p = Spawn::new(dir.path(), "follow", &args).env(VAR, TOKEN).start();
    assert!(fake.wait_for_open_streams(1, DEADLINE).await, "stream connected; stderr:\n{}", p.stderr());
    let a = fake.post("alice", NewStatus::html("<p>live</p>"));
    wait_for("the post", || p.stdout().contains(&a.uri).then_some(()), || p.stderr()).await;
    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "{s}\n{}", p.stderr());
    assert_no_token_under(dir.path());
}
