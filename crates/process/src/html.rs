//! Status HTML to readable plain text, and consent hashtags in account bios.
//!
//! This module owns reading the *sanitised* HTML that Mastodon-API servers put in
//! `content` and `note`: Mastodon's subset (`p`, `br`, `span`, `a`) plus what
//! Akkoma and GoToSocial add (`strong`, `em`, `code`, `pre`, `blockquote`, lists,
//! headings). It leaves fetching, language and link extraction to others.
//!
//! It is a small single-pass tag scanner, not a DOM: the input is already a
//! sanitised, flat subset, every status goes through it, and a full HTML5 parser
//! (html5ever and friends) builds a tree and costs roughly ten times as much for
//! no better text. The scanner only ever splits the input at ASCII bytes (`<`, `>`,
//! quotes, ASCII whitespace), so multi-byte characters are never cut, and it has
//! no failure path: unterminated tags, stray `<` and unknown tags all degrade to
//! "drop the markup, keep the text", much as a browser would.
//!
//! Output rules: paragraphs (and other blocks) are separated by a blank line, `<br>`
//! is a newline, list items sit on their own line as `- item` (indented two spaces
//! per nesting level), runs of whitespace collapse to one space except inside
//! `<pre>`, entities are decoded, `<script>`/`<style>` content is dropped, and all
//! other tags vanish with their text kept. That last rule is what makes Mastodon's
//! shortened links (`<span class="invisible">https://www.</span><span
//! class="ellipsis">example.com/lo</span><span class="invisible">ng</span>`) come
//! out as the full URL, and mentions/hashtags (`@<span>user</span>`) as `@user`.
//! Input with no `<` at all is treated as plain text (GoToSocial sometimes sends
//! it): entities are decoded and its line breaks kept.

use fedistream_core::post::BioTags;

mod scan;

use scan::{find_close_tag, scan_markup, Markup};

/// Convert a status's (or bio's) HTML to plain text. Never panics.
pub fn html_to_text(html: &str) -> String {
    if !html.contains('<') {
        return html_escape::decode_html_entities(html).trim().to_owned();
    }
    let bytes = html.as_bytes();
    let mut w = Writer::with_capacity(html.len());
    let mut pos = 0;
    while pos < html.len() {
        let rest = &html[pos..];
        let Some(lt) = memchr::memchr(b'<', rest.as_bytes()) else {
            w.text(rest);
            break;
        };
        if lt > 0 {
            w.text(&rest[..lt]);
        }
        let start = pos + lt;
        match scan_markup(html, start) {
            Markup::Tag { name, closing, self_closing, end } => {
                pos = end;
                let tag = TagKind::of(&bytes[name.0..name.1]);
                if matches!(tag, TagKind::RawText) && !closing && !self_closing {
                    // Skip to the matching close tag; without one, the rest is script.
                    let close = find_close_tag(bytes, end, &bytes[name.0..name.1]);
                    pos = close.unwrap_or(html.len());
                } else {
                    w.tag(tag, closing);
                }
            }
            Markup::Skip { end } => pos = end,
            Markup::Literal => {
                w.text("<");
                pos = start + 1;
            }
            // An unterminated tag swallows the rest, as it would in a browser.
            Markup::Unterminated => break,
        }
    }
    w.finish()
}

/// Find `#nobot`, `#noindex` and `#nobridge` in an account bio (HTML or plain),
/// case-insensitively. The tag must end at a non-alphanumeric, non-`_` character or
/// the end of the text, so `#nobots` or `#noindex_please` do not count.
pub fn bio_consent_tags(note_html: &str) -> BioTags {
    let mut tags = BioTags::default();
    if !note_html.contains('#') && !note_html.contains("&#") {
        return tags;
    }
    let text = html_to_text(note_html);
    let mut search = text.as_str();
    while let Some(i) = search.find('#') {
        let rest = &search[i + 1..];
        for (word, flag) in [("nobot", &mut tags.nobot), ("noindex", &mut tags.noindex), ("nobridge", &mut tags.nobridge)] {
            if is_tag_at(rest, word) {
                *flag = true;
            }
        }
        search = rest;
    }
    tags
}

