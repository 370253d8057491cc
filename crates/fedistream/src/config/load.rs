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
        let first = ConfigError {
            file: file.to_path_buf(),
            key: if key == "." { String::new() } else { key },
            line_col: inner.span().map(|s| line_col(text, s.start)),
            reason: inner.message().trim().to_string(),
        };
        refine_tagged(text, file, &first).unwrap_or(first)
    })
}

/// Sources and channels are enums tagged by `type`; serde buffers such a table
/// before choosing the variant, which loses the key path and position of errors
/// inside it. Deserialise the variant directly to find the exact key again.
fn refine_tagged(text: &str, file: &Path, first: &ConfigError) -> Option<ConfigError> {
    use super::{ChannelConfig, SourceConfig};
    let mut parts = first.key.splitn(3, '.');
    let (section, name) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || !matches!(section, "sources" | "channels") {
        return None;
    }
    let doc: toml::Table = toml::from_str(text).ok()?;
    let mut table = doc.get(section)?.get(name)?.as_table()?.clone();
    let kind = table.remove("type")?.as_str()?.to_string();
    fn inner<T: serde::de::DeserializeOwned>(t: toml::Table) -> Option<(String, String)> {
        let v = toml::Value::Table(t);
        match serde_path_to_error::deserialize::<_, T>(v) {
            Ok(_) => None,
            Err(e) => Some((e.path().to_string(), e.into_inner().message().trim().to_string())),
        }
    }
    let (path, reason) = match (section, kind.as_str()) {
        ("sources", "mastodon") => inner::<fedistream_connectors::mastodon::source::MastodonSourceConfig>(table)?,
        ("sources", "replay") => inner::<fedistream_connectors::replay::ReplaySourceConfig>(table)?,
        ("channels", "file") => inner::<fedistream_connectors::file::FileSinkConfig>(table)?,
        ("channels", "stdout") => inner::<fedistream_connectors::stdout::StdoutSinkConfig>(table)?,
        ("channels", "mastodon") => inner::<fedistream_connectors::mastodon::sink::MastodonSinkConfig>(table)?,
        ("channels", "kafka") => inner::<fedistream_kafka::channel::KafkaChannelConfig>(table)?,
        _ => {
            let _ = (std::marker::PhantomData::<SourceConfig>, std::marker::PhantomData::<ChannelConfig>);
            return None;
        }
    };
    let key = if path == "." { format!("{section}.{name}") } else { format!("{section}.{name}.{path}") };
    // Where the key is written: the last path segment after the table's header.
    let header = format!("[{section}.{name}");
    let leaf = path.rsplit('.').next().unwrap_or("").split('[').next().unwrap_or("");
    let line_col = text.find(&header).and_then(|start| {
        if leaf.is_empty() || leaf == "." {
            return Some(line_col(text, start));
        }
        text[start..]
            .match_indices(leaf)
            .map(|(i, _)| start + i)
            .find(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n' || text.as_bytes()[i - 1] == b' ' || text.as_bytes()[i - 1] == b'.')
            .map(|i| line_col(text, i))
    });
    Some(ConfigError { file: file.to_path_buf(), key, line_col, reason })
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
