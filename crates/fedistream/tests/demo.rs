//! The offline demo (`examples/demo.toml`) as a user runs it from the repository
//! root, with its output redirected into a temporary directory: it ends by
//! itself, archives every public, consenting post once (JSON Lines, and
//! Parquet that `fedistream sql` reads), computes per-account statistics that
//! `fedistream stats` shows, and a second run appends nothing.

// Needs the build's features: the demo archives to Parquet and queries it with `fedistream sql`.
#![cfg(feature = "sql")]

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// examples/demo.toml with every `path =` pointing into `dir` (the replay input
/// at the bundled sample, by absolute path).
fn redirected_demo(dir: &Path) -> String {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("examples/demo.toml")).unwrap();
    let mut rewritten = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            let Some(v) = l.trim().strip_prefix("path = ") else {
                return l.to_string();
            };
            rewritten += 1;
            let v: String = toml_value(v);
            let new = if v.starts_with("examples/") { root.join(&v) } else { dir.join(Path::new(&v).file_name().unwrap()) };
            format!("path = {}", toml_path(&new))
        })
        .collect();
    assert_eq!(rewritten, 5, "the demo has a log, a replay input, an archive file, a stats file and a Parquet archive directory:\n{text}");
    out.join("\n")
}

/// The sample's posts that make it into the log (public, consenting), as JSON.
fn consenting_public(sample: &Path) -> Vec<Value> {
    std::fs::read_to_string(sample)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|p| p["visibility"] == "public" && p["account"]["noindex"] != true)
        .filter(|p| {
            let note = strip_tags(p["account"]["note"].as_str().unwrap_or("")).to_lowercase();
            !["#nobot", "#noindex", "#nobridge"].iter().any(|t| note.contains(t))
        })
        .collect()
}

fn toml_value(v: &str) -> String {
    let t: toml::Table = format!("v = {v}").parse().unwrap();
    t["v"].as_str().unwrap().to_string()
}

/// Posts of the sample that fedistream may take: public, by an account whose bio
/// carries no #nobot / #noindex / #nobridge and that is not `noindex`.
fn consenting_public_posts(sample: &Path) -> usize {
    std::fs::read_to_string(sample)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|p| p["visibility"] == "public" && p["account"]["noindex"] != true)
        .filter(|p| {
            let note = strip_tags(p["account"]["note"].as_str().unwrap_or("")).to_lowercase();
            !["#nobot", "#noindex", "#nobridge"].iter().any(|t| note.contains(t))
        })
        .count()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_to_the_end_and_a_second_run_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "demo.toml", &redirected_demo(dir.path()));
    let archive = dir.path().join("demo-posts.jsonl");
    let expected = consenting_public_posts(&repo_root().join("examples/data/sample-posts.jsonl"));
    assert!(expected > 0);

    let p = Spawn::new(dir.path(), "first", &["run", "--config", cfg.to_str().unwrap()]).cwd(repo_root()).start();
    let status = p.wait_exit(DEADLINE).await;
    let err = p.stderr();
    assert!(status.success(), "exit status {status}; stderr:\n{err}");
    let events = read_events(&archive);
    assert_eq!(events.len(), expected, "one line per public, consenting post");
    assert_eq!(summary_counters(&err, "channel archive").get("delivered"), Some(&(expected as u64)), "{err}");
    assert_each_created_once(&events);
    assert_offsets_increase(&events);
    assert!(!p.stdout().is_empty(), "the terminal channel printed the posts");

    let stats_lines = read_events(&dir.path().join("demo-stats.jsonl"));
    assert!(!stats_lines.is_empty(), "the stats processor's records reached their file");
    assert!(stats_lines.iter().all(|r| r["key"].is_string() && r["revision"].is_u64()), "{:?}", stats_lines[0]);
    check_stats_command(dir.path(), &cfg);

    let p = Spawn::new(dir.path(), "second", &["run", "--config", cfg.to_str().unwrap()]).cwd(repo_root()).start();
    let status = p.wait_exit(DEADLINE).await;
    let err = p.stderr();
    assert!(status.success(), "exit status {status}; stderr:\n{err}");
    assert_eq!(read_events(&archive).len(), expected, "the second run appended nothing");
    let log = summary_counters(&err, "log");
    assert_eq!(log.get("duplicates_suppressed"), Some(&(expected as u64)), "{err}");
    assert_eq!(log.get("appended"), None, "{err}");
    assert_eq!(summary_counters(&err, "channel archive").get("delivered"), None, "{err}");
    assert!(p.stdout().is_empty(), "nothing shown twice on the terminal:\n{}", p.stdout());
    // The Parquet archive holds the same events once each, and `posts` answers.
    let (status, out, err) = run_to_end(
        dir.path(),
        "sql",
        &["sql", "--config", cfg.to_str().unwrap(), "--format", "csv", "select count(*) as n, count(distinct key) as k from events"],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, format!("n,k\n{expected},{expected}\n"));
    let (status, out, err) = run_to_end(
        dir.path(),
        "sql-posts",
        &["sql", "--config", cfg.to_str().unwrap(), "--format", "csv", "select count(*) as n from posts"],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, format!("n\n{expected}\n"));
    assert_eq!(read_events(&dir.path().join("demo-stats.jsonl")).len(), stats_lines.len(), "no statistics published twice");
}

