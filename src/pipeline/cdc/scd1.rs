//! A batch of change events applied to a Type 1 table in Delta.
//!
//! The event store of a Type 1 flow holds, per key, the event last applied: its values,
//! its order, and whether it deleted the key (a tombstone); and one row whose keys are
//! NULL, the highest truncate. The target holds the live rows only.
//!
//! A batch reads the store's rows of its keys, applies its events with
//! [`replay::scd1`], and writes the rows that changed to the store, with the source's
//! progress, then to the target: a live row replaces its key's row, a tombstone deletes
//! it. A rerun after a crash between the two finds the progress in the store and writes
//! the target from the store's rows of the batch's keys.
//!
//! A batch with a truncate (`APPLY AS TRUNCATE WHEN`) above the stored one first sweeps
//! what was applied below it: the target is rewritten from the store's live rows above
//! it, then the store keeps only its rows above it and the new truncate. A rerun after a
//! crash between the two sweeps again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::{concat_batches, filter_record_batch, interleave};
use deltalake::arrow::datatypes::{DataType, SchemaRef};
use deltalake::arrow::row::{OwnedRow, RowConverter, SortField};
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::logical_expr::{lit, Expr};
use deltalake::kernel::Transaction;

use super::keys::{self, column};
use super::pool::{Cells, Pool, Seq};
use super::replay::{self, Change, Event};
use super::shape::Shape;
use super::store::{self, Changes};
use super::{Applied, CdcError};
use crate::delta::{DeltaSink, Rewrite};

/// The `SYSTEM SEQUENCE BY` values of a batch, ordered by their row format and
/// gathered from where they are.
struct Systems {
    converter: RowConverter,
    arrays: Vec<ArrayRef>,
}

impl Systems {
    fn new(t: &DataType) -> Result<Self, CdcError> {
        Ok(Systems {
            converter: RowConverter::new(vec![SortField::new(t.clone())])?,
            arrays: Vec::new(),
        })
    }

    /// Adds values; returns each one's place.
    fn add(&mut self, values: &ArrayRef) -> Result<Vec<Seq>, CdcError> {
        let rows = self
            .converter
            .convert_columns(std::slice::from_ref(values))?;
        self.arrays.push(values.clone());
        let index = self.arrays.len() as u32 - 1;
        Ok((0..values.len())
            .map(|i| Pool::seq(&rows, index, i))
            .collect())
    }

    fn gather(&self, at: &[&Seq]) -> Result<ArrayRef, CdcError> {
        let arrays: Vec<&dyn Array> = self.arrays.iter().map(|a| a.as_ref()).collect();
        let indices: Vec<(usize, usize)> = at
            .iter()
            .map(|s| (s.at.0 as usize, s.at.1 as usize))
            .collect();
        Ok(interleave(&arrays, &indices)?)
    }
}

/// A key's state: the order of its last event, and its values unless it was deleted.
type State<'p> = replay::Applied<Seq, Option<Seq>, Cells<'p>>;

