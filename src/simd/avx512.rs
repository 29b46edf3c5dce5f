//! AVX-512 kernels (F, BW, VL, DQ, VBMI and VBMI2, with POPCNT).
//!
//! Each kernel is a safe wrapper around a `#[target_feature]` function. The wrapper checks
//! that the CPU has the features and that the sizes and parameters fit the vector path, and
//! sends everything else to the scalar reference; the vector loop then runs without bounds
//! checks and hands the remainder (partial groups and blocks, stream ends) to scalar code,
//! so the results are those of [`super::scalar`] for every input.
//!
//! rANS with 32 lanes keeps the states in two registers of 16. The decoder gathers the
//! table entries, and a lane that renormalizes takes the next 16-bit word in lane order:
//! 16 words are loaded, widened, and expanded into the lanes whose mask bit is set. The
//! encoder runs backward and writes the words of the renormalizing lanes with a 16-bit
//! compress and a masked store, so that no byte outside the words it emits is touched.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::arch::x86_64::*;

use super::common::vector_layout;
use super::vector::Simd;
use super::{
    prefetch, prefetch_write, scalar, write_hints, FloatSplit, Kernels, Level, PREFETCH_AHEAD,
};
use crate::entropy::rans::{MAX_PROB_BITS, RANS_L};
use crate::quant::bitpack;

/// Whether this CPU (and OS) supports every feature the kernels use.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vbmi")
        && is_x86_feature_detected!("avx512vbmi2")
        && is_x86_feature_detected!("popcnt")
}

pub const KERNELS: Kernels = Kernels {
    level: Level::Avx512,
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
    flagged,
};

/// Index vector for `_mm512_permutex2var_epi16` that takes the low 16 bits of every 32-bit
/// lane of `a` then of `b`.
const LOW_HALVES: [u16; 32] = {
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = 2 * i as u16;
        i += 1;
    }
    t
};

/// As [`LOW_HALVES`], the high 16 bits.
const HIGH_HALVES: [u16; 32] = {
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = 2 * i as u16 + 1;
        i += 1;
    }
    t
};

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_index(t: &[u16; 32]) -> __m512i {
    // SAFETY: `t` is 64 readable bytes.
    unsafe { _mm512_loadu_si512(t.as_ptr().cast()) }
}

// ---------------------------------------------------------------------------------------
// rANS decode
// ---------------------------------------------------------------------------------------

super::common::rans_decoders!("avx512f,avx512bw,popcnt");

/// The decoder's vector state: 32 lanes in two registers, and the constants of a step.
struct Dec32 {
    s: [__m512i; 2],
    table: *const i32,
    mask: __m512i,
    shift: __m128i,
}

/// One 16-lane half of a decode step up to renormalization: the table entries, the new
/// states, and which lanes need a word.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dec_half(d: &Dec32, s: __m512i) -> (__m512i, __m512i, __mmask16) {
    // SAFETY: every index is `s & mask`, below `2^prob_bits <= table.len()` (the caller of
    // `group` guarantees it), and the scale is the entry size.
    let e = unsafe { _mm512_i32gather_epi32::<4>(_mm512_and_si512(s, d.mask), d.table) };
    let freq = _mm512_and_si512(_mm512_srli_epi32::<9>(e), _mm512_set1_epi32(0xfff));
    let x = _mm512_add_epi32(
        _mm512_mullo_epi32(freq, _mm512_srl_epi32(s, d.shift)),
        _mm512_srli_epi32::<21>(e),
    );
    let m = _mm512_cmplt_epu32_mask(x, _mm512_set1_epi32(RANS_L as i32));
    (e, x, m)
}

/// Shifts a word into each lane of `x` set in `m`, taking the words in lane order from
/// `src`; reads 32 bytes at `src`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dec_renorm(x: __m512i, m: __mmask16, src: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 32 readable bytes at `src`.
    let raw = unsafe { _mm256_loadu_si256(src.cast()) };
    let w = _mm512_maskz_expand_epi32(m, _mm512_cvtepu16_epi32(raw));
    _mm512_or_si512(_mm512_mask_slli_epi32::<16>(x, m, x), w)
}

impl Dec32 {
    /// Decodes one group of 32 symbols into `out` and returns the bytes consumed, or
    /// `None` (changing nothing) when that would be more than `avail`.
    ///
    /// Safety: `src` must have `avail.min(32) + 32` readable bytes when `CHECKED`, 64
    /// otherwise (then `avail` is ignored); `out` must have 32 writable `u16`s.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,popcnt")]
    unsafe fn group<const CHECKED: bool>(
        &mut self,
        src: *const u8,
        avail: usize,
        out: *mut u16,
    ) -> Option<usize> {
        // SAFETY: the table covers every index (this function's contract).
        let ((e0, x0, m0), (e1, x1, m1)) =
            unsafe { (dec_half(self, self.s[0]), dec_half(self, self.s[1])) };
        let n0 = 2 * m0.count_ones() as usize;
        let n1 = 2 * m1.count_ones() as usize;
        if CHECKED && n0 + n1 > avail {
            return None;
        }
        // SAFETY: the words of the first half start at `src`, those of the second at
        // `src + n0` with `n0 <= 32`; either read is 32 bytes, within the readable bytes the
        // contract promises (when `CHECKED`, `n0 <= avail`, so `n0 + 32 <= avail.min(32) +
        // 32`).
        unsafe {
            self.s[0] = dec_renorm(x0, m0, src);
            self.s[1] = dec_renorm(x1, m1, src.add(n0));
        }
        let syms = _mm512_and_si512(
            _mm512_permutex2var_epi16(e0, load_index(&LOW_HALVES), e1),
            _mm512_set1_epi16(0x1ff),
        );
        // SAFETY: `out` has room for 32 symbols (the contract).
        unsafe { _mm512_storeu_si512(out.cast(), syms) };
        Some(n0 + n1)
    }
}

