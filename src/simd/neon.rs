//! NEON kernels (aarch64; Apple Silicon and every other 64-bit Arm core has them).
//!
//! The same structure as the x86 levels: safe wrappers that check the CPU, sizes and
//! parameters, `#[target_feature]` loops, and the scalar reference for every remainder. The
//! lossy kernels and the float split are `vector.rs`'s generic bodies over four lanes.
//!
//! rANS with 32 lanes keeps the states in eight registers of 4 and runs them a quarter
//! group at a time, in lane order. NEON has no gather, so the table entries are loaded one
//! lane at a time; the arithmetic is vectorized. The decoder spreads the next words over the
//! renormalizing lanes with a byte shuffle keyed by the 4-bit lane mask; the encoder, which
//! runs backward, writes the words of the emitting lanes one by one below the previous ones,
//! touching nothing else.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::arch::aarch64::*;

use super::vector::Simd;
use super::{scalar, FloatSplit, Kernels, Level};
use crate::entropy::rans::{MAX_ALPHABET, MAX_PROB_BITS, RANS_L};

/// Whether this CPU supports the kernels (every aarch64 core does).
pub fn supported() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

pub const KERNELS: Kernels = Kernels {
    level: Level::Neon,
    rans_encode,
    rans_decode,
    rans_decode2,
    split,
    pack_mantissa,
    merge,
    to_f32: lossy_kernels::to_f32,
    from_f32: lossy_kernels::from_f32,
    block_encode: lossy_kernels::block_encode::<false>,
    block_encode_packed: lossy_kernels::block_encode::<true>,
    block_decode: lossy_kernels::block_decode::<false>,
    block_decode_packed: lossy_kernels::block_decode::<true>,
    pack_codes: lossy_kernels::pack_codes,
    unpack_codes: lossy_kernels::unpack_codes,
    stats: lossy_kernels::stats,
    uniform_encode: lossy_kernels::uniform_encode,
    uniform_decode: lossy_kernels::uniform_decode,
    extra_count: lossy_kernels::extra_count,
    flagged: lossy_kernels::flagged,
};

// ---------------------------------------------------------------------------------------
// rANS decode
// ---------------------------------------------------------------------------------------

