//! Per-kernel single-thread timings at every SIMD level this CPU supports, on chunks of 2^18
//! elements: the lossless profile's kernels (32 rANS lanes, 11-bit probabilities), then the
//! lossy ones (the `fast` profile's int8 blocks of 64 with bfloat16 scales, and the uniform
//! quantizer at the `balanced` profile's step, about 0.035 RMS, with its rANS stage), then the
//! 8-bit block kernels on the MX formats' blocks of 32 (MXINT8, MXFP8 E4M3).
//!
//! `cargo run --release --example kernels -- [FILE.npy]` (float32, float16 or
//! int16-as-bfloat16), or with no file on synthetic Gaussian bfloat16 (8 MB). Prints the
//! median nanoseconds per element of each kernel.

use std::time::Instant;

use iota_codec::entropy::{freq, rans};
use iota_codec::quant::block::{BlockFormat, ScaleFormat};
use iota_codec::quant::uniform::{self, BitReader, BitWriter, ErrSum, Escaped, QuantArgs, Step};
use iota_codec::simd::{self, FloatSplit, Kernels};
use iota_codec::transform::floatsplit;
use iota_codec::{DType, Element, Rounding};

fn load_npy(path: &str) -> (Vec<u8>, DType) {
    let bytes = std::fs::read(path).expect("read file");
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not an .npy file");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let dtype = if header.contains("'<f4'") {
        DType::F32
    } else if header.contains("'<f2'") {
        DType::F16
    } else if header.contains("'<i2'") || header.contains("'<u2'") {
        DType::BF16
    } else {
        panic!("unsupported dtype in {header}")
    };
    (bytes[10 + hlen..].to_vec(), dtype)
}

fn synthetic(n: usize) -> Vec<u8> {
    let mut x = 0x9E3779B97F4A7C15u64;
    let mut out = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let mut s = 0.0f32;
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s += (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        out.extend_from_slice(&((s.to_bits() >> 16) as u16).to_le_bytes());
    }
    out
}

/// Median seconds of `f` over `reps` runs.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

/// A chunk ready for the rANS kernels: symbols, mantissa drop, encoder and decoder tables,
/// final encoder states, stream bytes, packed mantissas.
type Prep = (
    Vec<u16>,
    u32,
    rans::EncTable,
    Vec<u32>,
    [u32; 32],
    Vec<u8>,
    Vec<u8>,
);

