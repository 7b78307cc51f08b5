//! The landing folder is read safely: nothing outside it, no entry that stops the
//! listing, no line that exhausts memory, and no record that blocks the files after it.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

/// Whether this process ignores file permissions (root): then unreadable files are not.
fn permissions_apply() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() != 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn links_and_bad_entries_are_skipped_and_the_other_files_go_through() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "Index,Date\nTOP-SECRET-VALUE,2024-01-01\n").unwrap();
    let landing = w.landing();
    // A link to a file outside, a link to a folder outside, a dangling link (an editor's
    // lock file) and a link loop.
    std::os::unix::fs::symlink(&secret, landing.join("x.csv")).unwrap();
    std::os::unix::fs::symlink(outside.path(), landing.join("elsewhere")).unwrap();
    std::fs::write(outside.path().join("y.csv"), "TOP-SECRET-VALUE\n").unwrap();
    std::os::unix::fs::symlink("/nonexistent/file.csv", landing.join(".#lock.csv")).unwrap();
    std::os::unix::fs::symlink("dangling.csv", landing.join("dangling.csv")).unwrap();
    std::os::unix::fs::symlink("loop", landing.join("loop")).unwrap();
    let good = w.land("good.csv", &csv(&["NYA,2024-01-02,1,2,0.5,1.5,1.5,10"]));
    let mut expected_lines = 1;
    if permissions_apply() {
        // An unreadable folder and an unreadable file.
        let locked = landing.join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::write(locked.join("z.csv"), "x").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let unreadable = w.land(
            "unreadable.csv",
            &csv(&["NYA,2024-01-03,1,2,0.5,1.5,1.5,10"]),
        );
        std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
        expected_lines = 1;
    }
    let out = w.run_binary_ok(&[]).await;
    assert!(
        out.contains("x.csv: skipped, it is a symbolic link"),
        "{out}"
    );
    assert!(out.contains("dangling.csv: skipped"), "{out}");
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_eq!(records.len(), expected_lines, "only good.csv reached Kafka");
    assert_eq!(records[0].headers["source_file"], "good.csv");
    assert!(good.exists());
    // Nothing of the secret file is anywhere.
    let quarantine = w.medallion_ok(&["quarantine", "--samples", "50"]);
    assert!(!quarantine.contains("TOP-SECRET"), "{quarantine}");
    if permissions_apply() {
        let rows = w
            .query(
                &ingest_quarantine(),
                "SELECT file, line, lines, reason FROM t",
            )
            .await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0][0], "unreadable.csv");
        assert!(rows[0][3].contains("cannot be read"), "{rows:?}");
        assert!(
            out.contains("locked: skipped, it cannot be listed"),
            "{out}"
        );
        std::fs::set_permissions(
            landing.join("locked"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
}

/// A file with a line of 3 MB, a line of 100,000 fields and a quoted field spanning
/// many lines, between good rows: each oversized line is quarantined with its length and
/// a cut raw text, and the line numbers after them are right.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_lines_are_quarantined_with_their_length() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let long = format!("NYA,2024-01-03,{},2,0.5,1.5,1.5,10", "9".repeat(3 << 20));
    let wide = format!("NYA,2024-01-04{}", ",1".repeat(100_000));
    let multiline = format!(
        "\"N\r\n{}Y\",2024-01-05,1,2,0.5,1.5,1.5,10",
        "a\r\n".repeat(600_000)
    );
    w.land(
        "big.csv",
        &csv(&[
            "NYA,2024-01-02,1,2,0.5,1.5,1.5,10",
            &long,
            &wide,
            &multiline,
            "NYA,2024-01-08,1,2,0.5,1.5,1.5,10",
        ]),
    );
    w.run_binary_ok(&[]).await;
    let rows = w
        .query(
            &ingest_quarantine(),
            "SELECT line, raw_bytes, length(raw), reason FROM t ORDER BY line",
        )
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0][0], "3");
    assert_eq!(rows[0][1], long.len().to_string());
    assert!(
        rows[0][3].contains("above max_line_bytes (1048576)"),
        "{rows:?}"
    );
    assert_eq!(rows[1][0], "4");
    assert!(
        rows[1][3].contains("100002 fields, above max_fields (4096)"),
        "{rows:?}"
    );
    assert_eq!(rows[2][0], "5");
    assert_eq!(rows[2][1], multiline.len().to_string());
    for r in &rows {
        assert!(
            r[2].parse::<usize>().unwrap() <= 16 * 1024,
            "raw is cut: {r:?}"
        );
    }
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    let lines: Vec<&str> = records
        .iter()
        .map(|r| r.headers["source_line"].as_str())
        .collect();
    let mut lines = lines.clone();
    lines.sort();
    // The last row's line counts the 600,001 line breaks of the quoted field (line 5).
    assert_eq!(lines, ["2", &(5 + 600_001 + 1).to_string()]);
}

