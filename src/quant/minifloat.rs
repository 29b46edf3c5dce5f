//! Element formats of the fixed-rate block quantizer: signed integers of 8, 4, 3 and 2 bits
//! and the OCP Microscaling (MX v1.0) minifloats FP8 E4M3, FP8 E5M2 and FP4 E2M1.
//!
//! An element is coded from `t`, the input already divided by its block's scale. Integers
//! round `t` and clamp it to `±(2^(bits-1) - 1)` (symmetric: the code `-2^(bits-1)` is never
//! written) and are stored in two's complement. Minifloats round `|t|` onto their grid and
//! saturate at the largest finite value (448, 57344, 6); the sign bit is the sign of `t`
//! (so a negative value that rounds to zero becomes `-0`). Encoders never write the NaN or
//! infinity codes of E4M3 (`S.1111.111`) and E5M2 (`S.11111.xx`); a decoder maps them to NaN
//! and infinity, as the MX spec defines them.

use super::rounding;

/// An element format of the block quantizer. The discriminant is the code in frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Element {
    Int8 = 1,
    Int4 = 2,
    Int3 = 3,
    Int2 = 4,
    /// FP8 with 4 exponent bits (bias 7) and 3 mantissa bits; max 448, no infinities.
    E4M3 = 5,
    /// FP8 with 5 exponent bits (bias 15) and 2 mantissa bits; max 57344.
    E5M2 = 6,
    /// FP4 with 2 exponent bits (bias 1) and 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6.
    E2M1 = 7,
}

/// The parameters of a minifloat: mantissa bits, exponent bias, largest finite value.
#[derive(Debug, Clone, Copy)]
struct Minifloat {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    max: f32,
    /// The magnitude bits of `max`.
    max_code: u32,
}

