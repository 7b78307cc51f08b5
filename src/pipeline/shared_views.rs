//! The rows of a temporary view computed once per batch of its stream, for every flow
//! that reads the view through that batch.
//!
//! Two flows that read one view (the stock pipeline's `stocks_silver` and `close_price`
//! both read `stocks_parsed`, one parse of each bronze record) read the same commits of
//! its stream in the same update: the first to get there computes the view's rows and
//! splits them by its expectations; the other waits for it and takes the result. A batch
//! is named by the stream input it came through and its range of commits, which are
//! immutable, so the rows are the same whichever flow computes them. The static inputs a
//! view joins are complete before any flow that reads the view starts (they are its
//! upstream), so they too are the same for both.
//!
//! Memory stays bounded: each view keeps only its latest batch. A flow whose batch is not
//! the latest (it started from other progress, or fell behind) computes its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::arrow::datatypes::SchemaRef;
use tokio::sync::OnceCell;

use super::expect::Split;

/// A view's rows for one batch: its schema and its rows split by its expectations.
pub type ViewRows = Arc<(SchemaRef, Split)>;

/// A batch's name and the cell its rows go in.
type Latest = (String, Arc<OnceCell<ViewRows>>);

/// The latest batch of each view, shared by the flows of one update.
#[derive(Default)]
pub struct SharedViews {
    latest: Mutex<HashMap<String, Latest>>,
}

impl SharedViews {
    /// The cell that holds (or will hold) `view`'s rows for `batch`. A batch other than
    /// the view's latest replaces it.
    pub fn cell(&self, view: &str, batch: &str) -> Arc<OnceCell<ViewRows>> {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match latest.get(view) {
            Some((b, cell)) if b == batch => cell.clone(),
            _ => {
                let cell = Arc::new(OnceCell::new());
                latest.insert(view.to_string(), (batch.to_string(), cell.clone()));
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
