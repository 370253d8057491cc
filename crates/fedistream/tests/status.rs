//! `fedistream status` beside a running pipeline and after it stopped: every
//! source and channel, offsets, lag 0 once drained; `--json` for machines.

mod common;

use common::*;
use fedistream_connectors::testing::NewStatus;
use serde_json::Value;

fn status(dir: &std::path::Path, cfg: &str, json: bool) -> String {
    let mut args = vec!["status", "--config", cfg];
    if json {
        args.push("--json");
    }
    let (s, out, err) = run_to_end(dir, "status", &args);
    assert!(s.success(), "status exited with {s}; stderr:\n{err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_sources_checkpoints_and_channels_with_offset_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let users = ["alice", "bob"];
    let fake = start_fake(&users, None).await;
    for i in 0..5 {
        for u in users {
            fake.post(u, NewStatus::html(format!("<p>{u} {i}</p>")));
        }
    }
    let mut text = polling_config(dir.path(), &fake, &users, "last:10", 3);
    text.push_str(&format!("\n[channels.copy]\ntype = \"file\"\npath = {}\n", toml_path(&dir.path().join("copy.jsonl"))));
    let cfg = write_file(dir.path(), "c.toml", &text);
    let cfg_s = cfg.to_str().unwrap();

    let p = Spawn::new(dir.path(), "run", &["run", "--no-progress", "--config", cfg_s]).start();
    let out = dir.path().join("out.jsonl");
    let copy = dir.path().join("copy.jsonl");
    wait_for(
        "10 posts in both files",
        || (complete_lines(&out).len() >= 10 && complete_lines(&copy).len() >= 10).then_some(()),
        || p.stderr(),
    )
    .await;
    // Beside the running pipeline: the log is read read-only.
    let live: Value = serde_json::from_str(&status(dir.path(), cfg_s, true)).expect("status --json is JSON");
    assert_eq!(live["log"]["events"], 10, "{live:#}");
    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "{s}\n{}", p.stderr());

    let table = status(dir.path(), cfg_s, false);
    assert!(table.contains("10 events stored, head offset 10"), "{table}");
    let source = table.lines().find(|l| l.starts_with("m ")).unwrap_or_else(|| panic!("no source line:\n{table}"));
    assert!(source.contains("stopped") || source.contains("finished"), "{source}");
    for u in users {
        assert!(table.lines().any(|l| l.contains("checkpoint") && l.contains(&acct(u))), "no checkpoint of {u}:\n{table}");
    }
    for ch in ["out", "copy"] {
        let line = table.lines().find(|l| l.starts_with(&format!("{ch} "))).unwrap_or_else(|| panic!("no channel {ch}:\n{table}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        // NAME STATE OFFSET LAG …
        assert_eq!(&cols[2..4], ["10", "0"], "offset 10, lag 0: {line}");
    }

    let j: Value = serde_json::from_str(&status(dir.path(), cfg_s, true)).expect("status --json is JSON");
    for key in ["log", "components", "checkpoints", "groups"] {
        assert!(j.get(key).is_some(), "no `{key}`: {j:#}");
    }
    assert_eq!(j["log"]["backend"], "sqlite");
    assert_eq!(j["log"]["events"], 10);
    assert_eq!(j["log"]["head"], 10);
    let groups = j["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{j:#}");
    for g in groups {
        assert_eq!((&g["offset"], &g["lag"]), (&Value::from(10), &Value::from(0)), "{g}");
    }
    let comps: Vec<&str> = j["components"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap()).collect();
    for c in ["source:m", "channel:out", "channel:copy"] {
        assert!(comps.contains(&c), "no component {c}: {comps:?}");
    }
    let checkpoints = j["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), 2, "one per account: {j:#}");
}

#[test]
fn status_before_any_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[log]\npath = {}\n[sources.r]\ntype = \"replay\"\npath = {}\n[channels.out]\ntype = \"stdout\"\n",
        toml_path(&dir.path().join("log.db")),
        toml_path(&repo_root().join("examples/data/sample-posts.jsonl"))
    );
    let cfg = write_file(dir.path(), "c.toml", &text);
    let (s, _, err) = run_to_end(dir.path(), "status", &["status", "--config", cfg.to_str().unwrap()]);
    assert!(!s.success());
    assert!(err.contains("no log yet"), "{err}");
    assert!(!dir.path().join("log.db").exists(), "status creates no log");
}

/// After `kill -9`, the rows of the dead process say so (the lock file of the
/// log is free; the documents are as it left them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_status_shows_not_running_with_when_it_was_last_seen() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    fake.post("alice", NewStatus::html("<p>one</p>"));
    let cfg = write_file(dir.path(), "c.toml", &polling_config(dir.path(), &fake, &["alice"], "last:1", 10));
    let cfg_s = cfg.to_str().unwrap();
    let p = Spawn::new(dir.path(), "run", &["run", "--no-progress", "--config", cfg_s]).start();
    let out = dir.path().join("out.jsonl");
    wait_for("the post", || (!complete_lines(&out).is_empty()).then_some(()), || p.stderr()).await;
    // Beside the running process the rows are live.
    let live = wait_for(
        "live status rows",
        || {
            let (code, t, _) = run_to_end(dir.path(), "status", &["status", "--config", cfg_s]);
            (code.success() && t.lines().any(|l| l.starts_with("m ") && l.contains("polling"))).then_some(t)
        },
        || p.stderr(),
    )
    .await;
    assert!(!live.contains("not running"), "{live}");
    p.kill9();
    let table = status(dir.path(), cfg_s, false);
    for row in ["m ", "out "] {
        let line = table.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no row {row}:\n{table}"));
        assert!(line.contains("not running (last seen "), "{line}\n{table}");
    }
    let j: Value = serde_json::from_str(&status(dir.path(), cfg_s, true)).unwrap();
    for c in j["components"].as_array().unwrap() {
        assert_eq!(c["running"], false, "{c}");
    }
}

/// An account its server does not know: `run` goes on, says so at warning
/// level, and `status` shows the account as not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_that_does_not_exist_is_shown_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    let cfg = write_file(dir.path(), "c.toml", &polling_config(dir.path(), &fake, &["alice", "nobody"], "none", 10));
    let cfg_s = cfg.to_str().unwrap();
    let p = Spawn::new(dir.path(), "run", &["run", "--no-progress", "--config", cfg_s]).start();
    let table = wait_for(
        "nobody shown as not found",
        || {
            p.assert_running();
            // Right after the start the log may not exist yet.
            let (code, t, _) = run_to_end(dir.path(), "status", &["status", "--config", cfg_s]);
            (code.success() && t.contains("nobody@fake.example: not found on")).then_some(t)
        },
        || p.stderr(),
    )
    .await;
    assert!(!table.lines().any(|l| l.trim_start().starts_with("alice@fake.example:")), "healthy accounts are not listed:\n{table}");
    let warn = p.stderr().lines().find(|l| l.contains("not found")).map(str::to_string).unwrap_or_default();
    assert!(warn.contains("WARN") && warn.contains("nobody@fake.example"), "{}", p.stderr());
    p.sigterm();
    assert!(p.wait_exit(DEADLINE).await.success(), "{}", p.stderr());
}