/// `vqtbl1q_u8` controls, by 4-bit lane mask `m`: lane `j` (if set in `m`) takes 16-bit
/// word `k`, the number of set bits of `m` below `j`; other lanes get zero.
static EXPAND: [[u8; 16]; 16] = {
    let mut t = [[0xffu8; 16]; 16];
    let mut m = 0;
    while m < 16 {
        let mut k = 0;
        let mut lane = 0;
        while lane < 4 {
            if m >> lane & 1 == 1 {
                t[m][4 * lane] = 2 * k;
                t[m][4 * lane + 1] = 2 * k + 1;
                k += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    t
};

/// Two streams, one after the other.
pub fn rans_decode2(jobs: &mut [super::RansDecodeJob<'_>; 2]) -> [Option<usize>; 2] {
    super::decode_each(jobs, rans_decode)
}

pub fn rans_decode(
    words: &[u8],
    table: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    out: &mut [u16],
) -> Option<usize> {
    if !(supported()
        && states.len() == 32
        && prob_bits <= MAX_PROB_BITS
        && table.len() >= 1 << prob_bits)
    {
        return scalar::rans_decode(words, table, prob_bits, states, out);
    }
    // SAFETY: the CPU has NEON, there are 32 states, and every table index
    // `x & (2^prob_bits - 1)` is inside `table`.
    unsafe { decode32(words, table, prob_bits, states, out) }
}

/// The bits of a 4-lane mask.
#[inline(always)]
unsafe fn bits4(m: uint32x4_t) -> u32 {
    const BIT: [u32; 4] = [1, 2, 4, 8];
    // SAFETY: plain register operations; `BIT` is 16 readable bytes.
    unsafe { vaddvq_u32(vandq_u32(m, vld1q_u32(BIT.as_ptr()))) }
}

#[target_feature(enable = "neon")]
unsafe fn decode32(
    words: &[u8],
    table: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    out: &mut [u16],
) -> Option<usize> {
    debug_assert!(states.len() == 32 && table.len() >= 1 << prob_bits);
    let groups = out.len() / 32;
    let mask = (1u32 << prob_bits) - 1;
    let shift = vdupq_n_s32(-(prob_bits as i32));
    let low = vdupq_n_u32(RANS_L);
    // SAFETY: `states` holds 32 `u32`s.
    let mut s: [uint32x4_t; 8] =
        std::array::from_fn(|q| unsafe { vld1q_u32(states.as_ptr().add(4 * q)) });
    let mut pos = 0usize;
    let mut g = 0usize;
    // A group reads below `pos + 64` and a quarter reads 8 bytes from where it starts.
    while g < groups && words.len() - pos >= 72 {
        for (q, sq) in s.iter_mut().enumerate() {
            let x = *sq;
            let mut lanes = [0u32; 4];
            // SAFETY: 16 writable bytes.
            unsafe { vst1q_u32(lanes.as_mut_ptr(), x) };
            // SAFETY: every index is below `2^prob_bits <= table.len()`.
            let e = unsafe {
                [
                    *table.get_unchecked((lanes[0] & mask) as usize),
                    *table.get_unchecked((lanes[1] & mask) as usize),
                    *table.get_unchecked((lanes[2] & mask) as usize),
                    *table.get_unchecked((lanes[3] & mask) as usize),
                ]
            };
            // SAFETY: `e` is 16 readable bytes; symbols `32 g + 4 q ..` are inside `out`
            // (`g < groups`).
            let e = unsafe {
                let e = vld1q_u32(e.as_ptr());
                let sym = vmovn_u32(vandq_u32(e, vdupq_n_u32(0x1ff)));
                vst1_u16(out.as_mut_ptr().add(32 * g + 4 * q), sym);
                e
            };
            let freq = vandq_u32(vshrq_n_u32::<9>(e), vdupq_n_u32(0xfff));
            let xn = vaddq_u32(vmulq_u32(freq, vshlq_u32(x, shift)), vshrq_n_u32::<21>(e));
            let m = vcltq_u32(xn, low);
            // SAFETY: `pos + 8 <= words.len()` (72 bytes were left when the group began and
            // a group consumes at most 64); `bits4(m) < 16` indexes `EXPAND`.
            let w = unsafe {
                let raw = vcombine_u8(vld1_u8(words.as_ptr().add(pos)), vdup_n_u8(0));
                let bits = bits4(m);
                pos += 2 * bits.count_ones() as usize;
                let ctl = vld1q_u8(EXPAND.get_unchecked(bits as usize).as_ptr());
                vreinterpretq_u32_u8(vqtbl1q_u8(raw, ctl))
            };
            *sq = vbslq_u32(m, vorrq_u32(vshlq_n_u32::<16>(xn), w), xn);
        }
        g += 1;
    }
    for (q, sq) in s.iter().enumerate() {
        // SAFETY: `states` holds 32 `u32`s.
        unsafe { vst1q_u32(states.as_mut_ptr().add(4 * q), *sq) };
    }
    // The groups near the end of the words, and the partial last group.
    for group in out[32 * g..].chunks_mut(32) {
        scalar::decode_group(words, table, prob_bits, states, group, &mut pos)?;
    }
    Some(pos)
}

// ---------------------------------------------------------------------------------------
// rANS encode
// ---------------------------------------------------------------------------------------

pub fn rans_encode(
    symbols: &[u16],
    rcp: &[u32],
    info: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
) -> usize {
    if !(supported() && states.len() == 32 && prob_bits <= MAX_PROB_BITS) {
        return scalar::rans_encode(symbols, rcp, info, prob_bits, states, words);
    }
    // SAFETY: the CPU has NEON and there are 32 states; `encode32` checks symbols against
    // the tables and the room left in `words` itself.
    unsafe { encode32(symbols, rcp, info, prob_bits, states, words) }
}

#[target_feature(enable = "neon")]
unsafe fn encode32(
    symbols: &[u16],
    rcp: &[u32],
    info: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
) -> usize {
    debug_assert_eq!(states.len(), 32);
    let mut pos = words.len();
    let full = symbols.len() / 32 * 32;
    let (head, tail) = symbols.split_at(full);
    // The partial last group goes first: the encoder runs backward.
    scalar::encode_group_rev(tail, rcp, info, prob_bits, states, words, &mut pos);
    let n_table = rcp.len().min(info.len()).min(MAX_ALPHABET);
    let total = vdupq_n_u32(1 << prob_bits);
    let xmax_shift = vdupq_n_s32(31 - prob_bits as i32);
    // SAFETY: `states` holds 32 `u32`s.
    let mut s: [uint32x4_t; 8] =
        std::array::from_fn(|q| unsafe { vld1q_u32(states.as_ptr().add(4 * q)) });
    let mut g = full / 32;
    // A group writes at most 32 words below `pos`; a group with a symbol outside the tables
    // goes to the scalar code below (which panics on it, as the reference does).
    while g > 0 && pos >= 32 {
        let group = &head[32 * (g - 1)..32 * g];
        if group.iter().any(|&v| usize::from(v) >= n_table) {
            break;
        }
        for q in (0..8).rev() {
            let sy = &group[4 * q..4 * q + 4];
            // SAFETY: every symbol is below `n_table`, within both tables.
            let (r, inf) = unsafe {
                let r = [
                    *rcp.get_unchecked(usize::from(sy[0])),
                    *rcp.get_unchecked(usize::from(sy[1])),
                    *rcp.get_unchecked(usize::from(sy[2])),
                    *rcp.get_unchecked(usize::from(sy[3])),
                ];
                let i = [
                    *info.get_unchecked(usize::from(sy[0])),
                    *info.get_unchecked(usize::from(sy[1])),
                    *info.get_unchecked(usize::from(sy[2])),
                    *info.get_unchecked(usize::from(sy[3])),
                ];
                (vld1q_u32(r.as_ptr()), vld1q_u32(i.as_ptr()))
            };
            let x = s[q];
            let bias = vandq_u32(inf, vdupq_n_u32(0xfff));
            let cmpl = vandq_u32(vshrq_n_u32::<12>(inf), vdupq_n_u32(0x7ff));
            let shift = vreinterpretq_s32_u32(vshrq_n_u32::<23>(inf));
            let x_max = vshlq_u32(vsubq_u32(total, cmpl), xmax_shift);
            let m = vcgeq_u32(x, x_max);
            let y = vbslq_u32(m, vshrq_n_u32::<16>(x), x);
            // High halves of y * rcp, then the shift.
            let lo = vmull_u32(vget_low_u32(y), vget_low_u32(r));
            let hi = vmull_high_u32(y, r);
            let qh = vuzp2q_u32(vreinterpretq_u32_u64(lo), vreinterpretq_u32_u64(hi));
            let qv = vshlq_u32(qh, vnegq_s32(shift));
            s[q] = vmlaq_u32(vaddq_u32(y, bias), qv, cmpl);
            // The words of the emitting lanes, highest lane first, each just below the
            // previous.
            let mut xl = [0u32; 4];
            let mut ml = [0u32; 4];
            // SAFETY: 16 writable bytes each.
            unsafe {
                vst1q_u32(xl.as_mut_ptr(), x);
                vst1q_u32(ml.as_mut_ptr(), m);
            }
            for lane in (0..4).rev() {
                if ml[lane] != 0 {
                    pos -= 1;
                    // SAFETY: at least 32 words were free below `pos` when the group began,
                    // and the group moves `pos` down by one per emitting lane.
                    unsafe { *words.get_unchecked_mut(pos) = xl[lane] as u16 };
                }
            }
        }
        g -= 1;
    }
    for (q, sq) in s.iter().enumerate() {
        // SAFETY: `states` holds 32 `u32`s.
        unsafe { vst1q_u32(states.as_mut_ptr().add(4 * q), *sq) };
    }
    for group in head[..32 * g].chunks_exact(32).rev() {
        scalar::encode_group_rev(group, rcp, info, prob_bits, states, words, &mut pos);
    }
    pos
}

// ---------------------------------------------------------------------------------------
// Float split, mantissa packing, merge
// ---------------------------------------------------------------------------------------

pub fn split(fs: FloatSplit, input: &[u8], symbols: &mut [u16]) -> u32 {
    if !supported() {
        return scalar::split(fs, input, symbols);
    }
    #[target_feature(enable = "neon")]
    unsafe fn go(fs: FloatSplit, input: &[u8], symbols: &mut [u16]) -> u32 {
        // SAFETY: the feature is enabled here.
        unsafe { super::vector::split::<V128>(fs, input, symbols) }
    }
    // SAFETY: the CPU has NEON.
    unsafe { go(fs, input, symbols) }
}

pub fn pack_mantissa(fs: FloatSplit, input: &[u8], drop: u32, out: &mut [u8]) {
    if !supported() {
        return scalar::pack_mantissa(fs, input, drop, out);
    }
    #[target_feature(enable = "neon")]
    unsafe fn go(fs: FloatSplit, input: &[u8], drop: u32, out: &mut [u8]) {
        // SAFETY: the feature is enabled here.
        unsafe { super::vector::pack_mantissa::<V128>(fs, input, drop, out) }
    }
    // SAFETY: the CPU has NEON.
    unsafe { go(fs, input, drop, out) }
}

pub fn merge(fs: FloatSplit, symbols: &[u16], packed: &[u8], drop: u32, out: &mut [u8]) {
    if !supported() {
        return scalar::merge(fs, symbols, packed, drop, out);
    }
    #[target_feature(enable = "neon")]
    unsafe fn go(fs: FloatSplit, symbols: &[u16], packed: &[u8], drop: u32, out: &mut [u8]) {
        // SAFETY: the feature is enabled here.
        unsafe { super::vector::merge::<V128>(fs, symbols, packed, drop, out) }
    }
    // SAFETY: the CPU has NEON.
    unsafe { go(fs, symbols, packed, drop, out) }
}

// ---------------------------------------------------------------------------------------
// The lossy kernels: `vector.rs`'s generic bodies over 4 lanes
// ---------------------------------------------------------------------------------------

/// NEON lanes for the generic kernels: 4 `f32`, masks as all-ones lanes, the eight `f64`
/// error sums in four registers. Memory goes through byte loads and stores, so no pointer
/// needs more than byte alignment.
#[derive(Clone, Copy)]
pub(super) struct V128;

const LANE_BITS: [u32; 4] = [1, 2, 4, 8];

/// The bits of a 2-lane 64-bit mask.
#[inline(always)]
unsafe fn lane_bits2(v: uint64x2_t) -> u64 {
    (vgetq_lane_u64::<0>(v) & 1) | (vgetq_lane_u64::<1>(v) & 1) << 1
}

/// `f64(y) - f64(x)` of the low and the high two lanes.
#[inline(always)]
unsafe fn diffs(y: float32x4_t, x: float32x4_t) -> (float64x2_t, float64x2_t) {
    (
        vsubq_f64(vcvt_f64_f32(vget_low_f32(y)), vcvt_f64_f32(vget_low_f32(x))),
        vsubq_f64(vcvt_high_f64_f32(y), vcvt_high_f64_f32(x)),
    )
}

// SAFETY: the methods wrap NEON intrinsics; `Simd`'s contract (the feature present and
// enabled, the named bytes readable or writable) is the caller's.
unsafe impl Simd for V128 {
    const W: usize = 4;
    type F = float32x4_t;
    type I = int32x4_t;
    type M = uint32x4_t;
    type D = [float64x2_t; 2];
    type Acc = [float64x2_t; 4];
    type P = [float32x4_t; 4];

    #[inline(always)]
    unsafe fn splat(v: f32) -> float32x4_t {
        vdupq_n_f32(v)
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> int32x4_t {
        vdupq_n_s32(v)
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const u8) -> float32x4_t {
        vreinterpretq_f32_u8(vld1q_u8(p))
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const u8) -> int32x4_t {
        vreinterpretq_s32_u8(vld1q_u8(p))
    }
    #[inline(always)]
    unsafe fn load_u16(p: *const u8) -> int32x4_t {
        vreinterpretq_s32_u32(vmovl_u16(vreinterpret_u16_u8(vld1_u8(p))))
    }
    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> int32x4_t {
        let v = u32::from_le_bytes(std::ptr::read_unaligned(p.cast::<[u8; 4]>()));
        let b = vcreate_u8(u64::from(v));
        vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(b))))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const u8) -> int32x4_t {
        let v = u32::from_le_bytes(std::ptr::read_unaligned(p.cast::<[u8; 4]>()));
        let b = vreinterpret_s8_u8(vcreate_u8(u64::from(v)));
        vmovl_s16(vget_low_s16(vmovl_s8(b)))
    }
    #[inline(always)]
    unsafe fn store_f32(p: *mut u8, v: float32x4_t) {
        vst1q_u8(p, vreinterpretq_u8_f32(v))
    }
    #[inline(always)]
    unsafe fn store_i32(p: *mut u8, v: int32x4_t) {
        vst1q_u8(p, vreinterpretq_u8_s32(v))
    }
    #[inline(always)]
    unsafe fn store_u16(p: *mut u8, v: int32x4_t) {
        vst1_u8(p, vreinterpret_u8_u16(vmovn_u32(vreinterpretq_u32_s32(v))))
    }
    #[inline(always)]
    unsafe fn store_u8(p: *mut u8, v: int32x4_t) {
        let h = vmovn_u32(vreinterpretq_u32_s32(v));
        let b = vmovn_u16(vcombine_u16(h, h));
        let w = vget_lane_u32::<0>(vreinterpret_u32_u8(b));
        std::ptr::write_unaligned(p.cast::<[u8; 4]>(), w.to_le_bytes())
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vaddq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vsubq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmulq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vdivq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vminq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmaxq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn round_even(a: float32x4_t) -> float32x4_t {
        vrndnq_f32(a)
    }
    #[inline(always)]
    unsafe fn cvt_fi(a: float32x4_t) -> int32x4_t {
        vcvtq_s32_f32(a)
    }
    #[inline(always)]
    unsafe fn cvt_round_fi(a: float32x4_t) -> int32x4_t {
        vcvtnq_s32_f32(a)
    }
    #[inline(always)]
    unsafe fn cvt_if(a: int32x4_t) -> float32x4_t {
        vcvtq_f32_s32(a)
    }
    #[inline(always)]
    unsafe fn bits(a: float32x4_t) -> int32x4_t {
        vreinterpretq_s32_f32(a)
    }
    #[inline(always)]
    unsafe fn from_bits(a: int32x4_t) -> float32x4_t {
        vreinterpretq_f32_s32(a)
    }
    #[inline(always)]
    unsafe fn gt(a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        vcgtq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn ge(a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        vcgeq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn unord(a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        vmvnq_u32(vandq_u32(vceqq_f32(a, a), vceqq_f32(b, b)))
    }
    #[inline(always)]
    unsafe fn not_le(a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        vmvnq_u32(vcleq_f32(a, b))
    }
    #[inline(always)]
    unsafe fn iadd(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vaddq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn isub(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vsubq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn and(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vandq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn or(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vorrq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn xor(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        veorq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn shl(a: int32x4_t, n: u32) -> int32x4_t {
        vshlq_s32(a, vdupq_n_s32(n as i32))
    }
    #[inline(always)]
    unsafe fn shr(a: int32x4_t, n: u32) -> int32x4_t {
        vreinterpretq_s32_u32(vshlq_u32(
            vreinterpretq_u32_s32(a),
            vdupq_n_s32(-(n as i32)),
        ))
    }
    #[inline(always)]
    unsafe fn sra(a: int32x4_t, n: u32) -> int32x4_t {
        vshlq_s32(a, vdupq_n_s32(-(n as i32)))
    }
    #[inline(always)]
    unsafe fn ieq(a: int32x4_t, b: int32x4_t) -> uint32x4_t {
        vceqq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn igt(a: int32x4_t, b: int32x4_t) -> uint32x4_t {
        vcgtq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn imax(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vmaxq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn sel_f(m: uint32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vbslq_f32(m, a, b)
    }
    #[inline(always)]
    unsafe fn sel_i(m: uint32x4_t, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vbslq_s32(m, a, b)
    }
    #[inline(always)]
    unsafe fn m_and(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        vandq_u32(a, b)
    }
    #[inline(always)]
    unsafe fn m_or(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        vorrq_u32(a, b)
    }
    #[inline(always)]
    unsafe fn m_not(a: uint32x4_t) -> uint32x4_t {
        vmvnq_u32(a)
    }
    #[inline(always)]
    unsafe fn mask_bits(m: uint32x4_t) -> u32 {
        vaddvq_u32(vandq_u32(m, vld1q_u32(LANE_BITS.as_ptr())))
    }
    #[inline(always)]
    unsafe fn mask_from_bits(b: u32) -> uint32x4_t {
        vtstq_u32(vdupq_n_u32(b), vld1q_u32(LANE_BITS.as_ptr()))
    }
    #[inline(always)]
    unsafe fn hmax_i(a: int32x4_t) -> i32 {
        vmaxvq_s32(a)
    }
    #[inline(always)]
    unsafe fn acc_load(s: &[f64; 8]) -> [float64x2_t; 4] {
        [
            vld1q_f64(s.as_ptr()),
            vld1q_f64(s.as_ptr().add(2)),
            vld1q_f64(s.as_ptr().add(4)),
            vld1q_f64(s.as_ptr().add(6)),
        ]
    }
    #[inline(always)]
    unsafe fn acc_store(acc: [float64x2_t; 4], s: &mut [f64; 8]) {
        for (k, a) in acc.iter().enumerate() {
            vst1q_f64(s.as_mut_ptr().add(2 * k), *a);
        }
    }
    #[inline(always)]
    unsafe fn diff(y: float32x4_t, x: float32x4_t) -> [float64x2_t; 2] {
        let (lo, hi) = diffs(y, x);
        [lo, hi]
    }
    #[inline(always)]
    unsafe fn err_add(
        acc: &mut [float64x2_t; 4],
        d: [float64x2_t; 2],
        max_abs: f64,
        lane: usize,
    ) -> u32 {
        debug_assert!(lane == 0 || lane == 4);
        let k = lane / 2;
        let max = vdupq_n_f64(max_abs);
        let mut bits = 0;
        for (h, d) in d.into_iter().enumerate() {
            // NaN, or beyond the bound.
            let bad = vreinterpretq_u64_u32(vmvnq_u32(vreinterpretq_u32_u64(vcleq_f64(
                vabsq_f64(d),
                max,
            ))));
            acc[k + h] = vbslq_f64(bad, acc[k + h], vaddq_f64(acc[k + h], vmulq_f64(d, d)));
            bits |= lane_bits2(bad) << (2 * h);
        }
        bits as u32
    }
    #[inline(always)]
    unsafe fn err_add_keep(
        acc: &mut [float64x2_t; 4],
        d: [float64x2_t; 2],
        keep: uint32x4_t,
        lane: usize,
    ) {
        debug_assert!(lane == 0 || lane == 4);
        let k = lane / 2;
        let keep = vreinterpretq_s32_u32(keep);
        let klo = vreinterpretq_u64_s64(vmovl_s32(vget_low_s32(keep)));
        let khi = vreinterpretq_u64_s64(vmovl_high_s32(keep));
        acc[k] = vbslq_f64(klo, vaddq_f64(acc[k], vmulq_f64(d[0], d[0])), acc[k]);
        acc[k + 1] = vbslq_f64(
            khi,
            vaddq_f64(acc[k + 1], vmulq_f64(d[1], d[1])),
            acc[k + 1],
        );
    }
    #[inline(always)]
    unsafe fn part_load(p: &[f32; 16]) -> [float32x4_t; 4] {
        std::array::from_fn(|k| vld1q_f32(p.as_ptr().add(4 * k)))
    }
    #[inline(always)]
    unsafe fn part_store(p: [float32x4_t; 4], out: &mut [f32; 16]) {
        for (k, v) in p.iter().enumerate() {
            vst1q_f32(out.as_mut_ptr().add(4 * k), *v);
        }
    }
    /// The lanes left out are zeroed (adding `0 * 0` leaves a partial sum as it was).
    #[inline(always)]
    unsafe fn part_add(p: &mut [float32x4_t; 4], s: float32x4_t, keep: uint32x4_t, part: usize) {
        debug_assert!(part.is_multiple_of(4) && part < 16);
        let s = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(s), keep));
        let k = part / 4;
        p[k] = vfmaq_f32(p[k], s, s);
    }
    #[inline(always)]
    unsafe fn part_flush(acc: &mut [float64x2_t; 4], p: &mut [float32x4_t; 4], unscale: f64) {
        let u = vdupq_n_f64(unscale);
        // Partial `l` goes to sum `l mod 8`: vector `k` to sums `4 (k mod 2)..+4`. The
        // products are exact, so a fused multiply-add adds what a multiply and an add do.
        for (k, v) in p.iter().enumerate() {
            let a = 2 * (k % 2);
            acc[a] = vfmaq_f64(acc[a], vcvt_f64_f32(vget_low_f32(*v)), u);
            acc[a + 1] = vfmaq_f64(acc[a + 1], vcvt_high_f64_f32(*v), u);
        }
        *p = [vdupq_n_f32(0.0); 4];
    }
    #[inline(always)]
    unsafe fn sq_add(acc: &mut [float64x2_t; 4], v: float32x4_t, lane: usize) {
        debug_assert!(lane == 0 || lane == 4);
        let k = lane / 2;
        let lo = vcvt_f64_f32(vget_low_f32(v));
        let hi = vcvt_high_f64_f32(v);
        acc[k] = vaddq_f64(acc[k], vmulq_f64(lo, lo));
        acc[k + 1] = vaddq_f64(acc[k + 1], vmulq_f64(hi, hi));
    }
    #[inline(always)]
    unsafe fn thresholds(seed: u64, index: u64) -> float32x4_t {
        let u: [f32; 4] = std::array::from_fn(|k| {
            crate::quant::rounding::threshold(seed, index.wrapping_add(k as u64))
        });
        vld1q_f32(u.as_ptr())
    }
    #[inline(always)]
    unsafe fn transpose_4x16(src: *const u8, dst: *mut u8) {
        let rows = uint8x16x4_t(
            vld1q_u8(src),
            vld1q_u8(src.add(16)),
            vld1q_u8(src.add(32)),
            vld1q_u8(src.add(48)),
        );
        vst4q_u8(dst, rows)
    }
    #[inline(always)]
    unsafe fn untranspose_4x16(src: *const u8, dst: *mut u8) {
        let rows = vld4q_u8(src);
        vst1q_u8(dst, rows.0);
        vst1q_u8(dst.add(16), rows.1);
        vst1q_u8(dst.add(32), rows.2);
        vst1q_u8(dst.add(48), rows.3);
    }
}

super::vector::vector_kernels!(V128, "neon", supported);