/// A small `.csv.gz` of 50 million blank lines costs neither memory nor a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gzip_of_blank_lines_is_read_in_bounded_memory() {
    use std::io::Write;
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&csv(&["NYA,2024-01-02,1,2,0.5,1.5,1.5,10"]))
        .unwrap();
    let blank = vec![b'\n'; 1 << 20];
    for _ in 0..50 {
        gz.write_all(&blank).unwrap();
    }
    gz.write_all(b"NYA,2024-01-03,1,2,0.5,1.5,1.5,10\n")
        .unwrap();
    w.land("blank.csv.gz", &gz.finish().unwrap());
    let out = w.run_binary(&[], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    let mut lines: Vec<String> = records
        .iter()
        .map(|r| r.headers["source_line"].clone())
        .collect();
    lines.sort();
    assert_eq!(lines, ["2", &(3 + 50 * (1 << 20)).to_string()]);
}

/// A row whose key alone is 600 KB passes a check on the value but not the broker's
/// limit: it is quarantined, and the file after it still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_too_large_for_kafka_is_quarantined_and_later_files_go_through() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let key = "K".repeat(600 * 1024);
    let big = format!("{key},2024-01-02,1,2,0.5,1.5,1.5,10");
    w.land("a.csv", &csv(&[&big, "NYA,2024-01-02,1,2,0.5,1.5,1.5,10"]));
    w.land("b.csv", &csv(&["NYA,2024-01-03,1,2,0.5,1.5,1.5,10"]));
    w.run_binary_ok(&[]).await;
    let rows = w
        .query(&ingest_quarantine(), "SELECT file, line, reason FROM t")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), ("a.csv", "2"));
    assert!(rows[0][2].contains("Kafka record of"), "{rows:?}");
    assert_eq!(topic_count(&broker.bootstrap(), "Stocks").await, 2);
}

/// The topic's own `max.message.bytes` (here 2,000, created so before ingest) sizes the
/// limit: a row of about 3 KB, which Kafka's defaults would take, is quarantined with
/// the limit in its reason, and the rows beside it are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_above_the_topics_max_message_bytes_is_quarantined() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let endpoint = medallion::kafka::KafkaEndpoint::new(broker.bootstrap(), Default::default());
    let admin: AdminClient<DefaultClientContext> = endpoint.config().create().unwrap();
    let topic =
        NewTopic::new("Stocks", 3, TopicReplication::Fixed(1)).set("max.message.bytes", "2000");
    for result in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    assert_eq!(
        endpoint
            .topic_config("Stocks", "max.message.bytes")
            .await
            .as_deref(),
        Some("2000"),
        "the embedded broker returns the topic's configuration"
    );
    let big = format!("NYA,2024-01-03,{},2,0.5,1.5,1.5,10", "1".repeat(3000));
    w.land(
        "a.csv",
        &csv(&[
            "NYA,2024-01-02,1,2,0.5,1.5,1.5,10",
            &big,
            "NYA,2024-01-04,1,2,0.5,1.5,1.5,10",
        ]),
    );
    w.run_binary_ok(&["--task", "ingest"]).await;
    let rows = w
        .query(&ingest_quarantine(), "SELECT file, line, reason FROM t")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), ("a.csv", "3"));
    // 2,000 less the room kept for the record batch's framing.
    assert!(
        rows[0][2].contains("above the 1488 bytes the producer and the topic accept")
            && rows[0][2].contains("max.message.bytes"),
        "{rows:?}"
    );
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    let mut lines: Vec<&str> = records
        .iter()
        .map(|r| r.headers["source_line"].as_str())
        .collect();
    lines.sort();
    assert_eq!(lines, ["2", "4"]);
}

