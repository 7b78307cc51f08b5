//! Spark's `from_json(json, 'a STRING, b DOUBLE, ...')`: a JSON object's members as a
//! struct, in one parse per row.
//!
//! It behaves as Spark's does in its default (PERMISSIVE) mode, as measured on Spark 4.3:
//! - NULL, or a text of blanks only, gives a NULL struct.
//! - A text that is not one JSON object (malformed, an array, a number) gives a struct of
//!   NULL fields.
//! - A member is found by its exact name; of a member given twice, the last wins; the
//!   members the schema does not name are skipped unbuilt.
//! - A member that does not fit its field's type (`"x"` or `1.5` for a BIGINT) makes that
//!   field NULL; the other fields keep their values.
//! - A STRING field takes any member: a JSON string unquoted, anything else as compact
//!   JSON (`true`, `1.5`, `{"a":1}`).
//! - A DOUBLE or FLOAT field takes numbers, and the texts `NaN`, `Infinity` and
//!   `-Infinity`; a DATE or TIMESTAMP field takes texts such as `2024-01-31`.
//! - A field named `_corrupt_record STRING` holds the whole text of a row that was not an
//!   object or had a member that did not fit, and is NULL otherwise: the way to quarantine
//!   such rows (`EXPECT (j._corrupt_record IS NULL)`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    StructArray,
};
use deltalake::arrow::buffer::NullBuffer;
use deltalake::arrow::compute::{cast, cast_with_options, CastOptions};
use deltalake::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use deltalake::datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use deltalake::datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The field that receives the text of a row that did not parse, as in Spark.
pub const CORRUPT_RECORD: &str = "_corrupt_record";

/// `from_json(json, schema)`.
#[derive(Debug)]
pub struct FromJson {
    signature: Signature,
    recent: Recent,
}

impl PartialEq for FromJson {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature
    }
}

impl Eq for FromJson {}

impl std::hash::Hash for FromJson {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.signature.hash(state)
    }
}

/// The structs parsed last, with the texts they came from. The optimizer may evaluate
/// one `from_json` several times over the same batch (once for each member a `CASE`
/// reads, say), and the parse is what costs: a batch parsed a moment ago is not parsed
/// again. The texts are held, so that their buffers cannot be reused while they are a
/// key.
#[derive(Debug, Default)]
struct Recent(Mutex<VecDeque<(ArrayRef, Fields, ArrayRef)>>);

/// How many batches [`Recent`] keeps.
const RECENT: usize = 4;

impl Recent {
    fn get(&self, texts: &ArrayRef, fields: &Fields) -> Option<ArrayRef> {
        let recent = self.0.lock().ok()?;
        let data = texts.to_data();
        recent
            .iter()
            .find(|(t, f, _)| f == fields && t.to_data().ptr_eq(&data))
            .map(|(_, _, parsed)| parsed.clone())
    }

    fn put(&self, texts: ArrayRef, fields: Fields, parsed: ArrayRef) {
        if let Ok(mut recent) = self.0.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back((texts, fields, parsed));
        }
    }
}

impl Default for FromJson {
    fn default() -> Self {
        Self::new()
    }
}

impl FromJson {
    pub fn new() -> Self {
        FromJson {
            signature: Signature::any(2, Volatility::Immutable),
            recent: Recent::default(),
        }
    }
}

/// The struct type of a schema text, every field nullable; an error says what to write.
fn struct_type(schema: &str) -> Result<DataType> {
    let parsed = match super::types::parse_schema(schema) {
        Ok(s) => s,
        Err(e) => return plan_err!("from_json: {e}"),
    };
    let mut fields = Vec::new();
    for f in parsed.fields() {
        match f.data_type() {
            DataType::Utf8
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..)
            | DataType::Date32
            | DataType::Timestamp(..) => {}
            other => {
                return plan_err!(
                    "from_json: field `{}` is {}, which from_json cannot fill; use STRING, \
                     BOOLEAN, an integer, FLOAT, DOUBLE, DECIMAL, DATE or TIMESTAMP, and take \
                     nested members apart with get_json_object",
                    f.name(),
                    super::types::sql_name(other)
                )
            }
        }
        fields.push(Field::new(f.name(), f.data_type().clone(), true));
    }
    Ok(DataType::Struct(Fields::from(fields)))
}

