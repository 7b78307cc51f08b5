//! What the UI reads of a Delta table, reading only what a page shows:
//! - its latest version, from the log's commit files (one `stat` per table and tick once
//!   the version is known);
//! - its rows, files and bytes, from the file statistics of the log, cached by version;
//! - its history, from the commit files of the versions on the page;
//! - a page of its rows.
//!
//! Nothing here writes: a table is opened only once its log has a commit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use deltalake::arrow::record_batch::RecordBatch;
use serde::Serialize;

use super::api::ApiError;
use crate::catalog::{TableName, Warehouse};

fn commit_path(dir: &Path, version: i64) -> PathBuf {
    dir.join("_delta_log").join(format!("{version:020}.json"))
}

/// The latest version of the table at `dir`: probed forward from `hint` (a version seen
/// before), or found by listing the log when there is no hint or its commit is gone.
pub fn latest_version(dir: &Path, hint: Option<i64>) -> Option<i64> {
    if let Some(mut v) = hint.filter(|&h| commit_path(dir, h).is_file()) {
        while commit_path(dir, v + 1).is_file() {
            v += 1;
        }
        return Some(v);
    }
    std::fs::read_dir(dir.join("_delta_log"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let version = name.strip_suffix(".json")?;
            (version.len() == 20).then(|| version.parse::<i64>().ok())?
        })
        .max()
}

/// One commit of a table, from its commit file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Commit {
    pub version: i64,
    pub timestamp: Option<DateTime<Utc>>,
    pub operation: Option<String>,
    /// Rows in the files the commit added (from their statistics).
    pub rows_added: Option<i64>,
    pub files_added: u64,
    pub files_removed: u64,
    /// The progress the commit recorded: `txn` actions.
    pub txns: Vec<Txn>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Txn {
    pub app_id: String,
    pub version: i64,
}

/// Reads commit `version` of the table at `dir`; `None` once the log no longer has it.
pub fn read_commit(dir: &Path, version: i64) -> Option<Commit> {
    let text = std::fs::read_to_string(commit_path(dir, version)).ok()?;
    let mut commit = Commit {
        version,
        ..Commit::default()
    };
    for line in text.lines() {
        let Ok(action) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(info) = action.get("commitInfo") {
            commit.timestamp = info
                .get("timestamp")
                .and_then(|t| t.as_i64())
                .and_then(DateTime::from_timestamp_millis);
            commit.operation = info
                .get("operation")
                .and_then(|o| o.as_str())
                .map(String::from);
        } else if let Some(add) = action.get("add") {
            commit.files_added += 1;
            let records = add
                .get("stats")
                .and_then(|s| s.as_str())
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|s| s.get("numRecords").and_then(|n| n.as_i64()));
            commit.rows_added = match (commit.rows_added, records) {
                (Some(sum), Some(n)) => Some(sum + n),
                (None, Some(n)) if commit.files_added == 1 => Some(n),
                _ => None,
            };
        } else if action.get("remove").is_some() {
            commit.files_removed += 1;
        } else if let Some(txn) = action.get("txn") {
            commit.txns.push(Txn {
                app_id: txn
                    .get("appId")
                    .and_then(|a| a.as_str())
                    .unwrap_or_default()
                    .into(),
                version: txn.get("version").and_then(|v| v.as_i64()).unwrap_or(-1),
            });
        }
    }
    if commit.files_added == 0 {
        commit.rows_added = Some(0);
    }
    Some(commit)
}

/// A table's size and state at one version.
#[derive(Debug, Clone, Serialize)]
pub struct TableStats {
    pub version: i64,
    /// Rows, from the statistics of its files (`None` if a file has none).
    pub rows: Option<u64>,
    pub files: usize,
    pub bytes: u64,
    pub changed: Option<DateTime<Utc>>,
}

/// The tables of one warehouse as the UI sees them, with what it learnt cached by
/// version: a table is opened again only when a commit was added.
pub struct Tables {
    warehouse: Warehouse,
    known: Mutex<HashMap<TableName, TableStats>>,
}

