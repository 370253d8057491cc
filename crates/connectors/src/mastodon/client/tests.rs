use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon/");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}{name}")).expect("fixture")
}

fn json_fixture(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).expect("fixture json")
}

#[test]
fn link_headers_of_the_recorded_pages() {
    let doc = json_fixture("rest_account_statuses_pagination.json");
    let exchanges = doc["exchanges"].as_array().expect("exchanges");
    let mut seen = vec![];
    for ex in exchanges {
        let link = ex["response"]["headers"]["link"].as_str().expect("link");
        let ids: Vec<&str> = ex["response"]["body_status_ids_in_order"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let (next, prev) = parse_link_header(link);
        // rel="next" pages back from the oldest id, rel="prev" forward from the newest.
        assert_eq!(next.as_deref(), ids.last().copied());
        assert_eq!(prev.as_deref(), ids.first().copied());
        seen.push((next, prev));
    }
    assert_eq!(seen[0].0.as_deref(), Some("117020580489281910"));
    assert_eq!(seen[2].1.as_deref(), Some("117020580518794573"));
}

#[test]
fn link_header_variants() {
    assert_eq!(parse_link_header(""), (None, None));
    assert_eq!(parse_link_header("garbage, <not a url>; rel=\"next\""), (None, None));
    // Only prev (a non-full page), unquoted rel, extra params, odd spacing.
    let v = "<https://h.example/api/v1/accounts/1/statuses?min_id=42&limit=40>;rel=prev ; title=x";
    assert_eq!(parse_link_header(v), (None, Some("42".to_string())));
    // GoToSocial-style ULIDs and a rel list.
    let v = r#"<https://g.example/x?max_id=01HQ0000000000000000000000>; rel="next last""#;
    assert_eq!(parse_link_header(v), (Some("01HQ0000000000000000000000".into()), None));
}

#[test]
fn secret_is_never_printed() {
    let s = Secret::new("super-secret-token");
    assert_eq!(format!("{s}"), "***");
    assert_eq!(format!("{s:?}"), "***");
    let cfg = ClientConfig::new("https://example.social".parse().unwrap(), Some(s.clone()));
    assert!(!format!("{cfg:?}").contains("super-secret"));
    let client = MastodonClient::new(cfg, &RateLimiters::default()).unwrap();
    assert!(!format!("{client:?}").contains("super-secret"));
    assert_eq!(s.expose(), "super-secret-token");
}

#[test]
fn secret_from_env_and_file_name_the_source_not_the_value() {
    let var = "FEDISTREAM_TEST_TOKEN_CLIENT_RS";
    let err = token_from_env(var).unwrap_err();
    assert!(err.to_string().contains(var), "{err}");
    assert_eq!(err.kind(), fedistream_core::ErrorKind::Config);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let err = token_from_file(&path).unwrap_err();
    assert!(err.to_string().contains("token file"), "{err}");
    std::fs::write(&path, "abc-123_XYZ\n").unwrap();
    assert_eq!(token_from_file(&path).unwrap().expose(), "abc-123_XYZ");
    std::fs::write(&path, "  \n").unwrap();
    assert!(token_from_file(&path).unwrap_err().to_string().contains("empty"));
    std::fs::write(&path, "bad\u{7}value-zzz").unwrap();
    let err = token_from_file(&path).unwrap_err().to_string();
    assert!(!err.contains("value-zzz"), "{err}");
}

#[test]
fn instance_info_from_both_versions() {
    let v2 = InstanceInfo::from_v2(&json_fixture("instance_v2.json")).unwrap();
    let v1 = InstanceInfo::from_v1(&json_fixture("instance_v1.json")).unwrap();
    for info in [&v2, &v1] {
        assert_eq!(info.domain, "localhost:3000");
        assert_eq!(info.version, "4.6.4");
        assert_eq!(info.streaming_url.as_ref().map(|u| u.as_str()), Some("ws://localhost:4000/"));
        assert_eq!(info.max_characters, Some(500));
    }
    let pleroma = serde_json::json!({"uri": "https://pl.example", "version": "2.7.2 (compatible; Pleroma 2.5)", "max_toot_chars": 5000});
    let p = InstanceInfo::from_v1(&pleroma).unwrap();
    assert_eq!((p.domain.as_str(), p.max_characters, p.streaming_url), ("pl.example", Some(5000), None));
}

#[test]
fn account_ref_from_credential_account() {
    let a = AccountRef::from_json(json_fixture("credential_account.json")).unwrap();
    assert_eq!((a.id.as_str(), a.acct.as_str(), a.username.as_str()), ("117020617136550219", "admin", "admin"));
    assert_eq!(a.url.as_deref(), Some("http://localhost:3000/@admin"));
    assert!(AccountRef::from_json(serde_json::json!({"acct": "x"})).is_none());
}

#[test]
fn urls_keep_a_path_prefix_and_escape_ids() {
    let cfg = ClientConfig::new("https://example.social/mastodon".parse().unwrap(), None);
    let c = MastodonClient::new(cfg, &RateLimiters::default()).unwrap();
    assert_eq!(c.base_url().as_str(), "https://example.social/mastodon/");
    let u = c.url_with_segments(&["api", "v1", "statuses", "a/b?c"]);
    assert_eq!(u.as_str(), "https://example.social/mastodon/api/v1/statuses/a%2Fb%3Fc");
    assert_eq!(c.host(), "example.social");
    assert!(!c.has_token());
    let cfg = ClientConfig::new("http://127.0.0.1:3000".parse().unwrap(), None);
    assert_eq!(MastodonClient::new(cfg, &RateLimiters::default()).unwrap().host(), "127.0.0.1:3000");
    let bad = ClientConfig::new("ftp://x.example".parse().unwrap(), None);
    assert!(MastodonClient::new(bad, &RateLimiters::default()).is_err());
}

#[test]
fn page_queries_clamp_the_limit() {
    assert_eq!(Page::Latest { limit: 100 }.query(), vec![("limit", "40".to_string())]);
    assert_eq!(Page::After { min_id: "7".into(), limit: 0 }.query(), vec![("limit", "1".to_string()), ("min_id", "7".to_string())]);
    assert_eq!(Page::Before { max_id: "9".into(), limit: 20 }.query(), vec![("limit", "20".to_string()), ("max_id", "9".to_string())]);
}

#[test]
fn clients_of_one_host_and_token_share_a_limiter() {
    let limiters = RateLimiters::default();
    let mk = |tok: Option<&str>| {
        let cfg = ClientConfig::new("https://example.social".parse().unwrap(), tok.map(Secret::new));
        MastodonClient::new(cfg, &limiters).unwrap()
    };
    let (a, b, c, anon) = (mk(Some("t1")), mk(Some("t1")), mk(Some("t2")), mk(None));
    let mut headers = HeaderMap::new();
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    headers.insert("x-ratelimit-reset", HeaderValue::from_static("2999-01-01T00:00:00Z"));
    a.limiter().observe(&headers, 429);
    assert!(b.limiter().blocked_until().is_some());
    assert!(c.limiter().blocked_until().is_none());
    assert!(anon.limiter().blocked_until().is_none());
}
