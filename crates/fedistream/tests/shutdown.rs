//! SIGTERM: `fedistream run` drains, prints its summary and exits 0 within the
//! drain deadline; a restart resumes and appends nothing already delivered.

mod common;

use std::time::Duration;

use common::*;
use fedistream_connectors::testing::NewStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_exits_0_and_a_restart_appends_nothing_already_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    for i in 0..20 {
        fake.post("alice", NewStatus::html(format!("<p>old {i}</p>")));
    }
    let cfg = write_file(dir.path(), "c.toml", &polling_config(dir.path(), &fake, &["alice"], "last:50", 5));
    let out = dir.path().join("out.jsonl");
    // A deadline far beyond a drain's needs: the run must end by draining,
    // which its log shows (nothing is stopped "at the drain deadline").
    let drain = Duration::from_secs(120);
    let args = ["run", "--no-progress", "--drain-deadline", "120s", "--config", cfg.to_str().unwrap()];

    let p = Spawn::new(dir.path(), "first", &args).start();
    wait_for("the backfill", || (complete_lines(&out).len() >= 20).then_some(()), || p.stderr()).await;
    let live = fake.post("alice", NewStatus::html("<p>live</p>"));
    wait_for("the live post", || complete_lines(&out).iter().any(|l| l.contains(&live.uri)).then_some(()), || p.stderr()).await;
    p.assert_running();
    p.sigterm();
    let status = p.wait_exit(drain + Duration::from_secs(5)).await;
    let err = p.stderr();
    assert!(status.success(), "exit status {status}; stderr:\n{err}");
    assert!(!err.contains("at the drain deadline"), "the run was stopped at the deadline instead of draining:\n{err}");
    assert!(err.contains("fedistream: summary"), "{err}");
    assert_eq!(summary_counters(&err, "channel out").get("delivered"), Some(&21), "{err}");
    assert_eq!(summary_counters(&err, "log").get("appended"), Some(&21), "{err}");
    assert_eq!(read_events(&out).len(), 21);

    // Down for a while: one more post; the restart delivers it and only it.
    let later = fake.post("alice", NewStatus::html("<p>while down</p>"));
    let p = Spawn::new(dir.path(), "second", &args).start();
    wait_for("the post made while down", || complete_lines(&out).iter().any(|l| l.contains(&later.uri)).then_some(()), || p.stderr()).await;
    p.sigterm();
    let status = p.wait_exit(drain + Duration::from_secs(5)).await;
    let err = p.stderr();
    assert!(status.success(), "exit status {status}; stderr:\n{err}");
    assert_eq!(summary_counters(&err, "channel out").get("delivered"), Some(&1), "{err}");

    let events = read_events(&out);
    assert_offsets_increase(&events);
    assert_each_created_once(&events);
    let mut expected = server_uris(&fake, "alice");
    expected.reverse(); // oldest first
    assert_eq!(created_keys(&events), expected, "every post once, in order, across the restart");
}