impl Dec32 {
    /// Safety: the CPU has AVX-512F; `states` holds 32 states.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(table: &[u32], prob_bits: u32, states: &[u32]) -> Dec32 {
        debug_assert!(states.len() == 32 && table.len() >= 1 << prob_bits);
        // SAFETY: `states` holds 32 `u32`s, 128 bytes.
        let s = unsafe {
            [
                _mm512_loadu_si512(states.as_ptr().cast()),
                _mm512_loadu_si512(states.as_ptr().add(16).cast()),
            ]
        };
        Dec32 {
            s,
            table: table.as_ptr().cast(),
            mask: _mm512_set1_epi32(((1u32 << prob_bits) - 1) as i32),
            shift: _mm_cvtsi32_si128(prob_bits as i32),
        }
    }

    /// Safety: the CPU has AVX-512F; `states` holds 32 states.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(&self, states: &mut [u32]) {
        debug_assert!(states.len() == 32);
        // SAFETY: `states` holds 32 `u32`s, 128 bytes.
        unsafe {
            _mm512_storeu_si512(states.as_mut_ptr().cast(), self.s[0]);
            _mm512_storeu_si512(states.as_mut_ptr().add(16).cast(), self.s[1]);
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
    unsafe { encode32(symbols, rcp, info, prob_bits, states, words, fast_gathers()) }
}

/// [`rans_encode`] with the entries of large tables fetched by gathers (`GATHER`, the choice
/// on Intel cores) or loaded one by one (the choice on AMD cores), for tests.
#[cfg(test)]
pub(crate) fn rans_encode_by<const GATHER: bool>(
    symbols: &[u16],
    rcp: &[u32],
    info: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
) -> usize {
    assert!(supported() && states.len() == 32 && prob_bits <= MAX_PROB_BITS);
    // SAFETY: as in `rans_encode`.
    unsafe { encode32(symbols, rcp, info, prob_bits, states, words, GATHER) }
}

/// Whether the encoder fetches the entries of tables too large for [`Dense`] by gathers
/// (`true`) or loads them one by one: gathers everywhere but on AMD cores. On a 2-core AMD
/// EPYC (Zen 4) VM the loads took the encoder from 0.63 to 0.47-0.48 ns per symbol (193
/// symbols present, `cargo run --release --example kernels`, three runs each way), as fast as
/// the permutes of `Dense`; on a 2-core Intel Xeon (Emerald Rapids) VM the gathering encoder
/// ran at 0.51 ns per symbol, faster than `Dense` there (0.58), and the loads were not
/// measured.
fn fast_gathers() -> bool {
    static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAST.get_or_init(|| {
        // Leaf 0 (the vendor) exists on every x86-64 CPU.
        let id = __cpuid(0);
        // "AuthenticAMD", in the order ebx, edx, ecx.
        (id.ebx, id.edx, id.ecx) != (0x6874_7541, 0x6974_6e65, 0x444d_4163)
    })
}

/// Largest table the vector encoder copies; symbols at or above it (which no rANS table of
/// this crate has) go to the scalar code.
const ENC_TABLE: usize = crate::entropy::rans::MAX_ALPHABET;

/// How the encoder fetches the table entries of a group's symbols.
///
/// `fetch` takes the 32 symbols of a group (all below the table size), in a register and at
/// `at` in memory (where they were loaded from), and returns, for each half of 16 lanes,
/// `info` in 32-bit lanes and `rcp` twice: the even lanes' values in the low halves of the
/// 64-bit lanes, then the odd lanes' (as `_mm512_mul_epu32` wants them).
trait EncLookup {
    /// Whether [`encode_groups`] stages the words of a batch of groups rather than storing
    /// each group's with a masked store.
    const STAGED: bool = false;

    /// Safety: every symbol must be inside the table, and `at` must point to the 32 symbols.
    unsafe fn fetch(&self, sy: __m512i, at: *const u16) -> [(__m512i, __m512i, __m512i); 2];
}

/// Entries by gather from `table[s] = rcp[s] | info[s] << 32`: one 64-bit gather fetches
/// both values of 8 lanes.
struct Gather {
    table: *const i64,
}

impl EncLookup for Gather {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fetch(&self, sy: __m512i, _at: *const u16) -> [(__m512i, __m512i, __m512i); 2] {
        let half = |idx: __m512i| {
            // The even lanes' symbols, then the odd lanes', as 64-bit indices.
            let even = _mm512_and_si512(idx, _mm512_set1_epi64(0xffff_ffff));
            let odd = _mm512_srli_epi64::<32>(idx);
            // SAFETY: the symbols are inside the table (the contract of `fetch`).
            let (ge, go) = unsafe {
                (
                    _mm512_i64gather_epi64::<8>(even, self.table),
                    _mm512_i64gather_epi64::<8>(odd, self.table),
                )
            };
            let info = _mm512_mask_blend_epi32(0xaaaa, _mm512_srli_epi64::<32>(ge), go);
            (info, ge, go)
        };
        [
            half(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(sy))),
            half(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(sy))),
        ]
    }
}

/// Entries loaded one by one from `table[s] = rcp[s] | info[s] << 32`, their indices straight
/// from the symbols in memory (see [`fast_gathers`]).
struct Loads {
    table: *const i64,
}

impl EncLookup for Loads {
    const STAGED: bool = true;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fetch(&self, _sy: __m512i, at: *const u16) -> [(__m512i, __m512i, __m512i); 2] {
        // SAFETY: the 32 symbols at `at` are readable and inside the table (the contract).
        // Each symbol is read from memory (a volatile read): plain reads were merged with
        // the group's vector load into word extracts, which measured slower (with the stage
        // of `encode_groups`, 0.475 against 0.385 ns per symbol on a Zen 4 core).
        let ld = |k: usize| unsafe {
            self.table
                .add(usize::from(at.add(k).read_volatile()))
                .read()
        };
        let half = |o: usize| {
            let ge = _mm512_set_epi64(
                ld(o + 14),
                ld(o + 12),
                ld(o + 10),
                ld(o + 8),
                ld(o + 6),
                ld(o + 4),
                ld(o + 2),
                ld(o),
            );
            let go = _mm512_set_epi64(
                ld(o + 15),
                ld(o + 13),
                ld(o + 11),
                ld(o + 9),
                ld(o + 7),
                ld(o + 5),
                ld(o + 3),
                ld(o + 1),
            );
            let info = _mm512_mask_blend_epi32(0xaaaa, _mm512_srli_epi64::<32>(ge), go);
            (info, ge, go)
        };
        [half(0), half(16)]
    }
}

