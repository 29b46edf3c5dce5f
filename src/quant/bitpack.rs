//! Packing of `w`-bit unsigned values (`0 <= w <= 32`) into bytes.
//!
//! Layout (see `docs/FORMAT.md`, "Packed values"): values are grouped in blocks of 512.
//! Within a block, value `j` belongs to lane `j % 16` at row `j / 16`; each lane is an
//! LSB-first bit stream of its 32 values (`32 w` bits = `w` words of 32 bits), and word `k`
//! of lane `l` is stored little-endian at word index `16 k + l` of the block. A block thus
//! takes `64 w` bytes and one 16-lane vector operation handles a whole row. The values after
//! the last full block form one LSB-first bit stream (value `t` at bits `t w .. t w + w`)
//! padded with zero bits to a whole byte.
//!
//! The functions here are the scalar reference; SIMD kernels in `crate::simd` produce the
//! same bytes.

/// Values per block.
pub const BLOCK: usize = 512;
/// Lanes per block.
pub const LANES: usize = 16;
/// Rows per block (values per lane).
pub const ROWS: usize = BLOCK / LANES;

/// Bytes taken by `n` packed values of `width` bits.
pub fn packed_len(n: usize, width: u32) -> usize {
    let w = width as usize;
    (n / BLOCK) * 64 * w + ((n % BLOCK) * w).div_ceil(8)
}

#[inline(always)]
fn mask(width: u32) -> u32 {
    if width == 32 {
        u32::MAX
    } else {
        (1u32 << width) - 1
    }
}

