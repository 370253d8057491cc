//! `fedistream validate` and config errors: exit 0 with the counts for a valid
//! file; exit 2 naming the file, the exact key and the reason for an invalid
//! one; `run` refuses an invalid config before touching anything.

mod common;

use std::path::Path;

use common::*;

/// A valid config: one polling Mastodon source, one file channel, one route.
/// No network is involved in validation, so the instance need not exist.
fn valid(dir: &Path) -> String {
    format!(
        r#"[log]
path = {log}

[sources.a]
type = "mastodon"
accounts = ["@alice@fake.example", "bob@fake.example"]
instance = "http://127.0.0.1:9"
stream = "off"
poll_interval = "5s"

[channels.out]
type = "file"
path = {out}

[[routes]]
from = ["a"]
to = ["out"]
"#,
        log = toml_path(&dir.join("data/log.db")),
        out = toml_path(&dir.join("data/out.jsonl")),
    )
}

/// Run `validate` on `text`; returns (exit code, stdout, stderr, the config's path).
fn validate(dir: &Path, name: &str, text: &str) -> (Option<i32>, String, String, String) {
    let cfg = write_file(dir, &format!("{name}.toml"), text);
    let (s, out, err) = run_to_end(dir, name, &["validate", "--config", cfg.to_str().unwrap()]);
    (s.code(), out, err, cfg.display().to_string())
}

#[test]
fn a_valid_config_validates_with_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err, file) = validate(dir.path(), "valid", &valid(dir.path()));
    assert_eq!(code, Some(0), "stderr:\n{err}");
    assert_eq!(out.trim(), format!("{file}: valid (1 source, 1 channel, 1 route)"));
    assert!(!dir.path().join("data").exists(), "validate touches nothing");
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = valid(dir.path()).replace("poll_interval = \"5s\"", "poll_intervall = \"5s\"");
    let (code, _, err, file) = validate(dir.path(), "typo", &text);
    assert_eq!(code, Some(2), "stderr:\n{err}");
    let line = text.lines().position(|l| l.starts_with("poll_intervall")).unwrap() + 1;
    assert!(err.contains(&format!("{file}:{line}:")), "file and line: {err}");
    assert!(err.contains("`sources.a.poll_intervall`"), "the key: {err}");
    assert!(err.contains("unknown field"), "the reason: {err}");
}

#[test]
fn a_bad_account_handle_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = valid(dir.path()).replace("\"bob@fake.example\"", "\"bob\"");
    let (code, _, err, file) = validate(dir.path(), "handle", &text);
    assert_eq!(code, Some(2), "stderr:\n{err}");
    assert!(err.contains(&file), "the file: {err}");
    assert!(err.contains("`sources.a.accounts[1]`"), "the key: {err}");
    assert!(err.contains("`bob` is not an account handle"), "the reason: {err}");
}

#[test]
fn a_route_to_a_missing_channel_and_every_other_problem_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        valid(dir.path()).replace("to = [\"out\"]", "to = [\"nowhere\"]").replace("poll_interval = \"5s\"", "poll_interval = \"100ms\"");
    let (code, _, err, file) = validate(dir.path(), "route", &text);
    assert_eq!(code, Some(2), "stderr:\n{err}");
    for (key, reason) in [
        ("routes[0].to", "no channel named `nowhere`"),
        ("channels.out", "no route leads to this channel"),
        ("sources.a.poll_interval", "must be at least 1s"),
    ] {
        let line = err.lines().find(|l| l.contains(&format!("`{key}`"))).unwrap_or_else(|| panic!("no error about `{key}`: {err}"));
        assert!(line.contains(&file) && line.contains(reason), "{line}");
    }
}

#[test]
fn a_missing_file_is_invalid_too() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let (s, _, err) = run_to_end(dir.path(), "missing", &["validate", "--config", missing.to_str().unwrap()]);
    assert_eq!(s.code(), Some(2), "stderr:\n{err}");
    assert!(err.contains(&missing.display().to_string()) && err.contains("cannot read"), "{err}");
}

#[test]
fn run_refuses_an_invalid_config_before_doing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let text = valid(dir.path()).replace("poll_interval = \"5s\"", "poll_intervall = \"5s\"");
    let cfg = write_file(dir.path(), "bad.toml", &text);
    let (s, out, err) = run_to_end(dir.path(), "run", &["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(s.code(), Some(2), "stderr:\n{err}");
    assert!(err.contains("`sources.a.poll_intervall`"), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(!err.contains("fedistream running"), "{err}");
    assert!(!dir.path().join("data").exists(), "no log or output created");
}

#[cfg(feature = "kafka")]
#[test]
fn schema_avro_prints_the_schema_file() {
    let dir = tempfile::tempdir().unwrap();
    let (s, out, err) = run_to_end(dir.path(), "schema", &["schema", "avro"]);
    assert_eq!(s.code(), Some(0), "stderr:\n{err}");
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/post_event.avsc")).unwrap();
    assert_eq!(out, file);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "PostEvent");
    let (s, out, err) = run_to_end(dir.path(), "schema-stats", &["schema", "avro", "--record", "stats"]);
    assert_eq!(s.code(), Some(0), "stderr:\n{err}");
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/stats_record.avsc")).unwrap();
    assert_eq!(out, file);
    let (s, _, err) = run_to_end(dir.path(), "schema-bad", &["schema", "avro", "--record", "likes"]);
    assert_eq!(s.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("posts") && err.contains("stats"), "names the choices: {err}");
}

#[cfg(feature = "kafka")]
#[test]
fn a_kafka_channel_validates_without_a_broker_or_registry() {
    let dir = tempfile::tempdir().unwrap();
    let text = valid(dir.path()).replace(
        "[channels.out]\ntype = \"file\"",
        "[channels.k]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9\"\ntopic = \"posts\"\nformat = \"avro\"\nschema_registry = \"http://127.0.0.1:9\"\n\n[channels.out]\ntype = \"file\"",
    ).replace("to = [\"out\"]", "to = [\"out\", \"k\"]");
    let (code, out, err, file) = validate(dir.path(), "kafka", &text);
    assert_eq!(code, Some(0), "stderr:\n{err}");
    assert_eq!(out.trim(), format!("{file}: valid (1 source, 2 channels, 1 route)"));
}