/// Entries by permutes, for tables with at most 63 distinct present symbols (real tensors
/// have a few dozen): a byte table in eight registers maps each symbol to a dense index
/// (0 for absent symbols, whose entries are zero), and the dense `rcp` and `info` tables
/// (64 entries, four registers each) are indexed with two-source permutes. A gather costs
/// about a cycle per element on the cores measured (Zen 4); this costs a dozen instructions
/// per 16 lanes, and takes the encoder from 0.66 to 0.47 ns per symbol there.
struct Dense {
    index: [__m512i; 8],
    rcp: [__m512i; 4],
    info: [__m512i; 4],
}

/// Looks up 64 32-bit entries held in `t` at the (6-bit) indices `d`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn lookup64(t: &[__m512i; 4], d: __m512i, high: __mmask16) -> __m512i {
    _mm512_mask_blend_epi32(
        high,
        _mm512_permutex2var_epi32(t[0], d, t[1]),
        _mm512_permutex2var_epi32(t[2], d, t[3]),
    )
}

impl Dense {
    /// The permute tables, if at most 63 symbols below `n` have an entry.
    #[target_feature(enable = "avx512f")]
    unsafe fn new(rcp: &[u32], info: &[u32], n: usize) -> Option<Dense> {
        let mut index = [0u8; ENC_TABLE];
        let mut dr = [0u32; 64];
        let mut di = [0u32; 64];
        let mut k = 0usize;
        for s in 0..n {
            if rcp[s] != 0 || info[s] != 0 {
                k += 1;
                if k == 64 {
                    return None;
                }
                index[s] = k as u8;
                dr[k] = rcp[s];
                di[k] = info[s];
            }
        }
        // SAFETY: the loads read inside the arrays above (64 bytes or 16 `u32`s each).
        unsafe {
            Some(Dense {
                index: std::array::from_fn(|i| _mm512_loadu_si512(index[64 * i..].as_ptr().cast())),
                rcp: std::array::from_fn(|i| _mm512_loadu_si512(dr[16 * i..].as_ptr().cast())),
                info: std::array::from_fn(|i| _mm512_loadu_si512(di[16 * i..].as_ptr().cast())),
            })
        }
    }
}

impl EncLookup for Dense {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    unsafe fn fetch(&self, sy: __m512i, _at: *const u16) -> [(__m512i, __m512i, __m512i); 2] {
        // Dense indices of the 32 symbols, as bytes: the low 7 bits of a symbol index a
        // pair of registers, bits 7 and 8 choose the pair.
        let b = _mm512_castsi256_si512(_mm512_cvtepi16_epi8(sy));
        let t = &self.index;
        let bit7 = u64::from(_mm512_test_epi16_mask(sy, _mm512_set1_epi16(0x80)));
        let bit8 = u64::from(_mm512_test_epi16_mask(sy, _mm512_set1_epi16(0x100)));
        let lo = _mm512_mask_blend_epi8(
            bit7,
            _mm512_permutex2var_epi8(t[0], b, t[1]),
            _mm512_permutex2var_epi8(t[2], b, t[3]),
        );
        let hi = _mm512_mask_blend_epi8(
            bit7,
            _mm512_permutex2var_epi8(t[4], b, t[5]),
            _mm512_permutex2var_epi8(t[6], b, t[7]),
        );
        let d = _mm512_mask_blend_epi8(bit8, lo, hi);
        let half = |d: __m512i| {
            let high = _mm512_test_epi32_mask(d, _mm512_set1_epi32(32));
            // SAFETY: plain register permutes; the features are enabled here.
            let (rcp, info) =
                unsafe { (lookup64(&self.rcp, d, high), lookup64(&self.info, d, high)) };
            (info, rcp, _mm512_srli_epi64::<32>(rcp))
        };
        [
            half(_mm512_cvtepu8_epi32(_mm512_castsi512_si128(d))),
            half(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32::<1>(d))),
        ]
    }
}

