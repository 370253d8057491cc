//! `fedistream archive compact` on a local directory and on MinIO: the
//! latest version of each post once, deleted posts gone; a reader running
//! queries meanwhile sees the old set of objects or the new one, never both;
//! an object the channel stores after the compaction's listing is kept; a run
//! interrupted after any step leaves a readable archive without duplicates,
//! and the next run finishes it; a rerun changes nothing; retention removes
//! old hour directories; two runs never interleave (the lease), a stale
//! lease is taken over by one run only.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use fedistream_archive::compact::{cleanup, compact, CompactOptions, Compaction};
use fedistream_archive::lease::{self, LEASE, TAKEOVER};
use fedistream_archive::manifest::Manifest;
use fedistream_archive::sql;
use fedistream_archive::store::Archive;
use fedistream_archive::ArchiveSinkConfig;
use fedistream_core::runtime::{self, RetryConfig};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::testing::post;
use fedistream_core::{Event, EventKind};
use object_store::ObjectStoreExt;
use tokio_util::sync::CancellationToken;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn retry() -> RetryConfig {
    RetryConfig { initial: Duration::from_millis(20), max: Duration::from_millis(300), pause: Duration::from_millis(300) }
}

/// Archive `evs` through the runtime into `cfg`, on `log` (offsets continue across calls).
async fn archive(cfg: &ArchiveSinkConfig, log: &Arc<SqliteLog>, dir: &std::path::Path, evs: &[Event]) {
    let p = archive_pipeline(dir, log.clone(), once(evs), cfg.clone(), 7, retry());
    let summary = runtime::run(p, CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
}

/// a created then edited twice; b created then deleted (a day later); c created.
fn history() -> Vec<Event> {
    let mut a = post("alice@example.org", 1, "hello");
    a.created_at = Some(at("2026-12-07T08:10:00Z"));
    let mut a2 = a.clone();
    a2.edited_at = Some(at("2026-12-07T08:30:00Z"));
    a2.content_text = "hello, edited".into();
    let mut a3 = a2.clone();
    a3.edited_at = Some(at("2026-12-07T08:40:00Z"));
    a3.content_text = "hello, edited twice".into();
    let mut b = post("bob@example.org", 2, "bonjour");
    b.created_at = Some(at("2026-12-07T09:10:00Z"));
    let mut c = post("carol@example.org", 3, "hej");
    c.created_at = Some(at("2026-12-08T17:00:00Z"));
    let mut del = Event::created("src", b.clone());
    del.kind = EventKind::Deleted;
    del.post = None;
    del.observed_at = at("2026-12-09T01:00:00Z");
    vec![
        Event::created("src", a),
        Event::created("src", b),
        Event::updated("src", a2),
        Event::created("src", c),
        Event::updated("src", a3),
        del,
    ]
}

fn opts(before: &str) -> CompactOptions {
    CompactOptions {
        before: at(before),
        expire_before: None,
        row_group_rows: 1024,
        multipart_threshold: 32 << 20,
        multipart_part_bytes: 5 << 20,
        owner: "test run".into(),
        lease: Duration::from_secs(600),
    }
}

async fn csv(cfg: &ArchiveSinkConfig, q: &str) -> String {
    let batches = sql::run(cfg, q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
    let mut out = Vec::new();
    sql::print(&batches, sql::OutputFormat::Csv, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

const POSTS: &str = "select account, kind, content_text from posts order by account";
const CURRENT: &str = "account,kind,content_text\nalice@example.org,updated,hello, edited twice\ncarol@example.org,created,hej\n";

async fn current_state_after_compaction(cfg: ArchiveSinkConfig) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    archive(&cfg, &log, dir.path(), &history()).await;
    let archive_ = Archive::open(&cfg).unwrap();
    assert_eq!(csv(&cfg, "select count(*) as n from events").await, "n\n6\n");
    assert_eq!(csv(&cfg, POSTS).await.replace('"', ""), CURRENT);

    // Up to (not including) the deletion's day: b's creation goes, its deletion stays as a tombstone.
    let r = compact(&archive_, "posts", opts("2026-12-09T00:00:00Z")).await.unwrap();
    assert_eq!((r.generation, r.dirs_rewritten, r.rows_before, r.rows_after), (1, 3, 5, 2), "{r:?}");
    assert_eq!(
        csv(&cfg, "select account, kind, log_offset from events order by log_offset").await,
        "account,kind,log_offset\ncarol@example.org,created,4\nalice@example.org,updated,5\nbob@example.org,deleted,6\n",
        "the latest version of a once, c, and b's deletion (its directory is not compacted)"
    );
    assert_eq!(csv(&cfg, POSTS).await.replace('"', ""), CURRENT);

    // Everything: the tombstone goes too, b is gone for good.
    let r = compact(&archive_, "posts", opts("2026-12-10T00:00:00Z")).await.unwrap();
    assert_eq!((r.generation, r.dirs_rewritten), (2, 1), "only the deletion's directory changes: {r:?}");
    assert_eq!(
        csv(&cfg, "select account, kind, content_text from events order by log_offset").await.replace('"', ""),
        "account,kind,content_text\ncarol@example.org,created,hej\nalice@example.org,updated,hello, edited twice\n",
    );
    assert_eq!(csv(&cfg, "select count(*) as n from events where account = 'bob@example.org'").await, "n\n0\n");
    let rows = rows(&cfg, "posts").await;
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), vec![4, 5], "no object holds anything else: {rows:?}");
    let names = objects(&cfg, "posts").await;
    assert!(names.iter().all(|n| n.ends_with("_manifest.json") || n.contains("-g")), "old objects deleted: {names:?}");

    // A rerun changes nothing.
    let r = compact(&archive_, "posts", opts("2026-12-10T00:00:00Z")).await.unwrap();
    assert_eq!((r.generation, r.dirs_rewritten, r.objects_written, r.objects_removed), (2, 0, 0, 0), "{r:?}");
    assert_eq!(objects(&cfg, "posts").await, names);

    // The channel after compaction: a redelivery of what it stored before is
    // recognised from the compacted names (no duplicates), new events land.
    let mut a4 = post("alice@example.org", 1, "hello");
    a4.created_at = Some(at("2026-12-07T08:10:00Z"));
    a4.edited_at = Some(at("2026-12-07T09:00:00Z"));
    a4.content_text = "third edit".into();
    archive(&cfg, &log, dir.path(), &[Event::updated("src", a4)]).await;
    assert_eq!(
        csv(&cfg, "select account, content_text, log_offset from posts order by account").await,
        "account,content_text,log_offset\nalice@example.org,third edit,7\ncarol@example.org,hej,4\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_each_posts_latest_version_once_and_drops_deleted_posts_locally() {
    let dir = tempfile::tempdir().unwrap();
    current_state_after_compaction(local_config(&dir.path().join("archive"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_each_posts_latest_version_once_and_drops_deleted_posts_on_minio() {
    let endpoint = shared_endpoint();
    let bucket = random_bucket("compact");
    create_bucket(&endpoint, &bucket).await;
    current_state_after_compaction(s3_config(&endpoint, &bucket, "history")).await;
}

async fn interrupted_runs(cfg: ArchiveSinkConfig) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    archive(&cfg, &log, dir.path(), &history()).await;
    let a = Archive::open(&cfg).unwrap();
    let before = objects(&cfg, "posts").await;
    let count = "select count(*) as n from events";

    // Crash after writing the new objects, before the switch: readers still see the old set only.
    let mut c = Compaction::prepare(&a, "posts", opts("2026-12-10T00:00:00Z")).await.unwrap();
    c.write().await.unwrap();
    drop(c);
    assert!(objects(&cfg, "posts").await.iter().any(|n| n.contains("-g1")), "new objects written");
    assert_eq!(csv(&cfg, count).await, "n\n6\n");
    assert_eq!(csv(&cfg, POSTS).await.replace('"', ""), CURRENT);
    // The next run removes them and compacts again.
    let r = compact(&a, "posts", opts("2026-12-10T00:00:00Z")).await.unwrap();
    assert_eq!(r.generation, 1, "{r:?}");
    assert_eq!(csv(&cfg, count).await, "n\n2\n");

    // Crash after the switch, before the deletion: readers see the new set only.
    let mut d = post("dave@example.org", 4, "new");
    d.created_at = Some(at("2026-12-07T10:00:00Z"));
    archive(&cfg, &log, dir.path(), &[Event::created("src", d)]).await;
    assert_eq!(csv(&cfg, count).await, "n\n3\n");
    let mut c = Compaction::prepare(&a, "posts", opts("2026-12-10T00:00:00Z")).await.unwrap();
    c.write().await.unwrap();
    let r = c.switch().await.unwrap();
    assert_eq!(r.generation, 2);
    let m = Manifest::read(&a, "posts").await.unwrap();
    assert!(!m.replaced.is_empty());
    for rel in &m.replaced {
        assert!(objects(&cfg, "posts").await.contains(rel), "{rel} still stored (not yet deleted)");
    }
    assert_eq!(csv(&cfg, count).await, "n\n3\n", "the new objects only (the old ones hold 4 rows)");
    assert!(cleanup(&a, "posts").await.unwrap() > 0);
    assert_eq!(csv(&cfg, count).await, "n\n3\n");
    assert!(Manifest::read(&a, "posts").await.unwrap().replaced.is_empty());
    assert_eq!(rows(&cfg, "posts").await.len(), 3, "nothing stored twice");
    let now = objects(&cfg, "posts").await;
    assert!(before.iter().all(|o| !now.contains(o)), "the first objects are all replaced: {now:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_compaction_leaves_a_readable_archive_and_the_next_run_finishes_it_locally() {
    let dir = tempfile::tempdir().unwrap();
    interrupted_runs(local_config(&dir.path().join("archive"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_compaction_leaves_a_readable_archive_and_the_next_run_finishes_it_on_minio() {
    let endpoint = shared_endpoint();
    let bucket = random_bucket("compact-crash");
    create_bucket(&endpoint, &bucket).await;
    interrupted_runs(s3_config(&endpoint, &bucket, "h")).await;
}

/// Many posts over many hours, with edits and deletions.
fn many() -> (Vec<Event>, u64) {
    let mut evs = Vec::new();
    let mut current = 0;
    for n in 1..=240u64 {
        let mut p = post(&format!("u{}@example.org", n % 7), n, "text");
        p.created_at = Some(at("2026-11-01T00:00:00Z") + chrono::Duration::minutes(n as i64 * 17));
        evs.push(Event::created("src", p.clone()));
        match n % 4 {
            0 => {
                let mut del = Event::created("src", p.clone());
                del.kind = EventKind::Deleted;
                del.post = None;
                del.observed_at = p.created_at.unwrap() + chrono::Duration::hours(3);
                evs.push(del);
            }
            1 => {
                p.content_html = "<p>edited</p>".into();
                p.edited_at = Some(p.created_at.unwrap() + chrono::Duration::minutes(5));
                evs.push(Event::updated("src", p));
                current += 1;
            }
            _ => current += 1,
        }
    }
    (evs, current)
}

async fn concurrent_reader(cfg: ArchiveSinkConfig) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let (evs, current) = many();
    archive(&cfg, &log, dir.path(), &evs).await;
    let all = evs.len() as u64;
    let q = "select count(*) as n from events";
    assert_eq!(csv(&cfg, q).await, format!("n\n{all}\n"));

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let out = csv(&cfg, q).await;
                let n: u64 = out.lines().nth(1).unwrap().parse().unwrap();
                seen.push(n);
                let _ = tx.send(n);
            }
            seen
        })
    };
    assert_eq!(rx.recv().await, Some(all), "the reader runs before the compaction");
    let a = Archive::open(&cfg).unwrap();
    let r = compact(&a, "posts", opts("2026-12-01T00:00:00Z")).await.unwrap();
    assert_eq!(r.rows_after, current, "{r:?}");
    // Until the reader has seen the new generation (or failed: its panic shows below).
    while let Some(n) = rx.recv().await {
        if n == current {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert!(seen.iter().all(|&n| n == all || n == current), "every count is the old or the new one: {seen:?}");
    let first_new = seen.iter().position(|&n| n == current).unwrap();
    assert!(seen[first_new..].iter().all(|&n| n == current), "never back to the old set: {seen:?}");
    assert_eq!(csv(&cfg, "select count(distinct key) as n from posts").await, format!("n\n{current}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_during_compaction_sees_the_old_or_the_new_objects_never_both_locally() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_reader(local_config(&dir.path().join("archive"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_during_compaction_sees_the_old_or_the_new_objects_never_both_on_minio() {
    let endpoint = shared_endpoint();
    let bucket = random_bucket("compact-read");
    create_bucket(&endpoint, &bucket).await;
    concurrent_reader(s3_config(&endpoint, &bucket, "h")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_stored_after_the_listing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(&dir.path().join("archive"));
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    archive(&cfg, &log, dir.path(), &history()).await;
    let a = Archive::open(&cfg).unwrap();
    let mut c = Compaction::prepare(&a, "posts", opts("2026-12-10T00:00:00Z")).await.unwrap();
    // Meanwhile the channel stores a late edit of a (into a's old directory).
    let mut a4 = post("alice@example.org", 1, "hello");
    a4.created_at = Some(at("2026-12-07T08:10:00Z"));
    a4.content_text = "late edit".into();
    archive(&cfg, &log, dir.path(), &[Event::updated("src", a4)]).await;
    c.write().await.unwrap();
    c.switch().await.unwrap();
    cleanup(&a, "posts").await.unwrap();
    assert!(objects(&cfg, "posts").await.iter().any(|o| o.ends_with("part-0-7-7.parquet")), "the late object stays");
    assert_eq!(
        csv(&cfg, "select account, content_text from posts order by account").await,
        "account,content_text\nalice@example.org,late edit\ncarol@example.org,hej\n"
    );
    // The next run folds it in.
    let r = compact(&a, "posts", opts("2026-12-10T00:00:00Z")).await.unwrap();
    assert_eq!(r.dirs_rewritten, 1, "{r:?}");
    assert_eq!(csv(&cfg, "select count(*) as n from events").await, "n\n2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_hour_directories_older_than_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(&dir.path().join("archive"));
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let now = Utc::now();
    let evs: Vec<Event> = [40, 20, 2, 0]
        .iter()
        .enumerate()
        .map(|(i, days)| {
            let mut p = post("alice@example.org", i as u64 + 1, "x");
            p.created_at = Some(now - chrono::Duration::days(*days));
            Event::created("src", p)
        })
        .collect();
    archive(&cfg, &log, dir.path(), &evs).await;
    let a = Archive::open(&cfg).unwrap();
    let mut o = opts("2000-01-01T00:00:00Z"); // rewrite nothing
    o.expire_before = Some(now - chrono::Duration::days(10));
    let r = compact(&a, "posts", o).await.unwrap();
    assert_eq!((r.dirs_expired, r.dirs_rewritten, r.generation), (2, 0, 1), "{r:?}");
    assert_eq!(csv(&cfg, "select status_id from events order by status_id").await, "status_id\n3\n4\n");
    assert_eq!(rows(&cfg, "posts").await.len(), 2, "the old objects are deleted");
}

/// The lease: a second run while one holds it fails naming the holder and
/// changes nothing; after the release the run goes ahead and leaves no lease
/// behind; a stale lease (past its expiry) is taken over by exactly one of
/// two runs racing for it, and the run it was taken from finds out at its
/// next step.
async fn one_compaction_at_a_time(cfg: ArchiveSinkConfig) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    archive(&cfg, &log, dir.path(), &history()).await;
    let archive_ = Archive::open(&cfg).unwrap();
    let before = objects(&cfg, "posts").await;

    let held = lease::acquire(&archive_, "posts", "host-a pid 1", Duration::from_secs(3600)).await.unwrap();
    let e = compact(&archive_, "posts", opts("2026-12-10T00:00:00Z")).await.expect_err("the lease is held");
    assert!(e.message.contains("is held by host-a pid 1") && e.message.contains("until"), "{}", e.message);
    let e = lease::acquire(&archive_, "posts", "host-b", Duration::from_secs(60)).await.expect_err("held");
    assert!(e.message.contains("host-a pid 1"), "{}", e.message);
    let during: Vec<String> = objects(&cfg, "posts").await.into_iter().filter(|n| n != LEASE).collect();
    assert_eq!(during, before, "the refused run changed nothing");
    held.release().await.unwrap();
    let r = compact(&archive_, "posts", opts("2026-12-10T00:00:00Z")).await.unwrap();
    assert_eq!(r.generation, 1, "{r:?}");
    let names = objects(&cfg, "posts").await;
    assert!(!names.iter().any(|n| n.contains(LEASE) || n.contains(TAKEOVER)), "released: {names:?}");

    // A run that died: its lease expired. Two runs race to take it over; one wins.
    let mut dead = lease::acquire(&archive_, "posts", "dead run", Duration::ZERO).await.unwrap();
    let (a, b) = tokio::join!(
        lease::acquire(&archive_, "posts", "taker-a", Duration::from_secs(3600)),
        lease::acquire(&archive_, "posts", "taker-b", Duration::from_secs(3600))
    );
    let (winner, loser) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        (a, b) => panic!("exactly one taker wins: {:?} / {:?}", a.map(|g| g.lease().clone()), b.map(|g| g.lease().clone())),
    };
    assert!(loser.message.contains("is running"), "{}", loser.message);
    let e = dead.renew().await.expect_err("the dead run's lease was taken over");
    assert!(e.message.contains("lost the compaction lease") && e.message.contains(&winner.lease().owner), "{}", e.message);
    let e = compact(&archive_, "posts", opts("2026-12-10T00:00:00Z")).await.expect_err("the winner holds it");
    assert!(e.message.contains(&winner.lease().owner), "{}", e.message);
    winner.release().await.unwrap();

    // A run of this host whose process is gone (killed): its lease is stale before it expires.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let killed = lease::acquire(&archive_, "posts", "killed run", Duration::from_secs(3600)).await.unwrap();
    let mut l = killed.lease().clone();
    l.pid = gone;
    let path = archive_.path(&format!("posts/{LEASE}"));
    archive_.store.put(&path, serde_json::to_vec(&l).unwrap().into()).await.unwrap();
    let taker = lease::acquire(&archive_, "posts", "next run", Duration::from_secs(3600)).await.expect("the holder's process is gone");
    assert_eq!(taker.lease().owner, "next run");
    taker.release().await.unwrap();
    compact(&archive_, "posts", opts("2026-12-10T00:00:00Z")).await.unwrap();
    let names = objects(&cfg, "posts").await;
    assert!(!names.iter().any(|n| n.contains(LEASE) || n.contains(TAKEOVER)), "released, marker removed: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_compaction_at_a_time_per_dataset_locally() {
    let dir = tempfile::tempdir().unwrap();
    one_compaction_at_a_time(local_config(&dir.path().join("archive"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_compaction_at_a_time_per_dataset_on_minio() {
    let endpoint = shared_endpoint();
    let bucket = random_bucket("lease");
    create_bucket(&endpoint, &bucket).await;
    one_compaction_at_a_time(s3_config(&endpoint, &bucket, "history")).await;
}
