"""Moving tensors between an accelerator and the host around the (host-side) codec.

The Rust core codes host memory. A tensor on a CUDA device is staged through pinned host
memory:

- **encode**: an asynchronous device-to-host copy into a pinned buffer is queued on the
  device's *current stream* (so it runs after whatever produced the tensor on that stream),
  an event recorded behind it, and the host waits for that event only (not for the whole
  device, and not for other streams); then the host codes the pinned copy.
- **decode**: the frame is decoded on the host into a pinned buffer, and an asynchronous
  host-to-device copy is queued on the target device's current stream. The call returns
  without waiting for it; later work on that stream sees the data. The pinned block is not
  reused until the copy is done: PyTorch's caching host allocator records an event for it on
  that stream when the copy is queued.

As with any tensor in PyTorch, work on another stream must wait for the current stream
(``torch.cuda.current_stream().wait_stream`` / ``Tensor.record_stream``) before it uses a
decoded tensor.

Tensors on other non-CPU devices (``mps``, ``xpu``, ...) are moved with a plain blocking
``.to()`` copy; ``meta`` tensors have no data and are refused.

**What is verified.** The CUDA paths here are written against PyTorch's documented stream
semantics but have only been exercised where a CUDA device was present; the test suite
checks them when ``torch.cuda.is_available()`` and skips them (saying so) otherwise. The
host paths are covered everywhere.

**Where GPU quantization goes.** :func:`quantize_on_device` is the hook for running a lossy
profile's quantizer on the GPU so that only the quantized symbols cross PCIe. No profile has
a device-side stage yet, so today the raw tensor is copied and everything runs on the host.
"""

from __future__ import annotations

from typing import Any

import torch

from .._core import InvalidArgumentError


def quantize_on_device(x: torch.Tensor, codec: Any) -> None:
    """The hook for a device-side quantizer: returns ``None`` (no device stage) for every
    profile so far.

    When a lossy profile's quantizer has a final, bit-exact definition, its GPU version
    goes here: it takes the tensor on its device and the :class:`iota_codec.Codec`, runs the
    quantizer (torch ops or Triton) and returns the quantized symbols and their parameters,
    which are then copied to the host and entropy-coded there. Such a stage must produce
    exactly the symbols the host quantizer would, so that a frame never depends on where
    the tensor lived (a test on a CUDA machine must compare the two frames byte for byte).
    """
    del x, codec
    return None


def to_host(x: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with ``x``'s contents (``x`` itself when it already is one).

    For a CUDA tensor the copy goes into pinned memory on the current stream of ``x``'s
    device, and only that copy is waited for.
    """
    kind = x.device.type
    if kind == "cpu":
        return x if x.is_contiguous() else x.contiguous()
    if kind == "meta":
        raise InvalidArgumentError("a meta tensor has no data to encode")
    if kind == "cuda":
        with torch.cuda.device(x.device):
            host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
            host.copy_(x, non_blocking=True)
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(x.device))
        done.synchronize()
        return host
    return x.to("cpu").contiguous()


def host_buffer(shape: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An empty CPU tensor to decode into before moving it to ``device`` (pinned for CUDA)."""
    return torch.empty(tuple(shape), dtype=dtype, pin_memory=device.type == "cuda")


def from_host(host: torch.Tensor, device: torch.device, out: torch.Tensor | None = None):
    """``host`` on ``device`` (or copied into ``out``), queued on the device's current stream
    without waiting for it."""
    if out is not None:
        if out.device.type == "cuda":
            with torch.cuda.device(out.device):
                out.copy_(host, non_blocking=True)
        else:
            out.copy_(host)
        return out
    if device.type == "cpu":
        return host
    if device.type == "cuda":
        with torch.cuda.device(device):
            result = torch.empty(host.shape, dtype=host.dtype, device=device)
            result.copy_(host, non_blocking=True)
        return result
    return host.to(device)


def as_device(device: Any) -> torch.device | None:
    """``device`` as a :class:`torch.device` (``None`` stays ``None``)."""
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def encode_on_device(codec: Any, x: torch.Tensor, **kwargs: Any) -> bytes:
    """:meth:`iota_codec.Codec.encode` for a tensor that is not on the CPU."""
    if quantize_on_device(x, codec) is not None:  # pragma: no cover - no device stage yet
        raise NotImplementedError("device-side quantization is not wired to the host coder")
    return codec.encode(to_host(x.detach()), **kwargs)


def decode_to_device(codec: Any, blob: Any, out: Any, device: Any) -> torch.Tensor:
    """:meth:`iota_codec.Codec.decode` into a torch tensor on ``device`` (or into ``out``)."""
    from .. import _core

    dtype, shape, _ = _core.header(blob, limits=codec.limits)
    tdtype = getattr(torch, dtype)
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise InvalidArgumentError("with device=, out must be a torch tensor")
        if device is not None and as_device(device) != out.device:
            raise InvalidArgumentError(f"out is on {out.device}, not on device={device}")
        numel = 1
        for d in shape:
            numel *= d
        if out.dtype != tdtype or out.numel() != numel:
            raise InvalidArgumentError(
                f"out is {out.dtype} with {out.numel()} elements; the frame holds {dtype} of "
                f"shape {tuple(shape)}"
            )
        dev = out.device
    else:
        dev = as_device(device) or torch.device("cpu")
    host = host_buffer(shape, tdtype, dev)
    codec.decode(blob, out=host)
    if out is not None:
        return from_host(host.view(out.shape), dev, out)
    return from_host(host, dev)
