//! Events: the records that flow through the log. A post is a mutable keyed record;
//! each event says what happened to it (created, updated, deleted).
//!
//! The key is the status URI (stable across servers); the partition key is the
//! account (`user@domain`) so that one account's events stay in order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::post::{Post, Via};

pub mod json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

impl EventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
        }
    }
}

/// One change to one post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// Status URI: the record key.
    pub key: String,
    /// `user@domain`: the partition key.
    pub account: String,
    /// The status id on the server it was read from.
    pub status_id: String,
    /// Host of the server it was read from.
    pub instance: String,
    /// Name of the configured source that produced it (routes select on it).
    pub source: String,
    pub via: Via,
    pub observed_at: DateTime<Utc>,
    /// The post as of this event; `None` for deletions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<Post>,
    /// An `updated` event that only refreshes the post's interaction counts
    /// (the engagement refresh): the version is the one already published.
    /// Channels that show content (webhook presets, the mirror) skip it.
    /// In the JSON only when true (`"counts_refresh":true`, last).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counts_refresh: bool,
}

impl Event {
    pub fn created(source: &str, post: Post) -> Self {
        Self::with_post(EventKind::Created, source, post)
    }

    pub fn updated(source: &str, post: Post) -> Self {
        Self::with_post(EventKind::Updated, source, post)
    }

    fn with_post(kind: EventKind, source: &str, post: Post) -> Self {
        Event {
            kind,
            key: post.uri.clone(),
            account: post.account.acct.clone(),
            status_id: post.id.clone(),
            instance: post.provenance.instance.clone(),
            source: source.to_string(),
            via: post.provenance.via,
            observed_at: post.provenance.received_at,
            post: Some(post),
            counts_refresh: false,
        }
    }

    /// The event's JSON, as the log stores it: exactly `serde_json::to_string(self)`,
    /// written by the hot-path encoder ([`json`]).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(4096);
        json::write_event(&mut out, self);
        out
    }

    /// The version fingerprint used for deduplication: two deliveries of the same
    /// post with equal fingerprints are the same event. It covers what an edit can
    /// change, not the interaction counts (which change constantly and would turn
    /// every REST re-read into an update).
    pub fn fingerprint(&self) -> String {
        match (&self.kind, &self.post) {
            (EventKind::Deleted, _) | (_, None) => DELETED_FINGERPRINT.to_string(),
            (_, Some(p)) => version_fingerprint(
                p.edited_at,
                &p.content_html,
                &p.spoiler_text,
                p.sensitive,
                p.visibility.as_str(),
                p.media.iter().map(|m| m.description.as_deref()),
                p.poll.iter().flat_map(|poll| poll.options.iter().map(|o| o.title.as_str())),
            ),
        }
    }
}

/// [`Event::fingerprint`] of a deletion (or an event without a post).
pub const DELETED_FINGERPRINT: &str = "deleted";

/// [`Event::fingerprint`] of a post's version, from the parts of the post an
/// edit can change: for readers that decode only those parts of an event's
/// JSON (the statistics processor), so both give the same fingerprint.
pub fn version_fingerprint<'a>(
    edited_at: Option<DateTime<Utc>>,
    content_html: &str,
    spoiler_text: &str,
    sensitive: bool,
    visibility: &str,
    media_descriptions: impl IntoIterator<Item = Option<&'a str>>,
    poll_titles: impl IntoIterator<Item = &'a str>,
) -> String {
    format!("{:016x}", version_hash(edited_at, content_html, spoiler_text, sensitive, visibility, media_descriptions, poll_titles))
}

/// The number a post version's fingerprint is the 16 hex digits of
/// ([`version_fingerprint`]): for readers that keep it as a number.
pub fn version_hash<'a>(
    edited_at: Option<DateTime<Utc>>,
    content_html: &str,
    spoiler_text: &str,
    sensitive: bool,
    visibility: &str,
    media_descriptions: impl IntoIterator<Item = Option<&'a str>>,
    poll_titles: impl IntoIterator<Item = &'a str>,
) -> u64 {
    use std::hash::Hasher;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        edited_at.map(|t| t.to_rfc3339()).unwrap_or_default().as_str(),
        content_html,
        spoiler_text,
        if sensitive { "s" } else { "-" },
        visibility,
    ] {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    for d in media_descriptions {
        h.write(d.unwrap_or("").as_bytes());
        h.write_u8(0);
    }
    for t in poll_titles {
        h.write(t.as_bytes());
        h.write_u8(0);
    }
    h.finish()
}

