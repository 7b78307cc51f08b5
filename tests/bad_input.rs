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
    report.summary(name).unwrap()
}

/// Where a fixture's data lines must go, exactly.
struct Lines {
    /// Data lines of the landing files (after their headers).
    data: u64,
    /// Lines sent to Kafka.
    sent: u64,
    /// Lines accounted for by `quarantine.ingest` (`sum(lines)`).
    quarantined: u64,
}

/// Checks both reconciliations, with the exact numbers of the fixture: every data line is
/// in Kafka once or in quarantine.ingest, bronze holds every record, and
/// bronze rows = silver rows + silver quarantine + dropped duplicates.
async fn reconcile(w: &Workspace, broker: &TestBroker, report: &RunReport, expected: Lines) {
    assert_eq!(
        expected.sent + expected.quarantined,
        expected.data,
        "the fixture's own figures add up"
    );
    assert_eq!(
        landed_data_lines(w),
        expected.data,
        "data lines of the landing files"
    );
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    assert_eq!(records.len() as u64, expected.sent, "lines in Kafka");
    assert_eq!(
        source_lines(&records).len(),
        records.len(),
        "no line was sent twice"
    );
    assert_eq!(
        w.ingest_quarantined_lines().await,
        expected.quarantined,
        "lines in quarantine.ingest"
    );
    let ingest = task(report, "ingest");
    assert_eq!(
        (ingest.rows_written, ingest.rows_quarantined),
        (expected.sent, expected.quarantined),
        "the ingest summary: sent, quarantined"
    );
    assert_eq!(w.count(&bronze()).await, expected.sent, "bronze rows");
    let stocks = task(report, "stocks_silver");
    assert_eq!(stocks.rows_read, expected.sent, "stocks read all of bronze");
    assert_eq!(
        stocks.rows_read,
        stocks.rows_written + stocks.rows_quarantined + stocks.rows_dropped,
        "bronze = silver + silver quarantine + duplicates"
    );
    assert_eq!(silver_count(w).await, stocks.rows_written, "silver rows");
    let silver_quarantined = TableName::new("quarantine", "stocks_silver");
    let in_quarantine = if w.settings().warehouse.path(&silver_quarantined).exists() {
        w.count(&silver_quarantined).await
    } else {
        0
    };
    assert_eq!(
        in_quarantine, stocks.rows_quarantined,
        "quarantine.stocks_silver rows"
    );
}

/// Data lines of the landing files, counted here: every non-empty line after a file's
/// header (the fixtures' quoted fields hold no line break). A `.gz` file is read as far as
/// it decompresses; an unreadable rest counts as one more line, as quarantine.ingest
/// counts it (one row, `lines` = 1).
fn landed_data_lines(w: &Workspace) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(w.landing()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mut broken = false;
        if path.extension().is_some_and(|e| e == "gz") {
            // A byte at a time: everything that decompresses before a break.
            let mut decoder = flate2::read::MultiGzDecoder::new(bytes.as_slice());
            let mut text = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                match std::io::Read::read(&mut decoder, &mut byte) {
                    Ok(0) => break,
                    Ok(_) => text.push(byte[0]),
                    Err(_) => {
                        broken = true;
                        // The cut line belongs to the unreadable rest.
                        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                        text.truncate(whole);
                        break;
                    }
                }
            }
            bytes = text;
        }
        let lines = bytes
            .split(|&b| b == b'\n')
            .skip(1)
            .filter(|l| !l.is_empty() && *l != b"\r")
            .count() as u64;
        total += lines + u64::from(broken);
    }
    total
}

/// The expectations each quarantined record failed, with a piece of the record's text.
async fn silver_reasons(w: &Workspace) -> Vec<String> {
    w.query(
        &TableName::new("quarantine", "stocks_silver"),
        "SELECT expectations, raw FROM t ORDER BY expectations, raw",
    )
    .await
    .into_iter()
    .map(|r| {
        let date = r[1].split("Date").nth(1).unwrap_or_default();
        let date = date.split(',').next().unwrap_or_default();
        format!("{} ({})", r[0], date.replace(['"', ':', '\\'], ""))
    })
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
    reconcile(
        &w,
        &broker,
        &report,
        Lines {
            data: 8,
            sent: 8,
            quarantined: 0,
        },
    )
    .await;
    assert_eq!(
        silver_reasons(&w).await,
        [
            "close_is_a_number (2024-02-06)",
            "close_is_a_number (2024-02-08)",
            "date_is_yyyy_mm_dd (19-Sep-03)",
            "prices_are_numbers (2024-02-07)",
            "volume_is_a_plausible_whole_number (2024-02-02)",
            "volume_is_a_plausible_whole_number (2024-02-05)",
        ]
    );
    assert_eq!(
        silver_count(&w).await,
        2,
        "the good rows, `12.0` volume included"
    );
}

