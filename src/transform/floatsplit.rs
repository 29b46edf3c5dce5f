//! The lossless float split: each element becomes a symbol (its sign and exponent, low
//! entropy on real activations, for an entropy coder) and a mantissa (close to random, stored
//! packed), the way GPU float codecs such as DietGPU split floats.
//!
//! Mantissa bits that are zero in every element of a chunk (an `f32` tensor upcast from
//! `bf16` has 16 of them) are dropped; the count is stored with the chunk.

use crate::dtype::DType;
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

/// Splits `input` (`symbols.len()` elements) into `symbols`, counting them into `counts`
/// (which must be zeroed and `alphabet` long). Returns how many low mantissa bits are zero in
/// every element.
pub fn split(dtype: DType, input: &[u8], symbols: &mut [u16], counts: &mut [u32]) -> u32 {
    let fs = layout(dtype);
    assert_eq!(input.len(), symbols.len() * fs.bytes);
    assert_eq!(counts.len(), alphabet(dtype));
    let or = (simd::kernels().split)(fs, input, symbols, counts);
    if or == 0 {
        fs.mant_bits
    } else {
        or.trailing_zeros()
    }
}

/// Bytes taken by the packed mantissas of `n` elements with `drop` bits dropped.
pub fn packed_mantissa_len(dtype: DType, n: usize, drop: u32) -> usize {
    bitpack::packed_len(n, dtype.layout().mant_bits - drop)
}

/// Appends the packed mantissas of `input`, shifted right by `drop`, to `out`.
pub fn pack_mantissa(dtype: DType, input: &[u8], drop: u32, out: &mut Vec<u8>) {
    let fs = layout(dtype);
    assert!(drop <= fs.mant_bits);
    let n = input.len() / fs.bytes;
    let start = out.len();
    out.resize(start + packed_mantissa_len(dtype, n, drop), 0);
    (simd::kernels().pack_mantissa)(fs, input, drop, &mut out[start..]);
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
