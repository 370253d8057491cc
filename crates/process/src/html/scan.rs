//! The tag scanner under [`super::html_to_text`]: reads one piece of markup at a
//! `<`. It only ever splits the input at ASCII bytes, so it never cuts a character.

pub(super) enum Markup {
    /// A start or end tag; `name` is a byte range, `end` is just past the `>`.
    Tag { name: (usize, usize), closing: bool, self_closing: bool, end: usize },
    /// A comment, doctype or processing instruction.
    Skip { end: usize },
    /// A `<` that does not start markup (`a < b`, `<` at the end).
    Literal,
    /// Markup with no closing `>`.
    Unterminated,
}

/// Read the markup starting at `bytes[start] == b'<'`.
pub(super) fn scan_markup(html: &str, start: usize) -> Markup {
    let bytes = html.as_bytes();
    let mut j = start + 1;
    match bytes.get(j) {
        None => return Markup::Literal,
        Some(b'!') if bytes[j..].starts_with(b"!--") => {
            return match find(bytes, j + 3, b"-->") {
                Some(k) => Markup::Skip { end: k + 3 },
                None => Markup::Unterminated,
            };
        }
        Some(b'!') | Some(b'?') => {
            return match find(bytes, j, b">") {
                Some(k) => Markup::Skip { end: k + 1 },
                None => Markup::Unterminated,
            };
        }
        _ => {}
    }
    let closing = bytes[j] == b'/';
    if closing {
        j += 1;
    }
    let name_start = j;
    if !bytes.get(j).is_some_and(u8::is_ascii_alphabetic) {
        return Markup::Literal;
    }
    while bytes.get(j).is_some_and(u8::is_ascii_alphanumeric) {
        j += 1;
    }
    let name = (name_start, j);
    // Attributes: a `>` inside a quoted value does not end the tag. A quote opens a
    // value only right after `=`, so a stray apostrophe cannot swallow the document.
    // Values (long hrefs) are skipped with a memchr-backed search.
    while let Some(k) = bytes[j..].iter().position(|&b| matches!(b, b'>' | b'"' | b'\'')).map(|k| j + k) {
        let b = bytes[k];
        let before = last_non_space(&bytes[..k]);
        if b == b'>' {
            return Markup::Tag { name, closing, self_closing: before == Some(b'/'), end: k + 1 };
        }
        if before != Some(b'=') {
            j = k + 1;
            continue;
        }
        // `k + 1` follows an ASCII quote, so it is a char boundary.
        match html[k + 1..].find(b as char) {
            Some(close) => j = k + 1 + close + 1,
            None => return Markup::Unterminated,
        }
    }
    Markup::Unterminated
}

fn last_non_space(bytes: &[u8]) -> Option<u8> {
    bytes.iter().rev().find(|b| !b.is_ascii_whitespace()).copied()
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|k| from + k)
}

/// Position just past `</name ...>` (name matched case-insensitively) at or after
/// `from`, or `None`.
pub(super) fn find_close_tag(bytes: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    let mut k = from;
    while let Some(lt) = find(bytes, k, b"</") {
        let after = lt + 2;
        let candidate = bytes.get(after..after + name.len());
        if candidate.is_some_and(|c| c.eq_ignore_ascii_case(name)) && !bytes.get(after + name.len()).is_some_and(u8::is_ascii_alphanumeric)
        {
            return Some(find(bytes, after, b">").map_or(bytes.len(), |g| g + 1));
        }
        k = after;
    }
    None
}
