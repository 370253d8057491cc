//! The timeline source against the fake server, through the real runtime:
//! each kind of feed delivers its new posts once, a reconnect gap is filled
//! from REST, a backlog beyond the page cap is a reported gap, hidden feeds
//! give a clear error, a post seen by an account source and a hashtag source
//! is one event, a list source follows membership changes, and a busy
//! timeline leaves the account sources on the same server their share.

mod common;

use std::time::Duration;

use common::*;
use fedistream_connectors::mastodon::client::Secret;
use fedistream_connectors::mastodon::ratelimit::RateLimiters;
use fedistream_connectors::mastodon::source::{
    MastodonSource, MastodonTimelineConfig, MastodonTimelineSource, ReaderConnection, StreamMode, TimelineKind, TimelineServer,
};
use fedistream_connectors::testing::{AccountOpts, FakeConfig, FakeMastodon, Flavor, NewStatus, RateLimitConfig};
use fedistream_core::Log;
use serde_json::Value;

fn timeline(kinds: &[&str], stream: StreamMode) -> MastodonTimelineConfig {
    let mut c = MastodonTimelineConfig::new(kinds.iter().map(|k| TimelineKind::parse(k).unwrap()).collect());
    c.stream = stream;
    c.reconnect_initial = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(200);
    c.poll_interval = Duration::from_secs(3600);
    c.safety_interval = Duration::from_secs(3600);
    c
}

fn server(fake: &FakeMastodon, token: bool) -> TimelineServer {
    TimelineServer { base_url: fake.base_url().parse().unwrap(), token: token.then(|| Secret::new(TOKEN)) }
}

fn source(fake: &FakeMastodon, cfg: MastodonTimelineConfig, token: bool, limiters: &RateLimiters) -> Box<dyn fedistream_core::Source> {
    Box::new(MastodonTimelineSource::new(cfg, server(fake, token), limiters.clone()))
}

/// Wait until a source's feed has a durable checkpoint of at least `at_least`.
async fn wait_checkpoint(h: &Harness, source: &str, label: &str, at_least: &str) {
    wait_checkpoint_key(h, &format!("{source}|{}|timeline:{label}", h.fake.host()), at_least).await;
}

