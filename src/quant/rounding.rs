//! Rounding of scaled values to integers: round-to-nearest-even and stochastic rounding.
//!
//! Stochastic rounding draws, for element `i` of the tensor (its index in the flattened
//! tensor, counting from 0), a threshold `u_i` in `[0, 1)` from a counter-based hash of
//! `(seed, i)`, so the result depends on neither the thread count nor the chunking, and the
//! same seed gives the same bits on every machine. A magnitude `a >= 0` rounds up when its
//! fractional part exceeds `u_i`:
//!
//! ```text
//! round_sr(t) = sign(t) * (floor(|t|) + [|t| - floor(|t|) > u_i])
//! ```
//!
//! so `E[round_sr(t)] = t` up to the 2^-24 resolution of `u_i` (unbiased). Every operation is
//! exact in `f32` (`|t| - floor(|t|)` is exact, `u_i` has 24 bits), so a vector kernel
//! reproduces the scalar one bit for bit.

/// How a quantizer rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Rounding {
    /// Round to nearest, ties to even.
    #[default]
    Nearest,
    /// Unbiased stochastic rounding, reproducible from the seed and each element's index.
    Stochastic { seed: u64 },
}

impl Rounding {
    /// The code written into stage descriptors: 0 nearest-even, 1 stochastic. (The seed is
    /// not needed to decode, so it is not written.)
    pub fn code(self) -> u8 {
        match self {
            Rounding::Nearest => 0,
            Rounding::Stochastic { .. } => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Rounding::Nearest => "nearest",
            Rounding::Stochastic { .. } => "stochastic",
        }
    }
}

/// The name of a rounding code read from a frame.
pub fn code_name(code: u8) -> Option<&'static str> {
    match code {
        0 => Some("nearest"),
        1 => Some("stochastic"),
        _ => None,
    }
}

/// splitmix64's finalizer over `seed + (index + 1) * golden`: a counter-based hash, so any
/// element's random number is computed directly from its index.
#[inline(always)]
pub fn hash(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stochastic-rounding threshold of element `index`: the top 24 bits of its hash as a
/// float in `[0, 1)` (exact in `f32`).
#[inline(always)]
pub fn threshold(seed: u64, index: u64) -> f32 {
    (hash(seed, index) >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// 2^23: from here on every `f32` is an integer.
const TWO23: f32 = 8_388_608.0;

/// Rounds to the nearest integer, ties to even, like `f32::round_ties_even`, with two IEEE
/// additions (`(|t| + 2^23) - 2^23` rounds `|t| < 2^23` in the default rounding mode) rather
/// than a libm call: the baseline x86-64 target has no rounding instruction, and a vector
/// kernel does the same additions.
#[inline(always)]
pub fn round_even(t: f32) -> f32 {
    let a = t.abs();
    if a < TWO23 {
        ((a + TWO23) - TWO23).copysign(t)
    } else {
        t
    }
}

/// `floor(a)` of a non-negative `a` (NaN stays NaN).
#[inline(always)]
pub fn floor_pos(a: f32) -> f32 {
    let r = round_even(a);
    if r > a {
        r - 1.0
    } else {
        r
    }
}

/// Rounds a non-negative magnitude up when its fractional part exceeds `u`.
#[inline(always)]
pub fn round_up_if(a: f32, u: f32) -> f32 {
    let f = floor_pos(a);
    if a - f > u {
        f + 1.0
    } else {
        f
    }
}

/// Rounds `t` to an integer-valued float: nearest-even, or stochastically with threshold
/// `u` (sign and magnitude are rounded separately, so the result is unbiased for both signs).
#[inline(always)]
pub fn round(t: f32, stochastic: Option<f32>) -> f32 {
    match stochastic {
        None => round_even(t),
        Some(u) => round_up_if(t.abs(), u).copysign(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_rounding_matches_std() {
        let mut x = 1u32;
        for i in 0..2_000_000u32 {
            x = x.wrapping_mul(747796405).wrapping_add(2891336453);
            let t = f32::from_bits(x);
            let t = if i % 2 == 0 {
                t
            } else {
                (i as f32 - 1e6) / 64.0
            };
            if t.is_nan() {
                assert!(round_even(t).is_nan());
                continue;
            }
            assert_eq!(
                round_even(t).to_bits(),
                t.round_ties_even().to_bits(),
                "{t}"
            );
            if t >= 0.0 {
                assert_eq!(floor_pos(t).to_bits(), t.floor().to_bits(), "{t}");
            }
        }
    }

    #[test]
    fn nearest_even_ties() {
        for (t, want) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, -0.0),
            (-1.5, -2.0),
        ] {
            assert_eq!(round(t, None), want);
        }
    }

    #[test]
    fn thresholds_are_uniform_and_reproducible() {
        let n = 1 << 16;
        let mut hist = [0u32; 16];
        for i in 0..n {
            let u = threshold(7, i);
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, threshold(7, i));
            hist[(u * 16.0) as usize] += 1;
        }
        for h in hist {
            assert!((h as f64 - 4096.0).abs() < 4.0 * 64.0, "{hist:?}");
        }
        assert_ne!(threshold(7, 0), threshold(8, 0));
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        for t in [0.3f32, -0.3, 2.75, -7.125, 1e-3] {
            let n = 200_000u64;
            let s: f64 = (0..n)
                .map(|i| f64::from(round(t, Some(threshold(1, i)))))
                .sum();
            let mean = s / n as f64;
            // The standard deviation of one draw is at most 1/2.
            assert!(
                (mean - f64::from(t)).abs() < 5.0 * 0.5 / (n as f64).sqrt(),
                "{t}: {mean}"
            );
        }
        assert_eq!(round(3.0, Some(0.0)), 3.0);
        assert_eq!(round(-3.0, Some(0.999)), -3.0);
    }
}
