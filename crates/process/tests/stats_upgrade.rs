//! An upgrade keeps a running deployment's windows: the state entries the
//! `account_stats` processor wrote before (`tests/expected/stats/state/NAME.json`,
//! the entries after the first half of each golden fixture, one event per
//! batch, as written by the processor of 2026-12-07 — `main` at 82cdcc0, before the
//! performance work that keeps fingerprints as numbers, totals' accounts
//! hashed and records written from a tally) are what this version writes at
//! the same point, and loading them, then running the second half, emits what
//! an uninterrupted run emits.
//!
//! `UPDATE_GOLDEN=1 cargo test -p fedistream-process --test stats_upgrade`
//! rewrites the state files: only when the state format is meant to change,
//! and then with a migration for the entries of the files as they were.

#[path = "common/stats_fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use fedistream_core::component::{Processor, ProcessorOutput};
use fedistream_core::event::{LogRecord, Position};
use fedistream_process::stats::{AccountStatsConfig, AccountStatsProcessor};
use fixture::Step;

const FIXTURES: &[&str] =
    &["backfill_reverse", "dst_zone", "duplicates", "edits_deletes", "emit_open", "kinds", "late", "totals", "within_lateness", "yearly"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Run `steps` one event per batch from `state`; returns the emitted payloads and the state after.
fn run(cfg: &AccountStatsConfig, steps: Vec<Step>, mut state: BTreeMap<String, String>) -> (Vec<String>, BTreeMap<String, String>) {
    let mut p = AccountStatsProcessor::new("stats", cfg, "stats").unwrap();
    p.load(state.clone().into_iter().collect(), None).unwrap();
    let mut emitted = Vec::new();
    for (offset, step) in steps.into_iter().enumerate() {
        let mut out = ProcessorOutput::default();
        match step {
            Step::Event(ev) => {
                let rec = LogRecord::from_event(Position { partition: 0, offset: offset as u64 + 1 }, Utc::now(), *ev);
                p.process(&[rec], &mut out).unwrap();
            }
            Step::Tick => p.tick(Utc::now(), &mut out).unwrap(),
        }
        assert!(out.rejected.is_empty());
        emitted.extend(out.records.iter().map(|r| r.payload.to_string()));
        for s in out.state {
            match s.value {
                Some(v) => state.insert(s.key, v),
                None => state.remove(&s.key),
            };
        }
    }
    (emitted, state)
}

#[test]
fn the_state_of_the_earlier_version_is_what_this_one_writes_and_goes_on_from() {
    for name in FIXTURES {
        let text = std::fs::read_to_string(dir().join(format!("fixtures/stats/{name}.jsonl"))).unwrap();
        let cfg: AccountStatsConfig = fixture::parse(&text).0.map(|c| serde_json::from_value(c).unwrap()).unwrap_or_default();
        let (_, mut first) = fixture::parse(&text);
        let second = first.split_off(first.len() / 2);
        let (emitted_first, state) = run(&cfg, first, BTreeMap::new());
        assert!(!state.is_empty(), "{name}: the first half leaves state");
        let path = dir().join(format!("expected/stats/state/{name}.json"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&state).unwrap() + "\n").unwrap();
        }
        let stored: BTreeMap<String, String> = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display())),
        )
        .unwrap();
        assert_eq!(state, stored, "{name}: the state entries differ from the earlier version's ({})", path.display());
        let (emitted_second, _) = run(&cfg, second, stored);
        let (_, all) = fixture::parse(&text);
        let (uninterrupted, _) = run(&cfg, all, BTreeMap::new());
        assert_eq!([emitted_first, emitted_second].concat(), uninterrupted, "{name}: going on from the earlier state");
    }
}
