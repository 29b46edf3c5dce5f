//! Chunk coders of the lossy stages and the error-bounded encoder, which picks the
//! quantizer's step so that the decoded tensor meets the caller's bound.
//!
//! The error-bounded encoder works in three steps:
//!
//! 1. One parallel pass over the chunks: `sum(x^2)` and the count of finite elements (and a
//!    refusal of NaN/Inf unless they are to be kept).
//! 2. A search for the step on a deterministic sample of the tensor (about 2^18 elements in
//!    evenly spaced runs): a secant search on `log(step)` for the relative RMSE (estimated
//!    from the sample's mean squared error, which is bounded per element and so accurate)
//!    or for the bits per element (the sample's order-0 symbol entropy plus overheads).
//! 3. The full encode, which reconstructs every element exactly as the decoder will and
//!    measures the true error (and escapes any element that would break a maximum-error
//!    bound). If the bound is missed the step shrinks and the chunks are coded again; if it
//!    never holds (for example a step that cannot shrink further), every chunk is stored
//!    exactly. The bound is therefore a guarantee on the decoded tensor, in its dtype.

use std::borrow::Cow;

use super::contexts::{self, Segments};
use super::BlockParams;
use super::{
    threads, with_scratch, EncodePlan, EncodeRequest, Recipe, Scratch, Symbols, UniformParams,
    BOUND_MAX_ABS, MODE_CODED, MODE_CONTEXTS, MODE_STORED, SCOPE_BLOCK, SCOPE_GLOBAL,
};
use crate::dtype::DType;
use crate::entropy::freq;
use crate::entropy::rans::{self, RansParams};
use crate::error::{ensure_frame, Error, ErrorKind, Result};
use crate::format::{self, put_uvarint, Reader};
use crate::mode::{Bound, BoundedSpec};
use crate::quant::block::{decodes_packed, packs_as_coded, BlockFormat};
use crate::quant::uniform::{self, BitReader, Check, ErrSum, Escaped, QuantArgs, Step};
use crate::quant::{bitpack, convert, rounding::Rounding};
use crate::simd;

/// The rounding a stage's code stands for, with the encoder's seed.
fn rounding_of(code: u8, seed: u64) -> Rounding {
    if code == 1 {
        Rounding::Stochastic { seed }
    } else {
        Rounding::Nearest
    }
}

/// The error for a non-finite element that the mode was not asked to keep.
pub(crate) fn nonfinite_error(index: u64, value: f32, mode: &str) -> Error {
    let what = if value.is_nan() {
        "NaN"
    } else if value > 0.0 {
        "+inf"
    } else {
        "-inf"
    };
    Error::new(
        ErrorKind::NonFinite,
        format!(
            "element {index} (in row-major order) is {what}: {mode} quantization refuses \
             non-finite values by default; pass nonfinite=\"keep\" to carry them exactly, or \
             use the lossless profile"
        ),
    )
}

/// The first non-finite element of a chunk of `dtype` bytes: its index and value.
fn first_nonfinite(dtype: DType, input: &[u8]) -> Option<(usize, f32)> {
    // A float is non-finite exactly when its exponent bits are all ones. Groups of 64 are
    // scanned without branches; only a group with a hit is searched.
    fn scan<const N: usize>(
        input: &[u8],
        exp: u32,
        bits: impl Fn(&[u8; N]) -> u32,
    ) -> Option<usize> {
        let group = 64 * N;
        for (g, chunk) in input.chunks(group).enumerate() {
            let hit = chunk.chunks_exact(N).fold(false, |acc, b| {
                acc | (bits(b.try_into().unwrap()) & exp == exp)
            });
            if hit {
                let j = chunk
                    .chunks_exact(N)
                    .position(|b| bits(b.try_into().unwrap()) & exp == exp)?;
                return Some(g * 64 + j);
            }
        }
        None
    }
    let i = match dtype {
        DType::F32 => scan::<4>(input, 0x7f80_0000, |b| u32::from_le_bytes(*b)),
        DType::F16 => scan::<2>(input, 0x7c00, |b| u32::from(u16::from_le_bytes(*b))),
        DType::BF16 => scan::<2>(input, 0x7f80, |b| u32::from(u16::from_le_bytes(*b))),
    }?;
    Some((i, convert::load(dtype, input, i)))
}

/// Fails with [`nonfinite_error`] naming the first NaN or infinity of the request's input,
/// if any (a parallel scan over chunks of `chunk_bytes`).
pub(super) fn refuse_nonfinite(req: &EncodeRequest, chunk_bytes: usize, mode: &str) -> Result<()> {
    let chunks: Vec<&[u8]> = req.input.chunks(chunk_bytes.max(1)).collect();
    let found = threads::map(req.threads, chunks.len(), |i| {
        first_nonfinite(req.dtype, chunks[i])
    });
    let elems = (chunk_bytes / req.dtype.itemsize()) as u64;
    match found
        .iter()
        .enumerate()
        .find_map(|(c, f)| f.map(|f| (c, f)))
    {
        Some((c, (i, v))) => Err(nonfinite_error(c as u64 * elems + i as u64, v, mode)),
        None => Ok(()),
    }
}

// ---- fixed-rate block quantization ----

/// Appends a chunk's block-quantized payload (non-finite elements become escapes: the
/// caller refused them first unless they are to be kept). Returns the count of non-finite
/// elements.
pub(super) fn encode_block_chunk(
    params: &BlockParams,
    rans: Option<&RansParams>,
    dtype: DType,
    input: &[u8],
    base: u64,
    seed: u64,
    out: &mut Vec<u8>,
) -> usize {
    let n = input.len() / dtype.itemsize();
    let fmt = params.format;
    let bits = fmt.element.bits();
    let rounding = rounding_of(params.rounding, seed);
    let k = simd::kernels();
    with_scratch(|s| {
        out.push(MODE_CODED);
        let at = out.len();
        let codes_at = at + n.div_ceil(fmt.block) * fmt.scale.bytes();
        let nonfinite = if rans.is_none() && packs_as_coded(&fmt) {
            // Packed 8-bit codes go straight into the frame (`packed_len(n, 8) = n`).
            out.resize(codes_at + n, 0);
            let (scales, codes) = out[at..].split_at_mut(codes_at - at);
            (k.block_encode_packed)(&fmt, rounding, base, dtype, input, codes, scales)
        } else {
            out.resize(codes_at, 0);
            s.codes.resize(n, 0);
            let nonfinite = (k.block_encode)(
                &fmt,
                rounding,
                base,
                dtype,
                input,
                &mut s.codes,
                &mut out[at..],
            );
            write_block_codes(bits, rans, s, out);
            nonfinite
        };
        write_escapes(dtype, input, nonfinite, out);
        nonfinite
    })
}

