//! The timeline source: a server's feeds — its local, federated or remote
//! timeline, a hashtag, a list of the connection's account — rather than
//! chosen accounts.
//!
//! It reads like the account source, with its machinery: the REST timeline is
//! the record, paged forward from a durable checkpoint per feed at start,
//! after every stream (re)connect, on `poll_interval` without a stream and on
//! `safety_interval` with one ([`feed`]); the feed's stream (`public:local`,
//! `public`, `public:remote`, `hashtag`, `hashtag:local`, `list`, over
//! WebSocket or SSE with the same supervisor) is the low-latency hint, and only
//! REST advances checkpoints. Posts go through the same converter, consent
//! rule (public only; noindex and #nobot/#noindex/#nobridge in the author's
//! bio, which every status carries) and event model, so a post an account
//! source and a timeline source both see is one post: the ingestor's
//! deduplication by URI and version stores it once.
//!
//! What it cannot do, it says: a feed the server hides (`timeline_preview` off
//! before Mastodon 4.5, the 4.5+ `timelines_access` settings; 401 or 422 on
//! REST, an empty array when disabled) is shown as hidden with the setting
//! named, checked again hourly, never retried in a loop; a backlog beyond
//! `max_pages` is a gap, counted (`gaps`, `gap_seconds`), logged and shown per
//! feed. Its REST requests take at most `rate_limit_share` of each rate-limit
//! window of its (server, token), so account sources on the same server keep
//! theirs.

pub mod config;
mod feed;
mod hidden;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fedistream_core::backoff::Backoff;
use fedistream_core::{ErrorKind, EventKind, Source, SourceBatch, SourceContext, SourceError};
use fedistream_process::consent::ConsentPolicy;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use config::{MastodonTimelineConfig, TimelineKind};
pub use feed::Gap;

use self::hidden::{all_hidden, all_hidden_reason, hidden_by, hide, report_gap, settings_verdict, show};

use super::catchup::JobError;
use super::convert::{checkpoint_key, deleted_event, ids_key, CHECKPOINT_NS, IDS_NS};
use super::streamed::stream_posts;
use super::{accounts, reconcile, sleep_until, src_err, Shared};
use crate::mastodon::client::Secret;
use crate::mastodon::ratelimit::RateLimiters;
use crate::mastodon::stream::{spawn_stream, StreamConfig, StreamEvent};

/// How long a hidden feed waits before it is asked again: the operator (or
/// the server's admin) has to act; asking often won't help.
const HIDDEN_RETRY: Duration = Duration::from_secs(3600);
/// The most stream events one append takes.
const MAX_BURST: usize = 512;

/// The server a timeline source reads, with the connection's token if any.
#[derive(Clone)]
pub struct TimelineServer {
    pub base_url: url::Url,
    pub token: Option<Secret>,
}

pub struct MastodonTimelineSource {
    cfg: MastodonTimelineConfig,
    server: TimelineServer,
    limiters: RateLimiters,
}

impl MastodonTimelineSource {
    /// Builds the source; no I/O until `run`. `limiters` is the process-wide
    /// registry the account sources use too: one budget per (server, token).
    pub fn new(cfg: MastodonTimelineConfig, server: TimelineServer, limiters: RateLimiters) -> Self {
        MastodonTimelineSource { cfg, server, limiters }
    }
}

/// One feed's schedule and state.
struct Feed {
    kind: TimelineKind,
    label: String,
    checkpoint_key: String,
    checkpoint: Option<String>,
    due: Instant,
    running: bool,
    rerun: bool,
    stream_up: bool,
    backoff: Backoff,
    /// Why the server does not show this feed, while it does not.
    hidden: Option<String>,
    /// The server's settings say the feed is disabled: an empty answer is no news.
    disabled: Option<String>,
}

