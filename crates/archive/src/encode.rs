//! Records to object bytes: Parquet (zstd) or JSON Lines (optionally gzip).
//! Pure CPU work; the sink runs it on a blocking thread.

use std::io::Write;

use arrow::array::RecordBatch;
use bytes::Bytes;
use fedistream_core::{Event, LogRecord};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::config::Format;
use crate::schema;

/// How to encode.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    pub format: Format,
    pub gzip: bool,
    pub row_group_rows: usize,
    /// `posts` schema (events) or the generic one (a processor's records).
    pub events: bool,
}

pub fn encode(enc: Encoding, records: &[LogRecord]) -> Result<Bytes, String> {
    match enc.format {
        Format::Jsonl => jsonl(records, enc.gzip),
        Format::Parquet => parquet(records, enc),
    }
}

fn jsonl(records: &[LogRecord], gzip: bool) -> Result<Bytes, String> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 40).sum());
    for r in records {
        r.write_json_line(&mut out).map_err(|e| e.to_string())?;
        out.push(b'\n');
    }
    if !gzip {
        return Ok(out.into());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(out.len() / 4), flate2::Compression::default());
    gz.write_all(&out).map_err(|e| e.to_string())?;
    Ok(gz.finish().map_err(|e| e.to_string())?.into())
}

/// How a leaf column is stored: the defaults (dictionary, falling back to
/// plain, then zstd level 3) or, in the archive's own datasets, uncompressed
/// or delta-encoded where zstd gains little (see [`column_storage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    Zstd,
    /// zstd without trying a dictionary first: a value per row, rarely repeated
    /// (texts, status URIs and ids, the version hash), where a dictionary only
    /// adds an index per row and the hashing of every value.
    ZstdUnique,
    /// Dictionary/RLE (or plain) encoded, not compressed.
    Uncompressed,
    /// `DELTA_BINARY_PACKED`, no dictionary, not compressed: offsets and
    /// timestamps that grow along an object.
    Delta,
}

/// The storage of a leaf column (`path` as Parquet names it, e.g.
/// `media.list.item.url`) of the `posts` or a processor's dataset.
///
/// The `parquet` crate sets up a zstd compression and a decompression context
/// for every column chunk, a fixed cost (on a VM that traps `cpuid`, tens of
/// µs) that a small object (an hour directory's share of a write-out: often a
/// hundred rows) does not earn back on a column that dictionary encoding has
/// already shrunk to a few bytes per row — measured on the bench's objects,
/// zstd made 17 of the 42 leaf columns larger. So zstd stays on the columns
/// where it saves (the texts, URLs, ids, the version hash, the counts that
/// vary), the timestamps and offsets that grow along an object are delta
/// encoded, and the rest (flags, kinds, hosts, languages, tags …) are stored
/// dictionary encoded without compression (docs/benchmarks.md, 2026-12-07,
/// fourth pass; `schemas/archive-parquet.md` lists them).
fn column_storage(posts: bool, path: &str) -> Storage {
    match (posts, path) {
        (true, "log_offset" | "observed_at" | "event_time" | "created_at") | (false, "log_offset") => Storage::Delta,
        (
            true,
            "content_html"
            | "content_text"
            | "key"
            | "url"
            | "status_id"
            | "version"
            | "boost_of_uri"
            | "in_reply_to_id"
            | "media.list.item.url"
            | "media.list.item.preview_url",
        )
        | (false, "value") => Storage::ZstdUnique,
        (
            true,
            "account"
            | "author_id"
            | "boost_of_account"
            | "reblogs_count"
            | "favourites_count"
            | "media.list.item.description"
            | "mentions.list.item.acct"
            | "mentions.list.item.url",
        )
        | (false, "key") => Storage::Zstd,
        _ => Storage::Uncompressed,
    }
}

