//! The archive channel through the binary: a process that dies (abort, like
//! `kill -9`) after storing objects and before committing their offsets is
//! restarted, and the archive holds every event exactly once (deterministic
//! object names; the restart recognises what is stored); `fedistream sql`
//! reads the archive the config names, in every output format, and picks the
//! channel with `--channel` when there are several.

// Needs the build's features: the archive channel and `fedistream sql` (`sql` implies `archive`).
#![cfg(feature = "sql")]

mod common;

use std::path::Path;

use common::*;

fn generate(dir: &Path) -> std::path::PathBuf {
    generate_input(dir, 400, 6, 11)
}

fn config(dir: &Path, input: &Path) -> String {
    format!(
        "[log]
path = {log}

[sources.r]
type = \"replay\"
path = {input}

[channels.history]
type = \"archive\"
path = {archive}
max_file_bytes = \"60KB\"

[channels.history.delivery]
max_batch = 20

[channels.second]
type = \"archive\"
url = {second}
format = \"parquet\"
",
        log = toml_path(&dir.join("log.db")),
        input = toml_path(input),
        archive = toml_path(&dir.join("archive")),
        second = toml_str(format!("file://{}", dir.join("second").display())),
    )
}

fn sql(dir: &Path, cfg: &str, name: &str, args: &[&str]) -> String {
    let mut all = vec!["sql", "--config", cfg];
    all.extend_from_slice(args);
    let (s, out, err) = run_to_end(dir, name, &all);
    assert!(s.success(), "sql {args:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_upload_and_commit_leaves_no_duplicate_rows_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let cfg = write_file(dir.path(), "archive.toml", &config(dir.path(), &input));
    let cfg_s = cfg.to_str().unwrap();

    let p = Spawn::new(dir.path(), "crash", &["run", "--config", cfg_s]).env("FEDISTREAM_FAILPOINT", "archive_after_upload").start();
    let status = p.wait_exit(DEADLINE).await;
    assert!(!status.success(), "the failpoint aborts the process: {status:?}\n{}", p.stderr());
    let stored = sql(dir.path(), cfg_s, "sql-crash", &["--channel", "history", "--format", "csv", "select count(*) as n from events"]);
    let stored: u64 = stored.lines().nth(1).unwrap().parse().unwrap();
    assert!(stored > 0, "objects were stored before the crash");

    let (s, _, err) = run_to_end(dir.path(), "restart", &["run", "--config", cfg_s]);
    assert!(s.success(), "{err}");
    for channel in ["history", "second"] {
        let out = sql(
            dir.path(),
            cfg_s,
            &format!("sql-{channel}"),
            &[
                "--channel",
                channel,
                "--format",
                "csv",
                "select count(*) as n, count(distinct log_offset) as d, max(log_offset) as m from events",
            ],
        );
        let row: Vec<u64> = out.lines().nth(1).unwrap().split(',').map(|v| v.parse().unwrap()).collect();
        assert_eq!(row[0], row[1], "{channel}: no offset twice: {out}");
        assert_eq!(row[0], row[2], "{channel}: no offset missing: {out}");
        assert!(row[0] >= stored, "{channel}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prints_tables_csv_and_json_and_needs_a_channel_name_when_there_are_several() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let cfg = write_file(dir.path(), "archive.toml", &config(dir.path(), &input));
    let cfg_s = cfg.to_str().unwrap();
    let (s, _, err) = run_to_end(dir.path(), "run", &["run", "--config", cfg_s]);
    assert!(s.success(), "{err}");

    let q = "select count(*) as n from posts";
    let table = sql(dir.path(), cfg_s, "table", &["--channel", "history", q]);
    assert!(table.starts_with("+---") && table.contains("| n "), "{table}");
    let csv = sql(dir.path(), cfg_s, "csv", &["--channel", "history", "--format", "csv", q]);
    let n: u64 = csv.lines().nth(1).unwrap().parse().unwrap();
    assert!(n > 0 && table.contains(&format!("| {n} ")), "{csv}\n{table}");
    let json = sql(dir.path(), cfg_s, "json", &["--channel", "history", "--format", "json", q]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(json.trim()).unwrap(), serde_json::json!({ "n": n }));

    let (s, _, err) = run_to_end(dir.path(), "ambiguous", &["sql", "--config", cfg_s, q]);
    assert!(!s.success());
    assert!(err.contains("several archive channels (history, second)") && err.contains("--channel"), "{err}");
    let (s, _, err) = run_to_end(dir.path(), "write", &["sql", "--config", cfg_s, "--channel", "second", "drop table events"]);
    assert!(!s.success());
    assert!(err.contains("only queries"), "{err}");
    let (s, out, _) = run_to_end(dir.path(), "schema", &["schema", "parquet"]);
    assert!(s.success() && out.contains("tags") && out.contains("list<string>"), "{out}");
}

#[test]
fn invalid_archive_settings_fail_validation_with_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "bad.toml",
        "[sources]\n[channels.a]\ntype = \"archive\"\nurl = \"s3://bucket/p\"\nendpoint = \"http://127.0.0.1:9000\"\ngzip = true\nmulti_part = 1\n",
    );
    let (s, _, err) = run_to_end(dir.path(), "unknown", &["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(s.code(), Some(2), "{err}");
    assert!(err.contains("multi_part"), "{err}");
    let cfg = write_file(
        dir.path(),
        "bad2.toml",
        "[channels.a]\ntype = \"archive\"\nurl = \"s3://bucket/p\"\nendpoint = \"http://127.0.0.1:9000\"\ngzip = true\naccess_key_id_env = \"X_UNSET_1\"\nsecret_access_key_env = \"X_UNSET_2\"\n",
    );
    let (s, _, err) = run_to_end(dir.path(), "invalid", &["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(s.code(), Some(2), "{err}");
    for want in ["channels.a.endpoint", "allow_http", "channels.a.gzip", "channels.a.access_key_id_env", "X_UNSET_1"] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn partition_settings_fail_validation_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.toml",
            "partition_by = [\"server\"]\n",
            vec!["unknown.toml", "partition_by: `server` is not a partition level", "\"instance\" or \"bucket\""],
        ),
        ("missing.toml", "partition_by = [\"bucket\"]\n", vec!["missing.toml", "channels.a.buckets", "missing"]),
        ("range.toml", "partition_by = [\"instance\", \"bucket\"]\nbuckets = 1\n", vec!["range.toml", "channels.a.buckets", "2 to 1024"]),
        ("alone.toml", "buckets = 8\n", vec!["channels.a.buckets", "only with partition_by"]),
        ("twice.toml", "partition_by = [\"instance\", \"instance\"]\n", vec!["channels.a.partition_by", "`instance` is named twice"]),
    ];
    for (name, keys, wants) in cases {
        let cfg = write_file(dir.path(), name, &format!("[channels.a]\ntype = \"archive\"\npath = \"arch\"\n{keys}"));
        let (s, _, err) = run_to_end(dir.path(), name, &["validate", "--config", cfg.to_str().unwrap()]);
        assert_eq!(s.code(), Some(2), "{name}: {err}");
        for want in wants {
            assert!(err.contains(want), "{name}: {want}: {err}");
        }
    }
    let input = write_file(dir.path(), "in.jsonl", "");
    let ok = write_file(
        dir.path(),
        "ok.toml",
        &format!(
            "[sources.r]\ntype = \"replay\"\npath = {}\n[channels.a]\ntype = \"archive\"\npath = \"arch\"\npartition_by = [\"instance\", \"bucket\"]\nbuckets = 16\n",
            toml_path(&input)
        ),
    );
    let (s, _, err) = run_to_end(dir.path(), "ok", &["validate", "--config", ok.to_str().unwrap()]);
    assert!(s.success(), "{err}");
}

/// A processor's output routed to an archive lands in its own dataset (named
/// after the processor) with the generic schema, beside `posts`, and
/// `fedistream sql` offers it as a table of that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processors_records_go_to_their_own_dataset_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let archive = toml_path(&dir.join_archive());
    let cfg = write_file(
        dir.path(),
        "p.toml",
        &format!(
            "[log]\npath = {log}\n\n[sources.r]\ntype = \"replay\"\npath = {input}\n\n[processors.counts]\ntype = \"test_count\"\nwindow = 7\ntick = \"30ms\"\n\n\
             [channels.history]\ntype = \"archive\"\npath = {archive}\n\n[channels.windows]\ntype = \"archive\"\npath = {archive}\n\n\
             [[routes]]\nfrom = [\"r\"]\nto = [\"history\"]\n\n[[routes]]\nfrom = [\"counts\"]\nto = [\"windows\"]\n",
            log = toml_path(&dir.path().join("log.db")),
            input = toml_path(&input),
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    let (s, _, err) = run_to_end(dir.path(), "run", &["run", "--config", cfg_s]);
    assert!(s.success(), "{err}");
    let out = sql(
        dir.path(),
        cfg_s,
        "sql-counts",
        &["--channel", "windows", "--format", "csv", "select count(*) as n, count(distinct log_offset) as d from counts"],
    );
    let row: Vec<u64> = out.lines().nth(1).unwrap().split(',').map(|v| v.parse().unwrap()).collect();
    assert!(row[0] > 0, "{out}");
    assert_eq!(row[0], row[1], "each record once: {out}");
    let json = sql(dir.path(), cfg_s, "sql-value", &["--channel", "windows", "--format", "json", "select value from counts limit 1"]);
    let line: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let value: serde_json::Value = serde_json::from_str(line["value"].as_str().unwrap()).unwrap();
    assert!(value.is_object(), "the record's JSON: {value}");
    assert!(dir.path().join("archive/counts").is_dir() && dir.path().join("archive/posts").is_dir());
}

trait ArchiveDir {
    fn join_archive(&self) -> std::path::PathBuf;
}

impl ArchiveDir for tempfile::TempDir {
    fn join_archive(&self) -> std::path::PathBuf {
        self.path().join("archive")
    }
}

/// `fedistream archive compact` through the binary, killed (abort, like
/// `kill -9`) after writing the new objects and again after the switch:
/// readers see the whole old set, then the whole new set; the rerun finishes
/// (the replaced objects go) and the archive holds each current post once.
/// `fedistream sql --format parquet --output` writes a Parquet file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_killed_between_steps_leaves_a_readable_archive_and_a_rerun_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    // Edits of the first 40 statuses, replayed after them: new versions of those posts.
    let text = std::fs::read_to_string(&input).unwrap();
    let mut edits = String::new();
    for line in text.lines().take(40) {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["edited_at"] = v["created_at"].clone();
        v["content"] = serde_json::json!("<p>edited</p>");
        edits.push_str(&format!("{v}\n"));
    }
    std::fs::write(&input, format!("{text}{edits}")).unwrap();
    let cfg = write_file(dir.path(), "archive.toml", &config(dir.path(), &input));
    let cfg_s = cfg.to_str().unwrap();
    let (s, _, err) = run_to_end(dir.path(), "run", &["run", "--config", cfg_s]);
    assert!(s.success(), "{err}");
    let csv = |name: &str, q: &str| sql(dir.path(), cfg_s, name, &["--channel", "history", "--format", "csv", q]);
    let count = "select count(*) as n, count(distinct log_offset) as d from events";
    let current = "select key, version from posts order by key";
    let (events_before, posts_before) = (csv("before-n", count), csv("before-posts", current));
    let posts_n = posts_before.lines().count() - 1;
    assert!(events_before != format!("n,d\n{posts_n},{posts_n}\n"), "the input has edits or deletions: {events_before}");

    let compact = ["archive", "compact", "--config", cfg_s, "--channel", "history", "--before", "2100-01-01"];
    for (failpoint, want) in
        [("compact_after_write", events_before.clone()), ("compact_after_switch", format!("n,d\n{posts_n},{posts_n}\n"))]
    {
        let p = Spawn::new(dir.path(), failpoint, &compact).env("FEDISTREAM_FAILPOINT", failpoint).start();
        let status = p.wait_exit(DEADLINE).await;
        assert!(!status.success(), "{failpoint} aborts the process: {status:?}\n{}", p.stderr());
        assert_eq!(csv(&format!("{failpoint}-n"), count), want, "after {failpoint}: the old set or the new one, whole");
        assert_eq!(csv(&format!("{failpoint}-posts"), current), posts_before, "after {failpoint}: the same posts");
    }
    let (s, out, err) = run_to_end(dir.path(), "compact", &compact);
    assert!(s.success(), "{err}");
    assert!(out.contains("generation 1;") && out.contains("0 hour directories rewritten"), "{out}");
    let names: Vec<String> = walk_files(&dir.path().join("archive/posts"));
    assert!(names.iter().filter(|n| n.ends_with(".parquet")).all(|n| n.ends_with("-g1.parquet")), "only compacted objects: {names:?}");
    assert_eq!(csv("after-n", count), format!("n,d\n{posts_n},{posts_n}\n"));
    assert_eq!(csv("after-posts", current), posts_before);

    let out_file = dir.path().join("posts.parquet");
    let (s, _, err) = run_to_end(
        dir.path(),
        "sql-parquet",
        &["sql", "--config", cfg_s, "--channel", "history", "--format", "parquet", "--output", out_file.to_str().unwrap(), current],
    );
    assert!(s.success(), "{err}");
    let bytes = std::fs::read(&out_file).unwrap();
    assert!(bytes.len() > 8 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "a Parquet file");
}

fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// `fedistream sql --shell`: statements (one spanning two lines) read from
/// stdin, each answered; an error does not end the prompt; `\q` quits; the
/// statements land in the history file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_shell_answers_each_statement_and_keeps_a_history() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let cfg = write_file(dir.path(), "archive.toml", &config(dir.path(), &input));
    let cfg_s = cfg.to_str().unwrap();
    let (s, _, err) = run_to_end(dir.path(), "run", &["run", "--config", cfg_s]);
    assert!(s.success(), "{err}");
    let history = dir.path().join("history");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fedistream"))
        .args(["sql", "--config", cfg_s, "--channel", "history", "--format", "csv", "--shell"])
        .env("FEDISTREAM_SQL_HISTORY", &history)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"select count(*) as n\n  from posts;\nselect nope from posts;\nselect 7 as seven;\n\\q\nselect 8 as never;\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let one = sql(dir.path(), cfg_s, "one", &["--channel", "history", "--format", "csv", "select count(*) as n from posts"]);
    assert!(stdout.contains(&one), "{stdout}");
    assert!(stdout.contains("seven\n7\n") && !stdout.contains("never"), "{stdout}");
    assert!(stderr.contains("error:") && stderr.contains("nope"), "{stderr}");
    let h = std::fs::read_to_string(&history).unwrap();
    assert!(h.contains("select 7 as seven") && h.contains("from posts"), "{h}");
}
