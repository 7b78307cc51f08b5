//! A pipeline resource (`resources.pipelines.<key>`), as in a Databricks Asset Bundle: the
//! SQL files that declare its tables and flows, the catalog and schema of its unqualified
//! names, the `configuration` substituted into its SQL, and its sinks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A pipeline as written in the bundle (references already resolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineDef {
    pub name: String,
    /// The catalog of the pipeline's tables; the target's name by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// The schema of unqualified table names; `default` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default)]
    pub libraries: Vec<Library>,
    /// `${key}` in the SQL text is replaced by the value.
    #[serde(default)]
    pub configuration: BTreeMap<String, serde_yaml::Value>,
    /// External targets of flows, as Spark's `create_sink`.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkDef>,
    /// Whether `medallion pipeline run` keeps running (as `--continuous`).
    #[serde(default)]
    pub continuous: bool,
    /// Accepted for Databricks compatibility; medallion runs the same way either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub development: Option<bool>,
}

/// One entry of `libraries`: exactly one of `glob` and `file`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Library {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<GlobLibrary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileLibrary>,
    /// Databricks notebooks; refused with a clear problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notebook: Option<FileLibrary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobLibrary {
    pub include: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLibrary {
    pub path: String,
}

/// An external target of flows: a Kafka topic or a Delta table outside the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkDef {
    pub format: String,
    #[serde(default)]
    pub options: BTreeMap<String, serde_yaml::Value>,
}

/// The sink formats medallion knows, with the options each one requires.
const SINK_FORMATS: &[(&str, &[&str])] = &[("kafka", &["topic"]), ("delta", &["path"])];

/// A pipeline resolved for a target: names, paths and values as its runs use them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineSpec {
    /// The key under `resources.pipelines`, which is also the pipeline's id.
    pub key: String,
    pub name: String,
    pub catalog: String,
    pub schema: String,
    /// The globs and files of `libraries`, made absolute from the declaring file's folder.
    pub libraries: Vec<LibraryPath>,
    pub configuration: BTreeMap<String, String>,
    pub sinks: BTreeMap<String, Sink>,
    pub continuous: bool,
    /// The bundle file that declares the pipeline.
    pub file: PathBuf,
}

/// A library entry with its path made absolute.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LibraryPath {
    Glob(PathBuf),
    File(PathBuf),
}

/// A resolved sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sink {
    pub format: String,
    pub options: BTreeMap<String, String>,
}

/// A problem with a pipeline definition: the YAML path below the pipeline, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// YAML scalars as text; anything else is a problem.
fn scalar_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn scalars(
    map: &BTreeMap<String, serde_yaml::Value>,
    at: &str,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        match scalar_text(v) {
            Some(text) => {
                out.insert(k.clone(), text);
            }
            None => problems.push(Problem {
                path: format!("{at}.{k}"),
                message: format!("`{k}` must be a string, a number or a boolean"),
            }),
        }
    }
    out
}

