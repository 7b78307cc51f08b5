//! Exclusive locks that name their holder, so that a user kept waiting knows by whom.
//!
//! The run lock (`<state_dir>/run.lock`) keeps two runs of one target from interleaving:
//! they would share the embedded broker's database, the ingest checkpoint and the txn
//! progress. The deploy lock (see [`crate::deploy`]) uses the same holder text.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another medallion run of this target holds {path} ({holder}); it did not finish within {waited:?}. Wait for it, or, if it died on another host, delete the lock file")]
    Held {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("cannot create the lock {path}: {source}. Check that state_dir is writable")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who holds a lock: `pid N on HOST as USER since TIME`.
pub fn holder() -> String {
    format!(
        "pid {} on {} as {} since {}",
        std::process::id(),
        hostname(),
        crate::bundle::current_user(),
        chrono::Utc::now().to_rfc3339()
    )
}

pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a lock's holder was a process of this host that no longer runs.
pub fn holder_is_gone(holder: &str) -> bool {
    let mut words = holder.split_whitespace();
    let (Some("pid"), Some(pid), Some("on"), Some(host)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    host == hostname() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// A lock file, removed when dropped.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock, waiting up to `wait` for its holder; a lock left by a process of
    /// this host that no longer runs is taken over.
    pub fn acquire(path: &Path, wait: Duration) -> Result<FileLock, LockError> {
        let io = |source| LockError::Io {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let deadline = Instant::now() + wait;
        let mut announced = false;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(holder().as_bytes()).map_err(io)?;
                    return Ok(FileLock { path: path.into() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let held_by = std::fs::read_to_string(path).unwrap_or_default();
                    if holder_is_gone(&held_by) {
                        let _ = std::fs::remove_file(path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(LockError::Held {
                            path: path.into(),
                            holder: held_by,
                            waited: wait,
                        });
                    }
                    if !announced {
                        tracing::warn!(lock = %path.display(), holder = %held_by, "waiting for another run of this target");
                        announced = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(io(e)),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_holder_and_a_dead_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        let held = FileLock::acquire(&path, Duration::ZERO).unwrap();
        let err = FileLock::acquire(&path, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        let again = FileLock::acquire(&path, Duration::ZERO).unwrap();
        drop(again);
        std::fs::write(
            &path,
            format!("pid 999999999 on {} as x since y", hostname()),
        )
        .unwrap();
        FileLock::acquire(&path, Duration::ZERO).unwrap();
        // A holder on another host is never assumed dead.
        std::fs::write(&path, "pid 999999999 on elsewhere as x since y").unwrap();
        assert!(FileLock::acquire(&path, Duration::ZERO).is_err());
    }
}
