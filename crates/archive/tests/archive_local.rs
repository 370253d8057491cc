//! The archive channel on a local directory, through the runtime: rows read
//! back equal the events (nested lists, types, Hive directories, names from
//! log positions), a quiet channel writes its buffer out by age and commits
//! only then, the size bound splits objects without gaps or duplicates, JSON
//! Lines with gzip, and a full disk reported as such with nothing lost.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, ListArray, StringArray, StructArray, TimestampMicrosecondArray, UInt64Array};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::*;
use fedistream_archive::{ArchiveSinkConfig, Format};
use fedistream_core::component::{SourceBatch, StatusDoc, STATUS_NS};
use fedistream_core::post::{BoostOf, Media, Mention};
use fedistream_core::runtime::{self, Pipeline, RetryConfig};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::testing::{created, post};
use fedistream_core::{Event, EventKind, Log, Source, SourceContext, SourceError};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;

fn pipeline(dir: &Path, log: Arc<SqliteLog>, source: Box<dyn Source>, cfg: ArchiveSinkConfig, max_records: usize) -> Pipeline {
    archive_pipeline(
        dir,
        log,
        source,
        cfg,
        max_records,
        RetryConfig { initial: Duration::from_millis(5), max: Duration::from_millis(50), pause: Duration::from_millis(50) },
    )
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Events with everything the schema has: two hours, nested lists, a boost, an edit and a delete.
fn rich_events() -> Vec<Event> {
    let mut a = post("alice@example.org", 1, "first #rust post");
    a.created_at = Some(at("2026-12-07T08:15:00Z"));
    a.tags = vec!["rust".into(), "fediverse".into()];
    a.mentions = vec![Mention { acct: "bob@example.net".into(), url: Some("https://example.net/@bob".into()) }];
    a.media = vec![Media {
        kind: "image".into(),
        url: Some("https://example.org/m/1.png".into()),
        preview_url: None,
        description: Some("a cat".into()),
    }];
    a.application = Some("Tusky".into());
    a.counts.reblogs = 7;
    let mut b = post("alice@example.org", 2, "");
    b.created_at = Some(at("2026-12-07T09:01:00Z"));
    b.boost_of = Some(BoostOf {
        id: "99".into(),
        uri: "https://example.net/users/bob/statuses/99".into(),
        url: None,
        account: "bob@example.net".into(),
    });
    b.language = None;
    let mut a2 = a.clone();
    a2.edited_at = Some(at("2026-12-07T08:20:00Z"));
    a2.content_html = "<p>first #rust post, edited</p>".into();
    let mut del = Event::created("src", b.clone());
    del.kind = EventKind::Deleted;
    del.post = None;
    del.observed_at = at("2026-12-07T10:30:00Z");
    vec![Event::created("src", a), Event::created("src", b), Event::updated("src", a2), del]
}

fn read_all(dir: &Path) -> Vec<(String, arrow::array::RecordBatch)> {
    let mut files: Vec<PathBuf> = walk(&dir.join("posts")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|f| {
            let rel = f.strip_prefix(dir).unwrap().display().to_string();
            let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap()).unwrap().build().unwrap();
            r.map(move |b| (rel.clone(), b.unwrap())).collect::<Vec<_>>()
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_back_equal_the_events_in_hive_directories_named_by_log_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let evs = rich_events();
    let archive = dir.path().join("archive");
    let summary =
        runtime::run(pipeline(dir.path(), log.clone(), once(&evs), local_config(&archive), 100), CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(committed(&log).await, 4);

    let batches = read_all(&archive);
    let files: Vec<&str> = batches.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files,
        [
            "posts/date=2026-12-07/hour=08/part-0-1-3.parquet",
            "posts/date=2026-12-07/hour=09/part-0-2-2.parquet",
            "posts/date=2026-12-07/hour=10/part-0-4-4.parquet"
        ],
        "one object per hour directory, named by first and last log offset"
    );
    let (_, h08) = &batches[0];
    assert_eq!(h08.num_rows(), 2);
    let col = |b: &arrow::array::RecordBatch, n: &str| b.column_by_name(n).unwrap().clone();
    let s = |b: &arrow::array::RecordBatch, n: &str, i: usize| {
        let c = col(b, n);
        let a = c.as_any().downcast_ref::<StringArray>().unwrap();
        (!a.is_null(i)).then(|| a.value(i).to_string())
    };
    assert_eq!(s(h08, "kind", 0).as_deref(), Some("created"));
    assert_eq!(s(h08, "kind", 1).as_deref(), Some("updated"));
    assert_eq!(s(h08, "key", 0), Some(evs[0].key.clone()));
    assert_eq!(s(h08, "account", 0).as_deref(), Some("alice@example.org"));
    assert_eq!(s(h08, "application", 0).as_deref(), Some("Tusky"));
    assert_eq!(s(h08, "version", 0), Some(evs[0].fingerprint()));
    assert_ne!(s(h08, "version", 0), s(h08, "version", 1), "an edit is a new version");
    let offsets = col(h08, "log_offset");
    assert_eq!(offsets.as_any().downcast_ref::<UInt64Array>().unwrap().values().to_vec(), [1, 3]);
    let created = col(h08, "created_at");
    let created = created.as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
    assert_eq!(created.value(0), at("2026-12-07T08:15:00Z").timestamp_micros());
    assert_eq!(created.timezone(), Some("UTC"));
    let tags = col(h08, "tags");
    let tags = tags.as_any().downcast_ref::<ListArray>().unwrap();
    let t0: Vec<String> = tags.value(0).as_string::<i32>().iter().map(|v| v.unwrap().to_string()).collect();
    assert_eq!(t0, ["rust", "fediverse"]);
    let mentions = col(h08, "mentions");
    let m0 = mentions.as_any().downcast_ref::<ListArray>().unwrap().value(0);
    let m0 = m0.as_any().downcast_ref::<StructArray>().unwrap();
    assert_eq!(m0.column_by_name("acct").unwrap().as_string::<i32>().value(0), "bob@example.net");
    let media = col(h08, "media");
    let md = media.as_any().downcast_ref::<ListArray>().unwrap().value(0);
    let md = md.as_any().downcast_ref::<StructArray>().unwrap();
    assert_eq!(md.column_by_name("description").unwrap().as_string::<i32>().value(0), "a cat");
    let reblogs = col(h08, "reblogs_count");
    assert_eq!(reblogs.as_any().downcast_ref::<UInt64Array>().unwrap().value(0), 7);

    let (_, h09) = &batches[1];
    assert_eq!(s(h09, "boost_of_account", 0).as_deref(), Some("bob@example.net"));
    assert_eq!(s(h09, "language", 0), None);
    let (_, h10) = &batches[2];
    assert_eq!(s(h10, "kind", 0).as_deref(), Some("deleted"));
    assert_eq!(s(h10, "content_text", 0), None, "a deletion has no post columns");
    assert!(col(h10, "tags").is_null(0));
}

/// Emits one batch, then stays open until shutdown (a quiet account).
struct Quiet(Vec<Event>);

#[async_trait]
impl Source for Quiet {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        ctx.emitter.emit(SourceBatch { events: fedistream_core::event::encode_all(self.0), state: vec![] }).await?;
        ctx.shutdown.cancelled().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_channel_writes_its_buffer_out_by_age_and_commits_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let evs: Vec<Event> = (1..=3).map(|n| created("src", "quiet@example.org", n, "hello")).collect();
    let archive = dir.path().join("archive");
    let mut cfg = local_config(&archive);
    cfg.max_file_age = Duration::from_millis(300);
    let stop = CancellationToken::new();
    let run = tokio::spawn(runtime::run(pipeline(dir.path(), log.clone(), Box::new(Quiet(evs.clone())), cfg.clone(), 100), stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let held = rows(&cfg, "posts").await.len() as u64;
        let c = committed(&log).await;
        assert!(c <= held, "committed {c} while the archive holds {held}");
        if c == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the buffer never went out by age (holds {held}, committed {c})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Written out while the source still runs: by age, not by the shutdown's flush.
    assert!(!run.is_finished());
    let keys: Vec<String> = rows(&cfg, "posts").await.into_iter().map(|r| r.2).collect();
    assert_eq!(keys, evs.iter().map(|e| e.key.clone()).collect::<Vec<_>>());
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_bound_splits_objects_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let text = "some words ".repeat(50);
    let evs: Vec<Event> = (1..=60).map(|n| created("src", "big@example.org", n, &text)).collect();
    let archive = dir.path().join("archive");
    let mut cfg = local_config(&archive);
    cfg.max_file_bytes = 20_000; // about a dozen events of ~1.5 KB
    let summary = runtime::run(pipeline(dir.path(), log.clone(), once(&evs), cfg.clone(), 7), CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let objects = objects(&cfg, "posts").await;
    assert!(objects.len() >= 4, "several objects: {objects:?}");
    let offsets: Vec<u64> = rows(&cfg, "posts").await.into_iter().map(|r| r.1).collect();
    assert_eq!(offsets, (1..=60).collect::<Vec<_>>(), "every record once");
    assert_eq!(committed(&log).await, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_with_gzip_hold_the_file_channels_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let evs: Vec<Event> = (1..=5).map(|n| created("src", "j@example.org", n, "json")).collect();
    let archive = dir.path().join("archive");
    let mut cfg = local_config(&archive);
    cfg.format = Format::Jsonl;
    cfg.gzip = true;
    runtime::run(pipeline(dir.path(), log.clone(), once(&evs), cfg.clone(), 100), CancellationToken::new()).await.unwrap();
    let objects = objects(&cfg, "posts").await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert!(objects[0].ends_with("/part-0-1-5.jsonl.gz"), "{objects:?}");
    let f = std::fs::File::open(archive.join("posts").join(&objects[0])).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(f), &mut text).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["offset"], 1);
    assert_eq!(lines[4]["key"], evs[4].key.as_str());
}

/// A tmpfs of `size` mounted at `at`, unmounted on drop (needs root, as the test machines run).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out =
            std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output().unwrap();
        assert!(out.status.success(), "mounting a small tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_such_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "256k");
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![b'x'; 250 << 10]).unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    // Random text: Parquet cannot compress it into the few KiB left.
    let evs: Vec<Event> = (1..=20).map(|n| created("src", "full@example.org", n, &noise(2000, n))).collect();
    let archive = disk.0.join("archive");
    let cfg = local_config(&archive);
    let run = tokio::spawn(runtime::run(pipeline(dir.path(), log.clone(), once(&evs), cfg.clone(), 100), CancellationToken::new()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let doc: Option<StatusDoc> = log.state_get(STATUS_NS, "channel:archive").await.unwrap().and_then(|v| serde_json::from_str(&v).ok());
        if doc.as_ref().is_some_and(|d| d.counters.get("retries").copied().unwrap_or(0) >= 2) {
            let d = doc.unwrap();
            assert!(d.detail.as_deref().is_some_and(|m| m.contains("is full")), "{d:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the channel never hit the full disk: {doc:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(committed(&log).await, 0);
    std::fs::remove_file(&filler).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), run).await.unwrap().unwrap().unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let offsets: Vec<u64> = rows(&cfg, "posts").await.into_iter().map(|r| r.1).collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>(), "every record once");
    let leftovers: Vec<PathBuf> = walk(&archive).into_iter().filter(|p| p.extension().is_none_or(|e| e != "parquet")).collect();
    assert!(leftovers.is_empty(), "no staging files left behind: {leftovers:?}");
}

/// `n` pseudo-random letters (incompressible enough), different per seed.
pub fn noise(n: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}
