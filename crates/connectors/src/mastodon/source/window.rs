//! The reconciliation window of one followed account: the posts published from
//! its timeline that are still checked for edits and deletions, as a durable
//! list in the log's state store (namespace [`WINDOW_NS`], keyed like the
//! account's checkpoint).
//!
//! Each entry is `[id, uri, created_at (Unix seconds, 0 if unknown),
//! fingerprint of the version published, [replies, boosts, favourites] as last
//! published (null if unknown)]`, newest first; the counts are what the
//! engagement refresh ([`super::refresh`]) compares. The window holds the
//! posts of the last `max_age` (default 7 days) and at least the newest
//! `min_posts` (default 200), never more than `cap` (2,000): memory and state per
//! account stay bounded whatever the account does. It is written only in the
//! same append as the events that change it, so it never claims a post the log
//! does not hold, and it is loaded per job, not kept: a process holds the
//! windows of the accounts it is working on, not of every account.
//!
//! Who writes it: the catch-up adds posts (and the safety pass removes the ones
//! gone from the newest page), reconciliation updates and removes them. They
//! may run at once for one account, so each read-modify-append holds the
//! account's lock ([`super::Shared::window_lock`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use fedistream_core::{Log, SourceError, StatePut};
use serde::{Deserialize, Serialize};

use super::convert::id_newer;

/// State namespace of the windows.
pub const WINDOW_NS: &str = "window";
/// Before the window: the newest 100 posts as `[[id, uri], ...]`. Read once and
/// replaced by the window.
const LEGACY_NS: &str = "recent";
/// Hard cap on a window, whatever `max_age` covers.
pub const WINDOW_CAP: usize = 2_000;

/// Which posts a window keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub max_age: Duration,
    pub min_posts: usize,
    pub cap: usize,
}

/// One post in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry(pub String, pub String, #[serde(default)] pub i64, #[serde(default)] pub String, #[serde(default)] pub Option<[u64; 3]>);

impl Entry {
    pub fn id(&self) -> &str {
        &self.0
    }
    pub fn uri(&self) -> &str {
        &self.1
    }
    /// Unix seconds; 0 when not known (entries from before the window existed).
    pub fn created(&self) -> i64 {
        self.2
    }
    /// Fingerprint of the version published; empty when not known.
    pub fn fingerprint(&self) -> &str {
        &self.3
    }
    /// Replies, boosts and favourites as last published; `None` when not known
    /// (entries from before the counts were kept).
    pub fn counts(&self) -> Option<[u64; 3]> {
        self.4
    }
}

/// One account's window, loaded for a job.
#[derive(Debug)]
pub struct PostWindow {
    key: String,
    entries: Vec<Entry>,
    /// Read from the legacy namespace: the append that writes it removes that.
    legacy: bool,
}

fn newest_first(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    (b.0.len(), &b.0).cmp(&(a.0.len(), &a.0))
}

impl PostWindow {
    pub async fn load(log: &dyn Log, key: &str) -> Result<Self, SourceError> {
        if let Some(v) = log.state_get(WINDOW_NS, key).await? {
            let entries = serde_json::from_str(&v).unwrap_or_else(|e| {
                tracing::warn!(key, error = %e, "Unreadable reconciliation window; starting it over");
                Vec::new()
            });
            return Ok(PostWindow { key: key.to_string(), entries, legacy: false });
        }
        let legacy: Vec<(String, String)> = match log.state_get(LEGACY_NS, key).await? {
            Some(v) => serde_json::from_str(&v).unwrap_or_default(),
            None => Vec::new(),
        };
        let legacy_found = !legacy.is_empty();
        let mut entries: Vec<Entry> = legacy.into_iter().map(|(id, uri)| Entry(id, uri, 0, String::new(), None)).collect();
        entries.sort_by(newest_first);
        Ok(PostWindow { key: key.to_string(), entries, legacy: legacy_found })
    }

