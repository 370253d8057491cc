//! Renders accounts, statuses and instance metadata as the real servers do, after
//! the fixtures `account.json`, `credential_account.json`, `status_plain.json`,
//! `status_reblog.json`, `gotosocial_status.json` and `instance_v{1,2}.json`.
//!
//! Fields a viewer cannot see are omitted, not null: anonymous REST responses and
//! stream payloads carry no `favourited`/`reblogged`/`muted`/`bookmarked`.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde_json::{json, Map, Value};

use super::state::{Account, Shared, Status, Store};
use super::types::{Flavor, Posted};

/// Who a status is rendered for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Viewer {
    Anonymous,
    /// The token owner, who follows everyone.
    Reader,
    /// A stream payload (Mastodon renders these without viewer fields).
    Stream,
}

pub(crate) fn truncate_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond() / 1_000_000 * 1_000_000;
    t.with_nanosecond(nanos).unwrap_or(t)
}

/// `2026-08-01T13:53:58.036Z`.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn error(message: &str) -> Value {
    json!({ "error": message })
}

pub(crate) fn base(shared: &Shared) -> String {
    format!("http://{}", shared.host)
}

fn status_uri(shared: &Shared, username: &str, id: &str) -> String {
    format!("{}/users/{username}/statuses/{id}", base(shared))
}

fn status_url(shared: &Shared, username: &str, id: &str) -> String {
    match shared.cfg.flavor {
        Flavor::Mastodon => format!("{}/@{username}/{id}", base(shared)),
        Flavor::GoToSocial => format!("{}/@{username}/statuses/{id}", base(shared)),
    }
}

pub(crate) fn account(shared: &Shared, store: &Store, a: &Account) -> Value {
    let base = base(shared);
    let statuses_count = store.statuses_count(&a.id);
    let last_status_at = store.last_status_at(&a.id).map(|t| t.format("%Y-%m-%d").to_string());
    let fields: Vec<Value> =
        a.opts.fields.iter().map(|(name, value)| json!({ "name": name, "value": value, "verified_at": null })).collect();
    let mut v = json!({
        "id": a.id,
        "username": a.username,
        "acct": a.opts.domain.as_ref().map_or_else(|| a.username.clone(), |d| format!("{}@{d}", a.username)),
        "display_name": a.opts.display_name.clone().unwrap_or_default(),
        "locked": a.opts.locked,
        "bot": a.opts.bot,
        "discoverable": a.opts.discoverable,
        "indexable": false,
        "group": false,
        "created_at": time(a.created_at),
        "note": a.opts.note_html,
        "url": a.opts.domain.as_ref().map_or_else(|| format!("{base}/@{}", a.username), |d| format!("https://{d}/@{}", a.username)),
        "followers_count": 1,
        "following_count": 0,
        "statuses_count": statuses_count,
        "last_status_at": last_status_at,
        "emojis": [],
        "fields": fields,
    });
    let Some(obj) = v.as_object_mut() else { return v };
    match shared.cfg.flavor {
        Flavor::Mastodon => {
            let extra = json!({
                "uri": format!("{base}/users/{}", a.username),
                "avatar": format!("{base}/avatars/original/missing.png"),
                "avatar_static": format!("{base}/avatars/original/missing.png"),
                "avatar_description": "",
                "header": format!("{base}/headers/original/missing.png"),
                "header_static": format!("{base}/headers/original/missing.png"),
                "header_description": "",
                "hide_collections": null,
                "show_media": true,
                "show_media_replies": true,
                "show_featured": true,
                "feature_approval": { "automatic": [], "manual": [], "current_user": "denied" },
                "roles": [],
            });
            merge(obj, extra);
        }
        Flavor::GoToSocial => {
            let avatar = format!("{base}/assets/default_avatars/GoToSocial_icon1.webp");
            let header = format!("{base}/assets/default_header.webp");
            let extra = json!({
                "avatar": avatar, "avatar_static": avatar,
                "header": header, "header_static": header,
                "enable_rss": false,
            });
            merge(obj, extra);
        }
    }
    if let Some(noindex) = a.opts.noindex {
        obj.insert("noindex".into(), Value::Bool(noindex));
    }
    v
}

