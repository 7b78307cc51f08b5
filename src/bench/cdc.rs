//! The AUTO CDC figure: a table of `keys` keys kept from a change feed, as SCD Type 1 and
//! as SCD Type 2, by a real pipeline (`CREATE FLOW … AS AUTO CDC INTO …`) run through the
//! crate's pipeline API ([`crate::pipeline::run_locked`], what `medallion pipeline run`
//! calls), one update per batch of changes.
//!
//! The feed: an initial load of one event per key, then `batches` batches, each of 1% of
//! the keys (distinct, chosen at random from a seeded generator), arriving in random key
//! order: most are updates of tracked columns, some change only an untracked column (a
//! Type 2 history updates its open version in place), some are deletes, and some are
//! late: their sequence is below the key's latest one, so that the history is re-cut
//! (Type 2) or the event is ignored (Type 1). Each batch is one Parquet file landed into
//! the folder that `STREAM read_files(...)` reads.
//!
//! Per batch it reports the AUTO CDC flow's time, its events per second, and the bytes it
//! rewrote: the sizes of the files the batch's Delta commits removed and added, in the
//! target and in its event store (`__apply_changes_storage_<table>`), read from the
//! commits' `_delta_log/<version>.json` (the Delta protocol's log, whatever wrote it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::common::Column;
use deltalake::datafusion::prelude::{Expr, SessionContext};

use crate::bundle::{Bundle, Settings};
use crate::catalog::{TableName, Warehouse};
use crate::generate::Rng;
use crate::pipeline::cdc::{shape::END_AT, store};
use crate::pipeline::{FlowReport, Selection, UpdateReport};

use super::report::{median_min_max, CdcBatch, CdcFigures, CdcMix, CdcType, Check};
use super::{data, BenchError};

/// Keys of the table, unless `--cdc-keys` says otherwise.
pub const DEFAULT_KEYS: u64 = 1_000_000;
/// Batches of changes after the initial load, unless `--cdc-batches` says otherwise.
pub const DEFAULT_BATCHES: usize = 5;
/// Percent of the keys changed by each batch.
pub const CHANGED_PERCENT: u64 = 1;
/// What each changed key's event is, in percent: the rest are updates of tracked columns.
const LATE_PERCENT: u64 = 10;
const DELETE_PERCENT: u64 = 5;
const UNTRACKED_PERCENT: u64 = 10;
/// The generator's seed: the same feed on every run.
const SEED: u64 = 0x00CD_C0DE;
/// Rows per Parquet row group of a feed file.
const ROW_GROUP: usize = 65_536;

/// The schema and table of the benchmark's pipeline.
const SCHEMA: &str = "cdc";
const TARGET: &str = "customers";
const FLOW: &str = "customers_cdc";

/// The size of the CDC figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdcOptions {
    /// Keys of the table; 0 leaves the figure out.
    pub keys: u64,
    /// Batches of changes after the initial load.
    pub batches: usize,
}

impl Default for CdcOptions {
    fn default() -> Self {
        CdcOptions {
            keys: DEFAULT_KEYS,
            batches: DEFAULT_BATCHES,
        }
    }
}

impl CdcOptions {
    pub fn enabled(&self) -> bool {
        self.keys > 0
    }

    fn changed_per_batch(&self) -> u64 {
        (self.keys * CHANGED_PERCENT / 100).max(1)
    }
}

/// Generates the feed under `dir`, and measures SCD Type 2 and Type 1 on it.
pub async fn run(options: CdcOptions, dir: &Path) -> Result<CdcFigures, BenchError> {
    let _ = std::fs::remove_dir_all(dir);
    eprintln!(
        "bench: AUTO CDC: generating {} keys and {} batches of {} changes ...",
        options.keys,
        options.batches,
        options.changed_per_batch()
    );
    let feed = Feed::generate(options, &dir.join("feed"))?;
    let mut types = Vec::new();
    for scd_type in [2, 1] {
        eprintln!("bench: AUTO CDC: SCD TYPE {scd_type}");
        types.push(measure(&feed, scd_type, &dir.join(format!("scd{scd_type}"))).await?);
    }
    Ok(CdcFigures {
        keys: options.keys,
        batches: options.batches,
        events_per_batch: options.changed_per_batch(),
        mix: feed.mix,
        live_keys: feed.live_keys,
        types,
    })
}

