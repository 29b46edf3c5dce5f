//! Projection of the rows of a matrix (tokens x channels) onto an orthonormal channel basis,
//! and back.
//!
//! A tensor's last dimension is its channels, `d`; every other index makes a row. A basis is
//! `k <= d` orthonormal vectors of length `d` (rows of a `k x d` matrix `W`); a row `x` has
//! the coefficients `c = W x` and is rebuilt as `x̂ = W^T ĉ`.
//!
//! [`reconstruct_rows`] is normative (decoders and the encoder's check must agree bit for
//! bit): `f32` arithmetic in a fixed order, no fused multiply-add. The other kernels are the
//! encoder's own business.

use super::linalg;
use crate::quant::convert;

/// Largest channel count (the last dimension) a projection stage codes. Decoding costs up to
/// `k <= d` multiply-adds per element, and a basis `d^2` numbers.
pub const MAX_CHANNELS: usize = 1024;

/// Rows of `xs` (`rows x d`) to accumulate at once in `f32` before adding into `f64`.
const MOMENT_BLOCK: usize = 64;
/// Rows of the output accumulated together: a block of rows goes through a tile of
/// `MOMENT_TILE x d` sums (64 KiB at 1024 channels) while it stays in the cache.
const MOMENT_TILE: usize = 16;

/// The second-moment matrix `sum x x^T` (`d x d`, both triangles) of the rows of `xs` at
/// the indices `rows`, in that order, on `threads` threads (0: all; the same bits for any
/// count).
///
/// Each sum of the upper triangle adds the products of a block of `MOMENT_BLOCK` rows in
/// `f32`, in row order (skipping the rows whose `x_a` is zero), then goes into its `f64`
/// total. The sums are taken a tile of `MOMENT_TILE` output rows at a time, each tile on its
/// own (the same operations in the same order for every element: at 1024 channels, 0.74 s
/// for 8192 rows on one core when each input row went over the whole `4 MiB` of sums).
pub fn second_moments(xs: &[f32], d: usize, rows: &[usize], threads: usize) -> Vec<f64> {
    let tiles = crate::pipeline::threads::map(threads, d.div_ceil(MOMENT_TILE), |t| {
        moments_tile(xs, d, rows, t * MOMENT_TILE)
    });
    let mut total = vec![0.0f64; d * d];
    for (t, sums) in tiles.iter().enumerate() {
        let at = t * MOMENT_TILE * d;
        total[at..at + sums.len()].copy_from_slice(sums);
    }
    for a in 0..d {
        for b in 0..a {
            total[a * d + b] = total[b * d + a];
        }
    }
    total
}

wide_or_plain! {
    /// Rows `a0..a0 + MOMENT_TILE` (at most `d`) of [`second_moments`]' upper triangle
    /// (`d` sums each, zero below the diagonal).
    fn moments_tile(xs: &[f32], d: usize, rows: &[usize], a0: usize) -> Vec<f64> =
        moments_tile_in_order;
}

#[inline(always)]
fn moments_tile_in_order(xs: &[f32], d: usize, rows: &[usize], a0: usize) -> Vec<f64> {
    let a1 = (a0 + MOMENT_TILE).min(d);
    let mut total = vec![0.0f64; (a1 - a0) * d];
    let mut tile = vec![0.0f32; (a1 - a0) * d];
    for block in rows.chunks(MOMENT_BLOCK) {
        for &i in block {
            let x = &xs[i * d..(i + 1) * d];
            for a in a0..a1 {
                let xa = x[a];
                if xa == 0.0 {
                    continue;
                }
                let acc = &mut tile[(a - a0) * d + a..(a - a0 + 1) * d];
                for (s, &xb) in acc.iter_mut().zip(&x[a..]) {
                    *s += xa * xb;
                }
            }
        }
        for a in a0..a1 {
            let at = (a - a0) * d;
            let sums = &mut tile[at + a..at + d];
            for (t, b) in total[at + a..at + d].iter_mut().zip(sums) {
                *t += f64::from(*b);
                *b = 0.0;
            }
        }
    }
    total
}

