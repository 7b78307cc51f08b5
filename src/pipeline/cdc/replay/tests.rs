//! The rules by example, and a property test: random event streams, split into random
//! batches in random arrival orders and applied the way the flow applies them (replay
//! from the last version start before each key's earliest new event, over a stored
//! history and event store), give exactly what an in-memory model gives by replaying
//! every event in sequence order.

use super::*;
use crate::generate::Rng;

/// Test values: a tracked and an untracked column, either NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    tracked: Option<u8>,
    untracked: Option<u8>,
}

impl Values for Row {
    fn same_tracked(&self, other: &Self) -> bool {
        self.tracked == other.tracked
    }
    fn fill_nulls_from(&self, before: &Self) -> Self {
        Row {
            tracked: self.tracked.or(before.tracked),
            untracked: self.untracked.or(before.untracked),
        }
    }
}

fn up(seq: u32, arrival: u64, tracked: u8, untracked: u8) -> Event<u32, (), Row> {
    Event {
        seq,
        sys: (),
        arrival,
        change: Change::Upsert(Row {
            tracked: Some(tracked),
            untracked: Some(untracked),
        }),
    }
}

fn del(seq: u32, arrival: u64) -> Event<u32, (), Row> {
    Event {
        seq,
        sys: (),
        arrival,
        change: Change::Delete,
    }
}

/// A version as (start, end, tracked, untracked).
type Shape = (u32, Option<u32>, Option<u8>, Option<u8>);

fn shape(r: &Replayed<u32, Row>) -> Vec<Shape> {
    r.versions
        .iter()
        .map(|v| (v.start, v.end, v.values.tracked, v.values.untracked))
        .collect()
}

#[test]
fn a_tracked_change_starts_a_version_and_an_untracked_one_updates_in_place() {
    let r = scd2(
        None,
        vec![up(1, 0, 1, 0), up(3, 1, 1, 5), up(5, 2, 2, 5)],
        false,
    );
    assert_eq!(
        shape(&r),
        vec![(1, Some(5), Some(1), Some(5)), (5, None, Some(2), Some(5))]
    );
}

#[test]
fn out_of_order_events_are_placed_by_sequence() {
    let in_order = scd2(
        None,
        vec![up(1, 0, 1, 0), up(2, 1, 2, 0), up(3, 2, 3, 0)],
        false,
    );
    let late = scd2(
        None,
        vec![up(3, 0, 3, 0), up(1, 1, 1, 0), up(2, 2, 2, 0)],
        false,
    );
    assert_eq!(shape(&in_order), shape(&late));
    assert_eq!(
        shape(&late),
        vec![
            (1, Some(2), Some(1), Some(0)),
            (2, Some(3), Some(2), Some(0)),
            (3, None, Some(3), Some(0))
        ]
    );
}

#[test]
fn a_delete_closes_the_version_and_the_next_event_starts_one_even_when_equal() {
    let r = scd2(
        None,
        vec![up(1, 0, 1, 0), del(4, 1), del(5, 2), up(6, 3, 1, 0)],
        false,
    );
    assert_eq!(
        shape(&r),
        vec![(1, Some(4), Some(1), Some(0)), (6, None, Some(1), Some(0))]
    );
}

#[test]
fn the_later_arrival_replaces_an_event_of_the_same_sequence() {
    let r = scd2(None, vec![up(1, 0, 1, 0), up(1, 1, 2, 0)], false);
    assert_eq!(r.duplicates, 1);
    assert_eq!(shape(&r), vec![(1, None, Some(2), Some(0))]);
}

#[test]
fn a_system_sequence_orders_events_of_one_sequence_and_keeps_both() {
    let e = |sys: u8, arrival: u64, tracked: u8| Event {
        seq: 1u32,
        sys,
        arrival,
        change: Change::Upsert(Row {
            tracked: Some(tracked),
            untracked: None,
        }),
    };
    let r = scd2(None, vec![e(2, 0, 9), e(1, 1, 8)], false);
    assert_eq!(r.duplicates, 0);
    let v: Vec<_> = r
        .versions
        .iter()
        .map(|v| (v.start, v.end, v.values.tracked))
        .collect();
    assert_eq!(v, vec![(1, Some(1), Some(8)), (1, None, Some(9))]);
}

#[test]
fn ignore_null_updates_keeps_the_stored_value() {
    let mut e = up(2, 1, 1, 0);
    e.change = Change::Upsert(Row {
        tracked: None,
        untracked: Some(7),
    });
    let r = scd2(None, vec![up(1, 0, 1, 0), e.clone()], true);
    assert_eq!(shape(&r), vec![(1, None, Some(1), Some(7))]);
    // Without the clause, NULL is a value: a tracked change.
    let r = scd2(None, vec![up(1, 0, 1, 0), e], false);
    assert_eq!(
        shape(&r),
        vec![(1, Some(2), Some(1), Some(0)), (2, None, None, Some(7))]
    );
}

