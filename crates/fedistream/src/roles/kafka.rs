//! The roles' runs on the Kafka log (the `kafka` feature).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fedistream_core::error::LogError;
use fedistream_core::log::Log;
use fedistream_core::runtime::{self, Pipeline, RunSummary, RuntimeOptions};
use fedistream_kafka::assign::Membership;
use fedistream_kafka::log::KafkaLog;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Role;
use crate::config::Config;

/// Run `role` on the Kafka log until `shutdown`, or until a finite run is done
/// (see the module docs). `until_caught_up` (role `deliver`): stop once every
/// channel's group has no lag.
pub async fn run_kafka(
    cfg: &Config,
    log: Arc<KafkaLog>,
    role: Role,
    until_caught_up: bool,
    options: RuntimeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    // Several processes share the log: each keeps its own status documents.
    let options = RuntimeOptions { status_scope: Some(options.worker.replace(['/', '\\'], "_")), ..options };
    // How long the channels may make no progress before a finite run stops
    // waiting for them (the embedded log gives them the drain deadline too).
    let stall = options.drain_deadline;
    let deliver_stop = shutdown.child_token();
    let mut deliver = None;
    if matches!(role, Role::All | Role::Deliver | Role::Process) {
        let channels = if role == Role::Process { vec![] } else { crate::pipeline::channels(cfg)? };
        let processors = if matches!(role, Role::All | Role::Process) { crate::pipeline::processors(cfg)? } else { vec![] };
        let p = Pipeline { log: log.clone(), processors, sources: vec![], channels, options: options.clone(), progress: None };
        deliver = Some(tokio::spawn(runtime::run(p, deliver_stop.clone())));
    }
    let mut summary = RunSummary::default();
    let mut sources_done = false;
    if matches!(role, Role::All | Role::Ingest) {
        let finite = all_finite(cfg)?;
        let s = ingest(cfg, log.clone(), options, shutdown.clone(), finite).await;
        if s.is_err() {
            shutdown.cancel();
        }
        merge(&mut summary, s?);
        sources_done = finite && !shutdown.is_cancelled();
    }
    if let Some(d) = deliver {
        if sources_done || until_caught_up {
            let events = || fedistream_core::log::EVENTS.to_string();
            // Processors of this process (`all`, `process`) and channels (`all`, `deliver`).
            let mut groups: Vec<(String, String)> = Vec::new();
            if matches!(role, Role::All | Role::Process) {
                groups.extend(cfg.processors.keys().map(|p| (crate::pipeline::processor_group(cfg, p), events())));
            }
            if matches!(role, Role::All | Role::Deliver) {
                groups.extend(cfg.channels.keys().map(|c| (crate::pipeline::channel_group(cfg, c), cfg.channel_topic(c))));
            }
            match caught_up(&log, &groups, &shutdown, stall).await {
                CaughtUp::Yes => info!(groups = ?groups, "Every channel has delivered everything in the log; stopping"),
                CaughtUp::Stalled(lagging) => {
                    warn!(
                        lagging = ?lagging, stalled_for = ?stall,
                        "Channels made no progress; stopping without them (their undelivered events go out on the next start)"
                    );
                    if until_caught_up {
                        let what = lagging.iter().map(|(g, l)| format!("{g}: lag {l}")).collect::<Vec<_>>().join(", ");
                        summary.failures.push(fedistream_core::ComponentError::new(
                            "deliver",
                            fedistream_core::ErrorKind::Transient,
                            format!("not caught up, no progress for {stall:?} ({what})"),
                        ));
                    }
                }
                CaughtUp::Shutdown => {}
            }
            deliver_stop.cancel();
        }
        let s = d.await.context("the deliver task failed")?.context("the log failed")?;
        merge(&mut summary, s);
    }
    Ok(summary)
}

/// Whether every configured source is finite (a run of them ends by itself).
fn all_finite(cfg: &Config) -> anyhow::Result<bool> {
    let mut sources = crate::pipeline::sources(cfg, &|_| true)?;
    Ok(!sources.is_empty() && sources.iter_mut().all(|s| s.is_finite()))
}

/// How waiting for the channels ended.
enum CaughtUp {
    /// Every group committed everything in the log.
    Yes,
    /// The groups' lags did not change for the stall time: these still lag.
    Stalled(Vec<(String, u64)>),
    Shutdown,
}

