//! A Delta table read as a stream, the way Spark's `readStream.table` does.
//!
//! A streaming task keeps, in each table it writes, the source version it has processed,
//! as a `txn` action with app id `<target table>/<source table>`, committed together with
//! the output. A run reads the commits after that version, up to the latest, in pieces of
//! about `batch_rows` rows (whole commits), and takes the files they add. A commit that removes files or changes the schema is not an
//! append, and fails the task, as Spark does unless told to skip change commits.

use std::sync::Arc;

use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Action;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::logstore::{get_actions, ObjectStoreRef};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::{DeltaTable, DeltaTableError, ObjectStoreError, Path};

use crate::catalog::TableName;

/// Errors reading a table as a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("Delta table {table}: {source}")]
    Table {
        table: String,
        source: DeltaTableError,
    },
    #[error("Delta table {table} version {version} {what}, so it is not append-only and cannot be streamed from. Reset the downstream tables (`medallion reset`) to reprocess it from the start")]
    NotAppendOnly {
        table: String,
        version: i64,
        what: &'static str,
    },
    #[error("Delta table {table}: commit {version} is missing from the log (vacuumed or log retention too short); the stream cannot continue from version {from}")]
    MissingCommit {
        table: String,
        version: i64,
        from: i64,
    },
    #[error("Delta table {table}: cannot read data file {path}: {reason}")]
    File {
        table: String,
        path: String,
        reason: String,
    },
    #[error("Delta table {table}: cannot read the store: {source}")]
    Store {
        table: String,
        source: ObjectStoreError,
    },
}

/// The app id of the `txn` under which `target` records how far it has read `source`.
pub fn app_id(target: &TableName, source: &TableName) -> String {
    format!("{target}/{source}")
}

/// The range `(from, to]` of source versions a run processes.
///
/// `main` is the progress committed with the task's main output; `side` that of outputs
/// written before it in the same run (a quarantine table). If a run died after a side
/// output's commit and before the main one, the side output is ahead: the next run redoes
/// exactly that range, so the side output can skip it and the main one catches up.
/// Otherwise the range reaches the latest version.
pub fn next_range(main: Option<i64>, side: &[Option<i64>], latest: i64) -> Option<(i64, i64)> {
    let from = main.unwrap_or(-1);
    let ahead = side.iter().flatten().copied().filter(|&v| v > from).max();
    let to = ahead.unwrap_or(latest);
    (to > from).then_some((from, to))
}

/// Whether an output that committed `committed` still needs the range ending at `to`.
pub fn needs(committed: Option<i64>, to: i64) -> bool {
    committed.is_none_or(|c| c < to)
}

/// The rows a stream read: commits `(from, to]` of the source.
pub struct Appended {
    /// The last source version read.
    pub to: i64,
    pub batches: Vec<RecordBatch>,
    /// Parquet bytes read.
    pub bytes: u64,
}

/// The rows added to `table` by the commits after version `from` (-1: from the start), in
/// commit order, up to and including `to`, or fewer: reading stops after the first commit
/// that brings the rows to `max_rows`, so that a backlog is processed in bounded pieces
/// (each a whole number of commits, which keeps the ranges the same on a rerun).
pub async fn read_appends(
    table: &DeltaTable,
    name: &str,
    from: i64,
    to: i64,
    max_rows: usize,
) -> Result<Appended, StreamError> {
    let log_store = table.log_store();
    let store = log_store.object_store(None);
    let mut appended = Appended {
        to: from,
        batches: Vec::new(),
        bytes: 0,
    };
    let mut rows = 0usize;
    for version in from + 1..=to {
        if rows >= max_rows.max(1) {
            break;
        }
        let bytes = log_store
            .read_commit_entry(version as u64)
            .await
            .map_err(|source| StreamError::Table {
                table: name.into(),
                source,
            })?
            .ok_or_else(|| StreamError::MissingCommit {
                table: name.into(),
                version,
                from,
            })?;
        let actions = get_actions(version as u64, &bytes).map_err(|source| StreamError::Table {
            table: name.into(),
            source,
        })?;
        let mut paths = Vec::new();
        for action in actions {
            match action {
                Action::Add(add) if add.data_change => paths.push(add.path),
                Action::Remove(remove) if remove.data_change => {
                    return Err(StreamError::NotAppendOnly {
                        table: name.into(),
                        version,
                        what: "removes or rewrites data files",
                    })
                }
                Action::Metadata(_) if version > 0 => {
                    return Err(StreamError::NotAppendOnly {
                        table: name.into(),
                        version,
                        what: "changes the table's schema or metadata",
                    })
                }
                _ => {}
            }
        }
        for path in paths {
            let batches = read_file(&store, name, &path, &mut appended.bytes).await?;
            rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
            appended.batches.extend(batches);
        }
        appended.to = version;
    }
    Ok(appended)
}

