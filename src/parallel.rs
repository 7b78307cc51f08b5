//! CPU work split over the machine's cores, without a thread pool: a batch's pure
//! computations (an AUTO CDC batch's windows and replays) run in a few scoped threads,
//! each over one contiguous part of the work, and their results come back in order;
//! a write can go on beside them ([`beside`]).

/// How many threads [`map`] uses at most: one per core.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` applied to every item of `items`, in order, the items split into contiguous
/// parts that run side by side (one in the calling thread). Work too small to be worth
/// a thread (fewer than `min_per_thread` items per part) runs in the calling thread.
/// A panic in `f` is a panic of the caller, as if `f` had run there.
pub fn map<T, R, F>(items: Vec<T>, min_per_thread: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let parts = threads().min(items.len() / min_per_thread.max(1)).max(1);
    if parts == 1 {
        return items.into_iter().map(f).collect();
    }
    let size = items.len().div_ceil(parts);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(parts);
    let mut items = items.into_iter();
    loop {
        let chunk: Vec<T> = items.by_ref().take(size).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    let f = &f;
    let mut chunks = chunks.into_iter();
    let first = chunks.next().unwrap_or_default();
    std::thread::scope(|s| {
        let others: Vec<_> = chunks
            .map(|c| s.spawn(move || c.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.into_iter().map(f).collect();
        for h in others {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// A future that [`beside`] runs could not finish.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("cannot start a thread for it: {0}")]
    Thread(std::io::Error),
    #[error("it stopped before it finished (a panic); please report this")]
    Panicked,
}

/// Runs `future` on a thread of its own, with the current tokio runtime's I/O, timers
/// and blocking pool, so that it goes on while the caller's thread computes: a task
/// spawned on the runtime from a worker would wait in that worker's own queue until the
/// caller yields. Its output comes through the future returned.
pub fn beside<F>(
    future: F,
) -> impl std::future::Future<Output = Result<F::Output, Stopped>> + Send + 'static
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = tokio::runtime::Handle::current();
    let started = std::thread::Builder::new()
        .name("medallion-beside".into())
        .spawn(move || {
            let _ = tx.send(handle.block_on(future));
        });
    async move {
        started.map_err(Stopped::Thread)?;
        rx.await.map_err(|_| Stopped::Panicked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_whatever_the_split() {
        for n in [0usize, 1, 2, 3, 7, 100, 1001] {
            for min in [1usize, 2, 50, 10_000] {
                let items: Vec<usize> = (0..n).collect();
                let out = map(items, min, |i| i * 3 + 1);
                assert_eq!(
                    out,
                    (0..n).map(|i| i * 3 + 1).collect::<Vec<_>>(),
                    "n={n} min={min}"
                );
            }
        }
    }

    #[test]
    fn items_may_borrow_and_results_may_own() {
        let words = ["a", "bb", "ccc", "dddd"];
        let out = map(words.iter().collect(), 1, |w| w.repeat(2));
        assert_eq!(out, vec!["aa", "bbbb", "cccccc", "dddddddd"]);
    }

    #[tokio::test]
    async fn a_future_beside_runs_while_the_caller_blocks() {
        let (tx, rx) = std::sync::mpsc::channel();
        let done = beside(async move {
            tokio::task::yield_now().await;
            tx.send(7).unwrap();
            8
        });
        // The caller blocks its thread (the runtime's only one) until the future ran.
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(7));
        assert_eq!(done.await.unwrap(), 8);
    }

    #[test]
    #[should_panic(expected = "item 3")]
    fn a_panic_in_a_part_is_the_callers() {
        let _ = map((0..8).collect::<Vec<u32>>(), 1, |i| {
            if i == 3 {
                panic!("item 3");
            }
            i
        });
    }
}
