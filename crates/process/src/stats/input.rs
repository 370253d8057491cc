//! What the statistics read of an event, decoded from its stored JSON without
//! the rest: a status is 1.5–9 KB of JSON, of which the statistics need the
//! identity, the event time, what [`super::facts::Facts`] counts and what the
//! version fingerprint covers. Strings borrow from the payload where it has no
//! escapes; everything else in it is skipped, not built.
//!
//! [`Input::of`] takes the same view of an already decoded [`Event`], so both
//! paths feed the same code.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use fedistream_core::event::{version_fingerprint, Event, EventKind, DELETED_FINGERPRINT};
use fedistream_core::post::Post;
use serde::{Deserialize, Deserializer};

/// A string of the payload: borrowed unless it had escapes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Str<'a>(pub Cow<'a, str>);

impl std::fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.as_ref().fmt(f)
    }
}

impl<'a> Str<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    fn borrowed(s: &'a str) -> Self {
        Str(Cow::Borrowed(s))
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A long string of the payload (a post's HTML or text), kept as the JSON
/// it is in the payload and unescaped only when read, into a buffer reused
/// from event to event: a status's HTML always has escapes (its attributes'
/// quotes), and copying kilobytes out per event cost more than reading them.
#[derive(Clone, Copy)]
pub enum Text<'a> {
    Plain(&'a str),
    Json(&'a serde_json::value::RawValue),
}

thread_local! {
    /// [`Text::with`]'s buffers (one per nesting level; two are enough).
    static SCRATCH: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Text<'_> {
    /// Call `f` with the text.
    pub fn with<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        let raw = match self {
            Text::Plain(s) => return f(s),
            Text::Json(raw) => raw.get(),
        };
        // No escapes: the text is what is between the quotes.
        if !raw.contains('\\') {
            if let Some(s) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                return f(s);
            }
        }
        let mut buf = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
        buf.clear();
        // A RawValue is valid JSON; anything but a string reads as empty.
        let _ = serde::Deserializer::deserialize_str(&mut serde_json::Deserializer::from_str(raw), AppendStr(&mut buf));
        let r = f(&buf);
        SCRATCH.with(|s| s.borrow_mut().push(buf));
        r
    }
}

/// Appends the string it visits (serde_json hands over its own unescaped
/// scratch: nothing is allocated but the buffer's growth).
struct AppendStr<'b>(&'b mut String);

impl<'de> serde::de::Visitor<'de> for AppendStr<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'a serde_json::value::RawValue>::deserialize(d)?;
        if !raw.get().starts_with('"') {
            return Err(serde::de::Error::custom("expected a string"));
        }
        Ok(Text::Json(raw))
    }
}

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with(|s| s.fmt(f))
    }
}

/// The statistics' view of one event.
#[derive(Debug, Deserialize)]
pub struct Input<'a> {
    pub kind: EventKind,
    /// Status URI.
    #[serde(borrow)]
    pub key: Str<'a>,
    /// `user@domain`, as the event has it (the processor lower-cases it).
    #[serde(borrow)]
    pub account: Str<'a>,
    /// The configured source that produced it.
    #[serde(borrow)]
    pub source: Str<'a>,
    pub observed_at: DateTime<Utc>,
    #[serde(default, borrow)]
    pub post: Option<PostInput<'a>>,
}