wide_or_plain! {
    /// Coefficients of rows: `out[i * k + j] = sum_t xs[i * d + t] * wt[t * k + j]`, where
    /// `wt` is the transposed basis (`d x k`).
    pub fn project_rows(xs: &[f32], d: usize, wt: &[f32], k: usize, out: &mut [f32]) =
        project_rows_in_order;
}

#[inline(always)]
fn project_rows_in_order(xs: &[f32], d: usize, wt: &[f32], k: usize, out: &mut [f32]) {
    debug_assert_eq!(wt.len(), d * k);
    let rows = xs.len() / d.max(1);
    debug_assert_eq!(out.len(), rows * k);
    for (x, o) in xs.chunks_exact(d).zip(out.chunks_exact_mut(k)) {
        o.fill(0.0);
        for (t, &xt) in x.iter().enumerate() {
            if xt == 0.0 {
                continue;
            }
            for (c, &w) in o.iter_mut().zip(&wt[t * k..(t + 1) * k]) {
                *c += xt * w;
            }
        }
    }
}

wide_or_plain! {
    /// The normative reconstruction: for each row, `acc = 0`, then for every coefficient
    /// `j = 0..k` whose integer `q` is not zero, `c = f32(q) * step` and `acc[t] = acc[t] +
    /// c * w[j * d + t]` for every channel `t` (one `f32` product and one `f32` sum each),
    /// then the row is `acc` rounded to `dtype` (saturating), written as `f32` values into
    /// `out`. `w = None` is the identity basis (`k = d`): the row is `f32(q) * step`.
    pub fn reconstruct_rows(
        q: &[i32],
        k: usize,
        step: f32,
        w: Option<&[f32]>,
        d: usize,
        dtype: crate::DType,
        out: &mut [f32],
    ) = reconstruct_rows_in_order;
}

#[inline(always)]
fn reconstruct_rows_in_order(
    q: &[i32],
    k: usize,
    step: f32,
    w: Option<&[f32]>,
    d: usize,
    dtype: crate::DType,
    out: &mut [f32],
) {
    let rows = q.len() / k.max(1);
    debug_assert_eq!(out.len(), rows * d);
    match w {
        None => {
            debug_assert_eq!(k, d);
            for (o, &v) in out.iter_mut().zip(q) {
                *o = if v == 0 {
                    0.0
                } else {
                    convert::round_sat(dtype, v as f32 * step)
                };
            }
        }
        Some(w) => {
            debug_assert_eq!(w.len(), k * d);
            for (qr, acc) in q.chunks_exact(k).zip(out.chunks_exact_mut(d)) {
                acc.fill(0.0);
                for (j, &v) in qr.iter().enumerate() {
                    if v == 0 {
                        continue;
                    }
                    let c = v as f32 * step;
                    for (a, &wv) in acc.iter_mut().zip(&w[j * d..(j + 1) * d]) {
                        *a += c * wv;
                    }
                }
                for a in acc.iter_mut() {
                    *a = convert::round_sat(dtype, *a);
                }
            }
        }
    }
}

/// The basis a decoder uses, from its quantized form: vector `j` is `f32(codes[t * k + j]) *
/// steps[j]` for `t = 0..d` (the codes are stored channel-major, `d x k`), made orthonormal
/// by [`linalg::gram_schmidt`] in `f64` (a vector in the span of the earlier ones becomes
/// zero), then rounded to `f32`. Returns `W` (`k x d`, row-major) and, for each vector, the
/// share of its norm that Gram-Schmidt kept.
pub fn basis_from_codes(codes: &[i32], steps: &[f32], d: usize, k: usize) -> (Vec<f32>, Vec<f64>) {
    debug_assert!(codes.len() == d * k && steps.len() == k);
    let mut v = vec![0.0f64; k * d];
    for t in 0..d {
        for j in 0..k {
            v[j * d + t] = f64::from(codes[t * k + j] as f32 * steps[j]);
        }
    }
    let kept = linalg::gram_schmidt(&mut v, k, d);
    (v.iter().map(|&x| x as f32).collect(), kept)
}

