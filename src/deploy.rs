//! Deployments: a bundle copied to its target's `workspace.root_path` (a folder or an
//! `s3://` URI), with its state.
//!
//! `medallion bundle deploy` writes the bundle's files under `files/<content hash>/` and
//! then `deployment.json` (version, content hash, git commit, user, time, and the resolved
//! variables), which is the commit point: a reader sees the old deployment or the new one,
//! never half of one. Deploying the same content again changes nothing. A lock object,
//! created only if absent, keeps two deploys of one target from interleaving: the second
//! waits, then fails naming the holder. `bundle run` and the scheduler run what is
//! deployed, not the working copy.
//!
//! A secret variable (its name looks secret, or its value is a registered secret such as
//! a webhook URL) is never written: `deployment.json` names it in `secret_variables`
//! if it was overridden, and the deployed copy takes it from `MEDALLION_VAR_<name>` in
//! the environment of `bundle run` or the scheduler.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bundle::{Bundle, Override, Settings, VAR_ENV_PREFIX};
use crate::lock::{FileLock, LockError};

/// How long a deploy waits for another one to finish.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Errors deploying.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("workspace.root_path `{root}`: {reason}")]
    RootPath { root: String, reason: String },
    #[error("cannot read {path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("deployment at {location}: {source}. Check workspace.root_path and, for s3://, the AWS_* environment variables")]
    Store {
        location: String,
        source: object_store::Error,
    },
    #[error("another deploy of this target holds {lock} ({holder}) and did not finish within {waited:?}. If it died, delete that lock")]
    Locked {
        lock: String,
        holder: String,
        waited: Duration,
    },
    #[error("target `{target}` is not deployed at {location}. Run `medallion bundle deploy -t {target}` first")]
    NotDeployed { target: String, location: String },
    #[error("the deployment state at {location} is corrupt ({reason}). Deploy again")]
    Corrupt { location: String, reason: String },
    #[error("{location}/deployment.json is not trusted: {reason}. medallion only runs deployments whose files stay inside them; deploy again with `medallion bundle deploy`")]
    Untrusted { location: String, reason: String },
    #[error(transparent)]
    Library(#[from] crate::bundle::pipeline::LibraryError),
    #[error("{file} is outside the bundle's folder {root} (an include or a symlink leads there). Keep the bundle's files inside its folder")]
    OutsideBundle { file: PathBuf, root: PathBuf },
    #[error("variable `{name}` is a secret, so deployment version {version} does not store the value it was deployed with. Export {VAR_ENV_PREFIX}{name} where the deployed job runs")]
    SecretVariable { name: String, version: u64 },
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
    /// The resolved variables, paths made absolute, for runs of the deployed copy; never
    /// a secret one.
    pub variables: BTreeMap<String, String>,
    /// Secret variables that were overridden when deploying: their values are not stored,
    /// and runs of the deployed copy take them from `MEDALLION_VAR_<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_variables: Vec<String>,
    /// The bundle file, relative to the deployment's files.
    pub bundle_file: String,
    /// The deployed files, relative to the bundle's folder.
    pub files: Vec<String>,
    pub jobs: Vec<String>,
}

