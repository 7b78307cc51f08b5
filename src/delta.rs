//! Delta tables through delta-rs: open or create, idempotent appends, progress read-back.
//!
//! Every write that advances a stream carries its progress as Delta `txn` actions
//! (`SetTransaction`) in the same commit as the data. Readers of the progress (this crate,
//! Spark, Python `deltalake`) therefore never see data without its progress, or progress
//! without its data. delta-rs does not refuse a lower txn version, so callers read the
//! committed version first and skip what is already there.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::common::Column;
use deltalake::datafusion::logical_expr::{Expr, ExprSchemable};
use deltalake::datafusion::prelude::DataFrame;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::operations::write::WriteBuilder;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use deltalake::TableProperty;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};

use crate::catalog::{CatalogError, TableName, Warehouse};

mod lanes;
mod rewrite;
pub use rewrite::{Rewrite, Rewritten};

/// Errors reading or writing a Delta table. Each names the table.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("Delta table {table}: {source}")]
    Table {
        table: String,
        source: DeltaTableError,
    },
    #[error("Delta table {table}: {reason}")]
    Query { table: String, reason: String },
    #[error("Delta table {table} has columns ({found}), but medallion writes ({expected}). Move the table away, or point warehouse_dir elsewhere")]
    SchemaMismatch {
        table: String,
        found: String,
        expected: String,
    },
}

/// The column of [`DeltaSink::scan_with_files`]: the data file that holds each row.
pub const FILE_COLUMN: &str = "__medallion_file";

/// The files of the rows of `batch`, a read of [`DeltaSink::scan_with_files`].
pub fn files_of(batch: &RecordBatch) -> Option<&deltalake::arrow::array::StringArray> {
    batch.column_by_name(FILE_COLUMN)?.as_any().downcast_ref()
}

/// `delta.checkpointInterval` of the tables medallion creates.
pub const CHECKPOINT_INTERVAL: u64 = 10;

/// What a table looks like: its name, Arrow schema and partition columns.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: TableName,
    pub schema: SchemaRef,
    pub partition_columns: Vec<String>,
    /// `delta.targetFileSize` for a new table: how large the files that writes and
    /// rewrites produce may grow. A change rewrites whole files, so a table changed in
    /// place often keeps them small (as Databricks' `delta.tuneFileSizesForRewrites` does).
    pub target_file_size: Option<u64>,
}

impl TableSpec {
    /// The same table shape under another name (as a job's task settings name it).
    pub fn named(self, name: TableName) -> TableSpec {
        TableSpec { name, ..self }
    }
}

/// An open Delta table that medallion writes. A clone is a second handle on the same
/// table: what one commits, the other sees once it reloads.
#[derive(Clone)]
pub struct DeltaSink {
    table: DeltaTable,
    spec: TableSpec,
    qualified: String,
    /// Extra members of every commit's `commitInfo` this sink writes.
    commit_info: Vec<(String, serde_json::Value)>,
    /// The progress (`txn`) of each application asked for, as of the table version
    /// loaded and the commits this sink made since.
    progress: Progress,
}

/// Progress versions by application id. Reading one from the table replays its whole
/// log (delta-rs keeps no index of them), and a flow asks several times per batch.
#[derive(Default)]
struct Progress(std::sync::Mutex<HashMap<String, Option<i64>>>);

impl Progress {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<i64>>> {
        // A panic while the lock was held leaves a map that is still whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clone for Progress {
    fn clone(&self) -> Self {
        Progress(std::sync::Mutex::new(self.map().clone()))
    }
}

impl DeltaSink {
    /// Opens the table, creating it (empty, version 0) if it does not exist yet.
    pub async fn open(warehouse: &Warehouse, spec: TableSpec) -> Result<Self, DeltaError> {
        Self::open_loaded(warehouse, spec, None).await
    }

