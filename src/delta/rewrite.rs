//! Copy-on-write without a MERGE: a caller that has already read the rows it replaces
//! (with [`DeltaSink::scan_with_files`], which names each row's file) rewrites just the
//! files that hold them, in one commit with its progress.
//!
//! A MERGE has to find those rows itself: it joins its source with the target, scans
//! every file the join can touch and streams them through its own plan. Here the
//! files are known, so they are read whole, the doomed rows are dropped by a hash set
//! of their identifying columns, and what is left goes back with the new rows through
//! delta-rs's Parquet writer; the commit removes the old files and adds the new ones.

use std::collections::{HashMap, HashSet};

use deltalake::arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use deltalake::arrow::buffer::BooleanBuffer;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, LogicalFileView, Transaction};
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::writer::RecordBatchWriter;
use deltalake::DeltaTableError;
use futures::StreamExt;

use super::lanes::{LaneError, Lanes};
use super::{files_of, writer_properties, DeltaError, DeltaSink, FILE_COLUMN};

/// What a rewrite did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// The table's version after it.
    pub version: i64,
    /// Rows dropped from the files.
    pub deleted: usize,
    /// New rows written.
    pub inserted: usize,
    /// Rows of the files written back as they were.
    pub copied: usize,
    pub files_removed: usize,
    pub files_added: usize,
}

/// About how many bytes of Parquet one read of the files takes: the files are read and
/// written back in groups of this size, so that memory follows it, not the table.
const GROUP_BYTES: i64 = 64 << 20;

/// A rewrite of some of a table's files: see [`DeltaSink::rewrite_files`].
pub struct Rewrite<'a> {
    /// The files (values of [`super::FILE_COLUMN`]) to rewrite.
    pub files: &'a HashSet<String>,
    /// The columns that identify a row to drop.
    pub on: &'a [&'a str],
    /// The rows to drop, in the table's columns: every row of `files` whose `on`
    /// columns equal (NULL equal to NULL) those of one of them. There must be exactly
    /// as many such rows as `doomed` has.
    pub doomed: &'a RecordBatch,
    /// The rows to add, in the table's columns.
    pub inserts: Vec<RecordBatch>,
    /// Rows the caller read with [`DeltaSink::scan_with_files`], if any: a file all of
    /// whose rows are among them (as many as its statistics count) is taken from them
    /// instead of being read again.
    pub read: &'a [RecordBatch],
    /// What the commit's `operationParameters` say the rows were matched by.
    pub predicate: String,
}

