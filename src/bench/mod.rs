//! `medallion bench`: figures anyone can rerun, on generated data, for every broker.
//!
//! Each measured run is a real `medallion run` in a child process, on the shipped job,
//! so the figures are what a user gets: wall time from process start to exit, the peak
//! RSS of that process (its own `VmHWM`, from its report), and each task's rows, bytes
//! and time from the run's JSON report. Per broker it measures:
//! - the whole job from an empty warehouse (every stage, end to end, memory);
//! - one new day per index into that warehouse (cost should follow the new data);
//! - the SCD2 MERGE of 10k changed and new rows into a 100k-row history: the median of
//!   [`MERGE_RUNS`] runs of the AUTO CDC flow close_price, each from the same warehouse;
//! - freshness: a file landing → its rows in gold, in `--continuous` mode.
//!
//! The brokers: the embedded tansu with sqlite storage, run by the child as users run it;
//! tansu with memory storage and Apache Kafka, run by the benchmark itself, so their
//! memory is not in the child's figure. `--peers` adds Python deltalake + polars and the
//! original pipeline on Spark, on the same files (see [`peers`]).
//!
//! Apart from the brokers, [`cdc`] measures an AUTO CDC flow keeping a 1M-key table from
//! a change feed, as SCD Type 2 and Type 1: rows/s and the bytes each batch rewrites. Its
//! pipelines run in the benchmark's process, through the pipeline API, and its time is
//! the flow's own, from the update's report.

pub mod cdc;
pub mod child;
pub mod data;
pub mod peers;
pub mod report;
pub mod sdp;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::broker::{BrokerError, BrokerStorage, EmbeddedBroker};
use crate::bundle::job::TaskKind;
use crate::bundle::{Bundle, BundleError, Override, Settings};
use crate::kafka_server::{KafkaServer, KafkaServerError};
use crate::progress::TaskSummary;

use child::RunCommand;
use data::DataSet;
use report::{BenchReport, BrokerFigures, Check, Freshness, Machine, Merge, Run};

/// How long one freshness file may take to reach gold before the benchmark gives up.
const FRESHNESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Runs of the SCD2 MERGE figure, on each side: its median is reported.
pub const MERGE_RUNS: usize = 5;

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate the benchmark's data: {0}")]
    Data(String),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    KafkaServer(#[from] KafkaServerError),
    #[error("a benchmark run failed; its output is in {log}")]
    RunFailed { log: PathBuf },
    #[error("a benchmark run wrote no report; its output is in {log}")]
    NoReport { log: PathBuf },
    #[error("cannot read {table}: {reason}")]
    Table { table: String, reason: String },
    #[error("{what} did not happen within {timeout:?}; the run's output is in {log}")]
    Timeout {
        what: String,
        timeout: Duration,
        log: PathBuf,
    },
    #[error("unknown peer `{0}`: use polars, spark or sdp (or --peers alone for all)")]
    UnknownPeer(String),
    #[error("unknown broker `{0}`: use memory, sqlite or kafka")]
    UnknownBroker(String),
    #[error("the AUTO CDC pipeline in {dir} failed: {reason}")]
    Pipeline { dir: PathBuf, reason: String },
    #[error("peer {peer} failed: {reason}. Its output is in {log}")]
    Peer {
        peer: String,
        reason: String,
        log: PathBuf,
    },
}

/// A broker the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// tansu in the benchmark process, memory storage.
    Memory,
    /// tansu embedded in the run, sqlite storage: the default.
    Sqlite,
    /// Apache Kafka (KRaft), from Maven Central's jars.
    Kafka,
}

impl FromStr for BrokerKind {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(BrokerKind::Memory),
            "sqlite" => Ok(BrokerKind::Sqlite),
            "kafka" => Ok(BrokerKind::Kafka),
            other => Err(BenchError::UnknownBroker(other.into())),
        }
    }
}