/// Appends the codes of a block-quantized chunk (`s.codes`, one per element): packed, or
/// rANS-coded when `rans` is given.
pub(super) fn write_block_codes(
    bits: u32,
    rans: Option<&RansParams>,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) {
    match rans {
        None => {
            let start = out.len();
            out.resize(start + bitpack::packed_len(s.codes.len(), bits), 0);
            (simd::kernels().pack_codes)(bits, &s.codes, &mut out[start..]);
        }
        Some(p) => {
            s.symbols.clear();
            s.symbols.extend(s.codes.iter().map(|&c| u16::from(c)));
            rans::encode(&s.symbols, 1 << bits, None, *p, &mut s.rans, out);
        }
    }
}

/// Appends the escape list of a block-quantized chunk with `count` non-finite elements: the
/// count, the index gaps, the original bits.
fn write_escapes(dtype: DType, input: &[u8], count: usize, out: &mut Vec<u8>) {
    let isz = dtype.itemsize();
    put_uvarint(out, count as u64);
    if count == 0 {
        return;
    }
    let n = input.len() / isz;
    let nonfinite = |i: usize| !convert::load(dtype, input, i).is_finite();
    let mut next = 0usize;
    for i in (0..n).filter(|&i| nonfinite(i)) {
        put_uvarint(out, (i - next) as u64);
        next = i + 1;
    }
    for i in (0..n).filter(|&i| nonfinite(i)) {
        out.extend_from_slice(&input[i * isz..(i + 1) * isz]);
    }
}

pub(super) fn decode_block_chunk<'p>(
    params: &BlockParams,
    rans: Option<&RansParams>,
    dtype: DType,
    r: &mut Reader<'p>,
    out: &mut [u8],
    src: &mut Symbols<'p>,
) -> Result<()> {
    let isz = dtype.itemsize();
    let n = out.len() / isz;
    let fmt = params.format;
    let n_blocks = n.div_ceil(fmt.block);
    let scales = r.bytes(n_blocks * fmt.scale.bytes(), "block scales")?;
    let k = simd::kernels();
    if rans.is_none() && decodes_packed(&fmt) {
        // Packed 8-bit codes decode straight from the frame (`packed_len(n, 8) = n`).
        let packed = r.bytes(n, "packed block codes")?;
        (k.block_decode_packed)(&fmt, dtype, scales, packed, out);
    } else {
        decode_block_codes(&fmt, rans, dtype, scales, r, out, src)?;
    }
    if src.stopped() {
        return Ok(());
    }
    let count = r.uvarint_max(n as u64, "escape count")?;
    let mut idx = Vec::with_capacity(count);
    let mut next = 0u64;
    for _ in 0..count {
        let gap = r.uvarint_max(n as u64, "escape index gap")? as u64;
        let i = next + gap;
        ensure_frame!(
            i < n as u64,
            "escape index {i} beyond the chunk's {n} elements"
        );
        idx.push(i as usize);
        next = i + 1;
    }
    let vals = r.bytes(count * isz, "escaped elements")?;
    for (k, &i) in idx.iter().enumerate() {
        out[i * isz..(i + 1) * isz].copy_from_slice(&vals[k * isz..(k + 1) * isz]);
    }
    Ok(())
}

/// Decodes a block-quantized chunk's codes (packed in one byte each, or rANS-coded) into
/// `out` through the scratch buffers; returns early, writing nothing, when the rANS symbols
/// `src` hands out stop.
fn decode_block_codes<'p>(
    fmt: &BlockFormat,
    rans: Option<&RansParams>,
    dtype: DType,
    scales: &[u8],
    r: &mut Reader<'p>,
    out: &mut [u8],
    src: &mut Symbols<'p>,
) -> Result<()> {
    let n = out.len() / dtype.itemsize();
    let bits = fmt.element.bits();
    let k = simd::kernels();
    with_scratch(|s: &mut Scratch| -> Result<()> {
        s.codes.resize(n, 0);
        match rans {
            None => {
                let packed = r.bytes(bitpack::packed_len(n, bits), "packed block codes")?;
                (k.unpack_codes)(bits, packed, &mut s.codes);
            }
            Some(p) => {
                if !src.get(r, 1 << bits, *p, n, &mut s.symbols)? {
                    return Ok(());
                }
                for (c, &v) in s.codes.iter_mut().zip(&s.symbols) {
                    *c = v as u8;
                }
            }
        }
        (k.block_decode)(fmt, dtype, scales, &s.codes, out);
        Ok(())
    })
}

// ---- error-bounded uniform quantization ----

/// What the encoder checks per element for a stage.
pub(super) fn check_for(p: &UniformParams, dtype: DType) -> Check {
    Check {
        dtype,
        max_abs: if p.bound == BOUND_MAX_ABS {
            f64::from_bits(p.bound_value)
        } else {
            f64::INFINITY
        },
    }
}

/// Computes the group steps of a chunk (scopes other than global) from `theta` times each
/// group's RMS, rounded to bfloat16; appends their bits to `bits_out`.
fn group_steps(
    p: &UniformParams,
    theta: f32,
    xs: &[f32],
    steps: &mut Vec<f32>,
    mut bits_out: Option<&mut Vec<u8>>,
) {
    steps.clear();
    let mut push = |sum: f64, count: u64, steps: &mut Vec<f32>| {
        let rms = if count == 0 {
            0.0
        } else {
            (sum / count as f64).sqrt() as f32
        };
        // A product beyond f32 saturates too: a step must be finite.
        let b = convert::f32_to_bf16_sat((theta * rms).min(f32::MAX));
        steps.push(convert::bf16_to_f32(b));
        if let Some(o) = bits_out.as_deref_mut() {
            o.extend_from_slice(&b.to_le_bytes());
        }
    };
    match p.scope {
        SCOPE_BLOCK => {
            for g in xs.chunks(p.group as usize) {
                let (mut sum, mut count) = (0.0f64, 0u64);
                for &x in g {
                    if x.is_finite() {
                        sum += f64::from(x) * f64::from(x);
                        count += 1;
                    }
                }
                push(sum, count, steps);
            }
        }
        _ => {
            let m = (xs.len() as u64).min(p.group) as usize;
            let mut sums = vec![(0.0f64, 0u64); m];
            for row in xs.chunks(m.max(1)) {
                for (acc, &x) in sums.iter_mut().zip(row) {
                    if x.is_finite() {
                        acc.0 += f64::from(x) * f64::from(x);
                        acc.1 += 1;
                    }
                }
            }
            for (sum, count) in sums {
                push(sum, count, steps);
            }
        }
    }
}

