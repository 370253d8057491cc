//! `fedistream sql`'s engine over an archive: `events` holds every event,
//! `posts` the latest version of each post with deletions left out, the Hive
//! columns `date` and `hour` filter directories, output as table, CSV and
//! JSON; statements that are not queries are refused. Also on MinIO.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use fedistream_archive::sql::{print, query, session, OutputFormat};
use fedistream_archive::{ArchiveSink, ArchiveSinkConfig};
use fedistream_core::component::SourceBatch;
use fedistream_core::runtime::{self, BatchConfig, ChannelSpec, Pipeline, RetryConfig, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::testing::{post, VecSource};
use fedistream_core::{DeadLetter, Event, EventKind};
use tokio_util::sync::CancellationToken;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// a created then edited, b created then deleted, c created (a boost of d's post).
fn events() -> Vec<Event> {
    let mut a = post("alice@example.org", 1, "hello");
    a.created_at = Some(at("2026-12-07T08:10:00Z"));
    a.language = Some("en".into());
    a.application = Some("Tusky".into());
    let mut a2 = a.clone();
    a2.edited_at = Some(at("2026-12-07T08:30:00Z"));
    a2.content_text = "hello, edited".into();
    let mut b = post("bob@example.org", 2, "bonjour");
    b.created_at = Some(at("2026-12-07T09:10:00Z"));
    b.language = Some("fr".into());
    let mut c = post("carol@example.org", 3, "");
    c.created_at = Some(at("2026-12-08T17:00:00Z"));
    c.boost_of = Some(fedistream_core::post::BoostOf {
        id: "9".into(),
        uri: "https://example.net/users/dave/statuses/9".into(),
        url: None,
        account: "dave@example.net".into(),
    });
    let mut del = Event::created("src", b.clone());
    del.kind = EventKind::Deleted;
    del.post = None;
    del.observed_at = at("2026-12-09T01:00:00Z");
    vec![Event::created("src", a), Event::created("src", b), Event::updated("src", a2), del, Event::created("src", c)]
}

async fn archive(cfg: ArchiveSinkConfig, evs: &[Event]) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
    let p = Pipeline {
        log,
        sources: vec![SourceSpec::new(
            "src",
            Box::new(VecSource { batches: vec![SourceBatch { events: fedistream_core::event::encode_all(evs.to_vec()), state: vec![] }] }),
            DeadLetter::new(dir.path().join("dl-src.jsonl")),
        )],
        processors: vec![],
        channels: vec![ChannelSpec {
            name: "archive".into(),
            group: "g.archive".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(ArchiveSink::new(cfg)),
            route: None,
            batch: BatchConfig { max_records: 2, max_bytes: 16 << 20, linger: Duration::ZERO },
            retry: RetryConfig::default(),
            dead_letter: DeadLetter::new(dir.path().join("dl.jsonl")),
        }],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let summary = runtime::run(p, CancellationToken::new()).await.unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
}

async fn csv(cfg: &ArchiveSinkConfig, sql: &str) -> String {
    let ctx = session(cfg).await.unwrap();
    let batches = query(&ctx, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    print(&batches, OutputFormat::Csv, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

async fn check_tables(cfg: &ArchiveSinkConfig) {
    assert_eq!(csv(cfg, "select count(*) as n from events").await, "n\n5\n");
    assert_eq!(
        csv(cfg, "select account, kind, content_text from posts order by account").await,
        "account,kind,content_text\nalice@example.org,updated,\"hello, edited\"\ncarol@example.org,created,\n",
        "the latest version of each post; the deleted one left out"
    );
    assert_eq!(
        csv(cfg, "select date, hour, count(*) as n from events group by date, hour order by date, hour").await,
        "date,hour,n\n2026-12-07,8,2\n2026-12-07,9,1\n2026-12-08,17,1\n2026-12-09,1,1\n",
        "partition columns typed DATE and INT (a deletion falls in the hour it was observed)"
    );
    assert_eq!(csv(cfg, "select count(*) as n from events where date = DATE '2026-12-08'").await, "n\n1\n");
    assert_eq!(
        csv(cfg, "select boost_of_account, count(*) as boosts from posts where boost_of_account is not null group by 1").await,
        "boost_of_account,boosts\ndave@example.net,1\n"
    );
    assert_eq!(
        csv(cfg, "select extract(hour from created_at) as h, count(*) as n from posts group by 1 order by 1").await,
        "h,n\n8,1\n17,1\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_a_local_archive_answers_from_events_and_the_posts_view() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(&dir.path().join("archive"));
    archive(cfg.clone(), &events()).await;
    check_tables(&cfg).await;

    let ctx = session(&cfg).await.unwrap();
    let batches = query(&ctx, "select language, count(*) as n from posts group by language order by language").await.unwrap();
    let mut table = Vec::new();
    print(&batches, OutputFormat::Table, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("| language | n |") && table.contains("| en       | 2 |"), "{table}");
    let mut json = Vec::new();
    print(&batches, OutputFormat::Json, &mut json).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0], serde_json::json!({"language": "en", "n": 2}));

    let mut parquet = Vec::new();
    print(&batches, OutputFormat::Parquet, &mut parquet).unwrap();
    let back: Vec<_> = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(parquet))
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, batches, "--format parquet writes the rows and types as they are");
    let empty = query(&ctx, "select language from posts where false").await.unwrap();
    let mut out = Vec::new();
    print(&empty, OutputFormat::Csv, &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "language\n", "no rows: the header still");

    for bad in ["drop table events", "insert into events select * from events", "create table x as select 1"] {
        let e = query(&ctx, bad).await.expect_err(bad);
        assert!(e.contains("only queries"), "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_an_archive_on_minio() {
    let endpoint = shared_endpoint();
    let bucket = random_bucket("sql");
    create_bucket(&endpoint, &bucket).await;
    let cfg = s3_config(&endpoint, &bucket, "history");
    archive(cfg.clone(), &events()).await;
    check_tables(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_an_empty_archive_answers_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(&dir.path().join("empty"));
    assert_eq!(csv(&cfg, "select count(*) as n from posts").await, "n\n0\n");
}

/// `partition_by = ["instance", "bucket"]`: the directories gain
/// `instance=HOST/bucket=NN/`, `events` the columns `instance` (from the
/// directory) and `bucket`, and a filter on them skips the other directories:
/// a file there that is not Parquet at all breaks a query without the filter
/// and not one with it. Compaction keeps the layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prunes_on_instance_and_bucket_partitions() {
    use fedistream_archive::layout::{account_bucket, Level};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let mut cfg = local_config(&root);
    cfg.partition_by = vec![Level::Instance, Level::Bucket];
    cfg.buckets = Some(4);
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let mut evs = events();
    evs[4].instance = "other.example".into(); // carol's post, read from another server
    archive(cfg.clone(), &evs).await;
    check_tables(&cfg).await;

    let b = |acct: &str| account_bucket(acct, 4);
    let alice = root.join(format!("posts/date=2026-12-07/hour=08/instance=example.org/bucket={:02}", b("alice@example.org")));
    assert!(std::fs::read_dir(&alice).unwrap().count() >= 1, "{}", alice.display());
    let carol = root.join(format!("posts/date=2026-12-08/hour=17/instance=other.example/bucket={:02}", b("carol@example.org")));
    assert_eq!(std::fs::read_dir(&carol).unwrap().count(), 1, "{}", carol.display());

    let mut expected: Vec<(String, u32, u32)> = Vec::new();
    for (inst, acct) in [("example.org", "alice@example.org"), ("example.org", "alice@example.org"), ("example.org", "bob@example.org")]
        .into_iter()
        .chain([("example.org", "bob@example.org"), ("other.example", "carol@example.org")])
    {
        match expected.iter_mut().find(|(i, k, _)| i == inst && *k == b(acct)) {
            Some(e) => e.2 += 1,
            None => expected.push((inst.to_string(), b(acct), 1)),
        }
    }
    expected.sort();
    let want: String = expected.iter().map(|(i, k, n)| format!("{i},{k},{n}\n")).collect();
    assert_eq!(
        csv(&cfg, "select instance, bucket, count(*) as n from events group by instance, bucket order by instance, bucket").await,
        format!("instance,bucket,n\n{want}")
    );

    // A foreign file in a directory of another instance and bucket: read only without the filters.
    let other_bucket = (b("carol@example.org") + 1) % 4;
    let junk = root.join(format!("posts/date=2026-12-08/hour=17/instance=junk.example/bucket={other_bucket:02}"));
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("part-0-100-100.parquet"), b"not parquet").unwrap();
    let ctx = session(&cfg).await.unwrap();
    assert!(query(&ctx, "select count(*) from events").await.is_err(), "the unfiltered query reads the foreign file");
    assert_eq!(csv(&cfg, "select count(*) as n from events where instance = 'other.example'").await, "n\n1\n");
    assert_eq!(
        csv(&cfg, &format!("select count(*) as n from events where bucket = {} and instance <> 'junk.example'", b("carol@example.org")))
            .await,
        format!("n\n{}\n", expected.iter().filter(|e| e.1 == b("carol@example.org")).map(|e| e.2).sum::<u32>())
    );
    std::fs::remove_dir_all(&junk).unwrap();

    // Compaction rewrites per directory, levels included: alice's latest version and carol's post remain.
    let archive_ = fedistream_archive::store::Archive::open(&cfg).unwrap();
    let opts = fedistream_archive::compact::CompactOptions {
        before: at("2026-12-10T00:00:00Z"),
        expire_before: None,
        row_group_rows: 1024,
        multipart_threshold: 32 << 20,
        multipart_part_bytes: 5 << 20,
        owner: "test".into(),
        lease: std::time::Duration::from_secs(600),
    };
    let r = fedistream_archive::compact::compact(&archive_, "posts", opts).await.unwrap();
    assert_eq!(r.rows_after, 2, "{r:?}");
    assert_eq!(
        csv(&cfg, "select account, instance, bucket from events order by account").await,
        format!(
            "account,instance,bucket\nalice@example.org,example.org,{}\ncarol@example.org,other.example,{}\n",
            b("alice@example.org"),
            b("carol@example.org")
        )
    );
    let names: Vec<String> = std::fs::read_dir(&carol).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.len() == 1 && names[0].ends_with("-g1.parquet"), "{names:?}");
}
