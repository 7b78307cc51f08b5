//! The UI's JSON API. Every handler reads tables and logs, never process memory, and
//! writes nothing: the UI works beside any run, in this process or another.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::runs::{self, Paged};
use super::tables::{self, Tables};
use crate::bundle::Settings;
use crate::catalog::TableName;
use crate::sql::SqlError;

/// The most rows a SQL query shows; the page says when a result had more.
pub const SQL_ROWS: usize = 1_000;
/// The most rows, runs or versions one page shows.
pub const MAX_PAGE: usize = 500;
/// Reasons of a quarantine shown with their samples.
const MAX_REASONS: usize = 30;

/// What the UI serves: one target of one bundle.
pub struct Ui {
    pub settings: Settings,
    pub tables: Tables,
}

impl Ui {
    pub fn new(settings: Settings) -> Self {
        Ui {
            tables: Tables::new(settings.warehouse.clone()),
            settings,
        }
    }

    fn table_name(&self, text: &str) -> Result<TableName, ApiError> {
        self.settings
            .warehouse
            .parse_name(text)
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    /// The pipeline dataset that is the table `name`, if a pipeline defines it.
    fn dataset(&self, name: &TableName) -> Option<crate::pipeline::graph::Dataset> {
        let full = format!("{}.{name}", self.settings.warehouse.catalog());
        self.settings.pipelines.values().find_map(|spec| {
            let graph = crate::pipeline::load(spec).ok()?;
            graph
                .datasets
                .into_values()
                .find(|d| d.name.to_string() == full)
        })
    }
}

/// Errors of an API request, each with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("this medallion ui needs its access token: the one given to `medallion ui --token` or in MEDALLION_UI_TOKEN")]
    Unauthorized,
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn delta(name: &TableName, e: deltalake::DeltaTableError) -> Self {
        ApiError::Internal(format!("Delta table {name}: {e}"))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) | ApiError::Sql(SqlError::ReadOnly(_)) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Sql(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = crate::secrets::mask(&self.to_string()).into_owned();
        (self.status(), Json(json!({ "error": message }))).into_response()
    }
}

type Shared = State<Arc<Ui>>;
type Reply<T> = Result<Json<T>, ApiError>;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

impl PageQuery {
    fn limit(&self, default: usize) -> usize {
        self.limit.unwrap_or(default).clamp(1, MAX_PAGE)
    }
}

pub async fn overview(State(ui): Shared) -> Reply<Value> {
    let s = &ui.settings;
    Ok(Json(json!({
        "bundle": s.bundle_name,
        "target": s.target,
        "catalog": s.warehouse.catalog(),
        "run": super::live::run_holder(&s.state_dir).map(|holder| json!({ "holder": holder })),
        "pipelines": s.pipelines.iter().map(|(k, p)| json!({"key": k, "name": p.name})).collect::<Vec<_>>(),
        "jobs": s.jobs.iter().map(|(k, j)| json!({"key": k, "name": j.name})).collect::<Vec<_>>(),
    })))
}

pub async fn graph(State(ui): Shared) -> Reply<super::graph::View> {
    Ok(Json(super::graph::build(&ui).await?))
}

pub async fn job_runs(State(ui): Shared, Query(q): Query<PageQuery>) -> Reply<Paged<runs::Runs>> {
    Ok(Json(runs::runs(&ui.tables, q.offset, q.limit(20)).await?))
}

pub async fn updates(State(ui): Shared, Query(q): Query<PageQuery>) -> Reply<Paged<runs::Updates>> {
    let running = super::live::run_holder(&ui.settings.state_dir).is_some();
    Ok(Json(
        runs::updates(&ui.tables, None, q.offset, q.limit(20), running).await?,
    ))
}

#[derive(Debug, Serialize)]
pub struct TableItem {
    name: String,
    qualified: String,
    rows: Option<u64>,
    version: i64,
    changed: Option<DateTime<Utc>>,
}

pub async fn table_list(State(ui): Shared) -> Reply<Value> {
    let mut out = Vec::new();
    for found in crate::sql::list_tables(ui.tables.warehouse())? {
        let Ok(stats) = ui.tables.stats(&found.name).await else {
            continue;
        };
        out.push(TableItem {
            qualified: ui.tables.warehouse().qualified(&found.name),
            name: found.name.to_string(),
            rows: stats.rows,
            version: stats.version,
            changed: stats.changed,
        });
    }
    Ok(Json(json!({ "tables": out })))
}