    /// [`DeltaSink::open`] of a table the caller has already loaded (to read its schema
    /// before it chose the spec, or beside other tables), so that it is not read twice.
    pub async fn open_loaded(
        warehouse: &Warehouse,
        spec: TableSpec,
        loaded: Option<DeltaTable>,
    ) -> Result<Self, DeltaError> {
        let qualified = warehouse.qualified(&spec.name);
        let url = warehouse.url(&spec.name)?;
        let wrap = |source| DeltaError::Table {
            table: qualified.clone(),
            source,
        };
        let mut table = match loaded {
            Some(table) => table,
            None if warehouse.has_table(&spec.name) => {
                DeltaTable::try_from_url(url).await.map_err(wrap)?
            }
            // Loading a folder that is not yet a table logs an error in delta-rs; skip it.
            None => DeltaTableBuilder::from_url(url)
                .and_then(|b| b.build())
                .map_err(wrap)?,
        };
        if table.version().is_none() {
            let schema: StructType =
                spec.schema.as_ref().try_into_kernel().map_err(|e| {
                    wrap(DeltaTableError::Generic(format!("schema conversion: {e}")))
                })?;
            let mut create = table
                .create()
                .with_table_name(spec.name.table.clone())
                .with_columns(schema.fields().cloned())
                .with_partition_columns(spec.partition_columns.clone())
                // Two runs creating the same table at once: the loser keeps the winner's.
                .with_save_mode(SaveMode::Ignore)
                // A checkpoint every 10 commits, as Spark's Delta does (delta-rs: 100).
                // Every run opens its tables and replays the log from the last
                // checkpoint, so without them a `--continuous` run slowed by about 7 ms
                // per micro-batch until the hundredth.
                .with_configuration_property(
                    TableProperty::CheckpointInterval,
                    Some(CHECKPOINT_INTERVAL.to_string()),
                );
            if let Some(bytes) = spec.target_file_size {
                create = create.with_configuration_property(
                    TableProperty::TargetFileSize,
                    Some(bytes.to_string()),
                );
            }
            table = create.await.map_err(wrap)?;
            table.load().await.map_err(wrap)?;
        }
        let mut sink = DeltaSink {
            table,
            spec,
            qualified,
            commit_info: Vec::new(),
            progress: Progress::default(),
        };
        sink.add_new_columns().await?;
        sink.check_schema()?;
        sink.keep_partitioning()?;
        Ok(sink)
    }

    /// Writes follow the table's own partition columns. A table an earlier medallion
    /// created with another layout (close_price_silver was once unpartitioned) keeps
    /// working, and the log says how to get the layout this version creates.
    fn keep_partitioning(&mut self) -> Result<(), DeltaError> {
        let snapshot = self.snapshot()?;
        let found = snapshot.metadata().partition_columns().to_vec();
        if found != self.spec.partition_columns {
            // Once per table and process: a `--continuous` run opens it every micro-batch.
            static WARNED: std::sync::Mutex<BTreeSet<String>> =
                std::sync::Mutex::new(BTreeSet::new());
            let first = WARNED
                .lock()
                .map(|mut w| w.insert(self.qualified.clone()))
                .unwrap_or(true);
            if first {
                let list = |c: &[String]| match c.join(", ") {
                    l if l.is_empty() => "none".to_string(),
                    l => l,
                };
                tracing::warn!(
                    table = %self.qualified,
                    partitioned_by = %list(&found),
                    expected = %list(&self.spec.partition_columns),
                    "table keeps the partition columns it was created with, and writes \
                     follow them. To get the new layout, recreate it: `medallion reset` \
                     starts the target over from its landing files"
                );
            }
            self.spec.partition_columns = found;
        }
        Ok(())
    }

    /// The table's loaded state: schema, metadata, files and progress.
    fn snapshot(&self) -> Result<&deltalake::table::state::DeltaTableState, DeltaError> {
        self.table.snapshot().map_err(|source| DeltaError::Table {
            table: self.qualified.clone(),
            source,
        })
    }

    /// Adds the nullable columns that the spec has after the table's last one (columns
    /// added to a table in a later medallion version), in one commit: earlier rows read
    /// them as NULL. Anything else that differs is left to [`Self::check_schema`].
    async fn add_new_columns(&mut self) -> Result<(), DeltaError> {
        let found = self.snapshot()?.schema().fields().count();
        let expected = self.spec.schema.fields();
        if found >= expected.len() {
            return Ok(());
        }
        let added = &expected[found..];
        if !added.iter().all(|f| f.is_nullable()) {
            return Ok(());
        }
        let prefix: Vec<&String> = expected[..found].iter().map(|f| f.name()).collect();
        let names: Vec<String> = self
            .snapshot()?
            .schema()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        if names.iter().ne(prefix) {
            return Ok(());
        }
        let wrap = |source| DeltaError::Table {
            table: self.qualified.clone(),
            source,
        };
        let schema = deltalake::arrow::datatypes::Schema::new(added.to_vec());
        let fields: StructType = (&schema)
            .try_into_kernel()
            .map_err(|e| wrap(DeltaTableError::Generic(format!("schema conversion: {e}"))))?;
        tracing::info!(
            table = %self.qualified,
            columns = %added.iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
            "adding the columns this version of medallion writes"
        );
        self.table = self
            .table
            .clone()
            .add_columns()
            .with_fields(fields.fields().cloned().collect::<Vec<_>>())
            .await
            .map_err(wrap)?;
        Ok(())
    }