/// The statistics' view of a post.
#[derive(Debug, Deserialize)]
pub struct PostInput<'a> {
    #[serde(borrow)]
    pub account: AccountInput<'a>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub edited_at: Option<DateTime<Utc>>,
    #[serde(borrow)]
    pub visibility: Str<'a>,
    #[serde(default, borrow)]
    pub language: Option<Str<'a>>,
    #[serde(default = "no_text", borrow)]
    pub content_html: Text<'a>,
    #[serde(default = "no_text", borrow)]
    pub content_text: Text<'a>,
    #[serde(default = "empty", borrow)]
    pub spoiler_text: Str<'a>,
    #[serde(default)]
    pub sensitive: bool,
    #[serde(default, borrow)]
    pub boost_of: Option<BoostInput<'a>>,
    #[serde(default, borrow)]
    pub in_reply_to: Option<ReplyInput<'a>>,
    #[serde(default, borrow)]
    pub tags: Vec<Str<'a>>,
    #[serde(default, borrow)]
    pub mentions: Vec<MentionInput<'a>>,
    #[serde(default, borrow)]
    pub media: Vec<MediaInput<'a>>,
    #[serde(default, borrow)]
    pub poll: Option<PollInput<'a>>,
    #[serde(default, borrow)]
    pub application: Option<Str<'a>>,
    #[serde(borrow)]
    pub counts: CountsInput<'a>,
}

fn no_text() -> Text<'static> {
    Text::Plain("")
}

fn empty() -> Str<'static> {
    Str(Cow::Borrowed(""))
}

#[derive(Debug, Deserialize)]
pub struct AccountInput<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(borrow)]
    pub acct: Str<'a>,
}

#[derive(Debug, Deserialize)]
pub struct BoostInput<'a> {
    #[serde(borrow)]
    pub account: Str<'a>,
}

#[derive(Debug, Deserialize)]
pub struct ReplyInput<'a> {
    #[serde(default, borrow)]
    pub account_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub account: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct MentionInput<'a> {
    #[serde(borrow)]
    pub acct: Str<'a>,
}

#[derive(Debug, Deserialize)]
pub struct MediaInput<'a> {
    #[serde(default, borrow)]
    pub description: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct PollInput<'a> {
    #[serde(default, borrow)]
    pub options: Vec<PollOptionInput<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct PollOptionInput<'a> {
    #[serde(borrow)]
    pub title: Str<'a>,
}

#[derive(Debug, Deserialize)]
pub struct CountsInput<'a> {
    #[serde(default)]
    pub replies: u64,
    #[serde(default)]
    pub reblogs: u64,
    #[serde(default)]
    pub favourites: u64,
    pub observed_at: DateTime<Utc>,
    #[serde(borrow)]
    pub observed_by: Str<'a>,
}

