//! The Avro form of an [`Event`]: the schema (`schemas/post_event.avsc`, embedded
//! so the binary and the file never disagree), the mapping both ways, and the
//! Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary).
//!
//! The mapping is written out field by field rather than derived through serde,
//! so the schema file is the one description of the format and a change to
//! [`fedistream_core::Post`] cannot silently change what consumers read.
//! Timestamps are `timestamp-millis` (UTC): sub-millisecond precision is dropped.
//! Counts are `long`; a count above `i64::MAX` (never seen) is written as `i64::MAX`.

use std::sync::OnceLock;

use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, Utc};

mod read;
pub mod stats;
use fedistream_core::post::{Post, Via};
use fedistream_core::{Event, EventKind};
pub use read::from_value;

/// The schema's JSON text, as registered and as `fedistream schema avro` prints it.
pub const SCHEMA_JSON: &str = include_str!("../../../../schemas/post_event.avsc");

/// fedistream's version of the schema (the record's `fedistream_schema_version`
/// attribute, and the `fedistream-schema-version` header of every record).
pub const SCHEMA_VERSION: u32 = 2;

/// The Confluent wire format's magic byte.
pub const MAGIC: u8 = 0;

/// The parsed schema.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    // Invariant: SCHEMA_JSON is a compile-time constant that the unit test
    // `the_schema_parses_and_carries_its_version` parses.
    SCHEMA.get_or_init(|| Schema::parse_str(SCHEMA_JSON).expect("schemas/post_event.avsc is a valid Avro schema"))
}

