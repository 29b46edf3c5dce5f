"""Do ``iota-codec bench`` and the pytest-benchmark suite agree? Compares the JSON report of
one with the ``--benchmark-json`` output of the other, codec by codec:

    iota-codec bench --json cli.json
    IOTA_BENCH_SETS=activation,gradient,synthetic,bottleneck32 IOTA_BENCH_DTYPES=bfloat16 \\
        pytest benches --benchmark-only --benchmark-json=pb.json
    python benches/agree.py cli.json pb.json

Ratios must match exactly (same bytes, same coders); medians agree within the noise of the
machine (both runs time the same bound calls with ``time.perf_counter``). To see that noise,
give two ``iota-codec bench`` reports: either argument may be of either kind.
"""

from __future__ import annotations

import json
import math
import statistics
import sys


def _medians(report: dict) -> dict[tuple[str, str, str], dict[str, float]]:
    """(tensor, dtype, codec) -> ratio, encode and decode medians, from either kind of JSON."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    if "results" in report:  # iota-codec bench --json
        for r in report["results"]:
            out[(r["tensor"], r["dtype"], r["codec"])] = {
                "ratio": r["ratio"],
                "encode": r["encode_s"],
                "decode": r["decode_s"],
            }
        return out
    for b in report["benchmarks"]:  # pytest-benchmark --benchmark-json
        p = b["params"]
        key = (p["tensor"], p["dtype"], p["codec"])
        op = "encode" if b["name"].startswith("test_encode") else "decode"
        out.setdefault(key, {})[op] = b["stats"]["median"]
        if "ratio" in b.get("extra_info", {}):
            out[key]["ratio"] = b["extra_info"]["ratio"]
    return out


def main(cli_path: str, pb_path: str) -> int:
    with open(cli_path) as f:
        cli = json.load(f)
    with open(pb_path) as f:
        pb = json.load(f)
    ours = {k: {"ratio": v["ratio"], "encode_s": v["encode"], "decode_s": v["decode"]}
            for k, v in _medians(cli).items()}  # fmt: skip
    theirs = _medians(pb)
    print(f"{'tensor':<13}{'dtype':<10}{'codec':<15}{'ratio':>8}{'ratio 2':>9}"
          f"{'enc ms':>9}{'enc 2':>9}{'dec ms':>9}{'dec 2':>9}")  # fmt: skip
    logs, bad_ratio = [], 0
    for key in sorted(ours.keys() & theirs.keys()):
        r, t = ours[key], theirs[key]
        if "encode" not in t or "decode" not in t:
            continue
        same = math.isclose(r["ratio"], t.get("ratio", float("nan")), rel_tol=1e-12)
        bad_ratio += not same
        logs += [math.log(t["encode"] / r["encode_s"]), math.log(t["decode"] / r["decode_s"])]
        print(
            f"{key[0]:<13}{key[1]:<10}{key[2]:<15}{r['ratio']:>8.3f}{t.get('ratio', 0):>9.3f}"
            f"{r['encode_s'] * 1e3:>9.3g}{t['encode'] * 1e3:>9.3g}"
            f"{r['decode_s'] * 1e3:>9.3g}{t['decode'] * 1e3:>9.3g}"
        )
    if not logs:
        print("no codec and tensor in common")
        return 1
    spread = [math.exp(abs(x)) for x in logs]
    print(
        f"\n{len(logs) // 2} codec/tensor pairs; ratios identical: {bad_ratio == 0}; "
        f"second / first median: geometric mean "
        f"{math.exp(statistics.fmean(logs)):.3f}, median deviation "
        f"{statistics.median(spread):.3f}x, worst {max(spread):.2f}x"
    )
    return 0 if bad_ratio == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
