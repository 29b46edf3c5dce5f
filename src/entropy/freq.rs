//! Symbol histograms and their normalization to a power-of-two total.
//!
//! Normalization uses integer arithmetic only, so an encoder writes the same bytes on every
//! platform.

use std::cmp::Ordering;
use std::collections::binary_heap::{BinaryHeap, PeekMut};

/// Counts how often each symbol occurs. `counts.len()` is the alphabet size; every symbol must
/// be below it.
pub fn histogram(symbols: &[u16], counts: &mut [u32]) {
    counts.fill(0);
    // Four sub-histograms break the store-to-load dependency when a symbol repeats.
    let a = counts.len();
    let mut sub = vec![0u32; 4 * a];
    let (h0, rest) = sub.split_at_mut(a);
    let (h1, rest) = rest.split_at_mut(a);
    let (h2, h3) = rest.split_at_mut(a);
    let mut it = symbols.chunks_exact(4);
    for q in &mut it {
        h0[q[0] as usize] += 1;
        h1[q[1] as usize] += 1;
        h2[q[2] as usize] += 1;
        h3[q[3] as usize] += 1;
    }
    for &s in it.remainder() {
        h0[s as usize] += 1;
    }
    for (i, c) in counts.iter_mut().enumerate() {
        *c = h0[i] + h1[i] + h2[i] + h3[i];
    }
}

/// Chunks of at least this many symbols get [`sampled_histogram`]'s sampled counts.
pub const SAMPLED_COUNTS: usize = 1 << 16;

/// The counts a chunk's rANS table is built from (`counts.len()` is the alphabet, at most
/// 512, and every symbol is below it; `mask + 1` is a power of two): exact for chunks of
/// fewer than [`SAMPLED_COUNTS`] symbols, sampled for larger ones, where counting is a
/// sizable share of an encoder's time (a load and a read-modify-write per counted symbol).
///
/// A sampled histogram counts every symbol of one run of 64 in every `every` (a power of two
/// from 2), and only the rare ones in the runs between. The common symbols are those whose
/// `symbol & mask` lies in the widest range `lo..=hi` around the most counted value in which
/// every symbol that maps to the range occurs in the counted runs (the error-bounded
/// quantizer's symbols: `mask = 511`, a range `0..=S` of the smallest zigzagged codes; the
/// lossless float split's: `mask = alphabet / 2 - 1`, a range of exponents present with both
/// signs). A run between whose symbols all map into the range is only scanned (its smallest
/// and largest `symbol & mask`); in the others the rare symbols are flagged with vector
/// compares and only the flagged ones counted (about one run between in five has any, most
/// of them one or two: a scalar pass over those runs made the whole count of a `balanced`
/// chunk 0.235 ns per symbol, the flags 0.192 on a Zen 4 core). The table then weighs each
/// common symbol by `every` times its count in the counted runs and each rare one by its
/// exact count. Every symbol that occurs keeps a probability, and sampling costs about
/// `K / (2 N ln 2)` bits per symbol for `K` distinct symbols and `N` counted (for the
/// chunks of the default size, under 0.003 bits counting half of a few hundred symbols, and
/// under 0.001 counting a quarter of the float split's few dozen).
///
/// The counters are eight sub-histograms of 32 bits (16 KiB, inside L1): eight keep a run of
/// equal symbols from waiting on its own stores, and 16-bit ones, half the footprint, need
/// a 16-bit read-modify-write per symbol (with them the lossless encode ran at 0.47-0.49
/// GB/s on an AMD Zen 1 VM against 0.56-0.59, `make speed --profiles lossless`).
///
/// Returns the range `lo..=hi` of `symbol & mask` whose counts are estimates (empty when
/// every count is exact); the counts of all other symbols are exact.
pub fn sampled_histogram(
    symbols: &[u16],
    counts: &mut [u32],
    mask: u16,
    every: usize,
) -> (i32, i32) {
    sampled_histogram_from(symbols, counts, mask, every, SAMPLED_COUNTS)
}

