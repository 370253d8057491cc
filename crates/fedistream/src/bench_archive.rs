//! `fedistream bench archive`, `bench archive-sink`, `bench archive-s3` and `bench sql`: the archive
//! channel and `fedistream sql` (issue 14).
//!
//! * `archive` — the pipeline bench ([`crate::bench::replay_measure`]: replay →
//!   SQLite log → channel) with the archive channel to a local directory and
//!   with the file channel, alternating rounds on the same input; medians and
//!   their ratio.
//! * `archive-sink` — the archive channel alone (records read back from a log
//!   the pipeline filled, written by the sink, flushed) to a local directory:
//!   its throughput and the process's CPU time per event, objects and bytes.
//! * `archive-s3` — the archive channel alone (records read back from a log
//!   the pipeline filled, written by the sink, flushed) to an S3 server
//!   (MinIO), beside a plain multipart upload of the objects' bytes with the
//!   same `object_store` client; alternating rounds.
//! * `sql` — a group-by on account and hour over an archive the pipeline
//!   wrote, by `fedistream sql`'s engine and by DuckDB (a Python subprocess
//!   reading the same files with Hive partitioning), alternating rounds.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use fedistream_archive::store::Archive;
use fedistream_archive::{ArchiveSink, ArchiveSinkConfig};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::{Log, LogRecord, Sink, SinkContext};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::bench::{cpu_times, median, replay_measure, work_dir, write_input, BenchChannel, TempDir};

/// `bench archive`: file channel vs archive channel (local directory), alternating.
pub async fn archive(count: usize, accounts: usize, rounds: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (dir, _tmp) = work_dir(dir)?;
    let input = dir.join("input.jsonl");
    let bytes = write_input(&input, count, accounts)?;
    let cfg = ArchiveSinkConfig::local(dir.join("archive"));
    let channels = [("file", BenchChannel::File), ("archive", BenchChannel::Archive(Box::new(cfg.clone())))];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // CPU time of the whole process per input status (user + system): less sensitive to
    // other processes on the machine than the throughput.
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    println!(
        "fedistream bench archive: {count} statuses ({:.1} MB), {rounds} rounds, file and archive channel alternating",
        bytes as f64 / 1e6
    );
    for round in 0..rounds {
        for (i, (name, channel)) in channels.iter().enumerate() {
            let m = replay_measure(&input, &dir, count, None, channel, None).await?;
            let us = m.cpu * 1e6 / count as f64;
            if !m.failures.is_empty() {
                bail!("{name} channel: failures: {:?}", m.failures);
            }
            let rate = count as f64 / m.elapsed;
            rates[i].push(rate);
            cpu[i].push(us);
            let extra = match channel {
                BenchChannel::File => {
                    format!("{:.1} MB written", std::fs::metadata(dir.join("out.jsonl")).map(|m| m.len()).unwrap_or(0) as f64 / 1e6)
                }
                BenchChannel::Archive(_) => {
                    let (objects, size) = dir_size(&dir.join("archive"))?;
                    format!("{objects} objects, {:.1} MB", size as f64 / 1e6)
                }
            };
            println!(
                "  round {} {name:<8} {rate:>9.0} statuses/s  {us:>5.1} µs CPU/status  ({:.3} s, {} delivered, {extra})",
                round + 1,
                m.elapsed,
                m.lat.len()
            );
        }
    }
    let (file, arch) = (median(&rates[0]), median(&rates[1]));
    println!("  median   file     {file:>9.0} statuses/s  {:>5.1} µs CPU/status", median(&cpu[0]));
    println!("  median   archive  {arch:>9.0} statuses/s  {:>5.1} µs CPU/status", median(&cpu[1]));
    println!("  archive / file    {:.1} % (target: at least 90 %)", 100.0 * arch / file);
    Ok(ExitCode::SUCCESS)
}

