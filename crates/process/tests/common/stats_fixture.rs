//! Compact fixture lines for the statistics tests, expanded into full events.
//!
//! One JSON object a line:
//! `{"kind":"created"|"updated"|"deleted", "acct":"ada@social.example", "id":"1",
//!   "at":"<created_at>", "edited":"<edited_at>", "text":"…", "lang":"en",
//!   "app":"Tusky", "tags":["rust"], "mentions":["bob@x"], "reply_to":"<acct>",
//!   "boost_of":"<acct>", "media":1, "cw":"…", "sensitive":true,
//!   "poll":["yes","no"], "counts":[replies, boosts, favourites, "<observed_at>", "<by>"],
//!   "source":"<configured source name>"}`
//! Only `acct`, `id` and (except for deletes) `at` are required; `kind`
//! defaults to `created`. A line `{"tick":true}` asks for an early emission of
//! the open windows; a line `{"config":{…}}` (first) configures the processor.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use fedistream_core::event::{Event, EventKind};
use fedistream_core::post::*;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub acct: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub edited: Option<DateTime<Utc>>,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub mentions: Vec<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub boost_of: Option<String>,
    #[serde(default)]
    pub media: usize,
    #[serde(default)]
    pub cw: String,
    #[serde(default)]
    pub sensitive: bool,
    #[serde(default)]
    pub poll: Vec<String>,
    #[serde(default)]
    pub counts: Option<(u64, u64, u64, DateTime<Utc>, String)>,
    /// The configured source that delivered it (default `fixture`).
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub tick: bool,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

pub enum Step {
    Event(Box<Event>),
    Tick,
}

pub fn parse(text: &str) -> (Option<serde_json::Value>, Vec<Step>) {
    let mut config = None;
    let mut steps = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() || l.trim_start().starts_with("//") {
            continue;
        }
        let line: Line = serde_json::from_str(l).unwrap_or_else(|e| panic!("fixture line {}: {e}", i + 1));
        if let Some(c) = line.config {
            config = Some(c);
        } else if line.tick {
            steps.push(Step::Tick);
        } else {
            steps.push(Step::Event(Box::new(event(&line))));
        }
    }
    (config, steps)
}

pub fn event(l: &Line) -> Event {
    let (user, host) = l.acct.split_once('@').expect("acct is user@host");
    let uri = format!("https://{host}/users/{user}/statuses/{}", l.id);
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let at = l.at.unwrap_or(epoch);
    let source = l.source.clone().unwrap_or_else(|| "fixture".into());
    let kind = match l.kind.as_deref().unwrap_or("created") {
        "created" => EventKind::Created,
        "updated" => EventKind::Updated,
        "deleted" => EventKind::Deleted,
        k => panic!("kind {k}"),
    };
    if kind == EventKind::Deleted {
        return Event {
            kind,
            key: uri,
            account: l.acct.clone(),
            status_id: l.id.clone(),
            instance: host.to_string(),
            source,
            via: Via::Stream,
            observed_at: at,
            post: None,
            counts_refresh: false,
        };
    }
    let (replies, reblogs, favourites, observed_at, observed_by) = l.counts.clone().unwrap_or((0, 0, 0, at, host.to_string()));
    let post = Post {
        id: l.id.clone(),
        uri,
        url: None,
        account: Account {
            id: format!("id-{user}"),
            acct: l.acct.clone(),
            display_name: user.to_string(),
            url: None,
            bot: false,
            discoverable: Some(true),
            indexable: Some(true),
            noindex: None,
            bio_tags: Default::default(),
        },
        created_at: l.at,
        edited_at: l.edited,
        visibility: Visibility::Public,
        language: l.lang.clone(),
        content_html: format!("<p>{}</p>", l.text),
        content_text: l.text.clone(),
        spoiler_text: l.cw.clone(),
        sensitive: l.sensitive,
        boost_of: l.boost_of.as_ref().map(|b| BoostOf {
            id: format!("b{}", l.id),
            uri: format!("https://{}/statuses/b{}", b.split('@').nth(1).unwrap_or("x"), l.id),
            url: None,
            account: b.clone(),
        }),
        in_reply_to: l.reply_to.as_ref().map(|r| InReplyTo { id: format!("r{}", l.id), account_id: None, account: Some(r.clone()) }),
        tags: l.tags.clone(),
        mentions: l.mentions.iter().map(|m| Mention { acct: m.clone(), url: None }).collect(),
        emojis: vec![],
        media: (0..l.media).map(|_| Media { kind: "image".into(), url: None, preview_url: None, description: None }).collect(),
        poll: (!l.poll.is_empty()).then(|| PollSummary {
            options: l.poll.iter().map(|t| PollOption { title: t.clone(), votes_count: None }).collect(),
            votes_count: None,
            voters_count: None,
            expires_at: None,
            expired: false,
            multiple: false,
        }),
        application: l.app.clone(),
        counts: Counts { replies, reblogs, favourites, observed_at, observed_by },
        provenance: Provenance { instance: host.to_string(), via: Via::Stream, received_at: at },
    };
    match kind {
        EventKind::Updated => Event::updated(&source, post),
        _ => Event::created(&source, post),
    }
}
