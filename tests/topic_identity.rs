//! Kafka progress belongs to one topic: bronze refuses a topic that was replaced, and
//! records the topic's retention removed before bronze read them are an error that says
//! how many, not a silent jump.

mod common;

use std::collections::BTreeMap;

use common::*;
use medallion::kafka::KafkaEndpoint;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{Offset, TopicPartitionList};

/// Runs the binary; whether it succeeded, and its stdout and stderr.
async fn run_failing(w: &Workspace) -> (bool, String) {
    let out = w.run_binary(&[], &[]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn rows(count: usize, year: u32) -> Vec<String> {
    (0..count)
        .map(|i| format!("NYA,{year}-01-{:02},1,2,0.5,1.5,1.5,{i}", 1 + i % 28))
        .collect()
}

fn land_rows(w: &Workspace, name: &str, count: usize, year: u32) {
    let rows = rows(count, year);
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    w.land(name, &csv(&refs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_deleted_and_created_again_is_refused_by_bronze() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    land_rows(&w, "a.csv", 6, 2001);
    w.run_binary_ok(&[]).await;
    let endpoint = KafkaEndpoint::new(broker.bootstrap(), BTreeMap::new());
    let before = endpoint.topic_id_async("Stocks").await.unwrap();
    assert!(before.is_some(), "the broker reports topic ids");

    // The topic goes, and a new one of the same name is filled past bronze's offsets.
    endpoint.delete_topic("Stocks").await.unwrap();
    land_rows(&w, "b.csv", 60, 2002);
    let (ok, text) = run_failing(&w).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("is not the topic dev.bronze.bronze was read from"),
        "{text}"
    );
    assert_ne!(endpoint.topic_id_async("Stocks").await.unwrap(), before);
    assert_eq!(
        w.count(&bronze()).await,
        6,
        "bronze read nothing of the new topic"
    );
}

/// A run dies mid-file; the topic is deleted and created again. The rerun cannot resume
/// the file from offsets of the old topic: ingest fails with the reason and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_in_progress_is_not_resumed_into_a_topic_created_again() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.generate(small(2000, 1, 11));
    let crashed = w
        .run_binary(&[], &[("MEDALLION_FAULT", "ingest.acked@700")])
        .await;
    assert!(!crashed.status.success());
    assert!(String::from_utf8_lossy(&crashed.stderr).contains("fault injected"));
    let endpoint = KafkaEndpoint::new(broker.bootstrap(), BTreeMap::new());
    let before = endpoint.topic_id_async("Stocks").await.unwrap();
    assert!(before.is_some(), "the broker reports topic ids");
    assert!(topic_count(&broker.bootstrap(), "Stocks").await >= 700);

    endpoint.delete_topic("Stocks").await.unwrap();
    endpoint
        .ensure_topic("Stocks", w.settings().kafka.partitions, 1)
        .await
        .unwrap();
    assert_ne!(endpoint.topic_id_async("Stocks").await.unwrap(), before);

    let (ok, text) = run_failing(&w).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("is not the topic that files in progress were sent to")
            && text.contains("ingest-Stocks.json")
            && text.contains("medallion reset"),
        "{text}"
    );
    assert_eq!(
        topic_count(&broker.bootstrap(), "Stocks").await,
        0,
        "nothing was sent to the new topic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_removed_before_bronze_read_them_fail_the_run_unless_allowed() {
    let Some(kafka) = ApacheKafka::start() else {
        return;
    };
    let mut w = Workspace::new();
    w.set_var("kafka_bootstrap_servers", &kafka.bootstrap);
    w.set_var("kafka_partitions", "1");
    land_rows(&w, "a.csv", 10, 2001);
    w.run_binary_ok(&[]).await;
    // Ten more records reach the topic; then retention takes all but the last two.
    land_rows(&w, "b.csv", 10, 2002);
    w.run_binary_ok(&["--task", "ingest"]).await;
    let admin: AdminClient<DefaultClientContext> =
        KafkaEndpoint::new(kafka.bootstrap.clone(), BTreeMap::new())
            .config()
            .create()
            .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("Stocks", 0, Offset::Offset(18))
        .unwrap();
    admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();

    let (ok, text) = run_failing(&w).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("no longer holds offsets 10..18 (8 record(s))"),
        "{text}"
    );
    assert!(text.contains("fail_on_data_loss: false"), "{text}");
    assert_eq!(w.count(&bronze()).await, 10);

    let job = w.root().join("resources/kafka_stream_job.yml");
    let yaml = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        yaml.replace(
            "partition_by: year_month\n",
            "partition_by: year_month\n            fail_on_data_loss: false\n",
        ),
    )
    .unwrap();
    let out = w.run_binary_ok(&[]).await;
    assert!(
        out.contains("8 record(s) at offsets 10..18 were removed"),
        "{out}"
    );
    assert_eq!(w.count(&bronze()).await, 12);
}
