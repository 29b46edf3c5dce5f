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
    for g in goldens() {
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
                ),
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