impl ScalarUDFImpl for FromJson {
    fn name(&self) -> &str {
        "from_json"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        plan_err!("from_json: the return type comes from the schema argument")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let schema = match args.scalar_arguments.get(1) {
            Some(Some(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
            )) => s,
            _ => {
                return plan_err!(
                    "from_json takes (json, schema), the schema a constant text such as \
                     'a STRING, b DOUBLE'"
                )
            }
        };
        Ok(Arc::new(Field::new(
            self.name(),
            struct_type(schema)?,
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Struct(fields) = args.return_field.data_type() else {
            return exec_err!("from_json: the return type is not a struct");
        };
        let Some(json) = args.args.first() else {
            return exec_err!("from_json takes (json, schema)");
        };
        let texts: ArrayRef = json.to_array(args.number_rows)?;
        if let Some(parsed) = self.recent.get(&texts, fields) {
            return Ok(ColumnarValue::Array(parsed));
        }
        let array = cast(&texts, &DataType::Utf8)?;
        let parsed: ArrayRef = Arc::new(parse_column(array.as_string::<i32>(), fields)?);
        self.recent.put(texts, fields.clone(), parsed.clone());
        Ok(ColumnarValue::Array(parsed))
    }
}

/// One member's value, as the parser met it; texts are borrowed when they hold no escape.
#[derive(Debug, Clone, PartialEq)]
enum Cell<'de> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(Cow<'de, str>),
    Nested(String),
}

impl Cell<'_> {
    /// The member as a STRING field holds it.
    fn text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Cell::Null => return None,
            Cell::Bool(b) => Cow::Owned(b.to_string()),
            Cell::Int(i) => Cow::Owned(i.to_string()),
            Cell::UInt(u) => Cow::Owned(u.to_string()),
            Cell::Float(f) => Cow::Owned(serde_json::Value::from(*f).to_string()),
            Cell::Text(t) => Cow::Borrowed(t.as_ref()),
            Cell::Nested(s) => Cow::Borrowed(s.as_str()),
        })
    }

    /// The member as a whole number, `Err` when it is not one.
    fn int(&self) -> Result<Option<i64>, ()> {
        match self {
            Cell::Null => Ok(None),
            Cell::Int(i) => Ok(Some(*i)),
            Cell::UInt(u) => i64::try_from(*u).map(Some).map_err(|_| ()),
            _ => Err(()),
        }
    }

    /// The member as a floating-point number, `Err` when it is not one.
    fn float(&self) -> Result<Option<f64>, ()> {
        match self {
            Cell::Null => Ok(None),
            Cell::Int(i) => Ok(Some(*i as f64)),
            Cell::UInt(u) => Ok(Some(*u as f64)),
            Cell::Float(f) => Ok(Some(*f)),
            Cell::Text(t) => match t.as_ref() {
                "NaN" => Ok(Some(f64::NAN)),
                "Infinity" | "+Infinity" | "INF" | "+INF" => Ok(Some(f64::INFINITY)),
                "-Infinity" | "-INF" => Ok(Some(f64::NEG_INFINITY)),
                _ => Err(()),
            },
            _ => Err(()),
        }
    }

    /// The text a DECIMAL (a number) or a DATE or TIMESTAMP (a text) is cast from.
    fn castable(&self, to: &DataType) -> Result<Option<Cow<'_, str>>, ()> {
        match (self, to) {
            (Cell::Null, _) => Ok(None),
            (Cell::Int(_) | Cell::UInt(_) | Cell::Float(_), DataType::Decimal128(..)) => {
                Ok(self.text())
            }
            (Cell::Text(t), DataType::Date32 | DataType::Timestamp(..)) => {
                Ok(Some(Cow::Borrowed(t.as_ref())))
            }
            _ => Err(()),
        }
    }
}

