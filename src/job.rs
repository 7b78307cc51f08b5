//! The job `kafka_stream_job`: its tasks as a DAG, run with a trigger.
//!
//! The stock job: `ingest → bronze → silver_gold` (a `pipeline_task`).
//!
//! A task starts when every task it depends on has succeeded; independent branches run at
//! the same time. When a task fails, its dependents are skipped and the others finish.
//! The *available now* trigger runs the DAG once; the continuous trigger runs it again
//! every interval until it is interrupted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::broker::{BrokerError, BrokerStorage, EmbeddedBroker};
use crate::bundle::job::{JobDef, TaskDef, TaskKind};
use crate::bundle::Settings;
use crate::kafka::{KafkaClientError, KafkaEndpoint};
use crate::lock::{run_lock_path, FileLock, LockError, RUN_LOCK_WAIT};
use crate::progress::{Progress, TaskState, TaskSummary};
use crate::tasks::{self, TaskContext};

/// How long a read may wait for records it knows exist.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The log target of the lines that say when a task starts and ends (debug level).
pub const DAG_LOG: &str = "medallion::dag";

/// Errors that stop a run before its tasks start.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("job `{job}` has no task `{task}`. Its tasks are: {known}")]
    UnknownTask {
        job: String,
        task: String,
        known: String,
    },
    #[error("{0}")]
    Job(String),
}

/// Runs one task of a job with its settings.
async fn run_task(
    task: &TaskDef,
    ctx: &TaskContext,
    progress: Arc<Progress>,
) -> Result<TaskSummary, String> {
    fn text(e: impl std::fmt::Display) -> String {
        e.to_string()
    }
    let mut summary = match &task.kind {
        TaskKind::CsvToKafka(s) => tasks::ingest::run(ctx, s, progress).await.map_err(text),
        TaskKind::KafkaToDelta(s) => tasks::bronze::run(ctx, s, progress).await.map_err(text),
        TaskKind::PipelineTask(t) => run_pipeline(ctx, t, &task.task_key, progress).await,
    }?;
    summary.task = task.task_key.clone();
    Ok(summary)
}

/// A `pipeline_task`: an update of the pipeline, as one task's summary. A failed flow
/// fails the task.
async fn run_pipeline(
    ctx: &TaskContext,
    task: &crate::bundle::job::PipelineTask,
    key: &str,
    progress: Arc<Progress>,
) -> Result<TaskSummary, String> {
    let spec = crate::pipeline::select(&ctx.settings, Some(&task.pipeline_id))
        .map_err(|e| e.to_string())?;
    let selection = crate::pipeline::Selection {
        full_refresh_all: task.full_refresh,
        ..Default::default()
    };
    let report = crate::pipeline::update(&ctx.settings, spec, &selection)
        .await
        .map_err(|e| e.to_string())?;
    let summary = report.summary(key, progress.elapsed());
    progress.add_rows(summary.rows_read);
    Ok(summary)
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The job to run (its key under `resources.jobs`); the bundle's only job if `None`.
    pub job: Option<String>,
    /// Run only this task (its `task_key`).
    pub task: Option<String>,
    /// Show live progress (a terminal) rather than log lines.
    pub interactive: bool,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    pub target: String,
    /// The job's name (in development mode, `[dev <user>] <name>`).
    pub job: String,
    /// The Kafka the run used, if any of its tasks needed one.
    pub kafka: Option<String>,
    pub summaries: Vec<TaskSummary>,
    /// The process's peak resident memory so far, in bytes (Linux only).
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
}

/// This process's peak resident memory in bytes: `VmHWM` of /proc/self/status, the
/// high-water mark of its own pages since it started. (`ru_maxrss` is not that: Linux
/// carries the parent's resident size at fork into it.) `None` where there is no /proc.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

impl RunReport {
    /// The first task that failed, with its error.
    pub fn failure(&self) -> Option<&TaskSummary> {
        self.summaries.iter().find(|s| s.state == TaskState::Failed)
    }

    /// The summary of a task, or of a flow of a pipeline task, by name.
    pub fn summary(&self, name: &str) -> Option<&TaskSummary> {
        self.summaries
            .iter()
            .flat_map(TaskSummary::with_flows)
            .find(|s| s.task == name)
    }
}

/// A connection to Kafka for the length of a run (or of a continuous run).
struct Session {
    /// Held for the whole run: one run of a target at a time.
    _lock: FileLock,
    ctx: Arc<TaskContext>,
    broker: Option<EmbeddedBroker>,
    job: JobDef,
    tasks: Vec<TaskDef>,
}

