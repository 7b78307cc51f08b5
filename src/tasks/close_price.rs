//! Task `close_price`: the close-price history as an SCD Type 2 table. (The current
//! close per `Index` is the materialized view `current_close_silver`, in SQL.)
//!
//! `close_price` streams the valid bronze records into `silver.close_price_silver` with a
//! Delta MERGE. Each distinct `(Date, Close, Adj_Close)` of an `Index` is one version;
//! versions are ordered by `Date`, then by arrival (`effective_date`, the processing time
//! at which a version was written). `__START_AT` is the version's `Date`, `__END_AT` the
//! next version's `Date` (NULL for the last), and `current` marks the last one. A late
//! record is placed in the history where its date puts it, and only the neighbours whose
//! `__END_AT` or `current` change are updated: the final table does not depend on how the
//! records were batched, apart from the processing times.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use foldhash::HashSet;

use crate::bundle::job::SourceTable;
use crate::catalog::TableName;
use crate::delta::{schema, DeltaSink, TableSpec};
use crate::fault;
use crate::progress::{Progress, TaskSummary};
use crate::stock;
use crate::stock::days;
use crate::tasks::bronze::bronze_records;
use crate::tasks::columns::{bools, dates, f64s, opt, strings, timestamps};
use crate::tasks::{
    date_literal, per_index, table_setting, SourceStream, TaskContext, TaskError, PER_INDEX_MAX,
};

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Files of close_price_silver grow to about 2 MB (some 60k versions). A run's MERGE
/// rewrites the last file of each index it touches, so a new day costs up to this much
/// per index, not the whole history. Measured at 5 indices: 4 MB made one new day's
/// close_price 0.17-0.19 s at 1M rows; 1 MB 0.09 s, but 690 files at 10M rows, and
/// current_close_silver twice as slow (it then opened every file; see [`CURRENT`]).
const CLOSE_PRICE_FILE_SIZE: u64 = 2 << 20;

/// Selects the current versions. `__END_AT IS NULL` holds for exactly the same rows as
/// `current` (the last version of an index has no next date), and delta-rs skips files
/// by their null counts but not by a boolean's minimum and maximum: with `current` alone,
/// reading the current versions opened every file of the table (220 at 10M rows, 36-76
/// ms a read, against 15-21 ms with five files).
const CURRENT: &str = "\"current\" AND \"__END_AT\" IS NULL";

/// `<catalog>.silver.close_price_silver`.
pub fn table() -> TableSpec {
    TableSpec {
        name: TableName::new("silver", "close_price_silver"),
        schema: schema(vec![
            Field::new("Index", DataType::Utf8, false),
            Field::new("Date", DataType::Date32, false),
            Field::new("Close", DataType::Float64, false),
            Field::new("Adj_Close", DataType::Float64, true),
            Field::new("__START_AT", DataType::Date32, false),
            Field::new("__END_AT", DataType::Date32, true),
            Field::new("current", DataType::Boolean, false),
            Field::new("effective_date", timestamp(), false),
            Field::new("end_date", timestamp(), true),
        ]),
        // Partitioned by `Index`, so that a MERGE reads each index's last files only.
        // Bronze's Kafka partitions are read at different rates, so one piece holds each
        // index at other dates; unpartitioned files then mixed every index over wide date
        // ranges, and the MERGE's scope could not skip them by their statistics (at 10M
        // rows it scanned 18 files a piece on average to rewrite one or two).
        partition_columns: vec!["Index".into()],
        target_file_size: Some(CLOSE_PRICE_FILE_SIZE),
    }
}

/// One version of an `Index`'s close price.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    /// Shared: a history holds one name per `Index` for its many versions.
    index: Arc<str>,
    date: i32,
    close: f64,
    adj_close: Option<f64>,
    end_at: Option<i32>,
    current: bool,
    effective: i64,
    end_date: Option<i64>,
}

/// What makes two versions of one `Index` the same: `Date`, `Close`, `Adj_Close`.
type Identity = (i32, u64, Option<u64>);

