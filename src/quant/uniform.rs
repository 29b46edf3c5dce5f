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
//!   encoder escapes non-finite elements (when asked to keep them), `|x / step| > 2^24`,
//!   elements whose reconstruction would break a maximum-error bound, and (the chunk coder,
//!   rounding to nearest) elements of direct symbols too rare in their chunk to be worth a
//!   slot in its rANS table.
//!
//! The kernels here are the scalar reference: plain loops over slices that a vector version
//! can reproduce bit for bit (the error sums use eight `f64` lanes, `i mod 8`, and for
//! float16 and bfloat16 rounded to nearest sixteen `f32` partial sums flushed into them every
//! 128 elements, all added in a fixed order: see [`encode_symbols`]).

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

/// A sum of squared errors in eight lanes (element `i` goes to lane `i mod 8`, directly or
/// through the `f32` partial sums of [`encode_symbols`]), added in a fixed order so that
/// every kernel gets the same total.
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

/// `1 / step`, or 0 for a zero step (whose group codes zeros).
#[inline(always)]
pub fn inverse(step: f32) -> f32 {
    if step > 0.0 {
        1.0 / step
    } else {
        0.0
    }
}

/// The step of each element of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step<'a> {
    /// One step for every element.
    One(f32),
    /// Element `i` uses step `i` (the slice is at least as long as the run).
    Each(&'a [f32]),
}

impl Step<'_> {
    #[inline(always)]
    pub fn at(&self, i: usize) -> f32 {
        match self {
            Step::One(s) => *s,
            Step::Each(s) => s[i],
        }
    }
}

/// Where a run of elements sits and how it is quantized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantArgs {
    pub dtype: DType,
    pub rounding: Rounding,
    /// Index in the tensor of the run's first element (for stochastic rounding).
    pub base: u64,
    /// Escape elements whose reconstruction errs by more than this (`INFINITY`: never).
    pub max_abs: f64,
    /// The error lane of the run's first element (element `i` goes to `(lane0 + i) mod 8`,
    /// or to partial sum `(lane0 + i) mod 16`: see [`encode_symbols`]).
    pub lane0: usize,
    /// The exponent `e` of the scale of the `f32` partial error sums (squares of `d * 2^-e`):
    /// [`err_exp`] of the run's largest step, so that the scaled errors are near 1 whatever
    /// the tensor's magnitude. Any value gives the same sums in every kernel (values outside
    /// `-126..=126` count as the nearest end).
    pub err_exp: i32,
}

/// Partial error sums of [`encode_symbols`] (element `i` of a run adds to partial
/// `(lane0 + i) mod ERR_PARTS`).
pub const ERR_PARTS: usize = 16;
/// The partial sums are flushed before every element whose lane `lane0 + i` is a multiple of
/// this (so each sums at most eight squares), and at the end of a run.
pub const ERR_FLUSH: usize = 128;

/// The [`QuantArgs::err_exp`] of a step: the binary exponent of `|step|` (`floor(log2)` of
/// a normal one), clamped to `-126..=126` (zero and subnormal steps give -126, infinite and
/// NaN ones 126).
pub fn err_exp(step: f32) -> i32 {
    (((step.to_bits() >> 23) & 0xff) as i32 - 127).clamp(-126, 126)
}

/// Whether [`encode_symbols`] sums the errors of `dtype` rounded with `rounding` in `f32`
/// partial sums: float16 and bfloat16 rounded to nearest, whose reconstruction `y` is zero or
/// within a factor of about two of `x`, so that `y - x` is exact in `f32`.
#[inline(always)]
pub fn partial_sums(dtype: DType, rounding: Rounding) -> bool {
    dtype != DType::F32 && rounding == Rounding::Nearest
}

/// Adds partial sum `l` (`l = 0..16`, in turn) to lane `l mod 8` of `err` as
/// `f64(partial) * 2^(2 err_exp)` (exact: a power of two within `f64`'s range) and clears it.
#[inline(always)]
pub fn flush_partials(err: &mut ErrSum, parts: &mut [f32; ERR_PARTS], err_exp: i32) {
    let inv2 = partial_unscale(err_exp);
    for (l, p) in parts.iter_mut().enumerate() {
        err.0[l & 7] += f64::from(*p) * inv2;
        *p = 0.0;
    }
}

