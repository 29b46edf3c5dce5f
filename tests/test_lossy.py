"""Lossy coding: error bounds (hypothesis, on random, heavy-tailed and outlier-channel data),
fixed-rate formats against an independent reference, stochastic rounding, non-finite values,
settings and configs."""

from __future__ import annotations

import json
import re

import iota_codec as codec
import ml_dtypes
import numpy as np
import pytest
import torch
from helpers import BITS, NUMPY, bits
from hypothesis import given
from hypothesis import strategies as st
from mx_reference import round_trip

DTYPES = ["float32", "float16", "bfloat16"]
FORMATS = ["int8", "int4", "int3", "int2", "e4m3", "e5m2", "e2m1"]


def make_data(kind: str, shape: tuple[int, ...], seed: int, scale: float = 1.0) -> np.ndarray:
    """float64 test data: ``normal``, ``student_t`` (heavy tails) or ``outlier_channels``."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "student_t":
        x = rng.standard_t(rng.choice([1.5, 3.0, 5.0]), shape)
    else:
        x = rng.standard_normal(shape)
        channels = shape[-1]
        hot = rng.choice(channels, max(1, channels // 50), replace=False)
        x[..., hot] *= rng.uniform(20, 200)
    return x * scale


def to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        y = x.astype(NUMPY[dtype])
    finite_max = float(ml_dtypes.finfo(NUMPY[dtype]).max)
    return np.where(np.isfinite(y.astype(np.float64)), y, finite_max).astype(NUMPY[dtype])


def as64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.float().numpy()
    return np.asarray(a).astype(np.float64)


def rel_rmse(x, y) -> float:
    x, y = as64(x), as64(y)
    den = np.sqrt((x * x).sum())
    return float(np.sqrt(((x - y) ** 2).sum()) / den) if den else float(np.abs(y).max(initial=0))


@st.composite
def tensors(draw, min_elems: int = 1):
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["normal", "student_t", "outlier_channels"]))
    rows = draw(st.integers(1, 64))
    least = max(1, -(-min_elems // rows))
    cols = draw(st.integers(least, max(400, 2 * least)))
    scale = draw(st.sampled_from([1e-6, 1e-3, 1.0, 30.0]))
    if dtype == "float16" and scale == 1e-6:
        scale = 1e-3  # float16 would flush such data to subnormals and zeros
    x = make_data(kind, (rows, cols), draw(st.integers(0, 2**31)), scale)
    return to_dtype(x, dtype), dtype


@given(
    data=tensors(),
    error=st.floats(1e-3, 0.5),
    step=st.sampled_from(["global", "channel", "block"]),
    rounding=st.sampled_from(["nearest", "stochastic"]),
    chunk=st.sampled_from([None, 256, 3000]),
)
def test_relative_rmse_bound_holds(data, error, step, rounding, chunk):
    x, _ = data
    c = codec.Codec(error=error, step=step, rounding=rounding, chunk_size=chunk)
    y = c.decode(c.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    assert rel_rmse(x, y) <= error


@given(
    data=tensors(),
    rel=st.floats(1e-4, 1.0),
    rounding=st.sampled_from(["nearest", "stochastic"]),
)
def test_max_abs_error_bound_holds(data, rel, rounding):
    x, _ = data
    bound = float(np.abs(as64(x)).max() * rel) or 1e-3
    c = codec.Codec(max_abs_error=bound, rounding=rounding)
    y = c.decode(c.encode(x))
    assert np.abs(as64(x) - as64(y)).max() <= bound


@given(
    data=tensors(min_elems=4096),
    target=st.floats(1.0, 10.0),
    step=st.sampled_from(["global", "channel", "block"]),
)
def test_target_bits_bound_holds(data, target, step):
    x, _ = data
    # A step per channel costs 16 bits per channel and chunk: with few rows that alone can
    # exceed the target, and the encoder says so instead of missing it.
    try:
        blob = codec.encode(x, target_bits=target, step=step)
    except codec.InvalidArgumentError as e:
        least = float(re.search(r"takes ([0-9.]+) bits", str(e)).group(1))
        assert step == "channel" and least > target, str(e)
        return
    assert len(blob) * 8 <= target * x.size
    y = codec.decode(blob)
    assert y.shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("scale", ["e8m0", "f16", "bf16"])
def test_fixed_rate_matches_reference(dtype, fmt, scale):
    rng = np.random.default_rng(FORMATS.index(fmt))
    x = to_dtype(rng.standard_t(3, 3000) * rng.choice([1e-3, 1.0, 50.0], 3000), dtype)
    x = x.reshape(30, 100)
    for block in (16, 32, 48, 256):
        for seed in (None, 11):
            kw = {"rounding": "stochastic", "seed": seed} if seed is not None else {}
            c = codec.Codec(format=fmt, scale=scale, block=block, chunk_size=1000, **kw)
            y = c.decode(c.encode(x))
            want = round_trip(x, fmt, block, scale, seed)
            np.testing.assert_array_equal(bits(y), bits(want), err_msg=f"{block} {seed}")
            # The entropy-coded variant decodes to the same values.
            c = codec.Codec(format=fmt, scale=scale, block=block, entropy=True, **kw)
            np.testing.assert_array_equal(bits(c.decode(c.encode(x))), bits(want))


@pytest.mark.parametrize("mx", sorted(codec.MX_FORMATS))
def test_mx_formats_are_the_ocp_ones(mx):
    x = np.random.default_rng(5).standard_normal((8, 96)).astype(np.float32)
    blob = codec.encode(x, format=mx)
    (stage,) = codec.info(blob)["stages"]
    assert stage["name"] == "block_quant"
    assert (stage["element"], stage["block"], stage["scale"]) == (codec.MX_FORMATS[mx], 32, "e8m0")
    np.testing.assert_array_equal(
        codec.decode(blob), round_trip(x, codec.MX_FORMATS[mx], 32, "e8m0")
    )
    bits_per = stage["bits"] + 8 / 32
    assert len(blob) < x.size * bits_per / 8 + 100


def test_fixed_rate_sizes_are_fixed():
    x = np.random.default_rng(1).standard_normal(1 << 16).astype(ml_dtypes.bfloat16)
    for fmt, bits_per in [("int8", 8), ("int4", 4), ("int3", 3), ("int2", 2), ("e2m1", 4)]:
        for scale, scale_bits in [("e8m0", 8), ("bf16", 16)]:
            blob = codec.encode(x, format=fmt, scale=scale, block=64)
            payload = x.size * (bits_per + scale_bits / 64) / 8
            assert payload < len(blob) < payload + 200, (fmt, scale)


def test_stochastic_rounding_is_unbiased():
    """Values between two codes: nearest rounding is biased, stochastic rounding is not
    (a fixed seed, 2^16 draws per value, a 5-sigma bound)."""
    n = 1 << 16
    for frac in (0.1, 0.3, 0.5, 0.85):
        # Blocks of 16: one element pins the int4 scale at 1/7, the others sit at
        # (3 + frac) / 7, between codes 3 and 4.
        x = np.full(n, (3 + frac) / 7, np.float32)
        x[::16] = 1.0
        step = float(np.float32(np.float16(1 / 7)))
        for rounding, unbiased in (("stochastic", True), ("nearest", False)):
            seed = 1234 if unbiased else None
            c = codec.Codec(bits=4, scale="f16", block=16, rounding=rounding, seed=seed)
            y = c.decode(c.encode(x)).astype(np.float64)
            mask = np.ones(n, bool)
            mask[::16] = False
            bias = (y[mask] - x[mask].astype(np.float64)).mean()
            sigma = step / 2 / np.sqrt(mask.sum())
            if unbiased:
                assert abs(bias) < 5 * sigma, (frac, bias, sigma)
            elif frac != 0.5:
                assert abs(bias) > 0.05 * step, (frac, bias)
    # The error-bounded quantizer's stochastic rounding is unbiased too.
    x = np.full(1 << 16, 0.123456, np.float32)
    x[0] = 10.0
    c = codec.Codec(max_abs_error=0.01, rounding="stochastic", seed=99)
    y = c.decode(c.encode(x)).astype(np.float64)
    bias = (y[1:] - np.float64(x[1])).mean()
    assert abs(bias) < 5 * 0.01 / np.sqrt(x.size)
    c = codec.Codec(max_abs_error=0.01)
    y = c.decode(c.encode(x)).astype(np.float64)
    assert abs((y[1:] - np.float64(x[1])).mean()) > 1e-3


def test_stochastic_rounding_is_reproducible_and_independent_of_chunks_and_threads():
    x = make_data("student_t", (64, 500), 3).astype(np.float32)
    ys = []
    for chunk, threads in [(None, 1), (1024, 2), (4096, 0)]:
        for kw in ({"bits": 4}, {"error": 0.05}):
            c = codec.Codec(**kw, rounding="stochastic", seed=7, chunk_size=chunk, threads=threads)
            ys.append((str(kw), c.decode(c.encode(x))))
    for key in ("{'bits': 4}", "{'error': 0.05}"):
        got = [y for k, y in ys if k == key]
        for y in got[1:]:
            np.testing.assert_array_equal(y, got[0])
    a = codec.encode(x, bits=4, rounding="stochastic", seed=7)
    assert a == codec.encode(x, bits=4, rounding="stochastic", seed=7)
    assert a != codec.encode(x, bits=4, rounding="stochastic", seed=8)


SPECIALS = {
    "float32": [0x7FC00001, 0xFF800000, 0x7F800000, 0xFFC00000],
    "float16": [0x7E01, 0xFC00, 0x7C00, 0xFE00],
    "bfloat16": [0x7FC1, 0xFF80, 0x7F80, 0xFFC0],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kw",
    [
        {"profile": "fast"},
        {"profile": "balanced"},
        {"format": "mxfp4", "entropy": True},
        {"max_abs_error": 0.01},
        {"target_bits": 4.0, "step": "block"},
    ],
    ids=str,
)
def test_nonfinite_values_raise_or_are_kept(dtype, kw):
    raw = to_dtype(make_data("normal", (4000,), 2), dtype).view(BITS[dtype]).copy()
    where = [0, 17, 1999, 3999]
    raw[where] = SPECIALS[dtype]
    x = raw.view(NUMPY[dtype])
    with pytest.raises(codec.NonFiniteError, match=r"element 0 .*nonfinite=\"keep\""):
        codec.encode(x, **kw)
    assert issubclass(codec.NonFiniteError, codec.InvalidArgumentError)
    c = codec.Codec(**kw, nonfinite="keep")
    y = bits(c.decode(c.encode(x)))
    np.testing.assert_array_equal(y[where], raw[where])
    assert codec.info(c.encode(x))["stages"][0]["nonfinite"] == "keep"
    # The lossless profile carries them anyway; nonfinite="keep" is accepted there.
    np.testing.assert_array_equal(bits(codec.decode(codec.encode(x, nonfinite="keep"))), raw)


def test_torch_bf16_in_bf16_out():
    t = torch.randn(4, 33, 100).bfloat16()
    for kw in ({"profile": "fast"}, {"profile": "balanced"}, {"profile": "max"}):
        y = codec.decode(codec.encode(t, **kw))
        assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16 and y.shape == t.shape


def test_info_shows_lossy_stages():
    x = np.random.default_rng(0).standard_normal((32, 256)).astype(np.float32)
    stages = codec.info(codec.encode(x, error=0.02, step="channel"))["stages"]
    assert [s["name"] for s in stages] == ["uniform_quant", "rans"]
    q = stages[0]
    assert q["bound"] == "error" and q["error"] == 0.02
    assert q["step_scope"] == "channel" and q["channels"] == 256
    assert q["step_per_rms"] > 0 and q["rounding"] == "nearest"
    stages = codec.info(codec.encode(x, max_abs_error=0.1))["stages"]
    assert stages[0]["step"] == pytest.approx(0.2)
    stages = codec.info(codec.encode(x, bits=3, block=48, scale="f16", entropy=True))["stages"]
    assert stages[0] == {
        "name": "block_quant",
        "element": "int3",
        "bits": 3,
        "scale": "f16",
        "block": 48,
        "rounding": "nearest",
        "nonfinite": "error",
    }
    assert stages[1]["name"] == "rans"


@pytest.mark.parametrize(
    "kw",
    [
        {"profile": "fast"},
        {"profile": "balanced"},
        {"profile": "max"},
        {"profile": "fast", "bits": 4},
        {"profile": "fast", "error": 0.02},
        {"profile": "balanced", "step": "block", "block": 128},
        {"profile": "balanced", "rounding": "stochastic", "seed": 5},
        {"format": "mxfp8_e5m2", "nonfinite": "keep"},
        {"target_bits": 2.5, "step": "channel"},
        {"bits": 2, "scale": "e8m0", "block": 16, "entropy": True},
        {"profile": "max", "contexts": False},
    ],
    ids=str,
)
def test_config_round_trip(kw):
    c = codec.Codec(**kw, chunk_size=5000)
    cfg = c.get_config()
    assert json.loads(json.dumps(cfg)) == cfg
    c2 = codec.Codec.from_config(cfg)
    assert c2 == c and hash(c2) == hash(c)
    x = np.random.default_rng(0).standard_normal((40, 100)).astype(np.float32)
    assert c.encode(x) == c2.encode(x)
    assert "Codec(profile=" in repr(c)


def rows_of_scales(rows: int, d: int, seed: int) -> np.ndarray:
    """bfloat16 rows whose scales span 2^-3..2^4, as a gradient's tokens do."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, d)) * np.exp2(rng.integers(-3, 5, (rows, 1)))
    return x.astype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("profile", ["balanced", "max"])
