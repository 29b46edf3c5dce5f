//! Frames of fixed-rate block quantization from codes and scales computed elsewhere (by a
//! GPU quantizer that reproduces [`crate::quant::block`] bit for bit), so that only the
//! codes and scales have to reach the host.
//!
//! The chunks are written by the same plan and payload code as [`super::encode_frame`]: the
//! frame is byte for byte the one the host quantizer gives the same tensor. The input comes
//! from outside (Python), so everything is checked: the lengths, every scale (finite, not
//! negative, not the E8M0 NaN) and every code (within the element's bits, and none of the
//! codes an encoder never writes: the integer `-2^(bits-1)`, the minifloat NaN and infinity
//! codes; all codes of a block whose scale is zero are zero).
//!
//! A chunk whose coded form would be larger than its elements is stored as they are (as the
//! host encoder does); that needs the chunk's raw elements, which the caller can pass for the
//! tensor's last elements (where the short last chunk lies). Without them the encoder
//! reports that it could not make the frame, and the caller codes the raw tensor instead.

use super::{lossy, with_scratch, EncodePlan, EncodeRequest, Recipe, MODE_CODED, MODE_STORED};
use crate::error::{Error, Result};
use crate::format::put_uvarint;
use crate::quant::block::{stored_scale, BlockFormat, ScaleFormat};
use crate::quant::minifloat::Element;

/// The output of a block quantizer for a whole tensor, in element order.
#[derive(Debug, Clone, Copy)]
pub struct BlockCodes<'a> {
    /// One code per element: one byte each (`packed == false`), or an LSB-first bit stream of
    /// `bits` bits per code (code `i` at bits `i * bits ..`, padded with zero bits to a whole
    /// byte; for 8-bit codes the two are the same).
    pub codes: &'a [u8],
    pub packed: bool,
    /// The stored scale of each block of the tensor (`ceil(numel / block)` of them; the last
    /// block may be shorter), little-endian, 1 byte (E8M0) or 2 bytes (float16, bfloat16)
    /// each.
    pub scales: &'a [u8],
    /// The raw little-endian bytes of the tensor's last `raw_tail.len() / itemsize` elements
    /// (may be empty): what a chunk there is stored as when coding would not make it smaller.
    pub raw_tail: &'a [u8],
}

/// The byte values that are not codes of `el` an encoder writes are those with
/// `c & mask == forbidden` or `c > limit`: `(mask, forbidden, limit)`.
fn unwritable(el: Element) -> (u8, u8, u8) {
    let bits = el.bits();
    let limit = ((1u32 << bits) - 1) as u8;
    match el {
        // S.1111.111 is NaN.
        Element::E4M3 => (0x7f, 0x7f, limit),
        // S.11111.xx is infinity or NaN.
        Element::E5M2 => (0x7c, 0x7c, limit),
        // Every 4-bit code is a value (0xff is above the limit anyway).
        Element::E2M1 => (0xff, 0xff, limit),
        // The integer -2^(bits-1).
        _ => (0xff, 1 << (bits - 1), limit),
    }
}

/// The index of the first code in `codes` that no encoder writes for `el`, if any (a
/// branch-free scan of groups, which vectorizes; only a group with a hit is searched).
fn first_unwritable(el: Element, codes: &[u8]) -> Option<usize> {
    let (mask, forbidden, limit) = unwritable(el);
    let bad = |c: u8| (c & mask == forbidden) | (c > limit);
    for (g, group) in codes.chunks(4096).enumerate() {
        if group.iter().fold(false, |acc, &c| acc | bad(c)) {
            return group.iter().position(|&c| bad(c)).map(|j| g * 4096 + j);
        }
    }
    None
}

