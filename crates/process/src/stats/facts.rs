//! What the statistics need of one post, kept per post while its windows are
//! held: small, and enough to remove the post again (delete) or replace it by
//! its edited version.

use serde::{Deserialize, Serialize};

use super::input::PostInput;
use super::json::Writer;

/// One version of one post, as counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boosted: Option<String>,
    /// 0: not a reply; 1: to the author's own post (a thread); 2: to someone else.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reply: u8,
    #[serde(default, skip_serializing_if = "is_false")]
    pub media: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub cw: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub sensitive: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub poll: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub links: u32,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub chars: u32,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub words: u32,
}

fn is_false(b: &bool) -> bool {
    !b
}
fn is_zero(n: &u8) -> bool {
    *n == 0
}
fn is_zero32(n: &u32) -> bool {
    *n == 0
}

impl Facts {
    /// The facts of `p`. A boost counts as a boost of its author's post; its
    /// text, tags, language and links are the boosted post's and are not the
    /// booster's own writing, so they are left out.
    pub fn of(p: &PostInput) -> Facts {
        if let Some(b) = &p.boost_of {
            return Facts {
                boosted: Some(b.account.to_lowercase()),
                reply: 0,
                media: false,
                cw: false,
                sensitive: false,
                poll: false,
                lang: None,
                app: p.application.as_ref().map(|a| a.to_string()),
                tags: vec![],
                mentions: vec![],
                domains: vec![],
                links: 0,
                chars: 0,
                words: 0,
            };
        }
        let reply = match &p.in_reply_to {
            None => 0,
            Some(r) => {
                let to_self = r.account.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(&p.account.acct))
                    || r.account_id.as_deref().is_some_and(|id| id == &*p.account.id);
                if to_self {
                    1
                } else {
                    2
                }
            }
        };
        let mut tags: Vec<String> = p.tags.iter().map(|t| t.trim_start_matches('#').to_lowercase()).collect();
        tags.sort();
        tags.dedup();
        let mut mentions: Vec<String> = p.mentions.iter().map(|m| m.acct.trim_start_matches('@').to_lowercase()).collect();
        mentions.sort();
        mentions.dedup();
        let (urls, domains, chars, words) = p.content_text.with(|text| {
            let urls = links(text);
            let mut domains: Vec<String> = urls.iter().filter_map(|u| domain(u)).collect();
            domains.sort();
            domains.dedup();
            let (chars, words) = chars_and_words(text);
            (urls.len(), domains, chars, words)
        });
        Facts {
            boosted: None,
            reply,
            media: !p.media.is_empty(),
            cw: !p.spoiler_text.trim().is_empty(),
            sensitive: p.sensitive,
            poll: p.poll.is_some(),
            lang: p.language.as_ref().map(|l| l.to_lowercase()),
            app: p.application.as_ref().map(|a| a.to_string()),
            tags,
            mentions,
            domains,
            links: urls as u32,
            chars,
            words,
        }
    }
}

impl Facts {
    /// As `serde_json` writes it ([`super::json`]).
    pub(crate) fn write_json(&self, w: &mut Writer) {
        // Every field is optional: a comma before each but the first written.
        let mut first = true;
        let mut name = |w: &mut Writer, n: &str| {
            w.raw(if first { "\"" } else { ",\"" });
            first = false;
            w.raw(n);
            w.raw("\":");
        };
        w.raw("{");
        if let Some(b) = &self.boosted {
            name(w, "boosted");
            w.str(b);
        }
        if self.reply != 0 {
            name(w, "reply");
            w.num(self.reply);
        }
        for (n, v) in [("media", self.media), ("cw", self.cw), ("sensitive", self.sensitive), ("poll", self.poll)] {
            if v {
                name(w, n);
                w.raw("true");
            }
        }
        for (n, v) in [("lang", &self.lang), ("app", &self.app)] {
            if let Some(v) = v {
                name(w, n);
                w.str(v);
            }
        }
        for (n, v) in [("tags", &self.tags), ("mentions", &self.mentions), ("domains", &self.domains)] {
            if !v.is_empty() {
                name(w, n);
                w.strs(v);
            }
        }
        for (n, v) in [("links", self.links), ("chars", self.chars), ("words", self.words)] {
            if v != 0 {
                name(w, n);
                w.num(v);
            }
        }
        w.raw("}");
    }
}

