//! The continuous trigger: `medallion run --continuous` picks up files landed while it
//! runs, keeps the Gold table fresh, and stops cleanly on Ctrl-C (SIGINT).

mod common;

use std::time::{Duration, Instant};

use common::*;
use medallion::catalog::TableName;

async fn wait_for_gold_rows(w: &Workspace, rows: u64) {
    let gold = TableName::new("gold", "updated_stocks_gold");
    let path = w.settings().warehouse.path(&gold);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if path.join("_delta_log").is_dir() && w.count(&gold).await == rows {
            return;
        }
        assert!(Instant::now() < deadline, "gold never reached {rows} rows");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `medallion run --continuous` in `w`, on `broker`.
fn start_continuous(w: &Workspace, broker: &TestBroker) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_medallion"))
        .current_dir(w.root())
        .args(["run", "--continuous", "--interval", "200ms"])
        .args([
            "--var",
            &format!("kafka_bootstrap_servers={}", broker.bootstrap()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sends Ctrl-C (SIGINT) to `child` and waits for it to exit.
async fn interrupt(child: tokio::process::Child) -> std::process::Output {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("stopped within two minutes of Ctrl-C")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn continuous_runs_pick_up_new_files_and_stop_on_ctrl_c() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land("a.csv", &csv(RUN_1));

    let child = start_continuous(&w, &broker);

    wait_for_gold_rows(&w, 4).await;
    w.land("b.csv", &csv(RUN_2));
    wait_for_gold_rows(&w, 6).await;

    let out = interrupt(child).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("stopping after the run under way"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.matches("── updated_stocks_gold succeeded").count() >= 2,
        "{stdout}"
    );
}

/// Ctrl-C during the very first micro-batch (the handler used to be set up only after
/// it, so SIGINT killed the process midway): the batch finishes, the process exits 0,
/// and a rerun gives the same tables as an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_during_the_first_micro_batch_stops_cleanly() {
    let options = small(40_000, 4, 11);
    let reference = Workspace::new();
    reference.generate(options.clone());
    reference.run().await;
    let expected = refined_tables(&reference).await;

    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.generate(options);
    let child = start_continuous(&w, &broker);

    // The first micro-batch is under way once records arrive in the topic.
    let endpoint = medallion::kafka::KafkaEndpoint::new(broker.bootstrap(), Default::default());
    let deadline = Instant::now() + Duration::from_secs(120);
    while endpoint.partitions_async("Stocks").await.unwrap().is_none()
        || topic_count(&broker.bootstrap(), "Stocks").await == 0
    {
        assert!(Instant::now() < deadline, "the first batch never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gold = TableName::new("gold", "updated_stocks_gold");
    let gold_log = w.settings().warehouse.path(&gold).join("_delta_log");
    assert!(
        !gold_log.is_dir(),
        "the first batch had already finished: land more rows"
    );
    let out = interrupt(child).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(
        stderr.contains("stopping after the run under way"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("── updated_stocks_gold succeeded").count(),
        1,
        "the first batch finished and no other started: {stdout}"
    );

    w.run_binary_ok(&[]).await;
    assert_eq!(refined_tables(&w).await, expected);
}
