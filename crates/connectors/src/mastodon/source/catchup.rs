//! REST catch-up for one account: the authoritative path. Pages the profile
//! timeline forward from the checkpoint with `min_id` (pages come newest-first,
//! so each is processed in reverse) until caught up, emitting each page with the
//! checkpoint that covers it, so the checkpoint is durable exactly when the events
//! are. On the first start it backfills as configured instead.

use std::sync::Arc;

use fedistream_core::post::Via;
use fedistream_core::{ErrorKind, EventKind, SourceBatch, SourceError, StatePut};

use super::convert::{deleted_event, id_newer, status_id, Converted, CHECKPOINT_NS};
use super::Shared;
use crate::mastodon::client::{MastodonClient, MastodonError, Page};
use crate::mastodon::source::config::Backfill;

pub const PAGE: u32 = 40;

/// State namespace: per account (checkpoint key), the newest posts published
/// from its timeline, as `[[id, uri], ...]`. The safety pass compares them with
/// the timeline to find deletions when no stream told us.
pub const RECENT_NS: &str = "recent";
const RECENT_MAX: usize = 100;
/// Size of the page the safety pass re-reads.
const REREAD: u32 = 20;

struct Recent {
    key: String,
    items: Vec<(String, String)>,
}

impl Recent {
    async fn load(sh: &Shared, key: &str) -> Result<Self, SourceError> {
        let items = match sh.log.state_get(RECENT_NS, key).await? {
            Some(v) => serde_json::from_str(&v).unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Recent { key: key.to_string(), items })
    }

    /// Remember the posts of `batch` and add the updated list to it.
    fn record(&mut self, batch: &mut SourceBatch) {
        for ev in batch.events.iter().filter(|e| e.kind() != EventKind::Deleted) {
            if !self.items.iter().any(|(id, _)| id == ev.status_id()) {
                self.items.push((ev.status_id().to_string(), ev.key().to_string()));
            }
        }
        self.items.sort_by(|a, b| (b.0.len(), &b.0).cmp(&(a.0.len(), &a.0)));
        self.items.truncate(RECENT_MAX);
        batch.state.push(StatePut::set(RECENT_NS, self.key.clone(), serde_json::to_string(&self.items).unwrap_or_default()));
    }

    /// Posts we published that the timeline no longer lists: those not older
    /// than the page's oldest (`lo`; `None` when the page is the whole timeline)
    /// and not newer than the checkpoint, missing from `page_ids`.
    fn take_gone(&mut self, page_ids: &[String], lo: Option<&str>, checkpoint: &str) -> Vec<(String, String)> {
        let (gone, keep): (Vec<_>, Vec<_>) = self.items.drain(..).partition(|(id, _)| {
            !id_newer(id, checkpoint) && lo.is_none_or(|lo| !id_newer(lo, id)) && !page_ids.contains(id)
        });
        self.items = keep;
        gone
    }
}

/// What one account's catch-up needs.
pub struct Job {
    pub index: usize,
    pub acct: String,
    pub username: String,
    pub client: MastodonClient,
    pub account_id: Option<String>,
    pub checkpoint_key: String,
    pub checkpoint: Option<String>,
    /// Also re-read the newest page (catches edits made while no stream was up).
    pub reread_latest: bool,
}

pub struct Done {
    pub account_id: String,
    pub checkpoint: String,
    /// New events found (before deduplication).
    pub found: usize,
}

#[derive(Debug)]
pub enum JobError {
    Mastodon(MastodonError),
    Source(SourceError),
}

impl From<MastodonError> for JobError {
    fn from(e: MastodonError) -> Self {
        JobError::Mastodon(e)
    }
}
impl From<SourceError> for JobError {
    fn from(e: SourceError) -> Self {
        JobError::Source(e)
    }
}

impl JobError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            JobError::Mastodon(e) => e.kind(),
            JobError::Source(e) => e.kind,
        }
    }
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            JobError::Mastodon(e) => e.retry_after(),
            JobError::Source(_) => None,
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Mastodon(e) => write!(f, "{e}"),
            JobError::Source(e) => write!(f, "{e}"),
        }
    }
}

