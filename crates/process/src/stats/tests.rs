//! Unit tests of the processor glue: configuration checks, state keys,
//! undecodable input. The windowing behaviour is covered by the golden tests
//! (`tests/stats_golden.rs`) and the property test (`tests/stats_props.rs`).

use super::*;
use fedistream_core::event::Position;

#[test]
fn the_default_config_is_valid_and_bad_values_are_named() {
    assert!(AccountStatsConfig::default().validate().is_empty());
    let bad = AccountStatsConfig {
        windows: vec![WindowSize::Day, WindowSize::Day],
        zone: Some("Mars/Olympus".into()),
        top_k: 0,
        emit_open_every: Some(Duration::from_millis(1)),
        ..Default::default()
    };
    let keys: Vec<&str> = bad.validate().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec!["windows", "zone", "emit_open_every", "top_k"]);
    let empty = AccountStatsConfig { windows: vec![], ..Default::default() };
    assert_eq!(empty.validate()[0].0, "windows");
}

#[test]
fn config_reads_from_toml_with_durations() {
    let cfg: AccountStatsConfig =
        toml_like(r#"{"windows":["hour","week"],"zone":"Europe/Lisbon","allowed_lateness":"30m","emit_open_every":"10s"}"#);
    assert_eq!(cfg.windows, vec![WindowSize::Hour, WindowSize::Week]);
    assert_eq!(cfg.allowed_lateness, Duration::from_secs(1800));
    assert_eq!(cfg.keep_closed, Duration::from_secs(86_400));
    assert_eq!(cfg.emit_open_every, Some(Duration::from_secs(10)));
    assert!(serde_json::from_str::<AccountStatsConfig>(r#"{"window":["hour"]}"#).is_err(), "unknown keys are refused");
    assert!(serde_json::from_str::<AccountStatsConfig>(r#"{"windows":["month"]}"#).is_err());
}

fn toml_like(json: &str) -> AccountStatsConfig {
    serde_json::from_str(json).unwrap()
}

#[test]
fn state_keys_carry_the_partition() {
    assert_eq!(parse_state_key("3/ada@social.example"), Some((3, "ada@social.example", None)));
    assert_eq!(
        parse_state_key("3/ada@social.example/https://social.example/users/ada/statuses/1"),
        Some((3, "ada@social.example", Some("https://social.example/users/ada/statuses/1")))
    );
    assert_eq!(parse_state_key("x/ada"), None);
    assert_eq!(parse_state_key("nopartition"), None);
}

#[test]
fn an_undecodable_record_is_rejected_and_the_rest_processed() {
    let mut p = AccountStatsProcessor::new("s", &AccountStatsConfig::default(), "s").unwrap();
    let bad = LogRecord::new(Position { partition: 0, offset: 1 }, Utc::now(), "{not json".into());
    let good = LogRecord::from_event(
        Position { partition: 0, offset: 2 },
        Utc::now(),
        fedistream_core::event::Event::created("s", fedistream_core::testing::post("ada@social.example", 1, "hi")),
    );
    let mut out = ProcessorOutput::default();
    p.process(&[bad, good], &mut out).unwrap();
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].0.offset, 1);
    let keys: Vec<&str> = out.state.iter().map(|s| s.key.as_str()).collect();
    // (The test post's time is the clock's: the windows' starts vary.)
    let shapes: Vec<String> = keys
        .iter()
        .map(|k| match k.split_once(':') {
            Some((scope, rest)) if k.starts_with('t') => {
                let (size, rest) = rest.split_once(':').unwrap();
                format!("{scope}:{size}:<start>/{}", rest.split_once('/').unwrap().1)
            }
            _ => k.to_string(),
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            "0/ada@social.example/https://social.example/users/ada/statuses/1",
            "0/ada@social.example",
            "t0/instance:hour:<start>/social.example",
            "t0/instance:day:<start>/social.example",
            "t0/instance/social.example",
            "t0/source:hour:<start>/s",
            "t0/source:day:<start>/s",
            "t0/source/s",
        ],
        "the post, the account's windows, and its instance's and source's totals are written"
    );
    // Loading what was written gives the same state back.
    let saved: Vec<(String, String)> = out.state.iter().map(|s| (s.key.clone(), s.value.clone().unwrap())).collect();
    let before = p.account(0, "ada@social.example").unwrap().clone();
    p.load(saved.clone(), Some(&[0])).unwrap();
    assert_eq!(p.account(0, "ada@social.example"), Some(&before));
    assert_eq!(p.account(0, "ada@social.example").unwrap().posts.len(), 1);
    let totals = p.scope(0, Scope::Instance, "social.example").unwrap();
    assert_eq!(totals.windows.len(), 2);
    assert!(totals.windows.values().all(|w| w.accounts.get("ada@social.example") == Some(&1)));
    assert!(p.scope(0, Scope::Source, "s").is_some());
    // State of partitions this process does not own is not loaded.
    p.load(saved, Some(&[1])).unwrap();
    assert!(p.account(0, "ada@social.example").is_none());
    assert!(p.scope(0, Scope::Instance, "social.example").is_none());
    assert!(p.load(vec![("0/x@y".into(), "\"text\"".into())], None).is_err(), "damaged state is an error, not a panic");
}

#[test]
fn held_posts_stay_bounded_as_an_account_keeps_posting() {
    // One post every 2.4 hours for 40 days: with the default 1 h lateness and
    // 1 d keep_closed, about two days of posts are held, never the history.
    let mut p = AccountStatsProcessor::new("s", &AccountStatsConfig::default(), "s").unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let mut max_posts = 0;
    for i in 0..400u64 {
        let mut post = fedistream_core::testing::post("ada@social.example", i, "hi");
        post.created_at = Some(t0 + chrono::Duration::minutes(144 * i as i64));
        let rec =
            LogRecord::from_event(Position { partition: 0, offset: i }, Utc::now(), fedistream_core::event::Event::created("s", post));
        let mut out = ProcessorOutput::default();
        p.process(&[rec], &mut out).unwrap();
        let st = p.account(0, "ada@social.example").unwrap();
        max_posts = max_posts.max(st.posts.len());
    }
    let st = p.account(0, "ada@social.example").unwrap();
    assert!(max_posts <= 30, "at most ~3 days of 10 posts a day held: {max_posts}");
    assert!(st.held_windows().count() <= 40, "{}", st.held_windows().count());
}

#[test]
fn account_and_post_entries_written_by_hand_are_what_serde_writes() {
    // Open, closed, dirty and evicted windows (a floor), with and without a zone.
    for zone in [None, Some("Europe/Berlin".to_string())] {
        let cfg = AccountStatsConfig { zone, windows: vec![WindowSize::Hour, WindowSize::Day, WindowSize::Week], ..Default::default() };
        let mut p = AccountStatsProcessor::new("s", &cfg, "s").unwrap();
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let empty = AccountState::default();
        let mut b = Vec::new();
        empty.write_json(&mut b);
        assert_eq!(String::from_utf8(b).unwrap(), serde_json::to_string(&empty).unwrap());
        for i in 0..200u64 {
            let mut post = fedistream_core::testing::post("ada@social.example", i, "hi");
            // Forwards mostly, now and then far back (a closed window re-emitted).
            let minutes = if i % 9 == 8 { 97 * i as i64 - 600 } else { 97 * i as i64 };
            post.created_at = Some(t0 + chrono::Duration::minutes(minutes));
            let rec =
                LogRecord::from_event(Position { partition: 0, offset: i }, Utc::now(), fedistream_core::event::Event::created("s", post));
            let mut out = ProcessorOutput::default();
            p.process(&[rec], &mut out).unwrap();
            let st = p.account(0, "ada@social.example").unwrap();
            let mut b = Vec::new();
            st.write_json(&mut b);
            assert_eq!(String::from_utf8(b).unwrap(), serde_json::to_string(st).unwrap(), "after event {i}");
            for (uri, post) in &st.posts {
                let mut b = Vec::new();
                post.write_json(&mut b);
                assert_eq!(String::from_utf8(b).unwrap(), serde_json::to_string(post).unwrap(), "{uri}");
            }
        }
        assert!(!p.account(0, "ada@social.example").unwrap().floor.is_empty(), "windows were evicted");
    }
}

#[test]
fn records_and_state_written_by_hand_are_what_serde_writes() {
    use fedistream_core::post::{BoostOf, InReplyTo, Media, Mention};
    let cfg =
        AccountStatsConfig { zone: Some("America/Sao_Paulo".into()), emit_open_every: Some(Duration::from_secs(10)), ..Default::default() };
    let mut p = AccountStatsProcessor::new("s", &cfg, "s").unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let mut seen = 0;
    for i in 0..300u64 {
        let acct = ["ada@social.example", "Bö\"b@x.example"][i as usize % 2];
        let text = format!("post {i} \"quoted\" über https://www.example.org/{i} and http://news.example/x #t{} ", i % 4);
        let mut post = fedistream_core::testing::post(acct, i, &text);
        post.created_at = Some(t0 + chrono::Duration::minutes(37 * i as i64));
        post.language = [None, Some("pt-BR".to_string()), Some("en".to_string())][i as usize % 3].clone();
        post.application = [None, Some("Tusky \u{1F418}".to_string())][i as usize % 2].clone();
        post.tags = vec![format!("T{}", i % 4), "Rust".into()];
        post.mentions = vec![Mention { acct: format!("m{}@x.example", i % 3), url: None }];
        post.media =
            if i % 5 == 0 { vec![Media { kind: "image".into(), url: None, preview_url: None, description: None }] } else { vec![] };
        post.spoiler_text = if i % 7 == 0 { "cw".into() } else { String::new() };
        post.counts.replies = i % 3;
        post.counts.favourites = i;
        if i % 11 == 0 {
            post.boost_of = Some(BoostOf { id: "1".into(), uri: "u".into(), url: None, account: format!("b{}@y.example", i % 2) });
        }
        if i % 4 == 1 {
            post.in_reply_to = Some(InReplyTo { id: "1".into(), account_id: None, account: Some("other@x.example".into()) });
        }
        let source = ["s", "t"][i as usize % 3 / 2];
        let ev = match i % 13 {
            // An edit of this post, a delete of an earlier one.
            5 => {
                post.edited_at = Some(post.created_at.unwrap() + chrono::Duration::minutes(2));
                fedistream_core::event::Event::updated(source, post)
            }
            9 => {
                let mut del = fedistream_core::event::Event::created(source, fedistream_core::testing::post(acct, i - 4, ""));
                del.kind = fedistream_core::event::EventKind::Deleted;
                del.post = None;
                del
            }
            _ => fedistream_core::event::Event::created(source, post),
        };
        let rec = LogRecord::from_event(Position { partition: 0, offset: i }, Utc::now(), ev);
        let mut out = ProcessorOutput::default();
        p.process(&[rec], &mut out).unwrap();
        for (account, st) in p.accounts.values().flatten() {
            let mut b = Vec::new();
            st.write_json(&mut b);
            assert_eq!(String::from_utf8(b).unwrap(), serde_json::to_string(st).unwrap(), "{account}");
            for (uri, post) in &st.posts {
                let mut b = Vec::new();
                post.write_json(&mut b);
                assert_eq!(String::from_utf8(b).unwrap(), serde_json::to_string(post).unwrap(), "{uri}");
            }
        }
        if i % 50 == 49 {
            p.tick(Utc::now(), &mut out).unwrap();
        }
        for r in &out.records {
            if let Ok(TopicRecord::Account(rec)) = TopicRecord::parse(&r.payload) {
                assert_eq!(*r.payload, serde_json::to_string(&rec).unwrap());
                seen += 1;
            }
        }
    }
    assert!(seen > 100, "{seen} records compared");
}
