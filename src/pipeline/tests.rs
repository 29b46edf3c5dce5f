use proptest::prelude::*;

use crate::{Codec, ContainerHint, DType, ErrorKind, Profile};

fn codec(chunk: u64, threads: usize) -> Codec {
    Codec {
        chunk_elems: chunk,
        threads,
        ..Codec::new(Profile::Lossless)
    }
}

/// Pseudo-random activation-like element bytes: roughly Gaussian values of `dtype`.
fn activations(dtype: DType, n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(n * dtype.itemsize());
    for _ in 0..n {
        let mut s = 0.0f32;
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s += (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        let bits = s.to_bits();
        match dtype {
            DType::F32 => out.extend_from_slice(&bits.to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&((bits >> 16) as u16).to_le_bytes()),
            DType::F16 => {
                // Good enough for a test: exponent rebias with flush to zero.
                let e = ((bits >> 23) & 0xff) as i32 - 127 + 15;
                let h = if e <= 0 {
                    0
                } else {
                    ((bits >> 16) & 0x8000) | ((e as u32) << 10) | ((bits >> 13) & 0x3ff)
                };
                out.extend_from_slice(&(h as u16).to_le_bytes());
            }
        }
    }
    out
}

#[test]
fn round_trips_every_dtype_and_chunking() {
    for dtype in DType::ALL {
        for n in [0usize, 1, 2, 31, 513, 10_000, 100_001] {
            let data = activations(dtype, n, n as u64);
            for chunk in [1u64, 7, 512, 4096, 1 << 18] {
                if n > 20_000 && chunk < 512 {
                    continue;
                }
                let c = codec(chunk, 1);
                let frame = c.encode(&data, dtype, &[n as u64]).unwrap();
                let t = c.decode(&frame).unwrap();
                assert_eq!(t.data, data, "{dtype} n={n} chunk={chunk}");
                assert_eq!(t.shape, vec![n as u64]);
                assert_eq!(t.dtype, dtype);
            }
        }
    }
}

#[test]
fn output_is_identical_for_any_thread_count() {
    let data = activations(DType::BF16, 300_000, 1);
    let frames: Vec<Vec<u8>> = [1, 2, 3, 0]
        .iter()
        .map(|&t| {
            codec(20_000, t)
                .encode(&data, DType::BF16, &[300, 1000])
                .unwrap()
        })
        .collect();
    assert!(frames.windows(2).all(|w| w[0] == w[1]));
    for t in [1, 2, 5] {
        assert_eq!(codec(1, t).decode(&frames[0]).unwrap().data, data);
    }
}

#[test]
fn incompressible_chunks_are_stored_with_bounded_overhead() {
    let mut x = 1u64;
    let data: Vec<u8> = (0..100_000)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect();
    let c = codec(10_000, 1);
    let frame = c.encode(&data, DType::F16, &[50_000]).unwrap();
    // Header, then per chunk: an 8-byte record and a 1-byte mode.
    assert!(frame.len() <= data.len() + 64 + 9 * 5, "{}", frame.len());
    assert_eq!(c.decode(&frame).unwrap().data, data);
}

#[test]
fn f32_from_bf16_drops_zero_mantissa_bits() {
    let bf = activations(DType::BF16, 10_000, 3);
    let f32: Vec<u8> = bf
        .chunks(2)
        .flat_map(|b| (u32::from(u16::from_le_bytes([b[0], b[1]])) << 16).to_le_bytes())
        .collect();
    let c = codec(1 << 18, 1);
    let a = c.encode(&bf, DType::BF16, &[10_000]).unwrap();
    let b = c.encode(&f32, DType::F32, &[10_000]).unwrap();
    // The float32 frame should cost almost nothing more than the bfloat16 one.
    assert!(b.len() < a.len() + 64, "{} vs {}", b.len(), a.len());
    assert_eq!(c.decode(&b).unwrap().data, f32);
}

#[test]
fn bad_arguments_are_invalid() {
    let c = codec(100, 1);
    let e = c.encode(&[0u8; 6], DType::F32, &[2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = c.encode(&[], DType::F32, &[u64::MAX, 2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = codec(0, 1).encode(&[0u8; 8], DType::F32, &[2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let frame = c.encode(&[0u8; 8], DType::F32, &[2]).unwrap();
    let e = c.decode_into(&frame, &mut [0u8; 7]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn hint_is_carried() {
    let c = codec(100, 1);
    let f = c
        .encode_with_hint(&[0u8; 4], DType::BF16, &[2], ContainerHint::Torch)
        .unwrap();
    assert_eq!(c.decode(&f).unwrap().hint, ContainerHint::Torch);
    assert_eq!(crate::info(&f).unwrap().hint, ContainerHint::Torch);
}

// ---- golden frames (tests/golden/v*/, shared with the Python tests) ----

struct Golden {
    name: String,
    frame: Vec<u8>,
    /// The expected element bytes, from the `.npy` beside the frame.
    data: Vec<u8>,
}

fn npy_payload(bytes: &[u8]) -> Vec<u8> {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    bytes[start + len..].to_vec()
}

fn goldens() -> Vec<Golden> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out = vec![];
    for v in 1..=crate::FORMAT_VERSION {
        let dir = root.join(format!("v{v}"));
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("golden frames for v{v} missing in {dir:?}: {e}"))
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "iota").then(|| p.file_stem().unwrap().to_owned())
            })
            .collect();
        names.sort();
        for n in names {
            let n = n.to_str().unwrap().to_owned();
            out.push(Golden {
                frame: std::fs::read(dir.join(format!("{n}.iota"))).unwrap(),
                data: npy_payload(&std::fs::read(dir.join(format!("{n}.npy"))).unwrap()),
                name: n,
            });
        }
    }
    assert!(
        out.len() >= 10,
        "expected the golden frames, found {}",
        out.len()
    );
    out
}

#[test]
fn goldens_decode() {
    // Session frames (`<group>_<step>`, sorted by step within their group) decode through a
    // receiving session with the settings of tests/golden/generate.py's SESSION.
    let mut session: Option<(String, super::session::Session)> = None;
    for g in goldens() {
        if let Some((group, _)) = g
            .name
            .rsplit_once('_')
            .filter(|_| g.name.contains("_session_"))
        {
            if session.as_ref().is_none_or(|s| s.0 != group) {
                let config = super::session::SessionConfig {
                    refresh: 1,
                    decay: 0.5,
                    ..super::session::SessionConfig::new(77, 0.05)
                };
                session = Some((
                    group.to_owned(),
                    super::session::Session::new(config).unwrap(),
                ));
            }
            let t = session.as_mut().unwrap().1.decode(&g.frame).unwrap();
            assert_eq!(t.data, g.data, "{}", g.name);
            continue;
        }
        let t = Codec::default().decode(&g.frame).unwrap();
        assert_eq!(t.data, g.data, "{}", g.name);
    }
}

#[test]
fn goldens_every_truncation_and_bit_flip_fails() {
    let c = Codec::default();
    for g in goldens() {
        for n in 0..g.frame.len() {
            assert!(c.decode(&g.frame[..n]).is_err(), "{} prefix {n}", g.name);
        }
        let mut f = g.frame.clone();
        for bit in 0..f.len() * 8 {
            f[bit / 8] ^= 1 << (bit % 8);
            let e = c.decode(&f).expect_err(&format!("{} bit {bit}", g.name));
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::CorruptFrame
                        | ErrorKind::ChecksumMismatch
                        | ErrorKind::UnsupportedVersion
                        | ErrorKind::LimitExceeded
                ) || (g.name.contains("session") && e.kind() == ErrorKind::SessionMismatch),
                "{} bit {bit}: {e:?}",
                g.name
            );
            f[bit / 8] ^= 1 << (bit % 8);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_bits_round_trip(
        words in proptest::collection::vec(any::<u32>(), 0..3000),
        dtype_i in 0usize..3,
        chunk in 1u64..5000,
    ) {
        let dtype = DType::ALL[dtype_i];
        let mut data: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        data.truncate(data.len() / dtype.itemsize() * dtype.itemsize());
        let n = (data.len() / dtype.itemsize()) as u64;
        let c = codec(chunk, 1);
        let frame = c.encode(&data, dtype, &[n]).unwrap();
        prop_assert_eq!(c.decode(&frame).unwrap().data, data);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Codec::default().decode(&bytes);
        // Behind a valid magic and version, too.
        let mut b = vec![0x89, b'I', b'O', b'T', 1];
        b.extend_from_slice(&bytes);
        let _ = Codec::default().decode(&b);
    }
}

// ---- streaming ----

fn stream_decode(c: &Codec, pieces: &[&[u8]]) -> crate::Result<Vec<u8>> {
    let mut d = c.stream_decoder();
    let mut out = Vec::new();
    for p in pieces {
        d.feed(p)?;
        if let Some(n) = d.output_len() {
            out.resize(n, 0);
            d.decode_available(&mut out)?;
        }
    }
    d.finish()?;
    Ok(out)
}

#[test]
fn stream_pieces_concatenate_to_the_frame() {
    let data = activations(DType::BF16, 100_000, 4);
    for threads in [1, 2, 0] {
        for chunk in [1000u64, 30_000, 1 << 20] {
            let c = codec(chunk, threads);
            let whole = c.encode(&data, DType::BF16, &[100_000]).unwrap();
            let pieces: Vec<Vec<u8>> = c
                .encode_stream(&data, DType::BF16, &[100_000])
                .unwrap()
                .collect();
            assert_eq!(
                pieces.len(),
                1 + 100_000usize.div_ceil(chunk.min(100_000) as usize)
            );
            assert_eq!(pieces.concat(), whole);
        }
    }
}

#[test]
fn stream_decoder_takes_any_split() {
    let data = activations(DType::F16, 50_001, 5);
    let c = codec(4096, 2);
    let frame = c.encode(&data, DType::F16, &[50_001]).unwrap();
    // One byte at a time, irregular pieces, and everything at once.
    let bytes: Vec<&[u8]> = frame.chunks(1).collect();
    assert_eq!(stream_decode(&c, &bytes).unwrap(), data);
    let mut pieces = vec![];
    let (mut at, mut k) = (0usize, 1usize);
    while at < frame.len() {
        let end = (at + k * 97 % 5000 + 1).min(frame.len());
        pieces.push(&frame[at..end]);
        at = end;
        k += 1;
    }
    assert_eq!(stream_decode(&c, &pieces).unwrap(), data);
    assert_eq!(stream_decode(&c, &[&frame]).unwrap(), data);
}

#[test]
fn stream_decoder_reports_progress_as_chunks_arrive() {
    let data = activations(DType::F32, 10_000, 6);
    let c = codec(1000, 1);
    let pieces: Vec<Vec<u8>> = c
        .encode_stream(&data, DType::F32, &[10_000])
        .unwrap()
        .collect();
    let mut d = c.stream_decoder();
    d.feed(&pieces[0]).unwrap();
    assert_eq!(d.header().unwrap().shape, vec![10_000]);
    let mut out = vec![0u8; d.output_len().unwrap()];
    for (i, p) in pieces[1..].iter().enumerate() {
        assert_eq!(d.progress(), (i as u64, Some(10)));
        d.feed(p).unwrap();
        assert_eq!(d.decode_available(&mut out).unwrap(), 1);
        // The chunk is in place as soon as it arrived.
        assert_eq!(
            out[i * 4000..(i + 1) * 4000],
            data[i * 4000..(i + 1) * 4000]
        );
    }
    assert!(d.is_complete());
    d.finish().unwrap();
    assert!(d.feed(b"x").is_err());
}

#[test]
fn stream_decoder_refuses_bad_streams() {
    let data = activations(DType::BF16, 20_000, 7);
    let c = codec(5000, 1);
    let frame = c.encode(&data, DType::BF16, &[20_000]).unwrap();
    // Truncated: finish says so.
    let e = stream_decode(&c, &[&frame[..frame.len() - 1]]).unwrap_err();
    assert!(e.is_truncation(), "{e}");
    let e = stream_decode(&c, &[&frame[..10]]).unwrap_err();
    assert!(e.is_truncation(), "{e}");
    // Trailing bytes, a damaged chunk, garbage: errors.
    assert!(stream_decode(&c, &[&frame, b"!"]).is_err());
    let mut bad = frame.clone();
    bad[frame.len() / 2] ^= 4;
    assert_eq!(
        stream_decode(&c, &[&bad]).unwrap_err().kind(),
        ErrorKind::ChecksumMismatch
    );
    assert!(stream_decode(&c, &[b"not a frame at all"]).is_err());
    // The output limit applies as soon as the header is in.
    let tight = Codec {
        limits: crate::Limits {
            max_output_bytes: 1000,
            ..crate::Limits::default()
        },
        ..c.clone()
    };
    let e = stream_decode(&tight, &[&frame[..40]]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
}

#[test]
fn validation_rejects_values_after_decoding() {
    let mut vals: Vec<f32> = (0..10_000).map(|i| (i as f32).sin()).collect();
    vals[7321] = f32::INFINITY;
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let c = codec(1000, 2);
    let frame = c.encode(&data, DType::F32, &[10_000]).unwrap();
    // Off by default.
    assert_eq!(c.decode(&frame).unwrap().data, data);
    let strict = |reject_nonfinite, max_abs| Codec {
        limits: crate::Limits {
            validation: crate::validate::Validation {
                reject_nonfinite,
                max_abs,
            },
            ..crate::Limits::default()
        },
        ..c.clone()
    };
    let e = strict(true, None).decode(&frame).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RejectedValue);
    assert!(e.message().contains("element 7321"), "{e}");
    assert!(strict(false, Some(0.5)).decode(&frame).is_err());
    // The stream decoder checks each chunk as it lands.
    let mut d = strict(true, None).stream_decoder();
    d.feed(&frame).unwrap();
    let mut out = vec![0u8; d.output_len().unwrap()];
    assert_eq!(
        d.decode_available(&mut out).unwrap_err().kind(),
        ErrorKind::RejectedValue
    );
    vals[7321] = 0.0;
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let frame = c.encode(&data, DType::F32, &[10_000]).unwrap();
    assert_eq!(strict(true, Some(1.0)).decode(&frame).unwrap().data, data);
}

// ---- lossy modes ----

use crate::quant::convert;
use crate::{
    BlockSpec, Bound, BoundedSpec, Element, Mode, NonFinite, Rounding, ScaleFormat, StepScope,
};

/// Test data of `n` elements: 0 gaussian-ish, 1 heavy-tailed, 2 with outlier channels
/// (every 37th element of rows of 256 scaled by 40).
fn lossy_data(dtype: DType, n: usize, kind: u32, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f64 / (1u64 << 24) as f64
    };
    let mut out = Vec::with_capacity(n * dtype.itemsize());
    for i in 0..n {
        let g = (next() + next() + next() + next() - 2.0) * 1.7;
        let v = match kind {
            0 => g,
            // Gaussian over a random scale: heavy tails.
            1 => g / (next() * next() + 0.02),
            _ => {
                if (i % 256) % 37 == 0 {
                    g * 40.0
                } else {
                    g
                }
            }
        } as f32
            * 0.01;
        let bits = convert::to_bits_sat(dtype, v);
        if dtype.itemsize() == 4 {
            out.extend_from_slice(&bits.to_le_bytes());
        } else {
            out.extend_from_slice(&(bits as u16).to_le_bytes());
        }
    }
    out
}

fn values(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    (0..bytes.len() / dtype.itemsize())
        .map(|i| f64::from(convert::load(dtype, bytes, i)))
        .collect()
}

fn rel_rmse(dtype: DType, a: &[u8], b: &[u8]) -> f64 {
    let (x, y) = (values(dtype, a), values(dtype, b));
    let num: f64 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f64 = x.iter().map(|a| a * a).sum();
    (num / den).sqrt()
}

fn max_abs(dtype: DType, a: &[u8], b: &[u8]) -> f64 {
    let (x, y) = (values(dtype, a), values(dtype, b));
    x.iter()
        .zip(&y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

fn lossy(mode: Mode, chunk: u64, threads: usize) -> Codec {
    Codec {
        chunk_elems: chunk,
        threads,
        ..Codec::with_mode(mode)
    }
}

fn block_spec(element: Element, scale: ScaleFormat, block: usize) -> BlockSpec {
    BlockSpec {
        element,
        scale,
        block,
        entropy: false,
        rounding: Rounding::Nearest,
        nonfinite: NonFinite::Error,
    }
}

#[test]
fn block_formats_round_trip_with_bounded_error() {
    for dtype in DType::ALL {
        let data = lossy_data(dtype, 5000, 0, 1);
        for element in Element::ALL {
            for scale in ScaleFormat::ALL {
                for block in [16, 32, 100, 256] {
                    let mut spec = block_spec(element, scale, block);
                    let c = lossy(Mode::Block(spec), 1024, 1);
                    let frame = c.encode(&data, dtype, &[50, 100]).unwrap();
                    let t = c.decode(&frame).unwrap();
                    assert_eq!(t.shape, vec![50, 100]);
                    let e = rel_rmse(dtype, &data, &t.data);
                    // Coarse sanity: the finest formats err well under 1%, 2-bit codes less
                    // than their own step.
                    let limit = match element.bits() {
                        8 => 0.08,
                        4 => 0.3,
                        _ => 0.9,
                    };
                    assert!(e < limit, "{dtype} {element:?} {scale:?} {block}: {e}");
                    // The packed size is what the format says.
                    let payload = 5000 * element.bits() as usize / 8
                        + 5000usize.div_ceil(block).max(5) * scale.bytes();
                    assert!(frame.len() < payload + 200, "{}", frame.len());
                    // The entropy-coded variant decodes to the same values.
                    spec.entropy = true;
                    let c2 = lossy(Mode::Block(spec), 1024, 1);
                    let t2 = c2
                        .decode(&c2.encode(&data, dtype, &[50, 100]).unwrap())
                        .unwrap();
                    assert_eq!(t2.data, t.data, "{dtype} {element:?} {scale:?} {block}");
                }
            }
        }
    }
}

#[test]
fn block_output_does_not_depend_on_threads_or_chunks() {
    let data = lossy_data(DType::BF16, 100_000, 1, 2);
    for rounding in [Rounding::Nearest, Rounding::Stochastic { seed: 9 }] {
        let spec = BlockSpec {
            rounding,
            ..block_spec(Element::E4M3, ScaleFormat::E8M0, 32)
        };
        let frames: Vec<Vec<u8>> = [1, 2, 0]
            .iter()
            .map(|&t| {
                lossy(Mode::Block(spec), 8192, t)
                    .encode(&data, DType::BF16, &[100_000])
                    .unwrap()
            })
            .collect();
        assert!(frames.windows(2).all(|w| w[0] == w[1]));
        let a = Codec::default().decode(&frames[0]).unwrap().data;
        // Another chunk size (rounded to whole blocks): same decoded values.
        let f = lossy(Mode::Block(spec), 5000, 2)
            .encode(&data, DType::BF16, &[100_000])
            .unwrap();
        assert_eq!(crate::info(&f).unwrap().chunk_elems, 4992);
        assert_eq!(Codec::default().decode(&f).unwrap().data, a);
    }
}

#[test]
fn stochastic_rounding_is_unbiased_and_seeded() {
    // A constant that sits 30% of the way between two int4 codes of its block scale.
    let n = 1 << 16;
    let v = 5.3f32 / 7.0;
    let mut data = Vec::new();
    for i in 0..n {
        // Each block of 16 has one element at 1.0 to fix the scale at 1/7.
        let x = if i % 16 == 0 { 1.0f32 } else { v };
        data.extend_from_slice(&x.to_le_bytes());
    }
    let mk = |seed| {
        lossy(
            Mode::Block(BlockSpec {
                rounding: Rounding::Stochastic { seed },
                ..block_spec(Element::Int4, ScaleFormat::F16, 16)
            }),
            4096,
            0,
        )
    };
    let f1 = mk(1).encode(&data, DType::F32, &[n as u64]).unwrap();
    assert_eq!(f1, mk(1).encode(&data, DType::F32, &[n as u64]).unwrap());
    assert_ne!(f1, mk(2).encode(&data, DType::F32, &[n as u64]).unwrap());
    let y = values(DType::F32, &Codec::default().decode(&f1).unwrap().data);
    let picks: Vec<f64> = y
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 16 != 0)
        .map(|(_, &v)| v)
        .collect();
    let mean = picks.iter().sum::<f64>() / picks.len() as f64;
    let step = f64::from(convert::f16_to_f32(convert::f32_to_f16(1.0 / 7.0)));
    // Standard deviation of one draw is below step / 2.
    let sigma = step / 2.0 / (picks.len() as f64).sqrt();
    assert!((mean - f64::from(v)).abs() < 5.0 * sigma, "{mean} vs {v}");
    // Rounding to nearest is biased here by 0.3 steps.
    let y = values(
        DType::F32,
        &Codec::default()
            .decode(
                &lossy(
                    Mode::Block(block_spec(Element::Int4, ScaleFormat::F16, 16)),
                    4096,
                    0,
                )
                .encode(&data, DType::F32, &[n as u64])
                .unwrap(),
            )
            .unwrap()
            .data,
    );
    let mean_rne = y
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 16 != 0)
        .map(|(_, &v)| v)
        .sum::<f64>()
        / picks.len() as f64;
    assert!((mean_rne - f64::from(v)).abs() > 0.2 * step);
}

fn bounded(bound: Bound, scope: StepScope) -> Mode {
    Mode::Bounded(BoundedSpec {
        scope,
        ..BoundedSpec::new(bound)
    })
}

#[test]
fn error_bounds_hold() {
    for dtype in DType::ALL {
        for kind in 0..3 {
            let data = lossy_data(dtype, 40_000, kind, 3 + kind as u64);
            for eps in [0.001, 0.01, 0.03, 0.1, 0.5] {
                for scope in [StepScope::Global, StepScope::Channel, StepScope::Block(64)] {
                    let c = lossy(bounded(Bound::RelRmse(eps), scope), 16_384, 0);
                    let t = c
                        .decode(&c.encode(&data, dtype, &[160, 250]).unwrap())
                        .unwrap();
                    let e = rel_rmse(dtype, &data, &t.data);
                    assert!(e <= eps, "{dtype} kind {kind} {eps} {scope:?}: {e}");
                    if scope == StepScope::Global && eps >= 0.01 {
                        assert!(e > eps * 0.9, "{dtype} kind {kind} {eps}: only {e}");
                    }
                }
            }
            for m in [1e-4, 1e-3, 0.01, 0.3] {
                for rounding in [Rounding::Nearest, Rounding::Stochastic { seed: 5 }] {
                    let mode = Mode::Bounded(BoundedSpec {
                        rounding,
                        ..BoundedSpec::new(Bound::MaxAbs(m))
                    });
                    let c = lossy(mode, 16_384, 0);
                    let t = c
                        .decode(&c.encode(&data, dtype, &[40_000]).unwrap())
                        .unwrap();
                    let e = max_abs(dtype, &data, &t.data);
                    assert!(e <= m, "{dtype} kind {kind} max {m}: {e}");
                }
            }
            for bits in [1.0, 2.5, 4.0, 7.0] {
                let c = lossy(bounded(Bound::Bits(bits), StepScope::Global), 16_384, 0);
                let f = c.encode(&data, dtype, &[40_000]).unwrap();
                let got = f.len() as f64 * 8.0 / 40_000.0;
                assert!(got <= bits, "{dtype} kind {kind} bits {bits}: {got}");
                assert!(
                    got > bits - 0.35,
                    "{dtype} kind {kind} bits {bits}: only {got}"
                );
            }
        }
    }
}

/// A bfloat16 tensor of 4 x 17 whose magnitudes run from 1e-21 to 3.7e6 (found by the lossy
/// fuzzer): its error as a function of the step jumps (the spike lands on or off the grid),
/// and the step search once ran off to a factor of 3.8e28 on the channels' RMS, whose errors
/// the quantizer's sums (scaled by the largest step) lost entirely: a relative error of 1,
/// measured as 0, was accepted. The bound holds for every scope and rounding, on the tensor
/// and on copies scaled by powers of two.
#[test]
fn error_bounds_hold_on_a_spike_over_a_wide_range() {
    const BITS: [u16; 68] = [
        0xca60, 0x3a1b, 0xb679, 0xbc56, 0xc12a, 0xbc28, 0x3e50, 0xb61c, 0xbd7a, 0x3c18, 0xbc55,
        0xb0c0, 0x39d7, 0xb4be, 0x3c47, 0x38c5, 0x3b44, 0xb2cc, 0xbc18, 0x3200, 0x35c0, 0x3c85,
        0x3a43, 0x263c, 0x3ad4, 0x3852, 0x3298, 0x2b11, 0xb3ca, 0x397d, 0xbc38, 0xb908, 0x1d18,
        0xbddb, 0xb6f9, 0xc005, 0xb977, 0xbf40, 0x3ce1, 0x36f8, 0x37ce, 0x2fe3, 0x37c0, 0xbcdd,
        0x3b97, 0xb842, 0x3be3, 0x2d8e, 0xbfe5, 0xbd26, 0x3c83, 0xb061, 0xb654, 0x33c4, 0xb6cd,
        0xb85b, 0x2e8e, 0x309e, 0xc080, 0x388d, 0xac34, 0x4129, 0xa7ee, 0xb0be, 0x3dc7, 0x304a,
        0x315b, 0xb5f2,
    ];
    for k in [-60i32, 0, 40] {
        let data: Vec<u8> = BITS
            .iter()
            .flat_map(|&b| {
                let v = convert::bf16_to_f32(b) * (k as f32).exp2();
                (convert::to_bits_sat(DType::BF16, v) as u16).to_le_bytes()
            })
            .collect();
        for eps in [0.0085, 0.05, 0.3] {
            for scope in [StepScope::Global, StepScope::Channel, StepScope::Block(16)] {
                for rounding in [Rounding::Nearest, Rounding::Stochastic { seed: 7 }] {
                    let mode = Mode::Bounded(BoundedSpec {
                        scope,
                        rounding,
                        ..BoundedSpec::new(Bound::RelRmse(eps))
                    });
                    let c = lossy(mode, 96, 1);
                    let t = c.decode(&c.encode(&data, DType::BF16, &[4, 17]).unwrap());
                    let e = rel_rmse(DType::BF16, &data, &t.unwrap().data);
                    assert!(e <= eps, "x2^{k} {eps} {scope:?} {rounding:?}: {e}");
                }
            }
        }
    }
}

/// The error-bounded encoder codes a tensor scaled by `1e-30` or `1e30` as it codes the
/// tensor itself (the quantizer's `f32` partial error sums are scaled by the step): the bound
/// holds, nearly reached, and the frame is as small.
#[test]
fn error_bounds_hold_at_any_magnitude() {
    for dtype in [DType::BF16, DType::F32] {
        let base = lossy_data(dtype, 40_000, 2, 9);
        let scaled = |k: f32| -> Vec<u8> {
            (0..40_000)
                .flat_map(|i| {
                    let bits = convert::to_bits_sat(dtype, convert::load(dtype, &base, i) * k);
                    let b = bits.to_le_bytes();
                    b[..dtype.itemsize()].to_vec()
                })
                .collect()
        };
        let eps = 0.01;
        for scope in [StepScope::Global, StepScope::Channel, StepScope::Block(64)] {
            let c = lossy(bounded(Bound::RelRmse(eps), scope), 16_384, 0);
            let len1 = c.encode(&base, dtype, &[160, 250]).unwrap().len() as f64;
            for k in [1e-30f32, 1e30] {
                let data = scaled(k);
                let f = c.encode(&data, dtype, &[160, 250]).unwrap();
                let e = rel_rmse(dtype, &data, &c.decode(&f).unwrap().data);
                let what = format!("{dtype} {scope:?} x{k}");
                assert!(e <= eps && e > 0.9 * eps, "{what}: {e}");
                let len = f.len() as f64;
                assert!(
                    (len / len1 - 1.0).abs() < 0.02,
                    "{what}: {len} vs {len1} bytes"
                );
            }
        }
    }
}

#[test]
fn bounded_output_does_not_depend_on_threads() {
    let data = lossy_data(DType::BF16, 300_000, 2, 4);
    for rounding in [Rounding::Nearest, Rounding::Stochastic { seed: 3 }] {
        let mode = Mode::Bounded(BoundedSpec {
            rounding,
            ..BoundedSpec::new(Bound::RelRmse(0.02))
        });
        let frames: Vec<Vec<u8>> = [1, 2, 3, 0]
            .iter()
            .map(|&t| {
                lossy(mode, 30_000, t)
                    .encode(&data, DType::BF16, &[300_000])
                    .unwrap()
            })
            .collect();
        assert!(frames.windows(2).all(|w| w[0] == w[1]));
    }
}

#[test]
fn nonfinite_is_refused_or_kept() {
    for dtype in DType::ALL {
        let mut data = lossy_data(dtype, 3000, 0, 5);
        let specials: [u32; 3] = match dtype {
            DType::F32 => [0x7fc0_0001, 0xff80_0000, 0x7f80_0000],
            DType::F16 => [0x7e01, 0xfc00, 0x7c00],
            DType::BF16 => [0x7fc1, 0xff80, 0x7f80],
        };
        for (k, &b) in specials.iter().enumerate() {
            convert::store_bits(dtype, b, &mut data, 100 + 977 * k);
        }
        let modes = [
            Mode::Block(block_spec(Element::Int8, ScaleFormat::E8M0, 32)),
            bounded(Bound::RelRmse(0.01), StepScope::Global),
            bounded(Bound::MaxAbs(0.001), StepScope::Global),
            bounded(Bound::Bits(4.0), StepScope::Block(32)),
        ];
        for mode in modes {
            let e = lossy(mode, 1000, 1)
                .encode(&data, dtype, &[3000])
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NonFinite, "{mode:?}");
            assert!(
                e.message().contains("element 100 ") && e.message().contains("keep"),
                "{e}"
            );
            let keep = match mode {
                Mode::Block(b) => Mode::Block(BlockSpec {
                    nonfinite: NonFinite::Keep,
                    ..b
                }),
                Mode::Bounded(b) => Mode::Bounded(BoundedSpec {
                    nonfinite: NonFinite::Keep,
                    ..b
                }),
                Mode::Lossless => unreachable!(),
            };
            let c = lossy(keep, 1000, 1);
            let t = c.decode(&c.encode(&data, dtype, &[3000]).unwrap()).unwrap();
            for (k, &b) in specials.iter().enumerate() {
                assert_eq!(
                    convert::load_bits(dtype, &t.data, 100 + 977 * k),
                    b,
                    "{mode:?}"
                );
            }
        }
    }
}

#[test]
fn lossy_edge_cases() {
    for mode in [
        Mode::Block(block_spec(Element::E2M1, ScaleFormat::BF16, 16)),
        bounded(Bound::RelRmse(0.05), StepScope::Global),
        bounded(Bound::RelRmse(0.05), StepScope::Channel),
        bounded(Bound::MaxAbs(0.5), StepScope::Global),
        bounded(Bound::Bits(3.0), StepScope::Block(16)),
    ] {
        for dtype in DType::ALL {
            let c = lossy(mode, 100, 1);
            // Empty, scalar, all zeros (with a negative zero), extremes.
            let t = c.decode(&c.encode(&[], dtype, &[0, 5]).unwrap()).unwrap();
            assert!(t.data.is_empty() && t.shape == vec![0, 5]);
            let zeros = vec![0u8; 2000 * dtype.itemsize()];
            match c.encode(&zeros, dtype, &[2000]) {
                Ok(f) => assert_eq!(c.decode(&f).unwrap().data, zeros, "{mode:?}"),
                Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{mode:?}"),
            }
            let mut big = Vec::new();
            for i in 0..300u32 {
                let v = if i % 2 == 0 { 6e4f32 } else { -1e-7 };
                let b = convert::to_bits_sat(dtype, v);
                if dtype.itemsize() == 4 {
                    big.extend_from_slice(&b.to_le_bytes());
                } else {
                    big.extend_from_slice(&(b as u16).to_le_bytes());
                }
            }
            if let Ok(f) = c.encode(&big, dtype, &[300]) {
                let t = c.decode(&f).unwrap();
                assert!(
                    values(dtype, &t.data).iter().all(|v| v.is_finite()),
                    "{mode:?} {dtype}"
                );
            }
        }
    }
}

#[test]
fn lossy_goldens_and_hostile_payloads_never_panic() {
    // Mutate chunk payloads of lossy frames and re-seal the checksums, so the damage reaches
    // the stage decoders: they must return errors (or some output), never panic.
    let data = lossy_data(DType::F16, 3000, 2, 8);
    let modes = [
        Mode::Block(block_spec(Element::Int3, ScaleFormat::E8M0, 16)),
        Mode::Block(BlockSpec {
            entropy: true,
            nonfinite: NonFinite::Keep,
            ..block_spec(Element::E5M2, ScaleFormat::F16, 32)
        }),
        bounded(Bound::RelRmse(0.01), StepScope::Global),
        bounded(Bound::RelRmse(0.01), StepScope::Channel),
        bounded(Bound::MaxAbs(1e-4), StepScope::Global),
    ];
    for mode in modes {
        let c = lossy(mode, 1024, 1);
        let frame = c.encode(&data, DType::F16, &[30, 100]).unwrap();
        damage_first_chunk(&c, &frame, &format!("{mode:?}"));
    }
    // A chunk with row contexts (mode 2).
    let c = lossy(bounded(Bound::RelRmse(0.02), StepScope::Global), 1 << 14, 1);
    let frame = c
        .encode(&rows_of_scales(64, 7), DType::BF16, &[64, 512])
        .unwrap();
    assert_eq!(chunk_modes(&frame)[0], MODE_CONTEXTS);
    damage_first_chunk(&c, &frame, "row contexts");
}

/// Decodes `frame` with every prefix of its first chunk's payload (each must fail) and with
/// every seventh bit of it flipped (each must return, error or not), the checksums resealed.
fn damage_first_chunk(c: &Codec, frame: &[u8], what: &str) {
    let parsed = crate::pipeline::parse_frame(frame, &crate::Limits::default()).unwrap();
    let hdr = parsed.extent;
    let chunk0 = parsed.chunks[0].to_vec();
    let reseal = |payload: &[u8]| {
        let mut f = frame[..hdr.len].to_vec();
        crate::format::write_chunk(&mut f, hdr.checksum, 0, payload);
        for (i, p) in parsed.chunks.iter().enumerate().skip(1) {
            crate::format::write_chunk(&mut f, hdr.checksum, i as u64, p);
        }
        f
    };
    assert_eq!(reseal(&chunk0), frame);
    for n in 0..chunk0.len() {
        assert!(
            c.decode(&reseal(&chunk0[..n])).is_err(),
            "{what}: prefix {n}"
        );
    }
    for bit in (0..chunk0.len() * 8).step_by(7) {
        let mut p = chunk0.clone();
        p[bit / 8] ^= 1 << (bit % 8);
        let _ = c.decode(&reseal(&p));
    }
}

/// Decoding two chunks per task (their rANS streams together, as one thread does when it
/// has two chunks or more to decode) gives what decoding them one by one gives (as many
/// threads do, each with one chunk), for damaged payloads too: the same output, or the same
/// error.
#[test]
fn paired_decoding_matches_one_by_one() {
    let data = lossy_data(DType::BF16, 5000, 2, 3);
    let mut codecs = vec![codec(1024, 1)];
    for mode in [
        Mode::Block(block_spec(Element::Int4, ScaleFormat::BF16, 32)),
        Mode::Block(BlockSpec {
            entropy: true,
            ..block_spec(Element::Int4, ScaleFormat::BF16, 32)
        }),
        bounded(Bound::RelRmse(0.02), StepScope::Global),
        bounded(Bound::RelRmse(0.02), StepScope::Channel),
    ] {
        codecs.push(lossy(mode, 1024, 1));
    }
    for c in codecs {
        let many = Codec {
            threads: 8,
            ..c.clone()
        };
        let frame = c.encode(&data, DType::BF16, &[50, 100]).unwrap();
        let parsed = crate::pipeline::parse_frame(&frame, &crate::Limits::default()).unwrap();
        let hdr = parsed.extent;
        assert_eq!(parsed.chunks.len(), 5);
        let outcome = |c: &Codec, f: &[u8]| c.decode(f).map(|t| t.data).map_err(|e| e.to_string());
        assert_eq!(
            outcome(&c, &frame).unwrap(),
            outcome(&many, &frame).unwrap()
        );
        // Damage to chunk 0 or 1 (the first pair), or both, resealed so that it reaches the
        // decoders.
        let reseal = |bad: &[Option<Vec<u8>>]| {
            let mut f = frame[..hdr.len].to_vec();
            for (i, p) in parsed.chunks.iter().enumerate() {
                let p = bad.get(i).and_then(|b| b.as_deref()).unwrap_or(p);
                crate::format::write_chunk(&mut f, hdr.checksum, i as u64, p);
            }
            f
        };
        let (c0, c1) = (parsed.chunks[0].to_vec(), parsed.chunks[1].to_vec());
        let mut cases = vec![];
        for n in (0..c1.len()).step_by(37) {
            cases.push(vec![None, Some(c1[..n].to_vec())]);
        }
        for bit in (0..c0.len() * 8).step_by(97) {
            let mut p = c0.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            let mut q = c1.clone();
            let at = (bit / 8) % q.len();
            q[at] ^= 1 << (bit % 8);
            cases.push(vec![Some(p.clone()), None]);
            cases.push(vec![None, Some(q.clone())]);
            cases.push(vec![Some(p), Some(q)]);
        }
        let mut errors = 0;
        for bad in cases {
            let f = reseal(&bad);
            let (one, two) = (outcome(&many, &f), outcome(&c, &f));
            errors += usize::from(one.is_err());
            assert_eq!(two, one, "{:?}", c.mode);
        }
        assert!(errors > 0, "{:?}: no damage was caught", c.mode);
    }
}

/// A payload damaged past its checksum (resealed) fails with an error that names its chunk,
/// on one thread and on several.
#[test]
fn damaged_payload_errors_name_the_chunk() {
    let data = lossy_data(DType::BF16, 5000, 2, 3);
    for c in [
        codec(1024, 1),
        lossy(bounded(Bound::RelRmse(0.02), StepScope::Global), 1024, 1),
    ] {
        let frame = c.encode(&data, DType::BF16, &[50, 100]).unwrap();
        let parsed = crate::pipeline::parse_frame(&frame, &crate::Limits::default()).unwrap();
        let hdr = parsed.extent;
        for bad in [1usize, 3] {
            let p = parsed.chunks[bad];
            for cut in [0, 1, p.len() / 2, p.len() - 1] {
                let mut f = frame[..hdr.len].to_vec();
                for (i, q) in parsed.chunks.iter().enumerate() {
                    let q = if i == bad { &p[..cut] } else { q };
                    crate::format::write_chunk(&mut f, hdr.checksum, i as u64, q);
                }
                for threads in [1, 8] {
                    let c = Codec {
                        threads,
                        ..c.clone()
                    };
                    let e = c.decode(&f).unwrap_err();
                    assert_eq!(e.kind(), crate::ErrorKind::CorruptFrame);
                    let want = format!("chunk {bad}: ");
                    assert!(e.message().starts_with(&want), "{:?}: {e}", c.mode);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn lossy_round_trips(
        kind in 0u32..3,
        n in 1usize..5000,
        dtype_i in 0usize..3,
        chunk in 16u64..3000,
        which in 0usize..6,
        eps in 0.002f64..0.3,
    ) {
        let dtype = DType::ALL[dtype_i];
        let data = lossy_data(dtype, n, kind, n as u64);
        let mode = match which {
            0 => Mode::Block(block_spec(Element::ALL[n % 7], ScaleFormat::ALL[n % 3], 16 + n % 241)),
            1 => bounded(Bound::RelRmse(eps), StepScope::Global),
            2 => bounded(Bound::RelRmse(eps), StepScope::Channel),
            3 => bounded(Bound::RelRmse(eps), StepScope::Block(16 + n % 241)),
            4 => bounded(Bound::MaxAbs(eps * 0.01), StepScope::Global),
            _ => Mode::Bounded(BoundedSpec {
                rounding: Rounding::Stochastic { seed: n as u64 },
                ..BoundedSpec::new(Bound::RelRmse(eps))
            }),
        };
        let c = lossy(mode, chunk, 1);
        let shape = if n % 10 == 0 { [n as u64 / 10, 10] } else { [1, n as u64] };
        let t = c.decode(&c.encode(&data, dtype, &shape).unwrap()).unwrap();
        prop_assert_eq!(t.data.len(), data.len());
        match mode {
            Mode::Bounded(BoundedSpec { bound: Bound::RelRmse(e), .. }) => {
                let got = rel_rmse(dtype, &data, &t.data);
                prop_assert!(got.is_nan() || got <= e, "{} > {}", got, e);
            }
            Mode::Bounded(BoundedSpec { bound: Bound::MaxAbs(e), .. }) => {
                prop_assert!(max_abs(dtype, &data, &t.data) <= e);
            }
            _ => {}
        }
    }
}

/// A large decode into a buffer whose pages are mapped (one written before, as a reused
/// output is) prefetches its writes, which changes nothing but timing: at every SIMD level,
/// every profile decodes such a buffer to the bytes of a fresh decode, as does the stream
/// decoder; on two threads too.
#[test]
fn mapped_outputs_decode_like_fresh_ones() {
    use crate::simd::{self, Level};
    // Just over the 4 MiB from which outputs are hinted, in chunks of 2^18 elements.
    let n = (4 << 20) / 2 + 4099;
    let data = lossy_data(DType::BF16, n, 1, 5);
    for profile in Profile::ALL {
        let c = lossy(profile.mode(), 1 << 18, 1);
        let frame = c.encode(&data, DType::BF16, &[n as u64]).unwrap();
        let want = simd::with_level(Level::Scalar, || c.decode(&frame).unwrap().data);
        let mut out = vec![0xA5u8; want.len()];
        assert_eq!(
            super::write_hints_for(&out, out.len()),
            cfg!(target_os = "linux"),
            "a written 4 MiB buffer is hinted on Linux only"
        );
        for l in simd::available() {
            out.fill(0xA5);
            simd::with_level(l, || c.decode_into(&frame, &mut out)).unwrap();
            assert!(out == want, "{l:?} decodes otherwise: {profile:?}");
        }
        out.fill(0xA5);
        lossy(profile.mode(), 1 << 18, 2)
            .decode_into(&frame, &mut out)
            .unwrap();
        assert!(out == want, "two threads decode otherwise: {profile:?}");
        out.fill(0xA5);
        let mut d = c.stream_decoder();
        d.feed(&frame).unwrap();
        d.decode_available(&mut out).unwrap();
        d.finish().unwrap();
        assert!(
            out == want,
            "the stream decoder decodes otherwise: {profile:?}"
        );
    }
}

/// Every SIMD level this CPU has writes the same frame and decodes it to the same bytes, for
/// every profile and a spread of modes, dtypes and sizes (one thread, so that everything runs
/// on the thread whose kernels `with_level` sets).
#[test]
fn frames_are_identical_at_every_simd_level() {
    use crate::simd::{self, Level};
    let levels = simd::available();
    let mut modes: Vec<Mode> = Profile::ALL.iter().map(|p| p.mode()).collect();
    let sr = Rounding::Stochastic { seed: 99 };
    modes.extend([
        Mode::Block(BlockSpec::mx(Element::E2M1)),
        Mode::Block(BlockSpec::mx(Element::E4M3)),
        Mode::Block(BlockSpec {
            rounding: sr,
            ..block_spec(Element::Int4, ScaleFormat::E8M0, 64)
        }),
        Mode::Block(BlockSpec {
            entropy: true,
            ..block_spec(Element::E5M2, ScaleFormat::F16, 32)
        }),
        Mode::Block(BlockSpec {
            nonfinite: NonFinite::Keep,
            ..block_spec(Element::Int3, ScaleFormat::BF16, 100)
        }),
        bounded(Bound::RelRmse(0.003), StepScope::Channel),
        bounded(Bound::RelRmse(0.02), StepScope::Block(64)),
        bounded(Bound::MaxAbs(0.002), StepScope::Global),
        bounded(Bound::Bits(3.0), StepScope::Global),
        Mode::Bounded(BoundedSpec {
            rounding: sr,
            nonfinite: NonFinite::Keep,
            ..BoundedSpec::new(Bound::RelRmse(0.01))
        }),
    ]);
    for dtype in DType::ALL {
        for (n, kind, specials) in [
            (3003usize, 0u32, false),
            (70_000, 1, false),
            (40_001, 2, false),
            (40_001, 2, true),
        ] {
            let mut data = lossy_data(dtype, n, kind, n as u64);
            if specials {
                // A NaN and an infinity, for the modes that keep them.
                let (nan, inf) = match dtype {
                    DType::F32 => (0x7fc0_0001, 0xff80_0000),
                    DType::F16 => (0x7e01, 0xfc00),
                    DType::BF16 => (0x7fc1, 0xff80),
                };
                convert::store_bits(dtype, nan, &mut data, 1234);
                convert::store_bits(dtype, inf, &mut data, 30_000);
            }
            let shape = [(n / 7) as u64, 7];
            let shape: &[u64] = if n % 7 == 0 { &shape } else { &[n as u64] };
            for &mode in &modes {
                let c = lossy(mode, 16_384, 1);
                let mut frames = levels
                    .iter()
                    .map(|&l| simd::with_level(l, || c.encode(&data, dtype, shape)));
                let want = frames.next().unwrap();
                for (got, &l) in frames.zip(&levels[1..]) {
                    match (&want, &got) {
                        (Ok(a), Ok(b)) => {
                            assert!(a == b, "{l:?} writes another frame: {mode:?} {dtype} n={n}")
                        }
                        (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind()),
                        _ => panic!("{l:?} and scalar disagree on success: {mode:?} {dtype}"),
                    }
                }
                let Ok(frame) = want else { continue };
                let out = |l: Level| simd::with_level(l, || c.decode(&frame).unwrap().data);
                let want = out(Level::Scalar);
                for &l in &levels[1..] {
                    assert!(
                        out(l) == want,
                        "{l:?} decodes otherwise: {mode:?} {dtype} n={n}"
                    );
                }
            }
        }
    }
}

use super::{chunk_modes, MODE_CODED, MODE_CONTEXTS};

/// Rows of 512 bfloat16 values whose scales span 2^-3..2^4 (as a gradient's tokens do).
fn rows_of_scales(rows: usize, seed: u64) -> Vec<u8> {
    let base = lossy_data(DType::BF16, rows * 512, 0, seed);
    (0..rows * 512)
        .flat_map(|i| {
            let k = ((i / 512) as u32).wrapping_mul(0x9E37_79B1) >> 29;
            let v = convert::load(DType::BF16, &base, i) * (k as f32 - 3.0).exp2();
            (convert::to_bits_sat(DType::BF16, v) as u16).to_le_bytes()
        })
        .collect()
}

#[test]
fn row_contexts_shrink_rows_of_different_scales() {
    let data = rows_of_scales(256, 5);
    let eps = 0.02;
    for rounding in [Rounding::Nearest, Rounding::Stochastic { seed: 3 }] {
        let mode = Mode::Bounded(BoundedSpec {
            rounding,
            ..BoundedSpec::new(Bound::RelRmse(eps))
        });
        // Chunks of 32768: 64 segments of one row each, the probed path.
        let c = lossy(mode, 32_768, 1);
        let frame = c.encode(&data, DType::BF16, &[256, 512]).unwrap();
        let modes = chunk_modes(&frame);
        assert!(
            modes.iter().filter(|&&m| m == MODE_CONTEXTS).count() >= 2,
            "{rounding:?}: {modes:?}"
        );
        let flat = c.encode(&data, DType::BF16, &[256 * 512]).unwrap();
        assert_eq!(chunk_modes(&flat), [MODE_CODED; 4]);
        // Turned off, the rows are coded as the flattened tensor is.
        let off = lossy(
            Mode::Bounded(BoundedSpec {
                rounding,
                contexts: false,
                ..BoundedSpec::new(Bound::RelRmse(eps))
            }),
            32_768,
            1,
        );
        let plain = off.encode(&data, DType::BF16, &[256, 512]).unwrap();
        assert_eq!(chunk_modes(&plain), [MODE_CODED; 4]);
        assert_eq!(plain.len(), flat.len() + 1, "{rounding:?}");
        let ratio = frame.len() as f64 / flat.len() as f64;
        assert!(ratio < 0.97, "{rounding:?}: {ratio}");
        let back = c.decode(&frame).unwrap().data;
        let e = rel_rmse(DType::BF16, &data, &back);
        assert!(e <= eps && e > 0.9 * eps, "{rounding:?}: {e}");
        // Any thread count, any split of the stream.
        for threads in [2, 3] {
            let t = lossy(mode, 32_768, threads);
            assert_eq!(t.encode(&data, DType::BF16, &[256, 512]).unwrap(), frame);
            assert_eq!(t.decode(&frame).unwrap().data, back);
        }
        let (a, b) = frame.split_at(frame.len() / 3);
        assert_eq!(stream_decode(&c, &[a, b]).unwrap(), back);
    }
}

#[test]
fn row_contexts_are_refused_in_version_1_frames() {
    let data = rows_of_scales(64, 6);
    let c = lossy(bounded(Bound::RelRmse(0.02), StepScope::Global), 1 << 18, 1);
    let mut frame = c.encode(&data, DType::BF16, &[64, 512]).unwrap();
    assert_eq!(chunk_modes(&frame), [MODE_CONTEXTS]);
    frame[4] = 1;
    crate::format::reseal(&mut frame);
    let e = c.decode(&frame).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CorruptFrame);
    assert!(e.to_string().contains("unknown chunk mode 2"), "{e}");
}

#[test]
fn chunks_with_and_without_row_contexts_decode_in_pairs() {
    // Rows of one scale (one table), then rows of many (row contexts).
    let mut data = lossy_data(DType::BF16, 64 * 512, 0, 9);
    data.extend(rows_of_scales(64, 6));
    let mode = bounded(Bound::RelRmse(0.02), StepScope::Global);
    let one = lossy(mode, 32_768, 1);
    let frame = one.encode(&data, DType::BF16, &[128, 512]).unwrap();
    assert_eq!(chunk_modes(&frame), [MODE_CODED, MODE_CONTEXTS]);
    // One thread decodes the two chunks as a pair; two decode them one by one.
    let back = one.decode(&frame).unwrap().data;
    assert_eq!(lossy(mode, 32_768, 2).decode(&frame).unwrap().data, back);
    assert!(rel_rmse(DType::BF16, &data, &back) <= 0.02);
}

/// A small chunk keeps row contexts only where they make it smaller: its classes' estimate
/// rests on few samples, so it is coded with one table too (`contexts::CHECKED_BELOW`).
/// Without that check the classes chosen for the first two of these chunks of 16384
/// elements (rows of 16 channels, four scales a factor `f` apart) made them about 10%
/// larger.
#[test]
fn small_chunks_keep_row_contexts_only_where_they_pay() {
    for (f, seed) in [(1.3f32, 21u64), (2.0, 0), (1.6, 3)] {
        let rows = 1024;
        let base = lossy_data(DType::BF16, rows * 16, 0, 100 + seed);
        let data: Vec<u8> = (0..rows * 16)
            .flat_map(|i| {
                let k = ((i / 16) as u32).wrapping_mul(0x9E37_79B1) >> 30;
                let v = convert::load(DType::BF16, &base, i) * f.powi(k as i32);
                (convert::to_bits_sat(DType::BF16, v) as u16).to_le_bytes()
            })
            .collect();
        let spec = |contexts| {
            Mode::Bounded(BoundedSpec {
                contexts,
                ..BoundedSpec::new(Bound::RelRmse(0.003))
            })
        };
        let shape = [rows as u64, 16];
        let on = lossy(spec(true), 1 << 14, 1).encode(&data, DType::BF16, &shape);
        let off = lossy(spec(false), 1 << 14, 1).encode(&data, DType::BF16, &shape);
        let (on, off) = (on.unwrap(), off.unwrap());
        assert!(
            on.len() <= off.len(),
            "{f} {seed}: {} > {}",
            on.len(),
            off.len()
        );
    }
}
