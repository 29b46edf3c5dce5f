//! Interleaved rANS over alphabets of up to 512 symbols.
//!
//! The coder keeps `lanes` independent 31-bit states (up to 32) that take symbols in turn:
//! symbol `i` goes to lane `i % lanes`. All lanes share one stream of 16-bit words, read in
//! symbol order, so a SIMD decoder advances 16 or 32 lanes at once. Parameters:
//!
//! * states live in `[L, 2^31)` with `L = 2^15`; renormalization moves one 16-bit word, at
//!   most once per symbol, so encoding and decoding are branch-free per lane;
//! * probabilities are quantized to `prob_bits <= 11` bits, so a decode-table entry (symbol,
//!   frequency, offset) fits in 32 bits and the table in 8 KiB;
//! * the encoder divides by the frequency through a 32-bit reciprocal (exact for states below
//!   2^31), so it needs no division instruction.
//!
//! Stream layout (see `docs/FORMAT.md`): frequency table, final encoder states, word count,
//! words. The decoder checks that every word is consumed and that every lane ends at `L`,
//! so a damaged stream that passed the checksums is still caught.

use super::freq;
use crate::error::{ensure_frame, Error, Result};
use crate::format::{put_uvarint, Reader};
use crate::simd;

/// Lower bound of the normalized state interval.
pub const RANS_L: u32 = 1 << 15;
/// Most bits of probability precision.
pub const MAX_PROB_BITS: u32 = 11;
/// Most interleaved lanes.
pub const MAX_LANES: usize = 32;
/// Largest alphabet the tables can hold (symbols are 9 bits in a decode entry).
pub const MAX_ALPHABET: usize = 512;

/// Frame-level parameters of a rANS stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RansParams {
    /// Interleaved states: 1, 2, 4, 8, 16 or 32.
    pub lanes: usize,
    /// Probability precision in bits, 1 to 11.
    pub prob_bits: u32,
}

impl RansParams {
    pub const DEFAULT: RansParams = RansParams {
        lanes: MAX_LANES,
        prob_bits: MAX_PROB_BITS,
    };

    pub fn validate(self) -> Result<()> {
        ensure_frame!(
            self.lanes.is_power_of_two() && self.lanes <= MAX_LANES,
            "rANS lane count {} is not a power of two up to {MAX_LANES}",
            self.lanes
        );
        ensure_frame!(
            (1..=MAX_PROB_BITS).contains(&self.prob_bits),
            "rANS probability precision {} is outside 1..={MAX_PROB_BITS}",
            self.prob_bits
        );
        Ok(())
    }
}

/// Encoder tables, indexed by symbol: the reciprocal of the frequency, and the packed word
/// `bias | cmpl << 12 | shift << 23` with `cmpl = 2^prob_bits - freq` (zero for absent
/// symbols, which must never be encoded).
#[derive(Debug, Clone)]
pub struct EncTable {
    pub rcp: Vec<u32>,
    pub info: Vec<u32>,
    pub prob_bits: u32,
}

impl EncTable {
    pub fn new(freqs: &[u32], prob_bits: u32) -> Self {
        let total = 1u32 << prob_bits;
        let mut rcp = vec![0u32; freqs.len()];
        let mut info = vec![0u32; freqs.len()];
        let mut cum = 0u32;
        for (s, &f) in freqs.iter().enumerate() {
            if f == 0 {
                continue;
            }
            let (r, shift, bias) = if f == 1 {
                // q = x - 1 and x' = x * total + cum: see the module docs.
                (u32::MAX, 0, cum + total - 1)
            } else {
                let mut shift = 0u32;
                while f > (1u32 << shift) {
                    shift += 1;
                }
                let r = (1u64 << (shift + 31)).div_ceil(u64::from(f)) as u32;
                (r, shift - 1, cum)
            };
            rcp[s] = r;
            info[s] = bias | ((total - f) << 12) | (shift << 23);
            cum += f;
        }
        debug_assert_eq!(cum, total);
        EncTable {
            rcp,
            info,
            prob_bits,
        }
    }
}

