"""``iota-codec demo``: a short ``iota-codec bench`` on built-in data: every profile next to
the peer codecs, in one run, on a slice of the stage-boundary tensors of a small GPT, with
the time it takes them to cross links from 10 Mbit/s to 400 Gbit/s."""

from __future__ import annotations

import importlib.util
import os
import sys

from . import __version__, _core, measure
from ._api import Codec
from .bench import coders, engine, report, tensors

DEMO_SETS = ("activation", "gradient")
DEMO_FRACTION = 0.25
DEMO_REPEAT = 3


def _printer():
    """rich when it is installed (the ``bench`` extra), plain text otherwise."""
    try:
        from rich.console import Console
    except ImportError:
        return lambda msg: print(msg, flush=True), lambda t: print(report.render_plain(t))
    con = Console() if sys.stdout.isatty() else Console(width=160)
    return (
        lambda msg: con.print(msg, markup=False, highlight=False),
        lambda t: con.print(report.render_rich(t)),
    )


def main(argv: list[str] | None = None) -> int:
    say, show = _printer()
    say(
        f"iota-codec {__version__} demo  (SIMD level: {_core.simd_level()}, {os.cpu_count()} cores)"
    )
    dtype = "bfloat16"
    if importlib.util.find_spec("ml_dtypes") is None:
        # A bare `pip install iota-codec`: numpy has no bfloat16 of its own.
        dtype = "float16"
        say(
            "ml_dtypes is not installed: the demo runs on float16 instead of bfloat16 "
            "(pip install 'iota-codec[bench]' for bfloat16, the dtype activations cross in)"
        )
    data = tensors.builtin(DEMO_SETS, dtype, DEMO_FRACTION, log=say)
    specs, notes = coders.select(threads=1)
    say(
        f"A short benchmark: the first {DEMO_FRACTION:.0%} of each tensor ({dtype}), every "
        f"profile and peer on one thread, medians of {DEMO_REPEAT} runs. "
        "`iota-codec bench` runs the full version.\n"
    )
    result = engine.run(data, specs, repeat=DEMO_REPEAT, notes=notes, settings={"threads": 1})
    say(report.header_lines(result)[1])
    for table in report.tables(result):
        say("")
        show(table)
    for line in report.footer_lines(result):
        say(line)
    say("")
    for t in data:
        bound = measure.lossless_bound(t.data)
        ours = next(
            r for r in result["results"] if r["tensor"] == t.name and r["codec"] == "iota-lossless"
        )
        say(
            f"lossless on {t.name}: ratio {ours['ratio']:.3f}, order-0 bound of the float split "
            f"{bound['ratio']:.3f} ({bound['bytes'] / ours['coded_bytes']:.1%} of it)"
        )
    x = data[0].data
    every = Codec("lossless", threads=0)
    multi = measure.measure("iota", lambda: every.encode(x), every.decode, x.nbytes, repeat=3)
    say(
        f"all {os.cpu_count()} cores, lossless, {data[0].name}: encode {multi.encode_gbps:.2f} "
        f"GB/s, decode {multi.decode_gbps:.2f} GB/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
