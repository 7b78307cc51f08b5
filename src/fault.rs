//! Named fault points, for crash tests.
//!
//! Exactly-once is only as good as its worst crash. The integration tests run the real
//! binary with `MEDALLION_FAULT=<point>` (or `<point>@<n>` for the n-th time the point is
//! reached), and the process aborts there, as abruptly as a `kill -9`. A normal run never
//! sets the variable, and then each point costs one read of an initialised cell.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a fault point.
pub const FAULT_ENV: &str = "MEDALLION_FAULT";

/// The armed point, the hit that fires it, and the hits so far.
struct Armed {
    point: String,
    nth: u64,
    hits: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

/// Aborts the process if `name` is the armed fault point, reached for the n-th time.
pub fn point(name: &str) {
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var(FAULT_ENV).ok()?;
        let (point, nth) = match spec.split_once('@') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Some(Armed {
            point,
            nth,
            hits: AtomicU64::new(0),
        })
    });
    let Some(armed) = armed else { return };
    if armed.point == name && armed.hits.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth {
        eprintln!(
            "medallion: fault injected at `{name}` (hit {}); aborting",
            armed.nth
        );
        std::process::abort();
    }
}