    /// Newest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.0 == id)
    }

    /// Remember (or refresh) a post we published: its id, URI, creation time
    /// (Unix seconds, 0 if unknown), the fingerprint of the version and its
    /// interaction counts (`None`: keep what is known).
    pub fn note(&mut self, id: &str, uri: &str, created: i64, fingerprint: &str, counts: Option<[u64; 3]>) {
        match self.entries.iter_mut().find(|e| e.0 == id) {
            Some(e) => {
                e.2 = if created != 0 { created } else { e.2 };
                e.3 = fingerprint.to_string();
                e.4 = counts.or(e.4);
            }
            None => {
                let at = self.entries.partition_point(|e| id_newer(&e.0, id));
                self.entries.insert(at, Entry(id.to_string(), uri.to_string(), created, fingerprint.to_string(), counts));
            }
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.0 == id)?;
        Some(self.entries.remove(i))
    }

    /// Posts we published that the newest page no longer lists: those not older
    /// than the page's oldest (`lo`; `None` when the page is the whole timeline)
    /// and not newer than the checkpoint, missing from `page_ids`. Removed here.
    pub fn take_gone(&mut self, page_ids: &[String], lo: Option<&str>, checkpoint: &str) -> Vec<Entry> {
        let (gone, keep): (Vec<_>, Vec<_>) = self
            .entries
            .drain(..)
            .partition(|e| !id_newer(&e.0, checkpoint) && lo.is_none_or(|lo| !id_newer(lo, &e.0)) && !page_ids.contains(&e.0));
        self.entries = keep;
        gone
    }

    /// Drop what falls out of the window: older than `max_age` and beyond the
    /// newest `min_posts`, and anything beyond `cap`.
    pub fn prune(&mut self, spec: &WindowSpec, now: DateTime<Utc>) {
        let oldest = now.timestamp() - i64::try_from(spec.max_age.as_secs()).unwrap_or(i64::MAX);
        let mut i = 0;
        self.entries.retain(|e| {
            i += 1;
            i <= spec.min_posts || e.2 == 0 || e.2 >= oldest
        });
        self.entries.truncate(spec.cap);
    }

    /// The append's state change that stores this window.
    pub fn puts(&self) -> Vec<StatePut> {
        let mut puts = vec![StatePut::set(WINDOW_NS, self.key.clone(), serde_json::to_string(&self.entries).unwrap_or_default())];
        if self.legacy {
            puts.push(StatePut::delete(LEGACY_NS, self.key.clone()));
        }
        puts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(ids: &[(&str, i64)]) -> PostWindow {
        let entries = ids.iter().map(|(id, t)| Entry(id.to_string(), format!("u/{id}"), *t, "fp".into(), None)).collect();
        PostWindow { key: "k".into(), entries, legacy: false }
    }

    #[test]
    fn prune_keeps_the_age_window_and_the_newest_n_within_the_cap() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let day = 86_400;
        let spec = WindowSpec { max_age: Duration::from_secs(7 * day as u64), min_posts: 2, cap: 4 };
        // Newest first: two recent, then three old ones.
        let mut win = w(&[("9", 1_000_000), ("8", 1_000_000 - day), ("7", 1_000_000 - 8 * day), ("6", 1_000_000 - 9 * day), ("5", 0)]);
        win.prune(&spec, now);
        let ids: Vec<&str> = win.entries().iter().map(Entry::id).collect();
        // 7 and 6 are old and beyond the newest two; 5's age is unknown: kept.
        assert_eq!(ids, ["9", "8", "5"]);
        let mut old = w(&[("9", 1), ("8", 1), ("7", 1)]);
        old.prune(&spec, now);
        assert_eq!(old.entries().len(), 2, "the newest min_posts stay however old");
        let mut many = w(&[("9", 1_000_000), ("8", 1_000_000), ("7", 1_000_000), ("6", 1_000_000), ("5", 1_000_000)]);
        many.prune(&spec, now);
        assert_eq!(many.entries().len(), 4, "never beyond the cap");
    }

    #[test]
    fn entries_stay_newest_first_and_serialise_compactly() {
        use chrono::Utc;
        let mut win = w(&[("10", 5), ("8", 5)]);
        let raw = include_str!("../../../../../tests/fixtures/mastodon/status_plain.json");
        let mut v: serde_json::Value = serde_json::from_str(raw).unwrap();
        v["id"] = "9".into();
        let ctx = fedistream_process::normalize::NormalizeContext {
            instance: "social.example",
            via: fedistream_core::post::Via::Rest,
            received_at: Utc::now(),
        };
        let p = fedistream_process::normalize::parse_and_normalize(&v.to_string(), &ctx).unwrap();
        let created = p.created_at.unwrap().timestamp();
        win.note(&p.id, &p.uri, created, "abc", Some([1, 2, 3]));
        let ids: Vec<&str> = win.entries().iter().map(Entry::id).collect();
        assert_eq!(ids, ["10", "9", "8"]);
        win.note(&p.id, &p.uri, 0, "def", None);
        assert_eq!(win.get("9").unwrap().created(), created, "a known time is kept");
        assert_eq!(win.get("9").unwrap().counts(), Some([1, 2, 3]), "known counts are kept");
        assert_eq!(win.get("9").unwrap().fingerprint(), "def");
        let json = serde_json::to_string(&win.entries()[1]).unwrap();
        assert!(json.starts_with(r#"["9","#), "{json}");
        assert_eq!(win.remove("10").map(|e| e.0), Some("10".to_string()));
        // An entry written before the counts were kept reads back without them.
        let old: Entry = serde_json::from_str(r#"["1","u/1",5,"fp"]"#).unwrap();
        assert_eq!(old.counts(), None);
    }
}
