//! Typed route filters: which events a channel wants.
//!
//! This module owns the filter configuration (a serde struct, part of a route's
//! TOML), its validation, and matching an [`Event`] against it. There is no
//! expression language: each field is one well-defined test and all of them must
//! pass. Consent (may this be published at all?) is [`crate::consent`]'s job and
//! has already happened; delivering to the channel is the runtime's.
//!
//! Matching runs per event per channel, so configs are compiled once
//! ([`FilterConfig::compile`]) into lower-cased sets.
//!
//! Semantics worth knowing:
//! * Deleted events carry no post. They pass `kinds` and `accounts` like any event,
//!   and pass every content test: a channel must learn about the deletion of a post
//!   it may have received, and we cannot tell any more whether it did.
//! * `accounts` match the event's account (for a boost, the booster).
//! * Content tests (`languages`, `tags_*`, `keywords_*`, `skip_sensitive`) look at the
//!   post's own content. A boost has none of its own (its content is the empty
//!   wrapper's; see [`mod@crate::normalize`]), so it fails `languages`, `tags_any` and
//!   `keywords_any` and passes the `_none` tests; route boosts with `include_boosts`
//!   and `accounts`.
//! * `languages`: a post with no language (common for remote posts) does not match a
//!   non-empty list. `en` matches `en` and `en-GB`; `en-GB` matches only `en-GB`.
//! * Keywords are case-insensitive substrings of the text and the content warning.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use fedistream_core::event::{Event, EventKind};
use fedistream_core::post::Post;

/// Which replies a channel wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyPolicy {
    /// Every reply.
    #[default]
    #[serde(rename = "all")]
    All,
    /// Only replies to the author's own posts (threads).
    #[serde(rename = "self")]
    OnlySelf,
    /// No replies at all.
    #[serde(rename = "none")]
    Exclude,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Event kinds to pass; empty means all.
    pub kinds: Vec<EventKind>,
    /// Accounts (`user@domain`, a leading `@` allowed, case-insensitive); empty means all.
    pub accounts: Vec<String>,
    /// Language codes; empty means all.
    pub languages: Vec<String>,
    pub include_boosts: bool,
    pub include_replies: ReplyPolicy,
    /// At least one of these hashtags (without `#`, case-insensitive).
    pub tags_any: Vec<String>,
    /// None of these hashtags.
    pub tags_none: Vec<String>,
    /// At least one of these in the text or content warning.
    pub keywords_any: Vec<String>,
    /// None of these in the text or content warning.
    pub keywords_none: Vec<String>,
    /// Drop posts marked sensitive.
    pub skip_sensitive: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            kinds: Vec::new(),
            accounts: Vec::new(),
            languages: Vec::new(),
            include_boosts: true,
            include_replies: ReplyPolicy::All,
            tags_any: Vec::new(),
            tags_none: Vec::new(),
            keywords_any: Vec::new(),
            keywords_none: Vec::new(),
            skip_sensitive: false,
        }
    }
}

impl FilterConfig {
    /// Reject values that can only be mistakes. Pure; says which field and value.
    pub fn validate(&self) -> Result<(), String> {
        let lists = [
            ("accounts", &self.accounts),
            ("languages", &self.languages),
            ("tags_any", &self.tags_any),
            ("tags_none", &self.tags_none),
            ("keywords_any", &self.keywords_any),
            ("keywords_none", &self.keywords_none),
        ];
        for (field, list) in lists {
            if list.iter().any(|s| s.trim().is_empty()) {
                return Err(format!("filter.{field}: empty entry"));
            }
        }
        for a in &self.accounts {
            let bare = a.strip_prefix('@').unwrap_or(a);
            match bare.split_once('@') {
                Some((user, domain)) if !user.is_empty() && !domain.is_empty() && !domain.contains('@') => {}
                _ => return Err(format!("filter.accounts: `{a}` is not `user@domain`")),
            }
        }
        for l in &self.languages {
            if !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("filter.languages: `{l}` is not a language code"));
            }
        }
        for (field, list) in [("tags_any", &self.tags_any), ("tags_none", &self.tags_none)] {
            if let Some(t) = list.iter().find(|t| normalize_tag(t).is_empty() || t.chars().any(char::is_whitespace)) {
                return Err(format!("filter.{field}: `{t}` is not a hashtag"));
            }
        }
        let compiled = self.compile();
        if let Some(t) = compiled.tags_any.intersection(&compiled.tags_none).next() {
            return Err(format!("filter: tag `{t}` is in both tags_any and tags_none"));
        }
        if let Some(k) = compiled.keywords_any.iter().find(|k| compiled.keywords_none.contains(k)) {
            return Err(format!("filter: keyword `{k}` is in both keywords_any and keywords_none"));
        }
        Ok(())
    }

    /// The matcher for this configuration. Compile once per route, not per event.
    pub fn compile(&self) -> CompiledFilter {
        let lower = |v: &[String]| -> Vec<String> { v.iter().map(|s| s.to_lowercase()).collect() };
        CompiledFilter {
            kinds: self.kinds.iter().fold(0u8, |m, k| m | kind_bit(*k)),
            accounts: self.accounts.iter().map(|a| a.strip_prefix('@').unwrap_or(a).to_lowercase()).collect(),
            languages: lower(&self.languages),
            include_boosts: self.include_boosts,
            include_replies: self.include_replies,
            tags_any: self.tags_any.iter().map(|t| normalize_tag(t)).collect(),
            tags_none: self.tags_none.iter().map(|t| normalize_tag(t)).collect(),
            keywords_any: lower(&self.keywords_any),
            keywords_none: lower(&self.keywords_none),
            skip_sensitive: self.skip_sensitive,
        }
    }

    /// Convenience for one-off checks; compiles on every call. Routes should hold a
    /// [`CompiledFilter`].
    pub fn matches(&self, ev: &Event) -> bool {
        self.compile().matches(ev)
    }
}

