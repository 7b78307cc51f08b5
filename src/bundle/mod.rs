//! The bundle, `medallion.yml` and the files it includes: variables, targets, Kafka
//! client settings and job resources.
//!
//! Modelled on Databricks Asset Bundles' `databricks.yml`. A bundle is loaded once,
//! then *resolved* for one target into [`Settings`], the plain values every task reads.
//! Variable precedence, lowest first: the variable's `default`, the target's
//! `variables`, the environment variable `MEDALLION_VAR_<name>`, and `--var name=value`.
//! Errors found after parsing still name the file, line and column of the node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use crate::catalog::Warehouse;
use crate::kafka::KafkaSettings;

mod interpolate;
pub mod job;
pub mod pipeline;
mod position;
pub mod schema;

pub use job::JobDef;
pub use pipeline::PipelineSpec;
use position::Positions;

/// The file name `medallion` looks for when no `--bundle` is given.
pub const BUNDLE_FILE: &str = "medallion.yml";

/// Prefix of environment variables that override bundle variables.
pub const VAR_ENV_PREFIX: &str = "MEDALLION_VAR_";

/// Errors found while loading or resolving a bundle. Each names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read bundle file {file}: {source}. Run medallion from the folder holding {BUNDLE_FILE}, or pass --bundle PATH")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(Located),
    #[error("the bundle is not valid:\n{}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Located> },
    #[error("{file}: include `{pattern}`: {reason}")]
    Include {
        file: PathBuf,
        pattern: String,
        reason: String,
    },
    #[error(
        "{file}: unknown target `{target}`. Known targets: {known}. Pass one of them with --target"
    )]
    UnknownTarget {
        file: PathBuf,
        target: String,
        known: String,
    },
    #[error("{file}: no target has `default: true`, and none was given. Add `default: true` to one target or pass --target")]
    NoDefaultTarget { file: PathBuf },
    #[error("{file}: more than one target has `default: true` ({targets}). Keep it on one")]
    ManyDefaultTargets { file: PathBuf, targets: String },
    #[error("{origin}: unknown variable `{name}`. Declare it under `variables:` in {file}, or use one of: {known}")]
    UnknownVariable {
        file: PathBuf,
        origin: String,
        name: String,
        known: String,
    },
    #[error("{origin}: `{text}` is not of the form name=value")]
    BadOverride { origin: String, text: String },
    #[error("{file}: variable `{name}` has value `{value}` ({origin}), but {expected}")]
    InvalidValue {
        file: PathBuf,
        name: String,
        value: String,
        origin: String,
        expected: String,
    },
    #[error("{file}: `kafka.{key}` holds a secret written in the file. Remove it and set `kafka.{key}_env: NAME` to the environment variable that holds it")]
    SecretInFile { file: PathBuf, key: String },
    #[error("{file}: `kafka.{key}_env` names the environment variable `{env}`, which is not set. Export {env} before running")]
    MissingSecret {
        file: PathBuf,
        key: String,
        env: String,
    },
}

/// A message about one place in one file: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A file of the bundle, with the positions of its nodes.
#[derive(Debug, Clone)]
struct SourceFile {
    path: PathBuf,
    positions: Positions,
}

impl SourceFile {
    fn at(&self, path: &str, message: impl Into<String>) -> Located {
        let (line, column) = self.positions.of(path);
        Located {
            file: self.path.clone(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Parses YAML text into `T`, with a located error.
fn parse_yaml<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, BundleError> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        BundleError::Parse(Located {
            file: file.into(),
            line,
            column,
            message: format!("{e}. `medallion bundle schema` prints the bundle format"),
        })
    })
}

/// A variable declared in the bundle, as in `databricks.yml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDef {
    pub description: String,
    pub default: Scalar,
}

/// Deployment mode of a target, as in Databricks Asset Bundles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Development,
    Production,
}

/// A target (`dev`, `prod`, ...) with its overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDef {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub variables: BTreeMap<String, Scalar>,
    /// librdkafka settings merged over the bundle's `kafka` map.
    #[serde(default)]
    pub kafka: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub workspace: Option<WorkspaceDef>,
    /// The SMTP relay for email notifications.
    #[serde(default)]
    pub smtp: Option<SmtpDef>,
}

/// An SMTP relay (plain SMTP, as a local relay or a sidecar provides).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpDef {
    pub host: String,
    #[serde(default = "smtp_port")]
    pub port: u16,
    pub from: String,
}

fn smtp_port() -> u16 {
    25
}

/// Where a target is deployed: a folder, or an `s3://` URI.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceDef {
    pub root_path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleHeader {
    name: String,
}

/// A YAML scalar kept as text: `3`, `true` and `Stocks` are all variable values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::String(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleFile {
    bundle: BundleHeader,
    /// Globs of further files (`resources/*.yml`), relative to the bundle's folder.
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    resources: Option<Resources>,
    #[serde(default)]
    variables: BTreeMap<String, VariableDef>,
    #[serde(default)]
    kafka: BTreeMap<String, Scalar>,
    targets: BTreeMap<String, TargetDef>,
}

