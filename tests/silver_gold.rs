//! Silver and Gold against the embedded broker and real Delta tables: a hand-made fixture
//! whose expected tables are written out here, order independence, the stream-static
//! join, the DAG's failure rules, and change commits in a streaming source.

mod common;

use common::*;
use medallion::catalog::TableName;
use medallion::progress::TaskState;

fn t(schema: &str, table: &str) -> TableName {
    TableName::new(schema, table)
}

/// Rows as text, for comparing with the expected tables below.
fn rows(expected: &[&str]) -> Vec<Vec<String>> {
    expected
        .iter()
        .map(|r| r.split('|').map(str::to_string).collect())
        .collect()
}

const SCD2: &str = "SELECT \"Index\", \"Date\", \"Close\", \"__START_AT\", \
     \"__END_AT\", current, end_date IS NOT NULL \
     FROM t ORDER BY \"Index\", \"Date\", effective_date";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fixture_gives_the_expected_tables_over_two_runs() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land("a.csv", &csv(RUN_1));
    let first = w.run().await;
    let stocks = first.summary("stocks_silver").unwrap();
    assert_eq!(
        (
            stocks.rows_read,
            stocks.rows_written,
            stocks.rows_quarantined
        ),
        (7, 4, 2),
        "7 bronze rows = 4 silver + 2 quarantined + 1 duplicate"
    );

    assert_eq!(
        w.query(&t("silver", "stocks_silver"), "SELECT \"Index\", \"Date\", \"Open\", \"High\", \"Low\", \"Close\", \"Adj_Close\", \"Volume\" FROM t ORDER BY 1, 2").await,
        rows(&[
            "HSI|2024-01-02|99.0|101.0|98.0|100.0|100.0|7",
            "NYA|2024-01-02|9.5|10.5|9.0|10.0|10.0|100",
            "NYA|2024-01-03|10.0|11.5|10.0|11.0|11.0|100",
            "NYA|2024-01-05|11.0|12.5|11.0|12.0|12.0|100",
        ])
    );
    let q = w
        .query(
            &t("quarantine", "stocks_silver"),
            "SELECT expectations, raw LIKE '%2024-01-0_%' FROM t ORDER BY raw",
        )
        .await;
    assert_eq!(
        q,
        rows(&["close_is_a_number|true", "close_is_a_number|true"])
    );
    assert_eq!(
        w.query(&t("silver", "close_price_silver"), SCD2).await,
        rows(&[
            "HSI|2024-01-02|100.0|2024-01-02|NULL|true|false",
            "NYA|2024-01-02|10.0|2024-01-02|2024-01-03|false|true",
            "NYA|2024-01-03|11.0|2024-01-03|2024-01-05|false|true",
            "NYA|2024-01-05|12.0|2024-01-05|NULL|true|false",
        ])
    );
    assert_eq!(
        w.query(&t("gold", "updated_stocks_gold"), "SELECT \"Index\", \"Date\", \"Close\", \"Latest_Close\", \"Close_Diff\" FROM t ORDER BY 1, 2").await,
        rows(&[
            "HSI|2024-01-02|100.0|100.0|0.0",
            "NYA|2024-01-02|10.0|12.0|2.0",
            "NYA|2024-01-03|11.0|12.0|1.0",
            "NYA|2024-01-05|12.0|12.0|0.0",
        ])
    );

    w.land("b.csv", &csv(RUN_2));
    w.run().await;
    assert_eq!(
        w.query(
            &t("silver", "stocks_silver"),
            "SELECT \"Index\", \"Date\", \"Close\" FROM t ORDER BY 1, 2"
        )
        .await,
        rows(&[
            "HSI|2024-01-02|100.0",
            "HSI|2024-01-08|105.0",
            "NYA|2024-01-02|10.0",
            "NYA|2024-01-03|11.0",
            "NYA|2024-01-04|11.5",
            "NYA|2024-01-05|12.0",
        ]),
        "first record per (Index, Date) wins; the correction is not appended"
    );
    assert_eq!(
        w.query(&t("silver", "close_price_silver"), SCD2).await,
        rows(&[
            "HSI|2024-01-02|100.0|2024-01-02|2024-01-08|false|true",
            "HSI|2024-01-08|105.0|2024-01-08|NULL|true|false",
            "NYA|2024-01-02|10.0|2024-01-02|2024-01-03|false|true",
            "NYA|2024-01-03|11.0|2024-01-03|2024-01-03|false|true",
            "NYA|2024-01-03|11.2|2024-01-03|2024-01-04|false|true",
            "NYA|2024-01-04|11.5|2024-01-04|2024-01-05|false|true",
            "NYA|2024-01-05|12.0|2024-01-05|NULL|true|false",
        ]),
        "the correction follows the first 2024-01-03 version; the late record is placed by date"
    );
    assert_eq!(
        w.query(
            &t("silver", "current_close_silver"),
            "SELECT \"Index\", \"Date\", \"Close\", \"Adj_Close\" FROM t ORDER BY 1"
        )
        .await,
        rows(&["HSI|2024-01-08|105.0|105.0", "NYA|2024-01-05|12.0|12.0"])
    );
    // Stream-static join: rows written in the first run keep the latest close of then.
    assert_eq!(
        w.query(&t("silver", "stocks_close_silver"), "SELECT \"Index\", \"Date\", \"Close\", \"Adj_Close\", \"Latest_Close\", \"Latest_Adj_Close\" FROM t ORDER BY 1, 2").await,
        rows(&[
            "HSI|2024-01-02|100.0|100.0|100.0|100.0",
            "HSI|2024-01-08|105.0|105.0|105.0|105.0",
            "NYA|2024-01-02|10.0|10.0|12.0|12.0",
            "NYA|2024-01-03|11.0|11.0|12.0|12.0",
            "NYA|2024-01-04|11.5|11.5|12.0|12.0",
            "NYA|2024-01-05|12.0|12.0|12.0|12.0",
        ])
    );
    assert_eq!(
        w.query(
            &t("gold", "updated_stocks_gold"),
            "SELECT \"Index\", \"Date\", \"Close_Diff\" FROM t ORDER BY 1, 2"
        )
        .await,
        rows(&[
            "HSI|2024-01-02|0.0",
            "HSI|2024-01-08|0.0",
            "NYA|2024-01-02|2.0",
            "NYA|2024-01-03|1.0",
            "NYA|2024-01-04|0.5",
            "NYA|2024-01-05|0.0",
        ])
    );

    // A third run with nothing new writes nothing anywhere.
    let third = w.run().await;
    assert!(
        third
            .summaries
            .iter()
            .all(|s| s.rows_written == 0 && s.versions.is_empty()),
        "{:?}",
        third.summaries
    );

    // The SCD2 history is partitioned by index and keeps its files small, so that a
    // MERGE rewrites little; the other tables keep delta-rs's default.
    let created = |schema: &str, table: &str| {
        let log = w
            .settings()
            .warehouse
            .path(&t(schema, table))
            .join("_delta_log/00000000000000000000.json");
        std::fs::read_to_string(log).unwrap()
    };
    assert!(created("silver", "close_price_silver").contains(r#""delta.targetFileSize":"2097152""#));
    assert!(created("silver", "close_price_silver").contains(r#""partitionColumns":["Index"]"#));
    assert!(created("silver", "stocks_silver").contains(r#""partitionColumns":[]"#));
    assert!(!created("bronze", "bronze").contains("delta.targetFileSize"));
    // Every table is checkpointed every 10 commits, as Spark's Delta does.
    for (schema, table) in [
        ("bronze", "bronze"),
        ("silver", "close_price_silver"),
        ("gold", "updated_stocks_gold"),
    ] {
        assert!(
            created(schema, table).contains(r#""delta.checkpointInterval":"10""#),
            "{table}"
        );
    }
}

/// `close_price_silver` without processing times, and `stocks_silver`.
async fn silver_tables(w: &Workspace) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let scd2 = w.query(&t("silver", "close_price_silver"), SCD2).await;
    let stocks = w
        .query(
            &t("silver", "stocks_silver"),
            "SELECT * FROM t ORDER BY \"Index\", \"Date\"",
        )
        .await;
    (scd2, stocks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_and_batching_do_not_change_the_silver_tables() {
    // Every record of the fixture, plus generated history; the correction of 2024-01-03
    // comes after its original in every arrangement (it is a correction because of that).
    let mut records: Vec<&str> = RUN_1
        .iter()
        .chain(&RUN_2[..1])
        .chain(&RUN_2[2..])
        .copied()
        .collect();
    let correction = RUN_2[1];

    let broker = TestBroker::start().await;
    let at_once = Workspace::with_broker(&broker);
    let mut all = records.clone();
    all.push(correction);
    at_once.land("all.csv", &csv(&all));
    at_once.run().await;
    let expected = silver_tables(&at_once).await;
    assert_eq!(expected.0.len(), 7);

    // Reversed, over three runs, the newest records first.
    let broker2 = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker2);
    w.set_var("kafka_topic", "Other");
    records.reverse();
    let (first, rest) = records.split_at(4);
    w.land("1.csv", &csv(first));
    w.run().await;
    w.land("2.csv", &csv(rest));
    w.run().await;
    w.land("3.csv", &csv(&[correction]));
    w.run().await;
    assert_eq!(silver_tables(&w).await, expected);

    // In date order, over three runs, then the correction: each of the first runs brings
    // only days after every stored one (the SCD2 task then reads just the current
    // versions), and the correction goes back to a stored day.
    let broker3 = TestBroker::start().await;
    let w = Workspace::with_broker(&broker3);
    let date = |r: &&str| r.split(',').nth(1).unwrap().to_string();
    let run = |from: &str, to: &str| -> Vec<&str> {
        let in_range = |r: &&&str| (from..=to).contains(&date(r).as_str());
        records.iter().filter(in_range).copied().collect()
    };
    for (n, (from, to)) in [
        ("2024-01-01", "2024-01-02"),
        ("2024-01-03", "2024-01-04"),
        ("2024-01-05", "2024-01-31"),
    ]
    .into_iter()
    .enumerate()
    {
        w.land(&format!("{n}.csv"), &csv(&run(from, to)));
        w.run().await;
    }
    // The same as one run of the same records: checked before the correction, whose
    // run would otherwise re-chain (and so hide) a wrong history.
    let broker4 = TestBroker::start().await;
    let uncorrected = Workspace::with_broker(&broker4);
    uncorrected.land("all.csv", &csv(&records));
    uncorrected.run().await;
    assert_eq!(silver_tables(&w).await, silver_tables(&uncorrected).await);
    w.land("9.csv", &csv(&[correction]));
    w.run().await;
    assert_eq!(silver_tables(&w).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_task_skips_its_dependents_and_the_others_finish() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land("a.csv", &csv(RUN_1));
    // Something else owns the stocks_silver folder: a Delta table of another shape.
    let other = w
        .settings()
        .warehouse
        .url(&t("silver", "stocks_silver"))
        .unwrap();
    deltalake::DeltaTable::try_from_url(other)
        .await
        .unwrap()
        .create()
        .with_column("x", deltalake::kernel::DataType::STRING, true, None)
        .await
        .unwrap();

    let report = w.try_run().await;
    let state = |name: &str| report.summary(name).unwrap().state;
    assert_eq!(state("stocks_silver"), TaskState::Failed);
    for done in ["ingest", "bronze", "close_price", "current_close_silver"] {
        assert_eq!(state(done), TaskState::Succeeded, "{done}");
    }
    for skipped in ["stocks_close_silver", "updated_stocks_gold"] {
        assert_eq!(state(skipped), TaskState::Skipped, "{skipped}");
    }
    let failure = report.failure().unwrap();
    assert_eq!(failure.task, "silver_gold");
    assert!(
        failure.notes[0].contains("flow `stocks_silver` failed: the schema of dev.silver.stocks_silver would change: new column `Index` is NOT NULL")
            && failure.notes[0].contains("--full-refresh dev.silver.stocks_silver"),
        "{:?}",
        failure.notes
    );

    let out = w.run_binary(&[], &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("task `silver_gold` failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_that_removes_source_rows_fails_the_stream_clearly() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land("a.csv", &csv(RUN_1));
    w.run().await;
    let bronze_url = w.settings().warehouse.url(&bronze()).unwrap();
    let table = deltalake::open_table(bronze_url).await.unwrap();
    table
        .delete()
        .with_predicate("\"offset\" = 0")
        .await
        .unwrap();

    let report = w.try_run().await;
    let failure = report
        .failure()
        .expect("the streams refuse the change commit");
    let note = failure.notes.join(" ");
    assert!(
        note.contains("removes or rewrites data files") && note.contains("bronze.bronze"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_task_runs_one_task_without_kafka() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land("a.csv", &csv(RUN_1));
    w.run_binary_ok(&["--task", "ingest"]).await;
    w.run_binary_ok(&["--task", "bronze"]).await;
    // Silver tasks need no broker: point Kafka at nothing and they still run.
    let mut offline = Workspace {
        dir: w.dir,
        vars: Vec::new(),
    };
    offline.set_var("kafka_bootstrap_servers", "127.0.0.1:1");
    let out = offline.run_binary_ok(&["--task", "silver_gold"]).await;
    assert!(
        out.contains("── stocks_silver succeeded")
            && out.contains("── close_price succeeded")
            && !out.contains("· kafka"),
        "{out}"
    );
    assert_eq!(offline.count(&t("silver", "stocks_silver")).await, 4);
    assert_eq!(offline.count(&t("silver", "close_price_silver")).await, 4);
    // The AUTO CDC flow streams bronze through the view stocks_parsed, not the view.
    assert!(!out.contains("stocks_parsed does not exist"), "{out}");
}
