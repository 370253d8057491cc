//! REST catch-up of one feed: pages the timeline forward from its durable
//! checkpoint with `min_id` (pages come newest-first, so each is processed in
//! reverse), emitting each page with the checkpoint that covers it, like an
//! account's catch-up ([`super::super::catchup`]). Unlike an account's
//! timeline, a busy feed can hold more than one catch-up may read (the page
//! cap, the rate-limit share): then the oldest part of the backlog is read,
//! the newest page is read, and what lies between is a [`Gap`] — reported, not
//! hidden, and the feed goes on from its newest posts.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fedistream_core::post::Via;
use fedistream_core::{EncodedEvent, EventKind, SourceBatch, StatePut};
use serde_json::value::RawValue;

use super::super::catchup::{JobError, PAGE};
use super::super::convert::{id_newer, status_id, Converted, CHECKPOINT_NS};
use super::super::Shared;
use super::config::TimelineKind;
use crate::mastodon::client::{MastodonClient, Page};
use crate::mastodon::source::config::Backfill;

/// What one feed's catch-up needs.
pub(super) struct Job {
    pub index: usize,
    pub kind: TimelineKind,
    /// The handle with the source's rate-limit share.
    pub client: MastodonClient,
    pub checkpoint_key: String,
    pub checkpoint: Option<String>,
    pub max_pages: u32,
}

/// Posts a catch-up could not read: everything after `after` (the newest post
/// read from the old end) and before `before` (the oldest of the newest page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

impl Gap {
    /// How long a stretch of the feed was not read (0 when a time is unknown).
    pub fn seconds(&self) -> u64 {
        match (self.after, self.before) {
            (Some(a), Some(b)) => (b - a).num_seconds().max(0) as u64,
            _ => 0,
        }
    }
    pub fn describe(&self) -> String {
        let t = |t: Option<DateTime<Utc>>| t.map_or_else(|| "?".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
        format!("posts between {} and {} could not be read", t(self.after), t(self.before))
    }
}

pub(super) struct Done {
    pub checkpoint: String,
    /// New events found (before deduplication).
    pub found: usize,
    pub gap: Option<Gap>,
}

pub(super) async fn run(sh: Arc<Shared>, job: Job) -> Result<Done, JobError> {
    match job.checkpoint.clone() {
        Some(cp) => forward(&sh, &job, cp).await,
        None => first_start(&sh, &job).await,
    }
}

async fn fetch(job: &Job, page: Page) -> Result<crate::mastodon::client::StatusPage, JobError> {
    let (segments, params) = job.kind.rest();
    Ok(job.client.status_page(&segments, &params, page).await?)
}

fn newest_of<'a>(raws: impl Iterator<Item = &'a str>) -> Option<String> {
    raws.filter_map(status_id).max_by(|a, b| (a.len(), a).cmp(&(b.len(), b)))
}

fn created_at(raw: &str) -> Option<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct CreatedAt {
        #[serde(default)]
        created_at: Option<DateTime<Utc>>,
    }
    serde_json::from_str::<CreatedAt>(raw).ok().and_then(|c| c.created_at)
}

/// Convert and emit statuses (oldest first) with `checkpoint` in the same append.
async fn emit_page(sh: &Shared, job: &Job, raws: &[&str], checkpoint: &str) -> Result<usize, JobError> {
    let host = job.client.host();
    let conv = sh.converter();
    let mut batch = SourceBatch::default();
    for raw in raws {
        match conv.convert(raw, &host, Via::Rest, EventKind::Created, None) {
            Converted::Event(ev, index) => {
                batch.events.push(EncodedEvent::from(*ev));
                batch.state.push(index);
            }
            Converted::Skipped { reason, key } => sh.skipped(reason, &key),
            Converted::NotFollowed => {}
            Converted::Malformed(reason) => sh.malformed(&format!("{} timeline: {reason}", job.kind.label()), raw),
        }
    }
    let n = batch.events.len();
    batch.state.push(StatePut::set(CHECKPOINT_NS, job.checkpoint_key.clone(), checkpoint.to_string()));
    sh.emit(batch).await?;
    Ok(n)
}

