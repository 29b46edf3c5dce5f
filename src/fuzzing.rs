//! Harnesses shared by the cargo-fuzz targets (`fuzz/`) and by the test that replays their
//! committed corpus on every `cargo test`, so a crash input found once stays a test forever.
//! Not part of the stable API.

use crate::pipeline::session::{Session, SessionConfig};
use crate::quant::convert;
use crate::{
    BlockSpec, Bound, BoundedSpec, Codec, DType, Element, ErrorKind, Limits, Mode, NonFinite,
    Profile, Rounding, ScaleFormat, StepScope, Transform,
};

/// Output cap while fuzzing: large enough for every corpus frame, small enough that a forged
/// header cannot make the fuzzer allocate much.
pub const FUZZ_MAX_OUTPUT: u64 = 1 << 24;

fn fuzz_codec(threads: usize) -> Codec {
    Codec {
        threads,
        limits: Limits {
            max_output_bytes: FUZZ_MAX_OUTPUT,
            ..Limits::default()
        },
        ..Codec::new(Profile::Lossless)
    }
}

/// Decodes arbitrary bytes twice: as they are (the checksums reject almost everything) and
/// resealed with valid checksums, as a hostile sender would send them, which reaches every
/// stage decoder. Either may fail; neither may panic, hang or read out of bounds, and a
/// successful decode must agree with the header and with `info`.
pub fn decode(data: &[u8]) {
    let codec = fuzz_codec(1);
    check_decode(&codec, data);
    let mut sealed = data.to_vec();
    crate::format::reseal(&mut sealed);
    check_decode(&codec, &sealed);
}

fn check_decode(codec: &Codec, frame: &[u8]) {
    let decoded = codec.decode(frame);
    let info = crate::info(frame);
    match (decoded, info) {
        (Ok(t), Ok(i)) => {
            assert_eq!(t.data.len() as u64, i.output_bytes);
            assert_eq!(t.shape, i.shape);
            assert_eq!(t.dtype, i.dtype);
            // Decoding is deterministic, on any thread count.
            assert_eq!(fuzz_codec(3).decode(frame).unwrap().data, t.data);
        }
        (Ok(_), Err(e)) => panic!("decoded, but info fails: {e}"),
        (Err(_), _) => {}
    }
}

/// Reads encoder settings and a tensor from arbitrary bytes, encodes, decodes, and checks the
/// round trip (bit-exact for the lossless profile).
pub fn roundtrip(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((&chunk_sel, rest)) = rest.split_first() else {
        return;
    };
    let dtype = DType::ALL[usize::from(sel % 3)];
    let threads = usize::from((sel >> 2) % 3) + 1;
    // Chunk sizes from 1 element up, with the default among them.
    let chunk_elems = match chunk_sel {
        0 => Codec::DEFAULT_CHUNK_ELEMS,
        c => u64::from(c) * u64::from(c >> 4).max(1),
    };
    let n = rest.len() / dtype.itemsize();
    let input = &rest[..n * dtype.itemsize()];
    // Shapes: 1-D, or 2-D when the count factors.
    let shape: Vec<u64> = if sel & 0x80 != 0 && n.is_multiple_of(4) {
        vec![4, (n / 4) as u64]
    } else {
        vec![n as u64]
    };
    let codec = Codec {
        chunk_elems,
        ..fuzz_codec(threads)
    };
    let frame = codec
        .encode(input, dtype, &shape)
        .expect("encoding valid input");
    let t = codec.decode(&frame).expect("decoding a frame just encoded");
    assert_eq!(t.data, input, "lossless round trip");
    assert_eq!(t.shape, shape);
    // One thread writes the same frame.
    let serial = Codec {
        threads: 1,
        ..codec.clone()
    };
    assert_eq!(serial.encode(input, dtype, &shape).unwrap(), frame);
}

