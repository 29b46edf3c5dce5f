//! Hot kernels behind runtime CPU dispatch.
//!
//! Every kernel has a scalar reference in [`scalar`]; the vector versions must produce the
//! same bytes, and the tests check every level this CPU supports against it. The level is
//! detected once (`is_x86_feature_detected!`), nothing depends on the build's target
//! features, and the environment variable `IOTA_CODEC_SIMD` (`scalar`, `avx2`, `avx512`,
//! `neon`, or `auto`) caps it: a level the CPU lacks falls back to the best one it has.
//!
//! Kernels take plain slices; the modules that own a format (entropy, transform, quant)
//! check sizes and parameters before calling them. The scalar references of the lossless
//! kernels are in [`scalar`]; those of the lossy ones live beside their formats in
//! [`crate::quant`] (`convert`, `block`, `bitpack`, `uniform`).

pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod common;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod vector;

use std::cell::Cell;
use std::sync::OnceLock;
use std::thread::LocalKey;

use crate::dtype::DType;
use crate::error::Result;
use crate::quant::block::{self, BlockFormat};
use crate::quant::rounding::Rounding;
use crate::quant::{bitpack, convert, uniform};

/// An instruction-set level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Scalar,
    Neon,
    Avx2,
    Avx512,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Neon => "neon",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" | "off" => Some(Level::Scalar),
            "neon" => Some(Level::Neon),
            "avx2" => Some(Level::Avx2),
            "avx512" | "avx-512" => Some(Level::Avx512),
            _ => None,
        }
    }
}

/// How far ahead of their position (in bytes) the streaming kernels prefetch what they will
/// read next. Chunks of a large tensor come from memory, and some machines' hardware
/// prefetchers do not keep up with a kernel that computes as it streams: on a 2-core AVX-512
/// VM the quantizer and the statistics pass, reading 64 MiB, ran at 30-36% of their in-cache
/// speed without these hints and at 75-95% with them; 2 KiB ahead got most of that, 4 KiB a
/// little more.
///
/// Writes are prefetched only where the pages are known to be mapped ([`with_write_hints`]).
/// The kernels' outputs are often freshly allocated (every decode that returns a new tensor
/// writes into one), and 4 KiB ahead of a fresh buffer's write position lies a page that is
/// not mapped yet: a prefetch there cannot fault it in, and one per store still costs. On a
/// 2-core AMD EPYC (Zen 1) VM, hinting the writes of fresh buffers cost about 30 µs per page
/// (over ten times the page fault) and made decoding into a fresh 64 MiB buffer 3-10x slower
/// (`fast` 0.12 against 1.2 GB/s); on a 2-core Intel Xeon (Emerald Rapids) VM fresh decodes
/// gained nothing from them, while decodes into a reused buffer ran 5-15% faster (medians
/// of paired `make speed` rounds).
pub(crate) const PREFETCH_AHEAD: usize = 4096;

/// Hints that the cache line at `p` will be read soon. A prefetch never faults, so `p` may
/// point anywhere (past the end of a buffer, too); it is a no-op where there is no
/// prefetch instruction to use.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    // SAFETY: `prefetcht0` only loads a cache line if it can; it never faults and has no
    // architectural effect.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints that the cache line at `p` will be written soon (`prefetchw` on x86-64 where the
