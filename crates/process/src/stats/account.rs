//! One account's statistics state: the posts its held windows contain (facts
//! per post, so a delete or an edit can take a post out again and a redelivered
//! event is recognised), the windows with their revision, and the account's
//! watermark.
//!
//! Rules (event time = the post's `created_at`):
//! * The watermark is the newest event time seen minus the allowed lateness.
//!   A window whose end is at or before it is closed: it is emitted then, with
//!   `final = true` and revision 0. An event at or after the watermark always
//!   falls in an open window, so reordering within the lateness changes nothing.
//! * An event for a closed window that is still held (a post older than the
//!   lateness, a delete, an edit) emits that window again, revision + 1, at once.
//!   A window first seen after its end passed the watermark (a backfill) is
//!   created closed and emitted at once, revision 0.
//! * A closed window is held for `keep_closed` after the watermark passed both
//!   its end and the last change to it; then it and the posts only it held are
//!   evicted, and the account remembers per size the latest evicted window end
//!   (`floor`). An event for a window at or before that floor would overwrite
//!   the full record with a partial one, so it is not applied (counted as
//!   `late_dropped` in the processor's status).
//! * A post is identified by its URI and a version by its fingerprint
//!   (content, edit time, ...): redelivery changes nothing; a new version
//!   replaces the facts (the newest edit wins, whatever order versions arrive
//!   in) and counts an edit. Interaction counts are the latest observation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use fedistream_core::event::EventKind;
use serde::{Deserialize, Serialize};

use super::facts::Facts;
use super::input::Input;
use super::json::Writer;
use super::record::{self, Counted, Observed, StatsRecord, WindowId};
use super::window::{Calendar, WindowSize};

/// What the account state needs of the processor's configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    pub sizes: Vec<WindowSize>,
    pub calendar: Calendar,
    pub lateness_ms: i64,
    pub keep_closed_ms: i64,
    pub top_k: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AccountState {
    /// Newest event time seen (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<i64>,
    /// Per size: windows ending at or before this were evicted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floor: BTreeMap<WindowSize, i64>,
    /// The held posts by URI. Stored one state entry per post (see
    /// [`super::AccountStatsProcessor`]), not with the rest of the account, so a
    /// batch writes the posts it changed, not every post held.
    /// Hashed, not ordered: an account's URIs share most of their bytes, and
    /// an ordered map compared them from the start several times per lookup.
    /// The URI is shared with the window index and the changed set.
    #[serde(skip)]
    pub posts: PostMap,
    #[serde(default, with = "pairs")]
    pub windows: BTreeMap<(WindowSize, i64), WindowMeta>,
    /// (event time, URI) of every post with a known time: the window index.
    #[serde(skip)]
    by_time: BTreeSet<(i64, PostKey)>,
    /// Posts changed (with their state entry, written when they changed,
    /// while the post was still in the CPU's caches: at the end of a batch of
    /// thousands of events it had to come back from memory) or removed
    /// (`None`) since the state was last saved.
    #[serde(skip)]
    changed_posts: BTreeMap<PostKey, Option<String>>,
    /// A watermark below which closing and evicting has nothing to do.
    #[serde(skip)]
    quiet_below: QuietBelow,
}

/// An account's held posts by URI.
pub type PostMap = HashMap<PostKey, Box<PostEntry>, foldhash::fast::RandomState>;

/// A post's URI, one allocation shared by the post map, the window index and
/// the changed set. Two keys of the same allocation are equal without
/// comparing their bytes (the index's key finds the map's so).
#[derive(Debug, Clone)]
pub struct PostKey(Arc<str>);

impl PartialEq for PostKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for PostKey {}

impl PartialOrd for PostKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PostKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.cmp(&other.0)
    }
}

impl std::hash::Hash for PostKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        // As `str` hashes, for lookups by `&str`.
        (*self.0).hash(h)
    }
}

impl std::borrow::Borrow<str> for PostKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for PostKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<&str> for PostKey {
    fn from(s: &str) -> Self {
        PostKey(Arc::from(s))
    }
}

