//! Pieces shared by the vector levels: which float layouts they handle and the driver loops
//! of the rANS decoders.

use super::FloatSplit;

/// The float layouts with a vector path: bf16 (2 bytes, 7 mantissa bits), f16 (2, 10) and
/// f32 (4, 23). Anything else goes to the scalar kernels.
pub(crate) fn vector_layout(fs: FloatSplit) -> bool {
    matches!((fs.bytes, fs.mant_bits), (2, 7) | (2, 10) | (4, 23))
}

/// The drivers of a 32-lane vector rANS decoder (x86-64), for an ISA module whose `Dec32` has
///
/// * `unsafe fn load(table, prob_bits, states) -> Dec32` and `unsafe fn store(&self, states)`
///   (32 states; every index `x & (2^prob_bits - 1)` inside `table`), and
/// * `unsafe fn group::<CHECKED>(&mut self, src, avail, out) -> Option<usize>`, which decodes
///   32 symbols into `out` and returns the bytes it consumed, reading nothing at or past
///   `src + 64`; when `CHECKED`, it returns `None`, changing nothing, rather than consume
///   more than `avail` bytes.
///
/// It defines the kernels `rans_decode` and `rans_decode2` (falling back to the scalar ones
/// where the vector path does not fit), with the driver loops compiled for `$features`, so
/// that `group` inlines into them.
#[cfg(target_arch = "x86_64")]
macro_rules! rans_decoders {
    ($features:literal) => {
        pub fn rans_decode(
            words: &[u8],
            table: &[u32],
            prob_bits: u32,
            states: &mut [u32],
            out: &mut [u16],
        ) -> Option<usize> {
            if !(supported() && fits_vector(table, prob_bits, states)) {
                return scalar::rans_decode(words, table, prob_bits, states, out);
            }
            // SAFETY: the CPU has the features, and the stream fits the vector path (both
            // checked above).
            unsafe { decode32_at(words, table, prob_bits, states, out, 0, 0) }
        }

        /// Two streams decoded in one loop: a group's gather → multiply → renormalize chain
        /// is latency-bound, and the other stream's chain fills the idle cycles.
        pub fn rans_decode2(jobs: &mut [super::RansDecodeJob<'_>; 2]) -> [Option<usize>; 2] {
            let fits = |j: &super::RansDecodeJob| fits_vector(j.table, j.prob_bits, j.states);
            if !(supported() && fits(&jobs[0]) && fits(&jobs[1])) {
                return super::decode_each(jobs, rans_decode);
            }
            // SAFETY: as in `rans_decode`, for both streams.
            unsafe { decode32x2(jobs) }
        }

        /// Whether a stream fits the vector path: 32 states and a table that covers every
        /// index `x & (2^prob_bits - 1)`.
        fn fits_vector(table: &[u32], prob_bits: u32, states: &[u32]) -> bool {
            states.len() == 32 && prob_bits <= MAX_PROB_BITS && table.len() >= 1 << prob_bits
        }

        /// Safety: the CPU has the features, and both streams fit the vector path.
        #[target_feature(enable = $features)]
        unsafe fn decode32x2(jobs: &mut [super::RansDecodeJob<'_>; 2]) -> [Option<usize>; 2] {
            let [a, b] = jobs;
            // SAFETY: both streams fit (the contract).
            let (mut da, mut db) = unsafe {
                (
                    Dec32::load(a.table, a.prob_bits, a.states),
                    Dec32::load(b.table, b.prob_bits, b.states),
                )
            };
            let (ga, gb) = (a.out.len() / 32, b.out.len() / 32);
            let (mut pa, mut pb, mut g) = (0usize, 0usize, 0usize);
            while g < ga && g < gb && a.words.len() - pa >= 64 && b.words.len() - pb >= 64 {
                // SAFETY: 64 bytes are readable at either position, and group `g` lies inside
                // both outputs.
                unsafe {
                    pa += da
                        .group::<false>(a.words.as_ptr().add(pa), 0, a.out.as_mut_ptr().add(32 * g))
                        .unwrap_or(0);
                    pb += db
                        .group::<false>(b.words.as_ptr().add(pb), 0, b.out.as_mut_ptr().add(32 * g))
                        .unwrap_or(0);
                }
                g += 1;
            }
            // SAFETY: 32 states each.
            unsafe {
                da.store(a.states);
                db.store(b.states);
            }
            // SAFETY: both fit, and each goes on from where the joint loop stopped.
            unsafe {
                [
                    decode32_at(a.words, a.table, a.prob_bits, a.states, a.out, pa, g),
                    decode32_at(b.words, b.table, b.prob_bits, b.states, b.out, pb, g),
                ]
            }
        }

        /// Decodes groups `g..` of `out` from the words at `pos..`, the states being those
        /// after group `g - 1`; returns the end of the words consumed.
        ///
        /// Safety: the CPU has the features, and the stream fits the vector path.
        #[target_feature(enable = $features)]
        unsafe fn decode32_at(
            words: &[u8],
            table: &[u32],
            prob_bits: u32,
            states: &mut [u32],
            out: &mut [u16],
            mut pos: usize,
            mut g: usize,
        ) -> Option<usize> {
            let groups = out.len() / 32;
            // SAFETY: the stream fits (the contract).
            let mut d = unsafe { Dec32::load(table, prob_bits, states) };
            // While 64 bytes remain, a group (which reads below `pos + 64`) needs no check.
            while g < groups && words.len() - pos >= 64 {
                // SAFETY: 64 bytes are readable at `pos`, and group `g < groups` lies inside
                // `out`.
                let n = unsafe {
                    d.group::<false>(words.as_ptr().add(pos), 0, out.as_mut_ptr().add(32 * g))
                };
                pos += n.unwrap_or(0);
                g += 1;
            }
            if g < groups {
                // Fewer than 64 bytes are left: continue from a padded copy, checking each
                // group.
                let rest = &words[pos..];
                let mut buf = [0u8; 128];
                buf[..rest.len()].copy_from_slice(rest);
                let mut at = 0usize;
                while g < groups {
                    // SAFETY: `at <= rest.len() < 64`, so `buf` has 64 bytes after `at`;
                    // group `g` lies inside `out`.
                    let n = unsafe {
                        d.group::<true>(
                            buf.as_ptr().add(at),
                            rest.len() - at,
                            out.as_mut_ptr().add(32 * g),
                        )
                    };
                    match n {
                        Some(n) => at += n,
                        None => break,
                    }
                    g += 1;
                }
                pos += at;
            }
            // SAFETY: 32 states.
            unsafe { d.store(states) };
            // The group that ran out of words, if any, and the partial last group.
            for group in out[32 * g..].chunks_mut(32) {
                scalar::decode_group(words, table, prob_bits, states, group, &mut pos)?;
            }
            Some(pos)
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use rans_decoders;