/// Files and bytes below a directory.
fn dir_size(p: &Path) -> std::io::Result<(usize, u64)> {
    let (mut n, mut b) = (0, 0);
    for e in std::fs::read_dir(p)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            let (n2, b2) = dir_size(&e.path())?;
            n += n2;
            b += b2;
        } else {
            n += 1;
            b += e.metadata()?.len();
        }
    }
    Ok((n, b))
}

/// The env vars holding the S3 credentials (`eval "$(scripts/s3 env)"`).
const ACCESS_ENV: &str = "FEDISTREAM_S3_ACCESS_KEY_ID";
const SECRET_ENV: &str = "FEDISTREAM_S3_SECRET_ACCESS_KEY";

fn s3_config(endpoint: &str, bucket: &str, prefix: &str) -> ArchiveSinkConfig {
    let mut c = ArchiveSinkConfig::local("unused");
    c.path = None;
    c.url = Some(format!("s3://{bucket}/{prefix}"));
    c.endpoint = Some(endpoint.to_string());
    c.allow_http = endpoint.starts_with("http://");
    c.access_key_id_env = Some(ACCESS_ENV.into());
    c.secret_access_key_env = Some(SECRET_ENV.into());
    c
}

/// Create `bucket` (a presigned PUT of the bucket; one that exists already is fine).
async fn create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    use object_store::signer::Signer;
    let env = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set: run `eval \"$(scripts/s3 env)\"`"));
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(endpoint.starts_with("http://"))
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(env(ACCESS_ENV)?)
        .with_secret_access_key(env(SECRET_ENV)?)
        .build()?;
    let url = s3.signed_url(reqwest::Method::PUT, &object_store::path::Path::from(""), Duration::from_secs(60)).await?;
    let resp = reqwest::Client::new().put(url).send().await.with_context(|| format!("creating bucket {bucket} at {endpoint}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() && !text.contains("BucketAlreadyOwnedByYou") {
        bail!("creating bucket {bucket} at {endpoint}: {status} {text}");
    }
    Ok(())
}

/// Objects below `rel` and their total size.
async fn listed(archive: &Archive, rel: &str) -> anyhow::Result<Vec<(object_store::path::Path, u64)>> {
    let metas: Vec<_> = archive.store.list(Some(&archive.path(rel))).try_collect().await?;
    Ok(metas.into_iter().map(|m| (m.location, m.size)).collect())
}

/// A log filled by the pipeline (file channel) from `count` synthetic
/// statuses in `dir`, and its events read back into memory.
async fn logged_events(dir: &Path, count: usize, accounts: usize) -> anyhow::Result<(Arc<dyn Log>, Vec<LogRecord>)> {
    let input = dir.join("input.jsonl");
    write_input(&input, count, accounts)?;
    let m = replay_measure(&input, dir, count, None, &BenchChannel::File, None).await?;
    anyhow::ensure!(m.failures.is_empty(), "filling the log: {:?}", m.failures);
    let log = SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?;
    let mut consumer = log.consumer(fedistream_core::log::EVENTS, "bench.archive").await?;
    let mut records: Vec<LogRecord> = Vec::new();
    loop {
        let batch = consumer.poll(10_000, Duration::from_millis(50)).await?;
        if batch.is_empty() {
            break;
        }
        records.extend(batch);
    }
    let log: Arc<dyn Log> = log;
    Ok((log, records))
}

/// The records as the log hands them to a channel: nothing decoded yet.
fn fresh(records: &[LogRecord]) -> Vec<LogRecord> {
    records.iter().map(|r| LogRecord::new(r.position, r.appended_at, r.payload.clone())).collect()
}

