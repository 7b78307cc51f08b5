//! The rules of AUTO CDC for the events of one key, apart from any storage: what a
//! Type 2 history or a Type 1 row becomes when events arrive, in any order.
//!
//! An event has a place in its key's order: its `SEQUENCE BY` value, then its `SYSTEM
//! SEQUENCE BY` value (`()` without the clause), then its arrival. Of events equal in
//! the first two, the last to arrive replaces the others, as if they had never come.
//! Values are opaque here ([`Values`]): the flow compares them on the tracked columns and
//! fills NULLs for `IGNORE NULL UPDATES`.

use std::cmp::Ordering;

/// What an event asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<V> {
    /// An insert or update with the event's values.
    Upsert(V),
    /// `APPLY AS DELETE WHEN` held.
    Delete,
}

/// One change event of a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<S, Y, V> {
    /// `SEQUENCE BY`.
    pub seq: S,
    /// `SYSTEM SEQUENCE BY` (`()` without the clause).
    pub sys: Y,
    /// Arrival: of events equal in `seq` and `sys`, the highest replaces the others.
    pub arrival: u64,
    pub change: Change<V>,
}

/// The values of an event or a version, as the flow sees them.
pub trait Values: Clone {
    /// Whether `self` and `other` agree on the columns whose history is tracked (`TRACK
    /// HISTORY ON`; every stored column but the keys by default).
    fn same_tracked(&self, other: &Self) -> bool;
    /// `self`, with each NULL column taken from `before` (`IGNORE NULL UPDATES`).
    fn fill_nulls_from(&self, before: &Self) -> Self;
}

/// One version of a key in a Type 2 history: `[start, end)`, `end` NULL while current.
#[derive(Debug, Clone, PartialEq)]
pub struct Version<S, V> {
    pub start: S,
    pub end: Option<S>,
    pub values: V,
}

/// Sorts events into their key's order and drops those replaced by a later arrival
/// equal in `seq` and `sys`. Returns how many were dropped.
pub fn in_order<S: Ord, Y: Ord, V>(events: &mut Vec<Event<S, Y, V>>) -> usize {
    events.sort_by(|a, b| (&a.seq, &a.sys, a.arrival).cmp(&(&b.seq, &b.sys, b.arrival)));
    let before = events.len();
    // Keep the last of each run of equal (seq, sys): dedup_by keeps the first, so walk
    // the list backwards.
    events.reverse();
    events.dedup_by(|later, kept| later.seq == kept.seq && later.sys == kept.sys);
    events.reverse();
    before - events.len()
}

/// Where a batch whose earliest event of a key has sequence `first_new` must replay that
/// key from: the last version start strictly below it, or `None` for the key's whole
/// history. Versions that start at or after it are rebuilt; those that start before it
/// keep their start, and only the one open just before it can change (its end, or
/// values updated in place by events at that start).
pub fn resume_from<'a, S: Ord + 'a>(
    starts: impl IntoIterator<Item = &'a S>,
    first_new: &S,
) -> Option<&'a S> {
    starts.into_iter().filter(|s| *s < first_new).max()
}

/// The windows of a key's Type 2 history that new events at `new` can change, without
/// `IGNORE NULL UPDATES`: each `(from, until)` replays from `from` (as [`resume_from`]
/// gives it; `None` from the first version) up to `until`, the first version start after
/// the sequence of the first stored event strictly after the new event (`None`: to the
/// end). After the stored events of a sequence that no new event joins, the key holds
/// the last one's values (or is closed, after a delete) whatever came before, so the
/// versions from the next start on cannot change. A window replays the events up to
/// `until` included (with a system sequence, some of that sequence's events can belong
/// to the version before) and keeps the stored versions from `until` on. Overlapping and
/// touching windows are merged; `starts`, `stored` and `new` are sorted.
pub fn windows<S: Ord + Clone>(
    starts: &[S],
    stored: &[S],
    new: &[S],
) -> Vec<(Option<S>, Option<S>)> {
    let mut out: Vec<(Option<S>, Option<S>)> = Vec::new();
    for t in new {
        // The last start below t; the first stored event above it; the first start
        // above that.
        let below = starts.partition_point(|s| s < t);
        let from = below.checked_sub(1).map(|i| starts[i].clone());
        let next_event = stored.get(stored.partition_point(|e| e <= t));
        let until =
            next_event.and_then(|e| starts.get(starts.partition_point(|s| s <= e)).cloned());
        match out.last_mut() {
            // Sorted by `t`, so by `from`: a window that reaches this one's start (the
            // version ending there is this one's starting state), or runs to the end,
            // takes it in.
            Some((_, last_until))
                if last_until
                    .as_ref()
                    .is_none_or(|u| from.as_ref().is_some_and(|f| f <= u))
                    || from.is_none() =>
            {
                if last_until.is_some() {
                    *last_until = match (last_until.take(), until) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
            }
            _ => out.push((from, until)),
        }
    }
    out
}

/// The result of replaying events over a Type 2 history.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed<S, V> {
    /// The versions, in order: the one open before the replay (if given) first.
    pub versions: Vec<Version<S, V>>,
    /// Events replaced by a later arrival with the same sequence.
    pub duplicates: usize,
}

