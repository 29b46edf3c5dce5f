//! Fixed-rate block quantization: consecutive elements share a scale, each element becomes a
//! code of a few bits (see [`Element`]).
//!
//! A block's scale comes from `amax`, the largest finite magnitude in the block:
//!
//! * **E8M0** (a power of two, as in OCP MX v1.0): the stored byte is
//!   `E = clamp(floor(log2(amax)) - emax + 127, 0, 254)` (`E = 0` when `amax = 0`), meaning
//!   `X = 2^(E - 127)`; elements code `x / X` (integers code `x / X * 2^(bits-2)`, i.e. fixed
//!   point with `bits - 2` fraction bits, which makes int8 exactly MXINT8). Byte 255 is NaN.
//! * **float16 / bfloat16**: the stored scale is `s = amax / max_value` rounded to the scale
//!   type (nearest-even, saturating), and elements code `x / s`; `s = 0` codes zeros.
//!
//! Every step is one IEEE `f32` operation (the division `x / scale`, the reconstruction
//! `value(code) * scale`), so vector kernels can reproduce the scalar reference bit for bit.
//! Non-finite elements are left out of `amax` and coded as 0 (the pipeline carries them as
//! escapes when asked to).

use super::convert::{self, bf16_to_f32, f16_to_f32, f32_to_bf16_sat, f32_to_f16_sat};
use super::minifloat::{floor_log2, pow2, Element};
use super::rounding::{self, Rounding};
use crate::dtype::DType;

/// Smallest and largest block sizes.
pub const MIN_BLOCK: usize = 16;
pub const MAX_BLOCK: usize = 256;
/// The block size of the MX formats.
pub const MX_BLOCK: usize = 32;

/// How a block's scale is stored. The discriminant is the code in frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ScaleFormat {
    /// A power of two, one byte: an 8-bit biased exponent (OCP MX E8M0).
    E8M0 = 1,
    /// An IEEE binary16, two bytes.
    F16 = 2,
    /// A bfloat16, two bytes.
    BF16 = 3,
}

impl ScaleFormat {
    pub const ALL: [ScaleFormat; 3] = [ScaleFormat::E8M0, ScaleFormat::F16, ScaleFormat::BF16];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<ScaleFormat> {
        ScaleFormat::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            ScaleFormat::E8M0 => "e8m0",
            ScaleFormat::F16 => "f16",
            ScaleFormat::BF16 => "bf16",
        }
    }

    pub fn parse(name: &str) -> Option<ScaleFormat> {
        let n = name.trim().to_ascii_lowercase();
        match n.as_str() {
            "float16" => Some(ScaleFormat::F16),
            "bfloat16" => Some(ScaleFormat::BF16),
            _ => ScaleFormat::ALL.into_iter().find(|s| s.name() == n),
        }
    }

    /// Bytes per stored scale.
    pub fn bytes(self) -> usize {
        match self {
            ScaleFormat::E8M0 => 1,
            ScaleFormat::F16 | ScaleFormat::BF16 => 2,
        }
    }
}

/// A block format: element, scale and block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockFormat {
    pub element: Element,
    pub scale: ScaleFormat,
    pub block: usize,
}

impl BlockFormat {
    /// The multiplier a stored scale stands for: what codes are divided by when encoding and
    /// multiplied by when decoding.
    #[inline(always)]
    pub fn multiplier(&self, scale: u16) -> f32 {
        match self.scale {
            ScaleFormat::E8M0 => match scale {
                255 => f32::NAN,
                // 2^(E - 127 - fraction bits): at least 2^-133, a subnormal f32.
                e => pow2(i32::from(e) - 127 - self.element.int_fraction_bits()),
            },
            ScaleFormat::F16 => f16_to_f32(scale),
            ScaleFormat::BF16 => bf16_to_f32(scale),
        }
    }

    /// The stored scale of a block whose largest finite magnitude is `amax`.
    #[inline(always)]
    pub fn scale_for(&self, amax: f32) -> u16 {
        match self.scale {
            ScaleFormat::E8M0 => {
                if amax == 0.0 {
                    0
                } else {
                    (floor_log2(amax) - self.element.emax() + 127).clamp(0, 254) as u16
                }
            }
            ScaleFormat::F16 => f32_to_f16_sat(amax / self.element.max_value()),
            ScaleFormat::BF16 => f32_to_bf16_sat(amax / self.element.max_value()),
        }
    }
}

