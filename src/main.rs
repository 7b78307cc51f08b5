//! The `medallion` command line.

#![allow(clippy::result_large_err)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use std::io::Write;
use std::time::Duration;

use medallion::bundle::{Bundle, Override, Settings, BUNDLE_FILE};
use medallion::deploy::Deployment;
use medallion::generate::{generate, GenerateOptions};
use medallion::job::{self, RunOptions, RunReport};
use medallion::lock::RUN_LOCK_WAIT;
use medallion::progress::Progress;
use medallion::reset::{ResetPlan, Scope};
use medallion::secrets::mask;
use medallion::sql;

/// medallion: CSV landing files → Kafka → Bronze Delta table, exactly once, in one binary.
///
/// Configuration comes from the bundle file (medallion.yml): its variables, targets
/// (dev, prod) and Kafka settings. With kafka_bootstrap_servers empty, medallion starts an
/// embedded Kafka-protocol broker (tansu) that keeps its data under state_dir.
#[derive(Parser, Debug)]
#[command(name = "medallion", version, about, long_about)]
struct Cli {
    /// The bundle file. Relative paths inside it are taken from its folder.
    #[arg(long, global = true, default_value = BUNDLE_FILE, env = "MEDALLION_BUNDLE")]
    bundle: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the job kafka_stream_job: its tasks as a DAG, on everything available now, then exit.
    ///
    /// ingest → bronze → silver_gold. ingest sends new CSV files of landing_dir to Kafka;
    /// bronze appends new Kafka records to bronze.bronze; silver_gold runs the pipeline
    /// `stocks` (transformations/*.sql): stocks_silver, the SCD Type 2 history
    /// close_price_silver (an AUTO CDC flow), current_close_silver, stocks_close_silver and
    /// gold.updated_stocks_gold.
    /// Bad rows go to quarantine.*. A killed run can simply be run again: nothing is lost
    /// or duplicated. Exits non-zero, naming the task, if a task failed.
    Run {
        /// The target (catalog) to run, e.g. dev or prod. Default: the target marked default.
        #[arg(short, long)]
        target: Option<String>,
        /// Override a bundle variable: --var name=value (repeatable). MEDALLION_VAR_<name> also works.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Run only this task (its task_key in the job).
        #[arg(long)]
        task: Option<String>,
        /// The job to run (its key under resources.jobs); needed when the bundle has several.
        #[arg(long)]
        job: Option<String>,
        /// Keep running: watch the landing folder and the topic, and run the job again every
        /// --interval until interrupted (Ctrl-C stops it after the run under way).
        #[arg(long)]
        continuous: bool,
        /// Time between runs with --continuous, e.g. 200ms, 5s, 1m.
        #[arg(long, default_value = "5s", value_parser = parse_interval)]
        interval: Duration,
        /// Run a production target even from a git tree with uncommitted changes.
        #[arg(long)]
        force: bool,
        /// Also write the run's summary (every task's rows, bytes, versions and time) as
        /// JSON to this file; with --continuous, after each run that did something.
        #[arg(long, value_name = "FILE")]
        report_json: Option<std::path::PathBuf>,
    },
    /// Benchmark the job on generated data: per-stage throughput, end to end, incremental,
    /// the SCD2 MERGE, freshness and peak memory, for each broker; an AUTO CDC pipeline
    /// (SCD Type 2 and Type 1) on a change feed (--cdc-keys); --peers adds Python
    /// deltalake + polars, the original pipeline on Spark, and the weather example's
    /// pipeline on Spark Declarative Pipelines 4.3. Build with --release first
    /// (`cargo run --release -- bench`): debug figures mean little.
    Bench {
        /// Data rows to generate.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Number of indices.
        #[arg(long, default_value_t = 5)]
        indices: u32,
        /// Brokers to measure: memory, sqlite, kafka (Apache Kafka, from the jars in
        /// MEDALLION_KAFKA_JARS or ~/.cache/medallion-tools/kafka-4.1.0).
        #[arg(long, value_delimiter = ',', default_value = "memory,sqlite,kafka")]
        brokers: Vec<String>,
        /// Also run the peers: all of them, or those named (polars, spark, sdp). Their
        /// venvs hold polars and deltalake, pyspark 3.5 with delta-spark, and pyspark 4.3
        /// for Spark Declarative Pipelines (sdp).
        #[arg(long, num_args = 0.., value_delimiter = ',', default_missing_value = "all", value_name = "PEERS")]
        peers: Option<Vec<String>>,
        /// Files landed one at a time for the freshness figure.
        #[arg(long, default_value_t = 50)]
        freshness_files: usize,
        /// --continuous interval of the freshness figure, e.g. 200ms.
        #[arg(long, default_value = "200ms", value_parser = parse_interval)]
        interval: Duration,
        /// Working folder (emptied): data, warehouses, logs.
        #[arg(long, default_value = ".medallion/bench")]
        dir: PathBuf,
        /// Write every figure as JSON here (default: <dir>/bench.json).
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(short, long)]
        target: Option<String>,
        /// Keys of the AUTO CDC figure's table (SCD Type 2 and Type 1, from a change feed
        /// of 1% of the keys per batch, out of order); 0 leaves the figure out.
        #[arg(long, default_value_t = medallion::bench::cdc::DEFAULT_KEYS)]
        cdc_keys: u64,
        /// Batches of changes of the AUTO CDC figure, after its initial load.
        #[arg(long, default_value_t = medallion::bench::cdc::DEFAULT_BATCHES)]
        cdc_batches: usize,
        /// Only the AUTO CDC figure: no broker, no peer.
        #[arg(long, conflicts_with = "peers")]
        cdc_only: bool,
    },
    /// Summarize the quarantined rows by reason, with samples: every quarantine table, or one.
    Quarantine {
        /// One table: quarantine.ingest or quarantine.stocks_silver (or the catalog-qualified name).
        #[arg(long)]
        table: Option<String>,
        #[arg(short, long)]
        target: Option<String>,
        /// Sample rows shown per reason.
        #[arg(long, default_value_t = 2)]
        samples: usize,
    },
    /// List every table of the target, with rows, Delta version and last update.
    Tables {
        #[arg(short, long)]
        target: Option<String>,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// Run DataFusion SQL over the target's tables: dev.gold.updated_stocks_gold, or gold.updated_stocks_gold within the target.
    Sql {
        /// The query.
        query: String,
        #[arg(short, long)]
        target: Option<String>,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check, show and describe the bundle (medallion.yml and the files it includes).
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Reset a target, as the original "Reset env": drop its tables, clear all progress
    /// (txn versions, ingest checkpoint) and empty its topic, so the next run starts over.
    Reset {
        #[arg(short, long)]
        target: Option<String>,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// Allow resetting a production target.
        #[arg(long)]
        force: bool,
    },
    /// Run every deployed job of the target at its cron times, in its time zone, until
    /// SIGTERM or Ctrl-C. Records every run in <target>.system.job_runs.
    Scheduler {
        #[arg(short, long)]
        target: Option<String>,
    },
    /// Declarative pipelines (resources.pipelines): run an update, check the SQL, show the
    /// graph or the event log.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Serve a read-only web UI of the target: the graph of its pipelines and jobs, their
    /// runs and updates, every table (schema, history, rows, expectations, quarantine), a
    /// SQL box and throughput and freshness charts, live while runs go on.
    Ui {
        #[arg(short, long)]
        target: Option<String>,
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// The address to listen on. Anything but loopback needs --token.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The access token the page and API then ask for.
        #[arg(long, env = "MEDALLION_UI_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Override a bundle variable: --var name=value (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// List the recent runs: of jobs and pipelines, whichever command started them.
    Runs {
        #[arg(short, long)]
        target: Option<String>,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Write synthetic daily stock-index CSV files (BOM, CRLF, some null days), deterministic per seed.
    Generate {
        /// Total data rows.
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
        /// Number of indices (the first are NYA, IXIC, HSI, GSPTSE, 000001.SS, ...).
        #[arg(long, default_value_t = 5)]
        indices: u32,
        /// Trading days in the calendar (default: rows / indices).
        #[arg(long)]
        days: Option<u64>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Split the days over this many files.
        #[arg(long, default_value_t = 1)]
        files: u32,
        /// Write .csv.gz instead of .csv.
        #[arg(long)]
        gzip: bool,
        /// File name prefix: <prefix>_0001.csv, ...
        #[arg(long, default_value = "stocks")]
        prefix: String,
    },
}

/// The options every `pipeline` command takes.
#[derive(clap::Args, Debug)]
struct PipelineArgs {
    /// The pipeline's key under resources.pipelines; needed when the bundle has several.
    key: Option<String>,
    #[arg(short, long)]
    target: Option<String>,
    /// Override a bundle variable: --var name=value (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum PipelineCommand {
    /// Run an update: every flow in graph order, on what is new, exactly once.
    ///
    /// Streaming tables append the new rows of their STREAM sources; materialized views
    /// are recomputed when an input changed. Rows failing a DROP ROW expectation, and lines
    /// that do not parse, go to <catalog>.quarantine.<table>. Every update is recorded in
    /// <catalog>.system.events and system.job_runs. Exits non-zero if a flow failed.
    Run {
        #[command(flatten)]
        args: PipelineArgs,
        /// Run only the flows of these datasets (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "T,...")]
        refresh: Vec<String>,
        /// Empty these datasets, forget their progress and recompute them from their
        /// sources; alone, every dataset of the pipeline.
        #[arg(long, value_delimiter = ',', num_args = 0.., value_name = "T,...")]
        full_refresh: Option<Vec<String>>,
        /// Keep running: an update every --interval until Ctrl-C.
        #[arg(long)]
        continuous: bool,
        /// Time between updates with --continuous, e.g. 200ms, 5s, 1m.
        #[arg(long, default_value = "5s", value_parser = parse_interval)]
        interval: Duration,
        /// Also write the update's report (every flow's rows, time, expectation counts)
        /// as JSON to this file.
        #[arg(long, value_name = "FILE")]
        report_json: Option<PathBuf>,
    },
    /// Parse the SQL, resolve every name, plan every query against the schemas and find
    /// cycles, without reading a row or writing anything.
    DryRun {
        #[command(flatten)]
        args: PipelineArgs,
    },
    /// Print the dataflow graph.
    Graph {
        #[command(flatten)]
        args: PipelineArgs,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Show the events of the pipeline's last update (or of --update ID).
    Events {
        #[command(flatten)]
        args: PipelineArgs,
        /// An update id from `medallion runs` or an earlier `events`.
        #[arg(long)]
        update: Option<String>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum GraphFormat {
    Text,
    Mermaid,
    Dot,
}

#[derive(Subcommand, Debug)]
enum BundleCommand {
    /// Check the whole bundle (includes, references, the job DAG, cron expressions and time
    /// zones) for a target and print the resolved configuration; errors name file:line:column.
    Validate {
        #[arg(short, long)]
        target: Option<String>,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// Print the JSON Schema of the bundle format, for editors.
    Schema,
    /// Write the resolved bundle to the target's workspace.root_path, with its deployment
    /// state (version, content hash, git commit, user, time). Idempotent; locked.
    Deploy {
        #[arg(short, long)]
        target: Option<String>,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Deploy a production target even from a git tree with uncommitted changes.
        #[arg(long)]
        force: bool,
    },
    /// Run a deployed job (the deployed copy of the bundle, not the working copy).
    Run {
        /// The job's key; needed when the bundle has several.
        job: Option<String>,
        #[arg(short, long)]
        target: Option<String>,
        /// Run only this task.
        #[arg(long)]
        task: Option<String>,
    },
    /// Show what is deployed where.
    Summary {
        #[arg(short, long)]
        target: Option<String>,
    },
    /// Remove a deployment. Its tables stay unless --purge is given.
    Destroy {
        #[arg(short, long)]
        target: Option<String>,
        /// Also delete the target's tables and what medallion keeps under state_dir
        /// (checkpoints, embedded broker, deployed copies, run lock), after confirmation.
        #[arg(long)]
        purge: bool,
        /// With --purge: do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// With --purge: allow purging a production target.
        #[arg(long)]
        force: bool,
    },
}

/// What `bundle validate` prints: the configuration as a target resolves it.
#[derive(serde::Serialize)]
struct Resolved<'a> {
    bundle: &'a str,
    target: &'a str,
    mode: medallion::bundle::Mode,
    root_path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    landing_dir: Option<String>,
    warehouse: String,
    state_dir: String,
    kafka: ResolvedKafka<'a>,
    jobs: &'a std::collections::BTreeMap<String, medallion::bundle::JobDef>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pipelines: &'a std::collections::BTreeMap<String, medallion::bundle::PipelineSpec>,
}

#[derive(serde::Serialize)]
struct ResolvedKafka<'a> {
    bootstrap_servers: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    partitions: i32,
    settings: std::collections::BTreeMap<String, String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Table,
    Csv,
    Json,
}

/// `200ms`, `5s`, `1m`, or a number of seconds.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((t, "s"), |i| t.split_at(i));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 200ms, 5s or 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{text}`: the unit must be ms, s or m")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    // glibc gives each busy thread an arena of its own and keeps what they free: with the
    // runtime's and DataFusion's threads, the Silver tasks held about twice their live
    // memory. Two arenas measured 35% less peak memory and no slower (BENCHMARKS.md).
    // Blocks of 1 MB or more (Arrow buffers, Parquet pages, Kafka batches) get mappings
    // of their own, returned when freed: glibc otherwise raises this threshold as large
    // blocks are freed, and keeps them in its heap. Over 10M rows the whole job peaked at
    // 358-365 MB with it and 478 MB without, in the same hour; bronze was 20% slower.
    // SAFETY: mallopt only tunes the allocator, before any thread starts.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let cli = Cli::parse();
    init_logging();
    match execute(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", mask(&describe(&err)));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause only if the text so far does not already say it
/// (medallion's messages quote their cause).
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn init_logging() {
    // delta-rs warns about MERGE metrics it derives itself: noise for users.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MEDALLION_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,medallion=info,deltalake_core=error")
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(medallion::secrets::MaskedWriter(std::io::stderr))
        .with_target(false)
        .init();
}

/// The bundle resolved for a target, with `MEDALLION_VAR_*` and `--var` overrides.
fn settings(
    bundle: &std::path::Path,
    target: Option<&str>,
    vars: &[String],
) -> anyhow::Result<Settings> {
    let bundle = Bundle::load(bundle)?;
    let mut overrides = Override::from_process_env();
    for v in vars {
        overrides.push(Override::parse_cli(v)?);
    }
    Ok(bundle.resolve(target, &overrides)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(4, |n| n.get().max(4)))
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Refuses a production target from a dirty git tree unless forced.
fn check_clean(
    settings: &Settings,
    bundle_file: &std::path::Path,
    action: &'static str,
    force: bool,
) -> anyhow::Result<()> {
    let dir = bundle_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    Ok(medallion::deploy::check_clean(
        settings, dir, action, force,
    )?)
}

/// Runs a job once, or continuously every `interval`, and prints the summaries.
fn run_job(
    settings: &Settings,
    options: &RunOptions,
    interval: Option<Duration>,
    report_json: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let write_json = |report: &RunReport| -> anyhow::Result<()> {
        if let Some(path) = report_json {
            let json = serde_json::to_string_pretty(report)?;
            std::fs::write(path, mask(&json).as_bytes())
                .with_context(|| format!("cannot write the run report to {}", path.display()))?;
        }
        Ok(())
    };
    let failed = match interval {
        Some(interval) => {
            // Listening from the start: Ctrl-C during the first run, or while the run
            // connects, stops after that run instead of killing the process midway.
            let mut interrupt = {
                let _entered = runtime.enter();
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                    .context("cannot listen for Ctrl-C")?
            };
            let stop = async move {
                interrupt.recv().await;
                eprintln!("medallion: stopping after the run under way");
            };
            let mut failed = false;
            let mut written = Ok(());
            runtime.block_on(job::run_continuous(
                settings,
                options,
                interval,
                stop,
                |report| {
                    record_continuous(settings, report);
                    let busy = report.failure().is_some()
                        || report
                            .summaries
                            .iter()
                            .any(|s| s.rows_read > 0 || s.rows_written > 0);
                    if busy {
                        failed |= print_report(settings, report);
                        if written.is_ok() {
                            written = write_json(report);
                        }
                    }
                },
            ))?;
            written?;
            failed
        }
        None => {
            let start = chrono::Utc::now();
            let report = runtime.block_on(job::run(settings, options))?;
            record(&runtime, settings, &report, start);
            write_json(&report)?;
            print_report(settings, &report)
        }
    };
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Records a run in `system.job_runs`; a failure to record is reported, not fatal.
fn record(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    report: &RunReport,
    start: chrono::DateTime<chrono::Utc>,
) {
    if let Err(e) = runtime.block_on(medallion::scheduler::record_report(settings, report, start)) {
        eprintln!(
            "warning: the run could not be recorded in system.job_runs: {}",
            mask(&e.to_string())
        );
    }
}

/// [`record`] from inside the runtime, for each run of a continuous job. The time each
/// run started is not kept by the loop: its tasks' time is taken back from its end.
fn record_continuous(settings: &Settings, report: &RunReport) {
    let busy = report.failure().is_some()
        || report
            .summaries
            .iter()
            .any(|s| s.rows_read > 0 || s.rows_written > 0);
    if !busy {
        return;
    }
    let longest = report
        .summaries
        .iter()
        .map(|s| s.elapsed)
        .max()
        .unwrap_or_default();
    let start = chrono::Utc::now() - chrono::Duration::from_std(longest).unwrap_or_default();
    // Inside the runtime: this thread waits while the record is written.
    let recorded = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current()
            .block_on(medallion::scheduler::record_report(settings, report, start))
    });
    if let Err(e) = recorded {
        eprintln!(
            "warning: the run could not be recorded in system.job_runs: {}",
            mask(&e.to_string())
        );
    }
}

/// The settings of a target's deployed copy of the bundle, downloaded under the local
/// state folder.
fn deployed_settings(
    bundle: &std::path::Path,
    target: Option<&str>,
) -> anyhow::Result<(Settings, medallion::deploy::DeploymentState)> {
    let local = settings(bundle, target, &[])?;
    let deployment = Deployment::for_settings(&local)?;
    let runtime = runtime()?;
    let state = runtime.block_on(deployment.require(&local.target))?;
    let copy = local
        .state_dir
        .join("deployed")
        .join(&local.target)
        .join(&state.content_hash);
    let bundle_file = runtime.block_on(deployment.download(&state, &copy))?;
    let overrides = state.overrides(&|name| std::env::var(name).ok())?;
    let deployed = Bundle::load(&bundle_file)?.resolve(Some(&local.target), &overrides)?;
    Ok((deployed, state))
}

/// Shows what a reset or a purge will remove and asks for the target's name, unless
/// `yes`. Returns whether it was confirmed.
fn confirm(settings: &Settings, plan: &ResetPlan, yes: bool) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal};
    let (verb, command) = match plan.scope {
        Scope::Reset => ("reset", "reset"),
        Scope::Purge => ("purge", "bundle destroy --purge"),
    };
    println!("{verb} target {} will remove:", settings.target);
    for f in &plan.folders {
        println!("  {}", f.display());
    }
    for t in &plan.topics {
        println!(
            "  topic {t} on {}",
            settings.kafka.bootstrap_servers.as_deref().unwrap_or("")
        );
    }
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{command} needs confirmation: run it on a terminal, or pass --yes");
    }
    print!("Type the target's name ({}) to confirm: ", settings.target);
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != settings.target {
        println!("not confirmed; nothing was removed");
        return Ok(false);
    }
    Ok(true)
}

/// Prints a run's summaries; returns the failed task, if any.
fn print_report(settings: &Settings, report: &RunReport) -> bool {
    let kafka = match (&report.kafka, &settings.kafka.bootstrap_servers) {
        (Some(k), Some(_)) => format!(" · kafka {k}"),
        (Some(k), None) => format!(" · kafka embedded ({k})"),
        (None, _) => String::new(),
    };
    println!(
        "medallion run · bundle {} · target {} · job {}{kafka}",
        settings.bundle_name, report.target, report.job
    );
    for summary in &report.summaries {
        print!("{}", mask(&summary.to_string()));
    }
    if let Some(failed) = report.failure() {
        eprintln!(
            "error: task `{}` failed: {}",
            failed.task,
            mask(
                failed
                    .notes
                    .last()
                    .map(String::as_str)
                    .unwrap_or("see above")
            )
        );
        return true;
    }
    false
}

/// `medallion pipeline ...`.
fn pipeline_command(
    bundle: &std::path::Path,
    command: PipelineCommand,
) -> anyhow::Result<ExitCode> {
    use medallion::pipeline;
    let args = match &command {
        PipelineCommand::Run { args, .. }
        | PipelineCommand::DryRun { args }
        | PipelineCommand::Graph { args, .. }
        | PipelineCommand::Events { args, .. } => args,
    };
    let s = settings(bundle, args.target.as_deref(), &args.vars)?;
    let spec = pipeline::select(&s, args.key.as_deref())?.clone();
    match command {
        PipelineCommand::DryRun { .. } => {
            let graph = pipeline::load(&spec)?;
            let prepared = runtime()?.block_on(pipeline::run::prepare(&graph, &s))?;
            for d in graph.dataset_order() {
                let columns = prepared
                    .schemas
                    .get(&d.name)
                    .map(|sc| {
                        sc.fields()
                            .iter()
                            .map(|f| format!("{} {}", f.name(), f.data_type()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_else(|| "(planned into the queries that read it)".into());
                println!("{} ({}): {columns}", d.name, d.kind.label());
            }
            eprintln!(
                "pipeline {} is valid: {} datasets, {} flows, planned without reading data",
                spec.name,
                graph.datasets.len(),
                graph.flows.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        PipelineCommand::Graph { format, .. } => {
            let graph = pipeline::load(&spec)?;
            print!(
                "{}",
                match format {
                    GraphFormat::Text => graph.render_text(),
                    GraphFormat::Mermaid => graph.render_mermaid(),
                    GraphFormat::Dot => graph.render_dot(),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        PipelineCommand::Events { update, .. } => {
            let name = pipeline::events::table().name;
            let warehouse = medallion::catalog::Warehouse::new(
                s.warehouse
                    .catalog_path()
                    .parent()
                    .unwrap_or(std::path::Path::new(".")),
                &spec.catalog,
            );
            if !warehouse.has_table(&name) {
                println!(
                    "pipeline {} has no events yet: run `medallion pipeline run` first",
                    spec.name
                );
                return Ok(ExitCode::SUCCESS);
            }
            let rt = runtime()?;
            let rows = rt.block_on(pipeline::events::last_update(
                &warehouse,
                &spec.key,
                update.as_deref(),
            ))?;
            print!("{}", mask(&rows));
            Ok(ExitCode::SUCCESS)
        }
        PipelineCommand::Run {
            refresh,
            full_refresh,
            continuous,
            interval,
            report_json,
            ..
        } => {
            let selection = pipeline::Selection {
                refresh,
                full_refresh_all: full_refresh.as_ref().is_some_and(|f| f.is_empty()),
                full_refresh: full_refresh.unwrap_or_default(),
            };
            let rt = runtime()?;
            let once = |selection: &pipeline::Selection| -> anyhow::Result<bool> {
                let start = chrono::Utc::now();
                let report = rt.block_on(pipeline::run_locked(&s, &spec, selection))?;
                if let Some(path) = &report_json {
                    let json = serde_json::json!({
                        "update": &report,
                        "peak_rss_bytes": medallion::job::peak_rss(),
                    });
                    std::fs::write(path, mask(&serde_json::to_string_pretty(&json)?).as_bytes())
                        .with_context(|| {
                            format!("cannot write the report to {}", path.display())
                        })?;
                }
                let summary = report.summary(
                    &format!("pipeline {}", spec.key),
                    (chrono::Utc::now() - start).to_std().unwrap_or_default(),
                );
                let run = RunReport {
                    target: s.target.clone(),
                    job: format!("pipeline {}", spec.name),
                    kafka: None,
                    summaries: vec![summary],
                    peak_rss_bytes: medallion::job::peak_rss(),
                };
                rt.block_on(medallion::scheduler::record_report(&s, &run, start))?;
                println!(
                    "medallion pipeline run · bundle {} · target {} · pipeline {} · update {}",
                    s.bundle_name, s.target, spec.name, report.update_id
                );
                for summary in &run.summaries {
                    print!("{}", mask(&summary.to_string()));
                }
                if let Some(f) = report.failed() {
                    eprintln!(
                        "error: flow `{}` failed: {}",
                        f.flow,
                        mask(f.error.as_deref().unwrap_or(""))
                    );
                    return Ok(true);
                }
                Ok(false)
            };
            let mut failed = once(&selection)?;
            if continuous || spec.continuous {
                // Later updates process what is new; a full refresh is done once.
                let again = pipeline::Selection {
                    refresh: selection.refresh.clone(),
                    ..Default::default()
                };
                let mut interrupt = {
                    let _entered = rt.enter();
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                        .context("cannot listen for Ctrl-C")?
                };
                loop {
                    let stop = rt.block_on(async {
                        tokio::select! {
                            _ = interrupt.recv() => true,
                            _ = tokio::time::sleep(interval) => false,
                        }
                    });
                    if stop {
                        break;
                    }
                    failed |= once(&again)?;
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            target,
            vars,
            task,
            job,
            continuous,
            interval,
            force,
            report_json,
        } => {
            let settings = settings(&cli.bundle, target.as_deref(), &vars)?;
            check_clean(&settings, &settings.bundle_file, "run", force)?;
            let options = RunOptions {
                job,
                task,
                interactive: Progress::stderr_is_terminal() && !continuous,
            };
            run_job(
                &settings,
                &options,
                continuous.then_some(interval),
                report_json.as_deref(),
            )
        }
        Command::Reset {
            target,
            vars,
            yes,
            force,
        } => {
            let s = settings(&cli.bundle, target.as_deref(), &vars)?;
            let plan = medallion::reset::plan(&s, force, Scope::Reset)?;
            if !confirm(&s, &plan, yes)? {
                return Ok(ExitCode::FAILURE);
            }
            let lock = medallion::reset::lock(&s, RUN_LOCK_WAIT)?;
            runtime()?.block_on(medallion::reset::execute(&s, &plan, lock))?;
            println!(
                "target {} is reset: the next run starts from the landing files",
                s.target
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Scheduler { target } => {
            let (s, state) = deployed_settings(&cli.bundle, target.as_deref())?;
            eprintln!(
                "medallion scheduler · target {} · deployment version {}",
                s.target, state.version
            );
            let stop = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                eprintln!("medallion scheduler: stopping after the runs under way");
            };
            runtime()?.block_on(medallion::scheduler::run(s, stop))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pipeline { command } => pipeline_command(&cli.bundle, command),
        Command::Ui {
            target,
            port,
            host,
            token,
            vars,
        } => {
            let s = settings(&cli.bundle, target.as_deref(), &vars)?;
            let options = medallion::ui::UiOptions { host, port, token };
            runtime()?.block_on(medallion::ui::serve(s, options, |addr| {
                println!("medallion ui at http://{addr}/ (Ctrl-C stops it)");
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { target, limit } => {
            let s = settings(&cli.bundle, target.as_deref(), &[])?;
            let name = medallion::scheduler::job_runs_table().name;
            if !s.warehouse.has_table(&name) {
                println!("no runs recorded for target {} yet", s.target);
                return Ok(ExitCode::SUCCESS);
            }
            let query = format!(
                "SELECT run_id, job, start, \"end\", state, rows_read, rows_written, error \
                 FROM {}.system.job_runs WHERE task IS NULL ORDER BY start DESC LIMIT {limit}",
                s.target
            );
            runtime()?.block_on(print_sql(&s, &query, Format::Table))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            rows,
            indices,
            brokers,
            peers,
            freshness_files,
            interval,
            dir,
            json,
            target,
            cdc_keys,
            cdc_batches,
            cdc_only,
        } => {
            use medallion::bench::{self, BenchOptions, BrokerKind};
            let brokers = brokers
                .iter()
                .map(|b| b.parse::<BrokerKind>())
                .collect::<Result<Vec<_>, _>>()?;
            let peers = bench::Peers::parse(peers.as_deref())?;
            let bundle = std::fs::canonicalize(&cli.bundle)
                .with_context(|| format!("cannot find the bundle {}", cli.bundle.display()))?;
            let project_dir = bundle.parent().map(PathBuf::from).unwrap_or_default();
            let dir = std::path::absolute(&dir)?;
            let options = BenchOptions {
                rows,
                indices,
                brokers,
                peers,
                dir: dir.clone(),
                bundle,
                target,
                freshness_files,
                interval,
                kafka_jars: medallion::kafka_server::KafkaServer::default_jars(),
                project_dir,
                command: std::env::args().collect::<Vec<_>>().join(" "),
                cdc: bench::cdc::CdcOptions {
                    keys: cdc_keys,
                    batches: cdc_batches,
                },
                cdc_only,
            };
            let report = runtime()?.block_on(bench::run(&options))?;
            let json = json.unwrap_or_else(|| dir.join("bench.json"));
            std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("cannot write {}", json.display()))?;
            print!("{}", report.render());
            println!(
                "
every figure: {}",
                json.display()
            );
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Quarantine {
            table,
            target,
            samples,
        } => {
            let s = settings(&cli.bundle, target.as_deref(), &[])?;
            runtime()?.block_on(print_quarantine(&s, table.as_deref(), samples))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tables { target, vars } => {
            let settings = settings(&cli.bundle, target.as_deref(), &vars)?;
            runtime()?.block_on(print_tables(&settings))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql {
            query,
            target,
            vars,
            format,
        } => {
            let settings = settings(&cli.bundle, target.as_deref(), &vars)?;
            runtime()?.block_on(print_sql(&settings, &query, format))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle {
            command: BundleCommand::Validate { target, vars },
        } => {
            let s = settings(&cli.bundle, target.as_deref(), &vars)?;
            let resolved = Resolved {
                bundle: &s.bundle_name,
                target: &s.target,
                mode: s.mode,
                root_path: &s.root_path,
                landing_dir: s.landing_dir.as_ref().map(|d| d.display().to_string()),
                warehouse: s.warehouse.catalog_path().display().to_string(),
                state_dir: s.state_dir.display().to_string(),
                kafka: ResolvedKafka {
                    bootstrap_servers: s.kafka.bootstrap_servers.as_deref().unwrap_or("(embedded)"),
                    topic: s.kafka.topic.as_deref(),
                    partitions: s.kafka.partitions,
                    settings: medallion::kafka::redacted(&s.kafka.client),
                },
                jobs: &s.jobs,
                pipelines: &s.pipelines,
            };
            print!("{}", mask(&serde_yaml::to_string(&resolved)?));
            eprintln!("bundle {} is valid for target {}", s.bundle_name, s.target);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle {
            command:
                BundleCommand::Deploy {
                    target,
                    vars,
                    force,
                },
        } => {
            let bundle = Bundle::load(&cli.bundle)?;
            let s = settings(&cli.bundle, target.as_deref(), &vars)?;
            check_clean(&s, &cli.bundle, "deploy", force)?;
            let deployment = Deployment::for_settings(&s)?;
            let (state, changed) = runtime()?.block_on(deployment.deploy(&bundle, &s))?;
            if changed {
                println!(
                    "deployed bundle {} to target {} at {}: version {} ({})",
                    state.bundle,
                    state.target,
                    deployment.location(),
                    state.version,
                    &state.content_hash[..12]
                );
            } else {
                println!(
                    "bundle {} is already deployed to target {}: version {} unchanged",
                    state.bundle, state.target, state.version
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle {
            command: BundleCommand::Run { job, target, task },
        } => {
            let (s, _) = deployed_settings(&cli.bundle, target.as_deref())?;
            let options = RunOptions {
                job,
                task,
                interactive: Progress::stderr_is_terminal(),
            };
            run_job(&s, &options, None, None)
        }
        Command::Bundle {
            command: BundleCommand::Summary { target },
        } => {
            let s = settings(&cli.bundle, target.as_deref(), &[])?;
            let deployment = Deployment::for_settings(&s)?;
            match runtime()?.block_on(deployment.state())? {
                None => println!(
                    "target {} is not deployed (workspace.root_path {})",
                    s.target, s.root_path
                ),
                Some(state) => {
                    println!("bundle      {}", state.bundle);
                    println!("target      {} ({:?} mode)", state.target, s.mode);
                    println!("root_path   {}", deployment.location());
                    println!("version     {}", state.version);
                    println!("content     {}", state.content_hash);
                    println!(
                        "git commit  {}",
                        state.git_commit.as_deref().unwrap_or("(not a git tree)")
                    );
                    println!("deployed    {} by {}", state.deployed_at, state.user);
                    for key in &state.jobs {
                        let name = s.jobs.get(key).map_or(key.as_str(), |j| j.name.as_str());
                        println!("job         {key}: {name}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle {
            command:
                BundleCommand::Destroy {
                    target,
                    purge,
                    yes,
                    force,
                },
        } => {
            let s = settings(&cli.bundle, target.as_deref(), &[])?;
            let deployment = Deployment::for_settings(&s)?;
            // A purge is planned and confirmed before anything goes, and holds the run
            // lock from before the deployment goes until the state has gone.
            let purge = match purge {
                false => None,
                true => {
                    let plan = medallion::reset::plan(&s, force, Scope::Purge)?;
                    if !confirm(&s, &plan, yes)? {
                        return Ok(ExitCode::FAILURE);
                    }
                    Some((plan, medallion::reset::lock(&s, RUN_LOCK_WAIT)?))
                }
            };
            if runtime()?.block_on(deployment.destroy())? {
                println!(
                    "removed the deployment of target {} at {}",
                    s.target, s.root_path
                );
            } else {
                println!("target {} was not deployed", s.target);
            }
            if let Some((plan, lock)) = purge {
                runtime()?.block_on(medallion::reset::execute(&s, &plan, lock))?;
                println!("purged the tables and the state of target {}", s.target);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle {
            command: BundleCommand::Schema,
        } => {
            let schema = medallion::bundle::schema::json_schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            rows,
            indices,
            days,
            out,
            seed,
            files,
            gzip,
            prefix,
        } => {
            let options = GenerateOptions {
                rows,
                indices,
                days,
                seed,
                files,
                gzip,
                prefix,
                ..GenerateOptions::default()
            };
            for path in generate(&out, &options)? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn print_tables(settings: &Settings) -> anyhow::Result<()> {
    let warehouse = &settings.warehouse;
    let found = sql::list_tables(warehouse)?;
    if found.is_empty() {
        println!(
            "no tables in {} yet: run `medallion run` first",
            warehouse.catalog_path().display()
        );
        return Ok(());
    }
    println!(
        "{:<44} {:>10} {:>8}  last update (UTC)",
        "table", "rows", "version"
    );
    for t in found {
        let table = sql::open(warehouse, &t.name).await?;
        let (rows, version, last) = sql::describe(&table).await?;
        let last = last
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or("-".into(), |d| d.format("%Y-%m-%d %H:%M:%S").to_string());
        println!(
            "{:<44} {:>10} {:>8}  {last}",
            warehouse.qualified(&t.name),
            rows,
            version
        );
    }
    Ok(())
}

async fn print_sql(settings: &Settings, query: &str, format: Format) -> anyhow::Result<()> {
    use deltalake::arrow::{csv, json, util::pretty};
    let ctx = sql::catalog_session(&settings.warehouse).await?;
    let batches = sql::collect_read_only(&ctx, query).await?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => writeln!(out, "{}", pretty::pretty_format_batches(&batches)?)?,
        Format::Csv => {
            let mut w = csv::Writer::new(&mut out);
            for b in &batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = json::ArrayWriter::new(&mut out);
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// Quarantined rows by reason, most frequent first, with a few samples of each.
async fn print_quarantine(
    settings: &Settings,
    table: Option<&str>,
    samples: usize,
) -> anyhow::Result<()> {
    let warehouse = &settings.warehouse;
    let names: Vec<medallion::catalog::TableName> = match table {
        Some(t) => vec![warehouse.parse_name(t)?],
        None => sql::list_tables(warehouse)?
            .into_iter()
            .map(|t| t.name)
            .filter(|n| n.schema == "quarantine")
            .collect(),
    };
    if names.is_empty() {
        println!("nothing is quarantined in target {}", settings.target);
        return Ok(());
    }
    for name in names {
        let qualified = warehouse.qualified(&name);
        // `quarantine.ingest` rows can stand for a whole file's lines: show both counts.
        let has_lines = sql::open(warehouse, &name)
            .await?
            .snapshot()?
            .schema()
            .fields()
            .any(|f| f.name() == "lines");
        let lines = if has_lines {
            ", sum(lines) AS lines"
        } else {
            ""
        };
        let summary = format!(
            "SELECT reason, count(*) AS rows{lines} FROM {qualified} GROUP BY reason ORDER BY rows DESC, reason"
        );
        println!("── {qualified}");
        print_sql(settings, &summary, Format::Table).await?;
        if samples > 0 {
            let sample = format!(
                "SELECT * EXCEPT (n) FROM (SELECT *, row_number() OVER (PARTITION BY reason ORDER BY quarantined_at) AS n FROM {qualified}) WHERE n <= {samples} ORDER BY reason"
            );
            println!("samples (up to {samples} per reason):");
            print_sql(settings, &sample, Format::Table).await?;
        }
    }
    Ok(())
}
