//! `medallion bench` runs end to end on a small data set and reports every figure.
//! (It asserts what was measured and that the runs were correct, never how fast.)

mod common;

use common::*;
use serde_json::Value;

/// The job's tasks, and the flows of its pipeline task.
const STAGES: [&str; 8] = [
    "ingest",
    "bronze",
    "silver_gold",
    "close_price",
    "stocks_silver",
    "current_close_silver",
    "stocks_close_silver",
    "updated_stocks_gold",
];

#[test]
fn bench_reports_every_figure_for_the_embedded_broker() {
    let w = Workspace::new();
    let dir = w.root().join("bench");
    // The child runs inherit the environment, and the report names the batch size.
    let out = w.medallion(
        &[
            "bench",
            "--rows",
            "3000",
            "--indices",
            "3",
            "--brokers",
            "sqlite",
            "--freshness-files",
            "3",
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[("MEDALLION_VAR_batch_rows", "2000")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    for needle in [
        "== broker: sqlite",
        "ingest (CSV → Kafka)",
        "end to end (process wall, broker start included)",
        "incremental (one new day per index into 3000 rows)",
        "SCD2 MERGE of 10000 changed and new rows into a 100000-row history: ",
        "the median of 5 runs (",
        "freshness, --continuous --interval 200ms, 3 files: p50",
        "check ok: landing lines = Kafka records + ingest quarantine (3000 = ",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    assert!(!out.contains("FAILED"), "{out}");

    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.join("bench.json")).unwrap()).unwrap();
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
    // The batch size the runs used, which memory follows.
    assert_eq!(json["batch_rows"], 2000);
    assert!(out.contains("MB of CSV, batch_rows 2000"), "{out}");
    let broker = &json["brokers"][0];
    assert_eq!(broker["broker"], "sqlite");
    let stage = |run: &str, task: &str| -> Value {
        broker[run]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["task"] == task)
            .unwrap_or_else(|| panic!("{run} has no stage {task}"))
            .clone()
    };
    for task in STAGES {
        let s = stage("full", task);
        assert!(s["rows"].as_u64().unwrap() > 0, "{task}: {s}");
        assert!(s["bytes"].as_u64().unwrap() > 0, "{task}: {s}");
        assert!(s["seconds"].as_f64().unwrap() > 0.0, "{task}: {s}");
    }
    assert_eq!(stage("full", "ingest")["rows"], 3000);
    assert_eq!(stage("full", "bronze")["rows"], 3000);
    assert_eq!(
        stage("incremental", "ingest")["rows"],
        3,
        "one day, 3 indices"
    );
    assert_eq!(stage("incremental", "stocks_silver")["rows"], 3);
    assert!(broker["full"]["peak_rss_mb"].as_f64().unwrap() > 10.0);
    let merge = &broker["merge"];
    assert_eq!(merge["history_rows"], 100_000);
    // Every run starts from the same warehouse: a run on a merged one would write nothing.
    // (The AUTO CDC flow writes each valid change event: 10,000 less the few the
    // expectations drop.)
    assert!(merge["versions_written"].as_u64().unwrap() >= 9_900);
    let runs = merge["runs_seconds"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    let secs = |v: &Value| v.as_f64().unwrap();
    assert!(runs.iter().all(|r| secs(r) > 0.0), "{merge}");
    assert!(
        secs(&merge["min_seconds"]) <= secs(&merge["seconds"])
            && secs(&merge["seconds"]) <= secs(&merge["max_seconds"]),
        "{merge}"
    );
    let freshness = &broker["freshness"];
    assert_eq!(freshness["files"], 3);
    assert_eq!(freshness["samples_seconds"].as_array().unwrap().len(), 3);
    assert!(
        freshness["max_seconds"].as_f64().unwrap() >= freshness["p50_seconds"].as_f64().unwrap()
    );
    assert!(broker["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == true));
}
