//! The normalised post: what every channel receives, whatever server it came from.
//!
//! This module owns the data shape only (serde, no I/O, nothing async). Turning a
//! Mastodon `Status` into a [`Post`] is `fedistream-process`'s job; deciding what to
//! publish is the source's and the route filters'.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A status as fedistream keeps it. Ids are opaque strings: Mastodon numbers,
/// GoToSocial ULIDs and Akkoma flake ids are all just text here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    pub id: String,
    /// ActivityPub id; the event key. For a boost, the Announce activity's URI.
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub account: Account,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    pub visibility: Visibility,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default)]
    pub content_html: String,
    #[serde(default)]
    pub content_text: String,
    #[serde(default)]
    pub spoiler_text: String,
    #[serde(default)]
    pub sensitive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boost_of: Option<BoostOf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<InReplyTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<Mention>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emojis: Vec<Emoji>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<PollSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    pub counts: Counts,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// The account's id on the server the post was read from.
    pub id: String,
    /// Always `user@domain`, with the domain, even for accounts local to the server.
    pub acct: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub bot: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discoverable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noindex: Option<bool>,
    /// Consent hashtags found in the account's bio.
    #[serde(default)]
    pub bio_tags: BioTags,
}

/// `#nobot`, `#noindex`, `#nobridge` in an account's bio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BioTags {
    #[serde(default)]
    pub nobot: bool,
    #[serde(default)]
    pub noindex: bool,
    #[serde(default)]
    pub nobridge: bool,
}

impl BioTags {
    pub fn any(&self) -> bool {
        self.nobot || self.noindex || self.nobridge
    }
}

/// Visibility as the server reported it. Unknown values (GoToSocial `mutuals_only`,
/// Akkoma `local`/`list`) are kept verbatim and treated as non-public.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Visibility {
    Public,
    Unlisted,
    Private,
    Direct,
    Other(String),
}

impl Visibility {
    pub fn as_str(&self) -> &str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
            Visibility::Private => "private",
            Visibility::Direct => "direct",
            Visibility::Other(s) => s,
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "public" => Visibility::Public,
            "unlisted" => Visibility::Unlisted,
            "private" => Visibility::Private,
            "direct" => Visibility::Direct,
            other => Visibility::Other(other.to_string()),
        }
    }
}

impl Serialize for Visibility {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Visibility {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Visibility::parse(&s))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoostOf {
    pub id: String,
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `user@domain` of the boosted post's author.
    pub account: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InReplyTo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// `user@domain` when known (self-replies, or a mention of the parent's author).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mention {
    /// `user@domain`.
    pub acct: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emoji {
    pub shortcode: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Media {
    /// `image`, `gifv`, `video`, `audio`, `unknown`, or what the server said.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollSummary {
    pub options: Vec<PollOption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub votes_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voters_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expired: bool,
    #[serde(default)]
    pub multiple: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollOption {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub votes_count: Option<u64>,
}

/// Interaction counts as known to the server that served the post, at a moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    #[serde(default)]
    pub replies: u64,
    #[serde(default)]
    pub reblogs: u64,
    #[serde(default)]
    pub favourites: u64,
    pub observed_at: DateTime<Utc>,
    /// Host of the server whose view these counts are.
    pub observed_by: String,
}

/// How a post reached fedistream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Stream,
    Rest,
    Replay,
}

impl Via {
    pub fn as_str(&self) -> &'static str {
        match self {
            Via::Stream => "stream",
            Via::Rest => "rest",
            Via::Replay => "replay",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Host (and port, if any) of the server the post was read from.
    pub instance: String,
    pub via: Via,
    pub received_at: DateTime<Utc>,
}