/// Quantizes a chunk's elements (little-endian `check.dtype` bytes, element 0 being element
/// `base` of the tensor) into `s.symbols` and `s.extra` with the stage's scope and `theta`;
/// returns the squared error of the reconstruction of the elements not escaped, and the
/// number of escapes.
#[allow(clippy::too_many_arguments)]
fn quantize_chunk(
    p: &UniformParams,
    theta: f32,
    input: &[u8],
    base: u64,
    rounding: Rounding,
    check: &Check,
    s: &mut Scratch,
    bits_out: Option<&mut Vec<u8>>,
) -> (ErrSum, usize) {
    let dtype = check.dtype;
    let isz = dtype.itemsize();
    let n = input.len() / isz;
    let k = simd::kernels();
    s.symbols.resize(n, 0);
    s.extra.clear();
    let mut err = ErrSum::default();
    // The partial error sums scaled by the run's largest step.
    let args = |at: usize, largest_step: f32| QuantArgs {
        dtype,
        rounding,
        base: base + at as u64,
        max_abs: check.max_abs,
        lane0: at,
        err_exp: uniform::err_exp(largest_step),
    };
    if p.scope == SCOPE_GLOBAL {
        let esc = (k.uniform_encode)(
            &args(0, theta),
            input,
            Step::One(theta),
            &mut s.symbols,
            &mut s.extra,
            &mut err,
        );
        return (err, esc);
    }
    s.xs.resize(n, 0.0);
    (k.to_f32)(dtype, input, &mut s.xs);
    group_steps(p, theta, &s.xs, &mut s.steps, bits_out);
    // Block scope: a step per group of `group` elements; channel scope: element `i` of each
    // row of `m` uses step `i`.
    let (len, each) = match p.scope {
        SCOPE_BLOCK => (p.group as usize, false),
        _ => (s.steps.len().max(1), true),
    };
    let largest = if each {
        s.steps.iter().fold(0.0f32, |m, &v| m.max(v))
    } else {
        0.0
    };
    let mut esc = 0;
    for (g, (x, o)) in input
        .chunks(len * isz)
        .zip(s.symbols.chunks_mut(len))
        .enumerate()
    {
        let (step, largest) = if each {
            (Step::Each(&s.steps), largest)
        } else {
            (Step::One(s.steps[g]), s.steps[g])
        };
        esc += (k.uniform_encode)(&args(g * len, largest), x, step, o, &mut s.extra, &mut err);
    }
    (err, esc)
}

/// Appends one chunk coded with the stage's step, with row contexts (mode 2) where the
/// segments `seg` make it smaller; returns the squared error of the decoded chunk.
#[allow(clippy::too_many_arguments)]
pub(super) fn encode_uniform_chunk(
    p: &UniformParams,
    rans: &RansParams,
    check: &Check,
    dtype: DType,
    input: &[u8],
    base: u64,
    seed: u64,
    seg: Option<Segments>,
    out: &mut Vec<u8>,
) -> f64 {
    let isz = dtype.itemsize();
    let rounding = rounding_of(p.rounding, seed);
    with_scratch(|s| {
        let mode_at = out.len();
        out.push(MODE_CODED);
        let (err, escapes) =
            quantize_chunk(p, p.step(), input, base, rounding, check, s, Some(out));
        let body_at = out.len();
        s.extra.finish();
        let classes = seg.map_or(1, |seg| {
            contexts::choose(&s.symbols, seg, rans, &mut s.contexts)
        });
        if let (Some(seg), true) = (seg, classes > 1) {
            out[mode_at] = MODE_CONTEXTS;
            let esc = contexts::Escapes {
                input,
                isz,
                quantizer: escapes > 0,
                // As in `write_one_table`: chunk-dependent escapes only when rounding to
                // nearest.
                rare: rounding == Rounding::Nearest,
            };
            contexts::write(
                &s.symbols,
                seg,
                classes,
                rans,
                esc,
                &mut s.contexts,
                &mut s.rans,
                &mut s.flagged,
                &mut s.escaped,
                out,
            );
            out.extend_from_slice(&s.extra.bytes);
            out.extend_from_slice(&s.escaped);
            if s.symbols.len() < contexts::CHECKED_BELOW {
                // A small chunk's classes rest on a small sample: code it with one table
                // too, and keep that if it is no larger.
                let mut one = Vec::with_capacity(out.len() - body_at);
                write_one_table(s, input, isz, rounding, escapes, rans, &mut one);
                if one.len() <= out.len() - body_at {
                    out.truncate(body_at);
                    out[mode_at] = MODE_CODED;
                    out.extend_from_slice(&one);
                }
            }
            return err.total();
        }
        write_one_table(s, input, isz, rounding, escapes, rans, out);
        // (The errors of the elements escaped here still count: an upper bound.)
        err.total()
    })
}

/// Appends the symbols of a chunk quantized into `s` coded with one table (mode 1), then
/// the extra bits and the escaped elements' bytes; `escapes`: the quantizer's.
fn write_one_table(
    s: &mut Scratch,
    input: &[u8],
    isz: usize,
    rounding: Rounding,
    escapes: usize,
    rans: &RansParams,
    out: &mut Vec<u8>,
) {
    let estimated = symbol_counts(&s.symbols, &mut s.counts, freq::SAMPLED_COUNTS);
    let mut escape = [false; uniform::ALPHABET];
    // Which elements are escaped depends on the chunking; stochastically rounded values
    // are promised not to (as gradients' reproducibility across settings wants).
    let min = if rounding == Rounding::Nearest {
        rare_escapes(&mut s.counts, estimated, isz, rans.prob_bits, &mut escape)
    } else {
        uniform::ESC
    };
    s.escaped.clear();
    if escapes > 0 || min < uniform::ESC {
        let esc = s.counts[usize::from(uniform::ESC)] as usize;
        s.escaped.reserve(esc.max(escapes) * isz);
        let escaped = &mut s.escaped;
        // The exact count (sampled counts only estimate the symbols moved to it).
        s.counts[usize::from(uniform::ESC)] =
            mark_escapes(&mut s.symbols, &escape, min, &mut s.flagged, |i| {
                escaped.extend_from_slice(&input[i * isz..(i + 1) * isz])
            });
    }
    rans::encode(
        &s.symbols,
        uniform::ALPHABET,
        Some(&s.counts),
        *rans,
        &mut s.rans,
        out,
    );
    out.extend_from_slice(&s.extra.bytes);
    out.extend_from_slice(&s.escaped);
}