impl<'a> Input<'a> {
    /// Decode the statistics' view from an event's stored JSON.
    pub fn parse(payload: &'a str) -> Result<Input<'a>, serde_json::Error> {
        serde_json::from_str(payload)
    }

    /// The same view of a decoded event (borrowing from it).
    pub fn of(ev: &'a Event) -> Input<'a> {
        Input {
            kind: ev.kind,
            key: Str::borrowed(&ev.key),
            account: Str::borrowed(&ev.account),
            source: Str::borrowed(&ev.source),
            observed_at: ev.observed_at,
            post: ev.post.as_ref().map(PostInput::of),
        }
    }

    /// [`Event::fingerprint`], from the view.
    pub fn fingerprint(&self) -> String {
        match (&self.kind, &self.post) {
            (EventKind::Deleted, _) | (_, None) => DELETED_FINGERPRINT.to_string(),
            (_, Some(p)) => p.content_html.with(|html| {
                version_fingerprint(
                    p.edited_at,
                    html,
                    &p.spoiler_text,
                    p.sensitive,
                    &p.visibility,
                    p.media.iter().map(|m| m.description.as_ref().map(Str::as_str)),
                    p.poll.iter().flat_map(|poll| poll.options.iter().map(|o| o.title.as_str())),
                )
            }),
        }
    }
}

impl<'a> PostInput<'a> {
    pub fn of(p: &'a Post) -> PostInput<'a> {
        let b = |s: &'a String| Str::borrowed(s);
        PostInput {
            account: AccountInput { id: b(&p.account.id), acct: b(&p.account.acct) },
            created_at: p.created_at,
            edited_at: p.edited_at,
            visibility: Str::borrowed(p.visibility.as_str()),
            language: p.language.as_ref().map(b),
            content_html: Text::Plain(&p.content_html),
            content_text: Text::Plain(&p.content_text),
            spoiler_text: b(&p.spoiler_text),
            sensitive: p.sensitive,
            boost_of: p.boost_of.as_ref().map(|x| BoostInput { account: b(&x.account) }),
            in_reply_to: p
                .in_reply_to
                .as_ref()
                .map(|r| ReplyInput { account_id: r.account_id.as_ref().map(b), account: r.account.as_ref().map(b) }),
            tags: p.tags.iter().map(b).collect(),
            mentions: p.mentions.iter().map(|m| MentionInput { acct: b(&m.acct) }).collect(),
            media: p.media.iter().map(|m| MediaInput { description: m.description.as_ref().map(b) }).collect(),
            poll: p
                .poll
                .as_ref()
                .map(|poll| PollInput { options: poll.options.iter().map(|o| PollOptionInput { title: b(&o.title) }).collect() }),
            application: p.application.as_ref().map(b),
            counts: CountsInput {
                replies: p.counts.replies,
                reblogs: p.counts.reblogs,
                favourites: p.counts.favourites,
                observed_at: p.counts.observed_at,
                observed_by: b(&p.counts.observed_by),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistream_core::post::{BoostOf, InReplyTo, Media, Mention, PollOption, PollSummary};

    /// A post with every field the view reads, and escapes in its strings.
    fn full_post() -> Post {
        let mut p = fedistream_core::testing::post("Ada@Social.example", 7, "héllo \"quoted\" https://www.example.org/x #Rust");
        p.edited_at = Some(p.created_at.unwrap() + chrono::Duration::minutes(3));
        p.language = Some("EN".into());
        p.spoiler_text = "cw\ttext".into();
        p.sensitive = true;
        p.tags = vec!["Rust".into(), "#fedi".into()];
        p.mentions = vec![Mention { acct: "@bob@x.example".into(), url: None }];
        p.media = vec![
            Media { kind: "image".into(), url: None, preview_url: None, description: Some("a \"cat\"".into()) },
            Media { kind: "image".into(), url: None, preview_url: None, description: None },
        ];
        p.poll = Some(PollSummary {
            options: vec![PollOption { title: "yes".into(), votes_count: None }, PollOption { title: "no\n".into(), votes_count: Some(2) }],
            votes_count: None,
            voters_count: None,
            expires_at: None,
            expired: false,
            multiple: false,
        });
        p.in_reply_to = Some(InReplyTo { id: "1".into(), account_id: Some("1".into()), account: Some("ada@social.example".into()) });
        p.application = Some("Tusky".into());
        p.counts.replies = 3;
        p.counts.reblogs = 4;
        p.counts.favourites = 5;
        p
    }

    #[test]
    fn the_view_of_the_payload_is_the_view_of_the_event() {
        let mut boost = fedistream_core::testing::post("ada@social.example", 8, "");
        boost.boost_of = Some(BoostOf { id: "9".into(), uri: "u".into(), url: None, account: "Bob@X.example".into() });
        let events = [
            Event::created("src", full_post()),
            Event::updated("src", full_post()),
            Event::created("src", boost),
            Event { kind: EventKind::Deleted, post: None, ..Event::created("src", full_post()) },
        ];
        for ev in &events {
            let json = ev.to_json();
            let parsed = Input::parse(&json).unwrap();
            let of = Input::of(ev);
            assert_eq!(parsed.fingerprint(), ev.fingerprint(), "the fingerprint is the event's");
            assert_eq!(of.fingerprint(), ev.fingerprint());
            assert_eq!(format!("{parsed:?}"), format!("{of:?}"), "decoding the payload reads what the event holds");
        }
    }

    #[test]
    fn a_payload_that_is_not_an_event_is_an_error() {
        assert!(Input::parse("{not json").is_err());
        assert!(Input::parse(r#"{"kind":"created"}"#).is_err(), "the identity is required");
    }
}
