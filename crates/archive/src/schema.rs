//! The Parquet (Arrow) schemas of the archive's datasets and the code that
//! turns log records into record batches.
//!
//! * `posts` (the `events` topic): one row per event, the post model flattened
//!   where it is one-to-one (author, boost, reply, counts) and nested lists for
//!   what is one-to-many (tags, mentions, media, emojis, poll options), plus the
//!   event kind and version and the log position. Deletions have the event's
//!   own columns and nulls for the post's. `schemas/archive-parquet.md`
//!   documents every column.
//! * records of a processor's topic (stats and the like): a generic schema —
//!   log position, the record's key when its JSON has one, and the whole JSON
//!   as `value`. Processors define their own payloads; a reader picks fields
//!   out with JSON functions.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, ListBuilder, RecordBatch, StringBuilder, StructBuilder, TimestampMicrosecondBuilder, UInt32Builder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use fedistream_core::{Event, LogRecord};

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn list_of(item: DataType, nullable_item: bool) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, nullable_item)))
}

fn mention_fields() -> Fields {
    Fields::from(vec![Field::new("acct", DataType::Utf8, false), Field::new("url", DataType::Utf8, true)])
}

fn media_fields() -> Fields {
    Fields::from(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, true),
        Field::new("preview_url", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
    ])
}

/// The schema of the `posts` dataset (events of the `events` topic).
pub fn posts_schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let t = |n: &str, null: bool| Field::new(n, ts(), null);
    Arc::new(Schema::new(vec![
        Field::new("log_partition", DataType::UInt32, false),
        Field::new("log_offset", DataType::UInt64, false),
        t("appended_at", false),
        s("kind", false),
        s("version", false),
        s("key", false),
        s("account", false),
        s("status_id", false),
        s("instance", false),
        s("source", false),
        s("via", false),
        t("observed_at", false),
        t("event_time", false),
        s("url", true),
        s("author_id", true),
        s("author_display_name", true),
        Field::new("author_bot", DataType::Boolean, true),
        t("created_at", true),
        t("edited_at", true),
        s("visibility", true),
        s("language", true),
        s("content_html", true),
        s("content_text", true),
        s("spoiler_text", true),
        Field::new("sensitive", DataType::Boolean, true),
        s("boost_of_uri", true),
        s("boost_of_account", true),
        s("in_reply_to_id", true),
        s("in_reply_to_account", true),
        Field::new("tags", list_of(DataType::Utf8, false), true),
        Field::new("mentions", list_of(DataType::Struct(mention_fields()), false), true),
        Field::new("media", list_of(DataType::Struct(media_fields()), false), true),
        Field::new("emojis", list_of(DataType::Utf8, false), true),
        Field::new("poll_options", list_of(DataType::Utf8, false), true),
        s("application", true),
        Field::new("replies_count", DataType::UInt64, true),
        Field::new("reblogs_count", DataType::UInt64, true),
        Field::new("favourites_count", DataType::UInt64, true),
    ]))
}

/// The schema of a processor's dataset (its output records).
pub fn records_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("log_partition", DataType::UInt32, false),
        Field::new("log_offset", DataType::UInt64, false),
        Field::new("appended_at", ts(), false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, false),
    ]))
}

/// When an event happened, for its partition directory: the post's creation
/// time, else (deletions, posts without one) when fedistream observed it.
pub fn event_time(ev: &Event) -> DateTime<Utc> {
    ev.post.as_ref().and_then(|p| p.created_at).unwrap_or(ev.observed_at)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Column builders for the `posts` schema.
struct PostColumns {
    partition: UInt32Builder,
    offset: UInt64Builder,
    times: [TimestampMicrosecondBuilder; 3],
    strings: Vec<StringBuilder>,
    author_bot: BooleanBuilder,
    created_at: TimestampMicrosecondBuilder,
    edited_at: TimestampMicrosecondBuilder,
    sensitive: BooleanBuilder,
    tags: ListBuilder<StringBuilder>,
    mentions: ListBuilder<StructBuilder>,
    media: ListBuilder<StructBuilder>,
    emojis: ListBuilder<StringBuilder>,
    poll_options: ListBuilder<StringBuilder>,
    application: StringBuilder,
    counts: [UInt64Builder; 3],
}

fn ts_builder(n: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC")
}

fn str_list() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new("item", DataType::Utf8, false)))
}

fn struct_list(fields: Fields) -> ListBuilder<StructBuilder> {
    let item = Arc::new(Field::new("item", DataType::Struct(fields.clone()), false));
    ListBuilder::new(StructBuilder::from_fields(fields, 0)).with_field(item)
}