impl Version {
    fn identity(&self) -> Identity {
        (
            self.date,
            self.close.to_bits(),
            self.adj_close.map(f64::to_bits),
        )
    }
}

/// Runs `close_price`: every bronze commit not yet merged.
pub async fn run(
    ctx: &TaskContext,
    task: &SourceTable,
    progress: Arc<Progress>,
) -> Result<TaskSummary, TaskError> {
    let mut summary = TaskSummary::new("close_price");
    let Some(mut source) =
        SourceStream::open(ctx, table_setting(&task.source), &mut summary).await?
    else {
        return Ok(summary);
    };
    let spec = table().named(table_setting(&task.table));
    let mut sink = DeltaSink::open(&ctx.settings.warehouse, spec).await?;
    let app = source.app_id(&sink);

    while let Some((to, batches)) = source.next(&sink, &[]).await? {
        let records = bronze_records(&batches)?;
        summary.rows_read += records.len() as u64;
        progress.add_rows(records.len() as u64);
        let arrivals: Vec<stock::Stock> = records
            .iter()
            .filter_map(|r| stock::parse(r.value).ok())
            .collect();
        let groups = by_index_groups(arrivals);
        let last = groups.len() - 1;
        for (n, arrivals) in groups.into_iter().enumerate() {
            // The progress goes with the last group: a crash before it makes the rerun
            // apply the earlier groups again, which finds their versions stored and
            // changes nothing.
            let txn = if n == last {
                vec![Transaction::new(&app, to)]
            } else {
                vec![]
            };
            let version = merge_arrivals(&mut sink, &arrivals, txn, &mut summary).await?;
            summary
                .versions
                .push((sink.qualified_name().into(), version));
        }
        fault::point("close_price.after_commit");
    }
    summary.bytes_read = source.bytes_read;
    summary.elapsed = progress.elapsed();
    Ok(summary)
}

/// The arrivals in groups of at most [`PER_INDEX_MAX`] indexes, each index whole in one
/// group, in index order; one empty group when there are none. A MERGE into a table
/// partitioned by `Index` makes delta-rs build a chain of one `OR` per index of its
/// source, which it walks recursively: 20,000 indexes in one MERGE overflowed the stack.
fn by_index_groups(arrivals: Vec<stock::Stock>) -> Vec<Vec<stock::Stock>> {
    let mut by_index: BTreeMap<String, Vec<stock::Stock>> = BTreeMap::new();
    for s in arrivals {
        by_index.entry(s.index.clone()).or_default().push(s);
    }
    let mut groups = vec![Vec::new()];
    let mut indexes = 0;
    for (_, rows) in by_index {
        if indexes == PER_INDEX_MAX {
            groups.push(Vec::new());
            indexes = 0;
        }
        groups.last_mut().expect("one group at least").extend(rows);
        indexes += 1;
    }
    groups
}

/// Reads the history the arrivals touch, chains the versions and MERGEs the changes
/// with `txn` (or commits `txn` alone). Returns the table version.
async fn merge_arrivals(
    sink: &mut DeltaSink,
    arrivals: &[stock::Stock],
    txn: Vec<Transaction>,
    summary: &mut TaskSummary,
) -> Result<i64, TaskError> {
    let started = std::time::Instant::now();
    let (existing, scope) = load_history(sink, arrivals).await?;
    let loaded = started.elapsed();
    let now = chrono::Utc::now().timestamp_micros();
    let changes = apply(existing, arrivals, now);
    tracing::debug!(
        arrivals = arrivals.len(),
        changes = changes.len(),
        ?loaded,
        applied = ?started.elapsed() - loaded,
        "close_price: history read and versions chained"
    );
    let version = if changes.is_empty() {
        sink.append(vec![], txn).await?
    } else {
        let inserted = changes.iter().filter(|(_, new)| *new).count();
        let source_df = SessionContext::new()
            .read_batch(history_batch(
                &changes.into_iter().map(|(v, _)| v).collect::<Vec<_>>(),
            ))
            .map_err(crate::sql::SqlError::from)?;
        fault::point("close_price.before_merge");
        let (version, rows_inserted, rows_updated) = sink
            .merge(
                source_df,
                &format!(
                    "({scope}) AND target.\"Index\" = source.\"Index\" \
                     AND target.\"Date\" = source.\"Date\" \
                     AND target.\"Close\" = source.\"Close\" \
                     AND target.\"Adj_Close\" IS NOT DISTINCT FROM source.\"Adj_Close\""
                ),
                &["__END_AT", "current", "end_date"],
                txn,
            )
            .await?;
        tracing::debug!(elapsed = ?started.elapsed(), "close_price: piece done");
        if rows_inserted != inserted {
            return Err(TaskError::Data {
                table: sink.qualified_name().into(),
                reason: format!(
                    "MERGE inserted {rows_inserted} versions where {inserted} were new"
                ),
            });
        }
        summary.notes.push(format!(
            "{rows_inserted} new version(s), {rows_updated} earlier version(s) closed or moved"
        ));
        summary.rows_written += (rows_inserted + rows_updated) as u64;
        version
    };
    Ok(version)
}

