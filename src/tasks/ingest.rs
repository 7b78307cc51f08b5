//! Task `ingest`: CSV landing files → Kafka (the original pipeline's "Kafka - Producer").
//!
//! For each landing file not yet ingested, in path order:
//! 1. record it as in progress, with the topic's end offsets (the [`IngestCheckpoint`]);
//! 2. if a previous run died inside this file, read back which of its lines already
//!    reached the topic (by the `source_file`/`source_line` headers), to skip them;
//! 3. send each good row as one message through an idempotent, `acks=all` producer, and
//!    collect the bad rows;
//! 4. wait until every message is acknowledged;
//! 5. commit the bad rows to `quarantine.ingest` (idempotent by a `txn` version);
//! 6. record the file as complete.
//!
//! A crash at any step leaves either a file that is resumed where it stopped, or one that
//! is complete: every data line ends up exactly once in Kafka or in quarantine.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deltalake::kernel::Transaction;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use crate::bundle::job::CsvToKafka;
use crate::checkpoint::{CheckpointError, IngestCheckpoint};
use crate::delta::{DeltaError, DeltaSink};
use crate::fault;
use crate::kafka::{KafkaClientError, RangeReader};
use crate::progress::{Progress, TaskSummary};
use crate::quarantine::{self, IngestReject};
use crate::source::{self, CsvRows, LandingFile, Row, SourceError};
use crate::tasks::{table_setting, TaskContext};

/// Header naming the landing file a message came from (relative to `landing_dir`).
pub const HEADER_SOURCE_FILE: &str = "source_file";
/// Header holding the 1-based line number of the row within its file.
pub const HEADER_SOURCE_LINE: &str = "source_line";

/// Room left in a Kafka message for the key, the headers and the record framing.
const MESSAGE_OVERHEAD: usize = 16 * 1024;
/// How much of an oversized row's text is kept in quarantine.
const MAX_RAW: usize = 1 << 20;
/// How long ingest waits for a file that is still being written.
const STABLE_WAIT: Duration = Duration::from_secs(30);

/// Waits until the file's size and modification time have not changed for `stable`.
/// Returns `false` if it keeps changing for [`STABLE_WAIT`].
async fn wait_until_stable(file: &LandingFile, stable: Duration) -> bool {
    let started = std::time::Instant::now();
    let stat = || {
        std::fs::metadata(&file.path).ok().map(|m| {
            let modified = m.modified().unwrap_or(std::time::UNIX_EPOCH);
            (m.len(), modified)
        })
    };
    let mut last = stat();
    loop {
        let age = last
            .and_then(|(_, modified)| modified.elapsed().ok())
            .unwrap_or(Duration::ZERO);
        if age >= stable {
            let now = stat();
            if now == last {
                return true;
            }
            last = now;
            continue;
        }
        if started.elapsed() >= STABLE_WAIT {
            return false;
        }
        tokio::time::sleep((stable - age).max(Duration::from_millis(20))).await;
        last = stat();
    }
}

/// How long to wait for the broker to acknowledge a file's messages.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(180);

/// Errors of the ingest task.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error("cannot create the Kafka producer for {bootstrap}: {source}. Check the `kafka` settings in the bundle")]
    Producer {
        bootstrap: String,
        source: KafkaError,
    },
    #[error("{failed} message(s) of {file} were not acknowledged by {bootstrap} (first error: {error}). The file is not marked as ingested; the next run resumes it")]
    Delivery {
        file: String,
        bootstrap: String,
        failed: u64,
        error: String,
    },
    #[error("the topic `{topic}` has no partitions on {bootstrap}")]
    NoPartitions { topic: String, bootstrap: String },
}

/// Counts delivery reports, which librdkafka sends from its own thread.
#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Wakes [`flush`] at each report, so that it returns as soon as the last one is in.
    /// (rdkafka's own `flush` waits in 100 ms polls, and with a `ThreadedProducer` the
    /// reports go to the producer's thread, so each of those polls runs its full length.)
    reported: tokio::sync::Notify,
}

