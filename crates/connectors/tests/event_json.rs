//! The log's hot-path event encoder (`Event::to_json`) writes exactly what
//! serde_json writes, for every fixture and for thousands of varied synthetic
//! statuses (media, polls, boosts, replies, content warnings, unicode).

use chrono::{TimeZone, Utc};
use fedistream_connectors::synthetic::Generator;
use fedistream_core::post::Via;
use fedistream_core::Event;
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon/");

fn check(status_json: &str, what: &str) {
    // A received_at with nanoseconds, as the clock gives it.
    let received_at = Utc.timestamp_opt(1_764_400_000, 123_456_789).unwrap();
    let ctx = NormalizeContext { instance: "social.example", via: Via::Rest, received_at };
    let post = parse_and_normalize(status_json, &ctx).unwrap_or_else(|e| panic!("{what}: {e}"));
    let ev = Event::created("src", post);
    assert_eq!(ev.to_json(), serde_json::to_string(&ev).unwrap(), "{what}");
    let back: Event = serde_json::from_str(&ev.to_json()).unwrap();
    assert_eq!(back, ev, "{what} reads back");
}

#[test]
fn fixtures_encode_as_serde_json() {
    let mut n = 0;
    for entry in std::fs::read_dir(FIXTURES).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("status_") || name == "gotosocial_status.json" {
            check(&std::fs::read_to_string(&path).unwrap(), &name);
            n += 1;
        }
    }
    assert!(n >= 7, "only {n} status fixtures found");
}

#[test]
fn synthetic_statuses_encode_as_serde_json() {
    let mut g = Generator::new(7);
    for i in 0..3000 {
        check(&g.status(50), &format!("synthetic status {i}"));
    }
}
