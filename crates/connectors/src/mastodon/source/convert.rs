//! Turning Mastodon payloads into events: parse, normalise, attribute to the
//! followed account, apply the consent policy, and record the id → (uri, account)
//! index entry that later attributes stream deletes (whose payload is only an id).

use std::collections::HashMap;

use chrono::Utc;
use fedistream_core::post::Via;
use fedistream_core::{Event, EventKind, Post, StatePut};
use fedistream_process::consent::ConsentPolicy;
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};
use serde::Deserialize;

/// State namespace of the id index: `host|status id` → `uri\tacct`.
pub const IDS_NS: &str = "ids";
/// State namespace of checkpoints: `source|host|acct` → newest status id read over REST.
pub const CHECKPOINT_NS: &str = "checkpoint";

pub fn ids_key(host: &str, id: &str) -> String {
    format!("{host}|{id}")
}

pub fn checkpoint_key(source: &str, host: &str, acct: &str) -> String {
    format!("{source}|{host}|{acct}")
}

/// Outcome of converting one payload.
pub enum Converted {
    Event(Box<Event>, StatePut),
    /// Not for us: an account we do not follow (stream) — silently ignored.
    NotFollowed,
    /// Refused by the consent/visibility policy (counted by reason, once per
    /// post: `key` is its URI).
    Skipped {
        reason: &'static str,
        key: String,
    },
    /// Could not be parsed: dead-letter with the reason.
    Malformed(String),
}

/// Attribution and policy for one source.
pub struct Converter<'a> {
    pub source: &'a str,
    pub policy: &'a ConsentPolicy,
    /// Followed accounts by canonical acct (lower-case).
    pub followed: &'a std::collections::HashSet<String>,
    /// Take every author (a timeline source), not only the followed ones.
    pub everyone: bool,
    /// Per host: account id → canonical acct, for accounts whose ids we looked up.
    pub known_ids: &'a HashMap<String, HashMap<String, String>>,
    /// Address (`host[:port]` we reach) → the server's name, where they differ
    /// (an `instance` override): events carry the name.
    pub names: &'a HashMap<String, String>,
}

impl Converter<'_> {
    /// The name of the server reached at `host`.
    pub fn server_name<'h>(&'h self, host: &'h str) -> &'h str {
        self.names.get(host).map_or(host, String::as_str)
    }

    /// `owner`: on an account's own profile timeline, its (id, acct) there.
    pub fn convert(&self, raw: &str, host: &str, via: Via, kind: EventKind, owner: Option<(&str, &str)>) -> Converted {
        let ctx = NormalizeContext { instance: self.server_name(host), via, received_at: Utc::now() };
        let mut post: Post = match parse_and_normalize(raw, &ctx) {
            Ok(p) => p,
            Err(e) => return Converted::Malformed(e.to_string()),
        };
        // The server may call its local accounts by bare user name and we may reach
        // it at another base URL: the id we looked up says who this is.
        if let Some((_, acct)) = owner.filter(|(id, _)| *id == post.account.id) {
            post.account.acct = acct.to_string();
        } else if let Some(acct) = self.known_ids.get(host).and_then(|m| m.get(&post.account.id)) {
            post.account.acct = acct.clone();
        }
        let acct = post.account.acct.to_ascii_lowercase();
        if !self.everyone && !self.followed.contains(&acct) {
            return Converted::NotFollowed;
        }
        post.account.acct = acct;
        if let Err(reason) = self.policy.check(&post) {
            return Converted::Skipped { reason: reason.as_str(), key: post.uri };
        }
        let index = StatePut::set(IDS_NS, ids_key(host, &post.id), format!("{}\t{}", post.uri, post.account.acct));
        let ev = match kind {
            EventKind::Updated => Event::updated(self.source, post),
            _ => Event::created(self.source, post),
        };
        Converted::Event(Box::new(ev), index)
    }
}

/// A deletion event from an index entry; `instance` is the server's name.
pub fn deleted_event(source: &str, instance: &str, status_id: &str, index_value: &str) -> Option<Event> {
    let (uri, acct) = index_value.split_once('\t')?;
    Some(Event {
        kind: EventKind::Deleted,
        key: uri.to_string(),
        account: acct.to_string(),
        status_id: status_id.to_string(),
        instance: instance.to_string(),
        source: source.to_string(),
        via: Via::Stream,
        observed_at: Utc::now(),
        post: None,
        counts_refresh: false,
    })
}

/// Just the id of a status payload, for paging past statuses we cannot parse.
pub fn status_id(raw: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: serde_json::Value,
    }
    match serde_json::from_str::<IdOnly>(raw).ok()?.id {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Mastodon's rule for comparing ids of one server: longer is newer, then lexical.
pub fn id_newer(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}
