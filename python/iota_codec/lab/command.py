"""``iota-codec lab``: pipeline training over a shaped link, raw against compressed."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from .model import OPTIMIZERS
from .runner import Options, Rate, RunConfig

DESCRIPTION = """\
Trains a small byte-level GPT as a two-stage pipeline: two processes, one core each, in two
network namespaces joined by a veth pair whose rate (tc tbf) and delay (tc netem, where the
kernel has it) the command sets, and removes again. Every configuration trains with the
same seeds and batches: raw on the unshaped link (the reference), then raw, each codec and
each bottleneck + codec on the shaped links (and the other seeds unshaped: the link changes
no loss). It reports tokens per second, training and validation loss (the mean over the
seeds), and the boundary compression in both directions, and for each rate the
compute-to-link ratio and the GPU links that have the same one.

On a CPU a small model is compute-bound at 80 Mbit/s; an H100 computes about 10^4 times
faster. Sweep down to where the raw run is link-bound: a rate written gpu:80M is the one at
which this machine's compute-to-link ratio equals that of an 8B-class pipeline stage on an
H100 at 80 Mbit/s.

Needs root and iproute2. Without them it says so; --fallback then runs the same lab over a
paced socket in user space (clearly labelled: a model of a link, not a kernel link).

--rates none runs a loss-only lab: no link and no root; every configuration trains once per
seed, the stages exchanging over an unpaced loopback relay, and only losses, compression
and compute speed are reported (the cheap way to compare boundaries for their loss). With
--reference REPORT.json it takes raw's runs from an earlier loss-only lab with the same
settings instead of training raw again."""

DEFAULT_RATES = "80M,10M,2M,gpu:80M"
QUICK = {"steps": 40, "measure_seconds": 8.0, "val_batches": 8, "seeds": 1}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "lab",
        help="pipeline training over a shaped link: raw against codecs and a bottleneck",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--rates",
        default=DEFAULT_RATES,
        help=f"link rates in bit/s, comma-separated, k/M/G suffixes; gpu:RATE is the rate "
        f"with the compute-to-link ratio of an 8B-class H100 stage at RATE (default "
        f"{DEFAULT_RATES}); the fastest is where every configuration trains the full --steps; "
        "'none': a loss-only lab, no link",
    )
    p.add_argument(
        "--delay",
        default="20ms",
        help="one-way delay added in each direction with netem (default 20ms; 0 for none)",
    )
    p.add_argument("--steps", type=int, help="training steps of the full runs (default 200)")
    p.add_argument(
        "--profiles",
        help="iota-codec profiles to run, comma-separated, or 'none' (default: every profile)",
    )
    p.add_argument(
        "--codec",
        action="append",
        default=[],
        metavar="JSON",
        help='an explicit codec config, e.g. \'{"name": "err1%%", "error": 0.01}\'; "grad" '
        "sets the gradients' codec (a profile or a config; default the same); repeatable",
    )
    p.add_argument(
        "--bottleneck",
        default="8",
        help="ResidualBottleneck widths k to run, comma-separated, or 'none' (default 8)",
    )
    p.add_argument(
        "--bottleneck-codec",
        action="append",
        default=[],
        metavar="CODEC",
        help="codecs for the bottleneck runs: 'raw', a profile or a JSON config; repeatable "
        "(default: raw and lossless)",
    )
    p.add_argument(
        "--bottleneck-hidden",
        type=int,
        default=None,
        metavar="H",
        help="hidden units of the bottleneck's decoder (0: linear; default: --d-model)",
    )
    p.add_argument("--repeat", type=int, default=1, help="speed measurements per run (median)")
    p.add_argument(
        "--measure-seconds",
        type=float,
        help="about how long each speed-only run measures (default 30)",
    )
    p.add_argument("--warmup", type=int, default=2, help="steps left out of tokens/s (default 2)")
    p.add_argument(
        "--reference",
        metavar="JSON",
        help="with --rates none: take raw's runs from this loss-only lab's report instead of "
        "training raw again (it must have trained with the same settings, seeds and text)",
    )
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    p.add_argument("--plot", metavar="PATH", help="plot speed and loss (PNG)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a short lab: {QUICK['steps']} steps, short speed runs, fewer validation batches",
    )
    p.add_argument(
        "--fallback",
        action="store_true",
        help="use the paced-socket fallback (a user-space relay) instead of the kernel link",
    )
    p.add_argument("--cleanup", action="store_true", help="only remove what stopped labs left")
    g = p.add_argument_group("model and training")
    g.add_argument("--d-model", type=int, default=256)
    g.add_argument("--layers", type=int, default=4, help="blocks, half per stage (default 4)")
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--seq-len", type=int, default=128)
    g.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    g.add_argument("--micro", type=int, default=4, help="micro-batches per step (default 4)")
    g.add_argument(
        "--schedule",
        default="1f1b",
        choices=["1f1b", "gpipe"],
        help="pipeline schedule of the micro-batches (default 1f1b)",
    )
    g.add_argument(
        "--ahead",
        type=int,
        default=1,
        metavar="N",
        help="1F1B: micro-batches the first stage's forwards run ahead of its backwards "
        "(default 1, as in 1F1B; more hides more of the link's latency, for N more "
        "micro-batches of activations kept)",
    )
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument(
        "--optimizer",
        default="muon",
        choices=list(OPTIMIZERS),
        help="muon: Muon on the blocks' and the bottleneck's weight matrices, AdamW on the "
        "rest (default); adamw: AdamW on everything",
    )
    g.add_argument(
        "--muon-dtype",
        default="auto",
        choices=["auto", "bfloat16", "float32"],
        help="precision of Muon's orthogonalization (default auto: the faster on this machine; "
        "torch.optim.Muon's bfloat16 is emulated, and 40x slower, on CPUs without native "
        "bfloat16)",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--val-batches", type=int, help="held-out batches (default 64)")
    g.add_argument(
        "--val-every",
        type=int,
        metavar="N",
        help="also evaluate every training run after every N steps (a validation curve: the "
        "stages keep a copy of their weights every N steps, evaluated when the run ends)",
    )
    g.add_argument(
        "--seeds",
        type=int,
        help="seeds every configuration trains with (the others unshaped: the link changes no "
        "loss); validation losses are the mean over them (default 3; --quick: 1)",
    )
    g.add_argument(
        "--gpu-tflops",
        type=float,
        default=396.0,
        help="sustained GPU TFLOP/s the GPU columns assume (default 396: 40%% of an H100's "
        "989 dense bf16)",
    )
    return p


def parse_rates(text: str) -> list[Rate]:
    """The rates of ``--rates`` (none for ``none``: a loss-only lab)."""
    from ..bench.command import parse_links

    if text.strip().lower() == "none":
        return []
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item.lower().startswith("gpu:"):
            out.append(Rate(gpu_bps=parse_links(item[4:])[0]))
        else:
            out.append(Rate(bps=parse_links(item)[0]))
    if not out:
        raise ValueError("--rates needs at least one rate, or 'none' for a loss-only lab")
    return out


def parse_delay(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?\d+)?)\s*(ms|s|us)?\s*", text.lower())
    if not m:
        raise ValueError(f"cannot read delay {text!r} (try 20ms)")
    value = float(m.group(1))
    return value * {"ms": 1e-3, "us": 1e-6, "s": 1.0, None: 1.0}[m.group(2)]


def _codec_config(item: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, Codec config with threads=1 unless given) of a profile or a JSON config."""
    import iota_codec

    if isinstance(item, str):
        text = item.strip()
        if text.startswith("{"):
            try:
                item = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{text!r} is not valid JSON: {e}") from None
        else:
            cfg = {"profile": text, "threads": 1}
            iota_codec.Codec.from_config(cfg)
            return text, cfg
    if not isinstance(item, dict):
        raise ValueError(f"a codec must be a profile name or a JSON object, not {item!r}")
    cfg = dict(item)
    name = cfg.pop("name", None)
    cfg.pop("grad", None)
    cfg.setdefault("threads", 1)
    iota_codec.Codec.from_config(cfg)  # bad settings fail now, not in a stage
    if name is None:
        name = ",".join(f"{k}={v}" for k, v in cfg.items() if k != "threads")
    return str(name), cfg


