"""The Python API surface: configs, info, containers, out=."""

from __future__ import annotations

import json
import os
import platform
import sys

import iota_codec as codec
import ml_dtypes
import numpy as np
import pytest
import torch


def test_config_round_trip():
    c = codec.Codec("lossless", chunk_size=1000, threads=2, max_output_bytes=123456)
    cfg = c.get_config()
    assert cfg["id"] == "iota_codec"
    assert json.loads(json.dumps(cfg)) == cfg
    c2 = codec.Codec.from_config(cfg)
    assert c2 == c and hash(c2) == hash(c)
    assert "chunk_size=1000" in repr(c)
    with pytest.raises(codec.InvalidArgumentError, match="unknown config keys"):
        codec.Codec.from_config({**cfg, "colour": 4})
    with pytest.raises(codec.InvalidArgumentError, match="config id"):
        codec.Codec.from_config({**cfg, "id": "zstd"})


def test_defaults():
    c = codec.Codec()
    assert c.profile == "lossless" and "lossless" in codec.PROFILES
    assert c.chunk_size == codec.DEFAULT_CHUNK_SIZE
    assert c.threads == 0
    assert c.max_output_bytes == codec.DEFAULT_MAX_OUTPUT_BYTES


def test_info_reports_header_and_sizes():
    x = np.random.default_rng(0).standard_normal((64, 1000)).astype(ml_dtypes.bfloat16)
    blob = codec.encode(x, chunk_size=10_000)
    meta = codec.info(blob)
    assert meta["format_version"] == codec.FORMAT_VERSION
    assert meta["dtype"] == "bfloat16" and meta["shape"] == [64, 1000]
    assert meta["container"] == "numpy"
    assert meta["n_chunks"] == 7 and len(meta["chunk_bytes"]) == 7
    assert [s["name"] for s in meta["stages"]] == ["float_split", "rans"]
    assert meta["stages"][1]["lanes"] == 32
    assert meta["frame_bytes"] == len(blob)
    assert meta["frame_bytes"] == meta["header_bytes"] + sum(meta["chunk_bytes"]) + 8 * 7
    assert meta["uncompressed_bytes"] == x.nbytes
    assert meta["ratio"] == pytest.approx(x.nbytes / len(blob))
    assert meta["ratio"] > 1.3


def test_codec_instance_and_module_functions_agree():
    x = np.random.default_rng(1).standard_normal(3000).astype(np.float16)
    c = codec.Codec(chunk_size=500, threads=1)
    assert c.encode(x) == codec.encode(x, chunk_size=500)
    np.testing.assert_array_equal(c.decode(c.encode(x)), x)


def test_module_functions_reuse_codecs_only_for_the_same_arguments():
    from iota_codec import _api

    x = np.random.default_rng(2).standard_normal(4096).astype(np.float32)
    _api._CODECS.clear()
    first = codec.encode(x, bits=4, entropy=True)
    assert len(_api._CODECS) == 1
    assert codec.encode(x, entropy=True, bits=4) == first
    assert len(_api._CODECS) == 1  # keyword order does not matter
    codec.decode(first)
    codec.decode(first)
    assert len(_api._CODECS) == 2  # one encoder, one decoder
    # Equal but different arguments get codecs of their own: 1 == True, yet entropy=1 is an
    # error; 0.0 == -0.0, yet they are different bounds.
    with pytest.raises(codec.InvalidArgumentError, match="entropy"):
        codec.encode(x, bits=4, entropy=1)
    a = _api._codec_for("lossless", {"max_abs": 0.0})
    assert _api._codec_for("lossless", {"max_abs": -0.0}) is not a
    assert _api._codec_for("lossless", {"max_abs": 0.0}) is a
    # Bad arguments raise every time and leave nothing behind.
    for _ in range(2):
        with pytest.raises(codec.InvalidArgumentError, match="profile"):
            codec.encode(x, profile="nope")
    # Arguments of other types (numpy scalars, lists) build their Codec every call.
    n = len(_api._CODECS)
    assert codec.encode(x, error=np.float64(0.01)) == codec.encode(x, error=0.01)
    assert len(_api._CODECS) == n + 1
    with pytest.raises(codec.InvalidArgumentError):
        codec.encode(x, block=[64], bits=4)
    # The cache is bounded.
    _api._CODECS.clear()
    for size in range(1, _api._CODECS_MAX + 2):
        codec.encode(x[:8], chunk_size=size)
    assert 0 < len(_api._CODECS) <= _api._CODECS_MAX


def test_numpy_scalars_code_as_zero_dimensional_arrays():
    for value in (np.float32(-2.5), np.float16(0.1), ml_dtypes.bfloat16(3.0)):
        for profile in ("lossless", "fast"):
            y = codec.decode(codec.encode(value, profile=profile))
            assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == value.dtype
            assert y == value  # exact: one element is its own block's scale
    with pytest.raises(codec.InvalidArgumentError, match="float64"):
        codec.encode(np.float64(1.0))


