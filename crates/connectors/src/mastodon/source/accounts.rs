//! The followed accounts: their clients, checkpoints and schedules, what their
//! last catch-up said (their health, shown per account in `fedistream status`
//! when it is not good), and how long each kind of failure waits.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fedistream_core::backoff::Backoff;
use fedistream_core::{ErrorKind, Log, SourceError, Status};
use tokio::time::Instant;
use tracing::{error, warn};

use super::catchup::JobError;
use super::config::{parse_acct, parse_base_url, MastodonSourceConfig};
use super::convert::{checkpoint_key, CHECKPOINT_NS};
use super::rounds::Slot;
use crate::mastodon::client::{ClientConfig, MastodonClient, MastodonError, Secret, USER_AGENT};
use crate::mastodon::ratelimit::RateLimiters;
use crate::mastodon::source::ReaderConnection;

/// Consecutive undecodable answers before an account counts as failing.
const DECODE_FAILURES_TOLERATED: u32 = 3;
/// Shortest wait before asking again about an account that cannot be read
/// (not found, token needed): the operator has to act, asking often won't help.
const UNREADABLE_RETRY: Duration = Duration::from_secs(3600);

/// Why an account is not being read normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Cannot be read until the operator acts (not found, token needed, wrong
    /// address); retried on a long interval.
    Unreadable(String),
    /// Waiting for the server (429, 503) until then.
    Waiting {
        until: DateTime<Utc>,
        why: String,
    },
    /// Failing, retried with backoff.
    Failing(String),
}

impl Health {
    fn shown(&self) -> Option<String> {
        match self {
            Health::Ok => None,
            Health::Unreadable(why) => Some(why.clone()),
            Health::Waiting { until, why } => Some(format!("waiting until {} ({why})", until.format("%H:%M:%S UTC"))),
            Health::Failing(why) => Some(format!("failing: {why}")),
        }
    }
}

/// Schedule and state of one followed account.
pub struct Account {
    pub acct: String,
    pub username: String,
    pub client: MastodonClient,
    pub account_id: Option<String>,
    pub checkpoint_key: String,
    pub checkpoint: Option<String>,
    pub interval: Duration,
    pub due: Instant,
    pub safety_due: Instant,
    pub running: bool,
    pub rerun: bool,
    pub backoff: Backoff,
    pub reconcile: Slot,
    /// The engagement refresh's schedule (used when it is on).
    pub refresh: Slot,
    pub health: Health,
    /// A catch-up has ended (either way) at least once.
    pub tried: bool,
    decode_failures: u32,
}

/// The accounts, plus what the converter needs to know about their servers.
pub struct Setup {
    pub accounts: Vec<Account>,
    pub followed: HashSet<String>,
    /// Address → server name, where an `instance` override makes them differ.
    pub names: HashMap<String, String>,
    /// The ingest unit of each account.
    pub owners: super::Owners,
}

pub fn client_for(limiters: &RateLimiters, base: url::Url, token: Option<Secret>) -> Result<MastodonClient, SourceError> {
    MastodonClient::new(
        ClientConfig { base_url: base, token, user_agent: USER_AGENT.to_string(), timeout: Duration::from_secs(30) },
        limiters,
    )
    .map_err(|e| SourceError::new(ErrorKind::Config, e.to_string()))
}

/// Build the followed accounts: their home-server clients (the override's
/// address when set; the reader's client on the reader's server) and durable
/// checkpoints.
pub async fn setup(
    cfg: &MastodonSourceConfig,
    source: &str,
    log: &dyn Log,
    limiters: &RateLimiters,
    reader: Option<(&ReaderConnection, &MastodonClient)>,
) -> Result<Setup, SourceError> {
    let config = |e: String| SourceError::new(ErrorKind::Config, e);
    let override_base = cfg.instance.as_deref().map(parse_base_url).transpose().map_err(config)?;
    let mut accounts = Vec::new();
    let mut followed = HashSet::new();
    let mut names = HashMap::new();
    let mut owners = super::Owners::default();
    let mut clients: HashMap<String, MastodonClient> = HashMap::new();
    let now = Instant::now();
    for raw in &cfg.accounts {
        let (user, host) = parse_acct(raw).map_err(config)?;
        let acct = format!("{user}@{host}").to_ascii_lowercase();
        if !followed.insert(acct.clone()) {
            continue;
        }
        let base = match &override_base {
            Some(b) => b.clone(),
            None => parse_base_url(&format!("https://{host}")).map_err(config)?,
        };
        // The reader's token also serves REST on its own server (higher limits,
        // limited-federation servers); elsewhere we read anonymously. One
        // client (connection pool, TLS setup) per server, not per account.
        let client = match reader {
            Some((r, rc)) if r.base_url.host_str() == base.host_str() && r.base_url.port() == base.port() => rc.clone(),
            _ => match clients.get(base.as_str()) {
                Some(c) => c.clone(),
                None => {
                    let c = client_for(limiters, base.clone(), None)?;
                    clients.insert(base.to_string(), c.clone());
                    c
                }
            },
        };
        // Reached through an override, the server is still called by its name.
        if override_base.is_some() && !host.eq_ignore_ascii_case(&client.host()) {
            names.entry(client.host()).or_insert_with(|| host.clone());
        }
        let key = checkpoint_key(source, &client.host(), &acct);
        let unit: std::sync::Arc<str> = super::account_unit(source, raw).into();
        owners.by_account.insert(acct.clone(), unit.clone());
        owners.by_account.insert(key.clone(), unit);
        let checkpoint = log.state_get(CHECKPOINT_NS, &key).await?;
        accounts.push(Account {
            acct,
            username: user,
            client,
            account_id: None,
            checkpoint_key: key,
            checkpoint,
            interval: cfg.poll_interval,
            due: now,
            safety_due: now + cfg.safety_interval,
            running: false,
            rerun: false,
            backoff: Backoff::new(Duration::from_secs(2), cfg.max_poll_interval),
            reconcile: Slot::new(now),
            refresh: Slot::new(now),
            health: Health::Ok,
            tried: false,
            decode_failures: 0,
        });
    }
    if accounts.is_empty() {
        return Err(config("no accounts to follow".into()));
    }
    Ok(Setup { accounts, followed, names, owners })
}