/// `2^(2 err_exp)`, the factor of [`flush_partials`] (`err_exp` clamped to `-126..=126`).
#[inline(always)]
pub fn partial_unscale(err_exp: i32) -> f64 {
    let e = i64::from(err_exp.clamp(-126, 126));
    f64::from_bits(((1023 + 2 * e) as u64) << 52)
}

/// `2^-err_exp` in `f32` (`err_exp` clamped to `-126..=126`), the scale of the differences
/// summed in partial sums.
#[inline(always)]
pub fn partial_scale(err_exp: i32) -> f32 {
    f32::from_bits(((127 - err_exp.clamp(-126, 126)) as u32) << 23)
}

/// The quantization of one element `x` with `step` (and its [`inverse`]): `q` (or [`ESC_Q`]
/// for non-finite values and `|x / step| > 2^24`) and the reconstruction `y` in `f32` (NaN
/// for those escapes).
#[inline(always)]
pub fn quantize_one(dtype: DType, x: f32, step: f32, inv: f32, u: Option<f32>) -> (i32, f32) {
    let t = x * inv;
    if t.is_nan() || t.abs() > Q_LIMIT {
        return (ESC_Q, f32::NAN);
    }
    let r = rounding::round(t, u);
    // |r| <= 2^24, so the conversion is exact.
    (r as i32, convert::round_sat(dtype, r * step))
}

/// The symbol of `q` (not an escape) and, for a bucket symbol, its extra bits and their count.
#[inline(always)]
pub fn symbol_of(q: i32) -> (u16, u32, u32) {
    let z = zigzag(q);
    if z < DIRECT {
        (z as u16, 0, 0)
    } else {
        let w = z - DIRECT + 1;
        let k = 31 - w.leading_zeros();
        debug_assert!(k <= MAX_BUCKET);
        ((DIRECT + k) as u16, w - (1 << k), k)
    }
}

/// The scalar reference of the `uniform_encode` kernel (see [`crate::simd::Kernels`]):
/// quantizes the elements of `input` (little-endian `a.dtype` bytes) with `step`, writing
/// each element's symbol to `symbols` and appending the extra bits of bucket symbols to
/// `extra`; adds the squared reconstruction error of every element not escaped to `err`.
/// Returns the number of escapes.
///
/// Per element: `t = x * (1 / step)` in `f32`; non-finite `t` or `|t| > 2^24` is an escape;
/// otherwise `q = round(t)` (nearest-even or stochastic with the threshold of element
/// `a.base + i`), `y = dtype(f32(q) * step)`, and `d = f64(y) - f64(x)`; `|d| > a.max_abs`
/// is an escape too.
///
/// The squared errors: of float32 input, and of any input rounded stochastically, `d * d` is
/// added to lane `(a.lane0 + i) mod 8` of `err` in element order. Of float16 and bfloat16
/// rounded to nearest ([`partial_sums`]), where `d` is exact in `f32`, each goes through one
/// of sixteen `f32` partial sums: `s = f32(d) * 2^-a.err_exp` (in `f32`) is added to partial
/// `(a.lane0 + i) mod 16` by one fused multiply-add (`s * s + partial`); before every element
/// (escaped or not) whose `a.lane0 + i` is a multiple of [`ERR_FLUSH`], and at the end, the
/// partials are added to `err` by [`flush_partials`] (a flush of empty partials adds `+0`,
/// which changes no sum). Each partial sums at most eight squares, so its relative rounding
/// error stays below `2^-21` (the error-bounded encoder's margin is `2e-6` of the sum); the
/// vector kernels thereby add 16 squares with one `f32` multiply-add where the eight `f64`
/// sums took two widenings and two `f64` multiply-adds. The scale keeps the squares clear of
/// `f32`'s overflow and underflow whatever the tensor's magnitude.
pub fn encode_symbols(
    a: &QuantArgs,
    input: &[u8],
    step: Step,
    symbols: &mut [u16],
    extra: &mut BitWriter,
    err: &mut ErrSum,
) -> usize {
    let mut parts = [0.0f32; ERR_PARTS];
    let escapes = encode_symbols_partial(a, input, step, symbols, extra, err, &mut parts);
    flush_partials(err, &mut parts, a.err_exp);
    escapes
}