def test_row_contexts_shrink_rows_of_different_scales_unless_turned_off(profile):
    x = rows_of_scales(256, 512, 3)
    on = codec.Codec(profile, threads=1)
    off = codec.Codec(profile, contexts=False, threads=1)
    assert on.settings["contexts"] is True and off.settings["contexts"] is False
    a, b = on.encode(x), off.encode(x)
    assert codec.info(a)["format_version"] == codec.info(b)["format_version"] == 2
    # Row contexts: a table per class of rows; without them the frame is that of the
    # flattened tensor (no rows), but for its shape.
    assert len(a) < 0.95 * len(b), (len(a), len(b))
    assert abs(len(b) - len(off.encode(x.reshape(-1)))) <= 4
    bound = 0.01 if profile == "balanced" else 0.05
    for blob in (a, b):
        y = np.asarray(codec.decode(blob)).astype(np.float64)
        xf = x.astype(np.float64)
        assert np.sqrt(((xf - y) ** 2).sum() / (xf**2).sum()) <= bound


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"bits": 4, "contexts": False}, "exclude each other"),
        ({"contexts": True}, "applies to error-bounded"),
        ({"error": 0.01, "contexts": "yes"}, "True or False"),
    ],
)
def test_contexts_belong_to_error_bounded_coding(kw, match):
    with pytest.raises(codec.InvalidArgumentError, match=match):
        codec.Codec(**kw)
    assert codec.Codec("fast").settings["contexts"] is None