impl PipelineDef {
    /// The pipeline for a target: `catalog` defaults to the target's name, `schema` to
    /// `default`, and library paths are taken from `dir`, the declaring file's folder.
    pub fn resolve(
        &self,
        key: &str,
        target: &str,
        file: &Path,
        dir: &Path,
    ) -> Result<PipelineSpec, Vec<Problem>> {
        let mut problems = Vec::new();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        let catalog = self.catalog.clone().unwrap_or_else(|| target.to_string());
        let schema = self.schema.clone().unwrap_or_else(|| "default".to_string());
        for (field, value) in [("catalog", &catalog), ("schema", &schema)] {
            if !name_ok(value) {
                problems.push(Problem {
                    path: field.into(),
                    message: format!(
                        "`{value}` is not a valid {field} name: use letters, digits, `_` and `-`"
                    ),
                });
            }
        }
        if self.libraries.is_empty() {
            problems.push(Problem {
                path: "libraries".into(),
                message: "the pipeline has no libraries: add `- glob: { include: ../transformations/**/*.sql }` or `- file: { path: ... }`".into(),
            });
        }
        let mut libraries = Vec::new();
        for (i, lib) in self.libraries.iter().enumerate() {
            let at = format!("libraries[{i}]");
            match (&lib.glob, &lib.file, &lib.notebook) {
                (Some(g), None, None) => libraries.push(LibraryPath::Glob(dir.join(&g.include))),
                (None, Some(f), None) => libraries.push(LibraryPath::File(dir.join(&f.path))),
                (None, None, Some(_)) => problems.push(Problem {
                    path: at,
                    message: "notebooks are a Databricks workspace feature: export the notebook's SQL to a .sql file and name it with `file: { path: ... }`".into(),
                }),
                _ => problems.push(Problem {
                    path: at,
                    message: "a library has exactly one of `glob: { include: ... }` and `file: { path: ... }`".into(),
                }),
            }
        }
        let configuration = scalars(&self.configuration, "configuration", &mut problems);
        let mut sinks = BTreeMap::new();
        for (name, sink) in &self.sinks {
            let at = format!("sinks.{name}");
            let options = scalars(&sink.options, &format!("{at}.options"), &mut problems);
            match SINK_FORMATS.iter().find(|(f, _)| *f == sink.format) {
                None => problems.push(Problem {
                    path: format!("{at}.format"),
                    message: format!(
                        "unknown sink format `{}`; use one of: {}",
                        sink.format,
                        SINK_FORMATS
                            .iter()
                            .map(|(f, _)| *f)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
                Some((format, required)) => {
                    for option in *required {
                        if !options.contains_key(*option) {
                            problems.push(Problem {
                                path: format!("{at}.options"),
                                message: format!("a {format} sink needs the option `{option}`"),
                            });
                        }
                    }
                }
            }
            sinks.insert(
                name.clone(),
                Sink {
                    format: sink.format.clone(),
                    options,
                },
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(PipelineSpec {
            key: key.to_string(),
            name: self.name.clone(),
            catalog,
            schema,
            libraries,
            configuration,
            sinks,
            continuous: self.continuous,
            file: file.to_path_buf(),
        })
    }
}

/// Errors finding a pipeline's SQL files.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{bundle}: pipeline `{pipeline}`: library `{path}` does not exist. Fix the path (it is relative to the file that declares the pipeline)")]
    Missing {
        bundle: PathBuf,
        pipeline: String,
        path: PathBuf,
    },
    #[error("{bundle}: pipeline `{pipeline}`: its libraries ({libraries}) match no file, so it would define nothing. Fix the globs (they are relative to the file that declares the pipeline), or add the SQL files")]
    Empty {
        bundle: PathBuf,
        pipeline: String,
        libraries: String,
    },
    #[error("{bundle}: pipeline `{pipeline}`: glob `{pattern}`: {reason}")]
    Glob {
        bundle: PathBuf,
        pipeline: String,
        pattern: String,
        reason: String,
    },
}

impl PipelineSpec {
    /// The pipeline's SQL files, in the order of `libraries`, each glob's matches sorted;
    /// a file named twice is taken once. A glob may match nothing, but not every one of
    /// them (a pipeline without SQL would silently do nothing); a `file` that does not
    /// exist is an error.
    pub fn sql_files(&self) -> Result<Vec<PathBuf>, LibraryError> {
        let mut out: Vec<PathBuf> = Vec::new();
        for lib in &self.libraries {
            let found = match lib {
                LibraryPath::File(path) => {
                    if !path.is_file() {
                        return Err(LibraryError::Missing {
                            bundle: self.file.clone(),
                            pipeline: self.key.clone(),
                            path: path.clone(),
                        });
                    }
                    vec![path.clone()]
                }
                LibraryPath::Glob(pattern) => {
                    let err = |reason: String| LibraryError::Glob {
                        bundle: self.file.clone(),
                        pipeline: self.key.clone(),
                        pattern: pattern.display().to_string(),
                        reason,
                    };
                    let mut paths: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
                        .map_err(|e| err(e.to_string()))?
                        .collect::<Result<_, _>>()
                        .map_err(|e| err(e.to_string()))?;
                    paths.retain(|p| p.is_file());
                    paths.sort();
                    paths
                }
            };
            for path in found {
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
        if out.is_empty() {
            return Err(LibraryError::Empty {
                bundle: self.file.clone(),
                pipeline: self.key.clone(),
                libraries: self
                    .libraries
                    .iter()
                    .map(|l| match l {
                        LibraryPath::File(p) | LibraryPath::Glob(p) => {
                            format!("`{}`", p.display())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(yaml: &str) -> PipelineDef {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn libraries_that_match_no_file_are_an_error() {
        let d = def("name: p\nlibraries:\n  - glob: { include: ../nowhere/*.sql }\n");
        let s = d
            .resolve(
                "p",
                "dev",
                Path::new("b/resources/p.yml"),
                Path::new("b/resources"),
            )
            .unwrap();
        let e = s.sql_files().unwrap_err().to_string();
        assert!(
            e.contains(
                "pipeline `p`: its libraries (`b/resources/../nowhere/*.sql`) match no file"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_pipeline_resolves_with_defaults_and_relative_paths() {
        let d = def("name: p\nlibraries:\n  - glob: { include: ../sql/*.sql }\n  - file: { path: x.sql }\nconfiguration: { dir: /data, n: 3 }\n");
        let s = d
            .resolve(
                "p",
                "dev",
                Path::new("b/resources/p.yml"),
                Path::new("b/resources"),
            )
            .unwrap();
        assert_eq!((s.catalog.as_str(), s.schema.as_str()), ("dev", "default"));
        assert_eq!(
            s.libraries,
            vec![
                LibraryPath::Glob("b/resources/../sql/*.sql".into()),
                LibraryPath::File("b/resources/x.sql".into())
            ]
        );
        assert_eq!(s.configuration["n"], "3");
    }

    #[test]
    fn problems_name_their_place() {
        let d = def("name: p\ncatalog: 'a b'\nlibraries:\n  - notebook: { path: n }\n  - {}\nsinks:\n  t: { format: kafka }\n  u: { format: jdbc }\n");
        let p = d
            .resolve("p", "dev", Path::new("x.yml"), Path::new("."))
            .unwrap_err();
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "catalog",
                "libraries[0]",
                "libraries[1]",
                "sinks.t.options",
                "sinks.u.format"
            ]
        );
        assert!(p[3].message.contains("`topic`"), "{p:?}");
        assert!(serde_yaml::from_str::<PipelineDef>("name: p\nclusters: []\n").is_err());
    }

    #[test]
    fn sql_files_expand_globs_in_order_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sql/sub")).unwrap();
        for f in ["sql/b.sql", "sql/a.sql", "sql/sub/c.sql", "sql/notes.txt"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let d = def("name: p\nlibraries:\n  - file: { path: sql/b.sql }\n  - glob: { include: 'sql/**/*.sql' }\n");
        let s = d
            .resolve("p", "dev", &dir.path().join("m.yml"), dir.path())
            .unwrap();
        let names: Vec<String> = s
            .sql_files()
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["sql/b.sql", "sql/a.sql", "sql/sub/c.sql"]);
        let missing = def("name: p\nlibraries: [{ file: { path: nope.sql } }]\n")
            .resolve("p", "dev", &dir.path().join("m.yml"), dir.path())
            .unwrap()
            .sql_files()
            .unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
    }
}