/// `fedistream stats` on the demo's log agrees with the sample it replayed.
fn check_stats_command(dir: &Path, cfg: &Path) {
    let posts = consenting_public(&repo_root().join("examples/data/sample-posts.jsonl"));
    let acct = "grace@fedi.example.org";
    let mine: Vec<&Value> = posts.iter().filter(|p| p["account"]["acct"] == acct).collect();
    let own = mine.iter().filter(|p| p["reblog"].is_null()).count() as u64;
    assert!(own > 5, "the sample gives {acct} posts of her own: {own}");
    let cfg = cfg.to_str().unwrap();

    let (s, out, err) =
        run_to_end(dir, "stats-json", &["stats", "--config", cfg, &format!("@{acct}"), "--since", "365d", "--format", "json"]);
    assert!(s.success(), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let t = &v["totals"];
    assert_eq!(t["counts"]["posts"], mine.len() as u64, "{t:#}");
    assert_eq!(t["counts"]["boosts"], mine.len() as u64 - own, "{t:#}");
    let sum = |k: &str| t[k].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("hours"), mine.len() as u64);
    assert_eq!(sum("weekdays"), mine.len() as u64);
    let langs: u64 = t["languages"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(langs, own, "languages count her own posts");
    let hours_in_sample: Vec<u64> = (0..24)
        .map(|h| mine.iter().filter(|p| p["created_at"].as_str().unwrap()[11..13].parse::<u64>().unwrap() == h).count() as u64)
        .collect();
    assert_eq!(t["hours"], serde_json::json!(hours_in_sample));

    let (s, out, err) = run_to_end(dir, "stats-text", &["stats", "--config", cfg, acct, "--since", "365d"]);
    assert!(s.success(), "{err}");
    for part in ["Hour of day (UTC)", "Weekday", "Languages", "█"] {
        assert!(out.contains(part), "{part} missing:\n{out}");
    }

    let (s, out, err) = run_to_end(
        dir,
        "stats-top",
        &["stats", "--config", cfg, "--top", "accounts", "--since", "365d", "--format", "json", "--limit", "100"],
    );
    assert!(s.success(), "{err}");
    let rows: Vec<(String, u64)> = serde_json::from_str::<Value>(&out).unwrap()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["count"].as_u64().unwrap()))
        .collect();
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    for p in &posts {
        *want.entry(p["account"]["acct"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(rows.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(), want, "every account, its posts");
    assert!(rows.windows(2).all(|w| w[0].1 >= w[1].1), "most active first: {rows:?}");
    assert!(!rows.iter().any(|r| r.0.starts_with("nora@")), "an account with #nobot in its bio is not in the log");

    // The instances' totals add up the same posts, each under its account's host.
    let (s, out, err) = run_to_end(
        dir,
        "stats-top-instances",
        &["stats", "--config", cfg, "--top", "instances", "--since", "365d", "--format", "json", "--limit", "100"],
    );
    assert!(s.success(), "{err}");
    let instances: std::collections::BTreeMap<String, u64> = serde_json::from_str::<Value>(&out).unwrap()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["count"].as_u64().unwrap()))
        .collect();
    let mut by_host: std::collections::BTreeMap<String, u64> = Default::default();
    for (acct, n) in &want {
        *by_host.entry(acct.rsplit_once('@').unwrap().1.to_string()).or_default() += n;
    }
    assert_eq!(instances, by_host, "posts per instance");

    let (s, _, err) = run_to_end(dir, "stats-none", &["stats", "--config", cfg, "@nobody@nowhere.example"]);
    assert!(!s.success());
    assert!(err.contains("no day windows of nobody@nowhere.example"), "{err}");
}
