"""Custom operators ``torch.ops.iota_codec.encode`` and ``torch.ops.iota_codec.decode``.

Schemas::

    iota_codec::encode(Tensor x, str config) -> Tensor
    iota_codec::decode(Tensor frame, ScalarType dtype, SymInt[] shape, str config,
                       Device? device=None) -> Tensor

``config`` is the JSON of :meth:`iota_codec.Codec.get_config` (``""`` for the default
codec); an operator cannot take a Python object, and a string keeps the schema stable as
profiles gain parameters. ``encode`` returns the frame as a 1-D ``uint8`` CPU tensor (the
entropy coder runs on the host, so the frame is born there). ``decode`` takes the ``dtype``
and ``shape`` the receiver expects, because a traced graph must know the output's metadata
without reading the frame; a frame that disagrees raises
:class:`iota_codec.InvalidArgumentError`. The output goes to ``device`` (default: the
frame's device).

The frame's length depends on the data, so ``encode``'s fake (meta) kernel returns a tensor
of an unbacked dynamic size (``torch.library.get_ctx().new_dynamic_size()``). Both operators
pass ``torch.library.opcheck``.

Under ``torch.compile``: a function that calls ``encode`` and ``decode`` compiles as one
graph (``fullgraph=True`` works), the frame length being an unbacked symbolic size. What
cannot be traced is code that *branches* on the frame's length (``if frame.numel() > n``),
or turns it into a Python int (``frame.numel()`` used as an int, ``.tolist()``, ``.item()``):
that raises under ``fullgraph=True`` and is a graph break otherwise. Sending a frame over
:mod:`torch.distributed` is outside the graph in any case: compile the stage's compute and
call the send/recv functions of :mod:`iota_codec.torch` from eager code.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import torch

from .. import _core
from .._api import DEFAULT_PROFILE, Codec, _codec_for
from .._core import InvalidArgumentError
from ._device import as_device, from_host, host_buffer, to_host

#: The oldest PyTorch the torch layer runs on: ``torch.library.custom_op`` came in 2.4.
MIN_TORCH = (2, 4)

if torch.__version__ < MIN_TORCH:  # a TorchVersion compares with a tuple
    _least = ".".join(map(str, MIN_TORCH))
    raise ImportError(
        f"iota_codec.torch needs PyTorch {_least} or later; this is torch "
        f"{torch.__version__} (pip install -U 'torch>={_least}')"
    )

_CODED = (torch.float32, torch.float16, torch.bfloat16)


def as_codec(codec: Any) -> Codec:
    """A :class:`Codec` from a ``Codec``, a config dict, a profile name, or ``None``."""
    if codec is None:
        return _codec_for(DEFAULT_PROFILE, {})
    if isinstance(codec, Codec):
        return codec
    if isinstance(codec, dict):
        return Codec.from_config(codec)
    if isinstance(codec, str):
        return _codec_for(codec, {})  # made once per profile name
    raise InvalidArgumentError(
        f"codec must be an iota_codec.Codec, a config dict or a profile name, not "
        f"{type(codec).__name__}"
    )


def config_string(codec: Any) -> str:
    """The ``config`` argument of the operators for ``codec`` (anything :func:`as_codec`
    takes). Under ``torch.compile`` it is a constant of the graph, computed at trace time."""
    if isinstance(codec, Codec):
        # A string attribute, which torch.compile reads as a constant: torch 2.11 refuses an
        # object as the argument of a function marked constant (2.15 accepts it).
        return codec._config_json
    return _config_of(codec)


def _config_of(codec: Any) -> str:
    """:func:`config_string` of a profile name, config dict or ``None``."""
    return as_codec(codec)._config_json


# What torch.compiler.assume_constant_result(_config_of) does, without importing
# torch._dynamo (2-3 s) at import time; tests/test_torch_ops.py compiles through it.
_config_of._dynamo_marked_constant = True  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=256)
def codec_from_string(config: str) -> Codec:
    """The codec an operator's ``config`` string describes (cached)."""
    if not config:
        return as_codec(None)
    try:
        cfg = json.loads(config)
    except ValueError as e:
        raise InvalidArgumentError(f"config is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise InvalidArgumentError("config must be a JSON object")
    return Codec.from_config(cfg)


def _check_codable(dtype: torch.dtype) -> None:
    if dtype not in _CODED:
        raise InvalidArgumentError(
            f"unsupported tensor dtype {dtype}: iota-codec codes torch.float32, "
            "torch.float16 and torch.bfloat16"
        )


def encode_tensor(x: torch.Tensor, codec: Codec) -> torch.Tensor:
    """Encodes ``x`` (any device) into a frame held in a 1-D ``uint8`` CPU tensor."""
    _check_codable(x.dtype)
    blob = codec.encode(x.detach())
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


def frame_header(frame: torch.Tensor, codec: Codec) -> tuple[torch.dtype, tuple[int, ...]]:
    """The dtype and shape a frame (a ``uint8`` CPU tensor) decodes to; checks the output
    limit."""
    dtype, shape, _ = _core.header(_frame_bytes(frame), limits=codec.limits)
    return getattr(torch, dtype), tuple(shape)


def _frame_bytes(frame: torch.Tensor) -> Any:
    if not isinstance(frame, torch.Tensor):
        raise InvalidArgumentError(f"frame must be a uint8 tensor, not {type(frame).__name__}")
    if frame.dtype != torch.uint8 or frame.dim() != 1:
        raise InvalidArgumentError(
            f"frame must be a 1-D uint8 tensor, not {frame.dim()}-D {frame.dtype}"
        )
    return to_host(frame).numpy()


def decode_frame(
    frame: torch.Tensor,
    codec: Codec,
    *,
    dtype: torch.dtype | None = None,
    shape: Sequence[int] | None = None,
    device: Any = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decodes a frame (a 1-D ``uint8`` tensor on any device) into a new torch tensor on
    ``device`` (default CPU), or into ``out``. With ``dtype``/``shape`` given, a frame that
    holds something else raises :class:`InvalidArgumentError` before decoding."""
    buf = _frame_bytes(frame)
    fdtype, fshape = frame_header(frame, codec)
    if dtype is not None and fdtype != dtype:
        raise InvalidArgumentError(f"the frame holds {fdtype}, expected {dtype}")
    if shape is not None and tuple(int(d) for d in shape) != fshape:
        raise InvalidArgumentError(f"the frame holds shape {fshape}, expected {tuple(shape)}")
    if out is not None:
        if out.dtype != fdtype or tuple(out.shape) != fshape:
            raise InvalidArgumentError(
                f"out is {out.dtype} of shape {tuple(out.shape)}; the frame holds {fdtype} "
                f"of shape {fshape}"
            )
        if out.device.type == "cpu" and out.is_contiguous():
            codec.decode(buf, out=out.detach())
            return out
        dev = out.device
    else:
        dev = as_device(device) or torch.device("cpu")
    host = host_buffer(fshape, fdtype, dev)
    codec.decode(buf, out=host)
    return from_host(host, dev, None if out is None else out.detach())


# --- the operators ------------------------------------------------------------------------


# The schemas are spelt out: torch 2.4 infers none from this module's annotations, which
# `from __future__ import annotations` leaves as strings.
@torch.library.custom_op(
    "iota_codec::encode", mutates_args=(), schema="(Tensor x, str config) -> Tensor"
)
def _encode_op(x: torch.Tensor, config: str) -> torch.Tensor:
    return encode_tensor(x, codec_from_string(config))


@_encode_op.register_fake
def _encode_fake(x: torch.Tensor, config: str) -> torch.Tensor:
    _check_codable(x.dtype)
    codec_from_string(config)  # a bad config fails at trace time too
    n = torch.library.get_ctx().new_dynamic_size()
    return torch.empty((n,), dtype=torch.uint8, device="cpu")


@torch.library.custom_op(
    "iota_codec::decode",
    mutates_args=(),
    schema="(Tensor frame, ScalarType dtype, SymInt[] shape, str config, "
    "Device? device=None) -> Tensor",
)
def _decode_op(
    frame: torch.Tensor,
    dtype: torch.dtype,
    shape: Sequence[int],
    config: str,
    device: torch.device | None = None,
) -> torch.Tensor:
    return decode_frame(
        frame,
        codec_from_string(config),
        dtype=dtype,
        shape=shape,
        device=frame.device if device is None else device,
    )


@_decode_op.register_fake
def _decode_fake(
    frame: torch.Tensor,
    dtype: torch.dtype,
    shape: Sequence[int],
    config: str,
    device: torch.device | None = None,
) -> torch.Tensor:
    _check_codable(dtype)
    codec_from_string(config)
    if frame.dtype != torch.uint8 or frame.dim() != 1:
        raise InvalidArgumentError("frame must be a 1-D uint8 tensor")
    return torch.empty(tuple(shape), dtype=dtype, device=frame.device if device is None else device)


def encode(x: torch.Tensor, codec: Any = None) -> torch.Tensor:
    """Encodes ``x`` (a float32/float16/bfloat16 tensor on any device) into a frame: a 1-D
    ``uint8`` CPU tensor. Calls the ``iota_codec::encode`` operator, so it can be traced by
    ``torch.compile``. ``codec`` is a :class:`iota_codec.Codec`, a config dict or a profile
    name (default: lossless)."""
    return torch.ops.iota_codec.encode(x, config_string(codec))


def decode(
    frame: torch.Tensor,
    dtype: torch.dtype,
    shape: Sequence[int],
    codec: Any = None,
    *,
    device: Any = None,
) -> torch.Tensor:
    """Decodes a frame made by :func:`encode` into a new tensor of ``dtype`` and ``shape``
    (which the frame must hold) on ``device`` (default: the frame's device). Calls the
    ``iota_codec::decode`` operator. ``codec`` supplies the decoding settings (threads,
    ``max_output_bytes``); the frame itself says how it was coded."""
    return torch.ops.iota_codec.decode(
        frame, dtype, list(shape), config_string(codec), as_device(device)
    )
