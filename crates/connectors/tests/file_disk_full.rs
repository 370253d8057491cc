//! The file channel when its disk fills up in the middle of a batch: the failed
//! batch must leave the file as it was (no partial batch, no torn line in the
//! middle of the file), and once space returns every event is in the file
//! exactly once. The disk is a small tmpfs (mounting one needs root, as the
//! test machines run; the test fails, it does not skip, without it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fedistream_connectors::file::{FileSink, FileSinkConfig};
use fedistream_core::component::{SourceBatch, StatusDoc, STATUS_NS};
use fedistream_core::runtime::{self, BatchConfig, ChannelSpec, DeliveryConfig, Pipeline, RetryConfig, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::testing::{created, VecSource};
use fedistream_core::{DeadLetter, Log};
use tokio_util::sync::CancellationToken;

/// A tmpfs of `size` mounted at `at`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill a disk, which needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_mid_batch_leaves_no_partial_batch_and_each_event_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "256k");
    // Fill the disk but for about 16 KiB: the batch (~40 events of 2 KB) cannot fit.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![b'x'; 240 << 10]).unwrap();
    let out = disk.0.join("out.jsonl");

    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let text = "a fairly long post ".repeat(80);
    let evs: Vec<_> = (1..=40).map(|n| created("src", "a@example.org", n, &text)).collect();
    let delivery = DeliveryConfig::default();
    let sink = FileSink::new(FileSinkConfig { path: out.clone(), rotate_bytes: 0, rotate_age: None, fsync: true, delivery });
    let p = Pipeline {
        log: log.clone(),
        sources: vec![SourceSpec::new(
            "src",
            Box::new(VecSource { batches: vec![SourceBatch { events: fedistream_core::event::encode_all(evs.clone()), state: vec![] }] }),
            DeadLetter::new(dir.path().join("dl-src.jsonl")),
        )],
        processors: vec![],
        channels: vec![ChannelSpec {
            name: "file".into(),
            group: "g.file".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(sink),
            route: None,
            batch: BatchConfig { max_records: 100, max_bytes: 16 << 20, linger: Duration::ZERO },
            retry: RetryConfig { initial: Duration::from_millis(5), max: Duration::from_millis(50), pause: Duration::from_millis(50) },
            dead_letter: DeadLetter::new(dir.path().join("dl.jsonl")),
        }],
        options: RuntimeOptions {
            status_interval: Duration::from_millis(10),
            drain_deadline: Duration::from_secs(120),
            ..Default::default()
        },
        progress: None,
    };
    let run = tokio::spawn(runtime::run(p, CancellationToken::new()));

    // Wait until the channel has failed on the full disk a few times.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let doc: Option<StatusDoc> = log.state_get(STATUS_NS, "channel:file").await.unwrap().and_then(|v| serde_json::from_str(&v).ok());
        if doc.as_ref().is_some_and(|d| d.counters.get("retries").copied().unwrap_or(0) >= 3) {
            let d = doc.unwrap();
            assert_eq!(d.state, "retrying", "{d:?}");
            assert!(d.detail.as_deref().is_some_and(|m| m.contains("No space left")), "{d:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the channel never hit the full disk: {doc:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    assert_eq!(len, 0, "a failed batch leaves the file as it was before it (nothing of the batch)");

    // Space comes back: everything is delivered, once.
    std::fs::remove_file(&filler).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), run).await.unwrap().unwrap().unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'));
    let keys: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every line whole")["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, evs.iter().map(|e| e.key.clone()).collect::<Vec<_>>(), "each event once, in order");
    let _: Arc<dyn Log> = log;
}
