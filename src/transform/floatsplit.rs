//! The lossless float split: each element becomes a symbol (its sign and exponent, low
//! entropy on real activations, for an entropy coder) and a mantissa (close to random, stored
//! packed), the way GPU float codecs such as DietGPU split floats.
//!
//! Mantissa bits that are zero in every element of a chunk (an `f32` tensor upcast from
//! `bf16` has 16 of them) are dropped; the count is stored with the chunk.

use crate::dtype::DType;
use crate::entropy::freq;
use crate::quant::bitpack;
use crate::simd::{self, FloatSplit};

/// The split of `dtype`.
pub fn layout(dtype: DType) -> FloatSplit {
    let l = dtype.layout();
    FloatSplit {
        bytes: dtype.itemsize(),
        mant_bits: l.mant_bits,
    }
}

/// Number of distinct symbols (sign and exponent) of `dtype`: 512 for float32 and bfloat16,
/// 64 for float16.
pub fn alphabet(dtype: DType) -> usize {
    1 << (1 + dtype.layout().exp_bits)
}

/// One run of 64 symbols in this many is counted for a large chunk's table (see
/// [`freq::sampled_histogram`]): on a 2-core AMD EPYC (Zen 4) VM one in four encoded 4% faster
/// than one in two (`make speed --profiles lossless`, 1.97-1.99 -> 2.05-2.07 GB/s in three
/// alternating rounds) with the same ratio.
const SAMPLE_EVERY: usize = 4;

/// Writes the counts the rANS table of a chunk's split `symbols` is built from to `counts`
/// (`alphabet` long): sampled in large chunks, around the exponents present with both signs
/// (the sign is the symbol's top bit).
pub fn symbol_counts(symbols: &[u16], counts: &mut [u32]) {
    freq::sampled_histogram(symbols, counts, (counts.len() / 2 - 1) as u16, SAMPLE_EVERY);
}

/// Elements per run of [`split_pack`]: whole bit-packing blocks, 64 KiB of bfloat16 (runs of
/// 16 KiB, which fit the L1 cache, were slower: each costs the split kernel a histogram flush).
const SPLIT_PACK_RUN: usize = 64 * bitpack::BLOCK;

/// Splits `input` (`symbols.len()` elements) into `symbols`, writes the counts their rANS
/// table is built from to `counts` (`alphabet` long; sampled in large chunks, around the
/// exponents present with both signs: see [`freq::sampled_histogram`]), and packs the
/// mantissas into `packed`
/// (resized to their length; its old bytes are all overwritten), without the low bits that
/// are zero in every element: returns how many were dropped.
///
/// One pass: run by run, each run's mantissas are packed while its elements are still in
/// cache (a split pass and a pack pass over a chunk read it from memory twice).
///
/// The runs are packed as if no bit were dropped (whole blocks of a run pack exactly as the
/// same blocks of the chunk do); a chunk that can drop bits (rare outside of upcast tensors)
/// is packed again.
pub fn split_pack(
    dtype: DType,
    input: &[u8],
    symbols: &mut [u16],
    counts: &mut [u32],
    packed: &mut Vec<u8>,
) -> u32 {
    let fs = layout(dtype);
    let n = symbols.len();
    assert_eq!(input.len(), n * fs.bytes);
    assert_eq!(counts.len(), alphabet(dtype));
    let k = simd::kernels();
    packed.resize(packed_mantissa_len(dtype, n, 0), 0);
    let mut or = 0;
    let mut at = 0;
    for (sy, x) in symbols
        .chunks_mut(SPLIT_PACK_RUN)
        .zip(input.chunks(SPLIT_PACK_RUN * fs.bytes))
    {
        or |= (k.split)(fs, x, sy);
        let len = bitpack::packed_len(sy.len(), fs.mant_bits);
        (k.pack_mantissa)(fs, x, 0, &mut packed[at..at + len]);
        at += len;
    }
    debug_assert_eq!(at, packed.len());
    symbol_counts(symbols, counts);
    let drop = if or == 0 {
        fs.mant_bits
    } else {
        or.trailing_zeros()
    };
    if drop > 0 {
        packed.resize(packed_mantissa_len(dtype, n, drop), 0);
        (k.pack_mantissa)(fs, input, drop, packed);
    }
    drop
}

/// Bytes taken by the packed mantissas of `n` elements with `drop` bits dropped.
pub fn packed_mantissa_len(dtype: DType, n: usize, drop: u32) -> usize {
    bitpack::packed_len(n, dtype.layout().mant_bits - drop)
}

/// Rebuilds elements from `symbols` and the packed mantissas (exactly
/// `packed_mantissa_len(dtype, symbols.len(), drop)` bytes) into `out`.
pub fn merge(dtype: DType, symbols: &[u16], packed: &[u8], drop: u32, out: &mut [u8]) {
    let fs = layout(dtype);
    assert!(drop <= fs.mant_bits);
    assert_eq!(
        packed.len(),
        packed_mantissa_len(dtype, symbols.len(), drop)
    );
    assert_eq!(out.len(), symbols.len() * fs.bytes);
    (simd::kernels().merge)(fs, symbols, packed, drop, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::SCALAR;

    /// `split_pack` writes what a split of the whole chunk, its sampled histogram and a pack
    /// of its mantissas write, on every dtype, at lengths around the run and block sizes, with and without
    /// droppable bits.
    #[test]
    fn split_pack_is_split_then_pack() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for dtype in [DType::BF16, DType::F16, DType::F32] {
            let fs = layout(dtype);
            for n in [
                0,
                1,
                511,
                512,
                513,
                SPLIT_PACK_RUN - 1,
                SPLIT_PACK_RUN + 700,
                2 * SPLIT_PACK_RUN,
            ] {
                for low_zero in [0, 3] {
                    let input: Vec<u8> = (0..n)
                        .flat_map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let v = (x as u32) & !((1 << low_zero) - 1);
                            v.to_le_bytes()[..fs.bytes].to_vec()
                        })
                        .collect();
                    let mut symbols = vec![0u16; n];
                    let mut counts = vec![0u32; alphabet(dtype)];
                    let mut packed = vec![0xAA; 3];
                    let drop = split_pack(dtype, &input, &mut symbols, &mut counts, &mut packed);

                    let mut want_symbols = vec![0u16; n];
                    let or = (SCALAR.split)(fs, &input, &mut want_symbols);
                    let mut want_counts = vec![0u32; alphabet(dtype)];
                    symbol_counts(&want_symbols, &mut want_counts);
                    let want_drop = if or == 0 {
                        fs.mant_bits
                    } else {
                        or.trailing_zeros()
                    };
                    let mut want_packed = vec![0u8; packed_mantissa_len(dtype, n, want_drop)];
                    (SCALAR.pack_mantissa)(fs, &input, want_drop, &mut want_packed);
                    let case = format!("{dtype} n={n} low_zero={low_zero}");
                    assert_eq!(drop, want_drop, "{case}");
                    assert_eq!(symbols, want_symbols, "{case}");
                    assert_eq!(counts, want_counts, "{case}");
                    assert_eq!(packed, want_packed, "{case}");
                }
            }
        }
    }
}