/// Wait until the checkpoint under `key` is at least `at_least` (Mastodon's id order).
async fn wait_checkpoint_key(h: &Harness, key: &str, at_least: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let cp = match &h.log {
            Some(log) => log.state_get("checkpoint", key).await.ok().flatten(),
            None => None,
        };
        if cp.as_ref().is_some_and(|cp| (cp.len(), cp.as_str()) >= (at_least.len(), at_least)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{key}: checkpoint not at {at_least}: {cp:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn created(lines: &[Value]) -> Vec<String> {
    keys_of(lines, "created")
}

/// Each kind of feed, over WebSocket, SSE or polling: exactly the posts the
/// feed carries, each once, whether the stream or REST (or both) saw it;
/// consent applies to every author.
#[tokio::test]
async fn each_kind_delivers_its_new_posts_once() {
    let cases: [(&str, StreamMode, &[usize]); 7] = [
        ("local", StreamMode::Websocket, &[1, 3, 5]),
        ("federated", StreamMode::Sse, &[1, 2, 3, 4, 5]),
        ("remote", StreamMode::Websocket, &[2, 4]),
        ("hashtag:rust", StreamMode::Sse, &[3, 4, 7]),
        ("hashtag:rust:local", StreamMode::Websocket, &[3, 7]),
        ("list:LIST", StreamMode::Sse, &[5]),
        ("local", StreamMode::Off, &[1, 3, 5]),
    ];
    for (kind, mode, expected) in cases {
        let fake = fake_with(fake_config(Flavor::Mastodon), &["alice", "bob"]).await;
        fake.add_account("carol", AccountOpts { domain: Some("remote.example".into()), ..Default::default() });
        fake.add_account("dave", AccountOpts { note_html: "<p>no bots please #nobot</p>".into(), ..Default::default() });
        let list = fake.create_list();
        assert!(fake.add_to_list(&list, "bob"));
        let kind = kind.replace("LIST", &list);
        let label = TimelineKind::parse(&kind).unwrap().label();
        let mut h = Harness::new(fake);
        let mut cfg = timeline(&[&kind], mode);
        // Streams come and go in no test here; REST runs often, so that
        // both paths see every post.
        cfg.safety_interval = Duration::from_millis(300);
        cfg.poll_interval = Duration::from_millis(300);
        let limiters = RateLimiters::default();
        h.launch_sources(vec![("t", source(&h.fake, cfg, true, &limiters))]);
        wait_checkpoint(&h, "t", &label, "0").await;
        if mode != StreamMode::Off {
            assert!(h.fake.wait_for_open_streams(1, DEADLINE).await, "{kind}: no stream");
        }
        let post = |user: &str, html: &str, tags: &[&str], visibility: &str| {
            let s = NewStatus {
                visibility: visibility.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..NewStatus::html(format!("<p>{html}</p>"))
            };
            h.fake.post(user, s)
        };
        let posts = [
            post("alice", "zero (unlisted: never)", &[], "unlisted"),
            post("alice", "one", &[], "public"),
            post("carol", "two, from afar", &[], "public"),
            post("alice", "three #rust", &["rust"], "public"),
            post("carol", "four #rust from afar", &["rust"], "public"),
            post("bob", "five", &[], "public"),
            post("dave", "six, by someone who said #nobot", &["rust"], "public"),
        ];
        // A reply to someone else: on hashtag feeds, not on public ones.
        let reply = NewStatus {
            in_reply_to_id: Some(posts[2].id.clone()),
            tags: vec!["rust".into()],
            ..NewStatus::html("<p>seven, a #rust reply</p>")
        };
        let posts: Vec<_> = posts.into_iter().chain([h.fake.post("alice", reply)]).collect();
        let want: Vec<String> = expected.iter().map(|i| posts[*i].uri.clone()).collect();
        h.wait_lines(&format!("{kind} posts"), DEADLINE, |l| want.iter().all(|u| has(l, "created", u))).await;
        // REST has read the whole feed (the checkpoint moved past the last post it carries).
        let last_in_feed = match label.as_str() {
            "remote" => posts[4].id.clone(),
            "hashtag:rust:local" | "hashtag:rust" => posts[7].id.clone(),
            l if l.starts_with("list:") => posts[5].id.clone(),
            _ => posts[6].id.clone(),
        };
        wait_checkpoint(&h, "t", &label, &last_in_feed).await;
        let lines = h.lines();
        let mut got = created(&lines);
        got.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "{kind} ({mode:?}): exactly its posts, each once; lines: {lines:#?}");
        assert!(lines.iter().all(|l| l["kind"] == "created"), "{kind}: no updates or deletes: {lines:#?}");
        if matches!(label.as_str(), "local" | "federated" | "hashtag:rust" | "hashtag:rust:local") {
            let st = h.wait_status_of("t", "consent skip counted", DEADLINE, |d| d.counters.get("skipped_bio_nobot") == Some(&1)).await;
            assert_eq!(st.counters.get("skipped_bio_nobot"), Some(&1));
        }
        h.stop().await;
    }
}

/// Posts made while the stream was down are read over REST after the reconnect.
#[tokio::test]
async fn a_reconnect_gap_is_filled_from_rest() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    let mut h = Harness::new(fake);
    let limiters = RateLimiters::default();
    h.launch_sources(vec![("t", source(&h.fake, timeline(&["local"], StreamMode::Auto), true, &limiters))]);
    wait_checkpoint(&h, "t", "local", "0").await;
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await);
    let live = h.fake.post("alice", NewStatus::html("<p>live</p>"));
    h.wait_lines("the live post", DEADLINE, |l| has(l, "created", &live.uri)).await;

    h.fake.pause_stream_broadcast(true);
    let lost: Vec<_> = (0..3).map(|i| h.fake.post("alice", NewStatus::html(format!("<p>while away {i}</p>")))).collect();
    h.fake.drop_streams();
    h.fake.pause_stream_broadcast(false);
    assert!(h.fake.wait_for_stream_connects(2, DEADLINE).await, "no reconnect");
    let lines = h.wait_lines("the posts the stream lost", DEADLINE, |l| lost.iter().all(|p| has(l, "created", &p.uri))).await;
    assert_eq!(created(&lines).len(), 4, "{lines:#?}");
    h.stop().await;
}