/// `verify_credentials`: the account plus `source` and `role`.
pub(crate) fn credential_account(shared: &Shared, store: &Store, a: &Account) -> Value {
    let mut v = account(shared, store, a);
    if let Some(obj) = v.as_object_mut() {
        let fields: Vec<Value> =
            a.opts.fields.iter().map(|(name, value)| json!({ "name": name, "value": value, "verified_at": null })).collect();
        obj.insert(
            "source".into(),
            json!({
                "privacy": "public", "sensitive": false, "language": null,
                "note": a.opts.note_html, "fields": fields, "follow_requests_count": 0,
                "hide_collections": null, "discoverable": a.opts.discoverable,
                "indexable": false, "attribution_domains": [], "quote_policy": "public",
            }),
        );
        obj.insert("role".into(), json!({ "id": "-99", "name": "", "permissions": "65536", "color": "", "highlighted": false }));
    }
    v
}

pub(crate) fn media(shared: &Shared, m: &super::state::Media) -> Value {
    let base = base(shared);
    let ext = match m.kind.as_str() {
        "image" => "png",
        "audio" => "mp3",
        _ => "mp4",
    };
    json!({
        "id": m.id,
        "type": m.kind,
        "url": format!("{base}/system/media_attachments/files/{}/original/{}.{ext}", m.id, m.id),
        "preview_url": format!("{base}/system/media_attachments/files/{}/small/{}.png", m.id, m.id),
        "remote_url": null,
        "preview_remote_url": null,
        "text_url": null,
        "meta": {},
        "description": m.description,
        "blurhash": null,
    })
}

/// A stored status as `viewer` sees it; `None`-safe callers check visibility first.
pub(crate) fn status(shared: &Shared, store: &Store, s: &Status, viewer: Viewer) -> Value {
    let Some(author) = store.accounts.get(&s.account_id) else {
        return Value::Null;
    };
    let (uri, url) = match &s.reblog_of {
        Some(_) => {
            let activity = format!("{}/activity", status_uri(shared, &author.username, &s.id));
            (activity.clone(), activity)
        }
        None => (status_uri(shared, &author.username, &s.id), status_url(shared, &author.username, &s.id)),
    };
    let reblog = s.reblog_of.as_deref().and_then(|r| store.status(r)).map(|r| status(shared, store, r, viewer)).unwrap_or(Value::Null);
    let tags: Vec<Value> = s
        .tags
        .iter()
        .map(|t| {
            let name = t.to_lowercase();
            json!({ "name": name, "url": format!("{}/tags/{name}", base(shared)) })
        })
        .collect();
    let mut v = json!({
        "id": s.id,
        "created_at": time(s.created_at),
        "in_reply_to_id": s.in_reply_to_id,
        "in_reply_to_account_id": s.in_reply_to_account_id,
        "sensitive": s.sensitive,
        "spoiler_text": s.spoiler_text,
        "visibility": s.visibility,
        "language": s.language,
        "uri": uri,
        "url": url,
        "replies_count": s.replies_count,
        "reblogs_count": s.reblogs_count,
        "favourites_count": s.favourites_count,
        "edited_at": s.edited_at.map(time),
        "content": s.content,
        "reblog": reblog,
        "application": if s.reblog_of.is_some() { Value::Null } else { json!({ "name": "Web", "website": null }) },
        "account": account(shared, store, author),
        "media_attachments": s.media.iter().map(|m| media(shared, m)).collect::<Vec<_>>(),
        "mentions": [],
        "tags": tags,
        "emojis": [],
        "card": null,
        "poll": null,
    });
    let Some(obj) = v.as_object_mut() else { return v };
    if viewer == Viewer::Reader {
        for key in ["favourited", "reblogged", "muted", "bookmarked"] {
            obj.insert(key.into(), Value::Bool(false));
        }
    }
    match shared.cfg.flavor {
        Flavor::Mastodon => {
            merge(
                obj,
                json!({
                    "quotes_count": 0,
                    "quote": null,
                    "tagged_collections": [],
                    "quote_approval": { "automatic": ["public"], "manual": [], "current_user": "automatic" },
                }),
            );
            if viewer == Viewer::Reader {
                obj.insert("filtered".into(), json!([]));
            }
        }
        Flavor::GoToSocial => {
            let everyone = json!({ "automatic_approval": ["public", "me"], "manual_approval": [] });
            merge(
                obj,
                json!({
                    "content_type": "text/plain",
                    "interaction_policy": {
                        "can_favourite": everyone, "can_reblog": everyone, "can_reply": everyone,
                    },
                }),
            );
            if viewer == Viewer::Reader {
                obj.insert("pinned".into(), Value::Bool(false));
            }
        }
    }
    v
}

