//! The error-bounded uniform quantizer: `q = round(x / step)`, reconstructed as
//! `x̂ = dtype(f32(q) * step)` (one `f32` multiplication, then nearest-even rounding to the
//! tensor's dtype, saturating), and the mapping of `q` to entropy-coder symbols.
//!
//! Symbols (an alphabet of [`ALPHABET`] for the rANS coder): with `z = zigzag(q)`
//! (`0, -1, 1, -2, ...` -> `0, 1, 2, 3, ...`),
//!
//! * `z < DIRECT`: the symbol is `z` itself (`-240 <= q <= 239`);
//! * otherwise `w = z - DIRECT + 1` and the symbol is `DIRECT + k` with `k = floor(log2 w)`;
//!   the low `k` bits of `w` follow in the extra-bits stream (LSB first);
//! * [`ESC`]: the element is carried exactly (its original bits are stored apart). The
//!   encoder escapes non-finite elements (when asked to keep them), `|x / step| > 2^24`, and
//!   elements whose reconstruction would break a maximum-error bound.
//!
//! The kernels here are the scalar reference: plain loops over slices that a vector version
//! can reproduce bit for bit (the error sums use eight lanes, `i mod 8`, added in a fixed
//! order).

use super::convert;
use super::rounding::{self, Rounding};
use crate::dtype::DType;
use crate::error::{ensure_frame, Result};

/// Symbols below this code `zigzag(q)` directly.
pub const DIRECT: u32 = 480;
/// Largest bucket `k` (`|q| <= 2^24` gives `w < 2^25`).
pub const MAX_BUCKET: u32 = 24;
/// The escape symbol.
pub const ESC: u16 = (DIRECT + MAX_BUCKET + 1) as u16;
/// Alphabet size of the symbols.
pub const ALPHABET: usize = ESC as usize + 1;
/// Largest `|x / step|` coded as a symbol; beyond it elements are escaped.
pub const Q_LIMIT: f32 = 16_777_216.0;
/// `q` of an escaped element.
pub const ESC_Q: i32 = i32::MIN;

/// A sum of squared errors in eight lanes (element `i` goes to lane `i mod 8`), added in a
/// fixed order so that every kernel gets the same total.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrSum(pub [f64; 8]);

impl ErrSum {
    pub fn total(&self) -> f64 {
        let s = &self.0;
        ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
    }
}

/// What an encoder checks per element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Check {
    pub dtype: DType,
    /// Escape elements whose reconstruction errs by more than this (`INFINITY`: never).
    pub max_abs: f64,
}

#[inline(always)]
fn inverse(step: f32) -> f32 {
    if step > 0.0 {
        1.0 / step
    } else {
        0.0
    }
}

