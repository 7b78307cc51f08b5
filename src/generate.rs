//! Synthetic daily stock-index prices in the Kaggle "Stock Exchange Data" layout.
//!
//! The files have the quirks of the real `indexData.csv`: a UTF-8 byte-order mark, CRLF
//! line ends, and days whose prices are the literal `null`. Prices follow a random walk
//! with High ≥ max(Open, Close) and Low ≤ min(Open, Close), which stays within a band
//! around the index's starting level however many days are asked for. The output depends
//! only on the options, so a seed always gives the same bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use flate2::write::GzEncoder;

/// The header of every generated file.
pub const HEADER: &str = "Index,Date,Open,High,Low,Close,Adj Close,Volume";

/// Index names of the real data first, then made-up ones.
const NAMES: &[(&str, f64)] = &[
    ("NYA", 6000.0),
    ("IXIC", 2500.0),
    ("HSI", 15000.0),
    ("GSPTSE", 8000.0),
    ("000001.SS", 1800.0),
    ("N225", 17000.0),
    ("N100", 900.0),
    ("399001.SZ", 5000.0),
    ("GDAXI", 6500.0),
    ("KS11", 1000.0),
    ("SSMI", 7000.0),
    ("TWII", 6000.0),
    ("J203.JO", 30000.0),
    ("NSEI", 5000.0),
];

/// How far (as a factor, either way) a walk may drift from its starting level before it
/// is pulled back. The real indices moved about 30× in 55 years. Without the pull, the
/// walk's drift compounds: at 10M rows the calendar spans millennia and prices grew to
/// 80-digit numbers, rows four times the size of real ones, which skewed every benchmark.
const BAND: f64 = 30.0;

/// Share of days whose prices are `null`, as in the real file (681 of 51,248).
const NULL_DAY_RATE: f64 = 0.013;

/// Errors writing generated files.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--rows {rows} needs at least {need} days for {indices} indices, but --days is {days}. Raise --days or lower --rows")]
    TooFewDays {
        rows: u64,
        indices: u32,
        days: u64,
        need: u64,
    },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Total data rows.
    pub rows: u64,
    pub indices: u32,
    /// Trading days in the calendar; `None` means just enough for `rows`.
    pub days: Option<u64>,
    pub seed: u64,
    /// Split the calendar into this many files (by date range), as daily drops would be.
    pub files: u32,
    pub gzip: bool,
    /// File names are `<prefix>_<n>.csv`.
    pub prefix: String,
    /// First trading day.
    pub start: NaiveDate,
}

impl GenerateOptions {
    /// The last trading day of the calendar these options generate.
    pub fn last_day(&self) -> NaiveDate {
        let days = self
            .days
            .unwrap_or(self.rows.div_ceil(u64::from(self.indices.max(1))));
        trading_days(self.start, days.max(1))
            .pop()
            .unwrap_or(self.start)
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            rows: 10_000,
            indices: 5,
            days: None,
            seed: 42,
            files: 1,
            gzip: false,
            prefix: "stocks".into(),
            start: NaiveDate::from_ymd_opt(2000, 1, 3).expect("valid date"),
        }
    }
}

/// SplitMix64: tiny, fast, and its output never changes with a dependency upgrade.
/// Shared with the tests and benchmarks that need a replayable random stream.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    #[cfg(test)]
    /// True `percent` times in 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    #[cfg(test)]
    /// Fisher–Yates.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, by Box–Muller.
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// One index's random walk.
struct Walk {
    name: String,
    /// The starting level: the centre of the band the walk stays in.
    level: f64,
    close: f64,
    volume: f64,
    rng: Rng,
}

impl Walk {
    fn new(i: u32, seed: u64) -> Self {
        let (name, level) = NAMES
            .get(i as usize)
            .map(|(n, l)| (n.to_string(), *l))
            .unwrap_or_else(|| (format!("IDX{i:03}"), 1000.0 + 100.0 * i as f64));
        let mut rng = Rng(seed ^ (u64::from(i) + 1).wrapping_mul(0xA076_1D64_78BD_642F));
        let volume = 1e8 * (1.0 + rng.unit() * 20.0);
        Walk {
            name,
            level,
            close: level,
            volume,
            rng,
        }
    }