/// Counters: each post skipped for consent counts once however often it is read
/// again; the log's dropped re-deliveries read as what they are; and `status`
/// says since when the counters count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_count_distinct_posts_and_say_since_when() {
    use fedistream_connectors::testing::AccountOpts;
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    fake.add_account("botty", AccountOpts { note_html: "<p>I post things #nobot</p>".into(), ..Default::default() });
    fake.post("alice", NewStatus::html("<p>alice</p>"));
    fake.post("botty", NewStatus::html("<p>botty one</p>"));
    fake.post("botty", NewStatus::html("<p>botty two</p>"));
    // Every poll also re-reads the newest page (the safety pass).
    let text = polling_config(dir.path(), &fake, &["alice", "botty"], "last:5", 10)
        .replace("max_poll_interval = \"1s\"", "max_poll_interval = \"1s\"\nsafety_interval = \"1s\"");
    let cfg = write_file(dir.path(), "c.toml", &text);
    let cfg_s = cfg.to_str().unwrap();
    let p = Spawn::new(dir.path(), "run", &["run", "--no-progress", "--config", cfg_s]).start();
    let botty = fake.account_id("botty").unwrap();
    wait_for(
        "three re-reads of botty's newest page",
        || {
            (fake.requests().iter().filter(|r| r.path == format!("/api/v1/accounts/{botty}/statuses") && r.query == "limit=20").count()
                >= 3)
                .then_some(())
        },
        || p.stderr(),
    )
    .await;
    let table = status(dir.path(), cfg_s, false);
    let counters = table.lines().skip_while(|l| !l.starts_with("m ")).nth(1).unwrap_or_default().to_string();
    assert!(counters.trim_start().starts_with("since ") && counters.contains(" UTC: "), "{table}");
    p.sigterm();
    assert!(p.wait_exit(DEADLINE).await.success(), "{}", p.stderr());
    let stderr = p.stderr();
    let source = summary_counters(&stderr, "source  m");
    assert_eq!(source.get("skipped_bio_nobot"), Some(&2), "two posts skipped, each once: {source:?}");
    let log = summary_counters(&stderr, "log");
    assert!(log.get("duplicates_suppressed").copied().unwrap_or(0) >= 1, "re-reads dropped as duplicates: {log:?}");
    assert!(!log.contains_key("duplicates"), "{log:?}");
}
