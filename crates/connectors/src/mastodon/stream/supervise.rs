//! The reconnect loop: pick a transport, connect, run, classify the end, wait,
//! repeat. Never spins: every path back to a connect either waits a backoff
//! delay or is one of at most [`MAX_QUICK_SWITCHES`] immediate transport
//! switches.

use std::time::Duration;

use fedistream_core::backoff::Backoff;
use tokio::time::Instant;

use super::conn::{self, Ended};
use super::{Emitter, Stop, StreamConfig, StreamEvent, Transport};
use crate::mastodon::client::{MastodonClient, MastodonError};

/// A connection that lived this long was healthy: the backoff starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// After WebSocket failed under `Auto`, stay on SSE this long, then retry it
/// at the next reconnect.
const WS_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);
/// Immediate reconnects (transport switches) allowed before a backoff delay.
const MAX_QUICK_SWITCHES: u32 = 2;

/// Which transport to try next, and what we learned about the server.
#[derive(Debug)]
pub(super) struct Plan {
    configured: Transport,
    /// SSE answered 404 (GoToSocial, Akkoma): WebSocket only from now on.
    sse_missing: bool,
    /// When the WebSocket upgrade last failed under `Auto`.
    ws_failed_at: Option<Instant>,
}

impl Plan {
    pub(super) fn new(configured: Transport) -> Self {
        Plan { configured, sse_missing: false, ws_failed_at: None }
    }

    pub(super) fn pick(&self, now: Instant) -> Transport {
        let ws_recently_failed = self.ws_failed_at.is_some_and(|t| now.duration_since(t) < WS_RETRY_AFTER);
        match self.configured {
            Transport::WebSocket => Transport::WebSocket,
            Transport::Sse if self.sse_missing => Transport::WebSocket,
            Transport::Sse => Transport::Sse,
            Transport::Auto if self.sse_missing || !ws_recently_failed => Transport::WebSocket,
            Transport::Auto => Transport::Sse,
        }
    }

    /// A failed connect on `used`; returns whether another transport is worth
    /// trying at once.
    pub(super) fn failed(&mut self, used: Transport, status: Option<u16>, now: Instant) -> bool {
        match (used, status) {
            (Transport::Sse, Some(404)) => {
                if !self.sse_missing {
                    tracing::info!("SSE streaming not available (404); using WebSocket only");
                }
                self.sse_missing = true;
                true
            }
            (Transport::WebSocket, _) if self.configured == Transport::Auto && !self.sse_missing => {
                tracing::info!("No WebSocket connection; trying SSE");
                self.ws_failed_at = Some(now);
                true
            }
            _ => false,
        }
    }

    pub(super) fn connected(&mut self, used: Transport) {
        if used == Transport::WebSocket {
            self.ws_failed_at = None;
        }
    }
}

pub(super) async fn run(client: MastodonClient, cfg: StreamConfig, emit: Emitter) {
    match supervise(&client, &cfg, &emit).await {
        Err(Stop::Shutdown) => tracing::info!("Stream stopped: shutdown"),
        Err(Stop::ReceiverGone) => tracing::info!("Stream stopped: receiver dropped"),
        Ok(()) => {}
    }
}

