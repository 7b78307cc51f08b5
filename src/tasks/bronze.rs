//! Task `bronze`: Kafka → the `bronze.bronze` Delta table (the original pipeline's "Bronze").
//!
//! The table has the columns of Spark's Kafka source, partitioned by `year_month` of the
//! record timestamp. Progress is the last offset written per partition, stored as a Delta
//! `txn` action with app id `<table>/<topic>/<partition>` in the same commit as the rows.
//! On start the task reads those versions and seeks just past them; consumer-group
//! offsets play no part. A crash between two commits therefore re-reads exactly the
//! records whose commit did not happen.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Transaction;
use rdkafka::{Message, Timestamp};

use crate::bundle::job::KafkaToDelta;
use crate::catalog::TableName;
use crate::delta::{schema, DeltaError, DeltaSink, TableSpec};
use crate::fault;
use crate::kafka::{KafkaClientError, RangeReader};
use crate::progress::{Progress, TaskSummary};
use crate::tasks::{table_setting, TaskContext};

/// Errors of the bronze task.
#[derive(Debug, thiserror::Error)]
pub enum BronzeError {
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error("{table} already holds topic `{topic}` partition {partition} up to offset {committed}, but the topic now ends at offset {high}. The topic was recreated or the broker lost its data; run `medallion reset` to start over, or point kafka_topic at the right topic")]
    TopicBehindTable {
        table: String,
        topic: String,
        partition: i32,
        committed: i64,
        high: i64,
    },
    #[error("topic `{topic}` on {bootstrap} is not the topic {table} was read from: its id is {found}, and {table} recorded {recorded}. The topic was deleted and created again, or this is another cluster at the same address, so the offsets {table} recorded mean other records here. Point kafka_topic and kafka_bootstrap_servers at the original topic, or run `medallion reset` to start the target over from its landing files")]
    TopicReplaced {
        table: String,
        topic: String,
        bootstrap: String,
        recorded: String,
        found: String,
    },
    #[error("topic `{topic}` partition {partition} no longer holds offsets {from}..{to} ({count} record(s)): the topic's retention or compaction removed them before {table} read them, so they are lost to it. To go on without them, set `fail_on_data_loss: false` on the kafka_to_delta task (as Spark's failOnDataLoss) and run again: the run skips them and its summary says how many. Or land their source files again")]
    DataLoss {
        table: String,
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        count: i64,
    },
}

/// The `commitInfo` member under which bronze commits record the ids of their topics.
pub const TOPIC_IDS: &str = "medallion.kafkaTopicIds";
/// How many of the latest commits are searched for the recorded topic id.
const TOPIC_ID_DEPTH: usize = 50;

/// `<catalog>.bronze.bronze`.
pub fn table() -> TableSpec {
    TableSpec {
        name: TableName::new("bronze", "bronze"),
        schema: schema(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("value", DataType::Utf8, true),
            Field::new("topic", DataType::Utf8, false),
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("timestampType", DataType::Int32, false),
            Field::new("year_month", DataType::Utf8, true),
        ]),
        partition_columns: vec!["year_month".into()],
        target_file_size: None,
    }
}

/// Compares the topic's id with the one bronze recorded, fails if they differ, and makes
/// every commit of this run record it (in `commitInfo`, beside the progress). A table of
/// an earlier version, or a broker that reports no ids, records none: nothing to compare.
async fn check_topic_id(
    ctx: &TaskContext,
    sink: &mut DeltaSink,
    topic: &str,
    summary: &mut TaskSummary,
) -> Result<(), BronzeError> {
    let endpoint = &ctx.kafka().endpoint;
    let found = endpoint.topic_id_async(topic).await?;
    let recorded = sink.last_commit_info(TOPIC_IDS, TOPIC_ID_DEPTH).await?;
    let mut ids = recorded
        .as_ref()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let before = ids.get(topic).and_then(|v| v.as_str()).map(str::to_string);
    if let (Some(recorded), Some(found)) = (&before, &found) {
        if recorded != found {
            return Err(BronzeError::TopicReplaced {
                table: sink.qualified_name().into(),
                topic: topic.into(),
                bootstrap: endpoint.bootstrap.clone(),
                recorded: recorded.clone(),
                found: found.clone(),
            });
        }
    }
    match found {
        Some(found) => {
            ids.insert(topic.into(), serde_json::Value::String(found));
            sink.set_commit_info(TOPIC_IDS, serde_json::Value::Object(ids));
        }
        None if before.is_some() => summary.notes.push(format!(
            "{} on {} reports no topic id; bronze cannot check that it is the topic it read before",
            topic, endpoint.bootstrap
        )),
        None => {}
    }
    Ok(())
}