impl From<String> for PostKey {
    fn from(s: String) -> Self {
        PostKey(Arc::from(s))
    }
}

/// The first entry of the window index at `t` or later.
fn from_time(t: i64) -> (i64, PostKey) {
    // (One empty key for all: a bound is looked for at every record.)
    static EMPTY: std::sync::LazyLock<PostKey> = std::sync::LazyLock::new(|| PostKey::from(""));
    (t, EMPTY.clone())
}

/// A lower bound of the watermark at which a window closes (its end) or a
/// closed one is evicted (`keep_closed` after its end and last change), so
/// most events skip looking at every window. `None`: not known (after a
/// load), look. Not part of the state's value (equal whatever it holds).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct QuietBelow(pub(super) Option<i64>);

/// The watermark at which a window (closed or not, ending at `end`, last
/// changed at `touched`) is next closed or evicted (accounts' and totals').
pub(super) fn due(closed: bool, end: i64, touched: i64, keep_closed_ms: i64) -> i64 {
    if closed {
        end.max(touched).saturating_add(keep_closed_ms)
    } else {
        end
    }
}

impl PartialEq for QuietBelow {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl WindowMeta {
    /// The watermark at which this window next needs [`AccountState::close_and_evict`].
    fn due(&self, keep_closed_ms: i64) -> i64 {
        due(self.closed, self.end, self.touched, keep_closed_ms)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PostEntry {
    /// Event time (ms); `None` for a delete seen before its post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<i64>,
    /// Fingerprints of the versions seen (emptied by a delete).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<Fingerprint>,
    /// The version counted: the one with the latest edit time (then fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<(Option<i64>, Fingerprint)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The watermark when the entry last changed (evicts undated tombstones).
    #[serde(default)]
    pub touched: i64,
    /// The configured sources that delivered a version of it, sorted (the
    /// per-source totals count the post once in each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl PostEntry {
    /// Whether the post counts in its windows (dated, a version seen, not deleted).
    fn counted(&self) -> bool {
        self.t.is_some() && self.facts.is_some() && !self.deleted
    }

    /// [`PostEntry::write_json`] as a string.
    pub(crate) fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        // (The writer writes UTF-8: strings are copied whole or by serde_json.)
        String::from_utf8(out).unwrap_or_default()
    }

    /// The post's state entry, exactly as `serde_json::to_string(self)` writes it (see `stats::json`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.raw("{");
        if let Some(t) = self.t {
            w.field("\"t\":", t);
            w.raw(",");
        }
        if !self.versions.is_empty() {
            w.raw("\"versions\":[");
            for (i, v) in self.versions.iter().enumerate() {
                if i > 0 {
                    w.raw(",");
                }
                v.write_json(&mut w);
            }
            w.raw("],");
        }
        if let Some((edited, fp)) = &self.current {
            w.raw("\"current\":[");
            match edited {
                Some(e) => w.num(*e),
                None => w.raw("null"),
            }
            w.raw(",");
            fp.write_json(&mut w);
            w.raw("],");
        }
        if let Some(f) = &self.facts {
            w.raw("\"facts\":");
            f.write_json(&mut w);
            w.raw(",");
        }
        if let Some(o) = &self.observed {
            w.field("\"observed\":{\"at\":", o.at);
            w.raw(",\"by\":");
            w.str(&o.by);
            w.field(",\"replies\":", o.replies);
            w.field(",\"boosts\":", o.boosts);
            w.field(",\"favourites\":", o.favourites);
            w.raw("},");
        }
        if self.deleted {
            w.raw("\"deleted\":true,");
        }
        w.field("\"touched\":", self.touched);
        if !self.sources.is_empty() {
            w.raw(",\"sources\":");
            w.strs(&self.sources);
        }
        w.raw("}");
    }
}

/// A version's fingerprint ([`fedistream_core::event::version_fingerprint`]):
/// 16 hex digits, kept as their number (no allocation per version; stored as
/// the digits, so a state entry is what it was). Any other text (no version
/// writes one) is kept as it is and orders as text, as all did before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fingerprint {
    Hex(u64),
    Text(Box<str>),
}

