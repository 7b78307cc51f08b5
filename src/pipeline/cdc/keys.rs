//! A batch's keys: encoded for lookups, and as filters that read only the stored rows
//! they can touch.

use std::collections::HashSet;

use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::row::{RowConverter, Rows, SortField};
use deltalake::datafusion::common::{Column, ScalarValue};
use deltalake::datafusion::logical_expr::{lit, Expr};

use super::shape::Shape;
use super::CdcError;

/// The column `name`, unqualified.
pub fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// The column `name` of `b`.
pub fn column_of(b: &RecordBatch, name: &str) -> Result<ArrayRef, CdcError> {
    b.column_by_name(name)
        .cloned()
        .ok_or_else(|| CdcError::Missing(name.into()))
}

/// Encodes keys (the stored key columns, in order) as comparable rows.
pub fn converter(shape: &Shape) -> Result<RowConverter, CdcError> {
    Ok(RowConverter::new(
        shape
            .keys
            .iter()
            .map(|&k| SortField::new(shape.stored[k].data_type().clone()))
            .collect(),
    )?)
}

/// The key columns of `b` (whose columns start with the stored ones).
pub fn of(shape: &Shape, b: &RecordBatch) -> Vec<ArrayRef> {
    shape.keys.iter().map(|&k| b.column(k).clone()).collect()
}

/// The names of the key columns.
pub fn names(shape: &Shape) -> Vec<&str> {
    shape
        .keys
        .iter()
        .map(|&k| shape.stored[k].name().as_str())
        .collect()
}

/// The key columns of `b`, by name (`b` may hold only some of the stored columns).
pub fn of_named(shape: &Shape, b: &RecordBatch) -> Result<Vec<ArrayRef>, CdcError> {
    names(shape).into_iter().map(|n| column_of(b, n)).collect()
}

/// The `SYSTEM SEQUENCE BY` values, encoded, when the flow has the clause.
pub fn encode_sys(
    converter: &Option<RowConverter>,
    values: &Option<ArrayRef>,
) -> Result<Option<Rows>, CdcError> {
    Ok(match (converter, values) {
        (Some(c), Some(v)) => Some(c.convert_columns(std::slice::from_ref(v))?),
        _ => None,
    })
}

/// The most values of a key column in one `IN` list of a read.
const IN_LIST_MAX: usize = 64;

/// A read of the stored rows of some keys.
#[derive(Clone)]
pub struct KeyFilter {
    /// Per key column, the keys' range (which file statistics can prune by), and their
    /// values as an `IN` list when there are few.
    pub expr: Expr,
    /// The keys themselves, when there are many: the read is a semi-join with them.
    pub keys: Option<RecordBatch>,
}

impl KeyFilter {
    /// The stored rows of `table` of these keys that `extra` keeps: a superset when
    /// there are several key columns and few keys, which the caller narrows.
    pub async fn read(
        &self,
        table: &crate::delta::DeltaSink,
        extra: Expr,
    ) -> Result<Vec<RecordBatch>, CdcError> {
        let expr = self.expr.clone().and(extra);
        Ok(match &self.keys {
            Some(keys) => table.scan_matching(expr, keys.clone()).await?,
            None => table.scan(expr).await?,
        })
    }

    /// Only `columns` of the rows of [`Self::read`].
    pub async fn read_columns(
        &self,
        table: &crate::delta::DeltaSink,
        extra: Expr,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>, CdcError> {
        let expr = self.expr.clone().and(extra);
        Ok(table.scan_columns(expr, self.keys.clone(), columns).await?)
    }

    /// [`Self::read`], each row with its file in a last column
    /// ([`crate::delta::FILE_COLUMN`]).
    pub async fn read_with_files(
        &self,
        table: &crate::delta::DeltaSink,
        extra: Expr,
    ) -> Result<Vec<RecordBatch>, CdcError> {
        let expr = self.expr.clone().and(extra);
        Ok(table.scan_with_files(expr, self.keys.clone()).await?)
    }
}

/// The read of the rows whose keys are among those at `rows` of `values`.
pub fn filter(shape: &Shape, values: &RecordBatch, rows: &[usize]) -> Result<KeyFilter, CdcError> {
    let mut filter: Option<Expr> = None;
    let mut many = false;
    for &k in &shape.keys {
        let array = values.column(k);
        let mut seen: Vec<ScalarValue> = Vec::new();
        let mut distinct: HashSet<ScalarValue> = HashSet::new();
        for &r in rows {
            let v = ScalarValue::try_from_array(array, r)?;
            if distinct.insert(v.clone()) {
                seen.push(v);
            }
        }
        let min = seen
            .iter()
            .min_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let max = seen
            .iter()
            .max_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let name = shape.stored[k].name();
        let mut f = lit(true);
        if let (Some(min), Some(max)) = (min, max) {
            f = column(name)
                .gt_eq(lit(min.clone()))
                .and(column(name).lt_eq(lit(max.clone())));
        }
        // delta-rs turns an IN list into a chain of ORs to skip files, and walks it
        // recursively: long lists overflow the stack. Beyond IN_LIST_MAX values, the
        // range alone selects, and the caller keeps the batch's keys.
        if seen.len() <= IN_LIST_MAX {
            f = f.and(column(name).in_list(seen.iter().cloned().map(lit).collect(), false));
        } else {
            many = true;
        }
        filter = Some(match filter {
            Some(x) => x.and(f),
            None => f,
        });
    }
    let keys = match many {
        true => {
            let indices = deltalake::arrow::array::UInt32Array::from_iter_values(
                rows.iter().map(|&r| r as u32),
            );
            let columns = shape
                .keys
                .iter()
                .map(|&k| deltalake::arrow::compute::take(values.column(k), &indices, None))
                .collect::<Result<Vec<_>, _>>()?;
            let fields: Vec<deltalake::arrow::datatypes::Field> = shape
                .keys
                .iter()
                .map(|&k| shape.stored[k].clone())
                .collect();
            Some(RecordBatch::try_new(
                std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(fields)),
                columns,
            )?)
        }
        false => None,
    };
    Ok(KeyFilter {
        expr: filter.unwrap_or(lit(true)),
        keys,
    })
}
