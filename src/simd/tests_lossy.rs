//! The lossy kernels of every level this CPU supports against their scalar references, bit
//! for bit: conversions, block quantization (every element and scale format, both roundings,
//! every dtype), code packing, the error-bounded encoder's statistics, and the uniform
//! quantizer in both directions.

use proptest::prelude::*;

use super::tests::Rng;
use super::*;
use crate::quant::block::{BlockFormat, ScaleFormat, MAX_BLOCK, MIN_BLOCK};
use crate::quant::minifloat::Element;
use crate::quant::uniform::{
    BitReader, BitWriter, ErrSum, Escaped, QuantArgs, Step, ALPHABET, ESC,
};

/// The vector levels to check.
fn levels() -> Vec<Kernels> {
    available()
        .into_iter()
        .filter(|&l| l != Level::Scalar)
        .map(kernels_for)
        .collect()
}

const SLACK: usize = 80;

/// Lengths around the vector widths, the packing block (512) and the block sizes.
const LENGTHS: [usize; 16] = [0, 1, 3, 4, 7, 8, 15, 16, 17, 33, 63, 64, 65, 511, 513, 4099];

/// Interesting `f32` values: zeros, subnormals, extremes, infinities, NaNs, values around the
/// float16 and bfloat16 limits and rounding ties.
fn special_f32(rng: &mut Rng) -> f32 {
    let b: u32 = match rng.below(22) {
        0 => 0,
        1 => 0x8000_0000,
        2 => 0x7f80_0000,
        3 => 0xff80_0000,
        4 => 0x7fc0_0000,
        5 => 0xffc0_0001,
        6 => 0x7f80_0001,
        7 => 1,
        8 => 0x807f_ffff,
        9 => 0x7f7f_ffff,
        10 => 0xff7f_ffff,
        // float16: largest, the overflow boundary, smallest normal and subnormals.
        11 => 0x477f_e000 + rng.below(0x4000) as u32,
        12 => 0x3880_0000 - 0x100 + rng.below(0x200) as u32,
        13 => 0x3300_0000 + rng.below(0x80_0000) as u32,
        14 => 0x3380_0000 + (rng.below(64) as u32) * 0x1000,
        // float16 ties: the 13 dropped bits are exactly one half.
        15 => (rng.next() as u32 & 0xffff_e000) | 0x1000,
        // bfloat16 ties and near-overflow.
        16 => (rng.next() as u32 & 0xffff_0000) | 0x8000,
        17 => 0x7f7f_8000 + rng.below(0x8000) as u32,
        _ => rng.next() as u32,
    };
    f32::from_bits(b)
}

/// `xs` as little-endian `dtype` bytes (rounded to nearest).
fn encode_as(dtype: DType, xs: &[f32]) -> Vec<u8> {
    xs.iter()
        .flat_map(|&x| match dtype {
            DType::F32 => x.to_le_bytes().to_vec(),
            DType::F16 => convert::f32_to_f16(x).to_le_bytes().to_vec(),
            DType::BF16 => convert::f32_to_bf16(x).to_le_bytes().to_vec(),
        })
        .collect()
}

/// `n` values as `dtype` bytes: Gaussian-like at a scale that changes every few dozen
/// elements (from 1e-30 to 1e30), with a share of special values and of raw bit patterns.
fn data(rng: &mut Rng, dtype: DType, n: usize, special: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * dtype.itemsize());
    let mut scale = 1.0f32;
    for i in 0..n {
        if i % 37 == 0 {
            scale = 10f32.powi(rng.below(61) as i32 - 30);
        }
        let k = rng.below(100);
        let x = if k < special {
            special_f32(rng)
        } else {
            let g: f32 = (0..4)
                .map(|_| (rng.next() >> 40) as f32 / 16_777_216.0)
                .sum();
            (g - 2.0) * scale
        };
        match dtype {
            DType::F32 => out.extend_from_slice(&x.to_bits().to_le_bytes()),
            DType::F16 => {
                let h = if k.is_multiple_of(3) && k < special {
                    rng.next() as u16
                } else {
                    convert::f32_to_f16(x)
                };
                out.extend_from_slice(&h.to_le_bytes())
            }
            DType::BF16 => {
                let h = if k.is_multiple_of(3) && k < special {
                    rng.next() as u16
                } else {
                    convert::f32_to_bf16(x)
                };
                out.extend_from_slice(&h.to_le_bytes())
            }
        }
    }
    out
}

