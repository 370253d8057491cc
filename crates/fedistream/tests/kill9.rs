//! `kill -9` in the middle of delivery, twice, while the followed accounts keep
//! posting: after the last restart the file channel holds every post exactly
//! once, with strictly increasing offsets and no torn line.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fedistream_connectors::testing::NewStatus;

const USERS: [&str; 3] = ["alice", "bob", "carol"];

#[derive(Debug)]
struct Kill {
    /// Complete lines in the output right after the kill.
    lines: usize,
    /// The file ended in a partial line.
    torn: bool,
    /// Offset of the last complete line.
    last_offset: u64,
    /// The channel's committed offset in the log (events after it are redelivered).
    committed: u64,
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn last_offset(out: &std::path::Path) -> u64 {
    complete_lines(out).last().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["offset"].as_u64().unwrap()).unwrap_or(0)
}

fn committed_offset(dir: &std::path::Path, cfg: &str) -> u64 {
    let (s, out, err) = run_to_end(dir, "status", &["status", "--json", "--config", cfg]);
    assert!(s.success(), "status after kill -9: {s}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["groups"][0]["offset"].as_u64().unwrap()
}

// Three workers: the kill trigger spins on one, the fake server and the poster use the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn kill_9_twice_then_restart_delivers_every_post_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(start_fake(&USERS, None).await);
    for i in 0..150 {
        for u in USERS {
            fake.post(u, NewStatus::html(format!("<p>{u} backlog {i}</p>")));
        }
    }
    // `durability = "fsync"` makes each commit take a disk flush, which widens the
    // window between a batch reaching the file and its commit: more kills land in it.
    let text = polling_config(dir.path(), &fake, &USERS, "last:400", 5).replacen("[log]\n", "[log]\ndurability = \"fsync\"\n", 1);
    let cfg = write_file(dir.path(), "kill9.toml", &text);
    let out = dir.path().join("out.jsonl");
    let cfg_s = cfg.to_str().unwrap();

    // The accounts keep posting while fedistream runs, dies and restarts.
    let stop_posting = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(Mutex::new(0usize));
    let poster = {
        let (fake, stop, posted) = (fake.clone(), stop_posting.clone(), posted.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                fake.post(USERS[i % 3], NewStatus::html(format!("<p>live {i}</p>")));
                i += 1;
                *posted.lock().unwrap() = i;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };

    // Kill while the backlog is being delivered, then repeatedly while live posts are.
    let mut kills = Vec::new();
    // At least three kills; more until two have landed between a write and its
    // commit (the restart then redelivers events the file already holds). Whether
    // a kill lands there is luck, so only none in 40 fails.
    let mut round = 0;
    let in_window = |kills: &[Kill]| kills.iter().filter(|k| k.committed < k.last_offset).count();
    while round < 3 || (in_window(&kills) < 2 && round < 40) {
        // Trigger on the file's size, checked in a tight loop: the kill then lands
        // right after a write, often before the channel commits it.
        let before = file_len(&out);
        let p = Spawn::new(dir.path(), &format!("run{round}"), &["run", "--no-progress", "--config", cfg_s]).start();
        let target = before + if round == 0 { 60_000 } else { 20_000 };
        let deadline = Instant::now() + DEADLINE;
        while file_len(&out) < target {
            p.assert_running();
            assert!(Instant::now() < deadline, "run {round}: output stuck at {} bytes; stderr:\n{}", file_len(&out), p.stderr());
            std::hint::spin_loop();
        }
        p.kill9();
        let k = Kill {
            lines: complete_lines(&out).len(),
            torn: std::fs::read(&out).unwrap().last() != Some(&b'\n'),
            last_offset: last_offset(&out),
            committed: committed_offset(dir.path(), cfg_s),
        };
        assert!(k.committed <= k.last_offset, "the channel committed events its file does not hold: {k:?}");
        kills.push(k);
        round += 1;
    }
    eprintln!("kills: {kills:?}; {} left a torn last line", kills.iter().filter(|k| k.torn).count());
    assert!(in_window(&kills) >= 1, "no kill landed between a write and its commit: {kills:?}");
    let total_then = 450 + *posted.lock().unwrap();
    assert!(kills.iter().all(|k| k.lines < total_then), "killed after everything was delivered: {kills:?}");

    let p = Spawn::new(dir.path(), "final", &["run", "--no-progress", "--config", cfg_s]).start();
    // Let the restarted process see some live posts, then stop posting.
    let seen = complete_lines(&out).len();
    wait_for("the final run to deliver", || (complete_lines(&out).len() > seen + 20).then_some(()), || p.stderr()).await;
    stop_posting.store(true, Ordering::SeqCst);
    poster.await.unwrap();

    let mut expected: Vec<String> = USERS.iter().flat_map(|u| server_uris(&fake, u)).collect();
    expected.sort();
    assert_eq!(expected.len(), 450 + *posted.lock().unwrap());
    wait_for(
        "every post on the server in the file",
        || {
            p.assert_running();
            let lines = complete_lines(&out);
            (lines.len() >= expected.len()).then_some(())
        },
        || format!("{} of {} lines\n{}", complete_lines(&out).len(), expected.len(), p.stderr()),
    )
    .await;
    p.sigterm();
    let status = p.wait_exit(DEADLINE).await;
    assert!(status.success(), "final run exited with {status}; stderr:\n{}", p.stderr());

    let events = read_events(&out);
    assert_offsets_increase(&events);
    assert_each_created_once(&events);
    let mut got = created_keys(&events);
    got.sort();
    assert_eq!(got.len(), expected.len(), "kills at {kills:?}");
    assert_eq!(got, expected, "every post on the server, exactly once");
    assert_eq!(events.len(), expected.len(), "nothing but created events");
}
