//! A way into a token-guarded server for browsers, which cannot send an
//! `Authorization` header: `GET /login` shows a form, `POST /login` takes the
//! token in the body (never in a URL, so it stays out of history, logs and
//! `Referer`) and, when it is right, sets a session cookie; `POST /logout`
//! clears it.
//!
//! The cookie (`fedistream_session`) holds `HMAC-SHA256(token, "fedistream
//! dashboard session")` in hex: it proves the token was known without being
//! it, so the token cannot be read back from a browser, and rotating the token
//! ends every session. It is `HttpOnly` (scripts cannot read it),
//! `SameSite=Strict` (other sites cannot make the browser send it), `Path=/`,
//! lasts as long as the browser session, and is `Secure` with `[http]
//! secure_cookie = true` (behind an HTTPS proxy). The same check as the bearer
//! header accepts it ([`super::require_token`]), so the page, its feed
//! (`EventSource`) and its charts work with it alone. The pages are plain
//! HTML under the server's Content-Security-Policy (no inline script or
//! style); a wrong token is answered 401 without echoing what was sent.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "fedistream_session";

/// The session cookie's value for `token`.
pub fn session_value(token: &str) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"fedistream dashboard session");
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session cookie of a request, decoded; `None` when absent or malformed.
pub fn session_of(headers: &HeaderMap) -> Option<[u8; 32]> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
    if value.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(value.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn page(code: StatusCode, message: Option<&str>) -> Response {
    let note = message.map(|m| format!("<p role=\"alert\">{}</p>", super::dashboard::render::esc(m))).unwrap_or_default();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>fedistream: sign in</title></head><body><main><h1>fedistream</h1>{note}\
         <form method=\"post\" action=\"/login\"><p><label for=\"token\">Access token</label> \
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required></p>\
         <p><button type=\"submit\">Sign in</button></p></form></main></body></html>\n"
    );
    (code, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn see_other(to: &'static str, cookie: Option<String>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to), (header::CACHE_CONTROL, "no-store")]).into_response();
    if let Some(c) = cookie.and_then(|c| c.parse().ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `GET /login`: the form (no token required: to the dashboard).
pub async fn form(State(s): State<AppState>) -> Response {
    match s.token_sha256 {
        None => see_other("/", None),
        Some(_) => page(StatusCode::OK, None),
    }
}

/// `POST /login` (`application/x-www-form-urlencoded`, field `token`).
pub async fn submit(State(s): State<AppState>, ext: axum::http::Extensions, body: axum::body::Bytes) -> Response {
    let Some(want) = s.token_sha256 else { return see_other("/", None) };
    let (client, now) = (super::throttle::client_of(&ext), std::time::Instant::now());
    if let Some(wait) = s.throttle.blocked(client, now) {
        return super::throttle::too_many(wait);
    }
    let given = url::form_urlencoded::parse(&body).find(|(k, _)| k == "token").map(|(_, v)| v.trim().to_string());
    let right = given.as_deref().is_some_and(|t| super::same(&super::digest(t), &want));
    match (right, given) {
        (true, Some(token)) => {
            let secure = if s.secure_cookie { "; Secure" } else { "" };
            let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}", hex(&session_value(&token)));
            see_other("/", Some(cookie))
        }
        _ => {
            s.throttle.failed(client, now);
            tracing::info!("Dashboard sign-in refused: wrong token");
            page(StatusCode::UNAUTHORIZED, Some("That token is not the one this server expects."))
        }
    }
}

/// `POST /logout`: the cookie is cleared.
pub async fn logout(State(s): State<AppState>) -> Response {
    let secure = if s.secure_cookie { "; Secure" } else { "" };
    see_other("/login", Some(format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")))
}
