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
