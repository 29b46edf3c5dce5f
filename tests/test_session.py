"""Shared-basis sessions (``iota_codec.Session``): two parties in lockstep over many steps
and basis refreshes, desynchronization detected and repaired, state serialization, error
feedback, and bad input."""

from __future__ import annotations

import pickle

import iota_codec as codec
import numpy as np
import pytest
import torch
from helpers import NUMPY, bits


def drifting(step: int, rows: int = 256, channels: int = 32, dtype=np.float32) -> np.ndarray:
    """Correlated rows whose principal directions rotate slowly with ``step``, with a few
    heavy-tailed latent factors and per-channel offsets: like a boundary activation during
    training."""
    rng = np.random.default_rng(1000 + step)
    base = np.random.default_rng(7).standard_normal((6, channels))
    turn = np.random.default_rng(8).standard_normal((6, channels))
    mix = base + 0.002 * step * turn
    z = rng.standard_t(4, (rows, 6)) * np.array([8, 4, 2, 1, 0.5, 0.25])
    x = z @ mix + 0.05 * rng.standard_normal((rows, channels)) + np.linspace(-1, 1, channels)
    return x.astype(dtype)


def rel(x, y) -> float:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return float(np.sqrt(((x - y) ** 2).sum() / (x * x).sum()))


def pair(error=0.03, refresh=2, decay=0.7, error_feedback=False):
    """A sender and a receiver of one session."""
    kw = dict(error=error, session_id=11, refresh=refresh, decay=decay)
    return codec.Session(error_feedback=error_feedback, **kw), codec.Session(**kw)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hundred_steps_in_lockstep(dtype):
    """A sender and a receiver over 100 steps with a basis refresh every 5: both ends get
    the same tensor bit for bit at every step, within the bound, with the same state; after
    the first frame (which carries its basis) frames carry only coefficients, on a basis
    that follows the data, so they are smaller than frames that carry their own."""
    enc, dec = pair(refresh=5, decay=0.5)
    sizes, stateless = [], []
    for step in range(100):
        x = drifting(step, dtype=NUMPY[dtype])
        blob, sent = enc.encode(x, reconstruction=True)
        got = dec.decode(blob)
        assert np.array_equal(bits(sent), bits(got)), step
        assert rel(x, got) <= 0.03
        assert enc.state_hash == dec.state_hash
        stages = codec.info(blob)["stages"]
        assert stages[0]["name"] == "session" and stages[0]["step"] == step
        assert stages[0]["resync"] == (step == 0)
        assert stages[1]["basis"] == ("session" if step else "frame")
        sizes.append(len(blob))
        if step % 10 == 5:
            stateless.append(len(codec.Codec(error=0.03, transform="pca").encode(x)))
    assert enc.step == dec.step == 100 and dec.channels == 32
    assert np.mean(sizes[1:]) < 0.95 * np.mean(stateless), (np.mean(sizes), stateless)


def test_desynchronized_frames_are_refused_and_resync_restores():
    enc, dec = pair(refresh=3)
    frames = [enc.encode(drifting(s)) for s in range(6)]
    dec.decode(frames[0])
    dec.decode(frames[1])
    before = dec.state_hash
    # Dropped (frame 2 missing), duplicated (1 again) and reordered (3 before 2) frames.
    for bad in (frames[3], frames[1], frames[5]):
        with pytest.raises(codec.SessionMismatchError, match="dropped, duplicated or reordered"):
            dec.decode(bad)
        assert dec.state_hash == before and dec.step == 2
    dec.decode(frames[2])
    # Another session's frame; a session frame without its session.
    other = codec.Session(error=0.03, session_id=12)
    with pytest.raises(codec.SessionMismatchError, match="belongs to session"):
        other.decode(frames[1])
    with pytest.raises(codec.SessionMismatchError):
        codec.decode(frames[3])
    assert isinstance(codec.SessionMismatchError("x"), codec.CodecError)
    # A receiver that lost frames (and a brand-new one) recover from a resync frame, which
    # also decodes on its own.
    late = codec.Session(error=0.03, session_id=11, refresh=3)
    enc.resync()
    blob, sent = enc.encode(drifting(6), reconstruction=True)
    assert np.array_equal(codec.decode(blob), sent)
    for d in (dec, late):
        assert np.array_equal(d.decode(blob), sent)
        assert d.state_hash == enc.state_hash
    blob, sent = enc.encode(drifting(7), reconstruction=True)
    assert np.array_equal(late.decode(blob), sent)
    # A damaged frame is refused (checksums) and changes nothing.
    blob = bytearray(enc.encode(drifting(8)))
    blob[-3] ^= 4
    before = late.state_hash
    with pytest.raises(codec.ChecksumMismatchError):
        late.decode(bytes(blob))
    assert late.state_hash == before


