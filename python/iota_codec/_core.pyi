"""Type stubs for the compiled core (``iota_codec._core``)."""

from typing import Any

from typing_extensions import Buffer

FORMAT_VERSION: int
DEFAULT_CHUNK_SIZE: int
DEFAULT_MAX_OUTPUT_BYTES: int
PROFILES: list[str]
__version__: str

class CodecError(ValueError): ...
class InvalidArgumentError(CodecError): ...
class CorruptFrameError(CodecError): ...
class ChecksumMismatchError(CorruptFrameError): ...
class UnsupportedVersionError(CodecError): ...
class LimitExceededError(CodecError): ...

def encode(
    data: Buffer,
    dtype: str,
    shape: list[int],
    *,
    profile: str = "lossless",
    chunk_size: int = ...,
    threads: int = 0,
    hint: int = 0,
) -> bytes: ...
def decode_into(
    frame: Buffer,
    out: Buffer,
    *,
    threads: int = 0,
    max_output_bytes: int = ...,
) -> None: ...
def header(frame: Buffer, *, max_output_bytes: int = ...) -> tuple[str, list[int], str]: ...
def info(frame: Buffer) -> dict[str, Any]: ...
def simd_level() -> str: ...
