//! Finite runs in Kafka mode, through the binary, on a real broker (`scripts/kafka
//! up`) and schema registry (`scripts/registry up`): `--role all` with a replay
//! ends by itself once everything is delivered (as on the embedded log, with the
//! same summary), `--role ingest` ends when its sources finish, `--role deliver`
//! runs until signalled unless `--until-caught-up`; and `examples/kafka.toml`
//! runs with one command (its Avro topic created by the channel).

// Needs the build's features: Kafka mode, with the archive channel and `fedistream sql`.
#![cfg(all(feature = "kafka", feature = "sql"))]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use fedistream_kafka::testing::{brokers, schema_registry};

/// A run over the sample replay on one broker: connecting, a consumer group
/// joining, transactions; generous on a loaded machine.
const RUN: Duration = Duration::from_secs(120);

/// The sample replay into a file channel `out` (`<dir>/out-{worker}.jsonl`), on
/// the Kafka log (`Some(brokers)`) or the embedded one.
fn replay_config(dir: &Path, kafka: Option<(&str, &str)>) -> String {
    let log = match kafka {
        Some((brokers, pipeline)) => format!(
            "backend = \"kafka\"\ndead_letter_dir = {}\n[log.kafka]\nbrokers = {}\npipeline = {}\npartitions = 3\nsession_timeout = \"6s\"\n",
            toml_path(&dir.join("dead-letter")),
            toml_str(brokers),
            toml_str(pipeline)
        ),
        None => format!("path = {}\n", toml_path(&dir.join("log.db"))),
    };
    format!(
        "[log]\n{log}\n[sources.r]\ntype = \"replay\"\npath = {sample}\n\n[channels.out]\ntype = \"file\"\npath = {out}\n",
        sample = toml_path(&repo_root().join("examples/data/sample-posts.jsonl")),
        out = toml_path(&dir.join("out-{worker}.jsonl")),
    )
}

fn run(dir: &Path, name: &str, cfg: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["run", "--config", cfg.to_str().unwrap(), "--drain-deadline", "10s"];
    args.extend_from_slice(extra);
    Spawn::new(dir, name, &args).start()
}

