//! Running a pipeline update: every flow in graph order, each exactly once.
//!
//! A streaming table's flow reads, for each stream it has, what is new since the version
//! (or the file position) recorded in the target, in pieces of `batch_rows` rows. Each
//! piece is run through the flow's query with its static inputs read as they stand, then
//! through the dataset's expectations; the rows and the progress (a `txn` per source,
//! app id `<flow>/<source>`) go into one Delta commit. Quarantined rows are committed just
//! before, with the same `txn`, so that a rerun after a crash between the two skips them.
//!
//! A materialized view is rewritten, in one overwrite commit that records the version of
//! each input, when any input has changed since; otherwise it is left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{new_null_array, Array, ArrayRef, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::logical_expr::{col, lit, Expr};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use deltalake::DeltaTable;
use serde::Serialize;

use super::cdc::store::Changes;
use super::expect::{self, Metric};
use super::files_progress::{FilesProgress, Step, COMMIT_INFO_KEY};
use super::graph::{Dataset, DatasetKind, Flow, FlowKind, FullName, Graph, Input, InputSource};
use super::parse::{Loc, QueryDef, TableDef};
use super::plan::{self, InputData, PlanError};
use super::read_files::{self, FileReader, ReadFilesOptions};
use super::shared_views::{SharedReads, SharedViews, ViewRows};
use super::PipelineError;
use crate::bundle::Settings;
use crate::delta::{DeltaError, DeltaSink, TableSpec};
use crate::progress::{TaskState, TaskSummary};
use crate::quarantine::{self, PipelineReject};

/// What the run of one flow did.
#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    pub flow: String,
    pub dataset: String,
    /// `COMPLETED`, `FAILED`, `SKIPPED` (not selected, or an upstream flow failed) or
    /// `UP_TO_DATE` (a materialized view whose inputs did not change).
    pub state: &'static str,
    pub rows_read: u64,
    /// Bytes of input read: Parquet bytes of the new commits of a stream, landing-file
    /// bytes of `read_files`, the input tables' data files for a materialized view.
    pub bytes_read: u64,
    pub rows_written: u64,
    /// Rows dropped by DROP ROW expectations (they are in the quarantine).
    pub rows_dropped: u64,
    /// Input lines that did not parse (they are in the quarantine).
    pub rows_quarantined: u64,
    /// Rows not written because their primary key was already there.
    pub duplicates: u64,
    /// Rows the query itself left out (a WHERE, an inner JOIN without a match).
    pub rows_filtered: u64,
    /// Rows the query itself added (a join that matched a row more than once).
    pub rows_expanded: u64,
    pub expectations: Vec<Metric>,
    /// Versions committed, by table.
    pub versions: Vec<(String, i64)>,
    pub notes: Vec<String>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
    /// What an AUTO CDC flow did to its target.
    pub cdc: Option<crate::pipeline::cdc::Applied>,
}

impl FlowReport {
    /// The flow as a task's summary: rows quarantined are those dropped by expectations
    /// and those that did not parse; rows dropped are duplicates of a primary key.
    pub fn summary(&self) -> TaskSummary {
        let mut s = TaskSummary::new(&self.flow);
        s.state = match self.state {
            "FAILED" => TaskState::Failed,
            "SKIPPED" => TaskState::Skipped,
            _ => TaskState::Succeeded,
        };
        s.rows_read = self.rows_read;
        s.bytes_read = self.bytes_read;
        s.rows_written = self.rows_written;
        s.rows_quarantined = self.rows_dropped + self.rows_quarantined;
        s.rows_dropped = self.duplicates;
        s.versions = self.versions.clone();
        s.elapsed = std::time::Duration::from_millis(self.elapsed_ms);
        let mut filtered = String::new();
        if self.rows_filtered > 0 {
            filtered.push_str(&format!(" + {} filtered by the query", self.rows_filtered));
        }
        if self.rows_expanded > 0 {
            filtered.push_str(&format!(" - {} added by the query", self.rows_expanded));
        }
        s.notes.push(format!(
            "flow {} → {}: {} ({} read = {} written + {} dropped by expectations + {} unparseable + {} duplicates{filtered})",
            self.flow,
            self.dataset,
            self.state,
            self.rows_read,
            self.rows_written,
            self.rows_dropped,
            self.rows_quarantined,
            self.duplicates,
        ));
        let failing: Vec<&Metric> = self
            .expectations
            .iter()
            .filter(|m| m.failed_records > 0)
            .collect();
        for m in &failing {
            s.notes.push(format!(
                "expectation {}: {} passed, {} failed",
                m.name, m.passed_records, m.failed_records
            ));
        }
        if failing.is_empty() && !self.expectations.is_empty() {
            s.notes.push(format!(
                "{} expectation(s), every row passed",
                self.expectations.len()
            ));
        }
        s.notes.extend(self.notes.iter().cloned());
        if let Some(e) = &self.error {
            s.notes.push(e.clone());
        }
        s
    }

    pub(crate) fn new(flow: &Flow) -> Self {
        FlowReport {
            flow: flow.name.clone(),
            dataset: flow.target.to_string(),
            state: "COMPLETED",
            rows_read: 0,
            bytes_read: 0,
            rows_written: 0,
            rows_dropped: 0,
            rows_quarantined: 0,
            duplicates: 0,
            rows_filtered: 0,
            rows_expanded: 0,
            expectations: Vec::new(),
            versions: Vec::new(),
            notes: Vec::new(),
            error: None,
            elapsed_ms: 0,
            cdc: None,
        }
    }

    /// Whether every row read is accounted for.
    /// Whether every row is accounted for: what the query gave (the rows read, less those
    /// it filtered, plus those it added) is written, dropped by an expectation, or a
    /// duplicate; and every line read that did not parse is in the quarantine.
    pub fn reconciles(&self) -> bool {
        self.rows_read + self.rows_expanded
            == self.rows_written
                + self.rows_dropped
                + self.rows_quarantined
                + self.duplicates
                + self.rows_filtered
            || self.state != "COMPLETED"
    }

    fn add_metrics(&mut self, metrics: Vec<Metric>) {
        for m in metrics {
            match self.expectations.iter_mut().find(|e| e.name == m.name) {
                Some(e) => {
                    e.passed_records += m.passed_records;
                    e.failed_records += m.failed_records;
                }
                None => self.expectations.push(m),
            }
        }
    }
}

/// Which datasets an update refreshes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only the flows into these datasets run (`--refresh`); all when empty.
    pub refresh: Vec<String>,
    /// These datasets are emptied and recomputed (`--full-refresh`).
    pub full_refresh: Vec<String>,
    /// Every dataset is emptied and recomputed (`--full-refresh` alone, or the job
    /// task's `full_refresh: true`).
    pub full_refresh_all: bool,
}

/// What the planning of every flow found: the schema of each dataset and of each
/// `read_files` input.
#[derive(Debug, Default, Clone)]
pub struct Prepared {
    pub schemas: BTreeMap<FullName, SchemaRef>,
    pub files: BTreeMap<String, FilesInput>,
    /// Each AUTO CDC flow's clauses, resolved (by flow index).
    pub cdc: BTreeMap<usize, crate::pipeline::cdc::shape::Shape>,
}

/// What a streaming flow writes to: its target, the quarantine, and for an AUTO CDC
/// flow its event store.
pub struct Outputs {
    pub sink: DeltaSink,
    pub quarantine: DeltaSink,
    pub store: Option<DeltaSink>,
}

/// A `read_files` input: its schema (with `_metadata`), options and folder.
#[derive(Debug, Clone)]
pub struct FilesInput {
    pub schema: SchemaRef,
    pub options: ReadFilesOptions,
    pub dir: PathBuf,
}

