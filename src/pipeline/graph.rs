//! The dataflow graph of a pipeline: its datasets (streaming tables, materialized views,
//! temporary views), the flows that fill them, and the order they run in.
//!
//! Dependencies come from the table references of the queries, never from `depends_on`:
//! a flow that reads a dataset of the pipeline runs after every flow into that dataset.
//! Two definitions of one name, a flow into a view, and cycles are errors at the place in
//! the SQL that causes them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::parse::{
    AutoCdcDef, Definition, FlowBody, Loc, Name, QueryDef, SourceKind, TableDef, TableKind, ViewDef,
};
use crate::bundle::PipelineSpec;
use crate::catalog::{TableName, Warehouse};

/// A table's full name: `catalog.schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FullName {
    pub catalog: String,
    pub schema: String,
    pub table: String,
}

impl fmt::Display for FullName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.catalog, self.schema, self.table)
    }
}

impl FullName {
    /// The name within its catalog (`schema.table`).
    pub fn table_name(&self) -> TableName {
        TableName::new(&self.schema, &self.table)
    }

    /// The warehouse of its catalog under `root`.
    pub fn warehouse(&self, root: &std::path::Path) -> Warehouse {
        Warehouse::new(root, &self.catalog)
    }

    /// `schema.table` within `catalog`, the full name elsewhere: how progress names it.
    pub fn short(&self, catalog: &str) -> String {
        if self.catalog == catalog {
            format!("{}.{}", self.schema, self.table)
        } else {
            self.to_string()
        }
    }
}

/// What a dataset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    StreamingTable,
    MaterializedView,
    TemporaryView,
}

impl DatasetKind {
    pub fn label(self) -> &'static str {
        match self {
            DatasetKind::StreamingTable => "streaming table",
            DatasetKind::MaterializedView => "materialized view",
            DatasetKind::TemporaryView => "temporary view",
        }
    }
}

/// A dataset defined by the pipeline.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: FullName,
    pub kind: DatasetKind,
    pub file: String,
    pub loc: Loc,
    /// The table's definition (columns, expectations, properties); `None` for a view.
    pub table: Option<TableDef>,
    /// A temporary view's query and its inputs.
    pub view: Option<(QueryDef, Vec<Input>)>,
    /// A temporary view's definition (its column names and expectations).
    pub view_def: Option<ViewDef>,
    /// The flows into it (indexes into [`Graph::flows`]).
    pub flows: Vec<usize>,
}

impl Dataset {
    /// `<catalog>.quarantine.<table>`, or the table `TBLPROPERTIES ('quarantine' = ...)`
    /// names.
    pub fn quarantine(&self) -> Option<FullName> {
        let table = self.table.as_ref()?;
        let named = table.properties.get("quarantine");
        Some(match named.map(|n| n.split('.').collect::<Vec<_>>()) {
            Some(parts) if parts.len() == 2 => FullName {
                catalog: self.name.catalog.clone(),
                schema: parts[0].into(),
                table: parts[1].into(),
            },
            Some(parts) if parts.len() == 3 => FullName {
                catalog: parts[0].into(),
                schema: parts[1].into(),
                table: parts[2].into(),
            },
            _ => FullName {
                catalog: self.name.catalog.clone(),
                schema: "quarantine".into(),
                table: self.name.table.clone(),
            },
        })
    }
}

/// How a flow writes its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    /// Appends the new rows of its streams (a streaming table).
    Append,
    /// Rewrites the target with the query's result when an input changed.
    Materialize,
    /// Merges change events into the target (`AUTO CDC INTO`): [`Flow::cdc`] says how.
    AutoCdc,
}

/// A flow: a query whose result goes into a dataset.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub target: FullName,
    pub kind: FlowKind,
    pub file: String,
    pub loc: Loc,
    pub query: QueryDef,
    /// The relations the query names.
    pub inputs: Vec<Input>,
    /// The clauses of an AUTO CDC flow.
    pub cdc: Option<Box<AutoCdcDef>>,
}

/// One relation of a query, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The name the query was rewritten to read it by.
    pub placeholder: String,
    /// Whether it is read incrementally (`STREAM`).
    pub stream: bool,
    pub file: String,
    pub loc: Loc,
    pub source: InputSource,
}

