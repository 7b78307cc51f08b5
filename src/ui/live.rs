//! What tells the UI that something changed, read without taking any lock: the latest
//! version of every table, and whether a run holds the target's run lock.
//!
//! A run's holder is found in `/proc/locks` (the kernel's list of held `flock`s) by the
//! lock file's device and inode, and named by the text the holder wrote into the file.
//! Where `/proc/locks` cannot be read, no run is shown.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::tables::Tables;

/// The holder of the run lock at `state_dir` (`pid N on HOST as USER since TIME`), if a
/// process holds it now.
pub fn run_holder(state_dir: &Path) -> Option<String> {
    let path = crate::lock::run_lock_path(state_dir);
    let meta = std::fs::metadata(&path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holds(&locks, meta.dev(), meta.ino())
        .then(|| std::fs::read_to_string(&path).ok())
        .flatten()
        .map(|text| text.trim().to_string())
}

/// Whether `/proc/locks` text lists a lock on the file of device `dev` and inode `ino`:
/// lines such as `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF`.
fn holds(locks: &str, dev: u64, ino: u64) -> bool {
    let file = format!(
        "{:02x}:{:02x}:{ino}",
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t)
    );
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A blocked waiter's line starts with `->`: only a granted lock counts.
        fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&file.as_str())
    })
}

/// When the holder took the lock, from its text (`… since 2026-11-30T13:00:00+00:00`).
pub fn holder_since(holder: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let since = holder.rsplit_once(" since ")?.1;
    chrono::DateTime::parse_from_rfc3339(since.trim())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// A text that changes whenever a table gets a commit or a run starts or ends.
pub fn fingerprint(tables: &Tables, state_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if let Ok(versions) = tables.versions() {
        versions.hash(&mut hasher);
    }
    run_holder(state_dir).hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_flock_is_found_by_device_and_inode() {
        let dev = libc::makedev(0xfd, 0x01) as u64;
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 4243 fd:01:7654321 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 99 fd:01:555 0 EOF\n";
        assert!(holds(locks, dev, 1_234_567));
        assert!(!holds(locks, dev, 7_654_321), "a waiter does not hold it");
        assert!(!holds(locks, dev, 555), "not an flock");
        assert!(!holds(locks, libc::makedev(8, 1) as u64, 1_234_567));
    }

    #[test]
    fn the_lock_this_process_holds_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run_holder(dir.path()), None);
        let path = crate::lock::run_lock_path(dir.path());
        let lock = crate::lock::FileLock::acquire(&path, std::time::Duration::ZERO).unwrap();
        let holder = run_holder(dir.path()).expect("held");
        assert!(
            holder.starts_with(&format!("pid {} ", std::process::id())),
            "{holder}"
        );
        assert!(holder_since(&holder).is_some(), "{holder}");
        drop(lock);
        assert_eq!(run_holder(dir.path()), None);
    }
}