fn normalize_tag(t: &str) -> String {
    t.trim().trim_start_matches('#').to_lowercase()
}

fn kind_bit(k: EventKind) -> u8 {
    match k {
        EventKind::Created => 1,
        EventKind::Updated => 2,
        EventKind::Deleted => 4,
    }
}

/// Lower-case `s` only if it has anything to lower.
fn lower(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_uppercase) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// A [`FilterConfig`] ready to run: lower-cased sets, kinds as a bit mask.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    kinds: u8,
    accounts: HashSet<String>,
    languages: Vec<String>,
    include_boosts: bool,
    include_replies: ReplyPolicy,
    tags_any: HashSet<String>,
    tags_none: HashSet<String>,
    keywords_any: Vec<String>,
    keywords_none: Vec<String>,
    skip_sensitive: bool,
}

impl CompiledFilter {
    pub fn matches(&self, ev: &Event) -> bool {
        if self.kinds != 0 && self.kinds & kind_bit(ev.kind) == 0 {
            return false;
        }
        if !self.accounts.is_empty() && !self.accounts.contains(lower(&ev.account).as_ref()) {
            return false;
        }
        match &ev.post {
            // Deletions pass every content test (see the module doc).
            None => true,
            Some(post) => self.post_matches(post),
        }
    }

    fn post_matches(&self, post: &Post) -> bool {
        if !self.include_boosts && post.boost_of.is_some() {
            return false;
        }
        if let Some(reply) = &post.in_reply_to {
            let wanted = match self.include_replies {
                ReplyPolicy::All => true,
                ReplyPolicy::OnlySelf => reply.account_id.as_deref() == Some(&post.account.id),
                ReplyPolicy::Exclude => false,
            };
            if !wanted {
                return false;
            }
        }
        if self.skip_sensitive && post.sensitive {
            return false;
        }
        if !self.languages.is_empty() && !self.language_matches(post.language.as_deref()) {
            return false;
        }
        if !self.tags_any.is_empty() || !self.tags_none.is_empty() {
            let mut any = false;
            for tag in &post.tags {
                let tag = lower(tag);
                if self.tags_none.contains(tag.as_ref()) {
                    return false;
                }
                any = any || self.tags_any.contains(tag.as_ref());
            }
            if !self.tags_any.is_empty() && !any {
                return false;
            }
        }
        if !self.keywords_any.is_empty() || !self.keywords_none.is_empty() {
            let text = lower(&post.content_text);
            let spoiler = lower(&post.spoiler_text);
            let has = |k: &String| text.contains(k.as_str()) || spoiler.contains(k.as_str());
            if self.keywords_none.iter().any(has) {
                return false;
            }
            if !self.keywords_any.is_empty() && !self.keywords_any.iter().any(has) {
                return false;
            }
        }
        true
    }

    fn language_matches(&self, lang: Option<&str>) -> bool {
        let Some(lang) = lang else { return false };
        let lang = lang.to_ascii_lowercase();
        self.languages.iter().any(|want| {
            lang == *want || (lang.len() > want.len() && lang.starts_with(want.as_str()) && lang.as_bytes()[want.len()] == b'-')
        })
    }
}

#[cfg(test)]
mod tests;
