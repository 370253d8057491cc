//! One task per processor: a consumer group on its input topic; each batch goes
//! through [`Processor::process`], and its outputs, its state changes and the
//! input position are committed in one transaction ([`Consumer::commit_with`]).
//! Timers ([`Processor::tick`]) commit their outputs without moving the input.
//!
//! A failed commit leaves the processor's in-memory state ahead of what is
//! durable, so the task fails and the supervisor starts it over: a new consumer
//! at the committed position and `open` reloading the committed state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info};

use super::supervise::{Halt, Supervisor};
use super::ProcessorSpec;
use crate::component::{ProcessorContext, ProcessorOutput, Status};
use crate::error::{ComponentError, ErrorKind, LogError, ProcessorError};
use crate::event::Position;
use crate::log::{Commit, Consumer, Log};

pub(super) async fn processor_task(
    log: Arc<dyn Log>,
    mut spec: ProcessorSpec,
    status: Status,
    mut halt: Halt,
) -> Result<(), ComponentError> {
    let mut sup = Supervisor::new(&status, &spec.retry);
    loop {
        let r = run_processor(&log, &mut spec, &status, &mut halt).await;
        if let Some(end) = sup.after(r, &mut halt).await {
            return end;
        }
    }
}

async fn run_processor(log: &Arc<dyn Log>, spec: &mut ProcessorSpec, status: &Status, halt: &mut Halt) -> Result<(), ComponentError> {
    let name = format!("processor:{}", spec.name);
    let log_fail = |e: LogError| ComponentError::new(name.clone(), e.kind(), e.to_string());
    let proc_fail = |e: ProcessorError| ComponentError::new(name.clone(), e.kind, e.message);
    let mut consumer = log.consumer(&spec.input, &spec.group).await.map_err(log_fail)?;
    let ctx = ProcessorContext { name: spec.name.clone(), input: spec.input.clone(), log: log.clone(), status: status.clone() };
    spec.processor.open(&ctx, None).await.map_err(proc_fail)?;
    status.set_state("running", None);
    info!(group = %spec.group, input = %spec.input, "Processor started");
    let tick_every = spec.processor.tick_interval();
    let mut next_tick = tick_every.map(|d| Instant::now() + d);
    loop {
        if halt.stop.is_cancelled() {
            status.set_state("stopped", Some("drain deadline".into()));
            return Ok(());
        }
        if let (Some(at), Some(every)) = (next_tick, tick_every) {
            if Instant::now() >= at {
                next_tick = Some(Instant::now() + every);
                tick(spec, &mut consumer, status, log_fail, proc_fail).await?;
            }
        }
        let draining = halt.draining();
        let wait = if draining {
            Duration::ZERO
        } else {
            let until_tick = next_tick.map(|t| t.saturating_duration_since(Instant::now()));
            until_tick.unwrap_or(Duration::from_millis(250)).min(Duration::from_millis(250))
        };
        let recs = tokio::select! {
            r = consumer.poll(spec.batch.max_records, wait) => r.map_err(log_fail)?,
            _ = halt.stop.cancelled() => continue,
        };
        if let Some(parts) = consumer.take_assignment() {
            // The partitions this process owns changed: state moves with them.
            spec.processor.open(&ctx, Some(&parts)).await.map_err(proc_fail)?;
        }
        if recs.is_empty() {
            if draining {
                // End of a finite run: one last tick, then done.
                tick(spec, &mut consumer, status, log_fail, proc_fail).await?;
                status.set_state("stopped", None);
                return Ok(());
            }
            continue;
        }
        let mut out = ProcessorOutput::default();
        spec.processor.process(&recs, &mut out).map_err(proc_fail)?;
        let upto = last_positions(recs.iter().map(|r| r.position));
        for (pos, reason) in &out.rejected {
            let Some(rec) = recs.iter().find(|r| r.position == *pos) else { continue };
            error!(offset = pos.offset, reason = %reason, "Record the processor cannot use; dead-lettered");
            spec.dead_letter.record(&spec.name, reason, rec).map_err(|io| {
                // Not committed: the batch comes back after the restart.
                ComponentError::new(name.clone(), ErrorKind::Transient, format!("cannot write the dead-letter file: {io}"))
            })?;
            status.count("dead_lettered", 1);
        }
        let produced = out.records.len() as u64;
        consumer.commit_with(Commit { upto, state: out.state, outputs: out.records }).await.map_err(log_fail)?;
        status.count("processed", recs.len() as u64);
        status.count("produced", produced);
        status.saw_event();
    }
}

async fn tick(
    spec: &mut ProcessorSpec,
    consumer: &mut Box<dyn Consumer>,
    status: &Status,
    log_fail: impl Fn(LogError) -> ComponentError,
    proc_fail: impl Fn(ProcessorError) -> ComponentError,
) -> Result<(), ComponentError> {
    let mut out = ProcessorOutput::default();
    spec.processor.tick(chrono::Utc::now(), &mut out).map_err(proc_fail)?;
    if out.records.is_empty() && out.state.is_empty() {
        return Ok(());
    }
    let produced = out.records.len() as u64;
    consumer.commit_with(Commit { upto: vec![], state: out.state, outputs: out.records }).await.map_err(log_fail)?;
    status.count("produced", produced);
    Ok(())
}

fn last_positions(positions: impl Iterator<Item = Position>) -> Vec<Position> {
    let mut m: HashMap<u32, u64> = HashMap::new();
    for p in positions {
        let e = m.entry(p.partition).or_insert(p.offset);
        *e = (*e).max(p.offset);
    }
    m.into_iter().map(|(partition, offset)| Position { partition, offset }).collect()
}
