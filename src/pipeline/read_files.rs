//! The `read_files` source: the files under a folder, read as Arrow record batches.
//!
//! [`list`] finds the files of a format (`*.gz` decompressed), [`output_schema`] tells the
//! columns, and a [`FileReader`] reads one file in [`Chunk`]s of at most `max_rows`
//! records. Every input record ends up in exactly one place: a row of a chunk's batch, or a
//! [`Reject`] with its line, raw text and reason. Memory stays bounded whatever the input:
//! a line past `max_line_bytes` is measured and dropped as it is read, never held whole.
//!
//! Columns are built as text first, then cast to the schema's types with Arrow's cast
//! kernel; a row with a value that does not cast is rejected, naming the column, the value
//! and the type, and the good rows of its chunk stay.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int64Array, StringArray, StringBuilder,
    StructArray, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::{can_cast_types, cast_with_options, filter, CastOptions};
use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use deltalake::parquet::arrow::ProjectionMask;

use crate::pipeline::types;
#[cfg(test)]
use crate::quarantine::RAW_KEEP_BYTES;
use crate::source::{
    self, CsvFormat, CsvRows, Discovery, Fields as CsvFields, LandingFile, LineLimits, Row,
    SourceError,
};

/// The options `read_files` knows, for error messages.
pub const KNOWN_OPTIONS: &str = "format, header, delimiter (or sep), nullValue, schema, \
     pathGlobFilter, stableMs, maxLineBytes, maxFields, inferSchema (only 'false')";

/// How many lines of the first JSON file [`output_schema`] reads for the keys.
pub const JSON_SCHEMA_LINES: usize = 1000;

/// A text chunk also ends once the text of its rows and rejects reaches this many bytes, so
/// that a chunk of `max_rows` long lines stays small.
pub const CHUNK_TEXT_BYTES: usize = 32 << 20;

/// The rows a Parquet file is decoded in; chunks are slices of these.
const PARQUET_BATCH_ROWS: usize = 8192;

/// A value in a reason is cut to this many characters.
const VALUE_IN_REASON_CHARS: usize = 64;

/// Errors of `read_files` options, listing and opening files.
#[derive(Debug, thiserror::Error)]
pub enum ReadFilesError {
    /// No `format` option.
    #[error("read_files needs the format of the files: add format => 'csv' | 'json' | 'parquet'")]
    MissingFormat,
    /// An option `read_files` does not know.
    #[error("read_files: unknown option `{key}`; the known options are {KNOWN_OPTIONS}")]
    UnknownOption { key: String },
    /// An option with a value it cannot take.
    #[error(
        "read_files: option {key} => '{value}': {reason} (the known options are {KNOWN_OPTIONS})"
    )]
    BadOption {
        key: String,
        value: String,
        reason: String,
    },
    /// The folder does not exist.
    #[error("read_files: the folder {path} does not exist; create it, or correct the path")]
    MissingFolder { path: PathBuf },
    /// No schema was given and no file has columns to take.
    #[error(
        "read_files: {why} in {path}, so there are no columns to read; pass schema => 'a STRING, b DOUBLE' or put a {format} file there"
    )]
    NoSchema {
        path: PathBuf,
        format: Format,
        why: String,
    },
    /// No schema was given and the first file's columns cannot be read.
    #[error(
        "read_files: cannot take the columns from {path}: {reason}; fix or remove the file, or pass schema => 'a STRING, ...'"
    )]
    SchemaFromFile { path: PathBuf, reason: String },
    /// A listed file cannot be opened (or is no longer a regular file).
    #[error(
        "read_files: cannot open {path}: {source}; check that it is a regular file that can be read"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A schema type that text cannot be cast to.
    #[error(
        "read_files: column `{column}` is {data_type}, which cannot be read from {format} text; use one of {}",
        types::SUPPORTED_TYPES
    )]
    UnsupportedType {
        column: String,
        data_type: String,
        format: Format,
    },
}

impl From<SourceError> for ReadFilesError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Missing { path } => ReadFilesError::MissingFolder { path },
            SourceError::Open { path, source } => ReadFilesError::Open { path, source },
        }
    }
}

/// The format of the files `read_files` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV: `*.csv`, `*.tsv`, `*.txt`, and the same with `.gz`.
    Csv,
    /// JSON Lines, one object per line: `*.json`, `*.jsonl`, `*.ndjson`, and with `.gz`.
    Json,
    /// Parquet: `*.parquet`.
    Parquet,
}

impl Format {
    /// Whether a file of this name (its last component) is one of this format's files.
    pub fn accepts(self, file_name: &str) -> bool {
        let lower = file_name.to_lowercase();
        let exts: &[&str] = match self {
            Format::Csv => &[".csv", ".tsv", ".txt"],
            Format::Json => &[".json", ".jsonl", ".ndjson"],
            Format::Parquet => return lower.ends_with(".parquet"),
        };
        let plain = lower.strip_suffix(".gz").unwrap_or(&lower);
        exts.iter().any(|ext| plain.ends_with(ext))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Parquet => "parquet",
        })
    }
}

/// The options of a `read_files(path, ...)` call.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadFilesOptions {
    /// The files' format, which also chooses the files (see [`Format`]).
    pub format: Format,
    /// CSV: whether each file's first line names its columns (default true).
    pub header: bool,
    /// CSV: the field delimiter (default `,`).
    pub delimiter: u8,
    /// CSV: a field with this text is NULL (as an empty field always is).
    pub null_value: Option<String>,
    /// The columns and their types; without it, [`output_schema`] takes them from a file.
    pub schema: Option<SchemaRef>,
    /// Only files whose name matches this glob (`*`, `?`, `[a-z]`, `[!x]`, `{a,b}`, `\`
    /// escapes), as Spark's `pathGlobFilter`.
    pub path_glob_filter: Option<String>,
    /// Under `STREAM`: how long a file's size and time must be stable before it is read.
    pub stable_ms: u64,
    /// Bounds on one line (text formats).
    pub limits: LineLimits,
}

impl ReadFilesOptions {
    /// The defaults, for files of `format`.
    pub fn new(format: Format) -> Self {
        ReadFilesOptions {
            format,
            header: true,
            delimiter: b',',
            null_value: None,
            schema: None,
            path_glob_filter: None,
            stable_ms: 500,
            limits: LineLimits::default(),
        }
    }

