//! The `medallion` command line.

#![allow(clippy::result_large_err)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use medallion::bundle::{Bundle, Override, BUNDLE_FILE};
use medallion::generate::{generate, GenerateOptions};
use medallion::job::{self, RunOptions, Task};
use medallion::progress::Progress;

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
    /// Run the pipeline's tasks in order (ingest, then bronze) on everything available now, then exit.
    ///
    /// ingest sends every CSV file of landing_dir not yet ingested to the Kafka topic;
    /// bronze appends every new Kafka record to <warehouse_dir>/<target>/bronze/bronze.
    /// Bad rows go to <target>.quarantine.ingest. A run that is killed can simply be
    /// run again: nothing is lost or duplicated.
    Run {
        /// The target (catalog) to run, e.g. dev or prod. Default: the target marked default.
        #[arg(short, long)]
        target: Option<String>,
        /// Override a bundle variable: --var name=value (repeatable). MEDALLION_VAR_<name> also works.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Run only this task (ingest or bronze).
        #[arg(long)]
        task: Option<String>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match execute(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDALLION_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,medallion=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { target, vars, task } => {
            let bundle = Bundle::load(&cli.bundle)?;
            // vars_os: a variable that is not UTF-8 is none of ours, and must not panic.
            let env = std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
            let mut overrides = Override::from_env(env);
            for v in &vars {
                overrides.push(Override::parse_cli(v)?);
            }
            let settings = bundle.resolve(target.as_deref(), &overrides)?;
            let options = RunOptions {
                task: task.as_deref().map(Task::parse).transpose()?,
                interactive: Progress::stderr_is_terminal(),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(std::thread::available_parallelism().map_or(4, |n| n.get().max(4)))
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let report = runtime.block_on(job::run(&settings, &options))?;
            println!(
                "medallion run · bundle {} · target {} · kafka {}",
                settings.bundle_name,
                report.target,
                if settings.kafka.bootstrap_servers.is_some() {
                    report.kafka.clone()
                } else {
                    format!("embedded ({})", report.kafka)
                }
            );
            for summary in &report.summaries {
                print!("{summary}");
            }
            if let Some(failed) = report.failure() {
                eprintln!(
                    "error: task `{}` failed: {}",
                    failed.task,
                    failed
                        .notes
                        .last()
                        .map(String::as_str)
                        .unwrap_or("see above")
                );
                return Ok(ExitCode::FAILURE);
            }
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
