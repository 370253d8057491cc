//! Tests of the fake Mastodon's write API over real HTTP: posting (form and
//! JSON), `Idempotency-Key`, validation, edits, deletes, boosts, search, media
//! uploads and files, the posting/delete/media throttles and token checks.
//!
//! Synchronisation is by reading responses and stream bodies (with a timeout as
//! a guard), never by sleeping; the one wait is for a rate-limit reset, which is
//! the wall-clock behaviour under test.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fedistream_connectors::testing::{FakeConfig, FakeMastodon, Flavor, NewStatus};
use serde_json::{json, Value};

const READER: &str = "reader-token";
const PUBLISHER: &str = "publisher-token";
const WAIT: Duration = Duration::from_secs(5);

async fn start(cfg: FakeConfig) -> FakeMastodon {
    let server = FakeMastodon::start(FakeConfig { token: Some(READER.to_owned()), ..cfg }).await;
    server.add_token(PUBLISHER, "publisher");
    server
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().expect("ascii header").to_owned())
}

/// A request to `path` with the publisher's token.
fn req(server: &FakeMastodon, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().request(method, format!("{}{path}", server.base_url())).bearer_auth(PUBLISHER)
}

async fn post_form(server: &FakeMastodon, form: &[(&str, &str)], key: Option<&str>) -> reqwest::Response {
    let mut r = req(server, reqwest::Method::POST, "/api/v1/statuses").form(form);
    if let Some(key) = key {
        r = r.header("Idempotency-Key", key);
    }
    r.send().await.expect("request")
}

async fn ok_json(r: reqwest::Response) -> Value {
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{body}");
    body
}

async fn error_of(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.expect("json");
    body["error"].as_str().expect("error message").to_owned()
}

// ---------------------------------------------------------------- streams

async fn open_sse(server: &FakeMastodon) -> (reqwest::Response, String) {
    let url = format!("{}/api/v1/streaming/user", server.base_url());
    let mut resp = reqwest::Client::new().get(url).bearer_auth(READER).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut buf = String::new();
    read_until(&mut resp, &mut buf, ":)\n").await;
    (resp, buf)
}

