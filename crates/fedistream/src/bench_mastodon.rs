//! `fedistream bench mastodon`: the republish channel against the fake Mastodon
//! server in this process, with pacing and throttles off.
//!
//! The channel's own overhead per post is the pipeline's time per post minus
//! the server's: the latter is measured first by sending the same number of
//! bare `POST /api/v1/statuses` requests (same client, same sizes) directly.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use fedistream_connectors::mastodon::client::{ClientConfig, MastodonClient, Secret, StatusForm};
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::sink::{MastodonSink, MastodonSinkConfig, MediaMode};
use fedistream_connectors::replay::{ReplaySource, ReplaySourceConfig};
use fedistream_connectors::synthetic::Generator;
use fedistream_connectors::testing::{FakeConfig, FakeMastodon, RateLimitConfig};
use fedistream_core::runtime::{ChannelSpec, Pipeline, RuntimeOptions, SourceSpec};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::DeadLetter;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-publisher-token";

pub async fn run(count: usize) -> anyhow::Result<ExitCode> {
    let fake = FakeMastodon::start(FakeConfig {
        rate_limit: RateLimitConfig { limit: u32::MAX, window: Duration::from_secs(300) },
        posting_limit: None,
        delete_limit: None,
        media_limit: None,
        ..FakeConfig::default()
    })
    .await;
    fake.add_account("mirror", fedistream_connectors::testing::AccountOpts { bot: true, ..Default::default() });
    fake.add_token(TOKEN, "mirror");
    fake.add_token("baseline-token", "baseline");
    let base: url::Url = fake.base_url().parse()?;
    let dir = tempfile_dir()?;

    // Input: synthetic statuses, all public (the channel never widens visibility).
    let input = dir.join("input.jsonl");
    let mut g = Generator::new(7);
    let mut texts = Vec::with_capacity(count);
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        while texts.len() < count {
            let mut v = g.status_value(200);
            if v["reblog"].is_object() {
                continue;
            }
            v["visibility"] = "public".into();
            v["in_reply_to_id"] = serde_json::Value::Null;
            texts.push(v["content"].as_str().unwrap_or_default().len());
            writeln!(f, "{v}")?;
        }
        f.flush()?;
    }

    // The server's time: bare posts of similar sizes through the same client.
    let client = MastodonClient::new(ClientConfig::new(base.clone(), Some(Secret::new("baseline-token"))), &RateLimiters::default())?;
    let started = Instant::now();
    for (i, n) in texts.iter().enumerate() {
        let form = StatusForm { status: "x".repeat((*n / 2).clamp(10, 450)), visibility: Some("unlisted".into()), ..Default::default() };
        client.post_status(&form, &format!("baseline-{i}")).await.context("baseline post")?;
    }
    let baseline = started.elapsed().as_secs_f64() / count as f64;

    let log = SqliteLog::open(dir.join("log.db"), SqliteOptions::default())?;
    let cfg = MastodonSinkConfig {
        connection: "bench".into(),
        media: MediaMode::Skip,
        posts_per_window: u32::MAX,
        deletes_per_window: u32::MAX,
        media_per_window: u32::MAX,
        ..MastodonSinkConfig::default()
    };
    let delivery = cfg.delivery.clone();
    let sink = MastodonSink::new(cfg, base, Secret::new(TOKEN), RateLimiters::default())?;
    let p = Pipeline {
        log,
        processors: vec![],
        sources: vec![SourceSpec::new(
            "bench",
            Box::new(ReplaySource::new(ReplaySourceConfig {
                path: input,
                rate: None,
                instance: "bench".into(),
                include_unlisted: true,
                owned: true,
            })),
            DeadLetter::new(dir.join("dl-source.jsonl")),
        )],
        channels: vec![ChannelSpec {
            name: "mirror".into(),
            group: "bench.mirror".into(),
            topic: fedistream_core::log::EVENTS.into(),
            sink: Box::new(sink),
            route: None,
            batch: delivery.batch(),
            retry: delivery.retry(),
            dead_letter: DeadLetter::new(dir.join("dl-channel.jsonl")),
        }],
        options: RuntimeOptions::default(),
        progress: None,
    };
    let started = Instant::now();
    let summary = fedistream_core::runtime::run(p, CancellationToken::new()).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let posted = fake.posts_created("mirror");
    let per_post = elapsed / count as f64;
    println!("fedistream bench mastodon");
    println!("  posts              {count} in, {posted} republished (pacing off, in-process fake server)");
    println!("  throughput         {:.0} posts/s", count as f64 / elapsed);
    println!("  per post           {:.3} ms end to end, of which the server {:.3} ms", per_post * 1e3, baseline * 1e3);
    println!("  channel overhead   {:.3} ms per post (render, map, idempotency key, log, runtime)", (per_post - baseline).max(0.0) * 1e3);
    if posted != count || !summary.failures.is_empty() {
        anyhow::bail!("expected {count} reposts, got {posted}; failures: {:?}", summary.failures);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!("fedistream-bench-mastodon-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
