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

/// Adds the histogram of the symbols of the elements in `input` (`BYTES` bytes each, the
/// symbol being the bits above `mant_bits`, below `A`) to `counts[..A]`. It reads the
/// elements rather than the symbols already written so that one 64-bit load serves two or
/// four elements: the loop is bound by memory operations. Eight sub-histograms keep a run
/// of equal symbols from waiting on its own stores.
pub(crate) fn add_histogram<const BYTES: usize, const MANT: u32, const A: usize>(
    input: &[u8],
    counts: &mut [u32],
) {
    let mant_bits = MANT;
    debug_assert!(A.is_power_of_two() && (BYTES == 2 || BYTES == 4));
    let mut sub = [[0u32; A]; 8];
    let m = A as u64 - 1;
    // The shift of each element's symbol within a 64-bit word.
    let sh = |j: u32| (8 * BYTES as u32) * j + mant_bits;
    let mut it = input.chunks_exact(16);
    for c in &mut it {
        let a = u64::from_le_bytes(c[..8].try_into().unwrap());
        let b = u64::from_le_bytes(c[8..].try_into().unwrap());
        if BYTES == 2 {
            sub[0][(a >> sh(0) & m) as usize] += 1;
            sub[1][(a >> sh(1) & m) as usize] += 1;
            sub[2][(a >> sh(2) & m) as usize] += 1;
            sub[3][(a >> sh(3) & m) as usize] += 1;
            sub[4][(b >> sh(0) & m) as usize] += 1;
            sub[5][(b >> sh(1) & m) as usize] += 1;
            sub[6][(b >> sh(2) & m) as usize] += 1;
            sub[7][(b >> sh(3) & m) as usize] += 1;
        } else {
            sub[0][(a >> sh(0) & m) as usize] += 1;
            sub[1][(a >> sh(1) & m) as usize] += 1;
            sub[2][(b >> sh(0) & m) as usize] += 1;
            sub[3][(b >> sh(1) & m) as usize] += 1;
        }
    }
    for c in it.remainder().chunks_exact(BYTES) {
        let mut v = [0u8; 8];
        v[..BYTES].copy_from_slice(c);
        sub[0][(u64::from_le_bytes(v) >> mant_bits & m) as usize] += 1;
    }
    for (i, c) in counts[..A].iter_mut().enumerate() {
        *c += sub.iter().map(|h| h[i]).sum::<u32>();
    }
}
