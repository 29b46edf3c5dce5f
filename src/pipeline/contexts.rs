//! Row contexts of the error-bounded coder (chunk mode 2 of `[uniform_quant, rans]`, format
//! version 2): a chunk's symbols coded with up to four rANS tables, one per class of rows.
//!
//! The rows of an activation or gradient differ in scale (a token's gradient follows its
//! loss, an activation's norm its position and content), so one table per chunk fits none of
//! them well. The chunk is cut into segments of whole rows (`len` elements; the first one,
//! `first`, ends at a row boundary of the tensor), each segment gets a class, and the symbols
//! of each class are coded as one stream with its own table. Which class a segment gets is
//! the encoder's choice; the decoder reads the map. On the built-in GPT boundary gradient the
//! symbols' order-0 entropy at the `balanced` step falls from 6.76 to 6.36 bits per element
//! with four classes of rows by their RMS.
//!
//! The encoder ([`choose`]) probes about a quarter of the segments: it ranks them by their
//! mean symbol (the zigzagged codes grow with `|q|`), cuts them into four base classes of
//! equal counts at the quartiles, estimates from a sample of their symbols what every
//! grouping of neighbouring base classes would cost (entropy, tables, stream states, the map)
//! and keeps the cheapest, when it saves at least [`MARGIN`] of the one-table cost; the other
//! segments then fall in the base class of their mean among the quartiles'. Otherwise the
//! chunk is coded with one table (mode 1). A chunk under [`CHECKED_BELOW`] elements whose
//! classes were picked is coded with one table as well, and the smaller kept. The check
//! costs about 0.06 ns per element on a Zen 4 core (a third of the sampled histogram every
//! chunk needs anyway).

use std::ops::Range;

use super::lossy;
use crate::entropy::freq;
use crate::entropy::rans::{self, EncScratch, RansParams, Stream};
use crate::error::{ensure_frame, Result};
use crate::format::{put_uvarint, Reader};
use crate::quant::uniform::{ALPHABET, ESC};

/// Most classes a chunk may have (two bits each in the map).
pub const MAX_CLASSES: usize = 4;
/// Segments have at least this many elements (whole rows): the map then costs at most 1/128
/// of a bit per element.
const MIN_SEGMENT: u64 = 256;
/// Chunks with fewer elements or segments are coded with one table.
const MIN_ELEMS: usize = 1 << 12;
const MIN_SEGMENTS: usize = 8;
/// The share of the one-table cost that classes must save (the estimate's own error, and
/// the time the classes take).
const MARGIN: f64 = 0.02;
/// One symbol in this many (with a phase that moves from segment to segment) is counted for
/// the estimate.
const STRIDE: usize = 8;
/// Chunks of fewer elements for which [`choose`] picks classes are coded with one table as
/// well, and the smaller kept: their classes' estimates rest on fewer than 512 sampled
/// symbols each (a 16384-element bottleneck tensor, 8 x 128 tokens x 16 channels of the
/// built-in activation at 1%, came out 7% larger with the classes it chose). A second coding
/// of a chunk this small costs little.
pub const CHECKED_BELOW: usize = 1 << 16;

/// How a chunk of `n` elements is cut into segments: `first` elements, then `len` each (the
/// last may be shorter); `1 <= first <= len <= n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    n: usize,
    len: usize,
    first: usize,
}

impl Segments {
    /// The segments of a chunk of `n` elements starting at element `base` of a tensor whose
    /// segments are `len` elements (see [`segment_len`]; 0 for none), aligned to multiples of
    /// `len` in the tensor; `None` when the chunk is not longer than one segment.
    pub fn for_chunk(n: usize, base: u64, len: u64) -> Option<Segments> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0 && l < n)?;
        let first = len - (base % len as u64) as usize;
        Some(Segments { n, len, first })
    }

    /// The number of segments.
    pub fn count(&self) -> usize {
        if self.n <= self.first {
            1
        } else {
            1 + (self.n - self.first).div_ceil(self.len)
        }
    }

    /// The elements of segment `j` (below [`Segments::count`]).
    pub fn range(&self, j: usize) -> Range<usize> {
        if j == 0 {
            0..self.first.min(self.n)
        } else {
            let start = self.first + (j - 1) * self.len;
            start..(start + self.len).min(self.n)
        }
    }
}

