//! SQL type names, as a pipeline writes them (`schema => 'a STRING, b DOUBLE'`), to Arrow.

use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::datafusion::sql::sqlparser::ast::{self, ExactNumberInfo, TimezoneInfo};
use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
use deltalake::datafusion::sql::sqlparser::keywords::Keyword;
use deltalake::datafusion::sql::sqlparser::parser::Parser;
use deltalake::datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The types a schema may use, for error messages.
pub const SUPPORTED_TYPES: &str = "STRING (VARCHAR, CHAR, TEXT), BOOLEAN, TINYINT, SMALLINT, \
     INT (INTEGER), BIGINT, FLOAT (REAL), DOUBLE, DECIMAL(p,s) (NUMERIC), DATE, TIMESTAMP, \
     TIMESTAMP_NTZ, BINARY";

/// Spark's precision and scale of a `DECIMAL` written without them.
const DEFAULT_DECIMAL: (u8, i8) = (10, 0);

/// The timestamp type of `TIMESTAMP`: microseconds, in UTC.
pub fn timestamp_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow type of a SQL type name: STRING/VARCHAR/CHAR/TEXT → Utf8, BOOLEAN → Boolean,
/// TINYINT/SMALLINT/INT/BIGINT → Int8/16/32/64, FLOAT/REAL → Float32, DOUBLE → Float64,
/// DECIMAL(p,s)/NUMERIC → Decimal128 (DECIMAL alone is DECIMAL(10,0), as in Spark), DATE →
/// Date32, TIMESTAMP → Timestamp(µs, UTC), TIMESTAMP_NTZ → Timestamp(µs), BINARY → Binary.
pub fn arrow_type(t: &ast::DataType) -> Result<DataType, String> {
    use ast::DataType as T;
    Ok(match t {
        T::String(_)
        | T::Varchar(_)
        | T::Nvarchar(_)
        | T::CharacterVarying(_)
        | T::CharVarying(_)
        | T::Char(_)
        | T::Character(_)
        | T::Text => DataType::Utf8,
        T::Boolean | T::Bool => DataType::Boolean,
        T::TinyInt(_) => DataType::Int8,
        T::SmallInt(_) => DataType::Int16,
        T::Int(_) | T::Integer(_) => DataType::Int32,
        T::BigInt(_) => DataType::Int64,
        T::Float(_) | T::Real | T::Float4 => DataType::Float32,
        T::Double(_) | T::DoublePrecision | T::Float8 => DataType::Float64,
        T::Decimal(info) | T::Numeric(info) | T::Dec(info) => decimal(info)?,
        T::Date => DataType::Date32,
        T::Timestamp(_, TimezoneInfo::WithoutTimeZone) | T::TimestampNtz(_) => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        T::Timestamp(_, _) => timestamp_utc(),
        T::Binary(_) | T::Varbinary(_) | T::Bytea | T::Bytes(_) => DataType::Binary,
        T::Custom(name, args) if args.is_empty() => {
            match name.to_string().to_ascii_uppercase().as_str() {
                "LONG" => DataType::Int64,
                "SHORT" => DataType::Int16,
                "BYTE" => DataType::Int8,
                "TIMESTAMP_LTZ" => timestamp_utc(),
                _ => return Err(unsupported(t)),
            }
        }
        _ => return Err(unsupported(t)),
    })
}

fn unsupported(t: &ast::DataType) -> String {
    format!("type {t} is not supported; the supported types are {SUPPORTED_TYPES}")
}

fn decimal(info: &ExactNumberInfo) -> Result<DataType, String> {
    let (precision, scale) = match *info {
        ExactNumberInfo::None => return Ok(DataType::Decimal128(DEFAULT_DECIMAL.0, 0)),
        ExactNumberInfo::Precision(p) => (p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (p, s),
    };
    if !(1..=38).contains(&precision) {
        return Err(format!(
            "DECIMAL precision {precision} is out of range: it must be 1 to 38"
        ));
    }
    if scale < 0 || scale > precision as i64 {
        return Err(format!(
            "DECIMAL({precision},{scale}): the scale must be 0 to the precision ({precision})"
        ));
    }
    // Both fit: the precision is at most 38 and the scale at most the precision.
    Ok(DataType::Decimal128(precision as u8, scale as i8))
}

/// The SQL name of an Arrow type, as [`arrow_type`] spells it (for messages).
pub fn sql_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP_NTZ".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BINARY".into(),
        other => other.to_string(),
    }
}

