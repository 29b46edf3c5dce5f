//! The lossy kernels, written once over [`Simd`]: a small vocabulary of lane-parallel
//! operations that each vector level implements (AVX-512 with 16 `f32` lanes, AVX2 with 8,
//! NEON with 4).
//!
//! A level instantiates the kernels with [`vector_kernels!`]: safe entry points that check
//! the CPU and call `#[target_feature]` functions, which call the generic bodies here. Every
//! [`Simd`] method and every body is `#[inline(always)]`, so a whole kernel is compiled with
//! its level's features. A body runs its vector loop over what fits it and hands the rest
//! (heads and tails, the rare groups that need a slow path, formats without a vector path) to
//! the scalar reference or to scalar code written from it, so its results are the
//! reference's, bit for bit, for every input; `tests.rs` checks that for every level.
//!
//! The arithmetic is the reference's, one IEEE operation for one: divisions stay divisions,
//! no multiply-add is fused, rounding to integers is the instruction's round-to-nearest-even
//! (the reference's two-addition trick gives the same result), and the `f64` error sums keep
//! their eight lanes (element `i` in lane `i mod 8`, added in element order).

use super::common::vector_layout;
use super::{scalar, FloatSplit};
use crate::dtype::DType;
use crate::error::Result;
use crate::quant::block::{self, BlockFormat, ScaleFormat};
use crate::quant::minifloat::{pow2, Element};
use crate::quant::rounding::Rounding;
use crate::quant::uniform::{
    self, BitReader, BitWriter, ErrSum, Escaped, QuantArgs, Stats, Step, DIRECT, ERR_FLUSH,
    ERR_PARTS, ESC, Q_LIMIT,
};
use crate::quant::{bitpack, convert};
use crate::simd::{prefetch, prefetch_write, write_hints, PREFETCH_AHEAD};

/// The lane-parallel operations the generic kernels are written in. `F` holds `W` `f32`
/// lanes, `I` as many 32-bit integers, `M` a lane mask; `Acc` holds eight `f64` sums.
///
/// # Safety
///
/// Implementations wrap one instruction set's intrinsics. Every method may only be called
/// on a CPU that has the level's features, from code compiled with them (the methods are
/// `#[inline(always)]` for that); the memory methods also need the bytes they name to be
/// readable or writable. Integer lanes are two's complement; shifts take counts below 32
/// and `shr` is logical; comparisons on `F` are ordered (false when either side is NaN).
pub(crate) unsafe trait Simd: Copy {
    /// `f32` lanes per vector.
    const W: usize;
    type F: Copy;
    type I: Copy;
    type M: Copy;
    /// `W` `f64` values.
    type D: Copy;
    type Acc: Copy;
    /// The sixteen `f32` partial error sums of [`uniform::encode_symbols`].
    type P: Copy;

    unsafe fn splat(v: f32) -> Self::F;
    unsafe fn splat_i(v: i32) -> Self::I;

