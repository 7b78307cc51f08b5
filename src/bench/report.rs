//! The benchmark's figures: a JSON document with every figure and the machine, and the
//! same as readable tables on the terminal.

use std::fmt::Write as _;

use serde::Serialize;

use crate::job::RunReport;

/// A stage of the pipeline: one task of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub task: String,
    /// What the stage does, e.g. "CSV → Kafka".
    pub stage: String,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub mb_per_s: f64,
}

/// A whole run of the job.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// From process start to exit: broker start, every task, and shutdown.
    pub wall_seconds: f64,
    pub peak_rss_mb: f64,
    pub stages: Vec<Stage>,
}

impl Run {
    pub fn from_report(report: &RunReport, wall: f64, peak_rss: u64) -> Run {
        let stages = report
            .summaries
            .iter()
            .flat_map(|s| s.with_flows())
            .map(|s| {
                let seconds = s.elapsed.as_secs_f64();
                let per_s = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
                Stage {
                    task: s.task.clone(),
                    stage: stage_name(&s.task),
                    rows: s.rows_read,
                    bytes: s.bytes_read,
                    seconds,
                    rows_per_s: per_s(s.rows_read as f64),
                    mb_per_s: per_s(s.bytes_read as f64 / 1e6),
                }
            })
            .collect();
        Run {
            wall_seconds: wall,
            peak_rss_mb: peak_rss as f64 / (1024.0 * 1024.0),
            stages,
        }
    }

    pub fn stage(&self, task: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.task == task)
    }
}

/// The stage names of the shipped job's tasks and flows.
fn stage_name(task: &str) -> String {
    match task {
        "ingest" => "CSV → Kafka",
        "bronze" => "Kafka → bronze",
        "stocks" => "bronze → stocks_silver",
        "close_price" => "flow: AUTO CDC, SCD2 MERGE → close_price_silver",
        "current_close" => "close_price → current_close_silver",
        "stocks_close" => "stream-static join → stocks_close_silver",
        "updated_stocks" => "gold rebuild → updated_stocks_gold",
        "silver_gold" => "the pipeline `stocks`, every flow",
        "stocks_silver" => "flow: bronze → stocks_silver",
        "current_close_silver" => "flow: materialized view of close_price_silver",
        "stocks_close_silver" => "flow: stream-static join",
        "updated_stocks_gold" => "flow: materialized view of stocks_close_silver",
        _ => "",
    }
    .into()
}

/// The SCD2 MERGE of a change set into a history, timed over several runs.
#[derive(Debug, Clone, Serialize)]
pub struct Merge {
    pub history_rows: u64,
    pub change_rows: u64,
    /// The median of `runs_seconds`: one run varies by tens of percent on a shared
    /// machine, and the peer's figure is a median too.
    pub seconds: f64,
    pub min_seconds: f64,
    pub max_seconds: f64,
    /// The close_price flow of each run, from the same warehouse.
    pub runs_seconds: Vec<f64>,
    pub versions_written: u64,
}

impl Merge {
    pub fn from_runs(
        history_rows: u64,
        change_rows: u64,
        runs_seconds: Vec<f64>,
        versions_written: u64,
    ) -> Merge {
        let (seconds, min_seconds, max_seconds) = median_min_max(&runs_seconds);
        Merge {
            history_rows,
            change_rows,
            seconds,
            min_seconds,
            max_seconds,
            runs_seconds,
            versions_written,
        }
    }
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// The nearest-rank median, the minimum and the maximum of `samples` (0s when there are
/// none).
pub fn median_min_max(samples: &[f64]) -> (f64, f64, f64) {
    let sorted = sorted(samples);
    (
        percentile(&sorted, 50.0),
        sorted.first().copied().unwrap_or(0.0),
        sorted.last().copied().unwrap_or(0.0),
    )
}

/// The nearest-rank `p`th percentile of `sorted` (0 when it is empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Time from a file landing to its rows in gold, in `--continuous` mode.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    pub interval_ms: u64,
    pub files: usize,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
    pub samples_seconds: Vec<f64>,
}