/// The decode-kernel arguments of a chunk.
fn job<'a>(p: &'a Prep, states: &'a mut [u32], out: &'a mut [u16]) -> simd::RansDecodeJob<'a> {
    simd::RansDecodeJob {
        words: &p.5,
        table: &p.3,
        prob_bits: 11,
        states,
        out: &mut out[..p.0.len()],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (data, dtype) = match args.get(1) {
        Some(p) => load_npy(p),
        None => (synthetic(1 << 22), DType::BF16),
    };
    let reps = 15;
    let l = dtype.layout();
    let fs = FloatSplit {
        bytes: dtype.itemsize(),
        mant_bits: l.mant_bits,
    };
    let alphabet = 1usize << (1 + l.exp_bits);
    let chunk = (1usize << 18) * fs.bytes;
    let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
    let n = (data.len() / fs.bytes) as f64;
    println!("{dtype}, {} elements, ns per element:", n);
    let mut base: Option<Vec<f64>> = None;
    for level in simd::available() {
        let k: Kernels = simd::kernels_for(level);
        // Per chunk: symbols, counts, drop, tables, stream.
        let mut prep: Vec<Prep> = vec![];
        for c in &chunks {
            let m = c.len() / fs.bytes;
            let mut syms = vec![0u16; m];
            let mut counts = vec![0u32; alphabet];
            let or = (k.split)(fs, c, &mut syms);
            floatsplit::symbol_counts(&syms, &mut counts);
            let drop = if or == 0 {
                fs.mant_bits
            } else {
                or.trailing_zeros()
            };
            let freqs = freq::normalize(&counts, 11).unwrap();
            let enc = rans::EncTable::new(&freqs, 11);
            let dec = rans::build_dec_table(&freqs, 11);
            let mut states = [rans::RANS_L; 32];
            let mut words = vec![0u16; m];
            let start = (k.rans_encode)(&syms, &enc.rcp, &enc.info, 11, &mut states, &mut words);
            let bytes: Vec<u8> = words[start..]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let mut packed =
                vec![0u8; iota_codec::quant::bitpack::packed_len(m, fs.mant_bits - drop)];
            (k.pack_mantissa)(fs, c, drop, &mut packed);
            prep.push((syms, drop, enc, dec, states, bytes, packed));
        }
        let mut syms = vec![0u16; 1 << 18];
        let mut counts = vec![0u32; alphabet];
        let mut words = vec![0u16; 1 << 18];
        let mut out = vec![0u8; chunk];
        let mut packed = vec![0u8; chunk];
        let t_split = time(reps, || {
            for c in &chunks {
                let m = c.len() / fs.bytes;
                (k.split)(fs, c, &mut syms[..m]);
                floatsplit::symbol_counts(&syms[..m], &mut counts);
            }
        });
        let t_pack = time(reps, || {
            for (c, p) in chunks.iter().zip(&prep) {
                (k.pack_mantissa)(fs, c, p.1, &mut packed);
            }
        });
        let t_enc = time(reps, || {
            for p in &prep {
                let mut st = [rans::RANS_L; 32];
                (k.rans_encode)(
                    &p.0,
                    &p.2.rcp,
                    &p.2.info,
                    11,
                    &mut st,
                    &mut words[..p.0.len()],
                );
            }
        });
        let mut syms2 = vec![0u16; 1 << 18];
        // Decodes a chunk's stream with the one-stream kernel.
        let dec1 = |p: &Prep, out: &mut [u16]| {
            let mut st = p.4;
            std::hint::black_box((k.rans_decode)(
                &p.5,
                &p.3,
                11,
                &mut st,
                &mut out[..p.0.len()],
            ));
        };
        let t_dec = time(reps, || {
            for p in &prep {
                dec1(p, &mut syms);
            }
        });
        // Two chunks at a time (an odd last one alone), as the pipeline decodes them.
        let t_dec2 = time(reps, || {
            for pair in prep.chunks(2) {
                let [p, q] = pair else {
                    dec1(&pair[0], &mut syms);
                    continue;
                };
                let (mut sp, mut sq) = (p.4, q.4);
                let mut jobs = [job(p, &mut sp, &mut syms), job(q, &mut sq, &mut syms2)];
                std::hint::black_box((k.rans_decode2)(&mut jobs));
            }
        });
        let t_merge = time(reps, || {
            for p in &prep {
                let m = p.0.len();
                (k.merge)(fs, &p.0, &p.6, p.1, &mut out[..m * fs.bytes]);
            }
        });
        let ns: Vec<f64> = [t_split, t_pack, t_enc, t_dec, t_merge, t_dec2]
            .iter()
            .map(|t| t / n * 1e9)
            .collect();
        let speedup = match &base {
            Some(b) => format!(
                "  (x{:.1} encode side, x{:.1} decode side)",
                (b[0] + b[1] + b[2]) / (ns[0] + ns[1] + ns[2]),
                (b[3] + b[4]) / (ns[3] + ns[4])
            ),
            None => String::new(),
        };
        println!(
            "{:>7}: split {:.3}  pack {:.3}  rans_encode {:.3}  rans_decode {:.3} (two streams {:.3})  merge {:.3}{speedup}",
            level.name(),
            ns[0],
            ns[1],
            ns[2],
            ns[3],
            ns[5],
            ns[4]
        );
        if base.is_none() {
            base = Some(ns);
        }
    }
    lossy(&data, dtype, reps);
    mx(&data, dtype, reps);
}

