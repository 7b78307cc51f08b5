//! The ingest checkpoint: which landing files have been sent to Kafka.
//!
//! A file is recorded as complete only after every one of its messages was acknowledged
//! and its quarantined rows were committed. Before a file's first message is sent, it is
//! recorded as *in progress* together with the topic's end offsets at that moment, so that
//! a run that died mid-file can read back what already reached the topic and send only
//! the rest. Each file keeps its own in-progress entry until it completes: a file that
//! lands meanwhile (even one whose path sorts earlier) never erases another's start
//! offsets. The file is rewritten atomically (write, fsync, rename), so a crash never
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
    /// The file's size and modification time when it was started (absent in checkpoints
    /// written before they were kept).
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub modified_ms: Option<i64>,
}

impl InProgressFile {
    /// Whether `file` differs from what was started (a file rewritten after a crash).
    pub fn changed(&self, file: &LandingFile) -> bool {
        self.size.is_some_and(|s| s != file.size)
            || self.modified_ms.is_some_and(|m| m != file.modified_ms)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    topic: String,
    /// The id of the topic the start offsets refer to, when the broker reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic_id: Option<String>,
    next_seq: i64,
    files: BTreeMap<String, CompletedFile>,
    /// Every file started and not yet complete, by name.
    #[serde(default)]
    started: BTreeMap<String, InProgressFile>,
    /// The single in-progress entry of checkpoints written by earlier versions; moved
    /// into `started` on load.
    #[serde(default, skip_serializing)]
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
                let mut state: State =
                    serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                if let Some(legacy) = state.in_progress.take() {
                    state.started.entry(legacy.name.clone()).or_insert(legacy);
                }
                state
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

    /// Every completed file, by name.
    pub fn completed_files(&self) -> impl Iterator<Item = (&String, &CompletedFile)> {
        self.state.files.iter()
    }

    pub fn completed(&self, name: &str) -> Option<&CompletedFile> {
        self.state.files.get(name)
    }

    /// The topic id recorded with the start offsets.
    pub fn topic_id(&self) -> Option<&str> {
        self.state.topic_id.as_deref()
    }

    /// Whether any file was started and not completed.
    pub fn has_files_in_progress(&self) -> bool {
        !self.state.started.is_empty()
    }

    /// Records the id of the topic that start offsets from now on refer to (saved with
    /// the next change).
    pub fn set_topic_id(&mut self, id: Option<String>) {
        if id.is_some() {
            self.state.topic_id = id;
        }
    }

    /// The entry of `name`, if it was started and is not complete.
    pub fn in_progress(&self, name: &str) -> Option<&InProgressFile> {
        self.state.started.get(name)
    }

    /// Records that `file` is about to be sent, and returns its entry. If the same file was
    /// already in progress (a run died), that entry is kept, with its original offsets.
    pub fn begin(
        &mut self,
        file: &LandingFile,
        start_offsets: impl FnOnce() -> BTreeMap<i32, i64>,
    ) -> Result<InProgressFile, CheckpointError> {
        if let Some(p) = self.state.started.get(&file.name) {
            return Ok(p.clone());
        }
        let entry = InProgressFile {
            name: file.name.clone(),
            seq: self.state.next_seq,
            start_offsets: start_offsets(),
            size: Some(file.size),
            modified_ms: Some(file.modified_ms),
        };
        self.state.next_seq += 1;
        self.state.started.insert(file.name.clone(), entry.clone());
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
        self.state.started.remove(&file.name);
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
        assert!(c.in_progress("a.csv").is_none());
        assert_eq!(c.begin(&file("b.csv"), BTreeMap::new).unwrap().seq, 2);
    }

    #[test]
    fn a_file_started_meanwhile_keeps_the_other_files_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = IngestCheckpoint::load(dir.path(), "T").unwrap();
        let b = c
            .begin(&file("b/x.csv"), || BTreeMap::from([(0, 7), (1, 3)]))
            .unwrap();
        // The run dies mid-file; an earlier path lands and is ingested first.
        let mut c = IngestCheckpoint::load(dir.path(), "T").unwrap();
        let a = c
            .begin(&file("a.csv"), || BTreeMap::from([(0, 40), (1, 41)]))
            .unwrap();
        c.complete(&file("a.csv"), a.seq, 5, 0).unwrap();
        let mut c = IngestCheckpoint::load(dir.path(), "T").unwrap();
        assert_eq!(c.in_progress("b/x.csv"), Some(&b));
        let again = c
            .begin(&file("b/x.csv"), || BTreeMap::from([(0, 99)]))
            .unwrap();
        assert_eq!(again, b, "b resumes from its own start offsets");
        assert!(!again.changed(&file("b/x.csv")));
        let mut grown = file("b/x.csv");
        grown.size += 1;
        assert!(again.changed(&grown));
    }

    #[test]
    fn a_checkpoint_of_an_earlier_version_keeps_its_file_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = IngestCheckpoint::path_for(dir.path(), "T");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"topic":"T","next_seq":3,"files":{},"in_progress":{"name":"b.csv","seq":2,"start_offsets":{"0":12}}}"#,
        )
        .unwrap();
        let mut c = IngestCheckpoint::load(dir.path(), "T").unwrap();
        let b = c.begin(&file("b.csv"), BTreeMap::new).unwrap();
        assert_eq!((b.seq, b.start_offsets.get(&0)), (2, Some(&12)));
        assert!(!b.changed(&file("b.csv")), "unknown size is not a change");
        assert_eq!(c.begin(&file("c.csv"), BTreeMap::new).unwrap().seq, 3);
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