impl Fingerprint {
    /// The digits of `Hex`, on the stack.
    fn digits(v: u64) -> [u8; 16] {
        let mut d = [0u8; 16];
        for (i, b) in d.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[(v >> (60 - 4 * i)) as usize & 15];
        }
        d
    }

    fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            // (ASCII digits.)
            Fingerprint::Hex(v) => f(std::str::from_utf8(&Self::digits(*v)).unwrap_or_default()),
            Fingerprint::Text(t) => f(t),
        }
    }

    fn parse(s: &str) -> Fingerprint {
        let hex = s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        match u64::from_str_radix(s, 16) {
            Ok(v) if hex => Fingerprint::Hex(v),
            _ => Fingerprint::Text(s.into()),
        }
    }

    fn write_json(&self, w: &mut Writer) {
        match self {
            Fingerprint::Hex(v) => {
                w.raw("\"");
                w.out.extend_from_slice(&Self::digits(*v));
                w.raw("\"");
            }
            Fingerprint::Text(t) => w.str(t),
        }
    }
}

impl Ord for Fingerprint {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            // (Fixed-width lower-case digits order as their numbers.)
            (Fingerprint::Hex(a), Fingerprint::Hex(b)) => a.cmp(b),
            _ => self.with_text(|a| other.with_text(|b| a.cmp(b))),
        }
    }
}

impl PartialOrd for Fingerprint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_text(|t| f.write_str(t))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_text(|t| s.serialize_str(t))
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Fingerprint::parse(&String::deserialize(d)?))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WindowMeta {
    pub end: i64,
    pub closed: bool,
    /// Final emissions so far; the next one carries this as its revision.
    pub finals: u32,
    /// Changed since it was last emitted (open windows, for early emission).
    pub dirty: bool,
    /// The watermark when the window last changed.
    pub touched: i64,
}

/// What applying one event did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// The records emitted, as JSON ([`AccountState::write_record`]).
    pub records: Vec<Arc<str>>,
    pub changed: bool,
    /// Windows the event could not be applied to (evicted).
    pub late_dropped: u64,
    /// How the event changed the account's counted posts per window, for the
    /// per-instance and per-source totals ([`super::totals`]).
    pub deltas: Vec<Delta>,
}

/// A change of one account's counted posts in one window: `+1` when a post
/// starts counting (for a source: when that source first delivers it), `-1`
/// when a counted post is deleted. `source: None` is the account's instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub size: WindowSize,
    pub start: i64,
    pub end: i64,
    pub source: Option<String>,
    pub posts: i64,
}

impl AccountState {
    /// The posts changed (or removed: absent from `posts`) since the last call.
    pub fn take_changed_posts(&mut self) -> BTreeMap<PostKey, Option<String>> {
        std::mem::take(&mut self.changed_posts)
    }

    /// Rebuild the in-memory index after loading.
    pub fn reindex(&mut self) {
        self.quiet_below = QuietBelow(None);
        self.by_time = self.posts.iter().filter_map(|(k, p)| p.t.map(|t| (t, k.clone()))).collect();
    }

    pub fn is_empty(&self) -> bool {
        self.newest.is_none() && self.posts.is_empty() && self.windows.is_empty() && self.floor.is_empty()
    }

    pub fn watermark(&self, rules: &Rules) -> i64 {
        self.newest.map(|n| n.saturating_sub(rules.lateness_ms)).unwrap_or(i64::MIN)
    }

