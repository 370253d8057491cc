//! `fedistream archive compact`: rewrite an archive channel's posts dataset
//! as current state and apply its retention (see `fedistream_archive::compact`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{NaiveDate, Utc};
use clap::{Args, Subcommand};
use fedistream_archive::compact::{compact, CompactOptions};
use fedistream_archive::store::Archive;

use crate::config::{self, ChannelConfig};
use fedistream_archive::ArchiveSinkConfig;

#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Rewrite the posts dataset's older hour directories as current state:
    /// the latest version of each post, deleted posts removed (the `events`
    /// table then holds only those). Readers of `fedistream sql` switch from
    /// the old objects to the new ones at once (a manifest); objects the
    /// channel stores meanwhile are kept. Also removes the directories older
    /// than the channel's `retention` (or --retention). One run at a time per
    /// dataset (a lease object; a second run fails naming the first); safe to
    /// rerun, also after a crash.
    Compact(CompactArgs),
}

#[derive(Args, Debug)]
pub struct CompactArgs {
    /// The pipeline's config file: where the archive is.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The archive channel, when the config has several.
    #[arg(long)]
    pub channel: Option<String>,
    /// The dataset to compact: the channel's events dataset (`posts`, or its `dataset`).
    #[arg(long, default_value = "posts")]
    pub dataset: String,
    /// Rewrite only the directories of days before this date (YYYY-MM-DD,
    /// UTC). Default: every hour directory that ended at least the channel's
    /// `max_file_age` ago.
    #[arg(long)]
    pub before: Option<NaiveDate>,
    /// Remove the hour directories that ended longer ago than this (e.g.
    /// `90d`); overrides the channel's `retention`.
    #[arg(long, value_parser = crate::cli::parse_duration)]
    pub retention: Option<Duration>,
    /// How long the run's lease on the dataset holds unless renewed (the run
    /// renews it between its steps). A second run meanwhile fails naming this
    /// one (host, pid); a run that dies leaves the lease until it expires (on
    /// the same host: until the next run sees the process is gone), then the
    /// next run takes it over.
    #[arg(long, default_value = "1h", value_parser = crate::cli::parse_duration)]
    pub lease: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: ArchiveCommand) -> anyhow::Result<ExitCode> {
    let ArchiveCommand::Compact(a) = command;
    let cfg = config::load(&a.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let channel = archive_channel(&cfg, a.channel.as_deref())?;
    if let Some((key, why)) = channel.problems().first() {
        bail!("{}: the archive channel's {key}: {why}", a.config.display());
    }
    if channel.format != fedistream_archive::Format::Parquet {
        bail!("compaction rewrites Parquet archives; this channel writes JSON Lines (format = \"jsonl\")");
    }
    let events = channel.dataset_for(fedistream_core::log::EVENTS);
    if a.dataset != events {
        bail!("--dataset {}: only the channel's posts dataset (`{events}`) is compacted", a.dataset);
    }
    let now = Utc::now();
    let before = match a.before {
        Some(d) => d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc(),
        None => now - chrono::Duration::from_std(channel.max_file_age).context("max_file_age")?,
    };
    let retention = a.retention.or(channel.retention);
    let expire_before = retention.map(|r| chrono::Duration::from_std(r).map(|r| now - r)).transpose().context("retention")?;
    let archive = Archive::open(&channel).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let opts = CompactOptions {
        before,
        expire_before,
        row_group_rows: channel.row_group_rows,
        multipart_threshold: channel.multipart_threshold,
        multipart_part_bytes: channel.multipart_part_bytes,
        owner: "fedistream archive compact".into(),
        lease: a.lease,
    };
    let report = compact(&archive, &a.dataset, opts)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))
        .with_context(|| format!("compacting {}/{}", archive.display, a.dataset))?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}/{}: generation {}; {} hour director{} rewritten ({} rows -> {}), {} expired; {} object(s) written, {} removed",
            archive.display,
            a.dataset,
            report.generation,
            report.dirs_rewritten,
            if report.dirs_rewritten == 1 { "y" } else { "ies" },
            report.rows_before,
            report.rows_after,
            report.dirs_expired,
            report.objects_written,
            report.objects_removed
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The archive channel's settings: the one named, or the only one.
pub fn archive_channel(cfg: &config::Config, name: Option<&str>) -> anyhow::Result<ArchiveSinkConfig> {
    let archives: Vec<(&String, &ArchiveSinkConfig)> = cfg
        .channels
        .iter()
        .filter_map(|(n, c)| match c {
            ChannelConfig::Archive(a) => Some((n, &**a)),
            _ => None,
        })
        .collect();
    match (name, archives.as_slice()) {
        (Some(n), _) => match archives.iter().find(|(k, _)| k.as_str() == n) {
            Some((_, a)) => Ok((*a).clone()),
            None => bail!("--channel {n}: no archive channel of that name (archive channels: {})", names(&archives)),
        },
        (None, [(_, a)]) => Ok((*a).clone()),
        (None, []) => bail!("the config has no archive channel (`type = \"archive\"`)"),
        (None, _) => bail!("the config has several archive channels ({}): pick one with --channel", names(&archives)),
    }
}

fn names(a: &[(&String, &ArchiveSinkConfig)]) -> String {
    a.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}
