//! What the reader's stream delivers, handled in the source's loop: connection
//! changes (the status line, catch-ups, reconciliation priority) and the posts,
//! edits and deletes it carries (emitted at once, one append each).

use fedistream_core::{EventKind, SourceBatch, SourceError};
use tokio::time::Instant;
use tracing::{debug, info};

use super::accounts::Account;
use super::config::MastodonSourceConfig;
use super::convert::{deleted_event, ids_key, IDS_NS};
use super::rounds::Rounds;
use super::{src_err, stream_post, Shared};
use crate::mastodon::stream::StreamEvent;

/// What the source loop knows about its stream.
#[derive(Default)]
pub(super) struct StreamState {
    pub up: bool,
    pub ever_connected: bool,
}

pub(super) async fn on_stream_event(
    sh: &Shared,
    ev: StreamEvent,
    stream: &mut StreamState,
    accounts: &mut [Account],
    rounds: &Rounds,
    cfg: &MastodonSourceConfig,
    reader_host: &str,
) -> Result<(), SourceError> {
    let status = &sh.status;
    match ev {
        StreamEvent::Connected { transport } => {
            info!(?transport, "Stream connected; catching up over REST");
            stream.up = true;
            stream.ever_connected = true;
            status.set_state("streaming", Some(format!("{transport:?}")));
            status.count("stream_connects", 1);
            let now = Instant::now();
            for a in accounts.iter_mut() {
                if a.running {
                    a.rerun = true
                } else {
                    a.due = now
                }
            }
            let mut slots: Vec<_> = accounts.iter_mut().map(|a| &mut a.reconcile).collect();
            rounds.stream_gap(&mut slots, now);
        }
        StreamEvent::Disconnected { reason } => {
            info!(%reason, "Stream disconnected; polling until it is back");
            stream.up = false;
            status.set_state("polling", Some(format!("stream down: {reason}")));
            let soon = Instant::now() + cfg.poll_interval;
            for a in accounts.iter_mut() {
                a.due = a.due.min(soon);
            }
        }
        StreamEvent::ConnectFailed {
            attempt,
            transport,
            error,
        } => {
            let state = if stream.ever_connected {
                "polling"
            } else {
                "connecting"
            };
            let plural = if attempt == 1 { "" } else { "s" };
            let detail = format!("stream not connected after {attempt} attempt{plural} (last, {}: {error}); polling meanwhile", transport.as_str());
            status.set_state(state, Some(detail));
        }
        StreamEvent::Update(raw) => stream_post(sh, &raw, reader_host, EventKind::Created).await?,
        StreamEvent::StatusUpdate(raw) => {
            stream_post(sh, &raw, reader_host, EventKind::Updated).await?
        }
        StreamEvent::Delete(id) => {
            match sh.log.state_get(IDS_NS, &ids_key(reader_host, &id)).await? {
                Some(v) => {
                    match deleted_event(&sh.name, sh.converter().server_name(reader_host), &id, &v)
                    {
                        Some(ev) if sh.followed.contains(&ev.account) => {
                            sh.emit(SourceBatch {
                                events: vec![ev.into()],
                                state: vec![],
                            })
                            .await?
                        }
                        _ => {}
                    }
                }
                None => {
                    debug!(id = %id, "Delete of a status we never saw; ignored");
                    status.count("deletes_unattributed", 1);
                }
            }
        }
        StreamEvent::Malformed { raw, reason } => sh.malformed(&format!("stream: {reason}"), &raw),
        StreamEvent::Fatal { error } => {
            return Err(src_err(
                error.kind(),
                format!("stream of {reader_host} stopped: {error}"),
            ));
        }
    }
    Ok(())
}
