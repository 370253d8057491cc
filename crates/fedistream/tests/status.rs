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
    text.push_str(&format!(
        "\n[channels.copy]\ntype = \"file\"\npath = {}\n",
        toml_path(&dir.path().join("copy.jsonl"))
    ));
    let cfg = write_file(dir.path(), "c.toml", &text);
    let cfg_s = cfg.to_str().unwrap();

    let p = Spawn::new(
        dir.path(),
        "run",
        &["run", "--no-progress", "--config", cfg_s],
    )
    .start();
    let out = dir.path().join("out.jsonl");
    let copy = dir.path().join("copy.jsonl");
    wait_for(
        "10 posts in both files",
        || (complete_lines(&out).len() >= 10 && complete_lines(&copy).len() >= 10).then_some(()),
        || p.stderr(),
    )
    .await;
    // Beside the running pipeline: the log is read read-only.
    let live: Value =
        serde_json::from_str(&status(dir.path(), cfg_s, true)).expect("status --json is JSON");
    assert_eq!(live["log"]["events"], 10, "{live:#}");
    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "{s}\n{}", p.stderr());

    let table = status(dir.path(), cfg_s, false);
    assert!(
        table.contains("10 events stored, head offset 10"),
        "{table}"
    );
    let source = table
        .lines()
        .find(|l| l.starts_with("m "))
        .unwrap_or_else(|| panic!("no source line:\n{table}"));
    assert!(
        source.contains("stopped") || source.contains("finished"),
        "{source}"
    );
    for u in users {
        assert!(
            table
                .lines()
                .any(|l| l.contains("checkpoint") && l.contains(&acct(u))),
            "no checkpoint of {u}:\n{table}"
        );
    }
    for ch in ["out", "copy"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("{ch} ")))
            .unwrap_or_else(|| panic!("no channel {ch}:\n{table}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        // NAME STATE OFFSET LAG …
        assert_eq!(&cols[2..4], ["10", "0"], "offset 10, lag 0: {line}");
    }

    let j: Value =
        serde_json::from_str(&status(dir.path(), cfg_s, true)).expect("status --json is JSON");
    for key in ["log", "components", "checkpoints", "groups"] {
        assert!(j.get(key).is_some(), "no `{key}`: {j:#}");
    }
    assert_eq!(j["log"]["backend"], "sqlite");
    assert_eq!(j["log"]["events"], 10);
    assert_eq!(j["log"]["head"], 10);
    let groups = j["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{j:#}");
    for g in groups {
        assert_eq!(
            (&g["offset"], &g["lag"]),
            (&Value::from(10), &Value::from(0)),
            "{g}"
        );
    }
    let comps: Vec<&str> = j["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
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
    let (s, _, err) = run_to_end(
        dir.path(),
        "status",
        &["status", "--config", cfg.to_str().unwrap()],
    );
    assert!(!s.success());
    assert!(err.contains("no log yet"), "{err}");
    assert!(!dir.path().join("log.db").exists(), "status creates no log");
}