/// Picks the direct symbols of a chunk that take fewer bits escaped (their elements carried
/// exactly) than kept, marks them in `escape` and moves their counts to the escape symbol's;
/// returns the smallest symbol the escape pass must look for (`ESC` when none is picked).
/// Only symbols whose counts are exact (outside `estimated`, from [`symbol_counts`]) are
/// candidates: escaping a symbol whose sampled count is low by chance cost more than it saved
/// (the built-in activation's `max` frame grew by 0.15% with them, and shrank by 0.2% when
/// all counts were exact).
///
/// With `prob_bits = b` every symbol that occurs gets a frequency of at least 1 in `M = 2^b`,
/// so a symbol rarer than that is coded at about `b` bits an occurrence while its slot takes
/// about `N / (M ln 2)` bits from the chunk's other `N` symbols, and its table entry about 16.
/// Escaped, an occurrence costs its element's `8 itemsize` bits and an escape symbol (at most
/// `b` bits): so a direct symbol with `count * 8 itemsize < N / (M ln 2) + 16` is escaped
/// (bucket symbols, whose extra bits are already written, are left alone), provided that
/// the savings cover a slot for the escape symbol when the chunk has no escapes yet.
/// Heavy-tailed tensors have many such symbols: on the built-in gradient (chunks of 2^18,
/// `balanced`) the table's floor cost 0.11 bits per element over the symbols' entropy.
pub(super) fn rare_escapes(
    counts: &mut [u32],
    estimated: (i32, i32),
    isz: usize,
    prob_bits: u32,
    escape: &mut [bool; uniform::ALPHABET],
) -> u16 {
    let n: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    // What a symbol's slot and table entry cost, in bits.
    let slot = n as f64 / (f64::from(1u32 << prob_bits) * std::f64::consts::LN_2) + 16.0;
    let raw = (8 * isz) as f64;
    let (lo, hi) = estimated;
    let rare = |s: usize, c: u32| {
        c > 0
            && !(lo..=hi).contains(&(s as i32))
            // Its floor frequency at least doubles its probability.
            && (2 * u64::from(c)) << prob_bits <= n
            && f64::from(c) * raw < slot
    };
    let direct = &counts[..uniform::DIRECT as usize];
    let saved: f64 = direct
        .iter()
        .enumerate()
        .filter(|&(s, &c)| rare(s, c))
        .map(|(_, &c)| slot - f64::from(c) * raw)
        .sum();
    // A chunk without escapes yet pays for the escape symbol's own slot.
    let esc = usize::from(uniform::ESC);
    if saved <= 0.0 || (counts[esc] == 0 && saved <= slot) {
        return uniform::ESC;
    }
    let mut min = uniform::ESC;
    let mut moved = 0;
    for (s, c) in counts[..uniform::DIRECT as usize].iter_mut().enumerate() {
        if rare(s, *c) {
            escape[s] = true;
            min = min.min(s as u16);
            moved += *c;
            *c = 0;
        }
    }
    counts[esc] += moved;
    min
}

/// Replaces the symbols marked in `escape` (direct ones, none below `min`) with `ESC` and
/// calls `escaped(i)` with the index of every escape symbol (those already there included),
/// in order; returns how many there are. `flagged` is scratch. The candidates and escapes are
/// found by the `flagged` kernel (a loop over every symbol of a chunk with escapes took about
/// a sixth of the `balanced` encoder's time on activations with outlier channels).
pub(super) fn mark_escapes(
    symbols: &mut [u16],
    escape: &[bool; uniform::ALPHABET],
    min: u16,
    flagged: &mut Vec<u32>,
    mut escaped: impl FnMut(usize),
) -> u32 {
    flagged.clear();
    (simd::kernels().flagged)(symbols, min, uniform::DIRECT as u16, flagged);
    let mut count = 0;
    for &i in flagged.iter() {
        let i = i as usize;
        let v = &mut symbols[i];
        if escape[usize::from(*v)] {
            *v = uniform::ESC;
        }
        if *v == uniform::ESC {
            escaped(i);
            count += 1;
        }
    }
    count
}

/// The counts a uniform chunk's rANS table is built from (`ALPHABET` long): in large chunks
/// sampled from every other run of 64, around the smallest zigzagged codes (see
/// [`freq::sampled_histogram`]). One run in four encoded 1.5% (`balanced`) to 3.7% (`max`)
/// faster on a 2-core AMD EPYC (Zen 4) VM, but cost 0.03-0.11% of the ratio on the built-in
/// activation and gradient; at the links this codec is for the ratio decides.
///
/// Sampled from `min_sampled` symbols on ([`freq::SAMPLED_COUNTS`] for a chunk; the classes
/// of row contexts sample from less). Returns the range of symbols whose counts are estimates
/// (see [`freq::sampled_histogram`]).
pub(super) fn symbol_counts(
    symbols: &[u16],
    counts: &mut Vec<u32>,
    min_sampled: usize,
) -> (i32, i32) {
    counts.clear();
    counts.resize(uniform::ALPHABET, 0);
    freq::sampled_histogram_from(symbols, counts, 511, 2, min_sampled)
}

/// Decodes a chunk of mode 1, or of mode 2 (row contexts) when `contexts` is set.
pub(super) fn decode_uniform_chunk<'p>(
    p: &UniformParams,
    rans: &RansParams,
    dtype: DType,
    contexts: bool,
    r: &mut Reader<'p>,
    out: &mut [u8],
    src: &mut Symbols<'p>,
) -> Result<()> {
    let isz = dtype.itemsize();
    let n = out.len() / isz;
    let groups = match p.scope {
        SCOPE_GLOBAL => 0,
        SCOPE_BLOCK => n.div_ceil(p.group as usize),
        _ => (n as u64).min(p.group) as usize,
    };
    let step_bits = r.bytes(2 * groups, "quantizer steps")?;
    let k = simd::kernels();
    with_scratch(|s: &mut Scratch| -> Result<()> {
        s.steps.clear();
        for b in step_bits.chunks_exact(2) {
            let v = convert::bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            ensure_frame!(
                v.is_finite() && v >= 0.0,
                "quantizer step {v} is not a finite non-negative number"
            );
            s.steps.push(v);
        }
        if contexts {
            contexts::read(r, n, *rans, &mut s.contexts, &mut s.symbols)?;
        } else if !src.get(r, uniform::ALPHABET, *rans, n, &mut s.symbols)? {
            return Ok(());
        }
        let (bits, escapes) = (k.extra_count)(&s.symbols);
        let extra = r.bytes(bits.div_ceil(8), "quantizer extra bits")?;
        let esc = r.bytes(escapes * isz, "escaped elements")?;
        let mut extra = BitReader::new(extra);
        let mut esc = Escaped::new(esc, isz);
        match p.scope {
            SCOPE_GLOBAL => (k.uniform_decode)(
                dtype,
                &s.symbols,
                Step::One(p.step()),
                &mut extra,
                &mut esc,
                out,
            )?,
            scope => {
                let (len, each) = match scope {
                    SCOPE_BLOCK => (p.group as usize, false),
                    _ => (s.steps.len().max(1), true),
                };
                for (g, (sy, o)) in s
                    .symbols
                    .chunks(len)
                    .zip(out.chunks_mut(len * isz))
                    .enumerate()
                {
                    let step = if each {
                        Step::Each(&s.steps)
                    } else {
                        Step::One(s.steps[g])
                    };
                    (k.uniform_decode)(dtype, sy, step, &mut extra, &mut esc, o)?;
                }
            }
        }
        extra.finish()?;
        esc.finish()
    })
}

