"""Rendering a benchmark report: terminal tables (rich, or plain text), JSON, and a plot of
effective throughput against link speed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""


def fmt_bps(bps: float | None) -> str:
    """A link speed in bit/s, human-readable; ``None`` reads "never"."""
    if bps is None:
        return "never"
    if math.isinf(bps):
        return "always"
    for unit, scale in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            v = bps / scale
            return f"{v:.3g} {unit}"
    return f"{bps:.3g} bit/s"


def fmt_link(bps: float) -> str:
    return fmt_bps(bps).replace("bit/s", "").replace(" ", "")


def fmt_err(value: float, exact: bool) -> str:
    if exact:
        return "exact"
    if math.isinf(value):
        return "inf"
    return f"{value:.2e}"


def fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def fmt_speedup(x: float) -> str:
    return f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


def group(report: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The results per (tensor, dtype), in the order they were measured."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in report["results"]:
        out.setdefault((r["tensor"], r["dtype"]), []).append(r)
    return out


def tables(report: dict[str, Any]) -> list[Table]:
    """Two tables per tensor: the measurements with break-even link speeds, and the time to
    move the tensor over each link relative to a raw transfer."""
    out = []
    info = {(t["name"], t["dtype"]): t for t in report["tensors"]}
    links_bps = report["links_bps"]
    for (name, dtype), rows in group(report).items():
        t = info[(name, dtype)]
        mib = t["bytes"] / 2**20
        head = f"{name}  {dtype} {tuple(t['shape'])}  {mib:.2f} MiB  ({t['source']})"
        a = Table(
            head,
            [
                "codec",
                "ratio",
                "rel RMSE",
                "max |err|",
                "enc ms",
                "dec ms",
                "enc GB/s",
                "dec GB/s",
                "break-even serial",
                "break-even overlap",
            ],
        )
        for r in rows:
            a.rows.append(
                [
                    r["codec"],
                    f"{r['ratio']:.3f}",
                    fmt_err(r["rel_rmse"], r["exact"]),
                    fmt_err(r["max_abs_error"], r["exact"]),
                    fmt_ms(r["encode_s"]),
                    fmt_ms(r["decode_s"]),
                    f"{r['encode_gbps']:.3f}",
                    f"{r['decode_gbps']:.3f}",
                    fmt_bps(r["break_even_bps"]["serial"]),
                    fmt_bps(r["break_even_bps"]["overlapped"]),
                ]
            )
        a.caption = (
            f"medians of {report['settings']['repeat']} runs; coding beats a raw transfer on "
            "links slower than the break-even speed"
        )
        b = Table(
            f"{name} {dtype}: speedup over sending it raw, overlapped (serial)",
            ["link", *[fmt_link(bps) for bps in links_bps]],
        )
        raw = rows[0]["links"]
        b.rows.append(["raw transfer, ms", *[fmt_ms(x["raw_s"]) for x in raw]])
        for r in rows:
            b.rows.append(
                [
                    r["codec"],
                    *[
                        f"{fmt_speedup(x['speedup_overlapped'])} "
                        f"({fmt_speedup(x['speedup_serial'])})"
                        for x in r["links"]
                    ],
                ]
            )
        b.caption = "above 1x the coded transfer is faster"
        out += [a, b]
    return out


def render_plain(table: Table) -> str:
    cells = [table.columns, *table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    rule = "-" * len(line(table.columns))
    parts = [table.title, line(table.columns), rule, *[line(r) for r in table.rows]]
    if table.caption:
        parts.append(table.caption)
    return "\n".join(parts)


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with the title in bold above it."""

    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    parts = [f"**{esc(table.title)}**", ""]
    parts.append("| " + " | ".join(esc(c) for c in table.columns) + " |")
    parts.append("|" + "|".join(["---"] + ["---:"] * (len(table.columns) - 1)) + "|")
    parts += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table.rows]
    if table.caption:
        parts += ["", f"<sub>{table.caption}</sub>"]
    return "\n".join(parts)


def markdown(report: dict[str, Any], only: list[str] | None = None) -> str:
    """The report as Markdown: machine and model lines, the tables (of the tensors named in
    ``only``, or all), the notes."""
    parts = [f"<sub>{line}</sub>" + "  " for line in header_lines(report)]
    if only is not None:
        report = {**report, "results": [r for r in report["results"] if r["tensor"] in only]}
    for table in tables(report):
        parts += ["", render_markdown(table)]
    parts.append("")
    parts += [f"<sub>{line}</sub>" + "  " for line in footer_lines(report)]
    return "\n".join(parts) + "\n"


