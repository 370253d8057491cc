use super::*;
use crate::normalize::{parse_and_normalize, NormalizeContext};
use chrono::Utc;
use fedistream_core::post::{BoostOf, InReplyTo, Via};

fn post() -> Post {
    let ctx = NormalizeContext { instance: "m.example", via: Via::Stream, received_at: Utc::now() };
    parse_and_normalize(
        r#"{"id":"1","uri":"https://m.example/s/1","visibility":"public","language":"en-GB",
            "content":"<p>Hello <a class=\"mention hashtag\">#<span>Rust</span></a> World</p>",
            "spoiler_text":"Long Read",
            "tags":[{"name":"Rust"},{"name":"async"}],
            "account":{"id":"7","acct":"Alice","url":"https://m.example/@Alice"}}"#,
        &ctx,
    )
    .unwrap()
}

fn created() -> Event {
    Event::created("src", post())
}

fn deleted() -> Event {
    let mut ev = created();
    ev.kind = EventKind::Deleted;
    ev.post = None;
    ev
}

fn f(toml_like: serde_json::Value) -> CompiledFilter {
    let cfg: FilterConfig = serde_json::from_value(toml_like).unwrap();
    cfg.validate().unwrap();
    cfg.compile()
}

#[test]
fn defaults_pass_everything() {
    let cfg = FilterConfig::default();
    assert!(cfg.include_boosts);
    assert_eq!(cfg.include_replies, ReplyPolicy::All);
    assert_eq!(serde_json::from_str::<FilterConfig>("{}").unwrap(), cfg);
    assert!(cfg.validate().is_ok());
    assert!(cfg.matches(&created()));
    assert!(cfg.matches(&deleted()));
}

