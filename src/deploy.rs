//! Deployments: a bundle copied to its target's `workspace.root_path`, with its state.
//!
//! `medallion bundle deploy` writes the bundle's files under `<root_path>/files/` and
//! `<root_path>/deployment.json` (version, content hash, git commit, user, time, and the
//! resolved variables). Deploying the same content again changes nothing. A lock file
//! keeps two deploys of one target from interleaving: the second waits, then fails
//! naming the holder. `bundle run` and the scheduler run what is deployed, not the
//! working copy.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bundle::{Bundle, Settings};

/// How long a deploy waits for another one to finish.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Errors deploying.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("workspace.root_path `{0}` is an object-store URI; this build deploys to folders only. Set targets.<target>.workspace.root_path to a folder")]
    Remote(String),
    #[error("cannot write the deployment under {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another deploy of this target holds {lock} ({holder}) and did not finish within {waited:?}. If it died, remove the lock file")]
    Locked {
        lock: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("target `{target}` is not deployed at {root}. Run `medallion bundle deploy -t {target}` first")]
    NotDeployed { target: String, root: PathBuf },
    #[error("the deployment state {path} is corrupt ({reason}). Deploy again")]
    Corrupt { path: PathBuf, reason: String },
    #[error("production target `{target}` refuses to {action} from a git tree with uncommitted changes ({changes}). Commit them, or pass --force")]
    Dirty {
        target: String,
        action: &'static str,
        changes: String,
    },
}

/// What is deployed where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentState {
    pub bundle: String,
    pub target: String,
    /// 1 for the first deploy, one more for each deploy that changed something.
    pub version: u64,
    /// SHA-256 of the bundle's files and resolved variables.
    pub content_hash: String,
    pub git_commit: Option<String>,
    pub user: String,
    pub deployed_at: String,
    /// The resolved variables, paths made absolute, for runs of the deployed copy.
    pub variables: BTreeMap<String, String>,
    /// The bundle file, relative to `files/`.
    pub bundle_file: String,
    pub jobs: Vec<String>,
}

/// A target's deployment folder.
pub struct Deployment {
    root: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DeployError + '_ {
    move |source| DeployError::Io {
        path: path.into(),
        source,
    }
}

