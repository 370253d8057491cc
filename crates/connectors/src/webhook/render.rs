//! Posts as Discord and Slack incoming-webhook messages, within their documented
//! limits.
//!
//! * **Discord** (`Execute Webhook`): `username` ≤ 80, `content` ≤ 2000, ≤ 10
//!   embeds, an embed's title ≤ 256, description ≤ 4096, author name ≤ 256,
//!   footer ≤ 2048, all embeds together ≤ 6000 characters. One embed: the
//!   author (linked), the post's link, its text, the first image. A post with
//!   a content warning (or marked sensitive) shows the warning and hides the
//!   text as a spoiler (`||…||`) in `content`, with no image in the embed.
//!   `allowed_mentions` is empty: a post saying `@everyone` pings no one.
//! * **Slack**: `text` (the notification fallback) ≤ 4000 (Slack cuts messages
//!   longer than 40,000), ≤ 50 blocks, a section's text ≤ 3000, a context
//!   element's text ≤ 3000, an image's `alt_text` ≤ 2000 and `image_url` ≤
//!   3000. Slack has no spoilers: a post with a content warning shows the
//!   warning and a link, not its text or media. Text is escaped for mrkdwn
//!   (`&`, `<`, `>`) before it is cut.
//!
//! Lengths are counted in UTF-16 code units, which is never fewer than the
//! characters, so a text within the limit in code units is within it either way.

use fedistream_core::post::Post;
use fedistream_core::{Event, EventKind};
use serde_json::{json, Value};

pub mod discord {
    pub const USERNAME: usize = 80;
    pub const CONTENT: usize = 2000;
    pub const EMBEDS: usize = 10;
    pub const TITLE: usize = 256;
    pub const DESCRIPTION: usize = 4096;
    pub const AUTHOR_NAME: usize = 256;
    pub const FOOTER: usize = 2048;
    pub const EMBED_TOTAL: usize = 6000;
}

pub mod slack {
    pub const TEXT: usize = 4000;
    pub const BLOCKS: usize = 50;
    pub const SECTION_TEXT: usize = 3000;
    pub const CONTEXT_TEXT: usize = 3000;
    pub const ALT_TEXT: usize = 2000;
    pub const IMAGE_URL: usize = 3000;
}

