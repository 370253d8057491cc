//! `fedistream archive compact`: rewrite a posts dataset's older hour
//! directories as current state (the latest version of each post, deleted
//! posts removed), and remove directories older than the retention bound.
//!
//! The switch from the old objects to the new ones is one manifest PUT (see
//! [`crate::manifest`]), in four steps a crash can interrupt anywhere:
//!
//! 1. [`cleanup`]: finish an earlier run — delete the objects its manifest
//!    lists as replaced, and compacted objects of a generation the manifest
//!    never switched to (a run that crashed before its switch).
//! 2. [`Compaction::prepare`]: list the visible objects (the snapshot), read
//!    every post's key and log position, and plan: which directories to
//!    rewrite (their hour ended before `before`), which to expire.
//! 3. [`Compaction::write`]: for each directory and log partition, one object
//!    `part-<partition>-<first>-<last>-g<generation>.parquet` with the kept
//!    rows (possibly none: it still tells the channel which offsets the
//!    directory held). Readers do not see them yet: the manifest's generation
//!    is lower.
//! 4. [`Compaction::switch`]: write the manifest with the new generation and
//!    the snapshot's objects of the rewritten and expired directories as
//!    `replaced`; then [`cleanup`] deletes those.
//!
//! Only objects in the snapshot are ever replaced, so an object the channel
//! stores meanwhile (a late edit of an old post lands in that post's old
//! directory) stays, and its rows stay visible; the next run folds it in.
//! One compaction at a time per dataset: [`compact`] holds the dataset's
//! lease ([`crate::lease`]) from its first step to its last.
//!
//! What is kept, per post (`key`): across every visible object outside the
//! expired directories, its latest event by log position. In a rewritten
//! directory a row stays if it is that latest event and is not a deletion; a
//! deletion stays (as a tombstone) only while an older version of the post
//! remains in a directory not being rewritten. Duplicate rows (the same log
//! position twice) are dropped.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{UInt32Type, UInt64Type};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fedistream_core::{ErrorKind, SinkError};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::Serialize;

use crate::encode::parquet_of_batches;
use crate::layout::{compacted_name, dir_start, parse_part_name, part_generation};
use crate::manifest::Manifest;
use crate::schema::posts_schema;
use crate::store::Archive;

/// What to compact and how to write.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Rewrite the directories whose hour ended at or before this.
    pub before: DateTime<Utc>,
    /// Remove the directories whose hour ended at or before this (retention).
    pub expire_before: Option<DateTime<Utc>>,
    pub row_group_rows: usize,
    pub multipart_threshold: u64,
    pub multipart_part_bytes: u64,
    /// Who runs it (named to a second run, which [`compact`] refuses while
    /// this one holds the dataset's lease, see [`crate::lease`]).
    pub owner: String,
    /// How long the lease holds without being renewed (the run renews it
    /// between its steps; a run that died leaves it this long).
    pub lease: std::time::Duration,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// The manifest's generation after the run.
    pub generation: u64,
    pub dirs_rewritten: usize,
    pub dirs_expired: usize,
    /// Rows in the rewritten directories before and after.
    pub rows_before: u64,
    pub rows_after: u64,
    pub objects_written: usize,
    /// Objects deleted (replaced, expired, or left by an interrupted run).
    pub objects_removed: usize,
}

/// A post's latest event, and whether some event of it lies in a directory
/// that is not rewritten.
#[derive(Debug, Clone, Copy)]
struct KeyState {
    latest: (u32, u64),
    deleted: bool,
    elsewhere: bool,
}

/// A planned run (steps 2 to 4 of the module docs).
#[derive(Debug)]
pub struct Compaction {
    archive: Archive,
    dataset: String,
    opts: CompactOptions,
    manifest: Manifest,
    /// Directories to rewrite, with their visible objects (paths relative to the dataset).
    rewrite: BTreeMap<String, Vec<String>>,
    expire: BTreeMap<String, Vec<String>>,
    keys: HashMap<String, KeyState>,
    /// Objects of the directories actually rewritten (those already compact are left alone).
    replaced: Vec<String>,
    pub report: CompactReport,
}

