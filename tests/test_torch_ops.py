"""The custom operators (opcheck, torch.compile), device= decoding, and import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys

import iota_codec
import iota_codec.torch as it
import pytest
import torch
from helpers import assert_within_codec_bound, bits
from iota_codec.torch import _ops

PROFILES = list(iota_codec.PROFILES)

# torch.compile traces an operator with a data-dependent output size (the frame) only with
# this setting in torch 2.4 (2.5-2.10 not checked; 2.11 and 2.15 need none).
COMPILE_CONFIG = {"capture_dynamic_output_shape_ops": True} if torch.__version__ < (2, 11) else {}

CASES = [
    ((4, 5), torch.float32),
    ((3,), torch.bfloat16),
    ((2, 3, 4), torch.float16),
    ((), torch.float32),
    ((0, 3), torch.bfloat16),
    ((300, 17), torch.float32),
]


def _tensor(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_opcheck_encode_and_decode(profile, shape, dtype):
    cfg = it.config_string(iota_codec.Codec(profile, chunk_size=64))
    x = _tensor(shape, dtype)
    inputs = [x, x.detach().clone().requires_grad_(dtype.is_floating_point)]
    if x.dim() >= 2:
        inputs.append(x.transpose(0, 1))  # non-contiguous
    for inp in inputs:
        result = torch.library.opcheck(torch.ops.iota_codec.encode.default, (inp, cfg))
        assert set(result.values()) == {"SUCCESS"}, result
    frame = torch.ops.iota_codec.encode(x, cfg)
    assert frame.dtype == torch.uint8 and frame.dim() == 1 and frame.device.type == "cpu"
    for args in (
        (frame, dtype, list(shape), cfg),
        (frame, dtype, list(shape), cfg, torch.device("cpu")),
    ):
        result = torch.library.opcheck(torch.ops.iota_codec.decode.default, args)
        assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("profile", PROFILES)
def test_wrappers_round_trip(profile):
    codec = iota_codec.Codec(profile)
    for shape, dtype in CASES:
        x = _tensor(shape, dtype, seed=3)
        frame = it.encode(x, codec)
        assert bytes(frame.numpy()) == codec.encode(x)  # the same frame as the core API
        y = it.decode(frame, dtype, shape, codec)
        assert_within_codec_bound(codec, x, y)
    # A dict config or a profile name works as well as a Codec.
    x = _tensor((10,), torch.float32)
    assert torch.equal(it.encode(x, codec.get_config()), it.encode(x, profile))


def test_lossless_specials_bit_exact():
    x = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45])
    x = torch.cat([x, -x.view(torch.int32).add(7).view(torch.float32)])  # NaN payloads
    y = it.decode(it.encode(x), x.dtype, x.shape)
    assert (bits(y) == bits(x)).all()


def test_decode_checks_what_the_receiver_expects():
    frame = it.encode(torch.ones(2, 3))
    with pytest.raises(iota_codec.InvalidArgumentError, match=r"expected torch\.float16"):
        it.decode(frame, torch.float16, (2, 3))
    with pytest.raises(iota_codec.InvalidArgumentError, match=r"expected \(3, 2\)"):
        it.decode(frame, torch.float32, (3, 2))
    damaged = frame.clone()
    damaged[-3] ^= 1
    with pytest.raises(iota_codec.CorruptFrameError):
        it.decode(damaged, torch.float32, (2, 3))
    with pytest.raises(iota_codec.LimitExceededError):
        it.decode(frame, torch.float32, (2, 3), iota_codec.Codec(max_output_bytes=8))
    with pytest.raises(iota_codec.InvalidArgumentError, match="uint8"):
        it.decode(frame.view(torch.int8), torch.float32, (2, 3))


def test_bad_inputs_raise_codec_errors():
    with pytest.raises(iota_codec.InvalidArgumentError, match="unsupported tensor dtype"):
        it.encode(torch.ones(3, dtype=torch.float64))
    with pytest.raises(iota_codec.InvalidArgumentError, match="unknown profile"):
        it.encode(torch.ones(3), "nope")
    with pytest.raises(iota_codec.InvalidArgumentError, match="JSON"):
        torch.ops.iota_codec.encode(torch.ones(3), "{not json")
    with pytest.raises(iota_codec.InvalidArgumentError, match="unknown config keys"):
        torch.ops.iota_codec.encode(torch.ones(3), json.dumps({"colour": 3}))
    with pytest.raises(iota_codec.InvalidArgumentError, match="meta tensor"):
        iota_codec.encode(torch.ones(3, device="meta"))
    with pytest.raises(RuntimeError, match=r"data-dependent (output )?shape"):
        it.encode(torch.ones(3, device="meta"))  # the operator: meta has no frame length
    with pytest.raises(iota_codec.InvalidArgumentError, match="codec must be"):
        it.encode(torch.ones(3), 42)
    assert torch.ops.iota_codec.encode(torch.ones(3), "").numel() > 0  # "" = default codec


def test_torch_compile_fullgraph():
    """encode and decode trace into one graph (the frame length an unbacked size), also
    with dynamic shapes; a different codec is honoured, not baked in."""

    def f(x, codec):
        frame = it.encode(x * 2, codec)
        return it.decode(frame, x.dtype, x.shape, codec) + 1, frame

    torch._dynamo.reset()
    compiled = torch._dynamo.config.patch(**COMPILE_CONFIG)(
        torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=True)
    )
    small = iota_codec.Codec(max_output_bytes=16)
    for n in (3, 7, 11):
        x = _tensor((n, 5), torch.float32, seed=n)
        y, frame = compiled(x, iota_codec.Codec())
        assert torch.equal(y, x * 2 + 1)
        assert bytes(frame.numpy()) == iota_codec.encode(x * 2)
    with pytest.raises(iota_codec.LimitExceededError):
        compiled(_tensor((11, 5), torch.float32), small)
    # a profile name is a constant of the graph too (a config dict argument is not)
    x = _tensor((6, 5), torch.float32, seed=6)
    for codec in ("fast", "balanced"):
        y, frame = compiled(x, codec)
        c = _ops.as_codec(codec)
        assert bytes(frame.numpy()) == c.encode(x * 2)
        assert torch.equal(y, c.decode(c.encode(x * 2)) + 1)


def test_torch_compile_cannot_branch_on_frame_length():
    """What does not compile as one graph: Python control flow on the frame's length."""

    def g(x):
        frame = it.encode(x)
        return frame.sum() if frame.numel() > 10 else frame.sum() * 2

    x = _tensor((8, 8), torch.float32)
    with torch._dynamo.config.patch(**COMPILE_CONFIG):
        torch._dynamo.reset()
        with pytest.raises(Exception, match="data-dependent"):
            torch.compile(g, backend="aot_eager", fullgraph=True)(x)
        torch._dynamo.reset()
        assert torch.equal(torch.compile(g, backend="aot_eager")(x), g(x))  # a graph break


