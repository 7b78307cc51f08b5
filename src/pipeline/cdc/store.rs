//! The change events of an AUTO CDC flow: taken from the flow's rows, and kept in the
//! flow's event store, `<schema>.__apply_changes_storage_<target>` (the name DLT gives its
//! own), a Delta table partitioned as the target.
//!
//! A Type 2 history does not show every event: an update of untracked columns, a
//! duplicate, a delete of an absent key leave no row of their own, yet a late event can
//! make them matter again. The store keeps them all, so that a key can be replayed from
//! any version start ([`super::replay::resume_from`]).

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::columns;
use super::shape::Shape;
use super::CdcError;
use crate::catalog::TableName;
use crate::delta::TableSpec;

/// The store's column of each event's `SEQUENCE BY` value.
pub const SEQUENCE: &str = "__SEQUENCE";
/// Its `SYSTEM SEQUENCE BY` value.
pub const SYSTEM_SEQUENCE: &str = "__SYSTEM_SEQUENCE";
/// Its arrival: `(source version << 32) + row`, increasing with the order of arrival.
pub const ARRIVAL: &str = "__ARRIVAL";
/// Whether `APPLY AS DELETE WHEN` held.
pub const DELETE: &str = "__DELETE";
/// Type 1: when the row was written (a tombstone is collected some time after).
pub const CHANGED_AT: &str = "__CHANGED_AT";

/// The event store of the flow into `target`.
pub fn name(target: &TableName) -> TableName {
    TableName::new(
        &target.schema,
        format!("__apply_changes_storage_{}", target.table),
    )
}

/// The event store's table: the stored columns, then the event's order and kind.
///
/// Of a Type 1 flow, the store holds the event last applied to each key instead (the
/// live rows and the tombstones of deleted keys), when it was written, and one row whose
/// keys are NULL: the highest truncate.
pub fn spec(target: &TableName, shape: &Shape, partition_columns: Vec<String>) -> TableSpec {
    TableSpec {
        name: name(target),
        schema: schema(shape),
        partition_columns,
        target_file_size: None,
    }
}

