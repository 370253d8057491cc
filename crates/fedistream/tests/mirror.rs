//! The `mastodon` channel through the binary: a crash between the POST and the
//! map write, restarted after the server's idempotency window, must not post
//! twice (reconciliation finds the repost by its source URL); and `kill -9` at
//! any moment while mirroring never duplicates either; and an edit of a post
//! from before the mirror started is not republished as a new post.

mod common;

use std::time::Duration;

use common::*;
use fedistream_connectors::testing::{AccountOpts, FakeMastodon, NewStatus};

const PUBLISHER_TOKEN: &str = "publisher-token-f00d";

fn mirror_config(dir: &std::path::Path, fake: &FakeMastodon) -> String {
    format!(
        r#"[log]
path = {log}

[connections.mastodon.publisher]
instance = {instance}
token_env = "FEDISTREAM_TEST_PUBLISHER_TOKEN"

[sources.m]
type = "mastodon"
accounts = [{acct}]
instance = {instance}
stream = "off"
backfill = "last:40"
poll_interval = "1s"
max_poll_interval = "1s"

[channels.mirror]
type = "mastodon"
connection = "publisher"
media = "skip"

[channels.mirror.delivery]
max_batch = 3
retry_initial = "50ms"
retry_max = "200ms"
"#,
        log = toml_path(&dir.join("log.db")),
        instance = toml_str(fake.base_url()),
        acct = toml_str(acct("alice")),
    )
}

/// Source URLs carried by the mirror account's reposts, one per repost.
fn mirrored_sources(fake: &FakeMastodon) -> Vec<String> {
    fake.statuses_by("mirrorbot")
        .iter()
        .filter_map(|s| {
            let content = s["content"].as_str()?;
            let i = content.find("/@alice/")?;
            let start = content[..i].rfind("http")?;
            let end = content[i..].find(|c: char| c == '<' || c == '"' || c.is_whitespace()).map(|e| i + e)?;
            Some(content[start..end].to_string())
        })
        .collect()
}

async fn setup(posts: usize) -> (tempfile::TempDir, FakeMastodon, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], None).await;
    fake.add_account("mirrorbot", AccountOpts { bot: true, ..Default::default() });
    fake.add_token(PUBLISHER_TOKEN, "mirrorbot");
    let urls = (0..posts).map(|i| fake.post("alice", NewStatus::html(format!("<p>post number {i}</p>"))).url).collect();
    (dir, fake, urls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_post_and_map_write_then_restart_after_the_idempotency_window() {
    let (dir, fake, urls) = setup(5).await;
    let cfg = write_file(dir.path(), "mirror.toml", &mirror_config(dir.path(), &fake));
    let cfg_s = cfg.to_str().unwrap();
    // First run: dies right after its first successful POST, before recording it.
    let p = Spawn::new(dir.path(), "crash", &["run", "--config", cfg_s])
        .env("FEDISTREAM_TEST_PUBLISHER_TOKEN", PUBLISHER_TOKEN)
        .env("FEDISTREAM_FAILPOINT", "mastodon_sink_after_post")
        .start();
    let status = p.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "the failpoint aborts the process: {status:?}\n{}", p.stderr());
    assert_eq!(fake.posts_created("mirrorbot"), 1, "exactly one POST went through before the crash");
    // More than an hour later: the server no longer remembers the Idempotency-Key.
    fake.expire_idempotency_keys();
    let p = Spawn::new(dir.path(), "restart", &["run", "--config", cfg_s]).env("FEDISTREAM_TEST_PUBLISHER_TOKEN", PUBLISHER_TOKEN).start();
    wait_for(
        "every post mirrored",
        || (mirrored_sources(&fake).len() >= urls.len()).then_some(()),
        || format!("mirrored: {:?}\n{}", mirrored_sources(&fake), p.stderr()),
    )
    .await;
    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(30)).await.success(), "{}", p.stderr());
    let mut got = mirrored_sources(&fake);
    got.sort();
    let mut want = urls.clone();
    want.sort();
    assert_eq!(got, want, "each source post mirrored exactly once");
    assert_eq!(fake.posts_created("mirrorbot"), urls.len(), "no duplicate POST after the crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_mirroring_never_duplicates() {
    let (dir, fake, urls) = setup(24).await;
    let cfg = write_file(dir.path(), "mirror.toml", &mirror_config(dir.path(), &fake));
    let cfg_s = cfg.to_str().unwrap();
    for round in 0..3 {
        let before = fake.posts_created("mirrorbot");
        let p = Spawn::new(dir.path(), &format!("round{round}"), &["run", "--config", cfg_s])
            .env("FEDISTREAM_TEST_PUBLISHER_TOKEN", PUBLISHER_TOKEN)
            .start();
        // Kill as soon as this round has posted something (mid-stream).
        wait_for(
            "progress in this round",
            || (fake.posts_created("mirrorbot") > before || fake.posts_created("mirrorbot") >= urls.len()).then_some(()),
            || p.stderr(),
        )
        .await;
        p.kill9();
        let _ = p.wait_exit(Duration::from_secs(10)).await;
    }
    let p = Spawn::new(dir.path(), "final", &["run", "--config", cfg_s]).env("FEDISTREAM_TEST_PUBLISHER_TOKEN", PUBLISHER_TOKEN).start();
    wait_for(
        "every post mirrored",
        || (mirrored_sources(&fake).len() >= urls.len()).then_some(()),
        || format!("mirrored {}\n{}", mirrored_sources(&fake).len(), p.stderr()),
    )
    .await;
    p.sigterm();
    let _ = p.wait_exit(Duration::from_secs(30)).await;
    let mut got = mirrored_sources(&fake);
    got.sort();
    let mut want = urls;
    want.sort();
    assert_eq!(got, want);
    assert_eq!(fake.posts_created("mirrorbot"), got.len(), "no duplicate POST across three kill -9");
}

