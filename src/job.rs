//! The job `kafka_stream_job`: its tasks as a DAG, run with a trigger.
//!
//! `ingest → bronze → {close_price → current_close, stocks} → stocks_close → updated_stocks`
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
use crate::bundle::Settings;
use crate::kafka::{KafkaClientError, KafkaEndpoint};
use crate::progress::{Progress, TaskState, TaskSummary};
use crate::tasks::{self, TaskContext};

/// How long a read may wait for records it knows exist.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors that stop a run before its tasks start.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error("unknown task `{0}`. The tasks are: {names}", names = Task::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "))]
    UnknownTask(String),
}

/// A task of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    Ingest,
    Bronze,
    ClosePrice,
    CurrentClose,
    Stocks,
    StocksClose,
    UpdatedStocks,
}

impl Task {
    /// Every task, in an order where each comes after the tasks it depends on.
    pub const ALL: &'static [Task] = &[
        Task::Ingest,
        Task::Bronze,
        Task::ClosePrice,
        Task::CurrentClose,
        Task::Stocks,
        Task::StocksClose,
        Task::UpdatedStocks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::Ingest => "ingest",
            Task::Bronze => "bronze",
            Task::ClosePrice => "close_price",
            Task::CurrentClose => "current_close",
            Task::Stocks => "stocks",
            Task::StocksClose => "stocks_close",
            Task::UpdatedStocks => "updated_stocks",
        }
    }

    pub fn depends_on(self) -> &'static [Task] {
        match self {
            Task::Ingest => &[],
            Task::Bronze => &[Task::Ingest],
            Task::ClosePrice | Task::Stocks => &[Task::Bronze],
            Task::CurrentClose => &[Task::ClosePrice],
            Task::StocksClose => &[Task::CurrentClose, Task::Stocks],
            Task::UpdatedStocks => &[Task::StocksClose],
        }
    }

    fn uses_kafka(self) -> bool {
        matches!(self, Task::Ingest | Task::Bronze)
    }

    pub fn parse(name: &str) -> Result<Task, JobError> {
        Task::ALL
            .iter()
            .copied()
            .find(|t| t.name() == name)
            .ok_or_else(|| JobError::UnknownTask(name.into()))
    }

    async fn run(self, ctx: &TaskContext, progress: Arc<Progress>) -> Result<TaskSummary, String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        match self {
            Task::Ingest => tasks::ingest::run(ctx, progress).await.map_err(|x| e(&x)),
            Task::Bronze => tasks::bronze::run(ctx, progress).await.map_err(|x| e(&x)),
            Task::ClosePrice => tasks::close_price::run(ctx, progress)
                .await
                .map_err(|x| e(&x)),
            Task::CurrentClose => tasks::close_price::run_current(ctx, progress)
                .await
                .map_err(|x| e(&x)),
            Task::Stocks => tasks::stocks::run(ctx, progress).await.map_err(|x| e(&x)),
            Task::StocksClose => tasks::stocks_close::run(ctx, progress)
                .await
                .map_err(|x| e(&x)),
            Task::UpdatedStocks => tasks::updated_stocks::run(ctx, progress)
                .await
                .map_err(|x| e(&x)),
        }
    }
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run only this task.
    pub task: Option<Task>,
    /// Show live progress (a terminal) rather than log lines.
    pub interactive: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub target: String,
    /// The Kafka the run used, if any of its tasks needed one.
    pub kafka: Option<String>,
    pub summaries: Vec<TaskSummary>,
}

impl RunReport {
    /// The first task that failed, with its error.
    pub fn failure(&self) -> Option<&TaskSummary> {
        self.summaries.iter().find(|s| s.state == TaskState::Failed)
    }
}

/// A connection to Kafka for the length of a run (or of a continuous run).
struct Session {
    ctx: Arc<TaskContext>,
    broker: Option<EmbeddedBroker>,
}

impl Session {
    async fn open(settings: &Settings, options: &RunOptions) -> Result<Session, JobError> {
        let needs_kafka = selected(options).iter().any(|t| t.uses_kafka());
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
            let topic = endpoint
                .ensure_topic(
                    &settings.kafka.topic,
                    settings.kafka.partitions,
                    replication,
                )
                .await?;
            kafka = Some(tasks::Kafka {
                endpoint,
                partitions: topic.partitions,
            });
        }
        let ctx = Arc::new(TaskContext {
            settings: settings.clone(),
            kafka,
            batch_rows: settings.batch_rows,
            idle_timeout: IDLE_TIMEOUT,
        });
        Ok(Session { ctx, broker })
    }

    async fn close(self) {
        if let Some(b) = self.broker {
            b.stop().await;
        }
    }
}

