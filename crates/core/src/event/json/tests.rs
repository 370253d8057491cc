use super::*;
use crate::event::EventKind;
use crate::post::{Via, Visibility};
use chrono::TimeZone;
use proptest::prelude::*;

fn encoded(ev: &Event) -> String {
    let mut out = String::new();
    write_event(&mut out, ev);
    out
}

fn escaped(s: &str) -> String {
    let mut out = String::new();
    string(&mut out, s);
    out
}

#[test]
fn every_ascii_byte_is_escaped_as_serde_json_escapes_it() {
    for b in 0u8..0x80 {
        let c = b as char;
        // Alone, and at every position of a 17-byte run (both the eight-byte
        // loop and the tail see it).
        for at in 0..17 {
            let mut s: String = "abcdefghijklmnop".chars().take(16).collect();
            s.insert(at.min(s.len()), c);
            assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap(), "byte {b:#04x} at {at}");
        }
    }
}

#[test]
fn unicode_and_html_strings_match_serde_json() {
    for s in [
        "",
        "é",
        "<p>Caf\u{e9} \u{1f389} <a href=\"https://a.example/@x\" class=\"u-url mention\">@<span>x</span></a></p>",
        "line\nbreak\ttab\r\u{0}\u{1f}\u{7f}\u{80}\u{2028}\u{feff}",
        "\\\\\"\"\\",
        "東京 ferry ßeta Ωmega résumé",
        "12345678\"",
        "1234567\u{e9}\"",
    ] {
        assert_eq!(escaped(s), serde_json::to_string(s).unwrap(), "{s:?}");
    }
}

#[test]
fn timestamps_match_chrono_in_every_precision_and_range() {
    let base = Utc.with_ymd_and_hms(2026, 11, 29, 8, 5, 9).unwrap();
    let mut times = vec![base];
    for nanos in [1, 999, 1_000, 120_000, 999_999, 1_000_000, 7_000_000, 123_456_789, 999_999_999, 500_000_000] {
        times.push(base + chrono::Duration::nanoseconds(nanos));
    }
    for (y, mo, d) in [(0, 1, 1), (9, 2, 3), (999, 12, 31), (1970, 1, 1), (9999, 12, 31), (10000, 1, 1), (-1, 6, 15)] {
        times.push(Utc.with_ymd_and_hms(y, mo, d, 23, 59, 59).unwrap());
    }
    // A leap second (chrono keeps it as a nanosecond count past 1e9).
    let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
    times.push(Utc.from_utc_datetime(&leap));
    for t in times {
        let mut out = String::new();
        time(&mut out, &t);
        assert_eq!(out, serde_json::to_string(&t).unwrap(), "{t:?}");
    }
}

fn full_event() -> Event {
    let mut ev = crate::testing::created("src", "alice@a.example", 7, "hello \"world\"\n");
    let p = ev.post.as_mut().unwrap();
    p.edited_at = Some(Utc::now());
    p.visibility = Visibility::Other("mutuals_only".into());
    p.spoiler_text = "cw: ünïcode".into();
    p.sensitive = true;
    p.account.url = Some("https://a.example/@alice".into());
    p.account.noindex = Some(false);
    p.account.bio_tags.nobridge = true;
    p.boost_of = Some(BoostOf { id: "1".into(), uri: "u".into(), url: None, account: "b@b.example".into() });
    p.in_reply_to = Some(InReplyTo { id: "2".into(), account_id: Some("3".into()), account: None });
    p.tags = vec!["rust".into(), "fedi\\verse".into()];
    p.mentions = vec![Mention { acct: "c@c.example".into(), url: None }, Mention { acct: "d@d".into(), url: Some("https://d/@d".into()) }];
    p.emojis = vec![Emoji { shortcode: "blobcat".into(), url: "https://a.example/e.png".into() }];
    p.media = vec![
        Media {
            kind: "image".into(),
            url: Some("https://a.example/m.png".into()),
            preview_url: None,
            description: Some("alt \"text\"".into()),
        },
        Media { kind: "3d-model".into(), url: None, preview_url: Some("p".into()), description: None },
    ];
    p.poll = Some(PollSummary {
        options: vec![PollOption { title: "yes".into(), votes_count: Some(3) }, PollOption { title: "no".into(), votes_count: None }],
        votes_count: Some(u64::MAX),
        voters_count: None,
        expires_at: Some(Utc::now()),
        expired: true,
        multiple: false,
    });
    p.application = Some("Web".into());
    p.counts.replies = 12;
    p.counts.favourites = 1 << 40;
    ev.kind = EventKind::Updated;
    ev.via = Via::Stream;
    ev
}

#[test]
fn events_with_every_field_set_or_empty_match_serde_json() {
    let full = full_event();
    assert_eq!(encoded(&full), serde_json::to_string(&full).unwrap());
    let minimal = crate::testing::created("s", "x@y.z", 1, "");
    assert_eq!(encoded(&minimal), serde_json::to_string(&minimal).unwrap());
    let mut deleted = minimal.clone();
    deleted.kind = EventKind::Deleted;
    deleted.post = None;
    assert_eq!(encoded(&deleted), serde_json::to_string(&deleted).unwrap());
    let mut empty_poll = full;
    empty_poll.post.as_mut().unwrap().poll.as_mut().unwrap().options.clear();
    assert_eq!(encoded(&empty_poll), serde_json::to_string(&empty_poll).unwrap());
    // And it reads back as the same event.
    let back: Event = serde_json::from_str(&encoded(&empty_poll)).unwrap();
    assert_eq!(back, empty_poll);
}

