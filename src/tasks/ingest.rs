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
use crate::source::{self, CsvFormat, CsvRows, LandingFile, LineLimits, Row, SourceError};
use crate::tasks::{table_setting, TaskContext};

/// Header naming the landing file a message came from (relative to `landing_dir`).
pub const HEADER_SOURCE_FILE: &str = "source_file";
/// Header holding the 1-based line number of the row within its file.
pub const HEADER_SOURCE_LINE: &str = "source_line";

/// Room left in a Kafka request for the record batch's own framing, beyond the record.
const BATCH_OVERHEAD: usize = 512;
/// Bytes of a record's framing beyond its key, value and headers (lengths, varints).
const RECORD_OVERHEAD: usize = 64;
/// Kafka's default `message.max.bytes` of a producer, and `max.message.bytes` of a topic.
const PRODUCER_MAX_MESSAGE: usize = 1_000_000;
const TOPIC_MAX_MESSAGE: usize = 1_048_588;
/// Quarantine rows are committed in chunks of at most this many rows, or bytes, so that
/// a file of bad lines never has to be held whole.
const QUARANTINE_CHUNK_ROWS: usize = 10_000;
const QUARANTINE_CHUNK_BYTES: usize = 8 << 20;
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
    #[error("topic `{topic}` on {bootstrap} is not the topic that files in progress were sent to: its id is {found}, the ingest checkpoint {checkpoint} recorded {recorded}. The topic was deleted and created again, or this is another cluster, so those files cannot be resumed from it. Point kafka_topic and kafka_bootstrap_servers at the original topic, or run `medallion reset` to start the target over")]
    TopicReplaced {
        topic: String,
        bootstrap: String,
        checkpoint: String,
        recorded: String,
        found: String,
    },
    #[error("the bundle declares no `landing_dir` variable, the folder a csv_to_kafka task reads. Declare it under `variables:` with a description and a default")]
    NoLandingDir,
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
pub struct ProducerSlot(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    producer: Option<ThreadedProducer<Deliveries>>,
    /// A run's only ingest: the producer is closed as soon as it is put back.
    once: bool,
    /// The thread closing it (librdkafka's destroy takes some 40 ms), joined by `clear`.
    closing: Option<std::thread::JoinHandle<()>>,
}

impl ProducerSlot {
    /// A slot for a session of one run: its producer is closed in the background as
    /// soon as the ingest is done with it, while the tasks after it run.
    pub fn once() -> Self {
        let slot = ProducerSlot::default();
        slot.lock().once = true;
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Option<ThreadedProducer<Deliveries>> {
        self.lock().producer.take()
    }

    fn put(&self, producer: ThreadedProducer<Deliveries>) {
        let mut slot = self.lock();
        if slot.once {
            slot.closing = Some(std::thread::spawn(move || drop(producer)));
        } else {
            slot.producer = Some(producer);
        }
    }

    /// Drops the kept producer, if any, and waits for one being closed (before its
    /// broker stops).
    pub fn clear(&self) {
        let (producer, closing) = {
            let mut slot = self.lock();
            (slot.producer.take(), slot.closing.take())
        };
        drop(producer);
        if let Some(closing) = closing {
            let _ = closing.join();
        }
    }
}

impl std::fmt::Debug for ProducerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.lock().producer.is_some();
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
    /// Data lines quarantined: a whole-file rejection counts all the lines it holds.
    quarantined: u64,
}

impl FileOutcome {
    fn quarantined_lines(&self) -> u64 {
        self.quarantined
    }
}

/// Collects a file's rejected rows and hands them on in bounded chunks (from the
/// blocking thread that reads the file to the task, which commits them).
struct RejectChunks {
    tx: tokio::sync::mpsc::Sender<Vec<IngestReject>>,
    rows: Vec<IngestReject>,
    bytes: usize,
    lines: u64,
}

