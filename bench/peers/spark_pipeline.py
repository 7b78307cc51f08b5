#!/usr/bin/env python3
"""The Spark peer of the medallion benchmark: the original Databricks pipeline in PySpark local mode.

CSV landing folder -> Kafka topic -> bronze Delta -> silver / gold Delta, as seven stages run in
order, each timed with the wall clock:

  1. csv_to_kafka    readStream csv (all-string schema, header) -> Kafka, key = Index,
                     value = to_json(struct(*))                               (availableNow)
  2. kafka_to_bronze readStream kafka (earliest) -> delta `bronze`, partitioned by year_month
  3. stocks          readStream delta bronze -> typed `stocks_silver` (foreachBatch: valid rows,
                     one per (Index, Date) in the batch; rejects -> `stocks_silver_quarantine`)
  4. close_price     readStream delta bronze -> SCD type 2 `close_price_silver` (foreachBatch
                     MERGE, the "staged updates union" pattern keyed by (Index, Date))
  5. current_close   CREATE OR REPLACE TABLE current_close_silver (latest current row per Index)
  6. stocks_close    readStream delta stocks_silver JOIN static current_close_silver
  7. gold            CREATE OR REPLACE TABLE updated_stocks_gold (+ Close_Diff)

Delta tables are path-based under WORK/tables/<name>, checkpoints under WORK/checkpoints/<name>.
Prints one JSON object on stdout (logs go to stderr) and writes it to --json when given.

  python bench/peers/spark_pipeline.py --landing DIR --bootstrap HOST:PORT --topic NAME \
      --work DIR [--partitions 3] [--read-delta PATH ...] [--json OUT] [--clean]

Needs the packages of bench/peers/requirements-spark.txt, Java 17 and Maven Central (the Delta
and Kafka connector jars are resolved through spark.jars.packages on the first run).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from importlib import metadata

CSV_COLUMNS = ["Index", "Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]


def log(*parts):
    print("[spark_pipeline]", *parts, file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--landing", required=True, help="folder of CSV landing files")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers host:port[,...]")
    p.add_argument("--topic", required=True, help="Kafka topic")
    p.add_argument("--work", required=True, help="folder for tables/ and checkpoints/")
    p.add_argument("--partitions", type=int, default=3,
                   help="partitions of the topic when this script creates it (default 3, "
                        "as medallion's kafka_partitions); 0 leaves creation to the broker")
    p.add_argument("--read-delta", nargs="*", default=[], metavar="PATH",
                   help="after the run, read these Delta tables (e.g. written by medallion)")
    p.add_argument("--json", help="also write the JSON result to this file")
    p.add_argument("--clean", action="store_true",
                   help="delete WORK/tables and WORK/checkpoints first")
    p.add_argument("--master", default=os.environ.get("SPARK_PEER_MASTER", "local[2]"))
    p.add_argument("--shuffle-partitions", type=int, default=4)
    p.add_argument("--driver-memory", default="2g")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Session


def start_spark(args):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    import pyspark
    from pyspark.sql import SparkSession

    delta_version = metadata.version("delta-spark")
    scala = "2.12"  # the Scala of the pyspark 3.5 wheel
    packages = ",".join([
        f"io.delta:delta-spark_{scala}:{delta_version}",
        f"org.apache.spark:spark-sql-kafka-0-10_{scala}:{pyspark.__version__}",
    ])
    builder = (
        SparkSession.builder.appName("medallion-spark-peer")
        .master(args.master)
        .config("spark.jars.packages", packages)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        # Not the current folder: no spark-warehouse/ left in a work tree.
        .config("spark.sql.warehouse.dir", os.path.join(os.path.abspath(args.work), "spark-warehouse"))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
        # Delta's snapshot reconstruction defaults to 50 partitions: far too many for local[2].
        .config("spark.databricks.delta.snapshotPartitions", str(args.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        # An unparseable Date gives NULL (then a reject), not a SparkUpgradeException.
        .config("spark.sql.legacy.timeParserPolicy", "CORRECTED")
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def versions(spark):
    jvm = spark._jvm
    out = {
        "python": platform.python_version(),
        "pyspark": metadata.version("pyspark"),
        "delta-spark": metadata.version("delta-spark"),
        "spark": spark.version,
        "java": jvm.System.getProperty("java.version"),
        "java_vm": jvm.System.getProperty("java.vm.name"),
    }
    try:
        out["scala"] = jvm.scala.util.Properties.versionNumberString()
    except Exception:  # noqa: BLE001
        pass
    try:
        out["kafka-clients"] = jvm.org.apache.kafka.common.utils.AppInfoParser.getVersion()
    except Exception:  # noqa: BLE001
        pass
    return out


# ---------------------------------------------------------------------------------------------
# Helpers


def delta_version(spark, path):
    """The table's latest version, or -1 when there is no table at path."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return -1
    return DeltaTable.forPath(spark, path).history(1).collect()[0]["version"]


