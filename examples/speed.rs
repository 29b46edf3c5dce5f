//! The speed targets of the codec, measured in one run: one core, a 64 MiB bfloat16 tensor of
//! activations, medians, every speed against `memcpy` and zstd level 3 measured in the same
//! run, 1 against 2 threads, and the break-even link speeds of each profile.
//!
//! ```text
//! cargo run --release --example speed -- [--npy FILE] [--reps N] [--mib M] [--profiles P,Q]
//!     [--chunk ELEMS] [--row ELEMS]
//! ```
//!
//! The tensor is synthetic by default: activations of shape (tokens, 4096) drawn
//! deterministically with a log-normal scale per channel, a few outlier channels 20-60x
//! larger, a log-normal scale per token, and Gaussian values, rounded to bfloat16. `--npy`
//! tiles a real tensor instead (bfloat16 as `<i2`/`<u2`, or float32/float16 rounded to
//! bfloat16). Speeds count uncompressed tensor bytes for encode and decode alike. `--profiles`
//! measures only the profiles named (the targets of the others are then not checked);
//! `--chunk` sets the elements per chunk (default the codec's); `--row` the tensor's last
//! dimension (default 4096; it must divide the element count), which the error-bounded
//! profiles' row contexts cut the chunks by (give a tiled tensor its own row length).
//!
//! Encode goes into a reused `Vec` ([`Codec::encode_into`]) and decode into a reused buffer
//! ([`Codec::decode_into`]); the "fresh" figures use [`Codec::encode`] and [`Codec::decode`],
//! which allocate their output every time and so also pay for faulting in new pages (large
//! on some virtual machines). The link model is that of `iota_codec.bench.links`: serial
//! `L* = (S - C) / (E + D)`; overlapped, the root of
//! `max(E, C/L, D) + (E + C/L + D - max) / n = S/L` for `n` chunks.

use std::time::Instant;

use iota_codec::{Codec, DType, Profile};

const GIB: f64 = 1e9;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Synthetic activations of shape (n / 4096, 4096) as bfloat16 bytes.
fn synthetic(n: usize) -> Vec<u8> {
    const CH: usize = 4096;
    let mut rng = Rng(0x1071_A000);
    let chan: Vec<f64> = (0..CH)
        .map(|_| {
            let s = (0.5 * rng.normal()).exp();
            if rng.uniform() < 0.004 {
                s * (20.0 + 40.0 * rng.uniform())
            } else {
                s
            }
        })
        .collect();
    let mut out = Vec::with_capacity(2 * n);
    let mut tok = 1.0;
    for i in 0..n {
        if i % CH == 0 {
            tok = (0.3 * rng.normal()).exp();
        }
        let x = (rng.normal() * chan[i % CH] * tok) as f32;
        out.extend_from_slice(&to_bf16(x).to_le_bytes());
    }
    out
}

/// A `.npy` tensor as bfloat16 bytes, tiled to `n` elements.
fn tiled_npy(path: &str, n: usize) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read the .npy file");
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not an .npy file");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let body = &bytes[10 + hlen..];
    let bf16: Vec<u8> = if header.contains("'<i2'") || header.contains("'<u2'") {
        body.to_vec()
    } else if header.contains("'<f4'") {
        body.chunks_exact(4)
            .flat_map(|b| to_bf16(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes())
            .collect()
    } else if header.contains("'<f2'") {
        body.chunks_exact(2)
            .flat_map(|b| {
                let h = u16::from_le_bytes([b[0], b[1]]);
                to_bf16(iota_codec::quant::convert::f16_to_f32(h)).to_le_bytes()
            })
            .collect()
    } else {
        panic!("unsupported dtype in {header}")
    };
    assert!(!bf16.is_empty(), "empty tensor");
    bf16.iter().copied().cycle().take(2 * n).collect()
}

/// Median seconds of `f` over `reps` runs (after one warm-up run).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
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

/// Break-even link speed in bit/s (`None`: coding never wins), as
/// `iota_codec.bench.links.break_even_bps`.
fn break_even(s: f64, c: f64, e: f64, d: f64, n: usize, overlapped: bool) -> Option<f64> {
    if c >= s {
        return None;
    }
    if e + d <= 0.0 {
        return Some(f64::INFINITY);
    }
    if !overlapped || n <= 1 {
        return Some(8.0 * (s - c) / (e + d));
    }
    let n = n as f64;
    let (big, small) = (e.max(d), e.min(d));
    let mut u = (big + small / n) / (s - c / n);
    if c * u >= big {
        u = (e + d) / (n * (s - c));
    }
    Some(8.0 / u)
}

