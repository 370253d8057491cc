//! The archive channel's configuration (`[channels.NAME] type = "archive"`)
//! and its checks without I/O.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file format of the objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet; the long columns zstd-compressed (`schemas/archive-parquet.md`).
    #[default]
    Parquet,
    /// JSON Lines: the file channel's lines (`partition`, `offset`, then the event).
    Jsonl,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSinkConfig {
    /// Where the archive lives: `file:///abs/dir` or `s3://bucket/prefix`.
    /// Exactly one of `url` and `path`.
    #[serde(default)]
    pub url: Option<String>,
    /// A local directory (created if missing); relative to the working directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// S3: the server's URL (MinIO: `http://127.0.0.1:9000`); default AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: the region (MinIO accepts any; default `us-east-1`, or AWS_REGION).
    #[serde(default)]
    pub region: Option<String>,
    /// S3: path-style addressing (`endpoint/bucket/key`, what MinIO expects);
    /// false: virtual-hosted style (`bucket.endpoint/key`).
    #[serde(default = "yes")]
    pub path_style: bool,
    /// S3: allow a plain `http://` endpoint (loopback test servers).
    #[serde(default)]
    pub allow_http: bool,
    /// S3: the *name* of the env var holding the access key id. Without it (and
    /// `secret_access_key_env`), the usual AWS chain: AWS_ACCESS_KEY_ID /
    /// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, web identity, instance metadata.
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    /// S3: the *name* of the env var holding the secret access key.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// S3: the profile to read from the AWS shared credentials file
    /// (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) when neither
    /// `*_env` key nor `AWS_ACCESS_KEY_ID` gives credentials. Default:
    /// `AWS_PROFILE`, else `default` (then only if the file has it).
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub format: Format,
    /// JSON Lines only: gzip the objects (`.jsonl.gz`).
    #[serde(default)]
    pub gzip: bool,
    /// The dataset directory below the prefix. Default: `posts` for the events
    /// topic, the processor's name for a processor's output.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Write the buffered records out once they reach this many bytes of event
    /// JSON (the objects are smaller: Parquet compresses).
    #[serde(default = "default_max_file_bytes", with = "fedistream_core::units::size")]
    pub max_file_bytes: u64,
    /// Write the buffered records out once the oldest is this old, even when
    /// no new records arrive.
    #[serde(default = "default_max_file_age", with = "fedistream_core::units::duration")]
    pub max_file_age: Duration,
    /// Parquet rows per row group.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Objects of at least this size go up as a multipart upload (S3), aborted
    /// if a part fails; smaller ones in one request.
    #[serde(default = "default_multipart_threshold", with = "fedistream_core::units::size")]
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (S3 needs at least 5 MiB).
    #[serde(default = "default_part_bytes", with = "fedistream_core::units::size")]
    pub multipart_part_bytes: u64,
    /// One request to the store longer than this fails (and is retried).
    #[serde(default = "default_request_timeout", with = "fedistream_core::units::duration")]
    pub request_timeout: Duration,
    /// Partition levels of the posts dataset below `date=…/hour=…`, in this
    /// order: `"instance"` (`instance=HOST/`, the server the event was read
    /// from) and `"bucket"` (`bucket=NN/`, the author hashed into `buckets`
    /// buckets). Filters on them prune directories in `fedistream sql` and in
    /// Hive-aware readers. Processor datasets keep `date`/`hour` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<crate::layout::Level>,
    /// With `partition_by = ["bucket"]`: how many account buckets (2 to 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    /// Keep this much history: `fedistream archive compact` removes the hour
    /// directories that ended longer ago (by event time). Default: keep all.
    #[serde(default, with = "fedistream_core::units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    #[serde(default)]
    pub delivery: fedistream_core::runtime::DeliveryConfig,
}