/// [`sampled_histogram`], sampling from `min_sampled` symbols on instead of
/// [`SAMPLED_COUNTS`] (at least two runs of `64 every`).
pub fn sampled_histogram_from(
    symbols: &[u16],
    counts: &mut [u32],
    mask: u16,
    every: usize,
    min_sampled: usize,
) -> (i32, i32) {
    const SUB: usize = 8;
    const RUN: usize = 64;
    let a = counts.len();
    let m = usize::from(mask);
    assert!(a <= 512 && (m + 1).is_power_of_two() && every >= 2 && every.is_power_of_two());
    let sampled = symbols.len() >= min_sampled.max(2 * RUN * every);
    let mut sub = [[0u32; 512]; SUB];
    let mut add = |run: &[u16]| {
        let mut it = run.chunks_exact(SUB);
        for q in &mut it {
            for (h, &v) in sub.iter_mut().zip(q) {
                h[usize::from(v) & 511] += 1;
            }
        }
        for (h, &v) in sub.iter_mut().zip(it.remainder()) {
            h[usize::from(v) & 511] += 1;
        }
    };
    if sampled {
        symbols.chunks(RUN).step_by(every).for_each(&mut add);
    } else {
        add(symbols);
    }
    for (v, c) in counts.iter_mut().enumerate() {
        *c = sub.iter().map(|h| h[v]).sum::<u32>();
    }
    if !sampled {
        return (1, 0);
    }
    // The symbols of masked value `e`, and whether each of them occurs.
    let group = |e: usize| (e..a).step_by(m + 1);
    let full = |e: usize| e < a && group(e).all(|v| counts[v] > 0);
    let mode = (0..=m)
        .max_by_key(|&e| {
            (
                group(e).map(|v| u64::from(counts[v])).sum::<u64>(),
                usize::MAX - e,
            )
        })
        .unwrap_or(0);
    // The common range `lo..=hi` (empty when the mode's own symbols are not all there).
    let (lo, hi) = if full(mode) {
        let lo = (0..mode)
            .rev()
            .take_while(|&e| full(e))
            .last()
            .unwrap_or(mode);
        let hi = (mode + 1..=m)
            .take_while(|&e| full(e))
            .last()
            .unwrap_or(mode);
        (lo as i32, hi as i32)
    } else {
        (1, 0)
    };
    for e in lo.max(0)..=hi {
        for v in group(e as usize) {
            counts[v] *= every as u32;
        }
    }
    // A symbol is common when `(v & mask) - lo`, wrapping, is at most `span` (`lo >= 0`);
    // with an empty range every symbol is rare.
    let all_rare = lo > hi;
    let (lo16, span) = if all_rare {
        (0, 0)
    } else {
        (lo as u16, (hi - lo) as u16)
    };
    let between = symbols
        .chunks(RUN * every)
        .flat_map(|runs| runs.chunks(RUN).skip(1));
    for run in between {
        // Symbols are below 2^15: signed 16-bit minima and maxima (SSE2 has them). The
        // minimum only matters above 0.
        let masked = run.iter().map(|&v| (v & mask) as i16);
        let (mn, mx) = if lo > 0 {
            masked.fold((i16::MAX, i16::MIN), |(mn, mx), e| (mn.min(e), mx.max(e)))
        } else {
            (0, masked.fold(i16::MIN, i16::max))
        };
        if i32::from(mn) < lo || i32::from(mx) > hi {
            // A few rare symbols among common ones, as a rule: flag them with vector
            // compares, then count only the flagged ones, eight flags at a time.
            let mut flags = [0u8; RUN];
            for (f, &v) in flags.iter_mut().zip(run) {
                *f = u8::from(all_rare || (v & mask).wrapping_sub(lo16) > span);
            }
            for (w, eight) in flags.chunks_exact(8).enumerate() {
                let mut m = u64::from_le_bytes(eight.try_into().expect("eight flags"));
                while m != 0 {
                    let j = 8 * w + (m.trailing_zeros() / 8) as usize;
                    counts[usize::from(run[j])] += 1;
                    m &= m - 1;
                }
            }
        }
    }
    (lo, hi)
}

/// A candidate for one more (or one less) unit of probability, ordered by how many bits the
/// change saves (or costs). The cost of giving symbol `i` one more unit is approximately
/// `count / (freq + 1/2)` bits (from `ln(1 + 1/f) ~ 1/(f + 1/2)`), compared by
/// cross-multiplication so that no floating point is involved.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Candidate {
    count: u64,
    /// Twice the denominator, an odd number: `2 f + 1` for an increment, `2 f - 1` for a
    /// decrement.
    denom2: u64,
    symbol: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // self.count / self.denom2 vs other.count / other.denom2; ties go to the lower symbol.
        (self.count * other.denom2)
            .cmp(&(other.count * self.denom2))
            .then(other.symbol.cmp(&self.symbol))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Scales `counts` to frequencies that sum to exactly `1 << prob_bits`, keeping every symbol
