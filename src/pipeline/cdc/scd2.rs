//! A batch of change events applied to a Type 2 history in Delta.
//!
//! For each key of the batch: the version open now (one read of the open versions of
//! the batch's keys, which file statistics keep to the files holding them) says where
//! to replay from: if it starts before the key's earliest new event, from its start;
//! otherwise (late data, a key closed by a delete, a new key) from the last version
//! start before that event, which needs the key's versions. The versions from there
//! on, the one that ended there, and the stored events from there on are read, the
//! key is replayed ([`super::replay::rebuild`]), and what differs is written: one MERGE
//! that deletes the versions that changed and inserts their replacements, with the
//! source's progress, after the events went to the event store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use deltalake::datafusion::common::{Column, ScalarValue};
use deltalake::datafusion::logical_expr::{binary_expr, lit, Expr, Operator};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;

use super::keys::{self, column, column_of, encode_sys};
use super::pool::{Cells, Pool, Seq};
use super::replay::{self, Change, Event, Version};
use super::shape::{Shape, END_AT, START_AT};
use super::store::{self, Changes};
use super::Applied;
use super::CdcError;
use crate::delta::DeltaSink;

/// The MERGE source's column that says what a row does.
const OP: &str = "__cdc_op";
const DELETE: &str = "delete";
const INSERT: &str = "insert";

/// One key's part of the work.
struct Key {
    /// Rows of the batch's events (in `changes`).
    rows: Vec<usize>,
    /// The earliest new event's sequence.
    first: OwnedRow,
    /// Where to replay from: `None` for the key's whole history, until known.
    from: Option<Seq>,
    /// Whether its versions must be read to know `from`.
    slow: bool,
}

/// The batch's keys by their bytes: a read row finds its key without an allocation.
struct KeyIndex<'k> {
    keys: &'k HashMap<OwnedRow, Key>,
    by_bytes: HashMap<&'k [u8], &'k OwnedRow>,
}

impl<'k> KeyIndex<'k> {
    fn new(keys: &'k HashMap<OwnedRow, Key>) -> Self {
        let by_bytes = keys.keys().map(|k| (k.as_ref(), k)).collect();
        KeyIndex { keys, by_bytes }
    }

    /// The batch's key equal to `row`, if it is one.
    fn get(&self, row: Row<'_>) -> Option<&'k OwnedRow> {
        self.by_bytes.get(row.data()).copied()
    }
}

/// A stored version read for a batch, with its processing time.
struct Stored<'p> {
    version: Version<Seq, Cells<'p>>,
    written_at: Option<i64>,
}

