//! The peers, measured in the same benchmark on the same files: Python `deltalake` +
//! `polars` (`bench/peers/polars_delta.py`), the original pipeline on Spark
//! (`bench/peers/spark_pipeline.py`, local mode, against Apache Kafka), and the example
//! pipeline on Spark Declarative Pipelines ([`super::sdp`]). Their Python packages go into
//! venvs under `~/.cache/medallion-tools/`, made on first use from `bench/peers/`'s
//! requirements files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::kafka_server::KafkaServer;

use super::data::DataSet;
use super::report::{median_min_max, BenchReport, Ratio};
use super::{BenchError, BenchOptions};

/// The Spark stages, and the medallion task or flow each one compares with.
const SPARK_STAGES: [(&str, &str); 7] = [
    ("csv_to_kafka", "ingest"),
    ("kafka_to_bronze", "bronze"),
    ("stocks", "stocks_silver"),
    ("close_price", "close_price"),
    ("current_close", "current_close_silver"),
    ("stocks_close", "stocks_close_silver"),
    ("gold", "updated_stocks_gold"),
];

/// Runs the peers and adds their figures and the ratios to `report`.
pub async fn run(
    options: &BenchOptions,
    data: &DataSet,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let dir = options.dir.join("peers");
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut peers = serde_json::Map::new();
    if options.peers.polars || options.peers.spark {
        polars_and_spark(options, data, &dir, report, &mut peers).await?;
    }
    if options.peers.sdp {
        eprintln!("bench: peers: Spark Declarative Pipelines ...");
        match super::sdp::run(options, &dir, report).await {
            Ok(sdp) => {
                peers.insert("spark_declarative_pipelines".into(), sdp);
            }
            Err(e) => {
                eprintln!("bench: peers: Spark Declarative Pipelines failed: {e}");
                peers.insert(
                    "spark_declarative_pipelines".into(),
                    json!({ "error": e.to_string() }),
                );
            }
        }
    }
    report.peers = Some(Value::Object(peers));
    Ok(())
}

/// Python deltalake + polars, and the original pipeline on Spark, as `--peers` names them.
async fn polars_and_spark(
    options: &BenchOptions,
    data: &DataSet,
    dir: &Path,
    report: &mut BenchReport,
    peers: &mut serde_json::Map<String, Value>,
) -> Result<(), BenchError> {
    let scripts = options.project_dir.join("bench").join("peers");
    eprintln!("bench: peers: preparing the Python venv ...");
    let python = venv(
        "peers-venv",
        "import polars, deltalake, pyspark, delta",
        &[
            scripts.join("requirements.txt"),
            scripts.join("requirements-spark.txt"),
        ],
        &dir.join("venv.log"),
    )?;
    if options.peers.polars {
        polars(data, dir, &python, &scripts, report, peers)?;
    }
    if options.peers.spark {
        eprintln!("bench: peers: the original pipeline on Spark ...");
        match spark(options, data, &python, &scripts, dir, report).await {
            Ok(spark) => {
                peers.insert("spark".into(), spark);
            }
            Err(e) => {
                eprintln!("bench: peers: Spark failed: {e}");
                peers.insert("spark".into(), json!({ "error": e.to_string() }));
            }
        }
    }
    Ok(())
}

