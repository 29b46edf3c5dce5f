"""iota-codec: fast compression of the activations and gradients that cross pipeline-stage
boundaries in distributed training.

>>> import numpy as np, iota_codec as codec
>>> x = np.linspace(-1, 1, 1000, dtype=np.float32)
>>> blob = codec.encode(x)
>>> bool((codec.decode(blob) == x).all())
True
"""

from ._api import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CHUNKS,
    DEFAULT_MAX_OUTPUT_BYTES,
    FORMATS,
    MX_FORMATS,
    PROFILES,
    SCALES,
    TRANSFORMS,
    Codec,
    StreamDecoder,
    decode,
    encode,
    info,
)
from ._core import (
    FORMAT_VERSION,
    ChecksumMismatchError,
    CodecError,
    CorruptFrameError,
    InvalidArgumentError,
    LimitExceededError,
    NonFiniteError,
    RejectedValueError,
    SessionMismatchError,
    UnsupportedVersionError,
    __version__,
    simd_level,
)
from ._session import Session

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_CHUNKS",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "FORMATS",
    "FORMAT_VERSION",
    "MX_FORMATS",
    "PROFILES",
    "SCALES",
    "TRANSFORMS",
    "ChecksumMismatchError",
    "Codec",
    "CodecError",
    "CorruptFrameError",
    "InvalidArgumentError",
    "LimitExceededError",
    "NonFiniteError",
    "RejectedValueError",
    "Session",
    "SessionMismatchError",
    "StreamDecoder",
    "UnsupportedVersionError",
    "__version__",
    "decode",
    "encode",
    "info",
    "simd_level",
]
