use super::*;
use proptest::prelude::*;

#[test]
fn shortened_link_comes_out_whole() {
    let html = r#"<p><a href="https://www.theguardian.com/money/2019/dec/07/x" rel="nofollow noopener noreferrer" target="_blank"><span class="invisible">https://www.</span><span class="ellipsis">theguardian.com/money/2019/dec</span><span class="invisible">/07/x</span></a></p>"#;
    assert_eq!(html_to_text(html), "https://www.theguardian.com/money/2019/dec/07/x");
}

#[test]
fn mention_and_hashtag() {
    let html = r#"<p><span class="h-card" translate="no"><a href="https://icosahedron.website/@halcy" class="u-url mention">@<span>halcy</span></a></span> hi <a href="https://x.y/tags/Piano" class="mention hashtag" rel="tag">#<span>Piano</span></a>!</p>"#;
    assert_eq!(html_to_text(html), "@halcy hi #Piano!");
}

#[test]
fn paragraphs_and_breaks() {
    assert_eq!(html_to_text("<p>one<br>two<br />three</p><p>four</p>"), "one\ntwo\nthree\n\nfour");
    // Blank lines typed inside a paragraph survive; no stacking at block edges.
    assert_eq!(html_to_text("<p>a<br><br>b<br></p><p>c</p>"), "a\n\nb\n\nc");
    // Leading and trailing separators vanish.
    assert_eq!(html_to_text("<br><p></p><p>  x  </p><br><p></p>"), "x");
}

#[test]
fn whitespace_collapses_outside_pre() {
    assert_eq!(html_to_text("<p>a  \n b</p>\n<p>c</p>"), "a b\n\nc");
    assert_eq!(html_to_text("<p>code:</p><pre><code>fn main() {\n    x();\n}</code></pre>"), "code:\n\nfn main() {\n    x();\n}");
}

#[test]
fn entities_decoded() {
    assert_eq!(html_to_text("<p>&quot;I lost&quot; &amp; &lt;b&gt; &#39;x&#x27; caf&eacute;</p>"), "\"I lost\" & <b> 'x' café");
}

#[test]
fn nested_lists() {
    let html = "<p>Todo:</p><ul><li>one</li><li>two<ul><li>two.a</li><li>two.b</li></ul></li><li>three</li></ul><p>end</p>";
    assert_eq!(html_to_text(html), "Todo:\n\n- one\n- two\n  - two.a\n  - two.b\n- three\n\nend");
    assert_eq!(html_to_text("<ol><li>x</li><li></li><li>y</li></ol>"), "- x\n- y");
}

#[test]
fn akkoma_extras_keep_text() {
    assert_eq!(
        html_to_text("<p><strong>bold</strong> <em>it</em> <code>c</code></p><blockquote>q</blockquote><h2>T</h2>"),
        "bold it c\n\nq\n\nT"
    );
}

#[test]
fn script_and_style_dropped() {
    assert_eq!(html_to_text("<p>a</p><script>alert('<p>x</p>')</SCRIPT><style>p{}</style><p>b</p>"), "a\n\nb");
    assert_eq!(html_to_text("a<script>never closed"), "a");
    assert_eq!(html_to_text("a<!-- <p>c</p> -->b"), "ab");
}

#[test]
fn plain_text_passes_through() {
    assert_eq!(html_to_text("hello everyone!"), "hello everyone!");
    assert_eq!(html_to_text("  line 1\nline 2 &amp; more \n"), "line 1\nline 2 & more");
    assert_eq!(html_to_text(""), "");
}

#[test]
fn garbage_degrades_gracefully() {
    assert_eq!(html_to_text("a < b"), "a < b");
    assert_eq!(html_to_text("x<"), "x<");
    assert_eq!(html_to_text("x</"), "x</");
    assert_eq!(html_to_text("keep<p class=\"unterminated"), "keep");
    assert_eq!(html_to_text("<a title=\"1 > 0\">t</a>"), "t");
    assert_eq!(html_to_text("<a title=don't>t</a>"), "t");
    assert_eq!(html_to_text("<<<p>>>"), "<<\n\n>>");
    assert_eq!(html_to_text("<p>日本語<br>テキスト</p>"), "日本語\nテキスト");
    assert_eq!(html_to_text("é<é>é"), "é<é>é");
}

