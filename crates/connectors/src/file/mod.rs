//! The `file` channel: events as JSON Lines, one event per line, with rotation by
//! size or age.
//!
//! Exactly once in the file: every line carries the event's log position
//! (`partition`, `offset`). On open the sink reads its own output (the active
//! file and the newest rotated one), cuts a torn last line left by a crash, and
//! from then on skips records at or below the last position it holds for each
//! partition. The runtime redelivers everything after the last commit, so each
//! event lands in the file once even after `kill -9`.
//!
//! Rotated files are named `<stem>.<UTC time>.<n>.<ext>` next to the active file.
//!
//! Several processes (deliver roles on a Kafka log) write one channel by putting
//! `{worker}` in the path: each writes its own file (`--worker`, default the host
//! name). When partitions move to a process, it reads every worker's files for
//! them and goes on after the last event any of them holds, so a takeover after
//! `kill -9` still writes each event once across the files.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fedistream_core::event::LinePosition;
use fedistream_core::{ErrorKind, LogRecord, Sink, SinkContext, SinkError, Written};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The active file. Its directory is created if missing. `{worker}` in the
    /// file name is replaced by the process's worker name.
    pub path: PathBuf,
    /// Rotate when the active file reaches this many bytes (0 = never).
    #[serde(default = "default_rotate_bytes", with = "fedistream_core::units::size")]
    pub rotate_bytes: u64,
    /// Rotate when the active file is older than this (None = never).
    #[serde(default, with = "fedistream_core::units::opt_duration")]
    pub rotate_age: Option<Duration>,
    /// fsync after every batch (survives power loss, not just crashes).
    #[serde(default)]
    pub fsync: bool,
    #[serde(default)]
    pub delivery: fedistream_core::runtime::DeliveryConfig,
}

fn default_rotate_bytes() -> u64 {
    128 << 20
}

pub struct FileSink {
    /// The config; its path gets `{worker}` resolved on open.
    cfg: FileSinkConfig,
    /// The configured path when it names `{worker}` (other workers' files match it).
    template: Option<PathBuf>,
    /// A write failed and could not be undone: re-read the output before the next one.
    needs_resync: bool,
    out: Option<std::io::BufWriter<File>>,
    size: u64,
    opened_at: DateTime<Utc>,
    /// Highest offset per partition already in the output.
    written: HashMap<u32, u64>,
    rotations: u32,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> SinkError {
    let kind = match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound => ErrorKind::Config,
        _ => ErrorKind::Transient,
    };
    SinkError::new(kind, format!("{what} {}: {e}", path.display()))
}

impl FileSink {
    /// Builds the sink; no I/O until `open`.
    pub fn new(cfg: FileSinkConfig) -> Self {
        let template = cfg.path.to_str().filter(|p| p.contains(WORKER)).map(|_| cfg.path.clone());
        FileSink { cfg, template, needs_resync: false, out: None, size: 0, opened_at: Utc::now(), written: HashMap::new(), rotations: 0 }
    }

    /// Repair a torn last line and find the last position per partition in the
    /// output (the active file and the newest rotated one).
    fn resync(&mut self) -> Result<(), SinkError> {
        self.out = None;
        truncate_torn_tail(&self.cfg.path).map_err(|e| io_err("cannot repair", &self.cfg.path, e))?;
        self.written.clear();
        let mut files = self.rotated_files();
        files.push(self.cfg.path.clone());
        // The active file and the newest rotated one hold the latest positions.
        for f in files.iter().rev().take(2) {
            scan_positions(f, &mut self.written).map_err(|e| io_err("cannot read", f, e))?;
        }
        self.needs_resync = false;
        self.open_active()
    }

    /// Write the lines of the records not in the file yet, and flush.
    fn write_lines(&mut self, batch: &[LogRecord]) -> Result<(), SinkError> {
        let path = self.cfg.path.clone();
        let out = self.out.as_mut().ok_or_else(|| SinkError::new(ErrorKind::Internal, "file not open"))?;
        let mut wrote = false;
        for rec in batch {
            let p = rec.position;
            if self.written.get(&p.partition).is_some_and(|&w| p.offset <= w) {
                continue; // already in the file (redelivery after a crash)
            }
            let n = rec.write_json_line(out).map_err(|e| io_err("cannot write", &path, e))?;
            out.write_all(b"\n").map_err(|e| io_err("cannot write", &path, e))?;
            self.size += n as u64 + 1;
            self.written.insert(p.partition, p.offset);
            wrote = true;
        }
        if wrote {
            out.flush().map_err(|e| io_err("cannot write", &path, e))?;
            if self.cfg.fsync {
                out.get_ref().sync_data().map_err(|e| io_err("cannot sync", &path, e))?;
            }
        }
        Ok(())
    }

    /// After a failed write: cut the file back to its length before the batch
    /// (a write that failed half way, disk full or an I/O error, must not leave
    /// part of the batch, or a torn line, in the middle of the file once later
    /// writes succeed) and forget what the batch recorded as written.
    fn undo(&mut self, size: u64, written: HashMap<u32, u64>) {
        self.size = size;
        self.written = written;
        let Some(out) = self.out.take() else { return };
        // Without flushing what is still buffered: that is the failed batch.
        let (file, _) = out.into_parts();
        match file.set_len(size) {
            Ok(()) => self.out = Some(std::io::BufWriter::with_capacity(256 << 10, file)),
            Err(e) => {
                tracing::warn!(path = %self.cfg.path.display(), error = %e, "Cannot cut the file back after a failed write; re-reading it before the next one");
                self.needs_resync = true;
            }
        }
    }

