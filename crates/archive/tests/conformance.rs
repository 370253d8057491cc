//! The archive channel through the sink conformance suite
//! (`fedistream_core::testing::sink_conformance`), on a local directory and on
//! a real MinIO server of the test's own (stopped and restarted for the
//! transient-failure check): a batch committed only once the store holds it,
//! transient failures retried, and a crash between upload and commit
//! redelivering without a duplicate row.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use common::*;
use fedistream_archive::{ArchiveSink, ArchiveSinkConfig};
use fedistream_core::testing::sink_conformance::{run_all, SinkHarness};
use fedistream_core::{Event, Sink};

/// A local directory: a new one per check (each check starts a new log).
struct Local {
    dir: tempfile::TempDir,
    current: Mutex<PathBuf>,
}

impl Local {
    fn config(&self) -> ArchiveSinkConfig {
        local_config(&self.current.lock().unwrap())
    }
}

#[async_trait]
impl SinkHarness for Local {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(ArchiveSink::new(self.config()))
    }
    async fn delivered(&self) -> Vec<String> {
        rows(&self.config(), "posts").await.into_iter().map(|r| r.2).collect()
    }
    fn refused_event(&self) -> Result<Event, String> {
        Err("the archive stores every event (an undecodable record is rejected, tested in archive_local.rs)".into())
    }
    async fn fail_transiently(&self) -> Result<(), String> {
        // The dataset directory's place is taken by a file: every write fails
        // (not a directory) until it is removed. Root ignores permissions, so
        // this is how a local directory fails here.
        let dir = self.current.lock().unwrap().clone();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("posts"), b"in the way").unwrap();
        Ok(())
    }
    async fn recover(&self) {
        let dir = self.current.lock().unwrap().clone();
        std::fs::remove_file(dir.join("posts")).unwrap();
    }
    fn exactly_once(&self) -> bool {
        true
    }
    async fn begin(&self, check: &'static str) {
        *self.current.lock().unwrap() = self.dir.path().join(check.replace(' ', "-"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_channel_on_a_local_directory_passes_the_sink_conformance_suite() {
    let h = Local { dir: tempfile::tempdir().unwrap(), current: Mutex::new(PathBuf::new()) };
    let r = run_all(&h, "archive-local").await;
    assert_eq!(r.passed, ["batch accepted", "transient error retried", "crash between write and commit"], "{r:?}");
}

/// MinIO: a bucket per check; the transient failure stops the server.
struct S3 {
    minio: tokio::sync::Mutex<Minio>,
    endpoint: String,
    bucket: Mutex<String>,
}

impl S3 {
    fn config(&self) -> ArchiveSinkConfig {
        s3_config(&self.endpoint, &self.bucket.lock().unwrap(), "archive")
    }
}

#[async_trait]
impl SinkHarness for S3 {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(ArchiveSink::new(self.config()))
    }
    async fn delivered(&self) -> Vec<String> {
        rows(&self.config(), "posts").await.into_iter().map(|r| r.2).collect()
    }
    fn refused_event(&self) -> Result<Event, String> {
        Err("the archive stores every event".into())
    }
    async fn fail_transiently(&self) -> Result<(), String> {
        self.minio.lock().await.stop();
        Ok(())
    }
    async fn recover(&self) {
        self.minio.lock().await.restart().await;
    }
    fn exactly_once(&self) -> bool {
        true
    }
    async fn begin(&self, check: &'static str) {
        let b = random_bucket(&check.split(' ').next().unwrap_or("c").chars().take(8).collect::<String>());
        create_bucket(&self.endpoint, &b).await;
        *self.bucket.lock().unwrap() = b;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_channel_on_minio_passes_the_sink_conformance_suite() {
    let minio = Minio::start().await;
    let endpoint = minio.endpoint.clone();
    let h = S3 { minio: tokio::sync::Mutex::new(minio), endpoint, bucket: Mutex::new(String::new()) };
    let r = run_all(&h, "archive-s3").await;
    assert_eq!(r.passed, ["batch accepted", "transient error retried", "crash between write and commit"], "{r:?}");
}