/// Length as Discord and Slack count it (at most; see the module docs).
pub fn len16(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `s` cut to at most `max` UTF-16 units, ending in `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if len16(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        // Room for the ellipsis (one unit).
        if n + c.len_utf16() > max.saturating_sub(1) {
            break;
        }
        n += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

fn author_line(p: &Post) -> String {
    let acct = &p.account.acct;
    match p.account.display_name.trim() {
        "" => format!("@{acct}"),
        name => format!("{name} (@{acct})"),
    }
}

fn link(p: &Post) -> &str {
    p.url.as_deref().unwrap_or(&p.uri)
}

fn hidden(p: &Post) -> bool {
    !p.spoiler_text.trim().is_empty() || p.sensitive
}

fn first_image(p: &Post) -> Option<(&str, Option<&str>)> {
    p.media.iter().find(|m| m.kind == "image" || m.kind == "gifv").and_then(|m| {
        let url = m.url.as_deref().or(m.preview_url.as_deref())?;
        Some((url, m.description.as_deref()))
    })
}

fn edited_mark(ev: &Event) -> &'static str {
    if ev.kind == EventKind::Updated {
        " (edited)"
    } else {
        ""
    }
}

/// Neutralise Discord's spoiler and code markers inside a spoiler.
fn discord_spoiler(text: &str) -> String {
    text.replace("||", "|\u{200b}|")
}

/// A Discord message for a created or edited post.
pub fn discord(ev: &Event, p: &Post) -> Value {
    let mut embed = json!({
        "author": { "name": cut(&author_line(p), discord::AUTHOR_NAME) },
        "url": link(p),
        "title": cut(&format!("Post by @{}{}", p.account.acct, edited_mark(ev)), discord::TITLE),
        "footer": { "text": cut(&format!("{} · fedistream", p.provenance.instance), discord::FOOTER) },
    });
    if let Some(u) = &p.account.url {
        embed["author"]["url"] = json!(u);
    }
    if let Some(t) = p.created_at {
        embed["timestamp"] = json!(t.to_rfc3339());
    }
    let mut content = String::new();
    if hidden(p) {
        let cw = if p.spoiler_text.trim().is_empty() { "sensitive" } else { p.spoiler_text.trim() };
        let head = cut(&format!("**CW: {}**\n", discord_spoiler(&cw.replace('*', "\\*"))), 300);
        // Room for the head, the spoiler bars and the link line.
        let tail = format!("\n{}", link(p));
        let room = discord::CONTENT.saturating_sub(len16(&head) + len16(&tail) + 4);
        content = format!("{head}||{}||{tail}", cut(&discord_spoiler(&p.content_text), room));
    } else {
        let extra = p.media.len().saturating_sub(1);
        let more = if extra > 0 { format!("\n\n(+{extra} more attachment{})", if extra == 1 { "" } else { "s" }) } else { String::new() };
        let room = discord::DESCRIPTION.saturating_sub(len16(&more));
        embed["description"] = json!(format!("{}{more}", cut(&p.content_text, room)));
        if let Some((url, _)) = first_image(p) {
            embed["image"] = json!({ "url": url });
        }
    }
    let mut msg = json!({
        "username": cut(&author_line(p), discord::USERNAME),
        "embeds": [embed],
        "allowed_mentions": { "parse": [] },
    });
    if !content.is_empty() {
        msg["content"] = json!(content);
    }
    msg
}

/// Escape text for Slack's mrkdwn.
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Escaped, then cut; never cutting through an entity (`&amp;`).
fn mrkdwn_cut(s: &str, max: usize) -> String {
    let esc = mrkdwn(s);
    if len16(&esc) <= max {
        return esc;
    }
    let mut c = cut(&esc, max);
    c.pop(); // the ellipsis
    if let Some(amp) = c.rfind('&') {
        if !c[amp..].contains(';') {
            c.truncate(amp);
        }
    }
    c.push('…');
    c
}

/// A Slack message for a created or edited post.
pub fn slack(ev: &Event, p: &Post) -> Value {
    let author = match &p.account.url {
        Some(u) => format!("*<{}|{}>*{}", u.replace(['|', '>'], ""), mrkdwn(&author_line(p)).replace('|', "¦"), edited_mark(ev)),
        None => format!("*{}*{}", mrkdwn(&author_line(p)), edited_mark(ev)),
    };
    let mut blocks = vec![json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": cut(&author, slack::CONTEXT_TEXT) }],
    })];
    let open = format!("<{}|Open the post>", link(p).replace(['|', '>'], ""));
    let fallback = if hidden(p) {
        let cw = if p.spoiler_text.trim().is_empty() { "sensitive" } else { p.spoiler_text.trim() };
        let text = format!("*CW: {}* — the post is hidden here. {open}", mrkdwn_cut(cw, 500));
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } }));
        format!("{}: CW: {cw}", author_line(p))
    } else {
        if !p.content_text.trim().is_empty() {
            blocks.push(json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": mrkdwn_cut(&p.content_text, slack::SECTION_TEXT) },
            }));
        }
        if let Some((url, alt)) = first_image(p).filter(|(u, _)| len16(u) <= slack::IMAGE_URL) {
            let alt = alt.filter(|a| !a.trim().is_empty()).unwrap_or("image attached to the post");
            blocks.push(json!({ "type": "image", "image_url": url, "alt_text": cut(alt, slack::ALT_TEXT) }));
        }
        let extra = p.media.len().saturating_sub(1);
        let more = if extra > 0 { format!(" · +{extra} more attachment{}", if extra == 1 { "" } else { "s" }) } else { String::new() };
        blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": format!("{open}{more}") }] }));
        format!("{}: {}", author_line(p), p.content_text)
    };
    json!({ "text": mrkdwn_cut(&fallback, slack::TEXT), "blocks": blocks, "unfurl_links": false, "unfurl_media": false })
}
