//! Command line: `run`, `follow`, `validate`, `status`, `stats`, `schema`, `sql`, `archive`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use fedistream_core::runtime::{RunSummary, RuntimeOptions};
use tokio_util::sync::CancellationToken;

use crate::config;

/// Follow Mastodon accounts in near real time and publish their posts — creations,
/// edits and deletions — to channels, losing nothing and publishing nothing twice.
#[derive(Parser, Debug)]
#[command(name = "fedistream", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct GlobalArgs {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `fedistream=debug`.
    #[arg(long, global = true, env = "FEDISTREAM_LOG", default_value = "info")]
    pub log_level: String,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, env = "FEDISTREAM_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the pipeline described by a config file.
    Run(RunArgs),
    /// Tail accounts live on the terminal, no config needed (stops with an error
    /// when none of the accounts can be read).
    Follow(crate::follow::FollowArgs),
    /// Check a config file without touching the network; exit code 2 if invalid.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show sources (last event, checkpoints, state) and channels (offset, lag).
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// An account's activity (hour-of-day, weekday and language charts), or the
    /// most active accounts, tags and languages, from an `account_stats`
    /// processor's records in the log.
    Stats(crate::stats::StatsArgs),
    /// Manage channels' consumer groups in the log.
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Print a schema of the records channels write.
    Schema {
        #[command(subcommand)]
        schema: SchemaCommand,
    },
    /// Read-only SQL (Apache DataFusion) over an archive channel's Parquet datasets.
    #[cfg(feature = "sql")]
    Sql(crate::sql::SqlArgs),
    /// (This build has no SQL: built without the `sql` feature.)
    #[cfg(not(feature = "sql"))]
    #[command(hide = true)]
    Sql {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Maintain an archive channel's files: compaction into current state, retention.
    #[cfg(feature = "archive")]
    Archive {
        #[command(subcommand)]
        command: crate::archive::ArchiveCommand,
    },
    /// (This build has no archive channel: built without the `archive` feature.)
    #[cfg(not(feature = "archive"))]
    #[command(hide = true)]
    Archive {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure throughput and latency of the pipeline on synthetic posts.
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum ChannelCommand {
    /// Forget a channel you removed from the config for good: its consumer
    /// group goes, and with it the events retention keeps because that channel
    /// has not delivered them. (A channel missing from the config is otherwise
    /// kept: it resumes where it stopped when it comes back.)
    Forget {
        /// The channel's name (its former `[channels.NAME]`).
        name: String,
        #[arg(long, short)]
        config: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum SchemaCommand {
    /// The Avro schema of the Kafka channel's `avro` format: post events
    /// (schemas/post_event.avsc) or stats records (schemas/stats_record.avsc).
    Avro {
        /// Which records: `posts` (the events topic) or `stats` (an account_stats processor's output).
        #[arg(long, value_enum, default_value_t = AvroRecord::Posts)]
        record: AvroRecord,
    },
    /// The Parquet schemas of the archive channel's datasets (schemas/archive-parquet.md).
    Parquet,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvroRecord {
    Posts,
    Stats,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// How long a shutdown may take to drain channels before it aborts them.
    #[arg(long, env = "FEDISTREAM_DRAIN_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub drain_deadline: Duration,
    /// Never draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// What this process does on a Kafka log: `ingest` (sources), `deliver`
    /// (channels), `process` (processors) or `all`. Run as many of each as you
    /// like, on any machines.
    /// The embedded SQLite log runs everything in one process (`all`). With
    /// only finite sources (replays), `all` ends once everything is delivered
    /// and `ingest` once its sources finish; `deliver` runs until signalled.
    #[arg(long, value_enum, env = "FEDISTREAM_ROLE", default_value = "all")]
    pub role: crate::roles::Role,
    /// With `--role deliver` (or `process`): exit once every channel (or
    /// processor) has consumed everything in the log (its consumer group's lag
    /// is 0) instead of running until signalled.
    #[arg(long)]
    pub until_caught_up: bool,
    /// This process's name among several of the same pipeline (replaces
    /// `{worker}` in file channel paths). Default: the host name.
    #[arg(long, env = "FEDISTREAM_WORKER")]
    pub worker: Option<String>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    fedistream_core::units::parse_duration(s)
}

/// Dependencies' log targets that print secrets at some level, and the level
/// from which they do: tungstenite traces the raw WebSocket handshake request,
/// `Authorization: Bearer <token>` included. Never shown, whatever `--log-level`.
const SECRET_BEARING_TARGETS: [(&str, tracing::Level); 2] =
    [("tungstenite::handshake", tracing::Level::TRACE), ("tokio_tungstenite", tracing::Level::TRACE)];

fn bears_secrets(meta: &tracing::Metadata<'_>) -> bool {
    SECRET_BEARING_TARGETS.iter().any(|(target, level)| meta.target().starts_with(target) && meta.level() >= level)
}

pub fn init_tracing(g: &GlobalArgs) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&g.log_level).unwrap_or_else(|e| {
        eprintln!("fedistream: invalid --log-level `{}` ({e}); using `info`", g.log_level);
        EnvFilter::new("info")
    });
    let filter = filter.and(filter_fn(|meta| !bears_secrets(meta)));
    // Colour only on a terminal, and never with NO_COLOR (https://no-color.org).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    match g.log_format {
        LogFormat::Text => tracing_subscriber::registry().with(layer.with_target(false).with_filter(filter)).init(),
        LogFormat::Json => tracing_subscriber::registry().with(layer.json().with_filter(filter)).init(),
    }
}

/// Exit code 2: the input (config) is invalid.
pub const EXIT_INVALID: u8 = 2;

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run(a).await,
        Command::Follow(a) => crate::follow::run(a).await,
        Command::Validate { config } => Ok(validate(&config)),
        Command::Status { config, json } => crate::status::run(&config, json).await,
        Command::Channel { command: ChannelCommand::Forget { name, config, yes } } => forget_channel(&name, &config, yes).await,
        #[cfg(feature = "kafka")]
        Command::Schema { schema: SchemaCommand::Avro { record } } => {
            let records = match record {
                AvroRecord::Posts => fedistream_kafka::channel::RecordKind::Posts,
                AvroRecord::Stats => fedistream_kafka::channel::RecordKind::Stats,
            };
            print!("{}", records.schema_json());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(not(feature = "kafka"))]
        Command::Schema { schema: SchemaCommand::Avro { .. } } => anyhow::bail!("{}", crate::features::Feature::Kafka.missing()),
        #[cfg(feature = "archive")]
        Command::Schema { schema: SchemaCommand::Parquet } => {
            print!("{}", fedistream_archive::schema::describe());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(not(feature = "archive"))]
        Command::Schema { schema: SchemaCommand::Parquet } => anyhow::bail!("{}", crate::features::Feature::Archive.missing()),
        #[cfg(feature = "sql")]
        Command::Sql(a) => crate::sql::run(a).await,
        #[cfg(not(feature = "sql"))]
        Command::Sql { .. } => anyhow::bail!("{}", crate::features::Feature::Sql.missing()),
        #[cfg(feature = "archive")]
        Command::Archive { command } => crate::archive::run(command).await,
        #[cfg(not(feature = "archive"))]
        Command::Archive { .. } => anyhow::bail!("{}", crate::features::Feature::Archive.missing()),
        Command::Bench(a) => crate::bench::run(a).await,
        Command::Stats(a) => crate::stats::run(a).await,
    }
}