/// `fedistream status --json`.
fn status(dir: &Path, cfg: &Path) -> serde_json::Value {
    let (s, out, err) = run_to_end(dir, "status", &["status", "--json", "--config", cfg.to_str().unwrap()]);
    assert!(s.success(), "status: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The lag of the group whose name ends with `.channel`.
fn group_lag(status: &serde_json::Value, channel: &str) -> Option<u64> {
    let groups = status["groups"].as_array()?;
    groups.iter().find(|g| g["group"].as_str().is_some_and(|n| n.ends_with(&format!(".{channel}"))))?["lag"].as_u64()
}

/// The keys of the events the embedded log's run delivers, and its summary.
async fn on_sqlite(dir: &Path) -> (BTreeSet<String>, String) {
    let sqlite = dir.join("sqlite");
    std::fs::create_dir_all(&sqlite).unwrap();
    let cfg = write_file(&sqlite, "sqlite.toml", &replay_config(&sqlite, None));
    let p = run(&sqlite, "sqlite", &cfg, &["--worker", "w"]);
    let s = p.wait_exit(RUN).await;
    assert!(s.success(), "{}", p.stderr());
    let events = read_events(&sqlite.join("out-w.jsonl"));
    assert_each_created_once(&events);
    (created_keys(&events).into_iter().collect(), p.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_all_with_a_replay_source_exits_after_delivering_everything_once() {
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let (expected, sqlite_err) = on_sqlite(dir.path()).await;
    assert!(expected.len() > 50, "the sample has posts: {}", expected.len());

    let cfg = write_file(dir.path(), "kafka.toml", &replay_config(dir.path(), Some((&brokers, &pipeline_name("finite")))));
    let p = run(dir.path(), "all", &cfg, &["--role", "all", "--worker", "w"]);
    let s = p.wait_exit(RUN).await;
    let err = p.stderr();
    assert!(s.success(), "exits by itself, successfully ({s}):\n{err}");
    assert!(err.contains("Every channel has delivered everything in the log"), "{err}");
    let file = dir.path().join("out-w.jsonl");
    let events = read_events(&file);
    assert_each_created_once(&events);
    assert_eq!(created_keys(&events).into_iter().collect::<BTreeSet<_>>(), expected, "every post the embedded log delivers");
    // The same summary as on the embedded log.
    for line in ["log", "source  r", "channel out"] {
        assert_eq!(summary_counters(&err, line), summary_counters(&sqlite_err, line), "`{line}`:\n{err}\n---\n{sqlite_err}");
    }
    assert_eq!(group_lag(&status(dir.path(), &cfg), "out"), Some(0));

    // Again: the replay's posts are in the log already; nothing is delivered twice.
    let p = run(dir.path(), "again", &cfg, &["--role", "all", "--worker", "w"]);
    let s = p.wait_exit(RUN).await;
    let err = p.stderr();
    assert!(s.success(), "{err}");
    assert_eq!(read_events(&file).len(), events.len(), "the second run delivered nothing:\n{err}");
    assert_eq!(summary_counters(&err, "log").get("duplicates_suppressed"), Some(&(expected.len() as u64)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_ends_with_its_sources_and_deliver_until_caught_up_exits_at_zero_lag() {
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "kafka.toml", &replay_config(dir.path(), Some((&brokers, &pipeline_name("caught-up")))));

    // Ingest alone ends when its (finite) sources have.
    let ingest = run(dir.path(), "ingest", &cfg, &["--role", "ingest", "--worker", "i"]);
    let s = ingest.wait_exit(RUN).await;
    let err = ingest.stderr();
    assert!(s.success(), "{err}");
    let appended = summary_counters(&err, "log")["appended"];
    assert!(appended > 50, "{err}");
    assert!(!dir.path().join("out-i.jsonl").exists(), "no channel in an ingest process");

    // Deliver without the flag keeps running once it has delivered everything.
    let file = dir.path().join("out-d.jsonl");
    let d = run(dir.path(), "deliver", &cfg, &["--role", "deliver", "--worker", "d"]);
    wait_for_within(
        "the deliver process to deliver the log",
        RUN,
        || (created_keys(&written_events(&file)).len() as u64 == appended).then_some(()),
        || d.stderr(),
    )
    .await;
    wait_for_within(
        "the group to show no lag",
        RUN,
        || (group_lag(&status(dir.path(), &cfg), "out") == Some(0)).then_some(()),
        || d.stderr(),
    )
    .await;
    d.assert_running();
    d.sigterm();
    assert!(d.wait_exit(DEADLINE).await.success(), "{}", d.stderr());

    // More in the log, then a deliver process that stops once it has caught up.
    let more = write_file(
        dir.path(),
        "more.jsonl",
        &std::fs::read_to_string(repo_root().join("tests/fixtures/mastodon/status_plain.json")).unwrap().replace('\n', ""),
    );
    let cfg_more = write_file(
        dir.path(),
        "more.toml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&toml_path(&repo_root().join("examples/data/sample-posts.jsonl")), &toml_path(&more)),
    );
    let ingest = run(dir.path(), "ingest-more", &cfg_more, &["--role", "ingest", "--worker", "i"]);
    assert!(ingest.wait_exit(RUN).await.success(), "{}", ingest.stderr());
    assert_eq!(summary_counters(&ingest.stderr(), "log").get("appended"), Some(&1), "{}", ingest.stderr());
    assert!(group_lag(&status(dir.path(), &cfg), "out").is_some_and(|l| l > 0), "one event to deliver");
    let d = run(dir.path(), "until-caught-up", &cfg, &["--role", "deliver", "--until-caught-up", "--worker", "d"]);
    let s = d.wait_exit(RUN).await;
    let err = d.stderr();
    assert!(s.success(), "exits by itself ({s}):\n{err}");
    assert_eq!(group_lag(&status(dir.path(), &cfg), "out"), Some(0));
    let events = read_events(&file);
    assert_each_created_once(&events);
    assert_eq!(events.len() as u64, appended + 1, "everything once, the new event too");
    assert_eq!(summary_counters(&err, "channel out").get("delivered"), Some(&1), "{err}");

    // Caught up already: it exits at once, delivering nothing.
    let d = run(dir.path(), "nothing-to-do", &cfg, &["--role", "deliver", "--until-caught-up", "--worker", "d"]);
    assert!(d.wait_exit(RUN).await.success(), "{}", d.stderr());
    assert_eq!(read_events(&file).len(), events.len());
}

#[test]
fn until_caught_up_goes_with_role_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "kafka.toml", &replay_config(dir.path(), Some(("127.0.0.1:1", "p"))));
    let (s, _, err) = run_to_end(dir.path(), "all", &["run", "--config", cfg.to_str().unwrap(), "--until-caught-up"]);
    assert_eq!(s.code(), Some(2), "{err}");
    assert!(err.contains("--until-caught-up goes with --role deliver"), "{err}");
}

/// `examples/kafka.toml` as shipped (only addresses, names and paths changed),
/// after `scripts/kafka up`, `scripts/registry up` and `scripts/s3 up`: one
/// command runs it, the Avro channel creates its topic, and the run ends once
/// the three consumer groups (an archive file, the Avro topic, the Parquet
/// archive on MinIO) have the sample; `fedistream sql` reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_example_runs_with_one_command() {
    use rdkafka::consumer::Consumer as _;
    let brokers = brokers();
    let registry = schema_registry();
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("fedistream-example-{:x}", rand::random::<u64>());
    let (endpoint, bucket) = s3_bucket("kafka-example").await;
    let text = std::fs::read_to_string(repo_root().join("examples/kafka.toml")).unwrap();
    let cfg_text = text
        .replace("\"s3://fedistream-archive/kafka\"", &toml_str(format!("s3://{bucket}/kafka")))
        .replace("\"http://127.0.0.1:9000\"", &toml_str(&endpoint))
        .replace("\"127.0.0.1:9092\"", &toml_str(&brokers))
        .replace("pipeline = \"mvp\"", &format!("pipeline = {}", toml_str(pipeline_name("example"))))
        .replace("\"fedistream.posts\"", &toml_str(&topic))
        .replace("\"http://127.0.0.1:8081/apis/ccompat/v7\"", &toml_str(&registry))
        .replace("fedistream-data/", &format!("{}/", dir.path().display()))
        .replace("examples/data/", &format!("{}/examples/data/", repo_root().display()))
        .replace("rate = 50", "");
    assert!(
        cfg_text.contains(&topic) && cfg_text.contains(&toml_str(&registry)) && cfg_text.contains(&bucket),
        "the example names its topic, registry and bucket:\n{text}"
    );
    let cfg = write_file(dir.path(), "kafka.toml", &cfg_text);
    let p = run(dir.path(), "example", &cfg, &["--worker", "w"]);
    let s = p.wait_exit(RUN).await;
    let err = p.stderr();
    assert!(s.success(), "ends by itself ({s}):\n{err}");
    assert!(err.contains("Created the Kafka channel's topic"), "{err}");

    // Both groups caught up: lag 0 in `fedistream status`.
    let v = status(dir.path(), &cfg);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "{v}");
    assert!(groups.iter().all(|g| g["lag"] == 0), "{v}");
    let (_, table, _) = run_to_end(dir.path(), "status-table", &["status", "--config", cfg.to_str().unwrap()]);
    for channel in ["archive", "topic", "history"] {
        let line = table.lines().find(|l| l.starts_with(channel)).unwrap_or_else(|| panic!("no {channel} line:\n{table}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[3], "0", "lag of {channel}:\n{table}");
    }
    let archived = read_events(&dir.path().join("kafka-archive-w.jsonl"));
    assert!(archived.len() > 50, "{} events archived", archived.len());
    assert_each_created_once(&archived);
    // The topic was created as create_topic asks, and holds one Avro record per
    // event (an idempotent producer, no transaction markers).
    let probe: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let md = probe.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    assert_eq!(partitions, 6, "create_topic = {{ partitions = 6 }}");
    let records: i64 = (0..partitions)
        .map(|p| {
            let (lo, hi) = probe.fetch_watermarks(&topic, p, Duration::from_secs(10)).unwrap();
            hi - lo
        })
        .sum();
    assert_eq!(records as usize, archived.len(), "the Avro topic and the archive hold the same events");
    // The Parquet archive on MinIO too, each event once, partitioned by instance.
    let (s, out, err) = run_to_end(
        dir.path(),
        "sql",
        &["sql", "--config", cfg.to_str().unwrap(), "--format", "csv", "select count(*) as n, count(distinct key || kind || log_offset::text || log_partition::text) as d, count(distinct instance) as i from events"],
    );
    assert!(s.success(), "{err}");
    let row: Vec<usize> = out.lines().nth(1).unwrap_or_default().split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!((row[0], row[1]), (archived.len(), archived.len()), "{out}");
    assert!(row[2] >= 1, "the instance column, from the instance=HOST/ directories: {out}");
}
