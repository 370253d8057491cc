//! `fedistream stats`: an account's activity, or the most active accounts,
//! tags, languages, instances and sources, from an `account_stats`
//! processor's records in the log.
//!
//! What it reads: the processor's output topic (every window it emitted, the
//! latest revision of each; SQLite log only, as far as retention kept it) and
//! the processor's state (the windows it still holds, open ones included,
//! computed as they stand now; both logs). The state wins where both have a
//! window. It reads the log read-only, so it works beside a running `run`.
//!
//! `--since` counts back from the end of the newest window shown, not from the
//! clock, so a replayed archive shows its own last days.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use fedistream_core::sqlite::SqliteLog;
use fedistream_core::Log;
use fedistream_process::stats::record::TopK;
use fedistream_process::stats::{state_namespace, AccountStatsConfig, Scope, StatsRecord, TopicRecord, TotalsRecord, WindowSize};

use crate::config::{Config, LogBackend, ProcessorConfig};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The account, `@user@host` (or `user@host`). Omit it with `--top`.
    pub account: Option<String>,
    /// The pipeline's config file (where its log is, and the processor's settings).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The `account_stats` processor to read (default: the config's only one).
    #[arg(long)]
    pub processor: Option<String>,
    /// Which windows to add up.
    #[arg(long, value_enum, default_value = "day")]
    pub window: WindowArg,
    /// How far back, from the end of the newest window.
    #[arg(long, default_value = "30d", value_parser = crate::cli::parse_duration)]
    pub since: Duration,
    /// `text`: totals and bar charts; `json`: totals and every window's record.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Instead of one account: the most active accounts, the most used tags or
    /// languages, or the instances and sources with the most posts.
    #[arg(long, value_enum)]
    pub top: Option<Top>,
    /// How many rows `--top` lists.
    #[arg(long, default_value = "10")]
    pub limit: usize,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq)]
pub enum WindowArg {
    Hour,
    Day,
    Week,
}

impl WindowArg {
    fn size(self) -> WindowSize {
        match self {
            WindowArg::Hour => WindowSize::Hour,
            WindowArg::Day => WindowSize::Day,
            WindowArg::Week => WindowSize::Week,
        }
    }
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq)]
pub enum Top {
    Accounts,
    Tags,
    Languages,
    Instances,
    Sources,
}