/// The folder relative `read_files` paths are taken from: the bundle's.
pub fn bundle_dir(settings: &Settings) -> PathBuf {
    settings
        .bundle_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// What the inputs of one batch read, and what the expectations of the temporary views
/// it reads found.
#[derive(Default)]
struct BatchInputs {
    /// Data for stream placeholders; the others read nothing.
    data: BTreeMap<String, InputData>,
    /// Each view with expectations, split: rows kept, rows dropped (they go to the
    /// quarantine of the flow's target), counts, and a FAIL UPDATE failure.
    views: Vec<expect::Split>,
    /// Lines of static `read_files` inputs that did not parse: the input's progress
    /// name, the file, and the reject.
    unparsed: Vec<(String, String, read_files::Reject)>,
    /// The name of the batch (its stream input and range of commits) when its views'
    /// rows may be shared with the other flows that read them.
    shared: Option<(String, Arc<SharedViews>)>,
    /// Static tables already opened: read at the version loaded, not opened again (a
    /// materialized view records the versions it read).
    tables: BTreeMap<FullName, DeltaTable>,
}

impl BatchInputs {
    fn with(placeholder: &str, data: InputData) -> Self {
        let mut b = BatchInputs::default();
        b.data.insert(placeholder.to_string(), data);
        b
    }
}

/// Registers what each input of `inputs` reads (views planned, recursively). Stream
/// inputs read what `data` holds for them, or nothing; with `run`, static inputs read
/// the tables as they stand (without, an empty table of their schema).
#[allow(clippy::too_many_arguments)]
async fn register_inputs(
    ctx: &SessionContext,
    graph: &Graph,
    settings: &Settings,
    prepared: &mut Prepared,
    inputs: &[Input],
    batch: &mut BatchInputs,
    run: bool,
) -> Result<(), PipelineError> {
    for input in inputs {
        register_input(ctx, graph, settings, prepared, input, batch, run).await?;
    }
    Ok(())
}

fn register_input<'a>(
    ctx: &'a SessionContext,
    graph: &'a Graph,
    settings: &'a Settings,
    prepared: &'a mut Prepared,
    input: &'a Input,
    batch: &'a mut BatchInputs,
    run: bool,
) -> futures::future::BoxFuture<'a, Result<(), PipelineError>> {
    Box::pin(async move {
        let df = |e| PipelineError::DataFusion {
            context: format!("{}:{}", input.file, input.loc.line),
            source: e,
        };
        if let Some(d) = batch.data.remove(&input.placeholder) {
            return plan::register(ctx, &input.placeholder, d).map_err(df);
        }
        let root = &settings.warehouse;
        match &input.source {
            InputSource::Dataset(name) => {
                let dataset = &graph.datasets[name];
                if let Some((query, view_inputs)) = &dataset.view {
                    let def = dataset.view_def.as_ref().expect("a view has its definition");
                    let shared = batch.shared.clone();
                    // The view's query over its own inputs, with its declared names.
                    let planned = async {
                        register_inputs(ctx, graph, settings, prepared, view_inputs, batch, run)
                            .await?;
                        let labels = plan::labels(graph, &graph.all_inputs(view_inputs));
                        let plan = plan::plan_query(ctx, &dataset.file, query, &labels).await?;
                        let plan = renamed(plan, &def.columns, &dataset.file, dataset.loc)?;
                        Ok::<_, PipelineError>((plan, labels))
                    };
                    if !run || def.expectations.is_empty() {
                        let (plan, _) = planned.await?;
                        return plan::register_view(ctx, &input.placeholder, plan).map_err(df);
                    }
                    // The view's rows are computed here, so that its expectations split
                    // them; the flow reads the rows kept. Another flow that reads the
                    // view through the same batch takes the same rows.
                    let compute = async {
                        let started = std::time::Instant::now();
                        let (plan, labels) = planned.await?;
                        tracing::debug!(view = %name, elapsed = ?started.elapsed(), "view planned");
                        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
                        let view = name.to_string();
                        let split =
                            split_rows(ctx, &dataset.file, &def.expectations, plan, &labels, &view, df)
                                .await?;
                        if let Some((expectation, row)) = &split.failure {
                            return Err(PipelineError::FailUpdate {
                                flow: format!("view {name}"),
                                expectation: expectation.clone(),
                                row: expect::rows_as_json(row).join(""),
                            });
                        }
                        tracing::debug!(view = %name, batch = ?shared.as_ref().map(|s| &s.0), rows = split.kept.iter().map(|b| b.num_rows()).sum::<usize>(), "view rows computed");
                        Ok::<ViewRows, PipelineError>(Arc::new((schema, split)))
                    };
                    let rows = match shared.clone() {
                        Some((key, views)) => views
                            .cell(&name.to_string(), &key)
                            .get_or_try_init(|| compute)
                            .await?
                            .clone(),
                        None => compute.await?,
                    };
                    let (schema, split) = rows.as_ref();
                    let kept = split.kept.clone();
                    batch.views.push(split.clone());
                    return plan::register(ctx, &input.placeholder, InputData::Batches(schema.clone(), kept))
                        .map_err(df);
                }
                let schema = match prepared.schemas.get(name) {
                    Some(s) => s.clone(),
                    None => existing_schema(settings, name).await?.ok_or_else(|| {
                        PipelineError::Plan(PlanError::at(
                            &dataset.file,
                            dataset.loc,
                            format!("`{name}` has no flow, no declared columns and no table yet"),
                            "give it columns, or a flow that writes it",
                        ))
                    })?,
                };
                let d = match (run && !input.stream, opened(settings, batch, name).await?) {
                    (true, Some(table)) => InputData::Table(provider(ctx, &table, name).await?),
                    _ => InputData::Empty(schema),
                };
                plan::register(ctx, &input.placeholder, d).map_err(df)
            }
            InputSource::External(name) => {
                let Some(table) = opened(settings, batch, name).await? else {
                    return Err(PipelineError::Plan(PlanError::at(
                        &input.file,
                        input.loc,
                        format!("table `{name}` does not exist, and the pipeline does not define it"),
                        format!("define it in the pipeline, create it first (another pipeline or job), or fix the name (tables live at {}/<catalog>/<schema>/<table>)", root.catalog_path().parent().unwrap_or(Path::new(".")).display()),
                    )));
                };
                let d = if run && !input.stream {
                    InputData::Table(provider(ctx, &table, name).await?)
                } else {
                    InputData::Empty(table_schema(&table, name)?)
                };
                plan::register(ctx, &input.placeholder, d).map_err(df)
            }
            InputSource::Files { path, options } => {
                let files = match prepared.files.get(&input.placeholder) {
                    Some(f) => f.clone(),
                    None => {
                        let (schema, options, dir) = plan::files_schema(
                            &input.file,
                            input,
                            path,
                            options,
                            &bundle_dir(settings),
                        )?;
                        let f = FilesInput {
                            schema,
                            options,
                            dir,
                        };
                        prepared.files.insert(input.placeholder.clone(), f.clone());
                        f
                    }
                };
                let d = if run && !input.stream {
                    let (batches, rejects) = read_all(&files)?;
                    let source = input.progress_name(&graph.pipeline.catalog);
                    batch.unparsed.extend(
                        rejects
                            .into_iter()
                            .map(|(file, r)| (source.clone(), file, r)),
                    );
                    InputData::Batches(files.schema.clone(), batches)
                } else {
                    InputData::Empty(files.schema.clone())
                };
                plan::register(ctx, &input.placeholder, d).map_err(df)
            }
            InputSource::Kafka { .. } => Err(PipelineError::Plan(PlanError::at(
                &input.file,
                input.loc,
                "read_kafka is not supported by this version of medallion",
                "ingest the topic with a kafka_to_delta job task and read its table with STREAM(schema.table)",
            ))),
        }
    })
}

/// The rows of `plan` split by `expectations` (of `dataset`, declared in `file`), with
/// `err` for a failure to run it.
async fn split_rows(
    ctx: &SessionContext,
    file: &str,
    expectations: &[super::parse::Expectation],
    plan: deltalake::datafusion::logical_expr::LogicalPlan,
    labels: &BTreeMap<String, String>,
    dataset: &str,
    err: impl Fn(deltalake::datafusion::error::DataFusionError) -> PipelineError,
) -> Result<expect::Split, PipelineError> {
    let plan = checked_plan(ctx, file, expectations, plan, labels).await?;
    let batches = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(&err)?
        .collect()
        .await
        .map_err(&err)?;
    Ok(expect::split(&batches, expectations, dataset))
}

/// Every row of every file of a static `read_files` (a materialized view's input).
/// A line of `file` that did not parse, as a quarantine row of `flow`.
fn unparsed_line(flow: &str, source: &str, file: &str, r: read_files::Reject) -> PipelineReject {
    PipelineReject {
        flow: flow.into(),
        source: source.into(),
        file: Some(file.into()),
        line: Some(r.line),
        source_version: None,
        raw: r.raw,
        raw_bytes: r.raw_bytes,
        reason: r.reason,
        expectations: None,
    }
    .cut()
}

/// Every row of a static `read_files` input, and the lines that did not parse (with
/// their file).
#[allow(clippy::type_complexity)]
fn read_all(
    files: &FilesInput,
) -> Result<(Vec<RecordBatch>, Vec<(String, read_files::Reject)>), PipelineError> {
    let listing = read_files::list(&files.dir, &files.options)?;
    let mut out = Vec::new();
    let mut rejects = Vec::new();
    for file in &listing.files {
        let mut reader = FileReader::open(file, data_schema(&files.schema), &files.options)?;
        while let Some(chunk) = reader.next_chunk(super::DEFAULT_BATCH_ROWS) {
            for r in chunk.rejects {
                tracing::warn!(file = %file.name, line = r.line, "skipped: {}", r.reason);
                rejects.push((file.name.clone(), r));
            }
            out.push(chunk.batch);
        }
    }
    Ok((out, rejects))
}

/// `schema` without its last column (`_metadata`), the schema a [`FileReader`] is given.
fn data_schema(schema: &SchemaRef) -> SchemaRef {
    expect::data_schema(schema, 1)
}

async fn open(settings: &Settings, name: &FullName) -> Result<Option<DeltaTable>, PipelineError> {
    let warehouse = name.warehouse(
        settings
            .warehouse
            .catalog_path()
            .parent()
            .unwrap_or(Path::new(".")),
    );
    if !warehouse.has_table(&name.table_name()) {
        return Ok(None);
    }
    Ok(Some(
        crate::sql::open(&warehouse, &name.table_name()).await?,
    ))
}

/// The table `name` as `batch` opened it already, or as it stands.
async fn opened(
    settings: &Settings,
    batch: &BatchInputs,
    name: &FullName,
) -> Result<Option<DeltaTable>, PipelineError> {
    match batch.tables.get(name) {
        Some(t) => Ok(Some(t.clone())),
        None => open(settings, name).await,
    }
}

async fn existing_schema(
    settings: &Settings,
    name: &FullName,
) -> Result<Option<SchemaRef>, PipelineError> {
    match open(settings, name).await? {
        Some(t) => Ok(Some(table_schema(&t, name)?)),
        None => Ok(None),
    }
}

