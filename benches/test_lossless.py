"""Lossless profile against zstd level 3, one thread each, on real transformer boundary
tensors: ratio, order-0 bound, and encode/decode time (grouped per tensor so that
pytest-benchmark prints both codecs side by side)."""

from __future__ import annotations

import iota_codec as codec
import numpy as np
import pytest
import torch
from conftest import SUMMARY
from iota_codec import measure

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
CODECS = ["iota", "zstd-3"]


def _tensor(boundary, name, dtype):
    return boundary[name].to(DTYPES[dtype]).contiguous()


def _coder(name):
    if name == "iota":
        c = codec.Codec("lossless", threads=1)
        return c.encode, c.decode
    zstd = measure.zstd_peer(3)
    if zstd is None:
        pytest.skip("zstandard is not installed")
    comp, decomp = zstd
    return (lambda t: comp(measure.raw_bits(t)[0].tobytes())), decomp


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("tensor", ["activation", "gradient"])
@pytest.mark.parametrize("name", CODECS)
def test_encode(benchmark, boundary, name, tensor, dtype):
    x = _tensor(boundary, tensor, dtype)
    raw = measure.raw_bits(x)[0]
    if name == "zstd-3":
        # zstd sees plain bytes: take them once, outside the timing.
        buf = raw.tobytes()
        comp = measure.zstd_peer(3)
        if comp is None:
            pytest.skip("zstandard is not installed")
        encode = lambda: comp[0](buf)  # noqa: E731
    else:
        enc, _ = _coder(name)
        encode = lambda: enc(x)  # noqa: E731
    benchmark.group = f"encode {tensor} {dtype}"
    blob = benchmark(encode)
    s = SUMMARY[(tensor, dtype)]
    s["ratio"][name] = raw.nbytes / len(blob)
    s["encode"][name] = benchmark.stats.stats.median
    if name == "iota":
        bound = measure.lossless_bound(x)
        s["bound"] = bound["ratio"]
        s["bound_bytes"] = bound["bytes"]
        s["coded_bytes"] = len(blob)
    benchmark.extra_info["ratio"] = raw.nbytes / len(blob)
    benchmark.extra_info["MB"] = raw.nbytes / 1e6


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("tensor", ["activation", "gradient"])
@pytest.mark.parametrize("name", CODECS)
def test_decode(benchmark, boundary, name, tensor, dtype):
    x = _tensor(boundary, tensor, dtype)
    raw = measure.raw_bits(x)[0]
    if name == "zstd-3":
        zstd = measure.zstd_peer(3)
        if zstd is None:
            pytest.skip("zstandard is not installed")
        blob = zstd[0](raw.tobytes())
        decode = zstd[1]
    else:
        c = codec.Codec("lossless", threads=1)
        blob = c.encode(x)
        decode = c.decode
    benchmark.group = f"decode {tensor} {dtype}"
    y = benchmark(decode, blob)
    got = np.frombuffer(y, raw.dtype) if isinstance(y, bytes) else measure.raw_bits(y)[0]
    assert np.array_equal(got, raw)
    SUMMARY[(tensor, dtype)]["decode"][name] = benchmark.stats.stats.median