    /// Apply one event; `buf` is scratch space for the records' JSON.
    pub fn apply(&mut self, account: &str, ev: &Input, rules: &Rules, buf: &mut Vec<u8>) -> Applied {
        let mut out = Applied::default();
        let wm = self.watermark(rules);
        let t = match &ev.post {
            Some(p) if ev.kind != EventKind::Deleted => Some(p.created_at.unwrap_or(ev.observed_at).timestamp_millis()),
            _ => self.posts.get(ev.key.as_str()).and_then(|p| p.t),
        };
        // Which of the post's windows are evicted.
        let mut beyond = 0;
        if let Some(t) = t {
            for &size in &rules.sizes {
                let (start, end) = rules.calendar.window(size, t);
                if !self.windows.contains_key(&(size, start)) && self.floor.get(&size).is_some_and(|f| end <= *f) {
                    beyond += 1;
                }
            }
            if beyond == rules.sizes.len() {
                out.late_dropped = 1;
                return out;
            }
        }
        let key = match self.posts.get_key_value(ev.key.as_str()) {
            Some((k, _)) => k.clone(),
            None => {
                let k = PostKey::from(ev.key.as_str());
                self.posts.insert(k.clone(), Box::default());
                k
            }
        };
        let entry = self.posts.get_mut(&key).expect("inserted above");
        let counted_before = entry.counted();
        let mut changed = false;
        // A source seen for the first time changes the totals, not the account's record.
        let mut sources_changed = false;
        // (Sources are only ever added, one per event: the one added, if any.)
        let mut added_source = None;
        // First dated event of the post: it enters the window index below.
        let dated_now = entry.t.is_none() && t.is_some();
        if dated_now {
            entry.t = t;
            changed = true;
        }
        match (&ev.post, ev.kind) {
            (Some(p), EventKind::Created | EventKind::Updated) => {
                if !entry.deleted {
                    let fp = ev.fingerprint();
                    if let Err(at) = entry.versions.binary_search(&fp) {
                        entry.versions.insert(at, fp.clone());
                        let candidate = (p.edited_at.map(|e| e.timestamp_millis()), fp);
                        if entry.current.as_ref().is_none_or(|c| candidate > *c) {
                            entry.current = Some(candidate);
                            entry.facts = Some(Facts::of(p));
                        }
                        changed = true;
                    }
                    let c = &p.counts;
                    let at = c.observed_at.timestamp_millis();
                    // (Compared as `Observed` orders, without building one first.)
                    let newer = |o: &Observed| {
                        (at, c.observed_by.as_str(), c.replies, c.reblogs, c.favourites)
                            > (o.at, o.by.as_str(), o.replies, o.boosts, o.favourites)
                    };
                    if p.boost_of.is_none() && entry.observed.as_ref().is_none_or(newer) {
                        entry.observed = Some(Observed {
                            at,
                            by: c.observed_by.to_string(),
                            replies: c.replies,
                            boosts: c.reblogs,
                            favourites: c.favourites,
                        });
                        changed = true;
                    }
                    if let Err(at) = entry.sources.binary_search_by(|s| s.as_str().cmp(&ev.source)) {
                        entry.sources.insert(at, ev.source.to_string());
                        sources_changed = true;
                        added_source = Some(ev.source.as_str());
                    }
                }
            }
            _ => {
                if !entry.deleted {
                    entry.deleted = true;
                    entry.versions.clear();
                    entry.current = None;
                    entry.facts = None;
                    entry.observed = None;
                    changed = true;
                }
            }
        }
        let deltas = match t {
            Some(_) if changed || sources_changed => contribution_changes(counted_before, added_source, entry),
            _ => Vec::new(),
        };
        if !changed && sources_changed {
            entry.touched = if entry.t.is_none() { wm.max(ev.observed_at.timestamp_millis()) } else { wm };
            self.changed_posts.insert(key.clone(), Some(entry.to_json()));
            out.changed = true;
        }
        if let Some(t) = t {
            for &size in &rules.sizes {
                let (start, end) = rules.calendar.window(size, t);
                if !self.windows.contains_key(&(size, start)) && self.floor.get(&size).is_some_and(|f| end <= *f) {
                    continue;
                }
                for (source, posts) in &deltas {
                    out.deltas.push(Delta { size, start, end, source: source.clone(), posts: *posts });
                }
            }
        }
        if !changed {
            return out;
        }
        out.changed = true;
        // A delete of a post not seen yet (no event time) waits for the post's
        // creation, which may still come within the lateness: until the
        // watermark passes the delete's observation (a post is deleted after
        // it was created, so its event time is no later). The watermark at
        // arrival alone could be far behind and evict it at the next jump.
        entry.touched = if entry.t.is_none() { wm.max(ev.observed_at.timestamp_millis()) } else { wm };
        self.changed_posts.insert(key.clone(), Some(entry.to_json()));
        if let Some(t) = t {
            if dated_now {
                self.by_time.insert((t, key));
            }
            for &size in &rules.sizes {
                let (start, end) = rules.calendar.window(size, t);
                let held = self.windows.contains_key(&(size, start));
                if !held && self.floor.get(&size).is_some_and(|f| end <= *f) {
                    out.late_dropped += 1;
                    continue;
                }
                let w = self.windows.entry((size, start)).or_insert_with(|| WindowMeta { end, ..Default::default() });
                w.touched = wm;
                if end <= wm {
                    // Closed already (or a backfill of a window never seen): emit now.
                    w.closed = true;
                    w.dirty = false;
                    let rev = w.finals;
                    w.finals += 1;
                    let due = w.due(rules.keep_closed_ms);
                    self.quiet_below.0 = self.quiet_below.0.map(|q| q.min(due));
                    out.records.push(self.record_json(account, size, start, rev, true, rules, buf));
                } else {
                    w.dirty = true;
                    let due = w.due(rules.keep_closed_ms);
                    self.quiet_below.0 = self.quiet_below.0.map(|q| q.min(due));
                }
            }
            if self.newest.is_none_or(|n| t > n) {
                self.newest = Some(t);
                self.close_and_evict(account, rules, &mut out.records, buf);
            }
        }
        out
    }

