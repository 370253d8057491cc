//! `fedistream follow`: no config, JSON lines on stdout, the newest N posts
//! first, then live ones; SIGTERM ends it cleanly; a bad handle is exit 2.

mod common;

use common::*;
use fedistream_connectors::testing::NewStatus;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_the_newest_posts_then_live_ones_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    let posts: Vec<_> = (0..6).map(|i| fake.post("alice", NewStatus::html(format!("<p>post {i}</p>")))).collect();
    let data = dir.path().join("state");
    let base = fake.base_url();
    let args = [
        "follow",
        "@alice@fake.example",
        "--instance",
        &base,
        "--format",
        "jsonl",
        "--backfill",
        "last:3",
        "--poll-interval",
        "1s",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let p = Spawn::new(dir.path(), "follow", &args).start();
    let keys = |p: &Proc| -> Vec<String> {
        p.stdout()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))["key"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let first = wait_for(
        "the 3 newest posts",
        || {
            p.assert_running();
            let k = keys(&p);
            (k.len() >= 3).then_some(k)
        },
        || p.stderr(),
    )
    .await;
    let newest: Vec<String> = posts[3..].iter().map(|p| p.uri.clone()).collect();
    assert_eq!(first, newest, "the newest three, oldest first");

    let live = fake.post("alice", NewStatus::html("<p>live</p>"));
    wait_for("the live post", || keys(&p).contains(&live.uri).then_some(()), || p.stderr()).await;
    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "exit status {s}; stderr:\n{}", p.stderr());
    let all = keys(&p);
    assert_eq!(all.len(), 4, "nothing twice, nothing older: {all:#?}");
    assert_eq!(all[3], live.uri);
    let line: Value = serde_json::from_str(p.stdout().lines().last().unwrap()).unwrap();
    assert_eq!((line["kind"].as_str(), line["account"].as_str()), (Some("created"), Some("alice@fake.example")), "{line:#}");
    assert!(p.stderr().contains("fedistream: summary"), "{}", p.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_without_a_data_dir_cleans_up_after_itself() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    let a = fake.post("alice", NewStatus::html("<p>one</p>"));
    let base = fake.base_url();
    // TMPDIR points the default state directory into the test's directory.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let p = Spawn::new(
        dir.path(),
        "follow",
        &["follow", "alice@fake.example", "--instance", &base, "--format", "jsonl", "--backfill", "last:1"],
    )
    .env("TMPDIR", tmp.to_str().unwrap())
    .start();
    wait_for("the post", || p.stdout().contains(&a.uri).then_some(()), || p.stderr()).await;
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1, "a state directory while running");
    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "exit status {s}; stderr:\n{}", p.stderr());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the temporary state is removed");
}

#[test]
fn follow_refuses_a_handle_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let (s, out, err) = run_to_end(dir.path(), "follow", &["follow", "alice"]);
    assert_eq!(s.code(), Some(2), "stderr:\n{err}");
    assert!(err.contains("`alice` is not an account handle"), "names it: {err}");
    assert!(out.is_empty(), "{out}");
}

/// `follow` of an account its server does not know ends with an error naming
/// it, instead of retrying quietly every 15 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_of_an_account_that_does_not_exist_ends_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    let base = fake.base_url();
    let p = Spawn::new(dir.path(), "follow", &["follow", "@nobody@fake.example", "--instance", &base]).start();
    let s = p.wait_exit(DEADLINE).await;
    assert!(!s.success(), "{s}");
    let err = p.stderr();
    assert!(err.contains(&format!("none of the accounts can be read: @nobody@fake.example: not found on {}", fake.host())), "{err}");
}

/// A server that refuses anonymous reads (GoToSocial's default): `follow` says
/// that this server needs a reader token and how to give one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_on_a_server_that_refuses_anonymous_reads_says_it_needs_a_token() {
    use fedistream_connectors::testing::{FakeConfig, FakeMastodon, Flavor};
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMastodon::start(FakeConfig { flavor: Flavor::GoToSocial, anonymous_reads: false, ..FakeConfig::default() }).await;
    fake.add_account("alice", Default::default());
    let base = fake.base_url();
    let p = Spawn::new(dir.path(), "follow", &["follow", "@alice@fake.example", "--instance", &base]).start();
    let s = p.wait_exit(DEADLINE).await;
    assert!(!s.success(), "{s}");
    let err = p.stderr();
    assert!(err.contains("needs a reader token"), "{err}");
    assert!(err.contains("--token-env"), "says how to give one: {err}");
}