// ---------------------------------------------------------------------------------------
// The feed.

/// A key's state in the generator: whether it is live (its latest event is not a
/// delete), and whether a late event was already sent below its latest sequence.
const LIVE: u8 = 1;
const LATE_SENT: u8 = 2;

/// The change feed, as files, with what the tables must hold once it is applied.
struct Feed {
    /// The initial load, then each batch.
    files: Vec<PathBuf>,
    /// Events in each file.
    events: Vec<u64>,
    /// Keys whose latest event (by sequence) is not a delete, after the last batch.
    live_keys: u64,
    /// The kinds of events over every batch.
    mix: CdcMix,
}

/// One change event: the benchmark's own columns.
#[derive(Default)]
struct Events {
    id: Vec<i64>,
    name: Vec<String>,
    city: Vec<&'static str>,
    balance: Vec<f64>,
    last_login: Vec<i64>,
    op: Vec<&'static str>,
    seq: Vec<i64>,
}

const CITIES: [&str; 8] = [
    "Paris", "Lyon", "Rome", "Milan", "Berlin", "Hamburg", "Madrid", "Lisbon",
];

impl Events {
    /// An event of key `id` whose tracked values are those of its value generation
    /// `generation`, sequenced at `seq`.
    fn push(&mut self, id: u64, generation: u64, seq: u64, op: &'static str) {
        let h = Rng((id << 32) ^ generation).next_u64();
        self.id.push(id as i64);
        self.name.push(format!("customer {id}"));
        self.city.push(CITIES[(h % CITIES.len() as u64) as usize]);
        self.balance.push(((h >> 8) % 10_000_000) as f64 / 100.0);
        // Untracked by the Type 2 flow: a login moves it, with no new version.
        self.last_login.push(seq as i64);
        self.op.push(op);
        self.seq.push(seq as i64);
    }

    fn len(&self) -> usize {
        self.id.len()
    }

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("city", DataType::Utf8, false),
            Field::new("balance", DataType::Float64, false),
            Field::new("last_login", DataType::Int64, false),
            Field::new("op", DataType::Utf8, false),
            Field::new("seq", DataType::Int64, false),
        ]))
    }

    fn batch(&self, from: usize, to: usize) -> Result<RecordBatch, BenchError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id[from..to].to_vec())),
            Arc::new(StringArray::from_iter_values(&self.name[from..to])),
            Arc::new(StringArray::from_iter_values(&self.city[from..to])),
            Arc::new(Float64Array::from(self.balance[from..to].to_vec())),
            Arc::new(Int64Array::from(self.last_login[from..to].to_vec())),
            Arc::new(StringArray::from_iter_values(&self.op[from..to])),
            Arc::new(Int64Array::from(self.seq[from..to].to_vec())),
        ];
        RecordBatch::try_new(Self::schema(), columns).map_err(|e| BenchError::Data(e.to_string()))
    }

    /// Writes the events as one Parquet file.
    fn write(&self, path: &Path) -> Result<(), BenchError> {
        use deltalake::parquet::arrow::ArrowWriter;
        let fail = |e: &dyn std::fmt::Display| BenchError::Data(format!("{}: {e}", path.display()));
        let file = std::fs::File::create(path).map_err(|source| BenchError::Io {
            path: path.into(),
            source,
        })?;
        let mut writer = ArrowWriter::try_new(file, Self::schema(), None).map_err(|e| fail(&e))?;
        for from in (0..self.len()).step_by(ROW_GROUP) {
            let batch = self.batch(from, (from + ROW_GROUP).min(self.len()))?;
            writer.write(&batch).map_err(|e| fail(&e))?;
        }
        writer.close().map_err(|e| fail(&e))?;
        Ok(())
    }
}

