//! Shared scaffolding of the binary-level tests: the `fedistream` binary as a
//! child process (killed on drop, output captured to files), a fake Mastodon in
//! the test process, config files in a temporary directory, and bounded waits
//! on conditions (never a fixed sleep as synchronisation).

#![allow(dead_code)] // each test file uses its own subset

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fedistream_connectors::testing::{AccountOpts, FakeConfig, FakeMastodon, RateLimitConfig};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_fedistream");

/// Upper bound of every wait: generous, since a wait ends as soon as its condition holds.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The repository root (examples/ lives there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// A running `fedistream`. Stdout and stderr go to `<dir>/<name>.stdout` and
/// `.stderr` (files, so nothing blocks on a full pipe). Dropping it kills the
/// process if it still runs, so a failing test leaves no child behind.
pub struct Proc {
    // Interior mutability so that a wait condition can check for an early exit
    // while its description reads stderr.
    child: Mutex<Child>,
    pid: u32,
    pub name: String,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    status: Mutex<Option<ExitStatus>>,
}

pub struct Spawn<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Variables removed from the child's environment (after the defaults).
    pub env_removed: Vec<String>,
    pub cwd: Option<PathBuf>,
}

impl<'a> Spawn<'a> {
    pub fn new(dir: &'a Path, name: &'a str, args: &[&str]) -> Self {
        Spawn { dir, name, args: args.iter().map(|s| s.to_string()).collect(), env: Vec::new(), env_removed: Vec::new(), cwd: None }
    }

