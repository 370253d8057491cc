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

/// The archive's Parquet writer settings: zstd (level 3) on every column,
/// `row_group_rows` per row group.
pub fn parquet_properties(row_group_rows: usize) -> Result<WriterProperties, String> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| e.to_string())?))
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_created_by(format!("fedistream {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// Record batches (of `schema`) as one Parquet object; none gives a valid
/// object without rows.
pub fn parquet_of_batches(schema: arrow::datatypes::SchemaRef, batches: &[RecordBatch], row_group_rows: usize) -> Result<Bytes, String> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(parquet_properties(row_group_rows)?)).map_err(|e| e.to_string())?;
    for b in batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;
    Ok(buf.into())
}

fn parquet(records: &[LogRecord], enc: Encoding) -> Result<Bytes, String> {
    let schema = if enc.events { schema::posts_schema() } else { schema::records_schema() };
    let mut buf = Vec::new();
    let props = parquet_properties(enc.row_group_rows)?;
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
    fn every_column_is_zstd_compressed() {
        let enc = Encoding { format: Format::Parquet, gzip: false, row_group_rows: 1 << 17, events: false };
        for n in [3, 5000] {
            let got = codecs(encode(enc, &records(n)).unwrap());
            assert_eq!(got.len(), 5);
            assert!(got.iter().all(|(_, c)| matches!(c, Compression::ZSTD(_))), "{n} rows: {got:?}");
        }
    }
}