impl Element {
    pub const ALL: [Element; 7] = [
        Element::Int8,
        Element::Int4,
        Element::Int3,
        Element::Int2,
        Element::E4M3,
        Element::E5M2,
        Element::E2M1,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Element> {
        Element::ALL.into_iter().find(|e| e.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Element::Int8 => "int8",
            Element::Int4 => "int4",
            Element::Int3 => "int3",
            Element::Int2 => "int2",
            Element::E4M3 => "e4m3",
            Element::E5M2 => "e5m2",
            Element::E2M1 => "e2m1",
        }
    }

    pub fn parse(name: &str) -> Option<Element> {
        let n = name.trim().to_ascii_lowercase();
        Element::ALL.into_iter().find(|e| e.name() == n)
    }

    /// Bits per element code.
    pub fn bits(self) -> u32 {
        match self {
            Element::Int8 | Element::E4M3 | Element::E5M2 => 8,
            Element::Int4 | Element::E2M1 => 4,
            Element::Int3 => 3,
            Element::Int2 => 2,
        }
    }

    pub fn is_int(self) -> bool {
        matches!(
            self,
            Element::Int8 | Element::Int4 | Element::Int3 | Element::Int2
        )
    }

    fn minifloat(self) -> Option<Minifloat> {
        match self {
            Element::E4M3 => Some(Minifloat {
                exp_bits: 4,
                man_bits: 3,
                bias: 7,
                max: 448.0,
                max_code: 0x7e,
            }),
            Element::E5M2 => Some(Minifloat {
                exp_bits: 5,
                man_bits: 2,
                bias: 15,
                max: 57344.0,
                max_code: 0x7b,
            }),
            Element::E2M1 => Some(Minifloat {
                exp_bits: 2,
                man_bits: 1,
                bias: 1,
                max: 6.0,
                max_code: 0x7,
            }),
            _ => None,
        }
    }

    /// The largest magnitude a code represents: `2^(bits-1) - 1` for integers (in code
    /// units), the largest finite value for minifloats.
    pub fn max_value(self) -> f32 {
        match self.minifloat() {
            Some(m) => m.max,
            None => ((1u32 << (self.bits() - 1)) - 1) as f32,
        }
    }

    /// `emax` of the MX spec: the exponent of the largest power of two the element holds.
    /// Integers are read as fixed point with `bits - 2` fraction bits (MXINT8: 2^-6), so
    /// their emax is 0.
    pub fn emax(self) -> i32 {
        match self {
            Element::E4M3 => 8,
            Element::E5M2 => 15,
            Element::E2M1 => 2,
            _ => 0,
        }
    }

    /// Fraction bits of an integer element under a power-of-two (E8M0) scale: `bits - 2`.
    pub fn int_fraction_bits(self) -> i32 {
        if self.is_int() {
            self.bits() as i32 - 2
        } else {
            0
        }
    }

    /// Codes `t` (finite or infinite, never NaN), rounding to nearest-even or, given a
    /// threshold `u` in `[0, 1)`, stochastically. The code occupies the low `bits()` bits.
    #[inline(always)]
    pub fn encode(self, t: f32, u: Option<f32>) -> u8 {
        match self.minifloat() {
            None => {
                let m = self.max_value();
                let q = rounding::round(t, u).clamp(-m, m) as i32;
                (q as u8) & ((1u32 << self.bits()) - 1) as u8
            }
            Some(f) => encode_minifloat(f, t, u),
        }
    }

    /// The value of every code (`2^bits()` entries; integers in code units).
    pub fn values(self) -> Vec<f32> {
        (0..1u32 << self.bits())
            .map(|c| self.value(c as u8))
            .collect()
    }

    /// The value of one code.
    pub fn value(self, code: u8) -> f32 {
        let bits = self.bits();
        match self.minifloat() {
            None => {
                // Sign-extend the two's complement code.
                let shift = 8 - bits;
                f32::from(((code << shift) as i8) >> shift)
            }
            Some(f) => {
                let sign = (code >> (bits - 1)) & 1;
                let e = u32::from(code >> f.man_bits) & ((1 << f.exp_bits) - 1);
                let m = u32::from(code) & ((1 << f.man_bits) - 1);
                let top = (1 << f.exp_bits) - 1;
                let v = if self == Element::E4M3 && e == top && m == (1 << f.man_bits) - 1 {
                    f32::NAN
                } else if self == Element::E5M2 && e == top {
                    if m == 0 {
                        f32::INFINITY
                    } else {
                        f32::NAN
                    }
                } else if e == 0 {
                    m as f32 * pow2(1 - f.bias - f.man_bits as i32)
                } else {
                    ((1 << f.man_bits) + m) as f32 * pow2(e as i32 - f.bias - f.man_bits as i32)
                };
                if sign == 1 {
                    -v
                } else {
                    v
                }
            }
        }
    }
}

/// `2^e` as an `f32`, for `-149 <= e <= 127` (subnormal powers included).
#[inline(always)]
pub fn pow2(e: i32) -> f32 {
    debug_assert!((-149..=127).contains(&e));
    if e >= -126 {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (e + 149))
    }
}

/// `floor(log2(a))` of a positive finite `f32` (subnormals included), from its bits.
#[inline(always)]
pub fn floor_log2(a: f32) -> i32 {
    let b = a.to_bits() & 0x7fff_ffff;
    let e = (b >> 23) as i32;
    if e > 0 {
        e - 127
    } else {
        -149 + (31 - b.leading_zeros() as i32)
    }
}

