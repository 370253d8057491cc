//! Kafka mode through the binary, on a real broker (`scripts/kafka up`, brokers
//! from `FEDISTREAM_KAFKA_BROKERS`): roles, consumer groups, hand-overs after
//! `kill -9`, ingest processes joining and leaving, a broker restart, a bad
//! broker address. Each test uses its own pipeline name (own topics and groups).

// Needs the build's features: Kafka mode (and the live feed, which needs `http`).
#![cfg(all(feature = "kafka", feature = "http"))]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fedistream_connectors::testing::{FakeMastodon, NewStatus};
use fedistream_kafka::testing::brokers;

/// Group hand-overs wait for a session timeout (6 s here) and a rebalance.
const HANDOVER: Duration = Duration::from_secs(90);

/// A Kafka-mode config: source `m` polling `users` on the fake, a file channel
/// `out` writing `<dir>/out-{worker}.jsonl`.
fn kafka_config(dir: &Path, fake: &FakeMastodon, users: &[&str], brokers: &str, pipeline: &str) -> String {
    let accounts: Vec<String> = users.iter().map(|u| toml_str(acct(u))).collect();
    format!(
        r#"[log]
backend = "kafka"
dead_letter_dir = {dl}

[log.kafka]
brokers = {brokers}
pipeline = {pipeline}
partitions = 4
ingest_slots = 8
session_timeout = "6s"
connect_timeout = "10s"

[sources.m]
type = "mastodon"
accounts = [{accounts}]
instance = {instance}
stream = "off"
backfill = "last:40"
poll_interval = "1s"
max_poll_interval = "1s"
safety_interval = "1h"

[channels.out]
type = "file"
path = {out}

[channels.out.delivery]
max_batch = 5
"#,
        dl = toml_path(&dir.join("dead-letter")),
        brokers = toml_str(brokers),
        pipeline = toml_str(pipeline),
        accounts = accounts.join(", "),
        instance = toml_str(fake.base_url()),
        out = toml_path(&dir.join("out-{worker}.jsonl")),
    )
}

fn out_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("out-"))
        .collect();
    v.sort();
    v
}

/// Every created event in every worker's file.
fn all_events(dir: &Path) -> Vec<serde_json::Value> {
    out_files(dir).iter().flat_map(|f| written_events(f)).collect()
}

fn all_server_uris(fake: &FakeMastodon, users: &[&str]) -> BTreeSet<String> {
    users.iter().flat_map(|u| server_uris(fake, u)).collect()
}

fn role(dir: &Path, name: &str, cfg: &Path, role: &str, worker: &str) -> Proc {
    Spawn::new(dir, name, &["run", "--config", cfg.to_str().unwrap(), "--role", role, "--worker", worker, "--drain-deadline", "5s"]).start()
}