impl DeploymentState {
    /// The variable overrides of a run of the deployed copy: the stored variables, and
    /// each secret one from `env` (`MEDALLION_VAR_<name>`), which must hold it.
    pub fn overrides(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Override>, DeployError> {
        let mut overrides: Vec<Override> = self
            .variables
            .iter()
            .map(|(name, value)| Override {
                name: name.clone(),
                value: value.clone(),
                origin: format!("deployment version {}", self.version),
            })
            .collect();
        for name in &self.secret_variables {
            let key = format!("{VAR_ENV_PREFIX}{name}");
            let value = env(&key).ok_or_else(|| DeployError::SecretVariable {
                name: name.clone(),
                version: self.version,
            })?;
            overrides.push(Override {
                name: name.clone(),
                value,
                origin: format!("environment variable {key}"),
            });
        }
        Ok(overrides)
    }
    /// A deployment names folders and files that `bundle run` writes on the host that runs
    /// it: its content hash must be a SHA-256 in hex, and its files relative paths that
    /// stay inside it.
    fn check(&self) -> Result<(), String> {
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if self.content_hash.len() != 64 || !self.content_hash.chars().all(hex) {
            return Err(format!(
                "content_hash `{}` is not a SHA-256 in lowercase hex",
                self.content_hash
            ));
        }
        for rel in &self.files {
            inside(rel).map_err(|why| format!("file `{rel}` {why}"))?;
        }
        inside(&self.bundle_file)
            .map_err(|why| format!("bundle_file `{}` {why}", self.bundle_file))?;
        if !self.files.contains(&self.bundle_file) {
            return Err(format!(
                "bundle_file `{}` is not one of its files",
                self.bundle_file
            ));
        }
        Ok(())
    }
}

/// Whether `rel` is a relative path with no `..`, `.` or empty part: one that stays inside
/// the folder it is joined to. Says why not.
fn inside(rel: &str) -> Result<(), &'static str> {
    if rel.starts_with('/') || rel.contains('\\') || rel.contains('\0') {
        return Err("is not a relative path");
    }
    if rel
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("has an empty, `.` or `..` part");
    }
    Ok(())
}

/// Splits the variables to deploy into those stored and the names of the secret ones
/// that were overridden (whose values the deployed files do not give).
fn without_secrets(
    variables: BTreeMap<String, String>,
    overridden: &std::collections::BTreeSet<String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut stored = BTreeMap::new();
    let mut secret = Vec::new();
    for (name, value) in variables {
        if crate::secrets::is_secret_key(&name) || crate::secrets::is_registered(&value) {
            if overridden.contains(&name) {
                secret.push(name);
            }
        } else {
            stored.insert(name, value);
        }
    }
    (stored, secret)
}

/// A target's deployment location.
pub struct Deployment {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    /// The folder, for a local deployment.
    local: Option<PathBuf>,
}

impl Deployment {
    /// The deployment of the target `settings` resolve: `workspace.root_path`.
    pub fn for_settings(settings: &Settings) -> Result<Self, DeployError> {
        let root = &settings.root_path;
        let err = |reason: String| DeployError::RootPath {
            root: root.clone(),
            reason,
        };
        if let Some(rest) = root.strip_prefix("s3://") {
            let url = url::Url::parse(root).map_err(|e| err(e.to_string()))?;
            let bucket = url
                .host_str()
                .ok_or_else(|| err("no bucket in the URI".into()))?;
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| err(e.to_string()))?;
            let prefix = rest
                .split_once('/')
                .map_or("", |(_, p)| p)
                .trim_matches('/');
            return Ok(Deployment {
                store: Arc::new(store),
                prefix: Path::from(prefix),
                location: root.clone(),
                local: None,
            });
        }
        if root.contains("://") {
            return Err(err("only folders and s3:// URIs are supported".into()));
        }
        std::fs::create_dir_all(root).map_err(|source| DeployError::Local {
            path: root.into(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(root).map_err(|e| err(e.to_string()))?;
        Ok(Deployment {
            store: Arc::new(store),
            prefix: Path::default(),
            location: root.clone(),
            local: Some(root.into()),
        })
    }

    /// Where the deployment is, as the bundle says it.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, rel: &str) -> Path {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.clone().join(part))
    }

    fn store_error(&self, source: object_store::Error) -> DeployError {
        DeployError::Store {
            location: self.location.clone(),
            source,
        }
    }

    async fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, DeployError> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => Ok(Some(
                r.bytes().await.map_err(|e| self.store_error(e))?.to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(e)),
        }
    }

    async fn write(&self, rel: &str, bytes: Vec<u8>) -> Result<(), DeployError> {
        self.store
            .put(&self.path(rel), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.store_error(e))
    }

    /// The current state, or `None` if nothing is deployed.
    pub async fn state(&self) -> Result<Option<DeploymentState>, DeployError> {
        let Some(bytes) = self.read("deployment.json").await? else {
            return Ok(None);
        };
        let state: DeploymentState =
            serde_json::from_slice(&bytes).map_err(|e| DeployError::Corrupt {
                location: self.location.clone(),
                reason: e.to_string(),
            })?;
        state.check().map_err(|reason| DeployError::Untrusted {
            location: self.location.clone(),
            reason,
        })?;
        Ok(Some(state))
    }

