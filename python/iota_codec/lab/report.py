"""The lab's report: terminal and Markdown tables, JSON, and a plot."""

from __future__ import annotations

import math
from typing import Any

from ..bench.report import Table, fmt_bps, render_markdown, render_plain, to_json

__all__ = ["markdown", "plot", "tables", "targets", "text", "to_json"]


def _link(rate: float | None) -> str:
    return "unshaped" if rate is None else fmt_bps(rate)


def _loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _x(v: float) -> str:
    return f"{v:.1f}x" if v < 100 else f"{v:.0f}x"


def _label(report: dict[str, Any], rate: float | None) -> str:
    if report["mode"] == "loss-only":
        return "none"
    for g in report["regimes"]:
        if g["rate_bps"] == rate and g["label"].startswith("gpu:"):
            return f"{_link(rate)} ({g['label']})"
    return _link(rate)


def tables(report: dict[str, Any]) -> list[Table]:
    """The regime of each rate, then the runs."""
    reg = Table(
        "the regime of each rate",
        [
            "lab link",
            "raw transfer s/step",
            "compute s/step",
            "compute/link",
            "GPU link, same model",
            "GPU link, 8B-class stage",
        ],
    )
    for g in report["regimes"]:
        reg.rows.append([
            _label(report, g["rate_bps"]),
            f"{g['link_s']:.3g}",
            f"{g['compute_s']:.3g}",
            f"{g['ratio']:.3g}",
            fmt_bps(g["gpu_same_model_bps"]),
            fmt_bps(g["gpu_reference_bps"]),
        ])  # fmt: skip
    gpu = report["gpu"]
    g0 = report["regimes"][0] if report["regimes"] else None
    if g0:
        reg.caption = (
            "compute/link: the unshaped step time over the raw boundary's transfer time per "
            "step (both directions); the lower, the more the link limits. GPU: "
            f"{gpu['mfu']:.0%} of "
            f"{gpu['peak_flops'] / 1e12:.0f} TFLOP/s = {g0['gpu_factor']:.3g}x this machine's "
            f"{g0['cpu_flops'] / 1e9:.3g} GFLOP/s per stage; 8B-class stage: d="
            f"{gpu['reference']['d_model']}, {gpu['reference']['layers_per_stage']} layers, "
            f"sequences of {gpu['reference']['seq_len']}"
        )
    seeds = report["settings"].get("seeds", 1)
    runs = Table(
        "runs (same seeds, same batches)",
        [
            "config",
            "link",
            "tokens/s",
            "% of unshaped",
            "train loss",
            "val loss" if seeds == 1 else f"val loss, mean of {seeds} seeds",
            "val vs raw" if seeds == 1 else "val vs raw (per seed)",
            "compression fwd/bwd/total",
        ],
    )
    for row in report["rows"]:
        c = row["compression"]
        vs = row.get("val_loss_vs_raw_pct")
        paired = row.get("val_loss_vs_raw_paired_pct") or []
        if vs is None:
            vs_text = "-"
        elif len(paired) > 1:
            vs_text = f"{vs:+.2f}% ({min(paired):+.1f} to {max(paired):+.1f})"
        else:
            vs_text = f"{vs:+.2f}%"
        runs.rows.append([
            row["config"],
            _label(report, row["rate_bps"]),
            f"{row['tokens_per_s']:.0f}",
            f"{row['pct_of_unshaped']:.0f}%",
            _loss(row["train_loss"]),
            _loss(row["val_loss"]),
            vs_text,
            f"{_x(c['forward'])} / {_x(c['backward'])} / {_x(c['total'])}",
        ])  # fmt: skip
    steps = report["settings"]["steps"]
    if report["mode"] == "loss-only":
        where = "trained with no link"
    else:
        where = f"trained at {_link(report['train_rate_bps'])}"
    if seeds > 1 and report["mode"] == "loss-only":
        where += f", {_seeds(report['settings'])}"
    elif seeds > 1:
        where += f" with seed {report['settings']['seed']}, the others unshaped"
    runs.caption = (
        f"losses after {steps} steps ({where}); train loss: the last 10% of the steps, seed "
        f"{report['settings']['seed']}; "
        + (
            "val vs raw: of the means, and in brackets seed by seed against raw with the same "
            "seed; "
            if seeds > 1
            else ""
        )
        + "tokens/s: steady state, median of the runs at that link; compression: against the "
        "raw bf16 boundary, wire bytes (frames and headers) in each direction"
    )
    curve = curve_table(report)
    return ([reg] if reg.rows else []) + [runs] + ([curve] if curve else [])