impl Tables {
    pub fn new(warehouse: Warehouse) -> Self {
        Tables {
            warehouse,
            known: Mutex::new(HashMap::new()),
        }
    }

    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    fn known(&self, name: &TableName) -> Option<TableStats> {
        self.known.lock().ok()?.get(name).cloned()
    }

    /// The latest version of `name`, or `None` if it is not a table (yet).
    pub fn version(&self, name: &TableName) -> Option<i64> {
        let dir = self.warehouse.path(name);
        // A version seen before whose commit is still there: the table exists, and one
        // stat per newer commit finds the latest (the live page asks twice a second).
        let hint = self
            .known(name)
            .map(|k| k.version)
            .filter(|&v| commit_path(&dir, v).is_file());
        if hint.is_none() && !crate::catalog::is_delta_table(&dir) {
            return None;
        }
        latest_version(&dir, hint)
    }

    /// Every table of the catalog with its latest version, sorted by name.
    pub fn versions(&self) -> Result<Vec<(TableName, i64)>, ApiError> {
        Ok(crate::sql::list_tables(&self.warehouse)?
            .into_iter()
            .filter_map(|t| Some((t.name.clone(), self.version(&t.name)?)))
            .collect())
    }

    /// The table's statistics at its latest version.
    pub async fn stats(&self, name: &TableName) -> Result<TableStats, ApiError> {
        let version = self.version(name).ok_or_else(|| self.unknown(name))?;
        if let Some(k) = self.known(name).filter(|k| k.version == version) {
            return Ok(k);
        }
        let table = self.open(name).await?;
        let (rows, files, bytes) = sizes(name, &table)?;
        let version = table.version().map_or(version, |v| v as i64);
        let stats = TableStats {
            version,
            rows,
            files,
            bytes,
            changed: read_commit(&self.warehouse.path(name), version).and_then(|c| c.timestamp),
        };
        if let Ok(mut known) = self.known.lock() {
            known.insert(name.clone(), stats.clone());
        }
        Ok(stats)
    }

    /// Opens a table for reading; an unknown one is a 404 naming the tables there are.
    pub async fn open(&self, name: &TableName) -> Result<deltalake::DeltaTable, ApiError> {
        if !self.warehouse.has_table(name) {
            return Err(self.unknown(name));
        }
        Ok(crate::sql::open(&self.warehouse, name).await?)
    }