impl BrokerKind {
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Memory => "memory",
            BrokerKind::Sqlite => "sqlite",
            BrokerKind::Kafka => "kafka",
        }
    }

    /// tansu 0.6.0's memory engine counts the first produce batch of each partition as
    /// one record: its high watermark stays short, and readers never see the rest.
    fn caveat(self) -> Option<&'static str> {
        (self == BrokerKind::Memory).then_some(
            "tansu 0.6.0's memory engine loses all but one record of the first produce batch \
             of each partition (its high watermark counts that batch as one record), so the \
             stages after CSV → Kafka see fewer rows; use its CSV → Kafka figure, and the \
             per-row rates of the others",
        )
    }

    fn description(self) -> &'static str {
        match self {
            BrokerKind::Memory => "tansu, memory storage, in the benchmark process (not in the run's RSS)",
            BrokerKind::Sqlite => "tansu, sqlite storage, embedded in the run (the default; its start and memory are in the figures)",
            BrokerKind::Kafka => "Apache Kafka 4.1 KRaft, a separate JVM (not in the run's RSS)",
        }
    }
}

/// What to measure, and where.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rows: u64,
    pub indices: u32,
    pub brokers: Vec<BrokerKind>,
    pub peers: Peers,
    /// Working folder: data, warehouses, logs (emptied first).
    pub dir: PathBuf,
    /// The bundle whose job is measured, and its target.
    pub bundle: PathBuf,
    pub target: Option<String>,
    pub freshness_files: usize,
    pub interval: Duration,
    /// Apache Kafka's jars.
    pub kafka_jars: PathBuf,
    /// The folder holding `bench/peers/` (the project).
    pub project_dir: PathBuf,
    /// The command line, recorded in the report.
    pub command: String,
    /// The AUTO CDC figure's size (`keys` 0 leaves it out).
    pub cdc: cdc::CdcOptions,
    /// Only the AUTO CDC figure: no broker, no peer.
    pub cdc_only: bool,
}

/// Which peers `--peers` runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peers {
    /// Python deltalake + polars.
    pub polars: bool,
    /// The original pipeline on Spark, against Apache Kafka.
    pub spark: bool,
    /// The weather example on Spark Declarative Pipelines.
    pub sdp: bool,
}

impl Peers {
    /// `None`: no `--peers`; `all`, or a list of `polars`, `spark`, `sdp`.
    pub fn parse(names: Option<&[String]>) -> Result<Peers, BenchError> {
        let mut p = Peers::default();
        for name in names.unwrap_or_default() {
            match name.trim() {
                "all" | "" => {
                    p = Peers {
                        polars: true,
                        spark: true,
                        sdp: true,
                    }
                }
                "polars" => p.polars = true,
                "spark" => p.spark = true,
                "sdp" => p.sdp = true,
                other => return Err(BenchError::UnknownPeer(other.into())),
            }
        }
        Ok(p)
    }

    pub fn any(&self) -> bool {
        self.polars || self.spark || self.sdp
    }
}

/// A broker the benchmark started itself, kept alive while it is measured.
enum Host {
    None,
    Tansu(EmbeddedBroker),
    Kafka(KafkaServer),
}

impl Host {
    fn bootstrap(&self) -> String {
        match self {
            Host::None => String::new(),
            Host::Tansu(b) => b.bootstrap(),
            Host::Kafka(k) => k.bootstrap().to_string(),
        }
    }
}

/// Runs the benchmark and returns every figure.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    std::fs::create_dir_all(&options.dir).map_err(|source| BenchError::Io {
        path: options.dir.clone(),
        source,
    })?;
    let mut report = BenchReport {
        command: options.command.clone(),
        machine: Machine::describe(),
        rows: options.rows,
        indices: options.indices,
        input_mb: 0.0,
        batch_rows: batch_rows(options)?,
        brokers: Vec::new(),
        skipped: Vec::new(),
        peers: None,
        ratios: Vec::new(),
        cdc: None,
    };
    if !options.cdc_only {
        brokers_and_peers(options, &mut report).await?;
    }
    if options.cdc.enabled() {
        report.cdc = Some(cdc::run(options.cdc, &options.dir.join("cdc")).await?);
    }
    Ok(report)
}