impl Feed {
    /// Writes the initial load and every batch under `dir`, keeping per key its latest
    /// sequence, its value generation and whether it is live.
    fn generate(options: CdcOptions, dir: &Path) -> Result<Feed, BenchError> {
        std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
            path: dir.into(),
            source,
        })?;
        let n = options.keys as usize;
        let mut rng = Rng(SEED);
        // Sequences of events in order are even, and a late event's is its key's latest
        // less one: odd, so never equal to another event's of the key (LATE_SENT keeps
        // it to one per latest sequence).
        let mut clock: u64 = 0;
        let mut latest = vec![0u64; n];
        let mut generation = vec![0u64; n];
        let mut state = vec![LIVE; n];
        let mut files = Vec::new();
        let mut counts = Vec::new();

        let mut initial = Events::default();
        for (id, seq) in latest.iter_mut().enumerate() {
            clock += 2;
            *seq = clock;
            initial.push(id as u64, 0, clock, "U");
        }
        let path = dir.join("batch_0000.parquet");
        initial.write(&path)?;
        files.push(path);
        counts.push(initial.len() as u64);
        drop(initial);

        let changed = options.changed_per_batch().min(options.keys) as usize;
        let mut keys: Vec<u32> = (0..n as u32).collect();
        let mut mix = CdcMix::default();
        for b in 1..=options.batches {
            // Distinct keys, in random order: a partial Fisher–Yates shuffle.
            for i in 0..changed {
                let j = i + rng.below((n - i) as u64) as usize;
                keys.swap(i, j);
            }
            let mut events = Events::default();
            for &key in &keys[..changed] {
                let k = key as usize;
                let mut roll = rng.below(100);
                if roll < LATE_PERCENT && state[k] & LATE_SENT != 0 {
                    // A late event of this latest sequence was sent: an update instead.
                    roll = 99;
                }
                if roll < LATE_PERCENT {
                    // Late: below the latest sequence, with values of its own.
                    state[k] |= LATE_SENT;
                    events.push(key.into(), generation[k] | (1 << 40), latest[k] - 1, "U");
                    mix.late += 1;
                    continue;
                }
                clock += 2;
                latest[k] = clock;
                state[k] &= !LATE_SENT;
                if roll < LATE_PERCENT + DELETE_PERCENT {
                    state[k] &= !LIVE;
                    events.push(key.into(), generation[k], clock, "D");
                    mix.deletes += 1;
                } else if roll < LATE_PERCENT + DELETE_PERCENT + UNTRACKED_PERCENT {
                    // Only last_login changes (it follows the sequence).
                    state[k] |= LIVE;
                    events.push(key.into(), generation[k], clock, "U");
                    mix.untracked += 1;
                } else {
                    state[k] |= LIVE;
                    generation[k] += 1;
                    events.push(key.into(), generation[k], clock, "U");
                    mix.updates += 1;
                }
            }
            let path = dir.join(format!("batch_{b:04}.parquet"));
            events.write(&path)?;
            files.push(path);
            counts.push(events.len() as u64);
        }
        Ok(Feed {
            files,
            events: counts,
            live_keys: state.iter().filter(|s| *s & LIVE != 0).count() as u64,
            mix,
        })
    }

    fn total_events(&self) -> u64 {
        self.events.iter().sum()
    }
}

// ---------------------------------------------------------------------------------------
// The pipeline.

/// The pipeline's SQL: the feed as a streaming table, and the AUTO CDC flow into the
/// target, stored as `scd_type`.
///
/// The target is not partitioned. It is a 1M-row dimension table of a few tens of MB,
/// far below the size where Databricks advises partitioning (1 TB), and a bucket column
/// (`id % B`) would not prune: 1% of the keys chosen at random touch every bucket while
/// B is below their number. Partitions would only multiply the files, and the MERGEs
/// (one per 256 partition values). The bytes rewritten per batch are therefore what a
/// copy-on-write MERGE costs on such a table: every file holding a changed key.
fn sql(scd_type: u8, landing: &Path) -> String {
    // Type 2 keeps no version for a login: last_login changes update the open version.
    let track = if scd_type == 2 {
        "\nTRACK HISTORY ON * EXCEPT (last_login)"
    } else {
        ""
    };
    format!(
        "-- The change feed: one Parquet file per batch.
CREATE OR REFRESH STREAMING TABLE feed AS
SELECT id, name, city, balance, last_login, op, seq
FROM STREAM read_files('{landing}', format => 'parquet', stableMs => '0');

CREATE OR REFRESH STREAMING TABLE {TARGET};

CREATE FLOW {FLOW} AS AUTO CDC INTO {TARGET}
FROM STREAM(feed)
KEYS (id)
APPLY AS DELETE WHEN op = 'D'
SEQUENCE BY seq
COLUMNS * EXCEPT (op)
STORED AS SCD TYPE {scd_type}{track};
",
        landing = landing.display()
    )
}