    /// Remove a variable the harness sets by default (e.g. `NO_COLOR`).
    pub fn env_remove(mut self, k: &str) -> Self {
        self.env_removed.push(k.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn cwd(mut self, d: impl Into<PathBuf>) -> Self {
        self.cwd = Some(d.into());
        self
    }

    pub fn start(self) -> Proc {
        let stdout_path = self.dir.join(format!("{}.stdout", self.name));
        let stderr_path = self.dir.join(format!("{}.stderr", self.name));
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            // The caller's environment must not change what the tests see.
            .env_remove("FEDISTREAM_LOG")
            .env_remove("FEDISTREAM_LOG_FORMAT")
            .env_remove("FEDISTREAM_DRAIN_DEADLINE")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.env_removed {
            cmd.env_remove(k);
        }
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        let child = cmd.spawn().expect("spawning the fedistream binary");
        let pid = child.id();
        Proc { child: Mutex::new(child), pid, name: self.name.to_string(), stdout_path, stderr_path, status: Mutex::new(None) }
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGTERM, as a service manager stops it.
    pub fn sigterm(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("running kill").success();
        assert!(ok, "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL (kill -9) and reap.
    pub fn kill9(&self) {
        let mut child = self.child.lock().unwrap();
        child.kill().expect("SIGKILL");
        *self.status.lock().unwrap() = Some(child.wait().expect("reaping"));
    }

    /// Whether it has exited (reaps it if so).
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut status = self.status.lock().unwrap();
        if status.is_none() {
            *status = self.child.lock().unwrap().try_wait().expect("try_wait");
        }
        *status
    }

    /// Wait for the process to exit by itself; panics (with its stderr) after `timeout`.
    pub async fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            if Instant::now() > deadline {
                panic!("{} did not exit within {timeout:?}; stderr:\n{}", self.name, self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Blocking variant, for tests without a runtime.
    pub fn wait_exit_blocking(&self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            if Instant::now() > deadline {
                panic!("{} did not exit within {timeout:?}; stderr:\n{}", self.name, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Panics with its stderr if it has already exited (e.g. refused the config).
    pub fn assert_running(&self) {
        if let Some(s) = self.exited() {
            panic!("{} exited early ({s}); stderr:\n{}", self.name, self.stderr());
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            if let Ok(mut child) = self.child.lock() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Run to completion (for `validate`, `status`, bad arguments).
pub fn run_to_end(dir: &Path, name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let p = Spawn::new(dir, name, args).start();
    let s = p.wait_exit_blocking(DEADLINE);
    (s, p.stdout(), p.stderr())
}

/// The address `p`'s HTTP server listens on, from its `HTTP server listening
/// address=…` log line (waited for).
pub async fn http_address(p: &Proc) -> String {
    wait_for(
        "the server's address in the log",
        || {
            let line = p.stderr().lines().find(|l| l.contains("HTTP server listening"))?.to_string();
            Some(line.split("address=").nth(1)?.split_whitespace().next()?.to_string())
        },
        || p.stderr(),
    )
    .await
}

/// Poll `cond` every 10 ms until it returns `Some`; panic with `what` and
/// `describe()` at the deadline.
pub async fn wait_for<T>(what: &str, cond: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    wait_for_within(what, DEADLINE, cond, describe).await
}

/// [`wait_for`] with its own bound (Kafka group hand-overs take a session timeout).
pub async fn wait_for_within<T>(what: &str, within: Duration, mut cond: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = cond() {
            return t;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}\n{}", describe());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A string as a TOML basic string (JSON string escapes are valid TOML).
pub fn toml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).unwrap()
}

pub fn toml_path(p: &Path) -> String {
    toml_str(p.to_str().expect("utf-8 path"))
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("writing a config");
    p
}

/// The complete lines of a file being written (a trailing partial line is left out).
pub fn complete_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let end = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
    text[..end].lines().map(str::to_string).collect()
}

/// The complete lines of a file being written, as JSON.
pub fn written_events(path: &Path) -> Vec<Value> {
    complete_lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", path.display())))
        .collect()
}

/// Every line of a finished output file as JSON; panics on a torn or unparsable line.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "{}: the last line is torn: {:?}", path.display(), text.lines().last());
    text.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{} line {}: not JSON ({e}): {l}", path.display(), i + 1)))
        .collect()
}

/// Keys (status URIs) of the `created` events, in file order.
pub fn created_keys(events: &[Value]) -> Vec<String> {
    events.iter().filter(|e| e["kind"] == "created").map(|e| e["key"].as_str().expect("key").to_string()).collect()
}

/// Each key at most once among the `created` events.
pub fn assert_each_created_once(events: &[Value]) {
    let mut seen = HashSet::new();
    let dups: Vec<String> = created_keys(events).into_iter().filter(|k| !seen.insert(k.clone())).collect();
    assert!(dups.is_empty(), "{} duplicated created events, e.g. {:?}", dups.len(), &dups[..dups.len().min(5)]);
}

/// `offset` strictly increasing within each `partition`, in file order.
pub fn assert_offsets_increase(events: &[Value]) {
    let mut last: HashMap<u64, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let p = e["partition"].as_u64().unwrap_or_else(|| panic!("line {}: no partition: {e}", i + 1));
        let o = e["offset"].as_u64().unwrap_or_else(|| panic!("line {}: no offset: {e}", i + 1));
        if let Some(prev) = last.insert(p, o) {
            assert!(o > prev, "line {}: offset {o} after {prev} in partition {p}", i + 1);
        }
    }
}

/// A fake Mastodon with these accounts, a throttle no test reaches, and
/// optionally a reader token that streaming requires.
pub async fn start_fake(users: &[&str], token: Option<&str>) -> FakeMastodon {
    let fake = FakeMastodon::start(FakeConfig {
        heartbeat_interval: Duration::from_millis(500),
        ws_ping_interval: Duration::from_millis(500),
        token: token.map(str::to_string),
        rate_limit: RateLimitConfig { limit: 1_000_000, window: Duration::from_secs(300) },
        ..FakeConfig::default()
    })
    .await;
    for u in users {
        fake.add_account(u, AccountOpts::default());
    }
    fake
}

pub fn acct(user: &str) -> String {
    format!("{user}@fake.example")
}

/// The URIs of every status of `user` on the fake server.
pub fn server_uris(fake: &FakeMastodon, user: &str) -> Vec<String> {
    fake.statuses_of(user).iter().map(|s| s["uri"].as_str().expect("uri").to_string()).collect()
}

/// A polling (no stream) config: source `m` following `users` on the fake,
/// a file channel `out` at `<dir>/out.jsonl`, the log at `<dir>/log.db`.
pub fn polling_config(dir: &Path, fake: &FakeMastodon, users: &[&str], backfill: &str, max_batch: usize) -> String {
    let accounts: Vec<String> = users.iter().map(|u| toml_str(acct(u))).collect();
    format!(
        r#"[log]
path = {log}

[sources.m]
type = "mastodon"
accounts = [{accounts}]
instance = {instance}
stream = "off"
backfill = {backfill}
poll_interval = "1s"
max_poll_interval = "1s"

[channels.out]
type = "file"
path = {out}

[channels.out.delivery]
max_batch = {max_batch}
"#,
        log = toml_path(&dir.join("log.db")),
        accounts = accounts.join(", "),
        instance = toml_str(fake.base_url()),
        backfill = toml_str(backfill),
        out = toml_path(&dir.join("out.jsonl")),
    )
}

/// The `key=value` counters of one summary line (`channel out`, `log`, …) on stderr.
pub fn summary_counters(stderr: &str, line_prefix: &str) -> HashMap<String, u64> {
    let start = stderr.rfind("fedistream: summary").unwrap_or_else(|| panic!("no summary on stderr:\n{stderr}"));
    let line = stderr[start..]
        .lines()
        .find(|l| l.trim_start().starts_with(line_prefix))
        .unwrap_or_else(|| panic!("no `{line_prefix}` line in the summary:\n{}", &stderr[start..]));
    line.split_whitespace().filter_map(|w| w.split_once('=')).filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v))).collect()
}

/// A Kafka pipeline name unique to this test run (its topics and groups are its own).
#[allow(dead_code)]
pub fn pipeline_name(test: &str) -> String {
    format!("it-{test}-{}-{:x}", std::process::id(), rand::random::<u32>())
}

/// Runs `args` in `dir` up to `kills` times, each killed (-9) at a random point
/// of its first second (`seed` picks them), then once to the end (which must
/// succeed). Returns how many kills landed: a run that finished before its
/// kill ends the loop early.
pub async fn kill_at_random_points(dir: &Path, args: &[&str], kills: usize, seed: u64) -> usize {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut killed = 0;
    while killed < kills {
        let p = Spawn::new(dir, &format!("run{killed}"), args).start();
        // A random point of a run (a replay alone takes over a second, at its rate).
        let at = Instant::now() + Duration::from_millis(rng.gen_range(30..1_000));
        while Instant::now() < at && p.exited().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if p.exited().is_some() {
            break;
        }
        p.kill9();
        p.wait_exit(Duration::from_secs(30)).await;
        killed += 1;
    }
    let p = Spawn::new(dir, "last", args).start();
    let s = p.wait_exit(Duration::from_secs(240)).await;
    assert!(s.success(), "{s}\n{}", p.stderr());
    killed
}

/// `count` synthetic statuses of `accounts` accounts (`fedistream bench
/// generate`, seeded) in `dir/in.jsonl`, for replay sources.
pub fn generate_input(dir: &Path, count: usize, accounts: usize, seed: u64) -> PathBuf {
    let out = dir.join("in.jsonl");
    let (count, accounts, seed) = (count.to_string(), accounts.to_string(), seed.to_string());
    let args = ["bench", "generate", "--count", &count, "--accounts", &accounts, "--seed", &seed, "--out", out.to_str().unwrap()];
    let (s, _, err) = run_to_end(dir, "generate", &args);
    assert!(s.success(), "{err}");
    out
}

/// The shared MinIO (`scripts/s3 up`; FEDISTREAM_S3_ENDPOINT, else
/// 127.0.0.1:9000) with a fresh bucket `fs-<label>-<random>`; its credentials
/// in FEDISTREAM_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY (`scripts/s3 env`, else
/// its defaults), which child processes inherit. Returns (endpoint, bucket).
pub async fn s3_bucket(label: &str) -> (String, String) {
    use object_store::signer::Signer;
    let endpoint = std::env::var("FEDISTREAM_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into());
    let user = std::env::var("FEDISTREAM_S3_ACCESS_KEY_ID").unwrap_or_else(|_| "fedistream-test".into());
    let password = std::env::var("FEDISTREAM_S3_SECRET_ACCESS_KEY").unwrap_or_else(|_| "fedistream-test-secret".into());
    std::env::set_var("FEDISTREAM_S3_ACCESS_KEY_ID", &user);
    std::env::set_var("FEDISTREAM_S3_SECRET_ACCESS_KEY", &password);
    let bucket = format!("fs-{label}-{:08x}", rand::random::<u32>());
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id(user)
        .with_secret_access_key(password)
        .build()
        .unwrap();
    let url = s3.signed_url(reqwest::Method::PUT, &object_store::path::Path::from(""), Duration::from_secs(60)).await.unwrap();
    let resp =
        reqwest::Client::new().put(url).send().await.unwrap_or_else(|e| panic!("MinIO at {endpoint} unreachable (scripts/s3 up): {e}"));
    assert!(resp.status().is_success(), "creating bucket {bucket} at {endpoint}: {}", resp.status());
    (endpoint, bucket)
}
