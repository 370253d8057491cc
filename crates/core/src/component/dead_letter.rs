//! Dead-letter files: what a component could not process, with the reason, one
//! JSON object per line, synced on every write.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::LogRecord;

/// An append-only JSON Lines file of what could not be processed, with the reason.
#[derive(Clone)]
pub struct DeadLetter {
    path: Arc<PathBuf>,
    file: Arc<Mutex<Option<std::fs::File>>>,
}

#[derive(Serialize)]
struct DeadLetterLine<'a> {
    at: DateTime<Utc>,
    component: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
}

impl DeadLetter {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DeadLetter { path: Arc::new(path.into()), file: Arc::new(Mutex::new(None)) }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    fn write_line(&self, line: &DeadLetterLine<'_>) -> std::io::Result<()> {
        use std::io::Write;
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            *guard = Some(std::fs::OpenOptions::new().create(true).append(true).open(&*self.path)?);
        }
        let mut buf = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        buf.push(b'\n');
        let f = guard.as_mut().expect("opened above");
        f.write_all(&buf)?;
        f.sync_data()
    }
    /// Dead-letter a record a channel could not deliver.
    pub fn record(&self, component: &str, reason: &str, rec: &LogRecord) -> std::io::Result<()> {
        let raw_event: Option<&serde_json::value::RawValue> = serde_json::from_str(&rec.payload).ok();
        self.write_line(&DeadLetterLine {
            at: Utc::now(),
            component,
            reason,
            partition: Some(rec.position.partition),
            offset: Some(rec.position.offset),
            event: raw_event,
            raw: if raw_event.is_none() { Some(&rec.payload) } else { None },
        })
    }
    /// Dead-letter raw input a source could not parse.
    pub fn raw(&self, component: &str, reason: &str, raw: &str) -> std::io::Result<()> {
        self.write_line(&DeadLetterLine { at: Utc::now(), component, reason, partition: None, offset: None, event: None, raw: Some(raw) })
    }
}
