//! `fedistream follow`: no config, JSON lines on stdout, the newest N posts
//! first, then live ones; SIGTERM ends it cleanly; a bad handle is exit 2.

mod common;

use common::*;
use fedistream_connectors::testing::NewStatus;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_the_newest_posts_then_live_ones_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    let posts: Vec<_> = (0..6)
        .map(|i| fake.post("alice", NewStatus::html(format!("<p>post {i}</p>"))))
        .collect();
    let data = dir.path().join("state");
    let base = fake.base_url();
    let args = [
        "follow",
        "@alice@fake.example",
        "--instance",
        &base,
        "--format",
        "jsonl",
        "--backfill",
        "last:3",
        "--poll-interval",
        "1s",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let p = Spawn::new(dir.path(), "follow", &args).start();
    let keys = |p: &Proc| -> Vec<String> {
        p.stdout()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
                    ["key"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let first = wait_for(
        "the 3 newest posts",
        || {
            p.assert_running();
            let k = keys(&p);
            (k.len() >= 3).then_some(k)
        },
        || p.stderr(),
    )
    .await;
    let newest: Vec<String> = posts[3..].iter().map(|p| p.uri.clone()).collect();
    assert_eq!(first, newest, "the newest three, oldest first");

    let live = fake.post("alice", NewStatus::html("<p>live</p>"));
    wait_for(
        "the live post",
        || keys(&p).contains(&live.uri).then_some(()),
        || p.stderr(),
    )
    .await;
    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "exit status {s}; stderr:\n{}", p.stderr());
    let all = keys(&p);
    assert_eq!(all.len(), 4, "nothing twice, nothing older: {all:#?}");
    assert_eq!(all[3], live.uri);
    let line: Value = serde_json::from_str(p.stdout().lines().last().unwrap()).unwrap();
    assert_eq!(
        (line["kind"].as_str(), line["account"].as_str()),
        (Some("created"), Some("alice@fake.example")),
        "{line:#}"
    );
    assert!(p.stderr().contains("fedistream: summary"), "{}", p.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_without_a_data_dir_cleans_up_after_itself() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    let a = fake.post("alice", NewStatus::html("<p>one</p>"));
    let base = fake.base_url();
    // TMPDIR points the default state directory into the test's directory.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let p = Spawn::new(
        dir.path(),
        "follow",
        &[
            "follow",
            "alice@fake.example",
            "--instance",
            &base,
            "--format",
            "jsonl",
            "--backfill",
            "last:1",
        ],
    )
    .env("TMPDIR", tmp.to_str().unwrap())
    .start();
    wait_for(
        "the post",
        || p.stdout().contains(&a.uri).then_some(()),
        || p.stderr(),
    )
    .await;
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "a state directory while running"
    );
    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "exit status {s}; stderr:\n{}", p.stderr());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the temporary state is removed"
    );
}

#[test]
fn follow_refuses_a_handle_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let (s, out, err) = run_to_end(dir.path(), "follow", &["follow", "alice"]);
    assert_eq!(s.code(), Some(2), "stderr:\n{err}");
    assert!(
        err.contains("`alice` is not an account handle"),
        "names it: {err}"
    );
    assert!(out.is_empty(), "{out}");
}
