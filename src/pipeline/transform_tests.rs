//! Tests of the projection stage and of shared-basis sessions.

use super::session::{Session, SessionConfig};
use crate::quant::convert;
use crate::{Bound, BoundedSpec, Codec, DType, ErrorKind, Mode, Profile, Transform};

/// Rows of `d` correlated channels: `x = z M + noise` with `z` heavy-tailed over a few
/// latent directions, channel offsets, as `dtype` bytes. `drift` rotates the mixing over
/// time (for sessions).
fn correlated(dtype: DType, rows: usize, d: usize, seed: u64, drift: f32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let latent = 6.min(d);
    let mix: Vec<f32> = (0..latent * d)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut out = Vec::with_capacity(rows * d * dtype.itemsize());
    for _ in 0..rows {
        let z: Vec<f32> = (0..latent)
            .map(|j| {
                let u = next();
                u * u * u * 8.0 / (1.0 + j as f32)
            })
            .collect();
        for t in 0..d {
            let mut v = 0.05 * next() + 0.1 * (t % 3) as f32;
            for j in 0..latent {
                let m = mix[j * d + t] + drift * mix[((j + 1) % latent) * d + t];
                v += z[j] * m;
            }
            let bits = convert::to_bits_sat(dtype, v);
            match dtype.itemsize() {
                4 => out.extend_from_slice(&bits.to_le_bytes()),
                _ => out.extend_from_slice(&(bits as u16).to_le_bytes()),
            }
        }
    }
    out
}

fn rel_rmse(dtype: DType, a: &[u8], b: &[u8]) -> f64 {
    let n = a.len() / dtype.itemsize();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for i in 0..n {
        let x = f64::from(convert::load(dtype, a, i));
        let y = f64::from(convert::load(dtype, b, i));
        num += (x - y) * (x - y);
        den += x * x;
    }
    (num / den).sqrt()
}

fn codec(transform: Transform, eps: f64, chunk: u64, threads: usize) -> Codec {
    Codec {
        mode: Mode::Bounded(BoundedSpec {
            transform,
            ..BoundedSpec::new(Bound::RelRmse(eps))
        }),
        chunk_elems: chunk,
        threads,
        ..Codec::new(Profile::Lossless)
    }
}

fn stage_names(frame: &[u8]) -> Vec<&'static str> {
    crate::info(frame)
        .unwrap()
        .stages
        .iter()
        .map(|s| s.name)
        .collect()
}

/// `encode_into` writes the frame `encode` returns, transform or none (it once coded every
/// transform mode as plain quantization).
#[test]
fn encode_into_writes_the_frame_of_encode() {
    let data = correlated(DType::BF16, 256, 64, 7, 0.0);
    let mut out = vec![1, 2, 3];
    for t in [
        Transform::None,
        Transform::Identity,
        Transform::Pca,
        Transform::Auto,
    ] {
        let c = codec(t, 0.05, 1 << 14, 1);
        let frame = c.encode(&data, DType::BF16, &[256, 64]).unwrap();
        c.encode_into(&data, DType::BF16, &[256, 64], &mut out)
            .unwrap();
        assert!(out == frame, "{t:?}");
        if t != Transform::None {
            assert!(
                stage_names(&out).len() > 1,
                "{t:?}: {:?}",
                stage_names(&out)
            );
        }
    }
}

#[test]
fn transforms_meet_the_bound_and_beat_plain_coding() {
    for dtype in DType::ALL {
        let d = 48;
        let data = correlated(dtype, 2000, d, 1, 0.0);
        let shape = [20, 100, d as u64];
        for eps in [0.01, 0.03, 0.1] {
            let plain = codec(Transform::None, eps, 1 << 14, 0)
                .encode(&data, dtype, &shape)
                .unwrap();
            for t in [Transform::Identity, Transform::Pca, Transform::Auto] {
                let c = codec(t, eps, 1 << 14, 0);
                let f = c.encode(&data, dtype, &shape).unwrap();
                let out = c.decode(&f).unwrap();
                assert_eq!(out.shape, shape);
                let e = rel_rmse(dtype, &data, &out.data);
                assert!(e <= eps, "{dtype} {t:?} {eps}: {e}");
                assert!(e > 0.9 * eps, "{dtype} {t:?} {eps}: only {e}");
                if t != Transform::Identity {
                    assert_eq!(stage_names(&f), ["project", "rans"], "{t:?}");
                    assert!(
                        f.len() * 3 < plain.len() * 2,
                        "{dtype} {t:?} {eps}: {} vs plain {}",
                        f.len(),
                        plain.len()
                    );
                }
                // The same frame from one thread, and from streaming decoding.
                assert_eq!(
                    codec(t, eps, 1 << 14, 1)
                        .encode(&data, dtype, &shape)
                        .unwrap(),
                    f
                );
                let mut dec = c.stream_decoder();
                let mut buf = vec![0u8; data.len()];
                for piece in f.chunks(777) {
                    dec.feed(piece).unwrap();
                    dec.decode_available(&mut buf).unwrap();
                }
                dec.finish().unwrap();
                assert_eq!(buf, out.data);
            }
        }
    }
}

