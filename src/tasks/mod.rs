//! The task types of a job that are not pipelines yet (ingest and bronze), and what tasks
//! share while a run lasts.

pub mod bronze;
pub mod ingest;

use std::time::Duration;

use deltalake::DeltaTable;

use crate::bundle::Settings;
use crate::catalog::TableName;
use crate::delta::DeltaError;
use crate::kafka::KafkaEndpoint;
use crate::sql::SqlError;
use crate::stream::StreamError;

/// A table named in a task's settings; the bundle validated every name, so the fallback
/// (the text as a table in the default schema) is never taken.
pub fn table_setting(text: &str) -> TableName {
    crate::bundle::job::table_name(text).unwrap_or_else(|| TableName::new("default", text))
}

/// What every task of a run can see.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub settings: Settings,
    /// The Kafka cluster, when the run has a task that uses it.
    pub kafka: Option<Kafka>,
    /// Rows per Delta commit for streaming writes.
    pub batch_rows: usize,
    /// How long a read may wait for a record it knows exists before failing.
    pub idle_timeout: Duration,
}

/// The Kafka cluster a run talks to, embedded or hosted.
#[derive(Debug, Clone)]
pub struct Kafka {
    pub endpoint: KafkaEndpoint,
    /// The partitions of each topic of the job, as the broker reported them when the run
    /// started (the job creates missing topics first).
    pub partitions: std::collections::BTreeMap<String, Vec<i32>>,
    /// The ingest producer, kept between the runs of a session.
    pub producer: ingest::ProducerSlot,
}

impl Kafka {
    /// The partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Vec<i32> {
        self.partitions.get(topic).cloned().unwrap_or_default()
    }
}

/// Errors of the Silver and Gold tasks, which read and write Delta tables only.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("table {table}: {reason}")]
    Data { table: String, reason: String },
}

impl TaskContext {
    /// The Kafka cluster; the job connects it before any task that uses it runs.
    pub fn kafka(&self) -> &Kafka {
        self.kafka
            .as_ref()
            .expect("the job connects Kafka before it runs a Kafka task")
    }

    /// Opens an input table, or `None` if no upstream task has created it yet.
    pub async fn input(&self, name: &TableName) -> Result<Option<DeltaTable>, SqlError> {
        let warehouse = &self.settings.warehouse;
        if !warehouse.has_table(name) {
            return Ok(None);
        }
        crate::sql::open(warehouse, name).await.map(Some)
    }
}