/// The stored versions that arrivals can affect, per `Index` with arrivals: those from
/// the last stored date before its earliest arrival onwards. Earlier versions keep their
/// `__END_AT` (it points at a date that is still there), so a run reads what its new
/// data touches, not the whole history. Also returns that scope as a condition on
/// `target`, which bounds the MERGE's scan of the table to the same files.
async fn load_history(
    sink: &DeltaSink,
    arrivals: &[stock::Stock],
) -> Result<(BTreeMap<Arc<str>, Vec<Version>>, String), TaskError> {
    let mut first: BTreeMap<&str, i32> = BTreeMap::new();
    for s in arrivals {
        let d = days(s.date);
        first
            .entry(s.index.as_str())
            .and_modify(|m| *m = (*m).min(d))
            .or_insert(d);
    }
    let mut history: BTreeMap<Arc<str>, Vec<Version>> =
        first.keys().map(|i| (Arc::from(*i), Vec::new())).collect();
    if first.is_empty() {
        return Ok((history, "false".into()));
    }
    let scope = |start: &BTreeMap<&str, i32>, table: &str| {
        per_index(
            table,
            start
                .iter()
                .map(|(i, d)| (*i, format!("\"Date\" >= {}", date_literal(*d)))),
        )
    };

    // Data in order, the usual case: every index's arrivals all come after its current
    // version. The history from the last stored date on is then that one version (and
    // closed corrections of the same date, which keep their `__END_AT`), so the current
    // versions are all there is to read. Files without one are skipped by their
    // statistics, so this does not grow with the history.
    let started = std::time::Instant::now();
    let current = sink
        .query(&format!(
            "SELECT * FROM t WHERE {}",
            per_index("", first.keys().map(|i| (*i, CURRENT.to_string())))
        ))
        .await?;
    let current = versions(&current, &history)?;
    let in_order = first.iter().all(|(index, first)| {
        let mut of_index = current.iter().filter(|v| &*v.index == *index);
        matches!((of_index.next(), of_index.next()), (Some(v), None) if v.date < *first)
    });
    tracing::debug!(elapsed = ?started.elapsed(), in_order, "close_price: current versions read");
    if in_order {
        let start = current.iter().map(|v| (&*v.index, v.date)).collect();
        let target = scope(&start, "target.");
        for v in current {
            history.entry(v.index.clone()).or_default().push(v);
        }
        return Ok((history, target));
    }

    // Late data, or an index seen for the first time: find each index's last stored date
    // before its earliest arrival, and read everything from there.
    let before = per_index(
        "",
        first
            .iter()
            .map(|(i, d)| (*i, format!("\"Date\" < {}", date_literal(*d)))),
    );
    let previous = sink
        .query(&format!(
            "SELECT \"Index\", max(\"Date\") AS \"Date\" FROM t WHERE {before} GROUP BY \"Index\""
        ))
        .await?;
    tracing::debug!(elapsed = ?started.elapsed(), "close_price: last stored dates read");
    let mut start = first.clone();
    for b in &previous {
        let index = strings(b, "Index")?;
        let date = dates(b, "Date")?;
        for i in 0..b.num_rows() {
            if let Some(s) = start.get_mut(index.value(i)) {
                *s = date.value(i);
            }
        }
    }
    let batches = sink
        .query(&format!("SELECT * FROM t WHERE {}", scope(&start, "")))
        .await?;
    for v in versions(&batches, &history)? {
        history.entry(v.index.clone()).or_default().push(v);
    }
    Ok((history, scope(&start, "target.")))
}