/// Type 2: replays `events` after `open`, the version open just before the first of
/// them (`None` if no version was open; its end is set again), and returns the
/// versions from `open` on.
///
/// A new version starts when a tracked column differs from the open version; other
/// changes update the open version in place. A delete closes the open version at its
/// sequence and changes nothing when none is open; the next event then starts a new
/// version, even with equal values.
pub fn scd2<S, Y, V>(
    open: Option<Version<S, V>>,
    mut events: Vec<Event<S, Y, V>>,
    ignore_null_updates: bool,
) -> Replayed<S, V>
where
    S: Ord + Clone,
    Y: Ord,
    V: Values,
{
    let duplicates = in_order(&mut events);
    let mut versions: Vec<Version<S, V>> = Vec::new();
    let mut is_open = false;
    if let Some(open) = open {
        versions.push(Version { end: None, ..open });
        is_open = true;
    }
    for e in events {
        match e.change {
            Change::Delete => {
                if is_open {
                    let last = versions.last_mut().expect("an open version");
                    last.end = Some(e.seq);
                    is_open = false;
                }
            }
            Change::Upsert(values) => {
                let values = match versions.last_mut() {
                    Some(last) if is_open => {
                        let values = if ignore_null_updates {
                            values.fill_nulls_from(&last.values)
                        } else {
                            values
                        };
                        if values.same_tracked(&last.values) {
                            last.values = values;
                            continue;
                        }
                        last.end = Some(e.seq.clone());
                        values
                    }
                    _ => values,
                };
                versions.push(Version {
                    start: e.seq,
                    end: None,
                    values,
                });
                is_open = true;
            }
        }
    }
    Replayed {
        versions,
        duplicates,
    }
}

/// A batch's effect on one key's stored Type 2 history. `scope` holds the stored
/// versions from `from` on ([`resume_from`]), and the one that ended at `from` if there
/// is one; `events` every stored and new event of the key from `from` on. Returns the
/// versions that replace `scope`.
pub fn rebuild<S, Y, V>(
    scope: &[Version<S, V>],
    from: Option<&S>,
    events: Vec<Event<S, Y, V>>,
    ignore_null_updates: bool,
) -> Replayed<S, V>
where
    S: Ord + Clone,
    Y: Ord,
    V: Values,
{
    // The version open just before `from`: it ended exactly at `from` (a version that
    // ended earlier was closed by a delete before it, and stays closed).
    let open = from.and_then(|from| {
        scope
            .iter()
            .find(|v| v.start < *from && v.end.as_ref() == Some(from))
    });
    scd2(open.cloned(), events, ignore_null_updates)
}

/// What a Type 1 table holds of a key: the order of the last event applied, and its
/// values, or `None` once deleted (a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<S, Y, V> {
    pub seq: S,
    pub sys: Y,
    pub arrival: u64,
    pub values: Option<V>,
}

/// Type 1: applies `events`, in arrival order, to what the key holds. An event applies
/// when its order is not below the last one applied (equal: the later arrival
/// replaces), and not below `truncated` (the highest `APPLY AS TRUNCATE WHEN` so far,
/// those of the batch included: a batch's truncates act before its other events);
/// otherwise it is ignored. What the key held below `truncated` is gone. Returns the
/// new state and how many events were ignored.
pub fn scd1<S, Y, V>(
    current: Option<Applied<S, Y, V>>,
    truncated: Option<(&S, &Y)>,
    events: impl IntoIterator<Item = Event<S, Y, V>>,
    ignore_null_updates: bool,
) -> (Option<Applied<S, Y, V>>, usize)
where
    S: Ord,
    Y: Ord,
    V: Values,
{
    let mut current = current.filter(|c| !below(&c.seq, &c.sys, truncated));
    let mut ignored = 0;
    for e in events {
        let late = current
            .as_ref()
            .is_some_and(|c| (&e.seq, &e.sys).cmp(&(&c.seq, &c.sys)) == Ordering::Less)
            || below(&e.seq, &e.sys, truncated);
        if late {
            ignored += 1;
            continue;
        }
        let values = match e.change {
            Change::Delete => None,
            Change::Upsert(values) => {
                Some(match current.as_ref().and_then(|c| c.values.as_ref()) {
                    Some(before) if ignore_null_updates => values.fill_nulls_from(before),
                    _ => values,
                })
            }
        };
        current = Some(Applied {
            seq: e.seq,
            sys: e.sys,
            arrival: e.arrival,
            values,
        });
    }
    (current, ignored)
}

/// Whether `(seq, sys)` is below the truncate `truncated`.
pub fn below<S: Ord, Y: Ord>(seq: &S, sys: &Y, truncated: Option<(&S, &Y)>) -> bool {
    truncated.is_some_and(|t| (seq, sys).cmp(&t) == Ordering::Less)
}

#[cfg(test)]
mod tests;