/// The chunk size of [`lossy_roundtrip`]'s tiled inputs: past the 2^16 elements from which
/// uniform coding samples its symbol counts.
const LARGE_CHUNK: usize = 1 << 17;

/// A lossy codec and a tensor read from fuzz input by [`lossy_case`].
struct LossyCase<'a> {
    codec: Codec,
    dtype: DType,
    input: std::borrow::Cow<'a, [u8]>,
    shape: Vec<u64>,
}

/// Reads a lossy mode and a tensor from arbitrary bytes, encodes, decodes, and checks what
/// the mode promises: the shape and dtype, non-finite values carried bit for bit, the error
/// bound of an error-bounded mode, and the same frame from one thread.
pub fn lossy_roundtrip(data: &[u8]) {
    let Some(LossyCase {
        codec,
        dtype,
        input,
        shape,
    }) = lossy_case(data)
    else {
        return;
    };
    let (input, mode, n) = (&input[..], codec.mode, input.len() / dtype.itemsize());
    let frame = match codec.encode(input, dtype, &shape) {
        Ok(f) => f,
        // A bits target below what headers and tables take is refused, not missed.
        Err(e)
            if matches!(
                mode,
                Mode::Bounded(BoundedSpec {
                    bound: Bound::Bits(_),
                    ..
                })
            ) =>
        {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            return;
        }
        Err(e) => panic!("encoding valid input: {e}"),
    };
    let t = codec.decode(&frame).expect("decoding a frame just encoded");
    assert_eq!(t.shape, shape);
    assert_eq!(t.data.len(), input.len());
    let (mut num, mut den, mut worst) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let x = convert::load(dtype, input, i);
        if !x.is_finite() {
            assert_eq!(
                convert::load_bits(dtype, &t.data, i),
                convert::load_bits(dtype, input, i),
                "non-finite element {i} not carried exactly"
            );
            continue;
        }
        let d = f64::from(convert::load(dtype, &t.data, i)) - f64::from(x);
        num += d * d;
        den += f64::from(x) * f64::from(x);
        worst = worst.max(d.abs());
    }
    if let Mode::Bounded(spec) = mode {
        match spec.bound {
            Bound::RelRmse(e) => assert!(
                num <= e * e * den * (1.0 + 1e-9),
                "relative RMSE {} > {e}, {mode:?} {dtype} {shape:?} {}",
                (num / den).sqrt(),
                codec.chunk_elems
            ),
            Bound::MaxAbs(e) => assert!(worst <= e, "max abs error {worst} > {e}"),
            // Bits per element mean nothing for an empty tensor.
            Bound::Bits(b) => assert!(
                n == 0 || frame.len() as f64 * 8.0 <= b * n as f64,
                "bits {} > {b} * {n}, info {:?}",
                frame.len() * 8,
                crate::info(&frame)
            ),
        }
    }
    let serial = Codec {
        threads: 1,
        ..codec.clone()
    };
    assert_eq!(serial.encode(input, dtype, &shape).unwrap(), frame);
}