    /// The row for one day, after advancing the walk.
    fn row(&mut self, date: NaiveDate) -> String {
        let r = &mut self.rng;
        let open = self.close * (0.003 * r.normal()).exp();
        // Inside the band a plain walk with a slight upward drift; beyond it, a pull back
        // in proportion to how far out it is.
        let excess = (open / self.level).ln();
        let pull = -0.002 * (excess.abs() - BAND.ln()).max(0.0) * excess.signum();
        let close = open * (0.0003 + pull + 0.012 * r.normal()).exp();
        let high = open.max(close) * (1.0 + (0.004 * r.normal()).abs());
        let low = open.min(close) * (1.0 - (0.004 * r.normal()).abs());
        let volume = (self.volume * (0.3 * r.normal()).exp()).round() as u64;
        let null_day = r.unit() < NULL_DAY_RATE;
        self.close = close;
        if null_day {
            return format!("{},{date},null,null,null,null,null,null", self.name);
        }
        format!(
            "{},{date},{},{},{},{},{},{volume}",
            self.name,
            price(open),
            price(high),
            price(low),
            price(close),
            price(close),
        )
    }
}

/// Prices as the real file writes them: up to six decimals, trailing zeros dropped.
fn price(p: f64) -> String {
    let s = format!("{p:.6}");
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}

/// The trading days (Monday to Friday) from `start`.
fn trading_days(start: NaiveDate, n: u64) -> Vec<NaiveDate> {
    let mut days = Vec::with_capacity(n as usize);
    let mut d = start;
    while (days.len() as u64) < n {
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            days.push(d);
        }
        d += Duration::days(1);
    }
    days
}

