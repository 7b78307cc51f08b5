//! Quarantine tables: where bad input goes instead of disappearing.
//!
//! Each rejected row keeps where it came from, its raw text and the reason, so that a
//! data engineer can fix the source and account for every input row.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;

use crate::catalog::TableName;
use crate::delta::{schema, TableSpec};

/// A landing-file row that never reached Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestReject {
    pub file: String,
    pub line: u64,
    pub raw: String,
    pub reason: String,
}

/// `<catalog>.quarantine.ingest`.
pub fn ingest_table() -> TableSpec {
    TableSpec {
        name: TableName::new("quarantine", "ingest"),
        schema: schema(vec![
            Field::new("file", DataType::Utf8, false),
            Field::new("line", DataType::Int64, false),
            Field::new("raw", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new(
                "quarantined_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]),
        partition_columns: vec![],
    }
}

/// One batch of rejected ingest rows.
pub fn ingest_batch(rows: &[IngestReject]) -> RecordBatch {
    let now = chrono::Utc::now().timestamp_micros();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.file.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.line as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.raw.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.reason.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|_| now))
                .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(ingest_table().schema, columns).expect("columns match the schema")
}
