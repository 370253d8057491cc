//! Every Status/Account fixture in `tests/fixtures/mastodon/` parses and normalises,
//! with real field values checked per fixture; the streaming transcripts' Status
//! payloads parse too; mutated fixtures never panic.

use chrono::{DateTime, Utc};
use fedistream_core::post::{Post, Via, Visibility};
use fedistream_process::{parse_account, parse_and_normalize, parse_status, ConsentPolicy, NormalizeContext, SkipReason};
use proptest::prelude::*;
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon/");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn received() -> DateTime<Utc> {
    ts("2026-01-01T00:00:00Z")
}

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ctx(instance: &str) -> NormalizeContext<'_> {
    NormalizeContext { instance, via: Via::Rest, received_at: received() }
}

fn post(name: &str, instance: &str) -> Post {
    parse_and_normalize(&fixture(name), &ctx(instance)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_status_fixture_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(DIR).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if (name.starts_with("status_") || name == "gotosocial_status.json") && name.ends_with(".json") {
            let p = post(&name, "mastodon.social");
            assert!(p.account.acct.contains('@'), "{name}: {}", p.account.acct);
            assert!(!p.uri.is_empty() && !p.id.is_empty(), "{name}");
            seen += 1;
        }
    }
    assert_eq!(seen, 7, "fixtures went missing");
}

#[test]
fn plain_status() {
    let p = post("status_plain.json", "mastodon.social");
    assert_eq!(p.id, "103270115826048975");
    assert_eq!(p.uri, "https://mastodon.social/users/Gargron/statuses/103270115826048975");
    assert_eq!(p.account.acct, "Gargron@mastodon.social");
    assert_eq!(p.account.id, "1");
    assert_eq!(p.account.display_name, "Eugen");
    assert_eq!(p.account.discoverable, Some(true));
    assert_eq!(p.account.noindex, None);
    assert!(!p.account.bio_tags.any());
    assert_eq!(p.visibility, Visibility::Public);
    assert_eq!(p.language.as_deref(), Some("en"));
    assert_eq!(p.created_at, Some(ts("2019-12-08T03:48:33.901Z")));
    assert_eq!(p.edited_at, None, "edited_at is absent in this fixture");
    assert_eq!(
        p.content_text,
        "\"I lost my inheritance with one wrong digit on my sort code\"\n\n\
         https://www.theguardian.com/money/2019/dec/07/i-lost-my-193000-inheritance-with-one-wrong-digit-on-my-sort-code"
    );
    assert!(p.content_html.starts_with("<p>&quot;I lost"));
    assert_eq!(p.application.as_deref(), Some("Web"));
    assert_eq!((p.counts.replies, p.counts.reblogs, p.counts.favourites), (5, 6, 11));
    assert_eq!(p.counts.observed_by, "mastodon.social");
    assert_eq!(p.counts.observed_at, received());
    assert_eq!(p.provenance.instance, "mastodon.social");
    assert_eq!(p.provenance.via, Via::Rest);
    assert!(p.boost_of.is_none() && p.in_reply_to.is_none() && p.poll.is_none());
    assert_eq!(ConsentPolicy::default().check(&p), Ok(()));
}

#[test]
fn reply_from_pleroma_author_with_nobot() {
    let p = post("status_reply.json", "mastodon.social");
    assert_eq!(p.account.acct, "freon@letsalllovela.in");
    assert_eq!(p.visibility, Visibility::Unlisted);
    assert_eq!(p.language, None);
    assert_eq!(p.content_text, "@disarray glad i was able to help");
    let r = p.in_reply_to.as_ref().unwrap();
    assert_eq!(r.id, "108914298452377720");
    assert_eq!(r.account_id.as_deref(), Some("107946650784398271"));
    assert_eq!(r.account.as_deref(), Some("disarray@pl.nulled.red"), "parent author from mentions");
    assert_eq!(p.mentions.len(), 1);
    assert_eq!(p.mentions[0].url.as_deref(), Some("https://pl.nulled.red/users/disarray"));
    assert!(p.account.bio_tags.nobot && !p.account.bio_tags.noindex);
    assert_eq!(ConsentPolicy::default().check(&p), Err(SkipReason::Visibility("unlisted".into())));
    let unlisted = ConsentPolicy { allow_unlisted: true, owned: false };
    assert_eq!(unlisted.check(&p), Err(SkipReason::BioTag("nobot")));
    assert_eq!(ConsentPolicy { allow_unlisted: true, owned: true }.check(&p), Ok(()));
}