def render_rich(table: Table) -> Any:
    from rich.table import Table as RichTable

    t = RichTable(title=table.title, caption=table.caption, title_justify="left")
    for i, col in enumerate(table.columns):
        t.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in table.rows:
        style = "bold" if row[0].startswith("iota") else None
        t.add_row(*row, style=style)
    return t


def header_lines(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    cpu = m.get("cpu", m["machine"])
    lines = [
        f"iota-codec {report['iota_codec']} bench: {m['cores']} cores ({cpu}), "
        f"SIMD level {m['simd_level']}, Python {m['python']}",
        "link model: " + report["link_model"],
    ]
    return lines


def footer_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"note: {n}" for n in report["notes"]]
    versions = []
    for name, c in report["coders"].items():
        if c["kind"] == "peer":
            v = ", ".join(f"{k} {ver}" for k, ver in c["versions"].items())
            versions.append(f"{name} ({c['description']}; {v})")
    if versions:
        lines.append("peers: " + "; ".join(versions))
    total = report.get("total_s")
    lines.append(
        f"measured in {report['wall_s']:.3g} s"
        + (f" ({total:.3g} s with start-up and data)" if total else "")
    )
    return lines


def _finite(obj: Any) -> Any:
    """JSON has no infinities: they become null (a break-even of null means "never")."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(_finite(report), indent=1, allow_nan=False)


def plot(report: dict[str, Any], path: str) -> None:
    """For each tensor (a column): the effective throughput (raw tensor bits delivered per
    second, overlapped pipeline) against link speed, and below it the speedup over a raw
    transfer (solid: overlapped, dotted: serial). Written to ``path`` (PNG)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the plot needs matplotlib: pip install 'iota-codec[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from . import links

    by_tensor = group(report)
    n = max(1, len(by_tensor))
    fig, axes = plt.subplots(
        2,
        n,
        figsize=(4.2 * n + 1.8, 7.2),
        squeeze=False,
        sharex=True,
        height_ratios=[3, 2],
        layout="constrained",
    )
    lo, hi = min(report["links_bps"]), max(report["links_bps"])
    grid = np.logspace(math.log10(lo), math.log10(hi), 240)
    names = list(report["coders"])
    iota_colors = ["#1f4e9c", "#c0392b", "#1e8449", "#7d3c98", "#b9770e", "#17202a"]
    peer_colors = plt.get_cmap("tab10").colors
    style: dict[str, dict[str, Any]] = {}
    i_iota = i_peer = 0
    for name in names:
        if report["coders"][name]["kind"] == "iota":
            style[name] = {"color": iota_colors[i_iota % len(iota_colors)], "linewidth": 2.6}
            i_iota += 1
        else:
            style[name] = {"color": peer_colors[i_peer % 10], "linewidth": 1.1, "alpha": 0.85}
            i_peer += 1
    for col, ((tensor, _dtype), rows) in enumerate(by_tensor.items()):
        top, bottom = axes[0][col], axes[1][col]
        top.plot(grid, grid, color="black", linestyle="--", linewidth=1.2, label="raw")
        bottom.axhline(1.0, color="black", linestyle="--", linewidth=1.2)
        for r in rows:
            tr = [
                links.transfer(
                    r["raw_bytes"], r["coded_bytes"], r["encode_s"], r["decode_s"], bps, r["chunks"]
                )
                for bps in grid
            ]
            st = style[r["codec"]]
            top.plot(grid, [x.effective_bps(overlapped=True) for x in tr], label=r["codec"], **st)
            bottom.plot(grid, [x.speedup_overlapped for x in tr], **st)
            if r["kind"] == "iota":
                bottom.plot(grid, [x.speedup_serial for x in tr], linestyle=":", **st)
        r0 = rows[0]
        top.set_title(f"{tensor} ({r0['dtype']}, {r0['raw_bytes'] / 2**20:.1f} MiB)", fontsize=10)
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.grid(True, which="major", alpha=0.3)
        top.set_yscale("log")
        bottom.set_xlabel("link speed (bit/s)")
        if col == 0:
            top.set_ylabel("effective throughput (raw bit/s)")
            bottom.set_ylabel("speedup over raw")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    m = report["machine"]
    threads = report["settings"].get("threads")
    fig.suptitle(
        f"iota-codec {report['iota_codec']} and peers: encode + send + decode of one tensor "
        f"(solid: overlapped, dotted: iota serial; iota threads={threads}, peers 1 thread; "
        f"{m['cores']}-core {m['machine']}, SIMD {m['simd_level']})",
        fontsize=9,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
