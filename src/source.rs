//! The streaming file source: CSV landing files, read row by row.
//!
//! Like Spark's file source, it lists `*.csv` and `*.csv.gz` files under the landing
//! folder in lexicographic order of their path, and reads each one in line order. A row
//! becomes either a [`Row::Record`], ready to become a Kafka message, or a
//! [`Row::Rejected`] with the reason it can never be one. Nothing is dropped silently.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The same mark after a Latin-1 round trip (`ï»¿`), as the real Kaggle `indexData.csv`
/// starts: a header `ï»¿Index` still means `Index`.
const MOJIBAKE_BOM: &[u8] = b"\xC3\xAF\xC2\xBB\xC2\xBF";

/// `field` without a leading byte-order mark (UTF-8, or UTF-8 read as Latin-1 and encoded
/// again), if it has one.
pub fn strip_bom(field: &[u8]) -> &[u8] {
    field
        .strip_prefix(BOM)
        .or_else(|| field.strip_prefix(MOJIBAKE_BOM))
        .unwrap_or(field)
}

/// Errors listing or opening landing files.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the landing folder {path} does not exist. Create it and put CSV files in it, or set landing_dir in the bundle (`medallion generate --out {path}` writes sample files)")]
    Missing { path: PathBuf },
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

/// What [`discover`] found: the landing files, and what it skipped, with why.
#[derive(Debug, Default)]
pub struct Discovery {
    pub files: Vec<LandingFile>,
    /// One line per entry that was skipped, for the log and the run's summary.
    pub skipped: Vec<String>,
}

/// Lists every `*.csv` and `*.csv.gz` regular file under `dir`, sorted by relative path.
/// Hidden files and folders (a leading `.`) are skipped: writers use them for partial files,
/// and editors for lock files.
///
/// Symbolic links are never followed, so nothing outside the landing folder is read: a
/// link, a FIFO or any other entry that is not a regular file is skipped with a warning.
/// An entry that cannot be listed (an unreadable folder, say) is skipped with a warning
/// too, and the listing goes on.
pub fn discover(dir: &Path) -> Result<Discovery, SourceError> {
    discover_matching(dir, |name| {
        let lower = name.to_lowercase();
        lower.ends_with(".csv") || lower.ends_with(".csv.gz")
    })
}

/// Lists, as [`discover`] does, the regular files under `dir` whose file name (the last
/// component, as it is spelled) `accept` takes: hidden entries skipped, links never
/// followed, what cannot be listed skipped with a note, sorted by relative path.
pub fn discover_matching(
    dir: &Path,
    accept: impl Fn(&str) -> bool,
) -> Result<Discovery, SourceError> {
    if !dir.is_dir() {
        return Err(SourceError::Missing { path: dir.into() });
    }
    let mut found = Discovery::default();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    let rel_name = |path: &Path| {
        let rel = path.strip_prefix(dir).unwrap_or(path);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    };
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let at = e
                    .path()
                    .map_or_else(|| dir.display().to_string(), &rel_name);
                found.skipped.push(format!(
                    "{at}: skipped, it cannot be listed ({e}); check its permissions"
                ));
                continue;
            }
        };
        if entry.depth() == 0 || entry.file_type().is_dir() {
            continue;
        }
        let name = rel_name(entry.path());
        if !entry.file_type().is_file() {
            let kind = if entry.path_is_symlink() {
                "a symbolic link"
            } else {
                "not a regular file"
            };
            found.skipped.push(format!(
                "{name}: skipped, it is {kind}; landing files must be regular files inside the landing folder (copy or move the file in instead)"
            ));
            continue;
        }
        if !accept(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) => {
                found.skipped.push(format!(
                    "{name}: skipped, its size and time cannot be read ({e})"
                ));
                continue;
            }
        };
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        found.files.push(LandingFile {
            path: entry.path().into(),
            name,
            size: meta.len(),
            modified_ms,
        });
    }
    found.files.sort_by(|a, b| a.name.cmp(&b.name));
    for note in &found.skipped {
        tracing::warn!("landing folder: {note}");
    }
    Ok(found)
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
        /// The row's length in the file, in bytes (`raw` may hold only its start).
        raw_bytes: u64,
        reason: String,
        lines: u64,
    },
}

