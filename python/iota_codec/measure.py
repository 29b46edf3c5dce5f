"""Measurement helpers shared by the demo, the benchmarks and ``iota-codec bench``: medians,
order-0 bounds, and peer codecs measured the same way."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
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


def median_seconds(fn: Callable[[], Any], repeat: int = 7, warmup: int = 1) -> float:
    """The median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@dataclass
class Result:
    """One codec on one tensor: sizes and median timings (encode and decode)."""

    codec: str
    raw_bytes: int
    coded_bytes: int
    encode_s: float
    decode_s: float

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
) -> Result:
    """Times ``encode()`` and ``decode(blob)``; ``check`` verifies the decoded result."""
    blob = encode()
    if check is not None and not check(decode(blob)):
        raise AssertionError(f"{name}: decoded data does not match the input")
    return Result(
        codec=name,
        raw_bytes=raw_bytes,
        coded_bytes=len(blob),
        encode_s=median_seconds(encode, repeat),
        decode_s=median_seconds(lambda: decode(blob), repeat),
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