fn table_schema(table: &DeltaTable, name: &FullName) -> Result<SchemaRef, PipelineError> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
    let snapshot = table.snapshot().map_err(|source| PipelineError::Table {
        table: name.to_string(),
        source,
    })?;
    let schema: Schema =
        snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| PipelineError::Table {
                table: name.to_string(),
                source: deltalake::DeltaTableError::Generic(e.to_string()),
            })?;
    Ok(Arc::new(schema))
}

async fn provider(
    ctx: &SessionContext,
    table: &DeltaTable,
    name: &FullName,
) -> Result<Arc<dyn deltalake::datafusion::catalog::TableProvider>, PipelineError> {
    let wrap = |source| PipelineError::Table {
        table: name.to_string(),
        source,
    };
    table
        .update_datafusion_session(&ctx.state())
        .map_err(wrap)?;
    table
        .table_provider()
        .await
        .map_err(|e| wrap(deltalake::DeltaTableError::Generic(e.to_string())))
}

/// Plans every flow against the schemas of what it reads, in graph order, and checks what
/// each kind of dataset allows. This is `dry-run`: it reads no rows and writes nothing.
pub async fn prepare(graph: &Graph, settings: &Settings) -> Result<Prepared, PipelineError> {
    let mut prepared = Prepared::default();
    let ctx = plan::session();
    let mut flow_schemas: BTreeMap<FullName, Vec<SchemaRef>> = BTreeMap::new();
    for &i in &graph.order {
        let flow = &graph.flows[i];
        let dataset = &graph.datasets[&flow.target];
        // The target's schema so far (declared or from its earlier flows) is what flows
        // into it see of it; a flow does not read its own target.
        register_inputs(
            &ctx,
            graph,
            settings,
            &mut prepared,
            &flow.inputs,
            &mut BatchInputs::default(),
            false,
        )
        .await?;
        let inputs = graph.all_inputs(&flow.inputs);
        let labels = plan::labels(graph, &inputs);
        let plan = plan::plan_query(&ctx, &flow.file, &flow.query, &labels).await?;
        let streams: Vec<String> = inputs
            .iter()
            .filter(|i| i.stream)
            .map(|i| i.placeholder.clone())
            .collect();
        match flow.kind {
            FlowKind::Append | FlowKind::AutoCdc => {
                plan::check_streaming(&flow.file, flow.loc, &plan, &streams)?
            }
            FlowKind::Materialize => {
                if let Some(s) = inputs.iter().find(|i| i.stream) {
                    return Err(PipelineError::Plan(PlanError::at(
                        &s.file,
                        s.loc,
                        "a materialized view reads its inputs whole, but this one reads a STREAM",
                        "remove STREAM(...), or make the dataset a streaming table",
                    )));
                }
            }
        }
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        if let Some(table) = &dataset.table {
            check_expectations(&ctx, &flow.file, table, plan.clone(), &labels).await?;
        }
        if let (Some(cdc), Some(table)) = (&flow.cdc, &dataset.table) {
            let shape = crate::pipeline::cdc::shape::Shape::resolve(
                &flow.file,
                flow.loc,
                cdc,
                &schema,
                &table.properties,
            )?;
            let merged = dataset_schema(dataset, std::slice::from_ref(&shape.schema))?;
            if !table.columns.is_empty() && !schemas_match(&merged, &shape.schema) {
                return Err(PipelineError::Plan(PlanError::at(
                    &dataset.file,
                    dataset.loc,
                    format!(
                        "`{}` declares the columns {}, but AUTO CDC flow `{}` gives {}",
                        dataset.name,
                        column_list(&merged),
                        flow.name,
                        column_list(&shape.schema)
                    ),
                    "declare the columns the flow gives (for SCD type 2, with __START_AT and __END_AT of the sequence's type), or none",
                )));
            }
            prepared
                .schemas
                .insert(flow.target.clone(), shape.schema.clone());
            prepared.cdc.insert(i, shape);
            continue;
        }
        flow_schemas
            .entry(flow.target.clone())
            .or_default()
            .push(schema);
        let merged = dataset_schema(dataset, &flow_schemas[&flow.target])?;
        prepared.schemas.insert(flow.target.clone(), merged);
    }
    // Tables with no flow yet have their declared columns; views nobody reads are
    // planned too, so that their errors show.
    for d in graph.datasets.values() {
        if d.kind == DatasetKind::TemporaryView {
            let input = Input {
                placeholder: format!("__view_{}", d.name.table),
                stream: false,
                file: d.file.clone(),
                loc: d.loc,
                source: InputSource::Dataset(d.name.clone()),
            };
            register_input(
                &ctx,
                graph,
                settings,
                &mut prepared,
                &input,
                &mut BatchInputs::default(),
                false,
            )
            .await?;
        } else if !prepared.schemas.contains_key(&d.name) {
            if let Some(s) = dataset_schema(d, &[])
                .ok()
                .filter(|s| !s.fields().is_empty())
            {
                prepared.schemas.insert(d.name.clone(), s);
            }
        }
    }
    Ok(prepared)
}

/// Plans the expectations over a flow's rows, so that their errors show at dry-run.
async fn check_expectations(
    ctx: &SessionContext,
    file: &str,
    table: &TableDef,
    plan: deltalake::datafusion::logical_expr::LogicalPlan,
    labels: &BTreeMap<String, String>,
) -> Result<(), PipelineError> {
    checked_plan(ctx, file, &table.expectations, plan, labels)
        .await
        .map(|_| ())
}

/// A view's plan with its columns renamed as its column list says (in order).
fn renamed(
    plan: deltalake::datafusion::logical_expr::LogicalPlan,
    columns: &[String],
    file: &str,
    loc: Loc,
) -> Result<deltalake::datafusion::logical_expr::LogicalPlan, PipelineError> {
    if columns.is_empty() {
        return Ok(plan);
    }
    let fields = plan.schema().columns();
    if fields.len() != columns.len() {
        return Err(PipelineError::Plan(PlanError::at(
            file,
            loc,
            format!(
                "the view names {} columns, but its query gives {}",
                columns.len(),
                fields.len()
            ),
            "name every column of the query, in order",
        )));
    }
    let exprs: Vec<Expr> = fields
        .into_iter()
        .zip(columns)
        .map(|(c, name)| Expr::Column(c).alias(name))
        .collect();
    deltalake::datafusion::logical_expr::LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(|e| PipelineError::DataFusion {
            context: file.into(),
            source: e,
        })
}

/// The plan with one boolean column per expectation, last (`__exp_0`, ...); the plan
/// itself when there are none.
async fn checked_plan(
    ctx: &SessionContext,
    file: &str,
    expectations: &[super::parse::Expectation],
    plan: deltalake::datafusion::logical_expr::LogicalPlan,
    labels: &BTreeMap<String, String>,
) -> Result<deltalake::datafusion::logical_expr::LogicalPlan, PipelineError> {
    let Some(first) = expectations.first() else {
        return Ok(plan);
    };
    plan::register_view(ctx, "__flow", plan).map_err(|e| PipelineError::DataFusion {
        context: file.into(),
        source: e,
    })?;
    let q = QueryDef {
        query: expect::query("__flow", expectations),
        loc: first.loc,
        text: String::new(),
        sources: Vec::new(),
    };
    Ok(plan::plan_query(ctx, file, &q, labels).await?)
}