/// Load and validate, printing every problem. `None` means invalid (already reported).
pub fn load_valid(path: &std::path::Path) -> Option<config::Config> {
    load_checked(path, true)
}

/// [`load_valid`], optionally without checking that tokens are available.
pub fn load_checked(path: &std::path::Path, check_secrets: bool) -> Option<config::Config> {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fedistream: invalid config: {e}");
            return None;
        }
    };
    if let Err(errs) = config::validate::validate_with(&cfg, path, check_secrets) {
        for e in &errs {
            eprintln!("fedistream: invalid config: {e}");
        }
        return None;
    }
    Some(cfg)
}

fn validate(path: &std::path::Path) -> ExitCode {
    match load_valid(path) {
        Some(cfg) => {
            println!(
                "{}: valid ({} source{}, {} channel{}, {} route{})",
                path.display(),
                cfg.sources.len(),
                if cfg.sources.len() == 1 { "" } else { "s" },
                cfg.channels.len(),
                if cfg.channels.len() == 1 { "" } else { "s" },
                cfg.routes.len(),
                if cfg.routes.len() == 1 { "" } else { "s" },
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::from(EXIT_INVALID),
    }
}

async fn forget_channel(name: &str, path: &std::path::Path, yes: bool) -> anyhow::Result<ExitCode> {
    let Some(cfg) = load_checked(path, false) else {
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    if cfg.channels.contains_key(name) {
        eprintln!(
            "fedistream: channel `{name}` is still in {}: remove its [channels.{name}] table first (forgetting a configured \
             channel would make it deliver the whole log again)",
            path.display()
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let group = crate::pipeline::channel_group(&cfg, name);
    let log = crate::pipeline::open_log(&cfg).await.context("opening the log (is `fedistream run` still using it?)")?.shared();
    let info = log.info().await.context("reading the log's consumer groups")?;
    let Some(g) = info.groups.iter().find(|g| g.group == group) else {
        eprintln!("fedistream: the log has no consumer group for channel `{name}` ({group}); nothing to forget");
        return Ok(ExitCode::FAILURE);
    };
    if !yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            eprintln!("fedistream: add --yes to forget channel `{name}` without a prompt");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        eprint!("Forget channel `{name}`? It has {} undelivered event(s); retention will no longer keep them for it. [y/N] ", g.lag);
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok();
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("fedistream: nothing changed");
            return Ok(ExitCode::FAILURE);
        }
    }
    log.forget_group(&group).await.with_context(|| format!("forgetting the consumer group {group}"))?;
    eprintln!("fedistream: forgot channel `{name}` (consumer group {group}, {} undelivered event(s))", g.lag);
    Ok(ExitCode::SUCCESS)
}

/// Cancel `token` on SIGINT or SIGTERM; a second signal exits at once.
pub fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGTERM");
                return;
            }
        };
        for i in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if i == 0 {
                tracing::info!("Stopping: draining channels (signal again to exit at once)");
                token.cancel();
            } else {
                eprintln!("fedistream: second signal, exiting without draining");
                std::process::exit(130);
            }
        }
    });
}