/// The codec and tensor that [`lossy_roundtrip`] reads from `data`.
fn lossy_case(data: &[u8]) -> Option<LossyCase<'_>> {
    let [sel, chunk_sel, a, b, rest @ ..] = data else {
        return None;
    };
    let dtype = DType::ALL[usize::from(sel % 3)];
    let threads = usize::from((sel >> 2) & 1) + 1;
    let rounding = if sel & 0x08 != 0 {
        Rounding::Stochastic {
            seed: u64::from(*b),
        }
    } else {
        Rounding::Nearest
    };
    let frac = f64::from(*b) / 255.0;
    let mode = match (sel >> 4) % 6 {
        0 => Mode::Block(BlockSpec {
            element: Element::ALL[usize::from(a % 7)],
            scale: ScaleFormat::ALL[usize::from((a / 7) % 3)],
            block: 16 + usize::from(*b) % 241,
            entropy: a & 0x80 != 0,
            rounding,
            nonfinite: NonFinite::Keep,
        }),
        k => {
            let bound = match k {
                1 | 4 | 5 => Bound::RelRmse(10f64.powf(-3.0 * frac)),
                2 => Bound::MaxAbs(10f64.powf(f64::from(*a % 16) - 10.0)),
                _ => Bound::Bits(1.0 + 15.0 * f64::from(*a) / 255.0),
            };
            let scope = match k {
                4 => StepScope::Channel,
                5 => StepScope::Block(16 + usize::from(*a) % 241),
                _ => StepScope::Global,
            };
            let rounding = if k == 2 { Rounding::Nearest } else { rounding };
            // A relative RMSE with one global step may take a transform.
            let (transform, max_rank) = match (k, a >> 5) {
                (1, 1) => (Transform::Identity, None),
                (1, 2 | 3) => (Transform::Pca, None),
                (1, 4) => (Transform::Pca, Some(1 + usize::from(*a & 3))),
                (1, 5) => (Transform::Auto, None),
                _ => (Transform::None, None),
            };
            // Transforms code finite tensors; NaN and Inf then take plain coding.
            let nonfinite = NonFinite::Keep;
            Mode::Bounded(BoundedSpec {
                scope,
                rounding,
                nonfinite,
                transform,
                max_rank,
                ..BoundedSpec::new(bound)
            })
        }
    };
    // `chunk_sel == 0` tiles the input into one large chunk (past the 2^16 elements where
    // symbol counts are sampled), which short fuzz inputs never reach otherwise, and then
    // a shorter one. Such a tensor may have rows of `ROWS[b % 8]` elements (rows of 48, 100,
    // 300 and 1000 put the second chunk's start inside a segment of rows), where the
    // error-bounded coder may give rows of different scales tables of their own (row
    // contexts).
    const ROWS: [usize; 8] = [0, 48, 100, 256, 300, 512, 1000, 4096];
    let isz = dtype.itemsize();
    let mut row = None;
    let (input, chunk_elems) = if *chunk_sel == 0 && rest.len() >= isz {
        let unit = &rest[..rest.len() / isz * isz];
        row = Some(ROWS[usize::from(*b % 8)]).filter(|&r| r > 0);
        let elems = (LARGE_CHUNK + unit.len() / isz).next_multiple_of(row.unwrap_or(1));
        let tiled: Vec<u8> = unit.iter().copied().cycle().take(elems * isz).collect();
        (std::borrow::Cow::Owned(tiled), LARGE_CHUNK as u64)
    } else {
        let whole = rest.len() / isz * isz;
        (
            std::borrow::Cow::Borrowed(&rest[..whole]),
            u64::from(*chunk_sel).max(1) * 4,
        )
    };
    let n = input.len() / isz;
    let shape: Vec<u64> = if let Some(row) = row {
        vec![(n / row) as u64, row as u64]
    } else if n.is_multiple_of(4) && n > 0 {
        vec![4, (n / 4) as u64]
    } else {
        vec![1, n as u64]
    };
    let codec = Codec {
        mode,
        chunk_elems,
        ..fuzz_codec(threads)
    };
    Some(LossyCase {
        codec,
        dtype,
        input,
        shape,
    })
}