/// `a INT, b STRING, ...`, as the SQL declares columns.
fn column_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A dataset's schema: its declared columns, or the union of its flows' columns by name,
/// in order of first appearance (a column some flow lacks is nullable).
fn dataset_schema(dataset: &Dataset, flows: &[SchemaRef]) -> Result<SchemaRef, PipelineError> {
    let table = dataset.table.as_ref();
    let declared = table.map(|t| t.columns.as_slice()).unwrap_or(&[]);
    let bad = |loc: Loc, message: String, fix: &str| {
        PipelineError::Plan(PlanError::at(&dataset.file, loc, message, fix))
    };
    let mut fields: Vec<Field> = Vec::new();
    if !declared.is_empty() {
        for c in declared {
            let t = super::types::arrow_type(&c.data_type).map_err(|e| {
                bad(
                    c.loc,
                    format!("column `{}`: {e}", c.name),
                    "use a supported type",
                )
            })?;
            fields.push(Field::new(&c.name, t, !c.not_null));
        }
        for s in flows {
            for f in s.fields() {
                if !fields.iter().any(|d| d.name() == f.name()) {
                    return Err(bad(
                        dataset.loc,
                        format!(
                            "a flow into `{}` gives column `{}`, which the table does not declare",
                            dataset.name,
                            f.name()
                        ),
                        "declare the column, or leave it out of the query",
                    ));
                }
            }
        }
    } else {
        for s in flows {
            for f in s.fields() {
                match fields.iter_mut().find(|d| d.name() == f.name()) {
                    Some(existing) => {
                        if existing.data_type() != f.data_type() {
                            return Err(bad(
                                dataset.loc,
                                format!(
                                    "the flows into `{}` give column `{}` two types: {} and {}",
                                    dataset.name,
                                    f.name(),
                                    existing.data_type(),
                                    f.data_type()
                                ),
                                "CAST the column to one type in every flow",
                            ));
                        }
                        if f.is_nullable() {
                            *existing = existing.clone().with_nullable(true);
                        }
                    }
                    None => fields.push(
                        f.as_ref()
                            .clone()
                            .with_nullable(f.is_nullable() || !std::ptr::eq(s, &flows[0])),
                    ),
                }
            }
            for d in fields.iter_mut() {
                if s.field_with_name(d.name()).is_err() {
                    *d = d.clone().with_nullable(true);
                }
            }
        }
        // Delta stores no other string or binary encodings; views become plain strings.
        for f in fields.iter_mut() {
            let t = match f.data_type() {
                DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
                DataType::BinaryView | DataType::LargeBinary => Some(DataType::Binary),
                _ => None,
            };
            if let Some(t) = t {
                *f = f.clone().with_data_type(t);
            }
        }
    }
    if let Some(t) = table {
        let mut named: Vec<(&str, &String, Loc, &str)> = t
            .partitioned_by
            .iter()
            .map(|c| {
                (
                    "PARTITIONED BY",
                    c,
                    t.loc,
                    "partition by one of the table's columns",
                )
            })
            .collect();
        if let Some(pk) = &t.primary_key {
            named.extend(
                pk.columns
                    .iter()
                    .map(|c| ("PRIMARY KEY", c, pk.loc, "name the table's columns")),
            );
        }
        for (clause, c, loc, fix) in named {
            if !fields.iter().any(|f| f.name() == c) {
                return Err(bad(
                    loc,
                    format!(
                        "{clause} names `{c}`, which is not a column of `{}`",
                        dataset.name
                    ),
                    fix,
                ));
            }
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The table a dataset is written to, with the schema it should have now: the existing
/// table's columns first (in their order), then new ones. A new column must be nullable;
/// a column whose type changed, or a non-nullable column the flows no longer give, is an
/// error that names the columns and the way out.
/// The spec of `dataset`'s table, from the query's `schema` and the table as it is
/// (`existing`, if it was created): new nullable columns are added, other changes refused.
fn target_spec(
    dataset: &Dataset,
    schema: &SchemaRef,
    existing: Option<&DeltaTable>,
) -> Result<TableSpec, PipelineError> {
    let partition_columns = dataset
        .table
        .as_ref()
        .map(|t| t.partitioned_by.clone())
        .unwrap_or_default();
    let mut fields: Vec<Field> = Vec::new();
    let existing = existing
        .map(|t| table_schema(t, &dataset.name))
        .transpose()?;
    if let Some(existing) = existing {
        let mut problems = Vec::new();
        for f in existing.fields() {
            match schema.field_with_name(f.name()) {
                Ok(new) if !same_type(new.data_type(), f.data_type()) => problems.push(format!(
                    "column `{}` changes type from {} to {}",
                    f.name(),
                    f.data_type(),
                    new.data_type()
                )),
                Err(_) if !f.is_nullable() => problems.push(format!(
                    "column `{}` (NOT NULL) is no longer given",
                    f.name()
                )),
                _ => {}
            }
            fields.push(f.as_ref().clone());
        }
        for f in schema.fields() {
            if existing.field_with_name(f.name()).is_err() {
                if f.is_nullable() {
                    fields.push(f.as_ref().clone());
                } else {
                    problems.push(format!("new column `{}` is NOT NULL", f.name()));
                }
            }
        }
        if !problems.is_empty() {
            return Err(PipelineError::SchemaChange {
                table: dataset.name.to_string(),
                changes: problems.join("; "),
            });
        }
    } else {
        fields = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    }
    // Delta's own property: how large the files of writes and MERGEs may grow.
    let size = dataset
        .table
        .as_ref()
        .and_then(|t| t.properties.get("delta.targetFileSize"));
    let target_file_size = match size {
        None => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            PipelineError::Plan(PlanError::at(
                &dataset.file,
                dataset.loc,
                format!("TBLPROPERTIES 'delta.targetFileSize' is '{v}', not a number of bytes"),
                "write a whole number of bytes, such as '2097152' for 2 MB",
            ))
        })?),
    };
    Ok(TableSpec {
        name: dataset.name.table_name(),
        schema: Arc::new(Schema::new(fields)),
        partition_columns,
        target_file_size,
    })
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    let norm = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::Timestamp(u, Some(_)) => DataType::Timestamp(*u, Some("UTC".into())),
        other => other.clone(),
    };
    norm(a) == norm(b)
}

/// `batch` with `schema`'s columns: by name, cast; a missing nullable column is NULL.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, PipelineError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => cast(c, f.data_type()).map_err(|e| format!("column `{}`: {e}", f.name())),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>, String>>()
        .map_err(|reason| PipelineError::Write { reason })?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| PipelineError::Write {
        reason: e.to_string(),
    })
}

/// One update of a pipeline, shared by the flows that run at the same time.
pub struct Update {
    pub settings: Arc<Settings>,
    pub graph: Arc<Graph>,
    pub prepared: Prepared,
    pub update_id: String,
    pub batch_rows: usize,
    /// Views computed once per batch for all the flows that read them.
    pub views: Arc<SharedViews>,
    /// Source commits read once per batch for all the flows that stream them.
    pub reads: SharedReads,
}

/// Where a batch's rows came from, for the quarantine and the progress.
enum Origin {
    Table { version: i64 },
    File { step: Step },
}

