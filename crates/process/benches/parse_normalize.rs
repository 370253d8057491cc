//! Hot-path costs: Status JSON parse, HTML to text, and parse + normalise, on the
//! fixture statuses and on one large (~8 KB) synthetic status.
//!
//! Quick run: `cargo bench -p fedistream-process -- --quick`.

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fedistream_core::post::Via;
use fedistream_process::{html_to_text, parse_and_normalize, parse_status, NormalizeContext};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon/");

const FIXTURES: [&str; 7] = [
    "status_plain.json",
    "status_reply.json",
    "status_reblog.json",
    "status_media_tags_mentions.json",
    "status_poll.json",
    "status_edited.json",
    "gotosocial_status.json",
];

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}{name}")).expect("fixture readable")
}

/// The media/tags/mentions fixture with its content grown so the whole document is
/// about 8 KB: paragraphs with mentions, hashtags, shortened links and entities.
fn large_status() -> String {
    let mut doc: serde_json::Value = serde_json::from_str(&fixture("status_media_tags_mentions.json")).expect("fixture is JSON");
    let paragraph = r#"<p><span class="h-card" translate="no"><a href="https://icosahedron.website/@halcy" class="u-url mention">@<span>halcy</span></a></span> here&#39;s what I found &amp; why it matters: <a href="https://www.example.com/articles/2024/05/a-rather-long-path-to-an-article" rel="nofollow noopener" target="_blank"><span class="invisible">https://www.</span><span class="ellipsis">example.com/articles/2024/05/a</span><span class="invisible">-rather-long-path-to-an-article</span></a> <a href="https://mastodon.social/tags/Rust" class="mention hashtag" rel="tag">#<span>Rust</span></a><br>more text on a new line, with “quotes” and émojis 🎉</p>"#;
    let mut content = String::new();
    while content.len() < 4_500 {
        content.push_str(paragraph);
    }
    doc["content"] = serde_json::Value::String(content);
    doc.to_string()
}

fn ctx() -> NormalizeContext<'static> {
    NormalizeContext { instance: "mastodon.social", via: Via::Stream, received_at: Utc::now() }
}

fn inputs() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = FIXTURES.iter().map(|f| (f.trim_end_matches(".json").to_owned(), fixture(f))).collect();
    v.push(("large_synthetic".to_owned(), large_status()));
    v
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
    let ctx = ctx();

    let mut g = c.benchmark_group("parse");
    for (name, json) in &inputs {
        g.throughput(Throughput::Bytes(json.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), json, |b, json| b.iter(|| parse_status(black_box(json)).expect("parses")));
    }
    g.finish();

    let mut g = c.benchmark_group("html_to_text");
    for (name, json) in &inputs {
        let html = parse_status(json).expect("parses").content;
        g.throughput(Throughput::Bytes(html.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &html, |b, html| b.iter(|| html_to_text(black_box(html))));
    }
    g.finish();

    let mut g = c.benchmark_group("parse_normalize");
    for (name, json) in &inputs {
        g.throughput(Throughput::Bytes(json.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), json, |b, json| {
            b.iter(|| parse_and_normalize(black_box(json), &ctx).expect("parses"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
