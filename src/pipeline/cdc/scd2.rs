//! A batch of change events applied to a Type 2 history in Delta.
//!
//! For each key of the batch: the version open now (one read of the open versions of
//! the batch's keys, which file statistics keep to the files holding them) says where
//! to replay from: if it starts before the key's earliest new event, from its start;
//! otherwise (late data, a key closed by a delete, a new key) from the last version
//! start before that event, which needs the key's versions. The versions from there
//! on, the one that ended there, and the stored events from there on are read, the
//! key is replayed ([`super::replay::rebuild`]), and what differs is written, after the
//! events went to the event store: the versions read carry their data files, so the
//! files that hold a version that changed are rewritten without it, with the new
//! versions and the source's progress, in one commit ([`DeltaSink::rewrite_files`]; no
//! MERGE has to find them again).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampMicrosecondArray,
};
use deltalake::arrow::buffer::BooleanBuffer;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{Field, Schema};
use deltalake::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::logical_expr::{lit, Expr};
use deltalake::kernel::Transaction;

use super::keys::{self, column, column_of, encode_sys};
use super::pool::{Cells, Ordered, Pool, Seq};
use super::replay::{self, Change, Event, Version};
use super::shape::{Shape, END_AT, START_AT};
use super::store::{self, Changes};
use super::Applied;
use super::CdcError;
use crate::delta::{DeltaError, DeltaSink, Rewrite};

/// In-order keys up to this many are read each from its own replay point (one
/// disjunction per key in the read's predicate); more are read from the lowest.
const KEYS_READ_APART: usize = 16;

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

/// The batch's keys, numbered in their order: a read row finds its key's number by
/// its bytes, without an allocation.
struct KeyIndex<'k> {
    /// The keys by number.
    list: Vec<(&'k OwnedRow, &'k Key)>,
    by_bytes: ahash::HashMap<&'k [u8], u32>,
}

impl<'k> KeyIndex<'k> {
    fn new(keys: &'k HashMap<OwnedRow, Key>) -> Self {
        let mut list: Vec<(&'k OwnedRow, &'k Key)> = keys.iter().collect();
        list.sort_by(|a, b| a.0.cmp(b.0));
        let by_bytes = list
            .iter()
            .enumerate()
            .map(|(n, &(k, _))| (k.as_ref(), n as u32))
            .collect();
        KeyIndex { list, by_bytes }
    }

    /// The number of each row's key, `None` for a row of no key of the batch. Rows come
    /// grouped by key (a file holds few), so a row like the one before costs a compare.
    fn numbers(&self, rows: &Rows) -> Vec<Option<u32>> {
        let mut out = Vec::with_capacity(rows.num_rows());
        let mut last: Option<(&[u8], Option<u32>)> = None;
        for row in rows.iter() {
            let bytes = row.data();
            let n = match last {
                Some((b, n)) if b == bytes => n,
                _ => self.by_bytes.get(bytes).copied(),
            };
            last = Some((bytes, n));
            out.push(n);
        }
        out
    }
}

/// A stored version read for a batch, with its processing time and its file.
struct Stored<'p> {
    version: Version<Seq, Cells<'p>>,
    written_at: Option<i64>,
    /// Its data file, in the batch's [`Files`].
    file: u32,
}

/// The data files of the versions read, each once.
#[derive(Default)]
struct Files {
    ids: Vec<String>,
    index: ahash::HashMap<String, u32>,
    /// The number given last.
    last: Option<u32>,
}

impl Files {
    /// The number of `id`, added if new. Rows come file by file: the file of the row
    /// before is tried first.
    fn intern(&mut self, id: &str) -> u32 {
        if let Some(n) = self.last.filter(|&n| self.ids[n as usize] == id) {
            return n;
        }
        let n = self.number(id);
        self.last = Some(n);
        n
    }