/// A file named by `include`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncludedFile {
    #[serde(default)]
    resources: Option<Resources>,
    #[serde(default)]
    variables: BTreeMap<String, VariableDef>,
}

/// `resources`: jobs by key, kept as YAML until a target resolves their references.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resources {
    #[serde(default)]
    jobs: BTreeMap<String, Value>,
    #[serde(default)]
    pipelines: BTreeMap<String, Value>,
}

/// A job as written: the YAML, and the file it is in.
#[derive(Debug, Clone)]
struct JobSource {
    yaml: Value,
    file: usize,
}

/// A loaded `medallion.yml`.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle file itself, for error messages.
    pub file: PathBuf,
    /// The folder holding the bundle file; relative paths are taken from here.
    pub root: PathBuf,
    pub name: String,
    pub variables: BTreeMap<String, VariableDef>,
    pub targets: BTreeMap<String, TargetDef>,
    kafka: BTreeMap<String, Scalar>,
    /// The bundle file first, then the included files.
    files: Vec<SourceFile>,
    jobs: BTreeMap<String, JobSource>,
    pipelines: BTreeMap<String, JobSource>,
}

/// Where a variable override came from, so that errors can say so.
#[derive(Debug, Clone)]
pub struct Override {
    pub name: String,
    pub value: String,
    pub origin: String,
}

impl Override {
    /// Parses a `--var name=value` argument.
    pub fn parse_cli(text: &str) -> Result<Self, BundleError> {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| BundleError::BadOverride {
                origin: "--var".into(),
                text: text.into(),
            })?;
        Ok(Override {
            name: name.trim().into(),
            value: value.into(),
            origin: format!("--var {name}"),
        })
    }

    /// The `MEDALLION_VAR_<name>` overrides of this process's environment.
    pub fn from_process_env() -> Vec<Self> {
        // vars_os: a variable that is not UTF-8 is none of ours, and must not panic.
        Self::from_env(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Collects `MEDALLION_VAR_<name>` overrides from an environment listing.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Self> {
        vars.into_iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix(VAR_ENV_PREFIX)?.to_string();
                Some(Override {
                    origin: format!("environment variable {key}"),
                    name,
                    value,
                })
            })
            .collect()
    }
}

/// Everything a run needs, resolved for one target.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bundle_name: String,
    pub bundle_file: PathBuf,
    /// The target's name, which is also the catalog of its tables.
    pub target: String,
    pub mode: Mode,
    /// The folder of landing files (variable `landing_dir`), for bundles whose jobs
    /// ingest them.
    pub landing_dir: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub warehouse: Warehouse,
    pub kafka: KafkaSettings,
    /// Rows per Delta commit for streaming writes (variable `batch_rows`, optional).
    pub batch_rows: usize,
    /// How long a landing file's size and time must be still before it is read
    /// (variable `landing_stable_ms`, optional): a file still being written is waited for.
    pub landing_stable: std::time::Duration,
    /// Where the target is deployed.
    pub root_path: String,
    /// The jobs, references resolved, validated, named and paused for the target's mode.
    pub jobs: BTreeMap<String, JobDef>,
    /// The pipelines, references resolved and validated.
    pub pipelines: BTreeMap<String, PipelineSpec>,
    /// Who is running, for development-mode job names.
    pub user: String,
    /// Every variable as resolved (references replaced).
    pub variables: BTreeMap<String, String>,
    /// The target's SMTP relay, for email notifications.
    pub smtp: Option<SmtpDef>,
    /// The variables set by an override (`MEDALLION_VAR_<name>`, `--var`) rather than by
    /// the bundle's files.
    pub overridden: std::collections::BTreeSet<String>,
}

/// The variables that name folders, relative to the bundle's folder.
const PATH_VARIABLES: &[&str] = &["landing_dir", "warehouse_dir", "state_dir"];

