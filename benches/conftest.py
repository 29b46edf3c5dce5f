"""Shared fixtures and the end-of-run summary for the benchmark suites.

Run with ``pytest benches --benchmark-only`` (or ``make bench``). Every iota-codec profile
and every installed peer codec is timed on the same tensors, per dtype, with the coders
and tensors of ``iota-codec bench`` (:mod:`iota_codec.bench`): the same bound encode and
decode calls, so the medians here and there measure the same thing. Each benchmark runs
one warmup round and then ``IOTA_BENCH_ROUNDS`` rounds (default 5, like ``iota-codec bench
--repeat 5``); the summary at the end feeds pytest-benchmark's medians through the same
link model and prints the tables ``iota-codec bench`` prints.

Narrow a run with environment variables (comma-separated): ``IOTA_BENCH_SETS`` (default
activation, gradient, synthetic, bottleneck16, bottleneck48, bottleneck80),
``IOTA_BENCH_DTYPES`` (bfloat16, float16, float32), ``IOTA_BENCH_CODECS`` (iota-PROFILE and
peer names); ``IOTA_BENCH_FRACTION`` keeps that leading share of each tensor.

Model tensors come from :func:`iota_codec.data.boundary_tensors` (a small GPT trained
in-process; cached after the first run).
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import pytest
from iota_codec import PROFILES, measure
from iota_codec.bench import coders, engine, links, report, tensors

# (kind, tensor, ...) -> {"error": ..., "ratio": ..., "encode": seconds, ...} (test_lossy.py)
LOSSY: dict[tuple, dict] = defaultdict(dict)
# (kind, tensor, error, coder) -> {"error", "ratio", "bound", ...} (test_transform.py)
TRANSFORM: dict[tuple, dict] = defaultdict(dict)


def _env_list(name: str, default: Any) -> list[str]:
    value = os.environ.get(name)
    return [s.strip() for s in value.split(",") if s.strip()] if value else list(default)


SETS = _env_list(
    "IOTA_BENCH_SETS",
    ("activation", "gradient", "synthetic", "bottleneck16", "bottleneck48", "bottleneck80"),
)
DTYPES = _env_list("IOTA_BENCH_DTYPES", tensors.DTYPES)
CODECS = _env_list("IOTA_BENCH_CODECS", [f"iota-{p}" for p in PROFILES] + list(coders.PEERS))
FRACTION = float(os.environ.get("IOTA_BENCH_FRACTION", "1"))
ROUNDS = int(os.environ.get("IOTA_BENCH_ROUNDS", "5"))
# Coders whose round trip must be bit-exact.
LOSSLESS = {"iota-lossless", "zstd-1", "zstd-3", "lz4", "blosc2", "pcodec"}

_tensors: dict[str, dict[str, tensors.Tensor]] = {}
_specs: dict[str, coders.CoderSpec] = {}
# (tensor, dtype) -> codec -> what the benchmarks measured
SUMMARY: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))


def tensor(name: str, dtype: str) -> tensors.Tensor:
    if dtype not in _tensors:
        _tensors[dtype] = {t.name: t for t in tensors.builtin(SETS, dtype, FRACTION)}
    return _tensors[dtype][name]


def spec(name: str) -> coders.CoderSpec:
    if name not in _specs:
        if name.startswith("iota-"):
            _specs[name] = coders.iota_spec(name.removeprefix("iota-"), threads=1)
        else:
            _specs[name] = coders.peer(name)
    s = _specs[name]
    why = s.missing()
    if why:
        pytest.skip(why)
    return s


def bound(codec: str, tname: str, dtype: str):
    """The coder bound to the tensor, and the tensor; skips if it cannot code it."""
    s, t = spec(codec), tensor(tname, dtype)
    try:
        return engine.bind(s, t), t
    except coders.Unsupported as e:
        pytest.skip(str(e))


def _report() -> dict[str, Any] | None:
    results, used = [], {}
    for (tname, dtype), by_codec in SUMMARY.items():
        t = tensor(tname, dtype)
        used[(tname, dtype)] = t
        for codec, m in by_codec.items():
            if any(m.get(k) is None for k in ("encode_s", "decode_s", "coded_bytes")):
                continue  # only one of the two ran, or --benchmark-disable
            r = measure.Result(
                codec,
                t.nbytes,
                m["coded_bytes"],
                m["encode_s"],
                m["decode_s"],
                m["rel_rmse"],
                m["max_abs_error"],
                m["exact"],
            )
            results.append(engine.entry(_specs[codec], t, r))
    if not results:
        return None
    return {
        "results": results,
        "tensors": [
            {
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.data.shape),
                "bytes": t.nbytes,
                "source": t.source,
            }
            for t in used.values()
        ],
        "links_bps": list(links.DEFAULT_LINKS_BPS),
        "settings": {"repeat": ROUNDS},
    }


def _lossy_summary(tr) -> None:
    def speed(s, key):
        return f"{s['mb'] / s[key]:>9.0f}" if key in s else f"{'':>9}"

    rows = sorted(k for k in LOSSY if k[0] == "bounded")
    if rows:
        tr.section("iota-codec error-bounded (bf16, one thread) vs ideal coder and int8+zstd-3")
        tr.write_line(
            f"{'tensor':<11}{'bound':>7}{'error':>9}{'ratio':>8}{'ideal':>8}{'of ideal':>10}"
            f"{'enc MB/s':>9}{'dec MB/s':>9}"
        )
        for key in rows:
            s = LOSSY[key]
            tr.write_line(
                f"{key[1]:<11}{key[2]:>7.0%}{s['error']:>9.4f}{s['ratio']:>8.3f}"
                f"{s['ideal']:>8.3f}{s['ratio'] / s['ideal']:>10.1%}"
                f"{speed(s, 'encode')}{speed(s, 'decode')}"
            )
        for key in sorted(k for k in LOSSY if k[0] == "peer"):
            s = LOSSY[key]
            tr.write_line(
                f"{key[1]:<11}{'int8+zstd-3 (numpy, row-wise)':<22}{s['error']:>9.4f}"
                f"{s['ratio']:>8.3f}{'':>18}{speed(s, 'encode')}{speed(s, 'decode')}"
            )
    for kind, title in (("fixed", "fixed-rate formats"), ("profile", "profiles")):
        rows = sorted(k for k in LOSSY if k[0] == kind)
        if not rows:
            continue
        tr.section(f"iota-codec {title} (bf16, one thread)")
        tr.write_line(
            f"{'tensor':<11}{'':<22}{'rel. error':>11}{'ratio':>8}{'enc MB/s':>9}{'dec MB/s':>9}"
        )
        for key in rows:
            s = LOSSY[key]
            tr.write_line(
                f"{key[1]:<11}{key[2]:<22}{s['error']:>11.4f}{s['ratio']:>8.3f}"
                f"{speed(s, 'encode')}{speed(s, 'decode')}"
            )


def _transform_summary(tr) -> None:
    def speed(s, key):
        return f"{s['mb'] / s[key]:>9.1f}" if s.get(key) else f"{'':>9}"

    titles = {
        "bounded": "transform coding vs scalar error-bounded coding (bf16, one thread), "
        "with the Gaussian transform-coding bound",
        "pooled": "the gradient in front of a mean-pooling head (rank one per sequence)",
        "small": "a 16-channel bottleneck tensor, 8 x 128 tokens",
    }
    for kind, title in titles.items():
        rows = sorted(k for k in TRANSFORM if k[0] == kind)
        if not rows:
            continue
        tr.section(f"iota-codec {title}")
        tr.write_line(
            f"{'tensor':<23}{'bound':>6}{'coder':>9}{'error':>9}{'ratio':>8}{'vs plain':>9}"
            f"{'Gaussian':>9}{'enc MB/s':>9}{'dec MB/s':>9}  basis/rank"
        )
        for key in rows:
            s = TRANSFORM[key]
            plain = TRANSFORM.get((kind, key[1], key[2], "plain"), {}).get("ratio")
            gain = f"{s['ratio'] / plain:>8.2f}x" if plain else f"{'':>9}"
            tr.write_line(
                f"{key[1]:<23}{key[2]:>6.0%}{key[3]:>9}{s['error']:>9.4f}{s['ratio']:>8.2f}"
                f"{gain}{s['bound']:>9.2f}{speed(s, 'encode')}{speed(s, 'decode')}  {s['how']}"
            )
    rows = sorted(k for k in TRANSFORM if k[0] == "session")
    if rows:
        tr.section("iota-codec shared-basis sessions over micro-batches (bf16, one thread)")
        tr.write_line(
            f"{'tensor':<23}{'bound':>6}{'first':>8}{'session':>9}{'stateless':>10}"
            f"{'enc s/frame':>12}"
        )
        for key in rows:
            s = TRANSFORM[key]
            enc = f"{s['encode']:>12.2f}" if s.get("encode") else f"{'':>12}"
            tr.write_line(
                f"{key[1]:<23}{key[2]:>6.0%}{s['first']:>8.2f}{s['ratio']:>9.2f}"
                f"{s['stateless']:>10.2f}{enc}"
            )


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    if LOSSY:
        _lossy_summary(terminalreporter)
    if TRANSFORM:
        _transform_summary(terminalreporter)
    rep = _report()
    if rep is None:
        return
    tr = terminalreporter
    tr.section("iota-codec and peers: pytest-benchmark medians through the link model")
    tr.write_line("the same tables as `iota-codec bench`; " + links.FORMULA)
    for table in report.tables(rep):
        tr.write_line("")
        for line in report.render_plain(table).splitlines():
            tr.write_line(line)
    lines = []
    for (tname, dtype), by_codec in SUMMARY.items():
        m = by_codec.get("iota-lossless")
        if m and "bound_bytes" in m:
            lines.append(
                f"{tname} {dtype}: lossless {m['raw_bytes'] / m['coded_bytes']:.3f}, order-0 "
                f"bound {m['bound_ratio']:.3f} ({m['bound_bytes'] / m['coded_bytes']:.1%} of it)"
            )
    if lines:
        tr.write_line("")
        for line in lines:
            tr.write_line(line)