/// The event in the Confluent wire format under registry id `schema_id`.
pub fn encode(schema_id: u32, event: &Event) -> Result<Vec<u8>, apache_avro::Error> {
    let datum = apache_avro::to_avro_datum(schema(), to_value(event))?;
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Split a wire-format value into its schema id and Avro datum.
pub fn split_wire(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    match bytes {
        [MAGIC, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [m, ..] if *m != MAGIC => Err(format!("magic byte {m}, expected {MAGIC}")),
        _ => Err(format!("{} bytes: too short for the 5-byte header", bytes.len())),
    }
}

/// Decode a datum written with `writer` (read as `reader`, if given) into an event.
pub fn decode(writer: &Schema, reader: Option<&Schema>, mut datum: &[u8]) -> Result<Event, String> {
    let value = apache_avro::from_avro_datum(writer, &mut datum, reader).map_err(|e| e.to_string())?;
    from_value(&value)
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn null() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

fn some(v: Value) -> Value {
    Value::Union(1, Box::new(v))
}

fn opt<T>(o: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    o.map(|v| some(f(v))).unwrap_or_else(null)
}

fn ts(t: DateTime<Utc>) -> Value {
    Value::TimestampMillis(t.timestamp_millis())
}

fn long(n: u64) -> Value {
    Value::Long(i64::try_from(n).unwrap_or(i64::MAX))
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn via(v: Via) -> Value {
    let i = match v {
        Via::Stream => 0,
        Via::Rest => 1,
        Via::Replay => 2,
    };
    Value::Enum(i, v.as_str().to_string())
}

fn kind(k: EventKind) -> Value {
    let i = match k {
        EventKind::Created => 0,
        EventKind::Updated => 1,
        EventKind::Deleted => 2,
    };
    Value::Enum(i, k.as_str().to_string())
}

/// The event as an Avro value of `PostEvent`, fields in schema order.
pub fn to_value(e: &Event) -> Value {
    record(vec![
        ("kind", kind(e.kind)),
        ("key", s(&e.key)),
        ("account", s(&e.account)),
        ("status_id", s(&e.status_id)),
        ("instance", s(&e.instance)),
        ("source", s(&e.source)),
        ("via", via(e.via)),
        ("observed_at", ts(e.observed_at)),
        ("post", opt(e.post.as_ref(), post_value)),
        ("counts_refresh", Value::Boolean(e.counts_refresh)),
    ])
}

fn post_value(p: &Post) -> Value {
    let a = &p.account;
    record(vec![
        ("id", s(&p.id)),
        ("uri", s(&p.uri)),
        ("url", opt(p.url.as_deref(), s)),
        (
            "account",
            record(vec![
                ("id", s(&a.id)),
                ("acct", s(&a.acct)),
                ("display_name", s(&a.display_name)),
                ("url", opt(a.url.as_deref(), s)),
                ("bot", Value::Boolean(a.bot)),
                ("discoverable", opt(a.discoverable, Value::Boolean)),
                ("indexable", opt(a.indexable, Value::Boolean)),
                ("noindex", opt(a.noindex, Value::Boolean)),
                (
                    "bio_tags",
                    record(vec![
                        ("nobot", Value::Boolean(a.bio_tags.nobot)),
                        ("noindex", Value::Boolean(a.bio_tags.noindex)),
                        ("nobridge", Value::Boolean(a.bio_tags.nobridge)),
                    ]),
                ),
            ]),
        ),
        ("created_at", opt(p.created_at, ts)),
        ("edited_at", opt(p.edited_at, ts)),
        ("visibility", s(p.visibility.as_str())),
        ("language", opt(p.language.as_deref(), s)),
        ("content_html", s(&p.content_html)),
        ("content_text", s(&p.content_text)),
        ("spoiler_text", s(&p.spoiler_text)),
        ("sensitive", Value::Boolean(p.sensitive)),
        (
            "boost_of",
            opt(p.boost_of.as_ref(), |b| {
                record(vec![("id", s(&b.id)), ("uri", s(&b.uri)), ("url", opt(b.url.as_deref(), s)), ("account", s(&b.account))])
            }),
        ),
        (
            "in_reply_to",
            opt(p.in_reply_to.as_ref(), |r| {
                record(vec![("id", s(&r.id)), ("account_id", opt(r.account_id.as_deref(), s)), ("account", opt(r.account.as_deref(), s))])
            }),
        ),
        ("tags", Value::Array(p.tags.iter().map(|t| s(t)).collect())),
        (
            "mentions",
            Value::Array(p.mentions.iter().map(|m| record(vec![("acct", s(&m.acct)), ("url", opt(m.url.as_deref(), s))])).collect()),
        ),
        ("emojis", Value::Array(p.emojis.iter().map(|e| record(vec![("shortcode", s(&e.shortcode)), ("url", s(&e.url))])).collect())),
        (
            "media",
            Value::Array(
                p.media
                    .iter()
                    .map(|m| {
                        record(vec![
                            ("kind", s(&m.kind)),
                            ("url", opt(m.url.as_deref(), s)),
                            ("preview_url", opt(m.preview_url.as_deref(), s)),
                            ("description", opt(m.description.as_deref(), s)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "poll",
            opt(p.poll.as_ref(), |poll| {
                record(vec![
                    (
                        "options",
                        Value::Array(
                            poll.options
                                .iter()
                                .map(|o| record(vec![("title", s(&o.title)), ("votes_count", opt(o.votes_count, long))]))
                                .collect(),
                        ),
                    ),
                    ("votes_count", opt(poll.votes_count, long)),
                    ("voters_count", opt(poll.voters_count, long)),
                    ("expires_at", opt(poll.expires_at, ts)),
                    ("expired", Value::Boolean(poll.expired)),
                    ("multiple", Value::Boolean(poll.multiple)),
                ])
            }),
        ),
        ("application", opt(p.application.as_deref(), s)),
        (
            "counts",
            record(vec![
                ("replies", long(p.counts.replies)),
                ("reblogs", long(p.counts.reblogs)),
                ("favourites", long(p.counts.favourites)),
                ("observed_at", ts(p.counts.observed_at)),
                ("observed_by", s(&p.counts.observed_by)),
            ]),
        ),
        (
            "provenance",
            record(vec![
                ("instance", s(&p.provenance.instance)),
                ("via", via(p.provenance.via)),
                ("received_at", ts(p.provenance.received_at)),
            ]),
        ),
    ])
}

#[cfg(test)]
mod tests;
