//! Turning a received [`Post`] into the status the channel publishes: the
//! template body, quiet mentions, the attribution line fedistream owns, the
//! content warning, and truncation to the target's `max_characters` (counted the
//! way Mastodon counts: every URL is 23 characters) on a word boundary, always
//! keeping the attribution and its link. Also the `Idempotency-Key` derivation
//! and reading an attribution back (reconciliation, loop protection).
//!
//! Pure functions; no I/O.

use fedistream_core::post::Post;

use super::config::{MastodonSinkConfig, Mentions};
use crate::mastodon::client::StatusForm;

/// Starts fedistream's attribution line: `"{MARKER} @{acct} {url}"`. Reconciling
/// and loop protection look for it, so it must never change between versions.
pub const MARKER: &str = "↻ mirrored from";

/// Mastodon counts every URL as this many characters.
pub const URL_WEIGHT: usize = 23;

const ZWSP: char = '\u{200B}';
const ELLIPSIS: char = '…';

/// The original's address as shown in the attribution: its web URL, else its URI.
pub fn source_url(post: &Post) -> &str {
    post.url.as_deref().filter(|u| !u.is_empty()).unwrap_or(&post.uri)
}

/// `@` starting a mention gets a zero-width space after it, so the server does
/// not link (and notify) the account. E-mail addresses are left alone.
pub fn quiet_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut prev: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '@' {
            let starts = prev.is_none_or(|p| !(p.is_alphanumeric() || p == '_' || p == '/'));
            let next_ok = chars.peek().is_some_and(|n| n.is_alphanumeric() || *n == '_');
            if starts && next_ok {
                out.push(ZWSP);
            }
        }
        prev = Some(c);
    }
    out
}

/// The attribution line for `post`.
pub fn attribution(post: &Post, mentions: Mentions) -> String {
    let line = format!("{MARKER} @{} {}", post.account.acct, source_url(post));
    match mentions {
        Mentions::Quiet => quiet_mentions(&line),
        Mentions::Notify => line,
    }
}

/// `template` with its placeholders filled in one pass (inserted text is never
/// expanded again); unknown placeholders stay as written.
pub fn fill_template(template: &str, post: &Post, mentions: Mentions) -> String {
    let text = match mentions {
        Mentions::Quiet => quiet_mentions(&post.content_text),
        Mentions::Notify => post.content_text.clone(),
    };
    let acct = match mentions {
        Mentions::Quiet => format!("{ZWSP}{}", post.account.acct),
        Mentions::Notify => post.account.acct.clone(),
    };
    let mut out = String::with_capacity(template.len() + text.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let value = after.find('}').and_then(|j| {
            let v = match &after[1..j] {
                "text" => text.as_str(),
                "acct" => acct.as_str(),
                "url" => source_url(post),
                "display_name" => post.account.display_name.as_str(),
                "spoiler" => post.spoiler_text.as_str(),
                _ => return None,
            };
            Some((v, j))
        });
        match value {
            Some((v, j)) => {
                out.push_str(v);
                rest = &after[j + 1..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// Characters as Mastodon counts them: URLs weigh [`URL_WEIGHT`].
pub fn count_chars(s: &str) -> usize {
    let mut n = 0;
    for (i, word) in s.split(char::is_whitespace).enumerate() {
        if i > 0 {
            n += 1; // the separator
        }
        n += word_weight(word);
    }
    // A multi-byte separator (e.g. U+3000) still counts one: split consumed one char per separator.
    n
}

fn word_weight(word: &str) -> usize {
    match word.find("https://").or_else(|| word.find("http://")) {
        Some(p) if word.len() > p + 8 => word[..p].chars().count() + URL_WEIGHT,
        _ => word.chars().count(),
    }
}

/// `body` cut to at most `budget` counted characters on a word boundary, with
/// `…` when something was cut. A single word longer than the budget is cut inside.
pub fn truncate(body: &str, budget: usize) -> String {
    if count_chars(body) <= budget {
        return body.to_string();
    }
    if budget == 0 {
        return String::new();
    }
    let mut cut = 0; // byte end of the last whole word that fits with the ellipsis
    let mut used = 0;
    let mut pos = 0;
    for (i, word) in body.split(char::is_whitespace).enumerate() {
        let sep = usize::from(i > 0);
        let w = word_weight(word);
        if used + sep + w + 1 > budget {
            break;
        }
        used += sep + w;
        let start = if i > 0 { pos + body[pos..].chars().next().map_or(0, char::len_utf8) } else { pos };
        pos = start + word.len();
        if !word.is_empty() {
            cut = pos;
        }
    }
    if cut == 0 {
        // Not even the first word fits: cut it.
        let s: String = body.chars().take(budget - 1).collect();
        return format!("{s}{ELLIPSIS}");
    }
    format!("{}{ELLIPSIS}", body[..cut].trim_end())
}

/// The status for `post`: template body, `extra` lines (media links), the
/// attribution; CW, sensitive and language carried; at most `max_chars`.
pub fn render(post: &Post, cfg: &MastodonSinkConfig, max_chars: usize, extra: &[String]) -> StatusForm {
    let body = fill_template(&cfg.template, post, cfg.mentions);
    let mut suffix = String::new();
    for line in extra {
        suffix.push_str(line);
        suffix.push('\n');
    }
    suffix.push_str(&attribution(post, cfg.mentions));
    // The content warning counts against the limit too.
    let spoiler = truncate(&post.spoiler_text, max_chars / 2);
    let fixed = count_chars(&suffix) + count_chars(&spoiler) + 2;
    let body = truncate(&body, max_chars.saturating_sub(fixed));
    let status = if body.is_empty() { suffix } else { format!("{body}\n\n{suffix}") };
    StatusForm {
        status,
        media_ids: Vec::new(),
        in_reply_to_id: None,
        sensitive: post.sensitive || !post.spoiler_text.is_empty(),
        spoiler_text: spoiler,
        visibility: Some(cfg.visibility.clone()),
        language: if cfg.carry_language { post.language.clone().filter(|l| !l.is_empty()) } else { None },
    }
}

/// Whether a post already went through a fedistream mirror.
pub fn carries_marker(post: &Post) -> bool {
    post.content_text.contains(MARKER) || post.content_html.contains(MARKER)
}

/// The source URL in an attribution line of `text` (a status's plain text).
pub fn parse_attribution(text: &str) -> Option<String> {
    let at = text.rfind(MARKER)?;
    text[at + MARKER.len()..]
        .split_whitespace()
        .take(3)
        .find(|w| w.starts_with("https://") || w.starts_with("http://"))
        .map(|w| w.trim_end_matches(['.', ',', ')']).to_string())
}

/// `Idempotency-Key` for posting `uri` through `channel` at event version
/// `version`: hex FNV-1a 128. Stable across runs and builds (std's hasher is not
/// guaranteed to be).
pub fn idempotency_key(uri: &str, channel: &str, version: &str) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for part in ["fedistream-mastodon-sink", uri, channel, version] {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    format!("{h:032x}")
}