/// What a relation reads.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// A dataset of this pipeline (a table, or a temporary view).
    Dataset(FullName),
    /// A Delta table that the pipeline does not define.
    External(FullName),
    /// `read_files(path, ...)`.
    Files {
        path: String,
        options: BTreeMap<String, String>,
    },
    /// `read_kafka(...)`.
    Kafka { options: BTreeMap<String, String> },
}

impl Input {
    /// How the progress of a stream on this input is named (`<flow>/<this>`).
    pub fn progress_name(&self, catalog: &str) -> String {
        match &self.source {
            InputSource::Dataset(n) | InputSource::External(n) => n.short(catalog),
            InputSource::Files { path, .. } => format!("read_files:{path}"),
            InputSource::Kafka { options } => format!(
                "read_kafka:{}",
                options.get("subscribe").map(String::as_str).unwrap_or("")
            ),
        }
    }
}

/// A node of the drawn graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub label: String,
    /// `streaming table`, `materialized view`, `temporary view`, `table` (a Delta table
    /// the pipeline does not define), `files` or `kafka`.
    pub kind: &'static str,
    /// The table or view it is.
    pub name: Option<FullName>,
    /// What a source reads: the path of `read_files`, the topic of `read_kafka`.
    pub source: Option<String>,
}

/// An edge of the drawn graph: from, to (node labels), and whether it streams.
pub type Edge = (String, String, bool);

/// A problem in the pipeline's SQL found while building the graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{}:{}: {message}. {fix}", loc.line, loc.column)]
pub struct GraphError {
    pub file: String,
    pub loc: Loc,
    pub message: String,
    pub fix: String,
}

/// A pipeline's datasets and flows, checked, with the order the flows run in.
#[derive(Debug, Clone)]
pub struct Graph {
    pub pipeline: PipelineSpec,
    pub datasets: BTreeMap<FullName, Dataset>,
    pub flows: Vec<Flow>,
    /// Flow indexes in the order they run: every flow after the flows it reads from.
    pub order: Vec<usize>,
}

/// One parsed SQL file.
pub struct ParsedFile {
    pub file: String,
    pub definitions: Vec<Definition>,
}

