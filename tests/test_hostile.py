"""Hostile frames and heavy concurrent use."""

from __future__ import annotations

import threading

import iota_codec as codec
import ml_dtypes
import numpy as np
import pytest
import torch
from helpers import bits
from hypothesis import given
from hypothesis import strategies as st
from iota_codec import _core


def _frames() -> list[bytes]:
    rng = np.random.default_rng(0)
    xs = [
        rng.standard_normal((7, 33)).astype(np.float32),
        rng.standard_normal(700).astype(np.float16),
        rng.standard_normal((3, 300)).astype(ml_dtypes.bfloat16),
        np.zeros(50, np.float32),
    ]
    return [codec.encode(x, chunk_size=cs) for x, cs in zip(xs, (50, 256, 1000, 7), strict=True)]


FRAMES = _frames()


@st.composite
def mutated(draw):
    """A valid frame, damaged by a few random edits, then resealed with valid checksums so
    that the damage reaches the stage decoders (a hostile peer computes checksums too)."""
    blob = bytearray(draw(st.sampled_from(FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(0, len(blob) - 1)))
        if kind == "flip" and blob:
            blob[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and blob:
            blob[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            blob[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and blob:
            del blob[i : i + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del blob[i:]
    return _core._reseal(bytes(blob))


@given(mutated())
def test_mutated_frames_fail_cleanly_or_decode_consistently(blob):
    try:
        y = codec.decode(blob, max_output_bytes=1 << 24)
    except codec.CodecError:
        return
    meta = codec.info(blob)
    assert list(y.shape) == meta["shape"]
    assert str(y.dtype).endswith(meta["dtype"])


@given(st.binary(max_size=300))
def test_random_bytes_fail_cleanly(data):
    for blob in (data, b"\x89IOT\x01" + data, _core._reseal(b"\x89IOT\x01" + data)):
        try:
            codec.decode(blob, max_output_bytes=1 << 24)
        except codec.CodecError:
            pass


def test_reseal_makes_damage_reach_the_decoder():
    blob = bytearray(FRAMES[0])
    # The first chunk's rANS table: header, chunk record (8 bytes), mode and drop bytes.
    at = codec.info(FRAMES[0])["header_bytes"] + 8 + 2
    blob[at] ^= 0x7F
    with pytest.raises(codec.ChecksumMismatchError):
        codec.decode(bytes(blob))
    # Resealed, the checksums pass and the stream itself must be found inconsistent.
    with pytest.raises(codec.CorruptFrameError) as e:
        codec.decode(_core._reseal(bytes(blob)))
    assert not isinstance(e.value, codec.ChecksumMismatchError)


def test_eight_threads_thousand_mixed_operations_match_serial():
    rng = np.random.default_rng(3)
    inputs = [
        rng.standard_normal((16, 65)).astype(np.float32),
        rng.standard_normal(3000).astype(np.float16),
        torch.randn(40, 50, dtype=torch.bfloat16),
        rng.standard_normal((2, 2, 2)).astype(ml_dtypes.bfloat16),
    ]
    codecs = [codec.Codec(threads=1, chunk_size=500), codec.Codec(threads=2), codec.Codec()]
    expected = {(i, j): c.encode(x) for i, x in enumerate(inputs) for j, c in enumerate(codecs)}
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            for _ in range(1000):
                i, j = int(r.integers(len(inputs))), int(r.integers(len(codecs)))
                op = int(r.integers(3))
                if op == 0:
                    assert codecs[j].encode(inputs[i]) == expected[(i, j)]
                elif op == 1:
                    y = codecs[j].decode(expected[(i, j)])
                    np.testing.assert_array_equal(bits(y), bits(inputs[i]))
                else:
                    assert codec.info(expected[(i, j)])["frame_bytes"] == len(expected[(i, j)])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors[0]