impl DeltaSink {
    /// Replaces rows without a MERGE: removes `rewrite.files`, writes their rows back
    /// except the doomed ones, adds the inserts, all with the `txns` progress in one
    /// commit (a MERGE in the table's history, with its `operationMetrics`). Nothing is
    /// committed, and the error says so, if the files do not hold exactly the doomed
    /// rows: they were read from another version of the table.
    pub async fn rewrite_files(
        &mut self,
        rewrite: Rewrite<'_>,
        txns: Vec<Transaction>,
    ) -> Result<Rewritten, DeltaError> {
        let table = self.qualified.clone();
        let wrap = |source: DeltaTableError| DeltaError::Table {
            table: table.clone(),
            source,
        };
        let fail = |reason: String| DeltaError::Query {
            table: table.clone(),
            reason,
        };
        let views = self.file_views(rewrite.files)?;
        let schema = self.spec.schema.clone();
        let on = rewrite
            .on
            .iter()
            .map(|c| schema.index_of(c))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        let converter = RowConverter::new(
            on.iter()
                .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                .collect(),
        )
        .map_err(|e| fail(e.to_string()))?;
        let encode = |b: &RecordBatch| {
            let columns: Vec<_> = on.iter().map(|&i| b.column(i).clone()).collect();
            converter
                .convert_columns(&columns)
                .map_err(|e| fail(e.to_string()))
        };
        let doomed = self.conform(rewrite.doomed)?;
        let doomed_rows = encode(&doomed)?;
        let doomed_set: ahash::HashSet<&[u8]> = doomed_rows.iter().map(|r| r.data()).collect();

        let target_size = self
            .snapshot()?
            .metadata()
            .configuration()
            .get("delta.targetFileSize")
            .and_then(|v| v.parse::<u64>().ok());
        let make = || {
            let writer = RecordBatchWriter::for_table(&self.table)?
                .with_writer_properties(writer_properties(&schema));
            Ok(match target_size {
                Some(size) => writer.with_target_file_size(size),
                None => writer,
            })
        };
        let partitions = self
            .partition_columns()
            .iter()
            .map(|c| schema.index_of(c))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        let types = partitions
            .iter()
            .map(|&i| schema.field(i).data_type().clone())
            .collect();
        let lane = |e: LaneError| match e {
            LaneError::Table(source) => wrap(source),
            other => fail(other.to_string()),
        };
        let mut writer = Lanes::new(partitions, types, make).map_err(lane)?;
        let mut done = Rewritten {
            files_removed: views.len(),
            ..Rewritten::default()
        };
        // Each file's rows without the doomed ones go back.
        let mut keep = async |batch: RecordBatch, done: &mut Rewritten| {
            let rows = encode(&batch)?;
            let keep = BooleanArray::new(
                BooleanBuffer::collect_bool(rows.num_rows(), |i| {
                    !doomed_set.contains(rows.row(i).data())
                }),
                None,
            );
            let kept = filter_record_batch(&batch, &keep).map_err(|e| fail(e.to_string()))?;
            done.deleted += batch.num_rows() - kept.num_rows();
            done.copied += kept.num_rows();
            writer.write(kept).await.map_err(lane)?;
            Ok::<(), DeltaError>(())
        };
        let (whole, unread) = whole_files(&views, rewrite.read, &fail)?;
        for batch in whole {
            keep(batch, &mut done).await?;
        }
        for group in groups(&unread) {
            let paths: Vec<String> = group.iter().map(|(id, _)| id.to_string()).collect();
            let provider = self.table.table_provider().with_file_paths(paths);
            let frame = crate::sql::provider_frame(&self.table, provider)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let mut stream = frame
                .execute_stream()
                .await
                .map_err(|e| fail(e.to_string()))?;
            while let Some(batch) = stream.next().await {
                let batch = self.conform(&batch.map_err(|e| fail(e.to_string()))?)?;
                keep(batch, &mut done).await?;
            }
        }
        if done.deleted != doomed.num_rows() {
            return Err(fail(format!(
                "a rewrite found {} of the {} rows it replaces in the files that were read \
                 to hold them; nothing was committed. Run again: the table changed \
                 between the read and the write",
                done.deleted,
                doomed.num_rows()
            )));
        }
        for batch in &rewrite.inserts {
            let batch = self.conform(batch)?;
            done.inserted += batch.num_rows();
            writer.write(batch).await.map_err(lane)?;
        }
        let adds = writer.finish().await.map_err(lane)?;
        done.files_added = adds.len();
        // The new files are written but not committed: a rerun ignores them.
        crate::fault::point("delta.rewrite.before_commit");
        let mut actions: Vec<Action> = views
            .iter()
            .map(|(_, v)| Action::Remove(v.remove_action(true)))
            .collect();
        actions.extend(adds.into_iter().map(Action::Add));
        let metrics = serde_json::json!({
            "numTargetRowsDeleted": done.deleted,
            "numTargetRowsInserted": done.inserted,
            "numTargetRowsCopied": done.copied,
            "numTargetFilesRemoved": done.files_removed,
            "numTargetFilesAdded": done.files_added,
            "numOutputRows": done.inserted + done.copied,
        });
        let mut info = self.commit_info.clone();
        info.push(("operationMetrics".into(), metrics));
        let operation = DeltaOperation::Merge {
            predicate: None,
            merge_predicate: Some(rewrite.predicate),
            matched_predicates: vec![MergePredicate {
                action_type: "delete".into(),
                predicate: None,
            }],
            not_matched_predicates: vec![MergePredicate {
                action_type: "insert".into(),
                predicate: None,
            }],
            not_matched_by_source_predicates: vec![],
        };
        let before = self.version();
        let properties = CommitProperties::default()
            .with_application_transactions(txns.clone())
            .with_metadata(info);
        let finalized = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(self.snapshot()?), self.table.log_store(), operation)
            .await
            .map_err(wrap)?;
        let version = finalized.version();
        self.table
            .update_incremental(Some(version))
            .await
            .map_err(wrap)?;
        self.committed(before, &txns);
        done.version = version as i64;
        tracing::debug!(table = %self.qualified, ?done, "rewrote files");
        Ok(done)
    }

    /// The table's data files named by `ids` (values of [`super::FILE_COLUMN`], which
    /// are URLs), each with its id.
    fn file_views(
        &self,
        ids: &HashSet<String>,
    ) -> Result<Vec<(String, LogicalFileView)>, DeltaError> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        // By file name, then the whole path.
        let mut wanted: HashMap<String, Vec<(&String, String)>> = HashMap::new();
        for id in ids {
            let path = decode(id);
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            wanted.entry(name).or_default().push((id, path));
        }
        let mut found = Vec::new();
        for view in self.snapshot()?.log_data() {
            let path = view.path().into_owned();
            let name = path.rsplit('/').next().unwrap_or_default();
            let Some(candidates) = wanted.get(name) else {
                continue;
            };
            for (id, decoded) in candidates {
                let rest = decoded.strip_suffix(path.as_str());
                if rest.is_some_and(|r| r.ends_with('/')) {
                    found.push(((*id).clone(), view.clone()));
                }
            }
        }
        if found.len() != ids.len() {
            return Err(DeltaError::Query {
                table: self.qualified.clone(),
                reason: format!(
                    "{} of the {} files to rewrite are not in the table at version {}; \
                     nothing was committed. Run again: the table changed between the \
                     read and the write",
                    ids.len() - found.len().min(ids.len()),
                    ids.len(),
                    self.version()
                ),
            });
        }
        Ok(found)
    }
}