/// The quarantine table of `name`: itself if it is one, the table its pipeline names,
/// or `quarantine.<table>` when there is one.
fn quarantine_of(ui: &Ui, name: &TableName) -> Option<TableName> {
    if name.schema == "quarantine" {
        return Some(name.clone());
    }
    let q = match ui.dataset(name).and_then(|d| d.quarantine()) {
        Some(q) => q.table_name(),
        None => TableName::new("quarantine", &name.table),
    };
    ui.tables.warehouse().has_table(&q).then_some(q)
}

pub async fn table(State(ui): Shared, Path(name): Path<String>) -> Reply<Value> {
    let name = ui.table_name(&name)?;
    let stats = ui.tables.stats(&name).await?;
    let table = ui.tables.open(&name).await?;
    let snapshot = table.snapshot().map_err(|e| ApiError::delta(&name, e))?;
    let schema: Vec<Value> = snapshot
        .schema()
        .fields()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
        .collect();
    let metadata = snapshot.metadata();
    let properties: BTreeMap<String, String> = metadata
        .configuration()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let dataset = ui.dataset(&name);
    Ok(Json(json!({
        "name": name.to_string(),
        "qualified": ui.tables.warehouse().qualified(&name),
        "kind": dataset.as_ref().map(|d| d.kind.label()).unwrap_or("table"),
        "description": metadata.description(),
        "version": stats.version,
        "rows": stats.rows,
        "files": stats.files,
        "bytes": stats.bytes,
        "changed": stats.changed,
        "schema": schema,
        "partition_columns": metadata.partition_columns(),
        "properties": properties,
        "quarantine": quarantine_of(&ui, &name).map(|q| q.to_string()),
    })))
}

pub async fn history(
    State(ui): Shared,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Reply<Value> {
    let name = ui.table_name(&name)?;
    let latest = ui
        .tables
        .version(&name)
        .ok_or_else(|| ApiError::NotFound(format!("there is no table {name}")))?;
    let limit = q.limit(20) as i64;
    let newest = latest - q.offset as i64;
    let versions = if newest < 0 {
        Vec::new()
    } else {
        ui.tables.history(&name, newest, limit)
    };
    Ok(Json(json!({
        "total": latest + 1,
        "offset": q.offset,
        "limit": limit,
        "versions": versions,
    })))
}

/// A page of rows (query parameters are not flattened: serde's flatten reads numbers
/// of a query string as text).
#[derive(Debug, Deserialize)]
pub struct RowsQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// A version of the table's history (time travel); the latest by default.
    version: Option<i64>,
}

pub async fn rows(
    State(ui): Shared,
    Path(name): Path<String>,
    Query(q): Query<RowsQuery>,
) -> Reply<Value> {
    let name = ui.table_name(&name)?;
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let page = ui.tables.rows(&name, q.offset, limit, q.version).await?;
    Ok(Json(json!({
        "columns": page.columns,
        "rows": page.rows,
        "offset": q.offset,
        "limit": limit,
        "total": page.total,
        "version": page.version,
    })))
}

pub async fn expectations(State(ui): Shared, Path(name): Path<String>) -> Reply<Value> {
    let name = ui.table_name(&name)?;
    let full = ui.tables.warehouse().qualified(&name);
    let flows = runs::recent_flows(&ui.tables, Some(&full), 200).await?;
    let updates: Vec<Value> = flows
        .into_iter()
        .filter(|(_, f)| !f.expectations.is_empty())
        .map(|(update, f)| {
            json!({
                "update_id": update,
                "timestamp": f.end,
                "flow": f.flow,
                "expectations": f.expectations,
            })
        })
        .collect();
    Ok(Json(json!({ "updates": updates })))
}

#[derive(Debug, Deserialize)]
pub struct SamplesQuery {
    samples: Option<usize>,
}

