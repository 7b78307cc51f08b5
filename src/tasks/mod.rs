//! The tasks of the stock pipeline, and what they share while a run lasts.

pub mod bronze;
pub mod ingest;

use std::time::Duration;

use crate::bundle::Settings;
use crate::kafka::KafkaEndpoint;

/// What every task of a run can see.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub settings: Settings,
    /// The Kafka cluster the run talks to, embedded or hosted.
    pub kafka: KafkaEndpoint,
    /// The topic's partitions, as the broker reported them at the start of the run.
    pub partitions: Vec<i32>,
    /// Rows per Delta commit for streaming writes.
    pub batch_rows: usize,
    /// How long a read may wait for a record it knows exists before failing.
    pub idle_timeout: Duration,
}