/// `rest` starts with `word` (ASCII, case-insensitive) followed by a tag boundary.
fn is_tag_at(rest: &str, word: &str) -> bool {
    let n = word.len();
    if rest.len() < n || !rest.as_bytes()[..n].eq_ignore_ascii_case(word.as_bytes()) {
        return false;
    }
    // The matched bytes are ASCII, so `n` is a char boundary.
    match rest[n..].chars().next() {
        None => true,
        Some(c) => !(c.is_alphanumeric() || c == '_'),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TagKind {
    /// Paragraph-like: a blank line before and after.
    Block,
    /// Line-like (`div`, `tr`, ...): a line break before and after.
    Line,
    Br,
    List,
    Item,
    Pre,
    /// `script`/`style`: content dropped.
    RawText,
    /// Everything else (`span`, `a`, `strong`, ...): markup dropped, text kept.
    Inline,
}

impl TagKind {
    fn of(name: &[u8]) -> TagKind {
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        // Most frequent first: Mastodon content is spans, links and paragraphs.
        if is("span") || is("a") {
            TagKind::Inline
        } else if is("p") || is("blockquote") || is("hr") || is("table") {
            TagKind::Block
        } else if is("br") {
            TagKind::Br
        } else if is("li") || is("dt") || is("dd") {
            TagKind::Item
        } else if is("ul") || is("ol") || is("dl") {
            TagKind::List
        } else if is("pre") {
            TagKind::Pre
        } else if is("div") || is("tr") || is("section") || is("article") || is("figure") {
            TagKind::Line
        } else if name.len() == 2 && matches!(name[0], b'h' | b'H') && (b'1'..=b'6').contains(&name[1]) {
            TagKind::Block
        } else if is("script") || is("style") {
            TagKind::RawText
        } else {
            TagKind::Inline
        }
    }
}

/// Accumulates text, deferring separators until the next visible text so that the
/// output never starts or ends with whitespace and blocks never stack blank lines.
struct Writer {
    out: String,
    /// Newlines owed before the next text.
    newlines: u8,
    /// A space owed before the next text (ignored when newlines are owed).
    space: bool,
    /// A list bullet owed before the next text, at this nesting depth.
    bullet: Option<u8>,
    list_depth: u8,
    pre_depth: u8,
}

impl Writer {
    fn with_capacity(n: usize) -> Self {
        Writer { out: String::with_capacity(n), newlines: 0, space: false, bullet: None, list_depth: 0, pre_depth: 0 }
    }

    fn tag(&mut self, tag: TagKind, closing: bool) {
        match tag {
            TagKind::Inline | TagKind::RawText => {}
            TagKind::Br => self.newlines = self.newlines.saturating_add(1).min(8),
            TagKind::Block => self.block(2),
            TagKind::Line => self.block(1),
            TagKind::Pre => {
                self.block(2);
                self.pre_depth = if closing { self.pre_depth.saturating_sub(1) } else { self.pre_depth.saturating_add(1) };
            }
            TagKind::List => {
                if closing {
                    self.list_depth = self.list_depth.saturating_sub(1);
                }
                self.block(if self.list_depth == 0 { 2 } else { 1 });
                if !closing {
                    self.list_depth = self.list_depth.saturating_add(1);
                }
            }
            TagKind::Item => {
                self.block(1);
                self.bullet = if closing { None } else { Some(self.list_depth.max(1)) };
            }
        }
    }

    fn block(&mut self, n: u8) {
        self.newlines = self.newlines.max(n);
    }

    /// Raw (undecoded) text between tags.
    fn text(&mut self, raw: &str) {
        if self.pre_depth > 0 {
            self.flush();
            self.push_decoded(raw);
            return;
        }
        // Fast path, most text between tags: words and single spaces, no references.
        let core = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        if core.is_empty() {
            self.space |= !raw.is_empty();
            return;
        }
        if is_plain(core.as_bytes()) {
            self.space |= core.len() < raw.len() && raw.as_bytes()[0].is_ascii_whitespace();
            self.flush();
            self.out.push_str(core);
            self.space = raw.as_bytes()[raw.len() - 1].is_ascii_whitespace();
            return;
        }
        self.text_general(raw);
    }

    /// [`Self::text`] for any text: collapses whitespace and decodes references.
    fn text_general(&mut self, raw: &str) {
        let bytes = raw.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_whitespace() {
                self.space = true;
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
            } else {
                // Copy words *and* the single spaces between them in one go; only
                // other whitespace (runs, newlines, tabs, the end) needs collapsing.
                let start = i;
                while i < bytes.len() {
                    let b = bytes[i];
                    if b.is_ascii_whitespace() {
                        let single = b == b' ' && bytes.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace());
                        if !single {
                            break;
                        }
                    }
                    i += 1;
                }
                self.flush();
                // Split points are ASCII whitespace, so always char boundaries.
                self.push_decoded(&raw[start..i]);
            }
        }
    }

    fn push_decoded(&mut self, raw: &str) {
        if raw.as_bytes().contains(&b'&') {
            decode_entities(raw, &mut self.out);
        } else {
            self.out.push_str(raw);
        }
    }

    /// Emit what is owed before visible text.
    fn flush(&mut self) {
        if !self.out.is_empty() {
            if self.newlines > 0 {
                for _ in 0..self.newlines {
                    self.out.push('\n');
                }
            } else if self.space {
                self.out.push(' ');
            }
        }
        if let Some(depth) = self.bullet.take() {
            for _ in 1..depth {
                self.out.push_str("  ");
            }
            self.out.push_str("- ");
        }
        self.newlines = 0;
        self.space = false;
    }

    fn finish(self) -> String {
        let out = self.out;
        let trimmed = out.trim();
        if trimmed.len() == out.len() {
            out
        } else {
            trimmed.to_owned()
        }
    }
}

