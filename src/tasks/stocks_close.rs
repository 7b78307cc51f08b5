//! Task `stocks_close`: a stream-static join into `silver.stocks_close_silver`.
//!
//! New `stocks_silver` rows are inner-joined on `Index` with `current_close_silver` as it
//! stands when the batch runs, as Spark joins a stream with a static table: rows written
//! in earlier runs keep the values they had then. (The original pipeline joined with the
//! wrong table; this joins with `current_close_silver`.)

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Date32Array, Float64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field};
use deltalake::kernel::Transaction;

use crate::bundle::job::StreamStaticJoin;
use crate::catalog::TableName;
use crate::delta::{schema, DeltaSink, TableSpec};
use crate::fault;
use crate::progress::{Progress, TaskSummary};
use crate::tasks::columns::{dates, f64s, opt, strings};
use crate::tasks::{table_setting, SourceStream, TaskContext, TaskError};

/// `<catalog>.silver.stocks_close_silver`.
pub fn table() -> TableSpec {
    TableSpec {
        name: TableName::new("silver", "stocks_close_silver"),
        schema: schema(vec![
            Field::new("Index", DataType::Utf8, false),
            Field::new("Date", DataType::Date32, false),
            Field::new("Close", DataType::Float64, false),
            Field::new("Adj_Close", DataType::Float64, true),
            Field::new("Latest_Close", DataType::Float64, false),
            Field::new("Latest_Adj_Close", DataType::Float64, true),
        ]),
        partition_columns: vec![],
        target_file_size: None,
    }
}

/// One joined row.
struct Joined {
    index: String,
    date: i32,
    close: f64,
    adj_close: Option<f64>,
    latest_close: f64,
    latest_adj_close: Option<f64>,
}

/// Runs the task: every `stocks_silver` commit not yet joined.
pub async fn run(
    ctx: &TaskContext,
    task: &StreamStaticJoin,
    progress: Arc<Progress>,
) -> Result<TaskSummary, TaskError> {
    let mut summary = TaskSummary::new("stocks_close");
    let Some(mut source) =
        SourceStream::open(ctx, table_setting(&task.stream), &mut summary).await?
    else {
        return Ok(summary);
    };
    let spec = table().named(table_setting(&task.table));
    let mut sink = DeltaSink::open(&ctx.settings.warehouse, spec).await?;
    let app = source.app_id(&sink);

    while let Some((to, batches)) = source.next(&sink, &[]).await? {
        // The static side, as it stands now.
        let current = current_closes(ctx, &table_setting(&task.static_table)).await?;
        let mut joined = Vec::new();
        for b in &batches {
            let index = strings(b, "Index")?;
            let date = dates(b, "Date")?;
            let close = f64s(b, "Close")?;
            let adj = f64s(b, "Adj_Close")?;
            summary.rows_read += b.num_rows() as u64;
            for i in 0..b.num_rows() {
                let Some(&(latest_close, latest_adj_close)) = current.get(index.value(i)) else {
                    continue;
                };
                joined.push(Joined {
                    index: index.value(i).to_string(),
                    date: date.value(i),
                    close: close.value(i),
                    adj_close: opt(adj, i, |a, i| a.value(i)),
                    latest_close,
                    latest_adj_close,
                });
            }
        }
        progress.add_rows(summary.rows_read);
        let version = sink
            .append(vec![batch(&joined)], vec![Transaction::new(&app, to)])
            .await?;
        summary.rows_written += joined.len() as u64;
        summary
            .versions
            .push((sink.qualified_name().into(), version));
        fault::point("stocks_close.after_commit");
    }
    summary.bytes_read = source.bytes_read;
    summary.elapsed = progress.elapsed();
    Ok(summary)
}

/// `Index` → (`Close`, `Adj_Close`) of `current_close_silver`; empty if it does not exist.
async fn current_closes(
    ctx: &TaskContext,
    name: &TableName,
) -> Result<HashMap<String, (f64, Option<f64>)>, TaskError> {
    let mut out = HashMap::new();
    let Some(table) = ctx.input(name).await? else {
        return Ok(out);
    };
    for b in
        crate::sql::query_table(&table, "SELECT \"Index\", \"Close\", \"Adj_Close\" FROM t").await?
    {
        let index = strings(&b, "Index")?;
        let close = f64s(&b, "Close")?;
        let adj = f64s(&b, "Adj_Close")?;
        for i in 0..b.num_rows() {
            out.insert(
                index.value(i).to_string(),
                (close.value(i), opt(adj, i, |a, i| a.value(i))),
            );
        }
    }
    Ok(out)
}

fn batch(rows: &[Joined]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.index.as_str()),
        )),
        Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.date))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.close))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.adj_close))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.latest_close),
        )),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.latest_adj_close),
        )),
    ];
    RecordBatch::try_new(table().schema, columns).expect("columns match stocks_close_silver")
}
