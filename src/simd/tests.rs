//! Every kernel of every level this CPU supports against the scalar reference, bit for bit.

use proptest::prelude::*;

use super::*;
use crate::entropy::freq;
use crate::entropy::rans::{build_dec_table, EncTable, RANS_L};
use crate::quant::bitpack;

/// SplitMix64: a small deterministic generator for test data.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(super) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The vector levels to check (scalar against itself proves nothing).
fn levels() -> Vec<Kernels> {
    available()
        .into_iter()
        .filter(|&l| l != Level::Scalar)
        .map(kernels_for)
        .collect()
}

/// Sentinel elements after the end of every output slice, to catch writes past it.
const SLACK: usize = 80;

const LENGTHS: [usize; 12] = [0, 1, 2, 31, 32, 33, 63, 511, 512, 513, 1000, 100_000];

/// Symbols below `alphabet`: uniform, or skewed (geometric around a centre) like real
/// exponents.
fn symbols(rng: &mut Rng, n: usize, alphabet: usize, skewed: bool) -> Vec<u16> {
    (0..n)
        .map(|_| {
            if skewed && alphabet > 2 {
                let centre = alphabet / 2;
                let d = (rng.next() | 1 << 40).trailing_zeros() as usize;
                let s = if rng.next() & 1 == 0 {
                    centre + d
                } else {
                    centre.saturating_sub(d)
                };
                s.min(alphabet - 1) as u16
            } else {
                rng.below(alphabet as u64) as u16
            }
        })
        .collect()
}

/// Encoder and decoder tables for `syms` (adding one occurrence of symbol 0 when empty).
fn tables(syms: &[u16], alphabet: usize, prob_bits: u32) -> (EncTable, Vec<u32>) {
    let mut counts = vec![0u32; alphabet];
    freq::histogram(syms, &mut counts);
    if syms.is_empty() {
        counts[0] = 1;
    }
    let freqs = freq::normalize(&counts, prob_bits).expect("normalizable");
    (
        EncTable::new(&freqs, prob_bits),
        build_dec_table(&freqs, prob_bits),
    )
}

/// Encodes with `k` and with the scalar kernels and checks they agree; returns the stream
/// bytes and the final states.
fn check_encode(k: &Kernels, syms: &[u16], t: &EncTable, lanes: usize) -> (Vec<u8>, Vec<u32>) {
    // Sentinel words: the kernels must not touch those below the ones they emit, nor any
    // past the end of the slice they get. The runs without slack give a sanitizer exact
    // allocations to check.
    let run = |f: RansEncodeFn, slack: usize| {
        let mut states = vec![RANS_L; lanes];
        let mut words = vec![0xA55Au16; syms.len() + slack];
        let start = f(
            syms,
            &t.rcp,
            &t.info,
            t.prob_bits,
            &mut states,
            &mut words[..syms.len()],
        );
        (start, states, words)
    };
    let want = run(SCALAR.rans_encode, SLACK);
    for slack in [SLACK, 0] {
        let got = run(k.rans_encode, slack);
        assert_eq!(
            got.0,
            want.0,
            "{:?} encode start, n={} lanes={lanes}",
            k.level,
            syms.len()
        );
        assert_eq!(got.1, want.1, "{:?} encode states", k.level);
        assert!(
            got.2[..] == want.2[..syms.len() + slack],
            "{:?} encode words",
            k.level
        );
    }
    let bytes = want.2[want.0..syms.len()]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    (bytes, want.1)
}

