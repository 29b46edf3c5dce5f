"""Benchmarks of iota-codec against peers, and what they mean for a link.

One engine serves ``iota-codec bench``, ``iota-codec demo`` and the pytest-benchmark
suites in ``benches/``: :mod:`.coders` (iota-codec profiles and peer codecs bound to a
tensor), :mod:`.tensors` (built-in tensor sets and user files), :mod:`.links` (the link
model), :mod:`.engine` (measuring) and :mod:`.report` (tables, JSON, plot). Timing itself
is :mod:`iota_codec.measure`.

The terminal table and the plot need the ``bench`` extra (``pip install
'iota-codec[bench]'``: rich, matplotlib, ml_dtypes, safetensors); the peers need the
``peers`` extra.
"""

from . import coders, engine, links, report, tensors
from .coders import PEERS, CoderSpec, iota_spec, select
from .engine import run

__all__ = [
    "PEERS",
    "CoderSpec",
    "coders",
    "engine",
    "iota_spec",
    "links",
    "report",
    "run",
    "select",
    "tensors",
]
