//! Kill and re-run: the real binary is aborted at named fault points (as abruptly as
//! `kill -9`), then run again. Kafka must hold every good data line exactly once, bronze
//! every Kafka record exactly once, and quarantine every bad line exactly once.

mod common;

use common::*;

/// 3,000 good lines in two files, plus a file with two bad lines among three.
fn land_input(w: &Workspace) -> u64 {
    w.generate(small(3000, 2, 11));
    w.land(
        "stocks_0003.csv",
        b"Index,Date,Open,High,Low,Close,Adj Close,Volume\r\nNYA,2031-01-02,1,2,0.5,1.5,1.5,10\r\nNYA,2031-01-03,1\r\nNYA,2031-01-06,1,2\r\n",
    );
    3001
}

async fn assert_exactly_once(w: &Workspace, broker: &TestBroker, good: u64) {
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_eq!(
        records.len() as u64,
        good,
        "Kafka holds each good line once"
    );
    let lines = source_lines(&records);
    assert_eq!(lines.len() as u64, good, "no line was sent twice");

    let bronze_rows = w
        .query(
            &bronze(),
            "SELECT partition, \"offset\", value FROM t ORDER BY partition, \"offset\"",
        )
        .await;
    let kafka_rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.partition.to_string(),
                r.offset.to_string(),
                r.value.clone(),
            ]
        })
        .collect();
    assert_eq!(
        bronze_rows, kafka_rows,
        "bronze holds every Kafka record exactly once"
    );
    assert_eq!(
        w.count(&ingest_quarantine()).await,
        2,
        "each bad line quarantined once"
    );
}