/// Packs `n` values given by `get(i)` (only the low `width` bits are kept) into
/// `out[..packed_len(n, width)]`.
pub fn pack_with(n: usize, width: u32, mut get: impl FnMut(usize) -> u32, out: &mut [u8]) {
    let w = width as usize;
    let m = mask(width);
    assert!(width <= 32 && out.len() >= packed_len(n, width));
    if w == 0 {
        return;
    }
    let blocks = n / BLOCK;
    for b in 0..blocks {
        let base = b * BLOCK;
        let dst = &mut out[b * 64 * w..(b + 1) * 64 * w];
        for lane in 0..LANES {
            let mut acc: u64 = 0;
            let mut bits = 0usize;
            let mut k = 0usize;
            for row in 0..ROWS {
                acc |= u64::from(get(base + row * LANES + lane) & m) << bits;
                bits += w;
                if bits >= 32 {
                    let at = (k * LANES + lane) * 4;
                    dst[at..at + 4].copy_from_slice(&(acc as u32).to_le_bytes());
                    acc >>= 32;
                    bits -= 32;
                    k += 1;
                }
            }
            debug_assert!(bits == 0 && k == w);
        }
    }
    // The tail: one LSB-first bit stream.
    let mut at = blocks * 64 * w;
    let mut acc: u64 = 0;
    let mut bits = 0usize;
    for i in blocks * BLOCK..n {
        acc |= u64::from(get(i) & m) << bits;
        bits += w;
        while bits >= 8 {
            out[at] = acc as u8;
            at += 1;
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out[at] = acc as u8;
    }
}

/// Unpacks `n` values of `width` bits from `packed` (at least `packed_len(n, width)` bytes),
/// handing each to `put(i, value)`.
pub fn unpack_with(n: usize, width: u32, packed: &[u8], mut put: impl FnMut(usize, u32)) {
    let w = width as usize;
    let m = mask(width);
    assert!(width <= 32 && packed.len() >= packed_len(n, width));
    if w == 0 {
        for i in 0..n {
            put(i, 0);
        }
        return;
    }
    let word = |src: &[u8], idx: usize| -> u64 {
        u64::from(u32::from_le_bytes(
            src[idx * 4..idx * 4 + 4].try_into().unwrap(),
        ))
    };
    let blocks = n / BLOCK;
    for b in 0..blocks {
        let base = b * BLOCK;
        let src = &packed[b * 64 * w..(b + 1) * 64 * w];
        for lane in 0..LANES {
            let mut acc: u64 = 0;
            let mut bits = 0usize;
            let mut k = 0usize;
            for row in 0..ROWS {
                if bits < w {
                    acc |= word(src, k * LANES + lane) << bits;
                    bits += 32;
                    k += 1;
                }
                put(base + row * LANES + lane, (acc as u32) & m);
                acc >>= w;
                bits -= w;
            }
        }
    }
    let mut at = blocks * 64 * w;
    let mut acc: u64 = 0;
    let mut bits = 0usize;
    for i in blocks * BLOCK..n {
        while bits < w {
            acc |= u64::from(packed[at]) << bits;
            at += 1;
            bits += 8;
        }
        put(i, (acc as u32) & m);
        acc >>= w;
        bits -= w;
    }
}

/// Packs the low `width <= 8` bits of every byte of `codes` into
/// `out[..packed_len(codes.len(), width)]`: [`pack_with`] over bytes (the scalar reference of
/// the `pack_codes` kernel).
pub fn pack_bytes(width: u32, codes: &[u8], out: &mut [u8]) {
    assert!(width <= 8);
    pack_with(codes.len(), width, |i| u32::from(codes[i]), out);
}

/// Rewrites 8-bit values, one per byte, in place into their packed layout (what
/// [`pack_bytes`] with width 8 writes: the same number of bytes).
pub fn pack_bytes8_in_place(values: &mut [u8]) {
    let mut tmp = [0u8; BLOCK];
    for block in values.chunks_exact_mut(BLOCK) {
        tmp.copy_from_slice(block);
        pack_bytes(8, &tmp, block);
    }
    // The values after the last whole block are stored as they are.
}

/// Unpacks `out.len()` values of `width <= 8` bits into bytes: [`unpack_with`], with direct
/// byte moves for 8-bit values (the vertical layout is then a 4x16 byte transposition per
/// group of 64 values).
pub fn unpack_bytes(width: u32, packed: &[u8], out: &mut [u8]) {
    let n = out.len();
    assert!(width <= 8 && packed.len() >= packed_len(n, width));
    if width != 8 {
        unpack_with(n, width, packed, |i, v| out[i] = v as u8);
        return;
    }
    let blocks = n / BLOCK;
    for (src, dst) in packed[..blocks * BLOCK]
        .chunks_exact(BLOCK)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        // Value 16 r + l is byte r mod 4 of word 16 (r / 4) + l.
        for (s, d) in src.chunks_exact(64).zip(dst.chunks_exact_mut(64)) {
            for r in 0..4 {
                for l in 0..16 {
                    d[16 * r + l] = s[4 * l + r];
                }
            }
        }
    }
    let tail = blocks * BLOCK;
    out[tail..].copy_from_slice(&packed[tail..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_of_a_block_is_vertical() {
        // With width 32 every value is its own word: value j sits at word 16 (j / 16) + j % 16,
        // which for a vertical layout with 32-bit words is just j.
        let vals: Vec<u32> = (0..BLOCK as u32)
            .map(|i| i.wrapping_mul(2654435761))
            .collect();
        let mut out = vec![0u8; packed_len(BLOCK, 32)];
        pack_with(BLOCK, 32, |i| vals[i], &mut out);
        for (j, &v) in vals.iter().enumerate() {
            let row = j / LANES;
            let lane = j % LANES;
            let at = (row * LANES + lane) * 4;
            assert_eq!(u32::from_le_bytes(out[at..at + 4].try_into().unwrap()), v);
        }
        // Width 1: lane l's 32 bits are bits of values l, l+16, l+32, ...
        let mut out = vec![0u8; packed_len(BLOCK, 1)];
        pack_with(BLOCK, 1, |i| u32::from(i == 16 * 5 + 3), &mut out);
        let lane3 = u32::from_le_bytes(out[12..16].try_into().unwrap());
        assert_eq!(lane3, 1 << 5);
    }

    proptest! {
        #[test]
        fn unpack_bytes_matches_unpack_with(
            raw in proptest::collection::vec(any::<u8>(), 0..3000),
            width in 1u32..=8,
        ) {
            let n = raw.len();
            let mut packed = vec![0u8; packed_len(n, width)];
            pack_with(n, width, |i| u32::from(raw[i]), &mut packed);
            let mut a = vec![0u8; n];
            unpack_bytes(width, &packed, &mut a);
            let mut b = vec![0u8; n];
            unpack_with(n, width, &packed, |i, v| b[i] = v as u8);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn round_trips(
            raw in proptest::collection::vec(any::<u32>(), 0..2000),
            width in 0u32..=32,
        ) {
            let n = raw.len();
            let len = packed_len(n, width);
            let mut out = vec![0xAAu8; len];
            pack_with(n, width, |i| raw[i], &mut out);
            let mut back = vec![0u32; n];
            unpack_with(n, width, &out, |i, v| back[i] = v);
            for i in 0..n {
                prop_assert_eq!(back[i], raw[i] & mask(width));
            }
        }
    }
}