/// The loop of [`quantize_run`] and [`quantize_steps`]: `steps(i)` gives element `i`'s step
/// and its reciprocal. Errors go to lane `(lane0 + i) mod 8`, in element order.
///
/// Tiles of 256 elements go through two simple passes, which the compiler can vectorize: in
/// `f32`, `q = round(x / step)` and the reconstruction `y`; in `f64`, the error `y - x`, the
/// escapes it calls for, and the sums.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn quantize_loop(
    xs: &[f32],
    steps: impl Fn(usize) -> (f32, f32),
    threshold: impl Fn(usize) -> Option<f32>,
    max_abs: f64,
    round_dtype: impl Fn(f32) -> f32 + Copy,
    q: &mut [i32],
    err: &mut ErrSum,
    lane0: usize,
) {
    const TILE: usize = 256;
    let n = xs.len().min(q.len());
    let mut ys = [0f32; TILE];
    let mut start = 0;
    while start < n {
        let len = TILE.min(n - start);
        let (xt, qt) = (&xs[start..start + len], &mut q[start..start + len]);
        for (j, ((&x, o), y)) in xt.iter().zip(qt.iter_mut()).zip(&mut ys).enumerate() {
            let (step, inv) = steps(start + j);
            let t = x * inv;
            // Non-finite x, or beyond the symbol range: an escape (y = NaN marks it).
            let bad = t.is_nan() || t.abs() > Q_LIMIT;
            let r = rounding::round(if bad { 0.0 } else { t }, threshold(start + j));
            *y = if bad { f32::NAN } else { round_dtype(r * step) };
            // |r| <= 2^24, so the conversion is exact.
            *o = if bad { ESC_Q } else { r as i32 };
        }
        let mut one = |j: usize| {
            let d = f64::from(ys[j]) - f64::from(xt[j]);
            // NaN (an escape already) or beyond the bound: no error counted.
            if d.is_nan() || d.abs() > max_abs {
                qt[j] = ESC_Q;
                0.0
            } else {
                d * d
            }
        };
        // Align to lane 0, then whole groups of eight with fixed lanes.
        let l0 = lane0 + start;
        let head = ((8 - l0 % 8) % 8).min(len);
        for j in 0..head {
            err.0[(l0 + j) & 7] += one(j);
        }
        let body = head + (len - head) / 8 * 8;
        let mut j = head;
        while j < body {
            for (k, a) in err.0.iter_mut().enumerate() {
                *a += one(j + k);
            }
            j += 8;
        }
        for j in body..len {
            err.0[(l0 + j) & 7] += one(j);
        }
        start += len;
    }
}

/// Runs `quantize_loop` with the dtype's rounding and the rounding mode fixed per loop.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn quantize_dispatch(
    xs: &[f32],
    steps: impl Fn(usize) -> (f32, f32) + Copy,
    rounding: Rounding,
    base: u64,
    check: &Check,
    q: &mut [i32],
    err: &mut ErrSum,
    lane0: usize,
) {
    let m = check.max_abs;
    macro_rules! go {
        ($dt:expr) => {
            match rounding {
                Rounding::Nearest => quantize_loop(
                    xs,
                    steps,
                    |_| None,
                    m,
                    |v| convert::round_sat($dt, v),
                    q,
                    err,
                    lane0,
                ),
                Rounding::Stochastic { seed } => quantize_loop(
                    xs,
                    steps,
                    |i| Some(rounding::threshold(seed, base + i as u64)),
                    m,
                    |v| convert::round_sat($dt, v),
                    q,
                    err,
                    lane0,
                ),
            }
        };
    }
    match check.dtype {
        DType::F32 => go!(DType::F32),
        DType::F16 => go!(DType::F16),
        DType::BF16 => go!(DType::BF16),
    }
}

/// Quantizes `xs` (elements `base..` of the tensor; `lane0` is the lane of `xs[0]`) with
/// one step, writing `q` and adding the squared reconstruction errors of the elements that
/// are not escaped to `err`.
#[allow(clippy::too_many_arguments)]
pub fn quantize_run(
    xs: &[f32],
    step: f32,
    rounding: Rounding,
    base: u64,
    check: &Check,
    q: &mut [i32],
    err: &mut ErrSum,
    lane0: usize,
) {
    debug_assert_eq!(xs.len(), q.len());
    let inv = inverse(step);
    quantize_dispatch(xs, |_| (step, inv), rounding, base, check, q, err, lane0);
}

/// [`quantize_run`] with a step per element (`steps[i]`).
#[allow(clippy::too_many_arguments)]
pub fn quantize_steps(
    xs: &[f32],
    steps: &[f32],
    rounding: Rounding,
    base: u64,
    check: &Check,
    q: &mut [i32],
    err: &mut ErrSum,
    lane0: usize,
) {
    debug_assert!(xs.len() == q.len() && xs.len() <= steps.len());
    quantize_dispatch(
        xs,
        |i| (steps[i], inverse(steps[i])),
        rounding,
        base,
        check,
        q,
        err,
        lane0,
    );
}

