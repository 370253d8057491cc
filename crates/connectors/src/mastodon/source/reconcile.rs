//! Reconciliation: finds edits and deletions of posts older than the newest
//! page, made while no stream told us (fedistream stopped, the stream down or
//! dropping events, no stream at all).
//!
//! Each account's window ([`super::window`]: the posts of the last 7 days and at
//! least the newest 200, by default) is checked again within `reconcile_within`
//! (default 1 hour). A pass asks for the current version of every post in the
//! window with [`Refetcher`], one request at a time:
//!
//! * where the server has `GET /api/v1/statuses?id[]=` (Mastodon 4.3+), 20 ids
//!   per request: an id missing from the answer is deleted;
//! * elsewhere (older Mastodon, GoToSocial), the oldest post alone
//!   (`GET /api/v1/statuses/:id`, 404 = deleted), then the timeline paged
//!   forward from it with `min_id`, 40 per page: a post missing from the range a
//!   page covers is deleted.
//!
//! A post whose fingerprint changed is published again (deduplication makes it
//! an `updated` event); a deleted one becomes a `deleted` event. Both are
//! appended with the updated window, under the account's window lock.
//!
//! Requests go through the background handle of the client
//! ([`MastodonClient::background`]): inside the shared per-server rate limiter,
//! and only while more than half of the window's budget is left, so the
//! catch-up always has its requests. When passes start is [`super::rounds`]'
//! business. The statistics' engagement refresh can drive the same
//! [`Refetcher`] and compare counts instead of fingerprints.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use fedistream_core::post::Via;
use fedistream_core::SourceBatch;
use serde_json::value::RawValue;

use super::catchup::{convert_statuses, JobError, PAGE};
use super::convert::{deleted_event, id_newer, status_id};
use super::window::PostWindow;
use super::Shared;
use crate::mastodon::client::{MastodonClient, MastodonError, Page, MAX_IDS_PER_LOOKUP};

/// What one request of a [`Refetcher`] learned.
#[derive(Debug, Default)]
pub struct Refetched {
    /// Current versions of asked posts (unparsed).
    pub present: Vec<Box<RawValue>>,
    /// Asked posts that no longer exist (or may no longer be seen).
    pub absent: Vec<String>,
}

/// Which servers answer `GET /api/v1/statuses?id[]=`, learned on first use.
#[derive(Debug, Default)]
pub struct LookupSupport(std::sync::Mutex<HashMap<String, bool>>);

impl LookupSupport {
    fn get(&self, host: &str) -> Option<bool> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(host).copied()
    }
    fn set(&self, host: &str, batch: bool) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(host.to_string(), batch);
    }
}

enum Mode {
    Batch {
        next: usize,
    },
    /// `cursor`: every asked id up to it is settled.
    Paging {
        cursor: Option<String>,
    },
}

/// Fetches the current version of known posts of one account, one request per
/// [`Refetcher::next`], settling every asked id as present or absent.
pub struct Refetcher<'a> {
    client: &'a MastodonClient,
    account_id: &'a str,
    /// Oldest first.
    ids: Vec<String>,
    support: &'a LookupSupport,
    mode: Mode,
    /// Requests sent.
    pub requests: usize,
}

impl<'a> Refetcher<'a> {
    pub fn new(client: &'a MastodonClient, account_id: &'a str, mut ids: Vec<String>, support: &'a LookupSupport) -> Self {
        ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        ids.dedup();
        let mode = match support.get(&client.host()) {
            Some(false) => Mode::Paging { cursor: None },
            _ => Mode::Batch { next: 0 },
        };
        Refetcher { client, account_id, ids, support, mode, requests: 0 }
    }

