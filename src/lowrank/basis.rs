//! The evolving channel basis of a shared-basis session, and the statistics it learns from.
//!
//! Both ends of a session hold a [`BasisState`] and change it only through
//! [`BasisState::accumulate`] (with statistics of the *decoded* integer coefficients, which
//! both ends have exactly) and [`BasisState::refresh`]. Every step is deterministic `f64`
//! arithmetic in a fixed order (see [`super::linalg`]), so the two states stay equal bit for
//! bit on any machine, thread count or SIMD level.

use super::linalg;

/// A complete orthonormal channel basis (`d x d`, one vector per row, the largest expected
/// variance first) and the second moments of the coefficients seen in it.
#[derive(Debug, Clone, PartialEq)]
pub struct BasisState {
    pub d: usize,
    /// `d x d`, row-major: the basis vectors.
    pub basis: Vec<f64>,
    /// `d x d`, symmetric: decayed sums of `c c^T` over the decoded coefficient rows `c`
    /// (in the coordinates of `basis`).
    pub moments: Vec<f64>,
    /// `basis` rounded to `f32`: what frames are projected onto and rebuilt from.
    synth: Vec<f32>,
}

impl BasisState {
    /// The standard basis (channels as they are), with no statistics yet.
    pub fn identity(d: usize) -> BasisState {
        let mut basis = vec![0.0f64; d * d];
        for i in 0..d {
            basis[i * d + i] = 1.0;
        }
        BasisState::new(d, basis, vec![0.0; d * d])
    }

    /// A state from its parts (`basis` must be orthonormal rows; not checked).
    pub fn new(d: usize, basis: Vec<f64>, moments: Vec<f64>) -> BasisState {
        assert!(basis.len() == d * d && moments.len() == d * d);
        let synth = basis.iter().map(|&x| x as f32).collect();
        BasisState {
            d,
            basis,
            moments,
            synth,
        }
    }

    /// A complete basis that starts with the `k` vectors of `w` (`k x d`, as a frame's basis
    /// decodes): they are made orthonormal again in `f64`, zero or dependent ones are
    /// dropped, and the standard basis vectors `e_0, e_1, ...` fill the rest, each kept only
    /// if enough of it is left outside the span so far (half its norm, then a tenth, then
    /// anything). No statistics yet.
    pub fn complete(w: &[f32], k: usize, d: usize) -> BasisState {
        debug_assert_eq!(w.len(), k * d);
        let mut rows: Vec<f64> = Vec::with_capacity(d * d);
        let push = |rows: &mut Vec<f64>, cand: &[f64], min_kept: f64| -> bool {
            let m = rows.len() / d;
            if m == d {
                return false;
            }
            rows.extend_from_slice(cand);
            let kept = linalg::gram_schmidt_last(rows, m + 1, d);
            if kept > min_kept {
                true
            } else {
                rows.truncate(m * d);
                false
            }
        };
        for j in 0..k {
            let cand: Vec<f64> = w[j * d..(j + 1) * d]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            push(&mut rows, &cand, 1e-3);
        }
        let mut unit = vec![0.0f64; d];
        for min_kept in [0.5, 0.1, 1e-9] {
            for t in 0..d {
                unit.fill(0.0);
                unit[t] = 1.0;
                push(&mut rows, &unit, min_kept);
            }
        }
        debug_assert_eq!(rows.len(), d * d);
        rows.resize(d * d, 0.0);
        BasisState::new(d, rows, vec![0.0; d * d])
    }

    /// The basis rounded to `f32` (`d x d`, row-major).
    pub fn synth(&self) -> &[f32] {
        &self.synth
    }

    /// Adds the statistics of one decoded frame: `sums` (`k x k`, upper triangle read) holds
    /// `sum q_a q_b` over the frame's sampled coefficient rows, for the integer coefficients
    /// `q` of the first `k` basis vectors, which stand for `q * step`. The earlier moments
    /// are multiplied by `decay` first.
    pub fn accumulate(&mut self, sums: &[f64], k: usize, step: f32, decay: f64) {
        let d = self.d;
        debug_assert!(k <= d && sums.len() == k * k);
        let s2 = f64::from(step) * f64::from(step);
        for m in self.moments.iter_mut() {
            *m *= decay;
        }
        for a in 0..k {
            for b in a..k {
                let v = s2 * sums[a * k + b];
                self.moments[a * d + b] += v;
                if a != b {
                    self.moments[b * d + a] += v;
                }
            }
        }
    }

