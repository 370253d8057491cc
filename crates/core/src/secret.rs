//! [`Secret`]: a token, password or key that cannot leak by accident. It is
//! held by the `secrecy` crate (zeroed when the last copy is dropped), prints as
//! `***` (`Debug` and `Display`), and the errors of its constructors name the
//! environment variable or file, never the value.

use std::path::Path;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

/// A secret value. Cloning shares it.
#[derive(Clone)]
pub struct Secret(Arc<SecretString>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::new(SecretString::from(value.into())))
    }

    /// From the environment variable `var`, which must be set and not empty.
    pub fn from_env(var: &str) -> Result<Self, String> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
            Ok(_) => Err(format!("the environment variable {var} is empty")),
            Err(std::env::VarError::NotPresent) => Err(format!("the environment variable {var} is not set")),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("the environment variable {var} is not valid UTF-8")),
        }
    }

    /// From a file (a mounted secret): its content without the trailing
    /// newline, which must not be empty.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read secret file {}: {}", path.display(), e.kind()))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.trim().is_empty() {
            return Err(format!("secret file {} is empty", path.display()));
        }
        Ok(Secret::new(value))
    }

    /// The value itself, at the one place it is used (a header, a client setting).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_and_errors_name_the_source_not_the_value() {
        let s = Secret::new("hunter2-value");
        assert_eq!(format!("{s} {s:?} {:?}", Some(s.clone())), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter2-value");
        assert_eq!(s, s.clone());

        let var = "FEDISTREAM_TEST_SECRET_CORE_UNSET";
        assert_eq!(Secret::from_env(var).unwrap_err(), format!("the environment variable {var} is not set"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        assert!(Secret::from_file(&path).unwrap_err().contains("cannot read secret file"));
        std::fs::write(&path, "with space-value\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "with space-value");
        std::fs::write(&path, " \n").unwrap();
        let e = Secret::from_file(&path).unwrap_err();
        assert!(e.contains("is empty") && e.contains("key"), "{e}");
    }
}
