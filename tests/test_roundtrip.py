"""Bit-exact round trips of every supported input kind, dtype and shape."""

from __future__ import annotations

import os
import subprocess
import sys

import iota_codec as codec
import ml_dtypes
import numpy as np
import pytest
import torch
from helpers import BITS, NUMPY, bits
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = ["float32", "float16", "bfloat16"]
TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Bit patterns every lossless path must carry: NaN payloads of both signs, infinities,
# signed zeros, subnormals, extremes.
SPECIALS = {
    "float32": [
        0x7FC00000,
        0x7F800001,
        0xFFC00123,
        0x7F800000,
        0xFF800000,
        0,
        0x80000000,
        0x00000001,
        0x807FFFFF,
        0x7F7FFFFF,
        0x00800000,
    ],
    "float16": [0x7E00, 0x7C01, 0xFE21, 0x7C00, 0xFC00, 0, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0x0400],
    "bfloat16": [0x7FC0, 0x7F81, 0xFFC1, 0x7F80, 0xFF80, 0, 0x8000, 0x0001, 0x807F, 0x7F7F, 0x0080],
}


def realistic_bits(dtype: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 30.0], n)).astype(NUMPY[dtype])
    return x.view(BITS[dtype])


@st.composite
def float_bits(draw, dtype: str):
    """An array of raw bit patterns: realistic values mixed with arbitrary and special ones."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40))
    n = int(np.prod(shape))
    base = realistic_bits(dtype, n, draw(st.integers(0, 2**32 - 1)))
    mix = draw(st.sampled_from(["realistic", "arbitrary", "specials", "mixed"]))
    top = (1 << (8 * np.dtype(BITS[dtype]).itemsize)) - 1
    if mix == "arbitrary":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        base = rng.integers(0, top, n, dtype=BITS[dtype], endpoint=True)
    elif mix == "specials":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        base = rng.choice(np.array(SPECIALS[dtype], dtype=BITS[dtype]), n)
    elif mix == "mixed" and n:
        idx = draw(st.lists(st.integers(0, n - 1), max_size=min(n, 20)))
        vals = draw(
            st.lists(st.sampled_from(SPECIALS[dtype]), min_size=len(idx), max_size=len(idx))
        )
        base = base.copy()
        base[idx] = vals
    return base.reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_numpy_round_trip(dtype, data):
    raw = data.draw(float_bits(dtype))
    x = raw.view(NUMPY[dtype])
    chunk = data.draw(st.sampled_from([None, 1, 7, 512, 1000]))
    blob = codec.encode(x, chunk_size=chunk)
    # Up to 40^4 elements in chunks of one can exceed the default max_chunks (2^20).
    y = codec.Codec(max_chunks=max(x.size, 1)).decode(blob)
    assert isinstance(y, np.ndarray)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(bits(y), raw)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_torch_round_trip(dtype, data):
    raw = data.draw(float_bits(dtype))
    signed = np.int32 if dtype == "float32" else np.int16
    t = torch.from_numpy(raw.view(signed).copy()).view(TORCH[dtype])
    y = codec.decode(codec.encode(t))
    assert isinstance(y, torch.Tensor)
    assert y.dtype == t.dtype and tuple(y.shape) == tuple(t.shape)
    np.testing.assert_array_equal(bits(y), raw)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_buffer_round_trip(dtype, data):
    raw = data.draw(float_bits(dtype))
    blob = codec.encode(raw.tobytes(), dtype=dtype, shape=raw.shape)
    y = codec.decode(blob)
    assert isinstance(y, np.ndarray) and y.shape == raw.shape
    np.testing.assert_array_equal(bits(y), raw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_16_bit_pattern(dtype):
    """All 65536 patterns of a 16-bit type (and a sweep of float32's), in both orders."""
    if dtype == "float32":
        raw = (np.arange(1 << 16, dtype=np.uint32) * 65537 + 12345).astype(np.uint32)
    else:
        raw = np.arange(1 << 16, dtype=np.uint16)
    for order in (raw, raw[::-1].copy()):
        y = codec.decode(codec.encode(order.view(NUMPY[dtype])))
        np.testing.assert_array_equal(bits(y), order)


def test_non_contiguous_inputs_are_copied():
    x = np.arange(200, dtype=np.float32).reshape(10, 20)[:, ::3]
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(codec.decode(codec.encode(x)), x)
    t = torch.arange(200, dtype=torch.bfloat16).reshape(10, 20).t()
    assert not t.is_contiguous()
    assert torch.equal(codec.decode(codec.encode(t)), t)
    big_endian = np.arange(10, dtype=">f4")
    y = codec.decode(codec.encode(big_endian))
    np.testing.assert_array_equal(y, big_endian)


def test_tensor_with_grad_and_bf16_without_float32_detour():
    t = torch.randn(8, 9, dtype=torch.bfloat16, requires_grad=True)
    y = codec.decode(codec.encode(t))
    assert not y.requires_grad and torch.equal(y, t.detach())


def test_output_does_not_depend_on_threads():
    x = realistic_bits("bfloat16", 300_000, 5).view(ml_dtypes.bfloat16)
    blobs = {codec.encode(x, threads=t, chunk_size=10_000) for t in (1, 2, 3, 0)}
    assert len(blobs) == 1
    (blob,) = blobs
    for t in (1, 2, 4):
        np.testing.assert_array_equal(bits(codec.decode(blob, threads=t)), x.view(np.uint16))


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_does_not_depend_on_simd_level(dtype, tmp_path):
    """The scalar reference kernels (forced by IOTA_CODEC_SIMD) write the same bytes, for
    every profile."""
    x = realistic_bits(dtype, 100_003, 9).view(NUMPY[dtype])
    np.save(tmp_path / "x.npy", x.view(BITS[dtype]))
    profiles = ("lossless", "fast", "balanced", "max")
    script = (
        "import sys, ml_dtypes, numpy as np, iota_codec as c\n"
        f"x = np.load(sys.argv[1]).view(np.dtype({np.dtype(NUMPY[dtype]).name!r}))\n"
        f"for p in {profiles!r}:\n"
        "    blob = c.Codec(p, chunk_size=30_000).encode(x)\n"
        "    sys.stdout.buffer.write(len(blob).to_bytes(8, 'little') + blob)\n"
    )
    env = dict(os.environ, IOTA_CODEC_SIMD="scalar")
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "x.npy")],
        env=env,
        check=True,
        capture_output=True,
    ).stdout
    for p in profiles:
        n = int.from_bytes(out[:8], "little")
        blob, out = out[8 : 8 + n], out[8 + n :]
        assert blob == codec.Codec(p, chunk_size=30_000).encode(x), p
    assert out == b""


def test_compresses_activation_like_data():
    """Gaussian-ish bf16 (like a residual stream) compresses close to its order-0 bound."""
    x = realistic_bits("bfloat16", 1 << 18, 11)
    blob = codec.encode(x.view(ml_dtypes.bfloat16))
    sym = x >> 7
    p = np.bincount(sym, minlength=512) / sym.size
    h = -(p[p > 0] * np.log2(p[p > 0])).sum()
    bound_bytes = sym.size * (h + 7) / 8
    assert len(blob) < bound_bytes / 0.99
