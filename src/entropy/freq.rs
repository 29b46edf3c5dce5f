//! Symbol histograms and their normalization to a power-of-two total.
//!
//! Normalization uses integer arithmetic only, so an encoder writes the same bytes on every
//! platform.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

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
        for _ in 0..total_scale - sum {
            let mut top = heap.pop().expect("a symbol is present");
            freqs[top.symbol] += 1;
            top.denom2 += 2;
            heap.push(top);
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
            let std::cmp::Reverse(mut top) = heap.pop().expect("surplus implies a symbol above 1");
            freqs[top.symbol] -= 1;
            if freqs[top.symbol] > 1 {
                top.denom2 -= 2;
                heap.push(std::cmp::Reverse(top));
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