/// Reads session settings and a sequence of tensors from arbitrary bytes and sends them
/// through an encoder and a decoder session: the decoder must rebuild exactly what the
/// encoder reconstructed, within the bound; a dropped frame must be refused with
/// [`ErrorKind::SessionMismatch`] (leaving the decoder as it was) until a resync frame; a
/// damaged frame, resealed with valid checksums, must fail or decode without panicking.
pub fn session(data: &[u8]) {
    let [sel, d_sel, rows_sel, rest @ ..] = data else {
        return;
    };
    let dtype = DType::ALL[usize::from(sel % 3)];
    let d = 1 + usize::from(d_sel % 24);
    let rows = 1 + usize::from(rows_sel % 40);
    let eps = [0.01, 0.05, 0.2][usize::from((sel >> 2) % 3)];
    let feedback = sel & 0x40 != 0;
    let config = SessionConfig {
        refresh: 1 + u32::from((sel >> 4) % 4),
        chunk_elems: (d * (1 + usize::from(rows_sel / 40))) as u64,
        error_feedback: feedback,
        threads: 1,
        rounding: if sel & 0x80 != 0 {
            Rounding::Stochastic { seed: 3 }
        } else {
            Rounding::Nearest
        },
        limits: Limits {
            max_output_bytes: FUZZ_MAX_OUTPUT,
            ..Limits::default()
        },
        ..SessionConfig::new(0xfeed, eps)
    };
    let mut enc = Session::new(config.clone()).expect("valid settings");
    let mut dec = Session::new(SessionConfig {
        error_feedback: false,
        ..config
    })
    .expect("valid settings");
    let shape = [rows as u64, d as u64];
    let isz = dtype.itemsize();
    let mut dropped = false;
    for piece in rest.chunks_exact(rows * d * isz).take(12) {
        // Non-finite elements become zeros: sessions code finite tensors.
        let mut input = piece.to_vec();
        for i in 0..rows * d {
            if !convert::load(dtype, &input, i).is_finite() {
                convert::store_bits(dtype, 0, &mut input, i);
            }
        }
        let sent = enc
            .encode(&input, dtype, &shape, Default::default())
            .expect("encoding a finite tensor");
        if !feedback {
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for i in 0..rows * d {
                let x = f64::from(convert::load(dtype, &input, i));
                let y = f64::from(convert::load(dtype, &sent.decoded.data, i));
                num += (x - y) * (x - y);
                den += x * x;
            }
            assert!(num <= eps * eps * den * (1.0 + 1e-9), "session bound");
        }
        // A damaged copy, behind valid checksums, on a copy of the decoder.
        let mut bad = sent.frame.clone();
        let at = usize::from(piece[0]) * 131 % bad.len();
        bad[at] ^= 1 << (piece[isz.min(piece.len() - 1)] % 8);
        crate::format::reseal(&mut bad);
        let _ = dec.clone().decode(&bad);
        if piece[0] % 5 == 0 && !dropped {
            // Dropped in transit: the next frame is refused until a resync.
            dropped = true;
            continue;
        }
        let before = dec.state_hash();
        match dec.decode(&sent.frame) {
            Ok(t) => {
                assert!(!dropped || crate::info(&sent.frame).is_ok());
                assert_eq!(t.data, sent.decoded.data, "decoder disagrees with encoder");
                assert_eq!(dec.state_hash(), enc.state_hash(), "states diverged");
                dropped = false;
            }
            Err(e) => {
                assert!(dropped, "refused in lockstep: {e}");
                assert_eq!(e.kind(), ErrorKind::SessionMismatch, "{e}");
                assert_eq!(
                    dec.state_hash(),
                    before,
                    "a refused frame changed the state"
                );
                enc.request_resync();
            }
        }
    }
    let restored = Session::from_bytes(&dec.to_bytes(), 1, dec.config.limits).expect("state");
    assert_eq!(restored.state_hash(), dec.state_hash());
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs every committed input of `target` through `run`; `None` where the fuzz crate is
    /// absent (a source package, which leaves it out).
    fn replay(target: &str, run: fn(&[u8])) -> Option<usize> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        if !root.join("Cargo.toml").exists() {
            eprintln!("no fuzz crate beside this one: no {target} corpus to replay");
            return None;
        }
        let mut count = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
            paths.sort();
            for p in paths {
                if p.is_file() {
                    let data = std::fs::read(&p).unwrap();
                    run(&data);
                    count += 1;
                }
            }
        }
        Some(count)
    }

    #[test]
    fn replay_decode_corpus() {
        if let Some(n) = replay("decode", super::decode) {
            assert!(n > 0, "the committed decode corpus is missing");
        }
    }

    #[test]
    fn replay_roundtrip_corpus() {
        if let Some(n) = replay("roundtrip", super::roundtrip) {
            assert!(n > 0, "the committed roundtrip corpus is missing");
        }
    }

    #[test]
    fn replay_lossy_corpus() {
        if let Some(n) = replay("lossy", super::lossy_roundtrip) {
            assert!(n > 0, "the committed lossy corpus is missing");
        }
    }

    /// A tiled pattern away from zero in one large chunk: the case whose sampled symbol
    /// counts once indexed out of bounds.
    #[test]
    fn lossy_harness_reaches_large_chunks() {
        let x = 0.123f32.to_bits().to_le_bytes();
        for sel in [0x11u8, 0x19, 0x21, 0x31] {
            // Relative RMSE (nearest and stochastic), max abs error, bits; the dtype is
            // `sel % 3`: bfloat16 and float16 (two values alternating) and float32 (one).
            super::lossy_roundtrip(&[sel, 0, 0, 128, x[0], x[1], x[2], x[3]]);
        }
    }

    /// Tiled rows of 8 scales (2^-3..2^4): the error-bounded coder gives them row contexts
    /// in every chunk large enough (not the 2048 elements after the first chunk of rows of
    /// 256), the second chunk of rows of 300, which starts inside a segment, included, and
    /// the harness's checks hold on them.
    #[test]
    fn lossy_harness_reaches_row_contexts() {
        use crate::pipeline::{chunk_modes, MODE_CONTEXTS};
        use crate::quant::convert;
        // (row length selector `b % 8`, row length, rows in the tiled unit, chunk modes)
        let one = crate::pipeline::MODE_CODED;
        let two = MODE_CONTEXTS;
        for (b, row, rows, want) in [
            (147u8, 256usize, 8usize, [two, one]),
            (148, 300, 32, [two; 2]),
        ] {
            let mut unit = vec![];
            let mut state = 0x2545_f491_4f6c_dd1du64;
            for i in 0..row * rows {
                let k = ((i / row) as u32).wrapping_mul(0x9E37_79B1) >> 29;
                // A sum of four uniforms: roughly normal.
                let mut x = -2.0f32;
                for _ in 0..4 {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    x += (state >> 40) as f32 / (1u64 << 24) as f32;
                }
                let v = x * (k as f32 - 3.0).exp2();
                unit.extend_from_slice(&convert::f32_to_bf16(v).to_le_bytes());
            }
            // bfloat16, relative RMSE about 1.8% (from `b`), one global step; nearest and
            // stochastic rounding.
            for sel in [0x11u8, 0x1a] {
                let data = [&[sel, 0, 0, b][..], &unit].concat();
                let case = super::lossy_case(&data).unwrap();
                assert_eq!(case.shape[1], row as u64);
                let frame = case
                    .codec
                    .encode(&case.input, case.dtype, &case.shape)
                    .unwrap();
                let modes = chunk_modes(&frame);
                assert_eq!(modes, want, "rows of {row}, sel {sel:#x}");
                super::lossy_roundtrip(&data);
            }
        }
    }

    #[test]
    fn replay_session_corpus() {
        if let Some(n) = replay("session", super::session) {
            assert!(n > 0, "the committed session corpus is missing");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        #[test]
        fn lossy_harness_on_random_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            super::lossy_roundtrip(&data);
        }

        #[test]
        fn session_harness_on_random_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6000)) {
            super::session(&data);
        }
    }

    #[test]
    fn golden_frames_decode_through_the_harness() {
        for version in ["v1", "v2"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(version);
            let mut count = 0;
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "iota") {
                    super::decode(&std::fs::read(p).unwrap());
                    count += 1;
                }
            }
            assert!(count > 20, "{version}: {count} golden frames");
        }
    }
}
