//! What an AUTO CDC flow's clauses mean against its source's columns: the keys, the
//! stored and tracked columns, the sequence's type, and the target's schema. Built at
//! dry-run, where each problem is reported at its place in the SQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::datafusion::sql::sqlparser::ast::Spanned;

use super::columns;
use crate::pipeline::parse::{AutoCdcDef, ColumnList, Loc};
use crate::pipeline::plan::PlanError;

/// `__START_AT` of a Type 2 version: the sequence of its first event.
pub const START_AT: &str = "__START_AT";
/// `__END_AT`: the sequence of the next version's first event, or of the delete that
/// closed it; NULL for the current version.
pub const END_AT: &str = "__END_AT";

/// Table properties of medallion's processing-time columns of a Type 2 target (an
/// extension: DLT has none of them). Each names a column to add.
pub mod properties {
    /// A BOOLEAN, true on each key's open version (`__END_AT IS NULL`).
    pub const CURRENT: &str = "medallion.scd.current";
    /// A TIMESTAMP: when the version was first written.
    pub const WRITTEN_AT: &str = "medallion.scd.writtenAt";
    /// A TIMESTAMP: when the version was closed (NULL while open); set again when late
    /// data re-cuts it.
    pub const CLOSED_AT: &str = "medallion.scd.closedAt";
    /// Type 1 (DLT's property): seconds a tombstone is kept.
    pub const TOMBSTONE_GC: &str = "pipelines.cdc.tombstoneGCThresholdInSeconds";
}

/// Two days, as in DLT.
pub const DEFAULT_TOMBSTONE_GC: std::time::Duration = std::time::Duration::from_secs(2 * 24 * 3600);