/// The segment length of a tensor of `shape`: whole rows (its last dimension) of at least
/// [`MIN_SEGMENT`] elements; 0 (no contexts) for a tensor of fewer than two dimensions.
pub fn segment_len(shape: &[u64]) -> u64 {
    match shape {
        [.., _, d] if *d > 0 => d.checked_mul(MIN_SEGMENT.div_ceil(*d)).unwrap_or(0),
        _ => 0,
    }
}

/// `log2(x)` for a positive, finite, normal `x`, from IEEE operations only (no libm), so that
/// the encoder's choices, and so its frames, are the same on every platform. Accurate to
/// about 1e-10.
fn log2(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln(m) = 2 atanh(t) with |t| < 0.172.
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series = 1.0
        + t2 * (1.0 / 3.0
            + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0)))));
    e as f64 + 2.0 * t * series * std::f64::consts::LOG2_E
}

/// The sum of `symbols` (each below [`ALPHABET`]), in sixteen 16-bit lanes, which the
/// compiler vectorizes without widening: a lane adds at most 128 symbols of a block of 2048
/// before the block's lanes are added up, so it stays below 2^16.
fn sum(symbols: &[u16]) -> u64 {
    const { assert!(128 * ALPHABET < 1 << 16) };
    let mut total = 0;
    for block in symbols.chunks(2048) {
        let mut acc = [0u16; 16];
        let mut it = block.chunks_exact(16);
        for v in &mut it {
            for (a, &x) in acc.iter_mut().zip(v) {
                *a = a.wrapping_add(x);
            }
        }
        total += it.remainder().iter().map(|&x| u64::from(x)).sum::<u64>();
        total += acc.iter().map(|&a| u64::from(a)).sum::<u64>();
    }
    total
}

/// `c log2(c)` for the counts below [`CLOG_TABLE`], from [`log2`].
fn clog(c: u32) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        (0..CLOG_TABLE)
            .map(|c| {
                if c < 2 {
                    0.0
                } else {
                    f64::from(c) * log2(f64::from(c))
                }
            })
            .collect()
    });
    match t.get(c as usize) {
        Some(&v) => v,
        None => f64::from(c) * log2(f64::from(c)),
    }
}

const CLOG_TABLE: u32 = 1 << 12;

/// The estimated bits of a stream of `elems` symbols whose sampled histogram is `h`: the
/// sample's entropy (with the Miller-Madow correction for its size), the table (about two
/// bytes a symbol, three for frequencies above 128) and the lanes' states.
fn stream_bits(h: &[u32], elems: f64, rans: &RansParams) -> f64 {
    let m: u64 = h.iter().map(|&c| u64::from(c)).sum();
    if elems == 0.0 || m == 0 {
        return 0.0;
    }
    let mf = m as f64;
    // Frequencies above 128 of `2^prob_bits` take a second varint byte.
    let wide_at = (129 * m) >> rans.prob_bits;
    let (mut sum, mut present, mut wide) = (0.0, 0u32, 0u32);
    let (mut once, mut twice) = (0u32, 0u32);
    for &c in h.iter().filter(|&&c| c > 0) {
        sum += clog(c);
        present += 1;
        wide += u32::from(u64::from(c) > wide_at);
        once += u32::from(c == 1);
        twice += u32::from(c == 2);
    }
    // The symbols the sample missed (Chao1), each with a table entry of its own: a class's
    // smaller sample misses more of them than the whole chunk's does.
    let unseen = f64::from(once) * f64::from(once.saturating_sub(1)) / (2.0 * f64::from(twice + 1));
    // sum(c log2(m / c)) / m, plus the correction.
    let per = log2(mf) - sum / mf + f64::from(present - 1) / (2.0 * mf * std::f64::consts::LN_2);
    per * elems
        + 16.0 * (f64::from(present) + unseen)
        + 8.0 * f64::from(wide)
        + 32.0 * rans.lanes as f64
        + 24.0
}