/// One encoding step on a state, the scalar definition the SIMD kernels reproduce.
#[inline(always)]
pub fn encode_step(x: u32, rcp: u32, info: u32, prob_bits: u32) -> (u32, Option<u16>) {
    let bias = info & 0xfff;
    let cmpl = (info >> 12) & 0x7ff;
    let shift = info >> 23;
    let freq = (1u32 << prob_bits) - cmpl;
    let x_max = freq << (31 - prob_bits);
    let (x, word) = if x >= x_max {
        (x >> 16, Some(x as u16))
    } else {
        (x, None)
    };
    let q = (((u64::from(x) * u64::from(rcp)) >> 32) as u32) >> shift;
    (x + bias + q * cmpl, word)
}

/// Decode-table entry for `slot`: `symbol | freq << 9 | (slot - cum) << 21`.
pub fn build_dec_table(freqs: &[u32], prob_bits: u32) -> Vec<u32> {
    let mut table = Vec::with_capacity(1 << prob_bits);
    for (s, &f) in freqs.iter().enumerate() {
        for k in 0..f {
            table.push(s as u32 | (f << 9) | (k << 21));
        }
    }
    debug_assert_eq!(table.len(), 1 << prob_bits);
    table
}

/// Writes the frequency table: the number of present symbols, then for each the gap since
/// the previous present symbol and `freq - 1`, as varints.
fn write_table(freqs: &[u32], out: &mut Vec<u8>) {
    let present = freqs.iter().filter(|&&f| f > 0).count();
    put_uvarint(out, present as u64);
    let mut next = 0usize;
    for (s, &f) in freqs.iter().enumerate() {
        if f > 0 {
            put_uvarint(out, (s - next) as u64);
            put_uvarint(out, u64::from(f - 1));
            next = s + 1;
        }
    }
}

/// Reads a frequency table for `alphabet` symbols and checks that it sums to
/// `2^prob_bits`. Returns `None` for the empty table of an empty stream.
fn read_table(r: &mut Reader, alphabet: usize, prob_bits: u32) -> Result<Option<Vec<u32>>> {
    let total = 1u64 << prob_bits;
    let present = r.uvarint_max(alphabet as u64, "rANS symbol count")?;
    if present == 0 {
        return Ok(None);
    }
    let mut freqs = vec![0u32; alphabet];
    let mut next = 0u64;
    let mut sum = 0u64;
    for _ in 0..present {
        let gap = r.uvarint_max(alphabet as u64, "rANS symbol gap")? as u64;
        let s = next + gap;
        ensure_frame!(
            s < alphabet as u64,
            "rANS symbol {s} outside the alphabet of {alphabet}"
        );
        let f = r.uvarint_max(total - 1, "rANS frequency")? as u64 + 1;
        sum += f;
        ensure_frame!(sum <= total, "rANS frequencies exceed {total}");
        freqs[s as usize] = f as u32;
        next = s + 1;
    }
    ensure_frame!(sum == total, "rANS frequencies sum to {sum}, not {total}");
    Ok(Some(freqs))
}

/// Reusable buffers for [`encode`], so coding a chunk allocates nothing once warm.
#[derive(Debug, Default)]
pub struct EncScratch {
    counts: Vec<u32>,
    words: Vec<u16>,
}

/// Encodes `symbols` (each below `alphabet`) and appends the stream to `out`. `counts`, when
/// given, are what the table is built from: the histogram of `symbols` or an estimate of it
/// (such as [`freq::sampled_histogram`]'s) in which every symbol that occurs has a count;
/// otherwise the histogram is computed.
pub fn encode(
    symbols: &[u16],
    alphabet: usize,
    counts: Option<&[u32]>,
    params: RansParams,
    scratch: &mut EncScratch,
    out: &mut Vec<u8>,
) {
    assert!(alphabet <= MAX_ALPHABET);
    params.validate().expect("valid rANS parameters");
    let counts = match counts {
        Some(c) => c,
        None => {
            scratch.counts.resize(alphabet, 0);
            freq::histogram(symbols, &mut scratch.counts);
            &scratch.counts
        }
    };
    debug_assert_eq!(counts.len(), alphabet);
    let Some(freqs) = freq::normalize(counts, params.prob_bits) else {
        // Only an empty input has no symbol.
        assert!(symbols.is_empty());
        put_uvarint(out, 0);
        return;
    };
    write_table(&freqs, out);
    let table = EncTable::new(&freqs, params.prob_bits);
    let mut states = [RANS_L; MAX_LANES];
    // The kernel writes the words it emits at the end of `words` and never reads it, so a
    // reused buffer needs no clearing.
    let words = &mut scratch.words;
    words.resize(symbols.len(), 0);
    let start = (simd::kernels().rans_encode)(
        symbols,
        &table.rcp,
        &table.info,
        params.prob_bits,
        &mut states[..params.lanes],
        words,
    );
    for s in &states[..params.lanes] {
        out.extend_from_slice(&s.to_le_bytes());
    }
    let words = &words[start..];
    put_uvarint(out, words.len() as u64);
    put_words(words, out);
}

