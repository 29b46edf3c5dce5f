"""The public coding API: :class:`Codec`, :func:`encode`, :func:`decode`, :func:`info`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import _adapt, _core
from ._core import InvalidArgumentError

PROFILES: tuple[str, ...] = tuple(_core.PROFILES)
DEFAULT_PROFILE = "lossless"
DEFAULT_CHUNK_SIZE: int = _core.DEFAULT_CHUNK_SIZE
DEFAULT_MAX_OUTPUT_BYTES: int = _core.DEFAULT_MAX_OUTPUT_BYTES
CONFIG_ID = "iota_codec"


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be at least {minimum}, not {value}")
    return value


class Codec:
    """Encoder and decoder settings.

    Args:
        profile: what to optimize for. ``"lossless"`` (bit-exact; the default).
        chunk_size: elements per independently coded chunk (default 262144). Chunks are
            coded in parallel and can be streamed; larger chunks spend less on tables.
        threads: worker threads. ``None`` or ``0`` uses one per core, ``1`` runs on the
            calling thread. The frame is identical for every value.
        max_output_bytes: the largest tensor :meth:`decode` will produce (default 4 GiB);
            a frame that declares more raises :class:`LimitExceededError` before anything
            is allocated. Raise it only for senders you trust.

    A ``Codec`` holds only settings: one instance can be shared by many threads.
    """

    __slots__ = ("_chunk_size", "_max_output_bytes", "_profile", "_threads")

    def __init__(
        self,
        profile: str = DEFAULT_PROFILE,
        *,
        chunk_size: int | None = None,
        threads: int | None = None,
        max_output_bytes: int | None = None,
    ) -> None:
        if not isinstance(profile, str) or profile.lower() not in PROFILES:
            raise InvalidArgumentError(
                f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}"
            )
        self._profile = profile.lower()
        self._chunk_size = (
            DEFAULT_CHUNK_SIZE if chunk_size is None else _check_int("chunk_size", chunk_size, 1)
        )
        self._threads = 0 if threads is None else _check_int("threads", threads, 0)
        self._max_output_bytes = (
            DEFAULT_MAX_OUTPUT_BYTES
            if max_output_bytes is None
            else _check_int("max_output_bytes", max_output_bytes, 0)
        )

    @property
    def profile(self) -> str:
        return self._profile

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def max_output_bytes(self) -> int:
        return self._max_output_bytes

    def encode(self, x: Any, *, dtype: Any = None, shape: Any = None) -> bytes:
        """Encodes ``x`` into a frame.

        ``x`` is a numpy array, a torch tensor, or any C-contiguous buffer given with
        ``dtype=`` (``"float32"``, ``"float16"``, ``"bfloat16"``) and optionally ``shape=``
        (default: one dimension). Non-contiguous inputs are copied once. A tensor on a CUDA
        device is copied to pinned host memory on its current stream first (see
        :mod:`iota_codec.torch`).
        """
        if _adapt.on_accelerator(x):
            from .torch._device import encode_on_device

            return encode_on_device(self, x, dtype=dtype, shape=shape)
        src = _adapt.as_source(x, dtype=dtype, shape=shape)
        return _core.encode(
            src.data,
            src.dtype,
            list(src.shape),
            profile=self._profile,
            chunk_size=self._chunk_size,
            threads=self._threads,
            hint=src.hint,
        )

    def decode(self, blob: Any, out: Any = None, *, device: Any = None) -> Any:
        """Decodes a frame.

        Returns the kind of object that was encoded: a torch tensor for a tensor (a numpy
        array if torch is not installed), otherwise a numpy array (bfloat16 as
        ``ml_dtypes.bfloat16``, or as uint16 bit patterns when ml_dtypes is missing). With
        ``out=`` (a C-contiguous numpy array or CPU tensor of the frame's dtype and element
        count; a uint16 array receives bfloat16 bits) the result is written there and ``out``
        is returned.

        With ``device=`` (e.g. ``"cuda:0"``) the result is a torch tensor on that device,
        whatever was encoded: the frame is decoded into pinned host memory and copied over
        on the device's current stream. ``out=`` may also be a tensor on such a device.
        """
        if device is not None or _adapt.on_accelerator(out):
            from .torch._device import decode_to_device

            return decode_to_device(self, blob, out, device)
        dtype, shape, container = _core.header(blob, max_output_bytes=self._max_output_bytes)
        shape = tuple(shape)
        if out is None:
            result, view = _adapt.allocate(dtype, shape, container)
        else:
            result, view = out, _adapt.output_view(out, dtype, shape)
        _core.decode_into(
            blob, view, threads=self._threads, max_output_bytes=self._max_output_bytes
        )
        return result

    def encode_stream(self, x: Any, *, dtype: Any = None, shape: Any = None) -> Iterator[bytes]:
        """Encodes ``x`` piece by piece: yields the header, then one chunk record at a time,
        each as soon as it is encoded, so that sending can start before encoding ends.
        ``b"".join(pieces) == encode(x)``. Keeps a reference to ``x`` until exhausted; do
        not modify ``x`` meanwhile."""
        src = _adapt.as_source(x, dtype=dtype, shape=shape)
        return _core.StreamEncoder(
            src.data,
            src.dtype,
            list(src.shape),
            profile=self._profile,
            chunk_size=self._chunk_size,
            threads=self._threads,
            hint=src.hint,
        )

    def decoder(self, out: Any = None) -> StreamDecoder:
        """A :class:`StreamDecoder` that decodes a frame from pieces as they arrive, with
        this codec's threads and limits."""
        return StreamDecoder(self, out=out)

    def get_config(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (numcodecs style, with ``"id"``)."""
        return {
            "id": CONFIG_ID,
            "profile": self._profile,
            "chunk_size": self._chunk_size,
            "threads": self._threads,
            "max_output_bytes": self._max_output_bytes,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        """The codec a :meth:`get_config` dict describes."""
        cfg = dict(config)
        cid = cfg.pop("id", CONFIG_ID)
        if cid != CONFIG_ID:
            raise InvalidArgumentError(f"config id {cid!r} is not {CONFIG_ID!r}")
        known = {"profile", "chunk_size", "threads", "max_output_bytes"}
        unknown = set(cfg) - known
        if unknown:
            raise InvalidArgumentError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**cfg)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "id")
        return f"Codec({args})"


class StreamDecoder:
    """Decodes a frame from pieces of any size, chunk by chunk as each arrives, so decoding
    overlaps the transfer::

        dec = codec.Codec().decoder()
        for piece in pieces:          # e.g. from a socket
            dec.feed(piece)           # decodes every chunk that is now complete
        y = dec.result()              # the tensor, once the whole frame is in

    The output (of the kind the frame names, or ``out=``) is allocated when the header
    arrives, after the output limit is checked; every check of :func:`decode` applies.
    """

    def __init__(self, codec: Codec | None = None, out: Any = None) -> None:
        c = codec or Codec()
        self._core = _core.StreamDecoder(threads=c.threads, max_output_bytes=c.max_output_bytes)
        self._out = out
        self._result: Any = None

    def feed(self, data: Any) -> int:
        """Takes the next bytes of the frame and decodes every chunk they complete; returns
        how many chunks this call decoded."""
        self._core.feed(data)
        if self._result is None:
            head = self._core.header()
            if head is None:
                return 0
            dtype, shape, container = head
            shape = tuple(shape)
            if self._out is None:
                result, view = _adapt.allocate(dtype, shape, container)
            else:
                result, view = self._out, _adapt.output_view(self._out, dtype, shape)
            self._core.set_output(view)
            self._result = result
        return self._core.decode_available()

    @property
    def header(self) -> dict[str, Any] | None:
        """``{"dtype", "shape", "container"}`` once the header has arrived, else None."""
        head = self._core.header()
        if head is None:
            return None
        return {"dtype": head[0], "shape": list(head[1]), "container": head[2]}

    @property
    def progress(self) -> tuple[int, int | None]:
        """(chunks decoded, chunks in all); the total is None before the header."""
        return self._core.progress()

    @property
    def done(self) -> bool:
        """Whether the whole tensor has been decoded."""
        return self._core.complete

    def result(self) -> Any:
        """The decoded tensor; raises :class:`CorruptFrameError` if the frame is incomplete."""
        self._core.finish()
        return self._result


def encode(
    x: Any,
    *,
    profile: str = DEFAULT_PROFILE,
    dtype: Any = None,
    shape: Any = None,
    chunk_size: int | None = None,
    threads: int | None = None,
) -> bytes:
    """Encodes ``x`` with a :class:`Codec` of the given settings (default: lossless)."""
    return Codec(profile, chunk_size=chunk_size, threads=threads).encode(
        x, dtype=dtype, shape=shape
    )


def decode(
    blob: Any,
    out: Any = None,
    *,
    threads: int | None = None,
    max_output_bytes: int | None = None,
    device: Any = None,
) -> Any:
    """Decodes a frame; see :meth:`Codec.decode`. Frames describe themselves, so no profile
    is needed."""
    return Codec(threads=threads, max_output_bytes=max_output_bytes).decode(
        blob, out=out, device=device
    )


def info(blob: Any) -> dict[str, Any]:
    """The frame's header and chunk table as a dict: ``format_version``, ``dtype``,
    ``shape``, ``container``, ``chunk_size``, ``n_chunks``, ``stages``, ``chunk_bytes``,
    ``header_bytes``, ``frame_bytes``, ``uncompressed_bytes`` and ``ratio``. Every checksum
    is verified; nothing is decoded."""
    return _core.info(blob)
