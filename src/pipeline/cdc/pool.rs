//! The rows an AUTO CDC batch works on (new events, stored events, stored versions), held
//! once, in Arrow, whatever their column types: events and versions point into them.
//! Each column is also kept in Arrow's row format, so that values of any type are
//! compared as bytes, and sequences of any orderable type are ordered as bytes.

use std::cmp::Ordering;
use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, Array, ArrayRef, RecordBatch};
use deltalake::arrow::compute::interleave;
use deltalake::arrow::datatypes::{DataType, Field};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::row::{OwnedRow, RowConverter, Rows, SortField};

use super::replay::Values;

/// A row of the pool: (batch, row).
pub type At = (u32, u32);

/// A value in Arrow's row format, ordered as its bytes are, with its first 16 bytes
/// read as one big-endian integer: most values (dates, timestamps, numbers, short
/// structs) differ there, and compare as one integer instead of a `memcmp`.
#[derive(Debug, Clone, Copy)]
pub struct Ordered<'a> {
    prefix: u128,
    bytes: &'a [u8],
}

impl<'a> Ordered<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Ordered {
            prefix: prefix(bytes),
            bytes,
        }
    }
}

/// The first 16 bytes of `bytes`, zero-padded, as a big-endian integer. Two byte strings
/// whose prefixes differ order as their prefixes do: the first byte that differs is
/// in the prefix, or one is a prefix of the other (padded with zeros, where the other has
/// a byte that is not, or is longer).
fn prefix(bytes: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = bytes.len().min(16);
    b[..n].copy_from_slice(&bytes[..n]);
    u128::from_be_bytes(b)
}

impl PartialEq for Ordered<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix && self.bytes == other.bytes
    }
}
impl Eq for Ordered<'_> {}
impl PartialOrd for Ordered<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.bytes.cmp(other.bytes))
    }
}

/// A sequence value: ordered by its row-format bytes, written from where it is.
#[derive(Debug, Clone)]
pub struct Seq {
    pub row: OwnedRow,
    pub at: At,
    prefix: u128,
}

impl Seq {
    /// The value `row`, which is at `at` in the pool.
    pub fn new(row: OwnedRow, at: At) -> Self {
        Seq {
            prefix: prefix(row.as_ref()),
            row,
            at,
        }
    }

    /// Its value, to compare.
    pub fn ordered(&self) -> Ordered<'_> {
        Ordered {
            prefix: self.prefix,
            bytes: self.row.as_ref(),
        }
    }
}

impl PartialEq for Seq {
    fn eq(&self, other: &Self) -> bool {
        self.ordered() == other.ordered()
    }
}
impl Eq for Seq {}
impl PartialOrd for Seq {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Seq {
    fn cmp(&self, other: &Self) -> Ordering {
        self.ordered().cmp(&other.ordered())
    }
}

/// The stored columns of every row a batch works on, and their sequence values.
pub struct Pool {
    batches: Vec<RecordBatch>,
    /// `[batch][column]`, each column by its own converter, so that a version made of
    /// cells of several events (IGNORE NULL UPDATES) compares column by column.
    encoded: Vec<Vec<Rows>>,
    converters: Vec<RowConverter>,
    tracked: Vec<usize>,
    sequences: Vec<ArrayRef>,
    sequence: RowConverter,
    /// One NULL of the sequence's type, for versions without an end.
    null_sequence: u32,
}

impl Pool {
    /// A pool for rows of `stored` columns, of which `tracked` (indexes) decide when a
    /// Type 2 version starts, with sequences of type `sequence`.
    pub fn new(
        stored: &[Field],
        tracked: Vec<usize>,
        sequence: &DataType,
    ) -> Result<Self, ArrowError> {
        let converters = stored
            .iter()
            .map(|f| RowConverter::new(vec![SortField::new(f.data_type().clone())]))
            .collect::<Result<_, _>>()?;
        let mut pool = Pool {
            batches: Vec::new(),
            encoded: Vec::new(),
            converters,
            tracked,
            sequences: Vec::new(),
            sequence: RowConverter::new(vec![SortField::new(sequence.clone())])?,
            null_sequence: 0,
        };
        pool.null_sequence = pool.add_sequences(new_null_array(sequence, 1))?.0;
        Ok(pool)
    }

    /// Adds a batch of the stored columns (in order, of their types); returns its index.
    pub fn add_values(&mut self, batch: RecordBatch) -> Result<u32, ArrowError> {
        let encoded = self
            .converters
            .iter()
            .zip(batch.columns())
            .map(|(c, column)| c.convert_columns(std::slice::from_ref(column)))
            .collect::<Result<_, _>>()?;
        self.batches.push(batch);
        self.encoded.push(encoded);
        Ok(self.batches.len() as u32 - 1)
    }

    /// Adds sequence values; returns their index and their row format.
    pub fn add_sequences(&mut self, values: ArrayRef) -> Result<(u32, Rows), ArrowError> {
        let rows = self
            .sequence
            .convert_columns(std::slice::from_ref(&values))?;
        self.sequences.push(values);
        Ok((self.sequences.len() as u32 - 1, rows))
    }

    /// Sequence values in the row format, not kept.
    pub fn sequence_rows(&self, values: ArrayRef) -> Result<Rows, ArrowError> {
        self.sequence.convert_columns(std::slice::from_ref(&values))
    }

    /// The sequence value `row` of `rows`, which [`Pool::add_sequences`] gave as `index`.
    pub fn seq(rows: &Rows, index: u32, row: usize) -> Seq {
        Seq::new(rows.row(row).owned(), (index, row as u32))
    }

    /// Whether column `c` holds equal values at `a` and `b`.
    fn equal(&self, c: usize, a: At, b: At) -> bool {
        self.encoded[a.0 as usize][c].row(a.1 as usize)
            == self.encoded[b.0 as usize][c].row(b.1 as usize)
    }

