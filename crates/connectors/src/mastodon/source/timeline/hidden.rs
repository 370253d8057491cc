//! What a timeline source says about feeds it cannot read in full: a feed
//! the server hides (its settings, or how a REST answer shows them) and a gap
//! a catch-up left. Each is shown on the feed in the status (a part), logged
//! once and counted.

use std::collections::BTreeMap;

use fedistream_core::{ErrorKind, SourceError, Status};
use tracing::{error, info, warn};

use super::super::catchup::JobError;
use super::{Feed, Gap, TimelineKind, HIDDEN_RETRY};

/// What the server's 4.5+ settings say before we ask: (hidden, disabled).
pub(super) fn settings_verdict(
    kind: &TimelineKind,
    access: &BTreeMap<String, String>,
    host: &str,
    has_token: bool,
) -> (Option<String>, Option<String>) {
    let keys = kind.access_keys();
    let of = |v: &str| keys.iter().filter(|k| access.get(**k).is_some_and(|a| a == v)).copied().collect::<Vec<_>>();
    let (disabled, auth) = (of("disabled"), of("authenticated"));
    if !keys.is_empty() && disabled.len() == keys.len() {
        let why = format!(
            "hidden: {host} disabled this feed (`timelines_access.{}` = disabled, Mastodon 4.5+ feed settings): REST answers nothing and the stream only deletes",
            disabled.join("`, `timelines_access.")
        );
        return (None, Some(why));
    }
    if !has_token && !auth.is_empty() {
        let why = format!(
            "hidden: {host} shows this feed to signed-in users only (`timelines_access.{}` = authenticated): give the source a `connection` with a token",
            auth.join("`, `timelines_access.")
        );
        return (Some(why), None);
    }
    if !disabled.is_empty() {
        warn!(feed = %kind.label(), server = %host, halves = ?disabled, "Part of this feed is disabled by the server's feed settings: only the rest is read");
    }
    (None, None)
}

/// A REST answer that means "this server does not show this feed to us".
pub(super) fn hidden_by(e: &JobError, kind: &TimelineKind, host: &str, has_token: bool) -> Option<String> {
    let JobError::Mastodon(m) = e else { return None };
    let keys = kind.access_keys();
    let setting = if keys.is_empty() { String::new() } else { format!(" / `timelines_access.{}`", keys.join("`, `timelines_access.")) };
    match m.status()? {
        401 if !has_token && !kind.needs_token() => Some(format!(
            "hidden: {host} hides this feed from anonymous readers (HTTP 401: `timeline_preview` off before Mastodon 4.5{setting} = authenticated): give the source a `connection` with a token"
        )),
        403 | 422 => Some(format!("hidden: {host} refuses this feed (HTTP {}: {m}): disabled by the server's feed settings{setting}", m.status()?)),
        404 if matches!(kind, TimelineKind::List(_)) => Some(format!("hidden: {host} has no such list of the connection's account (HTTP 404)")),
        _ => None,
    }
}

pub(super) fn hide(f: &mut Feed, why: String, status: &Status) {
    if f.hidden.as_deref() != Some(why.as_str()) {
        error!(feed = %f.label, reason = %why, retry_in = ?HIDDEN_RETRY, "Timeline feed is hidden");
        status.count("hidden", 1);
        metrics::counter!("fedistream_timeline_hidden_total", "component" => "mastodon").increment(1);
        status.set_part(&f.label, Some(why.clone()));
        f.hidden = Some(why);
    }
}

pub(super) fn show(f: &mut Feed, status: &Status) {
    info!(feed = %f.label, "Timeline feed readable again");
    f.hidden = None;
    status.set_part(&f.label, None);
}

pub(super) fn report_gap(f: &mut Feed, gap: &Gap, max_pages: u32, status: &Status) {
    let what = gap.describe();
    warn!(feed = %f.label, gap = %what, seconds = gap.seconds(), max_pages, "The feed outran its catch-up: a gap was left unread");
    status.count("gaps", 1);
    status.count("gap_seconds", gap.seconds());
    metrics::counter!("fedistream_timeline_gaps_total", "component" => "mastodon").increment(1);
    status.set_part(&f.label, Some(format!("last gap: {what} (more than max_pages = {max_pages} pages behind)")));
}

/// When every feed is hidden: why (the source's state detail, and the error
/// that ends a `follow`).
pub(super) fn all_hidden_reason(feeds: &[Feed]) -> Option<String> {
    let all = !feeds.is_empty() && feeds.iter().all(|f| f.hidden.is_some() || f.disabled.is_some());
    all.then(|| {
        let why: Vec<String> =
            feeds.iter().map(|f| format!("{}: {}", f.label, f.hidden.as_deref().or(f.disabled.as_deref()).unwrap_or_default())).collect();
        format!("no feed can be read: {}", why.join("; "))
    })
}

pub(super) fn all_hidden(feeds: &[Feed]) -> Option<SourceError> {
    all_hidden_reason(feeds).map(|why| SourceError::new(ErrorKind::Config, why))
}
