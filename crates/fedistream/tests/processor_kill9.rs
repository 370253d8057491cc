//! A processor killed (-9) at random points and restarted gives exactly the
//! output of one uninterrupted run: its state, its outputs and its input offset
//! commit together (one SQLite transaction; one Kafka transaction). The
//! processor is the runtime's test processor (`type = "test_count"`): windows
//! of records per partition, counted per account and emitted from its timer.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;

const KILLS: usize = 20;

fn generate(dir: &Path) -> std::path::PathBuf {
    generate_input(dir, 600, 12, 5)
}

fn config(dir: &Path, input: &Path, kafka: Option<(&str, &str)>) -> String {
    let log = match kafka {
        None => format!("[log]\npath = {}\n", toml_path(&dir.join("log.db"))),
        Some((brokers, pipeline)) => format!(
            "[log]\nbackend = \"kafka\"\npath = {}\n[log.kafka]\nbrokers = {}\npipeline = {}\npartitions = 3\nsession_timeout = \"6s\"\n",
            toml_path(&dir.join("log.db")),
            toml_str(brokers),
            toml_str(pipeline)
        ),
    };
    format!(
        "{log}
[sources.r]
type = \"replay\"
path = {input}
rate = 400

[processors.counts]
type = \"test_count\"
window = 7
tick = \"30ms\"

[channels.windows]
type = \"file\"
path = {out}

[[routes]]
from = [\"counts\"]
to = [\"windows\"]
",
        input = toml_path(input),
        out = toml_path(&dir.join("windows.jsonl")),
    )
}

/// The windows a finished output file holds, each exactly once (panics on a duplicate).
fn windows(path: &Path) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for e in read_events(path) {
        let mut w = e.clone();
        // The topic's own positions are not part of the result.
        w.as_object_mut().unwrap().remove("partition");
        w.as_object_mut().unwrap().remove("offset");
        let w = w.to_string();
        assert!(set.insert(w.clone()), "window emitted twice: {w}");
    }
    set
}

async fn uninterrupted(input: &Path, kafka: Option<(&str, &str)>) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "c.toml", &config(dir.path(), input, kafka));
    let p = Spawn::new(dir.path(), "whole", &["run", "--config", cfg.to_str().unwrap(), "--worker", "w"]).start();
    let s = p.wait_exit(Duration::from_secs(240)).await;
    assert!(s.success(), "{s}\n{}", p.stderr());
    windows(&dir.path().join("windows.jsonl"))
}

async fn killed_and_restarted(input: &Path, kafka: Option<(&str, &str)>, seed: u64) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "c.toml", &config(dir.path(), input, kafka));
    let args = ["run", "--config", cfg.to_str().unwrap(), "--worker", "w"];
    let killed = kill_at_random_points(dir.path(), &args, KILLS, seed).await;
    assert!(killed >= KILLS / 2, "only {killed} kills landed before a run finished: the test did not test much");
    windows(&dir.path().join("windows.jsonl"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_at_random_points_gives_the_output_of_one_run_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let want = uninterrupted(&input, None).await;
    assert!(want.len() >= 50, "600 posts (fewer once consent rules skip some) in windows of 7: {}", want.len());
    let got = killed_and_restarted(&input, None, 11).await;
    assert_eq!(got, want);
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_at_random_points_gives_the_output_of_one_run_on_kafka() {
    let brokers = std::env::var("FEDISTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let want = uninterrupted(&input, Some((&brokers, &pipeline_name("proc-whole")))).await;
    assert!(want.len() >= 45, "600 posts (fewer once consent rules skip some) in windows of 7 over 3 partitions: {}", want.len());
    let got = killed_and_restarted(&input, Some((&brokers, &pipeline_name("proc-killed"))), 12).await;
    assert_eq!(got, want);
}

#[cfg(feature = "kafka")]
/// The roles apart on Kafka: ingest alone, then `--role process` on two
/// workers started together (whichever joins the group second takes
/// partitions, and their state, from the first), then `--role deliver`: the
/// output of one `all` run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_on_two_process_workers_give_the_output_of_one_run_on_kafka() {
    let brokers = std::env::var("FEDISTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let want = uninterrupted(&input, Some((&brokers, &pipeline_name("proc-roles-whole")))).await;

    let work = tempfile::tempdir().unwrap();
    let cfg = write_file(work.path(), "c.toml", &config(work.path(), &input, Some((&brokers, &pipeline_name("proc-roles")))));
    let cfg = cfg.to_str().unwrap();
    let ingest = Spawn::new(work.path(), "ingest", &["run", "--config", cfg, "--role", "ingest", "--worker", "i"]).start();
    let s = ingest.wait_exit(Duration::from_secs(240)).await;
    assert!(s.success(), "{s}\n{}", ingest.stderr());

    let a =
        Spawn::new(work.path(), "process-a", &["run", "--config", cfg, "--role", "process", "--worker", "a", "--until-caught-up"]).start();
    let b =
        Spawn::new(work.path(), "process-b", &["run", "--config", cfg, "--role", "process", "--worker", "b", "--until-caught-up"]).start();
    for p in [&a, &b] {
        let s = p.wait_exit(Duration::from_secs(240)).await;
        assert!(s.success(), "{s}\n{}", p.stderr());
    }
    // Whether the second worker joins before the first is done depends on the
    // machine: the output must be the same either way.

    let d =
        Spawn::new(work.path(), "deliver", &["run", "--config", cfg, "--role", "deliver", "--worker", "d", "--until-caught-up"]).start();
    let s = d.wait_exit(Duration::from_secs(240)).await;
    assert!(s.success(), "{s}\n{}", d.stderr());
    assert_eq!(windows(&work.path().join("windows.jsonl")), want);
}