/// Where [`links`] splits the text into words.
fn separates(c: char) -> bool {
    c.is_whitespace() || matches!(c, '<' | '>' | '"' | '(' | ')')
}

/// The http(s) URLs in a post's text. Mentions and hashtags are `@user` and
/// `#tag` in the text (their links live only in the HTML), so these are the
/// links the author wrote: the words (split at [`separates`]) that start with
/// `https://` or `http://`. Found by searching for `http` rather than by
/// looking at every word (a text is mostly words that are not links).
pub fn links(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&text.as_bytes()[from..], b"http").map(|i| from + i) {
        // (`http` is ASCII, so `at` is a character boundary.)
        let word_end = text[at..].find(separates).map_or(text.len(), |e| at + e);
        let starts_word = text[..at].chars().next_back().is_none_or(separates);
        let w = &text[at..word_end];
        if starts_word && (w.starts_with("https://") || w.starts_with("http://")) {
            out.push(w.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'']));
        }
        from = if starts_word { word_end.max(at + 4) } else { at + 4 };
    }
    out
}

/// `char::is_whitespace` for an ASCII byte (without branches).
fn ascii_space(b: u8) -> bool {
    (b == b' ') | (b.wrapping_sub(b'\t') < 5)
}

/// Characters and words (split at Unicode white space) of a text. Without
/// white space beyond ASCII (the usual case) both are counted over the bytes
/// without branches, which the compiler vectorises: characters are the bytes
/// that do not continue a UTF-8 sequence, words start at a byte that is not
/// white space after one that is (a byte continuing a sequence is not white
/// space, and neither is the character it belongs to). Otherwise character
/// by character.
fn chars_and_words(text: &str) -> (u32, u32) {
    let b = text.as_bytes();
    if has_unicode_space(text) {
        return chars_and_words_slowly(text);
    }
    let chars = b.iter().map(|&c| ((c & 0xc0) != 0x80) as u32).sum();
    let first = b.first().is_some_and(|&c| !ascii_space(c)) as u32;
    let words = b.iter().zip(&b[1.min(b.len())..]).map(|(&x, &y)| (ascii_space(x) & !ascii_space(y)) as u32).sum::<u32>();
    (chars, first + words)
}

/// Whether a text has white space beyond ASCII: U+0085 and U+00A0 (lead
/// byte 0xc2), U+1680 (0xe1), U+2000–U+200A, U+2028, U+2029, U+202F and
/// U+205F (0xe2), U+3000 (0xe3). Only these lead bytes are searched for, and
/// a lead byte starts a character.
fn has_unicode_space(text: &str) -> bool {
    let b = text.as_bytes();
    let is_space = |i: usize| text.get(i..).and_then(|s| s.chars().next()).is_some_and(char::is_whitespace);
    memchr::memchr3_iter(0xc2, 0xe2, 0xe3, b).any(is_space) || memchr::memchr_iter(0xe1, b).any(is_space)
}

/// [`chars_and_words`] character by character.
fn chars_and_words_slowly(text: &str) -> (u32, u32) {
    let (mut chars, mut words, mut in_word) = (0u32, 0u32, false);
    for c in text.chars() {
        let space = c.is_whitespace();
        chars += 1;
        words += (!space && !in_word) as u32;
        in_word = !space;
    }
    (chars, words)
}

/// The host of a URL, lower-case, without a leading `www.`.
pub fn domain(u: &str) -> Option<String> {
    if let Some(host) = plain_host(u) {
        let host = host.to_ascii_lowercase();
        return Some(host.strip_prefix("www.").map(str::to_string).unwrap_or(host));
    }
    let host = url::Url::parse(u).ok()?.host_str()?.to_lowercase();
    Some(host.strip_prefix("www.").map(str::to_string).unwrap_or(host))
}