#[test]
fn unknown_fields_rejected() {
    assert!(serde_json::from_str::<FilterConfig>(r#"{"tags":["x"]}"#).is_err());
    assert!(serde_json::from_str::<FilterConfig>(r#"{"include_replies":"some"}"#).is_err());
    let cfg: FilterConfig = serde_json::from_str(r#"{"include_replies":"self","kinds":["deleted"]}"#).unwrap();
    assert_eq!(cfg.include_replies, ReplyPolicy::OnlySelf);
    assert_eq!(cfg.kinds, vec![EventKind::Deleted]);
}

#[test]
fn kinds() {
    let only_deleted = f(serde_json::json!({"kinds": ["deleted"]}));
    assert!(!only_deleted.matches(&created()));
    assert!(only_deleted.matches(&deleted()));
    let created_updated = f(serde_json::json!({"kinds": ["created", "updated"]}));
    assert!(created_updated.matches(&created()));
    assert!(!created_updated.matches(&deleted()));
}

#[test]
fn accounts_case_insensitive_with_optional_at() {
    assert_eq!(created().account, "Alice@m.example");
    assert!(f(serde_json::json!({"accounts": ["@alice@M.example"]})).matches(&created()));
    assert!(f(serde_json::json!({"accounts": ["alice@m.example"]})).matches(&deleted()));
    let other = f(serde_json::json!({"accounts": ["bob@m.example"]}));
    assert!(!other.matches(&created()));
    assert!(!other.matches(&deleted()), "account filter applies to deletes too");
}

#[test]
fn boosts() {
    let mut ev = created();
    ev.post.as_mut().unwrap().boost_of = Some(BoostOf { id: "0".into(), uri: "u0".into(), url: None, account: "x@y".into() });
    assert!(f(serde_json::json!({})).matches(&ev));
    assert!(!f(serde_json::json!({"include_boosts": false})).matches(&ev));
    assert!(f(serde_json::json!({"include_boosts": false})).matches(&created()));
}

#[test]
fn replies() {
    let reply_to = |account_id: Option<&str>| {
        let mut ev = created();
        ev.post.as_mut().unwrap().in_reply_to =
            Some(InReplyTo { id: "0".into(), account_id: account_id.map(str::to_owned), account: None });
        ev
    };
    let (own, other, unknown) = (reply_to(Some("7")), reply_to(Some("8")), reply_to(None));
    let all = f(serde_json::json!({"include_replies": "all"}));
    let selfs = f(serde_json::json!({"include_replies": "self"}));
    let none = f(serde_json::json!({"include_replies": "none"}));
    assert!(all.matches(&own) && all.matches(&other) && all.matches(&unknown));
    assert!(selfs.matches(&own) && !selfs.matches(&other) && !selfs.matches(&unknown));
    assert!(!none.matches(&own) && !none.matches(&other));
    for filter in [&all, &selfs, &none] {
        assert!(filter.matches(&created()), "non-replies always pass");
    }
}

#[test]
fn languages() {
    assert!(f(serde_json::json!({"languages": ["en"]})).matches(&created()));
    assert!(f(serde_json::json!({"languages": ["de", "EN-gb"]})).matches(&created()));
    assert!(!f(serde_json::json!({"languages": ["en-US"]})).matches(&created()));
    assert!(!f(serde_json::json!({"languages": ["e"]})).matches(&created()));
    let mut ev = created();
    ev.post.as_mut().unwrap().language = None;
    assert!(!f(serde_json::json!({"languages": ["en"]})).matches(&ev));
    assert!(f(serde_json::json!({"languages": ["fr"]})).matches(&deleted()));
}

#[test]
fn tags() {
    assert!(f(serde_json::json!({"tags_any": ["#rust", "go"]})).matches(&created()));
    assert!(!f(serde_json::json!({"tags_any": ["go"]})).matches(&created()));
    assert!(!f(serde_json::json!({"tags_none": ["ASYNC"]})).matches(&created()));
    assert!(f(serde_json::json!({"tags_none": ["nsfw"]})).matches(&created()));
    assert!(f(serde_json::json!({"tags_any": ["go"], "tags_none": ["rust"]})).matches(&deleted()));
}

#[test]
fn keywords_in_text_and_spoiler() {
    assert!(f(serde_json::json!({"keywords_any": ["hello #RUST world"]})).matches(&created()));
    assert!(f(serde_json::json!({"keywords_any": ["long read"]})).matches(&created()));
    assert!(!f(serde_json::json!({"keywords_any": ["goodbye"]})).matches(&created()));
    assert!(!f(serde_json::json!({"keywords_none": ["LONG"]})).matches(&created()));
    assert!(f(serde_json::json!({"keywords_none": ["goodbye"]})).matches(&created()));
    assert!(f(serde_json::json!({"keywords_any": ["goodbye"]})).matches(&deleted()));
}

#[test]
fn sensitive() {
    let mut ev = created();
    let skip = f(serde_json::json!({"skip_sensitive": true}));
    assert!(skip.matches(&ev));
    ev.post.as_mut().unwrap().sensitive = true;
    assert!(!skip.matches(&ev));
    assert!(f(serde_json::json!({})).matches(&ev));
    assert!(skip.matches(&deleted()));
}

#[test]
fn validation_names_the_problem() {
    let bad = |v: serde_json::Value| serde_json::from_value::<FilterConfig>(v).unwrap().validate().unwrap_err();
    assert!(bad(serde_json::json!({"accounts": [""]})).contains("accounts"));
    assert!(bad(serde_json::json!({"accounts": ["alice"]})).contains("user@domain"));
    assert!(bad(serde_json::json!({"accounts": ["a@b@c"]})).contains("a@b@c"));
    assert!(bad(serde_json::json!({"keywords_any": [" "]})).contains("keywords_any"));
    assert!(bad(serde_json::json!({"tags_any": ["#"]})).contains("tags_any"));
    assert!(bad(serde_json::json!({"tags_none": ["two words"]})).contains("tags_none"));
    assert!(bad(serde_json::json!({"languages": ["en_US"]})).contains("languages"));
    assert!(bad(serde_json::json!({"tags_any": ["Rust"], "tags_none": ["#rust"]})).contains("both"));
    assert!(bad(serde_json::json!({"keywords_any": ["x"], "keywords_none": ["X"]})).contains("both"));
}
