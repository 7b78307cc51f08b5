//! The front end of declarative pipelines: it turns the text of a pipeline's SQL files into
//! definitions (streaming tables, materialized views, temporary views and flows), as
//! `shared/pipelines.md` describes them, following Databricks Lakeflow Declarative
//! Pipelines (DLT) SQL.
//!
//! This module owns the syntax only: statement splitting, the DDL around the queries,
//! `${key}` substitution, and the rewrite of every relation of a query (`t`, `STREAM(t)`,
//! `STREAM t`, `read_files(...)`, `read_kafka(...)`) into a placeholder table with a
//! [`Source`] that says what it reads. Resolving names, planning and type checks are left
//! to its callers.
//!
//! A thin hand-written parser reads the statements from sqlparser's tokens; query bodies,
//! expressions and data types are handed to sqlparser's own parser. The whole file is
//! tokenized at once, so every [`Loc`] and every span in the returned ASTs is a line and
//! column of the original file, and so is every error.
//!
//! The dialect is sqlparser's `GenericDialect`, not `DatabricksDialect`: the queries are
//! planned by DataFusion, whose own SQL parser uses the generic dialect, so strings,
//! escapes and quoted names (`"x"` and `` `x` ``) mean here what they mean to DataFusion.
//! The Databricks dialect would read `"x"` as a string. Data types alone (declared columns
//! and `schema =>` texts) are parsed with `SparkSqlDialect`, because they are Spark's DDL
//! types as DLT users write them: `MAP<STRING, INT>`, `LONG`, `ARRAY<...>`, `STRUCT<...>`.

use deltalake::datafusion::sql::sqlparser;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArgOperator,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, Query, Spanned, TableAlias, TableFactor,
    UnaryOperator, Value, VisitMut, VisitorMut,
};
use sqlparser::dialect::{Dialect, GenericDialect, SparkSqlDialect};
use sqlparser::keywords::{Keyword, RESERVED_FOR_TABLE_ALIAS};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

/// A position in a SQL file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Loc {
    /// The line, from 1.
    pub line: u64,
    /// The column in characters, from 1.
    pub column: u64,
}

impl Loc {
    pub(crate) fn of(location: Location) -> Self {
        Loc {
            line: location.line,
            column: location.column,
        }
    }
}

/// A problem in a pipeline's SQL: where, what, and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{}:{}: {message}. {fix}", loc.line, loc.column)]
pub struct ParseError {
    /// The SQL file, as the caller named it.
    pub file: String,
    /// Where in the file the problem is.
    pub loc: Loc,
    /// What is wrong: what was found and what was expected.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// A table name as written: 1 to 3 parts (catalog.schema.table). Unquoted parts are
/// lowercased; quoted parts are kept as written. A leading `LIVE` schema (legacy DLT
/// `LIVE.t`) is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The parts, outermost first.
    pub parts: Vec<String>,
    /// Where the name starts.
    pub loc: Loc,
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts.join("."))
    }
}

/// One statement of a pipeline file.
// The variants hold their definitions unboxed, so that callers match on them by value; a
// pipeline has few definitions, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Definition {
    /// `CREATE STREAMING TABLE` or `CREATE MATERIALIZED VIEW`.
    Table(TableDef),
    /// `CREATE TEMPORARY VIEW`.
    View(ViewDef),
    /// `CREATE FLOW`, or a bare legacy `APPLY CHANGES INTO`.
    Flow(FlowDef),
}

/// What kind of stored table a [`TableDef`] declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Append-only, fed by streams (its query's, or flows').
    StreamingTable,
    /// A query's result, recomputed when its inputs change.
    MaterializedView,
}

/// A streaming table or materialized view.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Streaming table or materialized view.
    pub kind: TableKind,
    /// The table's name.
    pub name: Name,
    /// Where the statement starts.
    pub loc: Loc,
    /// Declared columns, in order.
    pub columns: Vec<ColumnDef>,
    /// `CONSTRAINT name EXPECT (...)`, in order.
    pub expectations: Vec<Expectation>,
    /// `[CONSTRAINT name] PRIMARY KEY (...)`: a medallion extension; on a streaming table
    /// medallion keeps the first row per key.
    pub primary_key: Option<PrimaryKey>,
    /// `PARTITIONED BY (...)` columns.
    pub partitioned_by: Vec<String>,
    /// `COMMENT '...'`.
    pub comment: Option<String>,
    /// `TBLPROPERTIES (...)`.
    pub properties: BTreeMap<String, String>,
    /// The `AS` query; `None` for a streaming table that is the target of flows.
    pub query: Option<QueryDef>,
}

/// A declared column: `name type [NOT NULL] [COMMENT '...']`.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    /// The column's name, as written (case kept).
    pub name: String,
    /// Its SQL type.
    pub data_type: DataType,
    /// `NOT NULL` was given.
    pub not_null: bool,
    /// `COMMENT '...'`.
    pub comment: Option<String>,
    /// Where the column's name is.
    pub loc: Loc,
}

/// `CONSTRAINT name EXPECT (condition) [ON VIOLATION ...]`.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// The constraint's name, as written.
    pub name: String,
    /// The condition.
    pub expr: Expr,
    /// The condition as written.
    pub text: String,
    /// What a row that fails it does.
    pub action: Violation,
    /// Where `CONSTRAINT` is.
    pub loc: Loc,
}

/// What happens to a row that fails an expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// No `ON VIOLATION`: the row is kept and counted.
    Warn,
    /// `ON VIOLATION DROP ROW`: the row is dropped (and quarantined) and counted.
    DropRow,
    /// `ON VIOLATION FAIL UPDATE`: the flow fails without committing.
    FailUpdate,
}

/// `[CONSTRAINT name] PRIMARY KEY (column, ...)`.
#[derive(Debug, Clone)]
pub struct PrimaryKey {
    /// The constraint's name, as written, if it has one.
    pub name: Option<String>,
    /// The key's columns, in order.
    pub columns: Vec<String>,
    /// Where the constraint starts.
    pub loc: Loc,
}

/// `CREATE TEMPORARY VIEW name [( view_element [, ...] )] [COMMENT '...']
/// [TBLPROPERTIES (...)] AS query`, where a view element is `column [COMMENT '...']` or
/// `CONSTRAINT name EXPECT (condition) [ON VIOLATION ...]`.
#[derive(Debug, Clone)]
pub struct ViewDef {
    /// The view's name.
    pub name: Name,
    /// Where the statement starts.
    pub loc: Loc,
    /// Its query.
    pub query: QueryDef,
    /// Column names given in the view's column list (renaming the query's columns in
    /// order); empty when none. Names keep their case; column comments are not kept.
    pub columns: Vec<String>,
    /// Expectations on the view's rows: `CONSTRAINT name EXPECT (...)`, in order.
    pub expectations: Vec<Expectation>,
    /// `COMMENT '...'`.
    pub comment: Option<String>,
    /// `TBLPROPERTIES (...)`.
    pub properties: BTreeMap<String, String>,
}

/// What the parentheses and clauses after a name belong to: a view's differ from a table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// A streaming table or a materialized view.
    Table,
    /// A temporary view.
    View,
}

impl Owner {
    fn noun(self) -> &'static str {
        match self {
            Owner::Table => "table",
            Owner::View => "view",
        }
    }
}

/// What follows a table's or a view's name, as parsed.
#[derive(Default)]
struct Body {
    /// A table's declared columns.
    columns: Vec<ColumnDef>,
    /// The names of the declared columns, in order (a table's or a view's).
    names: Vec<String>,
    expectations: Vec<Expectation>,
    primary_key: Option<PrimaryKey>,
    partitioned_by: Vec<String>,
    comment: Option<String>,
    properties: BTreeMap<String, String>,
    query: Option<QueryDef>,
}

/// `CREATE FLOW name AS ...`.
#[derive(Debug, Clone)]
pub struct FlowDef {
    /// The flow's name (for a bare `APPLY CHANGES INTO t`, the target's).
    pub name: Name,
    /// Where the statement starts.
    pub loc: Loc,
    /// The table the flow writes.
    pub target: Name,
    /// What it writes.
    pub body: FlowBody,
}

/// What a flow does.
// Unboxed for the same reason as `Definition`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum FlowBody {
    /// `INSERT INTO target BY NAME query`: appends the query's rows.
    Insert(QueryDef),
    /// `AUTO CDC INTO target ...` (or `APPLY CHANGES INTO`): merges change events.
    AutoCdc(AutoCdcDef),
}

/// The clauses of `AUTO CDC INTO`.
#[derive(Debug, Clone)]
pub struct AutoCdcDef {
    /// The table or view of change events (`FROM`).
    pub source: Name,
    /// `FROM STREAM(source)` or `FROM STREAM source`.
    pub stream: bool,
    /// `KEYS (...)`: the columns that identify a row.
    pub keys: Vec<String>,
    /// `IGNORE NULL UPDATES`.
    pub ignore_null_updates: bool,
    /// `APPLY AS DELETE WHEN`.
    pub apply_as_delete: Option<Expr>,
    /// `APPLY AS TRUNCATE WHEN`.
    pub apply_as_truncate: Option<Expr>,
    /// `SEQUENCE BY`.
    pub sequence_by: Expr,
    /// `SYSTEM SEQUENCE BY`.
    pub system_sequence_by: Option<Expr>,
    /// `COLUMNS`: the stored columns (`All` without the clause).
    pub columns: ColumnList,
    /// `STORED AS SCD TYPE n`: 1 (the default) or 2.
    pub scd_type: u8,
    /// `TRACK HISTORY ON` (type 2 only).
    pub track_history: Option<ColumnList>,
    /// The flow's query: `SELECT *` of the source, with the values of the clauses as the
    /// columns named in [`crate::pipeline::cdc::columns`], so that DataFusion plans and
    /// computes them like any query.
    pub query: QueryDef,
    /// Where `KEYS` starts.
    pub keys_loc: Loc,
}

/// A list of columns in `COLUMNS` or `TRACK HISTORY ON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnList {
    /// `*`, or no clause.
    All,
    /// `a, b` or `(a, b)`.
    Only(Vec<String>),
    /// `* EXCEPT (a, b)`.
    Except(Vec<String>),
}

/// A query body, ready for DataFusion: every relation that names a table or a source
/// function is replaced by a placeholder table name.
#[derive(Debug, Clone)]
pub struct QueryDef {
    /// The rewritten query.
    pub query: Box<Query>,
    /// Where the query starts.
    pub loc: Loc,
    /// The query as written.
    pub text: String,
    /// What each placeholder stands for, in the order of the query's text.
    pub sources: Vec<Source>,
}

/// One relation of a query, replaced by the table `placeholder`.
#[derive(Debug, Clone)]
pub struct Source {
    /// The placeholder table name, `__f{file}_s{n}`.
    pub placeholder: String,
    /// What it reads.
    pub kind: SourceKind,
    /// Where the reference is.
    pub loc: Loc,
}

/// What a [`Source`] reads.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A table or view reference; `stream` for `STREAM(t)` / `STREAM t`.
    Table {
        /// The table's name.
        name: Name,
        /// An incremental read.
        stream: bool,
    },
    /// `read_files('path', format => 'csv', k => 'v', ...)`; option keys as written, values
    /// as text (string, number and boolean literals all become text).
    ReadFiles {
        /// The folder or file to read.
        path: String,
        /// The named options but `path`.
        options: BTreeMap<String, String>,
        /// An incremental read.
        stream: bool,
    },
    /// `read_kafka(bootstrapServers => '...', subscribe => 'topic', ...)`.
    ReadKafka {
        /// The named options.
        options: BTreeMap<String, String>,
        /// An incremental read.
        stream: bool,
    },
}

const STATEMENTS: &str = "a pipeline file holds CREATE [OR REFRESH] STREAMING TABLE, CREATE [OR REFRESH] MATERIALIZED VIEW, CREATE TEMPORARY VIEW, CREATE FLOW name AS INSERT INTO t BY NAME ..., and CREATE FLOW name AS AUTO CDC INTO t ... statements, separated by `;`";
const NAME_FIX: &str = "write a name such as sales, silver.sales or main.silver.sales (quote a name that is a keyword with backticks)";
const QUERY_FIX: &str = "correct the query here; queries are DataFusion SQL (SELECT ... FROM ...)";
const EXPR_FIX: &str = "write a SQL expression here, such as amount > 0 or id IS NOT NULL";
const TYPE_FIX: &str =
    "use a SQL type such as STRING, INT, BIGINT, DOUBLE, DECIMAL(10,2), BOOLEAN, DATE or TIMESTAMP";
const VIEW_ELEMENTS: &str = "a view's column list holds `column [COMMENT 'text']` (no type: the query gives it) and `CONSTRAINT name EXPECT (condition) [ON VIOLATION DROP ROW | FAIL UPDATE]`, separated by commas";
const VIEW_CLAUSES: &str =
    "a view's clauses are COMMENT '...' and TBLPROPERTIES (...), then AS query";
const CDC_CLAUSES: &str = "IGNORE NULL UPDATES, APPLY AS DELETE WHEN, APPLY AS TRUNCATE WHEN, SEQUENCE BY, SYSTEM SEQUENCE BY, COLUMNS, STORED AS SCD TYPE, TRACK HISTORY ON";

/// Replaces `${key}` with configuration values. An unknown key is an error at its position
/// whose fix says to add it to the pipeline's `configuration` (listing the known keys).
/// Text without `${` is returned unchanged. Line numbers must be preserved (a value
/// containing a newline is an error).
pub fn substitute(
    file: &str,
    text: &str,
    config: &BTreeMap<String, String>,
) -> Result<String, ParseError> {
    if !text.contains("${") {
        return Ok(text.to_string());
    }
    let lines = Lines::new(text);
    let error = |offset: usize, message: String, fix: String| ParseError {
        file: file.to_string(),
        loc: Loc::of(lines.location(offset)),
        message,
        fix: upper_first(&fix),
    };
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    while let Some(found) = text[done..].find("${") {
        let start = done + found;
        out.push_str(&text[done..start]);
        let after = &text[start + 2..];
        let Some(end) = after
            .find(['}', '\n'])
            .filter(|&e| after[e..].starts_with('}'))
        else {
            return Err(error(
                start,
                "`${` is not closed on its line".into(),
                "write a configuration reference as ${key} on one line".into(),
            ));
        };
        let key = after[..end].trim();
        let Some(value) = config.get(key) else {
            let known = if config.is_empty() {
                "it has none yet".to_string()
            } else {
                format!(
                    "known keys: {}",
                    config.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(error(
                start,
                format!("unknown configuration key `{key}` in `${{{key}}}`"),
                format!("add `{key}` to the pipeline's `configuration` ({known})"),
            ));
        };
        if value.contains(['\n', '\r']) {
            return Err(error(
                start,
                format!("the configuration value of `{key}` holds a line break"),
                "make the value one line: a substituted value must keep the file's line numbers"
                    .into(),
            ));
        }
        out.push_str(value);
        done = start + 2 + end + 1;
    }
    out.push_str(&text[done..]);
    Ok(out)
}

/// Parses every statement of one SQL file. `file_index` makes source placeholders unique
/// across the files of a pipeline.
pub fn parse_file(
    file: &str,
    file_index: usize,
    text: &str,
) -> Result<Vec<Definition>, ParseError> {
    // A byte-order mark (some Windows editors write one) becomes a space, keeping columns.
    let unmarked;
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            unmarked = format!(" {rest}");
            unmarked.as_str()
        }
        None => text,
    };
    let lines = Lines::new(text);
    let toks = tokenize(file, text, &lines)?;
    let mut definitions = Vec::new();
    let mut next_source = 0;
    let mut start = 0;
    for i in 0..=toks.len() {
        let end_loc = match toks.get(i) {
            None => lines.location(text.len()),
            Some(t) if t.token == Token::SemiColon => t.span.start,
            Some(_) => continue,
        };
        let sig: Vec<usize> = (start..i)
            .filter(|&j| !matches!(toks[j].token, Token::Whitespace(_) | Token::EOF))
            .collect();
        if !sig.is_empty() {
            let mut stmt = Stmt {
                file,
                lines: &lines,
                toks: &toks,
                sig,
                pos: 0,
                end: i,
                end_loc,
                file_index,
                next_source: &mut next_source,
            };
            definitions.push(stmt.statement()?);
        }
        start = i + 1;
    }
    Ok(definitions)
}