/// Applies `changes` (the events of source version `version`, for `txn`) to the table
/// `target`, keeping each key's last event in `store`.
pub async fn apply(
    shape: &Shape,
    target: &mut DeltaSink,
    store: &mut DeltaSink,
    changes: Changes,
    app: &str,
    version: i64,
    before: impl std::future::Future<Output = Result<(), CdcError>> + Send,
) -> Result<Applied, CdcError> {
    let txn = || vec![Transaction::new(app, version)];
    // Awaited before the first write to the target.
    let mut before = Some(before);
    let key_converter = keys::converter(shape)?;
    let first_key = column(shape.stored[shape.keys[0]].name());

    // Each key's events in arrival order, the truncates apart.
    let new_keys = key_converter.convert_columns(&keys::of(shape, &changes.values))?;
    let mut rows_of: BTreeMap<OwnedRow, Vec<usize>> = BTreeMap::new();
    let mut truncates = Vec::new();
    for i in 0..changes.len() {
        if changes.truncate.value(i) {
            truncates.push(i);
        } else {
            rows_of.entry(new_keys.row(i).owned()).or_default().push(i);
        }
    }
    let first_rows: Vec<usize> = rows_of.values().map(|r| r[0]).collect();
    let batch_keys = match first_rows.is_empty() {
        true => None,
        false => Some(keys::filter(shape, &changes.values, &first_rows)?),
    };

    let mut applied = Applied::default();
    let in_store = !crate::stream::needs(store.txn_version(app).await?, version);
    let written = if in_store {
        // A rerun: the store has the batch; the target is written from it.
        match &batch_keys {
            Some(f) => f.read(store, first_key.clone().is_not_null()).await?,
            None => vec![],
        }
    } else {
        let mut pool = Pool::new(&shape.stored, vec![], &shape.sequence)?;
        let mut systems = match &shape.system_sequence {
            Some(t) => Some(Systems::new(t)?),
            None => None,
        };
        let mut sys_of = |a: Option<&ArrayRef>, n: usize| -> Result<Vec<Option<Seq>>, CdcError> {
            Ok(match (systems.as_mut(), a) {
                (Some(s), Some(a)) => s.add(a)?.into_iter().map(Some).collect(),
                _ => vec![None; n],
            })
        };

        // The truncate: the stored one, raised by the batch's.
        let stored_truncate = store.scan(first_key.clone().is_null()).await?;
        let mut truncated: Option<(Seq, Option<Seq>)> = None;
        for b in stored_truncate.iter().filter(|b| b.num_rows() > 0) {
            let c = Changes::from_store(shape, b)?;
            let (at, seqs) = pool.add_sequences(c.sequence.clone())?;
            let sys = sys_of(c.system_sequence.as_ref(), c.len())?;
            for (i, sys) in sys.into_iter().enumerate() {
                truncated = truncated.max(Some((Pool::seq(&seqs, at, i), sys)));
            }
        }
        let stored_truncated = truncated.clone();
        let (new_at, new_seqs) = pool.add_sequences(changes.sequence.clone())?;
        let new_sys = sys_of(changes.system_sequence.as_ref(), changes.len())?;
        for &i in &truncates {
            truncated = truncated.max(Some((Pool::seq(&new_seqs, new_at, i), new_sys[i].clone())));
        }

        // What the batch's keys hold.
        let stored = match &batch_keys {
            Some(f) => f.read(store, first_key.clone().is_not_null()).await?,
            None => vec![],
        };
        let mut current: BTreeMap<OwnedRow, State<'_>> = BTreeMap::new();
        let mut read = Vec::new();
        for b in &stored {
            let c = Changes::from_store(shape, b)?;
            let values = pool.add_values(c.values.clone())?;
            let seqs = pool.add_sequences(c.sequence.clone())?;
            let sys = sys_of(c.system_sequence.as_ref(), c.len())?;
            let keys = key_converter.convert_columns(&keys::of(shape, &c.values))?;
            read.push((values, seqs, sys, keys, c));
        }
        let new_values = pool.add_values(changes.values.clone())?;
        let pool = pool;
        for (values, (at, seqs), sys, keys, c) in &read {
            for (i, sys) in sys.iter().enumerate() {
                let key = keys.row(i).owned();
                if !rows_of.contains_key(&key) {
                    continue;
                }
                current.insert(
                    key,
                    State {
                        seq: Pool::seq(seqs, *at, i),
                        sys: sys.clone(),
                        arrival: c.arrival.value(i) as u64,
                        values: (!c.delete.value(i)).then(|| pool.row((*values, i as u32))),
                    },
                );
            }
        }

        // Each key's events over what it holds.
        let watermark = truncated.as_ref().map(|(s, y)| (s, y));
        let mut states: Vec<(usize, State<'_>)> = Vec::new();
        for (key, rows) in &rows_of {
            let before = current.remove(key);
            let held = before.as_ref().map(|b| b.arrival);
            let events = rows.iter().map(|&i| Event {
                seq: Pool::seq(&new_seqs, new_at, i),
                sys: new_sys[i].clone(),
                arrival: changes.arrival.value(i) as u64,
                change: match changes.delete.value(i) {
                    true => Change::Delete,
                    false => Change::Upsert(pool.row((new_values, i as u32))),
                },
            });
            let (after, ignored) =
                replay::scd1(before, watermark, events, shape.ignore_null_updates);
            applied.ignored += ignored;
            if let Some(after) = after.filter(|a| Some(a.arrival) != held) {
                states.push((rows[0], after));
            }
        }
        let schema = store::schema(shape);
        let mut rows = state_rows(shape, &pool, systems.as_ref(), new_values, &states, &schema)?;

        // A higher truncate sweeps both tables first; the store's write adds it.
        if truncated != stored_truncated {
            if let Some(b) = before.take() {
                b.await?;
            }
            let (seq, sys) = truncated.as_ref().expect("a truncate");
            let systems = systems.as_ref();
            let below = below(shape, &pool, systems, seq, sys.as_ref())?;
            let live = first_key
                .clone()
                .is_not_null()
                .and(column(store::DELETE).is_false())
                .and(below.clone().is_not_true());
            let frame = store.frame().await?.filter(live)?;
            target.overwrite_query(frame, vec![]).await?;
            crate::fault::point("cdc.after_truncate");
            let kept = first_key.clone().is_not_null().and(below.is_not_true());
            let frame = store.frame().await?.filter(kept)?;
            store.overwrite_query(frame, vec![]).await?;
            let mark = truncate_row(shape, &pool, systems, seq, sys.as_ref(), &schema)?;
            rows = concat_batches(&schema, [&rows, &mark])?;
        }

        // The store, with the progress.
        replace(store, shape, &rows, rows.num_columns(), None, txn()).await?;
        vec![rows]
    };
    crate::fault::point("cdc.after_events");

    // The target: each written key's row replaced by its live row, or deleted.
    let mut wanted: HashSet<OwnedRow> = HashSet::new();
    wanted.extend(rows_of.keys().cloned());
    let stored_count = shape.stored.len();
    let mut parts = Vec::new();
    for b in written.iter().filter(|b| b.num_rows() > 0) {
        let keys = key_converter.convert_columns(&keys::of(shape, b))?;
        let mine = BooleanArray::from_iter(
            (0..b.num_rows()).map(|i| Some(wanted.contains(&keys.row(i).owned()))),
        );
        parts.push(filter_record_batch(b, &mine)?);
    }
    let written = match parts.first() {
        Some(p) => concat_batches(&p.schema(), &parts)?,
        None => RecordBatch::new_empty(store::schema(shape)),
    };
    let deleted = written
        .column_by_name(store::DELETE)
        .and_then(|d| d.as_any().downcast_ref::<BooleanArray>().cloned())
        .ok_or_else(|| CdcError::Missing(store::DELETE.into()))?;
    if let Some(b) = before.take() {
        b.await?;
    }
    crate::fault::point("cdc.before_merge");
    let (v, d, i) = replace(target, shape, &written, stored_count, Some(&deleted), txn()).await?;
    applied.deleted += d;
    applied.inserted += i;
    applied.version = v;
    Ok(applied)
}

/// Deletes the tombstones written more than the flow's threshold ago (and keeps the
/// truncate). Returns how many.
pub async fn collect_tombstones(shape: &Shape, store: &mut DeltaSink) -> Result<usize, CdcError> {
    let kept_for =
        chrono::Duration::from_std(shape.tombstones_kept_for).unwrap_or(chrono::Duration::MAX);
    let before = chrono::Utc::now().checked_sub_signed(kept_for);
    let Some(before) = before else { return Ok(0) };
    let old =
        ScalarValue::TimestampMicrosecond(Some(before.timestamp_micros()), Some("UTC".into()));
    let first_key = column(shape.stored[shape.keys[0]].name());
    let predicate = column(store::DELETE)
        .and(column(store::CHANGED_AT).lt(lit(old)))
        .and(first_key.is_not_null());
    Ok(store.delete_where(predicate).await?)
}

/// `(SEQUENCE, SYSTEM SEQUENCE)` below `(seq, sys)`, over the store's columns. A NULL
/// system sequence is below every other, as in the row format.
fn below(
    shape: &Shape,
    pool: &Pool,
    systems: Option<&Systems>,
    seq: &Seq,
    sys: Option<&Seq>,
) -> Result<Expr, CdcError> {
    let at = pool.sequences(&[Some(seq)])?;
    let s = lit(ScalarValue::try_from_array(&at, 0)?);
    let sequence = column(store::SEQUENCE);
    let mut below = sequence.clone().lt(s.clone());
    if let (Some(systems), Some(sys), Some(_)) = (systems, sys, &shape.system_sequence) {
        let y = systems.gather(&[sys])?;
        if !y.is_null(0) {
            let y = lit(ScalarValue::try_from_array(&y, 0)?);
            let system = column(store::SYSTEM_SEQUENCE);
            below = below.or(sequence
                .eq(s)
                .and(system.clone().is_null().or(system.lt(y))));
        }
    }
    Ok(below)
}

/// The store's rows of `states` (each with the batch row of one of its key's events,
/// whose key cells a tombstone takes).
fn state_rows(
    shape: &Shape,
    pool: &Pool,
    systems: Option<&Systems>,
    new_values: u32,
    states: &[(usize, State<'_>)],
    schema: &SchemaRef,
) -> Result<RecordBatch, CdcError> {
    let key_cells: Vec<Cells<'_>> = states
        .iter()
        .map(|(row, s)| {
            s.values
                .clone()
                .unwrap_or_else(|| pool.row((new_values, *row as u32)))
        })
        .collect();
    let cells: Vec<&Cells<'_>> = key_cells.iter().collect();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for c in 0..shape.stored.len() {
        columns.push(pool.column(c, &cells)?);
    }
    let seqs: Vec<Option<&Seq>> = states.iter().map(|(_, s)| Some(&s.seq)).collect();
    columns.push(pool.sequences(&seqs)?);
    if let Some(systems) = systems {
        let sys: Vec<&Seq> = states
            .iter()
            .map(|(_, s)| s.sys.as_ref().expect("a system sequence"))
            .collect();
        columns.push(systems.gather(&sys)?);
    }
    columns.push(Arc::new(Int64Array::from_iter_values(
        states.iter().map(|(_, s)| s.arrival as i64),
    )));
    columns.push(Arc::new(BooleanArray::from_iter(
        states.iter().map(|(_, s)| Some(s.values.is_none())),
    )));
    let now = chrono::Utc::now().timestamp_micros();
    columns.push(Arc::new(
        TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(now, states.len()))
            .with_timezone("UTC"),
    ));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The store's row of the truncate `(seq, sys)`: NULL keys and values.
fn truncate_row(
    shape: &Shape,
    pool: &Pool,
    systems: Option<&Systems>,
    seq: &Seq,
    sys: Option<&Seq>,
    schema: &SchemaRef,
) -> Result<RecordBatch, CdcError> {
    let mut columns: Vec<ArrayRef> = shape
        .stored
        .iter()
        .map(|f| deltalake::arrow::array::new_null_array(f.data_type(), 1))
        .collect();
    columns.push(pool.sequences(&[Some(seq)])?);
    if let Some(systems) = systems {
        columns.push(match sys {
            Some(s) => systems.gather(&[s])?,
            None => deltalake::arrow::array::new_null_array(
                shape.system_sequence.as_ref().expect("a system sequence"),
                1,
            ),
        });
    }
    columns.push(Arc::new(Int64Array::from(vec![0])));
    columns.push(Arc::new(BooleanArray::from(vec![true])));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![chrono::Utc::now().timestamp_micros()])
            .with_timezone("UTC"),
    ));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Replaces the rows of `rows`' keys in `table` (`rows`' first `width` columns are the