fn internal(archive: &Archive, what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::new(ErrorKind::Internal, format!("archive {}: {what}: {e}", archive.display))
}

/// An object's bytes, whole.
async fn get_bytes(archive: &Archive, path: &object_store::path::Path) -> Result<Bytes, SinkError> {
    archive.store.get(path).await.map_err(|e| archive.error("read", path, e))?.bytes().await.map_err(|e| archive.error("read", path, e))
}

/// Read a Parquet object, optionally only some columns (by name).
async fn read_object(archive: &Archive, dataset: &str, rel: &str, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>, SinkError> {
    let path = archive.path(&format!("{dataset}/{rel}"));
    let bytes = get_bytes(archive, &path).await?;
    let mut b = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| internal(archive, &format!("{path} is not Parquet"), e))?;
    if let Some(cols) = columns {
        let indices: Vec<usize> =
            cols.iter().map(|c| b.schema().index_of(c)).collect::<Result<_, _>>().map_err(|e| internal(archive, path.as_ref(), e))?;
        let mask = ProjectionMask::roots(b.parquet_schema(), indices);
        b = b.with_projection(mask);
    }
    let reader = b.build().map_err(|e| internal(archive, path.as_ref(), e))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| internal(archive, &format!("reading {path}"), e))
}

/// The rows a reader sees in a Parquet dataset (the visible objects' row
/// counts, from their footers).
pub async fn visible_rows(archive: &Archive, dataset: &str) -> Result<u64, SinkError> {
    let manifest = Manifest::read(archive, dataset).await?;
    let mut rows = 0u64;
    for rel in archive.list(dataset).await? {
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        if !name.ends_with(".parquet") || parse_part_name(name).is_none() || !manifest.visible(&rel) {
            continue;
        }
        let path = archive.path(&format!("{dataset}/{rel}"));
        let bytes = get_bytes(archive, &path).await?;
        let b = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| internal(archive, &format!("{path} is not Parquet"), e))?;
        rows += b.metadata().file_metadata().num_rows() as u64;
    }
    Ok(rows)
}

/// Step 1: finish an earlier run. Returns how many objects it deleted.
pub async fn cleanup(archive: &Archive, dataset: &str) -> Result<usize, SinkError> {
    let mut manifest = Manifest::read(archive, dataset).await?;
    let mut removed = 0;
    let orphans: Vec<String> = archive
        .list(dataset)
        .await?
        .into_iter()
        .filter(|rel| part_generation(rel.rsplit('/').next().unwrap_or(rel)).is_some_and(|g| g > manifest.generation))
        .collect();
    for rel in manifest.replaced.iter().chain(&orphans) {
        let path = archive.path(&format!("{dataset}/{rel}"));
        match archive.store.delete(&path).await {
            Ok(()) => removed += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(archive.error("delete", &path, e)),
        }
    }
    if !manifest.replaced.is_empty() {
        manifest.replaced.clear();
        manifest.write(archive, dataset).await?;
    }
    if removed > 0 {
        tracing::info!(dataset, removed, generation = manifest.generation, "Archive compaction: removed replaced and unswitched objects");
    }
    Ok(removed)
}