/// The archive channel with `cfg` over fresh copies of `records`: `write` in
/// batches of 1,000 as the runtime does, then `flush`, timed; the sink is
/// closed afterwards, untimed. Wall seconds and the process's CPU seconds.
async fn write_timed(cfg: ArchiveSinkConfig, log: &Arc<dyn Log>, records: &[LogRecord]) -> anyhow::Result<(f64, f64)> {
    let mut sink = ArchiveSink::new(cfg);
    sink.open(&SinkContext::new("bench", log.clone())).await?;
    let fresh = fresh(records);
    let (started, cpu) = (Instant::now(), cpu_times().0);
    for chunk in fresh.chunks(1000) {
        sink.write(chunk).await?;
    }
    sink.flush().await?;
    let (elapsed, cpu) = (started.elapsed().as_secs_f64(), (cpu_times().0 - cpu).as_secs_f64());
    sink.close().await?;
    Ok((elapsed, cpu))
}

/// `bench archive-sink`: the archive channel alone to a local directory —
/// `write` in batches of 1,000 as the runtime does, then `flush` — timed, with
/// the process's CPU time per event (decoding, building the columns, Parquet
/// and zstd on the encoding threads, the files), objects and bytes.
pub async fn archive_sink(count: usize, accounts: usize, rounds: usize) -> anyhow::Result<ExitCode> {
    let tmp = TempDir::new()?;
    let (log, records) = logged_events(&tmp.0, count, accounts).await?;
    let json_bytes: u64 = records.iter().map(|r| r.payload.len() as u64).sum();
    println!(
        "fedistream bench archive-sink: {} events ({:.1} MB of event JSON) to a local directory, {rounds} rounds",
        records.len(),
        json_bytes as f64 / 1e6
    );
    let (mut rates, mut cpus) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let out = tmp.0.join(format!("archive-{round}"));
        let (elapsed, cpu) = write_timed(ArchiveSinkConfig::local(&out), &log, &records).await?;
        let (objects, size) = dir_size(&out)?;
        let per_event = cpu * 1e6 / records.len() as f64;
        rates.push(records.len() as f64 / elapsed);
        cpus.push(per_event);
        println!(
            "  round {} {:>8.0} events/s  {per_event:>5.1} µs CPU/event  ({elapsed:.3} s, {cpu:.3} s CPU, {objects} objects, {:.1} MB)",
            round + 1,
            records.len() as f64 / elapsed,
            size as f64 / 1e6
        );
        std::fs::remove_dir_all(&out)?;
    }
    println!("  median   {:>8.0} events/s  {:>5.1} µs CPU/event", median(&rates), median(&cpus));
    Ok(ExitCode::SUCCESS)
}

