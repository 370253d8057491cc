//! Retention never removes what a channel has not delivered — also when that
//! channel is missing from the config for a run — until the operator forgets
//! the channel with `fedistream channel forget`.

mod common;

use common::*;

/// A config replaying `input` into the file channels `channels`, deleting
/// delivered events at once (`max_age = "0s"`).
fn config(dir: &std::path::Path, input: &std::path::Path, channels: &[&str]) -> String {
    let mut c = format!(
        "[log]\npath = {}\nmax_age = \"0s\"\n\n[sources.r]\ntype = \"replay\"\npath = {}\n",
        toml_path(&dir.join("log.db")),
        toml_path(input)
    );
    for ch in channels {
        c.push_str(&format!("\n[channels.{ch}]\ntype = \"file\"\npath = {}\n", toml_path(&dir.join(format!("{ch}.jsonl")))));
    }
    c
}

fn sample_lines(from: usize, to: usize) -> String {
    let text = std::fs::read_to_string(repo_root().join("examples/data/sample-posts.jsonl")).unwrap();
    text.lines().skip(from).take(to - from).map(|l| format!("{l}\n")).collect()
}

fn run(dir: &std::path::Path, name: &str, cfg: &std::path::Path) -> String {
    let (s, _, err) = run_to_end(dir, name, &["run", "--config", cfg.to_str().unwrap()]);
    assert!(s.success(), "{name}: {s}\n{err}");
    err
}

#[test]
fn a_channel_missing_for_a_run_still_gets_every_event_and_forget_releases_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = write_file(d, "first.jsonl", &sample_lines(0, 40));
    let both = write_file(d, "both.toml", &config(d, &first, &["a", "b"]));
    run(d, "first", &both);
    let a1 = read_events(&d.join("a.jsonl")).len();
    assert!(a1 > 10, "the sample has posts: {a1}");
    assert_eq!(read_events(&d.join("b.jsonl")).len(), a1);

    // A run without channel `b`, with new posts: `a` delivers them, and
    // retention (max_age 0s) must keep them for `b` all the same.
    let second = write_file(d, "second.jsonl", &sample_lines(40, 100));
    let only_a = write_file(d, "only-a.toml", &config(d, &second, &["a"]));
    run(d, "second", &only_a);
    let a2 = read_events(&d.join("a.jsonl")).len();
    assert!(a2 > a1, "new posts went to a: {a1} -> {a2}");
    assert_eq!(read_events(&d.join("b.jsonl")).len(), a1, "b was not running");

    // `b` is back: it delivers what it missed, nothing lost.
    let both_again = write_file(d, "both-again.toml", &config(d, &second, &["a", "b"]));
    run(d, "third", &both_again);
    let b = read_events(&d.join("b.jsonl"));
    assert_eq!(created_keys(&b), created_keys(&read_events(&d.join("a.jsonl"))), "b has what a has, in order");
    assert_each_created_once(&b);

    // Forgetting a channel that is still configured is refused.
    let (s, _, err) = run_to_end(d, "forget-configured", &["channel", "forget", "b", "--yes", "--config", both_again.to_str().unwrap()]);
    assert_eq!(s.code(), Some(2), "{err}");
    assert!(err.contains("still in"), "{err}");
    // Without a terminal, the confirmation must be given with --yes.
    let (s, _, err) = run_to_end(d, "forget-no-yes", &["channel", "forget", "b", "--config", only_a.to_str().unwrap()]);
    assert_eq!(s.code(), Some(2), "{err}");
    assert!(err.contains("--yes"), "{err}");
    let (s, _, err) = run_to_end(d, "forget", &["channel", "forget", "b", "--yes", "--config", only_a.to_str().unwrap()]);
    assert!(s.success(), "{err}");
    assert!(err.contains("forgot channel `b`"), "{err}");
    let (s, out, err) = run_to_end(d, "status", &["status", "--json", "--config", only_a.to_str().unwrap()]);
    assert!(s.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let groups: Vec<String> = v["groups"].as_array().unwrap().iter().map(|g| g["group"].as_str().unwrap().to_string()).collect();
    assert_eq!(groups, vec!["fedistream.channel.a".to_string()], "{out}");
    let (s, _, err) = run_to_end(d, "forget-again", &["channel", "forget", "b", "--yes", "--config", only_a.to_str().unwrap()]);
    assert!(!s.success(), "nothing left to forget: {err}");
}