#[test]
fn conversions_match_scalar() {
    let mut rng = Rng(11);
    // Every float16 and bfloat16 pattern.
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    for dtype in [DType::F16, DType::BF16] {
        let mut want = vec![0f32; 65536];
        (SCALAR.to_f32)(dtype, &all, &mut want);
        for k in levels() {
            let mut got = vec![0f32; 65536];
            (k.to_f32)(dtype, &all, &mut got);
            for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{:?} {dtype} {i:#x}", k.level);
            }
        }
    }
    for dtype in DType::ALL {
        for &n in LENGTHS.iter().chain(&[100_000]) {
            let input = data(&mut rng, dtype, n, 30);
            let vals: Vec<f32> = (0..n).map(|_| special_f32(&mut rng)).collect();
            let mut want = vec![0f32; n];
            (SCALAR.to_f32)(dtype, &input, &mut want);
            let isz = dtype.itemsize();
            let mut want_b = vec![0x5Au8; n * isz + SLACK];
            (SCALAR.from_f32)(dtype, &vals, &mut want_b[..n * isz]);
            for k in levels() {
                let mut got = vec![0f32; n];
                (k.to_f32)(dtype, &input, &mut got);
                assert!(
                    want.iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{:?} to_f32 {dtype} n={n}",
                    k.level
                );
                let mut got_b = vec![0x5Au8; n * isz + SLACK];
                (k.from_f32)(dtype, &vals, &mut got_b[..n * isz]);
                assert!(got_b == want_b, "{:?} from_f32 {dtype} n={n}", k.level);
            }
        }
    }
}

fn rounding_modes() -> [Rounding; 2] {
    [
        Rounding::Nearest,
        Rounding::Stochastic { seed: 0xDEAD_BEEF },
    ]
}

/// Encodes with `k` and the reference and compares codes, scales and the count; returns the
/// reference's codes and scales.
fn check_block_encode(
    k: &Kernels,
    fmt: &BlockFormat,
    rounding: Rounding,
    base: u64,
    dtype: DType,
    input: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let n = input.len() / dtype.itemsize();
    let sl = n.div_ceil(fmt.block) * fmt.scale.bytes();
    let run = |f: BlockEncodeFn| {
        let mut codes = vec![0xEEu8; n + SLACK];
        let mut scales = vec![0xEEu8; sl + SLACK];
        let c = f(
            fmt,
            rounding,
            base,
            dtype,
            input,
            &mut codes[..n],
            &mut scales[..sl],
        );
        (c, codes, scales)
    };
    let want = run(SCALAR.block_encode);
    let got = run(k.block_encode);
    let what = format!(
        "{:?} {fmt:?} {rounding:?} {dtype} n={n} base={base}",
        k.level
    );
    assert_eq!(got.0, want.0, "non-finite count, {what}");
    assert!(got.2 == want.2, "scales, {what}");
    if got.1 != want.1 {
        let i = got.1.iter().zip(&want.1).position(|(a, b)| a != b).unwrap();
        panic!(
            "codes differ at {i}: {:#x} vs {:#x}, {what}",
            got.1[i], want.1[i]
        );
    }
    (want.1[..n].to_vec(), want.2[..sl].to_vec())
}

fn check_block_decode(k: &Kernels, fmt: &BlockFormat, dtype: DType, scales: &[u8], codes: &[u8]) {
    let len = codes.len() * dtype.itemsize();
    let run = |f: BlockDecodeFn| {
        let mut out = vec![0x77u8; len + SLACK];
        f(fmt, dtype, scales, codes, &mut out[..len]);
        out
    };
    let want = run(SCALAR.block_decode);
    let got = run(k.block_decode);
    if got != want {
        let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap();
        panic!(
            "{:?} block_decode {fmt:?} {dtype} n={} differs at byte {i}",
            k.level,
            codes.len()
        );
    }
}