/// The host of `http(s)://host` followed by the end or by `/`, `?` or `#`,
/// when it is what the `url` crate would give, up to case, without parsing
/// the URL: dot-separated labels of ASCII letters, digits and hyphens, none
/// empty, none punycode (`xn--`), the last not starting with a digit (the URL
/// standard reads those as IPv4 addresses). Anything else (a port, user
/// info, percent escapes, non-ASCII, backslashes) is left to the `url` crate.
fn plain_host(u: &str) -> Option<&str> {
    let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"))?;
    let host = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let mut labels = host.split('.').peekable();
    while let Some(label) = labels.next() {
        let ok = !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
            && (labels.peek().is_some() || !label.as_bytes()[0].is_ascii_digit());
        if !ok {
            return None;
        }
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `links` was before it searched for `http`: split, then filter.
    fn links_by_splitting(text: &str) -> Vec<&str> {
        text.split(separates)
            .filter(|w| w.starts_with("https://") || w.starts_with("http://"))
            .map(|w| w.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'']))
            .collect()
    }

    #[test]
    fn one_pass_counts_and_the_link_search_agree_with_splitting() {
        let texts = [
            "",
            "   ",
            "one",
            "see https://www.Example.org/a?b=1, and (http://blog.example.net/x). not ftp://x nor #tag",
            "xhttps://no.example http://yes.example/\u{a0}https://nbsp.example\u{3000}http://ideographic.example",
            "http://a.example\"http://b.example<https://c.example>https",
            "httphttp://x.example http:/half https://",
            "üñï çødé\t\nwith\r\x0b\x0cspaces\u{2028}and\u{85}more http://ünï.example/ä",
            "trailing http://t.example/!?.",
            "a 32-byte block of ASCII text, a block\u{a0}then a non-ASCII one ünïcödé ünïcödé ünïcödé ünïcödé and more     words",
            "                                                                 x",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx y",
            "\u{85}a\u{a0}b\u{1680}c\u{2000}d\u{200a}e\u{2028}f\u{2029}g\u{202f}h\u{205f}i\u{3000}j\u{2019}k\u{200b}l ☕ x",
            "’☕ Ωmega ßeta 🎉 — … «x» \u{e000}",
            "word word word word word word wo\u{3000}rd word word word word word word word word word\u{2028}word word word",
        ];
        for t in texts {
            assert_eq!(links(t), links_by_splitting(t), "{t:?}");
            assert_eq!(chars_and_words(t), (t.chars().count() as u32, t.split_whitespace().count() as u32), "{t:?}");
        }
    }

    #[test]
    fn plain_hosts_are_what_the_url_crate_reads() {
        let url_crate = |u: &str| url::Url::parse(u).ok().and_then(|u| u.host_str().map(|h| h.to_lowercase()));
        let urls = [
            "https://www.Example.org/a?b=1",
            "http://blog.example.net/x",
            "https://a-b.c-d.example",
            "https://example.org?q",
            "https://example.org#f",
            "https://EXAMPLE.ORG./x",
            "https://a..b/",
            "https://.a/",
            "https://1.2.3.4/x",
            "https://0x7f.1/",
            "https://host.123/",
            "https://123.host/",
            "https://xn--nxasmq6b.example/",
            "https://XN--nxasmq6b.example/",
            "https://ex-.example/",
            "https://-ex.example/",
            "https://user@host.example/",
            "https://host.example:8080/",
            "https://host.example:99999/",
            "https://ho%73t.example/",
            "https://ünï.example/ä",
            "https:///host.example/",
            "https://host.example\\path",
            "https://ho_st.example/",
            "https://",
            "http://localhost",
            "https://a/b/c/ä/ö?x=ü#ß",
        ];
        for u in urls {
            if let Some(h) = plain_host(u) {
                assert_eq!(Some(h.to_ascii_lowercase()), url_crate(u), "{u}");
            }
            let expect = url_crate(u).map(|h| h.strip_prefix("www.").map(str::to_string).unwrap_or(h));
            assert_eq!(domain(u), expect, "{u}");
        }
        assert_eq!(plain_host("https://www.Example.org/a?b=1"), Some("www.Example.org"));
        assert_eq!(plain_host("https://1.2.3.4/x"), None);
    }

    #[test]
    fn links_and_domains_come_from_the_text() {
        let t = "see https://www.Example.org/a?b=1, and (http://blog.example.net/x). not ftp://x nor #tag";
        assert_eq!(links(t), vec!["https://www.Example.org/a?b=1", "http://blog.example.net/x"]);
        assert_eq!(domain("https://www.Example.org/a?b=1").as_deref(), Some("example.org"));
        assert_eq!(domain("https://"), None);
    }
}
