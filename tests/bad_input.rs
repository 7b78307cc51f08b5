//! The catalogue of bad input: each bad row lands in quarantine with a precise reason, the
//! good row next to it is still processed, and the counts reconcile:
//! data lines = Kafka records + ingest quarantine, and
//! bronze rows = silver rows + silver quarantine + dropped duplicates.

mod common;

use std::time::Duration;

use common::*;
use medallion::catalog::TableName;
use medallion::job::RunReport;

const GOOD: &str = "NYA,2024-02-01,1,2,0.5,1.5,1.5,10";

fn task<'a>(report: &'a RunReport, name: &str) -> &'a medallion::progress::TaskSummary {
    report.summaries.iter().find(|s| s.task == name).unwrap()
}

/// Checks both reconciliations for a run over `data_lines` landing rows.
async fn reconcile(w: &Workspace, broker: &TestBroker, report: &RunReport, data_lines: u64) {
    let kafka = topic_count(&broker.bootstrap(), "Stocks").await;
    let ingest_q = w.ingest_quarantined_lines().await;
    assert_eq!(
        kafka + ingest_q,
        data_lines,
        "data lines = Kafka + ingest quarantine"
    );
    let stocks = task(report, "stocks");
    assert_eq!(
        stocks.rows_read,
        stocks.rows_written + stocks.rows_quarantined + stocks.rows_dropped,
        "bronze = silver + silver quarantine + duplicates"
    );
    assert_eq!(w.count(&bronze()).await, kafka);
}