    /// The deployed state, or an error saying how to deploy.
    pub async fn require(&self, target: &str) -> Result<DeploymentState, DeployError> {
        self.state().await?.ok_or_else(|| DeployError::NotDeployed {
            target: target.into(),
            location: self.location.clone(),
        })
    }

    /// Copies the deployed files into `into` and returns the deployed bundle file there.
    pub async fn download(
        &self,
        state: &DeploymentState,
        into: &FsPath,
    ) -> Result<PathBuf, DeployError> {
        for rel in &state.files {
            let bytes = self
                .read(&format!("files/{}/{rel}", state.content_hash))
                .await?
                .ok_or_else(|| DeployError::Corrupt {
                    location: self.location.clone(),
                    reason: format!("{rel} is missing from the deployed files"),
                })?;
            let dest = into.join(rel);
            let local = |source| DeployError::Local {
                path: dest.clone(),
                source,
            };
            crate::private::create_dir_all(dest.parent().expect("a file has a folder"))
                .map_err(local)?;
            crate::private::write(&dest, &bytes).map_err(local)?;
        }
        Ok(into.join(&state.bundle_file))
    }

    /// Deploys `bundle` as `settings` resolve it. Returns the state and whether it changed.
    pub async fn deploy(
        &self,
        bundle: &Bundle,
        settings: &Settings,
    ) -> Result<(DeploymentState, bool), DeployError> {
        let lock = Lock::acquire(self, LOCK_WAIT).await?;
        let result = self.deploy_locked(bundle, settings).await;
        lock.release(self).await;
        result
    }

    async fn deploy_locked(
        &self,
        bundle: &Bundle,
        settings: &Settings,
    ) -> Result<(DeploymentState, bool), DeployError> {
        let local = |path: &FsPath| {
            let path = path.to_path_buf();
            move |source| DeployError::Local { path, source }
        };
        let root = std::fs::canonicalize(&bundle.root).map_err(local(&bundle.root))?;
        let mut files = Vec::new();
        // The bundle's YAML files, and its pipelines' SQL files.
        let mut paths = bundle.files();
        for pipeline in settings.pipelines.values() {
            for path in pipeline.sql_files()? {
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
        for path in paths {
            let abs = std::fs::canonicalize(&path).map_err(local(&path))?;
            let rel = abs
                .strip_prefix(&root)
                .map_err(|_| DeployError::OutsideBundle {
                    file: path.clone(),
                    root: root.clone(),
                })?
                .to_string_lossy()
                .replace('\\', "/");
            let bytes = std::fs::read(&abs).map_err(local(&abs))?;
            files.push((rel, bytes));
        }
        let (variables, secret_variables) =
            without_secrets(settings.deployed_variables(&root), &settings.overridden);
        let mut hasher = Sha256::new();
        for (rel, bytes) in &files {
            hasher.update(rel.as_bytes());
            hasher.update([0]);
            hasher.update(bytes);
        }
        hasher.update(serde_json::to_vec(&variables).expect("variables serialize"));
        hasher.update(serde_json::to_vec(&secret_variables).expect("names serialize"));
        let content_hash = hex::encode(hasher.finalize());

        let previous = self.state().await?;
        if let Some(p) = &previous {
            if p.content_hash == content_hash {
                return Ok((p.clone(), false));
            }
        }
        for (rel, bytes) in &files {
            self.write(&format!("files/{content_hash}/{rel}"), bytes.clone())
                .await?;
        }
        let bundle_file = std::fs::canonicalize(&bundle.file).map_err(local(&bundle.file))?;
        let state = DeploymentState {
            bundle: settings.bundle_name.clone(),
            target: settings.target.clone(),
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            content_hash: content_hash.clone(),
            git_commit: git(&root, &["rev-parse", "HEAD"]),
            user: settings.user.clone(),
            deployed_at: chrono::Utc::now().to_rfc3339(),
            variables,
            secret_variables,
            bundle_file: bundle_file
                .strip_prefix(&root)
                .map_err(|_| DeployError::OutsideBundle {
                    file: bundle_file.clone(),
                    root: root.clone(),
                })?
                .to_string_lossy()
                .into_owned(),
            files: files.iter().map(|(rel, _)| rel.clone()).collect(),
            jobs: settings.jobs.keys().cloned().collect(),
        };
        state.check().map_err(|reason| DeployError::Untrusted {
            location: self.location.clone(),
            reason,
        })?;
        // The commit point: the new state names the new files.
        self.write(
            "deployment.json",
            serde_json::to_vec_pretty(&state).expect("state serializes"),
        )
        .await?;
        if let Some(p) = previous {
            self.delete_prefix(&format!("files/{}", p.content_hash))
                .await?;
        }
        Ok((state, true))
    }

    async fn delete_prefix(&self, rel: &str) -> Result<usize, DeployError> {
        let prefix = self.path(rel);
        let listed: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_error(e))?;
        for meta in &listed {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_error(e)),
            }
        }
        Ok(listed.len())
    }

    /// Removes the deployment (the tables stay). Returns whether there was one.
    pub async fn destroy(&self) -> Result<bool, DeployError> {
        let lock = Lock::acquire(self, LOCK_WAIT).await?;
        let result = async {
            let existed = self.state().await?.is_some();
            match self.store.delete(&self.path("deployment.json")).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_error(e)),
            }
            self.delete_prefix("files").await?;
            Ok(existed)
        }
        .await;
        lock.finish(self, true).await;
        result
    }
}