impl Compaction {
    /// Steps 1 and 2: finish an earlier run, list, read the keys, plan.
    pub async fn prepare(archive: &Archive, dataset: &str, opts: CompactOptions) -> Result<Compaction, SinkError> {
        let removed = cleanup(archive, dataset).await?;
        let manifest = Manifest::read(archive, dataset).await?;
        let hour = chrono::Duration::hours(1);
        let (mut rewrite, mut expire, mut live) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for rel in archive.list(dataset).await? {
            let Some((dir, name)) = rel.rsplit_once('/') else { continue };
            if !name.ends_with(".parquet") || parse_part_name(name).is_none() || !manifest.visible(&rel) {
                continue;
            }
            let Some(end) = dir_start(dir).map(|s| s + hour) else { continue };
            let target = if opts.expire_before.is_some_and(|b| end <= b) {
                &mut expire
            } else if end <= opts.before {
                &mut rewrite
            } else {
                &mut live
            };
            target.entry(dir.to_string()).or_insert_with(Vec::new).push(rel);
        }
        let mut keys: HashMap<String, KeyState> = HashMap::new();
        for (objects, rewritten) in [(&rewrite, true), (&live, false)] {
            for rel in objects.values().flatten() {
                for b in read_object(archive, dataset, rel, Some(&["log_partition", "log_offset", "kind", "key"])).await? {
                    let (p, o) = (b.column(0).as_primitive::<UInt32Type>(), b.column(1).as_primitive::<UInt64Type>());
                    let (kind, key) = (b.column(2).as_string::<i32>(), b.column(3).as_string::<i32>());
                    for i in 0..b.num_rows() {
                        let pos = (p.value(i), o.value(i));
                        let deleted = kind.value(i) == "deleted";
                        let e = keys.entry(key.value(i).to_string()).or_insert(KeyState { latest: pos, deleted, elsewhere: false });
                        if pos > e.latest {
                            e.latest = pos;
                            e.deleted = deleted;
                        }
                        e.elsewhere |= !rewritten;
                    }
                }
            }
        }
        let report = CompactReport { generation: manifest.generation, objects_removed: removed, ..Default::default() };
        Ok(Compaction {
            archive: archive.clone(),
            dataset: dataset.to_string(),
            opts,
            manifest,
            rewrite,
            expire,
            keys,
            replaced: Vec::new(),
            report,
        })
    }

    /// The generation this run writes.
    pub fn generation(&self) -> u64 {
        self.manifest.generation + 1
    }

    /// Step 3: write the rewritten directories' new objects (invisible until [`Compaction::switch`]).
    pub async fn write(&mut self) -> Result<(), SinkError> {
        let generation = self.generation();
        let rewrite = std::mem::take(&mut self.rewrite);
        for (dir, objects) in &rewrite {
            // Offsets held per log partition (from the names), and whether the directory is compact already.
            let mut ranges: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            let mut compact_already = true;
            for rel in objects {
                let name = rel.rsplit('/').next().unwrap_or(rel);
                let (p, first, last) = parse_part_name(name).expect("listed as a part");
                compact_already &= part_generation(name).is_some() && !ranges.contains_key(&p);
                let r = ranges.entry(p).or_insert((first, last));
                *r = (r.0.min(first), r.1.max(last));
            }
            let mut kept: BTreeMap<u32, Vec<RecordBatch>> = BTreeMap::new();
            let mut seen: HashSet<(u32, u64)> = HashSet::new();
            let (mut before, mut after) = (0u64, 0u64);
            for rel in objects {
                for b in read_object(&self.archive, &self.dataset, rel, None).await? {
                    let (p, o) = (b.column(0).as_primitive::<UInt32Type>(), b.column(1).as_primitive::<UInt64Type>());
                    let key = b.column_by_name("key").ok_or_else(|| internal(&self.archive, rel, "no `key` column"))?.as_string::<i32>();
                    let keep: BooleanArray = (0..b.num_rows())
                        .map(|i| {
                            let pos = (p.value(i), o.value(i));
                            let s = self.keys.get(key.value(i));
                            Some(s.is_some_and(|s| s.latest == pos && (!s.deleted || s.elsewhere)) && seen.insert(pos))
                        })
                        .collect();
                    before += b.num_rows() as u64;
                    let b = arrow::compute::filter_record_batch(&b, &keep).map_err(|e| internal(&self.archive, rel, e))?;
                    after += b.num_rows() as u64;
                    // Split by log partition (one object per partition, as the channel writes).
                    for &part in ranges.keys() {
                        let parts = b.column(0).as_primitive::<UInt32Type>();
                        let mask: BooleanArray = parts.iter().map(|v| Some(v == Some(part))).collect();
                        let sub = arrow::compute::filter_record_batch(&b, &mask).map_err(|e| internal(&self.archive, rel, e))?;
                        if sub.num_rows() > 0 {
                            kept.entry(part).or_default().push(sub);
                        }
                    }
                }
            }
            self.report.rows_before += before;
            self.report.rows_after += after;
            if compact_already && before == after {
                continue; // one compacted object per partition, nothing to drop: leave it
            }
            for (&part, &(first, last)) in &ranges {
                let batches = kept.remove(&part).unwrap_or_default();
                let schema = posts_schema();
                let sorted = sort_by_offset(schema.clone(), &batches).map_err(|e| internal(&self.archive, dir, e))?;
                let bytes = parquet_of_batches(schema, &sorted, self.opts.row_group_rows).map_err(|e| internal(&self.archive, dir, e))?;
                let rel = format!("{dir}/{}", compacted_name(part, first, last, generation, "parquet"));
                let path = self.archive.path(&format!("{}/{rel}", self.dataset));
                self.archive.put(&path, bytes, self.opts.multipart_threshold, self.opts.multipart_part_bytes).await?;
                self.report.objects_written += 1;
            }
            self.replaced.extend(objects.iter().cloned());
            self.report.dirs_rewritten += 1;
        }
        Ok(())
    }

