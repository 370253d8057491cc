//! [`MastodonError`]: what went wrong talking to a Mastodon server, with the
//! facts the caller needs to decide (status, server message, when to retry,
//! which path) and never the token.

use std::time::Duration;

use fedistream_core::ErrorKind;

/// The server's error text (or the start of a body) is cut to this many characters.
const MAX_MESSAGE: usize = 200;

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
    Network { path: String, timeout: bool, message: String },
    /// The answer could not be decoded.
    #[error("{path}: cannot decode the response: {message}")]
    Decode { path: String, message: String },
    /// A successful read whose body is not what was asked for (truncated, a
    /// proxy's HTML page with status 200). Transient: the next answer is
    /// usually fine.
    #[error("{path}: cannot decode the response: {message}")]
    Undecodable { path: String, message: String },
    /// An `https://` server answered in plain http (a loopback or test server
    /// reached without an `http://` instance).
    #[error("{host} did not answer TLS (it seems to speak plain http); if it is a loopback or test server, reach it with instance = \"http://{host}\" (`--instance http://{host}` for `follow`)")]
    NotTls { host: String },
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
            MastodonError::Undecodable { .. } => ErrorKind::Transient,
            MastodonError::NotTls { .. } | MastodonError::Config(_) => ErrorKind::Config,
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
        // in the source chain: name the cause when we know it, else spell the
        // chain out.
        let timeout = err.is_timeout();
        let host = err.url().and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        });
        let err = err.without_url();
        let mut chain = vec![err.to_string()];
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            chain.push(s.to_string());
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if let Some(cause) = io_cause(io, host.as_deref()) {
                    return MastodonError::Network { path: path.to_string(), timeout, message: cause };
                }
            }
            source = s.source();
        }
        let message = chain.join(": ");
        if let (Some(host), true) = (host, looks_like_plain_http(&message)) {
            return MastodonError::NotTls { host };
        }
        if let Some(cause) = name_cause(&message, None) {
            return MastodonError::Network { path: path.to_string(), timeout, message: cause };
        }
        MastodonError::Network { path: path.to_string(), timeout, message: truncate(&message) }
    }

    pub(crate) fn decode(path: &str, err: impl std::fmt::Display) -> Self {
        MastodonError::Decode { path: path.to_string(), message: truncate(&err.to_string()) }
    }

    /// A 2xx body that is not what was asked for: says what was expected and
    /// shows the start of what came.
    pub(crate) fn undecodable(path: &str, expected: &str, body: &[u8], err: impl std::fmt::Display) -> Self {
        let start =
            if body.is_empty() { "an empty body".to_string() } else { format!("{} bytes starting {:?}", body.len(), preview(body, 80)) };
        MastodonError::Undecodable { path: path.to_string(), message: format!("expected {expected}, got {start} ({err})") }
    }
}

/// The cause of an I/O error connecting to a server, in words, when it is one
/// of the common ones.
pub(crate) fn io_cause(io: &std::io::Error, host: Option<&str>) -> Option<String> {
    let at = host.map(|h| format!(" at {h}")).unwrap_or_default();
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => Some(format!("connection refused: nothing listens{at}")),
        std::io::ErrorKind::ConnectionReset => Some(format!("connection reset by the server{at}")),
        std::io::ErrorKind::TimedOut => Some(format!("connecting timed out{at}")),
        _ => name_cause(&io.to_string(), host),
    }
}

/// Recognise name-resolution failures in an error text.
pub(crate) fn name_cause(text: &str, host: Option<&str>) -> Option<String> {
    let t = text.to_ascii_lowercase();
    let dns = [
        "failed to lookup address",
        "dns error",
        "name or service not known",
        "nodename nor servname",
        "no such host",
        "temporary failure in name resolution",
    ];
    dns.iter().any(|p| t.contains(p)).then(|| match host {
        Some(h) => format!("cannot resolve the host name of {h} (DNS): {}", truncate(text)),
        None => format!("cannot resolve the host name (DNS): {}", truncate(text)),
    })
}

/// rustls' words for a server that answered a TLS hello in plain http.
pub(crate) fn looks_like_plain_http(text: &str) -> bool {
    text.contains("InvalidContentType") || text.contains("received corrupt message") || text.contains("wrong version number")
}

/// The start of a body as text: whitespace runs collapsed to one space, at
/// most `max` characters.
pub(crate) fn preview(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(max * 4)]);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &collapsed[..i]),
        None => collapsed,
    }
}

/// Turn a non-success body into a short message: the `error` field of a JSON
/// body; else its content type and, for text, its start on one line (an HTML
/// error page is not worth more than [`MAX_MESSAGE`] characters).
pub(crate) fn server_message(body: &[u8], content_type: Option<&str>) -> Option<String> {
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
    let ct = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_ascii_lowercase());
    let texty = ct.as_deref().is_none_or(|c| c.starts_with("text/") || c.contains("json") || c.contains("xml"));
    if !texty || std::str::from_utf8(body).is_err() {
        return Some(format!("({}, {} bytes)", ct.as_deref().unwrap_or("no content type"), body.len()));
    }
    let text = preview(body, MAX_MESSAGE);
    if text.is_empty() {
        return None;
    }
    Some(match ct {
        Some(ct) if ct != "text/plain" => format!("({ct}) {text}"),
        _ => text,
    })
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
        MastodonError::Http { status, path: "/api/v1/x".into(), message: None, retry_after: None }
    }

    #[test]
    fn kinds_follow_the_contract() {
        assert_eq!(http(401).kind(), ErrorKind::Auth);
        assert_eq!(http(403).kind(), ErrorKind::Auth);
        assert_eq!(http(404).kind(), ErrorKind::Permanent);
        assert_eq!(http(422).kind(), ErrorKind::Permanent);
        assert_eq!(http(429).kind(), ErrorKind::Transient);
        assert_eq!(http(502).kind(), ErrorKind::Transient);
        assert_eq!(MastodonError::decode("/p", "eof").kind(), ErrorKind::Permanent);
        let html = MastodonError::undecodable("/p", "a JSON array of statuses", b"<!DOCTYPE html>\n<html>", "expected value");
        assert_eq!(html.kind(), ErrorKind::Transient);
        assert_eq!(
            html.to_string(),
            "/p: cannot decode the response: expected a JSON array of statuses, got 22 bytes starting \"<!DOCTYPE html> <html>\" (expected value)"
        );
        assert_eq!(MastodonError::Network { path: "/p".into(), timeout: true, message: "x".into() }.kind(), ErrorKind::Transient);
        assert_eq!(MastodonError::Config("x".into()).kind(), ErrorKind::Config);
    }

    #[test]
    fn messages_keep_the_facts() {
        let e = MastodonError::Http {
            status: 429,
            path: "/api/v1/accounts/1/statuses".into(),
            message: server_message(br#"{"error":"Too many requests"}"#, Some("application/json")),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(e.to_string(), "/api/v1/accounts/1/statuses: HTTP 429: Too many requests");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.status(), Some(429));
        assert_eq!(server_message(b"  <html>oops</html> ", None), Some("<html>oops</html>".into()));
        assert_eq!(
            server_message(b"<!DOCTYPE html>\n<html>\n  <body>down</body></html>", Some("text/html; charset=utf-8")),
            Some("(text/html) <!DOCTYPE html> <html> <body>down</body></html>".into())
        );
        assert_eq!(server_message(&[0xff, 0, 1], Some("image/png")), Some("(image/png, 3 bytes)".into()));
        assert_eq!(server_message(b"", None), None);
        assert_eq!(truncate(&"é".repeat(400)).chars().count(), MAX_MESSAGE + 1);
    }
}
