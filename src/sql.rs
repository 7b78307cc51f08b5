//! SQL over the Delta tables, through DataFusion.
//!
//! The tasks use it to read tables (`SELECT ... FROM t`), and `medallion sql` to query a
//! target's whole catalog by `catalog.schema.table` or, within the target, `schema.table`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;

use crate::catalog::{TableName, Warehouse};

/// Errors running SQL.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("SQL failed: {0}")]
    DataFusion(#[from] DataFusionError),
    #[error("medallion sql is read-only: {0}. It runs queries (SELECT, WITH, EXPLAIN, DESCRIBE); use a pipeline task to write to a table")]
    ReadOnly(String),
    #[error("Delta table {table}: {source}")]
    Table {
        table: String,
        source: DeltaTableError,
    },
    #[error("cannot list the warehouse {path}: {source}. Run `medallion run` first, or check warehouse_dir")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A session where each `(name, table)` is registered under `name`.
pub async fn session(tables: &[(&str, &DeltaTable)]) -> Result<SessionContext, SqlError> {
    register(SessionContext::new(), tables).await
}

async fn register(
    ctx: SessionContext,
    tables: &[(&str, &DeltaTable)],
) -> Result<SessionContext, SqlError> {
    for (name, table) in tables {
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|source| SqlError::Table {
                table: name.to_string(),
                source,
            })?;
        ctx.register_table(*name, table.table_provider().await?)?;
    }
    Ok(ctx)
}

/// Runs `sql` and collects the result.
pub async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Runs `sql` as a query only: DDL (`CREATE [EXTERNAL] TABLE`, `DROP`), DML (`INSERT`,
/// `UPDATE`, `DELETE`, `COPY ... TO`) and statements (`SET`, transactions) are refused
/// before anything is run, inside `EXPLAIN` or a subquery too.
pub async fn collect_read_only(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Vec<RecordBatch>, SqlError> {
    use futures::TryStreamExt;
    Ok(stream_read_only(ctx, sql).await?.try_collect().await?)
}

/// [`collect_read_only`]'s query as a stream of batches, so that a caller showing the
/// first rows reads no more than those.
pub async fn stream_read_only(
    ctx: &SessionContext,
    sql: &str,
) -> Result<deltalake::datafusion::execution::SendableRecordBatchStream, SqlError> {
    let plan = ctx.state().create_logical_plan(sql).await?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| {
            SqlError::ReadOnly(match e {
                DataFusionError::Plan(reason) => reason,
                other => other.to_string(),
            })
        })?;
    Ok(ctx
        .execute_logical_plan(plan)
        .await?
        .execute_stream()
        .await?)
}

/// `sql` over one table, registered as `t`, as a query not yet run, in a session with
/// delta-rs's planner, so that delta-rs can run it as the source of a write.
pub async fn table_query(
    table: &DeltaTable,
    sql: &str,
) -> Result<deltalake::datafusion::prelude::DataFrame, SqlError> {
    let ctx = deltalake::delta_datafusion::create_session().into_inner();
    Ok(register(ctx, &[("t", table)]).await?.sql(sql).await?)
}

/// One table, registered as `t`, as a DataFrame, in a session with delta-rs's planner.
pub async fn table_frame(
    table: &DeltaTable,
) -> Result<deltalake::datafusion::prelude::DataFrame, SqlError> {
    let ctx = deltalake::delta_datafusion::create_session().into_inner();
    Ok(register(ctx, &[("t", table)]).await?.table("t").await?)
}

/// The table as [`table_frame`] gives it, read through `provider`: a scan of some of
/// its files, or with the file of each row as a column.
pub async fn provider_frame(
    table: &DeltaTable,
    provider: deltalake::delta_datafusion::TableProviderBuilder,
) -> Result<deltalake::datafusion::prelude::DataFrame, SqlError> {
    let ctx = deltalake::delta_datafusion::create_session().into_inner();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|source| SqlError::Table {
            table: "t".into(),
            source,
        })?;
    Ok(ctx.read_table(provider.await?)?)
}

/// Runs `sql` over one table, registered as `t`.
pub async fn query_table(table: &DeltaTable, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    collect(&session(&[("t", table)]).await?, sql).await
}

/// A table found in the warehouse.
pub struct FoundTable {
    pub name: TableName,
    pub path: PathBuf,
}

/// Every Delta table of the warehouse's catalog, sorted by name.
pub fn list_tables(warehouse: &Warehouse) -> Result<Vec<FoundTable>, SqlError> {
    let root = warehouse.catalog_path();
    let mut found = Vec::new();
    if !root.is_dir() {
        return Ok(found);
    }
    let list = |p: &Path| -> Result<Vec<PathBuf>, SqlError> {
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(p).map_err(|source| SqlError::List {
            path: p.into(),
            source,
        })? {
            let entry = entry.map_err(|source| SqlError::List {
                path: p.into(),
                source,
            })?;
            if entry.path().is_dir() {
                dirs.push(entry.path());
            }
        }
        Ok(dirs)
    };
    for schema in list(&root)? {
        for table in list(&schema)? {
            if crate::catalog::is_delta_table(&table) {
                let name = TableName::new(
                    schema.file_name().unwrap_or_default().to_string_lossy(),
                    table.file_name().unwrap_or_default().to_string_lossy(),
                );
                found.push(FoundTable { name, path: table });
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Opens a table of the warehouse for reading.
pub async fn open(warehouse: &Warehouse, name: &TableName) -> Result<DeltaTable, SqlError> {
    let url = warehouse.url(name).map_err(|e| SqlError::Table {
        table: warehouse.qualified(name),
        source: DeltaTableError::Generic(e.to_string()),
    })?;
    deltalake::open_table(url)
        .await
        .map_err(|source| SqlError::Table {
            table: warehouse.qualified(name),
            source,
        })
}

/// A session with every table of the catalog registered as `<catalog>.<schema>.<table>`;
/// the target's catalog is the default, so `schema.table` works too.
pub async fn catalog_session(warehouse: &Warehouse) -> Result<SessionContext, SqlError> {
    let config =
        SessionConfig::new().with_default_catalog_and_schema(warehouse.catalog(), "silver");
    let ctx = SessionContext::new_with_config(config);
    let catalog = Arc::new(MemoryCatalogProvider::new());
    for found in list_tables(warehouse)? {
        let table = open(warehouse, &found.name).await?;
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|source| SqlError::Table {
                table: warehouse.qualified(&found.name),
                source,
            })?;
        let schema = match catalog.schema(&found.name.schema) {
            Some(s) => s,
            None => {
                let s: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
                catalog.register_schema(&found.name.schema, s.clone())?;
                s
            }
        };
        schema.register_table(found.name.table.clone(), table.table_provider().await?)?;
    }
    if catalog.schema("silver").is_none() {
        catalog.register_schema("silver", Arc::new(MemorySchemaProvider::new()))?;
    }
    ctx.register_catalog(warehouse.catalog(), catalog);
    Ok(ctx)
}

/// Row count, version and last commit time of a table.
pub async fn describe(table: &DeltaTable) -> Result<(u64, i64, Option<i64>), SqlError> {
    let batches = query_table(table, "SELECT count(*) FROM t").await?;
    let rows = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<deltalake::arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0) as u64;
    let version = table.version().map_or(-1, |v| v as i64);
    let last = table
        .history(Some(1))
        .next()
        .await
        .and_then(|c| c.ok())
        .and_then(|c| c.timestamp);
    Ok((rows, version, last))
}
