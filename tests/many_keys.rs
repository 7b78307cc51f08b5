//! Batches of many distinct indices. The duplicate check of stocks and the reads of the
//! AUTO CDC flow close_price select them with short `IN` lists or a range, not one `OR`
//! clause per index (a chain that long overflowed the stack), and close_price rewrites
//! the files it changes without a MERGE (delta-rs builds one `OR` per partition value of
//! a MERGE's source).

mod common;

use common::*;
use medallion::catalog::TableName;

/// `count` rows of distinct indices, one per index, in the given month.
fn rows(count: usize, month: u32) -> Vec<u8> {
    let rows: Vec<String> = (0..count)
        .map(|i| {
            format!(
                "I{i},2024-{month:02}-{:02},1,2,0.5,1.{month},1.{month},{i}",
                2 + i % 20
            )
        })
        .collect();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    csv(&refs)
}

async fn assert_versions(w: &Workspace, indices: usize, per_index: usize) {
    let stocks = TableName::new("silver", "stocks_silver");
    assert_eq!(w.count(&stocks).await, (indices * per_index) as u64);
    let close = TableName::new("silver", "close_price_silver");
    let versions = w
        .query(
            &close,
            "SELECT count(*), count(DISTINCT \"Index\"), sum(CAST(current AS INT)), \
             sum(CAST(\"__END_AT\" IS NULL AS INT)) FROM t",
        )
        .await;
    let (all, indices) = ((indices * per_index).to_string(), indices.to_string());
    assert_eq!(
        versions[0],
        [all, indices.clone(), indices.clone(), indices]
    );
}

/// close_price_silver's columns (as the stock pipeline's AUTO CDC flow gives them), in
/// one unpartitioned table.
fn unpartitioned_close_price() -> medallion::delta::TableSpec {
    use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    medallion::delta::TableSpec {
        name: TableName::new("silver", "close_price_silver"),
        schema: medallion::delta::schema(vec![
            Field::new("Index", DataType::Utf8, true),
            Field::new("Date", DataType::Date32, true),
            Field::new("Close", DataType::Float64, true),
            Field::new("Adj_Close", DataType::Float64, true),
            Field::new("__START_AT", DataType::Date32, false),
            Field::new("__END_AT", DataType::Date32, true),
            Field::new("current", DataType::Boolean, false),
            Field::new("effective_date", ts(), false),
            Field::new("end_date", ts(), true),
        ]),
        partition_columns: vec![],
        target_file_size: None,
    }
}

/// 20,000 indices in one batch, twice: the second batch reads every index's history and
/// closes its version. close_price_silver is made unpartitioned first, the layout for
/// thousands of indices (a folder per index would make this test write 20,000 files),
/// which medallion keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_distinct_indices_in_one_batch() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    medallion::delta::DeltaSink::open(&w.settings().warehouse, unpartitioned_close_price())
        .await
        .unwrap();
    w.land("a.csv", &rows(20_000, 1));
    w.run_binary_ok(&[]).await;
    w.land("b.csv", &rows(20_000, 2));
    w.run_binary_ok(&[]).await;
    assert_versions(&w, 20_000, 2).await;
}

/// 1,500 indices into the default layout, partitioned by `Index`: one MERGE of them all
/// overflowed the stack in delta-rs. The first day is new keys only, an append; the
/// second closes every open version: one commit that rewrites the 1,500 files that
/// hold them, with no predicate over the partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifteen_hundred_partitions_in_one_batch() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land("a.csv", &rows(1_500, 1));
    let out = w.run_binary_ok(&[]).await;
    assert!(
        out.contains("dev.silver.close_price_silver → version 1"),
        "{out}"
    );
    assert_versions(&w, 1_500, 1).await;
    w.land("b.csv", &rows(1_500, 2));
    let out = w.run_binary_ok(&[]).await;
    assert!(
        out.contains("dev.silver.close_price_silver → version 2"),
        "{out}"
    );
    assert_versions(&w, 1_500, 2).await;
}
