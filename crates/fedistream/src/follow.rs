//! `fedistream follow @user@host…`: a zero-config live tail on the terminal.
//! Builds a one-source, one-channel pipeline in memory and runs it like `run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use fedistream_connectors::mastodon::source::{parse_acct, parse_base_url, Backfill, MastodonSourceConfig, StreamMode};
use fedistream_connectors::stdout::{OutputFormat, StdoutSinkConfig};
use fedistream_core::runtime::RuntimeOptions;
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelConfig, Config, MastodonConnection, SourceConfig};

#[derive(Args, Debug)]
pub struct FollowArgs {
    /// Accounts, as `@user@host`.
    #[arg(required = true)]
    pub accounts: Vec<String>,
    /// Environment variable holding a reader token (enables streaming; the
    /// reader must follow the accounts). Without it, fedistream polls.
    #[arg(long)]
    pub token_env: Option<String>,
    /// Server of the reader token (default: the first account's server).
    #[arg(long)]
    pub reader_instance: Option<String>,
    /// Reach the accounts' server at this base URL (tests, proxies; http only for loopback).
    #[arg(long)]
    pub instance: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// What to show first: `none`, `last:N`, `since:YYYY-MM-DD`.
    #[arg(long, default_value = "last:5", value_parser = Backfill::parse)]
    pub backfill: Backfill,
    /// Keep state here to resume where the last `follow` stopped (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Poll interval per account (shortest, for active accounts).
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub poll_interval: std::time::Duration,
}

#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub enum Format {
    Text,
    Jsonl,
}

pub async fn run(a: FollowArgs) -> anyhow::Result<ExitCode> {
    for acct in &a.accounts {
        if let Err(e) = parse_acct(acct) {
            eprintln!("fedistream: {e}");
            return Ok(ExitCode::from(crate::cli::EXIT_INVALID));
        }
    }
    let (_tmp, dir) = match &a.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = std::env::temp_dir().join(format!("fedistream-follow-{}", std::process::id()));
            (Some(RemoveOnDrop(t.clone())), t)
        }
    };
    let mut src = MastodonSourceConfig::for_accounts(a.accounts.clone());
    src.backfill = a.backfill.clone();
    src.instance = a.instance.clone();
    src.poll_interval = a.poll_interval;
    src.max_poll_interval = src.max_poll_interval.max(a.poll_interval);
    // A live tail of accounts that cannot be read is pointless: say why and stop.
    src.stop_if_unreadable = true;
    let mut cfg = Config::default();
    cfg.log.path = dir.join("follow.db");
    if let Some(var) = &a.token_env {
        let instance = match (&a.reader_instance, &a.instance) {
            (Some(r), _) => r.clone(),
            (None, Some(i)) => i.clone(),
            (None, None) => format!("https://{}", parse_acct(&a.accounts[0]).map(|(_, h)| h).unwrap_or_default()),
        };
        parse_base_url(&instance).map_err(anyhow::Error::msg).context("--reader-instance")?;
        cfg.connections.mastodon.insert("reader".into(), MastodonConnection { instance, token_env: Some(var.clone()), token_file: None });
        src.connection = Some("reader".into());
    } else {
        src.stream = StreamMode::Off;
    }
    cfg.sources.insert("follow".into(), SourceConfig::Mastodon(Box::new(src)));
    let format = match a.format {
        Format::Text => OutputFormat::Text,
        Format::Jsonl => OutputFormat::Jsonl,
    };
    cfg.channels.insert("stdout".into(), ChannelConfig::Stdout(StdoutSinkConfig { format, delivery: Default::default() }));
    if let Err(errs) = crate::config::validate::validate(&cfg, std::path::Path::new("(follow arguments)")) {
        for e in errs {
            eprintln!("fedistream: {e}");
        }
        return Ok(ExitCode::from(crate::cli::EXIT_INVALID));
    }
    let progress = crate::progress::TerminalProgress::new_if_tty().map(|p| Arc::new(p) as _);
    let pipeline = crate::pipeline::build(&cfg, RuntimeOptions::default(), progress).await?;
    let token = CancellationToken::new();
    crate::cli::spawn_signal_handler(token.clone());
    let summary = fedistream_core::runtime::run(pipeline, token).await?;
    crate::cli::print_summary(&summary);
    Ok(if summary.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The default state directory of `follow` lives only as long as the command.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
