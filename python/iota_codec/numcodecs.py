"""iota-codec as a `numcodecs <https://numcodecs.readthedocs.io>`_ codec, so that Zarr
arrays (and anything else that takes numcodecs codecs) can store float tensors with it.

The codec is registered under the id ``"iota_codec"`` through the ``numcodecs.codecs``
entry point, so once iota-codec is installed::

    import numcodecs
    codec = numcodecs.get_codec({"id": "iota_codec", "profile": "lossless"})

finds it without importing anything first. With Zarr (format 2 arrays, where a numcodecs
codec is the compressor)::

    zarr.create_array(store, shape=..., chunks=..., dtype="float32", zarr_format=2,
                      compressors=IotaCodec())

``encode`` takes float32, float16 or ``ml_dtypes.bfloat16`` arrays (frames remember dtype
and shape); ``decode`` returns the array, or copies it into ``out``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numcodecs.abc import Codec as _NumcodecsCodec
from numcodecs.compat import ensure_ndarray, ndarray_copy

from ._api import CONFIG_ID, Codec

__all__ = ["IotaCodec"]


class IotaCodec(_NumcodecsCodec):
    """The numcodecs face of :class:`iota_codec.Codec`: the same arguments, the same
    config (``get_config`` / ``from_config``)."""

    codec_id = CONFIG_ID

    def __init__(self, profile: str = "lossless", **settings: Any) -> None:
        self._codec = Codec(profile, **settings)

    @property
    def codec(self) -> Codec:
        """The :class:`iota_codec.Codec` doing the work."""
        return self._codec

    def encode(self, buf: Any) -> bytes:
        return self._codec.encode(ensure_ndarray(buf))

    def decode(self, buf: Any, out: Any = None) -> Any:
        arr = self._codec.decode(_as_bytes(buf))
        if out is not None:
            return ndarray_copy(arr, out)
        return arr

    def get_config(self) -> dict[str, Any]:
        return self._codec.get_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> IotaCodec:
        cfg = dict(config)
        cfg.pop("id", None)
        return cls(**cfg)

    def __repr__(self) -> str:
        return repr(self._codec).replace("Codec(", "IotaCodec(", 1)


def _as_bytes(buf: Any) -> Any:
    if isinstance(buf, np.ndarray) and not buf.flags.c_contiguous:
        return np.ascontiguousarray(buf)
    return buf
