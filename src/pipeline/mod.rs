//! Declarative pipelines: streaming tables, materialized views, temporary views, flows
//! and expectations, declared in the SQL of Databricks Lakeflow Declarative Pipelines
//! (DLT) and Apache Spark Declarative Pipelines. `../shared/pipelines.md` in the
//! project's history, and README.md, describe the language.
//!
//! A pipeline goes: its SQL files ([`parse`]) → the dataflow graph ([`graph`]) → a plan
//! of every query against the schemas ([`run::prepare`], which is `dry-run`) → an update
//! that runs each flow exactly once ([`run`]), recorded in the event log ([`events`]).

pub mod events;
pub mod expect;
pub mod files_progress;
pub mod from_json;
pub mod functions;
pub mod graph;
pub mod parse;
pub mod plan;
pub mod read_files;
pub mod run;
pub mod types;

use std::collections::BTreeSet;
use std::time::Instant;

use crate::bundle::pipeline::LibraryError;
use crate::bundle::{PipelineSpec, Settings};
use crate::delta::DeltaError;
use crate::progress::{TaskState, TaskSummary};

pub use graph::Graph;
pub use run::{FlowReport, Selection};

/// Rows per batch when nothing else says.
pub const DEFAULT_BATCH_ROWS: usize = 100_000;

/// Errors of a pipeline: in its SQL (located), or while it runs (naming the flow).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] parse::ParseError),
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error(transparent)]
    Sql(#[from] crate::sql::SqlError),
    #[error(transparent)]
    Stream(#[from] crate::stream::StreamError),
    #[error(transparent)]
    Progress(#[from] files_progress::ProgressError),
    #[error(transparent)]
    Files(#[from] read_files::ReadFilesError),
    #[error("Delta table {table}: {source}")]
    Table {
        table: String,
        source: deltalake::DeltaTableError,
    },
    #[error("{context}: {source}")]
    DataFusion {
        context: String,
        source: deltalake::datafusion::error::DataFusionError,
    },
    #[error("flow `{flow}`: {source}")]
    Query {
        flow: String,
        source: deltalake::datafusion::error::DataFusionError,
    },
    #[error("cannot write: {reason}")]
    Write { reason: String },
    #[error("flow `{flow}` failed expectation `{expectation}` (ON VIOLATION FAIL UPDATE) on the row {row}. Nothing of this batch was committed. Fix the source data, or relax the expectation")]
    FailUpdate {
        flow: String,
        expectation: String,
        row: String,
    },
    #[error("the schema of {table} would change: {changes}. Only new nullable columns are added by themselves; run with --full-refresh {table} to recompute it with the new schema")]
    SchemaChange { table: String, changes: String },
    #[error("flow `{flow}` streams from {source_table}, but its version {version} {what}: a stream reads appends only. Recompute what depends on it with --full-refresh {target}")]
    SourceRewritten {
        flow: String,
        source_table: String,
        version: i64,
        what: &'static str,
        target: String,
    },
    #[error("the pipeline has no dataset `{name}`. Its datasets are: {known}")]
    UnknownDataset { name: String, known: String },
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error("the bundle has no pipeline `{key}`; its pipelines are: {known}")]
    UnknownPipeline { key: String, known: String },
}

/// The pipeline to use: the one named, or the bundle's only one.
pub fn select<'a>(
    settings: &'a Settings,
    key: Option<&str>,
) -> Result<&'a PipelineSpec, PipelineError> {
    let known = || {
        settings
            .pipelines
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    match key {
        Some(k) => settings
            .pipelines
            .get(k)
            .ok_or_else(|| PipelineError::UnknownPipeline {
                key: k.into(),
                known: known(),
            }),
        None => match settings.pipelines.values().collect::<Vec<_>>().as_slice() {
            [one] => Ok(one),
            _ => Err(PipelineError::UnknownPipeline {
                key: "(none given)".into(),
                known: if settings.pipelines.is_empty() {
                    "none: declare one under resources.pipelines".into()
                } else {
                    format!("{}; name one", known())
                },
            }),
        },
    }
}

/// Reads, substitutes and parses a pipeline's SQL files, and builds its graph.
pub fn load(pipeline: &PipelineSpec) -> Result<Graph, PipelineError> {
    let mut files = Vec::new();
    for (i, path) in pipeline.sql_files()?.iter().enumerate() {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            file: shown.clone(),
            source,
        })?;
        let text = parse::substitute(&shown, &text, &pipeline.configuration)?;
        files.push(graph::ParsedFile {
            definitions: parse::parse_file(&shown, i, &text)?,
            file: shown,
        });
    }
    Ok(Graph::build(pipeline, files)?)
}

