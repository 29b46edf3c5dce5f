"""``iota-codec bench`` and its engine: coders, tensor sets and files, the report, the
command end to end on tiny tensors, and the benchmark suite in ``benches/``. Nothing here
asserts on speed."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
from iota_codec import PROFILES, cli, measure
from iota_codec.bench import coders, engine, links, report, tensors

# --- coders and tensors ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_every_coder_round_trips(dtype):
    rng = np.random.default_rng(0)
    x = tensors.to_numpy(rng.standard_normal((64, 48)).astype(np.float32), dtype)
    t = tensors.Tensor("tiny", x, "test")
    specs, _ = coders.select(threads=1)
    assert {s.name for s in specs} >= {f"iota-{p}" for p in PROFILES}
    for spec in specs:
        b = engine.bind(spec, t)
        y = b.decode(b.encode())
        assert np.asarray(y).size == x.size
        err = measure.achieved_error(x, y)
        if spec.name in ("iota-lossless", "zstd-1", "zstd-3", "lz4", "blosc2", "pcodec"):
            assert err["exact"], spec.name
        else:
            assert err["rel_rmse"] < 0.1, spec.name


def test_codec_json_configs():
    spec = coders.iota_spec(coders.parse_codec_json('{"profile": "lossless", "chunk_size": 100}'))
    assert spec.name == "iota(profile=lossless,chunk_size=100)"
    assert spec.chunk_elements == 100
    named = coders.iota_spec({"name": "mine", "profile": "lossless"})
    assert named.name == "mine"
    with pytest.raises(ValueError, match="JSON"):
        coders.parse_codec_json("{profile: lossless}")
    with pytest.raises(ValueError):
        coders.iota_spec({"profile": "no-such-profile"})
    with pytest.raises(ValueError, match="unknown peer"):
        coders.peer("gzip")


def test_missing_peer_package_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "lz4.frame", None)  # import fails
    specs, notes = coders.select(profiles=[], peers=["lz4", "zstd-3"])
    assert [s.name for s in specs] == ["zstd-3"]
    assert len(notes) == 1 and "lz4" in notes[0]


def test_bottleneck_keeps_the_leading_directions():
    rng = np.random.default_rng(1)
    basis = rng.standard_normal((3, 40)).astype(np.float32)
    x = rng.standard_normal((500, 3)).astype(np.float32) @ basis  # rank 3 in 40 channels
    z = tensors.bottleneck(x.reshape(10, 50, 40), 3)
    assert z.shape == (10, 50, 3)
    # Three directions hold all of the (centred) energy.
    xc = x - x.mean(0)
    zc = z.reshape(-1, 3) - z.reshape(-1, 3).mean(0)
    assert np.square(zc).sum() == pytest.approx(np.square(xc).sum(), rel=1e-3)


def test_load_files(tmp_path):
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    (t,) = tensors.load_file(str(tmp_path / "a.npy"))
    assert t.dtype == "float32" and t.data.shape == (3, 4)
    (t,) = tensors.load_file(str(tmp_path / "a.npy"), "bfloat16")
    assert t.data.dtype == ml_dtypes.bfloat16
    torch.save(
        {"h": torch.ones(2, 5, dtype=torch.bfloat16), "ids": torch.arange(4), "g": [torch.ones(3)]},
        tmp_path / "b.pt",
    )
    notes = []
    got = tensors.load_file(str(tmp_path / "b.pt"), log=notes.append)
    assert [(t.name, t.dtype) for t in got] == [("b.pt:h", "bfloat16"), ("b.pt:g[0]", "float32")]
    assert np.array_equal(got[0].data.astype(np.float32), np.ones((2, 5), np.float32))
    assert any("ids" in n for n in notes)
    from safetensors.torch import save_file

    save_file({"w": torch.full((4, 4), 2.5, dtype=torch.bfloat16)}, tmp_path / "c.safetensors")
    (t,) = tensors.load_file(str(tmp_path / "c.safetensors"))
    assert t.name == "c.safetensors:w" and t.dtype == "bfloat16"
    assert np.all(t.data.astype(np.float32) == 2.5)
    with pytest.raises(ValueError, match="unsupported file type"):
        tensors.load_file(str(tmp_path / "x.csv"))


# --- iota-codec bench end to end -------------------------------------------------------------


def test_bench_command_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "act.npy", rng.standard_t(3, (64, 96)).astype(np.float32))
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    rc = cli.main(
        [
            "bench",
            str(tmp_path / "act.npy"),
            "--dtype",
            "bfloat16,float32",
            "--peers",
            "zstd-3,int8+zstd",
            "--codec",
            '{"profile": "lossless", "chunk_size": 1024, "name": "small-chunks"}',
            "--repeat",
            "2",
            "--links",
            "10M,1G",
            "--json",
            str(out),
            "--markdown",
            str(md),
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "iota-lossless" in text and "int8+zstd" in text and "break-even" in text
    r = json.loads(out.read_text())
    for key in (
        "iota_codec",
        "machine",
        "settings",
        "link_model",
        "links_bps",
        "coders",
        "tensors",
        "results",
        "notes",
        "wall_s",
    ):
        assert key in r, key
    assert r["machine"]["cores"] >= 1 and r["machine"]["simd_level"]
    assert r["links_bps"] == [1e7, 1e9]
    assert r["settings"]["repeat"] == 2
    assert [t["dtype"] for t in r["tensors"]] == ["bfloat16", "float32"]
    names = [f"iota-{p}" for p in PROFILES] + ["small-chunks", "zstd-3", "int8+zstd"]
    assert set(r["coders"]) == set(names)
    assert r["coders"]["zstd-3"]["versions"]["zstandard"]
    assert len(r["results"]) == 2 * len(names)
    for e in r["results"]:
        for key in (
            "tensor",
            "codec",
            "kind",
            "dtype",
            "shape",
            "raw_bytes",
            "coded_bytes",
            "ratio",
            "exact",
            "rel_rmse",
            "max_abs_error",
            "encode_s",
            "decode_s",
            "encode_gbps",
            "decode_gbps",
            "chunks",
            "break_even_bps",
            "links",
        ):
            assert key in e, key
        assert e["raw_bytes"] == 64 * 96 * (2 if e["dtype"] == "bfloat16" else 4)
        assert e["ratio"] == pytest.approx(e["raw_bytes"] / e["coded_bytes"])
        assert len(e["encode_times_s"]) == 2
        assert [x["link_bps"] for x in e["links"]] == [1e7, 1e9]
        for x in e["links"]:
            t = links.transfer(
                e["raw_bytes"],
                e["coded_bytes"],
                e["encode_s"],
                e["decode_s"],
                x["link_bps"],
                e["chunks"],
            )
            assert x["serial_s"] == pytest.approx(t.serial_s)
            assert x["overlapped_s"] == pytest.approx(t.overlapped_s)
        if e["codec"] in ("iota-lossless", "small-chunks", "zstd-3"):
            assert e["exact"] and e["rel_rmse"] == 0 and e["max_abs_error"] == 0
        if e["codec"] == "int8+zstd":
            assert not e["exact"] and 0 < e["rel_rmse"] < 0.05
    small = next(e for e in r["results"] if e["codec"] == "small-chunks")
    assert small["chunks"] == 6  # 6144 elements in chunks of 1024
    text = md.read_text()
    assert "| iota-lossless |" in text
    # One pair of tables per tensor and dtype.
    assert "act.npy bfloat16: speedup" in text and "act.npy float32: speedup" in text


def test_bench_command_errors_adds_transform_coding(tmp_path, capsys):
    rng = np.random.default_rng(1)
    z = rng.standard_t(4, (256, 4)) @ rng.standard_normal((4, 32))
    np.save(tmp_path / "act.npy", z.astype(np.float32))
    out = tmp_path / "r.json"
    rc = cli.main(
        ["bench", str(tmp_path / "act.npy"), "--profiles", "none", "--peers", "none",
         "--errors", "3,10", "--repeat", "1", "--json", str(out), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    codecs = {r["codec"]: r for r in report["results"]}
    assert set(codecs) == {"iota-error-3%", "iota-auto-3%", "iota-error-10%", "iota-auto-10%"}
    for name, r in codecs.items():
        assert r["rel_rmse"] <= (0.03 if "-3%" in name else 0.1)
    assert codecs["iota-auto-3%"]["ratio"] > codecs["iota-error-3%"]["ratio"]
    assert any("Gaussian transform-coding bound" in n for n in report["notes"])
    assert cli.main(["bench", str(tmp_path / "act.npy"), "--errors", "300"]) == 2


def test_bench_command_plot(tmp_path):
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "x.npy", np.linspace(-1, 1, 4096, dtype=np.float32).reshape(64, 64))
    png = tmp_path / "p.png"
    rc = cli.main(
        ["bench", str(tmp_path / "x.npy"), "--peers", "none", "--repeat", "1", "--plot",
         str(png), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_command_with_progress_bar(tmp_path, monkeypatch, capsys):
    from rich.console import Console

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    np.save(tmp_path / "x.npy", np.linspace(-1, 1, 2048, dtype=np.float32))
    rc = cli.main(["bench", str(tmp_path / "x.npy"), "--peers", "zstd-1", "--repeat", "1"])
    assert rc == 0
    assert "measured in" in capsys.readouterr().out


def test_bench_command_errors(tmp_path, capsys):
    assert cli.main(["bench", str(tmp_path / "missing.npy"), "--no-progress"]) == 2
    assert "missing.npy" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.ones(16, np.float32))
    assert cli.main(["bench", str(tmp_path / "x.npy"), "--dtype", "int8"]) == 2
    assert "int8" in capsys.readouterr().err
    assert cli.main(["bench", str(tmp_path / "x.npy"), "--codec", "{bad"]) == 2
    assert (
        cli.main(["bench", str(tmp_path / "x.npy"), "--profiles", "none", "--peers", "none"]) == 2
    )


def test_bench_command_without_rich_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rich", None)
    np.save(tmp_path / "x.npy", np.ones(16, np.float32))
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", str(tmp_path / "x.npy")])
    assert e.value.code == 2
    assert "pip install 'iota-codec[bench" in capsys.readouterr().err


def test_demo_runs_on_a_bare_install(monkeypatch, capsys):
    """`pip install iota-codec` alone (numpy, no torch, ml_dtypes or rich): the demo runs on
    synthetic float16 data in plain text and says why (it used to die without ml_dtypes)."""
    for module in ("torch", "ml_dtypes", "rich"):
        # Import fails, also of submodules earlier tests imported (`from rich.console import
        # Console` takes sys.modules["rich.console"] without looking at "rich").
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(coders, "PEERS", {})
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "torch is not installed: activation/gradient are synthetic data" in out
    assert "float16 instead of bfloat16" in out
    assert "activation  float16 (1024, 1024)" in out
    # One table per tensor, lossless exact in each (column widths depend on the rows).
    assert len(re.findall(r"iota-lossless +1\.\d+ +exact", out)) == 2
    assert "lossless on gradient: ratio 1." in out


def test_report_tables_render_plain():
    x = tensors.Tensor("t", np.ones((8, 8), np.float32), "test")
    spec = coders.iota_spec("lossless")
    r = engine.measure_one(spec, x, repeat=1)
    rep = {
        "results": [engine.entry(spec, x, r)],
        "tensors": [{"name": "t", "dtype": "float32", "shape": [8, 8], "bytes": 256, "source": ""}],
        "links_bps": list(links.DEFAULT_LINKS_BPS),
        "settings": {"repeat": 1},
    }
    text = "\n".join(report.render_plain(t) for t in report.tables(rep))
    assert "iota-lossless" in text and "400G" in text and "raw transfer, ms" in text
    assert report.fmt_bps(None) == "never"
    assert report.fmt_bps(2.5e9) == "2.5 Gbit/s"


def test_numcodecs_and_zfpy_import_together():
    # numcodecs 0.16.x parses zfpy's version as integers at import and fails on
    # zfpy 1.0.1.post0: requirements/dev.txt pins a pair that works; keep it that way.
    import numcodecs
    import zfpy
    from numcodecs import ZFPY

    x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(16, 16)
    y = ZFPY(tolerance=1e-3).decode(ZFPY(tolerance=1e-3).encode(x)).reshape(x.shape)
    assert np.abs(y - x).max() <= 1e-3
    assert zfpy.decompress_numpy(zfpy.compress_numpy(x, tolerance=1e-3)).shape == x.shape
    assert numcodecs.__version__


def test_benchmark_suite_runs_on_a_tiny_tensor(tmp_path):
    # The pytest-benchmark suite in benches/ on a sliver of the synthetic set (no model
    # training), one round: it must run and print the shared summary tables.
    root = pathlib.Path(__file__).resolve().parent.parent
    env = dict(
        os.environ,
        IOTA_BENCH_SETS="synthetic",
        IOTA_BENCH_DTYPES="bfloat16",
        IOTA_BENCH_CODECS="iota-lossless,zstd-3,int8+zstd",
        IOTA_BENCH_FRACTION="0.01",
        IOTA_BENCH_ROUNDS="1",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benches", "--benchmark-only", "-q", "-p",
         "no:cacheprovider", f"--benchmark-storage={tmp_path}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 passed" in proc.stdout
    assert "pytest-benchmark medians through the link model" in proc.stdout
    assert "synthetic bfloat16: speedup over sending it raw" in proc.stdout
    assert "synthetic  bfloat16 (40, 1024)" in proc.stdout
    assert "order-0 bound" in proc.stdout