/// The job's `max_line_bytes` and `max_fields` replace the defaults: a line of 131 bytes
/// and a file of 10 columns go through with the defaults, and the same content landed
/// again after the job sets 100 and 8 is quarantined with the setting in its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_jobs_max_line_bytes_and_max_fields_quarantine_what_the_defaults_let_through() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let long = format!("NYA,2024-01-03,1,2,0.5,1.5,1.5,{}", "9".repeat(100));
    let narrow = csv(&["NYA,2024-01-02,1,2,0.5,1.5,1.5,10", &long]);
    let wide = format!(
        "{},Exchange,Sector\r\nNYA,2024-02-02,1,2,0.5,1.5,1.5,10,NYSE,Fin\r\n",
        medallion::generate::HEADER
    );
    w.land("a.csv", &narrow);
    w.land("a_wide.csv", wide.as_bytes());
    w.run_binary_ok(&["--task", "ingest"]).await;
    assert_eq!(w.ingest_quarantined_lines().await, 0);
    assert_eq!(topic_count(&broker.bootstrap(), "Stocks").await, 3);

    let job = w.root().join("resources/kafka_stream_job.yml");
    let text = std::fs::read_to_string(&job).unwrap();
    assert!(text.contains("            key_column: Index\n"));
    std::fs::write(
        &job,
        text.replace(
            "            key_column: Index\n",
            "            key_column: Index\n            max_line_bytes: 100\n            max_fields: 8\n",
        ),
    )
    .unwrap();
    w.land("b.csv", &narrow);
    w.land("b_wide.csv", wide.as_bytes());
    w.run_binary_ok(&["--task", "ingest"]).await;
    let rows = w
        .query(
            &ingest_quarantine(),
            "SELECT file, line, lines, reason FROM t ORDER BY file",
        )
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][..3], ["b.csv", "3", "1"], "{rows:?}");
    assert!(
        rows[0][3].contains(&format!(
            "is {} bytes long, above max_line_bytes (100)",
            long.len()
        )),
        "{rows:?}"
    );
    assert_eq!(rows[1][..3], ["b_wide.csv", "1", "1"], "{rows:?}");
    assert!(
        rows[1][3].starts_with("the header has 10 fields, above max_fields (8)"),
        "{rows:?}"
    );
    // Only b.csv's short line was sent by the second run.
    assert_eq!(topic_count(&broker.bootstrap(), "Stocks").await, 4);
}

/// An `Index` too long to name a partition folder of close_price_silver is quarantined
/// by stocks, and the SCD2 MERGE goes on with the other rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_that_cannot_be_a_partition_value_is_quarantined() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let long = format!("{},2024-01-02,1,2,0.5,1.5,1.5,10", "I".repeat(300));
    w.land("a.csv", &csv(&[&long, "NYA,2024-01-02,1,2,0.5,1.5,1.5,10"]));
    w.run_binary_ok(&[]).await;
    let close = medallion::catalog::TableName::new("silver", "close_price_silver");
    assert_eq!(w.count(&close).await, 1);
    let q = medallion::catalog::TableName::new("quarantine", "stocks_silver");
    let rows = w.query(&q, "SELECT expectations FROM t").await;
    assert_eq!(rows, [["index_fits_a_folder_name"]]);
    // And a second run has nothing left that fails.
    w.run_binary_ok(&[]).await;
}

/// Landing files of any shape go to Kafka: which columns a file must have, and which one
/// keys the messages, are the job's settings (the stock job's YAML names its own). A
/// weather file that the stock columns would have refused whole goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_of_any_shape_go_through_a_job_that_requires_no_columns() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let job = w.root().join("resources/kafka_stream_job.yml");
    let text = std::fs::read_to_string(&job).unwrap();
    let generic = text
        .lines()
        .filter(|l| !l.contains("required_columns:") && !l.contains("key_column:"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&job, generic).unwrap();
    w.land(
        "weather.csv",
        b"station,date,temp_max,temp_min\nEU001,2024-01-01,7.5,1.0\nEU002,2024-01-01,6.0,-2.5\n",
    );
    let out = w.run_binary_ok(&["--task", "ingest"]).await;
    assert!(out.contains("rows written  2"), "{out}");
    w.run_binary_ok(&["--task", "bronze"]).await;
    let rows = w
        .query(&bronze(), "SELECT key, value FROM t ORDER BY value")
        .await;
    assert_eq!(
        rows,
        vec![
            vec![
                "NULL".to_string(),
                r#"{"station":"EU001","date":"2024-01-01","temp_max":"7.5","temp_min":"1.0"}"#
                    .into()
            ],
            vec![
                "NULL".into(),
                r#"{"station":"EU002","date":"2024-01-01","temp_max":"6.0","temp_min":"-2.5"}"#
                    .into()
            ],
        ]
    );
    assert_eq!(w.ingest_quarantined_lines().await, 0);
}
