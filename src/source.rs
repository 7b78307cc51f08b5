//! The streaming file source: CSV landing files, read row by row.
//!
//! Like Spark's file source, it lists `*.csv` and `*.csv.gz` files under the landing
//! folder in lexicographic order of their path, and reads each one in line order. A row
//! becomes either a [`Row::Record`], ready to become a Kafka message, or a
//! [`Row::Rejected`] with the reason it can never be one. Nothing is dropped silently.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

/// The header columns every landing file must have.
pub const REQUIRED_COLUMNS: &[&str] = &[
    "Index",
    "Date",
    "Open",
    "High",
    "Low",
    "Close",
    "Adj Close",
    "Volume",
];

/// The column whose value becomes the Kafka message key.
pub const KEY_COLUMN: &str = "Index";

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The same mark after a Latin-1 round trip (`ï»¿`), as the real Kaggle `indexData.csv`
/// starts: a header `ï»¿Index` still means `Index`.
const MOJIBAKE_BOM: &[u8] = b"\xC3\xAF\xC2\xBB\xC2\xBF";

/// Errors listing or opening landing files.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the landing folder {path} does not exist. Create it and put CSV files in it, or set landing_dir in the bundle (`medallion generate --out {path}` writes sample files)")]
    Missing { path: PathBuf },
    #[error("cannot list the landing folder {path}: {source}. Create it, or set landing_dir in the bundle")]
    List {
        path: PathBuf,
        source: walkdir::Error,
    },
    #[error("cannot open landing file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A file found in the landing folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandingFile {
    pub path: PathBuf,
    /// The path relative to the landing folder, with `/` separators: the file's identity.
    pub name: String,
    pub size: u64,
    /// Modification time, in milliseconds since the Unix epoch.
    pub modified_ms: i64,
}

