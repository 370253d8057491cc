//! Synthetic but realistic Mastodon statuses, for the offline demo data, tests
//! and benchmarks. Deterministic for a seed. Every person, server and text here
//! is invented; shapes follow the Mastodon 4.x Status entity (1.5–9 KB each,
//! with media, hashtags, mentions, boosts, replies, polls, content warnings,
//! unicode and the invisible/ellipsis link markup).

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const SERVERS: &[&str] = &["social.example", "toot.example.net", "fedi.example.org", "masto.example.dev"];
const NAMES: &[(&str, &str)] = &[
    ("ada", "Ada Quill"),
    ("bruno", "Bruno Ferraz 🌿"),
    ("chiyo", "千代 Chiyo"),
    ("dmitri", "Dmitri Volkov"),
    ("elin", "Elin Sundqvist"),
    ("farid", "Farid Haddad"),
    ("grace", "Grace Okafor"),
    ("hugo", "Hugo Lemaire"),
    ("ines", "Inês Carvalho"),
    ("jun", "Jun Park"),
];
const WORDS: &[&str] = &[
    "stream",
    "release",
    "kafka",
    "sqlite",
    "garden",
    "coffee",
    "bicycle",
    "library",
    "rust",
    "compiler",
    "weekend",
    "mountain",
    "station",
    "festival",
    "keyboard",
    "sourdough",
    "harbour",
    "lantern",
    "meadow",
    "migration",
    "protocol",
    "federation",
    "archive",
    "notebook",
    "concert",
    "ferry",
    "telescope",
    "résumé",
    "naïve",
    "café",
    "Straße",
    "東京",
    "データ",
    "🚲",
    "☕",
    "🎉",
    "Ωmega",
    "ßeta",
];
const TAGS: &[&str] =
    &["rustlang", "fediverse", "opensource", "photography", "music", "cycling", "books", "dataengineering", "MastoArt", "caturday"];

pub struct Generator {
    rng: StdRng,
    next_id: u64,
    now: DateTime<Utc>,
    posted: Vec<(String, String, String)>, // (id, uri, acct) for boosts and replies
}

