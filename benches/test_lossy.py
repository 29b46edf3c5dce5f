"""Lossy coding on real transformer boundary tensors in bfloat16, one thread.

- Error-bounded mode at relative RMSE 1%, 3% and 10%: achieved error, ratio, and the ratio of
  an ideal coder for the same quantizer (the same step; order-0 entropy of the integer
  symbols ``round(x / step)`` over the whole tensor, no side information), with the
  percentage reached; next to a hand-written numpy peer: row-wise int8 (a float32 scale per
  row) + zstd level 3.
- Fixed-rate formats and the profiles: ratio, error, encode and decode speed.

Run with ``pytest benches --benchmark-only`` (tables print at the end); they run on the
``activation`` and ``gradient`` sets when ``IOTA_BENCH_SETS`` names them (the default).
"""

from __future__ import annotations

import iota_codec as codec
import numpy as np
import pytest
import torch
from conftest import LOSSY, SETS
from iota_codec import measure

# The model tensors, unless IOTA_BENCH_SETS leaves them out.
TENSORS = [t for t in ("activation", "gradient") if t in SETS]
ERRORS = [0.01, 0.03, 0.1]
FIXED = {
    "fast profile": {"profile": "fast"},
    "mxint8": {"format": "mxint8"},
    "mxfp8 (e4m3)": {"format": "mxfp8_e4m3"},
    "mxfp8 (e5m2)": {"format": "mxfp8_e5m2"},
    "mxfp4": {"format": "mxfp4"},
    "int4 bf16-scale/32": {"bits": 4, "scale": "bf16", "block": 32},
    "int4 + rANS": {"bits": 4, "scale": "bf16", "block": 32, "entropy": True},
    "int8 + rANS": {"bits": 8, "scale": "bf16", "block": 64, "entropy": True},
}
PROFILES = list(codec.PROFILES)


@pytest.fixture(scope="module")
def boundary():
    from iota_codec.data import boundary_tensors

    return boundary_tensors()


def _bf16(boundary, name):
    return boundary[name].to(torch.bfloat16).contiguous()


def _f64(t) -> np.ndarray:
    return t.float().numpy().astype(np.float64).ravel()


def _rel(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(((x - y) ** 2).sum() / (x * x).sum()))


def _record(key, **values):
    LOSSY[key].update(values)


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("tensor", TENSORS)
def test_error_bounded(benchmark, boundary, tensor, error):
    x = _bf16(boundary, tensor)
    c = codec.Codec(error=error, threads=1)
    benchmark.group = f"error-bounded {tensor}"
    blob = benchmark(c.encode, x)
    y = c.decode(blob)
    xf, yf = _f64(x), _f64(y)
    achieved = _rel(xf, yf)
    assert achieved <= error
    step = codec.info(blob)["stages"][0]["step"]
    h = measure.entropy_bits(np.rint(xf / step).astype(np.int64) - int(np.rint(xf / step).min()))
    ideal = 16 / h
    ratio = x.numel() * 2 / len(blob)
    _record(
        ("bounded", tensor, error),
        error=achieved,
        ratio=ratio,
        ideal=ideal,
        encode=benchmark.stats.stats.median,
        decode=measure.median_seconds(lambda: c.decode(blob), 5),
        mb=x.numel() * 2 / 1e6,
    )
    benchmark.extra_info.update(error=achieved, ratio=ratio, ideal=ideal)


def _int8_zstd():
    """Row-wise int8 (float32 scale = row amax / 127) + zstd-3: a hand-written peer."""
    zstd = measure.zstd_peer(3)
    if zstd is None:
        pytest.skip("zstandard is not installed")
    comp, decomp = zstd

    def encode(x: torch.Tensor) -> bytes:
        a = x.float().numpy().reshape(-1, x.shape[-1])
        scale = (np.abs(a).max(axis=1, keepdims=True) / 127).astype(np.float32)
        q = np.rint(a / np.where(scale > 0, scale, 1)).astype(np.int8)
        return comp(scale.tobytes() + q.tobytes())

    def decode(blob: bytes, shape) -> torch.Tensor:
        raw = decomp(blob)
        rows = int(np.prod(shape[:-1]))
        scale = np.frombuffer(raw[: 4 * rows], np.float32).reshape(rows, 1)
        q = np.frombuffer(raw[4 * rows :], np.int8).reshape(rows, -1)
        return torch.from_numpy((q * scale).reshape(shape)).bfloat16()

    return encode, decode


@pytest.mark.parametrize("tensor", TENSORS)
def test_peer_int8_zstd(benchmark, boundary, tensor):
    x = _bf16(boundary, tensor)
    encode, decode = _int8_zstd()
    benchmark.group = f"error-bounded {tensor}"
    blob = benchmark(encode, x)
    y = decode(blob, tuple(x.shape))
    _record(
        ("peer", tensor),
        error=_rel(_f64(x), _f64(y)),
        ratio=x.numel() * 2 / len(blob),
        encode=benchmark.stats.stats.median,
        decode=measure.median_seconds(lambda: decode(blob, tuple(x.shape)), 5),
        mb=x.numel() * 2 / 1e6,
    )


@pytest.mark.parametrize("name", list(FIXED) + [f"profile {p}" for p in PROFILES])
@pytest.mark.parametrize("tensor", TENSORS)
def test_formats_and_profiles(benchmark, boundary, tensor, name):
    x = _bf16(boundary, tensor)
    kw = FIXED.get(name) or {"profile": name.removeprefix("profile ")}
    c = codec.Codec(**kw, threads=1)
    benchmark.group = f"formats {tensor}"
    blob = benchmark(c.encode, x)
    y = c.decode(blob)
    _record(
        ("fixed" if name in FIXED else "profile", tensor, name),
        error=_rel(_f64(x), _f64(y)),
        ratio=x.numel() * 2 / len(blob),
        encode=benchmark.stats.stats.median,
        decode=measure.median_seconds(lambda: c.decode(blob), 5),
        mb=x.numel() * 2 / 1e6,
    )
