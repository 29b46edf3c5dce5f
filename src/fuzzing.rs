//! Harnesses shared by the cargo-fuzz targets (`fuzz/`) and by the test that replays their
//! committed corpus on every `cargo test`, so a crash input found once stays a test forever.
//! Not part of the stable API.

use crate::{Codec, DType, Limits, Profile};

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
