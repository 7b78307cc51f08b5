//! The scheduler against a real clock: a schedule every second, for a bounded few seconds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use medallion::catalog::TableName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JOB_FILE: &str = "resources/kafka_stream_job.yml";

fn edit_job(w: &Workspace, from: &str, to: &str) {
    let path = w.root().join(JOB_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "`{from}` in {JOB_FILE}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

fn every_second(w: &Workspace, paused: bool) {
    let status = if paused { "PAUSED" } else { "UNPAUSED" };
    edit_job(
        w,
        "quartz_cron_expression: \"0 0 6 * * ?\"",
        &format!("quartz_cron_expression: \"* * * * * ?\"\n        pause_status: {status}"),
    );
}

fn deploy(w: &Workspace, vars: &[String]) {
    let mut args = vec!["bundle", "deploy"];
    for v in vars {
        args.extend(["--var", v.as_str()]);
    }
    w.medallion_ok(&args);
}

fn start_scheduler(w: &Workspace) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_medallion"))
        .current_dir(w.root())
        .arg("scheduler")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn stop(child: tokio::process::Child) -> String {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the scheduler stops after SIGTERM")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

fn job_runs() -> TableName {
    TableName::new("system", "job_runs")
}

/// Waits until `job_runs` has a run-level row in `state`; returns the runs.
async fn wait_for_run(w: &Workspace, state: &str) -> Vec<Vec<String>> {
    let path = w.settings().warehouse.path(&job_runs());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if path.join("_delta_log").is_dir() {
            let rows = w
                .query(&job_runs(), "SELECT job, state, error, rows_written FROM t WHERE task IS NULL ORDER BY start")
                .await;
            if rows.iter().any(|r| r[1] == state) {
                return rows;
            }
        }
        assert!(Instant::now() < deadline, "no {state} run within 90 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_every_second_runs_the_job_and_records_it() {
    let broker = TestBroker::start().await;
    let w = Workspace::new();
    w.land("a.csv", &csv(RUN_1));
    every_second(&w, false);
    deploy(
        &w,
        &[format!("kafka_bootstrap_servers={}", broker.bootstrap())],
    );

    let child = start_scheduler(&w);
    let runs = wait_for_run(&w, "SUCCEEDED").await;
    // Let a few more scheduled runs happen, so that their spans can be compared.
    let deadline = Instant::now() + Duration::from_secs(60);
    while w
        .query(&job_runs(), "SELECT count(*) FROM t WHERE task IS NULL")
        .await[0][0]
        .parse::<u64>()
        .unwrap()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "fewer than 3 runs within a minute"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = stop(child).await;
    assert!(log.contains("stopping after the runs under way"), "{log}");
    assert!(
        runs[0][0].starts_with("[dev ") && runs[0][0].ends_with("] kafka_stream_job"),
        "{runs:?}"
    );
    // ingest 7, bronze 7, then the pipeline's flows: the AUTO CDC flow close_price 5
    // change events (7 less the 2 its expectations drop), current_close_silver 2,
    // stocks_silver 4, the join 4, gold 4.
    assert_eq!(
        runs[0][3],
        (7 + 7 + 5 + 2 + 4 + 4 + 4).to_string(),
        "rows written by the first run's tasks"
    );
    let tasks = w
        .query(
            &job_runs(),
            "SELECT count(*) FROM t WHERE task IS NOT NULL AND state = 'SUCCEEDED'",
        )
        .await;
    assert!(tasks[0][0].parse::<u64>().unwrap() >= 7, "{tasks:?}");
    assert_eq!(
        w.count(&TableName::new("gold", "updated_stocks_gold"))
            .await,
        4
    );
    // max_concurrent_runs: 1: no two runs overlap.
    let spans = w
        .query(
            &job_runs(),
            "SELECT CAST(start AS BIGINT) AS s, CAST(\"end\" AS BIGINT) AS e FROM t WHERE task IS NULL ORDER BY s",
        )
        .await;
    assert!(spans.len() >= 3, "{spans:?}");
    for pair in spans.windows(2) {
        let (end, next_start): (i64, i64) =
            (pair[0][1].parse().unwrap(), pair[1][0].parse().unwrap());
        assert!(end <= next_start, "runs overlap: {spans:?}");
    }

    let listing = w.medallion_ok(&["runs"]);
    assert!(
        listing.contains("SUCCEEDED") && listing.contains("kafka_stream_job"),
        "{listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_schedule_does_not_run() {
    let w = Workspace::new();
    every_second(&w, true);
    deploy(&w, &[]);
    let child = start_scheduler(&w);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = stop(child).await;
    assert!(log.contains("schedule is paused"), "{log}");
    assert!(
        !w.settings().warehouse.path(&job_runs()).exists(),
        "nothing ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_task_fires_the_webhook() {
    // A local HTTP server receives the webhook.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length: usize = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= head_end + 4 + length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8(request).unwrap()
    });

    let broker = TestBroker::start().await;
    let w = Workspace::new();
    every_second(&w, false);
    edit_job(
        &w,
        "webhook_notifications:\n        on_failure: []",
        &format!("webhook_notifications:\n        on_failure: [{{ url: \"{url}\" }}]"),
    );
    // The landing folder does not exist: ingest fails.
    deploy(
        &w,
        &[
            format!("kafka_bootstrap_servers={}", broker.bootstrap()),
            "landing_dir=nowhere".into(),
        ],
    );
    let child = start_scheduler(&w);
    let request = tokio::time::timeout(Duration::from_secs(90), server)
        .await
        .expect("the webhook arrives")
        .unwrap();
    let runs = wait_for_run(&w, "FAILED").await;
    stop(child).await;

    assert!(request.starts_with("POST /hook "), "{request}");
    let body: serde_json::Value =
        serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["event"], "on_failure");
    assert_eq!(body["state"], "FAILED");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("task `ingest` failed"),
        "{body}"
    );
    assert!(
        runs.iter().any(|r| r[2].contains("landing folder")),
        "{runs:?}"
    );
}