/// Reads one member's value into a [`Cell`].
struct CellSeed;

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cell<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed {
    type Value = Cell<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }
    fn visit_none<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Cell<'de>, E> {
        Ok(Cell::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Cell<'de>, E> {
        Ok(Cell::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Cell<'de>, E> {
        Ok(Cell::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Cell<'de>, E> {
        Ok(Cell::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Cell<'de>, A::Error> {
        let v: serde_json::Value =
            serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Cell::Nested(v.to_string()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Cell<'de>, A::Error> {
        let v: serde_json::Value =
            serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(Cell::Nested(v.to_string()))
    }
}

/// Which of the wanted names an object's key is, compared without a copy.
struct KeyIn<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for KeyIn<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIn<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| *n == v))
    }
}

/// Reads a top-level object's wanted members into `cells`, the last of a name winning.
struct Row<'a, 'de> {
    names: &'a [&'a str],
    cells: &'a mut Vec<Option<Cell<'de>>>,
}

impl<'de> DeserializeSeed<'de> for Row<'_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Row<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(found) = map.next_key_seed(KeyIn(self.names))? {
            match found {
                Some(i) => self.cells[i] = Some(map.next_value_seed(CellSeed)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The members of one text, `None` when it is not a JSON object. As in Spark, what follows
/// the object is not read.
fn parse_row<'de>(text: &'de str, names: &[&str], cells: &mut Vec<Option<Cell<'de>>>) -> bool {
    cells.clear();
    cells.resize(names.len(), None);
    let mut de = serde_json::Deserializer::from_str(text);
    let ok = Row { names, cells }.deserialize(&mut de).is_ok();
    if !ok {
        cells.iter_mut().for_each(|c| *c = None);
    }
    ok
}

/// A field's column as it is built.
enum Column<'de> {
    Text(StringBuilder),
    Bool(BooleanBuilder),
    Int(Int64Builder, DataType),
    Float(Float64Builder, DataType),
    /// Texts cast at the end; a value the cast turns NULL did not fit.
    Cast(Vec<Option<Cow<'de, str>>>, DataType),
}

impl<'de> Column<'de> {
    fn new(t: &DataType, rows: usize) -> Self {
        match t {
            DataType::Utf8 => Column::Text(StringBuilder::with_capacity(rows, rows * 8)),
            DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(rows)),
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                Column::Int(Int64Builder::with_capacity(rows), t.clone())
            }
            DataType::Float32 | DataType::Float64 => {
                Column::Float(Float64Builder::with_capacity(rows), t.clone())
            }
            _ => Column::Cast(Vec::with_capacity(rows), t.clone()),
        }
    }

    /// Appends a member; `false` when it does not fit (NULL is appended instead).
    fn push(&mut self, cell: Option<&Cell<'de>>) -> bool {
        let cell = cell.unwrap_or(&Cell::Null);
        match self {
            Column::Text(b) => {
                b.append_option(cell.text());
                true
            }
            Column::Bool(b) => match cell {
                Cell::Null => {
                    b.append_null();
                    true
                }
                Cell::Bool(v) => {
                    b.append_value(*v);
                    true
                }
                _ => {
                    b.append_null();
                    false
                }
            },
            Column::Int(b, t) => {
                let fits = cell.int().and_then(|v| match v {
                    Some(v) if !int_fits(v, t) => Err(()),
                    v => Ok(v),
                });
                b.append_option(fits.ok().flatten());
                fits.is_ok()
            }
            Column::Float(b, _) => {
                let v = cell.float();
                b.append_option(v.ok().flatten());
                v.is_ok()
            }
            Column::Cast(texts, t) => {
                let v = cell.castable(t);
                texts.push(v.clone().ok().flatten().map(|c| Cow::Owned(c.into_owned())));
                v.is_ok()
            }
        }
    }

    /// The column, and for a cast column the rows whose text did not cast.
    fn finish(self) -> Result<(ArrayRef, Vec<usize>)> {
        Ok(match self {
            Column::Text(mut b) => (Arc::new(b.finish()), vec![]),
            Column::Bool(mut b) => (Arc::new(b.finish()), vec![]),
            Column::Int(mut b, t) => (cast(&b.finish(), &t)?, vec![]),
            Column::Float(mut b, t) => (cast(&b.finish(), &t)?, vec![]),
            Column::Cast(texts, t) => {
                let texts: ArrayRef = Arc::new(
                    texts
                        .iter()
                        .map(|t| t.as_deref())
                        .collect::<deltalake::arrow::array::StringArray>(),
                );
                let safe = CastOptions {
                    safe: true,
                    ..Default::default()
                };
                let out = cast_with_options(&texts, &t, &safe)?;
                let bad = (0..texts.len())
                    .filter(|&i| texts.is_valid(i) && out.is_null(i))
                    .collect();
                (out, bad)
            }
        })
    }
}

