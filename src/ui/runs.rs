//! Runs and updates as the UI shows them: job runs from `system.job_runs`, pipeline
//! updates with their flows and expectation metrics from the event log
//! (`system.events`). A page reads only its own runs: the page's ids first, then the
//! rows of those ids.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::functions::core::expr_fn::get_field;
use deltalake::datafusion::prelude::{col, lit, DataFrame, Expr};
use serde::Serialize;
use serde_json::{Map, Value};

use super::api::ApiError;
use super::tables::Tables;
use crate::catalog::TableName;
use crate::sql::SqlError;

/// A table of the catalog as a DataFrame, or `None` if it does not exist yet.
async fn frame(tables: &Tables, name: &TableName) -> Result<Option<DataFrame>, ApiError> {
    if !tables.warehouse().has_table(name) {
        return Ok(None);
    }
    let table = tables.open(name).await?;
    Ok(Some(crate::sql::table_frame(&table).await?))
}

/// Rows as JSON objects (timestamps as RFC 3339 text).
fn objects(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, ApiError> {
    let mut writer = deltalake::arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer
            .write(b)
            .map_err(|e| ApiError::Internal(format!("cannot show rows as JSON: {e}")))?;
    }
    writer
        .finish()
        .map_err(|e| ApiError::Internal(format!("cannot show rows as JSON: {e}")))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("cannot show rows as JSON: {e}")))
}

async fn collect(df: DataFrame) -> Result<Vec<Map<String, Value>>, ApiError> {
    objects(&df.collect().await.map_err(SqlError::from)?)
}

async fn count(df: DataFrame) -> Result<usize, ApiError> {
    Ok(df.count().await.map_err(SqlError::from)?)
}

fn text(row: &Map<String, Value>, key: &str) -> Option<String> {
    row.get(key).and_then(Value::as_str).map(String::from)
}