/// The job on each broker, then the peers.
async fn brokers_and_peers(
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    eprintln!("bench: generating {} rows ...", options.rows);
    let data = data::prepare(
        &options.dir.join("data"),
        options.rows,
        options.indices,
        options.freshness_files,
    )?;
    report.input_mb = data.base_bytes as f64 / 1e6;
    for &kind in &options.brokers {
        let host = match kind {
            BrokerKind::Sqlite => Host::None,
            BrokerKind::Memory => Host::Tansu(EmbeddedBroker::start(BrokerStorage::Memory).await?),
            BrokerKind::Kafka => {
                match KafkaServer::start(
                    &options.kafka_jars,
                    &options.dir.join("kafka-server"),
                    None,
                ) {
                    Ok(server) => Host::Kafka(server),
                    Err(e) => {
                        eprintln!("bench: skipping Apache Kafka: {e}");
                        report
                            .skipped
                            .push((kind.name().to_string(), e.to_string()));
                        continue;
                    }
                }
            }
        };
        eprintln!("bench: broker {} ...", kind.name());
        let bench = BrokerBench {
            options,
            data: &data,
            kind,
            bootstrap: host.bootstrap(),
        };
        report.brokers.push(bench.measure().await?);
        drop(host);
    }
    if options.peers.any() {
        peers::run(options, &data, report).await?;
    }
    Ok(())
}

/// The figures of one broker.
struct BrokerBench<'a> {
    options: &'a BenchOptions,
    data: &'a DataSet,
    kind: BrokerKind,
    bootstrap: String,
}

/// A warehouse of its own: landing folder, tables, state, topic.
struct Workspace {
    root: PathBuf,
    run: RunCommand,
}

impl Workspace {
    fn landing(&self) -> PathBuf {
        self.root.join("landing")
    }

    /// Runs the job, or only `task` of it.
    async fn run(
        &self,
        task: Option<&str>,
    ) -> Result<(child::ChildRun, Vec<TaskSummary>), BenchError> {
        let done = self.run.run(task).await?;
        let summaries = done
            .report
            .as_ref()
            .map(|r| r.summaries.clone())
            .ok_or_else(|| BenchError::NoReport {
                log: self.run.log.clone(),
            })?;
        Ok((done, summaries))
    }

    async fn measured(&self, task: Option<&str>) -> Result<(Run, Vec<TaskSummary>), BenchError> {
        let (done, summaries) = self.run(task).await?;
        let report = done.report.as_ref().expect("checked by run");
        let run = Run::from_report(report, done.wall.as_secs_f64(), done.peak_rss);
        Ok((run, summaries))
    }

    /// The workspace's settings, as the child resolves them.
    fn settings(&self, options: &BenchOptions) -> Result<Settings, BenchError> {
        let vars = self.run.vars.iter().map(|(name, value)| Override {
            name: name.clone(),
            value: value.clone(),
            origin: "medallion bench".into(),
        });
        resolve(options, vars)
    }
}

