"""Puts the tables of a saved ``iota-codec bench`` report into README.md, between the
``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers (``make bench-docs`` runs it):

    python benches/readme.py docs/bench.json README.md activation gradient
"""

from __future__ import annotations

import json
import sys

from iota_codec.bench import report

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def main(report_path: str, readme_path: str, tensors: list[str]) -> int:
    with open(report_path) as f:
        rep = json.load(f)
    with open(readme_path) as f:
        text = f.read()
    if START not in text or END not in text:
        sys.exit(f"{readme_path} has no {START} ... {END} section")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = report.markdown(rep, only=tensors or None)
    with open(readme_path, "w") as f:
        f.write(f"{head}{START}\n{body}{END}{tail}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
