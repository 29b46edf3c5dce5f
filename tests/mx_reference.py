"""An independent reference of the fixed-rate block formats (docs/FORMAT.md, "block_quant"),
written with numpy and ml_dtypes' own minifloat types, for bit-exact comparisons.

It follows the spec's definitions, not the Rust code: per block, ``amax`` over the finite
elements; the scale (E8M0 per OCP MX v1.0, or ``amax / max`` rounded to float16/bfloat16);
``t = x / scale`` in float32; elements by ml_dtypes' conversions (round to nearest even, after
clipping to the largest finite value) or by stochastic rounding from the documented hash;
the decoded value ``element * scale`` in float32, rounded to the tensor's dtype (saturating).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

F32 = np.float32
ELEMENT_TYPES = {
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e2m1": ml_dtypes.float4_e2m1fn,
}
# (max finite value, emax, mantissa bits, min normal exponent) of the minifloats.
MINIFLOAT = {"e4m3": (448.0, 8, 3, -6), "e5m2": (57344.0, 15, 2, -14), "e2m1": (6.0, 2, 1, 0)}
DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def int_bits(fmt: str) -> int:
    return int(fmt.removeprefix("int"))


def max_value(fmt: str) -> float:
    if fmt.startswith("int"):
        return float(2 ** (int_bits(fmt) - 1) - 1)
    return MINIFLOAT[fmt][0]


def to_dtype_saturating(v: np.ndarray, dtype: str) -> np.ndarray:
    """Rounds float32 values to ``dtype`` (nearest even); finite values never become inf."""
    t = DTYPES[dtype]
    with np.errstate(over="ignore"):
        out = v.astype(t)
    big = np.isinf(out.astype(F32)) & np.isfinite(v)
    if big.any():
        out[big] = (np.sign(v[big]) * float(ml_dtypes.finfo(t).max)).astype(t)
    return out


def thresholds(seed: int, index: np.ndarray) -> np.ndarray:
    """The stochastic-rounding threshold of each element index (splitmix64 finalizer)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (index.astype(np.uint64) + np.uint64(1)) * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(F32) * F32(2.0**-24)


def _round_sr(a: np.ndarray, u: np.ndarray) -> np.ndarray:
    f = np.floor(a)
    return f + (a - f > u).astype(F32)


def quantize_elements(t: np.ndarray, fmt: str, u: np.ndarray | None) -> np.ndarray:
    """Element values (float32; integers in code units) of the scaled values ``t``."""
    m = F32(max_value(fmt))
    if fmt.startswith("int"):
        r = np.rint(t) if u is None else np.copysign(_round_sr(np.abs(t), u), t)
        # Two's complement codes have no negative zero.
        return (np.clip(r, -m, m) + F32(0)).astype(F32)
    if u is None:
        return np.clip(t, -m, m).astype(ELEMENT_TYPES[fmt]).astype(F32)
    # Stochastic: round |t| up or down on the element's grid.
    _, _, man, emin = MINIFLOAT[fmt]
    a = np.abs(t)
    with np.errstate(divide="ignore"):
        e = np.frexp(a)[1].astype(np.int32) - 1
    e = np.maximum(np.where(a > 0, e, emin), emin)
    quantum = np.ldexp(F32(1), e - man).astype(F32)
    v = np.minimum(_round_sr(a / quantum, u) * quantum, m)
    v = np.where(a >= m, m, v)
    return np.copysign(v, t).astype(F32)


def block_scale(amax: np.ndarray, fmt: str, scale: str) -> np.ndarray:
    """The multiplier of each block (float32)."""
    if scale == "e8m0":
        emax = 0 if fmt.startswith("int") else MINIFLOAT[fmt][1]
        frac = int_bits(fmt) - 2 if fmt.startswith("int") else 0
        with np.errstate(divide="ignore"):
            e = np.frexp(amax)[1].astype(np.int64) - 1
        code = np.where(amax > 0, np.clip(e - emax + 127, 0, 254), 0)
        # E8M0 as ml_dtypes reads it, scaled by the integer formats' fraction bits.
        x = code.astype(np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(F32)
        return np.ldexp(x, -frac).astype(F32)
    t = {"f16": "float16", "bf16": "bfloat16"}[scale]
    return to_dtype_saturating((amax / F32(max_value(fmt))).astype(F32), t).astype(F32)


def round_trip(
    x: np.ndarray,
    fmt: str,
    block: int,
    scale: str,
    seed: int | None = None,
) -> np.ndarray:
    """What encoding ``x`` (a float array of any dtype) with the format and decoding gives,
    per the spec. Non-finite elements are carried as they are."""
    dtype = {np.dtype(v).name: k for k, v in DTYPES.items()}[x.dtype.name]
    flat = x.reshape(-1).astype(F32)
    n = flat.size
    nb = -(-n // block)
    pad = np.zeros(nb * block, F32)
    pad[:n] = flat
    finite = np.isfinite(pad)
    blocks = np.where(finite, pad, 0).reshape(nb, block)
    amax = np.abs(blocks).max(axis=1).astype(F32)
    mult = block_scale(amax, fmt, scale)[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = np.where(mult != 0, blocks / mult, 0).astype(F32)
    u = None
    if seed is not None:
        u = thresholds(seed, np.arange(nb * block)).reshape(nb, block)
    vals = quantize_elements(t, fmt, u)
    out = (vals * mult).astype(F32).reshape(-1)[:n]
    y = to_dtype_saturating(out, dtype)
    keep = ~np.isfinite(flat)
    y[keep] = x.reshape(-1)[keep]
    return y.reshape(x.shape)