/// `bench archive-s3`: the archive channel to S3 beside a plain multipart upload of the same bytes.
pub async fn archive_s3(
    count: usize,
    accounts: usize,
    rounds: usize,
    endpoint: Option<String>,
    bucket: Option<String>,
) -> anyhow::Result<ExitCode> {
    let endpoint = endpoint.or_else(|| std::env::var("FEDISTREAM_S3_ENDPOINT").ok()).unwrap_or_else(|| "http://127.0.0.1:9000".into());
    let bucket = bucket.unwrap_or_else(|| format!("fedistream-bench-{}", std::process::id()));
    create_bucket(&endpoint, &bucket).await?;
    let tmp = TempDir::new()?;
    let (log, records) = logged_events(&tmp.0, count, accounts).await?;
    let json_bytes: u64 = records.iter().map(|r| r.payload.len() as u64).sum();
    println!(
        "fedistream bench archive-s3: {} events ({:.1} MB of event JSON) to s3://{bucket} at {endpoint}, {rounds} rounds",
        records.len(),
        json_bytes as f64 / 1e6
    );
    let (mut chan_posts, mut chan_bytes, mut plain_bytes) = (Vec::new(), Vec::new(), Vec::new());
    let mut data: Option<Bytes> = None;
    for round in 0..rounds {
        // The channel: write in batches of 1,000 (the runtime's), then flush; fresh records (nothing decoded yet).
        let cfg = s3_config(&endpoint, &bucket, &format!("channel-{round}"));
        let part = cfg.multipart_part_bytes as usize;
        let (elapsed, _) = write_timed(cfg.clone(), &log, &records).await?;
        let archive = Archive::open(&cfg)?;
        let objects = listed(&archive, "posts").await?;
        let size: u64 = objects.iter().map(|o| o.1).sum();
        chan_posts.push(records.len() as f64 / elapsed);
        chan_bytes.push(size as f64 / elapsed);
        println!(
            "  round {} channel  {:>8.0} posts/s  {:>7.1} MB/s  ({:.3} s, {} objects, {:.1} MB)",
            round + 1,
            records.len() as f64 / elapsed,
            size as f64 / 1e6 / elapsed,
            elapsed,
            objects.len(),
            size as f64 / 1e6
        );
        if data.is_none() {
            // The same bytes, once: the objects of the first round, concatenated.
            let mut all = Vec::with_capacity(size as usize);
            for (path, _) in &objects {
                all.extend_from_slice(&archive.store.get(path).await?.bytes().await?);
            }
            data = Some(all.into());
        }
        let data = data.as_ref().expect("set above");
        // Plain: one multipart upload of those bytes, parts of the channel's part size, one after another (as the channel uploads).
        let path = archive.path(&format!("plain-{round}/objects.bin"));
        let started = Instant::now();
        let mut upload = archive.store.put_multipart(&path).await?;
        for chunk in data.chunks(part) {
            upload.put_part(PutPayload::from(data.slice_ref(chunk))).await?;
        }
        upload.complete().await?;
        let plain = started.elapsed().as_secs_f64();
        plain_bytes.push(data.len() as f64 / plain);
        println!(
            "  round {} plain    multipart upload of the same {:.1} MB: {:>7.1} MB/s  ({:.3} s, {} parts)",
            round + 1,
            data.len() as f64 / 1e6,
            data.len() as f64 / 1e6 / plain,
            plain,
            data.len().div_ceil(part)
        );
        // Leave nothing behind in the shared server.
        for rel in [format!("channel-{round}"), format!("plain-{round}")] {
            let root = s3_config(&endpoint, &bucket, "");
            let root = Archive::open(&root)?;
            for (p, _) in listed(&root, &rel).await? {
                root.store.delete(&p).await?;
            }
        }
    }
    println!("  median   channel  {:>8.0} posts/s  {:>7.1} MB/s of objects", median(&chan_posts), median(&chan_bytes) / 1e6);
    println!("  median   plain    {:>25.1} MB/s", median(&plain_bytes) / 1e6);
    println!("  channel / plain   {:.1} % of the bytes/s", 100.0 * median(&chan_bytes) / median(&plain_bytes));
    Ok(ExitCode::SUCCESS)
}

/// The group-by both engines run; `{events}` is the table (fedistream) or the `read_parquet` call (DuckDB).
#[cfg(feature = "sql")]
pub const GROUP_BY: &str = "SELECT account, hour, count(*) AS n FROM {events} GROUP BY account, hour";

#[cfg(feature = "sql")]
const DUCKDB_SCRIPT: &str = r#"
import json, sys, time
import duckdb
glob, sql = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
started = time.perf_counter()
rows = con.execute(sql.replace("{events}", "read_parquet('%s', hive_partitioning = true)" % glob)).fetchall()
took = time.perf_counter() - started
print(json.dumps({"seconds": took, "groups": len(rows), "total": sum(r[2] for r in rows), "version": duckdb.__version__}))
"#;