/// The columns of the event store of a flow of `shape`.
pub fn schema(shape: &Shape) -> SchemaRef {
    let type_1 = shape.scd_type == 1;
    let mut fields: Vec<Field> = shape
        .stored
        .iter()
        .map(|f| f.clone().with_nullable(f.is_nullable() || type_1))
        .collect();
    fields.push(Field::new(SEQUENCE, shape.sequence.clone(), false));
    if let Some(t) = &shape.system_sequence {
        fields.push(Field::new(SYSTEM_SEQUENCE, t.clone(), true));
    }
    fields.push(Field::new(ARRIVAL, DataType::Int64, false));
    fields.push(Field::new(DELETE, DataType::Boolean, false));
    if type_1 {
        fields.push(Field::new(
            CHANGED_AT,
            DataType::Timestamp(
                deltalake::arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
            false,
        ));
    }
    crate::delta::schema(fields)
}

/// Change events, column by column.
#[derive(Debug, Clone)]
pub struct Changes {
    /// The stored columns, of the target's types.
    pub values: RecordBatch,
    pub sequence: ArrayRef,
    pub system_sequence: Option<ArrayRef>,
    pub delete: BooleanArray,
    /// Whether `APPLY AS TRUNCATE WHEN` held (Type 1): the event empties the table.
    pub truncate: BooleanArray,
    pub arrival: Int64Array,
}

/// Where the condition `name` of `batch` holds (a NULL condition, or none, does not).
fn condition(batch: &RecordBatch, name: &str) -> Result<BooleanArray, CdcError> {
    Ok(match batch.column_by_name(name) {
        Some(d) => {
            let d = cast(d, &DataType::Boolean)?;
            let d = d
                .as_any()
                .downcast_ref::<BooleanArray>()
                .expect("cast to boolean");
            BooleanArray::from_iter(d.iter().map(|v| Some(v == Some(true))))
        }
        None => BooleanArray::from(vec![false; batch.num_rows()]),
    })
}

/// Rows of the flow that cannot be events, with the reason of each.
pub struct Rejected {
    /// Set at the rejected rows of the batch given.
    pub rows: BooleanArray,
    pub reasons: Vec<String>,
}

impl Changes {
    /// The events of the flow's rows `batch` (its query's columns: the source's, and
    /// [`columns`]), arrived `(version << 32) + row`. A row whose key or sequence is NULL
    /// is rejected with the reason.
    pub fn from_rows(
        shape: &Shape,
        batch: &RecordBatch,
        version: i64,
    ) -> Result<(Changes, Option<Rejected>), CdcError> {
        let column = |name: &str| batch.column_by_name(name).cloned();
        // A truncate concerns no key: its key may be NULL.
        let truncate = condition(batch, columns::TRUNCATE)?;
        let mut reasons: Vec<Option<String>> = vec![None; batch.num_rows()];
        for &k in &shape.keys {
            let name = shape.stored[k].name();
            if let Some(a) = column(name) {
                let reason = format!("AUTO CDC: the key `{name}` is NULL");
                for (i, r) in reasons.iter_mut().enumerate() {
                    if r.is_none() && a.is_null(i) && !truncate.value(i) {
                        *r = Some(reason.clone());
                    }
                }
            }
        }
        let mut note = |array: &ArrayRef, what: &str| {
            for (i, r) in reasons.iter_mut().enumerate() {
                if r.is_none() && array.is_null(i) {
                    *r = Some(what.to_string());
                }
            }
        };
        let sequence =
            column(columns::SEQUENCE).ok_or_else(|| CdcError::Missing(columns::SEQUENCE.into()))?;
        note(&sequence, "AUTO CDC: the SEQUENCE BY value is NULL");
        let keep = BooleanArray::from_iter(reasons.iter().map(|r| Some(r.is_none())));
        let rejected = (keep.false_count() > 0).then(|| Rejected {
            rows: deltalake::arrow::compute::not(&keep).expect("a boolean array"),
            reasons: reasons.iter().flatten().cloned().collect(),
        });
        let batch = match rejected {
            Some(_) => filter_record_batch(batch, &keep)?,
            None => batch.clone(),
        };
        let arrival = Int64Array::from_iter_values(
            keep.iter()
                .enumerate()
                .filter(|(_, k)| *k == Some(true))
                .map(|(i, _)| (version << 32) + i as i64),
        );
        let changes = Changes::from_columns(
            shape,
            &batch,
            [
                columns::SEQUENCE,
                columns::SYSTEM_SEQUENCE,
                columns::DELETE,
                columns::TRUNCATE,
            ],
            arrival,
        )?;
        Ok((changes, rejected))
    }

    /// The events of a batch of the event store.
    pub fn from_store(shape: &Shape, batch: &RecordBatch) -> Result<Changes, CdcError> {
        let arrival = batch
            .column_by_name(ARRIVAL)
            .and_then(|a| a.as_any().downcast_ref::<Int64Array>().cloned())
            .ok_or_else(|| CdcError::Missing(ARRIVAL.into()))?;
        Changes::from_columns(
            shape,
            batch,
            [SEQUENCE, SYSTEM_SEQUENCE, DELETE, "-"],
            arrival,
        )
    }

    fn from_columns(
        shape: &Shape,
        batch: &RecordBatch,
        [sequence, system_sequence, delete, truncate]: [&str; 4],
        arrival: Int64Array,
    ) -> Result<Changes, CdcError> {
        let typed = |name: &str, t: &DataType| -> Result<ArrayRef, CdcError> {
            let a = batch
                .column_by_name(name)
                .ok_or_else(|| CdcError::Missing(name.into()))?;
            Ok(cast(a, t)?)
        };
        let values = shape
            .stored
            .iter()
            .map(|f| typed(f.name(), f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let schema: SchemaRef = Arc::new(Schema::new(shape.stored.clone()));
        let values = RecordBatch::try_new_with_options(
            schema,
            values,
            &deltalake::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?;
        let system_sequence = match &shape.system_sequence {
            Some(t) => Some(typed(system_sequence, t)?),
            None => None,
        };
        let delete = condition(batch, delete)?;
        let truncate = condition(batch, truncate)?;
        Ok(Changes {
            values,
            sequence: typed(sequence, &shape.sequence)?,
            system_sequence,
            delete,
            truncate,
            arrival,
        })
    }

    /// The events as rows of the store of a flow of `shape`.
    pub fn to_store(&self, shape: &Shape) -> Result<RecordBatch, CdcError> {
        let mut columns: Vec<ArrayRef> = self.values.columns().to_vec();
        columns.push(self.sequence.clone());
        if let Some(s) = &self.system_sequence {
            columns.push(s.clone());
        }
        columns.push(Arc::new(self.arrival.clone()));
        columns.push(Arc::new(self.delete.clone()));
        Ok(RecordBatch::try_new(schema(shape), columns)?)
    }

    pub fn len(&self) -> usize {
        self.values.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