/// `block_encode_packed` writes what `block_encode` and a pack of its codes write, at every
/// level, for every 8-bit element: block sizes that tile the bit-packing blocks (coded
/// straight into the packed layout) and others, lengths around whole bit-packing blocks,
/// special values, both roundings.
#[test]
fn packed_block_encoders_match_encode_then_pack() {
    let mut rng = Rng(14);
    let kernels: Vec<Kernels> = std::iter::once(SCALAR).chain(levels()).collect();
    for element in Element::ALL.into_iter().filter(|e| e.bits() == 8) {
        for (block, scale) in [
            (64, ScaleFormat::BF16),
            (32, ScaleFormat::E8M0),
            (128, ScaleFormat::F16),
            (256, ScaleFormat::BF16),
            (192, ScaleFormat::E8M0),
        ] {
            let fmt = BlockFormat {
                element,
                scale,
                block,
            };
            for dtype in DType::ALL {
                for n in [0, 63, 511, 512, 513, 1100, 2048 + 64 + 3] {
                    let input = data(&mut rng, dtype, n, 8);
                    let sl = n.div_ceil(block) * scale.bytes();
                    for rounding in rounding_modes() {
                        let base = rng.below(1 << 40);
                        let run = |f: BlockEncodeFn| {
                            let mut codes = vec![0xEEu8; n + SLACK];
                            let mut scales = vec![0xEEu8; sl + SLACK];
                            let c = f(
                                &fmt,
                                rounding,
                                base,
                                dtype,
                                &input,
                                &mut codes[..n],
                                &mut scales[..sl],
                            );
                            (c, codes, scales)
                        };
                        let (count, codes, scales) = run(SCALAR.block_encode);
                        let mut packed = codes.clone();
                        (SCALAR.pack_codes)(8, &codes[..n], &mut packed[..n]);
                        for k in &kernels {
                            let got = run(k.block_encode_packed);
                            let what = format!("{:?} {fmt:?} {rounding:?} {dtype} n={n}", k.level);
                            assert_eq!(got.0, count, "non-finite count, {what}");
                            assert!(got.2 == scales, "scales, {what}");
                            assert!(got.1 == packed, "packed codes, {what}");
                        }
                    }
                }
            }
        }
    }
}