    /// The options of a call, from its named arguments (`key => 'value'`; keys are
    /// case-insensitive). `format` is required.
    pub fn from_sql(options: &BTreeMap<String, String>) -> Result<Self, ReadFilesError> {
        let mut given: BTreeMap<&'static str, (&str, &str)> = BTreeMap::new();
        for (key, value) in options {
            let canonical = match key.to_ascii_lowercase().as_str() {
                "format" => "format",
                "header" => "header",
                "delimiter" | "sep" => "delimiter",
                "nullvalue" => "nullValue",
                "schema" => "schema",
                "pathglobfilter" => "pathGlobFilter",
                "stablems" => "stableMs",
                "maxlinebytes" => "maxLineBytes",
                "maxfields" => "maxFields",
                "inferschema" => "inferSchema",
                _ => return Err(ReadFilesError::UnknownOption { key: key.clone() }),
            };
            if let Some((first, _)) = given.insert(canonical, (key, value)) {
                return Err(ReadFilesError::BadOption {
                    key: key.clone(),
                    value: value.clone(),
                    reason: format!("the option is given twice (also as {first})"),
                });
            }
        }
        let bad = |key: &str, value: &str, reason: String| ReadFilesError::BadOption {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };
        let Some(&(key, value)) = given.get("format") else {
            return Err(ReadFilesError::MissingFormat);
        };
        let format = match value.to_ascii_lowercase().as_str() {
            "csv" => Format::Csv,
            "json" => Format::Json,
            "parquet" => Format::Parquet,
            _ => {
                return Err(bad(
                    key,
                    value,
                    "the format must be 'csv', 'json' or 'parquet'".into(),
                ))
            }
        };
        let mut opts = ReadFilesOptions::new(format);
        for (canonical, (key, value)) in given {
            let bad = |reason: String| bad(key, value, reason);
            let number = |min: u64| match value.trim().parse::<u64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(bad(format!("must be a whole number, at least {min}"))),
            };
            match canonical {
                "header" => {
                    opts.header =
                        parse_bool(value).ok_or_else(|| bad("must be 'true' or 'false'".into()))?;
                }
                "delimiter" => opts.delimiter = parse_delimiter(value).map_err(bad)?,
                "nullValue" => opts.null_value = Some(value.to_string()),
                "schema" => opts.schema = Some(types::parse_schema(value).map_err(bad)?),
                "pathGlobFilter" => {
                    Glob::new(value).map_err(bad)?;
                    opts.path_glob_filter = Some(value.to_string());
                }
                "stableMs" => opts.stable_ms = number(0)?,
                "maxLineBytes" => opts.limits.max_line_bytes = number(source::MIN_MAX_LINE_BYTES)?,
                "maxFields" => opts.limits.max_fields = number(source::MIN_MAX_FIELDS)?,
                "inferSchema" if parse_bool(value) != Some(false) => {
                    return Err(bad(
                        "only 'false' is supported: every column is a STRING unless you pass schema => 'a STRING, b DOUBLE'"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(opts)
    }

    fn csv_format(&self) -> CsvFormat {
        CsvFormat {
            delimiter: self.delimiter,
            has_header: self.header,
            required: Vec::new(),
            key: None,
        }
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn parse_delimiter(value: &str) -> Result<u8, String> {
    let byte = match value.as_bytes() {
        b"\\t" => b'\t',
        [b] if b.is_ascii() && !matches!(b, b'"' | b'\r' | b'\n') => *b,
        _ => {
            return Err(
                "the delimiter must be one ASCII character other than `\"` or a line break (or '\\t' for a tab)"
                    .into(),
            )
        }
    };
    Ok(byte)
}

/// One element of a glob pattern.
#[derive(Debug, Clone)]
enum GlobToken {
    Char(char),
    /// `?`
    Any,
    /// `*`
    Star,
    /// `[...]`: ranges of characters, or all but them with `[!...]` or `[^...]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl GlobToken {
    fn matches(&self, c: char) -> bool {
        match self {
            GlobToken::Char(x) => *x == c,
            GlobToken::Any => true,
            GlobToken::Star => false,
            GlobToken::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

/// A file-name glob, as Hadoop's `GlobFilter` reads one: `*`, `?`, `[a-z]`, `[!a]`, `{a,b}`
/// and `\` escapes.
#[derive(Debug, Clone)]
struct Glob {
    /// One token list per alternative of the `{a,b}` groups.
    alternatives: Vec<Vec<GlobToken>>,
}

/// The most `{a,b}` groups a pattern may have.
const GLOB_MAX_GROUPS: usize = 32;
/// The most alternatives `{a,b}` groups may expand to.
const GLOB_MAX_ALTERNATIVES: usize = 1024;

impl Glob {
    fn new(pattern: &str) -> Result<Glob, String> {
        let chars: Vec<char> = pattern.chars().collect();
        if chars.iter().filter(|&&c| c == '{').count() > GLOB_MAX_GROUPS {
            return Err(format!(
                "the pattern has more than {GLOB_MAX_GROUPS} `{{a,b}}` groups"
            ));
        }
        let alternatives = expand_braces(&chars)?
            .iter()
            .map(|p| glob_tokens(p))
            .collect::<Result<_, _>>()?;
        Ok(Glob { alternatives })
    }

    fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        self.alternatives.iter().any(|t| glob_match(t, &name))
    }
}

/// The patterns a pattern's first `{a,b}` group stands for, expanded recursively.
fn expand_braces(p: &[char]) -> Result<Vec<Vec<char>>, String> {
    let mut i = 0;
    let mut open = None;
    while i < p.len() {
        match p[i] {
            '\\' => i += 1,
            '{' => {
                open = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let Some(open) = open else {
        return Ok(vec![p.to_vec()]);
    };
    // The matching `}` and the top-level commas between.
    let (mut depth, mut commas, mut close) = (0usize, vec![open], None);
    let mut i = open + 1;
    while i < p.len() {
        match p[i] {
            '\\' => i += 1,
            '{' => depth += 1,
            '}' if depth == 0 => {
                close = Some(i);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => commas.push(i),
            _ => {}
        }
        i += 1;
    }
    let Some(close) = close else {
        return Err(format!(
            "the `{{` at character {} is never closed",
            open + 1
        ));
    };
    commas.push(close);
    let mut out = Vec::new();
    for w in commas.windows(2) {
        let mut q = p[..open].to_vec();
        q.extend_from_slice(&p[w[0] + 1..w[1]]);
        q.extend_from_slice(&p[close + 1..]);
        out.extend(expand_braces(&q)?);
        if out.len() > GLOB_MAX_ALTERNATIVES {
            return Err(format!(
                "the `{{a,b}}` groups stand for more than {GLOB_MAX_ALTERNATIVES} patterns"
            ));
        }
    }
    Ok(out)
}

fn glob_tokens(p: &[char]) -> Result<Vec<GlobToken>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        i += 1;
        out.push(match c {
            '\\' => match p.get(i) {
                Some(&e) => {
                    i += 1;
                    GlobToken::Char(e)
                }
                None => return Err("the pattern ends with a lone `\\`".into()),
            },
            '*' => GlobToken::Star,
            '?' => GlobToken::Any,
            '[' => {
                let negated = matches!(p.get(i), Some('!' | '^'));
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(&lo) = p.get(i) else {
                        return Err("a `[` is never closed with `]`".into());
                    };
                    i += 1;
                    if lo == ']' && !first {
                        break;
                    }
                    first = false;
                    let lo = if lo == '\\' {
                        let e = p.get(i).copied().ok_or("a `[` is never closed with `]`")?;
                        i += 1;
                        e
                    } else {
                        lo
                    };
                    if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&c| c != ']') {
                        let hi = p[i + 1];
                        i += 2;
                        ranges.push((lo, hi));
                    } else {
                        ranges.push((lo, lo));
                    }
                }
                GlobToken::Class { negated, ranges }
            }
            c => GlobToken::Char(c),
        });
    }
    Ok(out)
}

fn glob_match(tokens: &[GlobToken], name: &[char]) -> bool {
    let (mut t, mut n) = (0, 0);
    // Where the last `*` was, and how much of the name it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(GlobToken::Star) => {
                star = Some((t, n));
                t += 1;
            }
            Some(token) if token.matches(name[n]) => {
                t += 1;
                n += 1;
            }
            _ => match star {
                Some((st, sn)) => {
                    t = st + 1;
                    n = sn + 1;
                    star = Some((st, sn + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t.min(tokens.len())..]
        .iter()
        .all(|t| matches!(t, GlobToken::Star))
}

/// The files of `opts.format` under `dir`, as [`source::discover`] lists landing files:
/// regular files only, links never followed, hidden entries skipped, sorted by path, and
/// entries that cannot be listed skipped with a note. With `pathGlobFilter`, only the
/// files whose name matches it.
pub fn list(dir: &Path, opts: &ReadFilesOptions) -> Result<Discovery, ReadFilesError> {
    let glob = match &opts.path_glob_filter {
        Some(pattern) => Some(
            Glob::new(pattern).map_err(|reason| ReadFilesError::BadOption {
                key: "pathGlobFilter".into(),
                value: pattern.clone(),
                reason,
            })?,
        ),
        None => None,
    };
    let format = opts.format;
    Ok(source::discover_matching(dir, |name| {
        format.accepts(name) && glob.as_ref().is_none_or(|g| g.matches(name))
    })?)
}

fn metadata_fields() -> Fields {
    Fields::from(vec![
        Field::new("file_path", DataType::Utf8, false),
        Field::new("file_name", DataType::Utf8, false),
        Field::new("file_size", DataType::Int64, false),
        Field::new("file_modification_time", types::timestamp_utc(), false),
        Field::new("line", DataType::Int64, true),
        Field::new("row", DataType::Int64, false),
    ])
}

/// The `_metadata` column: a struct of `file_path` (relative to the folder), `file_name`,
/// `file_size`, `file_modification_time`, `line` (the record's first line in a text file;
/// NULL for Parquet) and `row` (the record's 0-based number in its file: every record
/// counts, rejected ones too, blank lines not).
pub fn metadata_field() -> Field {
    Field::new("_metadata", DataType::Struct(metadata_fields()), true)
}

/// The columns of a CSV header: its names, `_c<i>` for an empty one.
fn column_names(header: &[String]) -> Vec<String> {
    header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if name.is_empty() {
                format!("_c{i}")
            } else {
                name.clone()
            }
        })
        .collect()
}

fn strings_schema(names: impl IntoIterator<Item = String>) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .into_iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// The columns the source yields, without `_metadata`: `opts.schema` if given, else taken
/// from the first file that has any (empty files are passed over): CSV, its header (or
/// `_c0, _c1, ...` for its first line's fields with `header => false`), every column a
/// STRING; JSON, the keys of its first 1,000 lines in order of first appearance, every
/// column a STRING; Parquet, its schema, every column nullable. Reads headers, first lines
/// and footers only.
pub fn output_schema(
    dir: &Path,
    files: &[LandingFile],
    opts: &ReadFilesOptions,
) -> Result<SchemaRef, ReadFilesError> {
    if let Some(schema) = &opts.schema {
        return Ok(schema.clone());
    }
    let no_schema = |why: &str| ReadFilesError::NoSchema {
        path: dir.into(),
        format: opts.format,
        why: why.into(),
    };
    if files.is_empty() {
        return Err(no_schema(&format!("there is no {} file", opts.format)));
    }
    let from_file = |file: &LandingFile, reason: String| ReadFilesError::SchemaFromFile {
        path: file.path.clone(),
        reason,
    };
    for file in files {
        match opts.format {
            Format::Csv => {
                let mut rows = CsvRows::open_with(file, opts.limits, opts.csv_format())?;
                if let Some(reason) = rows.rejected_because() {
                    return Err(from_file(file, reason.to_string()));
                }
                if opts.header {
                    if let Some(header) = rows.header() {
                        return Ok(strings_schema(column_names(header)));
                    }
                    continue;
                }
                match rows.next_fields() {
                    Some(CsvFields::Record { fields, .. }) => {
                        return Ok(strings_schema((0..fields.len()).map(|i| format!("_c{i}"))))
                    }
                    Some(CsvFields::Rejected(Row::Rejected { line, reason, .. })) => {
                        return Err(from_file(file, format!("line {line}: {reason}")))
                    }
                    Some(CsvFields::Rejected(Row::Record { .. })) | None => continue,
                }
            }
            Format::Json => {
                let mut lines = JsonLines::new(source::open_text(file)?, opts.limits);
                let (mut names, mut seen) = (Vec::new(), HashSet::new());
                let mut read = 0;
                while read < JSON_SCHEMA_LINES {
                    let Some(line) = lines.next_line() else {
                        break;
                    };
                    read += 1;
                    if let JsonLine::Text { .. } = line {
                        if let Ok(object) = serde_json::from_slice::<JsonObject>(&lines.buf) {
                            for key in object.keys() {
                                if seen.insert(key.clone()) {
                                    names.push(key.clone());
                                }
                            }
                        }
                    }
                }
                if !names.is_empty() {
                    return Ok(strings_schema(names));
                }
            }
            Format::Parquet => {
                let f = source::open_file(file)?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(f)
                    .map_err(|e| from_file(file, format!("it is not a valid Parquet file: {e}")))?;
                let fields: Vec<Field> = builder
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect();
                return Ok(Arc::new(Schema::new(fields)));
            }
        }
    }
    Err(no_schema(match opts.format {
        Format::Csv => "every csv file is empty",
        Format::Json => "no json file has an object in its first 1,000 lines",
        Format::Parquet => "there is no parquet file",
    }))
}

/// An input record that is not a row: where it is, its text, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// Its first line in the file (text formats); 0 for Parquet, whose rows have no line.
    pub line: u64,
    /// Its text, cut to [`RAW_KEEP_BYTES`] (at a character boundary). A Parquet row is a
    /// JSON object of its values as text.
    pub raw: String,
    /// Its length in the file, in bytes (`raw` may hold only its start).
    pub raw_bytes: u64,
    /// Why it is not a row.
    pub reason: String,
    /// How many input records it stands for: 1, or all of a file's when the file is
    /// rejected whole (a bad header).
    pub lines: u64,
}

impl Reject {
    /// A reject whose `raw` is cut to [`RAW_KEEP_BYTES`].
    pub fn new(line: u64, mut raw: String, raw_bytes: u64, reason: String, lines: u64) -> Self {
        crate::quarantine::cut_raw(&mut raw);
        Reject {
            line,
            raw,
            raw_bytes,
            reason,
            lines,
        }
    }

    /// One line whose text is `raw`, whole.
    fn one(line: u64, raw: String, reason: String) -> Self {
        let bytes = raw.len() as u64;
        Reject::new(line, raw, bytes, reason, 1)
    }

    fn of_row(row: Row) -> Option<Self> {
        match row {
            Row::Rejected {
                line,
                raw,
                raw_bytes,
                reason,
                lines,
            } => Some(Reject::new(line, raw, raw_bytes, reason, lines)),
            Row::Record { .. } => None,
        }
    }
}

/// Part of a file: up to `max_rows` records, as rows or rejects.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The rows: the schema's columns, then `_metadata`.
    pub batch: RecordBatch,
    /// The records that are not rows, in line order.
    pub rejects: Vec<Reject>,
    /// The input records this chunk accounts for: the batch's rows plus each reject's
    /// `lines`. Blank lines are not records.
    pub lines: u64,
}

/// What a reader knows of its file and schema.
struct Context {
    schema: SchemaRef,
    /// `schema` and `_metadata`.
    out_schema: SchemaRef,
    path: String,
    name: String,
    size: i64,
    modified_us: i64,
    null_value: Option<String>,
}

enum Source {
    Csv {
        rows: Box<CsvRows>,
        /// For each schema column, its field in the file's records.
        fields: Vec<Option<usize>>,
        /// Without a header: the width every record must have.
        width: Option<usize>,
    },
    Json(JsonLines),
    Parquet {
        reader: ParquetRecordBatchReader,
        /// The file's rows, from its footer.
        total: u64,
        /// A decoded batch not yet handed over whole, and how much of it was.
        pending: Option<(RecordBatch, usize)>,
        /// Whether the file could not be decoded on (the rest of it is rejected).
        failed: bool,
    },
    /// The file is rejected whole.
    Rejected(Option<Reject>),
}

/// Reads one file in [`Chunk`]s.
pub struct FileReader {
    context: Context,
    source: Source,
    /// The `row` of the next record.
    next_row: u64,
    done: bool,
}

impl FileReader {
    /// Opens `file` (never through a link, `*.gz` decompressed) to read it as `schema`
    /// (without `_metadata`). A file that cannot be parsed at all is not an error: its
    /// first chunk holds the reject.
    pub fn open(
        file: &LandingFile,
        schema: SchemaRef,
        opts: &ReadFilesOptions,
    ) -> Result<FileReader, ReadFilesError> {
        if opts.format != Format::Parquet {
            for field in schema.fields() {
                if !can_cast_types(&DataType::Utf8, field.data_type()) {
                    return Err(ReadFilesError::UnsupportedType {
                        column: field.name().clone(),
                        data_type: types::sql_name(field.data_type()),
                        format: opts.format,
                    });
                }
            }
        }
        let mut out_fields: Vec<Field> =
            schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        out_fields.push(metadata_field());
        let context = Context {
            out_schema: Arc::new(Schema::new(out_fields)),
            path: file.name.clone(),
            name: file
                .name
                .rsplit('/')
                .next()
                .unwrap_or(&file.name)
                .to_string(),
            size: i64::try_from(file.size).unwrap_or(i64::MAX),
            modified_us: file.modified_ms.saturating_mul(1000),
            null_value: opts.null_value.clone(),
            schema,
        };
        let source = match opts.format {
            Format::Csv => {
                let rows = CsvRows::open_with(file, opts.limits, opts.csv_format())?;
                let (fields, width) = if opts.header {
                    let names = column_names(rows.header().unwrap_or_default());
                    let fields = (context.schema.fields().iter())
                        .map(|f| names.iter().position(|n| n == f.name()))
                        .collect();
                    (fields, None)
                } else {
                    let n = context.schema.fields().len();
                    ((0..n).map(Some).collect(), Some(n))
                };
                Source::Csv {
                    rows: Box::new(rows),
                    fields,
                    width,
                }
            }
            Format::Json => Source::Json(JsonLines::new(source::open_text(file)?, opts.limits)),
            Format::Parquet => open_parquet(source::open_file(file)?, &context.schema),
        };
        Ok(FileReader {
            context,
            source,
            next_row: 0,
            done: false,
        })
    }

    /// The schema of the chunks' batches: the columns, then `_metadata`.
    pub fn schema(&self) -> SchemaRef {
        self.context.out_schema.clone()
    }

    /// The next records of the file, at most `max_rows` of them (rows and rejects; fewer
    /// once their text reaches [`CHUNK_TEXT_BYTES`]), or `None` at its end.
    pub fn next_chunk(&mut self, max_rows: usize) -> Option<Chunk> {
        if self.done {
            return None;
        }
        let max_rows = max_rows.max(1);
        let chunk = match &mut self.source {
            Source::Csv {
                rows,
                fields,
                width,
            } => csv_chunk(
                &self.context,
                rows,
                fields,
                *width,
                &mut self.next_row,
                max_rows,
            ),
            Source::Json(lines) => json_chunk(&self.context, lines, &mut self.next_row, max_rows),
            Source::Parquet {
                reader,
                total,
                pending,
                failed,
            } => {
                if *failed {
                    None
                } else {
                    parquet_chunk(
                        &self.context,
                        reader,
                        *total,
                        pending,
                        failed,
                        &mut self.next_row,
                        max_rows,
                    )
                }
            }
            Source::Rejected(reject) => reject.take().map(|r| Chunk {
                batch: RecordBatch::new_empty(self.context.out_schema.clone()),
                lines: r.lines,
                rejects: vec![r],
            }),
        };
        if chunk.is_none() {
            self.done = true;
        }
        chunk
    }
}

fn open_parquet(file: std::fs::File, schema: &SchemaRef) -> Source {
    let whole_file = |reason: String, lines: u64| {
        Source::Rejected(Some(Reject::new(0, String::new(), 0, reason, lines)))
    };
    let builder = match ParquetRecordBatchReaderBuilder::try_new(file) {
        Ok(builder) => builder,
        Err(e) => return whole_file(format!("not a valid Parquet file: {e}"), 1),
    };
    let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let file_schema = builder.schema().clone();
    let mut roots = Vec::new();
    for field in schema.fields() {
        if let Some((i, found)) = file_schema.column_with_name(field.name()) {
            if !can_cast_types(found.data_type(), field.data_type()) {
                return whole_file(
                    format!(
                        "column `{}` is {} in the file, which cannot be read as {}; the whole file is quarantined ({total} row(s))",
                        field.name(),
                        found.data_type(),
                        types::sql_name(field.data_type())
                    ),
                    total,
                );
            }
            roots.push(i);
        }
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    match builder
        .with_projection(mask)
        .with_batch_size(PARQUET_BATCH_ROWS)
        .build()
    {
        Ok(reader) => Source::Parquet {
            reader,
            total,
            pending: None,
            failed: false,
        },
        Err(e) => whole_file(
            format!("the Parquet file cannot be read: {e}; the whole file is quarantined ({total} row(s))"),
            total.max(1),
        ),
    }
}

/// The raw text of the rows of a text chunk: their fields' bytes, kept only until the
/// chunk's rows are typed (a row that fails is rejected with it).
#[derive(Debug, Default)]
struct RawStore {
    bytes: Vec<u8>,
    field_ends: Vec<usize>,
    row_ends: Vec<usize>,
}

impl RawStore {
    fn push<'a>(&mut self, fields: impl IntoIterator<Item = &'a [u8]>) {
        for f in fields {
            self.bytes.extend_from_slice(f);
            self.field_ends.push(self.bytes.len());
        }
        self.row_ends.push(self.field_ends.len());
    }

    /// The fields of row `row`.
    fn fields(&self, row: usize) -> Vec<&[u8]> {
        let first = if row == 0 {
            0
        } else {
            self.row_ends.get(row - 1).copied().unwrap_or(0)
        };
        let last = self.row_ends.get(row).copied().unwrap_or(first);
        (first..last)
            .filter_map(|i| {
                let start = if i == 0 { 0 } else { self.field_ends[i - 1] };
                self.bytes.get(start..self.field_ends[i])
            })
            .collect()
    }
}

/// A text chunk being read: the columns as text, with each row's line and number.
struct TextRows {
    columns: Vec<StringBuilder>,
    lines: Vec<Option<i64>>,
    rows: Vec<i64>,
    raw: RawStore,
    rejects: Vec<Reject>,
    /// The text the rejects hold.
    reject_bytes: usize,
    /// Rows and rejects so far.
    records: usize,
}

impl TextRows {
    fn new(columns: usize) -> Self {
        TextRows {
            columns: (0..columns).map(|_| StringBuilder::new()).collect(),
            lines: Vec::new(),
            rows: Vec::new(),
            raw: RawStore::default(),
            rejects: Vec::new(),
            reject_bytes: 0,
            records: 0,
        }
    }

    fn full(&self, max_rows: usize) -> bool {
        self.records >= max_rows || self.raw.bytes.len() + self.reject_bytes >= CHUNK_TEXT_BYTES
    }

    fn reject(&mut self, reject: Reject, next_row: &mut u64) {
        *next_row += reject.lines;
        self.records += 1;
        self.reject_bytes += reject.raw.len() + reject.reason.len();
        self.rejects.push(reject);
    }

    /// Types the rows; `raw` gives a failing row's text and length from its fields.
    fn finish(self, context: &Context, raw: impl Fn(&[&[u8]]) -> (String, u64)) -> Option<Chunk> {
        if self.records == 0 {
            return None;
        }
        let inputs: Vec<ArrayRef> = (self.columns.into_iter())
            .map(|mut b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let store = self.raw;
        Some(conform(
            context,
            inputs,
            self.lines,
            self.rows,
            self.rejects,
            |j| raw(&store.fields(j)),
        ))
    }
}

fn csv_chunk(
    context: &Context,
    rows: &mut CsvRows,
    fields: &[Option<usize>],
    width: Option<usize>,
    next_row: &mut u64,
    max_rows: usize,
) -> Option<Chunk> {
    let mut acc = TextRows::new(fields.len());
    let null_value = context.null_value.as_deref().map(str::as_bytes);
    while !acc.full(max_rows) {
        let record = match rows.next_fields() {
            None => break,
            Some(CsvFields::Rejected(row)) => {
                if let Some(reject) = Reject::of_row(row) {
                    acc.reject(reject, next_row);
                }
                continue;
            }
            Some(CsvFields::Record { line, fields }) => (line, fields),
        };
        let (line, record) = record;
        if let Some(width) = width.filter(|w| *w != record.len()) {
            let reason = format!("expected {width} fields, found {}", record.len());
            acc.reject(
                Reject::one(line, source::raw_text(record), reason),
                next_row,
            );
            continue;
        }
        let not_utf8 = fields.iter().enumerate().find(|(_, at)| {
            at.and_then(|at| record.get(at))
                .is_some_and(|f| std::str::from_utf8(f).is_err())
        });
        if let Some((i, _)) = not_utf8 {
            let name = context.schema.field(i).name();
            let reason = format!("field `{name}` is not valid UTF-8");
            acc.reject(
                Reject::one(line, source::raw_text(record), reason),
                next_row,
            );
            continue;
        }
        for (builder, at) in acc.columns.iter_mut().zip(fields) {
            let text = at
                .and_then(|at| record.get(at))
                .filter(|f| !f.is_empty() && Some(*f) != null_value)
                .and_then(|f| std::str::from_utf8(f).ok());
            builder.append_option(text);
        }
        acc.raw.push(record.iter());
        acc.lines.push(Some(line as i64));
        acc.rows.push(*next_row as i64);
        *next_row += 1;
        acc.records += 1;
    }
    acc.finish(context, |fields| {
        let mut record = csv::ByteRecord::new();
        for f in fields {
            record.push_field(f);
        }
        let text = source::raw_text(&record);
        let bytes = text.len() as u64;
        (text, bytes)
    })
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// A JSON value as the text of a column of type `to`: strings as their text (an empty one
/// is NULL unless the column is a STRING), numbers and booleans as their JSON text, arrays
/// and objects as compact JSON, `null` as NULL.
fn json_text(value: Option<&serde_json::Value>, to: &DataType) -> Option<String> {
    use serde_json::Value;
    match value? {
        Value::Null => None,
        Value::String(s) if s.is_empty() && *to != DataType::Utf8 => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        v @ (Value::Array(_) | Value::Object(_)) => serde_json::to_string(v).ok(),
    }
}

fn json_chunk(
    context: &Context,
    lines: &mut JsonLines,
    next_row: &mut u64,
    max_rows: usize,
) -> Option<Chunk> {
    let mut acc = TextRows::new(context.schema.fields().len());
    while !acc.full(max_rows) {
        let Some(next) = lines.next_line() else {
            break;
        };
        let text = &lines.buf;
        let raw = || String::from_utf8_lossy(text).into_owned();
        match next {
            JsonLine::Failed { line, error } => {
                let reason = format!("file unreadable from this line on: {error}");
                acc.reject(Reject::one(line, String::new(), reason), next_row);
            }
            JsonLine::TooLong { line, bytes } => {
                let reason = format!(
                    "the line is {bytes} bytes long, above max_line_bytes ({})",
                    lines.max
                );
                acc.reject(Reject::new(line, raw(), bytes, reason, 1), next_row);
            }
            JsonLine::Text { line } => match serde_json::from_slice::<JsonObject>(text) {
                Err(e) => acc.reject(Reject::one(line, raw(), e.to_string()), next_row),
                Ok(object) => {
                    for (builder, field) in acc.columns.iter_mut().zip(context.schema.fields()) {
                        builder
                            .append_option(json_text(object.get(field.name()), field.data_type()));
                    }
                    acc.raw.push([text.as_slice()]);
                    acc.lines.push(Some(line as i64));
                    acc.rows.push(*next_row as i64);
                    *next_row += 1;
                    acc.records += 1;
                }
            },
        }
    }
    acc.finish(context, |fields| {
        let text: String = fields.iter().map(|f| String::from_utf8_lossy(f)).collect();
        let bytes = fields.iter().map(|f| f.len() as u64).sum();
        (text, bytes)
    })
}

fn parquet_chunk(
    context: &Context,
    reader: &mut ParquetRecordBatchReader,
    total: u64,
    pending: &mut Option<(RecordBatch, usize)>,
    failed: &mut bool,
    next_row: &mut u64,
    max_rows: usize,
) -> Option<Chunk> {
    loop {
        let (batch, offset) = match pending.take() {
            Some(p) => p,
            None => match reader.next()? {
                Ok(batch) => (batch, 0),
                Err(e) => {
                    // The rest of the file cannot be decoded: one reject for its rows.
                    let rest = total.saturating_sub(*next_row).max(1);
                    let reason = format!(
                        "row {}: file unreadable from this row on ({rest} row(s)): {e}",
                        *next_row
                    );
                    *next_row += rest;
                    let reject = Reject::new(0, String::new(), 0, reason, rest);
                    // Ends the file: the reader is not asked again.
                    *failed = true;
                    return Some(Chunk {
                        batch: RecordBatch::new_empty(context.out_schema.clone()),
                        lines: rest,
                        rejects: vec![reject],
                    });
                }
            },
        };
        let n = max_rows.min(batch.num_rows().saturating_sub(offset));
        if offset + n < batch.num_rows() {
            *pending = Some((batch.clone(), offset + n));
        }
        if n == 0 {
            continue;
        }
        let slice = batch.slice(offset, n);
        let inputs: Vec<ArrayRef> = (context.schema.fields().iter())
            .map(|f| {
                slice
                    .column_by_name(f.name())
                    .cloned()
                    .unwrap_or_else(|| new_null_array(f.data_type(), n))
            })
            .collect();
        let first = *next_row as i64;
        *next_row += n as u64;
        let rows: Vec<i64> = (first..first + n as i64).collect();
        let options = FormatOptions::default();
        let formatters: Vec<_> = (slice.columns().iter())
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        let names: Vec<String> = (slice.schema().fields().iter())
            .map(|f| f.name().clone())
            .collect();
        let raw = |j: usize| {
            let mut object = JsonObject::new();
            for ((name, column), formatter) in names.iter().zip(slice.columns()).zip(&formatters) {
                let value = match formatter {
                    Some(f) if column.is_valid(j) => {
                        serde_json::Value::String(f.value(j).to_string())
                    }
                    _ => serde_json::Value::Null,
                };
                object.insert(name.clone(), value);
            }
            let text = serde_json::Value::Object(object).to_string();
            let bytes = text.len() as u64;
            (text, bytes)
        };
        return Some(conform(
            context,
            inputs,
            vec![None; n],
            rows,
            Vec::new(),
            raw,
        ));
    }
}

/// `'value'`, cut to [`VALUE_IN_REASON_CHARS`] characters.
fn quoted(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(VALUE_IN_REASON_CHARS).collect();
    if chars.next().is_some() {
        format!("'{head}...'")
    } else {
        format!("'{head}'")
    }
}

/// Casts a chunk's columns to the schema's types and rejects the rows where a value does
/// not cast or a NOT NULL column is NULL; builds the batch of the others with `_metadata`.
/// `rejects` are the chunk's earlier rejects; `raw` gives a row's text and length.
fn conform(
    context: &Context,
    inputs: Vec<ArrayRef>,
    mut lines: Vec<Option<i64>>,
    mut rows: Vec<i64>,
    mut rejects: Vec<Reject>,
    raw: impl Fn(usize) -> (String, u64),
) -> Chunk {
    let n = rows.len();
    let mut why: Vec<Option<String>> = vec![None; n];
    let mut columns = Vec::with_capacity(inputs.len());
    let options = CastOptions::default();
    for (field, input) in context.schema.fields().iter().zip(inputs) {
        let name = field.name();
        let type_name = || types::sql_name(field.data_type());
        let output = if input.data_type() == field.data_type() {
            input.clone()
        } else {
            match cast_with_options(&input, field.data_type(), &options) {
                Ok(output) => output,
                Err(e) => {
                    for (j, w) in why.iter_mut().enumerate() {
                        if w.is_none() && input.is_valid(j) {
                            *w = Some(format!(
                                "column `{name}`: cannot be read as {}: {e}",
                                type_name()
                            ));
                        }
                    }
                    new_null_array(field.data_type(), n)
                }
            }
        };
        let failed = output.null_count() > input.null_count();
        if failed || (!field.is_nullable() && output.null_count() > 0) {
            let format_options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(input.as_ref(), &format_options).ok();
            for (j, w) in why.iter_mut().enumerate() {
                if w.is_some() || output.is_valid(j) {
                    continue;
                }
                if input.is_valid(j) {
                    let value = formatter
                        .as_ref()
                        .map_or_else(String::new, |f| f.value(j).to_string());
                    *w = Some(format!(
                        "column `{name}`: {} is not a {}",
                        quoted(&value),
                        type_name()
                    ));
                } else if !field.is_nullable() {
                    *w = Some(format!(
                        "column `{name}` is NULL, but the schema says it is NOT NULL"
                    ));
                }
            }
        }
        columns.push(output);
    }
    if why.iter().any(Option::is_some) {
        let keep = BooleanArray::from(why.iter().map(Option::is_none).collect::<Vec<_>>());
        for (j, w) in why.iter().enumerate() {
            if let Some(reason) = w {
                let (text, bytes) = raw(j);
                let (line, reason) = match lines[j] {
                    Some(line) => (line as u64, reason.clone()),
                    None => (0, format!("row {}: {reason}", rows[j])),
                };
                rejects.push(Reject::new(line, text, bytes, reason, 1));
            }
        }
        let mut filtered = Vec::with_capacity(columns.len());
        for column in &columns {
            match filter(column, &keep) {
                Ok(c) => filtered.push(c),
                // Not expected: every column has the mask's length.
                Err(_) => filtered.push(new_null_array(column.data_type(), 0)),
            }
        }
        columns = filtered;
        let mut j = 0;
        lines.retain(|_| {
            j += 1;
            why[j - 1].is_none()
        });
        let mut j = 0;
        rows.retain(|_| {
            j += 1;
            why[j - 1].is_none()
        });
    }
    rejects.sort_by_key(|r| r.line);
    columns.push(metadata_array(context, lines, rows));
    let batch = match RecordBatch::try_new(context.out_schema.clone(), columns) {
        Ok(batch) => batch,
        Err(e) => {
            // Not expected; if it happens, the rows are accounted for as rejects.
            tracing::error!("read_files: {}: cannot build a batch: {e}", context.path);
            RecordBatch::new_empty(context.out_schema.clone())
        }
    };
    let lines = batch.num_rows() as u64 + rejects.iter().map(|r| r.lines).sum::<u64>();
    Chunk {
        batch,
        rejects,
        lines,
    }
}

fn metadata_array(context: &Context, lines: Vec<Option<i64>>, rows: Vec<i64>) -> ArrayRef {
    let n = rows.len();
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            context.path.as_str(),
            n,
        ))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            context.name.as_str(),
            n,
        ))),
        Arc::new(Int64Array::from_value(context.size, n)),
        Arc::new(
            TimestampMicrosecondArray::from_value(context.modified_us, n).with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from(lines)),
        Arc::new(Int64Array::from(rows)),
    ];
    Arc::new(StructArray::new(metadata_fields(), arrays, None))
}

/// One line of a JSON Lines file, its text in [`JsonLines::buf`].
#[derive(Debug)]
enum JsonLine {
    /// A line within the limits (its `\r\n` or `\n` removed).
    Text { line: u64 },
    /// A line past `max_line_bytes`: `buf` holds its first `max_line_bytes` bytes.
    TooLong { line: u64, bytes: u64 },
    /// The file cannot be read on from this line.
    Failed { line: u64, error: std::io::Error },
}

/// The lines of a JSON Lines file, each held only up to `max_line_bytes` (the rest of a
/// longer line is counted and dropped as it is read). Blank lines are skipped.
struct JsonLines {
    inner: BufReader<Box<dyn Read + Send>>,
    max: u64,
    /// Line breaks read so far.
    newlines: u64,
    buf: Vec<u8>,
    done: bool,
}

impl JsonLines {
    fn new(inner: Box<dyn Read + Send>, limits: LineLimits) -> Self {
        JsonLines {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max: limits.max_line_bytes,
            newlines: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    fn next_line(&mut self) -> Option<JsonLine> {
        // Kept: up to max bytes, and one more for a `\r` before the `\n`.
        let keep = usize::try_from(self.max)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        loop {
            if self.done {
                return None;
            }
            self.buf.clear();
            let line = self.newlines + 1;
            let mut total = 0u64;
            let mut last = 0u8;
            loop {
                let chunk = match self.inner.fill_buf() {
                    Ok(chunk) => chunk,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        self.done = true;
                        return Some(JsonLine::Failed { line, error });
                    }
                };
                if chunk.is_empty() {
                    self.done = true;
                    break;
                }
                let end = chunk.iter().position(|&b| b == b'\n');
                let part = &chunk[..end.unwrap_or(chunk.len())];
                let room = keep.saturating_sub(self.buf.len()).min(part.len());
                self.buf.extend_from_slice(&part[..room]);
                total += part.len() as u64;
                if let Some(&b) = part.last() {
                    last = b;
                }
                let used = part.len() + usize::from(end.is_some());
                self.inner.consume(used);
                if end.is_some() {
                    self.newlines += 1;
                    break;
                }
            }
            let bytes = total - u64::from(last == b'\r');
            if bytes > self.max {
                self.buf.truncate(keep - 1);
                return Some(JsonLine::TooLong { line, bytes });
            }
            if last == b'\r' {
                self.buf.pop();
            }
            if line == 1 {
                let bom = self.buf.len() - source::strip_bom(&self.buf).len();
                self.buf.drain(..bom);
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(JsonLine::Text { line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::AsArray;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> LandingFile {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        LandingFile {
            path,
            name: name.to_string(),
            size: bytes.len() as u64,
            modified_ms: 1_700_000_000_000,
        }
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn opts(format: Format) -> ReadFilesOptions {
        ReadFilesOptions::new(format)
    }

    fn with_schema(format: Format, schema: &str) -> ReadFilesOptions {
        ReadFilesOptions {
            schema: Some(types::parse_schema(schema).unwrap()),
            ..opts(format)
        }
    }

    /// Everything a file yields: its batches, its rejects, and the lines they account for.
    struct Read {
        batches: Vec<RecordBatch>,
        rejects: Vec<Reject>,
        lines: u64,
        chunks: usize,
    }

    impl Read {
        fn rows(&self) -> usize {
            self.batches.iter().map(|b| b.num_rows()).sum()
        }

        /// A column as text (NULL as None), over every batch.
        fn column(&self, name: &str) -> Vec<Option<String>> {
            let mut out = Vec::new();
            for b in &self.batches {
                let c = b.column_by_name(name).unwrap();
                let c = cast_with_options(c, &DataType::Utf8, &CastOptions::default()).unwrap();
                out.extend(c.as_string::<i32>().iter().map(|v| v.map(str::to_string)));
            }
            out
        }

        /// A `_metadata` member as i64s.
        fn meta(&self, member: &str) -> Vec<Option<i64>> {
            let mut out = Vec::new();
            for b in &self.batches {
                let m = b.column_by_name("_metadata").unwrap().as_struct();
                let c = m.column_by_name(member).unwrap();
                let c = cast_with_options(c, &DataType::Int64, &CastOptions::default()).unwrap();
                out.extend(
                    c.as_primitive::<deltalake::arrow::datatypes::Int64Type>()
                        .iter(),
                );
            }
            out
        }

        fn reasons(&self) -> Vec<(u64, &str)> {
            self.rejects
                .iter()
                .map(|r| (r.line, r.reason.as_str()))
                .collect()
        }

        /// Every record is a row or a reject.
        fn assert_accounted(&self) {
            let rejected: u64 = self.rejects.iter().map(|r| r.lines).sum();
            assert_eq!(self.lines, self.rows() as u64 + rejected);
        }
    }

    fn read(file: &LandingFile, opts: &ReadFilesOptions, max_rows: usize) -> Read {
        let dir = file.path.parent().unwrap();
        let schema = output_schema(dir, std::slice::from_ref(file), opts).unwrap();
        let mut reader = FileReader::open(file, schema, opts).unwrap();
        let mut out = Read {
            batches: Vec::new(),
            rejects: Vec::new(),
            lines: 0,
            chunks: 0,
        };
        while let Some(chunk) = reader.next_chunk(max_rows) {
            assert!(chunk.batch.num_rows() + chunk.rejects.len() <= max_rows);
            assert_eq!(chunk.batch.schema(), reader.schema());
            let rejected: u64 = chunk.rejects.iter().map(|r| r.lines).sum();
            assert_eq!(chunk.lines, chunk.batch.num_rows() as u64 + rejected);
            out.lines += chunk.lines;
            out.chunks += 1;
            out.batches.push(chunk.batch);
            out.rejects.extend(chunk.rejects);
        }
        assert!(reader.next_chunk(max_rows).is_none());
        out.assert_accounted();
        out
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn csv_quoted_delimiters_line_breaks_and_quotes_with_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text = "id,text,n\r\n1,\"a, b\",x\r\n2,\"line1\nline2\",y\n3,\"say \"\"hi\"\"\",z\n\n4,plain,w";
        let file = write(dir.path(), "sub/a.csv", text.as_bytes());
        let got = read(&file, &opts(Format::Csv), 2);
        assert_eq!(got.chunks, 2);
        assert_eq!(got.rows(), 4);
        assert!(got.rejects.is_empty());
        assert_eq!(
            got.column("text"),
            [s("a, b"), s("line1\nline2"), s("say \"hi\""), s("plain")]
        );
        assert_eq!(got.meta("line"), [Some(2), Some(3), Some(5), Some(7)]);
        assert_eq!(got.meta("row"), [Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(got.meta("file_size"), vec![Some(text.len() as i64); 4]);
        assert_eq!(
            got.meta("file_modification_time")[0],
            Some(1_700_000_000_000_000)
        );
        let m = got.batches[0]
            .column_by_name("_metadata")
            .unwrap()
            .as_struct();
        assert_eq!(m.column(0).as_string::<i32>().value(0), "sub/a.csv");
        assert_eq!(m.column(1).as_string::<i32>().value(0), "a.csv");
        assert_eq!(got.lines, 4);
    }

    #[test]
    fn csv_header_maps_by_name_missing_is_null_extra_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let o = with_schema(Format::Csv, "b STRING, z STRING, a INT");
        let f1 = write(dir.path(), "1.csv", b"a,b,extra\n1,x,e\n");
        let f2 = write(dir.path(), "2.csv", b"\xEF\xBB\xBFextra,b,a\ne,y,2\n");
        let got = read(&f1, &o, 10);
        assert_eq!(got.column("b"), [s("x")]);
        assert_eq!(got.column("z"), [None]);
        assert_eq!(got.column("a"), [s("1")]);
        assert_eq!(
            got.batches[0].schema().field(2).data_type(),
            &DataType::Int32
        );
        let got = read(&f2, &o, 10);
        assert_eq!(
            (got.column("b"), got.column("a")),
            (vec![s("y")], vec![s("2")])
        );
        // Without a header: by position, `_c<i>` names.
        let o = ReadFilesOptions {
            header: false,
            ..opts(Format::Csv)
        };
        let f3 = write(dir.path(), "3.csv", b"\xEF\xBB\xBFp,q\nr,s\n");
        let got = read(&f3, &o, 10);
        assert_eq!(got.column("_c0"), [s("p"), s("r")]);
        assert_eq!(got.column("_c1"), [s("q"), s("s")]);
        assert_eq!(got.meta("line"), [Some(1), Some(2)]);
    }

    #[test]
    fn csv_null_value_and_empty_fields_are_null() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "a.csv", b"a,b,c\nNA,,\"\"\nx,NA2,y\n");
        let o = ReadFilesOptions {
            null_value: Some("NA".into()),
            ..opts(Format::Csv)
        };
        let got = read(&f, &o, 10);
        assert_eq!(got.column("a"), [None, s("x")]);
        assert_eq!(got.column("b"), [None, s("NA2")]);
        assert_eq!(got.column("c"), [None, s("y")]);
    }

    #[test]
    fn csv_wrong_field_counts_are_quarantined_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "a.csv",
            b"a,b\n1,2\n1,2,3\n4\n5,6\n7,\xff\n8,9\n",
        );
        let got = read(&f, &opts(Format::Csv), 3);
        assert_eq!(got.column("a"), [s("1"), s("5"), s("8")]);
        assert_eq!(
            got.reasons(),
            [
                (3, "expected 2 fields, found 3"),
                (4, "expected 2 fields, found 1"),
                (6, "field `b` is not valid UTF-8"),
            ]
        );
        assert_eq!(got.rejects[0].raw, "1,2,3");
        // Rejected records keep their row numbers.
        assert_eq!(got.meta("row"), [Some(0), Some(3), Some(5)]);
        assert_eq!(got.lines, 6);
        // Without a header, the schema's width is the one expected.
        let o = ReadFilesOptions {
            header: false,
            ..with_schema(Format::Csv, "x INT, y INT")
        };
        let got = read(&f, &o, 100);
        assert_eq!(got.rows(), 3);
        assert_eq!(got.reasons()[0], (1, "column `x`: 'a' is not a INT"));
        assert_eq!(got.reasons()[1], (3, "expected 2 fields, found 3"));
    }

    #[test]
    fn csv_other_delimiters() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "a.tsv", b"a\tb\n\"1\t2\"\t3\n");
        let o = ReadFilesOptions {
            delimiter: b'\t',
            ..opts(Format::Csv)
        };
        let got = read(&f, &o, 10);
        assert_eq!(got.column("a"), [s("1\t2")]);
        assert_eq!(got.column("b"), [s("3")]);
        // The guard counts the delimiter's fields, not commas.
        let f = write(
            dir.path(),
            "b.csv",
            format!("a;b\n1,2,3;4\n{}\n5;6\n", ";".repeat(100)).as_bytes(),
        );
        let o = ReadFilesOptions {
            delimiter: b';',
            limits: LineLimits {
                max_line_bytes: 1 << 20,
                max_fields: 10,
            },
            ..opts(Format::Csv)
        };
        let got = read(&f, &o, 10);
        assert_eq!(got.column("a"), [s("1,2,3"), s("5")]);
        assert_eq!(
            got.reasons(),
            [(3, "the line has 101 fields, above max_fields (10)")]
        );
    }

    #[test]
    fn typed_values_that_do_not_cast_are_rejected_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "a.csv",
            b"name,temp,day,at,ok,price\nx,1.5,2024-01-15,2024-01-15 10:00:00,true,1.25\ny,abc,2024-01-16,,false,2\nz,,2024-13-01,,,\nw,2,,2024-01-15T10:00:00Z,maybe,\n",
        );
        let o = with_schema(
            Format::Csv,
            "name STRING, temp DOUBLE, day DATE, at TIMESTAMP, ok BOOLEAN, price DECIMAL(10,2)",
        );
        let got = read(&f, &o, 10);
        assert_eq!(got.column("name"), [s("x")], "{:?}", got.reasons());
        assert_eq!(
            got.reasons(),
            [
                (3, "column `temp`: 'abc' is not a DOUBLE"),
                (4, "column `day`: '2024-13-01' is not a DATE"),
                (5, "column `ok`: 'maybe' is not a BOOLEAN"),
            ]
        );
        assert_eq!(got.rejects[0].raw, "y,abc,2024-01-16,,false,2");
        assert_eq!(got.rejects[0].raw_bytes, 25);
        let b = &got.batches[0];
        assert_eq!(
            b.column(1)
                .as_primitive::<deltalake::arrow::datatypes::Float64Type>()
                .value(0),
            1.5
        );
        assert_eq!(got.column("at"), [s("2024-01-15T10:00:00Z")]);
        assert_eq!(got.column("price"), [s("1.25")]);
        // NOT NULL.
        let o = with_schema(Format::Csv, "name STRING, temp DOUBLE NOT NULL");
        let got = read(&f, &o, 2);
        assert_eq!(got.column("name"), [s("x"), s("w")]);
        assert_eq!(
            got.reasons(),
            [
                (3, "column `temp`: 'abc' is not a DOUBLE"),
                (
                    4,
                    "column `temp` is NULL, but the schema says it is NOT NULL"
                ),
            ]
        );
        assert!(!got.batches[0].schema().field(1).is_nullable());
    }

    #[test]
    fn json_lines_with_nested_values_bad_lines_and_non_objects() {
        let dir = tempfile::tempdir().unwrap();
        let text = "\u{feff}{\"a\":1,\"b\":{\"x\":[1, 2]},\"c\":\"s\"}\n{bad\r\n[1,2]\n\n   \n{\"a\":null,\"c\":true,\"d\":1.5e3}\r\n{\"c\":\"\"}";
        let f = write(dir.path(), "a.jsonl", text.as_bytes());
        let got = read(&f, &opts(Format::Json), 10);
        assert_eq!(got.column("a"), [s("1"), None, None]);
        assert_eq!(got.column("b"), [s("{\"x\":[1,2]}"), None, None]);
        assert_eq!(got.column("c"), [s("s"), s("true"), s("")]);
        assert_eq!(got.column("d"), [None, s("1500.0"), None]);
        assert_eq!(got.meta("line"), [Some(1), Some(6), Some(7)]);
        let reasons = got.reasons();
        assert_eq!(reasons.len(), 2);
        assert_eq!(reasons[0].0, 2);
        assert!(reasons[0].1.contains("line 1 column"), "{reasons:?}");
        assert_eq!(reasons[1].0, 3);
        assert!(
            reasons[1]
                .1
                .starts_with("invalid type: sequence, expected a map"),
            "{reasons:?}"
        );
        assert_eq!(got.rejects[0].raw, "{bad");
        assert_eq!(got.lines, 5);
        // Typed: an empty string is NULL for a non-string column.
        let o = with_schema(Format::Json, "a INT, c BOOLEAN, d DOUBLE");
        let got = read(&f, &o, 10);
        assert_eq!(got.column("c"), [s("true"), None]);
        assert_eq!(got.reasons()[0], (1, "column `c`: 's' is not a BOOLEAN"));
    }

    #[test]
    fn gzipped_csv_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "a.csv.gz", &gz(b"a,b\n1,\"x\ny\"\n2,z\n"));
        let got = read(&f, &opts(Format::Csv), 10);
        assert_eq!(got.column("b"), [s("x\ny"), s("z")]);
        assert_eq!(got.meta("line"), [Some(2), Some(4)]);
        let f = write(dir.path(), "a.json.gz", &gz(b"{\"k\":\"v\"}\n{\"k\":2}\n"));
        let got = read(&f, &opts(Format::Json), 10);
        assert_eq!(got.column("k"), [s("v"), s("2")]);
    }