/// One 16-lane half of an encode step on states `x` with the entries `(info, rcp_even,
/// rcp_odd)` of [`EncLookup::fetch`]: returns the new states, the old ones (whose low 16
/// bits are the words), and which lanes emit a word.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn enc_half(
    x: __m512i,
    (info, rcp_even, rcp_odd): (__m512i, __m512i, __m512i),
    total: __m512i,
    xmax_shift: __m128i,
) -> (__m512i, __m512i, __mmask16) {
    let bias = _mm512_and_si512(info, _mm512_set1_epi32(0xfff));
    let cmpl = _mm512_and_si512(_mm512_srli_epi32::<12>(info), _mm512_set1_epi32(0x7ff));
    let shift = _mm512_srli_epi32::<23>(info);
    let x_max = _mm512_sll_epi32(_mm512_sub_epi32(total, cmpl), xmax_shift);
    let m = _mm512_cmpge_epu32_mask(x, x_max);
    let y = _mm512_mask_srli_epi32::<16>(x, m, x);
    // High halves of y * rcp: the even lanes' products land in the high half of each
    // 64-bit lane, shifted down; the odd lanes' are already in place.
    let pe = _mm512_srli_epi64::<32>(_mm512_mul_epu32(y, rcp_even));
    let po = _mm512_mul_epu32(_mm512_srli_epi64::<32>(y), rcp_odd);
    let q = _mm512_srlv_epi32(_mm512_mask_blend_epi32(0xaaaa, pe, po), shift);
    let y = _mm512_add_epi32(_mm512_add_epi32(y, bias), _mm512_mullo_epi32(q, cmpl));
    (y, x, m)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
unsafe fn encode32(
    symbols: &[u16],
    rcp: &[u32],
    info: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
    gather: bool,
) -> usize {
    debug_assert_eq!(states.len(), 32);
    let mut pos = words.len();
    let full = symbols.len() / 32 * 32;
    let (head, tail) = symbols.split_at(full);
    // The partial last group goes first: the encoder runs backward.
    scalar::encode_group_rev(tail, rcp, info, prob_bits, states, words, &mut pos);
    let mut g = full / 32;
    // A group with a symbol outside the copied table goes to the scalar code below (which
    // panics on one outside `rcp` or `info`, as the reference does).
    let n_table = rcp.len().min(info.len()).min(ENC_TABLE);
    if g > 0 && n_table > 0 {
        // SAFETY: the CPU has the features; `n_table` is within both tables.
        if let Some(dense) = unsafe { Dense::new(rcp, info, n_table) } {
            // SAFETY: `encode_groups`' contract: symbols below `n_table` are inside the
            // dense index table, and `head` holds `g` groups.
            unsafe {
                encode_groups(
                    &dense, n_table, head, prob_bits, states, words, &mut pos, &mut g,
                )
            };
        } else {
            let mut table = [0u64; ENC_TABLE];
            for (t, (&r, &i)) in table.iter_mut().zip(rcp.iter().zip(info)) {
                *t = u64::from(r) | u64::from(i) << 32;
            }
            let table = table.as_ptr().cast();
            // SAFETY: symbols below `n_table` are inside `table`, and `head` holds `g` groups.
            unsafe {
                if gather {
                    let lookup = Gather { table };
                    encode_groups(
                        &lookup, n_table, head, prob_bits, states, words, &mut pos, &mut g,
                    )
                } else {
                    let lookup = Loads { table };
                    encode_groups(
                        &lookup, n_table, head, prob_bits, states, words, &mut pos, &mut g,
                    )
                }
            };
        }
    }
    for group in head[..32 * g].chunks_exact(32).rev() {
        scalar::encode_group_rev(group, rcp, info, prob_bits, states, words, &mut pos);
    }
    pos
}

/// The state of [`encode_groups`] between groups: the 32 states and the constants of a step.
struct Enc32 {
    s: [__m512i; 2],
    total: __m512i,
    xmax_shift: __m128i,
    low: __m512i,
}

impl Enc32 {
    /// Encodes one group, the 32 symbols `sy` (read from `at`), and returns its words in
    /// the low lanes of a register (the rest zero) and how many there are.
    ///
    /// Safety: as [`EncLookup::fetch`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
    unsafe fn group<L: EncLookup>(
        &mut self,
        lookup: &L,
        sy: __m512i,
        at: *const u16,
    ) -> (__m512i, usize) {
        // SAFETY: passed on to the caller.
        let [e0, e1] = unsafe { lookup.fetch(sy, at) };
        let (y0, w0, m0) = enc_half(self.s[0], e0, self.total, self.xmax_shift);
        let (y1, w1, m1) = enc_half(self.s[1], e1, self.total, self.xmax_shift);
        self.s = [y0, y1];
        let m = u32::from(m0) | u32::from(m1) << 16;
        let words = _mm512_permutex2var_epi16(w0, self.low, w1);
        (
            _mm512_maskz_compress_epi16(m, words),
            m.count_ones() as usize,
        )
    }
}

/// Group `g - 1` of `head` (its 32 symbols, and where they are), if `g > 0`, its symbols
/// are at most `limit`, and `pos` leaves room for its words (at most 32) below it.
///
/// Safety: `head` must hold `g` groups of 32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn next_group(
    head: &[u16],
    limit: __m512i,
    g: usize,
    pos: usize,
) -> Option<(__m512i, *const u16)> {
    if g == 0 || pos < 32 {
        return None;
    }
    let at = head.as_ptr().wrapping_add(32 * (g - 1));
    // SAFETY: group `g - 1` is 32 symbols inside `head` (the contract).
    let sy = unsafe { _mm512_loadu_si512(at.cast()) };
    (_mm512_cmpgt_epu16_mask(sy, limit) == 0).then_some((sy, at))
}

/// Stores the first `c <= 32` words of `v` at `p`, and nothing past them.
///
/// Safety: `p..p + c` must be writable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn store_words(p: *mut u16, v: __m512i, c: usize) {
    // SAFETY: the mask covers the first `c` words only (the contract).
    unsafe { _mm512_mask_storeu_epi16(p.cast(), ((1u64 << c) - 1) as u32, v) }
}

/// Groups whose words [`encode_groups`] holds before copying them into place, when the
/// lookup asks for it ([`EncLookup::STAGED`]).
const STAGE: usize = 64;

