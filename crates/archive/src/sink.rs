//! The `archive` channel: buffers records and writes them out as objects
//! (one per Hive directory and log partition) by size or age, acknowledging
//! them to the runtime only once the store holds them.
//!
//! * `write` buffers and answers [`Written::Pending`]; `tick` writes the buffer
//!   out once its oldest record reaches `max_file_age` (so a quiet account's
//!   last post arrives within that bound); `flush` (drain, end of a finite run)
//!   writes everything out.
//! * A write-out *seals* the buffer: the objects are encoded once, then
//!   uploaded; a failed upload is retried (the runtime's backoff) with exactly
//!   the same objects, names and bytes, before anything newer. Records that
//!   arrive meanwhile wait in a new buffer. A write-out by size runs in the
//!   background (one at a time), so the channel keeps reading the log while
//!   the objects are encoded and stored; by age and at `flush`, it is awaited.
//! * Names are deterministic from log positions, and `open` lists what the
//!   archive holds: records redelivered after a crash (uploaded, not committed)
//!   are recognised and skipped, so a reader never sees a row twice.
//!   See [`crate::layout::Held::holds`] for why a listing is enough.
//!
//! Test-only failpoint (builds with the `test-util` feature only): with
//! `FEDISTREAM_FAILPOINT=archive_after_upload` in the environment (read in
//! `open`), the process aborts right after objects are stored and before they
//! are acknowledged: the crash window the deterministic names cover.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fedistream_core::{Acker, ErrorKind, LogRecord, Position, Sink, SinkContext, SinkError, Written};

use crate::config::ArchiveSinkConfig;
use crate::encode::{encode, same_records, Encoding};
use crate::layout::{hive_dir, part_name, Held, Layout};
use crate::schema::event_time;
use crate::store::Archive;

/// Buffered records per (directory, log partition), in log order.
type Groups = BTreeMap<(String, u32), Vec<LogRecord>>;

/// What a background write-out hands back: its objects (none when encoding
/// failed), and whether they are all stored.
type WriteOut = (Option<Sealed>, Result<(), SinkError>);

/// Objects ready to upload, and the positions they make durable.
struct Sealed {
    objects: Vec<(String, Bytes)>,
    /// Which objects are stored (a retry uploads the others).
    stored: Vec<bool>,
    upto: HashMap<u32, u64>,
}

pub struct ArchiveSink {
    cfg: ArchiveSinkConfig,
    archive: Option<Archive>,
    dataset: String,
    events: bool,
    acks: Acker,
    held: Held,
    /// The posts dataset's directories (the config's `partition_by`).
    layout: Layout,
    /// Buffered records per (directory, log partition), in log order.
    buffer: Groups,
    buffered_bytes: u64,
    buffered_since: Option<Instant>,
    sealed: Option<Sealed>,
    /// A write-out by size running in the background (encoding, then
    /// uploading) while the channel buffers what comes next; at most one.
    running: Option<tokio::task::JoinHandle<WriteOut>>,
    /// The highest position given to the sink per partition (buffered, stored or skipped).
    seen: HashMap<u32, u64>,
    /// The highest position acknowledged as durable per partition.
    durable: HashMap<u32, u64>,
    failpoint: bool,
}

/// Objects of one write-out uploaded at once.
const UPLOADS: usize = 8;

/// The failpoint name (see the module docs).
pub const FAILPOINT_AFTER_UPLOAD: &str = "archive_after_upload";

impl ArchiveSink {
    /// Builds the sink; no I/O until `open`.
    pub fn new(cfg: ArchiveSinkConfig) -> Self {
        let layout = cfg.layout();
        ArchiveSink {
            cfg,
            archive: None,
            dataset: String::new(),
            events: true,
            acks: Acker::detached(),
            held: Held::default(),
            layout,
            buffer: BTreeMap::new(),
            buffered_bytes: 0,
            buffered_since: None,
            sealed: None,
            running: None,
            seen: HashMap::new(),
            durable: HashMap::new(),
            failpoint: false,
        }
    }

    fn archive(&self) -> Result<&Archive, SinkError> {
        self.archive.as_ref().ok_or_else(|| SinkError::new(ErrorKind::Internal, "archive channel used before open"))
    }

    /// Read what the archive holds for this dataset.
    async fn relist(&mut self) -> Result<(), SinkError> {
        let archive = self.archive()?.clone();
        let mut held = Held::default();
        for rel in archive.list(&self.dataset).await? {
            held.add(&rel);
        }
        self.held = held;
        Ok(())
    }

