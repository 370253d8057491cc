//! `fedistream sql`: read-only SQL over an archive channel's datasets (see
//! `fedistream_archive::sql` for the tables). The archive's location comes
//! from the config's archive channel.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use fedistream_archive::sql::OutputFormat;
use fedistream_archive::ArchiveSinkConfig;

use crate::config;

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// One query, e.g. `SELECT count(*) FROM posts`. Tables: `events` (every
    /// event, every version), `posts` (the latest version of each post, deleted
    /// ones left out), one per processor dataset (e.g. `stats`); partition
    /// columns `date` and `hour`.
    #[arg(required_unless_present = "shell", conflicts_with = "shell")]
    pub query: Option<String>,
    /// An interactive prompt instead of one query: statements end with `;`
    /// (and may span lines), `\q` or Ctrl-D quits, Ctrl-C drops the
    /// statement being typed. History in FEDISTREAM_SQL_HISTORY, else
    /// `~/.fedistream_sql_history`.
    #[arg(long)]
    pub shell: bool,
    /// The pipeline's config file: where the archive is.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The archive channel to read, when the config has several.
    #[arg(long)]
    pub channel: Option<String>,
    /// How to print the result: table, csv, json (one object per line) or
    /// parquet (one Parquet file; to a terminal only with --output).
    #[arg(long, default_value = "table", value_parser = parse_format)]
    pub format: OutputFormat,
    /// Write the result to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    s.parse()
}

pub async fn run(a: SqlArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::load(&a.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let archive = crate::archive::archive_channel(&cfg, a.channel.as_deref())?;
    let problems = archive.problems();
    if let Some((key, why)) = problems.first() {
        bail!("{}: the archive channel's {key}: {why}", a.config.display());
    }
    let Some(query) = a.query.as_deref() else {
        return shell(&archive, a.format).await;
    };
    if a.output.is_none() && a.format == OutputFormat::Parquet && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("--format parquet writes binary data: give --output FILE, or redirect stdout");
    }
    let batches = fedistream_archive::sql::run(&archive, query).await.map_err(anyhow::Error::msg).context("running the query")?;
    match &a.output {
        Some(path) => {
            let mut f = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("--output {}", path.display()))?);
            fedistream_archive::sql::print(&batches, a.format, &mut f).map_err(anyhow::Error::msg)?;
            std::io::Write::flush(&mut f).with_context(|| format!("--output {}", path.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            fedistream_archive::sql::print(&batches, a.format, &mut out).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn history_file() -> Option<PathBuf> {
    std::env::var_os("FEDISTREAM_SQL_HISTORY")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".fedistream_sql_history")))
}

/// `--shell`: read statements (ending with `;`) with line editing and
/// history, run each over the archive, print results (errors on stderr, the
/// prompt goes on).
async fn shell(archive: &ArchiveSinkConfig, format: OutputFormat) -> anyhow::Result<ExitCode> {
    use rustyline::error::ReadlineError;
    if format == OutputFormat::Parquet {
        bail!("--shell prints tables, CSV or JSON; for Parquet run one query with --output FILE");
    }
    let mut rl = rustyline::DefaultEditor::new().context("starting the prompt")?;
    let history = history_file();
    if let Some(h) = &history {
        let _ = rl.load_history(h); // none yet: fine
    }
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() { "fedistream> " } else { "        ...> " };
        match rl.readline(prompt) {
            Ok(line) => {
                let t = line.trim();
                if statement.is_empty() && matches!(t, "\\q" | "quit" | "exit") {
                    break;
                }
                if t.is_empty() && statement.is_empty() {
                    continue;
                }
                statement.push_str(&line);
                statement.push('\n');
                if !t.ends_with(';') {
                    continue;
                }
                let sql = std::mem::take(&mut statement);
                let sql = sql.trim().trim_end_matches(';').trim();
                let _ = rl.add_history_entry(sql);
                match fedistream_archive::sql::run(archive, sql).await {
                    Ok(batches) => {
                        let stdout = std::io::stdout();
                        let mut out = stdout.lock();
                        if let Err(e) = fedistream_archive::sql::print(&batches, format, &mut out) {
                            eprintln!("error: {e}");
                        }
                    }
                    Err(e) => eprintln!("error: {e}"),
                }
            }
            Err(ReadlineError::Interrupted) => statement.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading the prompt"),
        }
    }
    if let Some(h) = &history {
        if let Err(e) = rl.save_history(h) {
            eprintln!("fedistream: cannot save the history to {}: {e}", h.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