/// Encodes one block `xs` (at most `block` elements, the first being element `base` of the
/// tensor) into `codes` (one per element, in the low bits) and returns its stored scale.
pub fn encode_block(
    fmt: &BlockFormat,
    xs: &[f32],
    rounding: Rounding,
    base: u64,
    codes: &mut [u8],
) -> u16 {
    debug_assert_eq!(xs.len(), codes.len());
    let scale = fmt.scale_for(finite_amax(xs));
    let mult = fmt.multiplier(scale);
    if mult == 0.0 {
        codes.fill(0);
        return scale;
    }
    let el = fmt.element;
    match rounding {
        Rounding::Nearest if el.is_int() => encode_ints_nearest(xs, mult, el, codes),
        Rounding::Nearest => {
            for (c, &x) in codes.iter_mut().zip(xs) {
                *c = if x.is_finite() {
                    el.encode(x / mult, None)
                } else {
                    0
                };
            }
        }
        Rounding::Stochastic { seed } => {
            for (i, (c, &x)) in codes.iter_mut().zip(xs).enumerate() {
                *c = if x.is_finite() {
                    el.encode(x / mult, Some(rounding::threshold(seed, base + i as u64)))
                } else {
                    0
                };
            }
        }
    }
    scale
}

/// The largest magnitude among the finite values of `xs` (0 when there is none). For
/// non-negative floats the order of the bit patterns is the order of the values, so this is an
/// integer maximum, which vectorizes.
pub fn finite_amax(xs: &[f32]) -> f32 {
    let m = xs
        .iter()
        .map(|x| {
            let b = x.to_bits() & 0x7fff_ffff;
            if b < 0x7f80_0000 {
                b
            } else {
                0
            }
        })
        .fold(0u32, u32::max);
    f32::from_bits(m)
}

/// Integer codes rounded to nearest: the same results as [`Element::encode`], in a loop with
/// no branches and no calls, which the compiler can vectorize. (Adding 1.5 * 2^23 to an
/// integer-valued float below 2^22 in magnitude puts the integer in the low mantissa bits.)
fn encode_ints_nearest(xs: &[f32], mult: f32, el: Element, codes: &mut [u8]) {
    const MAGIC: f32 = 12_582_912.0;
    let m = el.max_value();
    let mask = ((1u32 << el.bits()) - 1) as u8;
    for (c, &x) in codes.iter_mut().zip(xs) {
        let t = if x.is_finite() { x / mult } else { 0.0 };
        let r = rounding::round_even(t).clamp(-m, m);
        *c = ((r + MAGIC).to_bits().wrapping_sub(0x4b40_0000) as u8) & mask;
    }
}

/// Decodes one block: `out[i] = values[codes[i]] * multiplier(scale)` in `f32`.
pub fn decode_block(values: &[f32], mult: f32, codes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(codes.len(), out.len());
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = values[c as usize] * mult;
    }
}

/// The scalar reference of the `block_encode` kernel (see [`crate::simd::Kernels`]): encodes
/// the elements of `input` (little-endian `dtype` bytes, element 0 being element `base` of the
/// tensor) in consecutive blocks of `fmt.block` (the last may be shorter). Writes one code per
/// element to `codes` and each block's stored scale, little-endian in `fmt.scale.bytes()`
/// bytes, to `scales`; returns the number of non-finite elements (coded 0).
pub fn encode_blocks(
    fmt: &BlockFormat,
    rounding: Rounding,
    base: u64,
    dtype: DType,
    input: &[u8],
    codes: &mut [u8],
    scales: &mut [u8],
) -> usize {
    let n = codes.len();
    let isz = dtype.itemsize();
    assert_eq!(input.len(), n * isz);
    assert_eq!(scales.len(), n.div_ceil(fmt.block) * fmt.scale.bytes());
    let mut buf = [0f32; MAX_BLOCK];
    let mut nonfinite = 0;
    for (g, (codes, scale)) in codes
        .chunks_mut(fmt.block)
        .zip(scales.chunks_exact_mut(fmt.scale.bytes()))
        .enumerate()
    {
        let start = g * fmt.block;
        let xs = &mut buf[..codes.len()];
        convert::load_all(dtype, &input[start * isz..(start + xs.len()) * isz], xs);
        nonfinite += xs.iter().filter(|x| !x.is_finite()).count();
        let s = encode_block(fmt, xs, rounding, base + start as u64, codes);
        scale.copy_from_slice(&s.to_le_bytes()[..fmt.scale.bytes()]);
    }
    nonfinite
}

