//! REST catch-up for one account: the authoritative path. Pages the profile
//! timeline forward from the checkpoint with `min_id` (pages come newest-first,
//! so each is processed in reverse) until caught up, emitting each page with the
//! checkpoint that covers it, so the checkpoint is durable exactly when the events
//! are. On the first start it backfills as configured instead.

use std::sync::Arc;

use chrono::Utc;
use fedistream_core::post::Via;
use fedistream_core::{EncodedEvent, ErrorKind, EventKind, SourceBatch, SourceError, StatePut};

use super::convert::{deleted_event, id_newer, status_id, Converted, CHECKPOINT_NS};
use super::window::PostWindow;
use super::Shared;
use crate::mastodon::client::{MastodonClient, MastodonError, Page};
use crate::mastodon::source::config::Backfill;

pub const PAGE: u32 = 40;
/// Size of the page the safety pass re-reads.
const REREAD: u32 = 20;

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
    /// The server does not know the account (`lookup` answered 404).
    NotFound {
        host: String,
    },
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
            JobError::NotFound { .. } => ErrorKind::Permanent,
        }
    }
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            JobError::Mastodon(e) => e.retry_after(),
            JobError::Source(_) | JobError::NotFound { .. } => None,
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Mastodon(e) => write!(f, "{e}"),
            JobError::Source(e) => write!(f, "{e}"),
            JobError::NotFound { host } => write!(f, "not found on {host}"),
        }
    }
}

pub async fn run(sh: Arc<Shared>, job: Job) -> Result<Done, JobError> {
    let account_id = match &job.account_id {
        Some(id) => id.clone(),
        None => match job.client.lookup_account(&job.username).await {
            Ok(found) => found.id,
            Err(e) if e.status() == Some(404) => return Err(JobError::NotFound { host: job.client.host() }),
            Err(e) => return Err(e.into()),
        },
    };
    let host = job.client.host();
    let (checkpoint, found) = match &job.checkpoint {
        Some(cp) => forward(&sh, &job, &account_id, &host, cp.clone()).await?,
        None => first_start(&sh, &job, &account_id, &host).await?,
    };
    if job.reread_latest {
        reread_latest(&sh, &job, &account_id, &host, &checkpoint).await?;
    }
    Ok(Done { account_id, checkpoint, found })
}

/// The safety pass: re-read the newest page. Edits of posts already published
/// become updates (through deduplication), and posts of ours the page no longer
/// lists become deletions. Older posts are reconciliation's business.
async fn reread_latest(sh: &Shared, job: &Job, account_id: &str, host: &str, checkpoint: &str) -> Result<(), JobError> {
    let page = job.client.account_statuses(account_id, Page::Latest { limit: REREAD }).await?;
    let page_ids: Vec<String> = page.statuses.iter().filter_map(|r| status_id(r.get())).collect();
    let lo = (page.statuses.len() >= REREAD as usize).then(|| page_ids.iter().min_by(|a, b| (a.len(), a).cmp(&(b.len(), b)))).flatten();
    let items = convert_page(sh, job, account_id, host, page.statuses.iter().rev().map(|r| r.get()));
    // Only posts already published can have been edited; older ones we never
    // took (history before a "start from now") must stay out. Unchanged posts
    // are then dropped by deduplication; edited ones become updates.
    let keys: Vec<String> = items.iter().map(|i| i.event.key().to_string()).collect();
    let seen = sh.log.state_get_many(fedistream_core::runtime::SEEN_NS, &keys).await.map_err(SourceError::from)?;
    let lock = sh.window_lock(&job.checkpoint_key);
    let _held = lock.lock().await;
    let mut window = PostWindow::load(&*sh.log, &job.checkpoint_key).await?;
    let gone = window.take_gone(&page_ids, lo.map(String::as_str), checkpoint);
    let mut keep = SourceBatch::default();
    for item in items {
        if seen.contains_key(item.event.key()) || id_newer(item.event.status_id(), checkpoint) {
            item.push_into(&mut keep, &mut window);
        }
    }
    // Deletions no stream told us about (or made while it was down).
    let name = sh.converter().server_name(host).to_string();
    for e in &gone {
        if let Some(mut ev) = deleted_event(&sh.name, &name, e.id(), &format!("{}\t{}", e.uri(), job.acct)) {
            ev.via = Via::Rest;
            keep.push(ev);
        }
    }
    if !gone.is_empty() {
        tracing::info!(acct = %job.acct, deleted = gone.len(), "Posts gone from the timeline: publishing deletions");
    }
    window.prune(&sh.window_spec, Utc::now());
    keep.state.extend(window.puts());
    sh.emit(keep).await?;
    Ok(())
}

/// One converted status of the account's own timeline.
pub(crate) struct Item {
    pub event: EncodedEvent,
    pub index: StatePut,
    /// `created_at` in Unix seconds (0 if the status had none).
    pub created: i64,
    /// Replies, boosts and favourites as the server reported them.
    pub counts: Option<[u64; 3]>,
}

