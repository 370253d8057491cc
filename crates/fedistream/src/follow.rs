//! `fedistream follow @user@host…`: a zero-config live tail on the terminal,
//! of accounts and of server feeds (`--local HOST`, `--hashtag TAG@HOST`).
//! Builds the sources and one stdout channel in memory and runs them like `run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use fedistream_connectors::mastodon::source::{
    parse_acct, parse_base_url, Backfill, MastodonSourceConfig, MastodonTimelineConfig, StreamMode, TimelineKind,
};
use fedistream_connectors::stdout::{OutputFormat, StdoutSinkConfig};
use fedistream_core::runtime::RuntimeOptions;
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelConfig, Config, MastodonConnection, SourceConfig};

#[derive(Args, Debug)]
pub struct FollowArgs {
    /// Accounts, as `@user@host`.
    #[arg(required_unless_present_any = ["local", "hashtag"])]
    pub accounts: Vec<String>,
    /// A server's local timeline: its public posts, as `HOST` (e.g. `mastodon.social`). Repeatable.
    /// Anonymous REST unless the reader token is on that server (then streamed too).
    #[arg(long, value_name = "HOST")]
    pub local: Vec<String>,
    /// Public posts with a hashtag, as a server sees them: `TAG@HOST` (e.g. `rust@fosstodon.org`). Repeatable.
    #[arg(long, value_name = "TAG@HOST")]
    pub hashtag: Vec<String>,
    /// Environment variable holding a reader token (enables streaming; the
    /// reader must follow the accounts). Without it, fedistream polls.
    #[arg(long)]
    pub token_env: Option<String>,
    /// Server of the reader token (default: the first account's server).
    #[arg(long)]
    pub reader_instance: Option<String>,
    /// Reach the accounts' (and feeds') server at this base URL (tests, proxies; http only for loopback).
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
    /// Poll interval per account (shortest, for active accounts) and per feed.
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
    let feeds = match feeds_by_host(&a.local, &a.hashtag) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fedistream: {e}");
            return Ok(ExitCode::from(crate::cli::EXIT_INVALID));
        }
    };
    let (_tmp, dir) = match &a.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = std::env::temp_dir().join(format!("fedistream-follow-{}", std::process::id()));
            (Some(RemoveOnDrop(t.clone())), t)
        }
    };
    let mut cfg = Config::default();
    cfg.log.path = dir.join("follow.db");
    // The reader token's server: given, or the first account's or feed's.
    let reader_host = match (&a.reader_instance, &a.instance) {
        (Some(r), _) => r.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => {
            let first =
                a.accounts.first().and_then(|acct| parse_acct(acct).ok()).map(|(_, h)| h).or_else(|| feeds.first().map(|(h, _)| h.clone()));
            format!("https://{}", first.unwrap_or_default())
        }
    };
    if let Some(var) = &a.token_env {
        parse_base_url(&reader_host).map_err(anyhow::Error::msg).context("--reader-instance")?;
        let conn = MastodonConnection { instance: reader_host.clone(), token_env: Some(var.clone()), token_file: None };
        cfg.connections.mastodon.insert("reader".into(), conn);
    }
    if !a.accounts.is_empty() {
        let mut src = MastodonSourceConfig::for_accounts(a.accounts.clone());
        src.backfill = a.backfill.clone();
        src.instance = a.instance.clone();
        src.poll_interval = a.poll_interval;
        src.max_poll_interval = src.max_poll_interval.max(a.poll_interval);
        // A live tail of accounts that cannot be read is pointless: say why and stop.
        src.stop_if_unreadable = true;
        if a.token_env.is_some() {
            src.connection = Some("reader".into());
        } else {
            src.stream = StreamMode::Off;
        }
        cfg.sources.insert("follow".into(), SourceConfig::Mastodon(Box::new(src)));
    }
    for (i, (host, kinds)) in feeds.into_iter().enumerate() {
        let mut t = MastodonTimelineConfig::new(kinds);
        let base = a.instance.clone().unwrap_or_else(|| format!("https://{host}"));
        // The reader token reads its own server's feeds (and streams them);
        // elsewhere, anonymous REST.
        let on_reader = a.token_env.is_some() && url_host(&base) == url_host(&reader_host);
        if on_reader {
            t.connection = Some("reader".into());
        } else {
            t.instance = Some(base);
        }
        t.backfill = a.backfill.clone();
        t.poll_interval = a.poll_interval;
        t.stop_if_unreadable = true;
        cfg.sources.insert(format!("timeline-{}", i + 1), SourceConfig::MastodonTimeline(Box::new(t)));
    }
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

/// `--local HOST` and `--hashtag TAG@HOST`, grouped by server (one timeline
/// source each), in the order given.
fn feeds_by_host(local: &[String], hashtag: &[String]) -> Result<Vec<(String, Vec<TimelineKind>)>, String> {
    let mut out: Vec<(String, Vec<TimelineKind>)> = Vec::new();
    let mut add = |host: &str, kind: TimelineKind| {
        let host = host.trim().to_ascii_lowercase();
        match out.iter_mut().find(|(h, _)| *h == host) {
            Some((_, kinds)) if kinds.contains(&kind) => {}
            Some((_, kinds)) => kinds.push(kind),
            None => out.push((host, vec![kind])),
        }
    };
    for host in local {
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(format!("--local `{host}`: expected a server name, e.g. `mastodon.social`"));
        }
        add(host, TimelineKind::Local);
    }
    for h in hashtag {
        let (tag, host) = h
            .trim_start_matches('#')
            .rsplit_once('@')
            .filter(|(t, host)| !t.is_empty() && !host.is_empty() && !host.contains('/'))
            .ok_or_else(|| format!("--hashtag `{h}`: expected `TAG@HOST`, e.g. `rust@fosstodon.org`"))?;
        let kind = TimelineKind::parse(&format!("hashtag:{tag}")).map_err(|e| format!("--hashtag `{h}`: {e}"))?;
        add(host, kind);
    }
    Ok(out)
}

fn url_host(base: &str) -> Option<String> {
    url::Url::parse(base).ok().map(|u| format!("{}:{}", u.host_str().unwrap_or_default(), u.port_or_known_default().unwrap_or(0)))
}

/// The default state directory of `follow` lives only as long as the command.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_group_by_server() {
        let f = feeds_by_host(&["Mastodon.social".into()], &["rust@fosstodon.org".into(), "#go@mastodon.social".into()]).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].0, "mastodon.social");
        assert_eq!(f[0].1, vec![TimelineKind::Local, TimelineKind::Hashtag { tag: "go".into(), local: false }]);
        assert_eq!(f[1].1, vec![TimelineKind::Hashtag { tag: "rust".into(), local: false }]);
        assert!(feeds_by_host(&[], &["rust".into()]).unwrap_err().contains("TAG@HOST"));
        assert!(feeds_by_host(&["https://x.example/".into()], &[]).unwrap_err().contains("--local"));
    }
}
