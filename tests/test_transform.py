"""Transform coding (``Codec(transform=..., rank=...)``): settings, the error bound on model
activations and random data, what it gains over plain error-bounded coding, low-rank
gradients, small-channel tensors and streaming."""

from __future__ import annotations

import functools

import iota_codec as codec
import numpy as np
import pytest
import torch
from helpers import NUMPY
from hypothesis import given, settings
from hypothesis import strategies as st

DTYPES = ["float32", "float16", "bfloat16"]
TRANSFORMS = ["identity", "pca", "auto"]


@functools.cache
def activations(d_model: int = 64) -> torch.Tensor:
    """What crosses the middle of a small GPT (untrained, so that nothing takes long; cached
    after the first run) reading the standard library's source: 16 sequences x 64 tokens x
    ``d_model`` channels, float32."""
    from iota_codec.data import GPTConfig, boundary_tensors

    cfg = GPTConfig(d_model=d_model, n_layers=2, n_heads=4, seq_len=64)
    return boundary_tensors(0, cfg=cfg, batch=16, capture_batches=1)["activation"].contiguous()


def rel(x, y) -> float:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return float(np.sqrt(((x - y) ** 2).sum() / (x * x).sum()))


def as_f64(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.float().numpy().astype(np.float64)
    return np.asarray(t).astype(np.float64)


# --- settings ---------------------------------------------------------------------------------


def test_settings_and_configs():
    c = codec.Codec(error=0.03, transform="pca", rank=8)
    assert c.settings["transform"] == "pca" and c.settings["rank"] == 8
    assert codec.Codec.from_config(c.get_config()) == c
    # rank= alone means a low-rank transform, chosen automatically.
    assert codec.Codec(error=0.01, rank=4).settings["transform"] == "auto"
    # "none" is plain coding; profiles refine.
    assert codec.Codec(error=0.01, transform="none").settings["transform"] is None
    assert codec.Codec("max", transform="auto").settings["error"] == 0.05
    assert codec.Codec().settings["transform"] is None
    assert "auto" in codec.TRANSFORMS


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"max_abs_error": 0.1, "transform": "pca"}, "relative RMSE"),
        ({"target_bits": 3.0, "transform": "auto"}, "relative RMSE"),
        ({"error": 0.1, "transform": "pca", "step": "channel"}, "one step"),
        ({"error": 0.1, "transform": "fourier"}, "unknown"),
        ({"error": 0.1, "rank": 0}, "at least 1"),
        ({"bits": 4, "transform": "pca"}, "exclude|error-bounded"),
        ({"transform": "pca"}, "error-bounded"),
    ],
)
def test_bad_settings(kw, match):
    with pytest.raises(codec.InvalidArgumentError, match=match):
        codec.Codec(**kw)


# --- the bound, and what transforms gain --------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("error", [0.01, 0.03, 0.1])
def test_bound_on_model_activations(dtype, transform, error):
    x = activations().to(getattr(torch, dtype))
    c = codec.Codec(error=error, transform=transform, threads=1)
    blob = c.encode(x)
    y = c.decode(blob)
    assert y.dtype == x.dtype and y.shape == x.shape
    achieved = rel(as_f64(x), as_f64(y))
    assert achieved <= error
    assert achieved > 0.85 * error
    # The same frame on any thread count.
    assert codec.Codec(error=error, transform=transform, threads=3).encode(x) == blob


@pytest.mark.parametrize("error, gain", [(0.03, 1.10), (0.1, 1.20)])
def test_pca_beats_plain_coding_on_activations(error, gain):
    """The bar on real activations, here on a small untrained model's: at least 10%
    more ratio at 3% relative RMSE and 20% at 10% (the trained model's figures, far above
    these, are in the README)."""
    x = activations().bfloat16()
    plain = len(codec.Codec(error=error).encode(x))
    pca = codec.Codec(error=error, transform="pca").encode(x)
    assert codec.info(pca)["stages"][0]["name"] == "project"
    assert plain / len(pca) >= gain, (plain, len(pca))
    auto = codec.Codec(error=error, transform="auto").encode(x)
    assert len(auto) <= min(plain, len(pca))


def test_info_describes_the_projection():
    x = activations().bfloat16()
    i = codec.info(codec.Codec(error=0.1, transform="pca").encode(x))
    project, rans = i["stages"]
    assert project["name"] == "project" and rans["name"] == "rans"
    assert project["basis"] == "frame" and project["channels"] == 64
    assert 1 <= project["rank"] < 64
    assert project["error"] == 0.1 and project["step"] > 0
    # A rank cap: at most that many basis vectors, or plain coding when they cannot meet
    # the bound.
    for error, rank in ((0.6, 3), (0.1, 2)):
        c = codec.Codec(error=error, transform="pca", rank=rank)
        blob = c.encode(x)
        first = codec.info(blob)["stages"][0]
        assert first["name"] == "uniform_quant" or first["rank"] <= rank
        assert rel(as_f64(x), as_f64(c.decode(blob))) <= error
    i = codec.info(codec.Codec(error=0.1, transform="identity").encode(x))
    assert i["stages"][0]["basis"] == "identity" and i["stages"][0]["rank"] == 64