/// Encodes groups `g - 1` down to 0 of `head` while their symbols are below `n_table` and
/// `words` has room below `pos`, updating `states`, `pos` and `g`.
///
/// Each group's words are stored with a masked store, or with [`EncLookup::STAGED`] kept
/// whole in a stage and copied into `words` a batch at a time, in ascending order, each with
/// a whole 64-byte store whose lanes past the group's words the next copy overwrites. On a
/// Zen 4 core, with [`Loads`], the encoder ran at 0.47 ns per symbol with masked stores and
/// 0.385 with the stage; with [`Dense`] the stage was slower (0.50 against 0.47), and
/// [`Gather`] (Intel's choice) was not measured with it.
///
/// Safety: `lookup.fetch` must accept every symbol below `n_table`, `head` must hold at
/// least `g` groups of 32, and `states` must hold 32 states.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
unsafe fn encode_groups<L: EncLookup>(
    lookup: &L,
    n_table: usize,
    head: &[u16],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
    pos: &mut usize,
    g: &mut usize,
) {
    let limit = _mm512_set1_epi16((n_table - 1) as i16);
    // SAFETY: `states` holds 32 `u32`s.
    let mut enc = unsafe {
        Enc32 {
            s: [
                _mm512_loadu_si512(states.as_ptr().cast()),
                _mm512_loadu_si512(states.as_ptr().add(16).cast()),
            ],
            total: _mm512_set1_epi32(1 << prob_bits),
            xmax_shift: _mm_cvtsi32_si128(31 - prob_bits as i32),
            low: load_index(&LOW_HALVES),
        }
    };
    if L::STAGED {
        let mut stage = [_mm512_setzero_si512(); STAGE];
        let mut counts = [0u8; STAGE];
        let mut more = true;
        while more {
            let top = *pos;
            let mut n = 0;
            while n < STAGE {
                // SAFETY: `head` holds `g` groups (the contract; `g` only goes down).
                let Some((sy, at)) = (unsafe { next_group(head, limit, *g, *pos) }) else {
                    more = false;
                    break;
                };
                // SAFETY: the group's symbols are below `n_table` (the contract).
                let (v, c) = unsafe { enc.group(lookup, sy, at) };
                (stage[n], counts[n]) = (v, c as u8);
                *pos -= c;
                *g -= 1;
                n += 1;
            }
            // The batch's words fill `words[pos..top]`, the last group's first.
            let mut dst = *pos;
            for (v, &c) in stage[..n].iter().zip(&counts[..n]).rev() {
                let c = usize::from(c);
                // SAFETY: `dst + c <= top <= words.len()`; a whole store, `words[dst..dst +
                // 32]`, only where that ends at or below `top`: the words past `dst + c`
                // are rewritten by the copies that follow, whose words reach `top`.
                unsafe {
                    let p = words.as_mut_ptr().add(dst);
                    if dst + 32 <= top {
                        _mm512_storeu_si512(p.cast(), *v);
                    } else {
                        store_words(p, *v, c);
                    }
                }
                dst += c;
            }
            debug_assert_eq!(dst, top);
        }
    } else {
        // SAFETY: `head` holds `g` groups (the contract; `g` only goes down).
        while let Some((sy, at)) = unsafe { next_group(head, limit, *g, *pos) } {
            // SAFETY: the group's symbols are below `n_table` (the contract).
            let (v, c) = unsafe { enc.group(lookup, sy, at) };
            *pos -= c;
            // SAFETY: `c <= 32 <= pos` before the subtraction, and only the first `c`
            // words (inside `words[pos..pos + c]`) are stored.
            unsafe { store_words(words.as_mut_ptr().add(*pos), v, c) };
            *g -= 1;
        }
    }
    // SAFETY: as for the loads.
    unsafe {
        _mm512_storeu_si512(states.as_mut_ptr().cast(), enc.s[0]);
        _mm512_storeu_si512(states.as_mut_ptr().add(16).cast(), enc.s[1]);
    }
}

// ---------------------------------------------------------------------------------------
// Float split, mantissa packing, merge
// ---------------------------------------------------------------------------------------

/// [`crate::quant::uniform::flagged`] on the symbols themselves, 32 16-bit lanes a vector (the generic
/// kernel widens them to 32-bit lanes): 2^18 symbols with 533 found took 0.070-0.074 ns per
/// symbol there, 0.047-0.050 here (Zen 4).
pub fn flagged(symbols: &[u16], lo: u16, hi: u16, out: &mut Vec<u32>) {
    if !supported() {
        return crate::quant::uniform::flagged(symbols, lo, hi, out);
    }
    let done = symbols.len() / 64 * 64;
    // SAFETY: the CPU has the features; the loop reads `done <= len` symbols.
    unsafe { flagged_vec(&symbols[..done], lo, hi, out) };
    crate::quant::uniform::flagged_from(symbols, done, lo, hi, out);
}

/// The whole runs of 64 of [`flagged`].
///
/// Safety: the CPU must have AVX-512 F and BW; `symbols.len()` is a multiple of 64.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn flagged_vec(symbols: &[u16], lo: u16, hi: u16, out: &mut Vec<u32>) {
    debug_assert!(symbols.len().is_multiple_of(64));
    let (lo_v, hi_v) = (_mm512_set1_epi16(lo as i16), _mm512_set1_epi16(hi as i16));
    let esc = _mm512_set1_epi16(crate::quant::uniform::ESC as i16);
    let src = symbols.as_ptr();
    let flags = |v: __m512i| -> u64 {
        let inside = _mm512_cmpge_epu16_mask(v, lo_v) & _mm512_cmplt_epu16_mask(v, hi_v);
        u64::from(inside | _mm512_cmpeq_epi16_mask(v, esc))
    };
    for i in (0..symbols.len()).step_by(64) {
        // SAFETY: symbols `i..i + 64` are inside `symbols`.
        let (a, b) = unsafe {
            (
                _mm512_loadu_si512(src.add(i).cast()),
                _mm512_loadu_si512(src.add(i + 32).cast()),
            )
        };
        let mut m = flags(a) | flags(b) << 32;
        while m != 0 {
            out.push((i + m.trailing_zeros() as usize) as u32);
            m &= m - 1;
        }
    }
}