    fn check_schema(&self) -> Result<(), DeltaError> {
        let snapshot = self.snapshot()?;
        let found: Vec<String> = snapshot
            .schema()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        let expected: Vec<String> = self
            .spec
            .schema
            .fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        if found != expected {
            return Err(DeltaError::SchemaMismatch {
                table: self.qualified.clone(),
                found: found.join(", "),
                expected: expected.join(", "),
            });
        }
        Ok(())
    }

    pub fn name(&self) -> &TableName {
        &self.spec.name
    }

    pub fn qualified_name(&self) -> &str {
        &self.qualified
    }

    /// The table's current version.
    pub fn version(&self) -> i64 {
        self.table.version().map_or(-1, |v| v as i64)
    }

    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// Runs `sql` over this table, registered as `t`.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, DeltaError> {
        crate::sql::query_table(&self.table, sql)
            .await
            .map_err(|e| DeltaError::Query {
                table: self.qualified.clone(),
                reason: e.to_string(),
            })
    }

    /// The table as a DataFrame, to filter and to read from, in a session with delta-rs's
    /// planner (so that it can be the source of a write).
    pub async fn frame(&self) -> Result<DataFrame, DeltaError> {
        let query = |reason: String| DeltaError::Query {
            table: self.qualified.clone(),
            reason,
        };
        crate::sql::table_frame(&self.table)
            .await
            .map_err(|e| query(e.to_string()))
    }

    /// Whether the table has no data file at its loaded version (a table just created):
    /// a read of it finds nothing, without planning one.
    fn has_no_files(&self) -> bool {
        self.table
            .snapshot()
            .is_ok_and(|s| s.log_data().into_iter().next().is_none())
    }

    /// The rows that `filter` keeps (a DataFusion expression over the table's columns),
    /// in the table's types, reading only the files whose partition values and
    /// statistics may hold some.
    pub async fn scan(&self, filter: Expr) -> Result<Vec<RecordBatch>, DeltaError> {
        self.select(filter, None, false, None).await
    }

    /// The rows that `filter` keeps whose columns named as those of `keys` equal one of
    /// its rows (a semi-join: for many keys, where an `IN` list would not do), in the
    /// table's types.
    pub async fn scan_matching(
        &self,
        filter: Expr,
        keys: RecordBatch,
    ) -> Result<Vec<RecordBatch>, DeltaError> {
        self.select(filter, Some(keys), false, None).await
    }