/// Fails unless `scale` is a stored scale the reference encoder can write.
fn check_scale(fmt: &BlockFormat, scale: u16, block: usize) -> Result<()> {
    let ok = match fmt.scale {
        ScaleFormat::E8M0 => scale <= 254,
        ScaleFormat::F16 => scale & 0x8000 == 0 && scale & 0x7c00 != 0x7c00,
        ScaleFormat::BF16 => scale & 0x8000 == 0 && scale & 0x7f80 != 0x7f80,
    };
    if ok {
        return Ok(());
    }
    let what = match fmt.scale {
        ScaleFormat::E8M0 => "255 is the E8M0 NaN",
        _ => "block scales are finite and not negative",
    };
    Err(Error::invalid(format!(
        "the scale of block {block} is {scale:#06x}, which no encoder writes as a {} scale \
         ({what})",
        fmt.scale.name()
    )))
}

/// Codes `first .. first + out.len()` of an LSB-first stream of `bits`-bit codes.
fn unpack_stream(src: &[u8], first: usize, bits: u32, out: &mut [u8]) {
    let w = bits as usize;
    if w == 8 {
        out.copy_from_slice(&src[first..first + out.len()]);
        return;
    }
    let mask = ((1u32 << bits) - 1) as u8;
    let bit0 = first * w;
    if bit0.is_multiple_of(8) && w == 3 {
        // Groups of 8 codes in 3 bytes.
        let src = &src[bit0 / 8..];
        let whole = out.len() / 8;
        let (head, rest) = out.split_at_mut(whole * 8);
        for (o, b) in head.chunks_exact_mut(8).zip(src.chunks_exact(3)) {
            let v = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
            for (j, c) in o.iter_mut().enumerate() {
                *c = (v >> (3 * j)) as u8 & 7;
            }
        }
        unpack_bits(&src[3 * whole..], 0, 3, rest);
        return;
    }
    if bit0.is_multiple_of(8) && (w == 4 || w == 2) {
        // Whole bytes: a loop of fixed shape per width, which vectorizes.
        let src = &src[bit0 / 8..];
        let whole = out.len() / (8 / w);
        let (head, rest) = out.split_at_mut(whole * (8 / w));
        if w == 4 {
            for (o, &b) in head.chunks_exact_mut(2).zip(src) {
                o[0] = b & 0xf;
                o[1] = b >> 4;
            }
        } else {
            for (o, &b) in head.chunks_exact_mut(4).zip(src) {
                o[0] = b & 3;
                o[1] = (b >> 2) & 3;
                o[2] = (b >> 4) & 3;
                o[3] = b >> 6;
            }
        }
        for (j, c) in rest.iter_mut().enumerate() {
            *c = (src[whole] >> (j * w)) & mask;
        }
        return;
    }
    unpack_bits(src, bit0, bits, out);
}

/// Codes of `bits < 8` bits starting at bit `bit0` of `src`, one at a time.
fn unpack_bits(src: &[u8], bit0: usize, bits: u32, out: &mut [u8]) {
    let w = bits as usize;
    let mask = ((1u32 << bits) - 1) as u8;
    for (i, c) in out.iter_mut().enumerate() {
        let bit = bit0 + i * w;
        let lo = u16::from(src[bit / 8]);
        let hi = src.get(bit / 8 + 1).map_or(0, |&b| u16::from(b));
        *c = ((lo | hi << 8) >> (bit % 8)) as u8 & mask;
    }
}

