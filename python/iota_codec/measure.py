"""Measurement helpers shared by the demo, the benchmarks and ``iota-codec bench``: medians,
order-0 bounds, and peer codecs measured the same way."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _adapt

MANT_BITS = {"float32": 23, "float16": 10, "bfloat16": 7}


def raw_bits(x: Any) -> tuple[np.ndarray, str]:
    """The bit patterns of a float array or tensor as unsigned integers, and its dtype."""
    src = _adapt.as_source(x)
    width = np.uint32 if _adapt.ITEMSIZE[src.dtype] == 4 else np.uint16
    return src.data.view(width), src.dtype


def entropy_bits(symbols: np.ndarray) -> float:
    """Order-0 entropy of integer symbols, in bits per symbol."""
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols.ravel().astype(np.int64))
    p = counts[counts > 0] / symbols.size
    return float(-(p * np.log2(p)).sum())


def lossless_bound(x: Any) -> dict[str, float]:
    """The order-0 bound of the lossless split: the entropy of the sign+exponent symbols plus
    the mantissa bits stored as they are. Returns bits per element, bytes, and the ratio."""
    bits, dtype = raw_bits(x)
    mant = MANT_BITS[dtype]
    h = entropy_bits(bits >> mant)
    per_elem = h + mant
    nbytes = bits.size * per_elem / 8
    raw = bits.size * _adapt.ITEMSIZE[dtype]
    return {
        "symbol_entropy": h,
        "bits_per_element": per_elem,
        "bytes": nbytes,
        "ratio": raw / nbytes if nbytes else float("inf"),
    }


def reverse_water_filling(variances: np.ndarray, distortion: float) -> tuple[float, float]:
    """The rate-distortion function of independent Gaussian components with these
    ``variances`` at a total squared error of ``distortion`` (reverse water-filling): the
    water level ``theta`` with ``sum(min(theta, v)) = distortion`` and the rate
    ``sum(max(0, log2(v / theta) / 2))`` in bits (per vector of components)."""
    v = np.clip(np.asarray(variances, dtype=np.float64), 0.0, None)
    if distortion >= v.sum() or v.size == 0:
        return float(v.max(initial=0.0)), 0.0
    lo, hi = 0.0, float(v.max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.minimum(v, mid).sum() > distortion:
            hi = mid
        else:
            lo = mid
    theta = 0.5 * (lo + hi)
    keep = v > theta
    return theta, float(0.5 * np.log2(v[keep] / theta).sum())


def gaussian_bound(x: Any, error: float) -> dict[str, float]:
    """The Gaussian transform-coding bound for ``x`` (its last dimension the channels, every
    other index a row) at a relative RMSE of ``error``: the rate of a Gaussian source with
    the channels' covariance, by reverse water-filling over its eigenvalues, for a squared
    error of ``error^2`` times the mean squared norm of a row (the channel means are taken as
    known). No real coder reaches it at high rate (entropy-coded scalar quantization loses
    about 0.25 bit per coded coefficient), and a heavy-tailed source can beat it (a Gaussian
    is the hardest source of a given covariance). Returns bits per element and the ratio
    against the raw dtype."""
    src = _adapt.as_source(x)
    rows = _float64(x).reshape(-1, src.shape[-1] if src.shape else 1)
    d = rows.shape[1]
    centered = rows - rows.mean(axis=0)
    lam = np.linalg.eigvalsh(centered.T @ centered / max(len(rows), 1))
    per_row = error * error * float((rows * rows).sum()) / max(len(rows), 1)
    _, rate = reverse_water_filling(lam, per_row)
    bits = rate / d
    raw = 8 * _adapt.ITEMSIZE[src.dtype]
    return {"bits_per_element": bits, "ratio": raw / bits if bits > 0 else float("inf")}


def times_seconds(fn: Callable[[], Any], repeat: int = 7, warmup: int = 1) -> list[float]:
    """The wall times of ``repeat`` runs of ``fn()`` after ``warmup`` untimed runs
    (``time.perf_counter``, the timer pytest-benchmark uses too)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median_seconds(fn: Callable[[], Any], repeat: int = 7, warmup: int = 1) -> float:
    """The median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    return statistics.median(times_seconds(fn, repeat, warmup))


def achieved_error(x: Any, y: Any) -> dict[str, Any]:
    """How far the decoded ``y`` is from the original ``x`` (arrays or tensors of any float
    dtype, same number of elements), computed in float64 over the elements where ``x`` is
    finite:

    - ``rel_rmse``: ||x - y|| / ||x|| (0 when both are zero; inf when only x is);
    - ``max_abs_error``: the largest |x - y|;
    - ``exact``: whether the bit patterns are identical (NaN payloads and signed zeros
      included), i.e. whether the round trip was lossless.
    """
    a, b = _float64(x), _float64(y)
    if a.size != b.size:
        raise ValueError(f"decoded {b.size} elements, expected {a.size}")
    exact = _same_bits(x, y)
    if exact:
        return {"rel_rmse": 0.0, "max_abs_error": 0.0, "exact": True}
    finite = np.isfinite(a)
    if not finite.all():
        a, b = a[finite], b[finite]
    diff = np.abs(a - b)
    if diff.size and not np.isfinite(diff).all():
        # A finite input that comes back as NaN or Inf is an unbounded error.
        return {"rel_rmse": float("inf"), "max_abs_error": float("inf"), "exact": False}
    err = float(np.sqrt(np.dot(diff, diff)))
    norm = float(np.sqrt(np.dot(a, a)))
    if norm == 0.0:
        rel = 0.0 if err == 0.0 else float("inf")
    else:
        rel = err / norm
    return {
        "rel_rmse": rel,
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "exact": False,
    }


def _float64(x: Any) -> np.ndarray:
    if _adapt.is_tensor(x):
        x = x.detach().cpu().reshape(-1)
        import torch

        return x.to(torch.float64).numpy()
    return np.asarray(x).reshape(-1).astype(np.float64)


def _same_bits(x: Any, y: Any) -> bool:
    try:
        bx, dx = raw_bits(x)
        by, dy = raw_bits(y)
    except (ValueError, TypeError):
        return False
    return dx == dy and np.array_equal(bx, by)


@dataclass
class Result:
    """One codec on one tensor: sizes, median timings (encode and decode) and the error of
    the round trip (see :func:`achieved_error`; zero when it was bit-exact)."""

    codec: str
    raw_bytes: int
    coded_bytes: int
    encode_s: float
    decode_s: float
    rel_rmse: float = 0.0
    max_abs_error: float = 0.0
    exact: bool | None = None
    encode_times: list[float] = field(default_factory=list, repr=False)
    decode_times: list[float] = field(default_factory=list, repr=False)

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.coded_bytes if self.coded_bytes else float("inf")

    @property
    def encode_gbps(self) -> float:
        return self.raw_bytes / self.encode_s / 1e9

    @property
    def decode_gbps(self) -> float:
        return self.raw_bytes / self.decode_s / 1e9


def measure(
    name: str,
    encode: Callable[[], bytes],
    decode: Callable[[bytes], Any],
    raw_bytes: int,
    repeat: int = 7,
    check: Callable[[Any], bool] | None = None,
    reference: Any = None,
    warmup: int = 1,
) -> Result:
    """Times ``encode()`` and ``decode(blob)`` (medians of ``repeat`` runs after ``warmup``
    runs each); ``check`` verifies the decoded result; with ``reference`` (the original
    tensor) the result carries the :func:`achieved_error` of the round trip."""
    blob = encode()
    out = decode(blob)
    if check is not None and not check(out):
        raise AssertionError(f"{name}: decoded data does not match the input")
    err = achieved_error(reference, out) if reference is not None else {}
    del out
    # The calls above count as the first warmup run of each.
    enc = times_seconds(encode, repeat, max(0, warmup - 1))
    dec = times_seconds(lambda: decode(blob), repeat, max(0, warmup - 1))
    return Result(
        codec=name,
        raw_bytes=raw_bytes,
        coded_bytes=len(blob),
        encode_s=statistics.median(enc),
        decode_s=statistics.median(dec),
        rel_rmse=err.get("rel_rmse", 0.0),
        max_abs_error=err.get("max_abs_error", 0.0),
        exact=err.get("exact"),
        encode_times=enc,
        decode_times=dec,
    )


def zstd_peer(level: int = 3) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] | None:
    """zstd compress/decompress on one thread, or None if ``zstandard`` is missing."""
    try:
        import zstandard
    except ImportError:
        return None
    c = zstandard.ZstdCompressor(level=level, threads=0)
    d = zstandard.ZstdDecompressor()
    return c.compress, d.decompress
