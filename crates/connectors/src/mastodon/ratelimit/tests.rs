use chrono::TimeZone;
use reqwest::header::HeaderValue;

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn window(limit: u32, remaining: u32, reset: DateTime<Utc>) -> HeaderMap {
    headers(&[
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    ])
}

#[test]
fn reset_forms() {
    let now = at("2026-08-01T13:57:12Z");
    // Mastodon: ISO 8601 with microseconds.
    assert_eq!(parse_reset("2026-08-01T13:55:00.212100Z", now), Some(at("2026-08-01T13:55:00.2121Z")));
    // ISO without fraction, with an offset, and without a zone (read as UTC).
    assert_eq!(parse_reset("2026-08-01T14:00:00Z", now), Some(at("2026-08-01T14:00:00Z")));
    assert_eq!(parse_reset("2026-08-01T16:00:00+02:00", now), Some(at("2026-08-01T14:00:00Z")));
    assert_eq!(parse_reset("2026-08-01T14:00:00.5", now), Some(at("2026-08-01T14:00:00.5Z")));
    // GoToSocial: Unix seconds.
    assert_eq!(parse_reset("1785592800", now), Some(Utc.timestamp_opt(1_785_592_800, 0).unwrap()));
    assert_eq!(parse_reset(" 1785592800.5 ", now), Some(Utc.timestamp_millis_opt(1_785_592_800_500).unwrap()));
    // Small numbers are seconds from now.
    assert_eq!(parse_reset("30", now), Some(at("2026-08-01T13:57:42Z")));
    // Garbage.
    for bad in ["", "soon", "-5", "1e10", "NaN", "inf", "2026-13-01T00:00:00Z", "1.2.3", "99999999999999999999"] {
        assert_eq!(parse_reset(bad, now), None, "{bad:?}");
    }
}

#[test]
fn retry_after_forms() {
    let now = at("2026-08-01T13:57:12Z");
    assert_eq!(parse_retry_after("30", now), Some(at("2026-08-01T13:57:42Z")));
    assert_eq!(parse_retry_after("Sat, 01 Aug 2026 14:00:00 GMT", now), Some(at("2026-08-01T14:00:00Z")));
    assert_eq!(parse_retry_after("later", now), None);
}

