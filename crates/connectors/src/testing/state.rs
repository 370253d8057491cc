//! The fake server's state: accounts, statuses, id generation, injected faults,
//! the request log and the broadcast channel every open stream listens to.
//!
//! All of it sits behind `std::sync::Mutex`es so tests can drive the server with
//! plain method calls; no lock is held across an `.await`. Rendering to JSON lives
//! in `json.rs`, HTTP in `rest.rs`, `streaming.rs` and `ws.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch, Notify};

use super::json;
use super::ledger::Ledger;
use super::types::{AccountOpts, FakeConfig, Flavor, RecordedRequest};

/// Locks a mutex, recovering the data if a panicking test thread poisoned it:
/// the state stays consistent because no update here panics halfway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Orders ids the way Mastodon's guidelines say to: by length, then lexically.
/// Works for numeric snowflakes and ULIDs alike.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct IdKey(usize, String);

impl IdKey {
    pub(crate) fn new(id: &str) -> Self {
        IdKey(id.len(), id.to_owned())
    }
}

pub(crate) struct Account {
    pub id: String,
    pub username: String,
    pub opts: AccountOpts,
    pub created_at: DateTime<Utc>,
}

pub(crate) struct Media {
    pub id: String,
    pub kind: String,
    pub description: Option<String>,
}

pub(crate) struct Status {
    pub id: String,
    pub account_id: String,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub content: String,
    pub visibility: String,
    pub spoiler_text: String,
    pub sensitive: bool,
    pub language: Option<String>,
    pub in_reply_to_id: Option<String>,
    pub in_reply_to_account_id: Option<String>,
    pub reblog_of: Option<String>,
    pub media: Vec<Media>,
    pub tags: Vec<String>,
    pub replies_count: u64,
    pub reblogs_count: u64,
    /// By a remote account ([`super::AccountOpts::domain`]).
    pub remote: bool,
    pub favourites_count: u64,
}

impl Status {
    /// Whether an anonymous caller may read it over REST.
    pub fn anonymous_visible(&self) -> bool {
        matches!(self.visibility.as_str(), "public" | "unlisted")
    }

    /// Whether the reader (who follows everyone) may read it.
    pub fn reader_visible(&self) -> bool {
        self.visibility != "direct"
    }
}

/// Issues increasing ids: Mastodon snowflakes (`ms << 16 | seq`) or ULIDs.
pub(crate) enum IdGen {
    Snowflake { last: u64 },
    Ulid(ulid::Generator),
}

impl IdGen {
    pub(crate) fn next(&mut self, now: DateTime<Utc>) -> String {
        match self {
            IdGen::Snowflake { last } => {
                let ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
                let candidate = ms << 16;
                *last = if candidate > *last { candidate } else { *last + 1 };
                last.to_string()
            }
            IdGen::Ulid(generator) => generator
                .generate_from_datetime(now.into())
                // Overflow needs 2^80 ids in one millisecond; a fresh ULID is still unique.
                .unwrap_or_else(|_| ulid::Ulid::new())
                .to_string(),
        }
    }
}

pub(crate) struct Store {
    pub(crate) ids: IdGen,
    pub accounts: HashMap<String, Account>,
    pub by_name: HashMap<String, String>,
    pub statuses: BTreeMap<IdKey, Status>,
    /// Status ids per account, so profile pages do not scan every status.
    by_account: HashMap<String, BTreeSet<IdKey>>,
}

impl Store {
    pub(crate) fn insert(&mut self, status: Status) {
        let key = IdKey::new(&status.id);
        self.by_account.entry(status.account_id.clone()).or_default().insert(key.clone());
        self.statuses.insert(key, status);
    }

    pub(crate) fn remove(&mut self, key: &IdKey) -> Option<Status> {
        let status = self.statuses.remove(key)?;
        if let Some(ids) = self.by_account.get_mut(&status.account_id) {
            ids.remove(key);
        }
        Some(status)
    }

    pub fn account_id(&self, username: &str) -> Option<String> {
        self.by_name.get(username).cloned()
    }

    pub fn status(&self, id: &str) -> Option<&Status> {
        self.statuses.get(&IdKey::new(id))
    }