/// Applies `changes` (the events of source version `version`, for `txn`) to the history
/// in `target`, keeping them in `store`.
pub async fn apply(
    shape: &Shape,
    target: &mut DeltaSink,
    store: &mut DeltaSink,
    changes: Changes,
    app: &str,
    version: i64,
) -> Result<Applied, CdcError> {
    let started = std::time::Instant::now();
    let txn = || vec![Transaction::new(app, version)];
    let stored_count = shape.stored.len();
    let keys_of = |b: &RecordBatch| keys::of(shape, b);
    let key_converter = keys::converter(shape)?;
    let sys_converter = match &shape.system_sequence {
        Some(t) => Some(RowConverter::new(vec![SortField::new(t.clone())])?),
        None => None,
    };
    let mut pool = Pool::new(&shape.stored, shape.tracked.clone(), &shape.sequence)?;

    // The batch's keys, and each one's earliest event.
    let new_rows = key_converter.convert_columns(&keys_of(&changes.values))?;
    let (new_seqs_at, new_seqs) = pool.add_sequences(changes.sequence.clone())?;
    let mut keys: HashMap<OwnedRow, Key> = HashMap::new();
    for i in 0..changes.len() {
        let seq = new_seqs.row(i);
        let key = keys.entry(new_rows.row(i).owned()).or_insert_with(|| Key {
            rows: Vec::new(),
            first: seq.owned(),
            from: None,
            slow: true,
        });
        key.rows.push(i);
        if seq < key.first.row() {
            key.first = seq.owned();
        }
    }
    let first_row_of: Vec<usize> = keys.values().map(|k| k.rows[0]).collect();
    let all_keys = keys::filter(shape, &changes.values, &first_row_of)?;

    // The open versions: where each key replays from, when it is in order.
    let open = if keys.is_empty() {
        vec![]
    } else {
        all_keys.read(target, column(END_AT).is_null()).await?
    };
    for b in &open {
        let rows = key_converter.convert_columns(&keys_of(b))?;
        let (at, starts) = pool.add_sequences(column_of(b, START_AT)?)?;
        for i in 0..b.num_rows() {
            if let Some(key) = keys.get_mut(&rows.row(i).owned()) {
                let start = Pool::seq(&starts, at, i);
                if start.row < key.first {
                    key.from = Some(start);
                    key.slow = false;
                }
            }
        }
    }

    tracing::debug!(elapsed = ?started.elapsed(), keys = keys.len(), "cdc: open versions read");
    let index = KeyIndex::new(&keys);
    // The stored versions the batch can change.
    let (fast, slow): (Vec<&Key>, Vec<&Key>) = keys.values().partition(|k| !k.slow);
    let lowest = |ks: &[&Key]| ks.iter().filter_map(|k| k.from.as_ref()).min().cloned();
    let first_rows = |ks: &[&Key]| ks.iter().map(|k| k.rows[0]).collect::<Vec<usize>>();
    // In order: versions and events from the lowest replay point of the fast keys (each
    // key is narrowed to its own below). Late or new: all of the slow keys'.
    let fast_from = match lowest(&fast) {
        Some(from) => Some((
            keys::filter(shape, &changes.values, &first_rows(&fast))?,
            pool_scalar(&pool, &from)?,
        )),
        None => None,
    };
    let slow_keys = (!slow.is_empty())
        .then(|| keys::filter(shape, &changes.values, &first_rows(&slow)))
        .transpose()?;
    let mut version_reads: Vec<(&keys::KeyFilter, Expr)> = Vec::new();
    let mut event_reads: Vec<(&keys::KeyFilter, Expr)> = Vec::new();
    if let Some((keys, from)) = &fast_from {
        version_reads.push((
            keys,
            column(START_AT)
                .gt_eq(lit(from.clone()))
                .or(column(END_AT).gt_eq(lit(from.clone()))),
        ));
        event_reads.push((keys, column(store::SEQUENCE).gt_eq(lit(from.clone()))));
    }
    if let Some(keys) = &slow_keys {
        version_reads.push((keys, lit(true)));
        event_reads.push((keys, lit(true)));
    }
    let mut version_batches = Vec::new();
    for (keys, extra) in version_reads {
        version_batches.extend(keys.read(target, extra).await?);
    }
    let mut event_batches = Vec::new();
    for (keys, extra) in event_reads {
        event_batches.extend(keys.read(store, extra).await?);
    }
    tracing::debug!(
        elapsed = ?started.elapsed(),
        fast = fast.len(),
        slow = slow.len(),
        versions = version_batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        events = event_batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        "cdc: versions and events in scope read"
    );
    // The events go to the store before the history changes, with the progress: a rerun
    // after a crash between the two finds them there, and reads them from there.
    let in_store = !crate::stream::needs(store.txn_version(app).await?, version);
    if !in_store && !changes.is_empty() {
        let rows = changes.to_store(shape)?;
        store.append(vec![rows], txn()).await?;
    }
    tracing::debug!(elapsed = ?started.elapsed(), "cdc: events stored");
    crate::fault::point("cdc.after_events");

    // Each key's windows ([`replay::windows`]), from the sequences alone; only the rows
    // inside them are pooled and replayed.
    let windows = key_windows(
        shape,
        &mut pool,
        &key_converter,
        &index,
        (&new_seqs, new_seqs_at),
        &version_batches,
        &event_batches,
    )?;
    let in_window = |key: Row<'_>, start: Row<'_>, end: Option<Row<'_>>| {
        index
            .get(key)
            .and_then(|k| windows.get(k))
            .is_some_and(|ws| Window::holding(ws, start, end).is_some())
    };
    let mut kept_versions = Vec::new();
    for b in &version_batches {
        let rows = key_converter.convert_columns(&keys_of(b))?;
        let starts = pool.sequence_rows(column_of(b, START_AT)?)?;
        let ends_array = column_of(b, END_AT)?;
        let ends = pool.sequence_rows(ends_array.clone())?;
        let mask = BooleanArray::from_iter((0..b.num_rows()).map(|i| {
            let end = (!ends_array.is_null(i)).then(|| ends.row(i));
            Some(in_window(rows.row(i), starts.row(i), end))
        }));
        kept_versions.push(filter_record_batch(b, &mask)?);
    }
    let version_batches = kept_versions;
    let mut kept_events = Vec::new();
    for b in &event_batches {
        let rows = key_converter.convert_columns(&keys_of(b))?;
        let seqs = pool.sequence_rows(column_of(b, store::SEQUENCE)?)?;
        let mask = BooleanArray::from_iter((0..b.num_rows()).map(|i| {
            Some(
                index
                    .get(rows.row(i))
                    .and_then(|k| windows.get(k))
                    .is_some_and(|ws| Window::replaying(ws, seqs.row(i)).is_some()),
            )
        }));
        kept_events.push(filter_record_batch(b, &mask)?);
    }
    let event_batches = kept_events;
    tracing::debug!(
        elapsed = ?started.elapsed(),
        versions = version_batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        events = event_batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        "cdc: versions and events in the windows"
    );

    // Everything into the pool, then events and versions that point into it.
    let new_values = (!in_store).then(|| pool.add_values(changes.values.clone()));
    let new_values = new_values.transpose()?;
    struct Read {
        values: u32,
        keys: Rows,
        starts: (u32, Rows),
        ends: (u32, Rows),
        end_values: ArrayRef,
        written_at: Option<TimestampMicrosecondArray>,
    }
    let mut versions_read = Vec::new();
    for b in &version_batches {
        versions_read.push(Read {
            values: pool.add_values(b.project(&(0..stored_count).collect::<Vec<_>>())?)?,
            keys: key_converter.convert_columns(&keys_of(b))?,
            starts: pool.add_sequences(column_of(b, START_AT)?)?,
            ends: pool.add_sequences(column_of(b, END_AT)?)?,
            end_values: column_of(b, END_AT)?,
            written_at: shape.written_at.as_ref().and_then(|c| {
                b.column_by_name(c).and_then(|a| {
                    a.as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .cloned()
                })
            }),
        });
    }
    struct EventsRead {
        values: u32,
        keys: Rows,
        seqs: (u32, Rows),
        sys: Option<Rows>,
        changes: Changes,
    }
    let mut events_read = Vec::new();
    for b in &event_batches {
        let c = Changes::from_store(shape, b)?;
        events_read.push(EventsRead {
            values: pool.add_values(c.values.clone())?,
            keys: key_converter.convert_columns(&keys_of(&c.values))?,
            seqs: pool.add_sequences(c.sequence.clone())?,
            sys: encode_sys(&sys_converter, &c.system_sequence)?,
            changes: c,
        });
    }
    let new_sys = encode_sys(&sys_converter, &changes.system_sequence)?;
    let pool = pool;

    // Each key's scope of stored versions and its events.
    let mut scope: HashMap<&OwnedRow, Vec<Stored<'_>>> = HashMap::new();
    for r in &versions_read {
        for i in 0..r.keys.num_rows() {
            let Some(key) = index.get(r.keys.row(i)) else {
                continue;
            };
            let stored = Stored {
                version: Version {
                    start: Pool::seq(&r.starts.1, r.starts.0, i),
                    end: (!r.end_values.is_null(i)).then(|| Pool::seq(&r.ends.1, r.ends.0, i)),
                    values: pool.row((r.values, i as u32)),
                },
                written_at: r.written_at.as_ref().map(|w| w.value(i)),
            };
            scope.entry(key).or_default().push(stored);
        }
    }
    let replayed_from_history = keys.values().filter(|k| k.slow).count();
    let mut events: HashMap<&OwnedRow, Vec<PoolEvent<'_>>> = HashMap::new();
    for r in &events_read {
        for i in 0..r.keys.num_rows() {
            let Some(key) = index.get(r.keys.row(i)) else {
                continue;
            };
            let seq = Pool::seq(&r.seqs.1, r.seqs.0, i);
            let e = event(
                pool.row((r.values, i as u32)),
                seq,
                r.sys.as_ref().map(|s| s.row(i).owned()),
                r.changes.arrival.value(i),
                r.changes.delete.value(i),
            );
            events.entry(key).or_default().push(e);
        }
    }
    if let Some(values) = new_values {
        for (k, key) in &keys {
            for &i in &key.rows {
                let e = event(
                    pool.row((values, i as u32)),
                    Pool::seq(&new_seqs, new_seqs_at, i),
                    new_sys.as_ref().map(|s| s.row(i).owned()),
                    changes.arrival.value(i),
                    changes.delete.value(i),
                );
                events.entry(k).or_default().push(e);
            }
        }
    }

    // Replay each window, and compare with what is stored, key by key (in key order, so
    // that the MERGEs of a batch are the same on a rerun).
    let mut order: Vec<&OwnedRow> = keys.keys().collect();
    order.sort();
    let mut parts: Vec<(&Window, Vec<Stored<'_>>, Vec<PoolEvent<'_>>)> = Vec::new();
    for k in order {
        let ws = windows.get(k).map(Vec::as_slice).unwrap_or_default();
        let mut mine: Vec<(&Window, Vec<Stored<'_>>, Vec<PoolEvent<'_>>)> =
            ws.iter().map(|w| (w, Vec::new(), Vec::new())).collect();
        for s in scope.remove(k).unwrap_or_default() {
            let end = s.version.end.as_ref().map(|e| e.row.row());
            if let Some(i) = Window::holding(ws, s.version.start.row.row(), end) {
                mine[i].1.push(s);
            }
        }
        for e in events.remove(k).unwrap_or_default() {
            if let Some(i) = Window::replaying(ws, e.seq.row.row()) {
                mine[i].2.push(e);
            }
        }
        parts.extend(mine);
    }
    let mut duplicates = 0;
    let mut changes_by_key: Vec<KeyChanges<'_, '_>> = Vec::new();
    for (w, old, events) in &parts {
        let old_versions: Vec<Version<Seq, Cells<'_>>> =
            old.iter().map(|s| s.version.clone()).collect();
        let mut replayed = replay::rebuild(
            &old_versions,
            w.from.as_ref(),
            events.clone(),
            shape.ignore_null_updates,
        );
        // From `until` on, the stored versions stand.
        if let Some(until) = &w.until {
            replayed.versions.retain(|v| v.start < *until);
            if let Some(last) = replayed.versions.last_mut() {
                last.end.get_or_insert_with(|| until.clone());
            }
        }
        duplicates += replayed.duplicates;
        let c = compare(&pool, old, replayed.versions);
        if !c.deletes.is_empty() || !c.inserts.is_empty() {
            changes_by_key.push(c);
        }
    }

    tracing::debug!(elapsed = ?started.elapsed(), keys = changes_by_key.len(), "cdc: keys replayed");
    // One MERGE per group of keys whose rows hold at most PER_MERGE partition values
    // (delta-rs turns a MERGE's partition values into a chain of ORs, and walks it
    // recursively), the progress with the last: a rerun after a crash between them
    // replays every key again and finds the earlier groups' versions already there.
    let partitions: Vec<usize> = target
        .partition_columns()
        .iter()
        .filter_map(|p| shape.stored.iter().position(|f| f.name() == p))
        .collect();
    let groups = groups(&pool, &partitions, changes_by_key);
    let mut applied = Applied {
        duplicates,
        keys_replayed_from_history: replayed_from_history,
        ..Applied::default()
    };
    if groups.is_empty() {
        applied.version = target.append(vec![], txn()).await?;
        return Ok(applied);
    }
    // Nothing stored to replace (new keys, a first load): an append, not a MERGE.
    if groups.iter().flatten().all(|c| c.deletes.is_empty()) {
        let inserts: Vec<(Version<Seq, Cells<'_>>, Option<i64>)> = groups
            .into_iter()
            .flatten()
            .flat_map(|c| c.inserts)
            .collect();
        applied.inserted = inserts.len();
        let source = merge_source(shape, &pool, &[], &inserts)?;
        let rows = source.project(&(0..source.num_columns() - 1).collect::<Vec<_>>())?;
        crate::fault::point("cdc.before_merge");
        applied.version = target.append(vec![rows], txn()).await?;
        return Ok(applied);
    }
    let last = groups.len() - 1;
    for (n, group) in groups.into_iter().enumerate() {
        let deletes: Vec<&Stored<'_>> = group
            .iter()
            .flat_map(|c| c.deletes.iter().copied())
            .collect();
        let inserts: Vec<(Version<Seq, Cells<'_>>, Option<i64>)> =
            group.into_iter().flat_map(|c| c.inserts).collect();
        let source = merge_source(shape, &pool, &deletes, &inserts)?;
        crate::fault::point("cdc.before_merge");
        let df = SessionContext::new().read_batch(source)?;
        let progress = if n == last { txn() } else { vec![] };
        let (v, deleted, inserted) = target
            .replace_rows(df, merge_on(shape), OP, DELETE, progress)
            .await?;
        tracing::debug!(elapsed = ?started.elapsed(), deleted, inserted, "cdc: merged");
        applied.deleted += deleted;
        applied.inserted += inserted;
        applied.version = v;
    }
    Ok(applied)
}

/// Most partition values in one MERGE.
const PER_MERGE: usize = 256;

/// What a batch changes of one key's stored versions.
struct KeyChanges<'s, 'p> {
    /// Stored versions to delete.
    deletes: Vec<&'s Stored<'p>>,
    /// Versions to write, with the time they were first written if they were stored.
    inserts: Vec<(Version<Seq, Cells<'p>>, Option<i64>)>,
}

/// `old` (a key's stored versions in scope) against `new` (what they must be): the
/// versions kept as they are, re-cut ones (same start and values, another end: they
/// keep when they were written), and the rest deleted or inserted.
fn compare<'s, 'p>(
    pool: &Pool,
    old: &'s [Stored<'p>],
    new: Vec<Version<Seq, Cells<'p>>>,
) -> KeyChanges<'s, 'p> {
    type Span<'a> = (&'a OwnedRow, Option<&'a OwnedRow>);
    let span = |v: &'s Version<Seq, Cells<'p>>| -> Span<'s> {
        (&v.start.row, v.end.as_ref().map(|e| &e.row))
    };
    let mut by_span: HashMap<Span<'s>, Vec<usize>> = HashMap::new();
    let mut by_start: HashMap<&OwnedRow, Vec<usize>> = HashMap::new();
    for (i, s) in old.iter().enumerate() {
        by_span.entry(span(&s.version)).or_default().push(i);
        by_start.entry(&s.version.start.row).or_default().push(i);
    }
    // None: not matched; Some(false): unchanged; Some(true): re-cut.
    let mut matched: Vec<Option<bool>> = vec![None; old.len()];
    let mut inserts = Vec::new();
    for v in new {
        let same = |i: &usize| {
            matched[*i].is_none() && pool.same_values(&old[*i].version.values, &v.values)
        };
        let end = v.end.as_ref().map(|e| &e.row);
        if let Some(&i) = by_span
            .get(&(&v.start.row, end))
            .and_then(|c| c.iter().find(|i| same(i)))
        {
            matched[i] = Some(false);
        } else if let Some(&i) = by_start
            .get(&v.start.row)
            .and_then(|c| c.iter().find(|i| same(i)))
        {
            matched[i] = Some(true);
            inserts.push((v, old[i].written_at));
        } else {
            inserts.push((v, None));
        }
    }
    let mut deletes: Vec<&Stored<'p>> = Vec::new();
    for (i, m) in matched.iter().enumerate() {
        if *m != Some(false) {
            deletes.push(&old[i]);
        }
    }
    // The MERGE deletes by (key, start, end): a version kept as it is with the start
    // and end of one deleted (two versions of one sequence value) is written again.
    let gone: HashSet<Span<'s>> = deletes.iter().map(|s| span(&s.version)).collect();
    for (i, s) in old.iter().enumerate() {
        if matched[i] == Some(false) && gone.contains(&span(&s.version)) {
            deletes.push(s);
            inserts.push((s.version.clone(), s.written_at));
        }
    }
    KeyChanges { deletes, inserts }
}