/// Parses a `schema => 'a STRING, b DOUBLE'` text into column names and types. Errors carry
/// what is wrong (the caller adds the location).
pub fn parse_schema(text: &str) -> Result<Vec<(String, DataType)>, String> {
    let dialect = SparkSqlDialect {};
    let describe = |e: ParserError| {
        let (message, _) = sql_message(&e);
        let message = message.replace("the end of the statement", "the end of the schema");
        format!("{message} in the schema `{text}`")
    };
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(describe)?;
    let mut columns: Vec<(String, DataType)> = Vec::new();
    if parser.peek_token().token == Token::EOF {
        return Err(
            "the schema is empty: write it as 'name TYPE, ...', e.g. 'id BIGINT, price DOUBLE'"
                .into(),
        );
    }
    loop {
        // Column names keep their case, as in queries.
        let name = parser.parse_identifier().map_err(describe)?.value;
        let data_type = parser.parse_data_type().map_err(describe)?;
        if let DataType::Custom(..) = data_type {
            return Err(format!(
                "column `{name}` has the unknown type `{data_type}` in the schema `{text}`"
            ));
        }
        // Spark's DDL strings may say NOT NULL or COMMENT; neither changes what is read.
        let _ = parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]);
        if parser.parse_keyword(Keyword::COMMENT) {
            parser.parse_literal_string().map_err(describe)?;
        }
        // Delta column names are unique regardless of case.
        if columns.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return Err(format!(
                "column `{name}` appears twice in the schema `{text}`"
            ));
        }
        columns.push((name, data_type));
        if parser.consume_token(&Token::Comma) {
            continue;
        }
        let next = parser.peek_token();
        if next.token == Token::EOF {
            return Ok(columns);
        }
        return Err(format!(
            "expected `,` or the end of the schema, found `{}` in the schema `{text}`",
            next.token
        ));
    }
}

/// Line starts of a text, to go between byte offsets and sqlparser's line and column
/// (columns count characters, lines end at `\n`, as sqlparser's tokenizer counts them).
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { text, starts }
    }

    fn offset(&self, loc: Location) -> usize {
        if loc.line == 0 {
            return 0;
        }
        let line = (loc.line as usize - 1).min(self.starts.len() - 1);
        let start = self.starts[line];
        let end = self
            .starts
            .get(line + 1)
            .copied()
            .unwrap_or(self.text.len());
        let column = loc.column.saturating_sub(1) as usize;
        self.text[start..end]
            .char_indices()
            .nth(column)
            .map_or(end, |(i, _)| start + i)
    }

    fn location(&self, offset: usize) -> Location {
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let column = self.text[self.starts[line]..offset].chars().count() + 1;
        Location::new(line as u64 + 1, column as u64)
    }

    fn slice(&self, from: Location, to: Location) -> &'a str {
        let (from, to) = (self.offset(from), self.offset(to));
        &self.text[from..to.max(from)]
    }
}

fn tokenize(file: &str, text: &str, lines: &Lines) -> Result<Vec<TokenWithSpan>, ParseError> {
    Tokenizer::new(&GenericDialect {}, text)
        .tokenize_with_location()
        .map_err(|e| {
            let (loc, message, fix) = if e.message.contains("multi-line comment") {
                (
                    unclosed_comment(text, lines).unwrap_or(e.location),
                    "a `/*` comment is not closed".to_string(),
                    "close it with `*/`",
                )
            } else if e.message.contains("string literal") {
                (
                    e.location,
                    "a string is not closed".to_string(),
                    "close it with `'` (write `''` for a quote inside a string)",
                )
            } else if e.message.contains("delimiter") {
                (
                    e.location,
                    "a quoted name is not closed".to_string(),
                    "close it with the quote that opened it (\" or `)",
                )
            } else {
                (
                    e.location,
                    lower_first(&e.message),
                    "correct the SQL text here",
                )
            };
            ParseError {
                file: file.to_string(),
                loc: Loc::of(loc),
                message,
                fix: upper_first(fix),
            }
        })
}

/// Where the `/*` that is never closed starts (the tokenizer reports the end of the file).
fn unclosed_comment(text: &str, lines: &Lines) -> Option<Location> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut open: Vec<usize> = Vec::new();
    while i < bytes.len() {
        let (c, next) = (bytes[i], bytes.get(i + 1).copied());
        if !open.is_empty() {
            match (c, next) {
                (b'/', Some(b'*')) => {
                    open.push(i);
                    i += 2;
                }
                (b'*', Some(b'/')) => {
                    open.pop();
                    i += 2;
                }
                _ => i += 1,
            }
            continue;
        }
        match (c, next) {
            (b'/', Some(b'*')) => {
                open.push(i);
                i += 2;
            }
            (b'-', Some(b'-')) => i = text[i..].find('\n').map_or(bytes.len(), |n| i + n),
            (b'\'' | b'"' | b'`', _) => {
                i = text[i + 1..]
                    .find(c as char)
                    .map_or(bytes.len(), |n| i + 1 + n + 1)
            }
            _ => i += 1,
        }
    }
    open.first().map(|&o| lines.location(o))
}

/// Fixes are sentences after the message: "t.sql:3:7: <message>. <Fix>".
fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// sqlparser's message without its position, and the position (` at Line: 3, Column: 7`).
fn sql_message(e: &ParserError) -> (String, Option<Loc>) {
    let raw = match e {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => s.as_str(),
        ParserError::RecursionLimitExceeded => return ("the SQL nests too deeply".into(), None),
    };
    let (text, loc) = match raw.rfind(" at Line: ") {
        Some(i) => {
            let mut numbers = raw[i + " at Line: ".len()..]
                .split(", Column: ")
                .map(|n| n.trim().parse::<u64>().ok());
            match (numbers.next().flatten(), numbers.next().flatten()) {
                (Some(line), Some(column)) => (&raw[..i], Some(Loc { line, column })),
                _ => (raw, None),
            }
        }
        None => (raw, None),
    };
    let mut message = match text.strip_prefix("Expected: ") {
        Some(rest) => format!("expected {rest}"),
        None => lower_first(text),
    };
    if let Some(i) = message.find(", found: ") {
        let found = &message[i + ", found: ".len()..];
        let found = if found == "EOF" {
            "the end of the statement".to_string()
        } else {
            format!("`{found}`")
        };
        message = format!("{}, found {found}", &message[..i]);
    }
    (message, loc)
}

fn describe(token: Option<&TokenWithSpan>) -> String {
    match token.map(|t| &t.token) {
        None | Some(Token::EOF) => "the end of the statement".into(),
        Some(token) => format!("`{token}`"),
    }
}

fn eof(at: Location) -> TokenWithSpan {
    TokenWithSpan {
        token: Token::EOF,
        span: Span::new(at, at),
    }
}

/// A name part: unquoted names are lowercased (as DataFusion does), quoted ones kept.
fn ident_name(ident: &Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

fn word_is(token: &Token, keyword: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
}

/// Keywords that cannot be a name where one is expected without quotes.
const NOT_A_NAME: &[Keyword] = &[
    Keyword::AS,
    Keyword::SELECT,
    Keyword::FROM,
    Keyword::WITH,
    Keyword::WHERE,
];

/// One statement being parsed: its significant tokens (no whitespace or comments).
struct Stmt<'a> {
    file: &'a str,
    lines: &'a Lines<'a>,
    toks: &'a [TokenWithSpan],
    /// Indexes into `toks` of this statement's significant tokens.
    sig: Vec<usize>,
    /// The next token, as an index into `sig`.
    pos: usize,
    /// Where the statement ends in `toks` (its `;`, or the end of the file).
    end: usize,
    end_loc: Location,
    file_index: usize,
    next_source: &'a mut usize,
}