#[async_trait]
impl Source for MastodonTimelineSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let cfg = self.cfg;
        let client = accounts::client_for(&self.limiters, self.server.base_url.clone(), self.server.token.clone())?;
        let host = client.host();
        let rest = client.with_share(cfg.rate_limit_share);
        let status = ctx.status.clone();
        if client.has_token() {
            match client.verify_credentials().await {
                Ok(me) => info!(reader = %me.acct, server = %host, "Token accepted"),
                Err(e) if e.kind() == ErrorKind::Auth => {
                    return Err(src_err(ErrorKind::Auth, format!("the token for {host} was rejected: {e}")));
                }
                Err(e) => warn!(error = %e, "Cannot check the token now; going on"),
            }
        }
        // What the server calls itself (events carry it) and who may read which feed.
        let mut names = HashMap::new();
        let access = match client.instance().await {
            Ok(info) => {
                if !info.domain.eq_ignore_ascii_case(&host) {
                    names.insert(host.clone(), info.domain.clone());
                }
                info.timelines_access
            }
            Err(e) => {
                warn!(server = %host, error = %e, "Cannot read the instance document; feed settings unknown until a feed answers");
                Default::default()
            }
        };
        let now = Instant::now();
        let mut feeds = Vec::new();
        for kind in &cfg.timelines {
            let label = kind.label();
            let key = checkpoint_key(&ctx.name, &host, &format!("timeline:{label}"));
            let checkpoint = ctx.log.state_get(CHECKPOINT_NS, &key).await?;
            let (hidden, disabled) = settings_verdict(kind, &access, &host, client.has_token());
            info!(feed = %label, promise = kind.promise(), "Timeline feed");
            feeds.push(Feed {
                kind: kind.clone(),
                label,
                checkpoint_key: key,
                checkpoint,
                due: now,
                running: false,
                rerun: false,
                stream_up: false,
                backoff: Backoff::new(Duration::from_secs(2), cfg.poll_interval.max(Duration::from_secs(60))),
                hidden: None,
                disabled,
            });
            if let Some(why) = hidden {
                let f = feeds.last_mut().expect("just pushed");
                hide(f, why, &status);
                f.due = now + HIDDEN_RETRY;
            }
        }
        if let Some(e) = all_hidden(&feeds).filter(|_| cfg.stop_if_unreadable) {
            return Err(e);
        }

        let sh = Arc::new(Shared {
            name: ctx.name.clone(),
            emitter: ctx.emitter.clone(),
            status: ctx.status.clone(),
            dead_letter: ctx.dead_letter.clone(),
            progress: ctx.progress.clone(),
            policy: ConsentPolicy { allow_unlisted: false, owned: false },
            backfill: cfg.backfill.clone(),
            followed: HashSet::new(),
            owners: super::Owners { whole: Some(ctx.name.as_str().into()), by_account: HashMap::new() },
            everyone: true,
            known_ids: HashMap::new(),
            names: names.clone(),
            log: ctx.log.clone(),
            window_spec: super::window::WindowSpec { max_age: Duration::ZERO, min_posts: 0, cap: 0 },
            window_locks: Mutex::default(),
            lookups: reconcile::LookupSupport::default(),
            skips: Mutex::default(),
        });

        // One stream per feed (each its own connection), merged into one channel.
        let (stream_tx, mut stream_rx) = mpsc::channel::<(usize, StreamEvent)>(1024);
        let streaming = match cfg.stream.transport() {
            Some(transport) if client.has_token() => {
                for (i, f) in feeds.iter().enumerate().filter(|(_, f)| f.hidden.is_none() && f.disabled.is_none()) {
                    let scfg = StreamConfig {
                        transport,
                        stream: f.kind.stream(),
                        sse_idle_timeout: cfg.sse_idle_timeout,
                        ws_idle_timeout: cfg.ws_idle_timeout,
                        backoff_initial: cfg.reconnect_initial,
                        backoff_max: cfg.reconnect_max,
                        streaming_base: None,
                        server_names: names.get(&host).into_iter().cloned().collect(),
                    };
                    let mut rx = spawn_stream(client.clone(), scfg, ctx.shutdown.clone());
                    let tx = stream_tx.clone();
                    tokio::spawn(async move {
                        while let Some(ev) = rx.recv().await {
                            if tx.send((i, ev)).await.is_err() {
                                return;
                            }
                        }
                    });
                }
                true
            }
            _ => false,
        };
        drop(stream_tx);
        status.set_state(if streaming { "connecting" } else { "polling" }, None);
        info!(feeds = feeds.len(), streaming, server = %host, share = cfg.rate_limit_share, "Mastodon timeline source started");

        let mut tasks: JoinSet<(usize, Result<feed::Done, JobError>)> = JoinSet::new();
        let mut streams_open = streaming;
        loop {
            let next_due = feeds.iter().filter(|f| !f.running).map(|f| f.due).min();
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                ev = stream_rx.recv(), if streams_open => {
                    let Some((i, ev)) = ev else {
                        streams_open = false;
                        continue;
                    };
                    let mut next = Some((i, ev));
                    while let Some((i, ev)) = next.take() {
                        next = on_stream_event(&sh, &cfg, &mut feeds, i, ev, &mut stream_rx, &host).await?;
                    }
                }
                joined = tasks.join_next(), if !tasks.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (i, res) = joined.map_err(|e| src_err(ErrorKind::Internal, format!("timeline catch-up failed: {e}")))?;
                    let f = &mut feeds[i];
                    f.running = false;
                    let now = Instant::now();
                    match res {
                        Ok(done) => {
                            f.checkpoint = Some(done.checkpoint);
                            f.backoff.reset();
                            if done.found > 0 && f.disabled.is_some() {
                                // The token's role may read a feed disabled for others.
                                f.disabled = None;
                            }
                            match (&f.disabled, &f.hidden) {
                                (Some(why), _) => hide(f, why.clone(), &status),
                                (None, Some(_)) => show(f, &status),
                                (None, None) => {}
                            }
                            if let Some(gap) = done.gap {
                                report_gap(f, &gap, cfg.max_pages, &status);
                            }
                            let wait = if f.hidden.is_some() {
                                HIDDEN_RETRY
                            } else if f.stream_up {
                                cfg.safety_interval
                            } else {
                                cfg.poll_interval
                            };
                            f.due = if f.rerun { now } else { now + wait };
                            f.rerun = false;
                        }
                        Err(e) if matches!(e, JobError::Source(_)) && e.kind() == ErrorKind::Internal => {
                            return Err(src_err(ErrorKind::Internal, e.to_string()));
                        }
                        Err(e) => {
                            f.rerun = false;
                            match hidden_by(&e, &f.kind, &host, client.has_token()) {
                                Some(why) => {
                                    hide(f, why, &status);
                                    f.due = now + HIDDEN_RETRY;
                                    if cfg.stop_if_unreadable {
                                        if let Some(e) = all_hidden(&feeds) {
                                            return Err(e);
                                        }
                                    }
                                }
                                None if e.kind() == ErrorKind::Auth => {
                                    return Err(src_err(ErrorKind::Auth, format!("{} timeline of {host}: {e}", f.label)));
                                }
                                None => {
                                    let delay = e.retry_after().unwrap_or_else(|| f.backoff.next_delay());
                                    warn!(feed = %f.label, error = %e, retry_in = ?delay, "Timeline catch-up failed; will retry");
                                    status.count("errors", 1);
                                    f.due = now + delay;
                                }
                            }
                        }
                    }
                }
                _ = sleep_until(next_due), if next_due.is_some() => {
                    let now = Instant::now();
                    for (i, f) in feeds.iter_mut().enumerate() {
                        if f.running || f.due > now {
                            continue;
                        }
                        f.running = true;
                        let job = feed::Job {
                            index: i,
                            kind: f.kind.clone(),
                            client: rest.clone(),
                            checkpoint_key: f.checkpoint_key.clone(),
                            checkpoint: f.checkpoint.clone(),
                            max_pages: cfg.max_pages,
                        };
                        let sh = sh.clone();
                        tasks.spawn(async move { (job.index, feed::run(sh, job).await) });
                    }
                }
            }
            match all_hidden_reason(&feeds) {
                Some(why) => status.set_state("hidden", Some(why)),
                None if status.state() == "hidden" => status.set_state("polling", None),
                None => {}
            }
        }
        // Whatever a task handed to the emitter is appended with its checkpoint
        // or not at all, so aborting in-flight work loses nothing.
        tasks.abort_all();
        Ok(())
    }
}

