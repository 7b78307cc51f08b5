//! Kill and re-run: the real binary is aborted at named fault points (as abruptly as
//! `kill -9`), then run again. Kafka must hold every good data line exactly once, bronze
//! every Kafka record exactly once, and quarantine every bad line exactly once.

mod common;

use common::watch::duration_of;
use common::*;

/// Bad lines of [`land_input`]: two with too few fields, one that is not UTF-8.
const BAD_LINES: u64 = 3;

/// 3,000 good lines in two files, plus a file with [`BAD_LINES`] bad lines among four.
fn land_input(w: &Workspace) -> u64 {
    w.generate(small(3000, 2, 11));
    w.land(
        "stocks_0003.csv",
        b"Index,Date,Open,High,Low,Close,Adj Close,Volume\r\nNYA,2031-01-02,1,2,0.5,1.5,1.5,10\r\nNYA,2031-01-03,1\r\nNYA,2031-01-06,1,2\r\nNYA,2031-01-07,1,2,0.5,\xff1.5,1.5,10\r\n",
    );
    3001
}

async fn assert_exactly_once(w: &Workspace, records: &[Record], good: u64) {
    assert_eq!(
        records.len() as u64,
        good,
        "Kafka holds each good line once"
    );
    let lines = source_lines(records);
    assert_eq!(lines.len() as u64, good, "no line was sent twice");

    w.assert_bronze_holds(records, "bronze holds every Kafka record exactly once")
        .await;
    assert_eq!(
        w.count(&ingest_quarantine()).await,
        BAD_LINES,
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
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_exactly_once(&w, &records, good).await;

    // And a third run has nothing left to do.
    w.run_binary_ok(&[]).await;
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_exactly_once(&w, &records, good).await;
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

/// Killed after two bronze commits of 500 rows; the rerun commits in batches of 333, and
/// a third run in batches of 777: bronze resumes from its recorded offsets, not from a
/// count of batches, and holds each Kafka record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_between_bronze_commits_then_rerun_with_another_batch_rows() {
    let broker = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker);
    w.set_var("batch_rows", "500");
    let good = land_input(&w);
    w.run_binary_ok(&["--task", "ingest"]).await;
    let crashed = w
        .run_binary(
            &["--task", "bronze"],
            &[("MEDALLION_FAULT", "bronze.after_commit@2")],
        )
        .await;
    assert!(!crashed.status.success(), "the run should have died");
    assert!(String::from_utf8_lossy(&crashed.stderr).contains("fault injected"));
    assert_eq!(w.count(&bronze()).await, 1000, "two commits of 500 landed");

    w.set_var("batch_rows", "333");
    let out = w.run_binary_ok(&["--task", "bronze"]).await;
    assert!(out.contains("rows written  2001"), "{out}");
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_exactly_once(&w, &records, good).await;

    w.set_var("batch_rows", "777");
    let out = w.run_binary_ok(&["--task", "bronze"]).await;
    assert!(out.contains("rows written  0"), "{out}");
    assert_exactly_once(&w, &records, good).await;
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
async fn killed_in_stocks_silver_between_quarantine_and_silver() {
    crash_refine_then_rerun("pipeline.after_quarantine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_stocks_silver_commit() {
    crash_refine_then_rerun("pipeline.after_commit").await;
}

/// The AUTO CDC flow close_price: its events are in its event store, its history not yet
/// merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_between_the_scd2_event_store_and_its_merge() {
    crash_refine_then_rerun("cdc.after_events").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_during_the_scd2_merge() {
    crash_refine_then_rerun("cdc.before_merge").await;
}

/// A second run, the fixture's second part over the tables of its first, closes open
/// versions of close_price and re-cuts them for the late rows: the files that hold them
/// are rewritten, and the run dies with the new files written but not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_with_the_scd2_rewrite_written_but_not_committed() {
    let first = |w: &Workspace| {
        w.land("fixture_1.csv", &csv(RUN_1));
        w.generate(small(600, 1, 31));
    };
    let second = |w: &Workspace| {
        w.land("fixture_2.csv", &csv(RUN_2));
    };
    let reference_broker = TestBroker::start().await;
    let reference = Workspace::with_broker(&reference_broker);
    first(&reference);
    reference.run_binary_ok(&[]).await;
    second(&reference);
    reference.run_binary_ok(&[]).await;
    let expected = refined_tables(&reference).await;

    let fault = "delta.rewrite.before_commit";
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    first(&w);
    w.run_binary_ok(&[]).await;
    second(&w);
    let crashed = w.run_binary(&[], &[("MEDALLION_FAULT", fault)]).await;
    assert!(
        !crashed.status.success()
            && String::from_utf8_lossy(&crashed.stderr).contains("fault injected"),
        "{fault}: the run should have died: {}",
        String::from_utf8_lossy(&crashed.stderr)
    );
    w.run_binary_ok(&[]).await;
    assert_eq!(refined_tables(&w).await, expected, "{fault}");
    w.run_binary_ok(&[]).await;
    assert_eq!(refined_tables(&w).await, expected, "{fault}: third run");
}

/// The first refresh of the update: the materialized view current_close_silver.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_during_the_current_close_refresh() {
    crash_refine_then_rerun("pipeline.before_refresh").await;
}

