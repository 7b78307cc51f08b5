//! A daily stock-index record: a bronze `value` parsed into typed columns.
//!
//! Every Silver table starts here, so the quarantine rule is written once: a record with
//! an empty or `null` `Index`, an unparseable `Date`, a `null` or unparseable `Close`, or
//! any number that does not parse (or is NaN or infinite) is rejected with a reason.

use chrono::NaiveDate;
use serde_json::{Map, Value};

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

/// Parses a bronze `value` (a JSON object of field texts). `Err` holds the reason.
pub fn parse(value: Option<&str>) -> Result<Stock, String> {
    let value = value.ok_or("value is null")?;
    let object: Map<String, Value> = match serde_json::from_str(value) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err("value is not a JSON object".into()),
        Err(e) => return Err(format!("value is not JSON: {e}")),
    };
    let index = text(&object, "Index")?
        .filter(|s| !s.trim().is_empty())
        .ok_or("Index is empty or null")?
        .to_string();
    let date_text = text(&object, "Date")?.ok_or("Date is null")?;
    let date = NaiveDate::parse_from_str(date_text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("Date `{date_text}` is not a yyyy-MM-dd date"))?;
    let close = number(&object, "Close")?.ok_or("Close is null")?;
    Ok(Stock {
        index,
        date,
        open: number(&object, "Open")?,
        high: number(&object, "High")?,
        low: number(&object, "Low")?,
        close,
        adj_close: number(&object, "Adj Close")?,
        volume: volume(&object)?,
    })
}

/// A member as text: `None` for a missing member, JSON `null` or the text `null`.
fn text<'a>(object: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "null" || s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{name} is {other}, not text")),
    }
}

fn number(object: &Map<String, Value>, name: &str) -> Result<Option<f64>, String> {
    let Some(t) = text(object, name)? else {
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
fn volume(object: &Map<String, Value>) -> Result<Option<i64>, String> {
    match whole_number(object, "Volume")? {
        Some(v) if v < 0 => Err(format!("Volume `{v}` is negative")),
        Some(v) if v > MAX_VOLUME => Err(format!("Volume `{v}` is absurd (above {MAX_VOLUME})")),
        v => Ok(v),
    }
}

/// A whole number, written as `12` or `12.0`.
fn whole_number(object: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    let Some(t) = text(object, name)? else {
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
        ];
        for (value, reason) in cases {
            assert_eq!(parse(Some(&value)).unwrap_err(), reason, "{value}");
        }
        assert_eq!(parse(None).unwrap_err(), "value is null");
        assert!(parse(Some("{"))
            .unwrap_err()
            .starts_with("value is not JSON"));
    }
}
