//! Spark functions that pipeline queries call and DataFusion lacks.
//!
//! - `get_json_object(json, '$.a.b')`: the member at a path of a JSON text, as text (a
//!   string member unquoted, anything else as compact JSON); NULL when the text is not
//!   JSON or the path is absent, as in Spark.
//! - `from_json(json, 'a STRING, b DOUBLE')`: the members of a JSON object as a struct, in
//!   one parse per row ([`super::from_json`]).
//!
//! DataFusion already has, under Spark's names or close to them: `struct`,
//! `named_struct`, `TRY_CAST`, `to_char` (Spark's `date_format`), `to_date`,
//! `to_timestamp`, `concat_ws`, `coalesce`, `regexp_replace`, `date_trunc`.

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::common::{exec_err, Result, ScalarValue};
use deltalake::datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use deltalake::datafusion::prelude::SessionContext;

/// Registers the functions in a session.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(GetJsonObject::new()));
    ctx.register_udf(ScalarUDF::from(super::from_json::FromJson::new()));
}

/// `get_json_object(json, path)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct GetJsonObject {
    signature: Signature,
}

impl GetJsonObject {
    fn new() -> Self {
        GetJsonObject {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// A path `$.a.b[0]['c d']` as its steps.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Option<Vec<Step>> {
    let mut rest = path.trim().strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            if let Some(quoted) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                steps.push(Step::Key(quoted.to_string()));
            } else {
                steps.push(Step::Index(inner.parse().ok()?));
            }
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// The member at `steps` of a JSON text. A path that starts with a key reads the
/// top-level object's members without building them, and builds only the one it names:
/// a pipeline takes several members of each row apart, one call each, and a whole parse
/// per call cost five times what the rest of the flow did.
fn lookup(json: &str, steps: &[Step]) -> Option<String> {
    let (value, rest) = match steps.split_first() {
        Some((Step::Key(key), rest)) => {
            let mut de = serde_json::Deserializer::from_str(json);
            let found = serde::de::DeserializeSeed::deserialize(Member(key), &mut de).ok()?;
            de.end().ok()?;
            (found?, rest)
        }
        _ => (serde_json::from_str(json).ok()?, steps),
    };
    let mut at = &value;
    for step in rest {
        at = match step {
            Step::Key(k) => at.as_object()?.get(k)?,
            Step::Index(i) => at.as_array()?.get(*i)?,
        };
    }
    match at {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Finds one member of a JSON object: the other members are skipped unbuilt, and a text
/// that is not an object finds nothing.
struct Member<'a>(&'a str);

impl<'de> serde::de::DeserializeSeed<'de> for Member<'_> {
    type Value = Option<serde_json::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Member<'_> {
    type Value = Option<serde_json::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is) = map.next_key_seed(KeyIs(self.0))? {
            if is && found.is_none() {
                found = Some(map.next_value::<serde_json::Value>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether an object's key is the one sought, compared without a copy.
struct KeyIs<'a>(&'a str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

impl ScalarUDFImpl for GetJsonObject {
    fn name(&self) -> &str {
        "get_json_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [json, path] = args.args.as_slice() else {
            return exec_err!("get_json_object takes (json, path)");
        };
        let path = match path {
            ColumnarValue::Scalar(s) => match s {
                ScalarValue::Utf8(p) | ScalarValue::LargeUtf8(p) | ScalarValue::Utf8View(p) => {
                    p.clone()
                }
                _ => return exec_err!("get_json_object: the path must be a string such as '$.a'"),
            },
            ColumnarValue::Array(_) => {
                return exec_err!("get_json_object: the path must be a constant such as '$.a'")
            }
        };
        let Some(steps) = path.as_deref().and_then(parse_path) else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
        };
        let array: ArrayRef = json.to_array(args.number_rows)?;
        let array = cast(&array, &DataType::Utf8)?;
        let texts = array.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(texts.len(), texts.len() * 8);
        for i in 0..texts.len() {
            if texts.is_null(i) {
                out.append_null();
            } else {
                out.append_option(lookup(texts.value(i), &steps));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_find_members() {
        assert_eq!(
            parse_path("$.a['b c'][1]").unwrap(),
            vec![
                Step::Key("a".into()),
                Step::Key("b c".into()),
                Step::Index(1)
            ]
        );
        assert!(parse_path("a.b").is_none());
        let doc = r#"{"a": {"b c": [1, {"x": "y"}]}, "s": "text", "n": null}"#;
        assert_eq!(
            lookup(doc, &parse_path("$.a['b c'][1]").unwrap()).as_deref(),
            Some(r#"{"x":"y"}"#)
        );
        assert_eq!(
            lookup(doc, &parse_path("$.s").unwrap()).as_deref(),
            Some("text")
        );
        assert_eq!(lookup(doc, &parse_path("$.n").unwrap()), None);
        assert_eq!(lookup(doc, &parse_path("$.missing").unwrap()), None);
        assert_eq!(lookup("not json", &parse_path("$.s").unwrap()), None);
        // Not an object, broken after the member, or the member twice (the first wins).
        assert_eq!(lookup("[1, 2]", &parse_path("$.s").unwrap()), None);
        assert_eq!(
            lookup(r#"{"s": "a", "t": "#, &parse_path("$.s").unwrap()),
            None
        );
        assert_eq!(
            lookup(r#"{"s": "a", "s": "b"}"#, &parse_path("$.s").unwrap()).as_deref(),
            Some("a")
        );
        assert_eq!(
            lookup(
                r#"{"k\u0020": 1, "Adj Close": 2.5}"#,
                &parse_path("$['Adj Close']").unwrap()
            )
            .as_deref(),
            Some("2.5")
        );
        assert_eq!(
            lookup(r#"{"a": 1}"#, &parse_path("$").unwrap()).as_deref(),
            Some(r#"{"a":1}"#)
        );
    }

    #[tokio::test]
    async fn get_json_object_runs_in_sql() {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx
            .sql(r#"SELECT get_json_object('{"Index": "NYA", "Close": 1.5}', '$.Index') AS i, get_json_object('{"Close": 1.5}', '$.Close') AS c"#)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = deltalake::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| NYA | 1.5 |"), "{text}");
    }
}