/// [`encode_symbols`] without the flush at the end (the partial sums stay in `parts`), for
/// the vector kernels' first and last elements.
pub(crate) fn encode_symbols_partial(
    a: &QuantArgs,
    input: &[u8],
    step: Step,
    symbols: &mut [u16],
    extra: &mut BitWriter,
    err: &mut ErrSum,
    parts: &mut [f32; ERR_PARTS],
) -> usize {
    let n = symbols.len();
    assert_eq!(input.len(), n * a.dtype.itemsize());
    if let Step::Each(s) = step {
        assert!(s.len() >= n);
    }
    let partial = partial_sums(a.dtype, a.rounding);
    let scale = partial_scale(a.err_exp);
    let mut escapes = 0;
    for (i, sym) in symbols.iter_mut().enumerate() {
        if partial && (a.lane0 + i).is_multiple_of(ERR_FLUSH) {
            flush_partials(err, parts, a.err_exp);
        }
        let x = convert::load(a.dtype, input, i);
        let st = step.at(i);
        let u = match a.rounding {
            Rounding::Nearest => None,
            Rounding::Stochastic { seed } => Some(rounding::threshold(seed, a.base + i as u64)),
        };
        let (q, y) = quantize_one(a.dtype, x, st, inverse(st), u);
        let d = f64::from(y) - f64::from(x);
        // NaN (an escape already) or beyond the bound: an escape, and no error counted.
        if q == ESC_Q || d.is_nan() || d.abs() > a.max_abs {
            escapes += 1;
            *sym = ESC;
            continue;
        }
        if partial {
            // Exact in f32 (see `partial_sums`).
            let s = (y - x) * scale;
            let p = &mut parts[(a.lane0 + i) % ERR_PARTS];
            *p = s.mul_add(s, *p);
        } else {
            err.0[(a.lane0 + i) & 7] += d * d;
        }
        let (s, bits, k) = symbol_of(q);
        if k > 0 {
            extra.put(bits, k);
        }
        *sym = s;
    }
    escapes
}

/// Reads the extra-bits stream of [`encode_symbols`], LSB first.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
    acc: u64,
    bits: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            at: 0,
            acc: 0,
            bits: 0,
        }
    }

    /// The next `k <= 32` bits.
    #[inline(always)]
    pub fn get(&mut self, k: u32) -> Result<u32> {
        while self.bits < k {
            ensure_frame!(
                self.at < self.bytes.len(),
                "extra bits of quantized values run out"
            );
            self.acc |= u64::from(self.bytes[self.at]) << self.bits;
            self.at += 1;
            self.bits += 8;
        }
        let v = (self.acc as u32) & ((1u64 << k) - 1) as u32;
        self.acc >>= k;
        self.bits -= k;
        Ok(v)
    }

    /// Checks that every byte was read and the padding bits are zero.
    pub fn finish(&self) -> Result<()> {
        ensure_frame!(
            self.at == self.bytes.len() && self.acc == 0,
            "extra bits of quantized values have unused or nonzero padding bits"
        );
        Ok(())
    }
}

/// `q` of a symbol that is neither direct nor an escape, reading its extra bits.
#[inline(always)]
pub fn bucket_q(s: u32, extra: &mut BitReader) -> Result<i32> {
    let k = s - DIRECT;
    ensure_frame!(
        k <= MAX_BUCKET,
        "quantizer symbol {s} is not in the alphabet"
    );
    let v = extra.get(k)?;
    Ok(unzigzag(DIRECT - 1 + (1 << k) + v))
}

/// The escaped elements of a chunk (their bytes, `isz` each, in element order), handed to
/// the decoder's escape symbols in turn.
#[derive(Debug, Clone)]
pub struct Escaped<'a> {
    bytes: &'a [u8],
    isz: usize,
    at: usize,
}

impl<'a> Escaped<'a> {
    pub fn new(bytes: &'a [u8], isz: usize) -> Self {
        Escaped { bytes, isz, at: 0 }
    }