fn sentence(rng: &mut StdRng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
    }
    s
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            next_id: 113_000_000_000_000_000,
            now: DateTime::parse_from_rfc3339("2026-11-01T08:00:00.000Z").map(|t| t.with_timezone(&Utc)).unwrap_or_else(|_| Utc::now()),
            posted: Vec::new(),
        }
    }

    fn account(&mut self, i: usize) -> (Value, String, String) {
        let (name, display) = NAMES[i % NAMES.len()];
        let server = SERVERS[i % SERVERS.len()];
        // Names and servers cycle (only 20 pairs): a number after the name
        // from the second round of names on keeps every index its own author.
        let numbered;
        let user = if i < NAMES.len() {
            name
        } else {
            numbered = format!("{name}{}", i / NAMES.len());
            numbered.as_str()
        };
        let bio_extra = if self.rng.gen_bool(0.1) {
            " <a href=\"https://x/tags/nobot\" class=\"mention hashtag\" rel=\"tag\">#<span>nobot</span></a>"
        } else {
            ""
        };
        let acct = format!("{user}@{server}");
        let v = json!({
            "id": format!("{}", 109_000_000_000_000_000u64 + i as u64),
            "username": user, "acct": acct, "display_name": display,
            "locked": false, "bot": i % 7 == 3, "discoverable": true, "indexable": i % 5 != 4, "group": false,
            "created_at": "2022-11-05T00:00:00.000Z",
            "note": format!("<p>Writes about {} and {}. Opinions my own.{bio_extra}</p>", WORDS[i % WORDS.len()], WORDS[(i * 3) % WORDS.len()]),
            "url": format!("https://{server}/@{user}"), "uri": format!("https://{server}/users/{user}"),
            "avatar": format!("https://{server}/system/accounts/avatars/{i}/original/avatar.png"),
            "avatar_static": format!("https://{server}/system/accounts/avatars/{i}/original/avatar.png"),
            "header": format!("https://{server}/headers/original/missing.png"),
            "header_static": format!("https://{server}/headers/original/missing.png"),
            "followers_count": 100 + i * 37, "following_count": 50 + i * 11, "statuses_count": 1000 + i * 101,
            "last_status_at": "2026-11-01", "hide_collections": false, "noindex": false,
            "emojis": [], "roles": [],
            "fields": [{"name": "Website", "value": format!("<a href=\"https://{user}.example\" rel=\"nofollow noopener me\" target=\"_blank\"><span class=\"invisible\">https://</span><span class=\"\">{user}.example</span><span class=\"invisible\"></span></a>"), "verified_at": null}]
        });
        (v, acct, server.to_string())
    }

    /// One status as JSON text; `accounts` bounds how many distinct authors appear.
    pub fn status(&mut self, accounts: usize) -> String {
        self.status_value(accounts).to_string()
    }

    pub fn status_value(&mut self, accounts: usize) -> Value {
        let i = self.rng.gen_range(0..accounts.max(1));
        let (account, acct, server) = self.account(i);
        let user = acct.split('@').next().unwrap_or("user").to_string();
        self.next_id += self.rng.gen_range(1..5_000_000);
        self.now += Duration::milliseconds(self.rng.gen_range(100..60_000));
        let id = self.next_id.to_string();
        let uri = format!("https://{server}/users/{user}/statuses/{id}");
        let url = format!("https://{server}/@{user}/{id}");
        let created = self.now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let roll: f64 = self.rng.gen();
        // A boost: an empty wrapper around an earlier post.
        if roll < 0.12 && !self.posted.is_empty() {
            let (oid, ouri, oacct) = self.posted[self.rng.gen_range(0..self.posted.len())].clone();
            let mut v = json!({
                "id": id, "created_at": created, "in_reply_to_id": null, "in_reply_to_account_id": null,
                "sensitive": false, "spoiler_text": "", "visibility": "public", "language": null,
                "uri": format!("{uri}/activity"), "url": format!("{url}/activity"),
                "replies_count": 0, "reblogs_count": 0, "favourites_count": 0, "edited_at": null,
                "content": "", "reblog": null, "account": account, "media_attachments": [], "mentions": [], "tags": [], "emojis": [], "card": null, "poll": null
            });
            let oi = self.rng.gen_range(0..accounts.max(1));
            let (oaccount, _, _) = self.account(oi);
            let mut orig = self.plain(oid.clone(), ouri.clone(), oaccount, created.clone(), 3);
            orig["account"]["acct"] = json!(oacct);
            v["reblog"] = orig;
            return v;
        }
        let size = self.rng.gen_range(1..=6);
        let mut v = self.plain(id.clone(), uri.clone(), account.clone(), created, size);
        // Replies, to self (threads) or to others.
        if roll > 0.75 && !self.posted.is_empty() {
            let (pid, _, pacct) = self.posted[self.rng.gen_range(0..self.posted.len())].clone();
            v["in_reply_to_id"] = json!(pid);
            v["in_reply_to_account_id"] = json!(if pacct == acct { account["id"].clone() } else { json!("109000000000000999") });
        }
        self.posted.push((id, uri, acct));
        if self.posted.len() > 500 {
            self.posted.remove(0);
        }
        v
    }

    fn plain(&mut self, id: String, uri: String, account: Value, created: String, paragraphs: usize) -> Value {
        let rng = &mut self.rng;
        let server = uri.split('/').nth(2).unwrap_or("social.example").to_string();
        let mut html = String::new();
        let mut tags = vec![];
        let mut mentions = vec![];
        for p in 0..paragraphs {
            html.push_str("<p>");
            let n = rng.gen_range(8..40);
            html.push_str(&html_escape(&sentence(rng, n)));
            if rng.gen_bool(0.3) {
                let (u, _) = NAMES[rng.gen_range(0..NAMES.len())];
                let s = SERVERS[rng.gen_range(0..SERVERS.len())];
                html.push_str(&format!(" <span class=\"h-card\" translate=\"no\"><a href=\"https://{s}/@{u}\" class=\"u-url mention\">@<span>{u}</span></a></span>"));
                mentions.push(
                    json!({"id": "109000000000000001", "username": u, "url": format!("https://{s}/@{u}"), "acct": format!("{u}@{s}")}),
                );
            }
            if rng.gen_bool(0.35) {
                let path = sentence(rng, 3).replace(' ', "-");
                let cut = path.char_indices().map(|(i, _)| i).find(|&i| i >= 8).unwrap_or(path.len());
                html.push_str(&format!(" <a href=\"https://www.news.example/2026/11/{path}\" target=\"_blank\" rel=\"nofollow noopener\" translate=\"no\"><span class=\"invisible\">https://www.</span><span class=\"ellipsis\">news.example/2026/11/{}</span><span class=\"invisible\">{}</span></a>", &path[..cut], &path[cut..]));
            }
            if p == paragraphs - 1 || rng.gen_bool(0.2) {
                let t = TAGS[rng.gen_range(0..TAGS.len())];
                html.push_str(&format!(
                    " <a href=\"https://{server}/tags/{}\" class=\"mention hashtag\" rel=\"tag\">#<span>{t}</span></a>",
                    t.to_lowercase()
                ));
                tags.push(json!({"name": t.to_lowercase(), "url": format!("https://{server}/tags/{}", t.to_lowercase())}));
            }
            html.push_str("</p>");
        }
        let media: Vec<Value> = (0..if rng.gen_bool(0.3) { rng.gen_range(1..=4) } else { 0 })
            .map(|k| {
                let kind = ["image", "image", "gifv", "video", "audio"][rng.gen_range(0..5)];
                json!({"id": format!("{id}{k}"), "type": kind,
                    "url": format!("https://files.{server}/media_attachments/files/{id}/{k}/original/file.bin"),
                    "preview_url": format!("https://files.{server}/media_attachments/files/{id}/{k}/small/file.png"),
                    "remote_url": null, "preview_remote_url": null, "text_url": null,
                    "meta": {"original": {"width": 1600, "height": 1200, "size": "1600x1200", "aspect": 1.333}, "small": {"width": 640, "height": 480, "size": "640x480", "aspect": 1.333}},
                    "description": if rng.gen_bool(0.8) { json!(sentence(rng, 12)) } else { json!(null) },
                    "blurhash": "UFGbSC~q4nxu4nRjIUj[00WB%Mt7xuM{ofRj"})
            })
            .collect();
        let cw = rng.gen_bool(0.1);
        let poll = if media.is_empty() && rng.gen_bool(0.05) {
            json!({"id": format!("{id}9"), "expires_at": "2026-11-08T08:00:00.000Z", "expired": false, "multiple": false,
                   "votes_count": 42, "voters_count": null,
                   "options": [{"title": "yes", "votes_count": 30}, {"title": "no", "votes_count": 12}], "emojis": []})
        } else {
            Value::Null
        };
        let visibility = match rng.gen_range(0..100) {
            0..=84 => "public",
            85..=94 => "unlisted",
            95..=97 => "private",
            _ => "direct",
        };
        let language = ["en", "de", "fr", "ja", "pt"][rng.gen_range(0..5)];
        json!({
            "id": id, "created_at": created, "in_reply_to_id": null, "in_reply_to_account_id": null,
            "sensitive": cw || rng.gen_bool(0.05), "spoiler_text": if cw { sentence(rng, 3) } else { String::new() },
            "visibility": visibility, "language": language,
            "uri": uri.clone(), "url": uri.replace("/users/", "/@").replace("/statuses/", "/"),
            "replies_count": rng.gen_range(0..20), "reblogs_count": rng.gen_range(0..50), "favourites_count": rng.gen_range(0..200),
            "quotes_count": 0, "edited_at": null, "favourited": false, "reblogged": false, "muted": false, "bookmarked": false,
            "content": html, "filtered": [], "reblog": null,
            "application": {"name": "Web", "website": null},
            "account": account, "media_attachments": media, "mentions": mentions, "tags": tags, "emojis": [],
            "card": null, "poll": poll
        })
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_varied_and_sized_like_real_ones() {
        let mut g = Generator::new(7);
        let all: Vec<String> = (0..500).map(|_| g.status(50)).collect();
        let sizes: Vec<usize> = all.iter().map(|s| s.len()).collect();
        let avg = sizes.iter().sum::<usize>() / sizes.len();
        assert!(sizes.iter().all(|s| (1200..=12_000).contains(s)), "sizes {:?}", (sizes.iter().min(), sizes.iter().max()));
        assert!((1500..=9000).contains(&avg), "average {avg}");
        assert!(all.iter().any(|s| s.contains("\"reblog\":{")), "has boosts");
        assert!(all.iter().any(|s| s.contains("\"type\":\"video\"")), "has media");
        assert!(all.iter().any(|s| !s.contains("\"in_reply_to_id\":null")), "has replies");
        // Deterministic for a seed.
        assert_eq!(Generator::new(7).status(50), all[0]);
        // `accounts` distinct authors (not the 20 name × server pairs).
        let authors: std::collections::HashSet<String> = all
            .iter()
            .map(|s| serde_json::from_str::<Value>(s).unwrap())
            .map(|v| v["account"]["acct"].as_str().unwrap().to_string())
            .collect();
        assert!(authors.len() > 40, "{} authors of 50 in 500 statuses", authors.len());
    }
}
