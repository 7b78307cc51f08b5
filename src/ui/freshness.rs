//! Freshness: how long a landed file took to reach gold. For each file that a job's
//! ingest sent to Kafka (its ingest checkpoint keeps the file's modification time and
//! when it was done), the delay from the file's modification time to the first commit
//! of every gold table (the tables nothing in the graph reads) at or after that.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::api::{ApiError, Ui};
use crate::bundle::job::TaskKind;
use crate::checkpoint::IngestCheckpoint;

/// Files shown: the last ones landed.
const FILES: usize = 200;
/// Commits of each gold table read to place them.
const COMMITS: i64 = 400;

/// The freshness points, oldest first, or why there are none.
pub async fn series(ui: &Ui) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let settings = &ui.settings;
    let mut landed: Vec<(String, i64, DateTime<Utc>)> = Vec::new();
    for job in settings.jobs.values() {
        for task in &job.tasks {
            let TaskKind::CsvToKafka(c) = &task.kind else {
                continue;
            };
            let Ok(checkpoint) = IngestCheckpoint::load(&settings.state_dir, &c.topic) else {
                continue;
            };
            for (name, file) in checkpoint.completed_files() {
                if let Ok(done) = DateTime::parse_from_rfc3339(&file.completed_at) {
                    landed.push((name.clone(), file.modified_ms, done.with_timezone(&Utc)));
                }
            }
        }
    }
    if landed.is_empty() {
        return Ok((
            Vec::new(),
            Some("no landing files have been ingested by a job of this bundle yet: freshness is the delay from a landing file to gold, so it needs a csv_to_kafka task".into()),
        ));
    }
    landed.sort_by_key(|(_, _, done)| *done);
    let landed = &landed[landed.len().saturating_sub(FILES)..];

    let view = super::graph::build(ui).await?;
    let gold: Vec<String> = view
        .nodes
        .iter()
        .filter(|n| n.table.is_some() && !view.edges.iter().any(|e| e.from == n.id))
        .filter_map(|n| n.table.clone())
        .collect();
    let mut commits: Vec<Vec<DateTime<Utc>>> = Vec::new();
    for table in &gold {
        let Ok(name) = settings.warehouse.parse_name(table) else {
            continue;
        };
        let Some(latest) = ui.tables.version(&name) else {
            continue;
        };
        let mut times: Vec<DateTime<Utc>> = ui
            .tables
            .history(&name, latest, COMMITS)
            .into_iter()
            .filter_map(|c| c.timestamp)
            .collect();
        times.sort();
        commits.push(times);
    }
    if commits.is_empty() {
        return Ok((
            Vec::new(),
            Some("no gold table has been written yet".into()),
        ));
    }
    let mut points = Vec::new();
    for (file, modified_ms, done) in landed {
        // The moment every gold table had a commit at or after the file was sent.
        let reached = commits
            .iter()
            .map(|times| times.iter().find(|t| *t >= done).copied())
            .collect::<Option<Vec<_>>>()
            .and_then(|t| t.into_iter().max());
        let (Some(reached), Some(modified)) =
            (reached, DateTime::from_timestamp_millis(*modified_ms))
        else {
            continue;
        };
        points.push(json!({
            "t": reached.timestamp_millis() as f64 / 1000.0,
            "seconds": (reached - modified).num_milliseconds().max(0) as f64 / 1000.0,
            "file": file,
        }));
    }
    let note = points
        .is_empty()
        .then(|| "the landed files have not reached gold yet".to_string());
    Ok((points, note))
}