/// The keys' changes in groups whose rows hold at most [`PER_MERGE`] values of the
/// target's partition columns (`partitions`, indexes of stored columns); one group
/// when the target is not partitioned.
fn groups<'s, 'p>(
    pool: &Pool,
    partitions: &[usize],
    changes: Vec<KeyChanges<'s, 'p>>,
) -> Vec<Vec<KeyChanges<'s, 'p>>> {
    let mut out: Vec<Vec<KeyChanges<'s, 'p>>> = Vec::new();
    let mut values: HashSet<Vec<u8>> = HashSet::new();
    for c in changes {
        let mine: HashSet<Vec<u8>> = c
            .deletes
            .iter()
            .map(|s| &s.version.values)
            .chain(c.inserts.iter().map(|(v, _)| &v.values))
            .map(|cells| {
                partitions
                    .iter()
                    .flat_map(|&p| pool.encoded(p, cells.cell(p)).to_vec())
                    .collect()
            })
            .collect();
        let fits = values.union(&mine).count() <= PER_MERGE;
        if out.is_empty() || (!fits && !values.is_empty()) {
            out.push(Vec::new());
            values.clear();
        }
        values.extend(mine);
        out.last_mut().expect("a group").push(c);
    }
    out
}

/// An event of the pool.
fn event(
    values: Cells<'_>,
    seq: Seq,
    sys: Option<OwnedRow>,
    arrival: i64,
    delete: bool,
) -> Event<Seq, Option<OwnedRow>, Cells<'_>> {
    Event {
        seq,
        sys,
        arrival: arrival as u64,
        change: if delete {
            Change::Delete
        } else {
            Change::Upsert(values)
        },
    }
}