/// `git <args>` in `dir`, its trimmed output, or `None` outside a git tree.
pub fn git(dir: &FsPath, args: &[&str]) -> Option<String> {
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
    dir: &FsPath,
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

/// An S3 deploy lock older than this was left by a deploy that died (a deploy writes a
/// few small files), and is taken over.
pub const STALE_LOCK: Duration = Duration::from_secs(15 * 60);

/// The deploy lock. For a folder, an OS file lock on `deploy.lock` (see [`crate::lock`]),
/// released by the kernel if its holder dies. For S3, an object created only if absent,
/// naming its holder; one older than [`STALE_LOCK`] is taken over by a conditional
/// overwrite (if its ETag has not changed), so that of several deploys waiting for a dead
/// one's lock, exactly one takes it.
#[derive(Debug)]
pub enum Lock {
    File(FileLock),
    Object { path: Path, holder: String },
}

impl Lock {
    /// Takes the lock of `deployment`, waiting up to `wait` for its holder.
    pub async fn acquire(deployment: &Deployment, wait: Duration) -> Result<Lock, DeployError> {
        Self::acquire_unless_older(deployment, wait, STALE_LOCK).await
    }

    async fn acquire_unless_older(
        deployment: &Deployment,
        wait: Duration,
        stale: Duration,
    ) -> Result<Lock, DeployError> {
        if let Some(root) = &deployment.local {
            let path = root.join("deploy.lock");
            return tokio::task::spawn_blocking(move || FileLock::acquire(&path, wait))
                .await
                .expect("lock task panicked")
                .map(Lock::File)
                .map_err(|e| match e {
                    LockError::Held {
                        path,
                        holder,
                        waited,
                    } => DeployError::Locked {
                        lock: path.display().to_string(),
                        holder,
                        waited,
                    },
                    LockError::Io { path, source } => DeployError::Local { path, source },
                });
        }
        let path = deployment.path("deploy.lock");
        let me = crate::lock::holder();
        let deadline = Instant::now() + wait;
        let contended = |e: &object_store::Error| {
            matches!(
                e,
                object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotFound { .. }
            )
        };
        loop {
            let put = deployment
                .store
                .put_opts(
                    &path,
                    PutPayload::from(me.clone().into_bytes()),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            match put {
                Ok(_) => {
                    return Ok(Lock::Object {
                        path,
                        holder: me.clone(),
                    })
                }
                Err(e) if contended(&e) => {}
                Err(e) => return Err(deployment.store_error(e)),
            }
            let held = match deployment.store.get(&path).await {
                Ok(r) => {
                    let meta = r.meta.clone();
                    let bytes = r.bytes().await.map_err(|e| deployment.store_error(e))?;
                    (meta, String::from_utf8_lossy(&bytes).into_owned())
                }
                Err(object_store::Error::NotFound { .. }) => continue, // just released
                Err(e) => return Err(deployment.store_error(e)),
            };
            let (meta, holder) = held;
            let age = (chrono::Utc::now() - meta.last_modified)
                .to_std()
                .unwrap_or_default();
            if age > stale && meta.e_tag.is_some() {
                let take_over = PutOptions::from(PutMode::Update(UpdateVersion {
                    e_tag: meta.e_tag.clone(),
                    version: meta.version.clone(),
                }));
                match deployment
                    .store
                    .put_opts(&path, PutPayload::from(me.clone().into_bytes()), take_over)
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(lock = %path, %holder, "took over a deploy lock left {age:?} ago");
                        return Ok(Lock::Object { path, holder: me });
                    }
                    // Another deploy took it first.
                    Err(e) if contended(&e) => continue,
                    Err(object_store::Error::NotImplemented { .. }) => {}
                    Err(e) => return Err(deployment.store_error(e)),
                }
            }
            if Instant::now() >= deadline {
                return Err(DeployError::Locked {
                    lock: format!("{}/deploy.lock", deployment.location),
                    holder,
                    waited: wait,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Releases the lock.
    pub async fn release(self, deployment: &Deployment) {
        self.finish(deployment, false).await;
    }

    /// Releases the lock; `remove` also deletes a local lock file (when the deployment
    /// is destroyed). An S3 lock is deleted only while it is still this deploy's own.
    async fn finish(self, deployment: &Deployment, remove: bool) {
        match self {
            Lock::File(lock) if remove => {
                let _ = lock.remove();
            }
            Lock::File(lock) => drop(lock),
            Lock::Object { path, holder } => {
                if let Ok(r) = deployment.store.get(&path).await {
                    if r.bytes().await.is_ok_and(|b| b == holder.as_bytes()) {
                        let _ = deployment.store.delete(&path).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &FsPath) -> Deployment {
        Deployment {
            store: Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap()),
            prefix: Path::default(),
            location: dir.display().to_string(),
            local: Some(dir.into()),
        }
    }

    /// An object store with conditional writes, as S3 has.
    fn object_store() -> Deployment {
        Deployment {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::from("bundles/dev"),
            location: "s3://bucket/bundles/dev".into(),
            local: None,
        }
    }

    #[test]
    fn secret_variables_are_not_stored_and_come_from_the_environment() {
        crate::secrets::register("deploy-secret-0451");
        let variables = BTreeMap::from([
            ("kafka_topic".to_string(), "Stocks".to_string()),
            ("api_token".to_string(), "tok".to_string()),
            ("db_password".to_string(), "from-the-file".to_string()),
            ("hook".to_string(), "deploy-secret-0451".to_string()),
            (
                "state_dir".to_string(),
                "/x/deploy-secret-0451/y".to_string(),
            ),
        ]);
        let overridden = ["api_token", "hook", "kafka_topic"]
            .map(String::from)
            .into();
        let (stored, secret) = without_secrets(variables, &overridden);
        assert_eq!(
            stored.keys().collect::<Vec<_>>(),
            ["kafka_topic", "state_dir"]
        );
        assert_eq!(secret, ["api_token", "hook"]);
        let state = DeploymentState {
            bundle: "b".into(),
            target: "dev".into(),
            version: 3,
            content_hash: String::new(),
            git_commit: None,
            user: "u".into(),
            deployed_at: String::new(),
            variables: stored,
            secret_variables: secret,
            bundle_file: "medallion.yml".into(),
            files: vec![],
            jobs: vec![],
        };
        let err = state
            .overrides(&|k| (k == "MEDALLION_VAR_api_token").then(|| "t".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Export MEDALLION_VAR_hook"), "{err}");
        let overrides = state
            .overrides(&|k| {
                k.strip_prefix("MEDALLION_VAR_")
                    .map(|n| format!("{n}-value"))
            })
            .unwrap();
        let got: Vec<(&str, &str)> = overrides
            .iter()
            .map(|o| (o.name.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("kafka_topic", "Stocks"),
                ("state_dir", "/x/deploy-secret-0451/y"),
                ("api_token", "api_token-value"),
                ("hook", "hook-value")
            ]
        );
    }

    #[tokio::test]
    async fn a_held_lock_makes_others_wait_then_fail_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        for d in [local(dir.path()), object_store()] {
            let held = Lock::acquire(&d, Duration::ZERO).await.unwrap();
            let err = Lock::acquire(&d, Duration::from_millis(300))
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("pid {}", std::process::id())),
                "{err}"
            );
            held.release(&d).await;
            let again = Lock::acquire(&d, Duration::ZERO).await.unwrap();
            again.release(&d).await;
        }
        // A local lock file that no process holds is free, whatever it says.
        std::fs::write(
            dir.path().join("deploy.lock"),
            format!("pid 1 on {} as x since y", crate::lock::hostname()),
        )
        .unwrap();
        Lock::acquire(&local(dir.path()), Duration::ZERO)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_deployment_naming_paths_outside_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("deploy")).unwrap();
        let d = local(&dir.path().join("deploy"));
        let good = DeploymentState {
            bundle: "b".into(),
            target: "dev".into(),
            version: 1,
            content_hash: "ab".repeat(32),
            git_commit: None,
            user: "u".into(),
            deployed_at: "t".into(),
            variables: BTreeMap::new(),
            secret_variables: vec![],
            bundle_file: "medallion.yml".into(),
            files: vec!["medallion.yml".into(), "resources/job.yml".into()],
            jobs: vec![],
        };
        let write = |state: &DeploymentState| {
            std::fs::write(
                dir.path().join("deploy/deployment.json"),
                serde_json::to_vec(state).unwrap(),
            )
            .unwrap()
        };
        write(&good);
        assert_eq!(d.require("dev").await.unwrap(), good);
        type Change = Box<dyn Fn(&mut DeploymentState)>;
        let bad: Vec<(&str, Change)> = vec![
            (
                "content_hash",
                Box::new(|s| s.content_hash = "../../../tmp/x".into()),
            ),
            (
                "content_hash",
                Box::new(|s| s.content_hash = "AB".repeat(32)),
            ),
            (
                "/etc/cron.d/x",
                Box::new(|s| s.files.push("/etc/cron.d/x".into())),
            ),
            ("../../x", Box::new(|s| s.files.push("../../x".into()))),
            ("a/../../x", Box::new(|s| s.files.push("a/../../x".into()))),
            (
                "bundle_file",
                Box::new(|s| s.bundle_file = "../m.yml".into()),
            ),
            (
                "bundle_file",
                Box::new(|s| s.bundle_file = "other.yml".into()),
            ),
        ];
        for (named, change) in bad {
            let mut state = good.clone();
            change(&mut state);
            write(&state);
            let err = d.require("dev").await.unwrap_err().to_string();
            assert!(
                err.contains("deployment.json is not trusted") && err.contains(named),
                "{named}: {err}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_stale_object_lock_is_taken_over_by_exactly_one_deploy() {
        let d = Arc::new(object_store());
        let path = d.path("deploy.lock");
        d.store
            .put(
                &path,
                PutPayload::from_static(b"pid 7 on gone as x since y"),
            )
            .await
            .unwrap();
        let stale = Duration::from_millis(500);
        // Not yet stale: it is held.
        assert!(Lock::acquire_unless_older(&d, Duration::ZERO, stale)
            .await
            .is_err());
        tokio::time::sleep(stale + Duration::from_millis(300)).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(
                    async move { Lock::acquire_unless_older(&d, Duration::ZERO, stale).await },
                )
            })
            .collect();
        let mut won = Vec::new();
        for t in tasks {
            if let Ok(lock) = t.await.unwrap() {
                won.push(lock);
            }
        }
        assert_eq!(won.len(), 1, "exactly one deploy takes a stale lock over");
        // Releasing a lock that another deploy has taken over leaves that one's lock.
        let taken = won.pop().unwrap();
        let Lock::Object { holder, .. } = &taken else {
            panic!("an object lock")
        };
        let other = Lock::Object {
            path: path.clone(),
            holder: "pid 7 on gone as x since y".into(),
        };
        other.release(&d).await;
        let left = d.read("deploy.lock").await.unwrap().unwrap();
        assert_eq!(left, holder.as_bytes());
        taken.release(&d).await;
        assert!(d.read("deploy.lock").await.unwrap().is_none());
    }
}