impl Deployment {
    pub fn for_settings(settings: &Settings) -> Result<Self, DeployError> {
        if settings.root_path.contains("://") {
            return Err(DeployError::Remote(settings.root_path.clone()));
        }
        Ok(Deployment {
            root: PathBuf::from(&settings.root_path),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state_path(&self) -> PathBuf {
        self.root.join("deployment.json")
    }

    /// The deployed bundle file.
    pub fn bundle_file(&self, state: &DeploymentState) -> PathBuf {
        self.root.join("files").join(&state.bundle_file)
    }

    /// The current state, or `None` if nothing is deployed.
    pub fn state(&self) -> Result<Option<DeploymentState>, DeployError> {
        let path = self.state_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| DeployError::Corrupt {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The deployed state, or an error saying how to deploy.
    pub fn require(&self, target: &str) -> Result<DeploymentState, DeployError> {
        self.state()?.ok_or_else(|| DeployError::NotDeployed {
            target: target.into(),
            root: self.root.clone(),
        })
    }

    /// Deploys `bundle` as `settings` resolve it. Returns the state and whether it changed.
    pub fn deploy(
        &self,
        bundle: &Bundle,
        settings: &Settings,
    ) -> Result<(DeploymentState, bool), DeployError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let _lock = Lock::acquire(&self.root.join("deploy.lock"), LOCK_WAIT)?;

        let root = std::fs::canonicalize(&bundle.root).map_err(io(&bundle.root))?;
        let mut files = Vec::new();
        for path in bundle.files() {
            let abs = std::fs::canonicalize(&path).map_err(io(&path))?;
            let rel = abs.strip_prefix(&root).unwrap_or(&abs).to_path_buf();
            let bytes = std::fs::read(&abs).map_err(io(&abs))?;
            files.push((rel, bytes));
        }
        let variables = settings.deployed_variables(&root);
        let mut hasher = Sha256::new();
        for (rel, bytes) in &files {
            hasher.update(rel.to_string_lossy().as_bytes());
            hasher.update([0]);
            hasher.update(bytes);
        }
        hasher.update(serde_json::to_vec(&variables).expect("variables serialize"));
        let content_hash = hex::encode(hasher.finalize());

        let previous = self.state()?;
        if let Some(p) = &previous {
            if p.content_hash == content_hash {
                return Ok((p.clone(), false));
            }
        }
        // Write the new files next to the old ones, then switch over by renaming.
        let staging = self.root.join("files.new");
        let _ = std::fs::remove_dir_all(&staging);
        for (rel, bytes) in &files {
            let dest = staging.join(rel);
            std::fs::create_dir_all(dest.parent().expect("a file has a folder"))
                .map_err(io(&dest))?;
            std::fs::write(&dest, bytes).map_err(io(&dest))?;
        }
        let live = self.root.join("files");
        let _ = std::fs::remove_dir_all(&live);
        std::fs::rename(&staging, &live).map_err(io(&live))?;

        let bundle_file = std::fs::canonicalize(&bundle.file).map_err(io(&bundle.file))?;
        let state = DeploymentState {
            bundle: settings.bundle_name.clone(),
            target: settings.target.clone(),
            version: previous.map_or(1, |p| p.version + 1),
            content_hash,
            git_commit: git(&root, &["rev-parse", "HEAD"]),
            user: settings.user.clone(),
            deployed_at: chrono::Utc::now().to_rfc3339(),
            variables,
            bundle_file: bundle_file
                .strip_prefix(&root)
                .unwrap_or(&bundle_file)
                .to_string_lossy()
                .into_owned(),
            jobs: settings.jobs.keys().cloned().collect(),
        };
        write_atomically(
            &self.state_path(),
            &serde_json::to_vec_pretty(&state).expect("state serializes"),
        )?;
        Ok((state, true))
    }

    /// Removes the deployment (the tables stay).
    pub fn destroy(&self) -> Result<bool, DeployError> {
        if !self.root.exists() {
            return Ok(false);
        }
        let _lock = Lock::acquire(&self.root.join("deploy.lock"), LOCK_WAIT)?;
        for entry in ["files", "files.new", "deployment.json"] {
            let p = self.root.join(entry);
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
        Ok(true)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// `git <args>` in `dir`, its trimmed output, or `None` outside a git tree.
pub fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Refuses, in production mode, to act from a git tree with uncommitted changes.
pub fn check_clean(
    settings: &Settings,
    dir: &Path,
    action: &'static str,
    force: bool,
) -> Result<(), DeployError> {
    if force || settings.mode != crate::bundle::Mode::Production {
        return Ok(());
    }
    let Some(status) = git(dir, &["status", "--porcelain"]) else {
        return Ok(()); // not a git tree
    };
    let changed: Vec<&str> = status.lines().collect();
    if changed.is_empty() {
        return Ok(());
    }
    Err(DeployError::Dirty {
        target: settings.target.clone(),
        action,
        changes: format!(
            "{} file(s), e.g. {}",
            changed.len(),
            changed[0].get(3..).unwrap_or(changed[0])
        ),
    })
}

/// An exclusive lock file naming its holder; removed when dropped.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Takes the lock, waiting up to `wait` for its holder; a lock left by a process that
    /// no longer runs is taken over.
    pub fn acquire(path: &Path, wait: Duration) -> Result<Lock, DeployError> {
        let me = format!(
            "pid {} on {} since {}",
            std::process::id(),
            crate::bundle::current_user(),
            chrono::Utc::now().to_rfc3339()
        );
        let deadline = Instant::now() + wait;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(me.as_bytes()).map_err(io(path))?;
                    return Ok(Lock { path: path.into() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(path).unwrap_or_default();
                    let pid = holder
                        .strip_prefix("pid ")
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|p| p.parse::<u32>().ok());
                    if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                        let _ = std::fs::remove_file(path); // its holder is gone
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(DeployError::Locked {
                            lock: path.into(),
                            holder,
                            waited: wait,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(io(path)(e)),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_makes_others_wait_then_fail_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock");
        let held = Lock::acquire(&path, Duration::ZERO).unwrap();
        let err = Lock::acquire(&path, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        Lock::acquire(&path, Duration::ZERO).unwrap();
        // A lock whose process is gone is taken over.
        std::fs::write(&path, "pid 999999999 on x since y").unwrap();
        Lock::acquire(&path, Duration::ZERO).unwrap();
    }
}