/// Of `views`, the rows of those that `read` holds whole (in the table's columns), and
/// the others.
#[allow(clippy::type_complexity)]
fn whole_files(
    views: &[(String, LogicalFileView)],
    read: &[RecordBatch],
    fail: &dyn Fn(String) -> DeltaError,
) -> Result<(Vec<RecordBatch>, Vec<(String, LogicalFileView)>), DeltaError> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let columns: Vec<Option<&StringArray>> = read.iter().map(files_of).collect();
    // Rows come file by file: each run of one file is counted once.
    for files in columns.iter().flatten() {
        let mut run: Option<(&str, usize)> = None;
        for f in files.iter().flatten() {
            match &mut run {
                Some((last, n)) if *last == f => *n += 1,
                _ => {
                    if let Some((last, n)) = run.replace((f, 1)) {
                        *counts.entry(last).or_default() += n;
                    }
                }
            }
        }
        if let Some((last, n)) = run {
            *counts.entry(last).or_default() += n;
        }
    }
    let (whole, unread): (Vec<_>, Vec<_>) = views.iter().cloned().partition(|(id, v)| {
        v.num_records()
            .is_some_and(|n| n > 0 && counts.get(id.as_str()) == Some(&n))
    });
    if whole.is_empty() {
        return Ok((Vec::new(), unread));
    }
    let wanted: ahash::HashSet<&str> = whole.iter().map(|(id, _)| id.as_str()).collect();
    let mut rows = Vec::new();
    for (b, files) in read.iter().zip(&columns) {
        let Some(files) = files else { continue };
        // Rows come file by file: the answer for the row before is tried first.
        let mut last: Option<(&str, bool)> = None;
        let mask = BooleanBuffer::collect_bool(files.len(), |i| {
            let f = files.is_valid(i).then(|| files.value(i));
            let Some(f) = f else { return false };
            match last {
                Some((l, w)) if l == f => w,
                _ => {
                    let w = wanted.contains(f);
                    last = Some((f, w));
                    w
                }
            }
        });
        let mask = BooleanArray::new(mask, None);
        let mine = filter_record_batch(b, &mask).map_err(|e| fail(e.to_string()))?;
        if mine.num_rows() > 0 {
            let table_columns: Vec<usize> = (0..mine.num_columns())
                .filter(|&i| mine.schema().field(i).name() != FILE_COLUMN)
                .collect();
            rows.push(
                mine.project(&table_columns)
                    .map_err(|e| fail(e.to_string()))?,
            );
        }
    }
    Ok((rows, unread))
}