/// Reconstructs `q` with one step as `f32` values (`f32(q) * step`; escaped elements get 0:
/// the caller writes them).
pub fn dequantize_run(q: &[i32], step: f32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(q) {
        *o = if v == ESC_Q { 0.0 } else { v as f32 * step };
    }
}

/// [`dequantize_run`] with a step per element.
pub fn dequantize_steps(q: &[i32], steps: &[f32], out: &mut [f32]) {
    for ((o, &v), &step) in out.iter_mut().zip(q).zip(steps) {
        *o = if v == ESC_Q { 0.0 } else { v as f32 * step };
    }
}

#[inline(always)]
pub fn zigzag(q: i32) -> u32 {
    ((q << 1) ^ (q >> 31)) as u32
}

#[inline(always)]
pub fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

/// An LSB-first bit stream writer.
#[derive(Debug, Default)]
pub struct BitWriter {
    pub bytes: Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.acc = 0;
        self.bits = 0;
    }

    /// Appends the low `n <= 32` bits of `v`.
    #[inline(always)]
    pub fn put(&mut self, v: u32, n: u32) {
        self.acc |= u64::from(v) << self.bits;
        self.bits += n;
        while self.bits >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.bits -= 8;
        }
    }

    /// Pads with zero bits to a whole byte.
    pub fn finish(&mut self) {
        if self.bits > 0 {
            self.bytes.push(self.acc as u8);
            self.acc = 0;
            self.bits = 0;
        }
    }
}

/// Maps `q` to symbols (counting them into `counts`, which must be [`ALPHABET`] long) and
/// appends the extra bits to `extra` (not finished). Returns the number of escapes.
pub fn symbolize(
    q: &[i32],
    symbols: &mut [u16],
    counts: &mut [u32],
    extra: &mut BitWriter,
) -> usize {
    debug_assert_eq!(q.len(), symbols.len());
    let mut escapes = 0;
    for (s, &v) in symbols.iter_mut().zip(q) {
        let sym = if v == ESC_Q {
            escapes += 1;
            ESC
        } else {
            let z = zigzag(v);
            if z < DIRECT {
                z as u16
            } else {
                let w = z - DIRECT + 1;
                let k = 31 - w.leading_zeros();
                debug_assert!(k <= MAX_BUCKET);
                extra.put(w - (1 << k), k);
                (DIRECT + k) as u16
            }
        };
        counts[sym as usize] += 1;
        *s = sym;
    }
    escapes
}

/// The extra bits and the escapes that `symbols` call for.
pub fn extra_and_escapes(symbols: &[u16]) -> (usize, usize) {
    let mut bits = 0usize;
    let mut escapes = 0usize;
    for &s in symbols {
        let s = u32::from(s);
        if s == u32::from(ESC) {
            escapes += 1;
        } else if s >= DIRECT {
            bits += (s - DIRECT) as usize;
        }
    }
    (bits, escapes)
}

