"""``iota-codec bench``: iota-codec's profiles and peer codecs on the same tensors, in one run,
and what that means for moving the tensor over links from 10 Mbit/s to 400 Gbit/s."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from . import links
from .tensors import DEFAULT_SETS, DTYPES

DESCRIPTION = """\
Measures each iota-codec profile (and any --codec config) and each peer codec on the same
tensors in the same run: ratio, achieved error (relative RMSE and max abs error, float64,
finite values; "exact" when the round trip is bit-exact), median encode and decode times,
and the time to move one tensor over links from 10 Mbit/s to 400 Gbit/s, encode + send +
decode against the raw transfer, serial and overlapped (chunks streamed through encode ->
send -> decode), with the break-even link speed of each. Without FILE it uses built-in
tensors: the first run trains a small GPT for about a minute to get real activations and
gradients, and caches them."""

QUICK_FRACTION = 0.25
QUICK_REPEAT = 3


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="ratio, error, speed and link times against peer codecs",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="your own tensors: .npy, .pt (a tensor or a dict of them) or .safetensors",
    )
    p.add_argument(
        "--tensors",
        help=f"built-in tensor sets, comma-separated (default without FILE: "
        f"{','.join(DEFAULT_SETS)}; bottleneckK for K channels)",
    )
    p.add_argument(
        "--profiles",
        help="iota-codec profiles, comma-separated, or 'none' (default: every profile)",
    )
    p.add_argument(
        "--codec",
        action="append",
        default=[],
        metavar="JSON",
        help='an explicit iota-codec config, e.g. \'{"profile": "lossless", "chunk_size": '
        '65536}\' (an optional "name" labels it); repeatable',
    )
    p.add_argument(
        "--errors",
        help="relative RMSE bounds in %%, comma-separated (e.g. 1,3,10): adds plain "
        "error-bounded coding (iota-error-N%%) and transform coding (iota-auto-N%%) at each, "
        "and notes the Gaussian transform-coding bound of each tensor there",
    )
    p.add_argument(
        "--peers",
        help="peer codecs, comma-separated, 'all' or 'none' (default: all): "
        + ", ".join(_peer_names()),
    )
    p.add_argument(
        "--dtype",
        help="dtypes to measure, comma-separated (default: bfloat16 for built-in tensors, "
        "a file's own dtype for files)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="iota-codec threads (default 1; peers always run on one thread)",
    )
    p.add_argument("--repeat", type=int, help="timed runs per median (default 5; --quick: 3)")
    p.add_argument(
        "--links",
        help="link speeds in bit/s, comma-separated, k/M/G/T suffixes allowed "
        "(default: 10M,100M,1G,10G,100G,400G)",
    )
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    p.add_argument(
        "--plot", metavar="PATH", help="plot effective throughput against link speed (PNG)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run: the first {QUICK_FRACTION:.0%} of each built-in tensor, "
        f"{QUICK_REPEAT} repeats",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _peer_names() -> list[str]:
    from .coders import PEERS

    return list(PEERS)


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()]
    return items


def parse_links(text: str) -> tuple[float, ...]:
    """``"10M,1G"`` -> ``(1e7, 1e9)`` bit/s."""
    scale = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
    out = []
    for item in _split(text) or []:
        m = re.fullmatch(r"([0-9.]+(?:e[+-]?\d+)?)\s*([kmgt]?)(?:bit/s|bps|b)?", item.lower())
        if not m:
            raise ValueError(f"cannot read link speed {item!r} (try 100M or 1e8)")
        out.append(float(m.group(1)) * scale[m.group(2)])
    if not out or any(v <= 0 for v in out):
        raise ValueError("--links needs positive speeds")
    return tuple(out)


def _need(module: str, what: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        sys.stderr.write(
            f"iota-codec bench: {what} needs the {module} package, which is not installed.\n"
            "Install the benchmark extras: pip install 'iota-codec[bench,peers]'\n"
        )
        raise SystemExit(2) from None


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    _need("rich", "the terminal table")
    if args.plot:
        _need("matplotlib", "--plot")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from . import coders, engine, report, tensors

    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # piped to a file: do not squeeze the tables to 80 columns
    err = Console(stderr=True)

    def log(msg: str) -> None:
        err.print(msg, markup=False, highlight=False)

    try:
        links_bps = parse_links(args.links) if args.links else links.DEFAULT_LINKS_BPS
        profiles = _split(args.profiles)
        if profiles == ["none"]:
            profiles = []
        peers = _split(args.peers)
        if peers == ["all"]:
            peers = None
        elif peers == ["none"]:
            peers = []
        configs = [coders.parse_codec_json(c) for c in args.codec]
        errors = [float(e) / 100 for e in _split(args.errors) or []]
        if any(not 0 < e < 1 for e in errors):
            raise ValueError("--errors takes percentages between 0 and 100, e.g. 1,3,10")
        specs, notes = coders.select(profiles, configs, peers, threads=args.threads, errors=errors)
        dtypes = _split(args.dtype)
        for d in dtypes or []:
            if d not in DTYPES:
                raise ValueError(f"unsupported --dtype {d!r}; choose from {', '.join(DTYPES)}")
        repeat = args.repeat or (QUICK_REPEAT if args.quick else 5)
        if repeat < 1:
            raise ValueError("--repeat must be at least 1")
        fraction = QUICK_FRACTION if args.quick else 1.0
        data: list[tensors.Tensor] = []
        for path in args.files:
            for d in dtypes or [None]:
                data += tensors.load_file(path, d, log=lambda m: notes.append(m))
        sets = _split(args.tensors)
        if sets or not args.files:
            for d in dtypes or ["bfloat16"]:
                data += tensors.builtin(sets or DEFAULT_SETS, d, fraction, log=log)
    except (ValueError, RuntimeError, OSError) as e:
        log(f"iota-codec bench: {e}")
        return 2
    from .. import measure

    for t in data:
        for e in errors:
            b = measure.gaussian_bound(t.data, e)
            notes.append(
                f"{t.name} ({t.dtype}) at {e * 100:g}% relative RMSE: Gaussian transform-coding "
                f"bound {b['ratio']:.2f}x ({b['bits_per_element']:.3f} bits per element)"
            )
    if not specs:
        log("iota-codec bench: nothing to measure (no profiles, configs or peers)")
        return 2

    settings = {
        "threads": args.threads,
        "quick": args.quick,
        "command": "iota-codec bench " + " ".join(sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else None,
    }
    total = len(data) * len(specs)
    if args.no_progress or not err.is_terminal:
        result = engine.run(
            data, specs, repeat=repeat, links_bps=links_bps, notes=notes, settings=settings
        )
    else:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task("measuring", total=total)
            steps = [0]

            def step(desc: str) -> None:
                if steps[0]:
                    progress.advance(task)
                steps[0] += 1
                progress.update(task, description=desc)

            result = engine.run(
                data,
                specs,
                repeat=repeat,
                links_bps=links_bps,
                notes=notes,
                settings=settings,
                on_step=step,
            )
    for line in report.header_lines(result):
        out.print(line, markup=False, highlight=False)
    for table in report.tables(result):
        out.print()
        out.print(report.render_rich(table))
    result["total_s"] = time.perf_counter() - started
    for line in report.footer_lines(result):
        out.print(line, markup=False, highlight=False)
    if args.json:
        with open(args.json, "w") as f:
            f.write(report.to_json(result) + "\n")
        out.print(f"wrote {args.json}", markup=False, highlight=False)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown(result))
        out.print(f"wrote {args.markdown}", markup=False, highlight=False)
    if args.plot:
        report.plot(result, args.plot)
        out.print(f"wrote {args.plot}", markup=False, highlight=False)
    return 0
