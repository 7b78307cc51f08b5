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

/// Runs `medallion bench ARGS` in a new workspace, expects success, every line of
/// `needles` in what it printed and no failed check; returns that and its JSON report.
fn bench(args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> (String, Value) {
    let w = Workspace::new();
    let dir = w.root().join("bench");
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend(["--dir", dir.to_str().unwrap()]);
    let out = w.medallion(&all, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    for needle in needles {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    assert!(!out.contains("FAILED"), "{out}");
    let json = serde_json::from_slice(&std::fs::read(dir.join("bench.json")).unwrap()).unwrap();
    (out, json)
}

#[test]
fn bench_reports_every_figure_for_the_embedded_broker() {
    // The child runs inherit the environment, and the report names the batch size.
    let (out, json) = bench(
        &[
            "--rows",
            "3000",
            "--indices",
            "3",
            "--brokers",
            "sqlite",
            "--freshness-files",
            "3",
            // The AUTO CDC figure has a test of its own, below.
            "--cdc-keys",
            "0",
        ],
        &[("MEDALLION_VAR_batch_rows", "2000")],
        &[
            "== broker: sqlite",
            "ingest (CSV → Kafka)",
            "end to end (process wall, broker start included)",
            "incremental (one new day per index into 3000 rows)",
            "SCD2 MERGE of 10000 changed and new rows into a 100000-row history: ",
            "the median of 5 runs (",
            "freshness, --continuous --interval 200ms, 3 files: p50",
            "check ok: landing lines = Kafka records + ingest quarantine (3000 = ",
        ],
    );
    assert!(!out.contains("== AUTO CDC"), "{out}");
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(json["cdc"].is_null(), "--cdc-keys 0 leaves the figure out");
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

/// The AUTO CDC figure alone, on 2,000 keys and two batches of 20 changes: every batch
/// measured, the bytes it rewrote read from the Delta log, and the tables as the feed
/// must leave them, for SCD Type 1 and Type 2.
#[test]
fn bench_reports_the_auto_cdc_figure_for_both_scd_types() {
    let (out, json) = bench(
        &["--cdc-only", "--cdc-keys", "2000", "--cdc-batches", "2"],
        &[],
        &[
            "medallion bench · the AUTO CDC figure only",
            "== AUTO CDC: 2000 keys, 2 batches of 20 events (1% of the keys",
            "SCD TYPE 2 initial load of 2000 events: ",
            "SCD TYPE 2 batch of 20 events: ",
            "the median of 2 batches (",
            "rewritten per batch (removed + added): ",
            "check ok: SCD TYPE 2 current versions (__END_AT IS NULL) = live keys of the feed",
            "check ok: SCD TYPE 2 event store rows = events of the feed (",
        ],
    );
    assert!(
        !out.contains("== broker"),
        "--cdc-only measures no broker: {out}"
    );
    let cdc = &json["cdc"];
    assert_eq!(cdc["keys"], 2000);
    assert_eq!(cdc["events_per_batch"], 20);
    let mix = &cdc["mix"];
    let kinds = ["updates", "untracked", "deletes", "late"];
    let events: u64 = kinds.iter().map(|k| mix[k].as_u64().unwrap()).sum();
    assert_eq!(events, 40, "{mix}");
    assert!(mix["late"].as_u64().unwrap() > 0, "out of order: {mix}");
    let live = cdc["live_keys"].as_u64().unwrap();
    assert!(live > 1900 && live <= 2000, "{cdc}");

    let types = cdc["types"].as_array().unwrap();
    let of = |t: u64| {
        types
            .iter()
            .find(|x| x["scd_type"] == t)
            .unwrap_or_else(|| panic!("no SCD TYPE {t}: {cdc}"))
    };
    assert_measured(of(2), live);
    // Type 2 applies every event, late ones included.
    for b in of(2)["batches"].as_array().unwrap() {
        assert_eq!(b["events_applied"], 20, "{b}");
    }
    // The current versions are the live keys; the history has more rows.
    assert!(of(2)["target_rows"].as_u64().unwrap() > live);
    let type1 = of(1);
    assert_measured(type1, live);
    assert_eq!(type1["target_rows"], live, "a row per live key");
    assert!(
        out.contains("check ok: SCD TYPE 1 store rows = keys of the feed, live or deleted"),
        "{out}"
    );
}

/// One SCD type's figures: the initial load, then every batch with its time, rate and
/// bytes, and its checks passed.
fn assert_measured(t: &Value, live: u64) {
    let n = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("not a count: {v} in {t}"))
    };
    let secs = |v: &Value| v.as_f64().unwrap();
    assert_eq!(t["initial"]["events"], 2000, "{t}");
    assert!(n(&t["initial"]["target_bytes_added"]) > 0, "{t}");
    let batches = t["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2, "{t}");
    for b in batches {
        assert_eq!(b["events"], 20, "{b}");
        let applied = n(&b["events_applied"]);
        assert!(applied > 0 && applied <= 20, "{b}");
        assert!(
            secs(&b["seconds"]) > 0.0 && secs(&b["rows_per_s"]) > 0.0,
            "{b}"
        );
        assert!(secs(&b["update_seconds"]) >= secs(&b["seconds"]), "{b}");
        // A batch into a table of one file rewrites it: removed and added.
        assert!(n(&b["target_commits"]) >= 1, "{b}");
        assert!(n(&b["target_bytes_removed"]) > 0, "{b}");
        assert!(n(&b["target_bytes_added"]) > 0, "{b}");
    }
    assert!(secs(&t["rows_per_s"]) > 0.0, "{t}");
    assert!(n(&t["target_bytes_rewritten"]) > 0, "{t}");
    assert!(n(&t["target_bytes"]) > 0, "{t}");
    assert!(n(&t["target_rows"]) >= live, "{t}");
    let checks = t["checks"].as_array().unwrap();
    assert!(!checks.is_empty(), "{t}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{t}");
}