impl Update {
    fn warehouse_root(&self) -> PathBuf {
        self.settings
            .warehouse
            .catalog_path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    fn app(&self, flow: &Flow, input: &Input) -> String {
        format!(
            "{}/{}",
            flow.name,
            input.progress_name(&self.graph.pipeline.catalog)
        )
    }

    /// Empties a dataset for a full refresh: its table, its quarantine, the event store
    /// of an AUTO CDC flow into it and its progress copies are deleted, so that every
    /// flow into it starts from its sources' beginning.
    pub fn forget(&self, dataset: &Dataset) -> Result<(), PipelineError> {
        let root = self.warehouse_root();
        let warehouse = dataset.name.warehouse(&root);
        let table = dataset.name.table_name();
        let mut paths = vec![
            warehouse.path(&table),
            warehouse.path(&crate::pipeline::cdc::store::name(&table)),
        ];
        if let Some(q) = dataset.quarantine() {
            paths.push(q.warehouse(&root).path(&q.table_name()));
        }
        paths.push(self.state_dir(dataset));
        for p in paths {
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| PipelineError::Write {
                    reason: format!("cannot delete {}: {e}", p.display()),
                })?;
            }
        }
        Ok(())
    }

    fn state_dir(&self, dataset: &Dataset) -> PathBuf {
        self.settings
            .state_dir
            .join("pipelines")
            .join(&dataset.name.catalog)
            .join(&dataset.name.schema)
            .join(&dataset.name.table)
    }

    /// Whether the dataset's quarantine table exists.
    fn quarantine_exists(&self, dataset: &Dataset) -> bool {
        dataset.quarantine().is_some_and(|n| {
            n.warehouse(&self.warehouse_root())
                .has_table(&n.table_name())
        })
    }

    async fn quarantine_sink(&self, dataset: &Dataset) -> Result<DeltaSink, PipelineError> {
        let name = dataset.quarantine().expect("tables have a quarantine");
        let spec = quarantine::pipeline_table(name.table_name());
        Ok(DeltaSink::open(&name.warehouse(&self.warehouse_root()), spec).await?)
    }

    /// Runs one flow.
    pub async fn run_flow(&self, index: usize) -> Result<FlowReport, PipelineError> {
        let flow = &self.graph.flows[index];
        let started = Instant::now();
        let mut report = FlowReport::new(flow);
        match flow.kind {
            FlowKind::Append | FlowKind::AutoCdc => {
                self.append_flow(index, flow, &mut report).await?
            }
            FlowKind::Materialize => self.materialize(flow, &mut report).await?,
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn append_flow(
        &self,
        index: usize,
        flow: &Flow,
        report: &mut FlowReport,
    ) -> Result<(), PipelineError> {
        let dataset = &self.graph.datasets[&flow.target];
        let schema = self.prepared.schemas[&flow.target].clone();
        let warehouse = dataset.name.warehouse(&self.warehouse_root());
        // The streams the flow reads: through a view read as a stream (`STREAM(v)`, as
        // an AUTO CDC flow reads its events), the view's own streams.
        let is_view = |i: &Input| match &i.source {
            InputSource::Dataset(n) => self.graph.datasets.get(n).is_some_and(|d| d.view.is_some()),
            _ => false,
        };
        let inputs: Vec<Input> = self
            .graph
            .all_inputs(&flow.inputs)
            .into_iter()
            .filter(|i| i.stream && !is_view(i))
            .cloned()
            .collect();
        let shape = self.prepared.cdc.get(&index);
        let store_name =
            shape.map(|_| crate::pipeline::cdc::store::name(&dataset.name.table_name()));
        // Every table the flow writes or reads opens side by side, each once.
        let (existing, quarantine, stored, sources) = tokio::try_join!(
            open(&self.settings, &dataset.name),
            self.quarantine_sink(dataset),
            async {
                match &store_name {
                    Some(name) if warehouse.has_table(name) => {
                        Ok(Some(crate::sql::open(&warehouse, name).await?))
                    }
                    _ => Ok::<_, PipelineError>(None),
                }
            },
            futures::future::try_join_all(inputs.iter().map(|input| async move {
                match &input.source {
                    InputSource::Dataset(name) | InputSource::External(name) => {
                        open(&self.settings, name).await
                    }
                    _ => Ok(None),
                }
            })),
        )?;
        let spec = target_spec(dataset, &schema, existing.as_ref())?;
        let sink = DeltaSink::open_loaded(&warehouse, spec, existing).await?;
        let store = match shape {
            Some(shape) => {
                // Partitioned as the target is (which may be an earlier layout).
                let partitions = sink.partition_columns();
                let spec = crate::pipeline::cdc::store::spec(sink.name(), shape, partitions);
                Some(DeltaSink::open_loaded(&warehouse, spec, stored).await?)
            }
            None => None,
        };
        let mut out = Outputs {
            sink,
            quarantine,
            store,
        };
        for (input, source) in inputs.iter().zip(sources) {
            match &input.source {
                InputSource::Dataset(name) | InputSource::External(name) => {
                    self.stream_table(flow, input, name, source, &mut out, report)
                        .await?
                }
                InputSource::Files { .. } => {
                    self.stream_files(flow, input, &mut out, report).await?
                }
                InputSource::Kafka { .. } => unreachable!("refused when planning"),
            }
        }
        if let (Some(shape), Some(store)) = (self.prepared.cdc.get(&index), out.store.as_mut()) {
            if shape.scd_type == 1 {
                let collected =
                    crate::pipeline::cdc::scd1::collect_tombstones(shape, store).await?;
                if collected > 0 {
                    report.notes.push(format!(
                        "AUTO CDC: {collected} tombstone(s) older than {} s collected",
                        shape.tombstones_kept_for.as_secs()
                    ));
                }
            }
        }
        if let Some(c) = &report.cdc {
            report.notes.push(match self.prepared.cdc.get(&index).map(|s| s.scd_type) {
                Some(1) => format!(
                    "AUTO CDC: {} row(s) written, {} row(s) replaced or deleted; {} event(s) ignored as older than their key's",
                    c.inserted, c.deleted, c.ignored
                ),
                _ => format!(
                    "AUTO CDC: {} version(s) written, {} stored version(s) replaced; {} event(s) replaced by a later arrival with the same sequence; {} key(s) replayed from their history (late data or new keys)",
                    c.inserted, c.deleted, c.duplicates, c.keys_replayed_from_history
                ),
            });
        }
        Ok(())
    }

    async fn stream_table(
        &self,
        flow: &Flow,
        input: &Input,
        name: &FullName,
        table: Option<DeltaTable>,
        out: &mut Outputs,
        report: &mut FlowReport,
    ) -> Result<(), PipelineError> {
        let Some(table) = table else {
            report
                .notes
                .push(format!("{name} does not exist yet: nothing to read"));
            return Ok(());
        };
        let app = self.app(flow, input);
        let latest = table.version().map_or(-1, |v| v as i64);
        let started = std::time::Instant::now();
        loop {
            // Read side by side: the first read of each table replays its log.
            let (done, quarantined, stored) = tokio::try_join!(
                out.sink.txn_version(&app),
                out.quarantine.txn_version(&app),
                async {
                    match &out.store {
                        Some(store) => store.txn_version(&app).await.map(Some),
                        None => Ok(None),
                    }
                }
            )?;
            let side: Vec<Option<i64>> = std::iter::once(quarantined).chain(stored).collect();
            let Some((from, to)) = crate::stream::next_range(done, &side, latest) else {
                break;
            };
            tracing::debug!(elapsed = ?started.elapsed(), flow = %flow.name, "pipeline: progress of the targets read");
            // Another flow streaming this table from the same progress reads the same
            // commits: the first to get there reads them for both.
            let source = name.to_string();
            let read = crate::stream::read_appends(&table, &source, from, to, self.batch_rows);
            let appended = self
                .reads
                .cell(&source, &format!("{from}..{to}"))
                .get_or_try_init(|| async { read.await.map(Arc::new) })
                .await
                .cloned()
                .map_err(|e| match e {
                    crate::stream::StreamError::NotAppendOnly { version, what, .. } => {
                        PipelineError::SourceRewritten {
                            flow: flow.name.clone(),
                            source_table: name.to_string(),
                            version,
                            what,
                            target: flow.target.to_string(),
                        }
                    }
                    other => other.into(),
                })?;
            let rows: u64 = appended.batches.iter().map(|b| b.num_rows() as u64).sum();
            tracing::debug!(elapsed = ?started.elapsed(), flow = %flow.name, rows, "pipeline: source's new rows read");
            report.rows_read += rows;
            report.bytes_read += appended.bytes;
            let schema = appended
                .batches
                .first()
                .map(|b| b.schema())
                .unwrap_or(table_schema(&table, name)?);
            let data = InputData::Batches(schema, appended.batches.clone());
            let origin = Origin::Table {
                version: appended.to,
            };
            let shared = format!("{}:{name}:{from}..{}", input.placeholder, appended.to);
            self.batch(
                flow,
                input,
                data,
                Some(shared),
                Vec::new(),
                &origin,
                &app,
                appended.to,
                out,
                report,
            )
            .await?;
        }
        Ok(())
    }

    async fn stream_files(
        &self,
        flow: &Flow,
        input: &Input,
        out: &mut Outputs,
        report: &mut FlowReport,
    ) -> Result<(), PipelineError> {
        let files = self.prepared.files[&input.placeholder].clone();
        let app = self.app(flow, input);
        let dataset = &self.graph.datasets[&flow.target];
        let cache = self
            .state_dir(dataset)
            .join(format!("{}.json", crate::pipeline::safe_file_name(&app)));
        let mut progress = FilesProgress::load(&cache, &out.sink, &app).await?;
        let listing = read_files::list(&files.dir, &files.options)?;
        report.notes.extend(listing.skipped);
        let stable = std::time::Duration::from_millis(files.options.stable_ms);
        let now_ms = chrono::Utc::now().timestamp_millis();
        for file in &listing.files {
            if progress.changed(file) {
                report.notes.push(format!(
                    "{} changed after it was read whole; it is not read again (write a new file instead)",
                    file.name
                ));
                continue;
            }
            let Some(start) = progress.start(file) else {
                continue;
            };
            if now_ms - file.modified_ms < stable.as_millis() as i64 {
                report.notes.push(format!(
                    "{} is still changing (modified {} ms ago); the next run reads it",
                    file.name,
                    now_ms - file.modified_ms
                ));
                continue;
            }
            let mut reader = FileReader::open(file, data_schema(&files.schema), &files.options)?;
            let mut through = start;
            loop {
                let Some(chunk) = reader.next_chunk(self.batch_rows) else {
                    break;
                };
                let (batch, rejects) = skip_through(chunk.batch, chunk.rejects, start);
                let last = last_position(&batch, &rejects).unwrap_or(through);
                through = through.max(last);
                if batch.num_rows() == 0 && rejects.is_empty() {
                    continue;
                }
                report.rows_read +=
                    batch.num_rows() as u64 + rejects.iter().map(|r| r.lines).sum::<u64>();
                let source = input.progress_name(&self.graph.pipeline.catalog);
                let rejects: Vec<PipelineReject> = rejects
                    .into_iter()
                    .map(|r| unparsed_line(&flow.name, &source, &file.name, r))
                    .collect();
                let step = progress.next(file, through, false);
                let origin = Origin::File { step: step.clone() };
                let data = InputData::Batches(files.schema.clone(), vec![batch]);
                self.batch(
                    flow, input, data, None, rejects, &origin, &app, step.seq, out, report,
                )
                .await?;
                progress.apply(&step);
                progress.save(&cache)?;
            }
            report.bytes_read += file.size;
            // The file is done: a commit of the progress alone.
            let step = progress.next(file, through, true);
            let sink = &mut out.sink;
            sink.set_commit_info(COMMIT_INFO_KEY, serde_json::json!({ app.clone(): step }));
            let v = sink
                .append(vec![], vec![Transaction::new(&app, step.seq)])
                .await?;
            report.versions.push((sink.qualified_name().into(), v));
            progress.apply(&step);
            progress.save(&cache)?;
            crate::fault::point("pipeline.file_done");
        }
        Ok(())
    }

    /// Runs one batch of a stream through the flow and commits it.
    #[allow(clippy::too_many_arguments)]
    async fn batch(
        &self,
        flow: &Flow,
        input: &Input,
        data: InputData,
        shared: Option<String>,
        mut rejects: Vec<PipelineReject>,
        origin: &Origin,
        app: &str,
        version: i64,
        out: &mut Outputs,
        report: &mut FlowReport,
    ) -> Result<(), PipelineError> {
        let Outputs {
            sink,
            quarantine,
            store,
        } = out;
        let dataset = &self.graph.datasets[&flow.target];
        let table = dataset
            .table
            .as_ref()
            .expect("a streaming table has a definition");
        let started = std::time::Instant::now();
        let ctx = plan::session();
        let mut prepared = self.prepared.clone();
        let input_rows: usize = match &data {
            InputData::Batches(_, b) => b.iter().map(|b| b.num_rows()).sum(),
            _ => 0,
        };
        let mut inputs_of_batch = BatchInputs::with(&input.placeholder, data);
        inputs_of_batch.shared = shared.map(|key| (key, self.views.clone()));
        register_inputs(
            &ctx,
            &self.graph,
            &self.settings,
            &mut prepared,
            &flow.inputs,
            &mut inputs_of_batch,
            true,
        )
        .await?;
        if let Some((source, file, r)) = inputs_of_batch.unparsed.first() {
            // A static side is read whole for every batch: its bad lines are not this
            // flow's rows, so they are reported, once, rather than quarantined each time.
            let note = format!(
                "{} line(s) of the static input {source} did not parse and were left out (first: {file}:{}: {})",
                inputs_of_batch.unparsed.len(),
                r.line,
                r.reason
            );
            if !report.notes.contains(&note) {
                report.notes.push(note);
            }
        }
        tracing::debug!(elapsed = ?started.elapsed(), flow = %flow.name, "pipeline: batch inputs registered");
        let inputs = self.graph.all_inputs(&flow.inputs);
        let labels = plan::labels(&self.graph, &inputs);
        let plan = plan::plan_query(&ctx, &flow.file, &flow.query, &labels).await?;
        let output_schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let mut rows = self.rows(&ctx, flow, table, plan, &labels).await?;
        tracing::debug!(elapsed = ?started.elapsed(), flow = %flow.name, "pipeline: batch rows computed");
        let count = |b: &[RecordBatch]| b.iter().map(|b| b.num_rows()).sum::<usize>();
        let output = count(&rows.kept)
            + rows
                .dropped
                .iter()
                .map(|(b, _)| b.num_rows())
                .sum::<usize>();
        let view_dropped: usize = inputs_of_batch
            .views
            .iter()
            .flat_map(|v| v.dropped.iter().map(|(b, _)| b.num_rows()))
            .sum();
        // The query's own filtering (WHERE, an inner join without a match) or fan-out (a
        // join that matched more than once), measured on this batch.
        let given = view_dropped + output;
        report.rows_filtered += input_rows.saturating_sub(given) as u64;
        report.rows_expanded += given.saturating_sub(input_rows) as u64;
        // Rows the expectations of the views it read dropped, before the flow's own.
        for view in inputs_of_batch.views {
            rows.metrics.extend(view.metrics);
            rows.dropped.extend(view.dropped);
        }
        if let Some((expectation, row)) = rows.failure {
            return Err(PipelineError::FailUpdate {
                flow: flow.name.clone(),
                expectation,
                row: expect::rows_as_json(&row).join(""),
            });
        }
        report.add_metrics(rows.metrics);
        let source = input.progress_name(&self.graph.pipeline.catalog);
        // A row of this batch for the quarantine, as JSON.
        let reject = |json: String, reason: String, expectations: Option<String>| {
            PipelineReject {
                flow: flow.name.clone(),
                source: source.clone(),
                file: None,
                line: None,
                source_version: match origin {
                    Origin::Table { version } => Some(*version),
                    Origin::File { .. } => None,
                },
                raw_bytes: json.len() as u64,
                raw: json,
                reason,
                expectations,
            }
            .cut()
        };
        for (batch, failed) in &rows.dropped {
            for (json, names) in expect::rows_as_json(batch).into_iter().zip(failed) {
                let reason = format!("failed expectation(s): {}", names.join(", "));
                rejects.push(reject(json, reason, Some(names.join(","))));
                report.rows_dropped += 1;
            }
        }
        let mut kept = rows.kept;
        if let Some(pk) = &table.primary_key {
            let (fresh, duplicates) = first_per_key(&ctx, sink, &kept, &pk.columns).await?;
            report.duplicates += duplicates;
            kept = fresh;
            tracing::debug!(elapsed = ?started.elapsed(), flow = %flow.name, "pipeline: batch keys checked");
        }
        // An AUTO CDC flow's rows are change events; one without a key or a sequence is
        // quarantined.
        let index = self.graph.flows.iter().position(|f| std::ptr::eq(f, flow));
        let cdc = index.and_then(|i| self.prepared.cdc.get(&i));
        let changes = match cdc {
            Some(shape) => {
                use crate::pipeline::cdc::{columns, CdcError};
                let schema = kept.first().map_or(output_schema.clone(), |b| b.schema());
                let one = |schema: SchemaRef, batches: &[RecordBatch]| {
                    deltalake::arrow::compute::concat_batches(&schema, batches)
                        .map_err(CdcError::from)
                };
                // Only the columns the events are made of are copied into one batch.
                let used: Vec<usize> = (0..schema.fields().len())
                    .filter(|&i| {
                        let name = schema.field(i).name();
                        columns::ALL.contains(&name.as_str())
                            || shape.stored.iter().any(|s| s.name() == name)
                    })
                    .collect();
                let events = kept
                    .iter()
                    .map(|b| b.project(&used))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(CdcError::from)?;
                let events_schema = Arc::new(schema.project(&used).map_err(CdcError::from)?);
                let (changes, rejected) =
                    Changes::from_rows(shape, &one(events_schema, &events)?, version)?;
                if let Some(r) = rejected {
                    // The quarantine shows the whole rows.
                    let rows = deltalake::arrow::compute::filter_record_batch(
                        &one(schema, &kept)?,
                        &r.rows,
                    )
                    .map_err(CdcError::from)?;
                    for (json, reason) in expect::rows_as_json(&rows).into_iter().zip(r.reasons) {
                        rejects.push(reject(json, reason, None));
                    }
                }
                Some((shape, changes))
            }
            None => None,
        };
        report.rows_quarantined +=
            rejects.iter().filter(|r| r.expectations.is_none()).count() as u64;
        let txn = || vec![Transaction::new(app, version)];
        if let Origin::File { step, .. } = origin {
            let info = serde_json::json!({ app: step });
            quarantine.set_commit_info(COMMIT_INFO_KEY, info.clone());
            sink.set_commit_info(COMMIT_INFO_KEY, info);
        }
        let rejected = match !rejects.is_empty()
            && crate::stream::needs(quarantine.txn_version(app).await?, version)
        {
            true => {
                let spec = quarantine::pipeline_table(quarantine.name().clone());
                Some(quarantine::pipeline_batch(spec, &rejects))
            }
            false => None,
        };
        if let (Some((shape, changes)), Some(store)) = (changes, store.as_mut()) {
            // The quarantine is written while the events are worked out, on its own
            // thread, and committed before the target.
            let writing = rejected.map(|batch| {
                let (mut q, txns) = (quarantine.clone(), txn());
                crate::parallel::beside(async move {
                    let v = q.append(vec![batch], txns).await;
                    (q, v)
                })
            });
            let name = quarantine.qualified_name().to_string();
            let mut written: Option<(DeltaSink, i64)> = None;
            let before = async {
                if let Some(writing) = writing {
                    let (q, v) = writing.await.map_err(|e| DeltaError::Query {
                        table: name,
                        reason: format!("the write of the quarantine stopped: {e}"),
                    })?;
                    written = Some((q, v?));
                }
                tracing::debug!(elapsed = ?started.elapsed(), flow = %flow.name, "pipeline: batch quarantine written");
                crate::fault::point("pipeline.after_quarantine");
                Ok(())
            };
            report.rows_written += changes.len() as u64;
            let applied =
                crate::pipeline::cdc::apply(shape, sink, store, changes, app, version, before)
                    .await?;
            if let Some((q, v)) = written {
                *quarantine = q;
                report
                    .versions
                    .push((quarantine.qualified_name().into(), v));
            }
            report
                .cdc
                .get_or_insert_with(Default::default)
                .add(&applied);
            report
                .versions
                .push((sink.qualified_name().into(), applied.version));
            crate::fault::point("pipeline.after_commit");
            return Ok(());
        }
        if let Some(batch) = rejected {
            let v = quarantine.append(vec![batch], txn()).await?;
            report
                .versions
                .push((quarantine.qualified_name().into(), v));
        }
        tracing::debug!(elapsed = ?started.elapsed(), flow = %flow.name, "pipeline: batch quarantine written");
        crate::fault::point("pipeline.after_quarantine");
        let schema = sink_schema(sink)?;
        let batches = kept
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform(b, &schema))
            .collect::<Result<Vec<_>, _>>()?;
        report.rows_written += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let v = sink.append(batches, txn()).await?;
        report.versions.push((sink.qualified_name().into(), v));
        crate::fault::point("pipeline.after_commit");
        Ok(())
    }

    /// The flow's rows with the dataset's expectations applied.
    async fn rows(
        &self,
        ctx: &SessionContext,
        flow: &Flow,
        table: &TableDef,
        plan: deltalake::datafusion::logical_expr::LogicalPlan,
        labels: &BTreeMap<String, String>,
    ) -> Result<expect::Split, PipelineError> {
        let run = |e| PipelineError::Query {
            flow: flow.name.clone(),
            source: e,
        };
        split_rows(
            ctx,
            &flow.file,
            &table.expectations,
            plan,
            labels,
            &flow.target.to_string(),
            run,
        )
        .await
    }

    /// Rewrites a materialized view when an input changed since its last refresh.
    async fn materialize(&self, flow: &Flow, report: &mut FlowReport) -> Result<(), PipelineError> {
        let dataset = &self.graph.datasets[&flow.target];
        let table = dataset
            .table
            .as_ref()
            .expect("a materialized view has a definition");
        let inputs = self.graph.all_inputs(&flow.inputs);
        // The version of each input now: Delta versions, or a fingerprint of the files.
        // The tables opened here are the ones the refresh reads.
        let mut read = BatchInputs::default();
        let mut versions: Vec<(String, i64)> = Vec::new();
        for i in &inputs {
            let v = match &i.source {
                InputSource::Dataset(n) | InputSource::External(n) => {
                    if self.graph.datasets.get(n).is_some_and(|d| d.view.is_some()) {
                        continue;
                    }
                    match open(&self.settings, n).await? {
                        Some(t) => {
                            // A refresh reads the whole input: its data files' size.
                            report.bytes_read += crate::delta::data_bytes(&t);
                            let v = t.version().map_or(-1, |v| v as i64);
                            read.tables.insert(n.clone(), t);
                            v
                        }
                        None => -1,
                    }
                }
                InputSource::Files { .. } => {
                    let f = &self.prepared.files[&i.placeholder];
                    fingerprint(&read_files::list(&f.dir, &f.options)?.files)
                }
                InputSource::Kafka { .. } => unreachable!("refused when planning"),
            };
            versions.push((
                format!(
                    "{}/{}",
                    flow.name,
                    i.progress_name(&self.graph.pipeline.catalog)
                ),
                v,
            ));
        }
        let schema = self.prepared.schemas[&flow.target].clone();
        let spec = TableSpec {
            name: dataset.name.table_name(),
            schema: schema.clone(),
            partition_columns: table.partitioned_by.clone(),
            target_file_size: None,
        };
        let warehouse = dataset.name.warehouse(&self.warehouse_root());
        let mut loaded = open(&self.settings, &dataset.name).await?;
        let existed = loaded.is_some();
        if let Some(table) = &loaded {
            if !schemas_match(&table_schema(table, &dataset.name)?, &schema) {
                // A materialized view is recomputed whole: a new shape replaces the old.
                self.forget(dataset)?;
                loaded = None;
            }
        }
        let mut sink = DeltaSink::open_loaded(&warehouse, spec, loaded).await?;
        let mut up_to_date = sink.version() > 0 || existed;
        for (app, v) in &versions {
            if sink.txn_version(app).await? != Some(*v) {
                up_to_date = false;
            }
        }
        if up_to_date && !versions.is_empty() {
            report.state = "UP_TO_DATE";
            report.bytes_read = 0;
            report
                .notes
                .push("no input changed since the last refresh".into());
            return Ok(());
        }
        let ctx = plan::session();
        let mut prepared = self.prepared.clone();
        register_inputs(
            &ctx,
            &self.graph,
            &self.settings,
            &mut prepared,
            &flow.inputs,
            &mut read,
            true,
        )
        .await?;
        // Lines of its files that did not parse go to its quarantine, as a stream's do.
        let mut unparsed: Vec<PipelineReject> = read
            .unparsed
            .into_iter()
            .map(|(source, file, r)| unparsed_line(&flow.name, &source, &file, r))
            .collect();
        let mut quarantined = false;
        let labels = plan::labels(&self.graph, &inputs);
        let plan = plan::plan_query(&ctx, &flow.file, &flow.query, &labels).await?;
        let run = |e| PipelineError::Query {
            flow: flow.name.clone(),
            source: e,
        };
        let txns: Vec<Transaction> = versions
            .iter()
            .map(|(app, v)| Transaction::new(app, *v))
            .collect();
        let df = if table.expectations.is_empty() {
            ctx.execute_logical_plan(plan).await.map_err(run)?
        } else {
            // Expectations over the whole result: counted in one pass, then the rows
            // that pass the DROP ROW ones are written as a stream.
            let checked =
                checked_plan(&ctx, &flow.file, &table.expectations, plan, &labels).await?;
            let df = ctx.execute_logical_plan(checked).await.map_err(run)?;
            let n = table.expectations.len();
            let width = df.schema().fields().len() - n;
            let mut counts = Vec::new();
            for i in 0..n {
                let c = col(format!("__exp_{i}"));
                counts.push(
                    deltalake::datafusion::functions_aggregate::expr_fn::sum(Expr::Case(
                        deltalake::datafusion::logical_expr::Case {
                            expr: None,
                            when_then_expr: vec![(Box::new(c.is_true()), Box::new(lit(1i64)))],
                            else_expr: Some(Box::new(lit(0i64))),
                        },
                    ))
                    .alias(format!("p{i}")),
                );
            }
            counts.push(
                deltalake::datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("n"),
            );
            let totals = df
                .clone()
                .aggregate(vec![], counts)
                .map_err(run)?
                .collect()
                .await
                .map_err(run)?;
            let get = |name: &str| -> u64 {
                totals
                    .first()
                    .and_then(|b| b.column_by_name(name))
                    .and_then(|c| ScalarValue::try_from_array(c, 0).ok())
                    .and_then(|v| match v {
                        ScalarValue::Int64(Some(x)) => Some(x as u64),
                        _ => None,
                    })
                    .unwrap_or(0)
            };
            let total = get("n");
            report.rows_read = total;
            let mut metrics = Vec::new();
            for (i, e) in table.expectations.iter().enumerate() {
                let passed = get(&format!("p{i}"));
                metrics.push(Metric {
                    name: e.name.clone(),
                    dataset: flow.target.to_string(),
                    passed_records: passed,
                    failed_records: total - passed,
                });
                if e.action == super::parse::Violation::FailUpdate && passed < total {
                    let row = df
                        .clone()
                        .filter(col(format!("__exp_{i}")).is_not_true())
                        .map_err(run)?
                        .limit(0, Some(1))
                        .map_err(run)?
                        .collect()
                        .await
                        .map_err(run)?;
                    let shown = row
                        .first()
                        .map(|b| {
                            expect::rows_as_json(
                                &b.project(&(0..width).collect::<Vec<_>>())
                                    .unwrap_or_else(|_| b.clone()),
                            )
                            .join("")
                        })
                        .unwrap_or_default();
                    return Err(PipelineError::FailUpdate {
                        flow: flow.name.clone(),
                        expectation: e.name.clone(),
                        row: shown,
                    });
                }
            }
            report.add_metrics(metrics);
            let keep = table
                .expectations
                .iter()
                .enumerate()
                .filter(|(_, e)| e.action == super::parse::Violation::DropRow)
                .map(|(i, _)| col(format!("__exp_{i}")).is_true())
                .reduce(Expr::and);
            let data: Vec<Expr> = df.schema().fields()[..width]
                .iter()
                .map(|f| {
                    col(deltalake::datafusion::common::Column::new_unqualified(
                        f.name(),
                    ))
                })
                .collect();
            if let Some(keep) = keep {
                let dropped = df
                    .clone()
                    .filter(Expr::Not(Box::new(keep.clone())))
                    .map_err(run)?;
                self.quarantine_view(
                    flow,
                    dataset,
                    Some((dropped, width)),
                    std::mem::take(&mut unparsed),
                    report,
                )
                .await?;
                quarantined = true;
                df.filter(keep).map_err(run)?.select(data).map_err(run)?
            } else {
                df.select(data).map_err(run)?
            }
        };
        // Its quarantine holds what its latest refresh set aside, so it is replaced even
        // when nothing is.
        if !quarantined && (!unparsed.is_empty() || self.quarantine_exists(dataset)) {
            self.quarantine_view(flow, dataset, None, unparsed, report)
                .await?;
        }
        crate::fault::point("pipeline.before_refresh");
        let (v, rows) = sink.overwrite_query(df, txns).await?;
        if table.expectations.is_empty() {
            report.rows_read = rows + report.rows_quarantined;
        }
        report.rows_written = rows;
        report.versions.push((sink.qualified_name().into(), v));
        Ok(())
    }

    /// Replaces the quarantine of a materialized view with the rows its DROP ROW
    /// expectations dropped in this refresh.
    async fn quarantine_view(
        &self,
        flow: &Flow,
        dataset: &Dataset,
        dropped: Option<(deltalake::datafusion::prelude::DataFrame, usize)>,
        unparsed: Vec<PipelineReject>,
        report: &mut FlowReport,
    ) -> Result<(), PipelineError> {
        let table = dataset.table.as_ref().expect("a table");
        let run = |e| PipelineError::Query {
            flow: flow.name.clone(),
            source: e,
        };
        let (batches, width) = match dropped {
            Some((df, width)) => (df.collect().await.map_err(run)?, width),
            None => (Vec::new(), 0),
        };
        report.rows_quarantined = unparsed.len() as u64;
        report.rows_read += unparsed.len() as u64;
        let mut rows = unparsed;
        for b in &batches {
            let data =
                b.project(&(0..width).collect::<Vec<_>>())
                    .map_err(|e| PipelineError::Write {
                        reason: e.to_string(),
                    })?;
            let checked = expect::split(
                std::slice::from_ref(b),
                &table.expectations,
                &flow.target.to_string(),
            );
            let names: Vec<Vec<String>> =
                checked.dropped.into_iter().flat_map(|(_, n)| n).collect();
            for (json, names) in expect::rows_as_json(&data).into_iter().zip(names) {
                rows.push(
                    PipelineReject {
                        flow: flow.name.clone(),
                        source: flow.name.clone(),
                        file: None,
                        line: None,
                        source_version: None,
                        raw_bytes: json.len() as u64,
                        raw: json,
                        reason: format!("failed expectation(s): {}", names.join(", ")),
                        expectations: Some(names.join(",")),
                    }
                    .cut(),
                );
            }
        }
        report.rows_dropped = rows.len() as u64 - report.rows_quarantined;
        let mut sink = self.quarantine_sink(dataset).await?;
        let spec = quarantine::pipeline_table(sink.name().clone());
        let ctx = plan::session();
        let batch = quarantine::pipeline_batch(spec, &rows);
        let df = ctx.read_batch(batch).map_err(run)?;
        let (v, _) = sink.overwrite_query(df, vec![]).await?;
        report.versions.push((sink.qualified_name().into(), v));
        Ok(())
    }
}

