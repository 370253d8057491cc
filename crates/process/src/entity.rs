//! The raw Mastodon client-API entities, as servers actually send them.
//!
//! This module owns deserialisation only: `Status`, `Account` and the smaller
//! entities they embed, read leniently because the same API is spoken by Mastodon,
//! GoToSocial, Pleroma/Akkoma and others with different ideas of what is optional.
//! Ids are strings (a JSON number id is accepted and turned into one); every field
//! except a status's `id`/`uri`/`account` and an account's `id`/`acct` may be
//! missing or `null`; unknown fields are ignored; enum-like values (`visibility`,
//! media `type`) stay strings; a malformed timestamp becomes `None` instead of
//! failing the status; negative counts (an old Mastodon bug) read as 0.
//!
//! `account` is required on a status even though the brief for this crate allowed
//! everything optional: the author's `user@domain` is the event's partition key, and
//! a status without an author is better rejected here, with a clear message, than
//! published under an empty key. Every server we know of always sends it.
//!
//! Turning these into the normalised [`fedistream_core::post::Post`] is
//! [`mod@crate::normalize`]'s job; HTML handling is [`crate::html`]'s.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use fedistream_core::ErrorKind;

/// Why a payload could not be read as a status (or account).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or JSON of the wrong shape; serde_json's message carries the
    /// line and column.
    #[error("invalid Mastodon entity JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl ParseError {
    /// A payload that does not parse will not parse on retry either.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Permanent
    }
}

/// Parse one Status entity (REST body, SSE `data:` line, decoded WebSocket payload).
/// Never panics, whatever the input.
pub fn parse_status(json: &str) -> Result<Status, ParseError> {
    Ok(serde_json::from_str(json)?)
}