/// that occurs at a frequency of at least one, and spending the rounding slack where it
/// costs the fewest bits. Returns `None` when no symbol occurs or more symbols occur than the
/// total can hold.
pub fn normalize(counts: &[u32], prob_bits: u32) -> Option<Vec<u32>> {
    let total_scale = 1u64 << prob_bits;
    let n: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let present = counts.iter().filter(|&&c| c > 0).count() as u64;
    if n == 0 || present > total_scale {
        return None;
    }
    let mut freqs: Vec<u32> = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0
            } else {
                ((u64::from(c) * total_scale + n / 2) / n).max(1) as u32
            }
        })
        .collect();
    let sum: u64 = freqs.iter().map(|&f| u64::from(f)).sum();
    if sum < total_scale {
        // Hand out the missing units where they save the most.
        let mut heap: BinaryHeap<Candidate> = counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(s, &c)| Candidate {
                count: u64::from(c),
                denom2: 2 * u64::from(freqs[s]) + 1,
                symbol: s,
            })
            .collect();
        // (The order is total, so changing the top in place, one sift instead of a pop and
        // a push, hands the units to the same symbols.)
        for _ in 0..total_scale - sum {
            let mut top = heap.peek_mut().expect("a symbol is present");
            freqs[top.symbol] += 1;
            top.denom2 += 2;
        }
    } else if sum > total_scale {
        // Take the surplus back where it costs the least; never below one.
        let mut heap: BinaryHeap<std::cmp::Reverse<Candidate>> = counts
            .iter()
            .enumerate()
            .filter(|(s, _)| freqs[*s] > 1)
            .map(|(s, &c)| {
                std::cmp::Reverse(Candidate {
                    count: u64::from(c),
                    denom2: 2 * u64::from(freqs[s]) - 1,
                    symbol: s,
                })
            })
            .collect();
        for _ in 0..sum - total_scale {
            let mut top = heap.peek_mut().expect("surplus implies a symbol above 1");
            freqs[top.0.symbol] -= 1;
            if freqs[top.0.symbol] > 1 {
                top.0.denom2 -= 2;
            } else {
                PeekMut::pop(top);
            }
        }
    }
    debug_assert_eq!(
        freqs.iter().map(|&f| u64::from(f)).sum::<u64>(),
        total_scale
    );
    Some(freqs)
}

