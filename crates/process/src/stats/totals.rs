//! Per-instance and per-source totals: posts and active accounts per window,
//! the second stage of the `account_stats` processor.
//!
//! It is fed by the account stage ([`super::account`]), not by the events: each
//! event that changes which posts an account counts in a window yields a
//! [`Delta`] (+1 / −1 posts of that account in that window, for its instance
//! and for each source that delivered the post). A totals window keeps, per
//! account, its counted posts; `posts` is their sum and `accounts` the number
//! of accounts with any. Deltas are set operations on the account stage's
//! per-post facts (redelivery and edits give none, a delete gives −1), so the
//! totals inherit its independence of order and batching.
//!
//! Windows open, close and are held exactly like an account's, on a watermark
//! of their own: the newest event time of the scope (all the instance's
//! accounts, or all the source's posts) minus the allowed lateness. A closed
//! window is emitted with `final = true`; a later change re-emits it with the
//! next revision at once; it is evicted `keep_closed` after the watermark
//! passed its end and its last change, and a change for an evicted window is
//! dropped (counted as `late_dropped`).
//!
//! Scopes are kept per input partition (state keys `t<partition>/…`), like the
//! accounts, so they move with their partition. With one partition (the
//! SQLite log) a record holds the scope's totals; on Kafka each input partition
//! publishes the totals of its accounts (the key ends with `/p<partition>`),
//! and since an account lives in exactly one partition the scope's totals are
//! the sums over partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::account::{due, Delta, QuietBelow, Rules};
use super::window::{rfc3339, WindowSize};

/// What a totals record adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The accounts of one instance (the host of `user@host`).
    Instance,
    /// The posts one configured source delivered.
    Source,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Instance => "instance",
            Scope::Source => "source",
        }
    }
}

/// Totals of one scope in one window. An upsert keyed by `key`, revised like
/// the account records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalsRecord {
    /// First, so a reader of the topic tells the two kinds of record apart.
    pub scope: Scope,
    /// `scope:name/window/start/p<partition>`: the upsert key.
    pub key: String,
    /// The instance's host or the source's name.
    pub name: String,
    /// The input partition whose accounts these are (0 on the SQLite log).
    pub partition: u32,
    pub window: WindowSize,
    pub zone: String,
    pub start: String,
    pub end: String,
    pub revision: u32,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Posts counted in the window (not deleted), summed over the accounts.
    pub posts: u64,
    /// Accounts with at least one counted post in the window.
    pub accounts: u64,
}

/// One scope (instance or source) of one input partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ScopeState {
    /// Newest event time seen (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<i64>,
    /// Per size: windows ending at or before this were evicted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floor: BTreeMap<WindowSize, i64>,
    /// Held windows, stored one state entry each.
    #[serde(skip)]
    pub windows: BTreeMap<(WindowSize, i64), TotalsWindow>,
    /// Windows changed or evicted since the state was last saved.
    #[serde(skip)]
    changed: BTreeSet<(WindowSize, i64)>,
    /// The scope's own entry (newest, floor) changed since it was last saved.
    #[serde(skip)]
    meta_changed: bool,
    /// A watermark below which [`ScopeState::advance`] has no window to close
    /// or evict (as an account's), so most events skip looking at them all.
    #[serde(skip)]
    quiet_below: QuietBelow,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TotalsWindow {
    pub end: i64,
    pub closed: bool,
    pub finals: u32,
    pub dirty: bool,
    pub touched: i64,
    /// Emitted early while open (so it is kept even when it empties again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shown: bool,
    /// Counted posts per account (accounts with none are left out). Hashed
    /// (a source's day holds every account, looked up at every post: an
    /// ordered map compared the names from the start several times per
    /// lookup), written sorted by name (the state entry is what it was with
    /// an ordered map).
    #[serde(serialize_with = "sorted")]
    pub accounts: AccountCounts,
}

/// Counted posts per account.
pub type AccountCounts = HashMap<String, u64, foldhash::fast::RandomState>;

/// `m` as a JSON object with its keys in order.
fn sorted<S: serde::Serializer>(m: &AccountCounts, s: S) -> Result<S::Ok, S::Error> {
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    s.collect_map(v)
}

/// Which scope of which partition.
pub type ScopeKey = (u32, Scope, String);

