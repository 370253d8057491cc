//! The object store behind an archive: a local directory or an S3-compatible
//! bucket, through one `object_store` client, with errors that name the bucket
//! and endpoint (never a secret) and say whether retrying helps.
//!
//! The client's own retries are kept short (two, within 10 s): the channel's
//! runtime retries with its backoff, and the channel's status shows it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fedistream_core::{ErrorKind, SinkError};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::config::{ArchiveSinkConfig, Location};

/// An opened archive location: the store, the prefix inside it, and how to name it in messages.
#[derive(Clone, Debug)]
pub struct Archive {
    pub store: Arc<dyn ObjectStore>,
    /// The prefix below which datasets live (empty for a local directory's root).
    pub prefix: Path,
    /// `s3://bucket/prefix at http://endpoint` or `/abs/dir`: what errors name.
    pub display: String,
    pub bucket: Option<String>,
    pub endpoint: String,
    pub local_root: Option<std::path::PathBuf>,
}

fn env_var(name: &str, key: &str) -> Result<String, SinkError> {
    std::env::var(name).map_err(|_| SinkError::new(ErrorKind::Config, format!("{key}: the env var `{name}` is not set")))
}

/// Keys from an AWS shared credentials file.
struct SharedCredentials {
    key_id: String,
    secret: String,
    token: Option<String>,
}

