"""``iota-codec lab``: its parts (rates, regime, configs, the paced-socket link) and short
smoke runs of the whole lab, over the kernel link where this machine allows one (root,
iproute2, network namespaces; skipped with the reason otherwise) and over the fallback.
Every lab runs in a subprocess under a hard deadline, and each test checks that no network
namespace of that lab is left behind. Nothing here asserts on speed beyond "paced at all"."""

from __future__ import annotations

import json
import math
import os
import pathlib
import platform
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import torch
from iota_codec import cli
from iota_codec.data import GPTConfig
from iota_codec.lab import command, model, net, report, runner
from iota_codec.lab.stage import SocketChannel

TINY = [
    "--d-model", "32", "--layers", "2", "--heads", "2", "--seq-len", "32", "--batch", "4",
    "--micro", "2", "--steps", "6", "--warmup", "1", "--val-batches", "2",
    "--measure-seconds", "1", "--delay", "5ms", "--seeds", "1",
]  # fmt: skip
KERNEL = net.kernel_link_problem()
needs_kernel = pytest.mark.skipif(
    KERNEL is not None, reason=f"no kernel link here: {KERNEL}"
)  # fmt: skip


def _args(*argv: str):
    parser = cli.argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    command.add_parser(sub)
    return parser.parse_args(["lab", *argv])


# --- parts ------------------------------------------------------------------------------------


def test_rates_and_delays():
    assert command.parse_rates("80M, 250k,gpu:80M") == [
        runner.Rate(bps=80e6),
        runner.Rate(bps=250e3),
        runner.Rate(gpu_bps=80e6),
    ]
    assert runner.Rate(gpu_bps=80e6).label == "gpu:80M"
    assert command.parse_rates(" None ") == []  # a loss-only lab
    for bad in ("fast", ",", ""):
        with pytest.raises(ValueError):
            command.parse_rates(bad)
    assert command.parse_delay("20ms") == pytest.approx(0.02)
    assert command.parse_delay("0") == 0.0
    assert command.parse_delay("1.5s") == 1.5
    with pytest.raises(ValueError):
        command.parse_delay("soon")


def test_tbf_parameters():
    assert net.tbf_params(80e6) == {
        "rate_bit": 80_000_000,
        "burst_bytes": 50_000,
        "limit_bytes": 2_500_000,
    }
    slow = net.tbf_params(250e3)
    assert slow["burst_bytes"] == 5000 and slow["limit_bytes"] == 100_000


def test_configs_from_the_command_line():
    o = command.options(
        _args(
            "--profiles", "lossless", "--codec", '{"name": "mine", "profile": "lossless", '
            '"grad": {"profile": "lossless", "chunk_size": 4096}}',
            "--bottleneck", "8,16", "--bottleneck-codec", "raw", "--bottleneck-codec",
            "lossless",
        )
    )  # fmt: skip
    names = [c.name for c in o.configs]
    assert names == ["raw", "lossless", "mine", "k8+raw", "k8+lossless", "k16+raw", "k16+lossless"]
    mine = o.configs[2]
    assert mine.codec == {"profile": "lossless", "threads": 1}
    assert mine.grad_codec == {"profile": "lossless", "chunk_size": 4096, "threads": 1}
    assert o.configs[3].codec is None and o.configs[3].bottleneck == 8
    assert o.steps == 200 and command.options(_args("--quick")).steps == command.QUICK["steps"]
    assert o.muon_dtype is None  # resolved when the lab starts
    assert command.options(_args("--muon-dtype", "float32")).muon_dtype == "float32"
    assert o.ahead == 1 and command.options(_args("--ahead", "3")).ahead == 3
    loss_only = command.options(_args("--rates", "none"))
    assert loss_only.rates == [] and loss_only.delay_s == 0.0 and o.delay_s == 0.02
    for bad in (
        ["--profiles", "nope"],
        ["--bottleneck", "999"],
        ["--batch", "6", "--micro", "4"],
        ["--layers", "3"],
        ["--ahead", "5"],
        ["--ahead", "0"],
        ["--codec", '{"name": "lossless", "profile": "lossless"}'],
        ["--val-every", "0"],
        ["--val-every", "200"],
        ["--rates", "none", "--fallback"],
        ["--rates", "none", "--repeat", "2"],
        ["--reference", "lab.json"],
    ):
        with pytest.raises(ValueError):
            command.options(_args(*bad))


