//! A run of the pipeline's job: connect to Kafka (or start the embedded broker), then run
//! the tasks in order with the *available now* trigger, and report what each one did.

use std::sync::Arc;
use std::time::Duration;

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

/// A task of the stock pipeline, in run order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Ingest,
    Bronze,
}

impl Task {
    pub const ALL: &'static [Task] = &[Task::Ingest, Task::Bronze];

    pub fn name(self) -> &'static str {
        match self {
            Task::Ingest => "ingest",
            Task::Bronze => "bronze",
        }
    }

    pub fn parse(name: &str) -> Result<Task, JobError> {
        Task::ALL
            .iter()
            .copied()
            .find(|t| t.name() == name)
            .ok_or_else(|| JobError::UnknownTask(name.into()))
    }

    async fn run(self, ctx: &TaskContext, progress: Arc<Progress>) -> Result<TaskSummary, String> {
        match self {
            Task::Ingest => tasks::ingest::run(ctx, progress)
                .await
                .map_err(|e| e.to_string()),
            Task::Bronze => tasks::bronze::run(ctx, progress)
                .await
                .map_err(|e| e.to_string()),
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
    pub kafka: String,
    pub summaries: Vec<TaskSummary>,
}

impl RunReport {
    /// The first task that failed, with its error.
    pub fn failure(&self) -> Option<&TaskSummary> {
        self.summaries.iter().find(|s| s.state == TaskState::Failed)
    }
}

/// Runs the job once: every task processes what is available now, then the run ends.
pub async fn run(settings: &Settings, options: &RunOptions) -> Result<RunReport, JobError> {
    let (kafka, broker) = match &settings.kafka.bootstrap_servers {
        Some(servers) => (
            KafkaEndpoint::new(servers, settings.kafka.client.clone()),
            None,
        ),
        None => {
            let storage = BrokerStorage::in_state_dir(&settings.state_dir);
            let broker = EmbeddedBroker::start(storage).await?;
            tracing::info!(bootstrap = %broker.bootstrap(), "started the embedded broker");
            (
                KafkaEndpoint::new(broker.bootstrap(), settings.kafka.client.clone()),
                Some(broker),
            )
        }
    };
    let result = run_tasks(settings, options, kafka).await;
    if let Some(broker) = broker {
        broker.stop().await;
    }
    result
}

async fn run_tasks(
    settings: &Settings,
    options: &RunOptions,
    kafka: KafkaEndpoint,
) -> Result<RunReport, JobError> {
    let replication = if settings.kafka.bootstrap_servers.is_some() {
        -1
    } else {
        1
    };
    let topic = kafka
        .ensure_topic(
            &settings.kafka.topic,
            settings.kafka.partitions,
            replication,
        )
        .await?;
    let ctx = TaskContext {
        settings: settings.clone(),
        kafka,
        partitions: topic.partitions,
        batch_rows: settings.batch_rows,
        idle_timeout: IDLE_TIMEOUT,
    };

    let mut summaries = Vec::new();
    let mut failed = false;
    for &task in Task::ALL {
        if options.task.is_some_and(|t| t != task) {
            continue;
        }
        if failed {
            let mut skipped = TaskSummary::new(task.name());
            skipped.state = TaskState::Skipped;
            summaries.push(skipped);
            continue;
        }
        let progress = Arc::new(Progress::new(task.name(), options.interactive));
        let summary = match task.run(&ctx, progress.clone()).await {
            Ok(summary) => summary,
            Err(error) => {
                failed = true;
                tracing::error!(task = task.name(), "{error}");
                let mut s = TaskSummary::new(task.name());
                s.state = TaskState::Failed;
                s.notes.push(error);
                s.elapsed = progress.elapsed();
                s
            }
        };
        progress.finish();
        summaries.push(summary);
    }
    Ok(RunReport {
        target: settings.target.clone(),
        kafka: ctx.kafka.bootstrap.clone(),
        summaries,
    })
}