/// Posting budget spent: the queue waits in the log (nothing dropped, nothing
/// burst) and `fedistream status` shows the backlog and when the channel resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_posting_budget_shows_backlog_and_resume_time_in_status() {
    let (dir, fake, urls) = setup(6).await;
    let cfg_text =
        mirror_config(dir.path(), &fake).replace("media = \"skip\"", "media = \"skip\"\nposts_per_window = 2\npost_window = \"1h\"");
    let cfg = write_file(dir.path(), "mirror.toml", &cfg_text);
    let cfg_s = cfg.to_str().unwrap();
    let p = Spawn::new(dir.path(), "paced", &["run", "--config", cfg_s]).env("FEDISTREAM_TEST_PUBLISHER_TOKEN", PUBLISHER_TOKEN).start();
    let status = wait_for(
        "status showing the paused channel",
        || {
            let (code, out, _) = run_to_end(dir.path(), "status", &["status", "--config", cfg_s, "--json"]);
            if !code.success() {
                return None;
            }
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            let ch = v["components"].as_array()?.iter().find(|c| c["key"] == "channel:mirror")?.clone();
            let lag = v["groups"].as_array()?.iter().find(|g| g["group"] == "fedistream.channel.mirror")?["lag"].as_u64()?;
            (ch["status"]["resumes_at"].is_string() && lag > 0).then_some((ch, lag))
        },
        || {
            let (_, out, err) = run_to_end(dir.path(), "status-debug", &["status", "--config", cfg_s, "--json"]);
            format!("status: {out}\n{err}\nrun: {}", p.stderr())
        },
    )
    .await;
    p.assert_running();
    assert_eq!(fake.posts_created("mirrorbot"), 2, "exactly the budget was used, no burst");
    let (ch, lag) = status;
    assert_eq!(ch["status"]["state"], "retrying", "{ch}");
    assert!(lag >= (urls.len() - 2) as u64, "the rest waits in the log: lag {lag}");
    let resumes = chrono::DateTime::parse_from_rfc3339(ch["status"]["resumes_at"].as_str().unwrap()).unwrap();
    assert!(resumes > chrono::Utc::now() + chrono::Duration::minutes(30), "resumes when the window frees: {resumes}");
    // The table form says it too.
    let (_, table, _) = run_to_end(dir.path(), "status-table", &["status", "--config", cfg_s]);
    assert!(table.contains("resumes"), "{table}");
    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(30)).await.success(), "{}", p.stderr());
}

/// An edit of a post made before the mirror started (`backfill = "none"`) is
/// not republished as a new post: the mirror never posted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_post_from_before_the_mirror_started_is_not_republished() {
    const READER: &str = "reader-token-beef";
    let dir = tempfile::tempdir().unwrap();
    let fake = start_fake(&["alice"], Some(READER)).await;
    fake.add_account("mirrorbot", AccountOpts { bot: true, ..Default::default() });
    fake.add_token(PUBLISHER_TOKEN, "mirrorbot");
    let before = fake.post(
        "alice",
        NewStatus { created_at: Some(chrono::Utc::now() - chrono::Duration::hours(2)), ..NewStatus::html("<p>from before the mirror</p>") },
    );
    let text = mirror_config(dir.path(), &fake)
        .replace("backfill = \"last:40\"", "backfill = \"none\"")
        .replace("stream = \"off\"", "connection = \"reader\"\nreconnect_initial = \"50ms\"")
        .replace(
            "[channels.mirror]",
            &format!(
                "[connections.mastodon.reader]\ninstance = {}\ntoken_env = \"FEDISTREAM_TEST_READER_TOKEN\"\n\n[channels.mirror]",
                toml_str(fake.base_url())
            ),
        );
    let cfg = write_file(dir.path(), "mirror.toml", &text);
    let p = Spawn::new(dir.path(), "mirror", &["run", "--no-progress", "--config", cfg.to_str().unwrap()])
        .env("FEDISTREAM_TEST_PUBLISHER_TOKEN", PUBLISHER_TOKEN)
        .env("FEDISTREAM_TEST_READER_TOKEN", READER)
        .start();
    assert!(fake.wait_for_open_streams(1, DEADLINE).await, "stream connected; stderr:\n{}", p.stderr());
    // The channel has opened once it read the target's statuses.
    let target = fake.account_id("mirrorbot").unwrap();
    wait_for(
        "the channel to open",
        || fake.requests().iter().any(|r| r.path == format!("/api/v1/accounts/{target}/statuses")).then_some(()),
        || p.stderr(),
    )
    .await;
    // The stream carries the edit (`status.update`) of the old post, then a new post.
    assert!(fake.edit(&before.id, "<p>from before the mirror, edited</p>"));
    let after = fake.post("alice", NewStatus::html("<p>after the mirror started</p>"));
    wait_for("the new post mirrored", || mirrored_sources(&fake).contains(&after.url).then_some(()), || p.stderr()).await;
    p.sigterm();
    assert!(p.wait_exit(DEADLINE).await.success(), "{}", p.stderr());
    // Events are delivered in order: the edit was handled before the new post.
    assert_eq!(mirrored_sources(&fake), vec![after.url.clone()], "only the post made after the start");
    assert_eq!(fake.posts_created("mirrorbot"), 1);
}
