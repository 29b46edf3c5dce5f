//! Scalar reference kernels: the definition every SIMD kernel must reproduce bit for bit.

use super::FloatSplit;
use crate::entropy::rans::{encode_step, RANS_L};
use crate::quant::bitpack;

pub fn rans_encode(
    symbols: &[u16],
    rcp: &[u32],
    info: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
) -> usize {
    let lanes = states.len();
    let mut pos = words.len();
    let full = symbols.len() / lanes * lanes;
    // The last, partial group is encoded first: the encoder runs backward.
    let (head, tail) = symbols.split_at(full);
    encode_group_rev(tail, rcp, info, prob_bits, states, words, &mut pos);
    for group in head.chunks_exact(lanes).rev() {
        encode_group_rev(group, rcp, info, prob_bits, states, words, &mut pos);
    }
    pos
}

/// Encodes one group (lanes `0..group.len()`) in reverse lane order.
#[inline(always)]
pub(crate) fn encode_group_rev(
    group: &[u16],
    rcp: &[u32],
    info: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    words: &mut [u16],
    pos: &mut usize,
) {
    for (lane, &s) in group.iter().enumerate().rev() {
        let s = s as usize;
        let (x, w) = encode_step(states[lane], rcp[s], info[s], prob_bits);
        if let Some(w) = w {
            *pos -= 1;
            words[*pos] = w;
        }
        states[lane] = x;
    }
}

pub fn rans_decode(
    words: &[u8],
    table: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    out: &mut [u16],
) -> Option<usize> {
    let lanes = states.len();
    let mut pos = 0usize;
    for group in out.chunks_mut(lanes) {
        decode_group(words, table, prob_bits, states, group, &mut pos)?;
    }
    Some(pos)
}

/// Decodes two streams one after the other.
pub fn rans_decode2(jobs: &mut [super::RansDecodeJob<'_>; 2]) -> [Option<usize>; 2] {
    super::decode_each(jobs, rans_decode)
}

/// Decodes one group (lanes `0..group.len()`) in lane order.
#[inline(always)]
pub(crate) fn decode_group(
    words: &[u8],
    table: &[u32],
    prob_bits: u32,
    states: &mut [u32],
    group: &mut [u16],
    pos: &mut usize,
) -> Option<()> {
    let mask = (1u32 << prob_bits) - 1;
    for (lane, o) in group.iter_mut().enumerate() {
        let x = states[lane];
        let e = table[(x & mask) as usize];
        *o = (e & 0x1ff) as u16;
        let mut x = ((e >> 9) & 0xfff) * (x >> prob_bits) + (e >> 21);
        if x < RANS_L {
            let w = words.get(*pos..*pos + 2)?;
            x = (x << 16) | u32::from(u16::from_le_bytes([w[0], w[1]]));
            *pos += 2;
        }
        states[lane] = x;
    }
    Some(())
}

#[inline(always)]
fn load(input: &[u8], bytes: usize, i: usize) -> u32 {
    if bytes == 2 {
        u32::from(u16::from_le_bytes([input[2 * i], input[2 * i + 1]]))
    } else {
        u32::from_le_bytes(input[4 * i..4 * i + 4].try_into().unwrap())
    }
}

pub fn split(fs: FloatSplit, input: &[u8], symbols: &mut [u16]) -> u32 {
    let n = symbols.len();
    assert_eq!(input.len(), n * fs.bytes);
    let mmask = (1u32 << fs.mant_bits) - 1;
    let mut or = 0u32;
    for (i, s) in symbols.iter_mut().enumerate() {
        let v = load(input, fs.bytes, i);
        or |= v & mmask;
        let sym = v >> fs.mant_bits;
        *s = sym as u16;
    }
    or
}

pub fn pack_mantissa(fs: FloatSplit, input: &[u8], drop: u32, out: &mut [u8]) {
    let n = input.len() / fs.bytes;
    let mmask = (1u32 << fs.mant_bits) - 1;
    bitpack::pack_with(
        n,
        fs.mant_bits - drop,
        |i| (load(input, fs.bytes, i) & mmask) >> drop,
        out,
    );
}

pub fn merge(fs: FloatSplit, symbols: &[u16], packed: &[u8], drop: u32, out: &mut [u8]) {
    let n = symbols.len();
    assert_eq!(out.len(), n * fs.bytes);
    bitpack::unpack_with(n, fs.mant_bits - drop, packed, |i, m| {
        let v = (u32::from(symbols[i]) << fs.mant_bits) | (m << drop);
        if fs.bytes == 2 {
            out[2 * i..2 * i + 2].copy_from_slice(&(v as u16).to_le_bytes());
        } else {
            out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    });
}