    /// The directory of a record, or why it cannot be archived.
    fn dir_of(&self, rec: &LogRecord) -> Result<String, String> {
        if self.events {
            rec.event().map(|ev| self.layout.dir(event_time(ev), &ev.instance, &ev.account)).map_err(|e| e.to_string())
        } else {
            serde_json::from_str::<serde::de::IgnoredAny>(&rec.payload).map_err(|e| format!("not JSON: {e}"))?;
            Ok(hive_dir(rec.appended_at))
        }
    }

    /// Take the buffer for a write-out: the groups, and the positions they make durable.
    fn take_buffer(&mut self) -> (Groups, HashMap<u32, u64>) {
        let groups = std::mem::take(&mut self.buffer);
        self.buffered_bytes = 0;
        self.buffered_since = None;
        let mut upto: HashMap<u32, u64> = HashMap::new();
        for ((_, p), recs) in &groups {
            if let Some(last) = recs.last() {
                let e = upto.entry(*p).or_insert(last.position.offset);
                *e = (*e).max(last.position.offset);
            }
        }
        (groups, upto)
    }

    /// What a write-out task needs besides the records.
    fn writer(&self) -> Result<Writer, SinkError> {
        Ok(Writer {
            archive: self.archive()?.clone(),
            enc: Encoding { format: self.cfg.format, gzip: self.cfg.gzip, row_group_rows: self.cfg.row_group_rows, events: self.events },
            ext: self.cfg.extension(),
            dataset: self.dataset.clone(),
            threshold: self.cfg.multipart_threshold,
            part: self.cfg.multipart_part_bytes,
            failpoint: self.failpoint,
        })
    }

    /// Start writing the buffer out in the background (nothing else may be
    /// running or waiting for a retry). The task acknowledges what it stored.
    fn start_write_out(&mut self) -> Result<(), SinkError> {
        debug_assert!(self.running.is_none() && self.sealed.is_none());
        if self.buffer.is_empty() {
            return Ok(());
        }
        let w = self.writer()?;
        let (groups, upto) = self.take_buffer();
        let acks = self.acks.clone();
        self.running = Some(tokio::spawn(async move {
            let objects = match w.encode(groups).await {
                Ok(o) => o,
                Err(e) => return (None, Err(e)),
            };
            let mut sealed = Sealed { stored: vec![false; objects.len()], objects, upto };
            let stored = w.upload(&mut sealed).await;
            if stored.is_ok() {
                let positions = sealed.upto.iter().map(|(&partition, &offset)| Position { partition, offset }).collect();
                acks.durable(positions, Vec::new());
            }
            (Some(sealed), stored)
        }));
        Ok(())
    }

    /// Collect the background write-out once it ended (`wait`: wait for it).
    /// A failed upload stays sealed for [`ArchiveSink::upload_sealed`] to retry.
    async fn finish_running(&mut self, wait: bool) -> Result<(), SinkError> {
        let Some(handle) = self.running.as_mut() else { return Ok(()) };
        if !wait && !handle.is_finished() {
            return Ok(());
        }
        let result = handle.await;
        self.running = None;
        match result {
            Ok((sealed, Ok(()))) => {
                // The task acknowledged `upto`; the rest given meanwhile may be durable too (skipped records).
                for (&p, &o) in sealed.iter().flat_map(|s| &s.upto) {
                    let d = self.durable.entry(p).or_insert(o);
                    *d = (*d).max(o);
                }
                if self.buffer.is_empty() {
                    self.acknowledge(self.seen.clone());
                }
                Ok(())
            }
            Ok((sealed, Err(e))) => {
                self.sealed = sealed;
                Err(e)
            }
            Err(e) => Err(SinkError::new(ErrorKind::Internal, format!("archive write-out task failed: {e}"))),
        }
    }

    /// Upload what is sealed (a failed write-out, retried), then acknowledge it.
    async fn upload_sealed(&mut self) -> Result<(), SinkError> {
        if self.sealed.is_none() {
            return Ok(());
        }
        let w = self.writer()?;
        let sealed = self.sealed.as_mut().expect("checked above");
        w.upload(sealed).await?;
        let sealed = self.sealed.take().expect("checked above");
        // Once nothing is buffered, everything seen is durable (skipped records included).
        let upto = if self.buffer.is_empty() { self.seen.clone() } else { sealed.upto };
        self.acknowledge(upto);
        Ok(())
    }

