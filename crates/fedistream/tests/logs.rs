//! What fedistream writes to its log (stderr), as an operator reads it from a
//! file: no colour codes unless on a terminal, an HTML error page as one short
//! line with its content type (never chunk framing), and network failures
//! named for what they are (refused connection, unknown host).

mod common;

use common::*;
use fedistream_connectors::testing::NewStatus;

const VAR: &str = "FEDISTREAM_TEST_READER_TOKEN";
const TOKEN: &str = "reader-token-logs";

/// Stderr is a file here, and `NO_COLOR` is unset: no ANSI escape codes.
#[test]
fn no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[log]\npath = {}\n[sources.r]\ntype = \"replay\"\npath = {}\n[channels.out]\ntype = \"file\"\npath = {}\n",
        toml_path(&dir.path().join("log.db")),
        toml_path(&repo_root().join("examples/data/sample-posts.jsonl")),
        toml_path(&dir.path().join("out.jsonl")),
    );
    let cfg = write_file(dir.path(), "c.toml", &text);
    let p = Spawn::new(dir.path(), "run", &["run", "--no-progress", "--config", cfg.to_str().unwrap()]).env_remove("NO_COLOR").start();
    let s = p.wait_exit_blocking(DEADLINE);
    assert!(s.success(), "{}", p.stderr());
    let err = p.stderr();
    assert!(err.contains("INFO"), "it logged: {err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a log file: {err:?}");
}

/// A server restarting behind a proxy answers 503 with a (chunked) HTML page,
/// to REST and to the WebSocket upgrade: one short line each, with the status
/// and content type; the page itself and its chunk framing stay out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_error_page_is_one_short_line_with_its_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], Some(TOKEN)).await;
    let base = fake.base_url();
    let args = [
        "follow",
        "@alice@fake.example",
        "--instance",
        &base,
        "--token-env",
        VAR,
        "--backfill",
        "none",
        "--format",
        "jsonl",
        "--poll-interval",
        "1s",
    ];
    let p = Spawn::new(dir.path(), "follow", &args).env(VAR, TOKEN).start();
    assert!(fake.wait_for_open_streams(1, DEADLINE).await, "stream connected; stderr:\n{}", p.stderr());
    // The first catch-up is done: a post made from now on is new.
    wait_for(
        "the first catch-up",
        || fake.requests().iter().any(|r| r.path.ends_with("/statuses") && r.status == 200).then_some(()),
        || p.stderr(),
    )
    .await;
    fake.set_restarting(Some(120));
    let line = wait_for(
        "a failed reconnect",
        || p.stderr().lines().find(|l| l.contains("Stream connect failed") && l.contains("503")).map(str::to_string),
        || p.stderr(),
    )
    .await;
    fake.set_restarting(None);
    let posted = fake.post("alice", NewStatus::html("<p>back</p>"));
    wait_for("the post after the restart", || p.stdout().contains(&posted.uri).then_some(()), || p.stderr()).await;
    p.sigterm();
    p.wait_exit(DEADLINE).await;
    assert!(line.contains("HTTP 503: (text/html) <!DOCTYPE html> <html>"), "{line}");
    assert!(line.len() < 600, "{} characters: {line}", line.len());
    let err = p.stderr();
    // A restart is not a rate limit (item 4 of issue 12).
    assert!(err.contains("Server unavailable (it asked to retry after 120 s)"), "{err}");
    assert!(!err.contains("Rate limited by the server"), "{err}");
    for l in err.lines() {
        let t = l.trim();
        assert!(!t.starts_with('<'), "a line of the page on its own: {l:?}\n{err}");
        assert!(!(t.len() <= 8 && !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit())), "chunk framing: {l:?}\n{err}");
        assert!(!t.contains("padding so that the page"), "the whole page: {l}");
    }
}

/// Nothing listens at the address: the log says so, not "WebSocket upgrade failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let base = format!("http://{closed}");
    let args = ["follow", "@alice@fake.example", "--instance", &base, "--token-env", VAR];
    let p = Spawn::new(dir.path(), "follow", &args).env(VAR, TOKEN).start();
    let line = wait_for(
        "a failed stream connect",
        || p.stderr().lines().find(|l| l.contains("Stream connect failed")).map(str::to_string),
        || p.stderr(),
    )
    .await;
    p.sigterm();
    p.wait_exit(DEADLINE).await;
    assert!(line.contains(&format!("connection refused: nothing listens at {closed}")), "{line}");
    assert!(!p.stderr().contains("WebSocket upgrade failed"), "{}", p.stderr());
}

/// An unknown host name: the log names the DNS failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_is_named_as_a_dns_failure() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["follow", "@alice@nothing.invalid", "--token-env", VAR];
    let p = Spawn::new(dir.path(), "follow", &args).env(VAR, TOKEN).start();
    let line = wait_for(
        "a failed stream connect",
        || p.stderr().lines().find(|l| l.contains("Stream connect failed")).map(str::to_string),
        || p.stderr(),
    )
    .await;
    p.sigterm();
    p.wait_exit(DEADLINE).await;
    assert!(line.contains("cannot resolve the host name of nothing.invalid"), "{line}");
    assert!(!p.stderr().contains("WebSocket upgrade failed"), "{}", p.stderr());
}