/// Appends `words` as little-endian bytes (without first zeroing the room, as a resize
/// would).
fn put_words(words: &[u16], out: &mut Vec<u8>) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: `u16` has no padding and `u8` no alignment, so the words' memory is
        // `2 len` initialized bytes; on a little-endian target they are in stream order.
        let bytes =
            unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), 2 * words.len()) };
        out.extend_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
}

/// A stream read from a frame (its table, states and words), not yet decoded.
#[derive(Debug)]
pub struct Stream<'a> {
    params: RansParams,
    /// The decode table; empty for the empty stream.
    table: Vec<u32>,
    states: [u32; MAX_LANES],
    words: &'a [u8],
    /// Symbols the stream must decode to.
    len: usize,
}

impl<'a> Stream<'a> {
    /// Reads a stream written by [`encode`] for `len` symbols below `alphabet`, consuming
    /// exactly its bytes from `r`.
    pub fn read(
        r: &mut Reader<'a>,
        alphabet: usize,
        params: RansParams,
        len: usize,
    ) -> Result<Stream<'a>> {
        params.validate()?;
        let mut states = [0u32; MAX_LANES];
        let Some(freqs) = read_table(r, alphabet, params.prob_bits)? else {
            ensure_frame!(len == 0, "empty rANS stream for {len} symbols");
            return Ok(Stream {
                params,
                table: Vec::new(),
                states,
                words: &[],
                len,
            });
        };
        let table = build_dec_table(&freqs, params.prob_bits);
        for s in states.iter_mut().take(params.lanes) {
            *s = r.u32("rANS state")?;
            ensure_frame!(
                (RANS_L..1 << 31).contains(s),
                "rANS state {s:#x} outside [2^15, 2^31)"
            );
        }
        // Each symbol moves at most one word.
        let n_words = r.uvarint_max(len as u64, "rANS word count")?;
        let words = r.bytes(2 * n_words, "rANS words")?;
        Ok(Stream {
            params,
            table,
            states,
            words,
            len,
        })
    }

    /// Symbols the stream decodes to.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The arguments of the decode kernel, for `out` (of the stream's length).
    fn job<'s>(&'s mut self, out: &'s mut [u16]) -> simd::RansDecodeJob<'s> {
        assert_eq!(out.len(), self.len, "rANS output of the wrong length");
        simd::RansDecodeJob {
            words: self.words,
            table: &self.table,
            prob_bits: self.params.prob_bits,
            states: &mut self.states[..self.params.lanes],
            out,
        }
    }

    /// Checks what the kernel returned: every word consumed, every lane back at `L`.
    fn check(&self, consumed: Option<usize>) -> Result<()> {
        let consumed =
            consumed.ok_or_else(|| Error::corrupt("rANS stream ends before its symbols do"))?;
        ensure_frame!(
            consumed == self.words.len(),
            "rANS stream has {} unused bytes",
            self.words.len() - consumed
        );
        ensure_frame!(
            self.states[..self.params.lanes]
                .iter()
                .all(|&s| s == RANS_L),
            "rANS stream does not decode to its initial state"
        );
        Ok(())
    }

    /// Decodes the stream into `out`, whose length must be [`Stream::len`].
    pub fn decode(mut self, out: &mut [u16]) -> Result<()> {
        if self.table.is_empty() {
            return Ok(());
        }
        let job = self.job(out);
        let consumed =
            (simd::kernels().rans_decode)(job.words, job.table, job.prob_bits, job.states, job.out);
        self.check(consumed)
    }
}

/// Decodes two streams, interleaving them on this thread where the kernels can (a decoder
/// waits on memory and multiplies most of the time, and another stream's work fits in the
/// gaps); the results are those of [`Stream::decode`] on each.
pub fn decode_pair(
    mut a: Stream,
    out_a: &mut [u16],
    mut b: Stream,
    out_b: &mut [u16],
) -> [Result<()>; 2] {
    if a.table.is_empty() || b.table.is_empty() {
        return [a.decode(out_a), b.decode(out_b)];
    }
    let consumed = (simd::kernels().rans_decode2)(&mut [a.job(out_a), b.job(out_b)]);
    [a.check(consumed[0]), b.check(consumed[1])]
}

