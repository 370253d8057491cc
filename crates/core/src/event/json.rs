//! The hot-path encoder of [`Event`]s: the bytes `serde_json::to_vec(&event)`
//! produces, written directly.
//!
//! Every event is encoded once when it is appended (~3 KB of JSON each). Through
//! serde_json that took about 3 µs per event, half of it in serde_json's
//! byte-at-a-time string escaping and much of the rest in formatting timestamps
//! through `fmt`. Here strings are scanned eight bytes at a time and timestamps
//! are written digit by digit, for the same output: the tests compare this
//! encoder byte for byte with serde_json's on fixtures, synthetic posts and
//! arbitrary events, and every struct is destructured without `..`, so a field
//! added to the model does not compile until it is written here too.
//! Decoding stays serde's.

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::Event;
use crate::post::{Account, BioTags, BoostOf, Counts, Emoji, InReplyTo, Media, Mention, PollOption, PollSummary, Post, Provenance};

/// `serde_json::to_string(event)`, appended to `out`, faster.
pub fn write_event(out: &mut String, ev: &Event) {
    let Event { kind, key, account, status_id, instance, source, via, observed_at, post, counts_refresh } = ev;
    let mut o = Obj::new(out);
    o.raw_str("kind", kind.as_str());
    o.str("key", key);
    o.str("account", account);
    o.str("status_id", status_id);
    o.str("instance", instance);
    o.str("source", source);
    o.raw_str("via", via.as_str());
    o.time("observed_at", observed_at);
    if let Some(p) = post {
        o.key("post");
        write_post(o.out, p);
    }
    if *counts_refresh {
        o.bool("counts_refresh", true);
    }
    o.end();
}

fn write_post(out: &mut String, p: &Post) {
    let Post {
        id,
        uri,
        url,
        account,
        created_at,
        edited_at,
        visibility,
        language,
        content_html,
        content_text,
        spoiler_text,
        sensitive,
        boost_of,
        in_reply_to,
        tags,
        mentions,
        emojis,
        media,
        poll,
        application,
        counts,
        provenance,
    } = p;
    let mut o = Obj::new(out);
    o.str("id", id);
    o.str("uri", uri);
    o.opt_str("url", url);
    o.key("account");
    write_account(o.out, account);
    if let Some(t) = created_at {
        o.time("created_at", t);
    }
    if let Some(t) = edited_at {
        o.time("edited_at", t);
    }
    o.str("visibility", visibility.as_str());
    o.opt_str("language", language);
    o.str("content_html", content_html);
    o.str("content_text", content_text);
    o.str("spoiler_text", spoiler_text);
    o.bool("sensitive", *sensitive);
    if let Some(BoostOf { id, uri, url, account }) = boost_of {
        o.key("boost_of");
        let mut b = Obj::new(o.out);
        b.str("id", id);
        b.str("uri", uri);
        b.opt_str("url", url);
        b.str("account", account);
        b.end();
    }
    if let Some(InReplyTo { id, account_id, account }) = in_reply_to {
        o.key("in_reply_to");
        let mut r = Obj::new(o.out);
        r.str("id", id);
        r.opt_str("account_id", account_id);
        r.opt_str("account", account);
        r.end();
    }
    if !tags.is_empty() {
        o.key("tags");
        o.array(tags, |out, t| string(out, t));
    }
    if !mentions.is_empty() {
        o.key("mentions");
        o.array(mentions, |out, Mention { acct, url }| {
            let mut m = Obj::new(out);
            m.str("acct", acct);
            m.opt_str("url", url);
            m.end();
        });
    }
    if !emojis.is_empty() {
        o.key("emojis");
        o.array(emojis, |out, Emoji { shortcode, url }| {
            let mut e = Obj::new(out);
            e.str("shortcode", shortcode);
            e.str("url", url);
            e.end();
        });
    }
    if !media.is_empty() {
        o.key("media");
        o.array(media, |out, Media { kind, url, preview_url, description }| {
            let mut m = Obj::new(out);
            m.str("kind", kind);
            m.opt_str("url", url);
            m.opt_str("preview_url", preview_url);
            m.opt_str("description", description);
            m.end();
        });
    }
    if let Some(PollSummary { options, votes_count, voters_count, expires_at, expired, multiple }) = poll {
        o.key("poll");
        let mut q = Obj::new(o.out);
        q.key("options");
        q.array(options, |out, PollOption { title, votes_count }| {
            let mut p = Obj::new(out);
            p.str("title", title);
            if let Some(n) = votes_count {
                p.u64("votes_count", *n);
            }
            p.end();
        });
        if let Some(n) = votes_count {
            q.u64("votes_count", *n);
        }
        if let Some(n) = voters_count {
            q.u64("voters_count", *n);
        }
        if let Some(t) = expires_at {
            q.time("expires_at", t);
        }
        q.bool("expired", *expired);
        q.bool("multiple", *multiple);
        q.end();
    }
    o.opt_str("application", application);
    let Counts { replies, reblogs, favourites, observed_at, observed_by } = counts;
    o.key("counts");
    let mut c = Obj::new(o.out);
    c.u64("replies", *replies);
    c.u64("reblogs", *reblogs);
    c.u64("favourites", *favourites);
    c.time("observed_at", observed_at);
    c.str("observed_by", observed_by);
    c.end();
    let Provenance { instance, via, received_at } = provenance;
    o.key("provenance");
    let mut v = Obj::new(o.out);
    v.str("instance", instance);
    v.raw_str("via", via.as_str());
    v.time("received_at", received_at);
    v.end();
    o.end();
}

