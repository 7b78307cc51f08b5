//! AUTO CDC (`CREATE FLOW … AS AUTO CDC INTO`, also spelt `APPLY CHANGES INTO`): a table
//! kept from a stream of change events, as SCD Type 1 or Type 2, by rewriting the Delta
//! files that hold the rows a batch replaces (copy-on-write, see
//! [`crate::delta::DeltaSink::rewrite_files`]).
//!
//! The semantics are those of `pipelines.md` (see README.md, "AUTO CDC"):
//! [`replay`] applies the events of one key, whatever their arrival order, and holds
//! every rule; the rest of the module reads what a batch's keys touch and writes what
//! changed.
//!
//! How a batch of events is applied to a Type 2 history without reading all of it:
//! the events of a key are kept (an event is not always visible in the history: an
//! update of untracked columns, a duplicate and a delete of an absent key leave no row
//! of their own, yet a late event can make them matter again). A batch whose earliest
//! event of a key has sequence `t` replays that key from `b`, the last version start
//! below `t`: the versions from `b` on are rebuilt from the events from `b` on, with
//! the version open just before `b` (if one is) as the starting state. Nothing before
//! `b` can change, since no event of the batch comes before it ([`replay::resume_from`]).

pub mod keys;
pub mod pool;
pub mod replay;
pub mod scd1;
pub mod scd2;
pub mod shape;
pub mod store;

use deltalake::arrow::error::ArrowError;

use crate::delta::DeltaError;

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Applied {
    /// Rows written: of Type 2, new versions and stored ones whose end or values changed.
    pub inserted: usize,
    /// Stored rows replaced or deleted.
    pub deleted: usize,
    /// Events replaced by a later arrival with the same sequence.
    pub duplicates: usize,
    /// Type 1: events ignored, being older than what their key held.
    pub ignored: usize,
    /// Type 2: keys replayed from before their open version (late data, new keys).
    pub keys_replayed_from_history: usize,
    /// The target's version after the batch.
    pub version: i64,
}

impl Applied {
    /// Adds the counts of a later batch.
    pub fn add(&mut self, later: &Applied) {
        self.inserted += later.inserted;
        self.deleted += later.deleted;
        self.duplicates += later.duplicates;
        self.ignored += later.ignored;
        self.keys_replayed_from_history += later.keys_replayed_from_history;
        self.version = later.version;
    }
}

/// Applies a batch of change events (`changes`, from source `version`, with the
/// progress `app`) to the flow's `target` and its event `store`, as its SCD type says.
/// `before` (the batch's quarantine write) runs while the batch is worked out, and ends
/// before anything is written to the target.
pub async fn apply(
    shape: &shape::Shape,
    target: &mut crate::delta::DeltaSink,
    store: &mut crate::delta::DeltaSink,
    changes: store::Changes,
    app: &str,
    version: i64,
    before: impl std::future::Future<Output = Result<(), CdcError>> + Send,
) -> Result<Applied, CdcError> {
    match shape.scd_type {
        1 => scd1::apply(shape, target, store, changes, app, version, before).await,
        _ => scd2::apply(shape, target, store, changes, app, version, before).await,
    }
}

/// Errors while applying change events.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error("AUTO CDC: {0}")]
    Arrow(#[from] ArrowError),
    #[error("AUTO CDC: {0}")]
    DataFusion(#[from] deltalake::datafusion::error::DataFusionError),
    #[error("AUTO CDC: the rows lack the column `{0}`; please report this")]
    Missing(String),
}

/// The columns the flow's query adds to the source's rows: the values of its clauses.
pub mod columns {
    /// `SEQUENCE BY`.
    pub const SEQUENCE: &str = "__cdc_sequence";
    /// `SYSTEM SEQUENCE BY`.
    pub const SYSTEM_SEQUENCE: &str = "__cdc_system_sequence";
    /// `APPLY AS DELETE WHEN`.
    pub const DELETE: &str = "__cdc_delete";
    /// `APPLY AS TRUNCATE WHEN`.
    pub const TRUNCATE: &str = "__cdc_truncate";
    /// Every one of them.
    pub const ALL: [&str; 4] = [SEQUENCE, SYSTEM_SEQUENCE, DELETE, TRUNCATE];
}