    /// Step 4: switch readers to the new generation (one manifest PUT). What
    /// it replaced is deleted by [`cleanup`] ([`compact`] calls it next).
    /// Nothing to switch (no directory rewritten or expired): the manifest
    /// stays as it is.
    pub async fn switch(mut self) -> Result<CompactReport, SinkError> {
        let expired: Vec<String> = self.expire.values().flatten().cloned().collect();
        self.report.dirs_expired = self.expire.len();
        if self.replaced.is_empty() && expired.is_empty() {
            return Ok(self.report);
        }
        let manifest = Manifest {
            generation: self.generation(),
            replaced: self.replaced.iter().chain(&expired).cloned().collect(),
            switched_at: Some(Utc::now()),
        };
        manifest.write(&self.archive, &self.dataset).await?;
        self.report.generation = manifest.generation;
        tracing::info!(dataset = %self.dataset, generation = manifest.generation, replaced = manifest.replaced.len(),
            "Archive compaction: readers switched to the new generation");
        Ok(self.report)
    }
}

/// Rows in log order (offsets within one partition).
fn sort_by_offset(schema: arrow::datatypes::SchemaRef, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let all = arrow::compute::concat_batches(&schema, batches)?;
    let idx = arrow::compute::sort_to_indices(all.column(1), None, None)?;
    Ok(vec![arrow::compute::take_record_batch(&all, &idx)?])
}

/// Test-only failpoints (builds with the `test-util` feature only): with
/// `FEDISTREAM_FAILPOINT` set to one of these, [`compact`] aborts the process
/// after writing the new objects (before the switch), or after the switch
/// (before deleting what it replaced).
pub const FAILPOINT_AFTER_WRITE: &str = "compact_after_write";
pub const FAILPOINT_AFTER_SWITCH: &str = "compact_after_switch";

fn failpoint(name: &str) {
    if cfg!(feature = "test-util") && std::env::var("FEDISTREAM_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!("Failpoint {name}: aborting");
        std::process::abort();
    }
}

/// The whole run: steps 1 to 4, then the cleanup of what the switch replaced.
/// Holds the dataset's compaction lease throughout (taken first, renewed
/// between steps, released at the end, also after an error): a second run
/// meanwhile fails naming this one.
pub async fn compact(archive: &Archive, dataset: &str, opts: CompactOptions) -> Result<CompactReport, SinkError> {
    let mut lease = crate::lease::acquire(archive, dataset, &opts.owner, opts.lease).await?;
    let result = compact_holding(archive, dataset, opts, &mut lease).await;
    let released = lease.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn compact_holding(
    archive: &Archive,
    dataset: &str,
    opts: CompactOptions,
    lease: &mut crate::lease::LeaseGuard,
) -> Result<CompactReport, SinkError> {
    let mut c = Compaction::prepare(archive, dataset, opts).await?;
    lease.renew().await?;
    c.write().await?;
    failpoint(FAILPOINT_AFTER_WRITE);
    lease.renew().await?;
    let mut report = c.switch().await?;
    failpoint(FAILPOINT_AFTER_SWITCH);
    report.objects_removed += cleanup(archive, dataset).await?;
    Ok(report)
}