fn write_account(out: &mut String, a: &Account) {
    let Account { id, acct, display_name, url, bot, discoverable, indexable, noindex, bio_tags } = a;
    let mut o = Obj::new(out);
    o.str("id", id);
    o.str("acct", acct);
    o.str("display_name", display_name);
    o.opt_str("url", url);
    o.bool("bot", *bot);
    for (name, v) in [("discoverable", discoverable), ("indexable", indexable), ("noindex", noindex)] {
        if let Some(v) = v {
            o.bool(name, *v);
        }
    }
    let BioTags { nobot, noindex, nobridge } = bio_tags;
    o.key("bio_tags");
    let mut b = Obj::new(o.out);
    b.bool("nobot", *nobot);
    b.bool("noindex", *noindex);
    b.bool("nobridge", *nobridge);
    b.end();
    o.end();
}

/// A JSON object being written: keys are plain ASCII names that need no escaping.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
    }

    fn str(&mut self, name: &str, v: &str) {
        self.key(name);
        string(self.out, v);
    }

    /// A value known to need no escaping (enum names).
    fn raw_str(&mut self, name: &str, v: &str) {
        self.key(name);
        self.out.push('"');
        self.out.push_str(v);
        self.out.push('"');
    }

    /// `skip_serializing_if = "Option::is_none"`.
    fn opt_str(&mut self, name: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.str(name, v);
        }
    }

    fn bool(&mut self, name: &str, v: bool) {
        self.key(name);
        self.out.push_str(if v { "true" } else { "false" });
    }

    fn u64(&mut self, name: &str, v: u64) {
        self.key(name);
        self.out.push_str(itoa::Buffer::new().format(v));
    }

    fn time(&mut self, name: &str, t: &DateTime<Utc>) {
        self.key(name);
        time(self.out, t);
    }

    fn array<T>(&mut self, items: &[T], mut each: impl FnMut(&mut String, &T)) {
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            each(self.out, item);
        }
        self.out.push(']');
    }

    fn end(self) {
        self.out.push('}');
    }
}

/// Bytes of `word` (little-endian) that JSON strings must escape: `"`, `\` and
/// controls below 0x20, as a mask with the high bit of each such byte set. A
/// borrow can only mark bytes *above* a true match, so the lowest mark is exact.
#[inline]
fn escapes_in(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    control | has_zero(word ^ (ONES * b'"' as u64)) | has_zero(word ^ (ONES * b'\\' as u64))
}

/// A JSON string, escaped exactly as serde_json escapes it.
pub(crate) fn string(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    let mut start = 0; // first byte not yet copied
    let mut i = 0;
    while i < bytes.len() {
        // Skip eight clean bytes at a time.
        if i + 8 <= bytes.len() {
            let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("eight bytes"));
            let marks = escapes_in(word);
            if marks == 0 {
                i += 8;
                continue;
            }
            i += (marks.trailing_zeros() / 8) as usize;
        }
        let b = bytes[i];
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "\\u00",
            _ => {
                i += 1;
                continue;
            }
        };
        // `i` is at an ASCII byte: a char boundary.
        out.push_str(&s[start..i]);
        out.push_str(escape);
        if escape == "\\u00" {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A timestamp as chrono serialises it (RFC 3339, `Z`, fractional digits only as
/// many as needed in groups of three).
fn time(out: &mut String, t: &DateTime<Utc>) {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        // chrono writes a sign and more digits: let it.
        out.push('"');
        out.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        out.push('"');
        return;
    }
    let two = |out: &mut String, n: u32| {
        out.push((b'0' + (n / 10) as u8) as char);
        out.push((b'0' + (n % 10) as u8) as char);
    };
    let (mut sec, mut nano) = (t.second(), t.nanosecond());
    if nano >= 1_000_000_000 {
        // A leap second.
        sec += 1;
        nano -= 1_000_000_000;
    }
    out.push('"');
    two(out, year as u32 / 100);
    two(out, year as u32 % 100);
    out.push('-');
    two(out, t.month());
    out.push('-');
    two(out, t.day());
    out.push('T');
    two(out, t.hour());
    out.push(':');
    two(out, t.minute());
    out.push(':');
    two(out, sec);
    let (digits, value) = if nano == 0 {
        (0, 0)
    } else if nano % 1_000_000 == 0 {
        (3, nano / 1_000_000)
    } else if nano % 1_000 == 0 {
        (6, nano / 1_000)
    } else {
        (9, nano)
    };
    if digits > 0 {
        out.push('.');
        let mut buf = ['0'; 9];
        let mut v = value;
        for d in buf[..digits].iter_mut().rev() {
            *d = (b'0' + (v % 10) as u8) as char;
            v /= 10;
        }
        out.extend(&buf[..digits]);
    }
    out.push_str("Z\"");
}

#[cfg(test)]
mod tests;