/// The sequence value `seq` as a literal.
fn pool_scalar(pool: &Pool, seq: &Seq) -> Result<ScalarValue, CdcError> {
    let array = pool.sequences(&[Some(seq)])?;
    Ok(ScalarValue::try_from_array(&array, 0)?)
}

/// `source.<op> = 'delete' AND target.k = source.k ... AND start and end equal`: the
/// versions to delete. (The MERGE adds the op test.)
fn merge_on(shape: &Shape) -> Expr {
    let side = |s: &str, c: &str| Expr::Column(Column::new(Some(s), c));
    let mut on = side("target", START_AT)
        .eq(side("source", START_AT))
        .and(binary_expr(
            side("target", END_AT),
            Operator::IsNotDistinctFrom,
            side("source", END_AT),
        ));
    for &k in &shape.keys {
        let name = shape.stored[k].name();
        on = side("target", name).eq(side("source", name)).and(on);
    }
    on
}

/// The MERGE's source: the versions to delete, then those to insert, in the target's
/// columns and [`OP`].
fn merge_source(
    shape: &Shape,
    pool: &Pool,
    deletes: &[&Stored<'_>],
    inserts: &[(Version<Seq, Cells<'_>>, Option<i64>)],
) -> Result<RecordBatch, CdcError> {
    let rows: Vec<&Version<Seq, Cells<'_>>> = deletes
        .iter()
        .map(|s| &s.version)
        .chain(inserts.iter().map(|(v, _)| v))
        .collect();
    let cells: Vec<&Cells<'_>> = rows.iter().map(|v| &v.values).collect();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for c in 0..shape.stored.len() {
        columns.push(pool.column(c, &cells)?);
    }
    let starts: Vec<Option<&Seq>> = rows.iter().map(|v| Some(&v.start)).collect();
    let ends: Vec<Option<&Seq>> = rows.iter().map(|v| v.end.as_ref()).collect();
    columns.push(pool.sequences(&starts)?);
    columns.push(pool.sequences(&ends)?);
    let now = chrono::Utc::now().timestamp_micros();
    if shape.current.is_some() {
        columns.push(Arc::new(BooleanArray::from_iter(
            rows.iter().map(|v| Some(v.end.is_none())),
        )));
    }
    if shape.written_at.is_some() {
        let written = deletes.iter().map(|s| s.written_at.unwrap_or(now)).chain(
            inserts
                .iter()
                .enumerate()
                .map(|(i, (_, w))| w.unwrap_or(now + i as i64)),
        );
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter_values(written).with_timezone("UTC"),
        ));
    }
    if shape.closed_at.is_some() {
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|v| v.end.as_ref().map(|_| now)))
                .with_timezone("UTC"),
        ));
    }
    columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(DELETE, deletes.len())
            .chain(std::iter::repeat_n(INSERT, inserts.len())),
    )));
    let mut fields: Vec<Field> = shape
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    fields.push(Field::new(OP, DataType::Utf8, false));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// An event of the pool.
type PoolEvent<'p> = Event<Seq, Option<OwnedRow>, Cells<'p>>;

