//! Error classification shared by every component. Each library error exposes a
//! [`ErrorKind`] so the runtime decides what to do (retry, dead-letter, pause,
//! stop) without parsing messages.

use std::time::Duration;

/// Who is at fault and whether retrying helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is wrong; the operator must fix it. Not retried.
    Config,
    /// Temporary (network, 5xx, 429, broker unavailable): retry with backoff, or
    /// after `retry_after` when the server said when.
    Transient,
    /// This record can never be delivered (422, malformed): dead-letter it and go on.
    Permanent,
    /// Credentials were refused (401/403): pause this component, keep the others going.
    Auth,
    /// A bug or broken invariant in fedistream.
    Internal,
}

impl ErrorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Auth => "auth",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Errors of the log (bus) backends.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open the log at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("stored record at offset {offset} is not a valid event: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("log backend unavailable: {0}")]
    Unavailable(String),
    #[error("the log is closed")]
    Closed,
    /// The append carried a fence (on Kafka: the ingest group assignment it was
    /// made under) that the cluster rejected, because that work belongs to
    /// another process now. Nothing of the append was stored, and every later
    /// append under the same fence fails the same way; the caller stops the work
    /// and resumes it under its next assignment.
    #[error("append fenced off: {0}")]
    Fenced(String),
    #[error("internal log error: {0}")]
    Internal(String),
}

impl LogError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            LogError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                ErrorKind::Transient
            }
            LogError::Unavailable(_) => ErrorKind::Transient,
            LogError::Open { .. } => ErrorKind::Config,
            LogError::Corrupt { .. } => ErrorKind::Permanent,
            // Retrying helps, but only under a new assignment.
            LogError::Fenced(_) => ErrorKind::Transient,
            _ => ErrorKind::Internal,
        }
    }
}

/// What a sink returns when a batch write fails.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub kind: ErrorKind,
    pub message: String,
    /// When the server said how long to wait (429 reset, Retry-After).
    pub retry_after: Option<Duration>,
    /// For [`ErrorKind::Permanent`]: the index in the batch of the record that
    /// cannot be delivered. Records before it were delivered; the runtime
    /// dead-letters this one and retries the rest. `None` means the whole batch.
    pub failed_index: Option<usize>,
}

impl SinkError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SinkError { kind, message: message.into(), retry_after: None, failed_index: None }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    pub fn permanent_at(index: usize, message: impl Into<String>) -> Self {
        SinkError { failed_index: Some(index), ..Self::new(ErrorKind::Permanent, message) }
    }
    pub fn with_retry_after(mut self, d: Option<Duration>) -> Self {
        self.retry_after = d;
        self
    }
}

/// What a source task ends with when it cannot go on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: ErrorKind,
    pub message: String,
}

impl SourceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SourceError { kind, message: message.into() }
    }
}

impl From<LogError> for SourceError {
    fn from(e: LogError) -> Self {
        SourceError::new(e.kind(), e.to_string())
    }
}
