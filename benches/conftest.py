"""Shared fixtures and the end-of-run summary for the benchmark suites.

Run with ``pytest benches --benchmark-only`` (or ``make bench``). Tensors come from
:func:`iota_codec.data.boundary_tensors` (a small GPT trained in-process; cached after the
first run).
"""

from __future__ import annotations

from collections import defaultdict

import iota_codec as codec
import pytest

# (tensor, dtype) -> {"ratio": {...}, "encode": {codec: seconds}, "decode": {...}, ...}
SUMMARY: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(dict))


@pytest.fixture(scope="session")
def boundary():
    from iota_codec.data import boundary_tensors

    return boundary_tensors()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    if not SUMMARY:
        return
    tr = terminalreporter
    tr.section(f"iota-codec lossless vs zstd-3, one thread (SIMD: {codec.simd_level()})")
    tr.write_line(
        f"{'tensor':<11}{'dtype':<10}{'ratio':>8}{'zstd-3':>8}{'bound':>8}{'of bound':>10}"
        f"{'enc vs zstd':>13}{'dec vs zstd':>13}"
    )
    for (tensor, dtype), s in sorted(SUMMARY.items()):
        enc, dec = s["encode"], s["decode"]
        speed = ""
        if "iota" in enc and "zstd-3" in enc:
            speed += f"{enc['zstd-3'] / enc['iota']:>12.2f}x"
        else:
            speed += f"{'':>13}"
        if "iota" in dec and "zstd-3" in dec:
            speed += f"{dec['zstd-3'] / dec['iota']:>12.2f}x"
        r = s["ratio"]
        tr.write_line(
            f"{tensor:<11}{dtype:<10}{r.get('iota', 0):>8.3f}{r.get('zstd-3', 0):>8.3f}"
            f"{s['bound']:>8.3f}{s['bound_bytes'] / s['coded_bytes']:>10.1%}{speed}"
        )
