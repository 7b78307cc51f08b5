//! The benchmark's input, made with the generator (BOM, CRLF, `null` days, as the real
//! Kaggle file has), once per benchmark and shared by every broker and every peer.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, NaiveDate, Weekday};

use crate::generate::{generate, GenerateOptions};

use super::BenchError;

/// Rows of the history the SCD2 MERGE figure merges into, and of its change set.
pub const MERGE_HISTORY_ROWS: u64 = 100_000;
pub const MERGE_CHANGE_ROWS: u64 = 10_000;
/// Rows already in the warehouse when the freshness files arrive.
pub const FRESHNESS_BASE_ROWS: u64 = 10_000;
/// Rows per generated landing file of the main data set (a daily drop is one file).
const ROWS_PER_FILE: u64 = 250_000;
/// Days after the calendars of the MERGE and freshness data sets, and of the main one up
/// to a few hundred thousand rows: new days for the incremental and freshness runs.
const LATER: (i32, u32, u32) = (2100, 1, 4);

/// Every input of one benchmark.
#[derive(Debug, Clone)]
pub struct DataSet {
    /// The main data set: `rows` rows over `indices` indices.
    pub base: PathBuf,
    pub base_rows: u64,
    pub base_bytes: u64,
    /// One new day for every index.
    pub day: PathBuf,
    /// The history of the MERGE figure, and its 10k changed and new rows (one file).
    pub merge_base: PathBuf,
    pub merge_changes: PathBuf,
    /// A small warehouse's input, and the files landed one at a time for freshness.
    pub fresh_base: PathBuf,
    pub fresh_files: Vec<(PathBuf, NaiveDate)>,
}

/// Writes the data set under `dir`.
pub fn prepare(dir: &Path, rows: u64, indices: u32, fresh: usize) -> Result<DataSet, BenchError> {
    let _ = std::fs::remove_dir_all(dir);
    let base = dir.join("base");
    let opts = GenerateOptions {
        rows,
        indices,
        files: rows.div_ceil(ROWS_PER_FILE).max(1) as u32,
        ..GenerateOptions::default()
    };
    let base_bytes = gen(&base, &opts)?.iter().map(|p| file_size(p)).sum();

    // A new day comes after the main data set's last day: at a million rows and more its
    // calendar runs past LATER, and a day inside it would be late data, not a new day.
    let later = NaiveDate::from_ymd_opt(LATER.0, LATER.1, LATER.2)
        .expect("valid date")
        .max(next_weekday(opts.last_day()));
    let day = dir.join("day");
    gen(&day, &one_day(indices, later, "day", 7))?;

    let merge_base = dir.join("merge_base");
    let merge_opts = GenerateOptions {
        rows: MERGE_HISTORY_ROWS,
        indices,
        ..GenerateOptions::default()
    };
    let history = gen(&merge_base, &merge_opts)?;
    let merge_changes = dir.join("merge_changes").join("changes_0001.csv");
    write_changes(&history[0], &merge_changes, indices, later)?;

    let fresh_base = dir.join("fresh_base");
    gen(
        &fresh_base,
        &GenerateOptions {
            rows: FRESHNESS_BASE_ROWS,
            indices,
            ..GenerateOptions::default()
        },
    )?;
    let staging = dir.join("fresh_files");
    let mut fresh_files = Vec::new();
    let mut date = later;
    for i in 0..fresh {
        let prefix = format!("fresh_{i:04}");
        let path = gen(&staging, &one_day(indices, date, &prefix, i as u64))?.remove(0);
        fresh_files.push((path, date));
        date = next_weekday(date);
    }
    Ok(DataSet {
        base,
        base_rows: rows,
        base_bytes,
        day,
        merge_base,
        merge_changes,
        fresh_base,
        fresh_files,
    })
}

fn gen(out: &Path, opts: &GenerateOptions) -> Result<Vec<PathBuf>, BenchError> {
    generate(out, opts).map_err(|e| BenchError::Data(e.to_string()))
}