pub async fn run(sh: Arc<Shared>, job: Job) -> Result<Done, JobError> {
    let account_id = match &job.account_id {
        Some(id) => id.clone(),
        None => job.client.lookup_account(&job.username).await?.id,
    };
    let host = job.client.host();
    let mut recent = Recent::load(&sh, &job.checkpoint_key).await?;
    let (checkpoint, found) = match &job.checkpoint {
        Some(cp) => forward(&sh, &job, &account_id, &host, cp.clone(), &mut recent).await?,
        None => first_start(&sh, &job, &account_id, &host, &mut recent).await?,
    };
    if job.reread_latest {
        let page = job.client.account_statuses(&account_id, Page::Latest { limit: REREAD }).await?;
        let page_ids: Vec<String> = page.statuses.iter().filter_map(|r| status_id(r.get())).collect();
        let lo = (page.statuses.len() >= REREAD as usize).then(|| page_ids.iter().min_by(|a, b| (a.len(), a).cmp(&(b.len(), b)))).flatten();
        let gone = recent.take_gone(&page_ids, lo.map(String::as_str), &checkpoint);
        let mut batch = SourceBatch::default();
        convert_page(&sh, &job, &account_id, &host, page.statuses.iter().rev().map(|r| r.get()), &mut batch);
        // Only posts already published can have been edited; older ones we never
        // took (history before a "start from now") must stay out. Unchanged posts
        // are then dropped by deduplication; edited ones become updates.
        let keys: Vec<String> = batch.events.iter().map(|e| e.key().to_string()).collect();
        let seen = sh.log.state_get_many(fedistream_core::runtime::SEEN_NS, &keys).await.map_err(SourceError::from)?;
        let mut keep = SourceBatch::default();
        for (ev, index) in batch.events.into_iter().zip(batch.state) {
            if seen.contains_key(ev.key()) || id_newer(ev.status_id(), &checkpoint) {
                keep.events.push(ev);
                keep.state.push(index);
            }
        }
        // Deletions no stream told us about (or made while it was down).
        for (id, uri) in &gone {
            if let Some(mut ev) = deleted_event(&sh.name, &host, id, &format!("{uri}\t{}", job.acct)) {
                ev.via = Via::Rest;
                keep.push(ev);
            }
        }
        if !gone.is_empty() {
            tracing::info!(acct = %job.acct, deleted = gone.len(), "Posts gone from the timeline: publishing deletions");
        }
        recent.record(&mut keep);
        sh.emit(keep).await?;
    }
    Ok(Done { account_id, checkpoint, found })
}

fn convert_page<'a>(
    sh: &Shared,
    job: &Job,
    account_id: &str,
    host: &str,
    raws: impl Iterator<Item = &'a str>,
    batch: &mut SourceBatch,
) -> usize {
    let conv = sh.converter();
    let mut n = 0;
    for raw in raws {
        match conv.convert(raw, host, Via::Rest, EventKind::Created, Some((account_id, &job.acct))) {
            Converted::Event(ev, index) => {
                batch.push(*ev);
                batch.state.push(index);
                n += 1;
            }
            Converted::Skipped(reason) => sh.skipped(reason),
            // Our own account's timeline: anything else is its boosts' wrappers
            // attributed to someone else, which cannot happen; count it.
            Converted::NotFollowed => {
                tracing::debug!(acct = %job.acct, "Status on the profile timeline not attributed to the account");
                sh.status.count("unattributed", 1);
            }
            Converted::Malformed(reason) => sh.malformed(&format!("{} timeline: {reason}", job.acct), raw),
        }
    }
    n
}

fn newest_id<'a>(prev_min_id: Option<&str>, raws: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<String> = prev_min_id.map(str::to_string);
    for id in raws.filter_map(status_id) {
        if best.as_deref().is_none_or(|b| id_newer(&id, b)) {
            best = Some(id);
        }
    }
    best
}

async fn forward(
    sh: &Shared,
    job: &Job,
    account_id: &str,
    host: &str,
    mut cp: String,
    recent: &mut Recent,
) -> Result<(String, usize), JobError> {
    let mut found = 0;
    loop {
        let page = job.client.account_statuses(account_id, Page::After { min_id: cp.clone(), limit: PAGE }).await?;
        if page.statuses.is_empty() {
            break;
        }
        let Some(newest) = newest_id(page.prev_min_id.as_deref(), page.statuses.iter().map(|r| r.get())) else {
            return Err(SourceError::new(ErrorKind::Permanent, format!("{}: a timeline page without status ids", job.acct)).into());
        };
        if !id_newer(&newest, &cp) {
            // A server that ignores min_id would loop forever on the same page.
            tracing::warn!(acct = %job.acct, checkpoint = %cp, "Server returned no status newer than the checkpoint; stopping this catch-up");
            break;
        }
        let mut batch = SourceBatch::default();
        found += convert_page(sh, job, account_id, host, page.statuses.iter().rev().map(|r| r.get()), &mut batch);
        recent.record(&mut batch);
        batch.state.push(StatePut::set(CHECKPOINT_NS, job.checkpoint_key.clone(), newest.clone()));
        sh.emit(batch).await?;
        cp = newest;
        if page.statuses.len() < PAGE as usize {
            break;
        }
    }
    Ok((cp, found))
}