/// A bundle of one pipeline, its tables under `dir`.
fn bundle(dir: &Path) -> String {
    let path = |p: &str| dir.join(p).display().to_string();
    format!(
        "bundle:
  name: cdc_bench
variables:
  warehouse_dir:
    description: the tables
    default: {warehouse}
  state_dir:
    description: the progress
    default: {state}
resources:
  pipelines:
    cdc:
      name: cdc
      schema: {SCHEMA}
      libraries:
        - glob: {{ include: transformations/*.sql }}
targets:
  dev:
    default: true
",
        warehouse = path("warehouse"),
        state = path("state"),
    )
}

/// A workspace of one SCD type: its bundle, landing folder and warehouse.
struct Workspace {
    dir: PathBuf,
    settings: Settings,
    warehouse: Warehouse,
}

impl Workspace {
    fn create(dir: &Path, scd_type: u8) -> Result<Workspace, BenchError> {
        let landing = dir.join("landing");
        let sql_dir = dir.join("transformations");
        for d in [&landing, &sql_dir] {
            std::fs::create_dir_all(d).map_err(|source| BenchError::Io {
                path: d.clone(),
                source,
            })?;
        }
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text).map_err(|source| BenchError::Io { path, source })
        };
        write(sql_dir.join("cdc.sql"), sql(scd_type, &landing))?;
        let file = dir.join("medallion.yml");
        write(file.clone(), bundle(dir))?;
        // No MEDALLION_VAR_* overrides: the workspace's bundle is the benchmark's own.
        let settings = Bundle::load(&file)?.resolve(None, &[])?;
        let spec = crate::pipeline::select(&settings, None).map_err(|e| pipeline_error(dir, e))?;
        let root = settings
            .warehouse
            .catalog_path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let warehouse = Warehouse::new(root, &spec.catalog);
        Ok(Workspace {
            dir: dir.into(),
            settings,
            warehouse,
        })
    }

    async fn update(&self) -> Result<UpdateReport, crate::pipeline::PipelineError> {
        let spec = crate::pipeline::select(&self.settings, None)?;
        crate::pipeline::run_locked(&self.settings, spec, &Selection::default()).await
    }

    fn target(&self) -> TableName {
        TableName::new(SCHEMA, TARGET)
    }

    fn store(&self) -> TableName {
        store::name(&self.target())
    }
}

fn pipeline_error(dir: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Pipeline {
        dir: dir.into(),
        reason: e.to_string(),
    }
}

/// Lands each file of the feed and runs an update for it: the initial load, then each
/// batch, measured.
async fn measure(feed: &Feed, scd_type: u8, dir: &Path) -> Result<CdcType, BenchError> {
    let ws = Workspace::create(dir, scd_type)?;
    let mut runs = Vec::new();
    for (file, &events) in feed.files.iter().zip(&feed.events) {
        data::land(file, &ws.dir.join("landing"))?;
        let target = ws.warehouse.path(&ws.target());
        let store = ws.warehouse.path(&ws.store());
        let before = (latest_version(&target), latest_version(&store));
        let started = Instant::now();
        let report = ws.update().await.map_err(|e| pipeline_error(dir, e))?;
        let update_seconds = started.elapsed().as_secs_f64();
        if let Some(f) = report.failed() {
            return Err(pipeline_error(
                dir,
                format!(
                    "flow `{}` failed: {}",
                    f.flow,
                    f.error.as_deref().unwrap_or_default()
                ),
            ));
        }
        let flow = flow_report(&report, dir)?;
        let (target_removed, target_added, target_commits) =
            rewritten(&target, before.0, latest_version(&target))?;
        let (store_removed, store_added, store_commits) =
            rewritten(&store, before.1, latest_version(&store))?;
        let seconds = flow.elapsed_ms as f64 / 1e3;
        runs.push(CdcBatch {
            events,
            events_applied: flow.rows_written,
            seconds,
            update_seconds,
            rows_per_s: if seconds > 0.0 {
                events as f64 / seconds
            } else {
                0.0
            },
            target_bytes_removed: target_removed,
            target_bytes_added: target_added,
            target_commits,
            store_bytes_removed: store_removed,
            store_bytes_added: store_added,
            store_commits,
        });
    }
    let initial = runs.remove(0);
    let target = open(&ws, &ws.target())
        .await?
        .ok_or_else(|| pipeline_error(dir, "the update wrote no target table"))?;
    let store_table = open(&ws, &ws.store()).await?;
    let checks = reconcile(&ws, scd_type, feed, &target, store_table.as_ref()).await?;
    let median = |f: fn(&CdcBatch) -> f64| median_min_max(&runs.iter().map(f).collect::<Vec<_>>());
    let (seconds, min_seconds, max_seconds) = median(|b| b.seconds);
    Ok(CdcType {
        scd_type,
        seconds,
        min_seconds,
        max_seconds,
        rows_per_s: median(|b| b.rows_per_s).0,
        target_bytes_rewritten: median(|b| b.target_bytes_rewritten() as f64).0 as u64,
        store_bytes_rewritten: median(|b| b.store_bytes_rewritten() as f64).0 as u64,
        target_bytes: crate::delta::data_bytes(&target),
        target_files: target
            .snapshot()
            .map_or(0, |s| s.log_data().into_iter().count()) as u64,
        store_bytes: store_table.as_ref().map_or(0, crate::delta::data_bytes),
        target_rows: count(&target, TARGET, false).await?,
        initial: Some(initial),
        batches: runs,
        checks,
    })
}

/// The AUTO CDC flow's report in the update's.
fn flow_report<'r>(report: &'r UpdateReport, dir: &Path) -> Result<&'r FlowReport, BenchError> {
    report
        .flows
        .iter()
        .find(|f| f.flow == FLOW)
        .ok_or_else(|| pipeline_error(dir, format!("the update has no flow `{FLOW}`")))
}

/// The checks that the tables are what the feed must give: as many current rows as
/// live keys, and (Type 2) every event in the event store.
async fn reconcile(
    ws: &Workspace,
    scd_type: u8,
    feed: &Feed,
    target: &deltalake::DeltaTable,
    store_table: Option<&deltalake::DeltaTable>,
) -> Result<Vec<Check>, BenchError> {
    let current = count(target, TARGET, scd_type == 2).await?;
    let what = if scd_type == 2 {
        format!("SCD TYPE 2 current versions ({END_AT} IS NULL)")
    } else {
        "SCD TYPE 1 rows".into()
    };
    let mut checks = vec![Check {
        name: format!(
            "{what} = live keys of the feed ({})",
            ws.warehouse.qualified(&ws.target())
        ),
        ok: current == feed.live_keys,
        detail: format!("{current} = {}", feed.live_keys),
    }];
    // The Type 1 store keeps each key's last event, a deleted key's too (a tombstone,
    // kept two days): every key of the initial load.
    if scd_type == 1 {
        let stored = match store_table {
            Some(t) => count(t, "the store", false).await?,
            None => 0,
        };
        let keys = feed.events[0];
        checks.push(Check {
            name: format!(
                "SCD TYPE 1 store rows = keys of the feed, live or deleted ({})",
                ws.warehouse.qualified(&ws.store())
            ),
            ok: stored == keys,
            detail: format!("{stored} = {keys}"),
        });
    }
    // The Type 2 flow keeps every event, late and untracked ones included.
    if scd_type == 2 {
        let stored = match store_table {
            Some(t) => count(t, "the event store", false).await?,
            None => 0,
        };
        checks.push(Check {
            name: format!(
                "SCD TYPE 2 event store rows = events of the feed ({})",
                ws.warehouse.qualified(&ws.store())
            ),
            ok: stored == feed.total_events(),
            detail: format!("{stored} = {}", feed.total_events()),
        });
    }
    Ok(checks)
}

/// The table, if the pipeline made it.
async fn open(
    ws: &Workspace,
    name: &TableName,
) -> Result<Option<deltalake::DeltaTable>, BenchError> {
    if !ws.warehouse.has_table(name) {
        return Ok(None);
    }
    crate::sql::open(&ws.warehouse, name)
        .await
        .map(Some)
        .map_err(|e| BenchError::Table {
            table: ws.warehouse.qualified(name),
            reason: e.to_string(),
        })
}

/// The table's rows: all, or only the open versions (`__END_AT IS NULL`).
async fn count(
    table: &deltalake::DeltaTable,
    name: &str,
    open_only: bool,
) -> Result<u64, BenchError> {
    let fail = |e: &dyn std::fmt::Display| BenchError::Table {
        table: name.into(),
        reason: e.to_string(),
    };
    let ctx: SessionContext = crate::sql::session(&[("t", table)])
        .await
        .map_err(|e| fail(&e))?;
    let mut df = ctx.table("t").await.map_err(|e| fail(&e))?;
    if open_only {
        df = df
            .filter(Expr::Column(Column::new_unqualified(END_AT)).is_null())
            .map_err(|e| fail(&e))?;
    }
    Ok(df.count().await.map_err(|e| fail(&e))? as u64)
}

// ---------------------------------------------------------------------------------------
// The Delta log.

/// The latest version in the table's `_delta_log`, or -1 without one.
fn latest_version(table: &Path) -> i64 {
    std::fs::read_dir(table.join("_delta_log"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix(".json")?.parse::<i64>().ok()
                })
                .max()
                .unwrap_or(-1)
        })
        .unwrap_or(-1)
}

/// The bytes of the files removed and added by the commits after `from` up to `to`, and
/// how many commits there were.
fn rewritten(table: &Path, from: i64, to: i64) -> Result<(u64, u64, u64), BenchError> {
    let (mut removed, mut added) = (0, 0);
    for version in from + 1..=to {
        let path = table.join("_delta_log").join(format!("{version:020}.json"));
        let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
        let (r, a) = commit_bytes(&text, table);
        removed += r;
        added += a;
    }
    Ok((removed, added, (to - from).max(0) as u64))
}

/// The sizes of a commit's `remove` and `add` actions. A `remove` may leave out its size
/// (it is optional in the protocol): the file, still there until a VACUUM, says it.
fn commit_bytes(commit: &str, table: &Path) -> (u64, u64) {
    let (mut removed, mut added) = (0, 0);
    for action in commit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        if let Some(size) = action["add"]["size"].as_u64() {
            added += size;
        }
        let remove = &action["remove"];
        if remove.is_object() {
            removed += remove["size"].as_u64().unwrap_or_else(|| {
                remove["path"]
                    .as_str()
                    .map_or(0, |p| data::file_size(&table.join(p)))
            });
        }
    }
    (removed, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_counts_its_removes_and_adds() {
        let commit = r#"{"commitInfo":{"operation":"MERGE"}}
{"remove":{"path":"a.parquet","size":100,"dataChange":true}}
{"remove":{"path":"gone.parquet","dataChange":true}}
{"add":{"path":"b.parquet","size":70,"dataChange":true}}
{"add":{"path":"c.parquet","size":50,"dataChange":true}}
{"txn":{"appId":"f","version":3}}"#;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(commit_bytes(commit, dir.path()), (100, 120));
        std::fs::write(dir.path().join("gone.parquet"), [0u8; 9]).unwrap();
        assert_eq!(commit_bytes(commit, dir.path()), (109, 120));
    }

    #[test]
    fn the_feed_changes_one_percent_of_distinct_keys_per_batch() {
        let dir = tempfile::tempdir().unwrap();
        let options = CdcOptions {
            keys: 5_000,
            batches: 3,
        };
        let feed = Feed::generate(options, dir.path()).unwrap();
        assert_eq!(feed.events, vec![5_000, 50, 50, 50]);
        let m = feed.mix;
        assert_eq!(m.late + m.deletes + m.untracked + m.updates, 150);
        assert!(m.late > 0 && m.deletes > 0 && m.untracked > 0, "{m:?}");
        assert!(feed.live_keys < 5_000 && feed.live_keys >= 5_000 - m.deletes);
        // The same feed every time.
        let again = Feed::generate(options, &dir.path().join("again")).unwrap();
        assert_eq!((again.live_keys, again.mix), (feed.live_keys, feed.mix));
    }

    #[test]
    fn only_the_type_2_flow_leaves_an_untracked_column_out_of_history() {
        let landing = Path::new("/l");
        assert!(sql(2, landing).contains("STORED AS SCD TYPE 2\nTRACK HISTORY ON"));
        assert!(sql(1, landing).contains("STORED AS SCD TYPE 1;"));
    }
}
