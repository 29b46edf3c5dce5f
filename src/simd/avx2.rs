//! AVX2 kernels (with FMA and POPCNT, which every AVX2 core since Intel's Haswell and AMD's
//! Zen has).
//!
//! The same structure as the AVX-512 kernels (see `avx512.rs`): safe wrappers that check the
//! CPU, sizes and parameters, `#[target_feature]` loops without bounds checks, and the
//! scalar reference for every remainder and every input outside the vector paths.
//!
//! rANS with 32 lanes keeps the states in four registers of 8. AVX2 has no compress or
//! expand, so both directions use byte shuffles from tables keyed by the 8-bit lane mask:
//! the decoder spreads the next words over the renormalizing lanes, and the encoder packs the
//! emitted words together. The encoder keeps the 8 words that start at its write position in
//! a register and stores them back shifted behind the new words, so every store covers only
//! words it emits or words already written with the same values: nothing below the
//! returned index is touched.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::arch::x86_64::*;

use super::common::vector_layout;
use super::vector::Simd;
use super::{
    prefetch, prefetch_write, scalar, write_hints, FloatSplit, Kernels, Level, PREFETCH_AHEAD,
};
use crate::entropy::rans::{MAX_ALPHABET, MAX_PROB_BITS, RANS_L};
use crate::quant::bitpack;

/// Whether this CPU (and OS) supports every feature the kernels use.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("popcnt")
}

pub const KERNELS: Kernels = Kernels {
    level: Level::Avx2,
    rans_encode,
    rans_decode,
    rans_decode2,
    split,
    pack_mantissa,
    merge,
    to_f32: lossy_kernels::to_f32,
    from_f32: lossy_kernels::from_f32,
    block_encode: lossy_kernels::block_encode::<false>,
    block_encode_packed: lossy_kernels::block_encode::<true>,
    block_decode: lossy_kernels::block_decode::<false>,
    block_decode_packed: lossy_kernels::block_decode::<true>,
    pack_codes: lossy_kernels::pack_codes,
    unpack_codes: lossy_kernels::unpack_codes,
    stats: lossy_kernels::stats,
    uniform_encode: lossy_kernels::uniform_encode,
    uniform_decode: lossy_kernels::uniform_decode,
    extra_count: lossy_kernels::extra_count,
    flagged: lossy_kernels::flagged,
};

