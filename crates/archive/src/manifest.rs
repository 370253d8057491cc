//! A dataset's manifest (`<dataset>/_manifest.json`): which objects readers
//! see, so that `fedistream archive compact` switches a reader from the old
//! objects to the new ones in one step (see `schemas/archive-parquet.md`,
//! "Compaction").
//!
//! * `generation` N: the last compaction that completed its switch. Objects a
//!   compaction writes carry its generation in their names
//!   (`part-…-g<N>.parquet`, [`crate::layout::compacted_name`]); those of a
//!   generation above the manifest's are not yet (or never, after a crash)
//!   switched to, and readers skip them.
//! * `replaced`: the objects generation N replaced. Readers skip them; the
//!   compaction deletes them after the switch (or the next run does, after a
//!   crash) and then empties the list.
//!
//! No manifest: generation 0, nothing replaced (an archive never compacted).
//! The manifest is one small object written with one PUT, which a store
//! makes visible atomically.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use fedistream_core::{ErrorKind, SinkError};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};
use serde::{Deserialize, Serialize};

use crate::layout::part_generation;
use crate::store::Archive;

/// The manifest's name inside a dataset directory.
pub const MANIFEST: &str = "_manifest.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub generation: u64,
    /// Objects (paths relative to the dataset) the current generation replaced.
    #[serde(default)]
    pub replaced: BTreeSet<String>,
    /// When the current generation was switched to.
    #[serde(default)]
    pub switched_at: Option<DateTime<Utc>>,
}

impl Manifest {
    /// The dataset's manifest; the default when it has none.
    pub async fn read(archive: &Archive, dataset: &str) -> Result<Manifest, SinkError> {
        let path = archive.path(&format!("{dataset}/{MANIFEST}"));
        let bytes = match archive.store.get(&path).await {
            Ok(r) => r.bytes().await.map_err(|e| archive.error("read", &path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(Manifest::default()),
            Err(e) => return Err(archive.error("read", &path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            SinkError::new(ErrorKind::Config, format!("archive {}: {path} is not a fedistream manifest: {e}", archive.display))
        })
    }

    /// Store the manifest (one PUT: readers see the old one or this one).
    pub async fn write(&self, archive: &Archive, dataset: &str) -> Result<(), SinkError> {
        let path = archive.path(&format!("{dataset}/{MANIFEST}"));
        let json = serde_json::to_vec_pretty(self).map_err(|e| SinkError::new(ErrorKind::Internal, e.to_string()))?;
        archive.store.put(&path, PutPayload::from(Bytes::from(json))).await.map_err(|e| archive.error("write", &path, e))?;
        Ok(())
    }

    /// Whether readers see the object at `rel` (its path below the dataset).
    pub fn visible(&self, rel: &str) -> bool {
        if self.replaced.contains(rel) {
            return false;
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        part_generation(name).is_none_or(|g| g <= self.generation)
    }
}

/// An object store that hides what the datasets' manifests say readers must
/// not see (for `fedistream sql`, whose DataFusion tables list through it).
/// Each rule is a dataset's path in the store (`prefix/posts`) and its manifest.
#[derive(Debug)]
pub struct VisibleStore {
    inner: Arc<dyn ObjectStore>,
    rules: Arc<Vec<(String, Manifest)>>,
}

impl VisibleStore {
    pub fn new(inner: Arc<dyn ObjectStore>, rules: Vec<(String, Manifest)>) -> Self {
        VisibleStore { inner, rules: Arc::new(rules) }
    }
}

fn visible_in(rules: &[(String, Manifest)], location: &Path) -> bool {
    let loc = location.as_ref();
    rules.iter().all(|(base, m)| match loc.strip_prefix(base.as_str()).and_then(|r| r.strip_prefix('/')) {
        Some(rel) => m.visible(rel),
        None => true,
    })
}

impl std::fmt::Display for VisibleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VisibleStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for VisibleStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, object_store::Result<Path>>) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let rules = self.rules.clone();
        self.inner.list(prefix).try_filter(move |m| futures::future::ready(visible_in(&rules, &m.location))).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects.retain(|m| visible_in(&self.rules, &m.location));
        Ok(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_skip_replaced_objects_and_later_generations() {
        let mut m = Manifest { generation: 2, ..Default::default() };
        m.replaced.insert("date=2026-12-07/hour=08/part-0-1-5.parquet".into());
        assert!(!m.visible("date=2026-12-07/hour=08/part-0-1-5.parquet"));
        assert!(m.visible("date=2026-12-07/hour=08/part-0-6-9.parquet"));
        assert!(m.visible("date=2026-12-07/hour=08/part-0-1-5-g2.parquet"));
        assert!(!m.visible("date=2026-12-07/hour=08/part-0-1-5-g3.parquet"));
        assert!(m.visible(MANIFEST));
        assert!(Manifest::default().visible("date=2026-12-07/hour=08/part-0-1-5.parquet"));
    }
}
