//! Configuration of the Mastodon source.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::window::{WindowSpec, WINDOW_CAP};
use crate::mastodon::stream::Transport;

/// What to take from an account's past on the first start (no checkpoint yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backfill {
    /// Start from now: only posts made after the first start.
    None,
    /// The newest N posts, then everything after.
    Last(u32),
    /// Every post created at or after this time.
    Since(DateTime<Utc>),
}

impl Backfill {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "none" || s == "now" {
            return Ok(Backfill::None);
        }
        if let Some(n) = s.strip_prefix("last:") {
            let n: u32 = n.trim().parse().map_err(|_| format!("`{s}`: expected `last:N` with N a positive number"))?;
            if n == 0 {
                return Ok(Backfill::None);
            }
            return Ok(Backfill::Last(n));
        }
        if let Some(d) = s.strip_prefix("since:") {
            let d = d.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(d) {
                return Ok(Backfill::Since(t.with_timezone(&Utc)));
            }
            if let Ok(day) = NaiveDate::parse_from_str(d, "%Y-%m-%d") {
                let t = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
                return t.map(Backfill::Since).ok_or_else(|| format!("`{s}`: invalid date"));
            }
            return Err(format!("`{s}`: expected `since:YYYY-MM-DD` or `since:<RFC 3339 time>`"));
        }
        Err(format!("`{s}`: expected \"none\", \"last:N\" or \"since:YYYY-MM-DD\""))
    }
}

impl Serialize for Backfill {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Backfill::None => s.serialize_str("none"),
            Backfill::Last(n) => s.serialize_str(&format!("last:{n}")),
            Backfill::Since(t) => s.serialize_str(&format!("since:{}", t.to_rfc3339())),
        }
    }
}

impl<'de> Deserialize<'de> for Backfill {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Backfill::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Which reader stream carries the low-latency hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    /// WebSocket, falling back to SSE (GoToSocial and Akkoma have WebSocket only).
    #[default]
    Auto,
    Websocket,
    Sse,
    /// No streaming: poll only.
    Off,
}

impl StreamMode {
    pub fn transport(self) -> Option<Transport> {
        match self {
            StreamMode::Auto => Some(Transport::Auto),
            StreamMode::Websocket => Some(Transport::WebSocket),
            StreamMode::Sse => Some(Transport::Sse),
            StreamMode::Off => None,
        }
    }
}

