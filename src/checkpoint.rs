//! The ingest checkpoint: which landing files have been sent to Kafka.
//!
//! A file is recorded as complete only after every one of its messages was acknowledged
//! and its quarantined rows were committed. Before a file's first message is sent, it is
//! recorded as *in progress* together with the topic's end offsets at that moment, so that
//! a run that died mid-file can read back what already reached the topic and send only
//! the rest. The file is rewritten atomically (write, fsync, rename), so a crash never
//! leaves it half written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::LandingFile;

/// Errors reading or writing the checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read the ingest checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the ingest checkpoint {path} is corrupt ({source}). Restore it from a backup, or run `medallion reset` to start over")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "cannot write the ingest checkpoint {path}: {source}. Check that state_dir is writable"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What is known of one completed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletedFile {
    /// The order in which the file was started; also the quarantine commit's txn version.
    pub seq: i64,
    pub size: u64,
    pub modified_ms: i64,
    pub messages: u64,
    pub quarantined: u64,
    pub completed_at: String,
}

/// A file whose messages are being sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InProgressFile {
    pub name: String,
    pub seq: i64,
    /// The topic's end offset per partition just before the file's first message.
    pub start_offsets: BTreeMap<i32, i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    topic: String,
    next_seq: i64,
    files: BTreeMap<String, CompletedFile>,
    in_progress: Option<InProgressFile>,
}

/// The checkpoint of one ingest task: `<state_dir>/checkpoints/ingest-<topic>.json`.
#[derive(Debug)]
pub struct IngestCheckpoint {
    path: PathBuf,
    state: State,
}

impl IngestCheckpoint {
    pub fn path_for(state_dir: &Path, topic: &str) -> PathBuf {
        state_dir
            .join("checkpoints")
            .join(format!("ingest-{topic}.json"))
    }

    /// Loads the checkpoint, or starts an empty one.
    pub fn load(state_dir: &Path, topic: &str) -> Result<Self, CheckpointError> {
        let path = Self::path_for(state_dir, topic);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Corrupt {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                topic: topic.into(),
                next_seq: 1,
                ..State::default()
            },
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        Ok(IngestCheckpoint { path, state })
    }

    pub fn completed(&self, name: &str) -> Option<&CompletedFile> {
        self.state.files.get(name)
    }

    pub fn in_progress(&self) -> Option<&InProgressFile> {
        self.state.in_progress.as_ref()
    }

    /// Records that `file` is about to be sent, and returns its entry. If the same file was
    /// already in progress (a run died), that entry is kept, with its original offsets.
    pub fn begin(
        &mut self,
        file: &LandingFile,
        start_offsets: impl FnOnce() -> BTreeMap<i32, i64>,
    ) -> Result<InProgressFile, CheckpointError> {
        if let Some(p) = &self.state.in_progress {
            if p.name == file.name {
                return Ok(p.clone());
            }
        }
        let entry = InProgressFile {
            name: file.name.clone(),
            seq: self.state.next_seq,
            start_offsets: start_offsets(),
        };
        self.state.next_seq += 1;
        self.state.in_progress = Some(entry.clone());
        self.save()?;
        Ok(entry)
    }

    /// Records that `file` is complete: every message acknowledged.
    pub fn complete(
        &mut self,
        file: &LandingFile,
        seq: i64,
        messages: u64,
        quarantined: u64,
    ) -> Result<(), CheckpointError> {
        self.state.files.insert(
            file.name.clone(),
            CompletedFile {
                seq,
                size: file.size,
                modified_ms: file.modified_ms,
                messages,
                quarantined,
                completed_at: chrono::Utc::now().to_rfc3339(),
            },
        );
        if self.state.in_progress.as_ref().map(|p| &p.name) == Some(&file.name) {
            self.state.in_progress = None;
        }
        self.save()
    }

    fn save(&self) -> Result<(), CheckpointError> {
        let err = |source| CheckpointError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().expect("checkpoint path has a folder");
        crate::private::create_dir_all(dir).map_err(err)?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.state).expect("checkpoint serializes");
        let mut f = crate::private::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> LandingFile {
        LandingFile {
            path: name.into(),
            name: name.into(),
            size: 10,
            modified_ms: 5,
        }
    }

    #[test]
    fn survives_reload_and_keeps_in_progress_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = IngestCheckpoint::load(dir.path(), "T").unwrap();
        let a = c
            .begin(&file("a.csv"), || BTreeMap::from([(0, 7)]))
            .unwrap();
        assert_eq!(a.seq, 1);
        // A crash here: the reloaded checkpoint resumes the same file with the same offsets.
        let mut c = IngestCheckpoint::load(dir.path(), "T").unwrap();
        let again = c
            .begin(&file("a.csv"), || BTreeMap::from([(0, 99)]))
            .unwrap();
        assert_eq!(again, a);
        c.complete(&file("a.csv"), a.seq, 3, 1).unwrap();
        let mut c = IngestCheckpoint::load(dir.path(), "T").unwrap();
        assert_eq!(c.completed("a.csv").unwrap().messages, 3);
        assert!(c.in_progress().is_none());
        assert_eq!(c.begin(&file("b.csv"), BTreeMap::new).unwrap().seq, 2);
    }

    #[test]
    fn only_its_owner_can_read_the_checkpoint() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut c = IngestCheckpoint::load(&state, "T").unwrap();
        c.begin(&file("a.csv"), BTreeMap::new).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let path = IngestCheckpoint::path_for(&state, "T");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&state), 0o700);
    }

    #[test]
    fn a_corrupt_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = IngestCheckpoint::path_for(dir.path(), "T");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{not json").unwrap();
        let err = IngestCheckpoint::load(dir.path(), "T")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("corrupt") && err.contains("ingest-T.json"),
            "{err}"
        );
    }
}