impl RejectChunks {
    fn new(tx: tokio::sync::mpsc::Sender<Vec<IngestReject>>) -> Self {
        RejectChunks {
            tx,
            rows: Vec::new(),
            bytes: 0,
            lines: 0,
        }
    }

    /// Adds a row; `false` once the task stopped taking chunks (it failed).
    fn push(&mut self, row: IngestReject) -> bool {
        self.lines += row.lines;
        self.bytes += row.size();
        self.rows.push(row);
        if self.rows.len() >= QUARANTINE_CHUNK_ROWS || self.bytes >= QUARANTINE_CHUNK_BYTES {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        self.bytes = 0;
        if self.rows.is_empty() {
            return true;
        }
        self.tx
            .blocking_send(std::mem::take(&mut self.rows))
            .is_ok()
    }
}

/// The txn version of a quarantine commit of file `seq` whose last row is at `line`:
/// the file's sequence number in the high 32 bits and the line in the low ones, so that
/// versions grow across files and within a file, and a resumed file knows which of its
/// rows are in. (Versions below 2^32 are whole files, as earlier versions committed them.)
fn quarantine_version(seq: i64, line: u64) -> i64 {
    (seq << 32) | line.min(u64::from(u32::MAX)) as i64
}

/// The last line of file `seq` whose quarantine rows are committed, given the committed
/// version: `None` for none of them, `Some(u64::MAX)` for all.
fn quarantined_through(committed: Option<i64>, seq: i64) -> Option<u64> {
    let v = committed?;
    if v < 1 << 32 {
        // A whole-file commit of an earlier version.
        return (v >= seq).then_some(u64::MAX);
    }
    match (v >> 32).cmp(&seq) {
        std::cmp::Ordering::Greater => Some(u64::MAX),
        std::cmp::Ordering::Equal => Some((v & i64::from(u32::MAX)) as u64),
        std::cmp::Ordering::Less => None,
    }
}

/// The `quarantine.ingest` table, opened when the first rows come.
struct QuarantineSink<'a> {
    settings: &'a crate::bundle::Settings,
    spec: crate::delta::TableSpec,
    app: String,
    table: Option<DeltaSink>,
}