// ---- the error-bounded encoder ----

/// The smallest global step (its reciprocal must be a finite `f32`).
const MIN_STEP: f32 = f32::MIN_POSITIVE;
/// Range of the factor applied to group RMS values.
const MIN_FACTOR: f32 = 1e-30;
/// The largest factor, and the largest global step as a multiple of the tensor's largest
/// magnitude: a group's step is then at most 2^16 times its largest magnitude. Coarser steps
/// would only zero more elements (rounding to nearest zeroes every element of a group from
/// twice its largest magnitude), and the quantizer's error sums, scaled by the largest step of
/// a run, would lose the errors of elements under 2^-75 of it (all of them, for a step
/// absurdly larger than the data: a relative error of 1 was measured as 0 and accepted). Under
/// this bound the errors it loses are below 2^-58 of the group's largest magnitude each.
const MAX_FACTOR: f32 = 65536.0;
/// Elements in the sample the step search runs on. (A quarter of this gave estimates off by
/// over 1% on real activations, so that a full encode missed the bound and ran again.)
const SAMPLE: u64 = 1 << 18;
/// Seed of the sample's offsets (fixed: the same tensor always gets the same frame).
const SAMPLE_SEED: u64 = 0x5A3D_1E5B_0F2C_9A71;
/// Full encodes before giving up on a bound (and storing the chunks exactly).
const MAX_ATTEMPTS: usize = 12;

/// A deterministic sample of the tensor (its elements' bytes): one run in each of `runs`
/// equal strata, aligned to the step scope's groups (whole blocks, or whole rows for the
/// channel scope), at an offset inside its stratum drawn from a hash of the stratum's index.
/// (Runs at evenly spaced offsets alias with the rows of a tensor whose row length divides
/// the spacing: they saw the same 64 channels of every row, and the step they led to missed
/// the bound on activations with per-channel scales, so that the tensor was encoded twice.)
/// A tensor of at most twice the sample's size is its own sample, borrowed.
fn sample<'a>(dtype: DType, input: &'a [u8], numel: u64, p: &UniformParams) -> Cow<'a, [u8]> {
    let isz = dtype.itemsize();
    let load_range = |out: &mut Vec<u8>, start: u64, len: u64| {
        let end = (start + len).min(numel);
        out.extend_from_slice(&input[start as usize * isz..end as usize * isz]);
    };
    let mut out = Vec::new();
    let run = match p.scope {
        SCOPE_GLOBAL => 64,
        SCOPE_BLOCK => p.group * (64 / p.group).max(1),
        _ => p.group,
    };
    if numel <= 2 * SAMPLE.max(run) {
        return Cow::Borrowed(&input[..numel as usize * isz]);
    }
    let slots = numel / run;
    let runs = (SAMPLE / run).clamp(1, slots);
    for j in 0..runs {
        let (first, end) = (j * slots / runs, (j + 1) * slots / runs);
        let slot = first + crate::quant::rounding::hash(SAMPLE_SEED, j) % (end - first);
        load_range(&mut out, slot * run, run);
    }
    Cow::Owned(out)
}

/// What the step search sees of a candidate on the sample.
struct Estimate {
    /// Mean squared error per finite element.
    mse: f64,
    /// Estimated payload bits per element (only when asked for).
    bits: f64,
    /// Distinct symbols used.
    present: usize,
}

fn estimate(
    p: &UniformParams,
    theta: f32,
    xs: &[u8],
    finite: u64,
    rounding: Rounding,
    check: &Check,
    want_bits: bool,
) -> Estimate {
    with_scratch(|s| {
        let (err, escapes) = quantize_chunk(p, theta, xs, 0, rounding, check, s, None);
        let mse = if finite == 0 {
            0.0
        } else {
            err.total() / finite as f64
        };
        if !want_bits || xs.is_empty() {
            return Estimate {
                mse,
                bits: 0.0,
                present: 0,
            };
        }
        s.extra.finish();
        s.counts.clear();
        s.counts.resize(uniform::ALPHABET, 0);
        freq::histogram(&s.symbols, &mut s.counts);
        let isz = check.dtype.itemsize() as f64;
        let n = (xs.len() as f64) / isz;
        let groups = if p.scope == SCOPE_GLOBAL {
            0.0
        } else {
            s.steps.len() as f64
        };
        let bits = freq::entropy_bits(&s.counts)
            + 8.0 * (s.extra.bytes.len() as f64 + escapes as f64 * isz + 2.0 * groups) / n;
        Estimate {
            mse,
            bits,
            present: s.counts.iter().filter(|&&c| c > 0).count(),
        }
    })
}

/// The side of its target on which [`secant`] may settle, when its function jumps across
/// the target instead of meeting it: the side the caller's guarantee is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Safe {
    /// Values below the target (an error under its bound).
    Below,
    /// Values above it (for a search on `2^-bits`: fewer bits than the budget).
    Above,
}

/// A search that has seen values on both sides of its target settles, from its
/// [`SETTLE_FROM`]th evaluation on, on the closest value on the safe side if that is within
/// this many tolerances of the target...
const SETTLE: f64 = 2.5;
const SETTLE_FROM: usize = 4;
/// ...and from this evaluation on, on the closest on the safe side however far.
const SETTLE_AFTER: usize = 6;
/// Searches on samples of fewer elements do not settle (an evaluation takes microseconds).
const SETTLE_MIN_SAMPLE: usize = 1 << 14;