/// Reusable buffers of [`choose`] and [`write`].
#[derive(Debug, Default)]
pub struct Scratch {
    /// Each segment's class.
    classes: Vec<u8>,
    /// The probed segments by their (scaled) symbol sums.
    keys: Vec<(u64, u32)>,
    /// Sampled histograms of the base classes.
    hist: Vec<u32>,
    /// The symbols in class order.
    ctx: Vec<u16>,
    counts: Vec<u32>,
    /// Where each segment of a class starts, in the class's symbols and in the chunk.
    spans: Vec<(usize, usize)>,
    /// The escaped elements' indices.
    escaped_at: Vec<u32>,
}

/// Picks each segment's class for the chunk's `symbols`; returns how many classes (1: code
/// the chunk with one table). The classes are kept in `s` for [`write`].
pub fn choose(symbols: &[u16], seg: Segments, rans: &RansParams, s: &mut Scratch) -> usize {
    const B: usize = MAX_CLASSES;
    const { assert!(B == 4) };
    let n = symbols.len();
    debug_assert_eq!(n, seg.n);
    let count = seg.count();
    if n < MIN_ELEMS || count < MIN_SEGMENTS {
        return 1;
    }
    // Probe about one segment in four (all of a chunk of few): rank the probed segments by
    // their mean symbol (ties by position) and cut them into four base classes of equal
    // counts... The probed ones are picked by the top bits of a multiplicative hash of their
    // index (a low-discrepancy sequence), so that rows of a periodic kind cannot all fall
    // outside (or inside) the probe.
    let all = count < 64;
    let probed = |j: usize| all || (j as u32).wrapping_mul(0x9E37_79B1) >> 30 == 0;
    let full = seg.len as u64;
    let key = |j: usize| {
        let r = seg.range(j);
        let len = r.len() as u64;
        let t = sum(&symbols[r]);
        // The sum scaled to a whole segment (a division only for the partial ones).
        if len == full {
            t
        } else {
            (u128::from(t) * u128::from(full) / u128::from(len)) as u64
        }
    };
    s.keys.clear();
    s.keys.extend(
        (0..count)
            .filter(|&j| probed(j))
            .map(|j| (key(j), j as u32)),
    );
    let m = s.keys.len();
    let cut = [0, m / 4, m / 2, 3 * m / 4, m];
    // (The keys are distinct, so the classes do not depend on how the selection orders
    // the rest.)
    s.keys.select_nth_unstable(cut[2]);
    let (lo, hi) = s.keys.split_at_mut(cut[2]);
    lo.select_nth_unstable(cut[1]);
    hi.select_nth_unstable(cut[3] - cut[2]);
    let thresholds = [s.keys[cut[1]], s.keys[cut[2]], s.keys[cut[3]]];
    s.classes.clear();
    s.classes.resize(count, 0);
    for b in 0..B {
        for &(_, j) in &s.keys[cut[b]..cut[b + 1]] {
            s.classes[j as usize] = b as u8;
        }
    }
    // ...count a sample of each (one symbol in `STRIDE`, the phase moving from segment to
    // segment)...
    s.hist.clear();
    s.hist.resize(B * ALPHABET, 0);
    let mut elems = [0u64; B];
    for j in (0..count).filter(|&j| probed(j)) {
        let r = seg.range(j);
        let c = usize::from(s.classes[j]);
        elems[c] += r.len() as u64;
        let h = &mut s.hist[c * ALPHABET..(c + 1) * ALPHABET];
        let mut i = r.start + j * 7 % STRIDE;
        while i < r.end {
            h[usize::from(symbols[i])] += 1;
            i += STRIDE;
        }
    }
    // (The probed segments stand for all: their element counts are scaled to the chunk.)
    let scale = n as f64 / elems.iter().sum::<u64>() as f64;
    // ...and keep the cheapest grouping of neighbouring base classes: bit `b` of `cuts`
    // starts a new class at base class `b + 1`. `bits[b][e]`: base classes `b..e` as one.
    let mut bits = [[0.0f64; B + 1]; B];
    let mut merged = vec![0u32; ALPHABET];
    for b in 0..B {
        merged.fill(0);
        for e in b + 1..=B {
            for (m, &h) in merged
                .iter_mut()
                .zip(&s.hist[(e - 1) * ALPHABET..e * ALPHABET])
            {
                *m += h;
            }
            let class_elems = elems[b..e].iter().sum::<u64>() as f64 * scale;
            bits[b][e] = stream_bits(&merged, class_elems, rans);
        }
    }
    let cost = |cuts: u32| -> f64 {
        let mut total = 2.0 * count as f64 + 32.0;
        let mut b = 0;
        for e in (1..=B).filter(|&e| e == B || cuts & (1 << (e - 1)) != 0) {
            total += bits[b][e];
            b = e;
        }
        total
    };
    let one = bits[0][B];
    let (best, best_cost) = (1..1u32 << (B - 1))
        .map(|cuts| (cuts, cost(cuts)))
        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    if best_cost > one * (1.0 - MARGIN) {
        return 1;
    }
    // Class of each base class.
    let mut group = [0u8; B];
    for b in 1..B {
        group[b] = group[b - 1] + u8::from(best & (1 << (b - 1)) != 0);
    }
    for (j, c) in s.classes.iter_mut().enumerate() {
        // A segment not probed falls in the base class of its key among the probed ones'.
        let base = if probed(j) {
            usize::from(*c)
        } else {
            let k = (key(j), j as u32);
            thresholds.iter().filter(|&&t| k >= t).count()
        };
        *c = group[base];
    }
    best.count_ones() as usize + 1
}

