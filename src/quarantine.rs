//! Quarantine tables: where bad input goes instead of disappearing.
//!
//! Each rejected row keeps where it came from, its raw text and the reason, so that a
//! data engineer can fix the source and account for every input row.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;

use crate::catalog::TableName;
use crate::delta::{schema, TableSpec};
use crate::tasks::bronze::BronzeRecord;

/// A landing-file row that never reached Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestReject {
    pub file: String,
    pub line: u64,
    pub raw: String,
    pub reason: String,
    /// How many data lines this row stands for: 1, or a whole file's count when the
    /// file's header rejects all of them at once.
    pub lines: u64,
}

/// A quarantine table: where the rows came from, then `reason` and `quarantined_at`.
fn quarantine_table(table: &str, origin: Vec<Field>) -> TableSpec {
    let mut fields = origin;
    fields.push(Field::new("reason", DataType::Utf8, false));
    fields.push(Field::new(
        "quarantined_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    TableSpec {
        name: TableName::new("quarantine", table),
        schema: schema(fields),
        partition_columns: vec![],
        target_file_size: None,
    }
}

/// A batch of `spec`: the `origin` columns, then the reasons and the time now.
fn quarantine_batch<'a>(
    spec: TableSpec,
    mut origin: Vec<ArrayRef>,
    reasons: impl Iterator<Item = &'a str>,
) -> RecordBatch {
    let reasons = StringArray::from_iter_values(reasons);
    let now = chrono::Utc::now().timestamp_micros();
    let at = TimestampMicrosecondArray::from_iter_values((0..reasons.len()).map(|_| now))
        .with_timezone("UTC");
    origin.push(Arc::new(reasons));
    origin.push(Arc::new(at));
    RecordBatch::try_new(spec.schema, origin).expect("columns match the quarantine table")
}

/// `<catalog>.quarantine.ingest`: landing-file rows that never reached Kafka.
pub fn ingest_table() -> TableSpec {
    quarantine_table(
        "ingest",
        vec![
            Field::new("file", DataType::Utf8, false),
            Field::new("line", DataType::Int64, false),
            Field::new("raw", DataType::Utf8, false),
            Field::new("lines", DataType::Int64, false),
        ],
    )
}

/// `<catalog>.quarantine.stocks_silver`: bronze records that are not valid stocks.
pub fn stocks_table() -> TableSpec {
    quarantine_table(
        "stocks_silver",
        vec![
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("value", DataType::Utf8, true),
        ],
    )
}

/// One batch of rejected bronze records, with their reasons.
pub fn stocks_batch(rows: &[(BronzeRecord<'_>, String)]) -> RecordBatch {
    quarantine_batch(
        stocks_table(),
        vec![
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|(r, _)| r.partition),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(r, _)| r.offset),
            )),
            Arc::new(StringArray::from_iter(rows.iter().map(|(r, _)| r.value))),
        ],
        rows.iter().map(|(_, why)| why.as_str()),
    )
}

/// One batch of rejected ingest rows.
pub fn ingest_batch(rows: &[IngestReject]) -> RecordBatch {
    quarantine_batch(
        ingest_table(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.file.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.line as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.raw.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.lines as i64),
            )),
        ],
        rows.iter().map(|r| r.reason.as_str()),
    )
}