/// Writes the frame of `req` (a fixed-rate recipe; `req.input` is not read) from block codes
/// and scales computed elsewhere into `out` (cleared first). Returns `Ok(false)`, with `out`
/// empty, when a chunk would have to be stored raw and `src.raw_tail` does not hold it.
pub fn encode_block_codes_into(
    req: &EncodeRequest,
    src: &BlockCodes,
    out: &mut Vec<u8>,
) -> Result<bool> {
    out.clear();
    let Recipe::Block { params, rans } = req.recipe else {
        return Err(Error::invalid(
            "precomputed block codes need a fixed-rate codec (format= or bits=, or the fast \
             profile)",
        ));
    };
    let plan = EncodePlan::sized(req, None)?;
    let fmt = params.format;
    let bits = fmt.element.bits();
    let isz = req.dtype.itemsize();
    let n = plan.input_len / isz;
    let want = if src.packed {
        (n * bits as usize).div_ceil(8)
    } else {
        n
    };
    if src.codes.len() != want {
        return Err(Error::invalid(format!(
            "codes hold {} bytes; {n} {}{}-bit codes take {want}",
            src.codes.len(),
            if src.packed { "packed " } else { "" },
            bits
        )));
    }
    if src.packed && !(n * bits as usize).is_multiple_of(8) {
        let used = (n * bits as usize) % 8;
        if src.codes[want - 1] >> used != 0 {
            return Err(Error::invalid(
                "the padding bits after the last packed code are not zero",
            ));
        }
    }
    let n_blocks = n.div_ceil(fmt.block);
    let want = n_blocks * fmt.scale.bytes();
    if src.scales.len() != want {
        return Err(Error::invalid(format!(
            "scales hold {} bytes; {n_blocks} blocks of {} elements take {want} ({} bytes per \
             {} scale)",
            src.scales.len(),
            fmt.block,
            fmt.scale.bytes(),
            fmt.scale.name()
        )));
    }
    for g in 0..n_blocks {
        check_scale(&fmt, stored_scale(&fmt, src.scales, g), g)?;
    }
    if !src.raw_tail.len().is_multiple_of(isz) || src.raw_tail.len() > plan.input_len {
        return Err(Error::invalid(format!(
            "raw_tail holds {} bytes: not a whole number of the tensor's last {} elements \
             (at most {n})",
            src.raw_tail.len(),
            req.dtype
        )));
    }
    let tail_start = n - src.raw_tail.len() / isz;
    let chunk_elems = plan.chunk_bytes / isz;

    let ext = plan.header.write(out);
    out.reserve(plan.max_records_len());
    let results = plan.write_records_by(ext.checksum, out, |i, o| -> Result<bool> {
        let first = i * chunk_elems;
        let m = chunk_elems.min(n - first);
        // Chunks hold whole blocks (the chunk size is a multiple of the block).
        let g0 = first / fmt.block;
        let scales =
            &src.scales[g0 * fmt.scale.bytes()..(g0 + m.div_ceil(fmt.block)) * fmt.scale.bytes()];
        with_scratch(|s| {
            s.codes.resize(m, 0);
            if src.packed {
                unpack_stream(src.codes, first, bits, &mut s.codes);
            } else {
                s.codes.copy_from_slice(&src.codes[first..first + m]);
            }
            if let Some(j) = first_unwritable(fmt.element, &s.codes) {
                return Err(Error::invalid(format!(
                    "code {:#04x} of element {} is not a code an encoder writes for {}",
                    s.codes[j],
                    first + j,
                    fmt.element.name()
                )));
            }
            for (g, codes) in s.codes.chunks(fmt.block).enumerate() {
                if fmt.multiplier(stored_scale(&fmt, scales, g)) == 0.0
                    && codes.iter().any(|&c| c != 0)
                {
                    return Err(Error::invalid(format!(
                        "block {} has a zero scale but codes that are not zero",
                        g0 + g
                    )));
                }
            }
            let start = o.len();
            o.push(MODE_CODED);
            o.extend_from_slice(scales);
            lossy::write_block_codes(bits, rans.as_ref(), s, o);
            put_uvarint(o, 0); // no escapes
            if o.len() - start > m * isz {
                // Stored, as the host encoder stores it (see `encode_chunk`).
                o.truncate(start);
                if first < tail_start {
                    return Ok(false);
                }
                let at = (first - tail_start) * isz;
                o.push(MODE_STORED);
                o.extend_from_slice(&src.raw_tail[at..at + m * isz]);
            }
            Ok(true)
        })
    });
    let mut complete = true;
    for r in results {
        match r {
            Ok(done) => complete &= done,
            Err(e) => {
                out.clear();
                return Err(e);
            }
        }
    }
    if !complete {
        out.clear();
    }
    Ok(complete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::{BlockSpec, Mode, NonFinite};
    use crate::quant::block::encode_blocks;
    use crate::quant::rounding::Rounding;
    use crate::{Codec, ContainerHint, DType, ErrorKind};

    fn codec(element: Element, scale: ScaleFormat, block: usize, entropy: bool) -> Codec {
        Codec {
            chunk_elems: 1000,
            threads: 2,
            ..Codec::with_mode(Mode::Block(BlockSpec {
                element,
                scale,
                block,
                entropy,
                rounding: Rounding::Nearest,
                nonfinite: NonFinite::Error,
            }))
        }
    }

    /// Heavy-tailed values with zero blocks, subnormals and huge values, as `dtype` bytes.
    fn data(dtype: DType, n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::new();
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let v = match (i / 64) % 5 {
                0 => 0.0,
                1 => u * 1e-41,
                2 => u / (0.5 - u.abs() + 1e-3),
                3 => u * 6e4,
                _ => u,
            };
            match dtype {
                DType::F32 => out.extend_from_slice(&v.to_le_bytes()),
                DType::F16 => {
                    out.extend_from_slice(&crate::quant::convert::f32_to_f16_sat(v).to_le_bytes())
                }
                DType::BF16 => {
                    out.extend_from_slice(&crate::quant::convert::f32_to_bf16_sat(v).to_le_bytes())
                }
            }
        }
        out
    }

    /// The host quantizer's codes (one byte each) and scales for a whole tensor.
    fn quantize(c: &Codec, dtype: DType, input: &[u8]) -> (BlockFormat, Vec<u8>, Vec<u8>) {
        let Mode::Block(b) = c.mode else { panic!() };
        let fmt = BlockFormat {
            element: b.element,
            scale: b.scale,
            block: b.block,
        };
        let n = input.len() / dtype.itemsize();
        let mut codes = vec![0u8; n];
        let mut scales = vec![0u8; n.div_ceil(b.block) * b.scale.bytes()];
        encode_blocks(
            &fmt,
            Rounding::Nearest,
            0,
            dtype,
            input,
            &mut codes,
            &mut scales,
        );
        (fmt, codes, scales)
    }

    fn pack(codes: &[u8], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; (codes.len() * bits as usize).div_ceil(8)];
        for (i, &c) in codes.iter().enumerate() {
            for b in 0..bits as usize {
                let bit = i * bits as usize + b;
                out[bit / 8] |= ((c >> b) & 1) << (bit % 8);
            }
        }
        out
    }

    #[test]
    fn frames_equal_the_host_encoders() {
        for (k, el) in Element::ALL.into_iter().enumerate() {
            for (j, scale) in ScaleFormat::ALL.into_iter().enumerate() {
                for dtype in DType::ALL {
                    let block = [16, 32, 48, 256][(k + j) % 4];
                    let entropy = (k + j) % 2 == 1;
                    let c = codec(el, scale, block, entropy);
                    for n in [0usize, 1, 2, 5, 700, 4099] {
                        let input = data(dtype, n, (k * 7 + j) as u64);
                        let want = c.encode(&input, dtype, &[n as u64]).unwrap();
                        let (fmt, codes, scales) = quantize(&c, dtype, &input);
                        // The last chunk (chunks are 1000 elements rounded down to blocks).
                        let chunk = 1000 / block * block;
                        let tail = (n - n.saturating_sub(1) / chunk * chunk) * dtype.itemsize();
                        let raw_tail = &input[input.len() - tail..];
                        let packed = pack(&codes, fmt.element.bits());
                        for (codes, packed) in [(&codes, false), (&packed, true)] {
                            let src = BlockCodes {
                                codes,
                                packed,
                                scales: &scales,
                                raw_tail,
                            };
                            let got = c
                                .encode_block_codes(
                                    &src,
                                    dtype,
                                    &[n as u64],
                                    ContainerHint::Unspecified,
                                )
                                .unwrap();
                            assert!(
                                got.as_deref() == Some(&want[..]),
                                "{el:?} {scale:?} block {block} entropy {entropy} {dtype} n={n} \
                                 packed {packed}: {:?} bytes, want {}",
                                got.map(|g| g.len()),
                                want.len()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_chunk_to_store_without_its_elements_gives_no_frame() {
        let c = codec(Element::Int8, ScaleFormat::BF16, 16, false);
        // Chunks of 992 elements: the last one holds a single element, which is stored.
        let input = data(DType::BF16, 993, 3);
        let (_, codes, scales) = quantize(&c, DType::BF16, &input);
        let mut src = BlockCodes {
            codes: &codes,
            packed: false,
            scales: &scales,
            raw_tail: &[],
        };
        let mut out = vec![1, 2, 3];
        let bad = BlockCodes {
            scales: &scales[1..],
            ..src
        };
        c.encode_block_codes_into(&bad, DType::BF16, &[993], ContainerHint::Torch, &mut out)
            .unwrap_err();
        assert!(out.is_empty());
        let mut bad_codes = codes.clone();
        bad_codes[990] = 0x80;
        let bad = BlockCodes {
            codes: &bad_codes,
            ..src
        };
        out.push(1);
        c.encode_block_codes_into(&bad, DType::BF16, &[993], ContainerHint::Torch, &mut out)
            .unwrap_err();
        assert!(out.is_empty(), "a chunk's error leaves no partial frame");
        let ok = c
            .encode_block_codes_into(&src, DType::BF16, &[993], ContainerHint::Torch, &mut out)
            .unwrap();
        assert!(!ok && out.is_empty());
        src.raw_tail = &input[2 * 992..];
        let want = c
            .encode_with_hint(&input, DType::BF16, &[993], ContainerHint::Torch)
            .unwrap();
        let got = c
            .encode_block_codes(&src, DType::BF16, &[993], ContainerHint::Torch)
            .unwrap();
        assert_eq!(got, Some(want));
    }

    #[test]
    fn bad_input_is_refused() {
        let c = codec(Element::Int4, ScaleFormat::F16, 32, false);
        let input: Vec<u8> = (0..100)
            .flat_map(|i| (i as f32 * 0.1 - 5.0).to_le_bytes())
            .collect();
        let (_, codes, scales) = quantize(&c, DType::F32, &input);
        let go = |c: &Codec, codes: &[u8], packed: bool, scales: &[u8], raw_tail: &[u8]| {
            let src = BlockCodes {
                codes,
                packed,
                scales,
                raw_tail,
            };
            let e = c
                .encode_block_codes(&src, DType::F32, &[10, 10], ContainerHint::Unspecified)
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            e.message().to_owned()
        };
        let msg = go(&c, &codes[1..], false, &scales, &[]);
        assert!(msg.contains("codes hold 99 bytes"), "{msg}");
        let msg = go(&c, &codes, true, &scales, &[]);
        assert!(msg.contains("packed"), "{msg}");
        let msg = go(&c, &codes, false, &scales[2..], &[]);
        assert!(msg.contains("scales hold"), "{msg}");
        let msg = go(&c, &codes, false, &scales, &input[1..]);
        assert!(msg.contains("raw_tail"), "{msg}");
        let mut bad = codes.clone();
        bad[37] = 0x10;
        let msg = go(&c, &bad, false, &scales, &[]);
        assert!(msg.contains("element 37"), "{msg}");
        bad[37] = 0x8; // -8: int4 codes stop at -7
        go(&c, &bad, false, &scales, &[]);
        let mut packed = pack(&codes, 4);
        packed[49] = (packed[49] & 0x0f) | 0x80; // element 99 becomes -8
        let msg = go(&c, &packed, true, &scales, &[]);
        assert!(msg.contains("element 99"), "{msg}");
        // 100 codes of 4 bits fill 50 bytes exactly; with 99 there is padding to check.
        let c3 = codec(Element::Int3, ScaleFormat::F16, 32, false);
        let (_, codes3, scales3) = quantize(&c3, DType::F32, &input);
        let mut packed3 = pack(&codes3, 3);
        *packed3.last_mut().unwrap() |= 0x80;
        let msg = go(&c3, &packed3, true, &scales3, &[]);
        assert!(msg.contains("padding"), "{msg}");
        for v in [0x80u8, 0x7c] {
            let mut s = scales.clone();
            s[1] = v; // a negative scale, then an infinite one
            let msg = go(&c, &codes, false, &s, &[]);
            assert!(msg.contains("block 0"), "{msg}");
        }
        let mut s = scales.clone();
        s[2..4].copy_from_slice(&[0, 0]); // block 1 scale zero, its codes not
        let msg = go(&c, &codes, false, &s, &[]);
        assert!(msg.contains("block 1 has a zero scale"), "{msg}");
        let e8 = codec(Element::E4M3, ScaleFormat::E8M0, 32, false);
        let (_, c8, mut s8) = quantize(&e8, DType::F32, &input);
        s8[3] = 255;
        assert!(go(&e8, &c8, false, &s8, &[]).contains("NaN"));
        let (_, mut c8, s8) = quantize(&e8, DType::F32, &input);
        c8[5] = 0xff;
        go(&e8, &c8, false, &s8, &[]);
        let lossless = Codec::default();
        let msg = go(&lossless, &codes, false, &scales, &[]);
        assert!(msg.contains("fixed-rate"), "{msg}");
    }

    #[test]
    fn stream_unpacking_matches_a_bit_loop() {
        let src: Vec<u8> = (0..97u32).map(|i| (i * 37 + 11) as u8).collect();
        for bits in [2u32, 3, 4, 8] {
            let total = src.len() * 8 / bits as usize;
            for first in [0usize, 1, 3, 4, 8, 13] {
                let m = total - first;
                let mut out = vec![0u8; m];
                unpack_stream(&src, first, bits, &mut out);
                for (i, &c) in out.iter().enumerate() {
                    let mut v = 0u8;
                    for b in 0..bits as usize {
                        let bit = (first + i) * bits as usize + b;
                        v |= ((src[bit / 8] >> (bit % 8)) & 1) << b;
                    }
                    assert_eq!(c, v, "bits={bits} first={first} i={i}");
                }
            }
        }
    }

    #[test]
    fn unwritable_codes_are_what_encoders_never_write() {
        let count = |el| {
            (0..=255u8)
                .filter(|&c| first_unwritable(el, &[c]).is_none())
                .count()
        };
        assert_eq!(count(Element::Int8), 255);
        assert_eq!(first_unwritable(Element::Int8, &[0, 1, 0x80]), Some(2));
        assert_eq!(count(Element::Int4), 15);
        assert_eq!(count(Element::Int3), 7);
        assert_eq!(count(Element::Int2), 3);
        assert_eq!(first_unwritable(Element::Int2, &[2]), Some(0));
        assert_eq!(count(Element::E4M3), 254);
        assert_eq!(count(Element::E5M2), 256 - 8);
        assert_eq!(count(Element::E2M1), 16);
        // Every code the host encoder writes passes.
        for el in Element::ALL {
            for c in 0..1u32 << el.bits() {
                let v = el.value(c as u8);
                let ok = v.is_finite() && !(el.is_int() && v.abs() > el.max_value());
                assert_eq!(first_unwritable(el, &[c as u8]).is_none(), ok, "{el:?} {c}");
            }
        }
        let mut long = vec![1u8; 10_000];
        long[9_000] = 0x80;
        assert_eq!(first_unwritable(Element::Int8, &long), Some(9_000));
    }
}