/// The `update`/`status.update` payload of a stored status, as one JSON line.
pub(crate) fn status_payload(shared: &Shared, store: &Store, id: &str) -> Option<String> {
    let s = store.status(id)?;
    serde_json::to_string(&status(shared, store, s, Viewer::Stream)).ok()
}

pub(crate) fn posted(shared: &Shared, store: &Store, id: &str) -> Posted {
    let v = store.status(id).map(|s| status(shared, store, s, Viewer::Stream));
    let field = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).unwrap_or_default().to_owned();
    Posted { id: id.to_owned(), uri: field("uri"), url: field("url") }
}

fn merge(obj: &mut Map<String, Value>, extra: Value) {
    if let Value::Object(extra) = extra {
        obj.extend(extra);
    }
}

fn version(shared: &Shared) -> &'static str {
    match shared.cfg.flavor {
        Flavor::Mastodon => "4.6.4",
        Flavor::GoToSocial => "0.19.1+git-fake",
    }
}

/// `GET /api/v2/instance`.
fn timelines_access(shared: &Shared) -> Value {
    let feeds = super::state::lock(&shared.feeds).access.clone();
    let half = |k: &str| feeds.get(k).cloned().unwrap_or_else(|| "public".to_string());
    json!({
        "live_feeds": { "local": half("live_feeds.local"), "remote": half("live_feeds.remote") },
        "hashtag_feeds": { "local": half("hashtag_feeds.local"), "remote": half("hashtag_feeds.remote") },
        "trending_link_feeds": { "local": "public", "remote": "public" },
    })
}

pub(crate) fn instance_v2(shared: &Shared, user_count: usize) -> Value {
    let base = base(shared);
    let title = match shared.cfg.flavor {
        Flavor::Mastodon => "Mastodon",
        Flavor::GoToSocial => "GoToSocial",
    };
    json!({
        "domain": shared.domain(),
        "title": title,
        "version": version(shared),
        "source_url": "https://github.com/mastodon/mastodon",
        "description": "",
        "usage": { "users": { "active_month": user_count } },
        "thumbnail": { "url": format!("{base}/packs/images/preview.png") },
        "languages": ["en"],
        "configuration": {
            "urls": {
                "streaming": shared.advertised_streaming(),
                "status": null,
                "about": format!("{base}/about"),
                "privacy_policy": format!("{base}/privacy-policy"),
                "terms_of_service": null,
            },
            "accounts": { "max_featured_tags": 10, "max_pinned_statuses": 5, "max_profile_fields": 4 },
            "statuses": { "max_characters": 500, "max_media_attachments": 4, "characters_reserved_per_url": 23 },
            "media_attachments": { "description_limit": 1500, "image_size_limit": 16777216, "video_size_limit": 103809024 },
            "polls": { "max_options": 4, "max_characters_per_option": 50, "min_expiration": 300, "max_expiration": 2629746 },
            "translation": { "enabled": false },
            "timelines_access": timelines_access(shared),
            "limited_federation": false,
        },
        "registrations": { "enabled": false, "approval_required": false, "message": null },
        "api_versions": { "mastodon": 11 },
        "contact": { "email": "", "account": null },
        "rules": [],
    })
}

/// The deprecated `GET /api/v1/instance`.
pub(crate) fn instance_v1(shared: &Shared, user_count: usize, status_count: usize) -> Value {
    json!({
        "uri": shared.domain(),
        "title": "Mastodon",
        "short_description": "",
        "description": "",
        "email": "",
        "version": version(shared),
        "urls": { "streaming_api": shared.advertised_streaming() },
        "stats": { "user_count": user_count, "status_count": status_count, "domain_count": 0 },
        "languages": ["en"],
        "registrations": false,
        "approval_required": false,
        "invites_enabled": false,
        "configuration": {
            "statuses": { "max_characters": 500, "max_media_attachments": 4, "characters_reserved_per_url": 23 },
        },
        "contact_account": null,
        "rules": [],
    })
}
