"""Transform coding against scalar error-bounded coding on real transformer boundary tensors
in bfloat16, one thread.

- At 1%, 3% and 10% relative RMSE: plain error-bounded coding (one global step, rANS),
  transform coding with the identity basis (per-channel-group tables), with a frame basis
  (``transform="pca"``) and ``transform="auto"`` (the smallest of plain, identity and PCA
  frames), each with the achieved error, ratio and speed, next to the Gaussian
  transform-coding bound (reverse water-filling over the
  eigenvalues of the channel covariance; see :func:`iota_codec.measure.gaussian_bound`).
- The gradient in front of a mean-pooling classification head (rank one per sequence) at
  1% and 3%.
- A 16-channel residual-bottleneck tensor of 8 x 128 tokens: frame and header bytes.
- Shared-basis sessions over the activation's micro-batches (16 sequences each), against
  a stateless PCA frame per micro-batch.

Run with ``pytest benches/test_transform.py --benchmark-only`` (tables print at the end);
they run on the ``activation`` and ``gradient`` sets when ``IOTA_BENCH_SETS`` names them.
"""

from __future__ import annotations

import functools

import iota_codec as codec
import numpy as np
import pytest
import torch
from conftest import SETS, TRANSFORM
from iota_codec import measure

TENSORS = [t for t in ("activation", "gradient") if t in SETS]
ERRORS = [0.01, 0.03, 0.1]
CODERS = {
    "plain": {},
    "identity": {"transform": "identity"},
    "pca": {"transform": "pca"},
    "auto": {"transform": "auto"},
}


@pytest.fixture(scope="module")
def boundary():
    from iota_codec.data import boundary_tensors

    return boundary_tensors()


@functools.cache
def _bound(tensor: str, error: float, x: torch.Tensor) -> float:
    return measure.gaussian_bound(x, error)["ratio"]


def _rel(x: torch.Tensor, y: torch.Tensor) -> float:
    a = x.float().numpy().astype(np.float64)
    b = y.float().numpy().astype(np.float64)
    return float(np.sqrt(((a - b) ** 2).sum() / (a * a).sum()))


def _speed(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats else None


@pytest.mark.parametrize("coder", list(CODERS))
@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("tensor", TENSORS)
def test_transform_vs_plain(benchmark, boundary, tensor, error, coder):
    x = boundary[tensor].to(torch.bfloat16).contiguous()
    c = codec.Codec(error=error, threads=1, **CODERS[coder])
    benchmark.group = f"transform {tensor} {error:.0%}"
    blob = benchmark.pedantic(c.encode, args=(x,), rounds=3, warmup_rounds=1, iterations=1)
    y = c.decode(blob)
    achieved = _rel(x, y)
    assert achieved <= error
    first = codec.info(blob)["stages"][0]
    TRANSFORM[("bounded", tensor, error, coder)].update(
        error=achieved,
        ratio=x.numel() * 2 / len(blob),
        bound=_bound(tensor, error, x),
        encode=_speed(benchmark),
        decode=measure.median_seconds(lambda: c.decode(blob), 3),
        mb=x.numel() * 2 / 1e6,
        how=f"{first.get('basis', 'plain')}/{first.get('rank', '-')}",
    )


@pytest.mark.skipif("gradient" not in SETS, reason="IOTA_BENCH_SETS leaves out gradient")
@pytest.mark.parametrize("coder", ["plain", "pca"])
@pytest.mark.parametrize("error", [0.01, 0.03])
def test_pooled_head_gradient(benchmark, error, coder):
    g = _pooled()
    c = codec.Codec(error=error, threads=1, **CODERS[coder])
    benchmark.group = f"pooled gradient {error:.0%}"
    blob = benchmark.pedantic(c.encode, args=(g,), rounds=3, warmup_rounds=1, iterations=1)
    achieved = _rel(g, c.decode(blob))
    assert achieved <= error
    first = codec.info(blob)["stages"][0]
    TRANSFORM[("pooled", "pooled-gradient", error, coder)].update(
        error=achieved,
        ratio=g.numel() * 2 / len(blob),
        bound=measure.gaussian_bound(g, error)["ratio"],
        encode=_speed(benchmark),
        decode=measure.median_seconds(lambda: c.decode(blob), 3),
        mb=g.numel() * 2 / 1e6,
        how=f"{first.get('basis', 'plain')}/{first.get('rank', '-')}",
    )


@functools.cache
def _pooled() -> torch.Tensor:
    from iota_codec.data import pooled_head_gradient

    return pooled_head_gradient().to(torch.bfloat16).contiguous()


@pytest.mark.skipif("bottleneck16" not in SETS, reason="IOTA_BENCH_SETS leaves out bottleneck16")
@pytest.mark.parametrize("coder", ["plain", "identity", "auto"])
@pytest.mark.parametrize("error", ERRORS)
def test_small_channels(benchmark, boundary, error, coder):
    from iota_codec.bench.tensors import bottleneck

    x = torch.from_numpy(bottleneck(boundary["activation"].numpy(), 16)[:8].copy()).bfloat16()
    kw = {"transform": coder} if coder != "plain" else {}
    c = codec.Codec(error=error, threads=1, **kw)
    benchmark.group = f"16 channels {error:.0%}"
    blob = benchmark.pedantic(c.encode, args=(x,), rounds=3, warmup_rounds=1, iterations=1)
    achieved = _rel(x, c.decode(blob))
    assert achieved <= error
    i = codec.info(blob)
    TRANSFORM[("small", "bottleneck16 8x128x16", error, coder)].update(
        error=achieved,
        ratio=x.numel() * 2 / len(blob),
        bound=measure.gaussian_bound(x, error)["ratio"],
        encode=_speed(benchmark),
        decode=measure.median_seconds(lambda: c.decode(blob), 3),
        mb=x.numel() * 2 / 1e6,
        how=f"{len(blob)} B, header {i['header_bytes']} B",
    )


@pytest.mark.skipif("activation" not in SETS, reason="IOTA_BENCH_SETS leaves out activation")
@pytest.mark.parametrize("error", [0.03, 0.1])
def test_sessions_over_micro_batches(benchmark, boundary, error):
    """The activation as 16 micro-batches of 16 sequences (the 8 captured batches and their
    token-reversed copies), through one session, against a stateless PCA frame each."""
    a = boundary["activation"].to(torch.bfloat16)
    micro = [a[i : i + 16] for i in range(0, a.shape[0], 16)]
    micro += [m.flip(1).contiguous() for m in micro]
    stateless = [len(codec.Codec(error=error, transform="pca", threads=1).encode(m)) for m in micro]

    def run():
        s = codec.Session(codec.Codec(error=error, threads=1))
        return [len(s.encode(m)) for m in micro]

    benchmark.group = f"session {error:.0%}"
    sizes = benchmark.pedantic(run, rounds=1, warmup_rounds=0, iterations=1)
    raw = micro[0].numel() * 2
    seconds = _speed(benchmark)
    TRANSFORM[("session", "activation micro-batch", error, "session")].update(
        error=error,
        ratio=raw / np.mean(sizes[1:]),
        stateless=raw / np.mean(stateless),
        first=raw / sizes[0],
        encode=None if seconds is None else seconds / len(micro),
        mb=raw / 1e6,
        how=f"{len(micro)} frames",
    )
