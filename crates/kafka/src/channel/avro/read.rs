//! Avro `PostEvent` values back into [`Event`]s: a field-by-field reader whose
//! errors name the field (`post.media[0].kind: expected a string`). Missing
//! arrays read as empty and missing optional fields as `None`, so data written
//! with an older schema version decodes too.

use std::collections::HashMap;

use apache_avro::types::Value;
use chrono::{DateTime, Utc};
use fedistream_core::post::{
    Account, BioTags, BoostOf, Counts, Emoji, InReplyTo, Media, Mention, PollOption, PollSummary, Post, Provenance, Via, Visibility,
};
use fedistream_core::{Event, EventKind};

/// A decoded record's fields by name, with typed getters whose errors name the field.
struct Rec<'a> {
    path: String,
    fields: HashMap<&'a str, &'a Value>,
}

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

impl<'a> Rec<'a> {
    fn new(path: &str, v: &'a Value) -> Result<Self, String> {
        match unwrap_union(v) {
            Value::Record(fs) => Ok(Rec { path: path.to_string(), fields: fs.iter().map(|(k, v)| (k.as_str(), v)).collect() }),
            other => Err(format!("{path}: expected a record, found {other:?}")),
        }
    }
    fn name(&self, f: &str) -> String {
        if self.path.is_empty() {
            f.to_string()
        } else {
            format!("{}.{f}", self.path)
        }
    }
    fn get(&self, f: &str) -> Result<&'a Value, String> {
        self.fields.get(f).copied().ok_or_else(|| format!("{}: missing", self.name(f)))
    }
    /// `None` for a missing field or null.
    fn get_opt(&self, f: &str) -> Option<&'a Value> {
        self.fields.get(f).map(|v| unwrap_union(v)).filter(|v| !matches!(v, Value::Null))
    }
    fn bad(&self, f: &str, want: &str, v: &Value) -> String {
        format!("{}: expected {want}, found {v:?}", self.name(f))
    }
    fn string(&self, f: &str) -> Result<String, String> {
        match unwrap_union(self.get(f)?) {
            Value::String(s) | Value::Enum(_, s) => Ok(s.clone()),
            v => Err(self.bad(f, "a string", v)),
        }
    }
    fn opt_string(&self, f: &str) -> Result<Option<String>, String> {
        self.get_opt(f)
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(self.bad(f, "a string", v)),
            })
            .transpose()
    }
    fn boolean(&self, f: &str) -> Result<bool, String> {
        match unwrap_union(self.get(f)?) {
            Value::Boolean(b) => Ok(*b),
            v => Err(self.bad(f, "a boolean", v)),
        }
    }
    fn opt_bool(&self, f: &str) -> Result<Option<bool>, String> {
        self.get_opt(f)
            .map(|v| match v {
                Value::Boolean(b) => Ok(*b),
                v => Err(self.bad(f, "a boolean", v)),
            })
            .transpose()
    }
    fn to_u64(&self, f: &str, v: &Value) -> Result<u64, String> {
        match v {
            Value::Long(n) => Ok((*n).max(0) as u64),
            Value::Int(n) => Ok((*n).max(0) as u64),
            v => Err(self.bad(f, "a long", v)),
        }
    }
    fn count(&self, f: &str) -> Result<u64, String> {
        self.to_u64(f, unwrap_union(self.get(f)?))
    }
    fn opt_count(&self, f: &str) -> Result<Option<u64>, String> {
        self.get_opt(f).map(|v| self.to_u64(f, v)).transpose()
    }
    fn to_time(&self, f: &str, v: &Value) -> Result<DateTime<Utc>, String> {
        match v {
            Value::TimestampMillis(ms) | Value::Long(ms) => {
                DateTime::from_timestamp_millis(*ms).ok_or_else(|| format!("{}: {ms} ms is out of range", self.name(f)))
            }
            v => Err(self.bad(f, "a timestamp-millis", v)),
        }
    }
    fn time(&self, f: &str) -> Result<DateTime<Utc>, String> {
        self.to_time(f, unwrap_union(self.get(f)?))
    }
    fn opt_time(&self, f: &str) -> Result<Option<DateTime<Utc>>, String> {
        self.get_opt(f).map(|v| self.to_time(f, v)).transpose()
    }
    fn rec(&self, f: &str) -> Result<Rec<'a>, String> {
        Rec::new(&self.name(f), self.get(f)?)
    }
    fn opt_rec(&self, f: &str) -> Result<Option<Rec<'a>>, String> {
        self.get_opt(f).map(|v| Rec::new(&self.name(f), v)).transpose()
    }
    /// A missing array field reads as empty (it has a default in the schema).
    fn array(&self, f: &str) -> Result<&'a [Value], String> {
        match self.get_opt(f) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(v) => Err(self.bad(f, "an array", v)),
        }
    }
    fn records<T>(&self, f: &str, each: impl Fn(&Rec<'a>) -> Result<T, String>) -> Result<Vec<T>, String> {
        self.array(f)?.iter().enumerate().map(|(i, v)| each(&Rec::new(&format!("{}[{i}]", self.name(f)), v)?)).collect()
    }
}