/// Python deltalake + polars: the SCD2 MERGE and CSV → Delta.
fn polars(
    data: &DataSet,
    dir: &Path,
    python: &Path,
    scripts: &Path,
    report: &mut BenchReport,
    peers: &mut serde_json::Map<String, Value>,
) -> Result<(), BenchError> {
    eprintln!("bench: peers: Python deltalake + polars ...");
    let polars = |name: &str, base: &Path| -> Result<Value, BenchError> {
        let work = dir.join(name);
        let args = [
            "--base".to_string(),
            base.display().to_string(),
            "--changes".into(),
            data.merge_changes.display().to_string(),
            "--work".into(),
            work.display().to_string(),
        ];
        script(
            python,
            &scripts.join("polars_delta.py"),
            &args,
            &dir.join(format!("{name}.log")),
        )
    };
    // The MERGE figure is the median of MERGE_RUNS on both sides, and each run is the
    // first MERGE of its process on both sides: a second MERGE in the same Python
    // process runs warm, in about half the time (`polars_delta.py --merge-runs N`).
    let mut merges = Vec::new();
    for _ in 0..super::MERGE_RUNS {
        merges.push(polars("polars_merge", &data.merge_base)?);
    }
    let runs: Vec<f64> = merges
        .iter()
        .filter_map(|m| m.pointer("/scd2_merge/seconds").and_then(Value::as_f64))
        .collect();
    let mut merge = merges.pop().expect("MERGE_RUNS is not 0");
    if let Some(m) = merge
        .pointer_mut("/scd2_merge")
        .and_then(Value::as_object_mut)
    {
        let (median, min, max) = median_min_max(&runs);
        m.insert("seconds".into(), median.into());
        m.insert("min_seconds".into(), min.into());
        m.insert("max_seconds".into(), max.into());
        m.insert("runs_seconds".into(), runs.into());
    }
    let load = polars("polars_main", &data.base)?;

    if let Some(m) = report.brokers.first() {
        if let Some(s) = merge.pointer("/scd2_merge/seconds").and_then(Value::as_f64) {
            report.ratios.push(ratio(
                "SCD2 MERGE, 10k changed and new rows into a 100k history",
                m.merge.seconds,
                "deltalake+polars",
                s,
            ));
        }
        if let Some(s) = load
            .pointer("/csv_to_delta/seconds")
            .and_then(Value::as_f64)
        {
            let ours: f64 = ["ingest", "bronze"]
                .iter()
                .filter_map(|t| m.full.stage(t))
                .map(|s| s.seconds)
                .sum();
            report.ratios.push(ratio(
                &format!(
                    "CSV → Delta, {} rows (medallion: CSV → Kafka → bronze, {})",
                    report.rows, m.broker
                ),
                ours,
                "deltalake+polars",
                s,
            ));
        }
    }
    peers.insert("deltalake_polars_merge_100k".into(), merge);
    peers.insert("deltalake_polars_main".into(), load);
    Ok(())
}

/// The original pipeline on Spark, against an Apache Kafka of its own; then Spark reads
/// medallion's tables and medallion reads Spark's.
async fn spark(
    options: &BenchOptions,
    data: &DataSet,
    python: &Path,
    scripts: &Path,
    dir: &Path,
    report: &mut BenchReport,
) -> Result<Value, BenchError> {
    let kafka = KafkaServer::start(&options.kafka_jars, &dir.join("kafka-server"), None)?;
    let work = dir.join("spark");
    let _ = std::fs::remove_dir_all(&work);
    // medallion's tables of the broker Spark is compared with.
    let compared = report
        .brokers
        .iter()
        .find(|b| b.broker == "kafka")
        .or(report.brokers.first());
    let ours = compared
        .map(|b| delta_tables(&options.dir.join(&b.broker).join("main").join("warehouse")))
        .unwrap_or_default();
    let mut args = vec![
        "--landing".to_string(),
        data.base.display().to_string(),
        "--bootstrap".into(),
        kafka.bootstrap().into(),
        "--topic".into(),
        "spark_bench".into(),
        "--work".into(),
        work.display().to_string(),
    ];
    if !ours.is_empty() {
        args.push("--read-delta".into());
        args.extend(ours.iter().map(|p| p.display().to_string()));
    }
    let mut value = script(
        python,
        &scripts.join("spark_pipeline.py"),
        &args,
        &dir.join("spark.log"),
    )?;
    drop(kafka);

    // medallion (delta-rs) reads every table Spark wrote.
    let mut read = Vec::new();
    for table in delta_tables(&work) {
        let rows = count_rows(&table).await;
        read.push(match rows {
            Ok(n) => json!({ "path": table.display().to_string(), "rows": n }),
            Err(e) => json!({ "path": table.display().to_string(), "error": e }),
        });
    }
    value["medallion_reads_spark"] = Value::Array(read);

    if let Some(b) = compared {
        for (stage, task) in SPARK_STAGES {
            let theirs = value
                .pointer(&format!("/stages/{stage}/seconds"))
                .and_then(Value::as_f64);
            if let (Some(theirs), Some(ours)) = (theirs, b.full.stage(task)) {
                report.ratios.push(ratio(
                    &format!("{} ({} broker)", ours.stage, b.broker),
                    ours.seconds,
                    "Spark",
                    theirs,
                ));
            }
        }
        if let Some(total) = value.pointer("/total_seconds").and_then(Value::as_f64) {
            report.ratios.push(ratio(
                &format!("whole job, {} rows ({} broker)", report.rows, b.broker),
                b.full.wall_seconds,
                "Spark",
                total,
            ));
        }
    }
    Ok(value)
}