    /// Rotates the basis onto the eigenvectors of the accumulated moments (largest first):
    /// `B <- V B` for the eigenvectors `V` (rows, in basis coordinates), then Gram-Schmidt
    /// against rounding drift; the moments become the diagonal of their eigenvalues (clamped
    /// at 0), which is what they are in the new coordinates.
    pub fn refresh(&mut self) {
        let d = self.d;
        let eig = linalg::sym_eig(&self.moments, d);
        let mut basis = linalg::matmul(&eig.vectors, &self.basis, d, d, d);
        linalg::gram_schmidt(&mut basis, d, d);
        let mut moments = vec![0.0f64; d * d];
        for (i, &l) in eig.values.iter().enumerate() {
            moments[i * d + i] = l.max(0.0);
        }
        *self = BasisState::new(d, basis, moments);
    }

    /// Feeds the state's exact bits to a hasher.
    pub fn hash_into(&self, h: &mut impl std::hash::Hasher) {
        h.write(&(self.d as u64).to_le_bytes());
        for x in self.basis.iter().chain(&self.moments) {
            h.write(&x.to_bits().to_le_bytes());
        }
    }
}

/// Adds `sum q_a q_b` (for `a <= b`, into `out[a * k + b]`) over the rows of `q` (`rows x k`
/// integers) whose index in the frame, `first_row + i`, is a multiple of `stride`, in row
/// order. Products of integers up to 2^25 are exact in `f64`; the sums are in a fixed order.
pub fn coefficient_sums(q: &[i32], k: usize, first_row: u64, stride: u64, out: &mut [f64]) {
    debug_assert_eq!(out.len(), k * k);
    let stride = stride.max(1);
    let rows = q.len() / k.max(1);
    let skip = ((stride - first_row % stride) % stride) as usize;
    let mut i = skip;
    let mut qa = vec![0.0f64; k];
    while i < rows {
        let row = &q[i * k..(i + 1) * k];
        for (o, &v) in qa.iter_mut().zip(row) {
            *o = f64::from(v);
        }
        for a in 0..k {
            let x = qa[a];
            if x == 0.0 {
                continue;
            }
            let acc = &mut out[a * k + a..(a + 1) * k];
            for (s, &y) in acc.iter_mut().zip(&qa[a..]) {
                *s += x * y;
            }
        }
        i += stride as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_finds_the_principal_directions() {
        // Coefficients with most variance in channel 2, then 0: the refreshed basis starts
        // with e_2, then e_0.
        let d = 4;
        let mut s = BasisState::identity(d);
        let rows: Vec<i32> = (0..400)
            .flat_map(|i| {
                let a = (i % 7) - 3;
                [a * 2, (i % 3) - 1, a * 10, 0]
            })
            .collect();
        let mut sums = vec![0.0; d * d];
        coefficient_sums(&rows, d, 0, 1, &mut sums);
        s.accumulate(&sums, d, 0.5, 0.9);
        s.refresh();
        let v0 = &s.basis[0..d];
        assert!(v0[2].abs() > 0.97 && v0[0].abs() > 0.18, "{v0:?}");
        for i in 0..d {
            for j in 0..d {
                let p = linalg::dot(&s.basis[i * d..(i + 1) * d], &s.basis[j * d..(j + 1) * d]);
                assert!((p - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(s.moments[0] >= s.moments[d + 1]);
    }

    #[test]
    fn completion_keeps_the_given_vectors_first() {
        let d = 3;
        let w = [0.6f32, 0.8, 0.0];
        let s = BasisState::complete(&w, 1, d);
        assert!((s.basis[0] - 0.6).abs() < 1e-7 && (s.basis[1] - 0.8).abs() < 1e-7);
        for i in 0..d {
            let v = &s.basis[i * d..(i + 1) * d];
            assert!((linalg::dot(v, v) - 1.0).abs() < 1e-12);
        }
        // A zero vector is dropped.
        let s = BasisState::complete(&[0.0; 3], 1, d);
        assert_eq!(s, BasisState::identity(d));
    }

    #[test]
    fn sums_sample_rows_by_their_index_in_the_frame() {
        let q = [1, 2, 3, 4, 5, 6];
        let mut out = vec![0.0; 4];
        // Rows 5, 6, 7 of the frame; every second row: rows 6 (= q[2..4]).
        coefficient_sums(&q, 2, 5, 2, &mut out);
        assert_eq!(out, vec![9.0, 12.0, 0.0, 16.0]);
    }
}