/// The rows of one data file of the table, adding its size to `bytes`.
async fn read_file(
    store: &ObjectStoreRef,
    name: &str,
    path: &str,
    bytes: &mut u64,
) -> Result<Vec<RecordBatch>, StreamError> {
    let decoded = percent_decode(path);
    let location = Path::from(decoded.as_str());
    let err = |reason: String| StreamError::File {
        table: name.into(),
        path: decoded.clone(),
        reason,
    };
    let data = store
        .get(&location)
        .await
        .map_err(|source| StreamError::Store {
            table: name.into(),
            source,
        })?
        .bytes()
        .await
        .map_err(|source| StreamError::Store {
            table: name.into(),
            source,
        })?;
    *bytes += data.len() as u64;
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| err(e.to_string()))?
        .build()
        .map_err(|e| err(e.to_string()))?;
    reader
        .map(|batch| utf8(batch.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string())))
        .collect()
}

/// The batch with its other string encodings (LargeUtf8, Utf8View, which a file written
/// by another engine may ask for) as Utf8, so that readers can borrow every string column
/// the same way. Utf8 columns are kept as they are.
fn utf8(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let other = |t: &DataType| matches!(t, DataType::LargeUtf8 | DataType::Utf8View);
    if !batch.schema().fields().iter().any(|f| other(f.data_type())) {
        return Ok(batch);
    }
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| match other(f.data_type()) {
            true => f.as_ref().clone().with_data_type(DataType::Utf8),
            false => f.as_ref().clone(),
        })
        .collect();
    let columns = batch
        .columns()
        .iter()
        .zip(&fields)
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Delta log paths are URL-encoded (a partition value `2024-01` stays as is, a space
/// becomes `%20`); the object store wants them decoded.
fn percent_decode(path: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_redoes_what_one_output_is_ahead_on() {
        assert_eq!(next_range(None, &[None], 5), Some((-1, 5)));
        assert_eq!(next_range(Some(5), &[Some(5)], 5), None);
        assert_eq!(next_range(Some(3), &[None], 7), Some((3, 7)));
        assert_eq!(next_range(Some(3), &[Some(1)], 7), Some((3, 7)));
        // The side output committed version 5 before the run died: redo 3..5 only.
        assert_eq!(next_range(Some(3), &[Some(5)], 9), Some((3, 5)));
        assert_eq!(next_range(Some(2), &[], 2), None);
        assert!(needs(None, 0) && needs(Some(3), 5) && !needs(Some(5), 5));
    }

    #[test]
    fn other_string_encodings_become_utf8() {
        use deltalake::arrow::array::{Array, Int32Array, LargeStringArray, StringArray};
        let schema = Schema::new(vec![
            Field::new("s", DataType::LargeUtf8, true),
            Field::new("n", DataType::Int32, false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(LargeStringArray::from(vec![Some("a"), None])),
                Arc::new(Int32Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let out = utf8(batch).unwrap();
        assert_eq!(out.schema().field(0).data_type(), &DataType::Utf8);
        let s = out
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!((s.value(0), s.is_null(1)), ("a", true));
        assert_eq!(out.schema().field(1).data_type(), &DataType::Int32);
    }

    #[test]
    fn log_paths_are_decoded() {
        assert_eq!(
            percent_decode("year_month=2024-01/part%2000.parquet"),
            "year_month=2024-01/part 00.parquet"
        );
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("%e2%82%ac%zz"), "€%zz");
    }
}