pub(super) fn ratio(figure: &str, ours: f64, peer: &str, theirs: f64) -> Ratio {
    Ratio {
        figure: figure.into(),
        medallion_seconds: ours,
        peer: peer.into(),
        peer_seconds: theirs,
        ratio: if theirs > 0.0 { ours / theirs } else { 0.0 },
    }
}

/// The python of the venv `~/.cache/medallion-tools/<name>`, made (or completed) from the
/// requirements files unless `imports` already succeed in it.
pub(super) fn venv(
    name: &str,
    imports: &str,
    requirements: &[PathBuf],
    log: &Path,
) -> Result<PathBuf, BenchError> {
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default());
    let venv = home.join(".cache/medallion-tools").join(name);
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", imports])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return Ok(python);
    }
    let fail = |reason: String| BenchError::Peer {
        peer: name.into(),
        reason,
        log: log.into(),
    };
    let out = |cmd: &mut Command| -> Result<(), BenchError> {
        let file = std::fs::File::create(log).map_err(|source| BenchError::Io {
            path: log.into(),
            source,
        })?;
        let err = file.try_clone().map_err(|source| BenchError::Io {
            path: log.into(),
            source,
        })?;
        let status = cmd
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .status()
            .map_err(|e| fail(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(fail(format!("{cmd:?} exited with {status}")))
        }
    };
    out(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]);
    for r in requirements {
        pip.arg("-r").arg(r);
    }
    out(&mut pip)?;
    Ok(python)
}

/// Runs a peer script; it prints one JSON object on stdout.
pub(super) fn script(
    python: &Path,
    script: &Path,
    args: &[String],
    log: &Path,
) -> Result<Value, BenchError> {
    let name = script
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let err_log = std::fs::File::create(log).map_err(|source| BenchError::Io {
        path: log.into(),
        source,
    })?;
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .stderr(Stdio::from(err_log))
        .output()
        .map_err(|e| BenchError::Peer {
            peer: name.clone(),
            reason: e.to_string(),
            log: log.into(),
        })?;
    if !output.status.success() {
        return Err(BenchError::Peer {
            peer: name,
            reason: format!("exit status {}", output.status),
            log: log.into(),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|e| BenchError::Peer {
        peer: name,
        reason: format!("its output is not one JSON object: {e}"),
        log: log.into(),
    })
}

/// Folders under `root` that are Delta tables.
fn delta_tables(root: &Path) -> Vec<PathBuf> {
    let mut tables: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir() && e.file_name() == "_delta_log")
        .filter_map(|e| e.path().parent().map(Path::to_path_buf))
        .collect();
    tables.sort();
    tables
}

pub(super) async fn count_rows(path: &Path) -> Result<i64, String> {
    let url =
        url::Url::from_directory_path(std::fs::canonicalize(path).map_err(|e| e.to_string())?)
            .map_err(|_| "not a folder".to_string())?;
    let table = deltalake::open_table(url)
        .await
        .map_err(|e| e.to_string())?;
    let batches = crate::sql::query_table(&table, "SELECT count(*) FROM t")
        .await
        .map_err(|e| e.to_string())?;
    super::first_i64(&batches).ok_or_else(|| "no count".into())
}