#[tokio::test(start_paused = true)]
async fn a_429_blocks_until_the_reset() {
    let limiter = RateLimiter::default();
    let now = Utc::now();
    limiter.observe_at(&window(300, 0, now + chrono::Duration::seconds(10)), 429, now);
    let until = limiter.blocked_until().expect("blocked");
    assert!((until - now - chrono::Duration::seconds(10)).num_milliseconds().abs() < 5);

    let t0 = Instant::now();
    limiter.acquire().await;
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(10), "{waited:?}");
    assert!(waited < Duration::from_secs(11), "{waited:?}");
    assert!(limiter.blocked_until().is_none());
    // The window is over: the next request goes at once.
    let t1 = Instant::now();
    limiter.acquire().await;
    assert_eq!(t1.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_headers_blocks_for_a_default_and_503_honours_retry_after() {
    let limiter = RateLimiter::default();
    limiter.observe(&HeaderMap::new(), 429);
    let t0 = Instant::now();
    limiter.acquire().await;
    assert!(t0.elapsed() >= DEFAULT_BLOCK);

    let limiter = RateLimiter::default();
    limiter.observe(&headers(&[("retry-after", "30".into())]), 503);
    let t0 = Instant::now();
    limiter.acquire().await;
    assert!(t0.elapsed() >= Duration::from_secs(30) && t0.elapsed() < Duration::from_secs(31));
    // Retry-After on a 200 is not a block.
    let limiter = RateLimiter::default();
    limiter.observe(&headers(&[("retry-after", "30".into())]), 200);
    assert!(limiter.blocked_until().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_waits_for_the_reset_even_without_429() {
    let limiter = RateLimiter::default();
    let now = Utc::now();
    limiter.observe_at(&window(300, 0, now + chrono::Duration::seconds(5)), 200, now);
    let t0 = Instant::now();
    limiter.acquire().await;
    assert!(t0.elapsed() >= Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_plentiful_budget_does_not_wait() {
    let limiter = RateLimiter::default();
    let now = Utc::now();
    limiter.observe_at(&window(300, 299, now + chrono::Duration::seconds(300)), 200, now);
    let t0 = Instant::now();
    for _ in 0..100 {
        limiter.acquire().await;
    }
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_low_budget_is_spread_until_the_reset() {
    let limiter = RateLimiter::default();
    let now = Utc::now();
    // 100 left for 200 s: about one request every 2 s, never a burst.
    limiter.observe_at(&window(300, 100, now + chrono::Duration::seconds(200)), 200, now);
    let t0 = Instant::now();
    limiter.acquire().await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "the first request goes at once");
    let mut gaps = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        limiter.acquire().await;
        gaps.push(t.elapsed());
    }
    for g in &gaps {
        assert!(*g >= Duration::from_millis(1900) && *g <= Duration::from_millis(2100), "{gaps:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn spending_the_last_request_locally_blocks_the_next() {
    let limiter = RateLimiter::default();
    let now = Utc::now();
    limiter.observe_at(&window(300, 1, now + chrono::Duration::seconds(60)), 200, now);
    limiter.acquire().await; // paced, but the first one goes
    let t0 = Instant::now();
    limiter.acquire().await;
    assert!(t0.elapsed() >= Duration::from_secs(60), "{:?}", t0.elapsed());
}

#[tokio::test(start_paused = true)]
async fn out_of_order_responses_keep_the_lowest_count_of_a_window() {
    let limiter = RateLimiter::default();
    let now = Utc::now();
    let reset = now + chrono::Duration::seconds(60);
    limiter.observe_at(&window(300, 0, reset), 200, now);
    // A late response from earlier in the same window (reset jitters by micros).
    limiter.observe_at(&window(300, 250, reset + chrono::Duration::milliseconds(300)), 200, now);
    assert!(limiter.blocked_until().is_some());
    // A new window replaces the old one.
    limiter.observe_at(&window(300, 299, reset + chrono::Duration::seconds(300)), 200, now);
    assert!(limiter.blocked_until().is_none());
}

#[tokio::test(start_paused = true)]
async fn acquire_is_cancel_safe() {
    let limiter = RateLimiter::default();
    let now = Utc::now();
    limiter.observe_at(&window(300, 0, now + chrono::Duration::seconds(10)), 429, now);
    let t0 = Instant::now();
    let cancelled = tokio::time::timeout(Duration::from_secs(3), limiter.acquire()).await;
    assert!(cancelled.is_err());
    assert!(limiter.blocked_until().is_some());
    limiter.acquire().await;
    assert!(t0.elapsed() >= Duration::from_secs(10));
}

#[test]
fn registry_keys_by_host_and_token_without_storing_it() {
    let reg = RateLimiters::default();
    let t = Secret::new("tok-abc");
    let a = reg.get("Example.Social", Some(&t));
    let b = reg.get("example.social", Some(&Secret::new("tok-abc")));
    assert!(Arc::ptr_eq(&a.0, &b.0));
    assert!(!Arc::ptr_eq(&a.0, &reg.get("example.social", None).0));
    assert!(!Arc::ptr_eq(&a.0, &reg.get("example.social:8443", Some(&t)).0));
    assert!(!format!("{reg:?}").contains("tok-abc"));
}

#[tokio::test(start_paused = true)]
async fn whole_unix_seconds_wait_out_the_named_second() {
    let limiter = RateLimiter::default();
    let now = at("2026-08-01T13:57:12.900Z");
    let reset = headers(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", (now.timestamp() + 2).to_string())]);
    limiter.observe_at(&reset, 429, now);
    // Reset names 13:57:14, which may mean up to 13:57:14.999: wait until 13:57:15.
    assert_eq!(limiter.blocked_until(), Some(at("2026-08-01T13:57:15Z")));
    let t0 = Instant::now();
    limiter.acquire().await;
    assert!(t0.elapsed() >= Duration::from_millis(2100), "{:?}", t0.elapsed());
}

/// A handle with a share waits once only the reserved part of the window is
/// left; a handle without one goes on until the budget is spent.
#[tokio::test(start_paused = true)]
async fn a_share_leaves_the_rest_of_the_window_to_others() {
    let limiter = RateLimiter::default();
    let now = Utc::now();
    // 100 per window, 60 left: a quarter share (75 reserved) must wait, a half share (50 reserved) may go.
    limiter.observe_at(&window(100, 60, now + chrono::Duration::seconds(20)), 200, now);
    let t0 = Instant::now();
    limiter.wait_for_headroom(0.5).await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "60 left, 50 reserved: go");
    limiter.wait_for_headroom(0.75).await;
    assert!(t0.elapsed() >= Duration::from_secs(20), "60 left, 75 reserved: wait for the reset ({:?})", t0.elapsed());
    // The reserved part is still there for a handle without a share.
    let limiter = RateLimiter::default();
    limiter.observe_at(&window(100, 50, Utc::now() + chrono::Duration::seconds(20)), 200, Utc::now());
    let t1 = Instant::now();
    limiter.acquire().await;
    assert!(t1.elapsed() < Duration::from_secs(1), "{:?}", t1.elapsed());
}