def rows_written(spark, path, after_version):
    """Rows written by the commits after `after_version`, from the Delta log's operationMetrics."""
    from delta.tables import DeltaTable

    total = 0
    for h in DeltaTable.forPath(spark, path).history().collect():
        if h["version"] <= after_version:
            continue
        m = h["operationMetrics"] or {}
        if "numOutputRows" in m and h["operation"] != "MERGE":
            total += int(m["numOutputRows"])
        else:
            total += int(m.get("numTargetRowsInserted", 0)) + int(m.get("numTargetRowsUpdated", 0))
    return total


def run_stream(writer, name):
    """Starts an availableNow query, waits for it, and returns it (raises its failure)."""
    q = writer.trigger(availableNow=True).queryName(name).start()
    q.awaitTermination()
    if q.exception() is not None:
        raise RuntimeError(f"{name} failed: {q.exception()}")
    return q


def input_rows(query):
    return sum(int(p.get("numInputRows", 0)) for p in query.recentProgress)


def parsed_stocks(bronze_df):
    """Bronze rows -> typed stock columns plus `_reason` (NULL for a valid row)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    # Every member as text: a literal "null" (the CSV quirk) then casts to NULL, and one bad
    # number cannot null the whole record as from_json with typed fields would.
    text_schema = StructType([StructField(c, StringType()) for c in CSV_COLUMNS])
    r = bronze_df.select(
        "partition", "offset", "value", F.from_json("value", text_schema).alias("r")
    )

    def clean(c):
        v = F.trim(F.col(f"r.`{c}`"))
        return F.when((v == "") | (F.lower(v) == "null"), None).otherwise(v)

    date_text = clean("Date")
    typed = r.select(
        "partition", "offset", "value",
        clean("Index").alias("Index"),
        F.to_date(date_text, "yyyy-MM-dd").alias("Date"),
        clean("Open").cast("double").alias("Open"),
        clean("High").cast("double").alias("High"),
        clean("Low").cast("double").alias("Low"),
        clean("Close").cast("double").alias("Close"),
        clean("Adj Close").cast("double").alias("Adj_Close"),
        clean("Volume").cast("double").cast("bigint").alias("Volume"),
        date_text.alias("_date_text"),
        clean("Close").alias("_close_text"),
        F.col("r").isNull().alias("_bad_json"),
    )
    reason = (
        F.when(F.col("value").isNull(), "value is null")
        .when(F.col("_bad_json"), "value is not a JSON object")
        .when(F.col("Index").isNull(), "Index is empty or null")
        .when(F.col("_date_text").isNull(), "Date is null")
        .when(F.col("Date").isNull(), "Date is not yyyy-MM-dd")
        .when(F.col("_close_text").isNull(), "Close is null")
        .when(F.col("Close").isNull() | F.isnan("Close"), "Close is not a number")
    )
    return typed.withColumn("_reason", reason).drop("_date_text", "_close_text", "_bad_json")


STOCK_COLUMNS = ["Index", "Date", "Open", "High", "Low", "Close", "Adj_Close", "Volume"]


# ---------------------------------------------------------------------------------------------
# Stages


def ensure_topic(spark, args):
    """Creates the topic with --partitions partitions when it does not exist (via the JVM's
    kafka-clients AdminClient that spark-sql-kafka brings)."""
    if args.partitions <= 0:
        return None
    jvm = spark._jvm
    props = jvm.java.util.Properties()
    props.setProperty("bootstrap.servers", args.bootstrap)
    admin = jvm.org.apache.kafka.clients.admin.AdminClient.create(props)
    try:
        names = admin.listTopics().names().get()
        if names.contains(args.topic):
            return "existed"
        topic = jvm.org.apache.kafka.clients.admin.NewTopic(
            args.topic, jvm.java.util.Optional.of(args.partitions), jvm.java.util.Optional.empty()
        )
        admin.createTopics(jvm.java.util.Collections.singletonList(topic)).all().get()
        return "created"
    finally:
        admin.close()


def stage_csv_to_kafka(spark, args, paths):
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([StructField(c, StringType()) for c in CSV_COLUMNS])
    src = (
        spark.readStream.schema(schema)
        .option("header", "true")
        .option("encoding", "UTF-8")
        .option("pathGlobFilter", "*.csv")
        .csv(args.landing)
    )
    out = src.select(
        F.col("Index").alias("key"),
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in CSV_COLUMNS])).alias("value"),
    )
    q = run_stream(
        out.writeStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap)
        .option("topic", args.topic)
        .option("checkpointLocation", paths.checkpoint("csv_to_kafka")),
        "csv_to_kafka",
    )
    return {"rows": input_rows(q)}


def stage_kafka_to_bronze(spark, args, paths):
    from pyspark.sql import functions as F

    table = paths.table("bronze")
    before = delta_version(spark, table)
    src = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    out = src.select(
        F.col("key").cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        "topic", "partition", "offset", "timestamp", "timestampType",
        F.date_format("timestamp", "yyyy-MM").alias("year_month"),
    )
    q = run_stream(
        out.writeStream.format("delta").outputMode("append").partitionBy("year_month")
        .option("checkpointLocation", paths.checkpoint("kafka_to_bronze"))
        .option("path", table),
        "kafka_to_bronze",
    )
    # The records in the topic: the end offsets the query reached (one partition each).
    kafka_records = None
    if q.lastProgress and q.lastProgress.get("sources"):
        end = q.lastProgress["sources"][0].get("endOffset")
        if isinstance(end, str):
            end = json.loads(end)
        if isinstance(end, dict) and args.topic in end:
            kafka_records = sum(int(v) for v in end[args.topic].values())
    res = {"rows": rows_written(spark, table, before)}
    if kafka_records is not None:
        res["topic_end_offsets"] = kafka_records
    return res


def stage_stocks(spark, args, paths):
    from pyspark.sql import functions as F

    table = paths.table("stocks_silver")
    quarantine = paths.table("stocks_silver_quarantine")
    before, q_before = delta_version(spark, table), delta_version(spark, quarantine)

    def write_batch(batch_df, batch_id):
        batch_df.persist()
        try:
            valid = (
                batch_df.where(F.col("_reason").isNull())
                .dropDuplicates(["Index", "Date"])
                .select(*STOCK_COLUMNS)
            )
            (valid.write.format("delta").mode("append")
             .option("txnAppId", "stocks_silver").option("txnVersion", batch_id).save(table))
            rejected = batch_df.where(F.col("_reason").isNotNull()).select(
                "partition", "offset", "value", F.col("_reason").alias("reason"),
                F.current_timestamp().alias("quarantined_at"),
            )
            (rejected.write.format("delta").mode("append")
             .option("txnAppId", "stocks_silver_quarantine").option("txnVersion", batch_id)
             .save(quarantine))
        finally:
            batch_df.unpersist()

    src = parsed_stocks(spark.readStream.format("delta").load(paths.table("bronze")))
    run_stream(
        src.writeStream.foreachBatch(write_batch)
        .option("checkpointLocation", paths.checkpoint("stocks")),
        "stocks",
    )
    return {
        "rows": rows_written(spark, table, before),
        "quarantined": rows_written(spark, quarantine, q_before),
    }


def stage_close_price(spark, args, paths):
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    table = paths.table("close_price_silver")
    (DeltaTable.createIfNotExists(spark).location(table)
     .addColumn("Index", "STRING").addColumn("Date", "DATE")
     .addColumn("Close", "DOUBLE").addColumn("Adj_Close", "DOUBLE")
     .addColumn("__START_AT", "DATE").addColumn("__END_AT", "DATE")
     .addColumn("current", "BOOLEAN")
     .addColumn("effective_date", "TIMESTAMP").addColumn("end_date", "TIMESTAMP")
     .execute())
    before = delta_version(spark, table)

    changed = "NOT (t.Close <=> s.Close AND t.Adj_Close <=> s.Adj_Close)"

    def upsert(batch_df, batch_id):
        target = DeltaTable.forPath(spark, table)
        updates = batch_df.dropDuplicates(["Index", "Date"])
        # Rows that change the current version of a key already in the table: staged once more
        # with a NULL merge key, so that they are inserted as the new current version.
        new_versions = (
            updates.alias("s")
            .join(target.toDF().alias("t"), F.expr("s.Index = t.Index AND s.Date = t.Date"))
            .where(f"t.current = true AND {changed}")
            .selectExpr("NULL AS mergeIndex", "NULL AS mergeDate", "s.*")
        )
        staged = new_versions.unionByName(
            updates.selectExpr("Index AS mergeIndex", "Date AS mergeDate", "*")
        )
        (target.alias("t")
         .merge(staged.alias("s"), "t.Index = s.mergeIndex AND t.Date = s.mergeDate")
         .whenMatchedUpdate(
             condition=f"t.current = true AND {changed}",
             set={"current": "false", "end_date": "current_timestamp()"})
         .whenNotMatchedInsert(values={
             "Index": "s.Index", "Date": "s.Date", "Close": "s.Close",
             "Adj_Close": "s.Adj_Close", "__START_AT": "s.Date", "__END_AT": "CAST(NULL AS DATE)",
             "current": "true", "effective_date": "current_timestamp()",
             "end_date": "CAST(NULL AS TIMESTAMP)"})
         .execute())

    src = (
        parsed_stocks(spark.readStream.format("delta").load(paths.table("bronze")))
        .where(F.col("_reason").isNull())
        .select("Index", "Date", "Close", "Adj_Close")
    )
    run_stream(
        src.writeStream.foreachBatch(upsert)
        .option("checkpointLocation", paths.checkpoint("close_price")),
        "close_price",
    )
    return {"rows": rows_written(spark, table, before)}


def replace_table(spark, paths, name, select):
    """A batch rebuild, as the notebooks' CREATE OR REPLACE TABLE ... AS SELECT."""
    table = paths.table(name)
    spark.sql(f"CREATE OR REPLACE TABLE delta.`{table}` USING DELTA AS {select}")
    return {"rows": rows_written(spark, table, delta_version(spark, table) - 1)}


