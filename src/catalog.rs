//! Where tables live: `<warehouse_dir>/<catalog>/<schema>/<table>`.
//!
//! The catalog is the target's name, so `dev.bronze.bronze` and `prod.bronze.bronze`
//! never share files, as in the original pipeline's `{env}.bronze.bronze`.

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

/// Errors resolving a table name or location.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("table name `{0}` is not of the form schema.table or catalog.schema.table")]
    BadName(String),
    #[error("table `{name}` is in catalog `{catalog}`, but this target's catalog is `{expected}`. Use --target {catalog}")]
    OtherCatalog {
        name: String,
        catalog: String,
        expected: String,
    },
    #[error(
        "cannot create the warehouse folder {path}: {source}. Check warehouse_dir in the bundle"
    )]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A two-part table name within a catalog: `bronze.bronze`, `quarantine.ingest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            table: table.into(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// The folder holding one target's catalog of Delta tables.
#[derive(Debug, Clone)]
pub struct Warehouse {
    root: PathBuf,
    catalog: String,
}

impl Warehouse {
    pub fn new(root: impl Into<PathBuf>, catalog: impl Into<String>) -> Self {
        Warehouse {
            root: root.into(),
            catalog: catalog.into(),
        }
    }

    pub fn catalog(&self) -> &str {
        &self.catalog
    }

    /// The catalog's folder, holding one folder per schema.
    pub fn catalog_path(&self) -> PathBuf {
        self.root.join(&self.catalog)
    }

    /// `catalog.schema.table`, as users write it in SQL.
    pub fn qualified(&self, name: &TableName) -> String {
        format!("{}.{}", self.catalog, name)
    }

    /// The table's folder.
    pub fn path(&self, name: &TableName) -> PathBuf {
        self.root
            .join(&self.catalog)
            .join(&name.schema)
            .join(&name.table)
    }

    /// Whether the table exists: its folder holds a Delta log with a commit.
    pub fn has_table(&self, name: &TableName) -> bool {
        is_delta_table(&self.path(name))
    }

    /// The table's folder as an absolute `file://` URL, creating the folder so that
    /// delta-rs can resolve it.
    pub fn url(&self, name: &TableName) -> Result<Url, CatalogError> {
        let path = self.path(name);
        std::fs::create_dir_all(&path).map_err(|source| CatalogError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let abs = std::fs::canonicalize(&path).map_err(|source| CatalogError::CreateDir {
            path: path.clone(),
            source,
        })?;
        Ok(Url::from_directory_path(&abs).expect("canonical paths are absolute"))
    }

    /// Parses `schema.table` or `catalog.schema.table` (which must be this catalog).
    pub fn parse_name(&self, text: &str) -> Result<TableName, CatalogError> {
        let parts: Vec<&str> = text.split('.').collect();
        match parts.as_slice() {
            [s, t] if !s.is_empty() && !t.is_empty() => Ok(TableName::new(*s, *t)),
            [c, s, t] if !s.is_empty() && !t.is_empty() => {
                if *c != self.catalog {
                    return Err(CatalogError::OtherCatalog {
                        name: text.into(),
                        catalog: (*c).into(),
                        expected: self.catalog.clone(),
                    });
                }
                Ok(TableName::new(*s, *t))
            }
            _ => Err(CatalogError::BadName(text.into())),
        }
    }
}

/// Whether `dir` is a Delta table: its `_delta_log` holds a commit or a checkpoint. A
/// folder whose log has none (a run killed while creating the table left it so) is not
/// one yet, and the next run creates it.
pub fn is_delta_table(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir.join("_delta_log")) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let (Some(version), Some(rest)) = (name.get(..20), name.get(20..)) else {
            return false;
        };
        version.bytes().all(|b| b.is_ascii_digit())
            && (rest == ".json" || rest.starts_with(".checkpoint"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_live_under_catalog_schema_table() {
        let w = Warehouse::new("/wh", "dev");
        let t = TableName::new("bronze", "bronze");
        assert_eq!(w.path(&t), PathBuf::from("/wh/dev/bronze/bronze"));
        assert_eq!(w.qualified(&t), "dev.bronze.bronze");
        assert_eq!(w.parse_name("dev.bronze.bronze").unwrap(), t);
        assert_eq!(w.parse_name("bronze.bronze").unwrap(), t);
        assert!(w.parse_name("prod.bronze.bronze").is_err());
        assert!(w.parse_name("bronze").is_err());
    }

    #[test]
    fn a_table_is_a_log_with_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let w = Warehouse::new(dir.path(), "dev");
        let t = TableName::new("silver", "t");
        assert!(!w.has_table(&t));
        let log = w.path(&t).join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        // What a run killed while creating the table leaves: a log with no commit.
        std::fs::write(log.join("_commit_5f1e.json.tmp"), "{}").unwrap();
        assert!(!w.has_table(&t));
        std::fs::write(log.join("00000000000000000000.json"), "{}").unwrap();
        assert!(w.has_table(&t));
        std::fs::remove_file(log.join("00000000000000000000.json")).unwrap();
        std::fs::write(log.join("00000000000000000010.checkpoint.parquet"), "").unwrap();
        assert!(w.has_table(&t));
    }
}