/// Finds `theta` with `f(theta) = target` (within `tol` of it, relatively) for an `f` that
/// grows with `theta` like a power (a secant search on logarithms, from `theta0`).
///
/// On data of few distinct values (a small bfloat16 tensor, every element its own sample)
/// the error is not smooth in the step: it moves in jumps of a few tenths of a percent,
/// larger than `tol`, and is not even monotonic at that scale, so the secant can circle
/// the target for its whole budget (nine evaluations on the built-in 1 MiB bottleneck
/// tensor at `max`, each a quantization of the whole tensor). Once values on both sides of
/// the target have been seen, a search given a `safe` side settles for the closest value
/// on that side: from the fourth evaluation on if it is within [`SETTLE`] tolerances, from
/// the sixth however far. Searches that meet `tol` within four evaluations are unchanged.
fn secant(
    theta0: f32,
    target: f64,
    lo: f32,
    hi: f32,
    tol: f64,
    safe: Option<Safe>,
    mut f: impl FnMut(f32) -> f64,
) -> f32 {
    let clamp = |t: f64| (t as f32).clamp(lo, hi);
    // Values seen on each side of the target, and the closest on the safe side: (its
    // distance from the target, relatively; theta).
    let (mut below, mut above, mut evals) = (false, false, 0usize);
    let mut nearest: Option<(f64, f32)> = None;
    let mut settle = |t: f32, v: f64| -> Option<f32> {
        evals += 1;
        let r = v / target - 1.0;
        below |= r < 0.0;
        above |= r > 0.0;
        let on_safe_side = match safe? {
            Safe::Below => r <= 0.0,
            Safe::Above => r >= 0.0,
        };
        if on_safe_side && nearest.is_none_or(|(d, _)| r.abs() < d) {
            nearest = Some((r.abs(), t));
        }
        let (d, t) = nearest?;
        let settles = (evals >= SETTLE_FROM && d < SETTLE * tol) || evals >= SETTLE_AFTER;
        (below && above && settles).then_some(t)
    };
    let mut t0 = theta0.clamp(lo, hi);
    let mut f0 = f(t0);
    if f0.is_nan() || f0 <= 0.0 || f0.is_infinite() {
        return t0;
    }
    settle(t0, f0);
    let mut t1 = clamp(f64::from(t0) * target / f0);
    if t1 == t0 {
        return t0;
    }
    let mut f1 = f(t1);
    for _ in 0..12 {
        if f1.is_nan() || f1 <= 0.0 || (f1 / target - 1.0).abs() < tol {
            break;
        }
        if let Some(t) = settle(t1, f1) {
            return t;
        }
        let slope = ((f1 / f0).ln() / (f64::from(t1) / f64::from(t0)).ln()).clamp(0.2, 5.0);
        let slope = if slope.is_finite() { slope } else { 1.0 };
        let t2 = clamp(f64::from(t1) * (target / f1).powf(1.0 / slope));
        if t2 == t1 {
            break;
        }
        (t0, f0) = (t1, f1);
        t1 = t2;
        f1 = f(t1);
    }
    t1
}

/// Encodes a tensor so that its decoded form meets `spec`'s bound. `req.recipe` must be a
/// [`Recipe::Uniform`] whose step is replaced here.
pub fn encode_bounded(req: &EncodeRequest, spec: &BoundedSpec) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_bounded_into(req, spec, &mut out)?;
    Ok(out)
}

