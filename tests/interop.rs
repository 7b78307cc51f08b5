//! Interoperability: the tables medallion writes open in Python `deltalake`, with the
//! same rows, schema, partitioning and progress (`txn`) versions.

mod common;

use std::path::Path;

use common::*;

fn read_with_python(python: &Path, table: &Path, apps: &[String]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/read_delta.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(table)
        .args(apps)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_deltalake_reads_bronze_and_quarantine() {
    let Some(python) = venv_tool("python") else {
        return;
    };
    let broker = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker);
    w.set_var("batch_rows", "400");
    w.generate(small(1000, 1, 21));
    w.land("bad.csv", b"Index,Date\nNYA,2001-01-01\n");
    w.run().await;

    let settings = w.settings();
    let apps: Vec<String> = (0..3)
        .map(|p| format!("bronze.bronze/Stocks/{p}"))
        .collect();
    let seen = read_with_python(&python, &settings.warehouse.path(&bronze()), &apps);
    assert_eq!(seen["rows"], 1000);
    assert_eq!(seen["distinct_offsets"], 1000);
    assert_eq!(seen["partition_columns"], serde_json::json!(["year_month"]));
    let columns: Vec<(String, String)> = seen["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_str().unwrap().into(), c[1].as_str().unwrap().into()))
        .collect();
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "key",
            "value",
            "topic",
            "partition",
            "offset",
            "timestamp",
            "timestampType",
            "year_month"
        ]
    );
    let ty = |name: &str| columns.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert!(ty("value").contains("string"), "{columns:?}");
    assert_eq!(ty("partition"), "int32");
    assert_eq!(ty("offset"), "int64");
    assert!(ty("timestamp").starts_with("timestamp[us"), "{columns:?}");

    // The progress Python sees is the last offset of each partition.
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    for (p, app) in apps.iter().enumerate() {
        let last = records
            .iter()
            .filter(|r| r.partition == p as i32)
            .map(|r| r.offset)
            .max();
        assert_eq!(seen["txn"][app].as_i64(), last, "{app}");
    }

    let q = read_with_python(&python, &settings.warehouse.path(&ingest_quarantine()), &[]);
    assert_eq!(q["rows"], 1);
    assert_eq!(w.count(&ingest_quarantine()).await, 1);

    // Every Silver, Gold and quarantine table opens too, with the rows DataFusion sees and
    // the stream progress medallion committed.
    let refined = [
        ("silver", "stocks_silver", Some("bronze.bronze")),
        ("quarantine", "stocks_silver", None),
        ("silver", "close_price_silver", Some("bronze.bronze")),
        (
            "silver",
            "current_close_silver",
            Some("silver.close_price_silver"),
        ),
        (
            "silver",
            "stocks_close_silver",
            Some("silver.stocks_silver"),
        ),
        (
            "gold",
            "updated_stocks_gold",
            Some("silver.stocks_close_silver"),
        ),
    ];
    for (schema, table, source) in refined {
        let name = medallion::catalog::TableName::new(schema, table);
        // A pipeline flow records its progress as `<flow>/<source>`: each flow here is
        // named after its table, but the AUTO CDC flow close_price.
        let apps: Vec<String> = source
            .iter()
            .map(|s| match table {
                "close_price_silver" => format!("close_price/{s}"),
                _ => format!("{table}/{s}"),
            })
            .collect();
        let seen = read_with_python(&python, &settings.warehouse.path(&name), &apps);
        assert_eq!(seen["rows"].as_u64(), Some(w.count(&name).await), "{name}");
        assert!(seen["rows"].as_u64().unwrap() > 0, "{name} is filled");
        let partitioned_by = if table == "close_price_silver" && schema == "silver" {
            serde_json::json!(["Index"])
        } else {
            serde_json::json!([])
        };
        assert_eq!(seen["partition_columns"], partitioned_by, "{name}");
        for app in &apps {
            assert!(seen["txn"][app].as_i64().is_some(), "{name}: txn {app}");
        }
    }
}
