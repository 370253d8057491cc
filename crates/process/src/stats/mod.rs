//! The `account_stats` processor: per-account activity in tumbling windows on
//! event time, computed continuously from the `events` topic and written to the
//! processor's own topic as upsert records ([`record::StatsRecord`]).
//!
//! This module owns the configuration and the [`Processor`] glue: state per
//! account (keyed `<partition>/<account>` in the processor's namespace, so it
//! moves with its input partition; each held post in its own entry
//! `<partition>/<account>/<post URI>`, so a batch writes what it changed, not
//! every post held), loading it in `open`, writing what a batch changed with
//! the batch, and early emission of open windows from the timer. The windowing rules are in [`account`], window arithmetic in
//! [`window`], what is kept per post in [`facts`], what is read of an event
//! (a view of its stored JSON, not the whole event) in [`input`]. The runtime commits the
//! records, the state and the input offset together; everything emitted from
//! `process` depends only on the order of each account's events, never on the
//! clock, batching or restarts.

pub mod account;
pub mod facts;
pub mod input;
mod json;
pub mod record;
pub mod totals;
pub mod window;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fedistream_core::component::{Processor, ProcessorContext, ProcessorOutput, Status};
use fedistream_core::error::{ErrorKind, ProcessorError};
use fedistream_core::event::LogRecord;
use fedistream_core::log::{OutputRecord, StatePut};
use serde::{Deserialize, Serialize};

pub use account::{AccountState, Rules};
pub use record::StatsRecord;
pub use totals::{Scope, TotalsRecord};
pub use window::{Calendar, WindowSize};

use totals::{ScopeKey, ScopeState};

/// A record of the processor's topic: an account's window, or a scope's totals.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicRecord {
    Account(Box<StatsRecord>),
    Totals(TotalsRecord),
}

impl TopicRecord {
    /// Decode a record of the topic. Totals records start with `scope` and
    /// allow no other fields, so an account record fails that at its second field.
    pub fn parse(payload: &str) -> Result<TopicRecord, serde_json::Error> {
        match serde_json::from_str::<TotalsRecord>(payload) {
            Ok(t) => Ok(TopicRecord::Totals(t)),
            Err(_) => serde_json::from_str(payload).map(|r| TopicRecord::Account(Box::new(r))),
        }
    }

    pub fn key(&self) -> &str {
        match self {
            TopicRecord::Account(r) => &r.key,
            TopicRecord::Totals(t) => &t.key,
        }
    }
}

/// `[processors.NAME] type = "account_stats"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountStatsConfig {
    /// Window sizes: `hour`, `day`, `week`.
    #[serde(default = "default_windows")]
    pub windows: Vec<WindowSize>,
    /// IANA time zone for day and week boundaries and the hour/weekday
    /// histograms (hours stay aligned to UTC). Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// How far behind an account's newest post a post may arrive and still fall
    /// in an open window.
    #[serde(default = "default_lateness", with = "fedistream_core::units::duration")]
    pub allowed_lateness: Duration,
    /// How long a closed window stays correctable (re-emitted on a late post,
    /// delete or edit) after the watermark passed it and its last change.
    #[serde(default = "default_keep_closed", with = "fedistream_core::units::duration")]
    pub keep_closed: Duration,
    /// Emit open windows that changed, this often (`final = false`). Off by default.
    #[serde(default, with = "fedistream_core::units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub emit_open_every: Option<Duration>,
    /// How many tags, mentions, boosted accounts and link domains a record lists.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_windows() -> Vec<WindowSize> {
    vec![WindowSize::Hour, WindowSize::Day]
}
fn default_lateness() -> Duration {
    Duration::from_secs(3600)
}
fn default_keep_closed() -> Duration {
    Duration::from_secs(86_400)
}
fn default_top_k() -> usize {
    10
}

impl Default for AccountStatsConfig {
    fn default() -> Self {
        AccountStatsConfig {
            windows: default_windows(),
            zone: None,
            allowed_lateness: default_lateness(),
            keep_closed: default_keep_closed(),
            emit_open_every: None,
            top_k: default_top_k(),
        }
    }
}

