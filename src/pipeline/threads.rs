//! Chunk-parallel execution on rayon thread pools.
//!
//! `threads == 1` runs inline on the calling thread; `threads == 0` uses rayon's global pool
//! (one thread per core unless `RAYON_NUM_THREADS` says otherwise); any other count gets a
//! dedicated pool, built once and kept. Results never depend on the thread count: chunks are
//! coded independently and assembled in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Runs `f(i, item)` for every item and returns the error of the lowest index, if any: the
/// error a serial run reports, whatever the thread count and however the threads are
/// scheduled. Items above an index that already failed are skipped (their errors could not
/// be the one reported); every item below it runs.
pub fn try_for_each_mut<T: Send, E: Send>(
    threads: usize,
    items: Vec<T>,
    f: impl Fn(usize, T) -> Result<(), E> + Sync + Send,
) -> Result<(), E> {
    if threads == 1 || items.len() <= 1 {
        return items.into_iter().enumerate().try_for_each(|(i, t)| f(i, t));
    }
    // (Rayon's own `try_for_each` returns whichever error it meets first in time.)
    let first_bad = AtomicUsize::new(usize::MAX);
    let first = install(threads, || {
        items
            .into_par_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                if i > first_bad.load(Ordering::Relaxed) {
                    return None;
                }
                let e = f(i, t).err()?;
                first_bad.fetch_min(i, Ordering::Relaxed);
                Some((i, e))
            })
            .min_by_key(|&(i, _)| i)
    });
    first.map_or(Ok(()), |(_, e)| Err(e))
}

/// Spare buffers of [`append_in_order`], kept between calls so that their pages stay mapped.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// At most this many spare buffers are kept...
const MAX_SPARE: usize = 64;
/// ...of at most this capacity each.
const MAX_SPARE_BYTES: usize = 16 << 20;

/// What the workers of [`append_in_order`] share.
struct Commit<T> {
    /// The next item to append.
    next: usize,
    /// Bytes appended so far.
    end: usize,
    /// Items done but not yet appended.
    pending: std::collections::BTreeMap<usize, (Vec<u8>, T)>,
    /// Items that did not fit in `out`'s capacity, in order (appended at the end).
    overflow: Vec<Vec<u8>>,
    results: Vec<Option<T>>,
    spare: Vec<Vec<u8>>,
}

/// A pointer to the free capacity of the output, shared by the workers (which write
/// disjoint ranges of it, each reserved under the commit lock).
struct Dest(*mut u8);
// SAFETY: the pointer is only written through at ranges that do not overlap (each reserved
// once, under the `Commit` mutex), while the `Vec` it points into is borrowed mutably by
// `append_in_order`, which waits for every worker before it reads them.
unsafe impl Sync for Dest {}

impl Dest {
    /// (A method, so that closures capture the whole `Dest` and not its pointer.)
    fn at(&self, offset: usize) -> *mut u8 {
        self.0.wrapping_add(offset)
    }
}

/// Runs `produce(i, buf)` for `i in 0..n` (on the pool when `threads` allows), each
/// appending to a buffer of its own, and appends the buffers to `out` in order, each as soon
/// as its turn comes: items are handed out in order, so a buffer is usually copied while
/// still in cache (by the worker that finds its turn has come, outside the lock, so copies
/// overlap), and the output is the one the serial loop writes. Returns the results in order.
///
/// Appending needs no reallocation when `out` has room for everything (callers reserve an
/// upper bound); items past the room are appended at the end.
pub fn append_in_order<T: Send>(
    threads: usize,
    n: usize,
    out: &mut Vec<u8>,
    produce: impl Fn(usize, &mut Vec<u8>) -> T + Sync + Send,
) -> Vec<T> {
    if threads == 1 || n <= 1 {
        // Straight into `out`.
        return (0..n).map(|i| produce(i, out)).collect();
    }
    let room = out.capacity() - out.len();
    let dest = Dest(out.spare_capacity_mut().as_mut_ptr().cast::<u8>());
    let spare = std::mem::take(&mut *SPARE.lock().unwrap_or_else(|e| e.into_inner()));
    let state = Mutex::new(Commit {
        next: 0,
        end: 0,
        pending: Default::default(),
        overflow: Vec::new(),
        results: (0..n).map(|_| None).collect(),
        spare,
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let worker = || loop {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= n {
            break;
        }
        let mut buf = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            s.spare.pop().unwrap_or_default()
        };
        buf.clear();
        let r = produce(i, &mut buf);
        // Under the lock, the buffers whose turn has come get their place in `out`; they are
        // copied there after the lock is released, so that copies run in parallel.
        let mut placed = Vec::new();
        {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            s.pending.insert(i, (buf, r));
            while let Some((buf, r)) = {
                let next = s.next;
                s.pending.remove(&next)
            } {
                let s = &mut *s;
                if s.overflow.is_empty() && s.end + buf.len() <= room {
                    let len = buf.len();
                    placed.push((s.end, buf));
                    s.end += len;
                } else {
                    s.overflow.push(buf);
                }
                s.results[s.next] = Some(r);
                s.next += 1;
            }
        }
        for (at, buf) in &placed {
            // SAFETY: `dest + at .. dest + at + len` is inside the free capacity of `out`
            // (checked when it was placed), and no other range placed overlaps it (`end`
            // only grows, under the lock), so no other thread writes these bytes.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), dest.at(*at), buf.len()) };
        }
        if !placed.is_empty() {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            s.spare.extend(placed.into_iter().map(|p| p.1));
        }
    };
    let workers = match threads {
        0 => rayon::current_num_threads(),
        t => t,
    }
    .clamp(1, n);
    install(threads, || {
        rayon::scope(|sc| {
            for _ in 1..workers {
                sc.spawn(|_| worker());
            }
            worker();
        })
    });
    let s = state.into_inner().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the first `end` bytes of the free capacity were written, in order, above.
    unsafe { out.set_len(out.len() + s.end) };
    for buf in &s.overflow {
        out.extend_from_slice(buf);
    }
    let mut keep = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    keep.extend(
        s.spare
            .into_iter()
            .chain(s.overflow)
            .filter(|b| b.capacity() <= MAX_SPARE_BYTES),
    );
    keep.truncate(MAX_SPARE);
    s.results
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// The error reported is the lowest index's even when a higher index fails first in
    /// time, and every item below the lowest failure runs.
    #[test]
    fn try_for_each_mut_reports_the_lowest_failing_index() {
        for threads in [0, 1, 2, 4, 8] {
            let ran: Vec<AtomicBool> = (0..16).map(|_| AtomicBool::new(false)).collect();
            let r = try_for_each_mut(threads, (0..16).collect(), |i, item: usize| {
                assert_eq!(i, item);
                ran[i].store(true, Ordering::Relaxed);
                match i {
                    // The lowest failure is the slowest one...
                    5 => {
                        std::thread::sleep(Duration::from_millis(50));
                        Err(i)
                    }
                    // ...while higher ones fail at once.
                    9.. => Err(i),
                    _ => Ok(()),
                }
            });
            assert_eq!(r, Err(5), "threads = {threads}");
            assert!(ran[..=5].iter().all(|r| r.load(Ordering::Relaxed)));
        }
        assert_eq!(
            try_for_each_mut(4, vec![1, 2, 3], |_, _| Ok::<_, ()>(())),
            Ok(())
        );
    }
}
