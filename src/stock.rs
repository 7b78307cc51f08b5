//! A daily stock-index record: a bronze `value` parsed into typed columns, as the SCD2
//! history (`close_price`) reads it. (The other Silver tables are SQL, in the bundle's
//! `transformations/`, with the same rule as expectations.) A record with
//! an empty or `null` `Index`, an unparseable `Date`, a `null` or unparseable `Close`, or
//! any number that does not parse (or is NaN or infinite) is rejected with a reason.

use chrono::NaiveDate;
use serde_json::Value;

/// A valid record.
#[derive(Debug, Clone, PartialEq)]
pub struct Stock {
    pub index: String,
    pub date: NaiveDate,
    pub open: Option<f64>,
    pub high: Option<f64>,
    pub low: Option<f64>,
    pub close: f64,
    pub adj_close: Option<f64>,
    pub volume: Option<i64>,
}

/// Days since 1970-01-01, Arrow's `Date32`.
pub fn days(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// The members of a bronze `value` that Silver reads, borrowed from the JSON text where
/// it has no escapes. (Parsing into a `serde_json::Value` map, with a string allocated per
/// member, was the largest cost of the Silver tasks.) Other members are skipped.
#[derive(serde::Deserialize)]
struct Members<'a> {
    #[serde(rename = "Index", borrow, default)]
    index: Member<'a>,
    #[serde(rename = "Date", borrow, default)]
    date: Member<'a>,
    #[serde(rename = "Open", borrow, default)]
    open: Member<'a>,
    #[serde(rename = "High", borrow, default)]
    high: Member<'a>,
    #[serde(rename = "Low", borrow, default)]
    low: Member<'a>,
    #[serde(rename = "Close", borrow, default)]
    close: Member<'a>,
    #[serde(rename = "Adj Close", borrow, default)]
    adj_close: Member<'a>,
    #[serde(rename = "Volume", borrow, default)]
    volume: Member<'a>,
}

/// One member: missing or `null`, text, or something else (kept as JSON text, for the
/// reason).
#[derive(Default)]
enum Member<'a> {
    #[default]
    Null,
    Text(std::borrow::Cow<'a, str>),
    Other(String),
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Member<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Member<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Member::Text(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Member::Text(v.to_string().into()))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Member::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Member::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Member::Other(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Member::Other(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Member::Other(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Member::Other(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                a: A,
            ) -> Result<Self::Value, A::Error> {
                let v = <Value as serde::Deserialize>::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(a),
                )?;
                Ok(Member::Other(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                a: A,
            ) -> Result<Self::Value, A::Error> {
                let v = <Value as serde::Deserialize>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(a),
                )?;
                Ok(Member::Other(v.to_string()))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Parses a bronze `value` (a JSON object of field texts). `Err` holds the reason.
pub fn parse(value: Option<&str>) -> Result<Stock, String> {
    let value = value.ok_or("value is null")?;
    if !value.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<Value>(value) {
            Ok(_) => "value is not a JSON object".into(),
            Err(e) => format!("value is not JSON: {e}"),
        });
    }
    let m: Members = serde_json::from_str(value).map_err(|e| format!("value is not JSON: {e}"))?;
    let index = text(&m.index, "Index")?
        .filter(|s| !s.trim().is_empty())
        .ok_or("Index is empty or null")?
        .to_string();
    // close_price_silver is partitioned by Index: a value that cannot name a folder
    // would fail its every MERGE.
    if let Some(problem) = crate::delta::partition_value_problem("Index", &index) {
        return Err(problem);
    }
    let date_text = text(&m.date, "Date")?.ok_or("Date is null")?;
    let date = date_text
        .trim()
        .parse::<NaiveDate>()
        .ok()
        .filter(|_| date_text.trim().len() == 10)
        .ok_or_else(|| format!("Date `{date_text}` is not a yyyy-MM-dd date"))?;
    let close = number(&m.close, "Close")?.ok_or("Close is null")?;
    Ok(Stock {
        index,
        date,
        open: number(&m.open, "Open")?,
        high: number(&m.high, "High")?,
        low: number(&m.low, "Low")?,
        close,
        adj_close: number(&m.adj_close, "Adj Close")?,
        volume: volume(&m.volume)?,
    })
}

/// A member as text: `None` for a missing member, JSON `null` or the text `null`.
fn text<'a>(member: &'a Member, name: &str) -> Result<Option<&'a str>, String> {
    match member {
        Member::Null => Ok(None),
        Member::Text(s) if s == "null" || s.is_empty() => Ok(None),
        Member::Text(s) => Ok(Some(s)),
        Member::Other(other) => Err(format!("{name} is {other}, not text")),
    }
}

fn number(member: &Member, name: &str) -> Result<Option<f64>, String> {
    let Some(t) = text(member, name)? else {
        return Ok(None);
    };
    match t.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        Ok(_) => Err(format!("{name} `{t}` is not a finite number")),
        Err(_) => Err(format!("{name} `{t}` is not a number")),
    }
}

