use fedistream_core::post::Media;
use fedistream_core::testing::post;
use fedistream_core::Event;
use serde_json::Value;

use super::config::{parse_url, Problem};
use super::render::{self, discord, len16, slack};
use super::*;

fn pos(o: u64) -> Position {
    Position { partition: 0, offset: o }
}

#[test]
fn durable_marks_follow_the_oldest_open_record_and_never_go_back() {
    let mut t = Tracker::default();
    for o in [3, 4, 7, 9] {
        t.add(pos(o));
    }
    // 7 answered first: 3 is still open, nothing is durable past 2.
    assert_eq!(t.finish(&[pos(7)]), vec![pos(2)]);
    assert_eq!(t.finish(&[pos(4)]), vec![], "2 is acknowledged already");
    assert_eq!(t.finish(&[pos(3)]), vec![pos(8)], "up to the record before 9");
    assert_eq!(t.finish(&[pos(9)]), vec![pos(9)]);
    // Offset 0 open: nothing can be durable yet in that partition.
    let mut t = Tracker::default();
    t.add(Position { partition: 1, offset: 0 });
    t.add(Position { partition: 1, offset: 1 });
    assert_eq!(t.finish(&[Position { partition: 1, offset: 1 }]), vec![]);
    assert_eq!(t.finish(&[Position { partition: 1, offset: 0 }]), vec![Position { partition: 1, offset: 1 }]);
}

#[test]
fn config_problems_are_named() {
    let keys = |c: &WebhookSinkConfig| c.validate(true).into_iter().map(|p: Problem| p.key).collect::<Vec<_>>();
    assert!(keys(&WebhookSinkConfig::new("https://example.org/hook")).is_empty());
    assert_eq!(keys(&WebhookSinkConfig::new("ftp://example.org/hook")), vec!["url"]);
    assert!(parse_url("ftp://x/").unwrap_err().contains("scheme"));
    assert!(parse_url("https://user:pw@x/").unwrap_err().contains("password"));
    let mut c = WebhookSinkConfig::new("https://example.org/hook");
    c.secret_env = Some("FEDISTREAM_TEST_SURELY_UNSET_SECRET".into());
    c.format = WebhookFormat::Discord;
    c.batch = Some(10);
    c.delivery.max_in_flight = Some(0);
    assert_eq!(keys(&c), vec!["secret_env", "batch", "delivery.max_in_flight"]);
    assert!(c.validate(false).iter().all(|p| p.key != "secret_env"), "secrets not checked when asked not to");
    let both = WebhookSinkConfig { url_env: Some("X".into()), ..WebhookSinkConfig::new("https://e/") };
    assert_eq!(keys(&both), vec!["url"]);
    let err = WebhookSink::new(c).err().unwrap();
    assert!(err.contains("FEDISTREAM_TEST_SURELY_UNSET_SECRET"), "{err}");
}

fn big_post(cw: &str) -> Event {
    let mut p = post("alice@example.org", 1, &"word & <b>ünïcode 🎉 ".repeat(800));
    p.account.display_name = "A".repeat(300);
    p.account.url = Some("https://example.org/@alice".into());
    p.spoiler_text = cw.into();
    p.media = (0..12)
        .map(|i| Media {
            kind: if i == 0 { "video".into() } else { "image".into() },
            url: Some(format!("https://example.org/media/{i}.png")),
            preview_url: None,
            description: Some("d".repeat(2500)),
        })
        .collect();
    Event::created("src", p)
}

/// Discord's documented limits for one message.
pub(crate) fn check_discord(m: &Value) {
    let s = |v: &Value| v.as_str().map(len16).unwrap_or(0);
    assert!(s(&m["username"]) <= discord::USERNAME);
    assert!(s(&m["content"]) <= discord::CONTENT, "content {}", s(&m["content"]));
    let embeds = m["embeds"].as_array().unwrap();
    assert!(embeds.len() <= discord::EMBEDS);
    let mut total = 0;
    for e in embeds {
        assert!(s(&e["title"]) <= discord::TITLE);
        assert!(s(&e["description"]) <= discord::DESCRIPTION, "description {}", s(&e["description"]));
        assert!(s(&e["author"]["name"]) <= discord::AUTHOR_NAME);
        assert!(s(&e["footer"]["text"]) <= discord::FOOTER);
        total += s(&e["title"]) + s(&e["description"]) + s(&e["author"]["name"]) + s(&e["footer"]["text"]);
    }
    assert!(total <= discord::EMBED_TOTAL);
    assert_eq!(m["allowed_mentions"]["parse"], serde_json::json!([]), "no pings");
}

/// Slack's documented limits for one message.
pub(crate) fn check_slack(m: &Value) {
    let s = |v: &Value| v.as_str().map(len16).unwrap_or(0);
    assert!(s(&m["text"]) <= slack::TEXT);
    let blocks = m["blocks"].as_array().unwrap();
    assert!(blocks.len() <= slack::BLOCKS);
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "section" => assert!(s(&b["text"]["text"]) <= slack::SECTION_TEXT),
            "context" => {
                for e in b["elements"].as_array().unwrap() {
                    assert!(s(&e["text"]) <= slack::CONTEXT_TEXT);
                }
            }
            "image" => {
                assert!(s(&b["alt_text"]) <= slack::ALT_TEXT && s(&b["alt_text"]) > 0);
                assert!(s(&b["image_url"]) <= slack::IMAGE_URL);
            }
            t => panic!("unexpected block {t}"),
        }
    }
}

#[test]
fn discord_messages_stay_within_limits_and_hide_content_warnings() {
    let ev = big_post("");
    let m = render::discord(&ev, ev.post.as_ref().unwrap());
    check_discord(&m);
    let e = &m["embeds"][0];
    assert!(e["description"].as_str().unwrap().ends_with("(+11 more attachments)"));
    assert_eq!(e["image"]["url"], "https://example.org/media/1.png", "the first image, not the video");
    assert_eq!(e["url"], "https://example.org/@alice/1");
    assert!(m.get("content").is_none());

    let ev = big_post("spiders || and more");
    let m = render::discord(&ev, ev.post.as_ref().unwrap());
    check_discord(&m);
    let content = m["content"].as_str().unwrap();
    assert!(content.starts_with("**CW: spiders |\u{200b}| and more**\n||word"), "{content}");
    assert!(content.ends_with("||\nhttps://example.org/@alice/1"), "{content}");
    // The spoiler is closed once, at its end: the text cannot close it early.
    assert_eq!(content.matches("||").count(), 2, "opening and closing only");
    assert!(m["embeds"][0].get("image").is_none() && m["embeds"][0].get("description").is_none());
}

#[test]
fn slack_messages_stay_within_limits_escape_and_hide_content_warnings() {
    let ev = big_post("");
    let m = render::slack(&ev, ev.post.as_ref().unwrap());
    check_slack(&m);
    let section = m["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(section.starts_with("word &amp; &lt;b&gt;ünïcode"), "{section}");
    assert!(!section.contains('<'), "escaped");
    assert_eq!(m["blocks"][2]["image_url"], "https://example.org/media/1.png");

    let ev = big_post("spiders");
    let m = render::slack(&ev, ev.post.as_ref().unwrap());
    check_slack(&m);
    let body = m.to_string();
    assert!(body.contains("CW: spiders") && !body.contains("word") && !body.contains("media/1.png"), "{body}");
}