impl Account {
    /// A catch-up succeeded.
    pub fn succeeded(&mut self, status: &Status) {
        self.tried = true;
        self.backoff.reset();
        self.decode_failures = 0;
        self.set_health(Health::Ok, status);
    }

    /// A catch-up failed: log it as it deserves, show it, and say when to try again.
    pub fn failed(&mut self, e: &JobError, cfg: &MastodonSourceConfig, status: &Status) -> Duration {
        self.tried = true;
        let long = cfg.max_poll_interval.max(UNREADABLE_RETRY);
        let host = self.client.host();
        let mastodon = match e {
            JobError::Mastodon(m) => Some(m),
            _ => None,
        };
        let decode = matches!(mastodon, Some(MastodonError::Undecodable { .. }));
        self.decode_failures = if decode { self.decode_failures + 1 } else { 0 };
        let (health, delay) = match e {
            JobError::NotFound { host } => {
                warn!(acct = %self.acct, server = %host, retry_in = ?long, "Account not found on its server (check the handle); retrying later");
                (Health::Unreadable(format!("not found on {host}")), long)
            }
            JobError::Mastodon(m) if m.status() == Some(401) && !self.client.has_token() => {
                let why = format!("{host} refuses anonymous reads");
                error!(acct = %self.acct, server = %host, error = %m, retry_in = ?long,
                    "This server needs a reader token: give one with `--token-env VAR` (fedistream follow) or `connection = \"NAME\"` on the source with a [connections.mastodon.NAME] on {host}");
                (Health::Unreadable(format!("needs a reader token ({why})")), long)
            }
            _ if matches!(e.kind(), ErrorKind::Auth | ErrorKind::Config | ErrorKind::Permanent) => {
                error!(acct = %self.acct, error = %e, retry_in = ?long, "Cannot read this account");
                (Health::Unreadable(format!("cannot be read: {e}")), long)
            }
            _ if decode && self.decode_failures >= DECODE_FAILURES_TOLERATED => {
                error!(acct = %self.acct, error = %e, failures = self.decode_failures, retry_in = ?cfg.max_poll_interval,
                    "The server keeps sending answers that cannot be decoded");
                (Health::Failing(e.to_string()), cfg.max_poll_interval)
            }
            _ => {
                let delay = e.retry_after().unwrap_or_else(|| self.backoff.next_delay());
                warn!(acct = %self.acct, error = %e, retry_in = ?delay, "Catch-up failed; will retry");
                let limiter = self.client.limiter();
                let health = match (limiter.blocked_until(), limiter.unavailable_until()) {
                    (Some(until), _) => Health::Waiting { until, why: "rate limited, 429".into() },
                    (None, Some(until)) => Health::Waiting { until, why: "server unavailable, 503".into() },
                    _ => Health::Failing(e.to_string()),
                };
                (health, delay)
            }
        };
        status.count("errors", 1);
        self.set_health(health, status);
        delay
    }

    fn set_health(&mut self, health: Health, status: &Status) {
        if self.health != health {
            status.set_part(&self.acct, health.shown());
            self.health = health;
        }
    }

    pub fn unreadable(&self) -> Option<&str> {
        match &self.health {
            Health::Unreadable(why) => Some(why),
            _ => None,
        }
    }
}

/// `follow`: when every account was tried and none can be read, the error that
/// ends the source.
pub fn none_readable(accounts: &[Account]) -> Option<SourceError> {
    let all = accounts.iter().all(|a| a.tried && a.unreadable().is_some());
    all.then(|| {
        let why: Vec<String> = accounts.iter().map(|a| format!("@{}: {}", a.acct, a.unreadable().unwrap_or_default())).collect();
        SourceError::new(ErrorKind::Config, format!("none of the accounts can be read: {}", why.join("; ")))
    })
}