/// The 8-bit block codes of the MX formats (blocks of 32 with E8M0 scales): encoded and
/// packed in two passes (blocks under 64 are not packed as they are coded), and unpacked and
/// decoded in two passes against the packed decoder (which takes them one bit-packing block
/// at a time).
fn mx(data: &[u8], dtype: DType, reps: usize) {
    let isz = dtype.itemsize();
    let chunks: Vec<&[u8]> = data.chunks((1usize << 18) * isz).collect();
    let n = (data.len() / isz) as f64;
    let m = 1usize << 18;
    let (mut codes, mut packed) = (vec![0u8; m], vec![0u8; m]);
    let mut scales = vec![0u8; m / 32];
    let mut out = vec![0u8; m * isz];
    println!("MX block kernels (blocks of 32, E8M0 scales), ns per element:");
    for level in simd::available() {
        let k: Kernels = simd::kernels_for(level);
        let per = |t: f64| t / n * 1e9;
        let mut line = format!("{:>7}:", level.name());
        for element in [Element::Int8, Element::E4M3] {
            let fmt = BlockFormat {
                element,
                scale: ScaleFormat::E8M0,
                block: 32,
            };
            let t_enc = time(reps, || {
                for c in &chunks {
                    let e = c.len() / isz;
                    let (cs, sl) = (&mut codes[..e], &mut scales[..e / 32]);
                    (k.block_encode)(&fmt, Rounding::Nearest, 0, dtype, c, cs, sl);
                    (k.pack_codes)(8, cs, &mut packed[..e]);
                }
            });
            let mut dec = |packed_as_they_go: bool| {
                time(reps, || {
                    for c in &chunks {
                        let e = c.len() / isz;
                        let o = &mut out[..e * isz];
                        if packed_as_they_go {
                            (k.block_decode_packed)(&fmt, dtype, &scales, &packed[..e], o);
                        } else {
                            (k.unpack_codes)(8, &packed[..e], &mut codes[..e]);
                            (k.block_decode)(&fmt, dtype, &scales, &codes[..e], o);
                        }
                    }
                })
            };
            let (t_dec, t_dec_packed) = (dec(false), dec(true));
            line += &format!(
                "  {element:?}: encode+pack {:.3}  unpack+decode {:.3} (packed decoder {:.3})",
                per(t_enc),
                per(t_dec),
                per(t_dec_packed)
            );
        }
        println!("{line}");
    }
}

