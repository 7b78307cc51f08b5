//! The embedded Kafka-protocol broker: `tansu-broker`, run inside the process.
//!
//! When `kafka_bootstrap_servers` is empty, `medallion` needs no Kafka of its own: it
//! starts tansu on a free loopback port, with sqlite storage under `<state_dir>/broker/`,
//! so that topics and offsets persist from one run to the next. Clients still talk to it
//! over Kafka's wire protocol through librdkafka, exactly as they would to a real cluster.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use tokio::task::JoinHandle;
use url::Url;

const NODE_ID: i32 = 111;
const CLUSTER_ID: &str = "medallion";
/// How long the broker may take to accept connections after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot create the broker's storage folder {path}: {source}. Check state_dir in the bundle"
    )]
    StorageDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find a free loopback port for the embedded broker: {0}")]
    NoPort(std::io::Error),
    #[error(
        "cannot index the embedded broker's database {path}: {reason}. Remove it to start afresh"
    )]
    Index { path: PathBuf, reason: String },
    #[error("the embedded broker (storage {storage}) failed to start: {reason}. If another medallion run uses the same state_dir, wait for it; otherwise remove {storage} to start afresh")]
    Start { storage: String, reason: String },
}

/// Where the embedded broker keeps its data.
#[derive(Debug, Clone)]
pub enum BrokerStorage {
    /// A sqlite database file: topics and offsets survive restarts.
    Sqlite(PathBuf),
    /// Memory only: everything is gone when the broker stops. For benchmarks, which
    /// measure the broker's share of the pipeline's time. tansu 0.6.0's memory engine
    /// acknowledges pipelined idempotent batches that it never stores, so producers must
    /// send one request at a time (`max.in.flight.requests.per.connection: 1`).
    Memory,
}

impl BrokerStorage {
    /// The standard location under a state folder.
    pub fn in_state_dir(state_dir: &Path) -> Self {
        BrokerStorage::Sqlite(state_dir.join("broker").join("tansu.db"))
    }

    /// The storage URL tansu opens (creating the folder), e.g. for tansu's storage API.
    pub fn url(&self) -> Result<Url, BrokerError> {
        match self {
            BrokerStorage::Memory => Ok(Url::parse("memory://tansu/").expect("valid url")),
            BrokerStorage::Sqlite(path) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                crate::private::create_dir_all(dir).map_err(|source| BrokerError::StorageDir {
                    path: dir.into(),
                    source,
                })?;
                let dir = std::fs::canonicalize(dir).map_err(|source| BrokerError::StorageDir {
                    path: dir.into(),
                    source,
                })?;
                let file = dir.join(path.file_name().unwrap_or("tansu.db".as_ref()));
                // tansu joins the URL's path onto the current folder after dropping one
                // leading `/`; a doubled slash keeps the path absolute.
                Url::parse(&format!("sqlite:///{}", file.display())).map_err(|e| {
                    BrokerError::Start {
                        storage: file.display().to_string(),
                        reason: e.to_string(),
                    }
                })
            }
        }
    }
}

/// A running embedded broker. Stop it with [`EmbeddedBroker::stop`]; dropping it also stops it.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts tansu on a free port of 127.0.0.1 and waits until it accepts connections.
    pub async fn start(storage: BrokerStorage) -> Result<Self, BrokerError> {
        Self::start_with(storage, false).await
    }

    /// Starts tansu with SASL authentication required: clients log in with SCRAM-SHA-256
    /// or -512 as users whose credentials are in the storage (Kafka's
    /// AlterUserScramCredentials, or tansu's storage API).
    pub async fn start_authenticated(storage: BrokerStorage) -> Result<Self, BrokerError> {
        Self::start_with(storage, true).await
    }

    async fn start_with(storage: BrokerStorage, authentication: bool) -> Result<Self, BrokerError> {
        let url = storage.url()?;
        if let BrokerStorage::Sqlite(db) = &storage {
            add_header_index(db).await?;
        }
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match Self::start_on(addr, url.clone(), authentication).await {
                Ok(task) => {
                    tracing::debug!(%addr, storage = %url, "embedded broker ready");
                    return Ok(EmbeddedBroker {
                        addr,
                        task: Some(task),
                    });
                }
                // Another process may have taken the port between probe and bind: retry.
                Err(reason) => last = reason,
            }
        }
        Err(BrokerError::Start {
            storage: url.to_string(),
            reason: last,
        })
    }

    async fn start_on(
        addr: SocketAddr,
        storage: Url,
        authentication: bool,
    ) -> Result<JoinHandle<()>, String> {
        let listener = Url::parse(&format!("tcp://{addr}")).expect("valid url");
        let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(NODE_ID)
            .cluster_id(CLUSTER_ID)
            .incarnation_id(uuid::Uuid::now_v7())
            .advertised_listener(listener.clone())
            .listener(listener)
            .storage(storage)
            .authentication(authentication)
            .silent(true)
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let (failed_tx, mut failed_rx) = tokio::sync::oneshot::channel::<String>();
        let task = tokio::spawn(async move {
            if let Err(e) = broker.serve(tokio::time::Instant::now()).await {
                let _ = failed_tx.send(e.to_string());
            }
        });
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(reason) = failed_rx.try_recv() {
                return Err(reason);
            }
            if task.is_finished() {
                return Err("the broker task ended during start-up".into());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(task);
            }
            if tokio::time::Instant::now() > deadline {
                task.abort();
                return Err(format!("no connection on {addr} within {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the broker. tansu has no shutdown call; aborting its task closes the
    /// listener, and sqlite has already committed every acknowledged write.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// tansu 0.6.0 fetches each record's headers with a query on `header` by
/// `(topition, offset_id)`, but creates that table without an index, so every fetched
/// record scans every header: a fetch from a topic of 50k records with two headers each
/// takes minutes. The index makes it a lookup. tansu's own schema (`create table if not
/// exists`) is created first, so that the index has its table; both are idempotent.
async fn add_header_index(db: &Path) -> Result<(), BrokerError> {
    let err = |reason: String| BrokerError::Index {
        path: db.into(),
        reason,
    };
    let database = libsql::Builder::new_local(db)
        .build()
        .await
        .map_err(|e| err(e.to_string()))?;
    let conn = database.connect().map_err(|e| err(e.to_string()))?;
    conn.execute_batch(HEADER_DDL)
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}

const HEADER_DDL: &str = "
create table if not exists header (
    topition integer,
    offset_id integer,
    k blob,
    v blob,
    last_updated datetime default current_timestamp not null,
    created_at datetime default current_timestamp not null,
    foreign key (topition, offset_id) references record (topition, offset_id) on delete cascade
);
create index if not exists medallion_header_record on header (topition, offset_id);
";

fn free_port() -> Result<u16, BrokerError> {
    let probe = TcpListener::bind(("127.0.0.1", 0)).map_err(BrokerError::NoPort)?;
    Ok(probe.local_addr().map_err(BrokerError::NoPort)?.port())
}