/// A backlog beyond `max_pages` is read from both ends; what lies between is
/// a gap, counted and shown in the status, not hidden.
#[tokio::test]
async fn a_backlog_beyond_the_page_cap_is_a_reported_gap() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    let mut h = Harness::new(fake);
    let mut cfg = timeline(&["local"], StreamMode::Off);
    cfg.max_pages = 1;
    let limiters = RateLimiters::default();
    h.launch_sources(vec![("t", source(&h.fake, cfg.clone(), false, &limiters))]);
    wait_checkpoint(&h, "t", "local", "0").await;
    h.stop().await;
    // 100 posts while fedistream is stopped: one page (40) from the old end,
    // one (40) from the new, 20 between.
    let posts: Vec<_> = (0..100).map(|i| h.fake.post("alice", NewStatus::html(format!("<p>busy {i}</p>")))).collect();
    h.launch_sources(vec![("t", source(&h.fake, cfg, false, &limiters))]);
    let st = h.wait_status_of("t", "a gap", DEADLINE, |d| d.counters.get("gaps") == Some(&1)).await;
    assert!(st.parts.get("local").is_some_and(|p| p.contains("could not be read") && p.contains("max_pages = 1")), "{st:#?}");
    wait_checkpoint(&h, "t", "local", &posts[99].id).await;
    let lines = h.wait_lines("both ends", DEADLINE, |l| created(l).len() == 80).await;
    for (i, p) in posts.iter().enumerate() {
        let expected = !(40..60).contains(&i);
        assert_eq!(has(&lines, "created", &p.uri), expected, "post {i}");
    }
    h.stop().await;
}

/// Hidden feeds are a clear error naming the setting, shown per feed in the
/// status, and not retried in a loop.
#[tokio::test]
async fn a_hidden_feed_gives_a_clear_error() {
    type Setup = fn(&FakeMastodon);
    let cases: [(&str, bool, Setup, &str); 3] = [
        ("local", false, |f| f.set_timeline_preview(false), "timeline_preview"),
        ("local", true, |f| f.set_feed_access("live_feeds.local", "disabled"), "timelines_access.live_feeds.local"),
        ("hashtag:rust", false, |f| f.refuse_feeds(Some(422)), "HTTP 422"),
    ];
    for (kind, token, setup, named) in cases {
        let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
        setup(&fake);
        let mut h = Harness::new(fake);
        let limiters = RateLimiters::default();
        h.launch_sources(vec![("t", source(&h.fake, timeline(&[kind], StreamMode::Off), token, &limiters))]);
        let label = TimelineKind::parse(kind).unwrap().label();
        let st = h.wait_status_of("t", "the hidden feed", DEADLINE, |d| d.parts.contains_key(&label)).await;
        let why = &st.parts[&label];
        assert!(why.starts_with("hidden:") && why.contains(named), "{kind}: {why}");
        // Not a retry loop: the status is written again and again meanwhile.
        let feed_requests = || h.fake.requests().iter().filter(|r| r.path.starts_with("/api/v1/timelines")).count();
        let before = feed_requests();
        assert!(before <= 1, "{kind}: {before} feed requests");
        let seen = st.updated_at;
        h.wait_status_of("t", "ten more status writes", DEADLINE, |d| d.updated_at > seen + chrono::Duration::milliseconds(500)).await;
        assert_eq!(feed_requests(), before, "{kind}: asked again");
        h.stop().await;
    }
}

/// A `follow` of feeds that are all hidden stops with the reason.
#[tokio::test]
async fn following_only_hidden_feeds_stops_with_the_reason() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    fake.set_timeline_preview(false);
    let mut h = Harness::new(fake);
    let mut cfg = timeline(&["local"], StreamMode::Off);
    cfg.stop_if_unreadable = true;
    let limiters = RateLimiters::default();
    h.launch_sources(vec![("t", source(&h.fake, cfg, false, &limiters))]);
    h.wait("the source to stop", DEADLINE, || h.finished().then_some(())).await;
    let summary = h.summary().await;
    let failure = format!("{:?}", summary.failures);
    assert!(failure.contains("no feed can be read") && failure.contains("timeline_preview"), "{failure}");
}

