//! The graph of the whole bundle as the UI draws it: the sources, topics and tables of
//! every job's tasks, and the datasets of every pipeline, joined where they name the same
//! table, each with its state in the last run or update, its rows and when it changed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::api::{ApiError, Ui};
use super::runs::{self, RunRow};
use crate::bundle::job::TaskKind;
use crate::catalog::TableName;
use crate::pipeline::graph::FullName;

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub id: String,
    pub label: String,
    pub kind: &'static str,
    /// The pipeline or job it belongs to.
    pub group: String,
    /// `schema.table` when it is a Delta table of the target's catalog.
    pub table: Option<String>,
    /// `running`, `succeeded`, `failed`, `skipped` or `idle` (never run).
    pub state: &'static str,
    pub rows: Option<u64>,
    pub version: Option<i64>,
    pub changed: Option<DateTime<Utc>>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub stream: bool,
    pub label: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct View {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Pipelines whose SQL does not build a graph, with the error.
    pub errors: Vec<String>,
}

/// A node's state from a job_runs row or a flow's status.
fn state_of(recorded: &str) -> &'static str {
    match recorded {
        "SUCCEEDED" | "COMPLETED" | "UP_TO_DATE" => "succeeded",
        "FAILED" | "INTERRUPTED" => "failed",
        "SKIPPED" | "CANCELED" => "skipped",
        "RUNNING" => "running",
        _ => "idle",
    }
}

struct Builder {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

impl Builder {
    /// Adds a node unless one with its id is there already.
    fn node(&mut self, node: Node) {
        if !self.nodes.iter().any(|n| n.id == node.id) {
            self.nodes.push(node);
        }
    }

    fn edge(&mut self, from: &str, to: &str, stream: bool, label: Option<String>) {
        self.edges.push(Edge {
            from: from.into(),
            to: to.into(),
            stream,
            label,
        });
    }
}

fn node(id: String, label: String, kind: &'static str, group: &str) -> Node {
    Node {
        id,
        label,
        kind,
        group: group.into(),
        table: None,
        state: "idle",
        rows: None,
        version: None,
        changed: None,
        detail: None,
    }
}

fn topic_id(topic: &str) -> String {
    format!("kafka:{topic}")
}

/// Builds the graph of the bundle, with every node's state read from the tables.
pub async fn build(ui: &Ui) -> Result<View, ApiError> {
    let settings = &ui.settings;
    let catalog = settings.warehouse.catalog().to_string();
    let holder = super::live::run_holder(&settings.state_dir);
    let since = holder.as_deref().and_then(super::live::holder_since);
    let mut b = Builder {
        nodes: Vec::new(),
        edges: Vec::new(),
    };
    let table_id = |name: &TableName| format!("{catalog}.{name}");
    let mut errors = Vec::new();

    // The tasks of the jobs: landing files → topic → table; their state is their last run's.
    let task_keys: Vec<String> = settings
        .jobs
        .values()
        .flat_map(|j| j.tasks.iter().map(|t| t.task_key.clone()))
        .collect();
    let last = runs::last_task_rows(&ui.tables, &task_keys).await?;
    let task_state = |key: &str| -> &'static str {
        let row: Option<&RunRow> = last.get(key);
        match (since, row) {
            (Some(s), Some(r)) if r.end.is_some_and(|e| e < s) => "running",
            (Some(_), None) => "running",
            (_, Some(r)) => state_of(&r.state),
            (None, None) => "idle",
        }
    };
    for job in settings.jobs.values() {
        for task in &job.tasks {
            match &task.kind {
                TaskKind::CsvToKafka(c) => {
                    let landing = settings
                        .landing_dir
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default();
                    let files = format!("files:{landing}");
                    let mut n = node(files.clone(), "landing files".into(), "files", &job.name);
                    n.detail = Some(landing);
                    n.state = task_state(&task.task_key);
                    b.node(n);
                    let mut t = node(topic_id(&c.topic), c.topic.clone(), "kafka", &job.name);
                    t.state = task_state(&task.task_key);
                    t.detail = Some(format!("Kafka topic, written by task {}", task.task_key));
                    b.node(t);
                    b.edge(
                        &files,
                        &topic_id(&c.topic),
                        true,
                        Some(task.task_key.clone()),
                    );
                }
                TaskKind::KafkaToDelta(k) => {
                    let Ok(name) = settings.warehouse.parse_name(&k.table) else {
                        continue;
                    };
                    let id = table_id(&name);
                    let mut n = node(id.clone(), name.to_string(), "table", &job.name);
                    n.table = Some(name.to_string());
                    n.state = task_state(&task.task_key);
                    n.detail = Some(format!("written by task {}", task.task_key));
                    b.node(n);
                    b.node(node(
                        topic_id(&k.topic),
                        k.topic.clone(),
                        "kafka",
                        &job.name,
                    ));
                    b.edge(&topic_id(&k.topic), &id, true, Some(task.task_key.clone()));
                }
                TaskKind::PipelineTask(_) => {}
            }
        }
    }

