//! The dashboard at `/`: per-component health and per-channel lag, activity
//! charts (server-side SVG, [`charts`]) overall or for one account, and a live
//! feed of posts that a small script served from the binary keeps current from
//! `/api/events?format=html` (new posts appear, edits replace, deletes
//! remove). The page reads without JavaScript (the script only adds the live
//! updates); its stylesheet and script are files, never inline.
//!
//! Remote content is untrusted: [`render`] sanitises it on the server, for the
//! page and the feed alike, and every response carries a strict
//! Content-Security-Policy ([`CSP`]) whose violation reports `/csp-report`
//! counts (`fedistream_csp_reports_total`).

pub mod charts;
pub mod data;
pub mod render;

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use render::esc;

/// Every response of the server carries it: scripts, styles, images and
/// connections from the server itself only, nothing inline, no plugins,
/// frames or forms elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                       form-action 'self'; base-uri 'none'; frame-ancestors 'none'; report-uri /csp-report";

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The security headers, on every response.
pub async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

fn off() -> Response {
    (StatusCode::NOT_FOUND, "the dashboard is not served by this process\n").into_response()
}

pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `POST /csp-report`: a browser's report of something the policy blocked. Counted, not stored.
pub async fn csp_report(body: axum::body::Bytes) -> StatusCode {
    metrics::counter!("fedistream_csp_reports_total").increment(1);
    tracing::debug!(bytes = body.len(), "Content-Security-Policy violation reported");
    StatusCode::NO_CONTENT
}

fn account_param(q: &HashMap<String, String>) -> Option<String> {
    q.get("account").map(|a| a.trim().trim_start_matches('@').to_lowercase()).filter(|a| !a.is_empty())
}