def _config(item: str, bottleneck: int | None = None, hidden: int | None = None) -> RunConfig:
    if item.strip() == "raw":
        name = f"k{bottleneck}+raw" if bottleneck else "raw"
        return RunConfig(name, bottleneck=bottleneck, hidden=hidden if bottleneck else None)
    name, cfg = _codec_config(item)
    grad = cfg
    if item.strip().startswith("{"):
        g = json.loads(item).get("grad")
        if g is not None:
            grad = _codec_config(g if isinstance(g, str) else json.dumps(g))[1]
    if bottleneck:
        name = f"k{bottleneck}+{name}"
    return RunConfig(name, cfg, grad, bottleneck, hidden if bottleneck else None)


def options(args: argparse.Namespace) -> Options:
    import iota_codec

    configs = [RunConfig("raw")]
    profiles = args.profiles.split(",") if args.profiles else list(iota_codec.PROFILES)
    if profiles != ["none"]:
        configs += [_config(p) for p in profiles if p.strip()]
    configs += [_config(c) for c in args.codec]
    if args.bottleneck.strip().lower() != "none":
        ks = [int(k) for k in args.bottleneck.split(",") if k.strip()]
        codecs = args.bottleneck_codec or ["raw", "lossless"]
        hidden = args.d_model if args.bottleneck_hidden is None else args.bottleneck_hidden
        hidden = hidden or None
        for k in ks:
            if not 1 <= k <= args.d_model:
                raise ValueError(f"--bottleneck {k} must be between 1 and --d-model")
            configs += [_config(c, k, hidden) for c in codecs]
    names = [c.name for c in configs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f'two runs are named {sorted(dup)}: give configs a "name"')
    quick = QUICK if args.quick else {}
    rates = parse_rates(args.rates)
    if not rates and args.fallback:
        raise ValueError("--rates none runs no link: --fallback has nothing to replace")
    if not rates and args.repeat != 1:
        raise ValueError("--rates none measures no link speeds: --repeat has nothing to repeat")
    if rates and args.reference:
        raise ValueError(
            "--reference is for loss-only labs (--rates none): a lab over a link measures "
            "raw's speed on this machine"
        )
    o = Options(
        rates=rates,
        configs=configs,
        delay_s=parse_delay(args.delay) if rates else 0.0,
        steps=args.steps or quick.get("steps", 200),
        warmup=args.warmup,
        measure_seconds=args.measure_seconds or quick.get("measure_seconds", 30.0),
        repeat=args.repeat,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        seq_len=args.seq_len,
        batch=args.batch,
        micro=args.micro,
        schedule=args.schedule,
        ahead=args.ahead,
        lr=args.lr,
        optimizer=args.optimizer,
        muon_dtype=None if args.muon_dtype == "auto" else args.muon_dtype,
        seed=args.seed,
        val_batches=args.val_batches or quick.get("val_batches", 64),
        val_every=args.val_every,
        seeds=quick.get("seeds", 3) if args.seeds is None else args.seeds,
        fallback=args.fallback,
        gpu_flops=args.gpu_tflops * 1e12,
        reference=args.reference,
    )
    if o.steps <= o.warmup:
        raise ValueError("--steps must be larger than --warmup")
    if o.batch % o.micro:
        raise ValueError("--batch must be a multiple of --micro")
    if not 1 <= o.ahead <= o.micro:
        raise ValueError("--ahead must be between 1 and --micro")
    if o.n_layers < 2 or o.n_layers % 2:
        raise ValueError("--layers must be even (half per stage)")
    if o.repeat < 1:
        raise ValueError("--repeat must be at least 1")
    if o.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    if o.val_every is not None and not 1 <= o.val_every < o.steps:
        raise ValueError("--val-every must be at least 1 and below --steps")
    return o