#[test]
fn type_1_keeps_the_highest_sequence_and_remembers_deletes() {
    let (state, ignored) = scd1(
        None,
        None,
        vec![up(5, 0, 1, 0), up(3, 1, 2, 0), del(6, 2), up(4, 3, 3, 0)],
        false,
    );
    assert_eq!(ignored, 2);
    assert_eq!(
        state,
        Some(Applied {
            seq: 6,
            sys: (),
            arrival: 2,
            values: None
        })
    );
    let (state, _) = scd1(state, None, vec![up(7, 4, 4, 0)], false);
    assert_eq!(state.unwrap().values.unwrap().tracked, Some(4));
    // A truncate at 8 makes every earlier event late.
    let (state, ignored) = scd1(None, Some((&8, &())), vec![up(7, 0, 1, 0)], false);
    assert_eq!((state, ignored), (None, 1));
    // What a key held below a truncate is gone: nothing to fill NULLs from.
    let held = Some(Applied {
        seq: 2,
        sys: (),
        arrival: 0,
        values: Some(Row {
            tracked: Some(1),
            untracked: Some(1),
        }),
    });
    let late = Event {
        change: Change::Upsert(Row {
            tracked: Some(2),
            untracked: None,
        }),
        ..up(9, 1, 0, 0)
    };
    let (state, _) = scd1(held, Some((&8, &())), vec![late], true);
    assert_eq!(state.unwrap().values.unwrap().untracked, None);
}

/// What the properties vary.
#[derive(Debug, Clone, Copy)]
struct Setup {
    system_sequence: bool,
    ignore_null_updates: bool,
}

type Ev = Event<u32, u8, Row>;

/// A random event stream: few keys and sequences, so that late events, equal
/// sequences, duplicates, deletes and untracked changes all happen often.
fn events(rng: &mut Rng, setup: Setup) -> Vec<(u8, Ev)> {
    let n = 1 + rng.below(24);
    let null = |rng: &mut Rng, v: u8| (!(setup.ignore_null_updates && rng.chance(25))).then_some(v);
    (0..n)
        .map(|_| {
            let key = rng.below(3) as u8;
            let change = if rng.chance(20) {
                Change::Delete
            } else {
                let tracked = rng.below(3) as u8;
                let untracked = rng.below(4) as u8;
                Change::Upsert(Row {
                    tracked: null(rng, tracked),
                    untracked: null(rng, untracked),
                })
            };
            let event = Event {
                seq: rng.below(8) as u32,
                sys: if setup.system_sequence {
                    rng.below(3) as u8
                } else {
                    0
                },
                arrival: 0,
                change,
            };
            (key, event)
        })
        .collect()
}

/// The model: every event of each key, in sequence order, the last arrival of equal
/// orders only, folded one after another from nothing.
fn model(all: &[(u8, Ev)], ignore_null_updates: bool) -> Vec<(u8, Vec<Version<u32, Row>>)> {
    let mut out = Vec::new();
    for key in 0..3u8 {
        let mut mine: Vec<&Ev> = all
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, e)| e)
            .collect();
        mine.sort_by_key(|e| (e.seq, e.sys, e.arrival));
        let mut kept: Vec<&Ev> = Vec::new();
        for e in mine {
            if let Some(last) = kept.last() {
                if (last.seq, last.sys) == (e.seq, e.sys) {
                    kept.pop();
                }
            }
            kept.push(e);
        }
        let mut versions: Vec<Version<u32, Row>> = Vec::new();
        for e in kept {
            let open = versions
                .last()
                .filter(|v| v.end.is_none())
                .map(|v| v.values);
            match (&e.change, open) {
                (Change::Delete, Some(_)) => versions.last_mut().unwrap().end = Some(e.seq),
                (Change::Delete, None) => {}
                (Change::Upsert(v), Some(before)) => {
                    let v = if ignore_null_updates {
                        v.fill_nulls_from(&before)
                    } else {
                        *v
                    };
                    if v.tracked == before.tracked {
                        versions.last_mut().unwrap().values = v;
                    } else {
                        versions.last_mut().unwrap().end = Some(e.seq);
                        versions.push(Version {
                            start: e.seq,
                            end: None,
                            values: v,
                        });
                    }
                }
                (Change::Upsert(v), None) => versions.push(Version {
                    start: e.seq,
                    end: None,
                    values: *v,
                }),
            }
        }
        out.push((key, versions));
    }
    out
}

