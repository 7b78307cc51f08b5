#!/usr/bin/env python3
"""Python peer of the medallion benchmark: polars + deltalake (delta-rs).

Does by hand what medallion does in one binary, so the two can be timed on the
same data:
  csv_to_delta  every base CSV -> typed rows -> append to <work>/stocks
  scd2_load     initial SCD2 history <work>/close_price_silver from the base
  scd2_merge    changes CSV -> "staged updates union" -> DeltaTable.merge

Usage: python bench/peers/polars_delta.py --base DIR --changes FILE --work DIR [--json OUT]
Prints one JSON object with rows/seconds/bytes per stage.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import deltalake
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

COLUMNS = ["Index", "Date", "Open", "High", "Low", "Close", "Adj_Close", "Volume"]
PRICES = ["Open", "High", "Low", "Close", "Adj_Close"]
KEY = ["Index", "Date"]

STOCKS_SCHEMA = pa.schema(
    [("Index", pa.string()), ("Date", pa.date32())]
    + [(c, pa.float64()) for c in PRICES]
    + [("Volume", pa.int64())]
)
UTC_US = pa.timestamp("us", tz="UTC")
# Nullability is part of the contract: Delta records it in the table schema.
HISTORY_SCHEMA = pa.schema([
    pa.field("Index", pa.string(), nullable=False),
    pa.field("Date", pa.date32(), nullable=False),
    pa.field("Close", pa.float64(), nullable=False),
    pa.field("Adj_Close", pa.float64()),
    pa.field("__START_AT", pa.date32(), nullable=False),
    pa.field("__END_AT", pa.date32()),
    pa.field("current", pa.bool_(), nullable=False),
    pa.field("effective_date", UTC_US, nullable=False),
    pa.field("end_date", UTC_US),
])


def read_csv(path: Path) -> pl.DataFrame:
    """One Kaggle-layout CSV as typed columns; unparseable values become null.

    Everything is read as text first so that a stray value ('n/a', '12.0' in
    Volume) nulls one cell instead of failing the whole file.
    """
    df = pl.read_csv(path, infer_schema=False, null_values=["null", ""],
                     encoding="utf8-lossy", truncate_ragged_lines=True)
    # polars strips a leading BOM today; keep the guard in case a file has two
    # or a future version stops doing it.
    df = df.rename({c: c.lstrip("\ufeff").strip().replace("Adj Close", "Adj_Close")
                    for c in df.columns})
    missing = [c for c in COLUMNS if c not in df.columns]
    df = df.with_columns(pl.lit(None, pl.String).alias(c) for c in missing)
    return df.select(
        pl.col("Index").str.strip_chars(),
        pl.col("Date").str.strip_chars().str.to_date("%Y-%m-%d", strict=False),
        *[pl.col(c).str.strip_chars().cast(pl.Float64, strict=False) for c in PRICES],
        # Int64 directly would reject "12.0"; going through Float64 accepts both.
        pl.col("Volume").str.strip_chars().cast(pl.Float64, strict=False)
        .cast(pl.Int64, strict=False),
    )


def read_all(files: list[Path]) -> tuple[pl.DataFrame, int]:
    """All files as one frame, plus how many could not be read at all."""
    frames, skipped = [], 0
    for f in files:
        try:
            frames.append(read_csv(f))
        except Exception as e:  # an unreadable file is skipped, not fatal
            print(f"skipping {f}: {e}", file=sys.stderr)
            skipped += 1
    empty = pl.from_arrow(STOCKS_SCHEMA.empty_table())
    return pl.concat([empty, *frames]), skipped


def valid(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("Index").is_not_null() & pl.col("Date").is_not_null()
                     & pl.col("Close").is_not_null())


def to_arrow(df: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    # polars exports string_view/large_string; pin the plain types Delta expects.
    return df.select(schema.names).to_arrow().cast(schema)


def stage(rows: int, seconds: float, nbytes: int, **extra) -> dict:
    return {"rows": rows, "seconds": round(seconds, 4), "bytes": nbytes, **extra}


def csv_to_delta(base: Path, work: Path) -> tuple[dict, pl.DataFrame]:
    files = sorted(base.glob("*.csv"))
    nbytes = sum(f.stat().st_size for f in files)
    t0 = time.perf_counter()
    raw, skipped = read_all(files)
    good = valid(raw)
    write_deltalake(str(work / "stocks"), to_arrow(good, STOCKS_SCHEMA), mode="append")
    secs = time.perf_counter() - t0
    return stage(good.height, secs, nbytes, rows_dropped=raw.height - good.height,
                 files=len(files), files_skipped=skipped), good


def scd2_load(good: pl.DataFrame, work: Path, nbytes: int) -> dict:
    t0 = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc)
    # One live version per key: a key repeated in the base keeps its last row.
    hist = (
        good.select("Index", "Date", "Close", "Adj_Close")
        .unique(subset=KEY, keep="last", maintain_order=True)
        .sort(KEY)
        .with_columns(
            pl.col("Date").alias("__START_AT"),
            pl.col("Date").shift(-1).over("Index").alias("__END_AT"),
            pl.lit(True).alias("current"),
            pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("effective_date"),
            pl.lit(None, pl.Datetime("us", "UTC")).alias("end_date"),
        )
    )
    write_deltalake(str(work / "close_price_silver"), to_arrow(hist, HISTORY_SCHEMA),
                    mode="overwrite")
    return stage(hist.height, time.perf_counter() - t0, nbytes,
                 duplicates_dropped=good.height - hist.height)


def q(name: str) -> str:
    # delta-rs 1.6 parses identifiers case-sensitively, but plain DataFusion SQL
    # lower-cases unquoted ones; quoting keeps "Index"/"Date" right either way.
    return f'"{name}"'


def scd2_merge(changes: Path, work: Path) -> dict:
    path = str(work / "close_price_silver")
    t0 = time.perf_counter()
    raw, _ = read_all([changes])
    now = dt.datetime.now(dt.timezone.utc)
    good = valid(raw).select("Index", "Date", "Close", "Adj_Close")
    # A key repeated in one batch counts once (its last row), as in the load.
    ch = good.unique(subset=KEY, keep="last", maintain_order=True)

    # Current target versions of the changed keys only; polars pushes the
    # `current` filter into the parquet scan.
    cur = (pl.scan_delta(path).filter(pl.col("current"))
           .select(*KEY, pl.col("Close").alias("t_Close"), pl.col("Adj_Close").alias("t_Adj"))
           .join(ch.lazy().select(KEY), on=KEY, how="semi")
           .collect())
    j = ch.join(cur, on=KEY, how="left")
    matched = pl.col("t_Close").is_not_null()  # t.Close is NOT NULL by schema
    differs = pl.col("Close").ne_missing(pl.col("t_Close")) | \
        pl.col("Adj_Close").ne_missing(pl.col("t_Adj"))
    # Identical rows would otherwise close a version and reopen the same one.
    j = j.filter(~matched | differs)

    cols = ["Index", "Date", "Close", "Adj_Close"]
    keyed = j.select(*cols, pl.col("Index").alias("mk_Index"), pl.col("Date").alias("mk_Date"))
    # Null merge key: never matches, so the corrected values are inserted as
    # the new current version while the keyed copy closes the old one.
    unkeyed = j.filter(matched).select(*cols, pl.lit(None, pl.String).alias("mk_Index"),
                                       pl.lit(None, pl.Date).alias("mk_Date"))
    staged = pl.concat([unkeyed, keyed]).with_columns(
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("now"))
    source = staged.to_arrow().cast(pa.schema([
        ("Index", pa.string()), ("Date", pa.date32()), ("Close", pa.float64()),
        ("Adj_Close", pa.float64()), ("mk_Index", pa.string()), ("mk_Date", pa.date32()),
        ("now", UTC_US)]))

    metrics = (
        DeltaTable(path)
        .merge(source,
               predicate='t."Index" = s."mk_Index" AND t."Date" = s."mk_Date" AND t."current" = true',
               source_alias="s", target_alias="t")
        .when_matched_update(
            {q("current"): "false", q("end_date"): 's."now"'},
            predicate='t."Close" <> s."Close" OR t."Adj_Close" IS DISTINCT FROM s."Adj_Close"')
        .when_not_matched_insert({
            q("Index"): 's."Index"', q("Date"): 's."Date"', q("Close"): 's."Close"',
            q("Adj_Close"): 's."Adj_Close"', q("__START_AT"): 's."Date"',
            q("__END_AT"): "NULL", q("current"): "true",
            q("effective_date"): 's."now"', q("end_date"): "NULL"})
        .execute()
    )
    secs = time.perf_counter() - t0
    return stage(raw.height, secs, changes.stat().st_size,
                 rows_dropped=raw.height - good.height,
                 duplicates_dropped=good.height - ch.height, staged=staged.height,
                 unchanged=ch.height - j.height,
                 inserted=metrics.get("num_target_rows_inserted"),
                 updated=metrics.get("num_target_rows_updated"))


def repeated_merge(changes: Path, work: Path, runs: int) -> dict:
    """The MERGE `runs` times, each into a copy of the same history; the last run's
    figures, with the median (nearest rank) of every run's seconds."""
    table = work / "close_price_silver"
    before = work / "close_price_silver.before-merge"
    if runs > 1:
        shutil.copytree(table, before)
    results = []
    for i in range(runs):
        if i:
            shutil.rmtree(table)
            shutil.copytree(before, table)
        results.append(scd2_merge(changes, work))
    secs = sorted(r["seconds"] for r in results)
    return {**results[-1], "seconds": secs[(len(secs) + 1) // 2 - 1],
            "min_seconds": secs[0], "max_seconds": secs[-1],
            "runs_seconds": [r["seconds"] for r in results]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="folder of base CSV files")
    ap.add_argument("--changes", type=Path, required=True, help="CSV of changed and new rows")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for Delta tables")
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--merge-runs", type=int, default=1,
                    help="time the MERGE this many times in this process, each into the "
                         "same history; the runs after the first are warm")
    a = ap.parse_args()
    if not a.base.is_dir() or not a.changes.is_file():
        ap.error("--base must be a folder and --changes a file")

    a.work.mkdir(parents=True, exist_ok=True)
    for t in ("stocks", "close_price_silver", "close_price_silver.before-merge"):
        shutil.rmtree(a.work / t, ignore_errors=True)

    result = {"peer": "polars+deltalake", "versions": {
        "python": platform.python_version(), "polars": pl.__version__,
        "deltalake": deltalake.__version__, "pyarrow": pa.__version__}}
    result["csv_to_delta"], good = csv_to_delta(a.base, a.work)
    result["scd2_load"] = scd2_load(good, a.work, result["csv_to_delta"]["bytes"])
    del good
    result["scd2_merge"] = repeated_merge(a.changes, a.work, max(a.merge_runs, 1))

    out = json.dumps(result, indent=2)
    print(out)
    if a.json:
        a.json.write_text(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