impl AccountStatsConfig {
    /// Problems as (key under the processor, reason).
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if self.windows.is_empty() {
            errs.push(("windows", "at least one of \"hour\", \"day\", \"week\"".to_string()));
        }
        let distinct: BTreeSet<_> = self.windows.iter().collect();
        if distinct.len() != self.windows.len() {
            errs.push(("windows", "a window size is listed twice".to_string()));
        }
        if let Some(z) = &self.zone {
            if let Err(e) = z.parse::<chrono_tz::Tz>() {
                errs.push(("zone", format!("`{z}` is not an IANA time zone name (like \"Europe/Berlin\"): {e}")));
            }
        }
        if self.allowed_lateness > Duration::from_secs(366 * 86_400) {
            errs.push(("allowed_lateness", "at most a year (windows stay open that long)".to_string()));
        }
        if self.keep_closed > Duration::from_secs(366 * 86_400) {
            errs.push(("keep_closed", "at most a year (closed windows are held that long)".to_string()));
        }
        if self.emit_open_every.is_some_and(|d| d < Duration::from_millis(10)) {
            errs.push(("emit_open_every", "at least 10ms".to_string()));
        }
        if !(1..=1000).contains(&self.top_k) {
            errs.push(("top_k", "between 1 and 1000".to_string()));
        }
        errs
    }

    pub fn rules(&self) -> Result<Rules, String> {
        let zone = match &self.zone {
            Some(z) => Some(z.parse::<chrono_tz::Tz>().map_err(|e| format!("zone `{z}`: {e}"))?),
            None => None,
        };
        let mut sizes = self.windows.clone();
        sizes.sort();
        sizes.dedup();
        Ok(Rules {
            sizes,
            calendar: Calendar { zone },
            lateness_ms: self.allowed_lateness.as_millis().min(i64::MAX as u128) as i64,
            keep_closed_ms: self.keep_closed.as_millis().min(i64::MAX as u128) as i64,
            top_k: self.top_k,
        })
    }
}

/// The processor. Its output topic is `output` (the pipeline names it after the processor).
pub struct AccountStatsProcessor {
    rules: Rules,
    emit_open_every: Option<Duration>,
    output: String,
    ns: String,
    /// Per input partition, the accounts by name. Hashed (every event looks
    /// its account up; a tree compared names sharing their first bytes ~10
    /// times); the timer visits them in name order.
    accounts: BTreeMap<u32, HashMap<String, AccountState, foldhash::fast::RandomState>>,
    totals: BTreeMap<ScopeKey, ScopeState>,
    status: Option<Status>,
    /// The event's own two scopes (instance, source), reused from event to
    /// event so looking them up allocates nothing.
    own: [ScopeKey; 2],
    /// Where records and state values are serialised before they are copied
    /// out at their exact size.
    buf: Vec<u8>,
}

/// `v` as JSON through `buf` (one allocation of the exact size for the result).
fn to_json<'b, T: Serialize + ?Sized>(buf: &'b mut Vec<u8>, v: &T) -> &'b str {
    buf.clear();
    // Serialising plain data with string keys cannot fail, and serde_json writes UTF-8.
    let _ = serde_json::to_writer(&mut *buf, v);
    std::str::from_utf8(buf).unwrap_or_default()
}

/// `s` lower-cased, borrowed when it already is (account names mostly are).
fn lowercase(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.to_lowercase())
    }
}

/// The state namespace of the processor called `name`.
pub fn state_namespace(name: &str) -> String {
    format!("proc:{name}")
}

/// Split a state key `<partition>/<account>[/<post URI>]`.
pub fn parse_state_key(k: &str) -> Option<(u32, &str, Option<&str>)> {
    let (p, rest) = k.split_once('/')?;
    let p = p.parse().ok()?;
    Some(match rest.split_once('/') {
        Some((a, uri)) => (p, a, Some(uri)),
        None => (p, rest, None),
    })
}