    /// The rows of [`Self::scan`] (or of [`Self::scan_matching`], with `keys`), each
    /// with the data file that holds it in a last column, [`FILE_COLUMN`]: the files
    /// that [`Self::rewrite_files`] rewrites.
    pub async fn scan_with_files(
        &self,
        filter: Expr,
        keys: Option<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, DeltaError> {
        self.select(filter, keys, true, None).await
    }

    /// Only `columns` of the rows of [`Self::scan`] (or of [`Self::scan_matching`],
    /// with `keys`): the other columns are not decoded.
    pub async fn scan_columns(
        &self,
        filter: Expr,
        keys: Option<RecordBatch>,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>, DeltaError> {
        self.select(filter, keys, false, Some(columns)).await
    }

    /// The rows that `filter` keeps, of `keys` if given, with their files if `files`,
    /// of only `columns` if given.
    async fn select(
        &self,
        filter: Expr,
        keys: Option<RecordBatch>,
        files: bool,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>, DeltaError> {
        use deltalake::arrow::datatypes::{Field, Schema};
        use deltalake::datafusion::common::JoinType;
        let wrap = |e: deltalake::datafusion::error::DataFusionError| DeltaError::Query {
            table: self.qualified.clone(),
            reason: e.to_string(),
        };
        let arrow = |e: deltalake::arrow::error::ArrowError| wrap(e.into());
        if self.has_no_files() {
            return Ok(Vec::new());
        }
        let frame = match files {
            true => {
                let provider = self.table.table_provider().with_file_column(FILE_COLUMN);
                crate::sql::provider_frame(&self.table, provider)
                    .await
                    .map_err(|e| DeltaError::Query {
                        table: self.qualified.clone(),
                        reason: e.to_string(),
                    })?
            }
            false => self.frame().await?,
        };
        let mut frame = frame.filter(filter).map_err(wrap)?;
        if let Some(keys) = keys {
            let names: Vec<String> = keys
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let renamed: Vec<String> = (0..names.len()).map(|i| format!("__key_{i}")).collect();
            let mut fields = Vec::new();
            let mut columns = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let t = frame
                    .schema()
                    .field_with_unqualified_name(name)
                    .map_err(wrap)?
                    .data_type()
                    .clone();
                columns.push(cast(keys.column(i), &t).map_err(arrow)?);
                fields.push(Field::new(&renamed[i], t, true));
            }
            let keys =
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow)?;
            let keys = deltalake::datafusion::prelude::SessionContext::new()
                .read_batch(keys)
                .map_err(wrap)?;
            let on: Vec<Expr> = names
                .iter()
                .zip(&renamed)
                .map(|(l, r)| {
                    Expr::Column(Column::new_unqualified(l))
                        .eq(Expr::Column(Column::new_unqualified(r)))
                })
                .collect();
            frame = frame.join_on(keys, JoinType::LeftSemi, on).map_err(wrap)?;
        }
        let schema = match columns {
            Some(names) => {
                frame = frame.select_columns(names).map_err(wrap)?;
                let indices = names
                    .iter()
                    .map(|n| self.spec.schema.index_of(n))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(arrow)?;
                Arc::new(self.spec.schema.project(&indices).map_err(arrow)?)
            }
            None => self.spec.schema.clone(),
        };
        // Its own task: reads started side by side run on separate threads.
        let batches = tokio::spawn(frame.collect())
            .await
            .map_err(|e| DeltaError::Query {
                table: self.qualified.clone(),
                reason: format!("the read stopped: {e}"),
            })?
            .map_err(wrap)?;
        // Strings come back as views; callers get the table's own types.
        batches
            .iter()
            .map(|b| match files {
                true => self.conform_with_file(b),
                false => self.conform_to(b, &schema),
            })
            .collect()
    }

    /// Deletes the rows that `predicate` keeps, rewriting only the files that hold some.
    /// Returns the rows deleted (0 without a commit when none matched).
    pub async fn delete_where(&mut self, predicate: Expr) -> Result<usize, DeltaError> {
        let before = self.version();
        let (table, metrics) = self
            .table
            .clone()
            .delete()
            .with_predicate(predicate)
            .with_writer_properties(writer_properties(&self.spec.schema))
            .await
            .map_err(|source| DeltaError::Table {
                table: self.qualified.clone(),
                source,
            })?;
        self.table = table;
        self.committed(before, &[]);
        Ok(metrics.num_deleted_rows.unwrap_or(0))
    }

    /// The table's partition columns as it was created (an earlier layout stays).
    pub fn partition_columns(&self) -> Vec<String> {
        self.table
            .snapshot()
            .map(|s| s.metadata().partition_columns().to_vec())
            .unwrap_or_default()
    }

    /// The version last committed under `app_id`, if any.
    pub async fn txn_version(&self, app_id: &str) -> Result<Option<i64>, DeltaError> {
        if let Some(&v) = self.progress.map().get(app_id) {
            return Ok(v);
        }
        let snapshot = self.snapshot()?;
        let v = snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|source| DeltaError::Table {
                table: self.qualified.clone(),
                source,
            })?;
        self.progress.map().insert(app_id.to_string(), v);
        Ok(v)
    }

    /// Keeps the progress that the commit which took the table from version `before` to
    /// the loaded one carried. If others committed in between (the commit was retried
    /// on top of theirs), their progress is not known: it is read again when asked.
    fn committed(&mut self, before: i64, txns: &[Transaction]) {
        let mut progress = self.progress.map();
        if self.version() == before + 1 {
            for t in txns {
                progress.insert(t.app_id.clone(), Some(t.version));
            }
        } else {
            progress.clear();
        }
    }