impl Row {
    /// A rejection of one line whose text is `raw`, whole.
    fn reject(line: u64, raw: String, reason: String) -> Row {
        Row::Rejected {
            line,
            raw_bytes: raw.len() as u64,
            raw,
            reason,
            lines: 1,
        }
    }
}

/// Bounds on one line of a landing file, so that memory stays bounded whatever the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineLimits {
    /// The most bytes one record may have (a quoted field's line breaks included).
    pub max_line_bytes: u64,
    /// The most fields one record may have.
    pub max_fields: u64,
}

impl Default for LineLimits {
    fn default() -> Self {
        LineLimits {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_fields: DEFAULT_MAX_FIELDS,
        }
    }
}

/// 1 MiB: Kafka's default largest message.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 1 << 20;
pub const DEFAULT_MAX_FIELDS: u64 = 4096;
/// The smallest limits a bundle may set (see [`LineGuard`] for why they cannot be 0).
pub const MIN_MAX_LINE_BYTES: u64 = 64;
pub const MIN_MAX_FIELDS: u64 = 2;

/// Where [`LineGuard`] is within a record, as csv-core parses it (`,` or another
/// delimiter, `"` quotes with doubled-quote escapes, `\r`, `\n` or `\r\n` ending a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Between records: a line break here is a blank line.
    RecordStart,
    FieldStart,
    Unquoted,
    Quoted,
    /// A `"` inside a quoted field: the end of the quotes, or the first of a doubled one.
    QuoteInQuoted,
}

/// A record cut short by [`LineGuard`].
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// The offset, in the guarded stream, at which the record was cut.
    at: u64,
    /// The record's bytes in the file.
    bytes: u64,
    /// Its fields, as far as they were counted.
    fields: u64,
}

/// What [`LineGuard`] shares with [`CsvRows`].
#[derive(Debug, Default)]
struct Guarded {
    /// Line breaks not yet passed by a record: (offset in the guarded stream, count).
    newlines: VecDeque<(u64, u64)>,
    /// Records cut short, in order.
    cuts: VecDeque<Cut>,
}

/// Sits between a file and the CSV parser and keeps memory bounded whatever the input:
/// - a record longer than `max_line_bytes`, or with more than `max_fields` fields, is cut
///   there: the rest of it is read and dropped up to its real end (quotes respected), so
///   the parser sees a short record, which [`CsvRows`] then rejects with the reason;
/// - blank lines are dropped, so a file of nothing but line breaks costs nothing;
/// - line breaks are counted for line numbers as `(offset, count)` runs.
///
/// Offsets are in the guarded stream (what the parser reads). A dropped line break is
/// counted at the offset of the next byte passed on, so it counts for the records after
/// it and not for the one it was in: a cut never falls at a record's first byte (the
/// limits are at least 64 bytes and 2 fields), so that offset is past the record's start.
struct LineGuard<R> {
    inner: R,
    limits: LineLimits,
    delimiter: u8,
    lex: Lex,
    /// Bytes passed on so far: the offset of the next one.
    out: u64,
    /// The current record's bytes and fields so far.
    record_bytes: u64,
    record_fields: u64,
    /// Whether the current record is being dropped, and whether the parser must be sent
    /// a closing quote first (the cut fell inside a quoted field).
    cutting: bool,
    close_quote: bool,
    /// A byte to pass on before reading more (the terminator after a cut quoted field).
    pending: Option<u8>,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    shared: Arc<Mutex<Guarded>>,
}

impl<R: Read> LineGuard<R> {
    fn new(inner: R, limits: LineLimits, delimiter: u8, shared: Arc<Mutex<Guarded>>) -> Self {
        LineGuard {
            inner,
            limits,
            delimiter,
            lex: Lex::RecordStart,
            out: 0,
            record_bytes: 0,
            record_fields: 0,
            cutting: false,
            close_quote: false,
            pending: None,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            shared,
        }
    }

