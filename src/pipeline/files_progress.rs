//! How far a flow has read a `read_files` stream, kept in the target table itself.
//!
//! Each commit of a flow over files carries its step in `commitInfo`
//! (`medallion.files`: the file, how far into it, and whether it is done) together with a
//! `txn` whose version numbers the steps. The sum of the steps is the progress. A copy of
//! it is kept in the state folder so that a run does not replay the table's history; when
//! the copy is behind the table's `txn` (a run died between its commit and the copy), or
//! missing, the steps it lacks are read back from the table's history. The table is the
//! truth: a copy ahead of it is discarded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::delta::DeltaSink;
use crate::source::LandingFile;

/// The `commitInfo` member holding a commit's steps, by app id.
pub const COMMIT_INFO_KEY: &str = "medallion.files";

/// Errors loading or saving the progress.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("cannot read the history of {table}: {reason}")]
    History { table: String, reason: String },
    #[error("the history of {table} lacks the step {missing} of `{app}` (its log was cleaned up), so which files were read cannot be rebuilt. Run with --full-refresh {table} to read every file again")]
    Gap {
        table: String,
        app: String,
        missing: i64,
    },
    #[error("cannot write {path}: {source}. Check that the state folder is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One commit's step through the files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub seq: i64,
    pub file: String,
    pub size: u64,
    pub modified_ms: i64,
    /// The position reached in the file: its last line read (text formats), or the
    /// rows read (Parquet).
    pub through: u64,
    pub done: bool,
}

/// A file read whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub size: u64,
    pub modified_ms: i64,
}

/// The progress of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesProgress {
    /// The last step applied (-1: none).
    pub seq: i64,
    pub done: BTreeMap<String, Done>,
    /// The file being read, and how far.
    pub partial: Option<Step>,
}

impl FilesProgress {
    fn empty() -> Self {
        FilesProgress {
            seq: -1,
            ..Default::default()
        }
    }

    /// Adds a step.
    pub fn apply(&mut self, step: &Step) {
        self.seq = step.seq;
        if step.done {
            self.done.insert(
                step.file.clone(),
                Done {
                    size: step.size,
                    modified_ms: step.modified_ms,
                },
            );
            self.partial = None;
        } else {
            self.partial = Some(step.clone());
        }
    }

    /// The step after the last one: `file` read through `through`, and whether it is done.
    pub fn next(&self, file: &LandingFile, through: u64, done: bool) -> Step {
        Step {
            seq: self.seq + 1,
            file: file.name.clone(),
            size: file.size,
            modified_ms: file.modified_ms,
            through,
            done,
        }
    }

    /// Where to start in `file`: `Some(position)` when it is to be read (0: from its
    /// start), `None` when it was read whole. A file read whole that has changed since is
    /// not read again; the caller warns.
    pub fn start(&self, file: &LandingFile) -> Option<u64> {
        if self.done.contains_key(&file.name) {
            return None;
        }
        match &self.partial {
            Some(p) if p.file == file.name => Some(p.through),
            _ => Some(0),
        }
    }

    /// Whether `file` was read whole and has changed since.
    pub fn changed(&self, file: &LandingFile) -> bool {
        self.done
            .get(&file.name)
            .is_some_and(|d| d.size != file.size || d.modified_ms != file.modified_ms)
    }

    /// The progress of `app` in `sink`: the copy at `cache`, brought up to the table's
    /// `txn` from its history.
    pub async fn load(cache: &Path, sink: &DeltaSink, app: &str) -> Result<Self, ProgressError> {
        let history = |reason: String| ProgressError::History {
            table: sink.qualified_name().into(),
            reason,
        };
        let committed = sink
            .txn_version(app)
            .await
            .map_err(|e| history(e.to_string()))?
            .unwrap_or(-1);
        let mut progress: FilesProgress = std::fs::read(cache)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(Self::empty);
        if progress.seq > committed {
            progress = Self::empty();
        }
        if progress.seq == committed {
            return Ok(progress);
        }
        // Read the missing steps back, newest first, until the copy's.
        use futures::StreamExt;
        let mut steps: Vec<Step> = Vec::new();
        let mut commits = sink.table().history(None);
        while let Some(commit) = commits.next().await {
            let commit = commit.map_err(|e| history(e.to_string()))?;
            let Some(step) = commit
                .info
                .get(COMMIT_INFO_KEY)
                .and_then(|v| v.get(app))
                .and_then(|v| serde_json::from_value::<Step>(v.clone()).ok())
            else {
                continue;
            };
            if step.seq <= progress.seq {
                break;
            }
            if step.seq <= committed {
                steps.push(step);
            }
        }
        steps.sort_by_key(|s| s.seq);
        steps.dedup_by_key(|s| s.seq);
        for step in &steps {
            if step.seq != progress.seq + 1 {
                return Err(ProgressError::Gap {
                    table: sink.qualified_name().into(),
                    app: app.into(),
                    missing: progress.seq + 1,
                });
            }
            progress.apply(step);
        }
        if progress.seq != committed {
            return Err(ProgressError::Gap {
                table: sink.qualified_name().into(),
                app: app.into(),
                missing: progress.seq + 1,
            });
        }
        Ok(progress)
    }

    /// Saves the copy (write, then rename, so that it is never half written).
    pub fn save(&self, cache: &Path) -> Result<(), ProgressError> {
        let write = |source| ProgressError::Write {
            path: cache.to_path_buf(),
            source,
        };
        if let Some(dir) = cache.parent() {
            crate::private::create_dir_all(dir).map_err(write)?;
        }
        let tmp = cache.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).expect("progress serializes"))
            .map_err(write)?;
        std::fs::rename(&tmp, cache).map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> LandingFile {
        LandingFile {
            path: name.into(),
            name: name.into(),
            size,
            modified_ms: 1,
        }
    }

    fn step(seq: i64, file: &str, through: u64, done: bool) -> Step {
        Step {
            seq,
            file: file.into(),
            size: 10,
            modified_ms: 1,
            through,
            done,
        }
    }

    #[test]
    fn steps_add_up_to_where_each_file_starts() {
        let mut p = FilesProgress::empty();
        assert_eq!(p.start(&file("a", 10)), Some(0));
        p.apply(&step(0, "a", 100, false));
        assert_eq!(p.start(&file("a", 10)), Some(100));
        assert_eq!(p.start(&file("b", 10)), Some(0));
        p.apply(&step(1, "a", 250, true));
        assert_eq!(p.start(&file("a", 10)), None);
        assert!(!p.changed(&file("a", 10)));
        assert!(p.changed(&file("a", 11)));
        assert_eq!(p.seq, 1);
        assert!(p.partial.is_none());
    }
}