async fn on_stream_event(
    sh: &Shared,
    cfg: &MastodonTimelineConfig,
    feeds: &mut [Feed],
    i: usize,
    ev: StreamEvent,
    rx: &mut mpsc::Receiver<(usize, StreamEvent)>,
    host: &str,
) -> Result<Option<(usize, StreamEvent)>, SourceError> {
    let status = &sh.status;
    let mut leftover = None;
    match ev {
        StreamEvent::Connected { transport } => {
            let f = &mut feeds[i];
            info!(feed = %f.label, ?transport, "Stream connected; catching up over REST");
            f.stream_up = true;
            status.count("stream_connects", 1);
            if f.running {
                f.rerun = true
            } else {
                f.due = Instant::now()
            }
        }
        StreamEvent::Disconnected { reason } => {
            let f = &mut feeds[i];
            info!(feed = %f.label, %reason, "Stream disconnected; polling until it is back");
            f.stream_up = false;
            f.due = f.due.min(Instant::now() + cfg.poll_interval);
        }
        StreamEvent::ConnectFailed { attempt, transport, error } => {
            debug!(feed = %feeds[i].label, attempt, transport = transport.as_str(), %error, "Stream not connected; polling meanwhile");
        }
        StreamEvent::Update(_) | StreamEvent::StatusUpdate(_) => {
            // Posts and edits already waiting (of any feed: one server) go
            // into one append; anything else ends the burst and is handed back.
            let mut posts = Vec::new();
            let mut pending = Some((i, ev));
            while let Some((j, ev)) = pending.take() {
                match ev {
                    StreamEvent::Update(raw) => posts.push((raw, EventKind::Created)),
                    StreamEvent::StatusUpdate(raw) => posts.push((raw, EventKind::Updated)),
                    ev => {
                        leftover = Some((j, ev));
                        break;
                    }
                }
                if posts.len() < MAX_BURST {
                    pending = rx.try_recv().ok();
                }
            }
            stream_posts(sh, posts, host).await?;
        }
        StreamEvent::Delete(id) => match sh.log.state_get(IDS_NS, &ids_key(host, &id)).await? {
            Some(v) => {
                if let Some(ev) = deleted_event(&sh.name, sh.converter().server_name(host), &id, &v) {
                    sh.emit(SourceBatch { events: vec![ev.into()], state: vec![] }).await?;
                }
            }
            None => status.count("deletes_unattributed", 1),
        },
        StreamEvent::Malformed { raw, reason } => sh.malformed(&format!("stream: {reason}"), &raw),
        StreamEvent::Fatal { error } => {
            return Err(src_err(error.kind(), format!("{} stream of {host} stopped: {error}", feeds[i].label)));
        }
    }
    let up = feeds.iter().filter(|f| f.stream_up).count();
    let live = feeds.iter().filter(|f| f.hidden.is_none()).count();
    if up > 0 {
        status.set_state("streaming", Some(format!("{up} of {live} feeds streaming")));
    } else if status.state() == "streaming" {
        status.set_state("polling", Some("streams down".into()));
    }
    Ok(leftover)
}
