//! What the statistics read of an event, decoded from its stored JSON without
//! the rest: a status is 1.5–9 KB of JSON, of which the statistics need the
//! identity, the event time, what [`super::facts::Facts`] counts and what the
//! version fingerprint covers. Strings borrow from the payload where it has no
//! escapes; everything else in it is skipped, not built.
//!
//! The decoder is written by hand ([`Cursor`]): serde_json walked every byte of
//! the fields it skipped and of the long strings it kept, which was a fifth of
//! the processor's time. Strings are crossed with `memchr` from escape to
//! escape; escapes are checked as they are crossed (so unescaping later cannot
//! fail), skipped values are checked for their structure (brackets, commas,
//! literals) but not byte by byte (control characters in a skipped string, a
//! malformed skipped number): the payloads are the log's own JSON.
//!
//! [`Input::of`] takes the same view of an already decoded [`Event`], so both
//! paths feed the same code.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, Utc};
use fedistream_core::event::{version_hash, Event, EventKind, DELETED_FINGERPRINT};

use super::account::Fingerprint;
use fedistream_core::post::Post;

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

/// A long string of the payload (a post's HTML or text), kept as it is in
/// the payload and unescaped only when read, into a buffer reused from event
/// to event: a status's HTML always has escapes (its attributes' quotes), and
/// copying kilobytes out per event cost more than reading them.
#[derive(Clone, Copy)]
pub enum Text<'a> {
    Plain(&'a str),
    /// The JSON string's contents between its quotes, escapes included (checked).
    Escaped(&'a str),
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
            Text::Escaped(raw) => raw,
        };
        let mut buf = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
        buf.clear();
        unescape(raw, &mut buf);
        let r = f(&buf);
        SCRATCH.with(|s| s.borrow_mut().push(buf));
        r
    }
}

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with(|s| s.fmt(f))
    }
}

/// Append the unescaped contents of a JSON string (as [`Cursor::raw_str`]
/// checked them) to `out`.
fn unescape(raw: &str, out: &mut String) {
    let b = raw.as_bytes();
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &b[i..]).map(|at| i + at) {
        out.push_str(&raw[i..at]);
        let (c, len) = match b.get(at + 1) {
            Some(b'n') => ('\n', 2),
            Some(b't') => ('\t', 2),
            Some(b'r') => ('\r', 2),
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'u') => {
                let u = hex4(b, at + 2).unwrap_or(0xfffd);
                match (u, hex4(b, at + 8)) {
                    (0xd800..0xdc00, Some(lo)) if b.get(at + 6) == Some(&b'\\') => {
                        (char::from_u32(0x10000 + ((u - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff)).unwrap_or('\u{fffd}'), 12)
                    }
                    _ => (char::from_u32(u).unwrap_or('\u{fffd}'), 6),
                }
            }
            // `"`, `\\`, `/`.
            Some(&c) => (c as char, 2),
            None => break,
        };
        out.push(c);
        i = (at + len).min(b.len());
    }
    out.push_str(&raw[i.min(b.len())..]);
}