impl Graph {
    /// Builds and checks the graph of `files`, parsed.
    pub fn build(pipeline: &PipelineSpec, files: Vec<ParsedFile>) -> Result<Graph, GraphError> {
        let mut graph = Graph {
            pipeline: pipeline.clone(),
            datasets: BTreeMap::new(),
            flows: Vec::new(),
            order: Vec::new(),
        };
        // Datasets first, so that flows and references can find any of them.
        let mut pending_flows = Vec::new();
        for parsed in files {
            for def in parsed.definitions {
                match def {
                    Definition::Table(t) => {
                        let name = graph.resolve(&t.name);
                        let kind = match t.kind {
                            TableKind::StreamingTable => DatasetKind::StreamingTable,
                            TableKind::MaterializedView => DatasetKind::MaterializedView,
                        };
                        graph.define(Dataset {
                            name: name.clone(),
                            kind,
                            file: parsed.file.clone(),
                            loc: t.loc,
                            table: Some(t.clone()),
                            view: None,
                            view_def: None,
                            flows: Vec::new(),
                        })?;
                        if let Some(q) = &t.query {
                            let flow_kind = match kind {
                                DatasetKind::MaterializedView => FlowKind::Materialize,
                                _ => FlowKind::Append,
                            };
                            pending_flows.push((
                                t.name.parts.last().cloned().unwrap_or_default(),
                                name,
                                t.name.clone(),
                                flow_kind,
                                parsed.file.clone(),
                                t.loc,
                                q.clone(),
                                None,
                            ));
                        }
                    }
                    Definition::View(v) => {
                        let name = graph.resolve(&v.name);
                        graph.define(Dataset {
                            name,
                            kind: DatasetKind::TemporaryView,
                            file: parsed.file.clone(),
                            loc: v.loc,
                            table: None,
                            view: Some((v.query.clone(), Vec::new())),
                            view_def: Some(v.clone()),
                            flows: Vec::new(),
                        })?;
                    }
                    Definition::Flow(f) => match f.body {
                        FlowBody::Insert(q) => pending_flows.push((
                            f.name.parts.last().cloned().unwrap_or_default(),
                            graph.resolve(&f.target),
                            f.target.clone(),
                            FlowKind::Append,
                            parsed.file.clone(),
                            f.loc,
                            q,
                            None,
                        )),
                        FlowBody::AutoCdc(c) => {
                            if !c.stream {
                                return Err(GraphError {
                                    file: parsed.file.clone(),
                                    loc: c.source.loc,
                                    message: format!("AUTO CDC reads `{}` whole; it reads its change events as a stream", c.source),
                                    fix: format!("write FROM STREAM({})", c.source),
                                });
                            }
                            pending_flows.push((
                                f.name.parts.last().cloned().unwrap_or_default(),
                                graph.resolve(&f.target),
                                f.target.clone(),
                                FlowKind::AutoCdc,
                                parsed.file.clone(),
                                f.loc,
                                c.query.clone(),
                                Some(Box::new(c)),
                            ))
                        }
                    },
                }
            }
        }
        // Resolve the views' inputs.
        let view_names: Vec<FullName> = graph
            .datasets
            .values()
            .filter(|d| d.kind == DatasetKind::TemporaryView)
            .map(|d| d.name.clone())
            .collect();
        for name in view_names {
            let d = &graph.datasets[&name];
            let (q, _) = d.view.clone().expect("a view has its query");
            let inputs = graph.inputs(&d.file, &q)?;
            graph.datasets.get_mut(&name).expect("defined").view = Some((q, inputs));
        }
        let mut flow_names = BTreeSet::new();
        for (name, target, written, kind, file, loc, query, cdc) in pending_flows {
            let Some(dataset) = graph.datasets.get(&target) else {
                return Err(GraphError {
                    file,
                    loc: written.loc,
                    message: format!("flow `{name}` writes `{written}`, which the pipeline does not define"),
                    fix: format!("declare it with CREATE STREAMING TABLE {written}; (a streaming table without AS is the target of flows)"),
                });
            };
            if kind == FlowKind::Append && dataset.kind != DatasetKind::StreamingTable {
                return Err(GraphError {
                    file,
                    loc: written.loc,
                    message: format!(
                        "flow `{name}` inserts into `{written}`, a {}",
                        dataset.kind.label()
                    ),
                    fix: "flows append to streaming tables only: declare the target with CREATE STREAMING TABLE, or put the query in the materialized view's AS".into(),
                });
            }
            if kind == FlowKind::AutoCdc {
                let other = dataset.flows.first().map(|&i| &graph.flows[i].name);
                let own_query = dataset.table.as_ref().is_some_and(|t| t.query.is_some());
                if dataset.kind != DatasetKind::StreamingTable || own_query || other.is_some() {
                    return Err(GraphError {
                        file,
                        loc: written.loc,
                        message: format!(
                            "AUTO CDC flow `{name}` writes `{written}`, which {}",
                            match other {
                                Some(o) => format!("flow `{o}` also writes"),
                                None if own_query => "has a query of its own".into(),
                                None => format!("is a {}", dataset.kind.label()),
                            }
                        ),
                        fix: format!("an AUTO CDC target is a streaming table declared without AS and written by this flow alone: CREATE OR REFRESH STREAMING TABLE {written};"),
                    });
                }
            } else if let Some(&first) = dataset.flows.first() {
                if graph.flows[first].kind == FlowKind::AutoCdc {
                    return Err(GraphError {
                        file,
                        loc: written.loc,
                        message: format!(
                            "flow `{name}` inserts into `{written}`, which AUTO CDC flow `{}` maintains",
                            graph.flows[first].name
                        ),
                        fix: "an AUTO CDC target is written by its AUTO CDC flow alone: insert into another table".into(),
                    });
                }
            }
            if !flow_names.insert(name.clone()) {
                return Err(GraphError {
                    file,
                    loc,
                    message: format!("two flows are named `{name}`"),
                    fix: "give each flow its own name (a table's own query is a flow named after the table)".into(),
                });
            }
            let inputs = graph.inputs(&file, &query)?;
            let index = graph.flows.len();
            graph.flows.push(Flow {
                name,
                target: target.clone(),
                kind,
                file,
                loc,
                query,
                inputs,
                cdc,
            });
            graph
                .datasets
                .get_mut(&target)
                .expect("checked above")
                .flows
                .push(index);
        }
        graph.order = graph.topological()?;
        Ok(graph)
    }