/// Decodes `n` symbols from `words` and `states` with `k` and with the scalar kernels, and
/// checks they agree on the result, the states and the symbols.
fn check_decode(
    k: &Kernels,
    words: &[u8],
    dec: &[u32],
    prob_bits: u32,
    states: &[u32],
    n: usize,
) -> Option<usize> {
    // A copy, so that a sanitizer sees the exact extent of the words.
    let words = words.to_vec();
    let run = |f: RansDecodeFn, slack: usize| {
        let mut st = states.to_vec();
        let mut out = vec![0xBEEFu16; n + slack];
        let r = f(&words, dec, prob_bits, &mut st, &mut out[..n]);
        (r, st, out)
    };
    let want = run(SCALAR.rans_decode, SLACK);
    for slack in [SLACK, 0] {
        let got = run(k.rans_decode, slack);
        assert_eq!(
            got.0,
            want.0,
            "{:?} decode result, n={n} lanes={} words={}",
            k.level,
            states.len(),
            words.len()
        );
        assert_eq!(got.1, want.1, "{:?} decode states", k.level);
        assert!(
            got.2[..] == want.2[..n + slack],
            "{:?} decode symbols",
            k.level
        );
    }
    // Paired with itself, and with a shorter stream (fewer words and symbols, and half the
    // lanes, which the vector paths leave to the one-stream kernels) in either order.
    let a = (&words[..], states, n);
    let cut = words.len() * 2 / 3;
    let b = (&words[..cut], states, n / 3);
    let c = (&words[..cut], &states[..states.len().div_ceil(2)], n / 2);
    for (x, y) in [(a, a), (a, b), (b, a), (a, c), (c, b)] {
        check_decode2(k, dec, prob_bits, x, y);
    }
    want.0
}

/// A stream of [`check_decode2`]: words, states, symbol count.
type Stream<'a> = (&'a [u8], &'a [u32], usize);

/// Checks that `k.rans_decode2` on two streams (sharing a table) gives what the scalar
/// kernel gives on each.
fn check_decode2(k: &Kernels, dec: &[u32], prob_bits: u32, a: Stream, b: Stream) {
    let run1 = |(words, states, n): Stream| {
        let mut st = states.to_vec();
        let mut out = vec![0xBEEFu16; n];
        let r = (SCALAR.rans_decode)(words, dec, prob_bits, &mut st, &mut out);
        (r, st, out)
    };
    let want = [run1(a), run1(b)];
    let (mut sa, mut sb) = (a.1.to_vec(), b.1.to_vec());
    let (mut oa, mut ob) = (vec![0xBEEFu16; a.2], vec![0xBEEFu16; b.2]);
    let mut jobs = [
        RansDecodeJob {
            words: a.0,
            table: dec,
            prob_bits,
            states: &mut sa,
            out: &mut oa,
        },
        RansDecodeJob {
            words: b.0,
            table: dec,
            prob_bits,
            states: &mut sb,
            out: &mut ob,
        },
    ];
    let got = (k.rans_decode2)(&mut jobs);
    for (i, (r, st, out)) in [(got[0], sa, oa), (got[1], sb, ob)].into_iter().enumerate() {
        assert_eq!(
            r, want[i].0,
            "{:?} paired decode result of stream {i}",
            k.level
        );
        assert_eq!(
            st, want[i].1,
            "{:?} paired decode states of stream {i}",
            k.level
        );
        assert!(
            out == want[i].2,
            "{:?} paired decode symbols of stream {i}",
            k.level
        );
    }
}

/// Round trip through every level, with truncations and corruptions of the stream.
fn check_rans(rng: &mut Rng, syms: &[u16], alphabet: usize, lanes: usize, prob_bits: u32) {
    let (t, dec) = tables(syms, alphabet, prob_bits);
    for k in levels() {
        let (words, states) = check_encode(&k, syms, &t, lanes);
        let r = check_decode(&k, &words, &dec, prob_bits, &states, syms.len());
        assert_eq!(r, Some(words.len()));
        // Truncations: every length for short streams, a sample for long ones.
        let cuts: Vec<usize> = if words.len() <= 300 {
            (0..words.len()).collect()
        } else {
            let mut c: Vec<usize> = (0..40)
                .map(|_| rng.below(words.len() as u64) as usize)
                .collect();
            c.extend((words.len() - 130..words.len()).step_by(3));
            c
        };
        for cut in cuts {
            check_decode(&k, &words[..cut], &dec, prob_bits, &states, syms.len());
        }
        // Bit flips and garbage appended.
        for _ in 0..8 {
            let mut bad = words.clone();
            if !bad.is_empty() {
                let bit = rng.below(8 * bad.len() as u64) as usize;
                bad[bit / 8] ^= 1 << (bit % 8);
            }
            let extra = rng.below(80) as usize;
            bad.extend(rng.bytes(extra));
            check_decode(&k, &bad, &dec, prob_bits, &states, syms.len());
        }
    }
}