#[test]
fn reblog_wrapper_and_boost_of() {
    let p = post("status_reblog.json", "localhost:3000");
    assert_eq!(p.id, "117020586027094262");
    assert!(p.uri.ends_with("/statuses/117020586027094262/activity"));
    assert_eq!(p.account.acct, "mastodonpy_test@localhost:3000", "port kept: non-default");
    assert_eq!(p.account.noindex, Some(false));
    assert_eq!(p.account.indexable, Some(true));
    assert_eq!(p.account.discoverable, None);
    assert_eq!(p.visibility, Visibility::Unlisted);
    assert_eq!(p.content_text, "");
    assert_eq!(p.application, None, "the wrapper's application is null");
    assert!(!p.sensitive, "the wrapper is not sensitive; the original is");
    let b = p.boost_of.as_ref().unwrap();
    assert_eq!(b.id, "117020586019094258");
    assert_eq!(b.uri, "http://localhost:3000/ap/users/117020565966271181/statuses/117020586019094258");
    assert_eq!(b.url.as_deref(), Some("http://localhost:3000/@mastodonpy_test/117020586019094258"));
    assert_eq!(b.account, "mastodonpy_test@localhost:3000");
    assert_eq!(p.created_at, Some(ts("2026-08-01T13:53:58.160Z")));
}

#[test]
fn media_tags_mentions_cw() {
    let p = post("status_media_tags_mentions.json", "mastodon.social");
    assert_eq!(p.account.acct, "halcy@icosahedron.website");
    assert!(p.sensitive);
    assert_eq!(p.spoiler_text, "test post for mastodon.py stuff");
    assert_eq!(p.language.as_deref(), Some("de"));
    assert_eq!(p.edited_at, Some(ts("2023-05-28T12:09:44Z")));
    assert_eq!(
        p.content_text,
        "@halcy you're a doo-doo head\n\nedit: editing this to have the maximum amount of fields filled :trans_heart: #ThisIsAHashtag"
    );
    assert_eq!(p.tags, vec!["thisisahashtag"]);
    assert_eq!(p.mentions.len(), 1);
    assert_eq!(p.mentions[0].acct, "halcy@icosahedron.website");
    assert_eq!(p.emojis.len(), 1);
    assert_eq!(p.emojis[0].shortcode, "trans_heart");
    assert_eq!(p.media.len(), 1);
    let m = &p.media[0];
    assert_eq!(m.kind, "gifv");
    assert_eq!(m.description.as_deref(), Some("a furry cube breakdancing"));
    assert!(m.url.as_deref().unwrap().starts_with("https://files.mastodon.social/cache/media_attachments/"));
    assert!(m.preview_url.as_deref().unwrap().ends_with("e6bdbd614788c2d1.png"));
    assert_eq!(p.application, None);
    assert_eq!(p.counts.favourites, 1);
}

#[test]
fn poll() {
    let p = post("status_poll.json", "mastodon.social");
    assert_eq!(p.content_text, "secret test poll :hecker:");
    let poll = p.poll.as_ref().unwrap();
    let options: Vec<(&str, Option<u64>)> = poll.options.iter().map(|o| (o.title.as_str(), o.votes_count)).collect();
    assert_eq!(options, vec![("real", Some(8)), ("fr fr", Some(17)), ("so true", Some(14)), (":hecker:", Some(25))]);
    assert_eq!((poll.votes_count, poll.voters_count), (Some(64), Some(47)));
    assert!(poll.multiple && poll.expired);
    assert_eq!(poll.expires_at, Some(ts("2023-05-29T12:51:38Z")));
}