/// The archive's Parquet writer settings for objects of `schema`, with
/// `row_group_rows` per row group: for the archive's datasets (`posts`, a
/// processor's records) the per-column storage of [`column_storage`]; for any
/// other schema (`fedistream sql`'s Parquet output) zstd level 3 on every column.
pub fn parquet_properties(schema: &arrow::datatypes::Schema, row_group_rows: usize) -> Result<WriterProperties, String> {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| e.to_string())?);
    let mut b = WriterProperties::builder()
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_created_by(format!("fedistream {}", env!("CARGO_PKG_VERSION")));
    let posts = schema.fields() == schema::posts_schema().fields();
    if posts || schema.fields() == schema::records_schema().fields() {
        let leaves = parquet::arrow::ArrowSchemaConverter::new().convert(schema).map_err(|e| e.to_string())?;
        for col in leaves.columns() {
            let path = col.path().clone();
            match column_storage(posts, &path.string()) {
                Storage::Zstd => {}
                Storage::ZstdUnique => b = b.set_column_dictionary_enabled(path, false),
                Storage::Uncompressed => b = b.set_column_compression(path, Compression::UNCOMPRESSED),
                Storage::Delta => {
                    b = b
                        .set_column_compression(path.clone(), Compression::UNCOMPRESSED)
                        .set_column_dictionary_enabled(path.clone(), false)
                        .set_column_encoding(path, parquet::basic::Encoding::DELTA_BINARY_PACKED)
                }
            }
        }
    }
    Ok(b.build())
}

/// Record batches (of `schema`) as one Parquet object; none gives a valid
/// object without rows.
pub fn parquet_of_batches(schema: arrow::datatypes::SchemaRef, batches: &[RecordBatch], row_group_rows: usize) -> Result<Bytes, String> {
    let mut buf = Vec::new();
    let props = parquet_properties(&schema, row_group_rows)?;
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| e.to_string())?;
    for b in batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;
    Ok(buf.into())
}