async fn forward(sh: &Shared, job: &Job, mut cp: String) -> Result<Done, JobError> {
    let mut found = 0;
    let mut pages = 0;
    let mut newest_read: Option<DateTime<Utc>> = None;
    loop {
        if pages >= job.max_pages {
            return fill_from_newest(sh, job, cp, found, newest_read).await;
        }
        let page = fetch(job, Page::After { min_id: cp.clone(), limit: PAGE }).await?;
        pages += 1;
        let raws: Vec<&str> = page.statuses.iter().rev().map(|r| r.get()).collect();
        let Some(newest) = newest_of(raws.iter().copied()) else { break };
        if !id_newer(&newest, &cp) {
            // A server that ignores min_id would loop forever on the same page.
            tracing::warn!(feed = %job.kind.label(), checkpoint = %cp, "Server returned no status newer than the checkpoint; stopping this catch-up");
            break;
        }
        newest_read = raws.iter().filter_map(|r| created_at(r)).max().or(newest_read);
        found += emit_page(sh, job, &raws, &newest).await?;
        cp = newest;
        if page.statuses.len() < PAGE as usize {
            break;
        }
    }
    Ok(Done { checkpoint: cp, found, gap: None })
}

/// The page cap is reached and the backlog goes on: read the newest page, and
/// report what lies between as a gap.
async fn fill_from_newest(
    sh: &Shared,
    job: &Job,
    cp: String,
    mut found: usize,
    newest_read: Option<DateTime<Utc>>,
) -> Result<Done, JobError> {
    let page = fetch(job, Page::Latest { limit: PAGE }).await?;
    let fresh: Vec<&str> =
        page.statuses.iter().rev().map(|r| r.get()).filter(|r| status_id(r).is_some_and(|id| id_newer(&id, &cp))).collect();
    let Some(newest) = newest_of(fresh.iter().copied()) else {
        return Ok(Done { checkpoint: cp, found, gap: None });
    };
    // Whether the newest page reaches back to what we read: its oldest post
    // is not newer than the checkpoint.
    let oldest = page.statuses.iter().filter_map(|r| status_id(r.get())).min_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    let joined = oldest.as_deref().is_none_or(|o| !id_newer(o, &cp)) || page.statuses.len() < PAGE as usize;
    let gap = (!joined).then(|| Gap { after: newest_read, before: fresh.iter().filter_map(|r| created_at(r)).min() });
    found += emit_page(sh, job, &fresh, &newest).await?;
    Ok(Done { checkpoint: newest, found, gap })
}

async fn first_start(sh: &Shared, job: &Job) -> Result<Done, JobError> {
    let want = match &sh.backfill {
        Backfill::Last(n) => *n as usize,
        // `since:` is refused by validation for timelines.
        Backfill::None | Backfill::Since(_) => 0,
    };
    let mut page = fetch(job, Page::Latest { limit: if want == 0 { 1 } else { PAGE } }).await?;
    let Some(newest) = newest_of(page.statuses.iter().map(|r| r.get())) else {
        // An empty feed: everything from now on is new. "0" sorts before every id.
        sh.emit(SourceBatch { events: vec![], state: vec![StatePut::set(CHECKPOINT_NS, job.checkpoint_key.clone(), "0".to_string())] })
            .await?;
        return Ok(Done { checkpoint: "0".into(), found: 0, gap: None });
    };
    let mut raws: Vec<Box<RawValue>> = Vec::new();
    let mut pages = 1;
    while want > raws.len() {
        let n = page.statuses.len();
        raws.extend(page.statuses.into_iter().take(want - raws.len()));
        if raws.len() >= want || n < PAGE as usize || pages >= job.max_pages {
            break;
        }
        let Some(max_id) = page.next_max_id.clone().or_else(|| raws.last().and_then(|r| status_id(r.get()))) else { break };
        page = fetch(job, Page::Before { max_id, limit: PAGE }).await?;
        pages += 1;
        if page.statuses.is_empty() {
            break;
        }
    }
    let oldest_first: Vec<&str> = raws.iter().rev().map(|r| r.get()).collect();
    let found = emit_page(sh, job, &oldest_first, &newest).await?;
    tracing::info!(feed = %job.kind.label(), posts = found, checkpoint = %newest, "Feed started");
    Ok(Done { checkpoint: newest, found, gap: None })
}