    /// A name as written, made full with the pipeline's catalog and schema.
    pub fn resolve(&self, name: &Name) -> FullName {
        let p = &self.pipeline;
        let (catalog, schema, table) = match name.parts.as_slice() {
            [t] => (p.catalog.clone(), p.schema.clone(), t.clone()),
            [s, t] => (p.catalog.clone(), s.clone(), t.clone()),
            [c, s, t, ..] => (c.clone(), s.clone(), t.clone()),
            [] => (p.catalog.clone(), p.schema.clone(), String::new()),
        };
        FullName {
            catalog,
            schema,
            table,
        }
    }

    fn define(&mut self, dataset: Dataset) -> Result<(), GraphError> {
        if let Some(first) = self.datasets.get(&dataset.name) {
            return Err(GraphError {
                file: dataset.file.clone(),
                loc: dataset.loc,
                message: format!(
                    "`{}` is defined twice; it is already a {} at {}:{}:{}",
                    dataset.name,
                    first.kind.label(),
                    first.file,
                    first.loc.line,
                    first.loc.column
                ),
                fix: "keep one definition; to append from several queries, declare one streaming table and write CREATE FLOW ... AS INSERT INTO it BY NAME".into(),
            });
        }
        self.datasets.insert(dataset.name.clone(), dataset);
        Ok(())
    }

    /// The resolved relations of a query.
    fn inputs(&self, file: &str, query: &QueryDef) -> Result<Vec<Input>, GraphError> {
        let mut out = Vec::new();
        for s in &query.sources {
            let (stream, source) = match &s.kind {
                SourceKind::Table { name, stream } => {
                    // A one-part name may be a temporary view of the pipeline.
                    let full = self.resolve(name);
                    let source = match self.datasets.get(&full) {
                        Some(d) => {
                            if *stream && d.kind == DatasetKind::MaterializedView {
                                return Err(GraphError {
                                    file: file.into(),
                                    loc: s.loc,
                                    message: format!("STREAM({name}) reads a materialized view incrementally, but a materialized view is rewritten on every refresh"),
                                    fix: format!("read it without STREAM (a static read), or make `{name}` a streaming table"),
                                });
                            }
                            InputSource::Dataset(full)
                        }
                        None => InputSource::External(full),
                    };
                    (*stream, source)
                }
                SourceKind::ReadFiles {
                    path,
                    options,
                    stream,
                } => (
                    *stream,
                    InputSource::Files {
                        path: path.clone(),
                        options: options.clone(),
                    },
                ),
                SourceKind::ReadKafka { options, stream } => (
                    *stream,
                    InputSource::Kafka {
                        options: options.clone(),
                    },
                ),
            };
            out.push(Input {
                placeholder: s.placeholder.clone(),
                stream,
                file: file.into(),
                loc: s.loc,
                source,
            });
        }
        Ok(out)
    }