/// An event ready for the log: what the ingestor needs to deduplicate it, and
/// its JSON — written once, by the source that made it, right after the post
/// was parsed, while it is still in the CPU's caches (encoding a batch of
/// thousands of posts later, in the ingestor, cost three times as much: every
/// string had to come back from memory). The post itself is dropped here too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    kind: EventKind,
    key: String,
    account: String,
    status_id: String,
    fingerprint: String,
    json: std::sync::Arc<str>,
    /// A refresh of the interaction counts ([`Self::counts_refresh`]).
    counts_refresh: bool,
    /// The ingest unit it was read for ([`Self::set_owner`]); not stored.
    owner: Option<std::sync::Arc<str>>,
}

impl EncodedEvent {
    pub fn new(ev: &Event) -> Self {
        EncodedEvent {
            kind: ev.kind,
            key: ev.key.clone(),
            account: ev.account.clone(),
            status_id: ev.status_id.clone(),
            fingerprint: ev.fingerprint(),
            json: ev.to_json().into(),
            counts_refresh: ev.counts_refresh,
            owner: None,
        }
    }

    /// Mark the ingest unit this event was read for (the followed account's
    /// `source/account`, or the source's name): its dedup-index entry is state
    /// owned by that unit ([`crate::log::StatePut::owner`]).
    pub fn set_owner(&mut self, owner: Option<std::sync::Arc<str>>) {
        self.owner = owner;
    }

    /// The ingest unit it was read for, if its source said ([`Self::set_owner`]).
    pub fn owner(&self) -> Option<&std::sync::Arc<str>> {
        self.owner.as_ref()
    }

    /// Mark this event as a refresh of the post's interaction counts: an
    /// `updated` event that the ingestor keeps even when its version
    /// (fingerprint) is the one already stored — the counts are not part of the
    /// fingerprint, so deduplication would otherwise drop it. It is still
    /// dropped for a deleted post. Downstream it is an `updated` event whose
    /// fingerprint equals the previous version's and whose JSON says
    /// `"counts_refresh":true` ([`Event::counts_refresh`]): channels that care
    /// about content only (the mirror, webhook presets) see nothing new.
    pub fn counts_refresh(mut self) -> Self {
        self.set_kind(EventKind::Updated);
        if !self.counts_refresh {
            // The encoder writes the flag last, so it goes before the closing brace.
            if let Some(body) = self.json.strip_suffix('}') {
                self.json = format!("{body},\"counts_refresh\":true}}").into();
            }
            self.counts_refresh = true;
        }
        self
    }

    /// Whether [`Self::counts_refresh`] marked it.
    pub fn is_counts_refresh(&self) -> bool {
        self.counts_refresh
    }

    pub fn kind(&self) -> EventKind {
        self.kind
    }
    /// The record key (status URI).
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The partition key (`user@domain`).
    pub fn account(&self) -> &str {
        &self.account
    }
    pub fn status_id(&self) -> &str {
        &self.status_id
    }
    /// [`Event::fingerprint`].
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    /// The event's JSON as the log stores it (`Event::to_json`).
    pub fn json(&self) -> &std::sync::Arc<str> {
        &self.json
    }

    /// Change the kind (deduplication turns a `created` it has seen before into
    /// an `updated`). Rare: the JSON is rewritten.
    pub fn set_kind(&mut self, kind: EventKind) {
        if kind == self.kind {
            return;
        }
        let old = format!("{{\"kind\":\"{}\"", self.kind.as_str());
        // The encoder always writes the kind first.
        let rest = self.json.strip_prefix(old.as_str()).unwrap_or_default();
        self.json = format!("{{\"kind\":\"{}\"{rest}", kind.as_str()).into();
        self.kind = kind;
    }

    /// What the log stores: the partition key (account) and the JSON.
    pub fn into_stored(self) -> (String, std::sync::Arc<str>) {
        (self.account, self.json)
    }