/// The txn app id under which a partition's progress is committed.
pub fn app_id(table: &TableName, topic: &str, partition: i32) -> String {
    format!("{table}/{topic}/{partition}")
}

/// Runs the bronze task: every partition from where it left off to the end offsets seen now.
pub async fn run(
    ctx: &TaskContext,
    task: &KafkaToDelta,
    progress: Arc<Progress>,
) -> Result<TaskSummary, BronzeError> {
    let topic = task.topic.as_str();
    let spec = table().named(table_setting(&task.table));
    let name = spec.name.clone();
    let mut sink = DeltaSink::open(&ctx.settings.warehouse, spec).await?;
    let mut summary = TaskSummary::new("bronze");
    check_topic_id(ctx, &mut sink, topic, &mut summary).await?;

    let offsets = ctx
        .kafka()
        .endpoint
        .watermarks_async(topic, &ctx.kafka().partitions(topic))
        .await?;
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    let mut ranges = BTreeMap::new();
    for (&partition, &(low, high)) in &offsets {
        let done = sink.txn_version(&app_id(&name, topic, partition)).await?;
        if let Some(done) = done {
            committed.insert(partition, done);
            if done + 1 > high {
                return Err(BronzeError::TopicBehindTable {
                    table: sink.qualified_name().into(),
                    topic: topic.into(),
                    partition,
                    committed: done,
                    high,
                });
            }
        }
        let start = done.map_or(low, |d| d + 1);
        if start < low {
            // Only when bronze has read this partition before: a new table starts at the
            // log start, like Spark's `startingOffsets = earliest`.
            if task.fail_on_data_loss {
                return Err(BronzeError::DataLoss {
                    table: sink.qualified_name().into(),
                    topic: topic.into(),
                    partition,
                    from: start,
                    to: low,
                    count: low - start,
                });
            }
            let note = format!(
                "partition {partition}: {} record(s) at offsets {start}..{low} were removed by the topic's retention or compaction before bronze read them; skipped (fail_on_data_loss: false)",
                low - start
            );
            tracing::warn!("{note}");
            summary.notes.push(note);
        }
        ranges.insert(partition, (start.max(low), high));
    }

    let mut reader = RangeReader::open(
        &ctx.kafka().endpoint,
        "bronze",
        topic,
        &ranges,
        ctx.idle_timeout,
    )?;
    let mut writer = BronzeWriter {
        batch: BronzeBatch::new(ctx.batch_rows.min(1 << 20), VALUE_BYTES),
        sink: Some(sink),
        in_flight: None,
        name,
        topic,
        committed,
        summary,
    };
    let mut read = 0u64;
    let streamed = async {
        while let Some(message) = reader.next().await? {
            writer.batch.push(&message);
            writer
                .committed
                .insert(message.partition(), message.offset());
            drop(message);
            read += 1;
            if read.is_multiple_of(10_000) {
                progress.add_rows(10_000);
            }
            if writer.batch.len() >= ctx.batch_rows || writer.batch.bytes >= task.batch_bytes {
                writer.commit().await?;
            }
        }
        writer.commit().await
    }
    .await;
    // Even when reading failed, the append under way lands (or fails) before the task
    // reports, so that its summary names every commit it made.
    let waited = writer.wait().await;
    streamed?;
    waited?;
    progress.add_rows(read % 10_000);
    let mut summary = writer.summary;
    summary.elapsed = progress.elapsed();
    Ok(summary)
}

/// An append under way: it gives the sink back with the version and what it wrote.
type Append = tokio::task::JoinHandle<Result<(DeltaSink, i64, u64, u64), DeltaError>>;

/// Appends batches to bronze, each with its progress.
///
/// One append runs in the background while the next batch is read from Kafka, so that
/// fetching and Parquet encoding use both cores. Appends still run one at a time and in
/// order: each waits for the one before, so versions and offsets only move forward.
struct BronzeWriter<'a> {
    /// The table, while no append holds it.
    sink: Option<DeltaSink>,
    in_flight: Option<Append>,
    batch: BronzeBatch,
    name: TableName,
    topic: &'a str,
    /// The last offset read per partition: what the next commit records as done.
    committed: BTreeMap<i32, i64>,
    summary: TaskSummary,
}