#[test]
fn edited_status_with_shortened_link() {
    let p = post("status_edited.json", "mastodon.social");
    assert_eq!(p.account.acct, "chrismo@ruby.social");
    assert_eq!(p.edited_at, Some(ts("2022-11-15T16:10:43Z")));
    assert_eq!(p.tags, vec!["MUSICTUESDAY", "piano", "neoclassical", "jazz"]);
    assert_eq!(
        p.content_text,
        "#musicTuesday\n\nHere's a solo #piano track of mine called Gravity Assist\n\n\
         #neoclassical (#jazz ish)\n\n\
         https://cstudios.bandcamp.com/track/celestia-gravity-assist-no-19-var-2"
    );
}

#[test]
fn gotosocial_status() {
    let p = post("gotosocial_status.json", "localhost:8080");
    assert_eq!(p.id, "01F8MHAMCHF6Y650WCRSCP4WMY");
    assert_eq!(p.id.len(), 26);
    assert_eq!(p.account.id, "01F8MH1H7YV1Z7D2C8K2730QBF");
    assert_eq!(p.account.acct, "the_mighty_zork@localhost:8080");
    assert_eq!(p.spoiler_text, "introduction post");
    assert!(p.sensitive);
    assert_eq!(p.content_text, "hello everyone!");
    assert_eq!(p.application.as_deref(), Some("really cool gts application"));
    assert_eq!((p.counts.replies, p.counts.reblogs, p.counts.favourites), (2, 1, 1));
    assert_eq!(p.created_at, Some(ts("2021-10-20T10:40:37Z")));
    let s = parse_status(&fixture("gotosocial_status.json")).unwrap();
    assert_eq!(s.content_type.as_deref(), Some("text/plain"));
    assert_eq!(s.text.as_deref(), Some("hello everyone!"));
}

#[test]
fn accounts_parse() {
    let a = parse_account(&fixture("account.json")).unwrap();
    assert_eq!((a.id.as_str(), a.acct.as_str(), a.username.as_str()), ("23634", "noiob@awoo.space", "noiob"));
    assert!(a.note.contains("#<span>awoo</span>"));
    let tags = fedistream_process::bio_consent_tags(&a.note);
    assert!(!tags.any());
    let c = parse_account(&fixture("credential_account.json")).unwrap();
    assert_eq!((c.acct.as_str(), c.indexable, c.discoverable), ("admin", Some(false), None));
    assert_eq!(c.url.as_deref(), Some("http://localhost:3000/@admin"));
}

/// `data:` payloads of `update` / `status.update` events in an SSE transcript.
fn sse_statuses(name: &str) -> Vec<String> {
    let mut event = String::new();
    let mut out = Vec::new();
    for line in fixture(name).lines() {
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_owned();
        } else if let Some(d) = line.strip_prefix("data:") {
            if event == "update" || event == "status.update" {
                out.push(d.trim_start().to_owned());
            }
        } else if line.is_empty() {
            event.clear();
        }
    }
    out
}

#[test]
fn sse_recorded_statuses_parse() {
    let statuses = sse_statuses("sse_user_stream_recorded.txt");
    assert_eq!(statuses.len(), 3);
    let posts: Vec<Post> = statuses.iter().map(|s| parse_and_normalize(s, &ctx("localhost:3000")).unwrap()).collect();
    assert_eq!(posts[0].content_text, "only real cars respond.");
    assert_eq!(posts[0].account.acct, "mastodonpy_test@localhost:3000");
    assert_eq!(posts[1].visibility, Visibility::Direct);
    assert_eq!(posts[1].mentions[0].acct, "mastodonpy_test_2@localhost:3000");
    assert!(posts[1].content_text.starts_with("@mastodonpy_test_2"));
    assert_eq!(posts[2].id, posts[0].id, "status.update of the first post");
    assert_eq!(posts[2].content_text, "only real animals respond.");
}

#[test]
fn sse_assembled_statuses_parse() {
    let statuses = sse_statuses("sse_user_stream_assembled.txt");
    assert_eq!(statuses.len(), 2);
    let reply = parse_and_normalize(&statuses[0], &ctx("mastodon.social")).unwrap();
    assert_eq!(reply.account.acct, "freon@letsalllovela.in");
    assert!(reply.account.bio_tags.nobot, "the #nobot bio in the SSE fixture");
    let edit = parse_and_normalize(&statuses[1], &ctx("mastodon.local")).unwrap();
    assert_eq!(edit.account.acct, "admin@mastodon.local");
    assert_eq!(edit.content_text, "edited");
}

