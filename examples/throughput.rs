//! Single-thread encode/decode throughput of a profile on a raw tensor file.
//!
//! `cargo run --release --example throughput -- FILE.npy [repeat] [profile]` (a little-endian
//! float32, float16 or int16-as-bfloat16 `.npy`; the profile defaults to lossless), or with
//! no file (or `-`) on synthetic Gaussian bfloat16.

use std::time::Instant;

use iota_codec::{Codec, DType, Profile};

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
        // Sum of uniforms: roughly Gaussian.
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (data, dtype) = match args.get(1).map(String::as_str) {
        Some(p) if p != "-" => load_npy(p),
        _ => (synthetic(1 << 24), DType::BF16),
    };
    let repeat: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(9);
    let profile = Profile::parse(args.get(3).map(String::as_str).unwrap_or("lossless")).unwrap();
    let n = (data.len() / dtype.itemsize()) as u64;
    let codec = Codec {
        threads: 1,
        ..Codec::new(profile)
    };
    let mut enc = vec![];
    let mut dec = vec![];
    let mut dec_into = vec![];
    let mut frame = vec![];
    // `decode` allocates its output; `decode_into` fills a buffer reused across runs, which
    // leaves out the cost of faulting in fresh pages (large on some virtual machines).
    let mut out = vec![0u8; data.len()];
    for _ in 0..repeat {
        let t = Instant::now();
        frame = codec.encode(&data, dtype, &[n]).unwrap();
        enc.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = codec.decode(&frame).unwrap();
        dec.push(t.elapsed().as_secs_f64());
        let lossless = profile == Profile::Lossless;
        assert!(!lossless || back.data == data);
        let t = Instant::now();
        codec.decode_into(&frame, &mut out).unwrap();
        dec_into.push(t.elapsed().as_secs_f64());
        assert!(out == back.data);
    }
    enc.sort_by(f64::total_cmp);
    dec.sort_by(f64::total_cmp);
    dec_into.sort_by(f64::total_cmp);
    let gb = data.len() as f64 / 1e9;
    println!(
        "{} {dtype} {} MB  level {}  ratio {:.4}  encode {:.2} GB/s  decode {:.2} GB/s  \
         decode_into {:.2} GB/s (medians of {repeat})",
        profile.name(),
        data.len() / 1_000_000,
        iota_codec::simd::kernels().level.name(),
        data.len() as f64 / frame.len() as f64,
        gb / enc[repeat / 2],
        gb / dec[repeat / 2],
        gb / dec_into[repeat / 2],
    );
}