#[test]
fn rank_caps_the_basis_and_auto_falls_back() {
    let d = 32;
    let data = correlated(DType::BF16, 1000, d, 2, 0.0);
    let c = Codec {
        mode: Mode::Bounded(BoundedSpec {
            transform: Transform::Pca,
            max_rank: Some(3),
            ..BoundedSpec::new(Bound::RelRmse(0.3))
        }),
        ..Codec::default()
    };
    let f = c.encode(&data, DType::BF16, &[1000, d as u64]).unwrap();
    let info = crate::info(&f).unwrap();
    let rank = info.stages[0]
        .params
        .iter()
        .find(|p| p.0 == "rank")
        .unwrap()
        .1;
    assert_eq!(rank, crate::ParamValue::Int(3));
    assert!(rel_rmse(DType::BF16, &data, &c.decode(&f).unwrap().data) <= 0.3);
    // NaN, a missing channel dimension or white noise: plain coding.
    let mut nan = data.clone();
    nan[10] = 0xc0;
    nan[11] = 0x7f;
    let keep = Codec {
        mode: Mode::Bounded(BoundedSpec {
            transform: Transform::Auto,
            nonfinite: crate::NonFinite::Keep,
            ..BoundedSpec::new(Bound::RelRmse(0.05))
        }),
        ..Codec::default()
    };
    let f = keep.encode(&nan, DType::BF16, &[1000, d as u64]).unwrap();
    assert_eq!(stage_names(&f), ["uniform_quant", "rans"]);
    let e = codec(Transform::Pca, 0.05, 1 << 18, 0)
        .encode(&nan, DType::BF16, &[1000, d as u64])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    let f = keep.encode(&[], DType::BF16, &[0, 4]).unwrap();
    assert!(keep.decode(&f).unwrap().data.is_empty());
}

#[test]
fn hostile_projection_frames_fail_cleanly() {
    let d = 12;
    let data = correlated(DType::F16, 60, d, 3, 0.0);
    let shape = [60, d as u64];
    for t in [Transform::Pca, Transform::Identity] {
        let c = codec(t, 0.05, 240, 1);
        let good = c.encode(&data, DType::F16, &shape).unwrap();
        let want = c.decode(&good).unwrap();
        for n in 0..good.len() {
            assert!(c.decode(&good[..n]).is_err(), "prefix {n}");
        }
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(c.decode(&bad).is_err(), "bit {bit}");
            // Behind valid checksums: an error or some tensor, never a panic.
            crate::format::reseal(&mut bad);
            if let Ok(t) = c.decode(&bad) {
                assert_eq!(t.data.len(), want.data.len());
            }
        }
    }
}

fn session_pair(refresh: u32, feedback: bool) -> (Session, Session) {
    let mut cfg = SessionConfig::new(0x5eed, 0.03);
    cfg.refresh = refresh;
    cfg.chunk_elems = 4096;
    cfg.error_feedback = feedback;
    let enc = Session::new(cfg.clone()).unwrap();
    cfg.error_feedback = false;
    let dec = Session::new(cfg).unwrap();
    (enc, dec)
}