def main(args: argparse.Namespace) -> int:
    from .._adapt import require_torch
    from . import net, report, runner

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.cleanup:
        if net.kernel_link_problem() is not None:
            log("iota-codec lab --cleanup: nothing to do without root and iproute2")
            return 0
        removed = net.remove_stale()
        log("removed: " + (", ".join(removed) if removed else "nothing"))
        return 0
    try:
        o = options(args)
    except (ValueError, OSError) as e:
        log(f"iota-codec lab: {e}")
        return 2
    try:
        require_torch("iota-codec lab")
    except ModuleNotFoundError as e:
        log(str(e))
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            log("iota-codec lab: --plot needs matplotlib: pip install 'iota-codec[bench]'")
            return 2
    o.extra["command"] = (
        "iota-codec " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["lab"] else None
    )
    try:
        result = runner.run_lab(o, log)
    except runner.LabUnavailable as e:
        log(
            f"iota-codec lab: cannot build the kernel link here: {e}.\n"
            "The lab shapes a veth pair between two network namespaces with tc, which needs "
            "root and iproute2 (ip, tc).\n"
            "Run it as root, or add --fallback for a paced-socket link in user space (a "
            "model of a link, labelled as such in every output)."
        )
        return 3
    except runner.BadReference as e:
        log(f"iota-codec lab: {e}")
        return 2
    except runner.LabError as e:
        log(f"iota-codec lab: a run failed: {e}")
        return 1
    print(report.text(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(report.to_json(result) + "\n")
        log(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown(result))
        log(f"wrote {args.markdown}")
    if args.plot:
        report.plot(result, args.plot)
        log(f"wrote {args.plot}")
    return 0