#[test]
fn websocket_payloads_parse() {
    let mut posts = Vec::new();
    for line in fixture("websocket_server_messages.jsonl").lines() {
        let frame: Value = serde_json::from_str(line).unwrap();
        let event = frame.get("event").and_then(Value::as_str).unwrap_or("");
        if event == "update" || event == "status.update" {
            let payload = frame["payload"].as_str().unwrap();
            posts.push(parse_and_normalize(payload, &ctx("mastodon.social")).unwrap());
        }
    }
    assert_eq!(posts.len(), 3);
    assert!(posts[0].account.bio_tags.nobot);
    assert_eq!(posts[1].account.acct, "trwnh@mastodon.social");
    assert_eq!(posts[1].content_text, "test");
    assert_eq!(posts[2].tags.len(), 4);
}

// --- Mutations: nothing panics; nulls and removals of optional fields are accepted.

/// JSON pointers of every value in the document.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                pointers(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Fields a status cannot do without (at any nesting: the boosted status too).
fn is_required(pointer: &str) -> bool {
    let p = pointer.strip_prefix("/reblog").unwrap_or(pointer);
    matches!(p, "" | "/id" | "/uri" | "/account" | "/account/id" | "/account/acct")
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String("2022-11-15T16:08:30.000Z".into())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const MUTATED: [&str; 4] = ["status_reblog.json", "status_media_tags_mentions.json", "status_poll.json", "gotosocial_status.json"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_status_never_panics_on_strings(s in ".{0,300}") {
        let _ = parse_status(&s);
        let _ = parse_and_normalize(&s, &ctx("x"));
    }

    #[test]
    fn replacing_any_value_never_panics(file in 0..MUTATED.len(), pick in any::<prop::sample::Index>(), new in arb_json()) {
        let mut doc: Value = serde_json::from_str(&fixture(MUTATED[file])).unwrap();
        let mut ptrs = Vec::new();
        pointers(&doc, String::new(), &mut ptrs);
        let ptr = pick.get(&ptrs).clone();
        if let Some(slot) = doc.pointer_mut(&ptr) {
            *slot = new;
        }
        let _ = parse_and_normalize(&doc.to_string(), &ctx("x"));
    }

    #[test]
    fn optional_fields_may_be_null_or_missing(file in 0..MUTATED.len(), pick in any::<prop::sample::Index>(), remove in any::<bool>()) {
        let mut doc: Value = serde_json::from_str(&fixture(MUTATED[file])).unwrap();
        let mut ptrs = Vec::new();
        pointers(&doc, String::new(), &mut ptrs);
        // Array elements themselves are not optional (a `null` mention is not a mention).
        ptrs.retain(|p| !is_required(p) && !p.rsplit('/').next().unwrap().chars().all(|c| c.is_ascii_digit()));
        let ptr = pick.get(&ptrs).clone();
        let (parent, key) = ptr.rsplit_once('/').unwrap();
        let obj = doc.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        if remove { obj.remove(key); } else { obj.insert(key.to_owned(), Value::Null); }
        let result = parse_and_normalize(&doc.to_string(), &ctx("x"));
        prop_assert!(result.is_ok(), "{} {}: {:?}", if remove { "removing" } else { "nulling" }, ptr, result.err());
    }

    #[test]
    fn byte_edits_never_panic(file in 0..MUTATED.len(), at in any::<prop::sample::Index>(), len in 0usize..40, insert in "[{}\\[\\]\":,0-9a-z\\\\ é]{0,6}") {
        let text = fixture(MUTATED[file]);
        let mut start = at.index(text.len());
        while !text.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) { end -= 1; }
        let mutated = format!("{}{}{}", &text[..start], insert, &text[end..]);
        let _ = parse_and_normalize(&mutated, &ctx("x"));
        let _ = parse_and_normalize(&text[..start], &ctx("x"));
    }
}