    /// Appends `batches` and the `txns` progress markers in one commit (with no rows, a
    /// commit of the progress alone). Returns the new version.
    pub async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        txns: Vec<Transaction>,
    ) -> Result<i64, DeltaError> {
        // No rows is still a commit: the progress (`txn`) must advance.
        let batches = if batches.is_empty() {
            vec![RecordBatch::new_empty(self.spec.schema.clone())]
        } else {
            batches
                .iter()
                .map(|b| self.conform(b))
                .collect::<Result<Vec<_>, _>>()?
        };
        self.commit(SaveMode::Append, batches, txns, |w| w).await
    }

    /// Replaces the table's rows with the result of `source` (`CREATE OR REPLACE ... AS
    /// SELECT`), with `txns`, in one commit. The rows stream from the query into the
    /// Parquet files, so a rebuild holds about a file's worth of rows, not the whole
    /// table. Returns the new version and the rows written.
    pub async fn overwrite_query(
        &mut self,
        source: DataFrame,
        txns: Vec<Transaction>,
    ) -> Result<(i64, u64), DeltaError> {
        let query = |e: deltalake::datafusion::error::DataFusionError| DeltaError::Query {
            table: self.qualified.clone(),
            reason: e.to_string(),
        };
        // The table's columns by name, cast to its types (as `conform` does for batches).
        let columns: Vec<Expr> = self
            .spec
            .schema
            .fields()
            .iter()
            .map(|f| {
                Expr::Column(Column::new_unqualified(f.name()))
                    .cast_to(f.data_type(), source.schema())
                    .map(|e| e.alias(f.name()))
            })
            .collect::<Result<_, _>>()
            .map_err(query)?;
        let (state, plan) = source.select(columns).map_err(query)?.into_parts();
        self.commit(SaveMode::Overwrite, Vec::new(), txns, |w| {
            w.with_input_plan(plan).with_session_state(Arc::new(state))
        })
        .await?;
        let rows = self
            .table
            .snapshot()
            .map(|s| {
                s.log_data()
                    .into_iter()
                    .map(|f| f.num_records().unwrap_or(0) as u64)
                    .sum()
            })
            .unwrap_or(0);
        Ok((self.version(), rows))
    }

    /// The batch with the table's schema: columns by name, cast to the table's types. SQL
    /// results come back with other string encodings and nullability than the table's.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch, DeltaError> {
        self.conform_to(batch, &self.spec.schema)
    }

    /// `batch` with the columns of `schema` (the table's, or some of them), cast.
    fn conform_to(
        &self,
        batch: &RecordBatch,
        schema: &SchemaRef,
    ) -> Result<RecordBatch, DeltaError> {
        let err = |reason: String| DeltaError::Query {
            table: self.qualified.clone(),
            reason,
        };
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let c = batch.column_by_name(f.name()).ok_or_else(|| {
                    err(format!(
                        "column `{}` is missing from the rows to write",
                        f.name()
                    ))
                })?;
                cast(c, f.data_type()).map_err(|e| err(format!("column `{}`: {e}", f.name())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| err(e.to_string()))
    }

    /// [`Self::conform`], then the batch's [`FILE_COLUMN`] as text.
    fn conform_with_file(&self, batch: &RecordBatch) -> Result<RecordBatch, DeltaError> {
        use deltalake::arrow::datatypes::{Field, Schema};
        let err = |reason: String| DeltaError::Query {
            table: self.qualified.clone(),
            reason,
        };
        let rows = self.conform(batch)?;
        let file = batch
            .column_by_name(FILE_COLUMN)
            .ok_or_else(|| err(format!("the scan lacks its column `{FILE_COLUMN}`")))?;
        let file = cast(file, &DataType::Utf8).map_err(|e| err(e.to_string()))?;
        let mut fields: Vec<_> = rows.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(FILE_COLUMN, DataType::Utf8, false)));
        let mut columns = rows.columns().to_vec();
        columns.push(file);
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| err(e.to_string()))
    }

    /// A write of `batches` with the table's Parquet settings and partitioning, and
    /// `txns` in its commit.
    fn writer(
        &self,
        mode: SaveMode,
        batches: Vec<RecordBatch>,
        txns: Vec<Transaction>,
    ) -> WriteBuilder {
        self.table
            .clone()
            .write(batches)
            .with_writer_properties(writer_properties(&self.spec.schema))
            .with_save_mode(mode)
            .with_partition_columns(self.spec.partition_columns.clone())
            .with_commit_properties(
                CommitProperties::default()
                    .with_application_transactions(txns)
                    .with_metadata(self.commit_info.clone()),
            )
    }

    /// Sets a member that every later commit of this sink carries in its `commitInfo`
    /// (such as the identity of the source its progress refers to).
    pub fn set_commit_info(&mut self, key: &str, value: serde_json::Value) {
        self.commit_info.retain(|(k, _)| k != key);
        self.commit_info.push((key.to_string(), value));
    }

    /// `key` of the latest commit's `commitInfo` among the last `depth` that has it.
    pub async fn last_commit_info(
        &self,
        key: &str,
        depth: usize,
    ) -> Result<Option<serde_json::Value>, DeltaError> {
        use futures::StreamExt;
        let mut history = self.table.history(Some(depth));
        while let Some(commit) = history.next().await {
            let commit = commit.map_err(|source| DeltaError::Table {
                table: self.qualified.clone(),
                source,
            })?;
            if let Some(v) = commit.info.get(key) {
                return Ok(Some(v.clone()));
            }
        }
        Ok(None)
    }

    /// Writes `batches` (or what `build` adds to the write) with `txns`, and keeps the
    /// table version it made. Returns that version.
    async fn commit(
        &mut self,
        mode: SaveMode,
        batches: Vec<RecordBatch>,
        txns: Vec<Transaction>,
        build: impl FnOnce(WriteBuilder) -> WriteBuilder,
    ) -> Result<i64, DeltaError> {
        let before = self.version();
        let write = build(self.writer(mode, batches, txns.clone()));
        self.table = write.await.map_err(|source| DeltaError::Table {
            table: self.qualified.clone(),
            source,
        })?;
        self.committed(before, &txns);
        Ok(self.version())
    }
}