def test_device_argument_on_cpu():
    x = _tensor((4, 6), torch.bfloat16)
    import numpy as np

    blob = iota_codec.encode(x.float().numpy().astype(np.float32))
    y = iota_codec.decode(blob, device="cpu")  # numpy frame, but device= asks for torch
    assert isinstance(y, torch.Tensor) and torch.equal(y, x.float())
    out = torch.empty(4, 6)
    assert iota_codec.Codec().decode(blob, out=out, device="cpu") is out
    assert torch.equal(out, x.float())
    frame = it.encode(x)
    assert it.decode(frame, x.dtype, x.shape, device="cpu").device.type == "cpu"


def test_importing_iota_codec_does_not_import_torch():
    code = "import sys, iota_codec; iota_codec.encode(b'\\0\\0\\0\\0', dtype='float32'); "
    code += "assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_too_old_torch_is_refused_plainly():
    code = "import torch; from torch.torch_version import TorchVersion; "
    code += "torch.__version__ = TorchVersion('2.3.1+cu121'); import iota_codec.torch"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert "ImportError: iota_codec.torch needs PyTorch 2.4 or later; this is torch 2.3.1" in (
        r.stderr
    )


def test_as_codec_and_config_string():
    c = iota_codec.Codec(chunk_size=100, threads=1)
    assert _ops.as_codec(c) is c
    assert _ops.as_codec(c.get_config()) == c
    assert _ops.as_codec("lossless") == iota_codec.Codec()
    assert _ops.codec_from_string(it.config_string(c)) == c
    assert json.loads(it.config_string(None)) == iota_codec.Codec().get_config()
    # the strings are kept per configuration: codecs that differ get their own
    for kw in ({"error": 0.02}, {"error": 0.03}, {"error": 0.02, "threads": 2}, {"max_abs": 8.0}):
        c = iota_codec.Codec("balanced", **kw)
        for _ in range(2):
            assert (
                json.loads(it.config_string(iota_codec.Codec("balanced", **kw))) == c.get_config()
            )
