//! Task `updated_stocks`: `gold.updated_stocks_gold`, a batch rebuild of
//! `stocks_close_silver` with `Close_Diff = Latest_Close - Close`. (The original view
//! selected the literal string `'Index'`; this selects the column.)

use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field};

use crate::bundle::job::SourceTable;
use crate::catalog::TableName;
use crate::delta::{schema, TableSpec};
use crate::progress::{Progress, TaskSummary};
use crate::tasks::{rebuild, stocks_close, table_setting, TaskContext, TaskError};

/// `<catalog>.gold.updated_stocks_gold`.
pub fn table() -> TableSpec {
    let mut fields: Vec<Field> = stocks_close::table()
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("Close_Diff", DataType::Float64, false));
    TableSpec {
        name: TableName::new("gold", "updated_stocks_gold"),
        schema: schema(fields),
        partition_columns: vec![],
        target_file_size: None,
    }
}

/// Runs the task, when `stocks_close_silver` changed since the last rebuild.
pub async fn run(
    ctx: &TaskContext,
    task: &SourceTable,
    progress: Arc<Progress>,
) -> Result<TaskSummary, TaskError> {
    rebuild(
        ctx,
        progress,
        "updated_stocks",
        &table_setting(&task.source),
        table().named(table_setting(&task.table)),
        "SELECT \"Index\", \"Date\", \"Close\", \"Adj_Close\", \"Latest_Close\", \
         \"Latest_Adj_Close\", \"Latest_Close\" - \"Close\" AS \"Close_Diff\" \
         FROM t ORDER BY \"Index\", \"Date\"",
    )
    .await
}