/// Lists every `*.csv` and `*.csv.gz` file under `dir`, sorted by relative path.
/// Hidden files and folders (a leading `.`) are skipped: writers use them for partial files.
pub fn discover(dir: &Path) -> Result<Vec<LandingFile>, SourceError> {
    if !dir.is_dir() {
        return Err(SourceError::Missing { path: dir.into() });
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|source| SourceError::List {
            path: dir.into(),
            source,
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let lower = entry.file_name().to_string_lossy().to_lowercase();
        if !(lower.ends_with(".csv") || lower.ends_with(".csv.gz")) {
            continue;
        }
        let meta = entry.metadata().map_err(|source| SourceError::List {
            path: entry.path().into(),
            source,
        })?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let name = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        files.push(LandingFile {
            path: entry.path().into(),
            name,
            size: meta.len(),
            modified_ms,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// One data row of a landing file.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// A row that becomes a Kafka message.
    Record {
        line: u64,
        /// The `Index` value, or `None` when it is empty or `null`.
        key: Option<String>,
        /// A JSON object: one member per header name, the field's text or `null`.
        value: String,
    },
    /// A row that goes to quarantine instead. A file whose header makes every row
    /// unusable (a missing required column, say) is rejected once, as one `Rejected`
    /// holding the header line with `lines` set to the number of data lines it stands
    /// for, so that `data lines = Kafka records + quarantined lines` still holds.
    Rejected {
        line: u64,
        raw: String,
        reason: String,
        lines: u64,
    },
}

/// Records the byte offset of every `\n` that passes through, so that a record's line
/// number can be derived from its byte offset. (csv-core counts lines too, but a CRLF
/// record starts at the `\n` of the previous line end, which makes its count one low.)
struct NewlineIndex<R> {
    inner: R,
    offset: u64,
    newlines: Arc<Mutex<VecDeque<u64>>>,
}

impl<R: Read> Read for NewlineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut newlines = self.newlines.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                newlines.push_back(self.offset + i as u64);
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Reads a landing file's rows in line order.
pub struct CsvRows {
    reader: csv::Reader<Box<dyn Read + Send>>,
    /// Offsets of newlines not yet passed by a record, and the count of those passed.
    newlines: Arc<Mutex<VecDeque<u64>>>,
    lines_passed: u64,
    header: Option<Vec<String>>,
    /// Why the whole file is rejected (bad header), if it is.
    file_reason: Option<String>,
    /// The header line as read, for a whole-file rejection.
    header_raw: String,
    key_index: Option<usize>,
    record: csv::ByteRecord,
    /// A row to return before reading on (the header could not be read).
    pending: Option<Row>,
    done: bool,
}

impl CsvRows {
    /// Opens a `.csv` or `.csv.gz` file and reads its header.
    pub fn open(file: &LandingFile) -> Result<Self, SourceError> {
        let f = File::open(&file.path).map_err(|source| SourceError::Open {
            path: file.path.clone(),
            source,
        })?;
        let inner: Box<dyn Read + Send> = if file.name.to_lowercase().ends_with(".gz") {
            Box::new(crate::gzip::SalvagingGzReader::new(file.path.clone(), f))
        } else {
            Box::new(f)
        };
        Ok(Self::from_reader(inner))
    }

    /// Reads rows from any byte stream (used by tests and by [`CsvRows::open`]).
    pub fn from_reader(inner: Box<dyn Read + Send>) -> Self {
        let newlines = Arc::new(Mutex::new(VecDeque::new()));
        let inner: Box<dyn Read + Send> = Box::new(NewlineIndex {
            inner,
            offset: 0,
            newlines: newlines.clone(),
        });
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(1 << 20)
            .from_reader(inner);
        let mut rows = CsvRows {
            reader,
            newlines,
            lines_passed: 0,
            header: None,
            file_reason: None,
            header_raw: String::new(),
            key_index: None,
            record: csv::ByteRecord::new(),
            pending: None,
            done: false,
        };
        rows.read_header();
        rows
    }

    fn read_header(&mut self) {
        let mut header = csv::ByteRecord::new();
        match self.reader.read_byte_record(&mut header) {
            Ok(false) => {
                self.done = true;
                return;
            }
            Err(e) => {
                // Nothing of the file can be read (a corrupt .gz, say): one quarantine row
                // says so, rather than a file that silently has no rows.
                self.pending = Some(Row::Rejected {
                    line: 1,
                    raw: String::new(),
                    reason: format!("file unreadable from this line on: {e}"),
                    lines: 1,
                });
                self.done = true;
                return;
            }
            Ok(true) => {}
        }
        self.header_raw = raw_text(&header);
        let mut names = Vec::with_capacity(header.len());
        for (i, field) in header.iter().enumerate() {
            let field = if i == 0 {
                field
                    .strip_prefix(BOM)
                    .or_else(|| field.strip_prefix(MOJIBAKE_BOM))
                    .unwrap_or(field)
            } else {
                field
            };
            match std::str::from_utf8(field) {
                Ok(name) => names.push(name.trim().to_string()),
                Err(_) => {
                    self.file_reason = Some(format!("header column {} is not valid UTF-8", i + 1));
                    return;
                }
            }
        }
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|c| !names.iter().any(|n| n == c))
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        let duplicated: Vec<&str> = names
            .iter()
            .filter(|n| !seen.insert(n.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            // The header itself is the quarantine row's `raw` text.
            self.file_reason = Some(format!(
                "file header lacks required column(s) {}",
                missing.join(", ")
            ));
        } else if !duplicated.is_empty() {
            self.file_reason = Some(format!(
                "file header repeats column(s) {}",
                duplicated.join(", ")
            ));
        }
        self.key_index = names.iter().position(|n| n == KEY_COLUMN);
        self.header = Some(names);
    }

    /// The header names, once read (with the byte-order mark removed).
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// The next data row, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Option<Row> {
        if let Some(row) = self.pending.take() {
            return Some(row);
        }
        if self.done {
            return None;
        }
        if let Some(reason) = self.file_reason.take() {
            return Some(self.reject_file(reason));
        }
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                // An I/O or decompression error: the rest of the file cannot be read.
                // Report it once, at the line reached, and stop.
                self.done = true;
                let start = e
                    .position()
                    .map(|p| p.byte())
                    .unwrap_or_else(|| self.reader.position().byte());
                let line = self.line_at(start);
                Some(Row::Rejected {
                    line,
                    raw: String::new(),
                    reason: format!("file unreadable from this line on: {e}"),
                    lines: 1,
                })
            }
            Ok(true) => {
                let start = self.record.position().map_or(0, |p| p.byte());
                let line = self.line_at(start);
                Some(self.classify(line))
            }
        }
    }

    /// Rejects the whole file once: reads its records only to count them, and returns
    /// one row holding the header line, standing for every data line.
    fn reject_file(&mut self, mut reason: String) -> Row {
        self.done = true;
        let mut lines = 0u64;
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(true) => lines += 1,
                Ok(false) => break,
                Err(e) => {
                    // Counted as one more line: what follows cannot be read at all.
                    lines += 1;
                    reason.push_str(&format!(
                        "; the file is also unreadable after {lines} data line(s): {e}"
                    ));
                    break;
                }
            }
        }
        Row::Rejected {
            line: 1,
            raw: std::mem::take(&mut self.header_raw),
            reason: format!("{reason}; the whole file is quarantined ({lines} data line(s))"),
            lines,
        }
    }

    /// The 1-based line holding byte `start`: one plus the newlines before it, where a
    /// newline at `start` itself (a CRLF record's start) also counts.
    fn line_at(&mut self, start: u64) -> u64 {
        let mut newlines = self.newlines.lock().unwrap_or_else(|e| e.into_inner());
        while newlines.front().is_some_and(|&o| o <= start) {
            newlines.pop_front();
            self.lines_passed += 1;
        }
        self.lines_passed + 1
    }

    fn classify(&self, line: u64) -> Row {
        let record = &self.record;
        let reject = |reason: String| Row::Rejected {
            line,
            raw: raw_text(record),
            lines: 1,
            reason,
        };
        let header = self.header.as_ref().expect("header read before rows");
        if record.len() != header.len() {
            return reject(format!(
                "expected {} fields, found {}",
                header.len(),
                record.len()
            ));
        }
        let mut value = String::with_capacity(record.as_slice().len() + 16 * header.len());
        value.push('{');
        let mut key = None;
        for (i, (name, field)) in header.iter().zip(record.iter()).enumerate() {
            let text = match std::str::from_utf8(field) {
                Ok(t) => t,
                Err(_) => {
                    return reject(format!("field `{name}` is not valid UTF-8"));
                }
            };
            if i > 0 {
                value.push(',');
            }
            push_json_string(&mut value, name);
            value.push(':');
            if text.is_empty() || text == "null" {
                value.push_str("null");
            } else {
                push_json_string(&mut value, text);
                if Some(i) == self.key_index {
                    key = Some(text.to_string());
                }
            }
        }
        value.push('}');
        Row::Record { line, key, value }
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("strings serialize"));
    }
}

