//! The `account_stats` processor killed (-9) at random points and restarted
//! gives exactly the statistics of one uninterrupted run, byte for byte: its
//! per-account state, its records and its input offset commit together. The
//! harness is processor_kill9.rs's, on the SQLite log, and on Kafka with
//! `--role process` workers whose partitions (and state) move when one is
//! killed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;

const KILLS: usize = 20;

fn generate(dir: &Path) -> std::path::PathBuf {
    generate_input(dir, 600, 12, 7)
}

fn config(dir: &Path, input: &Path) -> String {
    config_on(dir, input, None)
}

fn config_on(dir: &Path, input: &Path, kafka: Option<(&str, &str)>) -> String {
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

[processors.stats]
type = \"account_stats\"
windows = [\"hour\", \"day\"]
allowed_lateness = \"5m\"

[channels.statsfile]
type = \"file\"
path = {out}

[[routes]]
from = [\"stats\"]
to = [\"statsfile\"]
",
        input = toml_path(input),
        out = toml_path(&dir.join("stats.jsonl")),
    )
}

/// The stats records of a finished output file, each exactly once (panics on a duplicate).
fn records(path: &Path) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for e in read_events(path) {
        let mut w = e.clone();
        // The topic's own positions are not part of the result.
        w.as_object_mut().unwrap().remove("partition");
        w.as_object_mut().unwrap().remove("offset");
        assert_eq!(w["final"], true, "no early emission configured: {w}");
        // The replay source stamps interaction counts with the time it read
        // them, so each run's log holds different observation times (the
        // events' own input, not the processor's doing): leave them out.
        // (Totals records have no engagement.)
        if let Some(e) = w.get_mut("engagement").and_then(|e| e.as_object_mut()) {
            e.remove("observed_at");
        }
        let w = w.to_string();
        assert!(set.insert(w.clone()), "record emitted twice: {w}");
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_stats_killed_at_random_points_give_the_stats_of_one_run_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());

    let whole = tempfile::tempdir().unwrap();
    let cfg = write_file(whole.path(), "c.toml", &config(whole.path(), &input));
    let p = Spawn::new(whole.path(), "whole", &["run", "--config", cfg.to_str().unwrap(), "--worker", "w"]).start();
    let s = p.wait_exit(Duration::from_secs(240)).await;
    assert!(s.success(), "{s}\n{}", p.stderr());
    let want = records(&whole.path().join("stats.jsonl"));
    assert!(want.len() >= 40, "600 posts of 12 accounts over hours close many windows: {}", want.len());

    let killed_dir = tempfile::tempdir().unwrap();
    let cfg = write_file(killed_dir.path(), "c.toml", &config(killed_dir.path(), &input));
    let args = ["run", "--config", cfg.to_str().unwrap(), "--worker", "w"];
    let killed = kill_at_random_points(killed_dir.path(), &args, KILLS, 13).await;
    assert!(killed >= KILLS / 2, "only {killed} kills landed before a run finished: the test did not test much");
    let got = records(&killed_dir.path().join("stats.jsonl"));
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

#[cfg(feature = "kafka")]
/// On Kafka: ingest alone; then the processor on `--role process` workers,
/// one of them killed (-9) at random points and restarted (each restart a new
/// group member: its partitions, with their state, move to the other worker
/// or to the next incarnation after the session timeout) while a second
/// worker runs; then `--role deliver`. The statistics of one `all` run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_stats_on_kafka_workers_that_lose_partitions_give_the_stats_of_one_run() {
    let brokers = std::env::var("FEDISTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());

    let whole = tempfile::tempdir().unwrap();
    let cfg = write_file(whole.path(), "c.toml", &config_on(whole.path(), &input, Some((&brokers, &pipeline_name("stats-whole")))));
    let p = Spawn::new(whole.path(), "whole", &["run", "--config", cfg.to_str().unwrap(), "--worker", "w"]).start();
    let s = p.wait_exit(Duration::from_secs(240)).await;
    assert!(s.success(), "{s}\n{}", p.stderr());
    let want = records(&whole.path().join("stats.jsonl"));
    assert!(want.len() >= 40, "{}", want.len());

    let work = tempfile::tempdir().unwrap();
    let cfg = write_file(work.path(), "c.toml", &config_on(work.path(), &input, Some((&brokers, &pipeline_name("stats-moved")))));
    let cfg = cfg.to_str().unwrap();
    let ingest = Spawn::new(work.path(), "ingest", &["run", "--config", cfg, "--role", "ingest", "--worker", "i"]).start();
    let s = ingest.wait_exit(Duration::from_secs(240)).await;
    assert!(s.success(), "{s}\n{}", ingest.stderr());

    let steady =
        Spawn::new(work.path(), "steady", &["run", "--config", cfg, "--role", "process", "--worker", "s", "--until-caught-up"]).start();
    let killed =
        kill_at_random_points(work.path(), &["run", "--config", cfg, "--role", "process", "--worker", "k", "--until-caught-up"], 4, 17)
            .await;
    let s = steady.wait_exit(Duration::from_secs(240)).await;
    assert!(s.success(), "{s}\n{}", steady.stderr());
    eprintln!("process worker killed {killed} times");

    let d =
        Spawn::new(work.path(), "deliver", &["run", "--config", cfg, "--role", "deliver", "--worker", "d", "--until-caught-up"]).start();
    let s = d.wait_exit(Duration::from_secs(240)).await;
    assert!(s.success(), "{s}\n{}", d.stderr());
    let got = records(&work.path().join("stats.jsonl"));
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);

    // `fedistream stats` holds the processor's state of every input partition
    // (kept per partition, each in its own process): the same as one run's.
    let top = |dir: &Path, cfg: &str| {
        let args = ["stats", "--config", cfg, "--top", "accounts", "--since", "3650d", "--format", "json", "--limit", "1000"];
        let (s, out, err) = run_to_end(dir, "stats-top", &args);
        assert!(s.success(), "{s}\n{err}");
        out
    };
    let whole_cfg = whole.path().join("c.toml");
    let (moved, one_run) = (top(work.path(), cfg), top(whole.path(), whole_cfg.to_str().unwrap()));
    assert!(moved.contains('@'), "the state names accounts: {moved}");
    assert_eq!(moved, one_run);
}
