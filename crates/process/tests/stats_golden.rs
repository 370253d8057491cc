//! Golden tests of the `account_stats` processor: each fixture stream
//! (`tests/fixtures/stats/NAME.jsonl`, compact event lines, see
//! `common/stats_fixture.rs`) goes through the processor one event per batch,
//! and what it emitted must equal `tests/expected/stats/NAME.json`. The same
//! stream in one batch, and with the processor rebuilt from its saved state
//! after every event (a restart), must emit the same bytes.
//!
//! `UPDATE_GOLDEN=1 cargo test -p fedistream-process --test stats_golden`
//! rewrites the expected files (review the diff: it is the specification).

#[path = "common/stats_fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use fedistream_core::component::{Processor, ProcessorOutput};
use fedistream_core::event::{LogRecord, Position};
use fedistream_process::stats::{AccountStatsConfig, AccountStatsProcessor};
use fixture::Step;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    OneByOne,
    OneBatch,
    RestartEveryEvent,
}

/// Run a fixture; returns the emitted payloads and the processor at the end.
fn run(name: &str, mode: Mode) -> (Vec<String>, AccountStatsProcessor) {
    let text = std::fs::read_to_string(dir().join(format!("fixtures/stats/{name}.jsonl"))).unwrap();
    let (cfg, steps) = fixture::parse(&text);
    let cfg: AccountStatsConfig = cfg.map(|c| serde_json::from_value(c).unwrap()).unwrap_or_default();
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let new = || AccountStatsProcessor::new("stats", &cfg, "stats").unwrap();
    let mut p = new();
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut emitted = Vec::new();
    let mut pending: Vec<LogRecord> = Vec::new();
    let mut offset = 0;
    let mut apply = |p: &mut AccountStatsProcessor, out: ProcessorOutput, emitted: &mut Vec<String>| {
        assert!(out.rejected.is_empty());
        emitted.extend(out.records.iter().map(|r| r.payload.to_string()));
        for s in out.state {
            match s.value {
                Some(v) => state.insert(s.key, v),
                None => state.remove(&s.key),
            };
        }
        if mode == Mode::RestartEveryEvent {
            *p = new();
            p.load(state.clone().into_iter().collect(), None).unwrap();
        }
    };
    for step in steps {
        match step {
            Step::Event(ev) => {
                offset += 1;
                let rec = LogRecord::from_event(Position { partition: 0, offset }, Utc::now(), *ev);
                if mode == Mode::OneBatch {
                    pending.push(rec);
                    continue;
                }
                let mut out = ProcessorOutput::default();
                p.process(&[rec], &mut out).unwrap();
                apply(&mut p, out, &mut emitted);
            }
            Step::Tick => {
                if !pending.is_empty() {
                    let mut out = ProcessorOutput::default();
                    p.process(&std::mem::take(&mut pending), &mut out).unwrap();
                    apply(&mut p, out, &mut emitted);
                }
                let mut out = ProcessorOutput::default();
                p.tick(Utc::now(), &mut out).unwrap();
                apply(&mut p, out, &mut emitted);
            }
        }
    }
    if !pending.is_empty() {
        let mut out = ProcessorOutput::default();
        p.process(&pending, &mut out).unwrap();
        apply(&mut p, out, &mut emitted);
    }
    (emitted, p)
}

/// Run a fixture in every mode and compare with its expected file.
fn golden(name: &str) -> Vec<serde_json::Value> {
    let (emitted, _) = run(name, Mode::OneByOne);
    let (batched, _) = run(name, Mode::OneBatch);
    let (restarted, _) = run(name, Mode::RestartEveryEvent);
    assert_eq!(batched, emitted, "{name}: one batch emits the same bytes as one event per batch");
    assert_eq!(restarted, emitted, "{name}: a restart after every event emits the same bytes");
    let got: Vec<serde_json::Value> = emitted.iter().map(|s| serde_json::from_str(s).unwrap()).collect();
    let path = dir().join(format!("expected/stats/{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display())),
    )
    .unwrap();
    assert_eq!(got, want, "{name}: emitted records differ from {}", path.display());
    got
}

/// The records of one window key, in emission order.
fn of<'a>(recs: &'a [serde_json::Value], key: &str) -> Vec<&'a serde_json::Value> {
    recs.iter().filter(|r| r["key"] == key).collect()
}

