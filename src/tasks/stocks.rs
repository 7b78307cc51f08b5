//! Task `stocks`: bronze → `silver.stocks_silver`, typed, deduplicated, append-only.
//!
//! Streams the bronze commits not yet processed, parses each `value` into a [`Stock`],
//! quarantines the invalid ones in `quarantine.stocks_silver` (with the bronze
//! `partition`, `offset`, `value` and the reason), and appends the first valid record of
//! each `(Index, Date)` in bronze order (partition, offset). A key that is already in the
//! table is not appended again, so the table stays append-only and can be streamed from.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use deltalake::kernel::Transaction;

use crate::catalog::TableName;
use crate::delta::{schema, DeltaSink, TableSpec};
use crate::fault;
use crate::progress::{Progress, TaskSummary};
use crate::stock::{self, Stock};
use crate::stream::{self, app_id, needs, next_range};
use crate::tasks::columns::{dates, i32s, i64s, strings};
use crate::tasks::{bronze, TaskContext, TaskError};

/// `<catalog>.silver.stocks_silver`.
pub fn table() -> TableSpec {
    TableSpec {
        name: TableName::new("silver", "stocks_silver"),
        schema: schema(vec![
            Field::new("Index", DataType::Utf8, false),
            Field::new("Date", DataType::Date32, false),
            Field::new("Open", DataType::Float64, true),
            Field::new("High", DataType::Float64, true),
            Field::new("Low", DataType::Float64, true),
            Field::new("Close", DataType::Float64, false),
            Field::new("Adj_Close", DataType::Float64, true),
            Field::new("Volume", DataType::Int64, true),
        ]),
        partition_columns: vec![],
    }
}