def stage_current_close(spark, args, paths):
    return replace_table(spark, paths, "current_close_silver", f"""
        SELECT Index, Date, Close, Adj_Close FROM (
            SELECT *, row_number() OVER (PARTITION BY Index ORDER BY Date DESC) AS rn
            FROM delta.`{paths.table("close_price_silver")}`
            WHERE current = true)
        WHERE rn = 1
    """)


def stage_stocks_close(spark, args, paths):
    from pyspark.sql import functions as F

    table = paths.table("stocks_close_silver")
    before = delta_version(spark, table)
    stream = spark.readStream.format("delta").load(paths.table("stocks_silver")).alias("s")
    static = spark.read.format("delta").load(paths.table("current_close_silver")).alias("c")
    out = stream.join(static, F.col("s.Index") == F.col("c.Index"), "inner").select(
        F.col("s.Index").alias("Index"), F.col("s.Date").alias("Date"),
        F.col("s.Close").alias("Close"), F.col("s.Adj_Close").alias("Adj_Close"),
        F.col("c.Close").alias("Latest_Close"), F.col("c.Adj_Close").alias("Latest_Adj_Close"),
    )
    run_stream(
        out.writeStream.format("delta").outputMode("append")
        .option("checkpointLocation", paths.checkpoint("stocks_close"))
        .option("path", table),
        "stocks_close",
    )
    return {"rows": rows_written(spark, table, before)}


