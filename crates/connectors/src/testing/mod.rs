//! A fake Mastodon (or GoToSocial) server for tests and benchmarks.
//!
//! [`FakeMastodon::start`] binds an axum router on `127.0.0.1:0` in the current
//! tokio runtime and serves the part of the client API fedistream uses: instance
//! metadata, account lookup, profile timelines with `min_id`/`max_id`/`since_id`
//! paging and `Link` headers, the public, local, remote, hashtag and list
//! timelines paged the same way (`timelines.rs`: the reader's lists with
//! membership changes, hidden feeds — `timeline_preview` off, the 4.5+
//! `timelines_access` settings, refused feeds), `verify_credentials`,
//! fixed-window rate-limit headers and 429s, the SSE streams (Mastodon flavour
//! only) and the multiplexed WebSocket stream. Remote accounts
//! (`AccountOpts::domain`) feed the federated and remote timelines. Payload shapes follow the fixtures in
//! `tests/fixtures/mastodon/`.
//!
//! The write side serves publishing accounts (tokens from [`FakeMastodon::add_token`]):
//! posting and editing with `Idempotency-Key` (`writes.rs`), deleting, boosting
//! and `GET /api/v2/search` (`social.rs`), media uploads and the media files
//! themselves (`media.rs`), with the per-account posting, delete and media
//! throttles (`ledger.rs`) and Mastodon's text formatting (`text.rs`).
//!
//! Tests drive it synchronously (`post`, `edit`, `delete`, `set_counts`) while it runs, inject
//! faults (lost events, dropped or stalled streams, malformed frames, 429s, 5xx,
//! revoked tokens, failing media downloads) and observe it (`requests`,
//! `stream_connects`, `open_streams`, `statuses_by`, `posts_created`, `media`).
//!
//! Other servers' ways (`/work/shared/mastodon-api.md` §7), as options and
//! faults: `GET /api/v1/statuses?id[]=` (Mastodon 4.3+; absent on GoToSocial,
//! `statuses_by_id`); anonymous reads refused with 401 (GoToSocial's default,
//! `anonymous_reads`); a server `domain` other than its address, advertised as
//! `wss://<domain>` (GoToSocial); a separate streaming server the main host
//! redirects to (`separate_streaming`); a restart answering 503 with
//! `Retry-After` and a chunked HTML page (`set_restarting`); a 200 whose body is
//! an HTML page (`malformed_next_on`); WebSocket upgrades refused by a proxy
//! (`refuse_websocket`); faults aimed at one path (`fail_next_on`); posts with
//! a creation time in the past (`NewStatus::created_at`).
//!
//! Left out on purpose: polls, scheduled statuses, quotes, mentions as
//! resources (they stay plain text), edit history (`/history`, `/source`),
//! notifications, follows and lists as resources (a list id the test did not
//! create streams everything), mentions, polls, cards, the separate paging throttle
//! (300 per 15 minutes), and Mastodon's loopback exemption from throttling.
//! Anonymous reads are answered unless `anonymous_reads` is off, on GoToSocial
//! too (which refuses them by default).

mod guard;
mod json;
mod ledger;
mod media;
mod ops;
mod rest;
mod social;
mod state;
mod streaming;
mod text;
mod timelines;
mod types;
mod writes;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub use types::{AccountOpts, FakeConfig, Flavor, HeartbeatStyle, NewStatus, Posted, RateLimitConfig, RecordedRequest, UploadedMedia};

use state::{Shared, StreamMsg};

/// A running fake server. Dropping it stops accepting connections and closes
/// every open stream.
pub struct FakeMastodon {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
    /// The separate streaming listener ([`FakeConfig::separate_streaming`]).
    streaming: Option<JoinHandle<()>>,
}

/// Accepted connections get `TCP_NODELAY`, as Mastodon's servers (Puma,
/// and Node for streaming, whose `http.Server` sets `noDelay` by default) do:
/// otherwise a small stream event written behind another waits for the
/// client's delayed ACK (40 ms on Linux).
fn no_delay(listener: tokio::net::TcpListener) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}

impl FakeMastodon {
    /// Binds `127.0.0.1:0` and serves in the current tokio runtime.
    ///
    /// Panics if the loopback port cannot be bound: this is test scaffolding and
    /// a test cannot proceed without it.
    pub async fn start(cfg: FakeConfig) -> FakeMastodon {
        Self::start_on(cfg, 0).await.expect("fake Mastodon: binding 127.0.0.1 failed")
    }