impl<'a> Stmt<'a> {
    fn peek_nth(&self, n: usize) -> Option<&'a TokenWithSpan> {
        let toks = self.toks;
        self.sig.get(self.pos + n).map(|&i| &toks[i])
    }

    fn peek(&self) -> Option<&'a TokenWithSpan> {
        self.peek_nth(0)
    }

    fn location(&self) -> Location {
        self.peek().map_or(self.end_loc, |t| t.span.start)
    }

    fn loc(&self) -> Loc {
        Loc::of(self.location())
    }

    fn found(&self) -> String {
        describe(self.peek())
    }

    fn at_end(&self) -> bool {
        self.pos >= self.sig.len()
    }

    fn error(&self, loc: Loc, message: impl Into<String>, fix: impl Into<String>) -> ParseError {
        ParseError {
            file: self.file.to_string(),
            loc,
            message: message.into(),
            fix: upper_first(&fix.into()),
        }
    }

    /// "expected {what}, found {the next token}", at the next token.
    fn unexpected(&self, what: &str, fix: impl Into<String>) -> ParseError {
        self.error(
            self.loc(),
            format!("expected {what}, found {}", self.found()),
            fix,
        )
    }

    fn is_kw(&self, n: usize, keyword: &str) -> bool {
        self.peek_nth(n).is_some_and(|t| word_is(&t.token, keyword))
    }

    fn eat_kw(&mut self, keyword: &str) -> bool {
        let yes = self.is_kw(0, keyword);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_kw(&mut self, keyword: &str, fix: &str) -> Result<Loc, ParseError> {
        let loc = self.loc();
        if self.eat_kw(keyword) {
            Ok(loc)
        } else {
            Err(self.unexpected(keyword, fix))
        }
    }

    fn is_tok(&self, n: usize, token: &Token) -> bool {
        self.peek_nth(n).is_some_and(|t| t.token == *token)
    }

    fn eat_tok(&mut self, token: &Token) -> bool {
        let yes = self.is_tok(0, token);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_tok(&mut self, token: &Token, fix: &str) -> Result<(), ParseError> {
        if self.eat_tok(token) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{token}`"), fix))
        }
    }

    /// One column name (`what` says which, for the error), as written, with where it is.
    /// Column names keep their case, as queries do (medallion plans them with DataFusion's
    /// identifier normalization off): `Index` is the column `Index`.
    fn ident(&mut self, what: &str, fix: &str) -> Result<(String, Loc), ParseError> {
        let loc = self.loc();
        match self.peek().map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_some() || !NOT_A_NAME.contains(&w.keyword) => {
                self.pos += 1;
                Ok((w.value.clone(), loc))
            }
            _ => Err(self.unexpected(what, fix)),
        }
    }

    /// A name part as written (constraint names are labels, not resolved names).
    fn label(&mut self, what: &str, fix: &str) -> Result<String, ParseError> {
        match self.peek().map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_some() || !NOT_A_NAME.contains(&w.keyword) => {
                self.pos += 1;
                Ok(w.value.clone())
            }
            _ => Err(self.unexpected(what, fix)),
        }
    }

    fn name(&mut self, what: &str) -> Result<Name, ParseError> {
        let loc = self.loc();
        let mut idents = Vec::new();
        loop {
            let Some(Token::Word(w)) = self.peek().map(|t| &t.token) else {
                return Err(self.unexpected(what, NAME_FIX));
            };
            if w.quote_style.is_none() && NOT_A_NAME.contains(&w.keyword) {
                return Err(self.unexpected(what, NAME_FIX));
            }
            idents.push(w.clone().into_ident(Span::empty()));
            self.pos += 1;
            if !(self.is_tok(0, &Token::Period)
                && matches!(self.peek_nth(1).map(|t| &t.token), Some(Token::Word(_))))
            {
                break;
            }
            self.pos += 1;
        }
        make_name(&idents, loc).map_err(|m| {
            self.error(
                loc,
                m,
                "a name has at most three parts: catalog.schema.table",
            )
        })
    }

    fn string(&mut self, what: &str, fix: &str) -> Result<String, ParseError> {
        match self.peek().map(|t| &t.token) {
            Some(Token::SingleQuotedString(s)) => {
                self.pos += 1;
                Ok(s.clone())
            }
            _ => Err(self.unexpected(what, fix)),
        }
    }

    /// `( a, b, ... )`: one or more column names.
    fn column_names(&mut self, clause: &str) -> Result<Vec<String>, ParseError> {
        let fix = format!("write {clause} (column, ...) with at least one column");
        self.expect_tok(&Token::LParen, &fix)?;
        let mut columns = Vec::new();
        if self.is_tok(0, &Token::RParen) {
            return Err(self.error(self.loc(), format!("{clause} () names no column"), fix));
        }
        loop {
            let (column, loc) = self.ident("a column name", &fix)?;
            if columns
                .iter()
                .any(|c: &String| c.eq_ignore_ascii_case(&column))
            {
                return Err(self.error(
                    loc,
                    format!("column `{column}` appears twice in {clause}"),
                    "name each column once",
                ));
            }
            columns.push(column);
            if !self.eat_tok(&Token::Comma) {
                break;
            }
        }
        self.expect_tok(&Token::RParen, &fix)?;
        Ok(columns)
    }

    /// Runs sqlparser on the tokens from the next one to the end of the statement, then
    /// carries on after what it consumed.
    fn sql<T>(
        &mut self,
        dialect: &dyn Dialect,
        fix: &str,
        f: impl FnOnce(&mut Parser) -> Result<T, ParserError>,
    ) -> Result<T, ParseError> {
        let start = self.sig.get(self.pos).copied().unwrap_or(self.end);
        let mut tokens = self.toks[start..self.end].to_vec();
        tokens.push(eof(self.end_loc));
        let mut parser = Parser::new(dialect).with_tokens_with_locations(tokens);
        let value = f(&mut parser).map_err(|e| self.sql_error(&e, fix))?;
        let consumed = start + parser.index();
        self.pos = self.sig.partition_point(|&i| i < consumed);
        Ok(value)
    }

    fn sql_error(&self, e: &ParserError, fix: &str) -> ParseError {
        let (message, loc) = sql_message(e);
        self.error(loc.unwrap_or_else(|| self.loc()), message, fix)
    }

    /// An expression, its text as written, with no table in it.
    fn expr(&mut self, what: &str) -> Result<(Expr, String), ParseError> {
        if self.at_end() {
            return Err(self.unexpected(what, EXPR_FIX));
        }
        let from = self.location();
        let expr = self.sql(&GenericDialect {}, EXPR_FIX, |p| p.parse_expr())?;
        let text = self.lines.slice(from, self.location()).trim().to_string();
        let relation = sqlparser::ast::visit_relations(&expr, |r| ControlFlow::Break(r.clone()));
        if let ControlFlow::Break(relation) = relation {
            return Err(self.error(
                Loc::of(relation.span().start),
                format!("{what} reads the table `{relation}`"),
                "an expression here sees one row: compute what it needs in the source's query",
            ));
        }
        Ok((expr, text))
    }

    fn data_type(&mut self) -> Result<DataType, ParseError> {
        let loc = self.loc();
        let data_type = self.sql(&SparkSqlDialect {}, TYPE_FIX, |p| p.parse_data_type())?;
        if let DataType::Custom(..) = data_type {
            return Err(self.error(loc, format!("unknown data type `{data_type}`"), TYPE_FIX));
        }
        Ok(data_type)
    }

    fn statement(&mut self) -> Result<Definition, ParseError> {
        let loc = self.loc();
        if self.eat_kw("CREATE") {
            return self.create(loc);
        }
        if self.is_kw(0, "APPLY") && self.is_kw(1, "CHANGES") {
            // Legacy DLT: a bare `APPLY CHANGES INTO t ...`, a flow named after its target.
            let (target, cdc) = self.auto_cdc()?;
            return Ok(Definition::Flow(FlowDef {
                name: target.clone(),
                loc,
                target,
                body: FlowBody::AutoCdc(cdc),
            }));
        }
        let found = self.found();
        let token = self.peek().map(|t| &t.token);
        let (message, fix) = match token {
            Some(t) if word_is(t, "SET") => (
                "SET is not a pipeline statement".to_string(),
                "put the value in the pipeline's `configuration` and write ${key} where it is used"
                    .to_string(),
            ),
            Some(t) if word_is(t, "SELECT") || word_is(t, "WITH") || word_is(t, "VALUES") => (
                format!("a bare query (found {found}) defines nothing"),
                "name it: CREATE MATERIALIZED VIEW name AS SELECT ..., or CREATE TEMPORARY VIEW name AS SELECT ...".to_string(),
            ),
            _ => (
                format!("expected a pipeline statement, found {found}"),
                STATEMENTS.to_string(),
            ),
        };
        Err(self.error(loc, message, fix))
    }

    fn create(&mut self, loc: Loc) -> Result<Definition, ParseError> {
        if self.eat_kw("OR") && !self.eat_kw("REFRESH") {
            return Err(self.unexpected(
                "REFRESH after CREATE OR",
                "write CREATE OR REFRESH: a pipeline refreshes its tables, it does not replace them",
            ));
        }
        let private_loc = self.loc();
        let private = self.eat_kw("PRIVATE");
        let table_fix = "write CREATE [OR REFRESH] STREAMING TABLE name ... or CREATE [OR REFRESH] MATERIALIZED VIEW name ...";
        let kind = if self.eat_kw("STREAMING") {
            self.eat_kw("LIVE");
            self.expect_kw("TABLE", table_fix)?;
            Some(TableKind::StreamingTable)
        } else if self.eat_kw("INCREMENTAL") {
            self.expect_kw("LIVE", table_fix)?;
            self.expect_kw("TABLE", table_fix)?;
            Some(TableKind::StreamingTable)
        } else if self.eat_kw("MATERIALIZED") {
            self.expect_kw("VIEW", table_fix)?;
            Some(TableKind::MaterializedView)
        } else if self.is_kw(0, "LIVE") && self.is_kw(1, "TABLE") {
            self.pos += 2;
            Some(TableKind::MaterializedView)
        } else {
            None
        };
        if let Some(kind) = kind {
            return self.table(kind, loc).map(Definition::Table);
        }
        if private {
            return Err(self.error(
                private_loc,
                format!("PRIVATE applies to a streaming table or a materialized view, not to {}", self.found()),
                "remove PRIVATE, or write CREATE PRIVATE MATERIALIZED VIEW / CREATE PRIVATE STREAMING TABLE",
            ));
        }
        let view_fix = "write CREATE TEMPORARY VIEW name AS SELECT ...";
        if self.eat_kw("TEMPORARY") {
            self.eat_kw("STREAMING");
            self.eat_kw("LIVE");
            self.expect_kw("VIEW", view_fix)?;
            return self.view(loc).map(Definition::View);
        }
        if self.is_kw(0, "LIVE") && self.is_kw(1, "VIEW") {
            self.pos += 2;
            return self.view(loc).map(Definition::View);
        }
        if self.eat_kw("FLOW") {
            return self.flow(loc).map(Definition::Flow);
        }
        let here = self.loc();
        let (message, fix) = if self.is_kw(0, "VIEW") {
            (
                "CREATE VIEW is not a pipeline statement".to_string(),
                "use CREATE TEMPORARY VIEW, or CREATE MATERIALIZED VIEW to store it".to_string(),
            )
        } else if self.is_kw(0, "TABLE") {
            (
                "CREATE TABLE is not a pipeline statement".to_string(),
                "use CREATE STREAMING TABLE for a table fed by streams, or CREATE MATERIALIZED VIEW for a query's stored result".to_string(),
            )
        } else if self.is_kw(0, "REPLACE") {
            (
                "CREATE OR REPLACE is not a pipeline statement".to_string(),
                "write CREATE OR REFRESH: a pipeline refreshes its tables, it does not replace them".to_string(),
            )
        } else {
            (
                format!(
                    "expected STREAMING TABLE, MATERIALIZED VIEW, TEMPORARY VIEW or FLOW after CREATE, found {}",
                    self.found()
                ),
                STATEMENTS.to_string(),
            )
        };
        Err(self.error(here, message, fix))
    }

    fn table(&mut self, kind: TableKind, loc: Loc) -> Result<TableDef, ParseError> {
        let what = match kind {
            TableKind::StreamingTable => "the streaming table's name",
            TableKind::MaterializedView => "the materialized view's name",
        };
        let name = self.name(what)?;
        let body = self.body(Owner::Table)?;
        if kind == TableKind::MaterializedView && body.query.is_none() {
            return Err(self.error(
                Loc::of(self.end_loc),
                format!("materialized view {name} has no query"),
                "add AS SELECT ...: only a streaming table may be declared without a query, as the target of flows",
            ));
        }
        Ok(TableDef {
            kind,
            name,
            loc,
            columns: body.columns,
            expectations: body.expectations,
            primary_key: body.primary_key,
            partitioned_by: body.partitioned_by,
            comment: body.comment,
            properties: body.properties,
            query: body.query,
        })
    }

    fn view(&mut self, loc: Loc) -> Result<ViewDef, ParseError> {
        let name = self.name("the view's name")?;
        let body = self.body(Owner::View)?;
        let Some(query) = body.query else {
            return Err(self.error(
                Loc::of(self.end_loc),
                format!("view {name} has no query"),
                "add AS SELECT ...: a temporary view is defined by its query",
            ));
        };
        Ok(ViewDef {
            name,
            loc,
            query,
            columns: body.names,
            expectations: body.expectations,
            comment: body.comment,
            properties: body.properties,
        })
    }

    /// After a table's or a view's name: `[( elements )] [clauses] [AS query]`, to the end
    /// of the statement. The query is left for the caller to require.
    fn body(&mut self, owner: Owner) -> Result<Body, ParseError> {
        let mut body = Body::default();
        if self.eat_tok(&Token::LParen) {
            self.elements(owner, &mut body)?;
        }
        let mut seen = BTreeSet::new();
        let (clauses, fix) = match owner {
            Owner::Table => (
                "AS, PARTITIONED BY, COMMENT, TBLPROPERTIES or the end of the statement",
                "the clauses of a table are PARTITIONED BY (...), COMMENT '...' and TBLPROPERTIES (...), then AS query",
            ),
            Owner::View => ("AS, COMMENT or TBLPROPERTIES", VIEW_CLAUSES),
        };
        while !self.at_end() {
            let clause_loc = self.loc();
            if owner == Owner::View {
                if let Some(clause) = ["PARTITIONED", "CLUSTER"]
                    .into_iter()
                    .find(|clause| self.is_kw(0, clause))
                {
                    return Err(self.error(
                        clause_loc,
                        format!("{clause} BY does not apply to a view, which is not stored"),
                        VIEW_CLAUSES,
                    ));
                }
            }
            let clause = if self.eat_kw("AS") {
                body.query = Some(self.query()?);
                break;
            } else if self.eat_kw("PARTITIONED") {
                self.expect_kw("BY", "write PARTITIONED BY (column, ...)")?;
                body.partitioned_by = self.column_names("PARTITIONED BY")?;
                if !body.names.is_empty() {
                    self.check_declared(
                        &body.names,
                        &body.partitioned_by,
                        "PARTITIONED BY",
                        clause_loc,
                    )?;
                }
                "PARTITIONED BY"
            } else if self.eat_kw("COMMENT") {
                body.comment = Some(self.string("the comment's text", "write COMMENT 'text'")?);
                "COMMENT"
            } else if self.eat_kw("TBLPROPERTIES") {
                body.properties = self.properties()?;
                "TBLPROPERTIES"
            } else if self.is_kw(0, "CLUSTER") {
                return Err(self.error(
                    clause_loc,
                    "CLUSTER BY is not supported yet",
                    "use PARTITIONED BY (column, ...)",
                ));
            } else {
                return Err(self.unexpected(clauses, fix));
            };
            if !seen.insert(clause) {
                return Err(self.error(
                    clause_loc,
                    format!("a second {clause} clause"),
                    format!("give {clause} once"),
                ));
            }
        }
        Ok(body)
    }

    /// Each of `columns` is one of the table's `declared` columns.
    fn check_declared(
        &self,
        declared: &[String],
        columns: &[String],
        clause: &str,
        loc: Loc,
    ) -> Result<(), ParseError> {
        for column in columns {
            if !declared.contains(column) {
                return Err(self.error(
                    loc,
                    format!("{clause} names column `{column}`, which the table does not declare"),
                    format!(
                        "use one of the declared columns ({}), or declare `{column}`",
                        declared.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// After `(`: columns, expectations and (for a table) a primary key, up to `)`.
    fn elements(&mut self, owner: Owner, body: &mut Body) -> Result<(), ParseError> {
        let fix = match owner {
            Owner::Table => "a table's elements are `column TYPE [NOT NULL] [COMMENT '...']`, `CONSTRAINT name EXPECT (condition) [ON VIOLATION DROP ROW | FAIL UPDATE]` and `[CONSTRAINT name] PRIMARY KEY (column, ...)`, separated by commas",
            Owner::View => VIEW_ELEMENTS,
        };
        if self.is_tok(0, &Token::RParen) {
            return Err(self.unexpected("a column or a constraint", fix));
        }
        loop {
            let loc = self.loc();
            let constraint = if self.eat_kw("CONSTRAINT") {
                Some(self.label("the constraint's name", fix)?)
            } else {
                None
            };
            if self.is_kw(0, "PRIMARY") && self.is_kw(1, "KEY") {
                if owner == Owner::View {
                    return Err(self.error(
                        self.loc(),
                        "a view has no PRIMARY KEY",
                        format!(
                            "{VIEW_ELEMENTS}; declare the key on the table that stores the rows"
                        ),
                    ));
                }
                self.pos += 2;
                if body.primary_key.is_some() {
                    return Err(self.error(
                        loc,
                        "a second PRIMARY KEY",
                        "declare one primary key, with all its columns",
                    ));
                }
                let columns = self.column_names("PRIMARY KEY")?;
                body.primary_key = Some(PrimaryKey {
                    name: constraint,
                    columns,
                    loc,
                });
            } else if let Some(name) = constraint {
                let constraints = match owner {
                    Owner::Table => "a constraint is `CONSTRAINT name EXPECT (condition)` or `CONSTRAINT name PRIMARY KEY (column, ...)`",
                    Owner::View => "a view's constraint is `CONSTRAINT name EXPECT (condition) [ON VIOLATION DROP ROW | FAIL UPDATE]`",
                };
                self.expect_kw("EXPECT", constraints)?;
                if body
                    .expectations
                    .iter()
                    .any(|e| e.name.eq_ignore_ascii_case(&name))
                {
                    return Err(self.error(
                        loc,
                        format!("a second expectation named `{name}`"),
                        format!("give each expectation of a {} its own name", owner.noun()),
                    ));
                }
                let expectation = self.expectation(name, loc)?;
                body.expectations.push(expectation);
            } else {
                let (name, column_loc, column) = match owner {
                    Owner::Table => {
                        let column = self.column()?;
                        (column.name.clone(), column.loc, Some(column))
                    }
                    Owner::View => {
                        let (name, loc) = self.view_column()?;
                        (name, loc, None)
                    }
                };
                // Delta column names are unique regardless of case.
                if body.names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                    return Err(self.error(
                        column_loc,
                        format!("column `{name}` is declared twice"),
                        "declare each column once",
                    ));
                }
                body.names.push(name);
                body.columns.extend(column);
            }
            if self.eat_tok(&Token::Comma) {
                continue;
            }
            if self.eat_tok(&Token::RParen) {
                break;
            }
            return Err(self.unexpected("`,` or `)`", fix));
        }
        if let Some(key) = &body.primary_key {
            if !body.names.is_empty() {
                self.check_declared(&body.names, &key.columns, "PRIMARY KEY", key.loc)?;
            }
        }
        Ok(())
    }

    /// A view's column: `name [COMMENT 'text']`. It has no type (the query gives it), and
    /// its comment is documentation only: a temporary view is not stored.
    fn view_column(&mut self) -> Result<(String, Loc), ParseError> {
        let (name, loc) = self.ident("a column name or CONSTRAINT", VIEW_ELEMENTS)?;
        let mut comment = false;
        loop {
            let here = self.loc();
            if self.eat_kw("COMMENT") {
                if comment {
                    return Err(self.error(
                        here,
                        "a second COMMENT for one column",
                        "give a column one COMMENT",
                    ));
                }
                self.string("the comment's text", "write COMMENT 'text'")?;
                comment = true;
            } else if self.is_tok(0, &Token::Comma) || self.is_tok(0, &Token::RParen) {
                return Ok((name, loc));
            } else if self.is_kw(0, "NOT") && self.is_kw(1, "NULL") {
                return Err(self.error(
                    here,
                    format!("NOT NULL on column `{name}` of a view"),
                    "a view's column is `name [COMMENT 'text']`; to refuse NULLs, write CONSTRAINT name EXPECT (column IS NOT NULL) ON VIOLATION FAIL UPDATE",
                ));
            } else {
                // A data type gets its own message; anything else is just unexpected.
                let at = self.pos;
                let typed = self.sql(&SparkSqlDialect {}, TYPE_FIX, |p| p.parse_data_type());
                self.pos = at;
                if let Ok(data_type) = typed {
                    if !matches!(data_type, DataType::Custom(..)) {
                        return Err(self.error(
                            here,
                            format!("column `{name}` of a view is given the type {data_type}"),
                            "remove the type: a view's column is `name [COMMENT 'text']` and takes its type from the query (CAST there to change it)",
                        ));
                    }
                }
                return Err(self.unexpected(
                    "COMMENT, `,` or `)` after the view's column",
                    "a view's column is `name [COMMENT 'text']`, with no type: the query gives it",
                ));
            }
        }
    }

    fn column(&mut self) -> Result<ColumnDef, ParseError> {
        let (name, loc) = self.ident(
            "a column name, CONSTRAINT or PRIMARY KEY",
            "a table's elements are `column TYPE`, `CONSTRAINT name EXPECT (condition)` and `PRIMARY KEY (column, ...)`",
        )?;
        let data_type = self.data_type()?;
        let mut column = ColumnDef {
            name,
            data_type,
            not_null: false,
            comment: None,
            loc,
        };
        loop {
            let here = self.loc();
            if self.is_kw(0, "NOT") && self.is_kw(1, "NULL") {
                self.pos += 2;
                if column.not_null {
                    return Err(self.error(here, "a second NOT NULL", "write NOT NULL once"));
                }
                column.not_null = true;
            } else if self.eat_kw("COMMENT") {
                if column.comment.is_some() {
                    return Err(self.error(
                        here,
                        "a second COMMENT for one column",
                        "give a column one COMMENT",
                    ));
                }
                column.comment = Some(self.string("the comment's text", "write COMMENT 'text'")?);
            } else if self.is_tok(0, &Token::Comma) || self.is_tok(0, &Token::RParen) {
                return Ok(column);
            } else {
                return Err(self.unexpected(
                    "NOT NULL, COMMENT, `,` or `)` after the column's type",
                    "a column is `name TYPE [NOT NULL] [COMMENT 'text']`",
                ));
            }
        }
    }

    /// After `EXPECT`: `(condition) [ON VIOLATION action]`.
    fn expectation(&mut self, name: String, loc: Loc) -> Result<Expectation, ParseError> {
        let fix = "write EXPECT (condition), e.g. EXPECT (id IS NOT NULL)";
        self.expect_tok(&Token::LParen, fix)?;
        let (expr, text) = self.expr("the expectation's condition")?;
        self.expect_tok(&Token::RParen, fix)?;
        let mut action = Violation::Warn;
        if self.eat_kw("ON") {
            let actions = "write ON VIOLATION DROP ROW or ON VIOLATION FAIL UPDATE, or leave ON VIOLATION out to keep the row and count it";
            self.expect_kw("VIOLATION", actions)?;
            action = if self.is_kw(0, "DROP") && self.is_kw(1, "ROW") {
                Violation::DropRow
            } else if self.is_kw(0, "FAIL") && self.is_kw(1, "UPDATE") {
                Violation::FailUpdate
            } else {
                let found = self.found();
                return Err(self.error(
                    self.loc(),
                    format!("unknown ON VIOLATION action {found}"),
                    actions,
                ));
            };
            self.pos += 2;
        }
        Ok(Expectation {
            name,
            expr,
            text,
            action,
            loc,
        })
    }

    /// After `TBLPROPERTIES`: `('key' = 'value', ...)`.
    fn properties(&mut self) -> Result<BTreeMap<String, String>, ParseError> {
        let fix = "write TBLPROPERTIES ('key' = 'value', ...)";
        self.expect_tok(&Token::LParen, fix)?;
        let mut properties = BTreeMap::new();
        loop {
            let loc = self.loc();
            let key = match self.peek().map(|t| &t.token) {
                Some(Token::SingleQuotedString(s)) => {
                    self.pos += 1;
                    s.clone()
                }
                Some(Token::Word(_)) => {
                    // Spark also takes unquoted dotted keys: pipelines.reset.allowed = false.
                    let mut key = self.label("a property key", fix)?;
                    while self.is_tok(0, &Token::Period) {
                        self.pos += 1;
                        key.push('.');
                        key.push_str(&self.label("a property key", fix)?);
                    }
                    key
                }
                _ => return Err(self.unexpected("a property key such as 'quarantine'", fix)),
            };
            self.eat_tok(&Token::Eq);
            let negative = self.eat_tok(&Token::Minus);
            let value = match self.peek().map(|t| &t.token) {
                Some(Token::SingleQuotedString(s)) if !negative => s.clone(),
                Some(Token::Number(n, _)) if negative => format!("-{n}"),
                Some(Token::Number(n, _)) => n.clone(),
                Some(t @ Token::Word(w))
                    if !negative && (word_is(t, "true") || word_is(t, "false")) =>
                {
                    w.value.to_lowercase()
                }
                _ => return Err(self.unexpected(&format!("the value of property '{key}'"), fix)),
            };
            self.pos += 1;
            if properties.insert(key.clone(), value).is_some() {
                return Err(self.error(
                    loc,
                    format!("property '{key}' is set twice"),
                    "set each property once",
                ));
            }
            if self.eat_tok(&Token::Comma) {
                continue;
            }
            self.expect_tok(&Token::RParen, fix)?;
            return Ok(properties);
        }
    }

    fn flow(&mut self, loc: Loc) -> Result<FlowDef, ParseError> {
        let name = self.name("the flow's name")?;
        if self.eat_kw("COMMENT") {
            // Documentation only: a flow has no stored description.
            self.string("the comment's text", "write COMMENT 'text'")?;
        }
        let bodies = "write CREATE FLOW name AS INSERT INTO target BY NAME SELECT ..., or CREATE FLOW name AS AUTO CDC INTO target FROM STREAM(source) KEYS (...) SEQUENCE BY ...";
        self.expect_kw("AS", bodies)?;
        if self.eat_kw("INSERT") {
            let by_name = "write INSERT INTO t BY NAME SELECT ...: flows match columns by name";
            self.expect_kw("INTO", by_name)?;
            let once_target = matches!(self.peek_nth(1).map(|t| &t.token), Some(Token::Word(_)));
            if self.is_kw(0, "ONCE") && once_target && !self.is_kw(1, "BY") {
                return Err(self.error(
                    self.loc(),
                    "INSERT INTO ONCE (a one-time backfill flow) is not supported yet",
                    by_name,
                ));
            }
            let target = self.name("the flow's target table")?;
            if !(self.is_kw(0, "BY") && self.is_kw(1, "NAME")) {
                return Err(self.unexpected("BY NAME after the target table", by_name));
            }
            self.pos += 2;
            let query = self.query()?;
            return Ok(FlowDef {
                name,
                loc,
                target,
                body: FlowBody::Insert(query),
            });
        }
        if self.is_kw(0, "AUTO") || self.is_kw(0, "APPLY") {
            let (target, cdc) = self.auto_cdc()?;
            return Ok(FlowDef {
                name,
                loc,
                target,
                body: FlowBody::AutoCdc(cdc),
            });
        }
        Err(self.unexpected("INSERT INTO or AUTO CDC INTO", bodies))
    }

    /// `AUTO CDC INTO target FROM source KEYS (...) clauses` (or `APPLY CHANGES INTO`).
    fn auto_cdc(&mut self) -> Result<(Name, AutoCdcDef), ParseError> {
        let shape = "write AUTO CDC INTO target FROM STREAM(source) KEYS (key, ...) SEQUENCE BY column [more clauses]";
        if self.eat_kw("AUTO") {
            self.expect_kw("CDC", shape)?;
        } else {
            self.expect_kw("APPLY", shape)?;
            self.expect_kw("CHANGES", shape)?;
        }
        self.expect_kw("INTO", shape)?;
        let target = self.name("the target table")?;
        self.expect_kw("FROM", shape)?;
        let (source, stream) = self.cdc_source()?;
        let keys_loc = self.expect_kw("KEYS", shape)?;
        let keys = self.column_names("KEYS")?;
        let placeholder = format!("__f{}_s{}", self.file_index, *self.next_source);
        *self.next_source += 1;
        let mut cdc = AutoCdcDef {
            source: source.clone(),
            stream,
            keys,
            ignore_null_updates: false,
            apply_as_delete: None,
            apply_as_truncate: None,
            sequence_by: Expr::Value(Value::Null.into()),
            system_sequence_by: None,
            columns: ColumnList::All,
            scd_type: 1,
            track_history: None,
            query: QueryDef {
                query: select_all(&placeholder),
                loc: source.loc,
                text: String::new(),
                sources: vec![Source {
                    placeholder: placeholder.clone(),
                    kind: SourceKind::Table {
                        name: source.clone(),
                        stream,
                    },
                    loc: source.loc,
                }],
            },
            keys_loc,
        };
        let mut sequence_by = None;
        let mut seen = BTreeSet::new();
        let (mut truncate_loc, mut track_loc) = (None, None);
        while !self.at_end() {
            let loc = self.loc();
            let clause = if self.eat_kw("IGNORE") {
                self.expect_kw("NULL", "write IGNORE NULL UPDATES")?;
                self.expect_kw("UPDATES", "write IGNORE NULL UPDATES")?;
                cdc.ignore_null_updates = true;
                "IGNORE NULL UPDATES"
            } else if self.eat_kw("APPLY") {
                let fix =
                    "write APPLY AS DELETE WHEN condition or APPLY AS TRUNCATE WHEN condition";
                self.expect_kw("AS", fix)?;
                if self.eat_kw("DELETE") {
                    self.expect_kw("WHEN", fix)?;
                    cdc.apply_as_delete = Some(self.expr("APPLY AS DELETE WHEN")?.0);
                    "APPLY AS DELETE WHEN"
                } else if self.eat_kw("TRUNCATE") {
                    self.expect_kw("WHEN", fix)?;
                    cdc.apply_as_truncate = Some(self.expr("APPLY AS TRUNCATE WHEN")?.0);
                    truncate_loc = Some(loc);
                    "APPLY AS TRUNCATE WHEN"
                } else {
                    return Err(self.unexpected("DELETE or TRUNCATE after APPLY AS", fix));
                }
            } else if self.eat_kw("SEQUENCE") {
                self.expect_kw("BY", "write SEQUENCE BY column")?;
                sequence_by = Some(self.expr("SEQUENCE BY")?.0);
                "SEQUENCE BY"
            } else if self.eat_kw("SYSTEM") {
                self.expect_kw("SEQUENCE", "write SYSTEM SEQUENCE BY expression")?;
                self.expect_kw("BY", "write SYSTEM SEQUENCE BY expression")?;
                cdc.system_sequence_by = Some(self.expr("SYSTEM SEQUENCE BY")?.0);
                "SYSTEM SEQUENCE BY"
            } else if self.eat_kw("COLUMNS") {
                cdc.columns = self.column_list("COLUMNS")?;
                "COLUMNS"
            } else if self.eat_kw("STORED") {
                let fix = "write STORED AS SCD TYPE 1 or STORED AS SCD TYPE 2";
                self.expect_kw("AS", fix)?;
                self.expect_kw("SCD", fix)?;
                self.expect_kw("TYPE", fix)?;
                cdc.scd_type = match self.peek().map(|t| &t.token) {
                    Some(Token::Number(n, _)) if n == "1" => 1,
                    Some(Token::Number(n, _)) if n == "2" => 2,
                    _ => return Err(self.unexpected("1 or 2 after SCD TYPE", fix)),
                };
                self.pos += 1;
                "STORED AS"
            } else if self.eat_kw("TRACK") {
                let fix =
                    "write TRACK HISTORY ON column, ... or TRACK HISTORY ON * EXCEPT (column, ...)";
                self.expect_kw("HISTORY", fix)?;
                self.expect_kw("ON", fix)?;
                cdc.track_history = Some(self.column_list("TRACK HISTORY ON")?);
                track_loc = Some(loc);
                "TRACK HISTORY ON"
            } else {
                return Err(self.unexpected(
                    &format!("one of {CDC_CLAUSES}, or the end of the statement"),
                    "after KEYS (...), AUTO CDC takes those clauses, each once, in any order",
                ));
            };
            if !seen.insert(clause) {
                return Err(self.error(
                    loc,
                    format!("a second {clause} clause"),
                    format!("give {clause} once"),
                ));
            }
        }
        let Some(sequence_by) = sequence_by else {
            return Err(self.error(
                Loc::of(self.end_loc),
                "AUTO CDC has no SEQUENCE BY",
                "add SEQUENCE BY column: the column that orders the changes of a key",
            ));
        };
        cdc.sequence_by = sequence_by;
        if let (Some(loc), 1) = (track_loc, cdc.scd_type) {
            return Err(self.error(
                loc,
                "TRACK HISTORY ON applies to SCD type 2, and this target is type 1",
                "add STORED AS SCD TYPE 2, or remove TRACK HISTORY ON",
            ));
        }
        if let (Some(loc), 2) = (truncate_loc, cdc.scd_type) {
            return Err(self.error(
                loc,
                "APPLY AS TRUNCATE WHEN applies to SCD type 1, and this target is type 2",
                "remove APPLY AS TRUNCATE WHEN, or store the target as SCD TYPE 1",
            ));
        }
        cdc.query.query = cdc_query(&placeholder, &cdc);
        cdc.query.text = format!(
            "SELECT * FROM {}{}",
            if cdc.stream { "STREAM " } else { "" },
            cdc.source
        );
        Ok((target, cdc))
    }

    /// `STREAM(source)`, `STREAM source` or `source`.
    fn cdc_source(&mut self) -> Result<(Name, bool), ParseError> {
        let stream = self.is_kw(0, "STREAM")
            && (self.is_tok(1, &Token::LParen)
                || matches!(self.peek_nth(1).map(|t| &t.token), Some(Token::Word(_)))
                    && !self.is_kw(1, "KEYS"));
        if stream {
            self.pos += 1;
        }
        let parenthesized = stream && self.eat_tok(&Token::LParen);
        let function = self
            .peek()
            .is_some_and(|t| word_is(&t.token, "read_files") || word_is(&t.token, "read_kafka"))
            && self.is_tok(1, &Token::LParen);
        if function {
            return Err(self.error(
                self.loc(),
                format!("AUTO CDC reads a table or a view, found {}", self.found()),
                "define a streaming table or a temporary view over it, and name that in FROM",
            ));
        }
        let name = self.name("the source table")?;
        if parenthesized {
            self.expect_tok(&Token::RParen, "write FROM STREAM(source)")?;
        }
        Ok((name, stream))
    }

    /// `c, ...`, `(c, ...)`, `*` or `* EXCEPT (c, ...)`.
    fn column_list(&mut self, clause: &str) -> Result<ColumnList, ParseError> {
        if self.eat_tok(&Token::Mul) {
            if self.eat_kw("EXCEPT") {
                return Ok(ColumnList::Except(
                    self.column_names(&format!("{clause} * EXCEPT"))?,
                ));
            }
            return Ok(ColumnList::All);
        }
        if self.is_tok(0, &Token::LParen) {
            return Ok(ColumnList::Only(self.column_names(clause)?));
        }
        let fix = format!(
            "write {clause} column, ..., {clause} (column, ...) or {clause} * EXCEPT (column, ...)"
        );
        let mut columns = Vec::new();
        loop {
            columns.push(self.ident("a column name", &fix)?.0);
            if !self.eat_tok(&Token::Comma) {
                return Ok(ColumnList::Only(columns));
            }
        }
    }

    /// The rest of the statement as a query, its relations replaced by placeholders.
    fn query(&mut self) -> Result<QueryDef, ParseError> {
        let Some(&start) = self.sig.get(self.pos) else {
            return Err(self.unexpected(
                "a query after AS",
                "write the query: AS SELECT ... FROM ...",
            ));
        };
        let first = self.toks[start].span.start;
        let mut tokens = stream_keyword(&self.toks[start..self.end]);
        tokens.push(eof(self.end_loc));
        let dialect = GenericDialect {};
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
        let parsed = parser.parse_query();
        let next = parser.peek_token();
        if parsed.is_err() || next.token != Token::EOF {
            // A CREATE inside a query is the next statement, after a missing `;`.
            let create = self.toks[start..self.end]
                .iter()
                .find(|t| word_is(&t.token, "CREATE"));
            if let Some(create) = create {
                return Err(self.error(
                    Loc::of(create.span.start),
                    "expected `;` before CREATE: the statement before it does not end",
                    "end each statement with `;`",
                ));
            }
        }
        let mut query = parsed.map_err(|e| self.sql_error(&e, QUERY_FIX))?;
        if next.token != Token::EOF {
            return Err(self.error(
                Loc::of(next.span.start),
                format!("expected the end of the query, found `{}`", next.token),
                "correct the query here, and end each statement with `;`",
            ));
        }
        let mut rewriter = Rewriter {
            file: self.file,
            file_index: self.file_index,
            next: self.next_source,
            sources: Vec::new(),
            scopes: Vec::new(),
            saved: Vec::new(),
        };
        if let ControlFlow::Break(e) = query.visit(&mut rewriter) {
            return Err(e);
        }
        let sources = rewriter.sources;
        self.pos = self.sig.len();
        Ok(QueryDef {
            query,
            loc: Loc::of(first),
            text: self.lines.slice(first, self.end_loc).trim().to_string(),
            sources,
        })
    }
}

/// `SELECT * FROM <table>`.
fn select_all(table: &str) -> Box<Query> {
    let text = format!("SELECT * FROM {table}");
    let statement = Parser::parse_sql(&GenericDialect {}, &text)
        .expect("a constant query parses")
        .remove(0);
    let sqlparser::ast::Statement::Query(query) = statement else {
        unreachable!("a SELECT is a query")
    };
    query
}

/// `SELECT *, (SEQUENCE BY) AS __cdc_sequence, ... FROM <placeholder>`: the rows of an
/// AUTO CDC flow's source with the values of its clauses.
fn cdc_query(placeholder: &str, cdc: &AutoCdcDef) -> Box<Query> {
    use crate::pipeline::cdc::columns;
    let mut query = select_all(placeholder);
    let clauses = [
        (Some(&cdc.sequence_by), columns::SEQUENCE),
        (cdc.system_sequence_by.as_ref(), columns::SYSTEM_SEQUENCE),
        (cdc.apply_as_delete.as_ref(), columns::DELETE),
        (cdc.apply_as_truncate.as_ref(), columns::TRUNCATE),
    ];
    if let sqlparser::ast::SetExpr::Select(select) = query.body.as_mut() {
        for (expr, alias) in clauses {
            if let Some(expr) = expr {
                select
                    .projection
                    .push(sqlparser::ast::SelectItem::ExprWithAlias {
                        expr: expr.clone(),
                        alias: Ident::with_quote('"', alias),
                    });
            }
        }
    }
    query
}

/// Rewrites the keyword forms `STREAM t`, `STREAM s.t` and `STREAM read_files(...)` into
/// `STREAM(...)`, which sqlparser reads as a table function. Only a `STREAM` in a relation
/// position (after FROM, JOIN, or a comma of a FROM list) that is followed by a name or a
/// source function is the keyword: `FROM stream`, `FROM stream AS s`, `FROM stream WHERE`
/// and `SELECT stream FROM t` keep `stream` as a name.
fn stream_keyword(tokens: &[TokenWithSpan]) -> Vec<TokenWithSpan> {
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let token = |k: usize| sig.get(k).map(|&i| &tokens[i].token);
    // (index in `tokens` to insert before, token, where).
    let mut inserts: Vec<(usize, Token, Location)> = Vec::new();
    // Per parenthesis level: whether a FROM list is open at that level.
    let mut in_from = vec![false];
    let mut previous: Option<&Token> = None;
    for (k, &i) in sig.iter().enumerate() {
        let current = &tokens[i].token;
        match current {
            Token::LParen => in_from.push(false),
            Token::RParen if in_from.len() > 1 => {
                in_from.pop();
            }
            Token::Word(w) if w.quote_style.is_none() => {
                let level = in_from.last_mut().expect("the outer level is never popped");
                match w.keyword {
                    Keyword::FROM => *level = true,
                    Keyword::WHERE
                    | Keyword::GROUP
                    | Keyword::HAVING
                    | Keyword::ORDER
                    | Keyword::LIMIT
                    | Keyword::OFFSET
                    | Keyword::FETCH
                    | Keyword::UNION
                    | Keyword::EXCEPT
                    | Keyword::INTERSECT
                    | Keyword::SELECT
                    | Keyword::WINDOW
                    | Keyword::QUALIFY => *level = false,
                    _ => {}
                }
                let relation_position = match previous {
                    Some(Token::Word(p)) => {
                        p.quote_style.is_none()
                            && matches!(p.keyword, Keyword::FROM | Keyword::JOIN)
                    }
                    Some(Token::Comma) => *level,
                    _ => false,
                };
                if relation_position && w.value.eq_ignore_ascii_case("stream") {
                    if let Some(last) = stream_operand(&token, k + 1) {
                        let first = sig[k + 1];
                        inserts.push((first, Token::LParen, tokens[first].span.start));
                        inserts.push((sig[last] + 1, Token::RParen, tokens[sig[last]].span.end));
                    }
                }
            }
            _ => {}
        }
        previous = Some(current);
    }
    let mut out = Vec::with_capacity(tokens.len() + inserts.len());
    let mut inserts = inserts.into_iter().peekable();
    for (i, t) in tokens.iter().enumerate() {
        while let Some((_, token, at)) = inserts.next_if(|(before, ..)| *before == i) {
            out.push(TokenWithSpan {
                token,
                span: Span::new(at, at),
            });
        }
        out.push(t.clone());
    }
    for (_, token, at) in inserts {
        out.push(TokenWithSpan {
            token,
            span: Span::new(at, at),
        });
    }
    out
}

/// The position (in significant tokens) of the last token of what follows a `STREAM`
/// keyword at `k`: a dotted name, or `read_files(...)` / `read_kafka(...)`. `None` when
/// what follows is not one (then `STREAM` is a name).
fn stream_operand<'t>(token: &impl Fn(usize) -> Option<&'t Token>, k: usize) -> Option<usize> {
    let Some(Token::Word(w)) = token(k) else {
        return None;
    };
    let unquoted = w.quote_style.is_none();
    if unquoted
        && (w.value.eq_ignore_ascii_case("read_files")
            || w.value.eq_ignore_ascii_case("read_kafka"))
        && token(k + 1) == Some(&Token::LParen)
    {
        let mut depth = 0;
        let mut j = k + 1;
        while let Some(t) = token(j) {
            match t {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            }
            j += 1;
        }
        return None;
    }
    if unquoted && (w.keyword == Keyword::AS || RESERVED_FOR_TABLE_ALIAS.contains(&w.keyword)) {
        return None;
    }
    let mut last = k;
    while token(last + 1) == Some(&Token::Period) && matches!(token(last + 2), Some(Token::Word(_)))
    {
        last += 2;
    }
    Some(last)
}

fn make_name(idents: &[Ident], loc: Loc) -> Result<Name, String> {
    let mut parts: Vec<String> = idents.iter().map(ident_name).collect();
    if parts.len() > 3 {
        return Err(format!(
            "`{}` has {} parts",
            idents
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("."),
            parts.len()
        ));
    }
    if parts.len() == 2 && idents[0].quote_style.is_none() && parts[0] == "live" {
        parts.remove(0);
    }
    Ok(Name { parts, loc })
}

/// Replaces every source relation of a query by a placeholder table, in visiting order.
struct Rewriter<'a> {
    file: &'a str,
    file_index: usize,
    next: &'a mut usize,
    sources: Vec<Source>,
    /// The CTE names in scope, one frame per enclosing query.
    scopes: Vec<Vec<String>>,
    /// The `WITH` of each query being visited, taken out so that its CTEs are visited
    /// with their own scopes; put back after the query.
    saved: Vec<Option<sqlparser::ast::With>>,
}

impl VisitorMut for Rewriter<'_> {
    type Break = ParseError;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<ParseError> {
        let mut with = query.with.take();
        let mut names = Vec::new();
        if let Some(with) = with.as_mut() {
            names = with
                .cte_tables
                .iter()
                .map(|cte| ident_name(&cte.alias.name))
                .collect();
            let recursive = with.recursive;
            for (i, cte) in with.cte_tables.iter_mut().enumerate() {
                // A CTE sees the ones before it (and itself, when recursive).
                let visible = if recursive { i + 1 } else { i };
                self.scopes.push(names[..visible].to_vec());
                let flow = cte.query.visit(self);
                self.scopes.pop();
                flow?;
            }
        }
        self.scopes.push(names);
        self.saved.push(with);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<ParseError> {
        query.with = self.saved.pop().flatten();
        self.scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<ParseError> {
        match self.relation(factor) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

impl Rewriter<'_> {
    fn error(&self, at: Location, message: String, fix: &str) -> ParseError {
        ParseError {
            file: self.file.to_string(),
            loc: Loc::of(at),
            message,
            fix: upper_first(fix),
        }
    }

    fn is_cte(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|n| n == name))
    }

    fn relation(&mut self, factor: &mut TableFactor) -> Result<(), ParseError> {
        let TableFactor::Table {
            name, alias, args, ..
        } = factor
        else {
            return Ok(());
        };
        let idents: Option<Vec<Ident>> = name.0.iter().map(|p| p.as_ident().cloned()).collect();
        let Some(idents) = idents else {
            return Ok(());
        };
        let Some(first) = idents.first() else {
            return Ok(());
        };
        let start = first.span.start;
        let function = match (&idents[..], args.is_some()) {
            ([one], true) if one.quote_style.is_none() => one.value.to_lowercase(),
            (_, true) => return Ok(()),
            _ => String::new(),
        };
        let (kind, default_alias) = match function.as_str() {
            "" => {
                if idents.len() == 1 && self.is_cte(&ident_name(first)) {
                    return Ok(());
                }
                let name = self.name(&idents, start)?;
                let alias = idents.last().cloned();
                (
                    SourceKind::Table {
                        name,
                        stream: false,
                    },
                    alias,
                )
            }
            "stream" => {
                let args = args.as_ref().map(|a| a.args.as_slice()).unwrap_or_default();
                self.stream(args, start)?
            }
            "read_files" | "read_kafka" => {
                let args = args.as_ref().map(|a| a.args.as_slice()).unwrap_or_default();
                (self.function(&function, args, false, start)?, None)
            }
            _ => return Ok(()),
        };
        let placeholder = format!("__f{}_s{}", self.file_index, *self.next);
        *self.next += 1;
        *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::with_span(
            Span::new(start, start),
            placeholder.clone(),
        ))]);
        *args = None;
        if alias.is_none() {
            *alias = default_alias.map(|name| TableAlias {
                explicit: true,
                name,
                columns: Vec::new(),
                at: None,
            });
        }
        self.sources.push(Source {
            placeholder,
            kind,
            loc: Loc::of(start),
        });
        Ok(())
    }

    fn name(&self, idents: &[Ident], at: Location) -> Result<Name, ParseError> {
        make_name(idents, Loc::of(at)).map_err(|m| {
            self.error(
                at,
                m,
                "a name has at most three parts: catalog.schema.table",
            )
        })
    }

    /// The argument of `STREAM(...)`: a table name or a source function.
    fn stream(
        &self,
        args: &[FunctionArg],
        at: Location,
    ) -> Result<(SourceKind, Option<Ident>), ParseError> {
        let fix =
            "write STREAM(table), STREAM table, or STREAM read_files('path', format => 'csv')";
        let expr = match args {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(expr))] => expr,
            _ => {
                return Err(self.error(
                    at,
                    format!(
                        "STREAM takes one table, view, read_files(...) or read_kafka(...), found STREAM({})",
                        args.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
                    ),
                    fix,
                ))
            }
        };
        let idents = match expr {
            Expr::Identifier(ident) => vec![ident.clone()],
            Expr::CompoundIdentifier(idents) => idents.clone(),
            Expr::Function(f) => {
                let function = match &f.name.0[..] {
                    [ObjectNamePart::Identifier(i)] if i.quote_style.is_none() => {
                        i.value.to_lowercase()
                    }
                    _ => String::new(),
                };
                let list = match &f.args {
                    FunctionArguments::List(list) => list.args.as_slice(),
                    FunctionArguments::None => &[],
                    FunctionArguments::Subquery(_) => &[],
                };
                if function == "read_files" || function == "read_kafka" {
                    return Ok((self.function(&function, list, true, at)?, None));
                }
                return Err(self.error(
                    expr.span().start,
                    format!("STREAM reads a table, a view, read_files(...) or read_kafka(...), found `{expr}`"),
                    fix,
                ));
            }
            _ => {
                return Err(self.error(
                    expr.span().start,
                    format!("STREAM reads a table, a view, read_files(...) or read_kafka(...), found `{expr}`"),
                    fix,
                ))
            }
        };
        if idents.len() == 1 && self.is_cte(&ident_name(&idents[0])) {
            return Err(self.error(
                at,
                format!("STREAM({}) names a query of this statement's WITH clause", idents[0]),
                "STREAM reads a table or view of the pipeline: put STREAM inside the WITH query, and read the WITH name without it",
            ));
        }
        let name = self.name(&idents, idents[0].span.start)?;
        let alias = idents.last().cloned();
        Ok((SourceKind::Table { name, stream: true }, alias))
    }

    /// `read_files(...)` or `read_kafka(...)`.
    fn function(
        &self,
        function: &str,
        args: &[FunctionArg],
        stream: bool,
        at: Location,
    ) -> Result<SourceKind, ParseError> {
        let files = function == "read_files";
        let fix = if files {
            "write read_files('path', format => 'csv', key => 'value', ...)"
        } else {
            "write read_kafka(bootstrapServers => 'host:port', subscribe => 'topic', ...)"
        };
        let mut path: Option<String> = None;
        let mut options = BTreeMap::new();
        for (i, arg) in args.iter().enumerate() {
            let arg_at = arg.span().start;
            let arg_at = if arg_at.line == 0 { at } else { arg_at };
            match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) if files && i == 0 => {
                    path = Some(literal(expr).filter(|_| is_string(expr)).ok_or_else(|| {
                        self.error(
                            arg_at,
                            format!("read_files takes the path as a string first, found `{expr}`"),
                            fix,
                        )
                    })?);
                }
                FunctionArg::Named {
                    name,
                    arg,
                    operator,
                } => {
                    if *operator != FunctionArgOperator::RightArrow {
                        return Err(self.error(
                            name.span.start,
                            format!("option `{name}` is written `{name} {operator} ...`"),
                            &format!("write {name} => value"),
                        ));
                    }
                    let value = match arg {
                        FunctionArgExpr::Expr(expr) => literal(expr),
                        _ => None,
                    };
                    let value_at = match arg {
                        FunctionArgExpr::Expr(expr) if expr.span().start.line > 0 => {
                            expr.span().start
                        }
                        _ => arg_at,
                    };
                    let Some(value) = value else {
                        return Err(self.error(
                            value_at,
                            format!("the value of option `{name}` is `{arg}`, not a literal"),
                            "write a string, number or boolean: key => 'value'",
                        ));
                    };
                    let key = name.value.clone();
                    if files && key.eq_ignore_ascii_case("schema") {
                        if let Err(problem) = parse_schema(&value) {
                            return Err(self.error(
                                value_at,
                                problem,
                                "write the schema as 'name TYPE, ...', e.g. schema => 'id BIGINT, price DOUBLE'",
                            ));
                        }
                    }
                    if files && key.eq_ignore_ascii_case("path") {
                        if path.is_some() {
                            return Err(self.error(
                                name.span.start,
                                "read_files has two paths".into(),
                                fix,
                            ));
                        }
                        path = Some(value);
                    } else if options
                        .keys()
                        .any(|k: &String| k.eq_ignore_ascii_case(&key))
                    {
                        return Err(self.error(
                            name.span.start,
                            format!("option `{key}` is given twice"),
                            "give each option once (option names ignore case)",
                        ));
                    } else {
                        options.insert(key, value);
                    }
                }
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                })) if matches!(**left, Expr::Identifier(_)) => {
                    return Err(self.error(
                        arg_at,
                        format!("option `{left}` is written with `=`"),
                        &format!("write {left} => {right}: options are named with =>"),
                    ))
                }
                _ => {
                    return Err(self.error(
                        arg_at,
                        format!("{function} takes named options `key => value`, found `{arg}`"),
                        fix,
                    ))
                }
            }
        }
        if !files {
            return Ok(SourceKind::ReadKafka { options, stream });
        }
        let Some(path) = path else {
            return Err(self.error(at, "read_files has no path".into(), fix));
        };
        Ok(SourceKind::ReadFiles {
            path,
            options,
            stream,
        })
    }
}

fn is_string(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_) | Value::DoubleQuotedString(_)))
}

/// A string, number or boolean literal as text.
fn literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match &**expr {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Some(format!("-{n}")),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::visit_relations;

    fn parse(text: &str) -> Vec<Definition> {
        parse_file("p.sql", 0, text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn one(text: &str) -> Definition {
        let mut defs = parse(text);
        assert_eq!(defs.len(), 1, "{defs:?}");
        defs.remove(0)
    }

    fn table(text: &str) -> TableDef {
        match one(text) {
            Definition::Table(t) => t,
            other => panic!("not a table: {other:?}"),
        }
    }

    fn view(text: &str) -> ViewDef {
        match one(text) {
            Definition::View(v) => v,
            other => panic!("not a view: {other:?}"),
        }
    }

    fn flow(text: &str) -> FlowDef {
        match one(text) {
            Definition::Flow(f) => f,
            other => panic!("not a flow: {other:?}"),
        }
    }

    fn cdc(text: &str) -> AutoCdcDef {
        match flow(text).body {
            FlowBody::AutoCdc(c) => c,
            other => panic!("not AUTO CDC: {other:?}"),
        }
    }

    fn query(text: &str) -> QueryDef {
        table(text).query.expect("a query")
    }

    fn err(text: &str) -> ParseError {
        match parse_file("p.sql", 0, text) {
            Ok(defs) => panic!("expected an error, parsed {defs:?}"),
            Err(e) => e,
        }
    }

    fn at(line: u64, column: u64) -> Loc {
        Loc { line, column }
    }

    fn table_source(name: &[&str], stream: bool) -> SourceKind {
        SourceKind::Table {
            name: Name {
                parts: name.iter().map(|p| p.to_string()).collect(),
                loc: Loc::default(),
            },
            stream,
        }
    }

    /// The sources' kinds with the name locations blanked, to compare with `table_source`.
    fn kinds(q: &QueryDef) -> Vec<SourceKind> {
        q.sources
            .iter()
            .map(|s| match &s.kind {
                SourceKind::Table { name, stream } => SourceKind::Table {
                    name: Name {
                        parts: name.parts.clone(),
                        loc: Loc::default(),
                    },
                    stream: *stream,
                },
                other => other.clone(),
            })
            .collect()
    }

    fn placeholders(q: &QueryDef) -> Vec<String> {
        q.sources.iter().map(|s| s.placeholder.clone()).collect()
    }

    #[test]
    fn splits_statements_at_semicolons_outside_quotes_and_comments() {
        let text = "-- a comment; with a semicolon\n\
            /* a block; comment */\n\
            CREATE STREAMING TABLE a COMMENT 'one; two' AS SELECT ';' AS s, \"x;y\" FROM t;;\n\
            ;\n\
            CREATE MATERIALIZED VIEW `b;c` AS SELECT 1 AS one -- trailing; comment\n\
            ;\n\
            CREATE TEMPORARY VIEW v AS SELECT * /* ; */ FROM a";
        let defs = parse(text);
        assert_eq!(defs.len(), 3);
        let Definition::Table(a) = &defs[0] else {
            panic!("{:?}", defs[0])
        };
        assert_eq!(a.name.to_string(), "a");
        assert_eq!(a.comment.as_deref(), Some("one; two"));
        assert_eq!(a.loc, at(3, 1));
        let q = a.query.as_ref().unwrap();
        assert_eq!(q.text, "SELECT ';' AS s, \"x;y\" FROM t");
        let Definition::Table(b) = &defs[1] else {
            panic!("{:?}", defs[1])
        };
        assert_eq!(b.name.parts, ["b;c"]);
        assert_eq!(
            b.query.as_ref().unwrap().text,
            "SELECT 1 AS one -- trailing; comment"
        );
        assert!(matches!(&defs[2], Definition::View(v) if v.name.parts == ["v"]));
        assert!(parse("  ;; -- nothing\n;").is_empty());
        let t = table("\u{feff}CREATE MATERIALIZED VIEW m AS SELECT 1");
        assert_eq!(t.loc, at(1, 2));
    }

    #[test]
    fn streaming_table_with_every_element_and_clause() {
        let t = table(
            "CREATE OR REFRESH STREAMING TABLE silver.Trades (\n\
             \x20 id BIGINT NOT NULL COMMENT 'the id',\n\
             \x20 Price DECIMAL(10,2),\n\
             \x20 \"Sym\" STRING COMMENT 'ticker' NOT NULL,\n\
             \x20 tags MAP<STRING, INT>,\n\
             \x20 CONSTRAINT valid_id EXPECT (id IS NOT NULL) ON VIOLATION DROP ROW,\n\
             \x20 CONSTRAINT positive EXPECT (price > 0) ON VIOLATION FAIL UPDATE,\n\
             \x20 CONSTRAINT Soft EXPECT (length(\"Sym\") < 5),\n\
             \x20 CONSTRAINT pk PRIMARY KEY (id, \"Sym\")\n\
             )\n\
             TBLPROPERTIES ('quarantine' = 'q.trades', pipelines.reset.allowed = false, 'n' = 3)\n\
             PARTITIONED BY (Price)\n\
             COMMENT 'all trades'\n\
             AS SELECT * FROM STREAM(bronze.trades)",
        );
        assert_eq!(t.kind, TableKind::StreamingTable);
        assert_eq!(t.name.parts, ["silver", "trades"]);
        assert_eq!(t.name.loc, at(1, 35));
        let columns: Vec<_> = t
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.data_type.to_string(),
                    c.not_null,
                    c.comment.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            columns,
            [
                ("id", "BIGINT".to_string(), true, Some("the id")),
                ("Price", "DECIMAL(10,2)".to_string(), false, None),
                ("Sym", "STRING".to_string(), true, Some("ticker")),
                ("tags", "Map(STRING, INT)".to_string(), false, None),
            ]
        );
        assert_eq!(t.columns[1].loc, at(3, 3));
        let expectations: Vec<_> = t
            .expectations
            .iter()
            .map(|e| (e.name.as_str(), e.text.as_str(), e.action, e.loc))
            .collect();
        assert_eq!(
            expectations,
            [
                ("valid_id", "id IS NOT NULL", Violation::DropRow, at(6, 3)),
                ("positive", "price > 0", Violation::FailUpdate, at(7, 3)),
                ("Soft", "length(\"Sym\") < 5", Violation::Warn, at(8, 3)),
            ]
        );
        // The expression's spans are file-absolute.
        assert_eq!(t.expectations[1].expr.span().start, Location::new(7, 31));
        assert_eq!(t.expectations[1].expr.to_string(), "price > 0");
        let key = t.primary_key.as_ref().unwrap();
        assert_eq!(key.name.as_deref(), Some("pk"));
        assert_eq!(key.columns, ["id", "Sym"]);
        assert_eq!(key.loc, at(9, 3));
        assert_eq!(t.partitioned_by, ["Price"]);
        assert_eq!(t.comment.as_deref(), Some("all trades"));
        let properties: Vec<_> = t
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            properties,
            [
                ("n", "3"),
                ("pipelines.reset.allowed", "false"),
                ("quarantine", "q.trades"),
            ]
        );
        let q = t.query.unwrap();
        assert_eq!(q.loc, at(14, 4));
        assert_eq!(kinds(&q), [table_source(&["bronze", "trades"], true)]);
    }

    #[test]
    fn a_streaming_table_without_a_query_is_a_flow_target() {
        let t = table("CREATE STREAMING TABLE target");
        assert!(t.query.is_none());
        assert!(t.columns.is_empty());
        let t = table("CREATE OR REFRESH PRIVATE STREAMING TABLE target (PRIMARY KEY (k), k INT)");
        assert!(t.query.is_none());
        let key = t.primary_key.unwrap();
        assert_eq!((key.name, key.columns), (None, vec!["k".to_string()]));
    }

    #[test]
    fn legacy_and_private_spellings() {
        let kind = |text: &str| match one(text) {
            Definition::Table(t) => Some(t.kind),
            Definition::View(_) => None,
            Definition::Flow(f) => panic!("{f:?}"),
        };
        let streaming = Some(TableKind::StreamingTable);
        let materialized = Some(TableKind::MaterializedView);
        assert_eq!(kind("CREATE STREAMING LIVE TABLE t AS SELECT 1"), streaming);
        assert_eq!(kind("CREATE OR REFRESH STREAMING LIVE TABLE t"), streaming);
        assert_eq!(
            kind("create incremental live table t as select 1"),
            streaming
        );
        assert_eq!(
            kind("CREATE OR REFRESH LIVE TABLE t AS SELECT 1"),
            materialized
        );
        assert_eq!(
            kind("CREATE PRIVATE MATERIALIZED VIEW t AS SELECT 1"),
            materialized
        );
        assert_eq!(kind("CREATE TEMPORARY LIVE VIEW v AS SELECT 1"), None);
        assert_eq!(kind("CREATE LIVE VIEW v AS SELECT 1"), None);
        assert_eq!(
            kind("CREATE TEMPORARY STREAMING LIVE VIEW v AS SELECT 1"),
            None
        );
    }

    #[test]
    fn materialized_view_sources_in_ctes_subqueries_and_union_branches() {
        let q = query(
            "CREATE MATERIALIZED VIEW gold AS\n\
             WITH recent AS (SELECT * FROM silver.trades WHERE ts > now()),\n\
             \x20    joined AS (SELECT * FROM recent JOIN dim.symbols d ON recent.s = d.s)\n\
             SELECT * FROM joined\n\
             UNION ALL\n\
             SELECT * FROM (SELECT * FROM archive) a WHERE a.s IN (SELECT s FROM banned)",
        );
        assert_eq!(
            kinds(&q),
            [
                table_source(&["silver", "trades"], false),
                table_source(&["dim", "symbols"], false),
                table_source(&["archive"], false),
                table_source(&["banned"], false),
            ]
        );
        assert_eq!(
            placeholders(&q),
            ["__f0_s0", "__f0_s1", "__f0_s2", "__f0_s3"]
        );
        let sql = q.query.to_string();
        // The CTE names are left alone; the user's alias is kept.
        assert!(sql.contains("FROM recent JOIN __f0_s1 d ON"), "{sql}");
        assert!(sql.contains("SELECT * FROM joined UNION ALL"), "{sql}");
        assert!(sql.contains("FROM __f0_s0 AS trades WHERE"), "{sql}");
    }

    #[test]
    fn cte_scopes() {
        let q = query(
            "CREATE MATERIALIZED VIEW m AS\n\
             WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS x)\n\
             SELECT * FROM a, b, (WITH inner_cte AS (SELECT 1) SELECT * FROM inner_cte) i, inner_cte",
        );
        // `b` inside `a` is defined after it, so it is a table; `inner_cte` outside its
        // subquery is a table too.
        assert_eq!(
            kinds(&q),
            [
                table_source(&["b"], false),
                table_source(&["inner_cte"], false)
            ]
        );
        let q = query(
            "CREATE MATERIALIZED VIEW m AS WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r) SELECT * FROM r",
        );
        assert!(q.sources.is_empty());
    }

    #[test]
    fn temporary_view() {
        let v = view("CREATE TEMPORARY VIEW cleaned AS SELECT * FROM STREAM(raw) WHERE ok");
        assert_eq!(v.name.parts, ["cleaned"]);
        assert_eq!(v.loc, at(1, 1));
        assert_eq!(kinds(&v.query), [table_source(&["raw"], true)]);
        assert_eq!(v.query.text, "SELECT * FROM STREAM(raw) WHERE ok");
    }

    #[test]
    fn temporary_view_with_columns_expectations_and_clauses() {
        let v = view(
            "CREATE TEMPORARY VIEW clean (\n\
             \x20 Id COMMENT 'the key',\n\
             \x20 `Amount`,\n\
             \x20 CONSTRAINT valid_id EXPECT (id IS NOT NULL) ON VIOLATION DROP ROW,\n\
             \x20 CONSTRAINT positive EXPECT (amount > 0)\n\
             )\n\
             COMMENT 'cleaned rows'\n\
             TBLPROPERTIES ('quality' = 'silver', pipelines.reset.allowed = false)\n\
             AS SELECT * FROM STREAM(raw)",
        );
        assert_eq!(v.name.parts, ["clean"]);
        assert_eq!(v.loc, at(1, 1));
        assert_eq!(v.columns, ["Id", "Amount"]);
        let e = &v.expectations;
        assert_eq!(e.len(), 2);
        assert_eq!(
            (
                e[0].name.as_str(),
                e[0].text.as_str(),
                e[0].action,
                e[0].loc
            ),
            ("valid_id", "id IS NOT NULL", Violation::DropRow, at(4, 3))
        );
        assert_eq!(
            (
                e[1].name.as_str(),
                e[1].text.as_str(),
                e[1].action,
                e[1].loc
            ),
            ("positive", "amount > 0", Violation::Warn, at(5, 3))
        );
        assert_eq!(e[1].expr.to_string(), "amount > 0");
        assert_eq!(v.comment.as_deref(), Some("cleaned rows"));
        assert_eq!(
            v.properties,
            BTreeMap::from([
                ("pipelines.reset.allowed".to_string(), "false".to_string()),
                ("quality".to_string(), "silver".to_string()),
            ])
        );
        assert_eq!(v.query.text, "SELECT * FROM STREAM(raw)");
        assert_eq!(v.query.loc, at(9, 4));
        assert_eq!(kinds(&v.query), [table_source(&["raw"], true)]);

        // Expectations alone, clauses in any order, and a constraint before a column.
        let v = view(
            "CREATE TEMPORARY VIEW v (CONSTRAINT c EXPECT (x > 0) ON VIOLATION FAIL UPDATE) \
             TBLPROPERTIES ('a' = '1') COMMENT 'c' AS SELECT 1 AS x",
        );
        assert!(v.columns.is_empty());
        assert_eq!(v.expectations[0].action, Violation::FailUpdate);
        assert_eq!(v.comment.as_deref(), Some("c"));
        assert_eq!(v.properties.len(), 1);
        let v = view("CREATE TEMPORARY VIEW v (CONSTRAINT c EXPECT (a > 0), a, b COMMENT 'b') AS SELECT 1, 2");
        assert_eq!(v.columns, ["a", "b"]);
        assert_eq!(v.expectations.len(), 1);

        // Without any of them, the new fields are empty.
        let v = view("CREATE TEMPORARY VIEW v AS SELECT 1");
        assert!(v.columns.is_empty() && v.expectations.is_empty());
        assert!(v.comment.is_none() && v.properties.is_empty());
    }

    #[test]
    fn legacy_view_spellings_take_the_same_clauses() {
        for create in [
            "CREATE LIVE VIEW",
            "CREATE TEMPORARY LIVE VIEW",
            "create temporary streaming live view",
        ] {
            let v = view(&format!(
                "{create} LIVE.v (a COMMENT 'x', CONSTRAINT ok EXPECT (a > 0) ON VIOLATION DROP ROW) \
                 COMMENT 'legacy' TBLPROPERTIES ('k' = 'v') AS SELECT * FROM LIVE.src"
            ));
            assert_eq!(v.name.parts, ["v"], "{create}");
            assert_eq!(v.columns, ["a"], "{create}");
            assert_eq!(v.expectations[0].name, "ok", "{create}");
            assert_eq!(v.expectations[0].action, Violation::DropRow, "{create}");
            assert_eq!(v.comment.as_deref(), Some("legacy"), "{create}");
            assert_eq!(v.properties["k"], "v", "{create}");
            assert_eq!(kinds(&v.query), [table_source(&["src"], false)], "{create}");
        }
        let e = err("CREATE LIVE VIEW v (a STRING) AS SELECT 1");
        assert_eq!(e.loc, at(1, 23));
        assert!(e.message.contains("type STRING"), "{e}");
    }

    #[test]
    fn view_errors() {
        // A data type, with or without a comment before it.
        let e = err("CREATE TEMPORARY VIEW v (a INT) AS SELECT 1");
        assert_eq!(e.loc, at(1, 28));
        assert_eq!(e.message, "column `a` of a view is given the type INT");
        assert!(e.fix.contains("`name [COMMENT 'text']`"), "{e}");
        let e = err("CREATE TEMPORARY VIEW v (a COMMENT 'x' DECIMAL(10, 2)) AS SELECT 1");
        assert_eq!(e.loc, at(1, 40));
        assert!(e.message.contains("DECIMAL(10,2)"), "{e}");
        // NOT NULL.
        let e = err("CREATE TEMPORARY VIEW v (a NOT NULL) AS SELECT 1");
        assert_eq!(e.loc, at(1, 28));
        assert!(e.message.contains("NOT NULL"), "{e}");
        assert!(e.fix.contains("`name [COMMENT 'text']`"), "{e}");
        assert!(e.fix.contains("EXPECT (column IS NOT NULL)"), "{e}");
        // PRIMARY KEY, named or not.
        let e = err("CREATE TEMPORARY VIEW v (a, PRIMARY KEY (a)) AS SELECT 1");
        assert_eq!(e.loc, at(1, 29));
        assert_eq!(e.message, "a view has no PRIMARY KEY");
        assert!(e.fix.starts_with("A view's column list holds"), "{e}");
        let e = err("CREATE TEMPORARY VIEW v (a, CONSTRAINT pk PRIMARY KEY (a)) AS SELECT 1");
        assert_eq!(e.loc, at(1, 43));
        assert!(e.message.contains("PRIMARY KEY"), "{e}");
        // PARTITIONED BY (and CLUSTER BY).
        let e = err("CREATE TEMPORARY VIEW v (a) PARTITIONED BY (a) AS SELECT 1");
        assert_eq!(e.loc, at(1, 29));
        assert!(e.message.contains("PARTITIONED BY"), "{e}");
        assert_eq!(
            e.fix,
            "A view's clauses are COMMENT '...' and TBLPROPERTIES (...), then AS query"
        );
        let e = err("CREATE TEMPORARY VIEW v CLUSTER BY (a) AS SELECT 1");
        assert_eq!(e.loc, at(1, 25));
        assert!(e.message.contains("CLUSTER BY"), "{e}");
        // Expectation names are unique within the view, whatever their case.
        let e = err(
            "CREATE TEMPORARY VIEW v (CONSTRAINT x EXPECT (a), CONSTRAINT X EXPECT (b)) AS SELECT 1",
        );
        assert_eq!(e.loc, at(1, 51));
        assert!(e.message.contains("second expectation named `X`"), "{e}");
        assert_eq!(e.fix, "Give each expectation of a view its own name");
        // Columns are named once.
        let e = err("CREATE TEMPORARY VIEW v (a, A) AS SELECT 1, 2");
        assert_eq!(e.loc, at(1, 29));
        assert!(e.message.contains("twice"), "{e}");
        // Anything else after a column's name.
        let e = err("CREATE TEMPORARY VIEW v (a b) AS SELECT 1");
        assert_eq!(e.loc, at(1, 28));
        assert!(e.message.contains("found `b`"), "{e}");
        let e = err("CREATE TEMPORARY VIEW v (a COMMENT 'x' COMMENT 'y') AS SELECT 1");
        assert_eq!(e.loc, at(1, 40));
        let e = err("CREATE TEMPORARY VIEW v () AS SELECT 1");
        assert_eq!(e.loc, at(1, 26));
        assert!(e.fix.starts_with("A view's column list holds"), "{e}");
        let e = err("CREATE TEMPORARY VIEW v (CONSTRAINT c CHECK (a > 0)) AS SELECT 1");
        assert_eq!(e.loc, at(1, 39));
        assert!(e.fix.contains("EXPECT"), "{e}");
        // Clauses: once each, only those a view has, and a query.
        let e = err("CREATE TEMPORARY VIEW v COMMENT 'a' COMMENT 'b' AS SELECT 1");
        assert_eq!(e.loc, at(1, 37));
        assert!(e.message.contains("second COMMENT"), "{e}");
        let e = err("CREATE TEMPORARY VIEW v USING DELTA AS SELECT 1");
        assert_eq!(e.loc, at(1, 25));
        assert!(e.message.contains("found `USING`"), "{e}");
        let e = err("CREATE TEMPORARY VIEW v (a) COMMENT 'x'");
        assert_eq!(e.loc, at(1, 40));
        assert_eq!(e.message, "view v has no query");
        assert!(e.fix.contains("AS SELECT"), "{e}");
    }

    #[test]
    fn insert_flow() {
        let f = flow(
            "CREATE FLOW backfill AS INSERT INTO main.silver.t BY NAME SELECT * FROM STREAM old",
        );
        assert_eq!(f.name.parts, ["backfill"]);
        assert_eq!(f.target.parts, ["main", "silver", "t"]);
        let FlowBody::Insert(q) = f.body else {
            panic!("{:?}", f.body)
        };
        assert_eq!(kinds(&q), [table_source(&["old"], true)]);
    }

    #[test]
    fn auto_cdc_with_every_clause() {
        let c = cdc("CREATE FLOW cdc AS AUTO CDC INTO customers\n\
             FROM STREAM(cdc_feed)\n\
             KEYS (id, \"Region\")\n\
             IGNORE NULL UPDATES\n\
             APPLY AS DELETE WHEN operation = 'DELETE'\n\
             SEQUENCE BY struct(ts, seq)\n\
             SYSTEM SEQUENCE BY _offset\n\
             COLUMNS * EXCEPT (operation, _offset)\n\
             STORED AS SCD TYPE 2\n\
             TRACK HISTORY ON name, address");
        assert_eq!(c.source.parts, ["cdc_feed"]);
        assert!(c.stream);
        assert_eq!(c.keys, ["id", "Region"]);
        assert!(c.ignore_null_updates);
        let delete = c.apply_as_delete.unwrap();
        assert_eq!(delete.to_string(), "operation = 'DELETE'");
        assert_eq!(delete.span().start, Location::new(5, 22));
        assert!(c.apply_as_truncate.is_none());
        assert_eq!(c.sequence_by.to_string(), "STRUCT(ts, seq)");
        assert_eq!(c.system_sequence_by.unwrap().to_string(), "_offset");
        assert_eq!(
            c.columns,
            ColumnList::Except(vec!["operation".into(), "_offset".into()])
        );
        assert_eq!(c.scd_type, 2);
        assert_eq!(
            c.track_history,
            Some(ColumnList::Only(vec!["name".into(), "address".into()]))
        );
    }

    #[test]
    fn auto_cdc_clauses_in_any_order_and_column_lists() {
        let c = cdc(
            "CREATE FLOW f AS AUTO CDC INTO t FROM STREAM s.src KEYS (k) \
             TRACK HISTORY ON * STORED AS SCD TYPE 2 COLUMNS (a, b) \
             APPLY AS DELETE WHEN d SEQUENCE BY ts",
        );
        assert_eq!(c.source.parts, ["s", "src"]);
        assert!(c.stream);
        assert_eq!(c.columns, ColumnList::Only(vec!["a".into(), "b".into()]));
        assert_eq!(c.track_history, Some(ColumnList::All));
        let c = cdc(
            "CREATE FLOW f AS AUTO CDC INTO t FROM src KEYS (k) SEQUENCE BY ts \
             APPLY AS TRUNCATE WHEN op = 'T' STORED AS SCD TYPE 1",
        );
        assert!(!c.stream);
        assert_eq!(c.scd_type, 1);
        assert!(c.apply_as_truncate.is_some());
        assert_eq!(c.columns, ColumnList::All);
        assert_eq!(c.track_history, None);
    }

    #[test]
    fn auto_cdc_track_history_on_except() {
        let c = cdc(
            "CREATE FLOW f AS AUTO CDC INTO t FROM src KEYS (k) SEQUENCE BY ts \
             STORED AS SCD TYPE 2 TRACK HISTORY ON * EXCEPT (x, y)",
        );
        assert_eq!(
            c.track_history,
            Some(ColumnList::Except(vec!["x".into(), "y".into()]))
        );
    }

    #[test]
    fn apply_changes_spellings() {
        let f = flow(
            "\n  APPLY CHANGES INTO LIVE.target FROM STREAM(LIVE.source) KEYS (id) SEQUENCE BY ts",
        );
        assert_eq!(f.name.parts, ["target"]);
        assert_eq!(f.target.parts, ["target"]);
        assert_eq!(f.loc, at(2, 3));
        let FlowBody::AutoCdc(c) = f.body else {
            panic!("{:?}", f.body)
        };
        assert_eq!(c.source.parts, ["source"]);
        assert!(c.stream);
        assert_eq!(c.scd_type, 1);
        let f =
            flow("CREATE FLOW named AS APPLY CHANGES INTO t FROM stream KEYS (id) SEQUENCE BY ts");
        assert_eq!(f.name.parts, ["named"]);
        let FlowBody::AutoCdc(c) = f.body else {
            panic!("{:?}", f.body)
        };
        // `FROM stream KEYS`: a table named stream.
        assert_eq!(
            (c.source.parts, c.stream),
            (vec!["stream".to_string()], false)
        );
    }

    #[test]
    fn stream_forms() {
        let q = query(
            "CREATE STREAMING TABLE t AS SELECT * FROM STREAM bronze.events e \
             JOIN STREAM(other) AS s ON e.k = s.k, STREAM lonely",
        );
        assert_eq!(
            kinds(&q),
            [
                table_source(&["bronze", "events"], true),
                table_source(&["other"], true),
                table_source(&["lonely"], true),
            ]
        );
        assert_eq!(
            q.query.to_string(),
            "SELECT * FROM __f0_s0 e JOIN __f0_s1 AS s ON e.k = s.k, __f0_s2 AS lonely"
        );
        // Without an alias, the last part of the name is the alias, so `events.value`
        // still resolves.
        let q = query("CREATE STREAMING TABLE t AS SELECT events.value FROM STREAM(bronze.events)");
        assert_eq!(
            q.query.to_string(),
            "SELECT events.value FROM __f0_s0 AS events"
        );
    }

    #[test]
    fn stream_read_files_and_read_kafka() {
        let q = query(
            "CREATE STREAMING TABLE t AS SELECT * FROM STREAM read_files('/x', format => 'json', header => true, maxFiles => 10, skew => -1.5)",
        );
        let mut options = BTreeMap::new();
        for (k, v) in [
            ("format", "json"),
            ("header", "true"),
            ("maxFiles", "10"),
            ("skew", "-1.5"),
        ] {
            options.insert(k.to_string(), v.to_string());
        }
        assert_eq!(
            kinds(&q),
            [SourceKind::ReadFiles {
                path: "/x".into(),
                options: options.clone(),
                stream: true
            }]
        );
        assert_eq!(q.query.to_string(), "SELECT * FROM __f0_s0");
        let q = query(
            "CREATE MATERIALIZED VIEW t AS SELECT * FROM read_files(path => '/y', format => 'csv', schema => 'a STRING, b DOUBLE') f, STREAM(read_files('/z', format => 'parquet'))",
        );
        assert_eq!(q.sources.len(), 2);
        let SourceKind::ReadFiles {
            path,
            options,
            stream,
        } = &q.sources[0].kind
        else {
            panic!("{:?}", q.sources[0])
        };
        assert_eq!((path.as_str(), *stream), ("/y", false));
        assert_eq!(options["schema"], "a STRING, b DOUBLE");
        assert!(!options.contains_key("path"));
        assert!(
            matches!(&q.sources[1].kind, SourceKind::ReadFiles { path, stream: true, .. } if path == "/z")
        );
        assert_eq!(q.query.to_string(), "SELECT * FROM __f0_s0 f, __f0_s1");
        let q = query(
            "CREATE STREAMING TABLE t AS SELECT CAST(value AS STRING) FROM STREAM read_kafka(bootstrapServers => 'localhost:9092', subscribe => 'trades')",
        );
        let SourceKind::ReadKafka { options, stream } = &q.sources[0].kind else {
            panic!("{:?}", q.sources[0])
        };
        assert!(*stream);
        assert_eq!(options["bootstrapServers"], "localhost:9092");
        assert_eq!(options["subscribe"], "trades");
        let q = query("CREATE MATERIALIZED VIEW t AS SELECT * FROM read_kafka(subscribe => 'x')");
        assert!(matches!(
            &q.sources[0].kind,
            SourceKind::ReadKafka { stream: false, .. }
        ));
    }

    #[test]
    fn stream_as_an_ordinary_name() {
        let q = query(
            "CREATE MATERIALIZED VIEW m AS SELECT stream, stream.x FROM stream \
             JOIN stream AS s2 ON stream.k = s2.k WHERE stream > 0 AND k IN (SELECT stream FROM stream)",
        );
        assert_eq!(
            kinds(&q),
            [
                table_source(&["stream"], false),
                table_source(&["stream"], false),
                table_source(&["stream"], false),
            ]
        );
        let sql = q.query.to_string();
        assert!(
            sql.starts_with("SELECT stream, stream.x FROM __f0_s0 AS stream JOIN __f0_s1 AS s2"),
            "{sql}"
        );
        // `trim(... FROM stream)` is a column, not a relation.
        let q = query("CREATE MATERIALIZED VIEW m AS SELECT trim(BOTH ' ' FROM stream) FROM t");
        assert_eq!(kinds(&q), [table_source(&["t"], false)]);
    }

    #[test]
    fn other_table_functions_are_left_alone() {
        let q = query(
            "CREATE MATERIALIZED VIEW m AS SELECT * FROM range(10) r, generate_series(1, 3), unnest([1, 2]) u, t",
        );
        assert_eq!(kinds(&q), [table_source(&["t"], false)]);
        assert!(q.query.to_string().contains("range(10) r"));
    }

    #[test]
    fn positions_are_file_absolute() {
        let text = "-- line 1\n\
                    CREATE MATERIALIZED VIEW a AS SELECT 1 AS x;\n\
                    \n\
                    CREATE MATERIALIZED VIEW b AS\n\
                    SELECT x FROM  STREAM(a) JOIN dim ON a.x = dim.x";
        let defs = parse(text);
        let Definition::Table(b) = &defs[1] else {
            panic!("{:?}", defs[1])
        };
        assert_eq!(b.loc, at(4, 1));
        let q = b.query.as_ref().unwrap();
        assert_eq!(q.loc, at(5, 1));
        let locs: Vec<_> = q.sources.iter().map(|s| s.loc).collect();
        assert_eq!(locs, [at(5, 16), at(5, 31)]);
        let SourceKind::Table { name, .. } = &q.sources[0].kind else {
            panic!()
        };
        assert_eq!(name.loc, at(5, 23));
        // sqlparser's own spans in the query are file-absolute too.
        let sqlparser::ast::SetExpr::Select(select) = &*q.query.body else {
            panic!()
        };
        assert_eq!(select.projection[0].span().start, Location::new(5, 8));
    }

    #[test]
    fn sqlparser_errors_keep_their_file_position() {
        let e = err("CREATE MATERIALIZED VIEW m AS\n\
                     SELECT\n\
                     \x20 a,\n\
                     \x20 b\n\
                     FROM t\n\
                     WHERE a > 1\n\
                     \x20  AND b = = 2;");
        assert_eq!(e.loc, at(7, 12));
        assert_eq!(e.file, "p.sql");
        assert!(
            e.message.contains("expected an expression, found `=`"),
            "{e}"
        );
        assert!(!e.message.contains("Line"), "{e}");
        assert!(
            e.to_string()
                .starts_with("p.sql:7:12: expected an expression"),
            "{e}"
        );
        // At the end of a statement, the error is at its `;`.
        let e = err("CREATE MATERIALIZED VIEW m AS SELECT (a\n  ;");
        assert_eq!(e.loc, at(2, 3));
        assert!(e.message.contains("found the end of the statement"), "{e}");
        let e = err("CREATE STREAMING TABLE t (a INT, CONSTRAINT c EXPECT (a >)) AS SELECT 1");
        assert_eq!(e.loc, at(1, 58));
        let e = err("CREATE STREAMING TABLE t (a DECIMAL(10,) ) AS SELECT 1");
        assert_eq!(e.loc, at(1, 40));
    }

    #[test]
    fn names_are_lowercased_unless_quoted_and_live_is_dropped() {
        let t = table(
            "CREATE MATERIALIZED VIEW LIVE.Gold AS SELECT * FROM LIVE.Silver, Cat.\"Sch\".`Tbl`",
        );
        assert_eq!(t.name.parts, ["gold"]);
        assert_eq!(t.name.to_string(), "gold");
        assert_eq!(
            kinds(t.query.as_ref().unwrap()),
            [
                table_source(&["silver"], false),
                table_source(&["cat", "Sch", "Tbl"], false)
            ]
        );
        let t = table("CREATE MATERIALIZED VIEW \"LIVE\".x AS SELECT 1");
        assert_eq!(t.name.parts, ["LIVE", "x"]);
        assert_eq!(t.name.to_string(), "LIVE.x");
        let t = table("CREATE MATERIALIZED VIEW live.s.x AS SELECT 1");
        assert_eq!(t.name.parts, ["live", "s", "x"]);
    }

    #[test]
    fn placeholders_count_across_the_file_and_carry_its_index() {
        let defs = parse_file(
            "p.sql",
            7,
            "CREATE MATERIALIZED VIEW a AS SELECT * FROM x, y;\nCREATE TEMPORARY VIEW b AS SELECT * FROM z",
        )
        .unwrap();
        let Definition::View(b) = &defs[1] else {
            panic!()
        };
        assert_eq!(placeholders(&b.query), ["__f7_s2"]);
    }

    #[test]
    fn rewritten_query_is_valid_sql_over_the_placeholders() {
        let q = query(
            "CREATE STREAMING TABLE t AS SELECT s.value, d.name FROM STREAM(bronze.ticks) AS s \
             LEFT JOIN dims d ON s.k = d.k WHERE s.k IN (SELECT k FROM allowed) \
             UNION ALL SELECT value, name FROM STREAM read_files('/in', format => 'csv')",
        );
        let sql = q.query.to_string();
        assert_eq!(
            sql,
            "SELECT s.value, d.name FROM __f0_s0 AS s LEFT JOIN __f0_s1 d ON s.k = d.k \
             WHERE s.k IN (SELECT k FROM __f0_s2 AS allowed) \
             UNION ALL SELECT value, name FROM __f0_s3"
        );
        let statements = Parser::parse_sql(&GenericDialect {}, &sql).unwrap();
        let mut relations = Vec::new();
        let _ = visit_relations(&statements, |r| {
            relations.push(r.to_string());
            ControlFlow::<()>::Continue(())
        });
        assert_eq!(relations, placeholders(&q));
    }

    #[test]
    fn substitute_replaces_keys_and_reports_unknown_ones() {
        let mut config = BTreeMap::new();
        config.insert("landing_dir".to_string(), "/data/in".to_string());
        config.insert("fmt".to_string(), "csv".to_string());
        let text = "CREATE STREAMING TABLE t AS\nSELECT * FROM STREAM read_files('${landing_dir}', format => '${ fmt }')";
        let out = substitute("p.sql", text, &config).unwrap();
        assert_eq!(
            out,
            "CREATE STREAMING TABLE t AS\nSELECT * FROM STREAM read_files('/data/in', format => 'csv')"
        );
        let plain = "SELECT '$' || '{' FROM t";
        assert_eq!(substitute("p.sql", plain, &BTreeMap::new()).unwrap(), plain);
        let e = substitute("p.sql", "SELECT 1;\n  SELECT '${nope}'", &config).unwrap_err();
        assert_eq!(e.loc, at(2, 11));
        assert!(e.message.contains("`nope`"), "{e}");
        assert!(e.fix.contains("configuration"), "{e}");
        assert!(e.fix.contains("fmt, landing_dir"), "{e}");
        let e = substitute("p.sql", "x ${nope}", &BTreeMap::new()).unwrap_err();
        assert!(e.fix.contains("it has none yet"), "{e}");
        config.insert("multi".to_string(), "a\nb".to_string());
        let e = substitute("p.sql", "\n\n ${multi}", &config).unwrap_err();
        assert_eq!(e.loc, at(3, 2));
        assert!(e.message.contains("line break"), "{e}");
        let e = substitute("p.sql", "SELECT '${fmt'\n}", &config).unwrap_err();
        assert_eq!(e.loc, at(1, 9));
    }

    #[test]
    fn parse_schema_reads_names_and_types() {
        let schema = parse_schema(
            "Id BIGINT, `Price` DOUBLE NOT NULL, tags ARRAY<STRING>, ts TIMESTAMP COMMENT 'when'",
        )
        .unwrap();
        let got: Vec<_> = schema
            .iter()
            .map(|(n, t)| (n.as_str(), t.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("Id", "BIGINT".to_string()),
                ("Price", "DOUBLE".to_string()),
                ("tags", "ARRAY<STRING>".to_string()),
                ("ts", "TIMESTAMP".to_string()),
            ]
        );
        assert!(parse_schema("a STRING, b")
            .unwrap_err()
            .contains("end of the schema"));
        assert!(parse_schema("").unwrap_err().contains("empty"));
        assert!(parse_schema("a STRING b INT")
            .unwrap_err()
            .contains("expected `,`"));
        assert!(parse_schema("a STRNG")
            .unwrap_err()
            .contains("unknown type"));
        assert!(parse_schema("a INT, a INT").unwrap_err().contains("twice"));
    }

    #[test]
    fn statement_errors_name_what_was_found_and_what_is_accepted() {
        let e = err("SET x = 1");
        assert_eq!(e.loc, at(1, 1));
        assert!(e.fix.contains("configuration"), "{e}");
        let e = err("CREATE VIEW v AS SELECT 1");
        assert_eq!(e.loc, at(1, 8));
        assert_eq!(
            e.fix,
            "Use CREATE TEMPORARY VIEW, or CREATE MATERIALIZED VIEW to store it"
        );
        let e = err("CREATE TABLE t AS SELECT 1");
        assert!(e.message.contains("CREATE TABLE"), "{e}");
        assert!(e.fix.contains("CREATE STREAMING TABLE"), "{e}");
        let e = err("\n  SELECT 1");
        assert_eq!(e.loc, at(2, 3));
        assert!(e.fix.contains("CREATE MATERIALIZED VIEW"), "{e}");
        let e = err("DROP TABLE t");
        assert!(e.message.contains("found `DROP`"), "{e}");
        assert!(e.fix.contains("CREATE FLOW"), "{e}");
        let e = err("CREATE OR REPLACE MATERIALIZED VIEW m AS SELECT 1");
        assert_eq!(e.loc, at(1, 11));
        let e = err("CREATE STREAMING TABLE AS SELECT 1");
        assert_eq!(e.loc, at(1, 24));
        assert!(e.message.contains("found `AS`"), "{e}");
        let e = err("CREATE STREAMING TABLE a.b.c.d AS SELECT 1");
        assert!(e.fix.contains("three parts"), "{e}");
        let e = err(
            "CREATE MATERIALIZED VIEW m AS SELECT * FROM a\nCREATE MATERIALIZED VIEW n AS SELECT 1",
        );
        assert_eq!(e.loc, at(2, 1));
        assert!(e.message.contains("`;`"), "{e}");
        let e = err("CREATE MATERIALIZED VIEW m AS SELECT a FROM t x y");
        assert_eq!(e.loc, at(1, 49));
    }

    #[test]
    fn flow_errors() {
        let e = err("CREATE FLOW f AS INSERT INTO t SELECT * FROM s");
        assert_eq!(e.loc, at(1, 32));
        assert_eq!(
            e.fix,
            "Write INSERT INTO t BY NAME SELECT ...: flows match columns by name"
        );
        let e = err("CREATE FLOW f AS AUTO CDC INTO t FROM s KEYS () SEQUENCE BY ts");
        assert_eq!(e.loc, at(1, 47));
        assert!(e.message.contains("KEYS ()"), "{e}");
        let e = err(
            "CREATE FLOW f AS AUTO CDC INTO t FROM s KEYS (a) SEQUENCE BY ts TRACK HISTORY ON b",
        );
        assert_eq!(e.loc, at(1, 65));
        assert!(e.message.contains("type 1"), "{e}");
        let e = err("CREATE FLOW f AS AUTO CDC INTO t FROM s KEYS (a) STORED AS SCD TYPE 2 APPLY AS TRUNCATE WHEN x SEQUENCE BY ts");
        assert_eq!(e.loc, at(1, 71));
        let e = err("CREATE FLOW f AS AUTO CDC INTO t FROM s KEYS (a) IGNORE NULL UPDATES");
        assert!(e.message.contains("SEQUENCE BY"), "{e}");
        let e =
            err("CREATE FLOW f AS AUTO CDC INTO t FROM s KEYS (a) SEQUENCE BY ts SEQUENCE BY x");
        assert_eq!(e.loc, at(1, 65));
        let e = err(
            "CREATE FLOW f AS AUTO CDC INTO t FROM s KEYS (a) SEQUENCE BY ts STORED AS SCD TYPE 3",
        );
        assert_eq!(e.loc, at(1, 84));
        let e = err("CREATE FLOW f AS AUTO CDC INTO t FROM s KEYS (a) SEQUENCE BY ts WHERE x");
        assert_eq!(e.loc, at(1, 65));
        assert!(e.message.contains("SEQUENCE BY"), "{e}");
        let e = err("CREATE FLOW f AS AUTO CDC INTO t FROM STREAM(read_files('/x')) KEYS (a) SEQUENCE BY ts");
        assert_eq!(e.loc, at(1, 46));
        let e = err("CREATE FLOW f AS AUTO CDC INTO t FROM read_kafka(subscribe => 'x') KEYS (a) SEQUENCE BY ts");
        assert_eq!(e.loc, at(1, 39));
        assert!(e.message.contains("`read_kafka`"), "{e}");
        let e = err(
            "CREATE FLOW f AS AUTO CDC INTO t FROM s KEYS (a) SEQUENCE BY (SELECT max(x) FROM y)",
        );
        assert_eq!(e.loc, at(1, 82));
        let e = err("CREATE FLOW f AS UPDATE t SET x = 1");
        assert!(e.message.contains("INSERT INTO or AUTO CDC INTO"), "{e}");
    }

    #[test]
    fn table_errors() {
        let e = err("CREATE STREAMING TABLE t COMMENT 'a' COMMENT 'b'");
        assert_eq!(e.loc, at(1, 38));
        assert!(e.message.contains("second COMMENT"), "{e}");
        let e = err("CREATE STREAMING TABLE t PARTITIONED BY (a) PARTITIONED BY (b)");
        assert_eq!(e.loc, at(1, 45));
        let e =
            err("CREATE STREAMING TABLE t (CONSTRAINT c EXPECT (a > 0) ON VIOLATION IGNORE ROW)");
        assert_eq!(e.loc, at(1, 68));
        assert!(e.message.contains("`IGNORE`"), "{e}");
        assert!(e.fix.contains("DROP ROW"), "{e}");
        let e = err("CREATE STREAMING TABLE t CLUSTER BY (a) AS SELECT 1");
        assert_eq!(e.loc, at(1, 26));
        assert!(e.fix.contains("PARTITIONED BY"), "{e}");
        let e = err("CREATE MATERIALIZED VIEW m COMMENT 'x'");
        assert!(e.fix.contains("AS SELECT"), "{e}");
        let e = err("CREATE STREAMING TABLE t (a DUBLE)");
        assert_eq!(e.loc, at(1, 29));
        let e = err("CREATE STREAMING TABLE t (a INT, A INT)");
        assert_eq!(e.loc, at(1, 34));
        let e = err("CREATE STREAMING TABLE t (a INT, PRIMARY KEY (b))");
        assert!(e.message.contains("`b`"), "{e}");
        let e = err("CREATE STREAMING TABLE t (a INT, CONSTRAINT x CHECK (a > 0))");
        assert_eq!(e.loc, at(1, 47));
        let e = err("CREATE STREAMING TABLE t (CONSTRAINT x EXPECT (a), CONSTRAINT X EXPECT (b))");
        assert_eq!(e.loc, at(1, 52));
        let e = err("CREATE STREAMING TABLE t (a INT DEFAULT 1)");
        assert_eq!(e.loc, at(1, 33));
        let e = err("CREATE STREAMING TABLE t TBLPROPERTIES ('a' = '1', 'a' = '2')");
        assert_eq!(e.loc, at(1, 52));
        let e = err("CREATE STREAMING TABLE t USING DELTA");
        assert!(e.message.contains("found `USING`"), "{e}");
    }

    #[test]
    fn source_errors() {
        let e = err("CREATE MATERIALIZED VIEW m AS\nSELECT * FROM STREAM(1 + 2)");
        assert_eq!(e.loc, at(2, 22));
        let e = err("CREATE MATERIALIZED VIEW m AS SELECT * FROM read_files(format => 'csv')");
        assert_eq!(e.loc, at(1, 45));
        assert!(e.message.contains("no path"), "{e}");
        let e = err("CREATE MATERIALIZED VIEW m AS SELECT * FROM read_files('/x', format = 'csv')");
        assert_eq!(e.loc, at(1, 62));
        assert_eq!(e.message, "option `format` is written with `=`");
        assert_eq!(e.fix, "Write format => 'csv': options are named with =>");
        let e = err("CREATE MATERIALIZED VIEW m AS SELECT * FROM read_files('/x', header => h)");
        assert_eq!(e.loc, at(1, 72));
        let e = err("CREATE MATERIALIZED VIEW m AS SELECT * FROM read_files('/x', schema => 'a')");
        assert_eq!(e.loc, at(1, 72));
        let e = err("CREATE MATERIALIZED VIEW m AS SELECT * FROM read_kafka('x')");
        assert!(e.message.contains("named options"), "{e}");
        let e = err("CREATE MATERIALIZED VIEW m AS WITH c AS (SELECT 1) SELECT * FROM STREAM(c)");
        assert!(e.message.contains("WITH"), "{e}");
    }

    #[test]
    fn unterminated_quotes_and_comments_are_reported_at_their_start() {
        let e = err("CREATE STREAMING TABLE t AS\n  SELECT 'abc FROM x");
        assert_eq!(e.loc, at(2, 10));
        assert!(e.message.contains("string"), "{e}");
        let e = err("CREATE STREAMING TABLE t AS SELECT 1;\n /* a /* nested */ comment\n\n");
        assert_eq!(e.loc, at(2, 2));
        assert!(e.message.contains("comment"), "{e}");
        let e = err("CREATE STREAMING TABLE t AS SELECT \"abc");
        assert_eq!(e.loc, at(1, 36));
        let e = err("CREATE STREAMING TABLE `t AS SELECT 1");
        assert_eq!(e.loc, at(1, 24));
    }
}
