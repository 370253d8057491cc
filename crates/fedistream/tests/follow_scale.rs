//! `fedistream bench follow-scale` at a reduced size, as a test: 500 accounts
//! on 10 fake servers (in a child process), three of them with a reader
//! stream, two timeline sources, posts for 20 s. It
//! asserts what must hold at any size — every post delivered exactly once, no
//! server asked beyond its limit, no 429 — not a timing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_scale_delivers_every_post_once_within_every_limit() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "follow-scale",
        "--servers",
        "10",
        "--accounts",
        "500",
        "--timelines",
        "2",
        "--streamed",
        "3",
        "--rate",
        "10",
        "--duration",
        "20s",
        "--limit",
        "300",
        "--window",
        "30s",
    ];
    let p = Spawn::new(dir.path(), "bench", &args).start();
    let s = p.wait_exit(Duration::from_secs(300)).await;
    assert!(s.success(), "exit status {s}; stderr:\n{}\nstdout:\n{}", p.stderr(), p.stdout());
    let out = p.stdout();
    let line = out.lines().find_map(|l| l.strip_prefix("result ")).unwrap_or_else(|| panic!("no result line:\n{out}"));
    let r: Value = serde_json::from_str(line).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert!(n("created") >= 150, "{r}");
    assert_eq!((n("delivered"), n("twice"), n("missing")), (n("created"), 0, 0), "every post once: {out}");
    assert_eq!(n("throttled"), 0, "no 429: {out}");
    assert!(n("max_per_window") <= n("limit"), "within every server's limit: {out}");
}