async fn silver_reasons(w: &Workspace) -> Vec<String> {
    w.query(
        &TableName::new("quarantine", "stocks_silver"),
        "SELECT reason FROM t ORDER BY reason",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect()
}

async fn ingest_reasons(w: &Workspace) -> Vec<Vec<String>> {
    w.query(
        &ingest_quarantine(),
        "SELECT file, line, reason FROM t ORDER BY file, line",
    )
    .await
}

async fn silver_count(w: &Workspace) -> u64 {
    w.count(&TableName::new("silver", "stocks_silver")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn negative_absurd_and_malformed_values_are_quarantined_by_silver() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land(
        "a.csv",
        &csv(&[
            GOOD,
            "NYA,2024-02-02,1,2,0.5,1.5,1.5,-5",
            "NYA,2024-02-05,1,2,0.5,1.5,1.5,99999999999999",
            "NYA,19-Sep-03,1,2,0.5,1.5,1.5,10",
            "NYA,2024-02-06,1,2,0.5,abc,1.5,10",
            "NYA,2024-02-07,NaN,2,0.5,1.5,1.5,10",
            "NYA,2024-02-08,1,2,0.5,inf,1.5,10",
            "NYA,2024-02-09,1,2,0.5,1.5,1.5,12.0",
        ]),
    );
    let report = w.run().await;
    reconcile(&w, &broker, &report, 8).await;
    assert_eq!(
        silver_reasons(&w).await,
        [
            "Close `abc` is not a number",
            "Close `inf` is not a finite number",
            "Date `19-Sep-03` is not a yyyy-MM-dd date",
            "Open `NaN` is not a finite number",
            "Volume `-5` is negative",
            "Volume `99999999999999` is absurd (above 10000000000000)",
        ]
    );
    assert_eq!(
        silver_count(&w).await,
        2,
        "the good rows, `12.0` volume included"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_gzip_file_is_quarantined_from_where_it_breaks() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    // A real gzip stream, cut short and with garbage after it.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &csv(&[GOOD; 200])).unwrap();
    let bytes = gz.finish().unwrap();
    let mut broken = bytes[..bytes.len() / 2].to_vec();
    broken.extend_from_slice(b"not gzip at all");
    w.land("a_broken.csv.gz", &broken);
    w.land("b_good.csv", &csv(&["HSI,2024-02-01,1,2,0.5,1.5,1.5,10"]));
    let report = w.run().await;
    let rows = ingest_reasons(&w).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], "a_broken.csv.gz");
    assert!(
        rows[0][2].starts_with("file unreadable from this line on"),
        "{rows:?}"
    );
    let sent = task(&report, "ingest").rows_written;
    assert!(
        sent < 200,
        "the rows before the break are sent, not more: {sent}"
    );
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert!(records
        .iter()
        .any(|r| r.headers["source_file"] == "b_good.csv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ten_megabyte_field_is_quarantined_not_sent() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let huge = "x".repeat(10 * 1024 * 1024);
    let big_row = format!("NYA,2024-02-02,1,2,0.5,1.5,1.5,\"{huge}\"");
    w.land(
        "a.csv",
        &csv(&[GOOD, &big_row, "NYA,2024-02-05,1,2,0.5,1.5,1.5,10"]),
    );
    let report = w.run().await;
    reconcile(&w, &broker, &report, 3).await;
    let rows = ingest_reasons(&w).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][1], "3");
    assert!(
        rows[0][2].contains(&format!(
            "is {} bytes long, above max_line_bytes (1048576)",
            big_row.len()
        )),
        "{rows:?}"
    );
    assert_eq!(topic_count(&broker.bootstrap(), "Stocks").await, 2);
    let raw = w
        .query(&ingest_quarantine(), "SELECT length(raw), raw_bytes FROM t")
        .await;
    assert_eq!(raw[0][0], (16 * 1024).to_string(), "the raw text is cut");
    assert_eq!(raw[0][1], big_row.len().to_string(), "its length is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_header_names_quarantine_the_rows_and_extra_columns_are_kept() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land(
        "a_dup.csv",
        b"Index,Date,Open,High,Low,Close,Close,Adj Close,Volume\nNYA,2024-02-01,1,2,0.5,1.5,1.6,1.5,10\n",
    );
    w.land(
        "b_extra.csv",
        b"Index,Date,Open,High,Low,Close,Adj Close,Volume,Exchange\nNYA,2024-02-02,1,2,0.5,1.5,1.5,10,NYSE\n",
    );
    let report = w.run().await;
    reconcile(&w, &broker, &report, 2).await;
    let rows = ingest_reasons(&w).await;
    assert_eq!(
        rows,
        vec![vec![
            "a_dup.csv".to_string(),
            "1".into(),
            "file header repeats column(s) Close; the whole file is quarantined (1 data line(s))"
                .into()
        ]]
    );
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert!(
        records[0].value.contains(r#""Exchange":"NYSE""#),
        "{}",
        records[0].value
    );
    assert_eq!(silver_count(&w).await, 1, "silver ignores the extra column");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_named_with_spaces_and_unicode_is_ingested_under_its_name() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let name = "données du marché 2024 – Ω.csv";
    w.land(name, &csv(&[GOOD]));
    let report = w.run().await;
    reconcile(&w, &broker, &report, 1).await;
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_eq!(records[0].headers["source_file"], name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_still_being_written_is_read_once_it_is_still() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    let path = w.land("growing.csv", &csv(&[GOOD]));
    // A writer appends a row every 200 ms for 2 s while the run starts.
    let writer = std::thread::spawn(move || {
        for day in 2..12 {
            std::thread::sleep(Duration::from_millis(200));
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::io::Write::write_all(
                &mut f,
                format!("NYA,2024-03-{day:02},1,2,0.5,1.5,1.5,10\r\n").as_bytes(),
            )
            .unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let report = w.run().await;
    writer.join().unwrap();
    assert_eq!(
        task(&report, "ingest").rows_written,
        11,
        "every row, written while it waited"
    );
    reconcile(&w, &broker, &report, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_missing_a_required_column_is_quarantined_once_and_summarized() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    assert!(w
        .medallion_ok(&["quarantine"])
        .contains("nothing is quarantined in target dev"));
    w.land(
        "a.csv",
        &csv(&[
            GOOD,
            "NYA,2024-02-02,1,2,0.5,1.5,1.5,-5",
            "NYA,2024-02-03,1",
        ]),
    );
    w.land(
        "b_no_close.csv",
        b"Index,Date,Open,High,Low,Adj Close,Volume\r\nNYA,2024-02-05,1,2,0.5,1.5,10\r\nNYA,2024-02-06,1,2,0.5,1.5,10\r\nNYA,2024-02-07,1,2,0.5,1.5,10\r\n",
    );
    let report = w.run().await;
    reconcile(&w, &broker, &report, 6).await;
    assert_eq!(
        w.query(
            &ingest_quarantine(),
            "SELECT file, line, raw, lines, reason FROM t ORDER BY file"
        )
        .await,
        [
            ["a.csv", "4", "NYA,2024-02-03,1", "1", "expected 8 fields, found 3"],
            [
                "b_no_close.csv",
                "1",
                "Index,Date,Open,High,Low,Adj Close,Volume",
                "3",
                "file header lacks required column(s) Close; the whole file is quarantined (3 data line(s))"
            ]
        ]
    );

    // `medallion quarantine`: counts by reason (with the lines a row stands for), samples.
    let all = w.medallion_ok(&["quarantine", "--samples", "1"]);
    let row = |cells: &[&str]| format!("| {} |", cells.join(" | "));
    for needle in [
        "── dev.quarantine.ingest",
        "── dev.quarantine.stocks_silver",
        "samples (up to 1 per reason):",
        "| Volume `-5` is negative | 1    |",
        "| NYA,2024-02-03,1 ",
    ] {
        assert!(all.contains(needle), "{needle:?} not in:\n{all}");
    }
    assert!(
        all.lines().any(
            |l| l.starts_with("| file header lacks required column(s) Close")
                && l.replace(' ', "").ends_with("|1|3|")
        ),
        "one row standing for 3 lines:\n{all}"
    );
    let one = w.medallion_ok(&[
        "quarantine",
        "--table",
        "quarantine.stocks_silver",
        "--samples",
        "0",
    ]);
    assert!(!one.contains("quarantine.ingest"), "{one}");
    assert!(!one.contains("samples"), "{one}");
    assert!(
        one.contains(&row(&["Volume `-5` is negative", "1   "])),
        "{one}"
    );
}