    /// Every worker's files (active and rotated) for a `{worker}` path.
    fn all_workers_files(&self) -> Vec<PathBuf> {
        let Some(t) = &self.template else { return vec![] };
        let (dir, stem, ext) = split_path(t);
        let Some((before, after)) = stem.split_once(WORKER) else { return vec![] };
        std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        n.starts_with(before) && n.ends_with(&ext) && n[before.len()..].contains(after)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn rotated_files(&self) -> Vec<PathBuf> {
        let (dir, stem, ext) = split_path(&self.cfg.path);
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        n.starts_with(&format!("{stem}.")) && n.ends_with(&ext) && p != &self.cfg.path
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Names embed a sortable UTC time and a counter.
        v.sort();
        v
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        if let Some(mut w) = self.out.take() {
            w.flush().map_err(|e| io_err("cannot flush", &self.cfg.path, e))?;
        }
        let (dir, stem, ext) = split_path(&self.cfg.path);
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let target = loop {
            self.rotations += 1;
            let t = dir.join(format!("{stem}.{stamp}.{:04}{ext}", self.rotations));
            if !t.exists() {
                break t;
            }
        };
        std::fs::rename(&self.cfg.path, &target).map_err(|e| io_err("cannot rotate", &self.cfg.path, e))?;
        tracing::info!(rotated_to = %target.display(), "Rotated output file");
        self.open_active()
    }

    fn open_active(&mut self) -> Result<(), SinkError> {
        let f = OpenOptions::new().create(true).append(true).open(&self.cfg.path).map_err(|e| io_err("cannot open", &self.cfg.path, e))?;
        self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
        self.opened_at = Utc::now();
        self.out = Some(std::io::BufWriter::with_capacity(256 << 10, f));
        Ok(())
    }

    fn needs_rotation(&self) -> bool {
        (self.cfg.rotate_bytes > 0 && self.size >= self.cfg.rotate_bytes)
            || self
                .cfg
                .rotate_age
                .is_some_and(|age| self.size > 0 && Utc::now() - self.opened_at > chrono::Duration::from_std(age).unwrap_or_default())
    }
}

const WORKER: &str = "{worker}";

fn split_path(p: &Path) -> (PathBuf, String, String) {
    let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("events").to_string();
    let ext = p.extension().and_then(|s| s.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
    (dir, stem, ext)
}

/// Cut a torn trailing line (no final newline) left by a crash mid-write.
fn truncate_torn_tail(path: &Path) -> std::io::Result<u64> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Walk back in blocks to the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                tracing::warn!(path = %path.display(), cut_bytes = len - keep, "Removed a partial last line left by an interrupted write");
                f.set_len(keep)?;
            }
            return Ok(keep);
        }
        if start == 0 {
            tracing::warn!(path = %path.display(), "Removed a partial only line left by an interrupted write");
            f.set_len(0)?;
            return Ok(0);
        }
        end = start;
    }
}

/// The highest position per partition in a file of event lines.
fn scan_positions(path: &Path, into: &mut HashMap<u32, u64>) -> std::io::Result<usize> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for line in BufReader::with_capacity(1 << 20, f).lines() {
        let line = line?;
        if let Some(p) = LinePosition::of_line(&line) {
            let e = into.entry(p.partition).or_insert(0);
            *e = (*e).max(p.offset);
            n += 1;
        }
    }
    Ok(n)
}

#[async_trait]
impl Sink for FileSink {
    async fn open(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        if let Some(t) = &self.template {
            let worker = ctx.worker.replace(['/', '\\'], "_");
            self.cfg.path = PathBuf::from(t.to_string_lossy().replace(WORKER, &worker));
        }
        if let Some(dir) = self.cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
        }
        self.resync()?;
        if !self.written.is_empty() {
            tracing::info!(resume_after = ?self.written, "File channel resumes after the last event in its output");
        }
        Ok(())
    }

    async fn partitions_assigned(&mut self, partitions: &[u32]) -> Result<(), SinkError> {
        if self.template.is_none() {
            return Ok(());
        }
        let mut found = HashMap::new();
        for f in self.all_workers_files() {
            scan_positions(&f, &mut found).map_err(|e| io_err("cannot read", &f, e))?;
        }
        for p in partitions {
            if let Some(&o) = found.get(p) {
                let e = self.written.entry(*p).or_insert(0);
                *e = (*e).max(o);
            }
        }
        tracing::info!(partitions = ?partitions, resume_after = ?self.written, "File channel: partitions assigned; resuming after the last event any worker wrote");
        Ok(())
    }

    async fn write(&mut self, batch: &[LogRecord]) -> Result<Written, SinkError> {
        if self.needs_resync {
            self.resync()?;
        }
        if self.out.is_none() {
            self.open_active()?;
        }
        if self.needs_rotation() {
            self.rotate()?;
        }
        let (size, written) = (self.size, self.written.clone());
        if let Err(e) = self.write_lines(batch) {
            self.undo(size, written);
            return Err(e);
        }
        Ok(Written::done())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if let Some(mut w) = self.out.take() {
            w.flush().map_err(|e| io_err("cannot flush", &self.cfg.path, e))?;
            w.get_ref().sync_data().map_err(|e| io_err("cannot sync", &self.cfg.path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