    /// Close the windows the watermark passed (emitting them), then evict what
    /// has been closed for longer than `keep_closed`.
    fn close_and_evict(&mut self, account: &str, rules: &Rules, records: &mut Vec<Arc<str>>, buf: &mut Vec<u8>) {
        let wm = self.watermark(rules);
        if self.quiet_below.0.is_some_and(|q| wm < q) {
            return;
        }
        self.close_and_evict_now(wm, account, rules, records, buf);
        let due = self.windows.values().map(|w| w.due(rules.keep_closed_ms)).min().unwrap_or(i64::MAX);
        self.quiet_below = QuietBelow(Some(due));
    }

    fn close_and_evict_now(&mut self, wm: i64, account: &str, rules: &Rules, records: &mut Vec<Arc<str>>, buf: &mut Vec<u8>) {
        let closing: Vec<(WindowSize, i64)> = self.windows.iter().filter(|(_, w)| !w.closed && w.end <= wm).map(|(k, _)| *k).collect();
        for (size, start) in closing {
            let rev = {
                let w = self.windows.get_mut(&(size, start)).expect("listed above");
                w.closed = true;
                w.dirty = false;
                w.finals += 1;
                w.finals - 1
            };
            records.push(self.record_json(account, size, start, rev, true, rules, buf));
        }
        let horizon = wm.saturating_sub(rules.keep_closed_ms);
        let evict: Vec<(WindowSize, i64)> =
            self.windows.iter().filter(|(_, w)| w.closed && w.end <= horizon && w.touched <= horizon).map(|(k, _)| *k).collect();
        // Nothing to evict is the common case: return without looking at the posts.
        let Some(last_end) = evict.iter().filter_map(|k| self.windows.get(k).map(|w| w.end)).max() else {
            return;
        };
        for k in &evict {
            let w = self.windows.remove(k).expect("listed above");
            let f = self.floor.entry(k.0).or_insert(w.end);
            *f = (*f).max(w.end);
        }
        // Posts none of whose windows is held any more go with them. Only posts
        // before the latest evicted end can be among them, and only posts
        // before every size's floor (a post's window of each size must end at
        // or before that size's floor): so the posts of the windows still
        // held are not looked at (a day's when an hour is evicted).
        let below_floors = rules.sizes.iter().map(|s| self.floor.get(s).copied().unwrap_or(i64::MIN)).min().unwrap_or(i64::MIN);
        let gone: Vec<(i64, PostKey)> = self
            .by_time
            .range(..from_time(last_end.min(below_floors)))
            .filter(|(t, _)| {
                rules.sizes.iter().all(|&s| {
                    let (start, end) = rules.calendar.window(s, *t);
                    !self.windows.contains_key(&(s, start)) && self.floor.get(&s).is_some_and(|f| end <= *f)
                })
            })
            .cloned()
            .collect();
        for (t, k) in gone {
            self.posts.remove(&k);
            self.by_time.remove(&(t, k.clone()));
            self.changed_posts.insert(k, None);
        }
        // Deletes of posts never seen: kept for `keep_closed` in case the post
        // comes late (looked at when windows are evicted, which an account that
        // keeps posting does regularly). The posts with a time are the index's,
        // so when it has them all there are none (the common case: no scan).
        if self.posts.len() == self.by_time.len() {
            return;
        }
        let stale: Vec<PostKey> =
            self.posts.iter().filter(|(_, p)| p.t.is_none() && p.touched <= horizon).map(|(k, _)| k.clone()).collect();
        for k in stale {
            self.posts.remove(&k);
            self.changed_posts.insert(k, None);
        }
    }

