use apache_avro::schema::Schema;
use chrono::TimeZone;
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};

use super::*;

const FIXTURES: &[&str] = &[
    "status_plain.json",
    "status_reply.json",
    "status_reblog.json",
    "status_media_tags_mentions.json",
    "status_poll.json",
    "status_edited.json",
    "gotosocial_status.json",
];

/// Created, updated and deleted events for every status fixture.
fn fixture_events() -> Vec<Event> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mastodon");
    let received_at = Utc.timestamp_millis_opt(1_767_225_600_123).unwrap();
    let ctx = NormalizeContext { instance: "mastodon.example", via: Via::Stream, received_at };
    let mut out = Vec::new();
    for f in FIXTURES {
        let json = std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
        let post = parse_and_normalize(&json, &ctx).unwrap_or_else(|e| panic!("{f}: {e}"));
        let created = Event::created("main", post.clone());
        let mut deleted = created.clone();
        deleted.kind = EventKind::Deleted;
        deleted.post = None;
        deleted.via = Via::Rest;
        out.extend([created, Event::updated("replayed", post), deleted]);
    }
    out
}

#[test]
fn the_schema_parses_and_carries_its_version() {
    let s = schema();
    assert_eq!(s.name().map(|n| n.fullname(None)), Some("org.fedistream.PostEvent".to_string()));
    let attr = s.custom_attributes().and_then(|a| a.get("fedistream_schema_version")).cloned();
    assert_eq!(attr, Some(serde_json::json!(SCHEMA_VERSION)));
    // The file on disk is what is embedded (include_str!), and it is plain JSON.
    let on_disk = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/post_event.avsc")).unwrap();
    assert_eq!(on_disk, SCHEMA_JSON);
}

#[test]
fn fixture_events_round_trip_through_avro() {
    let events = fixture_events();
    assert_eq!(events.len(), FIXTURES.len() * 3);
    // The fixtures cover the optional parts of a post.
    let posts: Vec<&Post> = events.iter().filter_map(|e| e.post.as_ref()).collect();
    assert!(posts.iter().any(|p| p.poll.is_some()));
    assert!(posts.iter().any(|p| !p.media.is_empty()));
    assert!(posts.iter().any(|p| p.boost_of.is_some()));
    assert!(posts.iter().any(|p| p.in_reply_to.is_some()));
    assert!(posts.iter().any(|p| !p.mentions.is_empty() && !p.tags.is_empty() && !p.emojis.is_empty()));
    for (i, e) in events.iter().enumerate() {
        let wire = encode(7 + i as u32, e).unwrap_or_else(|err| panic!("{}: {err}", e.key));
        let (id, datum) = split_wire(&wire).unwrap();
        assert_eq!(id, 7 + i as u32);
        assert_eq!(wire[0], MAGIC);
        let back = decode(schema(), None, datum).unwrap_or_else(|err| panic!("{}: {err}", e.key));
        assert_eq!(&back, e);
        // And through the value form alone.
        assert_eq!(from_value(&to_value(e)).unwrap(), *e);
    }
}

#[test]
fn timestamps_are_millis() {
    let mut e = fixture_events().remove(0);
    e.observed_at = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
    let back = decode(schema(), None, split_wire(&encode(1, &e).unwrap()).unwrap().1).unwrap();
    assert_eq!(back.observed_at, Utc.timestamp_millis_opt(1_700_000_000_123).unwrap());
}

#[test]
fn a_newer_reader_schema_with_a_defaulted_field_reads_old_data() {
    let e = fixture_events().remove(0);
    let mut v2: serde_json::Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    v2["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "region", "type": ["null", "string"], "default": null}));
    let v2 = Schema::parse_str(&v2.to_string()).unwrap();
    apache_avro::schema_compatibility::SchemaCompatibility::can_read(schema(), &v2).unwrap();
    let wire = encode(1, &e).unwrap();
    let back = decode(schema(), Some(&v2), split_wire(&wire).unwrap().1).unwrap();
    assert_eq!(back, e);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(split_wire(&[]).is_err());
    assert!(split_wire(&[0, 0, 0]).is_err());
    assert!(split_wire(&[1, 0, 0, 0, 1, 2]).unwrap_err().contains("magic byte 1"));
    for junk in [&[][..], &[0xff; 16][..], &[2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01][..]] {
        assert!(decode(schema(), None, junk).is_err());
    }
    assert!(from_value(&Value::Null).is_err());
    let err = from_value(&record(vec![("kind", kind(EventKind::Created))])).unwrap_err();
    assert_eq!(err, "key: missing");
}

/// The schema as it was in version 1: without `counts_refresh`.
fn schema_v1() -> Schema {
    let mut v1: serde_json::Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    v1["fedistream_schema_version"] = serde_json::json!(1);
    let fields = v1["fields"].as_array_mut().unwrap();
    let before = fields.len();
    fields.retain(|f| f["name"] != "counts_refresh");
    assert_eq!(fields.len(), before - 1);
    Schema::parse_str(&v1.to_string()).unwrap()
}

#[test]
fn a_counts_refresh_is_marked_in_the_record_and_version_1_records_read_as_not_one() {
    let mut e = fixture_events().remove(1);
    e.counts_refresh = true;
    let back = decode(schema(), None, split_wire(&encode(1, &e).unwrap()).unwrap().1).unwrap();
    assert!(back.counts_refresh);
    assert_eq!(back, e);

    // Data written with version 1 (no such field) reads through version 2 as false;
    // version 2 can read version 1 and the other way round (a new field with a default).
    let v1 = schema_v1();
    apache_avro::schema_compatibility::SchemaCompatibility::can_read(&v1, schema()).unwrap();
    apache_avro::schema_compatibility::SchemaCompatibility::can_read(schema(), &v1).unwrap();
    let mut old = e.clone();
    old.counts_refresh = false;
    let mut value = to_value(&old);
    if let Value::Record(fields) = &mut value {
        fields.retain(|(k, _)| k != "counts_refresh");
    }
    let datum = apache_avro::to_avro_datum(&v1, value).unwrap();
    let back = decode(&v1, Some(schema()), &datum).unwrap();
    assert_eq!(back, old);
}