def test_regime_arithmetic():
    o = runner.Options(rates=[], configs=[], gpu_flops=400e12)
    bits = 2 * 8 * 128 * 256 * 16  # both directions of the bf16 boundary, per step
    assert runner.raw_bits_per_step(o) == bits
    g = runner.regime(o, unshaped_step_s=0.5, rate_bps=8e6)
    assert g["link_s"] == pytest.approx(bits / 8e6)
    assert g["ratio"] == pytest.approx(0.5 / (bits / 8e6))
    flops = 4 * (72 * 256**2 + 12 * 128 * 256) + 6 * 256 * 256
    assert g["cpu_flops"] == pytest.approx(flops / 2 * 1024 / 0.5)
    assert g["gpu_factor"] == pytest.approx(400e12 / g["cpu_flops"])
    assert g["gpu_same_model_bps"] == pytest.approx(8e6 * g["gpu_factor"])
    f_ref = 8 * (72 * 4096**2 + 12 * 2048 * 4096)
    want = g["gpu_same_model_bps"] * (4096 / 256) * (flops / 2 / f_ref)
    assert g["gpu_reference_bps"] == pytest.approx(want)
    # gpu: rates invert it.
    rate = runner.resolve(o, runner.Rate(gpu_bps=80e6), 0.5)
    assert runner.regime(o, 0.5, rate)["gpu_reference_bps"] == pytest.approx(80e6)


def test_corpus_holds_out_files_from_across_the_library():
    train, val = model.corpus_files()
    assert not set(train) & set(val)
    texts = model.split_corpus()
    assert [len(t) for t in texts] == [model.TRAIN_BYTES, model.VAL_BYTES]
    # Validation is a sample of the whole library, not one corner of it.
    assert len(val) >= 20
    assert len({p.split("/")[0] for p in val}) >= 10
    assert len({p.split("/")[0] for p in train}) >= 50
    assert model.corpus_files() == (train, val)


def test_optimizers_split_matrices_from_the_rest():
    from iota_codec.lab import optim
    from torch import nn

    cfg = GPTConfig(d_model=32, n_layers=2, n_heads=2, seq_len=16)
    stages = model.build_stages(cfg, 4, seed=0, hidden=32)
    for part in stages:
        (adamw,) = model.make_optimizers(part, "adamw", 1e-3)
        assert isinstance(adamw, torch.optim.AdamW)
        assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(part.parameters()))
        muon, rest = model.make_optimizers(part, "muon", 1e-3)
        assert isinstance(muon, torch.optim.Muon) and isinstance(rest, torch.optim.AdamW)
        assert muon.dtype == optim.orthogonalize_dtype()
        assert model.make_optimizers(part, "muon", 1e-3, "bfloat16")[0].dtype == torch.bfloat16
        mats = [p for g in muon.param_groups for p in g["params"]]
        others = [p for g in rest.param_groups for p in g["params"]]
        assert all(p.ndim == 2 for p in mats) and len(mats) + len(others) == len(
            list(part.parameters())
        )
        # The embeddings and the head go to AdamW; the blocks' and the bottleneck's
        # matrices to Muon.
        edges = [m for m in part if getattr(m, "is_edge", False)]
        assert len(edges) == 1
        edge_ids = {id(p) for p in edges[0].parameters()}
        assert not edge_ids & {id(p) for p in mats}
        linears = [m.weight for m in part.modules() if isinstance(m, nn.Linear)]
        inside = [w for w in linears if id(w) not in edge_ids]
        assert inside and {id(w) for w in inside} <= {id(p) for p in mats}
    with pytest.raises(ValueError, match="unknown optimizer"):
        model.make_optimizers(stages[0], "sgd", 1e-3)


