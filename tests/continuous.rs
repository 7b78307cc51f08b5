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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn continuous_runs_pick_up_new_files_and_stop_on_ctrl_c() {
    let broker = TestBroker::start().await;
    let w = Workspace::with_broker(&broker);
    w.land("a.csv", &csv(RUN_1));

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medallion"));
    cmd.current_dir(w.root())
        .args(["run", "--continuous", "--interval", "200ms"])
        .args([
            "--var",
            &format!("kafka_bootstrap_servers={}", broker.bootstrap()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();

    wait_for_gold_rows(&w, 4).await;
    w.land("b.csv", &csv(RUN_2));
    wait_for_gold_rows(&w, 6).await;

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("stopped within a minute of Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("stopping after the run under way"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.matches("── updated_stocks succeeded").count() >= 2,
        "{stdout}"
    );
}