    fn unknown(&self, name: &TableName) -> ApiError {
        let known = crate::sql::list_tables(&self.warehouse)
            .map(|t| {
                t.iter()
                    .map(|t| t.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        ApiError::NotFound(format!(
            "there is no table {} in catalog {}{}",
            name,
            self.warehouse.catalog(),
            if known.is_empty() {
                ". Run the job or a pipeline first".to_string()
            } else {
                format!("; its tables are: {known}")
            }
        ))
    }

    /// Commits `from` down to `to` (newest first) that the log still has.
    pub fn history(&self, name: &TableName, newest: i64, count: i64) -> Vec<Commit> {
        let dir = self.warehouse.path(name);
        (newest.saturating_sub(count - 1).max(0)..=newest)
            .rev()
            .filter_map(|v| read_commit(&dir, v))
            .collect()
    }

    /// Rows `offset..offset + limit` of a table, at its latest version or at `version`,
    /// as text.
    pub async fn rows(
        &self,
        name: &TableName,
        offset: usize,
        limit: usize,
        version: Option<i64>,
    ) -> Result<Page, ApiError> {
        let mut table = self.open(name).await?;
        if let Some(v) = version {
            let latest = table.version().unwrap_or(0);
            let unknown = || {
                ApiError::NotFound(format!(
                    "table {name} has no version {v}: its versions are 0 to {latest}, and the \
                     log may no longer hold the oldest. Pick one from its history"
                ))
            };
            let v = u64::try_from(v).map_err(|_| unknown())?;
            if v > latest as u64 {
                return Err(unknown());
            }
            table.load_version(v as _).await.map_err(|_| unknown())?;
        }
        let total = sizes(name, &table)?.0;
        let frame = crate::sql::table_frame(&table).await?;
        let batches = frame
            .limit(offset, Some(limit))
            .map_err(crate::sql::SqlError::from)?
            .collect()
            .await
            .map_err(crate::sql::SqlError::from)?;
        let columns = table
            .snapshot()
            .map_err(|e| ApiError::delta(name, e))?
            .schema()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        Ok(Page {
            columns,
            rows: text_rows(&batches),
            total,
            version: table.version().map(|v| v as i64),
        })
    }
}

/// Rows (from the files' statistics; `None` if a file has none), files and bytes of a
/// table as loaded.
fn sizes(
    name: &TableName,
    table: &deltalake::DeltaTable,
) -> Result<(Option<u64>, usize, u64), ApiError> {
    let snapshot = table.snapshot().map_err(|e| ApiError::delta(name, e))?;
    let (mut rows, mut files, mut bytes) = (Some(0u64), 0usize, 0u64);
    for file in snapshot.log_data().iter() {
        files += 1;
        bytes += file.size().max(0) as u64;
        rows = rows.zip(file.num_records()).map(|(a, b)| a + b as u64);
    }
    Ok((rows, files, bytes))
}

/// A page of rows, every value as text.
#[derive(Debug, Serialize)]
pub struct Page {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows of the table at the version read.
    pub total: Option<u64>,
    pub version: Option<i64>,
}

/// The longest value the UI shows whole; a longer one is cut, and says so.
const MAX_VALUE_CHARS: usize = 2_000;

/// The rows of `batches`, every value as text (`None` for NULL).
pub fn text_rows(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(column, f)| {
                        if column.is_null(i) {
                            return None;
                        }
                        let mut text = f.as_ref().map_or(String::new(), |f| f.value(i).to_string());
                        if text.chars().count() > MAX_VALUE_CHARS {
                            text =
                                text.chars().take(MAX_VALUE_CHARS).collect::<String>() + "… (cut)";
                        }
                        Some(text)
                    })
                    .collect(),
            );
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_commits_come_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        assert_eq!(latest_version(dir.path(), None), None);
        let commit = |v: i64, text: &str| {
            std::fs::write(log.join(format!("{v:020}.json")), text).unwrap();
        };
        commit(
            0,
            r#"{"commitInfo":{"timestamp":1700000000000,"operation":"CREATE TABLE"}}"#,
        );
        commit(
            1,
            concat!(
                r#"{"commitInfo":{"timestamp":1700000001000,"operation":"WRITE"}}"#,
                "\n",
                r#"{"txn":{"appId":"silver/bronze.bronze","version":7}}"#,
                "\n",
                r#"{"add":{"path":"a.parquet","stats":"{\"numRecords\":3}"}}"#,
                "\n",
                r#"{"add":{"path":"b.parquet","stats":"{\"numRecords\":4}"}}"#,
                "\n",
                r#"{"remove":{"path":"old.parquet"}}"#,
            ),
        );
        assert_eq!(latest_version(dir.path(), None), Some(1));
        assert_eq!(latest_version(dir.path(), Some(0)), Some(1));
        // A hint whose commit is gone (the log was cleaned up) lists the log instead.
        assert_eq!(latest_version(dir.path(), Some(9)), Some(1));
        let c = read_commit(dir.path(), 1).unwrap();
        assert_eq!(c.operation.as_deref(), Some("WRITE"));
        assert_eq!(c.rows_added, Some(7));
        assert_eq!((c.files_added, c.files_removed), (2, 1));
        assert_eq!(c.txns[0].app_id, "silver/bronze.bronze");
        assert_eq!(c.txns[0].version, 7);
        assert_eq!(c.timestamp.unwrap().timestamp_millis(), 1_700_000_001_000);
        assert_eq!(read_commit(dir.path(), 0).unwrap().rows_added, Some(0));
        assert!(read_commit(dir.path(), 2).is_none());
    }
}