/// The accounts' states from the entries of a processor's namespace `ns`
/// (those of `partitions`; all with `None`): per account, one entry with its
/// windows and watermark and one per held post.
pub fn load_states(
    ns: &str,
    entries: Vec<(String, String)>,
    partitions: Option<&[u32]>,
) -> Result<BTreeMap<(u32, String), AccountState>, String> {
    let mut accounts: BTreeMap<(u32, String), AccountState> = BTreeMap::new();
    let mut posts: Vec<((u32, String), String, account::PostEntry)> = Vec::new();
    for (k, v) in entries {
        let Some((p, account, uri)) = parse_state_key(&k) else {
            continue;
        };
        if partitions.is_some_and(|ps| !ps.contains(&p)) {
            continue;
        }
        let bad = |e: serde_json::Error| format!("state {ns}/{k} is not account statistics: {e}");
        match uri {
            None => {
                let st: AccountState = serde_json::from_str(&v).map_err(bad)?;
                let posts = std::mem::take(&mut accounts.entry((p, account.to_string())).or_default().posts);
                let slot = accounts.entry((p, account.to_string())).or_default();
                *slot = st;
                slot.posts = posts;
            }
            Some(uri) => posts.push(((p, account.to_string()), uri.to_string(), serde_json::from_str(&v).map_err(bad)?)),
        }
    }
    for (key, uri, post) in posts {
        accounts.entry(key).or_default().posts.insert(uri.into(), Box::new(post));
    }
    for st in accounts.values_mut() {
        st.reindex();
    }
    Ok(accounts)
}

/// The per-instance and per-source totals from the entries of a processor's
/// namespace `ns` (those of `partitions`; all with `None`).
pub fn load_totals(ns: &str, entries: &[(String, String)], partitions: Option<&[u32]>) -> Result<BTreeMap<ScopeKey, ScopeState>, String> {
    let mut scopes: BTreeMap<ScopeKey, ScopeState> = BTreeMap::new();
    for (k, v) in entries {
        let Some((key, window)) = totals::parse_state_key(k) else {
            continue;
        };
        if partitions.is_some_and(|ps| !ps.contains(&key.0)) {
            continue;
        }
        let bad = |e: serde_json::Error| format!("state {ns}/{k} is not statistics totals: {e}");
        match window {
            None => {
                let st: ScopeState = serde_json::from_str(v).map_err(bad)?;
                let slot = scopes.entry(key).or_default();
                slot.newest = st.newest;
                slot.floor = st.floor;
            }
            Some(w) => {
                scopes.entry(key).or_default().windows.insert(w, serde_json::from_str(v).map_err(bad)?);
            }
        }
    }
    Ok(scopes)
}

