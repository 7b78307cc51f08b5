//! Deployments (`bundle deploy`, `summary`, `run`, `destroy`) and `reset`.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn deployment(w: &Workspace) -> std::path::PathBuf {
    w.root().join(".medallion/bundle/kafka_stream/dev")
}

#[test]
fn deploying_twice_changes_nothing_and_a_change_is_a_new_version() {
    let w = Workspace::new();
    assert!(w.medallion_ok(&["bundle", "deploy"]).contains("version 1"));
    let state = std::fs::read(deployment(&w).join("deployment.json")).unwrap();
    assert!(w
        .medallion_ok(&["bundle", "deploy"])
        .contains("version 1 unchanged"));
    assert_eq!(
        std::fs::read(deployment(&w).join("deployment.json")).unwrap(),
        state
    );

    let json: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["content_hash"].as_str().unwrap().len(), 64);
    assert!(json["deployed_at"].is_string() && json["user"].is_string());
    let hash = json["content_hash"].as_str().unwrap();
    assert!(deployment(&w)
        .join(format!("files/{hash}/resources/kafka_stream_job.yml"))
        .exists());

    let job = w.root().join("resources/kafka_stream_job.yml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace("max_concurrent_runs: 1", "max_concurrent_runs: 2"),
    )
    .unwrap();
    assert!(w.medallion_ok(&["bundle", "deploy"]).contains("version 2"));
    assert!(w
        .medallion_ok(&["bundle", "summary"])
        .contains("version     2"));
}