impl QuarantineSink<'_> {
    /// Commits the rows of file `seq` not committed yet (a resumed file's rows may be),
    /// with their progress.
    async fn commit(
        &mut self,
        seq: i64,
        rows: Vec<IngestReject>,
        summary: &mut TaskSummary,
    ) -> Result<(), IngestError> {
        if self.table.is_none() {
            self.table = Some(DeltaSink::open(&self.settings.warehouse, self.spec.clone()).await?);
        }
        let table = self.table.as_mut().expect("opened above");
        let through = quarantined_through(table.txn_version(&self.app).await?, seq);
        let rows: Vec<IngestReject> = rows
            .into_iter()
            .filter(|r| through.is_none_or(|t| r.line > t))
            .collect();
        let Some(last) = rows.last().map(|r| r.line) else {
            return Ok(());
        };
        let batch = quarantine::ingest_batch(&rows);
        let version = table
            .append(
                vec![batch],
                vec![Transaction::new(&self.app, quarantine_version(seq, last))],
            )
            .await?;
        summary
            .versions
            .push((table.qualified_name().to_string(), version));
        fault::point("ingest.quarantine_chunk");
        Ok(())
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

    let topic_id = ctx.kafka().endpoint.topic_id_async(&topic).await?;
    if let (Some(recorded), Some(found)) = (checkpoint.topic_id(), &topic_id) {
        // Start offsets of files in progress are offsets of the recorded topic.
        if checkpoint.has_files_in_progress() && recorded != found {
            return Err(IngestError::TopicReplaced {
                topic: topic.clone(),
                bootstrap: ctx.kafka().endpoint.bootstrap.clone(),
                checkpoint: IngestCheckpoint::path_for(&settings.state_dir, &topic)
                    .display()
                    .to_string(),
                recorded: recorded.into(),
                found: found.clone(),
            });
        }
    }
    checkpoint.set_topic_id(topic_id);
    let landing_dir = settings
        .landing_dir
        .as_deref()
        .ok_or(IngestError::NoLandingDir)?;
    let found = source::discover(landing_dir)?;
    summary.notes.extend(found.skipped);
    let mut pending = Vec::new();
    for file in found.files {
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
    // Files a run died in come first, so that they are finished before anything new.
    pending.sort_by_key(|f| checkpoint.in_progress(&f.name).is_none());
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
    let mut quarantine = QuarantineSink {
        settings,
        spec: quarantine_spec,
        app: format!("ingest/{topic}"),
        table: None,
    };
    let max_message = max_message_bytes(ctx, &topic).await;
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
        if entry.changed(&file) {
            let note = format!(
                "{} changed after a crashed run began sending it; the lines that reached the topic then are not sent again, and the rest is sent from the file as it is now",
                file.name
            );
            tracing::warn!("{note}");
            summary.notes.push(note);
        }
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
            let (tx, mut chunks) = tokio::sync::mpsc::channel(1);
            let limits = task.line_limits();
            let format = task.csv_format();
            let sending = tokio::task::spawn_blocking(move || {
                let mut rejects = RejectChunks::new(tx);
                let sent = send_file(
                    &producer,
                    &topic,
                    &file,
                    &already,
                    (&format, limits, max_message),
                    &progress,
                    &mut rejects,
                );
                rejects.flush();
                sent
            });
            // Bad rows are committed while the file is read, a chunk at a time.
            while let Some(rows) = chunks.recv().await {
                quarantine.commit(entry.seq, rows, &mut summary).await?;
            }
            sending.await.expect("ingest thread panicked")
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

/// The largest Kafka record the producer and the topic both accept: the smaller of the
/// producer's `message.max.bytes` and the topic's `max.message.bytes` (Kafka's defaults
/// when they are not set or cannot be read), less the batch framing.
async fn max_message_bytes(ctx: &TaskContext, topic: &str) -> usize {
    let producer = ctx
        .settings
        .kafka
        .client
        .get("message.max.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(PRODUCER_MAX_MESSAGE);
    let topic = ctx
        .kafka()
        .endpoint
        .topic_config(topic, "max.message.bytes")
        .await
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(TOPIC_MAX_MESSAGE);
    producer.min(topic).saturating_sub(BATCH_OVERHEAD)
}

/// Reads one file and hands its good rows to the producer and its bad ones to `rejects`
/// (blocking). `limits` are the files' format (header, key column), the line limits and
/// the largest record Kafka accepts.
fn send_file(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    file: &LandingFile,
    already: &HashSet<u64>,
    limits: (&CsvFormat, LineLimits, usize),
    progress: &Progress,
    rejects: &mut RejectChunks,
) -> FileOutcome {
    let (format, line_limits, max_message) = limits;
    let mut outcome = FileOutcome {
        sent: 0,
        skipped: 0,
        quarantined: 0,
    };
    let reject = |line, raw, raw_bytes, reason, lines| {
        IngestReject::new(&file.name, line, raw, raw_bytes, reason, lines)
    };
    let mut rows = match CsvRows::open_with(file, line_limits, format.clone()) {
        Ok(rows) => rows,
        Err(e) => {
            // Quarantined, and the file is recorded as done: nothing of it was sent.
            rejects.push(reject(
                0,
                String::new(),
                0,
                format!("the file cannot be read: {e}. Fix it and land it again under a new name"),
                0,
            ));
            return outcome;
        }
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
        let rejected = match row {
            Row::Rejected {
                line,
                raw,
                raw_bytes,
                reason,
                lines,
            } => Some(reject(line, raw, raw_bytes, reason, lines)),
            Row::Record { line, .. } if already.contains(&line) => {
                outcome.skipped += 1;
                None
            }
            Row::Record { line, key, value } => {
                let line_text = line.to_string();
                let size = RECORD_OVERHEAD
                    + key.as_ref().map_or(0, String::len)
                    + value.len()
                    + HEADER_SOURCE_FILE.len()
                    + file.name.len()
                    + HEADER_SOURCE_LINE.len()
                    + line_text.len();
                let too_large = |size: usize, detail: &str| {
                    let raw_bytes = value.len() as u64;
                    reject(
                        line,
                        value.clone(),
                        raw_bytes,
                        format!(
                            "the row is a Kafka record of {size} bytes (key, value and headers){detail}, above the {max_message} bytes the producer and the topic accept (message.max.bytes, max.message.bytes)"
                        ),
                        1,
                    )
                };
                if size > max_message {
                    Some(too_large(size, ""))
                } else {
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
                    match send(producer, record) {
                        Ok(()) => {
                            outcome.sent += 1;
                            fault::point("ingest.row");
                            None
                        }
                        Err(e) => Some(too_large(size, &format!(" ({e})"))),
                    }
                }
            }
        };
        if let Some(r) = rejected {
            outcome.quarantined += r.lines;
            if !rejects.push(r) {
                // The task failed committing quarantine rows, and reports why.
                break;
            }
        }
    }
    progress.add_rows(since_report);
    outcome
}

/// Enqueues a record, waiting while librdkafka's local queue is full. A record librdkafka
/// refuses as too large comes back as an error, for the quarantine.
fn send<'a>(
    producer: &ThreadedProducer<Deliveries>,
    mut record: BaseRecord<'a, String, String>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((
                err @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                _,
            )) => {
                return Err(err);
            }
            Err((err, _)) => {
                // Any other enqueue error is reported like a failed delivery.
                producer.context().failed(&err);
                return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_versions_order_files_then_lines() {
        assert!(quarantine_version(2, 10) > quarantine_version(1, u64::MAX));
        assert_eq!(quarantined_through(None, 3), None);
        // Rows of file 3 up to line 500 are in; a later file's commit means all of them.
        assert_eq!(
            quarantined_through(Some(quarantine_version(3, 500)), 3),
            Some(500)
        );
        assert_eq!(
            quarantined_through(Some(quarantine_version(4, 0)), 3),
            Some(u64::MAX)
        );
        assert_eq!(quarantined_through(Some(quarantine_version(2, 9)), 3), None);
        // Whole-file versions of earlier releases.
        assert_eq!(quarantined_through(Some(3), 3), Some(u64::MAX));
        assert_eq!(quarantined_through(Some(2), 3), None);
    }

    /// A file that cannot be opened (here: a link put where the listed file was) is one
    /// quarantine row with the reason, and nothing is sent.
    #[test]
    fn a_file_that_cannot_be_opened_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, "TOP-SECRET").unwrap();
        let path = dir.path().join("x.csv");
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        let file = LandingFile {
            path,
            name: "x.csv".into(),
            size: 10,
            modified_ms: 0,
        };
        let producer: ThreadedProducer<Deliveries> = ThreadedProducer::from_config_and_context(
            &crate::kafka::KafkaEndpoint::new("127.0.0.1:1", BTreeMap::new()).producer_config(),
            Deliveries::default(),
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let mut rejects = RejectChunks::new(tx);
        let outcome = send_file(
            &producer,
            "T",
            &file,
            &HashSet::new(),
            (
                &crate::source::tests::stock(),
                LineLimits::default(),
                1 << 20,
            ),
            &Progress::new("ingest", false),
            &mut rejects,
        );
        assert!(rejects.flush());
        drop(rejects);
        assert_eq!((outcome.sent, outcome.quarantined), (0, 0));
        let rows = rx.blocking_recv().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].file.as_str(), rows[0].line), ("x.csv", 0));
        assert!(
            rows[0].reason.starts_with("the file cannot be read"),
            "{rows:?}"
        );
        assert!(!rows[0].raw.contains("TOP-SECRET"));
    }
}