    /// Writes the next escaped element over element `i` of `out`.
    #[inline(always)]
    pub fn put(&mut self, out: &mut [u8], i: usize) -> Result<()> {
        let (at, isz) = (self.at, self.isz);
        ensure_frame!(
            at + isz <= self.bytes.len(),
            "more escape symbols than escaped elements"
        );
        out[i * isz..(i + 1) * isz].copy_from_slice(&self.bytes[at..at + isz]);
        self.at = at + isz;
        Ok(())
    }

    /// Checks that every escaped element was used.
    pub fn finish(&self) -> Result<()> {
        ensure_frame!(
            self.at == self.bytes.len(),
            "fewer escape symbols than escaped elements"
        );
        Ok(())
    }
}

/// The scalar reference of the `uniform_decode` kernel: reconstructs the elements of
/// `symbols` with `step` into `out` (little-endian `dtype` bytes, `x̂ = dtype(f32(q) * step)`,
/// saturating), reading bucket symbols' extra bits from `extra`; an escape symbol's element
/// is the next of `escaped`, bit for bit.
pub fn decode_symbols(
    dtype: DType,
    symbols: &[u16],
    step: Step,
    extra: &mut BitReader,
    escaped: &mut Escaped,
    out: &mut [u8],
) -> Result<()> {
    let n = symbols.len();
    assert_eq!(out.len(), n * dtype.itemsize());
    if let Step::Each(s) = step {
        assert!(s.len() >= n);
    }
    for (i, &s) in symbols.iter().enumerate() {
        let s = u32::from(s);
        let v = if s < DIRECT {
            unzigzag(s) as f32 * step.at(i)
        } else if s == u32::from(ESC) {
            escaped.put(out, i)?;
            continue;
        } else {
            bucket_q(s, extra)? as f32 * step.at(i)
        };
        convert::store_bits(dtype, convert::to_bits_sat(dtype, v), out, i);
    }
    Ok(())
}

/// What a chunk's first pass of the error-bounded encoder finds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// `x^2` of the finite elements (as `f64`), element `i` in lane `i mod 8`.
    pub sumsq: ErrSum,
    /// Finite elements.
    pub finite: u64,
    /// Largest finite magnitude (0 when there is none).
    pub amax: f32,
    /// The first non-finite element: its index in the run and value.
    pub first_nonfinite: Option<(usize, f32)>,
}