impl Deliveries {
    fn failed(&self, err: &KafkaError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| err.to_string());
        drop(first);
        self.reported.notify_one();
    }

    /// Reports so far: (acknowledged, failed).
    fn counts(&self) -> (u64, u64) {
        (
            self.acked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The ingest producer, kept for the whole session (a run, or every micro-batch of a
/// continuous run). A new idempotent producer first has to get a producer id from the
/// broker, which costs a continuous run's every micro-batch hundreds of milliseconds.
///
/// A run takes the producer out and puts it back only if it succeeded, so that a producer
/// left in an unknown state by a failure (an aborted transaction, undelivered messages)
/// is never reused.
#[derive(Clone, Default)]
pub struct ProducerSlot(Arc<Mutex<Option<ThreadedProducer<Deliveries>>>>);

impl ProducerSlot {
    fn take(&self) -> Option<ThreadedProducer<Deliveries>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, producer: ThreadedProducer<Deliveries>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(producer);
    }

    /// Drops the kept producer, if any (before its broker stops).
    pub fn clear(&self) {
        drop(self.take());
    }
}

impl std::fmt::Debug for ProducerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.lock().map(|p| p.is_some()).unwrap_or(false);
        f.debug_struct("ProducerSlot").field("kept", &kept).finish()
    }
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::kafka::forward_log(level, fac, message);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                self.reported.notify_one();
                fault::point("ingest.acked");
            }
            Err((err, _)) => self.failed(err),
        }
    }
}

/// What sending one file produced.
struct FileOutcome {
    sent: u64,
    skipped: u64,
    rejects: Vec<IngestReject>,
}

impl FileOutcome {
    /// Data lines quarantined: a whole-file rejection counts all the lines it holds.
    fn quarantined_lines(&self) -> u64 {
        self.rejects.iter().map(|r| r.lines).sum()
    }
}

/// Runs the ingest task over every landing file not yet ingested.
pub async fn run(
    ctx: &TaskContext,
    task: &CsvToKafka,
    progress: Arc<Progress>,
) -> Result<TaskSummary, IngestError> {
    let settings = &ctx.settings;
    let topic = task.topic.clone();
    let quarantine_spec = quarantine::ingest_table().named(table_setting(&task.quarantine_table));
    let mut summary = TaskSummary::new("ingest");
    let mut checkpoint = IngestCheckpoint::load(&settings.state_dir, &topic)?;

    let files = source::discover(&settings.landing_dir)?;
    let mut pending = Vec::new();
    for file in files {
        match checkpoint.completed(&file.name) {
            None => pending.push(file),
            Some(done) if done.size != file.size || done.modified_ms != file.modified_ms => {
                let note = format!(
                    "{} changed after it was ingested at {}; it is not sent again. To ingest the new content, land it under a new name",
                    file.name, done.completed_at
                );
                tracing::warn!("{note}");
                summary.notes.push(note);
            }
            Some(_) => {}
        }
    }
    progress.set_total_files(pending.len() as u64);

    // With a broker that has transactions (the bundle's kafka map sets transactional.id),
    // each file is sent in one transaction: after a crash, what a dead run sent is
    // aborted, and read_committed readers (bronze included) never see it.
    let transactional = settings.kafka.client.contains_key("transactional.id");
    let producer = match ctx.kafka().producer.take() {
        Some(kept) => kept,
        None if pending.is_empty() => return Ok(finish(summary, &progress)),
        None => new_producer(ctx, &topic, transactional).await?,
    };
    let mut quarantine_table: Option<DeltaSink> = None;
    let quarantine_app = format!("ingest/{topic}");

    let max_message = settings
        .kafka
        .client
        .get("message.max.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1_000_000)
        .saturating_sub(MESSAGE_OVERHEAD);
    for file in pending {
        if !wait_until_stable(&file, settings.landing_stable).await {
            let note = format!(
                "{} is still being written (its size or time changed for {STABLE_WAIT:?}); it and the files after it are left for the next run",
                file.name
            );
            tracing::warn!("{note}");
            summary.notes.push(note);
            break;
        }
        let partitions = ctx.kafka().partitions(&topic);
        let offsets = ctx
            .kafka()
            .endpoint
            .watermarks_async(&topic, &partitions)
            .await?;
        let entry = checkpoint.begin(&file, || {
            offsets.iter().map(|(&p, &(_, high))| (p, high)).collect()
        })?;
        let resumed = offsets
            .iter()
            .any(|(p, (_, high))| entry.start_offsets.get(p).is_none_or(|start| start < high));
        let already = if resumed {
            // This file was started before: something of it may already be in the topic.
            lines_already_sent(ctx, &topic, &file.name, &entry.start_offsets, &offsets).await?
        } else {
            HashSet::new()
        };

        let before = producer.context().counts();
        if transactional {
            producer
                .begin_transaction()
                .map_err(|source| IngestError::Producer {
                    bootstrap: ctx.kafka().endpoint.bootstrap.clone(),
                    source,
                })?;
        }
        let outcome = {
            let producer = producer.clone();
            let file = file.clone();
            let topic = topic.clone();
            let progress = progress.clone();
            tokio::task::spawn_blocking(move || {
                send_file(&producer, &topic, &file, &already, max_message, &progress)
            })
            .await
            .expect("ingest thread panicked")?
        };
        flush(
            &producer,
            &file,
            &ctx.kafka().endpoint.bootstrap,
            before,
            outcome.sent,
        )
        .await?;
        if transactional {
            transaction_call(&producer, &ctx.kafka().endpoint.bootstrap, |p| {
                p.commit_transaction(FLUSH_TIMEOUT)
            })
            .await?;
        }
        fault::point("ingest.after_send");

        if !outcome.rejects.is_empty() {
            if quarantine_table.is_none() {
                quarantine_table =
                    Some(DeltaSink::open(&settings.warehouse, quarantine_spec.clone()).await?);
            }
            let table = quarantine_table.as_mut().expect("opened above");
            let committed = table.txn_version(&quarantine_app).await?;
            if committed.is_none_or(|v| v < entry.seq) {
                let batch = quarantine::ingest_batch(&outcome.rejects);
                let version = table
                    .append(
                        vec![batch],
                        vec![Transaction::new(&quarantine_app, entry.seq)],
                    )
                    .await?;
                summary
                    .versions
                    .push((table.qualified_name().to_string(), version));
            }
        }
        fault::point("ingest.before_checkpoint");
        checkpoint.complete(
            &file,
            entry.seq,
            outcome.sent + outcome.skipped,
            outcome.quarantined_lines(),
        )?;
        progress.file_done();

        let rows = outcome.sent + outcome.skipped + outcome.quarantined_lines();
        tracing::info!(
            file = %file.name,
            rows,
            sent = outcome.sent,
            resumed_past = outcome.skipped,
            quarantined = outcome.quarantined_lines(),
            "ingested"
        );
        if outcome.skipped > 0 {
            summary.notes.push(format!(
                "{}: resumed after a crash; {} line(s) were already in the topic and were not sent again",
                file.name, outcome.skipped
            ));
        }
        summary.files += 1;
        summary.bytes_read += file.size;
        summary.rows_read += rows;
        summary.rows_written += outcome.sent;
        summary.rows_quarantined += outcome.quarantined_lines();
    }
    ctx.kafka().producer.put(producer);
    Ok(finish(summary, &progress))
}

fn finish(mut summary: TaskSummary, progress: &Progress) -> TaskSummary {
    summary.elapsed = progress.elapsed();
    summary
}

/// A new idempotent producer, with its transactions initialized if it has a
/// `transactional.id`.
async fn new_producer(
    ctx: &TaskContext,
    topic: &str,
    transactional: bool,
) -> Result<ThreadedProducer<Deliveries>, IngestError> {
    let bootstrap = &ctx.kafka().endpoint.bootstrap;
    let producer = ThreadedProducer::from_config_and_context(
        &ctx.kafka().endpoint.producer_config(),
        Deliveries::default(),
    )
    .map_err(|source| IngestError::Producer {
        bootstrap: bootstrap.clone(),
        source,
    })?;
    if transactional {
        transaction_call(&producer, bootstrap, |p| p.init_transactions(FLUSH_TIMEOUT)).await?;
    } else {
        // An idempotent producer asks for its producer id when a metadata response comes
        // in from a connected broker, or else on a 500 ms timer. The first response comes
        // from the bootstrap connection, which librdkafka then drops for the brokers it
        // names; the second waits for one of those to be up. So the first file does not
        // wait for the timer. A failure here shows again, with its cause, at delivery.
        let p = producer.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            for _ in 0..2 {
                p.client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
                    .ok();
            }
        })
        .await
        .expect("metadata thread panicked");
    }
    Ok(producer)
}

