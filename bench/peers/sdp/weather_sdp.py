#!/usr/bin/env python3
"""The SDP peer of the medallion benchmark: examples/weather as an Apache Spark Declarative Pipeline.

  python3 bench/peers/sdp/weather_sdp.py --data DIR --work DIR [--driver-memory 4g] \
      [--venv ~/.cache/medallion-tools/sdp-venv] [--union tables|views] [--json OUT]

DIR is a folder like examples/weather/data (readings/eu/*.jsonl, readings/us/*.jsonl.gz,
stations/stations.csv), e.g. made by generate_weather.py. This script writes an SDP project
into WORK/project, creates the schema `weather` in a Hive (Derby) metastore under WORK, runs

  spark-pipelines --conf spark.sql.catalogImplementation=hive ... run

timing that process with the wall clock (JVM and session start included), then reads each
table's row count back in a separate short PySpark session (not timed) and prints one JSON
object on stdout: {"wall_seconds", "tables": {name: rows}, "spark_version", "log", ...}.
Spark's output goes to WORK/spark-pipelines.log (the helpers' to WORK/helper-*.log).

This process needs only the standard library: the Spark parts run with the venv's python
(made from bench/peers/sdp/requirements-sdp.txt), SPARK_HOME = the venv's pyspark package
folder, Java 17 on PATH, SPARK_LOCAL_IP=127.0.0.1.

The pipeline, next to examples/weather/transformations/*.sql, and where it differs:

  * `read_files` is Databricks-only, so the three file sources are Python
    `@dp.temporary_view`s (spark.readStream.json / spark.read.csv with the same schemas);
    everything else is SQL.
  * SDP has no expectations (neither `CONSTRAINT ... EXPECT` nor `@dp.expect*` exist in
    PySpark 4.3.0): known_station (ON VIOLATION DROP ROW) is a WHERE on `readings`;
    plausible_temperature (warn: keep and count) keeps every row and is not counted during the
    run; this script counts its violations afterwards ("plausible_temperature_failed").
  * medallion's two `CREATE FLOW ... INSERT INTO readings` flows: with Parquet tables two
    append flows into one streaming table lost rows here (both flows' file-sink batch 0 share
    the table's _spark_metadata log, so the second is skipped as already committed). So
    --union tables (default): each network is its own streaming table (readings_eu,
    readings_us) and `readings` is a third streaming table whose one flow is
    STREAM(readings_eu) UNION ALL STREAM(readings_us); --union views: each network is a
    temporary view (not stored) and `readings` the same union straight over the files, so
    the readings are written once, as medallion writes them.
  * A malformed JSON line: medallion quarantines it as unparseable; here the JSON reader
    runs with mode DROPMALFORMED, so it is dropped (and not counted).
  * Tables are Parquet in a Hive catalog, not Delta (delta-spark has no build for Spark 4.3);
    the NOT NULL, COMMENT and PARTITIONED BY (country) of the medallion SQL are kept.
  * Timestamps without an offset (the us `time`) and CAST(... AS DATE) use the session time
    zone, set to UTC as medallion's.
  * The example's change feed of the stations (transformations/station_changes*.sql: the
    streaming table station_changes and the AUTO CDC flows into stations_history, SCD Type 2,
    and stations_current, SCD Type 1) is left out here, and on the medallion side too: SDP's
    `dp.create_auto_cdc_flow` needs a target that supports MERGE, and on these Parquet tables
    it fails with AUTOCDC_TARGET_DOES_NOT_SUPPORT_MERGE; Delta would need delta-spark, whose
    newest release (4.4.1) requires pyspark <= 4.2, and this peer runs pyspark 4.3.
    So the benchmark compares the four tables both build: src/bench/sdp.rs runs medallion with
    `pipeline run --refresh readings,stations,readings_enriched,daily_by_country` (only the
    flows of those tables), and generate_weather.py writes an empty station_changes/ folder,
    which medallion needs only to plan the flows it does not run. This script ignores it.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

TABLES_ALWAYS = ["readings", "stations", "readings_enriched", "daily_by_country"]
DEFAULT_VENV = os.path.expanduser("~/.cache/medallion-tools/sdp-venv")


def log(*parts):
    print("[weather_sdp]", *parts, file=sys.stderr, flush=True)


def fail(msg, code=1):
    print(f"[weather_sdp] error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with readings/{eu,us} and stations/")
    p.add_argument("--work", required=True,
                   help="folder for the project, storage, warehouse, metastore and logs "
                        "(must be empty or absent unless --clean)")
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--venv", default=DEFAULT_VENV, help=f"venv with pyspark (default {DEFAULT_VENV})")
    p.add_argument("--union", choices=["tables", "views"], default="tables",
                   help="each network as its own streaming table (default) or temporary view")
    p.add_argument("--shuffle-partitions", type=int, default=4,
                   help="spark.sql.shuffle.partitions (default 4, as bench/peers/spark_pipeline.py)")
    p.add_argument("--master", default="local[*]",
                   help="master of the helper sessions only: spark-pipelines runs on its own "
                        "local Spark Connect server, which takes no master")
    p.add_argument("--clean", action="store_true", help="delete WORK first")
    p.add_argument("--json", help="also write the JSON result to this file")
    p.add_argument("--helper", choices=["create-schema", "count"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The project

SPEC = """\
# Written by bench/peers/sdp/weather_sdp.py: examples/weather as an SDP pipeline.
name: weather
storage: {storage}
database: weather
configuration:
  spark.sql.session.timeZone: UTC
  spark.sql.shuffle.partitions: "{shuffle}"