#[inline(always)]
fn encode_minifloat(f: Minifloat, t: f32, u: Option<f32>) -> u8 {
    let sign = u8::from(t.is_sign_negative()) << (f.exp_bits + f.man_bits);
    let a = t.abs();
    let emin = 1 - f.bias;
    let mag = if a >= f.max {
        // Saturate. Below max, rounding never goes above it: max is on the grid.
        f.max_code
    } else {
        let e = if a == 0.0 {
            emin
        } else {
            floor_log2(a).max(emin)
        };
        // a / 2^(e - man_bits) is exact (a power-of-two scaling within f32's range).
        let r = rounding::round(a * pow2(f.man_bits as i32 - e), u) as u32;
        let (e, r) = if r == 2 << f.man_bits {
            (e + 1, 1 << f.man_bits)
        } else {
            (e, r)
        };
        if r < 1 << f.man_bits {
            // Subnormal (only at e == emin) or zero.
            r
        } else {
            (((e + f.bias) as u32) << f.man_bits) | (r - (1 << f.man_bits))
        }
    };
    sign | mag as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_sets_match_the_spec() {
        let e2m1: Vec<f32> = (0..8).map(|c| Element::E2M1.value(c)).collect();
        assert_eq!(e2m1, vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(Element::E2M1.value(0b1111), -6.0);
        assert_eq!(Element::E4M3.value(0x7e), 448.0);
        assert!(Element::E4M3.value(0x7f).is_nan());
        assert!(Element::E4M3.value(0xff).is_nan());
        assert_eq!(Element::E4M3.value(0x01), pow2(-9));
        assert_eq!(Element::E4M3.value(0x08), pow2(-6));
        assert_eq!(Element::E5M2.value(0x7b), 57344.0);
        assert_eq!(Element::E5M2.value(0x7c), f32::INFINITY);
        assert!(Element::E5M2.value(0x7d).is_nan());
        assert_eq!(Element::E5M2.value(0x01), pow2(-16));
        assert_eq!(Element::Int8.value(0x81), -127.0);
        assert_eq!(Element::Int4.value(0x9), -7.0);
        assert_eq!(Element::Int3.value(0b101), -3.0);
        assert_eq!(Element::Int2.value(0b11), -1.0);
    }

    #[test]
    fn every_finite_value_encodes_to_itself() {
        for e in Element::ALL {
            for c in 0..(1u32 << e.bits()) {
                let v = e.value(c as u8);
                if !v.is_finite() || (e.is_int() && v.abs() > e.max_value()) {
                    continue;
                }
                assert_eq!(
                    e.value(e.encode(v, None)).to_bits(),
                    v.to_bits(),
                    "{e:?} {c:#x}"
                );
            }
        }
    }

    #[test]
    fn rounding_is_nearest_even_and_saturating() {
        let e = Element::E2M1;
        for (t, want) in [
            (0.25, 0.0),
            (0.26, 0.5),
            (0.75, 1.0),
            (1.25, 1.0),
            (1.75, 2.0),
            (2.5, 2.0),
            (3.5, 4.0),
            (5.0, 4.0),
            (5.01, 6.0),
            (100.0, 6.0),
            (f32::INFINITY, 6.0),
            (-0.1, -0.0),
        ] {
            let got = e.value(e.encode(t, None));
            assert_eq!(got.to_bits(), (want as f32).to_bits(), "{t}");
        }
        assert_eq!(
            Element::E4M3.value(Element::E4M3.encode(464.0, None)),
            448.0
        );
        assert_eq!(Element::E4M3.value(Element::E4M3.encode(1e9, None)), 448.0);
        assert_eq!(
            Element::E5M2.value(Element::E5M2.encode(-1e9, None)),
            -57344.0
        );
        assert_eq!(Element::Int4.value(Element::Int4.encode(9.7, None)), 7.0);
        assert_eq!(Element::Int8.value(Element::Int8.encode(-2.5, None)), -2.0);
        // Smallest E4M3 subnormal is 2^-9: half of it is a tie that goes to zero.
        assert_eq!(Element::E4M3.encode(pow2(-10), None), 0);
        assert_eq!(Element::E4M3.encode(pow2(-10) * 1.01, None), 1);
    }

    #[test]
    fn helpers() {
        assert_eq!(floor_log2(1.0), 0);
        assert_eq!(floor_log2(0.75), -1);
        assert_eq!(floor_log2(f32::from_bits(1)), -149);
        assert_eq!(floor_log2(f32::MAX), 127);
        assert_eq!(pow2(-149), f32::from_bits(1));
        assert_eq!(pow2(-127), f32::from_bits(0x0040_0000));
    }
}