impl BronzeWriter<'_> {
    /// Starts appending the batch with one `txn` action per partition (after the append
    /// before it has finished), then starts a new batch.
    async fn commit(&mut self) -> Result<(), BronzeError> {
        let rows = self.batch.len() as u64;
        if rows == 0 {
            return Ok(());
        }
        self.wait().await?;
        let bytes = self.batch.bytes;
        let record_batch = self.batch.finish();
        let txns = self
            .committed
            .iter()
            .map(|(&p, &offset)| Transaction::new(app_id(&self.name, self.topic, p), offset))
            .collect();
        let mut sink = self
            .sink
            .take()
            .expect("no append holds the sink after wait");
        self.in_flight = Some(tokio::spawn(async move {
            let version = sink.append(vec![record_batch], txns).await?;
            Ok((sink, version, rows, bytes))
        }));
        Ok(())
    }

    /// Waits for the append under way, if any, and counts what it wrote.
    async fn wait(&mut self) -> Result<(), BronzeError> {
        let Some(append) = self.in_flight.take() else {
            return Ok(());
        };
        let (sink, version, rows, bytes) = append.await.expect("bronze append panicked")?;
        fault::point("bronze.after_commit");
        self.summary.rows_read += rows;
        self.summary.bytes_read += bytes;
        self.summary.rows_written += rows;
        self.summary
            .versions
            .push((sink.qualified_name().to_string(), version));
        tracing::debug!(rows, version, "bronze commit");
        self.sink = Some(sink);
        Ok(())
    }
}

/// The first batch's guess at a value's size: about one generated or Kaggle row as JSON.
/// Later batches are sized from the one before.
const VALUE_BYTES: usize = 160;

/// Column builders for one commit's worth of records.
struct BronzeBatch {
    key: StringBuilder,
    value: StringBuilder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMicrosecondBuilder,
    timestamp_type: Int32Builder,
    year_month: StringBuilder,
    month_cache: MonthCache,
    len: usize,
    /// Rows the builders are sized for.
    capacity: usize,
    /// Value bytes per row the builders are sized for.
    value_bytes: usize,
    /// Key and value bytes of the rows since the last finish.
    bytes: u64,
}

impl BronzeBatch {
    fn new(capacity: usize, value_bytes: usize) -> Self {
        BronzeBatch {
            key: StringBuilder::with_capacity(capacity, capacity * 8),
            value: StringBuilder::with_capacity(capacity, capacity * value_bytes),
            topic: StringBuilder::with_capacity(capacity, capacity * 8),
            partition: Int32Builder::with_capacity(capacity),
            offset: Int64Builder::with_capacity(capacity),
            timestamp: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            timestamp_type: Int32Builder::with_capacity(capacity),
            year_month: StringBuilder::with_capacity(capacity, capacity * 7),
            month_cache: MonthCache::default(),
            len: 0,
            capacity,
            value_bytes,
            bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push<M: Message>(&mut self, m: &M) {
        self.bytes += (m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len)) as u64;
        // Kafka keys and values are bytes; ours are UTF-8 JSON. Bytes from another
        // producer that are not UTF-8 are kept with replacement characters.
        self.key
            .append_option(m.key().map(|k| String::from_utf8_lossy(k)));
        self.value
            .append_option(m.payload().map(|v| String::from_utf8_lossy(v)));
        self.topic.append_value(m.topic());
        self.partition.append_value(m.partition());
        self.offset.append_value(m.offset());
        // Spark's timestampType: 0 = CreateTime, 1 = LogAppendTime.
        let (millis, kind) = match m.timestamp() {
            Timestamp::CreateTime(ms) => (Some(ms), 0),
            Timestamp::LogAppendTime(ms) => (Some(ms), 1),
            Timestamp::NotAvailable => (None, -1),
        };
        // A foreign producer's timestamp far outside any date has no microsecond value:
        // it is kept as NULL rather than overflowing.
        self.timestamp
            .append_option(millis.and_then(|ms| ms.checked_mul(1000)));
        self.timestamp_type.append_value(kind);
        self.year_month
            .append_option(millis.and_then(|ms| self.month_cache.year_month(ms)));
        self.len += 1;
    }

    /// The rows so far as one batch; the builders start again at full capacity (Arrow's
    /// `finish` leaves them empty, and regrowing them costs a copy and page faults). The
    /// values are sized from this batch's, with some slack: a guess too small would
    /// double the buffer when it fills, and two batches are held at once (one being
    /// written), so that would be most of the task's memory.
    fn finish(&mut self) -> RecordBatch {
        let value_bytes = match self.len {
            0 => self.value_bytes,
            n => self.value.values_slice().len() / n * 9 / 8 + 1,
        };
        let fresh = BronzeBatch {
            month_cache: std::mem::take(&mut self.month_cache),
            ..BronzeBatch::new(self.capacity, value_bytes)
        };
        let mut done = std::mem::replace(self, fresh);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(done.key.finish()),
            Arc::new(done.value.finish()),
            Arc::new(done.topic.finish()),
            Arc::new(done.partition.finish()),
            Arc::new(done.offset.finish()),
            Arc::new(done.timestamp.finish()),
            Arc::new(done.timestamp_type.finish()),
            Arc::new(done.year_month.finish()),
        ];
        RecordBatch::try_new(table().schema, columns).expect("columns match the bronze schema")
    }
}