    fn number(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.index.get(id) {
            return n;
        }
        let n = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), n);
        n
    }
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
    before: impl std::future::Future<Output = Result<(), CdcError>> + Send,
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

    // The open versions: where each key replays from, when it is in order. Only their
    // keys and starts are read.
    let open = if keys.is_empty() {
        vec![]
    } else {
        let mut columns = keys::names(shape);
        columns.push(START_AT);
        all_keys
            .read_columns(target, column(END_AT).is_null(), &columns)
            .await?
    };
    for b in &open {
        let rows = key_converter.convert_columns(&keys::of_named(shape, b)?)?;
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
    let first_rows = |ks: &[&Key]| ks.iter().map(|k| k.rows[0]).collect::<Vec<usize>>();
    // In order: each key's versions and events from its own replay point when the keys
    // are few (keys that move at different paces, as the partitions of a topic do,
    // would otherwise read the history of all of them from the slowest one's); from
    // the lowest replay point of all when they are many (each key is narrowed to its
    // own below). Late or new: all of the slow keys'.
    let since = |from: &Seq| -> Result<(Expr, Expr), CdcError> {
        let from = lit(pool_scalar(&pool, from)?);
        Ok((
            column(START_AT)
                .gt_eq(from.clone())
                .or(column(END_AT).gt_eq(from.clone())),
            column(store::SEQUENCE).gt_eq(from),
        ))
    };
    let fast_from: Option<(keys::KeyFilter, Expr, Expr)> = if fast.is_empty() {
        None
    } else if fast.len() <= KEYS_READ_APART {
        let (mut versions, mut events): (Option<Expr>, Option<Expr>) = (None, None);
        for (k, from) in fast.iter().filter_map(|k| Some((k, k.from.as_ref()?))) {
            let key = keys::filter(shape, &changes.values, &[k.rows[0]])?.expr;
            let (v, e) = since(from)?;
            let either = |a: Option<Expr>, b: Expr| Some(a.map_or(b.clone(), |a| a.or(b)));
            versions = either(versions, key.clone().and(v));
            events = either(events, key.and(e));
        }
        Some((
            keys::KeyFilter {
                expr: lit(true),
                keys: None,
            },
            versions.unwrap_or(lit(true)),
            events.unwrap_or(lit(true)),
        ))
    } else {
        match fast.iter().filter_map(|k| k.from.as_ref()).min() {
            Some(lowest) => {
                let (v, e) = since(lowest)?;
                Some((
                    keys::filter(shape, &changes.values, &first_rows(&fast))?,
                    v,
                    e,
                ))
            }
            None => None,
        }
    };
    let slow_keys = (!slow.is_empty())
        .then(|| keys::filter(shape, &changes.values, &first_rows(&slow)))
        .transpose()?;
    let mut version_reads: Vec<(&keys::KeyFilter, Expr)> = Vec::new();
    let mut event_reads: Vec<(&keys::KeyFilter, Expr)> = Vec::new();
    if let Some((keys, versions, events)) = &fast_from {
        version_reads.push((keys, versions.clone()));
        event_reads.push((keys, events.clone()));
    }
    if let Some(keys) = &slow_keys {
        version_reads.push((keys, lit(true)));
        event_reads.push((keys, lit(true)));
    }
    // The two reads run side by side.
    let (target_read, store_read): (&DeltaSink, &DeltaSink) = (target, store);
    let versions = async {
        let mut out: Vec<RecordBatch> = Vec::new();
        for (keys, extra) in version_reads {
            out.extend(keys.read_with_files(target_read, extra).await?);
        }
        Ok::<_, CdcError>(out)
    };
    let events = async {
        let mut out: Vec<RecordBatch> = Vec::new();
        for (keys, extra) in event_reads {
            out.extend(keys.read(store_read, extra).await?);
        }
        Ok::<_, CdcError>(out)
    };
    let (mut version_batches, event_batches) = tokio::try_join!(versions, events)?;
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
    // They are written on another core while this one replays, and the history waits
    // for them.
    let in_store = !crate::stream::needs(store.txn_version(app).await?, version);
    let storing = match !in_store && !changes.is_empty() {
        true => {
            let rows = changes.to_store(shape)?;
            let (mut sink, txns) = (store.clone(), txn());
            Some(crate::parallel::beside(async move {
                let stored = sink.append(vec![rows], txns).await;
                (sink, stored)
            }))
        }
        false => None,
    };

    // Each key's windows ([`replay::windows`]), from the sequences alone; only the rows
    // inside them are pooled and replayed. Each read row's key and sequences are
    // encoded once, here.
    let mut version_seqs = Vec::with_capacity(version_batches.len());
    for b in &version_batches {
        version_seqs.push(VersionSeqs {
            keys: index.numbers(&key_converter.convert_columns(&keys_of(b))?),
            starts: pool.add_sequences(column_of(b, START_AT)?)?,
            ends: pool.sequence_rows(column_of(b, END_AT)?)?,
            open: column_of(b, END_AT)?,
        });
    }
    let mut event_seqs = Vec::with_capacity(event_batches.len());
    for b in &event_batches {
        event_seqs.push(EventSeqs {
            keys: index.numbers(&key_converter.convert_columns(&keys_of(b))?),
            seqs: pool.sequence_rows(column_of(b, store::SEQUENCE)?)?,
        });
    }
    tracing::debug!(elapsed = ?started.elapsed(), "cdc: keys and sequences of the rows read encoded");
    let windows = key_windows(
        shape,
        &index,
        (&new_seqs, new_seqs_at),
        &version_seqs,
        &event_seqs,
    );
    tracing::debug!(elapsed = ?started.elapsed(), "cdc: windows found");
    // The rows read in the windows, batch by batch side by side.
    let windows = &windows;
    let work: Vec<_> = version_batches.iter().zip(&version_seqs).collect();
    let kept_versions = crate::parallel::map(work, 1, |(b, v)| {
        let mut near = vec![0; windows.len()];
        let mask = BooleanBuffer::collect_bool(b.num_rows(), |i| {
            let end = (!v.open.is_null(i)).then(|| Ordered::new(v.ends.row(i).data()));
            let start = Ordered::new(v.starts.1.row(i).data());
            v.keys[i].is_some_and(|k| {
                let k = k as usize;
                Window::holding(&windows[k], start, end, &mut near[k]).is_some()
            })
        });
        filter_record_batch(b, &BooleanArray::new(mask, None))
    })
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    drop(version_seqs);
    // Every version read, with its file: a file read whole is not read again to be
    // rewritten.
    let read_versions = std::mem::replace(&mut version_batches, kept_versions);
    let work: Vec<_> = event_batches.iter().zip(&event_seqs).collect();
    let kept_events = crate::parallel::map(work, 1, |(b, e)| {
        let mut near = vec![0; windows.len()];
        let mask = BooleanBuffer::collect_bool(b.num_rows(), |i| {
            e.keys[i].is_some_and(|k| {
                let (k, seq) = (k as usize, Ordered::new(e.seqs.row(i).data()));
                Window::replaying(&windows[k], seq, &mut near[k]).is_some()
            })
        });
        filter_record_batch(b, &BooleanArray::new(mask, None))
    })
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    drop(event_seqs);
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
        keys: Vec<Option<u32>>,
        starts: (u32, Rows),
        ends: (u32, Rows),
        end_values: ArrayRef,
        written_at: Option<TimestampMicrosecondArray>,
        files: Vec<u32>,
    }
    let mut files = Files::default();
    let mut versions_read = Vec::new();
    for b in &version_batches {
        let ids = crate::delta::files_of(b)
            .ok_or_else(|| CdcError::Missing(crate::delta::FILE_COLUMN.into()))?;
        versions_read.push(Read {
            files: ids
                .iter()
                .map(|id| files.intern(id.unwrap_or_default()))
                .collect(),
            values: pool.add_values(b.project(&(0..stored_count).collect::<Vec<_>>())?)?,
            keys: index.numbers(&key_converter.convert_columns(&keys_of(b))?),
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
        keys: Vec<Option<u32>>,
        seqs: (u32, Rows),
        sys: Option<Rows>,
        changes: Changes,
    }
    let mut events_read = Vec::new();
    for b in &event_batches {
        let c = Changes::from_store(shape, b)?;
        events_read.push(EventsRead {
            values: pool.add_values(c.values.clone())?,
            keys: index.numbers(&key_converter.convert_columns(&keys_of(&c.values))?),
            seqs: pool.add_sequences(c.sequence.clone())?,
            sys: encode_sys(&sys_converter, &c.system_sequence)?,
            changes: c,
        });
    }
    let new_sys = encode_sys(&sys_converter, &changes.system_sequence)?;
    let pool = pool;

    // Each window's stored versions and events, by key number and window.
    type Part<'p> = (Vec<Stored<'p>>, Vec<PoolEvent<'p>>);
    let mut parts: Vec<Vec<Part<'_>>> = windows
        .iter()
        .map(|ws| ws.iter().map(|_| (Vec::new(), Vec::new())).collect())
        .collect();
    let mut near = vec![0; windows.len()];
    for r in &versions_read {
        for (i, k) in r.keys.iter().enumerate() {
            let Some(k) = k.map(|k| k as usize) else {
                continue;
            };
            let start = Pool::seq(&r.starts.1, r.starts.0, i);
            let end = (!r.end_values.is_null(i)).then(|| Pool::seq(&r.ends.1, r.ends.0, i));
            let (s, e) = (start.ordered(), end.as_ref().map(Seq::ordered));
            let held = Window::holding(&windows[k], s, e, &mut near[k]);
            let Some(w) = held else { continue };
            parts[k][w].0.push(Stored {
                version: Version {
                    start,
                    end,
                    values: pool.row((r.values, i as u32)),
                },
                written_at: r.written_at.as_ref().map(|w| w.value(i)),
                file: r.files[i],
            });
        }
    }
    let replayed_from_history = keys.values().filter(|k| k.slow).count();
    // An event goes to the window of its key that replays it, if one does.
    fn place<'p>(
        parts: &mut [Vec<Part<'p>>],
        windows: &[Window],
        near: &mut [usize],
        k: usize,
        e: PoolEvent<'p>,
    ) {
        if let Some(w) = Window::replaying(windows, e.seq.ordered(), &mut near[k]) {
            parts[k][w].1.push(e);
        }
    }
    near.fill(0);
    for r in &events_read {
        for (i, k) in r.keys.iter().enumerate() {
            let Some(k) = k.map(|k| k as usize) else {
                continue;
            };
            place(
                &mut parts,
                &windows[k],
                &mut near,
                k,
                event(
                    pool.row((r.values, i as u32)),
                    Pool::seq(&r.seqs.1, r.seqs.0, i),
                    r.sys.as_ref().map(|s| s.row(i).owned()),
                    r.changes.arrival.value(i),
                    r.changes.delete.value(i),
                ),
            );
        }
    }
    if let Some(values) = new_values {
        for (k, (_, key)) in index.list.iter().enumerate() {
            for &i in &key.rows {
                place(
                    &mut parts,
                    &windows[k],
                    &mut near,
                    k,
                    event(
                        pool.row((values, i as u32)),
                        Pool::seq(&new_seqs, new_seqs_at, i),
                        new_sys.as_ref().map(|s| s.row(i).owned()),
                        changes.arrival.value(i),
                        changes.delete.value(i),
                    ),
                );
            }
        }
    }

    // Replay each window, and compare with what is stored, key by key (in key order, so
    // that the writes of a batch are the same on a rerun).
    // (Replays side by side were slower: they are made of small allocations.)
    let (olds, events): (Vec<Vec<Stored<'_>>>, Vec<Vec<PoolEvent<'_>>>) =
        parts.into_iter().flatten().unzip();
    let pool = &pool;
    let work = windows.iter().flatten().zip(&olds).zip(events);
    let replayed = work.map(|((w, old), events)| {
        let old_versions: Vec<Version<Seq, Cells<'_>>> =
            old.iter().map(|s| s.version.clone()).collect();
        let mut replayed = replay::rebuild(
            &old_versions,
            w.from.as_ref(),
            events,
            shape.ignore_null_updates,
        );
        // From `until` on, the stored versions stand.
        if let Some(until) = &w.until {
            replayed.versions.retain(|v| v.start < *until);
            if let Some(last) = replayed.versions.last_mut() {
                last.end.get_or_insert_with(|| until.clone());
            }
        }
        (replayed.duplicates, compare(pool, old, replayed.versions))
    });
    let mut duplicates = 0;
    let mut changes_by_key: Vec<KeyChanges<'_, '_>> = Vec::new();
    for (d, c) in replayed {
        duplicates += d;
        if !c.deletes.is_empty() || !c.inserts.is_empty() {
            changes_by_key.push(c);
        }
    }

    tracing::debug!(elapsed = ?started.elapsed(), keys = changes_by_key.len(), "cdc: keys replayed");
    let mut applied = Applied {
        duplicates,
        keys_replayed_from_history: replayed_from_history,
        ..Applied::default()
    };
    let deletes: Vec<&Stored<'_>> = changes_by_key
        .iter()
        .flat_map(|c| c.deletes.iter().copied())
        .collect();
    let inserts: Vec<(Version<Seq, Cells<'_>>, Option<i64>)> =
        changes_by_key.into_iter().flat_map(|c| c.inserts).collect();
    let new_rows = stored_rows(shape, pool, inserts.iter().map(|(v, w)| (v, *w)))?;
    applied.inserted = inserts.len();
    if let Some(storing) = storing {
        let (sink, stored) = storing.await.map_err(|e| DeltaError::Query {
            table: store.qualified_name().to_string(),
            reason: format!("the write of the events stopped: {e}"),
        })?;
        stored?;
        *store = sink;
    }
    tracing::debug!(elapsed = ?started.elapsed(), "cdc: events stored");
    crate::fault::point("cdc.after_events");
    before.await?;
    crate::fault::point("cdc.before_merge");
    // Nothing stored to replace (new keys, a first load, or no change at all): an
    // append, with the progress.
    if deletes.is_empty() {
        let rows = (new_rows.num_rows() > 0).then_some(new_rows);
        applied.version = target.append(rows.into_iter().collect(), txn()).await?;
        return Ok(applied);
    }
    // The files that hold the versions to replace are rewritten without them, with the
    // new versions and the progress, in one commit.
    let doomed = stored_rows(
        shape,
        pool,
        deletes.iter().map(|s| (&s.version, s.written_at)),
    )?;
    let touched: HashSet<String> = deletes
        .iter()
        .map(|s| files.ids[s.file as usize].clone())
        .collect();
    let on: Vec<&str> = shape.key_names().chain([START_AT, END_AT]).collect();
    let done = target
        .rewrite_files(
            Rewrite {
                files: &touched,
                on: &on,
                doomed: &doomed,
                inserts: vec![new_rows],
                predicate: format!("({}) replayed", on.join(", ")),
                read: &read_versions,
            },
            txn(),
        )
        .await?;
    tracing::debug!(elapsed = ?started.elapsed(), ?done, "cdc: files rewritten");
    applied.deleted = done.deleted;
    applied.version = done.version;
    Ok(applied)
}

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
    let mut by_span: ahash::HashMap<Span<'s>, Vec<usize>> = Default::default();
    let mut by_start: ahash::HashMap<&OwnedRow, Vec<usize>> = Default::default();
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
    // The rewrite deletes by (key, start, end): a version kept as it is with the start
    // and end of one deleted (two versions of one sequence value) is written again.
    let gone: ahash::HashSet<Span<'s>> = deletes.iter().map(|s| span(&s.version)).collect();
    for (i, s) in old.iter().enumerate() {
        if matched[i] == Some(false) && gone.contains(&span(&s.version)) {
            deletes.push(s);
            inserts.push((s.version.clone(), s.written_at));
        }
    }
    KeyChanges { deletes, inserts }
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

/// `rows` (versions, with when each was first written if it was stored) in the
/// target's columns.
fn stored_rows<'v, 'p: 'v>(
    shape: &Shape,
    pool: &Pool,
    rows: impl Iterator<Item = (&'v Version<Seq, Cells<'p>>, Option<i64>)>,
) -> Result<RecordBatch, CdcError> {
    let (rows, written_at): (Vec<&Version<Seq, Cells<'_>>>, Vec<Option<i64>>) = rows.unzip();
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
        let written = written_at
            .iter()
            .enumerate()
            .map(|(i, w)| w.unwrap_or(now + i as i64));
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
    let fields: Vec<Field> = shape
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
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
    fn contains(&self, start: Ordered<'_>) -> bool {
        self.from.as_ref().is_none_or(|f| start >= f.ordered())
            && self.until.as_ref().is_none_or(|u| start < u.ordered())
    }

    /// Whether it replays the event at `seq`: up to `until` included (with a system
    /// sequence, events of that sequence can belong to the version before).
    fn replays(&self, seq: Ordered<'_>) -> bool {
        self.from.as_ref().is_none_or(|f| seq >= f.ordered())
            && self.until.as_ref().is_none_or(|u| seq <= u.ordered())
    }

    /// Of `windows` (sorted, apart), the last one from at or before `seq`. `near` is
    /// where the lookup before ended, tried first: rows read come mostly in sequence
    /// order, so most lookups cost two comparisons instead of a binary search.
    fn last_from(windows: &[Window], seq: Ordered<'_>, near: &mut usize) -> Option<usize> {
        let at_or_before = |w: &Window| w.from.as_ref().is_none_or(|f| f.ordered() <= seq);
        let n = *near;
        let fits = n <= windows.len()
            && (n == 0 || at_or_before(&windows[n - 1]))
            && (n == windows.len() || !at_or_before(&windows[n]));
        if !fits {
            *near = windows.partition_point(at_or_before);
        }
        near.checked_sub(1)
    }

    /// The window that replaces the stored version `[start, end)`: one it starts in, or
    /// the one it ends at the start of (its starting state).
    fn holding(
        windows: &[Window],
        start: Ordered<'_>,
        end: Option<Ordered<'_>>,
        near: &mut usize,
    ) -> Option<usize> {
        let by_start =
            Window::last_from(windows, start, near).filter(|&i| windows[i].contains(start));
        by_start.or_else(|| {
            let end = end.filter(|e| start < *e)?;
            Window::last_from(windows, end, near)
                .filter(|&i| windows[i].from.as_ref().is_some_and(|f| f.ordered() == end))
        })
    }

    /// The window that replays the event at `seq`.
    fn replaying(windows: &[Window], seq: Ordered<'_>, near: &mut usize) -> Option<usize> {
        Window::last_from(windows, seq, near).filter(|&i| windows[i].replays(seq))
    }
}

/// The keys (by number in the batch's [`KeyIndex`]) and sequences of a read of
/// versions, encoded once.
struct VersionSeqs {
    keys: Vec<Option<u32>>,
    /// In the pool.
    starts: (u32, Rows),
    ends: Rows,
    /// The end values: NULL for an open version.
    open: ArrayRef,
}

/// The keys and sequences of a read of stored events.
struct EventSeqs {
    keys: Vec<Option<u32>>,
    seqs: Rows,
}

/// A sequence value where it was read: ordered like [`Seq`], but borrowed.
#[derive(Clone, Copy)]
struct SeqRef<'a> {
    ord: Ordered<'a>,
    row: Row<'a>,
    at: super::pool::At,
}

impl<'a> SeqRef<'a> {
    fn new(rows: &'a Rows, i: usize, at: super::pool::At) -> Self {
        let row = rows.row(i);
        SeqRef {
            ord: Ordered::new(row.data()),
            row,
            at,
        }
    }

    fn owned(self) -> Seq {
        Seq::new(self.row.owned(), self.at)
    }
}

impl PartialEq for SeqRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.ord == other.ord
    }
}
impl Eq for SeqRef<'_> {}
impl PartialOrd for SeqRef<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SeqRef<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.ord.cmp(&other.ord)
    }
}