#[test]
fn rans_matches_scalar() {
    let mut rng = Rng(1);
    for &alphabet in &[1usize, 2, 64, 512] {
        for &n in &LENGTHS {
            for lanes_log in 0..=5 {
                let lanes = 1 << lanes_log;
                // Long inputs only at the widest lanes, where the vector paths run.
                if n > 1000 && lanes < 16 {
                    continue;
                }
                for skewed in [false, true] {
                    let syms = symbols(&mut rng, n, alphabet, skewed);
                    check_rans(&mut rng, &syms, alphabet, lanes, 11);
                }
            }
        }
    }
}

#[test]
fn rans_matches_scalar_at_every_precision() {
    let mut rng = Rng(2);
    for prob_bits in 1..=11u32 {
        for &alphabet in &[1usize, 2, 3, 64, 512] {
            let alphabet = alphabet.min(1 << prob_bits);
            for &n in &[0usize, 1, 33, 700, 5000] {
                let syms = symbols(&mut rng, n, alphabet, true);
                check_rans(&mut rng, &syms, alphabet, 32, prob_bits);
            }
        }
    }
}

#[test]
fn rans_matches_scalar_around_the_dense_table_sizes() {
    // Encoders may switch strategy with the number of present symbols (a vector encoder
    // uses register tables up to 63): cover the sizes around 16, 32 and 64, with symbols
    // spread over the whole 512-symbol alphabet.
    let mut rng = Rng(7);
    for present in [1usize, 15, 16, 17, 31, 32, 33, 62, 63, 64, 65, 200] {
        let syms = spread_symbols(&mut rng, present, 5000);
        check_rans(&mut rng, &syms, 512, 32, 11);
    }
}

/// `n >= present` symbols, `present` distinct ones spread over the 512-symbol alphabet (each
/// among the first `present`, the rest drawn at random from them).
fn spread_symbols(rng: &mut Rng, present: usize, n: usize) -> Vec<u16> {
    let set: Vec<u16> = (0..present).map(|i| ((i * 173 + 5) % 512) as u16).collect();
    (0..n)
        .map(|i| {
            if i < present {
                set[i]
            } else {
                set[rng.below(present as u64) as usize]
            }
        })
        .collect()
}

/// The AVX-512 encoder fetches the entries of tables too large for its register tables by
/// gathers on some CPUs and by loads on others: both match the reference wherever the CPU
/// has AVX-512.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_rans_encoder_matches_scalar_by_gathers_and_by_loads() {
    use super::avx512;
    if !avx512::supported() {
        return;
    }
    let mut rng = Rng(9);
    for encode in [
        avx512::rans_encode_by::<true>,
        avx512::rans_encode_by::<false>,
    ] {
        let k = Kernels {
            rans_encode: encode,
            ..kernels_for(Level::Avx512)
        };
        for present in [63usize, 64, 65, 200, 512] {
            for n in [1000usize, 20_000] {
                let syms = spread_symbols(&mut rng, present, n);
                for prob_bits in [9, 11] {
                    let (t, _) = tables(&syms, 512, prob_bits);
                    check_encode(&k, &syms, &t, 32);
                }
            }
        }
    }
}

#[test]
fn rans_decode_of_garbage_matches_scalar() {
    let mut rng = Rng(3);
    for &alphabet in &[2usize, 64, 512] {
        let syms = symbols(&mut rng, 4000, alphabet, true);
        let (_, dec) = tables(&syms, alphabet, 11);
        for _ in 0..50 {
            let lanes = 1 << rng.below(6);
            let states: Vec<u32> = (0..lanes)
                .map(|_| RANS_L + rng.below(u64::from((1u32 << 31) - RANS_L)) as u32)
                .collect();
            let len = rng.below(3000) as usize;
            let words = rng.bytes(len);
            let n = rng.below(6000) as usize;
            for k in levels() {
                check_decode(&k, &words, &dec, 11, &states, n);
            }
        }
    }
}

#[test]
fn rans_encode_falls_back_on_bad_input() {
    // A symbol outside the tables panics in the reference; so must it in every level.
    let syms: Vec<u16> = (0..1000).map(|i| (i % 7) as u16).collect();
    let (t, _) = tables(&syms, 8, 11);
    let mut bad = syms.clone();
    bad[500] = 9;
    for k in levels() {
        let r = std::panic::catch_unwind(|| {
            let mut states = vec![RANS_L; 32];
            let mut words = vec![0u16; bad.len()];
            (k.rans_encode)(&bad, &t.rcp, &t.info, 11, &mut states, &mut words)
        });
        assert!(
            r.is_err(),
            "{:?} encoded a symbol outside its tables",
            k.level
        );
    }
}

