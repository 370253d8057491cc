//! Records to object bytes: Parquet (zstd) or JSON Lines (optionally gzip).
//! Pure CPU work; the sink runs it on a blocking thread.

use std::io::Write;

use arrow::array::RecordBatch;
use bytes::Bytes;
use fedistream_core::{Event, LogRecord};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

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

/// Objects of fewer rows than this are *small*: see [`parquet_properties`].
pub const SMALL_OBJECT_ROWS: usize = 4096;

/// The columns zstd compresses in a small object: the long texts (a post's
/// HTML and text; a processor record's JSON).
pub const SMALL_OBJECT_ZSTD_COLUMNS: [&str; 3] = ["content_html", "content_text", "value"];

/// The archive's Parquet writer settings for an object of `rows` rows: zstd
/// (level 3), `row_group_rows` per row group. In a small object (fewer than
/// [`SMALL_OBJECT_ROWS`] rows: an hour directory's share of one write-out)
/// only [`SMALL_OBJECT_ZSTD_COLUMNS`] are compressed and the other columns
/// are stored uncompressed (dictionary and run-length encoded as always):
/// the `parquet` crate creates a zstd compression and a decompression
/// context for every column chunk it writes, which for ~100 rows costs more
/// CPU than the few hundred bytes per column it saves are worth
/// (docs/benchmarks.md, issue 14). Large objects compress every column.
pub fn parquet_properties(row_group_rows: usize, rows: usize) -> Result<WriterProperties, String> {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| e.to_string())?);
    let mut b = WriterProperties::builder()
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_created_by(format!("fedistream {}", env!("CARGO_PKG_VERSION")));
    if rows < SMALL_OBJECT_ROWS {
        b = b.set_compression(Compression::UNCOMPRESSED);
        for c in SMALL_OBJECT_ZSTD_COLUMNS {
            b = b.set_column_compression(ColumnPath::from(c), zstd);
        }
    }
    Ok(b.build())
}

/// Record batches (of `schema`) as one Parquet object; none gives a valid
/// object without rows.
pub fn parquet_of_batches(schema: arrow::datatypes::SchemaRef, batches: &[RecordBatch], row_group_rows: usize) -> Result<Bytes, String> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(parquet_properties(row_group_rows, rows)?)).map_err(|e| e.to_string())?;
    for b in batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;
    Ok(buf.into())
}

fn parquet(records: &[LogRecord], enc: Encoding) -> Result<Bytes, String> {
    let schema = if enc.events { schema::posts_schema() } else { schema::records_schema() };
    let mut buf = Vec::new();
    let props = parquet_properties(enc.row_group_rows, records.len())?;
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

    /// The codec of each column chunk of a Parquet object, by column path.
    fn codecs(bytes: Bytes) -> Vec<(String, Compression)> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let r = SerializedFileReader::new(bytes).unwrap();
        let rg = r.metadata().row_group(0);
        rg.columns().iter().map(|c| (c.column_path().string(), c.compression())).collect()
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
    fn small_objects_compress_only_the_long_texts_and_large_ones_every_column() {
        let enc = Encoding { format: Format::Parquet, gzip: false, row_group_rows: 1 << 17, events: false };
        let small = codecs(encode(enc, &records(3)).unwrap());
        assert_eq!(small.len(), 5);
        for (path, codec) in &small {
            let zstd = matches!(codec, Compression::ZSTD(_));
            assert_eq!(zstd, SMALL_OBJECT_ZSTD_COLUMNS.contains(&path.as_str()), "{path}: {codec:?} in a small object");
        }
        assert!(small.iter().any(|(p, c)| p == "value" && matches!(c, Compression::ZSTD(_))));
        let large = codecs(encode(enc, &records(SMALL_OBJECT_ROWS)).unwrap());
        assert!(large.iter().all(|(_, c)| matches!(c, Compression::ZSTD(_))), "{large:?}");
    }
}