/// `_mm_shuffle_epi8` controls, by 8-bit lane mask `m`, that move 16-bit word `k` to the
/// lane of the `k`-th set bit of `m`, and zero the other lanes.
static EXPAND: [[u8; 16]; 256] = {
    let mut t = [[0x80u8; 16]; 256];
    let mut m = 0;
    while m < 256 {
        let mut k = 0;
        let mut lane = 0;
        while lane < 8 {
            if m >> lane & 1 == 1 {
                t[m][2 * lane] = 2 * k;
                t[m][2 * lane + 1] = 2 * k + 1;
                k += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    t
};

/// `_mm_shuffle_epi8` controls, by 8-bit lane mask `m`, that move the 16-bit words of the
/// lanes set in `m`, in lane order, to the first words, and zero the rest.
static COMPRESS: [[u8; 16]; 256] = {
    let mut t = [[0x80u8; 16]; 256];
    let mut m = 0;
    while m < 256 {
        let mut k = 0;
        let mut lane = 0;
        while lane < 8 {
            if m >> lane & 1 == 1 {
                t[m][2 * k] = 2 * lane as u8;
                t[m][2 * k + 1] = 2 * lane as u8 + 1;
                k += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    t
};

/// `_mm_shuffle_epi8` controls that move 16-bit word `j` to word `j + c`, zeroing the first
/// `c` words.
static SHIFT_UP: [[u8; 16]; 9] = {
    let mut t = [[0x80u8; 16]; 9];
    let mut c = 0;
    while c <= 8 {
        let mut j = c;
        while j < 8 {
            t[c][2 * j] = 2 * (j - c) as u8;
            t[c][2 * j + 1] = 2 * (j - c) as u8 + 1;
            j += 1;
        }
        c += 1;
    }
    t
};

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn lut(t: &[u8; 16]) -> __m128i {
    // SAFETY: `t` is 16 readable bytes.
    unsafe { _mm_loadu_si128(t.as_ptr().cast()) }
}

/// The low 16 bits of the 32-bit lanes of `a` then `b`, in order.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn low_words(a: __m256i, b: __m256i) -> __m256i {
    let m = _mm256_set1_epi32(0xffff);
    let p = _mm256_packus_epi32(_mm256_and_si256(a, m), _mm256_and_si256(b, m));
    _mm256_permute4x64_epi64::<0b11_01_10_00>(p)
}

// ---------------------------------------------------------------------------------------
// rANS decode
// ---------------------------------------------------------------------------------------

super::common::rans_decoders!("avx2,fma,popcnt");

/// The decoder's vector state: 32 lanes in four registers, and the constants of a step.
struct Dec32 {
    s: [__m256i; 4],
    table: *const i32,
    mask: __m256i,
    shift: __m128i,
}

/// One 8-lane quarter of a decode step up to renormalization: the table entries, the new
/// states, which lanes need a word (as a vector and as bits).
///
/// The entries are loaded one by one rather than with `vpgatherdd`, as in the encoder (see
/// [`enc_quarter`]): on a 2-core AMD EPYC (Zen 1) VM the rANS-coded decodes ran 4-12% faster
/// (three runs each way: `balanced` 0.69-0.76 -> 0.77-0.82 GB/s, `max` 0.74-0.82 ->
/// 0.86-0.93).
///
/// Safety: every index `s & mask` must be inside the table.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dec_quarter(d: &Dec32, s: __m256i) -> (__m256i, __m256i, __m256i, u32) {
    let mut ix = [0u32; 8];
    // SAFETY: `ix` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(ix.as_mut_ptr().cast(), _mm256_and_si256(s, d.mask)) };
    // SAFETY: the indices are inside the table (this function's contract).
    let ld = |k: usize| unsafe { d.table.add(ix[k] as usize).read() };
    let e = _mm256_setr_epi32(ld(0), ld(1), ld(2), ld(3), ld(4), ld(5), ld(6), ld(7));
    let freq = _mm256_and_si256(_mm256_srli_epi32::<9>(e), _mm256_set1_epi32(0xfff));
    let x = _mm256_add_epi32(
        _mm256_mullo_epi32(freq, _mm256_srl_epi32(s, d.shift)),
        _mm256_srli_epi32::<21>(e),
    );
    // x < RANS_L = 2^15, unsigned.
    const _: () = assert!(RANS_L == 1 << 15);
    let m = _mm256_cmpeq_epi32(_mm256_srli_epi32::<15>(x), _mm256_setzero_si256());
    let bits = _mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32;
    (e, x, m, bits)
}

/// Shifts a word into each lane of `x` set in `m` (`bits`), taking the words in lane order
/// from `src`; reads 16 bytes at `src`.
///
/// Safety: 16 bytes must be readable at `src`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dec_renorm(x: __m256i, m: __m256i, bits: u32, src: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `src`.
    let raw = unsafe { _mm_loadu_si128(src.cast()) };
    let w = _mm256_cvtepu16_epi32(_mm_shuffle_epi8(raw, lut(&EXPAND[bits as usize & 0xff])));
    _mm256_blendv_epi8(x, _mm256_or_si256(_mm256_slli_epi32::<16>(x), w), m)
}

impl Dec32 {
    /// Decodes one group of 32 symbols into `out` and returns the bytes consumed, or
    /// `None` (changing nothing) when that would be more than `avail`.
    ///
    /// Safety: `src` must have `avail.min(48) + 16` readable bytes when `CHECKED`, 64
    /// otherwise (then `avail` is ignored); `out` must have 32 writable `u16`s.
    #[inline]
    #[target_feature(enable = "avx2,fma,popcnt")]
    unsafe fn group<const CHECKED: bool>(
        &mut self,
        src: *const u8,
        avail: usize,
        out: *mut u16,
    ) -> Option<usize> {
        // SAFETY: the table covers every index (this function's contract).
        let q = unsafe {
            [
                dec_quarter(self, self.s[0]),
                dec_quarter(self, self.s[1]),
                dec_quarter(self, self.s[2]),
                dec_quarter(self, self.s[3]),
            ]
        };
        let n0 = 2 * q[0].3.count_ones() as usize;
        let n1 = n0 + 2 * q[1].3.count_ones() as usize;
        let n2 = n1 + 2 * q[2].3.count_ones() as usize;
        let n3 = n2 + 2 * q[3].3.count_ones() as usize;
        if CHECKED && n3 > avail {
            return None;
        }
        // SAFETY: quarter `i` reads 16 bytes at an offset of at most `16 i <= 48` (and, when
        // `CHECKED`, at most `avail`), within the readable bytes the contract promises.
        unsafe {
            self.s[0] = dec_renorm(q[0].1, q[0].2, q[0].3, src);
            self.s[1] = dec_renorm(q[1].1, q[1].2, q[1].3, src.add(n0));
            self.s[2] = dec_renorm(q[2].1, q[2].2, q[2].3, src.add(n1));
            self.s[3] = dec_renorm(q[3].1, q[3].2, q[3].3, src.add(n2));
        }
        let sym = _mm256_set1_epi32(0x1ff);
        let lo = low_words(_mm256_and_si256(q[0].0, sym), _mm256_and_si256(q[1].0, sym));
        let hi = low_words(_mm256_and_si256(q[2].0, sym), _mm256_and_si256(q[3].0, sym));
        // SAFETY: `out` has room for 32 symbols (the contract).
        unsafe {
            _mm256_storeu_si256(out.cast(), lo);
            _mm256_storeu_si256(out.add(16).cast(), hi);
        }
        Some(n3)
    }
}

impl Dec32 {
    /// Safety: the CPU has AVX2; `states` holds 32 states.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(table: &[u32], prob_bits: u32, states: &[u32]) -> Dec32 {
        debug_assert!(states.len() == 32 && table.len() >= 1 << prob_bits);
        let sp = states.as_ptr();
        // SAFETY: `states` holds 32 `u32`s, 128 bytes.
        let s = unsafe {
            [
                _mm256_loadu_si256(sp.cast()),
                _mm256_loadu_si256(sp.add(8).cast()),
                _mm256_loadu_si256(sp.add(16).cast()),
                _mm256_loadu_si256(sp.add(24).cast()),
            ]
        };
        Dec32 {
            s,
            table: table.as_ptr().cast(),
            mask: _mm256_set1_epi32(((1u32 << prob_bits) - 1) as i32),
            shift: _mm_cvtsi32_si128(prob_bits as i32),
        }
    }

    /// Safety: the CPU has AVX2; `states` holds 32 states.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(&self, states: &mut [u32]) {
        debug_assert!(states.len() == 32);
        let sp = states.as_mut_ptr();
        // SAFETY: `states` holds 32 `u32`s, 128 bytes.
        unsafe {
            _mm256_storeu_si256(sp.cast(), self.s[0]);
            _mm256_storeu_si256(sp.add(8).cast(), self.s[1]);
            _mm256_storeu_si256(sp.add(16).cast(), self.s[2]);
            _mm256_storeu_si256(sp.add(24).cast(), self.s[3]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// rANS encode
// ---------------------------------------------------------------------------------------

pub fn rans_encode(
    symbols: &[u16],
    rcp: &[u32],
    info: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
) -> usize {
    if !(supported() && states.len() == 32 && prob_bits <= MAX_PROB_BITS) {
        return scalar::rans_encode(symbols, rcp, info, prob_bits, states, words);
    }
    // SAFETY: the CPU has the features and there are 32 states; `encode32` checks symbols
    // against the tables and the room left in `words` itself.
    unsafe { encode32(symbols, rcp, info, prob_bits, states, words) }
}

/// The encoder's constants; `table[s]` is `rcp[s] | info[s] << 32` (see `avx512.rs`).
struct Enc32 {
    table: *const i64,
    total: __m256i,
    xmax_shift: __m128i,
}

/// One 8-lane quarter of an encode step on states `x` for the 8 symbols at `sym`: returns
/// the new states, the old ones (whose low 16 bits are the words), and which lanes emit a
/// word, as bits.
///
/// The table entries are loaded one by one, their indices straight from the symbols in
/// memory, rather than with two `vpgatherqq`: on a 2-core AMD EPYC (Zen 1) VM, three runs
/// each way, the rANS-coded encodes ran 8-18% faster (`lossless` 0.45-0.48 -> 0.53-0.55 GB/s,
/// `balanced` 0.32-0.34 -> 0.35-0.38, `max` 0.33-0.35 -> 0.38-0.39). The AVX2 path runs on
/// the x86 cores without AVX-512, where gathers are slow (AMD before Zen 4, Intel Haswell
/// and Broadwell, and the Intel cores whose microcode guards against Gather Data Sampling);
/// Intel cores with fast gathers were not measured. (The AVX-512 kernels still gather.)
///
/// Safety: 8 symbols must be readable at `sym`, each inside `e.table`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn enc_quarter(e: &Enc32, x: __m256i, sym: *const u16) -> (__m256i, __m256i, u32) {
    // SAFETY: the 8 symbols are readable and inside the table (this function's contract).
    let ld = |k: usize| unsafe { e.table.add(usize::from(*sym.add(k))).read() };
    let ge = _mm256_set_epi64x(ld(6), ld(4), ld(2), ld(0));
    let go = _mm256_set_epi64x(ld(7), ld(5), ld(3), ld(1));
    let info = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(ge), go);
    let bias = _mm256_and_si256(info, _mm256_set1_epi32(0xfff));
    let cmpl = _mm256_and_si256(_mm256_srli_epi32::<12>(info), _mm256_set1_epi32(0x7ff));
    let shift = _mm256_srli_epi32::<23>(info);
    let x_max = _mm256_sll_epi32(_mm256_sub_epi32(e.total, cmpl), e.xmax_shift);
    // x >= x_max, unsigned.
    let m = _mm256_cmpeq_epi32(_mm256_max_epu32(x, x_max), x);
    let bits = _mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32;
    let y = _mm256_blendv_epi8(x, _mm256_srli_epi32::<16>(x), m);
    let pe = _mm256_srli_epi64::<32>(_mm256_mul_epu32(y, ge));
    let po = _mm256_mul_epu32(_mm256_srli_epi64::<32>(y), go);
    let q = _mm256_srlv_epi32(_mm256_blend_epi32::<0b1010_1010>(pe, po), shift);
    let y = _mm256_add_epi32(_mm256_add_epi32(y, bias), _mm256_mullo_epi32(q, cmpl));
    (y, x, bits)
}

#[target_feature(enable = "avx2,fma,popcnt")]
unsafe fn encode32(
    symbols: &[u16],
    rcp: &[u32],
    info: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
) -> usize {
    debug_assert_eq!(states.len(), 32);
    let mut pos = words.len();
    let full = symbols.len() / 32 * 32;
    let (head, tail) = symbols.split_at(full);
    // The partial last group goes first: the encoder runs backward.
    scalar::encode_group_rev(tail, rcp, info, prob_bits, states, words, &mut pos);
    let mut g = full / 32;
    // The vector loop stores the 8 words at its write position, so it starts once 8 words
    // are written.
    while g > 0 && words.len() - pos < 8 {
        let group = &head[32 * (g - 1)..32 * g];
        scalar::encode_group_rev(group, rcp, info, prob_bits, states, words, &mut pos);
        g -= 1;
    }
    let n_table = rcp.len().min(info.len()).min(MAX_ALPHABET);
    if g > 0 && n_table > 0 {
        let mut table = [0u64; MAX_ALPHABET];
        for (t, (&r, &i)) in table.iter_mut().zip(rcp.iter().zip(info)) {
            *t = u64::from(r) | u64::from(i) << 32;
        }
        let e = Enc32 {
            table: table.as_ptr().cast(),
            total: _mm256_set1_epi32(1 << prob_bits),
            xmax_shift: _mm_cvtsi32_si128(31 - prob_bits as i32),
        };
        // Symbols above `limit` (signed compare: `limit < 2^15`) leave the vector loop.
        let limit = _mm256_set1_epi16((n_table - 1) as i16);
        let sp = states.as_ptr();
        // SAFETY: `states` holds 32 `u32`s; words `pos..pos + 8` are inside `words`.
        let (mut s, mut front) = unsafe {
            (
                [
                    _mm256_loadu_si256(sp.cast()),
                    _mm256_loadu_si256(sp.add(8).cast()),
                    _mm256_loadu_si256(sp.add(16).cast()),
                    _mm256_loadu_si256(sp.add(24).cast()),
                ],
                _mm_loadu_si128(words.as_ptr().add(pos).cast()),
            )
        };
        // A group writes at most 32 words below `pos`.
        while g > 0 && pos >= 32 {
            let gp = head.as_ptr();
            // SAFETY: group `g - 1` is 32 symbols inside `head`.
            let (sa, sb) = unsafe {
                (
                    _mm256_loadu_si256(gp.add(32 * (g - 1)).cast()),
                    _mm256_loadu_si256(gp.add(32 * (g - 1) + 16).cast()),
                )
            };
            let over =
                _mm256_or_si256(_mm256_cmpgt_epi16(sa, limit), _mm256_cmpgt_epi16(sb, limit));
            // Symbols of 2^15 and above are negative as signed 16-bit values.
            let neg = _mm256_or_si256(sa, sb);
            if _mm256_movemask_epi8(_mm256_or_si256(over, _mm256_srai_epi16::<15>(neg))) != 0 {
                break;
            }
            let sym = gp.wrapping_add(32 * (g - 1));
            // SAFETY: every symbol of the group is below `n_table`, inside `table`.
            let r = unsafe {
                [
                    enc_quarter(&e, s[0], sym),
                    enc_quarter(&e, s[1], sym.add(8)),
                    enc_quarter(&e, s[2], sym.add(16)),
                    enc_quarter(&e, s[3], sym.add(24)),
                ]
            };
            let w01 = low_words(r[0].1, r[1].1);
            let w23 = low_words(r[2].1, r[3].1);
            let w = [
                _mm256_castsi256_si128(w01),
                _mm256_extracti128_si256::<1>(w01),
                _mm256_castsi256_si128(w23),
                _mm256_extracti128_si256::<1>(w23),
            ];
            // Lanes 24..31 first: their words go last in memory.
            for i in (0..4).rev() {
                s[i] = r[i].0;
                let bits = r[i].2 as usize & 0xff;
                let c = bits.count_ones() as usize;
                let packed = _mm_shuffle_epi8(w[i], lut(&COMPRESS[bits]));
                front = _mm_or_si128(packed, _mm_shuffle_epi8(front, lut(&SHIFT_UP[c])));
                pos -= c;
                // SAFETY: `pos + 8 <= words.len()` (at most 8 words were emitted since
                // `pos + 8` was in bounds), and `front` holds the new words followed by the
                // ones already at `pos + c..pos + 8`.
                unsafe { _mm_storeu_si128(words.as_mut_ptr().add(pos).cast(), front) };
            }
            g -= 1;
        }
        let sp = states.as_mut_ptr();
        // SAFETY: as for the loads.
        unsafe {
            _mm256_storeu_si256(sp.cast(), s[0]);
            _mm256_storeu_si256(sp.add(8).cast(), s[1]);
            _mm256_storeu_si256(sp.add(16).cast(), s[2]);
            _mm256_storeu_si256(sp.add(24).cast(), s[3]);
        }
    }
    for group in head[..32 * g].chunks_exact(32).rev() {
        scalar::encode_group_rev(group, rcp, info, prob_bits, states, words, &mut pos);
    }
    pos
}

// ---------------------------------------------------------------------------------------
// Float split, mantissa packing, merge
// ---------------------------------------------------------------------------------------

pub fn split(fs: FloatSplit, input: &[u8], symbols: &mut [u16]) -> u32 {
    if !(supported() && vector_layout(fs)) {
        return scalar::split(fs, input, symbols);
    }
    let n = symbols.len();
    assert_eq!(input.len(), n * fs.bytes);
    let done = n / 16 * 16;
    // SAFETY: the CPU has the features; `input` holds `n >= done` elements of `fs.bytes`.
    let or = unsafe {
        if fs.bytes == 2 {
            split_vec::<2>(fs.mant_bits, input, &mut symbols[..done])
        } else {
            split_vec::<4>(fs.mant_bits, input, &mut symbols[..done])
        }
    };
    or | scalar::split(fs, &input[done * fs.bytes..], &mut symbols[done..])
}

/// Writes the symbols of the first `symbols.len()` (a multiple of 16) elements of `input`
/// and returns the OR of their mantissas.
///
/// Safety: `input` must hold at least `symbols.len()` elements of `BYTES` bytes, and
/// `mant_bits` must be below `8 BYTES`.
#[target_feature(enable = "avx2,fma")]
unsafe fn split_vec<const BYTES: usize>(mant_bits: u32, input: &[u8], symbols: &mut [u16]) -> u32 {
    let n = symbols.len();
    debug_assert!(n.is_multiple_of(16) && input.len() >= n * BYTES);
    let src = input.as_ptr();
    let dst = symbols.as_mut_ptr();
    let mut acc = _mm256_setzero_si256();
    let shift = _mm_cvtsi32_si128(mant_bits as i32);
    for i in (0..n).step_by(16) {
        prefetch(src.wrapping_add(BYTES * i + PREFETCH_AHEAD));
        if BYTES == 4 {
            prefetch(src.wrapping_add(4 * i + 32 + PREFETCH_AHEAD));
        }
        // SAFETY: elements `i..i + 16` are inside `input` and `symbols`.
        unsafe {
            let sym = if BYTES == 2 {
                let v = _mm256_loadu_si256(src.add(2 * i).cast());
                acc = _mm256_or_si256(acc, v);
                _mm256_srl_epi16(v, shift)
            } else {
                let a = _mm256_loadu_si256(src.add(4 * i).cast());
                let b = _mm256_loadu_si256(src.add(4 * i + 32).cast());
                acc = _mm256_or_si256(acc, _mm256_or_si256(a, b));
                let p = _mm256_packus_epi32(_mm256_srl_epi32(a, shift), _mm256_srl_epi32(b, shift));
                _mm256_permute4x64_epi64::<0b11_01_10_00>(p)
            };
            _mm256_storeu_si256(dst.add(i).cast(), sym);
        }
    }
    let mut lanes = [0u32; 8];
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
    let or = lanes.iter().fold(0, |a, &l| a | l);
    let or = if BYTES == 2 { or | or >> 16 } else { or };
    or & ((1 << mant_bits) - 1)
}

pub fn pack_mantissa(fs: FloatSplit, input: &[u8], drop: u32, out: &mut [u8]) {
    if !(supported() && vector_layout(fs) && drop <= fs.mant_bits) {
        return scalar::pack_mantissa(fs, input, drop, out);
    }
    let n = input.len() / fs.bytes;
    let width = fs.mant_bits - drop;
    assert!(out.len() >= bitpack::packed_len(n, width));
    if width == 0 {
        return;
    }
    let blocks = n / bitpack::BLOCK;
    // SAFETY: the CPU has the features; `input` holds `blocks` blocks of elements and `out`
    // their `64 width` bytes each (asserted above); `0 < width <= mant_bits`.
    unsafe {
        if fs.bytes == 2 {
            pack_blocks::<2>(input, blocks, fs.mant_bits, drop, out);
        } else {
            pack_blocks::<4>(input, blocks, fs.mant_bits, drop, out);
        }
    }
    let done = blocks * bitpack::BLOCK;
    scalar::pack_mantissa(
        fs,
        &input[done * fs.bytes..n * fs.bytes],
        drop,
        &mut out[blocks * 64 * width as usize..],
    );
}

/// Loads lanes `8 half .. 8 half + 8` of row `row` of a block at `src` as 32-bit lanes.
///
/// Safety: the row must be readable.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_half_row<const BYTES: usize>(src: *const u8, row: usize, half: usize) -> __m256i {
    // SAFETY: the caller guarantees the row is readable.
    unsafe {
        if BYTES == 2 {
            _mm256_cvtepu16_epi32(_mm_loadu_si128(src.add(32 * row + 16 * half).cast()))
        } else {
            _mm256_loadu_si256(src.add(64 * row + 32 * half).cast())
        }
    }
}

/// Packs the mantissas of `blocks` whole blocks of `input`.
///
/// Safety: `input` must hold `blocks` blocks of `BYTES`-byte elements, `out` must hold
/// `64 (mant_bits - drop)` bytes per block, and `0 < mant_bits - drop <= mant_bits < 32`.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_blocks<const BYTES: usize>(
    input: &[u8],
    blocks: usize,
    mant_bits: u32,
    drop: u32,
    out: &mut [u8],
) {
    let w = mant_bits - drop;
    debug_assert!(w > 0 && input.len() >= blocks * 512 * BYTES);
    debug_assert!(out.len() >= blocks * 64 * w as usize);
    let mask = _mm256_set1_epi32(((1u32 << mant_bits) - 1) as i32);
    let dropc = _mm_cvtsi32_si128(drop as i32);
    for b in 0..blocks {
        // SAFETY: block `b` and its packed words are inside `input` and `out`.
        let (src, dst) = unsafe {
            (
                input.as_ptr().add(b * 512 * BYTES),
                out.as_mut_ptr().add(b * 64 * w as usize),
            )
        };
        let mut acc = [_mm256_setzero_si256(); 2];
        let mut bits = 0u32;
        let mut k = 0usize;
        for row in 0..32 {
            // SAFETY: row `row < 32` of the block is readable.
            let v = unsafe {
                [
                    load_half_row::<BYTES>(src, row, 0),
                    load_half_row::<BYTES>(src, row, 1),
                ]
            };
            let m = v.map(|v| _mm256_srl_epi32(_mm256_and_si256(v, mask), dropc));
            let at = _mm_cvtsi32_si128(bits as i32);
            acc[0] = _mm256_or_si256(acc[0], _mm256_sll_epi32(m[0], at));
            acc[1] = _mm256_or_si256(acc[1], _mm256_sll_epi32(m[1], at));
            bits += w;
            if bits >= 32 {
                // SAFETY: the block has `w` words per lane, and word `k < w` of the 16
                // lanes sits at bytes `64 k .. 64 k + 64`.
                unsafe {
                    _mm256_storeu_si256(dst.add(64 * k).cast(), acc[0]);
                    _mm256_storeu_si256(dst.add(64 * k + 32).cast(), acc[1]);
                }
                k += 1;
                bits -= 32;
                let rest = _mm_cvtsi32_si128((w - bits) as i32);
                acc = m.map(|m| _mm256_srl_epi32(m, rest));
            }
        }
        debug_assert!(bits == 0 && k == w as usize);
    }
}

pub fn merge(fs: FloatSplit, symbols: &[u16], packed: &[u8], drop: u32, out: &mut [u8]) {
    if !(supported() && vector_layout(fs) && drop <= fs.mant_bits) {
        return scalar::merge(fs, symbols, packed, drop, out);
    }
    let n = symbols.len();
    let width = fs.mant_bits - drop;
    assert_eq!(out.len(), n * fs.bytes);
    assert!(packed.len() >= bitpack::packed_len(n, width));
    let blocks = n / bitpack::BLOCK;
    // SAFETY: the CPU has the features; `symbols` and `out` hold `blocks` blocks of
    // elements and `packed` their `64 width` bytes each (asserted above); `drop <=
    // mant_bits < 32`.
    unsafe {
        if fs.bytes == 2 {
            merge_blocks::<2>(symbols, packed, blocks, fs.mant_bits, drop, out);
        } else {
            merge_blocks::<4>(symbols, packed, blocks, fs.mant_bits, drop, out);
        }
    }
    let done = blocks * bitpack::BLOCK;
    scalar::merge(
        fs,
        &symbols[done..],
        &packed[blocks * 64 * width as usize..],
        drop,
        &mut out[done * fs.bytes..],
    );
}

/// Rebuilds the elements of `blocks` whole blocks.
///
/// Safety: `symbols` must hold `blocks` blocks, `out` as many `BYTES`-byte elements,
/// `packed` `64 (mant_bits - drop)` bytes per block, and `drop <= mant_bits < 32`.
#[target_feature(enable = "avx2,fma")]
unsafe fn merge_blocks<const BYTES: usize>(
    symbols: &[u16],
    packed: &[u8],
    blocks: usize,
    mant_bits: u32,
    drop: u32,
    out: &mut [u8],
) {
    let w = mant_bits - drop;
    debug_assert!(symbols.len() >= blocks * 512 && out.len() >= blocks * 512 * BYTES);
    debug_assert!(packed.len() >= blocks * 64 * w as usize);
    let mask = _mm256_set1_epi32(((1u64 << w) - 1) as i32);
    let low16 = _mm256_set1_epi32(0xffff);
    let mantc = _mm_cvtsi32_si128(mant_bits as i32);
    let dropc = _mm_cvtsi32_si128(drop as i32);
    let wc = _mm_cvtsi32_si128(w as i32);
    let hints = write_hints();
    for b in 0..blocks {
        // SAFETY: block `b` and its packed words are inside `symbols`, `packed` and `out`.
        let (src, sym, dst) = unsafe {
            (
                packed.as_ptr().add(b * 64 * w as usize),
                symbols.as_ptr().add(b * 512),
                out.as_mut_ptr().add(b * 512 * BYTES),
            )
        };
        let mut acc = [_mm256_setzero_si256(); 2];
        let mut bits = 0u32;
        let mut k = 0usize;
        for row in 0..32 {
            let m = if bits < w {
                // SAFETY: the block has `w` words per lane; this is word `k < w`.
                let nw = unsafe {
                    [
                        _mm256_loadu_si256(src.add(64 * k).cast()),
                        _mm256_loadu_si256(src.add(64 * k + 32).cast()),
                    ]
                };
                k += 1;
                let at = _mm_cvtsi32_si128(bits as i32);
                let rest = _mm_cvtsi32_si128((w - bits) as i32);
                let m = [
                    _mm256_or_si256(acc[0], _mm256_sll_epi32(nw[0], at)),
                    _mm256_or_si256(acc[1], _mm256_sll_epi32(nw[1], at)),
                ];
                acc = nw.map(|v| _mm256_srl_epi32(v, rest));
                bits += 32 - w;
                m
            } else {
                let m = acc;
                acc = acc.map(|v| _mm256_srl_epi32(v, wc));
                bits -= w;
                m
            };
            if hints {
                prefetch_write(dst.wrapping_add(BYTES * 16 * row + PREFETCH_AHEAD));
            }
            // SAFETY: row `row < 32` of the block is inside `symbols` and `out`.
            unsafe {
                let s = _mm256_loadu_si256(sym.add(16 * row).cast());
                let v = [
                    _mm256_cvtepu16_epi32(_mm256_castsi256_si128(s)),
                    _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(s)),
                ];
                let v = [0, 1].map(|h| {
                    _mm256_or_si256(
                        _mm256_sll_epi32(v[h], mantc),
                        _mm256_sll_epi32(_mm256_and_si256(m[h], mask), dropc),
                    )
                });
                if BYTES == 2 {
                    let p = _mm256_packus_epi32(
                        _mm256_and_si256(v[0], low16),
                        _mm256_and_si256(v[1], low16),
                    );
                    _mm256_storeu_si256(
                        dst.add(32 * row).cast(),
                        _mm256_permute4x64_epi64::<0b11_01_10_00>(p),
                    );
                } else {
                    _mm256_storeu_si256(dst.add(64 * row).cast(), v[0]);
                    _mm256_storeu_si256(dst.add(64 * row + 32).cast(), v[1]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The lossy kernels: `vector.rs`'s generic bodies over 8 lanes
// ---------------------------------------------------------------------------------------

/// AVX2 lanes for the generic kernels: 8 `f32`, masks as all-ones lanes, the eight `f64`
/// error sums in two registers.
#[derive(Clone, Copy)]
pub(super) struct V256;

/// `_mm256_shuffle_epi8` control that gathers the low 16 bits of each 32-bit lane into the
/// low 8 bytes of each 128-bit half.
const LOW16: [i8; 32] = [
    0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1,
    -1, -1, -1, -1, -1,
];

/// As [`LOW16`], the low 8 bits into the low 4 bytes.
const LOW8: [i8; 32] = [
    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1,
];

/// `_mm_shuffle_epi8` control that transposes a 4x4 byte matrix (byte `k` of word `l` to
/// byte `l` of word `k`).
const BYTES_4X4: [i8; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

/// The increment of the stochastic-rounding counter.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// `a * b` in 64-bit lanes, wrapping.
#[inline(always)]
unsafe fn mul64(a: __m256i, b: __m256i) -> __m256i {
    let lo = _mm256_mul_epu32(a, b);
    let cross = _mm256_add_epi64(
        _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), b),
        _mm256_mul_epu32(a, _mm256_srli_epi64::<32>(b)),
    );
    _mm256_add_epi64(lo, _mm256_slli_epi64::<32>(cross))
}

/// splitmix64's finalizer, then the top 24 bits (in the low half of each 64-bit lane).
#[inline(always)]
unsafe fn mix24(z: __m256i) -> __m256i {
    let z = _mm256_xor_si256(z, _mm256_srli_epi64::<30>(z));
    let z = mul64(z, _mm256_set1_epi64x(0xBF58_476D_1CE4_E5B9u64 as i64));
    let z = _mm256_xor_si256(z, _mm256_srli_epi64::<27>(z));
    let z = mul64(z, _mm256_set1_epi64x(0x94D0_49BB_1331_11EBu64 as i64));
    let z = _mm256_xor_si256(z, _mm256_srli_epi64::<31>(z));
    _mm256_srli_epi64::<40>(z)
}

/// The low 32 bits of the four 64-bit lanes of `a`, then of `b`.
#[inline(always)]
unsafe fn narrow64(a: __m256i, b: __m256i) -> __m256i {
    let idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    let a = _mm256_permutevar8x32_epi32(a, idx);
    let b = _mm256_permutevar8x32_epi32(b, idx);
    _mm256_inserti128_si256::<1>(a, _mm256_castsi256_si128(b))
}

/// The two 64-bit halves of an 8-lane mask.
#[inline(always)]
unsafe fn widen_mask(m: __m256i) -> (__m256d, __m256d) {
    (
        _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m))),
        _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(m))),
    )
}