/// A name usable as a file name (for progress copies), keeping it readable.
pub fn safe_file_name(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let readable: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..6]);
    format!("{readable}-{hash}")
}

/// What an update did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpdateReport {
    pub pipeline: String,
    pub update_id: String,
    pub flows: Vec<FlowReport>,
}

impl UpdateReport {
    /// Whether a flow failed.
    pub fn failed(&self) -> Option<&FlowReport> {
        self.flows.iter().find(|f| f.state == "FAILED")
    }

    /// The update as one task's summary (for jobs, `job_runs` and the run summary): the
    /// totals, and a summary per flow.
    pub fn summary(&self, task: &str, elapsed: std::time::Duration) -> TaskSummary {
        let mut s = TaskSummary::new(task);
        for f in &self.flows {
            let flow = f.summary();
            s.rows_read += flow.rows_read;
            s.bytes_read += flow.bytes_read;
            s.rows_written += flow.rows_written;
            s.rows_quarantined += flow.rows_quarantined;
            s.rows_dropped += flow.rows_dropped;
            s.versions.extend(flow.versions.iter().cloned());
            s.flows.push(flow);
        }
        if let Some(f) = self.failed() {
            s.state = TaskState::Failed;
            s.notes.push(format!(
                "flow `{}` failed: {}",
                f.flow,
                f.error.clone().unwrap_or_default()
            ));
        }
        s.elapsed = elapsed;
        s
    }
}

/// Runs one update of `pipeline`: every selected flow in graph order, each exactly once.
/// A flow that fails stops the flows that read its dataset; the others go on. Every
/// step is in the event log.
pub async fn update(
    settings: &Settings,
    pipeline: &PipelineSpec,
    selection: &Selection,
) -> Result<UpdateReport, PipelineError> {
    let graph = load(pipeline)?;
    let prepared = run::prepare(&graph, settings).await?;
    let update_id = uuid::Uuid::now_v7().to_string();
    let catalog_root = settings
        .warehouse
        .catalog_path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let warehouse = crate::catalog::Warehouse::new(&catalog_root, &pipeline.catalog);
    let mut log =
        events::EventLog::open(&warehouse, &pipeline.key, &pipeline.name, &update_id).await?;
    log.write(&[events::Event {
        details: Some(serde_json::json!({
            "full_refresh": selection.full_refresh_all,
            "full_refresh_selection": selection.full_refresh,
            "refresh_selection": selection.refresh,
        })),
        ..events::Event::new(
            "create_update",
            format!("update {update_id} of pipeline `{}` started", pipeline.name),
        )
    }])
    .await?;
    let refresh = run::selected_flows(&graph, selection)?;
    let mut full: BTreeSet<graph::FullName> = BTreeSet::new();
    for name in &selection.full_refresh {
        full.insert(run::resolve_named(&graph, name)?);
    }
    let mut runner = run::Update {
        settings,
        graph: &graph,
        prepared,
        update_id: update_id.clone(),
        batch_rows: settings.batch_rows,
    };
    for d in graph.datasets.values() {
        if d.kind != graph::DatasetKind::TemporaryView
            && (selection.full_refresh_all || full.contains(&d.name))
        {
            runner.forget(d)?;
            log.write(&[events::Event {
                dataset: Some(d.name.to_string()),
                ..events::Event::new(
                    "full_refresh",
                    format!("{} emptied for a full refresh", d.name),
                )
            }])
            .await?;
        }
    }
    let started = Instant::now();
    let mut reports: Vec<FlowReport> = Vec::new();
    let mut failed: BTreeSet<graph::FullName> = BTreeSet::new();
    for &i in &graph.order {
        let flow = &graph.flows[i];
        let upstream = graph.upstream(&flow.inputs);
        let mut report = if !refresh.is_empty() && !refresh.contains(&flow.target) {
            let mut r = skipped(flow, "not selected by --refresh");
            r.state = "SKIPPED";
            r
        } else if let Some(up) = upstream.iter().find(|u| failed.contains(*u)) {
            failed.insert(flow.target.clone());
            skipped(flow, &format!("skipped: upstream {up} failed"))
        } else {
            match runner.run_flow(i).await {
                Ok(r) => r,
                Err(e) => {
                    failed.insert(flow.target.clone());
                    let mut r = skipped(flow, "");
                    r.notes.clear();
                    r.state = "FAILED";
                    r.error = Some(crate::secrets::mask(&e.to_string()).into_owned());
                    r
                }
            }
        };
        if report.state == "COMPLETED" && !report.reconciles() {
            report
                .notes
                .push("the counts do not add up: please report this".into());
        }
        log.write(&[flow_event(&report)]).await?;
        reports.push(report);
    }
    let report = UpdateReport {
        pipeline: pipeline.name.clone(),
        update_id,
        flows: reports,
    };
    let state = if report.failed().is_some() {
        "FAILED"
    } else {
        "COMPLETED"
    };
    log.write(&[events::Event {
        level: if state == "FAILED" { events::ERROR } else { events::INFO },
        details: Some(serde_json::json!({ "state": state, "elapsed_ms": started.elapsed().as_millis() as u64 })),
        error: report.failed().and_then(|f| f.error.clone()),
        ..events::Event::new("update_progress", format!("update {} is {state}", report.update_id))
    }])
    .await?;
    Ok(report)
}