/// build enables it, and otherwise the read prefetch of [`prefetch`], which serves a store
/// as well; elsewhere a no-op). Like [`prefetch`] it never faults, but on a page that is not
/// mapped yet it still costs (see [`PREFETCH_AHEAD`]): kernels issue it only when
/// [`write_hints`] says so.
#[inline(always)]
pub(crate) fn prefetch_write(p: *const u8) {
    // SAFETY: as for `prefetch`: a hint that never faults.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

thread_local! {
    /// Whether the kernels running on this thread may prefetch their outputs for writing
    /// (set by [`with_write_hints`]).
    static WRITE_HINTS: Cell<bool> = const { Cell::new(false) };
}

/// Whether the kernels running on this thread may prefetch their outputs for writing
/// ([`prefetch_write`] [`PREFETCH_AHEAD`] bytes past what they store): only inside
/// [`with_write_hints`]`(true, ..)`. Kernels read it once per call.
#[inline]
pub(crate) fn write_hints() -> bool {
    WRITE_HINTS.with(Cell::get)
}

/// Runs `f` with the write hints of [`write_hints`] turned on (or off) on the calling
/// thread. Turn them on only for kernels whose outputs lie in pages that are mapped already
/// (a caller's buffer that [`crate::memory::mapped`] vouches for), whatever scratch buffers
/// they write on the way: those are reused, so mapped after their first use.
pub(crate) fn with_write_hints<T>(on: bool, f: impl FnOnce() -> T) -> T {
    with_local(&WRITE_HINTS, on, f)
}

/// Runs `f` with the thread-local `cell` set to `value`, and puts its old value back
/// afterwards (after a panic in `f` too).
fn with_local<V: Copy + 'static, T>(
    cell: &'static LocalKey<Cell<V>>,
    value: V,
    f: impl FnOnce() -> T,
) -> T {
    struct Restore<V: Copy + 'static>(&'static LocalKey<Cell<V>>, V);
    impl<V: Copy + 'static> Drop for Restore<V> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(cell, cell.with(|c| c.replace(value)));
    f()
}

/// How a float splits into a symbol (sign and exponent) and a mantissa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatSplit {
    /// Bytes per element: 2 or 4.
    pub bytes: usize,
    /// Mantissa bits; the symbol is the element shifted right by this.
    pub mant_bits: u32,
}

/// Encodes `symbols` backward into the tail of `words` with `states.len()` interleaved
/// lanes, updating `states`; returns the index of the first word written.
pub type RansEncodeFn = fn(
    symbols: &[u16],
    rcp: &[u32],
    info: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
) -> usize;
/// Decodes `out.len()` symbols from the 16-bit little-endian words in `words`, updating
/// `states`; returns the bytes consumed, or `None` when the words run out.
pub type RansDecodeFn = fn(
    words: &[u8],
    table: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    out: &mut [u16],
) -> Option<usize>;
/// Writes each element's symbol (its sign and exponent) and returns the OR of all mantissas.
pub type SplitFn = fn(fs: FloatSplit, input: &[u8], symbols: &mut [u16]) -> u32;
/// Packs each element's mantissa shifted right by `drop` (`mant_bits - drop` bits wide).
pub type PackMantissaFn = fn(fs: FloatSplit, input: &[u8], drop: u32, out: &mut [u8]);
/// Rebuilds elements from symbols and packed mantissas.
pub type MergeFn = fn(fs: FloatSplit, symbols: &[u16], packed: &[u8], drop: u32, out: &mut [u8]);

/// Loads little-endian `dtype` elements as `f32` (exactly); scalar reference
/// [`convert::load_all`].
pub type ToF32Fn = fn(dtype: DType, input: &[u8], out: &mut [f32]);
/// Rounds `f32` values to `dtype` (nearest-even, saturating) as little-endian bytes; scalar
/// reference [`convert::store_all_sat`].
pub type FromF32Fn = fn(dtype: DType, vals: &[f32], out: &mut [u8]);
/// Block quantization of a chunk's elements into codes and stored scales; returns the count
/// of non-finite elements. Scalar reference [`block::encode_blocks`].
pub type BlockEncodeFn = fn(
    fmt: &BlockFormat,
    rounding: Rounding,
    base: u64,
    dtype: DType,
    input: &[u8],
    codes: &mut [u8],
    scales: &mut [u8],
) -> usize;
/// Block dequantization into `dtype` bytes; scalar reference [`block::decode_blocks`].
pub type BlockDecodeFn =
    fn(fmt: &BlockFormat, dtype: DType, scales: &[u8], codes: &[u8], out: &mut [u8]);
