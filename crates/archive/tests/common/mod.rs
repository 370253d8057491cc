//! Test helpers: MinIO servers (the shared one `scripts/s3 up` starts, or one
//! of a test's own that it can stop and restart), buckets, and reading an
//! archive back (Parquet rows, in log order).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fedistream_archive::store::Archive;
use fedistream_archive::{ArchiveSink, ArchiveSinkConfig};
use fedistream_core::component::SourceBatch;
use fedistream_core::runtime::{BatchConfig, ChannelSpec, Pipeline, RetryConfig, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::SqliteLog;
use fedistream_core::testing::VecSource;
use fedistream_core::{DeadLetter, Event, Log, Source};
use object_store::path::Path as ObjPath;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub const ACCESS_ENV: &str = "FEDISTREAM_S3_ACCESS_KEY_ID";
pub const SECRET_ENV: &str = "FEDISTREAM_S3_SECRET_ACCESS_KEY";
pub const DEFAULT_USER: &str = "fedistream-test";
pub const DEFAULT_PASSWORD: &str = "fedistream-test-secret";

/// The credentials the MinIO servers use (scripts/s3 env, or its defaults),
/// put into the env vars the configs name.
pub fn credentials() -> (String, String) {
    let user = std::env::var(ACCESS_ENV).unwrap_or_else(|_| DEFAULT_USER.into());
    let password = std::env::var(SECRET_ENV).unwrap_or_else(|_| DEFAULT_PASSWORD.into());
    // Tests of one binary share the process env: every test sets the same values.
    std::env::set_var(ACCESS_ENV, &user);
    std::env::set_var(SECRET_ENV, &password);
    (user, password)
}

/// The shared server `scripts/s3 up` runs (FEDISTREAM_S3_ENDPOINT).
pub fn shared_endpoint() -> String {
    std::env::var("FEDISTREAM_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

pub fn s3_config(endpoint: &str, bucket: &str, prefix: &str) -> ArchiveSinkConfig {
    credentials();
    let mut c = ArchiveSinkConfig::local("unused");
    c.path = None;
    c.url = Some(format!("s3://{bucket}/{prefix}"));
    c.endpoint = Some(endpoint.to_string());
    c.allow_http = true;
    c.access_key_id_env = Some(ACCESS_ENV.into());
    c.secret_access_key_env = Some(SECRET_ENV.into());
    c.delivery.retry_initial = Duration::from_millis(20);
    c.delivery.retry_max = Duration::from_millis(300);
    c.delivery.pause = Duration::from_millis(300);
    c
}

pub fn random_bucket(label: &str) -> String {
    format!("fs-{label}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish() as u32
}

/// Create `bucket` on the server at `endpoint` (a presigned PUT of the bucket).
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    use object_store::signer::Signer;
    let (user, password) = credentials();
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(user)
        .with_secret_access_key(password)
        .build()
        .unwrap();
    let url = s3.signed_url(reqwest::Method::PUT, &ObjPath::from(""), Duration::from_secs(60)).await.unwrap();
    let resp = reqwest::Client::new().put(url).send().await.unwrap_or_else(|e| panic!("MinIO at {endpoint} unreachable: {e}"));
    let status = resp.status();
    assert!(status.is_success(), "creating bucket {bucket} at {endpoint}: {status} {}", resp.text().await.unwrap_or_default());
}

/// A MinIO server of a test's own, on a free loopback port, that the test can
/// stop and restart (data kept in its temp dir).
pub struct Minio {
    child: Option<Child>,
    pub port: u16,
    pub data: tempfile::TempDir,
    pub endpoint: String,
}

pub fn minio_bin() -> PathBuf {
    let bin = std::env::var("FEDISTREAM_MINIO_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        PathBuf::from(home).join(".cache/fedistream/minio/v0.0.0-20260212201848-7aac2a2c5b7c/minio")
    });
    assert!(bin.exists(), "no MinIO binary at {} — run scripts/s3 up (or scripts/test.sh), which installs it", bin.display());
    bin
}

impl Minio {
    pub async fn start() -> Minio {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = tempfile::tempdir().unwrap();
        let mut m = Minio { child: None, port, data, endpoint: format!("http://127.0.0.1:{port}") };
        m.restart().await;
        m
    }

    /// Start (again) on the same port and data.
    pub async fn restart(&mut self) {
        let (user, password) = credentials();
        let console = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(self.data.path().with_extension("log")).unwrap();
        let child = Command::new(minio_bin())
            .args(["server", "--quiet", "--address", &format!("127.0.0.1:{}", self.port)])
            .args(["--console-address", &format!("127.0.0.1:{console}")])
            .arg(self.data.path())
            .env("MINIO_ROOT_USER", user)
            .env("MINIO_ROOT_PASSWORD", password)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start MinIO");
        self.child = Some(child);
        wait_live(&self.endpoint).await;
    }

    /// Stop it at once (SIGKILL: no graceful finish of requests in flight).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Until the server serves requests: `/minio/health/live` answers earlier,
/// while requests still get 503 XMinioServerNotInitialized.
pub async fn wait_live(endpoint: &str) {
    let url = format!("{endpoint}/minio/health/ready");
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client.get(&url).timeout(Duration::from_secs(1)).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("MinIO at {endpoint} did not become live");
}

/// One row read back: (log partition, log offset, key, kind).
pub type Row = (u32, u64, String, String);

/// Every object of a dataset: paths relative to the archive prefix.
pub async fn objects(cfg: &ArchiveSinkConfig, dataset: &str) -> Vec<String> {
    let a = Archive::open(cfg).unwrap();
    let mut v: Vec<String> = a.list(dataset).await.unwrap_or_default();
    v.sort();
    v
}

/// The rows of a dataset's Parquet objects, sorted by log position (duplicates kept).
pub async fn rows(cfg: &ArchiveSinkConfig, dataset: &str) -> Vec<Row> {
    use arrow::array::{Array, StringArray, UInt32Array, UInt64Array};
    let a = Archive::open(cfg).unwrap();
    let mut out = Vec::new();
    for rel in a.list(dataset).await.unwrap_or_default() {
        if !rel.ends_with(".parquet") {
            continue;
        }
        let bytes = a.store.get(&a.path(&format!("{dataset}/{rel}"))).await.unwrap().bytes().await.unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        for b in reader {
            let b = b.unwrap();
            let p = b.column_by_name("log_partition").unwrap().as_any().downcast_ref::<UInt32Array>().unwrap().clone();
            let o = b.column_by_name("log_offset").unwrap().as_any().downcast_ref::<UInt64Array>().unwrap().clone();
            let k = b.column_by_name("key").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
            let kind = b.column_by_name("kind").map(|c| c.as_any().downcast_ref::<StringArray>().unwrap().clone());
            for i in 0..b.num_rows() {
                let kind = kind.as_ref().map(|c| c.value(i).to_string()).unwrap_or_default();
                out.push((p.value(i), o.value(i), if k.is_null(i) { String::new() } else { k.value(i).to_string() }, kind));
            }
        }
    }
    out.sort();
    out
}

pub fn local_config(dir: &Path) -> ArchiveSinkConfig {
    let mut c = ArchiveSinkConfig::local(dir);
    c.delivery.retry_initial = Duration::from_millis(20);
    c.delivery.retry_max = Duration::from_millis(300);
    c.delivery.pause = Duration::from_millis(300);
    c
}

pub fn shared<T>(v: T) -> Arc<T> {
    Arc::new(v)
}

/// The runtime with a finite `source` and the archive channel `cfg` (group
/// `g.archive`), batches of `max_records`, retried on `retry`.
pub fn archive_pipeline(
    dir: &Path,
    log: Arc<SqliteLog>,
    source: Box<dyn Source>,
    cfg: ArchiveSinkConfig,
    max_records: usize,
    retry: RetryConfig,
) -> Pipeline {
    Pipeline {
        log,
        sources: vec![SourceSpec::new("src", source, DeadLetter::new(dir.join("dl-src.jsonl")))],
        processors: vec![],
        channels: vec![ChannelSpec {
            name: "archive".into(),
            group: "g.archive".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(ArchiveSink::new(cfg)),
            route: None,
            batch: BatchConfig { max_records, max_bytes: 16 << 20, linger: Duration::ZERO },
            retry,
            dead_letter: DeadLetter::new(dir.join("dl.jsonl")),
        }],
        options: RuntimeOptions {
            status_interval: Duration::from_millis(10),
            drain_deadline: Duration::from_secs(120),
            ..Default::default()
        },
        progress: None,
    }
}

/// A source that emits `evs` in one batch and ends.
pub fn once(evs: &[Event]) -> Box<dyn Source> {
    Box::new(VecSource { batches: vec![SourceBatch { events: fedistream_core::event::encode_all(evs.to_vec()), state: vec![] }] })
}

/// The archive channel's committed offset (partition 0).
pub async fn committed(log: &Arc<SqliteLog>) -> u64 {
    log.info().await.unwrap().groups.iter().find(|g| g.group == "g.archive").map(|g| g.committed[0].offset).unwrap_or(0)
}
