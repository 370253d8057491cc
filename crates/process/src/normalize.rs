//! Mastodon `Status` entity to the normalised [`Post`].
//!
//! This module owns the mapping: full `user@domain` accts, plain text from the
//! HTML, consent tags from the author's bio, boost and reply references, media,
//! poll and counts stamped with who observed them when. It is pure: the clock
//! and the serving instance come in through [`NormalizeContext`]. Deciding whether
//! a post may be published is [`crate::consent`]'s job, routing [`crate::filter`]'s.
//!
//! A boost becomes a Post with the *wrapper's* identity and (empty) content:
//! `id`/`uri`/`url`/`account`/`visibility` are the Announce's, and
//! [`BoostOf`] points at the boosted status and its author. Channels render a boost
//! from `boost_of`, as Mastodon clients do.
//!
//! Accts: servers send `user` for accounts local to themselves. We append the host
//! of the account's profile `url` (with its port when not the scheme's default, so
//! loopback test servers stay distinguishable), or, without a url, the instance the
//! status was read from, as given. Servers that serve `user@example.com` from
//! `social.example.com` (split domain) would need the instance's own `domain`
//! setting to get this right; the profile url is the best we have per status.

use chrono::{DateTime, Utc};
use fedistream_core::post::{
    Account, BoostOf, Counts, Emoji, InReplyTo, Media, Mention, PollOption, PollSummary, Post, Provenance, Via, Visibility,
};

use crate::entity::{self, ParseError};
use crate::html::{bio_consent_tags, html_to_text};

/// Where and when a status was read.
#[derive(Debug, Clone, Copy)]
pub struct NormalizeContext<'a> {
    /// `host[:port]` of the server the status was read from.
    pub instance: &'a str,
    pub via: Via,
    pub received_at: DateTime<Utc>,
}

/// Parse a Status JSON document and normalise it. The fast path: fields are moved,
/// not copied.
pub fn parse_and_normalize(json: &str, ctx: &NormalizeContext) -> Result<Post, ParseError> {
    Ok(normalize_owned(entity::parse_status(json)?, ctx))
}

/// Normalise a borrowed status (clones it; prefer [`normalize_owned`] when the entity
/// is not needed afterwards).
pub fn normalize(status: &entity::Status, ctx: &NormalizeContext) -> Post {
    normalize_owned(status.clone(), ctx)
}

pub fn normalize_owned(status: entity::Status, ctx: &NormalizeContext) -> Post {
    let entity::Status {
        id,
        uri,
        url,
        created_at,
        edited_at,
        account,
        content,
        visibility,
        sensitive,
        spoiler_text,
        language,
        in_reply_to_id,
        in_reply_to_account_id,
        reblog,
        media_attachments,
        mentions,
        tags,
        emojis,
        poll,
        application,
        replies_count,
        reblogs_count,
        favourites_count,
        ..
    } = status;

    let boost_of = reblog.map(|r| BoostOf {
        account: full_acct(&r.account.acct, r.account.url.as_deref(), ctx.instance),
        id: r.id,
        uri: r.uri,
        url: r.url,
    });

    let mentions: Vec<(String, Mention)> = mentions
        .into_iter()
        .map(|m| {
            let acct = full_acct(&m.acct, m.url.as_deref(), ctx.instance);
            (m.id, Mention { acct, url: m.url })
        })
        .collect();

    let account = account_of(account, ctx);

    let in_reply_to = in_reply_to_id.map(|reply_id| {
        let parent_author = in_reply_to_account_id.as_deref().and_then(|aid| {
            if aid == account.id {
                Some(account.acct.clone())
            } else {
                mentions.iter().find(|(mid, _)| mid == aid).map(|(_, m)| m.acct.clone())
            }
        });
        InReplyTo { id: reply_id, account_id: in_reply_to_account_id, account: parent_author }
    });

    Post {
        id,
        uri,
        url,
        account,
        created_at,
        edited_at,
        visibility: Visibility::parse(&visibility),
        language: language.filter(|l| !l.is_empty()),
        content_text: html_to_text(&content),
        content_html: content,
        spoiler_text,
        sensitive,
        boost_of,
        in_reply_to,
        tags: tags.into_iter().map(|t| t.name).filter(|n| !n.is_empty()).collect(),
        mentions: mentions.into_iter().map(|(_, m)| m).collect(),
        emojis: emojis.into_iter().map(|e| Emoji { shortcode: e.shortcode, url: e.url }).collect(),
        media: media_attachments
            .into_iter()
            .map(|m| Media {
                kind: m.kind,
                url: m.url.or(m.remote_url),
                preview_url: m.preview_url,
                description: m.description.filter(|d| !d.is_empty()),
            })
            .collect(),
        poll: poll.map(|p| PollSummary {
            options: p.options.into_iter().map(|o| PollOption { title: o.title, votes_count: o.votes_count }).collect(),
            votes_count: p.votes_count,
            voters_count: p.voters_count,
            expires_at: p.expires_at,
            expired: p.expired,
            multiple: p.multiple,
        }),
        application: application.map(|a| a.name).filter(|n| !n.is_empty()),
        counts: Counts {
            replies: replies_count,
            reblogs: reblogs_count,
            favourites: favourites_count,
            observed_at: ctx.received_at,
            observed_by: ctx.instance.to_owned(),
        },
        provenance: Provenance { instance: ctx.instance.to_owned(), via: ctx.via, received_at: ctx.received_at },
    }
}