    /// Whether one post still exists (`GET /api/v1/statuses/:id`).
    async fn exists(&mut self, id: &str) -> Result<bool, MastodonError> {
        self.requests += 1;
        match self.client.status(id).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.status(), Some(404 | 410)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The next request's findings; `None` once every id is settled.
    pub async fn next(&mut self) -> Result<Option<Refetched>, MastodonError> {
        loop {
            match &mut self.mode {
                Mode::Batch { next } => {
                    let next = *next;
                    if next >= self.ids.len() {
                        return Ok(None);
                    }
                    let chunk: Vec<String> = self.ids[next..].iter().take(MAX_IDS_PER_LOOKUP).cloned().collect();
                    self.requests += 1;
                    match self.client.statuses_by_id(&chunk).await? {
                        Some(found) if found.is_empty() && chunk.len() > 1 && self.exists(&chunk[chunk.len() - 1]).await? => {
                            // Nothing of several posts, yet the newest is there:
                            // this server's batch answers cannot be trusted to
                            // mean "deleted" (a proxy, a partial implementation).
                            tracing::warn!(server = %self.client.host(), "GET /api/v1/statuses?id[]= answered nothing for posts that exist; reconciling by paging timelines instead");
                            self.support.set(&self.client.host(), false);
                            self.mode = Mode::Paging { cursor: None };
                        }
                        Some(found) => {
                            self.support.set(&self.client.host(), true);
                            self.mode = Mode::Batch { next: next + chunk.len() };
                            let wanted: HashSet<&str> = chunk.iter().map(String::as_str).collect();
                            let present: Vec<Box<RawValue>> =
                                found.into_iter().filter(|r| status_id(r.get()).is_some_and(|id| wanted.contains(id.as_str()))).collect();
                            let got: HashSet<String> = present.iter().filter_map(|r| status_id(r.get())).collect();
                            let absent = chunk.into_iter().filter(|id| !got.contains(id)).collect();
                            return Ok(Some(Refetched { present, absent }));
                        }
                        None => {
                            tracing::info!(server = %self.client.host(), "The server has no GET /api/v1/statuses?id[]= (Mastodon before 4.3, other servers): reconciling by paging timelines");
                            self.support.set(&self.client.host(), false);
                            self.mode = Mode::Paging { cursor: None };
                        }
                    }
                }
                Mode::Paging { cursor: None } => {
                    let Some(oldest) = self.ids.first().cloned() else {
                        return Ok(None);
                    };
                    // min_id pages start *after* a post: the oldest one is asked alone.
                    self.requests += 1;
                    let found = match self.client.status(&oldest).await {
                        Ok(raw) => Refetched { present: vec![raw], absent: vec![] },
                        Err(e) if matches!(e.status(), Some(404 | 410)) => Refetched { present: vec![], absent: vec![oldest.clone()] },
                        Err(e) => return Err(e),
                    };
                    self.mode = Mode::Paging { cursor: Some(oldest) };
                    return Ok(Some(found));
                }
                Mode::Paging { cursor: Some(cursor) } => {
                    let cursor = cursor.clone();
                    let Some(last) = self.ids.last() else {
                        return Ok(None);
                    };
                    if !id_newer(last, &cursor) {
                        return Ok(None);
                    }
                    self.requests += 1;
                    let page = self.client.account_statuses(self.account_id, Page::After { min_id: cursor.clone(), limit: PAGE }).await?;
                    let page_ids: HashSet<String> = page.statuses.iter().filter_map(|r| status_id(r.get())).collect();
                    let newest = page_ids.iter().max_by(|a, b| (a.len(), a).cmp(&(b.len(), b))).cloned();
                    let full = page.statuses.len() >= PAGE as usize;
                    // A full page covers up to its newest post; a short one, everything.
                    let covered = |id: &str| id_newer(id, &cursor) && (!full || newest.as_deref().is_some_and(|n| !id_newer(id, n)));
                    if full && newest.as_deref().is_none_or(|n| !id_newer(n, &cursor)) {
                        // A server that ignores min_id would page forever.
                        tracing::warn!(server = %self.client.host(), "Timeline paging does not advance; this reconciliation pass stops here");
                        return Ok(None);
                    }
                    let asked: Vec<&String> = self.ids.iter().filter(|id| covered(id)).collect();
                    let absent = asked.iter().filter(|id| !page_ids.contains(id.as_str())).map(|id| (*id).clone()).collect();
                    let asked: HashSet<&str> = asked.into_iter().map(String::as_str).collect();
                    let present =
                        page.statuses.into_iter().filter(|r| status_id(r.get()).is_some_and(|id| asked.contains(id.as_str()))).collect();
                    let next = match (full, newest) {
                        (true, Some(n)) => n,
                        _ => last.clone(),
                    };
                    self.mode = Mode::Paging { cursor: Some(next) };
                    return Ok(Some(Refetched { present, absent }));
                }
            }
        }
    }
}

/// One reconciliation pass of one account.
pub(crate) struct Pass {
    pub index: usize,
    pub acct: String,
    /// The background handle of the account's client.
    pub client: MastodonClient,
    pub account_id: String,
    pub checkpoint_key: String,
}

#[derive(Debug, Default)]
pub(crate) struct PassDone {
    pub checked: usize,
    pub edited: usize,
    pub deleted: usize,
    pub requests: usize,
}

pub(crate) async fn run(sh: Arc<Shared>, pass: Pass) -> Result<PassDone, JobError> {
    let ids: Vec<String> = {
        let lock = sh.window_lock(&pass.checkpoint_key);
        let _held = lock.lock().await;
        PostWindow::load(&*sh.log, &pass.checkpoint_key).await?.entries().iter().map(|e| e.id().to_string()).collect()
    };
    let mut done = PassDone { checked: ids.len(), ..Default::default() };
    let host = pass.client.host();
    let mut refetcher = Refetcher::new(&pass.client, &pass.account_id, ids, &sh.lookups);
    while let Some(found) = refetcher.next().await? {
        let (edited, deleted) = apply(&sh, &pass, &host, found).await?;
        done.edited += edited;
        done.deleted += deleted;
    }
    done.requests = refetcher.requests;
    if done.edited + done.deleted > 0 {
        tracing::info!(acct = %pass.acct, edited = done.edited, deleted = done.deleted, checked = done.checked, "Reconciliation found changes made while no stream told us");
    } else {
        tracing::debug!(acct = %pass.acct, checked = done.checked, requests = done.requests, "Reconciliation pass: no changes");
    }
    Ok(done)
}

/// Publish what one request found, with the window, under the account's lock.
async fn apply(sh: &Shared, pass: &Pass, host: &str, found: Refetched) -> Result<(usize, usize), JobError> {
    let items = convert_statuses(sh, &pass.acct, &pass.account_id, host, found.present.iter().map(|r| r.get()));
    let lock = sh.window_lock(&pass.checkpoint_key);
    let _held = lock.lock().await;
    let mut window = PostWindow::load(&*sh.log, &pass.checkpoint_key).await?;
    let mut batch = SourceBatch::default();
    let mut edited = 0;
    for item in items {
        // Only posts still in the window (the catch-up may have pruned some),
        // and only versions we have not published.
        let Some(known) = window.get(item.event.status_id()) else {
            continue;
        };
        if known.fingerprint() == item.event.fingerprint() {
            continue;
        }
        if !known.fingerprint().is_empty() {
            edited += 1;
        }
        item.push_into(&mut batch, &mut window);
    }
    let name = sh.converter().server_name(host).to_string();
    let mut deleted = 0;
    for id in &found.absent {
        let Some(gone) = window.remove(id) else {
            continue;
        };
        if let Some(mut ev) = deleted_event(&sh.name, &name, gone.id(), &format!("{}\t{}", gone.uri(), pass.acct)) {
            ev.via = Via::Rest;
            batch.push(ev);
            deleted += 1;
        }
    }
    if batch.events.is_empty() {
        return Ok((0, 0));
    }
    window.prune(&sh.window_spec, Utc::now());
    batch.state.extend(window.puts());
    sh.emit(batch).await?;
    sh.status.count("reconciled_edits", edited as u64);
    sh.status.count("reconciled_deletes", deleted as u64);
    Ok((edited, deleted))
}