/// The row as CSV text again (quoted where needed), for the quarantine table.
fn raw_text(record: &csv::ByteRecord) -> String {
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let bytes = writer
        .write_byte_record(record)
        .ok()
        .and_then(|_| writer.into_inner().ok())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &[u8]) -> (Option<Vec<String>>, Vec<Row>) {
        let mut r = CsvRows::from_reader(Box::new(std::io::Cursor::new(text.to_vec())));
        let mut out = Vec::new();
        while let Some(row) = r.next_row() {
            out.push(row);
        }
        (r.header().map(|h| h.to_vec()), out)
    }

    const HEADER: &str = "Index,Date,Open,High,Low,Close,Adj Close,Volume";

    #[test]
    fn bom_crlf_null_and_quotes() {
        let text = format!(
            "\u{feff}{HEADER}\r\nNYA,1965-12-31,528.69,528.69,528.69,528.69,528.69,0\r\n\"HS,I\",1987-01-01,null,null,,null,null,null\r\n\"X\",\"2000-01-\r\n03\",1,2,3,4,5,6\r\n"
        );
        let (header, rows) = rows(text.as_bytes());
        assert_eq!(header.unwrap()[0], "Index");
        assert_eq!(
            rows[0],
            Row::Record {
                line: 2,
                key: Some("NYA".into()),
                value: r#"{"Index":"NYA","Date":"1965-12-31","Open":"528.69","High":"528.69","Low":"528.69","Close":"528.69","Adj Close":"528.69","Volume":"0"}"#.into()
            }
        );
        let Row::Record { line, key, value } = &rows[1] else {
            panic!()
        };
        assert_eq!((*line, key.as_deref()), (3, Some("HS,I")));
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        assert!(v["Open"].is_null() && v["Low"].is_null());
        let Row::Record { line, value, .. } = &rows[2] else {
            panic!()
        };
        assert_eq!(*line, 4);
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(v["Date"], "2000-01-\r\n03");
    }

    #[test]
    fn a_double_encoded_byte_order_mark_is_removed_too() {
        let text = format!(
            "\u{c3}\u{af}\u{c2}\u{bb}\u{c2}\u{bf}{HEADER}\r\nNYA,2000-01-03,1,2,0.5,1.5,1.5,10\r\n"
        );
        // Written as UTF-8 bytes C3 AF C2 BB C2 BF, as in the real indexData.csv.
        let bytes: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
        let (header, rows) = rows(&bytes);
        assert_eq!(header.unwrap()[0], "Index");
        assert!(matches!(&rows[0], Row::Record { key: Some(k), line: 2, .. } if k == "NYA"));
    }

    #[test]
    fn columns_map_by_name_in_any_order() {
        let text = "Volume,Adj Close,Close,Low,High,Open,Date,Index,Extra\n1,2,3,4,5,6,2001-01-01,IXIC,x\n";
        let (_, rows) = rows(text.as_bytes());
        let Row::Record { key, value, .. } = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(key.as_deref(), Some("IXIC"));
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(v["Close"], "3");
        assert_eq!(v["Extra"], "x");
    }

    #[test]
    fn bad_rows_are_rejected_with_reasons() {
        let mut text = format!("{HEADER}\nNYA,2000-01-03,1,2,3,4\nNYA,2000-01-04,1,2,3,4,5,6,7\n")
            .into_bytes();
        text.extend_from_slice(b"NYA,2000-01-05,\xff,2,3,4,5,6\nNYA,2000-01-06,1,2,3,4,5,6\n");
        let (_, rows) = rows(&text);
        assert_eq!(rows.len(), 4);
        let reasons: Vec<String> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Rejected { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(reasons[0], "expected 8 fields, found 6");
        assert_eq!(reasons[1], "expected 8 fields, found 9");
        assert_eq!(reasons[2], "field `Open` is not valid UTF-8");
        assert!(matches!(rows[3], Row::Record { line: 5, .. }));
        let Row::Rejected { raw, .. } = &rows[0] else {
            panic!()
        };
        assert_eq!(raw, "NYA,2000-01-03,1,2,3,4");
    }

    #[test]
    fn a_file_without_close_is_rejected_once_for_all_its_lines() {
        let text = "Index,Date,Open,High,Low,Adj Close,Volume\nNYA,2000-01-03,1,2,3,5,6\nNYA,2000-01-04,1,2,3,5,6\n";
        let (_, got) = rows(text.as_bytes());
        assert_eq!(
            got,
            vec![Row::Rejected {
                line: 1,
                raw: "Index,Date,Open,High,Low,Adj Close,Volume".into(),
                reason: "file header lacks required column(s) Close; the whole file is quarantined (2 data line(s))".into(),
                lines: 2,
            }]
        );
        // A header-only file with a bad header is still reported, for no lines.
        let (_, got) = rows(b"Index,Date\r\n");
        assert!(
            matches!(&got[..], [Row::Rejected { lines: 0, .. }]),
            "{got:?}"
        );
    }

    #[test]
    fn a_file_unreadable_from_its_start_is_one_rejected_row() {
        // A gzip stream cut short: the decoder fails before the header.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            format!("{HEADER}\nNYA,2000-01-03,1,2,3,4,5,6\n").as_bytes(),
        )
        .unwrap();
        let bytes = gz.finish().unwrap();
        let cut = bytes[..12].to_vec();
        let mut r = CsvRows::from_reader(Box::new(flate2::read::MultiGzDecoder::new(
            std::io::Cursor::new(cut),
        )));
        let row = r.next_row().unwrap();
        assert!(
            matches!(&row, Row::Rejected { line: 1, reason, .. } if reason.starts_with("file unreadable from this line on")),
            "{row:?}"
        );
        assert!(r.next_row().is_none());
    }

    #[test]
    fn empty_and_header_only_files_have_no_rows() {
        assert!(rows(b"").1.is_empty());
        assert!(rows(HEADER.as_bytes()).1.is_empty());
    }

    #[test]
    fn discovery_is_lexicographic_and_skips_hidden_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.csv",
            "a/z.csv.gz",
            "a/y.CSV",
            ".hidden.csv",
            "notes.txt",
            ".tmp/x.csv",
        ] {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let names: Vec<String> = discover(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a/y.CSV", "a/z.csv.gz", "b.csv"]);
        assert!(discover(&dir.path().join("missing")).is_err());
    }
}