/// The flow's way: batches applied one after another to a stored history and a stored
/// event store, each key replayed from where [`resume_from`] says, over the part of its
/// history that [`rebuild`] is given.
fn incremental(
    batches: &[Vec<(u8, Ev)>],
    ignore_null_updates: bool,
) -> Vec<(u8, Vec<Version<u32, Row>>)> {
    let mut history: Vec<(u8, Vec<Version<u32, Row>>)> = (0..3).map(|k| (k, vec![])).collect();
    let mut store: Vec<(u8, Ev)> = Vec::new();
    for batch in batches {
        for (key, versions) in history.iter_mut() {
            let new: Vec<Ev> = batch
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, e)| e.clone())
                .collect();
            let Some(first) = new.iter().map(|e| e.seq).min() else {
                continue;
            };
            let starts: Vec<u32> = versions.iter().map(|v| v.start).collect();
            let mine: Vec<Ev> = store
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, e)| e.clone())
                .collect();
            // Without IGNORE NULL UPDATES, the windows the new events can change; with
            // it, everything from the earliest one's replay point.
            let windows = if ignore_null_updates {
                vec![(resume_from(&starts, &first).copied(), None)]
            } else {
                let mut stored: Vec<u32> = mine.iter().map(|e| e.seq).collect();
                stored.sort_unstable();
                let mut seqs: Vec<u32> = new.iter().map(|e| e.seq).collect();
                seqs.sort_unstable();
                windows(&starts, &stored, &seqs)
            };
            for (from, until) in windows.into_iter().rev() {
                // Events up to `until` included: with a system sequence, events of the
                // sequence that starts the next version can belong to the one before.
                let inside = |s: u32| from.is_none_or(|f| s >= f) && until.is_none_or(|u| s <= u);
                // The scope, as the flow selects it from the table: versions in the
                // window, and the one that ended at `from`.
                let keep = match from {
                    None => 0,
                    Some(from) => versions
                        .iter()
                        .position(|v| v.start >= from || v.end == Some(from))
                        .unwrap_or(versions.len()),
                };
                let stop = until
                    .and_then(|u| versions.iter().position(|v| v.start >= u))
                    .unwrap_or(versions.len());
                let after = versions.split_off(stop);
                let scope = versions.split_off(keep);
                let events: Vec<Ev> = mine
                    .iter()
                    .chain(&new)
                    .filter(|e| inside(e.seq))
                    .cloned()
                    .collect();
                let mut rebuilt = rebuild(&scope, from.as_ref(), events, ignore_null_updates);
                // From `until` on, the stored versions stand.
                if let Some(u) = until {
                    rebuilt.versions.retain(|v| v.start < u);
                    if let Some(last) = rebuilt.versions.last_mut() {
                        last.end.get_or_insert(u);
                    }
                }
                versions.extend(rebuilt.versions);
                versions.extend(after);
            }
        }
        store.extend(batch.iter().cloned());
    }
    history
}

#[test]
fn any_batching_and_arrival_order_gives_the_in_order_history() {
    let setups = [false, true].into_iter().flat_map(|system_sequence| {
        [false, true].map(|ignore_null_updates| Setup {
            system_sequence,
            ignore_null_updates,
        })
    });
    let mut cases = 0;
    for setup in setups {
        for seed in 0..3000u64 {
            let mut rng = Rng(seed);
            let mut all = events(&mut rng, setup);
            rng.shuffle(&mut all);
            for (arrival, (_, e)) in all.iter_mut().enumerate() {
                e.arrival = arrival as u64;
            }
            let mut batches: Vec<Vec<(u8, Ev)>> = vec![vec![]];
            for e in &all {
                if rng.chance(30) {
                    batches.push(vec![]);
                }
                batches.last_mut().unwrap().push(e.clone());
            }
            let expected = model(&all, setup.ignore_null_updates);
            let got = incremental(&batches, setup.ignore_null_updates);
            assert_eq!(
                got, expected,
                "seed {seed}, {setup:?}: batches {batches:#?}"
            );
            cases += 1;
        }
    }
    assert_eq!(cases, 12_000);
}

/// A Type 1 event: a key's event, or a truncate.
#[derive(Debug, Clone)]
enum Step {
    Key(u8, Ev),
    Truncate(u32, u8),
}

