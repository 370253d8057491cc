//! The `stdout` channel: events on the terminal, as readable text or as JSON Lines
//! (the same lines the file channel writes, for piping into `jq`).

use std::io::Write;

use async_trait::async_trait;
use fedistream_core::{ErrorKind, EventKind, LogRecord, Sink, SinkError, Written};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Text,
    Jsonl,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    #[serde(default)]
    pub format: OutputFormat,
    #[serde(default)]
    pub delivery: fedistream_core::runtime::DeliveryConfig,
}

pub struct StdoutSink {
    format: OutputFormat,
}

impl StdoutSink {
    pub fn new(cfg: StdoutSinkConfig) -> Self {
        StdoutSink { format: cfg.format }
    }
}

/// One event as a readable block: a header line, then the text, indented.
pub fn render_text(rec: &LogRecord) -> String {
    let ev = match rec.event() {
        Ok(ev) => ev,
        // A processor's record (statistics): its JSON, one line.
        Err(_) if serde_json::from_str::<serde_json::Value>(&rec.payload).is_ok_and(|v| v.is_object()) => {
            return format!("{}\n", rec.payload.trim());
        }
        Err(e) => return format!("(offset {}: {e})\n", rec.position.offset),
    };
    let mut s = String::new();
    // The post's own time is when it was created; an edit is marked with its time.
    let created = ev.post.as_ref().and_then(|p| p.created_at).unwrap_or(ev.observed_at);
    let edited = ev.post.as_ref().and_then(|p| p.edited_at).map(|e| {
        let fmt = if e.date_naive() == created.date_naive() { "%H:%M:%S" } else { "%Y-%m-%d %H:%M:%S" };
        format!("edited {}", e.format(fmt))
    });
    let verb = match (ev.kind, edited) {
        (EventKind::Deleted, _) => "deleted".to_string(),
        (EventKind::Updated, Some(e)) => e,
        (EventKind::Updated, None) => "edited".to_string(),
        (EventKind::Created, Some(e)) => format!("posted, {e}"),
        (EventKind::Created, None) => "posted".to_string(),
    };
    s.push_str(&format!("{}  @{} {verb}", created.format("%Y-%m-%d %H:%M:%S"), ev.account));
    match &ev.post {
        Some(p) => {
            if let Some(b) = &p.boost_of {
                s.push_str(&format!(" a boost of @{}", b.account));
            }
            if let Some(url) = p.url.as_deref().or(Some(p.uri.as_str())) {
                s.push_str(&format!("  {url}"));
            }
            s.push('\n');
            if !p.spoiler_text.is_empty() {
                s.push_str(&format!("    CW: {}\n", p.spoiler_text));
            }
            let body = match &p.boost_of {
                Some(b) => b.url.clone().unwrap_or_else(|| b.uri.clone()),
                None => p.content_text.clone(),
            };
            for line in body.lines() {
                s.push_str("    ");
                s.push_str(line);
                s.push('\n');
            }
            for m in &p.media {
                s.push_str(&format!("    [{}] {}\n", m.kind, m.description.as_deref().unwrap_or("(no description)")));
            }
        }
        None => s.push_str(&format!("  {}\n", ev.key)),
    }
    s
}