/// `<catalog>.quarantine.stocks_silver`.
pub fn quarantine_table() -> TableSpec {
    TableSpec {
        name: TableName::new("quarantine", "stocks_silver"),
        schema: schema(vec![
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("value", DataType::Utf8, true),
            Field::new("reason", DataType::Utf8, false),
            Field::new(
                "quarantined_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]),
        partition_columns: vec![],
    }
}

/// A bronze record: where it sits in Kafka, and its value.
#[derive(Debug, Clone)]
pub struct BronzeRecord {
    pub partition: i32,
    pub offset: i64,
    pub value: Option<String>,
}

/// The bronze records of `batches`, in bronze order (partition, offset).
pub fn bronze_records(batches: &[RecordBatch]) -> Result<Vec<BronzeRecord>, TaskError> {
    let mut out = Vec::new();
    for b in batches {
        let partition = i32s(b, "partition")?;
        let offset = i64s(b, "offset")?;
        let value = strings(b, "value")?;
        for i in 0..b.num_rows() {
            out.push(BronzeRecord {
                partition: partition.value(i),
                offset: offset.value(i),
                value: (!deltalake::arrow::array::Array::is_null(&value, i))
                    .then(|| value.value(i).to_string()),
            });
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// Days since 1970-01-01, Arrow's `Date32`.
pub fn days(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// What one range of bronze versions gave.
struct Outcome {
    read: u64,
    valid: Vec<Stock>,
    rejected: Vec<(BronzeRecord, String)>,
}

fn classify(records: Vec<BronzeRecord>) -> Outcome {
    let mut outcome = Outcome {
        read: records.len() as u64,
        valid: Vec::new(),
        rejected: Vec::new(),
    };
    for r in records {
        match stock::parse(r.value.as_deref()) {
            Ok(s) => outcome.valid.push(s),
            Err(reason) => outcome.rejected.push((r, reason)),
        }
    }
    outcome
}

/// Runs the task: every bronze commit not yet processed.
pub async fn run(ctx: &TaskContext, progress: Arc<Progress>) -> Result<TaskSummary, TaskError> {
    let mut summary = TaskSummary::new("stocks");
    let source_name = bronze::table().name;
    let Some(source) = ctx.input(&source_name).await? else {
        summary
            .notes
            .push("bronze.bronze does not exist yet: nothing to do".into());
        return Ok(summary);
    };
    let latest = source.version().map_or(-1, |v| v as i64);
    let warehouse = &ctx.settings.warehouse;
    let mut silver = DeltaSink::open(warehouse, table()).await?;
    let mut quarantine = DeltaSink::open(warehouse, quarantine_table()).await?;
    let silver_app = app_id(silver.name(), &source_name);
    let quarantine_app = app_id(quarantine.name(), &source_name);

    loop {
        let main = silver.txn_version(&silver_app).await?;
        let side = quarantine.txn_version(&quarantine_app).await?;
        let Some((from, to)) = next_range(main, &[side], latest) else {
            break;
        };
        let batches =
            stream::read_appends(&source, &warehouse.qualified(&source_name), from, to).await?;
        let outcome = classify(bronze_records(&batches)?);
        summary.rows_read += outcome.read;
        progress.add_rows(outcome.read);

        if !outcome.rejected.is_empty() && needs(side, to) {
            let batch = quarantine_batch(&outcome.rejected);
            let version = quarantine
                .append(vec![batch], vec![Transaction::new(&quarantine_app, to)])
                .await?;
            summary
                .versions
                .push((quarantine.qualified_name().into(), version));
        }
        summary.rows_quarantined += outcome.rejected.len() as u64;
        fault::point("stocks.after_quarantine");

        let (fresh, duplicates) = new_keys(&silver, outcome.valid).await?;
        if duplicates > 0 {
            summary.notes.push(format!(
                "{duplicates} record(s) repeat an (Index, Date) already in stocks_silver and were not appended"
            ));
        }
        let version = silver
            .append(
                vec![silver_batch(&fresh)],
                vec![Transaction::new(&silver_app, to)],
            )
            .await?;
        summary.rows_written += fresh.len() as u64;
        summary
            .versions
            .push((silver.qualified_name().into(), version));
        fault::point("stocks.after_commit");
    }
    summary.elapsed = progress.elapsed();
    Ok(summary)
}

/// Keeps the first record of each `(Index, Date)` not yet in the table; returns them and
/// how many were dropped as duplicates.
async fn new_keys(silver: &DeltaSink, valid: Vec<Stock>) -> Result<(Vec<Stock>, u64), TaskError> {
    if valid.is_empty() {
        return Ok((valid, 0));
    }
    let indexes: HashSet<&str> = valid.iter().map(|s| s.index.as_str()).collect();
    let list = indexes
        .iter()
        .map(|i| format!("'{}'", i.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",");
    let existing = silver
        .query(&format!(
            "SELECT \"Index\", \"Date\" FROM t WHERE \"Index\" IN ({list})"
        ))
        .await?;
    let mut seen: HashSet<(String, i32)> = HashSet::new();
    for b in &existing {
        let index = strings(b, "Index")?;
        let date = dates(b, "Date")?;
        for i in 0..b.num_rows() {
            seen.insert((index.value(i).to_string(), date.value(i)));
        }
    }
    let before = valid.len();
    let fresh: Vec<Stock> = valid
        .into_iter()
        .filter(|s| seen.insert((s.index.clone(), days(s.date))))
        .collect();
    let dropped = (before - fresh.len()) as u64;
    Ok((fresh, dropped))
}

fn silver_batch(rows: &[Stock]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|s| s.index.as_str()),
        )),
        Arc::new(Date32Array::from_iter_values(
            rows.iter().map(|s| days(s.date)),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|s| s.open))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|s| s.high))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|s| s.low))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|s| s.close))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|s| s.adj_close))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|s| s.volume))),
    ];
    RecordBatch::try_new(table().schema, columns).expect("columns match stocks_silver")
}

fn quarantine_batch(rows: &[(BronzeRecord, String)]) -> RecordBatch {
    let now = chrono::Utc::now().timestamp_micros();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|(r, _)| r.partition),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|(r, _)| r.offset),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(r, _)| r.value.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, why)| why.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|_| now))
                .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(quarantine_table().schema, columns).expect("columns match the quarantine")
}