/// `W` (`k x d`) transposed into `d x k`.
pub fn transpose_f32(w: &[f32], k: usize, d: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; w.len()];
    for j in 0..k {
        for i in 0..d {
            t[i * k + j] = w[j * d + i];
        }
    }
    t
}

/// Reverse water-filling over the variances `lambda` for a total distortion `dist` (per
/// vector, the sum over components): the water level `theta` with
/// `sum min(theta, lambda_i) = dist`, and the Gaussian rate `sum max(0, log2(lambda_i /
/// theta) / 2)` in bits per vector. `dist` at or above `sum lambda` gives rate 0.
pub fn water_fill(lambda: &[f64], dist: f64) -> (f64, f64) {
    let total: f64 = lambda.iter().map(|l| l.max(0.0)).sum();
    if dist >= total || lambda.is_empty() {
        return (lambda.iter().fold(0.0f64, |m, &l| m.max(l)), 0.0);
    }
    let (mut lo, mut hi) = (0.0f64, lambda.iter().fold(0.0f64, |m, &l| m.max(l)));
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        let s: f64 = lambda.iter().map(|&l| l.max(0.0).min(mid)).sum();
        if s > dist {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let theta = 0.5 * (lo + hi);
    let rate = lambda
        .iter()
        .filter(|&&l| l > theta)
        .map(|&l| 0.5 * (l / theta).log2())
        .sum();
    (theta, rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn project_and_reconstruct_with_an_orthonormal_basis() {
        let d = 5;
        let mut b: Vec<f64> = (0..d * d)
            .map(|i| ((i * 7919 + i * i * 104729) % 1013) as f64 - 506.0)
            .collect();
        let kept = linalg::gram_schmidt(&mut b, d, d);
        assert!(kept.iter().all(|&k| k > 0.01));
        let w: Vec<f32> = b.iter().map(|&x| x as f32).collect();
        let xs: Vec<f32> = (0..3 * d).map(|i| (i as f32 * 0.3).sin()).collect();
        let mut c = vec![0.0f32; 3 * d];
        project_rows(&xs, d, &transpose_f32(&w, d, d), d, &mut c);
        let step = 1e-4f32;
        let q: Vec<i32> = c.iter().map(|&v| (v / step).round() as i32).collect();
        let mut y = vec![0.0f32; 3 * d];
        reconstruct_rows(&q, d, step, Some(&w), d, DType::F32, &mut y);
        for (a, b) in xs.iter().zip(&y) {
            assert!((a - b).abs() < 1e-3, "{a} {b}");
        }
        // The identity basis needs no matrix.
        let mut z = vec![0.0f32; 3 * d];
        reconstruct_rows(&q, d, step, None, d, DType::BF16, &mut z);
        assert_eq!(z[1], convert::round_sat(DType::BF16, q[1] as f32 * step));
    }

    /// The AVX2 build of the projection and of the normative reconstruction (see
    /// `linalg::wide`) gives the bits of the plain one, for every output dtype.
    #[test]
    fn every_build_of_the_projection_gives_the_same_bits() {
        let (rows, d, k) = (9, 37, 11);
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        let w: Vec<f32> = (0..k * d)
            .map(|_| (next() >> 40) as f32 / 16_777_216.0 - 0.5)
            .collect();
        let xs: Vec<f32> = (0..rows * d)
            .map(|i| {
                if i % 5 == 0 {
                    0.0
                } else {
                    (next() >> 40) as f32 / 1e4 - 800.0
                }
            })
            .collect();
        let q: Vec<i32> = (0..rows * k)
            .map(|i| {
                if i % 3 == 0 {
                    0
                } else {
                    (next() % 2001) as i32 - 1000
                }
            })
            .collect();
        let wt = transpose_f32(&w, k, d);
        let (mut c1, mut c2) = (vec![0.0f32; rows * k], vec![0.0f32; rows * k]);
        project_rows(&xs, d, &wt, k, &mut c1);
        project_rows_in_order(&xs, d, &wt, k, &mut c2);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&c1), bits(&c2));
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (w, k) in [(Some(&w[..]), k), (None, d)] {
                let q = &q[..rows * k.min(11)];
                let q: Vec<i32> = q.iter().cycle().take(rows * k).copied().collect();
                let (mut y1, mut y2) = (vec![0.0f32; rows * d], vec![0.0f32; rows * d]);
                reconstruct_rows(&q, k, 3e-3, w, d, dtype, &mut y1);
                reconstruct_rows_in_order(&q, k, 3e-3, w, d, dtype, &mut y2);
                assert_eq!(bits(&y1), bits(&y2), "{dtype:?} {}", w.is_some());
            }
        }
    }

    #[test]
    fn second_moments_match_a_direct_sum() {
        let d = 7;
        let xs: Vec<f32> = (0..200 * d).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
        let s = second_moments(&xs, d, &(0..200).collect::<Vec<_>>(), 1);
        for a in 0..d {
            for b in 0..d {
                let want: f64 = (0..200)
                    .map(|i| f64::from(xs[i * d + a]) * f64::from(xs[i * d + b]))
                    .sum();
                assert_eq!(s[a * d + b], want);
            }
        }
    }

    /// Every sum, bit for bit, as the doc defines it (the frame basis depends on it): per
    /// block of rows an `f32` sum in row order, skipping rows whose `x_a` is zero, into an
    /// `f64` total; across tiles, blocks and a partial last block.
    #[test]
    fn second_moments_follow_their_definition_bit_for_bit() {
        let (n, d) = (2 * MOMENT_BLOCK + 9, 2 * MOMENT_TILE + 5);
        let mut r = 0x2545_f491_4f6c_dd1du64;
        let xs: Vec<f32> = (0..n * d)
            .map(|i| {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                let v = (r >> 40) as f32 / 16_777_216.0 - 0.5;
                if i % 7 == 0 {
                    0.0
                } else {
                    v * 1e3
                }
            })
            .collect();
        let picked: Vec<usize> = (0..n).filter(|i| i % 3 != 1).collect();
        let s = second_moments(&xs, d, &picked, 1);
        // Any thread count, and every build (see `linalg::wide`), gives these bits.
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for threads in [0, 2, 3] {
            let t = second_moments(&xs, d, &picked, threads);
            assert_eq!(bits(&t), bits(&s), "{threads} threads");
        }
        for a0 in (0..d).step_by(MOMENT_TILE) {
            let plain = moments_tile_in_order(&xs, d, &picked, a0);
            assert_eq!(bits(&moments_tile(&xs, d, &picked, a0)), bits(&plain));
        }
        for a in 0..d {
            for b in a..d {
                let mut total = 0.0f64;
                for block in picked.chunks(MOMENT_BLOCK) {
                    let mut sum = 0.0f32;
                    for &i in block.iter().filter(|&&i| xs[i * d + a] != 0.0) {
                        sum += xs[i * d + a] * xs[i * d + b];
                    }
                    total += f64::from(sum);
                }
                assert_eq!(s[a * d + b].to_bits(), total.to_bits(), "{a} {b}");
                assert_eq!(s[b * d + a].to_bits(), total.to_bits(), "{b} {a}");
            }
        }
    }

    #[test]
    fn water_filling() {
        let (theta, rate) = water_fill(&[4.0, 1.0, 0.25], 0.75);
        assert!((theta - 0.25).abs() < 1e-9);
        assert!((rate - (0.5 * 16f64.log2() + 0.5 * 4f64.log2())).abs() < 1e-6);
        assert_eq!(water_fill(&[1.0], 2.0).1, 0.0);
    }
}