const LAYOUTS: [FloatSplit; 3] = [
    FloatSplit {
        bytes: 2,
        mant_bits: 7,
    },
    FloatSplit {
        bytes: 2,
        mant_bits: 10,
    },
    FloatSplit {
        bytes: 4,
        mant_bits: 23,
    },
];

/// Element bytes: random, or drawn from special values (NaN payloads, infinities, signed
/// zeros, subnormals, extremes), or random with the low `zero_low` mantissa bits cleared.
fn elements(rng: &mut Rng, fs: FloatSplit, n: usize, special: bool, zero_low: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * fs.bytes);
    let mant = fs.mant_bits;
    let bits = 8 * fs.bytes as u32;
    let exp_all = ((1u64 << (bits - 1 - mant)) - 1) << mant;
    let sign = 1u64 << (bits - 1);
    let specials = [
        0,
        sign,
        exp_all,
        exp_all | sign,
        exp_all | 1,
        exp_all | (1 << (mant - 1)),
        exp_all | ((1 << mant) - 1) | sign,
        1,
        (1 << mant) - 1,
        sign | 1,
        (1 << mant) | 5,
        exp_all - 1,
        (1 << bits) - 1,
    ];
    for _ in 0..n {
        let v = if special && rng.below(2) == 0 {
            specials[rng.below(specials.len() as u64) as usize]
        } else {
            rng.next() & ((1u64 << bits) - 1)
        };
        let v = v & !((1u64 << zero_low) - 1);
        out.extend_from_slice(&v.to_le_bytes()[..fs.bytes]);
    }
    out
}

fn check_split(k: &Kernels, fs: FloatSplit, input: &[u8]) {
    let n = input.len() / fs.bytes;
    let run = |f: SplitFn, slack: usize| {
        let mut syms = vec![0xFFFFu16; n + slack];
        let or = f(fs, input, &mut syms[..n]);
        (or, syms)
    };
    let want = run(SCALAR.split, SLACK);
    for slack in [SLACK, 0] {
        let got = run(k.split, slack);
        assert_eq!(got.0, want.0, "{:?} split OR, {fs:?} n={n}", k.level);
        assert!(
            got.1[..] == want.1[..n + slack],
            "{:?} split symbols, {fs:?} n={n}",
            k.level
        );
    }
}

fn check_pack(k: &Kernels, fs: FloatSplit, input: &[u8], drop: u32) -> Vec<u8> {
    let n = input.len() / fs.bytes;
    let len = bitpack::packed_len(n, fs.mant_bits - drop);
    let run = |f: PackMantissaFn, slack: usize| {
        // Room past the packed length, with a sentinel: nothing there may change.
        let mut out = vec![0xC3u8; len + slack];
        f(fs, input, drop, &mut out);
        out
    };
    let want = run(SCALAR.pack_mantissa, SLACK);
    for slack in [SLACK, 0] {
        let got = run(k.pack_mantissa, slack);
        assert!(
            got[..] == want[..len + slack],
            "{:?} pack_mantissa, {fs:?} n={n} drop={drop}",
            k.level
        );
    }
    want[..len].to_vec()
}

fn check_merge(k: &Kernels, fs: FloatSplit, syms: &[u16], packed: &[u8], drop: u32) {
    // A copy, so that a sanitizer sees the exact extent of the packed bytes.
    let packed = packed.to_vec();
    let len = syms.len() * fs.bytes;
    let run = |f: MergeFn, slack: usize| {
        let mut out = vec![0x3Cu8; len + slack];
        f(fs, syms, &packed, drop, &mut out[..len]);
        out
    };
    let want = run(SCALAR.merge, SLACK);
    for slack in [SLACK, 0] {
        let got = run(k.merge, slack);
        assert!(
            got[..] == want[..len + slack],
            "{:?} merge, {fs:?} n={} drop={drop}",
            k.level,
            syms.len()
        );
    }
}

