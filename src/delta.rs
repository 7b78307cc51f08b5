//! Delta tables through delta-rs: open or create, idempotent appends, progress read-back.
//!
//! Every write that advances a stream carries its progress as Delta `txn` actions
//! (`SetTransaction`) in the same commit as the data. Readers of the progress (this crate,
//! Spark, Python `deltalake`) therefore never see data without its progress, or progress
//! without its data. delta-rs does not refuse a lower txn version, so callers read the
//! committed version first and skip what is already there.

use std::sync::Arc;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};

use crate::catalog::{CatalogError, TableName, Warehouse};

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
    #[error("Delta table {table} has columns ({found}), but medallion writes ({expected}). Move the table away, or point warehouse_dir elsewhere")]
    SchemaMismatch {
        table: String,
        found: String,
        expected: String,
    },
}

/// What a table looks like: its name, Arrow schema and partition columns.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: TableName,
    pub schema: SchemaRef,
    pub partition_columns: Vec<String>,
}

/// An open Delta table that medallion writes.
pub struct DeltaSink {
    table: DeltaTable,
    spec: TableSpec,
    qualified: String,
}

impl DeltaSink {
    /// Opens the table, creating it (empty, version 0) if it does not exist yet.
    pub async fn open(warehouse: &Warehouse, spec: TableSpec) -> Result<Self, DeltaError> {
        let qualified = warehouse.qualified(&spec.name);
        let url = warehouse.url(&spec.name)?;
        let wrap = |source| DeltaError::Table {
            table: qualified.clone(),
            source,
        };
        let exists = warehouse.path(&spec.name).join("_delta_log").is_dir();
        let mut table = if exists {
            DeltaTable::try_from_url(url).await.map_err(wrap)?
        } else {
            // Loading a folder that is not yet a table logs an error in delta-rs; skip it.
            DeltaTableBuilder::from_url(url)
                .and_then(|b| b.build())
                .map_err(wrap)?
        };
        if table.version().is_none() {
            let schema: StructType =
                spec.schema.as_ref().try_into_kernel().map_err(|e| {
                    wrap(DeltaTableError::Generic(format!("schema conversion: {e}")))
                })?;
            table = table
                .create()
                .with_table_name(spec.name.table.clone())
                .with_columns(schema.fields().cloned())
                .with_partition_columns(spec.partition_columns.clone())
                // Two runs creating the same table at once: the loser keeps the winner's.
                .with_save_mode(SaveMode::Ignore)
                .await
                .map_err(wrap)?;
            table.load().await.map_err(wrap)?;
        }
        let sink = DeltaSink {
            table,
            spec,
            qualified,
        };
        sink.check_schema()?;
        Ok(sink)
    }

    fn check_schema(&self) -> Result<(), DeltaError> {
        let snapshot = self.table.snapshot().map_err(|source| DeltaError::Table {
            table: self.qualified.clone(),
            source,
        })?;
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

    pub fn qualified_name(&self) -> &str {
        &self.qualified
    }

    /// The table's current version.
    pub fn version(&self) -> i64 {
        self.table.version().map_or(-1, |v| v as i64)
    }

    /// The version last committed under `app_id`, if any.
    pub async fn txn_version(&self, app_id: &str) -> Result<Option<i64>, DeltaError> {
        let snapshot = self.table.snapshot().map_err(|source| DeltaError::Table {
            table: self.qualified.clone(),
            source,
        })?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|source| DeltaError::Table {
                table: self.qualified.clone(),
                source,
            })
    }

    /// Appends `batches` and the `txns` progress markers in one commit. Returns the new version.
    pub async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        txns: Vec<Transaction>,
    ) -> Result<i64, DeltaError> {
        let commit = CommitProperties::default().with_application_transactions(txns);
        let table = self.table.clone();
        self.table = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(self.spec.partition_columns.clone())
            .with_commit_properties(commit)
            .await
            .map_err(|source| DeltaError::Table {
                table: self.qualified.clone(),
                source,
            })?;
        Ok(self.version())
    }
}

/// Builds a schema reference from fields.
pub fn schema(fields: Vec<deltalake::arrow::datatypes::Field>) -> SchemaRef {
    Arc::new(deltalake::arrow::datatypes::Schema::new(fields))
}