/// A window's key and, unless it was evicted, its state.
pub type ChangedWindow<'a> = ((WindowSize, i64), Option<&'a TotalsWindow>);

impl ScopeState {
    pub fn watermark(&self, rules: &Rules) -> i64 {
        self.newest.map(|n| n.saturating_sub(rules.lateness_ms)).unwrap_or(i64::MIN)
    }

    /// Apply one account's change; a change to a closed window emits it again.
    /// Returns whether it was dropped (its window evicted).
    pub fn apply(&mut self, key: &ScopeKey, account: &str, d: &Delta, rules: &Rules, out: &mut Vec<TotalsRecord>) -> bool {
        let wm = self.watermark(rules);
        if !self.windows.contains_key(&(d.size, d.start)) && self.floor.get(&d.size).is_some_and(|f| d.end <= *f) {
            return true;
        }
        self.changed.insert((d.size, d.start));
        let w = self.windows.entry((d.size, d.start)).or_insert_with(|| TotalsWindow { end: d.end, ..Default::default() });
        match w.accounts.get_mut(account) {
            Some(n) => {
                *n = n.saturating_add_signed(d.posts);
                if *n == 0 {
                    w.accounts.remove(account);
                }
            }
            None if d.posts > 0 => {
                w.accounts.insert(account.to_string(), d.posts as u64);
            }
            None => {}
        }
        w.touched = wm;
        // (Removing the window below only raises the bound: it stays a lower one.)
        let due = due(w.closed || d.end <= wm, w.end, w.touched, rules.keep_closed_ms);
        self.quiet_below.0 = self.quiet_below.0.map(|q| q.min(due));
        if w.accounts.is_empty() && !w.closed && !w.shown {
            // Emptied before anything was emitted (a post and its delete): as
            // if it had never been, which is what a delete arriving first gives.
            self.windows.remove(&(d.size, d.start));
            return false;
        }
        if d.end <= wm {
            w.closed = true;
            w.dirty = false;
            w.finals += 1;
            let rev = w.finals - 1;
            out.push(record(key, d.size, d.start, w, rev, true, rules));
        } else {
            w.dirty = true;
        }
        false
    }

    /// An event of the scope at `t`: move the watermark, close and evict.
    pub fn advance(&mut self, key: &ScopeKey, t: i64, rules: &Rules, out: &mut Vec<TotalsRecord>) {
        if self.newest.is_some_and(|n| t <= n) {
            return;
        }
        self.newest = Some(t);
        self.meta_changed = true;
        let wm = self.watermark(rules);
        if self.quiet_below.0.is_some_and(|q| wm < q) {
            return;
        }
        for (&(size, start), w) in self.windows.iter_mut().filter(|(_, w)| !w.closed && w.end <= wm) {
            w.closed = true;
            w.dirty = false;
            w.finals += 1;
            self.changed.insert((size, start));
            out.push(record(key, size, start, w, w.finals - 1, true, rules));
        }
        let horizon = wm.saturating_sub(rules.keep_closed_ms);
        let evict: Vec<(WindowSize, i64)> =
            self.windows.iter().filter(|(_, w)| w.closed && w.end <= horizon && w.touched <= horizon).map(|(k, _)| *k).collect();
        for k in evict {
            let w = self.windows.remove(&k).expect("listed above");
            let f = self.floor.entry(k.0).or_insert(w.end);
            *f = (*f).max(w.end);
            self.changed.insert(k);
        }
        let next = self.windows.values().map(|w| due(w.closed, w.end, w.touched, rules.keep_closed_ms)).min().unwrap_or(i64::MAX);
        self.quiet_below = QuietBelow(Some(next));
    }

    /// Early emission of the open windows changed since their last emission.
    pub fn emit_open(&mut self, key: &ScopeKey, rules: &Rules, out: &mut Vec<TotalsRecord>) {
        for (&(size, start), w) in self.windows.iter_mut().filter(|(_, w)| !w.closed && w.dirty) {
            w.dirty = false;
            w.shown = true;
            self.changed.insert((size, start));
            out.push(record(key, size, start, w, 0, false, rules));
        }
    }