/// An account whose server speaks plain http, followed without `--instance`:
/// the error says the server did not answer TLS and what to write instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_of_a_plain_http_server_without_instance_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    let handle = format!("@alice@{}", fake.host());
    let p = Spawn::new(dir.path(), "follow", &["follow", &handle]).start();
    let s = p.wait_exit(DEADLINE).await;
    assert!(!s.success(), "{s}");
    let err = p.stderr();
    assert!(err.contains(&format!("{} did not answer TLS", fake.host())), "{err}");
    assert!(err.contains(&format!("instance = \"http://{}\"", fake.host())), "{err}");
    assert!(!err.contains("InvalidContentType"), "no TLS jargon: {err}");
}

/// `--format text` shows an edited post at the time it was posted and marks
/// the edit with its own time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_text_shows_the_creation_time_and_marks_edits() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    let created = chrono::Utc::now() - chrono::Duration::seconds(90);
    let post = fake.post("alice", NewStatus { created_at: Some(created), ..NewStatus::html("<p>first version</p>") });
    assert!(fake.edit(&post.id, "<p>second version</p>"));
    let edited = fake.statuses_of("alice")[0]["edited_at"].as_str().unwrap().to_string();
    let edited = chrono::DateTime::parse_from_rfc3339(&edited).unwrap();
    let base = fake.base_url();
    let data = dir.path().join("state");
    let args = [
        "follow",
        "@alice@fake.example",
        "--instance",
        &base,
        "--format",
        "text",
        "--backfill",
        "last:1",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let p = Spawn::new(dir.path(), "follow", &args).start();
    let header =
        wait_for("the post", || p.stdout().lines().find(|l| l.contains("@alice@fake.example")).map(str::to_string), || p.stderr()).await;
    p.sigterm();
    p.wait_exit(DEADLINE).await;
    // The edit's date is shown only when it is another day than the post's.
    let edit_fmt = if edited.date_naive() == created.date_naive() { "%H:%M:%S" } else { "%Y-%m-%d %H:%M:%S" };
    let expected = format!("{}  @alice@fake.example posted, edited {}  ", created.format("%Y-%m-%d %H:%M:%S"), edited.format(edit_fmt));
    assert!(header.starts_with(&expected), "{header:?} should start with {expected:?}");
    assert!(p.stdout().contains("second version"), "{}", p.stdout());
}

/// `follow --local HOST --hashtag TAG@HOST`: a server's local timeline and a
/// hashtag with one command; a post on both is printed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_local_and_hashtag_prints_each_post_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice", "bob"], None).await;
    let base = fake.base_url();
    let tagged = |html: &str| NewStatus { tags: vec!["rust".into()], ..NewStatus::html(html) };
    let old = fake.post("alice", tagged("<p>before #rust</p>"));
    let args = [
        "follow",
        "--local",
        "fake.example",
        "--hashtag",
        "rust@fake.example",
        "--instance",
        &base,
        "--format",
        "jsonl",
        "--backfill",
        "last:1",
        "--poll-interval",
        "1s",
    ];
    let p = Spawn::new(dir.path(), "follow", &args).start();
    let keys = |p: &Proc| -> Vec<String> {
        p.stdout()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["key"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for("the newest post", || keys(&p).contains(&old.uri).then_some(()), || p.stderr()).await;
    let both = fake.post("bob", tagged("<p>local and #rust</p>"));
    let local_only = fake.post("alice", NewStatus::html("<p>local only</p>"));
    wait_for(
        "the live posts",
        || {
            p.assert_running();
            let k = keys(&p);
            (k.contains(&both.uri) && k.contains(&local_only.uri)).then_some(())
        },
        || p.stderr(),
    )
    .await;
    p.sigterm();
    let s = p.wait_exit(DEADLINE).await;
    assert!(s.success(), "exit status {s}; stderr:\n{}", p.stderr());
    let mut all = keys(&p);
    all.sort();
    let mut want = vec![old.uri, both.uri, local_only.uri];
    want.sort();
    assert_eq!(all, want, "each post once");
}

/// `follow --local` of a server that hides its local timeline from anonymous
/// readers stops with the setting named, not a retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_local_of_a_hidden_feed_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    fake.set_timeline_preview(false);
    let base = fake.base_url();
    let p = Spawn::new(dir.path(), "follow", &["follow", "--local", "fake.example", "--instance", &base]).start();
    let s = p.wait_exit(DEADLINE).await;
    assert!(!s.success(), "{s}");
    let err = p.stderr();
    assert!(err.contains("no feed can be read") && err.contains("timeline_preview"), "{err}");
}