pub async fn run(a: StatsArgs) -> anyhow::Result<ExitCode> {
    let Some(cfg) = crate::cli::load_checked(&a.config, false) else {
        return Ok(ExitCode::from(crate::cli::EXIT_INVALID));
    };
    let (name, pcfg) = match pick_processor(&cfg, a.processor.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fedistream: {e}");
            return Ok(ExitCode::from(crate::cli::EXIT_INVALID));
        }
    };
    if !pcfg.windows.contains(&a.window.size()) {
        eprintln!(
            "fedistream: processor `{name}` keeps {} windows, not {}",
            pcfg.windows.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(", "),
            a.window.size().as_str()
        );
        return Ok(ExitCode::from(crate::cli::EXIT_INVALID));
    }
    let (records, totals) = load(&cfg, &name, &pcfg).await?;
    let records = select(records, a.window.size(), a.since);
    let out = match (a.top, &a.account) {
        (Some(top @ (Top::Instances | Top::Sources)), _) => render_top_totals(&totals, top, a.window.size(), a.since, a.limit, a.format),
        (Some(top), _) => render_top(&records, top, a.limit, a.format),
        (None, Some(acct)) => {
            let acct = acct.trim_start_matches('@').to_lowercase();
            let mine: Vec<&StatsRecord> = records.iter().filter(|r| r.account == acct).collect();
            if mine.is_empty() {
                eprintln!(
                    "fedistream: no {} windows of {acct} in the last {} of processor `{name}`'s statistics",
                    a.window.size().as_str(),
                    human(a.since)
                );
                return Ok(ExitCode::FAILURE);
            }
            render_account(&acct, &mine, a.format)
        }
        (None, None) => {
            eprintln!("fedistream: name an account (@user@host) or use --top accounts|tags|languages|instances|sources");
            return Ok(ExitCode::from(crate::cli::EXIT_INVALID));
        }
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub fn pick_processor(cfg: &Config, wanted: Option<&str>) -> Result<(String, AccountStatsConfig), String> {
    let stats: Vec<(&String, &AccountStatsConfig)> = cfg
        .processors
        .iter()
        .filter_map(|(n, p)| match p {
            ProcessorConfig::AccountStats(s) => Some((n, s)),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .collect();
    match (wanted, stats.as_slice()) {
        (Some(w), _) => stats
            .iter()
            .find(|(n, _)| n.as_str() == w)
            .map(|(n, s)| ((*n).clone(), (*s).clone()))
            .ok_or_else(|| format!("the config has no account_stats processor named `{w}`")),
        (None, [(n, s)]) => Ok(((*n).clone(), (*s).clone())),
        (None, []) => Err("the config has no account_stats processor ([processors.NAME] type = \"account_stats\")".into()),
        (None, _) => Err(format!(
            "the config has several account_stats processors ({}): choose one with --processor",
            stats.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Every window the log knows of, latest revision each (state over topic):
/// the accounts' and the totals'.
async fn load(cfg: &Config, name: &str, pcfg: &AccountStatsConfig) -> anyhow::Result<(Vec<StatsRecord>, Vec<TotalsRecord>)> {
    let (log, topic): (std::sync::Arc<dyn Log>, Vec<_>) = match (cfg.log.backend, &cfg.log.kafka) {
        #[cfg(feature = "kafka")]
        (LogBackend::Kafka, Some(k)) => {
            let log = fedistream_kafka::log::KafkaLog::open(k.clone())
                .await
                .with_context(|| format!("opening the Kafka log at {}", k.brokers))?;
            // The processor's state is kept per input partition: hold every one.
            let group = crate::pipeline::processor_group(cfg, name);
            log.own_group_state(&group, fedistream_core::log::EVENTS).await.context("reading the processor's state")?;
            (log, Vec::new())
        }
        #[cfg(not(feature = "kafka"))]
        (LogBackend::Kafka, Some(_)) => anyhow::bail!("log.backend: {}", crate::features::Feature::Kafka.missing()),
        _ => {
            let sqlite = SqliteLog::open_read_only(&cfg.log.path)
                .with_context(|| format!("no log yet at {} (has `fedistream run` started?)", cfg.log.path.display()))?;
            let topic = sqlite.topic_records(name).await.context("reading the processor's topic")?;
            (sqlite, topic)
        }
    };
    all_windows(&*log, topic, name, pcfg).await
}

/// The account windows of processor `name`: its topic's records (`(offset,
/// payload)`, as far as the log has them) with the windows its state still
/// holds laid over them, latest revision of each key. The dashboard's charts
/// read them too.
#[cfg(feature = "http")]
pub async fn windows(log: &dyn Log, topic: Vec<(u64, String)>, name: &str, pcfg: &AccountStatsConfig) -> anyhow::Result<Vec<StatsRecord>> {
    Ok(all_windows(log, topic, name, pcfg).await?.0)
}

/// [`windows`], and the totals windows beside them.
async fn all_windows(
    log: &dyn Log,
    topic: Vec<(u64, String)>,
    name: &str,
    pcfg: &AccountStatsConfig,
) -> anyhow::Result<(Vec<StatsRecord>, Vec<TotalsRecord>)> {
    let rules = pcfg.rules().map_err(anyhow::Error::msg)?;
    let mut by_key: BTreeMap<String, StatsRecord> = BTreeMap::new();
    let mut totals: BTreeMap<String, TotalsRecord> = BTreeMap::new();
    for (offset, payload) in topic {
        match TopicRecord::parse(&payload).with_context(|| format!("record {offset} of topic `{name}` is not a stats record"))? {
            TopicRecord::Account(rec) => by_key.insert(rec.key.clone(), *rec).map(|_| ()),
            TopicRecord::Totals(t) => totals.insert(t.key.clone(), t).map(|_| ()),
        };
    }
    let ns = state_namespace(name);
    let entries = log.state_scan(&ns).await.context("reading the processor's state")?;
    let scopes = fedistream_process::stats::load_totals(&ns, &entries, None).map_err(anyhow::Error::msg)?;
    for (key, st) in &scopes {
        for ((size, start), w) in &st.windows {
            let rec = fedistream_process::stats::totals::record(key, *size, *start, w, w.finals.saturating_sub(1), w.closed, &rules);
            totals.insert(rec.key.clone(), rec);
        }
    }
    let states = fedistream_process::stats::load_states(&ns, entries, None).map_err(anyhow::Error::msg)?;
    for ((_, account), st) in &states {
        let held: Vec<((WindowSize, i64), bool, u32)> =
            st.held_windows().map(|(k, w)| (*k, w.closed, w.finals.saturating_sub(1))).collect();
        for ((size, start), closed, revision) in held {
            let rec = st.record(account, size, start, revision, closed, &rules);
            by_key.insert(rec.key.clone(), rec);
        }
    }
    Ok((by_key.into_values().collect(), totals.into_values().collect()))
}

/// The windows of `size` within `since` of the newest one's end, oldest first.
fn select(records: Vec<StatsRecord>, size: WindowSize, since: Duration) -> Vec<StatsRecord> {
    let mut v: Vec<StatsRecord> = records.into_iter().filter(|r| r.window == size).collect();
    let Some(newest) = v.iter().map(|r| r.end.clone()).max() else {
        return v;
    };
    let newest = chrono::DateTime::parse_from_rfc3339(&newest).map(|t| t.timestamp_millis()).unwrap_or(i64::MAX);
    let from = newest.saturating_sub(since.as_millis().min(i64::MAX as u128) as i64);
    v.retain(|r| chrono::DateTime::parse_from_rfc3339(&r.start).is_ok_and(|t| t.timestamp_millis() >= from));
    v.sort_by(|a, b| (&a.start, &a.account).cmp(&(&b.start, &b.account)));
    v
}

/// One account's windows added up.
#[derive(Debug, Default, serde::Serialize)]
struct Totals {
    account: String,
    window: String,
    zone: String,
    from: String,
    to: String,
    windows: usize,
    open_windows: usize,
    counts: BTreeMap<&'static str, u64>,
    mean_chars: f64,
    mean_words: f64,
    hours: Vec<u64>,
    weekdays: Vec<u64>,
    languages: BTreeMap<String, u64>,
    applications: BTreeMap<String, u64>,
    /// Summed over each window's top list (a tag below one window's top-k is not counted there).
    tags: Vec<(String, u64)>,
    mentions: Vec<(String, u64)>,
    boosted_accounts: Vec<(String, u64)>,
    link_domains: Vec<(String, u64)>,
}

fn add_top(into: &mut BTreeMap<String, u64>, t: &TopK) {
    for (k, n) in &t.top {
        *into.entry(k.clone()).or_default() += n;
    }
}

fn ranked(m: BTreeMap<String, u64>, k: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

fn totals(account: &str, recs: &[&StatsRecord]) -> Totals {
    let mut t = Totals {
        account: account.to_string(),
        window: recs[0].window.as_str().to_string(),
        zone: recs[0].zone.clone(),
        from: recs.iter().map(|r| r.start.clone()).min().unwrap_or_default(),
        to: recs.iter().map(|r| r.end.clone()).max().unwrap_or_default(),
        windows: recs.len(),
        hours: vec![0; 24],
        weekdays: vec![0; 7],
        ..Default::default()
    };
    let (mut tags, mut mentions, mut boosted, mut domains) = Default::default();
    let (mut chars, mut words, mut texts) = (0.0, 0.0, 0u64);
    for r in recs {
        t.open_windows += (!r.is_final) as usize;
        for (k, n) in [
            ("posts", r.posts),
            ("originals", r.originals),
            ("replies_to_self", r.replies_to_self),
            ("replies_to_others", r.replies_to_others),
            ("boosts", r.boosts),
            ("with_media", r.with_media),
            ("with_cw", r.with_cw),
            ("sensitive", r.sensitive),
            ("polls", r.polls),
            ("edits", r.edits),
            ("deletes", r.deletes),
            ("links", r.links),
            ("replies_received", r.engagement.replies),
            ("boosts_received", r.engagement.boosts),
            ("favourites_received", r.engagement.favourites),
        ] {
            *t.counts.entry(k).or_default() += n;
        }
        for (i, n) in r.hours.iter().enumerate().take(24) {
            t.hours[i] += n;
        }
        for (i, n) in r.weekdays.iter().enumerate().take(7) {
            t.weekdays[i] += n;
        }
        for (k, n) in &r.languages {
            *t.languages.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &r.applications {
            *t.applications.entry(k.clone()).or_default() += n;
        }
        add_top(&mut tags, &r.tags);
        add_top(&mut mentions, &r.mentions);
        add_top(&mut boosted, &r.boosted_accounts);
        add_top(&mut domains, &r.link_domains);
        chars += r.text.chars.mean * r.text.posts as f64;
        words += r.text.words.mean * r.text.posts as f64;
        texts += r.text.posts;
    }
    if texts > 0 {
        t.mean_chars = (chars / texts as f64 * 10.0).round() / 10.0;
        t.mean_words = (words / texts as f64 * 10.0).round() / 10.0;
    }
    t.tags = ranked(tags, 10);
    t.mentions = ranked(mentions, 10);
    t.boosted_accounts = ranked(boosted, 10);
    t.link_domains = ranked(domains, 10);
    t
}

const BAR_WIDTH: usize = 40;

/// Horizontal bars, scaled to the largest value.
fn bars(rows: &[(String, u64)]) -> String {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let label = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let mut s = String::new();
    for (name, n) in rows {
        let w = (*n as usize * BAR_WIDTH).div_ceil(max as usize);
        s.push_str(&format!("  {name:<label$} {} {n}\n", "█".repeat(w)));
    }
    s
}

fn day_of(ts: &str) -> &str {
    ts.get(..10).unwrap_or(ts)
}

/// The last day a window end (exclusive) covers.
fn last_day(end: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(end)
        .map(|t| (t - chrono::Duration::milliseconds(1)).format("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| day_of(end).to_string())
}

fn render_account(account: &str, recs: &[&StatsRecord], format: Format) -> String {
    let t = totals(account, recs);
    if format == Format::Json {
        let v = serde_json::json!({ "totals": t, "windows": recs });
        return serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
    }
    let c = |k: &str| t.counts.get(k).copied().unwrap_or(0);
    let mut s = format!(
        "@{account}: {} {} windows ({} still open), {} to {} ({})\n\n",
        t.windows,
        t.window,
        t.open_windows,
        day_of(&t.from),
        last_day(&t.to),
        t.zone
    );
    s.push_str(&format!(
        "  posts {}   originals {}   replies {} (to self {}, to others {})   boosts {}\n",
        c("posts"),
        c("originals"),
        c("replies_to_self") + c("replies_to_others"),
        c("replies_to_self"),
        c("replies_to_others"),
        c("boosts")
    ));
    s.push_str(&format!(
        "  with media {}   with CW {}   sensitive {}   polls {}   edits {}   deletes {}\n",
        c("with_media"),
        c("with_cw"),
        c("sensitive"),
        c("polls"),
        c("edits"),
        c("deletes")
    ));
    s.push_str(&format!(
        "  text: mean {} characters, {} words   links {}\n  received: {} replies, {} boosts, {} favourites (as last observed)\n",
        t.mean_chars,
        t.mean_words,
        c("links"),
        c("replies_received"),
        c("boosts_received"),
        c("favourites_received")
    ));
    s.push_str(&format!("\nHour of day ({})\n", t.zone));
    s.push_str(&bars(&t.hours.iter().enumerate().map(|(h, n)| (format!("{h:02}"), *n)).collect::<Vec<_>>()));
    s.push_str("\nWeekday\n");
    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    s.push_str(&bars(&t.weekdays.iter().enumerate().map(|(d, n)| (days[d].to_string(), *n)).collect::<Vec<_>>()));
    s.push_str("\nLanguages\n");
    s.push_str(&bars(&ranked(t.languages.clone(), 12)));
    let list = |v: &[(String, u64)], prefix: &str| v.iter().map(|(k, n)| format!("{prefix}{k} {n}")).collect::<Vec<_>>().join(", ");
    for (title, v, prefix) in [
        ("Applications", ranked(t.applications.clone(), 10), ""),
        ("Tags", t.tags.clone(), "#"),
        ("Mentions", t.mentions.clone(), "@"),
        ("Boosted", t.boosted_accounts.clone(), "@"),
        ("Link domains", t.link_domains.clone(), ""),
    ] {
        if !v.is_empty() {
            s.push_str(&format!("\n{title}: {}\n", list(&v, prefix)));
        }
    }
    s
}

fn render_top(records: &[StatsRecord], top: Top, limit: usize, format: Format) -> String {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for r in records {
        match top {
            Top::Accounts => *m.entry(r.account.clone()).or_default() += r.posts,
            Top::Tags => add_top(&mut m, &r.tags),
            Top::Languages => {
                for (k, n) in &r.languages {
                    *m.entry(k.clone()).or_default() += n;
                }
            }
            Top::Instances | Top::Sources => {}
        }
    }
    let (from, to) = (
        records.iter().map(|r| r.start.clone()).min().unwrap_or_default(),
        records.iter().map(|r| r.end.clone()).max().unwrap_or_default(),
    );
    top_table(m, top, limit, format, &from, &to)
}

/// The instances or sources with the most posts, from the totals records of
/// `size` within `since` of the newest one's end (each input partition's
/// totals added up).
fn render_top_totals(totals: &[TotalsRecord], top: Top, size: WindowSize, since: Duration, limit: usize, format: Format) -> String {
    let scope = if top == Top::Instances { Scope::Instance } else { Scope::Source };
    let mine: Vec<&TotalsRecord> = totals.iter().filter(|t| t.scope == scope && t.window == size).collect();
    let newest = mine.iter().filter_map(|t| chrono::DateTime::parse_from_rfc3339(&t.end).ok()).map(|t| t.timestamp_millis()).max();
    let from_ms = newest.unwrap_or(i64::MAX).saturating_sub(since.as_millis().min(i64::MAX as u128) as i64);
    let mine: Vec<&TotalsRecord> = mine
        .into_iter()
        .filter(|t| chrono::DateTime::parse_from_rfc3339(&t.start).is_ok_and(|s| s.timestamp_millis() >= from_ms))
        .collect();
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for t in &mine {
        *m.entry(t.name.clone()).or_default() += t.posts;
    }
    let (from, to) =
        (mine.iter().map(|t| t.start.clone()).min().unwrap_or_default(), mine.iter().map(|t| t.end.clone()).max().unwrap_or_default());
    top_table(m, top, limit, format, &from, &to)
}

fn top_table(m: BTreeMap<String, u64>, top: Top, limit: usize, format: Format, from: &str, to: &str) -> String {
    let rows = ranked(m, limit);
    let what = match top {
        Top::Accounts => "accounts by posts",
        Top::Tags => "tags by use",
        Top::Languages => "languages by posts",
        Top::Instances => "instances by posts",
        Top::Sources => "sources by posts",
    };
    if format == Format::Json {
        let v: Vec<serde_json::Value> = rows.iter().map(|(k, n)| serde_json::json!({ "name": k, "count": n })).collect();
        return serde_json::to_string_pretty(&serde_json::json!({ "top": what, "rows": v })).unwrap_or_default() + "\n";
    }
    if rows.is_empty() {
        return "No statistics yet.\n".to_string();
    }
    let shown: Vec<(String, u64)> = rows.into_iter().map(|(k, n)| (if top == Top::Tags { format!("#{k}") } else { k }, n)).collect();
    format!("Top {what}, {} to {}\n{}", day_of(from), last_day(to), bars(&shown))
}

fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_keep_small_values_visible() {
        let s = bars(&[("en".into(), 40), ("de".into(), 1), ("fr".into(), 0)]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], format!("  en {} 40", "█".repeat(40)));
        assert_eq!(lines[1], "  de █ 1");
        assert_eq!(lines[2], "  fr  0");
    }
}