#[test]
fn kinds_of_posts_are_counted_in_their_hour_and_day() {
    let recs = golden("kinds");
    let day = of(&recs, "ada@social.example/day/2026-03-02T00:00:00Z");
    assert_eq!(day.len(), 1, "closed once, when a post of the next day moved the watermark past it");
    let d = day[0];
    assert_eq!(d["final"], true);
    assert_eq!(d["revision"], 0);
    assert_eq!((d["posts"].as_u64(), d["originals"].as_u64(), d["boosts"].as_u64()), (Some(6), Some(2), Some(1)));
    assert_eq!((d["replies_to_self"].as_u64(), d["replies_to_others"].as_u64()), (Some(2), Some(1)));
}

#[test]
fn a_post_later_than_the_lateness_reemits_its_window_with_the_next_revision() {
    let recs = golden("late");
    let hour = of(&recs, "ada@social.example/hour/2026-03-02T09:00:00Z");
    assert_eq!(hour.iter().map(|r| r["revision"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(hour[0]["posts"], 1);
    assert_eq!(hour[1]["posts"], 2);
}

#[test]
fn a_post_within_the_lateness_lands_in_its_open_window_without_a_revision() {
    let recs = golden("within_lateness");
    for r in &recs {
        assert_eq!(r["revision"], 0, "{r}");
    }
    let hour = of(&recs, "ada@social.example/hour/2026-03-02T09:00:00Z");
    assert_eq!(hour.len(), 1);
    assert_eq!(hour[0]["posts"], 2);
}

#[test]
fn a_backfill_in_reverse_order_fills_the_right_windows() {
    let recs = golden("backfill_reverse");
    // The last revision of each window holds everything.
    let mut last: BTreeMap<String, &serde_json::Value> = BTreeMap::new();
    for r in &recs {
        last.insert(r["key"].as_str().unwrap().to_string(), r);
    }
    assert_eq!(last["bo@poets.example/day/2026-02-10T00:00:00Z"]["posts"], 3);
    assert_eq!(last["bo@poets.example/day/2026-02-11T00:00:00Z"]["posts"], 2);
}

#[test]
fn edits_count_once_and_deletes_take_the_post_out() {
    let recs = golden("edits_deletes");
    let day = of(&recs, "ada@social.example/day/2026-03-02T00:00:00Z");
    let counts = |r: &serde_json::Value| {
        (r["revision"].as_u64().unwrap(), r["posts"].as_u64().unwrap(), r["edits"].as_u64().unwrap(), r["deletes"].as_u64().unwrap())
    };
    // Closed with two posts (one edited) and one delete; the delete of a
    // counted post after the close comes as revision 1.
    assert_eq!(day.iter().map(|r| counts(r)).collect::<Vec<_>>(), vec![(0, 2, 1, 1), (1, 1, 1, 2)]);
    assert_eq!(day[0]["engagement"]["favourites"], 3, "the first post's latest counts");
    assert_eq!(day[1]["engagement"]["favourites"], 0, "gone with the post");
}

#[test]
fn duplicate_delivery_counts_once() {
    let recs = golden("duplicates");
    let day = of(&recs, "ada@social.example/day/2026-03-02T00:00:00Z");
    assert_eq!(day.len(), 1);
    assert_eq!(day[0]["posts"], 2);
    assert_eq!(day[0]["edits"], 0);
}

#[test]
fn a_zoned_day_follows_daylight_saving_time() {
    let recs = golden("dst_zone");
    let day = of(&recs, "ada@social.example/day/2026-03-28T23:00:00Z");
    assert_eq!(day.len(), 1);
    assert_eq!(day[0]["end"], "2026-03-29T22:00:00Z", "a 23-hour day in Berlin");
    assert_eq!(day[0]["zone"], "Europe/Berlin");
    assert_eq!(day[0]["posts"], 3);
}

#[test]
fn an_account_posting_once_a_year_keeps_bounded_state() {
    let (recs, p) = run("yearly", Mode::OneByOne);
    golden("yearly");
    let st = p.account(0, "hermit@quiet.example").unwrap();
    // Only the newest post and its two windows are held; the older years were evicted.
    assert_eq!(st.posts.len(), 1);
    assert_eq!(st.held_windows().count(), 2);
    assert!(recs.len() >= 4);
    // A post for a long-evicted window is not applied (it would overwrite the full record).
    assert_eq!(st.floor.len(), 2);
}

#[test]
fn open_windows_are_emitted_early_when_asked_and_only_when_changed() {
    let recs = golden("emit_open");
    let hour = of(&recs, "ada@social.example/hour/2026-03-02T09:00:00Z");
    let flags: Vec<(bool, u64)> = hour.iter().map(|r| (r["final"].as_bool().unwrap(), r["posts"].as_u64().unwrap())).collect();
    assert_eq!(flags, vec![(false, 1), (false, 2), (true, 2)]);
}

/// The totals records (`scope:name/window/start/p<partition>`) of a scope, in
/// emission order, as (revision, final, posts, accounts).
fn totals_of(recs: &[serde_json::Value], key: &str) -> Vec<(u64, bool, u64, u64)> {
    of(recs, key)
        .iter()
        .map(|r| {
            (r["revision"].as_u64().unwrap(), r["final"].as_bool().unwrap(), r["posts"].as_u64().unwrap(), r["accounts"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn instance_and_source_totals_follow_posts_deletes_and_late_events() {
    let recs = golden("totals");
    // Closed with ada's and cy's posts (cy's second deleted before), then
    // ada's only post deleted (one active account less), then cy's late post.
    assert_eq!(
        totals_of(&recs, "instance:social.example/hour/2026-03-02T09:00:00Z/p0"),
        vec![(0, true, 2, 2), (1, true, 1, 1), (2, true, 2, 1)]
    );
    // bo's only post of the hour was deleted before the hour closed: as if it
    // had never been (the same as when the delete arrives first).
    assert_eq!(totals_of(&recs, "instance:poets.example/hour/2026-03-02T09:00:00Z/p0"), vec![]);
    // A source counts the posts it delivered: home had ada's, cy's (and bo's, deleted) ...
    assert_eq!(totals_of(&recs, "source:home/hour/2026-03-02T09:00:00Z/p0"), vec![(0, true, 2, 2), (1, true, 1, 1), (2, true, 2, 1)]);
    // ... timeline only ada's (a second delivery of a post counted by home), until it was deleted.
    assert_eq!(totals_of(&recs, "source:timeline/hour/2026-03-02T09:00:00Z/p0"), vec![(0, true, 1, 1), (1, true, 0, 0)]);
    // The day: ada's later post, cy's first, third and late one.
    let day = totals_of(&recs, "instance:social.example/day/2026-03-02T00:00:00Z/p0");
    assert_eq!(day, vec![(0, true, 4, 2)]);
    assert_eq!(totals_of(&recs, "instance:poets.example/day/2026-03-02T00:00:00Z/p0"), vec![(0, true, 1, 1)]);
    // Every totals record names its scope, and an instance's never counts an account of another.
    for r in recs.iter().filter(|r| r.get("scope").is_some()) {
        assert!(
            r["key"].as_str().unwrap().starts_with(&format!("{}:{}/", r["scope"].as_str().unwrap(), r["name"].as_str().unwrap())),
            "{r}"
        );
    }
}