    /// Reads `4 W` bytes.
    unsafe fn load_f32(p: *const u8) -> Self::F;
    /// Reads `4 W` bytes.
    unsafe fn load_i32(p: *const u8) -> Self::I;
    /// Reads `2 W` bytes, zero-extended.
    unsafe fn load_u16(p: *const u8) -> Self::I;
    /// Reads `W` bytes, zero-extended.
    unsafe fn load_u8(p: *const u8) -> Self::I;
    /// Reads `W` bytes, sign-extended.
    unsafe fn load_i8(p: *const u8) -> Self::I;
    /// Writes `4 W` bytes.
    unsafe fn store_f32(p: *mut u8, v: Self::F);
    /// Writes `4 W` bytes.
    unsafe fn store_i32(p: *mut u8, v: Self::I);
    /// Writes the low 16 bits of each lane, `2 W` bytes.
    unsafe fn store_u16(p: *mut u8, v: Self::I);
    /// Writes the low 8 bits of each lane, `W` bytes.
    unsafe fn store_u8(p: *mut u8, v: Self::I);

    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn sub(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn div(a: Self::F, b: Self::F) -> Self::F;
    /// Minimum and maximum of values that are not NaN.
    unsafe fn min(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn max(a: Self::F, b: Self::F) -> Self::F;
    /// Rounds to an integer-valued float, ties to even (IEEE roundToIntegralTiesToEven).
    unsafe fn round_even(a: Self::F) -> Self::F;
    /// Converts integer-valued floats in the `i32` range.
    unsafe fn cvt_fi(a: Self::F) -> Self::I;
    /// Rounds to an integer, ties to even, and converts (values in the `i32` range): what
    /// `cvt_fi(round_even(a))` gives, in one instruction where the ISA has one that does not
    /// depend on the rounding mode register.
    #[inline(always)]
    unsafe fn cvt_round_fi(a: Self::F) -> Self::I {
        // SAFETY: plain lane arithmetic.
        unsafe { Self::cvt_fi(Self::round_even(a)) }
    }
    unsafe fn cvt_if(a: Self::I) -> Self::F;
    unsafe fn bits(a: Self::F) -> Self::I;
    unsafe fn from_bits(a: Self::I) -> Self::F;
    unsafe fn gt(a: Self::F, b: Self::F) -> Self::M;
    unsafe fn ge(a: Self::F, b: Self::F) -> Self::M;
    /// Either side NaN.
    unsafe fn unord(a: Self::F, b: Self::F) -> Self::M;
    /// `!(a <= b)`: `a > b`, or either side NaN.
    unsafe fn not_le(a: Self::F, b: Self::F) -> Self::M;

    unsafe fn iadd(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn isub(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn and(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn or(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn xor(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn shl(a: Self::I, n: u32) -> Self::I;
    unsafe fn shr(a: Self::I, n: u32) -> Self::I;
    unsafe fn sra(a: Self::I, n: u32) -> Self::I;
    unsafe fn ieq(a: Self::I, b: Self::I) -> Self::M;
    /// Signed `a > b`.
    unsafe fn igt(a: Self::I, b: Self::I) -> Self::M;
    /// Signed maximum.
    unsafe fn imax(a: Self::I, b: Self::I) -> Self::I;
    /// `m ? a : b`, lane by lane.
    unsafe fn sel_f(m: Self::M, a: Self::F, b: Self::F) -> Self::F;
    unsafe fn sel_i(m: Self::M, a: Self::I, b: Self::I) -> Self::I;

    unsafe fn m_and(a: Self::M, b: Self::M) -> Self::M;
    unsafe fn m_or(a: Self::M, b: Self::M) -> Self::M;
    unsafe fn m_not(a: Self::M) -> Self::M;
    /// Bit `k` set when lane `k` is.
    unsafe fn mask_bits(m: Self::M) -> u32;
    unsafe fn mask_from_bits(b: u32) -> Self::M;
    /// Signed maximum of the lanes.
    unsafe fn hmax_i(a: Self::I) -> i32;

    unsafe fn acc_load(s: &[f64; 8]) -> Self::Acc;
    unsafe fn acc_store(acc: Self::Acc, s: &mut [f64; 8]);
    /// `f64(y) - f64(x)` per lane.
    unsafe fn diff(y: Self::F, x: Self::F) -> Self::D;
    /// Adds `d * d` (rounded, then added) to sum `(lane + k) mod 8` for lane `k`, except
    /// where `d` is NaN or `|d| > max_abs`: those lanes are returned (as bits). `lane` is 0,
    /// or 4 when `W` is 4.
    unsafe fn err_add(acc: &mut Self::Acc, d: Self::D, max_abs: f64, lane: usize) -> u32;
    /// [`Simd::err_add`] without a bound: adds `d * d` of the lanes in `keep` (where `d` is
    /// never NaN).
    unsafe fn err_add_keep(acc: &mut Self::Acc, d: Self::D, keep: Self::M, lane: usize);
    unsafe fn part_load(p: &[f32; ERR_PARTS]) -> Self::P;
    unsafe fn part_store(p: Self::P, out: &mut [f32; ERR_PARTS]);
    /// Adds `s * s` (one fused multiply-add) to partial sum `part + k` for the lanes `k` in
    /// `keep` (`part` is a multiple of `W`; the others are left as they are).
    unsafe fn part_add(p: &mut Self::P, s: Self::F, keep: Self::M, part: usize);
    /// [`uniform::flush_partials`]: adds `f64(partial l) * unscale` to sum `l mod 8` of `acc`,
    /// for `l = 0..16` in turn, and clears the partials.
    unsafe fn part_flush(acc: &mut Self::Acc, p: &mut Self::P, unscale: f64);
    /// Adds `f64(v)^2` to sum `(lane + k) mod 8` for lane `k` (`lane` as for `err_add`).
    unsafe fn sq_add(acc: &mut Self::Acc, v: Self::F, lane: usize);

    /// The stochastic-rounding thresholds of elements `index..index + W`.
    unsafe fn thresholds(seed: u64, index: u64) -> Self::F;

    /// The 8-bit packed layout of 64 values: reads 64 codes at `src` and writes word `l` of
    /// `dst` as bytes `src[l], src[16 + l], src[32 + l], src[48 + l]`.
    unsafe fn transpose_4x16(src: *const u8, dst: *mut u8);
    /// The inverse of [`Simd::transpose_4x16`].
    unsafe fn untranspose_4x16(src: *const u8, dst: *mut u8);
}

/// The dtype codes used as const parameters (`DType as u8`).
pub(crate) const F32: u8 = DType::F32 as u8;
pub(crate) const F16: u8 = DType::F16 as u8;
pub(crate) const BF16: u8 = DType::BF16 as u8;

const fn itemsize(dt: u8) -> usize {
    if dt == F32 {
        4
    } else {
        2
    }
}

// ---------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------

/// Widens float16 bits (one per 32-bit lane) to `f32`, exactly as [`convert::f16_to_f32`].
#[inline(always)]
unsafe fn f16_to_f32<S: Simd>(h: S::I) -> S::F {
    let sign = S::shl(S::and(h, S::splat_i(0x8000)), 16);
    let mag = S::and(h, S::splat_i(0x7fff));
    let e = S::and(h, S::splat_i(0x7c00));
    let normal = S::iadd(S::shl(mag, 13), S::splat_i(112 << 23));
    let special = S::or(S::shl(mag, 13), S::splat_i(0x7f80_0000));
    let sub = S::bits(S::mul(
        S::cvt_if(S::and(h, S::splat_i(0x3ff))),
        S::splat(1.0 / 16_777_216.0),
    ));
    let mag = S::sel_i(
        S::ieq(e, S::splat_i(0)),
        sub,
        S::sel_i(S::ieq(e, S::splat_i(0x7c00)), special, normal),
    );
    S::from_bits(S::or(mag, sign))
}

/// Rounds to bfloat16 bits, nearest-even and saturating, as [`convert::f32_to_bf16_sat`].
#[inline(always)]
unsafe fn bf16_sat<S: Simd>(v: S::F) -> S::I {
    let b = S::bits(v);
    let lsb = S::and(S::shr(b, 16), S::splat_i(1));
    let r = S::shr(S::iadd(S::iadd(b, S::splat_i(0x7fff)), lsb), 16);
    let quiet = S::or(S::shr(b, 16), S::splat_i(0x40));
    let h = S::sel_i(S::unord(v, v), quiet, r);
    let a = S::and(b, S::splat_i(0x7fff_ffff));
    let finite = S::igt(S::splat_i(0x7f80_0000), a);
    let over = S::m_and(
        finite,
        S::ieq(S::and(h, S::splat_i(0x7fff)), S::splat_i(0x7f80)),
    );
    S::sel_i(
        over,
        S::or(S::and(h, S::splat_i(0x8000)), S::splat_i(0x7f7f)),
        h,
    )
}

/// Rounds to float16 bits, nearest-even and saturating, as [`convert::f32_to_f16_sat`].
#[inline(always)]
unsafe fn f16_sat<S: Simd>(v: S::F) -> S::I {
    let b = S::bits(v);
    let a = S::and(b, S::splat_i(0x7fff_ffff));
    let sign = S::and(S::shr(b, 16), S::splat_i(0x8000));
    // Normal results: rebias and round the mantissa to 10 bits.
    let m = S::isub(a, S::splat_i(112 << 23));
    let lsb = S::and(S::shr(m, 13), S::splat_i(1));
    let normal = S::shr(S::iadd(S::iadd(m, S::splat_i(0xfff)), lsb), 13);
    // Subnormal results: the value in units of 2^-24 rounded to an integer (exact scaling,
    // then nearest-even), which is the reference's shift-and-round.
    let sub = S::cvt_fi(S::round_even(S::mul(
        S::from_bits(a),
        S::splat(16_777_216.0),
    )));
    let nan = S::or(S::and(S::shr(a, 13), S::splat_i(0x3ff)), S::splat_i(0x7e00));
    let res = S::sel_i(
        S::igt(a, S::splat_i(0x7f80_0000)),
        nan,
        S::sel_i(
            S::igt(a, S::splat_i(0x477f_ffff)),
            S::splat_i(0x7c00),
            S::sel_i(S::igt(a, S::splat_i(0x387f_ffff)), normal, sub),
        ),
    );
    let finite = S::igt(S::splat_i(0x7f80_0000), a);
    let res = S::sel_i(
        S::m_and(finite, S::ieq(res, S::splat_i(0x7c00))),
        S::splat_i(0x7bff),
        res,
    );
    S::or(sign, res)
}

/// `f32` bits saturated: infinities become the largest finite value (keeping the sign).
#[inline(always)]
unsafe fn f32_sat<S: Simd>(v: S::F) -> S::I {
    let b = S::bits(v);
    let inf = S::ieq(S::and(b, S::splat_i(0x7fff_ffff)), S::splat_i(0x7f80_0000));
    S::sel_i(
        inf,
        S::or(S::and(b, S::splat_i(i32::MIN)), S::splat_i(0x7f7f_ffff)),
        b,
    )
}

/// Loads elements `i..i + W` of little-endian `DT` bytes as `f32`.
#[inline(always)]
unsafe fn load_x<S: Simd, const DT: u8>(input: *const u8, i: usize) -> S::F {
    match DT {
        F32 => S::load_f32(input.add(4 * i)),
        BF16 => S::from_bits(S::shl(S::load_u16(input.add(2 * i)), 16)),
        _ => f16_to_f32::<S>(S::load_u16(input.add(2 * i))),
    }
}

/// Bfloat16 rounding of values that are not NaN and do not round past the largest finite
/// bfloat16 (where [`bf16_sat`] gives the same): the rounded value's `f32` bits.
#[inline(always)]
unsafe fn bf16_plain<S: Simd>(v: S::F) -> S::I {
    let b = S::bits(v);
    let lsb = S::and(S::shr(b, 16), S::splat_i(1));
    S::and(
        S::iadd(S::iadd(b, S::splat_i(0x7fff)), lsb),
        S::splat_i(0xffff_0000u32 as i32),
    )
}

/// Stores `v` rounded to `DT` (saturating) as elements `i..i + W`. Without `SAT` the values
/// must be neither NaN nor infinite nor round past the dtype's largest finite value (then
/// the saturating conversion has nothing to do for bfloat16 and float32).
#[inline(always)]
unsafe fn store_x<S: Simd, const DT: u8, const SAT: bool>(out: *mut u8, i: usize, v: S::F) {
    match (DT, SAT) {
        (F32, true) => S::store_i32(out.add(4 * i), f32_sat::<S>(v)),
        (F32, false) => S::store_f32(out.add(4 * i), v),
        (BF16, true) => S::store_u16(out.add(2 * i), bf16_sat::<S>(v)),
        (BF16, false) => S::store_u16(out.add(2 * i), S::shr(bf16_plain::<S>(v), 16)),
        _ => S::store_u16(out.add(2 * i), f16_sat::<S>(v)),
    }
}

/// `v` rounded to `DT` (saturating) and back, as [`convert::round_sat`]; `SAT` as for
/// [`store_x`].
#[inline(always)]
unsafe fn round_dtype<S: Simd, const DT: u8, const SAT: bool>(v: S::F) -> S::F {
    match (DT, SAT) {
        (F32, true) => S::from_bits(f32_sat::<S>(v)),
        (F32, false) => v,
        (BF16, true) => S::from_bits(S::shl(bf16_sat::<S>(v), 16)),
        (BF16, false) => S::from_bits(bf16_plain::<S>(v)),
        _ => f16_to_f32::<S>(f16_sat::<S>(v)),
    }
}

/// Whether `|v| <= limit` can neither overflow `dtype`'s finite range nor round past it:
/// then [`store_x`] and [`round_dtype`] need no saturation (float16 always takes it).
fn fits_dtype(dt: u8, limit: f32) -> bool {
    // Below the smallest value that rounds to infinity in bfloat16 (3.39e38), and finite.
    dt != F16 && limit.is_finite() && limit < 3.0e38
}

/// The bits of `|v|` and whether `v` is finite.
#[inline(always)]
unsafe fn abs_finite<S: Simd>(v: S::F) -> (S::I, S::M) {
    let a = S::and(S::bits(v), S::splat_i(0x7fff_ffff));
    (a, S::igt(S::splat_i(0x7f80_0000), a))
}

#[inline(always)]
unsafe fn abs<S: Simd>(v: S::F) -> S::F {
    S::from_bits(S::and(S::bits(v), S::splat_i(0x7fff_ffff)))
}

/// Stochastic rounding of `t` with thresholds `u`, as [`crate::quant::rounding::round`]: the
/// magnitude rounds up when its fractional part exceeds `u`; the sign is kept.
#[inline(always)]
unsafe fn round_sr<S: Simd>(t: S::F, u: S::F) -> S::F {
    let a = abs::<S>(t);
    let r = S::round_even(a);
    let f = S::sel_f(S::gt(r, a), S::sub(r, S::splat(1.0)), r);
    let up = S::gt(S::sub(a, f), u);
    let m = S::sel_f(up, S::add(f, S::splat(1.0)), f);
    S::from_bits(S::or(S::bits(m), S::and(S::bits(t), S::splat_i(i32::MIN))))
}

#[inline(always)]
pub(crate) unsafe fn to_f32<S: Simd, const DT: u8>(input: &[u8], out: &mut [f32]) {
    let n = out.len();
    assert_eq!(input.len(), n * itemsize(DT));
    let done = n / S::W * S::W;
    let (src, dst) = (input.as_ptr(), out.as_mut_ptr().cast::<u8>());
    for i in (0..done).step_by(S::W) {
        prefetch(src.wrapping_add(i * itemsize(DT) + PREFETCH_AHEAD));
        // SAFETY: elements `i..i + W` are inside `input` and `out` (`i + W <= done <= n`).
        unsafe { S::store_f32(dst.add(4 * i), load_x::<S, DT>(src, i)) };
    }
    let dt = DType::from_code(DT).unwrap();
    convert::load_all(dt, &input[done * itemsize(DT)..], &mut out[done..]);
}

#[inline(always)]
pub(crate) unsafe fn from_f32<S: Simd, const DT: u8>(vals: &[f32], out: &mut [u8]) {
    let n = vals.len();
    assert_eq!(out.len(), n * itemsize(DT));
    let done = n / S::W * S::W;
    let (src, dst) = (vals.as_ptr().cast::<u8>(), out.as_mut_ptr());
    let hints = write_hints();
    for i in (0..done).step_by(S::W) {
        if hints {
            prefetch_write(dst.wrapping_add(i * itemsize(DT) + PREFETCH_AHEAD));
        }
        // SAFETY: elements `i..i + W` are inside `vals` and `out`.
        unsafe { store_x::<S, DT, true>(dst, i, S::load_f32(src.add(4 * i))) };
    }
    let dt = DType::from_code(DT).unwrap();
    convert::store_all_sat(dt, &vals[done..], &mut out[done * itemsize(DT)..]);
}

// ---------------------------------------------------------------------------------------
// Block quantization
// ---------------------------------------------------------------------------------------

/// What a block's elements turn into, as vector constants.
#[derive(Clone, Copy)]
enum ElemKind {
    Int {
        max: f32,
        mask: i32,
        bits: u32,
    },
    Mini {
        exp_bits: u32,
        man_bits: u32,
        bias: i32,
        max: f32,
        max_code: i32,
        nan_e4m3: bool,
        inf_e5m2: bool,
    },
}

fn elem_kind(el: Element) -> ElemKind {
    let mini = |exp_bits, man_bits, bias, max_code| ElemKind::Mini {
        exp_bits,
        man_bits,
        bias,
        max: el.max_value(),
        max_code,
        nan_e4m3: el == Element::E4M3,
        inf_e5m2: el == Element::E5M2,
    };
    match el {
        Element::E4M3 => mini(4, 3, 7, 0x7e),
        Element::E5M2 => mini(5, 2, 15, 0x7b),
        Element::E2M1 => mini(2, 1, 1, 0x7),
        _ => ElemKind::Int {
            max: el.max_value(),
            mask: (1 << el.bits()) - 1,
            bits: el.bits(),
        },
    }
}

/// The code of `t` (a finite or infinite value already divided by the scale, never NaN)
/// rounded by `round` (nearest-even or stochastic, on magnitudes for minifloats), as
/// [`Element::encode`].
#[inline(always)]
unsafe fn encode_elem<S: Simd>(kind: ElemKind, t: S::F, round: impl Fn(S::F) -> S::F) -> S::I {
    match kind {
        ElemKind::Int { max, mask, .. } => {
            let r = S::min(S::max(round(t), S::splat(-max)), S::splat(max));
            S::and(S::cvt_fi(r), S::splat_i(mask))
        }
        ElemKind::Mini {
            exp_bits,
            man_bits,
            bias,
            max,
            max_code,
            ..
        } => {
            let one = 1i32 << man_bits;
            let sign = S::shl(S::shr(S::bits(t), 31), exp_bits + man_bits);
            let a = abs::<S>(t);
            let sat = S::ge(a, S::splat(max));
            // e = max(floor(log2 a), 1 - bias): f32 subnormals and zero are below it.
            let e = S::imax(
                S::isub(S::shr(S::bits(a), 23), S::splat_i(127)),
                S::splat_i(1 - bias),
            );
            // a * 2^(man_bits - e), exact, rounded to an integer.
            let scale = S::from_bits(S::shl(S::isub(S::splat_i(man_bits as i32 + 127), e), 23));
            let r = S::cvt_fi(round(S::mul(a, scale)));
            let carry = S::ieq(r, S::splat_i(2 * one));
            let e = S::sel_i(carry, S::iadd(e, S::splat_i(1)), e);
            let r = S::sel_i(carry, S::splat_i(one), r);
            let normal = S::or(
                S::shl(S::iadd(e, S::splat_i(bias)), man_bits),
                S::isub(r, S::splat_i(one)),
            );
            let mag = S::sel_i(S::igt(S::splat_i(one), r), r, normal);
            S::or(sign, S::sel_i(sat, S::splat_i(max_code), mag))
        }
    }
}

/// The value of codes `c` (only their low `bits` bits set), as [`Element::value`] (NaN codes
/// give some NaN).
#[inline(always)]
unsafe fn elem_value<S: Simd>(kind: ElemKind, c: S::I) -> S::F {
    match kind {
        ElemKind::Int { bits, .. } => S::cvt_if(S::sra(S::shl(c, 32 - bits), 32 - bits)),
        ElemKind::Mini {
            exp_bits,
            man_bits,
            bias,
            nan_e4m3,
            inf_e5m2,
            ..
        } => {
            let emask = (1i32 << exp_bits) - 1;
            let mmask = (1i32 << man_bits) - 1;
            let sign = S::shl(S::shr(c, exp_bits + man_bits), 31);
            let e = S::and(S::shr(c, man_bits), S::splat_i(emask));
            let m = S::and(c, S::splat_i(mmask));
            let normal = S::or(
                S::shl(S::iadd(e, S::splat_i(127 - bias)), 23),
                S::shl(m, 23 - man_bits),
            );
            let sub = S::bits(S::mul(
                S::cvt_if(m),
                S::splat(pow2(1 - bias - man_bits as i32)),
            ));
            let mut v = S::sel_i(S::ieq(e, S::splat_i(0)), sub, normal);
            let top = S::ieq(e, S::splat_i(emask));
            if nan_e4m3 {
                let nan = S::m_and(top, S::ieq(m, S::splat_i(mmask)));
                v = S::sel_i(nan, S::splat_i(0x7fc0_0000), v);
            }
            if inf_e5m2 {
                let inf = S::sel_i(
                    S::ieq(m, S::splat_i(0)),
                    S::splat_i(0x7f80_0000),
                    S::splat_i(0x7fc0_0000),
                );
                v = S::sel_i(top, inf, v);
            }
            S::from_bits(S::or(v, sign))
        }
    }
}

/// Writes a block's stored scale.
#[inline(always)]
fn put_scale(fmt: &BlockFormat, scales: &mut [u8], g: usize, s: u16) {
    match fmt.scale {
        ScaleFormat::E8M0 => scales[g] = s as u8,
        _ => scales[2 * g..2 * g + 2].copy_from_slice(&s.to_le_bytes()),
    }
}

/// The stored scales and multipliers of blocks whose largest finite magnitudes have the bits
/// `amax`, as [`BlockFormat::scale_for`] and [`BlockFormat::multiplier`].
#[inline(always)]
unsafe fn block_scales<S: Simd>(fmt: &BlockFormat, amax: S::I) -> (S::I, S::F) {
    match fmt.scale {
        ScaleFormat::E8M0 => {
            // clamp(floor(log2 amax) - emax + 127, 0, 254): the exponent field minus emax
            // (zero and subnormals, whose floor(log2) is below -126, clamp to 0).
            let e = S::isub(S::shr(amax, 23), S::splat_i(fmt.element.emax()));
            let e = S::imax(e, S::splat_i(0));
            let e = S::sel_i(S::igt(e, S::splat_i(254)), S::splat_i(254), e);
            // 2^(e - 127 - f), exact (down to 2^-133): 2^(e - 127) * 2^-f, or for e = 0 the
            // constant.
            let f = fmt.element.int_fraction_bits();
            let m = S::sel_f(
                S::ieq(e, S::splat_i(0)),
                S::splat(pow2(-127 - f)),
                S::mul(S::from_bits(S::shl(e, 23)), S::splat(pow2(-f))),
            );
            (e, m)
        }
        ScaleFormat::F16 => {
            let h = f16_sat::<S>(S::div(
                S::from_bits(amax),
                S::splat(fmt.element.max_value()),
            ));
            (h, f16_to_f32::<S>(h))
        }
        ScaleFormat::BF16 => {
            let h = bf16_sat::<S>(S::div(
                S::from_bits(amax),
                S::splat(fmt.element.max_value()),
            ));
            (h, S::from_bits(S::shl(h, 16)))
        }
    }
}

/// The bits of a float's magnitude, and of infinity: a magnitude's bits are at or above
/// `INF_BITS` only for infinities and NaNs.
const ABS: i32 = 0x7fff_ffff;
const INF_BITS: i32 = 0x7f80_0000;

/// The quotients `x / mult` of elements `j..j + W` of `src` (`mv` holds `mult`), 0 for the
/// non-finite ones unless `FINITE` says that there are none.
///
/// Safety: the elements must be readable at `src`.
#[inline(always)]
unsafe fn quotients<S: Simd, const DT: u8, const FINITE: bool>(
    src: *const u8,
    j: usize,
    mv: S::F,
) -> S::F {
    // SAFETY: the caller's contract.
    let x = unsafe { load_x::<S, DT>(src, j) };
    if FINITE {
        S::div(x, mv)
    } else {
        let (_, fin) = abs_finite::<S>(x);
        S::sel_f(fin, S::div(x, mv), S::splat(0.0))
    }
}

/// The codes of a block's elements, `W` at a time, for [`emit`]: one implementation per
/// element kind and rounding, so that its loops decide nothing per vector. Methods rather
/// than closures: the generic kernels here have no target features of their own (they get
/// them by being inlined into functions that do), nor do closures written in them, and the
/// intrinsics in a closure that is not inlined then run as calls (as a decoder's did, at a
/// twentieth of its speed).
trait BlockCodes<S: Simd> {
    /// The codes of elements `j..j + W`, in the low 8 bits of each lane.
    ///
    /// Safety: the elements must be readable.
    unsafe fn code(&self, j: usize) -> S::I;
}

/// Integer codes rounded to nearest: clamping to the integer bounds before rounding gives
/// what rounding first does, in one conversion; the stores keep the low 8 bits, so int8
/// codes need no mask (`mask` is all ones for them).
struct IntNearest<S: Simd, const DT: u8, const FINITE: bool> {
    src: *const u8,
    mv: S::F,
    lo: S::F,
    hi: S::F,
    mask: S::I,
    int8: bool,
}

impl<S: Simd, const DT: u8, const FINITE: bool> BlockCodes<S> for IntNearest<S, DT, FINITE> {
    #[inline(always)]
    unsafe fn code(&self, j: usize) -> S::I {
        // SAFETY: the caller's contract.
        let t = unsafe { quotients::<S, DT, FINITE>(self.src, j, self.mv) };
        let c = S::cvt_round_fi(S::min(S::max(t, self.lo), self.hi));
        if self.int8 {
            c
        } else {
            S::and(c, self.mask)
        }
    }
}

/// Codes of any element kind by [`encode_elem`], rounded to nearest or stochastically (with
/// `seed`; minifloats round magnitudes, and the sign-keeping rounding is the same on them).
struct ElemCodes<S: Simd, const DT: u8, const FINITE: bool> {
    src: *const u8,
    mv: S::F,
    kind: ElemKind,
    seed: Option<u64>,
    base: u64,
}

impl<S: Simd, const DT: u8, const FINITE: bool> BlockCodes<S> for ElemCodes<S, DT, FINITE> {
    #[inline(always)]
    unsafe fn code(&self, j: usize) -> S::I {
        // SAFETY: the caller's contract.
        let t = unsafe { quotients::<S, DT, FINITE>(self.src, j, self.mv) };
        match self.seed {
            None => encode_elem::<S>(self.kind, t, |v| S::round_even(v)),
            Some(seed) => {
                let u = S::thresholds(seed, self.base + j as u64);
                encode_elem::<S>(self.kind, t, |v| round_sr::<S>(v, u))
            }
        }
    }
}

/// Writes the codes of elements `range` (whole vectors) of `src` to `dst`, with multiplier
/// `mult`: one byte per element, or with `PACKED` (8-bit codes, `range` whole groups of 64
/// elements inside whole bit-packing blocks) in the packed layout. `FINITE` says that every
/// element is finite; otherwise the non-finite ones get code 0.
///
/// Safety: the elements and their codes must lie inside the buffers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn quantize_block<S: Simd, const DT: u8, const FINITE: bool, const PACKED: bool>(
    kind: ElemKind,
    rounding: Rounding,
    base: u64,
    mult: f32,
    src: *const u8,
    dst: *mut u8,
    range: std::ops::Range<usize>,
) {
    let mv = S::splat(mult);
    // SAFETY (of the `emit`s): the caller's contract.
    match (kind, rounding) {
        (ElemKind::Int { max, mask, bits }, Rounding::Nearest) => {
            let codes = IntNearest::<S, DT, FINITE> {
                src,
                mv,
                lo: S::splat(-max),
                hi: S::splat(max),
                mask: S::splat_i(mask),
                int8: bits == 8,
            };
            unsafe { emit::<S, PACKED>(dst, range, &codes) }
        }
        (kind, rounding) => {
            let seed = match rounding {
                Rounding::Nearest => None,
                Rounding::Stochastic { seed } => Some(seed),
            };
            let codes = ElemCodes::<S, DT, FINITE> {
                src,
                mv,
                kind,
                seed,
                base,
            };
            unsafe { emit::<S, PACKED>(dst, range, &codes) }
        }
    }
}

/// Stores the codes of elements `range` (whole vectors) at `dst + j`, one byte each, or with
/// `PACKED` (`range` whole groups of 64 inside whole bit-packing blocks) in the packed layout
/// of 8-bit values: element `16 r + l` of a block of 512 is byte `r % 4` of the 32-bit word
/// `16 (r / 4) + l`, so the four rows of 16 codes of a group of 64 make one 64-byte row of
/// words (byte `j` of the packed chunk still starts group `j`).
///
/// Safety: the elements must be readable and the bytes must lie inside the buffer at `dst`.
#[inline(always)]
unsafe fn emit<S: Simd, const PACKED: bool>(
    dst: *mut u8,
    range: std::ops::Range<usize>,
    codes: &impl BlockCodes<S>,
) {
    if PACKED {
        let low = S::splat_i(0xff);
        for g in range.step_by(64) {
            for l in (0..16).step_by(S::W) {
                // SAFETY: the caller's contract.
                unsafe {
                    let c0 = S::and(codes.code(g + l), low);
                    let c1 = S::and(codes.code(g + 16 + l), low);
                    let c2 = S::and(codes.code(g + 32 + l), low);
                    let c3 = codes.code(g + 48 + l);
                    let w = S::or(
                        S::or(c0, S::shl(c1, 8)),
                        S::or(S::shl(c2, 16), S::shl(c3, 24)),
                    );
                    S::store_i32(dst.add(g + 4 * l), w);
                }
            }
        }
    } else {
        for j in range.step_by(S::W) {
            // SAFETY: the caller's contract.
            unsafe { S::store_u8(dst.add(j), codes.code(j)) };
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn block_encode<S: Simd, const DT: u8, const PACKED: bool>(
    fmt: &BlockFormat,
    rounding: Rounding,
    base: u64,
    input: &[u8],
    codes: &mut [u8],
    scales: &mut [u8],
) -> usize {
    let isz = itemsize(DT);
    let n = codes.len();
    let b = fmt.block;
    assert_eq!(input.len(), n * isz);
    assert_eq!(scales.len(), n.div_ceil(b) * fmt.scale.bytes());
    // Packed codes are written block by block where the blocks are whole groups of 64 that
    // tile the bit-packing blocks (`block::packs_as_coded` for 8-bit codes). Other block
    // sizes are coded one byte each and packed afterwards, by the scalar packer: the pipeline
    // codes and packs those in two vector passes instead. (A vector repacking loop here made
    // the packed encoder of the common case 0.20 -> 0.27 ns per element on Zen 4, an
    // assertion in place of this branch 0.22, and this test written as a call to
    // `packs_as_coded` 0.23: the hot loop's code is sensitive to what the function holds
    // beside it.)
    if PACKED && !(b.is_multiple_of(64) && bitpack::BLOCK.is_multiple_of(b)) {
        assert_eq!(fmt.element.bits(), 8, "packed block codes are 8-bit");
        // SAFETY: the caller's contract, passed on.
        let nonfinite =
            unsafe { block_encode::<S, DT, false>(fmt, rounding, base, input, codes, scales) };
        bitpack::pack_bytes8_in_place(codes);
        return nonfinite;
    }
    assert!(
        !PACKED || fmt.element.bits() == 8,
        "packed block codes are 8-bit"
    );
    // The elements before this are in whole bit-packing blocks (packed when `PACKED`), the
    // ones after it one byte each.
    let packed_end = if PACKED {
        n / bitpack::BLOCK * bitpack::BLOCK
    } else {
        0
    };
    // Whole blocks of whole vectors go through the vector loop.
    let full = if b.is_multiple_of(S::W) { n / b } else { 0 };
    let kind = elem_kind(fmt.element);
    let (src, dst) = (input.as_ptr(), codes.as_mut_ptr());
    let mut nonfinite = 0usize;
    // Blocks go in batches of 16: their scales are computed together, in vectors.
    let mut amaxes = [0i32; 16];
    let mut stored = [0i32; 16];
    let mut mults = [0f32; 16];
    for first in (0..full).step_by(16) {
        let nb = (full - first).min(16);
        // Bit `k`: block `first + k` holds a non-finite element.
        let mut special = 0u32;
        for (k, amax_k) in amaxes[..nb].iter_mut().enumerate() {
            let at = (first + k) * b;
            // The largest magnitude, as an integer maximum of the bits of non-negative
            // floats: at or above infinity's bits only if an element is not finite, and then
            // the block is read again for its largest finite magnitude and its count.
            let mut amax = S::splat_i(0);
            for j in (at..at + b).step_by(S::W) {
                prefetch(src.wrapping_add(j * isz + PREFETCH_AHEAD));
                // SAFETY: block `first + k < full` lies inside `input` (`(g + 1) b <= n`).
                let a = unsafe { S::and(S::bits(load_x::<S, DT>(src, j)), S::splat_i(ABS)) };
                amax = S::imax(amax, a);
            }
            *amax_k = S::hmax_i(amax);
            if *amax_k >= INF_BITS {
                special |= 1 << k;
                let mut amax = S::splat_i(0);
                for j in (at..at + b).step_by(S::W) {
                    // SAFETY: as above.
                    let (a, fin) = unsafe { abs_finite::<S>(load_x::<S, DT>(src, j)) };
                    amax = S::imax(amax, S::sel_i(fin, a, S::splat_i(0)));
                    nonfinite += S::W - S::mask_bits(fin).count_ones() as usize;
                }
                *amax_k = S::hmax_i(amax);
            }
        }
        for v in (0..16).step_by(S::W) {
            // SAFETY: lanes `v..v + W` of the 16 of each array.
            unsafe {
                let (sc, m) = block_scales::<S>(fmt, S::load_i32(amaxes.as_ptr().add(v).cast()));
                S::store_i32(stored.as_mut_ptr().add(v).cast(), sc);
                S::store_f32(mults.as_mut_ptr().add(v).cast(), m);
            }
        }
        for k in 0..nb {
            let g = first + k;
            let at = g * b;
            put_scale(fmt, scales, g, stored[k] as u16);
            let mult = mults[k];
            if mult == 0.0 {
                codes[at..at + b].fill(0);
                continue;
            }
            // SAFETY: as above; the codes of the block are inside `codes`, and a block below
            // `packed_end` is whole groups of 64 inside whole bit-packing blocks.
            unsafe {
                let range = at..at + b;
                match (special & 1 << k == 0, at + b <= packed_end) {
                    (true, true) => quantize_block::<S, DT, true, true>(
                        kind, rounding, base, mult, src, dst, range,
                    ),
                    (true, false) => quantize_block::<S, DT, true, false>(
                        kind, rounding, base, mult, src, dst, range,
                    ),
                    (false, true) => quantize_block::<S, DT, false, true>(
                        kind, rounding, base, mult, src, dst, range,
                    ),
                    (false, false) => quantize_block::<S, DT, false, false>(
                        kind, rounding, base, mult, src, dst, range,
                    ),
                }
            }
        }
    }
    let at = full * b;
    let dt = DType::from_code(DT).unwrap();
    nonfinite
        + block::encode_blocks(
            fmt,
            rounding,
            base + at as u64,
            dt,
            &input[at * isz..],
            &mut codes[at..],
            &mut scales[full * fmt.scale.bytes()..],
        )
}

/// The values of the `W` codes at `p`: int8 codes are sign-extended as they load, every
/// other element goes through [`elem_value`] (`INT8` must say which `kind` is).
///
/// Safety: `W` bytes must be readable at `p`.
#[inline(always)]
unsafe fn code_values<S: Simd, const INT8: bool>(kind: ElemKind, mask: S::I, p: *const u8) -> S::F {
    // SAFETY: the caller guarantees the bytes are readable.
    unsafe {
        if INT8 {
            S::cvt_if(S::load_i8(p))
        } else {
            elem_value::<S>(kind, S::and(S::load_u8(p), mask))
        }
    }
}

/// Decodes the codes of elements `range` (whole groups of 64 with `PACKED`, whole vectors
/// otherwise) with multiplier `mv` into `dst`: from one byte per code at `src` (see
/// [`code_values`]), or with `PACKED` from 8-bit codes in the packed layout (a 64-byte row of
/// 32-bit words holds the four rows of 16 codes of a group, row `q` in byte `q` of each word;
/// see [`emit`]). `CHECKED`: products may be NaN or leave the dtype's range (see
/// [`store_x`]). No closures here (see [`BlockCodes`]).
///
/// Safety: the codes must be readable at `src` and the elements writable at `dst`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn decode_range<
    S: Simd,
    const DT: u8,
    const INT8: bool,
    const PACKED: bool,
    const CHECKED: bool,
>(
    kind: ElemKind,
    mask: S::I,
    mv: S::F,
    hints: bool,
    src: *const u8,
    dst: *mut u8,
    range: std::ops::Range<usize>,
) {
    if PACKED {
        for g in range.step_by(64) {
            for l in (0..16).step_by(S::W) {
                // SAFETY: the caller's contract.
                let w = unsafe { S::load_i32(src.add(g + 4 * l)) };
                for q in 0..4 {
                    let v = if INT8 {
                        S::cvt_if(S::sra(S::shl(w, 24 - 8 * q as u32), 24))
                    } else {
                        elem_value::<S>(kind, S::and(S::shr(w, 8 * q as u32), mask))
                    };
                    // SAFETY: the caller's contract.
                    unsafe { put_values::<S, DT, CHECKED>(dst, g + 16 * q + l, v, mv, hints) };
                }
            }
        }
    } else {
        for j in range.step_by(S::W) {
            // SAFETY: the caller's contract.
            unsafe {
                let v = code_values::<S, INT8>(kind, mask, src.add(j));
                put_values::<S, DT, CHECKED>(dst, j, v, mv, hints);
            }
        }
    }
}

/// Stores `v * mv` as elements `j..j + W` at `dst` (`CHECKED`: NaN products as the canonical
/// NaN, saturating), hinting the write ahead when `hints`.
///
/// Safety: the elements must be writable at `dst`.
#[inline(always)]
unsafe fn put_values<S: Simd, const DT: u8, const CHECKED: bool>(
    dst: *mut u8,
    j: usize,
    v: S::F,
    mv: S::F,
    hints: bool,
) {
    if hints {
        prefetch_write(dst.wrapping_add(j * itemsize(DT) + PREFETCH_AHEAD));
    }
    let y = S::mul(v, mv);
    // SAFETY: the caller's contract.
    unsafe {
        if CHECKED {
            let y = S::sel_f(S::unord(y, y), S::splat(f32::NAN), y);
            store_x::<S, DT, true>(dst, j, y)
        } else {
            store_x::<S, DT, false>(dst, j, y)
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn block_decode<S: Simd, const DT: u8, const PACKED: bool>(
    fmt: &BlockFormat,
    scales: &[u8],
    codes: &[u8],
    out: &mut [u8],
) {
    // Int8 codes sign-extend as they load, with no mask and no shifts, so they get loops of
    // their own: the `fast` profile's kernel (int8 blocks of 64, bfloat16 scales) on bfloat16
    // went from 0.60 to 0.43 ns per element on a 2-core AMD EPYC (Zen 1), AVX2 (`cargo run
    // --release --example kernels`, five runs each way alternating, three best of each).
    // SAFETY: the caller's contract, passed on.
    unsafe {
        if fmt.element == Element::Int8 {
            block_decode_with::<S, DT, true, PACKED>(fmt, scales, codes, out)
        } else {
            block_decode_with::<S, DT, false, PACKED>(fmt, scales, codes, out)
        }
    }
}

#[inline(always)]
unsafe fn block_decode_with<S: Simd, const DT: u8, const INT8: bool, const PACKED: bool>(
    fmt: &BlockFormat,
    scales: &[u8],
    codes: &[u8],
    out: &mut [u8],
) {
    let isz = itemsize(DT);
    let n = codes.len();
    let b = fmt.block;
    assert_eq!(out.len(), n * isz);
    assert!(scales.len() >= n.div_ceil(b) * fmt.scale.bytes());
    assert!(
        !PACKED || (fmt.element.bits() == 8 && bitpack::BLOCK.is_multiple_of(b)),
        "packed block codes are 8-bit, in blocks that tile 512"
    );
    if PACKED && !b.is_multiple_of(64) {
        // Blocks smaller than a group of 64: each bit-packing block's codes are unpacked
        // into a buffer in L1 and decoded from there.
        let per = bitpack::BLOCK / b * fmt.scale.bytes();
        let mut tmp = [0u8; bitpack::BLOCK];
        let whole = n / bitpack::BLOCK;
        for (k, c) in codes.chunks_exact(bitpack::BLOCK).enumerate() {
            // SAFETY: 512 codes and as many bytes; the caller's contract, passed on.
            unsafe {
                unpack_codes::<S>(8, c, &mut tmp);
                block_decode_with::<S, DT, INT8, false>(
                    fmt,
                    &scales[k * per..],
                    &tmp,
                    &mut out[k * bitpack::BLOCK * isz..(k + 1) * bitpack::BLOCK * isz],
                );
            }
        }
        let done = whole * bitpack::BLOCK;
        // SAFETY: as above.
        unsafe {
            block_decode_with::<S, DT, INT8, false>(
                fmt,
                &scales[whole * per..],
                &codes[done..],
                &mut out[done * isz..],
            )
        };
        return;
    }
    // Blocks below this are whole groups of 64 inside whole bit-packing blocks (packed when
    // `PACKED`); the codes after it are one byte each.
    let packed_end = if PACKED {
        n / bitpack::BLOCK * bitpack::BLOCK
    } else {
        0
    };
    let full = if b.is_multiple_of(S::W) { n / b } else { 0 };
    let kind = elem_kind(fmt.element);
    let mask = S::splat_i((1 << fmt.element.bits()) - 1);
    let (src, dst) = (codes.as_ptr(), out.as_mut_ptr());
    // Integer codes (down to -2^(bits-1), which encoders never write) times a finite
    // multiplier below this never leave the dtype's range (nor are NaN): the plain
    // conversion does.
    let plain_limit = match kind {
        ElemKind::Int { bits, .. } => 3.0e38 / (1u32 << (bits - 1)) as f32,
        ElemKind::Mini { .. } => 0.0,
    };
    let hints = write_hints();
    for g in 0..full {
        let mult = fmt.multiplier(block::stored_scale(fmt, scales, g));
        let mv = S::splat(mult);
        let range = g * b..(g + 1) * b;
        let plain = mult.abs() < plain_limit && DT != F16;
        // SAFETY: block `g < full` lies inside `codes` and `out` (and below `packed_end`
        // where it is read packed).
        unsafe {
            match (PACKED && range.end <= packed_end, plain) {
                (true, true) => {
                    decode_range::<S, DT, INT8, true, false>(kind, mask, mv, hints, src, dst, range)
                }
                (true, false) => {
                    decode_range::<S, DT, INT8, true, true>(kind, mask, mv, hints, src, dst, range)
                }
                (false, true) => decode_range::<S, DT, INT8, false, false>(
                    kind, mask, mv, hints, src, dst, range,
                ),
                (false, false) => {
                    decode_range::<S, DT, INT8, false, true>(kind, mask, mv, hints, src, dst, range)
                }
            }
        }
    }
    let at = full * b;
    // The scalar decoder builds a table of the 256 code values first: not for nothing (the
    // packed decoder of small blocks comes here once per 512 elements).
    if at < n {
        let dt = DType::from_code(DT).unwrap();
        block::decode_blocks(
            fmt,
            dt,
            &scales[full * fmt.scale.bytes()..],
            &codes[at..],
            &mut out[at * isz..],
        );
    }
}

// ---------------------------------------------------------------------------------------
// Packed codes
// ---------------------------------------------------------------------------------------

/// Packs lanes `W s .. W s + W` (of the 16) of a 512-element block into the vertical layout
/// of `width`-bit values at `dst` (the block's `64 width` bytes): `row(r)` gives the values
/// of row `r < 32`, below `2^width`. One loop for codes and mantissas alike.
///
/// Safety: `dst` has the block's `64 width` writable bytes, and `row` is safe to call for
/// every row.
#[inline(always)]
unsafe fn pack_lanes<S: Simd>(
    width: u32,
    s: usize,
    dst: *mut u8,
    mut row: impl FnMut(usize) -> S::I,
) {
    let mut acc = S::splat_i(0);
    let mut bits = 0u32;
    let mut k = 0usize;
    for r in 0..32 {
        let v = row(r);
        acc = S::or(acc, S::shl(v, bits));
        bits += width;
        if bits >= 32 {
            // SAFETY: word `k < width` of the block's lanes (the caller's `dst`).
            unsafe { S::store_i32(dst.add(64 * k + 4 * S::W * s), acc) };
            k += 1;
            bits -= 32;
            acc = S::shr(v, width - bits);
        }
    }
}

/// The inverse of [`pack_lanes`]: hands `row(r, m)` each row's values from the vertical
/// layout at `src`, in their low `width` bits (the bits above are not cleared).
///
/// Safety: `src` has the block's `64 width` readable bytes, and `row` is safe to call for
/// every row.
#[inline(always)]
unsafe fn unpack_lanes<S: Simd>(
    width: u32,
    s: usize,
    src: *const u8,
    mut row: impl FnMut(usize, S::I),
) {
    let mut acc = S::splat_i(0);
    let mut bits = 0u32;
    let mut k = 0usize;
    for r in 0..32 {
        let m = if bits < width {
            // SAFETY: word `k < width` of the block's lanes (the caller's `src`).
            let nw = unsafe { S::load_i32(src.add(64 * k + 4 * S::W * s)) };
            k += 1;
            let m = S::or(acc, S::shl(nw, bits));
            acc = S::shr(nw, width - bits);
            bits += 32 - width;
            m
        } else {
            let m = acc;
            acc = S::shr(acc, width);
            bits -= width;
            m
        };
        row(r, m);
    }
}

#[inline(always)]
pub(crate) unsafe fn pack_codes<S: Simd>(width: u32, codes: &[u8], out: &mut [u8]) {
    let n = codes.len();
    assert!(width <= 8 && out.len() >= bitpack::packed_len(n, width));
    if width == 0 {
        return;
    }
    let blocks = n / bitpack::BLOCK;
    let w = width as usize;
    let mask = S::splat_i((1 << width) - 1);
    for blk in 0..blocks {
        // SAFETY: block `blk` has 512 codes in `codes` and `64 w` bytes in `out`.
        let (src, dst) = unsafe {
            (
                codes.as_ptr().add(blk * bitpack::BLOCK),
                out.as_mut_ptr().add(blk * 64 * w),
            )
        };
        if width == 8 {
            for q in 0..8 {
                // SAFETY: 64 codes and 64 bytes at `64 q < 512`.
                unsafe { S::transpose_4x16(src.add(64 * q), dst.add(64 * q)) };
            }
            continue;
        }
        for s in 0..16 / S::W {
            // SAFETY: the block's `64 w` bytes at `dst`; row `row < 32` of the block's codes.
            unsafe {
                pack_lanes::<S>(width, s, dst, |row| {
                    S::and(S::load_u8(src.add(16 * row + S::W * s)), mask)
                })
            };
        }
    }
    let done = blocks * bitpack::BLOCK;
    bitpack::pack_bytes(width, &codes[done..], &mut out[blocks * 64 * w..]);
}

#[inline(always)]
pub(crate) unsafe fn unpack_codes<S: Simd>(width: u32, packed: &[u8], codes: &mut [u8]) {
    let n = codes.len();
    assert!(width <= 8 && packed.len() >= bitpack::packed_len(n, width));
    if width == 0 {
        codes.fill(0);
        return;
    }
    let blocks = n / bitpack::BLOCK;
    let w = width as usize;
    let mask = S::splat_i((1 << width) - 1);
    for blk in 0..blocks {
        // SAFETY: block `blk` has `64 w` bytes in `packed` and 512 codes in `codes`.
        let (src, dst) = unsafe {
            (
                packed.as_ptr().add(blk * 64 * w),
                codes.as_mut_ptr().add(blk * bitpack::BLOCK),
            )
        };
        if width == 8 {
            for q in 0..8 {
                // SAFETY: 64 bytes and 64 codes at `64 q < 512`.
                unsafe { S::untranspose_4x16(src.add(64 * q), dst.add(64 * q)) };
            }
            continue;
        }
        for s in 0..16 / S::W {
            // SAFETY: the block's `64 w` bytes at `src`; row `row < 32` of the block's codes.
            unsafe {
                unpack_lanes::<S>(width, s, src, |row, m| {
                    S::store_u8(dst.add(16 * row + S::W * s), S::and(m, mask))
                })
            };
        }
    }
    let done = blocks * bitpack::BLOCK;
    bitpack::unpack_bytes(width, &packed[blocks * 64 * w..], &mut codes[done..]);
}

// ---------------------------------------------------------------------------------------
// Error-bounded uniform quantization
// ---------------------------------------------------------------------------------------

/// Vectors start at a multiple of 16 error lanes (then each vector's lanes are partial sums
/// `part..part + W` of [`uniform::encode_symbols`], and `f64` sums `lane..lane + W` mod 8,
/// `lane` 0 or, with 4 lanes, 4), so that no vector straddles a flush of the partial sums.
const ALIGN: usize = ERR_PARTS;

/// [`Stats`] of a run: first a pass with no masks, which only adds up squares and takes the
/// largest magnitude (a NaN or infinity shows there as a magnitude of at least infinity's),
/// and only if it met one the checked pass, which skips them and finds the first. (With the
/// checks on every element, the error-bounded encoder's pass over the tensor took 0.183 ns
/// per element against 0.145: AVX-512 on a Zen 4 core.)
#[inline(always)]
pub(crate) unsafe fn stats<S: Simd, const DT: u8>(input: &[u8]) -> Stats {
    // SAFETY: the caller's features.
    match unsafe { stats_pass::<S, DT, false>(input) } {
        Some(st) => st,
        // SAFETY: as above.
        None => unsafe { stats_pass::<S, DT, true>(input) }.expect("a checked pass ends"),
    }
}

/// One pass of [`stats`]: with `CHECK`, every element checked; without, `None` as soon as
/// the run turns out to hold a NaN or infinity.
#[inline(always)]
unsafe fn stats_pass<S: Simd, const DT: u8, const CHECK: bool>(input: &[u8]) -> Option<Stats> {
    let n = input.len() / itemsize(DT);
    let done = n / S::W * S::W;
    let src = input.as_ptr();
    let mut st = Stats::default();
    let mut acc = S::acc_load(&st.sumsq.0);
    let mut amax = S::splat_i(0);
    let mut finite = 0u64;
    for i in (0..done).step_by(S::W) {
        prefetch(src.wrapping_add(i * itemsize(DT) + PREFETCH_AHEAD));
        // SAFETY: elements `i..i + W` are inside `input`.
        let x = unsafe { load_x::<S, DT>(src, i) };
        if !CHECK {
            amax = S::imax(amax, S::and(S::bits(x), S::splat_i(0x7fff_ffff)));
            S::sq_add(&mut acc, x, i & 7);
            continue;
        }
        let (a, fin) = abs_finite::<S>(x);
        S::sq_add(&mut acc, S::sel_f(fin, x, S::splat(0.0)), i & 7);
        amax = S::imax(amax, S::sel_i(fin, a, S::splat_i(0)));
        let bits = S::mask_bits(fin);
        finite += u64::from(bits.count_ones());
        if bits.count_ones() as usize != S::W && st.first_nonfinite.is_none() {
            let j = i + bits.trailing_ones() as usize;
            let dt = DType::from_code(DT).unwrap();
            st.first_nonfinite = Some((j, convert::load(dt, input, j)));
        }
    }
    let amax = S::hmax_i(amax);
    if !CHECK && amax >= 0x7f80_0000 {
        return None;
    }
    S::acc_store(acc, &mut st.sumsq.0);
    st.finite = if CHECK { finite } else { done as u64 };
    st.amax = f32::from_bits(amax as u32);
    // The tail, as the reference.
    let dt = DType::from_code(DT).unwrap();
    for i in done..n {
        let x = convert::load(dt, input, i);
        if x.is_finite() {
            let v = f64::from(x);
            st.sumsq.0[i & 7] += v * v;
            st.finite += 1;
            st.amax = st.amax.max(x.abs());
        } else if st.first_nonfinite.is_none() {
            st.first_nonfinite = Some((i, x));
        }
    }
    Some(st)
}

/// The largest `f32` not above `x` (a magnitude bound: NaN or negative is not expected).
fn f32_not_above(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) > x {
        f.next_down()
    } else {
        f
    }
}

/// The scalar reference of `uniform_encode` on elements `lo..hi` of a run.
#[allow(clippy::too_many_arguments)]
fn encode_scalar(
    a: &QuantArgs,
    input: &[u8],
    step: Step,
    lo: usize,
    hi: usize,
    symbols: &mut [u16],
    extra: &mut BitWriter,
    err: &mut ErrSum,
    parts: &mut [f32; ERR_PARTS],
) -> usize {
    let isz = a.dtype.itemsize();
    let args = QuantArgs {
        base: a.base + lo as u64,
        lane0: a.lane0 + lo,
        ..*a
    };
    let step = match step {
        Step::One(s) => Step::One(s),
        Step::Each(s) => Step::Each(&s[lo..]),
    };
    uniform::encode_symbols_partial(
        &args,
        &input[lo * isz..hi * isz],
        step,
        &mut symbols[lo..hi],
        extra,
        err,
        parts,
    )
}

#[inline(always)]
pub(crate) unsafe fn uniform_encode<S: Simd, const DT: u8>(
    a: &QuantArgs,
    input: &[u8],
    step: Step,
    symbols: &mut [u16],
    extra: &mut BitWriter,
    err: &mut ErrSum,
) -> usize {
    let n = symbols.len();
    assert_eq!(input.len(), n * itemsize(DT));
    assert_eq!(a.dtype as u8, DT);
    if let Step::Each(s) = step {
        assert!(s.len() >= n);
    }
    let head = ((ALIGN - a.lane0 % ALIGN) % ALIGN).min(n);
    let mut parts = [0.0f32; ERR_PARTS];
    let mut escapes = encode_scalar(a, input, step, 0, head, symbols, extra, err, &mut parts);
    // |q| <= 2^24 + 1, so with one step below 2e31 no reconstruction leaves bfloat16's range.
    let sat = match step {
        Step::One(s) => !fits_dtype(DT, s * 16_777_218.0),
        Step::Each(_) => true,
    };
    let bounded = a.max_abs != f64::INFINITY;
    // SAFETY: the caller's features; `encode_vec` reads and writes inside the slices.
    let (i, e) = unsafe {
        match (sat, bounded) {
            (false, false) => encode_vec::<S, DT, false, false>(
                a, input, step, head, symbols, extra, err, &mut parts,
            ),
            (false, true) => encode_vec::<S, DT, false, true>(
                a, input, step, head, symbols, extra, err, &mut parts,
            ),
            (true, false) => encode_vec::<S, DT, true, false>(
                a, input, step, head, symbols, extra, err, &mut parts,
            ),
            (true, true) => encode_vec::<S, DT, true, true>(
                a, input, step, head, symbols, extra, err, &mut parts,
            ),
        }
    };
    escapes += e;
    escapes += encode_scalar(a, input, step, i, n, symbols, extra, err, &mut parts);
    uniform::flush_partials(err, &mut parts, a.err_exp);
    escapes
}

/// Replaces the zigzagged values of lanes `big` (all at least `DIRECT`) with their bucket
/// symbols, and writes the extra bits of lanes `put` in lane order (out of the vector loop:
/// a few percent of vectors have a bucket symbol even with outlier channels).
#[cold]
#[inline(never)]
fn buckets(zs: &mut [i32; 16], big: u32, put: u32, extra: &mut BitWriter) {
    let mut m = big;
    while m != 0 {
        let l = m.trailing_zeros() as usize;
        let (sym, bits, k) = uniform::symbol_of(uniform::unzigzag(zs[l] as u32));
        if put >> l & 1 == 1 {
            extra.put(bits, k);
        }
        zs[l] = i32::from(sym);
        m &= m - 1;
    }
}

/// The vector loop of [`uniform_encode`] from element `i` (whose error lane is a multiple of
/// [`ALIGN`]), with the partial error sums `parts` (left in them): returns where it stopped
/// and the escapes. `SAT`: reconstructions may need saturation (see [`store_x`]);
/// `BOUNDED`: a finite maximum error.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn encode_vec<S: Simd, const DT: u8, const SAT: bool, const BOUNDED: bool>(
    a: &QuantArgs,
    input: &[u8],
    step: Step,
    mut i: usize,
    symbols: &mut [u16],
    extra: &mut BitWriter,
    err: &mut ErrSum,
    parts: &mut [f32; ERR_PARTS],
) -> (usize, usize) {
    let n = symbols.len();
    let seed = match a.rounding {
        Rounding::Nearest => None,
        Rounding::Stochastic { seed } => Some(seed),
    };
    let (one_step, steps_ptr) = match step {
        Step::One(s) => (Some(s), std::ptr::null()),
        Step::Each(s) => (None, s.as_ptr().cast::<u8>()),
    };
    let one_inv = S::splat(one_step.map_or(0.0, uniform::inverse));
    let one_st = S::splat(one_step.unwrap_or(0.0));
    let src = input.as_ptr();
    let bound32 = S::splat(f32_not_above(a.max_abs));
    // The error `f64(y) - f64(x)`. Rounded to nearest, a float16 or bfloat16 `y` is 0 or
    // within a factor of about 2 of `x` (also of its dtype), so `y - x` is exact in `f32`,
    // one subtraction does, and its squares go to the `f32` partial sums.
    let partial = DT != F32 && uniform::partial_sums(a.dtype, a.rounding);
    let scale = S::splat(uniform::partial_scale(a.err_exp));
    let unscale = uniform::partial_unscale(a.err_exp);
    let mut acc = S::acc_load(&err.0);
    let mut part = S::part_load(parts);
    let mut escapes = 0;
    while i + S::W <= n {
        if partial && (a.lane0 + i).is_multiple_of(ERR_FLUSH) {
            // SAFETY: plain lane arithmetic.
            unsafe { S::part_flush(&mut acc, &mut part, unscale) };
        }
        prefetch(src.wrapping_add(i * itemsize(DT) + PREFETCH_AHEAD));
        // SAFETY: elements `i..i + W` are inside `input`, `symbols` and (per-element steps)
        // the steps, which are at least `n` long (the caller checked).
        unsafe {
            let x = load_x::<S, DT>(src, i);
            let (st, inv) = if one_step.is_some() {
                (one_st, one_inv)
            } else {
                let st = S::load_f32(steps_ptr.add(4 * i));
                let inv = S::sel_f(
                    S::gt(st, S::splat(0.0)),
                    S::div(S::splat(1.0), st),
                    S::splat(0.0),
                );
                (st, inv)
            };
            let t = S::mul(x, inv);
            // NaN, or beyond the symbol range: an escape.
            let bad = S::not_le(abs::<S>(t), S::splat(Q_LIMIT));
            let t = S::sel_f(bad, S::splat(0.0), t);
            let r = match seed {
                None => S::round_even(t),
                Some(seed) => round_sr::<S>(t, S::thresholds(seed, a.base + i as u64)),
            };
            let q = S::cvt_fi(r);
            let z = S::xor(S::shl(q, 1), S::sra(q, 31));
            // Beyond the direct symbols (escapes have z = 0).
            let big = S::igt(z, S::splat_i(DIRECT as i32 - 1));
            let y = round_dtype::<S, DT, SAT>(S::mul(r, st));
            let lane = (a.lane0 + i) & 7;
            let esc = if partial {
                let d = S::sub(y, x);
                // For such `d`, `|d| > bound32` exactly when `|d| > max_abs`.
                let out = if BOUNDED {
                    S::m_or(bad, S::not_le(abs::<S>(d), bound32))
                } else {
                    bad
                };
                S::part_add(
                    &mut part,
                    S::mul(d, scale),
                    S::m_not(out),
                    (a.lane0 + i) % ERR_PARTS,
                );
                out
            } else if BOUNDED {
                let y = S::sel_f(bad, S::splat(f32::NAN), y);
                S::m_or(
                    bad,
                    S::mask_from_bits(S::err_add(&mut acc, S::diff(y, x), a.max_abs, lane)),
                )
            } else {
                // Finite x and a finite or infinite y: d is never NaN.
                S::err_add_keep(&mut acc, S::diff(y, x), S::m_not(bad), lane);
                bad
            };
            let big_bits = S::mask_bits(big);
            let z = if big_bits != 0 {
                let mut zs = [0i32; 16];
                S::store_i32(zs.as_mut_ptr().cast(), z);
                buckets(&mut zs, big_bits, big_bits & !S::mask_bits(esc), extra);
                S::load_i32(zs.as_ptr().cast())
            } else {
                z
            };
            let sym = S::sel_i(esc, S::splat_i(i32::from(ESC)), z);
            S::store_u16(symbols.as_mut_ptr().add(i).cast(), sym);
            escapes += S::mask_bits(esc).count_ones() as usize;
        }
        i += S::W;
    }
    S::acc_store(acc, &mut err.0);
    S::part_store(part, parts);
    (i, escapes)
}

/// `q` of zigzag codes `z` (`(z >> 1) ^ -(z & 1)`).
#[inline(always)]
unsafe fn unzigzag<S: Simd>(z: S::I) -> S::I {
    // SAFETY: the caller's features.
    unsafe {
        S::xor(
            S::shr(z, 1),
            S::isub(S::splat_i(0), S::and(z, S::splat_i(1))),
        )
    }
}

#[inline(always)]
pub(crate) unsafe fn uniform_decode<S: Simd, const DT: u8>(
    symbols: &[u16],
    step: Step,
    extra: &mut BitReader,
    esc: &mut Escaped,
    out: &mut [u8],
) -> Result<()> {
    // |q| < 240 in the vector loop, so with one step below 1e36 no value leaves bfloat16's
    // range.
    let sat = match step {
        Step::One(s) => !fits_dtype(DT, s * 240.0),
        Step::Each(_) => true,
    };
    // SAFETY: the caller's features.
    unsafe {
        if sat {
            decode_vec::<S, DT, true>(symbols, step, extra, esc, out)
        } else {
            decode_vec::<S, DT, false>(symbols, step, extra, esc, out)
        }
    }
}

#[inline(always)]
unsafe fn decode_vec<S: Simd, const DT: u8, const SAT: bool>(
    symbols: &[u16],
    step: Step,
    extra: &mut BitReader,
    esc: &mut Escaped,
    out: &mut [u8],
) -> Result<()> {
    let n = symbols.len();
    let isz = itemsize(DT);
    assert_eq!(out.len(), n * isz);
    if let Step::Each(s) = step {
        assert!(s.len() >= n);
    }
    let dt = DType::from_code(DT).unwrap();
    let scalar =
        |lo: usize, hi: usize, extra: &mut BitReader, esc: &mut Escaped, out: &mut [u8]| {
            let step = match step {
                Step::One(s) => Step::One(s),
                Step::Each(s) => Step::Each(&s[lo..]),
            };
            uniform::decode_symbols(
                dt,
                &symbols[lo..hi],
                step,
                extra,
                esc,
                &mut out[lo * isz..hi * isz],
            )
        };
    let (one_step, steps_ptr) = match step {
        Step::One(s) => (Some(s), std::ptr::null()),
        Step::Each(s) => (None, s.as_ptr().cast::<u8>()),
    };
    let one_st = S::splat(one_step.unwrap_or(0.0));
    let src = symbols.as_ptr().cast::<u8>();
    let hints = write_hints();
    let mut i = 0;
    while i + S::W <= n {
        if hints {
            prefetch_write(out.as_ptr().wrapping_add(i * isz + PREFETCH_AHEAD));
        }
        // SAFETY: elements `i..i + W` are inside `symbols`, `out` and the steps.
        unsafe {
            let s = S::load_u16(src.add(2 * i));
            let st = if one_step.is_some() {
                one_st
            } else {
                S::load_f32(steps_ptr.add(4 * i))
            };
            let big = S::mask_bits(S::igt(s, S::splat_i(DIRECT as i32 - 1)));
            if big == 0 {
                let q = unzigzag::<S>(s);
                store_x::<S, DT, SAT>(out.as_mut_ptr(), i, S::mul(S::cvt_if(q), st));
            } else if S::mask_bits(S::igt(s, S::splat_i(i32::from(ESC)))) != 0 {
                // A symbol outside the alphabet: the reference reports it.
                scalar(i, i + S::W, extra, esc, out)?;
            } else {
                // Buckets read their extra bits in order (off the vector: store, visit their
                // lanes, load); escapes decode as 0 and the escaped elements go over them
                // after the store. A vector without buckets (most that have escapes: a
                // chunk's rare codes) stays in registers and keeps the non-saturating store
                // (a product past the dtype's range is only ever an escape's).
                let escm = S::ieq(s, S::splat_i(i32::from(ESC)));
                let escapes = S::mask_bits(escm);
                let buckets = big & !escapes;
                let z = if buckets == 0 {
                    s
                } else {
                    let mut zs = [0i32; 16];
                    S::store_i32(zs.as_mut_ptr().cast(), s);
                    let mut m = buckets;
                    while m != 0 {
                        let l = m.trailing_zeros() as usize;
                        zs[l] = uniform::zigzag(uniform::bucket_q(zs[l] as u32, extra)?) as i32;
                        m &= m - 1;
                    }
                    S::load_i32(zs.as_ptr().cast())
                };
                let v = S::mul(S::cvt_if(unzigzag::<S>(z)), st);
                let v = S::sel_f(escm, S::splat(0.0), v);
                if buckets == 0 {
                    store_x::<S, DT, SAT>(out.as_mut_ptr(), i, v);
                } else {
                    // |q| may reach 2^24 here: the saturating store.
                    store_x::<S, DT, true>(out.as_mut_ptr(), i, v);
                }
                put_escaped(esc, escapes, i, out)?;
            }
        }
        i += S::W;
    }
    scalar(i, n, extra, esc, out)
}

/// Writes the next escaped elements over the lanes of `mask` of the vector at element `i`,
/// in lane order.
#[inline(always)]
fn put_escaped(esc: &mut Escaped, mut mask: u32, i: usize, out: &mut [u8]) -> Result<()> {
    while mask != 0 {
        esc.put(out, i + mask.trailing_zeros() as usize)?;
        mask &= mask - 1;
    }
    Ok(())
}

#[inline(always)]
pub(crate) unsafe fn extra_count<S: Simd>(symbols: &[u16]) -> (usize, usize) {
    let n = symbols.len();
    let done = n / S::W * S::W;
    let src = symbols.as_ptr().cast::<u8>();
    let (mut bits, mut escapes) = (0, 0);
    for i in (0..done).step_by(S::W) {
        // SAFETY: elements `i..i + W` are inside `symbols`.
        let s = unsafe { S::load_u16(src.add(2 * i)) };
        let big = S::mask_bits(S::igt(s, S::splat_i(DIRECT as i32 - 1)));
        if big != 0 {
            let esc = S::mask_bits(S::ieq(s, S::splat_i(i32::from(ESC))));
            if esc == big {
                // Escapes only (most vectors with any: a chunk's rare codes): no extra bits.
                escapes += esc.count_ones() as usize;
            } else {
                let (b, e) = uniform::extra_and_escapes(&symbols[i..i + S::W]);
                bits += b;
                escapes += e;
            }
        }
    }
    let (b, e) = uniform::extra_and_escapes(&symbols[done..]);
    (bits + b, escapes + e)
}

/// [`uniform::flagged`]: `W` symbols at a time, the lanes flagged by compares and only the
/// flagged ones (rare: escapes, a chunk's rarest codes) visited.
#[inline(always)]
pub(crate) unsafe fn flagged<S: Simd>(symbols: &[u16], lo: u16, hi: u16, out: &mut Vec<u32>) {
    // Four vectors' flags in one word, tested at once.
    let step = 4 * S::W;
    let n = symbols.len();
    let done = n / step * step;
    let src = symbols.as_ptr().cast::<u8>();
    let (lo_v, hi_v) = (S::splat_i(i32::from(lo) - 1), S::splat_i(i32::from(hi)));
    let esc = S::splat_i(i32::from(ESC));
    for i in (0..done).step_by(step) {
        let mut m = 0u64;
        for k in 0..4 {
            // SAFETY: elements `i..i + 4 W` are inside `symbols`.
            let bits = unsafe {
                let s = S::load_u16(src.add(2 * (i + k * S::W)));
                let inside = S::m_and(S::igt(s, lo_v), S::igt(hi_v, s));
                S::mask_bits(S::m_or(inside, S::ieq(s, esc)))
            };
            m |= u64::from(bits) << (k * S::W);
        }
        while m != 0 {
            out.push((i + m.trailing_zeros() as usize) as u32);
            m &= m - 1;
        }
    }
    uniform::flagged_from(symbols, done, lo, hi, out);
}

/// Defines a level's lossy kernels: safe entry points that send everything to the scalar
/// reference unless `$supported()`, and otherwise to the generic bodies above, instantiated
/// with `$S` inside `#[target_feature(enable = $features)]` functions.
macro_rules! vector_kernels {
    ($S:ty, $features:literal, $supported:path) => {
        mod lossy_kernels {
            use super::*;
            use crate::dtype::DType;
            use crate::error::Result;
            use crate::quant::block::BlockFormat;
            use crate::quant::rounding::Rounding;
            use crate::quant::uniform::{
                self, BitReader, BitWriter, ErrSum, Escaped, QuantArgs, Stats, Step,
            };
            use crate::quant::{bitpack, block, convert};
            use crate::simd::vector::{self as v, BF16, F16, F32};

            pub fn to_f32(dtype: DType, input: &[u8], out: &mut [f32]) {
                if !$supported() {
                    return convert::load_all(dtype, input, out);
                }
                #[target_feature(enable = $features)]
                unsafe fn go(dtype: DType, input: &[u8], out: &mut [f32]) {
                    // SAFETY: the features are enabled here.
                    unsafe {
                        match dtype {
                            DType::F32 => v::to_f32::<$S, F32>(input, out),
                            DType::F16 => v::to_f32::<$S, F16>(input, out),
                            DType::BF16 => v::to_f32::<$S, BF16>(input, out),
                        }
                    }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go(dtype, input, out) }
            }

            pub fn from_f32(dtype: DType, vals: &[f32], out: &mut [u8]) {
                if !$supported() {
                    return convert::store_all_sat(dtype, vals, out);
                }
                #[target_feature(enable = $features)]
                unsafe fn go(dtype: DType, vals: &[f32], out: &mut [u8]) {
                    // SAFETY: the features are enabled here.
                    unsafe {
                        match dtype {
                            DType::F32 => v::from_f32::<$S, F32>(vals, out),
                            DType::F16 => v::from_f32::<$S, F16>(vals, out),
                            DType::BF16 => v::from_f32::<$S, BF16>(vals, out),
                        }
                    }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go(dtype, vals, out) }
            }

            /// `block_encode` (`PACKED`: `block_encode_packed`).
            pub fn block_encode<const PACKED: bool>(
                fmt: &BlockFormat,
                rounding: Rounding,
                base: u64,
                dtype: DType,
                input: &[u8],
                codes: &mut [u8],
                scales: &mut [u8],
            ) -> usize {
                if !$supported() {
                    let reference = if PACKED {
                        block::encode_blocks_packed
                    } else {
                        block::encode_blocks
                    };
                    return reference(fmt, rounding, base, dtype, input, codes, scales);
                }
                #[target_feature(enable = $features)]
                unsafe fn go<const PACKED: bool>(
                    fmt: &BlockFormat,
                    rounding: Rounding,
                    base: u64,
                    dtype: DType,
                    input: &[u8],
                    codes: &mut [u8],
                    scales: &mut [u8],
                ) -> usize {
                    // SAFETY: the features are enabled here.
                    unsafe {
                        match dtype {
                            DType::F32 => v::block_encode::<$S, F32, PACKED>(
                                fmt, rounding, base, input, codes, scales,
                            ),
                            DType::F16 => v::block_encode::<$S, F16, PACKED>(
                                fmt, rounding, base, input, codes, scales,
                            ),
                            DType::BF16 => v::block_encode::<$S, BF16, PACKED>(
                                fmt, rounding, base, input, codes, scales,
                            ),
                        }
                    }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go::<PACKED>(fmt, rounding, base, dtype, input, codes, scales) }
            }

            /// `block_decode` (`PACKED`: `block_decode_packed`).
            pub fn block_decode<const PACKED: bool>(
                fmt: &BlockFormat,
                dtype: DType,
                scales: &[u8],
                codes: &[u8],
                out: &mut [u8],
            ) {
                if !$supported() {
                    let reference = if PACKED {
                        block::decode_blocks_packed
                    } else {
                        block::decode_blocks
                    };
                    return reference(fmt, dtype, scales, codes, out);
                }
                #[target_feature(enable = $features)]
                unsafe fn go<const PACKED: bool>(
                    fmt: &BlockFormat,
                    dtype: DType,
                    scales: &[u8],
                    codes: &[u8],
                    out: &mut [u8],
                ) {
                    // SAFETY: the features are enabled here.
                    unsafe {
                        match dtype {
                            DType::F32 => {
                                v::block_decode::<$S, F32, PACKED>(fmt, scales, codes, out)
                            }
                            DType::F16 => {
                                v::block_decode::<$S, F16, PACKED>(fmt, scales, codes, out)
                            }
                            DType::BF16 => {
                                v::block_decode::<$S, BF16, PACKED>(fmt, scales, codes, out)
                            }
                        }
                    }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go::<PACKED>(fmt, dtype, scales, codes, out) }
            }

            pub fn pack_codes(width: u32, codes: &[u8], out: &mut [u8]) {
                if !$supported() {
                    return bitpack::pack_bytes(width, codes, out);
                }
                #[target_feature(enable = $features)]
                unsafe fn go(width: u32, codes: &[u8], out: &mut [u8]) {
                    // SAFETY: the features are enabled here.
                    unsafe { v::pack_codes::<$S>(width, codes, out) }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go(width, codes, out) }
            }

            pub fn unpack_codes(width: u32, packed: &[u8], codes: &mut [u8]) {
                if !$supported() {
                    return bitpack::unpack_bytes(width, packed, codes);
                }
                #[target_feature(enable = $features)]
                unsafe fn go(width: u32, packed: &[u8], codes: &mut [u8]) {
                    // SAFETY: the features are enabled here.
                    unsafe { v::unpack_codes::<$S>(width, packed, codes) }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go(width, packed, codes) }
            }

            pub fn stats(dtype: DType, input: &[u8]) -> Stats {
                if !$supported() {
                    return uniform::stats(dtype, input);
                }
                #[target_feature(enable = $features)]
                unsafe fn go(dtype: DType, input: &[u8]) -> Stats {
                    // SAFETY: the features are enabled here.
                    unsafe {
                        match dtype {
                            DType::F32 => v::stats::<$S, F32>(input),
                            DType::F16 => v::stats::<$S, F16>(input),
                            DType::BF16 => v::stats::<$S, BF16>(input),
                        }
                    }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go(dtype, input) }
            }

            pub fn uniform_encode(
                a: &QuantArgs,
                input: &[u8],
                step: Step,
                symbols: &mut [u16],
                extra: &mut BitWriter,
                err: &mut ErrSum,
            ) -> usize {
                if !$supported() {
                    return uniform::encode_symbols(a, input, step, symbols, extra, err);
                }
                #[target_feature(enable = $features)]
                unsafe fn go(
                    a: &QuantArgs,
                    input: &[u8],
                    step: Step,
                    symbols: &mut [u16],
                    extra: &mut BitWriter,
                    err: &mut ErrSum,
                ) -> usize {
                    // SAFETY: the features are enabled here.
                    unsafe {
                        match a.dtype {
                            DType::F32 => {
                                v::uniform_encode::<$S, F32>(a, input, step, symbols, extra, err)
                            }
                            DType::F16 => {
                                v::uniform_encode::<$S, F16>(a, input, step, symbols, extra, err)
                            }
                            DType::BF16 => {
                                v::uniform_encode::<$S, BF16>(a, input, step, symbols, extra, err)
                            }
                        }
                    }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go(a, input, step, symbols, extra, err) }
            }

            pub fn uniform_decode(
                dtype: DType,
                symbols: &[u16],
                step: Step,
                extra: &mut BitReader,
                esc: &mut Escaped,
                out: &mut [u8],
            ) -> Result<()> {
                if !$supported() {
                    return uniform::decode_symbols(dtype, symbols, step, extra, esc, out);
                }
                #[target_feature(enable = $features)]
                unsafe fn go(
                    dtype: DType,
                    symbols: &[u16],
                    step: Step,
                    extra: &mut BitReader,
                    esc: &mut Escaped,
                    out: &mut [u8],
                ) -> Result<()> {
                    // SAFETY: the features are enabled here.
                    unsafe {
                        match dtype {
                            DType::F32 => {
                                v::uniform_decode::<$S, F32>(symbols, step, extra, esc, out)
                            }
                            DType::F16 => {
                                v::uniform_decode::<$S, F16>(symbols, step, extra, esc, out)
                            }
                            DType::BF16 => {
                                v::uniform_decode::<$S, BF16>(symbols, step, extra, esc, out)
                            }
                        }
                    }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go(dtype, symbols, step, extra, esc, out) }
            }

            // (The AVX-512 level has its own, on 16-bit lanes.)
            #[allow(dead_code)]
            pub fn flagged(symbols: &[u16], lo: u16, hi: u16, out: &mut Vec<u32>) {
                if !$supported() {
                    return uniform::flagged(symbols, lo, hi, out);
                }
                #[target_feature(enable = $features)]
                unsafe fn go(symbols: &[u16], lo: u16, hi: u16, out: &mut Vec<u32>) {
                    // SAFETY: the features are enabled here.
                    unsafe { v::flagged::<$S>(symbols, lo, hi, out) }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go(symbols, lo, hi, out) }
            }

            pub fn extra_count(symbols: &[u16]) -> (usize, usize) {
                if !$supported() {
                    return uniform::extra_and_escapes(symbols);
                }
                #[target_feature(enable = $features)]
                unsafe fn go(symbols: &[u16]) -> (usize, usize) {
                    // SAFETY: the features are enabled here.
                    unsafe { v::extra_count::<$S>(symbols) }
                }
                // SAFETY: the CPU has the features (checked above).
                unsafe { go(symbols) }
            }
        }
    };
}

pub(crate) use vector_kernels;

// ---------------------------------------------------------------------------------------
// The float split, for levels without kernels of their own (NEON)
// ---------------------------------------------------------------------------------------

/// The OR of the lanes.
#[inline(always)]
unsafe fn hor<S: Simd>(v: S::I) -> u32 {
    let mut lanes = [0u32; 16];
    // SAFETY: `4 W <= 64` bytes.
    unsafe { S::store_i32(lanes.as_mut_ptr().cast(), v) };
    lanes[..S::W].iter().fold(0, |a, &b| a | b)
}

/// [`super::scalar::split`] for the vector layouts.
#[allow(dead_code)]
#[inline(always)]
pub(crate) unsafe fn split<S: Simd>(fs: FloatSplit, input: &[u8], symbols: &mut [u16]) -> u32 {
    if !vector_layout(fs) {
        return scalar::split(fs, input, symbols);
    }
    let n = symbols.len();
    assert_eq!(input.len(), n * fs.bytes);
    let done = n / S::W * S::W;
    let mut acc = S::splat_i(0);
    for i in (0..done).step_by(S::W) {
        // SAFETY: elements `i..i + W` are inside `input` and `symbols`.
        unsafe {
            let v = if fs.bytes == 2 {
                S::load_u16(input.as_ptr().add(2 * i))
            } else {
                S::load_i32(input.as_ptr().add(4 * i))
            };
            acc = S::or(acc, v);
            S::store_u16(symbols.as_mut_ptr().add(i).cast(), S::shr(v, fs.mant_bits));
        }
    }
    // SAFETY: the caller's features.
    let or = unsafe { hor::<S>(acc) } & ((1 << fs.mant_bits) - 1);
    or | scalar::split(fs, &input[done * fs.bytes..], &mut symbols[done..])
}

/// [`super::scalar::pack_mantissa`] for the vector layouts.
#[allow(dead_code)]
#[inline(always)]
pub(crate) unsafe fn pack_mantissa<S: Simd>(
    fs: FloatSplit,
    input: &[u8],
    drop: u32,
    out: &mut [u8],
) {
    if !(vector_layout(fs) && drop <= fs.mant_bits) {
        return scalar::pack_mantissa(fs, input, drop, out);
    }
    let n = input.len() / fs.bytes;
    let width = fs.mant_bits - drop;
    assert!(out.len() >= bitpack::packed_len(n, width));
    if width == 0 {
        return;
    }
    let w = width as usize;
    let blocks = n / bitpack::BLOCK;
    let mant = S::splat_i(((1u32 << fs.mant_bits) - 1) as i32);
    for blk in 0..blocks {
        // SAFETY: block `blk` of elements and its `64 w` packed bytes are inside `input`
        // and `out` (asserted above).
        let (src, dst) = unsafe {
            (
                input.as_ptr().add(blk * bitpack::BLOCK * fs.bytes),
                out.as_mut_ptr().add(blk * 64 * w),
            )
        };
        for s in 0..16 / S::W {
            // SAFETY: the block's `64 w` packed bytes at `dst`; element `e + W <= 512` of the
            // block.
            unsafe {
                pack_lanes::<S>(width, s, dst, |row| {
                    let e = 16 * row + S::W * s;
                    let v = if fs.bytes == 2 {
                        S::load_u16(src.add(2 * e))
                    } else {
                        S::load_i32(src.add(4 * e))
                    };
                    S::shr(S::and(v, mant), drop)
                })
            };
        }
    }
    let done = blocks * bitpack::BLOCK;
    scalar::pack_mantissa(
        fs,
        &input[done * fs.bytes..n * fs.bytes],
        drop,
        &mut out[blocks * 64 * w..],
    );
}

/// [`super::scalar::merge`] for the vector layouts.
#[allow(dead_code)]
#[inline(always)]
pub(crate) unsafe fn merge<S: Simd>(
    fs: FloatSplit,
    symbols: &[u16],
    packed: &[u8],
    drop: u32,
    out: &mut [u8],
) {
    if !(vector_layout(fs) && drop <= fs.mant_bits) {
        return scalar::merge(fs, symbols, packed, drop, out);
    }
    let n = symbols.len();
    let width = fs.mant_bits - drop;
    let w = width as usize;
    assert_eq!(out.len(), n * fs.bytes);
    assert!(packed.len() >= bitpack::packed_len(n, width));
    let blocks = n / bitpack::BLOCK;
    let mask = S::splat_i(((1u64 << width) - 1) as i32);
    for blk in 0..blocks {
        // SAFETY: block `blk` is inside `symbols`, `out` and (its `64 w` bytes) `packed`.
        let (src, sym, dst) = unsafe {
            (
                packed.as_ptr().add(blk * 64 * w),
                symbols.as_ptr().add(blk * bitpack::BLOCK).cast::<u8>(),
                out.as_mut_ptr().add(blk * bitpack::BLOCK * fs.bytes),
            )
        };
        for s in 0..16 / S::W {
            // SAFETY: the block's `64 w` packed bytes at `src`; element `e + W <= 512` of the
            // block.
            unsafe {
                unpack_lanes::<S>(width, s, src, |row, m| {
                    let e = 16 * row + S::W * s;
                    let v = S::or(
                        S::shl(S::load_u16(sym.add(2 * e)), fs.mant_bits),
                        S::shl(S::and(m, mask), drop),
                    );
                    if fs.bytes == 2 {
                        S::store_u16(dst.add(2 * e), v);
                    } else {
                        S::store_i32(dst.add(4 * e), v);
                    }
                })
            };
        }
    }
    let done = blocks * bitpack::BLOCK;
    scalar::merge(
        fs,
        &symbols[done..],
        &packed[blocks * 64 * w..],
        drop,
        &mut out[done * fs.bytes..],
    );
}