/// `block_decode_packed` writes what an unpack of the codes and `block_decode` write, at every
/// level, for every 8-bit element and block size that divides 512, on encoded tensors and on
/// arbitrary codes and scales (NaN and infinite ones included), at lengths around whole
/// bit-packing blocks.
#[test]
fn packed_block_decoders_match_unpack_then_decode() {
    let mut rng = Rng(15);
    let kernels: Vec<Kernels> = std::iter::once(SCALAR).chain(levels()).collect();
    for element in Element::ALL.into_iter().filter(|e| e.bits() == 8) {
        for scale in ScaleFormat::ALL {
            for block in [16usize, 32, 64, 128, 256] {
                let fmt = BlockFormat {
                    element,
                    scale,
                    block,
                };
                for dtype in DType::ALL {
                    for n in [0usize, 63, 511, 512, 513, 1100, 2048 + 64 + 3] {
                        let sl = n.div_ceil(block) * scale.bytes();
                        let input = data(&mut rng, dtype, n, 8);
                        let mut codes = vec![0u8; n];
                        let mut scales = vec![0u8; sl];
                        (SCALAR.block_encode)(
                            &fmt,
                            Rounding::Nearest,
                            0,
                            dtype,
                            &input,
                            &mut codes,
                            &mut scales,
                        );
                        for (codes, scales) in [(codes, scales), (rng.bytes(n), rng.bytes(sl))] {
                            let len = n * dtype.itemsize();
                            let mut want = vec![0x77u8; len + SLACK];
                            (SCALAR.block_decode)(&fmt, dtype, &scales, &codes, &mut want[..len]);
                            let mut packed = vec![0u8; n];
                            (SCALAR.pack_codes)(8, &codes, &mut packed);
                            for k in &kernels {
                                let mut got = vec![0x77u8; len + SLACK];
                                (k.block_decode_packed)(
                                    &fmt,
                                    dtype,
                                    &scales,
                                    &packed,
                                    &mut got[..len],
                                );
                                assert!(
                                    got == want,
                                    "{:?} {fmt:?} {dtype} n={n}: packed decode differs",
                                    k.level
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn block_kernels_match_scalar() {
    let mut rng = Rng(12);
    for element in Element::ALL {
        for scale in ScaleFormat::ALL {
            for block in [MIN_BLOCK, 32, 48, 64, 100, MAX_BLOCK] {
                let fmt = BlockFormat {
                    element,
                    scale,
                    block,
                };
                for dtype in DType::ALL {
                    let lengths = [0, 1, block - 1, block, block + 1, 3 * block + 5, 2048];
                    for n in lengths {
                        let input = data(&mut rng, dtype, n, 8);
                        for rounding in rounding_modes() {
                            let base = rng.below(1 << 40);
                            for k in levels() {
                                let (codes, scales) =
                                    check_block_encode(&k, &fmt, rounding, base, dtype, &input);
                                check_block_decode(&k, &fmt, dtype, &scales, &codes);
                            }
                        }
                        // Decoding arbitrary codes and scales (NaN and infinite codes, NaN,
                        // zero and infinite scales).
                        let codes = rng.bytes(n);
                        let scales = rng.bytes(n.div_ceil(block) * scale.bytes());
                        for k in levels() {
                            check_block_decode(&k, &fmt, dtype, &scales, &codes);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn block_kernels_match_scalar_on_edge_values() {
    // Blocks of one repeated special value, all zeros, tiny values, values at saturation.
    let mut rng = Rng(13);
    let values = [
        0.0f32,
        -0.0,
        f32::MIN_POSITIVE,
        1e-40,
        -1e-45,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NAN,
        448.0,
        464.0,
        57344.0,
        6.0,
        0.25,
        -0.75,
        1.5,
        2.5,
        127.5,
        -126.5,
    ];
    for element in Element::ALL {
        for scale in ScaleFormat::ALL {
            let fmt = BlockFormat {
                element,
                scale,
                block: 32,
            };
            for dtype in DType::ALL {
                for &v in &values {
                    let mut xs = vec![v; 64];
                    // A second block with the value among ordinary ones.
                    for x in &mut xs[32..] {
                        *x = (rng.below(2001) as f32 - 1000.0) / 7.0;
                    }
                    xs[40] = v;
                    let input = encode_as(dtype, &xs);
                    for rounding in rounding_modes() {
                        for k in levels() {
                            let (codes, scales) =
                                check_block_encode(&k, &fmt, rounding, 5, dtype, &input);
                            check_block_decode(&k, &fmt, dtype, &scales, &codes);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn pack_codes_match_scalar() {
    let mut rng = Rng(14);
    for width in 0..=8u32 {
        for n in [0usize, 1, 15, 16, 511, 512, 513, 1024, 1500, 4096 + 7] {
            let codes = rng.bytes(n);
            let len = bitpack::packed_len(n, width);
            let mut want = vec![0xA5u8; len + SLACK];
            (SCALAR.pack_codes)(width, &codes, &mut want[..len]);
            let packed = rng.bytes(len);
            let mut want_u = vec![0xA5u8; n + SLACK];
            (SCALAR.unpack_codes)(width, &packed, &mut want_u[..n]);
            for k in levels() {
                let mut got = vec![0xA5u8; len + SLACK];
                (k.pack_codes)(width, &codes, &mut got[..len]);
                assert!(got == want, "{:?} pack_codes w={width} n={n}", k.level);
                let mut got_u = vec![0xA5u8; n + SLACK];
                (k.unpack_codes)(width, &packed, &mut got_u[..n]);
                assert!(
                    got_u == want_u,
                    "{:?} unpack_codes w={width} n={n}",
                    k.level
                );
            }
        }
    }
}

fn same_stats(a: &uniform::Stats, b: &uniform::Stats) -> bool {
    a.sumsq.0.map(f64::to_bits) == b.sumsq.0.map(f64::to_bits)
        && a.finite == b.finite
        && a.amax.to_bits() == b.amax.to_bits()
        && a.first_nonfinite.map(|(i, v)| (i, v.to_bits()))
            == b.first_nonfinite.map(|(i, v)| (i, v.to_bits()))
}

#[test]
fn stats_match_scalar() {
    let mut rng = Rng(15);
    for dtype in DType::ALL {
        for &n in LENGTHS.iter().chain(&[100_000]) {
            for special in [0, 1, 30] {
                let input = data(&mut rng, dtype, n, special);
                let want = (SCALAR.stats)(dtype, &input);
                for k in levels() {
                    let got = (k.stats)(dtype, &input);
                    assert!(
                        same_stats(&got, &want),
                        "{:?} stats {dtype} n={n}: {got:?} vs {want:?}",
                        k.level
                    );
                }
            }
        }
    }
}

/// Encodes with `k` and the reference, compares everything, and returns the reference's
/// symbols and extra bytes.
fn check_uniform_encode(
    k: &Kernels,
    a: &QuantArgs,
    input: &[u8],
    step: Step,
) -> (Vec<u16>, Vec<u8>) {
    let n = input.len() / a.dtype.itemsize();
    let run = |f: UniformEncodeFn| {
        let mut symbols = vec![0xFFFFu16; n + SLACK];
        let mut extra = BitWriter::default();
        // Sums and extra bits that are already there carry on.
        extra.put(0b101, 3);
        let mut err = ErrSum([1.0, 2.0, 0.0, 0.5, 1e-9, 3.0, 0.0, 7.0]);
        let e = f(a, input, step, &mut symbols[..n], &mut extra, &mut err);
        extra.finish();
        (e, symbols, extra.bytes, err)
    };
    let want = run(SCALAR.uniform_encode);
    let got = run(k.uniform_encode);
    let what = format!("{:?} {a:?} n={n} step={step:?}", k.level);
    assert_eq!(got.0, want.0, "escapes, {what}");
    if got.1 != want.1 {
        let i = got.1.iter().zip(&want.1).position(|(a, b)| a != b).unwrap();
        panic!(
            "symbols differ at {i}: {} vs {}, {what}",
            got.1[i], want.1[i]
        );
    }
    assert!(got.2 == want.2, "extra bits, {what}");
    assert_eq!(
        got.3 .0.map(f64::to_bits),
        want.3 .0.map(f64::to_bits),
        "error sums, {what}"
    );
    (want.1[..n].to_vec(), want.2)
}

fn check_uniform_decode(k: &Kernels, dtype: DType, symbols: &[u16], extra: &[u8], step: Step) {
    let len = symbols.len() * dtype.itemsize();
    // Distinct bytes for each escape symbol's element.
    let escaped: Vec<u8> = (0..symbols.iter().filter(|&&s| s == ESC).count() * dtype.itemsize())
        .map(|j| (j * 37 + 11) as u8)
        .collect();
    let run = |f: UniformDecodeFn| {
        let mut out = vec![0x99u8; len + SLACK];
        let mut r = BitReader::new(extra);
        let mut e = Escaped::new(&escaped, dtype.itemsize());
        let res = f(dtype, symbols, step, &mut r, &mut e, &mut out[..len]);
        (
            res.map_err(|e| e.to_string()),
            r.finish().is_ok(),
            out,
            e.finish().is_ok(),
        )
    };
    let want = run(SCALAR.uniform_decode);
    let got = run(k.uniform_decode);
    assert_eq!(got.0, want.0, "{:?} uniform_decode result", k.level);
    assert_eq!(got.1, want.1, "{:?} uniform_decode extra bits", k.level);
    if want.0.is_ok() {
        assert!(
            want.3 && got.3,
            "{:?} uniform_decode escaped elements",
            k.level
        );
    }
    if want.0.is_ok() {
        assert!(
            got.2 == want.2,
            "{:?} uniform_decode {dtype} n={} step={step:?}",
            k.level,
            symbols.len()
        );
    }
    for k in levels() {
        assert_eq!(
            (k.extra_count)(symbols),
            (SCALAR.extra_count)(symbols),
            "{:?} extra_count",
            k.level
        );
        for (lo, hi) in [
            (ESC, ESC),
            (0, 0),
            (100, 480),
            (479, 481),
            (0, 1 << 15),
            (300, 200),
        ] {
            let run = |f: FlaggedFn| {
                let mut out = vec![7u32];
                f(symbols, lo, hi, &mut out);
                out
            };
            assert_eq!(
                run(k.flagged),
                run(SCALAR.flagged),
                "{:?} flagged {lo}..{hi}",
                k.level
            );
        }
    }
}

#[test]
fn uniform_kernels_match_scalar() {
    let mut rng = Rng(16);
    for dtype in DType::ALL {
        for &n in LENGTHS.iter().chain(&[20_000]) {
            let input = data(&mut rng, dtype, n, 5);
            // Steps: per element (with zeros), and global ones from fine (buckets and
            // escapes) to coarse, zero and huge.
            let each: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 11 == 0 {
                        0.0
                    } else {
                        10f32.powi(rng.below(41) as i32 - 20)
                    }
                })
                .collect();
            let mut steps = vec![Step::Each(&each)];
            for s in [1e-30f32, 1e-3, 0.37, 1.0, 1e3, 1e30, 0.0, f32::MAX] {
                steps.push(Step::One(s));
            }
            for step in steps {
                for rounding in rounding_modes() {
                    for max_abs in [f64::INFINITY, 1e-3, 0.5] {
                        // The partial error sums' scale: that of the largest step, or any.
                        let largest = match step {
                            Step::One(s) => s,
                            Step::Each(s) => s.iter().fold(0.0f32, |m, &v| m.max(v)),
                        };
                        let err_exp = match rng.below(3) {
                            // Beyond -126..=126 too (clamped).
                            0 => rng.below(301) as i32 - 150,
                            _ => uniform::err_exp(largest),
                        };
                        let a = QuantArgs {
                            dtype,
                            rounding,
                            base: rng.below(1 << 40),
                            max_abs,
                            // Runs that start anywhere between flushes of the partial sums.
                            lane0: rng.below(300) as usize,
                            err_exp,
                        };
                        for k in levels() {
                            let (symbols, extra) = check_uniform_encode(&k, &a, &input, step);
                            check_uniform_decode(&k, dtype, &symbols, &extra, step);
                        }
                    }
                }
            }
        }
    }
}

/// A bound between two `f32` values: the vector paths compare float16 and bfloat16 errors
/// in `f32`, against the largest `f32` not above the bound, which must leave out exactly the
/// errors the scalar reference's `f64` comparison leaves out.
#[test]
fn uniform_bound_between_f32_values_matches_scalar() {
    for dtype in DType::ALL {
        // 0.25 quantizes to 0 with a step of 1 (an error of 0.25); 1.75 to 2 (also 0.25).
        let xs: Vec<f32> = (0..100).map(|i| [0.25, -1.75, 0.125, 1.0][i % 4]).collect();
        let input = encode_as(dtype, &xs);
        for (max_abs, escapes) in [
            (0.25 - 1e-12, 50),
            (0.25, 0),
            (0.25 + 1e-12, 0),
            (0.125 - 1e-15, 75),
            (0.0, 75),
        ] {
            let a = QuantArgs {
                dtype,
                rounding: Rounding::Nearest,
                base: 0,
                max_abs,
                lane0: 0,
                err_exp: 0,
            };
            for k in levels() {
                let (symbols, _) = check_uniform_encode(&k, &a, &input, Step::One(1.0));
                let got = symbols.iter().filter(|&&s| s == ESC).count();
                assert_eq!(got, escapes, "{dtype:?} {max_abs}");
            }
        }
    }
}

#[test]
fn uniform_decode_of_damaged_symbols_matches_scalar() {
    let mut rng = Rng(17);
    for dtype in DType::ALL {
        for n in [0usize, 5, 16, 33, 1000] {
            for _ in 0..20 {
                // Mostly direct symbols, some buckets, escapes and symbols past the alphabet.
                let symbols: Vec<u16> = (0..n)
                    .map(|_| match rng.below(40) {
                        0 => ESC,
                        1 => 480 + rng.below(25) as u16,
                        2 => ALPHABET as u16 + rng.below(100) as u16,
                        _ => rng.below(480) as u16,
                    })
                    .collect();
                let len = rng.below(40) as usize;
                let extra = rng.bytes(len);
                let steps: Vec<f32> = (0..n).map(|_| special_f32(&mut rng).abs()).collect();
                for step in [Step::One(0.25), Step::One(3e38), Step::Each(&steps)] {
                    for k in levels() {
                        check_uniform_decode(&k, dtype, &symbols, &extra, step);
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lossy_kernels_match_scalar_on_random_input(
        dt in 0usize..3,
        n in 0usize..1500,
        special in 0u64..40,
        el in 0usize..7,
        sc in 0usize..3,
        block in MIN_BLOCK..=MAX_BLOCK,
        step_log in -30i32..30,
        lane0 in 0usize..300,
        seed in any::<u64>(),
    ) {
        let dtype = DType::ALL[dt];
        let mut rng = Rng(seed);
        let input = data(&mut rng, dtype, n, special);
        let fmt = BlockFormat { element: Element::ALL[el], scale: ScaleFormat::ALL[sc], block };
        let step = Step::One(10f32.powi(step_log) * 1.37);
        for k in levels() {
            for rounding in rounding_modes() {
                let (codes, scales) = check_block_encode(&k, &fmt, rounding, seed >> 20, dtype, &input);
                check_block_decode(&k, &fmt, dtype, &scales, &codes);
                let err_exp = uniform::err_exp(10f32.powi(step_log) * 1.37);
                let a = QuantArgs { dtype, rounding, base: seed >> 24, max_abs: f64::INFINITY, lane0, err_exp };
                let (symbols, extra) = check_uniform_encode(&k, &a, &input, step);
                check_uniform_decode(&k, dtype, &symbols, &extra, step);
            }
            prop_assert!(same_stats(&(k.stats)(dtype, &input), &(SCALAR.stats)(dtype, &input)));
        }
    }
}