def test_explicit_parameters_override_profiles():
    assert codec.Codec("fast").settings["format"] == "int8"
    c = codec.Codec("fast", bits=4)
    assert c.mode == "fixed" and c.settings["format"] == "int4" and c.settings["block"] == 64
    c = codec.Codec("fast", error=0.02)
    assert c.mode == "bounded" and c.settings["format"] is None and c.settings["error"] == 0.02
    c = codec.Codec("balanced", max_abs_error=0.5)
    assert c.settings["error"] is None and c.settings["max_abs_error"] == 0.5
    c = codec.Codec("lossless", bits=8)
    assert c.mode == "fixed" and c.settings["scale"] == "bf16" and c.settings["block"] == 32
    c = codec.Codec("balanced", block=32)
    assert c.settings["step"] == "block" and c.settings["block"] == 32
    c = codec.Codec("balanced", rounding="stochastic")
    assert c.settings["seed"] == 0
    assert codec.Codec().mode == "lossless"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"bits": 5}, "8, 4, 3 or 2"),
        ({"bits": 8, "format": "e2m1"}, "contradicts"),
        ({"format": "int7"}, "unknown"),
        ({"format": "mxfp4", "block": 64}, "blocks of 32"),
        ({"bits": 4, "block": 8}, "16..=256"),
        ({"bits": 4, "scale": "fp32"}, "unknown"),
        ({"bits": 4, "error": 0.01}, "exclude each other"),
        ({"error": 0.01, "max_abs_error": 0.1}, "exactly one"),
        ({"error": 0}, "positive"),
        ({"error": -1.0}, "positive"),
        ({"max_abs_error": float("nan")}, "positive"),
        ({"target_bits": 40}, r"\(0, 32\]"),
        ({"error": 0.01, "step": "row"}, "unknown"),
        ({"max_abs_error": 0.1, "step": "channel"}, "global step"),
        ({"error": 0.01, "step": "channel", "block": 64}, "needs step='block'"),
        ({"error": 0.01, "scale": "e8m0"}, "exclude each other"),
        ({"step": "channel"}, "error-bounded"),
        ({"scale": "e8m0"}, "fixed-rate"),
        ({"rounding": "stochastic"}, "lossy coding"),
        ({"bits": 8, "rounding": "up"}, "unknown"),
        ({"bits": 8, "seed": 3}, "rounding='stochastic'"),
        ({"bits": 8, "nonfinite": "drop"}, "unknown"),
        ({"nonfinite": "error"}, "lossless coding carries"),
        ({"error": "1%"}, "must be a number"),
        ({"bits": 4, "entropy": 1}, "True or False"),
    ],
)
def test_bad_combinations_say_what_to_do(kw, match):
    with pytest.raises(codec.InvalidArgumentError, match=match):
        codec.Codec(**kw)