/// The order-0 entropy of a histogram in bits per symbol (for reports and tests).
pub fn entropy_bits(counts: &[u32]) -> f64 {
    let n: f64 = counts.iter().map(|&c| f64::from(c)).sum();
    if n == 0.0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sampled_histograms_count_exactly_what_they_say() {
        // Symbols 0..=3 in turn, two rare ones in the second run (a run between, counted for
        // its rare symbols only; 4 just past the common range): the common range is 0..=3,
        // each common symbol weighs `every` times its count in the counted runs (its edge,
        // 3, included, though it shares a run with the rare ones), the rare ones exactly.
        for every in [2usize, 4] {
            let mut symbols: Vec<u16> = (0..SAMPLED_COUNTS).map(|i| (i % 4) as u16).collect();
            symbols[64 + 5] = 100;
            symbols[64 + 9] = 4;
            let mut counts = vec![0u32; 512];
            sampled_histogram(&symbols, &mut counts, 511, every);
            let runs = SAMPLED_COUNTS / 64 / every;
            let mut want = vec![0u32; 512];
            want[..4].fill((every * runs * 16) as u32);
            want[100] = 1;
            want[4] = 1;
            assert_eq!(counts, want, "one run in {every}");
        }
        // No common range (each exponent occurs with one sign only): every symbol, the
        // masked 0 included, is counted exactly.
        let symbols: Vec<u16> = (0..SAMPLED_COUNTS + 5).map(|i| (i % 3) as u16).collect();
        let (mut counts, mut exact) = (vec![0u32; 64], vec![0u32; 64]);
        sampled_histogram(&symbols, &mut counts, 31, 2);
        histogram(&symbols, &mut exact);
        assert_eq!(counts, exact);
    }

    /// Sampled histograms of float-split-like symbols (sign above the masked exponent):
    /// every symbol that occurs keeps a count and no other gets one, the symbols outside the
    /// common range are counted exactly, the common ones within sampling error, and small
    /// chunks are counted exactly.
    #[test]
    fn sampled_histograms_keep_every_symbol_and_count_the_rare_ones_exactly() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for alphabet in [512usize, 64] {
            let half = alphabet / 2;
            let mask = (half - 1) as u16;
            for case in 0..5 {
                let n = if case == 4 {
                    SAMPLED_COUNTS - 1
                } else {
                    3 * SAMPLED_COUNTS + 77
                };
                let symbols: Vec<u16> = (0..n)
                    .map(|i| {
                        let r = next();
                        // Exponents spread over a few values around the middle.
                        let e = half / 2 + (r % 5) as usize + ((r >> 8) % 3) as usize;
                        let sign = match case {
                            // One sign only: no common range.
                            1 => 0,
                            _ => ((r >> 20) & 1) as usize,
                        };
                        let e = match case {
                            // Rare outliers, one sign, far from the common range.
                            2 if i % 9973 == 17 => 1,
                            // A lone rare symbol in a run between.
                            3 if i == 64 * 7 + 5 => half - 1,
                            _ => e,
                        };
                        (sign * half + e) as u16
                    })
                    .collect();
                let mut exact = vec![0u32; alphabet];
                histogram(&symbols, &mut exact);
                for every in [2usize, 4] {
                    let mut counts = vec![7u32; alphabet];
                    sampled_histogram(&symbols, &mut counts, mask, every);
                    let what = format!("alphabet {alphabet} case {case}, one run in {every}");
                    if n < SAMPLED_COUNTS {
                        assert_eq!(counts, exact, "{what}");
                        continue;
                    }
                    for v in 0..alphabet {
                        assert_eq!(counts[v] > 0, exact[v] > 0, "symbol {v}, {what}");
                        let (c, e) = (f64::from(counts[v]), f64::from(exact[v]));
                        if e < 100.0 {
                            // Rare symbols fall outside the common range: counted exactly.
                            assert_eq!(counts[v], exact[v], "symbol {v}, {what}");
                        } else {
                            // Sampling error: about sqrt((every - 1) e).
                            let tol = 6.0 * (e * (every - 1) as f64).sqrt();
                            assert!((c - e).abs() < tol, "symbol {v}: {c} vs {e}, {what}");
                        }
                    }
                }
            }
        }
    }

    fn cross_entropy(counts: &[u32], freqs: &[u32], bits: u32) -> f64 {
        let n: f64 = counts.iter().map(|&c| f64::from(c)).sum();
        counts
            .iter()
            .zip(freqs)
            .filter(|(&c, _)| c > 0)
            .map(|(&c, &f)| f64::from(c) / n * (f64::from(1u32 << bits) / f64::from(f)).log2())
            .sum()
    }

    #[test]
    fn single_symbol_takes_everything() {
        let f = normalize(&[0, 5, 0], 11).unwrap();
        assert_eq!(f, vec![0, 2048, 0]);
    }

    #[test]
    fn empty_or_overfull_is_refused() {
        assert!(normalize(&[0, 0], 11).is_none());
        assert!(normalize(&[1; 9], 3).is_none());
        assert_eq!(normalize(&[1; 8], 3).unwrap(), vec![1; 8]);
    }

    #[test]
    fn close_to_entropy_on_a_peaked_distribution() {
        // A geometric-like distribution with a long tail of rare symbols.
        let counts: Vec<u32> = (0..200)
            .map(|i| (1_000_000.0 * 0.8f64.powi(i)) as u32 + 1)
            .collect();
        let f = normalize(&counts, 11).unwrap();
        let h = entropy_bits(&counts);
        let ce = cross_entropy(&counts, &f, 11);
        assert!(ce >= h - 1e-9);
        assert!(ce < h * 1.05, "cross entropy {ce} vs entropy {h}");
    }

    proptest! {
        #[test]
        fn sums_to_total_and_keeps_every_symbol(
            counts in proptest::collection::vec(0u32..100_000, 1..512),
            bits in 9u32..=11,
        ) {
            prop_assume!(counts.iter().any(|&c| c > 0));
            let f = normalize(&counts, bits).unwrap();
            prop_assert_eq!(f.iter().map(|&x| u64::from(x)).sum::<u64>(), 1u64 << bits);
            for (c, x) in counts.iter().zip(&f) {
                prop_assert_eq!(*c > 0, *x > 0);
            }
        }

        #[test]
        fn histogram_counts_every_symbol(symbols in proptest::collection::vec(0u16..64, 0..300)) {
            let mut counts = vec![0u32; 64];
            histogram(&symbols, &mut counts);
            for s in 0..64u16 {
                prop_assert_eq!(counts[s as usize] as usize, symbols.iter().filter(|&&x| x == s).count());
            }
        }
    }
}
