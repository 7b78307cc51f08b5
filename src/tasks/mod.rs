//! The task types of a job that are not pipelines yet (ingest, bronze and the SCD2
//! history), and what tasks share while a run lasts.

pub mod bronze;
pub mod close_price;
pub mod ingest;

use std::time::Duration;

use deltalake::DeltaTable;

use crate::bundle::Settings;
use crate::catalog::TableName;
use crate::delta::DeltaError;
use crate::kafka::KafkaEndpoint;
use crate::sql::SqlError;
use crate::stream::StreamError;

/// A table named in a task's settings; the bundle validated every name, so the fallback
/// (the text as a table in the default schema) is never taken.
pub fn table_setting(text: &str) -> TableName {
    crate::bundle::job::table_name(text).unwrap_or_else(|| TableName::new("default", text))
}

/// A SQL condition selecting, for each `Index`, the rows that meet its own condition on
/// `Date`. Reading only the dates a batch can touch, rather than whole indexes, keeps a
/// run's cost with its new data (Delta's file statistics prune the rest).
///
/// Indexes that share a condition share one clause with an `IN` list, and the clauses are
/// joined as a balanced tree of `OR`s: `(("Index" IN ('A', 'B') AND "Date" >= DATE
/// '2024-01-02') OR (...))`. A batch of 20,000 indexes is a handful of clauses, and even
/// 20,000 distinct conditions nest only 15 deep (a flat chain of `OR`s that long
/// overflowed DataFusion's stack).
///
/// `table` qualifies the column names (`target.`), or is empty; each date condition is
/// given the qualified `"Date"` column as text.
pub fn per_index<'a>(
    table: &str,
    conditions: impl IntoIterator<Item = (&'a str, String)>,
) -> String {
    let mut groups: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for (index, date) in conditions {
        groups.entry(date).or_default().push(index);
    }
    let mut clauses: Vec<String> = Vec::new();
    for (date, indexes) in groups {
        let date = date.replace("\"Date\"", &format!("{table}\"Date\""));
        for chunk in indexes.chunks(IN_LIST_MAX) {
            let list: Vec<String> = chunk
                .iter()
                .map(|i| format!("'{}'", i.replace('\'', "''")))
                .collect();
            clauses.push(format!(
                "({table}\"Index\" IN ({}) AND {date})",
                list.join(", ")
            ));
        }
    }
    balanced_or(&clauses)
}

/// Above this many indexes in a batch, tasks select stored rows by date alone and narrow
/// them in memory: DataFusion folds the per-index clauses of [`per_index`] into a single
/// `IN` list, which delta-rs turns into a chain of `OR`s to skip files and walks
/// recursively; a chain of 1,300 overflowed a 2 MB stack in a debug build.
pub const PER_INDEX_MAX: usize = 256;

/// The most values in one `IN` list: delta-rs turns each list into a chain of `OR`s to
/// skip files, and walks that chain recursively (a list of 1,000 overflowed the stack of
/// a debug build).
const IN_LIST_MAX: usize = 64;

/// `clauses` joined by `OR` as a balanced tree; `false` when there are none.
fn balanced_or(clauses: &[String]) -> String {
    match clauses {
        [] => "false".into(),
        [one] => one.clone(),
        _ => {
            let (left, right) = clauses.split_at(clauses.len() / 2);
            format!("({} OR {})", balanced_or(left), balanced_or(right))
        }
    }
}

/// `DATE 'yyyy-mm-dd'` for days since 1970-01-01 (Arrow's `Date32`).
pub fn date_literal(days: i32) -> String {
    let date = chrono::NaiveDate::default() + chrono::Duration::days(days.into());
    format!("DATE '{date}'")
}

/// What every task of a run can see.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub settings: Settings,
    /// The Kafka cluster, when the run has a task that uses it.
    pub kafka: Option<Kafka>,
    /// Rows per Delta commit for streaming writes.
    pub batch_rows: usize,
    /// How long a read may wait for a record it knows exists before failing.
    pub idle_timeout: Duration,
}

/// The Kafka cluster a run talks to, embedded or hosted.
#[derive(Debug, Clone)]
pub struct Kafka {
    pub endpoint: KafkaEndpoint,
    /// The partitions of each topic of the job, as the broker reported them when the run
    /// started (the job creates missing topics first).
    pub partitions: std::collections::BTreeMap<String, Vec<i32>>,
    /// The ingest producer, kept between the runs of a session.
    pub producer: ingest::ProducerSlot,
}