fn int_fits(v: i64, t: &DataType) -> bool {
    match t {
        DataType::Int8 => i8::try_from(v).is_ok(),
        DataType::Int16 => i16::try_from(v).is_ok(),
        DataType::Int32 => i32::try_from(v).is_ok(),
        _ => true,
    }
}

/// Parses each text of `texts` into the struct of `fields`.
fn parse_column(
    texts: &deltalake::arrow::array::StringArray,
    fields: &Fields,
) -> Result<StructArray> {
    let rows = texts.len();
    let corrupt_at = fields
        .iter()
        .position(|f| f.name() == CORRUPT_RECORD && f.data_type() == &DataType::Utf8);
    let wanted: Vec<usize> = (0..fields.len())
        .filter(|&i| Some(i) != corrupt_at)
        .collect();
    let names: Vec<&str> = wanted.iter().map(|&i| fields[i].name().as_str()).collect();
    let mut columns: Vec<Column> = wanted
        .iter()
        .map(|&i| Column::new(fields[i].data_type(), rows))
        .collect();
    let mut corrupt = vec![false; rows];
    let mut valid = Vec::with_capacity(rows);
    let mut cells = Vec::with_capacity(names.len());
    for (i, is_corrupt) in corrupt.iter_mut().enumerate() {
        let text = if texts.is_null(i) { "" } else { texts.value(i) };
        let present = !text.trim().is_empty();
        valid.push(present);
        let parsed = present && parse_row(text, &names, &mut cells);
        if !parsed {
            cells.clear();
            cells.resize(names.len(), None);
        }
        let mut fits = true;
        for (column, cell) in columns.iter_mut().zip(&cells) {
            fits &= column.push(cell.as_ref());
        }
        *is_corrupt = present && !(parsed && fits);
    }
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(fields.len());
    for column in columns {
        let (array, bad) = column.finish()?;
        for i in bad {
            corrupt[i] = true;
        }
        arrays.push(array);
    }
    if let Some(at) = corrupt_at {
        let raw: deltalake::arrow::array::StringArray = (0..rows)
            .map(|i| corrupt[i].then(|| texts.value(i)))
            .collect();
        arrays.insert(at, Arc::new(raw));
    }
    Ok(StructArray::try_new(
        fields.clone(),
        arrays,
        Some(NullBuffer::from(valid)),
    )?)
}

#[cfg(test)]
mod tests {
    use deltalake::datafusion::prelude::SessionContext;

