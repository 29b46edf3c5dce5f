//! Conversions between a tensor's element bytes and `f32`, the arithmetic type of the lossy
//! quantizers.
//!
//! Loading is exact (every float16 and bfloat16 value is an `f32`). Storing rounds to nearest,
//! ties to even, and saturates: a finite value beyond the dtype's largest finite value becomes
//! that value (with its sign) instead of infinity, so a lossy reconstruction of finite data is
//! always finite. NaN stays NaN and infinities stay infinite.

use crate::dtype::DType;

/// The bits of a float16 as an `f32` (exact).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let e = u32::from((h >> 10) & 0x1f);
    let m = u32::from(h & 0x3ff);
    let bits = match e {
        0 => {
            // Zero or subnormal: m * 2^-24, exact in f32.
            let v = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (m << 13),
        _ => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Rounds to float16, nearest-even, overflowing to infinity (IEEE conversion).
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = b & 0x7fff_ffff;
    if a >= 0x7f80_0000 {
        // Infinity, or NaN keeping its top payload bits (and quiet).
        return sign
            | if a > 0x7f80_0000 {
                0x7e00 | ((a >> 13) & 0x3ff) as u16
            } else {
                0x7c00
            };
    }
    if a >= 0x4780_0000 {
        // At least 2^16: beyond the largest float16 even after rounding.
        return sign | 0x7c00;
    }
    if a >= 0x3880_0000 {
        // Normal float16 range (at least 2^-14): rebias and round the mantissa to 10 bits;
        // a carry moves into the exponent (and from 65520 up, into infinity).
        let m = a - (112 << 23);
        return sign | ((m + 0xfff + ((m >> 13) & 1)) >> 13) as u16;
    }
    if a < 0x3300_0000 {
        // Below 2^-25: rounds to zero (2^-25 itself is a tie that goes to even zero).
        return sign;
    }
    // Subnormal result: the value in units of 2^-24, rounded to nearest even.
    let e = a >> 23; // 102..=112
    let mant = (a & 0x7f_ffff) | 0x80_0000;
    let shift = 126 - e; // 14..=24
    let q = mant >> shift;
    let rem = mant & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    let q = q + u32::from(rem > half || (rem == half && q & 1 == 1));
    sign | q as u16
}

/// The bits of a bfloat16 as an `f32` (exact).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Rounds to bfloat16, nearest-even, overflowing to infinity; NaN stays a (quiet) NaN.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// [`f32_to_f16`], but a finite input never becomes infinite.
#[inline(always)]
pub fn f32_to_f16_sat(x: f32) -> u16 {
    let h = f32_to_f16(x);
    if h & 0x7fff == 0x7c00 && x.is_finite() {
        (h & 0x8000) | 0x7bff
    } else {
        h
    }
}

/// [`f32_to_bf16`], but a finite input never becomes infinite.
#[inline(always)]
pub fn f32_to_bf16_sat(x: f32) -> u16 {
    let h = f32_to_bf16(x);
    if h & 0x7fff == 0x7f80 && x.is_finite() {
        (h & 0x8000) | 0x7f7f
    } else {
        h
    }
}

/// Element `i` of little-endian `dtype` bytes as an `f32`.
#[inline(always)]
pub fn load(dtype: DType, input: &[u8], i: usize) -> f32 {
    match dtype {
        DType::F32 => f32::from_le_bytes(input[4 * i..4 * i + 4].try_into().unwrap()),
        DType::F16 => f16_to_f32(u16::from_le_bytes([input[2 * i], input[2 * i + 1]])),
        DType::BF16 => bf16_to_f32(u16::from_le_bytes([input[2 * i], input[2 * i + 1]])),
    }
}

/// Loads every element of `input` into `out` (exact).
pub fn load_all(dtype: DType, input: &[u8], out: &mut [f32]) {
    assert_eq!(input.len(), out.len() * dtype.itemsize());
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(input.chunks_exact(4)) {
                *o = f32::from_le_bytes(b.try_into().unwrap());
            }
        }
        DType::F16 => {
            for (o, b) in out.iter_mut().zip(input.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        DType::BF16 => {
            for (o, b) in out.iter_mut().zip(input.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
    }
}

/// `x` rounded to `dtype` (saturating), as the raw bits of that dtype.
#[inline(always)]
pub fn to_bits_sat(dtype: DType, x: f32) -> u32 {
    match dtype {
        DType::F32 => {
            if x.is_infinite() {
                f32::MAX.copysign(x).to_bits()
            } else {
                x.to_bits()
            }
        }
        DType::F16 => u32::from(f32_to_f16_sat(x)),
        DType::BF16 => u32::from(f32_to_bf16_sat(x)),
    }
}

/// `x` rounded to `dtype` (saturating) and back: the value a decoder writes, as an `f32`.
#[inline(always)]
pub fn round_sat(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F32 => {
            if x.is_infinite() {
                f32::MAX.copysign(x)
            } else {
                x
            }
        }
        DType::F16 => f16_to_f32(f32_to_f16_sat(x)),
        DType::BF16 => bf16_to_f32(f32_to_bf16_sat(x)),
    }
}

/// Writes raw `dtype` bits as element `i` of little-endian bytes.
#[inline(always)]
pub fn store_bits(dtype: DType, bits: u32, out: &mut [u8], i: usize) {
    if dtype.itemsize() == 4 {
        out[4 * i..4 * i + 4].copy_from_slice(&bits.to_le_bytes());
    } else {
        out[2 * i..2 * i + 2].copy_from_slice(&(bits as u16).to_le_bytes());
    }
}

/// Reads the raw bits of element `i`.
#[inline(always)]
pub fn load_bits(dtype: DType, input: &[u8], i: usize) -> u32 {
    if dtype.itemsize() == 4 {
        u32::from_le_bytes(input[4 * i..4 * i + 4].try_into().unwrap())
    } else {
        u32::from(u16::from_le_bytes([input[2 * i], input[2 * i + 1]]))
    }
}

/// Rounds every value of `vals` to `dtype` (saturating) into little-endian bytes.
pub fn store_all_sat(dtype: DType, vals: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), vals.len() * dtype.itemsize());
    match dtype {
        DType::F32 => {
            for (o, &v) in out.chunks_exact_mut(4).zip(vals) {
                o.copy_from_slice(&to_bits_sat(DType::F32, v).to_le_bytes());
            }
        }
        DType::F16 => {
            for (o, &v) in out.chunks_exact_mut(2).zip(vals) {
                o.copy_from_slice(&f32_to_f16_sat(v).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (o, &v) in out.chunks_exact_mut(2).zip(vals) {
                o.copy_from_slice(&f32_to_bf16_sat(v).to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round-to-nearest-even to float16 through f64 arithmetic: an independent reference.
    fn f16_reference(x: f32) -> f32 {
        let x = f64::from(x);
        if x.is_nan() {
            return f32::NAN;
        }
        let a = x.abs();
        // Spacing of float16 values around a.
        let e = if a < 2f64.powi(-14) {
            -14
        } else {
            a.log2().floor() as i32
        };
        let q = 2f64.powi(e - 10);
        let mut r = (a / q).round();
        if (a / q - (a / q).floor() - 0.5).abs() == 0.0 && r % 2.0 == 1.0 {
            r -= 1.0;
        }
        let v = r * q;
        let v = if v >= 65520.0 { f64::INFINITY } else { v };
        v.copysign(x) as f32
    }

    #[test]
    fn f16_round_trips_every_pattern() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan());
                continue;
            }
            assert_eq!(f32_to_f16(x), h, "{h:#x}");
        }
    }

    #[test]
    fn f16_rounding_matches_a_reference() {
        let mut s = 1u64;
        for i in 0..2_000_000u32 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Bits concentrated on float16's range (exponents 100..=145).
            let e = 100 + (s >> 59) as u32 % 46;
            let bits = ((s >> 32) as u32 & 0x807f_ffff) | (e << 23);
            let x = if i % 1000 == 0 {
                f32::from_bits(bits) * 3.0
            } else {
                f32::from_bits(bits)
            };
            let got = f16_to_f32(f32_to_f16(x));
            let want = f16_reference(x);
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "{x:e}: {got:e} vs {want:e}"
            );
        }
    }

    #[test]
    fn saturation_and_specials() {
        assert_eq!(f32_to_f16_sat(1e6), 0x7bff);
        assert_eq!(f32_to_f16_sat(-65520.0), 0xfbff);
        assert_eq!(f32_to_f16_sat(f32::INFINITY), 0x7c00);
        assert_eq!(f32_to_bf16_sat(f32::MAX), 0x7f7f);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16_sat(-f32::INFINITY), 0xff80);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80); // tie to even
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(round_sat(DType::F32, f32::INFINITY), f32::MAX);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
    }
}
