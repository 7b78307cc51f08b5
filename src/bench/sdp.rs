//! The peer of the SQL pipelines: Apache Spark Declarative Pipelines 4.3 (`spark-pipelines`,
//! the open-source DLT) runs the example bundle `examples/weather` on the same generated
//! files as medallion's `pipeline run`, each from an empty warehouse, in the same
//! benchmark. Spark has no `read_files`, so its sources are Python definitions over
//! `spark.readStream` (`bench/peers/sdp/weather_sdp.py` writes the Spark project).
//!
//! Its packages (PySpark 4.3) go into their own venv, `~/.cache/medallion-tools/sdp-venv`:
//! the other Spark peer needs PySpark 3.5 for Delta.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

use super::peers::{count_rows, ratio, script, venv};
use super::report::BenchReport;
use super::{BenchError, BenchOptions};

/// The tables both sides write, compared by their row counts. medallion runs only the
/// flows of these (`pipeline run --refresh`): the example's AUTO CDC flows
/// (`station_changes`, `stations_history`, `stations_current`) are left out, because
/// Spark's `create_auto_cdc_flow` needs Delta tables, which pyspark 4.3 cannot write
/// here (see weather_sdp.py); the generated data has an empty `station_changes` folder,
/// so that the bundle still plans.
const TABLES: [&str; 4] = [
    "readings_enriched",
    "stations",
    "daily_by_country",
    "readings",
];

/// Generates the weather data, runs the example pipeline on medallion and on Spark, and
/// adds the wall-time ratio to `report`. Returns the figures for the report's `peers`.
pub async fn run(
    options: &BenchOptions,
    dir: &Path,
    report: &mut BenchReport,
) -> Result<Value, BenchError> {
    let scripts = options.project_dir.join("bench").join("peers").join("sdp");
    let python = venv(
        "sdp-venv",
        "import pyspark.pipelines",
        &[scripts.join("requirements-sdp.txt")],
        &dir.join("sdp-venv.log"),
    )?;
    let work = dir.join("sdp");
    let _ = std::fs::remove_dir_all(&work);
    let data = work.join("data");
    let generated = script(
        &python,
        &scripts.join("generate_weather.py"),
        &[
            "--rows".into(),
            options.rows.to_string(),
            "--out".into(),
            data.display().to_string(),
        ],
        &dir.join("sdp-generate.log"),
    )?;

    eprintln!(
        "bench: peers: the weather pipeline on medallion, {} rows ...",
        options.rows
    );
    let ours = medallion(options, &data, &work.join("medallion"), dir).await?;

    eprintln!("bench: peers: the weather pipeline on Spark Declarative Pipelines ...");
    let theirs = script(
        &python,
        &scripts.join("weather_sdp.py"),
        &[
            "--data".into(),
            data.display().to_string(),
            "--work".into(),
            work.join("spark").display().to_string(),
            // The two networks' readings as temporary views into `readings`, so that
            // each reading is written once, as medallion's two flows do (two flows into
            // one Parquet streaming table lose rows on Spark 4.3; see weather_sdp.py).
            "--union".into(),
            "views".into(),
        ],
        &dir.join("sdp-spark.log"),
    )?;

    let spark_seconds = theirs["wall_seconds"].as_f64().unwrap_or(0.0);
    let ours_seconds = ours["wall_seconds"].as_f64().unwrap_or(0.0);
    let mut same = serde_json::Map::new();
    for t in TABLES {
        same.insert(
            t.into(),
            json!(ours["tables"][t] == theirs["tables"][t] && !ours["tables"][t].is_null()),
        );
    }
    report.ratios.push(ratio(
        &format!(
            "the weather pipeline (examples/weather), {} rows of JSON Lines, from an empty warehouse (process wall)",
            options.rows
        ),
        ours_seconds,
        "Spark Declarative Pipelines",
        spark_seconds,
    ));
    Ok(json!({
        "data": generated,
        "medallion": ours,
        "spark": theirs,
        "same_row_counts": same,
    }))
}

/// `medallion pipeline run --refresh TABLES` of the example bundle on `data`, from an
/// empty warehouse under `work`: its wall time and its tables' row counts.
async fn medallion(
    options: &BenchOptions,
    data: &Path,
    work: &Path,
    dir: &Path,
) -> Result<Value, BenchError> {
    let bundle = options
        .project_dir
        .join("examples")
        .join("weather")
        .join("medallion.yml");
    let log = dir.join("sdp-medallion.log");
    let fail = |reason: String| BenchError::Peer {
        peer: "medallion pipeline run".into(),
        reason,
        log: log.clone(),
    };
    let exe = std::env::current_exe().map_err(|e| fail(e.to_string()))?;
    let var = |name: &str, path: &Path| format!("{name}={}", path.display());
    let started = Instant::now();
    let output = Command::new(exe)
        .arg("--bundle")
        .arg(&bundle)
        .args(["pipeline", "run", "--refresh"])
        .arg(TABLES.join(","))
        .arg("--var")
        .arg(var("data_dir", data))
        .arg("--var")
        .arg(var("warehouse_dir", &work.join("warehouse")))
        .arg("--var")
        .arg(var("state_dir", &work.join("state")))
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let wall = started.elapsed().as_secs_f64();
    let _ = std::fs::write(&log, [&output.stdout[..], &output.stderr[..]].concat());
    if !output.status.success() {
        return Err(fail(format!("exit status {}", output.status)));
    }
    let mut tables = serde_json::Map::new();
    for t in TABLES {
        let path: PathBuf = work.join("warehouse").join("dev").join("weather").join(t);
        tables.insert(
            t.into(),
            count_rows(&path).await.map_or(Value::Null, Value::from),
        );
    }
    Ok(json!({ "wall_seconds": wall, "tables": tables }))
}
