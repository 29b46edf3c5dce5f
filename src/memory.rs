//! Memory for decoded tensors.
//!
//! A decode that returns a new tensor writes every byte of memory the process has never
//! touched, and the kernel maps it in one page fault per 4 KiB page. On Linux, with
//! transparent huge pages in their usual `madvise` mode, a buffer advised with
//! `MADV_HUGEPAGE` is mapped 2 MiB at a time instead, as numpy does for its own arrays of
//! 4 MiB and more. On a 2-core AMD EPYC (Zen 1) VM, decoding a 64 MiB bfloat16 tensor into a
//! new torch tensor on one thread went from 1.05-1.23 to 1.81-1.93 GB/s (`fast`), 0.60-0.66
//! to 0.77-0.80 (`lossless`) and 0.55-0.60 to 0.70 (`balanced`) with the advice.

/// Buffers smaller than this are left to the allocator's ordinary pages (numpy's threshold
/// for the same advice).
pub const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// The transparent huge page size this advice aligns to (x86-64 and most aarch64 kernels).
const HUGE_PAGE: usize = 2 << 20;

/// Advises the kernel to back the whole 2 MiB pages inside `buf` with transparent huge pages
/// where it can, so that writing them costs one page fault per 2 MiB. Only a hint: the
/// contents are unchanged, pages already mapped stay as they are, and the kernel may decline
/// (huge pages turned off, no contiguous memory free). Returns whether the advice was given:
/// false for buffers under [`HUGE_PAGE_MIN_BYTES`], holding no whole huge page, off Linux, or
/// when the kernel refused it (e.g. built without transparent huge pages).
///
/// Call it on memory that is about to be written in full and not on memory shared with other
/// processes: it suits a freshly allocated output buffer.
pub fn advise_huge_pages(buf: &mut [u8]) -> bool {
    advise_range(buf.as_ptr() as usize, buf.len())
}

/// [`advise_huge_pages`] for the spare capacity of `v` (what its next pushes will write):
/// for a `Vec` that was just reserved and is about to be filled.
pub fn advise_huge_pages_spare(v: &mut Vec<u8>) -> bool {
    let spare = v.spare_capacity_mut();
    advise_range(spare.as_ptr() as usize, spare.len())
}

/// Advises the whole huge pages inside `addr..addr + len`, memory the caller owns.
fn advise_range(addr: usize, len: usize) -> bool {
    if len < HUGE_PAGE_MIN_BYTES {
        return false;
    }
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = (addr + len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return false;
    }
    advise(start, end - start)
}

#[cfg(target_os = "linux")]
fn advise(start: usize, len: usize) -> bool {
    // SAFETY: `start..start + len` lies inside a buffer this process owns (the caller's
    // `&mut [u8]`) and is aligned to the huge page size; MADV_HUGEPAGE changes how its pages
    // are backed, never their contents.
    unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn advise(_start: usize, _len: usize) -> bool {
    false
}

/// A zeroed buffer of `len` bytes for a decoded tensor, advised as in [`advise_huge_pages`]
/// before any of it is written.
pub(crate) fn output_buffer(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    advise_huge_pages(&mut data);
    data
}

/// Whether every page of `buf` is mapped (resident) now, so that writing it costs no page
/// fault: on Linux from `mincore`; elsewhere, and for an empty buffer, false. A caller's
/// output buffer that was written before (reused from call to call) is mapped; a fresh
/// allocation of more than a few pages is not, until it is written.
///
/// The decoders prefetch their outputs for writing only where this holds (see
/// `simd::PREFETCH_AHEAD`). It costs a system call per 16 MiB of `buf`, each a walk of the
/// page tables: 42 µs for a mapped 64 MiB buffer on a 2-core Intel Xeon VM (a decode of it
/// takes milliseconds), less for one that is not (the walk stops at the first gap).
pub fn mapped(buf: &[u8]) -> bool {
    !buf.is_empty() && resident(buf.as_ptr() as usize, buf.len())
}

#[cfg(target_os = "linux")]
fn resident(addr: usize, len: usize) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return false,
    };
    const PAGES: usize = 4096;
    let mut vec = [0u8; PAGES];
    let end = addr + len;
    let mut at = addr / page * page;
    while at < end {
        let span = (end - at).min(PAGES * page);
        let pages = span.div_ceil(page);
        // SAFETY: `at..at + span` covers pages that hold bytes of `buf` (memory this process
        // has mapped: the caller's slice), `at` is page-aligned, and `vec` has a byte for
        // each of its `pages <= PAGES` pages. mincore only reads the page tables.
        let r = unsafe { libc::mincore(at as *mut libc::c_void, span, vec.as_mut_ptr().cast()) };
        if r != 0 || vec[..pages].iter().any(|&v| v & 1 == 0) {
            return false;
        }
        at += span;
    }
    true
}

#[cfg(not(target_os = "linux"))]
fn resident(_addr: usize, _len: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_and_partial_huge_pages_are_left_alone() {
        assert!(!advise_huge_pages(&mut vec![0u8; HUGE_PAGE_MIN_BYTES - 1]));
        assert!(!advise_huge_pages(&mut []));
        assert!(!advise_huge_pages_spare(&mut Vec::with_capacity(
            HUGE_PAGE_MIN_BYTES - 1
        )));
        let mut v = vec![7u8; HUGE_PAGE_MIN_BYTES + HUGE_PAGE];
        advise_huge_pages(&mut v);
        assert!(v.iter().all(|&b| b == 7), "the advice changed the contents");
    }

    #[test]
    fn written_buffers_are_mapped_and_fresh_large_ones_are_not() {
        assert!(!mapped(&[]));
        let mut buf = vec![0u8; 32 << 20];
        if cfg!(target_os = "linux") {
            // A zeroed allocation this large comes straight from mmap, untouched.
            assert!(!mapped(&buf), "a fresh 32 MiB buffer reads as mapped");
            buf.fill(1);
            assert!(mapped(&buf));
            assert!(mapped(&buf[1..buf.len() - 1]));
            assert!(mapped(&buf[4095..4097]));
        } else {
            buf.fill(1);
            assert!(!mapped(&buf));
        }
    }

    /// The `VmFlags` of the mapping in `/proc/self/smaps` that holds `addr`.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn vm_flags(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = a <= addr && addr < b;
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.trim().to_string());
                }
            }
        }
        None
    }

    // x86-64 only: under user-mode emulation (`make test-aarch64`) madvise is not passed on.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn output_buffers_are_advised_where_the_kernel_has_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            return; // a kernel without transparent huge pages refuses the advice
        }
        let buf = output_buffer(8 << 20);
        assert_eq!(buf.len(), 8 << 20);
        assert!(buf.iter().all(|&b| b == 0));
        let inner = (buf.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
        let flags = vm_flags(inner).expect("the buffer's mapping is in /proc/self/smaps");
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "no MADV_HUGEPAGE flag (hg) on the buffer's mapping: {flags}"
        );
        let mut v = vec![1u8; 3];
        v.reserve(8 << 20);
        assert!(advise_huge_pages_spare(&mut v));
        assert_eq!(v, [1, 1, 1]);
        let inner = (v.as_ptr() as usize + 3).next_multiple_of(HUGE_PAGE);
        let flags = vm_flags(inner).expect("the vector's mapping is in /proc/self/smaps");
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "spare: {flags}"
        );
    }
}