/// A blocking transaction call of the producer, off the runtime's worker threads.
async fn transaction_call(
    producer: &ThreadedProducer<Deliveries>,
    bootstrap: &str,
    call: fn(&ThreadedProducer<Deliveries>) -> rdkafka::error::KafkaResult<()>,
) -> Result<(), IngestError> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || call(&p))
        .await
        .expect("transaction thread panicked")
        .map_err(|source| IngestError::Producer {
            bootstrap: bootstrap.into(),
            source,
        })
}

/// Reads back the `source_line` headers of `file`'s messages written since the file was
/// started, so that a resumed file sends only what is missing.
async fn lines_already_sent(
    ctx: &TaskContext,
    topic: &str,
    file: &str,
    start: &BTreeMap<i32, i64>,
    now: &BTreeMap<i32, (i64, i64)>,
) -> Result<HashSet<u64>, KafkaClientError> {
    let ranges: BTreeMap<i32, (i64, i64)> = now
        .iter()
        .map(|(&p, &(low, high))| (p, (start.get(&p).copied().unwrap_or(low).max(low), high)))
        .collect();
    let mut reader = RangeReader::open(
        &ctx.kafka().endpoint,
        "ingest-resume",
        topic,
        &ranges,
        ctx.idle_timeout,
    )?;
    let mut lines = HashSet::new();
    while let Some(message) = reader.next().await? {
        let Some(headers) = message.headers() else {
            continue;
        };
        let mut from_file = false;
        let mut line = None;
        for h in headers.iter() {
            match (h.key, h.value) {
                (HEADER_SOURCE_FILE, Some(v)) => from_file = v == file.as_bytes(),
                (HEADER_SOURCE_LINE, Some(v)) => {
                    line = std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                }
                _ => {}
            }
        }
        if let (true, Some(line)) = (from_file, line) {
            lines.insert(line);
        }
    }
    tracing::info!(
        file,
        already_sent = lines.len(),
        "resuming a partly sent file"
    );
    Ok(lines)
}

