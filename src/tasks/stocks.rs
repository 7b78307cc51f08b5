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
    ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use deltalake::arrow::datatypes::{DataType, Field};
use deltalake::kernel::Transaction;

use crate::bundle::job::StocksSilver;
use crate::catalog::TableName;
use crate::delta::{schema, DeltaSink, TableSpec};
use crate::fault;
use crate::progress::{Progress, TaskSummary};
use crate::quarantine;
use crate::stock::{self, Stock};
use crate::stream::needs;
use crate::tasks::bronze::{bronze_records, BronzeRecord};
use crate::tasks::columns::{dates, strings};
use crate::tasks::{date_literal, table_setting, SourceStream, TaskContext, TaskError};

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
        target_file_size: None,
    }
}

/// Days since 1970-01-01, Arrow's `Date32`.
pub fn days(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// What one range of bronze versions gave.
struct Outcome<'a> {
    read: u64,
    valid: Vec<Stock>,
    rejected: Vec<(BronzeRecord<'a>, String)>,
}

fn classify(records: Vec<BronzeRecord<'_>>) -> Outcome<'_> {
    let mut outcome = Outcome {
        read: records.len() as u64,
        valid: Vec::new(),
        rejected: Vec::new(),
    };
    for r in records {
        match stock::parse(r.value) {
            Ok(s) => outcome.valid.push(s),
            Err(reason) => outcome.rejected.push((r, reason)),
        }
    }
    outcome
}

/// Runs the task: every bronze commit not yet processed.
pub async fn run(
    ctx: &TaskContext,
    task: &StocksSilver,
    progress: Arc<Progress>,
) -> Result<TaskSummary, TaskError> {
    let mut summary = TaskSummary::new("stocks");
    let Some(mut source) =
        SourceStream::open(ctx, table_setting(&task.source), &mut summary).await?
    else {
        return Ok(summary);
    };
    let warehouse = &ctx.settings.warehouse;
    let mut silver = DeltaSink::open(warehouse, table().named(table_setting(&task.table))).await?;
    let quarantine_spec = quarantine::stocks_table().named(table_setting(&task.quarantine_table));
    let mut quarantine = DeltaSink::open(warehouse, quarantine_spec).await?;
    let silver_app = source.app_id(&silver);
    let quarantine_app = source.app_id(&quarantine);

    while let Some((to, batches)) = source.next(&silver, &[&quarantine]).await? {
        let outcome = classify(bronze_records(&batches)?);
        summary.rows_read += outcome.read;
        progress.add_rows(outcome.read);

        let side = quarantine.txn_version(&quarantine_app).await?;
        if !outcome.rejected.is_empty() && needs(side, to) {
            let batch = quarantine::stocks_batch(&outcome.rejected);
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
        summary.rows_dropped += duplicates;
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
    if summary.rows_read > 0 {
        // Every bronze record is accounted for.
        summary.notes.push(format!(
            "{} read = {} written + {} quarantined + {} duplicates of a stored (Index, Date)",
            summary.rows_read, summary.rows_written, summary.rows_quarantined, summary.rows_dropped
        ));
    }
    summary.bytes_read = source.bytes_read;
    summary.elapsed = progress.elapsed();
    Ok(summary)
}

/// Keeps the first record of each `(Index, Date)` not yet in the table; returns them and
/// how many were dropped as duplicates.
async fn new_keys(silver: &DeltaSink, valid: Vec<Stock>) -> Result<(Vec<Stock>, u64), TaskError> {
    if valid.is_empty() {
        return Ok((valid, 0));
    }
    // The stored rows that can clash: the batch's indexes within its dates. Only those
    // whose key is in the batch are kept, so memory follows the batch.
    let mut ranges: std::collections::BTreeMap<&str, (i32, i32)> = Default::default();
    for s in &valid {
        let d = days(s.date);
        let r = ranges.entry(s.index.as_str()).or_insert((d, d));
        *r = (r.0.min(d), r.1.max(d));
    }
    let cond = if ranges.len() <= crate::tasks::PER_INDEX_MAX {
        crate::tasks::per_index(
            "",
            ranges.iter().map(|(i, (lo, hi))| {
                let (lo, hi) = (date_literal(*lo), date_literal(*hi));
                (*i, format!("\"Date\" BETWEEN {lo} AND {hi}"))
            }),
        )
    } else {
        // Many indexes: by date alone (see PER_INDEX_MAX); the keys are matched below.
        let lo = ranges.values().map(|r| r.0).min().unwrap_or(i32::MIN);
        let hi = ranges.values().map(|r| r.1).max().unwrap_or(i32::MAX);
        format!(
            "\"Date\" BETWEEN {} AND {}",
            date_literal(lo),
            date_literal(hi)
        )
    };
    let started = std::time::Instant::now();
    let existing = silver
        .query(&format!("SELECT \"Index\", \"Date\" FROM t WHERE {cond}"))
        .await?;
    tracing::debug!(
        elapsed = ?started.elapsed(),
        candidates = existing.iter().map(|b| b.num_rows()).sum::<usize>(),
        "stocks: stored keys in the batch's date ranges read"
    );
    let batch_keys: HashSet<(&str, i32)> = valid
        .iter()
        .map(|s| (s.index.as_str(), days(s.date)))
        .collect();
    let mut seen: HashSet<(String, i32)> = HashSet::new();
    for b in &existing {
        let index = strings(b, "Index")?;
        let date = dates(b, "Date")?;
        for i in 0..b.num_rows() {
            let key = (index.value(i), date.value(i));
            if batch_keys.contains(&key) {
                seen.insert((key.0.to_string(), key.1));
            }
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