impl Settings {
    /// The resolved variables with folder paths made absolute, so that a deployed copy of
    /// the bundle, elsewhere, uses the same folders.
    pub fn deployed_variables(&self, bundle_root: &Path) -> BTreeMap<String, String> {
        self.variables
            .iter()
            .map(|(k, v)| {
                let v = if PATH_VARIABLES.contains(&k.as_str()) && Path::new(v).is_relative() {
                    bundle_root.join(v).display().to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// Rows per Delta commit when the bundle does not declare `batch_rows`: large enough that
/// a run writes few, big Parquet files, small enough to bound memory. The whole job over
/// 10M rows peaks at about 0.36 GB with it; a larger batch is faster and takes more memory
/// (BENCHMARKS.md).
pub const DEFAULT_BATCH_ROWS: usize = 100_000;

/// How long a landing file must be unchanged before it is read, by default.
pub const DEFAULT_LANDING_STABLE_MS: u64 = 500;

/// Where tables live when the bundle does not declare `warehouse_dir`.
pub const DEFAULT_WAREHOUSE_DIR: &str = ".medallion/warehouse";

/// Where state lives when the bundle does not declare `state_dir`.
pub const DEFAULT_STATE_DIR: &str = ".medallion/state";

impl Bundle {
    /// Loads and parses a bundle file.
    pub fn load(file: &Path) -> Result<Self, BundleError> {
        let text = std::fs::read_to_string(file).map_err(|source| BundleError::Read {
            file: file.into(),
            source,
        })?;
        Self::parse(file, &text)
    }

    /// Parses bundle text and the files it includes; `file` is used for error messages
    /// and as the root for relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<Self, BundleError> {
        let parsed: BundleFile = parse_yaml(file, text)?;
        let root = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut bundle = Bundle {
            file: file.into(),
            root,
            name: parsed.bundle.name,
            variables: parsed.variables,
            targets: parsed.targets,
            kafka: parsed.kafka,
            files: vec![SourceFile {
                path: file.into(),
                positions: Positions::index(text),
            }],
            jobs: BTreeMap::new(),
            pipelines: BTreeMap::new(),
        };
        let mut problems = Vec::new();
        bundle.reject_code_loading_kafka_settings(&mut problems);
        bundle.add_jobs(parsed.resources, 0, &mut problems);
        for (i, pattern) in parsed.include.iter().enumerate() {
            for path in bundle.included(i, pattern)? {
                let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Read {
                    file: path.clone(),
                    source,
                })?;
                let included: IncludedFile = parse_yaml(&path, &text)?;
                let index = bundle.files.len();
                bundle.files.push(SourceFile {
                    path,
                    positions: Positions::index(&text),
                });
                for (name, def) in included.variables {
                    if bundle.variables.insert(name.clone(), def).is_some() {
                        problems.push(bundle.files[index].at(
                            &format!("variables.{name}"),
                            format!("variable `{name}` is declared twice"),
                        ));
                    }
                }
                bundle.add_jobs(included.resources, index, &mut problems);
            }
        }
        for (name, target) in &bundle.targets {
            for var in target.variables.keys() {
                if !bundle.variables.contains_key(var) {
                    problems.push(bundle.files[0].at(
                        &format!("targets.{name}.variables.{var}"),
                        format!(
                            "unknown variable `{var}`; declare it under `variables:` (known: {})",
                            bundle.variables.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(BundleError::Invalid { problems });
        }
        Ok(bundle)
    }

    /// The bundle's files: the bundle file, then the included ones.
    pub fn files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    fn add_jobs(&mut self, resources: Option<Resources>, file: usize, problems: &mut Vec<Located>) {
        let resources = resources.unwrap_or_default();
        for (key, yaml) in resources.pipelines {
            if self.pipelines.contains_key(&key) {
                problems.push(self.files[file].at(
                    &format!("resources.pipelines.{key}"),
                    format!("pipeline `{key}` is defined twice"),
                ));
                continue;
            }
            self.pipelines.insert(key, JobSource { yaml, file });
        }
        for (key, yaml) in resources.jobs {
            if self.jobs.contains_key(&key) {
                problems.push(self.files[file].at(
                    &format!("resources.jobs.{key}"),
                    format!("job `{key}` is defined twice"),
                ));
                continue;
            }
            self.jobs.insert(key, JobSource { yaml, file });
        }
    }

    /// The files the `index`th `include` glob names, relative to the bundle's folder,
    /// sorted. A file outside that folder (an absolute path, `..`, or a symlink leading
    /// out) is refused: it would be deployed, and written by `bundle run` on the
    /// scheduler's host.
    fn included(&self, index: usize, pattern: &str) -> Result<Vec<PathBuf>, BundleError> {
        let err = |reason: String| BundleError::Include {
            file: self.file.clone(),
            pattern: pattern.into(),
            reason,
        };
        let outside = |what: String| {
            invalid(self.files[0].at(
                &format!("include[{index}]"),
                format!("include `{pattern}` {what}, outside the bundle's folder. Keep the bundle's files in its folder and include them with a relative glob such as resources/*.yml"),
            ))
        };
        let relative = Path::new(pattern);
        if relative.is_absolute() {
            return Err(outside("is an absolute path".into()));
        }
        if relative
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(outside("goes up with `..`".into()));
        }
        let full = self.root.join(pattern);
        let mut paths: Vec<PathBuf> = glob::glob(&full.to_string_lossy())
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if paths.is_empty() && !pattern.contains(['*', '?', '[']) {
            return Err(err("no such file".into()));
        }
        if !paths.is_empty() {
            let root = std::fs::canonicalize(&self.root).map_err(|e| err(e.to_string()))?;
            for path in &paths {
                let real = std::fs::canonicalize(path).map_err(|e| err(e.to_string()))?;
                if !real.starts_with(&root) {
                    return Err(outside(format!(
                        "matches {}, a symlink to {}",
                        path.display(),
                        real.display()
                    )));
                }
            }
        }
        paths.sort();
        Ok(paths)
    }

    /// The target to use: the one named, or the one marked `default: true`.
    pub fn target_name(&self, requested: Option<&str>) -> Result<String, BundleError> {
        if let Some(name) = requested {
            if self.targets.contains_key(name) {
                return Ok(name.into());
            }
            return Err(BundleError::UnknownTarget {
                file: self.file.clone(),
                target: name.into(),
                known: self.targets.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let defaults: Vec<_> = self
            .targets
            .iter()
            .filter(|(_, t)| t.default)
            .map(|(n, _)| n.clone())
            .collect();
        match defaults.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(BundleError::NoDefaultTarget {
                file: self.file.clone(),
            }),
            many => Err(BundleError::ManyDefaultTargets {
                file: self.file.clone(),
                targets: many.join(", "),
            }),
        }
    }

    fn check_declared(&self, name: &str, origin: &str) -> Result<(), BundleError> {
        if self.variables.contains_key(name) {
            return Ok(());
        }
        Err(BundleError::UnknownVariable {
            file: self.file.clone(),
            origin: origin.into(),
            name: name.into(),
            known: self
                .variables
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Resolves the bundle for a target, applying overrides in order (later ones win).
    pub fn resolve(
        &self,
        target: Option<&str>,
        overrides: &[Override],
    ) -> Result<Settings, BundleError> {
        let target_name = self.target_name(target)?;
        let target = &self.targets[&target_name];

        let mut values: BTreeMap<String, (String, String)> = self
            .variables
            .iter()
            .map(|(n, v)| (n.clone(), (v.default.text(), "default".to_string())))
            .collect();
        for (name, value) in &target.variables {
            values.insert(
                name.clone(),
                (value.text(), format!("targets.{target_name}.variables")),
            );
        }
        for o in overrides {
            self.check_declared(&o.name, &o.origin)?;
            values.insert(o.name.clone(), (o.value.clone(), o.origin.clone()));
        }
        let (root_path, values) = self.interpolate_variables(&target_name, values)?;
        for (name, (value, _)) in &values {
            if crate::secrets::is_secret_key(name) {
                crate::secrets::register(value);
            }
        }
        let user = current_user();
        let (jobs, pipelines) =
            self.resolve_jobs(&target_name, target.mode, &root_path, &values, &user)?;
        for job in jobs.values() {
            for url in job.webhook_urls() {
                crate::secrets::register_url(url);
            }
        }
        if let Some(smtp) = &target.smtp {
            if smtp.from.contains(['\r', '\n']) {
                return Err(invalid(self.files[0].at(
                    &format!("targets.{target_name}.smtp.from"),
                    "the sender address holds a line break (CR or LF), which could inject SMTP commands or mail headers. Remove it",
                )));
            }
        }

        let get = |name: &str| -> Result<&(String, String), BundleError> {
            values
                .get(name)
                .ok_or_else(|| BundleError::UnknownVariable {
                    file: self.file.clone(),
                    origin: format!("{}: variables", self.file.display()),
                    name: name.into(),
                    known: format!(
                    "{} (medallion needs `{name}`; declare it with a description and a default)",
                    self.variables.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                })
        };
        let path = |name: &str| -> Result<PathBuf, BundleError> {
            let (value, origin) = get(name)?;
            if value.trim().is_empty() {
                return Err(self.invalid(name, value, origin, "a folder path is required"));
            }
            Ok(self.root.join(value))
        };

        // Only `warehouse_dir` and `state_dir` concern every bundle, and they have
        // defaults; the others belong to bundles whose jobs use landing files or Kafka.
        let path_or = |name: &str, default: &str| -> Result<PathBuf, BundleError> {
            match values.get(name) {
                Some(_) => path(name),
                None => Ok(self.root.join(default)),
            }
        };
        let landing_dir = match values.get("landing_dir") {
            Some(_) => Some(path("landing_dir")?),
            None => None,
        };
        if landing_dir.is_none()
            && jobs.values().any(|j| {
                j.tasks
                    .iter()
                    .any(|t| matches!(t.kind, job::TaskKind::CsvToKafka(_)))
            })
        {
            return Err(BundleError::UnknownVariable {
                file: self.file.clone(),
                origin: "a csv_to_kafka task".into(),
                name: "landing_dir".into(),
                known: format!(
                    "{} (a csv_to_kafka task reads the folder `landing_dir` names; declare it with a description and a default)",
                    self.variables.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let state_dir = path_or("state_dir", DEFAULT_STATE_DIR)?;
        let warehouse = Warehouse::new(
            path_or("warehouse_dir", DEFAULT_WAREHOUSE_DIR)?,
            target_name.clone(),
        );

        let topic = match values.get("kafka_topic") {
            None => None,
            Some((topic, origin)) => {
                if !valid_topic(topic) {
                    return Err(self.invalid(
                        "kafka_topic",
                        topic,
                        origin,
                        "a Kafka topic name is 1-249 characters of letters, digits, `.`, `_` and `-`",
                    ));
                }
                Some(topic.clone())
            }
        };
        let partitions: i32 = match values.get("kafka_partitions") {
            None => 1,
            Some((partitions, origin)) => partitions
                .trim()
                .parse()
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| {
                    self.invalid(
                        "kafka_partitions",
                        partitions,
                        origin,
                        "it must be a whole number of at least 1",
                    )
                })?,
        };
        let empty = (String::new(), "default".to_string());
        let (bootstrap, bootstrap_origin) = values.get("kafka_bootstrap_servers").unwrap_or(&empty);
        // A bundle that declares a broker, or whose jobs talk to Kafka, uses Kafka.
        let uses_kafka = values.contains_key("kafka_bootstrap_servers")
            || jobs
                .values()
                .any(|j| j.tasks.iter().any(|t| t.kind.uses_kafka()));
        if target.mode == Mode::Production && uses_kafka {
            self.reject_development_settings(&target_name, bootstrap, bootstrap_origin)?;
        }
        let landing_stable = match values.get("landing_stable_ms") {
            None => std::time::Duration::from_millis(DEFAULT_LANDING_STABLE_MS),
            Some((text, origin)) => text
                .trim()
                .parse::<u64>()
                .map(std::time::Duration::from_millis)
                .map_err(|_| {
                    self.invalid(
                        "landing_stable_ms",
                        text,
                        origin,
                        "it must be a whole number of milliseconds",
                    )
                })?,
        };
        let batch_rows = match values.get("batch_rows") {
            None => DEFAULT_BATCH_ROWS,
            Some((text, origin)) => text
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    self.invalid(
                        "batch_rows",
                        text,
                        origin,
                        "it must be a whole number of at least 1",
                    )
                })?,
        };

        let mut client = BTreeMap::new();
        for (key, value) in self.kafka.iter().chain(target.kafka.iter()) {
            client.insert(key.clone(), value.text());
        }
        let client = self.resolve_secrets(client, &|name| std::env::var(name).ok())?;

        Ok(Settings {
            bundle_name: self.name.clone(),
            bundle_file: self.file.clone(),
            target: target_name,
            mode: target.mode,
            landing_dir,
            state_dir,
            warehouse,
            kafka: KafkaSettings {
                bootstrap_servers: Some(bootstrap.trim().to_string()).filter(|b| !b.is_empty()),
                topic,
                partitions,
                client,
            },
            batch_rows,
            landing_stable,
            root_path,
            jobs,
            pipelines,
            user,
            variables: values.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            smtp: target.smtp.clone(),
            overridden: overrides.iter().map(|o| o.name.clone()).collect(),
        })
    }

    /// librdkafka settings that load or run code of the host's (a plugin, an OpenSSL
    /// engine or provider, a kinit command) are refused, in the `kafka` map of the bundle
    /// and of every target, and as `<key>_env` too.
    fn reject_code_loading_kafka_settings(&self, problems: &mut Vec<Located>) {
        let maps = std::iter::once(("kafka".to_string(), &self.kafka)).chain(
            self.targets
                .iter()
                .map(|(name, t)| (format!("targets.{name}.kafka"), &t.kafka)),
        );
        for (at, map) in maps {
            for key in map.keys() {
                let setting = key.strip_suffix("_env").unwrap_or(key);
                if let Some((_, what)) = CODE_LOADING_KEYS.iter().find(|(k, _)| *k == setting) {
                    problems.push(self.files[0].at(
                        &format!("{at}.{key}"),
                        format!("`{at}.{key}`: librdkafka's `{setting}` {what}, which medallion refuses. Remove it (a deployed bundle runs on the scheduler's host)"),
                    ));
                }
            }
        }
    }

    /// Production mode rejects what only makes sense while developing: the embedded broker
    /// (an empty `kafka_bootstrap_servers`) and librdkafka's `debug` logging.
    fn reject_development_settings(
        &self,
        target: &str,
        bootstrap: &str,
        origin: &str,
    ) -> Result<(), BundleError> {
        let main = &self.files[0];
        let mut problems = Vec::new();
        if bootstrap.trim().is_empty() {
            problems.push(main.at(
                &format!("targets.{target}"),
                format!(
                    "target `{target}` is in production mode, but kafka_bootstrap_servers is empty ({origin}), which means the embedded development broker. Set it for the target, or with MEDALLION_VAR_kafka_bootstrap_servers"
                ),
            ));
        }
        let def = &self.targets[target];
        if self.kafka.contains_key("debug") || def.kafka.contains_key("debug") {
            let path = if def.kafka.contains_key("debug") {
                format!("targets.{target}.kafka.debug")
            } else {
                "kafka.debug".to_string()
            };
            problems.push(main.at(
                &path,
                format!("librdkafka `debug` logging is a development setting; target `{target}` is in production mode"),
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BundleError::Invalid { problems })
        }
    }

    /// Resolves `workspace.root_path`, then the references in variable values.
    #[allow(clippy::type_complexity)]
    fn interpolate_variables(
        &self,
        target: &str,
        values: BTreeMap<String, (String, String)>,
    ) -> Result<(String, BTreeMap<String, (String, String)>), BundleError> {
        let main = &self.files[0];
        let raw: BTreeMap<String, String> = values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        let pipelines: Vec<String> = self.pipelines.keys().cloned().collect();
        let mut refs = interpolate::Refs {
            vars: &raw,
            bundle_name: &self.name,
            target,
            root_path: None,
            pipelines: &pipelines,
        };
        let def = &self.targets[target];
        let configured = def.workspace.as_ref().and_then(|w| w.root_path.clone());
        let root_path = match (configured, def.mode) {
            (Some(p), _) => refs
                .string(&p)
                .map_err(|m| invalid(main.at(&format!("targets.{target}.workspace.root_path"), m)))?,
            (None, Mode::Production) => {
                return Err(invalid(main.at(
                    &format!("targets.{target}"),
                    format!("target `{target}` is in production mode and needs an explicit workspace.root_path (a folder or an s3:// URI)"),
                )))
            }
            (None, Mode::Development) => format!(".medallion/bundle/{}/{target}", self.name),
        };
        let root_path = if root_path.contains("://") || Path::new(&root_path).is_absolute() {
            root_path
        } else {
            self.root.join(&root_path).display().to_string()
        };
        refs.root_path = Some(&root_path);
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, (value, origin)) in &values {
            match refs.string(value) {
                Ok(v) => {
                    out.insert(name.clone(), (v, origin.clone()));
                }
                Err(m) => {
                    problems.push(main.at(&format!("variables.{name}"), format!("{origin}: {m}")))
                }
            }
        }
        if !problems.is_empty() {
            return Err(BundleError::Invalid { problems });
        }
        Ok((root_path, out))
    }

    /// The jobs for a target: references resolved, then checked; in development mode
    /// named `[dev <user>] <name>` and paused unless `pause_status: UNPAUSED` is explicit.
    #[allow(clippy::type_complexity)]
    fn resolve_jobs(
        &self,
        target: &str,
        mode: Mode,
        root_path: &str,
        values: &BTreeMap<String, (String, String)>,
        user: &str,
    ) -> Result<(BTreeMap<String, JobDef>, BTreeMap<String, PipelineSpec>), BundleError> {
        let vars: BTreeMap<String, String> = values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        let pipelines: Vec<String> = self.pipelines.keys().cloned().collect();
        let refs = interpolate::Refs {
            vars: &vars,
            bundle_name: &self.name,
            target,
            root_path: Some(root_path),
            pipelines: &pipelines,
        };
        let mut problems = Vec::new();
        let mut pipelines = BTreeMap::new();
        for (key, source) in &self.pipelines {
            let file = &self.files[source.file];
            let base = format!("resources.pipelines.{key}");
            let mut yaml = source.yaml.clone();
            let mut found = Vec::new();
            refs.value(&mut yaml, &base, &mut found);
            problems.extend(found.into_iter().map(|(path, m)| file.at(&path, m)));
            let def: pipeline::PipelineDef = match serde_yaml::from_value(yaml) {
                Ok(def) => def,
                Err(e) => {
                    problems.push(file.at(&base, format!("pipeline `{key}`: {e}")));
                    continue;
                }
            };
            let dir = file
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match def.resolve(key, target, &file.path, dir) {
                Ok(spec) => {
                    pipelines.insert(key.clone(), spec);
                }
                Err(found) => problems.extend(
                    found
                        .into_iter()
                        .map(|p| file.at(&format!("{base}.{}", p.path), p.message)),
                ),
            }
        }
        let mut jobs = BTreeMap::new();
        for (key, source) in &self.jobs {
            let file = &self.files[source.file];
            let base = format!("resources.jobs.{key}");
            let mut yaml = source.yaml.clone();
            let mut found = Vec::new();
            refs.value(&mut yaml, &base, &mut found);
            problems.extend(found.into_iter().map(|(path, m)| file.at(&path, m)));
            let mut job: JobDef = match serde_yaml::from_value(yaml) {
                Ok(job) => job,
                Err(e) => {
                    problems.push(file.at(&base, format!("job `{key}`: {e}")));
                    continue;
                }
            };
            for p in job.problems() {
                problems.push(file.at(&format!("{base}.{}", p.path), p.message));
            }
            for (i, task) in job.tasks.iter().enumerate() {
                if let job::TaskKind::PipelineTask(t) = &task.kind {
                    if !self.pipelines.contains_key(&t.pipeline_id) {
                        problems.push(file.at(
                            &format!("{base}.tasks[{i}].pipeline_task.pipeline_id"),
                            format!(
                                "`{}` is not a pipeline of this bundle; write ${{resources.pipelines.KEY.id}} with one of: {}",
                                t.pipeline_id,
                                self.pipelines.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
            if mode == Mode::Development {
                job.name = format!("[dev {user}] {}", job.name);
                if let Some(schedule) = &mut job.schedule {
                    if schedule.pause_status != Some(job::PauseStatus::Unpaused) {
                        schedule.pause_status = Some(job::PauseStatus::Paused);
                    }
                }
            } else if let Some(schedule) = &mut job.schedule {
                schedule
                    .pause_status
                    .get_or_insert(job::PauseStatus::Unpaused);
            }
            jobs.insert(key.clone(), job);
        }
        if !problems.is_empty() {
            return Err(BundleError::Invalid { problems });
        }
        Ok((jobs, pipelines))
    }

    fn invalid(&self, name: &str, value: &str, origin: &str, expected: &str) -> BundleError {
        BundleError::InvalidValue {
            file: self.file.clone(),
            name: name.into(),
            value: value.into(),
            origin: origin.into(),
            expected: expected.into(),
        }
    }

    /// Replaces every `<key>_env` setting (`sasl.username_env`, `sasl.password_env`, ...)
    /// with the environment variable's value, registered as a secret. A secret-looking key
    /// ([`crate::secrets::is_secret_key`]) written in the file is refused.
    fn resolve_secrets(
        &self,
        client: BTreeMap<String, String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, BundleError> {
        let mut out = BTreeMap::new();
        for (key, value) in client {
            if let Some(real) = key.strip_suffix("_env") {
                let secret = env(&value).ok_or_else(|| BundleError::MissingSecret {
                    file: self.file.clone(),
                    key: real.into(),
                    env: value.clone(),
                })?;
                crate::secrets::register(&secret);
                out.insert(real.to_string(), secret);
            } else if crate::secrets::is_secret_key(&key) {
                return Err(BundleError::SecretInFile {
                    file: self.file.clone(),
                    key,
                });
            } else {
                out.insert(key, value);
            }
        }
        Ok(out)
    }
}

/// The user running medallion: `$USER`, `$LOGNAME`, or the account name (`id -un`).
pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            let name = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (!name.is_empty()).then_some(name)
        })
        .unwrap_or_else(|| "unknown".into())
}

fn invalid(problem: Located) -> BundleError {
    BundleError::Invalid {
        problems: vec![problem],
    }
}

/// librdkafka settings that load or run code, and what they do.
const CODE_LOADING_KEYS: &[(&str, &str)] = &[
    (
        "plugin.library.paths",
        "loads shared libraries into the process",
    ),
    ("ssl.engine.location", "loads an OpenSSL engine library"),
    ("ssl.providers", "loads OpenSSL provider modules"),
    ("sasl.kerberos.kinit.cmd", "runs a shell command"),
];

fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
bundle:
  name: kafka_stream
variables:
  landing_dir: { description: landing, default: data/landing }
  warehouse_dir: { description: wh, default: .medallion/warehouse }
  state_dir: { description: state, default: .medallion/state }
  kafka_bootstrap_servers: { description: servers, default: "" }
  kafka_topic: { description: topic, default: Stocks }
  kafka_partitions: { description: partitions, default: 3 }
kafka:
  security.protocol: SASL_SSL
  sasl.mechanism: SCRAM-SHA-256
targets:
  dev:
    default: true
  prod:
    mode: production
    workspace:
      root_path: /srv/${bundle.name}/${bundle.target}
    variables:
      kafka_partitions: 6
      kafka_bootstrap_servers: kafka-prod:9096
"#;

    fn bundle() -> Bundle {
        Bundle::parse(Path::new("/b/medallion.yml"), YAML).unwrap()
    }

    #[test]
    fn resolves_defaults_relative_to_the_bundle_folder() {
        let s = bundle().resolve(None, &[]).unwrap();
        assert_eq!(s.target, "dev");
        assert_eq!(s.landing_dir, Some(PathBuf::from("/b/data/landing")));
        assert_eq!(s.kafka.topic.as_deref(), Some("Stocks"));
        assert_eq!(s.kafka.partitions, 3);
        assert_eq!(s.kafka.bootstrap_servers, None);
        assert_eq!(s.warehouse.catalog(), "dev");
    }

    #[test]
    fn overrides_apply_in_precedence_order() {
        let b = bundle();
        let s = b.resolve(Some("prod"), &[]).unwrap();
        assert_eq!(s.kafka.partitions, 6);
        assert_eq!(s.mode, Mode::Production);
        let env = Override::from_env([
            ("MEDALLION_VAR_kafka_topic".to_string(), "T1".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ]);
        let cli = Override::parse_cli("kafka_topic=T2").unwrap();
        let s = b.resolve(Some("prod"), &[env[0].clone()]).unwrap();
        assert_eq!(s.kafka.topic.as_deref(), Some("T1"));
        let s = b.resolve(Some("prod"), &[env[0].clone(), cli]).unwrap();
        assert_eq!(s.kafka.topic.as_deref(), Some("T2"));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let b = bundle();
        let err = b
            .resolve(None, &[Override::parse_cli("nope=1").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown variable `nope`") && err.contains("kafka_topic"),
            "{err}"
        );
        let err = b
            .resolve(
                None,
                &[Override::parse_cli("kafka_partitions=zero").unwrap()],
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/b/medallion.yml") && err.contains("kafka_partitions"),
            "{err}"
        );
        let err = b.resolve(Some("qa"), &[]).unwrap_err().to_string();
        assert!(
            err.contains("unknown target `qa`") && err.contains("dev, prod"),
            "{err}"
        );
        let err = Bundle::parse(
            Path::new("m.yml"),
            &YAML.replace("default: true", "defualt: true"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("m.yml") && err.contains("defualt"), "{err}");
    }

    #[test]
    fn production_needs_an_explicit_root_path_and_dev_has_a_default() {
        let b = bundle();
        assert_eq!(
            b.resolve(Some("prod"), &[]).unwrap().root_path,
            "/srv/kafka_stream/prod"
        );
        assert!(b
            .resolve(None, &[])
            .unwrap()
            .root_path
            .ends_with(".medallion/bundle/kafka_stream/dev"));
        let text = YAML.replace(
            "    workspace:\n      root_path: /srv/${bundle.name}/${bundle.target}\n",
            "",
        );
        let err = Bundle::parse(Path::new("m.yml"), &text)
            .unwrap()
            .resolve(Some("prod"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.yml:17:3:") && err.contains("explicit workspace.root_path"),
            "{err}"
        );
    }

    #[test]
    fn production_rejects_development_settings() {
        let b = bundle();
        let err = b
            .resolve(
                Some("prod"),
                &[Override::parse_cli("kafka_bootstrap_servers=").unwrap()],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("embedded development broker"), "{err}");
        let text = YAML.replace(
            "kafka_partitions: 6\n",
            "kafka_partitions: 6\n    kafka:\n      debug: all\n",
        );
        let err = Bundle::parse(Path::new("m.yml"), &text)
            .unwrap()
            .resolve(Some("prod"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`debug` logging is a development setting"),
            "{err}"
        );
        // Development mode allows both.
        let dev = Bundle::parse(
            Path::new("m.yml"),
            &text.replace("mode: production", "mode: development"),
        )
        .unwrap();
        assert!(dev.resolve(Some("prod"), &[]).is_ok());
    }

    #[test]
    fn secrets_come_from_the_environment_only() {
        let b = bundle();
        let mut client = BTreeMap::new();
        client.insert("sasl.password".to_string(), "hunter2".to_string());
        let err = b
            .resolve_secrets(client, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sasl.password_env"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let mut client = BTreeMap::new();
        client.insert("sasl.password_env".to_string(), "KAFKA_PW".to_string());
        let err = b
            .resolve_secrets(client.clone(), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("KAFKA_PW") && err.contains("not set"), "{err}");
        let ok = b
            .resolve_secrets(client, &|n| (n == "KAFKA_PW").then(|| "s3cret".to_string()))
            .unwrap();
        assert_eq!(ok["sasl.password"], "s3cret");
    }

    #[test]
    fn every_secret_looking_key_is_refused_in_the_file_and_masked_from_the_environment() {
        let b = bundle();
        for key in ["ssl.key.pem", "sasl.oauthbearer.config", "sasl.username"] {
            let client = BTreeMap::from([(key.to_string(), "literal-value-1".to_string())]);
            let err = b
                .resolve_secrets(client, &|_| None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`kafka.{key}_env: NAME`")), "{err}");
        }
        let client = BTreeMap::from([
            ("ssl.key.pem_env".to_string(), "KEY_PEM".to_string()),
            (
                "sasl.oauthbearer.config_env".to_string(),
                "OAUTH".to_string(),
            ),
        ]);
        let env = |n: &str| Some(format!("{n}-value-from-env"));
        let ok = b.resolve_secrets(client, &env).unwrap();
        assert_eq!(ok["ssl.key.pem"], "KEY_PEM-value-from-env");
        assert_eq!(
            crate::secrets::mask("pem KEY_PEM-value-from-env, config OAUTH-value-from-env"),
            "pem ***, config ***"
        );
    }

    #[test]
    fn secret_variables_and_webhook_urls_are_registered() {
        let text = format!(
            "{YAML}  vars:\n    variables:\n      api_token: tok-from-target-1\n    smtp: {{ host: h, from: \"a@b.c\\r\\nBcc: x@y.z\" }}\n"
        )
        .replace(
            "  kafka_partitions: { description: partitions, default: 3 }\n",
            "  kafka_partitions: { description: partitions, default: 3 }\n  api_token: { description: a secret, default: \"\" }\n",
        )
        .replace("bundle:\n  name: kafka_stream\n", "bundle:\n  name: kafka_stream\nresources:\n  jobs:\n    j:\n      name: j\n      tasks: []\n      webhook_notifications:\n        on_failure: [{ url: \"https://hooks.example.com/x/${var.api_token}\" }]\n");
        let b = Bundle::parse(Path::new("/b/medallion.yml"), &text).unwrap();
        let s = b
            .resolve(
                None,
                &[Override::parse_cli("api_token=tok-from-cli-22").unwrap()],
            )
            .unwrap();
        assert!(s.overridden.contains("api_token"));
        assert_eq!(
            crate::secrets::mask(
                "token tok-from-cli-22, hook https://hooks.example.com/x/tok-from-cli-22"
            ),
            "token ***, hook https://hooks.example.com/***"
        );
        // The sender address of an SMTP relay cannot hold a line break.
        let err = b.resolve(Some("vars"), &[]).unwrap_err().to_string();
        assert!(err.contains("line break (CR or LF)"), "{err}");
        assert!(crate::secrets::mask("tok-from-target-1") == "***");
    }
}
