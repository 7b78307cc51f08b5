//! Quarantine tables: where bad input goes instead of disappearing.
//!
//! Each rejected row keeps where it came from, its raw text and the reason, so that a
//! data engineer can fix the source and account for every input row.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;

use crate::catalog::TableName;
use crate::delta::{schema, TableSpec};

/// How much of a rejected row's text a quarantine row keeps; `raw_bytes` records the
/// whole length.
pub const RAW_KEEP_BYTES: usize = 16 * 1024;

/// Cuts a quarantined row's text to [`RAW_KEEP_BYTES`], at a character boundary.
pub fn cut_raw(raw: &mut String) {
    if raw.len() > RAW_KEEP_BYTES {
        let cut = (0..=RAW_KEEP_BYTES)
            .rev()
            .find(|&i| raw.is_char_boundary(i))
            .unwrap_or(0);
        raw.truncate(cut);
    }
}

/// A landing-file row that never reached Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestReject {
    pub file: String,
    pub line: u64,
    /// The row's text, cut to at most [`RAW_KEEP_BYTES`].
    pub raw: String,
    /// The row's length in the file, in bytes.
    pub raw_bytes: u64,
    pub reason: String,
    /// How many data lines this row stands for: 1, or a whole file's count when the
    /// file's header rejects all of them at once.
    pub lines: u64,
}

impl IngestReject {
    /// A reject whose text is cut to [`RAW_KEEP_BYTES`] (at a character boundary).
    pub fn new(
        file: &str,
        line: u64,
        mut raw: String,
        raw_bytes: u64,
        reason: String,
        lines: u64,
    ) -> Self {
        cut_raw(&mut raw);
        IngestReject {
            file: file.to_string(),
            line,
            raw,
            raw_bytes,
            reason,
            lines,
        }
    }

    /// Roughly what the row holds in memory, to bound a batch of them.
    pub fn size(&self) -> usize {
        self.file.len() + self.raw.len() + self.reason.len() + 64
    }
}

/// A quarantine table: where the rows came from, then `reason` and `quarantined_at`, then
/// columns added since the table was first released (nullable, so that a table an
/// earlier version created gains them; see [`crate::delta::DeltaSink::open`]).
fn quarantine_table(table: &str, origin: Vec<Field>, added: Vec<Field>) -> TableSpec {
    let mut fields = origin;
    fields.push(Field::new("reason", DataType::Utf8, false));
    fields.push(Field::new(
        "quarantined_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    fields.extend(added);
    TableSpec {
        name: TableName::new("quarantine", table),
        schema: schema(fields),
        partition_columns: vec![],
        target_file_size: None,
    }
}

/// A batch of `spec`: the `origin` columns, then the reasons and the time now, then the
/// `added` columns.
fn quarantine_batch<'a>(
    spec: TableSpec,
    mut origin: Vec<ArrayRef>,
    reasons: impl Iterator<Item = &'a str>,
    added: Vec<ArrayRef>,
) -> RecordBatch {
    let reasons = StringArray::from_iter_values(reasons);
    let now = chrono::Utc::now().timestamp_micros();
    let at = TimestampMicrosecondArray::from_iter_values((0..reasons.len()).map(|_| now))
        .with_timezone("UTC");
    origin.push(Arc::new(reasons));
    origin.push(Arc::new(at));
    origin.extend(added);
    RecordBatch::try_new(spec.schema, origin).expect("columns match the quarantine table")
}

/// A row a pipeline flow did not write: where it came from, its text, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineReject {
    pub flow: String,
    /// The source: `schema.table`, or `read_files:<path>`.
    pub source: String,
    /// The file and line of a row read from files.
    pub file: Option<String>,
    pub line: Option<u64>,
    /// The source table's version that brought the row.
    pub source_version: Option<i64>,
    /// The row's text (for files), or the row as JSON, cut to [`RAW_KEEP_BYTES`].
    pub raw: String,
    pub raw_bytes: u64,
    pub reason: String,
    /// The expectations it failed, when an expectation dropped it.
    pub expectations: Option<String>,
}

impl PipelineReject {
    /// Cuts `raw` to [`RAW_KEEP_BYTES`] at a character boundary, keeping its length.
    pub fn cut(mut self) -> Self {
        self.raw_bytes = self.raw_bytes.max(self.raw.len() as u64);
        cut_raw(&mut self.raw);
        self
    }
}

/// `<catalog>.quarantine.<table>`: the rows that a pipeline's flows into `table` did not
/// write (a line that does not parse, a row that failed a DROP ROW expectation).
pub fn pipeline_table(name: TableName) -> TableSpec {
    let mut spec = quarantine_table(
        &name.table,
        vec![
            Field::new("flow", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("file", DataType::Utf8, true),
            Field::new("line", DataType::Int64, true),
            Field::new("source_version", DataType::Int64, true),
            Field::new("raw", DataType::Utf8, false),
            Field::new("raw_bytes", DataType::Int64, false),
        ],
        vec![Field::new("expectations", DataType::Utf8, true)],
    );
    spec.name = name;
    spec
}

/// A batch of pipeline rejects for `spec` (a [`pipeline_table`]).
pub fn pipeline_batch(spec: TableSpec, rows: &[PipelineReject]) -> RecordBatch {
    let origin: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.flow.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.source.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.file.as_deref()),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| r.line.map(|l| l as i64)),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.source_version))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.raw.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.raw_bytes as i64),
        )),
    ];
    let added: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter(
        rows.iter().map(|r| r.expectations.as_deref()),
    ))];
    quarantine_batch(spec, origin, rows.iter().map(|r| r.reason.as_str()), added)
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
        vec![Field::new("raw_bytes", DataType::Int64, true)],
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
        vec![Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.raw_bytes as i64),
        ))],
    )
}