    // The pipelines: their datasets, with the state of the flows of their last update.
    for spec in settings.pipelines.values() {
        let graph = match crate::pipeline::load(spec) {
            Ok(g) => g,
            Err(e) => {
                errors.push(format!("pipeline {}: {e}", spec.name));
                continue;
            }
        };
        let last = runs::updates(&ui.tables, Some(&spec.key), 0, 1, holder.is_some())
            .await?
            .items
            .updates
            .into_iter()
            .next();
        let mut flow_states: BTreeMap<String, &'static str> = BTreeMap::new();
        if let Some(u) = &last {
            for f in &u.flows {
                // A dataset with several flows shows the worst of them.
                let s = state_of(&f.state);
                let e = flow_states.entry(f.dataset.clone()).or_insert(s);
                if s == "failed" {
                    *e = s;
                }
            }
        }
        let (nodes, edges) = graph.drawn();
        let id_of = |n: &crate::pipeline::graph::Node| match (&n.name, n.kind) {
            (Some(name), _) => name.to_string(),
            (None, "kafka") => topic_id(n.source.as_deref().unwrap_or_default()),
            _ => n.label.clone(),
        };
        let ids: BTreeMap<String, String> =
            nodes.iter().map(|n| (n.label.clone(), id_of(n))).collect();
        for n in &nodes {
            let id = id_of(n);
            let mut out = node(
                id.clone(),
                short(&n.name, &catalog, &n.label),
                n.kind,
                &spec.name,
            );
            out.detail = n.source.clone();
            if let Some(name) = n.name.as_ref().filter(|_| n.kind != "temporary view") {
                if name.catalog == catalog {
                    out.table = Some(name.table_name().to_string());
                }
            }
            out.state = match (&last, flow_states.get(&id)) {
                (_, Some(s)) => s,
                (Some(u), None) if u.state == "RUNNING" && n.name.is_some() => "running",
                (Some(u), None) if n.kind == "temporary view" => state_of(&u.state),
                (Some(_), None)
                    if n.name
                        .as_ref()
                        .is_some_and(|d| graph.datasets.contains_key(d)) =>
                {
                    "skipped"
                }
                _ => "idle",
            };
            b.node(out);
        }
        for (from, to, stream) in edges {
            b.edge(&ids[&from], &ids[&to], stream, None);
        }
        for (sink, def) in &spec.sinks {
            let mut n = node(
                format!("sink:{}:{sink}", spec.key),
                sink.clone(),
                "sink",
                &spec.name,
            );
            n.detail = Some(def.format.clone());
            b.node(n);
        }
    }

    // Rows, version and last change of every node that is a table.
    for n in &mut b.nodes {
        let Some(table) = &n.table else { continue };
        let Ok(name) = settings.warehouse.parse_name(table) else {
            continue;
        };
        if let Ok(stats) = ui.tables.stats(&name).await {
            n.rows = stats.rows;
            n.version = Some(stats.version);
            n.changed = stats.changed;
        }
    }
    Ok(View {
        nodes: b.nodes,
        edges: b.edges,
        errors,
    })
}

/// `schema.table` for a table of the catalog, the full name for another, the label for
/// a source.
fn short(name: &Option<FullName>, catalog: &str, label: &str) -> String {
    match name {
        Some(n) => n.short(catalog),
        None => label.into(),
    }
}