    /// The windows (held: set; evicted: `None`) changed since the last call,
    /// and whether the scope's own entry changed.
    pub fn take_changed(&mut self) -> (Vec<ChangedWindow<'_>>, bool) {
        let changed = std::mem::take(&mut self.changed);
        let meta = std::mem::take(&mut self.meta_changed);
        (changed.into_iter().map(|k| (k, self.windows.get(&k))).collect(), meta)
    }

    pub fn is_empty(&self) -> bool {
        self.newest.is_none() && self.windows.is_empty() && self.floor.is_empty()
    }
}

/// The record of one held window (also what `fedistream stats` shows).
pub fn record(
    key: &ScopeKey,
    size: WindowSize,
    start: i64,
    w: &TotalsWindow,
    revision: u32,
    is_final: bool,
    rules: &Rules,
) -> TotalsRecord {
    let (partition, scope, name) = key;
    TotalsRecord {
        scope: *scope,
        key: format!("{}:{name}/{}/{}/p{partition}", scope.as_str(), size.as_str(), rfc3339(start)),
        name: name.clone(),
        partition: *partition,
        window: size,
        zone: rules.calendar.zone.map(|z| z.name().to_string()).unwrap_or_else(|| "UTC".into()),
        start: rfc3339(start),
        end: rfc3339(w.end),
        revision,
        is_final,
        posts: w.accounts.values().sum(),
        accounts: w.accounts.len() as u64,
    }
}

/// State keys: `t<partition>/<scope>/<name>` for a scope's own entry and
/// `t<partition>/<scope>:<size>:<start>/<name>` for a window (the name last,
/// so it may hold any character).
pub fn scope_state_key(key: &ScopeKey) -> String {
    format!("t{}/{}/{}", key.0, key.1.as_str(), key.2)
}

pub fn window_state_key(key: &ScopeKey, size: WindowSize, start: i64) -> String {
    format!("t{}/{}:{}:{start}/{}", key.0, key.1.as_str(), size.as_str(), key.2)
}

/// A totals state key: the scope, and the window for a window's entry.
pub fn parse_state_key(k: &str) -> Option<(ScopeKey, Option<(WindowSize, i64)>)> {
    let (p, rest) = k.strip_prefix('t')?.split_once('/')?;
    let p: u32 = p.parse().ok()?;
    let (head, name) = rest.split_once('/')?;
    let mut parts = head.split(':');
    let scope = match parts.next()? {
        "instance" => Scope::Instance,
        "source" => Scope::Source,
        _ => return None,
    };
    let window = match (parts.next(), parts.next()) {
        (None, _) => None,
        (Some(size), Some(start)) => {
            let size = match size {
                "hour" => WindowSize::Hour,
                "day" => WindowSize::Day,
                "week" => WindowSize::Week,
                _ => return None,
            };
            Some((size, start.parse().ok()?))
        }
        _ => return None,
    };
    Some(((p, scope, name.to_string()), window))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_entry_lists_its_accounts_in_order_as_before() {
        let names = ["zoe@b", "ada@c", "Ada@a", "bob@a", "ada@a"];
        let mut w = TotalsWindow { end: 7, closed: true, finals: 1, touched: 3, ..Default::default() };
        for (i, n) in names.iter().enumerate() {
            w.accounts.insert(n.to_string(), i as u64 + 1);
        }
        // As the entry was when the accounts were an ordered map.
        let written = serde_json::to_string(&w).unwrap();
        assert_eq!(
            written,
            r#"{"end":7,"closed":true,"finals":1,"dirty":false,"touched":3,"accounts":{"Ada@a":3,"ada@a":5,"ada@c":2,"bob@a":4,"zoe@b":1}}"#
        );
        assert_eq!(serde_json::from_str::<TotalsWindow>(&written).unwrap(), w);
    }

    #[test]
    fn state_keys_round_trip_whatever_the_name() {
        let k: ScopeKey = (3, Scope::Source, "odd/name:x".into());
        assert_eq!(parse_state_key(&scope_state_key(&k)), Some((k.clone(), None)));
        assert_eq!(parse_state_key(&window_state_key(&k, WindowSize::Day, -5)), Some((k, Some((WindowSize::Day, -5)))));
        assert_eq!(parse_state_key("0/ada@social.example"), None, "an account's key is not a scope's");
        assert_eq!(parse_state_key("t0/planet/x"), None);
    }
}