    fn acknowledge(&mut self, upto: HashMap<u32, u64>) {
        let mut positions = Vec::new();
        for (p, o) in upto {
            if self.durable.get(&p).is_none_or(|&d| d < o) {
                self.durable.insert(p, o);
                positions.push(Position { partition: p, offset: o });
            }
        }
        if !positions.is_empty() {
            self.acks.durable(positions, Vec::new());
        }
    }

    /// Write out the buffer now and wait for it (after what runs or waits for a retry).
    async fn write_out(&mut self) -> Result<(), SinkError> {
        self.finish_running(true).await?;
        self.upload_sealed().await?;
        self.start_write_out()?;
        self.finish_running(true).await
    }

    fn age_reached(&self) -> bool {
        self.buffered_since.is_some_and(|t| t.elapsed() >= self.cfg.max_file_age)
    }
}

#[async_trait]
impl Sink for ArchiveSink {
    async fn open(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        // A reopen drops what was buffered and not acknowledged: the runtime delivers it again.
        self.buffer.clear();
        self.buffered_bytes = 0;
        self.buffered_since = None;
        self.sealed = None;
        if let Some(h) = self.running.take() {
            h.abort(); // what it stored is found by the listing below; the rest comes again
        }
        self.seen.clear();
        self.durable.clear();
        self.acks = ctx.acks.clone();
        // Only in builds with test code (`test-util`): it aborts the process.
        self.failpoint = cfg!(feature = "test-util") && std::env::var("FEDISTREAM_FAILPOINT").is_ok_and(|v| v == FAILPOINT_AFTER_UPLOAD);
        self.events = ctx.topic == fedistream_core::log::EVENTS;
        self.dataset = self.cfg.dataset_for(&ctx.topic);
        if self.archive.is_none() {
            self.archive = Some(Archive::open(&self.cfg)?);
        }
        // Also the check that the bucket exists and the credentials work.
        self.relist().await?;
        tracing::info!(archive = %self.archive()?.display, dataset = %self.dataset, objects = self.held.objects(),
            format = ?self.cfg.format, "Archive channel opened");
        Ok(())
    }

    async fn partitions_assigned(&mut self, partitions: &[u32]) -> Result<(), SinkError> {
        // Another worker may have written these partitions' objects.
        self.relist().await?;
        tracing::info!(partitions = ?partitions, objects = self.held.objects(), "Archive channel: partitions assigned; archive re-read");
        Ok(())
    }