pub fn split(fs: FloatSplit, input: &[u8], symbols: &mut [u16]) -> u32 {
    if !(supported() && vector_layout(fs)) {
        return scalar::split(fs, input, symbols);
    }
    let n = symbols.len();
    assert_eq!(input.len(), n * fs.bytes);
    let done = n / 32 * 32;
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

/// Writes the symbols of the first `symbols.len()` (a multiple of 32) elements of `input`
/// and returns the OR of their mantissas.
///
/// Safety: `input` must hold at least `symbols.len()` elements of `BYTES` bytes, and
/// `mant_bits` must be below `8 BYTES`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn split_vec<const BYTES: usize>(mant_bits: u32, input: &[u8], symbols: &mut [u16]) -> u32 {
    let n = symbols.len();
    debug_assert!(n.is_multiple_of(32) && input.len() >= n * BYTES);
    let src = input.as_ptr();
    let dst = symbols.as_mut_ptr();
    let mut acc = _mm512_setzero_si512();
    if BYTES == 2 {
        let shift = _mm_cvtsi32_si128(mant_bits as i32);
        for i in (0..n).step_by(32) {
            prefetch(src.wrapping_add(2 * i + PREFETCH_AHEAD));
            // SAFETY: elements `i..i + 32` are inside `input` and `symbols`.
            unsafe {
                let v = _mm512_loadu_si512(src.add(2 * i).cast());
                acc = _mm512_or_si512(acc, v);
                _mm512_storeu_si512(dst.add(i).cast(), _mm512_srl_epi16(v, shift));
            }
        }
        let or = _mm512_reduce_or_epi32(acc) as u32;
        (or | or >> 16) & ((1 << mant_bits) - 1)
    } else {
        let shift = _mm_cvtsi32_si128(mant_bits as i32 - 16);
        let high = load_index(&HIGH_HALVES);
        for i in (0..n).step_by(32) {
            prefetch(src.wrapping_add(4 * i + PREFETCH_AHEAD));
            prefetch(src.wrapping_add(4 * i + 64 + PREFETCH_AHEAD));
            // SAFETY: elements `i..i + 32` are inside `input` and `symbols`.
            unsafe {
                let a = _mm512_loadu_si512(src.add(4 * i).cast());
                let b = _mm512_loadu_si512(src.add(4 * i + 64).cast());
                acc = _mm512_or_si512(acc, _mm512_or_si512(a, b));
                let hi = _mm512_permutex2var_epi16(a, high, b);
                _mm512_storeu_si512(dst.add(i).cast(), _mm512_srl_epi16(hi, shift));
            }
        }
        _mm512_reduce_or_epi32(acc) as u32 & ((1 << mant_bits) - 1)
    }
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

/// Loads row `row` (16 elements) of a block at `src` as 32-bit lanes.
///
/// Safety: the row must be readable.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_row<const BYTES: usize>(src: *const u8, row: usize) -> __m512i {
    // SAFETY: the caller guarantees the row is readable.
    unsafe {
        if BYTES == 2 {
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(src.add(32 * row).cast()))
        } else {
            _mm512_loadu_si512(src.add(64 * row).cast())
        }
    }
}