/// One row per index on `date`.
fn one_day(indices: u32, date: NaiveDate, prefix: &str, seed: u64) -> GenerateOptions {
    GenerateOptions {
        rows: u64::from(indices),
        indices,
        days: Some(1),
        seed,
        prefix: prefix.into(),
        start: date,
        ..GenerateOptions::default()
    }
}

fn next_weekday(date: NaiveDate) -> NaiveDate {
    let mut d = date + Duration::days(1);
    while matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
        d += Duration::days(1);
    }
    d
}

/// The MERGE figure's change set: half corrections of existing days (Close and Adj
/// Close up 1%), half new days after the history, in the generator's CSV dialect.
fn write_changes(
    history: &Path,
    out: &Path,
    indices: u32,
    later: NaiveDate,
) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(history).map_err(|source| BenchError::Io {
        path: history.into(),
        source,
    })?;
    let mut lines: Vec<String> = Vec::new();
    let corrections = MERGE_CHANGE_ROWS / 2;
    let rows: Vec<&str> = text
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty() && !l.contains("null"))
        .collect();
    let step = (rows.len() as u64 / corrections).max(1) as usize;
    for row in rows.iter().step_by(step).take(corrections as usize) {
        let mut f: Vec<String> = row.split(',').map(str::to_string).collect();
        for i in [5, 6] {
            if let Ok(v) = f[i].parse::<f64>() {
                f[i] = format!("{:.6}", v * 1.01);
            }
        }
        lines.push(f.join(","));
    }
    let new_days = out.with_file_name("new_days");
    let new = gen(
        &new_days,
        &GenerateOptions {
            rows: MERGE_CHANGE_ROWS - corrections,
            indices,
            seed: 99,
            start: later,
            ..GenerateOptions::default()
        },
    )?;
    let new_text = std::fs::read_to_string(&new[0]).map_err(|source| BenchError::Io {
        path: new[0].clone(),
        source,
    })?;
    lines.extend(
        new_text
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(str::to_string),
    );
    let _ = std::fs::remove_dir_all(&new_days);
    let io = |source| BenchError::Io {
        path: out.into(),
        source,
    };
    std::fs::create_dir_all(out.parent().expect("a file in a folder")).map_err(io)?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).map_err(io)?);
    let header = text.split("\r\n").next().unwrap_or_default();
    write!(w, "{header}\r\n").map_err(io)?;
    for l in &lines {
        write!(w, "{l}\r\n").map_err(io)?;
    }
    w.flush().map_err(io)
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Puts the files of `from` into `landing` (hard links, or copies across file systems).
pub fn land_all(from: &Path, landing: &Path) -> Result<(), BenchError> {
    let entries = std::fs::read_dir(from).map_err(|source| BenchError::Io {
        path: from.into(),
        source,
    })?;
    for entry in entries.flatten() {
        land(&entry.path(), landing)?;
    }
    Ok(())
}

/// Replaces `to` with a copy of the folder `from` (a warehouse, to run a task again from
/// the same state). Files are copied, not linked: the Delta logs are appended to.
pub fn copy_dir(from: &Path, to: &Path) -> Result<(), BenchError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BenchError::Io { path, source }
    };
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(io(to))?;
    }
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(io(&source))?.is_dir() {
            copy_dir(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(io(&source))?;
        }
    }
    Ok(())
}

/// Puts one file into `landing` at once: linked or copied to a temporary name, then
/// renamed, as a well-behaved producer lands files.
pub fn land(file: &Path, landing: &Path) -> Result<PathBuf, BenchError> {
    let io = |source| BenchError::Io {
        path: landing.into(),
        source,
    };
    std::fs::create_dir_all(landing).map_err(io)?;
    let name = file.file_name().expect("a file");
    let tmp = landing.join(format!(".{}.tmp", name.to_string_lossy()));
    let target = landing.join(name);
    if std::fs::hard_link(file, &tmp).is_err() {
        std::fs::copy(file, &tmp).map_err(io)?;
    }
    std::fs::rename(&tmp, &target).map_err(io)?;
    Ok(target)
}