/// The second streaming commit of the update: the stream-static join's (or stocks_silver's
/// second batch, if it has one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_stream_static_join() {
    crash_refine_then_rerun("pipeline.after_commit@2").await;
}

/// The second refresh of the update: gold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_during_the_gold_refresh() {
    crash_refine_then_rerun("pipeline.before_refresh@2").await;
}

/// Every named fault point, with how many times a run of `land_input` reaches it
/// (batches of 500 rows).
const FAULT_POINTS: &[(&str, u64)] = &[
    ("ingest.row", 3001),
    ("ingest.acked", 3001),
    ("ingest.after_send", 3),
    ("ingest.before_checkpoint", 3),
    ("bronze.after_commit", 7),
    // The pipeline `stocks`: every streaming flow's batch (stocks_silver, the AUTO CDC
    // flow close_price, then the stream-static join), and each materialized view's
    // refresh (current_close_silver, gold).
    ("cdc.after_events", 1),
    ("cdc.before_merge", 1),
    ("pipeline.after_quarantine", 3),
    ("pipeline.after_commit", 3),
    ("pipeline.before_refresh", 2),
];

/// SplitMix64, for seeded trials that replay exactly.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where the runs of a trial find Kafka.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BrokerMode {
    /// A broker of the test's own, outside the binary, as a remote Kafka would be.
    Separate,
    /// The default: each run starts the embedded broker inside its own process, with
    /// sqlite storage under `state_dir`, so that a kill kills the broker too.
    InProcess,
}

/// The workspace of one trial, and its broker unless the runs start their own.
struct Trial {
    w: Workspace,
    broker: Option<TestBroker>,
}

impl Trial {
    async fn new(mode: BrokerMode) -> Self {
        let broker = match mode {
            BrokerMode::Separate => Some(TestBroker::start().await),
            BrokerMode::InProcess => None,
        };
        let mut w = match &broker {
            Some(b) => Workspace::with_broker(b),
            None => Workspace::new(),
        };
        w.set_var("batch_rows", "500");
        Trial { w, broker }
    }

    /// Every record of the topic (through the workspace's own embedded broker, started
    /// here on its storage, in [`BrokerMode::InProcess`]).
    async fn records(&self) -> Vec<Record> {
        match &self.broker {
            Some(b) => topic_records(&b.bootstrap(), "Stocks").await,
            None => {
                let b = TestBroker::of_state_dir(&self.w).await;
                let records = topic_records(&b.bootstrap(), "Stocks").await;
                b.stop().await;
                records
            }
        }
    }
}

/// What a test's trials did.
#[derive(Debug, Default)]
struct Kills {
    /// Trials that aborted at a named fault point.
    named: usize,
    /// Trials that sent SIGKILL.
    sigkills: usize,
    /// SIGKILLs that landed while the job was at work (a task started, the job not done).
    landed: usize,
}

