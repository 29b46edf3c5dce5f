"""CUDA tensors: encode from and decode to a GPU through pinned host memory.

These need a CUDA device and are skipped (with the reason shown by ``pytest -ra``) where
``torch.cuda.is_available()`` is false, as on CI.
"""

from __future__ import annotations

import iota_codec
import iota_codec.torch as it
import pytest
import torch
from helpers import bits

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device (torch.cuda.is_available() is false): the CUDA staging "
    "paths are not exercised on this machine",
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_encode_from_gpu_equals_host_frame(dtype):
    x = torch.randn(257, 1031, device="cuda").to(dtype)
    blob = iota_codec.encode(x)
    assert blob == iota_codec.encode(x.cpu())  # the device does not change the frame
    frame = it.encode(x)
    assert frame.device.type == "cpu" and bytes(frame.numpy()) == blob


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_to_gpu(dtype):
    x = torch.randn(64, 300).to(dtype)
    blob = iota_codec.encode(x)
    y = iota_codec.decode(blob, device="cuda")
    assert y.device.type == "cuda" and y.dtype == dtype
    assert (bits(y.cpu()) == bits(x)).all()
    out = torch.empty(64, 300, dtype=dtype, device="cuda")
    assert iota_codec.Codec().decode(blob, out=out) is out
    assert (bits(out.cpu()) == bits(x)).all()
    z = it.decode(it.encode(x), dtype, x.shape, device="cuda")
    assert z.device.type == "cuda" and (bits(z.cpu()) == bits(x)).all()


def test_stream_ordering_on_a_side_stream():
    """The staging copies run on the current stream: work queued before encode on that
    stream is seen by it, and a decoded tensor is ready for work queued after it."""
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.zeros(1 << 22, device="cuda")
        for _ in range(20):  # keep the stream busy so a missing wait would show
            x.add_(1)
        blob = iota_codec.encode(x)
        y = iota_codec.decode(blob, device="cuda")
        y.mul_(2)
        side.synchronize()
    assert iota_codec.decode(blob).eq(20).all()
    assert y.eq(40).all()


def test_non_contiguous_gpu_tensor_and_opcheck():
    x = torch.randn(40, 30, device="cuda").t()
    assert iota_codec.encode(x) == iota_codec.encode(x.cpu().contiguous())
    cfg = it.config_string(None)
    res = torch.library.opcheck(torch.ops.iota_codec.encode.default, (x, cfg))
    assert set(res.values()) == {"SUCCESS"}
    frame = torch.ops.iota_codec.encode(x, cfg).cuda()
    res = torch.library.opcheck(
        torch.ops.iota_codec.decode.default, (frame, x.dtype, list(x.shape), cfg)
    )
    assert set(res.values()) == {"SUCCESS"}