/// An AUTO CDC flow, resolved against its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// 1 or 2.
    pub scd_type: u8,
    /// Indexes of the keys in [`Shape::stored`].
    pub keys: Vec<usize>,
    /// The stored columns, keys included, in the source's order.
    pub stored: Vec<Field>,
    /// Indexes of the tracked columns in [`Shape::stored`] (Type 2).
    pub tracked: Vec<usize>,
    pub sequence: DataType,
    pub system_sequence: Option<DataType>,
    pub ignore_null_updates: bool,
    /// Processing-time columns ([`properties`]).
    pub current: Option<String>,
    pub written_at: Option<String>,
    pub closed_at: Option<String>,
    /// Type 1: how long a deleted key is remembered, so that an older event for it is
    /// still ignored ([`properties::TOMBSTONE_GC`]).
    pub tombstones_kept_for: std::time::Duration,
    /// The target's schema.
    pub schema: SchemaRef,
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl Shape {
    /// The names of the keys, in order.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|&k| self.stored[k].name().as_str())
    }

    /// Resolves `cdc` against `source`, the schema of the flow's query (the source's
    /// columns and the [`columns`] of its clauses). `flow_loc` locates problems of the
    /// column lists; `props` are the target's table properties.
    pub fn resolve(
        file: &str,
        flow_loc: Loc,
        cdc: &AutoCdcDef,
        source: &Schema,
        props: &BTreeMap<String, String>,
    ) -> Result<Shape, PlanError> {
        let at = |loc: Loc, message: String, fix: String| PlanError::at(file, loc, message, fix);
        let fields: Vec<&Field> = source
            .fields()
            .iter()
            .map(|f| f.as_ref())
            .filter(|f| !columns::ALL.contains(&f.name().as_str()))
            .collect();
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        let known = names.join(", ");
        let find = |name: &str| names.iter().position(|n| *n == name);
        for key in &cdc.keys {
            if find(key).is_none() {
                return Err(at(
                    cdc.keys_loc,
                    format!("KEYS names `{key}`, which `{}` does not have", cdc.source),
                    format!("name columns of the source: {known}"),
                ));
            }
        }
        let list = |clause: &str, list: &ColumnList| -> Result<Vec<usize>, PlanError> {
            let check = |c: &String| {
                find(c).ok_or_else(|| {
                    at(
                        flow_loc,
                        format!("{clause} names `{c}`, which `{}` does not have", cdc.source),
                        format!("name columns of the source: {known}"),
                    )
                })
            };
            Ok(match list {
                ColumnList::All => (0..names.len()).collect(),
                ColumnList::Only(cs) => {
                    let mut out: Vec<usize> = cs.iter().map(check).collect::<Result<_, _>>()?;
                    out.sort_unstable();
                    out.dedup();
                    out
                }
                ColumnList::Except(cs) => {
                    let out: Vec<usize> = cs.iter().map(check).collect::<Result<_, _>>()?;
                    (0..names.len()).filter(|i| !out.contains(i)).collect()
                }
            })
        };
        let stored_at = list("COLUMNS", &cdc.columns)?;
        for key in &cdc.keys {
            if !stored_at.contains(&find(key).expect("checked")) {
                return Err(at(
                    flow_loc,
                    format!("COLUMNS leaves out the key `{key}`"),
                    "the stored columns include the keys: add it to COLUMNS".into(),
                ));
            }
        }
        let stored: Vec<Field> = stored_at.iter().map(|&i| fields[i].clone()).collect();
        let position = |i: usize| stored_at.iter().position(|&s| s == i).expect("stored");
        let keys: Vec<usize> = cdc
            .keys
            .iter()
            .map(|k| position(find(k).expect("checked")))
            .collect();
        let tracked: Vec<usize> = match &cdc.track_history {
            None => (0..stored.len()).filter(|i| !keys.contains(i)).collect(),
            Some(l) => {
                // `*` is the stored columns here.
                let named = list("TRACK HISTORY ON", l)?;
                let chosen: Vec<usize> = match l {
                    ColumnList::Only(_) => named,
                    _ => stored_at
                        .iter()
                        .copied()
                        .filter(|i| named.contains(i))
                        .collect(),
                };
                let mut out = Vec::new();
                for i in chosen {
                    let Some(p) = stored_at.iter().position(|&s| s == i) else {
                        return Err(at(
                            flow_loc,
                            format!(
                                "TRACK HISTORY ON names `{}`, which COLUMNS leaves out",
                                names[i]
                            ),
                            "track stored columns only".into(),
                        ));
                    };
                    if !keys.contains(&p) {
                        out.push(p);
                    }
                }
                out
            }
        };
        let typed = |name: &str| {
            source
                .field_with_name(name)
                .ok()
                .map(|f| f.data_type().clone())
        };
        let sequence = typed(columns::SEQUENCE).unwrap_or(DataType::Null);
        let sequence_loc = Loc::of(cdc.sequence_by.span().start);
        orderable(&sequence).map_err(|why| {
            at(
                sequence_loc,
                format!("SEQUENCE BY gives {sequence}, which {why}"),
                "order by a number, a date, a timestamp, a string, or struct(a, b) of them".into(),
            )
        })?;
        let system_sequence = typed(columns::SYSTEM_SEQUENCE);
        if let (Some(t), Some(e)) = (&system_sequence, &cdc.system_sequence_by) {
            orderable(t).map_err(|why| {
                at(
                    Loc::of(e.span().start),
                    format!("SYSTEM SEQUENCE BY gives {t}, which {why}"),
                    "order by a number, a date, a timestamp, a string, or struct(a, b) of them"
                        .into(),
                )
            })?;
        }
        for (column, expr, clause) in [
            (
                columns::DELETE,
                &cdc.apply_as_delete,
                "APPLY AS DELETE WHEN",
            ),
            (
                columns::TRUNCATE,
                &cdc.apply_as_truncate,
                "APPLY AS TRUNCATE WHEN",
            ),
        ] {
            if let (Some(t), Some(e)) = (typed(column), expr) {
                if t != DataType::Boolean && t != DataType::Null {
                    return Err(at(
                        Loc::of(e.span().start),
                        format!("{clause} gives {t}, not a condition"),
                        "write a condition, such as operation = 'DELETE'".into(),
                    ));
                }
            }
        }
        let prop = |key: &str| props.get(key).filter(|v| !v.is_empty()).cloned();
        let tombstones_kept_for = match prop(properties::TOMBSTONE_GC) {
            None => DEFAULT_TOMBSTONE_GC,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(seconds) => std::time::Duration::from_secs(seconds),
                Err(_) => {
                    return Err(at(
                        flow_loc,
                        format!(
                            "TBLPROPERTIES '{}' is '{v}', not a number of seconds",
                            properties::TOMBSTONE_GC
                        ),
                        "give whole seconds, such as '172800' (two days, the default)".into(),
                    ))
                }
            },
        };
        let (current, written_at, closed_at) = (
            prop(properties::CURRENT),
            prop(properties::WRITTEN_AT),
            prop(properties::CLOSED_AT),
        );
        let mut out: Vec<Field> = stored.clone();
        if cdc.scd_type == 2 {
            out.push(Field::new(START_AT, sequence.clone(), false));
            out.push(Field::new(END_AT, sequence.clone(), true));
            if let Some(c) = &current {
                out.push(Field::new(c, DataType::Boolean, false));
            }
            if let Some(c) = &written_at {
                out.push(Field::new(c, timestamp(), false));
            }
            if let Some(c) = &closed_at {
                out.push(Field::new(c, timestamp(), true));
            }
        } else if let Some(p) = [&current, &written_at, &closed_at]
            .iter()
            .zip([
                properties::CURRENT,
                properties::WRITTEN_AT,
                properties::CLOSED_AT,
            ])
            .find_map(|(v, p)| v.as_ref().map(|_| p))
        {
            return Err(at(
                flow_loc,
                format!(
                    "TBLPROPERTIES '{p}' applies to SCD type 2 targets, and this one is type 1"
                ),
                "remove it, or add STORED AS SCD TYPE 2".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &out {
            if !seen.insert(f.name().to_ascii_lowercase()) {
                return Err(at(
                    flow_loc,
                    format!("the target would have two columns named `{}`", f.name()),
                    "rename the source column, or leave it out with COLUMNS * EXCEPT (...)".into(),
                ));
            }
        }
        Ok(Shape {
            scd_type: cdc.scd_type,
            keys,
            stored,
            tracked,
            sequence,
            system_sequence,
            ignore_null_updates: cdc.ignore_null_updates,
            current,
            written_at,
            closed_at,
            tombstones_kept_for,
            schema: Arc::new(Schema::new(out)),
        })
    }
}

/// Whether values of `t` can be ordered, and why not.
fn orderable(t: &DataType) -> Result<(), &'static str> {
    if *t == DataType::Null {
        return Err("is always NULL");
    }
    if matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Map(..)
            | DataType::Union(..)
    ) {
        return Err("cannot be ordered");
    }
    RowConverter::new(vec![SortField::new(t.clone())])
        .map(|_| ())
        .map_err(|_| "cannot be ordered")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &[(&str, DataType)]) -> Schema {
        let mut f = vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("city", DataType::Utf8, true),
            Field::new("op", DataType::Utf8, true),
        ];
        for (n, t) in extra {
            f.push(Field::new(*n, t.clone(), true));
        }
        Schema::new(f)
    }

    fn def(sql: &str) -> AutoCdcDef {
        let defs = crate::pipeline::parse::parse_file("f.sql", 0, sql).unwrap();
        match defs.into_iter().next().unwrap() {
            crate::pipeline::parse::Definition::Flow(f) => match f.body {
                crate::pipeline::parse::FlowBody::AutoCdc(c) => c,
                _ => panic!(),
            },
            _ => panic!(),
        }
    }

    fn resolve(sql: &str, seq: DataType) -> Result<Shape, PlanError> {
        Shape::resolve(
            "f.sql",
            Loc::default(),
            &def(sql),
            &source(&[
                (columns::SEQUENCE, seq),
                (columns::DELETE, DataType::Boolean),
            ]),
            &BTreeMap::new(),
        )
    }

    #[test]
    fn type_2_adds_start_and_end_of_the_sequences_type() {
        let s = resolve(
            "CREATE FLOW f AS AUTO CDC INTO t FROM STREAM(s) KEYS (id) APPLY AS DELETE WHEN op = 'D' SEQUENCE BY ts COLUMNS * EXCEPT (op) STORED AS SCD TYPE 2 TRACK HISTORY ON * EXCEPT (city)",
            DataType::Date32,
        )
        .unwrap();
        let names: Vec<_> = s
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["id", "name", "city", "__START_AT", "__END_AT"]);
        assert_eq!(s.schema.field(3).data_type(), &DataType::Date32);
        assert_eq!((s.keys.clone(), s.tracked.clone()), (vec![0], vec![1]));
    }

    #[test]
    fn a_missing_key_and_an_unorderable_sequence_are_located() {
        let e = resolve(
            "CREATE FLOW f AS AUTO CDC INTO t FROM STREAM(s)\n  KEYS (nope) SEQUENCE BY ts",
            DataType::Int64,
        )
        .unwrap_err();
        assert_eq!((e.loc.line, e.loc.column), (2, 3), "{e}");
        assert!(e.to_string().contains("`nope`"), "{e}");
        let e = resolve(
            "CREATE FLOW f AS AUTO CDC INTO t FROM STREAM(s) KEYS (id)\n SEQUENCE BY tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        )
        .unwrap_err();
        assert_eq!((e.loc.line, e.loc.column), (2, 14), "{e}");
        assert!(e.message.contains("cannot be ordered"), "{e}");
        let e = resolve(
            "CREATE FLOW f AS AUTO CDC INTO t FROM STREAM(s) KEYS (id) SEQUENCE BY ts COLUMNS name",
            DataType::Int64,
        )
        .unwrap_err();
        assert!(e.message.contains("leaves out the key `id`"), "{e}");
    }

    #[test]
    fn type_1_is_the_stored_columns_and_keeps_tombstones_two_days_unless_told() {
        let sql = "CREATE FLOW f AS AUTO CDC INTO t FROM STREAM(s) KEYS (id) SEQUENCE BY ts";
        let s = resolve(sql, DataType::Int64).unwrap();
        assert_eq!(s.schema.fields().len(), 4);
        assert_eq!(s.tombstones_kept_for, DEFAULT_TOMBSTONE_GC);
        let props = |v: &str| BTreeMap::from([(properties::TOMBSTONE_GC.to_string(), v.into())]);
        let with = |v: &str| {
            Shape::resolve(
                "f.sql",
                Loc::default(),
                &def(sql),
                &source(&[(columns::SEQUENCE, DataType::Int64)]),
                &props(v),
            )
        };
        assert_eq!(with("60").unwrap().tombstones_kept_for.as_secs(), 60);
        let e = with("a day").unwrap_err();
        assert!(e.message.contains("not a number of seconds"), "{e}");
    }
}