fn opt_string() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any::<String>())
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        (any::<String>(), any::<String>(), opt_string(), opt_string(), opt_string()),
        (any::<bool>(), any::<Option<bool>>(), any::<[bool; 3]>(), any::<u64>(), any::<i64>()),
        (proptest::collection::vec(any::<String>(), 0..3), proptest::collection::vec((any::<String>(), opt_string()), 0..3)),
        (proptest::collection::vec((any::<String>(), opt_string(), opt_string()), 0..3), any::<Option<(u64, bool)>>(), 0u8..4),
    )
        .prop_map(|(texts, flags, lists, more)| {
            let (content, text, url, lang, desc) = texts;
            let (sensitive, discoverable, bio, count, secs) = flags;
            let (tags, mentions) = lists;
            let (media, poll, kind) = more;
            let mut ev = crate::testing::created("src", "alice@a.example", 7, &text);
            let when = Utc.timestamp_opt(secs % 400_000_000_000, (count % 2_000_000_000) as u32).single().unwrap_or_else(Utc::now);
            ev.observed_at = when;
            let p = ev.post.as_mut().unwrap();
            p.content_html = content;
            p.url = url.clone();
            p.language = lang;
            p.created_at = Some(when);
            p.sensitive = sensitive;
            p.account.discoverable = discoverable;
            p.account.bio_tags = BioTags { nobot: bio[0], noindex: bio[1], nobridge: bio[2] };
            p.tags = tags;
            p.mentions = mentions.into_iter().map(|(acct, url)| Mention { acct, url }).collect();
            p.media =
                media.into_iter().map(|(kind, url, preview_url)| Media { kind, url, preview_url, description: desc.clone() }).collect();
            p.poll = poll.map(|(n, expired)| PollSummary {
                options: vec![PollOption { title: "t".into(), votes_count: Some(n) }],
                votes_count: None,
                voters_count: Some(n),
                expires_at: None,
                expired,
                multiple: !expired,
            });
            p.counts.reblogs = count;
            ev.kind = match kind {
                0 => EventKind::Created,
                1 => EventKind::Updated,
                _ => EventKind::Deleted,
            };
            if kind == 3 {
                ev.post = None;
            }
            ev
        })
}

proptest! {
    #[test]
    fn arbitrary_strings_escape_as_serde_json(s in any::<String>()) {
        prop_assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap());
    }

    #[test]
    fn arbitrary_events_encode_as_serde_json(ev in arb_event()) {
        prop_assert_eq!(encoded(&ev), serde_json::to_string(&ev).unwrap());
    }
}

#[test]
fn an_encoded_event_keeps_its_json_in_step_with_its_kind() {
    let ev = full_event();
    let mut enc = crate::event::EncodedEvent::new(&ev);
    assert_eq!(enc.json().as_ref(), serde_json::to_string(&ev).unwrap());
    assert_eq!((enc.key(), enc.account(), enc.status_id()), (ev.key.as_str(), ev.account.as_str(), ev.status_id.as_str()));
    assert_eq!(enc.fingerprint(), ev.fingerprint());
    for kind in [EventKind::Created, EventKind::Deleted, EventKind::Updated] {
        enc.set_kind(kind);
        let mut want = ev.clone();
        want.kind = kind;
        assert_eq!(enc.kind(), kind);
        assert_eq!(enc.json().as_ref(), serde_json::to_string(&want).unwrap());
        assert_eq!(enc.decode().unwrap(), want);
    }
}

#[test]
fn a_counts_refresh_says_so_last_in_its_json_as_serde_would() {
    let ev = full_event();
    let plain = crate::event::EncodedEvent::from(ev.clone());
    assert!(!plain.json().contains("counts_refresh"), "absent when false: {}", plain.json());
    let refresh = plain.counts_refresh();
    let mut want = ev;
    want.kind = EventKind::Updated;
    want.counts_refresh = true;
    assert_eq!(&**refresh.json(), serde_json::to_string(&want).unwrap());
    assert_eq!(encoded(&want), serde_json::to_string(&want).unwrap());
    assert!(refresh.json().ends_with(",\"counts_refresh\":true}"));
    assert_eq!(refresh.decode().unwrap(), want);
    assert!(crate::event::EncodedEvent::from(want).is_counts_refresh(), "kept through an encode");
}

#[test]
fn a_records_kind_is_read_from_the_head_of_its_json_or_decoded() {
    use crate::event::{LogRecord, Position};
    let at = Position { partition: 0, offset: 1 };
    for kind in [EventKind::Created, EventKind::Deleted, EventKind::Updated] {
        let mut ev = full_event();
        ev.kind = kind;
        let rec = LogRecord::new(at, chrono::Utc::now(), encoded(&ev).into());
        assert_eq!(rec.kind().unwrap(), kind);
        // Another writer's field order (kind not first): decoded, same answer.
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&encoded(&ev)).unwrap();
        let k = v.remove("kind").unwrap();
        v.insert("kind".into(), k);
        let rec = LogRecord::new(at, chrono::Utc::now(), serde_json::to_string(&v).unwrap().into());
        assert!(!rec.payload.starts_with("{\"kind\""));
        assert_eq!(rec.kind().unwrap(), kind);
    }
    // Not an event at all: the decode error, not a guess.
    let rec = LogRecord::new(at, chrono::Utc::now(), "{\"kind\":\"bogus\"}".into());
    assert!(rec.kind().is_err());
}