/// table's) by those of `rows` that `deleted` does not mark (all without it), with
/// `txns`, in one commit: the stored rows of those keys are read with their files, and
/// those files are rewritten without them. A row whose keys are NULL (the truncate's)
/// replaces nothing. Returns the new version and the rows deleted and inserted.
async fn replace(
    table: &mut DeltaSink,
    shape: &Shape,
    rows: &RecordBatch,
    width: usize,
    deleted: Option<&BooleanArray>,
    txns: Vec<Transaction>,
) -> Result<(i64, usize, usize), CdcError> {
    let values = rows.project(&(0..width).collect::<Vec<_>>())?;
    let live = match deleted {
        None => values.clone(),
        Some(d) => filter_record_batch(&values, &deltalake::arrow::compute::not(d)?)?,
    };
    let key_converter = keys::converter(shape)?;
    let new_keys = key_converter.convert_columns(&keys::of(shape, &values))?;
    let keyed: Vec<usize> = (0..values.num_rows())
        .filter(|&i| shape.keys.iter().all(|&k| !values.column(k).is_null(i)))
        .collect();
    let wanted: HashSet<&[u8]> = keyed.iter().map(|&i| new_keys.row(i).data()).collect();
    // The stored rows of those keys (the read can hold more: narrowed to them).
    let mut read = Vec::new();
    if !keyed.is_empty() {
        let filter = keys::filter(shape, &values, &keyed)?;
        for b in filter.read_with_files(table, lit(true)).await? {
            let stored = key_converter.convert_columns(&keys::of(shape, &b))?;
            let mine = BooleanArray::from_iter(
                (0..b.num_rows()).map(|i| Some(wanted.contains(stored.row(i).data()))),
            );
            read.push(filter_record_batch(&b, &mine)?);
        }
    }
    let files: HashSet<String> = read
        .iter()
        .filter_map(crate::delta::files_of)
        .flat_map(|f| f.iter().flatten().map(str::to_string))
        .collect();
    if files.is_empty() {
        let inserted = live.num_rows();
        let rows = (inserted > 0).then_some(live);
        let v = table.append(rows.into_iter().collect(), txns).await?;
        return Ok((v, 0, inserted));
    }
    // The rows read, without their last column, the file.
    let doomed = concat_batches(&read[0].schema(), &read)?;
    let doomed = doomed.project(&(0..doomed.num_columns() - 1).collect::<Vec<_>>())?;
    let on: Vec<&str> = shape.key_names().collect();
    let done = table
        .rewrite_files(
            Rewrite {
                files: &files,
                on: &on,
                doomed: &doomed,
                inserts: vec![live],
                predicate: format!("({}) applied", on.join(", ")),
                read: &read,
            },
            txns,
        )
        .await?;
    Ok((done.version, done.deleted, done.inserted))
}