def stage_gold(spark, args, paths):
    return replace_table(spark, paths, "updated_stocks_gold", f"""
        SELECT *, Latest_Close - Close AS Close_Diff
        FROM delta.`{paths.table("stocks_close_silver")}`
    """)


STAGES = [
    ("csv_to_kafka", stage_csv_to_kafka),
    ("kafka_to_bronze", stage_kafka_to_bronze),
    ("stocks", stage_stocks),
    ("close_price", stage_close_price),
    ("current_close", stage_current_close),
    ("stocks_close", stage_stocks_close),
    ("gold", stage_gold),
]


def read_delta(spark, path):
    """Interoperability check: Spark reads a Delta table another writer (delta-rs) made."""
    from delta.tables import DeltaTable

    res = {"path": path}
    try:
        df = spark.read.format("delta").load(path)
        res["columns"] = df.columns
        res["schema"] = df.schema.simpleString()
        res["rows"] = df.count()
        d = DeltaTable.forPath(spark, path).detail().collect()[0].asDict()
        res["version"] = delta_version(spark, path)
        res["minReaderVersion"] = d.get("minReaderVersion")
        res["minWriterVersion"] = d.get("minWriterVersion")
        if d.get("tableFeatures") is not None:
            res["tableFeatures"] = list(d["tableFeatures"])
        res["partitionColumns"] = list(d.get("partitionColumns") or [])
        res["numFiles"] = d.get("numFiles")
    except Exception as e:  # noqa: BLE001 -- reported, never fatal
        msg = str(e).strip()
        res["error"] = f"{type(e).__name__}: {msg[:2000]}"
    return res


