//! Declarative pipelines: streaming tables, materialized views, temporary views, flows
//! and expectations, declared in the SQL of Databricks Lakeflow Declarative Pipelines
//! (DLT) and Apache Spark Declarative Pipelines. `../shared/pipelines.md` in the
//! project's history, and README.md, describe the language.
//!
//! A pipeline goes: its SQL files ([`parse`]) → the dataflow graph ([`graph`]) → a plan
//! of every query against the schemas ([`run::prepare`], which is `dry-run`) → an update
//! that runs each flow exactly once ([`run`]), recorded in the event log ([`events`]).

pub mod cdc;
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
pub mod shared_views;
pub mod types;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use tokio::task::JoinSet;

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
    #[error(transparent)]
    Cdc(#[from] cdc::CdcError),
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

/// Runs one update of `pipeline`: every selected flow exactly once, each as soon as the
/// flows that write what it reads have finished, as many at a time as there are cores
/// (the flows into one table run one after another, in graph order). A flow that fails
/// stops the flows that read its dataset; the others go on. Every step is in the event
/// log, and the report lists the flows in graph order.
pub async fn update(
    settings: &Settings,
    pipeline: &PipelineSpec,
    selection: &Selection,
) -> Result<UpdateReport, PipelineError> {
    let begun = Instant::now();
    let graph = load(pipeline)?;
    tracing::debug!(elapsed = ?begun.elapsed(), "pipeline: SQL loaded");
    let prepared = run::prepare(&graph, settings).await?;
    tracing::debug!(elapsed = ?begun.elapsed(), "pipeline: planned");
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
    tracing::debug!(elapsed = ?begun.elapsed(), "pipeline: event log opened");
    let refresh = run::selected_flows(&graph, selection)?;
    let mut full: BTreeSet<graph::FullName> = BTreeSet::new();
    for name in &selection.full_refresh {
        full.insert(run::resolve_named(&graph, name)?);
    }
    let graph = Arc::new(graph);
    let runner = Arc::new(run::Update {
        settings: Arc::new(settings.clone()),
        graph: graph.clone(),
        prepared,
        update_id: update_id.clone(),
        batch_rows: settings.batch_rows,
        views: Default::default(),
        reads: Default::default(),
    });
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
    let mut flows = Flows::new(&graph);
    let mut running: JoinSet<(usize, Result<FlowReport, PipelineError>)> = JoinSet::new();
    let most = std::thread::available_parallelism().map_or(2, |n| n.get());
    loop {
        // Start each flow whose inputs are complete, in graph order; a flow that is
        // skipped completes at once and may let the next ones start.
        while running.len() < most {
            let Some(i) = flows.next_ready() else { break };
            let flow = &graph.flows[i];
            let upstream = graph.upstream(&flow.inputs);
            if !refresh.is_empty() && !refresh.contains(&flow.target) {
                let mut r = skipped(flow, "not selected by --refresh");
                r.state = "SKIPPED";
                flows.finish(i, r, &mut log).await?;
            } else if let Some(up) = upstream.iter().find(|u| flows.failed.contains(*u)) {
                let r = skipped(flow, &format!("skipped: upstream {up} failed"));
                flows.failed.insert(flow.target.clone());
                flows.finish(i, r, &mut log).await?;
            } else {
                let runner = runner.clone();
                running.spawn(async move {
                    let run = std::panic::AssertUnwindSafe(runner.run_flow(i)).catch_unwind();
                    let result = run.await.unwrap_or_else(|panic| {
                        Err(PipelineError::Write {
                            reason: format!(
                                "the flow panicked: {}",
                                crate::scheduler::panic_message(&*panic)
                            ),
                        })
                    });
                    (i, result)
                });
            }
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let (i, result) = done.expect("flows are never cancelled, and a panic is caught");
        let flow = &graph.flows[i];
        let mut report = match result {
            Ok(r) => r,
            Err(e) => {
                flows.failed.insert(flow.target.clone());
                let mut r = skipped(flow, "");
                r.notes.clear();
                r.state = "FAILED";
                r.error = Some(crate::secrets::mask(&e.to_string()).into_owned());
                r
            }
        };
        if report.state == "COMPLETED" && !report.reconciles() {
            report
                .notes
                .push("the counts do not add up: please report this".into());
        }
        flows.finish(i, report, &mut log).await?;
        tracing::debug!(elapsed = ?begun.elapsed(), flow = %flow.name, "pipeline: flow done");
    }
    let reports = flows.reports();
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
    tracing::debug!(elapsed = ?begun.elapsed(), "pipeline: update recorded");
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

/// The flows of one update: which have started, and the reports of those that are done.
struct Flows<'g> {
    graph: &'g graph::Graph,
    started: BTreeSet<usize>,
    done: std::collections::BTreeMap<usize, FlowReport>,
    failed: BTreeSet<graph::FullName>,
}

impl<'g> Flows<'g> {
    fn new(graph: &'g graph::Graph) -> Self {
        Flows {
            graph,
            started: BTreeSet::new(),
            done: Default::default(),
            failed: BTreeSet::new(),
        }
    }

    /// The first flow, in graph order, that has not started and whose inputs are
    /// complete: no flow before it that is still to finish writes a dataset it reads, or
    /// its own target (the flows into one table run in order).
    fn next_ready(&mut self) -> Option<usize> {
        let order = &self.graph.order;
        let ready = order.iter().enumerate().find(|(pos, i)| {
            if self.started.contains(i) {
                return false;
            }
            let flow = &self.graph.flows[**i];
            let upstream = self.graph.upstream(&flow.inputs);
            !order[..*pos].iter().any(|j| {
                let before = &self.graph.flows[*j].target;
                !self.done.contains_key(j) && (before == &flow.target || upstream.contains(before))
            })
        });
        let i = *ready?.1;
        self.started.insert(i);
        Some(i)
    }

    /// Records a flow's end in the event log.
    async fn finish(
        &mut self,
        i: usize,
        report: FlowReport,
        log: &mut events::EventLog,
    ) -> Result<(), PipelineError> {
        log.write(&[flow_event(&report)]).await?;
        self.done.insert(i, report);
        Ok(())
    }

    /// The reports, in graph order.
    fn reports(mut self) -> Vec<FlowReport> {
        self.graph
            .order
            .iter()
            .filter_map(|i| self.done.remove(i))
            .collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(sql: &str) -> graph::Graph {
        let spec = PipelineSpec {
            key: "p".into(),
            name: "p".into(),
            catalog: "dev".into(),
            schema: "s".into(),
            libraries: vec![],
            configuration: Default::default(),
            sinks: Default::default(),
            continuous: false,
            file: "medallion.yml".into(),
        };
        let files = vec![graph::ParsedFile {
            definitions: parse::parse_file("t.sql", 0, sql).unwrap(),
            file: "t.sql".into(),
        }];
        graph::Graph::build(&spec, files).unwrap()
    }

    fn name(g: &graph::Graph, i: usize) -> String {
        g.flows[i].name.clone()
    }

    /// Independent flows start together; a flow waits for those that write what it
    /// reads, and for the flows before it into the same table.
    #[test]
    fn flows_start_when_what_they_read_is_complete() {
        let g = graph(
            "CREATE STREAMING TABLE a AS SELECT * FROM STREAM(ext.x);
             CREATE STREAMING TABLE b AS SELECT * FROM STREAM(ext.y);
             CREATE MATERIALIZED VIEW c AS SELECT * FROM a JOIN b ON a.k = b.k;
             CREATE STREAMING TABLE u;
             CREATE FLOW u1 AS INSERT INTO u BY NAME SELECT * FROM STREAM(ext.x);
             CREATE FLOW u2 AS INSERT INTO u BY NAME SELECT * FROM STREAM(ext.y);",
        );
        let mut flows = Flows::new(&g);
        let mut first = vec![];
        while let Some(i) = flows.next_ready() {
            first.push(name(&g, i));
        }
        first.sort();
        assert_eq!(first, ["a", "b", "u1"], "c waits for a and b, u2 for u1");
        let done = |flows: &mut Flows, n: &str| {
            let i = (0..g.flows.len()).find(|&i| name(&g, i) == n).unwrap();
            flows.done.insert(i, skipped(&g.flows[i], ""));
        };
        done(&mut flows, "a");
        assert_eq!(flows.next_ready(), None, "c still waits for b");
        done(&mut flows, "u1");
        assert_eq!(
            flows.next_ready().map(|i| name(&g, i)).as_deref(),
            Some("u2")
        );
        done(&mut flows, "b");
        assert_eq!(
            flows.next_ready().map(|i| name(&g, i)).as_deref(),
            Some("c")
        );
        assert_eq!(flows.next_ready(), None);
    }
}
