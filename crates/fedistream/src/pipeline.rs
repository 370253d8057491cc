//! From a validated config to running components: opens the log (SQLite or
//! Kafka), resolves tokens, builds sources and channels with their routes and
//! dead-letter files.

use std::sync::Arc;

use anyhow::{bail, Context};
#[cfg(feature = "archive")]
use fedistream_archive::ArchiveSink;
use fedistream_connectors::file::FileSink;
use fedistream_connectors::mastodon::client::Secret;
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::sink::MastodonSink;
use fedistream_connectors::mastodon::source::{
    account_unit, parse_base_url, MastodonSource, MastodonSourceConfig, MastodonTimelineSource, ReaderConnection, TimelineServer,
};
use fedistream_connectors::replay::ReplaySource;
use fedistream_connectors::stdout::StdoutSink;
#[cfg(feature = "webhook")]
use fedistream_connectors::webhook::WebhookSink;
use fedistream_core::log::EVENTS;
use fedistream_core::runtime::{
    BatchConfig, ChannelSpec, Pipeline, ProcessorSpec, RetryConfig, RouteFn, RuntimeOptions, SourceFactory, SourceSpec,
};
use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
use fedistream_core::{DeadLetter, Event, Log, Processor, Progress, Sink, Source};
#[cfg(feature = "kafka")]
use fedistream_kafka::channel::{KafkaChannel, RecordKind};
#[cfg(feature = "kafka")]
use fedistream_kafka::log::KafkaLog;
use fedistream_process::filter::CompiledFilter;

use crate::config::{ChannelConfig, Config, LogBackend, MastodonConnection, SourceConfig};

/// The log the config names: the embedded SQLite file, or Kafka.
pub enum OpenLog {
    Sqlite(Arc<SqliteLog>),
    #[cfg(feature = "kafka")]
    Kafka(Arc<KafkaLog>),
}

impl OpenLog {
    pub fn shared(&self) -> Arc<dyn Log> {
        match self {
            OpenLog::Sqlite(l) => l.clone(),
            #[cfg(feature = "kafka")]
            OpenLog::Kafka(l) => l.clone(),
        }
    }
}

pub async fn open_log(cfg: &Config) -> anyhow::Result<OpenLog> {
    match (cfg.log.backend, &cfg.log.kafka) {
        #[cfg(feature = "kafka")]
        (LogBackend::Kafka, Some(k)) => {
            let mut k = k.clone();
            k.state_horizon = Some(cfg.log.state_horizon);
            k.prunable = prunable();
            let brokers = k.brokers.clone();
            Ok(OpenLog::Kafka(KafkaLog::open(k).await.with_context(|| format!("opening the Kafka log at {brokers}"))?))
        }
        #[cfg(not(feature = "kafka"))]
        (LogBackend::Kafka, Some(_)) => bail!("log.backend: {}", crate::features::Feature::Kafka.missing()),
        (LogBackend::Kafka, None) => bail!("log.kafka: backend = \"kafka\" needs a [log.kafka] table"),
        (LogBackend::Sqlite, _) => Ok(OpenLog::Sqlite(open_sqlite(cfg)?)),
    }
}

pub fn open_sqlite(cfg: &Config) -> anyhow::Result<Arc<SqliteLog>> {
    SqliteLog::open(
        &cfg.log.path,
        SqliteOptions {
            durability: cfg.log.durability,
            max_age: cfg.log.max_age,
            max_bytes: cfg.log.max_size,
            state_horizon: Some(cfg.log.state_horizon),
            prunable: prunable(),
        },
    )
    .with_context(|| format!("opening the log at {}", cfg.log.path.display()))
}

/// State namespaces pruned past `[log] state_horizon` besides the dedup index:
/// the Mastodon id index (status id → post, to attribute stream deletes).
fn prunable() -> Vec<String> {
    vec![fedistream_connectors::mastodon::source::convert::IDS_NS.to_string()]
}

pub fn resolve_token(name: &str, c: &MastodonConnection) -> anyhow::Result<Secret> {
    let key = format!("connections.mastodon.{name}");
    match (&c.token_env, &c.token_file) {
        (Some(var), _) => fedistream_connectors::mastodon::client::token_from_env(var).with_context(|| format!("{key}.token_env")),
        (None, Some(path)) => fedistream_connectors::mastodon::client::token_from_file(path).with_context(|| format!("{key}.token_file")),
        (None, None) => bail!("{key}: no token_env or token_file"),
    }
}

