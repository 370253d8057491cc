//! `fedistream sql`: read-only SQL over an archive with Apache DataFusion, on
//! the same object store the channel writes.
//!
//! Tables: `events` (the `posts` dataset: every event, every version), `posts`
//! (a view: the latest event per post, deleted posts left out), and one table
//! per other dataset directory (a processor's records, e.g. `stats`), each with
//! the Hive partition columns `date` (DATE) and `hour` (INT) so filters on them
//! skip whole directories; `events` also with the channel's `partition_by`
//! levels, `instance` (TEXT, from the directory instead of the file) and
//! `bucket` (INT). Parquet archives only (a JSON Lines archive is for
//! other tools).

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::config::{ArchiveSinkConfig, Format};
use crate::layout::Level;
use crate::manifest::{Manifest, VisibleStore};
use crate::schema::{posts_schema, records_schema};
use crate::store::Archive;
use object_store::ObjectStore;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    /// One Parquet file (zstd), for other tools.
    Parquet,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" => Ok(OutputFormat::Json),
            "parquet" => Ok(OutputFormat::Parquet),
            other => Err(format!("`{other}`: use table, csv, json or parquet")),
        }
    }
}

/// The view of current posts: the latest event per key, deleted ones left out.
/// A post's events share one log partition (the account is the partition key),
/// so the log offset orders them.
pub const POSTS_VIEW: &str = "CREATE VIEW posts AS \
    SELECT * EXCLUDE (version_rank) FROM ( \
      SELECT *, row_number() OVER (PARTITION BY key ORDER BY log_partition DESC, log_offset DESC) AS version_rank FROM events \
    ) WHERE version_rank = 1 AND kind <> 'deleted'";

/// A session with the archive's tables registered, as the datasets'
/// manifests stand now (see [`run`] for a query that is consistent while a
/// compaction switches generations).
pub async fn session(cfg: &ArchiveSinkConfig) -> Result<SessionContext, String> {
    Ok(open(cfg).await?.0)
}

/// The datasets' manifest generations.
async fn generations(archive: &Archive, datasets: &[String]) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(datasets.len());
    for d in datasets {
        out.push(Manifest::read(archive, d).await.map_err(|e| e.message)?.generation);
    }
    Ok(out)
}

/// The session, the archive, its datasets and the manifests' generations the session reads.
async fn open(cfg: &ArchiveSinkConfig) -> Result<(SessionContext, Archive, Vec<String>, Vec<u64>), String> {
    if cfg.format != Format::Parquet {
        return Err("`fedistream sql` reads Parquet archives; this channel writes JSON Lines (format = \"jsonl\")".into());
    }
    let archive = Archive::open(cfg).map_err(|e| e.message)?;
    // No statistics collected when a table is scanned: that reads every
    // object's footer and turns every column's statistics into DataFusion's
    // before the query starts (a larger metadata cache did not help: the
    // conversion is the cost), for little gain here (row groups are still
    // pruned by their statistics when each object is read). Half the time of
    // a group-by over 8,400 hourly objects (docs/benchmarks.md, issue 14).
    let config = SessionConfig::new().with_information_schema(true).with_collect_statistics(false);
    let ctx = SessionContext::new_with_config(config);
    let posts_dataset = cfg.dataset_for(fedistream_core::log::EVENTS);
    let mut datasets: Vec<String> = archive
        .store
        .list_with_delimiter(Some(&archive.prefix))
        .await
        .map_err(|e| archive.error("list", &archive.prefix, e).message)?
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .filter(|d| !d.starts_with('.'))
        .collect();
    if !datasets.contains(&posts_dataset) {
        datasets.push(posts_dataset.clone());
    }
    // Each dataset's manifest, keyed by the dataset's path in the store DataFusion lists.
    let mut rules = Vec::new();
    let mut generations = Vec::new();
    for d in &datasets {
        let m = Manifest::read(&archive, d).await.map_err(|e| e.message)?;
        generations.push(m.generation);
        let base = match &archive.local_root {
            Some(root) => object_store::path::Path::from_absolute_path(root.join(d)).map_err(|e| e.to_string())?.to_string(),
            None => archive.path(d).to_string(),
        };
        rules.push((base, m));
    }
    let base = match (&archive.local_root, &archive.bucket) {
        (Some(root), _) => {
            let store = VisibleStore::new(Arc::new(object_store::local::LocalFileSystem::new()), rules);
            ctx.register_object_store(&url::Url::parse("file://").map_err(|e| e.to_string())?, Arc::new(store));
            url::Url::from_directory_path(root).map_err(|_| format!("{}: not an absolute directory", root.display()))?
        }
        (None, Some(bucket)) => {
            let store_url = url::Url::parse(&format!("s3://{bucket}")).map_err(|e| e.to_string())?;
            ctx.register_object_store(&store_url, Arc::new(VisibleStore::new(archive.store.clone(), rules)));
            let prefix = archive.prefix.to_string();
            url::Url::parse(&format!("s3://{bucket}/{}{}", prefix, if prefix.is_empty() { "" } else { "/" })).map_err(|e| e.to_string())?
        }
        (None, None) => return Err("archive without a location".into()),
    };
    for d in &datasets {
        let d = d.clone();
        let mut partition_cols = vec![("date".to_string(), DataType::Date32), ("hour".to_string(), DataType::Int32)];
        let (table, schema) = if d == posts_dataset {
            let mut schema = posts_schema();
            for l in &cfg.partition_by {
                match l {
                    // The directory holds the `instance` column's value: the column comes from the path (and prunes).
                    Level::Instance => {
                        schema =
                            Arc::new(Schema::new(schema.fields().iter().filter(|f| f.name() != "instance").cloned().collect::<Vec<_>>()));
                        partition_cols.push(("instance".into(), DataType::Utf8));
                    }
                    Level::Bucket => partition_cols.push(("bucket".into(), DataType::Int32)),
                }
            }
            ("events".to_string(), schema)
        } else {
            (d.clone(), records_schema())
        };
        let url = base.join(&format!("{d}/")).map_err(|e| e.to_string())?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partition_cols);
        let table_url = ListingTableUrl::parse(url.as_str()).map_err(|e| e.to_string())?;
        let config = ListingTableConfig::new(table_url).with_listing_options(options).with_schema(schema);
        let provider = ListingTable::try_new(config).map_err(|e| format!("dataset {d}: {e}"))?;
        ctx.register_table(table.as_str(), Arc::new(provider)).map_err(|e| format!("dataset {d}: {e}"))?;
    }
    ctx.sql(POSTS_VIEW).await.map_err(|e| format!("the posts view: {e}"))?;
    Ok((ctx, archive, datasets, generations))
}