pub async fn quarantine(
    State(ui): Shared,
    Path(name): Path<String>,
    Query(q): Query<SamplesQuery>,
) -> Reply<Value> {
    use deltalake::datafusion::functions_aggregate::expr_fn::count;
    use deltalake::datafusion::prelude::{col, lit};
    let name = ui.table_name(&name)?;
    let Some(qname) = quarantine_of(&ui, &name) else {
        return Ok(Json(json!({ "table": null, "reasons": [] })));
    };
    let samples = q.samples.unwrap_or(3).min(20);
    let table = ui.tables.open(&qname).await?;
    let frame = crate::sql::table_frame(&table).await?;
    let e = |e| ApiError::from(SqlError::from(e));
    let grouped = frame
        .clone()
        .aggregate(vec![col("reason")], vec![count(lit(1)).alias("rows")])
        .map_err(e)?;
    let total_reasons = grouped.clone().count().await.map_err(e)?;
    let top = grouped
        .sort(vec![
            col("rows").sort(false, true),
            col("reason").sort(true, true),
        ])
        .map_err(e)?
        .limit(0, Some(MAX_REASONS))
        .map_err(e)?
        .collect()
        .await
        .map_err(e)?;
    let mut reasons = Vec::new();
    for row in tables::text_rows(&top) {
        let reason = row.first().cloned().flatten();
        let rows: u64 = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let matching = match &reason {
            Some(r) => col("reason").eq(lit(r.clone())),
            None => col("reason").is_null(),
        };
        let sample = frame
            .clone()
            .filter(matching)
            .map_err(e)?
            .limit(0, Some(samples))
            .map_err(e)?
            .collect()
            .await
            .map_err(e)?;
        let columns: Vec<String> = sample
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            })
            .unwrap_or_default();
        let samples: Vec<BTreeMap<String, Option<String>>> = tables::text_rows(&sample)
            .into_iter()
            .map(|values| columns.iter().cloned().zip(values).collect())
            .collect();
        reasons.push(json!({ "reason": reason, "rows": rows, "samples": samples }));
    }
    Ok(Json(json!({
        "table": qname.to_string(),
        "reasons": reasons,
        "total_reasons": total_reasons,
    })))
}

#[derive(Debug, Deserialize)]
pub struct SqlRequest {
    sql: String,
}

/// A read-only query over the catalog, as `medallion sql` runs it; at most
/// [`SQL_ROWS`] rows are read and shown.
pub async fn sql(State(ui): Shared, Json(request): Json<SqlRequest>) -> Reply<Value> {
    use futures::StreamExt;
    if request.sql.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "the query is empty: write a SELECT".into(),
        ));
    }
    let bad = |e: SqlError| match e {
        SqlError::DataFusion(d) => ApiError::BadRequest(format!("SQL failed: {d}")),
        other => ApiError::from(other),
    };
    let ctx = crate::sql::catalog_session(ui.tables.warehouse()).await?;
    let mut stream = crate::sql::stream_read_only(&ctx, &request.sql)
        .await
        .map_err(bad)?;
    let columns: Vec<String> = stream
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let (mut batches, mut rows, mut truncated) = (Vec::new(), 0usize, false);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| bad(SqlError::from(e)))?;
        if rows + batch.num_rows() > SQL_ROWS {
            batches.push(batch.slice(0, SQL_ROWS - rows));
            truncated = true;
            break;
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    Ok(Json(json!({
        "columns": columns,
        "rows": tables::text_rows(&batches),
        "truncated": truncated,
        "limit": SQL_ROWS,
    })))
}

pub async fn metrics(State(ui): Shared) -> Reply<Value> {
    let flows = runs::recent_flows(&ui.tables, None, 500).await?;
    let mut throughput: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, f) in flows {
        let (Some(end), true) = (f.end, f.elapsed_ms > 0 && f.rows_read > 0) else {
            continue;
        };
        throughput.entry(f.flow.clone()).or_default().push(json!({
            "t": end.timestamp_millis() as f64 / 1000.0,
            "rows_per_second": f.rows_read as f64 * 1000.0 / f.elapsed_ms as f64,
        }));
    }
    let (freshness, note) = super::freshness::series(&ui).await?;
    Ok(Json(json!({
        "throughput": throughput
            .into_iter()
            .map(|(flow, points)| json!({"flow": flow, "points": points}))
            .collect::<Vec<_>>(),
        "freshness": freshness,
        "freshness_note": note,
    })))
}

/// Server-sent events: `change` at once, then whenever a table gets a commit or a run
/// starts or ends (checked every 500 ms).
pub async fn live(
    State(ui): Shared,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let stream = futures::stream::unfold((ui, None::<String>), |(ui, last)| async move {
        loop {
            if last.is_some() {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            let probe = ui.clone();
            let now = tokio::task::spawn_blocking(move || {
                super::live::fingerprint(&probe.tables, &probe.settings.state_dir)
            })
            .await
            .unwrap_or_default();
            if last.as_ref() != Some(&now) {
                let event = Event::default()
                    .event("change")
                    .data(json!({ "fingerprint": now }).to_string());
                return Some((Ok(event), (ui, Some(now))));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

pub async fn unknown_api() -> ApiError {
    ApiError::NotFound(
        "no such API: see `GET /api/overview`, `/api/graph`, `/api/runs`, `/api/updates`, `/api/tables`".into(),
    )
}
