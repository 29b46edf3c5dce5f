"""Runs coders over tensors and puts every figure, link times included, into one report.

The report is a JSON-able dict (see :func:`run`); :mod:`.report` renders it as tables, JSON
and a plot. Timing is :func:`iota_codec.measure.measure` (medians, ``time.perf_counter``).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import __version__, _core, measure
from .._api import DEFAULT_CHUNK_SIZE
from . import links
from .coders import CoderSpec, Unsupported
from .tensors import Tensor


def bind(spec: CoderSpec, t: Tensor):
    """``spec`` bound to ``t``; raises :class:`Unsupported` (with the reason) if it cannot
    code it."""
    try:
        return spec.bind(t.data)
    except Unsupported:
        raise
    except (ValueError, TypeError, RuntimeError) as e:
        raise Unsupported(f"{spec.name} cannot code {t.name} ({t.dtype}): {e}") from e


def measure_one(spec: CoderSpec, t: Tensor, repeat: int, warmup: int = 1) -> measure.Result:
    """Sizes, median times and achieved error of one coder on one tensor."""
    b = bind(spec, t)
    try:
        return measure.measure(
            spec.name, b.encode, b.decode, t.nbytes, repeat=repeat, reference=t.data, warmup=warmup
        )
    except (ValueError, TypeError, RuntimeError) as e:
        # A codec error (iota_codec.CodecError is a ValueError) or a peer refusing the input.
        raise Unsupported(f"{spec.name} failed on {t.name} ({t.dtype}): {e}") from e


def chunk_elements(spec: CoderSpec, default: int = DEFAULT_CHUNK_SIZE) -> int:
    """The chunk size the overlapped link model assumes: an iota config's own chunk size,
    otherwise ``default`` elements (peers are assumed to stream in chunks of that size)."""
    return spec.chunk_elements or default


def entry(
    spec: CoderSpec,
    t: Tensor,
    r: measure.Result,
    links_bps: tuple[float, ...] = links.DEFAULT_LINKS_BPS,
    chunk_elems: int | None = None,
) -> dict[str, Any]:
    """One row of the report: the measurement, its link times and break-even speeds."""
    n = links.chunks(t.data.size, chunk_elems or chunk_elements(spec))
    args = (r.raw_bytes, r.coded_bytes, r.encode_s, r.decode_s)
    return {
        "tensor": t.name,
        "codec": spec.name,
        "kind": spec.kind,
        "dtype": t.dtype,
        "shape": list(t.data.shape),
        "raw_bytes": r.raw_bytes,
        "coded_bytes": r.coded_bytes,
        "ratio": r.ratio,
        "exact": bool(r.exact),
        "rel_rmse": r.rel_rmse,
        "max_abs_error": r.max_abs_error,
        "encode_s": r.encode_s,
        "decode_s": r.decode_s,
        "encode_gbps": r.encode_gbps,
        "decode_gbps": r.decode_gbps,
        "encode_times_s": r.encode_times,
        "decode_times_s": r.decode_times,
        "chunks": n,
        "break_even_bps": {
            "serial": links.break_even_bps(*args, n_chunks=n, overlapped=False),
            "overlapped": links.break_even_bps(*args, n_chunks=n, overlapped=True),
        },
        "links": [
            {
                "link_bps": tr.link_bps,
                "raw_s": tr.raw_s,
                "serial_s": tr.serial_s,
                "overlapped_s": tr.overlapped_s,
                "speedup_serial": tr.speedup_serial,
                "speedup_overlapped": tr.speedup_overlapped,
            }
            for tr in (links.transfer(*args, bps, n) for bps in links_bps)
        ],
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "simd_level": _core.simd_level(),
        "os": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def run(
    tensors: list[Tensor],
    specs: list[CoderSpec],
    *,
    repeat: int = 5,
    warmup: int = 1,
    links_bps: tuple[float, ...] = links.DEFAULT_LINKS_BPS,
    notes: list[str] | None = None,
    settings: dict[str, Any] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measures every coder on every tensor. ``on_step(description)`` is called before
    each measurement (for a progress bar). Returns the report dict: ``iota_codec``,
    ``machine``, ``settings``, ``link_model``, ``links_bps``, ``coders`` (kind, description,
    package versions), ``tensors``, ``results`` (one :func:`entry` per tensor and coder),
    ``notes`` (what was skipped and why) and ``wall_s``."""
    t0 = time.perf_counter()
    notes = list(notes or [])
    results = []
    for t in tensors:
        for spec in specs:
            if on_step:
                on_step(f"{spec.name} on {t.name} ({t.dtype})")
            try:
                r = measure_one(spec, t, repeat, warmup)
            except Unsupported as e:
                notes.append(str(e))
                continue
            results.append(entry(spec, t, r, links_bps))
    return {
        "iota_codec": __version__,
        "machine": machine(),
        "settings": {"repeat": repeat, "warmup": warmup, **(settings or {})},
        "link_model": links.FORMULA,
        "links_bps": list(links_bps),
        "coders": {
            s.name: {"kind": s.kind, "description": s.describe, "versions": s.versions()}
            for s in specs
        },
        "tensors": [
            {
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.data.shape),
                "bytes": t.nbytes,
                "source": t.source,
            }
            for t in tensors
        ],
        "results": results,
        "notes": notes,
        "wall_s": time.perf_counter() - t0,
    }