/// Whether the `block_encode_packed` kernels pack `fmt`'s codes as they code them: 8-bit
/// elements in blocks that are whole groups of 64 tiling the bit-packing blocks of 512 (64,
/// 128 or 256). They take other 8-bit formats too, more slowly than a separate pack.
pub fn packs_as_coded(fmt: &BlockFormat) -> bool {
    fmt.element.bits() == 8
        && fmt.block.is_multiple_of(64)
        && super::bitpack::BLOCK.is_multiple_of(fmt.block)
}

/// The scalar reference of the `block_encode_packed` kernel: [`encode_blocks`] for 8-bit
/// elements, with the codes in their packed layout (what `bitpack::pack_bytes(8, ...)` makes
/// of them: as many bytes, the values of each whole block of 512 rearranged).
pub fn encode_blocks_packed(
    fmt: &BlockFormat,
    rounding: Rounding,
    base: u64,
    dtype: DType,
    input: &[u8],
    codes: &mut [u8],
    scales: &mut [u8],
) -> usize {
    assert_eq!(fmt.element.bits(), 8, "packed block codes are 8-bit");
    let nonfinite = encode_blocks(fmt, rounding, base, dtype, input, codes, scales);
    super::bitpack::pack_bytes8_in_place(codes);
    nonfinite
}

/// The stored scale of block `g` in a chunk's scale bytes.
#[inline(always)]
pub fn stored_scale(fmt: &BlockFormat, scales: &[u8], g: usize) -> u16 {
    match fmt.scale.bytes() {
        1 => u16::from(scales[g]),
        _ => u16::from_le_bytes([scales[2 * g], scales[2 * g + 1]]),
    }
}

/// The scalar reference of the `block_decode` kernel: decodes the codes of consecutive blocks
/// (`scales` holds each block's stored scale as [`encode_blocks`] writes them) into `out`, as
/// `dtype` bytes: `value(code) * multiplier` in `f32`, rounded to the dtype (saturating). Only
/// the low `bits` bits of a code count. A NaN product (only a hostile frame has NaN codes or
/// scales) is written as the dtype's canonical quiet NaN, so that every kernel writes the
/// same bytes whatever NaN its multiplication propagates.
pub fn decode_blocks(fmt: &BlockFormat, dtype: DType, scales: &[u8], codes: &[u8], out: &mut [u8]) {
    let n = codes.len();
    let isz = dtype.itemsize();
    assert_eq!(out.len(), n * isz);
    assert!(scales.len() >= n.div_ceil(fmt.block) * fmt.scale.bytes());
    let mut values = [0f32; 256];
    for (c, v) in values.iter_mut().enumerate() {
        *v = fmt.element.value(c as u8);
    }
    let mask = ((1u32 << fmt.element.bits()) - 1) as u8;
    for (g, (codes, out)) in codes
        .chunks(fmt.block)
        .zip(out.chunks_mut(fmt.block * isz))
        .enumerate()
    {
        let mult = fmt.multiplier(stored_scale(fmt, scales, g));
        for (i, &c) in codes.iter().enumerate() {
            let v = values[usize::from(c & mask)] * mult;
            let v = if v.is_nan() { f32::NAN } else { v };
            convert::store_bits(dtype, convert::to_bits_sat(dtype, v), out, i);
        }
    }
}

/// Whether the `block_decode_packed` kernels take `fmt`: 8-bit elements in blocks whose size
/// divides 512 (so that each bit-packing block holds whole blocks).
pub fn decodes_packed(fmt: &BlockFormat) -> bool {
    fmt.element.bits() == 8 && super::bitpack::BLOCK.is_multiple_of(fmt.block)
}