/// The scalar reference of the `stats` kernel: [`Stats`] of little-endian `dtype` bytes.
pub fn stats(dtype: DType, input: &[u8]) -> Stats {
    let n = input.len() / dtype.itemsize();
    let mut st = Stats::default();
    for i in 0..n {
        let x = convert::load(dtype, input, i);
        if x.is_finite() {
            let v = f64::from(x);
            st.sumsq.0[i & 7] += v * v;
            st.finite += 1;
            st.amax = st.amax.max(x.abs());
        } else if st.first_nonfinite.is_none() {
            st.first_nonfinite = Some((i, x));
        }
    }
    st
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

/// The scalar reference of the `flagged` kernel: appends to `out`, in order, the index of
/// every symbol `v` with `lo <= v < hi` or `v == ESC` (`lo` and `hi` at most 2^15).
pub fn flagged(symbols: &[u16], lo: u16, hi: u16, out: &mut Vec<u32>) {
    flagged_from(symbols, 0, lo, hi, out);
}

/// [`flagged`] of `symbols[start..]` (the vector kernels' last symbols), with indices into
/// the whole of `symbols`.
pub(crate) fn flagged_from(symbols: &[u16], start: usize, lo: u16, hi: u16, out: &mut Vec<u32>) {
    for (i, &v) in symbols.iter().enumerate().skip(start) {
        if (lo <= v && v < hi) || v == ESC {
            out.push(i as u32);
        }
    }
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

    fn f32_bytes(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn args(dtype: DType, max_abs: f64, lane0: usize) -> QuantArgs {
        QuantArgs {
            dtype,
            rounding: Rounding::Nearest,
            base: 0,
            max_abs,
            lane0,
            err_exp: 0,
        }
    }

    #[test]
    fn partial_scales_are_powers_of_two_in_range() {
        for e in -300..300 {
            let c = e.clamp(-126, 126);
            assert_eq!(partial_scale(e), 2f32.powi(-c), "{e}");
            assert_eq!(partial_unscale(e), 2f64.powi(2 * c), "{e}");
        }
        assert_eq!(err_exp(0.3), -2);
        assert_eq!(err_exp(1.0), 0);
        assert_eq!(err_exp(0.0), -126);
        assert_eq!(err_exp(1e-40), -126);
        assert_eq!(err_exp(f32::MAX), 126);
        assert_eq!(err_exp(f32::INFINITY), 126);
    }

    /// The `f32` partial sums of float16 and bfloat16 errors, scaled by the step's exponent,
    /// agree with a plain `f64` sum to within their rounding (eight squares per partial) at
    /// magnitudes where the unscaled squares would overflow or underflow `f32`; every
    /// flush boundary is crossed (runs that start anywhere in a block of 128).
    #[test]
    fn partial_error_sums_hold_at_any_magnitude() {
        let cases = [
            (DType::BF16, [1e-30f32, 1e-3, 1.0, 1e30].as_slice()),
            (DType::F16, [1e-3f32, 1.0, 1e3].as_slice()),
        ];
        for (dtype, mags) in cases {
            for &mag in mags {
                let n = 1000;
                let input: Vec<u8> = (0..n)
                    .flat_map(|i| {
                        let x = (i as f32 * 0.37).sin() * mag;
                        match dtype {
                            DType::F16 => convert::f32_to_f16(x).to_le_bytes(),
                            _ => convert::f32_to_bf16(x).to_le_bytes(),
                        }
                    })
                    .collect();
                let step = mag * 0.013;
                for lane0 in [0, 5, 100, 127] {
                    let a = QuantArgs {
                        err_exp: err_exp(step),
                        ..args(dtype, f64::INFINITY, lane0)
                    };
                    let mut symbols = vec![0u16; n];
                    let mut extra = BitWriter::default();
                    let mut err = ErrSum::default();
                    let escapes = encode_symbols(
                        &a,
                        &input,
                        Step::One(step),
                        &mut symbols,
                        &mut extra,
                        &mut err,
                    );
                    assert_eq!(escapes, 0);
                    let want: f64 = (0..n)
                        .map(|i| {
                            let x = convert::load(dtype, &input, i);
                            let q = unzigzag(u32::from(symbols[i]));
                            let y = convert::round_sat(dtype, q as f32 * step);
                            (f64::from(y) - f64::from(x)).powi(2)
                        })
                        .sum();
                    assert!(want > 0.0);
                    let rel = (err.total() / want - 1.0).abs();
                    assert!(
                        rel < 1e-6,
                        "{dtype:?} {mag} {lane0}: {} vs {want}",
                        err.total()
                    );
                }
            }
        }
    }

    /// Encodes, then decodes the symbols back to `q` (`ESC_Q` for escapes).
    fn quantize(a: &QuantArgs, xs: &[f32], step: f32, err: &mut ErrSum) -> Vec<i32> {
        let input = f32_bytes(xs);
        let mut symbols = vec![0u16; xs.len()];
        let mut extra = BitWriter::default();
        encode_symbols(a, &input, Step::One(step), &mut symbols, &mut extra, err);
        extra.finish();
        let mut r = BitReader::new(&extra.bytes);
        let q = symbols
            .iter()
            .map(|&s| match u32::from(s) {
                s if s < DIRECT => unzigzag(s),
                s if s == u32::from(ESC) => ESC_Q,
                s => bucket_q(s, &mut r).unwrap(),
            })
            .collect();
        r.finish().unwrap();
        q
    }

    #[test]
    fn nearest_rounding_errs_at_most_half_a_step() {
        let xs: Vec<f32> = (0..10_000)
            .map(|i| (i as f32 * 0.37).sin() * 100.0)
            .collect();
        let step = 0.125;
        let mut err = ErrSum::default();
        let q = quantize(&args(DType::F32, f64::INFINITY, 0), &xs, step, &mut err);
        let mut sum = 0.0;
        for (&x, &v) in xs.iter().zip(&q) {
            let d = f64::from(v as f32 * step) - f64::from(x);
            assert!(d.abs() <= f64::from(step) / 2.0);
            sum += d * d;
        }
        assert!((err.total() - sum).abs() <= 1e-9 * sum);
        // Decoding reconstructs the same values.
        let symbols: Vec<u16> = q.iter().map(|&v| symbol_of(v).0).collect();
        let mut extra = BitWriter::default();
        for &v in &q {
            let (_, bits, k) = symbol_of(v);
            extra.put(bits, k);
        }
        extra.finish();
        let mut out = vec![0u8; 4 * xs.len()];
        let mut r = BitReader::new(&extra.bytes);
        let mut esc = Escaped::new(&[], 4);
        decode_symbols(
            DType::F32,
            &symbols,
            Step::One(step),
            &mut r,
            &mut esc,
            &mut out,
        )
        .unwrap();
        r.finish().unwrap();
        esc.finish().unwrap();
        for (o, &v) in out.chunks_exact(4).zip(&q) {
            assert_eq!(f32::from_le_bytes(o.try_into().unwrap()), v as f32 * step);
        }
    }

    #[test]
    fn bounds_escape_and_limits() {
        // Near 1.0, bfloat16's spacing (2^-7) exceeds twice the bound: some escape.
        let xs: Vec<f32> = (0..256)
            .map(|i| convert::bf16_to_f32(0x3f80 + i as u16))
            .chain([f32::NAN, f32::INFINITY, 1e30])
            .collect();
        let input: Vec<u8> = xs
            .iter()
            .flat_map(|&x| convert::f32_to_bf16(x).to_le_bytes())
            .collect();
        let a = args(DType::BF16, 0.004, 3);
        let mut symbols = vec![0u16; xs.len()];
        let mut extra = BitWriter::default();
        let mut err = ErrSum::default();
        let escapes = encode_symbols(
            &a,
            &input,
            Step::One(0.008),
            &mut symbols,
            &mut extra,
            &mut err,
        );
        for (&x, &s) in xs.iter().zip(&symbols) {
            if u32::from(s) < DIRECT {
                let y = convert::round_sat(DType::BF16, unzigzag(u32::from(s)) as f32 * 0.008);
                assert!((f64::from(y) - f64::from(x)).abs() <= 0.004);
            }
        }
        assert!(symbols[..256].contains(&ESC));
        assert_eq!(&symbols[256..], &[ESC; 3]);
        assert_eq!(escapes, symbols.iter().filter(|&&s| s == ESC).count());
        assert_eq!(extra_and_escapes(&symbols).1, escapes);
        // A zero step codes zeros.
        let mut err = ErrSum::default();
        let q = quantize(&args(DType::F32, 0.004, 0), &[0.0, -0.0], 0.0, &mut err);
        assert_eq!(q, vec![0, 0]);
    }

    #[test]
    fn stats_skip_nonfinite_values() {
        let xs = [1.0f32, -3.0, f32::NAN, 2.0, f32::NEG_INFINITY];
        let st = stats(DType::F32, &f32_bytes(&xs));
        assert_eq!(st.finite, 3);
        assert_eq!(st.amax, 3.0);
        assert_eq!(st.sumsq.total(), 14.0);
        assert_eq!(st.sumsq.0[3], 4.0);
        assert!(matches!(st.first_nonfinite, Some((2, v)) if v.is_nan()));
    }

    proptest! {
        #[test]
        fn symbols_round_trip(raw in proptest::collection::vec(any::<i32>(), 0..2000), shift in 0u32..31) {
            let q: Vec<i32> = raw
                .iter()
                .map(|&v| (v >> shift).clamp(-(1 << 24), 1 << 24))
                .collect();
            // Every q is an exact multiple of a step of 1 in f32.
            let xs: Vec<f32> = q.iter().map(|&v| v as f32).collect();
            let mut err = ErrSum::default();
            let back = quantize(&args(DType::F32, f64::INFINITY, 0), &xs, 1.0, &mut err);
            prop_assert_eq!(err.total(), 0.0);
            prop_assert_eq!(back, q);
        }
    }
}