/// Every source, processor and channel of the config, on the config's log (role `all`).
pub async fn build(cfg: &Config, options: RuntimeOptions, progress: Option<Arc<dyn Progress>>) -> anyhow::Result<Pipeline> {
    let log = open_log(cfg).await?.shared();
    Ok(Pipeline { sources: sources(cfg, &|_| true)?, processors: processors(cfg)?, channels: channels(cfg)?, log, options, progress })
}

/// The units of work of a source: `source/account` for each account of a
/// Mastodon source, the source's name for any other source.
#[cfg(feature = "kafka")]
pub fn work_units(name: &str, s: &SourceConfig) -> Vec<String> {
    match s {
        SourceConfig::Mastodon(m) => m.accounts.iter().map(|a| account_unit(name, a)).collect(),
        _ => vec![name.to_string()],
    }
}

/// The sources, keeping only the work units (see [`work_units`]) `take` accepts.
pub fn sources(cfg: &Config, take: &dyn Fn(&str) -> bool) -> anyhow::Result<Vec<SourceSpec>> {
    let dl_dir = cfg.log.dead_letter_dir();
    let limiters = RateLimiters::default();
    let mut sources = Vec::new();
    for (name, s) in &cfg.sources {
        // Each source is made anew when the runtime restarts it after a transient failure.
        let make: SourceFactory = match s {
            SourceConfig::Mastodon(m) => {
                let mut m = MastodonSourceConfig::clone(m);
                m.accounts.retain(|a| take(&account_unit(name, a)));
                if m.accounts.is_empty() {
                    continue;
                }
                let reader = match &m.connection {
                    Some(conn) => {
                        let c = cfg
                            .connections
                            .mastodon
                            .get(conn)
                            .with_context(|| format!("sources.{name}.connection: no connection `{conn}`"))?;
                        let base_url = parse_base_url(&c.instance)
                            .map_err(anyhow::Error::msg)
                            .with_context(|| format!("connections.mastodon.{conn}.instance"))?;
                        Some(ReaderConnection { base_url, token: resolve_token(conn, c)? })
                    }
                    None => None,
                };
                let limiters = limiters.clone();
                Box::new(move || Box::new(MastodonSource::new(m.clone(), reader.clone(), limiters.clone())) as Box<dyn Source>)
            }
            SourceConfig::MastodonTimeline(t) => {
                if !take(name) {
                    continue;
                }
                let server = match (&t.connection, &t.instance) {
                    (Some(conn), _) => {
                        let c = cfg
                            .connections
                            .mastodon
                            .get(conn)
                            .with_context(|| format!("sources.{name}.connection: no connection `{conn}`"))?;
                        let base_url = parse_base_url(&c.instance)
                            .map_err(anyhow::Error::msg)
                            .with_context(|| format!("connections.mastodon.{conn}.instance"))?;
                        TimelineServer { base_url, token: Some(resolve_token(conn, c)?) }
                    }
                    (None, Some(instance)) => TimelineServer {
                        base_url: parse_base_url(instance)
                            .map_err(anyhow::Error::msg)
                            .with_context(|| format!("sources.{name}.instance"))?,
                        token: None,
                    },
                    (None, None) => anyhow::bail!("sources.{name}: set `connection` or `instance`"),
                };
                let (t, limiters) = ((**t).clone(), limiters.clone());
                Box::new(move || Box::new(MastodonTimelineSource::new(t.clone(), server.clone(), limiters.clone())) as Box<dyn Source>)
            }
            SourceConfig::Replay(r) => {
                if !take(name) {
                    continue;
                }
                let r = r.clone();
                Box::new(move || Box::new(ReplaySource::new(r.clone())) as Box<dyn Source>)
            }
        };
        sources.push(SourceSpec::restartable(name.clone(), make, DeadLetter::new(dl_dir.join(format!("source-{name}.jsonl")))));
    }
    Ok(sources)
}