/// Parses a schema such as `a STRING, b DOUBLE NOT NULL, c DECIMAL(10,2)` into Arrow
/// fields, nullable unless `NOT NULL`. A column may also say `NULL`, and `COMMENT '...'`,
/// which is ignored. Names may be quoted with backticks or double quotes.
pub fn parse_schema(text: &str) -> Result<SchemaRef, String> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize()
        .map_err(|e| format!("the schema cannot be read: {e}"))?;
    let mut parser = Parser::new(&dialect).with_tokens(tokens);
    let mut fields: Vec<Field> = Vec::new();
    loop {
        let n = fields.len() + 1;
        if parser.peek_token().token == Token::EOF {
            return Err(if fields.is_empty() {
                "the schema is empty; write it as 'name TYPE, ...', e.g. 'a STRING, b DOUBLE'"
                    .into()
            } else {
                format!("the schema ends with a `,`: column {n} is missing")
            });
        }
        let name = parser
            .parse_identifier()
            .map_err(|e| format!("column {n}: a name was expected ({e})"))?
            .value;
        if parser.peek_token().token == Token::EOF || parser.peek_token().token == Token::Comma {
            return Err(format!(
                "column {n} (`{name}`) has no type; write it as '{name} STRING', say"
            ));
        }
        let sql_type = parser
            .parse_data_type()
            .map_err(|e| format!("column {n} (`{name}`): the type cannot be read ({e})"))?;
        let data_type = arrow_type(&sql_type).map_err(|e| format!("column {n} (`{name}`): {e}"))?;
        let mut nullable = true;
        loop {
            if parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                nullable = false;
            } else if parser.parse_keyword(Keyword::NULL) {
                nullable = true;
            } else if parser.parse_keyword(Keyword::COMMENT) {
                parser.parse_literal_string().map_err(|e| {
                    format!("column {n} (`{name}`): COMMENT takes a quoted text ({e})")
                })?;
            } else {
                break;
            }
        }
        if fields.iter().any(|f| f.name() == &name) {
            return Err(format!("column `{name}` is given twice"));
        }
        fields.push(Field::new(name.clone(), data_type, nullable));
        let next = parser.next_token();
        match next.token {
            Token::EOF => break,
            Token::Comma => continue,
            other => {
                return Err(format!(
                    "column {n} (`{name}` {sql_type}): unexpected `{other}`; columns are \
                     'name TYPE [NOT NULL]', separated by commas"
                ))
            }
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_parses_with_types_and_nullability() {
        let s = parse_schema(
            "a STRING, `b c` DOUBLE NOT NULL, c DECIMAL(10,2), d timestamp, e TIMESTAMP_NTZ, \
             f date NULL COMMENT 'x', g BIGINT, h boolean, i BINARY, j int, k DECIMAL, l float",
        )
        .unwrap();
        let got: Vec<(&str, DataType, bool)> = s
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", DataType::Utf8, true),
                ("b c", DataType::Float64, false),
                ("c", DataType::Decimal128(10, 2), true),
                ("d", timestamp_utc(), true),
                ("e", DataType::Timestamp(TimeUnit::Microsecond, None), true),
                ("f", DataType::Date32, true),
                ("g", DataType::Int64, true),
                ("h", DataType::Boolean, true),
                ("i", DataType::Binary, true),
                ("j", DataType::Int32, true),
                ("k", DataType::Decimal128(10, 0), true),
                ("l", DataType::Float32, true),
            ]
        );
        for t in got.iter().map(|(_, t, _)| t) {
            // Every name reads back as the same type.
            let back = parse_schema(&format!("x {}", sql_name(t))).unwrap();
            assert_eq!(back.field(0).data_type(), t);
        }
    }

    #[test]
    fn bad_schemas_say_which_column_and_what_is_wrong() {
        let err = |text: &str| parse_schema(text).unwrap_err();
        let e = err("a STRING, b FOO");
        assert!(
            e.starts_with(
                "column 2 (`b`): type FOO is not supported; the supported types are STRING"
            ),
            "{e}"
        );
        let e = err("a STRING, b");
        assert!(e.starts_with("column 2 (`b`) has no type"), "{e}");
        let e = err("a STRING,");
        assert!(e.contains("ends with a `,`"), "{e}");
        let e = err("a STRING b INT");
        assert!(
            e.starts_with("column 1 (`a` STRING): unexpected `b`"),
            "{e}"
        );
        let e = err("a DECIMAL(50,2)");
        assert!(e.contains("column 1 (`a`): DECIMAL precision 50"), "{e}");
        let e = err("a DECIMAL(5,7)");
        assert!(e.contains("the scale must be 0 to the precision"), "{e}");
        let e = err("a INT, a STRING");
        assert_eq!(e, "column `a` is given twice");
        assert!(err("").contains("the schema is empty"));
        assert!(err("a 'STRING").contains("cannot be read"));
        let e = err("a ARRAY<INT>");
        assert!(e.contains("is not supported"), "{e}");
    }
}
