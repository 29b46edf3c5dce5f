"""What users install: the source distribution holds everything a build needs and nothing of
this checkout's, and a wheel built from it alone installs and works on its own, with its
extension, typing marker, license, command and numcodecs entry point.

Builds the extension once more from the unpacked source distribution (about a minute on two
cores the first time; the compiled dependencies are kept in the cache directory beside the
test environment, so later runs compile only the crate, in about half a minute).
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

# Files a build from the source distribution reads, beside every tracked file under src/ and
# python/.
NEEDED = {"Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md", "LICENSE"}


def _maturin() -> str:
    exe = shutil.which("maturin", path=str(BIN)) or shutil.which("maturin")
    if exe is None:
        pytest.skip("maturin is not installed")
    return exe


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iota-codec"


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    _run([_maturin(), "sdist", "--out", out], cwd=ROOT)
    (path,) = out.glob("iota_codec-*.tar.gz")
    return path


def _tracked(*dirs: str) -> set[str]:
    """The files git tracks under `dirs` (empty outside a git checkout)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        return set()
    r = _run(["git", "ls-files", "--", *dirs], cwd=ROOT)
    return set(r.stdout.split())


def test_the_source_distribution_holds_what_a_build_needs(sdist):
    with tarfile.open(sdist) as t:
        names = [m.name for m in t.getmembers() if m.isfile()]
    top = {n.split("/", 1)[0] for n in names}
    assert top == {sdist.name.removesuffix(".tar.gz")}, top
    files = {n.split("/", 1)[1] for n in names}
    assert NEEDED <= files, NEEDED - files
    assert "python/iota_codec/py.typed" in files
    missing = _tracked("src", "python") - files
    assert not missing, f"tracked sources left out of the sdist: {sorted(missing)}"
    local = [
        n
        for n in files
        if n.startswith(("target/", "dist/", "fuzz/target/"))
        or "__pycache__/" in n
        or n.endswith((".so", ".pyd", ".pyc"))
        or n.startswith((".pytest_cache/", ".hypothesis/", ".benchmarks/", ".ruff_cache/"))
    ]
    assert not local, f"build outputs or caches in the sdist: {local[:10]}"


def test_a_wheel_built_from_it_installs_and_works_alone(sdist, tmp_path):
    env = dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        CARGO_TARGET_DIR=str(_cache_dir() / "packaging-target"),
    )
    # The crate itself is always compiled again (cargo would otherwise take the artifacts of
    # an earlier build for fresh, going by the files' times).
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    _run(
        ["cargo", "clean", "--release", "-p", "iota_codec", "--manifest-path", ROOT / "Cargo.toml"],
        env=env,
    )
    wheels = tmp_path / "wheels"
    # No index, no build isolation: the build uses this environment's maturin, offline. No
    # cache: no wheel pip kept from an earlier build may stand in for this one.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-cache-dir",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            wheels,
            sdist,
        ],
        env=env,
    )
    (wheel,) = wheels.glob("iota_codec-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (dist_info,) = {n.split("/", 1)[0] for n in names if ".dist-info/" in n}
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
        metadata = z.read(f"{dist_info}/METADATA").decode()
    modules = {p.relative_to(ROOT / "python").as_posix() for p in (ROOT / "python").rglob("*.py")}
    assert modules <= names, modules - names
    assert "iota_codec/py.typed" in names
    assert "iota_codec/_core.pyi" in names
    assert [
        n for n in names if n.startswith("iota_codec/_core.") and n.endswith((".so", ".pyd"))
    ], sorted(names)
    assert any(n.startswith(f"{dist_info}/") and n.endswith("/LICENSE") for n in names), names
    assert "License-File: LICENSE" in metadata
    groups = configparser.ConfigParser()
    groups.read_string(entry_points)
    assert groups["console_scripts"]["iota-codec"] == "iota_codec.cli:main"
    assert groups["numcodecs.codecs"]["iota_codec"] == "iota_codec.numcodecs:IotaCodec"

    site = tmp_path / "site"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            site,
            wheel,
        ],
        env=env,
    )
    # The installed package, not this checkout's (PYTHONPATH comes before the development
    # install's path entry), run from a directory without a package of that name.
    env_site = dict(env, PYTHONPATH=str(site))
    check = textwrap.dedent(
        f"""
        import importlib.metadata as md
        from pathlib import Path

        import numpy as np

        import iota_codec
        from iota_codec import _core

        site = Path({str(site)!r})
        assert Path(iota_codec.__file__).is_relative_to(site), iota_codec.__file__
        assert Path(_core.__file__).is_relative_to(site), _core.__file__
        dist = md.distribution("iota-codec")
        assert Path(dist.locate_file("")).resolve() == site.resolve(), dist.locate_file("")
        assert dist.version == iota_codec.__version__, (dist.version, iota_codec.__version__)
        (ep,) = [e for e in md.entry_points(group="numcodecs.codecs") if e.name == "iota_codec"]
        assert ep.value == "iota_codec.numcodecs:IotaCodec", ep
        x = np.random.default_rng(0).standard_normal((64, 300)).astype(np.float32)
        assert np.array_equal(iota_codec.decode(iota_codec.encode(x)), x)
        y = iota_codec.decode(iota_codec.encode(x, profile="balanced"))
        err = float(np.linalg.norm(y - x) / np.linalg.norm(x))
        assert 0 < err <= 0.01, err
        Path("frame.iota").write_bytes(iota_codec.encode(x, profile="balanced"))
        print(iota_codec.simd_level())
        """
    )
    _run([sys.executable, "-c", check], env=env_site, cwd=tmp_path)
    script = site / "bin" / ("iota-codec.exe" if os.name == "nt" else "iota-codec")
    assert script.exists(), sorted(p.name for p in (site / "bin").iterdir())
    r = _run([script, "info", "frame.iota"], env=env_site, cwd=tmp_path)
    meta = json.loads(r.stdout)
    assert meta["shape"] == [64, 300] and meta["dtype"] == "float32", meta