/// `resumed`: text the rerun's summary must show, proving it resumed rather than redid.
async fn crash_then_rerun(fault: &str, resumed: &str) {
    let broker = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker);
    w.set_var("batch_rows", "500");
    let good = land_input(&w);

    let crashed = w.run_binary(&[], &[("MEDALLION_FAULT", fault)]).await;
    let stderr = String::from_utf8_lossy(&crashed.stderr);
    assert!(
        !crashed.status.success(),
        "{fault}: the run should have died"
    );
    assert!(stderr.contains("fault injected"), "{fault}: {stderr}");

    let out = w.run_binary_ok(&[]).await;
    assert!(
        out.contains(resumed),
        "{fault}: rerun should show `{resumed}`:\n{out}"
    );
    assert_exactly_once(&w, &broker, good).await;

    // And a third run has nothing left to do.
    w.run_binary_ok(&[]).await;
    assert_exactly_once(&w, &broker, good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_file_resumes_without_resending() {
    // 700 messages of the first file are acknowledged, the rest are not: the rerun reads
    // back what reached the topic and sends only the rest.
    crash_then_rerun("ingest.acked@700", "stocks_0001.csv: resumed after a crash").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_while_messages_wait_in_the_producer_queue() {
    crash_then_rerun("ingest.row@700", "ingest succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_acks_before_the_checkpoint_sends_nothing_twice() {
    crash_then_rerun(
        "ingest.before_checkpoint@3",
        "stocks_0003.csv: resumed after a crash; 1 line(s) were already in the topic",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_a_file_was_acknowledged() {
    crash_then_rerun(
        "ingest.after_send@2",
        "stocks_0002.csv: resumed after a crash; 1500 line(s) were already in the topic",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_between_bronze_commits_leaves_no_duplicate_offsets() {
    // Two commits of 500 survived the crash: the rerun reads only the rest.
    crash_then_rerun("bronze.after_commit@2", "rows written  2001").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_last_bronze_commit() {
    // 3,001 records in batches of 500: the 7th commit is the last one.
    crash_then_rerun("bronze.after_commit@7", "rows written  0").await;
}

/// The fixture's records (duplicates, a correction, late and bad rows) and generated
/// history, in two files.
fn land_refinable_input(w: &Workspace) {
    let mut first: Vec<&str> = RUN_1.to_vec();
    first.extend_from_slice(RUN_2);
    w.land("fixture.csv", &csv(&first));
    w.generate(small(600, 1, 31));
}

/// Kills a run at `fault` in a Silver or Gold task, runs again, and compares every table
/// with an uninterrupted run of the same input.
async fn crash_refine_then_rerun(fault: &str) {
    let reference_broker = TestBroker::start().await;
    let reference = Workspace::with_broker(&reference_broker);
    land_refinable_input(&reference);
    reference.run_binary_ok(&[]).await;
    let expected = refined_tables(&reference).await;
    assert!(
        expected.iter().all(|(_, rows)| !rows.is_empty()),
        "{expected:?}"
    );

    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    land_refinable_input(&w);
    let crashed = w.run_binary(&[], &[("MEDALLION_FAULT", fault)]).await;
    assert!(
        !crashed.status.success(),
        "{fault}: the run should have died"
    );
    assert!(String::from_utf8_lossy(&crashed.stderr).contains("fault injected"));
    w.run_binary_ok(&[]).await;
    assert_eq!(refined_tables(&w).await, expected, "{fault}");
    // And a third run changes nothing.
    w.run_binary_ok(&[]).await;
    assert_eq!(refined_tables(&w).await, expected, "{fault}: third run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_in_stocks_between_quarantine_and_silver() {
    crash_refine_then_rerun("stocks.after_quarantine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_stocks_commit() {
    crash_refine_then_rerun("stocks.after_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_during_the_scd2_merge() {
    crash_refine_then_rerun("close_price.before_merge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_scd2_merge() {
    crash_refine_then_rerun("close_price.after_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_during_the_current_close_rebuild() {
    crash_refine_then_rerun("current_close.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_stream_static_join() {
    crash_refine_then_rerun("stocks_close.after_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_during_the_gold_rebuild() {
    crash_refine_then_rerun("updated_stocks.before_commit").await;
}

/// Every named fault point, with how many times a run of `land_input` reaches it
/// (batches of 500 rows).
const FAULT_POINTS: &[(&str, u64)] = &[
    ("ingest.row", 3001),
    ("ingest.acked", 3001),
    ("ingest.after_send", 3),
    ("ingest.before_checkpoint", 3),
    ("bronze.after_commit", 7),
    ("stocks.after_quarantine", 1),
    ("stocks.after_commit", 1),
    ("close_price.before_merge", 1),
    ("close_price.after_commit", 1),
    ("current_close.before_commit", 1),
    ("stocks_close.after_commit", 1),
    ("updated_stocks.before_commit", 1),
];

/// SplitMix64, for seeded trials that replay exactly.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seeded trials: each kills a run, either at a random named fault point (abort) or with
/// SIGKILL after a random delay (which can land anywhere, between a Parquet write and its
/// Delta commit included), runs again to completion, and compares every table with an
/// uninterrupted run of the same input. Returns how many trials really killed a run.
async fn fault_trials(seeds: std::ops::Range<u64>) -> usize {
    let reference_broker = TestBroker::start().await;
    let mut reference = Workspace::with_broker(&reference_broker);
    reference.set_var("batch_rows", "500");
    land_input(&reference);
    let started = std::time::Instant::now();
    reference.run_binary_ok(&[]).await;
    let full_run = started.elapsed();
    let expected = refined_tables(&reference).await;

    let mut killed = 0;
    for seed in seeds {
        let mut rng = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xA5A5;
        let broker = TestBroker::start().await;
        let mut w = Workspace::with_broker(&broker);
        w.set_var("batch_rows", "500");
        let good = land_input(&w);
        let how = if seed % 2 == 0 {
            // Named trials go round the points, so that every task is hit.
            let (point, hits) = FAULT_POINTS[fault_point_of(seed)];
            let hit = 1 + splitmix(&mut rng) % hits;
            let fault = format!("{point}@{hit}");
            let out = w.run_binary(&[], &[("MEDALLION_FAULT", &fault)]).await;
            assert!(
                !out.status.success(),
                "seed {seed}: {fault} did not kill the run"
            );
            killed += 1;
            fault
        } else {
            let delay = std::time::Duration::from_millis(
                100 + splitmix(&mut rng) % full_run.as_millis().max(200) as u64,
            );
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medallion"));
            cmd.current_dir(w.root()).arg("run");
            for (n, v) in &w.vars {
                cmd.arg("--var").arg(format!("{n}={v}"));
            }
            let mut child = cmd
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            tokio::time::sleep(delay).await;
            if child.try_wait().unwrap().is_none() {
                child.start_kill().unwrap(); // SIGKILL
                killed += 1;
            }
            child.wait().await.unwrap();
            format!("SIGKILL after {delay:?}")
        };
        w.run_binary_ok(&[]).await;
        assert_exactly_once(&w, &broker, good).await;
        assert_eq!(refined_tables(&w).await, expected, "seed {seed} ({how})");
        eprintln!("seed {seed}: {how}: tables identical");
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_0_to_7() {
    assert!(fault_trials(0..8).await >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_8_to_15() {
    assert!(fault_trials(8..16).await >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_16_to_23() {
    assert!(fault_trials(16..24).await >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_24_to_31() {
    assert!(fault_trials(24..32).await >= 4);
}

/// The named fault point of an even seed's trial.
fn fault_point_of(seed: u64) -> usize {
    (seed / 2) as usize % FAULT_POINTS.len()
}

#[test]
fn the_harness_hits_every_named_fault_point() {
    // The seeds of the four harness tests: every named point gets a trial.
    let chosen: std::collections::BTreeSet<usize> = (0..32u64)
        .filter(|s| s % 2 == 0)
        .map(fault_point_of)
        .collect();
    assert_eq!(chosen.len(), FAULT_POINTS.len());
}
