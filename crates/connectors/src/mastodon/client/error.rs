//! [`MastodonError`]: what went wrong talking to a Mastodon server, with the
//! facts the caller needs to decide (status, server message, when to retry,
//! which path) and never the token.

use std::time::Duration;

use fedistream_core::ErrorKind;

/// The server's error text is cut to this many characters.
const MAX_MESSAGE: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum MastodonError {
    /// The server answered with a non-success status.
    #[error("{path}: HTTP {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http {
        status: u16,
        /// URL path (no query, no host) of the request.
        path: String,
        /// The server's `error` text (or the start of a non-JSON body), or
        /// `X-Error-Message` of a refused WebSocket upgrade.
        message: Option<String>,
        /// From `X-RateLimit-Reset` / `Retry-After`, when the server said.
        retry_after: Option<Duration>,
    },
    /// No usable answer: connection refused/reset, TLS, DNS, timeout.
    #[error("{path}: {}: {message}", if *.timeout { "timed out" } else { "network error" })]
    Network {
        path: String,
        timeout: bool,
        message: String,
    },
    /// The answer could not be decoded.
    #[error("{path}: cannot decode the response: {message}")]
    Decode { path: String, message: String },
    /// A local configuration problem (bad URL, missing or unreadable token).
    #[error("{0}")]
    Config(String),
}

impl MastodonError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            MastodonError::Http { status, .. } => match status {
                401 | 403 => ErrorKind::Auth,
                408 | 425 | 429 => ErrorKind::Transient,
                s if *s >= 500 => ErrorKind::Transient,
                _ => ErrorKind::Permanent,
            },
            MastodonError::Network { .. } => ErrorKind::Transient,
            MastodonError::Decode { .. } => ErrorKind::Permanent,
            MastodonError::Config(_) => ErrorKind::Config,
        }
    }

    /// When the server said to come back (429 until its reset; Retry-After).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MastodonError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, for [`MastodonError::Http`].
    pub fn status(&self) -> Option<u16> {
        match self {
            MastodonError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn network(path: &str, err: reqwest::Error) -> Self {
        // The URL carries ids and paging cursors (never the token); the path
        // alone is enough. reqwest hides the useful part ("connection refused")
        // in the source chain, so spell the chain out.
        let timeout = err.is_timeout();
        let err = err.without_url();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        MastodonError::Network {
            path: path.to_string(),
            timeout,
            message: truncate(&message),
        }
    }

    pub(crate) fn decode(path: &str, err: impl std::fmt::Display) -> Self {
        MastodonError::Decode {
            path: path.to_string(),
            message: truncate(&err.to_string()),
        }
    }
}

/// Turn a non-success body into a short message: the `error` field of a JSON
/// body, else the start of the text.
pub(crate) fn server_message(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            let desc = v.get("error_description").and_then(|e| e.as_str());
            return Some(truncate(&match desc {
                Some(d) => format!("{e}: {d}"),
                None => e.to_string(),
            }));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty()).then(|| truncate(text))
}

pub(crate) fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> MastodonError {
        MastodonError::Http {
            status,
            path: "/api/v1/x".into(),
            message: None,
            retry_after: None,
        }
    }

    #[test]
    fn kinds_follow_the_contract() {
        assert_eq!(http(401).kind(), ErrorKind::Auth);
        assert_eq!(http(403).kind(), ErrorKind::Auth);
        assert_eq!(http(404).kind(), ErrorKind::Permanent);
        assert_eq!(http(422).kind(), ErrorKind::Permanent);
        assert_eq!(http(429).kind(), ErrorKind::Transient);
        assert_eq!(http(502).kind(), ErrorKind::Transient);
        assert_eq!(
            MastodonError::decode("/p", "eof").kind(),
            ErrorKind::Permanent
        );
        assert_eq!(
            MastodonError::Network {
                path: "/p".into(),
                timeout: true,
                message: "x".into()
            }
            .kind(),
            ErrorKind::Transient
        );
        assert_eq!(MastodonError::Config("x".into()).kind(), ErrorKind::Config);
    }

    #[test]
    fn messages_keep_the_facts() {
        let e = MastodonError::Http {
            status: 429,
            path: "/api/v1/accounts/1/statuses".into(),
            message: server_message(br#"{"error":"Too many requests"}"#),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            e.to_string(),
            "/api/v1/accounts/1/statuses: HTTP 429: Too many requests"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.status(), Some(429));
        assert_eq!(
            server_message(b"  <html>oops</html> "),
            Some("<html>oops</html>".into())
        );
        assert_eq!(server_message(b""), None);
        assert_eq!(truncate(&"é".repeat(400)).chars().count(), MAX_MESSAGE + 1);
    }
}