/// How often [`run`] starts over when a compaction switched generations under it.
const ATTEMPTS: usize = 10;

/// Run one read-only statement over one generation of every dataset: when a
/// compaction switches generations while the query runs (it then may have
/// read some of the old objects, or found them deleted), the query runs
/// again on the new generation. So the rows come from the old set of objects
/// or from the new one, never from both.
pub async fn run(cfg: &ArchiveSinkConfig, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let mut last_err = String::new();
    for _ in 0..ATTEMPTS {
        let (ctx, archive, datasets, before) = open(cfg).await?;
        let result = query(&ctx, sql).await;
        let after = generations(&archive, &datasets).await?;
        if after == before {
            return result;
        }
        if let Err(e) = result {
            last_err = e;
        }
        tracing::debug!(?before, ?after, "A compaction switched generations during the query; running it again");
    }
    Err(format!("the archive kept changing generations (compactions) during {ATTEMPTS} attempts; last error: {last_err}"))
}

/// Run one read-only statement and collect its rows.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, String> {
    use datafusion::sql::parser::{DFParser, Statement};
    let statements = DFParser::parse_sql(sql).map_err(|e| e.to_string())?;
    if statements.len() != 1 {
        return Err(format!("give one statement, not {}", statements.len()));
    }
    let read_only = match &statements[0] {
        Statement::Statement(s) => matches!(
            **s,
            datafusion::sql::sqlparser::ast::Statement::Query(_)
                | datafusion::sql::sqlparser::ast::Statement::Explain { .. }
                | datafusion::sql::sqlparser::ast::Statement::ShowTables { .. }
                | datafusion::sql::sqlparser::ast::Statement::ShowColumns { .. }
        ),
        Statement::Explain(_) => true,
        _ => false,
    };
    if !read_only {
        return Err("only queries (SELECT, WITH, EXPLAIN, SHOW) run over the archive".into());
    }
    let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
    let schema = df.schema().inner().clone();
    let mut batches = df.collect().await.map_err(|e| e.to_string())?;
    if batches.is_empty() {
        // No rows: keep the columns (headers, a Parquet schema).
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

/// Print batches as a table, CSV (with a header), JSON (one object per line)
/// or one Parquet file.
pub fn print(batches: &[RecordBatch], format: OutputFormat, out: &mut dyn Write) -> Result<(), String> {
    match format {
        OutputFormat::Table => {
            let t = datafusion::arrow::util::pretty::pretty_format_batches(batches).map_err(|e| e.to_string())?;
            writeln!(out, "{t}").map_err(|e| e.to_string())
        }
        OutputFormat::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(out);
            for b in batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())
        }
        OutputFormat::Parquet => {
            let Some(first) = batches.first() else { return Err("no result schema to write".into()) };
            let bytes = crate::encode::parquet_of_batches(first.schema(), batches, 128 * 1024)?;
            out.write_all(&bytes).map_err(|e| e.to_string())
        }
    }
}