/// Formats `yyyy-MM` of a millisecond timestamp, reusing the last month's text: records
/// arrive in time order, so nearly every call hits the cache.
#[derive(Default)]
struct MonthCache {
    start: i64,
    end: i64,
    text: String,
}

impl MonthCache {
    fn year_month(&mut self, ms: i64) -> Option<&str> {
        use chrono::{Datelike, TimeZone, Utc};
        if !(self.start <= ms && ms < self.end) {
            let t = Utc.timestamp_millis_opt(ms).single()?;
            let first = Utc
                .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
                .single()?;
            let (ny, nm) = if t.month() == 12 {
                (t.year() + 1, 1)
            } else {
                (t.year(), t.month() + 1)
            };
            let next = Utc.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).single()?;
            self.start = first.timestamp_millis();
            self.end = next.timestamp_millis();
            self.text = format!("{:04}-{:02}", t.year(), t.month());
        }
        Some(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_batch_is_sized_from_the_one_before() {
        use rdkafka::message::OwnedMessage;
        let value = format!("{{\"v\":\"{}\"}}", "x".repeat(300));
        let message = |offset| {
            OwnedMessage::new(
                Some(value.clone().into_bytes()),
                Some(b"NYA".to_vec()),
                "Stocks".into(),
                Timestamp::CreateTime(1_709_251_200_000),
                0,
                offset,
                None,
            )
        };
        let mut batch = BronzeBatch::new(8, VALUE_BYTES);
        for offset in 0..8 {
            batch.push(&message(offset));
        }
        assert_eq!(
            (batch.len(), batch.bytes),
            (8, 8 * (3 + value.len() as u64))
        );
        let done = batch.finish();
        assert_eq!(done.num_rows(), 8);
        // The next batch holds values of this size without growing.
        assert!(batch.value_bytes > value.len(), "{}", batch.value_bytes);
        assert!(
            batch.value_bytes < value.len() * 5 / 4,
            "{}",
            batch.value_bytes
        );
        assert_eq!((batch.len(), batch.bytes), (0, 0));
    }

    #[test]
    fn year_month_of_timestamps() {
        let mut c = MonthCache::default();
        assert_eq!(c.year_month(0), Some("1970-01"));
        // 2024-02-29T23:59:59.999Z and the next millisecond.
        assert_eq!(c.year_month(1_709_251_199_999), Some("2024-02"));
        assert_eq!(c.year_month(1_709_251_200_000), Some("2024-03"));
        assert_eq!(c.year_month(1_735_689_599_999), Some("2024-12"));
        assert_eq!(c.year_month(1_735_689_600_000), Some("2025-01"));
        assert_eq!(c.year_month(i64::MAX), None);
        assert_eq!(c.year_month(i64::MIN), None);
    }

    #[test]
    fn an_extreme_timestamp_is_kept_as_null() {
        use deltalake::arrow::array::{Array, TimestampMicrosecondArray};
        use rdkafka::message::OwnedMessage;
        let mut batch = BronzeBatch::new(4, VALUE_BYTES);
        for (offset, ms) in [(0, i64::MAX), (1, i64::MIN), (2, 1_709_251_200_000)] {
            batch.push(&OwnedMessage::new(
                Some(b"{}".to_vec()),
                None,
                "Stocks".into(),
                Timestamp::CreateTime(ms),
                0,
                offset,
                None,
            ));
        }
        let done = batch.finish();
        let ts = done
            .column(5)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert!(ts.is_null(0) && ts.is_null(1));
        assert_eq!(ts.value(2), 1_709_251_200_000_000);
    }

    #[test]
    fn app_ids_name_table_topic_and_partition() {
        assert_eq!(app_id(&table().name, "Stocks", 2), "bronze.bronze/Stocks/2");
    }
}