/// Writes the files into `out` and returns their paths.
pub fn generate(out: &Path, options: &GenerateOptions) -> Result<Vec<PathBuf>, GenerateError> {
    if options.indices == 0 {
        return Err(GenerateError::Zero("--indices"));
    }
    if options.files == 0 {
        return Err(GenerateError::Zero("--files"));
    }
    let k = u64::from(options.indices);
    let need = options.rows.div_ceil(k);
    let days = options.days.unwrap_or(need);
    if days < need {
        return Err(GenerateError::TooFewDays {
            rows: options.rows,
            indices: options.indices,
            days,
            need,
        });
    }
    // Index i gets rows/k rows (the first rows%k indices one more), ending on the last day.
    let calendar = trading_days(options.start, days);
    let per_index: Vec<u64> = (0..k)
        .map(|i| options.rows / k + u64::from(i < options.rows % k))
        .collect();
    let mut walks: Vec<Walk> = (0..options.indices)
        .map(|i| Walk::new(i, options.seed))
        .collect();

    std::fs::create_dir_all(out).map_err(|source| GenerateError::Write {
        path: out.into(),
        source,
    })?;
    let files = options.files.min(days.max(1) as u32).max(1) as u64;
    let mut paths = Vec::new();
    for f in 0..files {
        let from = (days * f / files) as usize;
        let to = (days * (f + 1) / files) as usize;
        let ext = if options.gzip { "csv.gz" } else { "csv" };
        let path = out.join(format!("{}_{:04}.{ext}", options.prefix, f + 1));
        let err = |source| GenerateError::Write {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::create(&path).map_err(err)?;
        let mut w: Box<dyn Write> = if options.gzip {
            Box::new(GzEncoder::new(file, flate2::Compression::fast()))
        } else {
            Box::new(std::io::BufWriter::with_capacity(1 << 20, file))
        };
        w.write_all(b"\xEF\xBB\xBF").map_err(err)?;
        write!(w, "{HEADER}\r\n").map_err(err)?;
        for (i, walk) in walks.iter_mut().enumerate() {
            let first_day = calendar.len() - per_index[i] as usize;
            for date in &calendar[from.max(first_day)..to.max(first_day)] {
                write!(w, "{}\r\n", walk.row(*date)).map_err(err)?;
            }
        }
        w.flush().map_err(err)?;
        drop(w);
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of every data row `opts` generates, file after file.
    fn data_rows(opts: &GenerateOptions) -> Vec<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = Vec::new();
        for path in generate(dir.path(), opts).unwrap() {
            let text = std::fs::read_to_string(path).unwrap();
            for line in text.trim_end().split("\r\n").skip(1) {
                rows.push(line.split(',').map(str::to_string).collect());
            }
        }
        rows
    }

    #[test]
    fn last_day_is_the_last_date_written() {
        let opts = GenerateOptions {
            rows: 1001,
            indices: 4,
            files: 3,
            ..GenerateOptions::default()
        };
        let last = data_rows(&opts).into_iter().map(|f| f[1].clone()).max();
        assert_eq!(Some(opts.last_day().to_string()), last);
    }

    #[test]
    fn deterministic_realistic_and_quirky() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let opts = GenerateOptions {
            rows: 3000,
            indices: 3,
            files: 2,
            ..GenerateOptions::default()
        };
        let pa = generate(a.path(), &opts).unwrap();
        let pb = generate(b.path(), &opts).unwrap();
        assert_eq!(pa.len(), 2);
        let mut rows = 0;
        let mut nulls = 0;
        for (x, y) in pa.iter().zip(&pb) {
            let bytes = std::fs::read(x).unwrap();
            assert_eq!(bytes, std::fs::read(y).unwrap());
            assert!(bytes.starts_with(b"\xEF\xBB\xBFIndex,Date,Open"));
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.ends_with("\r\n") && !text.replace("\r\n", "").contains('\n'));
            for line in text.trim_end().split("\r\n").skip(1) {
                rows += 1;
                let f: Vec<&str> = line.split(',').collect();
                assert_eq!(f.len(), 8);
                if f[2] == "null" {
                    nulls += 1;
                    continue;
                }
                let [o, h, l, c]: [f64; 4] = [2, 3, 4, 5].map(|i| f[i].parse().unwrap());
                assert!(h >= o.max(c) && l <= o.min(c) && l > 0.0, "{line}");
                f[7].parse::<u64>().unwrap();
            }
        }
        assert_eq!(rows, 3000);
        assert!(nulls > 10 && nulls < 100, "{nulls} null days");
        let other = GenerateOptions { seed: 7, ..opts };
        let c = tempfile::tempdir().unwrap();
        let pc = generate(c.path(), &other).unwrap();
        assert_ne!(
            std::fs::read(&pa[0]).unwrap(),
            std::fs::read(&pc[0]).unwrap()
        );
    }

    #[test]
    fn prices_stay_near_their_level_over_any_span() {
        // One index over 200k trading days (about 770 years): unbounded, the drift
        // alone would have grown prices by e^60.
        let opts = GenerateOptions {
            rows: 200_000,
            indices: 1,
            ..GenerateOptions::default()
        };
        let level = NAMES[0].1;
        let mut highest: f64 = 0.0;
        for f in data_rows(&opts).iter().filter(|f| f[2] != "null") {
            for p in &f[2..7] {
                let p: f64 = p.parse().unwrap();
                assert!(p < level * 100.0 && p > level / 100.0, "{f:?}");
                highest = highest.max(p);
            }
        }
        // It does move: well beyond a few percent of its level.
        assert!(highest > level * 5.0, "highest {highest}");
    }

    #[test]
    fn too_few_days_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let opts = GenerateOptions {
            rows: 100,
            indices: 2,
            days: Some(10),
            ..GenerateOptions::default()
        };
        let err = generate(dir.path(), &opts).unwrap_err().to_string();
        assert!(err.contains("--days"), "{err}");
    }
}