/// The files in groups of about [`GROUP_BYTES`] of Parquet.
fn groups(views: &[(String, LogicalFileView)]) -> Vec<&[(String, LogicalFileView)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, (_, v)) in views.iter().enumerate() {
        if i > start && bytes + v.size() > GROUP_BYTES {
            out.push(&views[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += v.size();
    }
    if start < views.len() {
        out.push(&views[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::datafusion::logical_expr::{col, lit};

    use super::*;
    use crate::catalog::{TableName, Warehouse};
    use crate::delta::TableSpec;

    /// A table `(part, id, value)`, partitioned by `part` or not.
    async fn table(dir: &std::path::Path, partitioned: bool) -> DeltaSink {
        let spec = TableSpec {
            name: TableName::new("main", "t"),
            schema: Arc::new(Schema::new(vec![
                Field::new("part", DataType::Utf8, false),
                Field::new("id", DataType::Int64, false),
                Field::new("value", DataType::Utf8, true),
            ])),
            partition_columns: match partitioned {
                true => vec!["part".into()],
                false => vec![],
            },
            target_file_size: None,
        };
        DeltaSink::open(&Warehouse::new(dir, "dev"), spec)
            .await
            .unwrap()
    }

    fn rows(t: &DeltaSink, rows: &[(&str, i64, Option<&str>)]) -> RecordBatch {
        RecordBatch::try_new(
            t.spec.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    async fn contents(t: &DeltaSink) -> Vec<String> {
        let mut out = Vec::new();
        for b in t.scan(lit(true)).await.unwrap() {
            let text = |c: usize, i: usize| {
                deltalake::arrow::util::display::array_value_to_string(b.column(c), i).unwrap()
            };
            for i in 0..b.num_rows() {
                out.push(format!("{}|{}|{}", text(0, i), text(1, i), text(2, i)));
            }
        }
        out.sort();
        out
    }

    fn paths(t: &DeltaSink) -> HashSet<String> {
        t.snapshot()
            .unwrap()
            .log_data()
            .into_iter()
            .map(|f| f.path().into_owned())
            .collect()
    }

    /// The rows read with `filter`, in the table's columns, and their files.
    async fn read(t: &DeltaSink, id: i64) -> (RecordBatch, HashSet<String>) {
        let batches = t
            .scan_with_files(col("id").eq(lit(id)), None)
            .await
            .unwrap();
        let b = &batches[0];
        let files = crate::delta::files_of(b)
            .unwrap()
            .iter()
            .map(|f| f.unwrap().to_string())
            .collect();
        (b.project(&[0, 1, 2]).unwrap(), files)
    }

    #[tokio::test]
    async fn a_rewrite_replaces_rows_in_the_files_that_hold_them_only() {
        for (partitioned, reuse) in [(false, false), (true, false), (false, true), (true, true)] {
            let dir = tempfile::tempdir().unwrap();
            let mut t = table(dir.path(), partitioned).await;
            t.append(
                vec![rows(&t, &[("a", 1, Some("x")), ("a", 2, None)])],
                vec![],
            )
            .await
            .unwrap();
            t.append(vec![rows(&t, &[("b", 3, Some("y"))])], vec![])
                .await
                .unwrap();
            let before = paths(&t);
            let (doomed, files) = read(&t, 2).await;
            assert_eq!(files.len(), 1);
            let inserts = vec![rows(&t, &[("a", 2, Some("z"))])];
            // With every row of a's file read before, the rewrite takes them from there.
            let whole = match reuse {
                true => t
                    .scan_with_files(col("part").eq(lit("a")), None)
                    .await
                    .unwrap(),
                false => vec![],
            };
            let done = t
                .rewrite_files(
                    Rewrite {
                        files: &files,
                        // A NULL equals a NULL.
                        on: &["id", "value"],
                        doomed: &doomed,
                        inserts,
                        predicate: "(id, value)".into(),
                        read: &whole,
                    },
                    vec![Transaction::new("app", 7)],
                )
                .await
                .unwrap();
            assert_eq!(
                (done.deleted, done.inserted, done.copied, done.files_removed),
                (1, 1, 1, 1),
                "partitioned: {partitioned}, reuse: {reuse}"
            );
            assert_eq!(contents(&t).await, ["a|1|x", "a|2|z", "b|3|y"]);
            assert_eq!(t.txn_version("app").await.unwrap(), Some(7));
            // b's file stands; a's is gone.
            let after = paths(&t);
            assert_eq!(
                before.intersection(&after).count(),
                1,
                "{before:?} {after:?}"
            );
            let info = t.last_commit_info("operationMetrics", 1).await.unwrap();
            assert_eq!(info.unwrap()["numTargetRowsDeleted"], 1);
        }
    }

    #[tokio::test]
    async fn a_rewrite_whose_files_lack_a_row_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = table(dir.path(), false).await;
        t.append(vec![rows(&t, &[("a", 1, Some("x"))])], vec![])
            .await
            .unwrap();
        let (_, files) = read(&t, 1).await;
        let version = t.version();
        let doomed = rows(&t, &[("a", 1, Some("x")), ("a", 9, None)]);
        let err = t
            .rewrite_files(
                Rewrite {
                    files: &files,
                    on: &["id", "value"],
                    doomed: &doomed,
                    inserts: vec![],
                    predicate: "(id, value)".into(),
                    read: &[],
                },
                vec![],
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("found 1 of the 2 rows"), "{err}");
        assert_eq!(t.version(), version);
        assert_eq!(contents(&t).await, ["a|1|x"]);
    }
}
