//! `medallion scheduler`: runs the deployed jobs of a target at their cron times.
//!
//! Each job with an unpaused schedule fires at the next time its Quartz expression gives
//! in its time zone. A job already running `max_concurrent_runs` times queues the new run
//! (`queue.enabled`) or skips it. Every run, its tasks and its end are recorded in the
//! Delta table `<catalog>.system.job_runs`, and notifications go out on start, success
//! and failure: webhooks by HTTP POST, email through the target's SMTP server. A run
//! that panics is recorded as failed with the panic's message, and no longer counts as
//! running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;

use crate::bundle::job::{JobDef, PauseStatus};
use crate::bundle::Settings;
use crate::catalog::TableName;
use crate::delta::{schema, DeltaError, DeltaSink, TableSpec};
use crate::job::{self, JobError, RunOptions, RunReport};
use crate::notify;
use crate::progress::TaskState;

/// Errors of the scheduler itself (a failing run is recorded, not an error).
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error("job `{job}`: {reason}")]
    Schedule { job: String, reason: String },
}

/// `<catalog>.system.job_runs`: one row per task of each run, and one for the run itself
/// (`task` NULL).
pub fn job_runs_table() -> TableSpec {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    TableSpec {
        name: TableName::new("system", "job_runs"),
        schema: schema(vec![
            Field::new("run_id", DataType::Utf8, false),
            Field::new("job", DataType::Utf8, false),
            Field::new("task", DataType::Utf8, true),
            Field::new("start", ts(), false),
            Field::new("end", ts(), false),
            Field::new("state", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("rows_read", DataType::Int64, false),
            Field::new("rows_written", DataType::Int64, false),
        ]),
        partition_columns: vec![],
        target_file_size: None,
    }
}

/// One row of `job_runs`.
struct RunRow {
    task: Option<String>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    state: &'static str,
    error: Option<String>,
    rows_read: i64,
    rows_written: i64,
}

fn state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Succeeded => "SUCCEEDED",
        TaskState::Failed => "FAILED",
        TaskState::Skipped => "SKIPPED",
    }
}

async fn record(
    settings: &Settings,
    run_id: &str,
    job: &str,
    rows: &[RunRow],
) -> Result<(), DeltaError> {
    let mut sink = DeltaSink::open(&settings.warehouse, job_runs_table()).await?;
    let us = |t: &DateTime<Utc>| t.timestamp_micros();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| run_id))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| job))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.task.as_deref()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| us(&r.start)))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| us(&r.end)))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.state))),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|r| r.error.as_deref().map(crate::secrets::mask)),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.rows_read),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.rows_written),
        )),
    ];
    let batch =
        RecordBatch::try_new(job_runs_table().schema, columns).expect("columns match job_runs");
    sink.append(vec![batch], vec![]).await?;
    Ok(())
}