fn int(row: &Map<String, Value>, key: &str) -> i64 {
    row.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn time(row: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    let t = text(row, key)?;
    DateTime::parse_from_rfc3339(&t)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            // arrow writes a UTC timestamp without its offset when it has no time zone.
            chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

fn within(ids: &[String], column: Expr) -> Expr {
    column.in_list(ids.iter().map(|i| lit(i.clone())).collect(), false)
}

fn err<E: Into<SqlError>>(e: E) -> ApiError {
    ApiError::from(e.into())
}

/// A page of anything, newest first.
#[derive(Debug, Serialize)]
pub struct Paged<T> {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    #[serde(flatten)]
    pub items: T,
}

/// One row of `job_runs`: a run or one of its tasks.
#[derive(Debug, Serialize)]
pub struct RunRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub state: String,
    pub error: Option<String>,
    pub rows_read: i64,
    pub rows_written: i64,
}

impl RunRow {
    fn of(row: &Map<String, Value>) -> RunRow {
        RunRow {
            task: text(row, "task"),
            start: time(row, "start"),
            end: time(row, "end"),
            state: text(row, "state").unwrap_or_default(),
            error: text(row, "error"),
            rows_read: int(row, "rows_read"),
            rows_written: int(row, "rows_written"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub run_id: String,
    pub job: String,
    #[serde(flatten)]
    pub row: RunRow,
    pub tasks: Vec<RunRow>,
}

#[derive(Debug, Serialize)]
pub struct Runs {
    pub runs: Vec<Run>,
}

/// Job runs `offset..offset + limit`, newest first, with their tasks.
pub async fn runs(tables: &Tables, offset: usize, limit: usize) -> Result<Paged<Runs>, ApiError> {
    let empty = Paged {
        total: 0,
        offset,
        limit,
        items: Runs { runs: Vec::new() },
    };
    let Some(df) = frame(tables, &crate::scheduler::job_runs_table().name).await? else {
        return Ok(empty);
    };
    let runs = df.clone().filter(col("task").is_null()).map_err(err)?;
    let total = count(runs.clone()).await?;
    let page = collect(
        runs.sort(vec![col("start").sort(false, true)])
            .map_err(err)?
            .limit(offset, Some(limit))
            .map_err(err)?,
    )
    .await?;
    let ids: Vec<String> = page.iter().filter_map(|r| text(r, "run_id")).collect();
    let mut tasks: BTreeMap<String, Vec<RunRow>> = BTreeMap::new();
    if !ids.is_empty() {
        let rows = df
            .filter(col("task").is_not_null().and(within(&ids, col("run_id"))))
            .map_err(err)?;
        for row in collect(rows).await? {
            tasks
                .entry(text(&row, "run_id").unwrap_or_default())
                .or_default()
                .push(RunRow::of(&row));
        }
    }
    Ok(Paged {
        total,
        items: Runs {
            runs: page
                .iter()
                .map(|r| {
                    let id = text(r, "run_id").unwrap_or_default();
                    Run {
                        job: text(r, "job").unwrap_or_default(),
                        row: RunRow::of(r),
                        tasks: tasks.remove(&id).unwrap_or_default(),
                        run_id: id,
                    }
                })
                .collect(),
        },
        ..empty
    })
}

/// The latest recorded row of each of `tasks` in `job_runs`.
pub async fn last_task_rows(
    tables: &Tables,
    tasks: &[String],
) -> Result<BTreeMap<String, RunRow>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(df) = frame(tables, &crate::scheduler::job_runs_table().name).await? else {
        return Ok(out);
    };
    if tasks.is_empty() {
        return Ok(out);
    }
    let latest = df
        .filter(within(tasks, col("task")))
        .map_err(err)?
        .sort(vec![col("end").sort(false, true)])
        .map_err(err)?
        .limit(0, Some(tasks.len() * 20))
        .map_err(err)?;
    for row in collect(latest).await? {
        let r = RunRow::of(&row);
        if let Some(task) = r.task.clone() {
            out.entry(task).or_insert(r);
        }
    }
    Ok(out)
}

/// A flow of an update, from its `flow_progress` event.
#[derive(Debug, Clone, Serialize)]
pub struct FlowRun {
    pub flow: String,
    pub dataset: String,
    pub state: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub elapsed_ms: i64,
    pub rows_read: i64,
    pub rows_written: i64,
    pub rows_dropped: i64,
    pub error: Option<String>,
    #[serde(skip)]
    pub expectations: Vec<Expectation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Expectation {
    pub name: String,
    pub passed: i64,
    pub failed: i64,
}

impl FlowRun {
    fn of(row: &Map<String, Value>) -> FlowRun {
        let details: Value = text(row, "details")
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or(Value::Null);
        let progress = &details["flow_progress"];
        let metric = |k: &str| progress["metrics"][k].as_i64().unwrap_or(0);
        let end = time(row, "timestamp");
        let elapsed_ms = metric("elapsed_ms");
        FlowRun {
            flow: text(row, "flow").unwrap_or_default(),
            dataset: text(row, "dataset").unwrap_or_default(),
            state: progress["status"].as_str().unwrap_or("UNKNOWN").into(),
            start: end.map(|e| e - chrono::Duration::milliseconds(elapsed_ms)),
            end,
            elapsed_ms,
            rows_read: metric("num_input_rows"),
            rows_written: metric("num_output_rows"),
            rows_dropped: metric("dropped_records"),
            error: text(row, "error"),
            expectations: progress["data_quality"]["expectations"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|e| Expectation {
                            name: e["name"].as_str().unwrap_or_default().into(),
                            passed: e["passed_records"].as_i64().unwrap_or(0),
                            failed: e["failed_records"].as_i64().unwrap_or(0),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A pipeline update with its flows.
#[derive(Debug, Serialize)]
pub struct Update {
    pub update_id: String,
    pub pipeline: String,
    pub pipeline_id: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// `COMPLETED`, `FAILED`, …; `RUNNING` while a run holds the lock, `INTERRUPTED` if
    /// the update never ended and no run holds it.
    pub state: String,
    pub error: Option<String>,
    pub flows: Vec<FlowRun>,
}

#[derive(Debug, Serialize)]
pub struct Updates {
    pub updates: Vec<Update>,
}

/// The event log's columns the UI reads, with the origin's members flattened.
fn event_columns(df: DataFrame) -> Result<DataFrame, ApiError> {
    let origin = |f: &str| get_field(col("origin"), f);
    df.select(vec![
        origin("update_id").alias("update_id"),
        origin("pipeline_id").alias("pipeline_id"),
        origin("pipeline_name").alias("pipeline"),
        origin("flow_name").alias("flow"),
        origin("dataset_name").alias("dataset"),
        col("timestamp"),
        col("sequence"),
        col("event_type"),
        col("details"),
        col("error"),
    ])
    .map_err(err)
}

/// Updates `offset..offset + limit` of every pipeline (or of `pipeline`), newest first.
pub async fn updates(
    tables: &Tables,
    pipeline: Option<&str>,
    offset: usize,
    limit: usize,
    running: bool,
) -> Result<Paged<Updates>, ApiError> {
    let empty = Paged {
        total: 0,
        offset,
        limit,
        items: Updates {
            updates: Vec::new(),
        },
    };
    let Some(df) = frame(tables, &crate::pipeline::events::table().name).await? else {
        return Ok(empty);
    };
    let mut events = event_columns(df)?;
    if let Some(p) = pipeline {
        events = events.filter(col("pipeline_id").eq(lit(p))).map_err(err)?;
    }
    let created = events
        .clone()
        .filter(col("event_type").eq(lit("create_update")))
        .map_err(err)?;
    let total = count(created.clone()).await?;
    let page = collect(
        created
            .sort(vec![col("timestamp").sort(false, true)])
            .map_err(err)?
            .limit(offset, Some(limit))
            .map_err(err)?,
    )
    .await?;
    let ids: Vec<String> = page.iter().filter_map(|r| text(r, "update_id")).collect();
    let mut rows: BTreeMap<String, Vec<Map<String, Value>>> = BTreeMap::new();
    if !ids.is_empty() {
        let of_page = events
            .filter(
                within(&ids, col("update_id")).and(
                    col("event_type")
                        .in_list(vec![lit("flow_progress"), lit("update_progress")], false),
                ),
            )
            .map_err(err)?
            .sort(vec![col("sequence").sort(true, false)])
            .map_err(err)?;
        for row in collect(of_page).await? {
            rows.entry(text(&row, "update_id").unwrap_or_default())
                .or_default()
                .push(row);
        }
    }
    let newest = ids.first().cloned();
    let updates = page
        .iter()
        .map(|created| {
            let id = text(created, "update_id").unwrap_or_default();
            let events = rows.remove(&id).unwrap_or_default();
            let ended = events
                .iter()
                .find(|e| text(e, "event_type").as_deref() == Some("update_progress"));
            let state = match ended {
                Some(e) => text(e, "details")
                    .and_then(|d| serde_json::from_str::<Value>(&d).ok())
                    .and_then(|d| d["state"].as_str().map(String::from))
                    .unwrap_or_else(|| "UNKNOWN".into()),
                // Only the newest update of a page can still be under way.
                None if running && newest.as_deref() == Some(id.as_str()) && offset == 0 => {
                    "RUNNING".into()
                }
                None => "INTERRUPTED".into(),
            };
            Update {
                pipeline: text(created, "pipeline").unwrap_or_default(),
                pipeline_id: text(created, "pipeline_id").unwrap_or_default(),
                start: time(created, "timestamp"),
                end: ended.and_then(|e| time(e, "timestamp")),
                error: ended.and_then(|e| text(e, "error")),
                flows: events
                    .iter()
                    .filter(|e| text(e, "event_type").as_deref() == Some("flow_progress"))
                    .map(FlowRun::of)
                    .collect(),
                state,
                update_id: id,
            }
        })
        .collect();
    Ok(Paged {
        total,
        items: Updates { updates },
        ..empty
    })
}

/// The flows of the last `last` flow events, into `dataset` (a full name) or of every
/// pipeline, oldest first, each with its update's id: their progress and expectation
/// metrics.
pub async fn recent_flows(
    tables: &Tables,
    dataset: Option<&str>,
    last: usize,
) -> Result<Vec<(String, FlowRun)>, ApiError> {
    let Some(df) = frame(tables, &crate::pipeline::events::table().name).await? else {
        return Ok(Vec::new());
    };
    let mut filter = col("event_type").eq(lit("flow_progress"));
    if let Some(dataset) = dataset {
        filter = filter.and(col("dataset").eq(lit(dataset)));
    }
    let flows = event_columns(df)?
        .filter(filter)
        .map_err(err)?
        .sort(vec![col("timestamp").sort(false, true)])
        .map_err(err)?
        .limit(0, Some(last))
        .map_err(err)?;
    let mut out: Vec<(String, FlowRun)> = collect(flows)
        .await?
        .iter()
        .map(|r| (text(r, "update_id").unwrap_or_default(), FlowRun::of(r)))
        .collect();
    out.reverse();
    Ok(out)
}