impl Session {
    /// A session for `runs`: one run closes its ingest producer once the ingest is done;
    /// many keep it from run to run.
    async fn open(
        settings: &Settings,
        options: &RunOptions,
        runs: Runs,
    ) -> Result<Session, JobError> {
        let (job, tasks) = selected(settings, options)?;
        let lock_path = run_lock_path(&settings.state_dir);
        let lock =
            tokio::task::spawn_blocking(move || FileLock::acquire(&lock_path, RUN_LOCK_WAIT))
                .await
                .expect("lock task panicked")?;
        let needs_kafka = tasks.iter().any(|t| t.kind.uses_kafka());
        let mut broker = None;
        let mut kafka = None;
        if needs_kafka {
            let endpoint = match &settings.kafka.bootstrap_servers {
                Some(servers) => KafkaEndpoint::new(servers, settings.kafka.client.clone()),
                None => {
                    let b = EmbeddedBroker::start(BrokerStorage::in_state_dir(&settings.state_dir))
                        .await?;
                    tracing::info!(bootstrap = %b.bootstrap(), "started the embedded broker");
                    let e = KafkaEndpoint::new(b.bootstrap(), settings.kafka.client.clone());
                    broker = Some(b);
                    e
                }
            };
            let replication = if settings.kafka.bootstrap_servers.is_some() {
                -1
            } else {
                1
            };
            let mut partitions = BTreeMap::new();
            for topic in job.topics() {
                let info = endpoint
                    .ensure_topic(&topic, settings.kafka.partitions, replication)
                    .await?;
                partitions.insert(topic, info.partitions);
            }
            kafka = Some(tasks::Kafka {
                endpoint,
                partitions,
                producer: match runs {
                    Runs::One => tasks::ingest::ProducerSlot::once(),
                    Runs::Many => Default::default(),
                },
            });
        }
        let ctx = Arc::new(TaskContext {
            settings: settings.clone(),
            kafka,
            batch_rows: settings.batch_rows,
            idle_timeout: IDLE_TIMEOUT,
        });
        Ok(Session {
            _lock: lock,
            ctx,
            broker,
            job,
            tasks,
        })
    }

    async fn close(self) {
        if let Some(kafka) = &self.ctx.kafka {
            // Before the broker stops, so that the producer does not retry against it.
            kafka.producer.clear();
        }
        if let Some(b) = self.broker {
            b.stop().await;
        }
    }
}

