//! The Avro form of a stats record (the `account_stats` processor's output:
//! an account's window, [`StatsRecord`], or a scope's totals,
//! [`TotalsRecord`]): the schema (`schemas/stats_record.avsc`, embedded: a
//! union of the two records, as one topic carries both) and the mapping,
//! written out field by field like the posts' so the schema file is the one
//! description of the format. Window bounds and the engagement's observation
//! time become `timestamp-millis`; top lists become arrays of `{name, count}`
//! records.

use std::sync::OnceLock;

use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::DateTime;
use fedistream_process::stats::record::{Summary, TopK};
use fedistream_process::stats::{StatsRecord, TopicRecord, TotalsRecord};

use super::{long, null, record, s, some, MAGIC};

/// The schema's JSON text, as registered and as `fedistream schema avro --record stats` prints it.
pub const SCHEMA_JSON: &str = include_str!("../../../../../schemas/stats_record.avsc");

/// The parsed schema.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    // Invariant: SCHEMA_JSON is a compile-time constant that the unit test
    // `the_stats_schema_parses_and_encodes_a_record` parses.
    SCHEMA.get_or_init(|| Schema::parse_str(SCHEMA_JSON).expect("schemas/stats_record.avsc is a valid Avro schema"))
}

/// The record in the Confluent wire format under registry id `schema_id`.
pub fn encode(schema_id: u32, r: &TopicRecord) -> Result<Vec<u8>, String> {
    let value = match r {
        TopicRecord::Account(r) => Value::Union(0, Box::new(to_value(r)?)),
        TopicRecord::Totals(t) => Value::Union(1, Box::new(totals_value(t)?)),
    };
    let datum = apache_avro::to_avro_datum(schema(), value).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

fn millis(field: &str, t: &str) -> Result<Value, String> {
    DateTime::parse_from_rfc3339(t).map(|t| Value::TimestampMillis(t.timestamp_millis())).map_err(|e| format!("`{field}` = {t:?}: {e}"))
}

fn map(m: &std::collections::BTreeMap<String, u64>) -> Value {
    Value::Map(m.iter().map(|(k, n)| (k.clone(), long(*n))).collect())
}

fn longs(v: &[u64]) -> Value {
    Value::Array(v.iter().map(|n| long(*n)).collect())
}

fn top(t: &TopK) -> Value {
    record(vec![
        ("top", Value::Array(t.top.iter().map(|(name, n)| record(vec![("name", s(name)), ("count", long(*n))])).collect())),
        ("distinct", long(t.distinct)),
        ("total", long(t.total)),
    ])
}

fn summary(x: &Summary) -> Value {
    record(vec![("mean", Value::Double(x.mean)), ("median", long(x.median.into())), ("p90", long(x.p90.into()))])
}

/// The record as an Avro value of `StatsRecord`, fields in schema order.
pub fn to_value(r: &StatsRecord) -> Result<Value, String> {
    let e = &r.engagement;
    Ok(record(vec![
        ("key", s(&r.key)),
        ("account", s(&r.account)),
        ("window", s(r.window.as_str())),
        ("zone", s(&r.zone)),
        ("start", millis("start", &r.start)?),
        ("end", millis("end", &r.end)?),
        ("revision", Value::Int(i32::try_from(r.revision).unwrap_or(i32::MAX))),
        ("final", Value::Boolean(r.is_final)),
        ("posts", long(r.posts)),
        ("originals", long(r.originals)),
        ("replies_to_self", long(r.replies_to_self)),
        ("replies_to_others", long(r.replies_to_others)),
        ("boosts", long(r.boosts)),
        ("with_media", long(r.with_media)),
        ("with_cw", long(r.with_cw)),
        ("sensitive", long(r.sensitive)),
        ("polls", long(r.polls)),
        ("edits", long(r.edits)),
        ("deletes", long(r.deletes)),
        ("languages", map(&r.languages)),
        ("applications", map(&r.applications)),
        ("hours", longs(&r.hours)),
        ("weekdays", longs(&r.weekdays)),
        ("tags", top(&r.tags)),
        ("mentions", top(&r.mentions)),
        ("boosted_accounts", top(&r.boosted_accounts)),
        ("text", record(vec![("posts", long(r.text.posts)), ("chars", summary(&r.text.chars)), ("words", summary(&r.text.words))])),
        ("links", long(r.links)),
        ("link_domains", top(&r.link_domains)),
        (
            "engagement",
            record(vec![
                ("replies", long(e.replies)),
                ("boosts", long(e.boosts)),
                ("favourites", long(e.favourites)),
                (
                    "observed_at",
                    match &e.observed_at {
                        Some(t) => some(millis("engagement.observed_at", t)?),
                        None => null(),
                    },
                ),
                ("observed_by", e.observed_by.as_deref().map(|b| some(s(b))).unwrap_or_else(null)),
            ]),
        ),
    ]))
}

/// A totals record as an Avro value of `TotalsRecord`, fields in schema order.
pub fn totals_value(t: &TotalsRecord) -> Result<Value, String> {
    Ok(record(vec![
        ("scope", s(t.scope.as_str())),
        ("key", s(&t.key)),
        ("name", s(&t.name)),
        ("partition", Value::Int(i32::try_from(t.partition).unwrap_or(i32::MAX))),
        ("window", s(t.window.as_str())),
        ("zone", s(&t.zone)),
        ("start", millis("start", &t.start)?),
        ("end", millis("end", &t.end)?),
        ("revision", Value::Int(i32::try_from(t.revision).unwrap_or(i32::MAX))),
        ("final", Value::Boolean(t.is_final)),
        ("posts", long(t.posts)),
        ("accounts", long(t.accounts)),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"key":"grace@fedi.example.org/day/2026-11-02T00:00:00Z","account":"grace@fedi.example.org",
 "window":"day","zone":"UTC","start":"2026-11-02T00:00:00Z","end":"2026-11-03T00:00:00Z","revision":1,"final":true,
 "posts":5,"originals":3,"replies_to_self":1,"replies_to_others":0,"boosts":1,"with_media":1,"with_cw":0,"sensitive":0,
 "polls":0,"edits":1,"deletes":0,"languages":{"en":4},"applications":{"Phanpy":3,"Web":2},
 "hours":[0,0,0,0,0,0,0,0,2,0,0,0,0,0,0,3,0,0,0,0,0,0,0,0],"weekdays":[5,0,0,0,0,0,0],
 "tags":{"top":[["opensource",2]],"distinct":1,"total":2},"mentions":{"top":[],"distinct":0,"total":0},
 "boosted_accounts":{"top":[["jun@toot.example.net",1]],"distinct":1,"total":1},
 "text":{"posts":4,"chars":{"mean":71.5,"median":66,"p90":98},"words":{"mean":11.0,"median":10,"p90":15}},
 "links":1,"link_domains":{"top":[["news.example",1]],"distinct":1,"total":1},
 "engagement":{"replies":3,"boosts":4,"favourites":21,"observed_at":"2026-11-04T10:00:00.250Z","observed_by":"fedi.example.org"}}"#;

    #[test]
    fn the_stats_schema_parses_and_encodes_a_record() {
        let r: StatsRecord = serde_json::from_str(RECORD).unwrap();
        let bytes = encode(7, &TopicRecord::Account(Box::new(r.clone()))).unwrap();
        assert_eq!(&bytes[..5], &[MAGIC, 0, 0, 0, 7]);
        let v = apache_avro::from_avro_datum(schema(), &mut &bytes[5..], None).unwrap();
        let Value::Union(0, v) = v else { panic!("the union's first branch") };
        let Value::Record(fields) = *v else { panic!("a record") };
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("key"), s(&r.key));
        assert_eq!(get("start"), Value::TimestampMillis(1_793_577_600_000));
        assert_eq!(get("revision"), Value::Int(1));
        assert_eq!(get("languages"), Value::Map([("en".to_string(), Value::Long(4))].into_iter().collect()));
        let Value::Record(tags) = get("tags") else { panic!("tags") };
        assert_eq!(tags[0].1, Value::Array(vec![record(vec![("name", s("opensource")), ("count", Value::Long(2))])]));
        let Value::Record(eng) = get("engagement") else { panic!("engagement") };
        assert_eq!(eng[3].1, some(Value::TimestampMillis(1_793_786_400_250)));
        // Without an observation, and with a start that is no time: a clear error.
        let mut bare = r.clone();
        bare.engagement.observed_at = None;
        bare.engagement.observed_by = None;
        assert!(encode(7, &TopicRecord::Account(Box::new(bare.clone()))).is_ok());
        bare.start = "yesterday".into();
        assert!(encode(7, &TopicRecord::Account(Box::new(bare))).unwrap_err().contains("`start`"));
    }

    #[test]
    fn a_totals_record_is_the_unions_second_branch() {
        let json = r#"{"scope":"instance","key":"instance:fedi.example.org/day/2026-11-02T00:00:00Z/p0","name":"fedi.example.org",
 "partition":0,"window":"day","zone":"UTC","start":"2026-11-02T00:00:00Z","end":"2026-11-03T00:00:00Z","revision":0,
 "final":true,"posts":12,"accounts":3}"#;
        let r = TopicRecord::parse(json).unwrap();
        assert!(matches!(r, TopicRecord::Totals(_)));
        let bytes = encode(7, &r).unwrap();
        let v = apache_avro::from_avro_datum(schema(), &mut &bytes[5..], None).unwrap();
        let Value::Union(1, v) = v else { panic!("the union's second branch") };
        let Value::Record(fields) = *v else { panic!("a record") };
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("scope"), s("instance"));
        assert_eq!((get("posts"), get("accounts")), (Value::Long(12), Value::Long(3)));
        assert_eq!(get("start"), Value::TimestampMillis(1_793_577_600_000));
    }
}