struct Row {
    profile: Profile,
    ratio: f64,
    coded: usize,
    enc: f64,
    dec: f64,
    enc_fresh: f64,
    dec_fresh: f64,
    enc2: f64,
    dec2: f64,
    chunks: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = arg(&args, "--reps").map_or(11, |s| s.parse().unwrap());
    let mib: usize = arg(&args, "--mib").map_or(64, |s| s.parse().unwrap());
    let chunk: Option<u64> = arg(&args, "--chunk").map(|s| s.parse().unwrap());
    let profiles: Vec<Profile> = match arg(&args, "--profiles") {
        Some(list) => list
            .split(',')
            .map(|p| Profile::parse(p).unwrap_or_else(|e| panic!("--profiles: {e}")))
            .collect(),
        None => Profile::ALL.to_vec(),
    };
    let n = mib << 19;
    let (data, source) = match arg(&args, "--npy") {
        Some(p) => (tiled_npy(&p, n), format!("{p}, tiled")),
        None => (synthetic(n), "synthetic activations".to_string()),
    };
    let size = data.len() as f64;
    let row: usize = arg(&args, "--row").map_or(4096, |s| s.parse().unwrap());
    assert!(
        row > 0 && n.is_multiple_of(row),
        "--row must divide the {n} elements"
    );
    let shape = [(n / row) as u64, row as u64];
    let level = iota_codec::simd::kernels().level.name();
    println!(
        "speed: {mib} MiB bfloat16 ({n} elements, {source}), level {level}, medians of {reps}"
    );

    // memcpy into a reused buffer.
    let mut copy = vec![0u8; data.len()];
    let t_memcpy = time(reps, || {
        copy.copy_from_slice(&data);
        std::hint::black_box(&copy);
    });
    let memcpy = size / t_memcpy;

    // zstd level 3, one thread, reused buffers.
    let mut zc = zstd::bulk::Compressor::new(3).unwrap();
    let mut zbuf = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    let t_zc = time(reps.min(5), || {
        zbuf.clear();
        zc.compress_to_buffer(&data, &mut zbuf).unwrap();
    });
    let mut zd = zstd::bulk::Decompressor::new().unwrap();
    let t_zd = time(reps, || {
        zd.decompress_to_buffer(&zbuf, &mut copy[..]).unwrap();
    });
    assert!(copy == data);
    let (zstd_c, zstd_d) = (size / t_zc, size / t_zd);
    println!(
        "memcpy {:.2} GB/s; zstd-3 ratio {:.3}, compress {:.3} GB/s, decompress {:.3} GB/s \
         (one thread, reused buffers)",
        memcpy / GIB,
        size / zbuf.len() as f64,
        zstd_c / GIB,
        zstd_d / GIB
    );

    let mut rows = Vec::new();
    for &profile in &profiles {
        let codec = |threads| Codec {
            threads,
            chunk_elems: chunk.unwrap_or(Codec::DEFAULT_CHUNK_ELEMS),
            ..Codec::new(profile)
        };
        let one = codec(1);
        let two = codec(2);
        let mut frame = Vec::new();
        let mut out = vec![0u8; data.len()];
        let enc = time(reps, || {
            one.encode_into(&data, DType::BF16, &shape, &mut frame)
                .unwrap()
        });
        let dec = time(reps, || {
            one.decode_into(&frame, &mut out).unwrap();
        });
        if profile == Profile::Lossless {
            assert!(out == data, "lossless round trip");
        }
        let enc_fresh = time(reps.min(5), || {
            std::hint::black_box(one.encode(&data, DType::BF16, &shape).unwrap());
        });
        let dec_fresh = time(reps.min(5), || {
            std::hint::black_box(one.decode(&frame).unwrap());
        });
        let mut frame2 = Vec::new();
        let enc2 = time(reps, || {
            two.encode_into(&data, DType::BF16, &shape, &mut frame2)
                .unwrap()
        });
        assert!(frame2 == frame, "output depends on the thread count");
        let dec2 = time(reps, || {
            two.decode_into(&frame, &mut out).unwrap();
        });
        let chunks = iota_codec::info(&frame).unwrap().chunk_bytes.len();
        rows.push(Row {
            profile,
            ratio: size / frame.len() as f64,
            coded: frame.len(),
            enc,
            dec,
            enc_fresh,
            dec_fresh,
            enc2,
            dec2,
            chunks,
        });
    }

