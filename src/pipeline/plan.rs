//! Planning a pipeline's queries with DataFusion: the session they run in, how each input
//! is registered under its placeholder, and the checks a streaming query must pass.
//!
//! Every query was rewritten by the parser so that each relation reads a placeholder
//! table (`__f0_s3`). Planning registers, under each placeholder, what the relation reads:
//! an empty table of the right schema for a dry-run, the new rows of a stream for a
//! batch, or the whole Delta table for a static read.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use deltalake::datafusion::datasource::{MemTable, ViewTable};
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::logical_expr::LogicalPlan;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::datafusion::sql::parser::Statement as DfStatement;
use deltalake::datafusion::sql::sqlparser::ast::Statement;

use super::graph::{FullName, Graph, Input, InputSource};
use super::parse::{Loc, QueryDef};
use super::read_files::{self, ReadFilesOptions};

/// A query that cannot be planned, or is not allowed where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{}:{}: {message}. {fix}", loc.line, loc.column)]
pub struct PlanError {
    pub file: String,
    pub loc: Loc,
    pub message: String,
    pub fix: String,
}

impl PlanError {
    pub fn at(file: &str, loc: Loc, message: impl Into<String>, fix: impl Into<String>) -> Self {
        PlanError {
            file: file.into(),
            loc,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// A session for pipeline queries: delta-rs's planner (so that a query can be the
/// source of a Delta write), names kept as written (`Index` is the column `Index`, as
/// Spark users write it), and positions kept for errors.
pub fn session() -> SessionContext {
    let ctx = deltalake::delta_datafusion::create_session().into_inner();
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        options.sql_parser.enable_ident_normalization = false;
        options.sql_parser.collect_spans = true;
    }
    super::functions::register(&ctx);
    ctx
}

/// Plans a rewritten query whose placeholders are registered in `ctx`.
pub async fn plan_query(
    ctx: &SessionContext,
    file: &str,
    query: &QueryDef,
    names: &BTreeMap<String, String>,
) -> Result<LogicalPlan, PlanError> {
    let statement = DfStatement::Statement(Box::new(Statement::Query(query.query.clone())));
    ctx.state()
        .statement_to_plan(statement)
        .await
        .map_err(|e| located(file, query.loc, &e, names))
}

/// A DataFusion error at the place its span names (or the query's start), with the
/// placeholder names replaced by what they stand for.
pub fn located(
    file: &str,
    fallback: Loc,
    e: &DataFusionError,
    names: &BTreeMap<String, String>,
) -> PlanError {
    let loc = e
        .diagnostic()
        .and_then(|d| d.span)
        .filter(|s| s.start.line > 0)
        .map(|s| Loc {
            line: s.start.line,
            column: s.start.column,
        })
        .unwrap_or(fallback);
    let mut message = e.strip_backtrace().to_string();
    for (placeholder, label) in names {
        message = message.replace(placeholder.as_str(), label);
    }
    let fix = if message.contains("No field named") || message.contains("not found") {
        "check the name: column names are matched as written, case included (`Close` is not `close`)"
    } else if message.contains("Invalid function") {
        "README.md lists the functions a query may call"
    } else if message.contains("type") || message.contains("Cannot") {
        "make the types agree, with CAST(x AS type) or TRY_CAST"
    } else {
        "fix the query"
    };
    PlanError {
        file: file.into(),
        loc,
        message,
        fix: fix.into(),
    }
}

/// How a placeholder reads its input in a session.
pub enum InputData {
    /// No rows, the schema only (a dry-run, or a stream with nothing new).
    Empty(SchemaRef),
    /// These rows (the new rows of a stream).
    Batches(SchemaRef, Vec<RecordBatch>),
    /// A table, whole (a static read).
    Table(Arc<dyn TableProvider>),
}

/// Registers `data` under `placeholder`.
pub fn register(
    ctx: &SessionContext,
    placeholder: &str,
    data: InputData,
) -> Result<(), DataFusionError> {
    let provider: Arc<dyn TableProvider> = match data {
        InputData::Empty(schema) => Arc::new(MemTable::try_new(schema, vec![vec![]])?),
        InputData::Batches(schema, batches) => Arc::new(MemTable::try_new(schema, vec![batches])?),
        InputData::Table(t) => t,
    };
    ctx.deregister_table(placeholder)?;
    ctx.register_table(placeholder, provider)?;
    Ok(())
}

/// Registers a temporary view's plan under its placeholder.
pub fn register_view(
    ctx: &SessionContext,
    placeholder: &str,
    plan: LogicalPlan,
) -> Result<(), DataFusionError> {
    ctx.deregister_table(placeholder)?;
    ctx.register_table(placeholder, Arc::new(ViewTable::new(plan, None)))?;
    Ok(())
}

/// What each placeholder of a flow stands for, for error messages.
pub fn labels(graph: &Graph, inputs: &[&Input]) -> BTreeMap<String, String> {
    inputs
        .iter()
        .map(|i| {
            let label = match &i.source {
                InputSource::Dataset(n) | InputSource::External(n) => {
                    n.short(&graph.pipeline.catalog)
                }
                InputSource::Files { path, .. } => format!("read_files('{path}')"),
                InputSource::Kafka { .. } => "read_kafka(...)".into(),
            };
            (i.placeholder.clone(), label)
        })
        .collect()
}

/// The schema of what `read_files` yields, with its `_metadata` column.
pub fn files_schema(
    file: &str,
    input: &Input,
    path: &str,
    options: &BTreeMap<String, String>,
    root: &std::path::Path,
) -> Result<(SchemaRef, ReadFilesOptions, std::path::PathBuf), PlanError> {
    let at = |message: String, fix: &str| PlanError::at(file, input.loc, message, fix);
    let opts = ReadFilesOptions::from_sql(options)
        .map_err(|e| at(e.to_string(), "fix the read_files options"))?;
    let dir = root.join(path);
    let listing = read_files::list(&dir, &opts).map_err(|e| {
        at(
            e.to_string(),
            "create the folder, or fix the path (relative paths are taken from the bundle's folder)",
        )
    })?;
    let schema = read_files::output_schema(&dir, &listing.files, &opts).map_err(|e| {
        at(
            e.to_string(),
            "give the columns with schema => 'a STRING, b DOUBLE', or put a file in the folder",
        )
    })?;
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(read_files::metadata_field()));
    Ok((Arc::new(Schema::new(fields)), opts, dir))
}

/// The checks of a streaming table's query: it reads at least one stream, and has no
/// aggregation, window or join of two streams (which need state across batches).
pub fn check_streaming(
    file: &str,
    loc: Loc,
    plan: &LogicalPlan,
    streams: &[String],
) -> Result<(), PlanError> {
    let fix =
        "use a materialized view (CREATE MATERIALIZED VIEW), which recomputes its whole result";
    if streams.is_empty() {
        return Err(PlanError::at(
            file,
            loc,
            "a streaming table's query reads no stream",
            "read the source with STREAM(table) or STREAM read_files(...), or make the dataset a materialized view",
        ));
    }
    let reads_stream = |p: &LogicalPlan| -> bool {
        let mut found = false;
        let _ = p.apply(|n| {
            if let LogicalPlan::TableScan(scan) = n {
                if streams.iter().any(|s| s == scan.table_name.table()) {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        found
    };
    let mut problem: Option<&str> = None;
    let _ = plan.apply(|n| {
        problem = match n {
            LogicalPlan::Aggregate(_) => {
                Some("a streaming table's query aggregates (GROUP BY, count, sum, DISTINCT, ...)")
            }
            LogicalPlan::Distinct(_) => Some("a streaming table's query uses DISTINCT"),
            LogicalPlan::Window(_) => Some("a streaming table's query uses a window function"),
            LogicalPlan::Join(j) if reads_stream(&j.left) && reads_stream(&j.right) => {
                Some("a streaming table's query joins two streams")
            }
            _ => None,
        };
        Ok(if problem.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    match problem {
        Some(message) => Err(PlanError::at(file, loc, message, fix)),
        None => Ok(()),
    }
}

/// The output schema a dataset is known to have before it is written.
pub type Schemas = BTreeMap<FullName, SchemaRef>;