/// The scalar reference of the `block_decode_packed` kernel: [`decode_blocks`] of 8-bit codes
/// in their packed layout (as `bitpack::pack_bytes(8, ...)` writes them), for the formats of
/// [`decodes_packed`] (the condition of the vector kernels; this one would take any).
pub fn decode_blocks_packed(
    fmt: &BlockFormat,
    dtype: DType,
    scales: &[u8],
    codes: &[u8],
    out: &mut [u8],
) {
    assert!(
        decodes_packed(fmt),
        "packed block codes are 8-bit, in blocks that tile 512"
    );
    let mut bytes = vec![0u8; codes.len()];
    super::bitpack::unpack_bytes(8, codes, &mut bytes);
    decode_blocks(fmt, dtype, scales, &bytes, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(element: Element, scale: ScaleFormat) -> BlockFormat {
        BlockFormat {
            element,
            scale,
            block: 32,
        }
    }

    fn round_trip(f: &BlockFormat, xs: &[f32]) -> Vec<f32> {
        let mut codes = vec![0u8; xs.len()];
        let s = encode_block(f, xs, Rounding::Nearest, 0, &mut codes);
        let mut out = vec![0f32; xs.len()];
        decode_block(&f.element.values(), f.multiplier(s), &codes, &mut out);
        out
    }

    #[test]
    fn mxint8_matches_the_spec() {
        // amax = 3.99: X = 2^1, elements are x / 2 in 1.6 fixed point.
        let f = fmt(Element::Int8, ScaleFormat::E8M0);
        let xs = [3.99f32, -1.0, 0.01, 2.9];
        assert_eq!(f.scale_for(3.99), 128);
        let out = round_trip(&f, &xs);
        assert_eq!(out[0], 127.0 / 64.0 * 2.0); // saturates at 1.984375 * X
        assert_eq!(out[1], -1.0);
        assert_eq!(out[2], 0.0);
        assert_eq!(out[3], (2.9f32 / 2.0 * 64.0).round() / 32.0);
    }

    #[test]
    fn mxfp4_matches_the_spec() {
        // amax = 5: floor(log2 5) = 2, emax(E2M1) = 2, so X = 1 and elements are E2M1(x).
        let f = fmt(Element::E2M1, ScaleFormat::E8M0);
        assert_eq!(f.scale_for(5.0), 127);
        let out = round_trip(&f, &[5.0, -2.6, 0.2, 1.25]);
        assert_eq!(out, vec![4.0, -3.0, 0.0, 1.0]);
    }

    #[test]
    fn float_scales_cover_the_element_range() {
        let f = fmt(Element::Int4, ScaleFormat::F16);
        let xs: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) * 0.1).collect();
        let out = round_trip(&f, &xs);
        let s = f.multiplier(f.scale_for(1.55));
        for (x, y) in xs.iter().zip(&out) {
            assert!((x - y).abs() <= s / 2.0 * 1.001 + 1e-6, "{x} {y}");
        }
        // All zeros and non-finite values code as zeros.
        assert_eq!(round_trip(&f, &[0.0; 4]), vec![0.0; 4]);
        let out = round_trip(&f, &[f32::NAN, 1.0, f32::INFINITY]);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[2], 0.0);
        assert!((out[1] - 1.0).abs() < 0.1);
    }

    #[test]
    fn integer_fast_path_matches_the_element_encoder() {
        let xs: Vec<f32> = (0..20_000)
            .map(|i| ((i as f32) * 0.7311).sin() * 3.0 * (i % 7) as f32)
            .chain([f32::NAN, f32::INFINITY, -0.0, 1e30, -1e30, 0.5, -2.5, 126.5])
            .collect();
        for el in [Element::Int8, Element::Int4, Element::Int3, Element::Int2] {
            for mult in [0.01f32, 0.37, 1.0, 1e-20] {
                let mut fast = vec![0u8; xs.len()];
                encode_ints_nearest(&xs, mult, el, &mut fast);
                for (i, &x) in xs.iter().enumerate() {
                    let want = if x.is_finite() {
                        el.encode(x / mult, None)
                    } else {
                        0
                    };
                    assert_eq!(fast[i], want, "{el:?} {mult} {x}");
                }
            }
        }
        assert_eq!(finite_amax(&[1.0, -3.0, f32::NAN, f32::NEG_INFINITY]), 3.0);
        assert_eq!(finite_amax(&[f32::NAN]), 0.0);
    }

    #[test]
    fn e8m0_range_is_clamped() {
        let f = fmt(Element::E4M3, ScaleFormat::E8M0);
        assert_eq!(f.scale_for(f32::MAX), 127 + 127 - 8);
        assert_eq!(f.scale_for(f32::from_bits(1)), 0);
        assert!(f.multiplier(255).is_nan());
        let g = fmt(Element::Int8, ScaleFormat::E8M0);
        assert_eq!(g.multiplier(0), pow2(-133));
    }
}