def test_target_bits_too_small_for_a_tiny_tensor():
    with pytest.raises(codec.InvalidArgumentError, match="cannot be met"):
        codec.encode(np.ones(10, np.float32), target_bits=0.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lossy_edge_cases(dtype):
    for kw in ({"profile": "fast"}, {"error": 0.01}, {"max_abs_error": 1e-3}, {"bits": 2}):
        for x in (
            np.zeros((0, 3), NUMPY[dtype]),
            np.zeros(1000, NUMPY[dtype]),
            np.array(1.5, NUMPY[dtype]),
            np.full(300, ml_dtypes.finfo(NUMPY[dtype]).max, NUMPY[dtype]),
            np.full(300, ml_dtypes.finfo(NUMPY[dtype]).smallest_subnormal, NUMPY[dtype]),
        ):
            y = codec.decode(codec.encode(x, **kw))
            assert y.shape == x.shape and y.dtype == x.dtype
            assert np.isfinite(as64(y)).all()
            if "error" in kw:
                assert rel_rmse(x, y) <= kw["error"]
            if "max_abs_error" in kw:
                assert np.abs(as64(x) - as64(y)).max(initial=0) <= kw["max_abs_error"]


@pytest.mark.parametrize(
    "kw",
    [{"profile": "fast"}, {"profile": "balanced"}, {"format": "mxfp4"}, {"target_bits": 3.0}],
    ids=str,
)
def test_lossy_frames_stream(kw):
    x = make_data("outlier_channels", (64, 300), 4).astype(np.float32)
    c = codec.Codec(**kw, chunk_size=2048)
    blob = c.encode(x)
    pieces = list(c.encode_stream(x))
    assert len(pieces) == 1 + codec.info(blob)["n_chunks"]
    assert b"".join(pieces) == blob
    dec = c.decoder()
    for p in pieces:
        dec.feed(p)
    np.testing.assert_array_equal(dec.result(), c.decode(blob))