/// An account source and a hashtag source on one server see the same post:
/// it is stored (and delivered) once.
#[tokio::test]
async fn a_post_seen_by_an_account_source_and_a_hashtag_source_is_one_event() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice"]).await;
    let mut h = Harness::new(fake);
    let limiters = RateLimiters::default();
    let mut acfg = source_config(&h.fake, &["alice"]);
    acfg.safety_interval = Duration::from_millis(300);
    let reader = ReaderConnection { base_url: h.fake.base_url().parse().unwrap(), token: Secret::new(TOKEN) };
    let mut tcfg = timeline(&["hashtag:rust"], StreamMode::Websocket);
    tcfg.safety_interval = Duration::from_millis(300);
    h.launch_sources(vec![
        ("m", Box::new(MastodonSource::new(acfg, Some(reader), limiters.clone()))),
        ("t", source(&h.fake, tcfg, true, &limiters)),
    ]);
    wait_checkpoint(&h, "t", "hashtag:rust", "0").await;
    h.wait_checkpoints(2).await;
    assert!(h.fake.wait_for_open_streams(2, DEADLINE).await);
    let p = h.fake.post("alice", NewStatus { tags: vec!["rust".into()], ..NewStatus::html("<p>hello #rust</p>") });
    // Both sources have read it, by stream and by REST.
    wait_checkpoint(&h, "t", "hashtag:rust", &p.id).await;
    wait_checkpoint_key(&h, &format!("m|{}|alice@fake.example", h.fake.host()), &p.id).await;
    let lines = h.wait_lines("the post", DEADLINE, |l| has(l, "created", &p.uri)).await;
    let st_m = h.wait_status_of("m", "the account source's count", DEADLINE, |d| d.counters.get("received").is_some_and(|n| *n >= 1)).await;
    let st_t =
        h.wait_status_of("t", "the timeline source's count", DEADLINE, |d| d.counters.get("received").is_some_and(|n| *n >= 1)).await;
    assert!(st_m.counters["received"] >= 1 && st_t.counters["received"] >= 1, "both saw it");
    assert_eq!(lines.iter().filter(|l| l["key"] == p.uri.as_str()).count(), 1, "{lines:#?}");
    h.stop().await;
}

/// A list source follows the list's members as they change.
#[tokio::test]
async fn a_list_source_follows_membership_changes() {
    let fake = fake_with(fake_config(Flavor::Mastodon), &["alice", "bob"]).await;
    let list = fake.create_list();
    fake.add_to_list(&list, "bob");
    let mut h = Harness::new(fake);
    let kind = format!("list:{list}");
    let mut cfg = timeline(&[&kind], StreamMode::Auto);
    cfg.safety_interval = Duration::from_millis(300);
    let limiters = RateLimiters::default();
    h.launch_sources(vec![("t", source(&h.fake, cfg, true, &limiters))]);
    wait_checkpoint(&h, "t", &kind, "0").await;
    assert!(h.fake.wait_for_open_streams(1, DEADLINE).await);

    let bob1 = h.fake.post("bob", NewStatus::html("<p>bob, a member</p>"));
    let alice1 = h.fake.post("alice", NewStatus::html("<p>alice, not yet</p>"));
    wait_checkpoint(&h, "t", &kind, &bob1.id).await;
    h.fake.add_to_list(&list, "alice");
    h.fake.remove_from_list(&list, "bob");
    let alice2 = h.fake.post("alice", NewStatus::html("<p>alice, a member now</p>"));
    let bob2 = h.fake.post("bob", NewStatus::html("<p>bob, left</p>"));
    wait_checkpoint(&h, "t", &kind, &alice2.id).await;
    let lines = h.wait_lines("alice's post as a member", DEADLINE, |l| has(l, "created", &alice2.uri)).await;
    assert!(has(&lines, "created", &bob1.uri), "bob's post while he was a member");
    // Mastodon merges a new member's recent posts into the list feed (and
    // takes a leaving member's out): REST finds alice's earlier post too.
    assert!(has(&lines, "created", &alice1.uri), "alice's post from before she joined, merged into the list");
    assert!(!has(&lines, "created", &bob2.uri), "bob after he left");
    assert_eq!(created(&lines).len(), 3, "{lines:#?}");
    h.stop().await;
}