/// The longest file or folder name the usual filesystems allow (`NAME_MAX`), in bytes.
const NAME_MAX: usize = 255;

/// Why `value` cannot be a value of partition column `column`, if it cannot: its folder
/// `column=value` (with the value escaped, at most 3 bytes a byte) would be longer than a
/// filesystem allows, and every write of it would fail.
pub fn partition_value_problem(column: &str, value: &str) -> Option<String> {
    let escaped: usize = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_. ".contains(&b) {
                1
            } else {
                3
            }
        })
        .sum();
    let folder = column.len() + 1 + escaped;
    (folder > NAME_MAX).then(|| {
        format!(
            "{column} is {} bytes long: as a partition folder name (`{column}=…`, escaped) it would take up to {folder} bytes, above the {NAME_MAX} a filesystem allows",
            value.len()
        )
    })
}

/// A column name quoted for SQL, keeping its case (`"Index"`, `"__START_AT"`).
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Builds a schema reference from fields.
pub fn schema(fields: Vec<deltalake::arrow::datatypes::Field>) -> SchemaRef {
    Arc::new(deltalake::arrow::datatypes::Schema::new(fields))
}

/// delta-rs's Parquet settings (snappy), with dictionary encoding off for the columns
/// whose values rarely repeat: floats and timestamps (prices, processing times). Their
/// dictionaries grow as large as the data and are dropped again, after hashing every
/// value; strings, dates and integers keep them.
fn writer_properties(schema: &SchemaRef) -> WriterProperties {
    schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Float64 | DataType::Timestamp(..)))
        .fold(
            WriterProperties::builder()
                .set_created_by(format!("medallion {}", env!("CARGO_PKG_VERSION")))
                .set_compression(Compression::SNAPPY),
            |b, f| b.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false),
        )
        .build()
}