#[test]
fn sessions_stay_in_lockstep_over_refreshes() {
    let d = 24;
    let (mut enc, mut dec) = session_pair(5, false);
    let mut sizes = Vec::new();
    for step in 0..40u64 {
        let data = correlated(DType::BF16, 300, d, 100 + step, step as f32 * 0.02);
        let shape = [300, d as u64];
        let sent = enc
            .encode(&data, DType::BF16, &shape, Default::default())
            .unwrap();
        let got = dec.decode(&sent.frame).unwrap();
        assert_eq!(got.data, sent.decoded.data, "step {step}");
        assert!(rel_rmse(DType::BF16, &data, &got.data) <= 0.03);
        assert_eq!(enc.state_hash(), dec.state_hash(), "step {step}");
        let resync = stage_names(&sent.frame) == ["session", "project", "rans"] && step == 0;
        assert!(step > 0 || resync);
        sizes.push(sent.frame.len());
    }
    // After the first refresh the frames carry no basis and are smaller than the first.
    assert!(sizes[10] < sizes[0], "{sizes:?}");
    // Serialized and restored, both ends go on.
    let mut enc2 = Session::from_bytes(&enc.to_bytes(), 1, Default::default()).unwrap();
    let mut dec2 = Session::from_bytes(&dec.to_bytes(), 2, Default::default()).unwrap();
    assert_eq!(enc2.state_hash(), enc.state_hash());
    let data = correlated(DType::BF16, 300, d, 999, 0.8);
    let sent = enc2
        .encode(&data, DType::BF16, &[300, d as u64], Default::default())
        .unwrap();
    assert_eq!(dec2.decode(&sent.frame).unwrap().data, sent.decoded.data);
}

#[test]
fn sessions_refuse_out_of_order_frames_and_resync() {
    let d = 16;
    let (mut enc, mut dec) = session_pair(3, false);
    let shape = [200, d as u64];
    let frames: Vec<Vec<u8>> = (0..6)
        .map(|s| {
            enc.encode(
                &correlated(DType::F32, 200, d, s, 0.0),
                DType::F32,
                &shape,
                Default::default(),
            )
            .unwrap()
            .frame
        })
        .collect();
    dec.decode(&frames[0]).unwrap();
    dec.decode(&frames[1]).unwrap();
    let before = dec.state_hash();
    // Dropped (skip 2), duplicated (1 again), reordered (3 before 2).
    for bad in [&frames[3], &frames[1], &frames[5]] {
        let e = dec.decode(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SessionMismatch, "{e}");
        assert_eq!(dec.state_hash(), before);
    }
    dec.decode(&frames[2]).unwrap();
    // Another session's frames, and a session frame without its session.
    let mut other = Session::new(SessionConfig::new(7, 0.03)).unwrap();
    assert_eq!(
        other.decode(&frames[3]).unwrap_err().kind(),
        ErrorKind::SessionMismatch
    );
    let plain = Codec::default();
    assert_eq!(
        plain.decode(&frames[3]).unwrap_err().kind(),
        ErrorKind::SessionMismatch
    );
    // A resync frame restores a decoder that lost frames (and decodes on its own).
    let mut late = Session::new(SessionConfig {
        chunk_elems: 4096,
        refresh: 3,
        ..SessionConfig::new(0x5eed, 0.03)
    })
    .unwrap();
    enc.request_resync();
    let data = correlated(DType::F32, 200, d, 77, 0.0);
    let r = enc
        .encode(&data, DType::F32, &shape, Default::default())
        .unwrap();
    assert_eq!(plain.decode(&r.frame).unwrap().data, r.decoded.data);
    for dd in [&mut dec, &mut late] {
        assert_eq!(dd.decode(&r.frame).unwrap().data, r.decoded.data);
        assert_eq!(dd.state_hash(), enc.state_hash());
    }
    let n = enc
        .encode(&data, DType::F32, &shape, Default::default())
        .unwrap();
    assert_eq!(late.decode(&n.frame).unwrap().data, n.decoded.data);
}

#[test]
fn error_feedback_carries_the_residual() {
    let d = 8;
    let (mut enc, mut dec) = session_pair(4, true);
    let data = correlated(DType::F32, 100, d, 5, 0.0);
    let shape = [100, d as u64];
    // The same tensor every step: with error feedback the running mean of the decoded
    // tensors converges to it much faster than the error of one frame.
    let mut acc = vec![0.0f64; 100 * d];
    let steps = 50;
    let mut first = 0.0;
    for s in 0..steps {
        let sent = enc
            .encode(&data, DType::F32, &shape, Default::default())
            .unwrap();
        let got = dec.decode(&sent.frame).unwrap();
        assert_eq!(got.data, sent.decoded.data);
        if s == 0 {
            first = rel_rmse(DType::F32, &data, &got.data);
        }
        for (i, a) in acc.iter_mut().enumerate() {
            *a += f64::from(convert::load(DType::F32, &got.data, i));
        }
    }
    let (mut num, mut den) = (0.0, 0.0);
    for (i, a) in acc.iter().enumerate() {
        let x = f64::from(convert::load(DType::F32, &data, i));
        num += (a / steps as f64 - x).powi(2);
        den += x * x;
    }
    let mean_err = (num / den).sqrt();
    assert!(mean_err < first / 5.0, "{mean_err} vs {first}");
}
