"""Every iota-codec profile and every installed peer, one thread each, on realistic
tensors (model activations and gradients, heavy-tailed synthetic data with outlier
channels, residual-bottleneck-sized tensors of 16 to 80 channels) in each dtype: encode and
decode times, grouped per tensor and dtype so that pytest-benchmark prints the codecs side
by side. Ratios and achieved errors go into ``extra_info`` and the end-of-run summary."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CODECS, DTYPES, LOSSLESS, ROUNDS, SETS, SUMMARY, bound
from iota_codec import measure


def _median(benchmark) -> float | None:
    # None under --benchmark-disable, where the function runs once, untimed.
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats else None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tensor", SETS)
@pytest.mark.parametrize("codec", CODECS)
def test_encode(benchmark, codec, tensor, dtype):
    b, t = bound(codec, tensor, dtype)
    benchmark.group = f"{tensor} {dtype} encode"
    blob = benchmark.pedantic(b.encode, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    err = measure.achieved_error(t.data, b.decode(blob))
    if codec in LOSSLESS:
        assert err["exact"], f"{codec} did not round-trip {tensor} {dtype} bit-exactly"
    m = SUMMARY[(tensor, dtype)][codec]
    m.update(err, raw_bytes=t.nbytes, coded_bytes=len(blob), encode_s=_median(benchmark))
    if codec == "iota-lossless":
        lb = measure.lossless_bound(t.data)
        m.update(bound_ratio=lb["ratio"], bound_bytes=lb["bytes"])
    benchmark.extra_info.update(ratio=t.nbytes / len(blob), MB=t.nbytes / 1e6, **err)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tensor", SETS)
@pytest.mark.parametrize("codec", CODECS)
def test_decode(benchmark, codec, tensor, dtype):
    b, t = bound(codec, tensor, dtype)
    blob = b.encode()
    benchmark.group = f"{tensor} {dtype} decode"
    y = benchmark.pedantic(b.decode, args=(blob,), rounds=ROUNDS, warmup_rounds=1, iterations=1)
    assert np.asarray(y).size == t.data.size
    SUMMARY[(tensor, dtype)][codec]["decode_s"] = _median(benchmark)