fn d(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MastodonSourceConfig {
    /// Accounts to follow, `@user@host` or `user@host`.
    pub accounts: Vec<String>,
    /// Name of a `[connections.mastodon.NAME]` whose token reads the `user` (or
    /// `list`) stream. Without it the source polls.
    #[serde(default)]
    pub connection: Option<String>,
    /// Reach the accounts' home server at this base URL instead of `https://host`
    /// (tests, proxies). Plain `http://` only for loopback addresses.
    #[serde(default)]
    pub instance: Option<String>,
    /// Take unlisted posts too. Public only by default; private and direct never.
    #[serde(default)]
    pub include_unlisted: bool,
    /// The operator owns these accounts: their noindex / #nobot / #noindex /
    /// #nobridge opt-outs do not apply.
    #[serde(default)]
    pub owned: bool,
    /// First start: "none" (from now), "last:N", "since:YYYY-MM-DD".
    #[serde(default = "default_backfill")]
    pub backfill: Backfill,
    /// Shortest interval between polls of one account (active accounts).
    #[serde(default = "default_poll", with = "fedistream_core::units::duration")]
    pub poll_interval: Duration,
    /// Longest interval between polls of one account (quiet accounts).
    #[serde(default = "default_max_poll", with = "fedistream_core::units::duration")]
    pub max_poll_interval: Duration,
    /// With a live stream, still re-read every account this often (safety net,
    /// also catches edits made while disconnected).
    #[serde(default = "default_safety", with = "fedistream_core::units::duration")]
    pub safety_interval: Duration,
    /// Streaming transport when a connection with a token is given.
    #[serde(default)]
    pub stream: StreamMode,
    /// Read this list's stream instead of the home (`user`) stream.
    #[serde(default)]
    pub list: Option<String>,
    /// No byte or heartbeat for this long on SSE means the stream stalled.
    #[serde(default = "default_sse_idle", with = "fedistream_core::units::duration")]
    pub sse_idle_timeout: Duration,
    /// No frame or ping for this long on WebSocket means the stream stalled.
    #[serde(default = "default_ws_idle", with = "fedistream_core::units::duration")]
    pub ws_idle_timeout: Duration,
    #[serde(default = "default_reconnect_initial", with = "fedistream_core::units::duration")]
    pub reconnect_initial: Duration,
    #[serde(default = "default_reconnect_max", with = "fedistream_core::units::duration")]
    pub reconnect_max: Duration,
    /// Concurrent REST requests per server.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Reconciliation window: posts created this recently are checked for
    /// edits and deletions made while no stream told us...
    #[serde(default = "default_reconcile_window", with = "fedistream_core::units::duration")]
    pub reconcile_window: Duration,
    /// ...and at least this many of each account's newest posts, however old.
    #[serde(default = "default_reconcile_min_posts")]
    pub reconcile_min_posts: usize,
    /// Every post in the window is checked again within this time (rate limit
    /// permitting). Accounts whose stream was down go first.
    #[serde(default = "default_reconcile_within", with = "fedistream_core::units::duration")]
    pub reconcile_within: Duration,
    /// Engagement refresh: read the interaction counts of each account's recent
    /// posts again at least this often (rate limit permitting); changed counts
    /// become `updated` events. Off when not set.
    #[serde(default, with = "fedistream_core::units::opt_duration")]
    pub engagement_refresh: Option<Duration>,
    /// Which posts the refresh covers: those created this recently (and still
    /// in the reconciliation window).
    #[serde(default = "default_engagement_window", with = "fedistream_core::units::duration")]
    pub engagement_window: Duration,
    /// `fedistream follow`: stop with an error when none of the accounts can be
    /// read (not found, token needed, wrong address). Not a config-file key: a
    /// pipeline keeps retrying and shows the accounts in `fedistream status`.
    #[serde(skip)]
    pub stop_if_unreadable: bool,
}

pub(super) fn default_backfill() -> Backfill {
    Backfill::None
}
pub(super) fn default_poll() -> Duration {
    d(60)
}
fn default_max_poll() -> Duration {
    d(15 * 60)
}
pub(super) fn default_safety() -> Duration {
    d(5 * 60)
}
pub(super) fn default_sse_idle() -> Duration {
    d(50)
}
pub(super) fn default_ws_idle() -> Duration {
    d(80)
}
pub(super) fn default_reconnect_initial() -> Duration {
    d(1)
}
pub(super) fn default_reconnect_max() -> Duration {
    d(300)
}
fn default_concurrency() -> usize {
    4
}
fn default_reconcile_window() -> Duration {
    d(7 * 24 * 3600)
}
fn default_reconcile_min_posts() -> usize {
    200
}
fn default_reconcile_within() -> Duration {
    d(3600)
}
fn default_engagement_window() -> Duration {
    d(2 * 24 * 3600)
}

impl MastodonSourceConfig {
    /// A config with defaults for these accounts (for `fedistream follow`).
    pub fn for_accounts(accounts: Vec<String>) -> Self {
        MastodonSourceConfig {
            accounts,
            connection: None,
            instance: None,
            include_unlisted: false,
            owned: false,
            backfill: default_backfill(),
            poll_interval: default_poll(),
            max_poll_interval: default_max_poll(),
            safety_interval: default_safety(),
            stream: StreamMode::Auto,
            list: None,
            sse_idle_timeout: default_sse_idle(),
            ws_idle_timeout: default_ws_idle(),
            reconnect_initial: default_reconnect_initial(),
            reconnect_max: default_reconnect_max(),
            concurrency: default_concurrency(),
            reconcile_window: default_reconcile_window(),
            reconcile_min_posts: default_reconcile_min_posts(),
            reconcile_within: default_reconcile_within(),
            engagement_refresh: None,
            engagement_window: default_engagement_window(),
            stop_if_unreadable: false,
        }
    }

    /// What is wrong with the values (key, reason); empty when valid. The
    /// binary's validation reports these with the file and table.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.reconcile_min_posts > WINDOW_CAP {
            p.push(("reconcile_min_posts", format!("at most {WINDOW_CAP} (posts checked per account)")));
        }
        if self.reconcile_window > d(365 * 24 * 3600) {
            p.push(("reconcile_window", "at most 365d".into()));
        }
        if self.reconcile_within < d(60) {
            p.push(("reconcile_within", "must be at least 1m (each pass costs requests of the rate-limit budget)".into()));
        }
        if self.reconcile_within > d(30 * 24 * 3600) {
            p.push(("reconcile_within", "at most 30d".into()));
        }
        if self.engagement_refresh.is_some_and(|e| e < d(60)) {
            p.push(("engagement_refresh", "must be at least 1m (each pass costs requests of the rate-limit budget)".into()));
        }
        if self.engagement_refresh.is_some() && self.engagement_window > self.reconcile_window {
            p.push(("engagement_window", "at most reconcile_window (only posts still in the reconciliation window are known)".into()));
        }
        p
    }

    /// The posts each account's reconciliation covers.
    pub fn window_spec(&self) -> WindowSpec {
        WindowSpec { max_age: self.reconcile_window, min_posts: self.reconcile_min_posts, cap: WINDOW_CAP }
    }
}