impl Freshness {
    pub fn from_samples(interval_ms: u64, mut samples: Vec<f64>) -> Freshness {
        let sorted = sorted(&samples);
        let out = Freshness {
            interval_ms,
            files: samples.len(),
            p50_seconds: percentile(&sorted, 50.0),
            p99_seconds: percentile(&sorted, 99.0),
            max_seconds: sorted.last().copied().unwrap_or(0.0),
            samples_seconds: Vec::new(),
        };
        samples
            .iter_mut()
            .for_each(|s| *s = (*s * 1e4).round() / 1e4);
        Freshness {
            samples_seconds: samples,
            ..out
        }
    }
}

/// The AUTO CDC figure: a table kept from a change feed, for each SCD type.
#[derive(Debug, Clone, Serialize)]
pub struct CdcFigures {
    pub keys: u64,
    pub batches: usize,
    /// Events of each batch after the initial load: 1% of the keys, each changed once.
    pub events_per_batch: u64,
    /// The kinds of the batches' events, over every batch.
    pub mix: CdcMix,
    /// Keys whose latest event is not a delete, once every batch is applied.
    pub live_keys: u64,
    pub types: Vec<CdcType>,
}

/// The kinds of change events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CdcMix {
    /// Updates of tracked columns.
    pub updates: u64,
    /// Changes of an untracked column only (Type 2 updates the open version in place).
    pub untracked: u64,
    pub deletes: u64,
    /// Events sequenced below their key's latest event, arriving after it.
    pub late: u64,
}

/// One SCD type's figures: medians over the batches after the initial load.
#[derive(Debug, Clone, Serialize)]
pub struct CdcType {
    pub scd_type: u8,
    /// The AUTO CDC flow's time per batch: the median over the batches, and the extremes.
    pub seconds: f64,
    pub min_seconds: f64,
    pub max_seconds: f64,
    /// Events per second of the median batch.
    pub rows_per_s: f64,
    /// Bytes removed + added per batch (median) in the target, and in its event store.
    pub target_bytes_rewritten: u64,
    pub store_bytes_rewritten: u64,
    /// The target after the last batch: data bytes, files and rows; the event store's bytes.
    pub target_bytes: u64,
    pub target_files: u64,
    pub target_rows: u64,
    pub store_bytes: u64,
    pub initial: Option<CdcBatch>,
    pub batches: Vec<CdcBatch>,
    pub checks: Vec<Check>,
}

/// One update of the CDC pipeline: a file of change events.
#[derive(Debug, Clone, Serialize)]
pub struct CdcBatch {
    pub events: u64,
    /// Events the AUTO CDC flow applied (those not quarantined).
    pub events_applied: u64,
    /// The AUTO CDC flow's time, and the whole update's (the feed's flow included).
    pub seconds: f64,
    pub update_seconds: f64,
    /// `events` / `seconds`.
    pub rows_per_s: f64,
    /// Sizes of the files the batch's commits removed and added, and the commits.
    pub target_bytes_removed: u64,
    pub target_bytes_added: u64,
    pub target_commits: u64,
    pub store_bytes_removed: u64,
    pub store_bytes_added: u64,
    pub store_commits: u64,
}

impl CdcBatch {
    pub fn target_bytes_rewritten(&self) -> u64 {
        self.target_bytes_removed + self.target_bytes_added
    }

    pub fn store_bytes_rewritten(&self) -> u64 {
        self.store_bytes_removed + self.store_bytes_added
    }
}

