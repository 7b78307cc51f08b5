//! Kafka connection settings and topic administration, through librdkafka.
//!
//! The same code talks to the embedded tansu broker and to any hosted Kafka: only the
//! bootstrap address and the librdkafka settings from the bundle's `kafka` map differ.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

/// How long one metadata request may take before it is retried.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to reach the broker before giving up, with doubling backoff between them.
const CONNECT_ATTEMPTS: u32 = 3;

/// Errors talking to Kafka. Each names the broker address.
#[derive(Debug, thiserror::Error)]
pub enum KafkaClientError {
    #[error("cannot create a Kafka client for {bootstrap}: {source}. Check the `kafka` settings in the bundle")]
    Client {
        bootstrap: String,
        source: KafkaError,
    },
    #[error("Kafka at {bootstrap} did not answer after {attempts} attempts ({source}{detail}). Check that the broker is running and reachable, and kafka_bootstrap_servers{hint}")]
    Unreachable {
        bootstrap: String,
        attempts: u32,
        source: KafkaError,
        /// The last connection error librdkafka reported, as `; last: ...`, if any.
        detail: String,
        /// A likelier cause, when the errors point at one.
        hint: String,
    },
    #[error("Kafka at {bootstrap} refused the {mechanism} login of user `{user}`: {reason}. Check the credentials in the environment variables that sasl.username_env and sasl.password_env name")]
    Authentication {
        bootstrap: String,
        mechanism: String,
        user: String,
        reason: String,
    },
    #[error("the TLS handshake with Kafka at {bootstrap} failed: {reason}. Check ssl.ca.location (the CA that signed the broker's certificate)")]
    Tls { bootstrap: String, reason: String },
    #[error("cannot create topic `{topic}` on {bootstrap}: {reason}. Create it yourself, or grant this user the right to create topics")]
    CreateTopic {
        topic: String,
        bootstrap: String,
        reason: String,
    },
    #[error("cannot describe topic `{topic}` on {bootstrap}: {reason}. Check that the user may describe it")]
    Describe {
        topic: String,
        bootstrap: String,
        reason: String,
    },
    #[error("topic `{topic}` does not exist on {bootstrap} after it was created")]
    TopicMissing { topic: String, bootstrap: String },
    #[error(
        "cannot read the offsets of topic `{topic}` partition {partition} on {bootstrap}: {source}"
    )]
    Watermarks {
        topic: String,
        partition: i32,
        bootstrap: String,
        source: KafkaError,
    },
    #[error("reading topic `{topic}` from {bootstrap} failed: {source}")]
    Consume {
        topic: String,
        bootstrap: String,
        source: KafkaError,
    },
    #[error("no records arrived from topic `{topic}` on {bootstrap} for {idle:?}, while partitions {waiting} still had records to read. Check the broker")]
    Stalled {
        topic: String,
        bootstrap: String,
        idle: Duration,
        waiting: String,
    },
}

/// Kafka settings from the bundle.
#[derive(Clone)]
pub struct KafkaSettings {
    /// `None` means: start the embedded broker.
    pub bootstrap_servers: Option<String>,
    /// The bundle's `kafka_topic` variable, when it declares one.
    pub topic: Option<String>,
    pub partitions: i32,
    /// librdkafka settings (`security.protocol`, `sasl.mechanism`, ...), secrets resolved.
    pub client: BTreeMap<String, String>,
}

/// Prints settings with secret values hidden, so that they never reach a log.
impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .field("client", &redacted(&self.client))
            .finish()
    }
}