    /// The datasets of the pipeline that `inputs` read, through views.
    pub fn upstream(&self, inputs: &[Input]) -> BTreeSet<FullName> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<&Input> = inputs.iter().collect();
        let mut seen_views = BTreeSet::new();
        while let Some(input) = todo.pop() {
            if let InputSource::Dataset(name) = &input.source {
                let d = &self.datasets[name];
                if let Some((_, view_inputs)) = &d.view {
                    if seen_views.insert(name.clone()) {
                        todo.extend(view_inputs.iter());
                    }
                } else {
                    out.insert(name.clone());
                }
            }
        }
        out
    }

    /// Every input of a flow, with those of the views it reads (transitively), each once.
    pub fn all_inputs<'a>(&'a self, inputs: &'a [Input]) -> Vec<&'a Input> {
        let mut out: Vec<&Input> = Vec::new();
        let mut todo: Vec<&Input> = inputs.iter().rev().collect();
        while let Some(input) = todo.pop() {
            if out.iter().any(|i| i.placeholder == input.placeholder) {
                continue;
            }
            out.push(input);
            if let InputSource::Dataset(name) = &input.source {
                if let Some((_, view_inputs)) = &self.datasets[name].view {
                    todo.extend(view_inputs.iter().rev());
                }
            }
        }
        out
    }

    /// The flows in an order where each runs after the flows into what it reads; a cycle
    /// is an error naming it.
    fn topological(&self) -> Result<Vec<usize>, GraphError> {
        // Dataset → the datasets its flows (and, for a view, its query) read.
        let mut deps: BTreeMap<&FullName, BTreeSet<FullName>> = BTreeMap::new();
        for d in self.datasets.values() {
            let mut set = BTreeSet::new();
            if let Some((_, inputs)) = &d.view {
                for i in inputs {
                    if let InputSource::Dataset(n) = &i.source {
                        set.insert(n.clone());
                    }
                }
            }
            for &f in &d.flows {
                for i in &self.flows[f].inputs {
                    if let InputSource::Dataset(n) = &i.source {
                        set.insert(n.clone());
                    }
                }
            }
            deps.insert(&d.name, set);
        }
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        let mut marks: BTreeMap<FullName, Mark> = BTreeMap::new();
        let mut sorted: Vec<FullName> = Vec::new();
        fn visit(
            n: &FullName,
            deps: &BTreeMap<&FullName, BTreeSet<FullName>>,
            marks: &mut BTreeMap<FullName, Mark>,
            path: &mut Vec<FullName>,
            sorted: &mut Vec<FullName>,
        ) -> Result<(), Vec<FullName>> {
            match marks.get(n) {
                Some(Mark::Done) => return Ok(()),
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|p| p == n).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(n.clone());
                    return Err(cycle);
                }
                None => {}
            }
            marks.insert(n.clone(), Mark::Visiting);
            path.push(n.clone());
            for d in deps.get(n).into_iter().flatten() {
                visit(d, deps, marks, path, sorted)?;
            }
            path.pop();
            marks.insert(n.clone(), Mark::Done);
            sorted.push(n.clone());
            Ok(())
        }
        for n in self.datasets.keys() {
            let mut path = Vec::new();
            if let Err(cycle) = visit(n, &deps, &mut marks, &mut path, &mut sorted) {
                let first = &self.datasets[&cycle[0]];
                let names: Vec<String> = cycle.iter().map(|c| c.table.clone()).collect();
                return Err(GraphError {
                    file: first.file.clone(),
                    loc: first.loc,
                    message: format!("the pipeline has a cycle: {}", names.join(" → ")),
                    fix: "a dataset cannot read, directly or through others, what it feeds: remove one of these references".into(),
                });
            }
        }
        let mut order = Vec::new();
        for name in sorted {
            order.extend(self.datasets[&name].flows.iter().copied());
        }
        Ok(order)
    }

    /// The datasets in the order they are filled (views where they are first needed).
    pub fn dataset_order(&self) -> Vec<&Dataset> {
        let mut out: Vec<&Dataset> = Vec::new();
        for &f in &self.order {
            let d = &self.datasets[&self.flows[f].target];
            if !out.iter().any(|o| o.name == d.name) {
                out.push(d);
            }
        }
        for d in self.datasets.values() {
            if !out.iter().any(|o| o.name == d.name) {
                out.push(d);
            }
        }
        out
    }

    /// What a dataset reads: its view's relations, or those of its flows.
    fn dataset_inputs<'a>(&'a self, d: &'a Dataset) -> Vec<&'a Input> {
        match &d.view {
            Some((_, inputs)) => inputs.iter().collect(),
            None => d
                .flows
                .iter()
                .flat_map(|&f| self.flows[f].inputs.iter())
                .collect(),
        }
    }

    /// The graph as text: each dataset with its kind and what it reads.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for d in self.dataset_order() {
            out.push_str(&format!("{} ({})\n", d.name, d.kind.label()));
            let inputs = self.dataset_inputs(d);
            for i in inputs {
                out.push_str(&format!(
                    "  <- {}{}\n",
                    if i.stream { "STREAM " } else { "" },
                    self.input_label(i)
                ));
            }
        }
        out
    }

    fn input_label(&self, i: &Input) -> String {
        match &i.source {
            InputSource::Dataset(n) | InputSource::External(n) => n.to_string(),
            InputSource::Files { path, .. } => format!("read_files('{path}')"),
            InputSource::Kafka { options } => format!(
                "read_kafka('{}')",
                options.get("subscribe").map(String::as_str).unwrap_or("")
            ),
        }
    }

    /// The nodes and the edges `(from, to, streaming)` between their labels, for
    /// mermaid, dot and the UI.
    pub fn drawn(&self) -> (Vec<Node>, Vec<Edge>) {
        let mut nodes: Vec<Node> = Vec::new();
        let mut edges = Vec::new();
        let add = |node: Node, nodes: &mut Vec<Node>| {
            if !nodes.iter().any(|n| n.label == node.label) {
                nodes.push(node);
            }
        };
        for d in self.dataset_order() {
            add(
                Node {
                    label: d.name.to_string(),
                    kind: d.kind.label(),
                    name: Some(d.name.clone()),
                    source: None,
                },
                &mut nodes,
            );
            let inputs = self.dataset_inputs(d);
            for i in inputs {
                let label = self.input_label(i);
                let (kind, name, source) = match &i.source {
                    InputSource::Dataset(n) => {
                        (self.datasets[n].kind.label(), Some(n.clone()), None)
                    }
                    InputSource::External(n) => ("table", Some(n.clone()), None),
                    InputSource::Files { path, .. } => ("files", None, Some(path.clone())),
                    InputSource::Kafka { options } => {
                        ("kafka", None, options.get("subscribe").cloned())
                    }
                };
                add(
                    Node {
                        label: label.clone(),
                        kind,
                        name,
                        source,
                    },
                    &mut nodes,
                );
                edges.push((label, d.name.to_string(), i.stream));
            }
        }
        (nodes, edges)
    }

    /// The graph as a Mermaid flowchart.
    pub fn render_mermaid(&self) -> String {
        let (nodes, edges) = self.drawn();
        let id = |label: &str| nodes.iter().position(|n| n.label == label).unwrap_or(0);
        let mut out = String::from("flowchart LR\n");
        for (i, Node { label, kind, .. }) in nodes.iter().enumerate() {
            let text = format!("{label}<br/><i>{kind}</i>").replace('"', "'");
            let shape = match *kind {
                "materialized view" => format!("n{i}[[\"{text}\"]]"),
                "temporary view" => format!("n{i}([\"{text}\"])"),
                "files" | "kafka" => format!("n{i}[/\"{text}\"/]"),
                _ => format!("n{i}[\"{text}\"]"),
            };
            out.push_str(&format!("  {shape}\n"));
        }
        for (from, to, stream) in &edges {
            let arrow = if *stream { "==>" } else { "-->" };
            out.push_str(&format!("  n{} {arrow} n{}\n", id(from), id(to)));
        }
        out
    }

    /// The graph in Graphviz's dot language.
    pub fn render_dot(&self) -> String {
        let (nodes, edges) = self.drawn();
        let mut out = String::from("digraph pipeline {\n  rankdir=LR;\n  node [shape=box];\n");
        for Node { label, kind, .. } in &nodes {
            let shape = match *kind {
                "materialized view" => "box3d",
                "temporary view" => "ellipse",
                "files" | "kafka" => "parallelogram",
                _ => "box",
            };
            out.push_str(&format!(
                "  \"{label}\" [shape={shape}, tooltip=\"{kind}\"];\n"
            ));
        }
        for (from, to, stream) in &edges {
            let style = if *stream { " [style=bold]" } else { "" };
            out.push_str(&format!("  \"{from}\" -> \"{to}\"{style};\n"));
        }
        out.push_str("}\n");
        out
    }
}