/// Packs `width <= 8`-bit codes; scalar reference [`bitpack::pack_bytes`].
pub type PackCodesFn = fn(width: u32, codes: &[u8], out: &mut [u8]);
/// Unpacks `width <= 8`-bit codes; scalar reference [`bitpack::unpack_bytes`].
pub type UnpackCodesFn = fn(width: u32, packed: &[u8], codes: &mut [u8]);
/// The first pass of the error-bounded encoder; scalar reference [`uniform::stats`].
pub type StatsFn = fn(dtype: DType, input: &[u8]) -> uniform::Stats;
/// Uniform quantization to symbols with error sums; scalar reference
/// [`uniform::encode_symbols`].
pub type UniformEncodeFn = fn(
    a: &uniform::QuantArgs,
    input: &[u8],
    step: uniform::Step,
    symbols: &mut [u16],
    extra: &mut uniform::BitWriter,
    err: &mut uniform::ErrSum,
) -> usize;
/// Reconstruction of uniform symbols; scalar reference [`uniform::decode_symbols`].
pub type UniformDecodeFn = fn(
    dtype: DType,
    symbols: &[u16],
    step: uniform::Step,
    extra: &mut uniform::BitReader,
    escaped: &mut uniform::Escaped,
    out: &mut [u8],
) -> Result<()>;
/// The extra bits and escapes of uniform symbols; scalar reference
/// [`uniform::extra_and_escapes`].
pub type ExtraCountFn = fn(symbols: &[u16]) -> (usize, usize);
/// Indices of a chunk's rare symbols (escapes, codes in a range); scalar reference
/// [`uniform::flagged`].
pub type FlaggedFn = fn(symbols: &[u16], lo: u16, hi: u16, out: &mut Vec<u32>);

/// One rANS stream of [`RansDecode2Fn`]: the arguments of [`RansDecodeFn`].
pub struct RansDecodeJob<'a> {
    pub words: &'a [u8],
    pub table: &'a [u32],
    pub prob_bits: u32,
    pub states: &'a mut [u32],
    pub out: &'a mut [u16],
}

/// Two independent rANS streams decoded together (each as [`RansDecodeFn`] would, with the
/// same results); scalar reference [`scalar::rans_decode2`].
pub type RansDecode2Fn = fn(jobs: &mut [RansDecodeJob<'_>; 2]) -> [Option<usize>; 2];

/// [`RansDecode2Fn`] as two calls of a [`RansDecodeFn`].
pub(crate) fn decode_each(
    jobs: &mut [RansDecodeJob<'_>; 2],
    decode: RansDecodeFn,
) -> [Option<usize>; 2] {
    jobs.each_mut()
        .map(|j| decode(j.words, j.table, j.prob_bits, j.states, j.out))
}

/// The kernels of one level.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub level: Level,
    pub rans_encode: RansEncodeFn,
    pub rans_decode: RansDecodeFn,
    pub rans_decode2: RansDecode2Fn,
    pub split: SplitFn,
    pub pack_mantissa: PackMantissaFn,
    pub merge: MergeFn,
    pub to_f32: ToF32Fn,
    pub from_f32: FromF32Fn,
    pub block_encode: BlockEncodeFn,
    /// `block_encode` of 8-bit elements with the codes packed (as `pack_codes` with width 8
    /// would; as they are coded for the formats of [`block::packs_as_coded`]): scalar
    /// reference [`block::encode_blocks_packed`].
    pub block_encode_packed: BlockEncodeFn,
    pub block_decode: BlockDecodeFn,
    /// `block_decode` of 8-bit codes in the packed layout (as `pack_codes` with width 8 writes
    /// them), for the formats of [`block::decodes_packed`]: scalar reference
    /// [`block::decode_blocks_packed`].
    pub block_decode_packed: BlockDecodeFn,
    pub pack_codes: PackCodesFn,
    pub unpack_codes: UnpackCodesFn,
    pub stats: StatsFn,
    pub uniform_encode: UniformEncodeFn,
    pub uniform_decode: UniformDecodeFn,
    pub extra_count: ExtraCountFn,
    pub flagged: FlaggedFn,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("level", &self.level)
            .finish()
    }
}

/// The scalar reference kernels.
pub const SCALAR: Kernels = Kernels {
    level: Level::Scalar,
    rans_encode: scalar::rans_encode,
    rans_decode: scalar::rans_decode,
    rans_decode2: scalar::rans_decode2,
    split: scalar::split,
    pack_mantissa: scalar::pack_mantissa,
    merge: scalar::merge,
    to_f32: convert::load_all,
    from_f32: convert::store_all_sat,
    block_encode: block::encode_blocks,
    block_encode_packed: block::encode_blocks_packed,
    block_decode: block::decode_blocks,
    block_decode_packed: block::decode_blocks_packed,
    pack_codes: bitpack::pack_bytes,
    unpack_codes: bitpack::unpack_bytes,
    stats: uniform::stats,
    uniform_encode: uniform::encode_symbols,
    uniform_decode: uniform::decode_symbols,
    extra_count: uniform::extra_and_escapes,
    flagged: uniform::flagged,
};

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::supported() {
            return Level::Avx512;
        }
        if avx2::supported() {
            return Level::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if neon::supported() {
            return Level::Neon;
        }
    }
    Level::Scalar
}

