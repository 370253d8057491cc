//! Access tokens: a [`Secret`] (`fedistream_core::secret`, held by `secrecy`,
//! printed as `***`) read from an environment variable or a file and checked
//! to be usable as a bearer token. Errors name the variable or file, never
//! the value.

use std::path::Path;

use reqwest::header::HeaderValue;

pub use fedistream_core::secret::Secret;

use super::MastodonError;

/// The token in environment variable `var` (surrounding whitespace trimmed).
pub fn token_from_env(var: &str) -> Result<Secret, MastodonError> {
    let s = Secret::from_env(var).map_err(MastodonError::Config)?;
    checked(s.expose().trim(), &format!("environment variable {var}"))
}

/// The token in a file (e.g. a mounted secret; surrounding whitespace trimmed).
pub fn token_from_file(path: impl AsRef<Path>) -> Result<Secret, MastodonError> {
    let path = path.as_ref();
    let s = Secret::from_file(path).map_err(|e| MastodonError::Config(e.replace("secret file", "token file")))?;
    checked(s.expose().trim(), &format!("token file {}", path.display()))
}

fn checked(value: &str, what: &str) -> Result<Secret, MastodonError> {
    if value.is_empty() {
        return Err(MastodonError::Config(format!("{what} is empty")));
    }
    if HeaderValue::from_str(&format!("Bearer {value}")).is_err() || value.contains(char::is_whitespace) {
        return Err(MastodonError::Config(format!("{what} does not hold a valid token (bad characters)")));
    }
    Ok(Secret::new(value))
}
