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

/// What went wrong in a log's storage, as far as the operator is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageClass {
    /// Another connection holds a lock for now: retry.
    Busy,
    /// The disk (or a quota) is full: the operator must free space; retrying
    /// then succeeds, and nothing already accepted is lost.
    DiskFull,
    /// The operating system reported an I/O error: a disk or file-system
    /// problem, not a fedistream bug.
    Io,
    /// The database file is damaged.
    Corrupt,
    /// The file or its directory cannot be written (permissions, read-only mount).
    ReadOnly,
    /// Anything else the storage engine reported.
    Other,
}

/// Errors of the log (bus) backends. Backend error types (SQLite's, Kafka's)
/// never cross this boundary: each backend classifies its errors into these
/// variants, keeping the message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("{}", storage_message(*class, message))]
    Storage { class: StorageClass, message: String },
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
    /// A request the backend does not support (e.g. an unknown topic).
    #[error("{0}")]
    Unsupported(String),
    #[error("internal log error: {0}")]
    Internal(String),
}

fn storage_message(class: StorageClass, message: &str) -> String {
    match class {
        StorageClass::Busy => format!("the log is busy: {message}"),
        StorageClass::DiskFull => format!(
            "the disk holding the log is full ({message}): free some space; fedistream retries, and nothing already accepted is lost"
        ),
        StorageClass::Io => format!("I/O error on the log's disk ({message}): a disk or file-system problem, not a fedistream bug"),
        StorageClass::Corrupt => {
            format!("the log database is corrupt ({message}): restore it from a backup, or move it aside to start a new one")
        }
        StorageClass::ReadOnly => format!("the log cannot be written ({message}): check the file's permissions and the mount"),
        StorageClass::Other => format!("log storage error: {message}"),
    }
}

impl LogError {
    pub fn storage(class: StorageClass, message: impl Into<String>) -> Self {
        LogError::Storage { class, message: message.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            LogError::Storage { class, .. } => match class {
                // Retrying helps once the operator freed space or the disk recovered.
                StorageClass::Busy | StorageClass::DiskFull | StorageClass::Io => ErrorKind::Transient,
                StorageClass::ReadOnly => ErrorKind::Config,
                StorageClass::Corrupt => ErrorKind::Permanent,
                StorageClass::Other => ErrorKind::Internal,
            },
            LogError::Unavailable(_) => ErrorKind::Transient,
            LogError::Open { .. } | LogError::Unsupported(_) => ErrorKind::Config,
            LogError::Corrupt { .. } => ErrorKind::Permanent,
            // Retrying helps, but only under a new assignment.
            LogError::Fenced(_) => ErrorKind::Transient,
            LogError::Closed | LogError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }
}

/// What a sink returns when a batch write fails.
#[derive(Debug, Clone, thiserror::Error)]
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
#[derive(Debug, Clone, thiserror::Error)]
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

/// What a processor returns when it cannot handle its input or its state.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProcessorError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ProcessorError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProcessorError { kind, message: message.into() }
    }
}

impl From<LogError> for ProcessorError {
    fn from(e: LogError) -> Self {
        ProcessorError::new(e.kind(), e.to_string())
    }
}

/// How a supervised component (source, processor, channel) ended or failed: who,
/// what kind of failure (so the supervisor knows whether restarting helps),
/// and the message. The runtime's summary and `fedistream status` show these.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{component}: {message}")]
pub struct ComponentError {
    /// `source:NAME`, `channel:NAME`, `processor:NAME`, `log`.
    pub component: String,
    pub kind: ErrorKind,
    pub message: String,
}

impl ComponentError {
    pub fn new(component: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        ComponentError { component: component.into(), kind, message: message.into() }
    }
    /// Whether restarting the component can help (a transient cause).
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

impl From<LogError> for SourceError {
    fn from(e: LogError) -> Self {
        SourceError::new(e.kind(), e.to_string())
    }
}
