//! Checks on decoded values for untrusted peers: reject non-finite values or magnitudes
//! above a bound before a tensor reaches the model.
//!
//! Works on bit patterns with integer comparisons: for IEEE-style floats, the magnitude bits
//! `bits & !sign` order exactly like the magnitudes for finite values, and every infinity or
//! NaN compares above every finite value. So one compare per element decides both checks,
//! and the loops vectorize.

use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};

/// What decoded values must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Validation {
    /// Refuse infinities and NaNs.
    pub reject_nonfinite: bool,
    /// Refuse any value whose magnitude exceeds this (implies rejecting non-finite values).
    pub max_abs: Option<f64>,
}

impl Validation {
    pub fn is_active(&self) -> bool {
        self.reject_nonfinite || self.max_abs.is_some()
    }

    pub fn check_params(&self) -> Result<()> {
        if let Some(m) = self.max_abs {
            if m.is_nan() || m < 0.0 {
                return Err(Error::invalid(format!(
                    "max_abs must be a non-negative number, not {m}"
                )));
            }
        }
        Ok(())
    }
}

/// The largest magnitude bit pattern of `dtype` that passes: the largest finite value not
/// above `max_abs` (or the largest finite value at all).
fn threshold_bits(dtype: DType, max_abs: Option<f64>) -> u32 {
    let l = dtype.layout();
    let mag_mask = (1u32 << (l.bits - 1)) - 1;
    let inf = ((1u32 << l.exp_bits) - 1) << l.mant_bits;
    let max_finite = inf - 1;
    let Some(m) = max_abs else {
        return max_finite;
    };
    // Binary search over magnitude bit patterns: they are ordered like the values.
    let (mut lo, mut hi) = (0u32, max_finite);
    if to_f64(dtype, hi) <= m {
        return hi;
    }
    if to_f64(dtype, 0) > m {
        return 0;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if to_f64(dtype, mid) <= m {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo & mag_mask
}

fn to_f64(dtype: DType, bits: u32) -> f64 {
    match dtype {
        DType::F32 => f64::from(f32::from_bits(bits)),
        DType::BF16 => f64::from(f32::from_bits(bits << 16)),
        DType::F16 => {
            let e = (bits >> 10) & 0x1f;
            let m = f64::from(bits & 0x3ff);
            if e == 0 {
                m * 2f64.powi(-24)
            } else {
                (1.0 + m / 1024.0) * 2f64.powi(e as i32 - 15)
            }
        }
    }
}

/// Checks decoded little-endian element bytes against `v`; `first_elem` is the index of the
/// first element in the whole tensor, for the message.
pub fn check(dtype: DType, data: &[u8], v: &Validation, first_elem: u64) -> Result<()> {
    if !v.is_active() {
        return Ok(());
    }
    let thr = threshold_bits(dtype, v.max_abs);
    let bad = match dtype.itemsize() {
        2 => first_above_16(data, thr as u16),
        _ => first_above_32(data, thr),
    };
    let Some(i) = bad else {
        return Ok(());
    };
    let bits = if dtype.itemsize() == 2 {
        u32::from(u16::from_le_bytes([data[2 * i], data[2 * i + 1]]))
    } else {
        u32::from_le_bytes(data[4 * i..4 * i + 4].try_into().unwrap())
    };
    let l = dtype.layout();
    let value = to_f64(dtype, bits & ((1u32 << (l.bits - 1)) - 1));
    let what = if value.is_nan() || bits_are_nonfinite(dtype, bits) {
        "a non-finite value".to_owned()
    } else {
        format!(
            "magnitude {value}, above max_abs {}",
            v.max_abs.unwrap_or(f64::MAX)
        )
    };
    Err(Error::new(
        ErrorKind::RejectedValue,
        format!(
            "decoded tensor has {what} at element {}; the sender's data was refused",
            first_elem + i as u64
        ),
    ))
}

fn bits_are_nonfinite(dtype: DType, bits: u32) -> bool {
    let l = dtype.layout();
    let exp = (bits >> l.mant_bits) & ((1 << l.exp_bits) - 1);
    exp == (1 << l.exp_bits) - 1
}

/// Index of the first element whose magnitude bits exceed `thr`.
fn first_above_16(data: &[u8], thr: u16) -> Option<usize> {
    const BLOCK: usize = 256;
    for (b, block) in data.chunks(2 * BLOCK).enumerate() {
        // A branch-free scan of the block first; only a failing block is searched.
        let any = block.chunks_exact(2).fold(false, |acc, w| {
            acc | (u16::from_le_bytes([w[0], w[1]]) & 0x7fff > thr)
        });
        if any {
            let i = block
                .chunks_exact(2)
                .position(|w| u16::from_le_bytes([w[0], w[1]]) & 0x7fff > thr)?;
            return Some(b * BLOCK + i);
        }
    }
    None
}

fn first_above_32(data: &[u8], thr: u32) -> Option<usize> {
    const BLOCK: usize = 256;
    let above = |w: &[u8]| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & 0x7fff_ffff > thr;
    for (b, block) in data.chunks(4 * BLOCK).enumerate() {
        if block.chunks_exact(4).fold(false, |acc, w| acc | above(w)) {
            return Some(b * BLOCK + block.chunks_exact(4).position(above)?);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes16(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn nonfinite_is_refused_only_when_asked() {
        let data = bytes16(&[0x3f80, 0x7f80, 0x0000]); // bf16 1.0, +inf, 0
        let off = Validation::default();
        check(DType::BF16, &data, &off, 0).unwrap();
        let on = Validation {
            reject_nonfinite: true,
            max_abs: None,
        };
        let e = check(DType::BF16, &data, &on, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RejectedValue);
        assert!(e.message().contains("element 1"), "{e}");
        // NaN with the sign bit set, in float16.
        let e = check(DType::F16, &bytes16(&[0x3c00, 0xfe01]), &on, 0).unwrap_err();
        assert!(e.message().contains("non-finite"), "{e}");
        // The largest finite values pass.
        check(DType::BF16, &bytes16(&[0x7f7f, 0xff7f]), &on, 0).unwrap();
        check(DType::F16, &bytes16(&[0x7bff, 0xfbff]), &on, 0).unwrap();
    }

    #[test]
    fn max_abs_is_exact_at_the_boundary() {
        let v = Validation {
            reject_nonfinite: false,
            max_abs: Some(2.0),
        };
        let f32s = |xs: &[f32]| -> Vec<u8> { xs.iter().flat_map(|x| x.to_le_bytes()).collect() };
        check(DType::F32, &f32s(&[2.0, -2.0, 1e-30, 0.0, -0.0]), &v, 0).unwrap();
        let just_above = f32::from_bits(2.0f32.to_bits() + 1);
        let e = check(DType::F32, &f32s(&[1.0, -just_above]), &v, 0).unwrap_err();
        assert!(e.message().contains("element 1"), "{e}");
        assert!(check(DType::F32, &f32s(&[f32::NAN]), &v, 0).is_err());
        assert!(check(DType::F32, &f32s(&[f32::NEG_INFINITY]), &v, 0).is_err());
        // Between representable values: 1.3 in bfloat16 terms.
        let v = Validation {
            reject_nonfinite: false,
            max_abs: Some(1.3),
        };
        let below = (1.296875f32.to_bits() >> 16) as u16; // largest bf16 <= 1.3
        check(DType::BF16, &bytes16(&[below]), &v, 0).unwrap();
        assert!(check(DType::BF16, &bytes16(&[below + 1]), &v, 0).is_err());
        // Zero bound: only zeros pass.
        let zero = Validation {
            reject_nonfinite: false,
            max_abs: Some(0.0),
        };
        check(DType::F16, &bytes16(&[0, 0x8000]), &zero, 0).unwrap();
        assert!(check(DType::F16, &bytes16(&[1]), &zero, 0).is_err());
    }

    #[test]
    fn finds_the_first_bad_element_in_long_inputs() {
        let mut v = vec![0x3f80u16; 10_000];
        v[7777] = 0x7fc0;
        v[9000] = 0x7f80;
        let on = Validation {
            reject_nonfinite: true,
            max_abs: None,
        };
        let e = check(DType::BF16, &bytes16(&v), &on, 0).unwrap_err();
        assert!(e.message().contains("element 7777"), "{e}");
        let e = check(DType::BF16, &bytes16(&v), &on, 1000).unwrap_err();
        assert!(e.message().contains("element 8777"), "{e}");
    }

    #[test]
    fn bad_bound_is_an_invalid_argument() {
        for m in [-1.0, f64::NAN] {
            let v = Validation {
                reject_nonfinite: false,
                max_abs: Some(m),
            };
            assert_eq!(
                v.check_params().unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
        }
    }
}