/// A check that the figures are of a correct run.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Every figure of one broker.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerFigures {
    pub broker: String,
    /// What the broker is, and what its figures include.
    pub description: String,
    pub full: Run,
    pub incremental: Run,
    pub merge: Merge,
    pub freshness: Freshness,
    pub checks: Vec<Check>,
    /// A known fault of the broker that its figures carry (its failed checks do not fail
    /// the benchmark).
    pub caveat: Option<String>,
}

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gb: f64,
    pub os: String,
    pub medallion: String,
    pub build: &'static str,
    pub librdkafka: String,
    pub components: &'static str,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| std::env::consts::ARCH.into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let os = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| format!("{} {}", std::env::consts::OS, r.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.into());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gb: (memory_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os,
            medallion: env!("CARGO_PKG_VERSION").into(),
            build: if cfg!(debug_assertions) {
                "debug (figures are not representative: use cargo run --release -- bench)"
            } else {
                "release"
            },
            librdkafka: rdkafka::util::get_rdkafka_version().1,
            components: "deltalake 1.1 (DataFusion), rdkafka 0.39, tansu-broker 0.6.0",
        }
    }
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub command: String,
    pub machine: Machine,
    pub rows: u64,
    pub indices: u32,
    pub input_mb: f64,
    /// The bundle's `batch_rows`: rows per streaming commit, which memory follows.
    pub batch_rows: usize,
    pub brokers: Vec<BrokerFigures>,
    /// Brokers that were asked for and could not be measured, with the reason.
    pub skipped: Vec<(String, String)>,
    pub peers: Option<serde_json::Value>,
    /// medallion's figure over the peer's, per comparable figure (< 1: medallion faster).
    pub ratios: Vec<Ratio>,
    /// AUTO CDC, SCD Type 2 and Type 1 (`--cdc-keys`; none with `--cdc-keys 0`).
    pub cdc: Option<CdcFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub figure: String,
    pub medallion_seconds: f64,
    pub peer: String,
    pub peer_seconds: f64,
    /// medallion / peer time.
    pub ratio: f64,
}

impl BenchReport {
    /// Whether a check failed on a broker without a known fault, or of the CDC figure.
    pub fn failed(&self) -> bool {
        let cdc = self
            .cdc
            .iter()
            .flat_map(|c| &c.types)
            .flat_map(|t| &t.checks);
        self.brokers
            .iter()
            .filter(|b| b.caveat.is_none())
            .flat_map(|b| &b.checks)
            .chain(cdc)
            .any(|c| !c.ok)
    }

    /// The readable form: one table per broker, then freshness, memory and the peers.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let measured = if self.brokers.is_empty() && self.skipped.is_empty() {
            "the AUTO CDC figure only".to_string()
        } else {
            format!(
                "{} rows, {} indices, {:.1} MB of CSV, batch_rows {}",
                self.rows, self.indices, self.input_mb, self.batch_rows
            )
        };
        let _ = writeln!(
            out,
            "medallion bench · {measured}\nmachine: {} · {} cores · {} GB · {} · {} build",
            m.cpu, m.cores, m.memory_gb, m.os, m.build
        );
        for b in &self.brokers {
            let _ = writeln!(out, "\n== broker: {} ({})", b.broker, b.description);
            let _ = writeln!(
                out,
                "{:<44} {:>10} {:>12} {:>8} {:>9} | {:>9}",
                "stage (whole job from empty)", "rows", "rows/s", "MB/s", "seconds", "incr. s"
            );
            for s in &b.full.stages {
                let incr = b
                    .incremental
                    .stage(&s.task)
                    .map_or(String::new(), |i| format!("{:.3}", i.seconds));
                let _ = writeln!(
                    out,
                    "{:<44} {:>10} {:>12.0} {:>8.1} {:>9.3} | {:>9}",
                    format!("{} ({})", s.task, s.stage),
                    s.rows,
                    s.rows_per_s,
                    s.mb_per_s,
                    s.seconds,
                    incr
                );
            }
            let _ = writeln!(
                out,
                "end to end (process wall, broker start included): {:.2} s, peak RSS {:.0} MB",
                b.full.wall_seconds, b.full.peak_rss_mb
            );
            let _ = writeln!(
                out,
                "incremental (one new day per index into {} rows): {:.2} s wall, peak RSS {:.0} MB",
                self.rows, b.incremental.wall_seconds, b.incremental.peak_rss_mb
            );
            let _ = writeln!(
                out,
                "SCD2 MERGE of {} changed and new rows into a {}-row history: {:.3} s, the median of {} runs ({:.3}-{:.3} s; {} versions written)",
                b.merge.change_rows,
                b.merge.history_rows,
                b.merge.seconds,
                b.merge.runs_seconds.len(),
                b.merge.min_seconds,
                b.merge.max_seconds,
                b.merge.versions_written
            );
            let f = &b.freshness;
            let _ = writeln!(
                out,
                "freshness, --continuous --interval {}ms, {} files: p50 {:.3} s, p99 {:.3} s, max {:.3} s",
                f.interval_ms, f.files, f.p50_seconds, f.p99_seconds, f.max_seconds
            );
            render_checks(&mut out, &b.checks);
            if let Some(caveat) = &b.caveat {
                let _ = writeln!(out, "caveat: {caveat}");
            }
        }
        for (broker, why) in &self.skipped {
            let _ = writeln!(out, "\nbroker {broker} skipped: {why}");
        }
        if let Some(cdc) = &self.cdc {
            cdc.render(&mut out);
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(
                out,
                "\n== peers (medallion time / peer time; below 1 is faster)"
            );
            for r in &self.ratios {
                let _ = writeln!(
                    out,
                    "{:<52} medallion {:>8.3} s · {:<22} {:>8.3} s · ratio {:.2}",
                    r.figure, r.medallion_seconds, r.peer, r.peer_seconds, r.ratio
                );
            }
        }
        out
    }
}