/// The stored versions in `batches` (rows of close_price_silver), named as in `history`.
fn versions(
    batches: &[RecordBatch],
    history: &BTreeMap<Arc<str>, Vec<Version>>,
) -> Result<Vec<Version>, TaskError> {
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for b in batches {
        let index = strings(b, "Index")?;
        let date = dates(b, "Date")?;
        let close = f64s(b, "Close")?;
        let adj = f64s(b, "Adj_Close")?;
        let end_at = dates(b, "__END_AT")?;
        let current = bools(b, "current")?;
        let effective = timestamps(b, "effective_date")?;
        let end_date = timestamps(b, "end_date")?;
        for i in 0..b.num_rows() {
            out.push(Version {
                index: shared(history, index.value(i)),
                date: date.value(i),
                close: close.value(i),
                adj_close: opt(adj, i, |a, i| a.value(i)),
                end_at: opt(end_at, i, |a, i| a.value(i)),
                current: current.value(i),
                effective: effective.value(i),
                end_date: opt(end_date, i, |a, i| a.value(i)),
            });
        }
    }
    Ok(out)
}

/// Adds the arrivals to the histories and returns every version to write: new ones
/// (`true`) and stored ones whose `__END_AT` or `current` changed (`false`).
fn apply(
    history: BTreeMap<Arc<str>, Vec<Version>>,
    arrivals: &[stock::Stock],
    now: i64,
) -> Vec<(Version, bool)> {
    // Per index: the identities seen so far, and each version with whether it is new.
    type Seen = (HashSet<Identity>, Vec<(Version, bool)>);
    let mut work: BTreeMap<Arc<str>, Seen> = history
        .into_iter()
        .map(|(index, versions)| {
            let seen = versions.iter().map(Version::identity).collect();
            (
                index,
                (seen, versions.into_iter().map(|v| (v, false)).collect()),
            )
        })
        .collect();
    let mut sequence = 0;
    for s in arrivals {
        let v = Version {
            index: shared(&work, &s.index),
            date: days(s.date),
            close: s.close,
            adj_close: s.adj_close,
            end_at: None,
            current: false,
            // Arrival order within one run: a microsecond apart.
            effective: now + sequence,
            end_date: None,
        };
        let (seen, versions) = work.entry(v.index.clone()).or_default();
        if seen.insert(v.identity()) {
            sequence += 1;
            versions.push((v, true));
        }
    }

    let mut out = Vec::new();
    for (_, versions) in work.values_mut() {
        versions.sort_by_key(|(v, _)| (v.date, v.effective));
        let last = versions.len().saturating_sub(1);
        for i in 0..versions.len() {
            let end_at = versions.get(i + 1).map(|(next, _)| next.date);
            let current = i == last;
            let (v, is_new) = &mut versions[i];
            if !*is_new && v.end_at == end_at && v.current == current {
                continue;
            }
            if *is_new || v.end_at != end_at {
                // Closed now (or re-closed by late data): the processing time it happened.
                v.end_date = end_at.map(|_| now);
            }
            v.end_at = end_at;
            v.current = current;
            out.push((v.clone(), *is_new));
        }
    }
    out
}

/// The map's own name for `index`, so that its versions share one string.
fn shared<V>(map: &BTreeMap<Arc<str>, V>, index: &str) -> Arc<str> {
    map.get_key_value(index)
        .map_or_else(|| Arc::from(index), |(k, _)| k.clone())
}