/// Maps symbols back to `q` (escapes become [`ESC_Q`]), reading the extra bits from
/// `extra`, which must hold exactly the bits [`extra_and_escapes`] counts, padded with zero
/// bits to a whole byte.
pub fn desymbolize(symbols: &[u16], extra: &[u8], q: &mut [i32]) -> Result<()> {
    debug_assert_eq!(symbols.len(), q.len());
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut at = 0usize;
    for (o, &s) in q.iter_mut().zip(symbols) {
        let s = u32::from(s);
        *o = if s < DIRECT {
            unzigzag(s)
        } else if s == u32::from(ESC) {
            ESC_Q
        } else {
            let k = s - DIRECT;
            ensure_frame!(
                k <= MAX_BUCKET,
                "quantizer symbol {s} is not in the alphabet"
            );
            while bits < k {
                ensure_frame!(at < extra.len(), "quantizer extra bits run out");
                acc |= u64::from(extra[at]) << bits;
                at += 1;
                bits += 8;
            }
            let v = (acc as u32) & ((1u32 << k) - 1);
            acc >>= k;
            bits -= k;
            unzigzag(DIRECT - 1 + (1 << k) + v)
        };
    }
    ensure_frame!(
        at == extra.len() && acc == 0,
        "quantizer extra bits have unused or nonzero padding bits"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zigzag_round_trips() {
        for q in [
            0,
            1,
            -1,
            239,
            -240,
            240,
            1 << 24,
            -(1 << 24),
            i32::MAX,
            i32::MIN + 1,
        ] {
            assert_eq!(unzigzag(zigzag(q)), q);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(-240), 479);
        assert_eq!(zigzag(240), 480);
    }

    #[test]
    fn nearest_rounding_errs_at_most_half_a_step() {
        let xs: Vec<f32> = (0..10_000)
            .map(|i| (i as f32 * 0.37).sin() * 100.0)
            .collect();
        let step = 0.125;
        let mut q = vec![0; xs.len()];
        let mut err = ErrSum::default();
        let check = Check {
            dtype: DType::F32,
            max_abs: f64::INFINITY,
        };
        quantize_run(&xs, step, Rounding::Nearest, 0, &check, &mut q, &mut err, 0);
        let mut sum = 0.0;
        for (&x, &v) in xs.iter().zip(&q) {
            let d = f64::from(v as f32 * step) - f64::from(x);
            assert!(d.abs() <= f64::from(step) / 2.0);
            sum += d * d;
        }
        assert!((err.total() - sum).abs() <= 1e-9 * sum);
    }

    #[test]
    fn bounds_escape_and_limits() {
        let check = Check {
            dtype: DType::BF16,
            max_abs: 0.004,
        };
        // Near 1.0, bfloat16's spacing (2^-7) exceeds twice the bound: some escape.
        let xs: Vec<f32> = (0..256)
            .map(|i| convert::bf16_to_f32(0x3f80 + i as u16))
            .chain([f32::NAN, f32::INFINITY, 1e30])
            .collect();
        let mut q = vec![0; xs.len()];
        let mut err = ErrSum::default();
        quantize_run(
            &xs,
            0.008,
            Rounding::Nearest,
            0,
            &check,
            &mut q,
            &mut err,
            3,
        );
        for (&x, &v) in xs.iter().zip(&q) {
            if v != ESC_Q {
                let y = convert::round_sat(DType::BF16, v as f32 * 0.008);
                assert!((f64::from(y) - f64::from(x)).abs() <= 0.004);
            }
        }
        assert!(q[..256].contains(&ESC_Q));
        assert_eq!(&q[256..], &[ESC_Q; 3]);
        // A zero step codes zeros.
        let mut q = vec![7; 2];
        quantize_run(
            &[0.0, -0.0],
            0.0,
            Rounding::Nearest,
            0,
            &check,
            &mut q,
            &mut err,
            0,
        );
        assert_eq!(q, vec![0, 0]);
    }

    proptest! {
        #[test]
        fn symbols_round_trip(raw in proptest::collection::vec(any::<i32>(), 0..2000), shift in 0u32..31) {
            let q: Vec<i32> = raw
                .iter()
                .map(|&v| if v % 17 == 0 { ESC_Q } else { (v >> shift).clamp(-(1 << 24), 1 << 24) })
                .collect();
            let mut symbols = vec![0u16; q.len()];
            let mut counts = vec![0u32; ALPHABET];
            let mut extra = BitWriter::default();
            let escapes = symbolize(&q, &mut symbols, &mut counts, &mut extra);
            extra.finish();
            let (bits, esc2) = extra_and_escapes(&symbols);
            prop_assert_eq!(escapes, esc2);
            prop_assert_eq!(bits.div_ceil(8), extra.bytes.len());
            prop_assert!(symbols.iter().all(|&s| (s as usize) < ALPHABET));
            let mut back = vec![0i32; q.len()];
            desymbolize(&symbols, &extra.bytes, &mut back).unwrap();
            prop_assert_eq!(back, q);
        }
    }
}