impl Kafka {
    /// The partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Vec<i32> {
        self.partitions.get(topic).cloned().unwrap_or_default()
    }
}

/// Errors of the Silver and Gold tasks, which read and write Delta tables only.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("table {table}: {reason}")]
    Data { table: String, reason: String },
}

impl TaskContext {
    /// The Kafka cluster; the job connects it before any task that uses it runs.
    pub fn kafka(&self) -> &Kafka {
        self.kafka
            .as_ref()
            .expect("the job connects Kafka before it runs a Kafka task")
    }

    /// Opens an input table, or `None` if no upstream task has created it yet.
    pub async fn input(&self, name: &TableName) -> Result<Option<DeltaTable>, SqlError> {
        let warehouse = &self.settings.warehouse;
        if !warehouse.path(name).join("_delta_log").is_dir() {
            return Ok(None);
        }
        crate::sql::open(warehouse, name).await.map(Some)
    }
}

/// Typed access to the columns of a record batch read back from a table.
pub(crate) mod columns {
    use deltalake::arrow::array::{
        Array, AsArray, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array,
        RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use deltalake::arrow::compute::cast;
    use deltalake::arrow::datatypes::DataType;

    use super::TaskError;

    fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, TaskError> {
        b.column_by_name(name)
            .map(|c| c.as_ref())
            .ok_or_else(|| TaskError::Data {
                table: String::new(),
                reason: format!("column `{name}` is missing"),
            })
    }

    fn wrong(name: &str) -> TaskError {
        TaskError::Data {
            table: String::new(),
            reason: format!("column `{name}` has an unexpected type"),
        }
    }

    /// Strings, whatever the string encoding the reader chose (Utf8, LargeUtf8, views).
    pub fn strings(b: &RecordBatch, name: &str) -> Result<StringArray, TaskError> {
        let c = column(b, name)?;
        let c = cast(c, &DataType::Utf8).map_err(|_| wrong(name))?;
        Ok(c.as_string::<i32>().clone())
    }

    /// Strings borrowed from the batch, without a copy. Batches of a
    /// [`SourceStream`](super::SourceStream) hold their strings as Utf8 (see
    /// [`crate::stream`]).
    pub fn strs<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray, TaskError> {
        column(b, name)?
            .as_any()
            .downcast_ref()
            .ok_or_else(|| wrong(name))
    }

    pub fn i32s<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Int32Array, TaskError> {
        column(b, name)?
            .as_any()
            .downcast_ref()
            .ok_or_else(|| wrong(name))
    }

    pub fn i64s<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Int64Array, TaskError> {
        column(b, name)?
            .as_any()
            .downcast_ref()
            .ok_or_else(|| wrong(name))
    }

    pub fn f64s<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Float64Array, TaskError> {
        column(b, name)?
            .as_any()
            .downcast_ref()
            .ok_or_else(|| wrong(name))
    }

    pub fn dates<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Date32Array, TaskError> {
        column(b, name)?
            .as_any()
            .downcast_ref()
            .ok_or_else(|| wrong(name))
    }

    pub fn bools<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a BooleanArray, TaskError> {
        column(b, name)?
            .as_any()
            .downcast_ref()
            .ok_or_else(|| wrong(name))
    }

    pub fn timestamps<'a>(
        b: &'a RecordBatch,
        name: &str,
    ) -> Result<&'a TimestampMicrosecondArray, TaskError> {
        column(b, name)?
            .as_any()
            .downcast_ref()
            .ok_or_else(|| wrong(name))
    }

    /// The value at `i`, or `None` when null.
    pub fn opt<A: Array, T>(a: &A, i: usize, get: impl Fn(&A, usize) -> T) -> Option<T> {
        (!a.is_null(i)).then(|| get(a, i))
    }
}

/// A Delta table read as a stream by one task (see [`crate::stream`]).
pub struct SourceStream {
    pub name: TableName,
    table: DeltaTable,
    qualified: String,
    /// The source's version when the task started: the run reads up to here.
    latest: i64,
    /// Rows to read at most (about: whole commits) before each output commit.
    max_rows: usize,
    /// Parquet bytes read so far.
    pub bytes_read: u64,
}