impl Item {
    /// Add to `batch` and remember in the window. The window's counts are
    /// those last *published*: a version the window already holds is dropped
    /// by deduplication (a re-read), so its counts are noted only when the
    /// event is a counts refresh, which the ingestor keeps.
    pub fn push_into(self, batch: &mut SourceBatch, window: &mut PostWindow) {
        if self.event.kind() != EventKind::Deleted {
            let id = self.event.status_id();
            let reread = window.get(id).is_some_and(|e| e.fingerprint() == self.event.fingerprint()) && !self.event.is_counts_refresh();
            let counts = if reread { None } else { self.counts };
            window.note(id, self.event.key(), self.created, self.event.fingerprint(), counts);
        }
        batch.events.push(self.event);
        batch.state.push(self.index);
    }
}

pub(crate) fn convert_page<'a>(sh: &Shared, job: &Job, account_id: &str, host: &str, raws: impl Iterator<Item = &'a str>) -> Vec<Item> {
    convert_statuses(sh, &job.acct, account_id, host, raws)
}

/// Convert statuses of `acct`'s timeline (read at `host`, where its id is
/// `account_id`), counting and dead-lettering what cannot be published.
pub(crate) fn convert_statuses<'a>(
    sh: &Shared,
    acct: &str,
    account_id: &str,
    host: &str,
    raws: impl Iterator<Item = &'a str>,
) -> Vec<Item> {
    let conv = sh.converter();
    let mut out = Vec::new();
    for raw in raws {
        match conv.convert(raw, host, Via::Rest, EventKind::Created, Some((account_id, acct))) {
            Converted::Event(ev, index) => {
                let created = ev.post.as_ref().and_then(|p| p.created_at).map_or(0, |t| t.timestamp());
                let counts = ev.post.as_ref().map(|p| [p.counts.replies, p.counts.reblogs, p.counts.favourites]);
                out.push(Item { event: EncodedEvent::from(*ev), index, created, counts });
            }
            Converted::Skipped { reason, key } => sh.skipped(reason, &key),
            // Our own account's timeline: anything else is its boosts' wrappers
            // attributed to someone else, which cannot happen; count it.
            Converted::NotFollowed => {
                tracing::debug!(acct = %acct, "Status on the profile timeline not attributed to the account");
                sh.status.count("unattributed", 1);
            }
            Converted::Malformed(reason) => sh.malformed(&format!("{acct} timeline: {reason}"), raw),
        }
    }
    out
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

/// Emit `items` with the account's window (under its lock) and `extra` state.
async fn emit_with_window(sh: &Shared, job: &Job, items: Vec<Item>, extra: Vec<StatePut>) -> Result<(), JobError> {
    let lock = sh.window_lock(&job.checkpoint_key);
    let _held = lock.lock().await;
    let mut window = PostWindow::load(&*sh.log, &job.checkpoint_key).await?;
    let mut batch = SourceBatch::default();
    for item in items {
        item.push_into(&mut batch, &mut window);
    }
    window.prune(&sh.window_spec, Utc::now());
    batch.state.extend(window.puts());
    batch.state.extend(extra);
    sh.emit(batch).await?;
    Ok(())
}

async fn forward(sh: &Shared, job: &Job, account_id: &str, host: &str, mut cp: String) -> Result<(String, usize), JobError> {
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
        let items = convert_page(sh, job, account_id, host, page.statuses.iter().rev().map(|r| r.get()));
        found += items.len();
        emit_with_window(sh, job, items, vec![StatePut::set(CHECKPOINT_NS, job.checkpoint_key.clone(), newest.clone())]).await?;
        cp = newest;
        if page.statuses.len() < PAGE as usize {
            break;
        }
    }
    Ok((cp, found))
}

async fn first_start(sh: &Shared, job: &Job, account_id: &str, host: &str) -> Result<(String, usize), JobError> {
    let (want, since) = match &sh.backfill {
        Backfill::None => (0usize, None),
        Backfill::Last(n) => (*n as usize, None),
        Backfill::Since(t) => (usize::MAX, Some(*t)),
    };
    let first_limit = if want == 0 { 1 } else { PAGE.min(want.min(PAGE as usize) as u32).max(1) };
    let mut page = job.client.account_statuses(account_id, Page::Latest { limit: first_limit }).await?;
    let checkpoint_put = |id: &str| StatePut::set(CHECKPOINT_NS, job.checkpoint_key.clone(), id.to_string());
    let Some(newest) = newest_id(None, page.statuses.iter().map(|r| r.get())) else {
        // An empty timeline: everything from now on is new. "0" sorts before every id.
        sh.emit(SourceBatch { events: vec![], state: vec![checkpoint_put("0")] }).await?;
        return Ok(("0".into(), 0));
    };
    if want == 0 {
        sh.emit(SourceBatch { events: vec![], state: vec![checkpoint_put(&newest)] }).await?;
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
        let items = convert_page(sh, job, account_id, host, chunk.iter().rev().map(|r| r.get()));
        found += items.len();
        let extra = if i == last { vec![checkpoint_put(&newest)] } else { vec![] };
        emit_with_window(sh, job, items, extra).await?;
    }
    if raws.is_empty() {
        sh.emit(SourceBatch { events: vec![], state: vec![checkpoint_put(&newest)] }).await?;
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