/// Lines of `a_broken.csv.gz` (below) sent before it breaks: its gzip stream is
/// deterministic (flate2, fast, mtime 0) and cut in half; the deflate decoder turns the
/// first bytes after the cut into one more (garbage) line before it fails.
const GOOD_LINES_BEFORE_THE_BREAK: u64 = 95;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_gzip_file_is_quarantined_from_where_it_breaks() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    // A real gzip stream of 200 distinct lines, cut short and with garbage after it.
    let lines: Vec<String> = (0..200)
        .map(|i| format!("NYA,2024-02-01,1,2,0.5,1.5,1.5,{}", 1000 + i))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &csv(&lines)).unwrap();
    let bytes = gz.finish().unwrap();
    let mut broken = bytes[..bytes.len() / 2].to_vec();
    broken.extend_from_slice(b"not gzip at all");
    w.land("a_broken.csv.gz", &broken);
    w.land("b_good.csv", &csv(&["HSI,2024-02-01,1,2,0.5,1.5,1.5,10"]));
    let report = w.run().await;

    // The good lines before the break are sent; the garbage line is quarantined as such,
    // and the unreadable rest is one quarantined line; b_good.csv is sent.
    let good = GOOD_LINES_BEFORE_THE_BREAK;
    reconcile(
        &w,
        &broker,
        &report,
        Lines {
            data: good + 1 + 1 + 1,
            sent: good + 1,
            quarantined: 2,
        },
    )
    .await;
    let rows = ingest_reasons(&w).await;
    let garbage_line = (good + 2).to_string();
    let first_unread = (good + 3).to_string();
    assert_eq!(
        rows,
        [
            [
                "a_broken.csv.gz",
                garbage_line.as_str(),
                "expected 8 fields, found 9"
            ],
            [
                "a_broken.csv.gz",
                first_unread.as_str(),
                "file unreadable from this line on: corrupt deflate stream"
            ]
        ]
    );
    // Exactly the lines before the break, each under its own line number.
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    let mut from_broken: Vec<(u64, String)> = records
        .iter()
        .filter(|r| r.headers["source_file"] == "a_broken.csv.gz")
        .map(|r| (r.headers["source_line"].parse().unwrap(), r.value.clone()))
        .collect();
    from_broken.sort();
    assert_eq!(from_broken.len() as u64, good);
    for (i, (line, value)) in from_broken.iter().enumerate() {
        assert_eq!(*line, i as u64 + 2);
        assert!(
            value.contains(&format!("\"{}\"", 1000 + i)),
            "line {line}: {value}"
        );
    }
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
    reconcile(
        &w,
        &broker,
        &report,
        Lines {
            data: 3,
            sent: 2,
            quarantined: 1,
        },
    )
    .await;
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
    reconcile(
        &w,
        &broker,
        &report,
        Lines {
            data: 2,
            sent: 1,
            quarantined: 1,
        },
    )
    .await;
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
    reconcile(
        &w,
        &broker,
        &report,
        Lines {
            data: 1,
            sent: 1,
            quarantined: 0,
        },
    )
    .await;
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
    reconcile(
        &w,
        &broker,
        &report,
        Lines {
            data: 11,
            sent: 11,
            quarantined: 0,
        },
    )
    .await;
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
    reconcile(
        &w,
        &broker,
        &report,
        Lines {
            data: 6,
            sent: 2,
            quarantined: 4,
        },
    )
    .await;
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
        "| failed expectation(s): volume_is_a_plausible_whole_number | 1    |",
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
        one.contains(&row(&[
            "failed expectation(s): volume_is_a_plausible_whole_number",
            "1   "
        ])),
        "{one}"
    );
}
