//! Terminal progress bars for first-start backfills (only when stderr is a terminal).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use fedistream_core::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub struct TerminalProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl TerminalProgress {
    pub fn new_if_tty() -> Option<Self> {
        std::io::stderr().is_terminal().then(|| TerminalProgress { multi: MultiProgress::new(), bars: Mutex::new(HashMap::new()) })
    }
}

impl Progress for TerminalProgress {
    fn start(&self, label: &str, total: Option<u64>) {
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} posts ({per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg:32} {pos} posts ({per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        let bar = self.multi.add(bar.with_message(label.to_string()));
        self.bars.lock().unwrap_or_else(|p| p.into_inner()).insert(label.to_string(), bar);
    }
    fn advance(&self, label: &str, n: u64) {
        if let Some(b) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).get(label) {
            b.inc(n);
        }
    }
    fn finish(&self, label: &str) {
        if let Some(b) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).remove(label) {
            b.finish_and_clear();
        }
    }
}
