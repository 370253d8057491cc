//! `fedistream sql`: read-only SQL over an archive with Apache DataFusion, on
//! the same object store the channel writes.
//!
//! Tables: `events` (the `posts` dataset: every event, every version), `posts`
//! (a view: the latest event per post, deleted posts left out), and one table
//! per other dataset directory (a processor's records, e.g. `stats`), each with
//! the Hive partition columns `date` (DATE) and `hour` (INT) so filters on them
//! skip whole directories. Parquet archives only (a JSON Lines archive is for
//! other tools).

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::config::{ArchiveSinkConfig, Format};
use crate::schema::{posts_schema, records_schema};
use crate::store::Archive;
use object_store::ObjectStore;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" => Ok(OutputFormat::Json),
            other => Err(format!("`{other}`: use table, csv or json")),
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

/// A session with the archive's tables registered.
pub async fn session(cfg: &ArchiveSinkConfig) -> Result<SessionContext, String> {
    if cfg.format != Format::Parquet {
        return Err("`fedistream sql` reads Parquet archives; this channel writes JSON Lines (format = \"jsonl\")".into());
    }
    let archive = Archive::open(cfg).map_err(|e| e.message)?;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    let base = match (&archive.local_root, &archive.bucket) {
        (Some(root), _) => url::Url::from_directory_path(root).map_err(|_| format!("{}: not an absolute directory", root.display()))?,
        (None, Some(bucket)) => {
            let store_url = url::Url::parse(&format!("s3://{bucket}")).map_err(|e| e.to_string())?;
            ctx.register_object_store(&store_url, archive.store.clone());
            let prefix = archive.prefix.to_string();
            url::Url::parse(&format!("s3://{bucket}/{}{}", prefix, if prefix.is_empty() { "" } else { "/" })).map_err(|e| e.to_string())?
        }
        (None, None) => return Err("archive without a location".into()),
    };
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
    for d in datasets {
        let (table, schema) = if d == posts_dataset { ("events".to_string(), posts_schema()) } else { (d.clone(), records_schema()) };
        let url = base.join(&format!("{d}/")).map_err(|e| e.to_string())?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("date".into(), DataType::Date32), ("hour".into(), DataType::Int32)]);
        let table_url = ListingTableUrl::parse(url.as_str()).map_err(|e| e.to_string())?;
        let config = ListingTableConfig::new(table_url).with_listing_options(options).with_schema(schema);
        let provider = ListingTable::try_new(config).map_err(|e| format!("dataset {d}: {e}"))?;
        ctx.register_table(table.as_str(), Arc::new(provider)).map_err(|e| format!("dataset {d}: {e}"))?;
    }
    ctx.sql(POSTS_VIEW).await.map_err(|e| format!("the posts view: {e}"))?;
    Ok(ctx)
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
    df.collect().await.map_err(|e| e.to_string())
}

/// Print batches as a table, CSV (with a header) or JSON (one object per line).
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
    }
}