/// How [`write`] escapes elements.
pub struct Escapes<'a> {
    /// The chunk's elements (little-endian, `isz` bytes each).
    pub input: &'a [u8],
    pub isz: usize,
    /// Whether the quantizer escaped any element.
    pub quantizer: bool,
    /// Whether the elements of each class's rarest direct codes may be escaped (see
    /// `lossy::rare_escapes`): rounding to nearest only.
    pub rare: bool,
}

/// Appends a mode-2 chunk's contexts and symbol streams (the part of the payload that takes
/// the place of mode 1's one stream): the class count, the segments, the map, then one rANS
/// stream per class of the symbols of its segments in element order. `classes` and the
/// segments' classes come from [`choose`]. Each class's rarest direct codes are escaped as
/// in mode 1, by that class's table; the bytes of every escaped element go to `escaped`, in
/// element order. `flagged` is scratch.
#[allow(clippy::too_many_arguments)]
pub fn write(
    symbols: &[u16],
    seg: Segments,
    classes: usize,
    rans: &RansParams,
    esc: Escapes,
    s: &mut Scratch,
    enc: &mut EncScratch,
    flagged: &mut Vec<u32>,
    escaped: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    debug_assert!((2..=MAX_CLASSES).contains(&classes));
    out.push(classes as u8);
    put_uvarint(out, seg.len as u64);
    put_uvarint(out, seg.first as u64);
    for four in s.classes.chunks(4) {
        out.push(
            four.iter()
                .enumerate()
                .fold(0u8, |b, (i, &c)| b | (c << (2 * i))),
        );
    }
    s.ctx.clear();
    s.ctx.reserve(symbols.len());
    s.escaped_at.clear();
    // The classes of a chunk large enough for sampled counts are sampled from half that size
    // on (a chunk of 2^18 symbols has classes of about 2^16: counting all of those under
    // 2^16 took a quarter more time than the one table's counts).
    let min_sampled = if symbols.len() >= freq::SAMPLED_COUNTS {
        freq::SAMPLED_COUNTS / 2
    } else {
        usize::MAX
    };
    for c in 0..classes as u8 {
        // The class's symbols, and where each of its segments starts in them and in the
        // chunk.
        let start = s.ctx.len();
        s.spans.clear();
        for (j, _) in s.classes.iter().enumerate().filter(|&(_, &k)| k == c) {
            let r = seg.range(j);
            s.spans.push((s.ctx.len() - start, r.start));
            s.ctx.extend_from_slice(&symbols[r]);
        }
        let part = &mut s.ctx[start..];
        let estimated = lossy::symbol_counts(part, &mut s.counts, min_sampled);
        let mut escape = [false; ALPHABET];
        let min = if esc.rare {
            lossy::rare_escapes(
                &mut s.counts,
                estimated,
                esc.isz,
                rans.prob_bits,
                &mut escape,
            )
        } else {
            ESC
        };
        if esc.quantizer || min < ESC {
            // Each escape's index in the chunk, from the span its position in the class
            // falls in (the positions come in order).
            let (spans, escaped_at) = (&s.spans, &mut s.escaped_at);
            let mut span = 0;
            // The exact count (sampled counts only estimate the symbols moved to it).
            s.counts[usize::from(ESC)] = lossy::mark_escapes(part, &escape, min, flagged, |p| {
                while span + 1 < spans.len() && spans[span + 1].0 <= p {
                    span += 1;
                }
                let (at, first) = spans[span];
                escaped_at.push((first + p - at) as u32);
            });
        }
        rans::encode(part, ALPHABET, Some(&s.counts), *rans, enc, out);
    }
    s.escaped_at.sort_unstable();
    escaped.clear();
    escaped.reserve(s.escaped_at.len() * esc.isz);
    for &i in &s.escaped_at {
        let i = i as usize * esc.isz;
        escaped.extend_from_slice(&esc.input[i..i + esc.isz]);
    }
}