impl SourceStream {
    /// Opens the source, or notes in `summary` that no upstream task has created it yet.
    pub async fn open(
        ctx: &TaskContext,
        name: TableName,
        summary: &mut crate::progress::TaskSummary,
    ) -> Result<Option<Self>, TaskError> {
        let Some(table) = ctx.input(&name).await? else {
            summary
                .notes
                .push(format!("{name} does not exist yet: nothing to do"));
            return Ok(None);
        };
        Ok(Some(SourceStream {
            qualified: ctx.settings.warehouse.qualified(&name),
            latest: table.version().map_or(-1, |v| v as i64),
            max_rows: ctx.batch_rows,
            bytes_read: 0,
            name,
            table,
        }))
    }

    /// The app id under which `sink` records its progress on this source.
    pub fn app_id(&self, sink: &crate::delta::DeltaSink) -> String {
        crate::stream::app_id(sink.name(), &self.name)
    }

    /// The next range for the `main` output (with `side` outputs written before it in the
    /// same run), and the rows the source appended in it: `(to, rows)`. A backlog comes
    /// in pieces of about `batch_rows` rows, so that memory follows the batch size.
    pub async fn next(
        &mut self,
        main: &crate::delta::DeltaSink,
        side: &[&crate::delta::DeltaSink],
    ) -> Result<Option<(i64, Vec<deltalake::arrow::record_batch::RecordBatch>)>, TaskError> {
        let main_done = main.txn_version(&self.app_id(main)).await?;
        let mut side_done = Vec::new();
        for s in side {
            side_done.push(s.txn_version(&self.app_id(s)).await?);
        }
        let Some((from, to)) = crate::stream::next_range(main_done, &side_done, self.latest) else {
            return Ok(None);
        };
        let appended =
            crate::stream::read_appends(&self.table, &self.qualified, from, to, self.max_rows)
                .await?;
        self.bytes_read += appended.bytes;
        Ok(Some((appended.to, appended.batches)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_index_conditions_quote_names_and_dates() {
        assert_eq!(date_literal(0), "DATE '1970-01-01'");
        assert_eq!(date_literal(19_724), "DATE '2024-01-02'");
        let cond = per_index(
            "",
            [
                ("NYA", format!("\"Date\" >= {}", date_literal(19_724))),
                ("O'Hare", "\"Date\" < DATE '2024-01-01'".to_string()),
            ],
        );
        assert_eq!(
            cond,
            "((\"Index\" IN ('O''Hare') AND \"Date\" < DATE '2024-01-01') OR \
             (\"Index\" IN ('NYA') AND \"Date\" >= DATE '2024-01-02'))"
        );
        assert_eq!(per_index("", Vec::<(&str, String)>::new()), "false");
        assert_eq!(
            per_index(
                "target.",
                [
                    ("NYA", "\"Date\" >= DATE '2024-01-02'".into()),
                    ("IXIC", "\"Date\" >= DATE '2024-01-02'".into())
                ]
            ),
            "(target.\"Index\" IN ('NYA', 'IXIC') AND target.\"Date\" >= DATE '2024-01-02')"
        );
    }

    /// 20,000 indexes, each with its own date: one OR per index would overflow
    /// DataFusion's stack while planning.
    #[tokio::test(flavor = "multi_thread")]
    async fn twenty_thousand_conditions_plan_and_run() {
        use deltalake::arrow::array::{Date32Array, StringArray};
        use deltalake::arrow::datatypes::{DataType, Field, Schema};
        use deltalake::arrow::record_batch::RecordBatch;
        use deltalake::datafusion::prelude::SessionContext;
        let names: Vec<String> = (0..20_000).map(|i| format!("I{i}")).collect();
        let cond = per_index(
            "",
            names.iter().enumerate().map(|(i, n)| {
                (
                    n.as_str(),
                    format!("\"Date\" >= {}", date_literal(i as i32)),
                )
            }),
        );
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("Index", DataType::Utf8, false),
            Field::new("Date", DataType::Date32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                std::sync::Arc::new(StringArray::from(vec!["I5", "I7", "I9"])),
                std::sync::Arc::new(Date32Array::from(vec![5, 6, 100])),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch).unwrap();
        let sql = format!("SELECT \"Index\" FROM t WHERE {cond} ORDER BY 1");
        // Planning recurses over the expression: give it a thread of the default size.
        let rows = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(async move {
                        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                        deltalake::arrow::util::pretty::pretty_format_batches(&batches)
                            .unwrap()
                            .to_string()
                    })
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            rows.contains("I5") && rows.contains("I9") && !rows.contains("I7"),
            "{rows}"
        );
    }
}