/// Text that needs neither whitespace collapsing nor decoding: no `&`, and no
/// ASCII whitespace but single spaces (the caller trimmed the ends). Control
/// bytes also send the text down the general path (which keeps them).
fn is_plain(b: &[u8]) -> bool {
    // Eight bytes at a time: any `&` or control byte, or two spaces in a row.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // The high bit of each byte of `w` that is zero (exact: no borrows).
    let zero = |w: u64| !(((w & LOW7) + LOW7) | w | LOW7);
    let mut chunks = b.chunks_exact(8);
    let mut prev_space = false;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("eight bytes"));
        let controls = w.wrapping_sub(ONES * 0x20) & !w & !LOW7;
        let spaces = zero(w ^ (ONES * b' ' as u64));
        let doubled = spaces & ((spaces << 8) | (prev_space as u64 * 0x80));
        if controls | zero(w ^ (ONES * b'&' as u64)) | doubled != 0 {
            return false;
        }
        prev_space = spaces >> 63 != 0;
    }
    let mut after_space = prev_space;
    for &c in chunks.remainder() {
        match c {
            b'&' | 0x00..=0x1f => return false,
            b' ' if after_space => return false,
            _ => {}
        }
        after_space = c == b' ';
    }
    true
}

/// Decode character references into `out`. The handful Mastodon emits (`&amp;`,
/// `&lt;`, `&gt;`, `&quot;`, `&#39;`, numeric) are done here; anything else goes to
/// html-escape, whose named-entity lookup is thorough but slow (a third of the
/// scanner's time when it handled every `&amp;`).
fn decode_entities(raw: &str, out: &mut String) {
    let mut rest = raw;
    while let Some(amp) = rest.bytes().position(|b| b == b'&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        // A reference never contains another `&`, so decode up to the next one.
        let chunk_len = tail[1..].bytes().position(|b| b == b'&').map_or(tail.len(), |k| k + 1);
        let chunk = &tail[..chunk_len];
        match quick_entity(chunk) {
            Some((c, used)) => {
                out.push(c);
                // `used` ends at the ASCII `;`, a char boundary.
                out.push_str(&chunk[used..]);
            }
            None => {
                html_escape::decode_html_entities_to_string(chunk, out);
            }
        }
        rest = &tail[chunk_len..];
    }
    out.push_str(rest);
}

/// The common references at the start of `s` (which starts with `&`): the character
/// and the length of the reference including `;`.
fn quick_entity(s: &str) -> Option<(char, usize)> {
    let semi = s.as_bytes().iter().take(12).position(|&b| b == b';')?;
    let name = &s[1..semi];
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => u32::from_str_radix(hex, 16).ok()?,
                None if num.bytes().all(|b| b.is_ascii_digit()) => num.parse::<u32>().ok()?,
                _ => return None,
            };
            // Controls (HTML remaps 0x80-0x9F to Windows-1252) and invalid values
            // follow html-escape's rules.
            if !(code == 0x09 || code == 0x0A || (0x20..0x7F).contains(&code) || code >= 0xA0) {
                return None;
            }
            char::from_u32(code)?
        }
    };
    Some((c, semi + 1))
}

#[cfg(test)]
mod tests;