def test_low_rank_gradient_through_a_pooling_head():
    """The gradient in front of a mean-pooling classification head is rank one per
    sequence: transform coding reaches far more than 10x at 1% relative RMSE."""
    from iota_codec.data import GPTConfig, pooled_head_gradient

    g = pooled_head_gradient(GPTConfig(d_model=64, n_layers=2, n_heads=4, seq_len=64), batch=8)
    g = g.bfloat16()
    c = codec.Codec(error=0.01, transform="auto")
    blob = c.encode(g)
    assert rel(as_f64(g), as_f64(c.decode(blob))) <= 0.01
    ratio = g.numel() * 2 / len(blob)
    assert ratio >= 10, ratio
    assert codec.info(blob)["stages"][0]["rank"] <= 8


def test_falls_back_to_plain_coding():
    # NaN kept exactly: plain coding carries it.
    x = activations().clone()
    x[0, 0, 0] = float("nan")
    c = codec.Codec(error=0.05, transform="auto", nonfinite="keep")
    blob = c.encode(x)
    assert codec.info(blob)["stages"][0]["name"] == "uniform_quant"
    assert torch.isnan(c.decode(blob)[0, 0, 0])
    with pytest.raises(codec.NonFiniteError):
        codec.Codec(error=0.05, transform="pca").encode(x)
    # A scalar and a tensor of more than 1024 channels have no transform.
    for t in (torch.tensor(1.5), torch.randn(2, 1100)):
        blob = codec.Codec(error=0.05, transform="pca").encode(t)
        assert codec.info(blob)["stages"][0]["name"] == "uniform_quant"
    # White noise over few rows: the basis does not pay, auto keeps plain or identity.
    noise = torch.randn(4, 256)
    blob = codec.Codec(error=0.05, transform="auto").encode(noise)
    assert codec.info(blob)["stages"][0].get("basis") != "frame"


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    rows=st.integers(1, 300),
    channels=st.integers(1, 40),
    latent=st.integers(1, 8),
    error=st.sampled_from([0.005, 0.02, 0.1, 0.4]),
    transform=st.sampled_from(TRANSFORMS),
    rounding=st.sampled_from(["nearest", "stochastic"]),
    chunk=st.integers(1, 5000),
    seed=st.integers(0, 2**32 - 1),
)
def test_bound_holds_on_random_correlated_data(
    dtype, rows, channels, latent, error, transform, rounding, chunk, seed
):
    rng = np.random.default_rng(seed)
    z = rng.standard_t(3, (rows, latent)) * rng.uniform(0.01, 100)
    x = z @ rng.standard_normal((latent, channels)) + rng.standard_normal((rows, channels)) * 0.01
    x = x.astype(NUMPY[dtype])
    c = codec.Codec(error=error, transform=transform, rounding=rounding, chunk_size=chunk)
    y = c.decode(c.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    if np.any(x.astype(np.float64) != 0):
        assert rel(x, y) <= error
    out = np.empty_like(x)
    c.decode(c.encode(x), out=out)
    assert np.array_equal(out.view(np.uint8), y.view(np.uint8))


def test_streaming_decodes_projection_frames_piece_by_piece():
    x = activations().bfloat16()
    c = codec.Codec(error=0.03, transform="pca", chunk_size=4096)
    pieces = list(c.encode_stream(x))
    blob = b"".join(pieces)
    assert blob == c.encode(x) and len(pieces) == 1 + codec.info(blob)["n_chunks"] > 2
    dec = c.decoder()
    for i in range(0, len(blob), 1000):
        dec.feed(blob[i : i + 1000])
    assert torch.equal(dec.result(), c.decode(blob))


def test_small_channel_tensors_carry_little_overhead():
    """A residual-bottleneck boundary of 16 channels (8 x 128 tokens): the frame is within
    a few percent of the entropy of its quantized values with a table per channel (which
    even ignores the tables' own cost), and smaller than plain coding's."""
    from iota_codec.bench.tensors import bottleneck

    x = bottleneck(activations().numpy(), 16)[:8]  # 8 x 64 x 16
    x = np.concatenate([x, x[::-1, ::-1] * 0.5], axis=1).astype(NUMPY["bfloat16"])
    for error in (0.01, 0.1):
        c = codec.Codec(error=error, transform="auto")
        blob = c.encode(x)
        i = codec.info(blob)
        assert i["header_bytes"] <= 64
        plain = codec.Codec(error=error).encode(x)
        assert len(blob) <= len(plain)
        step = i["stages"][0]["step"]
        if i["stages"][0].get("basis") == "identity":
            q = np.rint(x.astype(np.float64).reshape(-1, 16) / step)
            ent = 0.0
            for j in range(16):
                _, counts = np.unique(q[:, j], return_counts=True)
                p = counts / counts.sum()
                ent -= (counts * np.log2(p)).sum()
            assert len(blob) <= 1.15 * ent / 8 + 64, (len(blob), ent / 8)
