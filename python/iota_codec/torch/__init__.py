"""The torch layer: iota-codec where a training loop sends and receives tensors.

- Custom operators (``torch.ops.iota_codec.encode`` / ``.decode``) and their wrappers
  :func:`encode` and :func:`decode`: tensor in, ``uint8`` frame tensor out and back; they
  pass ``torch.library.opcheck`` and trace under ``torch.compile``.
- CUDA tensors are coded through pinned host memory with stream-ordered copies; decoding
  takes a ``device=`` (also :meth:`iota_codec.Codec.decode`).

Importing this module registers the operators. ``import iota_codec`` alone never imports
torch.
"""

from ._device import quantize_on_device
from ._ops import config_string, decode, encode

__all__ = [
    "config_string",
    "decode",
    "encode",
    "quantize_on_device",
]