    async fn write(&mut self, batch: &[LogRecord]) -> Result<Written, SinkError> {
        let mut all_durable = true;
        for rec in batch {
            let Position { partition: p, offset: o } = rec.position;
            if self.seen.get(&p).is_some_and(|&s| o <= s) {
                // Given before (the runtime retries a write that failed below).
                all_durable &= self.durable.get(&p).is_some_and(|&d| o <= d);
                continue;
            }
            self.seen.insert(p, o);
            let dir = match self.dir_of(rec) {
                Ok(d) => d,
                Err(reason) => {
                    self.acks.reject(rec.position, format!("cannot archive this record: {reason}"));
                    all_durable = false;
                    continue;
                }
            };
            if self.held.holds(&dir, p, o) {
                continue; // already in the archive (redelivered after a crash)
            }
            all_durable = false;
            self.buffered_bytes += rec.payload.len() as u64;
            self.buffered_since.get_or_insert_with(Instant::now);
            self.buffer.entry((dir, p)).or_default().push(rec.clone());
        }
        if all_durable && self.buffer.is_empty() && self.sealed.is_none() && self.running.is_none() {
            return Ok(Written::done());
        }
        // A write-out that ended: collect it (a failed one is retried next, before anything newer).
        self.finish_running(false).await?;
        self.upload_sealed().await?;
        if self.buffered_bytes >= self.cfg.max_file_bytes {
            // In the background, so the channel keeps reading while the objects are encoded and
            // stored; one at a time (a second waits for the first: back-pressure).
            self.finish_running(true).await?;
            self.start_write_out()?;
        }
        if self.buffer.is_empty() && self.sealed.is_none() && self.running.is_none() {
            // Everything given is stored (or skipped): acknowledge the lot.
            self.acknowledge(self.seen.clone());
        }
        Ok(Written::Pending)
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some((self.cfg.max_file_age / 5).clamp(Duration::from_millis(20), Duration::from_secs(10)))
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        self.finish_running(false).await?;
        if self.sealed.is_some() || (self.age_reached() && self.running.is_none()) {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.write_out().await?;
        // Records skipped or rejected after the last object count as durable too.
        if self.buffer.is_empty() && self.sealed.is_none() && self.running.is_none() {
            self.acknowledge(self.seen.clone());
        }
        Ok(())
    }
}

/// The parts of a write-out that run without the sink: encoding and uploading.
struct Writer {
    archive: Archive,
    enc: Encoding,
    ext: &'static str,
    dataset: String,
    threshold: u64,
    part: u64,
    failpoint: bool,
}

impl Writer {
    /// Encode the groups into objects with their final names, in the groups'
    /// order (on blocking threads: Parquet encoding is CPU work). A write-out
    /// holds one group per directory and log partition, often hundreds: they
    /// are encoded on up to one thread per core, each taking the next group
    /// (so a write-out awaited at `flush` or by age does not leave cores idle).
    async fn encode(&self, groups: Groups) -> Result<Vec<(String, Bytes)>, SinkError> {
        let (enc, ext, dataset) = (self.enc, self.ext, self.dataset.clone());
        tokio::task::spawn_blocking(move || -> Result<Vec<(String, Bytes)>, String> {
            use std::sync::atomic::{AtomicUsize, Ordering};
            let groups: Vec<((String, u32), Vec<LogRecord>)> = groups.into_iter().collect();
            type Encoded = Result<(String, Bytes), String>;
            let one = |i: usize| -> Encoded {
                let ((dir, p), recs) = &groups[i];
                let (first, last) = (recs[0].position.offset, recs[recs.len() - 1].position.offset);
                let bytes = encode(enc, recs)?;
                Ok((format!("{dataset}/{dir}/{}", part_name(*p, first, last, ext)), bytes))
            };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(groups.len());
            if threads <= 1 {
                return (0..groups.len()).map(one).collect();
            }
            let next = AtomicUsize::new(0);
            let work = || {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= groups.len() {
                        return done;
                    }
                    done.push((i, one(i)));
                }
            };
            let mut results: Vec<(usize, Encoded)> = std::thread::scope(|s| {
                let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
                let mut all = work();
                for h in helpers {
                    all.extend(h.join().unwrap_or_else(|_| vec![(usize::MAX, Err("an encoding thread panicked".to_string()))]));
                }
                all
            });
            results.sort_unstable_by_key(|(i, _)| *i);
            results.into_iter().map(|(_, r)| r).collect()
        })
        .await
        .map_err(|e| SinkError::new(ErrorKind::Internal, format!("encoding task failed: {e}")))?
        .map_err(|e| SinkError::new(ErrorKind::Internal, format!("cannot encode records: {e}")))
    }

    /// Store the sealed objects not stored yet (the same names and bytes on a
    /// retry), `UPLOADS` at a time: a seal holds one object per directory and
    /// log partition, often many small ones, and one request at a time would
    /// wait for the store's round trips. Their order does not matter (see the
    /// module docs: a redelivery completes a seal interrupted anywhere).
    async fn upload(&self, sealed: &mut Sealed) -> Result<(), SinkError> {
        use futures::StreamExt;
        let pending: Vec<usize> = (0..sealed.objects.len()).filter(|&i| !sealed.stored[i]).collect();
        let objects = &sealed.objects;
        let mut results = futures::stream::iter(pending)
            .map(|i| async move {
                let (rel, bytes) = &objects[i];
                let path = self.archive.path(rel);
                let started = Instant::now();
                let r = self.archive.put_if_absent(&path, bytes.clone(), self.threshold, self.part, same_records).await;
                tracing::debug!(object = %path, bytes = bytes.len(), took_ms = started.elapsed().as_millis() as u64, ok = r.is_ok(), "Archive object stored");
                (i, r)
            })
            .buffer_unordered(UPLOADS);
        let mut first_err = None;
        let mut done = Vec::new();
        while let Some((i, r)) = results.next().await {
            match r {
                Ok(()) => done.push(i),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        drop(results);
        for i in done {
            sealed.stored[i] = true;
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if self.failpoint {
            tracing::error!("Failpoint {FAILPOINT_AFTER_UPLOAD}: aborting after the upload, before the acknowledgement");
            std::process::abort();
        }
        Ok(())
    }
}

impl std::fmt::Debug for ArchiveSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSink").field("dataset", &self.dataset).field("format", &self.cfg.format).finish()
    }
}