fn parquet(records: &[LogRecord], enc: Encoding) -> Result<Bytes, String> {
    let schema = if enc.events { schema::posts_schema() } else { schema::records_schema() };
    let mut buf = Vec::new();
    let props = parquet_properties(&schema, enc.row_group_rows)?;
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| e.to_string())?;
    // Row-group-sized slices keep the builders' memory bounded.
    for chunk in records.chunks(enc.row_group_rows.max(1)) {
        let batch = if enc.events {
            let evs: Vec<&Event> = chunk.iter().map(|r| r.event().map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
            let rows: Vec<(&LogRecord, &Event)> = chunk.iter().zip(evs).collect();
            schema::posts_batch(&rows)
        } else {
            let rows: Vec<(&LogRecord, Option<String>)> = chunk
                .iter()
                .map(|r| (r, serde_json::from_str::<serde_json::Value>(&r.payload).ok().as_ref().and_then(schema::record_key)))
                .collect();
            schema::records_batch(&rows)
        }
        .map_err(|e| e.to_string())?;
        w.write(&batch).map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;
    Ok(buf.into())
}

/// Whether two objects hold the same records: the same bytes, or Parquet
/// objects with the same log positions (another build may encode the same
/// records into other bytes).
pub fn same_records(a: &Bytes, b: &Bytes) -> bool {
    if a == b {
        return true;
    }
    fn positions(bytes: &Bytes) -> Option<Vec<(u32, u64)>> {
        use arrow::array::AsArray;
        use arrow::datatypes::{UInt32Type, UInt64Type};
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).ok()?;
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [0, 1]);
        let mut out = Vec::new();
        for batch in builder.with_projection(mask).build().ok()? {
            let batch = batch.ok()?;
            let (p, o) = (batch.column(0).as_primitive_opt::<UInt32Type>()?, batch.column(1).as_primitive_opt::<UInt64Type>()?);
            out.extend(p.values().iter().copied().zip(o.values().iter().copied()));
        }
        Some(out)
    }
    matches!((positions(a), positions(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistream_core::Position;

    /// The codec and encodings of each column chunk of a Parquet object, by column path.
    fn columns(bytes: Bytes) -> Vec<(String, Compression, Vec<parquet::basic::Encoding>)> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let r = SerializedFileReader::new(bytes).unwrap();
        let rg = r.metadata().row_group(0);
        rg.columns().iter().map(|c| (c.column_path().string(), c.compression(), c.encodings().collect())).collect()
    }

    fn storage_of(cols: &[(String, Compression, Vec<parquet::basic::Encoding>)], path: &str) -> Storage {
        let (_, codec, encodings) = cols.iter().find(|(p, _, _)| p == path).unwrap_or_else(|| panic!("no column {path}: {cols:?}"));
        match codec {
            Compression::ZSTD(_) if encodings.contains(&parquet::basic::Encoding::RLE_DICTIONARY) => Storage::Zstd,
            Compression::ZSTD(_) => Storage::ZstdUnique,
            Compression::UNCOMPRESSED if encodings.contains(&parquet::basic::Encoding::DELTA_BINARY_PACKED) => Storage::Delta,
            Compression::UNCOMPRESSED => Storage::Uncompressed,
            other => panic!("{path}: unexpected codec {other:?}"),
        }
    }

    fn records(n: usize) -> Vec<LogRecord> {
        (0..n)
            .map(|i| {
                let payload = format!(r#"{{"key":"k{}","count":{i}}}"#, i % 7);
                LogRecord::new(Position { partition: 0, offset: i as u64 + 1 }, chrono::Utc::now(), payload.into())
            })
            .collect()
    }

    #[test]
    fn a_processors_records_compress_key_and_value_and_delta_encode_the_offset() {
        let enc = Encoding { format: Format::Parquet, gzip: false, row_group_rows: 1 << 17, events: false };
        for n in [3, 5000] {
            let cols = columns(encode(enc, &records(n)).unwrap());
            assert_eq!(cols.len(), 5);
            let got: Vec<Storage> =
                ["log_partition", "log_offset", "appended_at", "key", "value"].iter().map(|p| storage_of(&cols, p)).collect();
            use Storage::*;
            assert_eq!(got, [Uncompressed, Delta, Uncompressed, Zstd, ZstdUnique], "{n} rows: {cols:?}");
        }
    }

    #[test]
    fn posts_objects_store_each_column_as_column_storage_says() {
        let recs: Vec<LogRecord> = (0..50u64)
            .map(|i| {
                let ev = fedistream_core::testing::created("t", "alice@example.org", i, &format!("post {i} with some text"));
                LogRecord::from_event(Position { partition: 0, offset: i + 1 }, chrono::Utc::now(), ev)
            })
            .collect();
        let enc = Encoding { format: Format::Parquet, gzip: false, row_group_rows: 1 << 17, events: true };
        let cols = columns(encode(enc, &recs).unwrap());
        assert_eq!(cols.len(), 42);
        for (path, _, _) in &cols {
            let (got, want) = (storage_of(&cols, path), column_storage(true, path));
            // A column allowed a dictionary uses none when it holds no values (all null here).
            assert!(got == want || (want == Storage::Zstd && got == Storage::ZstdUnique), "{path}: {got:?}, want {want:?}");
        }
        use Storage::*;
        for (path, want) in [("content_html", ZstdUnique), ("account", Zstd), ("kind", Uncompressed), ("event_time", Delta)] {
            assert_eq!(storage_of(&cols, path), want, "{path}");
        }
    }

    #[test]
    fn other_schemas_are_zstd_compressed_throughout() {
        use arrow::array::{StringArray, UInt64Array};
        use arrow::datatypes::{DataType, Field, Schema};
        let schema =
            std::sync::Arc::new(Schema::new(vec![Field::new("kind", DataType::Utf8, false), Field::new("n", DataType::UInt64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![std::sync::Arc::new(StringArray::from(vec!["a", "b"])), std::sync::Arc::new(UInt64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let cols = columns(parquet_of_batches(schema, &[batch], 1024).unwrap());
        assert!(cols.iter().all(|(_, c, _)| matches!(c, Compression::ZSTD(_))), "{cols:?}");
    }
}