/// Decodes a stream written by [`encode`] into `out` (whose length is the symbol count),
/// consuming exactly the stream's bytes from `r`.
pub fn decode(r: &mut Reader, alphabet: usize, params: RansParams, out: &mut [u16]) -> Result<()> {
    Stream::read(r, alphabet, params, out.len())?.decode(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(symbols: &[u16], alphabet: usize, params: RansParams) -> Vec<u8> {
        let mut out = vec![];
        encode(
            symbols,
            alphabet,
            None,
            params,
            &mut EncScratch::default(),
            &mut out,
        );
        let mut dec = vec![0u16; symbols.len()];
        let mut r = Reader::new(&out);
        decode(&mut r, alphabet, params, &mut dec).unwrap();
        r.finish("stream").unwrap();
        assert_eq!(dec, symbols);
        out
    }

    #[test]
    fn reciprocal_division_is_exact() {
        // Every frequency at the largest precision, against states across the range.
        let bits = MAX_PROB_BITS;
        for f in 1..=(1u32 << bits) {
            let mut freqs = vec![0u32; 2];
            freqs[0] = f;
            freqs[1] = (1 << bits) - f;
            let t = EncTable::new(&freqs, bits);
            let x_max = f << (31 - bits);
            for x in [
                RANS_L,
                RANS_L + 1,
                x_max / 3 + 7,
                x_max - 1,
                1 << 30,
                (1 << 31) - 1,
            ] {
                let (y, _) = encode_step(x, t.rcp[0], t.info[0], bits);
                let x = if x >= x_max { x >> 16 } else { x };
                let want = ((x / f) << bits) + x % f;
                assert_eq!(y, want, "f={f} x={x}");
            }
        }
    }

    #[test]
    fn edge_cases() {
        let p = RansParams::DEFAULT;
        round_trip(&[], 4, p);
        round_trip(&[3], 4, p);
        round_trip(&[0; 1000], 4, p);
        round_trip(&[511, 0, 511, 0, 7], 512, p);
        // One rare symbol among many common ones.
        let mut v = vec![1u16; 100_000];
        v[50_000] = 2;
        round_trip(&v, 3, p);
        // Every symbol of the largest alphabet.
        let v: Vec<u16> = (0..5000).map(|i| (i * 7 % 512) as u16).collect();
        round_trip(&v, 512, p);
    }

    #[test]
    fn compresses_near_the_entropy() {
        // A skewed distribution over 40 symbols.
        let mut x = 12345u64;
        let v: Vec<u16> = (0..200_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as u32).trailing_zeros().min(39) as u16
            })
            .collect();
        let mut counts = vec![0u32; 64];
        freq::histogram(&v, &mut counts);
        let bound = freq::entropy_bits(&counts) * v.len() as f64 / 8.0;
        let out = round_trip(&v, 64, RansParams::DEFAULT);
        assert!(
            (out.len() as f64) < bound * 1.01 + 300.0,
            "{} vs {bound}",
            out.len()
        );
    }

    #[test]
    fn hostile_streams_fail_cleanly() {
        let v: Vec<u16> = (0..3000).map(|i| (i % 17) as u16).collect();
        let p = RansParams::DEFAULT;
        let good = round_trip(&v, 32, p);
        for n in 0..good.len() {
            let mut dec = vec![0u16; v.len()];
            assert!(decode(&mut Reader::new(&good[..n]), 32, p, &mut dec).is_err());
        }
        for bit in (0..good.len() * 8).step_by(3) {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let mut dec = vec![0u16; v.len()];
            let mut r = Reader::new(&bad);
            // Either an error, or (rarely, for flips that keep the stream consistent) output
            // that differs: never a panic.
            if decode(&mut r, 32, p, &mut dec).is_ok() && r.remaining() == 0 {
                assert_ne!(dec, v, "bit {bit} went unnoticed");
            }
        }
    }

    proptest! {
        #[test]
        fn round_trips(
            symbols in proptest::collection::vec(0u16..300, 0..3000),
            lanes_log in 0u32..=5,
            bits in 9u32..=11,
        ) {
            round_trip(&symbols, 300, RansParams { lanes: 1 << lanes_log, prob_bits: bits });
        }
    }
}