/// The four hex digits at `at`.
fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let d = b.get(at..at + 4)?;
    let mut v = 0;
    for &c in d {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

type Result<T> = std::result::Result<T, serde_json::Error>;

/// Nesting deeper than this is refused (serde_json's limit too), so a
/// hostile payload cannot exhaust the stack.
const MAX_DEPTH: u32 = 128;

/// Reads JSON from a payload, front to back.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    #[cold]
    #[inline(never)]
    fn err<T>(&self, what: &str) -> Result<T> {
        Err(serde::de::Error::custom(format_args!("{what} at byte {} of the event's JSON", self.i)))
    }

    #[cold]
    #[inline(never)]
    fn expected<T>(&self, c: u8) -> Result<T> {
        self.err(&format!("expected `{}`", c as char))
    }

    /// The next byte after white space.
    fn peek(&mut self) -> Option<u8> {
        let b = self.s.as_bytes();
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(self.i) {
            self.i += 1;
        }
        b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Result<()> {
        // (The log's JSON is compact: no white space to skip first.)
        if self.s.as_bytes().get(self.i) == Some(&c) || self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.expected(c)
        }
    }

    /// The contents of a string between its quotes as the payload has them,
    /// and whether they have escapes (each checked).
    fn raw_str(&mut self) -> Result<(&'a str, bool)> {
        self.eat(b'"')?;
        let b = self.s.as_bytes();
        let start = self.i;
        let mut escaped = false;
        loop {
            // Most strings (member names, ids, dates) end within a few bytes:
            // those are looked at one by one, not worth a call to memchr.
            let near = b.len().min(self.i + 24);
            match b[self.i..near].iter().position(|&c| c == b'"' || c == b'\\') {
                Some(at) => self.i += at,
                None => match memchr::memchr2(b'"', b'\\', &b[near..]) {
                    Some(at) => self.i = near + at,
                    None => return self.err("unterminated string"),
                },
            }
            if b[self.i] == b'"' {
                self.i += 1;
                // (Both ends are ASCII quotes: character boundaries.)
                return Ok((&self.s[start..self.i - 1], escaped));
            }
            escaped = true;
            self.i += match b.get(self.i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                Some(b'u') => match hex4(b, self.i + 2) {
                    Some(0xd800..0xdc00) if b.get(self.i + 6..self.i + 8) == Some(b"\\u") => match hex4(b, self.i + 8) {
                        Some(0xdc00..0xe000) => 12,
                        _ => return self.err("unpaired surrogate"),
                    },
                    Some(0xd800..0xe000) => return self.err("unpaired surrogate"),
                    Some(_) => 6,
                    None => return self.err("invalid \\u escape"),
                },
                _ => return self.err("invalid escape"),
            };
        }
    }

    fn str(&mut self) -> Result<Str<'a>> {
        Ok(match self.raw_str()? {
            (s, false) => Str(Cow::Borrowed(s)),
            (s, true) => {
                let mut out = String::with_capacity(s.len());
                unescape(s, &mut out);
                Str(Cow::Owned(out))
            }
        })
    }

    fn text(&mut self) -> Result<Text<'a>> {
        Ok(match self.raw_str()? {
            (s, false) => Text::Plain(s),
            (s, true) => Text::Escaped(s),
        })
    }

    fn literal(&mut self, word: &str) -> Result<()> {
        self.peek();
        if self.s.as_bytes()[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            self.err(&format!("expected `{word}`"))
        }
    }

    /// `None` for `null`, else what `f` reads.
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.peek() == Some(b'n') {
            self.literal("null")?;
            return Ok(None);
        }
        f(self).map(Some)
    }

    fn bool(&mut self) -> Result<bool> {
        match self.peek() {
            Some(b't') => self.literal("true").map(|_| true),
            _ => self.literal("false").map(|_| false),
        }
    }

    /// A non-negative integer (what serde reads into a `u64`).
    fn u64(&mut self) -> Result<u64> {
        self.peek();
        let b = self.s.as_bytes();
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&c @ b'0'..=b'9') = b.get(self.i) {
            let Some(n) = v.checked_mul(10).and_then(|v| v.checked_add((c - b'0') as u64)) else {
                return self.err("integer out of range");
            };
            v = n;
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && b[start] == b'0') || matches!(b.get(self.i), Some(b'.' | b'e' | b'E')) {
            return self.err("expected a non-negative integer");
        }
        Ok(v)
    }

    fn time(&mut self) -> Result<DateTime<Utc>> {
        let s = self.str()?;
        if let Some(t) = utc_time(&s) {
            return Ok(t);
        }
        // As chrono's serde implementation reads it.
        match s.parse::<DateTime<FixedOffset>>() {
            Ok(t) => Ok(t.with_timezone(&Utc)),
            Err(e) => self.err(&format!("{e}")),
        }
    }

    /// Each member of an object: `f` reads the value of the ones it wants and
    /// calls [`Cursor::skip`] for the others.
    fn object(&mut self, mut f: impl FnMut(&mut Self, &str) -> Result<()>) -> Result<()> {
        self.eat(b'{')?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            match self.raw_str()? {
                (k, false) => {
                    self.eat(b':')?;
                    f(self, k)?;
                }
                (k, true) => {
                    let mut key = String::new();
                    unescape(k, &mut key);
                    self.eat(b':')?;
                    f(self, &key)?;
                }
            }
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected `,` or `}`"),
            }
        }
    }

    /// Each element of an array.
    fn array(&mut self, mut f: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.eat(b'[')?;
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            f(self)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected `,` or `]`"),
            }
        }
    }

    fn list<T>(&mut self, mut f: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.array(|c| f(c).map(|v| out.push(v)))?;
        Ok(out)
    }

    /// Step over a value of any kind.
    fn skip(&mut self) -> Result<()> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: u32) -> Result<()> {
        if depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        match self.peek() {
            Some(b'"') => self.raw_str().map(|_| ()),
            Some(b'{') => self.object(|c, _| c.skip_nested(depth + 1)),
            Some(b'[') => self.array(|c| c.skip_nested(depth + 1)),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => {
                let b = self.s.as_bytes();
                let start = self.i;
                while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = b.get(self.i) {
                    self.i += 1;
                }
                if b[start..self.i].iter().any(u8::is_ascii_digit) {
                    Ok(())
                } else {
                    self.err("expected a number")
                }
            }
            _ => self.err("expected a value"),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (what the log's events have), read
/// without chrono's general RFC 3339 parser; `None` for anything else
/// (offsets, lower-case separators, leap seconds, out-of-range fields),
/// which is left to it.
fn utc_time(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| b.get(r)?.iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + (c - b'0') as u32));
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[b.len() - 1] != b'Z' {
        return None;
    }
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => num(20..b.len() - 1)? * 10u32.pow(9 - digits.len() as u32),
        _ => return None,
    };
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if sec > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    Some(date.and_hms_nano_opt(h, m, sec, nanos)?.and_utc())
}