fn selected(options: &RunOptions) -> Vec<Task> {
    match options.task {
        Some(t) => vec![t],
        None => Task::ALL.to_vec(),
    }
}

/// Runs the job once with the *available now* trigger.
pub async fn run(settings: &Settings, options: &RunOptions) -> Result<RunReport, JobError> {
    let session = Session::open(settings, options).await?;
    let report = run_dag(&session.ctx, options).await;
    session.close().await;
    Ok(report)
}

/// Runs the job every `interval` until `stop` resolves (Ctrl-C), then returns after the
/// run under way has committed. `each` sees every run's report.
pub async fn run_continuous(
    settings: &Settings,
    options: &RunOptions,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
    mut each: impl FnMut(&RunReport),
) -> Result<(), JobError> {
    let session = Session::open(settings, options).await?;
    tokio::pin!(stop);
    loop {
        let report = run_dag(&session.ctx, options).await;
        each(&report);
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    session.close().await;
    Ok(())
}

/// Runs the selected tasks as a DAG and collects their summaries, in DAG order.
async fn run_dag(ctx: &Arc<TaskContext>, options: &RunOptions) -> RunReport {
    let tasks = selected(options);
    let mut started: BTreeMap<tokio::task::Id, Task> = BTreeMap::new();
    let mut summaries: BTreeMap<Task, TaskSummary> = BTreeMap::new();
    let mut running = JoinSet::new();
    loop {
        for &task in &tasks {
            if started.values().any(|t| *t == task) || summaries.contains_key(&task) {
                continue;
            }
            let deps: Vec<Option<TaskState>> = task
                .depends_on()
                .iter()
                .filter(|d| tasks.contains(d))
                .map(|d| summaries.get(d).map(|s| s.state))
                .collect();
            if deps
                .iter()
                .any(|s| matches!(s, Some(TaskState::Failed | TaskState::Skipped)))
            {
                let mut skipped = TaskSummary::new(task.name());
                skipped.state = TaskState::Skipped;
                summaries.insert(task, skipped);
                continue;
            }
            if deps.iter().all(|s| *s == Some(TaskState::Succeeded)) {
                let ctx = ctx.clone();
                let interactive = options.interactive;
                let handle = running.spawn(async move {
                    let progress = Arc::new(Progress::new(task.name(), interactive));
                    let summary = match task.run(&ctx, progress.clone()).await {
                        Ok(summary) => summary,
                        Err(error) => {
                            tracing::error!(task = task.name(), "{error}");
                            let mut s = TaskSummary::new(task.name());
                            s.state = TaskState::Failed;
                            s.notes.push(error);
                            s.elapsed = progress.elapsed();
                            s
                        }
                    };
                    progress.finish();
                    summary
                });
                started.insert(handle.id(), task);
            }
        }
        // A task whose dependency was just skipped is skipped in the next pass.
        if running.is_empty() {
            if tasks.iter().all(|t| summaries.contains_key(t)) {
                break;
            }
            continue;
        }
        match running.join_next_with_id().await {
            Some(Ok((id, summary))) => {
                let task = started
                    .remove(&id)
                    .expect("every running task was recorded");
                summaries.insert(task, summary);
            }
            Some(Err(panic)) => {
                // A panicking task is a bug; report it like a failure and go on.
                let task = started
                    .remove(&panic.id())
                    .expect("every running task was recorded");
                tracing::error!(task = task.name(), "the task panicked: {panic}");
                let mut s = TaskSummary::new(task.name());
                s.state = TaskState::Failed;
                s.notes.push(format!("panicked: {panic}"));
                summaries.insert(task, s);
            }
            None => {}
        }
    }
    RunReport {
        target: ctx.settings.target.clone(),
        kafka: ctx.kafka.as_ref().map(|k| k.endpoint.bootstrap.clone()),
        summaries: summaries.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_comes_after_its_dependencies() {
        for (i, t) in Task::ALL.iter().enumerate() {
            for d in t.depends_on() {
                assert!(
                    Task::ALL[..i].contains(d),
                    "{} before {}",
                    d.name(),
                    t.name()
                );
            }
            assert_eq!(Task::parse(t.name()).unwrap(), *t);
        }
        assert!(Task::parse("silver").is_err());
    }
}