/// `GET /dashboard/chart/{name}.svg[?account=user@host]`.
pub async fn chart(State(s): State<AppState>, Path(file): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(d) = &s.dashboard else { return off() };
    let Some(name) = file.strip_suffix(".svg") else { return (StatusCode::NOT_FOUND, "no such chart\n").into_response() };
    let Some((_, title)) = charts::CHARTS.iter().find(|(n, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such chart\n").into_response();
    };
    let account = account_param(&q);
    let summary = match d.summary(account.as_deref()).await {
        Ok(s) => s,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")).into_response(),
    };
    let (rows, sideways) = charts::rows(&summary, name).unwrap_or_default();
    let title = match &account {
        Some(a) => format!("{title}, @{a}"),
        None => title.to_string(),
    };
    let title = if matches!(name, "hours" | "weekdays") { format!("{title} ({})", summary.zone) } else { title };
    match charts::svg(&title, &rows, sideways) {
        Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-cache")], svg).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn age(now: chrono::DateTime<chrono::Utc>, t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    match t {
        None => "—".into(),
        Some(t) => {
            let s = (now - t).num_seconds().max(0);
            match s {
                0..=119 => format!("{s} s ago"),
                120..=7199 => format!("{} min ago", s / 60),
                _ => format!("{} h ago", s / 3600),
            }
        }
    }
}

/// `GET /`: the page.
pub async fn page(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(d) = &s.dashboard else { return off() };
    let account = account_param(&q);
    let now = chrono::Utc::now();
    let mut h = String::with_capacity(64 * 1024);
    h.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>fedistream dashboard</title><link rel=\"stylesheet\" href=\"/dashboard/app.css\">\
         <script src=\"/dashboard/app.js\" defer></script></head><body>\
         <header class=\"top\"><h1>fedistream</h1>",
    );
    if s.token_sha256.is_some() {
        // Signed in with the cookie of /login (or a bearer token): a way out.
        h.push_str("<form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form>");
    }
    // Health: every component's state, channels with their lag.
    let snap = crate::status::snapshot(&*s.log).await;
    match &snap {
        Ok(snap) => {
            let _ = write!(h, "<p>{} log, {} events</p></header><main>", esc(snap.info.backend), snap.info.events);
            let problems = super::health::not_ready(&s.expected, s.scope.as_deref(), &snap.docs, s.started_at, s.stuck_after, now);
            h.push_str(
                "<section aria-labelledby=\"h-health\"><h2 id=\"h-health\">Sources and channels</h2><div class=\"scroll\"><table>\
                 <thead><tr><th scope=\"col\">Component</th><th scope=\"col\">State</th><th scope=\"col\">Ready</th>\
                 <th scope=\"col\">Last event</th><th scope=\"col\">Lag (events)</th><th scope=\"col\">Detail</th></tr></thead><tbody>",
            );
            for (key, doc) in &snap.docs {
                if doc.started_at.is_none_or(|t| t < s.started_at - chrono::Duration::seconds(1)) {
                    continue;
                }
                let name = key.split_once(':').map_or(key.as_str(), |(_, n)| n);
                let lag = s
                    .groups
                    .iter()
                    .filter(|(c, _)| key.starts_with("channel:") && (c == name || name.starts_with(&format!("{c}@"))))
                    .find_map(|(_, g)| snap.info.groups.iter().find(|x| &x.group == g))
                    .map_or("—".to_string(), |g| g.lag.to_string());
                let problem = problems.iter().find(|p| &p.component == key);
                let mut detail = doc.detail.clone().unwrap_or_default();
                if let Some(p) = problem {
                    detail = p.reason.clone();
                }
                for (part, why) in doc.parts.iter().take(5) {
                    let _ = write!(detail, "{}{part}: {why}", if detail.is_empty() { "" } else { "; " });
                }
                let _ = write!(
                    h,
                    "<tr><th scope=\"row\">{}</th><td><span class=\"state state-{}\">{}</span></td><td>{}</td><td>{}</td><td>{lag}</td><td>{}</td></tr>",
                    esc(key),
                    esc(&doc.state.replace(|c: char| !c.is_ascii_alphanumeric(), "")),
                    esc(&doc.state),
                    if problem.is_some() { "no" } else { "yes" },
                    age(now, doc.last_event_at),
                    esc(&detail),
                );
            }
            h.push_str("</tbody></table></div></section>");
        }
        Err(e) => {
            let _ = write!(h, "</header><main><p class=\"error\">Cannot read the log's status: {}</p>", esc(&format!("{e:#}")));
        }
    }
    // Charts.
    h.push_str("<section aria-labelledby=\"h-charts\"><h2 id=\"h-charts\">Activity</h2>");
    match d.summary(account.as_deref()).await {
        Ok(sum) => {
            h.push_str("<form method=\"get\" action=\"/\" class=\"pick\"><label for=\"account\">Account</label><select id=\"account\" name=\"account\"><option value=\"\">All accounts</option>");
            for (a, n) in sum.accounts.iter().take(500) {
                let sel = if account.as_deref() == Some(a.as_str()) { " selected" } else { "" };
                let _ = write!(h, "<option value=\"{}\"{sel}>@{} ({n})</option>", esc(a), esc(a));
            }
            h.push_str("</select> <button type=\"submit\">Show</button></form>");
            let _ = write!(
                h,
                "<p>{} posts{}, from {}; hours and weekdays in {}.</p><div class=\"charts\">",
                sum.posts,
                account.as_ref().map(|a| format!(" by @{}", esc(a))).unwrap_or_default(),
                esc(&sum.from),
                esc(&sum.zone)
            );
            let qs = account
                .as_ref()
                .map(|a| format!("?{}", url::form_urlencoded::Serializer::new(String::new()).append_pair("account", a).finish()));
            for (name, title) in charts::CHARTS {
                let (rows, sideways) = charts::rows(&sum, name).unwrap_or_default();
                let alt = esc(&charts::describe(title, &rows));
                let _ = write!(
                    h,
                    "<figure class=\"chart{}\"><img src=\"/dashboard/chart/{name}.svg{}\" alt=\"{alt}\" title=\"{alt}\" data-chart=\"{name}\"><figcaption>{}</figcaption></figure>",
                    if sideways { " side" } else { "" },
                    esc(qs.as_deref().unwrap_or("")),
                    esc(title)
                );
            }
            h.push_str("</div>");
        }
        Err(e) => {
            let _ = write!(h, "<p class=\"error\">No charts: {}</p>", esc(&format!("{e:#}")));
        }
    }
    h.push_str("</section>");
    // The live feed.
    let recent = d.recent().await;
    h.push_str("<section aria-labelledby=\"h-feed\"><h2 id=\"h-feed\">Live feed</h2>");
    match (&recent.unsupported, recent.after) {
        (Some(why), _) => {
            let _ = write!(h, "<p class=\"error\">No live feed on this log: {}</p>", esc(why));
        }
        (None, after) => {
            let after = after.map(|at| super::events::format_positions(at.iter().map(|p| (p.partition, p.offset)))).unwrap_or_default();
            let _ = write!(
                h,
                "<p id=\"feed-state\" role=\"status\">The newest {} posts; new ones appear here while the page is open.</p>\
                 <div id=\"feed\" data-src=\"/api/events?format=html\" data-after=\"{}\" aria-live=\"polite\">",
                data::RECENT,
                esc(&after)
            );
            for a in &recent.articles {
                h.push_str(a);
            }
            h.push_str("</div>");
        }
    }
    h.push_str("</section></main></body></html>\n");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], h).into_response()
}