/// Timings of the lossy kernels at every level.
fn lossy(data: &[u8], dtype: DType, reps: usize) {
    let isz = dtype.itemsize();
    let chunk = (1usize << 18) * isz;
    let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
    let n = (data.len() / isz) as f64;
    let fmt = BlockFormat {
        element: Element::Int8,
        scale: ScaleFormat::BF16,
        block: 64,
    };
    let st = (simd::SCALAR.stats)(dtype, data);
    let rms = (st.sumsq.total() / st.finite.max(1) as f64).sqrt();
    let step = (rms * 0.01 * 12f64.sqrt()) as f32;
    println!(
        "lossy kernels, ns per element (uniform step {step:.4}, {:.4} RMS):",
        step as f64 / rms
    );
    let m = 1usize << 18;
    let mut codes = vec![0u8; m];
    let mut scales = vec![0u8; 2 * m / 64];
    let mut packed = vec![0u8; m];
    let mut out = vec![0u8; chunk];
    let mut symbols = vec![0u16; m];
    let mut counts = vec![0u32; uniform::ALPHABET];
    let mut extra = BitWriter::default();
    for level in simd::available() {
        let k: Kernels = simd::kernels_for(level);
        let per = |t: f64| t / n * 1e9;
        let t_benc = time(reps, || {
            for c in &chunks {
                let e = c.len() / isz;
                (k.block_encode)(
                    &fmt,
                    Rounding::Nearest,
                    0,
                    dtype,
                    c,
                    &mut codes[..e],
                    &mut scales[..2 * e.div_ceil(64)],
                );
            }
        });
        let t_pack = time(reps, || {
            for c in &chunks {
                (k.pack_codes)(8, &codes[..c.len() / isz], &mut packed);
            }
        });
        let t_unpack = time(reps, || {
            for c in &chunks {
                (k.unpack_codes)(8, &packed, &mut codes[..c.len() / isz]);
            }
        });
        let t_bdec = time(reps, || {
            for c in &chunks {
                let e = c.len() / isz;
                (k.block_decode)(&fmt, dtype, &scales, &codes[..e], &mut out[..c.len()]);
            }
        });
        // The same two with the codes packed as they go (the `fast` profile's encoder and
        // decoder).
        let t_benc_packed = time(reps, || {
            for c in &chunks {
                let e = c.len() / isz;
                (k.block_encode_packed)(
                    &fmt,
                    Rounding::Nearest,
                    0,
                    dtype,
                    c,
                    &mut packed[..e],
                    &mut scales[..2 * e.div_ceil(64)],
                );
            }
        });
        let t_bdec_packed = time(reps, || {
            for c in &chunks {
                let e = c.len() / isz;
                (k.block_decode_packed)(&fmt, dtype, &scales, &packed[..e], &mut out[..c.len()]);
            }
        });
        let t_stats = time(reps, || {
            for c in &chunks {
                std::hint::black_box((k.stats)(dtype, c));
            }
        });
        let args = QuantArgs {
            dtype,
            rounding: Rounding::Nearest,
            base: 0,
            max_abs: f64::INFINITY,
            lane0: 0,
            err_exp: iota_codec::quant::uniform::err_exp(step),
        };
        let t_uenc = time(reps, || {
            for c in &chunks {
                extra.clear();
                let mut err = ErrSum::default();
                (k.uniform_encode)(
                    &args,
                    c,
                    Step::One(step),
                    &mut symbols[..c.len() / isz],
                    &mut extra,
                    &mut err,
                );
            }
        });
        let t_hist = time(reps, || {
            for c in &chunks {
                freq::histogram(&symbols[..c.len() / isz], &mut counts);
            }
        });
        // The rANS stage of the last chunk, repeated.
        let last = chunks.len() - 1;
        let e = chunks[last].len() / isz;
        extra.clear();
        (k.uniform_encode)(
            &args,
            chunks[last],
            Step::One(step),
            &mut symbols[..e],
            &mut extra,
            &mut ErrSum::default(),
        );
        extra.finish();
        freq::histogram(&symbols[..e], &mut counts);
        let freqs = freq::normalize(&counts, 11).unwrap();
        let enc = rans::EncTable::new(&freqs, 11);
        let dec = rans::build_dec_table(&freqs, 11);
        let mut words = vec![0u16; e];
        let mut states = [rans::RANS_L; 32];
        let start = (k.rans_encode)(
            &symbols[..e],
            &enc.rcp,
            &enc.info,
            11,
            &mut states,
            &mut words,
        );
        let bytes: Vec<u8> = words[start..]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let present = counts.iter().filter(|&&c| c > 0).count();
        let t_renc = time(reps, || {
            for _ in &chunks {
                let mut st = [rans::RANS_L; 32];
                (k.rans_encode)(&symbols[..e], &enc.rcp, &enc.info, 11, &mut st, &mut words);
            }
        }) * (n / chunks.len() as f64)
            / e as f64;
        let mut syms2 = vec![0u16; e];
        let t_rdec = time(reps, || {
            for _ in &chunks {
                let mut st = states;
                std::hint::black_box((k.rans_decode)(&bytes, &dec, 11, &mut st, &mut syms2));
            }
        }) * (n / chunks.len() as f64)
            / e as f64;
        let t_xc = time(reps, || {
            for _ in &chunks {
                std::hint::black_box((k.extra_count)(&symbols[..e]));
            }
        });
        let escaped = vec![0u8; symbols[..e].iter().filter(|&&s| s == uniform::ESC).count() * isz];
        let t_udec = time(reps, || {
            for _ in &chunks {
                let mut r = BitReader::new(&extra.bytes);
                (k.uniform_decode)(
                    dtype,
                    &symbols[..e],
                    Step::One(step),
                    &mut r,
                    &mut Escaped::new(&escaped, isz),
                    &mut out[..e * isz],
                )
                .unwrap();
            }
        });
        println!(
            "{:>7}: fast: block_encode {:.3}  pack {:.3}  unpack {:.3}  block_decode {:.3}  \
             (packed as they go: encode {:.3}  decode {:.3})",
            level.name(),
            per(t_benc),
            per(t_pack),
            per(t_unpack),
            per(t_bdec),
            per(t_benc_packed),
            per(t_bdec_packed)
        );
        println!(
            "         uniform: stats {:.3}  encode {:.3}  histogram {:.3}  rans_encode {:.3} ({present} symbols)  rans_decode {:.3}  extra_count {:.3}  decode {:.3}",
            per(t_stats),
            per(t_uenc),
            per(t_hist),
            per(t_renc),
            per(t_rdec),
            per(t_xc),
            per(t_udec)
        );
    }
}
