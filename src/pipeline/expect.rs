//! Expectations: data quality rules on a dataset's rows, with their three behaviours.
//!
//! - without `ON VIOLATION`: the row is kept, and counted as failed;
//! - `ON VIOLATION DROP ROW`: the row is dropped, counted, and lands in the quarantine
//!   with the names of every expectation it failed;
//! - `ON VIOLATION FAIL UPDATE`: the flow fails without committing, naming the
//!   expectation and showing the row.
//!
//! A NULL result is a failure. Each expectation becomes a boolean column of the flow's
//! query (`__exp_0`, ...), planned together with it, so that it is evaluated once per
//! row by DataFusion; the columns are split off before the rows are written.

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::buffer::BooleanBuffer;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::Schema;
use deltalake::datafusion::sql::sqlparser::ast::{
    Ident, Query, SelectItem, SetExpr, TableFactor, TableWithJoins,
};

use super::parse::{Expectation, Violation};

/// The prefix of the expectation columns.
const PREFIX: &str = "__exp_";

/// `SELECT *, (e0) AS __exp_0, ... FROM <view>`: the query that adds the expectation
/// columns to the rows of `view` (the flow's query, registered as a view).
pub fn query(view: &str, expectations: &[Expectation]) -> Box<Query> {
    use deltalake::datafusion::sql::sqlparser::{dialect::GenericDialect, parser::Parser};
    let statement = Parser::parse_sql(&GenericDialect {}, "SELECT * FROM __view")
        .expect("a constant query parses")
        .remove(0);
    let deltalake::datafusion::sql::sqlparser::ast::Statement::Query(mut query) = statement else {
        unreachable!("a SELECT is a query")
    };
    if let SetExpr::Select(select) = query.body.as_mut() {
        for (i, e) in expectations.iter().enumerate() {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: e.expr.clone(),
                alias: Ident::with_quote('"', format!("{PREFIX}{i}")),
            });
        }
        if let Some(TableWithJoins {
            relation: TableFactor::Table { name, .. },
            ..
        }) = select.from.first_mut()
        {
            *name = deltalake::datafusion::sql::sqlparser::ast::ObjectName::from(vec![
                Ident::with_quote('"', view),
            ]);
        }
    }
    query
}

/// Counts of one expectation over a batch or a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metric {
    pub name: String,
    pub dataset: String,
    pub passed_records: u64,
    pub failed_records: u64,
}

/// Rows split by their expectations.
#[derive(Clone)]
pub struct Split {
    /// The rows to write, without the expectation columns.
    pub kept: Vec<RecordBatch>,
    /// Rows dropped by a DROP ROW expectation, with the names of all they failed.
    pub dropped: Vec<(RecordBatch, Vec<Vec<String>>)>,
    /// The first row that failed a FAIL UPDATE expectation: its name and the row.
    pub failure: Option<(String, RecordBatch)>,
    pub metrics: Vec<Metric>,
}

/// Splits batches that carry the expectation columns (the last `expectations.len()`).
pub fn split(batches: &[RecordBatch], expectations: &[Expectation], dataset: &str) -> Split {
    let n = expectations.len();
    let mut out = Split {
        kept: Vec::new(),
        dropped: Vec::new(),
        failure: None,
        metrics: expectations
            .iter()
            .map(|e| Metric {
                name: e.name.clone(),
                dataset: dataset.into(),
                ..Default::default()
            })
            .collect(),
    };
    for batch in batches {
        let width = batch.num_columns() - n;
        let data = batch
            .project(&(0..width).collect::<Vec<_>>())
            .expect("the data columns come first");
        // Set where the row passes expectation i (NULL fails).
        let passes: Vec<BooleanBuffer> = (0..n)
            .map(|i| match batch.column(width + i).as_boolean_opt() {
                Some(c) => match c.nulls() {
                    Some(valid) => c.values() & valid.inner(),
                    None => c.values().clone(),
                },
                None => BooleanBuffer::new_unset(batch.num_rows()),
            })
            .collect();
        for (i, p) in passes.iter().enumerate() {
            let passed = p.count_set_bits() as u64;
            out.metrics[i].passed_records += passed;
            out.metrics[i].failed_records += p.len() as u64 - passed;
        }
        if out.failure.is_none() {
            'find: for (i, e) in expectations.iter().enumerate() {
                if e.action == Violation::FailUpdate {
                    if let Some(r) = (0..passes[i].len()).find(|&r| !passes[i].value(r)) {
                        out.failure = Some((e.name.clone(), data.slice(r, 1)));
                        break 'find;
                    }
                }
            }
        }
        let keep = expectations
            .iter()
            .zip(&passes)
            .filter(|(e, _)| e.action == Violation::DropRow)
            .fold(BooleanBuffer::new_set(batch.num_rows()), |keep, (_, p)| {
                &keep & p
            });
        let kept_mask = BooleanArray::new(keep.clone(), None);
        out.kept
            .push(filter_record_batch(&data, &kept_mask).expect("mask has the batch's length"));
        if kept_mask.false_count() > 0 {
            let dropped_mask = BooleanArray::new(!&keep, None);
            let failed: Vec<Vec<String>> = (0..batch.num_rows())
                .filter(|&r| !keep.value(r))
                .map(|r| {
                    expectations
                        .iter()
                        .zip(&passes)
                        .filter(|(_, p)| !p.value(r))
                        .map(|(e, _)| e.name.clone())
                        .collect()
                })
                .collect();
            out.dropped.push((
                filter_record_batch(&data, &dropped_mask).expect("mask has the batch's length"),
                failed,
            ));
        }
    }
    out
}

