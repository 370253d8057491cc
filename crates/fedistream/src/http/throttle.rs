//! Wrong tokens, counted per client address: after [`MAX_FAILURES`] wrong
//! tokens (a bearer header, a session cookie or a `/login` form) within
//! [`WINDOW`], that address is answered `429 Too Many Requests` with
//! `Retry-After` until the window ends — its token is not even checked, so
//! guessing cannot go faster than that. A request that presents no credential
//! at all (a browser opening `/`) is not a failure. Addresses are the TCP
//! peers: behind a reverse proxy every client shares the proxy's address, and
//! so its budget. At most [`MAX_CLIENTS`] addresses are remembered; past that
//! the oldest windows are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens an address may send per [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in, from an address's first failure.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most.
pub const MAX_CLIENTS: usize = 4096;

/// Failed attempts per client address. A request without a known peer (the
/// router called directly, as in-process tests do) is not counted: the server
/// always records its peers.
#[derive(Default)]
pub struct AuthThrottle {
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `client` must wait, when it has used up its failures.
    pub fn blocked(&self, client: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let clients = self.lock();
        let (since, failures) = clients.get(&client?)?;
        let ends = *since + WINDOW;
        (*failures >= MAX_FAILURES && now < ends).then(|| ends - now)
    }

    /// One more wrong token from `client`.
    pub fn failed(&self, client: Option<IpAddr>, now: Instant) {
        let Some(client) = client else { return };
        let mut clients = self.lock();
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, (since, _)| now < *since + WINDOW);
            if clients.len() >= MAX_CLIENTS {
                if let Some(oldest) = clients.iter().min_by_key(|(_, (since, _))| *since).map(|(k, _)| *k) {
                    clients.remove(&oldest);
                }
            }
        }
        let entry = clients.entry(client).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// The `429` an address over its budget gets.
pub fn too_many(retry_after: Duration) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let secs = retry_after.as_secs().max(1);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        axum::Json(serde_json::json!({ "error": format!("too many wrong tokens from this address; try again in {secs} s") })),
    )
        .into_response()
}

/// The client's address, when the server recorded it (`axum::serve` with connect info).
pub fn client_of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_until_the_window_ends() {
        let t = AuthThrottle::default();
        let (a, b) = (Some("192.0.2.1".parse().unwrap()), Some("192.0.2.2".parse().unwrap()));
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(t.blocked(a, t0), None, "after {i} failures");
            t.failed(a, t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(t.blocked(a, t0 + Duration::from_secs(20)), Some(Duration::from_secs(40)));
        assert_eq!(t.blocked(b, t0 + Duration::from_secs(20)), None, "another address has its own budget");
        // The window ends: a fresh budget.
        assert_eq!(t.blocked(a, t0 + WINDOW), None);
        t.failed(a, t0 + WINDOW);
        assert_eq!(t.blocked(a, t0 + WINDOW), None);
        // An unknown peer is not counted.
        for _ in 0..2 * MAX_FAILURES {
            t.failed(None, t0);
        }
        assert_eq!(t.blocked(None, t0), None);
    }

    #[test]
    fn the_remembered_addresses_are_bounded() {
        let t = AuthThrottle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            t.failed(Some(IpAddr::from(i.to_be_bytes())), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(t.lock().len(), MAX_CLIENTS);
        // The newest are the ones kept.
        assert!(t.lock().contains_key(&IpAddr::from((MAX_CLIENTS as u32 + 9).to_be_bytes())));
        assert!(!t.lock().contains_key(&IpAddr::from(0u32.to_be_bytes())));
    }
}