/// The Type 1 model: every step in arrival order, one at a time, over one map of the
/// table (a truncate deletes every key applied below it, and makes events below it
/// late). Returns the live rows.
fn model_1(all: &[Step], ignore_null_updates: bool) -> Vec<(u8, Row)> {
    use std::collections::BTreeMap;
    let mut rows: BTreeMap<u8, (u32, u8, Option<Row>)> = BTreeMap::new();
    let mut truncated: Option<(u32, u8)> = None;
    for step in all {
        match step {
            Step::Truncate(seq, sys) => {
                truncated = truncated.max(Some((*seq, *sys)));
                rows.retain(|_, (s, y, _)| (*s, *y) >= (*seq, *sys));
            }
            Step::Key(key, e) => {
                if truncated.is_some_and(|t| (e.seq, e.sys) < t) {
                    continue;
                }
                let held = rows.get(key);
                if held.is_some_and(|(s, y, _)| (e.seq, e.sys) < (*s, *y)) {
                    continue;
                }
                let values = match (&e.change, held.and_then(|h| h.2)) {
                    (Change::Delete, _) => None,
                    (Change::Upsert(v), Some(before)) if ignore_null_updates => {
                        Some(v.fill_nulls_from(&before))
                    }
                    (Change::Upsert(v), _) => Some(*v),
                };
                rows.insert(*key, (e.seq, e.sys, values));
            }
        }
    }
    rows.into_iter()
        .filter_map(|(k, (_, _, v))| v.map(|v| (k, v)))
        .collect()
}

/// The flow's way for Type 1: per batch, the watermark rises to the batch's highest
/// truncate, what the table held below it is swept, and each key of the batch goes
/// through [`scd1`] from its stored state.
fn incremental_1(batches: &[Vec<Step>], ignore_null_updates: bool) -> Vec<(u8, Row)> {
    use std::collections::BTreeMap;
    let mut state: BTreeMap<u8, Applied<u32, u8, Row>> = BTreeMap::new();
    let mut watermark: Option<(u32, u8)> = None;
    for batch in batches {
        for step in batch {
            if let Step::Truncate(seq, sys) = step {
                watermark = watermark.max(Some((*seq, *sys)));
            }
        }
        let w = watermark.as_ref().map(|(s, y)| (s, y));
        // As the flow does: the batch's keys from what they held, the rest swept.
        let mut written = BTreeMap::new();
        for key in 0..3u8 {
            let mine: Vec<Ev> = batch
                .iter()
                .filter_map(|s| match s {
                    Step::Key(k, e) if *k == key => Some(e.clone()),
                    _ => None,
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let held = state.get(&key).map(|a| a.arrival);
            if let Some(a) = scd1(state.get(&key).cloned(), w, mine, ignore_null_updates).0 {
                if Some(a.arrival) != held {
                    written.insert(key, a);
                }
            }
        }
        state.retain(|_, a| !below(&a.seq, &a.sys, w));
        state.extend(written);
    }
    state
        .into_iter()
        .filter_map(|(k, a)| a.values.map(|v| (k, v)))
        .collect()
}

#[test]
fn type_1_any_batching_and_arrival_order_gives_the_models_table() {
    let mut cases = 0;
    for seed in 0..6000u64 {
        let mut rng = Rng(seed);
        let ignore_null_updates = seed % 3 == 0;
        let setup = Setup {
            system_sequence: seed % 2 == 0,
            ignore_null_updates,
        };
        let mut all: Vec<Step> = events(&mut rng, setup)
            .into_iter()
            .map(|(k, e)| {
                if rng.chance(8) {
                    Step::Truncate(e.seq, e.sys)
                } else {
                    Step::Key(k, e)
                }
            })
            .collect();
        rng.shuffle(&mut all);
        for (arrival, step) in all.iter_mut().enumerate() {
            if let Step::Key(_, e) = step {
                e.arrival = arrival as u64;
            }
        }
        let mut batches: Vec<Vec<Step>> = vec![vec![]];
        for s in &all {
            if rng.chance(30) {
                batches.push(vec![]);
            }
            batches.last_mut().unwrap().push(s.clone());
        }
        // A batch's truncates act before its other events: the model sees them first.
        let arrival_order: Vec<Step> = batches
            .iter()
            .flat_map(|b| {
                let (t, k): (Vec<&Step>, Vec<&Step>) =
                    b.iter().partition(|s| matches!(s, Step::Truncate(..)));
                t.into_iter().chain(k).cloned()
            })
            .collect();
        let expected = model_1(&arrival_order, ignore_null_updates);
        let got = incremental_1(&batches, ignore_null_updates);
        assert_eq!(got, expected, "seed {seed}: batches {batches:#?}");
        if !ignore_null_updates {
            // Without fills, the order of arrival does not matter beyond ties. (With
            // them, a value filled from a row that a truncate of the same batch sweeps
            // depends on the batching: README.)
            assert_eq!(got, model_1(&all, false), "seed {seed}: {all:#?}");
        }
        cases += 1;
    }
    assert_eq!(cases, 6000);
}