/// The largest plausible daily volume: a thousand times the largest in the real data.
const MAX_VOLUME: i64 = 10_000_000_000_000;

/// `Volume`: a whole number, neither negative nor absurd.
fn volume(member: &Member) -> Result<Option<i64>, String> {
    match whole_number(member, "Volume")? {
        Some(v) if v < 0 => Err(format!("Volume `{v}` is negative")),
        Some(v) if v > MAX_VOLUME => Err(format!("Volume `{v}` is absurd (above {MAX_VOLUME})")),
        v => Ok(v),
    }
}

/// A whole number, written as `12` or `12.0`.
fn whole_number(member: &Member, name: &str) -> Result<Option<i64>, String> {
    let Some(t) = text(member, name)? else {
        return Ok(None);
    };
    let t = t.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Ok(Some(v));
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e18 => Ok(Some(v as i64)),
        _ => Err(format!("{name} `{t}` is not a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(close: &str, volume: &str) -> String {
        format!(
            r#"{{"Index":"NYA","Date":"2001-01-02","Open":"1","High":"2","Low":"0.5","Close":{close},"Adj Close":"1.5","Volume":{volume}}}"#
        )
    }

    #[test]
    fn parses_a_good_record() {
        let s = parse(Some(&v("\"1.5\"", "\"12.0\""))).unwrap();
        assert_eq!(s.index, "NYA");
        assert_eq!(s.date, NaiveDate::from_ymd_opt(2001, 1, 2).unwrap());
        assert_eq!((s.close, s.adj_close, s.volume), (1.5, Some(1.5), Some(12)));
        assert_eq!(parse(Some(&v("\"1.5\"", "null"))).unwrap().volume, None);
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            (v("null", "\"1\""), "Close is null"),
            (v("\"abc\"", "\"1\""), "Close `abc` is not a number"),
            (v("\"NaN\"", "\"1\""), "Close `NaN` is not a finite number"),
            (
                v("\"1\"", "\"12.5\""),
                "Volume `12.5` is not a whole number",
            ),
            (v("\"1\"", "\"x\""), "Volume `x` is not a whole number"),
            (
                v("\"1\"", "\"1\"").replace("2001-01-02", "19-Sep-03"),
                "Date `19-Sep-03` is not a yyyy-MM-dd date",
            ),
            (
                v("\"1\"", "\"1\"").replace("\"NYA\"", "null"),
                "Index is empty or null",
            ),
            (
                v("\"1\"", "\"1\"").replace("\"NYA\"", "\"\""),
                "Index is empty or null",
            ),
            ("[1]".to_string(), "value is not a JSON object"),
            (v("\"1\"", "\"-5\""), "Volume `-5` is negative"),
            (
                v("\"1\"", "\"1e19\""),
                "Volume `1e19` is not a whole number",
            ),
            (
                v("\"1\"", "\"99999999999999\""),
                "Volume `99999999999999` is absurd (above 10000000000000)",
            ),
            (v("\"inf\"", "\"1\""), "Close `inf` is not a finite number"),
            (v("5", "\"1\""), "Close is 5, not text"),
            (v("{\"a\":1}", "\"1\""), "Close is {\"a\":1}, not text"),
            (v("\"1\"", "true"), "Volume is true, not text"),
        ];
        for (value, reason) in cases {
            assert_eq!(parse(Some(&value)).unwrap_err(), reason, "{value}");
        }
        assert_eq!(parse(None).unwrap_err(), "value is null");
        // An Index too long to name close_price_silver's partition folder.
        let long = v("\"1\"", "\"1\"").replace("NYA", &"X".repeat(300));
        let err = parse(Some(&long)).unwrap_err();
        assert!(err.starts_with("Index is 300 bytes long"), "{err}");
        let fits = v("\"1\"", "\"1\"").replace("NYA", &"X".repeat(200));
        assert!(parse(Some(&fits)).is_ok());
        // Escaped text is unescaped; members medallion does not read are skipped.
        let escaped =
            v("\"1.5\"", "\"1\"").replace("\"NYA\"", r#""N\u0059A","Extra":[1,{"x":null}]"#);
        assert_eq!(parse(Some(&escaped)).unwrap().index, "NYA");
        assert!(parse(Some("{"))
            .unwrap_err()
            .starts_with("value is not JSON"));
    }
}