/// Event strings (kind … via) then post strings (url … in_reply_to_account), in schema order.
const EVENT_STRINGS: usize = 8;
const POST_STRINGS: usize = 12;

fn str_at(b: &mut StructBuilder, i: usize) -> &mut StringBuilder {
    // The struct builders are made from fields that are all Utf8 (mention_fields, media_fields).
    b.field_builder::<StringBuilder>(i).expect("a Utf8 field")
}

impl PostColumns {
    fn new(n: usize) -> Self {
        PostColumns {
            partition: UInt32Builder::with_capacity(n),
            offset: UInt64Builder::with_capacity(n),
            times: [ts_builder(n), ts_builder(n), ts_builder(n)],
            strings: (0..EVENT_STRINGS + POST_STRINGS).map(|_| StringBuilder::new()).collect(),
            author_bot: BooleanBuilder::with_capacity(n),
            created_at: ts_builder(n),
            edited_at: ts_builder(n),
            sensitive: BooleanBuilder::with_capacity(n),
            tags: str_list(),
            mentions: struct_list(mention_fields()),
            media: struct_list(media_fields()),
            emojis: str_list(),
            poll_options: str_list(),
            application: StringBuilder::new(),
            counts: [UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n)],
        }
    }

    fn push(&mut self, rec: &LogRecord, ev: &Event) {
        self.partition.append_value(rec.position.partition);
        self.offset.append_value(rec.position.offset);
        self.times[0].append_value(micros(rec.appended_at));
        self.times[1].append_value(micros(ev.observed_at));
        self.times[2].append_value(micros(event_time(ev)));
        let version = ev.fingerprint();
        for (i, v) in [ev.kind.as_str(), &version, &ev.key, &ev.account, &ev.status_id, &ev.instance, &ev.source, ev.via.as_str()]
            .into_iter()
            .enumerate()
        {
            self.strings[i].append_value(v);
        }
        let s = &mut self.strings[EVENT_STRINGS..];
        let Some(p) = &ev.post else {
            for b in s.iter_mut() {
                b.append_null();
            }
            self.author_bot.append_null();
            self.created_at.append_null();
            self.edited_at.append_null();
            self.sensitive.append_null();
            self.tags.append_null();
            self.mentions.append_null();
            self.media.append_null();
            self.emojis.append_null();
            self.poll_options.append_null();
            self.application.append_null();
            for c in &mut self.counts {
                c.append_null();
            }
            return;
        };
        let post_strings: [Option<&str>; POST_STRINGS] = [
            p.url.as_deref(),
            Some(&p.account.id),
            Some(&p.account.display_name),
            Some(p.visibility.as_str()),
            p.language.as_deref(),
            Some(&p.content_html),
            Some(&p.content_text),
            Some(&p.spoiler_text),
            p.boost_of.as_ref().map(|b| b.uri.as_str()),
            p.boost_of.as_ref().map(|b| b.account.as_str()),
            p.in_reply_to.as_ref().map(|r| r.id.as_str()),
            p.in_reply_to.as_ref().and_then(|r| r.account.as_deref()),
        ];
        for (b, v) in s.iter_mut().zip(post_strings) {
            b.append_option(v);
        }
        self.author_bot.append_value(p.account.bot);
        self.created_at.append_option(p.created_at.map(micros));
        self.edited_at.append_option(p.edited_at.map(micros));
        self.sensitive.append_value(p.sensitive);
        for t in &p.tags {
            self.tags.values().append_value(t);
        }
        self.tags.append(true);
        for m in &p.mentions {
            let b = self.mentions.values();
            str_at(b, 0).append_value(&m.acct);
            str_at(b, 1).append_option(m.url.as_deref());
            b.append(true);
        }
        self.mentions.append(true);
        for m in &p.media {
            let b = self.media.values();
            str_at(b, 0).append_value(&m.kind);
            str_at(b, 1).append_option(m.url.as_deref());
            str_at(b, 2).append_option(m.preview_url.as_deref());
            str_at(b, 3).append_option(m.description.as_deref());
            b.append(true);
        }
        self.media.append(true);
        for e in &p.emojis {
            self.emojis.values().append_value(&e.shortcode);
        }
        self.emojis.append(true);
        match &p.poll {
            Some(poll) => {
                for o in &poll.options {
                    self.poll_options.values().append_value(&o.title);
                }
                self.poll_options.append(true);
            }
            None => self.poll_options.append_null(),
        }
        self.application.append_option(p.application.as_deref());
        self.counts[0].append_value(p.counts.replies);
        self.counts[1].append_value(p.counts.reblogs);
        self.counts[2].append_value(p.counts.favourites);
    }

    fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(self.partition.finish()), Arc::new(self.offset.finish())];
        let [mut appended, mut observed, mut event_time] = self.times;
        cols.push(Arc::new(appended.finish()));
        let mut strings = self.strings.into_iter();
        for b in strings.by_ref().take(EVENT_STRINGS) {
            let mut b = b;
            cols.push(Arc::new(b.finish()));
        }
        cols.push(Arc::new(observed.finish()));
        cols.push(Arc::new(event_time.finish()));
        let mut post: Vec<StringBuilder> = strings.collect();
        let mut take = |range: std::ops::Range<usize>, cols: &mut Vec<ArrayRef>| {
            for b in &mut post[range] {
                cols.push(Arc::new(b.finish()));
            }
        };
        take(0..3, &mut cols); // url, author_id, author_display_name
        cols.push(Arc::new(self.author_bot.finish()));
        cols.push(Arc::new(self.created_at.finish()));
        cols.push(Arc::new(self.edited_at.finish()));
        take(3..8, &mut cols); // visibility … spoiler_text
        cols.push(Arc::new(self.sensitive.finish()));
        take(8..12, &mut cols); // boost_of_* , in_reply_to_*
        cols.push(Arc::new(self.tags.finish()));
        cols.push(Arc::new(self.mentions.finish()));
        cols.push(Arc::new(self.media.finish()));
        cols.push(Arc::new(self.emojis.finish()));
        cols.push(Arc::new(self.poll_options.finish()));
        cols.push(Arc::new(self.application.finish()));
        for c in &mut self.counts {
            cols.push(Arc::new(c.finish()));
        }
        RecordBatch::try_new(posts_schema(), cols)
    }
}

