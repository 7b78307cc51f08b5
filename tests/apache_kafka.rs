//! Conformance with the reference broker: the whole pipeline against real Apache Kafka
//! (KRaft, started by the test from Maven Central's jars) gives the same tables as against
//! the embedded broker, and a crash mid-file still leaves every line exactly once.

mod common;

use common::*;

fn land(w: &Workspace) -> u64 {
    let mut fixture: Vec<&str> = RUN_1.to_vec();
    fixture.extend_from_slice(RUN_2);
    w.land("fixture.csv", &csv(&fixture));
    w.generate(small(1500, 2, 41));
    (fixture.len() + 1500) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_gives_the_same_tables_on_apache_kafka() {
    let Some(kafka) = ApacheKafka::start() else {
        return;
    };
    let embedded = TestBroker::start().await;
    let on_tansu = Workspace::with_broker(&embedded);
    let lines = land(&on_tansu);
    on_tansu.run_binary_ok(&[]).await;

    let mut on_kafka = Workspace::new();
    on_kafka.set_var("kafka_bootstrap_servers", &kafka.bootstrap);
    land(&on_kafka);
    let out = on_kafka.run_binary_ok(&[]).await;
    assert!(out.contains(&format!("kafka {}", kafka.bootstrap)), "{out}");

    assert_eq!(topic_count(&kafka.bootstrap, "Stocks").await, lines);
    assert_eq!(on_kafka.count(&bronze()).await, lines);
    assert_eq!(
        refined_tables(&on_kafka).await,
        refined_tables(&on_tansu).await
    );
    // Both brokers partition keys alike (murmur2), so bronze matches row for row.
    let bronze_rows = "SELECT partition, \"offset\", key, value FROM t ORDER BY 1, 2";
    assert_eq!(
        on_kafka.query(&bronze(), bronze_rows).await,
        on_tansu.query(&bronze(), bronze_rows).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_mid_file_on_apache_kafka_resumes_exactly_once() {
    let Some(kafka) = ApacheKafka::start() else {
        return;
    };
    let mut w = Workspace::new();
    w.set_var("kafka_bootstrap_servers", &kafka.bootstrap);
    let lines = land(&w);
    let crashed = w
        .run_binary(&[], &[("MEDALLION_FAULT", "ingest.acked@400")])
        .await;
    assert!(!crashed.status.success());
    let out = w.run_binary_ok(&[]).await;
    assert!(out.contains("resumed after a crash"), "{out}");
    let records = topic_records(&kafka.bootstrap, "Stocks").await;
    let unique = source_lines(&records);
    assert_eq!(records.len() as u64, lines);
    assert_eq!(unique.len() as u64, lines);
    assert_eq!(w.count(&bronze()).await, lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_transactions_a_crash_leaves_nothing_for_read_committed_readers() {
    let Some(kafka) = ApacheKafka::start() else {
        return;
    };
    let mut w = Workspace::new();
    w.set_kafka_settings(&[("transactional.id", "medallion-ingest-test")]);
    w.set_var("kafka_bootstrap_servers", &kafka.bootstrap);
    let lines = land(&w);

    // Killed inside a file's transaction, after 400 messages were acknowledged.
    let crashed = w
        .run_binary(&[], &[("MEDALLION_FAULT", "ingest.acked@400")])
        .await;
    assert!(!crashed.status.success());
    let out = w.run_binary_ok(&[]).await;
    // The dead run's messages were aborted: nothing of the file was visible to resume past.
    assert!(!out.contains("resumed after a crash"), "{out}");

    let records = topic_records(&kafka.bootstrap, "Stocks").await; // read_committed
    let unique = source_lines(&records);
    assert_eq!(
        records.len() as u64,
        lines,
        "no duplicate for a read_committed consumer"
    );
    assert_eq!(unique.len() as u64, lines);
    // The aborted records and the transaction markers still take offsets.
    assert!(topic_count(&kafka.bootstrap, "Stocks").await > lines);
    assert_eq!(w.count(&bronze()).await, lines);
}

#[test]
fn without_the_jars_the_suite_fails_in_ci_and_skips_locally() {
    check_it_fails_in_ci_without_the_jars("the_pipeline_gives_the_same_tables_on_apache_kafka");
}