/// The job to run, and its tasks to run (all, or the one `--task` names).
fn selected(settings: &Settings, options: &RunOptions) -> Result<(JobDef, Vec<TaskDef>), JobError> {
    let job = match &options.job {
        Some(key) => settings.jobs.get(key).ok_or_else(|| {
            JobError::Job(format!(
                "the bundle has no job `{key}`; its jobs are: {}",
                settings.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?,
        None => match settings.jobs.values().collect::<Vec<_>>().as_slice() {
            [one] => *one,
            [] => {
                return Err(JobError::Job(
                    "the bundle defines no job under resources.jobs".into(),
                ))
            }
            _ => {
                return Err(JobError::Job(format!(
                    "the bundle has several jobs ({}); name one with --job",
                    settings.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
        },
    };
    let tasks: Vec<TaskDef> = match &options.task {
        None => job.order().into_iter().cloned().collect(),
        Some(key) => vec![job
            .tasks
            .iter()
            .find(|t| &t.task_key == key)
            .cloned()
            .ok_or_else(|| JobError::UnknownTask {
                job: job.name.clone(),
                task: key.clone(),
                known: job
                    .tasks
                    .iter()
                    .map(|t| t.task_key.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?],
    };
    Ok((job.clone(), tasks))
}

/// How many runs a session serves.
#[derive(Clone, Copy)]
enum Runs {
    One,
    Many,
}

/// Runs the job once with the *available now* trigger.
pub async fn run(settings: &Settings, options: &RunOptions) -> Result<RunReport, JobError> {
    let session = Session::open(settings, options, Runs::One).await?;
    let report = run_dag(&session.ctx, &session.job, &session.tasks, options).await;
    session.close().await;
    Ok(report)
}

/// Runs the job every `interval` until `stop` resolves (Ctrl-C), then returns after the
/// run under way has committed. `stop` is watched during the runs too (the first one
/// included), so that it is heard at once. `each` sees every run's report.
pub async fn run_continuous(
    settings: &Settings,
    options: &RunOptions,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
    mut each: impl FnMut(&RunReport),
) -> Result<(), JobError> {
    let session = Session::open(settings, options, Runs::Many).await?;
    tokio::pin!(stop);
    loop {
        let run = run_dag(&session.ctx, &session.job, &session.tasks, options);
        tokio::pin!(run);
        let mut stopping = false;
        let report = tokio::select! {
            report = &mut run => report,
            _ = &mut stop => {
                stopping = true;
                run.await
            }
        };
        each(&report);
        if stopping {
            break;
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    session.close().await;
    Ok(())
}

/// Runs `tasks` as a DAG and collects their summaries, in DAG order.
async fn run_dag(
    ctx: &Arc<TaskContext>,
    job: &JobDef,
    tasks: &[TaskDef],
    options: &RunOptions,
) -> RunReport {
    let selected: Vec<&str> = tasks.iter().map(|t| t.task_key.as_str()).collect();
    let mut started: BTreeMap<tokio::task::Id, usize> = BTreeMap::new();
    let mut summaries: BTreeMap<usize, TaskSummary> = BTreeMap::new();
    let mut running = JoinSet::new();
    let state = |summaries: &BTreeMap<usize, TaskSummary>, key: &str| {
        let i = tasks.iter().position(|t| t.task_key == key)?;
        summaries.get(&i).map(|s| s.state)
    };
    loop {
        for (i, task) in tasks.iter().enumerate() {
            if started.values().any(|&s| s == i) || summaries.contains_key(&i) {
                continue;
            }
            let deps: Vec<Option<TaskState>> = task
                .depends_on
                .iter()
                .filter(|d| selected.contains(&d.task_key.as_str()))
                .map(|d| state(&summaries, &d.task_key))
                .collect();
            if deps
                .iter()
                .any(|s| matches!(s, Some(TaskState::Failed | TaskState::Skipped)))
            {
                let mut skipped = TaskSummary::new(&task.task_key);
                skipped.state = TaskState::Skipped;
                summaries.insert(i, skipped);
                continue;
            }
            if deps.iter().all(|s| *s == Some(TaskState::Succeeded)) {
                let ctx = ctx.clone();
                let task = task.clone();
                let interactive = options.interactive;
                let handle = running.spawn(async move {
                    // `MEDALLION_LOG=medallion::dag=debug` shows when each task starts and
                    // ends: the crash tests kill a run between the two.
                    tracing::debug!(target: DAG_LOG, "task `{}` started", task.task_key);
                    let progress = Arc::new(Progress::new(&task.task_key, interactive));
                    let began = chrono::Utc::now();
                    let mut summary = match run_task(&task, &ctx, progress.clone()).await {
                        Ok(summary) => summary,
                        Err(error) => {
                            tracing::error!(task = %task.task_key, "{error}");
                            let mut s = TaskSummary::new(&task.task_key);
                            s.state = TaskState::Failed;
                            s.notes.push(error);
                            s.elapsed = progress.elapsed();
                            s
                        }
                    };
                    summary.started = Some(began);
                    progress.finish();
                    tracing::debug!(
                        target: DAG_LOG,
                        "task `{}` ended: {:?}",
                        task.task_key,
                        summary.state
                    );
                    summary
                });
                started.insert(handle.id(), i);
            }
        }
        // A task whose dependency was just skipped is skipped in the next pass.
        if running.is_empty() {
            if summaries.len() == tasks.len() {
                break;
            }
            continue;
        }
        match running.join_next_with_id().await {
            Some(Ok((id, summary))) => {
                let i = started
                    .remove(&id)
                    .expect("every running task was recorded");
                summaries.insert(i, summary);
                release_freed_memory();
            }
            Some(Err(panic)) => {
                // A panicking task is a bug; report it like a failure and go on.
                let i = started
                    .remove(&panic.id())
                    .expect("every running task was recorded");
                let key = &tasks[i].task_key;
                tracing::error!(task = %key, "the task panicked: {panic}");
                let mut s = TaskSummary::new(key);
                s.state = TaskState::Failed;
                s.notes.push(format!("panicked: {panic}"));
                summaries.insert(i, s);
            }
            None => {}
        }
    }
    RunReport {
        target: ctx.settings.target.clone(),
        job: job.name.clone(),
        kafka: ctx.kafka.as_ref().map(|k| k.endpoint.bootstrap.clone()),
        summaries: summaries.into_values().collect(),
        peak_rss_bytes: peak_rss(),
    }
}

/// Gives what a finished task freed back to the system, so that the next tasks grow from
/// what is live rather than from the finished task's high-water mark: glibc keeps freed
/// blocks smaller than its mmap threshold in its heap.
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own heap.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_this_process_high_water_mark() {
        let before = peak_rss().expect("Linux has /proc/self/status");
        // 64 MB, touched so that it is resident.
        let block = vec![1u8; 64 << 20];
        assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
        let after = peak_rss().unwrap();
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        drop(block);
        // A high-water mark: freeing does not lower it (beyond the slack of the kernel's
        // per-CPU page counters, a few hundred KB).
        assert!(peak_rss().unwrap() + (4 << 20) >= after);
    }
}