/// The `posts` rows of decoded events.
pub fn posts_batch(rows: &[(&LogRecord, &Event)]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut c = PostColumns::new(rows.len());
    for (rec, ev) in rows {
        c.push(rec, ev);
    }
    c.finish()
}

/// The rows of a processor's records: `key` is the JSON's `key` (else
/// `account`) string field when it has one.
pub fn records_batch(rows: &[(&LogRecord, Option<String>)]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = rows.len();
    let (mut p, mut o, mut t) = (UInt32Builder::with_capacity(n), UInt64Builder::with_capacity(n), ts_builder(n));
    let (mut k, mut v) = (StringBuilder::new(), StringBuilder::new());
    for (rec, key) in rows {
        p.append_value(rec.position.partition);
        o.append_value(rec.position.offset);
        t.append_value(micros(rec.appended_at));
        k.append_option(key.as_deref());
        v.append_value(&rec.payload);
    }
    let cols: Vec<ArrayRef> =
        vec![Arc::new(p.finish()), Arc::new(o.finish()), Arc::new(t.finish()), Arc::new(k.finish()), Arc::new(v.finish())];
    RecordBatch::try_new(records_schema(), cols)
}

/// A processor record's key: its JSON's `key`, else `account`, string field.
pub fn record_key(v: &serde_json::Value) -> Option<String> {
    ["key", "account"].iter().find_map(|f| v.get(f).and_then(|x| x.as_str()).map(str::to_owned))
}

/// The datasets' schemas as text (`fedistream schema parquet`; the listing in
/// `schemas/archive-parquet.md` is this output).
pub fn describe() -> String {
    let mut out = String::new();
    for (title, schema) in
        [("posts (the events topic)", posts_schema()), ("<processor> (a processor's records, e.g. stats)", records_schema())]
    {
        out.push_str(&format!("dataset {title}\n"));
        for f in schema.fields() {
            out.push_str(&format!("  {:<22} {}{}\n", f.name(), type_name(f.data_type()), if f.is_nullable() { "" } else { " not null" }));
        }
        out.push_str("  date                   DATE (Hive partition directory date=YYYY-MM-DD, UTC)\n");
        out.push_str("  hour                   INT (Hive partition directory hour=HH, UTC)\n");
    }
    out
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 => "string".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Boolean => "bool".into(),
        DataType::Timestamp(_, _) => "timestamp(us, UTC)".into(),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Struct(fs) => {
            let inner: Vec<String> = fs
                .iter()
                .map(|f| format!("{}: {}{}", f.name(), type_name(f.data_type()), if f.is_nullable() { "" } else { " not null" }))
                .collect();
            format!("struct<{}>", inner.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_doc_lists_what_schema_parquet_prints() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/archive-parquet.md")).unwrap();
        let listing = super::describe();
        assert!(doc.contains(&listing), "schemas/archive-parquet.md must hold `fedistream schema parquet`'s output:\n{listing}");
    }
}
