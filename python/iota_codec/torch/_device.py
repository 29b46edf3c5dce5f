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

import os
from dataclasses import dataclass
from typing import Any

import torch

from .._core import InvalidArgumentError
from ._quant import DTYPES, BlockFormat, BlockQuant, block_quantize

#: The environment variable that picks where fixed-rate formats are quantized: ``auto`` (the
#: default: on the device for CUDA tensors), ``on`` (in torch ops for every torch tensor,
#: CPU tensors included: how the tests drive the device path without a GPU) or ``off``
#: (always copy the raw tensor and quantize on the host).
DEVICE_QUANTIZE_ENV = "IOTA_CODEC_DEVICE_QUANTIZE"
_ON = ("on", "1", "true", "yes")
_OFF = ("off", "0", "false", "no")

#: A short last chunk (fewer elements than this) may be coded larger than its raw elements
#: and then be stored raw: its raw elements cross over too, so that the frame can hold them.
RAW_TAIL_MAX = 4096


def device_quantize_mode(value: Any = None) -> str:
    """``"on"``, ``"off"`` or ``"auto"``: ``value`` (``True``/``False``/``None`` or one of
    those names), or for ``None`` the :data:`DEVICE_QUANTIZE_ENV` environment variable."""
    if value is None:
        value = os.environ.get(DEVICE_QUANTIZE_ENV, "auto")
    if value is True:
        return "on"
    if value is False:
        return "off"
    v = str(value).strip().lower()
    if v in _ON:
        return "on"
    if v in _OFF:
        return "off"
    if v in ("", "auto"):
        return "auto"
    raise InvalidArgumentError(
        f"device_quantize={value!r} is unknown; choose 'auto', 'on' or 'off' (or True/False)"
    )


def device_format(codec: Any) -> BlockFormat | None:
    """The block format to quantize in torch ops for ``codec``, or ``None`` where the codec
    has no device stage: lossless and error-bounded coding, and stochastic rounding."""
    s = codec.settings
    if s["format"] is None or s["rounding"] != "nearest":
        return None
    return BlockFormat(s["format"], s["scale"], s["block"])


@dataclass
class DeviceCodes:
    """A tensor quantized on its device: what crosses to the host instead of the tensor."""

    quant: BlockQuant
    #: The raw elements of a short last chunk (flat, the tensor's dtype), or ``None``.
    raw_tail: torch.Tensor | None

    def tensors(self) -> list[torch.Tensor]:
        t = [self.quant.codes, self.quant.scales, self.quant.nonfinite]
        return t if self.raw_tail is None else [*t, self.raw_tail]


def _chunk_elems(codec: Any, fmt: BlockFormat, itemsize: int) -> int:
    """The chunk size the encoder uses (a multiple of the block; see ``EncodePlan``)."""
    most = (2**32 - 2) // itemsize
    return max(min(codec.chunk_size, most) // fmt.block, 1) * fmt.block


def quantize_on_device(x: torch.Tensor, codec: Any) -> DeviceCodes | None:
    """Runs ``codec``'s quantizer on ``x``'s device (torch ops, on the current stream), or
    returns ``None`` when the codec has no device stage (see :func:`device_format`) or ``x``
    is not a float32/float16/bfloat16 tensor with elements.

    The result holds the codes (packed to their bit width), the block scales, a flag for
    NaN/Inf and, when the last chunk is short, its raw elements: exactly what
    ``_core.encode_block_codes`` needs to write the frame the host encoder would write.
    """
    fmt = device_format(codec)
    if fmt is None or x.dtype not in DTYPES or x.numel() == 0:
        return None
    flat = x.detach().reshape(-1)
    n = flat.numel()
    chunk = _chunk_elems(codec, fmt, x.element_size())
    last = n - (n - 1) // chunk * chunk
    tail = flat[n - last :] if last < RAW_TAIL_MAX else None
    return DeviceCodes(block_quantize(flat, fmt), tail)


def _fetch(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Contiguous CPU copies of ``tensors`` (which live on ``device``): for CUDA, copies into
    pinned memory queued on the device's current stream, and a wait for them only."""
    if device.type == "cpu":
        return [t.contiguous() for t in tensors]
    if device.type == "cuda":
        with torch.cuda.device(device):
            hosts = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
            for h, t in zip(hosts, tensors, strict=True):
                h.copy_(t, non_blocking=True)
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(device))
        done.synchronize()
        return hosts
    return [t.to("cpu").contiguous() for t in tensors]


def _bytes(t: torch.Tensor) -> Any:
    """A flat uint8 numpy view of a contiguous CPU tensor."""
    return t.reshape(-1).view(torch.uint8).numpy()


def encode_quantized(codec: Any, x: torch.Tensor) -> bytes | None:
    """The frame of ``x`` from its device-side quantization, or ``None`` when that path does
    not apply: no device stage for the codec or tensor, NaN/Inf in the tensor (the host
    refuses or escapes them), or a chunk to store raw that the raw tail does not cover."""
    from .. import _core
    from .._adapt import HINT_TORCH, dtype_name

    dev = quantize_on_device(x, codec)
    if dev is None:
        return None
    host = _fetch(dev.tensors(), x.device)
    codes, scales, nonfinite = host[:3]
    if bool(nonfinite):
        return None
    raw_tail = _bytes(host[3]) if len(host) > 3 else None
    return _core.encode_block_codes(
        _bytes(codes),
        _bytes(scales),
        dtype_name(x.dtype),
        list(x.shape),
        profile=codec.profile,
        settings=codec.settings,
        chunk_size=codec.chunk_size,
        threads=codec.threads,
        hint=HINT_TORCH,
        packed=True,
        raw_tail=raw_tail,
    )


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


def encode_on_device(
    codec: Any,
    x: torch.Tensor,
    *,
    dtype: Any = None,
    shape: Any = None,
    device_quantize: Any = None,
) -> bytes:
    """:meth:`iota_codec.Codec.encode` for a torch tensor that is not on the CPU (or, when
    device quantization is forced, for any torch tensor).

    ``device_quantize`` (``"auto"``, ``"on"``, ``"off"``, ``True``, ``False``; default: the
    :data:`DEVICE_QUANTIZE_ENV` environment variable, else ``"auto"``) picks the path:
    quantize in torch ops on the tensor's device and copy only codes and scales (``"auto"``
    does so for CUDA tensors, ``"on"`` for every device, CPU included), or copy the raw tensor
    and code it on the host (``"off"``, and every codec or tensor without a device stage).
    The frame is the same either way.
    """
    mode = device_quantize_mode(device_quantize)
    use = mode == "on" or (mode == "auto" and x.device.type == "cuda")
    # An explicit dtype=/shape= is checked (and refused if it disagrees) by the host path.
    if use and dtype is None and shape is None:
        frame = encode_quantized(codec, x)
        if frame is not None:
            return frame
    return codec._encode_host(to_host(x.detach()), dtype=dtype, shape=shape)


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
