//! `medallion reset` and `medallion bundle destroy --purge`.
//!
//! A reset is the original pipeline's "Reset env": it drops the target's tables and every
//! record of progress (the txn versions go with the tables, the ingest checkpoint with the
//! state), and empties the topic (the embedded broker's data, or the topic itself on a
//! hosted Kafka), so that the next run starts from the landing files and rebuilds the same
//! tables. A purge deletes the target's tables and everything medallion wrote under
//! `state_dir` (the topic of a hosted Kafka stays).
//!
//! Both hold the run lock while they delete, so that no run, scheduled or not, is under
//! way, and both delete only what medallion created: the target's catalog folder under
//! `warehouse_dir` and medallion's own files under `state_dir`, never a folder that holds
//! the bundle, the home folder or `/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bundle::{Mode, Settings};
use crate::kafka::{KafkaClientError, KafkaEndpoint};
use crate::lock::{run_lock_path, FileLock, LockError};

/// What medallion writes under `state_dir`, besides the run lock.
const STATE_FOLDERS: [&str; 3] = ["checkpoints", "broker", "deployed"];

/// Errors resetting or purging a target.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("target `{target}` is in production mode: {action} refuses without --force")]
    Production {
        target: String,
        action: &'static str,
    },
    #[error("{action} refuses to delete under {variable} = {path}: it is {reason}. Set {variable} to a folder of medallion's own (the default is .medallion/{default})")]
    Unsafe {
        action: &'static str,
        variable: &'static str,
        default: &'static str,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
}

/// A reset, or a purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Reset,
    Purge,
}

impl Scope {
    fn action(self) -> &'static str {
        match self {
            Scope::Reset => "reset",
            Scope::Purge => "bundle destroy --purge",
        }
    }
}

/// What a reset or a purge will remove, to show before asking.
pub struct ResetPlan {
    pub scope: Scope,
    pub folders: Vec<PathBuf>,
    /// Topics to delete on a hosted Kafka (the embedded broker's data is in `folders`).
    pub topics: Vec<String>,
}

/// What `scope` would remove for `settings`.
pub fn plan(settings: &Settings, force: bool, scope: Scope) -> Result<ResetPlan, ResetError> {
    if settings.mode == Mode::Production && !force {
        return Err(ResetError::Production {
            target: settings.target.clone(),
            action: scope.action(),
        });
    }
    check_owned(settings, scope)?;
    let state = &settings.state_dir;
    let mut folders = vec![settings.warehouse.catalog_path(), state.join("checkpoints")];
    let mut topics = Vec::new();
    match scope {
        Scope::Purge => folders.extend(STATE_FOLDERS[1..].iter().map(|f| state.join(f))),
        Scope::Reset if settings.kafka.bootstrap_servers.is_none() => {
            folders.push(state.join("broker"))
        }
        Scope::Reset => {
            topics = settings.jobs.values().flat_map(|j| j.topics()).collect();
            topics.sort();
            topics.dedup();
        }
    }
    Ok(ResetPlan {
        scope,
        folders,
        topics,
    })
}

/// Refuses a `state_dir` or `warehouse_dir` that is not a folder of medallion's own: `/`,
/// the home folder, the bundle's folder, the current folder, or a folder holding one of
/// them (the target's catalog folder under it could be anybody's).
fn check_owned(settings: &Settings, scope: Scope) -> Result<(), ResetError> {
    let absolute = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let bundle_root = settings
        .bundle_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut protected = vec![(absolute(bundle_root), "the bundle's folder or holds it")];
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        protected.push((absolute(Path::new(&home)), "the home folder or holds it"));
    }
    let catalog = settings.warehouse.catalog_path();
    let warehouse_dir = catalog.parent().unwrap_or(&catalog);
    let dirs = [
        ("state_dir", "state", settings.state_dir.as_path()),
        ("warehouse_dir", "warehouse", warehouse_dir),
    ];
    for (variable, default, dir) in dirs {
        let dir = absolute(dir);
        let unsafe_because = |reason| ResetError::Unsafe {
            action: scope.action(),
            variable,
            default,
            path: dir.clone(),
            reason,
        };
        if dir.parent().is_none() {
            return Err(unsafe_because("the root folder"));
        }
        if let Some((_, reason)) = protected.iter().find(|(p, _)| p.starts_with(&dir)) {
            return Err(unsafe_because(reason));
        }
    }
    Ok(())
}

/// Takes the target's run lock for a reset or a purge, waiting up to `wait` for a run.
pub fn lock(settings: &Settings, wait: Duration) -> Result<FileLock, ResetError> {
    Ok(FileLock::acquire(
        &run_lock_path(&settings.state_dir),
        wait,
    )?)
}