fn parse_via(r: &Rec, f: &str) -> Result<Via, String> {
    match r.string(f)?.as_str() {
        "stream" => Ok(Via::Stream),
        "rest" => Ok(Via::Rest),
        "replay" => Ok(Via::Replay),
        other => Err(format!("{}: unknown value `{other}`", r.name(f))),
    }
}

/// An Avro `PostEvent` value back into an event.
pub fn from_value(v: &Value) -> Result<Event, String> {
    let r = Rec::new("", v)?;
    let kind = match r.string("kind")?.as_str() {
        "created" => EventKind::Created,
        "updated" => EventKind::Updated,
        "deleted" => EventKind::Deleted,
        other => return Err(format!("kind: unknown value `{other}`")),
    };
    Ok(Event {
        kind,
        key: r.string("key")?,
        account: r.string("account")?,
        status_id: r.string("status_id")?,
        instance: r.string("instance")?,
        source: r.string("source")?,
        via: parse_via(&r, "via")?,
        observed_at: r.time("observed_at")?,
        post: r.opt_rec("post")?.map(|p| post_from(&p)).transpose()?,
        // Since schema version 2; a version-1 record has none (false).
        counts_refresh: r.opt_bool("counts_refresh")?.unwrap_or(false),
    })
}

fn post_from(p: &Rec) -> Result<Post, String> {
    let a = p.rec("account")?;
    let bio = a.rec("bio_tags")?;
    let counts = p.rec("counts")?;
    let prov = p.rec("provenance")?;
    Ok(Post {
        id: p.string("id")?,
        uri: p.string("uri")?,
        url: p.opt_string("url")?,
        account: Account {
            id: a.string("id")?,
            acct: a.string("acct")?,
            display_name: a.string("display_name")?,
            url: a.opt_string("url")?,
            bot: a.boolean("bot")?,
            discoverable: a.opt_bool("discoverable")?,
            indexable: a.opt_bool("indexable")?,
            noindex: a.opt_bool("noindex")?,
            bio_tags: BioTags { nobot: bio.boolean("nobot")?, noindex: bio.boolean("noindex")?, nobridge: bio.boolean("nobridge")? },
        },
        created_at: p.opt_time("created_at")?,
        edited_at: p.opt_time("edited_at")?,
        visibility: Visibility::parse(&p.string("visibility")?),
        language: p.opt_string("language")?,
        content_html: p.string("content_html")?,
        content_text: p.string("content_text")?,
        spoiler_text: p.string("spoiler_text")?,
        sensitive: p.boolean("sensitive")?,
        boost_of: p
            .opt_rec("boost_of")?
            .map(|b| -> Result<_, String> {
                Ok(BoostOf { id: b.string("id")?, uri: b.string("uri")?, url: b.opt_string("url")?, account: b.string("account")? })
            })
            .transpose()?,
        in_reply_to: p
            .opt_rec("in_reply_to")?
            .map(|r| -> Result<_, String> {
                Ok(InReplyTo { id: r.string("id")?, account_id: r.opt_string("account_id")?, account: r.opt_string("account")? })
            })
            .transpose()?,
        tags: p
            .array("tags")?
            .iter()
            .map(|t| match unwrap_union(t) {
                Value::String(s) => Ok(s.clone()),
                v => Err(p.bad("tags", "strings", v)),
            })
            .collect::<Result<_, _>>()?,
        mentions: p.records("mentions", |m| Ok(Mention { acct: m.string("acct")?, url: m.opt_string("url")? }))?,
        emojis: p.records("emojis", |e| Ok(Emoji { shortcode: e.string("shortcode")?, url: e.string("url")? }))?,
        media: p.records("media", |m| {
            Ok(Media {
                kind: m.string("kind")?,
                url: m.opt_string("url")?,
                preview_url: m.opt_string("preview_url")?,
                description: m.opt_string("description")?,
            })
        })?,
        poll: p
            .opt_rec("poll")?
            .map(|poll| -> Result<_, String> {
                Ok(PollSummary {
                    options: poll
                        .records("options", |o| Ok(PollOption { title: o.string("title")?, votes_count: o.opt_count("votes_count")? }))?,
                    votes_count: poll.opt_count("votes_count")?,
                    voters_count: poll.opt_count("voters_count")?,
                    expires_at: poll.opt_time("expires_at")?,
                    expired: poll.boolean("expired")?,
                    multiple: poll.boolean("multiple")?,
                })
            })
            .transpose()?,
        application: p.opt_string("application")?,
        counts: Counts {
            replies: counts.count("replies")?,
            reblogs: counts.count("reblogs")?,
            favourites: counts.count("favourites")?,
            observed_at: counts.time("observed_at")?,
            observed_by: counts.string("observed_by")?,
        },
        provenance: Provenance {
            instance: prov.string("instance")?,
            via: parse_via(&prov, "via")?,
            received_at: prov.time("received_at")?,
        },
    })
}
