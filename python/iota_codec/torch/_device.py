"""Moving tensors between an accelerator and the host around the (host-side) codec.

The Rust core codes host memory. What crosses from a CUDA device depends on the codec:

- **Fixed-rate block formats, rounding to nearest** (``format=``/``bits=``: int8/int4/int3/
  int2, FP8 E4M3/E5M2, FP4 E2M1, with E8M0, float16 or bfloat16 block scales, the MX
  formats, the ``fast`` profile; packed or ``entropy=True``): **quantize on the device,
  entropy-code on the host.** The block quantizer runs as torch ops on the tensor's device,
  on its *current stream* (:mod:`iota_codec.torch._quant`, float32 arithmetic that
  reproduces the Rust quantizer bit for bit); the codes, packed to their bit width, the block
  scales and a NaN/Inf flag are copied into pinned host buffers with non-blocking copies on
  that stream (plus the raw elements of a last chunk shorter than :data:`RAW_TAIL_MAX`, which
  the format may store raw); an event is recorded behind them and the host waits for that
  event only. ``_core.encode_block_codes`` (GIL released) then checks the codes and scales
  and writes the frame with the same chunk writer as ``Codec.encode``: packing or rANS,
  checksums, threads. Per element that is ``bits / 8`` bytes plus a scale per block instead
  of 2 (bfloat16/float16) or 4 (float32) bytes: for bfloat16, 1.03 bytes for int8 and FP8,
  0.53 for int4/FP4, 0.41 for int3, 0.28 for int2 (blocks of 32 with 1-byte scales; see
  ``benches/device_quant.py``).
- **Everything else** (lossless, the error-bounded ``balanced``/``max`` profiles and
  ``uniform_quant``, stochastic rounding, tensors holding NaN/Inf): the raw tensor is copied
  and coded on the host. The copy goes into a pinned buffer, queued on the device's current
  stream, and an event recorded behind it is waited for. (A tensor holding NaN or Inf is
  noticed from the flag after the device quantization and then copied raw, so that the host
  encoder refuses it with the usual :class:`iota_codec.NonFiniteError`, or escapes the values
  under ``nonfinite="keep"``; a frame that needs raw elements of a chunk other than a short
  last one, as can happen with ``entropy=True`` and small chunks, also falls back.)
- **decode**: the frame is decoded on the host into a pinned buffer, and an asynchronous
  host-to-device copy is queued on the target device's current stream. The call returns
  without waiting for it; later work on that stream sees the data. The pinned block is not
  reused until the copy is done: PyTorch's caching host allocator records an event for it on
  that stream when the copy is queued.

The frame never depends on where the tensor lived: the device path writes exactly the bytes
``Codec.encode`` writes for the same tensor in host memory. :func:`encode_on_device` takes
``device_quantize=`` (``"auto"``, ``"on"``, ``"off"``; default the
``IOTA_CODEC_DEVICE_QUANTIZE`` environment variable, else ``"auto"``): ``"auto"`` quantizes
CUDA tensors on the device, ``"on"`` every torch tensor (CPU tensors included, which is how
the tests run the torch quantizer without a GPU), ``"off"`` none.

As with any tensor in PyTorch, work on another stream must wait for the current stream
(``torch.cuda.current_stream().wait_stream`` / ``Tensor.record_stream``) before it uses a
decoded tensor.

Tensors on other non-CPU devices (``mps``, ``xpu``, ...) are moved with a plain blocking
``.to()`` copy (with ``"on"``, after quantizing on the device); ``meta`` tensors have no data
and are refused.

**What is verified.** The torch quantizer's frames are compared byte for byte with the host
encoder's on CPU tensors, for every element format, scale and block size in the three dtypes,
on random, heavy-tailed, zero, subnormal, near-maximum and partial blocks, and on every
finite bfloat16 and float16 bit pattern (``tests/test_torch_device_quant.py``). The same
ops on a CUDA device are expected to give the same bits (IEEE float32 division and
round-half-even rounding; no fused or reciprocal arithmetic is left to the backend: a scale
divisor is a tensor, not a Python scalar, because CUDA divides by a scalar as a
multiplication by its reciprocal), and that, and the CUDA staging paths generally, are
checked by the suite's CUDA tests, which run where ``torch.cuda.is_available()`` and are
skipped (saying so) otherwise, as on CI. They passed on an NVIDIA H200 with torch 2.11
(every format, scale, block size and dtype gave the host's frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._api import DEVICE_QUANTIZE_ENV as DEVICE_QUANTIZE_ENV  # re-exported
from .._api import device_quantize_mode
from .._core import InvalidArgumentError
from ._quant import DTYPES, BlockFormat, BlockQuant, block_quantize

#: A short last chunk (fewer elements than this) may be coded larger than its raw elements
#: and then be stored raw: its raw elements cross over too, so that the frame can hold them.
RAW_TAIL_MAX = 4096


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