    /// The event back from its JSON.
    pub fn decode(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

/// Encode each event (tests and tools that build batches of whole events).
pub fn encode_all(events: impl IntoIterator<Item = Event>) -> Vec<EncodedEvent> {
    events.into_iter().map(EncodedEvent::from).collect()
}

impl From<Event> for EncodedEvent {
    /// Encode, moving the identity out of the event instead of copying it.
    fn from(ev: Event) -> Self {
        let fingerprint = ev.fingerprint();
        let json = ev.to_json().into();
        let counts_refresh = ev.counts_refresh;
        EncodedEvent {
            kind: ev.kind,
            key: ev.key,
            account: ev.account,
            status_id: ev.status_id,
            fingerprint,
            json,
            counts_refresh,
            owner: None,
        }
    }
}

/// Where a record sits in the log. The embedded log has one partition; Kafka has many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// An event as read back from the log: its stored JSON, decoded on first use
/// (a channel that only forwards the JSON, like the file channel, never pays for
/// decoding). Clones share the decoded event.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub position: Position,
    pub appended_at: DateTime<Utc>,
    /// The event's stored JSON serialisation.
    pub payload: std::sync::Arc<str>,
    decoded: std::sync::Arc<std::sync::OnceLock<Result<Event, String>>>,
}

impl LogRecord {
    pub fn new(position: Position, appended_at: DateTime<Utc>, payload: std::sync::Arc<str>) -> Self {
        LogRecord { position, appended_at, payload, decoded: Default::default() }
    }

    /// A record holding `event` (serialised as the log would store it).
    pub fn from_event(position: Position, appended_at: DateTime<Utc>, event: Event) -> Self {
        let payload = event.to_json();
        let decoded = std::sync::OnceLock::new();
        let _ = decoded.set(Ok(event));
        LogRecord { position, appended_at, payload: payload.into(), decoded: std::sync::Arc::new(decoded) }
    }

    /// The event's kind, read from the head of the stored JSON — the encoder
    /// writes `kind` first — without decoding the rest (a feed that names each
    /// record's kind must not pay a full decode per record); a payload in
    /// another form is decoded.
    pub fn kind(&self) -> Result<EventKind, crate::error::LogError> {
        let head = self.payload.strip_prefix("{\"kind\":\"").and_then(|rest| rest.split_once('"')).map(|(k, _)| k);
        match head {
            Some("created") => Ok(EventKind::Created),
            Some("updated") => Ok(EventKind::Updated),
            Some("deleted") => Ok(EventKind::Deleted),
            _ => self.event().map(|e| e.kind),
        }
    }

    /// The event, decoded once. An error means the stored payload is not a valid
    /// event (written by another version, or damaged).
    pub fn event(&self) -> Result<&Event, crate::error::LogError> {
        self.decoded
            .get_or_init(|| serde_json::from_str(&self.payload).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|reason| crate::error::LogError::Corrupt { offset: self.position.offset, reason: reason.clone() })
    }

    /// The JSON line channels write: the event's fields plus `partition` and `offset`,
    /// built without re-serialising the event.
    pub fn to_json_line(&self) -> String {
        let mut line = Vec::with_capacity(self.payload.len() + 48);
        // Writing into a Vec cannot fail.
        let _ = self.write_json_line(&mut line);
        String::from_utf8(line).unwrap_or_default()
    }

    /// [`Self::to_json_line`] written straight into `w`, without a newline.
    pub fn write_json_line(&self, w: &mut impl std::io::Write) -> std::io::Result<usize> {
        let body = self.payload.trim_start();
        let rest = body.strip_prefix('{').unwrap_or(body);
        let (mut p, mut o) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (p, o) = (p.format(self.position.partition), o.format(self.position.offset));
        let head = [b"{\"partition\":".as_slice(), p.as_bytes(), b",\"offset\":", o.as_bytes()];
        for part in head {
            w.write_all(part)?;
        }
        let head: usize = head.iter().map(|h| h.len()).sum();
        if rest.trim_start().starts_with('}') {
            w.write_all(b"}")?;
            Ok(head + 1)
        } else {
            w.write_all(b",")?;
            w.write_all(rest.as_bytes())?;
            Ok(head + 1 + rest.len())
        }
    }
}

/// What [`LogRecord::to_json_line`] writes, read back (channels that resume from
/// their own output use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct LinePosition {
    pub partition: u32,
    pub offset: u64,
}

impl LinePosition {
    /// The position at the start of a line [`LogRecord::write_json_line`] wrote
    /// (`{"partition":P,"offset":O,…`). Read from the prefix, not by parsing the
    /// whole line: the record's own fields may use the same names (a processor's
    /// output), which a whole-line parse would reject as duplicates.
    pub fn of_line(line: &str) -> Option<LinePosition> {
        let rest = line.trim_start().strip_prefix("{\"partition\":")?;
        let end = rest.find(|c: char| !c.is_ascii_digit())?;
        let partition = rest[..end].parse().ok()?;
        let rest = rest[end..].strip_prefix(",\"offset\":")?;
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let offset = rest[..end].parse().ok()?;
        matches!(rest[end..].chars().next(), Some(',') | Some('}')).then_some(LinePosition { partition, offset })
    }
}
