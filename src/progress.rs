//! Progress of a running task, and its summary when it ends.
//!
//! On a terminal, a live line shows files, rows and rows/s. Elsewhere (CI, cron, a pipe)
//! the same figures go out as a plain log line every few seconds, so that logs stay
//! readable and a stuck task is still visible.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const LOG_EVERY: Duration = Duration::from_secs(5);

/// Live counters of one task.
pub struct Progress {
    task: String,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Mutex<Instant>,
    files: AtomicU64,
    total_files: AtomicU64,
    rows: AtomicU64,
}

impl Progress {
    /// Starts reporting for `task`. `interactive` decides between a live bar and log lines.
    pub fn new(task: &str, interactive: bool) -> Self {
        let bar = interactive.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} [{elapsed}]")
                    .expect("valid template"),
            );
            bar.set_prefix(task.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            task: task.into(),
            bar,
            started: Instant::now(),
            last_log: Mutex::new(Instant::now()),
            files: AtomicU64::new(0),
            total_files: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    /// Whether stderr is a terminal, where live progress makes sense.
    pub fn stderr_is_terminal() -> bool {
        std::io::stderr().is_terminal()
    }

    pub fn set_total_files(&self, n: u64) {
        self.total_files.store(n, Ordering::Relaxed);
        self.refresh();
    }

    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.refresh();
    }

    pub fn add_rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
        self.refresh();
    }

    fn line(&self) -> String {
        let rows = self.rows.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let total = self.total_files.load(Ordering::Relaxed);
        let files = if total > 0 {
            format!("{}/{} files, ", self.files.load(Ordering::Relaxed), total)
        } else {
            String::new()
        };
        format!("{files}{rows} rows, {:.0} rows/s", rows as f64 / secs)
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(self.line());
            return;
        }
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= LOG_EVERY {
            *last = Instant::now();
            tracing::info!(task = %self.task, "{}", self.line());
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Clears the live line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Succeeded,
    Failed,
    Skipped,
}

/// What a task did, printed at the end of a run (and written by `run --report-json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TaskSummary {
    pub task: String,
    pub state: TaskState,
    pub files: u64,
    pub rows_read: u64,
    /// Bytes of input read: landing-file bytes for ingest, Kafka key and value bytes for
    /// bronze, Parquet bytes of the source table for the Delta tasks.
    pub bytes_read: u64,
    pub rows_written: u64,
    pub rows_quarantined: u64,
    /// Rows deliberately not written, such as duplicates of a key already stored.
    pub rows_dropped: u64,
    /// Delta versions written, per table.
    pub versions: Vec<(String, i64)>,
    #[serde(with = "seconds", rename = "seconds")]
    pub elapsed: Duration,
    /// When the task started (set by the job's DAG; `None` for a flow's summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<chrono::DateTime<chrono::Utc>>,
    /// Notes worth a line each: warnings, skipped files, the error.
    pub notes: Vec<String>,
    /// A pipeline task's flows, each as a summary of its own (named after the flow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<TaskSummary>,
}

impl TaskSummary {
    pub fn new(task: &str) -> Self {
        TaskSummary {
            task: task.into(),
            state: TaskState::Succeeded,
            files: 0,
            rows_read: 0,
            bytes_read: 0,
            rows_written: 0,
            rows_quarantined: 0,
            rows_dropped: 0,
            versions: Vec::new(),
            elapsed: Duration::ZERO,
            started: None,
            notes: Vec::new(),
            flows: Vec::new(),
        }
    }

    /// This summary and its flows' summaries, the task first.
    pub fn with_flows(&self) -> impl Iterator<Item = &TaskSummary> {
        std::iter::once(self).chain(&self.flows)
    }
}

impl fmt::Display for TaskSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "FAILED",
            TaskState::Skipped => "skipped",
        };
        let secs = self.elapsed.as_secs_f64();
        writeln!(f, "── {} {} in {:.2}s", self.task, state, secs)?;
        if self.state == TaskState::Skipped {
            for note in &self.notes {
                writeln!(f, "   note: {note}")?;
            }
            return Ok(());
        }
        if self.files > 0 {
            writeln!(f, "   files         {}", self.files)?;
        }
        let rate = if secs > 0.0 {
            self.rows_read as f64 / secs
        } else {
            0.0
        };
        let mb = self.bytes_read as f64 / 1e6;
        if mb > 0.0 && secs > 0.0 {
            writeln!(
                f,
                "   rows read     {} ({rate:.0} rows/s, {mb:.1} MB at {:.1} MB/s)",
                self.rows_read,
                mb / secs
            )?;
        } else {
            writeln!(f, "   rows read     {} ({rate:.0} rows/s)", self.rows_read)?;
        }
        writeln!(f, "   rows written  {}", self.rows_written)?;
        writeln!(f, "   quarantined   {}", self.rows_quarantined)?;
        if self.rows_dropped > 0 {
            writeln!(f, "   dropped       {} (duplicates)", self.rows_dropped)?;
        }
        for (table, version) in &self.versions {
            writeln!(f, "   {table} → version {version}")?;
        }
        for note in &self.notes {
            writeln!(f, "   note: {note}")?;
        }
        for flow in &self.flows {
            // Indented under the pipeline task.
            for line in flow.to_string().lines() {
                writeln!(f, "   {line}")?;
            }
        }
        Ok(())
    }
}

/// A duration as seconds (a float) in JSON.
mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs: f64 = serde::Deserialize::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