/// Reads what [`write`] wrote for a chunk of `n` elements and puts the symbols, in element
/// order, in `out`.
pub fn read(
    r: &mut Reader,
    n: usize,
    rans: RansParams,
    s: &mut Scratch,
    out: &mut Vec<u16>,
) -> Result<()> {
    let classes = usize::from(r.u8("context classes")?);
    ensure_frame!(
        (2..=MAX_CLASSES).contains(&classes),
        "{classes} context classes: a chunk has 2 to {MAX_CLASSES}"
    );
    let len = r.uvarint_max(n as u64, "context segment length")?;
    ensure_frame!(len > 0, "context segments of 0 elements");
    let first = r.uvarint_max(len as u64, "context first segment")?;
    ensure_frame!(first > 0, "context first segment of 0 elements");
    let seg = Segments { n, len, first };
    let count = seg.count();
    let map = r.bytes(count.div_ceil(4), "context map")?;
    s.classes.clear();
    let mut sizes = [0usize; MAX_CLASSES];
    for j in 0..count {
        let c = (map[j / 4] >> (2 * (j % 4))) & 3;
        ensure_frame!(
            usize::from(c) < classes,
            "segment {j} is in context class {c} of {classes}"
        );
        s.classes.push(c);
        sizes[usize::from(c)] += seg.range(j).len();
    }
    if !count.is_multiple_of(4) {
        ensure_frame!(
            map[count / 4] >> (2 * (count % 4)) == 0,
            "context map padding is not zero"
        );
    }
    // The streams, two at a time (decoded together on this thread).
    s.ctx.resize(n, 0);
    let mut rest = &mut s.ctx[..];
    let mut c = 0;
    while c < classes {
        let (a, tail) = rest.split_at_mut(sizes[c]);
        let sa = Stream::read(r, ALPHABET, rans, sizes[c])?;
        if c + 1 < classes {
            let (b, tail) = tail.split_at_mut(sizes[c + 1]);
            let sb = Stream::read(r, ALPHABET, rans, sizes[c + 1])?;
            let [x, y] = rans::decode_pair(sa, a, sb, b);
            x.and(y)?;
            rest = tail;
            c += 2;
        } else {
            sa.decode(a)?;
            rest = tail;
            c += 1;
        }
    }
    // Back into element order.
    let mut at = [0usize; MAX_CLASSES];
    for c in 1..classes {
        at[c] = at[c - 1] + sizes[c - 1];
    }
    out.resize(n, 0);
    for (j, &c) in s.classes.iter().enumerate() {
        let r = seg.range(j);
        let from = &mut at[usize::from(c)];
        out[r.clone()].copy_from_slice(&s.ctx[*from..*from + r.len()]);
        *from += r.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;

    const RANS: RansParams = RansParams {
        lanes: 32,
        prob_bits: 11,
    };

    #[test]
    fn segments_cover_the_chunk_on_row_boundaries() {
        assert_eq!(segment_len(&[7, 100]), 300);
        assert_eq!(segment_len(&[3, 7, 1024]), 1024);
        assert_eq!(segment_len(&[9, 1]), 256);
        assert_eq!(segment_len(&[4096]), 0);
        assert_eq!(segment_len(&[]), 0);
        assert_eq!(segment_len(&[5, 0]), 0);
        // Segments of 300 (rows of 100), the chunk starting 50 elements into one.
        let seg = Segments::for_chunk(1000, 350, 300).unwrap();
        let ranges: Vec<_> = (0..seg.count()).map(|j| seg.range(j)).collect();
        assert_eq!(ranges, [0..250, 250..550, 550..850, 850..1000]);
        let seg = Segments::for_chunk(900, 600, 300).unwrap();
        let ranges: Vec<_> = (0..seg.count()).map(|j| seg.range(j)).collect();
        assert_eq!(ranges, [0..300, 300..600, 600..900]);
        assert!(Segments::for_chunk(300, 0, 300).is_none());
        assert!(Segments::for_chunk(300, 0, 0).is_none());
    }

    #[test]
    fn sums_are_exact() {
        let mut x = 7u32;
        let symbols: Vec<u16> = (0..10_000)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if x >> 31 == 1 {
                    (ALPHABET - 1) as u16
                } else {
                    (x >> 20) as u16 % 506
                }
            })
            .collect();
        for len in [0, 1, 15, 16, 17, 2047, 2048, 2049, 4111, 10_000] {
            let want: u64 = symbols[..len].iter().map(|&v| u64::from(v)).sum();
            assert_eq!(sum(&symbols[..len]), want, "{len}");
        }
    }

    #[test]
    fn log2_is_accurate() {
        for x in [
            1.0, 2.0, 3.0, 1.41, 1.42, 0.7, 1e-300, 262144.0, 1e300, 12345.678,
        ] {
            assert!((log2(x) - x.log2()).abs() < 1e-9, "{x}");
        }
        assert_eq!(log2(1.0), 0.0);
        assert_eq!(log2(1024.0), 10.0);
    }

    /// Symbols of `rows` rows of `d`, row `i` drawn around zero with a spread of `scale(i)`
    /// (zigzagged, as the quantizer's symbols are).
    fn rows_of(rows: usize, d: usize, scale: impl Fn(usize) -> f64) -> Vec<u16> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut out = Vec::with_capacity(rows * d);
        for i in 0..rows {
            for _ in 0..d {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // A sum of uniforms: roughly normal.
                let u = (0..4)
                    .map(|k| ((x >> (16 * k)) & 0xffff) as f64 / 65536.0)
                    .sum::<f64>()
                    - 2.0;
                let q = (u * scale(i)).round() as i64;
                let z = if q < 0 { -2 * q - 1 } else { 2 * q };
                out.push(z.min(479) as u16);
            }
        }
        out
    }

    fn round_trip(symbols: &[u16], seg: Segments, s: &mut Scratch) -> (usize, Vec<u8>) {
        let classes = choose(symbols, seg, &RANS, s);
        let mut out = vec![];
        if classes > 1 {
            let input: Vec<u8> = symbols.iter().flat_map(|v| v.to_le_bytes()).collect();
            let esc = Escapes {
                input: &input,
                isz: 2,
                quantizer: false,
                rare: false,
            };
            let mut escaped = vec![];
            write(
                symbols,
                seg,
                classes,
                &RANS,
                esc,
                s,
                &mut EncScratch::default(),
                &mut vec![],
                &mut escaped,
                &mut out,
            );
            assert!(escaped.is_empty());
            let mut back = vec![];
            let mut r = Reader::new(&out);
            read(
                &mut r,
                symbols.len(),
                RANS,
                &mut Scratch::default(),
                &mut back,
            )
            .unwrap();
            r.finish("contexts").unwrap();
            assert_eq!(back, symbols);
        }
        (classes, out)
    }

    #[test]
    fn rows_of_different_scales_get_classes_and_code_smaller() {
        let mut s = Scratch::default();
        // Scales spread over two orders of magnitude, in no order.
        let symbols = rows_of(1024, 256, |i| 0.5 * 1.005f64.powi((i * 389 % 1024) as i32));
        let seg = Segments::for_chunk(symbols.len(), 0, 256).unwrap();
        let (classes, coded) = round_trip(&symbols, seg, &mut s);
        assert!(classes >= 3, "{classes}");
        let mut one = vec![];
        rans::encode(
            &symbols,
            ALPHABET,
            None,
            RANS,
            &mut EncScratch::default(),
            &mut one,
        );
        assert!(
            (coded.len() as f64) < 0.93 * one.len() as f64,
            "{} {}",
            coded.len(),
            one.len()
        );
        // Rows of one scale: one table.
        let same = rows_of(1024, 256, |_| 8.0);
        assert_eq!(round_trip(&same, seg, &mut s).0, 1);
        // Too few segments.
        let short = &symbols[..256 * 7];
        let seg = Segments::for_chunk(short.len(), 0, 256).unwrap();
        assert_eq!(round_trip(short, seg, &mut s).0, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_segments_round_trip(
            rows in 16usize..200,
            d in 1usize..700,
            base in 0u64..5000,
            spread in 1u32..6,
        ) {
            let symbols = rows_of(rows, d, |i| f64::from(1 << (i as u32 % spread)) * 2.0);
            let len = segment_len(&[rows as u64, d as u64]);
            if let Some(seg) = Segments::for_chunk(symbols.len(), base, len) {
                let covered: usize = (0..seg.count()).map(|j| seg.range(j).len()).sum();
                prop_assert_eq!(covered, symbols.len());
                let mut s = Scratch::default();
                let (classes, _) = round_trip(&symbols, seg, &mut s);
                prop_assert!(classes <= MAX_CLASSES);
            }
        }
    }

    #[test]
    fn malformed_contexts_are_corrupt() {
        // 32 segments (all probed) of two kinds.
        let symbols = rows_of(32, 256, |i| if i % 2 == 0 { 0.2 } else { 100.0 });
        let seg = Segments::for_chunk(symbols.len(), 0, 256).unwrap();
        let mut s = Scratch::default();
        let (classes, good) = round_trip(&symbols, seg, &mut s);
        assert_eq!(classes, 2);
        // classes, len (2 bytes), first (2 bytes), map (8 bytes), streams
        assert_eq!(&good[..5], &[2, 0x80, 0x02, 0x80, 0x02]);
        let n = symbols.len();
        let decode = |b: &[u8]| {
            let mut r = Reader::new(b);
            let mut out = vec![];
            read(&mut r, n, RANS, &mut Scratch::default(), &mut out)
                .and_then(|_| r.finish("contexts"))
        };
        let mut cases: Vec<(Vec<u8>, &str)> = vec![];
        for c in [0u8, 1, 5] {
            let mut b = good.clone();
            b[0] = c;
            cases.push((b, "context classes"));
        }
        let mut b = good.clone();
        b[1..3].copy_from_slice(&[0, 0]);
        cases.push((b, "0 elements"));
        let mut b = good.clone();
        b[3..5].copy_from_slice(&[0x81, 0x02]); // first = 257 > len
        cases.push((b, "more than"));
        let mut b = good.clone();
        b.splice(3..5, [0]); // first = 0
        cases.push((b, "0 elements"));
        let mut b = good.clone();
        b[5] |= 0b11; // class 3 of 2
        cases.push((b, "class 3 of 2"));
        let mut b = good.clone();
        b[5] ^= 0b01; // another map: the streams no longer match their sizes
        cases.push((b, "rANS"));
        for (b, what) in cases {
            let e = decode(&b).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::CorruptFrame, "{what}: {e}");
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
        // 17 segments: the last map byte's padding must be zero.
        let symbols = rows_of(17, 256, |i| if i % 2 == 0 { 0.2 } else { 100.0 });
        let seg = Segments::for_chunk(symbols.len(), 0, 256).unwrap();
        let (classes, mut b) = round_trip(&symbols, seg, &mut s);
        assert_eq!(classes, 2);
        b[5 + 4] |= 0b100;
        let mut r = Reader::new(&b);
        let e = read(
            &mut r,
            symbols.len(),
            RANS,
            &mut Scratch::default(),
            &mut vec![],
        )
        .unwrap_err();
        assert!(e.to_string().contains("padding"), "{e}");
    }
}
