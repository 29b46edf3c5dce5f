"""Streaming: encode piece by piece, decode as pieces arrive."""

from __future__ import annotations

import iota_codec as codec
import ml_dtypes
import numpy as np
import pytest
import torch
from helpers import bits
from hypothesis import given
from hypothesis import strategies as st


def test_pieces_concatenate_to_the_frame():
    x = np.random.default_rng(0).standard_normal((100, 1000)).astype(ml_dtypes.bfloat16)
    for threads in (1, 2, None):
        c = codec.Codec(chunk_size=7000, threads=threads)
        enc = c.encode_stream(x)
        assert enc.n_pieces == 1 + 15
        pieces = list(enc)
        assert len(pieces) == 16 and all(isinstance(p, bytes) for p in pieces)
        assert b"".join(pieces) == c.encode(x)


@given(st.lists(st.integers(1, 3000), min_size=1, max_size=50))
def test_decoder_takes_any_split(cuts):
    x = torch.randn(30, 333, dtype=torch.float16)
    c = codec.Codec(chunk_size=1000, threads=1)
    blob = c.encode(x)
    dec = c.decoder()
    at = 0
    for n in cuts:
        dec.feed(blob[at : at + n])
        at += n
    dec.feed(blob[at:])
    y = dec.result()
    assert isinstance(y, torch.Tensor) and torch.equal(bits_t(y), bits_t(x))


def bits_t(t):
    return torch.from_numpy(bits(t).astype(np.int64))


def test_chunks_are_decoded_as_they_arrive():
    x = np.arange(10_000, dtype=np.float32)
    c = codec.Codec(chunk_size=1000, threads=1)
    out = np.zeros_like(x)
    dec = c.decoder(out=out)
    assert dec.header is None and dec.progress == (0, None)
    pieces = list(c.encode_stream(x))
    assert dec.feed(pieces[0]) == 0
    assert dec.header == {"dtype": "float32", "shape": [10_000], "container": "numpy"}
    for i, p in enumerate(pieces[1:]):
        assert dec.feed(p) == 1
        np.testing.assert_array_equal(out[: (i + 1) * 1000], x[: (i + 1) * 1000])
        assert dec.progress == (i + 1, 10)
    assert dec.done
    assert dec.result() is out


def test_incomplete_or_damaged_streams_raise():
    x = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    blob = codec.encode(x, chunk_size=1000)
    dec = codec.Codec().decoder()
    dec.feed(blob[:-5])
    assert not dec.done
    with pytest.raises(codec.CorruptFrameError, match="truncated"):
        dec.result()
    dec = codec.Codec().decoder()
    dec.feed(blob)
    with pytest.raises(codec.CorruptFrameError):
        dec.feed(b"more")
    bad = bytearray(blob)
    bad[len(blob) // 2] ^= 1
    with pytest.raises(codec.ChecksumMismatchError):
        codec.Codec().decoder().feed(bytes(bad))
    with pytest.raises(codec.LimitExceededError):
        codec.Codec(max_output_bytes=100).decoder().feed(blob)
