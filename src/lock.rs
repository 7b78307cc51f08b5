//! Exclusive locks that name their holder, so that a user kept waiting knows by whom.
//!
//! A lock is an OS file lock (`flock`) on a file that stays in place. Its holder writes
//! `pid N on HOST as USER since TIME` into the file for whoever waits, and the kernel
//! releases the lock when the holder's process ends, however it ends (SIGKILL, a crash, a
//! lost container): there is never a stale lock to take over, nor a guess about whether a
//! process still runs.
//!
//! The run lock (`<state_dir>/run.lock`) keeps runs, `medallion reset` and `medallion
//! bundle destroy --purge` of one target apart: they share the embedded broker's
//! database, the ingest checkpoint and the txn progress. The scheduler takes it for each
//! run it starts. A local deploy lock (see [`crate::deploy`]) is one too.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another medallion process holds {path} ({holder}); it did not release it within {waited:?}. Wait for it to finish (a run, a reset or a purge of this target), then try again")]
    Held {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("cannot take the lock {path}: {source}. Check that its folder is writable")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The run lock of a target: `<state_dir>/run.lock`.
pub fn run_lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("run.lock")
}

/// How long a run, a reset or a purge waits for another one of the same target.
pub const RUN_LOCK_WAIT: Duration = Duration::from_secs(60);

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

/// A held lock, released when dropped (or when the process ends). The file stays.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock, waiting up to `wait` for its holder to release it.
    pub fn acquire(path: &Path, wait: Duration) -> Result<FileLock, LockError> {
        let io = |source| LockError::Io {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent() {
            crate::private::create_dir_all(dir).map_err(io)?;
        }
        let deadline = Instant::now() + wait;
        let mut announced = false;
        loop {
            if let Some(lock) = Self::try_acquire(path)? {
                return Ok(lock);
            }
            let held_by = std::fs::read_to_string(path).unwrap_or_default();
            let held_by = if held_by.trim().is_empty() {
                "a process that has not named itself yet".to_string()
            } else {
                held_by.trim().to_string()
            };
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
    }

    /// Takes the lock if no one holds it.
    fn try_acquire(path: &Path) -> Result<Option<FileLock>, LockError> {
        let io = |source| LockError::Io {
            path: path.into(),
            source,
        };
        let file = crate::private::open(path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // The file may have been removed (by a purge that held it) between the open and
        // the lock: a lock on a file no longer at `path` locks nothing.
        let locked = file.metadata().map_err(io)?;
        match std::fs::metadata(path) {
            Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        let me = holder();
        file.set_len(0).map_err(io)?;
        file.write_all_at(me.as_bytes(), 0).map_err(io)?;
        Ok(Some(FileLock {
            file,
            path: path.into(),
        }))
    }

    /// The locked file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the lock file, then releases the lock: for a purge, which removes what
    /// medallion created. A process waiting on the deleted file notices and takes the
    /// lock on a new one.
    pub fn remove(self) -> Result<(), LockError> {
        std::fs::remove_file(&self.path).map_err(|source| LockError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Nobody holds it: the holder's text goes. Closing the file releases the lock.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const CHILD_LOCK: &str = "MEDALLION_TEST_HOLD_LOCK";

    #[test]
    fn a_held_lock_names_its_holder_and_is_free_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/run.lock");
        let held = FileLock::acquire(&path, Duration::ZERO).unwrap();
        let started = Instant::now();
        let err = FileLock::acquire(&path, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() >= Duration::from_millis(300), "it waits");
        assert!(
            err.contains(&format!("pid {} on", std::process::id())),
            "{err}"
        );
        drop(held);
        assert!(path.exists(), "the lock file stays");
        // Not Duration::ZERO: a child process that another test forks while `held` was
        // open shares its lock until the child's exec closes it (a CI run lost that race).
        FileLock::acquire(&path, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_holder_named_in_the_file_but_not_holding_the_lock_does_not_hold_it() {
        // A live process (pid 1, this host) named in a lock file that no process holds,
        // as a run of an older medallion, or a container's other pid namespace, leaves.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        std::fs::write(&path, format!("pid 1 on {} as x since y", hostname())).unwrap();
        let lock = FileLock::acquire(&path, Duration::ZERO).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with(&format!("pid {} on", std::process::id())));
        drop(lock);
    }

    /// Not a test: the process that `a_killed_holder_releases_the_lock_at_once` starts to
    /// hold the lock named by `$MEDALLION_TEST_HOLD_LOCK` until it is killed.
    #[test]
    #[ignore = "run by a_killed_holder_releases_the_lock_at_once"]
    fn hold_the_lock_until_killed() {
        let Some(path) = std::env::var_os(CHILD_LOCK) else {
            return;
        };
        let _lock = FileLock::acquire(Path::new(&path), Duration::ZERO).unwrap();
        println!("holding");
        std::thread::sleep(Duration::from_secs(600));
    }

    /// Threads that take `path` `rounds` times each, and fail if two ever hold it at once;
    /// a thread holding it deletes the file every `remove_every` rounds, as a purge does.
    fn contend(path: &Path, threads: usize, rounds: usize, remove_every: usize) {
        let inside = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (path, inside, taken) = (path.to_path_buf(), inside.clone(), taken.clone());
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    for round in 0..rounds {
                        let lock = FileLock::acquire(&path, Duration::from_secs(60)).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        std::thread::sleep(Duration::from_millis(5));
                        assert_eq!(inside.fetch_sub(1, Ordering::SeqCst), 1, "two holders");
                        taken.fetch_add(1, Ordering::SeqCst);
                        if remove_every > 0 && (round + t) % remove_every == 0 {
                            lock.remove().unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no two holders");
        }
        assert_eq!(taken.load(Ordering::SeqCst), threads * rounds);
    }

    #[test]
    fn a_killed_holder_releases_the_lock_at_once_to_one_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::tests::hold_the_lock_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_LOCK, &path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("holding") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the child died");
        }
        let err = FileLock::acquire(&path, Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("pid {} on", child.id())), "{err}");

        // SIGKILL: no destructor runs, the holder's text stays in the file.
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains(&format!("pid {} on", child.id())));
        let started = Instant::now();
        // Many waiters at once: exactly one holds it at a time.
        contend(&path, 8, 5, 0);
        assert!(started.elapsed() < Duration::from_secs(10));
        FileLock::acquire(&path, Duration::ZERO).unwrap();
    }

    #[test]
    fn concurrent_waiters_never_both_hold_it_even_when_a_holder_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        contend(&dir.path().join("run.lock"), 8, 20, 0);
        contend(&dir.path().join("purged.lock"), 8, 20, 3);
    }
}