libraries:
  - glob:
      include: transformations/**
"""

SOURCES_PY = '''\
# The file sources: `read_files` of the medallion SQL is Databricks-only, so these are Python.
# Schemas as in examples/weather/transformations/*.sql.
from pyspark import pipelines as dp

DATA = {data!r}


@dp.temporary_view(name="readings_eu_files")
def readings_eu_files():
    # DROPMALFORMED: a line that is not JSON is dropped (medallion quarantines it).
    return (spark.readStream.format("json")
            .schema("station STRING, observed_at TIMESTAMP, temp_c DOUBLE, humidity DOUBLE")
            .option("mode", "DROPMALFORMED")
            .load(DATA + "/readings/eu"))


@dp.temporary_view(name="readings_us_files")
def readings_us_files():
    # .jsonl.gz: Hadoop's codec is chosen by the .gz suffix.
    return (spark.readStream.format("json")
            .schema("id STRING, time STRING, temp_f DOUBLE, rh DOUBLE")
            .option("mode", "DROPMALFORMED")
            .load(DATA + "/readings/us"))


@dp.temporary_view(name="stations_file")
def stations_file():
    # escape '"': RFC 4180 doubled quotes inside quoted names.
    return (spark.read.format("csv")
            .option("header", "true")
            .option("escape", '"')
            .load(DATA + "/stations"))
'''

NETWORKS_SQL = """\
-- The two networks' readings, in one shape (Celsius), as medallion's flows readings_eu and
-- readings_us select them. medallion appends both to `readings` with two INSERT INTO flows;
-- with Parquet tables two append flows into one streaming table lost rows here (both flows'
-- batch 0 go to the one _spark_metadata log of the table, the second is skipped as already
-- committed), so each network is its own {kind} and `readings` is their union (readings.sql).
CREATE {create} readings_eu AS
SELECT
  station,
  observed_at,
  temp_c,
  humidity,
  'eu' AS network
FROM STREAM(readings_eu_files);

CREATE {create} readings_us AS
SELECT
  id AS station,
  to_timestamp(time) AS observed_at,
  round((temp_f - 32) * 5 / 9, 2) AS temp_c,
  rh / 100.0 AS humidity,
  'us' AS network
FROM STREAM(readings_us_files);
"""

READINGS_SQL = """\
-- Every reading of both networks: one flow, the union of both streams.
-- SDP has no expectations, so:
--   known_station EXPECT (station IS NOT NULL AND station <> '') ON VIOLATION DROP ROW
--     is the WHERE below (dropped rows are neither quarantined nor counted);
--   plausible_temperature EXPECT (temp_c BETWEEN -90 AND 60), warn only, keeps every row:
--     nothing to do here (weather_sdp.py counts the violations after the run).
CREATE STREAMING TABLE readings (
  station STRING NOT NULL,
  observed_at TIMESTAMP,
  temp_c DOUBLE,
  humidity DOUBLE,
  network STRING
)
COMMENT 'Every reading of both networks, in Celsius'
-- coalesce: SDP checks the declared NOT NULL against the query's inferred nullability,
-- which a WHERE does not change; after the WHERE, coalesce(station, '') = station.
AS SELECT coalesce(station, '') AS station, observed_at, temp_c, humidity, network
FROM (
  SELECT * FROM STREAM(readings_eu)
  UNION ALL
  SELECT * FROM STREAM(readings_us)
)
WHERE station IS NOT NULL AND station <> '';
"""

STATIONS_SQL = """\
-- Weather stations, a small CSV reference table (the CSV is read in sources.py).
CREATE MATERIALIZED VIEW stations
COMMENT 'One row per station'
AS SELECT
  station_id,
  name,
  country,
  CAST(elevation_m AS INT) AS elevation_m
FROM stations_file;
"""

ENRICHED_SQL = """\
-- New readings joined with the stations as they stand (a stream-static join), through a
-- temporary view, which is not stored.
CREATE TEMPORARY VIEW readings_with_station AS
SELECT r.station, r.observed_at, r.temp_c, r.humidity, s.name AS station_name, s.country
FROM STREAM(readings) r
JOIN stations s ON r.station = s.station_id;

CREATE STREAMING TABLE readings_enriched
PARTITIONED BY (country)
AS SELECT * FROM STREAM(readings_with_station);

-- Daily figures per country: an aggregate, so a materialized view.
CREATE MATERIALIZED VIEW daily_by_country AS
SELECT
  country,
  CAST(observed_at AS DATE) AS day,
  count(*) AS readings,
  round(avg(temp_c), 2) AS avg_temp_c,
  min(temp_c) AS min_temp_c,
  max(temp_c) AS max_temp_c
FROM readings_enriched
GROUP BY country, CAST(observed_at AS DATE);
"""


def write_project(a, work, data):
    proj = work / "project"
    tr = proj / "transformations"
    tr.mkdir(parents=True)
    (proj / "spark-pipeline.yml").write_text(
        SPEC.format(storage=(work / "storage").as_uri(), shuffle=a.shuffle_partitions))
    (tr / "sources.py").write_text(SOURCES_PY.format(data=str(data)))
    create, kind = (("STREAMING TABLE", "streaming table") if a.union == "tables"
                    else ("TEMPORARY VIEW", "temporary view (not stored)"))
    (tr / "networks.sql").write_text(NETWORKS_SQL.format(create=create, kind=kind))
    (tr / "readings.sql").write_text(READINGS_SQL)
    (tr / "stations.sql").write_text(STATIONS_SQL)
    (tr / "enriched.sql").write_text(ENRICHED_SQL)
    return proj


# ---------------------------------------------------------------------------------------------
# Spark settings shared by the run and the helper sessions (static: given to spark-submit)

def static_confs(a, work):
    metastore = work / "metastore_db"
    return {
        "spark.master": a.master,
        "spark.driver.memory": a.driver_memory,
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(work / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={metastore};create=true",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={work}",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        # Not spark.ui.showConsoleProgress=false: with it, spark-pipelines 4.3.0 ran on the
        # in-memory catalog here (SCHEMA_NOT_FOUND for `weather`, 3 runs out of 3).
    }


def spark_env(venv, work):
    py = Path(venv) / "bin" / "python"
    if not py.exists():
        fail(f"no python in the venv {venv}: make it with python3 -m venv {venv} && "
             f"{venv}/bin/pip install -r bench/peers/sdp/requirements-sdp.txt")
    out = subprocess.run([str(py), "-c", "import pyspark, os; print(os.path.dirname(pyspark.__file__)); "
                          "print(pyspark.__version__)"], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"pyspark is not importable in {venv}: {out.stderr.strip()}")
    spark_home, version = out.stdout.split()
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        fail("no java on PATH and no JAVA_HOME (Java 17 is needed)")
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": spark_home,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": str(py),
        "PYSPARK_DRIVER_PYTHON": str(py),
        "PATH": f"{Path(venv) / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    })
    return py, spark_home, version, env


def run_helper(py, env, a, work, mode, tables=None):
    """A short PySpark session (own JVM, so Derby's lock is released) of this same file."""
    logf = work / f"helper-{mode}.log"
    cmd = [str(py), os.path.abspath(__file__), "--helper", mode, "--data", str(a.data),
           "--work", str(work), "--driver-memory", a.driver_memory, "--master", a.master]
    with open(logf, "w") as lf:
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=lf, text=True)
    if out.returncode != 0:
        fail(f"helper '{mode}' failed (exit {out.returncode}); see {logf}:\n"
             + tail(logf, 30))
    return json.loads(out.stdout) if out.stdout.strip() else None


def helper(a):
    """Runs inside the venv's python."""
    from pyspark.sql import SparkSession
    work = Path(a.work).resolve()
    b = SparkSession.builder.appName(f"weather_sdp-{a.helper}")
    for k, v in static_confs(a, work).items():
        b = b.config(k, v)
    spark = b.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        if a.helper == "create-schema":
            spark.sql("CREATE SCHEMA IF NOT EXISTS weather")
            print(json.dumps({"ok": True}))
            return
        res = {"tables": {}}
        names = [r.tableName for r in spark.sql("SHOW TABLES IN weather").collect()
                 if not r.isTemporary]
        for t in sorted(names):
            res["tables"][t] = spark.table(f"weather.{t}").count()
        if "readings" in names:
            res["plausible_temperature_failed"] = spark.sql(
                "SELECT count(*) FROM weather.readings WHERE NOT (temp_c BETWEEN -90 AND 60)"
                " OR temp_c IS NULL").first()[0]
        if "daily_by_country" in names:
            res["daily_by_country"] = {
                r[0]: {"days": r[1], "readings": r[2]} for r in spark.sql(
                    "SELECT country, count(*), sum(readings) FROM weather.daily_by_country"
                    " GROUP BY country ORDER BY country").collect()}
        print(json.dumps(res))
    finally:
        spark.stop()


STEP_RE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d): (Creating Spark session|"
                     r"Creating dataflow graph|Starting run|Run is COMPLETED)")
FLOW_RE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d): Flow [\w.]*?\.(\w+) has COMPLETED")


def phases(text):
    """Seconds (whole, from SDP's log lines) of session start, graph registration and the flows,
    and when each flow completed, counted from 'Starting run'."""
    ts = lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S").timestamp()
    steps = {name: ts(t) for t, name in STEP_RE.findall(text)}
    try:
        out = {
            "session_start": steps["Creating dataflow graph"] - steps["Creating Spark session"],
            "graph_registration": steps["Starting run"] - steps["Creating dataflow graph"],
            "flows": steps["Run is COMPLETED"] - steps["Starting run"],
        }
    except KeyError:
        return None
    out["flow_completed_after"] = {f: ts(t) - steps["Starting run"] for t, f in FLOW_RE.findall(text)}
    return out


def tail(path, n):
    try:
        return "".join(Path(path).read_text(errors="replace").splitlines(True)[-n:])
    except OSError:
        return ""


def main(argv=None):
    a = parse_args(argv)
    if a.helper:
        helper(a)
        return
    data = Path(a.data).resolve()
    work = Path(a.work).resolve()
    a.data = data
    for sub in ("readings/eu", "readings/us", "stations"):
        if not (data / sub).is_dir():
            fail(f"{data / sub} is not a folder (see generate_weather.py)")
    if work.exists() and any(work.iterdir()):
        if not a.clean:
            fail(f"{work} is not empty: give a fresh --work, or --clean")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)

    py, spark_home, version, env = spark_env(a.venv, work)
    proj = write_project(a, work, data)
    log(f"project in {proj}; pyspark {version} at {spark_home}")

    t = time.monotonic()
    run_helper(py, env, a, work, "create-schema")
    schema_seconds = time.monotonic() - t
    log(f"schema weather created ({schema_seconds:.1f} s, not timed)")

    cmd = [str(Path(a.venv) / "bin" / "spark-pipelines")]
    for k, v in static_confs(a, work).items():
        if k != "spark.master":  # spark-pipelines starts its own local Spark Connect server
            cmd += ["--conf", f"{k}={v}"]
    cmd += ["run", "--spec", str(proj / "spark-pipeline.yml")]
    logf = work / "spark-pipelines.log"
    log("running: " + " ".join(cmd))
    with open(logf, "w") as lf:
        t0 = time.monotonic()
        rc = subprocess.run(cmd, env=env, cwd=str(work), stdout=lf, stderr=subprocess.STDOUT).returncode
        wall = time.monotonic() - t0
    text = Path(logf).read_text(errors="replace")
    if rc != 0 or "Run is COMPLETED" not in text:
        fail(f"spark-pipelines run failed (exit {rc}) after {wall:.1f} s; see {logf}:\n"
             + tail(logf, 40))
    log(f"run completed in {wall:.1f} s")

    counts = run_helper(py, env, a, work, "count")
    expected = TABLES_ALWAYS + (["readings_eu", "readings_us"] if a.union == "tables" else [])
    missing = [t for t in expected if t not in counts["tables"]]
    if missing:
        fail(f"tables missing after the run: {missing}; see {logf}")
    result = {
        "wall_seconds": round(wall, 2),
        "tables": counts["tables"],
        "plausible_temperature_failed": counts.get("plausible_temperature_failed"),
        "daily_by_country": counts.get("daily_by_country"),
        "phases_seconds": phases(text),
        "spark_version": version,
        "union": a.union,
        "driver_memory": a.driver_memory,
        "master": a.master,
        "shuffle_partitions": a.shuffle_partitions,
        "schema_create_seconds": round(schema_seconds, 2),
        "project": str(proj),
        "log": str(logf),
    }
    if a.union == "tables":
        t = counts["tables"]
        result["known_station_dropped"] = t["readings_eu"] + t["readings_us"] - t["readings"]
    out = json.dumps(result, indent=2)
    print(out)
    if a.json:
        Path(a.json).write_text(out + "\n")


if __name__ == "__main__":
    main()