/// Adds `f64(d)^2` of the low four lanes of `d` to `acc[0]`, of the high four to `acc[1]`.
#[inline(always)]
unsafe fn add_squares(acc: &mut [__m256d; 2], d: __m256) {
    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(d));
    let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(d));
    acc[0] = _mm256_fmadd_pd(lo, lo, acc[0]);
    acc[1] = _mm256_fmadd_pd(hi, hi, acc[1]);
}

/// `f64(y) - f64(x)` of the low and the high four lanes.
#[inline(always)]
unsafe fn diffs(y: __m256, x: __m256) -> (__m256d, __m256d) {
    (
        _mm256_sub_pd(
            _mm256_cvtps_pd(_mm256_castps256_ps128(y)),
            _mm256_cvtps_pd(_mm256_castps256_ps128(x)),
        ),
        _mm256_sub_pd(
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(y)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)),
        ),
    )
}

// SAFETY: the methods wrap AVX2 (and SSSE3) intrinsics; `Simd`'s contract (features present
// and enabled, the named bytes readable or writable) is the caller's.
unsafe impl Simd for V256 {
    const W: usize = 8;
    type F = __m256;
    type I = __m256i;
    type M = __m256i;
    type D = [__m256d; 2];
    type Acc = [__m256d; 2];
    type P = [__m256; 2];