    /// Counts a line break at `offset` of the guarded stream.
    fn newline(shared: &mut Guarded, offset: u64) {
        match shared.newlines.back_mut() {
            Some((o, n)) if *o == offset => *n += 1,
            _ => shared.newlines.push_back((offset, 1)),
        }
    }

    /// Cuts the current record here.
    fn cut(&mut self, shared: &mut Guarded) {
        self.cutting = true;
        self.close_quote = self.lex == Lex::Quoted;
        shared.cuts.push_back(Cut {
            at: self.out,
            bytes: self.record_bytes,
            fields: self.record_fields,
        });
    }

    /// The current record ended (at a line break or the end of the input).
    fn end_record(&mut self, shared: &mut Guarded) {
        if self.cutting {
            if let Some(cut) = shared.cuts.back_mut() {
                cut.bytes = self.record_bytes;
                cut.fields = self.record_fields;
            }
        }
        self.cutting = false;
        self.record_bytes = 0;
        self.record_fields = 0;
        self.lex = Lex::RecordStart;
    }
}

impl<R: Read> Read for LineGuard<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        let shared = self.shared.clone();
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        while n < out.len() {
            if let Some(b) = self.pending.take() {
                out[n] = b;
                n += 1;
                self.out += 1;
                continue;
            }
            if self.pos == self.len {
                if self.eof || n > 0 {
                    break;
                }
                self.len = self.inner.read(&mut self.buf)?;
                self.pos = 0;
                if self.len == 0 {
                    self.eof = true;
                    if self.lex != Lex::RecordStart {
                        if self.cutting && self.close_quote {
                            self.pending = Some(b'"');
                        }
                        self.end_record(&mut shared);
                        continue;
                    }
                    break;
                }
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            let line_break = b == b'\n' || b == b'\r';
            // The lexer, as csv-core's: where does this byte leave the record?
            let (next, ends) = match (self.lex, b) {
                (Lex::RecordStart, _) if line_break => {
                    // A blank line (or the `\n` of a `\r\n`): dropped, counted.
                    if b == b'\n' {
                        Self::newline(&mut shared, self.out);
                    }
                    continue;
                }
                (Lex::Quoted, b'"') => (Lex::QuoteInQuoted, false),
                (Lex::Quoted, _) => (Lex::Quoted, false),
                (_, _) if line_break => (Lex::RecordStart, true),
                (Lex::RecordStart | Lex::FieldStart, b'"') => (Lex::Quoted, false),
                (Lex::QuoteInQuoted, b'"') => (Lex::Quoted, false),
                (_, d) if d == self.delimiter => (Lex::FieldStart, false),
                _ => (Lex::Unquoted, false),
            };
            if self.lex == Lex::RecordStart {
                self.record_fields = 1;
            }
            if ends {
                let closing = self.cutting && self.close_quote;
                self.end_record(&mut shared);
                if b == b'\n' {
                    // Counted where the terminator lands in the guarded stream.
                    Self::newline(&mut shared, self.out + u64::from(closing));
                }
                if closing {
                    out[n] = b'"';
                    n += 1;
                    self.out += 1;
                    self.pending = Some(b);
                } else {
                    out[n] = b;
                    n += 1;
                    self.out += 1;
                }
                continue;
            }
            self.record_bytes += 1;
            if b == self.delimiter && self.lex != Lex::Quoted {
                self.record_fields += 1;
            }
            if !self.cutting
                && (self.record_bytes > self.limits.max_line_bytes
                    || self.record_fields > self.limits.max_fields)
            {
                // Cut before this byte: the parser's state is the one before it.
                self.cut(&mut shared);
            }
            self.lex = next;
            if b == b'\n' {
                // Its own offset when passed on, the next byte's when dropped.
                Self::newline(&mut shared, self.out);
            }
            if self.cutting {
                continue;
            }
            out[n] = b;
            n += 1;
            self.out += 1;
        }
        Ok(n)
    }
}

/// Reads a landing file's rows in line order.
pub struct CsvRows {
    reader: csv::Reader<Box<dyn Read + Send>>,
    /// Line breaks not yet passed by a record and records cut short (from the guard),
    /// and the count of line breaks passed.
    guarded: Arc<Mutex<Guarded>>,
    limits: LineLimits,
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
    /// Whether no data record has been read yet.
    first: bool,
    format: CsvFormat,
}

