//! The archive channel against a real MinIO server (no mocks): the shared one
//! `scripts/s3 up` runs (FEDISTREAM_S3_ENDPOINT and credentials from
//! `scripts/s3 env`), or one of the test's own when it stops the server.
//! Write, list and read back; a multipart upload; wrong credentials, a missing
//! bucket and an unreachable endpoint as clear errors; the server stopped
//! mid-run and restarted with nothing lost or duplicated.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use fedistream_archive::{ArchiveSink, ArchiveSinkConfig};
use fedistream_core::component::{SourceBatch, StatusDoc, STATUS_NS};
use fedistream_core::runtime::{self, Pipeline, RetryConfig};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::testing::created;
use fedistream_core::{ErrorKind, Event, Log, Sink, SinkContext, Source, SourceContext, SourceError};
use object_store::ObjectStoreExt;
use tokio_util::sync::CancellationToken;

fn pipeline(dir: &Path, log: Arc<SqliteLog>, source: Box<dyn Source>, cfg: ArchiveSinkConfig, max_records: usize) -> Pipeline {
    archive_pipeline(
        dir,
        log,
        source,
        cfg,
        max_records,
        RetryConfig { initial: Duration::from_millis(20), max: Duration::from_millis(300), pause: Duration::from_millis(300) },
    )
}

