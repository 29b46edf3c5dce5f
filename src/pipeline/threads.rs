//! Chunk-parallel execution on rayon thread pools.
//!
//! `threads == 1` runs inline on the calling thread; `threads == 0` uses rayon's global pool
//! (one thread per core unless `RAYON_NUM_THREADS` says otherwise); any other count gets a
//! dedicated pool, built once and kept. Results never depend on the thread count: chunks are
//! coded independently and assembled in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

fn pool(threads: usize) -> Option<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Some(p.clone());
    }
    let p = Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("iota-codec-{i}"))
            .build()
            .ok()?,
    );
    pools.insert(threads, p.clone());
    Some(p)
}

fn install<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    match threads {
        0 => f(),
        t => match pool(t) {
            Some(p) => p.install(f),
            // A pool that cannot be built (thread creation refused) degrades to the global one.
            None => f(),
        },
    }
}

/// Computes `f(0..n)` in order.
pub fn map<T: Send>(threads: usize, n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if threads == 1 || n <= 1 {
        return (0..n).map(f).collect();
    }
    install(threads, || (0..n).into_par_iter().map(f).collect())
}

/// Runs `f(i, item)` for every item, stopping at the first error (the one of lowest index
/// among those that ran).
pub fn try_for_each_mut<T: Send, E: Send>(
    threads: usize,
    items: Vec<T>,
    f: impl Fn(usize, T) -> Result<(), E> + Sync + Send,
) -> Result<(), E> {
    if threads == 1 || items.len() <= 1 {
        return items.into_iter().enumerate().try_for_each(|(i, t)| f(i, t));
    }
    install(threads, || {
        items
            .into_par_iter()
            .enumerate()
            .try_for_each(|(i, t)| f(i, t))
    })
}
