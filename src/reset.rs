//! `medallion reset`: the original pipeline's "Reset env".
//!
//! It drops the target's tables and every record of progress (the txn versions go with
//! the tables, the ingest checkpoint with the state), and empties the topic (the embedded
//! broker's data, or the topic itself on a hosted Kafka), so that the next run starts from
//! the landing files and rebuilds the same tables.

use std::path::PathBuf;

use crate::bundle::{Mode, Settings};
use crate::kafka::{KafkaClientError, KafkaEndpoint};

/// Errors resetting a target.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("target `{0}` is in production mode: reset refuses without --force")]
    Production(String),
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
}

/// What a reset will remove, to show before asking.
pub struct ResetPlan {
    pub folders: Vec<PathBuf>,
    /// Topics to delete on a hosted Kafka (the embedded broker's data is in `folders`).
    pub topics: Vec<String>,
}

/// What `reset` would remove for `settings`.
pub fn plan(settings: &Settings, force: bool) -> Result<ResetPlan, ResetError> {
    if settings.mode == Mode::Production && !force {
        return Err(ResetError::Production(settings.target.clone()));
    }
    let mut folders = vec![
        settings.warehouse.catalog_path(),
        settings.state_dir.join("checkpoints"),
    ];
    let mut topics = Vec::new();
    if settings.kafka.bootstrap_servers.is_none() {
        folders.push(settings.state_dir.join("broker"));
    } else {
        topics = settings.jobs.values().flat_map(|j| j.topics()).collect();
        topics.sort();
        topics.dedup();
    }
    Ok(ResetPlan { folders, topics })
}

/// Carries out the plan.
pub async fn execute(settings: &Settings, plan: &ResetPlan) -> Result<(), ResetError> {
    if let Some(servers) = &settings.kafka.bootstrap_servers {
        let kafka = KafkaEndpoint::new(servers, settings.kafka.client.clone());
        for topic in &plan.topics {
            kafka.delete_topic(topic).await?;
        }
    }
    for folder in &plan.folders {
        if folder.exists() {
            std::fs::remove_dir_all(folder).map_err(|source| ResetError::Remove {
                path: folder.clone(),
                source,
            })?;
        }
    }
    Ok(())
}