/// A required member that was missing.
fn missing<T>(what: &str) -> Result<T> {
    Err(serde::de::Error::custom(format_args!("missing field `{what}` in the event's JSON")))
}

/// The statistics' view of one event.
#[derive(Debug)]
pub struct Input<'a> {
    pub kind: EventKind,
    /// Status URI.
    pub key: Str<'a>,
    /// `user@domain`, as the event has it (the processor lower-cases it).
    pub account: Str<'a>,
    /// The configured source that produced it.
    pub source: Str<'a>,
    pub observed_at: DateTime<Utc>,
    pub post: Option<PostInput<'a>>,
}

/// The statistics' view of a post.
#[derive(Debug)]
pub struct PostInput<'a> {
    pub account: AccountInput<'a>,
    pub created_at: Option<DateTime<Utc>>,
    pub edited_at: Option<DateTime<Utc>>,
    pub visibility: Str<'a>,
    pub language: Option<Str<'a>>,
    pub content_html: Text<'a>,
    pub content_text: Text<'a>,
    pub spoiler_text: Str<'a>,
    pub sensitive: bool,
    pub boost_of: Option<BoostInput<'a>>,
    pub in_reply_to: Option<ReplyInput<'a>>,
    pub tags: Vec<Str<'a>>,
    pub mentions: Vec<MentionInput<'a>>,
    pub media: Vec<MediaInput<'a>>,
    pub poll: Option<PollInput<'a>>,
    pub application: Option<Str<'a>>,
    pub counts: CountsInput<'a>,
}

#[derive(Debug)]
pub struct AccountInput<'a> {
    pub id: Str<'a>,
    pub acct: Str<'a>,
}

#[derive(Debug)]
pub struct BoostInput<'a> {
    pub account: Str<'a>,
}

#[derive(Debug)]
pub struct ReplyInput<'a> {
    pub account_id: Option<Str<'a>>,
    pub account: Option<Str<'a>>,
}

#[derive(Debug)]
pub struct MentionInput<'a> {
    pub acct: Str<'a>,
}

#[derive(Debug)]
pub struct MediaInput<'a> {
    pub description: Option<Str<'a>>,
}

#[derive(Debug)]
pub struct PollInput<'a> {
    pub options: Vec<PollOptionInput<'a>>,
}

#[derive(Debug)]
pub struct PollOptionInput<'a> {
    pub title: Str<'a>,
}

