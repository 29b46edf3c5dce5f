//! Pieces shared by the vector levels: which float layouts they handle, and the symbol
//! histogram that `split` keeps in scalar code.

use super::FloatSplit;

/// The float layouts with a vector path: bf16 (2 bytes, 7 mantissa bits), f16 (2, 10) and
/// f32 (4, 23). Anything else goes to the scalar kernels.
pub(crate) fn vector_layout(fs: FloatSplit) -> bool {
    matches!((fs.bytes, fs.mant_bits), (2, 7) | (2, 10) | (4, 23))
}

/// Symbols of a vector layout: `1 << (8 bytes - mant_bits)` (512 for bf16 and f32, 64 for
/// f16).
pub(crate) fn alphabet(fs: FloatSplit) -> usize {
    1 << (8 * fs.bytes as u32 - fs.mant_bits)
}

/// Adds the histogram of `symbols` (each below `A`, a power of two: the callers produce them
/// with a shift that guarantees it) to `counts[..A]`.
///
/// The loop is bound by memory operations (a load and a read-modify-write per symbol). Eight
/// sub-histograms keep a run of equal symbols from waiting on its own stores, and 16-bit
/// counters (flushed before they can overflow) keep the eight within a few KiB of L1.
pub(crate) fn add_histogram<const A: usize>(symbols: &[u16], counts: &mut [u32]) {
    debug_assert!(A.is_power_of_two());
    const SUB: usize = 8;
    let mut sub = [[0u16; A]; SUB];
    // Each sub-histogram counts at most `u16::MAX` symbols per block.
    for block in symbols.chunks(SUB * usize::from(u16::MAX)) {
        let mut it = block.chunks_exact(SUB);
        for c in &mut it {
            for (h, &s) in sub.iter_mut().zip(c) {
                h[usize::from(s) & (A - 1)] += 1;
            }
        }
        for (h, &s) in sub.iter_mut().zip(it.remainder()) {
            h[usize::from(s) & (A - 1)] += 1;
        }
        for (i, c) in counts[..A].iter_mut().enumerate() {
            *c += sub.iter().map(|h| u32::from(h[i])).sum::<u32>();
        }
        sub = [[0u16; A]; SUB];
    }
}