fn schemas_match(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && same_type(x.data_type(), y.data_type()))
}

fn sink_schema(sink: &DeltaSink) -> Result<SchemaRef, PipelineError> {
    let name = sink.qualified_name().to_string();
    let parts: Vec<&str> = name.split('.').collect();
    table_schema(
        sink.table(),
        &FullName {
            catalog: parts.first().copied().unwrap_or_default().into(),
            schema: parts.get(1).copied().unwrap_or_default().into(),
            table: parts.get(2).copied().unwrap_or_default().into(),
        },
    )
}

/// A number that changes when the listing changes (names, sizes, times).
fn fingerprint(files: &[crate::source::LandingFile]) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in files {
        h.update(f.name.as_bytes());
        h.update(f.size.to_le_bytes());
        h.update(f.modified_ms.to_le_bytes());
    }
    let d = h.finalize();
    i64::from_le_bytes(d[..8].try_into().expect("8 bytes")) & i64::MAX
}

/// The rows and rejects of a chunk past `start` (the position a rerun resumes from).
fn skip_through(
    batch: RecordBatch,
    rejects: Vec<read_files::Reject>,
    start: u64,
) -> (RecordBatch, Vec<read_files::Reject>) {
    if start == 0 {
        return (batch, rejects);
    }
    let positions = positions(&batch);
    let mask = deltalake::arrow::array::BooleanArray::from(
        positions.iter().map(|p| *p > start).collect::<Vec<_>>(),
    );
    let batch = deltalake::arrow::compute::filter_record_batch(&batch, &mask).unwrap_or(batch);
    (
        batch,
        rejects.into_iter().filter(|r| r.line > start).collect(),
    )
}

