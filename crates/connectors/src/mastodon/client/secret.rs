//! [`Secret`]: an access token that cannot leak by accident. It prints as
//! `***`, and its constructors' errors name the variable or file, never the value.

use std::path::Path;
use std::sync::Arc;

use reqwest::header::HeaderValue;

use super::MastodonError;

/// An access token. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(token: impl Into<String>) -> Self {
        Secret(Arc::from(token.into()))
    }

    /// Read the token from environment variable `var` (surrounding whitespace
    /// trimmed). Errors name the variable, never the value.
    pub fn from_env(var: &str) -> Result<Self, MastodonError> {
        match std::env::var(var) {
            Ok(v) => Self::checked(v.trim(), &format!("environment variable {var}")),
            Err(std::env::VarError::NotPresent) => Err(MastodonError::Config(format!(
                "environment variable {var} is not set"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => Err(MastodonError::Config(format!(
                "environment variable {var} is not valid UTF-8"
            ))),
        }
    }

    /// Read the token from a file (e.g. a mounted secret; trailing newline
    /// trimmed). Errors name the file, never the content.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, MastodonError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            MastodonError::Config(format!(
                "cannot read token file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        Self::checked(text.trim(), &format!("token file {}", path.display()))
    }

    fn checked(value: &str, what: &str) -> Result<Self, MastodonError> {
        if value.is_empty() {
            return Err(MastodonError::Config(format!("{what} is empty")));
        }
        if HeaderValue::from_str(&format!("Bearer {value}")).is_err()
            || value.contains(char::is_whitespace)
        {
            return Err(MastodonError::Config(format!(
                "{what} does not hold a valid token (bad characters)"
            )));
        }
        Ok(Secret::new(value))
    }

    /// The token itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}
