//! Harnesses shared by the cargo-fuzz targets (`fuzz/`) and by the test that replays their
//! committed corpus on every `cargo test`, so a crash input found once stays a test forever.
//! Not part of the stable API.

use crate::quant::convert;
use crate::{
    BlockSpec, Bound, BoundedSpec, Codec, DType, Element, ErrorKind, Limits, Mode, NonFinite,
    Profile, Rounding, ScaleFormat, StepScope,
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

/// Reads a lossy mode and a tensor from arbitrary bytes, encodes, decodes, and checks what
/// the mode promises: the shape and dtype, non-finite values carried bit for bit, the error
/// bound of an error-bounded mode, and the same frame from one thread.
pub fn lossy_roundtrip(data: &[u8]) {
    let [sel, chunk_sel, a, b, rest @ ..] = data else {
        return;
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
            Mode::Bounded(BoundedSpec {
                bound,
                scope,
                rounding,
                nonfinite: NonFinite::Keep,
            })
        }
    };
    let n = rest.len() / dtype.itemsize();
    let input = &rest[..n * dtype.itemsize()];
    let shape: Vec<u64> = if n.is_multiple_of(4) && n > 0 {
        vec![4, (n / 4) as u64]
    } else {
        vec![1, n as u64]
    };
    let codec = Codec {
        mode,
        chunk_elems: u64::from(*chunk_sel).max(1) * 4,
        ..fuzz_codec(threads)
    };
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
            Bound::RelRmse(e) => assert!(num <= e * e * den * (1.0 + 1e-9), "relative RMSE"),
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn replay(target: &str, run: fn(&[u8])) -> usize {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
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
        count
    }

    #[test]
    fn replay_decode_corpus() {
        let n = replay("decode", super::decode);
        assert!(n > 0, "the committed decode corpus is missing");
    }

    #[test]
    fn replay_roundtrip_corpus() {
        let n = replay("roundtrip", super::roundtrip);
        assert!(n > 0, "the committed roundtrip corpus is missing");
    }

    #[test]
    fn replay_lossy_corpus() {
        let n = replay("lossy", super::lossy_roundtrip);
        assert!(n > 0, "the committed lossy corpus is missing");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        #[test]
        fn lossy_harness_on_random_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            super::lossy_roundtrip(&data);
        }
    }

    #[test]
    fn golden_frames_decode_through_the_harness() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1");
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "iota") {
                super::decode(&std::fs::read(p).unwrap());
            }
        }
    }
}