async fn first_start(
    sh: &Shared,
    job: &Job,
    account_id: &str,
    host: &str,
    recent: &mut Recent,
) -> Result<(String, usize), JobError> {
    let (want, since) = match &sh.backfill {
        Backfill::None => (0usize, None),
        Backfill::Last(n) => (*n as usize, None),
        Backfill::Since(t) => (usize::MAX, Some(*t)),
    };
    let first_limit = if want == 0 { 1 } else { PAGE.min(want.min(PAGE as usize) as u32).max(1) };
    let mut page = job.client.account_statuses(account_id, Page::Latest { limit: first_limit }).await?;
    let Some(newest) = newest_id(None, page.statuses.iter().map(|r| r.get())) else {
        // An empty timeline: everything from now on is new. "0" sorts before every id.
        sh.emit(SourceBatch { events: vec![], state: vec![StatePut::set(CHECKPOINT_NS, job.checkpoint_key.clone(), "0")] }).await?;
        return Ok(("0".into(), 0));
    };
    if want == 0 {
        sh.emit(SourceBatch { events: vec![], state: vec![StatePut::set(CHECKPOINT_NS, job.checkpoint_key.clone(), newest.clone())] }).await?;
        tracing::info!(acct = %job.acct, checkpoint = %newest, "Starting from now (no backfill)");
        return Ok((newest, 0));
    }
    // Collect newest-first pages backwards until we have enough.
    let label = format!("backfill {}", job.acct);
    sh.progress_start(&label, if want == usize::MAX { None } else { Some(want as u64) });
    let mut raws: Vec<Box<serde_json::value::RawValue>> = Vec::new();
    loop {
        let n = page.statuses.len();
        let mut reached_start = false;
        for r in page.statuses {
            if raws.len() >= want {
                break;
            }
            if let Some(since) = since {
                let created = serde_json::from_str::<CreatedAt>(r.get()).ok().and_then(|c| c.created_at);
                if created.is_some_and(|c| c < since) {
                    reached_start = true;
                    break;
                }
            }
            raws.push(r);
        }
        sh.progress_advance(&label, n as u64);
        if reached_start || raws.len() >= want || n < first_limit as usize {
            break;
        }
        let Some(oldest) = raws.last().and_then(|r| status_id(r.get())) else { break };
        let max_id = page.next_max_id.clone().unwrap_or(oldest);
        page = job.client.account_statuses(account_id, Page::Before { max_id, limit: PAGE }).await?;
        if page.statuses.is_empty() {
            break;
        }
    }
    // Emit oldest first; the checkpoint rides on the last (newest) chunk.
    let mut found = 0;
    let chunks: Vec<&[Box<serde_json::value::RawValue>]> = raws.rchunks(200).collect();
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut batch = SourceBatch::default();
        found += convert_page(sh, job, account_id, host, chunk.iter().rev().map(|r| r.get()), &mut batch);
        recent.record(&mut batch);
        if i == last {
            batch.state.push(StatePut::set(CHECKPOINT_NS, job.checkpoint_key.clone(), newest.clone()));
        }
        sh.emit(batch).await?;
    }
    if raws.is_empty() {
        sh.emit(SourceBatch { events: vec![], state: vec![StatePut::set(CHECKPOINT_NS, job.checkpoint_key.clone(), newest.clone())] }).await?;
    }
    sh.progress_finish(&label);
    tracing::info!(acct = %job.acct, posts = found, checkpoint = %newest, "Backfill done");
    Ok((newest, found))
}

#[derive(serde::Deserialize)]
struct CreatedAt {
    #[serde(default)]
    created_at: Option<chrono::DateTime<chrono::Utc>>,
}