def _curves(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The trained rows with a validation curve (``--val-every``), one per configuration."""
    out: dict[str, dict[str, Any]] = {}
    for r in report["rows"]:
        if r.get("val_curve") and r["config"] not in out:
            out[r["config"]] = r
    return out


def curve_table(report: dict[str, Any]) -> Table | None:
    """Validation loss after every ``--val-every`` steps, each configuration against raw."""
    curves = _curves(report)
    if not curves:
        return None
    t = Table("validation loss during training", ["steps", *curves])
    losses = {name: dict(r["val_curve"]) for name, r in curves.items()}
    vs_raw = {name: dict(r.get("val_curve_vs_raw_pct") or []) for name, r in curves.items()}
    for s in sorted({s for by_step in losses.values() for s in by_step}):
        cells = [str(s)]
        for name in curves:
            loss, vs = losses[name].get(s), vs_raw[name].get(s)
            if loss is None:
                cells.append("-")
            elif name == "raw" or vs is None:
                cells.append(f"{loss:.4f}")
            else:
                cells.append(f"{loss:.4f} ({vs:+.2f}%)")
        t.rows.append(cells)
    seeds = report["settings"].get("seeds", 1)
    t.caption = (
        f"held-out loss after each number of steps ({report['settings']['val_batches']} "
        "batches"
        + (f", mean of {seeds} seeds" if seeds > 1 else "")
        + "); in brackets against raw's at the same step"
    )
    return t


def _bottleneck_lines(here: list[dict[str, Any]], speed: bool = True) -> list[str]:
    lines = []
    for r in here:
        if r["bottleneck"] and r["val_loss"] is not None:
            c = r["compression"]["total"]
            okc = c >= 128 and r["val_loss_vs_raw_pct"] <= 3.0
            lines.append(
                f"    {r['config']}: {c:.0f}x, val loss "
                f"{r['val_loss_vs_raw_pct']:+.2f}% vs raw"
                + (f", {r['pct_of_unshaped']:.0f}% of unshaped" if speed else "")
                + f" ({'meets' if okc else 'misses'} 128x within 3%)"
            )
    return lines


def targets(report: dict[str, Any]) -> list[str]:
    """The lab's targets, checked at every link-bound rate: the best codec run (no
    bottleneck) against 90% of unshaped speed and 1% of raw validation loss; bottleneck +
    codec against 128x compression and 3% of raw validation loss. A loss-only lab checks
    the losses and the compression alone."""
    lines = []
    rows = report["rows"]
    spread = report.get("seed_spread", {})
    vals = spread.get("val_loss", [])
    if len(vals) > 1:
        lo, hi = min(vals), max(vals)
        lines.append(
            f"raw validation loss over seeds {spread['seeds']}: {lo:.4f} to {hi:.4f} "
            f"(spread {100 * (hi - lo) / vals[0]:.1f}% of seed {spread['seeds'][0]}'s): "
            "differences smaller than that are noise"
        )
    if report["mode"] == "loss-only":
        codecs = [r for r in rows if r["config"] != "raw" and not r["bottleneck"]]
        for r in codecs:
            if r["val_loss"] is not None:
                ok = abs(r["val_loss_vs_raw_pct"]) <= 1.0
                lines.append(
                    f"no link (loss-only): {r['config']} val loss "
                    f"{r['val_loss_vs_raw_pct']:+.2f}% vs raw ({'within' if ok else 'outside'} "
                    "1%; no speed measured)"
                )
        bottlenecks = _bottleneck_lines(rows, speed=False)
        if bottlenecks:
            lines += ["no link (loss-only), bottlenecks:", *bottlenecks]
    for g in report["regimes"]:
        rate = g["rate_bps"]
        here = [r for r in rows if r["rate_bps"] == rate]
        raw = next((r for r in here if r["config"] == "raw"), None)
        if raw is None:
            continue
        head = (
            f"{_label(report, rate)} (compute/link {g['ratio']:.2g}, "
            f"raw at {raw['pct_of_unshaped']:.0f}% of unshaped)"
        )
        codecs = [r for r in here if r["config"] != "raw" and not r["bottleneck"] and r["val_loss"]]
        ok = [r for r in codecs if abs(r["val_loss_vs_raw_pct"]) <= 1.0]
        if ok:
            best = max(ok, key=lambda r: r["tokens_per_s"])
            hit = best["pct_of_unshaped"] >= 90
            lines.append(
                f"{head}: best codec run within 1% loss is {best['config']} at "
                f"{best['pct_of_unshaped']:.0f}% of unshaped ({'meets' if hit else 'misses'} 90%)"
            )
        else:
            lines.append(f"{head}: no codec run within 1% of raw validation loss")
        lines += _bottleneck_lines(here)
    return lines


def _seeds(settings: dict[str, Any]) -> str:
    first, n = settings["seed"], settings.get("seeds", 1)
    return f"seed {first}" if n == 1 else f"seeds {first} to {first + n - 1}"


def _schedule(settings: dict[str, Any]) -> str:
    kind = settings.get("schedule", "gpipe")
    ahead = settings.get("ahead", 1)
    if kind == "1f1b" and ahead != 1:
        return f"1F1B, the first stage's forwards {ahead} micro-batches ahead"
    return kind.upper()


def _optimizer(settings: dict[str, Any]) -> str:
    name = settings.get("optimizer", "adamw")
    if name == "muon":
        dtype = settings.get("muon_dtype")
        inside = f"orthogonalized in {dtype}; " if dtype else ""
        return f"Muon ({inside}AdamW on embeddings, head, gains and biases)"
    return {"adamw": "AdamW"}.get(name, name)


def header_lines(report: dict[str, Any]) -> list[str]:
    m = report.get("machine", {})
    s = report["settings"]
    link = report["link"]
    mode = report["mode"]
    delay = f"one-way delay {link['delay_applied_s'] * 1e3:.0f} ms"
    if link["delay_applied_s"] != link["delay_s"]:
        delay += f" (asked for {link['delay_s'] * 1e3:.0f} ms)"
    if mode == "kernel":
        where = f"link: {link['kind']}; {delay}"
    elif mode == "loss-only":
        where = (
            "no link (--rates none, a loss-only lab): the stages exchange over an unpaced "
            "user-space TCP relay on 127.0.0.1; losses and compression only, tokens/s is this "
            "machine's compute"
        )
    else:
        where = f"link: PACED-SOCKET FALLBACK, {link['kind']} ({report['mode_reason']}); {delay}"
    lines = [
        f"iota-codec {report['iota_codec']} link lab: {m.get('cores', '?')} cores "
        f"({m.get('cpu', m.get('machine', '?'))}), one per stage",
        where,
        f"model: byte-level GPT d={s['d_model']}, {s['n_layers']} layers ({s['n_layers'] // 2} "
        f"per stage), {s['batch']}x{s['seq_len']} tokens per step in {s['micro']} micro-batches "
        f"({_schedule(s)}), {_optimizer(s)} lr {s['lr']}, {_seeds(s)}; "
        "text: the Python standard library's sources (one file in ten held out)",
    ]
    return lines


def footer_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"note: {n}" for n in report["notes"]]
    if report["mode"] != "loss-only":
        bad = [
            f"{r['config']} at {_link(r['rate_bps'])}"
            for r in report["rows"]
            if r["losses_match_full_run"] is False
        ]
        lines.append(
            "losses identical at every link: "
            + (
                "yes (every run's per-step losses equal its full run's)"
                if not bad
                else f"NO: {bad}"
            )
        )
    lines.append(f"measured in {report['wall_s']:.0f} s")
    return lines


def text(report: dict[str, Any]) -> str:
    parts = header_lines(report)
    for t in tables(report):
        parts += ["", render_plain(t)]
    parts += ["", "targets:", *targets(report), ""]
    parts += footer_lines(report)
    return "\n".join(parts)


def markdown(report: dict[str, Any]) -> str:
    parts = [f"<sub>{line}</sub>  " for line in header_lines(report)]
    for t in tables(report):
        parts += ["", render_markdown(t)]
    parts += [""] + [f"- {line.strip()}" for line in targets(report)]
    parts += [""] + [f"<sub>{line}</sub>  " for line in footer_lines(report)]
    return "\n".join(parts) + "\n"


def _speed_panel(ax: Any, report: dict[str, Any], names: list[str], color: dict[str, str]) -> None:
    """Tokens per second (% of the unshaped raw run) against the lab's link rate."""
    rows = report["rows"]
    for name in names:
        pts = sorted(
            (r["rate_bps"], r["pct_of_unshaped"])
            for r in rows
            if r["config"] == name and r["rate_bps"] is not None
        )
        if not pts:
            continue
        bottleneck = next(r["bottleneck"] for r in rows if r["config"] == name)
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            color=color[name],
            linewidth=2.4 if name != "raw" else 1.6,
            linestyle="--" if bottleneck else "-",
            label=name,
        )
    ax.axhline(100, color="black", linewidth=1, linestyle=":")
    ax.axhline(90, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("lab link rate (bit/s), tc tbf on a veth pair")
    ax.set_ylabel("tokens/s, % of the unshaped raw run")
    ax.set_ylim(0, 110)
    ax.grid(True, which="major", alpha=0.3)
    for g in report["regimes"]:
        ax.axvline(g["rate_bps"], color="grey", alpha=0.15, linewidth=6)
    regs = report["regimes"]
    if regs:
        scale = regs[0]["gpu_reference_bps"] / regs[0]["rate_bps"]
        top = ax.secondary_xaxis("top", functions=(lambda x: x * scale, lambda x: x / scale))
        top.set_xlabel("same compute-to-link ratio: 8B-class stage on an H100 (bit/s)")
        for g in regs:
            if g["label"].startswith("gpu:"):
                ax.annotate(
                    f"{g['label']}\n(ratio {g['ratio']:.2g})",
                    (g["rate_bps"], 104),
                    ha="center",
                    fontsize=8,
                )
    ax.legend(fontsize=8, loc="lower right")


def plot(report: dict[str, Any], path: str) -> None:
    """Left (not in a loss-only lab): tokens per second (% of the unshaped raw run) against
    the lab's link rate, one line per configuration, with the 8B-class GPU link of the same
    regime on the top axis.
    Middle: validation loss against total boundary compression. Right, with ``--val-every``:
    each configuration's validation loss against raw's as training goes on."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the plot needs matplotlib: pip install 'iota-codec[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = list(dict.fromkeys(r["config"] for r in rows))
    palette = ["#17202a", "#1f4e9c", "#c0392b", "#1e8449", "#7d3c98", "#b9770e", "#5d6d7e"]
    color = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    curves = _curves(report)
    speed = report["mode"] != "loss-only"  # a loss-only lab measured no link
    widths = [3] * speed + [2] + [2] * bool(curves)
    fig, axes = plt.subplots(
        1, len(widths), figsize=(2.5 * sum(widths), 5.2), width_ratios=widths,
        layout="constrained",
    )  # fmt: skip
    axes = list(axes)
    if speed:
        _speed_panel(axes.pop(0), report, names, color)
    bx = axes.pop(0)
    cx = axes.pop(0) if curves else None
    # One point per configuration (every row of a configuration holds its trained loss).
    trained = list({r["config"]: r for r in rows if r["val_loss"] is not None}.values())
    raw_val = next((r["val_loss"] for r in rows if r["config"] == "raw" and r["val_loss"]), None)
    for r in trained:
        bx.scatter(
            r["compression"]["total"],
            r["val_loss"],
            color=color[r["config"]],
            s=50,
            marker="s" if r["bottleneck"] else "o",
            zorder=3,
        )
        bx.annotate(
            r["config"],
            (r["compression"]["total"], r["val_loss"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    if raw_val:
        bx.axhline(raw_val, color="black", linewidth=1, linestyle=":", label="raw")
        bx.axhline(raw_val * 1.01, color="grey", linewidth=0.8, linestyle="--", label="raw +1%")
        bx.axhline(raw_val * 1.03, color="grey", linewidth=0.8, linestyle="-.", label="raw +3%")
        bx.legend(fontsize=8, loc="upper left")
    bx.set_xscale("log")
    bx.set_xlabel("total boundary compression, both directions (x)")
    bx.set_ylabel(f"validation loss after {report['settings']['steps']} steps (nats/byte)")
    bx.grid(True, which="major", alpha=0.3)
    if cx is not None:
        for name, r in curves.items():
            pts = r.get("val_curve_vs_raw_pct") or []
            if name == "raw" or not pts:
                continue
            cx.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                color=color[name],
                linestyle="--" if r["bottleneck"] else "-",
                label=f"{name} ({_x(r['compression']['total'])})",
            )
        cx.axhline(0, color="black", linewidth=1, linestyle=":", label="raw")
        cx.axhline(1, color="grey", linewidth=0.8, linestyle="--", label="raw +1%")
        cx.axhline(3, color="grey", linewidth=0.8, linestyle="-.", label="raw +3%")
        cx.set_xlabel("training steps")
        cx.set_ylabel("validation loss against raw's at the same step (%)")
        cx.grid(True, which="major", alpha=0.3)
        cx.legend(fontsize=8, loc="upper right")
    m = report.get("machine", {})
    mode = {"kernel": "kernel link", "loss-only": "loss only, no link"}.get(
        report["mode"], "PACED-SOCKET FALLBACK"
    )
    fig.suptitle(
        f"iota-codec link lab ({mode}): two pipeline stages of a byte-level GPT, "
        f"{m.get('cores', '?')}-core {m.get('machine', '')}",
        fontsize=10,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)