/// Each row's position in its file: `_metadata.line`, or `_metadata.row` + 1.
fn positions(batch: &RecordBatch) -> Vec<u64> {
    use deltalake::arrow::array::AsArray;
    let Some(meta) = batch.column_by_name("_metadata") else {
        return vec![0; batch.num_rows()];
    };
    let meta = meta.as_struct();
    let line = meta.column_by_name("line").map(|c| {
        c.as_primitive::<deltalake::arrow::datatypes::Int64Type>()
            .clone()
    });
    let row = meta.column_by_name("row").map(|c| {
        c.as_primitive::<deltalake::arrow::datatypes::Int64Type>()
            .clone()
    });
    (0..batch.num_rows())
        .map(|i| match (&line, &row) {
            (Some(l), _) if l.is_valid(i) => l.value(i) as u64,
            (_, Some(r)) if r.is_valid(i) => r.value(i) as u64 + 1,
            _ => 0,
        })
        .collect()
}

fn last_position(batch: &RecordBatch, rejects: &[read_files::Reject]) -> Option<u64> {
    positions(batch)
        .into_iter()
        .chain(rejects.iter().map(|r| r.line))
        .max()
}

/// Keeps the first row of each primary key that is neither earlier in the batch nor in
/// the table; returns the rows and how many were dropped. Only the stored rows whose keys
/// fall within the batch's range of each key column are read (Delta's file statistics
/// skip the rest), and only the keys are kept in memory.
async fn first_per_key(
    ctx: &SessionContext,
    sink: &DeltaSink,
    batches: &[RecordBatch],
    key: &[String],
) -> Result<(Vec<RecordBatch>, u64), PipelineError> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows == 0 {
        return Ok((batches.to_vec(), 0));
    }
    let write = |reason: String| PipelineError::Write { reason };
    let schema = batches[0].schema();
    let types: Vec<DataType> = key
        .iter()
        .map(|k| {
            schema
                .field_with_name(k)
                .map(|f| f.data_type().clone())
                .map_err(|e| write(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let fields: Vec<SortField> = types.iter().map(|t| SortField::new(t.clone())).collect();
    let converter = RowConverter::new(fields).map_err(|e| write(e.to_string()))?;
    let key_columns = |b: &RecordBatch, s: &Schema| -> Result<Vec<ArrayRef>, PipelineError> {
        key.iter()
            .zip(&types)
            .map(|(k, t)| {
                let c = b
                    .column(s.index_of(k).map_err(|e| write(e.to_string()))?)
                    .clone();
                cast(&c, t).map_err(|e| write(e.to_string()))
            })
            .collect()
    };
    // The batch's range of each key column, to read only the stored rows that can clash.
    let mut filter: Option<Expr> = None;
    for (k, t) in key.iter().zip(&types) {
        let i = schema.index_of(k).map_err(|e| write(e.to_string()))?;
        let columns: Vec<ArrayRef> = batches.iter().map(|b| b.column(i).clone()).collect();
        let (Ok(Some(lo)), Ok(Some(hi))) = (
            min_max(&columns, t, true).map_err(|e| write(e.to_string())),
            min_max(&columns, t, false).map_err(|e| write(e.to_string())),
        ) else {
            continue;
        };
        let e = col(deltalake::datafusion::common::Column::new_unqualified(k))
            .between(lit(lo), lit(hi));
        filter = Some(match filter {
            Some(f) => f.and(e),
            None => e,
        });
    }
    // Every key of the batch, encoded once; the sets below borrow them.
    let encoded = batches
        .iter()
        .map(|b| {
            converter
                .convert_columns(&key_columns(b, &schema)?)
                .map_err(|e| write(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen: ahash::HashSet<&[u8]> = ahash::HashSet::default();
    seen.reserve(rows);
    if sink.version() > 0 {
        let provider = sink
            .table()
            .table_provider()
            .await
            .map_err(|e| write(e.to_string()))?;
        let mut df = ctx.read_table(provider).map_err(|e| write(e.to_string()))?;
        if let Some(f) = filter {
            df = df.filter(f).map_err(|e| write(e.to_string()))?;
        }
        let cols: Vec<Expr> = key
            .iter()
            .map(|k| col(deltalake::datafusion::common::Column::new_unqualified(k)))
            .collect();
        let wanted: ahash::HashSet<&[u8]> = encoded
            .iter()
            .flat_map(|rows| rows.iter().map(|r| r.data()))
            .collect();
        for b in df
            .select(cols)
            .map_err(|e| write(e.to_string()))?
            .collect()
            .await
            .map_err(|e| write(e.to_string()))?
        {
            let s = b.schema();
            let stored = converter
                .convert_columns(&key_columns(&b, &s)?)
                .map_err(|e| write(e.to_string()))?;
            seen.extend(stored.iter().filter_map(|r| wanted.get(r.data()).copied()));
        }
    }
    let mut out = Vec::new();
    let mut dropped = 0u64;
    for (b, rows) in batches.iter().zip(&encoded) {
        let keep = deltalake::arrow::array::BooleanArray::from(
            rows.iter()
                .map(|r| seen.insert(r.data()))
                .collect::<Vec<bool>>(),
        );
        dropped += (keep.len() - keep.true_count()) as u64;
        out.push(
            deltalake::arrow::compute::filter_record_batch(b, &keep)
                .map_err(|e| write(e.to_string()))?,
        );
    }
    Ok((out, dropped))
}

/// The smallest (or largest) non-null value of a column given in pieces, by DataFusion's
/// MIN / MAX accumulators (`None` when every value is null).
fn min_max(
    pieces: &[ArrayRef],
    data_type: &DataType,
    min: bool,
) -> Result<Option<ScalarValue>, deltalake::datafusion::error::DataFusionError> {
    use deltalake::datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
    use deltalake::datafusion::logical_expr::Accumulator;
    let mut acc: Box<dyn Accumulator> = if min {
        Box::new(MinAccumulator::try_new(data_type)?)
    } else {
        Box::new(MaxAccumulator::try_new(data_type)?)
    };
    for p in pieces {
        acc.update_batch(std::slice::from_ref(p))?;
    }
    let v = acc.evaluate()?;
    Ok((!v.is_null()).then_some(v))
}

/// The datasets `--refresh` names (empty: all of them).
pub fn selected_flows(
    graph: &Graph,
    selection: &Selection,
) -> Result<BTreeSet<FullName>, PipelineError> {
    let mut out = BTreeSet::new();
    for name in &selection.refresh {
        out.insert(resolve_named(graph, name)?);
    }
    Ok(out)
}

/// A dataset named on the command line (`t`, `schema.t` or `catalog.schema.t`).
pub fn resolve_named(graph: &Graph, text: &str) -> Result<FullName, PipelineError> {
    let parts: Vec<String> = text.split('.').map(|p| p.trim().to_lowercase()).collect();
    let name = graph.resolve(&super::parse::Name {
        parts,
        loc: Loc::default(),
    });
    if graph
        .datasets
        .get(&name)
        .is_some_and(|d| d.kind != DatasetKind::TemporaryView)
    {
        return Ok(name);
    }
    Err(PipelineError::UnknownDataset {
        name: text.into(),
        known: graph
            .datasets
            .values()
            .filter(|d| d.kind != DatasetKind::TemporaryView)
            .map(|d| d.name.short(&graph.pipeline.catalog))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_change_with_the_listing() {
        let f = |name: &str, size| crate::source::LandingFile {
            path: name.into(),
            name: name.into(),
            size,
            modified_ms: 5,
        };
        let a = fingerprint(&[f("a", 1), f("b", 2)]);
        assert_eq!(a, fingerprint(&[f("a", 1), f("b", 2)]));
        assert_ne!(a, fingerprint(&[f("a", 1), f("b", 3)]));
        assert_ne!(a, fingerprint(&[f("a", 1)]));
        assert!(a >= 0);
    }
}