/// Posts one status per user every 20 ms until stopped.
fn keep_posting(fake: Arc<FakeMastodon>, users: &'static [&'static str], stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            for u in users {
                fake.post(u, NewStatus::html(format!("<p>{u} live {n}</p>")));
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn deliver_processes_split_partitions_and_a_killed_one_is_taken_over_exactly_once() {
    static USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(start_fake(&USERS, None).await);
    for i in 0..30 {
        for u in USERS {
            fake.post(u, NewStatus::html(format!("<p>{u} backlog {i}</p>")));
        }
    }
    let cfg = write_file(dir.path(), "kafka.toml", &kafka_config(dir.path(), &fake, &USERS, &brokers, &pipeline_name("deliver")));
    let ingest = role(dir.path(), "ingest", &cfg, "ingest", "i1");
    let a = role(dir.path(), "deliver-a", &cfg, "deliver", "a");
    let b = role(dir.path(), "deliver-b", &cfg, "deliver", "b");
    // Live posts start once the backlog (30 per account, within `last:40`) is read.
    backfilled(&ingest, USERS.len()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let poster = keep_posting(fake.clone(), &USERS, stop.clone());

    // Both members of the channel's group deliver: the partitions are split.
    let (fa, fb) = (dir.path().join("out-a.jsonl"), dir.path().join("out-b.jsonl"));
    wait_for_within(
        "both deliver processes writing",
        HANDOVER,
        || (complete_lines(&fa).len() > 10 && complete_lines(&fb).len() > 10).then_some(()),
        || format!("a: {}\nb: {}\ningest: {}", a.stderr(), b.stderr(), ingest.stderr()),
    )
    .await;
    // (A partition may move from one to the other when the second joins; no
    // position is written twice, checked at the end.)

    // kill -9 one member mid-stream; the other takes its partitions over.
    a.kill9();
    let a_lines = complete_lines(&fa).len();
    let positions = |f: &Path| -> Vec<(u64, u64)> {
        complete_lines(f)
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["partition"].as_u64().unwrap(), v["offset"].as_u64().unwrap()))
            .collect()
    };
    // The partitions A wrote last (B did not write them after A did).
    let last_by = |f: &Path| -> std::collections::HashMap<u64, u64> {
        let mut m = std::collections::HashMap::new();
        for (p, o) in positions(f) {
            let e = m.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
        m
    };
    let (a_last, b_last) = (last_by(&fa), last_by(&fb));
    let a_owned: Vec<(u64, u64)> = a_last.iter().filter(|(p, o)| b_last.get(p).is_none_or(|b| b < o)).map(|(p, o)| (*p, *o)).collect();
    assert!(!a_owned.is_empty(), "A owned partitions when it died: a {a_last:?}, b {b_last:?}");
    wait_for_within(
        "the survivor to take over the dead member's partitions",
        HANDOVER,
        || positions(&fb).iter().any(|(p, o)| a_owned.iter().any(|(ap, ao)| ap == p && o > ao)).then_some(()),
        || format!("a owned {a_owned:?}\n{}", b.stderr()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    poster.await.unwrap();
    let expected = all_server_uris(&fake, &USERS);
    wait_for_within(
        "every post in the file channel",
        HANDOVER,
        || {
            let got: HashSet<String> = created_keys(&all_events(dir.path())).into_iter().collect();
            (got.len() >= expected.len()).then_some(())
        },
        || {
            format!(
                "{} of {} posts\nb: {}\ningest: {}",
                created_keys(&all_events(dir.path())).len(),
                expected.len(),
                tail(&b.stderr()),
                tail(&ingest.stderr())
            )
        },
    )
    .await;
    let events = all_events(dir.path());
    assert_each_created_once(&events);
    let got: BTreeSet<String> = created_keys(&events).into_iter().collect();
    assert_eq!(got, expected, "every post, nothing else");
    assert_eq!(complete_lines(&fa).len(), a_lines, "the killed member wrote nothing after its death");
    // Each position at most once across both files.
    let mut positions = HashSet::new();
    for e in &events {
        assert!(positions.insert((e["partition"].as_u64(), e["offset"].as_u64())), "position twice: {e}");
    }

    // Status shows the channel's group and its lag on the Kafka log.
    let (s, out, err) = run_to_end(dir.path(), "status", &["status", "--json", "--config", cfg.to_str().unwrap()]);
    assert!(s.success(), "status: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["log"]["backend"], "kafka", "{v}");
    let groups = v["groups"].as_array().unwrap();
    assert!(groups.iter().any(|g| g["group"].as_str().unwrap().ends_with(".out")), "{v}");
    // Each process keeps its own status document (none overwrites another's).
    let delivered = |key: &str| -> u64 {
        let c = v["components"].as_array().unwrap().iter().find(|c| c["key"] == key);
        c.unwrap_or_else(|| panic!("no {key} in {v}"))["status"]["counters"]["delivered"].as_u64().unwrap_or(0)
    };
    // (A's last counters may not have been written before its kill -9.)
    assert!(delivered("channel:out@b") > 0, "{v}");
    assert!(v["components"].as_array().unwrap().iter().all(|c| c["key"] != "channel:out"), "{v}");
    assert!(v["components"].as_array().unwrap().iter().any(|c| c["key"] == "source:m@i1"), "{v}");
    let (_, table, _) = run_to_end(dir.path(), "status-table", &["status", "--config", cfg.to_str().unwrap()]);
    assert!(table.lines().any(|l| l.starts_with("out@b ")) && table.lines().any(|l| l.starts_with("m@i1 ")), "{table}");
    b.sigterm();
    ingest.sigterm();
    assert!(b.wait_exit(DEADLINE).await.success(), "{}", b.stderr());
    assert!(ingest.wait_exit(DEADLINE).await.success(), "{}", ingest.stderr());
}

/// The accounts a process follows now, from its last "Ingest: following" line.
fn following(p: &Proc) -> Option<BTreeSet<String>> {
    followings(p).pop()
}

/// An ingest test's world: the fake server with one post of each user, the
/// Kafka config following them, and the set of their units (`m/acct`).
async fn ingest_world(users: &'static [&'static str], name: &str) -> (tempfile::TempDir, Arc<FakeMastodon>, PathBuf, BTreeSet<String>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(start_fake(users, None).await);
    for u in users {
        fake.post(u, NewStatus::html(format!("<p>{u} before</p>")));
    }
    let cfg = write_file(dir.path(), "kafka.toml", &kafka_config(dir.path(), &fake, users, &brokers(), &pipeline_name(name)));
    let all = users.iter().map(|u| format!("m/{}", acct(u))).collect();
    (dir, fake, cfg, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn ingest_processes_join_and_leave_and_every_account_has_one_follower() {
    static USERS: [&str; 8] = ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"];
    let (dir, fake, cfg, all) = ingest_world(&USERS, "ingest").await;

    let i1 = role(dir.path(), "ingest-1", &cfg, "ingest", "i1");
    wait_for_within(
        "the first ingest process to follow every account",
        HANDOVER,
        || (following(&i1)? == all).then_some(()),
        || i1.stderr(),
    )
    .await;

    // A second process joins: the accounts are split, each followed once.
    let i2 = role(dir.path(), "ingest-2", &cfg, "ingest", "i2");
    let split = wait_for_within(
        "the accounts split between two ingest processes",
        HANDOVER,
        || {
            let (a, b) = (following(&i1)?, following(&i2)?);
            (!a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.union(&b).cloned().collect::<BTreeSet<_>>() == all).then_some((a, b))
        },
        || format!("i1: {:?}\ni2: {:?}\n{}", following(&i1), following(&i2), i2.stderr()),
    )
    .await;
    // Posts made while split arrive exactly once.
    let d = role(dir.path(), "deliver", &cfg, "deliver", "d");
    for u in USERS {
        fake.post(u, NewStatus::html(format!("<p>{u} while split</p>")));
    }
    let expected = all_server_uris(&fake, &USERS);
    let file = dir.path().join("out-d.jsonl");
    wait_for_within(
        "the posts made while split",
        HANDOVER,
        || (created_keys(&written_events(&file)).into_iter().collect::<BTreeSet<_>>() == expected).then_some(()),
        || format!("{} lines\n{}", complete_lines(&file).len(), d.stderr()),
    )
    .await;

    // The first process dies: the second takes all its accounts over.
    i1.kill9();
    wait_for_within(
        "the survivor to follow every account",
        HANDOVER,
        || (following(&i2)? == all).then_some(()),
        || format!("i2: {:?} (had {:?})\n{}", following(&i2), split.1, i2.stderr()),
    )
    .await;
    // A third joins and leaves cleanly: the survivor gets everything back.
    let i3 = role(dir.path(), "ingest-3", &cfg, "ingest", "i3");
    wait_for_within(
        "the third process to get accounts",
        HANDOVER,
        || {
            let (b, c) = (following(&i2)?, following(&i3)?);
            (!c.is_empty() && b.is_disjoint(&c) && b.union(&c).cloned().collect::<BTreeSet<_>>() == all).then_some(())
        },
        || format!("i2: {:?}\ni3: {:?}", following(&i2), following(&i3)),
    )
    .await;
    i3.sigterm();
    assert!(i3.wait_exit(DEADLINE).await.success(), "{}", i3.stderr());
    wait_for_within("the survivor to follow every account again", HANDOVER, || (following(&i2)? == all).then_some(()), || i2.stderr())
        .await;
    for u in USERS {
        fake.post(u, NewStatus::html(format!("<p>{u} after the moves</p>")));
    }
    let expected = all_server_uris(&fake, &USERS);
    wait_for_within(
        "every post after the hand-overs",
        HANDOVER,
        || (created_keys(&written_events(&file)).into_iter().collect::<BTreeSet<_>>() == expected).then_some(()),
        || format!("{} lines\n{}", complete_lines(&file).len(), i2.stderr()),
    )
    .await;
    i2.sigterm();
    d.sigterm();
    assert!(i2.wait_exit(DEADLINE).await.success());
    assert!(d.wait_exit(DEADLINE).await.success());
    // The checkpoints moved with the accounts: nothing was fetched into the log twice.
    assert_each_created_once(&read_events(&file));
}

/// Send `sig` (STOP, CONT) to a process.
fn signal(p: &Proc, sig: &str) {
    let ok = std::process::Command::new("kill").args([&format!("-{sig}"), &p.pid().to_string()]).status().unwrap().success();
    assert!(ok, "kill -{sig} {} failed", p.pid());
}

/// The slots of every "Ingest slots assigned" line, in order.
fn assignments(p: &Proc) -> Vec<BTreeSet<i32>> {
    p.stderr()
        .lines()
        .filter(|l| l.contains("Ingest slots assigned"))
        .filter_map(|l| {
            let list = &l[l.find("slots={")? + "slots={".len()..];
            let list = &list[..list.find('}')?];
            Some(list.split(", ").filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect())
        })
        .collect()
}

/// The sets of accounts of every "Ingest: following" line, in order.
fn followings(p: &Proc) -> Vec<BTreeSet<String>> {
    p.stderr()
        .lines()
        .filter(|l| l.contains("Ingest: following"))
        .filter_map(|l| {
            let list = &l[l.find("following=")? + "following=".len()..];
            serde_json::from_str::<Vec<String>>(&list[..list.find(']')? + 1]).ok()
        })
        .map(|v| v.into_iter().collect())
        .collect()
}

/// A zombie: an ingest process paused (SIGSTOP) past the session timeout
/// loses its slots to the other one; when it resumes, whatever it still
/// appends for the accounts it no longer owns is fenced off (or, had it nothing
/// in flight, it just restarts with its new assignment). Every post reaches the
/// file channel exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_paused_ingest_process_is_fenced_and_every_post_arrives_once() {
    static USERS: [&str; 8] = ["z1", "z2", "z3", "z4", "z5", "z6", "z7", "z8"];
    let (dir, fake, cfg, all) = ingest_world(&USERS, "zombie").await;
    let all_slots: BTreeSet<i32> = (0..8).collect();

    let i1 = role(dir.path(), "ingest-1", &cfg, "ingest", "i1");
    wait_for_within(
        "the first ingest process to follow every account",
        HANDOVER,
        || (following(&i1)? == all).then_some(()),
        || i1.stderr(),
    )
    .await;
    let i2 = role(dir.path(), "ingest-2", &cfg, "ingest", "i2");
    let split = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
        !a.is_empty() && !b.is_empty() && a.is_disjoint(b) && a.union(b).cloned().collect::<BTreeSet<_>>() == all
    };
    wait_for_within(
        "the accounts split between two ingest processes",
        HANDOVER,
        || split(&following(&i1)?, &following(&i2)?).then_some(()),
        || format!("i1: {:?}\ni2: {:?}\n{}", following(&i1), following(&i2), i2.stderr()),
    )
    .await;
    let d = role(dir.path(), "deliver", &cfg, "deliver", "d");
    let file = dir.path().join("out-d.jsonl");
    let stop = Arc::new(AtomicBool::new(false));
    let poster = keep_posting(fake.clone(), &USERS, stop.clone());
    wait_for_within("live posts delivered", HANDOVER, || (complete_lines(&file).len() > 50).then_some(()), || d.stderr()).await;

    // Pause the first process past the session timeout: the group hands all
    // its slots to the second one (which does not wait for a revoke that
    // cannot come).
    let i2_assigned = assignments(&i2).len();
    signal(&i1, "STOP");
    wait_for_within(
        "the second process to be assigned every slot",
        HANDOVER,
        || assignments(&i2)[i2_assigned..].contains(&all_slots).then_some(()),
        || format!("i2 assignments: {:?}\n{}", assignments(&i2), tail(&i2.stderr())),
    )
    .await;
    // It resumes, believing it still owns its accounts; posts keep coming.
    let noticed = |p: &Proc| p.stderr().matches("Fenced:").count() + p.stderr().matches("Ingest group changed: restarting").count();
    let (i1_noticed, i1_followings) = (noticed(&i1), followings(&i1).len());
    signal(&i1, "CONT");
    wait_for_within(
        "the resumed process to notice it lost its slots",
        HANDOVER,
        || (noticed(&i1) > i1_noticed).then_some(()),
        || tail(&i1.stderr()),
    )
    .await;
    // It rejoins the group and gets accounts again.
    wait_for_within(
        "the accounts split again",
        HANDOVER,
        || {
            let mine = followings(&i1).get(i1_followings..)?.last()?.clone();
            split(&mine, &following(&i2)?).then_some(())
        },
        || format!("i1: {:?}\ni2: {:?}\n{}", following(&i1), following(&i2), tail(&i1.stderr())),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    poster.await.unwrap();
    let expected = all_server_uris(&fake, &USERS);
    wait_for_within(
        "every post in the file channel",
        HANDOVER,
        || (created_keys(&written_events(&file)).into_iter().collect::<BTreeSet<_>>() == expected).then_some(()),
        || format!("{} of {} posts\ni1: {}\ni2: {}", complete_lines(&file).len(), expected.len(), tail(&i1.stderr()), tail(&i2.stderr())),
    )
    .await;
    let resumed = i1.stderr();
    let fenced = resumed.lines().filter(|l| l.contains("Fenced:")).count();
    eprintln!("the resumed process was fenced {fenced} time(s)");
    if fenced > 0 {
        assert!(resumed.contains("another member"), "the warning says why:\n{resumed}");
    }
    for p in [&i1, &i2, &d] {
        p.sigterm();
    }
    for p in [&i1, &i2, &d] {
        assert!(p.wait_exit(DEADLINE).await.success(), "{}", p.stderr());
    }
    let events = read_events(&file);
    assert_each_created_once(&events);
    assert_eq!(created_keys(&events).into_iter().collect::<BTreeSet<_>>(), expected, "every post, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_broker_restart_during_ingest_loses_nothing() {
    static USERS: [&str; 3] = ["ann", "ben", "cat"];
    let _ = brokers();
    // Our own broker, so stopping it does not disturb the other tests.
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let controller = free_port();
    let script = repo_root().join("scripts/kafka");
    let kafka = |cmd: &str| {
        let out = std::process::Command::new(&script)
            .arg(cmd)
            .env("KAFKA_PORT", port.to_string())
            .env("KAFKA_CONTROLLER_PORT", controller.to_string())
            .env("FEDISTREAM_KAFKA_HOME", home.path())
            .output()
            .expect("scripts/kafka");
        assert!(out.status.success(), "scripts/kafka {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };
    struct Down<F: Fn(&str)>(F);
    impl<F: Fn(&str)> Drop for Down<F> {
        fn drop(&mut self) {
            (self.0)("down");
        }
    }
    kafka("up");
    let _down = Down(&kafka);
    let brokers = format!("127.0.0.1:{port}");

    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(start_fake(&USERS, None).await);
    for u in USERS {
        fake.post(u, NewStatus::html(format!("<p>{u} before</p>")));
    }
    let cfg = write_file(dir.path(), "kafka.toml", &kafka_config(dir.path(), &fake, &USERS, &brokers, &pipeline_name("restart")));
    let p = role(dir.path(), "all", &cfg, "all", "w");
    backfilled(&p, USERS.len()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let poster = keep_posting(fake.clone(), &USERS, stop.clone());
    let file = dir.path().join("out-w.jsonl");
    wait_for_within("delivery before the restart", HANDOVER, || (complete_lines(&file).len() > 20).then_some(()), || p.stderr()).await;

    kafka("down");
    let during = complete_lines(&file).len();
    // Posts keep coming while the broker is away; the process waits, it does not exit.
    let posted_then = fake.statuses_of(USERS[0]).len();
    wait_for("posts made while the broker is down", || (fake.statuses_of(USERS[0]).len() > posted_then + 20).then_some(()), String::new)
        .await;
    p.assert_running();
    kafka("up");
    stop.store(true, Ordering::Relaxed);
    poster.await.unwrap();
    let expected = all_server_uris(&fake, &USERS);
    wait_for_within(
        "every post after the broker came back",
        HANDOVER,
        || (created_keys(&written_events(&file)).into_iter().collect::<BTreeSet<_>>() == expected).then_some(()),
        || format!("{} of {} ({} before the restart)\n{}", complete_lines(&file).len(), expected.len(), during, tail(&p.stderr())),
    )
    .await;
    p.sigterm();
    assert!(p.wait_exit(DEADLINE).await.success(), "{}", p.stderr());
    assert_each_created_once(&read_events(&file));
}

/// Wait until the process has read the backlog of `n` accounts.
async fn backfilled(p: &Proc, n: usize) {
    wait_for_within("the backfill", HANDOVER, || (p.stderr().matches("Backfill done").count() >= n).then_some(()), || p.stderr()).await;
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_bad_broker_address_fails_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sample = toml_path(&repo_root().join("examples/data/sample-posts.jsonl"));
    let cfg = write_file(
        dir.path(),
        "bad.toml",
        &format!(
            r#"[log]
backend = "kafka"
[log.kafka]
brokers = "127.0.0.1:1"
connect_timeout = "3s"

[sources.r]
type = "replay"
path = {sample}

[channels.out]
type = "stdout"
"#
        ),
    );
    // run_to_end fails the test if the process does not exit by its deadline.
    let (s, _out, err) = run_to_end(dir.path(), "bad", &["run", "--config", cfg.to_str().unwrap()]);
    assert!(!s.success());
    assert!(err.contains("127.0.0.1:1") && err.contains("log.kafka.brokers"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Roles need the Kafka log.
    let sqlite = write_file(
        dir.path(),
        "sqlite.toml",
        &format!(
            "[log]\npath = {}\n[sources.r]\ntype = \"replay\"\npath = {sample}\n[channels.out]\ntype = \"stdout\"\n",
            toml_path(&dir.path().join("l.db"))
        ),
    );
    let (s, _, err) = run_to_end(dir.path(), "role", &["run", "--config", sqlite.to_str().unwrap(), "--role", "deliver"]);
    assert!(!s.success());
    assert!(err.contains("--role deliver needs the Kafka log"), "{err}");
}

/// Events of a role's `/api/events`, read over a socket from the start of the
/// log (the resume point that names no partition), until `n` have come.
async fn feed_events(addr: &str, n: usize) -> Vec<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nLast-Event-ID: 4294967295:0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 16384];
    loop {
        let events: Vec<(String, String)> = text
            .split("\n\n")
            .filter_map(|frame| {
                let field = |name: &str| frame.lines().find_map(|l| l.strip_prefix(name).map(str::to_string));
                Some((field("id: ")?, field("data: ")?))
            })
            .collect();
        if events.len() >= n {
            return events;
        }
        let got = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await.expect("events within 30 s").unwrap();
        assert!(got > 0, "the feed ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..got]));
    }
}

/// The live feed (`/api/events`, the dashboard's) on Kafka, from the HTTP
/// server of an ingest and of a deliver process: both read the events topic
/// outside any group, every partition named in each id.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn every_kafka_role_serves_the_live_feed() {
    static USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(start_fake(&USERS, None).await);
    for i in 0..3 {
        for u in USERS {
            fake.post(u, NewStatus::html(format!("<p>{u} backlog {i}</p>")));
        }
    }
    let mut cfg = kafka_config(dir.path(), &fake, &USERS, &brokers(), &pipeline_name("feed"));
    cfg.push_str("\n[http]\nlisten = \"127.0.0.1:0\"\n");
    let cfg = write_file(dir.path(), "kafka.toml", &cfg);
    let ingest = role(dir.path(), "ingest", &cfg, "ingest", "i1");
    let deliver = role(dir.path(), "deliver", &cfg, "deliver", "d1");
    for p in [&ingest, &deliver] {
        let addr = http_address(p).await;
        let events = feed_events(&addr, 12).await;
        let mut keys: Vec<String> = events
            .iter()
            .map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).unwrap()["key"].as_str().unwrap().to_string())
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 12, "the backlog, each post once: {events:?}");
        let last = &events.last().unwrap().0;
        assert!(last.split(',').count() >= 2, "the id names the partitions read: {last}");
    }
    for p in [&ingest, &deliver] {
        p.sigterm();
        let s = p.wait_exit(DEADLINE).await;
        assert!(s.success(), "{s}\n{}", p.stderr());
    }
}
