//! The ingest path end to end, in process, against a real (embedded, sqlite) Kafka
//! broker and real Delta tables: CSV → Kafka → bronze, and bad rows → quarantine.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;

/// The embedded broker's sqlite engine is patched (vendor/tansu-storage/MEDALLION.md): it
/// reuses its prepared statements, and a fetch reads at most 10,000 records. One
/// partition of 25,000 records takes several fetches, and every record must come back
/// once, in offset order, with its own headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_longer_than_one_fetch_comes_back_whole_with_its_own_headers() {
    let broker = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker);
    w.set_var("kafka_partitions", "1");
    let files = w.generate(small(25_000, 1, 7));
    let lines = data_lines(&files[0]);
    w.run().await;

    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    let offsets: Vec<(i32, i64)> = records.iter().map(|r| (r.partition, r.offset)).collect();
    let expected: Vec<(i32, i64)> = (0..lines.len() as i64).map(|o| (0, o)).collect();
    assert_eq!(
        offsets, expected,
        "one partition, every offset once, in order"
    );
    for r in &records {
        let line: usize = r.headers["source_line"].parse().unwrap();
        let fields: Vec<&str> = lines[line - 2].split(',').collect();
        let value: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(
            (value["Index"].as_str(), value["Date"].as_str()),
            (Some(fields[0]), Some(fields[1])),
            "the headers of offset {} belong to its own line",
            r.offset
        );
    }
    assert_eq!(w.count(&bronze()).await, lines.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_data_line_becomes_one_message_and_one_bronze_row() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let files = w.generate(small(3000, 2, 1));
    let report = w.run().await;

    let mut lines = BTreeMap::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for (i, line) in data_lines(f).into_iter().enumerate() {
            lines.insert((name.clone(), (i + 2).to_string()), line);
        }
    }
    assert_eq!(lines.len(), 3000);
    assert!(
        lines.values().any(|l| l.contains(",null,")),
        "the input has null days"
    );

    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_eq!(records.len(), lines.len(), "one message per data line");
    let mut partition_of_index = BTreeMap::new();
    for r in &records {
        let at = (
            r.headers["source_file"].clone(),
            r.headers["source_line"].clone(),
        );
        let line = &lines[&at];
        let fields: Vec<&str> = line.split(',').collect();
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r.value).unwrap();
        let header: Vec<&str> = medallion::generate::HEADER.split(',').collect();
        assert_eq!(value.keys().map(String::as_str).collect::<Vec<_>>(), header);
        for (name, text) in header.iter().zip(&fields) {
            let expected = if *text == "null" || text.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::String(text.to_string())
            };
            assert_eq!(value[*name], expected, "{name} of {at:?}");
        }
        assert_eq!(r.key.as_deref(), Some(fields[0]));
        let p = partition_of_index.entry(fields[0]).or_insert(r.partition);
        assert_eq!(
            *p, r.partition,
            "all records of one Index share a partition"
        );
    }

    assert_eq!(w.count(&bronze()).await, 3000);
    let rows = w
        .query(&bronze(), "SELECT partition, \"offset\", key, value, topic, \"timestampType\", year_month = to_char(timestamp, '%Y-%m') FROM t ORDER BY partition, \"offset\"")
        .await;
    assert_eq!(rows.len(), records.len());
    for (row, r) in rows.iter().zip(&records) {
        assert_eq!(row[0], r.partition.to_string());
        assert_eq!(row[1], r.offset.to_string());
        assert_eq!(Some(&row[2]), r.key.as_ref());
        assert_eq!(row[3], r.value);
        assert_eq!(row[4], "Stocks");
        assert_eq!(row[5], "0", "CreateTime");
        assert_eq!(row[6], "true", "year_month is yyyy-MM of timestamp");
    }

    let ingest = &report.summaries[0];
    assert_eq!(
        (ingest.files, ingest.rows_read, ingest.rows_written),
        (2, 3000, 3000)
    );
    let bronze_summary = &report.summaries[1];
    assert_eq!(bronze_summary.rows_written, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_run_sends_nothing_and_a_new_file_is_the_only_one_ingested() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.generate(small(1000, 2, 2));
    w.run().await;
    assert_eq!(topic_count(&broker.bootstrap(), "Stocks").await, 1000);

    let again = w.run().await;
    assert_eq!(again.summaries[0].rows_written, 0);
    assert_eq!(again.summaries[1].rows_written, 0);
    assert!(again.summaries[1].versions.is_empty(), "no empty commits");
    assert_eq!(topic_count(&broker.bootstrap(), "Stocks").await, 1000);
    assert_eq!(w.count(&bronze()).await, 1000);

    // Touching a completed file does not send it again.
    let first = w.landing().join("stocks_0001.csv");
    let text = std::fs::read(&first).unwrap();
    std::fs::write(
        &first,
        [text.as_slice(), b"NYA,2030-01-01,1,2,0.5,1.5,1.5,10\r\n"].concat(),
    )
    .unwrap();

    let new = w.generate(common::GenerateOptions {
        prefix: "later".into(),
        ..small(300, 1, 3)
    });
    let third = w.run().await;
    let ingest = &third.summaries[0];
    assert_eq!((ingest.files, ingest.rows_written), (1, 300));
    assert!(
        ingest
            .notes
            .iter()
            .any(|n| n.contains("stocks_0001.csv changed after it was ingested")),
        "{:?}",
        ingest.notes
    );
    assert_eq!(topic_count(&broker.bootstrap(), "Stocks").await, 1300);
    assert_eq!(w.count(&bronze()).await, 1300);
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    let mut per_file = BTreeMap::new();
    for r in &records {
        *per_file
            .entry(r.headers["source_file"].clone())
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_file,
        BTreeMap::from([
            ("later_0001.csv".to_string(), data_lines(&new[0]).len()),
            ("stocks_0001.csv".to_string(), 500),
            ("stocks_0002.csv".to_string(), 500),
        ]),
        "the touched file was not resent; only the new file was added"
    );
}