/// The rows of a finished run: one per task, then the run's own.
fn run_rows(report: &RunReport, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<RunRow> {
    let mut rows: Vec<RunRow> = report
        .summaries
        .iter()
        .map(|s| RunRow {
            task: Some(s.task.clone()),
            // A task that did not run (skipped) spans the run.
            start: s.started.unwrap_or(start),
            end: s.started.map_or(end, |t| {
                t + chrono::Duration::from_std(s.elapsed).unwrap_or_default()
            }),
            state: state_name(s.state),
            error: (s.state == TaskState::Failed)
                .then(|| s.notes.last().cloned().unwrap_or_default()),
            rows_read: s.rows_read as i64,
            rows_written: s.rows_written as i64,
        })
        .collect();
    let failure = report.failure();
    rows.push(RunRow {
        task: None,
        start,
        end,
        state: if failure.is_some() {
            "FAILED"
        } else {
            "SUCCEEDED"
        },
        error: failure.map(|f| {
            format!(
                "task `{}` failed: {}",
                f.task,
                f.notes.last().cloned().unwrap_or_default()
            )
        }),
        rows_read: rows.iter().map(|r| r.rows_read).sum(),
        rows_written: rows.iter().map(|r| r.rows_written).sum(),
    });
    rows
}

/// Records a run that a command started (`run`, `bundle run`, `pipeline run`) in
/// `job_runs`, as the scheduler records its own: one row per task and one for the run.
pub async fn record_report(
    settings: &Settings,
    report: &RunReport,
    start: DateTime<Utc>,
) -> Result<(), DeltaError> {
    let rows = run_rows(report, start, Utc::now());
    record(
        settings,
        &uuid::Uuid::now_v7().to_string(),
        &report.job,
        &rows,
    )
    .await
}

/// What runs a job: [`job::run`], or a stand-in in tests.
pub type Runner = Arc<
    dyn Fn(Arc<Settings>, RunOptions) -> BoxFuture<'static, Result<RunReport, JobError>>
        + Send
        + Sync,
>;

/// The runner of real runs: [`job::run`].
pub fn job_runner() -> Runner {
    Arc::new(|settings, options| async move { job::run(&settings, &options).await }.boxed())
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs one job once, with notifications and the record in `job_runs`.
pub async fn run_once(
    settings: &Settings,
    key: &str,
    job: &JobDef,
) -> Result<bool, SchedulerError> {
    run_once_with(&job_runner(), &Arc::new(settings.clone()), key, job).await
}

/// [`run_once`] with the given runner. A panic of the run is caught and recorded as the
/// run's failure.
async fn run_once_with(
    runner: &Runner,
    settings: &Arc<Settings>,
    key: &str,
    job: &JobDef,
) -> Result<bool, SchedulerError> {
    let run_id = uuid::Uuid::now_v7().to_string();
    let start = Utc::now();
    notify::send(
        settings,
        job,
        &job.email_notifications.on_start,
        &job.webhook_notifications.on_start,
        &notify::Event::started(&run_id, job, start),
    )
    .await;
    let options = RunOptions {
        job: Some(key.to_string()),
        task: None,
        interactive: false,
    };
    let run = std::panic::AssertUnwindSafe(runner(settings.clone(), options)).catch_unwind();
    let outcome = match run.await {
        Ok(outcome) => outcome,
        Err(panic) => Err(JobError::Job(format!(
            "the run panicked: {}",
            panic_message(&*panic)
        ))),
    };
    let settings: &Settings = settings;
    let (rows, error) = match outcome {
        Ok(report) => {
            let rows = run_rows(&report, start, Utc::now());
            let error = rows.last().and_then(|r| r.error.clone());
            (rows, error)
        }
        Err(e) => (
            vec![RunRow {
                task: None,
                start,
                end: Utc::now(),
                state: "FAILED",
                error: Some(e.to_string()),
                rows_read: 0,
                rows_written: 0,
            }],
            Some(e.to_string()),
        ),
    };
    let end = rows.last().map_or_else(Utc::now, |r| r.end);
    record(settings, &run_id, &job.name, &rows).await?;
    let event = notify::Event::finished(&run_id, job, start, end, error.clone());
    if error.is_some() {
        tracing::error!(job = %job.name, run_id, "run failed: {}", error.as_deref().unwrap_or(""));
        notify::send(
            settings,
            job,
            &job.email_notifications.on_failure,
            &job.webhook_notifications.on_failure,
            &event,
        )
        .await;
    } else {
        tracing::info!(job = %job.name, run_id, "run succeeded");
        notify::send(
            settings,
            job,
            &job.email_notifications.on_success,
            &job.webhook_notifications.on_success,
            &event,
        )
        .await;
    }
    Ok(error.is_none())
}

/// What happens to a run that is due.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Start,
    Queue,
    Skip,
}

/// A due run starts if fewer than `max_concurrent_runs` are running; otherwise it waits
/// in the queue if the job has one, or is skipped.
fn admit(running: u32, max_concurrent_runs: u32, queue: bool) -> Admit {
    if running < max_concurrent_runs {
        Admit::Start
    } else if queue {
        Admit::Queue
    } else {
        Admit::Skip
    }
}

/// A job the scheduler watches.
struct Scheduled {
    key: String,
    job: JobDef,
    cron: croner::Cron,
    tz: chrono_tz::Tz,
    running: u32,
    queued: u32,
}

impl Scheduled {
    fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&now.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Runs the jobs of `settings` on their schedules until `stop` resolves, then waits for
/// the runs under way to finish.
pub async fn run(
    settings: Settings,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), SchedulerError> {
    run_with(job_runner(), settings, stop).await
}

/// Tells the scheduler that run of job `i` ended when dropped: when the run returns,
/// and also when it panics, so that a job never stays counted as running.
struct Ended {
    done: mpsc::UnboundedSender<usize>,
    i: usize,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.done.send(self.i);
    }
}

/// [`run`] with the given runner.
async fn run_with(
    runner: Runner,
    settings: Settings,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let settings = Arc::new(settings);
    let mut jobs = Vec::new();
    for (key, job) in &settings.jobs {
        let Some(schedule) = &job.schedule else {
            continue;
        };
        if schedule.pause_status == Some(PauseStatus::Paused) {
            tracing::info!(job = %job.name, "schedule is paused; not scheduled");
            continue;
        }
        let fail = |reason: String| SchedulerError::Schedule {
            job: key.clone(),
            reason,
        };
        let cron =
            crate::bundle::job::parse_cron(&schedule.quartz_cron_expression).map_err(fail)?;
        let tz = schedule
            .timezone_id
            .parse::<chrono_tz::Tz>()
            .map_err(|e| fail(e.to_string()))?;
        jobs.push(Scheduled {
            key: key.clone(),
            job: job.clone(),
            cron,
            tz,
            running: 0,
            queued: 0,
        });
    }
    tracing::info!(jobs = jobs.len(), target = %settings.target, "scheduler started");
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<usize>();
    let mut next: BTreeMap<usize, DateTime<Utc>> = BTreeMap::new();
    let now = Utc::now();
    for (i, j) in jobs.iter().enumerate() {
        if let Some(t) = j.next_after(now) {
            next.insert(i, t);
        }
    }
    tokio::pin!(stop);
    let start_run = |i: usize, jobs: &mut Vec<Scheduled>| {
        let j = &mut jobs[i];
        j.running += 1;
        let settings = settings.clone();
        let key = j.key.clone();
        let job = j.job.clone();
        let ended = Ended {
            done: done_tx.clone(),
            i,
        };
        let runner = runner.clone();
        tokio::spawn(async move {
            let _ended = ended;
            if let Err(e) = run_once_with(&runner, &settings, &key, &job).await {
                tracing::error!(job = %job.name, "cannot record the run: {e}");
            }
        });
    };
    loop {
        let due = next.iter().min_by_key(|(_, t)| **t).map(|(&i, &t)| (i, t));
        let sleep = due.map_or(Duration::from_secs(3600), |(_, t)| {
            (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
        });
        tokio::select! {
            _ = &mut stop => break,
            Some(i) = done_rx.recv() => {
                jobs[i].running -= 1;
                if jobs[i].queued > 0 {
                    jobs[i].queued -= 1;
                    start_run(i, &mut jobs);
                }
            }
            _ = tokio::time::sleep(sleep), if due.is_some() => {
                let (i, at) = due.expect("guarded");
                let j = &jobs[i];
                match admit(j.running, j.job.max_concurrent_runs, j.job.queue.enabled) {
                    Admit::Start => start_run(i, &mut jobs),
                    Admit::Queue => {
                        jobs[i].queued += 1;
                        tracing::info!(job = %jobs[i].job.name, "max_concurrent_runs reached; run queued");
                    }
                    Admit::Skip => {
                        tracing::warn!(job = %jobs[i].job.name, "max_concurrent_runs reached; run skipped");
                    }
                }
                match jobs[i].next_after(at) {
                    Some(t) => { next.insert(i, t); }
                    None => { next.remove(&i); }
                }
            }
        }
    }
    tracing::info!("scheduler stopping: waiting for the runs under way");
    drop(done_tx);
    while jobs.iter().any(|j| j.running > 0) {
        match done_rx.recv().await {
            Some(i) => jobs[i].running -= 1,
            None => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::util::display::array_value_to_string;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Settings of a bundle in `dir` with one job `j`, scheduled every second, unpaused.
    fn settings(dir: &std::path::Path) -> Settings {
        let yaml = r#"
bundle: { name: b }
variables:
  landing_dir: { description: l, default: landing }
  warehouse_dir: { description: w, default: warehouse }
  state_dir: { description: s, default: state }
  kafka_bootstrap_servers: { description: k, default: "" }
  kafka_topic: { description: t, default: T }
  kafka_partitions: { description: p, default: 1 }
resources:
  jobs:
    j:
      name: j
      tasks: []
      schedule: { quartz_cron_expression: "* * * * * ?", timezone_id: UTC, pause_status: UNPAUSED }
targets:
  dev: { default: true }
"#;
        let file = dir.join("medallion.yml");
        std::fs::write(&file, yaml).unwrap();
        crate::bundle::Bundle::load(&file)
            .unwrap()
            .resolve(None, &[])
            .unwrap()
    }

    fn report(settings: &Settings) -> RunReport {
        RunReport {
            target: settings.target.clone(),
            job: "j".into(),
            kafka: None,
            summaries: vec![],
            peak_rss_bytes: None,
        }
    }

    /// The run-level rows of `job_runs`: state and error.
    async fn recorded(settings: &Settings) -> Vec<(String, String)> {
        let table = crate::sql::open(&settings.warehouse, &job_runs_table().name)
            .await
            .unwrap();
        let batches = crate::sql::query_table(
            &table,
            "SELECT state, coalesce(error, '') FROM t WHERE task IS NULL ORDER BY start",
        )
        .await
        .unwrap();
        let mut rows = Vec::new();
        for b in batches {
            for r in 0..b.num_rows() {
                let cell = |c| array_value_to_string(b.column(c), r).unwrap();
                rows.push((cell(0), cell(1)));
            }
        }
        rows
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_run_is_recorded_as_failed_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Arc::new(settings(dir.path()));
        let job = settings.jobs["j"].clone();
        let runner: Runner = Arc::new(|_, _| async { panic!("boom in the run") }.boxed());
        let ok = run_once_with(&runner, &settings, "j", &job).await.unwrap();
        assert!(!ok);
        assert_eq!(
            recorded(&settings).await,
            [(
                "FAILED".to_string(),
                "the run panicked: boom in the run".to_string()
            )]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_run_is_recorded_with_its_secrets_masked() {
        crate::secrets::register("sched-secret-1999");
        let dir = tempfile::tempdir().unwrap();
        let settings = Arc::new(settings(dir.path()));
        let job = settings.jobs["j"].clone();
        let runner: Runner = Arc::new(|_, _| {
            async { Err(JobError::Job("login with sched-secret-1999 refused".into())) }.boxed()
        });
        run_once_with(&runner, &settings, "j", &job).await.unwrap();
        assert_eq!(
            recorded(&settings).await,
            [("FAILED".to_string(), "login with *** refused".to_string())]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_run_does_not_stay_counted_as_running() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let calls = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(tokio::sync::Notify::new());
        let runner: Runner = {
            let (calls, done, settings) = (calls.clone(), done.clone(), settings.clone());
            Arc::new(move |_, _| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let (done, report) = (done.clone(), report(&settings));
                async move {
                    if n == 0 {
                        panic!("the first run panics");
                    }
                    done.notify_one();
                    Ok(report)
                }
                .boxed()
            })
        };
        // max_concurrent_runs is 1 and there is no queue: a run still counted as running
        // would have every later run skipped.
        let second = async {
            let _ = tokio::time::timeout(Duration::from_secs(10), done.notified()).await;
        };
        run_with(runner, settings.clone(), second).await.unwrap();
        assert!(
            calls.load(Ordering::SeqCst) >= 2,
            "the job ran again after the panic"
        );
        assert_eq!(
            recorded(&settings).await[0],
            (
                "FAILED".to_string(),
                "the run panicked: the first run panics".to_string()
            )
        );
    }

    #[tokio::test]
    async fn a_run_that_panics_outside_the_catch_still_ends() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let _ended = Ended { done: tx, i: 7 };
            panic!("while recording");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(rx.recv().await, Some(7));
    }

    #[test]
    fn runs_beyond_max_concurrent_runs_queue_or_skip() {
        assert_eq!(admit(0, 1, false), Admit::Start);
        assert_eq!(admit(1, 1, true), Admit::Queue);
        assert_eq!(admit(1, 1, false), Admit::Skip);
        assert_eq!(admit(1, 2, false), Admit::Start);
    }

    #[test]
    fn the_next_time_follows_the_time_zone() {
        let job: JobDef = serde_yaml::from_str("name: j\ntasks: []").unwrap();
        let s = Scheduled {
            key: "j".into(),
            job,
            cron: crate::bundle::job::parse_cron("0 0 6 * * ?").unwrap(),
            tz: "America/New_York".parse().unwrap(),
            running: 0,
            queued: 0,
        };
        // 06:00 in New York on 2026-01-15 (EST, UTC-5) is 11:00 UTC.
        let now = DateTime::parse_from_rfc3339("2026-01-15T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            s.next_after(now).unwrap().to_rfc3339(),
            "2026-01-15T11:00:00+00:00"
        );
        // In July (EDT, UTC-4) it is 10:00 UTC.
        let now = DateTime::parse_from_rfc3339("2026-07-15T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            s.next_after(now).unwrap().to_rfc3339(),
            "2026-07-15T10:00:00+00:00"
        );
    }
}