fn noise(n: usize, seed: u64) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_to_minio_are_listed_and_read_back_once_each() {
    let endpoint = shared_endpoint();
    let bucket = random_bucket("rw");
    create_bucket(&endpoint, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let evs: Vec<Event> = (1..=25).map(|n| created("src", &format!("u{}@example.org", n % 3), n, "to the bucket")).collect();
    let cfg = s3_config(&endpoint, &bucket, "fedi/archive");
    let summary = runtime::run(pipeline(dir.path(), log.clone(), once(&evs), cfg.clone(), 10), CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(committed(&log).await, 25);
    let objects = objects(&cfg, "posts").await;
    assert!(!objects.is_empty());
    for o in &objects {
        let parts: Vec<&str> = o.split('/').collect();
        assert!(
            parts.len() == 3 && parts[0].starts_with("date=") && parts[1].starts_with("hour=") && parts[2].starts_with("part-0-"),
            "{o}"
        );
    }
    let got: Vec<(u64, String)> = rows(&cfg, "posts").await.into_iter().map(|r| (r.1, r.2)).collect();
    let want: Vec<(u64, String)> = evs.iter().enumerate().map(|(i, e)| (i as u64 + 1, e.key.clone())).collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_goes_up_as_a_multipart_upload() {
    let endpoint = shared_endpoint();
    let bucket = random_bucket("mp");
    create_bucket(&endpoint, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    // ~12 MB of text Parquet cannot squeeze under two 5 MiB parts.
    let evs: Vec<Event> = (1..=120).map(|n| created("src", "big@example.org", n, &noise(100_000, n))).collect();
    let mut cfg = s3_config(&endpoint, &bucket, "mp");
    cfg.multipart_threshold = 5 << 20;
    cfg.multipart_part_bytes = 5 << 20;
    let summary = runtime::run(pipeline(dir.path(), log.clone(), once(&evs), cfg.clone(), 200), CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let objects = objects(&cfg, "posts").await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    let a = fedistream_archive::store::Archive::open(&cfg).unwrap();
    let meta = a.store.head(&a.path(&format!("posts/{}", objects[0]))).await.unwrap();
    assert!(meta.size > 10 << 20, "{meta:?}");
    // S3's ETag of a multipart object is `<md5 of part md5s>-<parts>`.
    let etag = meta.e_tag.clone().unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-3"), "three parts: {etag}");
    let offsets: Vec<u64> = rows(&cfg, "posts").await.into_iter().map(|r| r.1).collect();
    assert_eq!(offsets, (1..=120).collect::<Vec<_>>());
}

async fn open_error(cfg: ArchiveSinkConfig) -> fedistream_core::SinkError {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let mut sink = ArchiveSink::new(cfg);
    let e = sink.open(&SinkContext::new("archive", log)).await.expect_err("open must fail");
    eprintln!("open error: {e:?}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_a_missing_bucket_and_an_unreachable_endpoint_are_clear_errors() {
    let endpoint = shared_endpoint();
    let bucket = random_bucket("err");
    create_bucket(&endpoint, &bucket).await;

    let mut cfg = s3_config(&endpoint, &bucket, "x");
    std::env::set_var("FEDISTREAM_TEST_WRONG_SECRET", "not-the-secret-1234");
    cfg.secret_access_key_env = Some("FEDISTREAM_TEST_WRONG_SECRET".into());
    let e = open_error(cfg).await;
    assert_eq!(e.kind, ErrorKind::Auth, "{e:?}");
    assert!(e.message.contains(&bucket) && e.message.contains(&endpoint), "names bucket and endpoint: {}", e.message);
    assert!(!e.message.contains("not-the-secret-1234"), "never the secret: {}", e.message);

    let missing = random_bucket("missing");
    let e = open_error(s3_config(&endpoint, &missing, "x")).await;
    assert_eq!(e.kind, ErrorKind::Config, "{e:?}");
    assert!(e.message.contains(&format!("bucket `{missing}` does not exist at {endpoint}")), "{}", e.message);

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("http://127.0.0.1:{free}");
    let e = open_error(s3_config(&nowhere, &bucket, "x")).await;
    assert_eq!(e.kind, ErrorKind::Transient, "{e:?}");
    assert!(e.message.contains(&format!("endpoint {nowhere} is unreachable for bucket `{bucket}`")), "{}", e.message);

    let mut cfg = s3_config(&endpoint, &bucket, "x");
    cfg.access_key_id_env = Some("FEDISTREAM_TEST_UNSET_VAR".into());
    let e = open_error(cfg).await;
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains("FEDISTREAM_TEST_UNSET_VAR"), "{}", e.message);
}

/// Credentials from a profile of an AWS shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`): the right profile works, a profile the
/// file lacks is a config error naming file and profile, a wrong secret in
/// the file is refused by the server (no secret in any message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_a_profile_of_the_shared_credentials_file() {
    let endpoint = shared_endpoint();
    let bucket = random_bucket("profile");
    create_bucket(&endpoint, &bucket).await;
    let (user, password) = credentials();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "# test file\n[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong-secret-5678\n\n             [archive]\naws_access_key_id = {user}\naws_secret_access_key = {password}\n"
        ),
    )
    .unwrap();
    // Only this test reads the variable (the others name their env vars).
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &file);
    let mut cfg = s3_config(&endpoint, &bucket, "p");
    cfg.access_key_id_env = None;
    cfg.secret_access_key_env = None;
    cfg.profile = Some("archive".into());
    let log_dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(log_dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let evs: Vec<Event> = (1..=3).map(|n| created("src", "p@example.org", n, "from a profile")).collect();
    let summary = runtime::run(pipeline(log_dir.path(), log.clone(), once(&evs), cfg.clone(), 10), CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(rows(&cfg, "posts").await.len(), 3);

    cfg.profile = Some("nope".into());
    let e = open_error(cfg.clone()).await;
    assert_eq!(e.kind, ErrorKind::Config, "{e:?}");
    assert!(e.message.contains("no profile `[nope]`") && e.message.contains(&file.display().to_string()), "{}", e.message);

    cfg.profile = Some("default".into());
    let e = open_error(cfg).await;
    assert_eq!(e.kind, ErrorKind::Auth, "{e:?}");
    assert!(!e.message.contains("wrong-secret-5678"), "never the secret: {}", e.message);
}

/// Emits its batches one at a time, each once the test says so, then stays
/// open until shutdown.
struct Stepped {
    batches: Vec<Vec<Event>>,
    go: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl Source for Stepped {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        for b in self.batches {
            self.go.acquire().await.unwrap().forget();
            ctx.emitter.emit(SourceBatch { events: fedistream_core::event::encode_all(b), state: vec![] }).await?;
        }
        ctx.shutdown.cancelled().await;
        Ok(())
    }
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !cond().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn retries(log: &Arc<SqliteLog>) -> u64 {
    log.state_get(STATUS_NS, "channel:archive")
        .await
        .unwrap()
        .and_then(|v| serde_json::from_str::<StatusDoc>(&v).ok())
        .and_then(|d| d.counters.get("retries").copied())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minio_stopped_mid_run_is_retried_and_nothing_is_lost_or_duplicated() {
    stopped_mid_run(false).await;
}

/// The same with every batch over `max_file_bytes`: the write-outs run in the
/// background, and the one that fails is retried from the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minio_stopped_during_a_background_write_out_is_retried_and_nothing_is_lost_or_duplicated() {
    stopped_mid_run(true).await;
}

async fn stopped_mid_run(by_size: bool) {
    let mut minio = Minio::start().await;
    let bucket = random_bucket("stop");
    create_bucket(&minio.endpoint, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let first: Vec<Event> = (1..=10).map(|n| created("src", "s@example.org", n, "before")).collect();
    let second: Vec<Event> = (11..=20).map(|n| created("src", "s@example.org", n, "while down")).collect();
    let mut cfg = s3_config(&minio.endpoint, &bucket, "a");
    cfg.max_file_age = Duration::from_millis(200);
    if by_size {
        cfg.max_file_bytes = 1;
        cfg.max_file_age = Duration::from_secs(2);
    }
    let go = Arc::new(tokio::sync::Semaphore::new(1));
    let source = Box::new(Stepped { batches: vec![first.clone(), second.clone()], go: go.clone() });
    let stop = CancellationToken::new();
    let run = tokio::spawn(runtime::run(pipeline(dir.path(), log.clone(), source, cfg.clone(), 100), stop.clone()));

    wait_for("the first batch archived and committed", async || committed(&log).await == 10).await;
    minio.stop();
    go.add_permits(1);
    // The second batch's object cannot be stored: retried, nothing committed past it.
    let before = retries(&log).await;
    wait_for("retries while the server is down", async || retries(&log).await >= before + 2).await;
    assert_eq!(committed(&log).await, 10);
    minio.restart().await;
    wait_for("the second batch archived after the restart", async || committed(&log).await == 20).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let offsets: Vec<u64> = rows(&cfg, "posts").await.into_iter().map(|r| r.1).collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>(), "every record once");
}

/// Put-if-absent: storing an object under a name that exists counts as done
/// when the existing object holds the same records, and is refused (naming
/// the object, leaving it as it was) when it holds others — on MinIO
/// (`If-None-Match: *`) and on a local directory (a hard link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_object_of_the_same_name_counts_as_stored_only_if_it_holds_the_same_records() {
    use fedistream_archive::encode::{encode, same_records, Encoding};
    use fedistream_archive::store::Archive;
    let endpoint = shared_endpoint();
    let bucket = random_bucket("ifabsent");
    create_bucket(&endpoint, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let records = |text: &str| -> Vec<fedistream_core::LogRecord> {
        (1..=3u64)
            .map(|n| {
                let ev = created("src", "a@example.org", n, text);
                fedistream_core::LogRecord::new(
                    fedistream_core::Position { partition: 0, offset: n },
                    chrono::Utc::now(),
                    serde_json::to_string(&ev).unwrap().into(),
                )
            })
            .collect()
    };
    let enc = Encoding { format: fedistream_archive::Format::Parquet, gzip: false, row_group_rows: 1024, events: true };
    let ours = encode(enc, &records("first")).unwrap();
    let same_positions = encode(enc, &records("first")).unwrap();
    let other = encode(enc, &records("other")[..2]).unwrap();
    for cfg in [s3_config(&endpoint, &bucket, "x"), local_config(&dir.path().join("archive"))] {
        let a = Archive::open(&cfg).unwrap();
        let path = a.path("posts/date=2026-12-07/hour=08/part-0-1-3.parquet");
        a.put_if_absent(&path, ours.clone(), 32 << 20, 5 << 20, same_records).await.unwrap();
        a.put_if_absent(&path, same_positions.clone(), 32 << 20, 5 << 20, same_records).await.expect("same records: stored already");
        let e = a.put_if_absent(&path, other.clone(), 32 << 20, 5 << 20, same_records).await.expect_err("other records");
        assert!(e.message.contains("part-0-1-3.parquet") && e.message.contains("other records"), "{}", e.message);
        let stored = a.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(stored, ours, "{}: the first object stays", a.display);
    }
}