#[derive(Debug)]
pub struct CountsInput<'a> {
    pub replies: u64,
    pub reblogs: u64,
    pub favourites: u64,
    pub observed_at: DateTime<Utc>,
    pub observed_by: Str<'a>,
}

impl<'a> Cursor<'a> {
    fn input(&mut self) -> Result<Input<'a>> {
        let (mut kind, mut key, mut account, mut source, mut observed_at, mut post) = (None, None, None, None, None, None);
        self.object(|c, k| {
            match k {
                "kind" => {
                    kind = Some(match c.str()?.as_str() {
                        "created" => EventKind::Created,
                        "updated" => EventKind::Updated,
                        "deleted" => EventKind::Deleted,
                        _ => return c.err("unknown event kind (expected `created`, `updated` or `deleted`)"),
                    })
                }
                "key" => key = Some(c.str()?),
                "account" => account = Some(c.str()?),
                "source" => source = Some(c.str()?),
                "observed_at" => observed_at = Some(c.time()?),
                "post" => post = c.opt(Cursor::post)?,
                _ => c.skip()?,
            }
            Ok(())
        })?;
        if self.peek().is_some() {
            return self.err("trailing characters");
        }
        Ok(Input {
            kind: kind.map_or_else(|| missing("kind"), Ok)?,
            key: key.map_or_else(|| missing("key"), Ok)?,
            account: account.map_or_else(|| missing("account"), Ok)?,
            source: source.map_or_else(|| missing("source"), Ok)?,
            observed_at: observed_at.map_or_else(|| missing("observed_at"), Ok)?,
            post,
        })
    }

    fn post(&mut self) -> Result<PostInput<'a>> {
        let (mut account, mut created_at, mut edited_at, mut visibility, mut language) = (None, None, None, None, None);
        let (mut content_html, mut content_text, mut spoiler_text, mut sensitive) =
            (Text::Plain(""), Text::Plain(""), Str::borrowed(""), false);
        let (mut boost_of, mut in_reply_to, mut tags, mut mentions, mut media, mut poll) = (None, None, vec![], vec![], vec![], None);
        let (mut application, mut counts) = (None, None);
        self.object(|c, k| {
            match k {
                "account" => {
                    let (mut id, mut acct) = (None, None);
                    c.object(|c, k| match k {
                        "id" => c.str().map(|s| id = Some(s)),
                        "acct" => c.str().map(|s| acct = Some(s)),
                        _ => c.skip(),
                    })?;
                    account = Some(AccountInput {
                        id: id.map_or_else(|| missing("post.account.id"), Ok)?,
                        acct: acct.map_or_else(|| missing("post.account.acct"), Ok)?,
                    });
                }
                "created_at" => created_at = c.opt(Cursor::time)?,
                "edited_at" => edited_at = c.opt(Cursor::time)?,
                "visibility" => visibility = Some(c.str()?),
                "language" => language = c.opt(Cursor::str)?,
                "content_html" => content_html = c.text()?,
                "content_text" => content_text = c.text()?,
                "spoiler_text" => spoiler_text = c.str()?,
                "sensitive" => sensitive = c.bool()?,
                "boost_of" => {
                    boost_of = c.opt(|c| {
                        let mut account = None;
                        c.object(|c, k| match k {
                            "account" => c.str().map(|s| account = Some(s)),
                            _ => c.skip(),
                        })?;
                        Ok(BoostInput { account: account.map_or_else(|| missing("post.boost_of.account"), Ok)? })
                    })?
                }
                "in_reply_to" => {
                    in_reply_to = c.opt(|c| {
                        let (mut account_id, mut account) = (None, None);
                        c.object(|c, k| match k {
                            "account_id" => c.opt(Cursor::str).map(|s| account_id = s),
                            "account" => c.opt(Cursor::str).map(|s| account = s),
                            _ => c.skip(),
                        })?;
                        Ok(ReplyInput { account_id, account })
                    })?
                }
                "tags" => tags = c.list(Cursor::str)?,
                "mentions" => {
                    mentions = c.list(|c| {
                        let mut acct = None;
                        c.object(|c, k| match k {
                            "acct" => c.str().map(|s| acct = Some(s)),
                            _ => c.skip(),
                        })?;
                        Ok(MentionInput { acct: acct.map_or_else(|| missing("post.mentions.acct"), Ok)? })
                    })?
                }
                "media" => {
                    media = c.list(|c| {
                        let mut description = None;
                        c.object(|c, k| match k {
                            "description" => c.opt(Cursor::str).map(|s| description = s),
                            _ => c.skip(),
                        })?;
                        Ok(MediaInput { description })
                    })?
                }
                "poll" => {
                    poll = c.opt(|c| {
                        let mut options = vec![];
                        c.object(|c, k| match k {
                            "options" => {
                                options = c.list(|c| {
                                    let mut title = None;
                                    c.object(|c, k| match k {
                                        "title" => c.str().map(|s| title = Some(s)),
                                        _ => c.skip(),
                                    })?;
                                    Ok(PollOptionInput { title: title.map_or_else(|| missing("post.poll.options.title"), Ok)? })
                                })?;
                                Ok(())
                            }
                            _ => c.skip(),
                        })?;
                        Ok(PollInput { options })
                    })?
                }
                "application" => application = c.opt(Cursor::str)?,
                "counts" => {
                    let (mut replies, mut reblogs, mut favourites, mut observed_at, mut observed_by) = (0, 0, 0, None, None);
                    c.object(|c, k| match k {
                        "replies" => c.u64().map(|n| replies = n),
                        "reblogs" => c.u64().map(|n| reblogs = n),
                        "favourites" => c.u64().map(|n| favourites = n),
                        "observed_at" => c.time().map(|t| observed_at = Some(t)),
                        "observed_by" => c.str().map(|s| observed_by = Some(s)),
                        _ => c.skip(),
                    })?;
                    counts = Some(CountsInput {
                        replies,
                        reblogs,
                        favourites,
                        observed_at: observed_at.map_or_else(|| missing("post.counts.observed_at"), Ok)?,
                        observed_by: observed_by.map_or_else(|| missing("post.counts.observed_by"), Ok)?,
                    });
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(PostInput {
            account: account.map_or_else(|| missing("post.account"), Ok)?,
            created_at,
            edited_at,
            visibility: visibility.map_or_else(|| missing("post.visibility"), Ok)?,
            language,
            content_html,
            content_text,
            spoiler_text,
            sensitive,
            boost_of,
            in_reply_to,
            tags,
            mentions,
            media,
            poll,
            application,
            counts: counts.map_or_else(|| missing("post.counts"), Ok)?,
        })
    }
}

impl<'a> Input<'a> {
    /// Decode the statistics' view from an event's stored JSON.
    pub fn parse(payload: &'a str) -> Result<Input<'a>> {
        Cursor { s: payload, i: 0 }.input()
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
    pub fn fingerprint(&self) -> Fingerprint {
        match (&self.kind, &self.post) {
            (EventKind::Deleted, _) | (_, None) => Fingerprint::Text(DELETED_FINGERPRINT.into()),
            (_, Some(p)) => Fingerprint::Hex(p.content_html.with(|html| {
                version_hash(
                    p.edited_at,
                    html,
                    &p.spoiler_text,
                    p.sensitive,
                    &p.visibility,
                    p.media.iter().map(|m| m.description.as_ref().map(Str::as_str)),
                    p.poll.iter().flat_map(|poll| poll.options.iter().map(|o| o.title.as_str())),
                )
            })),
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
            assert_eq!(parsed.fingerprint().to_string(), ev.fingerprint(), "the fingerprint is the event's");
            assert_eq!(of.fingerprint().to_string(), ev.fingerprint());
            assert_eq!(format!("{parsed:?}"), format!("{of:?}"), "decoding the payload reads what the event holds");
        }
    }

    #[test]
    fn white_space_unknown_members_and_escapes_decode_as_serde_does() {
        let ev = Event::created("src", full_post());
        let mut v = serde_json::to_value(&ev).unwrap();
        v["zzz"] = serde_json::json!({"a": [1, -2.5e-3, true, false, null, {"b": "c\\\"d\u{1F600}"}], "e": []});
        v["post"]["extra"] = serde_json::json!([[], {}, "x", 0]);
        v["post"]["account"]["acct"] = serde_json::json!("Ada\t@social.example\u{7f}\u{1}");
        for json in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
            let ev: Event = serde_json::from_str(&json).unwrap();
            let parsed = Input::parse(&json).unwrap();
            assert_eq!(format!("{parsed:?}"), format!("{:?}", Input::of(&ev)));
            assert_eq!(parsed.fingerprint().to_string(), ev.fingerprint());
        }
        // Escapes serde_json does not write, and an escaped member name.
        let json = ev.to_json().replacen(r#""source":"src""#, r#""sour\u0063e":"\u0073r\/c\ud83d\ude00\b\f\n\r\t\"\\""#, 1);
        assert_eq!(&*Input::parse(&json).unwrap().source, "sr/c\u{1F600}\u{8}\u{c}\n\r\t\"\\");
    }

    #[test]
    fn utc_times_are_read_as_chrono_reads_them() {
        let chrono = |s: &str| s.parse::<DateTime<FixedOffset>>().ok().map(|t| t.with_timezone(&Utc));
        for s in [
            "2026-11-01T08:02:59.210Z",
            "2026-12-07T20:38:50.789855394Z",
            "2026-12-07T20:38:50Z",
            "2026-12-07T20:38:50.7Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "2024-02-29T12:00:00Z",
            "2023-02-29T12:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-07T24:00:00Z",
            "2026-12-07T23:60:00Z",
            "2026-12-31T23:59:60Z",
            "2026-12-07T20:38:50.Z",
            "2026-12-07T20:38:50.1234567890Z",
            "2026-12-07t20:38:50Z",
            "2026-12-07 20:38:50Z",
            "2026-12-07T20:38:50z",
            "2026-12-07T20:38:50+00:00",
            "2026-12-07T20:38:50.5+02:00",
            "+2026-12-07T20:38:50Z",
            "2026-1a-07T20:38:50Z",
            "2026-12-07T20:38:5Z",
        ] {
            if let Some(t) = utc_time(s) {
                assert_eq!(Some(t), chrono(s), "{s}");
            }
            let json = format!(r#""{s}""#);
            let read = Cursor { s: &json, i: 0 }.time().ok();
            assert_eq!(read, chrono(s), "{s}");
        }
        assert!(utc_time("2026-12-07T20:38:50.789855394Z").is_some());
        assert!(utc_time("2026-12-07T20:38:50Z").is_some());
    }

    #[test]
    fn a_payload_that_is_not_an_event_is_an_error() {
        assert!(Input::parse("{not json").is_err());
        assert!(Input::parse(r#"{"kind":"created"}"#).is_err(), "the identity is required");
        let json = Event::created("src", full_post()).to_json();
        assert!(Input::parse(&json).is_ok());
        // Every truncation is an error (and none panics).
        for (at, _) in json.char_indices() {
            assert!(Input::parse(&json[..at]).is_err(), "{}", &json[..at]);
        }
        let bad = [
            json.replacen(r#""source":"src""#, r#""source":"s\xrc""#, 1),
            json.replacen(r#""source":"src""#, r#""source":"\ud800""#, 1),
            json.replacen(r#""source":"src""#, r#""source":"\udc00\ud800""#, 1),
            json.replacen(r#""source":"src""#, r#""source":"\u12""#, 1),
            json.replacen(r#""source":"src""#, r#""source":null"#, 1),
            json.replacen(r#""kind":"created""#, r#""kind":"made""#, 1),
            json.replacen(r#""replies":3"#, r#""replies":1.5"#, 1),
            json.replacen(r#""replies":3"#, r#""replies":-3"#, 1),
            json.replacen(r#""replies":3"#, r#""replies":03"#, 1),
            json.replacen(r#""replies":3"#, r#""replies":99999999999999999999"#, 1),
            json.replacen(r#""sensitive":true"#, r#""sensitive":tru"#, 1),
            format!("{json} x"),
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
            json.replacen(r#""kind":"created""#, &format!(r#""deep":{}{},"kind":"created""#, "[".repeat(200), "]".repeat(200)), 1),
        ];
        for b in &bad {
            assert_ne!(b, &json);
            assert!(Input::parse(b).is_err(), "{b}");
        }
        assert!(Input::parse(&format!("  {json}\n")).is_ok(), "white space around the event");
    }
}