    /// Like [`FakeMastodon::start`] on a chosen port (0 = any), returning the bind
    /// error instead of panicking. Used by the `fake-mastodon` binary.
    pub async fn start_on(cfg: FakeConfig, port: u16) -> std::io::Result<FakeMastodon> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let separate = cfg.separate_streaming;
        let shared = Arc::new(Shared::new(cfg, format!("127.0.0.1:{}", addr.port())));
        shared.add_account("reader", AccountOpts::default());
        let streaming = if separate {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
            let _ = shared.streaming_addr.set(format!("127.0.0.1:{}", listener.local_addr()?.port()));
            let app = rest::router(shared.clone())
                .layer(axum::Extension(guard::StreamingListener))
                .into_make_service_with_connect_info::<SocketAddr>();
            Some(tokio::spawn(async move {
                if let Err(err) = axum::serve(no_delay(listener), app).await {
                    tracing::warn!(error = %err, "Fake Mastodon streaming server stopped");
                }
            }))
        } else {
            None
        };
        let app = rest::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(no_delay(listener), app).await {
                tracing::warn!(error = %err, "Fake Mastodon server stopped");
            }
        });
        Ok(FakeMastodon { shared, addr, server, streaming })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `127.0.0.1:PORT` (what a real server calls its domain).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// The flavour this server imitates.
    pub fn flavor(&self) -> Flavor {
        self.shared.cfg.flavor
    }

    /// Creates a local account and returns its id. Creating an existing username
    /// returns the existing id.
    pub fn add_account(&self, username: &str, opts: AccountOpts) -> String {
        self.shared.add_account(username, opts)
    }

    /// The id of a local account, if it exists.
    pub fn account_id(&self, username: &str) -> Option<String> {
        self.shared.store().account_id(username)
    }

    /// Stores a status by `username` (created on the fly if unknown) and broadcasts
    /// an `update` event, unless broadcasting is paused or the status is `direct`.
    pub fn post(&self, username: &str, status: NewStatus) -> Posted {
        self.shared.post(username, status)
    }

    /// Replaces a status's content, sets `edited_at` and broadcasts `status.update`.
    /// Returns false if the id is unknown.
    pub fn edit(&self, id: &str, new_content_html: &str) -> bool {
        self.shared.edit(id, new_content_html)
    }

    /// Sets a status's replies, boosts and favourites counts (as others
    /// interacting with it would); not streamed. Returns false if the id is unknown.
    pub fn set_counts(&self, id: &str, replies: u64, reblogs: u64, favourites: u64) -> bool {
        self.shared.set_counts(id, replies, reblogs, favourites)
    }

    /// Deletes a status (and, like Mastodon, every boost of it), broadcasting one
    /// `delete` per removed id. Returns false if the id is unknown.
    pub fn delete(&self, id: &str) -> bool {
        self.shared.delete(id)
    }

    /// While paused, events are stored but not streamed: they are lost for every
    /// connected client, as events published while a client is disconnected are.
    pub fn pause_stream_broadcast(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::SeqCst);
    }

    /// Closes every open SSE response and WebSocket now.
    pub fn drop_streams(&self) {
        self.shared.kill_streams();
    }

    /// Stops (false) or resumes (true) SSE heartbeats and WebSocket pings while
    /// keeping connections open: a stalled stream.
    pub fn set_heartbeats(&self, on: bool) {
        self.shared.heartbeats.store(on, Ordering::SeqCst);
    }

    /// Sends `raw` verbatim to every open stream: as body bytes on SSE (include the
    /// line endings you want) and as one text frame on WebSockets.
    pub fn inject_stream_raw(&self, raw: &str) {
        // No receivers is fine: nothing is connected.
        let _ = self.shared.events.send(StreamMsg::Raw(raw.to_owned()));
    }

    /// Throttles the API: every request until now + `reset_in` gets 429 with
    /// `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` at that instant.
    pub fn rate_limit_next(&self, reset_in: Duration) {
        let until = chrono::Utc::now() + chrono::Duration::from_std(reset_in).unwrap_or(chrono::Duration::MAX);
        self.shared.faults().throttle_until = Some(until);
    }

    /// The next `count` requests (API or streaming) answer `status` (e.g. 502)
    /// with a small JSON error body, before any other processing.
    pub fn fail_next(&self, status: u16, count: usize) {
        let mut faults = self.shared.faults();
        faults.fail_status = status;
        faults.fail_count = count;
    }

    /// Revokes the reader's token: open streams close (Mastodon's `kill`), and
    /// every later request presenting a token gets 401, except tokens added with
    /// [`FakeMastodon::add_token`].
    pub fn revoke_token(&self) {
        self.shared.faults().revoked = true;
        self.shared.kill_streams();
    }

    /// The next `count` requests whose path contains `path` answer `status`
    /// with a small JSON error body (other requests are served normally).
    pub fn fail_next_on(&self, path: &str, status: u16, count: usize) {
        let answer = state::Canned::Status(status);
        self.shared.faults().targeted.push(state::Targeted { path: path.to_owned(), answer, left: count });
    }

    /// Ends every fault set with the `…_next_on` methods.
    pub fn clear_targeted_faults(&self) {
        self.shared.faults().targeted.clear();
    }

    /// The next `count` requests whose path contains `path` get `200 OK` with
    /// an HTML error page instead of the JSON asked for (a proxy's page, or a
    /// truncated answer): undecodable.
    pub fn malformed_next_on(&self, path: &str, count: usize) {
        let answer = state::Canned::HtmlOk;
        self.shared.faults().targeted.push(state::Targeted { path: path.to_owned(), answer, left: count });
    }

    /// The next `count` requests whose path contains `path` get `200 OK` with
    /// an empty JSON array (a proxy or a partial implementation answering
    /// "nothing" where there is something).
    pub fn empty_next_on(&self, path: &str, count: usize) {
        let answer = state::Canned::EmptyList;
        self.shared.faults().targeted.push(state::Targeted { path: path.to_owned(), answer, left: count });
    }

    /// Starts (`Some(retry_after_secs)`) or ends (`None`) a restart: meanwhile
    /// every request, streaming included, gets `503` with `Retry-After` and a
    /// chunked HTML page, as GoToSocial answers while it starts. Starting one
    /// also cuts open streams the way a dying process does (no close frame).
    pub fn set_restarting(&self, retry_after: Option<u64>) {
        self.shared.faults().restarting = retry_after;
        if retry_after.is_some() {
            self.shared.crash_streams();
        }
    }

    /// Refuse (`Some(status)`, e.g. 403) or accept (`None`) WebSocket upgrades,
    /// whatever the token, as some proxies do while SSE works.
    pub fn refuse_websocket(&self, status: Option<u16>) {
        self.shared.faults().refuse_websocket = status;
    }

    /// Creates a list of the reader's (empty) and returns its id. Its REST
    /// timeline and stream carry its members' posts from then on.
    pub fn create_list(&self) -> String {
        let id = self.shared.store().ids.next(chrono::Utc::now());
        state::lock(&self.shared.lists).insert(id.clone(), Default::default());
        id
    }

    /// Adds `username` (created if unknown) to a list; false if the list is unknown.
    pub fn add_to_list(&self, list: &str, username: &str) -> bool {
        let account = self.shared.add_account(username, AccountOpts::default());
        state::lock(&self.shared.lists).get_mut(list).map(|m| m.insert(account)).is_some()
    }

    /// Removes `username` from a list; false if it was not a member.
    pub fn remove_from_list(&self, list: &str, username: &str) -> bool {
        let Some(account) = self.account_id(username) else { return false };
        state::lock(&self.shared.lists).get_mut(list).is_some_and(|m| m.remove(&account))
    }

    /// Mastodon's "timeline preview" (before 4.5): when off, anonymous reads
    /// of the public and hashtag timelines answer 401.
    pub fn set_timeline_preview(&self, on: bool) {
        state::lock(&self.shared.feeds).timeline_preview = on;
    }

    /// Sets one half of Mastodon 4.5+'s `timelines_access` (`live_feeds.local`,
    /// `live_feeds.remote`, `hashtag_feeds.local`, `hashtag_feeds.remote`) to
    /// `public`, `authenticated` (401 for anonymous REST readers) or `disabled`
    /// (an empty REST answer; streams drop its updates). The instance
    /// document shows it.
    pub fn set_feed_access(&self, half: &str, value: &str) {
        state::lock(&self.shared.feeds).access.insert(half.to_owned(), value.to_owned());
    }

    /// Every timeline request (public, hashtag, list) answers `status` (e.g.
    /// 422), or is served again (`None`).
    pub fn refuse_feeds(&self, status: Option<u16>) {
        state::lock(&self.shared.feeds).refuse = status;
    }

    /// `127.0.0.1:PORT` of the separate streaming listener, if configured.
    pub fn streaming_host(&self) -> Option<String> {
        self.shared.streaming_addr.get().cloned()
    }

    /// The requests served so far, oldest first (the last 100,000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests().iter().cloned().collect()
    }

    /// Successful stream connections so far (SSE responses and WebSocket upgrades).
    pub fn stream_connects(&self) -> usize {
        *self.shared.connects.borrow()
    }

    /// Streams open right now.
    pub fn open_streams(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The stored statuses of `username`, newest first, as an authenticated reader
    /// sees them over REST (empty if the account does not exist).
    pub fn statuses_of(&self, username: &str) -> Vec<serde_json::Value> {
        self.shared.statuses_of(username)
    }

    /// Lets `token` write as `username` (created with default options if unknown;
    /// call [`FakeMastodon::add_account`] first for a bot or other settings).
    /// Returns the account id. Such tokens stay valid after `revoke_token`.
    pub fn add_token(&self, token: &str, username: &str) -> String {
        let id = self.shared.add_account(username, AccountOpts::default());
        state::lock(&self.shared.tokens).insert(token.to_owned(), username.to_owned());
        id
    }

    /// Forgets every remembered `Idempotency-Key`, as an hour passing would.
    pub fn expire_idempotency_keys(&self) {
        self.shared.ledger().idempotency.clear();
    }

    /// An upload from `POST /api/v2/media`, as stored.
    pub fn media(&self, id: &str) -> Option<UploadedMedia> {
        self.shared.ledger().uploads.get(id).map(|u| u.media.clone())
    }

    /// What `GET` on a media attachment's `url` serves: (content type, bytes).
    /// Works for uploads (once processed) and for media of [`NewStatus::media`].
    pub fn media_file(&self, id: &str) -> Option<(String, Vec<u8>)> {
        media::file(&self.shared, id)
    }

    /// Holds the clock of the write limits (posting, deleting, uploading) at
    /// `at` — windows, `X-RateLimit-Reset` and refusals follow it — or lets it
    /// run with the real clock again (`None`). Tests of window boundaries use it
    /// so that a slow machine cannot move a request into the next window.
    pub fn set_limit_clock(&self, at: Option<chrono::DateTime<chrono::Utc>>) {
        self.shared.ledger().limit_clock = at;
    }

    /// The next `n` downloads of media files answer 500.
    pub fn fail_media_downloads(&self, n: usize) {
        self.shared.ledger().failing_downloads = n;
    }

    /// Every current status of `username` (including `direct` ones and boosts),
    /// newest first, as its author sees them: edits applied, deletions gone.
    pub fn statuses_by(&self, username: &str) -> Vec<serde_json::Value> {
        let store = self.shared.store();
        let Some(account_id) = store.account_id(username) else {
            return Vec::new();
        };
        store.statuses_by(&account_id).map(|s| json::status(&self.shared, &store, s, json::Viewer::Reader)).collect()
    }

    /// Statuses `username` ever created with `POST /api/v1/statuses`, including
    /// later-deleted ones; idempotent repeats and boosts are not counted.
    pub fn posts_created(&self, username: &str) -> usize {
        let Some(account_id) = self.account_id(username) else { return 0 };
        self.shared.ledger().posts_created.get(&account_id).copied().unwrap_or(0)
    }

    /// Ids of `username`'s statuses removed so far, oldest first: by `DELETE`,
    /// by `unreblog` (the boost's id), by [`FakeMastodon::delete`], or as boosts
    /// of a deleted post.
    pub fn deleted_ids(&self, username: &str) -> Vec<String> {
        let Some(account_id) = self.account_id(username) else { return Vec::new() };
        self.shared.ledger().deleted.get(&account_id).cloned().unwrap_or_default()
    }

    /// How often a status was edited (over HTTP or with [`FakeMastodon::edit`]).
    pub fn edits_of(&self, id: &str) -> usize {
        self.shared.ledger().edits.get(id).copied().unwrap_or(0)
    }

    /// Waits until at least `n` stream connections have succeeded in total.
    /// Returns false on timeout.
    pub async fn wait_for_stream_connects(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.connects.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await.is_ok_and(|r| r.is_ok())
    }

    /// Waits until exactly `n` streams are open. Returns false on timeout.
    pub async fn wait_for_open_streams(&self, n: usize, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.open_changed.notified();
                if self.open_streams() == n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl Drop for FakeMastodon {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(s) = &self.streaming {
            s.abort();
        }
        self.shared.kill_streams();
    }
}