/// [`encode_bounded`] into `out` (cleared first; its capacity is reused).
pub fn encode_bounded_into(
    req: &EncodeRequest,
    spec: &BoundedSpec,
    out: &mut Vec<u8>,
) -> Result<()> {
    spec.validate()?;
    out.clear();
    let Recipe::Uniform {
        params: template,
        rans,
    } = req.recipe
    else {
        return Err(Error::invalid(
            "encode_bounded needs a uniform quantization recipe",
        ));
    };
    let plan = EncodePlan::new(req)?;
    let numel = plan.header.numel()?;
    let chunk_elems = plan.header.chunk_elems;
    let dtype = req.dtype;
    let inputs: Vec<&[u8]> = (0..plan.n_chunks)
        .map(|i| plan.chunk(req.input, i))
        .collect();
    let k = simd::kernels();
    let stats = threads::map(req.threads, inputs.len(), |i| (k.stats)(dtype, inputs[i]));
    if spec.nonfinite == crate::mode::NonFinite::Error {
        if let Some((i, v)) = stats.iter().enumerate().find_map(|(c, s)| {
            s.first_nonfinite
                .map(|(i, v)| (c as u64 * chunk_elems + i as u64, v))
        }) {
            return Err(nonfinite_error(i, v, "error-bounded"));
        }
    }
    let sumsq: f64 = stats.iter().map(|s| s.sumsq.total()).sum();
    let finite: u64 = stats.iter().map(|s| s.finite).sum();
    let amax = stats.iter().fold(0.0f32, |m, s| m.max(s.amax));
    let rms = if finite == 0 {
        0.0
    } else {
        (sumsq / finite as f64).sqrt()
    };
    let rounding = rounding_of(template.rounding, req.seed);
    let check = check_for(&template, dtype);
    let global = template.scope == SCOPE_GLOBAL;
    let (lo, hi) = if global {
        let top = if amax.is_finite() {
            (amax * MAX_FACTOR).min(f32::MAX)
        } else {
            f32::MAX
        };
        (MIN_STEP, top.max(MIN_STEP))
    } else {
        (MIN_FACTOR, MAX_FACTOR)
    };
    // sqrt(12) for rounding to nearest (the error is uniform on a step), sqrt(6) for
    // stochastic rounding (twice the variance).
    let spread = if rounding == Rounding::Nearest {
        12f64.sqrt()
    } else {
        6f64.sqrt()
    };
    let scale = if global { rms } else { 1.0 };
    let scale = if scale > 0.0 { scale } else { 1.0 };

    let recipe_of = |theta: f32| Recipe::Uniform {
        params: UniformParams {
            step: theta.to_bits(),
            ..template
        },
        rans,
    };
    // Starts the frame of `theta`'s recipe in `out`: its header, and room for the records.
    let begin = |theta: f32, out: &mut Vec<u8>| -> (Recipe, u32) {
        let recipe = recipe_of(theta);
        let header = format::Header {
            stages: recipe.stages(),
            ..plan.header.clone()
        };
        out.clear();
        let ext = header.write(out);
        out.reserve(plan.max_records_len());
        (recipe, ext.checksum)
    };
    // The frame coded with `theta`; returns its squared error as decoded.
    let encode_all = |theta: f32, out: &mut Vec<u8>| -> f64 {
        let (recipe, sum) = begin(theta, out);
        plan.write_records(&recipe, req.input, sum, out).err
    };
    // Every chunk stored exactly.
    let stored = |theta: f32, out: &mut Vec<u8>| {
        let (_, sum) = begin(theta, out);
        for (i, c) in inputs.iter().enumerate() {
            format::write_chunk_with(out, sum, i as u64, |p| {
                p.push(MODE_STORED);
                p.extend_from_slice(c);
            });
        }
    };
    if numel == 0 {
        stored(1.0, out);
        return Ok(());
    }
    let xs = sample(dtype, req.input, numel, &template);
    // Step searches on small samples do not settle (see `secant`): there an evaluation
    // costs little, and the jumps of the error, and what settling gives up, are largest.
    let settle = |side: Safe| (xs.len() / dtype.itemsize() >= SETTLE_MIN_SAMPLE).then_some(side);
    // A borrowed sample is the whole tensor, whose finite elements are counted already.
    let sample_finite = match xs {
        Cow::Borrowed(_) => finite,
        Cow::Owned(_) => (k.stats)(dtype, &xs).finite,
    };

    match spec.bound {
        Bound::MaxAbs(e) => {
            // |x - q step| <= step / 2 with rounding to nearest, < step with stochastic
            // rounding; elements the dtype's rounding pushes past the bound are escaped.
            let step = if rounding == Rounding::Nearest {
                2.0 * e
            } else {
                e
            };
            encode_all((step as f32).clamp(lo, hi), out);
            Ok(())
        }
        Bound::RelRmse(eps) => {
            if sumsq == 0.0 {
                if encode_all(1.0f32.max(lo), out) != 0.0 {
                    stored(1.0, out);
                }
                return Ok(());
            }
            let rel = |theta: f32| {
                let e = estimate(
                    &template,
                    theta,
                    &xs,
                    sample_finite,
                    rounding,
                    &check,
                    false,
                );
                (e.mse * finite as f64 / sumsq).sqrt()
            };
            let theta0 = (eps * spread * scale) as f32;
            let mut theta = secant(theta0, eps * 0.995, lo, hi, 0.002, settle(Safe::Below), rel);
            // A margin of 2e-6 of the squared error, above the rounding of the quantizer's
            // error sums (their `f32` partial sums err by less than 2^-21 of themselves).
            let limit = eps * (1.0 - 1e-6);
            // A frame that meets the bound, kept aside while a coarser step is tried.
            let mut best: Option<Vec<u8>> = None;
            let mut raised = false;
            for _ in 0..MAX_ATTEMPTS {
                let err = encode_all(theta, out);
                let achieved = (err / sumsq).sqrt();
                if achieved <= limit {
                    // Far below the bound (the estimate was off): one try with a coarser
                    // step, keeping this frame if that one fails.
                    if !raised && achieved < 0.95 * eps && achieved > 0.0 {
                        raised = true;
                        best = Some(std::mem::take(out));
                        theta = (f64::from(theta) * (0.995 * eps / achieved).min(2.0)) as f32;
                        theta = theta.clamp(lo, hi);
                        continue;
                    }
                    return Ok(());
                }
                if let Some(frame) = best.take() {
                    *out = frame;
                    return Ok(());
                }
                let next = (f64::from(theta) * (0.995 * eps / achieved).min(0.99)) as f32;
                if next.clamp(lo, hi) == theta {
                    break;
                }
                theta = next.clamp(lo, hi);
            }
            match best {
                Some(frame) => *out = frame,
                None => stored(theta, out),
            }
            Ok(())
        }
        Bound::Bits(target) => {
            let n_chunks = inputs.len() as f64;
            let header_bytes = plan.header.write(&mut Vec::new()).len as f64;
            let fixed_bytes = header_bytes + n_chunks * (8.0 + 1.0 + 4.0 * rans.lanes as f64 + 4.0);
            let mut present = 64usize;
            let bits_at = |theta: f32, present: &mut usize| {
                let e = estimate(&template, theta, &xs, sample_finite, rounding, &check, true);
                *present = e.present;
                e.bits
            };
            // bits(theta) falls as theta grows: search on 2^-bits, which grows like a power.
            let overhead = |present: usize| {
                8.0 * (fixed_bytes + n_chunks * 2.5 * present as f64) / numel as f64
            };
            let mut want = target - overhead(present) - 0.01;
            let theta0 = (scale * 2f64.powf(2.05 - want.max(0.1))) as f32;
            let search = |theta: f32, want: f64, present: &mut usize| {
                secant(
                    theta,
                    2f64.powf(-want),
                    lo,
                    hi,
                    0.002,
                    settle(Safe::Above),
                    |t| 2f64.powf(-bits_at(t, present)),
                )
            };
            let mut theta = search(theta0, want, &mut present);
            let w2 = target - overhead(present) - 0.01;
            if (w2 - want).abs() > 0.005 {
                want = w2;
                theta = search(theta, want, &mut present);
            }
            // The largest frame that fits so far.
            let mut best: Option<(f64, Vec<u8>)> = None;
            for _ in 0..MAX_ATTEMPTS {
                encode_all(theta, out);
                let actual = out.len() as f64 * 8.0 / numel as f64;
                // The guarantee, in exactly the form callers check it.
                let fits = out.len() as f64 * 8.0 <= target * numel as f64;
                if fits && best.as_ref().is_none_or(|b| actual > b.0) {
                    best = Some((actual, std::mem::take(out)));
                }
                if fits && actual >= target - 0.03 {
                    break;
                }
                // About one bit per halving of the step; aim a little below the target.
                let next = (f64::from(theta) * 2f64.powf(actual - (target - 0.01))) as f32;
                let next = next.clamp(lo, hi);
                if next == theta {
                    break;
                }
                theta = next;
            }
            if let Some((_, frame)) = best {
                *out = frame;
                return Ok(());
            }
            // The coarsest quantizer: every symbol zero.
            let coarse = if global {
                (amax * 4.0).clamp(lo, hi)
            } else {
                hi
            };
            encode_all(coarse, out);
            let actual = out.len() as f64 * 8.0 / numel as f64;
            if out.len() as f64 * 8.0 <= target * numel as f64 {
                return Ok(());
            }
            out.clear();
            Err(Error::invalid(format!(
                "target_bits={target} cannot be met: the smallest frame for this tensor takes \
                 {actual:.3} bits per element (a fixed cost of headers and tables{}); raise \
                 target_bits or code larger tensors",
                if global {
                    ""
                } else {
                    ", and a 16-bit step per group"
                }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts of a chunk of 2^18 symbols: common ones `0..=50`, then rare direct and bucket
    /// symbols.
    fn chunk_counts(rare: &[(usize, u32)], esc: u32) -> Vec<u32> {
        let mut counts = vec![0u32; uniform::ALPHABET];
        for (s, c) in rare {
            counts[*s] = *c;
        }
        counts[usize::from(uniform::ESC)] = esc;
        let left = (1u32 << 18) - counts.iter().sum::<u32>();
        for c in &mut counts[..51] {
            *c = left / 51;
        }
        counts[0] += left % 51;
        counts
    }

    #[test]
    fn rare_escapes_picks_the_symbols_cheaper_escaped() {
        // Slot and table entry: 2^18 / (2048 ln 2) + 16 = 200.7 bits; an escaped bfloat16
        // costs 16 bits more than the symbol, a float32 32: counts below 12.5 and 6.3.
        let rare = [(300, 3), (301, 12), (302, 13), (303, 6), (490, 2), (40, 1)];
        // (Float32's two save less than the escape symbol's slot: a chunk with escapes.)
        for (isz, esc, picked) in [(2, 0, vec![300, 301, 303]), (4, 5, vec![300, 303])] {
            let mut counts = chunk_counts(&rare, esc);
            let before = counts.clone();
            let mut escape = [false; uniform::ALPHABET];
            // Symbols 0..=50 counted by sampling: never picked, however rare.
            let min = rare_escapes(&mut counts, (0, 50), isz, 11, &mut escape);
            let got: Vec<usize> = (0..uniform::ALPHABET).filter(|&s| escape[s]).collect();
            assert_eq!(got, picked, "itemsize {isz}");
            assert_eq!(min, picked[0] as u16);
            let moved: u32 = picked.iter().map(|&s| before[s]).sum();
            assert_eq!(counts[usize::from(uniform::ESC)], esc + moved);
            for s in picked {
                assert_eq!(counts[s], 0);
            }
            assert_eq!(counts.iter().sum::<u32>(), before.iter().sum::<u32>());
        }
        // One candidate that saves less than the escape symbol's own slot: only worth it when
        // the chunk has escapes already.
        for (esc, picked) in [(0, false), (1, true)] {
            let mut counts = chunk_counts(&[(300, 12)], esc);
            let mut escape = [false; uniform::ALPHABET];
            let min = rare_escapes(&mut counts, (0, 50), 2, 11, &mut escape);
            assert_eq!(escape[300], picked);
            assert_eq!(min, if picked { 300 } else { uniform::ESC });
        }
    }

    /// A chunk whose few values at a rare code are carried exactly when rounded to nearest
    /// (and quantized like the rest when rounded stochastically), and decodes so.
    #[test]
    fn rare_codes_of_a_chunk_are_carried_exactly() {
        let step = 0.3f32;
        let n = 1 << 18;
        // Three rare codes, two elements each (one would not pay for the escape symbol):
        // q = -100 (code 199) or -101 stochastically, reconstructed as -30 or -30.25; -90
        // or -91 (-27 or -27.25); -80 or -81 (-24 or -24.25).
        let rare = [1000usize, 77_777, 100_000, 150_001, 200_001, 262_000];
        let xs: Vec<f32> = (0..n)
            .map(|i| {
                if let Some(k) = rare.iter().position(|&r| r == i) {
                    [-30.125, -27.125, -24.125][k % 3]
                } else {
                    ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 8.0 * step
                }
            })
            .collect();
        let input: Vec<u8> = xs
            .iter()
            .flat_map(|&x| convert::f32_to_bf16(x).to_le_bytes())
            .collect();
        let rans = RansParams::DEFAULT;
        let check = Check {
            dtype: DType::BF16,
            max_abs: f64::INFINITY,
        };
        for (code, exact) in [(0u8, true), (1, false)] {
            let p = UniformParams {
                bound: 0,
                bound_value: 0,
                scope: SCOPE_GLOBAL,
                group: 0,
                step: step.to_bits(),
                rounding: code,
                nonfinite: 0,
            };
            let mut out = vec![];
            encode_uniform_chunk(&p, &rans, &check, DType::BF16, &input, 0, 3, None, &mut out);
            let mut r = Reader::new(&out);
            assert_eq!(r.u8("mode").unwrap(), MODE_CODED);
            let mut back = vec![0u8; input.len()];
            decode_uniform_chunk(
                &p,
                &rans,
                DType::BF16,
                false,
                &mut r,
                &mut back,
                &mut Symbols::Decode,
            )
            .unwrap();
            r.finish("chunk").unwrap();
            for &i in &rare {
                let got = back[2 * i..2 * i + 2] == input[2 * i..2 * i + 2];
                assert_eq!(got, exact, "rounding {code}, element {i}");
            }
        }
    }

    /// Sampled counts give every symbol that occurs a nonzero count, whichever symbols
    /// occur (including none of the small ones: symbol 0 absent from the counted runs).
    #[test]
    fn sampled_counts_keep_every_occurring_symbol() {
        let n = freq::SAMPLED_COUNTS + 1000;
        let cases: Vec<Vec<u16>> = vec![
            vec![7; n],
            (0..n)
                .map(|i| if i % 1000 == 5 { 300 } else { 3 })
                .collect(),
            (0..n).map(|i| (i % 97) as u16).collect(),
            (0..n)
                .map(|i| if i == 64 * 3 + 1 { uniform::ESC } else { 0 })
                .collect(),
        ];
        let mut counts = Vec::new();
        for symbols in cases {
            symbol_counts(&symbols, &mut counts, freq::SAMPLED_COUNTS);
            assert_eq!(counts.len(), uniform::ALPHABET);
            for &v in &symbols {
                assert!(counts[usize::from(v)] > 0, "symbol {v} lost");
            }
            let present: std::collections::HashSet<u16> = symbols.iter().copied().collect();
            for (v, &c) in counts.iter().enumerate() {
                assert_eq!(c > 0, present.contains(&(v as u16)), "symbol {v}");
            }
        }
    }

    /// A power law with jumps: the relative error of a step on data of few distinct values
    /// moves in jumps larger than the search's tolerance, and not monotonically (here up to
    /// 0.4% either way, changing every 0.01% of the step).
    fn jagged(t: f32) -> f64 {
        let t = f64::from(t);
        let cell = (t * 1e4).floor() as u64;
        let jitter = (crate::quant::rounding::hash(7, cell) % 2001) as f64 / 1000.0 - 1.0;
        t * (1.0 + 0.004 * jitter)
    }

    #[test]
    fn a_search_that_cannot_meet_its_tolerance_settles_on_the_safe_side() {
        let (mut settled, mut longest_unsettled) = (0, 0);
        for i in 0..200 {
            let target = 0.3 + 0.01 * f64::from(i);
            for (safe, below) in [(Safe::Below, true), (Safe::Above, false)] {
                let mut evals = 0;
                let t = secant(0.25, target, 1e-6, 1e6, 0.002, Some(safe), |t| {
                    evals += 1;
                    jagged(t)
                });
                let r = jagged(t) / target - 1.0;
                assert!(evals <= 6, "{target} {safe:?}: {evals} evaluations");
                if r.abs() >= 0.002 {
                    // Settled: on the safe side, and near unless from the sixth evaluation.
                    settled += 1;
                    assert_eq!(r <= 0.0, below, "{target} {safe:?}: {r}");
                    assert!(evals == 6 || r.abs() < 0.005, "{target} {safe:?}: {r}");
                }
            }
            // Without a safe side the search may use its whole budget.
            let mut evals = 0;
            secant(0.25, target, 1e-6, 1e6, 0.002, None, |t| {
                evals += 1;
                jagged(t)
            });
            longest_unsettled = longest_unsettled.max(evals);
        }
        assert!(settled > 20, "{settled}");
        assert!(longest_unsettled > 6, "{longest_unsettled}");
    }

    #[test]
    fn a_smooth_search_meets_its_tolerance_either_way() {
        for safe in [None, Some(Safe::Below), Some(Safe::Above)] {
            for target in [1e-3, 0.02, 0.7, 5.0] {
                let t = secant(0.3, target, 1e-9, 1e9, 0.002, safe, |t| {
                    f64::from(t).powf(1.3)
                });
                let r = f64::from(t).powf(1.3) / target - 1.0;
                assert!(r.abs() < 0.002, "{target} {safe:?}: {r}");
            }
        }
    }
}