/// `bench sql`: `fedistream sql` (DataFusion, in this process) vs DuckDB on the same files.
#[cfg(feature = "sql")]
pub async fn sql(posts: usize, accounts: usize, rounds: usize, dir: Option<PathBuf>, python: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let python = python
        .or_else(|| std::env::var_os("FEDISTREAM_PYTHON").map(PathBuf::from))
        .context("no Python with duckdb: give --python or set FEDISTREAM_PYTHON=$(scripts/python-deps)")?;
    let (dir, _tmp) = work_dir(dir)?;
    let cfg = ArchiveSinkConfig::local(dir.join("archive"));
    let marker = dir.join("archive.statuses");
    if std::fs::read_to_string(&marker).ok().and_then(|s| s.trim().parse::<usize>().ok()) != Some(posts) {
        let input = dir.join("input.jsonl");
        let bytes = write_input(&input, posts, accounts)?;
        let m = replay_measure(&input, &dir, posts, None, &BenchChannel::Archive(Box::new(cfg.clone())), None).await?;
        anyhow::ensure!(m.failures.is_empty(), "building the archive: {:?}", m.failures);
        println!(
            "built the archive: {posts} statuses ({:.1} MB) through the pipeline in {:.1} s ({:.0} statuses/s)",
            bytes as f64 / 1e6,
            m.elapsed,
            posts as f64 / m.elapsed
        );
        for f in ["input.jsonl", "log.db", "log.db-wal", "log.db-shm", "dead-letter.jsonl", "dead-letter-channel.jsonl"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        std::fs::write(&marker, posts.to_string())?;
    }
    let archive = Archive::open(&cfg)?;
    let rows = fedistream_archive::compact::visible_rows(&archive, "posts").await?;
    let (objects, size) = dir_size(&dir.join("archive/posts"))?;
    let glob = dir.join("archive/posts/**/*.parquet");
    let fs_query = GROUP_BY.replace("{events}", "events");
    println!(
        "fedistream bench sql: {rows} rows in {objects} objects ({:.1} MB) at {}, {rounds} rounds alternating",
        size as f64 / 1e6,
        dir.join("archive").display()
    );
    println!("  query: {fs_query}");
    let (mut ours, mut duck, mut duck_wall) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let started = Instant::now();
        let batches = fedistream_archive::sql::run(&cfg, &fs_query).await.map_err(anyhow::Error::msg)?;
        let took = started.elapsed().as_secs_f64();
        let mut csv = Vec::new();
        fedistream_archive::sql::print(&batches, fedistream_archive::sql::OutputFormat::Csv, &mut csv).map_err(anyhow::Error::msg)?;
        let (groups, total) = String::from_utf8(csv)?
            .lines()
            .skip(1)
            .fold((0u64, 0u64), |(g, t), l| (g + 1, t + l.rsplit(',').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)));
        ours.push(took);
        println!("  round {} fedistream sql  {took:>7.3} s  ({groups} groups, {total} rows counted)", round + 1);
        let started = Instant::now();
        let out = tokio::process::Command::new(&python)
            .args(["-c", DUCKDB_SCRIPT])
            .arg(glob.as_os_str())
            .arg(GROUP_BY)
            .output()
            .await
            .with_context(|| format!("running {}", python.display()))?;
        let wall = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("DuckDB: {}", String::from_utf8_lossy(&out.stderr));
        }
        let answer = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value =
            serde_json::from_str(answer.lines().last().unwrap_or_default()).with_context(|| format!("DuckDB's answer: {answer}"))?;
        let d = v["seconds"].as_f64().unwrap_or(f64::NAN);
        duck.push(d);
        duck_wall.push(wall);
        println!(
            "  round {} DuckDB {}    {d:>7.3} s  ({} groups, {} rows counted; {wall:.3} s with Python's start and import)",
            round + 1,
            v["version"].as_str().unwrap_or("?"),
            v["groups"],
            v["total"]
        );
        if v["groups"].as_u64() != Some(groups) || v["total"].as_u64() != Some(total) {
            bail!("the engines disagree: fedistream {groups} groups / {total} rows, DuckDB {} / {}", v["groups"], v["total"]);
        }
    }
    println!("  median   fedistream sql  {:>7.3} s (in this process: session, listing, query)", median(&ours));
    println!("  median   DuckDB          {:>7.3} s (the query; {:.3} s with the interpreter's start)", median(&duck), median(&duck_wall));
    println!("  DuckDB / fedistream      {:.2} (above 1: fedistream faster)", median(&duck) / median(&ours));
    Ok(ExitCode::SUCCESS)
}