fn account_of(a: entity::Account, ctx: &NormalizeContext) -> Account {
    Account {
        acct: full_acct(&a.acct, a.url.as_deref(), ctx.instance),
        bio_tags: bio_consent_tags(&a.note),
        id: a.id,
        display_name: a.display_name,
        url: a.url,
        bot: a.bot,
        discoverable: a.discoverable,
        indexable: a.indexable,
        noindex: a.noindex,
    }
}

/// `user@domain` for an acct as a server sent it (see the module doc).
pub fn full_acct(acct: &str, profile_url: Option<&str>, instance: &str) -> String {
    let acct = acct.strip_prefix('@').unwrap_or(acct);
    if acct.contains('@') {
        return acct.to_owned();
    }
    let host = profile_url.and_then(url_host);
    let domain = host.as_deref().unwrap_or(instance);
    let mut s = String::with_capacity(acct.len() + 1 + domain.len());
    s.push_str(acct);
    s.push('@');
    s.push_str(domain);
    s
}

/// `host[:port]` of an absolute http(s) URL, lower-cased, the port only when it is
/// not the scheme's default. `None` for anything that is not such a URL.
pub fn url_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Userinfo is never in a profile url, but must not be mistaken for the host.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match authority.rfind(':') {
        // `[::1]` has colons but no port unless they follow the bracket.
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    if host.is_empty() {
        return None;
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "80",
        "https" | "wss" => "443",
        _ => "",
    };
    let mut out = host.to_ascii_lowercase();
    if let Some(port) = port.filter(|p| !p.is_empty() && *p != default_port) {
        out.push(':');
        out.push_str(port);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> NormalizeContext<'static> {
        NormalizeContext {
            instance: "serving.example:8443",
            via: Via::Rest,
            received_at: DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z").unwrap().with_timezone(&Utc),
        }
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("https://mastodon.social/@Gargron").as_deref(), Some("mastodon.social"));
        assert_eq!(url_host("http://localhost:3000/@x").as_deref(), Some("localhost:3000"));
        assert_eq!(url_host("https://Example.COM:443/@x").as_deref(), Some("example.com"));
        assert_eq!(url_host("http://127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(url_host("http://[::1]:8080/a").as_deref(), Some("[::1]:8080"));
        assert_eq!(url_host("http://[::1]/a").as_deref(), Some("[::1]"));
        assert_eq!(url_host("https://u:p@h.example/x?y#z").as_deref(), Some("h.example"));
        assert_eq!(url_host("not a url"), None);
        assert_eq!(url_host("https:///path"), None);
    }

    #[test]
    fn accts_gain_a_domain() {
        assert_eq!(full_acct("a@b.c", Some("https://x.y/@a"), "i"), "a@b.c");
        assert_eq!(full_acct("@a@b.c", None, "i"), "a@b.c");
        assert_eq!(full_acct("a", Some("https://x.y/@a"), "i:1"), "a@x.y");
        assert_eq!(full_acct("a", None, "127.0.0.1:8080"), "a@127.0.0.1:8080");
        assert_eq!(full_acct("a", Some("garbage"), "i.example"), "a@i.example");
    }

    #[test]
    fn reply_parent_author_from_self_or_mentions() {
        let json = |reply_acct_id: &str| {
            format!(
                r#"{{"id":"2","uri":"u2","in_reply_to_id":"1","in_reply_to_account_id":"{reply_acct_id}",
                   "account":{{"id":"10","acct":"me"}},
                   "mentions":[{{"id":"20","acct":"you@far.away","url":"https://far.away/@you"}},
                               {{"id":"30","acct":"local","url":"https://serving.example/@local"}}]}}"#
            )
        };
        let p = parse_and_normalize(&json("10"), &ctx()).unwrap();
        let r = p.in_reply_to.unwrap();
        assert_eq!(r.id, "1");
        assert_eq!(r.account.as_deref(), Some("me@serving.example:8443"));
        let p = parse_and_normalize(&json("30"), &ctx()).unwrap();
        assert_eq!(p.in_reply_to.unwrap().account.as_deref(), Some("local@serving.example"));
        assert_eq!(p.mentions[0].acct, "you@far.away");
        let p = parse_and_normalize(&json("99"), &ctx()).unwrap();
        let r = p.in_reply_to.unwrap();
        assert_eq!((r.account_id.as_deref(), r.account), (Some("99"), None));
    }

    #[test]
    fn provenance_counts_and_empty_strings() {
        let p = parse_and_normalize(
            r#"{"id":"1","uri":"u","visibility":"local","language":"","replies_count":4,
                "account":{"id":"9","acct":"a@b","note":"<p>#NoIndex</p>","noindex":true},
                "application":{"name":""},
                "media_attachments":[{"type":"image","url":null,"remote_url":"https://r/x.png","description":""}]}"#,
            &ctx(),
        )
        .unwrap();
        assert_eq!(p.visibility, Visibility::Other("local".into()));
        assert_eq!(p.language, None);
        assert_eq!(p.application, None);
        assert_eq!(p.counts.replies, 4);
        assert_eq!(p.counts.observed_by, "serving.example:8443");
        assert_eq!(p.counts.observed_at, ctx().received_at);
        assert_eq!(p.provenance.via, Via::Rest);
        assert!(p.account.bio_tags.noindex && !p.account.bio_tags.nobot);
        assert_eq!(p.account.noindex, Some(true));
        assert_eq!(p.media[0].url.as_deref(), Some("https://r/x.png"));
        assert_eq!(p.media[0].description, None);
        let by_ref = normalize(&entity::parse_status(r#"{"id":"1","uri":"u","account":{"id":"9","acct":"a@b"}}"#).unwrap(), &ctx());
        assert_eq!(by_ref.account.acct, "a@b");
    }
}