/// Carries out the plan, holding the run lock. A purge also removes the lock file, then
/// `state_dir` if nothing else is left in it.
pub async fn execute(
    settings: &Settings,
    plan: &ResetPlan,
    lock: FileLock,
) -> Result<(), ResetError> {
    if let Some(servers) = &settings.kafka.bootstrap_servers {
        let kafka = KafkaEndpoint::new(servers, settings.kafka.client.clone());
        for topic in &plan.topics {
            kafka.delete_topic(topic).await?;
        }
    }
    for folder in &plan.folders {
        if folder.exists() {
            std::fs::remove_dir_all(folder).map_err(|source| ResetError::Remove {
                path: folder.clone(),
                source,
            })?;
        }
    }
    if plan.scope == Scope::Purge {
        lock.remove()?;
        // Only if empty: state_dir may hold what is not medallion's.
        let _ = std::fs::remove_dir(&settings.state_dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{Bundle, Override};

    const BUNDLE: &str = r#"
bundle:
  name: b
variables:
  landing_dir: { description: l, default: data/landing }
  warehouse_dir: { description: w, default: .medallion/warehouse }
  state_dir: { description: s, default: .medallion/state }
  kafka_bootstrap_servers: { description: k, default: "" }
  kafka_topic: { description: t, default: Stocks }
  kafka_partitions: { description: p, default: 1 }
targets:
  dev:
    default: true
    mode: development
  prod:
    mode: production
    workspace:
      root_path: /srv/b/prod
    variables:
      kafka_bootstrap_servers: kafka:9092
"#;

    fn settings(root: &Path, vars: &[(&str, &str)]) -> Settings {
        settings_of(root, None, vars)
    }

    fn settings_of(root: &Path, target: Option<&str>, vars: &[(&str, &str)]) -> Settings {
        let file = root.join("medallion.yml");
        std::fs::write(&file, BUNDLE).unwrap();
        let overrides: Vec<Override> = vars
            .iter()
            .map(|(n, v)| Override::parse_cli(&format!("{n}={v}")).unwrap())
            .collect();
        Bundle::load(&file)
            .unwrap()
            .resolve(target, &overrides)
            .unwrap()
    }

    #[test]
    fn production_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings_of(dir.path(), Some("prod"), &[]);
        for scope in [Scope::Reset, Scope::Purge] {
            let err = plan(&s, false, scope).err().unwrap().to_string();
            assert!(
                err.contains(&format!("{} refuses without --force", scope.action())),
                "{err}"
            );
            assert!(plan(&s, true, scope).is_ok());
        }
    }

    #[test]
    fn folders_that_are_not_medallions_own_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(&root).unwrap();
        let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());
        for (variable, value) in [
            ("state_dir", "."),
            ("warehouse_dir", "."),
            ("state_dir", ".."),
            ("warehouse_dir", "/"),
            ("state_dir", "/"),
            ("state_dir", home.as_str()),
            ("warehouse_dir", root.to_str().unwrap()),
        ] {
            let s = settings(&root, &[(variable, value)]);
            for scope in [Scope::Purge, Scope::Reset] {
                let err = plan(&s, false, scope).err().unwrap().to_string();
                assert!(
                    err.contains(&format!("refuses to delete under {variable} ="))
                        && err.contains("a folder of medallion's own"),
                    "{variable}={value}: {err}"
                );
            }
        }
        let s = settings(&root, &[]);
        let purge = plan(&s, false, Scope::Purge).unwrap();
        assert_eq!(
            purge.folders,
            [
                root.join(".medallion/warehouse/dev"),
                root.join(".medallion/state/checkpoints"),
                root.join(".medallion/state/broker"),
                root.join(".medallion/state/deployed"),
            ]
        );
    }

    #[tokio::test]
    async fn a_purge_waits_for_the_run_lock_and_leaves_what_is_not_medallions() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), &[]);
        for f in STATE_FOLDERS {
            std::fs::create_dir_all(s.state_dir.join(f)).unwrap();
        }
        std::fs::create_dir_all(s.warehouse.catalog_path().join("bronze")).unwrap();
        let other = s.warehouse.catalog_path().with_file_name("other_target");
        std::fs::create_dir_all(&other).unwrap();

        let run = FileLock::acquire(&run_lock_path(&s.state_dir), Duration::ZERO).unwrap();
        let err = lock(&s, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(run);

        let p = plan(&s, false, Scope::Purge).unwrap();
        execute(&s, &p, lock(&s, Duration::ZERO).unwrap())
            .await
            .unwrap();
        assert!(!s.state_dir.exists(), "an empty state_dir goes");
        assert!(!s.warehouse.catalog_path().exists());
        assert!(other.exists(), "another target's catalog stays");

        // Something else in state_dir stays, and so does state_dir.
        std::fs::create_dir_all(s.state_dir.join("checkpoints")).unwrap();
        std::fs::write(s.state_dir.join("notes.txt"), "mine").unwrap();
        let p = plan(&s, false, Scope::Purge).unwrap();
        execute(&s, &p, lock(&s, Duration::ZERO).unwrap())
            .await
            .unwrap();
        assert!(s.state_dir.join("notes.txt").exists());
        assert!(!s.state_dir.join("checkpoints").exists());
        assert!(!run_lock_path(&s.state_dir).exists());
    }
}