def test_state_bytes_and_pickle_round_trip():
    enc, dec = pair(refresh=4, error_feedback=True)
    for s in range(9):
        dec.decode(enc.encode(drifting(s)))
    enc2 = codec.Session.from_state(enc.state_bytes())
    dec2 = pickle.loads(pickle.dumps(dec))
    assert (enc2.state_hash, dec2.state_hash) == (enc.state_hash, dec.state_hash)
    assert enc2.config == {**enc.config, "threads": 0}
    assert enc2.config["error_feedback"] and enc2.step == 9
    for s in range(9, 14):
        x = drifting(s)
        blob, sent = enc2.encode(x, reconstruction=True)
        assert blob == enc.encode(x)  # residual and basis restored exactly
        assert np.array_equal(dec2.decode(blob), sent)
    state = bytearray(enc.state_bytes())
    state[20] ^= 1
    with pytest.raises(codec.InvalidArgumentError, match="session state"):
        codec.Session.from_state(bytes(state))


def test_error_feedback_keeps_the_running_mean_exact():
    """Sending the same gradient again and again: with error feedback the average of what
    arrives converges to it; without, the error stays."""
    x = drifting(0, rows=64, channels=16)
    for feedback in (True, False):
        enc, dec = pair(error=0.1, error_feedback=feedback)
        acc = np.zeros_like(x, dtype=np.float64)
        first = 0.0
        for _ in range(40):
            y = dec.decode(enc.encode(x))
            first = first or rel(x, y)
            acc += y
        mean_err = rel(x, acc / 40)
        if feedback:
            assert mean_err < 0.2 * first, (mean_err, first)
        else:
            assert mean_err > 0.5 * first, (mean_err, first)


def test_containers_and_codec_session():
    enc = codec.Codec(error=0.05, rounding="stochastic", seed=3).session(5, refresh=2)
    dec = codec.Session(codec.Codec(error=0.05), session_id=5, refresh=2)
    for s in range(4):
        t = torch.from_numpy(drifting(s, rows=32, channels=8)).bfloat16()
        blob, sent = enc.encode(t, reconstruction=True)
        got = dec.decode(blob)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16
        assert torch.equal(got, sent)
        out = torch.empty_like(t)
    assert enc.config["rounding"] == "stochastic" and enc.session_id == 5
    blob = enc.encode(t)
    assert dec.decode(blob, out=out) is out
    assert "Session(session_id=5" in repr(enc)


def test_bad_input():
    with pytest.raises(codec.InvalidArgumentError, match="relative RMSE"):
        codec.Session(codec.Codec("lossless"))
    with pytest.raises(codec.InvalidArgumentError, match="relative RMSE"):
        codec.Session(max_abs_error=0.1)
    with pytest.raises(codec.InvalidArgumentError, match="not both"):
        codec.Session(codec.Codec(error=0.1), error=0.1)
    with pytest.raises(codec.InvalidArgumentError):
        codec.Session(error=0.1, refresh=0)
    with pytest.raises(codec.InvalidArgumentError):
        codec.Session(error=0.1, decay=1.5)
    s = codec.Session(error=0.1)
    s.encode(drifting(0, channels=8))
    with pytest.raises(codec.InvalidArgumentError, match="8 channels"):
        s.encode(drifting(0, channels=9))
    x = drifting(1, channels=8)
    x[3, 3] = np.inf
    with pytest.raises(codec.NonFiniteError):
        s.encode(x)
    with pytest.raises(codec.InvalidArgumentError, match="last dimension"):
        s.encode(np.ones((2, 2000), np.float32))
    with pytest.raises(codec.SessionMismatchError, match="not a session frame"):
        s.decode(codec.encode(x[:2, :2]))