/// A busy federated timeline and account sources on one server, with one
/// token: the timeline takes its share of each rate-limit window, the
/// account sources get their posts, and nobody gets a 429.
#[tokio::test]
async fn a_busy_timeline_leaves_the_account_sources_their_share() {
    let cfg = FakeConfig { rate_limit: RateLimitConfig { limit: 30, window: Duration::from_secs(3) }, ..fake_config(Flavor::Mastodon) };
    let users = ["a1", "a2", "a3"];
    let fake = fake_with(cfg, &users).await;
    fake.add_account("crowd", AccountOpts { domain: Some("busy.example".into()), ..Default::default() });
    let mut h = Harness::new(fake);
    let limiters = RateLimiters::default();
    let mut acfg = source_config(&h.fake, &users);
    acfg.stream = StreamMode::Off;
    acfg.poll_interval = Duration::from_secs(1);
    acfg.max_poll_interval = Duration::from_secs(1);
    let reader = ReaderConnection { base_url: h.fake.base_url().parse().unwrap(), token: Secret::new(TOKEN) };
    let mut tcfg = timeline(&["federated"], StreamMode::Off);
    tcfg.poll_interval = Duration::from_millis(50);
    tcfg.max_pages = 1000;
    tcfg.rate_limit_share = 0.5;
    h.launch_sources(vec![
        ("m", Box::new(MastodonSource::new(acfg, Some(reader), limiters.clone()))),
        ("t", source(&h.fake, tcfg, true, &limiters)),
    ]);
    h.wait_checkpoints(4).await;
    // A backlog of 100 pages on the federated timeline: far more than the
    // 15 requests a window leaves it can read in the seconds this test runs.
    let crowd: Vec<_> = (0..4000).map(|i| h.fake.post("crowd", NewStatus::html(format!("<p>crowd {i}</p>")))).collect();
    let timeline_requests_per_window = |h: &Harness| {
        let mut per_window = std::collections::BTreeMap::new();
        for r in h.fake.requests().iter().filter(|r| r.path.starts_with("/api/v1/timelines")) {
            *per_window.entry(r.at.timestamp().div_euclid(3)).or_insert(0usize) += 1;
        }
        per_window
    };
    h.wait("the timeline to be paging through its backlog", DEADLINE, || {
        (timeline_requests_per_window(&h).values().sum::<usize>() >= 6).then_some(())
    })
    .await;
    // Now, while it is busy, the followed accounts post.
    let mine: Vec<_> = users.iter().map(|u| h.fake.post(u, NewStatus::html(format!("<p>{u} here</p>")))).collect();
    let lines = h.wait_lines("the followed accounts' posts", DEADLINE, |l| mine.iter().all(|p| has(l, "created", &p.uri))).await;
    let crowd_read = crowd.iter().filter(|p| has(&lines, "created", &p.uri)).count();
    assert!(crowd_read < crowd.len(), "the accounts' posts came while the timeline was still behind ({crowd_read} read)");
    let requests = h.fake.requests();
    let throttled: Vec<String> =
        requests.iter().filter(|r| r.status == 429).map(|r| format!("{} {}?{}", r.method, r.path, r.query)).collect();
    assert!(throttled.is_empty(), "429s: {throttled:#?}");
    // The timeline kept to its half of every window: 15, plus the first
    // request of a window (sent before its headers are known) and one that
    // the server's clock may count in the next window.
    let per_window = timeline_requests_per_window(&h);
    assert!(per_window.values().all(|n| *n <= 17), "timeline requests per window: {per_window:?}");
    h.stop().await;
}
