//! Hardening of the commands: `medallion sql` is read-only; `reset` and `bundle destroy
//! --purge` take the run lock, ask first and delete only medallion's own folders; a bundle
//! stays inside its folder and runs no code of the host's; state_dir is its owner's only.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use medallion::bundle::Bundle;
use medallion::lock::{run_lock_path, FileLock};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn medallion_sql_runs_queries_and_refuses_every_write() {
    let w = Workspace::new();
    w.land("a.csv", &csv(RUN_1));
    w.run_binary_ok(&[]).await;
    let count = || {
        w.medallion_ok(&[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM bronze.bronze",
        ])
    };
    let before = count();
    assert!(before.starts_with("n\n") && before != "n\n0\n", "{before}");

    let file = w.root().join("copied.csv");
    let refused = [
        format!("COPY (SELECT 'x') TO '{}' STORED AS CSV", file.display()),
        format!(
            "EXPLAIN ANALYZE COPY (SELECT 'x') TO '{}' STORED AS CSV",
            file.display()
        ),
        "INSERT INTO bronze.bronze SELECT * FROM bronze.bronze".into(),
        "INSERT INTO dev.bronze.bronze SELECT * FROM (SELECT * FROM bronze.bronze LIMIT 1)".into(),
        "DELETE FROM bronze.bronze".into(),
        "CREATE TABLE silver.copy AS SELECT 1 AS one".into(),
        format!(
            "CREATE EXTERNAL TABLE landing STORED AS CSV LOCATION '{}'",
            w.landing().display()
        ),
        "DROP TABLE bronze.bronze".into(),
        "SET datafusion.execution.batch_size = 1".into(),
    ];
    for sql in &refused {
        let out = w.medallion(&["sql", sql], &[]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{sql} was run");
        assert!(
            err.contains("medallion sql is read-only") && err.contains("use a pipeline task"),
            "{sql}: {err}"
        );
    }
    assert!(!file.exists(), "COPY wrote {}", file.display());
    assert_eq!(count(), before, "a write went through");
    assert!(w
        .medallion_ok(&["sql", "EXPLAIN SELECT 1"])
        .contains("logical_plan"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_dir_and_what_medallion_writes_there_are_private() {
    let w = Workspace::new();
    w.land("a.csv", &csv(RUN_1));
    w.run_binary_ok(&[]).await;
    let state = w.settings().state_dir;
    assert_eq!(mode(&state), 0o700);
    for dir in ["checkpoints", "broker"] {
        assert_eq!(mode(&state.join(dir)), 0o700, "{dir}");
    }
    assert_eq!(mode(&state.join("checkpoints/ingest-Stocks.json")), 0o600);
    assert_eq!(mode(&run_lock_path(&state)), 0o600);

    // The deployed copy that `bundle run` makes under state_dir too.
    w.medallion_ok(&["bundle", "deploy"]);
    let out = w.medallion(&["bundle", "run"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deployed = state.join("deployed");
    for entry in walkdir::WalkDir::new(&deployed) {
        let entry = entry.unwrap();
        let want = if entry.file_type().is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode(entry.path()), want, "{}", entry.path().display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_waits_for_the_run_lock() {
    let w = Workspace::new();
    let s = w.settings();
    let catalog = s.warehouse.catalog_path();
    std::fs::create_dir_all(catalog.join("bronze/bronze")).unwrap();
    let run = FileLock::acquire(&run_lock_path(&s.state_dir), Duration::ZERO).unwrap();

    let started = Instant::now();
    let reset = tokio::process::Command::new(env!("CARGO_BIN_EXE_medallion"))
        .current_dir(w.root())
        .args(["reset", "--yes"])
        .kill_on_drop(true)
        .output();
    let reset = tokio::spawn(reset);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(catalog.exists(), "reset waits while a run holds the lock");
    drop(run);
    let out = reset.await.unwrap().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(
        stderr(&out).contains("waiting for another run of this target"),
        "{}",
        stderr(&out)
    );
    assert!(!catalog.exists());
    assert!(
        run_lock_path(&s.state_dir).exists(),
        "a reset keeps the lock file"
    );
}

#[test]
fn purge_asks_first_and_deletes_only_medallions_own_folders() {
    let w = Workspace::new();
    let s = w.settings();
    let catalog = s.warehouse.catalog_path();
    std::fs::create_dir_all(catalog.join("bronze/bronze")).unwrap();
    std::fs::create_dir_all(s.state_dir.join("checkpoints")).unwrap();
    w.medallion_ok(&["bundle", "deploy"]);

    // No terminal, no --yes: nothing goes.
    let out = w.medallion(&["bundle", "destroy", "--purge"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bundle destroy --purge needs confirmation"),
        "{}",
        stderr(&out)
    );
    assert!(catalog.exists() && s.state_dir.join("checkpoints").exists());
    assert!(w
        .medallion_ok(&["bundle", "summary"])
        .contains("version     1"));

    // A state_dir or warehouse_dir that is not medallion's own is refused.
    for (var, value) in [
        ("MEDALLION_VAR_state_dir", "."),
        ("MEDALLION_VAR_warehouse_dir", "/"),
        ("MEDALLION_VAR_state_dir", ".."),
    ] {
        let out = w.medallion(&["bundle", "destroy", "--purge", "--yes"], &[(var, value)]);
        assert!(!out.status.success(), "{var}={value}");
        assert!(
            stderr(&out).contains("refuses to delete under"),
            "{var}={value}: {}",
            stderr(&out)
        );
    }
    assert!(w.bundle_file().exists() && w.root().join("resources").exists());
    assert!(catalog.exists());

    let other = catalog.with_file_name("prod");
    std::fs::create_dir_all(&other).unwrap();
    let said = w.medallion_ok(&["bundle", "destroy", "--purge", "--yes"]);
    assert!(said.contains("purged the tables and the state"), "{said}");
    assert!(!catalog.exists() && !s.state_dir.exists());
    assert!(other.exists(), "another target's tables stay");
    assert!(w
        .medallion_ok(&["bundle", "summary"])
        .contains("is not deployed"));
}

/// A bundle in a temporary folder, with `resources/job.yml` and the `include` globs given.
fn bundle_with(include: &[&str], kafka: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join("resources")).unwrap();
    std::fs::write(root.join("resources/job.yml"), "variables: {}\n").unwrap();
    let includes: String = if include.is_empty() {
        " []".into()
    } else {
        include.iter().map(|i| format!("\n  - {i}")).collect()
    };
    let text = format!(
        "bundle:\n  name: b\ninclude:{includes}\nkafka:{kafka}\ntargets:\n  dev:\n    default: true\n    mode: development\n"
    );
    let file = root.join("medallion.yml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

#[test]
fn includes_stay_inside_the_bundles_folder() {
    let (_dir, file) = bundle_with(&["resources/*.yml"], " {}");
    Bundle::load(&file).unwrap();

    let outside = file.parent().unwrap().parent().unwrap().join("outside.yml");
    std::fs::write(&outside, "variables: {}\n").unwrap();
    for (include, says) in [
        (outside.to_str().unwrap(), "is an absolute path"),
        ("../outside.yml", "goes up with `..`"),
        ("resources/../../*.yml", "goes up with `..`"),
    ] {
        let (_dir, file) = bundle_with(&["resources/*.yml", include], " {}");
        let err = Bundle::load(&file).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}:5:5:", file.display()))
                && err.contains(says)
                && err.contains("outside the bundle's folder"),
            "{include}: {err}"
        );
    }

    // A symlink in the bundle's folder that leads out of it.
    let (dir, file) = bundle_with(&["resources/*.yml"], " {}");
    let secret = dir.path().join("secret.yml");
    std::fs::write(&secret, "variables: {}\n").unwrap();
    std::os::unix::fs::symlink(&secret, file.with_file_name("resources/link.yml")).unwrap();
    let err = Bundle::load(&file).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}:4:5:", file.display()))
            && err.contains("resources/link.yml, a symlink to")
            && err.contains("secret.yml"),
        "{err}"
    );
}

#[test]
fn kafka_settings_that_load_code_are_refused() {
    let cases = [
        (
            "\n  plugin.library.paths: /tmp/evil.so",
            "kafka.plugin.library.paths",
            5,
        ),
        (
            "\n  plugin.library.paths_env: EVIL",
            "kafka.plugin.library.paths_env",
            5,
        ),
        (
            "\n  ssl.engine.location: /tmp/e.so",
            "kafka.ssl.engine.location",
            5,
        ),
        (
            "\n  sasl.kerberos.kinit.cmd: touch /tmp/x",
            "kafka.sasl.kerberos.kinit.cmd",
            5,
        ),
    ];
    for (kafka, key, line) in cases {
        let (_dir, file) = bundle_with(&[], kafka);
        let err = Bundle::load(&file).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}:{line}:", file.display()))
                && err.contains(&format!("`{key}`"))
                && err.contains("Remove it"),
            "{kafka}: {err}"
        );
    }
    // In a target's map too.
    let (_dir, file) = bundle_with(&[], " {}");
    let text = std::fs::read_to_string(&file).unwrap()
        + "    kafka:\n      plugin.library.paths: /tmp/evil.so\n";
    std::fs::write(&file, text).unwrap();
    let err = Bundle::load(&file).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}:10:", file.display()))
            && err.contains("targets.dev.kafka.plugin.library.paths"),
        "{err}"
    );
}