impl AccountStatsProcessor {
    pub fn new(name: &str, cfg: &AccountStatsConfig, output: &str) -> Result<Self, String> {
        Ok(AccountStatsProcessor {
            rules: cfg.rules()?,
            emit_open_every: cfg.emit_open_every,
            output: output.to_string(),
            ns: state_namespace(name),
            accounts: BTreeMap::new(),
            totals: BTreeMap::new(),
            status: None,
            own: [(0, Scope::Instance, String::new()), (0, Scope::Source, String::new())],
            buf: Vec::with_capacity(4096),
        })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The state of one account (tests and tools).
    pub fn account(&self, partition: u32, account: &str) -> Option<&AccountState> {
        self.accounts.get(&partition)?.get(account)
    }

    /// Replace the in-memory state by `entries` of the processor's namespace
    /// (those of `partitions`; all with `None`).
    pub fn load(&mut self, entries: Vec<(String, String)>, partitions: Option<&[u32]>) -> Result<(), ProcessorError> {
        let internal = |e| ProcessorError::new(ErrorKind::Internal, e);
        self.totals = load_totals(&self.ns, &entries, partitions).map_err(internal)?;
        self.accounts = BTreeMap::new();
        for ((p, account), st) in load_states(&self.ns, entries, partitions).map_err(internal)? {
            self.accounts.entry(p).or_default().insert(account, st);
        }
        Ok(())
    }

    /// The totals of one scope (tests and tools).
    pub fn scope(&self, partition: u32, scope: Scope, name: &str) -> Option<&ScopeState> {
        self.totals.get(&(partition, scope, name.to_string()))
    }

    fn push_totals(output: &str, buf: &mut Vec<u8>, out: &mut ProcessorOutput, recs: Vec<TotalsRecord>) {
        for rec in recs {
            let payload = to_json(buf, &rec).into();
            out.records.push(OutputRecord { topic: output.to_string(), key: rec.key, payload });
        }
    }

    /// Feed the totals stage with what one event did to an account: its deltas,
    /// then the event's time to the scopes it belongs to.
    fn apply_totals(
        &mut self,
        partition: u32,
        account: &str,
        ev: &input::Input,
        deltas: &[account::Delta],
        touched: &mut BTreeSet<ScopeKey>,
        recs: &mut Vec<TotalsRecord>,
    ) -> u64 {
        let mut dropped = 0;
        let t = match &ev.post {
            Some(p) if ev.kind != fedistream_core::event::EventKind::Deleted => {
                Some(p.created_at.unwrap_or(ev.observed_at).timestamp_millis())
            }
            _ => None,
        };
        if deltas.is_empty() && t.is_none() {
            return dropped;
        }
        let instance = account.rsplit_once('@').map_or(account, |(_, host)| host);
        // The event's two scopes, keyed once; a delta names one of them (or,
        // for a post delivered by several sources, another source).
        let mut own = std::mem::replace(&mut self.own, [(0, Scope::Instance, String::new()), (0, Scope::Source, String::new())]);
        for (key, name) in own.iter_mut().zip([instance, &ev.source]) {
            key.0 = partition;
            key.2.clear();
            key.2.push_str(name);
        }
        for d in deltas {
            let other;
            let key = match &d.source {
                None => &own[0],
                Some(s) if **s == *ev.source => &own[1],
                Some(s) => {
                    other = (partition, Scope::Source, s.clone());
                    &other
                }
            };
            let st = match self.totals.get_mut(key) {
                Some(st) => st,
                None => self.totals.entry(key.clone()).or_default(),
            };
            dropped += st.apply(key, account, d, &self.rules, recs) as u64;
            if !touched.contains(key) {
                touched.insert(key.clone());
            }
        }
        if let Some(t) = t {
            for key in &own {
                let st = match self.totals.get_mut(key) {
                    Some(st) => st,
                    None => self.totals.entry(key.clone()).or_default(),
                };
                st.advance(key, t, &self.rules, recs);
                if !touched.contains(key) {
                    touched.insert(key.clone());
                }
            }
        }
        self.own = own;
        dropped
    }

    /// The state changes of one scope: its own entry and the windows it changed.
    fn save_totals(&mut self, out: &mut ProcessorOutput, key: &ScopeKey) {
        let Some(st) = self.totals.get_mut(key) else { return };
        let (windows, meta) = st.take_changed();
        for ((size, start), w) in windows {
            let k = totals::window_state_key(key, size, start);
            match w {
                Some(w) => out.state.push(StatePut::set(&self.ns, k, to_json(&mut self.buf, w)).of_partition(key.0)),
                None => out.state.push(StatePut::delete(&self.ns, k).of_partition(key.0)),
            }
        }
        if meta {
            let k = totals::scope_state_key(key);
            if st.is_empty() {
                out.state.push(StatePut::delete(&self.ns, k).of_partition(key.0));
            } else {
                out.state.push(StatePut::set(&self.ns, k, to_json(&mut self.buf, st)).of_partition(key.0));
            }
        }
    }

    /// The state changes of one account: its windows and watermark in one
    /// entry, and each post it changed (set) or dropped (deleted) in its own.
    fn save(&mut self, out: &mut ProcessorOutput, partition: u32, account: &str) {
        let k = format!("{partition}/{account}");
        let Some(st) = self.accounts.get_mut(&partition).and_then(|m| m.get_mut(account)) else {
            out.state.push(StatePut::delete(&self.ns, k).of_partition(partition));
            return;
        };
        for (uri, entry) in st.take_changed_posts() {
            let mut pk = String::with_capacity(k.len() + 1 + uri.len());
            pk.push_str(&k);
            pk.push('/');
            pk.push_str(&uri);
            match entry {
                Some(json) => {
                    debug_assert_eq!(
                        Some(&json),
                        st.posts.get(&*uri).map(|p| p.to_json()).as_ref(),
                        "the entry written when it changed is current"
                    );
                    out.state.push(StatePut::set(&self.ns, pk, json).of_partition(partition))
                }
                None => out.state.push(StatePut::delete(&self.ns, pk).of_partition(partition)),
            }
        }
        if st.is_empty() {
            out.state.push(StatePut::delete(&self.ns, k).of_partition(partition));
        } else {
            self.buf.clear();
            st.write_json(&mut self.buf);
            out.state.push(StatePut::set(&self.ns, k, std::str::from_utf8(&self.buf).unwrap_or_default()).of_partition(partition));
        }
    }

    fn count(&self, counter: &str, n: u64) {
        if let (Some(s), true) = (&self.status, n > 0) {
            s.count(counter, n);
        }
    }
}

#[async_trait]
impl Processor for AccountStatsProcessor {
    async fn open(&mut self, ctx: &ProcessorContext, partitions: Option<&[u32]>) -> Result<(), ProcessorError> {
        self.status = Some(ctx.status.clone());
        let entries = ctx.log.state_scan(&self.ns).await?;
        self.load(entries, partitions)
    }

