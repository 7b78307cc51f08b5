//! A run that dies mid-file is resumed by the next one, whatever lands in between and
//! whatever `batch_rows` the next one uses: every data line reaches Kafka, bronze and
//! `quarantine.ingest` exactly once.

mod common;

use common::*;

/// Runs the binary with `fault` armed and expects it to die there.
async fn crash(w: &Workspace, fault: &str) {
    let crashed = w.run_binary(&[], &[("MEDALLION_FAULT", fault)]).await;
    assert!(
        !crashed.status.success(),
        "{fault}: the run should have died"
    );
    assert!(
        String::from_utf8_lossy(&crashed.stderr).contains("fault injected"),
        "{fault}: {}",
        String::from_utf8_lossy(&crashed.stderr)
    );
}

/// Kafka holds each of the `lines` data lines once, and bronze each Kafka record once.
async fn assert_each_line_once(w: &Workspace, broker: &TestBroker, lines: u64) {
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_eq!(
        source_lines(&records).len() as u64,
        lines,
        "every line reached Kafka"
    );
    assert_eq!(records.len() as u64, lines, "no line was sent twice");
    let bronze_rows = w
        .query(
            &bronze(),
            "SELECT count(*), count(DISTINCT partition || '/' || \"offset\") FROM t",
        )
        .await;
    assert_eq!(bronze_rows[0], vec![lines.to_string(), lines.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_landing_before_the_rerun_does_not_make_the_interrupted_one_start_over() {
    let broker = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker);
    w.set_var("batch_rows", "500");
    // The file the run dies in sorts after `a.csv`, which lands only after the crash.
    let first = w.generate(small(2000, 1, 11)).remove(0);
    std::fs::create_dir_all(w.landing().join("b")).unwrap();
    std::fs::rename(&first, w.landing().join("b/x.csv")).unwrap();
    crash(&w, "ingest.acked@700").await;

    let second = w.generate(small(1200, 1, 12)).remove(0);
    std::fs::rename(&second, w.landing().join("a.csv")).unwrap();
    // And the rerun commits to bronze in batches of another size.
    w.set_var("batch_rows", "333");
    let out = w.run_binary_ok(&[]).await;
    assert!(
        out.contains("b/x.csv: resumed after a crash"),
        "the rerun resumes b/x.csv rather than sending it again:\n{out}"
    );
    assert_each_line_once(&w, &broker, 3200).await;
    w.run_binary_ok(&[]).await;
    assert_each_line_once(&w, &broker, 3200).await;
}

/// A file of 25,000 bad lines among good ones: its quarantine rows are committed in
/// chunks while it is read. A crash between two chunks, then a rerun with another
/// `batch_rows`, quarantines each bad line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_quarantine_chunks_quarantines_each_bad_line_once() {
    let broker = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker);
    w.set_var("batch_rows", "500");
    let mut rows: Vec<String> = Vec::new();
    for i in 0..25_000 {
        rows.push(format!("NYA,2001-01-02,{i}"));
        if i % 10 == 0 {
            rows.push(format!("HSI,2001-01-{:02},1,2,0.5,1.5,1.5,{i}", 1 + i % 28));
        }
    }
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    w.land("bad.csv", &csv(&refs));
    crash(&w, "ingest.quarantine_chunk@2").await;
    let after_crash = w.ingest_quarantined_lines().await;
    assert_eq!(
        after_crash, 20_000,
        "two chunks of 10,000 landed before the crash"
    );

    w.set_var("batch_rows", "777");
    w.run_binary_ok(&[]).await;
    assert_eq!(w.ingest_quarantined_lines().await, 25_000);
    let distinct = w
        .query(
            &ingest_quarantine(),
            "SELECT count(DISTINCT line), min(raw_bytes), max(raw_bytes) FROM t",
        )
        .await;
    assert_eq!(distinct[0][0], "25000", "each bad line once");
    assert_eq!(
        topic_count(&broker.bootstrap(), "Stocks").await,
        2_500,
        "the good lines once"
    );
}