def test_accepts_any_buffer_and_memoryview():
    x = np.arange(12, dtype=np.float32)
    for buf in (x.tobytes(), bytearray(x.tobytes()), memoryview(x.tobytes())):
        y = codec.decode(codec.encode(buf, dtype="float32", shape=(3, 4)))
        np.testing.assert_array_equal(y, x.reshape(3, 4))
    # Raw bfloat16 bits from a uint16 array, and a default one-dimensional shape.
    b = np.arange(10, dtype=np.uint16)
    y = codec.decode(codec.encode(b, dtype="bfloat16"))
    assert y.dtype == ml_dtypes.bfloat16 and y.shape == (10,)
    np.testing.assert_array_equal(y.view(np.uint16), b)


def test_bfloat16_into_uint16_out():
    t = torch.randn(33, dtype=torch.bfloat16)
    out = np.empty(33, np.uint16)
    codec.decode(codec.encode(t), out=out)
    np.testing.assert_array_equal(out, t.view(torch.int16).numpy().view(np.uint16))


def test_frames_are_bytes_and_decode_accepts_buffers():
    x = np.ones(100, np.float32)
    blob = codec.encode(x)
    assert isinstance(blob, bytes)
    for b in (bytearray(blob), memoryview(blob), np.frombuffer(blob, np.uint8)):
        np.testing.assert_array_equal(codec.decode(b), x)


def _vm_flags(addr: int) -> list[str] | None:
    """The VmFlags of the mapping in /proc/self/smaps that holds ``addr``."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if "-" in first and not first.endswith(":"):
                a, b = (int(v, 16) for v in first.split("-"))
                inside = a <= addr < b
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    return None


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64")
    or not os.path.exists("/sys/kernel/mm/transparent_hugepage"),
    reason="needs Linux x86-64 with transparent huge pages",
)
def test_new_torch_outputs_are_advised_huge_pages():
    # A decode into a new torch tensor of 4 MiB or more asks for transparent huge pages (as
    # numpy does for its arrays): a page fault per 2 MiB instead of one per 4 KiB.
    x = torch.arange(4 << 20, dtype=torch.float32).reshape(1024, -1)
    frame = codec.encode(x)
    # A frame of 4 MiB and more is copied into its bytes object outside the GIL.
    assert type(frame) is bytes and len(frame) >= 4 << 20
    assert frame == b"".join(codec.Codec().encode_stream(x))
    y = codec.decode(frame)
    assert torch.equal(y, x)
    inner = -(-y.data_ptr() // (2 << 20)) * (2 << 20)
    assert "hg" in (_vm_flags(inner) or [])
    small = codec.decode(codec.encode(torch.ones(1000)))
    assert torch.equal(small, torch.ones(1000))


@pytest.mark.parametrize("module", ["iota_codec.torch", "iota_codec.nn"])
def test_torch_modules_say_how_to_install_torch(monkeypatch, module):
    import importlib

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(
        ModuleNotFoundError, match=r"needs PyTorch: pip install 'iota-codec\[torch\]'"
    ):
        importlib.import_module(module)


def test_info_command(tmp_path, capsys):
    from iota_codec import cli

    x = np.random.default_rng(3).standard_normal((64, 32)).astype(np.float32)
    blob = codec.encode(x, chunk_size=1000)
    (tmp_path / "x.iota").write_bytes(blob)
    assert cli.main(["info", str(tmp_path / "x.iota")]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["shape"] == [64, 32] and meta["n_chunks"] == 3 and "chunk_bytes" not in meta
    assert cli.main(["info", "--chunks", str(tmp_path / "x.iota")]) == 0
    assert len(json.loads(capsys.readouterr().out)["chunk_bytes"]) == 3
    # A damaged or missing file: one line on stderr, exit status 1, no traceback.
    (tmp_path / "bad.iota").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    assert cli.main(["info", str(tmp_path / "bad.iota")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("iota-codec info: ") and "checksum" in err and err.count("\n") == 1
    assert cli.main(["info", str(tmp_path / "missing.iota")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_frames_stay_intact_while_the_encoder_reuses_its_buffer():
    # The encoder codes into a buffer it keeps between calls: a frame returned earlier must
    # not change when later, smaller or larger, frames are coded, whatever the mode.
    rng = np.random.default_rng(5)
    big = rng.standard_normal(1 << 21).astype(np.float32)
    small = rng.standard_normal(1000).astype(np.float32)
    for c in (codec.Codec(threads=1), codec.Codec(profile="balanced", threads=1)):
        first = c.encode(big)
        kept = bytes(first)
        frames = [c.encode(small), c.encode(big), c.encode(small)]
        assert first == kept == frames[1]
        assert frames[0] == frames[2] and len(frames[0]) < len(first)
        np.testing.assert_allclose(c.decode(first), big, rtol=0.1, atol=0.05)
        np.testing.assert_allclose(c.decode(frames[0]), small, rtol=0.1, atol=0.05)
    # Transform coding too (the projection stage returns a frame of its own).
    x = rng.standard_normal((512, 64)).astype(np.float32) @ rng.standard_normal((64, 64)).astype(
        np.float32
    )
    t = codec.Codec(error=0.05, transform="auto", threads=1)
    assert t.encode(x) == t.encode(x)
    assert codec.info(t.encode(x))["stages"][0]["name"] == "project"
