//! Posts as HTML for the dashboard. Everything in a post came from a remote
//! server and is untrusted: its HTML goes through ammonia's allow-list (the
//! markup Mastodon itself keeps: paragraphs, line breaks, links, spans with
//! Mastodon's few classes, lists, quotes, code); every other string (display
//! names, content warnings, media descriptions, applications) is escaped as
//! text; a URL is used only when it is `http(s)`; custom emoji stay
//! `:shortcode:` text (no remote images: the dashboard's CSP allows images
//! from itself only); media are links, and a sensitive post's media sit in a
//! closed `<details>`.

use std::collections::HashSet;
use std::sync::OnceLock;

use fedistream_core::event::{Event, EventKind};
use fedistream_core::post::Post;
use sha2::{Digest, Sha256};

/// What every link the dashboard shows from a post carries.
pub const LINK_REL: &str = "nofollow noopener noreferrer";

fn cleaner() -> &'static ammonia::Builder<'static> {
    static B: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    B.get_or_init(|| {
        let mut b = ammonia::Builder::empty();
        b.add_tags(["p", "br", "a", "span", "del", "s", "pre", "code", "blockquote", "b", "strong", "i", "em", "u", "ul", "ol", "li"])
            .add_tag_attributes("a", ["href"])
            .add_allowed_classes("a", ["mention", "hashtag", "u-url", "status-link", "unhandled-link"])
            .add_allowed_classes("span", ["h-card", "invisible", "ellipsis"])
            .url_schemes(HashSet::from(["http", "https"]))
            // A relative link would point into the dashboard itself.
            .url_relative(ammonia::UrlRelative::Deny)
            .link_rel(Some(LINK_REL))
            .clean_content_tags(HashSet::from(["script", "style", "svg", "math", "template", "iframe", "object", "noscript", "title"]));
        b
    })
}

/// A post's HTML with only the allowed markup left.
pub fn clean_html(html: &str) -> String {
    cleaner().clean(html).to_string()
}

/// Text for an HTML text node or a double-quoted attribute.
pub fn esc(s: &str) -> String {
    html_escape::encode_quoted_attribute(s).into_owned()
}

/// `url` when it is an absolute `http(s)` URL, escaped for an attribute.
pub fn safe_url(url: &str) -> Option<String> {
    let u = url::Url::parse(url.trim()).ok()?;
    matches!(u.scheme(), "http" | "https").then(|| esc(u.as_str()))
}

/// The element id of a post's article (a digest of its key: keys are URIs).
pub fn dom_id(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    format!("p-{}", d.iter().take(10).map(|b| format!("{b:02x}")).collect::<String>())
}

fn link(url: &str, text: &str) -> String {
    match safe_url(url) {
        Some(u) => format!("<a href=\"{u}\" rel=\"{LINK_REL}\">{}</a>", esc(text)),
        None => esc(text),
    }
}

/// One post as an `<article>`; `None` for a deletion (it has no post).
pub fn article(ev: &Event) -> Option<String> {
    let p = ev.post.as_ref()?;
    Some(post_article(&ev.key, ev.kind, p))
}

fn post_article(key: &str, kind: EventKind, p: &Post) -> String {
    let mut s = String::with_capacity(1024 + p.content_html.len());
    let name = if p.account.display_name.trim().is_empty() { &p.account.acct } else { &p.account.display_name };
    let when = p.created_at.unwrap_or(p.provenance.received_at);
    s.push_str(&format!("<article class=\"post\" id=\"{}\" data-kind=\"{}\">", dom_id(key), kind.as_str()));
    s.push_str(&format!("<header><span class=\"name\">{}</span> ", esc(name)));
    let acct = format!("@{}", p.account.acct);
    s.push_str(&match &p.account.url {
        Some(u) => link(u, &acct),
        None => esc(&acct),
    });
    s.push_str(&format!(" <time datetime=\"{}\">{}</time>", when.to_rfc3339(), when.format("%Y-%m-%d %H:%M UTC")));
    if let Some(b) = &p.boost_of {
        s.push_str(&format!(" <span class=\"tag\">boosted @{}</span>", esc(&b.account)));
    }
    if p.edited_at.is_some() || kind == EventKind::Updated {
        s.push_str(" <span class=\"tag\">edited</span>");
    }
    s.push_str("</header>");
    let body = format!("<div class=\"content\">{}</div>", clean_html(&p.content_html));
    if p.spoiler_text.trim().is_empty() {
        s.push_str(&body);
    } else {
        s.push_str(&format!("<details class=\"cw\"><summary>CW: {}</summary>{body}</details>", esc(&p.spoiler_text)));
    }
    if !p.media.is_empty() {
        let items: String = p
            .media
            .iter()
            .map(|m| {
                let label = match m.description.as_deref().map(str::trim) {
                    Some(d) if !d.is_empty() => format!("{}: {d}", m.kind),
                    _ => format!("{} (no description)", m.kind),
                };
                format!("<li>{}</li>", link(m.url.as_deref().unwrap_or(""), &label))
            })
            .collect();
        let list = format!("<ul class=\"media\">{items}</ul>");
        if p.sensitive {
            s.push_str(&format!("<details class=\"sensitive\"><summary>Sensitive media ({})</summary>{list}</details>", p.media.len()));
        } else {
            s.push_str(&list);
        }
    }
    let mut foot = vec![];
    if let Some(l) = &p.language {
        foot.push(format!("<span lang=\"en\">language</span> {}", esc(l)));
    }
    if let Some(a) = &p.application {
        foot.push(format!("via {}", esc(a)));
    }
    if let Some(u) = &p.url {
        foot.push(link(u, "original"));
    }
    if !foot.is_empty() {
        s.push_str(&format!("<footer>{}</footer>", foot.join(" · ")));
    }
    s.push_str("</article>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_keeps_mastodon_markup_and_drops_the_rest() {
        let html = r#"<p>Hi <a href="https://example.org/@bob" class="u-url mention" onclick="x()">@<span>bob</span></a><br>
            <script>window.__pwned=1</script><img src=x onerror="window.__pwned=1"><a href="javascript:window.__pwned=1">js</a>
            <a href="data:text/html,<script>1</script>">data</a><svg onload="window.__pwned=1"><script>1</script></svg>
            <style>body{display:none}</style><span style="color:red" class="invisible evil">x</span><a href="/metrics">rel</a></p>"#;
        let out = clean_html(html);
        for bad in
            ["<script", "onerror", "onclick", "javascript:", "data:", "<svg", "<style", "style=", "evil", "<img", "/metrics", "__pwned"]
        {
            assert!(!out.contains(bad), "{bad} left in {out}");
        }
        assert!(out.contains(r#"<a href="https://example.org/@bob" class="u-url mention" rel="nofollow noopener noreferrer">"#), "{out}");
        assert!(out.contains(r#"<span class="invisible">x</span>"#), "{out}");
        assert!(out.contains("<br>"), "{out}");
    }

    #[test]
    fn urls_are_used_only_when_http() {
        assert_eq!(safe_url("https://a.example/x?a=1&b=\"2\"").unwrap(), "https://a.example/x?a=1&amp;b=%222%22");
        assert!(safe_url("javascript:alert(1)").is_none());
        assert!(safe_url("data:image/svg+xml,<svg/>").is_none());
        assert!(safe_url("/relative").is_none());
    }
}