fn history_batch(rows: &[Version]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|v| &*v.index),
        )),
        Arc::new(Date32Array::from_iter_values(rows.iter().map(|v| v.date))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|v| v.close))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|v| v.adj_close))),
        Arc::new(Date32Array::from_iter_values(rows.iter().map(|v| v.date))),
        Arc::new(Date32Array::from_iter(rows.iter().map(|v| v.end_at))),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|v| Some(v.current)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|v| v.effective))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|v| v.end_date))
                .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(table().schema, columns).expect("columns match close_price_silver")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn s(index: &str, date: u32, close: f64) -> stock::Stock {
        stock::Stock {
            index: index.into(),
            date: NaiveDate::from_ymd_opt(2024, 1, date).unwrap(),
            open: None,
            high: None,
            low: None,
            close,
            adj_close: Some(close),
            volume: None,
        }
    }

    /// Applies batches one after another, as successive runs would.
    fn run_batches(batches: &[Vec<stock::Stock>]) -> Vec<Version> {
        let mut table: Vec<Version> = Vec::new();
        for (n, batch) in batches.iter().enumerate() {
            let mut history: BTreeMap<Arc<str>, Vec<Version>> = BTreeMap::new();
            for v in &table {
                history.entry(v.index.clone()).or_default().push(v.clone());
            }
            for (v, new) in apply(history, batch, 1_000_000 * (n as i64 + 1)) {
                if new {
                    table.push(v);
                } else {
                    let t = table
                        .iter_mut()
                        .find(|t| t.index == v.index && t.identity() == v.identity())
                        .unwrap();
                    *t = v;
                }
            }
            // What `CURRENT` relies on to skip files: the current versions are exactly
            // those without an end.
            for v in &table {
                assert_eq!(v.current, v.end_at.is_none(), "{v:?}");
            }
        }
        table.sort_by_key(|v| (v.index.clone(), v.date, v.effective));
        table
    }

    fn shape(t: &[Version]) -> Vec<(String, i32, f64, Option<i32>, bool)> {
        t.iter()
            .map(|v| (v.index.to_string(), v.date, v.close, v.end_at, v.current))
            .collect()
    }

    #[test]
    fn late_data_and_batching_give_the_same_history() {
        let all = vec![
            s("A", 2, 10.0),
            s("A", 3, 11.0),
            s("A", 5, 12.0),
            s("B", 2, 1.0),
        ];
        let at_once = run_batches(std::slice::from_ref(&all));
        let late = run_batches(&[
            vec![s("A", 5, 12.0), s("B", 2, 1.0)],
            vec![s("A", 2, 10.0)],
            vec![s("A", 3, 11.0), s("A", 3, 11.0)],
        ]);
        assert_eq!(shape(&at_once), shape(&late));
        let d = |day| days(NaiveDate::from_ymd_opt(2024, 1, day).unwrap());
        assert_eq!(
            shape(&at_once),
            vec![
                ("A".into(), d(2), 10.0, Some(d(3)), false),
                ("A".into(), d(3), 11.0, Some(d(5)), false),
                ("A".into(), d(5), 12.0, None, true),
                ("B".into(), d(2), 1.0, None, true),
            ]
        );
        // Closed versions carry the time they were closed; the current one none.
        assert!(late.iter().all(|v| v.end_date.is_some() != v.current));
    }

    #[test]
    fn a_correction_is_a_new_version_after_the_same_date() {
        let t = run_batches(&[
            vec![s("A", 2, 10.0), s("A", 3, 11.0)],
            vec![s("A", 2, 10.5), s("A", 2, 10.0)],
        ]);
        let d = |day| days(NaiveDate::from_ymd_opt(2024, 1, day).unwrap());
        assert_eq!(
            shape(&t),
            vec![
                ("A".into(), d(2), 10.0, Some(d(2)), false),
                ("A".into(), d(2), 10.5, Some(d(3)), false),
                ("A".into(), d(3), 11.0, None, true),
            ]
        );
    }
}