/// Reads one file and hands its good rows to the producer (blocking).
fn send_file(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    file: &LandingFile,
    already: &HashSet<u64>,
    max_message: usize,
    progress: &Progress,
) -> Result<FileOutcome, IngestError> {
    let mut rows = CsvRows::open(file)?;
    let mut outcome = FileOutcome {
        sent: 0,
        skipped: 0,
        rejects: Vec::new(),
    };
    let mut since_report = 0u64;
    while let Some(row) = rows.next_row() {
        // A whole-file rejection stands for all the file's data lines.
        since_report += match &row {
            Row::Rejected { lines, .. } => *lines,
            Row::Record { .. } => 1,
        };
        if since_report >= 10_000 {
            progress.add_rows(since_report);
            since_report = 0;
        }
        match row {
            Row::Rejected {
                line,
                raw,
                reason,
                lines,
            } => outcome.rejects.push(IngestReject {
                file: file.name.clone(),
                line,
                raw,
                reason,
                lines,
            }),
            Row::Record { line, .. } if already.contains(&line) => outcome.skipped += 1,
            Row::Record { line, value, .. } if value.len() > max_message => {
                // Kafka would refuse it and stall the file: quarantine it instead.
                let size = value.len();
                let mut raw = value;
                if raw.len() > MAX_RAW {
                    let cut = (0..=MAX_RAW)
                        .rev()
                        .find(|&i| raw.is_char_boundary(i))
                        .unwrap_or(0);
                    raw.truncate(cut);
                    raw.push_str(&format!("… (truncated; {size} bytes)"));
                }
                outcome.rejects.push(IngestReject {
                    file: file.name.clone(),
                    line,
                    raw,
                    lines: 1,
                    reason: format!(
                        "the row is {size} bytes as a Kafka message, above the limit of {max_message} bytes (librdkafka message.max.bytes, less room for the key and headers)"
                    ),
                });
            }
            Row::Record { line, key, value } => {
                let line_text = line.to_string();
                let headers = OwnedHeaders::new_with_capacity(2)
                    .insert(Header {
                        key: HEADER_SOURCE_FILE,
                        value: Some(file.name.as_bytes()),
                    })
                    .insert(Header {
                        key: HEADER_SOURCE_LINE,
                        value: Some(line_text.as_bytes()),
                    });
                let mut record = BaseRecord::to(topic).payload(&value).headers(headers);
                if let Some(k) = &key {
                    record = record.key(k);
                }
                send(producer, record);
                outcome.sent += 1;
                fault::point("ingest.row");
            }
        }
    }
    progress.add_rows(since_report);
    Ok(outcome)
}

/// Enqueues a record, waiting while librdkafka's local queue is full.
fn send<'a>(producer: &ThreadedProducer<Deliveries>, mut record: BaseRecord<'a, String, String>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((err, _)) => {
                // Any other enqueue error is reported like a failed delivery.
                producer.context().failed(&err);
                return;
            }
        }
    }
}

/// Waits until every message of the file is acknowledged, or fails.
async fn flush(
    producer: &ThreadedProducer<Deliveries>,
    file: &LandingFile,
    bootstrap: &str,
    before: (u64, u64),
    sent: u64,
) -> Result<(), IngestError> {
    let deliveries = producer.context();
    let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
    let (acked, failed) = loop {
        let (acked, failed) = deliveries.counts();
        let (acked, failed) = (acked - before.0, failed - before.1);
        if acked + failed >= sent {
            break (acked, failed);
        }
        // Each report stores a wake-up, so none is missed between the count and the wait.
        if tokio::time::timeout_at(deadline, deliveries.reported.notified())
            .await
            .is_err()
        {
            break (acked, failed);
        }
    };
    if failed > 0 || acked < sent {
        let error = deliveries
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "not acknowledged in time".into());
        return Err(IngestError::Delivery {
            file: file.name.clone(),
            bootstrap: bootstrap.into(),
            failed: sent.saturating_sub(acked),
            error,
        });
    }
    Ok(())
}