/// Runs one task of the job in this process and expects it to succeed.
async fn run_task(w: &Workspace, task: &str) -> medallion::progress::TaskSummary {
    let options = medallion::job::RunOptions {
        task: Some(task.into()),
        ..Default::default()
    };
    let report = medallion::job::run(&w.settings(), &options).await.unwrap();
    if let Some(failed) = report.failure() {
        panic!("task {} failed: {:?}", failed.task, failed.notes);
    }
    report.summary(task).unwrap().clone()
}

/// The kafka_to_delta task's `batch_bytes` ends a commit before `batch_rows` does: 1,000
/// records of equal size with room for 100,000 rows but 20,000 bytes per commit make one
/// commit per `ceil(20,000 / size)` records, and bronze holds each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_bytes_splits_a_bronze_run_into_commits() {
    const ROWS: usize = 1000;
    const BATCH_BYTES: usize = 20_000;
    let broker = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker);
    w.set_var("batch_rows", "100000");
    let job = w.root().join("resources/kafka_stream_job.yml");
    let text = std::fs::read_to_string(&job).unwrap();
    assert!(text.contains("            partition_by: year_month\n"));
    std::fs::write(
        &job,
        text.replace(
            "            partition_by: year_month\n",
            &format!(
                "            partition_by: year_month\n            batch_bytes: {BATCH_BYTES}\n"
            ),
        ),
    )
    .unwrap();
    // Fixed-width rows: every record has the same key and value sizes.
    let rows: Vec<String> = (0..ROWS)
        .map(|i| format!("NYA,2024-01-{:02},1,2,0.5,1.5,1.5,{i:05}", 1 + i % 28))
        .collect();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    w.land("a.csv", &csv(&refs));
    run_task(&w, "ingest").await;
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_eq!(records.len(), ROWS);
    let size = records[0].key.as_ref().unwrap().len() + records[0].value.len();
    assert!(records
        .iter()
        .all(|r| r.key.as_ref().unwrap().len() + r.value.len() == size));

    let bronze_run = run_task(&w, "bronze").await;
    let per_commit = BATCH_BYTES.div_ceil(size);
    let commits = ROWS.div_ceil(per_commit);
    assert!(commits > 1, "{size} bytes a record");
    assert_eq!(
        bronze_run.versions.len(),
        commits,
        "{:?}",
        bronze_run.versions
    );
    // In the table's log: its creation, then one version per commit.
    let log = w.settings().warehouse.path(&bronze()).join("_delta_log");
    let versions = std::fs::read_dir(log)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("json".as_ref()))
        .count();
    assert_eq!(versions, commits + 1);

    w.assert_bronze_holds(&records, "bronze holds every record once")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_rows_and_files_go_to_quarantine_and_the_counts_reconcile() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let mut bad = b"\xEF\xBB\xBFIndex,Date,Open,High,Low,Close,Adj Close,Volume\r\n".to_vec();
    bad.extend_from_slice(b"NYA,2001-01-02,1,2,0.5,1.5,1.5,10\r\n"); // good, line 2
    bad.extend_from_slice(b"NYA,2001-01-03,1,2,0.5\r\n"); // too few, line 3
    bad.extend_from_slice(b"NYA,2001-01-04,1,2,0.5,1.5,1.5,10,99\r\n"); // too many, line 4
    bad.extend_from_slice(b"NYA,2001-01-05,\xff\xfe,2,0.5,1.5,1.5,10\r\n"); // not UTF-8, line 5
    bad.extend_from_slice(b"\"NY,A\",\"2001-01-\r\n08\",1,2,0.5,1.5,1.5,10\r\n"); // quoted, lines 6-7
    bad.extend_from_slice(b"NYA,2001-01-09,null,,null,null,null,null\r\n"); // good, line 8
    w.land("a_bad_rows.csv", &bad);
    w.land(
        "b_no_close.csv",
        b"Index,Date,Open,High,Low,Adj Close,Volume\nNYA,2001-01-02,1,2,0.5,1.5,10\nNYA,2001-01-03,1,2,0.5,1.5,10\nNYA,2001-01-04,1,2,0.5,1.5,10\n",
    );
    let report = w.run().await;

    let data_lines_total = 6 + 3;
    let kafka = topic_count(&broker.bootstrap(), "Stocks").await;
    let quarantined = w.ingest_quarantined_lines().await;
    assert_eq!(kafka, 3);
    assert_eq!(quarantined, 6);
    assert_eq!(
        w.count(&ingest_quarantine()).await,
        4,
        "3 bad rows, and the file without Close once"
    );
    assert_eq!(
        kafka + quarantined,
        data_lines_total,
        "every data line is accounted for"
    );
    let ingest = &report.summaries[0];
    assert_eq!(
        (
            ingest.rows_read,
            ingest.rows_written,
            ingest.rows_quarantined
        ),
        (9, 3, 6)
    );

    let rows = w
        .query(
            &ingest_quarantine(),
            "SELECT file, line, raw, reason FROM t ORDER BY file, line",
        )
        .await;
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[3].clone()))
        .collect();
    let no_close = "file header lacks required column(s) Close; the whole file is quarantined (3 data line(s))";
    let expected: Vec<(String, String, String)> = [
        ("a_bad_rows.csv", "3", "expected 8 fields, found 5"),
        ("a_bad_rows.csv", "4", "expected 8 fields, found 9"),
        ("a_bad_rows.csv", "5", "field `Open` is not valid UTF-8"),
        ("b_no_close.csv", "1", no_close),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, expected);
    assert_eq!(rows[0][2], "NYA,2001-01-03,1,2,0.5");
    assert_eq!(rows[3][2], "Index,Date,Open,High,Low,Adj Close,Volume");
    let lines = w
        .query(
            &ingest_quarantine(),
            "SELECT lines FROM t ORDER BY file, line",
        )
        .await;
    assert_eq!(lines, [["1"], ["1"], ["1"], ["3"]]);

    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    let lines: BTreeSet<String> = records
        .iter()
        .map(|r| r.headers["source_line"].clone())
        .collect();
    assert_eq!(lines, BTreeSet::from(["2".into(), "6".into(), "8".into()]));
    let quoted = records
        .iter()
        .find(|r| r.headers["source_line"] == "6")
        .unwrap();
    assert_eq!(quoted.key.as_deref(), Some("NY,A"));
    assert!(
        quoted.value.contains(r#""Date":"2001-01-\r\n08""#),
        "{}",
        quoted.value
    );

    // A second run quarantines nothing twice.
    w.run().await;
    assert_eq!(w.count(&ingest_quarantine()).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_and_header_only_files_are_completed_without_rows() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land("empty.csv", b"");
    w.land(
        "header_only.csv",
        b"\xEF\xBB\xBFIndex,Date,Open,High,Low,Close,Adj Close,Volume\r\n",
    );
    let report = w.run().await;
    assert_eq!(
        (report.summaries[0].files, report.summaries[0].rows_read),
        (2, 0)
    );
    assert_eq!(topic_count(&broker.bootstrap(), "Stocks").await, 0);
    assert_eq!(w.run().await.summaries[0].files, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzip_files_and_nested_folders_are_read_in_path_order() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    std::fs::create_dir_all(w.landing().join("2024")).unwrap();
    medallion::generate::generate(
        &w.landing().join("2024"),
        &common::GenerateOptions {
            gzip: true,
            ..small(500, 1, 4)
        },
    )
    .unwrap();
    w.generate(small(200, 1, 5));
    let report = w.run().await;
    assert_eq!(report.summaries[0].rows_written, 700);
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    let files: BTreeSet<&str> = records
        .iter()
        .map(|r| r.headers["source_file"].as_str())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from(["2024/stocks_0001.csv.gz", "stocks_0001.csv"])
    );
    assert_eq!(w.count(&bronze()).await, 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_landing_folder_is_a_clear_error() {
    let broker = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker);
    w.set_var("landing_dir", "nowhere");
    let report = w.try_run().await;
    let failed = report.failure().expect("ingest fails");
    assert_eq!(failed.task, "ingest");
    let note = failed.notes.join(" ");
    assert!(
        note.contains("nowhere") && note.contains("landing_dir"),
        "{note}"
    );
    assert_eq!(
        report.summaries[1].state,
        medallion::progress::TaskState::Skipped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_run_of_a_target_waits_for_the_first() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.generate(small(300, 1, 8));
    let lock_path = w.settings().state_dir.join("run.lock");
    let lock = medallion::lock::FileLock::acquire(&lock_path, std::time::Duration::ZERO).unwrap();

    let started = std::time::Instant::now();
    let run = tokio::spawn({
        let root = w.root().to_path_buf();
        let bootstrap = broker.bootstrap();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_medallion"))
                .current_dir(root)
                .args([
                    "run",
                    "--var",
                    &format!("kafka_bootstrap_servers={bootstrap}"),
                ])
                .output()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        !w.settings().warehouse.path(&bronze()).exists(),
        "the second run waits while the first holds the lock"
    );
    drop(lock);
    let out = run.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("waiting for another run of this target"),
        "{err}"
    );
    assert_eq!(w.count(&bronze()).await, 300);
}