/// Opens a listed file for reading: never through a link that replaced it since it was
/// listed (`O_NOFOLLOW`), and only if it is still a regular file.
pub fn open_file(file: &LandingFile) -> Result<std::fs::File, SourceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let open_error = |source| SourceError::Open {
        path: file.path.clone(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&file.path)
        .map_err(open_error)?;
    if !f.metadata().map_err(open_error)?.is_file() {
        return Err(open_error(std::io::Error::other(
            "it is not a regular file",
        )));
    }
    Ok(f)
}

/// Opens a listed file as [`open_file`] does, as its bytes: a `*.gz` file decompressed
/// (salvaging what precedes a break, see [`crate::gzip`]).
pub fn open_text(file: &LandingFile) -> Result<Box<dyn Read + Send>, SourceError> {
    let f = open_file(file)?;
    Ok(if file.name.to_lowercase().ends_with(".gz") {
        Box::new(crate::gzip::SalvagingGzReader::new(f))
    } else {
        Box::new(f)
    })
}

/// How [`CsvRows`] reads a file: its delimiter, whether its first line is a header, the
/// header columns it must have, and the column whose value is a record's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvFormat {
    /// The field delimiter (`,` for the landing files).
    pub delimiter: u8,
    /// Whether the first line is a header. Without one, rows are not checked against a
    /// header's width and [`CsvRows::next_row`] must not be used (use
    /// [`CsvRows::next_fields`]).
    pub has_header: bool,
    /// The header columns a file must have; a file without them is rejected whole.
    pub required: Vec<String>,
    /// The column whose value becomes [`Row::Record`]'s key.
    pub key: Option<String>,
}

/// One data record read by [`CsvRows::next_fields`].
#[derive(Debug)]
pub enum Fields<'a> {
    /// A record within the limits (and as wide as the header, if there is one).
    Record {
        /// Its first line in the file.
        line: u64,
        /// Its fields, unquoted (the byte-order mark removed from a headerless file's
        /// first field).
        fields: &'a csv::ByteRecord,
    },
    /// A record, or what is left of the file, rejected as [`Row::Rejected`].
    Rejected(Row),
}

impl CsvRows {
    /// Opens a file (`*.gz` decompressed) read as `format` says, and reads its header.
    pub fn open_with(
        file: &LandingFile,
        limits: LineLimits,
        format: CsvFormat,
    ) -> Result<Self, SourceError> {
        Ok(Self::with_format(open_text(file)?, limits, format))
    }

