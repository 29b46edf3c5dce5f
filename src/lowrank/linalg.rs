//! Dense linear algebra in `f64` with a fixed order of operations.
//!
//! Everything here is plain code: IEEE additions, multiplications, divisions and square
//! roots, each correctly rounded, in an order fixed by the loops (Rust never fuses a
//! multiply and an add, and never reassociates floating-point sums), no threads and no libm
//! calls (`hypot`, `pow`, ... differ between platforms). So the results are the same bits on
//! every machine, which is what keeps the two ends of a shared-basis session in lockstep.
//! (Where the compiler puts independent operations into vectors, as it may wider ones in the
//! AVX2 build (`wide`), each lane still does the same operation.) The loops keep the
//! procedures' order of operations but not their order of memory accesses: see `tred2`.
//!
//! Matrices are row-major `Vec<f64>` of `n * n` (or `rows * cols`) elements.

/// `sqrt(a^2 + b^2)` without undue overflow, from square root and division only.
#[inline(always)]
pub fn hypot(a: f64, b: f64) -> f64 {
    let (a, b) = (a.abs(), b.abs());
    let (m, s) = if a > b { (a, b) } else { (b, a) };
    if m == 0.0 {
        return 0.0;
    }
    let r = s / m;
    m * (1.0 + r * r).sqrt()
}

/// The sum of `a[i] * b[i]` in index order.
#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// Eigenvalues and eigenvectors of a symmetric matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SymEig {
    /// Eigenvalues, largest first.
    pub values: Vec<f64>,
    /// Eigenvectors as rows (`n * n`, row `i` belongs to `values[i]`), orthonormal, each
    /// with its largest-magnitude component positive.
    pub vectors: Vec<f64>,
}

/// Largest number of QL iterations spent on one eigenvalue (the method converges in two or
/// three; the cap only keeps a matrix of NaNs from looping).
const MAX_QL_ITERATIONS: usize = 64;

/// Whether the loops here may run compiled for AVX2 (x86-64 cores that have it, unless
/// `IOTA_CODEC_SIMD=scalar`): the same IEEE operations in the same order, since Rust never
/// fuses a multiply and an add or reorders a sum, on vectors of four `f64` (eight `f32`)
/// where the compiler vectorizes, instead of SSE2's two (four).
#[cfg(target_arch = "x86_64")]
pub(crate) fn wide() -> bool {
    use crate::simd::{kernels, Level};
    matches!(kernels().level, Level::Avx2 | Level::Avx512) && is_x86_feature_detected!("avx2")
}

wide_or_plain! {
    /// The eigendecomposition of the symmetric `n x n` matrix `a` (only its lower triangle
    /// is read): Householder reduction to tridiagonal form, then the implicit QL method (the
    /// EISPACK `tred2`/`tql2` procedures, as in JAMA).
    pub fn sym_eig(a: &[f64], n: usize) -> SymEig = sym_eig_in_order;
}

#[inline(always)]
fn sym_eig_in_order(a: &[f64], n: usize) -> SymEig {
    assert_eq!(a.len(), n * n);
    if n == 0 {
        return SymEig {
            values: vec![],
            vectors: vec![],
        };
    }
    // v[i][j] = a[i][j] from the lower triangle, mirrored.
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            v[i * n + j] = a[i * n + j];
            v[j * n + i] = a[i * n + j];
        }
    }
    let mut d = vec![0.0f64; n];
    let mut e = vec![0.0f64; n];
    // `v` is symmetric, so it is its own transpose: tred2 works on the transpose, and tql2
    // rotates the rows of the result.
    let mut vt = v;
    tred2(&mut vt, &mut d, &mut e, n);
    tql2(&mut vt, &mut d, &mut e, n);
    // Largest first; equal eigenvalues keep their order.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| d[y].total_cmp(&d[x]).then(x.cmp(&y)));
    let mut values = Vec::with_capacity(n);
    let mut vectors = Vec::with_capacity(n * n);
    for &i in &order {
        values.push(d[i]);
        let row = &vt[i * n..(i + 1) * n];
        let mut big = 0usize;
        for (j, x) in row.iter().enumerate() {
            if x.abs() > row[big].abs() {
                big = j;
            }
        }
        let sign = if row[big] < 0.0 { -1.0 } else { 1.0 };
        vectors.extend(row.iter().map(|x| x * sign));
    }
    SymEig { values, vectors }
}

