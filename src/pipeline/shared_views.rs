//! What one flow reads or computes for a batch of its stream, shared with the flows
//! that read the same batch in the same update.
//!
//! Two flows that read one view (the stock pipeline's `stocks_silver` and `close_price`
//! both read `stocks_parsed`, one parse of each bronze record) read the same commits of
//! its stream in the same update: the first to get there reads the commits and computes
//! the view's rows, splitting them by its expectations; the other waits for it and takes
//! the result. A batch is named by the stream input it came through and its range of
//! commits, which are immutable, so the rows are the same whichever flow computes them.
//! The static inputs a view joins are complete before any flow that reads the view
//! starts (they are its upstream), so they too are the same for both.
//!
//! Memory stays bounded: each view, and each source table, keeps only its latest batch.
//! A flow whose batch is not the latest (it started from other progress, or fell behind)
//! reads and computes its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::arrow::datatypes::SchemaRef;
use tokio::sync::OnceCell;

use super::expect::Split;

/// A view's rows for one batch: its schema and its rows split by its expectations.
pub type ViewRows = Arc<(SchemaRef, Split)>;

/// The views computed once per batch for all the flows that read them.
pub type SharedViews = SharedBatches<ViewRows>;

/// The commits of a source table read once per batch for all the flows that stream it.
pub type SharedReads = SharedBatches<Arc<crate::stream::Appended>>;

/// A batch's name and the cell its value goes in.
type Latest<T> = (String, Arc<OnceCell<T>>);

/// The latest batch of each name (a view, a source table), shared by the flows of one
/// update.
pub struct SharedBatches<T> {
    latest: Mutex<HashMap<String, Latest<T>>>,
}

impl<T> Default for SharedBatches<T> {
    fn default() -> Self {
        Self {
            latest: Mutex::default(),
        }
    }
}

impl<T> SharedBatches<T> {
    /// The cell that holds (or will hold) `name`'s value for `batch`. A batch other than
    /// the latest of `name` replaces it.
    pub fn cell(&self, name: &str, batch: &str) -> Arc<OnceCell<T>> {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match latest.get(name) {
            Some((b, cell)) if b == batch => cell.clone(),
            _ => {
                let cell = Arc::new(OnceCell::new());
                latest.insert(name.to_string(), (batch.to_string(), cell.clone()));
                cell
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cell_per_batch_and_only_the_latest_is_kept() {
        let views = SharedViews::default();
        let a = views.cell("v", "s:0..1");
        assert!(Arc::ptr_eq(&a, &views.cell("v", "s:0..1")));
        assert!(!Arc::ptr_eq(&a, &views.cell("w", "s:0..1")));
        let b = views.cell("v", "s:1..2");
        assert!(!Arc::ptr_eq(&a, &b));
        // The earlier batch was replaced: asking for it again gives a new, empty cell.
        let again = views.cell("v", "s:0..1");
        assert!(!Arc::ptr_eq(&a, &again));
        assert_eq!(views.latest.lock().unwrap().len(), 2);
    }
}