/// A part of a key's history that a batch replays: `[from, until)`.
struct Window {
    /// `None`: from the first version.
    from: Option<Seq>,
    /// `None`: to the end.
    until: Option<Seq>,
}

impl Window {
    /// Whether it replaces the stored version that starts at `start`.
    fn contains(&self, start: Row<'_>) -> bool {
        self.from.as_ref().is_none_or(|f| start >= f.row.row())
            && self.until.as_ref().is_none_or(|u| start < u.row.row())
    }

    /// Whether it replays the event at `seq`: up to `until` included (with a system
    /// sequence, events of that sequence can belong to the version before).
    fn replays(&self, seq: Row<'_>) -> bool {
        self.from.as_ref().is_none_or(|f| seq >= f.row.row())
            && self.until.as_ref().is_none_or(|u| seq <= u.row.row())
    }

    /// Of `windows` (sorted, apart), the last one from at or before `seq`.
    fn last_from(windows: &[Window], seq: Row<'_>) -> Option<usize> {
        windows
            .partition_point(|w| w.from.as_ref().is_none_or(|f| f.row.row() <= seq))
            .checked_sub(1)
    }

    /// The window that replaces the stored version `[start, end)`: one it starts in, or
    /// the one it ends at the start of (its starting state).
    fn holding(windows: &[Window], start: Row<'_>, end: Option<Row<'_>>) -> Option<usize> {
        let by_start = Window::last_from(windows, start).filter(|&i| windows[i].contains(start));
        by_start.or_else(|| {
            let end = end.filter(|e| start < *e)?;
            Window::last_from(windows, end)
                .filter(|&i| windows[i].from.as_ref().is_some_and(|f| f.row.row() == end))
        })
    }