fn render_checks(out: &mut String, checks: &[Check]) {
    for c in checks {
        let mark = if c.ok { "ok" } else { "FAILED" };
        let _ = writeln!(out, "check {mark}: {} ({})", c.name, c.detail);
    }
}

/// A size in MB, or in kB below 1 MB.
fn size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

impl CdcFigures {
    fn render(&self, out: &mut String) {
        let m = &self.mix;
        let _ = writeln!(
            out,
            "\n== AUTO CDC: {} keys, {} batches of {} events (1% of the keys, in random key order; over all batches {} updates, {} untracked-only, {} deletes, {} late); {} live keys at the end",
            self.keys, self.batches, self.events_per_batch, m.updates, m.untracked, m.deletes, m.late, self.live_keys
        );
        for t in &self.types {
            if let Some(i) = &t.initial {
                let _ = writeln!(
                    out,
                    "SCD TYPE {} initial load of {} events: {:.3} s ({:.0} rows/s), {} written",
                    t.scd_type,
                    i.events,
                    i.seconds,
                    i.rows_per_s,
                    size(i.target_bytes_added)
                );
            }
            let _ = writeln!(
                out,
                "SCD TYPE {} batch of {} events: {:.3} s, {:.0} rows/s, the median of {} batches ({:.3}-{:.3} s); rewritten per batch (removed + added): {} in the target (now {} in {} file(s), {} rows), {} in the event store (now {})",
                t.scd_type,
                self.events_per_batch,
                t.seconds,
                t.rows_per_s,
                t.batches.len(),
                t.min_seconds,
                t.max_seconds,
                size(t.target_bytes_rewritten),
                size(t.target_bytes),
                t.target_files,
                t.target_rows,
                size(t.store_bytes_rewritten),
                size(t.store_bytes)
            );
            render_checks(out, &t.checks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(|i| i as f64 / 100.0).rev().collect();
        let f = Freshness::from_samples(200, samples);
        assert_eq!(f.p50_seconds, 0.5);
        assert_eq!(f.p99_seconds, 0.99);
        assert_eq!(f.max_seconds, 1.0);
        assert_eq!(f.files, 100);
        assert_eq!(f.samples_seconds[0], 1.0, "samples keep their order");
        let one = Freshness::from_samples(200, vec![0.3]);
        assert_eq!((one.p50_seconds, one.p99_seconds), (0.3, 0.3));
    }

    #[test]
    fn the_merge_figure_is_the_median_of_its_runs() {
        let m = Merge::from_runs(100, 10, vec![0.15, 0.11, 0.30, 0.12, 0.13], 12);
        assert_eq!(m.seconds, 0.13);
        assert_eq!((m.min_seconds, m.max_seconds), (0.11, 0.30));
        assert_eq!(m.runs_seconds[0], 0.15, "runs keep their order");
    }
}