/// The channels, each with its consumer group on the config's log.
pub fn channels(cfg: &Config) -> anyhow::Result<Vec<ChannelSpec>> {
    let dl_dir = cfg.log.dead_letter_dir();
    let limiters = RateLimiters::default();
    let mut channels = Vec::new();
    for (name, c) in &cfg.channels {
        let sink: Box<dyn Sink> = match c {
            ChannelConfig::File(f) => Box::new(FileSink::new(f.clone())),
            ChannelConfig::Stdout(s) => Box::new(StdoutSink::new(s.clone())),
            #[cfg(feature = "archive")]
            ChannelConfig::Archive(a) => Box::new(ArchiveSink::new((**a).clone())),
            ChannelConfig::Mastodon(m) => {
                let conn = &m.connection;
                let c =
                    cfg.connections.mastodon.get(conn).with_context(|| format!("channels.{name}.connection: no connection `{conn}`"))?;
                let base_url = parse_base_url(&c.instance)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("connections.mastodon.{conn}.instance"))?;
                Box::new(
                    MastodonSink::new((**m).clone(), base_url, resolve_token(conn, c)?, limiters.clone())
                        .with_context(|| format!("channels.{name}"))?,
                )
            }
            #[cfg(feature = "kafka")]
            ChannelConfig::Kafka(k) => {
                // Stats records have their own Avro schema.
                let records = match cfg.processors.get(&cfg.channel_topic(name)) {
                    Some(crate::config::ProcessorConfig::AccountStats(_)) => RecordKind::Stats,
                    _ => RecordKind::Posts,
                };
                Box::new(
                    KafkaChannel::new((**k).clone())
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("channels.{name}"))?
                        .with_records(records),
                )
            }
            #[cfg(feature = "webhook")]
            ChannelConfig::Webhook(w) => {
                Box::new(WebhookSink::new((**w).clone()).map_err(anyhow::Error::msg).with_context(|| format!("channels.{name}"))?)
            }
            #[cfg(not(feature = "kafka"))]
            ChannelConfig::Kafka(_) => bail!("channels.{name}.type: {}", crate::features::Feature::Kafka.missing()),
            #[cfg(not(feature = "archive"))]
            ChannelConfig::Archive(_) => bail!("channels.{name}.type: {}", crate::features::Feature::Archive.missing()),
            #[cfg(not(feature = "webhook"))]
            ChannelConfig::Webhook(_) => bail!("channels.{name}.type: {}", crate::features::Feature::Webhook.missing()),
        };
        let topic = cfg.channel_topic(name);
        channels.push(ChannelSpec {
            name: name.clone(),
            group: channel_group(cfg, name),
            route: if topic == EVENTS { route_for(cfg, name) } else { None },
            topic,
            sink,
            batch: c.delivery().batch(),
            retry: c.delivery().retry(),
            dead_letter: DeadLetter::new(dl_dir.join(format!("channel-{name}.jsonl"))),
        });
    }
    Ok(channels)
}

/// The processors, each with its consumer group on the config's log.
pub fn processors(cfg: &Config) -> anyhow::Result<Vec<ProcessorSpec>> {
    let dl_dir = cfg.log.dead_letter_dir();
    let mut out = Vec::new();
    for (name, p) in &cfg.processors {
        let processor: Box<dyn Processor> = match p {
            crate::config::ProcessorConfig::AccountStats(c) => Box::new(
                fedistream_process::stats::AccountStatsProcessor::new(name, c, name)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("processors.{name}"))?,
            ),
            #[cfg(feature = "test-util")]
            crate::config::ProcessorConfig::TestCount(t) => {
                Box::new(fedistream_core::testing::counting::CountingProcessor::new(name, t.window, name, t.tick))
            }
        };
        out.push(ProcessorSpec {
            name: name.clone(),
            group: processor_group(cfg, name),
            input: EVENTS.to_string(),
            processor,
            batch: BatchConfig { max_records: 4096, max_bytes: 64 << 20, linger: std::time::Duration::ZERO },
            retry: RetryConfig::default(),
            dead_letter: DeadLetter::new(dl_dir.join(format!("processor-{name}.jsonl"))),
        });
    }
    Ok(out)
}

/// The consumer group of a processor on the config's log.
pub fn processor_group(cfg: &Config, processor: &str) -> String {
    match (&cfg.log.backend, &cfg.log.kafka) {
        (LogBackend::Kafka, Some(k)) => format!("{}.processor.{processor}", k.prefix()),
        _ => format!("fedistream.processor.{processor}"),
    }
}

/// The consumer group of a channel on the config's log.
pub fn channel_group(cfg: &Config, channel: &str) -> String {
    match (&cfg.log.backend, &cfg.log.kafka) {
        (LogBackend::Kafka, Some(k)) => k.channel_group(channel),
        _ => format!("fedistream.channel.{channel}"),
    }
}

/// The channel takes an event if any route leading to it takes it; with no
/// routes configured, every channel takes everything.
fn route_for(cfg: &Config, channel: &str) -> Option<RouteFn> {
    if cfg.routes.is_empty() {
        return None;
    }
    let rules: Vec<(Vec<String>, CompiledFilter)> =
        cfg.routes.iter().filter(|r| r.to.iter().any(|t| t == channel)).map(|r| (r.from.clone(), r.filter.compile())).collect();
    Some(Arc::new(move |ev: &Event| rules.iter().any(|(from, f)| (from.is_empty() || from.contains(&ev.source)) && f.matches(ev))))
}