    /// Early emission of the open windows changed since their last emission.
    pub fn emit_open(&mut self, account: &str, rules: &Rules, buf: &mut Vec<u8>) -> Vec<Arc<str>> {
        let dirty: Vec<(WindowSize, i64)> = self.windows.iter().filter(|(_, w)| !w.closed && w.dirty).map(|(k, _)| *k).collect();
        let mut out = Vec::new();
        for (size, start) in dirty {
            if let Some(w) = self.windows.get_mut(&(size, start)) {
                w.dirty = false;
            }
            out.push(self.record_json(account, size, start, 0, false, rules, buf));
        }
        out
    }

    /// The record of one held window (what `fedistream stats` shows).
    pub fn record(&self, account: &str, size: WindowSize, start: i64, revision: u32, is_final: bool, rules: &Rules) -> StatsRecord {
        let (id, tally) = self.tally(account, size, start, revision, is_final, rules);
        tally.into_record(&id, &rules.calendar, rules.top_k)
    }

    /// The JSON of [`AccountState::record`] (what the processor emits),
    /// written through `buf` without building the record.
    #[allow(clippy::too_many_arguments)]
    pub fn record_json(
        &self,
        account: &str,
        size: WindowSize,
        start: i64,
        revision: u32,
        is_final: bool,
        rules: &Rules,
        buf: &mut Vec<u8>,
    ) -> Arc<str> {
        let (id, tally) = self.tally(account, size, start, revision, is_final, rules);
        buf.clear();
        tally.write_json(&id, &rules.calendar, rules.top_k, buf);
        // (The writer writes UTF-8: strings are copied whole or by serde_json.)
        std::str::from_utf8(buf).unwrap_or_default().into()
    }