#[async_trait]
impl Sink for StdoutSink {
    async fn write(&mut self, batch: &[LogRecord]) -> Result<Written, SinkError> {
        let mut out = String::new();
        for rec in batch {
            match self.format {
                OutputFormat::Text => {
                    out.push_str(&render_text(rec));
                    out.push('\n');
                }
                OutputFormat::Jsonl => {
                    out.push_str(&rec.to_json_line());
                    out.push('\n');
                }
            }
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        match lock.write_all(out.as_bytes()).and_then(|_| lock.flush()) {
            Ok(()) => Ok(Written::done()),
            // A closed pipe (`| head`) will not come back.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                Err(SinkError::new(ErrorKind::Config, "stdout is closed (broken pipe)"))
            }
            Err(e) => Err(SinkError::transient(format!("cannot write to stdout: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use fedistream_core::event::{Event, Position};
    use fedistream_core::post::{Account, BoostOf, Counts, Media, Post, Provenance, Via, Visibility};

    fn post() -> Post {
        let now = Utc::now();
        Post {
            id: "1".into(),
            uri: "https://social.example/users/ada/statuses/1".into(),
            url: Some("https://social.example/@ada/1".into()),
            account: Account {
                id: "9".into(),
                acct: "ada@social.example".into(),
                display_name: "Ada".into(),
                url: None,
                bot: false,
                discoverable: None,
                indexable: None,
                noindex: None,
                bio_tags: Default::default(),
            },
            created_at: Some(now),
            edited_at: None,
            visibility: Visibility::Public,
            language: Some("en".into()),
            content_html: "<p>one</p><p>two</p>".into(),
            content_text: "one\n\ntwo".into(),
            spoiler_text: "lunch".into(),
            sensitive: true,
            boost_of: None,
            in_reply_to: None,
            tags: vec![],
            mentions: vec![],
            emojis: vec![],
            media: vec![Media { kind: "image".into(), url: None, preview_url: None, description: Some("a sandwich".into()) }],
            poll: None,
            application: None,
            counts: Counts { replies: 0, reblogs: 0, favourites: 0, observed_at: now, observed_by: "social.example".into() },
            provenance: Provenance { instance: "social.example".into(), via: Via::Rest, received_at: now },
        }
    }

    fn rec(ev: Event) -> LogRecord {
        LogRecord::from_event(Position { partition: 0, offset: 7 }, Utc::now(), ev)
    }

    #[test]
    fn text_shows_author_cw_body_and_media() {
        let t = render_text(&rec(Event::created("s", post())));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("@ada@social.example posted  https://social.example/@ada/1"), "{t}");
        assert_eq!(lines[1], "    CW: lunch");
        assert_eq!(&lines[2..5], &["    one", "    ", "    two"]);
        assert_eq!(lines[5], "    [image] a sandwich");
    }

    #[test]
    fn boosts_edits_and_deletes_read_as_such() {
        let mut p = post();
        p.boost_of =
            Some(BoostOf { id: "5".into(), uri: "https://other.example/s/5".into(), url: None, account: "bo@other.example".into() });
        let t = render_text(&rec(Event::updated("s", p)));
        assert!(t.lines().next().unwrap().contains("@ada@social.example edited a boost of @bo@other.example"), "{t}");
        assert!(t.contains("    https://other.example/s/5"), "{t}");
        let mut del = Event::created("s", post());
        del.kind = EventKind::Deleted;
        del.post = None;
        let t = render_text(&rec(del));
        assert!(t.contains("deleted  https://social.example/users/ada/statuses/1"), "{t}");
    }

    #[test]
    fn an_edited_post_shows_when_it_was_posted_and_marks_the_edit() {
        let mut p = post();
        let created = chrono::DateTime::parse_from_rfc3339("2026-12-01T03:55:32Z").unwrap().with_timezone(&Utc);
        p.created_at = Some(created);
        p.edited_at = Some(created + chrono::Duration::seconds(5));
        let first = |t: String| t.lines().next().unwrap().to_string();
        assert!(first(render_text(&rec(Event::created("s", p.clone()))))
            .starts_with("2026-12-01 03:55:32  @ada@social.example posted, edited 03:55:37  "));
        assert!(first(render_text(&rec(Event::updated("s", p.clone()))))
            .starts_with("2026-12-01 03:55:32  @ada@social.example edited 03:55:37  "));
        p.edited_at = Some(created + chrono::Duration::days(1));
        assert!(first(render_text(&rec(Event::updated("s", p)))).contains("edited 2026-12-02 03:55:32"));
    }

    #[test]
    fn a_processor_record_is_shown_as_its_json() {
        let payload = r#"{"key":"ada@social.example/day/2026-03-02T00:00:00Z","posts":3}"#;
        let r = LogRecord::new(Position { partition: 0, offset: 2 }, Utc::now(), payload.into());
        assert_eq!(render_text(&r), format!("{payload}\n"));
        let junk = LogRecord::new(Position { partition: 0, offset: 3 }, Utc::now(), "nope".into());
        assert!(render_text(&junk).starts_with("(offset 3: "));
    }

    #[test]
    fn jsonl_is_the_file_channel_line() {
        let r = rec(Event::created("s", post()));
        let v: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(v["offset"], 7);
        assert_eq!(v["post"]["spoiler_text"], "lunch");
    }
}