/// Runs until shut down; returns `Ok` after sending `Fatal`.
async fn supervise(client: &MastodonClient, cfg: &StreamConfig, emit: &Emitter) -> Result<(), Stop> {
    if !client.has_token() {
        let error = MastodonError::Config("streaming needs a user access token (Mastodon 4.2+)".into());
        return emit.send(StreamEvent::Fatal { error }).await;
    }
    let mut discovered = cfg.streaming_base.clone();
    let mut plan = Plan::new(cfg.transport);
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let mut quick_switches = 0;
    let mut failures = 0u32;
    loop {
        if discovered.is_none() {
            // Until the server tells us, try its base URL; ask again next time.
            discovered = tokio::select! {
                biased;
                _ = emit.shutdown.cancelled() => return Err(Stop::Shutdown),
                b = discover_base(client, &cfg.server_names) => b,
            };
        }
        let base = discovered.clone().unwrap_or_else(|| client.base_url().clone());
        let transport = plan.pick(Instant::now());
        let websocket = transport == Transport::WebSocket;
        let url = match conn::streaming_url(&base, websocket, &cfg.stream) {
            Ok(u) => u,
            Err(error) => return emit.send(StreamEvent::Fatal { error }).await,
        };
        tracing::debug!(transport = transport.as_str(), url = %url, "Connecting");
        let attempt = async {
            if websocket {
                conn::connect_ws(client, url, &cfg.stream).await.map(|ws| Conn::Ws(Box::new(ws)))
            } else {
                conn::connect_sse(client, url).await.map(Conn::Sse)
            }
        };
        let attempt = tokio::select! {
            biased;
            _ = emit.shutdown.cancelled() => return Err(Stop::Shutdown),
            a = attempt => a,
        };
        let mut delay = match attempt {
            Ok(connection) => {
                plan.connected(transport);
                quick_switches = 0;
                failures = 0;
                tracing::info!(transport = transport.as_str(), "Stream connected");
                metrics::counter!("fedistream_stream_connects_total", "component" => "mastodon", "transport" => transport.as_str())
                    .increment(1);
                emit.send(StreamEvent::Connected { transport }).await?;
                let started = Instant::now();
                let ended = match connection {
                    Conn::Ws(ws) => conn::run_ws(*ws, cfg.ws_idle_timeout, emit).await,
                    Conn::Sse(resp) => conn::run_sse(resp, cfg.sse_idle_timeout, emit).await,
                };
                let (reason, clean, auth, delivered) = match ended {
                    Ended::Stopped(stop) => return Err(stop),
                    Ended::Dropped { reason, clean, auth, delivered } => (reason, clean, auth, delivered),
                };
                let lived = started.elapsed();
                tracing::warn!(reason = %reason, lived_s = lived.as_secs(), delivered, "Stream disconnected");
                emit.send(StreamEvent::Disconnected { reason }).await?;
                if lived > HEALTHY_AFTER || delivered > 0 {
                    backoff.reset();
                }
                if (clean || auth) && !token_still_valid(client, emit).await? {
                    return Ok(());
                }
                backoff.next_delay()
            }
            Err(error) => {
                let status = error.status();
                failures += 1;
                tracing::warn!(transport = transport.as_str(), attempt = failures, error = %error, "Stream connect failed");
                metrics::counter!("fedistream_stream_connect_failures_total", "component" => "mastodon", "transport" => transport.as_str())
                    .increment(1);
                emit.send(StreamEvent::ConnectFailed { attempt: failures, transport, error: error.to_string() }).await?;
                // A refused upgrade whose token checks out is the transport's
                // fault (a proxy, a server taking the token elsewhere): it counts
                // as a WebSocket failure, so `auto` tries SSE.
                let refused = matches!(status, Some(401 | 403));
                if refused && !token_still_valid(client, emit).await? {
                    return Ok(());
                }
                if plan.failed(transport, status, Instant::now()) && quick_switches < MAX_QUICK_SWITCHES {
                    quick_switches += 1;
                    Duration::ZERO
                } else {
                    quick_switches = 0;
                    backoff.next_delay().max(error.retry_after().unwrap_or_default())
                }
            }
        };
        if let Some(blocked) = client.limiter().blocked_for() {
            delay = delay.max(blocked);
        }
        if !delay.is_zero() {
            tracing::debug!(delay_ms = delay.as_millis() as u64, "Reconnecting after a delay");
            emit.sleep(delay).await?;
        }
    }
}

enum Conn {
    Ws(Box<conn::WsConn>),
    Sse(reqwest::Response),
}

/// The streaming base the server advertises (`/api/v2/instance`), mapped onto
/// the client's base URL when it names the server itself (see
/// [`StreamConfig::server_names`]). `None` when the server cannot say now.
async fn discover_base(client: &MastodonClient, server_names: &[String]) -> Option<url::Url> {
    match client.instance().await {
        Ok(info) => {
            let advertised = info.streaming_url.unwrap_or_else(|| client.base_url().clone());
            let mapped = map_to_base(&advertised, client.base_url(), &info.domain, server_names);
            if (mapped.host_str(), mapped.port_or_known_default()) != (advertised.host_str(), advertised.port_or_known_default()) {
                tracing::info!(advertised = %advertised, using = %mapped, "The server advertises streaming on its own name; reaching it through the configured address");
            }
            Some(mapped)
        }
        Err(error) => {
            tracing::warn!(error = %error, "Cannot ask the server for its streaming URL; trying its base URL, asking again before the next connect");
            None
        }
    }
}

/// `advertised` with the scheme, host and port of `base` when its host is the
/// server's own `domain` or one of `server_names` (`host[:port]`, case-insensitive).
pub(super) fn map_to_base(advertised: &url::Url, base: &url::Url, domain: &str, server_names: &[String]) -> url::Url {
    let host = match (advertised.host_str(), advertised.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return advertised.clone(),
    };
    let own = host.eq_ignore_ascii_case(domain) || server_names.iter().any(|n| n.eq_ignore_ascii_case(&host));
    if !own {
        return advertised.clone();
    }
    let mut mapped = base.clone();
    let path = advertised.path().trim_end_matches('/');
    if !path.is_empty() {
        mapped.set_path(&format!("{}{path}", mapped.path().trim_end_matches('/')));
    }
    mapped
}

/// After a refusal or a clean close: is the token still good? Sends `Fatal`
/// and answers `false` only when the server says 401 to `verify_credentials`;
/// anything else (network trouble, 403 for a missing scope) reconnects.
async fn token_still_valid(client: &MastodonClient, emit: &Emitter) -> Result<bool, Stop> {
    let verdict = tokio::select! {
        biased;
        _ = emit.shutdown.cancelled() => return Err(Stop::Shutdown),
        v = client.verify_credentials() => v,
    };
    match verdict {
        Ok(account) => {
            tracing::debug!(acct = %account.acct, "Token still valid");
            Ok(true)
        }
        Err(error) if error.status() == Some(401) => {
            tracing::error!(error = %error, "Access token rejected; streaming stopped");
            emit.send(StreamEvent::Fatal { error }).await?;
            Ok(false)
        }
        Err(error) => {
            tracing::warn!(error = %error, "Cannot verify the token; reconnecting anyway");
            Ok(true)
        }
    }
}
