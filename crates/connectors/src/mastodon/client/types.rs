//! The few REST shapes the client decodes itself: instance facts, an account
//! reference, a page of statuses (kept raw) and its `Link` cursors. Statuses are
//! deliberately not parsed here; that is the caller's business.

use serde_json::value::RawValue;
use serde_json::Value;

/// What the transport needs to know about a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// `domain` (v2) or `uri` without scheme (v1).
    pub domain: String,
    pub version: String,
    /// Streaming base (`configuration.urls.streaming` / `urls.streaming_api`), a
    /// `ws(s)://` URL on Mastodon.
    pub streaming_url: Option<url::Url>,
    pub max_characters: Option<u32>,
    /// Mastodon 4.5+ `configuration.timelines_access`, flattened:
    /// `live_feeds.local` → `public` | `authenticated` | `disabled`, and so on
    /// for `live_feeds.remote` and `hashtag_feeds.{local,remote}`. Empty on
    /// older servers (there `timeline_preview` decides, seen only as a 401).
    pub timelines_access: std::collections::BTreeMap<String, String>,
}

impl InstanceInfo {
    /// From `GET /api/v2/instance`.
    pub fn from_v2(v: &Value) -> Option<Self> {
        let cfg = v.get("configuration");
        Some(InstanceInfo {
            domain: v.get("domain")?.as_str()?.to_string(),
            version: str_at(v, &["version"]).unwrap_or_default(),
            streaming_url: cfg.and_then(|c| str_at(c, &["urls", "streaming"])).and_then(|s| s.parse().ok()),
            max_characters: cfg.and_then(|c| u32_at(c, &["statuses", "max_characters"])),
            timelines_access: cfg.and_then(|c| c.get("timelines_access")).map(flatten_access).unwrap_or_default(),
        })
    }

    /// From the deprecated `GET /api/v1/instance` (also Pleroma/Akkoma).
    pub fn from_v1(v: &Value) -> Option<Self> {
        let uri = v.get("uri")?.as_str()?;
        let domain = uri.split_once("://").map_or(uri, |(_, rest)| rest).trim_end_matches('/');
        Some(InstanceInfo {
            domain: domain.to_string(),
            version: str_at(v, &["version"]).unwrap_or_default(),
            streaming_url: str_at(v, &["urls", "streaming_api"]).and_then(|s| s.parse().ok()),
            max_characters: v
                .get("configuration")
                .and_then(|c| u32_at(c, &["statuses", "max_characters"]))
                .or_else(|| u32_at(v, &["max_toot_chars"])),
            timelines_access: Default::default(),
        })
    }
}

/// `{"live_feeds": {"local": "public"}}` → `live_feeds.local` → `public`.
fn flatten_access(v: &Value) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for (group, halves) in v.as_object().into_iter().flatten() {
        for (half, value) in halves.as_object().into_iter().flatten() {
            if let Some(value) = value.as_str() {
                out.insert(format!("{group}.{half}"), value.to_string());
            }
        }
    }
    out
}

/// An account as far as the transport cares, plus the full JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRef {
    pub id: String,
    pub acct: String,
    pub username: String,
    pub url: Option<String>,
    pub raw: Value,
}

impl AccountRef {
    pub fn from_json(raw: Value) -> Option<Self> {
        Some(AccountRef {
            id: str_at(&raw, &["id"])?,
            acct: str_at(&raw, &["acct"])?,
            username: str_at(&raw, &["username"])?,
            url: str_at(&raw, &["url"]),
            raw,
        })
    }
}

/// Which slice of a timeline to fetch. `limit` is clamped to 1..=40 (Mastodon's
/// cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// The newest statuses.
    Latest { limit: u32 },
    /// The `limit` statuses immediately after `min_id` (page forwards).
    After { min_id: String, limit: u32 },
    /// Statuses older than `max_id` (page backwards).
    Before { max_id: String, limit: u32 },
}

impl Page {
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let clamp = |l: u32| l.clamp(1, 40).to_string();
        match self {
            Page::Latest { limit } => vec![("limit", clamp(*limit))],
            Page::After { min_id, limit } => {
                vec![("limit", clamp(*limit)), ("min_id", min_id.clone())]
            }
            Page::Before { max_id, limit } => {
                vec![("limit", clamp(*limit)), ("max_id", max_id.clone())]
            }
        }
    }
}

/// One page of statuses as the server sent it.
#[derive(Debug)]
pub struct StatusPage {
    /// Server order: newest first, also for `min_id` pages. Not parsed.
    pub statuses: Vec<Box<RawValue>>,
    /// `max_id` of the `Link: rel="next"` URL (older statuses), if any.
    pub next_max_id: Option<String>,
    /// `min_id` of the `Link: rel="prev"` URL (newer statuses), if any.
    pub prev_min_id: Option<String>,
}

/// Cursors from a `Link` header: (`max_id` of rel="next", `min_id` of rel="prev").
///
/// Hand-written on purpose: the `parse_link_header` crate (0.4) returns nothing
/// for a header with a rel list (`rel="next last"`, RFC 8288 §3.3), which the
/// `link_header_variants` test holds us to.
pub fn parse_link_header(value: &str) -> (Option<String>, Option<String>) {
    let mut next = None;
    let mut prev = None;
    for part in value.split(',') {
        let mut pieces = part.split(';');
        let Some(target) = pieces.next().map(str::trim) else {
            continue;
        };
        let Some(target) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
            continue;
        };
        let Ok(url) = url::Url::parse(target) else {
            continue;
        };
        let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        for attr in pieces {
            let Some((k, v)) = attr.split_once('=') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("rel") {
                continue;
            }
            for rel in v.trim().trim_matches('"').split_ascii_whitespace() {
                match rel {
                    "next" => next = next.take().or_else(|| param("max_id")),
                    "prev" => prev = prev.take().or_else(|| param("min_id").or_else(|| param("since_id"))),
                    _ => {}
                }
            }
        }
    }
    (next, prev)
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        // Some servers send numeric ids; ids are opaque strings to us.
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn u32_at(v: &Value, path: &[&str]) -> Option<u32> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64().and_then(|n| u32::try_from(n).ok())
}