    fn process(&mut self, batch: &[LogRecord], out: &mut ProcessorOutput) -> Result<(), ProcessorError> {
        // Accounts changed, per partition.
        let mut touched: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        let mut scopes = BTreeSet::new();
        let mut dropped = 0;
        let mut totals = Vec::new();
        for r in batch {
            let ev = match input::Input::parse(&r.payload) {
                Ok(ev) => ev,
                Err(e) => {
                    let e = fedistream_core::error::LogError::Corrupt { offset: r.position.offset, reason: e.to_string() };
                    out.rejected.push((r.position, e.to_string()));
                    continue;
                }
            };
            let ev = &ev;
            let account = lowercase(&ev.account);
            let partition = r.position.partition;
            let accounts = self.accounts.entry(partition).or_default();
            let st = match accounts.get_mut(&*account) {
                Some(st) => st,
                None => accounts.entry(account.to_string()).or_default(),
            };
            let applied = st.apply(&account, ev, &self.rules, &mut self.buf);
            dropped += applied.late_dropped;
            for payload in applied.records {
                out.records.push(OutputRecord { topic: self.output.clone(), key: account.to_string(), payload });
            }
            dropped += self.apply_totals(partition, &account, ev, &applied.deltas, &mut scopes, &mut totals);
            Self::push_totals(&self.output, &mut self.buf, out, std::mem::take(&mut totals));
            if applied.changed {
                let t = touched.entry(partition).or_default();
                if !t.contains(&*account) {
                    t.insert(account.into_owned());
                }
            }
        }
        for (partition, accounts) in &touched {
            for account in accounts {
                self.save(out, *partition, account);
            }
        }
        for key in &scopes {
            self.save_totals(out, key);
        }
        self.count("late_dropped", dropped);
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.emit_open_every
    }

    fn tick(&mut self, _now: DateTime<Utc>, out: &mut ProcessorOutput) -> Result<(), ProcessorError> {
        if self.emit_open_every.is_none() {
            return Ok(());
        }
        let mut touched = Vec::new();
        let rules = self.rules.clone();
        for (partition, accounts) in self.accounts.iter_mut() {
            let mut in_order: Vec<(&String, &mut AccountState)> = accounts.iter_mut().collect();
            in_order.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (account, st) in in_order {
                let recs = st.emit_open(account, &rules, &mut self.buf);
                if !recs.is_empty() {
                    touched.push((*partition, account.clone(), recs));
                }
            }
        }
        for (partition, account, recs) in touched {
            for payload in recs {
                out.records.push(OutputRecord { topic: self.output.clone(), key: account.clone(), payload });
            }
            self.save(out, partition, &account);
        }
        let keys: Vec<ScopeKey> = self.totals.keys().cloned().collect();
        for key in keys {
            let mut recs = Vec::new();
            if let Some(st) = self.totals.get_mut(&key) {
                st.emit_open(&key, &rules, &mut recs);
            }
            if !recs.is_empty() {
                Self::push_totals(&self.output, &mut self.buf, out, recs);
                self.save_totals(out, &key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