/// Every level this CPU supports, scalar first.
pub fn available() -> Vec<Level> {
    let best = detected();
    [Level::Scalar, Level::Neon, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= best && kernels_for(l).level == l)
        .collect()
}

/// The kernels of `level`, or of the best supported level below it.
pub fn kernels_for(level: Level) -> Kernels {
    let level = level.min(detected());
    #[cfg(target_arch = "x86_64")]
    {
        if level >= Level::Avx512 {
            return avx512::KERNELS;
        }
        if level >= Level::Avx2 {
            return avx2::KERNELS;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if level >= Level::Neon {
            return neon::KERNELS;
        }
    }
    let _ = level;
    SCALAR
}

/// The kernels of `level` (or of the best supported level below it), as a static.
fn static_kernels(level: Level) -> &'static Kernels {
    static SCALAR_K: Kernels = SCALAR;
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512_K: Kernels = avx512::KERNELS;
        static AVX2_K: Kernels = avx2::KERNELS;
        match kernels_for(level).level {
            Level::Avx512 => return &AVX512_K,
            Level::Avx2 => return &AVX2_K,
            _ => {}
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        static NEON_K: Kernels = neon::KERNELS;
        if kernels_for(level).level == Level::Neon {
            return &NEON_K;
        }
    }
    let _ = level;
    &SCALAR_K
}

thread_local! {
    /// Kernels that [`with_level`] puts in place on this thread.
    static OVERRIDE: Cell<Option<&'static Kernels>> = const { Cell::new(None) };
}

/// The kernels used by the codec: the detected level, capped by `IOTA_CODEC_SIMD`.
pub fn kernels() -> &'static Kernels {
    if let Some(k) = OVERRIDE.with(Cell::get) {
        return k;
    }
    static K: OnceLock<&'static Kernels> = OnceLock::new();
    K.get_or_init(|| {
        let cap = std::env::var("IOTA_CODEC_SIMD")
            .ok()
            .and_then(|v| Level::parse(&v))
            .unwrap_or(Level::Avx512);
        static_kernels(cap)
    })
}

/// Runs `f` with the kernels of `level` (or of the best supported level below it) in
/// place of [`kernels`] on the calling thread only: with one thread (`threads = 1`) a codec
/// codes everything there. For tests and benchmarks that compare levels in one process.
#[doc(hidden)]
pub fn with_level<T>(level: Level, f: impl FnOnce() -> T) -> T {
    with_local(&OVERRIDE, Some(static_kernels(level)), f)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lossy;
