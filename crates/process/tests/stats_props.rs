//! Property: any permutation of an event stream in which no event is later
//! than the allowed lateness (relative to the newest event before it), with
//! any events delivered more than once, gives the same final statistics as the
//! sorted, deduplicated stream — byte for byte: the accounts' records and the
//! per-instance and per-source totals (posts come through two sources, some
//! through both).

#[path = "common/stats_fixture.rs"]
mod fixture;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use fedistream_core::component::{Processor, ProcessorOutput};
use fedistream_core::event::{Event, LogRecord, Position};
use fedistream_process::stats::{AccountStatsConfig, AccountStatsProcessor};
use fixture::Line;
use proptest::prelude::*;

const LATENESS_MIN: i64 = 60;

/// One generated post: account, minute offset, and what happens to it.
#[derive(Debug, Clone)]
struct Gen {
    account: usize,
    minute: i64,
    lang: usize,
    tags: Vec<usize>,
    reply: usize,
    edited: bool,
    deleted: bool,
    favourites: u64,
    /// Also delivered by the second source.
    both_sources: bool,
}

fn gen() -> impl Strategy<Value = Gen> {
    (
        0..3usize,
        0..(3 * 24 * 60i64),
        0..3usize,
        proptest::collection::vec(0..4usize, 0..3),
        0..3usize,
        any::<bool>(),
        prop::bool::weighted(0.15),
        0..5u64,
        prop::bool::weighted(0.25),
    )
        .prop_map(|(account, minute, lang, tags, reply, edited, deleted, favourites, both_sources)| Gen {
            account,
            minute,
            lang,
            tags,
            reply,
            edited,
            deleted,
            favourites,
            both_sources,
        })
}

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-27T00:00:00Z").unwrap().with_timezone(&Utc)
}

/// The events of the stream, each with its event time (minutes), in sorted order.
fn events(posts: &[Gen]) -> Vec<(i64, Event)> {
    // Two accounts on one instance, so its totals add up more than one.
    let accts = ["ada@social.example", "bo@poets.example", "cy@social.example"];
    let sources = ["home", "timeline"];
    let langs = ["en", "de", "pt"];
    let tags = ["rust", "art", "music", "news"];
    let mut out = Vec::new();
    for (i, g) in posts.iter().enumerate() {
        let at = base() + Duration::minutes(g.minute);
        let acct = accts[g.account];
        let line = Line {
            acct: acct.into(),
            id: i.to_string(),
            at: Some(at),
            text: format!("post {i} with https://example.org/{i} #{}", tags[g.tags.first().copied().unwrap_or(0)]),
            lang: Some(langs[g.lang].into()),
            app: Some(["Tusky", "Elk"][g.lang % 2].into()),
            tags: g.tags.iter().map(|t| tags[*t].to_string()).collect(),
            reply_to: match g.reply {
                0 => None,
                1 => Some(acct.into()),
                _ => Some("zed@other.example".into()),
            },
            counts: Some((0, 1, g.favourites, at + Duration::minutes(5), "social.example".into())),
            source: Some(sources[g.account % 2].into()),
            ..Default::default()
        };
        out.push((g.minute, fixture::event(&line)));
        if g.both_sources {
            let other = Line { source: Some(sources[(g.account + 1) % 2].into()), ..line.clone() };
            out.push((g.minute, fixture::event(&other)));
        }
        if g.edited {
            let edit = Line {
                kind: Some("updated".into()),
                edited: Some(at + Duration::minutes(3)),
                text: format!("{} (edited)", line.text),
                ..line.clone()
            };
            out.push((g.minute, fixture::event(&edit)));
        }
        if g.deleted {
            let del = Line { kind: Some("deleted".into()), ..line.clone() };
            out.push((g.minute, fixture::event(&del)));
        }
    }
    // Sorted by event time; a post's own events in the order they happened.
    out.sort_by_key(|(m, _)| *m);
    out
}

/// Every window's last record after the stream, open windows emitted at the end.
fn final_stats(stream: &[Event]) -> BTreeMap<String, String> {
    let cfg = AccountStatsConfig { emit_open_every: Some(std::time::Duration::from_secs(1)), ..Default::default() };
    let mut p = AccountStatsProcessor::new("stats", &cfg, "stats").unwrap();
    let mut out = ProcessorOutput::default();
    for (i, ev) in stream.iter().enumerate() {
        let rec = LogRecord::from_event(Position { partition: 0, offset: i as u64 }, Utc::now(), ev.clone());
        p.process(&[rec], &mut out).unwrap();
    }
    p.tick(Utc::now(), &mut out).unwrap();
    let mut last = BTreeMap::new();
    for r in out.records {
        let v: serde_json::Value = serde_json::from_str(&r.payload).unwrap();
        last.insert(v["key"].as_str().unwrap().to_string(), r.payload.to_string());
    }
    last
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reordering_within_the_lateness_and_redelivery_change_nothing(
        posts in proptest::collection::vec(gen(), 1..40),
        delays in proptest::collection::vec(0..LATENESS_MIN, 200),
        dups in proptest::collection::vec(any::<bool>(), 200),
    ) {
        let sorted = events(&posts);
        let want = final_stats(&sorted.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>());
        // Each event (and a second delivery of some) arrives up to the lateness
        // after its event time, in the order of arrival.
        let mut arrivals: Vec<(i64, usize, Event)> = Vec::new();
        for (i, (m, ev)) in sorted.iter().enumerate() {
            arrivals.push((m + delays[i % delays.len()], i, ev.clone()));
            if dups[i % dups.len()] {
                arrivals.push((m + delays[(i * 7 + 3) % delays.len()], i, ev.clone()));
            }
        }
        arrivals.sort_by_key(|(at, i, _)| (*at, *i));
        let got = final_stats(&arrivals.into_iter().map(|(_, _, e)| e).collect::<Vec<_>>());
        prop_assert_eq!(got, want);
    }
}