    #[test]
    fn a_broken_gzip_is_read_up_to_the_break_then_one_reject() {
        let dir = tempfile::tempdir().unwrap();
        for (name, format, line) in [
            ("a.csv.gz", Format::Csv, "a,b\n"),
            ("a.json.gz", Format::Json, ""),
        ] {
            let mut text = line.to_string();
            for i in 0..20_000 {
                if format == Format::Csv {
                    text.push_str(&format!("{i},x{i}\n"));
                } else {
                    text.push_str(&format!("{{\"a\":{i}}}\n"));
                }
            }
            let bytes = gz(text.as_bytes());
            let f = write(dir.path(), name, &bytes[..bytes.len() / 2]);
            let got = read(&f, &opts(format), 1000);
            let last = got.rejects.last().unwrap();
            assert!(
                last.reason.starts_with("file unreadable from this line on"),
                "{:?}",
                got.reasons()
            );
            assert!(got.rows() > 1000, "{}", got.rows());
        }
    }

    fn parquet_file(dir: &Path, name: &str, batch: &RecordBatch) -> LandingFile {
        let mut bytes = Vec::new();
        let mut w =
            deltalake::parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None)
                .unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        write(dir, name, &bytes)
    }

    #[test]
    fn parquet_is_read_in_slices_and_cast_to_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(deltalake::arrow::array::Int32Array::from(vec![
                    1, 2, 3, 4, 5,
                ])) as ArrayRef,
            ),
            (
                "temp",
                Arc::new(StringArray::from(vec![
                    Some("1.5"),
                    Some("bad"),
                    None,
                    Some("4"),
                    Some("5"),
                ])) as ArrayRef,
            ),
            (
                "extra",
                Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e"])) as ArrayRef,
            ),
        ])
        .unwrap();
        let f = parquet_file(dir.path(), "a.parquet", &batch);
        let o = with_schema(Format::Parquet, "id BIGINT, temp DOUBLE, missing STRING");
        let got = read(&f, &o, 2);
        assert_eq!(got.chunks, 3);
        assert_eq!(got.column("id"), [s("1"), s("3"), s("4"), s("5")]);
        assert_eq!(got.column("temp"), [s("1.5"), None, s("4.0"), s("5.0")]);
        assert_eq!(got.column("missing"), [None, None, None, None]);
        assert_eq!(got.meta("line"), [None, None, None, None]);
        assert_eq!(got.meta("row"), [Some(0), Some(2), Some(3), Some(4)]);
        assert_eq!(got.rejects.len(), 1);
        let r = &got.rejects[0];
        assert_eq!(
            (r.line, r.reason.as_str(), r.lines),
            (0, "row 1: column `temp`: 'bad' is not a DOUBLE", 1)
        );
        let raw: serde_json::Value = serde_json::from_str(&r.raw).unwrap();
        assert_eq!(raw, serde_json::json!({"id": "2", "temp": "bad"}));
        assert_eq!(
            got.batches[0].schema().field(0).data_type(),
            &DataType::Int64
        );
        // Its own schema, by default; none of the columns: rows of NULLs.
        let got = read(&f, &opts(Format::Parquet), 10);
        assert_eq!(got.column("extra").len(), 5);
        let got = read(&f, &with_schema(Format::Parquet, "nope INT"), 3);
        assert_eq!((got.rows(), got.column("nope")[0].clone()), (5, None));
        // A column that cannot become the schema's type: the whole file.
        let o = ReadFilesOptions {
            schema: Some(Arc::new(Schema::new(vec![Field::new(
                "id",
                DataType::Struct(vec![Field::new("x", DataType::Int32, true)].into()),
                true,
            )]))),
            ..opts(Format::Parquet)
        };
        let got = read(&f, &o, 3);
        assert_eq!(got.rows(), 0);
        assert_eq!(got.rejects.len(), 1);
        assert_eq!(got.rejects[0].lines, 5);
        assert!(got.rejects[0].reason.contains("column `id` is Int32"));
    }

    #[test]
    fn a_file_that_is_not_parquet_is_one_reject() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "a.parquet", b"not parquet at all");
        let o = with_schema(Format::Parquet, "a INT");
        let got = read(&f, &o, 10);
        assert_eq!(got.rows(), 0);
        assert_eq!(got.rejects.len(), 1);
        let r = &got.rejects[0];
        assert_eq!((r.line, r.lines, r.raw.as_str()), (0, 1, ""));
        assert!(r.reason.starts_with("not a valid Parquet file"), "{r:?}");
        let e = output_schema(dir.path(), &[f], &opts(Format::Parquet)).unwrap_err();
        assert!(e.to_string().contains("not a valid Parquet file"), "{e}");
    }

    #[test]
    fn list_chooses_by_format_and_glob_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a.csv",
            "b.tsv.gz",
            "c.json",
            "d/d.jsonl.gz",
            "e.parquet",
            "f.txt",
            "g.CSV",
            "h.ndjson",
            ".hidden.csv",
            "i.parquet.gz",
            "j.csv.bak",
        ] {
            write(dir.path(), name, b"x");
        }
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.csv", b"x");
        std::os::unix::fs::symlink(outside.path().join("secret.csv"), dir.path().join("k.csv"))
            .unwrap();
        let names = |o: &ReadFilesOptions| -> Vec<String> {
            list(dir.path(), o)
                .unwrap()
                .files
                .into_iter()
                .map(|f| f.name)
                .collect()
        };
        let found = list(dir.path(), &opts(Format::Csv)).unwrap();
        assert_eq!(found.skipped.len(), 1);
        assert!(found.skipped[0].starts_with("k.csv: skipped, it is a symbolic link"));
        assert_eq!(
            names(&opts(Format::Csv)),
            ["a.csv", "b.tsv.gz", "f.txt", "g.CSV"]
        );
        assert_eq!(
            names(&opts(Format::Json)),
            ["c.json", "d/d.jsonl.gz", "h.ndjson"]
        );
        assert_eq!(names(&opts(Format::Parquet)), ["e.parquet"]);
        let glob = |p: &str, format| ReadFilesOptions {
            path_glob_filter: Some(p.into()),
            ..opts(format)
        };
        assert_eq!(names(&glob("{a,f}.*", Format::Csv)), ["a.csv", "f.txt"]);
        assert_eq!(
            names(&glob("[!a]*", Format::Csv)),
            ["b.tsv.gz", "f.txt", "g.CSV"]
        );
        assert_eq!(
            names(&glob("*.json*", Format::Json)),
            ["c.json", "d/d.jsonl.gz"]
        );
        assert_eq!(names(&glob("?.csv", Format::Csv)), ["a.csv"]);
        assert!(matches!(
            list(&dir.path().join("nope"), &opts(Format::Csv)),
            Err(ReadFilesError::MissingFolder { .. })
        ));
        // A file replaced by a link after it was listed is not opened through it.
        let mut listed = list(dir.path(), &opts(Format::Csv)).unwrap().files[0].clone();
        listed.path = dir.path().join("k.csv");
        let schema = types::parse_schema("a STRING").unwrap();
        assert!(matches!(
            FileReader::open(&listed, schema, &opts(Format::Csv)),
            Err(ReadFilesError::Open { .. })
        ));
    }

    #[test]
    fn globs() {
        let m = |p: &str, name: &str| Glob::new(p).unwrap().matches(name);
        assert!(m("*", "anything"));
        assert!(m("*.csv", "a.csv") && !m("*.csv", "a.csv.gz"));
        assert!(m("a*b*c", "aXXbYYc") && !m("a*b*c", "aXXbYY"));
        assert!(m("[a-c]?.csv", "bz.csv") && !m("[a-c]?.csv", "dz.csv"));
        assert!(m("[^a]*", "b") && !m("[!a]*", "ab"));
        assert!(m("{x,y{1,2}}.csv", "y2.csv") && !m("{x,y{1,2}}.csv", "y3.csv"));
        assert!(m("a\\*", "a*") && !m("a\\*", "ab"));
        assert!(m("[]a]", "]"));
        for bad in ["{a,b", "[ab", "a\\"] {
            assert!(Glob::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn output_schema_of_each_format() {
        let dir = tempfile::tempdir().unwrap();
        let names = |s: SchemaRef| -> Vec<String> {
            assert!(s.fields().iter().all(|f| f.is_nullable()));
            s.fields().iter().map(|f| f.name().clone()).collect()
        };
        let empty = write(dir.path(), "0.csv", b"");
        let csv = write(dir.path(), "a.csv", b"\xEF\xBB\xBFx, y ,\n1,2,3\n");
        let o = opts(Format::Csv);
        let got = output_schema(dir.path(), &[empty.clone(), csv.clone()], &o).unwrap();
        assert_eq!(names(got.clone()), ["x", "y", "_c2"]);
        assert!(got
            .fields()
            .iter()
            .all(|f| f.data_type() == &DataType::Utf8));
        let o = ReadFilesOptions {
            header: false,
            ..opts(Format::Csv)
        };
        assert_eq!(
            names(output_schema(dir.path(), std::slice::from_ref(&csv), &o).unwrap()),
            ["_c0", "_c1", "_c2"]
        );
        let e = output_schema(dir.path(), &[empty], &o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("every csv file is empty") && e.contains("schema =>"),
            "{e}"
        );

        let json = write(
            dir.path(),
            "a.json",
            b"{\"b\":1,\"a\":2}\nnot json\n{\"c\":3,\"a\":4}\n",
        );
        assert_eq!(
            names(output_schema(dir.path(), &[json], &opts(Format::Json)).unwrap()),
            ["b", "a", "c"]
        );

        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let pq = parquet_file(dir.path(), "a.parquet", &batch);
        let got = output_schema(dir.path(), &[pq], &opts(Format::Parquet)).unwrap();
        assert_eq!(got.field(0).data_type(), &DataType::Int64);
        assert_eq!(names(got), ["n"]);

        let e = output_schema(dir.path(), &[], &opts(Format::Json))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("there is no json file") && e.contains("pass schema => '"),
            "{e}"
        );
        let o = with_schema(Format::Json, "q INT");
        assert_eq!(names(output_schema(dir.path(), &[], &o).unwrap()), ["q"]);
        // A header past the limits says so.
        let wide = write(
            dir.path(),
            "w.csv",
            format!("a{}\n", ",b".repeat(10)).as_bytes(),
        );
        let o = ReadFilesOptions {
            limits: LineLimits {
                max_line_bytes: 1 << 20,
                max_fields: 5,
            },
            ..opts(Format::Csv)
        };
        let e = output_schema(dir.path(), &[wide], &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("above max_fields (5)"), "{e}");
    }

    #[test]
    fn a_5_mb_line_is_rejected_with_its_length_and_memory_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LineLimits {
            max_line_bytes: 1 << 20,
            max_fields: 4096,
        };
        let long = "9".repeat(5_000_000);
        let csv = write(
            dir.path(),
            "a.csv",
            format!("a,b\n1,2\nx,{long}\n3,4\n").as_bytes(),
        );
        let json = write(
            dir.path(),
            "a.json",
            format!("{{\"a\":1}}\n{{\"a\":\"{long}\"}}\r\n{{\"a\":3}}\n").as_bytes(),
        );
        for (file, format, bytes) in [
            (csv, Format::Csv, long.len() + 2),
            (json, Format::Json, long.len() + 8),
        ] {
            let o = ReadFilesOptions {
                limits,
                ..opts(format)
            };
            let got = read(&file, &o, 10);
            assert_eq!(got.rows(), 2);
            assert_eq!(got.rejects.len(), 1);
            let r = &got.rejects[0];
            assert_eq!(
                (r.line, r.raw_bytes),
                (if format == Format::Csv { 3 } else { 2 }, bytes as u64)
            );
            assert_eq!(
                r.reason,
                format!("the line is {bytes} bytes long, above max_line_bytes (1048576)")
            );
            assert_eq!(r.raw.len(), RAW_KEEP_BYTES);
            assert_eq!(
                got.meta("line").last(),
                Some(&Some(if format == Format::Csv { 4 } else { 3 }))
            );
        }
    }

    #[test]
    fn a_chunk_of_long_lines_ends_at_its_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let line = "x".repeat(1 << 20);
        let mut text = String::from("a\n");
        for _ in 0..40 {
            text.push_str(&line);
            text.push('\n');
        }
        let f = write(dir.path(), "a.csv", text.as_bytes());
        let o = ReadFilesOptions {
            limits: LineLimits {
                max_line_bytes: 2 << 20,
                max_fields: 10,
            },
            ..opts(Format::Csv)
        };
        let got = read(&f, &o, 1000);
        assert_eq!(got.rows(), 40);
        assert_eq!(got.chunks, 2);
        assert_eq!(got.batches[0].num_rows(), CHUNK_TEXT_BYTES >> 20);
    }

    #[test]
    fn a_line_of_commas_is_cut_at_max_fields() {
        let dir = tempfile::tempdir().unwrap();
        let commas = ",".repeat(1_000_000);
        let f = write(
            dir.path(),
            "a.csv",
            format!("a,b\n{commas}\n1,2\n").as_bytes(),
        );
        let got = read(&f, &opts(Format::Csv), 10);
        assert_eq!(got.column("a"), [s("1")]);
        assert_eq!(
            got.reasons(),
            [(2, "the line has 1000001 fields, above max_fields (4096)")]
        );
    }

    #[test]
    fn options_from_sql() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let o = ReadFilesOptions::from_sql(&map(&[
            ("FORMAT", "CSV"),
            ("Header", "false"),
            ("sep", "\\t"),
            ("nullvalue", "NA"),
            ("schema", "a INT, b STRING NOT NULL"),
            ("pathGlobFilter", "*.tsv"),
            ("stableMs", "1000"),
            ("maxLineBytes", "4096"),
            ("maxFields", "10"),
            ("inferSchema", "false"),
        ]))
        .unwrap();
        assert_eq!(o.format, Format::Csv);
        assert!(!o.header);
        assert_eq!(o.delimiter, b'\t');
        assert_eq!(o.null_value.as_deref(), Some("NA"));
        assert_eq!(o.schema.unwrap().fields().len(), 2);
        assert_eq!(o.path_glob_filter.as_deref(), Some("*.tsv"));
        assert_eq!(o.stable_ms, 1000);
        assert_eq!(
            o.limits,
            LineLimits {
                max_line_bytes: 4096,
                max_fields: 10
            }
        );
        let o = ReadFilesOptions::from_sql(&map(&[("format", "json")])).unwrap();
        assert_eq!(o, ReadFilesOptions::new(Format::Json));
        assert_eq!((o.header, o.delimiter, o.stable_ms), (true, b',', 500));

        let err = |pairs: &[(&str, &str)]| {
            ReadFilesOptions::from_sql(&map(pairs))
                .unwrap_err()
                .to_string()
        };
        let e = err(&[("header", "true")]);
        assert!(
            e.contains("add format => 'csv' | 'json' | 'parquet'"),
            "{e}"
        );
        let e = err(&[("format", "csv"), ("colour", "red")]);
        assert!(
            e.contains("unknown option `colour`") && e.contains(KNOWN_OPTIONS),
            "{e}"
        );
        let e = err(&[("format", "xml")]);
        assert!(e.contains("format => 'xml'"), "{e}");
        let e = err(&[("format", "csv"), ("header", "yes")]);
        assert!(
            e.contains("header => 'yes': must be 'true' or 'false'"),
            "{e}"
        );
        let e = err(&[("format", "csv"), ("inferSchema", "true")]);
        assert!(e.contains("only 'false' is supported"), "{e}");
        let e = err(&[("format", "csv"), ("delimiter", ";;")]);
        assert!(e.contains("one ASCII character"), "{e}");
        let e = err(&[("format", "csv"), ("maxLineBytes", "10")]);
        assert!(e.contains("at least 64"), "{e}");
        let e = err(&[("format", "csv"), ("schema", "a FOO")]);
        assert!(
            e.contains("column 1 (`a`): type FOO is not supported"),
            "{e}"
        );
        let e = err(&[("format", "csv"), ("delimiter", ";"), ("sep", ",")]);
        assert!(e.contains("given twice"), "{e}");
        let e = err(&[("format", "csv"), ("pathGlobFilter", "[a")]);
        assert!(e.contains("never closed"), "{e}");
    }

    #[test]
    fn types_that_text_cannot_become_are_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "a.csv", b"a\n1\n");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "a",
            DataType::Struct(vec![Field::new("x", DataType::Int32, true)].into()),
            true,
        )]));
        let e = FileReader::open(&f, schema, &opts(Format::Csv))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("column `a`") && e.contains("cannot be read from csv text"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_header_rejects_the_file_once_for_all_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "a.csv", b"a,a\n1,2\n3,4\n");
        let o = with_schema(Format::Csv, "a STRING");
        let got = read(&f, &o, 10);
        assert_eq!(got.rows(), 0);
        assert_eq!(got.rejects.len(), 1);
        assert_eq!(got.rejects[0].lines, 2);
        assert!(got.rejects[0]
            .reason
            .starts_with("file header repeats column(s) a"));
    }
}