    fn is_null(&self, c: usize, at: At) -> bool {
        self.batches[at.0 as usize].column(c).is_null(at.1 as usize)
    }

    /// Whether two cell sets hold the same values in every column.
    pub fn same_values(&self, a: &Cells<'_>, b: &Cells<'_>) -> bool {
        (0..self.converters.len()).all(|c| self.equal(c, a.cell(c), b.cell(c)))
    }

    /// The cells of row `at`.
    pub fn row(&self, at: At) -> Cells<'_> {
        Cells {
            pool: self,
            at: CellsAt::Row(at),
        }
    }

    /// Column `c` of `rows`, gathered from the pool.
    pub fn column(&self, c: usize, rows: &[&Cells<'_>]) -> Result<ArrayRef, ArrowError> {
        let arrays: Vec<&dyn Array> = self.batches.iter().map(|b| b.column(c).as_ref()).collect();
        let indices: Vec<(usize, usize)> = rows
            .iter()
            .map(|r| {
                let (b, i) = r.cell(c);
                (b as usize, i as usize)
            })
            .collect();
        interleave(&arrays, &indices)
    }

    /// The sequence values `seqs` (NULL for `None`), gathered from the pool.
    pub fn sequences(&self, seqs: &[Option<&Seq>]) -> Result<ArrayRef, ArrowError> {
        let arrays: Vec<&dyn Array> = self.sequences.iter().map(|a| a.as_ref()).collect();
        let indices: Vec<(usize, usize)> = seqs
            .iter()
            .map(|s| {
                let (a, i) = s.map_or((self.null_sequence, 0), |s| s.at);
                (a as usize, i as usize)
            })
            .collect();
        interleave(&arrays, &indices)
    }
}

/// Where a value set's cells are.
#[derive(Debug, Clone)]
enum CellsAt {
    /// All in one row.
    Row(At),
    /// Column by column (after IGNORE NULL UPDATES filled some from an earlier row).
    Columns(Arc<[At]>),
}

/// The values of an event or a version: cells of the pool.
#[derive(Clone)]
pub struct Cells<'p> {
    pool: &'p Pool,
    at: CellsAt,
}

impl std::fmt::Debug for Cells<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.at.fmt(f)
    }
}

impl Cells<'_> {
    /// Where column `c`'s value is.
    pub fn cell(&self, c: usize) -> At {
        match &self.at {
            CellsAt::Row(at) => *at,
            CellsAt::Columns(cells) => cells[c],
        }
    }
}

impl Values for Cells<'_> {
    fn same_tracked(&self, other: &Self) -> bool {
        self.pool
            .tracked
            .iter()
            .all(|&c| self.pool.equal(c, self.cell(c), other.cell(c)))
    }

    fn fill_nulls_from(&self, before: &Self) -> Self {
        let columns = self.pool.converters.len();
        let cells: Arc<[At]> = (0..columns)
            .map(|c| {
                let at = self.cell(c);
                if self.pool.is_null(c, at) {
                    before.cell(c)
                } else {
                    at
                }
            })
            .collect();
        Cells {
            pool: self.pool,
            at: CellsAt::Columns(cells),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::Schema;

    #[test]
    fn ordered_values_order_as_their_bytes() {
        // Short and long, prefixes of each other, zeros at the end, equal in the first
        // 16 bytes and apart after.
        let mut values: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![1],
            vec![1, 0],
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0],
            vec![255; 20],
            vec![255; 16],
            vec![2, 255],
        ];
        let mut seed = 7u64;
        for _ in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize;
            values.push((0..len).map(|i| (seed >> (i % 8 * 8)) as u8 % 3).collect());
        }
        for a in &values {
            for b in &values {
                assert_eq!(
                    Ordered::new(a).cmp(&Ordered::new(b)),
                    a.cmp(b),
                    "{a:?} against {b:?}"
                );
            }
        }
    }

    #[test]
    fn cells_compare_and_fill_across_batches() {
        let stored = vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ];
        let schema = Arc::new(Schema::new(stored.clone()));
        let mut pool = Pool::new(&stored, vec![1], &DataType::Int64).unwrap();
        let a = pool
            .add_values(
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from(vec!["x", "x"])),
                        Arc::new(Int64Array::from(vec![Some(1), None])),
                    ],
                )
                .unwrap(),
            )
            .unwrap();
        let b = pool
            .add_values(
                RecordBatch::try_new(
                    schema,
                    vec![
                        Arc::new(StringArray::from(vec!["x"])),
                        Arc::new(Int64Array::from(vec![1])),
                    ],
                )
                .unwrap(),
            )
            .unwrap();
        let (first, null_v, other) = (pool.row((a, 0)), pool.row((a, 1)), pool.row((b, 0)));
        assert!(first.same_tracked(&other) && pool.same_values(&first, &other));
        assert!(!null_v.same_tracked(&first));
        let filled = null_v.fill_nulls_from(&first);
        assert!(filled.same_tracked(&first));
        let v = pool.column(1, &[&filled, &null_v]).unwrap();
        assert_eq!(
            v.as_any().downcast_ref::<Int64Array>().unwrap(),
            &Int64Array::from(vec![Some(1), None])
        );
        let (i, rows) = pool
            .add_sequences(Arc::new(Int64Array::from(vec![5, 3])))
            .unwrap();
        let (five, three) = (Pool::seq(&rows, i, 0), Pool::seq(&rows, i, 1));
        assert!(three < five);
        let s = pool.sequences(&[Some(&three), None]).unwrap();
        assert_eq!(
            s.as_any().downcast_ref::<Int64Array>().unwrap(),
            &Int64Array::from(vec![Some(3), None])
        );
    }
}