    async fn rows(sql: &str) -> String {
        let ctx = SessionContext::new();
        super::super::functions::register(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        deltalake::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    /// The rows Spark 4.3 gives for the same texts (`from_json(v, 'Index STRING, Vol
    /// BIGINT, D DOUBLE, _corrupt_record STRING')`).
    #[tokio::test]
    async fn members_fit_their_fields_as_in_spark() {
        let text = rows(
            r#"SELECT v, j['Index'] AS i, j['Vol'] AS vol, j['D'] AS d, j['_corrupt_record'] AS bad, j IS NULL AS null_struct
               FROM (SELECT n, v, from_json(v, 'Index STRING, Vol BIGINT, D DOUBLE, _corrupt_record STRING') AS j FROM (VALUES
                 (1, '{"Index":"NYA","Vol":3,"D":"2.5"}'), (2, 'not json'), (3, '[1,2]'),
                 (4, '{"Vol":"x", "Index":"k"}'), (5, '{"Index":"k", "Vol":1.5}'),
                 (6, '{"Index":"a"} trailing'), (7, '{"Index":"a"'), (8, '{"D":7}'),
                 (9, '{"Vol":null}'), (10, '{"Index":"a","Index":"b"}'), (11, ''), (12, NULL),
                 (13, '{"Index":{"a":[1, 2]}, "D":"NaN"}'), (14, '{"Index":true, "x": [{"y": 1}]}')
               ) AS t(n, v)) ORDER BY n"#,
        )
        .await;
        for line in [
            r#"| {"Index":"NYA","Vol":3,"D":"2.5"} | NYA         | 3   |     | {"Index":"NYA","Vol":3,"D":"2.5"} | false       |"#,
            "| not json                          |             |     |     | not json                          | false       |",
            "| [1,2]                             |             |     |     | [1,2]                             | false       |",
            r#"| {"Vol":"x", "Index":"k"}          | k           |     |     | {"Vol":"x", "Index":"k"}          | false       |"#,
            r#"| {"Index":"k", "Vol":1.5}          | k           |     |     | {"Index":"k", "Vol":1.5}          | false       |"#,
            r#"| {"Index":"a"} trailing            | a           |     |     |                                   | false       |"#,
            r#"| {"Index":"a"                      |             |     |     | {"Index":"a"                      | false       |"#,
            r#"| {"D":7}                           |             |     | 7.0 |                                   | false       |"#,
            r#"| {"Vol":null}                      |             |     |     |                                   | false       |"#,
            r#"| {"Index":"a","Index":"b"}         | b           |     |     |                                   | false       |"#,
            "|                                   |             |     |     |                                   | true        |",
            r#"| {"Index":{"a":[1, 2]}, "D":"NaN"} | {"a":[1,2]} |     | NaN |                                   | false       |"#,
            r#"| {"Index":true, "x": [{"y": 1}]}   | true        |     |     |                                   | false       |"#,
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert_eq!(text.matches("| true        |\n").count(), 2, "{text}");
    }

    #[tokio::test]
    async fn dates_decimals_and_small_integers_are_checked() {
        let text = rows(
            r#"SELECT j['d'] AS d, j['n'] AS n, j['t'] AS t, j['_corrupt_record'] IS NOT NULL AS bad
               FROM (SELECT n, from_json(v, 'd DATE, n DECIMAL(5,2), t TINYINT, _corrupt_record STRING') AS j FROM (VALUES
                 (1, '{"d":"2024-01-31","n":1.25,"t":7}'), (2, '{"d":"31/01/2024"}'), (3, '{"t":300}'),
                 (4, '{"n":"1.5"}'), (5, '{"d":20240131}')
               ) AS t(n, v)) ORDER BY n"#,
        )
        .await;
        for line in [
            "| 2024-01-31 | 1.25 | 7 | false |",
            "|            |      |   | true  |",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert_eq!(text.matches("| true  |\n").count(), 4, "{text}");
    }

    #[tokio::test]
    async fn a_schema_that_is_not_a_constant_or_has_nested_fields_is_refused() {
        let ctx = SessionContext::new();
        super::super::functions::register(&ctx);
        let e = ctx
            .sql("SELECT from_json('{}', v) FROM (VALUES ('a STRING')) AS t(v)")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("constant text such as"), "{e}");
        let e = ctx
            .sql("SELECT from_json('{}', 'a STRING, b BINARY')")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `b` is BINARY"), "{e}");
        let e = ctx
            .sql("SELECT from_json('{}', 'a STRINGY')")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("from_json: column 1 (`a`)"), "{e}");
    }
}