    fn tally<'a>(
        &'a self,
        account: &'a str,
        size: WindowSize,
        start: i64,
        revision: u32,
        is_final: bool,
        rules: &Rules,
    ) -> (WindowId<'a>, record::Tally<'a>) {
        let end = self.windows.get(&(size, start)).map(|w| w.end).unwrap_or_else(|| rules.calendar.window(size, start).1);
        let posts = self.by_time.range(from_time(start)..from_time(end)).filter_map(|(_, k)| self.posts.get(k)).map(|p| Counted {
            t: p.t.unwrap_or(start),
            facts: p.facts.as_ref(),
            edits: p.versions.len().saturating_sub(1) as u64,
            deleted: p.deleted,
            observed: p.observed.as_ref(),
        });
        (WindowId { account, size, start, end, revision, is_final }, record::tally(&rules.calendar, posts))
    }

    /// The account's own state entry, exactly as `serde_json::to_string(self)`
    /// writes it, without serde: serde_json escapes every field name at run
    /// time, and this entry, rewritten with every batch that changes the
    /// account, has five per held window.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.raw("{");
        if let Some(newest) = self.newest {
            w.field("\"newest\":", newest);
            w.raw(",");
        }
        if !self.floor.is_empty() {
            w.raw("\"floor\":{");
            for (i, (size, f)) in self.floor.iter().enumerate() {
                w.raw(if i > 0 { ",\"" } else { "\"" });
                w.raw(size.as_str());
                w.field("\":", *f);
            }
            w.raw("},");
        }
        w.raw("\"windows\":[");
        for (i, ((size, start), m)) in self.windows.iter().enumerate() {
            w.raw(if i > 0 { ",[[\"" } else { "[[\"" });
            w.raw(size.as_str());
            w.field("\",", *start);
            w.field("],{\"end\":", m.end);
            w.raw(if m.closed { ",\"closed\":true" } else { ",\"closed\":false" });
            w.field(",\"finals\":", m.finals);
            w.raw(if m.dirty { ",\"dirty\":true" } else { ",\"dirty\":false" });
            w.field(",\"touched\":", m.touched);
            w.raw("}]");
        }
        w.raw("]}");
    }

    /// The held windows, for readers of the state.
    pub fn held_windows(&self) -> impl Iterator<Item = (&(WindowSize, i64), &WindowMeta)> {
        self.windows.iter()
    }
}

/// How one event changed a post's contributions: to the instance (`None`)
/// and to each source, `+1` or `-1`.
fn contribution_changes(counted_before: bool, added_source: Option<&str>, after: &PostEntry) -> Vec<(Option<String>, i64)> {
    let counted_after = after.counted();
    let mut out = Vec::new();
    if counted_after != counted_before {
        out.push((None, if counted_after { 1 } else { -1 }));
    }
    for s in &after.sources {
        let was = counted_before && added_source != Some(s.as_str());
        if was != counted_after {
            out.push((Some(s.clone()), if counted_after { 1 } else { -1 }));
        }
    }
    out
}

/// A map with tuple keys as a JSON list of `[key, value]` pairs.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(m: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::Fingerprint;

    #[test]
    fn fingerprints_keep_their_text_and_order_as_text() {
        let texts = [
            "0000000000000000",
            "00000000000000ff",
            "7fffffffffffffff",
            "8000000000000000",
            "ffffffffffffffff",
            "deleted",
            "ABCDEF0123456789",
            "0123",
            "+123456789abcdef",
        ];
        let fps: Vec<Fingerprint> = texts.iter().map(|t| serde_json::from_str(&format!("\"{t}\"")).unwrap()).collect();
        assert!(matches!(fps[1], Fingerprint::Hex(0xff)));
        assert!(matches!(fps[5], Fingerprint::Text(_)) && matches!(fps[6], Fingerprint::Text(_)) && matches!(fps[8], Fingerprint::Text(_)));
        for (t, fp) in texts.iter().zip(&fps) {
            assert_eq!(fp.to_string(), *t);
            assert_eq!(serde_json::to_string(fp).unwrap(), format!("\"{t}\""));
            let mut out = Vec::new();
            fp.write_json(&mut super::Writer::new(&mut out));
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{t}\""));
        }
        for (a, fa) in texts.iter().zip(&fps) {
            for (b, fb) in texts.iter().zip(&fps) {
                assert_eq!(fa.cmp(fb), a.cmp(b), "{a} {b}");
            }
        }
        let v: u64 = 0x0123_4567_89ab_cdef;
        assert_eq!(Fingerprint::Hex(v).to_string(), format!("{v:016x}"));
    }
}