#[test]
fn deploy_then_destroy() {
    let w = Workspace::new();
    w.medallion_ok(&["bundle", "deploy"]);
    assert!(w
        .medallion_ok(&["bundle", "summary"])
        .contains("job         kafka_stream_job: [dev "));
    assert!(w
        .medallion_ok(&["bundle", "destroy"])
        .contains("removed the deployment"));
    assert!(!deployment(&w).join("deployment.json").exists());
    let left = walkdir::WalkDir::new(deployment(&w))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(left, 0, "no deployed file is left");
    assert!(w
        .medallion_ok(&["bundle", "summary"])
        .contains("is not deployed"));
    let out = w.medallion(&["bundle", "run"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bundle deploy -t dev"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_deploy_waits_for_the_first() {
    let w = Workspace::new();
    let d = medallion::deploy::Deployment::for_settings(&w.settings()).unwrap();
    let lock = medallion::deploy::Lock::acquire(&d, Duration::ZERO)
        .await
        .unwrap();
    let started = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_medallion"))
        .current_dir(w.root())
        .args(["bundle", "deploy"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !deployment(&w).join("deployment.json").exists(),
        "it waits while the lock is held"
    );
    lock.release(&d).await;
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bundle_run_runs_the_deployed_copy() {
    let broker = TestBroker::start().await;
    let w = Workspace::new();
    w.land("a.csv", &csv(RUN_1));
    // The deployment carries the broker address, as a CI deploy would.
    w.medallion_ok(&[
        "bundle",
        "deploy",
        "--var",
        &format!("kafka_bootstrap_servers={}", broker.bootstrap()),
    ]);
    // The working copy changes after the deploy (its job and its pipeline's SQL); the
    // deployed copy is what runs.
    let job = w.root().join("resources/kafka_stream_job.yml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace("table: bronze.bronze", "table: bronze.other"),
    )
    .unwrap();
    let gold = w.root().join("transformations/updated_stocks_gold.sql");
    let text = std::fs::read_to_string(&gold).unwrap();
    std::fs::write(
        &gold,
        text.replace("VIEW gold.updated_stocks_gold", "VIEW gold.other"),
    )
    .unwrap();
    let out = w.medallion_ok(&["bundle", "run", "kafka_stream_job"]);
    assert!(out.contains("── updated_stocks_gold succeeded"), "{out}");
    assert_eq!(
        w.count(&medallion::catalog::TableName::new(
            "gold",
            "updated_stocks_gold"
        ))
        .await,
        4
    );
    let other = medallion::catalog::TableName::new("gold", "other");
    assert!(!w.settings().warehouse.path(&other).exists());
}

#[test]
fn production_refuses_a_dirty_git_tree_unless_forced() {
    let w = Workspace::new();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(w.root())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qm",
        "bundle",
    ]);
    std::fs::write(w.root().join("notes.txt"), "uncommitted").unwrap();
    let kafka = "--var=kafka_bootstrap_servers=kafka-prod:9096";
    let out = w.medallion(&["bundle", "deploy", "-t", "prod", kafka], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uncommitted changes") && err.contains("notes.txt") && err.contains("--force"),
        "{err}"
    );
    assert!(w
        .medallion_ok(&["bundle", "deploy", "-t", "prod", "--force", kafka])
        .contains("version 1"));
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            w.root()
                .join(".medallion/bundle/kafka_stream/prod/deployment.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(state["git_commit"].as_str().unwrap().len(), 40);
}

/// Bronze without times, and every refined table.
async fn all_tables(w: &Workspace) -> Vec<(String, Vec<Vec<String>>)> {
    let mut tables = refined_tables(w).await;
    let b = w
        .query(
            &bronze(),
            "SELECT partition, \"offset\", key, value FROM t ORDER BY 1, 2",
        )
        .await;
    tables.push(("bronze.bronze".into(), b));
    tables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_reset_a_run_rebuilds_identical_tables() {
    let w = Workspace::new();
    w.land("a.csv", &csv(RUN_1));
    w.land("b.csv", &csv(RUN_2));
    w.run_binary_ok(&[]).await;
    let before = all_tables(&w).await;
    assert!(before.iter().all(|(_, rows)| !rows.is_empty()));

    let out = w.medallion(&["reset"], &[]);
    assert!(!out.status.success(), "reset asks for confirmation");
    assert!(w.medallion_ok(&["reset", "--yes"]).contains("is reset"));
    assert!(!w.settings().warehouse.catalog_path().exists());

    w.run_binary_ok(&[]).await;
    assert_eq!(all_tables(&w).await, before);
}

/// An S3 server of the test's own: moto, on a free loopback port.
struct Moto {
    _child: tokio::process::Child,
    endpoint: String,
}

async fn moto() -> Option<Moto> {
    let server = venv_tool("moto_server")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(Moto {
        _child: child,
        endpoint,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploys_to_an_s3_root_path() {
    let Some(s3) = moto().await else {
        return;
    };
    let http = reqwest::Client::new();
    let bucket = http
        .put(format!("{}/deploys", s3.endpoint))
        .send()
        .await
        .unwrap();
    assert!(bucket.status().is_success(), "{}", bucket.status());

    let w = Workspace::new();
    let bundle = w.bundle_file();
    let text = std::fs::read_to_string(&bundle).unwrap();
    std::fs::write(
        &bundle,
        text.replacen(
            "root_path: .medallion/bundle/${bundle.name}/${bundle.target}",
            "root_path: s3://deploys/bundles/${bundle.name}/${bundle.target}",
            1,
        ),
    )
    .unwrap();
    let env = [
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let run = |args: &[&str]| {
        let out = w.medallion(args, &env);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        run(&["bundle", "deploy"]).contains("at s3://deploys/bundles/kafka_stream/dev: version 1")
    );
    assert!(run(&["bundle", "deploy"]).contains("version 1 unchanged"));
    let list = || async {
        http.get(format!("{}/deploys?list-type=2", s3.endpoint))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let listing = list().await;
    assert!(
        listing.contains("<Key>bundles/kafka_stream/dev/deployment.json</Key>")
            && listing.contains("/resources/kafka_stream_job.yml</Key>"),
        "{listing}"
    );
    assert!(
        run(&["bundle", "summary"]).contains("root_path   s3://deploys/bundles/kafka_stream/dev")
    );
    assert!(run(&["bundle", "destroy"]).contains("removed the deployment"));
    assert!(run(&["bundle", "summary"]).contains("is not deployed"));
    let listing = list().await;
    assert!(
        !listing.contains("<Key>"),
        "nothing is left in the bucket: {listing}"
    );
}
