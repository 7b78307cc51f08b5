//! The stock pipeline's Silver and Gold tables declared in SQL (`transformations/*.sql`,
//! pipeline `stocks`) give exactly the tables that the hand-written tasks give, on the
//! same landing files, run after run: the same rows, values and schemas, and the same
//! quarantined count.

mod common;

use common::*;
use medallion::catalog::TableName;
use medallion::job::{self, RunOptions};

const TABLES: &[(&str, &str, &str)] = &[
    (
        "silver",
        "stocks_silver",
        "SELECT * FROM t ORDER BY \"Index\", \"Date\"",
    ),
    (
        "silver",
        "current_close_silver",
        "SELECT * FROM t ORDER BY \"Index\"",
    ),
    (
        "silver",
        "stocks_close_silver",
        "SELECT * FROM t ORDER BY \"Index\", \"Date\"",
    ),
    (
        "gold",
        "updated_stocks_gold",
        "SELECT * FROM t ORDER BY \"Index\", \"Date\"",
    ),
];

/// Runs the job's ingest, bronze and close_price tasks, then the SQL pipeline.
async fn run_sql(w: &Workspace) -> medallion::pipeline::UpdateReport {
    let settings = w.settings();
    for task in ["ingest", "bronze", "close_price"] {
        let options = RunOptions {
            task: Some(task.into()),
            ..Default::default()
        };
        let report = job::run(&settings, &options).await.unwrap();
        assert!(report.failure().is_none(), "{task}: {:?}", report.summaries);
    }
    let report = medallion::pipeline::update(
        &settings,
        &settings.pipelines["stocks"],
        &medallion::pipeline::Selection::default(),
    )
    .await
    .unwrap();
    assert!(report.failed().is_none(), "{:?}", report.flows);
    report
}

async fn schema_of(w: &Workspace, schema: &str, table: &str) -> String {
    let path = w.settings().warehouse.path(&TableName::new(schema, table));
    let url = url::Url::from_directory_path(std::fs::canonicalize(path).unwrap()).unwrap();
    let t = deltalake::open_table(url).await.unwrap();
    format!("{:?}", t.snapshot().unwrap().schema())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sql_pipeline_gives_the_tables_of_the_hand_written_tasks() {
    let (broker_a, broker_b) = (TestBroker::start().await, TestBroker::start().await);
    let tasks = Workspace::with_broker(&broker_a);
    let sql = Workspace::with_broker(&broker_b);
    for (name, rows) in [("a.csv", RUN_1), ("b.csv", RUN_2)] {
        tasks.land(name, &csv(rows));
        sql.land(name, &csv(rows));
        let by_tasks = tasks.run().await;
        let by_sql = run_sql(&sql).await;
        for (schema, table, query) in TABLES {
            let name = TableName::new(*schema, *table);
            assert_eq!(
                sql.query(&name, query).await,
                tasks.query(&name, query).await,
                "{schema}.{table} after {name}"
            );
            assert_eq!(
                schema_of(&sql, schema, table).await,
                schema_of(&tasks, schema, table).await,
                "{schema}.{table}'s schema"
            );
        }
        // The same rows are quarantined (with the names of the rules they broke).
        let stocks = by_tasks
            .summaries
            .iter()
            .find(|s| s.task == "stocks")
            .unwrap();
        let flow = by_sql
            .flows
            .iter()
            .find(|f| f.flow == "stocks_silver")
            .unwrap();
        assert_eq!(flow.rows_dropped, stocks.rows_quarantined, "after {name}");
        assert_eq!(flow.duplicates, stocks.rows_dropped, "after {name}");
    }
    let reasons = sql
        .query(
            &TableName::new("quarantine", "stocks_silver"),
            "SELECT expectations FROM t ORDER BY 1",
        )
        .await;
    assert_eq!(
        reasons,
        vec![
            vec!["close_is_a_number".to_string()],
            vec!["close_is_a_number".to_string()]
        ]
    );
}

/// The sample data of `cargo run -- run` (6,000 rows with null days) gives the same tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sample_data_gives_the_same_tables() {
    let (broker_a, broker_b) = (TestBroker::start().await, TestBroker::start().await);
    let tasks = Workspace::with_broker(&broker_a);
    let sql = Workspace::with_broker(&broker_b);
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/landing");
    for entry in std::fs::read_dir(sample).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        tasks.land(&name, &bytes);
        sql.land(&name, &bytes);
    }
    tasks.run().await;
    run_sql(&sql).await;
    for (schema, table, query) in TABLES {
        let name = TableName::new(*schema, *table);
        let rows = tasks.query(&name, query).await;
        assert!(!rows.is_empty());
        assert_eq!(sql.query(&name, query).await, rows, "{schema}.{table}");
    }
}