/// The client settings with every secret-looking value replaced by `***`.
pub fn redacted(client: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    client
        .iter()
        .map(|(k, v)| {
            let secret = crate::secrets::is_secret_key(k);
            (
                k.clone(),
                if secret {
                    crate::secrets::MASK.into()
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

/// `text` with every secret value of `client` replaced by `***`.
fn redact(text: &str, client: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in client {
        if crate::secrets::is_secret_key(k) && !v.is_empty() {
            out = out.replace(v.as_str(), crate::secrets::MASK);
        }
    }
    out
}

/// Keeps the first authentication or TLS error librdkafka reports, which reach only the
/// client context (a metadata request just times out).
#[derive(Default)]
pub struct ErrorCapture {
    fatal: std::sync::Mutex<Option<KafkaError>>,
    /// The last other error, to explain a broker that "did not answer".
    last: std::sync::Mutex<Option<String>>,
}

impl ErrorCapture {
    fn fatal(&self) -> Option<KafkaError> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn last(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl rdkafka::ClientContext for ErrorCapture {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let tls = code == Some(RDKafkaErrorCode::SSL) || reason.contains("SSL handshake");
        if code == Some(RDKafkaErrorCode::Authentication)
            || tls
            || reason.contains("SASL authentication")
        {
            let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
            fatal.get_or_insert_with(|| KafkaError::ClientCreation(format!("{reason} ({error})")));
        } else {
            tracing::debug!(%error, reason, "librdkafka");
            // "1/1 brokers are down" follows every connection error and says less.
            if code != Some(RDKafkaErrorCode::AllBrokersDown) {
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
            }
        }
    }

    /// As librdkafka's default, and keeps the last connection failure (`FAIL`), which
    /// reaches only the log: it tells a dropped connection from a silent broker.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_string());
        }
        forward_log(level, fac, message);
    }
}

/// Sends a librdkafka log line to `tracing` (target `librdkafka`), at its level: every
/// client context logs through here, so `RUST_LOG=librdkafka=debug` shows them all.
pub fn forward_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        L::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
        L::Notice | L::Info => {
            tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        L::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
    }
}

impl rdkafka::consumer::ConsumerContext for ErrorCapture {}

/// A reachable Kafka cluster: bootstrap servers plus client settings.
#[derive(Clone)]
pub struct KafkaEndpoint {
    pub bootstrap: String,
    client: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaEndpoint")
            .field("bootstrap", &self.bootstrap)
            .field("client", &redacted(&self.client))
            .finish()
    }
}

/// A topic's partitions as the broker reports them.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<i32>,
    pub created: bool,
}

/// How long a partition of a topic just created may take to get its leader.
const LEADER_WAIT: Duration = Duration::from_secs(15);

/// A partition's watermarks, waiting (blocking) while the cluster has no leader for it
/// yet: a topic just created answers `NotLeaderForPartition` or `LeaderNotAvailable` for a
/// moment on Apache Kafka.
fn watermarks_once_led(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), KafkaError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT) {
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::NotLeaderForPartition)
                        | Some(RDKafkaErrorCode::LeaderNotAvailable)
                ) && started.elapsed() < LEADER_WAIT =>
            {
                tracing::debug!(topic, partition, error = %e, "no partition leader yet; waiting");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

impl KafkaEndpoint {
    pub fn new(bootstrap: impl Into<String>, client: BTreeMap<String, String>) -> Self {
        KafkaEndpoint {
            bootstrap: bootstrap.into(),
            client,
        }
    }

    /// A client configuration with the bootstrap servers and the bundle's settings.
    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        self.apply(&mut config);
        config
    }

    /// Sets the bootstrap servers and the bundle's settings on `config`. (Not through
    /// `ClientConfig::config_map`, which masks the password.)
    fn apply(&self, config: &mut ClientConfig) {
        config.set("bootstrap.servers", &self.bootstrap);
        // Loopback brokers and hosted clusters alike: fail fast on a dead address.
        config.set("socket.connection.setup.timeout.ms", "10000");
        for (k, v) in &self.client {
            // Producer-only settings stay with the producer (see producer_config).
            if k != "transactional.id" {
                config.set(k, v);
            }
        }
    }

    /// A producer configuration: idempotent, `acks=all`, Java-compatible key partitioning.
    /// Tuning defaults come first so that the bundle can override them; the delivery
    /// guarantees come last so that it cannot.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config.set("linger.ms", "10");
        config.set("batch.size", "1000000");
        // librdkafka holds each queued message in a few hundred bytes beyond its payload,
        // which max.kbytes does not count: the count bounds that.
        config.set("queue.buffering.max.messages", "100000");
        // 64 MB of messages in flight: enough to keep the broker busy, and a bound on the
        // producer's share of memory whatever the size of the input.
        config.set("queue.buffering.max.kbytes", "65536");
        config.set("message.timeout.ms", "120000");
        // The Java client's partitioner, so that Spark and Java producers agree on keys.
        config.set("partitioner", "murmur2_random");
        if self.client.contains_key("transactional.id") {
            // A transaction must outlive its messages' delivery timeout (and stay under
            // the broker's transaction.max.timeout.ms, 15 minutes by default).
            config.set("transaction.timeout.ms", "300000");
        }
        for (k, v) in &self.client {
            config.set(k, v);
        }
        config.set("enable.idempotence", "true");
        config.set("acks", "all");
        config
    }

    /// A consumer configuration for reading assigned partitions; it never joins a group,
    /// because progress lives in the Delta tables, not in consumer-group offsets. As in
    /// [`Self::producer_config`], tuning defaults come first so that the bundle can
    /// override them, and what the tasks rely on comes last.
    pub fn consumer_config(&self, purpose: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("session.timeout.ms", "10000");
        config.set("queued.min.messages", "200000");
        // Prefetch per partition is capped by size too (the default is 64 MB each).
        config.set("queued.max.messages.kbytes", "16384");
        // How long a broker may hold a fetch while it has nothing new. Apache Kafka
        // answers as soon as it has data, so this only paces an idle consumer; tansu 0.6
        // holds every fetch for this long even when it returns data (its fetch service
        // sleeps out the wait after each read). At 100 ms bronze read tansu's memory
        // engine at 219k rows/s, at 10 ms at 593k-817k rows/s.
        config.set("fetch.wait.max.ms", "10");
        // While a task commits to Delta, nothing is consumed and the prefetch queue fills;
        // librdkafka then pauses fetching for this long (1 s by default), well after the
        // queue has drained. Bronze ran at a third of its speed for it.
        config.set("fetch.queue.backoff.ms", "10");
        self.apply(&mut config);
        config.set("group.id", format!("medallion-{purpose}"));
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        config.set("enable.partition.eof", "true");
        // A record that is not where the progress says is an error (see bronze), never
        // a silent jump to the other end of the log.
        config.set("auto.offset.reset", "error");
        // Records of aborted or open transactions are never read, whatever the bundle
        // says: a crashed transactional ingest must not reach bronze.
        config.set("isolation.level", "read_committed");
        config
    }

    /// The value of `key` in `topic`'s configuration, or `None` when it is not set or
    /// the broker does not say (the caller then assumes Kafka's default).
    pub async fn topic_config(&self, topic: &str, key: &str) -> Option<String> {
        use rdkafka::admin::ResourceSpecifier;
        let admin: Closed<AdminClient<DefaultClientContext>> =
            Closed::new(self.config().create().ok()?);
        let results = admin
            .describe_configs(
                [&ResourceSpecifier::Topic(topic)],
                &AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT)),
            )
            .await;
        let value = match results {
            Ok(results) => results.into_iter().find_map(|r| {
                r.ok()?
                    .entries
                    .into_iter()
                    .find(|e| e.name == key)
                    .and_then(|e| e.value)
            }),
            Err(e) => {
                tracing::debug!(topic, key, error = %e, "cannot describe the topic's configuration");
                None
            }
        };
        value.filter(|v| !v.is_empty())
    }

    /// The topic's id (as Kafka's tools print it, base64), or `None` when the broker
    /// reports none. A topic deleted and created again, or one of another cluster at the
    /// same address, has another id: offsets recorded against one mean nothing in the other.
    pub fn topic_id(&self, topic: &str) -> Result<Option<String>, KafkaClientError> {
        use rdkafka::bindings as rd;
        use std::ffi::{CStr, CString};
        let admin: Closed<AdminClient<DefaultClientContext>> =
            Closed::new(self.config().create().map_err(|e| self.client_error(e))?);
        let Ok(name) = CString::new(topic) else {
            return Ok(None);
        };
        let failed = |reason: String| KafkaClientError::Describe {
            topic: topic.into(),
            bootstrap: self.bootstrap.clone(),
            reason,
        };
        let rk = admin.inner().native_ptr();
        // SAFETY: every handle made here is destroyed here, after its last use; the
        // strings librdkafka returns are copied before the event that owns them goes.
        unsafe {
            let queue = rd::rd_kafka_queue_new(rk);
            let options = rd::rd_kafka_AdminOptions_new(
                rk,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            );
            let mut names = [name.as_ptr()];
            let topics = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
            rd::rd_kafka_DescribeTopics(rk, topics, options, queue);
            let event = rd::rd_kafka_queue_poll(queue, METADATA_TIMEOUT.as_millis() as i32);
            let outcome = if event.is_null() {
                Err(failed(
                    "the broker did not describe the topic in time".into(),
                ))
            } else if rd::rd_kafka_event_error(event)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                let text = CStr::from_ptr(rd::rd_kafka_event_error_string(event));
                Err(failed(text.to_string_lossy().into_owned()))
            } else {
                let result = rd::rd_kafka_event_DescribeTopics_result(event);
                let mut count = 0usize;
                let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
                let mut id = None;
                for i in 0..count {
                    let d = *descriptions.add(i);
                    if !rd::rd_kafka_TopicDescription_error(d).is_null() {
                        continue;
                    }
                    let uuid = rd::rd_kafka_TopicDescription_topic_id(d);
                    if !uuid.is_null() {
                        let text = CStr::from_ptr(rd::rd_kafka_Uuid_base64str(uuid))
                            .to_string_lossy()
                            .into_owned();
                        // The zero id means "none" in Kafka's protocol.
                        if text.bytes().any(|b| b != b'A') && !text.is_empty() {
                            id = Some(text);
                        }
                    }
                }
                Ok(id)
            };
            if !event.is_null() {
                rd::rd_kafka_event_destroy(event);
            }
            rd::rd_kafka_TopicCollection_destroy(topics);
            rd::rd_kafka_AdminOptions_destroy(options);
            rd::rd_kafka_queue_destroy(queue);
            outcome
        }
    }

    /// [`KafkaEndpoint::topic_id`] from async code, off the runtime's worker threads.
    pub async fn topic_id_async(&self, topic: &str) -> Result<Option<String>, KafkaClientError> {
        let this = self.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || this.topic_id(&topic))
            .await
            .expect("topic id task panicked")
    }

    /// The low and high watermark of each partition (blocking; call from a blocking thread).
    pub fn watermarks(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, (i64, i64)>, KafkaClientError> {
        let consumer: Closed<BaseConsumer> =
            Closed::new(self.config().create().map_err(|e| self.client_error(e))?);
        partitions
            .iter()
            .map(|&p| {
                watermarks_once_led(&consumer, topic, p)
                    .map(|w| (p, w))
                    .map_err(|source| KafkaClientError::Watermarks {
                        topic: topic.into(),
                        partition: p,
                        bootstrap: self.bootstrap.clone(),
                        source,
                    })
            })
            .collect()
    }

    /// [`KafkaEndpoint::watermarks`] from async code, off the runtime's worker threads.
    pub async fn watermarks_async(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, (i64, i64)>, KafkaClientError> {
        let this = self.clone();
        let topic = topic.to_string();
        let partitions = partitions.to_vec();
        tokio::task::spawn_blocking(move || this.watermarks(&topic, &partitions))
            .await
            .expect("watermark task panicked")
    }

    fn client_error(&self, source: KafkaError) -> KafkaClientError {
        KafkaClientError::Client {
            bootstrap: self.bootstrap.clone(),
            source,
        }
    }

    /// The partitions of `topic`, or `None` when it does not exist. Retries with backoff.
    pub fn partitions(&self, topic: &str) -> Result<Option<Vec<i32>>, KafkaClientError> {
        let consumer = self.metadata_client()?;
        let found = self.partitions_with(&consumer, topic);
        close_in_background(consumer);
        found
    }

    /// A client for metadata requests.
    fn metadata_client(&self) -> Result<BaseConsumer<ErrorCapture>, KafkaClientError> {
        self.config()
            .create_with_context(ErrorCapture::default())
            .map_err(|e| self.client_error(e))
    }

    /// [`KafkaEndpoint::partitions`] through a client already made.
    fn partitions_with(
        &self,
        consumer: &BaseConsumer<ErrorCapture>,
        topic: &str,
    ) -> Result<Option<Vec<i32>>, KafkaClientError> {
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.fetch_metadata(consumer, topic) {
                Ok(metadata) => {
                    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                        return Ok(None);
                    };
                    if matches!(
                        t.error(),
                        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition
                    ) || t.partitions().is_empty()
                    {
                        return Ok(None);
                    }
                    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                    ids.sort_unstable();
                    return Ok(Some(ids));
                }
                Err(source) if self.refused(&source).is_some() => {
                    return Err(self.refused(&source).expect("checked"));
                }
                Err(source) if attempt >= CONNECT_ATTEMPTS => {
                    let last = consumer.context().last();
                    return Err(KafkaClientError::Unreachable {
                        bootstrap: self.bootstrap.clone(),
                        attempts: attempt,
                        source,
                        detail: last
                            .as_deref()
                            .map(|l| format!("; last: {}", redact(l, &self.client)))
                            .unwrap_or_default(),
                        hint: self.unreachable_hint(last.as_deref()),
                    });
                }
                Err(err) => {
                    tracing::warn!(bootstrap = %self.bootstrap, attempt, %err, "Kafka did not answer; retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// One metadata request, polled in short slices so that an authentication or TLS
    /// failure, which librdkafka reports only to the client context, ends it at once.
    fn fetch_metadata(
        &self,
        consumer: &BaseConsumer<ErrorCapture>,
        topic: &str,
    ) -> Result<rdkafka::metadata::Metadata, KafkaError> {
        let deadline = std::time::Instant::now() + METADATA_TIMEOUT;
        loop {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(1)) {
                Ok(m) => return Ok(m),
                Err(e) => {
                    // Errors reach the context only when the client's queue is served.
                    let _ = consumer.poll(Duration::from_millis(50));
                    if let Some(fatal) = consumer.context().fatal() {
                        return Err(fatal);
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// A broker that accepts the connection and drops it at the first request, to a
    /// client without SASL or TLS, most likely wants one of them.
    fn unreachable_hint(&self, last: Option<&str>) -> String {
        // The drop shows as a disconnect, a reset or a broken pipe, whichever librdkafka
        // logged last.
        let dropped = last.is_some_and(|l| {
            ["Disconnected", "Broken pipe", "reset by peer"]
                .iter()
                .any(|what| l.contains(what))
                && (l.contains("in state UP") || l.contains("APIVERSION"))
        });
        let protocol = self
            .client
            .get("security.protocol")
            .map(|p| p.to_ascii_uppercase())
            .unwrap_or_else(|| "PLAINTEXT".into());
        if dropped && protocol == "PLAINTEXT" {
            ". The broker closed each connection as soon as it was used: it probably requires \
             authentication or TLS. Set security.protocol (SASL_SSL or SASL_PLAINTEXT), \
             sasl.mechanism and sasl.username_env / sasl.password_env under `kafka:` in the bundle"
                .into()
        } else {
            String::new()
        }
    }

    /// The error for a refused login or TLS handshake: it names the mechanism and the
    /// user, never the password.
    fn refused(&self, source: &KafkaError) -> Option<KafkaClientError> {
        let text = source.to_string();
        // Captured context errors travel as ClientCreation; its prefix would mislead.
        let text = text
            .trim_start_matches("Client creation error: ")
            .to_string();
        let code = source.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::Authentication) || text.contains("SASL authentication") {
            return Some(KafkaClientError::Authentication {
                bootstrap: self.bootstrap.clone(),
                mechanism: self
                    .client
                    .get("sasl.mechanism")
                    .cloned()
                    .unwrap_or_else(|| "(none)".into()),
                user: self
                    .client
                    .get("sasl.username")
                    .cloned()
                    .unwrap_or_else(|| "(none)".into()),
                reason: redact(&text, &self.client),
            });
        }
        if code == Some(RDKafkaErrorCode::SSL)
            || text.contains("SSL handshake")
            || text.contains("certificate")
        {
            return Some(KafkaClientError::Tls {
                bootstrap: self.bootstrap.clone(),
                reason: redact(&text, &self.client),
            });
        }
        None
    }

    /// [`KafkaEndpoint::partitions`] from async code, off the runtime's worker threads.
    pub async fn partitions_async(
        &self,
        topic: &str,
    ) -> Result<Option<Vec<i32>>, KafkaClientError> {
        let this = self.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || this.partitions(&topic))
            .await
            .expect("metadata task panicked")
    }

    /// [`KafkaEndpoint::partitions_with`] from async code: the client stays connected
    /// for the next request.
    async fn partitions_through(
        &self,
        client: &Arc<BaseConsumer<ErrorCapture>>,
        topic: &str,
    ) -> Result<Option<Vec<i32>>, KafkaClientError> {
        let (this, client) = (self.clone(), client.clone());
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || this.partitions_with(&client, &topic))
            .await
            .expect("metadata task panicked")
    }

    /// Deletes `topic` and its records; a topic that does not exist is fine.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), KafkaClientError> {
        let admin: AdminClient<DefaultClientContext> =
            self.config().create().map_err(|e| self.client_error(e))?;
        let fail = |reason: String| KafkaClientError::CreateTopic {
            topic: topic.into(),
            bootstrap: self.bootstrap.clone(),
            reason: format!("deleting it: {reason}"),
        };
        let results = admin
            .delete_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        for result in results {
            if let Err((_, code)) = result {
                if code != RDKafkaErrorCode::UnknownTopicOrPartition {
                    return Err(fail(code.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Makes sure `topic` exists, creating it with `partitions` partitions if it is missing.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication: i32,
    ) -> Result<TopicInfo, KafkaClientError> {
        // One client asks before and after the create: connecting takes longer than
        // asking.
        let this = self.clone();
        let metadata = Closed::new(Arc::new(
            tokio::task::spawn_blocking(move || this.metadata_client())
                .await
                .expect("metadata task panicked")?,
        ));
        let existing = self.partitions_through(&metadata, topic).await?;
        if let Some(found) = existing {
            if found.len() as i32 != partitions {
                tracing::warn!(
                    topic,
                    existing = found.len(),
                    configured = partitions,
                    "topic exists with a different partition count than kafka_partitions; using it as it is"
                );
            }
            return Ok(TopicInfo {
                name: topic.into(),
                partitions: found,
                created: false,
            });
        }

        let admin: Closed<AdminClient<DefaultClientContext>> =
            Closed::new(self.config().create().map_err(|e| self.client_error(e))?);
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        let results = admin
            .create_topics(
                [&new],
                &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
            )
            .await
            .map_err(|e| KafkaClientError::CreateTopic {
                topic: topic.into(),
                bootstrap: self.bootstrap.clone(),
                reason: e.to_string(),
            })?;
        for result in results {
            if let Err((_, code)) = result {
                if code != RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(KafkaClientError::CreateTopic {
                        topic: topic.into(),
                        bootstrap: self.bootstrap.clone(),
                        reason: code.to_string(),
                    });
                }
            }
        }
        tracing::info!(topic, partitions, bootstrap = %self.bootstrap, "created topic");

        // Metadata can lag a create by a moment; wait until the partitions are visible,
        // asking often at first (an embedded broker shows them within milliseconds), then
        // every 100 ms, for about 5 s in all.
        let mut pause = Duration::from_millis(5);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let found = self.partitions_through(&metadata, topic).await?;
            if let Some(found) = found.filter(|f| f.len() as i32 == partitions) {
                return Ok(TopicInfo {
                    name: topic.into(),
                    partitions: found,
                    created: true,
                });
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        Err(KafkaClientError::TopicMissing {
            topic: topic.into(),
            bootstrap: self.bootstrap.clone(),
        })
    }
}

/// Closes a client on a thread of its own: librdkafka's destroy waits some 40 ms for its
/// threads, which nothing needs to wait for when the client only asked for metadata.
fn close_in_background<T: Send + 'static>(client: T) {
    std::thread::spawn(move || drop(client));
}

/// A client closed in the background ([`close_in_background`]) when it goes out of scope.
struct Closed<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Closed<T> {
    fn new(client: T) -> Self {
        Closed(Some(client))
    }
}

impl<T: Send + 'static> std::ops::Deref for Closed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for Closed<T> {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            close_in_background(client);
        }
    }
}

/// Reads a fixed range of offsets from each partition of a topic, then stops: the
/// *available now* trigger. Ranges are `[start, end)`; records past `end` (produced after
/// the range was fixed) are left for the next run.
pub struct RangeReader {
    consumer: Closed<StreamConsumer>,
    topic: String,
    bootstrap: String,
    /// Partitions still being read, with their exclusive end offset.
    remaining: BTreeMap<i32, i64>,
    idle: Duration,
}

impl RangeReader {
    /// Assigns every partition whose range is not empty.
    pub fn open(
        endpoint: &KafkaEndpoint,
        purpose: &str,
        topic: &str,
        ranges: &BTreeMap<i32, (i64, i64)>,
        idle: Duration,
    ) -> Result<Self, KafkaClientError> {
        let consumer: StreamConsumer = endpoint
            .consumer_config(purpose)
            .create()
            .map_err(|e| endpoint.client_error(e))?;
        let mut tpl = TopicPartitionList::new();
        let mut remaining = BTreeMap::new();
        for (&p, &(start, end)) in ranges {
            if start < end {
                tpl.add_partition_offset(topic, p, Offset::Offset(start))
                    .map_err(|e| endpoint.client_error(e))?;
                remaining.insert(p, end);
            }
        }
        if !remaining.is_empty() {
            consumer
                .assign(&tpl)
                .map_err(|e| endpoint.client_error(e))?;
        }
        Ok(RangeReader {
            consumer: Closed::new(consumer),
            topic: topic.into(),
            bootstrap: endpoint.bootstrap.clone(),
            remaining,
            idle,
        })
    }

    /// The next record within the ranges, or `None` once every range is read.
    pub async fn next(&mut self) -> Result<Option<BorrowedMessage<'_>>, KafkaClientError> {
        loop {
            if self.remaining.is_empty() {
                return Ok(None);
            }
            let received = tokio::time::timeout(self.idle, self.consumer.recv()).await;
            let message = match received {
                Err(_) => {
                    return Err(KafkaClientError::Stalled {
                        topic: self.topic.clone(),
                        bootstrap: self.bootstrap.clone(),
                        idle: self.idle,
                        waiting: format!("{:?}", self.remaining.keys().collect::<Vec<_>>()),
                    })
                }
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    // The end of what the broker has: with transaction markers or
                    // compaction, the last offsets of a range may hold no record.
                    finish(&mut self.remaining, &self.consumer, &self.topic, p);
                    continue;
                }
                Ok(Err(source)) => {
                    return Err(KafkaClientError::Consume {
                        topic: self.topic.clone(),
                        bootstrap: self.bootstrap.clone(),
                        source,
                    })
                }
                Ok(Ok(m)) => m,
            };
            let p = message.partition();
            let Some(&end) = self.remaining.get(&p) else {
                continue;
            };
            if message.offset() >= end {
                finish(&mut self.remaining, &self.consumer, &self.topic, p);
                continue;
            }
            if message.offset() + 1 >= end {
                finish(&mut self.remaining, &self.consumer, &self.topic, p);
            }
            return Ok(Some(message));
        }
    }
}

/// Marks a partition's range as read and stops fetching it.
fn finish(
    remaining: &mut BTreeMap<i32, i64>,
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
) {
    if remaining.remove(&partition).is_some() {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let _ = consumer.pause(&tpl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_anonymous_connection_suggests_authentication() {
        let plain = KafkaEndpoint::new("k:9092", BTreeMap::new());
        for last in [
            "127.0.0.1:1/bootstrap: Disconnected: connection reset by peer (after 1ms in state UP)",
            "127.0.0.1:1/bootstrap: Send failed: Broken pipe (after 1ms in state UP)",
            "127.0.0.1:1/bootstrap: Disconnected while requesting ApiVersion (in state APIVERSION_QUERY)",
        ] {
            assert!(
                plain.unreachable_hint(Some(last)).contains("probably requires authentication"),
                "{last}"
            );
        }
        assert_eq!(
            plain.unreachable_hint(Some("Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)")),
            ""
        );
        let mut client = BTreeMap::new();
        client.insert("security.protocol".to_string(), "SASL_SSL".to_string());
        let secured = KafkaEndpoint::new("k:9092", client);
        assert_eq!(
            secured.unreachable_hint(Some("Send failed: Broken pipe (after 1ms in state UP)")),
            ""
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut client = BTreeMap::new();
        client.insert("sasl.password".to_string(), "hunter2".to_string());
        client.insert("sasl.username".to_string(), "alice".to_string());
        client.insert("security.protocol".to_string(), "SASL_SSL".to_string());
        let e = KafkaEndpoint::new("k:9092", client.clone());
        let s = KafkaSettings {
            bootstrap_servers: None,
            topic: Some("t".into()),
            partitions: 1,
            client,
        };
        for text in [format!("{e:?}"), format!("{s:?}")] {
            assert!(
                !text.contains("hunter2") && !text.contains("alice"),
                "{text}"
            );
            assert!(text.contains("SASL_SSL"), "{text}");
        }
    }

    #[test]
    fn the_bundle_tunes_clients_but_cannot_weaken_them() {
        let client: BTreeMap<String, String> = [
            ("fetch.wait.max.ms", "5"),
            ("linger.ms", "50"),
            ("enable.auto.commit", "true"),
            ("isolation.level", "read_uncommitted"),
            ("auto.offset.reset", "earliest"),
            ("enable.idempotence", "false"),
            ("acks", "1"),
            ("sasl.password", "hunter2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // tansu holds every fetch for the whole wait, so the default is short
        // (BENCHMARKS.md: bronze on tansu's memory engine, 219k rows/s at 100 ms).
        let defaults = KafkaEndpoint::new("k:9092", BTreeMap::new()).consumer_config("bronze");
        assert_eq!(defaults.get("fetch.wait.max.ms"), Some("10"));
        let e = KafkaEndpoint::new("k:9092", client);
        let consumer = e.consumer_config("bronze");
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        // Never records of aborted transactions, never a silent jump past lost ones.
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
        assert_eq!(consumer.get("auto.offset.reset"), Some("error"));
        assert_eq!(consumer.get("group.id"), Some("medallion-bronze"));
        // The secret itself, not a masked copy of it.
        assert_eq!(consumer.get("sasl.password"), Some("hunter2"));
        let producer = e.producer_config();
        assert_eq!(producer.get("linger.ms"), Some("50"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
    }
}