/// The profile's keys from `AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`.
/// `None` when there is no file, or (profile not named in the config) the
/// file lacks the profile; an error when the config names a profile the file
/// lacks, or the profile lacks a key. Errors name the file, profile and key,
/// never a value.
fn shared_credentials(named: Option<&str>) -> Result<Option<SharedCredentials>, SinkError> {
    let path = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(h) => std::path::PathBuf::from(h).join(".aws/credentials"),
            None => return Ok(None),
        },
    };
    let profile = named.map(str::to_owned).or_else(|| std::env::var("AWS_PROFILE").ok()).unwrap_or_else(|| "default".into());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && named.is_none() => return Ok(None),
        Err(e) => return Err(SinkError::new(ErrorKind::Config, format!("profile `{profile}`: cannot read {}: {e}", path.display()))),
    };
    let mut section = String::new();
    let mut found = false;
    let mut keys: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            found |= section == profile;
        } else if section == profile {
            if let Some((k, v)) = line.split_once('=') {
                keys.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    if !found {
        if named.is_none() {
            return Ok(None);
        }
        return Err(SinkError::new(ErrorKind::Config, format!("profile: {} has no profile `[{profile}]`", path.display())));
    }
    let mut key = |k: &str| {
        keys.remove(k).ok_or_else(|| SinkError::new(ErrorKind::Config, format!("profile `{profile}` in {}: no `{k}`", path.display())))
    };
    let (key_id, secret) = (key("aws_access_key_id")?, key("aws_secret_access_key")?);
    Ok(Some(SharedCredentials { key_id, secret, token: keys.remove("aws_session_token") }))
}

impl Archive {
    /// Build the client (no request yet; a local directory is created).
    pub fn open(cfg: &ArchiveSinkConfig) -> Result<Archive, SinkError> {
        let loc = Location::of(cfg).map_err(|e| SinkError::new(ErrorKind::Config, e))?;
        match loc {
            Location::Local(dir) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| SinkError::new(io_kind(&e), format!("cannot create the archive directory {}: {e}", dir.display())))?;
                let abs = std::fs::canonicalize(&dir)
                    .map_err(|e| SinkError::new(io_kind(&e), format!("archive directory {}: {e}", dir.display())))?;
                let fs = LocalFileSystem::new_with_prefix(&abs)
                    .map_err(|e| SinkError::new(ErrorKind::Config, format!("archive directory {}: {e}", abs.display())))?;
                Ok(Archive {
                    store: Arc::new(fs),
                    prefix: Path::default(),
                    display: abs.display().to_string(),
                    bucket: None,
                    endpoint: abs.display().to_string(),
                    local_root: Some(abs),
                })
            }
            Location::S3 { bucket, prefix } => {
                // The AWS env chain first (AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT, …), then the config.
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_virtual_hosted_style_request(!cfg.path_style)
                    .with_allow_http(cfg.allow_http)
                    .with_retry(RetryConfig { max_retries: 2, retry_timeout: Duration::from_secs(10), ..Default::default() })
                    .with_client_options(
                        ClientOptions::new()
                            .with_allow_http(cfg.allow_http)
                            .with_timeout(cfg.request_timeout)
                            .with_connect_timeout(Duration::from_secs(5)),
                    );
                if let Some(e) = &cfg.endpoint {
                    b = b.with_endpoint(e);
                }
                let region = cfg.region.clone().or_else(|| std::env::var("AWS_REGION").ok()).unwrap_or_else(|| "us-east-1".into());
                b = b.with_region(region);
                if let (Some(id), Some(secret)) = (&cfg.access_key_id_env, &cfg.secret_access_key_env) {
                    b = b
                        .with_access_key_id(env_var(id, "access_key_id_env")?)
                        .with_secret_access_key(env_var(secret, "secret_access_key_env")?);
                } else if cfg.profile.is_some() || std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                    if let Some(c) = shared_credentials(cfg.profile.as_deref())? {
                        b = b.with_access_key_id(c.key_id).with_secret_access_key(c.secret);
                        if let Some(t) = c.token {
                            b = b.with_token(t);
                        }
                    }
                }
                let endpoint = cfg.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT").ok()).unwrap_or_else(|| "AWS S3".into());
                let display = format!("s3://{bucket}/{prefix} at {endpoint}");
                // The builder's errors name options, never their values.
                let store = b.build().map_err(|e| SinkError::new(ErrorKind::Config, format!("archive {display}: {e}")))?;
                Ok(Archive {
                    store: Arc::new(store),
                    prefix: Path::from(prefix),
                    display,
                    bucket: Some(bucket),
                    endpoint,
                    local_root: None,
                })
            }
        }
    }

    /// The path of `rel` (slash-separated) below the prefix.
    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// Every object below `rel`, as paths relative to it.
    pub async fn list(&self, rel: &str) -> Result<Vec<String>, SinkError> {
        let base = self.path(rel);
        let metas: Vec<_> = self.store.list(Some(&base)).try_collect().await.map_err(|e| self.error("list", &base, e))?;
        let base = base.to_string();
        Ok(metas
            .into_iter()
            .map(|m| {
                let s = m.location.to_string();
                s.strip_prefix(&base).unwrap_or(&s).trim_start_matches('/').to_string()
            })
            .collect())
    }

    /// Store `data` at `path`, visible only once complete: one request below
    /// `threshold` bytes, a multipart upload (aborted on failure) above.
    pub async fn put(&self, path: &Path, data: Bytes, threshold: u64, part: u64) -> Result<(), SinkError> {
        if (data.len() as u64) < threshold {
            self.store.put(path, PutPayload::from(data)).await.map_err(|e| self.error("write", path, e))?;
            return Ok(());
        }
        let mut upload = self.store.put_multipart(path).await.map_err(|e| self.error("start a multipart upload of", path, e))?;
        let mut parts = 0;
        let result = async {
            for chunk in data.chunks(part as usize) {
                upload.put_part(PutPayload::from(data.slice_ref(chunk))).await?;
                parts += 1;
            }
            upload.complete().await
        }
        .await;
        match result {
            Ok(_) => {
                tracing::debug!(path = %path, parts, "Multipart upload complete");
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(path = %path, error = %abort, "Cannot abort a failed multipart upload; the store's lifecycle rules must remove it");
                }
                Err(self.error("upload", path, e))
            }
        }
    }

    /// [`Archive::put`], but never over an existing object: a single PUT with
    /// `PutMode::Create` (atomic on a local disk and on S3/MinIO, `If-None-Match: *`);
    /// a multipart upload after a HEAD finds nothing (S3 cannot complete a
    /// multipart upload conditionally through `object_store`). If an object
    /// of that name exists, `ours` decides whether it holds what we would
    /// write (then the put counts as done) or not (an error naming it).
    pub async fn put_if_absent(
        &self,
        path: &Path,
        data: Bytes,
        threshold: u64,
        part: u64,
        ours: impl Fn(&Bytes, &Bytes) -> bool,
    ) -> Result<(), SinkError> {
        let exists = if (data.len() as u64) < threshold {
            let opts = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
            match self.store.put_opts(path, PutPayload::from(data.clone()), opts).await {
                Ok(_) => return Ok(()),
                Err(object_store::Error::AlreadyExists { .. }) => true,
                Err(e) => return Err(self.error("write", path, e)),
            }
        } else {
            match self.store.head(path).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(self.error("look up", path, e)),
            }
        };
        if !exists {
            return self.put(path, data, threshold, part).await;
        }
        let existing =
            self.store.get(path).await.map_err(|e| self.error("read", path, e))?.bytes().await.map_err(|e| self.error("read", path, e))?;
        if ours(&existing, &data) {
            tracing::info!(path = %path, "Archive object already stored (a retry or a redelivery): kept");
            Ok(())
        } else {
            Err(SinkError::new(
                ErrorKind::Internal,
                format!(
                    "archive {}: {path} exists and holds other records than this channel would write there; move it away",
                    self.display
                ),
            ))
        }
    }

    /// A store error as a channel error: what we did, where, and whether a retry helps.
    pub fn error(&self, what: &str, path: &Path, e: object_store::Error) -> SinkError {
        let chain = source_chain(&e);
        if let Some(io) = io_error(&e).filter(|_| self.local_root.is_some()) {
            let kind = io_kind(io);
            let full = io.raw_os_error() == Some(28) || io.kind() == std::io::ErrorKind::StorageFull;
            let msg = if full {
                format!("the disk holding the archive {} is full: cannot {what} {path}", self.display)
            } else {
                format!("archive {}: cannot {what} {path}: {io}", self.display)
            };
            return SinkError::new(if full { ErrorKind::Transient } else { kind }, msg);
        }
        let bucket = self.bucket.as_deref().unwrap_or("");
        if chain.contains("NoSuchBucket") || (matches!(e, object_store::Error::NotFound { .. }) && what == "list") {
            return SinkError::new(
                ErrorKind::Config,
                format!("bucket `{bucket}` does not exist at {} (archive {})", self.endpoint, self.display),
            );
        }
        if matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
            || ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden", "401 Unauthorized"]
                .iter()
                .any(|s| chain.contains(s))
        {
            return SinkError::new(
                ErrorKind::Auth,
                format!("{} refused the credentials for bucket `{bucket}` (cannot {what} {path}): {}", self.endpoint, reason(&chain)),
            );
        }
        let network = io_error(&e).is_some_and(|io| {
            use std::io::ErrorKind::*;
            matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | TimedOut | HostUnreachable | NetworkUnreachable
            )
        });
        if network || ["error sending request", "connect", "Connection refused", "timed out", "dns error"].iter().any(|s| chain.contains(s))
        {
            return SinkError::new(
                ErrorKind::Transient,
                format!("endpoint {} is unreachable for bucket `{bucket}` (cannot {what} {path}): {}", self.endpoint, short(&chain)),
            );
        }
        SinkError::new(ErrorKind::Transient, format!("archive {}: cannot {what} {path}: {}", self.display, reason(&chain)))
    }
}

/// What the server said: an S3 error document's code and message when there
/// is one (not the whole XML), else the error text, shortened.
fn reason(chain: &str) -> String {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = chain.find(&open)? + open.len();
        let end = chain[start..].find(&format!("</{t}>"))? + start;
        Some(chain[start..end].to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code,
        _ => short(chain),
    }
}

fn short(s: &str) -> String {
    const MAX: usize = 600;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The error and its sources, joined (the useful part is often deep inside).
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = s.source();
    }
    None
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => ErrorKind::Config,
        _ => ErrorKind::Transient,
    }
}