/// [`update`] under the target's run lock, so that no other run of the target (a job,
/// the scheduler, another update) writes at the same time.
pub async fn run_locked(
    settings: &Settings,
    pipeline: &PipelineSpec,
    selection: &Selection,
) -> Result<UpdateReport, PipelineError> {
    use crate::lock::{run_lock_path, FileLock, RUN_LOCK_WAIT};
    let path = run_lock_path(&settings.state_dir);
    let _lock = tokio::task::spawn_blocking(move || FileLock::acquire(&path, RUN_LOCK_WAIT))
        .await
        .expect("the lock task does not panic")?;
    update(settings, pipeline, selection).await
}

fn skipped(flow: &graph::Flow, note: &str) -> FlowReport {
    let mut r = FlowReport::new(flow);
    r.state = "SKIPPED";
    if !note.is_empty() {
        r.notes.push(note.into());
    }
    r
}

/// The `flow_progress` event of a flow: its counts and expectation metrics.
fn flow_event(r: &FlowReport) -> events::Event {
    events::Event {
        flow: Some(r.flow.clone()),
        dataset: Some(r.dataset.clone()),
        level: match r.state {
            "FAILED" => events::ERROR,
            _ if r.expectations.iter().any(|m| m.failed_records > 0) => events::WARN,
            _ => events::INFO,
        },
        details: Some(serde_json::json!({
            "flow_progress": {
                "status": r.state,
                "metrics": {
                    "num_input_rows": r.rows_read,
                    "num_output_rows": r.rows_written,
                    "dropped_records": r.rows_dropped,
                    "quarantined_records": r.rows_quarantined,
                    "duplicate_records": r.duplicates,
                    "filtered_records": r.rows_filtered,
                    "added_records": r.rows_expanded,
                    "elapsed_ms": r.elapsed_ms,
                },
                "data_quality": {
                    "dropped_records": r.rows_dropped,
                    "expectations": r.expectations,
                },
                "notes": r.notes,
            }
        })),
        error: r.error.clone(),
        ..events::Event::new("flow_progress", format!("flow `{}` is {}", r.flow, r.state))
    }
}