    /// Statuses of an account, newest first.
    pub fn statuses_by<'a>(&'a self, account_id: &str) -> impl Iterator<Item = &'a Status> + 'a {
        self.by_account.get(account_id).into_iter().flat_map(|ids| ids.iter().rev()).filter_map(|key| self.statuses.get(key))
    }

    pub fn statuses_count(&self, account_id: &str) -> usize {
        self.by_account.get(account_id).map_or(0, BTreeSet::len)
    }

    pub fn last_status_at(&self, account_id: &str) -> Option<DateTime<Utc>> {
        self.statuses_by(account_id).next().map(|s| s.created_at)
    }
}

#[derive(Default)]
pub(crate) struct Faults {
    pub throttle_until: Option<DateTime<Utc>>,
    pub fail_status: u16,
    pub fail_count: usize,
    pub revoked: bool,
    /// Answers for the next requests whose path contains a string.
    pub targeted: Vec<Targeted>,
    /// Restarting: every request gets 503 with this `Retry-After` (seconds).
    pub restarting: Option<u64>,
    /// WebSocket upgrades are refused with this status (a proxy in front).
    pub refuse_websocket: Option<u16>,
}

/// A canned answer for requests whose path contains `path`, `left` more times.
pub(crate) struct Targeted {
    pub path: String,
    pub answer: Canned,
    pub left: usize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Canned {
    /// This status with a small JSON error body.
    Status(u16),
    /// `200 OK` whose body is an HTML error page (a proxy's), not the JSON asked for.
    HtmlOk,
    /// `200 OK` with an empty JSON array, whatever was asked.
    EmptyList,
}

impl Faults {
    /// Takes the canned answer for `path`, if one is due.
    pub fn take_targeted(&mut self, path: &str) -> Option<Canned> {
        let i = self.targeted.iter().position(|t| t.left > 0 && path.contains(t.path.as_str()))?;
        let t = &mut self.targeted[i];
        t.left -= 1;
        let answer = t.answer;
        if t.left == 0 {
            self.targeted.remove(i);
        }
        Some(answer)
    }
}

/// What `user`, `list`, `public` or `hashtag` subscriptions an event reaches.
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    /// Reaches public timelines: public, not a boost, not a reply to someone else.
    pub public: bool,
    /// Reaches hashtag timelines (with a tag it has): public and not a boost,
    /// replies included.
    pub tagged: bool,
    /// Lower-cased tags, for hashtag streams.
    pub tags: Vec<String>,
    /// Deletes reach every subscription.
    pub everywhere: bool,
    /// By a local account (remote ones reach `public:remote`, not `public:local`).
    pub local: bool,
    pub account_id: String,
    /// Filled in at broadcast: each known list and whether the author is a member.
    pub lists: Vec<(String, bool)>,
    /// Filled in at broadcast: the `timelines_access` halves that are disabled.
    pub disabled: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) enum StreamMsg {
    Event { event: &'static str, payload: String, scope: Scope },
    Raw(String),
}

/// How many requests `requests()` remembers (the oldest are forgotten first).
pub(crate) const REQUEST_LOG_CAP: usize = 100_000;

/// Shared by the handle and every handler.
pub(crate) struct Shared {
    pub cfg: FakeConfig,
    pub host: String,
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    pub limiter: Mutex<HashMap<String, (i64, u32)>>,
    requests: Mutex<VecDeque<RecordedRequest>>,
    /// Token → username, for accounts that write (`add_token`).
    pub tokens: Mutex<HashMap<String, String>>,
    pub ledger: Mutex<Ledger>,
    pub events: broadcast::Sender<StreamMsg>,
    /// Bumped to close every open stream (drop_streams, revoke_token).
    pub kill: watch::Sender<u64>,
    /// Bumped to cut every open stream as a dying process does: no close
    /// frame, no end of the SSE body (set_restarting).
    pub crash: watch::Sender<u64>,
    pub heartbeats: AtomicBool,
    pub paused: AtomicBool,
    pub connects: watch::Sender<usize>,
    pub open: AtomicUsize,
    pub open_changed: Notify,
    /// `127.0.0.1:PORT` of the separate streaming listener, once bound.
    pub streaming_addr: std::sync::OnceLock<String>,
    /// Lists of the reader: id → member account ids (`timelines.rs`).
    pub lists: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Who may read the public feeds (`timelines.rs`).
    pub feeds: Mutex<super::timelines::FeedSettings>,
}

impl Shared {
    pub fn new(cfg: FakeConfig, host: String) -> Self {
        let ids = match cfg.flavor {
            Flavor::Mastodon => IdGen::Snowflake { last: 0 },
            Flavor::GoToSocial => IdGen::Ulid(ulid::Generator::new()),
        };
        Shared {
            cfg,
            host,
            store: Mutex::new(Store {
                ids,
                accounts: HashMap::new(),
                by_name: HashMap::new(),
                statuses: BTreeMap::new(),
                by_account: HashMap::new(),
            }),
            faults: Mutex::new(Faults::default()),
            limiter: Mutex::new(HashMap::new()),
            requests: Mutex::new(VecDeque::new()),
            tokens: Mutex::new(HashMap::new()),
            ledger: Mutex::new(Ledger::default()),
            events: broadcast::channel(4096).0,
            kill: watch::channel(0).0,
            crash: watch::channel(0).0,
            heartbeats: AtomicBool::new(true),
            paused: AtomicBool::new(false),
            connects: watch::channel(0).0,
            open: AtomicUsize::new(0),
            open_changed: Notify::new(),
            streaming_addr: std::sync::OnceLock::new(),
            lists: Mutex::new(BTreeMap::new()),
            feeds: Mutex::new(Default::default()),
        }
    }

    /// What the server calls itself: the configured domain, else its address.
    pub fn domain(&self) -> &str {
        self.cfg.domain.as_deref().unwrap_or(&self.host)
    }

    /// The streaming base the instance endpoints advertise.
    pub fn advertised_streaming(&self) -> String {
        match (self.streaming_addr.get(), &self.cfg.domain) {
            (Some(addr), _) => format!("ws://{addr}"),
            (None, Some(domain)) => format!("wss://{domain}"),
            (None, None) => format!("ws://{}", self.host),
        }
    }

    /// `http://` base of the separate streaming listener (the main one without it).
    pub fn streaming_http_base(&self) -> String {
        format!("http://{}", self.streaming_addr.get().unwrap_or(&self.host))
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    pub fn requests(&self) -> MutexGuard<'_, VecDeque<RecordedRequest>> {
        lock(&self.requests)
    }

    pub fn kill_streams(&self) {
        self.kill.send_modify(|generation| *generation += 1);
    }

    pub fn crash_streams(&self) {
        self.crash.send_modify(|generation| *generation += 1);
    }

    pub(crate) fn broadcast(&self, event: &'static str, payload: String, mut scope: Scope) {
        if self.paused.load(Ordering::SeqCst) {
            return;
        }
        // Lock order: the store (held by callers), then lists, then feeds.
        scope.lists = lock(&self.lists).iter().map(|(id, members)| (id.clone(), members.contains(&scope.account_id))).collect();
        scope.disabled = lock(&self.feeds).disabled();
        // An error only means no stream is open.
        let _ = self.events.send(StreamMsg::Event { event, payload, scope });
    }

    pub fn add_account(&self, username: &str, opts: AccountOpts) -> String {
        let mut store = self.store();
        if let Some(id) = store.account_id(username) {
            return id;
        }
        let now = Utc::now();
        let id = store.ids.next(now);
        // Mastodon rounds account creation to midnight (3.4+); GtS keeps the time.
        let created_at = match self.cfg.flavor {
            Flavor::Mastodon => now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc(),
            Flavor::GoToSocial => json::truncate_millis(now),
        };
        store.by_name.insert(username.to_owned(), id.clone());
        store.accounts.insert(id.clone(), Account { id: id.clone(), username: username.to_owned(), opts, created_at });
        id
    }

    pub fn record(&self, req: RecordedRequest) {
        let mut log = self.requests();
        // Bounded so a long-running benchmark server does not grow without end.
        if log.len() == REQUEST_LOG_CAP {
            log.pop_front();
        }
        log.push_back(req);
    }
}

/// Counts an open stream while alive; dropped when the connection ends.
pub(crate) struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    pub fn new(shared: Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::SeqCst);
        shared.connects.send_modify(|n| *n += 1);
        shared.open_changed.notify_waiters();
        OpenGuard(shared)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.open_changed.notify_waiters();
    }
}
