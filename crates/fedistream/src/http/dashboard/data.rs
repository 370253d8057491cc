//! What the dashboard shows: the recent posts of the live feed, and the
//! activity summaries its charts draw — from an `account_stats` processor's
//! windows when the config has one (its topic and state, read as `fedistream
//! stats` reads them), otherwise from the posts in the log.
//!
//! Both are read lazily, when a page or chart is asked for: nothing runs for
//! the dashboard while nobody looks at it. The post reader
//! ([`fedistream_core::Log::reader`]) belongs to no consumer group, so it
//! never holds back retention or the pipeline. Without a stats processor the
//! per-post facts the charts need (a few dozen bytes a post) are held in
//! memory while the process runs; configure `account_stats` for large logs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Timelike, Utc};
use fedistream_core::event::{EventKind, Position};
use fedistream_core::log::EVENTS;
use fedistream_core::{Consumer, Log, LogError};
use fedistream_process::stats::{AccountStatsConfig, StatsRecord, WindowSize};

use super::render;

/// Posts the live feed shows when the page loads.
pub const RECENT: usize = 50;
/// Records one request reads at most before it answers (a large log is read over several requests).
const READ_PER_REQUEST: usize = 200_000;
/// How long a summary of a processor's windows is reused (a page asks for eight charts at once).
const SUMMARY_TTL: Duration = Duration::from_secs(2);
/// Entries ranked in the charts of languages, applications, tags and mentions.
pub const TOP: usize = 10;

/// What one post adds to the charts.
struct Facts {
    account: String,
    at: DateTime<Utc>,
    boost: bool,
    language: Option<String>,
    application: Option<String>,
    tags: Vec<String>,
    mentions: Vec<String>,
}

/// How long the first read of a fresh post reader waits for records (and,
/// while it reads the backlog, for the next background fetch).
const FIRST_READ_WAIT: Duration = Duration::from_millis(500);
/// How long one request keeps reading the backlog before it answers.
const BACKLOG_BUDGET: Duration = Duration::from_secs(5);

/// The posts read so far.
#[derive(Default)]
struct Feed {
    reader: Option<Box<dyn Consumer>>,
    /// Why posts cannot be read (a log without readers outside groups).
    unsupported: Option<String>,
    last: Option<Position>,
    /// The reader has not yet read the log as it stood when it opened.
    backlog: bool,
    /// Where the reader stands on every partition (the page's resume point).
    at: BTreeMap<u32, u64>,
    facts: HashMap<String, Facts>,
    /// (key, article HTML), newest first.
    recent: VecDeque<(String, String)>,
}

/// One view's activity: everything, or one account.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Where the figures come from, for the page.
    pub from: String,
    /// The zone of the hour and weekday histograms and of day boundaries.
    pub zone: String,
    pub posts: u64,
    /// Posts per hour, the last 48 hours up to the newest (start of the hour, count).
    pub per_hour: Vec<(DateTime<Utc>, u64)>,
    /// Posts per day, the last 30 days up to the newest (`YYYY-MM-DD`, count).
    pub per_day: Vec<(String, u64)>,
    pub hours: Vec<u64>,
    pub weekdays: Vec<u64>,
    pub languages: Vec<(String, u64)>,
    pub applications: Vec<(String, u64)>,
    pub tags: Vec<(String, u64)>,
    pub mentions: Vec<(String, u64)>,
    /// Every account seen, most active first (for the account picker).
    pub accounts: Vec<(String, u64)>,
}

pub struct Data {
    log: Arc<dyn Log>,
    /// The `account_stats` processor the charts read, if the config has one.
    stats: Option<(String, AccountStatsConfig)>,
    feed: tokio::sync::Mutex<Feed>,
    /// Per account (`None`: all).
    cache: std::sync::Mutex<HashMap<Option<String>, Cached>>,
}

/// When a summary was computed, the last post read then (`None`: from a processor's windows), the summary.
type Cached = (Instant, Option<Position>, Arc<Summary>);

/// The live feed as the page shows it.
pub struct Recent {
    pub articles: Vec<String>,
    /// The log positions the page is current to (every partition): the feed resumes after them.
    pub after: Option<Vec<Position>>,
    pub unsupported: Option<String>,
}

impl Data {
    pub fn new(log: Arc<dyn Log>, stats: Option<(String, AccountStatsConfig)>) -> Self {
        Data { log, stats, feed: Default::default(), cache: Default::default() }
    }