impl BrokerBench<'_> {
    fn workspace(&self, name: &str) -> Result<Workspace, BenchError> {
        let root = self.options.dir.join(self.kind.name()).join(name);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|source| BenchError::Io {
            path: root.clone(),
            source,
        })?;
        let path = |p: &str| root.join(p).display().to_string();
        let vars = vec![
            ("landing_dir".to_string(), path("landing")),
            ("warehouse_dir".into(), path("warehouse")),
            ("state_dir".into(), path("state")),
            ("kafka_bootstrap_servers".into(), self.bootstrap.clone()),
            // Brokers the benchmark hosts serve every workspace: a topic each.
            (
                "kafka_topic".into(),
                format!("bench_{}_{name}", self.kind.name()),
            ),
        ];
        Ok(Workspace {
            run: RunCommand {
                bundle: self.options.bundle.clone(),
                target: self.options.target.clone(),
                vars,
                log: root.join("run.log"),
                report: root.join("report.json"),
            },
            root,
        })
    }

    async fn measure(&self) -> Result<BrokerFigures, BenchError> {
        let mut checks = Vec::new();

        // The whole job from an empty warehouse, then one more day.
        let ws = self.workspace("main")?;
        data::land_all(&self.data.base, &ws.landing())?;
        eprintln!("bench:   whole job over {} rows", self.data.base_rows);
        let (full, summaries) = ws.measured(None).await?;
        checks.extend(reconcile(&summaries, self.data.base_rows));
        data::land_all(&self.data.day, &ws.landing())?;
        eprintln!("bench:   incremental: one new day");
        let (incremental, summaries) = ws.measured(None).await?;
        checks.extend(reconcile(&summaries, u64::from(self.options.indices)));

        // The SCD2 MERGE of 10k changed and new rows into a 100k-row history. The
        // changes reach bronze once; then the pipeline runs, and its close_price flow is
        // timed, as the peer's MERGE is, MERGE_RUNS times from copies of the same
        // warehouse.
        let ws = self.workspace("merge")?;
        data::land_all(&self.data.merge_base, &ws.landing())?;
        eprintln!("bench:   SCD2 MERGE, {MERGE_RUNS} runs");
        ws.run(None).await?;
        data::land(&self.data.merge_changes, &ws.landing())?;
        ws.run(Some("ingest")).await?;
        ws.run(Some("bronze")).await?;
        let warehouse = ws.root.join("warehouse");
        let before = ws.root.join("warehouse-before-merge");
        data::copy_dir(&warehouse, &before)?;
        let mut runs_seconds = Vec::new();
        let mut versions_written = 0;
        for run in 0..MERGE_RUNS {
            if run > 0 {
                data::copy_dir(&before, &warehouse)?;
            }
            // The AUTO CDC flow close_price, within its pipeline's update (stocks_silver
            // takes the other core meanwhile).
            let (merged, summaries) = ws.measured(Some("silver_gold")).await?;
            runs_seconds.push(merged.stage("close_price").map_or(0.0, |s| s.seconds));
            versions_written = summaries
                .iter()
                .flat_map(TaskSummary::with_flows)
                .find(|s| s.task == "close_price")
                .map_or(0, |s| s.rows_written);
        }
        let merge = Merge::from_runs(
            data::MERGE_HISTORY_ROWS,
            data::MERGE_CHANGE_ROWS,
            runs_seconds,
            versions_written,
        );

        let freshness = self.freshness().await?;
        Ok(BrokerFigures {
            broker: self.kind.name().into(),
            description: self.kind.description().into(),
            full,
            incremental,
            merge,
            freshness,
            checks,
            caveat: self.kind.caveat().map(String::from),
        })
    }

    /// Lands the freshness files one at a time into a running `--continuous` job and
    /// times each until gold shows its day.
    async fn freshness(&self) -> Result<Freshness, BenchError> {
        let ws = self.workspace("freshness")?;
        data::land_all(&self.data.fresh_base, &ws.landing())?;
        ws.run(None).await?;
        let settings = ws.settings(self.options)?;
        let gold = gold_table(&settings)?;
        let url = settings
            .warehouse
            .url(&gold)
            .map_err(|e| BenchError::Table {
                table: gold.to_string(),
                reason: e.to_string(),
            })?;
        let mut table = deltalake::open_table(url)
            .await
            .map_err(|e| BenchError::Table {
                table: gold.to_string(),
                reason: e.to_string(),
            })?;
        eprintln!(
            "bench:   freshness over {} files",
            self.data.fresh_files.len()
        );
        let running = ws.run.start_continuous(self.options.interval)?;
        let mut samples = Vec::new();
        for (file, date) in &self.data.fresh_files {
            let landed = Instant::now();
            data::land(file, &ws.landing())?;
            wait_for_day(&mut table, *date, landed, &ws.run.log).await?;
            samples.push(landed.elapsed().as_secs_f64());
        }
        running.stop().await?;
        Ok(Freshness::from_samples(
            self.options.interval.as_millis() as u64,
            samples,
        ))
    }
}

