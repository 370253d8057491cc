//! What the reader's stream delivers, handled in the source's loop: connection
//! changes (the status line, catch-ups, reconciliation priority) and the posts,
//! edits and deletes it carries. Posts and edits that arrive together are
//! appended together ([`burst`]); an idle stream appends each at once.

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
        StreamEvent::ConnectFailed { attempt, transport, error } => {
            let state = if stream.ever_connected { "polling" } else { "connecting" };
            let plural = if attempt == 1 { "" } else { "s" };
            let detail =
                format!("stream not connected after {attempt} attempt{plural} (last, {}: {error}); polling meanwhile", transport.as_str());
            status.set_state(state, Some(detail));
        }
        StreamEvent::Update(raw) => stream_posts(sh, vec![(raw, EventKind::Created)], reader_host).await?,
        StreamEvent::StatusUpdate(raw) => stream_posts(sh, vec![(raw, EventKind::Updated)], reader_host).await?,
        StreamEvent::Delete(id) => match sh.log.state_get(IDS_NS, &ids_key(reader_host, &id)).await? {
            Some(v) => match deleted_event(&sh.name, sh.converter().server_name(reader_host), &id, &v) {
                Some(ev) if sh.followed.contains(&ev.account) => sh.emit(SourceBatch { events: vec![ev.into()], state: vec![] }).await?,
                _ => {}
            },
            None => {
                debug!(id = %id, "Delete of a status we never saw; ignored");
                status.count("deletes_unattributed", 1);
            }
        },
        StreamEvent::Malformed { raw, reason } => sh.malformed(&format!("stream: {reason}"), &raw),
        StreamEvent::Fatal { error } => {
            return Err(src_err(error.kind(), format!("stream of {reader_host} stopped: {error}")));
        }
    }
    Ok(())
}

/// The most stream events one append takes.
const MAX_BURST: usize = 512;

/// A post or edit the stream carried: its JSON and what it is.
pub(super) type Posted = (String, EventKind);

/// `first` and the posts and edits already waiting behind it (up to
/// [`MAX_BURST`]), and the first other event met, which ends the burst.
/// Nothing waits for more to arrive.
pub(super) fn burst(first: StreamEvent, rx: &mut tokio::sync::mpsc::Receiver<StreamEvent>) -> (Vec<Posted>, Option<StreamEvent>) {
    let mut burst = Vec::new();
    let mut next = Some(first);
    while let Some(ev) = next.take() {
        match as_post(ev) {
            Ok(p) => burst.push(p),
            Err(other) => return (burst, Some(other)),
        }
        if burst.len() < MAX_BURST {
            next = rx.try_recv().ok();
        }
    }
    (burst, None)
}

fn as_post(ev: StreamEvent) -> Result<Posted, StreamEvent> {
    match ev {
        StreamEvent::Update(raw) => Ok((raw, EventKind::Created)),
        StreamEvent::StatusUpdate(raw) => Ok((raw, EventKind::Updated)),
        other => Err(other),
    }
}

/// Appends the posts and edits of a burst, in stream order, in one batch.
pub(super) async fn stream_posts(sh: &Shared, burst: Vec<Posted>, reader_host: &str) -> Result<(), SourceError> {
    let mut batch = SourceBatch { events: Vec::with_capacity(burst.len()), state: Vec::with_capacity(burst.len()) };
    for (raw, kind) in burst {
        stream_post(sh, &raw, reader_host, kind, &mut batch);
    }
    sh.emit(batch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(n: u32) -> StreamEvent {
        StreamEvent::Update(format!("{{\"id\":\"{n}\"}}"))
    }

    #[test]
    fn a_burst_takes_the_waiting_posts_and_edits_and_stops_at_anything_else() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        for n in 2..=4 {
            tx.try_send(update(n)).unwrap();
        }
        tx.try_send(StreamEvent::StatusUpdate("{\"id\":\"2\"}".into())).unwrap();
        tx.try_send(StreamEvent::Delete("3".into())).unwrap();
        tx.try_send(update(5)).unwrap();

        let (burst, next) = burst(update(1), &mut rx);
        let ids: Vec<(&str, EventKind)> = burst.iter().map(|(raw, k)| (&raw[7..8], *k)).collect();
        use EventKind::{Created, Updated};
        assert_eq!(ids, [("1", Created), ("2", Created), ("3", Created), ("4", Created), ("2", Updated)]);
        assert!(matches!(next, Some(StreamEvent::Delete(ref id)) if id == "3"), "the delete ends the burst, handled after it");

        // The rest: one post, nothing waits behind it.
        let first = rx.try_recv().unwrap();
        let (burst, next) = burst_of(first, &mut rx);
        assert_eq!(burst.len(), 1);
        assert!(next.is_none());

        // A non-post first event is handed back untouched.
        let (burst, next) = burst_of(StreamEvent::Delete("9".into()), &mut rx);
        assert!(burst.is_empty() && matches!(next, Some(StreamEvent::Delete(_))));
    }

    fn burst_of(first: StreamEvent, rx: &mut tokio::sync::mpsc::Receiver<StreamEvent>) -> (Vec<Posted>, Option<StreamEvent>) {
        burst(first, rx)
    }

    #[test]
    fn a_burst_is_bounded() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(MAX_BURST + 10);
        for n in 0..MAX_BURST + 5 {
            tx.try_send(update(n as u32 % 10)).unwrap();
        }
        let first = rx.try_recv().unwrap();
        let (b, next) = burst(first, &mut rx);
        assert_eq!(b.len(), MAX_BURST);
        assert!(next.is_none());
        assert_eq!(rx.len(), 5, "the rest waits for the next append");
    }
}