def test_lab_muon_is_torch_muon_with_the_orthogonalization_dtype_of_the_machine():
    from iota_codec.lab import optim

    torch.manual_seed(0)
    # Wide and tall matrices (the iteration runs on the wide orientation), a few steps so
    # that momentum and Nesterov count.
    shapes = [(12, 20), (20, 12)]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]

    def train(make: Any) -> list[torch.Tensor]:
        torch.manual_seed(1)
        ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        opt = make(ps)
        for step in grads:
            for p, g in zip(ps, step, strict=True):
                p.grad = g.clone()
            opt.step()
        return [p.detach() for p in ps]

    ref = train(lambda ps: torch.optim.Muon(ps, lr=0.02, adjust_lr_fn="match_rms_adamw"))
    kw = {"lr": 0.02, "weight_decay": 0.1}
    bf16 = train(lambda ps: optim.Muon(ps, **kw, dtype=torch.bfloat16))
    f32 = train(lambda ps: optim.Muon(ps, **kw, dtype=torch.float32))
    # torch.optim.Muon's default weight decay is 0.1 too: in bfloat16 the update is its own.
    assert all(torch.equal(a, b) for a, b in zip(ref, bf16, strict=True))
    assert all(torch.allclose(a, b, atol=0.02, rtol=0) for a, b in zip(ref, f32, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(ref, f32, strict=True))
    assert optim.orthogonalize_dtype() in (torch.bfloat16, torch.float32)


def test_pipeline_schedules():
    from iota_codec.lab.stage import schedule

    f, b = "F", "B"
    assert schedule("gpipe", 0, 3) == [(f, 0), (f, 1), (f, 2), (b, 0), (b, 1), (b, 2)]
    assert schedule("1f1b", 0, 3) == [(f, 0), (f, 1), (b, 0), (f, 2), (b, 1), (b, 2)]
    assert schedule("1f1b", 1, 3) == [(f, 0), (b, 0), (f, 1), (b, 1), (f, 2), (b, 2)]
    assert schedule("1f1b", 0, 4, ahead=2) == [
        (f, 0), (f, 1), (f, 2), (b, 0), (f, 3), (b, 1), (b, 2), (b, 3),
    ]  # fmt: skip
    # Only the first stage runs ahead; every micro-batch goes forward once, then backward once.
    assert schedule("1f1b", 1, 4, ahead=3) == schedule("1f1b", 1, 4)
    for ahead in range(1, 5):
        ops = schedule("1f1b", 0, 4, ahead=ahead)
        # Backward m comes after forward m + ahead (where there is one).
        first = ops.index((b, 0))
        assert ops[:first] == [(f, m) for m in range(min(ahead + 1, 4))]
        assert sorted(ops) == sorted([(f, m) for m in range(4)] + [(b, m) for m in range(4)])
        assert all(ops.index((f, m)) < ops.index((b, m)) for m in range(4))
    for bad in (0, 5):
        with pytest.raises(ValueError, match="ahead"):
            schedule("1f1b", 0, 4, ahead=bad)
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule("zigzag", 0, 4)


def test_steady_state_tokens_per_second():
    o = runner.Options(rates=[], configs=[], batch=2, seq_len=10)
    ends = [5.0, 6.0, 7.0, 8.0]  # a slow first step, then one per second
    assert runner.tokens_per_s(o, ends, warmup=1) == pytest.approx(20.0)
    assert runner.tokens_per_s(o, ends, warmup=0) == pytest.approx(4 * 20 / 8)


def test_paced_relay_paces_delays_and_keeps_order():
    rate, delay = 4e6, 0.05
    with net.PacedRelay(rate, delay) as relay:
        a, b = net.SocketTransport(relay.ports[0]), net.SocketTransport(relay.ports[1])
        try:
            msgs = [torch.randint(0, 255, (n,), dtype=torch.uint8) for n in (1000, 150_000, 7)]
            back = torch.randn(300)
            bufs = [torch.empty_like(m) for m in msgs]
            recvs = [b.irecv(x) for x in bufs]
            start = time.monotonic()
            for m in msgs:
                a.isend(m)
            b.isend(back)
            got_back = torch.empty(300)
            a.irecv(got_back).wait(30)
            for w in recvs:
                w.wait(30)
            took = time.monotonic() - start
        finally:
            a.close()
            b.close()
    for m, x in zip(msgs, bufs, strict=True):
        assert torch.equal(m, x)
    assert torch.equal(back, got_back)
    ideal = sum(m.numel() for m in msgs) * 8 / rate + delay  # 0.35 s
    assert ideal * 0.9 < took < ideal + 5.0  # paced (loopback alone takes milliseconds)


def test_socket_transport_times_out_and_fails_cleanly():
    with net.PacedRelay() as relay:
        a, b = net.SocketTransport(relay.ports[0]), net.SocketTransport(relay.ports[1])
        with pytest.raises(RuntimeError, match="timed out"):
            b.irecv(torch.empty(4)).wait(0.2)
        a.close()
        with pytest.raises(RuntimeError, match=r"closed|failed"):
            b.irecv(torch.empty(4)).wait(10)
        b.close()


def test_codec_channel_over_the_paced_socket():
    """The lab's SocketChannel carries iota-codec frames (prefetching) through the relay."""
    x = torch.randn(64, 256).to(torch.bfloat16)
    with net.PacedRelay(50e6) as relay:
        a, b = net.SocketTransport(relay.ports[0]), net.SocketTransport(relay.ports[1])
        try:
            tx = SocketChannel(a, 1, "lossless", timeout=30)
            rx = SocketChannel(b, 0, "lossless", timeout=30, prefetch=True)
            t = threading.Thread(target=lambda: [tx.send(x), tx.send(2 * x)])
            t.start()
            y, z = rx.recv(), rx.recv()
            t.join(30)
        finally:
            a.close()
            b.close()
    assert torch.equal(y, x) and torch.equal(z, 2 * x)
    assert rx.stats.messages_received == 2 and rx.stats.ratio_received > 1


def test_says_plainly_when_the_kernel_link_is_missing(monkeypatch, capsys):
    monkeypatch.setattr(net, "kernel_link_problem", lambda: "it needs root (for a test)")
    assert command.main(_args(*TINY)) == 3
    err = capsys.readouterr().err
    assert "it needs root (for a test)" in err and "--fallback" in err and "iproute2" in err


def test_says_plainly_when_torch_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
    assert command.main(_args(*TINY)) == 2
    assert "pip install 'iota-codec[torch]'" in capsys.readouterr().err


# --- whole labs -------------------------------------------------------------------------------


def _namespaces_of(pid: int) -> list[str]:
    if KERNEL is not None:
        return []
    return [n for n in net.lab_namespaces() if n.startswith(f"{net.PREFIX}{pid}-")]


def _lab(tmp_path: pathlib.Path, *argv: str, timeout: float = 300) -> dict:
    """Runs ``iota-codec lab`` in a subprocess under a deadline (against a hang, not a speed
    check: the kernel-link smoke run takes about 80 s on a 2-core VM by itself, and overran
    120 s once beside a build); returns its JSON report after checking that it left no
    namespace behind."""
    out = tmp_path / "lab.json"
    cmd = [sys.executable, "-m", "iota_codec", "lab", *argv, "--json", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the lab tears down on SIGTERM
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise AssertionError(f"the lab ran longer than {timeout} s") from None
    finally:
        left = _namespaces_of(proc.pid)
        for name in left:
            subprocess.run(["ip", "netns", "del", name], check=False)
    assert not left, f"the lab left namespaces behind: {left}"
    assert proc.returncode == 0, stderr[-4000:]
    assert "targets:" in stdout
    return json.loads(out.read_text())


def _check_report(rep: dict, tmp_path: pathlib.Path, d_model: int = 32) -> None:
    rows = {(r["config"], r["rate_bps"]): r for r in rep["rows"]}
    raw = rows["raw", None]
    assert raw["pct_of_unshaped"] == pytest.approx(100)
    assert raw["compression"]["total"] == pytest.approx(1.0)
    for r in rep["rows"]:
        assert r["tokens_per_s"] > 0 and math.isfinite(r["val_loss"] or 0.0)
        assert r["losses_match_full_run"] is True, r["config"]
        if r["bottleneck"]:
            k = r["bottleneck"]
            # d/k fewer elements, times whatever the codec adds, both directions.
            assert r["compression"]["total"] > 0.9 * d_model / k
    for name in {r["config"] for r in rep["rows"]}:
        trained = [r for r in rep["runs"] if r["config"] == name and r["kind"] == "train"]
        # Every config trains once: raw unshaped (the reference), the others shaped; raw's
        # runs on the shaped links only measure its speed.
        assert len(trained) == 1 and trained[0]["steps"] == 6
        assert (trained[0]["rate_bps"] is None) == (name == "raw")
    assert rep["regimes"] and all(g["ratio"] > 0 for g in rep["regimes"])
    assert report.targets(rep) and "losses identical" in report.text(rep)
    assert "| config |" in report.markdown(rep)
    report.plot(rep, str(tmp_path / "lab.png"))
    assert (tmp_path / "lab.png").stat().st_size > 10_000


@needs_kernel
def test_lab_smoke_over_the_kernel_link(tmp_path):
    rep = _lab(
        tmp_path, *TINY, "--rates", "20M,gpu:1G", "--profiles", "none",
        "--bottleneck", "4", "--bottleneck-codec", "lossless", "--seeds", "2", "--ahead", "2",
        "--val-every", "2",
    )  # fmt: skip
    assert rep["mode"] == "kernel" and rep["link"]["qdisc"] in ("tbf", "netem+tbf")
    assert rep["settings"]["ahead"] == 2 and "2 micro-batches ahead" in report.text(rep)
    # Measured once by the lab and given to every stage.
    assert rep["settings"]["muon_dtype"] in ("bfloat16", "float32")
    assert {r["config"] for r in rep["rows"]} == {"raw", "k4+lossless"}
    assert len({r["rate_bps"] for r in rep["rows"]}) == 3  # unshaped and two rates
    gpu = [g for g in rep["regimes"] if g["label"] == "gpu:1G"]
    assert len(gpu) == 1 and gpu[0]["gpu_reference_bps"] == pytest.approx(1e9)
    spread = rep["seed_spread"]
    assert spread["seeds"] == [0, 1] and len(spread["val_loss"]) == 2
    assert spread["val_loss"][0] != spread["val_loss"][1]  # another seed trains differently
    # Every configuration trains both seeds; its validation loss is their mean, compared
    # with raw's mean and seed by seed.
    for row in (r for r in rep["rows"] if r["val_loss"] is not None):
        assert row["val_seeds"] == [0, 1]
        assert row["val_loss"] == pytest.approx(sum(row["val_losses"]) / 2)
        assert len(row["val_loss_vs_raw_paired_pct"]) == 2
    raw_mean = sum(spread["val_loss"]) / 2
    k4 = next(r for r in rep["rows"] if r["config"] == "k4+lossless" and r["val_loss"])
    assert k4["val_loss_vs_raw_pct"] == pytest.approx(100 * (k4["val_loss"] / raw_mean - 1))
    extra = [r for r in rep["runs"] if r["kind"] == "seed"]
    assert {(r["config"], r["seed"], r["rate_bps"]) for r in extra} == {
        ("raw", 1, None), ("k4+lossless", 1, None),
    }  # fmt: skip
    # --val-every 2: every training run (both seeds) evaluated after 2, 4 and 6 steps; the
    # curves are the means over the seeds and end at the validation loss; speed runs keep
    # no snapshots.
    for r in rep["runs"]:
        assert ("val_curve" in r) == (r["kind"] in ("train", "seed")), r["kind"]
        if "val_curve" in r:
            assert [s for s, _ in r["val_curve"]] == [2, 4, 6]
            assert r["val_curve"][-1][1] == r["val_loss"]
            assert len({v for _, v in r["val_curve"]}) == 3  # the weights moved
    trained = [r for r in rep["rows"] if r["val_loss"] is not None]
    for row in trained:
        by_step = dict(row["val_curve"])
        assert sorted(by_step) == [2, 4, 6]
        assert by_step[6] == pytest.approx(row["val_loss"])
        runs = [r for r in rep["runs"] if r["config"] == row["config"] and "val_curve" in r]
        at4 = {r["seed"]: dict(r["val_curve"])[4] for r in runs}
        assert by_step[4] == pytest.approx(sum(at4.values()) / 2)
        raw = dict(next(r for r in trained if r["config"] == "raw")["val_curve"])
        want = [[s, pytest.approx(100 * (v / raw[s] - 1))] for s, v in row["val_curve"]]
        assert row["val_curve_vs_raw_pct"] == want
    assert "validation loss during training" in report.text(rep)
    _check_report(rep, tmp_path)


def test_lab_smoke_over_the_paced_socket_fallback(tmp_path):
    rep = _lab(
        tmp_path, *TINY, "--fallback", "--rates", "20M", "--profiles", "lossless",
        "--bottleneck", "none", "--repeat", "2", "--muon-dtype", "bfloat16",
    )  # fmt: skip
    assert rep["mode"] == "paced-socket" and "fallback" in rep["link"]["kind"]
    assert rep["settings"]["muon_dtype"] == "bfloat16"
    assert "Muon (orthogonalized in bfloat16;" in report.text(rep)
    # --repeat 2: every row is the median of two speed measurements, the unshaped reference
    # included (rerun about --measure-seconds long, as the other speed runs).
    assert all(r["samples"] == 2 for r in rep["rows"])
    again = [r for r in rep["runs"] if r["kind"] == "speed" and r["rate_bps"] is None]
    assert len(again) == 1 and again[0]["config"] == "raw" and again[0]["steps"] >= 4
    assert rep["link"]["delay_applied_s"] == pytest.approx(0.005)
    names = {(r["config"], r["rate_bps"]) for r in rep["rows"]}
    assert names == {("raw", None), ("raw", 20e6), ("lossless", 20e6)}
    _check_report(rep, tmp_path)


def test_loss_only_lab_trains_each_config_once_per_seed_with_no_link(tmp_path):
    rep = _lab(
        tmp_path, *TINY, "--rates", "none", "--profiles", "lossless", "--bottleneck", "4",
        "--bottleneck-codec", "raw", "--seeds", "2", "--val-every", "3",
    )  # fmt: skip
    assert rep["mode"] == "loss-only" and rep["regimes"] == [] and rep["rates"] == []
    assert rep["train_rate_bps"] is None and rep["link"]["delay_applied_s"] == 0.0
    names = ["raw", "lossless", "k4+raw"]
    assert [r["config"] for r in rep["rows"]] == names
    assert all(r["rate_bps"] is None and r["samples"] == 1 for r in rep["rows"])
    # One training run per configuration and seed, nothing else (no speed runs).
    got = sorted((r["config"], r["seed"], r["kind"], r["steps"]) for r in rep["runs"])
    want = [(n, s, "train" if s == 0 else "seed", 6) for n in names for s in (0, 1)]
    assert got == sorted(want)
    rows = {r["config"]: r for r in rep["rows"]}
    # A lossless boundary trains exactly as raw does: the same losses, seed by seed.
    assert rows["lossless"]["val_losses"] == rows["raw"]["val_losses"]
    assert rows["lossless"]["val_curve"] == rows["raw"]["val_curve"]
    assert [s for s, _ in rows["k4+raw"]["val_curve"]] == [3, 6]
    assert rows["k4+raw"]["val_losses"] != rows["raw"]["val_losses"]
    assert rows["k4+raw"]["compression"]["total"] == pytest.approx(8.0, rel=0.01)
    text = report.text(rep)
    assert "no link (--rates none" in text and "losses identical" not in text
    assert "k4+raw: 8x, val loss" in text and "misses 128x within 3%" in text
    assert "the regime of each rate" not in text
    assert "| config |" in report.markdown(rep)
    report.plot(rep, str(tmp_path / "lab.png"))
    assert (tmp_path / "lab.png").stat().st_size > 10_000
    # A second lab reuses raw's runs: only the codec trains, and a lossless boundary, which
    # trains exactly as raw, matches the reused runs seed by seed.
    first = tmp_path / "first.json"
    (tmp_path / "lab.json").rename(first)
    again = _lab(
        tmp_path, *TINY, "--rates", "none", "--profiles", "lossless", "--bottleneck", "none",
        "--seeds", "2", "--val-every", "3", "--reference", str(first),
    )  # fmt: skip
    got = sorted((r["config"], r["seed"], "reused_from" in r) for r in again["runs"])
    assert got == [
        ("lossless", 0, False),
        ("lossless", 1, False),
        ("raw", 0, True),
        ("raw", 1, True),
    ]
    rows = {r["config"]: r for r in again["rows"]}
    before = next(r for r in rep["rows"] if r["config"] == "raw")
    assert rows["raw"]["val_losses"] == rows["lossless"]["val_losses"] == before["val_losses"]
    assert rows["lossless"]["val_curve"] == rows["raw"]["val_curve"]
    assert again["reference"] == str(first) and again["data"] == rep["data"]
    assert "raw was not trained again" in report.text(again)


def test_reference_runs_stand_in_only_for_the_same_training(tmp_path):
    o = runner.Options(rates=[], configs=[], steps=50, seeds=2, val_every=10)
    o = runner.dataclasses.replace(o, muon_dtype="float32")
    raw = {"config": "raw", "val_loss": 2.0, "val_curve": [[10, 3.0], [50, 2.0]]}
    rep = {
        "mode": "loss-only",
        "settings": runner.dataclasses.asdict(o) | {"seeds": 3, "keep": "x", "extra": {}},
        "data": {"sha256": model.corpus_digest()},
        "machine": {"cpu": "AMD EPYC", "cores": 2},
        "torch": str(torch.__version__),
        "runs": [
            raw | {"seed": 0, "kind": "train"},
            raw | {"seed": 1, "kind": "seed", "val_loss": 2.1},
            raw | {"seed": 2, "kind": "seed"},
            {"config": "lossless", "seed": 0, "kind": "train", "val_loss": 2.0},
        ],
    }
    path = tmp_path / "ref.json"

    def reuse(rep: dict, **changes: Any) -> tuple[list[dict], list[str]]:
        path.write_text(json.dumps(rep))
        return runner.reference_runs(runner.dataclasses.replace(o, reference=str(path), **changes))

    runs, notes = reuse(rep)
    assert [(r["seed"], r["kind"], r["val_loss"]) for r in runs] == [
        (0, "train", 2.0),
        (1, "seed", 2.1),
    ]
    assert all(r["reused_from"] == str(path) for r in runs)
    assert len(notes) == 1 and "not trained again" in notes[0] and "AMD EPYC" in notes[0]
    # Other seeds it has: fine.
    assert [r["seed"] for r in reuse(rep, seed=1)[0]] == [1, 2]

    def refused(rep: dict, match: str, **changes: Any) -> None:
        with pytest.raises(runner.BadReference, match=match):
            reuse(rep, **changes)

    refused(rep, "steps 60 here, 50 there", steps=60)
    refused(rep, "muon_dtype 'bfloat16' here, 'float32' there", muon_dtype="bfloat16")
    refused(rep, r"no raw training run of seed\(s\) \[3\]", seed=2)
    refused(rep | {"mode": "kernel"}, "not a loss-only lab's report")
    refused(rep | {"data": {"sha256": "0" * 64}}, "trained on other text")
    no_curve = rep | {"runs": [r | {"val_curve": None} for r in rep["runs"]]}
    no_curve["runs"] = [{k: v for k, v in r.items() if v is not None} for r in no_curve["runs"]]
    refused(no_curve, "with a validation curve")
    refused(rep, "val_every 5 here, 10 there", val_every=5)
    # Without --val-every any reference will do, and its curves are left out.
    assert reuse(no_curve, val_every=None)[0][0]["val_loss"] == 2.0
    assert "val_curve" not in reuse(rep, val_every=None)[0][0]
    path.write_text("{not json")
    with pytest.raises(runner.BadReference, match="cannot read it"):
        runner.reference_runs(runner.dataclasses.replace(o, reference=str(path)))
    # A report from before the text digest: the same Python, with a note; another, refused.
    old = {k: v for k, v in rep.items() if k != "data"}
    here = {"python": platform.python_version()}
    runs, notes = reuse(old | {"machine": here})
    assert any("predates text digests" in n for n in notes)
    refused(old | {"machine": {"python": "2.7.18"}}, "Python 2.7.18's standard library")
    assert any("torch 0.1" in n for n in reuse(rep | {"torch": "0.1"})[1])


@needs_kernel
def test_a_stopped_lab_removes_its_namespaces(tmp_path):
    args = [*TINY, "--steps", "100000", "--rates", "1M", "--profiles", "none"]
    cmd = [sys.executable, "-m", "iota_codec", "lab", *args, "--bottleneck", "none"]
    log = tmp_path / "lab.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        # (Generous: on a loaded 2-core machine, importing torch alone can take seconds.)
        deadline = time.monotonic() + 120
        while not _namespaces_of(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _namespaces_of(proc.pid), (
            f"the lab never made its namespaces (exit status {proc.poll()}): "
            f"{log.read_text(errors='replace')[-2000:]}"
        )
        time.sleep(3)  # let it start its stage processes
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
        assert _namespaces_of(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in _namespaces_of(proc.pid):
            subprocess.run(["ip", "netns", "del", name], check=False)


@needs_kernel
def test_remove_stale_leaves_running_labs_alone(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, mine = f"{net.PREFIX}{dead.pid}-a", f"{net.PREFIX}{os.getpid()}-t"
    for name in (stale, mine):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        removed = net.remove_stale()
        assert stale in removed and mine not in removed
        assert mine in net.lab_namespaces() and stale not in net.lab_namespaces()
    finally:
        for name in (stale, mine):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