/// `@user@host` / `user@host` → (`user`, `host`). Errors name what is wrong.
pub fn parse_acct(s: &str) -> Result<(String, String), String> {
    let t = s.trim().trim_start_matches('@');
    let (user, host) =
        t.split_once('@').ok_or_else(|| format!("`{s}` is not an account handle: expected `@user@host` (with the server)"))?;
    let valid_user = !user.is_empty() && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if !valid_user {
        return Err(format!("`{s}`: `{user}` is not a valid user name"));
    }
    if host.is_empty() || host.contains('@') || host.contains('/') || host.contains(' ') {
        return Err(format!("`{s}`: `{host}` is not a valid server name"));
    }
    Ok((user.to_string(), host.to_ascii_lowercase()))
}

/// Check a base URL: `https://`, or `http://` for loopback only. Returns it parsed.
pub fn parse_base_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    match u.scheme() {
        "https" => {}
        "http" => {
            let loopback = match u.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                return Err(format!("`{s}`: plain http is only allowed for loopback addresses; use https"));
            }
        }
        other => return Err(format!("`{s}`: unsupported scheme `{other}` (use https)")),
    }
    if u.host().is_none() {
        return Err(format!("`{s}` has no host"));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_forms() {
        assert_eq!(Backfill::parse("none").unwrap(), Backfill::None);
        assert_eq!(Backfill::parse("last:20").unwrap(), Backfill::Last(20));
        assert!(matches!(Backfill::parse("since:2026-11-01").unwrap(), Backfill::Since(_)));
        assert!(Backfill::parse("last:many").unwrap_err().contains("last:N"));
        assert!(Backfill::parse("everything").unwrap_err().contains("expected"));
    }

    #[test]
    fn reconcile_settings_are_checked() {
        let mut c = MastodonSourceConfig::for_accounts(vec!["a@b.example".into()]);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!((c.reconcile_window, c.reconcile_min_posts, c.reconcile_within), (d(7 * 86_400), 200, d(3600)));
        c.reconcile_within = d(5);
        c.reconcile_min_posts = 5_000;
        let keys: Vec<&str> = c.problems().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["reconcile_min_posts", "reconcile_within"]);
        let parsed: MastodonSourceConfig = serde_json::from_str(
            r#"{"accounts": ["a@b.example"], "reconcile_window": "2d", "reconcile_within": "30m", "reconcile_min_posts": 50}"#,
        )
        .unwrap();
        assert_eq!(parsed.window_spec(), WindowSpec { max_age: d(2 * 86_400), min_posts: 50, cap: WINDOW_CAP });
        assert_eq!(parsed.reconcile_within, d(1800));
        assert_eq!((parsed.engagement_refresh, parsed.engagement_window), (None, d(2 * 86_400)), "off by default");
        let parsed: MastodonSourceConfig =
            serde_json::from_str(r#"{"accounts": ["a@b.example"], "engagement_refresh": "30s", "engagement_window": "8d"}"#).unwrap();
        assert_eq!(parsed.engagement_refresh, Some(d(30)));
        let keys: Vec<&str> = parsed.problems().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["engagement_refresh", "engagement_window"]);
    }

    #[test]
    fn accts_and_urls() {
        assert_eq!(parse_acct("@alice@example.org").unwrap(), ("alice".into(), "example.org".into()));
        assert!(parse_acct("alice").unwrap_err().contains("with the server"));
        assert!(parse_base_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_base_url("http://example.org").unwrap_err().contains("loopback"));
        assert!(parse_base_url("https://example.org").is_ok());
    }
}
