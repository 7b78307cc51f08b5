//! A throwaway pipeline project: a bundle holding only a pipeline, its SQL files and its
//! data, run through the real binary.

use std::path::{Path, PathBuf};
use std::process::Output;

/// A project folder with `medallion.yml`, `transformations/` and `data/`.
pub struct PipelineProject {
    pub dir: tempfile::TempDir,
}

/// The bundle of a pipeline-only project: catalog `dev`, schema `main`.
const BUNDLE: &str = "bundle:\n  name: p\nvariables:\n  data_dir:\n    description: data\n    default: data\nresources:\n  pipelines:\n    p:\n      name: p\n      schema: main\n      libraries:\n        - glob: { include: transformations/*.sql }\n      configuration:\n        data: ${var.data_dir}\ntargets:\n  dev:\n    default: true\n";

impl PipelineProject {
    /// A project whose SQL files are `sql` (name, text).
    pub fn new(sql: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("medallion.yml"), BUNDLE).expect("bundle");
        std::fs::create_dir_all(dir.path().join("transformations")).expect("sql dir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let p = PipelineProject { dir };
        for (name, text) in sql {
            p.write_sql(name, text);
        }
        p
    }

    /// A copy of an example of the repository (`examples/<name>`).
    pub fn example(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        copy_dir(&from, dir.path());
        PipelineProject { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_sql(&self, name: &str, text: &str) {
        std::fs::write(self.root().join("transformations").join(name), text).expect("sql");
    }

    /// Writes a data file under `data/`, with its folders, dated in the past so that it
    /// counts as stable at once.
    pub fn write_data(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.root().join("data").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        age(&path);
        path
    }

    /// Runs `medallion ARGS` in the project.
    pub fn medallion(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        super::medallion_in(self.root(), args, env)
    }

    /// Runs `medallion ARGS`, expects success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.medallion(args, &[]);
        assert!(
            out.status.success(),
            "medallion {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `medallion ARGS`, expects failure, and returns stdout and stderr together.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.medallion(args, &[]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "medallion {args:?} succeeded:\n{text}"
        );
        text
    }

    /// Runs `medallion ARGS` with the fault point `point` armed, and expects the run to
    /// die there.
    pub fn killed_at(&self, args: &[&str], point: &str) {
        let out = self.medallion(args, &[("MEDALLION_FAULT", point)]);
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("fault injected"),
            "{point}: the fault did not fire: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The folder of table `schema.table` of catalog `dev`.
    pub fn table(&self, schema: &str, table: &str) -> PathBuf {
        self.root()
            .join(".medallion/warehouse/dev")
            .join(schema)
            .join(table)
    }

    /// Rows of `schema.table` (registered as `t`) by SQL, every value as text.
    pub async fn query(&self, schema: &str, table: &str, sql: &str) -> Vec<Vec<String>> {
        super::query_table(&self.table(schema, table), sql).await
    }

    pub async fn count(&self, schema: &str, table: &str) -> u64 {
        self.query(schema, table, "SELECT count(*) FROM t").await[0][0]
            .parse()
            .unwrap()
    }
}

/// Sets a file's modification time an hour back.
pub fn age(path: &Path) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    f.set_modified(past).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(from).unwrap();
        if rel.starts_with(".medallion") {
            continue;
        }
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
            age(&dest);
        }
    }
}