    /// Reads rows from any byte stream as `format` says.
    pub fn with_format(inner: Box<dyn Read + Send>, limits: LineLimits, format: CsvFormat) -> Self {
        let guarded = Arc::new(Mutex::new(Guarded::default()));
        let inner: Box<dyn Read + Send> = Box::new(LineGuard::new(
            inner,
            limits,
            format.delimiter,
            guarded.clone(),
        ));
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(format.delimiter)
            .buffer_capacity(1 << 20)
            .from_reader(inner);
        let mut rows = CsvRows {
            reader,
            guarded,
            limits,
            lines_passed: 0,
            header: None,
            file_reason: None,
            header_raw: String::new(),
            key_index: None,
            record: csv::ByteRecord::new(),
            pending: None,
            done: false,
            first: true,
            format,
        };
        if rows.format.has_header {
            rows.read_header();
        }
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
                self.pending = Some(Row::reject(
                    1,
                    String::new(),
                    format!("file unreadable from this line on: {e}"),
                ));
                self.done = true;
                return;
            }
            Ok(true) => {}
        }
        self.header_raw = raw_text(&header);
        let start = header.position().map_or(0, |p| p.byte());
        if let Some(cut) = self.take_cut(start) {
            self.file_reason = Some(format!("the header {}", self.too_long(&cut)));
            return;
        }
        let mut names = Vec::with_capacity(header.len());
        for (i, field) in header.iter().enumerate() {
            let field = if i == 0 { strip_bom(field) } else { field };
            match std::str::from_utf8(field) {
                Ok(name) => names.push(name.trim().to_string()),
                Err(_) => {
                    self.file_reason = Some(format!("header column {} is not valid UTF-8", i + 1));
                    return;
                }
            }
        }
        let missing: Vec<&str> = self
            .format
            .required
            .iter()
            .map(String::as_str)
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
        self.key_index =
            (self.format.key.as_ref()).and_then(|key| names.iter().position(|n| n == key));
        self.header = Some(names);
    }

    /// The header names, once read (with the byte-order mark removed).
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// Why the whole file is rejected, if its header (or first line) already told: a
    /// header past the limits, not UTF-8 or missing columns, or a file that cannot be read.
    pub fn rejected_because(&self) -> Option<&str> {
        match &self.pending {
            Some(Row::Rejected { reason, .. }) => Some(reason),
            _ => self.file_reason.as_deref(),
        }
    }

    /// The next data row, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Option<Row> {
        match self.next_fields()? {
            Fields::Record { line, .. } => Some(self.classify(line)),
            Fields::Rejected(row) => Some(row),
        }
    }

    /// The next data record as fields, or `None` at the end of the file. A record past
    /// the limits, one whose width is not the header's, and a file that cannot be read
    /// on are [`Fields::Rejected`] with the reason, as in [`CsvRows::next_row`].
    pub fn next_fields(&mut self) -> Option<Fields<'_>> {
        if let Some(row) = self.pending.take() {
            return Some(Fields::Rejected(row));
        }
        if self.done {
            return None;
        }
        if let Some(reason) = self.file_reason.take() {
            return Some(Fields::Rejected(self.reject_file(reason)));
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
                Some(Fields::Rejected(Row::reject(
                    line,
                    String::new(),
                    format!("file unreadable from this line on: {e}"),
                )))
            }
            Ok(true) => {
                let start = self.record.position().map_or(0, |p| p.byte());
                let line = self.line_at(start);
                let first = std::mem::replace(&mut self.first, false);
                if let Some(cut) = self.take_cut(start) {
                    return Some(Fields::Rejected(Row::Rejected {
                        line,
                        raw: raw_text(&self.record),
                        raw_bytes: cut.bytes,
                        reason: format!("the line {}", self.too_long(&cut)),
                        lines: 1,
                    }));
                }
                if let Some(header) = &self.header {
                    if self.record.len() != header.len() {
                        return Some(Fields::Rejected(Row::reject(
                            line,
                            raw_text(&self.record),
                            format!(
                                "expected {} fields, found {}",
                                header.len(),
                                self.record.len()
                            ),
                        )));
                    }
                } else if first
                    && !self.format.has_header
                    && self.record.get(0).is_some_and(|f| strip_bom(f) != f)
                {
                    let mut fields = self.record.iter();
                    let mut stripped = csv::ByteRecord::new();
                    stripped.push_field(fields.next().map(strip_bom).unwrap_or_default());
                    stripped.extend(fields);
                    stripped.set_position(self.record.position().cloned());
                    self.record = stripped;
                }
                Some(Fields::Record {
                    line,
                    fields: &self.record,
                })
            }
        }
    }

    /// Rejects the whole file once: reads its records only to count them, and returns
    /// one row holding the header line, standing for every data line.
    fn reject_file(&mut self, mut reason: String) -> Row {
        self.done = true;
        let mut lines = 0u64;
        loop {
            // Line numbers are not needed from here on: keep the guard's notes empty.
            if lines.is_multiple_of(1024) {
                let mut guarded = self.guarded.lock().unwrap_or_else(|e| e.into_inner());
                guarded.newlines.clear();
                guarded.cuts.clear();
            }
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
        let raw = std::mem::take(&mut self.header_raw);
        Row::Rejected {
            line: 1,
            raw_bytes: raw.len() as u64,
            raw,
            reason: format!("{reason}; the whole file is quarantined ({lines} data line(s))"),
            lines,
        }
    }

    /// The cut the guard made in the record that starts at `start` and was just read,
    /// if it made one. Earlier cuts belong to earlier records and are dropped.
    fn take_cut(&mut self, start: u64) -> Option<Cut> {
        let end = self.reader.position().byte();
        let mut guarded = self.guarded.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        while guarded.cuts.front().is_some_and(|c| c.at < end) {
            found = guarded.cuts.pop_front().filter(|c| c.at >= start);
        }
        found
    }

    /// Why a cut record is rejected: "is N bytes long, above max_line_bytes (M)" or
    /// "has N fields, above max_fields (M)".
    fn too_long(&self, cut: &Cut) -> String {
        if cut.bytes > self.limits.max_line_bytes {
            format!(
                "is {} bytes long, above max_line_bytes ({})",
                cut.bytes, self.limits.max_line_bytes
            )
        } else {
            format!(
                "has {} fields, above max_fields ({})",
                cut.fields, self.limits.max_fields
            )
        }
    }

    /// The 1-based line holding byte `start`: one plus the newlines before it, where a
    /// newline at `start` itself (a CRLF record's start) also counts.
    fn line_at(&mut self, start: u64) -> u64 {
        let mut guarded = self.guarded.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(offset, count)) = guarded.newlines.front() {
            if offset > start {
                break;
            }
            guarded.newlines.pop_front();
            self.lines_passed += count;
        }
        self.lines_passed + 1
    }

    fn classify(&self, line: u64) -> Row {
        let record = &self.record;
        let reject = |reason: String| Row::reject(line, raw_text(record), reason);
        let Some(header) = self.header.as_ref() else {
            return reject("the file has no header".into());
        };
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
pub fn raw_text(record: &csv::ByteRecord) -> String {
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
pub(crate) mod tests {
    use super::*;

    /// The stock landing files, as the stock job's YAML reads them.
    pub(crate) fn stock() -> CsvFormat {
        CsvFormat {
            delimiter: b',',
            has_header: true,
            required: crate::generate::HEADER
                .split(',')
                .map(String::from)
                .collect(),
            key: Some("Index".into()),
        }
    }

    impl CsvRows {
        fn from_reader(inner: Box<dyn Read + Send>, limits: LineLimits) -> Self {
            Self::with_format(inner, limits, stock())
        }

        fn open(file: &LandingFile, limits: LineLimits) -> Result<Self, SourceError> {
            Self::open_with(file, limits, stock())
        }
    }

    fn rows(text: &[u8]) -> (Option<Vec<String>>, Vec<Row>) {
        let mut r = CsvRows::from_reader(
            Box::new(std::io::Cursor::new(text.to_vec())),
            LineLimits::default(),
        );
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
                raw_bytes: 41,
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
        let mut r = CsvRows::from_reader(
            Box::new(flate2::read::MultiGzDecoder::new(std::io::Cursor::new(cut))),
            LineLimits::default(),
        );
        let row = r.next_row().unwrap();
        assert!(
            matches!(&row, Row::Rejected { line: 1, reason, .. } if reason.starts_with("file unreadable from this line on")),
            "{row:?}"
        );
        assert!(r.next_row().is_none());
    }

    fn limited(text: &[u8], max_line_bytes: u64, max_fields: u64) -> Vec<Row> {
        let limits = LineLimits {
            max_line_bytes,
            max_fields,
        };
        let mut r = CsvRows::from_reader(Box::new(std::io::Cursor::new(text.to_vec())), limits);
        std::iter::from_fn(|| r.next_row()).collect()
    }

    /// (line, reason) of each rejected row, and the line of each record.
    fn lines_of(rows: &[Row]) -> Vec<(u64, String)> {
        rows.iter()
            .map(|r| match r {
                Row::Record { line, .. } => (*line, String::new()),
                Row::Rejected { line, reason, .. } => (*line, reason.clone()),
            })
            .collect()
    }

    #[test]
    fn lines_past_the_limits_are_cut_and_rejected_with_their_length() {
        let long = format!("NYA,2000-01-04,{},2,3,4,5,6", "9".repeat(500));
        let wide = format!("NYA{}", ",1".repeat(50));
        let quoted = format!("\"a\r\n{}\r\nb\",2000-01-05,1,2,3,4,5,6", "9".repeat(500));
        let text = format!(
            "{HEADER}\r\nNYA,2000-01-03,1,2,3,4,5,6\r\n{long}\r\n{wide}\r\n{quoted}\r\nNYA,2000-01-06,1,2,3,4,5,6\r\n"
        );
        let rows = limited(text.as_bytes(), 200, 20);
        let got = lines_of(&rows);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], (2, String::new()));
        let too_long = |n: usize| format!("the line is {n} bytes long, above max_line_bytes (200)");
        assert_eq!(got[1], (3, too_long(long.len())));
        assert_eq!(
            got[2],
            (4, "the line has 51 fields, above max_fields (20)".into())
        );
        assert_eq!(got[3], (5, too_long(quoted.len())));
        // The quoted field's line breaks still count.
        assert_eq!(got[4], (8, String::new()));
        let Row::Rejected { raw, raw_bytes, .. } = &rows[1] else {
            panic!()
        };
        assert_eq!((raw.len(), *raw_bytes), (200, long.len() as u64));
        // Cut inside the quotes: the parser was given a closing quote, so the record
        // ends at its real end and the next one is whole.
        assert!(matches!(&rows[4], Row::Record { key: Some(k), .. } if k == "NYA"));
    }

    #[test]
    fn a_quote_at_the_cut_does_not_swallow_the_next_record() {
        // The 65th byte is the closing quote of a field: the cut falls just before it.
        let field = "x".repeat(63);
        let text = format!("{HEADER}\n\"{field}\",more\nNYA,2000-01-06,1,2,3,4,5,6\n");
        let got = lines_of(&limited(text.as_bytes(), 64, 20));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1.starts_with("the line is 70 bytes long"), "{got:?}");
        assert_eq!(got[1], (3, String::new()));
    }

    #[test]
    fn blank_lines_are_counted_but_never_kept() {
        let mut text = format!("{HEADER}\r\n").into_bytes();
        text.extend(std::iter::repeat_n(b'\n', 3_000_000));
        text.extend_from_slice(b"\r\n\r\nNYA,2000-01-06,1,2,3,4,5,6\r\n\n");
        let limits = LineLimits::default();
        let mut r = CsvRows::from_reader(Box::new(std::io::Cursor::new(text)), limits);
        let row = r.next_row().unwrap();
        assert!(
            matches!(
                row,
                Row::Record {
                    line: 3_000_004,
                    ..
                }
            ),
            "{row:?}"
        );
        assert!(r.next_row().is_none());
        let guarded = r.guarded.lock().unwrap();
        assert!(guarded.newlines.len() <= 2, "{:?}", guarded.newlines.len());
    }

    #[test]
    fn an_oversized_header_rejects_the_file() {
        let text = format!("{HEADER}{}\nNYA,2000-01-06,1,2,3,4,5,6\n", ",x".repeat(40));
        let rows = limited(text.as_bytes(), 1 << 20, 20);
        assert!(
            matches!(&rows[..], [Row::Rejected { line: 1, lines: 1, reason, .. }] if reason.starts_with("the header has 48 fields, above max_fields (20)")),
            "{rows:?}"
        );
    }

    #[test]
    fn discovery_skips_links_and_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.csv"), "x").unwrap();
        std::fs::write(dir.path().join("a.csv"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.csv"), dir.path().join("b.csv"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("c")).unwrap();
        std::os::unix::fs::symlink("nowhere.csv", dir.path().join("d.csv")).unwrap();
        std::os::unix::fs::symlink("/nowhere", dir.path().join(".#e.csv")).unwrap();
        let found = discover(dir.path()).unwrap();
        let names: Vec<&str> = found.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.csv"]);
        assert_eq!(found.skipped.len(), 3, "{:?}", found.skipped);
        assert!(found.skipped[0].starts_with("b.csv: skipped, it is a symbolic link"));
        // A file replaced by a link after it was listed is not opened through the link.
        let mut listed = found.files[0].clone();
        listed.path = dir.path().join("b.csv");
        assert!(CsvRows::open(&listed, LineLimits::default()).is_err());
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
            .files
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a/y.CSV", "a/z.csv.gz", "b.csv"]);
        assert!(discover(&dir.path().join("missing")).is_err());
    }
}