    println!();
    println!(
        "{:<9} {:>6} | {:>14} {:>14} | {:>8} {:>8} | {:>8} {:>8} | {:>7} {:>7}",
        "profile",
        "ratio",
        "encode GB/s",
        "decode GB/s",
        "enc/mcp",
        "dec/mcp",
        "enc/zstd",
        "dec/zstd",
        "2T enc",
        "2T dec"
    );
    println!(
        "{:<9} {:>6} | {:>14} {:>14} | {:>8} {:>8} | {:>8} {:>8} | {:>7} {:>7}",
        "", "", "(fresh)", "(fresh)", "", "", "", "", "x 1T", "x 1T"
    );
    for r in &rows {
        println!(
            "{:<9} {:>6.3} | {:>6.3} ({:>5.3}) {:>6.3} ({:>5.3}) | {:>7.1}% {:>7.1}% | {:>7.2}x {:>7.2}x | {:>6.2}x {:>6.2}x",
            r.profile.name(),
            r.ratio,
            size / r.enc / GIB,
            size / r.enc_fresh / GIB,
            size / r.dec / GIB,
            size / r.dec_fresh / GIB,
            100.0 * size / r.enc / memcpy,
            100.0 * size / r.dec / memcpy,
            size / r.enc / zstd_c,
            size / r.dec / zstd_d,
            r.enc / r.enc2,
            r.dec / r.dec2,
        );
    }

    println!();
    println!(
        "break-even link speeds, one thread, reused buffers (below them coding wins; serial \
         L* = (S - C)/(E + D), overlapped = streaming chunk by chunk):"
    );
    let gbit = |v: Option<f64>| match v {
        None => "never".to_string(),
        Some(v) if v.is_infinite() => "always".to_string(),
        Some(v) => format!("{:.2} Gbit/s", v / 1e9),
    };
    for r in &rows {
        let s = break_even(size, r.coded as f64, r.enc, r.dec, r.chunks, false);
        let o = break_even(size, r.coded as f64, r.enc, r.dec, r.chunks, true);
        println!(
            "  {:<9} serial {:>14}   overlapped ({} chunks) {:>14}",
            r.profile.name(),
            gbit(s),
            r.chunks,
            gbit(o)
        );
    }

    println!();
    println!("speed targets:");
    let row = |p: Profile| rows.iter().find(|r| r.profile == p);
    let check = |name: String, ok: bool| {
        println!("  [{}] {name}", if ok { "met" } else { "NOT met" });
    };
    let fast = row(Profile::Fast);
    for (what, t) in fast
        .iter()
        .flat_map(|f| [("encode", f.enc), ("decode", f.dec)])
    {
        let pct = 100.0 * size / t / memcpy;
        check(
            format!("fast {what} >= 50% of memcpy: {pct:.1}%"),
            pct >= 50.0,
        );
    }
    for p in [Profile::Lossless, Profile::Balanced, Profile::Max] {
        let Some(r) = row(p) else { continue };
        let (e, d) = (size / r.enc, size / r.dec);
        check(
            format!("{} encode >= 1.5 GB/s: {:.3} GB/s", p.name(), e / GIB),
            e >= 1.5e9,
        );
        check(
            format!("{} decode >= 2 GB/s: {:.3} GB/s", p.name(), d / GIB),
            d >= 2e9,
        );
        check(
            format!(
                "{} >= 3x zstd-3: encode {:.2}x, decode {:.2}x",
                p.name(),
                e / zstd_c,
                d / zstd_d
            ),
            e >= 3.0 * zstd_c && d >= 3.0 * zstd_d,
        );
    }
    for r in &rows {
        let (e, d) = (r.enc / r.enc2, r.dec / r.dec2);
        check(
            format!(
                "{} 2 threads >= 1.8x 1 thread: encode {e:.2}x, decode {d:.2}x",
                r.profile.name()
            ),
            e >= 1.8 && d >= 1.8,
        );
    }
    for (p, overlapped, want) in [
        (Profile::Fast, false, 5e9),
        (Profile::Fast, true, 10e9),
        (Profile::Balanced, false, 2.5e9),
    ] {
        let Some(r) = row(p) else { continue };
        let v = break_even(size, r.coded as f64, r.enc, r.dec, r.chunks, overlapped).unwrap_or(0.0);
        check(
            format!(
                "{} pays below {} Gbit/s {}: break-even {:.2} Gbit/s",
                p.name(),
                want / 1e9,
                if overlapped {
                    "with streaming overlap"
                } else {
                    "serially"
                },
                v / 1e9
            ),
            v >= want,
        );
    }
}
