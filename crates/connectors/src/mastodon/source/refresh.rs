//! Engagement refresh: the interaction counts (replies, boosts, favourites) of
//! each followed account's recent posts, read again on a schedule, so the
//! statistics see engagement as it grows rather than as it was when a post
//! arrived (nearly always zero).
//!
//! With `engagement_refresh = "1h"`, every post of an account's window
//! ([`super::window`]) created within `engagement_window` (default 2 days) has
//! its counts read again at least once an hour: passes are scheduled like
//! reconciliation's ([`super::rounds`], with the refresh interval as the
//! bound) and fetch with the same [`Refetcher`] — 20 posts per
//! `GET /api/v1/statuses?id[]=` where the server has it (Mastodon 4.3+), else
//! the oldest post alone (`GET /api/v1/statuses/:id`) and the timeline paged
//! forward from it, 40 posts per request (fewer requests than one per post).
//! Which servers lack the batch lookup (404, 405, 410, 422) is learned on first
//! use and shared with reconciliation. Requests go through the background
//! handle: inside the shared per-server rate limiter (nothing before a 429's
//! reset), and only while more than half of the window's budget is left.
//!
//! A post whose counts differ from those last published is emitted again as
//! an `updated` event marked as a counts refresh
//! ([`fedistream_core::EncodedEvent::counts_refresh`]): its version
//! (fingerprint) is unchanged, so the ingestor keeps it instead of dropping it
//! as a duplicate, and the mirror channel, which compares versions, does not
//! republish it. Its `counts` carry when and by which server they were
//! observed. Edits and deletions are left to reconciliation.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fedistream_core::SourceBatch;

use super::catchup::{convert_statuses, Item, JobError};
use super::reconcile::{Pass, Refetched, Refetcher};
use super::window::PostWindow;
use super::Shared;

#[derive(Debug, Default)]
pub(crate) struct RefreshDone {
    pub checked: usize,
    pub refreshed: usize,
    pub requests: usize,
}

/// One refresh pass of one account: the posts of its window created within `max_age`.
pub(crate) async fn run(sh: Arc<Shared>, pass: Pass, max_age: Duration) -> Result<RefreshDone, JobError> {
    let since = Utc::now().timestamp().saturating_sub(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX));
    let ids: Vec<String> = {
        let lock = sh.window_lock(&pass.checkpoint_key);
        let _held = lock.lock().await;
        let window = PostWindow::load(&*sh.log, &pass.checkpoint_key).await?;
        window.entries().iter().filter(|e| e.created() >= since).map(|e| e.id().to_string()).collect()
    };
    let mut done = RefreshDone { checked: ids.len(), ..Default::default() };
    if ids.is_empty() {
        return Ok(done);
    }
    let host = pass.client.host();
    let mut refetcher = Refetcher::new(&pass.client, &pass.account_id, ids, &sh.lookups);
    while let Some(found) = refetcher.next().await? {
        done.refreshed += apply(&sh, &pass, &host, found).await?;
    }
    done.requests = refetcher.requests;
    tracing::debug!(acct = %pass.acct, checked = done.checked, refreshed = done.refreshed, requests = done.requests, "Engagement refresh pass done");
    Ok(done)
}

/// Publish the posts of one answer whose counts changed, with the window that
/// records them, under the account's lock.
async fn apply(sh: &Shared, pass: &Pass, host: &str, found: Refetched) -> Result<usize, JobError> {
    let items = convert_statuses(sh, &pass.acct, &pass.account_id, host, found.present.iter().map(|r| r.get()));
    let lock = sh.window_lock(&pass.checkpoint_key);
    let _held = lock.lock().await;
    let mut window = PostWindow::load(&*sh.log, &pass.checkpoint_key).await?;
    let mut batch = SourceBatch::default();
    for item in items {
        let Some(known) = window.get(item.event.status_id()) else {
            continue;
        };
        // Another version is an edit: reconciliation publishes it (with its counts).
        if known.fingerprint() != item.event.fingerprint() || item.counts.is_none() || known.counts() == item.counts {
            continue;
        }
        let item = Item { event: item.event.counts_refresh(), ..item };
        item.push_into(&mut batch, &mut window);
    }
    let n = batch.events.len();
    if n == 0 {
        return Ok(0);
    }
    window.prune(&sh.window_spec, Utc::now());
    batch.state.extend(window.puts());
    sh.emit(batch).await?;
    sh.status.count("refreshed_counts", n as u64);
    Ok(n)
}