#[test]
fn bio_tags_found_in_text() {
    let t = bio_consent_tags(r#"<p>hi <a href="https://m.s/tags/nobot" class="mention hashtag" rel="tag">#<span>NoBot</span></a></p>"#);
    assert!(t.nobot && !t.noindex && !t.nobridge);
    let t = bio_consent_tags("<p>#noindex, #NOBRIDGE.</p>");
    assert!(!t.nobot && t.noindex && t.nobridge);
    assert!(bio_consent_tags("#nobot").nobot);
    assert!(bio_consent_tags("x #nobot\nmore").nobot);
}

#[test]
fn bio_tags_need_a_boundary() {
    assert!(!bio_consent_tags("<p>#nobots allowed</p>").any());
    assert!(!bio_consent_tags("#nobot_please #noindexing #nobridgeé").any());
    assert!(!bio_consent_tags("nobot noindex without hash").any());
    assert!(!bio_consent_tags("").any());
    assert!(!bio_consent_tags("#").any());
    // The tag in an href alone is not in the text.
    assert!(!bio_consent_tags(r#"<a href="https://x/tags/nobot">profile</a>"#).any());
    // Entity-encoded hash still counts: the text is what a reader sees.
    assert!(bio_consent_tags("<p>&#35;nobot</p>").nobot);
}

#[test]
fn bio_tags_pleroma_fixture_note() {
    // The note of freon@letsalllovela.in in status_reply.json and the SSE fixtures.
    let note = "tech archaeologist, unix weenie<br><a class=\"hashtag\" href=\"https://letsalllovela.in/tag/nobot\" rel=\"nofollow noopener noreferrer\" target=\"_blank\">#nobot</a>";
    assert_eq!(html_to_text(note), "tech archaeologist, unix weenie\n#nobot");
    let t = bio_consent_tags(note);
    assert!(t.nobot && !t.noindex && !t.nobridge);
}

#[test]
fn entity_fast_path_edges() {
    let d = |s: &str| {
        let mut out = String::new();
        decode_entities(s, &mut out);
        out
    };
    assert_eq!(d("&amp;amp; &#x1F389; &#127881; &eacute; &nbsp;"), "&amp; 🎉 🎉 é \u{a0}");
    assert_eq!(d("a & b &unknown; &#; &#x; &#+5; &&amp;"), html_escape::decode_html_entities("a & b &unknown; &#; &#x; &#+5; &&amp;"));
    assert_eq!(d("tail &amp"), html_escape::decode_html_entities("tail &amp"));
}

proptest! {
    /// The eight-bytes-at-a-time check says what a byte loop says.
    #[test]
    fn plain_text_check_is_exact(b in prop::collection::vec(prop_oneof![
        Just(b' '), Just(b'&'), Just(b'\t'), Just(b'\n'), Just(0x7fu8), Just(0xc3u8), Just(0xa9u8), 0x00u8..0x20, b'a'..=b'z',
    ], 0..40)) {
        let scalar = !b.iter().any(|&c| c == b'&' || c < 0x20) && !b.windows(2).any(|w| w == b"  ");
        prop_assert_eq!(is_plain(&b), scalar);
    }

    /// The fast path for plain text writes what the general path writes.
    #[test]
    fn plain_text_fast_path_matches_the_general_path(
        before in "[a-z]{0,3}", raw in "[ a-zé\t\n&;]{0,30}", newlines in 0u8..3, space in any::<bool>(),
    ) {
        let mut fast = Writer::with_capacity(64);
        let mut general = Writer::with_capacity(64);
        for w in [&mut fast, &mut general] {
            w.out.push_str(&before);
            w.newlines = newlines;
            w.space = space;
        }
        fast.text(&raw);
        general.text_general(&raw);
        prop_assert_eq!(&fast.out, &general.out);
        prop_assert_eq!((fast.newlines, fast.space), (general.newlines, general.space));
    }

    /// The fast path agrees with html-escape, which it only short-cuts.
    #[test]
    fn entity_decoding_matches_html_escape(parts in prop::collection::vec(prop_oneof![
        Just("&".to_string()), Just(";".to_string()), Just("#".to_string()), Just("x".to_string()),
        Just("amp".to_string()), Just("lt".to_string()), Just("quot".to_string()), Just("nbsp".to_string()),
        Just("eacute".to_string()), "[0-9a-fA-F]{1,7}", "[a-z é]{0,3}",
    ], 0..12)) {
        let s = parts.concat();
        let mut out = String::new();
        decode_entities(&s, &mut out);
        prop_assert_eq!(out, html_escape::decode_html_entities(&s).into_owned());
    }

    #[test]
    fn never_panics_and_trims(s in ".{0,200}") {
        let out = html_to_text(&s);
        prop_assert_eq!(out.trim(), out.as_str());
        let _ = bio_consent_tags(&s);
    }

    #[test]
    fn never_panics_on_tag_soup(parts in prop::collection::vec(
        prop_oneof![
            Just("<p>".to_string()), Just("</p>".to_string()), Just("<br>".to_string()),
            Just("<ul>".to_string()), Just("</ul>".to_string()), Just("<li>".to_string()),
            Just("<pre>".to_string()), Just("</pre>".to_string()), Just("<script>".to_string()),
            Just("</script".to_string()), Just("<!--".to_string()), Just("<".to_string()),
            Just("\"".to_string()), Just("=".to_string()), Just("&amp".to_string()),
            Just("#nobot".to_string()), Just("é".to_string()), Just(" ".to_string()),
            "[a-zA-Z<>/=\"' &;#é日]{0,8}",
        ], 0..40)) {
        let s = parts.concat();
        let out = html_to_text(&s);
        prop_assert_eq!(out.trim(), out.as_str());
        let _ = bio_consent_tags(&s);
    }

    /// Text without markup characters survives the round trip through paragraphs.
    #[test]
    fn plain_words_survive(words in prop::collection::vec("[a-zA-Z0-9]{1,10}", 1..10)) {
        let html = format!("<p>{}</p>", words.join(" "));
        prop_assert_eq!(html_to_text(&html), words.join(" "));
    }
}
