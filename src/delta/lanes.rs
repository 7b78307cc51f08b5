//! New data files written side by side: a partitioned table's rows go to one of a few
//! writers (lanes) by their partition values, each on a thread of its own, so that the
//! Parquet encoding of a rewrite over several partitions uses every core. All the rows
//! of one partition go to the same lane: a partition gets the files one writer would
//! give it. An unpartitioned table has one lane.

use std::future::Future;
use std::pin::Pin;

use deltalake::arrow::array::{BooleanArray, RecordBatch};
use deltalake::arrow::buffer::BooleanBuffer;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::row::{RowConverter, Rows, SortField};
use deltalake::kernel::Add;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTableError;
use tokio::sync::mpsc;

use crate::parallel::{beside, Stopped};

/// Why a lane failed.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    #[error(transparent)]
    Table(#[from] DeltaTableError),
    #[error("cannot route rows to their writer: {0}")]
    Arrow(#[from] ArrowError),
    #[error("a writer of new files stopped: {0}")]
    Stopped(#[from] Stopped),
}

type Finished =
    Pin<Box<dyn Future<Output = Result<Result<Vec<Add>, DeltaTableError>, Stopped>> + Send>>;

/// The writers of one commit's new files.
pub struct Lanes {
    senders: Vec<mpsc::Sender<RecordBatch>>,
    finished: Vec<Finished>,
    /// The batch's columns that are partition columns, and their row format.
    partitions: Vec<usize>,
    converter: Option<RowConverter>,
}

impl Lanes {
    /// One lane per core for a table partitioned by the columns at `partitions` of the
    /// batches it will be given (one lane without), each writing with a writer `make`
    /// gives.
    pub fn new(
        partitions: Vec<usize>,
        partition_types: Vec<deltalake::arrow::datatypes::DataType>,
        make: impl Fn() -> Result<RecordBatchWriter, DeltaTableError>,
    ) -> Result<Self, LaneError> {
        let count = match partitions.is_empty() {
            true => 1,
            false => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let converter = match count > 1 {
            true => Some(RowConverter::new(
                partition_types.into_iter().map(SortField::new).collect(),
            )?),
            false => None,
        };
        let mut senders = Vec::with_capacity(count);
        let mut finished: Vec<Finished> = Vec::with_capacity(count);
        for _ in 0..count {
            let mut writer = make()?;
            // One batch waiting per lane: memory follows the lanes, not the rewrite.
            let (tx, mut rx) = mpsc::channel::<RecordBatch>(1);
            senders.push(tx);
            finished.push(Box::pin(beside(async move {
                while let Some(batch) = rx.recv().await {
                    writer.write(batch).await?;
                }
                writer.flush().await
            })));
        }
        Ok(Lanes {
            senders,
            finished,
            partitions,
            converter,
        })
    }

    /// Gives `batch`'s rows to their lanes.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), LaneError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let Some(converter) = &self.converter else {
            return self.send(0, batch).await;
        };
        let columns: Vec<_> = self
            .partitions
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = converter.convert_columns(&columns)?;
        let lanes = self.senders.len();
        let lane_of = |rows: &Rows, i: usize| lane(rows.row(i).data(), lanes);
        let first = lane_of(&rows, 0);
        // A file's rows (most batches) are of one partition.
        if (1..rows.num_rows()).all(|i| lane_of(&rows, i) == first) {
            return self.send(first, batch).await;
        }
        for l in 0..lanes {
            let mask = BooleanBuffer::collect_bool(rows.num_rows(), |i| lane_of(&rows, i) == l);
            let part = filter_record_batch(&batch, &BooleanArray::new(mask, None))?;
            if part.num_rows() > 0 {
                self.send(l, part).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, lane: usize, batch: RecordBatch) -> Result<(), LaneError> {
        if self.senders[lane].send(batch).await.is_err() {
            // The lane stopped on an error: its result says which.
            let finished = self.finished.remove(lane);
            finished.await??;
            return Err(LaneError::Stopped(Stopped::Panicked));
        }
        Ok(())
    }

    /// Closes every lane: the files they wrote, as `add` actions.
    pub async fn finish(self) -> Result<Vec<Add>, LaneError> {
        drop(self.senders);
        let mut adds = Vec::new();
        for f in self.finished {
            adds.extend(f.await??);
        }
        Ok(adds)
    }
}

/// The lane of a row whose partition values are `bytes` in the row format: the same
/// values always go to the same lane.
fn lane(bytes: &[u8], lanes: usize) -> usize {
    // FNV-1a: stable from run to run, so that a rerun writes the same partitions together.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % lanes as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_row_is_written_once_whatever_the_batches() {
        use crate::catalog::{TableName, Warehouse};
        use crate::delta::{DeltaSink, TableSpec};
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let spec = TableSpec {
            name: TableName::new("silver", "t"),
            schema: schema.clone(),
            partition_columns: vec!["p".into()],
            target_file_size: None,
        };
        let sink = DeltaSink::open(&Warehouse::new(dir.path(), "dev"), spec)
            .await
            .unwrap();
        let table = sink.table().clone();
        let make = || RecordBatchWriter::for_table(&table);
        let mut lanes = Lanes::new(vec![0], vec![DataType::Utf8], make).unwrap();
        let batch = |p: Vec<&str>, v: Vec<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(p)),
                    Arc::new(Int64Array::from(v)),
                ],
            )
            .unwrap()
        };
        lanes.write(batch(vec![], vec![])).await.unwrap();
        lanes
            .write(batch(vec!["a", "b", "c", "a"], vec![1, 2, 3, 4]))
            .await
            .unwrap();
        lanes
            .write(batch(vec!["d"; 3], vec![5, 6, 7]))
            .await
            .unwrap();
        let adds = lanes.finish().await.unwrap();
        let rows: i64 = adds
            .iter()
            .map(|a| {
                let stats: serde_json::Value =
                    serde_json::from_str(a.stats.as_deref().unwrap()).unwrap();
                stats["numRecords"].as_i64().unwrap()
            })
            .sum();
        assert_eq!(rows, 7);
        // One file per partition: a partition's rows all went to one lane.
        let mut partitions: Vec<String> = adds
            .iter()
            .map(|a| a.partition_values["p"].clone().unwrap())
            .collect();
        partitions.sort();
        assert_eq!(partitions, ["a", "b", "c", "d"]);
    }

    #[test]
    fn equal_partition_values_share_a_lane_and_lanes_are_all_used() {
        let mut seen = vec![0; 3];
        for v in 0..300u32 {
            let bytes = v.to_be_bytes();
            let l = lane(&bytes, 3);
            assert_eq!(l, lane(&bytes, 3));
            seen[l] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
