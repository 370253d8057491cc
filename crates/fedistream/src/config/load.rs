//! Reading the config file. Every error names the file, the key and the reason.

use std::path::{Path, PathBuf};

use super::Config;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path (`sources.alice.accounts[0]`); empty for file-level problems.
    pub key: String,
    /// Line and column, when known.
    pub line_col: Option<(usize, usize)>,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.line_col {
            write!(f, ":{l}:{c}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| before.len() - i).unwrap_or(before.len() + 1);
    (line, col)
}

/// Parse config text (`file` is only used in messages).
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError {
            file: file.to_path_buf(),
            key: if key == "." { String::new() } else { key },
            line_col: inner.span().map(|s| line_col(text, s.start)),
            reason: inner.message().trim().to_string(),
        }
    })
}

/// Read and parse a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: String::new(),
        line_col: None,
        reason: format!("cannot read the file: {e}"),
    })?;
    parse(&text, path)
}
