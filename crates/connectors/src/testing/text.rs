//! Plain text of a posted status to Mastodon's HTML, and the length Mastodon
//! validates.
//!
//! After `TextFormatter`: the text is HTML-escaped, `simple_format`ted
//! (paragraphs on blank lines, `<br />` on single newlines), URLs become links
//! with the `invisible`/`ellipsis` spans, and `#tags` become hashtag links.
//! `StatusLengthValidator` counts the text plus the content warning, with every
//! URL as 23 characters. Mentions stay plain text (no account resolution here).

/// `characters_reserved_per_url` in the instance configuration.
pub(crate) const URL_LENGTH: usize = 23;

/// Splits `text` into (is_url, piece) runs. A URL starts with `http://` or
/// `https://` and runs to whitespace, minus trailing punctuation.
fn pieces(text: &str) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        let tail = &rest[start..];
        let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let url = tail[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '"', '\'']);
        let scheme_only = url.ends_with("://");
        if start > 0 {
            out.push((false, &rest[..start]));
        }
        out.push((!scheme_only, url));
        rest = &tail[url.len()..];
    }
    if !rest.is_empty() {
        out.push((false, rest));
    }
    out
}

fn find_url(s: &str) -> Option<usize> {
    let http = s.find("http://");
    let https = s.find("https://");
    match (http, https) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The length Mastodon checks against `max_characters`.
pub(crate) fn countable_length(text: &str, spoiler_text: &str) -> usize {
    let body: usize = pieces(text).iter().map(|(is_url, p)| if *is_url { URL_LENGTH } else { p.chars().count() }).sum();
    body + spoiler_text.chars().count()
}

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn link(url: &str) -> String {
    let (prefix, display) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let shown: String = display.chars().take(30).collect();
    let hidden: String = display.chars().skip(30).collect();
    let class = if hidden.is_empty() { "" } else { "ellipsis" };
    format!(
        "<a href=\"{}\" target=\"_blank\" rel=\"nofollow noopener\" translate=\"no\">\
         <span class=\"invisible\">{}</span><span class=\"{class}\">{}</span>\
         <span class=\"invisible\">{}</span></a>",
        escape(url),
        escape(&prefix),
        escape(&shown),
        escape(&hidden)
    )
}

fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Escapes a non-URL run and links its `#tags` (preceded by start or whitespace).
fn text_run(run: &str, base: &str, tags: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut chars = run.char_indices().peekable();
    let mut prev_is_space = true;
    while let Some((i, c)) = chars.next() {
        if c == '#' && prev_is_space {
            let tag: String = run[i + 1..].chars().take_while(|c| is_tag_char(*c)).collect();
            if tag.chars().any(|c| !c.is_numeric()) {
                for _ in 0..tag.chars().count() {
                    chars.next();
                }
                let name = tag.to_lowercase();
                out.push_str(&format!(
                    "<a href=\"{base}/tags/{name}\" class=\"mention hashtag\" rel=\"tag\">#<span>{}</span></a>",
                    escape(&tag)
                ));
                if !tags.contains(&name) {
                    tags.push(name);
                }
                prev_is_space = false;
                continue;
            }
        }
        out.push_str(&escape(&c.to_string()));
        prev_is_space = c.is_whitespace();
    }
    out
}

/// Status text → (content HTML, hashtag names). Empty text gives `""`.
pub(crate) fn to_html(text: &str, base: &str) -> (String, Vec<String>) {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut tags = Vec::new();
    let mut paragraphs = Vec::new();
    for paragraph in split_paragraphs(&text) {
        let lines: Vec<String> = paragraph
            .split('\n')
            .map(|line| pieces(line).into_iter().map(|(is_url, p)| if is_url { link(p) } else { text_run(p, base, &mut tags) }).collect())
            .collect();
        paragraphs.push(format!("<p>{}</p>", lines.join("<br />")));
    }
    (paragraphs.concat(), tags)
}

/// Rails' `simple_format`: paragraphs are separated by a newline, optional
/// blanks, and another newline.
fn split_paragraphs(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'\n' {
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                out.push(&text[start..i]);
                start = j;
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out.push(&text[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// A status's source text when none was kept (statuses made with `post()`):
/// the content with tags removed, `<br>` as newlines, paragraphs as blank lines.
pub(crate) fn strip_html(html: &str) -> String {
    let html = html.replace("</p><p>", "\n\n").replace("<br />", "\n").replace("<br>", "\n");
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_mastodon() {
        let (html, tags) = to_html("a < b\nnext #Rust\n\nsecond", "http://h");
        assert_eq!(
            html,
            "<p>a &lt; b<br />next <a href=\"http://h/tags/rust\" class=\"mention hashtag\" \
             rel=\"tag\">#<span>Rust</span></a></p><p>second</p>"
        );
        assert_eq!(tags, ["rust"]);
        let (html, _) = to_html("see https://example.com/x.", "http://h");
        assert!(html.contains("<span class=\"invisible\">https://</span><span class=\"\">example.com/x</span>"));
        assert!(html.ends_with("</a>.</p>"));
    }

    #[test]
    fn urls_count_as_23() {
        let url = format!("https://example.com/{}", "a".repeat(100));
        assert_eq!(countable_length(&format!("hi {url}"), ""), 3 + URL_LENGTH);
        assert_eq!(countable_length("héllo", "cw"), 7);
    }
}