    /// The window that replays the event at `seq`.
    fn replaying(windows: &[Window], seq: Row<'_>) -> Option<usize> {
        Window::last_from(windows, seq).filter(|&i| windows[i].replays(seq))
    }
}

/// Each key's windows: with `IGNORE NULL UPDATES`, one from the last version start
/// before its earliest new event to the end (a filled value carries on past any
/// event); without, [`replay::windows`].
fn key_windows(
    shape: &Shape,
    pool: &mut Pool,
    key_converter: &RowConverter,
    index: &KeyIndex<'_>,
    (new_seqs, new_at): (&Rows, u32),
    version_batches: &[RecordBatch],
    event_batches: &[RecordBatch],
) -> Result<HashMap<OwnedRow, Vec<Window>>, CdcError> {
    let mut starts: HashMap<&OwnedRow, Vec<Seq>> = HashMap::new();
    let mut stored: HashMap<&OwnedRow, Vec<OwnedRow>> = HashMap::new();
    for b in version_batches {
        let rows = key_converter.convert_columns(&keys::of(shape, b))?;
        let (at, seqs) = pool.add_sequences(column_of(b, START_AT)?)?;
        for i in 0..b.num_rows() {
            if let Some(k) = index.get(rows.row(i)) {
                starts.entry(k).or_default().push(Pool::seq(&seqs, at, i));
            }
        }
    }
    for b in event_batches {
        let rows = key_converter.convert_columns(&keys::of(shape, b))?;
        let seqs = pool.sequence_rows(column_of(b, store::SEQUENCE)?)?;
        for i in 0..b.num_rows() {
            if let Some(k) = index.get(rows.row(i)) {
                stored.entry(k).or_default().push(seqs.row(i).owned());
            }
        }
    }
    let mut out = HashMap::new();
    for (k, key) in index.keys {
        let mut s = starts.remove(k).unwrap_or_default();
        s.sort();
        s.dedup();
        let mut new: Vec<Seq> = key
            .rows
            .iter()
            .map(|&i| Pool::seq(new_seqs, new_at, i))
            .collect();
        new.sort();
        let found = if shape.ignore_null_updates {
            vec![(replay::resume_from(&s, &new[0]).cloned(), None)]
        } else {
            let mut e: Vec<Seq> = stored
                .remove(k)
                .unwrap_or_default()
                .into_iter()
                .map(|row| Seq { row, at: (0, 0) })
                .collect();
            e.sort();
            replay::windows(&s, &e, &new)
        };
        out.insert(
            k.clone(),
            found
                .into_iter()
                .map(|(from, until)| Window { from, until })
                .collect(),
        );
    }
    Ok(out)
}