fn yes() -> bool {
    true
}
fn default_max_file_bytes() -> u64 {
    64_000_000
}
fn default_max_file_age() -> Duration {
    Duration::from_secs(300)
}
fn default_row_group_rows() -> usize {
    128 * 1024
}
fn default_multipart_threshold() -> u64 {
    32 << 20
}
fn default_part_bytes() -> u64 {
    16 << 20
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

pub const MIN_PART_BYTES: u64 = 5 << 20;
/// The most account buckets `buckets` allows.
pub const MAX_BUCKETS: u32 = 1024;

impl ArchiveSinkConfig {
    /// A local-directory archive with every default.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        ArchiveSinkConfig {
            url: None,
            path: Some(path.into()),
            endpoint: None,
            region: None,
            path_style: true,
            allow_http: false,
            access_key_id_env: None,
            secret_access_key_env: None,
            profile: None,
            format: Format::Parquet,
            gzip: false,
            dataset: None,
            max_file_bytes: default_max_file_bytes(),
            max_file_age: default_max_file_age(),
            row_group_rows: default_row_group_rows(),
            multipart_threshold: default_multipart_threshold(),
            multipart_part_bytes: default_part_bytes(),
            request_timeout: default_request_timeout(),
            partition_by: Vec::new(),
            buckets: None,
            retention: None,
            delivery: Default::default(),
        }
    }

    /// Problems as (key, reason), keys relative to the channel's table. No I/O.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match (&self.url, &self.path) {
            (Some(_), Some(_)) => out.push(("url", "give `url` or `path`, not both".to_string())),
            (None, None) => out.push(("url", "missing: `url = \"s3://bucket/prefix\"` or `file:///dir`, or `path = \"dir\"`".to_string())),
            (Some(u), None) => {
                if let Err(e) = Location::parse(u) {
                    out.push(("url", e));
                }
            }
            (None, Some(_)) => {}
        }
        let s3 = self.url.as_deref().is_some_and(|u| u.starts_with("s3://"));
        if !s3 {
            for (k, set) in [
                ("endpoint", self.endpoint.is_some()),
                ("region", self.region.is_some()),
                ("access_key_id_env", self.access_key_id_env.is_some()),
                ("secret_access_key_env", self.secret_access_key_env.is_some()),
                ("profile", self.profile.is_some()),
                ("allow_http", self.allow_http),
            ] {
                if set {
                    out.push((k, "only for an `s3://` url".to_string()));
                }
            }
        }
        if self.profile.is_some() && self.access_key_id_env.is_some() {
            out.push(("profile", "give `profile` or access_key_id_env/secret_access_key_env, not both".to_string()));
        }
        if self.access_key_id_env.is_some() != self.secret_access_key_env.is_some() {
            out.push((
                "access_key_id_env",
                "give both access_key_id_env and secret_access_key_env, or neither (the AWS chain)".to_string(),
            ));
        }
        if let Some(e) = &self.endpoint {
            match url::Url::parse(e) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" && !self.allow_http => {
                    out.push(("endpoint", "a plain http:// endpoint needs `allow_http = true`".to_string()))
                }
                Ok(u) if u.scheme() == "http" => {}
                Ok(u) => out.push(("endpoint", format!("scheme `{}`: use http:// or https://", u.scheme()))),
                Err(err) => out.push(("endpoint", format!("not a URL: {err}"))),
            }
        }
        if self.gzip && self.format != Format::Jsonl {
            out.push(("gzip", "only with format = \"jsonl\" (Parquet is zstd-compressed)".to_string()));
        }
        if let Some(d) = &self.dataset {
            if d.is_empty() || d.contains(['/', '\\', '=']) || d.starts_with('.') {
                out.push(("dataset", format!("`{d}`: one directory name, without `/`, `=` or a leading dot")));
            }
        }
        if self.max_file_bytes == 0 {
            out.push(("max_file_bytes", "must be more than 0".to_string()));
        }
        if self.max_file_age.is_zero() {
            out.push(("max_file_age", "must be more than 0".to_string()));
        }
        if let Some(r) = self.retention {
            if r < Duration::from_secs(3600) + self.max_file_age {
                out.push((
                    "retention",
                    "at least an hour more than max_file_age (directories are hours; younger ones are still written)".to_string(),
                ));
            }
        }
        let by_bucket = self.partition_by.contains(&crate::layout::Level::Bucket);
        for (i, l) in self.partition_by.iter().enumerate() {
            if self.partition_by[..i].contains(l) {
                out.push(("partition_by", format!("`{}` is named twice", l.column())));
            }
        }
        match self.buckets {
            None if by_bucket => {
                out.push(("buckets", "missing: partition_by names \"bucket\"; give the number of buckets (2 to 1024)".to_string()))
            }
            Some(_) if !by_bucket => out.push(("buckets", "only with partition_by = [..., \"bucket\"]".to_string())),
            Some(n) if !(2..=MAX_BUCKETS).contains(&n) => out.push(("buckets", format!("{n}: give 2 to {MAX_BUCKETS}"))),
            _ => {}
        }
        if self.row_group_rows == 0 {
            out.push(("row_group_rows", "must be more than 0".to_string()));
        }
        if self.multipart_part_bytes < MIN_PART_BYTES {
            out.push(("multipart_part_bytes", format!("at least {MIN_PART_BYTES} bytes (5 MiB, the S3 minimum)")));
        }
        out
    }

    /// How the posts dataset's directories are named.
    pub fn layout(&self) -> crate::layout::Layout {
        crate::layout::Layout { levels: self.partition_by.clone(), buckets: self.buckets.unwrap_or(1) }
    }

    /// The file extension of the objects.
    pub fn extension(&self) -> &'static str {
        match (self.format, self.gzip) {
            (Format::Parquet, _) => "parquet",
            (Format::Jsonl, false) => "jsonl",
            (Format::Jsonl, true) => "jsonl.gz",
        }
    }

    /// The dataset directory for a channel reading `topic`.
    pub fn dataset_for(&self, topic: &str) -> String {
        self.dataset.clone().unwrap_or_else(|| if topic == fedistream_core::log::EVENTS { "posts".into() } else { topic.into() })
    }
}

/// Where an archive lives, parsed from its `url` or `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// `file:///abs/dir` or `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<Location, String> {
        let u = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        match u.scheme() {
            "file" => u.to_file_path().map(Location::Local).map_err(|_| format!("`{url}`: not an absolute file path")),
            "s3" => {
                let bucket = u.host_str().filter(|b| !b.is_empty()).ok_or_else(|| format!("`{url}`: no bucket (s3://BUCKET/prefix)"))?;
                Ok(Location::S3 { bucket: bucket.to_string(), prefix: u.path().trim_matches('/').to_string() })
            }
            other => Err(format!("`{url}`: scheme `{other}` is not supported (file:// or s3://)")),
        }
    }

    pub fn of(cfg: &ArchiveSinkConfig) -> Result<Location, String> {
        match (&cfg.url, &cfg.path) {
            (Some(u), None) => Location::parse(u),
            (None, Some(p)) => Ok(Location::Local(p.clone())),
            _ => Err("give exactly one of `url` and `path`".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_or_say_why_not() {
        assert_eq!(Location::parse("s3://b/x/y/").unwrap(), Location::S3 { bucket: "b".into(), prefix: "x/y".into() });
        assert_eq!(Location::parse("s3://b").unwrap(), Location::S3 { bucket: "b".into(), prefix: "".into() });
        assert_eq!(Location::parse("file:///tmp/a").unwrap(), Location::Local("/tmp/a".into()));
        assert!(Location::parse("gs://b/x").unwrap_err().contains("not supported"));
        assert!(Location::parse("nope").unwrap_err().contains("not a URL"));
    }
}
