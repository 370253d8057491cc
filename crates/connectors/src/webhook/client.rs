//! One webhook request: signing, sending, and what the response means
//! (delivered, retry — when —, or refused for good). No retry loop here: the
//! sink's delivery tasks own that.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use crate::mastodon::client::Secret;

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "X-Fedistream-Signature";
/// The idempotency key header: the same for every attempt of a request.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Most bytes of a refusing response kept for the dead letter.
const MAX_BODY_KEPT: usize = 512;

/// `hex(HMAC-SHA256(secret, "<t>.<body>"))`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// The signature header's value for a request sent at `t`.
pub fn signature_header(secret: &[u8], t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", sign(secret, t, body))
}

/// The first 32 hex digits of SHA-256 over `parts` (each followed by a NUL).
pub fn digest_key<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let mut s = hex(&h.finalize());
    s.truncate(32);
    s
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx. `pause`: the server's rate-limit headers say its budget is spent
    /// for this long (Discord's `X-RateLimit-Remaining: 0`).
    Delivered { pause: Option<Duration> },
    /// Worth retrying: 5xx, 408, 425, 429, a timeout, a connection error.
    /// `after`: when the server said (Retry-After, Discord's `retry_after`).
    Retry { reason: String, after: Option<Duration> },
    /// Credentials refused (401, 403): retried after the channel's pause, since
    /// dead-lettering everything while a secret is being rotated would lose it.
    Auth { reason: String },
    /// Any other answer: this request will never be accepted.
    Refused { reason: String },
}

/// A request ready to send (again): the body is fixed, the signature is made
/// per attempt (its timestamp is the attempt's).
pub struct Request {
    pub body: Bytes,
    pub idempotency_key: String,
}

pub struct Client {
    http: reqwest::Client,
    url: url::Url,
    /// `scheme://host:port`, what logs and errors show.
    shown: String,
    secret: Option<Secret>,
}

impl Client {
    pub fn new(url: url::Url, secret: Option<Secret>, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirected POST becomes a GET in most clients; a webhook that
            // moved must be reconfigured, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("fedistream/", env!("CARGO_PKG_VERSION"), " (webhook)"))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let shown = super::config::redacted(&url);
        Ok(Client { http, url, shown, secret })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// One attempt.
    pub async fn send(&self, req: &Request) -> Outcome {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(&req.idempotency_key) {
            headers.insert(IDEMPOTENCY_HEADER, v);
        }
        if let Some(secret) = &self.secret {
            let v = signature_header(secret.expose().as_bytes(), unix_now(), &req.body);
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(SIGNATURE_HEADER, v);
            }
        }
        let sent = self.http.post(self.url.clone()).headers(headers).body(req.body.clone()).send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                };
                // reqwest's message names the URL; show the error's cause only.
                let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
                return Outcome::Retry { reason: format!("{} {what}: {cause}", self.shown), after: None };
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        if status.is_success() {
            return Outcome::Delivered { pause: discord_bucket_pause(&headers) };
        }
        let body = resp.bytes().await.unwrap_or_default();
        classify(status, &headers, &body, &self.shown)
    }
}

/// What a non-2xx response means.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], shown: &str) -> Outcome {
    let reason = format!("HTTP {status} from {shown}{}", body_excerpt(body));
    match status.as_u16() {
        429 | 503 => {
            let after = [retry_after(headers), json_retry_after(body)].into_iter().flatten().max();
            Outcome::Retry { reason, after }
        }
        408 | 425 | 500..=599 => Outcome::Retry { reason, after: retry_after(headers) },
        401 | 403 => Outcome::Auth { reason },
        _ => Outcome::Refused { reason },
    }
}

/// `: <body>`, cut to [`MAX_BODY_KEPT`] bytes on a character boundary, on one line.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut end = text.len().min(MAX_BODY_KEPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < text.len() { "…" } else { "" };
    format!(": {}{cut}", text[..end].replace(['\n', '\r'], " "))
}

/// `Retry-After` as delay-seconds or an HTTP date (a date in the past: now).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    // Dates have a resolution of one second: round up, never retry early.
    Some(at.duration_since(SystemTime::now()).map(|d| d + Duration::from_millis(999)).unwrap_or(Duration::ZERO))
}

/// Discord's and Slack's 429 bodies: `{"retry_after": 1.5, …}` (seconds).
fn json_retry_after(body: &[u8]) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let secs = v.get("retry_after")?.as_f64()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Discord's bucket headers on a success: when `X-RateLimit-Remaining` is 0,
/// the next request waits `X-RateLimit-Reset-After` seconds.
fn discord_bucket_pause(headers: &HeaderMap) -> Option<Duration> {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
    if get("x-ratelimit-remaining")?.parse::<f64>().ok()? > 0.0 {
        return None;
    }
    let secs = get("x-ratelimit-reset-after")?.parse::<f64>().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn signature_matches_a_known_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(hex(&mac.finalize().into_bytes()), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Ours signs "<t>.<body>".
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap();
        mac.update(b"12.{}");
        assert_eq!(sign(b"k", 12, b"{}"), hex(&mac.finalize().into_bytes()));
        assert!(signature_header(b"k", 12, b"{}").starts_with("t=12,v1="));
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(retry_after(&headers(&[("retry-after", "7")])), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = retry_after(&headers(&[("retry-after", &later)])).unwrap();
        assert!(d >= Duration::from_secs(119) && d <= Duration::from_secs(121), "{d:?}");
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
    }

    #[test]
    fn statuses_are_classified() {
        let h = headers(&[("retry-after", "3")]);
        assert!(
            matches!(classify(StatusCode::TOO_MANY_REQUESTS, &h, b"", "x"), Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(3))
        );
        let body = br#"{"message":"You are being rate limited.","retry_after":4.5,"global":false}"#;
        assert!(
            matches!(classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body, "x"), Outcome::Retry { after: Some(d), .. } if d == Duration::from_millis(4500))
        );
        assert!(matches!(classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"", "x"), Outcome::Retry { after: None, .. }));
        assert!(matches!(classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b"", "x"), Outcome::Auth { .. }));
        let long = "e".repeat(2000);
        match classify(StatusCode::UNPROCESSABLE_ENTITY, &HeaderMap::new(), long.as_bytes(), "https://h") {
            Outcome::Refused { reason } => {
                assert!(reason.starts_with("HTTP 422 Unprocessable Entity from https://h: eee"), "{reason}");
                assert!(reason.len() < 600 && reason.ends_with('…'), "{}", reason.len());
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn discord_bucket_headers_pause_only_when_spent() {
        let spent = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset-after", "1.25")]);
        assert_eq!(discord_bucket_pause(&spent), Some(Duration::from_millis(1250)));
        let left = headers(&[("x-ratelimit-remaining", "3"), ("x-ratelimit-reset-after", "1.25")]);
        assert_eq!(discord_bucket_pause(&left), None);
        assert_eq!(discord_bucket_pause(&HeaderMap::new()), None);
    }
}