    /// Read what was appended since the last call (at most [`READ_PER_REQUEST`] records).
    async fn catch_up(&self, feed: &mut Feed) {
        if feed.unsupported.is_some() {
            return;
        }
        // A fresh reader may fetch in the background (Kafka): its first poll
        // waits a moment, so the first page shows posts rather than an empty
        // feed that the live feed then fills from the start.
        let mut wait = Duration::ZERO;
        if feed.reader.is_none() {
            wait = FIRST_READ_WAIT;
            match self.log.reader(EVENTS, &fedistream_core::log::from_start()).await {
                Ok(r) => {
                    feed.at = r.reader_start().into_iter().map(|p| (p.partition, p.offset)).collect();
                    feed.reader = Some(r);
                    feed.backlog = true;
                }
                Err(LogError::Unsupported(m)) => {
                    feed.unsupported = Some(m);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Dashboard: cannot read the log");
                    return;
                }
            }
        }
        feed.read(wait, self.stats.is_none()).await
    }
}

impl Feed {
    /// Read from the reader (at most [`READ_PER_REQUEST`] records), the first
    /// poll waiting up to `wait`; `keep_facts`: hold the facts the charts
    /// draw from the posts.
    async fn read(&mut self, mut wait: Duration, keep_facts: bool) {
        let mut read = 0;
        let deadline = Instant::now() + BACKLOG_BUDGET;
        while read < READ_PER_REQUEST {
            let Some(r) = self.reader.as_mut() else { return };
            let waited = !wait.is_zero();
            let recs = match r.poll(4096, std::mem::take(&mut wait)).await {
                Ok(recs) => recs,
                Err(e) => {
                    tracing::warn!(error = %e, "Dashboard: cannot read the log; reopening the reader");
                    self.reader = None;
                    return;
                }
            };
            if recs.is_empty() {
                // Nothing at hand. While the reader works through the log as
                // it stood (the first pages), a backend that fetches in the
                // background (Kafka: a few MB at a time, the first fetch after
                // connecting) may have more on the way: wait for it while the
                // reader is behind the head, rather than show the oldest posts
                // as the newest. An empty poll after a wait, once records came,
                // ends the backlog (on Kafka the lag also counts a transaction
                // marker at a partition's end); a request out of time leaves
                // the rest to the next.
                let behind = self.backlog && r.lag().await.is_ok_and(|n| n > 0);
                let in_time = Instant::now() < deadline;
                if behind && in_time && !(waited && read > 0) {
                    wait = FIRST_READ_WAIT;
                    continue;
                }
                self.backlog = behind && !in_time;
                return;
            }
            read += recs.len();
            for rec in recs {
                self.last = Some(rec.position);
                self.at.insert(rec.position.partition, rec.position.offset);
                let Ok(ev) = rec.event() else { continue };
                match (&ev.kind, &ev.post) {
                    (EventKind::Deleted, _) | (_, None) => {
                        self.facts.remove(&ev.key);
                        self.recent.retain(|(k, _)| k != &ev.key);
                    }
                    (_, Some(p)) => {
                        if keep_facts {
                            self.facts.insert(
                                ev.key.clone(),
                                Facts {
                                    account: ev.account.clone(),
                                    at: p.created_at.unwrap_or(p.provenance.received_at),
                                    boost: p.boost_of.is_some(),
                                    language: p.language.clone(),
                                    application: p.application.clone(),
                                    tags: p.tags.iter().map(|t| t.to_lowercase()).collect(),
                                    mentions: p.mentions.iter().map(|m| m.acct.clone()).collect(),
                                },
                            );
                        }
                        let html = render::article(ev).unwrap_or_default();
                        match self.recent.iter_mut().find(|(k, _)| k == &ev.key) {
                            Some(slot) => slot.1 = html,
                            None => {
                                self.recent.push_front((ev.key.clone(), html));
                                self.recent.truncate(RECENT);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Data {
    pub async fn recent(&self) -> Recent {
        let mut feed = self.feed.lock().await;
        self.catch_up(&mut feed).await;
        Recent {
            articles: feed.recent.iter().map(|(_, h)| h.clone()).collect(),
            after: (feed.unsupported.is_none()).then(|| {
                if feed.at.is_empty() {
                    fedistream_core::log::from_start()
                } else {
                    feed.at.iter().map(|(p, o)| Position { partition: *p, offset: *o }).collect()
                }
            }),
            unsupported: feed.unsupported.clone(),
        }
    }

    /// The summary of everything (`account: None`) or of one account. From
    /// the posts: recomputed when posts came in since; from a processor's
    /// windows: at most [`SUMMARY_TTL`] old.
    pub async fn summary(&self, account: Option<&str>) -> anyhow::Result<Arc<Summary>> {
        let key = account.map(str::to_string);
        let cached = |version: Option<Position>| {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(&key).filter(|(at, v, _)| *v == version && (version.is_some() || at.elapsed() < SUMMARY_TTL)).map(|c| c.2.clone())
        };
        let (version, s) = match &self.stats {
            Some((name, pcfg)) => {
                if let Some(s) = cached(None) {
                    return Ok(s);
                }
                let topic = topic_records(&*self.log, name).await?;
                let records = crate::stats::windows(&*self.log, topic, name, pcfg).await?;
                (None, from_windows(name, &records, account))
            }
            None => {
                let mut feed = self.feed.lock().await;
                self.catch_up(&mut feed).await;
                if let Some(why) = &feed.unsupported {
                    anyhow::bail!("the charts need an account_stats processor on this log ({why})");
                }
                // Versioned by the last record read (`0:0`: none yet).
                let version = Some(feed.last.unwrap_or(Position { partition: 0, offset: 0 }));
                if let Some(s) = cached(version) {
                    return Ok(s);
                }
                (version, from_posts(feed.facts.values(), account))
            }
        };
        let s = Arc::new(s);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 64 {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), version, s.clone()));
        Ok(s)
    }
}

/// Every record of a processor's topic that the log has ready (logs without
/// readers: none; the state still has the recent windows).
async fn topic_records(log: &dyn Log, topic: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let mut r = match log.reader(topic, &fedistream_core::log::from_start()).await {
        Ok(r) => r,
        Err(LogError::Unsupported(_)) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    // As for the posts: a fresh reader may still be fetching (Kafka).
    let mut wait = FIRST_READ_WAIT;
    loop {
        let recs = r.poll(4096, std::mem::take(&mut wait)).await?;
        if recs.is_empty() {
            return Ok(out);
        }
        out.extend(recs.into_iter().map(|rec| (rec.position.offset, rec.payload.to_string())));
    }
}

pub fn ranked(m: BTreeMap<String, u64>, k: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = m.into_iter().filter(|(_, n)| *n > 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_minute(0)).unwrap_or(t)
}

/// The last `n` hours up to the newest, zeros filled in.
fn last_hours(per: &BTreeMap<DateTime<Utc>, u64>, n: i64) -> Vec<(DateTime<Utc>, u64)> {
    let Some(newest) = per.keys().next_back().copied() else { return vec![] };
    let first = per.keys().next().copied().unwrap_or(newest).max(newest - chrono::Duration::hours(n - 1));
    let mut out = Vec::new();
    let mut t = first;
    while t <= newest {
        out.push((t, per.get(&t).copied().unwrap_or(0)));
        t += chrono::Duration::hours(1);
    }
    out
}

/// The last `n` days up to the newest, zeros filled in.
fn last_days(per: &BTreeMap<chrono::NaiveDate, u64>, n: i64) -> Vec<(String, u64)> {
    let Some(newest) = per.keys().next_back().copied() else { return vec![] };
    let first = per.keys().next().copied().unwrap_or(newest).max(newest - chrono::Duration::days(n - 1));
    let mut out = Vec::new();
    let mut d = first;
    while d <= newest {
        out.push((d.format("%Y-%m-%d").to_string(), per.get(&d).copied().unwrap_or(0)));
        d += chrono::Duration::days(1);
    }
    out
}

fn from_posts<'a>(facts: impl Iterator<Item = &'a Facts>, account: Option<&str>) -> Summary {
    let mut s =
        Summary { from: "the posts in the log".into(), zone: "UTC".into(), hours: vec![0; 24], weekdays: vec![0; 7], ..Default::default() };
    let (mut per_hour, mut per_day) = (BTreeMap::new(), BTreeMap::new());
    let (mut langs, mut apps, mut tags, mut mentions, mut accounts) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for f in facts {
        *accounts.entry(f.account.clone()).or_insert(0u64) += 1;
        if account.is_some_and(|a| a != f.account) {
            continue;
        }
        s.posts += 1;
        *per_hour.entry(hour_start(f.at)).or_insert(0u64) += 1;
        *per_day.entry(f.at.date_naive()).or_insert(0u64) += 1;
        s.hours[f.at.hour() as usize] += 1;
        s.weekdays[f.at.weekday().num_days_from_monday() as usize] += 1;
        if f.boost {
            continue;
        }
        *langs.entry(f.language.clone().unwrap_or_else(|| "und".into())).or_insert(0u64) += 1;
        if let Some(a) = &f.application {
            *apps.entry(a.clone()).or_insert(0u64) += 1;
        }
        for t in &f.tags {
            *tags.entry(t.clone()).or_insert(0u64) += 1;
        }
        for m in &f.mentions {
            *mentions.entry(m.clone()).or_insert(0u64) += 1;
        }
    }
    s.per_hour = last_hours(&per_hour, 48);
    s.per_day = last_days(&per_day, 30);
    s.languages = ranked(langs, TOP);
    s.applications = ranked(apps, TOP);
    s.tags = ranked(tags, TOP);
    s.mentions = ranked(mentions, TOP);
    s.accounts = ranked(accounts, usize::MAX);
    s
}

fn from_windows(name: &str, records: &[StatsRecord], account: Option<&str>) -> Summary {
    let mut s = Summary {
        from: format!("the account_stats processor `{name}`"),
        zone: records.first().map(|r| r.zone.clone()).unwrap_or_else(|| "UTC".into()),
        hours: vec![0; 24],
        weekdays: vec![0; 7],
        ..Default::default()
    };
    let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc));
    // Histograms and rankings from the largest window size kept, so no post counts twice.
    let size = [WindowSize::Week, WindowSize::Day, WindowSize::Hour].into_iter().find(|z| records.iter().any(|r| r.window == *z));
    let (mut per_hour, mut per_day) = (BTreeMap::new(), BTreeMap::new());
    let (mut langs, mut apps, mut tags, mut mentions, mut accounts) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for r in records {
        if Some(r.window) == size {
            *accounts.entry(r.account.clone()).or_insert(0u64) += r.posts;
        }
        if account.is_some_and(|a| a != r.account) {
            continue;
        }
        match r.window {
            WindowSize::Hour => {
                if let Some(t) = parse(&r.start) {
                    *per_hour.entry(t).or_insert(0u64) += r.posts;
                }
            }
            WindowSize::Day => {
                // The day's date in the processor's zone is the start's local date.
                let day = r.start.get(..10).and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
                if let Some(d) = day {
                    *per_day.entry(d).or_insert(0u64) += r.posts;
                }
            }
            WindowSize::Week => {}
        }
        if Some(r.window) != size {
            continue;
        }
        s.posts += r.posts;
        for (i, n) in r.hours.iter().enumerate().take(24) {
            s.hours[i] += n;
        }
        for (i, n) in r.weekdays.iter().enumerate().take(7) {
            s.weekdays[i] += n;
        }
        for (k, n) in &r.languages {
            *langs.entry(k.clone()).or_insert(0u64) += n;
        }
        for (k, n) in &r.applications {
            *apps.entry(k.clone()).or_insert(0u64) += n;
        }
        for (k, n) in &r.tags.top {
            *tags.entry(k.clone()).or_insert(0u64) += n;
        }
        for (k, n) in &r.mentions.top {
            *mentions.entry(k.clone()).or_insert(0u64) += n;
        }
    }
    s.per_hour = last_hours(&per_hour, 48);
    s.per_day = last_days(&per_day, 30);
    s.languages = ranked(langs, TOP);
    s.applications = ranked(apps, TOP);
    s.tags = ranked(tags, TOP);
    s.mentions = ranked(mentions, TOP);
    s.accounts = ranked(accounts, usize::MAX);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(account: &str, at: &str, lang: &str, tags: &[&str]) -> Facts {
        Facts {
            account: account.into(),
            at: DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc),
            boost: false,
            language: Some(lang.into()),
            application: Some("Web".into()),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            mentions: vec![],
        }
    }

    #[test]
    fn posts_are_counted_by_hour_day_weekday_language_and_tag() {
        let f = [
            facts("a@x", "2024-05-06T10:15:00Z", "en", &["rust"]),
            facts("a@x", "2024-05-06T12:00:00Z", "de", &["rust", "go"]),
            facts("b@x", "2024-05-08T10:59:59Z", "en", &[]),
        ];
        let s = from_posts(f.iter(), None);
        assert_eq!(s.posts, 3);
        assert_eq!(s.hours[10], 2);
        assert_eq!(s.weekdays[0], 2, "Monday");
        assert_eq!(s.weekdays[2], 1, "Wednesday");
        assert_eq!(s.per_day, vec![("2024-05-06".into(), 2), ("2024-05-07".into(), 0), ("2024-05-08".into(), 1)]);
        assert_eq!(s.per_hour.len(), 48, "the last 48 hours, zeros included");
        assert_eq!(s.languages, vec![("en".into(), 2), ("de".into(), 1)]);
        assert_eq!(s.tags, vec![("rust".into(), 2), ("go".into(), 1)]);
        assert_eq!(s.accounts, vec![("a@x".into(), 2), ("b@x".into(), 1)]);
        let a = from_posts(f.iter(), Some("b@x"));
        assert_eq!((a.posts, a.accounts.len()), (1, 2), "one account's figures, every account listed");
    }

    /// On Kafka a reader fetches in the background, a few MB at a time: the
    /// first page must still have read the log as it stood (here 24 MB over
    /// three partitions), not whatever the first fetches brought.
    #[cfg(all(feature = "kafka", feature = "test-util"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_page_on_kafka_has_read_the_whole_log() {
        use fedistream_core::log::AppendBatch;
        use fedistream_core::testing::created;
        use fedistream_kafka::log::{KafkaLog, KafkaLogConfig};

        let mut cfg =
            KafkaLogConfig::new(fedistream_kafka::testing::brokers(), format!("t-dash-{}-{:x}", std::process::id(), rand::random::<u32>()));
        cfg.partitions = 3;
        let log = KafkaLog::open(cfg).await.unwrap();
        let text = "x".repeat(2_000);
        const POSTS: u64 = 12_000;
        for batch in 0..POSTS / 1_000 {
            let events = (batch * 1_000..(batch + 1) * 1_000).map(|n| created("s", &format!("u{}@example.org", n % 7), n, &text));
            log.append(AppendBatch { events: fedistream_core::event::encode_all(events), state: vec![] }).await.unwrap();
        }
        let data = Data::new(log, None);
        let first = data.summary(None).await.unwrap();
        assert_eq!(first.posts, POSTS, "the first page counts every post in the log");
        let recent = data.recent().await;
        assert_eq!(recent.articles.len(), RECENT);
        let read: u64 = recent.after.unwrap().iter().map(|p| p.offset + 1).sum();
        assert!(read >= POSTS, "the resume point is at the head: {read} offsets");
    }

    /// A reader that fetches in the background, as Kafka's does: between
    /// fetches a poll that does not wait finds nothing, though the reader is
    /// behind the head (over a real SQLite log's reader).
    struct Fetching {
        inner: Box<dyn Consumer>,
        gap: bool,
    }

    #[async_trait::async_trait]
    impl Consumer for Fetching {
        async fn poll(&mut self, _max: usize, wait: Duration) -> Result<Vec<fedistream_core::event::LogRecord>, LogError> {
            self.gap = !self.gap;
            if self.gap && wait.is_zero() {
                return Ok(vec![]);
            }
            self.inner.poll(1_000, wait).await
        }
        async fn commit_with(&mut self, commit: fedistream_core::log::Commit) -> Result<(), LogError> {
            self.inner.commit_with(commit).await
        }
        async fn lag(&mut self) -> Result<u64, LogError> {
            self.inner.lag().await
        }
    }

    #[tokio::test]
    async fn the_first_page_waits_for_fetches_while_the_reader_is_behind() {
        use fedistream_core::log::AppendBatch;
        use fedistream_core::sqlite::{SqliteLog, SqliteOptions};
        use fedistream_core::testing::created;

        let dir = tempfile::tempdir().unwrap();
        let log = SqliteLog::open(dir.path().join("log.db"), SqliteOptions::default()).unwrap();
        let events = (0..5_000).map(|n| created("s", &format!("u{}@example.org", n % 7), n, "hello"));
        log.append(AppendBatch { events: fedistream_core::event::encode_all(events), state: vec![] }).await.unwrap();
        let inner = log.reader(EVENTS, &fedistream_core::log::from_start()).await.unwrap();
        let mut feed = Feed { reader: Some(Box::new(Fetching { inner, gap: false })), backlog: true, ..Default::default() };
        feed.read(FIRST_READ_WAIT, true).await;
        assert_eq!(feed.facts.len(), 5_000, "every post of the log, across the gaps between fetches");
        assert!(!feed.backlog, "caught up: the next request does not wait");
        assert_eq!(feed.last.map(|p| p.offset), Some(5_000));
    }
}