class Paths:
    def __init__(self, work):
        self.work = os.path.abspath(work)

    def table(self, name):
        return os.path.join(self.work, "tables", name)

    def checkpoint(self, name):
        return os.path.join(self.work, "checkpoints", name)


def main(argv=None):
    args = parse_args(argv)
    # Only the JSON result goes to stdout: the JVM that pyspark starts inherits file
    # descriptor 1 and writes to it (Ivy's ":: loading settings ::" and resolution report), so
    # fd 1 becomes stderr for the rest of the run and the result is written to a saved copy.
    result_out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)
    paths = Paths(args.work)
    if args.clean:
        for sub in ("tables", "checkpoints"):
            shutil.rmtree(os.path.join(paths.work, sub), ignore_errors=True)
    os.makedirs(os.path.join(paths.work, "tables"), exist_ok=True)
    os.makedirs(os.path.join(paths.work, "checkpoints"), exist_ok=True)

    result = {
        "peer": "spark",
        "landing": os.path.abspath(args.landing),
        "bootstrap": args.bootstrap,
        "topic": args.topic,
        "work": paths.work,
        "master": args.master,
        "shuffle_partitions": args.shuffle_partitions,
        "versions": None,
        "spark_start": None,
        "topic_setup": None,
        "stages": {},
    }
    t_all = time.perf_counter()
    spark = None
    status = 0
    try:
        t = time.perf_counter()
        spark = start_spark(args)
        result["spark_start"] = {"seconds": round(time.perf_counter() - t, 3)}
        result["versions"] = versions(spark)
        log("session up in", result["spark_start"]["seconds"], "s:", result["versions"])

        t = time.perf_counter()
        result["topic_setup"] = {"state": ensure_topic(spark, args),
                                 "seconds": round(time.perf_counter() - t, 3)}

        t_stages = time.perf_counter()
        for name, fn in STAGES:
            t = time.perf_counter()
            log("stage", name, "...")
            res = fn(spark, args, paths)
            res["seconds"] = round(time.perf_counter() - t, 3)
            result["stages"][name] = res
            log("stage", name, res)
        result["stages_seconds"] = round(time.perf_counter() - t_stages, 3)
    except Exception as e:  # noqa: BLE001 -- reported in the JSON, exit status 1
        status = 1
        result["error"] = f"{type(e).__name__}: {str(e)[:4000]}"
        log(traceback.format_exc())
    result["total_seconds"] = round(time.perf_counter() - t_all, 3)

    if spark is not None:
        if args.read_delta:
            result["read_delta"] = [read_delta(spark, p) for p in args.read_delta]
        try:
            spark.stop()
        except Exception:  # noqa: BLE001
            pass

    text = json.dumps(result, indent=2, default=str)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    result_out.write(text + "\n")
    result_out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
