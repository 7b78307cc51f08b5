//! The README's main command, `medallion run`, on the sample the project ships, with the
//! default embedded broker (tansu with sqlite storage under state_dir).

mod common;

use std::path::Path;

use common::*;

fn copy_sample(to: &Path) -> u64 {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/landing");
    let mut lines = 0;
    for entry in std::fs::read_dir(sample).unwrap() {
        let path = entry.unwrap().path();
        lines += data_lines(&path).len() as u64;
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_command_runs_the_sample_end_to_end_on_the_embedded_broker() {
    let w = Workspace::new();
    let lines = copy_sample(&w.landing());
    assert!(lines >= 5000, "the shipped sample has {lines} rows");

    let out = w.run_binary_ok(&[]).await;
    assert!(out.contains("kafka embedded"), "{out}");
    assert!(
        out.contains("── ingest succeeded") && out.contains("── bronze succeeded"),
        "{out}"
    );
    assert!(out.contains(&format!("rows written  {lines}")), "{out}");
    assert!(w.root().join(".medallion/state/broker/tansu.db").exists());
    assert_eq!(w.count(&bronze()).await, lines);
    for (name, rows) in refined_tables(&w).await {
        assert!(!rows.is_empty(), "{name} is filled");
    }

    // `medallion sql` over gold: Close_Diff is Latest_Close - Close, and plausible.
    let text = w.medallion_ok(&[
        "sql",
        "--format",
        "csv",
        "SELECT \"Index\", \"Close\", \"Latest_Close\", \"Close_Diff\" FROM dev.gold.updated_stocks_gold",
    ]);
    let mut lines_out = text.lines();
    assert_eq!(
        lines_out.next(),
        Some("Index,Close,Latest_Close,Close_Diff")
    );
    let mut n = 0;
    for line in lines_out {
        let f: Vec<&str> = line.split(',').collect();
        let [close, latest, diff]: [f64; 3] = [1, 2, 3].map(|i| f[i].parse().unwrap());
        assert!((latest - close - diff).abs() < 1e-6, "{line}");
        assert!(close > 0.0 && latest > 0.0 && diff.abs() < latest, "{line}");
        n += 1;
    }
    assert!(n as u64 > lines * 9 / 10, "gold has {n} of {lines} rows");
    let listing = w.medallion_ok(&["tables"]);
    for t in [
        "dev.bronze.bronze",
        "dev.silver.stocks_silver",
        "dev.silver.close_price_silver",
        "dev.silver.current_close_silver",
        "dev.silver.stocks_close_silver",
        "dev.gold.updated_stocks_gold",
    ] {
        assert!(listing.contains(t), "{listing}");
    }

    // The broker restarts with the next run and still has the topic and its offsets.
    let out = w.run_binary_ok(&[]).await;
    // The 3 tasks of resources/kafka_stream_job.yml, and the 5 flows of its pipeline.
    let summaries = 8;
    assert_eq!(out.matches("rows written  0").count(), summaries, "{out}");
    assert_eq!(w.count(&bronze()).await, lines);

    w.generate(GenerateOptions {
        prefix: "new".into(),
        ..small(250, 1, 99)
    });
    let third = w.run_binary_ok(&["--task", "ingest"]).await;
    assert!(
        third.contains("rows written  250") && !third.contains("bronze"),
        "{third}"
    );
    let fourth = w.run_binary_ok(&["--task", "bronze"]).await;
    assert!(fourth.contains("rows written  250"), "{fourth}");
    assert_eq!(w.count(&bronze()).await, lines + 250);
}

#[test]
fn help_explains_every_command() {
    let w = Workspace::new();
    let text = w.medallion_ok(&["--help"]);
    for word in [
        "run",
        "generate",
        "bundle",
        "scheduler",
        "runs",
        "reset",
        "tables",
        "sql",
        "--bundle",
    ] {
        assert!(text.contains(word), "{text}");
    }
    let text = w.medallion_ok(&["run", "--help"]);
    for word in [
        "--target",
        "--var",
        "--task",
        "--job",
        "--continuous",
        "MEDALLION_VAR_",
    ] {
        assert!(text.contains(word), "{text}");
    }
    let text = w.medallion_ok(&["bundle", "--help"]);
    for word in ["validate", "schema", "deploy", "run", "summary", "destroy"] {
        assert!(text.contains(word), "{text}");
    }
}

#[tokio::test]
async fn a_bad_bundle_value_names_the_file_the_key_and_the_fix() {
    let w = Workspace::new();
    let out = w.run_binary(&["--var", "kafka_partitions=many"], &[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("medallion.yml")
            && err.contains("kafka_partitions")
            && err.contains("whole number"),
        "{err}"
    );
    let out = w.run_binary(&["--var", "kafka_partitons=3"], &[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown variable `kafka_partitons`"), "{err}");
}
