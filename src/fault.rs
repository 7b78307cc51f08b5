//! Named fault points, for crash tests.
//!
//! Exactly-once is only as good as its worst crash. The integration tests run the real
//! binary with `MEDALLION_FAULT=<point>` (or `<point>@<n>` for the n-th time the point is
//! reached), and the process aborts there, as abruptly as a `kill -9`. A normal run never
//! sets the variable, and then each point costs one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// The environment variable that arms a fault point.
pub const FAULT_ENV: &str = "MEDALLION_FAULT";

static ARMED: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on
static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// Aborts the process if `name` is the armed fault point.
pub fn point(name: &str) {
    if ARMED.load(Ordering::Relaxed) == 1 {
        return;
    }
    let Ok(spec) = std::env::var(FAULT_ENV) else {
        ARMED.store(1, Ordering::Relaxed);
        return;
    };
    ARMED.store(2, Ordering::Relaxed);
    let (target, nth) = match spec.split_once('@') {
        Some((t, n)) => (t.to_string(), n.parse::<u64>().unwrap_or(1)),
        None => (spec.clone(), 1),
    };
    if target != name {
        return;
    }
    let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
    let count = hits
        .get_or_insert_with(HashMap::new)
        .entry(target)
        .or_insert(0);
    *count += 1;
    if *count == nth {
        eprintln!("medallion: fault injected at `{name}` (hit {nth}); aborting");
        std::process::abort();
    }
}