/// Seeded trials: each kills a run, either at a random named fault point (abort) or with
/// SIGKILL at a random instant of its work (which can land anywhere, between a Parquet
/// write and its Delta commit included), runs again to completion, and compares every
/// table (bronze and quarantine.ingest on content) and the topic with an uninterrupted
/// run of the same input.
///
/// A SIGKILL trial draws a task and a fraction, waits until the run reports that the task
/// started, and kills it that fraction of the task's time later (the time it took in the
/// uninterrupted run, scaled by how fast the first task went in this run compared with
/// that one, as machine load varies). Whether the kill landed during the work is read
/// from what the run reported before it died.
async fn fault_trials(seeds: std::ops::Range<u64>) -> Kills {
    let mode = mode_of(seeds.start);
    assert!(seeds.clone().all(|s| mode_of(s) == mode), "{seeds:?}");
    let reference = Trial::new(mode).await;
    land_input(&reference.w);
    let done = reference.w.spawn_watched(&[]).wait().await;
    assert!(done.status.success(), "{}", done.stderr);
    let durations = done.durations();
    let tasks = done.ended();
    assert_eq!(tasks.len(), 3, "every task ran: {tasks:?}");
    let expected = refined_tables(&reference.w).await;
    let expected_ingested = ingested_tables(&reference.w).await;
    assert!(
        expected_ingested.iter().all(|(_, rows)| !rows.is_empty()),
        "{expected_ingested:?}"
    );

    let mut kills = Kills::default();
    for seed in seeds {
        let mut rng = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xA5A5;
        let t = Trial::new(mode).await;
        let good = land_input(&t.w);
        let how = if seed % 2 == 0 {
            // Named trials go round the points, so that every task is hit.
            let (point, hits) = FAULT_POINTS[fault_point_of(seed)];
            let hit = 1 + splitmix(&mut rng) % hits;
            let fault = format!("{point}@{hit}");
            let out =
                t.w.spawn_watched(&[("MEDALLION_FAULT", &fault)])
                    .wait()
                    .await;
            assert!(
                !out.status.success() && out.stderr.contains("fault injected"),
                "seed {seed}: {fault} did not kill the run: {}",
                out.stderr
            );
            kills.named += 1;
            format!("{fault}, in {:?}", out.running())
        } else {
            let (task, took) = &durations[(splitmix(&mut rng) % durations.len() as u64) as usize];
            let fraction = (splitmix(&mut rng) % 1000) as f64 / 1000.0;
            let mut run = t.w.spawn_watched(&[]);
            let started = run.started(task).await;
            let (first, first_took) = &durations[0];
            let speed = duration_of(&run.events(), first)
                .map_or(1.0, |d| d.as_secs_f64() / first_took.as_secs_f64());
            let delay = took.mul_f64(fraction * speed);
            let out = run.kill_at(started + delay).await;
            let landed = out.killed_during_work(&tasks);
            kills.sigkills += 1;
            kills.landed += usize::from(landed);
            format!(
                "SIGKILL {delay:?} after {task} started, in {:?}, {}",
                out.running(),
                if landed {
                    "during the work"
                } else {
                    "NOT during the work"
                }
            )
        };
        t.w.run_binary_ok(&[]).await;
        assert_eq!(
            ingested_tables(&t.w).await,
            expected_ingested,
            "seed {seed} ({how})"
        );
        assert_eq!(refined_tables(&t.w).await, expected, "seed {seed} ({how})");
        assert_exactly_once(&t.w, &t.records().await, good).await;
        eprintln!("seed {seed} ({mode:?}): {how}: tables identical");
    }
    eprintln!("{kills:?}");
    kills
}

/// Runs the 8 trials of `seeds` and checks that they really killed runs at work: every
/// named trial aborted (checked per trial), and at least 3 of the 4 SIGKILLs landed while
/// the job was at work (one drawn near the end of the last task may find the run done).
async fn fault_harness(seeds: std::ops::Range<u64>) {
    let kills = fault_trials(seeds).await;
    assert_eq!((kills.named, kills.sigkills), (4, 4));
    assert!(
        kills.landed >= 3,
        "too few SIGKILLs landed while the job was at work: {kills:?}"
    );
}

/// Trials 0..24 use a broker of the test's own; 24..48 the default, the broker inside
/// the killed process.
fn mode_of(seed: u64) -> BrokerMode {
    if seed < 24 {
        BrokerMode::Separate
    } else {
        BrokerMode::InProcess
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_0_to_7() {
    fault_harness(0..8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_8_to_15() {
    fault_harness(8..16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_16_to_23() {
    fault_harness(16..24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_24_to_31_broker_in_process() {
    fault_harness(24..32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_32_to_39_broker_in_process() {
    fault_harness(32..40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_trials_40_to_47_broker_in_process() {
    fault_harness(40..48).await;
}

/// The named fault point of an even seed's trial.
fn fault_point_of(seed: u64) -> usize {
    (seed / 2) as usize % FAULT_POINTS.len()
}

#[test]
fn the_harness_hits_every_named_fault_point_in_both_broker_modes() {
    // The seeds of the harness tests: every named point gets a trial in each mode.
    for mode in [BrokerMode::Separate, BrokerMode::InProcess] {
        let chosen: std::collections::BTreeSet<usize> = (0..48u64)
            .filter(|s| s % 2 == 0 && mode_of(*s) == mode)
            .map(fault_point_of)
            .collect();
        assert_eq!(chosen.len(), FAULT_POINTS.len(), "{mode:?}");
    }
}
