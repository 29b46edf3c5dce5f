"""Runs the link lab: the stages over the link, run after run, and what they measured.

Plan of a lab (see :func:`run_lab`):

1. ``raw`` on the unshaped link for ``steps`` steps: the reference (100%) tokens per second,
   the compute time per step, and the loss every other run is compared with (and, with
   ``seeds`` > 1, raw with the other seeds, unshaped).
2. Each rate is resolved (``gpu:80M`` becomes the rate at which this machine's
   compute-to-link ratio equals a reference GPU pipeline's at 80 Mbit/s) and its regime is
   worked out.
3. Every other configuration (codec profiles, bottleneck + codec) trains ``steps`` steps on
   the fastest shaped link: these runs give the training and validation losses. Raw does
   not train again there (its losses would be the reference's, bit for bit): at that rate,
   as at every other, it runs only long enough to measure its speed.
4. At every other rate, every configuration runs the same training (same seed, same
   batches) only for as many steps as it takes to measure its speed; its per-step losses
   must equal the first steps of its full run (the link cannot change what is computed),
   which the report checks.
5. With ``seeds`` > 1, every other configuration trains with the other seeds too, on the
   unshaped link (the link changes no loss). Validation losses are reported as the mean over
   the seeds, and compared with raw's mean: one seed's loss after a few hundred steps moves
   by several percent from seed to seed, more than the differences the lab looks for.
6. With ``repeat`` > 1, the unshaped reference and steps 3 and 4 are repeated (speed only,
   each about ``measure_seconds`` long) and medians reported: on a shared machine the speed
   of one run can move by 10% from minute to minute, and the reference moves with it.

With no rates (``--rates none``) the lab is loss-only: no link is built (no root needed),
the stages exchange over an unpaced loopback relay, and every configuration trains once per
seed; steps 2, 3, 4 and 6 fall away.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import model, net

# The GPU regime the lab stands for (see the README's "Link lab"): one H100 SXM at 40% of its
# dense bf16 peak (989 TFLOP/s), and an 8B-class model (d=4096, 32 layers) cut into 4
# stages of 8 layers, sequences of 2048, crossing the link in bf16.
GPU_PEAK_FLOPS = 989e12
GPU_MFU = 0.4
REFERENCE = {"d_model": 4096, "layers_per_stage": 8, "seq_len": 2048}


class LabUnavailable(RuntimeError):
    """The kernel link cannot be set up here (the message says why)."""


class BadReference(ValueError):
    """``--reference`` names a report whose raw runs cannot stand in for this lab's (the
    message says why)."""


class LabError(RuntimeError):
    """A run failed."""


@dataclass(frozen=True)
class RunConfig:
    """One configuration of the boundary: ``codec`` (a Codec config; ``None``: raw bf16),
    ``grad_codec`` for the gradients, and an optional bottleneck width (with ``hidden``
    units in its decoder, or a linear one)."""

    name: str
    codec: dict[str, Any] | None = None
    grad_codec: dict[str, Any] | None = None
    bottleneck: int | None = None
    hidden: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Rate:
    """A link rate: ``bps`` bit/s, or (``gpu_bps``) the rate at which this lab's
    compute-to-link ratio is that of the reference GPU pipeline at ``gpu_bps``."""

    bps: float | None = None
    gpu_bps: float | None = None

    @property
    def label(self) -> str:
        from ..bench.report import fmt_link

        return f"gpu:{fmt_link(self.gpu_bps)}" if self.gpu_bps else fmt_link(self.bps or 0)


@dataclass
class Options:
    rates: list[Rate]
    configs: list[RunConfig]
    delay_s: float = 0.02
    steps: int = 200
    warmup: int = 2
    measure_seconds: float = 30.0
    repeat: int = 1
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    seq_len: int = 128
    batch: int = 8
    micro: int = 4
    schedule: str = "1f1b"
    # Micro-batches the first stage's forwards run ahead of its backwards in 1F1B (1: plain
    # 1F1B; see stage.schedule).
    ahead: int = 1
    lr: float = 2e-3
    optimizer: str = "muon"
    # The precision of Muon's orthogonalization ("bfloat16" or "float32"); None: the faster
    # on this machine, measured once when the lab starts, so that every stage of every run
    # computes the same arithmetic.
    muon_dtype: str | None = None
    seed: int = 0
    val_batches: int = 64
    # Also evaluate the training runs every this many steps (None: only at the end).
    val_every: int | None = None
    # Seeds every configuration trains (the lab's seed, then the next ones).
    seeds: int = 1
    fallback: bool = False
    gpu_flops: float = GPU_PEAK_FLOPS * GPU_MFU
    keep: str | None = None  # keep the run folders here
    # A loss-only lab's JSON report whose raw runs (same settings, seeds and text) stand in
    # for training raw again (see :func:`reference_runs`).
    reference: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def gpt(self) -> Any:
        from iota_codec.data import GPTConfig

        return GPTConfig(
            d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
            seq_len=self.seq_len,
        )  # fmt: skip


# --- the regime -------------------------------------------------------------------------------


def raw_bits_per_step(o: Options) -> float:
    """Bits of the uncompressed bf16 boundary per training step, both directions."""
    return 2 * o.batch * o.seq_len * o.d_model * 16.0


def regime(o: Options, unshaped_step_s: float, rate_bps: float) -> dict[str, float]:
    """Where a rate puts this lab, and the GPU links that are in the same place.

    - ``link_s``: the raw boundary's transfer time per step at ``rate_bps`` (both
      directions; they do not overlap in a GPipe step);
    - ``ratio``: compute-to-link ratio, the unshaped step time over ``link_s`` (below 1 the
      raw run is link-bound);
    - ``cpu_flops``: this machine's sustained training FLOP/s per stage (model FLOPs per step
      over two stages' step time, bubble and overheads included, as MFU counts them);
    - ``gpu_factor``: how much faster the GPU of :data:`GPU_MFU` x :data:`GPU_PEAK_FLOPS` is;
    - ``gpu_same_model_bps``: the link at which the same model, on such GPUs, has the same
      ratio (``rate x gpu_factor``);
    - ``gpu_reference_bps``: the link at which the :data:`REFERENCE` pipeline stage on such a
      GPU has the same ratio (per token it computes ``f_ref`` FLOPs and ships ``b_ref`` bits
      where the lab's stage computes ``f_lab`` and ships ``b_lab``:
      ``rate x gpu_factor x (b_ref / b_lab) x (f_lab / f_ref)``).
    """
    bits = raw_bits_per_step(o)
    link_s = bits / rate_bps
    tokens = o.batch * o.seq_len
    f_lab = model.train_flops_per_token(o.d_model, o.n_layers, o.seq_len) / 2  # per stage
    cpu_flops = f_lab * tokens / unshaped_step_s
    factor = o.gpu_flops / cpu_flops
    b_lab = 2 * o.d_model * 16.0
    d_ref, l_ref, t_ref = REFERENCE["d_model"], REFERENCE["layers_per_stage"], REFERENCE["seq_len"]
    f_ref = l_ref * (72 * d_ref * d_ref + 12 * t_ref * d_ref)
    b_ref = 2 * d_ref * 16.0
    same = rate_bps * factor
    return {
        "rate_bps": rate_bps,
        "link_s": link_s,
        "compute_s": unshaped_step_s,
        "ratio": unshaped_step_s / link_s,
        "cpu_flops": cpu_flops,
        "gpu_factor": factor,
        "gpu_same_model_bps": same,
        "gpu_reference_bps": same * (b_ref / b_lab) * (f_lab / f_ref),
    }


def resolve(o: Options, rate: Rate, unshaped_step_s: float) -> float:
    """The lab rate in bit/s of ``rate`` (``gpu:`` rates need the unshaped step time)."""
    if rate.bps is not None:
        return rate.bps
    assert rate.gpu_bps is not None
    per_bps = regime(o, unshaped_step_s, 1.0)["gpu_reference_bps"]  # linear in the rate
    return rate.gpu_bps / per_bps


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Lab:
    """What stays up for a whole lab: the link, the scratch folder, the running stages."""

    o: Options
    log: Callable[[str], None]
    kernel: net.KernelLink | None = None
    scratch: pathlib.Path | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    shaped: tuple[float | None, float] | None = None
    applied: dict[str, Any] = field(default_factory=dict)
    runs: int = 0

    def kill_stages(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []

    def close(self) -> None:
        self.kill_stages()
        if self.kernel is not None:
            self.kernel.down()
        if self.scratch is not None and self.o.keep is None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def shape(self, rate_bps: float | None) -> dict[str, Any]:
        """Shapes the link for ``rate_bps`` (``None``: unshaped). ``applied`` keeps what the
        last shaped rate got (qdisc, tbf settings, delay), which the report describes."""
        key = (rate_bps, self.o.delay_s)
        if self.kernel is not None and self.shaped != key:
            now = self.kernel.shape(rate_bps, self.o.delay_s)
            self.shaped = key
            if rate_bps is not None:
                self.applied = now
        return self.applied

    def _timeout(self, steps: int, rate_bps: float | None) -> float:
        per_step = 30.0 + (raw_bits_per_step(self.o) / rate_bps * 3 if rate_bps else 0.0)
        return 180.0 + steps * per_step

    def run(
        self,
        cfg: RunConfig,
        rate_bps: float | None,
        steps: int,
        seed: int | None = None,
        snapshot_every: int | None = None,
    ) -> dict[str, Any]:
        """Trains ``cfg`` for ``steps`` steps over the link at ``rate_bps`` (``None``:
        unshaped) and returns the two ranks' results (``seed``: other than the lab's). With
        ``snapshot_every``, the stages also keep their weights every that many steps
        (``rank<R>-snapshots.pt`` in the run's folder: ``{step: state}``)."""
        o = self.o
        assert self.scratch is not None
        self.runs += 1
        folder = self.scratch / f"run{self.runs:03d}"
        folder.mkdir()
        timeout = self._timeout(steps, rate_bps)
        spec: dict[str, Any] = {
            "model": dataclasses.asdict(o.gpt()),
            "bottleneck": cfg.bottleneck,
            "hidden": cfg.hidden,
            "snapshot_every": snapshot_every,
            "codec": cfg.codec,
            "grad_codec": cfg.grad_codec,
            "batch": o.batch,
            "micro": o.micro,
            "schedule": o.schedule,
            "ahead": o.ahead,
            "steps": steps,
            "lr": o.lr,
            "optimizer": o.optimizer,
            "muon_dtype": o.muon_dtype,
            "seed": o.seed if seed is None else seed,
            "timeout_s": timeout,
            "out_dir": str(folder),
            "parent_pid": os.getpid(),
        }
        relay = None
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        if self.kernel is not None:
            self.shape(rate_bps)
            spec["transport"] = "gloo"
            spec["master"] = f"{self.kernel.addresses[0]}:{29500 + self.runs % 1000}"
        else:
            relay = net.PacedRelay(rate_bps, o.delay_s)
            spec["transport"] = "socket"
            spec["ports"] = list(relay.ports)
        (folder / "spec.json").write_text(json.dumps(spec))
        started = time.monotonic()
        try:
            for rank in (0, 1):
                cmd = [sys.executable, "-m", "iota_codec.lab.stage", str(folder / "spec.json")]
                cmd.append(str(rank))
                renv = dict(env)
                if self.kernel is not None:
                    cmd = self.kernel.exec_prefix(rank) + cmd
                    renv["GLOO_SOCKET_IFNAME"] = self.kernel.dev[rank]
                with open(folder / f"rank{rank}.log", "wb") as logf:
                    self.procs.append(
                        subprocess.Popen(cmd, env=renv, stdout=logf, stderr=subprocess.STDOUT)
                    )
            deadline = started + timeout
            while any(p.poll() is None for p in self.procs):
                if time.monotonic() > deadline:
                    raise LabError(f"{cfg.name}: still running after {timeout:.0f} s; stopped")
                if any(p.poll() not in (None, 0) for p in self.procs):
                    time.sleep(2.0)  # let the other side report its own error first
                    break
                time.sleep(0.05)
        finally:
            self.kill_stages()
            if relay is not None:
                relay.close()
        wall = time.monotonic() - started
        results = []
        for rank in (0, 1):
            path = folder / f"rank{rank}.json"
            res = json.loads(path.read_text()) if path.exists() else None
            if res is None or not res.get("ok"):
                tail = _tail(folder / f"rank{rank}.log")
                why = res["error"] if res else f"no result; its output ends:\n{tail}"
                raise LabError(f"{cfg.name}: rank {rank} failed:\n{why}")
            results.append(res)
        return {"folder": folder, "ranks": results, "wall_s": wall}


def _tail(path: pathlib.Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no output)"


# --- measurements -----------------------------------------------------------------------------


def tokens_per_s(o: Options, ends: list[float], warmup: int) -> float:
    """Steady-state tokens per second from rank 0's step end times, after ``warmup``
    steps."""
    n = len(ends)
    w = min(warmup, n - 1)
    if n - w < 1:
        return float("nan")
    span = ends[-1] - (ends[w - 1] if w > 0 else 0.0)
    return (n - w) * o.batch * o.seq_len / span


def measure(o: Options, cfg: RunConfig, got: dict[str, Any], link: str) -> dict[str, Any]:
    r0, r1 = got["ranks"]
    steps = len(r0["step_ends_s"])
    ref_bytes = steps * o.batch * o.seq_len * o.d_model * 2  # raw bf16, d wide, per direction
    fwd_wire, bwd_wire = r0["bytes"]["wire_sent"], r1["bytes"]["wire_sent"]
    fwd_raw, bwd_raw = r0["bytes"]["raw_sent"], r1["bytes"]["raw_sent"]
    losses = r1["losses"]
    tail = max(1, len(losses) // 10)
    return {
        "config": cfg.name,
        "link": link,
        "steps": steps,
        "warmup": min(o.warmup, steps - 1),
        "tokens_per_s": tokens_per_s(o, r0["step_ends_s"], o.warmup),
        "step_ends_s": r0["step_ends_s"],
        "losses": losses,
        "train_loss": sum(losses[-tail:]) / tail,
        "bytes": {
            "forward_raw": fwd_raw,
            "forward_wire": fwd_wire,
            "backward_raw": bwd_raw,
            "backward_wire": bwd_wire,
            "reference_per_direction": ref_bytes,
        },
        "codec_ratio": (fwd_raw + bwd_raw) / (fwd_wire + bwd_wire),
        "compression": {
            "forward": ref_bytes / fwd_wire,
            "backward": ref_bytes / bwd_wire,
            "total": 2 * ref_bytes / (fwd_wire + bwd_wire),
        },
        "wall_s": got["wall_s"],
    }


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


# --- the lab ----------------------------------------------------------------------------------


#: Settings that change no training run's losses (the seeds are matched run by run): a
#: reference may differ in them.
_REUSE_IGNORES = frozenset(
    {"extra", "keep", "reference", "measure_seconds", "repeat", "warmup", "fallback",
     "gpu_flops", "delay_s", "seed", "seeds", "val_every"}
)  # fmt: skip


def reference_runs(o: Options) -> tuple[list[dict[str, Any]], list[str]]:
    """Raw's training runs of the seeds ``o`` trains, taken from the loss-only lab report
    ``o.reference``, and notes on them for the report.

    Raises :class:`BadReference` (saying what differs) unless that lab trained with the same
    settings (all but those of :data:`_REUSE_IGNORES`; ``o.muon_dtype`` resolved), on the
    same text (:func:`model.corpus_digest`, or where the report predates it the same Python
    version, whose standard library the text is) and holds raw's runs of those seeds."""
    import platform

    import torch

    path = o.reference
    assert path is not None
    try:
        rep = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BadReference(f"--reference {path}: cannot read it as a lab report ({e})") from None
    if not isinstance(rep, dict) or rep.get("mode") != "loss-only" or "settings" not in rep:
        raise BadReference(
            f"--reference {path}: not a loss-only lab's report (the JSON of iota-codec lab "
            "--rates none)"
        )
    theirs = rep["settings"]
    differ = [
        f"{k} {v!r} here, {theirs.get(k, 'absent')!r} there"
        for k, v in dataclasses.asdict(o).items()
        if k not in _REUSE_IGNORES and k not in ("configs", "rates") and theirs.get(k) != v
    ]
    if o.val_every and theirs.get("val_every") != o.val_every:
        differ.append(f"val_every {o.val_every} here, {theirs.get('val_every')} there")
    if differ:
        raise BadReference(f"--reference {path} trained with other settings: " + "; ".join(differ))
    notes = []
    digest = rep.get("data", {}).get("sha256")
    python = rep.get("machine", {}).get("python")
    if digest is not None and digest != model.corpus_digest():
        raise BadReference(
            f"--reference {path} trained on other text (its standard library's sources, "
            f"Python {python}, differ from this Python's)"
        )
    if digest is None:
        if python != platform.python_version():
            raise BadReference(
                f"--reference {path} trained on Python {python}'s standard library, this is "
                f"Python {platform.python_version()}: the text may differ"
            )
        notes.append(
            f"{path} predates text digests: the same Python ({python}), so the same "
            "standard library text unless it was patched"
        )
    seeds = [o.seed + i for i in range(o.seeds)]
    raws = {
        r["seed"]: r
        for r in rep.get("runs", [])
        if r.get("config") == "raw" and r.get("kind") in ("train", "seed") and "val_loss" in r
    }
    missing = [s for s in seeds if s not in raws or (o.val_every and "val_curve" not in raws[s])]
    if missing:
        raise BadReference(
            f"--reference {path} has no raw training run of seed(s) {missing}"
            + (" with a validation curve" if o.val_every else "")
        )
    runs = []
    for s in seeds:
        r = dict(raws[s], kind="train" if s == o.seed else "seed", reused_from=path)
        if not o.val_every:
            r.pop("val_curve", None)  # as a run of this lab would have none
        runs.append(r)
    m = rep.get("machine", {})
    where = f"{m.get('cpu', m.get('machine', '?'))}, {m.get('cores', '?')} cores"
    notes.append(
        f"raw was not trained again: its runs (seed(s) {', '.join(map(str, seeds))}) are "
        f"those of {path}, trained on {where} (its tokens/s are that machine's)"
    )
    if rep.get("torch") != torch.__version__:
        notes.append(
            f"{path} trained with torch {rep.get('torch', '(not recorded)')}, this lab with "
            f"torch {torch.__version__}: their arithmetic may differ slightly"
        )
    return runs, notes


def lab_mode(fallback: bool, loss_only: bool = False) -> tuple[str, str | None]:
    """("kernel", None), ("paced-socket", why the kernel link is not used) or ("loss-only",
    why no link is used)."""
    if loss_only:
        return "loss-only", "--rates none"
    if fallback:
        return "paced-socket", "--fallback given"
    problem = net.kernel_link_problem()
    if problem:
        raise LabUnavailable(problem)
    return "kernel", None


def run_lab(o: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the lab described by ``o`` and returns its report (see the module docstring).
    Raises :class:`LabUnavailable` when the kernel link is not possible and ``o.fallback``
    is false."""
    import torch

    from ..bench.engine import machine
    from ..bench.report import fmt_bps

    started = time.perf_counter()
    mode, why = lab_mode(o.fallback, loss_only=not o.rates)
    if o.optimizer == "muon" and o.muon_dtype is None:
        from .optim import orthogonalize_dtype

        dtype = str(orthogonalize_dtype()).removeprefix("torch.")
        o = dataclasses.replace(o, muon_dtype=dtype)
    # Checked before anything runs.
    reused, notes = reference_runs(o) if o.reference else ([], [])
    lab = Lab(o, log)
    with net.teardown_on_signals(lab.close):
        try:
            if o.keep:
                lab.scratch = pathlib.Path(o.keep)
                lab.scratch.mkdir(parents=True, exist_ok=True)
            else:
                lab.scratch = pathlib.Path(tempfile.mkdtemp(prefix="iota-lab-"))
            if mode == "kernel":
                stale = net.remove_stale()
                if stale:
                    notes.append(f"removed namespaces left by stopped labs: {', '.join(stale)}")
                lab.kernel = net.KernelLink()
                lab.kernel.up()
                if o.delay_s > 0 and not lab.kernel.netem:
                    notes.append(
                        "this kernel has no netem qdisc: no delay added (rates are shaped by "
                        "tbf; the delay would add about one round trip per message)"
                    )
                log(
                    f"link: network namespaces {lab.kernel.ns[0]} and {lab.kernel.ns[1]}, "
                    f"veth {lab.kernel.dev[0]}<->{lab.kernel.dev[1]}, tc tbf"
                    + (" + netem" if lab.kernel.netem else " (no netem in this kernel)")
                )
            elif mode == "loss-only":
                log(
                    "no link (--rates none): a loss-only lab, the stages exchange over an "
                    "unpaced loopback relay"
                )
            else:
                log(
                    "link: PACED-SOCKET FALLBACK (a user-space relay on 127.0.0.1, not a kernel "
                    f"link): {why}"
                )
            runs: list[dict[str, Any]] = []
            full: dict[str, dict[str, Any]] = {}

            def one(
                cfg: RunConfig, rate_bps: float | None, steps: int, kind: str, seed: int = o.seed
            ) -> dict[str, Any]:
                label = "unshaped" if rate_bps is None else fmt_bps(rate_bps)
                what = cfg.name if seed == o.seed else f"{cfg.name} (seed {seed})"
                log(f"  {what:<18} {label:>12}  {steps} steps ...")
                trains = kind in ("train", "seed")
                got = lab.run(cfg, rate_bps, steps, seed, o.val_every if trains else None)
                m = measure(o, cfg, got, "unshaped" if rate_bps is None else "shaped")
                m.update(kind=kind, rate_bps=rate_bps, seed=seed)

                def val(states: list[dict[str, Any]]) -> float:
                    return model.evaluate(
                        o.gpt(), cfg.bottleneck, seed, states, cfg.codec,
                        batch=o.batch, n_batches=o.val_batches, hidden=cfg.hidden,
                    )  # fmt: skip

                def load(name: str) -> Any:
                    return torch.load(got["folder"] / name, weights_only=True)

                if trains:
                    m["val_loss"] = val([load(f"rank{r}.pt") for r in (0, 1)])
                if trains and o.val_every:
                    snaps = [load(f"rank{r}-snapshots.pt") for r in (0, 1)]
                    m["val_curve"] = [
                        [step, val([snaps[0][step], snaps[1][step]])] for step in sorted(snaps[0])
                    ] + [[steps, m["val_loss"]]]
                log(
                    f"  {what:<18} {label:>12}  {m['tokens_per_s']:8.0f} tokens/s  "
                    f"train loss {m['train_loss']:.4f}"
                    + (f"  val loss {m['val_loss']:.4f}" if "val_loss" in m else "")
                    + f"  compression {m['compression']['total']:.1f}x  ({m['wall_s']:.0f} s)"
                )
                runs.append(m)
                return m

            raw = RunConfig("raw")
            # The other seeds train on the unshaped link: the link changes no loss, only
            # how long a run takes.
            others = [o.seed + 1 + i for i in range(o.seeds - 1)]
            if reused:
                log(f"unshaped reference: raw's runs of {o.reference}, not trained again")
                runs += reused
                ref = reused[0]
            else:
                log("unshaped reference:")
                ref = one(raw, None, o.steps, "train")
                for s in others:
                    one(raw, None, o.steps, "seed", seed=s)
            if mode == "loss-only":
                rates, regimes, train_rate = [], [], None
                for cfg in (c for c in o.configs if c.name != "raw"):
                    one(cfg, None, o.steps, "train")
                    for s in others:
                        one(cfg, None, o.steps, "seed", seed=s)
            else:
                unshaped_step = o.batch * o.seq_len / ref["tokens_per_s"]
                rates = sorted({resolve(o, r, unshaped_step) for r in o.rates}, reverse=True)
                labels = {resolve(o, r, unshaped_step): r.label for r in o.rates}
                regimes = [regime(o, unshaped_step, r) | {"label": labels[r]} for r in rates]
                train_rate = rates[0]
                for rep in range(o.repeat):
                    if rep > 0:
                        log(f"repeat {rep + 1}/{o.repeat}, for the medians:")
                        extra = math.ceil(o.measure_seconds / unshaped_step)
                        one(raw, None, min(o.steps, o.warmup + max(3, extra)), "speed")
                    for rate in rates:
                        log(f"at {fmt_bps(rate)} ({labels[rate]}):")
                        for cfg in o.configs:
                            # Raw's training there would repeat the reference's.
                            if rep == 0 and rate == train_rate and cfg.name != "raw":
                                full[cfg.name, "train"] = one(cfg, rate, o.steps, "train")
                                continue
                            trained = full.get((cfg.name, "train"))
                            est = _estimate_step(o, rate, unshaped_step, trained)
                            extra = math.ceil(o.measure_seconds / est)
                            one(cfg, rate, min(o.steps, o.warmup + max(3, extra)), "speed")
                    if rep == 0 and others:
                        log(f"the other seeds ({', '.join(map(str, others))}), unshaped:")
                        for cfg in o.configs:
                            if cfg.name != "raw":
                                for s in others:
                                    one(cfg, None, o.steps, "seed", seed=s)
        finally:
            lab.close()
    report = assemble(o, mode, why, runs, regimes, rates, train_rate, lab.applied, notes)
    report["machine"] = machine()
    report["wall_s"] = time.perf_counter() - started
    return report


def _estimate_step(
    o: Options, rate: float, unshaped_step: float, trained: dict[str, Any] | None
) -> float:
    ratio = trained["compression"]["total"] if trained else 1.0
    return max(unshaped_step, raw_bits_per_step(o) / ratio / rate)


def assemble(
    o: Options,
    mode: str,
    why: str | None,
    runs: list[dict[str, Any]],
    regimes: list[dict[str, Any]],
    rates: list[float],
    train_rate: float | None,
    applied: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    """The report: every run, and per (configuration, link) the medians and the checks."""
    import iota_codec

    train_text, val_text = model.split_corpus()

    seeds = [r for r in runs if r["kind"] == "seed"]
    raw_seeds = [r for r in seeds if r["config"] == "raw"]
    runs = [r for r in runs if r["kind"] != "seed"]
    ref_runs = [r for r in runs if r["config"] == "raw" and r["rate_bps"] is None]
    ref_tps = _median([r["tokens_per_s"] for r in ref_runs])
    ref_train = ref_runs[0]
    rows = []
    names = ["raw"] + [c.name for c in o.configs if c.name != "raw"]
    cfgs = {c.name: c for c in o.configs} | {"raw": RunConfig("raw")}

    def val_by_seed(name: str) -> dict[int, float]:
        """Validation loss of each seed ``name`` trained with."""
        got = {
            r["seed"]: r["val_loss"]
            for r in runs + seeds
            if r["config"] == name and r["kind"] in ("train", "seed") and "val_loss" in r
        }
        return dict(sorted(got.items()))

    def curve(name: str) -> list[list[float]] | None:
        # The mean over the seeds at each step every seed was evaluated at (--val-every).
        by_seed = {
            r["seed"]: dict(r["val_curve"])
            for r in runs + seeds
            if r["config"] == name and r["kind"] in ("train", "seed") and "val_curve" in r
        }
        if not by_seed:
            return None
        steps = sorted(set.intersection(*(set(c) for c in by_seed.values())))
        return [[s, statistics.fmean(c[s] for c in by_seed.values())] for s in steps]

    raw_by_seed = val_by_seed("raw")
    raw_curve = dict(curve("raw") or [])
    for rate in [None, *rates]:
        for name in names:
            mine = [r for r in runs if r["config"] == name and r["rate_bps"] == rate]
            if not mine:
                continue
            trained = next((r for r in runs if r["config"] == name and r["kind"] == "train"), None)
            by_seed = val_by_seed(name) if trained else {}
            tps = _median([r["tokens_per_s"] for r in mine])
            same = all(
                r["losses"] == trained["losses"][: len(r["losses"])] for r in mine
            ) if trained else None  # fmt: skip
            rows.append({
                "config": name,
                "rate_bps": rate,
                "samples": len(mine),
                "tokens_per_s": tps,
                "tokens_per_s_runs": [r["tokens_per_s"] for r in mine],
                "pct_of_unshaped": 100 * tps / ref_tps,
                "train_loss": trained["train_loss"] if trained else None,
                # The mean over the seeds (one seed: its loss).
                "val_loss": statistics.fmean(by_seed.values()) if by_seed else None,
                "val_seeds": list(by_seed),
                "val_losses": list(by_seed.values()),
                # With --val-every: [step, validation loss (mean over the seeds)], and against
                # raw's at the same step.
                "val_curve": curve(name) if trained else None,
                "compression": trained["compression"] if trained else mine[0]["compression"],
                "codec_ratio": trained["codec_ratio"] if trained else mine[0]["codec_ratio"],
                "losses_match_full_run": same,
                "bottleneck": cfgs[name].bottleneck,
            })  # fmt: skip
    ref_val = statistics.fmean(raw_by_seed.values())
    for row in rows:
        if row["val_curve"]:
            row["val_curve_vs_raw_pct"] = [
                [s, 100 * (v / raw_curve[s] - 1)] for s, v in row["val_curve"] if s in raw_curve
            ]
        if row["val_loss"] is not None:
            row["val_loss_vs_raw_pct"] = 100 * (row["val_loss"] / ref_val - 1)
            # Seed by seed, against raw with the same seed (the same weights at the start,
            # the same batches).
            row["val_loss_vs_raw_paired_pct"] = [
                100 * (v / raw_by_seed[s] - 1)
                for s, v in zip(row["val_seeds"], row["val_losses"], strict=True)
                if s in raw_by_seed
            ]
    return {
        "iota_codec": iota_codec.__version__,
        "mode": mode,
        "mode_reason": why,
        "link": {
            "kind": {
                "kernel": "veth pair between two network namespaces, tc "
                + (applied.get("qdisc") or "tbf"),
                "paced-socket": "paced user-space TCP relay on 127.0.0.1 (fallback, not a "
                "kernel link)",
                "loss-only": "none (loss-only lab): an unpaced user-space TCP relay on 127.0.0.1",
            }[mode],
            "delay_s": o.delay_s,
            "delay_applied_s": applied.get("delay_s", o.delay_s if mode != "kernel" else 0.0),
            "qdisc": applied.get("qdisc"),
            "tbf": applied.get("tbf"),
        },
        "settings": {
            k: v for k, v in dataclasses.asdict(o).items() if k not in ("configs", "rates")
        },
        "configs": [RunConfig("raw").as_dict()] + [c.as_dict() for c in o.configs],
        "rates": [dataclasses.asdict(r) for r in o.rates],
        "train_rate_bps": train_rate,
        "reference_tokens_per_s": ref_tps,
        "regimes": regimes,
        "gpu": {
            "peak_flops": GPU_PEAK_FLOPS,
            "mfu": GPU_MFU,
            "sustained_flops": o.gpu_flops,
            "reference": REFERENCE,
        },
        "rows": rows,
        "seed_spread": {
            "seeds": [o.seed] + [r["seed"] for r in raw_seeds],
            "val_loss": [ref_train["val_loss"]] + [r["val_loss"] for r in raw_seeds],
            "train_loss": [ref_train["train_loss"]] + [r["train_loss"] for r in raw_seeds],
        },
        "runs": runs + seeds,
        "notes": notes,
        # The text trained on (see model.corpus_digest) and torch, for --reference.
        "data": {
            "sha256": model.corpus_digest(),
            "train_bytes": len(train_text),
            "val_bytes": len(val_text),
        },
        "torch": _torch_version(),
        "reference": o.reference,
    }


def _torch_version() -> str:
    import torch

    return str(torch.__version__)