/// The bytes of a table's data files at its loaded version: what reading it whole reads.
pub fn data_bytes(table: &deltalake::DeltaTable) -> u64 {
    table
        .snapshot()
        .map(|s| {
            s.log_data()
                .into_iter()
                .map(|f| f.size().max(0) as u64)
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::datatypes::{Field, Schema, TimeUnit};

    /// A table `(Index Utf8 not null, Close Float64 not null)` in a fresh warehouse.
    async fn sink(dir: &std::path::Path) -> DeltaSink {
        sink_partitioned_by(dir, &[]).await
    }

    /// The same table, opened (or created) with `partition_columns` in its spec.
    async fn sink_partitioned_by(dir: &std::path::Path, partition_columns: &[&str]) -> DeltaSink {
        let spec = TableSpec {
            name: TableName::new("gold", "t"),
            schema: Arc::new(Schema::new(vec![
                Field::new("Index", DataType::Utf8, false),
                Field::new("Close", DataType::Float64, false),
            ])),
            partition_columns: partition_columns.iter().map(|c| c.to_string()).collect(),
            target_file_size: None,
        };
        DeltaSink::open(&Warehouse::new(dir, "dev"), spec)
            .await
            .unwrap()
    }

    /// Rows of that table.
    fn rows(t: &DeltaSink, rows: &[(&str, f64)]) -> RecordBatch {
        RecordBatch::try_new(
            t.spec.schema.clone(),
            vec![
                Arc::new(deltalake::arrow::array::StringArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(deltalake::arrow::array::Float64Array::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
            ],
        )
        .unwrap()
    }

    /// The partition columns in the table's metadata.
    fn partitioning(t: &DeltaSink) -> Vec<String> {
        t.table
            .snapshot()
            .unwrap()
            .metadata()
            .partition_columns()
            .to_vec()
    }

    #[tokio::test]
    async fn scans_find_nothing_in_a_new_table_and_the_rows_once_written() {
        use deltalake::datafusion::prelude::{ident, lit};
        let dir = tempfile::tempdir().unwrap();
        let mut t = sink(dir.path()).await;
        let keys = |t: &DeltaSink, k: &[&str]| {
            let b = rows(t, &k.iter().map(|k| (*k, 0.0)).collect::<Vec<_>>());
            b.project(&[0]).unwrap()
        };
        let count = |b: Vec<RecordBatch>| b.iter().map(|b| b.num_rows()).sum::<usize>();
        assert_eq!(count(t.scan(lit(true)).await.unwrap()), 0);
        let none = t.scan_matching(lit(true), keys(&t, &["A"])).await.unwrap();
        assert_eq!(count(none), 0);
        // A commit of the progress alone adds no file: still nothing to read.
        t.append(vec![], vec![Transaction::new("src", 1)])
            .await
            .unwrap();
        assert_eq!(count(t.scan(lit(true)).await.unwrap()), 0);
        t.append(vec![rows(&t, &[("A", 1.0), ("B", 2.0)])], vec![])
            .await
            .unwrap();
        assert_eq!(count(t.scan(lit(true)).await.unwrap()), 2);
        assert_eq!(count(t.scan(ident("Close").gt(lit(1.5))).await.unwrap()), 1);
        let a = t
            .scan_matching(lit(true), keys(&t, &["A", "C"]))
            .await
            .unwrap();
        assert_eq!(count(a), 1);
        // Some columns only, in the table's types (not DataFusion's string views).
        let closes = t
            .scan_columns(ident("Close").gt(lit(1.5)), None, &["Close"])
            .await
            .unwrap();
        assert_eq!(closes[0].schema().fields().len(), 1);
        assert_eq!(closes[0].schema().field(0).name(), "Close");
        assert_eq!(count(closes), 1);
        let names = t
            .scan_columns(lit(true), Some(keys(&t, &["B"])), &["Index"])
            .await
            .unwrap();
        assert_eq!(names[0].schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(count(names), 1);
        assert!(t.scan_columns(lit(true), None, &["Open"]).await.is_err());
    }

    #[tokio::test]
    async fn a_table_loaded_already_opens_as_it_is_and_is_not_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = sink(dir.path()).await;
        t.append(
            vec![rows(&t, &[("A", 1.0)])],
            vec![Transaction::new("src", 7)],
        )
        .await
        .unwrap();
        let warehouse = Warehouse::new(dir.path(), "dev");
        let loaded = crate::sql::open(&warehouse, &t.spec.name).await.unwrap();
        let again = DeltaSink::open_loaded(&warehouse, t.spec.clone(), Some(loaded))
            .await
            .unwrap();
        assert_eq!(again.version(), t.version());
        assert_eq!(again.txn_version("src").await.unwrap(), Some(7));
        assert_eq!(
            again
                .scan(deltalake::datafusion::prelude::lit(true))
                .await
                .unwrap()[0]
                .num_rows(),
            1
        );
    }

    #[tokio::test]
    async fn progress_is_read_once_and_follows_the_commits_of_every_writer() {
        use deltalake::datafusion::prelude::{ident, lit};
        let dir = tempfile::tempdir().unwrap();
        let mut a = sink(dir.path()).await;
        assert_eq!(a.txn_version("src").await.unwrap(), None);
        // Its own commit: known without reading the log again.
        a.append(
            vec![rows(&a, &[("A", 1.0)])],
            vec![Transaction::new("src", 1)],
        )
        .await
        .unwrap();
        assert_eq!(a.txn_version("src").await.unwrap(), Some(1));
        assert_eq!(a.progress.map().get("src"), Some(&Some(1)));
        // Another handle reads it from the log, and commits more.
        let mut b = sink(dir.path()).await;
        assert_eq!(b.txn_version("src").await.unwrap(), Some(1));
        b.append(
            vec![rows(&b, &[("B", 2.0)])],
            vec![Transaction::new("src", 2)],
        )
        .await
        .unwrap();
        assert_eq!(b.txn_version("src").await.unwrap(), Some(2));
        // The first handle's next commit lands after the other's: what it kept is
        // forgotten, and read again from the log.
        let before = a.version();
        a.append(
            vec![rows(&a, &[("C", 3.0)])],
            vec![Transaction::new("other", 5)],
        )
        .await
        .unwrap();
        assert_eq!(a.version(), before + 2);
        assert!(a.progress.map().is_empty());
        assert_eq!(a.txn_version("src").await.unwrap(), Some(2));
        assert_eq!(a.txn_version("other").await.unwrap(), Some(5));
        // A query rebuild keeps its progress too; a delete leaves it as it was.
        let frame = a.frame().await.unwrap();
        a.overwrite_query(frame, vec![Transaction::new("src", 3)])
            .await
            .unwrap();
        assert_eq!(a.progress.map().get("src"), Some(&Some(3)));
        a.delete_where(ident("Index").eq(lit("A"))).await.unwrap();
        let reread = sink(dir.path()).await;
        for app in ["src", "other"] {
            assert_eq!(
                a.txn_version(app).await.unwrap(),
                reread.txn_version(app).await.unwrap()
            );
        }
        assert_eq!(reread.txn_version("src").await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn a_table_keeps_the_partitioning_it_was_created_with() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = sink(dir.path()).await;
        t.append(vec![rows(&t, &[("A", 1.0)])], vec![])
            .await
            .unwrap();
        // A newer spec partitions the table; the existing one is written as it is.
        let mut t = sink_partitioned_by(dir.path(), &["Index"]).await;
        t.append(vec![rows(&t, &[("B", 2.0)])], vec![])
            .await
            .unwrap();
        assert!(partitioning(&t).is_empty());
        assert!(!dir.path().join("dev/gold/t/Index=B").exists());
        // A new table gets the spec's partitioning.
        let dir = tempfile::tempdir().unwrap();
        let mut t = sink_partitioned_by(dir.path(), &["Index"]).await;
        t.append(vec![rows(&t, &[("B", 2.0)])], vec![])
            .await
            .unwrap();
        assert_eq!(partitioning(&t), ["Index"]);
        assert!(dir.path().join("dev/gold/t/Index=B").is_dir());
    }

    #[tokio::test]
    async fn a_query_rebuild_replaces_every_row_with_its_progress() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = sink(dir.path()).await;
        let old = rows(&t, &[("A", 1.0), ("B", 2.0), ("C", 3.0)]);
        t.append(vec![old], vec![]).await.unwrap();
        // Rebuilds the table from `sql` over itself, with source version `txn`; then
        // checks what the commit says and what a reader sees.
        async fn rebuild(t: &mut DeltaSink, sql: &str, txn: i64, expect: (i64, u64)) {
            let query = crate::sql::table_query(&t.table, sql).await.unwrap();
            let made = t
                .overwrite_query(query, vec![Transaction::new("gold/src", txn)])
                .await
                .unwrap();
            assert_eq!(made, expect, "{sql}");
            let b = crate::sql::query_table(&t.table, "SELECT count(*) AS n FROM t")
                .await
                .unwrap();
            let n = deltalake::arrow::compute::cast(b[0].column(0), &DataType::UInt64).unwrap();
            let n = n
                .as_any()
                .downcast_ref::<deltalake::arrow::array::UInt64Array>();
            assert_eq!(n.unwrap().value(0), expect.1, "{sql}");
            assert_eq!(t.txn_version("gold/src").await.unwrap(), Some(txn));
        }

        // The query's own column order and types (an Int64 Close) are conformed.
        let sql = "SELECT CAST(\"Close\" * 10 AS BIGINT) AS \"Close\", \"Index\" FROM t WHERE \"Close\" > 1";
        rebuild(&mut t, sql, 7, (2, 2)).await;
        // A query with no rows still commits, and empties the table.
        rebuild(&mut t, "SELECT * FROM t WHERE false", 8, (3, 0)).await;
    }

    #[tokio::test]
    async fn tables_are_checkpointed_every_ten_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = sink(dir.path()).await;
        // Version 0 is the table's creation; commits 1..=9 make version 9, the tenth.
        for n in 1..=9 {
            t.append(vec![], vec![Transaction::new("src", n)])
                .await
                .unwrap();
        }
        let log = dir.path().join("dev/gold/t/_delta_log");
        assert!(log
            .join("00000000000000000009.checkpoint.parquet")
            .is_file());
        assert!(log.join("_last_checkpoint").is_file());
        // Reopened from the checkpoint, the table and its progress are the same.
        let again = sink(dir.path()).await;
        assert_eq!(again.version(), 9);
        assert_eq!(again.txn_version("src").await.unwrap(), Some(9));
    }

    #[tokio::test]
    async fn a_table_whose_creation_was_killed_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        // A run killed while creating the table leaves a log with no commit in it.
        let log = dir.path().join("dev/gold/t/_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(log.join("_commit_5f1e.json.tmp"), "").unwrap();
        let t = sink(dir.path()).await;
        assert_eq!(t.version(), 0);
        assert!(log.join("00000000000000000000.json").is_file());
    }

    #[test]
    fn only_floats_and_timestamps_lose_their_dictionary() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("Index", DataType::Utf8, false),
            Field::new("Date", DataType::Date32, false),
            Field::new("Close", DataType::Float64, false),
            Field::new(
                "effective_date",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("Volume", DataType::Int64, true),
        ]));
        let props = writer_properties(&schema);
        let dictionary = |c: &str| props.dictionary_enabled(&ColumnPath::from(c));
        assert!(dictionary("Index"));
        assert!(dictionary("Date"));
        assert!(dictionary("Volume"));
        assert!(!dictionary("Close"));
        assert!(!dictionary("effective_date"));
        assert_eq!(
            props.compression(&ColumnPath::from("Close")),
            Compression::SNAPPY
        );
    }
}
