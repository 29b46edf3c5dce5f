//! Per-kernel single-thread timings at every SIMD level this CPU supports, on the chunks of
//! the lossless profile (2^18 elements, 32 rANS lanes, 11-bit probabilities).
//!
//! `cargo run --release --example kernels -- [FILE.npy]` (float32, float16 or
//! int16-as-bfloat16), or with no file on synthetic Gaussian bfloat16 (8 MB). Prints the
//! median nanoseconds per element of each kernel.

use std::time::Instant;

use iota_codec::entropy::{freq, rans};
use iota_codec::simd::{self, FloatSplit, Kernels};
use iota_codec::DType;

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
        let mut prep = vec![];
        for c in &chunks {
            let m = c.len() / fs.bytes;
            let mut syms = vec![0u16; m];
            let mut counts = vec![0u32; alphabet];
            let or = (k.split)(fs, c, &mut syms, &mut counts);
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
                counts.fill(0);
                (k.split)(fs, c, &mut syms[..m], &mut counts);
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
        let t_dec = time(reps, || {
            for p in &prep {
                let mut st = p.4;
                std::hint::black_box((k.rans_decode)(
                    &p.5,
                    &p.3,
                    11,
                    &mut st,
                    &mut syms[..p.0.len()],
                ));
            }
        });
        let t_merge = time(reps, || {
            for p in &prep {
                let m = p.0.len();
                (k.merge)(fs, &p.0, &p.6, p.1, &mut out[..m * fs.bytes]);
            }
        });
        let ns: Vec<f64> = [t_split, t_pack, t_enc, t_dec, t_merge]
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
            "{:>7}: split {:.3}  pack {:.3}  rans_encode {:.3}  rans_decode {:.3}  merge {:.3}{speedup}",
            level.name(),
            ns[0],
            ns[1],
            ns[2],
            ns[3],
            ns[4]
        );
        if base.is_none() {
            base = Some(ns);
        }
    }
}