async fn read_until(resp: &mut reqwest::Response, buf: &mut String, needle: &str) {
    let read = async {
        while !buf.contains(needle) {
            match resp.chunk().await.expect("body") {
                Some(chunk) => buf.push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                None => panic!("stream ended before {needle:?}; got {buf:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.unwrap_or_else(|_| panic!("no {needle:?} in {buf:?}"));
}

// ---------------------------------------------------------------- posting

#[tokio::test]
async fn post_form_and_json_create_statuses_like_post() {
    let server = start(FakeConfig::default()).await;
    let (mut sse, mut buf) = open_sse(&server).await;
    let form = [
        ("status", "Hello <b> & \"you\"\nsecond line\n\nnew paragraph #Rust https://example.com/a"),
        ("visibility", "unlisted"),
        ("language", "de"),
        ("spoiler_text", "cw"),
    ];
    let first = ok_json(post_form(&server, &form, None).await).await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(
        first["content"].as_str().unwrap(),
        "<p>Hello &lt;b&gt; &amp; &quot;you&quot;<br />second line</p><p>new paragraph \
         <a href=\"http://127.0.0.1:PORT/tags/rust\" class=\"mention hashtag\" rel=\"tag\">#<span>Rust</span></a> \
         <a href=\"https://example.com/a\" target=\"_blank\" rel=\"nofollow noopener\" translate=\"no\">\
         <span class=\"invisible\">https://</span><span class=\"\">example.com/a</span><span class=\"invisible\"></span></a></p>"
            .replace("127.0.0.1:PORT", &server.host())
    );
    assert_eq!(first["visibility"], "unlisted");
    assert_eq!(first["language"], "de");
    assert_eq!(first["sensitive"], true, "a content warning makes it sensitive");
    assert_eq!(first["spoiler_text"], "cw");
    assert_eq!(first["edited_at"], Value::Null);
    assert_eq!(first["account"]["username"], "publisher");
    assert_eq!(first["tags"], json!([{ "name": "rust", "url": format!("{}/tags/rust", server.base_url()) }]));
    read_until(&mut sse, &mut buf, &format!("\"id\":\"{id}\"")).await;
    assert!(buf.contains("event: update\n"), "{buf}");

    // JSON body, replying to the first (a thread).
    let reply = req(&server, reqwest::Method::POST, "/api/v1/statuses")
        .json(&json!({ "status": "two", "in_reply_to_id": id, "media_ids": [], "sensitive": false }))
        .send()
        .await
        .unwrap();
    let reply = ok_json(reply).await;
    assert_eq!(reply["content"], "<p>two</p>");
    assert_eq!(reply["in_reply_to_id"], id.as_str());
    assert_eq!(reply["in_reply_to_account_id"], first["account"]["id"]);
    assert_eq!(reply["visibility"], "public");

    let mine = server.statuses_by("publisher");
    let ids: Vec<&str> = mine.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [reply["id"].as_str().unwrap(), id.as_str()], "newest first");
    assert_eq!(mine[1]["replies_count"], 1);
    assert_eq!(server.posts_created("publisher"), 2);
    let posts: Vec<_> = server.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 2);
    assert!(posts.iter().all(|r| r.path == "/api/v1/statuses" && r.status == 200 && r.authorized));
}

#[tokio::test]
async fn idempotency_key_returns_the_original_per_account_for_an_hour() {
    let server = start(FakeConfig::default()).await;
    server.add_token("other-token", "other");
    let a = ok_json(post_form(&server, &[("status", "once")], Some("key-1")).await).await;
    // A repeat, even with another body, returns the original and creates nothing.
    let b = ok_json(post_form(&server, &[("status", "different")], Some("key-1")).await).await;
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["content"], "<p>once</p>");
    assert_eq!(server.statuses_by("publisher").len(), 1);
    assert_eq!(server.posts_created("publisher"), 1);
    let keys: Vec<Option<String>> = server.requests().into_iter().map(|r| r.idempotency_key).collect();
    assert_eq!(keys, [Some("key-1".to_owned()), Some("key-1".to_owned())]);

    // Keys are per posting account.
    let other = reqwest::Client::new()
        .post(format!("{}/api/v1/statuses", server.base_url()))
        .bearer_auth("other-token")
        .header("Idempotency-Key", "key-1")
        .form(&[("status", "once")])
        .send()
        .await
        .unwrap();
    let other = ok_json(other).await;
    assert_ne!(other["id"], a["id"]);
    assert_eq!(other["account"]["username"], "other");

    // After the hour, the same key posts again.
    server.expire_idempotency_keys();
    let c = ok_json(post_form(&server, &[("status", "once")], Some("key-1")).await).await;
    assert_ne!(c["id"], a["id"]);
    assert_eq!(server.posts_created("publisher"), 2);
}

#[tokio::test]
async fn validation_character_limit_urls_replies_and_blank() {
    let server = start(FakeConfig::default()).await;
    let at_limit = "a".repeat(500);
    ok_json(post_form(&server, &[("status", &at_limit)], None).await).await;
    let over = "a".repeat(501);
    let message = error_of(post_form(&server, &[("status", &over)], None).await, 422).await;
    assert_eq!(message, "Validation failed: Text character limit of 500 exceeded");

    // A 100-character URL counts as 23: 476 + 1 + 23 = 500 passes, one more fails.
    let url = format!("https://example.com/{}", "x".repeat(80));
    assert_eq!(url.len(), 100);
    let fits = format!("{} {url}", "a".repeat(476));
    ok_json(post_form(&server, &[("status", &fits)], None).await).await;
    let too_long = format!("{} {url}", "a".repeat(477));
    let message = error_of(post_form(&server, &[("status", &too_long)], None).await, 422).await;
    assert_eq!(message, "Validation failed: Text character limit of 500 exceeded");
    // The content warning counts too.
    let r = post_form(&server, &[("status", &at_limit), ("spoiler_text", "!")], None).await;
    assert_eq!(r.status(), 422);

    let r = post_form(&server, &[("status", "hi"), ("in_reply_to_id", "999")], None).await;
    assert_eq!(error_of(r, 404).await, "The post you are trying to reply to does not appear to exist.");
    let r = post_form(&server, &[("status", "  ")], None).await;
    assert_eq!(error_of(r, 422).await, "Validation failed: Text can't be blank");
    let r = post_form(&server, &[("status", "hi"), ("media_ids[]", "12345")], None).await;
    assert_eq!(r.status(), 422);
    assert_eq!(server.posts_created("publisher"), 2);
    assert_eq!(server.statuses_by("publisher").len(), 2);
}

// ------------------------------------------------------- edit, delete, boost

#[tokio::test]
async fn edit_sets_edited_at_and_streams_status_update() {
    let server = start(FakeConfig::default()).await;
    let (mut sse, mut buf) = open_sse(&server).await;
    let posted = ok_json(post_form(&server, &[("status", "before")], None).await).await;
    let id = posted["id"].as_str().unwrap().to_owned();
    read_until(&mut sse, &mut buf, "event: update\n").await;

    let r = req(&server, reqwest::Method::PUT, &format!("/api/v1/statuses/{id}"))
        .form(&[("status", "after"), ("language", "fr")])
        .send()
        .await
        .unwrap();
    let edited = ok_json(r).await;
    assert_eq!(edited["id"], id.as_str());
    assert_eq!(edited["content"], "<p>after</p>");
    assert_eq!(edited["language"], "fr");
    assert!(edited["edited_at"].is_string());
    read_until(&mut sse, &mut buf, "event: status.update\n").await;
    read_until(&mut sse, &mut buf, "<p>after</p>").await;
    assert_eq!(server.edits_of(&id), 1);
    assert_eq!(server.statuses_by("publisher")[0]["content"], "<p>after</p>");
    assert_eq!(server.posts_created("publisher"), 1);

    // Only one's own statuses.
    let foreign = server.post("alice", NewStatus::html("<p>hers</p>")).id;
    let r =
        req(&server, reqwest::Method::PUT, &format!("/api/v1/statuses/{foreign}")).form(&[("status", "mine now")]).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn delete_returns_source_text_and_streams_delete() {
    let server = start(FakeConfig::default()).await;
    let (mut sse, mut buf) = open_sse(&server).await;
    let posted = ok_json(post_form(&server, &[("status", "a < b\nline")], None).await).await;
    let id = posted["id"].as_str().unwrap().to_owned();

    let r = req(&server, reqwest::Method::DELETE, &format!("/api/v1/statuses/{id}")).send().await.unwrap();
    let deleted = ok_json(r).await;
    assert_eq!(deleted["id"], id.as_str());
    assert_eq!(deleted["text"], "a < b\nline");
    read_until(&mut sse, &mut buf, &format!("event: delete\ndata: {id}\n\n")).await;
    assert!(server.statuses_by("publisher").is_empty());
    assert_eq!(server.deleted_ids("publisher"), std::slice::from_ref(&id));
    assert_eq!(server.posts_created("publisher"), 1, "deleted posts still count as created");
    let r = reqwest::get(format!("{}/api/v1/statuses/{id}", server.base_url())).await.unwrap();
    assert_eq!(r.status(), 404);

    let r = req(&server, reqwest::Method::DELETE, &format!("/api/v1/statuses/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let foreign = server.post("alice", NewStatus::html("<p>hers</p>")).id;
    let r = req(&server, reqwest::Method::DELETE, &format!("/api/v1/statuses/{foreign}")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(server.statuses_of("alice").len(), 1);
}

#[tokio::test]
async fn reblog_twice_gives_one_wrapper_and_unreblog_removes_it() {
    let server = start(FakeConfig::default()).await;
    let original = server.post("alice", NewStatus::html("<p>boost me</p>")).id;
    let path = format!("/api/v1/statuses/{original}/reblog");
    let first = ok_json(req(&server, reqwest::Method::POST, &path).send().await.unwrap()).await;
    assert_ne!(first["id"], original.as_str());
    assert_eq!(first["reblog"]["id"], original.as_str());
    assert_eq!(first["content"], "");
    assert_eq!(first["reblogged"], true);
    assert!(first["uri"].as_str().unwrap().ends_with("/activity"));
    let second = ok_json(req(&server, reqwest::Method::POST, &path).send().await.unwrap()).await;
    assert_eq!(second["id"], first["id"]);
    // Boosting the boost boosts the original: still the same wrapper.
    let via_wrapper = format!("/api/v1/statuses/{}/reblog", first["id"].as_str().unwrap());
    let third = ok_json(req(&server, reqwest::Method::POST, &via_wrapper).send().await.unwrap()).await;
    assert_eq!(third["id"], first["id"]);
    assert_eq!(server.statuses_by("publisher").len(), 1);
    assert_eq!(server.statuses_of("alice")[0]["reblogs_count"], 1);

    let (mut sse, mut buf) = open_sse(&server).await;
    let path = format!("/api/v1/statuses/{original}/unreblog");
    let undone = ok_json(req(&server, reqwest::Method::POST, &path).send().await.unwrap()).await;
    assert_eq!(undone["id"], original.as_str());
    assert_eq!(undone["reblogged"], false);
    assert_eq!(undone["reblogs_count"], 0);
    let wrapper = first["id"].as_str().unwrap();
    read_until(&mut sse, &mut buf, &format!("event: delete\ndata: {wrapper}\n\n")).await;
    assert!(server.statuses_by("publisher").is_empty());
    assert_eq!(server.deleted_ids("publisher"), [wrapper.to_owned()]);

    let r = req(&server, reqwest::Method::POST, "/api/v1/statuses/424242/reblog").send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn search_resolves_statuses_by_url_and_uri() {
    let server = start(FakeConfig::default()).await;
    let posted = server.post("alice", NewStatus::html("<p>find me</p>"));
    for q in [&posted.url, &posted.uri] {
        let r = req(&server, reqwest::Method::GET, "/api/v2/search")
            .query(&[("q", q.as_str()), ("resolve", "true"), ("type", "statuses")])
            .send()
            .await
            .unwrap();
        let body = ok_json(r).await;
        assert_eq!(body["accounts"], json!([]));
        assert_eq!(body["hashtags"], json!([]));
        assert_eq!(body["statuses"].as_array().unwrap().len(), 1, "{q}");
        assert_eq!(body["statuses"][0]["id"], posted.id.as_str());
    }
    let r = req(&server, reqwest::Method::GET, "/api/v2/search")
        .query(&[("q", "https://elsewhere.example/@x/1"), ("resolve", "true"), ("type", "statuses")])
        .send()
        .await
        .unwrap();
    assert_eq!(ok_json(r).await, json!({ "accounts": [], "statuses": [], "hashtags": [] }));
    let anonymous = reqwest::Client::new()
        .get(format!("{}/api/v2/search", server.base_url()))
        .query(&[("q", posted.url.as_str()), ("resolve", "true"), ("type", "statuses")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

// ---------------------------------------------------------------- media

/// A `multipart/form-data` body: (name, file content type, data) per part.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "fake-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, content_type, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match content_type {
            Some(t) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\nContent-Type: {t}\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(server: &FakeMastodon, content_type: &str, data: &[u8], description: &str) -> reqwest::Response {
    let (ct, body) = multipart(&[("file", Some(content_type), data), ("description", None, description.as_bytes())]);
    req(server, reqwest::Method::POST, "/api/v2/media").header("content-type", ct).body(body).send().await.unwrap()
}

#[tokio::test]
async fn media_images_are_ready_video_is_polled_and_attaches() {
    let server = start(FakeConfig::default()).await;
    let png = b"\x89PNG\r\n\x1a\nimage bytes\r\n--not a boundary";
    let r = upload(&server, "image/png", png, "a cat").await;
    let image = ok_json(r).await;
    let image_id = image["id"].as_str().unwrap().to_owned();
    assert_eq!(image["type"], "image");
    assert_eq!(image["description"], "a cat");
    assert!(image["url"].is_string());
    let stored = server.media(&image_id).expect("stored");
    assert_eq!(stored.bytes, png);
    assert_eq!(stored.content_type, "image/png");
    assert!(stored.processed);

    let r = upload(&server, "video/mp4", b"\0\0\0\x18ftypmp42 video", "a clip").await;
    assert_eq!(r.status(), 202);
    let video: Value = r.json().await.unwrap();
    let video_id = video["id"].as_str().unwrap().to_owned();
    assert_eq!(video["type"], "video");
    assert_eq!(video["url"], Value::Null);
    // Not attachable until processed.
    let form = [("status", "with media"), ("media_ids[]", &image_id), ("media_ids[]", &video_id)];
    let message = error_of(post_form(&server, &form, None).await, 422).await;
    assert!(message.contains("not finished processing"), "{message}");
    let poll = |id: String| req(&server, reqwest::Method::GET, &format!("/api/v1/media/{id}")).send();
    let r = poll(video_id.clone()).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.json::<Value>().await.unwrap()["url"], Value::Null);
    let r = poll(video_id.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["url"].is_string());
    assert!(server.media(&video_id).unwrap().processed);

    let r = req(&server, reqwest::Method::PUT, &format!("/api/v1/media/{video_id}"))
        .form(&[("description", "a better clip")])
        .send()
        .await
        .unwrap();
    assert_eq!(ok_json(r).await["description"], "a better clip");
    assert_eq!(server.media(&video_id).unwrap().description.as_deref(), Some("a better clip"));

    let status = ok_json(post_form(&server, &form, None).await).await;
    let attached = status["media_attachments"].as_array().unwrap();
    let described: Vec<(&str, &str)> = attached.iter().map(|m| (m["id"].as_str().unwrap(), m["description"].as_str().unwrap())).collect();
    assert_eq!(described, [(image_id.as_str(), "a cat"), (video_id.as_str(), "a better clip")]);
    // The attached file is served back as uploaded.
    let r = reqwest::get(attached[0]["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(header(&r, "content-type").as_deref(), Some("image/png"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), png);
    // Attached media can't be attached again.
    let r = post_form(&server, &[("status", "again"), ("media_ids[]", &image_id)], None).await;
    assert_eq!(r.status(), 422);

    let r = upload(&server, "application/pdf", b"%PDF", "").await;
    assert_eq!(r.status(), 422);
    let (ct, body) = multipart(&[("description", None, b"no file")]);
    let r = req(&server, reqwest::Method::POST, "/api/v2/media").header("content-type", ct).body(body).send().await;
    assert_eq!(r.unwrap().status(), 422);
}

#[tokio::test]
async fn source_media_is_served_and_downloads_can_fail() {
    let server = start(FakeConfig::default()).await;
    let status = NewStatus { media: vec![("image".into(), Some("alt".into())), ("video".into(), None)], ..NewStatus::html("<p>pics</p>") };
    server.post("alice", status);
    let served = server.statuses_of("alice");
    let attachments = served[0]["media_attachments"].as_array().unwrap().clone();
    for (m, content_type) in attachments.iter().zip(["image/png", "video/mp4"]) {
        let r = reqwest::get(m["url"].as_str().unwrap()).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type").as_deref(), Some(content_type));
        let bytes = r.bytes().await.unwrap();
        let (expected_type, expected) = server.media_file(m["id"].as_str().unwrap()).unwrap();
        assert_eq!(expected_type, content_type);
        assert_eq!(bytes.as_ref(), expected.as_slice());
        assert!(!bytes.is_empty());
    }
    server.fail_media_downloads(1);
    let url = attachments[0]["url"].as_str().unwrap();
    assert_eq!(reqwest::get(url).await.unwrap().status(), 500);
    assert_eq!(reqwest::get(url).await.unwrap().status(), 200);
}

// ----------------------------------------------------- rate limits and auth

fn reset_of(r: &reqwest::Response) -> DateTime<Utc> {
    let raw = header(r, "x-ratelimit-reset").expect("reset header");
    assert_eq!(raw.len(), 27, "ISO 8601 with microseconds: {raw}");
    DateTime::parse_from_rfc3339(&raw).expect("ISO 8601").with_timezone(&Utc)
}

#[tokio::test]
async fn posting_headers_describe_the_three_hour_family() {
    let server = start(FakeConfig::default()).await;
    let r = post_form(&server, &[("status", "one")], None).await;
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("300"));
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("299"));
    let reset = reset_of(&r);
    assert_eq!(reset.timestamp() % (3 * 3600), 0, "a 3-hour boundary: {reset}");
    // Reads keep the general 5-minute throttle.
    let r = req(&server, reqwest::Method::GET, "/api/v1/instance").send().await.unwrap();
    assert_eq!(reset_of(&r).timestamp() % 300, 0);
}

#[tokio::test]
async fn posting_limit_429_until_the_reset_then_recovers() {
    let window = Duration::from_secs(2);
    let server = start(FakeConfig { posting_limit: Some((3, window)), ..FakeConfig::default() }).await;
    // The limits' clock stands still inside one window, so no boundary can pass
    // between the requests however slow the machine is.
    let t0 = DateTime::from_timestamp(1_800_000_000, 500_000_000).unwrap();
    server.set_limit_clock(Some(t0));
    for i in 0..3 {
        let r = post_form(&server, &[("status", &format!("post {i}"))], None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(header(&r, "x-ratelimit-remaining"), Some((2 - i).to_string()));
    }
    let refused = post_form(&server, &[("status", "post 3")], None).await;
    assert_eq!(refused.status(), 429, "the posting limit refuses a fourth post in a window");
    assert_eq!(header(&refused, "x-ratelimit-remaining").as_deref(), Some("0"));
    let reset = reset_of(&refused);
    // Windows are aligned to the epoch, like Mastodon's (rack-attack's) periods.
    assert_eq!(reset, DateTime::from_timestamp(1_800_000_002, 0).unwrap());
    assert_eq!(refused.json::<Value>().await.unwrap(), json!({ "error": "Too many requests" }));
    let created = server.posts_created("publisher");

    // Refused again while the window lasts.
    server.set_limit_clock(Some(reset - chrono::Duration::milliseconds(1)));
    let r = post_form(&server, &[("status", "too early")], None).await;
    assert_eq!(r.status(), 429);
    assert_eq!(server.posts_created("publisher"), created);

    // At the advertised reset, posting works again.
    server.set_limit_clock(Some(reset));
    let r = post_form(&server, &[("status", "after the reset")], None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("2"));
    assert_eq!(server.posts_created("publisher"), created + 1);
}

#[tokio::test]
async fn delete_and_media_throttles_are_per_family() {
    let hour = Duration::from_secs(3600);
    let cfg = FakeConfig { delete_limit: Some((2, hour)), media_limit: Some((1, hour)), ..FakeConfig::default() };
    let server = start(cfg).await;
    // At most two windows pass during the test, so a fifth delete is refused at
    // the latest (two per window); likewise a third upload.
    let mut codes = Vec::new();
    for i in 0..5 {
        let posted = ok_json(post_form(&server, &[("status", &format!("p{i}"))], None).await).await;
        let id = posted["id"].as_str().unwrap();
        let r = req(&server, reqwest::Method::DELETE, &format!("/api/v1/statuses/{id}")).send().await.unwrap();
        assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("2"));
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            assert_eq!(r.json::<Value>().await.unwrap(), json!({ "error": "Too many requests" }));
            break;
        }
    }
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    assert!(codes.len() >= 3, "two deletes per window: {codes:?}");
    let mut second = upload(&server, "image/png", b"png", "").await;
    assert_eq!(second.status(), 200);
    for _ in 0..2 {
        second = upload(&server, "image/png", b"png", "").await;
        if second.status() == 429 {
            break;
        }
    }
    assert_eq!(second.status(), 429);
    assert_eq!(header(&second, "x-ratelimit-remaining").as_deref(), Some("0"));
}

#[tokio::test]
async fn writes_need_a_publishing_token() {
    let server = start(FakeConfig::default()).await;
    let original = server.post("alice", NewStatus::html("<p>x</p>")).id;
    let client = reqwest::Client::new();
    let base = server.base_url();
    let writes = [
        client.post(format!("{base}/api/v1/statuses")).form(&[("status", "x")]),
        client.put(format!("{base}/api/v1/statuses/{original}")).form(&[("status", "x")]),
        client.delete(format!("{base}/api/v1/statuses/{original}")),
        client.post(format!("{base}/api/v1/statuses/{original}/reblog")),
        client.post(format!("{base}/api/v1/statuses/{original}/unreblog")),
        client.post(format!("{base}/api/v2/media")),
    ];
    for request in writes {
        let anonymous = request.try_clone().unwrap().send().await.unwrap();
        assert_eq!(error_of(anonymous, 401).await, "The access token is invalid");
        let wrong = request.bearer_auth("wrong").send().await.unwrap();
        assert_eq!(error_of(wrong, 401).await, "The access token is invalid");
    }
    assert_eq!(server.statuses_of("alice").len(), 1);

    // verify_credentials answers with the token's own account.
    let me = req(&server, reqwest::Method::GET, "/api/v1/accounts/verify_credentials").send().await.unwrap();
    let me = ok_json(me).await;
    assert_eq!(me["username"], "publisher");
    assert_eq!(me["id"].as_str(), server.account_id("publisher").as_deref());
    assert!(me["source"].is_object());
    let reader = client.get(format!("{base}/api/v1/accounts/verify_credentials")).bearer_auth(READER).send().await.unwrap();
    assert_eq!(ok_json(reader).await["username"], "reader");
    // The reader's token writes as the reader.
    let r = client.post(format!("{base}/api/v1/statuses")).bearer_auth(READER).form(&[("status", "r")]);
    assert_eq!(ok_json(r.send().await.unwrap()).await["account"]["username"], "reader");
}

#[tokio::test]
async fn concurrent_duplicates_with_one_key_create_one_status() {
    let server = start(FakeConfig::default()).await;
    let posts = (0..8).map(|_| post_form(&server, &[("status", "race")], Some("same")));
    let bodies = futures::future::join_all(posts).await;
    let mut ids = Vec::new();
    for r in bodies {
        ids.push(ok_json(r).await["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(server.posts_created("publisher"), 1);
}

#[tokio::test]
async fn gotosocial_ignores_idempotency_keys() {
    let server = start(FakeConfig { flavor: Flavor::GoToSocial, ..FakeConfig::default() }).await;
    let a = ok_json(post_form(&server, &[("status", "once")], Some("k")).await).await;
    let b = ok_json(post_form(&server, &[("status", "once")], Some("k")).await).await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(server.posts_created("publisher"), 2);
}
