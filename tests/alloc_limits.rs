//! Decoding allocates only what the header declares and the limits allow.
//!
//! A counting global allocator records, per thread, the peak number of bytes live during a
//! call; the decoder runs on the calling thread (`threads: 1`) so that everything it
//! allocates is counted. (A separate test binary: the allocator applies to all of it.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use iota_codec::{Codec, DType, Limits, Profile};

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    // `try_with`: the thread-local may already be gone while a thread exits.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn sub(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

// SAFETY: every method forwards to the system allocator unchanged; the bookkeeping only
// touches const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size);
        sub(layout.size());
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The peak bytes live on this thread during `f`, above what was live before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}

fn codec(limit: u64) -> Codec {
    Codec {
        threads: 1,
        limits: Limits {
            max_output_bytes: limit,
            ..Limits::default()
        },
        ..Codec::new(Profile::Lossless)
    }
}

fn activations(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (((i as f32) * 0.37).sin() * 3.0).to_le_bytes())
        .collect()
}

const SLACK: usize = 1 << 20;

#[test]
fn decoding_allocates_about_the_declared_output() {
    let data = activations(1 << 20);
    let c = codec(1 << 30);
    let frame = c.encode(&data, DType::F32, &[1 << 20]).unwrap();
    let (t, peak) = peak_during(|| c.decode(&frame).unwrap());
    assert_eq!(t.data, data);
    // The output, plus per-chunk scratch and the chunk table.
    assert!(
        peak <= data.len() + data.len() / 2 + SLACK,
        "peak {peak} for {} output bytes",
        data.len()
    );
}

#[test]
fn a_frame_promising_more_than_it_carries_allocates_nothing_large() {
    let data = activations(1 << 20);
    let c = codec(1 << 30);
    let frame = c.encode(&data, DType::F32, &[1 << 20]).unwrap();
    // Truncated after the header and a little: the output is never allocated.
    for cut in [40, frame.len() / 3, frame.len() - 1] {
        let (r, peak) = peak_during(|| c.decode(&frame[..cut]));
        assert!(r.is_err());
        assert!(peak <= cut + SLACK, "peak {peak} for a {cut}-byte prefix");
    }
}

#[test]
fn a_bomb_is_refused_by_the_limit_before_allocating() {
    // 16 MiB of zeros compress to a few kilobytes: a frame that small may declare far more
    // output than it costs to send.
    let zeros = vec![0u8; 16 << 20];
    let bomb = codec(u64::MAX)
        .encode(&zeros, DType::F32, &[4 << 20])
        .unwrap();
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let (r, peak) = peak_during(|| codec(1 << 20).decode(&bomb));
    assert_eq!(r.unwrap_err().kind(), iota_codec::ErrorKind::LimitExceeded);
    assert!(peak <= SLACK, "peak {peak}");
    // A limit that allows it lets the zeros decode.
    let (t, _) = peak_during(|| codec(16 << 20).decode(&bomb).unwrap());
    assert_eq!(t.data, zeros);
}

#[test]
fn streaming_buffers_at_most_one_record() {
    let data = activations(1 << 18);
    let c = Codec {
        chunk_elems: 1 << 14,
        ..codec(1 << 30)
    };
    let frame = c.encode(&data, DType::F32, &[1 << 18]).unwrap();
    let mut d = c.stream_decoder();
    let mut out = vec![];
    let ((), peak) = peak_during(|| {
        for piece in frame.chunks(4096) {
            d.feed(piece).unwrap();
            if let Some(n) = d.output_len() {
                if out.is_empty() {
                    out = vec![0u8; n];
                }
                d.decode_available(&mut out).unwrap();
            }
        }
    });
    d.finish().unwrap();
    assert_eq!(out, data);
    // The output, one chunk's scratch and a partial record: not the whole frame.
    assert!(
        peak <= data.len() + 4 * (1 << 14) * 4 + SLACK,
        "peak {peak} for {} output bytes",
        data.len()
    );
}
