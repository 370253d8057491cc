//! [`MastodonSinkConfig`]: the `mastodon` channel's TOML table. Pure data plus
//! validation; resolving `connection` into a URL and token is the binary's job.

use std::time::Duration;

use fedistream_process::{FilterConfig, ReplyPolicy};
use serde::{Deserialize, Serialize};

pub use super::digest::DigestConfig;

/// How a received post appears on the target account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A new status rendered from the template, with fedistream's attribution line.
    #[default]
    Repost,
    /// Resolve the original on the target server and boost it.
    Boost,
}

/// Whether `@user` in a repost may notify that user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mentions {
    /// A zero-width space after `@`: the text reads the same, nobody is notified.
    #[default]
    Quiet,
    /// Mentions stay live (people mentioned in the original get notified again).
    Notify,
}

/// What to do with a post's attachments (repost mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaMode {
    /// Download and upload them again, with their alt text.
    #[default]
    Reupload,
    /// A `[media: URL]` line per attachment.
    Link,
    /// Leave them out.
    Skip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MastodonSinkConfig {
    /// Name of a `[connections.mastodon.NAME]` (the target server and its token).
    pub connection: String,
    pub mode: Mode,
    /// Body of a repost; placeholders `{text}`, `{acct}`, `{url}`,
    /// `{display_name}`, `{spoiler}`. The attribution line is always appended.
    pub template: String,
    /// Visibility of reposts and boosts.
    pub visibility: String,
    /// Set the repost's language to the original's.
    pub carry_language: bool,
    pub mentions: Mentions,
    pub media: MediaMode,
    pub include_boosts: bool,
    /// `self` (threads only), `all` or `none`.
    pub include_replies: ReplyPolicy,
    /// Tags, keywords, languages, `skip_sensitive` (its `include_*` fields are
    /// replaced by the two above).
    pub filter: FilterConfig,
    /// Skip posts with a content warning.
    pub skip_content_warned: bool,
    /// Propagate edits to the repost.
    pub edits: bool,
    /// Propagate deletions to the repost.
    pub deletes: bool,
    /// Posts, boosts and edits per window (Mastodon: 300 per 3 h per account).
    pub posts_per_window: u32,
    #[serde(with = "fedistream_core::units::duration")]
    pub post_window: Duration,
    /// Deletes and unboosts per window (Mastodon: 30 per 30 min).
    pub deletes_per_window: u32,
    #[serde(with = "fedistream_core::units::duration")]
    pub delete_window: Duration,
    /// Media uploads per window (Mastodon: 30 per 30 min).
    pub media_per_window: u32,
    #[serde(with = "fedistream_core::units::duration")]
    pub media_window: Duration,
    /// How many of the target account's latest statuses `open` scans for reposts
    /// already made (crash between a post and its map entry).
    pub reconcile_depth: u32,
    /// Post digests of stats records (the channel takes an `account_stats`
    /// processor's output) instead of republishing posts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestConfig>,
    pub delivery: fedistream_core::runtime::DeliveryConfig,
}

impl Default for MastodonSinkConfig {
    fn default() -> Self {
        MastodonSinkConfig {
            connection: String::new(),
            mode: Mode::Repost,
            template: "{text}".into(),
            visibility: "unlisted".into(),
            carry_language: true,
            mentions: Mentions::Quiet,
            media: MediaMode::Reupload,
            include_boosts: false,
            include_replies: ReplyPolicy::OnlySelf,
            filter: FilterConfig::default(),
            skip_content_warned: false,
            edits: true,
            deletes: true,
            posts_per_window: 300,
            post_window: Duration::from_secs(3 * 3600),
            deletes_per_window: 30,
            delete_window: Duration::from_secs(30 * 60),
            media_per_window: 30,
            media_window: Duration::from_secs(30 * 60),
            reconcile_depth: 200,
            digest: None,
            delivery: Default::default(),
        }
    }
}

const PLACEHOLDERS: [&str; 5] = ["text", "acct", "url", "display_name", "spoiler"];

impl MastodonSinkConfig {
    /// Reject values that can only be mistakes. Pure; names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.connection.trim().is_empty() {
            return Err("connection: name a [connections.mastodon.NAME]".into());
        }
        if !matches!(self.visibility.as_str(), "public" | "unlisted" | "private" | "direct") {
            return Err(format!("visibility: `{}` is not public, unlisted, private or direct", self.visibility));
        }
        let mut rest = self.template.as_str();
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else {
                return Err("template: unclosed `{`".into());
            };
            let name = &rest[i + 1..i + j];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!("template: unknown placeholder `{{{name}}}` (known: {})", PLACEHOLDERS.join(", ")));
            }
            rest = &rest[i + j + 1..];
        }
        for (field, n, w) in [
            ("posts_per_window", self.posts_per_window, self.post_window),
            ("deletes_per_window", self.deletes_per_window, self.delete_window),
            ("media_per_window", self.media_per_window, self.media_window),
        ] {
            if n == 0 || w.is_zero() {
                return Err(format!("{field}: must be at least 1 per a non-zero window"));
            }
        }
        if let Some(d) = &self.digest {
            d.validate()?;
        }
        self.filter.validate()
    }

    /// The route filter with this channel's boost and reply choices.
    pub(crate) fn effective_filter(&self) -> FilterConfig {
        FilterConfig { include_boosts: self.include_boosts, include_replies: self.include_replies, ..self.filter.clone() }
    }
}