async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    if a.until_caught_up && !matches!(a.role, crate::roles::Role::Deliver | crate::roles::Role::Process) {
        eprintln!(
            "fedistream: --until-caught-up goes with --role deliver or process (`all` and `ingest` end by themselves when every source is finite)"
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let Some(cfg) = load_valid(&a.config) else {
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    let options = RuntimeOptions {
        drain_deadline: a.drain_deadline,
        worker: a.worker.clone().unwrap_or_else(default_worker),
        ..RuntimeOptions::default()
    };
    let token = CancellationToken::new();
    spawn_signal_handler(token.clone());
    let log = crate::pipeline::open_log(&cfg).await?;
    // A build without the server refused a `[http]` asking for one (validation).
    #[cfg(feature = "http")]
    let http = crate::http::start(&cfg, log.shared(), &options.worker, a.role).await?;
    let summary = match log {
        crate::pipeline::OpenLog::Sqlite(log) => {
            if a.role != crate::roles::Role::All {
                anyhow::bail!(
                    "--role {} needs the Kafka log ([log] backend = \"kafka\" in {}); the embedded SQLite log runs every role in one process",
                    a.role.as_str(),
                    a.config.display()
                );
            }
            let progress = if a.no_progress { None } else { crate::progress::TerminalProgress::new_if_tty() };
            let pipeline = fedistream_core::runtime::Pipeline {
                log,
                processors: crate::pipeline::processors(&cfg)?,
                sources: crate::pipeline::sources(&cfg, &|_| true)?,
                channels: crate::pipeline::channels(&cfg)?,
                options,
                progress: progress.map(|p| Arc::new(p) as _),
            };
            tracing::info!(config = %a.config.display(), log = %cfg.log.path.display(), "fedistream running");
            fedistream_core::runtime::run(pipeline, token).await.context("the log failed")?
        }
        #[cfg(feature = "kafka")]
        crate::pipeline::OpenLog::Kafka(log) => {
            tracing::info!(config = %a.config.display(), role = a.role.as_str(), brokers = %log.config().brokers,
                pipeline = %log.config().pipeline, "fedistream running on Kafka");
            crate::roles::run_kafka(&cfg, log, a.role, a.until_caught_up, options, token).await?
        }
    };
    #[cfg(feature = "http")]
    if let Some(server) = http {
        server.stop().await;
    }
    print_summary(&summary);
    Ok(if summary.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn print_summary(s: &RunSummary) {
    let fmt = |c: &std::collections::BTreeMap<String, u64>| c.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    eprintln!("fedistream: summary");
    eprintln!("  log                      {:<9} {}", "", fmt(&s.log.counters));
    for c in &s.sources {
        eprintln!("  source  {:<16} {:<9} {}", c.name, c.state, fmt(&c.counters));
    }
    for c in &s.processors {
        eprintln!("  process {:<16} {:<9} {}", c.name, c.state, fmt(&c.counters));
    }
    for c in &s.channels {
        eprintln!("  channel {:<16} {:<9} {}", c.name, c.state, fmt(&c.counters));
    }
    for e in &s.failures {
        eprintln!("  failed  {}: {} ({})", e.component, e.message, e.kind.as_str());
    }
}

/// The worker name when `--worker` is not given: the host name.
pub fn default_worker() -> String {
    let h = gethostname::gethostname().to_string_lossy().trim().to_string();
    if h.is_empty() {
        "worker".into()
    } else {
        h
    }
}
