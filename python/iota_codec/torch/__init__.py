# ruff: noqa: E402
"""The torch layer: iota-codec where a training loop sends and receives tensors.

- Custom operators (``torch.ops.iota_codec.encode`` / ``.decode``) and their wrappers
  :func:`encode` and :func:`decode`: tensor in, ``uint8`` frame tensor out and back; they
  pass ``torch.library.opcheck`` and trace under ``torch.compile``.
- CUDA tensors are coded through pinned host memory with stream-ordered copies; with a
  fixed-rate block format they are quantized on the GPU first, so that only codes and scales
  cross (:func:`quantize_on_device`); decoding takes a ``device=`` (also
  :meth:`iota_codec.Codec.decode`).
- Compressed point-to-point messages over :mod:`torch.distributed`: :func:`send`,
  :func:`recv`, :func:`isend`, :func:`irecv` and the per-peer :class:`Channel`.
- The autograd boundary of a pipeline stage: :func:`send_activation` and
  :func:`recv_activation` (compressed activations forward, compressed gradients back).
- A DDP communication hook: :func:`iota_hook` with its :class:`IotaHookState`.

Importing this module registers the operators. ``import iota_codec`` alone never imports
torch. It needs PyTorch 2.4 or later (:data:`MIN_TORCH`); an older one is refused on import.
"""

from .._adapt import require_torch

require_torch(__name__)  # before the imports below: they import torch

from ._autograd import recv_activation, send_activation
from ._ddp import HookStats, IotaHookState, iota_hook
from ._device import quantize_on_device
from ._ops import MIN_TORCH, config_string, decode, encode
from ._p2p import (
    Channel,
    ChannelStats,
    RecvWork,
    SendWork,
    TransferError,
    irecv,
    isend,
    recv,
    send,
)

__all__ = [
    "MIN_TORCH",
    "Channel",
    "ChannelStats",
    "HookStats",
    "IotaHookState",
    "RecvWork",
    "SendWork",
    "TransferError",
    "config_string",
    "decode",
    "encode",
    "iota_hook",
    "irecv",
    "isend",
    "quantize_on_device",
    "recv",
    "recv_activation",
    "send",
    "send_activation",
]
