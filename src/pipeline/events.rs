//! The event log: `<catalog>.system.events`, a Delta table with the columns of DLT's event
//! log where they fit. Each update writes `create_update` when it starts, one
//! `flow_progress` per flow when the flow ends (rows read and written, expectation
//! metrics), and `update_progress` when it ends. Events are committed as they happen, so
//! that an update that dies still leaves what it did.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Fields, TimeUnit};

use crate::catalog::{TableName, Warehouse};
use crate::delta::{schema, DeltaError, DeltaSink, TableSpec};

/// Levels, as in DLT.
pub const INFO: &str = "INFO";
pub const WARN: &str = "WARN";
pub const ERROR: &str = "ERROR";

fn origin_fields() -> Fields {
    Fields::from(vec![
        Field::new("pipeline_id", DataType::Utf8, true),
        Field::new("pipeline_name", DataType::Utf8, true),
        Field::new("update_id", DataType::Utf8, true),
        Field::new("flow_name", DataType::Utf8, true),
        Field::new("dataset_name", DataType::Utf8, true),
    ])
}

/// `<catalog>.system.events`.
pub fn table() -> TableSpec {
    TableSpec {
        name: TableName::new("system", "events"),
        schema: schema(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("sequence", DataType::Int64, false),
            Field::new("origin", DataType::Struct(origin_fields()), false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("level", DataType::Utf8, false),
            Field::new("event_type", DataType::Utf8, false),
            Field::new("message", DataType::Utf8, false),
            Field::new("details", DataType::Utf8, true),
            Field::new("error", DataType::Utf8, true),
        ]),
        partition_columns: vec![],
        target_file_size: None,
    }
}

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    pub flow: Option<String>,
    pub dataset: Option<String>,
    pub level: &'static str,
    pub event_type: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
    pub error: Option<String>,
}

impl Event {
    pub fn new(event_type: &'static str, message: impl Into<String>) -> Self {
        Event {
            flow: None,
            dataset: None,
            level: INFO,
            event_type,
            message: message.into(),
            details: None,
            error: None,
        }
    }
}

/// The event log of one update.
pub struct EventLog {
    sink: DeltaSink,
    pipeline_id: String,
    pipeline_name: String,
    pub update_id: String,
    sequence: i64,
}

impl EventLog {
    /// Opens (or creates) the event log of `warehouse`'s catalog for a new update.
    pub async fn open(
        warehouse: &Warehouse,
        pipeline_id: &str,
        pipeline_name: &str,
        update_id: &str,
    ) -> Result<Self, DeltaError> {
        Ok(EventLog {
            sink: DeltaSink::open(warehouse, table()).await?,
            pipeline_id: pipeline_id.into(),
            pipeline_name: pipeline_name.into(),
            update_id: update_id.into(),
            sequence: 0,
        })
    }

    /// Commits `events`. Secrets are masked in messages and errors.
    pub async fn write(&mut self, events: &[Event]) -> Result<(), DeltaError> {
        if events.is_empty() {
            return Ok(());
        }
        let now: DateTime<Utc> = Utc::now();
        let n = events.len();
        let same = |s: &str| Arc::new(StringArray::from_iter_values(std::iter::repeat_n(s, n)));
        let origin = StructArray::new(
            origin_fields(),
            vec![
                same(&self.pipeline_id) as ArrayRef,
                same(&self.pipeline_name),
                same(&self.update_id),
                Arc::new(StringArray::from_iter(
                    events.iter().map(|e| e.flow.as_deref()),
                )),
                Arc::new(StringArray::from_iter(
                    events.iter().map(|e| e.dataset.as_deref()),
                )),
            ],
            None,
        );
        let first = self.sequence;
        self.sequence += n as i64;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|_| uuid::Uuid::now_v7().to_string()),
            )),
            Arc::new(Int64Array::from_iter_values(first..first + n as i64)),
            Arc::new(origin),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(
                    now.timestamp_micros(),
                    n,
                ))
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.level),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.event_type),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| crate::secrets::mask(&e.message)),
            )),
            Arc::new(StringArray::from_iter(events.iter().map(|e| {
                e.details
                    .as_ref()
                    .map(|d| crate::secrets::mask(&d.to_string()).into_owned())
            }))),
            Arc::new(StringArray::from_iter(
                events
                    .iter()
                    .map(|e| e.error.as_deref().map(crate::secrets::mask)),
            )),
        ];
        let batch = RecordBatch::try_new(table().schema, columns).expect("columns match events");
        self.sink.append(vec![batch], vec![]).await?;
        Ok(())
    }
}

/// The events of `pipeline`'s update `update` (its last one by default), as a table.
pub async fn last_update(
    warehouse: &Warehouse,
    pipeline: &str,
    update: Option<&str>,
) -> Result<String, crate::sql::SqlError> {
    use deltalake::datafusion::functions::core::expr_fn::get_field;
    use deltalake::datafusion::functions_aggregate::expr_fn::max;
    use deltalake::datafusion::prelude::{col, lit, SessionContext};
    let table = crate::sql::open(warehouse, &table().name).await?;
    let ctx = SessionContext::new();
    let provider = table.table_provider().await?;
    let origin = |f: &str| get_field(col("origin"), f);
    let df = ctx
        .read_table(provider)?
        .filter(origin("pipeline_id").eq(lit(pipeline)))?;
    let update = match update {
        Some(u) => u.to_string(),
        None => {
            let found = df
                .clone()
                .aggregate(vec![], vec![max(origin("update_id")).alias("u")])?
                .collect()
                .await?;
            let text = found
                .first()
                .and_then(|b| {
                    deltalake::arrow::util::display::array_value_to_string(b.column(0), 0).ok()
                })
                .unwrap_or_default();
            if text.is_empty() {
                return Ok(format!("pipeline `{pipeline}` has no events yet\n"));
            }
            text
        }
    };
    let rows = df
        .filter(origin("update_id").eq(lit(update.clone())))?
        .sort(vec![col("sequence").sort(true, false)])?
        .select(vec![
            col("timestamp"),
            col("level"),
            col("event_type"),
            origin("flow_name").alias("flow"),
            col("message"),
            col("details"),
            col("error"),
        ])?
        .collect()
        .await?;
    let table = deltalake::arrow::util::pretty::pretty_format_batches(&rows)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok(format!("update {update}\n{table}\n"))
}
