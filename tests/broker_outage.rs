//! The broker goes away: at start, or in the middle of a run. The run ends with a clear
//! error naming the address after bounded retries, leaves no half-written commit, and
//! the next run completes, every line still exactly once.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_broker_fails_clearly_after_bounded_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}"); // nothing listens here any more
    let mut w = Workspace::new();
    w.generate(small(200, 1, 3));
    w.set_var("kafka_bootstrap_servers", &address);
    let started = Instant::now();
    let out = w.run_binary(&[], &[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "Kafka at {address} did not answer after 3 attempts"
        )),
        "{err}"
    );
    assert!(
        err.contains("retrying in 500ms") && err.contains("retrying in 1s"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "bounded: {:?}",
        started.elapsed()
    );
    assert!(
        !w.settings().warehouse.path(&bronze()).exists(),
        "nothing was written"
    );

    // The next run, with the broker there, completes.
    let broker = TestBroker::start().await;
    w.set_var("kafka_bootstrap_servers", &broker.bootstrap());
    w.run_binary_ok(&[]).await;
    assert_eq!(w.count(&bronze()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_disappears_mid_run_loses_and_doubles_nothing() {
    let broker = TestBroker::start().await;
    let mut w = Workspace::with_broker(&broker);
    // Fail deliveries after 3 s rather than the default 2 minutes, to keep the test short.
    w.set_kafka_settings(&[("message.timeout.ms", "3000")]);
    w.generate(small(3000, 3, 5));
    let address = broker.bootstrap();

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medallion"));
    cmd.current_dir(w.root())
        .args([
            "run",
            "--var",
            &format!("kafka_bootstrap_servers={address}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let data = broker.stop().await; // the broker goes away mid-run

    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the run ends within bounded retries")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the run fails while the broker is gone"
    );
    assert!(err.contains(&address), "the error names the broker: {err}");

    // The broker comes back (on another port); the next run completes, exactly once.
    let broker = TestBroker::start_in(data).await;
    w.set_var("kafka_bootstrap_servers", &broker.bootstrap());
    w.run_binary_ok(&[]).await;
    let records = topic_records(&broker.bootstrap(), "Stocks").await;
    let lines = source_lines(&records);
    assert_eq!(records.len(), 3000, "every line is in Kafka once");
    assert_eq!(lines.len(), 3000);
    assert_eq!(w.count(&bronze()).await, 3000);
    let dupes = w
        .query(&bronze(), "SELECT count(*) FROM (SELECT partition, \"offset\" FROM t GROUP BY 1, 2 HAVING count(*) > 1)")
        .await;
    assert_eq!(dupes[0][0], "0");
}