pub fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0f64; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

/// Householder tridiagonalization of the symmetric matrix whose transpose is `vt`
/// (overwritten by the transpose of the orthogonal transformation); `d` gets the diagonal,
/// `e` the subdiagonal in `e[1..]`.
///
/// The procedure's inner loops run down the columns of its matrix `v`: `at(i, j)`, element
/// `(i, j)` of `v`, is stored at row `j`, column `i` of `vt`, so they run along rows. (On
/// `v` itself, rows of 8 KiB apart at 1024 channels, they missed the cache at every element:
/// 7.7 s for 1024 channels.) The operations and their order are `tred2`'s.
#[inline(always)]
fn tred2(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    let at = |i: usize, j: usize| j * n + i;
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
    }
    for i in (1..n).rev() {
        let mut scale = 0.0f64;
        let mut h = 0.0f64;
        for dk in d.iter().take(i) {
            scale += dk.abs();
        }
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
                v[at(j, i)] = 0.0;
            }
        } else {
            for dk in d.iter_mut().take(i) {
                *dk /= scale;
                h += *dk * *dk;
            }
            let mut f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for ej in e.iter_mut().take(i) {
                *ej = 0.0;
            }
            // `e = A d` (the lower triangle of `v` by `d`), column by column, a few columns
            // at a time (see `multiply_columns`).
            for j in 0..i {
                v[at(j, i)] = d[j];
            }
            let mut j = 0;
            while j + REFLECT_COLS <= i {
                multiply_columns::<REFLECT_COLS>(v, n, i, j, d, e);
                j += REFLECT_COLS;
            }
            while j < i {
                multiply_columns::<1>(v, n, i, j, d, e);
                j += 1;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                f = d[j];
                g = e[j];
                for k in j..i {
                    v[at(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    for i in 0..n - 1 {
        v[at(n - 1, i)] = v[at(i, i)];
        v[at(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[at(k, i + 1)] / h;
            }
            // Columns `0..=i` of `v` (the first `i + 1` elements of rows `0..=i` of `vt`)
            // less their part along column `i + 1`, a few columns at a time: each column's
            // sum still runs in index order, but the columns' sums interleave.
            let (cols, rest) = v.split_at_mut((i + 1) * n);
            let u = &rest[..=i];
            let mut blocks = cols.chunks_exact_mut(REFLECT_COLS * n);
            for block in &mut blocks {
                reflect_columns::<REFLECT_COLS>(block, n, u, &d[..=i]);
            }
            for col in blocks.into_remainder().chunks_exact_mut(n) {
                reflect_columns::<1>(col, n, u, &d[..=i]);
            }
        }
        for k in 0..=i {
            v[at(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
        v[at(n - 1, j)] = 0.0;
    }
    v[at(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Columns `tred2` updates together in its accumulation (their sums are independent chains
/// of additions, which a core then runs side by side).
const REFLECT_COLS: usize = 4;

/// For each of the `C` rows `x` of `block` (rows of `n`, of which the first `u.len()`
/// elements are used): `g = sum_k u[k] x[k]` in index order, then `x[k] -= g w[k]`.
#[inline(always)]
fn reflect_columns<const C: usize>(block: &mut [f64], n: usize, u: &[f64], w: &[f64]) {
    let m = u.len();
    let mut rows: [&mut [f64]; C] = {
        let mut it = block.chunks_exact_mut(n).map(|r| &mut r[..m]);
        std::array::from_fn(|_| it.next().expect("C rows"))
    };
    let mut g = [0.0f64; C];
    for k in 0..m {
        for (gc, row) in g.iter_mut().zip(rows.iter()) {
            *gc += u[k] * row[k];
        }
    }
    for (row, &gc) in rows.iter_mut().zip(&g) {
        for (x, &wk) in row.iter_mut().zip(w) {
            *x -= gc * wk;
        }
    }
}

/// `tred2`'s product of the lower triangle of its matrix's first `i` rows and columns with
/// `d`, for the `C` columns from `j` (element `(k, c)` of the matrix at `vt[c * n + k]`):
/// column `c` adds `v[c][c] d[c]` and then `v[k][c] d[k]` for `k` from `c + 1` in order to
/// `e[c]` (as it stands when column `c` starts: the earlier columns have added to it), and
/// `v[k][c] d[c]` to each `e[k]`. The columns' sums interleave; each `e[k]` still takes the
/// columns' terms in column order.
#[inline(always)]
fn multiply_columns<const C: usize>(
    vt: &[f64],
    n: usize,
    i: usize,
    j: usize,
    d: &[f64],
    e: &mut [f64],
) {
    let cols: [&[f64]; C] = std::array::from_fn(|m| &vt[(j + m) * n..(j + m) * n + i]);
    let f: [f64; C] = std::array::from_fn(|m| d[j + m]);
    let mut g = [0.0f64; C];
    // The columns start one after another: column `m` once columns `0..m` have added to
    // `e[j + m]`.
    for m in 0..C {
        let k = j + m;
        for c in 0..m {
            g[c] += cols[c][k] * d[k];
            e[k] += cols[c][k] * f[c];
        }
        g[m] = e[k] + cols[m][k] * f[m];
    }
    for k in j + C..i {
        let dk = d[k];
        let mut ek = e[k];
        for c in 0..C {
            g[c] += cols[c][k] * dk;
            ek += cols[c][k] * f[c];
        }
        e[k] = ek;
    }
    e[j..j + C].copy_from_slice(&g);
}

/// Implicit QL on the tridiagonal matrix (`d`, `e`), accumulating the rotations into the
/// rows of `vt` (the transpose of `tred2`'s matrix). `d` ends as the eigenvalues (unsorted),
/// row `i` of `vt` as the eigenvector of `d[i]`.
#[inline(always)]
fn tql2(vt: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0f64;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 {
            if e[m].abs() <= eps * tst1 {
                break;
            }
            m += 1;
        }
        if m > l {
            for _ in 0..MAX_QL_ITERATIONS {
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = hypot(p, 1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in d.iter_mut().skip(l + 2) {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let mut c = 1.0f64;
                let mut c2 = c;
                let mut c3 = c;
                let el1 = e[l + 1];
                let mut s = 0.0f64;
                let mut s2 = 0.0f64;
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = hypot(p, e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    let (lo, hi) = vt.split_at_mut((i + 1) * n);
                    let row_i = &mut lo[i * n..];
                    let row_i1 = &mut hi[..n];
                    for (a, b) in row_i.iter_mut().zip(row_i1.iter_mut()) {
                        let h = *b;
                        *b = s * *a + c * h;
                        *a = c * *a - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                // Also stops on NaN.
                if e[l].abs() <= eps * tst1 || e[l].is_nan() {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
}

/// Modified Gram-Schmidt on the rows of `a` (`rows x cols`), in place, in row order: row `j`
/// has its components along rows `0..j` removed one at a time, then is divided by its norm.
/// Returns, for each row, its norm before normalization divided by its norm on entry (1 for
/// a row already orthogonal to the earlier ones, 0 for a row in their span, which is left
/// zero).
pub fn gram_schmidt(a: &mut [f64], rows: usize, cols: usize) -> Vec<f64> {
    assert_eq!(a.len(), rows * cols);
    (1..=rows)
        .map(|r| gram_schmidt_last(&mut a[..r * cols], r, cols))
        .collect()
}

/// One step of [`gram_schmidt`]: row `rows - 1` of `a` against rows `0..rows - 1` (already
/// done). Returns the share of its norm that is kept.
pub fn gram_schmidt_last(a: &mut [f64], rows: usize, cols: usize) -> f64 {
    assert!(rows >= 1 && a.len() == rows * cols);
    let j = rows - 1;
    let (done, rest) = a.split_at_mut(j * cols);
    let v = &mut rest[..cols];
    let before = dot(v, v).sqrt();
    for i in 0..j {
        let w = &done[i * cols..(i + 1) * cols];
        let r = dot(w, v);
        for (x, y) in v.iter_mut().zip(w) {
            *x -= r * y;
        }
    }
    let norm = dot(v, v).sqrt();
    if norm > 0.0 && norm.is_finite() && before > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
        norm / before
    } else {
        v.fill(0.0);
        0.0
    }
}

/// `a * b` for `a` (`n x m`) and `b` (`m x p`), each entry summed in index order.
pub fn matmul(a: &[f64], b: &[f64], n: usize, m: usize, p: usize) -> Vec<f64> {
    assert!(a.len() == n * m && b.len() == m * p);
    let mut out = vec![0.0f64; n * p];
    for i in 0..n {
        let o = &mut out[i * p..(i + 1) * p];
        for k in 0..m {
            let x = a[i * m + k];
            let row = &b[k * p..(k + 1) * p];
            for (acc, y) in o.iter_mut().zip(row) {
                *acc += x * y;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    }

    fn random_sym(n: usize, seed: u64) -> Vec<f64> {
        // Q diag(l) Q^T with Q from Gram-Schmidt of random rows: known eigenvalues. (No libm
        // calls, so the input is the same on every machine.)
        let mut r = rng(seed);
        let mut q: Vec<f64> = (0..n * n).map(|_| r()).collect();
        gram_schmidt(&mut q, n, n);
        let mut a = vec![0.0; n * n];
        for k in 0..n {
            let l = (1.0 + r() * 0.1) / ((k + 1) * (k + 1)) as f64;
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] += l * q[k * n + i] * q[k * n + j];
                }
            }
        }
        a
    }

    fn check(a: &[f64], n: usize) -> SymEig {
        let e = sym_eig(a, n);
        let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        for k in 0..n {
            let v = &e.vectors[k * n..(k + 1) * n];
            assert!((dot(v, v) - 1.0).abs() < 1e-10);
            for j in 0..k {
                assert!(dot(v, &e.vectors[j * n..(j + 1) * n]).abs() < 1e-10);
            }
            for i in 0..n {
                let av = dot(&a[i * n..(i + 1) * n], v);
                assert!(
                    (av - e.values[k] * v[i]).abs() <= 1e-10 * norm,
                    "n={n} k={k}"
                );
            }
            if k > 0 {
                assert!(e.values[k] <= e.values[k - 1]);
            }
        }
        e
    }

    #[test]
    fn eigendecomposition_of_random_matrices() {
        for (n, seed) in [(1, 1), (2, 2), (3, 3), (17, 4), (64, 5)] {
            check(&random_sym(n, seed), n);
        }
        // Diagonal, repeated and zero eigenvalues.
        let mut a = vec![0.0; 9];
        a[0] = 2.0;
        a[8] = 2.0;
        let e = check(&a, 3);
        assert_eq!(e.values, vec![2.0, 2.0, 0.0]);
        check(&[0.0; 16], 4);
    }

    #[test]
    fn eigendecomposition_is_reproducible_bit_for_bit() {
        // A fixed input, a fixed output: the bits below were produced by this code and must
        // never change (a change would desynchronize sessions across versions or machines).
        let a = random_sym(12, 9);
        let e = sym_eig(&a, 12);
        let mut h = 0xcbf29ce484222325u64;
        for x in e.values.iter().chain(&e.vectors) {
            h = (h ^ x.to_bits()).wrapping_mul(0x100000001b3);
        }
        assert_eq!(e, sym_eig(&a, 12));
        assert_eq!(h, EIG_FINGERPRINT, "{h:#x}");
    }

    const EIG_FINGERPRINT: u64 = 0x6cb4_f4c6_dd37_05f9;

    /// The build for wider vectors gives the bits of the plain one (on a CPU without AVX2,
    /// or under `IOTA_CODEC_SIMD=scalar`, both are the plain one).
    #[test]
    fn every_build_of_the_eigendecomposition_gives_the_same_bits() {
        for (n, seed) in [(5, 11), (70, 12), (131, 13)] {
            let a = random_sym(n, seed);
            let (x, y) = (sym_eig(&a, n), sym_eig_in_order(&a, n));
            let bits = |e: &SymEig| -> Vec<u64> {
                e.values
                    .iter()
                    .chain(&e.vectors)
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(bits(&x), bits(&y), "n={n}");
        }
    }

    #[test]
    fn gram_schmidt_orthonormalizes_and_reports_dependence() {
        let mut a = vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 2.0, 2.0, 0.0];
        let kept = gram_schmidt(&mut a, 3, 3);
        assert_eq!(&a[..6], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(&a[6..], &[0.0, 0.0, 0.0]);
        assert_eq!(kept[0], 1.0);
        assert_eq!(kept[2], 0.0);
    }
}
