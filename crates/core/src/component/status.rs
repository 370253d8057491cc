//! Component status documents: what `fedistream status` (and the HTTP status
//! endpoint) shows for every source, processor and channel. The runtime
//! persists them to the log's `status` namespace every few seconds; the time of
//! that write is the liveness signal a reader of a dead process's rows uses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::log::StatePut;

/// Lifecycle state shown by `fedistream status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusDoc {
    pub component: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumes_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// When the component entered its current `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// When this run of the process started the component: counters count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Parts of the component that are not healthy (a source's accounts), each
    /// with what is wrong; healthy parts are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, String>,
}

/// Shared, cheap status handle; the runtime persists it to the log's `status` namespace.
#[derive(Clone)]
pub struct Status {
    key: String,
    doc: Arc<Mutex<StatusDoc>>,
}

pub const STATUS_NS: &str = "status";

impl Status {
    pub fn new(kind: &str, name: &str) -> Self {
        let now = Utc::now();
        let doc = StatusDoc {
            component: kind.to_string(),
            state: "starting".into(),
            since: Some(now),
            started_at: Some(now),
            updated_at: now,
            ..Default::default()
        };
        Status { key: format!("{kind}:{name}"), doc: Arc::new(Mutex::new(doc)) }
    }
    /// A status kept per process when several share one log: the key becomes
    /// `KIND:NAME@SCOPE` (the scope is the worker name).
    pub fn scoped(kind: &str, name: &str, scope: Option<&str>) -> Self {
        match scope {
            Some(scope) => Status::new(kind, &format!("{name}@{scope}")),
            None => Status::new(kind, name),
        }
    }
    fn with<R>(&self, f: impl FnOnce(&mut StatusDoc) -> R) -> R {
        let mut d = self.doc.lock().unwrap_or_else(|p| p.into_inner());
        d.updated_at = Utc::now();
        f(&mut d)
    }
    pub fn set_state(&self, state: &str, detail: Option<String>) {
        self.with(|d| {
            if d.state != state {
                d.since = Some(d.updated_at);
            }
            d.state = state.to_string();
            d.detail = detail;
        })
    }
    /// The current state.
    pub fn state(&self) -> String {
        self.with(|d| d.state.clone())
    }
    pub fn set_resumes_at(&self, at: Option<DateTime<Utc>>) {
        self.with(|d| d.resumes_at = at)
    }
    pub fn saw_event(&self) {
        self.with(|d| d.last_event_at = Some(Utc::now()))
    }
    /// Add to a named counter (also exported as a `metrics` counter).
    pub fn count(&self, counter: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.with(|d| *d.counters.entry(counter.to_string()).or_default() += n);
    }
    /// Record that `part` (an account of a source) is unhealthy (`Some`: what is
    /// wrong) or healthy again (`None`).
    pub fn set_part(&self, part: &str, problem: Option<String>) {
        self.with(|d| match problem {
            Some(p) => {
                d.parts.insert(part.to_string(), p);
            }
            None => {
                d.parts.remove(part);
            }
        })
    }
    pub fn counter(&self, counter: &str) -> u64 {
        self.with(|d| d.counters.get(counter).copied().unwrap_or(0))
    }
    /// The key under which the runtime stores this status (`source:NAME`,
    /// `channel:NAME@WORKER`, ...).
    pub fn key(&self) -> &str {
        &self.key
    }
    /// Carry over what a previous run knew that this one has not seen yet.
    pub fn seed_from(&self, previous: &StatusDoc) {
        self.with(|d| {
            if d.last_event_at.is_none() {
                d.last_event_at = previous.last_event_at;
            }
        })
    }
    pub fn snapshot(&self) -> StatusDoc {
        self.with(|d| d.clone())
    }
    pub fn to_put(&self) -> StatePut {
        let doc = self.snapshot();
        StatePut::set(STATUS_NS, self.key.clone(), serde_json::to_string(&doc).unwrap_or_default())
    }
}