/// Wait until every one of `groups` has no lag: it has committed the end of
/// every partition of the events topic (the channels step over transaction
/// markers when idle, so an idle group reaches 0).
async fn caught_up(log: &KafkaLog, groups: &[(String, String)], shutdown: &CancellationToken, stall: Duration) -> CaughtUp {
    let mut last: Option<Vec<(String, u64)>> = None;
    let mut moved = tokio::time::Instant::now();
    loop {
        match log.group_lags(groups).await {
            Ok(lags) if lags.iter().all(|(_, lag)| *lag == 0) => return CaughtUp::Yes,
            Ok(lags) if last.as_ref() != Some(&lags) => {
                debug!(lags = ?lags, "Waiting for the channels to catch up");
                last = Some(lags);
                moved = tokio::time::Instant::now();
            }
            Ok(_) => {}
            // The log's own operations wait for the cluster; this only counts as no progress.
            Err(e) => warn!(error = %e, "Cannot read the channels' lag; retrying"),
        }
        if moved.elapsed() >= stall {
            return CaughtUp::Stalled(last.unwrap_or_else(|| groups.iter().map(|(g, _)| (g.clone(), u64::MAX)).collect()));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return CaughtUp::Shutdown,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn merge(into: &mut RunSummary, s: RunSummary) {
    for (k, v) in s.log.counters {
        *into.log.counters.entry(k).or_default() += v;
    }
    into.sources.extend(s.sources);
    into.channels.extend(s.channels);
    into.failures.extend(s.failures);
}

/// Follow the accounts of the slots this process holds; restart the sources on
/// every change of the ingest group. The appends of each run are fenced by its
/// assignment: if the group gave the slots away meanwhile (this process was
/// paused or cut off past the session timeout), they are aborted and the run
/// stops; the sources restart from their checkpoints with the next assignment.
/// `finite` (every configured source is): return once the sources of the
/// slots this process holds have finished (at once if they hold none).
async fn ingest(
    cfg: &Config,
    log: Arc<KafkaLog>,
    options: RuntimeOptions,
    shutdown: CancellationToken,
    finite: bool,
) -> anyhow::Result<RunSummary> {
    let membership = Membership::join(log.config(), options.drain_deadline + Duration::from_secs(5))?;
    let mut assignment = membership.watch();
    let mut total = RunSummary::default();
    loop {
        let a = assignment.borrow_and_update().clone();
        // Nothing runs at this point: whatever was revoked has stopped.
        membership.released(a.generation);
        if shutdown.is_cancelled() {
            break;
        }
        // Hold the state of exactly these slots (a revoked slot's leaves
        // memory), and take over what their previous owners recorded
        // (checkpoints, dedup index) before following their accounts.
        log.own_slots(&a.slots).context("reading the state of the ingest slots")?;
        log.catch_up().await.context("reading the state topics before following accounts")?;
        let sources = crate::pipeline::sources(cfg, &|unit| a.owns(unit))?;
        let following: Vec<String> =
            cfg.sources.iter().flat_map(|(name, s)| crate::pipeline::work_units(name, s)).filter(|u| a.owns(u)).collect();
        info!(slots = ?a.slots, following = ?following, "Ingest: following {} of the configured units", following.len());
        if finite && a.assigned && following.is_empty() {
            info!(slots = ?a.slots, "Ingest: no source in this process's slots; its part of the finite run is done");
            break;
        }
        let run_log: Arc<dyn Log> = match &a.fence {
            Some(f) => log.fenced(f.clone()),
            None => log.clone(),
        };
        let run_token = shutdown.child_token();
        let p = Pipeline { log: run_log, processors: vec![], sources, channels: vec![], options: options.clone(), progress: None };
        let mut handle = tokio::spawn(runtime::run(p, run_token.clone()));
        let rejected = async {
            match &a.fence {
                Some(f) => f.rejected().await,
                None => std::future::pending().await,
            }
        };
        let mut finished = None;
        let stop = tokio::select! {
            r = assignment.changed() => if r.is_ok() { Stop::Changed } else { Stop::Shutdown },
            _ = shutdown.cancelled() => Stop::Shutdown,
            _ = rejected => Stop::Fenced,
            // Every source finished (finite sources), or failed.
            r = &mut handle => {
                finished = Some(r);
                Stop::Finished
            }
        };
        run_token.cancel();
        let result = match finished {
            Some(r) => r,
            None => handle.await,
        };
        let fenced = match result.context("the ingest task failed")? {
            Ok(s) => {
                merge(&mut total, s);
                a.fence.as_ref().and_then(|f| f.rejection())
            }
            Err(LogError::Fenced(why)) => Some(why),
            Err(e) => return Err(anyhow::Error::new(e).context("the log failed")),
        };
        if let Some(why) = &fenced {
            warn!(
                slots = ?a.slots,
                reason = %why,
                "Fenced: the ingest group gave this process's slots to another member (it was paused or cut off for longer than \
                 the session timeout, {:?}); its unfinished appends were aborted, so nothing of them is stored. Stopping its \
                 sources; they resume from their checkpoints with the group's next assignment",
                log.config().session_timeout
            );
        }
        if matches!(stop, Stop::Shutdown) || shutdown.is_cancelled() {
            break;
        }
        if finite && matches!(stop, Stop::Finished) && fenced.is_none() {
            // Every source of these slots finished and its appends are stored.
            break;
        }
        if !matches!(stop, Stop::Changed) {
            // Fenced, or done: keep the membership until the group changes
            // (for a fenced process it already has, or does at its next
            // heartbeat) or the process is stopped.
            tokio::select! {
                r = assignment.changed() => if r.is_err() { break },
                _ = shutdown.cancelled() => break,
            }
        }
        if matches!(stop, Stop::Changed) && fenced.is_none() {
            warn!("Ingest group changed: restarting sources with the new accounts");
        }
    }
    Ok(total)
}

/// Why an ingest run ended.
enum Stop {
    /// The group changed the assignment.
    Changed,
    /// An append was fenced off: the assignment is gone.
    Fenced,
    /// Every source stopped by itself.
    Finished,
    Shutdown,
}