/// Polls `table` until it holds rows of `date`.
async fn wait_for_day(
    table: &mut deltalake::DeltaTable,
    date: chrono::NaiveDate,
    since: Instant,
    log: &Path,
) -> Result<(), BenchError> {
    let sql = format!("SELECT count(*) FROM t WHERE \"Date\" = DATE '{date}'");
    let mut seen = None;
    loop {
        if since.elapsed() > FRESHNESS_TIMEOUT {
            return Err(BenchError::Timeout {
                what: format!("rows of {date} in gold"),
                timeout: FRESHNESS_TIMEOUT,
                log: log.into(),
            });
        }
        // A commit in progress can make a read fail: poll again.
        if table.update_incremental(None).await.is_ok() && table.version() != seen {
            seen = table.version();
            if let Ok(batches) = crate::sql::query_table(table, &sql).await {
                if first_i64(&batches).unwrap_or(0) > 0 {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The `batch_rows` the runs use: the bundle's, or a `MEDALLION_VAR_batch_rows` that
/// the child runs inherit.
fn batch_rows(options: &BenchOptions) -> Result<usize, BenchError> {
    Ok(resolve(options, std::iter::empty())?.batch_rows)
}

/// The bundle's settings as a child run resolves them: the `MEDALLION_VAR_*` it inherits,
/// then its `--var`s (`vars`).
fn resolve(
    options: &BenchOptions,
    vars: impl IntoIterator<Item = Override>,
) -> Result<Settings, BenchError> {
    let mut overrides = Override::from_process_env();
    overrides.extend(vars);
    Ok(Bundle::load(&options.bundle)?.resolve(options.target.as_deref(), &overrides)?)
}

/// The gold table of the bundle's job: the last table that the pipeline of its
/// `pipeline_task` fills (in the stock bundle, gold.updated_stocks_gold).
fn gold_table(settings: &Settings) -> Result<crate::catalog::TableName, BenchError> {
    let missing = |reason: String| BenchError::Table {
        table: "gold".into(),
        reason,
    };
    let pipeline = settings
        .jobs
        .values()
        .flat_map(|j| &j.tasks)
        .find_map(|t| match &t.kind {
            TaskKind::PipelineTask(p) => Some(p.pipeline_id.clone()),
            _ => None,
        })
        .ok_or_else(|| missing("the bundle's job has no pipeline_task".into()))?;
    let spec =
        crate::pipeline::select(settings, Some(&pipeline)).map_err(|e| missing(e.to_string()))?;
    let graph = crate::pipeline::load(spec).map_err(|e| missing(e.to_string()))?;
    graph
        .dataset_order()
        .into_iter()
        .rev()
        .find(|d| d.table.is_some())
        .map(|d| d.name.table_name())
        .ok_or_else(|| missing(format!("the pipeline `{pipeline}` has no table")))
}

/// The run's reconciliations: landing lines = Kafka + ingest quarantine, bronze = the
/// records sent, bronze = silver + silver quarantine + duplicates.
fn reconcile(summaries: &[TaskSummary], lines: u64) -> Vec<Check> {
    let task = |name: &str| {
        summaries
            .iter()
            .flat_map(TaskSummary::with_flows)
            .find(|s| s.task == name)
    };
    let mut checks = Vec::new();
    if let (Some(ingest), Some(bronze)) = (task("ingest"), task("bronze")) {
        let accounted = ingest.rows_written + ingest.rows_quarantined;
        checks.push(Check {
            name: "landing lines = Kafka records + ingest quarantine".into(),
            ok: accounted == lines,
            detail: format!(
                "{lines} = {} + {}",
                ingest.rows_written, ingest.rows_quarantined
            ),
        });
        checks.push(Check {
            name: "bronze rows = Kafka records sent".into(),
            ok: bronze.rows_written == ingest.rows_written,
            detail: format!("{} = {}", bronze.rows_written, ingest.rows_written),
        });
    }
    if let Some(stocks) = task("stocks_silver") {
        checks.push(Check {
            name: "bronze = stocks_silver + quarantine + duplicates".into(),
            ok: stocks.rows_read
                == stocks.rows_written + stocks.rows_quarantined + stocks.rows_dropped,
            detail: format!(
                "{} = {} + {} + {}",
                stocks.rows_read, stocks.rows_written, stocks.rows_quarantined, stocks.rows_dropped
            ),
        });
    }
    checks
}

/// The first value of a one-number query result (`SELECT count(*) ...`).
fn first_i64(batches: &[deltalake::arrow::record_batch::RecordBatch]) -> Option<i64> {
    batches.first().and_then(|b| {
        b.column(0)
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .map(|a| a.value(0))
    })
}

#[cfg(test)]
mod peer_tests {
    use super::*;

    #[test]
    fn peers_are_all_or_those_named() {
        assert!(!Peers::parse(None).unwrap().any());
        let all = Peers::parse(Some(&["all".into()])).unwrap();
        assert!(all.polars && all.spark && all.sdp);
        let sdp = Peers::parse(Some(&["sdp".into()])).unwrap();
        assert!(sdp.sdp && !sdp.polars && !sdp.spark);
        let e = Peers::parse(Some(&["duckdb".into()])).unwrap_err();
        assert!(e.to_string().contains("use polars, spark or sdp"), "{e}");
    }
}