/// The data schema of batches that carry `n` expectation columns.
pub fn data_schema(schema: &Schema, n: usize) -> Arc<Schema> {
    let width = schema.fields().len() - n;
    Arc::new(Schema::new(schema.fields()[..width].to_vec()))
}

/// One row as a JSON object, for the quarantine's `raw` and for error messages.
pub fn rows_as_json(batch: &RecordBatch) -> Vec<String> {
    let mut buf = Vec::new();
    {
        let mut writer = deltalake::arrow::json::LineDelimitedWriter::new(&mut buf);
        if writer.write(batch).is_err() || writer.finish().is_err() {
            return vec!["(the row cannot be shown as JSON)".into(); batch.num_rows()];
        }
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{BooleanArray, Int64Array};
    use deltalake::arrow::datatypes::{DataType, Field};
    use deltalake::datafusion::sql::sqlparser::ast::Expr;

    fn exp(name: &str, action: Violation) -> Expectation {
        Expectation {
            name: name.into(),
            expr: Expr::Value(
                deltalake::datafusion::sql::sqlparser::ast::Value::Boolean(true).into(),
            ),
            text: "true".into(),
            action,
            loc: Default::default(),
        }
    }

    #[test]
    fn rows_split_by_behaviour_and_null_fails() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, false),
            Field::new("__exp_0", DataType::Boolean, true),
            Field::new("__exp_1", DataType::Boolean, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    None,
                    Some(true),
                ])),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    Some(true),
                    None,
                ])),
            ],
        )
        .unwrap();
        let exps = [
            exp("warn", Violation::Warn),
            exp("drop", Violation::DropRow),
        ];
        let s = split(std::slice::from_ref(&batch), &exps, "t");
        assert_eq!(s.kept.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert_eq!(s.kept[0].num_columns(), 1);
        assert_eq!(s.dropped[0].0.num_rows(), 2);
        assert_eq!(
            s.dropped[0].1,
            vec![
                vec!["warn".to_string(), "drop".to_string()],
                vec!["drop".to_string()]
            ]
        );
        assert_eq!(
            (s.metrics[0].passed_records, s.metrics[0].failed_records),
            (2, 2)
        );
        assert_eq!(
            (s.metrics[1].passed_records, s.metrics[1].failed_records),
            (2, 2)
        );
        assert!(s.failure.is_none());

        let fail = [
            exp("w", Violation::Warn),
            exp("must", Violation::FailUpdate),
        ];
        let s = split(&[batch], &fail, "t");
        let (name, row) = s.failure.unwrap();
        assert_eq!(name, "must");
        assert_eq!(rows_as_json(&row), vec![r#"{"x":2}"#.to_string()]);
    }

    #[test]
    fn the_query_adds_one_column_per_expectation() {
        let q = query(
            "__flow",
            &[exp("a", Violation::Warn), exp("b", Violation::DropRow)],
        );
        assert_eq!(
            q.to_string(),
            r#"SELECT *, true AS "__exp_0", true AS "__exp_1" FROM "__flow""#
        );
    }
}