/// Packs the mantissas of `blocks` whole blocks of `input`.
///
/// Safety: `input` must hold `blocks` blocks of `BYTES`-byte elements, `out` must hold
/// `64 (mant_bits - drop)` bytes per block, and `0 < mant_bits - drop <= mant_bits < 32`.
#[target_feature(enable = "avx512f")]
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
    let mask = _mm512_set1_epi32(((1u32 << mant_bits) - 1) as i32);
    let dropc = _mm_cvtsi32_si128(drop as i32);
    for b in 0..blocks {
        // SAFETY: block `b` and its packed words are inside `input` and `out`.
        let (src, dst) = unsafe {
            (
                input.as_ptr().add(b * 512 * BYTES),
                out.as_mut_ptr().add(b * 64 * w as usize),
            )
        };
        let mut acc = _mm512_setzero_si512();
        let mut bits = 0u32;
        let mut k = 0usize;
        for row in 0..32 {
            // SAFETY: row `row < 32` of the block is readable.
            let v = unsafe { load_row::<BYTES>(src, row) };
            let m = _mm512_srl_epi32(_mm512_and_si512(v, mask), dropc);
            acc = _mm512_or_si512(acc, _mm512_sll_epi32(m, _mm_cvtsi32_si128(bits as i32)));
            bits += w;
            if bits >= 32 {
                // SAFETY: the block has `w` words per lane, and word `k < w` of the 16
                // lanes sits at bytes `64 k .. 64 k + 64`.
                unsafe { _mm512_storeu_si512(dst.add(64 * k).cast(), acc) };
                k += 1;
                bits -= 32;
                acc = _mm512_srl_epi32(m, _mm_cvtsi32_si128((w - bits) as i32));
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
#[target_feature(enable = "avx512f")]
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
    let mask = _mm512_set1_epi32(((1u64 << w) - 1) as i32);
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
        let mut acc = _mm512_setzero_si512();
        let mut bits = 0u32;
        let mut k = 0usize;
        for row in 0..32 {
            let m = if bits < w {
                // SAFETY: the block has `w` words per lane; this is word `k < w`.
                let nw = unsafe { _mm512_loadu_si512(src.add(64 * k).cast()) };
                k += 1;
                let m = _mm512_or_si512(acc, _mm512_sll_epi32(nw, _mm_cvtsi32_si128(bits as i32)));
                acc = _mm512_srl_epi32(nw, _mm_cvtsi32_si128((w - bits) as i32));
                bits += 32 - w;
                m
            } else {
                let m = acc;
                acc = _mm512_srl_epi32(acc, wc);
                bits -= w;
                m
            };
            let m = _mm512_and_si512(m, mask);
            if hints {
                prefetch_write(dst.wrapping_add(BYTES * 16 * row + PREFETCH_AHEAD));
            }
            // SAFETY: row `row < 32` of the block is inside `symbols` and `out`.
            unsafe {
                let s = _mm512_cvtepu16_epi32(_mm256_loadu_si256(sym.add(16 * row).cast()));
                let v = _mm512_or_si512(_mm512_sll_epi32(s, mantc), _mm512_sll_epi32(m, dropc));
                if BYTES == 2 {
                    _mm256_storeu_si256(dst.add(32 * row).cast(), _mm512_cvtepi32_epi16(v));
                } else {
                    _mm512_storeu_si512(dst.add(64 * row).cast(), v);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The lossy kernels: `vector.rs`'s generic bodies over 16 lanes
// ---------------------------------------------------------------------------------------

/// AVX-512 lanes for the generic kernels: 16 `f32`, masks in `k` registers, the eight `f64`
/// error sums in one register.
#[derive(Clone, Copy)]
pub(super) struct V512;

/// `vpermb` indices of [`Simd::transpose_4x16`]: byte `4 l + r` takes byte `16 r + l`.
const TRANSPOSE: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = (16 * (i % 4) + i / 4) as u8;
        i += 1;
    }
    t
};

/// The inverse permutation: byte `16 r + l` takes byte `4 l + r`.
const UNTRANSPOSE: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = (4 * (i % 16) + i / 16) as u8;
        i += 1;
    }
    t
};

/// The increment of the stochastic-rounding counter.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finalizer of eight counters, then their top 24 bits.
#[inline(always)]
unsafe fn mix24(z: __m512i) -> __m256i {
    let z = _mm512_xor_si512(z, _mm512_srli_epi64::<30>(z));
    let z = _mm512_mullo_epi64(z, _mm512_set1_epi64(0xBF58_476D_1CE4_E5B9u64 as i64));
    let z = _mm512_xor_si512(z, _mm512_srli_epi64::<27>(z));
    let z = _mm512_mullo_epi64(z, _mm512_set1_epi64(0x94D0_49BB_1331_11EBu64 as i64));
    let z = _mm512_xor_si512(z, _mm512_srli_epi64::<31>(z));
    _mm512_cvtepi64_epi32(_mm512_srli_epi64::<40>(z))
}

// SAFETY: the methods wrap AVX-512 F/BW/DQ/VBMI intrinsics; `Simd`'s contract (features
// present and enabled, the named bytes readable or writable) is the caller's.
unsafe impl Simd for V512 {
    const W: usize = 16;
    type F = __m512;
    type I = __m512i;
    type M = __mmask16;
    type D = [__m512d; 2];
    type Acc = __m512d;
    type P = __m512;

    #[inline(always)]
    unsafe fn splat(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> __m512i {
        _mm512_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const u8) -> __m512 {
        _mm512_loadu_ps(p.cast())
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const u8) -> __m512i {
        _mm512_loadu_si512(p.cast())
    }
    #[inline(always)]
    unsafe fn load_u16(p: *const u8) -> __m512i {
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))
    }
    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> __m512i {
        _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const u8) -> __m512i {
        _mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn store_f32(p: *mut u8, v: __m512) {
        _mm512_storeu_ps(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn store_i32(p: *mut u8, v: __m512i) {
        _mm512_storeu_si512(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn store_u16(p: *mut u8, v: __m512i) {
        _mm256_storeu_si256(p.cast(), _mm512_cvtepi32_epi16(v))
    }
    #[inline(always)]
    unsafe fn store_u8(p: *mut u8, v: __m512i) {
        _mm_storeu_si128(p.cast(), _mm512_cvtepi32_epi8(v))
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        _mm512_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        _mm512_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn round_even(a: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }
    #[inline(always)]
    unsafe fn cvt_fi(a: __m512) -> __m512i {
        _mm512_cvttps_epi32(a)
    }
    #[inline(always)]
    unsafe fn cvt_round_fi(a: __m512) -> __m512i {
        _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }
    #[inline(always)]
    unsafe fn cvt_if(a: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(a)
    }
    #[inline(always)]
    unsafe fn bits(a: __m512) -> __m512i {
        _mm512_castps_si512(a)
    }
    #[inline(always)]
    unsafe fn from_bits(a: __m512i) -> __m512 {
        _mm512_castsi512_ps(a)
    }
    #[inline(always)]
    unsafe fn gt(a: __m512, b: __m512) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b)
    }
    #[inline(always)]
    unsafe fn ge(a: __m512, b: __m512) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(a, b)
    }
    #[inline(always)]
    unsafe fn unord(a: __m512, b: __m512) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b)
    }
    #[inline(always)]
    unsafe fn not_le(a: __m512, b: __m512) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(a, b)
    }
    #[inline(always)]
    unsafe fn iadd(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn isub(a: __m512i, b: __m512i) -> __m512i {
        _mm512_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn and(a: __m512i, b: __m512i) -> __m512i {
        _mm512_and_si512(a, b)
    }
    #[inline(always)]
    unsafe fn or(a: __m512i, b: __m512i) -> __m512i {
        _mm512_or_si512(a, b)
    }
    #[inline(always)]
    unsafe fn xor(a: __m512i, b: __m512i) -> __m512i {
        _mm512_xor_si512(a, b)
    }
    #[inline(always)]
    unsafe fn shl(a: __m512i, n: u32) -> __m512i {
        _mm512_sll_epi32(a, _mm_cvtsi32_si128(n as i32))
    }
    #[inline(always)]
    unsafe fn shr(a: __m512i, n: u32) -> __m512i {
        _mm512_srl_epi32(a, _mm_cvtsi32_si128(n as i32))
    }
    #[inline(always)]
    unsafe fn sra(a: __m512i, n: u32) -> __m512i {
        _mm512_sra_epi32(a, _mm_cvtsi32_si128(n as i32))
    }
    #[inline(always)]
    unsafe fn ieq(a: __m512i, b: __m512i) -> __mmask16 {
        _mm512_cmpeq_epi32_mask(a, b)
    }
    #[inline(always)]
    unsafe fn igt(a: __m512i, b: __m512i) -> __mmask16 {
        _mm512_cmpgt_epi32_mask(a, b)
    }
    #[inline(always)]
    unsafe fn imax(a: __m512i, b: __m512i) -> __m512i {
        _mm512_max_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn sel_f(m: __mmask16, a: __m512, b: __m512) -> __m512 {
        _mm512_mask_blend_ps(m, b, a)
    }
    #[inline(always)]
    unsafe fn sel_i(m: __mmask16, a: __m512i, b: __m512i) -> __m512i {
        _mm512_mask_blend_epi32(m, b, a)
    }
    #[inline(always)]
    unsafe fn m_and(a: __mmask16, b: __mmask16) -> __mmask16 {
        a & b
    }
    #[inline(always)]
    unsafe fn m_or(a: __mmask16, b: __mmask16) -> __mmask16 {
        a | b
    }
    #[inline(always)]
    unsafe fn m_not(a: __mmask16) -> __mmask16 {
        !a
    }
    #[inline(always)]
    unsafe fn mask_bits(m: __mmask16) -> u32 {
        u32::from(m)
    }
    #[inline(always)]
    unsafe fn mask_from_bits(b: u32) -> __mmask16 {
        b as __mmask16
    }
    #[inline(always)]
    unsafe fn hmax_i(a: __m512i) -> i32 {
        _mm512_reduce_max_epi32(a)
    }
    #[inline(always)]
    unsafe fn acc_load(s: &[f64; 8]) -> __m512d {
        _mm512_loadu_pd(s.as_ptr())
    }
    #[inline(always)]
    unsafe fn acc_store(acc: __m512d, s: &mut [f64; 8]) {
        _mm512_storeu_pd(s.as_mut_ptr(), acc)
    }
    #[inline(always)]
    unsafe fn diff(y: __m512, x: __m512) -> [__m512d; 2] {
        [
            _mm512_sub_pd(
                _mm512_cvtps_pd(_mm512_castps512_ps256(y)),
                _mm512_cvtps_pd(_mm512_castps512_ps256(x)),
            ),
            _mm512_sub_pd(
                _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(y)),
                _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(x)),
            ),
        ]
    }
    #[inline(always)]
    unsafe fn err_add(acc: &mut __m512d, d: [__m512d; 2], max_abs: f64, lane: usize) -> u32 {
        debug_assert_eq!(lane, 0);
        let max = _mm512_set1_pd(max_abs);
        let mut bits = 0;
        for (k, d) in d.into_iter().enumerate() {
            let bad = _mm512_cmp_pd_mask::<_CMP_UNORD_Q>(d, d)
                | _mm512_cmp_pd_mask::<_CMP_GT_OQ>(_mm512_abs_pd(d), max);
            *acc = _mm512_mask_add_pd(*acc, !bad, *acc, _mm512_mul_pd(d, d));
            bits |= u32::from(bad) << (8 * k);
        }
        bits
    }
    #[inline(always)]
    unsafe fn err_add_keep(acc: &mut __m512d, d: [__m512d; 2], keep: __mmask16, lane: usize) {
        debug_assert_eq!(lane, 0);
        *acc = _mm512_mask_add_pd(*acc, keep as __mmask8, *acc, _mm512_mul_pd(d[0], d[0]));
        *acc = _mm512_mask_add_pd(
            *acc,
            (keep >> 8) as __mmask8,
            *acc,
            _mm512_mul_pd(d[1], d[1]),
        );
    }
    #[inline(always)]
    unsafe fn part_load(p: &[f32; 16]) -> __m512 {
        _mm512_loadu_ps(p.as_ptr())
    }
    #[inline(always)]
    unsafe fn part_store(p: __m512, out: &mut [f32; 16]) {
        _mm512_storeu_ps(out.as_mut_ptr(), p);
    }
    /// One masked `f32` multiply-add per 16 elements, where the `f64` sums took two widenings
    /// and two masked `f64` multiply-adds: the uniform quantizer went from 0.39-0.40 to
    /// 0.31-0.32 ns per element on a Zen 4 core (`cargo run --release --example kernels`).
    #[inline(always)]
    unsafe fn part_add(p: &mut __m512, s: __m512, keep: __mmask16, part: usize) {
        debug_assert_eq!(part, 0);
        *p = _mm512_mask3_fmadd_ps(s, s, *p, keep);
    }
    #[inline(always)]
    unsafe fn part_flush(acc: &mut __m512d, p: &mut __m512, unscale: f64) {
        let u = _mm512_set1_pd(unscale);
        // The products are exact, so a fused multiply-add adds what a multiply and an add do.
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(*p));
        let hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(*p));
        *acc = _mm512_fmadd_pd(lo, u, *acc);
        *acc = _mm512_fmadd_pd(hi, u, *acc);
        *p = _mm512_setzero_ps();
    }
    #[inline(always)]
    unsafe fn sq_add(acc: &mut __m512d, v: __m512, lane: usize) {
        debug_assert_eq!(lane, 0);
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        let hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(v));
        *acc = _mm512_add_pd(*acc, _mm512_mul_pd(lo, lo));
        *acc = _mm512_add_pd(*acc, _mm512_mul_pd(hi, hi));
    }
    #[inline(always)]
    unsafe fn thresholds(seed: u64, index: u64) -> __m512 {
        let z0 = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN));
        let g = |k: u64| GOLDEN.wrapping_mul(k) as i64;
        let lo = _mm512_add_epi64(
            _mm512_set1_epi64(z0 as i64),
            _mm512_setr_epi64(0, g(1), g(2), g(3), g(4), g(5), g(6), g(7)),
        );
        let hi = _mm512_add_epi64(lo, _mm512_set1_epi64(g(8)));
        let h = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(mix24(lo)), mix24(hi));
        _mm512_mul_ps(_mm512_cvtepi32_ps(h), _mm512_set1_ps(1.0 / 16_777_216.0))
    }
    #[inline(always)]
    unsafe fn transpose_4x16(src: *const u8, dst: *mut u8) {
        let v = _mm512_loadu_si512(src.cast());
        let idx = _mm512_loadu_si512(TRANSPOSE.as_ptr().cast());
        _mm512_storeu_si512(dst.cast(), _mm512_permutexvar_epi8(idx, v))
    }
    #[inline(always)]
    unsafe fn untranspose_4x16(src: *const u8, dst: *mut u8) {
        let v = _mm512_loadu_si512(src.cast());
        let idx = _mm512_loadu_si512(UNTRANSPOSE.as_ptr().cast());
        _mm512_storeu_si512(dst.cast(), _mm512_permutexvar_epi8(idx, v))
    }
}

super::vector::vector_kernels!(
    V512,
    "avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,popcnt",
    supported
);
