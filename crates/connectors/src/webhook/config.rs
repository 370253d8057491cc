//! The webhook channel's configuration and its checks (pure: no I/O besides
//! looking at whether the named environment variables are set).

use std::time::Duration;

use fedistream_core::runtime::DeliveryConfig;
use serde::{Deserialize, Serialize};

/// How a record becomes a request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The record's JSON line (what the file channel writes), or with `batch`
    /// a JSON array of them.
    #[default]
    Json,
    /// A Discord incoming-webhook message (one per post).
    Discord,
    /// A Slack incoming-webhook message (one per post).
    Slack,
}

impl WebhookFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Discord => "discord",
            WebhookFormat::Slack => "slack",
        }
    }
}

/// Requests in flight when `delivery.max_in_flight` is not set.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Most records in one batched request.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Where to POST (`https://…`, or `http://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The name of an environment variable holding the URL instead (Discord and
    /// Slack webhook URLs are secrets: whoever has one can post).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// The name of an environment variable holding the HMAC secret; without
    /// it requests are not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Records per request as a JSON array (`format = "json"` only); unset:
    /// one record per request, the body being the record itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// How long one request may take (connect, send, response).
    #[serde(default = "default_timeout", with = "fedistream_core::units::duration")]
    pub timeout: Duration,
    /// Longest wait a server's `Retry-After` is honoured with.
    #[serde(default = "default_max_retry_after", with = "fedistream_core::units::duration")]
    pub max_retry_after: Duration,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_retry_after() -> Duration {
    Duration::from_secs(3600)
}

/// One problem with a webhook config: the key (relative to the channel's
/// table) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

fn problem(key: &str, reason: impl Into<String>) -> Problem {
    Problem { key: key.to_string(), reason: reason.into() }
}

impl WebhookSinkConfig {
    /// A config posting to `url` with everything else at its default (tests, tools).
    pub fn new(url: &str) -> Self {
        WebhookSinkConfig {
            url: Some(url.to_string()),
            url_env: None,
            secret_env: None,
            format: WebhookFormat::Json,
            batch: None,
            timeout: default_timeout(),
            max_retry_after: default_max_retry_after(),
            delivery: DeliveryConfig::default(),
        }
    }

    pub fn max_in_flight(&self) -> usize {
        self.delivery.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT)
    }

    /// Every problem; with `check_secrets`, also that the named environment
    /// variables are set (values are never shown).
    pub fn validate(&self, check_secrets: bool) -> Vec<Problem> {
        let mut out = Vec::new();
        match (&self.url, &self.url_env) {
            (Some(_), Some(_)) => out.push(problem("url", "give either url or url_env, not both")),
            (None, None) => out.push(problem("url", "no url: set url, or url_env (the name of an environment variable)")),
            (Some(u), None) => {
                if let Err(e) = parse_url(u) {
                    out.push(problem("url", e));
                }
            }
            (None, Some(var)) => {
                if check_secrets {
                    match std::env::var(var) {
                        Ok(u) if !u.trim().is_empty() => {
                            if let Err(e) = parse_url(u.trim()) {
                                // The URL may be a secret: say what is wrong, not what it is.
                                out.push(problem("url_env", format!("the environment variable {var} does not hold a usable URL: {e}")));
                            }
                        }
                        _ => out.push(problem("url_env", format!("the environment variable {var} is not set"))),
                    }
                }
            }
        }
        if let Some(var) = &self.secret_env {
            if check_secrets && std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                out.push(problem("secret_env", format!("the environment variable {var} is not set")));
            }
        }
        match self.batch {
            Some(_) if self.format != WebhookFormat::Json => out.push(problem(
                "batch",
                format!("format = \"{}\" sends one message per post; batch works with format = \"json\" only", self.format.as_str()),
            )),
            Some(n) if n == 0 || n > MAX_BATCH => out.push(problem("batch", format!("must be between 1 and {MAX_BATCH}"))),
            _ => {}
        }
        if self.delivery.max_in_flight == Some(0) {
            out.push(problem("delivery.max_in_flight", "must be at least 1"));
        }
        if self.timeout.is_zero() {
            out.push(problem("timeout", "must be longer than 0s"));
        }
        out
    }
}

/// A webhook URL: absolute, `http` or `https`, with a host, no credentials
/// (they would end up in logs of proxies; use the signature secret instead).
/// Errors never repeat the URL (it may be a secret).
pub fn parse_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("the scheme must be https or http, not `{}`", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the URL must not carry a user name or password".into());
    }
    Ok(u)
}

/// What logs and errors show of a webhook URL: scheme, host and port only
/// (the path of a Discord or Slack webhook is its secret).
pub fn redacted(u: &url::Url) -> String {
    match u.port() {
        Some(p) => format!("{}://{}:{p}", u.scheme(), u.host_str().unwrap_or("")),
        None => format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")),
    }
}
