"""The ``iota-codec`` command."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args: argparse.Namespace) -> int:
    from . import CodecError, info

    try:
        with open(args.frame, "rb") as f:
            meta = info(f.read())
    except (OSError, CodecError) as e:
        print(f"iota-codec info: {args.frame}: {e}", file=sys.stderr)
        return 1
    if not args.chunks:
        meta.pop("chunk_bytes")
    print(json.dumps(meta, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="iota-codec",
        description="Activation and gradient codec for pipeline-parallel training.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="a short benchmark on built-in activation data")
    from .bench.command import add_parser as add_bench

    add_bench(sub)
    from .lab.command import add_parser as add_lab

    add_lab(sub)
    p = sub.add_parser("info", help="print a frame's header as JSON")
    p.add_argument("frame", help="a file holding one frame")
    p.add_argument("--chunks", action="store_true", help="include each chunk's size")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo

        return demo()
    if args.command == "info":
        return _info(args)
    if args.command == "bench":
        from .bench.command import main as bench

        return bench(args)
    if args.command == "lab":
        from .lab.command import main as lab

        return lab(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