#[test]
fn float_kernels_match_scalar() {
    let mut rng = Rng(4);
    for fs in LAYOUTS {
        for &n in &LENGTHS {
            for special in [false, true] {
                for drop in 0..=fs.mant_bits {
                    // Data whose low `drop` bits are zero, as the codec would drop them.
                    let input = elements(&mut rng, fs, n, special, drop);
                    let mut syms = vec![0u16; n];
                    (SCALAR.split)(fs, &input, &mut syms);
                    for k in levels() {
                        if drop == 0 || drop == fs.mant_bits || n == 100_000 {
                            check_split(&k, fs, &input);
                        }
                        let packed = check_pack(&k, fs, &input, drop);
                        check_merge(&k, fs, &syms, &packed, drop);
                        // The mantissa bits below `drop` are ignored by pack: check it on
                        // data that has them.
                        let noisy = elements(&mut rng, fs, n, special, 0);
                        check_pack(&k, fs, &noisy, drop);
                        // Merge of arbitrary symbols (wider than the layout's) and bits.
                        let wild: Vec<u16> = (0..n).map(|_| rng.next() as u16).collect();
                        let bits = rng.bytes(packed.len());
                        check_merge(&k, fs, &wild, &bits, drop);
                    }
                }
            }
        }
    }
}

#[test]
fn split_sees_every_mantissa_bit() {
    // The OR of the mantissas decides how many bits the codec drops: one set bit in one
    // element, anywhere, must show.
    let mut rng = Rng(6);
    for fs in LAYOUTS {
        for n in [1usize, 32, 64, 100, 1024, 1029] {
            for _ in 0..40 {
                let mut input = elements(&mut rng, fs, n, false, fs.mant_bits);
                let i = rng.below(n as u64) as usize;
                let bit = rng.below(u64::from(fs.mant_bits));
                input[i * fs.bytes + bit as usize / 8] |= 1 << (bit % 8);
                for k in levels() {
                    check_split(&k, fs, &input);
                }
            }
        }
    }
}

#[test]
fn float_kernels_fall_back_on_other_layouts() {
    // Layouts without a vector path still give the reference's results.
    let mut rng = Rng(5);
    for fs in [
        FloatSplit {
            bytes: 2,
            mant_bits: 3,
        },
        FloatSplit {
            bytes: 4,
            mant_bits: 20,
        },
    ] {
        let n = 1500;
        let input = elements(&mut rng, fs, n, false, 0);
        let mut syms = vec![0u16; n];
        (SCALAR.split)(fs, &input, &mut syms);
        for k in levels() {
            check_split(&k, fs, &input);
            let packed = check_pack(&k, fs, &input, 1);
            check_merge(&k, fs, &syms, &packed, 1);
        }
    }
}

#[test]
fn level_can_be_capped() {
    assert_eq!(kernels_for(Level::Scalar).level, Level::Scalar);
    let best = detected();
    assert_eq!(kernels_for(Level::Avx512).level, best);
    for l in available() {
        assert_eq!(kernels_for(l).level, l);
    }
    assert_eq!(available()[0], Level::Scalar);
    assert_eq!(Level::parse("AVX2"), Some(Level::Avx2));
    assert_eq!(Level::parse("off"), Some(Level::Scalar));
    assert_eq!(Level::parse("sse9"), None);
}

proptest! {
    #[test]
    fn rans_round_trips_match_scalar(
        raw in proptest::collection::vec(any::<u16>(), 0..3000),
        alphabet_log in 0u32..=9,
        lanes_log in 0u32..=5,
        prob_bits in 9u32..=11,
        seed in any::<u64>(),
    ) {
        let alphabet = 1usize << alphabet_log;
        let syms: Vec<u16> = raw.iter().map(|&s| s % alphabet as u16).collect();
        check_rans(&mut Rng(seed), &syms, alphabet, 1 << lanes_log, prob_bits);
    }

    #[test]
    fn float_kernels_match_scalar_on_random_input(
        layout in 0usize..3,
        n in 0usize..2100,
        drop_frac in 0u32..=100,
        seed in any::<u64>(),
    ) {
        let fs = LAYOUTS[layout];
        let drop = fs.mant_bits * drop_frac / 100;
        let mut rng = Rng(seed);
        let input = elements(&mut rng, fs, n, true, 0);
        let mut syms = vec![0u16; n];
        (SCALAR.split)(fs, &input, &mut syms);
        for k in levels() {
            check_split(&k, fs, &input);
            let packed = check_pack(&k, fs, &input, drop);
            check_merge(&k, fs, &syms, &packed, drop);
        }
    }
}