/// Each key's windows, by key number: with `IGNORE NULL UPDATES`, one from the last
/// version start before its earliest new event to the end (a filled value carries on
/// past any event); without, [`replay::windows`].
fn key_windows(
    shape: &Shape,
    index: &KeyIndex<'_>,
    (new_seqs, new_at): (&Rows, u32),
    versions: &[VersionSeqs],
    events: &[EventSeqs],
) -> Vec<Vec<Window>> {
    // Sized first: a batch over few keys reads many rows of each.
    let count = |keys: &mut dyn Iterator<Item = &Vec<Option<u32>>>| {
        let mut n = vec![0usize; index.list.len()];
        for k in keys.flatten().flatten() {
            n[*k as usize] += 1;
        }
        n.into_iter().map(Vec::with_capacity).collect::<Vec<_>>()
    };
    let mut starts: Vec<Vec<SeqRef<'_>>> = count(&mut versions.iter().map(|v| &v.keys));
    let mut stored: Vec<Vec<SeqRef<'_>>> = count(&mut events.iter().map(|e| &e.keys));
    for v in versions {
        for (i, k) in v.keys.iter().enumerate() {
            if let Some(k) = k {
                starts[*k as usize].push(SeqRef::new(&v.starts.1, i, (v.starts.0, i as u32)));
            }
        }
    }
    for e in events {
        for (i, k) in e.keys.iter().enumerate() {
            if let Some(k) = k {
                stored[*k as usize].push(SeqRef::new(&e.seqs, i, (0, 0)));
            }
        }
    }
    let work = index.list.iter().zip(starts).zip(stored);
    work.map(|((&(_, key), mut s), mut e)| {
        s.sort_unstable();
        s.dedup();
        let mut new: Vec<SeqRef<'_>> = key
            .rows
            .iter()
            .map(|&i| SeqRef::new(new_seqs, i, (new_at, i as u32)))
            .collect();
        new.sort_unstable();
        let found = if shape.ignore_null_updates {
            vec![(replay::resume_from(s.iter(), &new[0]).copied(), None)]
        } else {
            e.sort_unstable();
            replay::windows(&s, &e, &new)
        };
        found
            .into_iter()
            .map(|(from, until)| Window {
                from: from.map(SeqRef::owned),
                until: until.map(SeqRef::owned),
            })
            .collect()
    })
    .collect()
}