    #[inline(always)]
    unsafe fn splat(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> __m256i {
        _mm256_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p.cast())
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }
    #[inline(always)]
    unsafe fn load_u16(p: *const u8) -> __m256i {
        _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> __m256i {
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const u8) -> __m256i {
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))
    }
    #[inline(always)]
    unsafe fn store_f32(p: *mut u8, v: __m256) {
        _mm256_storeu_ps(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn store_i32(p: *mut u8, v: __m256i) {
        _mm256_storeu_si256(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn store_u16(p: *mut u8, v: __m256i) {
        let t = _mm256_shuffle_epi8(v, _mm256_loadu_si256(LOW16.as_ptr().cast()));
        let t = _mm256_permute4x64_epi64::<0b00_00_10_00>(t);
        _mm_storeu_si128(p.cast(), _mm256_castsi256_si128(t))
    }
    #[inline(always)]
    unsafe fn store_u8(p: *mut u8, v: __m256i) {
        let t = _mm256_shuffle_epi8(v, _mm256_loadu_si256(LOW8.as_ptr().cast()));
        let w = _mm_unpacklo_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
        _mm_storel_epi64(p.cast(), w)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        _mm256_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        _mm256_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn round_even(a: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }
    #[inline(always)]
    unsafe fn cvt_fi(a: __m256) -> __m256i {
        _mm256_cvttps_epi32(a)
    }
    #[inline(always)]
    unsafe fn cvt_if(a: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(a)
    }
    #[inline(always)]
    unsafe fn bits(a: __m256) -> __m256i {
        _mm256_castps_si256(a)
    }
    #[inline(always)]
    unsafe fn from_bits(a: __m256i) -> __m256 {
        _mm256_castsi256_ps(a)
    }
    #[inline(always)]
    unsafe fn gt(a: __m256, b: __m256) -> __m256i {
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(a, b))
    }
    #[inline(always)]
    unsafe fn ge(a: __m256, b: __m256) -> __m256i {
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(a, b))
    }
    #[inline(always)]
    unsafe fn unord(a: __m256, b: __m256) -> __m256i {
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(a, b))
    }
    #[inline(always)]
    unsafe fn not_le(a: __m256, b: __m256) -> __m256i {
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_NLE_UQ>(a, b))
    }
    #[inline(always)]
    unsafe fn iadd(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn isub(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn and(a: __m256i, b: __m256i) -> __m256i {
        _mm256_and_si256(a, b)
    }
    #[inline(always)]
    unsafe fn or(a: __m256i, b: __m256i) -> __m256i {
        _mm256_or_si256(a, b)
    }
    #[inline(always)]
    unsafe fn xor(a: __m256i, b: __m256i) -> __m256i {
        _mm256_xor_si256(a, b)
    }
    #[inline(always)]
    unsafe fn shl(a: __m256i, n: u32) -> __m256i {
        _mm256_sll_epi32(a, _mm_cvtsi32_si128(n as i32))
    }
    #[inline(always)]
    unsafe fn shr(a: __m256i, n: u32) -> __m256i {
        _mm256_srl_epi32(a, _mm_cvtsi32_si128(n as i32))
    }
    #[inline(always)]
    unsafe fn sra(a: __m256i, n: u32) -> __m256i {
        _mm256_sra_epi32(a, _mm_cvtsi32_si128(n as i32))
    }
    #[inline(always)]
    unsafe fn ieq(a: __m256i, b: __m256i) -> __m256i {
        _mm256_cmpeq_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn igt(a: __m256i, b: __m256i) -> __m256i {
        _mm256_cmpgt_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn imax(a: __m256i, b: __m256i) -> __m256i {
        _mm256_max_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn sel_f(m: __m256i, a: __m256, b: __m256) -> __m256 {
        _mm256_blendv_ps(b, a, _mm256_castsi256_ps(m))
    }
    #[inline(always)]
    unsafe fn sel_i(m: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_blendv_epi8(b, a, m)
    }
    #[inline(always)]
    unsafe fn m_and(a: __m256i, b: __m256i) -> __m256i {
        _mm256_and_si256(a, b)
    }
    #[inline(always)]
    unsafe fn m_or(a: __m256i, b: __m256i) -> __m256i {
        _mm256_or_si256(a, b)
    }
    #[inline(always)]
    unsafe fn m_not(a: __m256i) -> __m256i {
        _mm256_xor_si256(a, _mm256_set1_epi32(-1))
    }
    #[inline(always)]
    unsafe fn mask_bits(m: __m256i) -> u32 {
        _mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32
    }
    #[inline(always)]
    unsafe fn mask_from_bits(b: u32) -> __m256i {
        let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(b as i32), bit), bit)
    }
    #[inline(always)]
    unsafe fn hmax_i(a: __m256i) -> i32 {
        let m = _mm_max_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
        let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
        let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
        _mm_cvtsi128_si32(m)
    }
    #[inline(always)]
    unsafe fn acc_load(s: &[f64; 8]) -> [__m256d; 2] {
        [
            _mm256_loadu_pd(s.as_ptr()),
            _mm256_loadu_pd(s.as_ptr().add(4)),
        ]
    }
    #[inline(always)]
    unsafe fn acc_store(acc: [__m256d; 2], s: &mut [f64; 8]) {
        _mm256_storeu_pd(s.as_mut_ptr(), acc[0]);
        _mm256_storeu_pd(s.as_mut_ptr().add(4), acc[1]);
    }
    #[inline(always)]
    unsafe fn diff(y: __m256, x: __m256) -> [__m256d; 2] {
        let (lo, hi) = diffs(y, x);
        [lo, hi]
    }
    #[inline(always)]
    unsafe fn err_add(acc: &mut [__m256d; 2], d: [__m256d; 2], max_abs: f64, lane: usize) -> u32 {
        debug_assert_eq!(lane, 0);
        let max = _mm256_set1_pd(max_abs);
        let abs = _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX));
        let mut bits = 0;
        for (k, d) in d.into_iter().enumerate() {
            let bad = _mm256_or_pd(
                _mm256_cmp_pd::<_CMP_UNORD_Q>(d, d),
                _mm256_cmp_pd::<_CMP_GT_OQ>(_mm256_and_pd(d, abs), max),
            );
            let sum = _mm256_add_pd(acc[k], _mm256_mul_pd(d, d));
            acc[k] = _mm256_blendv_pd(sum, acc[k], bad);
            bits |= (_mm256_movemask_pd(bad) as u32) << (4 * k);
        }
        bits
    }
    #[inline(always)]
    unsafe fn err_add_keep(acc: &mut [__m256d; 2], d: [__m256d; 2], keep: __m256i, lane: usize) {
        debug_assert_eq!(lane, 0);
        let (klo, khi) = widen_mask(keep);
        acc[0] = _mm256_blendv_pd(
            acc[0],
            _mm256_add_pd(acc[0], _mm256_mul_pd(d[0], d[0])),
            klo,
        );
        acc[1] = _mm256_blendv_pd(
            acc[1],
            _mm256_add_pd(acc[1], _mm256_mul_pd(d[1], d[1])),
            khi,
        );
    }
    #[inline(always)]
    unsafe fn part_load(p: &[f32; 16]) -> [__m256; 2] {
        [
            _mm256_loadu_ps(p.as_ptr()),
            _mm256_loadu_ps(p.as_ptr().add(8)),
        ]
    }
    #[inline(always)]
    unsafe fn part_store(p: [__m256; 2], out: &mut [f32; 16]) {
        _mm256_storeu_ps(out.as_mut_ptr(), p[0]);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), p[1]);
    }
    /// The lanes left out are zeroed (adding `0 * 0` leaves a partial sum as it was).
    #[inline(always)]
    unsafe fn part_add(p: &mut [__m256; 2], s: __m256, keep: __m256i, part: usize) {
        debug_assert!(part == 0 || part == 8);
        let s = _mm256_and_ps(s, _mm256_castsi256_ps(keep));
        let k = part / 8;
        p[k] = _mm256_fmadd_ps(s, s, p[k]);
    }
    #[inline(always)]
    unsafe fn part_flush(acc: &mut [__m256d; 2], p: &mut [__m256; 2], unscale: f64) {
        let u = _mm256_set1_pd(unscale);
        // The products are exact, so a fused multiply-add adds what a multiply and an add do.
        for h in *p {
            acc[0] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(h)), u, acc[0]);
            acc[1] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(h)), u, acc[1]);
        }
        *p = [_mm256_setzero_ps(); 2];
    }
    #[inline(always)]
    unsafe fn sq_add(acc: &mut [__m256d; 2], v: __m256, lane: usize) {
        debug_assert_eq!(lane, 0);
        add_squares(acc, v);
    }
    #[inline(always)]
    unsafe fn thresholds(seed: u64, index: u64) -> __m256 {
        let z0 = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN));
        let g = |k: u64| GOLDEN.wrapping_mul(k) as i64;
        let lo = _mm256_add_epi64(
            _mm256_set1_epi64x(z0 as i64),
            _mm256_setr_epi64x(0, g(1), g(2), g(3)),
        );
        let hi = _mm256_add_epi64(lo, _mm256_set1_epi64x(g(4)));
        let h = narrow64(mix24(lo), mix24(hi));
        _mm256_mul_ps(_mm256_cvtepi32_ps(h), _mm256_set1_ps(1.0 / 16_777_216.0))
    }
    #[inline(always)]
    unsafe fn transpose_4x16(src: *const u8, dst: *mut u8) {
        let r = |k: usize| _mm_loadu_si128(src.add(16 * k).cast());
        let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
        let a = _mm_unpacklo_epi8(r0, r1);
        let b = _mm_unpackhi_epi8(r0, r1);
        let c = _mm_unpacklo_epi8(r2, r3);
        let d = _mm_unpackhi_epi8(r2, r3);
        _mm_storeu_si128(dst.cast(), _mm_unpacklo_epi16(a, c));
        _mm_storeu_si128(dst.add(16).cast(), _mm_unpackhi_epi16(a, c));
        _mm_storeu_si128(dst.add(32).cast(), _mm_unpacklo_epi16(b, d));
        _mm_storeu_si128(dst.add(48).cast(), _mm_unpackhi_epi16(b, d));
    }
    #[inline(always)]
    unsafe fn untranspose_4x16(src: *const u8, dst: *mut u8) {
        // Within each 16 bytes (words l = 4q .. 4q + 3), gather byte k of the four words
        // into dword k; then dword k of the four registers is row k.
        let t = _mm_loadu_si128(BYTES_4X4.as_ptr().cast());
        let w = |q: usize| _mm_shuffle_epi8(_mm_loadu_si128(src.add(16 * q).cast()), t);
        let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
        let a = _mm_unpacklo_epi32(w0, w1);
        let b = _mm_unpackhi_epi32(w0, w1);
        let c = _mm_unpacklo_epi32(w2, w3);
        let d = _mm_unpackhi_epi32(w2, w3);
        _mm_storeu_si128(dst.cast(), _mm_unpacklo_epi64(a, c));
        _mm_storeu_si128(dst.add(16).cast(), _mm_unpackhi_epi64(a, c));
        _mm_storeu_si128(dst.add(32).cast(), _mm_unpacklo_epi64(b, d));
        _mm_storeu_si128(dst.add(48).cast(), _mm_unpackhi_epi64(b, d));
    }
}

super::vector::vector_kernels!(V256, "avx2,fma,popcnt", supported);
