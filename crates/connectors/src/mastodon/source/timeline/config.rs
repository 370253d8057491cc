//! Configuration of the timeline source: which feeds of one server to read
//! ([`TimelineKind`]), and how (stream, safety interval, page cap, rate-limit
//! share).

// The defaults the timeline source shares with the account source: one place each.
use super::super::config::{
    default_backfill, default_poll, default_reconnect_initial, default_reconnect_max, default_safety, default_sse_idle, default_ws_idle,
};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mastodon::source::config::{Backfill, StreamMode};
use crate::mastodon::stream::StreamName;

/// One feed of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineKind {
    /// The server's local timeline: public posts of its own accounts.
    Local,
    /// Local and remote public posts, as the server sees them.
    Federated,
    /// Only the remote public posts the server knows of.
    Remote,
    /// Public posts with a hashtag (only local ones with `local`).
    Hashtag { tag: String, local: bool },
    /// A list of the connection's account (needs its token).
    List(String),
}

impl TimelineKind {
    /// `local`, `federated`, `remote`, `hashtag:NAME`, `hashtag:NAME:local`, `list:ID`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t {
            "local" => return Ok(TimelineKind::Local),
            "federated" | "public" => return Ok(TimelineKind::Federated),
            "remote" => return Ok(TimelineKind::Remote),
            _ => {}
        }
        if let Some(rest) = t.strip_prefix("hashtag:") {
            let (tag, local) = match rest.strip_suffix(":local") {
                Some(tag) => (tag, true),
                None => (rest, false),
            };
            let tag = tag.trim_start_matches('#');
            let valid = !tag.is_empty() && tag.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("`{s}`: `{tag}` is not a hashtag (letters, digits and `_`, without `#`)"));
            }
            return Ok(TimelineKind::Hashtag { tag: tag.to_string(), local });
        }
        if let Some(id) = t.strip_prefix("list:") {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("`{s}`: expected `list:ID` with the list's id (as in its URL)"));
            }
            return Ok(TimelineKind::List(id.to_string()));
        }
        Err(format!("`{s}`: expected `local`, `federated`, `remote`, `hashtag:NAME`, `hashtag:NAME:local` or `list:ID`"))
    }

    /// The label it is configured, checkpointed and shown by.
    pub fn label(&self) -> String {
        match self {
            TimelineKind::Local => "local".into(),
            TimelineKind::Federated => "federated".into(),
            TimelineKind::Remote => "remote".into(),
            TimelineKind::Hashtag { tag, local: false } => format!("hashtag:{}", tag.to_lowercase()),
            TimelineKind::Hashtag { tag, local: true } => format!("hashtag:{}:local", tag.to_lowercase()),
            TimelineKind::List(id) => format!("list:{id}"),
        }
    }

    /// Only readable with a token.
    pub fn needs_token(&self) -> bool {
        matches!(self, TimelineKind::List(_))
    }

    /// The REST timeline: path segments and the parameters besides paging.
    pub fn rest(&self) -> (Vec<&str>, Vec<(&'static str, String)>) {
        let t = |rest: &[&'static str]| ["api", "v1", "timelines"].iter().chain(rest).copied().collect::<Vec<&str>>();
        match self {
            TimelineKind::Local => (t(&["public"]), vec![("local", "true".into())]),
            TimelineKind::Federated => (t(&["public"]), vec![]),
            TimelineKind::Remote => (t(&["public"]), vec![("remote", "true".into())]),
            TimelineKind::Hashtag { tag, local } => {
                let mut path: Vec<&str> = t(&["tag"]);
                path.push(tag);
                (path, if *local { vec![("local", "true".into())] } else { vec![] })
            }
            TimelineKind::List(id) => {
                let mut path: Vec<&str> = t(&["list"]);
                path.push(id);
                (path, vec![])
            }
        }
    }

    /// The stream carrying the same feed.
    pub fn stream(&self) -> StreamName {
        match self {
            TimelineKind::Local => StreamName::Public { local: true, remote: false },
            TimelineKind::Federated => StreamName::Public { local: false, remote: false },
            TimelineKind::Remote => StreamName::Public { local: false, remote: true },
            TimelineKind::Hashtag { tag, local } => StreamName::Hashtag { tag: tag.clone(), local: *local },
            TimelineKind::List(id) => StreamName::List(id.clone()),
        }
    }

    /// The halves of Mastodon 4.5+'s `configuration.timelines_access` that
    /// decide who may read this feed (a list is its owner's, never hidden).
    pub fn access_keys(&self) -> &'static [&'static str] {
        match self {
            TimelineKind::Local => &["live_feeds.local"],
            TimelineKind::Remote => &["live_feeds.remote"],
            TimelineKind::Federated => &["live_feeds.local", "live_feeds.remote"],
            TimelineKind::Hashtag { local: true, .. } => &["hashtag_feeds.local"],
            TimelineKind::Hashtag { local: false, .. } => &["hashtag_feeds.local", "hashtag_feeds.remote"],
            TimelineKind::List(_) => &[],
        }
    }

    /// What the feed can and cannot promise (logged at start; the README says more).
    pub fn promise(&self) -> &'static str {
        match self {
            TimelineKind::Local | TimelineKind::Federated | TimelineKind::Remote => {
                "public posts only: no boosts, no replies to others, nothing unlisted; remote posts only if the server received them"
            }
            TimelineKind::Hashtag { .. } => {
                "public posts with the tag, replies included, no boosts; remote ones only if the server received them"
            }
            TimelineKind::List(_) => "posts of the list's members as the owner's home feed would show them (its replies policy applies)",
        }
    }
}