/// Parse one Account entity (`/api/v1/accounts/:id`, `verify_credentials`, lookup).
pub fn parse_account(json: &str) -> Result<Account, ParseError> {
    Ok(serde_json::from_str(json)?)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Status {
    #[serde(deserialize_with = "de::id")]
    pub id: String,
    /// ActivityPub id. For a boost, the Announce activity's URI.
    pub uri: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "de::timestamp")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "de::timestamp")]
    pub edited_at: Option<DateTime<Utc>>,
    pub account: Account,
    /// Sanitised HTML; `""` for boost wrappers; occasionally plain text (GoToSocial).
    #[serde(default, deserialize_with = "de::null_default")]
    pub content: String,
    /// GoToSocial: `text/plain` or `text/markdown` (the *source* format, not `content`'s).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Plain source text: only in DELETE responses and GoToSocial own posts.
    #[serde(default)]
    pub text: Option<String>,
    /// `public`, `unlisted`, `private`, `direct` or a server-specific value.
    #[serde(default, deserialize_with = "de::null_default")]
    pub visibility: String,
    #[serde(default, deserialize_with = "de::null_default")]
    pub sensitive: bool,
    #[serde(default, deserialize_with = "de::null_default")]
    pub spoiler_text: String,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default, deserialize_with = "de::opt_id")]
    pub in_reply_to_id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_id")]
    pub in_reply_to_account_id: Option<String>,
    #[serde(default)]
    pub reblog: Option<Box<Status>>,
    #[serde(default, deserialize_with = "de::null_default")]
    pub media_attachments: Vec<MediaAttachment>,
    #[serde(default, deserialize_with = "de::null_default")]
    pub mentions: Vec<Mention>,
    #[serde(default, deserialize_with = "de::null_default")]
    pub tags: Vec<Tag>,
    #[serde(default, deserialize_with = "de::null_default")]
    pub emojis: Vec<CustomEmoji>,
    #[serde(default)]
    pub poll: Option<Poll>,
    #[serde(default)]
    pub application: Option<Application>,
    #[serde(default, deserialize_with = "de::count")]
    pub replies_count: u64,
    #[serde(default, deserialize_with = "de::count")]
    pub reblogs_count: u64,
    #[serde(default, deserialize_with = "de::count")]
    pub favourites_count: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Account {
    #[serde(deserialize_with = "de::id")]
    pub id: String,
    /// `user` for accounts local to the serving instance, `user@domain` otherwise.
    pub acct: String,
    #[serde(default, deserialize_with = "de::null_default")]
    pub username: String,
    #[serde(default, deserialize_with = "de::null_default")]
    pub display_name: String,
    /// The bio, as HTML.
    #[serde(default, deserialize_with = "de::null_default")]
    pub note: String,
    /// Profile page.
    #[serde(default)]
    pub url: Option<String>,
    /// ActivityPub actor id (Mastodon 4.2+; absent on GoToSocial).
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default, deserialize_with = "de::null_default")]
    pub bot: bool,
    #[serde(default, deserialize_with = "de::null_default")]
    pub locked: bool,
    #[serde(default, deserialize_with = "de::null_default")]
    pub group: bool,
    #[serde(default)]
    pub discoverable: Option<bool>,
    #[serde(default)]
    pub indexable: Option<bool>,
    #[serde(default)]
    pub noindex: Option<bool>,
    #[serde(default, deserialize_with = "de::timestamp")]
    pub created_at: Option<DateTime<Utc>>,
    /// `YYYY-MM-DD` on Mastodon; kept verbatim.
    #[serde(default)]
    pub last_status_at: Option<String>,
    #[serde(default, deserialize_with = "de::count")]
    pub statuses_count: u64,
    #[serde(default, deserialize_with = "de::count")]
    pub followers_count: u64,
    #[serde(default, deserialize_with = "de::count")]
    pub following_count: u64,
    #[serde(default, deserialize_with = "de::null_default")]
    pub emojis: Vec<CustomEmoji>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MediaAttachment {
    #[serde(default, deserialize_with = "de::null_default_id")]
    pub id: String,
    /// `image`, `gifv`, `video`, `audio`, `unknown`, or whatever the server said.
    #[serde(rename = "type", default, deserialize_with = "de::null_default")]
    pub kind: String,
    /// `null` while the server is still processing the file.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub preview_url: Option<String>,
    /// The original on the author's server (`null` for local media).
    #[serde(default)]
    pub remote_url: Option<String>,
    #[serde(default)]
    pub preview_remote_url: Option<String>,
    /// Alt text.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub blurhash: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Mention {
    #[serde(default, deserialize_with = "de::null_default_id")]
    pub id: String,
    #[serde(default, deserialize_with = "de::null_default")]
    pub username: String,
    #[serde(default)]
    pub url: Option<String>,
    /// `user` when local to the serving instance, `user@domain` otherwise.
    #[serde(default, deserialize_with = "de::null_default")]
    pub acct: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Tag {
    /// May be lower-cased relative to the HTML.
    #[serde(default, deserialize_with = "de::null_default")]
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CustomEmoji {
    #[serde(default, deserialize_with = "de::null_default")]
    pub shortcode: String,
    #[serde(default, deserialize_with = "de::null_default")]
    pub url: String,
    #[serde(default)]
    pub static_url: Option<String>,
    #[serde(default)]
    pub visible_in_picker: Option<bool>,
    #[serde(default)]
    pub category: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Poll {
    #[serde(default, deserialize_with = "de::null_default_id")]
    pub id: String,
    #[serde(default, deserialize_with = "de::timestamp")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "de::null_default")]
    pub expired: bool,
    #[serde(default, deserialize_with = "de::null_default")]
    pub multiple: bool,
    #[serde(default, deserialize_with = "de::opt_count")]
    pub votes_count: Option<u64>,
    /// `null` unless the poll is multiple-choice.
    #[serde(default, deserialize_with = "de::opt_count")]
    pub voters_count: Option<u64>,
    #[serde(default, deserialize_with = "de::null_default")]
    pub options: Vec<PollOption>,
    #[serde(default, deserialize_with = "de::null_default")]
    pub emojis: Vec<CustomEmoji>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PollOption {
    #[serde(default, deserialize_with = "de::null_default")]
    pub title: String,
    /// `null` until the results are published.
    #[serde(default, deserialize_with = "de::opt_count")]
    pub votes_count: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Application {
    #[serde(default, deserialize_with = "de::null_default")]
    pub name: String,
    #[serde(default)]
    pub website: Option<String>,
}

mod de;

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"id":"1","uri":"https://a.example/s/1","account":{"id":"9","acct":"alice"}}"#;

    #[test]
    fn minimal_status_parses_with_defaults() {
        let s = parse_status(MINIMAL).unwrap();
        assert_eq!(s.id, "1");
        assert_eq!(s.account.acct, "alice");
        assert_eq!(s.content, "");
        assert_eq!(s.visibility, "");
        assert!(s.media_attachments.is_empty());
        assert!(s.created_at.is_none());
    }

    #[test]
    fn numeric_ids_become_strings() {
        let s = parse_status(r#"{"id":12345,"uri":"u","in_reply_to_id":7,"account":{"id":-3,"acct":"a"}}"#).unwrap();
        assert_eq!(s.id, "12345");
        assert_eq!(s.account.id, "-3");
        assert_eq!(s.in_reply_to_id.as_deref(), Some("7"));
    }

    #[test]
    fn nulls_where_arrays_and_strings_expected() {
        let s = parse_status(
            r#"{"id":"1","uri":"u","account":{"id":"9","acct":"a","note":null,"emojis":null},
               "content":null,"spoiler_text":null,"sensitive":null,"visibility":null,
               "media_attachments":null,"mentions":null,"tags":null,"emojis":null,
               "replies_count":null,"reblogs_count":-2,"favourites_count":3.0,
               "poll":{"options":null,"votes_count":null}}"#,
        )
        .unwrap();
        assert!(s.tags.is_empty() && s.mentions.is_empty());
        assert_eq!(s.content, "");
        assert_eq!((s.replies_count, s.reblogs_count, s.favourites_count), (0, 0, 3));
        let poll = s.poll.unwrap();
        assert!(poll.options.is_empty());
        assert_eq!(poll.votes_count, None);
    }

    #[test]
    fn timestamps_lenient() {
        let s = parse_status(
            r#"{"id":"1","uri":"u","account":{"id":"9","acct":"a","created_at":12},
               "created_at":"2022-11-15T16:08:30Z","edited_at":"yesterday"}"#,
        )
        .unwrap();
        assert_eq!(s.created_at.unwrap().to_rfc3339(), "2022-11-15T16:08:30+00:00");
        assert!(s.edited_at.is_none());
        assert!(s.account.created_at.is_none());
        for (input, ok) in [
            ("2022-11-15T16:08:30.1Z", true),
            ("2022-11-15T16:08:30.12Z", true),
            ("2022-11-15T16:08:30.123Z", true),
            ("2022-11-15T16:08:30.123+02:00", true),
            ("2022-11-15 16:08", false),
            ("", false),
        ] {
            assert_eq!(de::parse_rfc3339(input).is_some(), ok, "{input}");
        }
        let t = de::parse_rfc3339("2022-11-15T18:08:30.123+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2022-11-15T16:08:30.123+00:00");
    }

    #[test]
    fn unknown_enum_values_kept() {
        let s = parse_status(
            r#"{"id":"1","uri":"u","account":{"id":"9","acct":"a"},"visibility":"mutuals_only",
               "media_attachments":[{"id":"m","type":"3d-model","url":null}]}"#,
        )
        .unwrap();
        assert_eq!(s.visibility, "mutuals_only");
        assert_eq!(s.media_attachments[0].kind, "3d-model");
    }

    #[test]
    fn errors_say_what_and_where() {
        let err = parse_status(r#"{"id":"1","account":{"id":"9","acct":"a"}}"#).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("missing field `uri`"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(parse_status(r#"{"id":null,"uri":"u","account":{"id":"9","acct":"a"}}"#).is_err());
        assert!(parse_status("").is_err());
        assert!(parse_status("[]").is_err());
        assert!(parse_status(r#"{"id":"1","uri":"u"}"#).is_err(), "account is required");
    }

    #[test]
    fn account_parses_alone() {
        let a = parse_account(r#"{"id":"1","acct":"x@y.z","noindex":true,"bot":true}"#).unwrap();
        assert_eq!(a.noindex, Some(true));
        assert!(a.bot);
    }
}
