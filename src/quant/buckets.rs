//! Symbols for quantized transform coefficients: small integers as themselves, larger ones
//! as logarithmic buckets with two mantissa bits, so that a frequency table stays short
//! (at most [`ALPHABET`] entries) even for coefficients that span thousands of steps.
//!
//! With `z = zigzag(q)` (`0, -1, 1, -2, ...` -> `0, 1, 2, 3, ...`):
//!
//! * `z < 16`: the symbol is `z`;
//! * otherwise, with `e = floor(log2 z)` (4 to 25) and `m` the two bits of `z` below its
//!   leading one, the symbol is `16 + 4 (e - 4) + m`, and the `e - 2` low bits of `z` follow
//!   in the extra-bits stream (LSB first).
//!
//! A bucket spans a quarter of an octave, over which the density of a smooth distribution
//! hardly changes, so coding its low bits raw costs little.

use super::uniform::{unzigzag, zigzag, BitReader, BitWriter};
use crate::error::{ensure_frame, Result};

/// Symbols below this are `z` itself.
pub const DIRECT: u32 = 16;
/// Largest `|q|` an encoder writes (`z <= 2^25`).
pub const MAX_Q: i32 = 1 << 24;
/// Number of symbols: 16 direct ones and four per octave from `2^4` to `2^25`.
pub const ALPHABET: usize = 16 + 4 * 22;

/// The symbol of `q` (`|q| <= MAX_Q`); its extra bits go to `extra`.
#[inline(always)]
pub fn symbol(q: i32, extra: &mut BitWriter) -> u16 {
    let z = zigzag(q);
    if z < DIRECT {
        return z as u16;
    }
    let e = 31 - z.leading_zeros();
    let m = (z >> (e - 2)) & 3;
    extra.put(z & ((1 << (e - 2)) - 1), e - 2);
    (DIRECT + 4 * (e - 4) + m) as u16
}

/// The symbol of `q` alone (its extra bits are not wanted).
#[inline(always)]
pub fn symbol_of(q: i32) -> u16 {
    let z = zigzag(q);
    if z < DIRECT {
        return z as u16;
    }
    let e = 31 - z.leading_zeros();
    let m = (z >> (e - 2)) & 3;
    (DIRECT + 4 * (e - 4) + m) as u16
}

/// The number of extra bits symbol `s` carries.
#[inline(always)]
pub fn extra_bits(s: u16) -> u32 {
    let s = u32::from(s);
    if s < DIRECT {
        0
    } else {
        (s - DIRECT) / 4 + 2
    }
}

/// Maps `q` to symbols, counting them into `counts` ([`ALPHABET`] long) and appending their
/// extra bits to `extra`.
pub fn symbolize(q: &[i32], symbols: &mut [u16], counts: &mut [u32], extra: &mut BitWriter) {
    for (s, &v) in symbols.iter_mut().zip(q) {
        let sym = symbol(v, extra);
        counts[sym as usize] += 1;
        *s = sym;
    }
}

/// The integer symbol `s` stands for, reading its extra bits from `bits`.
#[inline(always)]
pub fn value(s: u16, bits: &mut BitReader) -> Result<i32> {
    let s = u32::from(s);
    if s < DIRECT {
        return Ok(unzigzag(s));
    }
    ensure_frame!(
        s < ALPHABET as u32,
        "coefficient symbol {s} is not in the alphabet"
    );
    let t = s - DIRECT;
    let e = t / 4 + 4;
    let m = t % 4;
    let low = bits.get(e - 2)?;
    Ok(unzigzag((1 << e) | (m << (e - 2)) | low))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alphabet_edges() {
        let mut w = BitWriter::default();
        assert_eq!(symbol(0, &mut w), 0);
        assert_eq!(symbol(-8, &mut w), 15);
        assert_eq!(symbol(8, &mut w), 16);
        assert_eq!(symbol(MAX_Q, &mut w) as usize, ALPHABET - 4);
        assert_eq!(symbol(-MAX_Q, &mut w) as usize, ALPHABET - 5);
        assert_eq!(extra_bits(symbol(-MAX_Q, &mut w)), 22);
    }

    proptest! {
        #[test]
        fn round_trips(raw in proptest::collection::vec(-MAX_Q..=MAX_Q, 0..500), shift in 0u32..24) {
            let q: Vec<i32> = raw.iter().map(|&v| v >> shift).collect();
            let mut symbols = vec![0u16; q.len()];
            let mut counts = vec![0u32; ALPHABET];
            let mut extra = BitWriter::default();
            symbolize(&q, &mut symbols, &mut counts, &mut extra);
            extra.finish();
            prop_assert!(q.iter().zip(&symbols).all(|(&v, &s)| symbol_of(v) == s));
            let bits: u32 = symbols.iter().map(|&s| extra_bits(s)).sum();
            prop_assert_eq!(bits.div_ceil(8) as usize, extra.bytes.len());
            let mut r = BitReader::new(&extra.bytes);
            let back: Vec<i32> = symbols.iter().map(|&s| value(s, &mut r).unwrap()).collect();
            r.finish().unwrap();
            prop_assert_eq!(back, q);
        }
    }
}