impl Serialize for TimelineKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label())
    }
}

impl<'de> Deserialize<'de> for TimelineKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TimelineKind::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn d(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MastodonTimelineConfig {
    /// Name of the `[connections.mastodon.NAME]` whose server is read, with
    /// its token (which opens the streams, the list timelines and feeds the
    /// server shows to its users only).
    #[serde(default)]
    pub connection: Option<String>,
    /// Or: the server's base URL, read anonymously (REST only; no streams,
    /// no lists). Exactly one of `connection` and `instance`.
    #[serde(default)]
    pub instance: Option<String>,
    /// The feeds: `local`, `federated`, `remote`, `hashtag:NAME`, `hashtag:NAME:local`, `list:ID`.
    pub timelines: Vec<TimelineKind>,
    /// Streaming transport (only with a token: every stream needs one since Mastodon 4.2).
    #[serde(default)]
    pub stream: StreamMode,
    /// First start: "none" (from now) or "last:N" per feed.
    #[serde(default = "default_backfill")]
    pub backfill: Backfill,
    /// Without a stream, read each feed this often.
    #[serde(default = "default_poll", with = "fedistream_core::units::duration")]
    pub poll_interval: Duration,
    /// With a live stream, still read each feed over REST this often.
    #[serde(default = "default_safety", with = "fedistream_core::units::duration")]
    pub safety_interval: Duration,
    /// Most pages (40 posts each) one catch-up reads. Beyond, the rest of the
    /// backlog is a gap: counted and reported, and the feed goes on from its
    /// newest posts.
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// The share of each rate-limit window of the connection's (server,
    /// token) this source may use; the rest stays for the account sources.
    #[serde(default = "default_share")]
    pub rate_limit_share: f64,
    #[serde(default = "default_sse_idle", with = "fedistream_core::units::duration")]
    pub sse_idle_timeout: Duration,
    #[serde(default = "default_ws_idle", with = "fedistream_core::units::duration")]
    pub ws_idle_timeout: Duration,
    #[serde(default = "default_reconnect_initial", with = "fedistream_core::units::duration")]
    pub reconnect_initial: Duration,
    #[serde(default = "default_reconnect_max", with = "fedistream_core::units::duration")]
    pub reconnect_max: Duration,
    /// `fedistream follow`: stop with an error when every feed is hidden. Not
    /// a config-file key: a pipeline keeps checking and shows it in the status.
    #[serde(skip)]
    pub stop_if_unreadable: bool,
}

fn default_max_pages() -> u32 {
    10
}
fn default_share() -> f64 {
    0.5
}

impl MastodonTimelineConfig {
    /// A config with defaults (for `fedistream follow` and tests).
    pub fn new(timelines: Vec<TimelineKind>) -> Self {
        MastodonTimelineConfig {
            connection: None,
            instance: None,
            timelines,
            stream: StreamMode::Auto,
            backfill: default_backfill(),
            poll_interval: default_poll(),
            safety_interval: default_safety(),
            max_pages: default_max_pages(),
            rate_limit_share: default_share(),
            sse_idle_timeout: default_sse_idle(),
            ws_idle_timeout: default_ws_idle(),
            reconnect_initial: default_reconnect_initial(),
            reconnect_max: default_reconnect_max(),
            stop_if_unreadable: false,
        }
    }

    /// What is wrong with the values (key, reason); empty when valid. Whether
    /// a named connection exists is the caller's business.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        let has_token = self.connection.is_some();
        match (&self.connection, &self.instance) {
            (Some(_), Some(_)) => {
                p.push(("instance", "give either `connection` (with a token) or `instance` (anonymous), not both".into()))
            }
            (None, None) => p.push((
                "connection",
                "which server? set `connection` (a [connections.mastodon.NAME]) or `instance` (a base URL, read anonymously)".into(),
            )),
            (None, Some(i)) => {
                if let Err(e) = crate::mastodon::source::config::parse_base_url(i) {
                    p.push(("instance", e));
                }
            }
            _ => {}
        }
        if self.timelines.is_empty() {
            p.push(("timelines", "no timelines to read".to_string()));
        }
        if !has_token {
            if let Some(k) = self.timelines.iter().find(|k| k.needs_token()) {
                p.push(("timelines", format!("`{}` needs a `connection` with a token (a list belongs to an account)", k.label())));
            }
            if matches!(self.stream, StreamMode::Websocket | StreamMode::Sse) {
                p.push((
                    "stream",
                    "streaming needs a `connection` with a token (every stream does since Mastodon 4.2); or set stream = \"off\"".into(),
                ));
            }
        }
        if matches!(self.backfill, Backfill::Since(_)) {
            p.push(("backfill", "a timeline takes \"none\" or \"last:N\" (it is not an account's history)".into()));
        }
        if !(self.rate_limit_share > 0.0 && self.rate_limit_share <= 1.0) {
            p.push(("rate_limit_share", "must be above 0 and at most 1 (a fraction of each rate-limit window)".into()));
        }
        if self.max_pages == 0 {
            p.push(("max_pages", "must be at least 1".into()));
        }
        if self.poll_interval < d(1) {
            p.push(("poll_interval", "must be at least 1s".into()));
        }
        let mut labels: Vec<String> = self.timelines.iter().map(TimelineKind::label).collect();
        labels.sort();
        if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
            p.push(("timelines", format!("`{}` is listed twice", w[0])));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_map_to_rest_and_streams() {
        let k = TimelineKind::parse("hashtag:Rust:local").unwrap();
        assert_eq!(k, TimelineKind::Hashtag { tag: "Rust".into(), local: true });
        assert_eq!(k.label(), "hashtag:rust:local");
        assert_eq!(k.rest(), (vec!["api", "v1", "timelines", "tag", "Rust"], vec![("local", "true".to_string())]));
        assert_eq!(k.stream().api_name(), "hashtag:local");
        assert_eq!(TimelineKind::parse("remote").unwrap().rest().1, vec![("remote", "true".to_string())]);
        assert_eq!(TimelineKind::parse("local").unwrap().stream().api_name(), "public:local");
        assert_eq!(TimelineKind::parse("federated").unwrap().stream().api_name(), "public");
        assert_eq!(TimelineKind::parse("list:42").unwrap().rest().0, vec!["api", "v1", "timelines", "list", "42"]);
        assert!(TimelineKind::parse("hashtag:").unwrap_err().contains("not a hashtag"));
        assert!(TimelineKind::parse("list:4/2").unwrap_err().contains("list:ID"));
        assert!(TimelineKind::parse("home").unwrap_err().contains("expected `local`"));
    }

    #[test]
    fn problems_name_the_key() {
        let mut c = MastodonTimelineConfig::new(vec![TimelineKind::List("1".into()), TimelineKind::Local, TimelineKind::Local]);
        c.instance = Some("http://example.org".into());
        c.rate_limit_share = 0.0;
        let keys: Vec<&str> = c.problems().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["instance", "timelines", "rate_limit_share", "timelines"]);
        let parsed: MastodonTimelineConfig = serde_json::from_str(
            r#"{"instance": "https://example.org", "timelines": ["local", "hashtag:rust"], "rate_limit_share": 0.25}"#,
        )
        .unwrap();
        assert!(parsed.problems().is_empty(), "{:?}", parsed.problems());
        assert_eq!(parsed.timelines[1], TimelineKind::Hashtag { tag: "rust".into(), local: false });
        let bad = serde_json::from_str::<MastodonTimelineConfig>(r#"{"connection": "main", "timelines": ["home"]}"#).unwrap_err();
        assert!(bad.to_string().contains("expected `local`"), "{bad}");
    }
}
