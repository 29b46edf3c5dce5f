"""The public coding API: :class:`Codec`, :func:`encode`, :func:`decode`, :func:`info`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from . import _adapt, _core
from ._core import InvalidArgumentError

PROFILES: tuple[str, ...] = tuple(_core.PROFILES)
DEFAULT_PROFILE = "lossless"
DEFAULT_CHUNK_SIZE: int = _core.DEFAULT_CHUNK_SIZE
DEFAULT_MAX_OUTPUT_BYTES: int = _core.DEFAULT_MAX_OUTPUT_BYTES
DEFAULT_MAX_CHUNKS: int = _core.DEFAULT_MAX_CHUNKS
CONFIG_ID = "iota_codec"

#: Element formats of fixed-rate quantization (``format=``).
FORMATS: tuple[str, ...] = tuple(_core.ELEMENTS)
#: Block scale encodings of fixed-rate quantization (``scale=``).
SCALES: tuple[str, ...] = tuple(_core.SCALES)
#: OCP Microscaling (MX v1.0) formats: element, with blocks of 32 and E8M0 scales.
MX_FORMATS = {
    "mxint8": "int8",
    "mxfp8": "e4m3",
    "mxfp8_e4m3": "e4m3",
    "mxfp8_e5m2": "e5m2",
    "mxfp4": "e2m1",
}

# The coding settings, in the order get_config lists them.
_SETTINGS: tuple[str, ...] = tuple(_core.SETTING_KEYS)
_FIXED = ("format", "scale", "entropy")
_BOUNDS = ("error", "max_abs_error", "target_bits")
_BOUNDED = (*_BOUNDS, "step", "transform", "rank", "contexts")
#: Transform coding choices (``transform=``) of error-bounded coding.
TRANSFORMS = ("none", "identity", "pca", "auto")


#: The environment variable that picks where fixed-rate formats are quantized: ``auto`` (the
#: default: on the device for CUDA tensors), ``on`` (in torch ops for every torch tensor,
#: CPU tensors included: how the tests drive the device path without a GPU) or ``off``
#: (always copy the raw tensor and quantize on the host). See
#: :mod:`iota_codec.torch._device`.
DEVICE_QUANTIZE_ENV = "IOTA_CODEC_DEVICE_QUANTIZE"
_ON = ("on", "1", "true", "yes")
_OFF = ("off", "0", "false", "no")


def device_quantize_mode(value: Any = None) -> str:
    """``"on"``, ``"off"`` or ``"auto"``: ``value`` (``True``/``False``/``None`` or one of
    those names), or for ``None`` the :data:`DEVICE_QUANTIZE_ENV` environment variable.
    Anything else raises :class:`InvalidArgumentError`."""
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


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be at least {minimum}, not {value}")
    return value


def _mode(settings: dict[str, Any]) -> str:
    if settings["format"] is not None:
        return "fixed"
    if any(settings[k] is not None for k in _BOUNDS):
        return "bounded"
    return "lossless"


def _resolve(profile: str, given: dict[str, Any]) -> dict[str, Any]:
    """The coding settings of ``profile`` with the explicit parameters ``given`` (those not
    ``None``) laid over it. Parameters that pick a mode (``bits``/``format`` for fixed rate,
    ``error``/``max_abs_error``/``target_bits`` for error-bounded) replace a profile of
    another mode; the rest refine the mode's settings."""
    given = {k: v for k, v in given.items() if v is not None}
    for k in ("error", "max_abs_error", "target_bits"):
        if k in given:
            if isinstance(given[k], bool) or not isinstance(given[k], (int, float)):
                raise InvalidArgumentError(f"{k} must be a number, not {type(given[k]).__name__}")
            given[k] = float(given[k])
    for k in ("block", "seed"):
        if k in given:
            _check_int(k, given[k], 0)
    if "rank" in given:
        _check_int("rank", given["rank"], 1)
    for k in ("format", "scale", "step", "rounding", "nonfinite", "transform"):
        if k in given:
            if not isinstance(given[k], str):
                raise InvalidArgumentError(f"{k} must be a string, not {type(given[k]).__name__}")
            given[k] = given[k].lower()
    for k in ("entropy", "contexts"):
        if k in given and not isinstance(given[k], bool):
            raise InvalidArgumentError(f"{k} must be True or False")
    bits = given.pop("bits", None)
    fmt = given.get("format")
    if fmt in MX_FORMATS:
        if given.get("block", 32) != 32 or given.get("scale", "e8m0") != "e8m0":
            raise InvalidArgumentError(
                f"format={fmt!r} is an OCP MX format: blocks of 32 with e8m0 scales; for other "
                f"blocks or scales use format={MX_FORMATS[fmt]!r} with block= and scale="
            )
        given.update(format=MX_FORMATS[fmt], block=32, scale="e8m0")
        fmt = given["format"]
    if bits is not None:
        _check_int("bits", bits, 0)
        if fmt is None:
            if bits not in (2, 3, 4, 8):
                raise InvalidArgumentError(
                    f"bits={bits}: integer codes have 8, 4, 3 or 2 bits (for 8-bit floats use "
                    "format='e4m3' or 'e5m2', for 4-bit floats format='e2m1')"
                )
            given["format"] = f"int{bits}"
        else:
            width = {"e4m3": 8, "e5m2": 8, "e2m1": 4}.get(fmt) or int(fmt.removeprefix("int") or 0)
            if width != bits:
                raise InvalidArgumentError(
                    f"bits={bits} contradicts format={fmt!r}, which has {width}-bit codes"
                )
    fixed = [k for k in _FIXED if k in given]
    bounded = [k for k in _BOUNDED if k in given]
    if fixed and bounded:
        raise InvalidArgumentError(
            f"{fixed[0]}= (fixed-rate quantization) and {bounded[0]}= (error-bounded "
            "quantization) exclude each other: pass parameters of one mode"
        )
    base = dict(_core.profile_settings(profile))
    base_mode = _mode(base)
    if "format" in given:
        mode = "fixed"
    elif any(k in given for k in _BOUNDS):
        mode = "bounded"
    elif fixed and base_mode != "fixed":
        raise InvalidArgumentError(
            f"{fixed[0]}= applies to fixed-rate quantization: also pass bits= or format="
        )
    elif bounded and base_mode != "bounded":
        raise InvalidArgumentError(
            f"{bounded[0]}= applies to error-bounded quantization: also pass error=, "
            "max_abs_error= or target_bits="
        )
    else:
        mode = base_mode
    if mode != base_mode:
        base = dict.fromkeys(_SETTINGS)
    if any(k in given for k in _BOUNDS):
        base.update(dict.fromkeys(_BOUNDS))
    settings = {**base, **given}
    if mode == "bounded":
        if "block" in given and "step" not in given:
            settings["step"] = "block"
        settings["step"] = settings["step"] or "global"
        if settings["step"] != "block" and "block" not in given:
            settings["block"] = None
        if settings.get("transform") == "none":
            settings["transform"] = None
        if settings.get("rank") is not None and settings.get("transform") is None:
            settings["transform"] = "auto"
    if mode == "lossless":
        if given.get("nonfinite") == "keep":
            settings["nonfinite"] = None  # lossless coding always carries them
    else:
        settings["rounding"] = settings["rounding"] or "nearest"
        settings["nonfinite"] = settings["nonfinite"] or "error"
        if settings["rounding"] == "nearest" and "seed" not in given:
            settings["seed"] = None
    return dict(_core.check_settings(settings))


_LIMITS = ("max_output_bytes", "max_chunks", "max_ndim", "reject_nonfinite", "max_abs")


def _decode_limits(
    max_output_bytes: Any, max_chunks: Any, max_ndim: Any, reject_nonfinite: Any, max_abs: Any
) -> dict[str, Any]:
    """Checks the decoder-side settings and returns them as the core takes them."""
    if not isinstance(reject_nonfinite, bool):
        raise InvalidArgumentError(
            f"reject_nonfinite must be True or False, not {reject_nonfinite!r}"
        )
    if max_abs is not None:
        if isinstance(max_abs, bool) or not isinstance(max_abs, int | float):
            raise InvalidArgumentError(f"max_abs must be a number or None, not {max_abs!r}")
        if not max_abs >= 0:
            raise InvalidArgumentError(f"max_abs must be a non-negative number, not {max_abs}")
        max_abs = float(max_abs)
    ndim = 32 if max_ndim is None else _check_int("max_ndim", max_ndim, 0)
    if ndim > 32:
        raise InvalidArgumentError(f"max_ndim is at most 32 (the format's limit), not {ndim}")
    return {
        "max_output_bytes": DEFAULT_MAX_OUTPUT_BYTES
        if max_output_bytes is None
        else _check_int("max_output_bytes", max_output_bytes, 0),
        "max_chunks": DEFAULT_MAX_CHUNKS
        if max_chunks is None
        else _check_int("max_chunks", max_chunks, 1),
        "max_ndim": ndim,
        "reject_nonfinite": reject_nonfinite,
        "max_abs": max_abs,
    }


#: Compact JSON of each resolved configuration (profile, settings, chunking, threads, limits)
#: that a :class:`Codec` was made with; cleared when it grows past ``_CONFIG_JSON_MAX``
#: entries.
_CONFIG_JSON: dict[tuple[Any, ...], str] = {}
_CONFIG_JSON_MAX = 1024


class Codec:
    """Encoder and decoder settings.

    Args:
        profile: what to optimize for: ``"lossless"`` (bit-exact; the default), ``"fast"``
            (fixed-rate int8 blocks), ``"balanced"`` (1% relative error, entropy-coded) or
            ``"max"`` (5% relative error). The README lists what each costs and gives.
            Explicit parameters below override the profile's.

        Fixed-rate quantization (``bits=`` or ``format=`` selects it):

        bits: integer code width, 8, 4, 3 or 2 (shorthand for ``format="int<bits>"``).
        format: element format: ``"int8"``, ``"int4"``, ``"int3"``, ``"int2"``, ``"e4m3"``,
            ``"e5m2"`` (FP8), ``"e2m1"`` (FP4); or an OCP MX format, ``"mxint8"``,
            ``"mxfp8"`` (= ``"mxfp8_e4m3"``), ``"mxfp8_e5m2"``, ``"mxfp4"`` (blocks of 32,
            E8M0 scales).
        block: elements per block, 16 to 256 (also the step's block with ``step="block"``).
        scale: per-block scale: ``"e8m0"`` (a power of two, 1 byte, MX), ``"f16"`` or
            ``"bf16"`` (2 bytes).
        entropy: rANS-code the element codes instead of packing them (smaller, not fixed).

        Error-bounded quantization (one of these selects it):

        error: relative RMSE the decoded tensor may have, ``||x - y|| / ||x||`` (0.01 = 1%).
        max_abs_error: largest absolute error of any element.
        target_bits: bits per element the whole frame may take.
        step: ``"global"`` (one step: the best total error for the bits; default),
            ``"channel"`` (a step per last-dimension channel, proportional to its RMS) or
            ``"block"`` (per ``block`` consecutive elements).
        transform: transform coding for ``error=`` bounds, on the tensor's rows (its last
            dimension is the channels): ``"pca"`` projects them onto the principal directions
            of the channels (sent in the frame, truncated to those above the quantizer's
            noise) and quantizes the coefficients with one step; ``"identity"`` keeps the
            channels but gives groups of them their own entropy-coder tables; ``"auto"``
            picks the smallest of these and plain coding; ``"none"``/``None`` (default) is
            plain coding. NaN/Inf and tensors of more than 1024 channels get plain coding.
        rank: the most basis vectors (principal directions) a transform keeps: a low-rank
            projection. Implies ``transform="auto"`` unless given.
        contexts: ``True`` (default) lets a chunk of a tensor of two dimensions or more
            code its rows' codes with a table per class of rows (format version 2) where that
            makes it smaller: rows of different scales, such as a gradient's tokens, code
            6-9% smaller, encoding about a fifth slower there. ``False`` skips them
            and the check (about 0.05 ns per element). No effect with ``transform=``.

        Both lossy modes:

        rounding: ``"nearest"`` (to nearest even; default) or ``"stochastic"`` (unbiased,
            reproducible from ``seed`` and each element's index: for gradients).
        seed: the stochastic-rounding seed (default 0).
        nonfinite: ``"error"`` (default: NaN/Inf raise :class:`NonFiniteError`) or
            ``"keep"`` (carried exactly, bit for bit).

        chunk_size: elements per independently coded chunk (default 262144). Chunks are
            coded in parallel and can be streamed; larger chunks spend less on tables.
        threads: worker threads. ``None`` or ``0`` uses one per core, ``1`` runs on the
            calling thread. The frame is identical for every value.

        Decoding untrusted frames (a peer may be hostile; these never change the bytes an
        encoder writes):

        max_output_bytes: the largest tensor :meth:`decode` will produce (default 4 GiB);
            a frame that declares more raises :class:`LimitExceededError` before anything
            is allocated. Raise it only for senders you trust.
        max_chunks: the most chunks a frame may have (default 2**20); each costs a table
            build, so a frame of many tiny chunks costs CPU out of proportion to its size.
        max_ndim: the most dimensions a frame may declare (default 32, the format's own).
        reject_nonfinite: refuse a decoded tensor holding NaN or Inf with
            :class:`RejectedValueError` (default False).
        max_abs: refuse a decoded tensor holding a value of larger magnitude (default None;
            implies rejecting non-finite values). Checked chunk by chunk while the data is
            in cache: cheap enough to leave on.

    Bad combinations raise :class:`InvalidArgumentError` saying what to change. A ``Codec``
    holds only settings: one instance can be shared by many threads.
    """

    __slots__ = ("_chunk_size", "_config_json", "_limits", "_profile", "_settings", "_threads")

    def __init__(
        self,
        profile: str = DEFAULT_PROFILE,
        *,
        bits: int | None = None,
        format: str | None = None,
        block: int | None = None,
        scale: str | None = None,
        entropy: bool | None = None,
        error: float | None = None,
        max_abs_error: float | None = None,
        target_bits: float | None = None,
        step: str | None = None,
        transform: str | None = None,
        rank: int | None = None,
        contexts: bool | None = None,
        rounding: str | None = None,
        seed: int | None = None,
        nonfinite: str | None = None,
        chunk_size: int | None = None,
        threads: int | None = None,
        max_output_bytes: int | None = None,
        max_chunks: int | None = None,
        max_ndim: int | None = None,
        reject_nonfinite: bool = False,
        max_abs: float | None = None,
    ) -> None:
        if not isinstance(profile, str) or profile.lower() not in PROFILES:
            raise InvalidArgumentError(
                f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}"
            )
        self._profile = profile.lower()
        self._settings = _resolve(
            self._profile,
            {
                "bits": bits,
                "format": format,
                "block": block,
                "scale": scale,
                "entropy": entropy,
                "error": error,
                "max_abs_error": max_abs_error,
                "target_bits": target_bits,
                "step": step,
                "transform": transform,
                "rank": rank,
                "contexts": contexts,
                "rounding": rounding,
                "seed": seed,
                "nonfinite": nonfinite,
            },
        )
        self._chunk_size = (
            DEFAULT_CHUNK_SIZE if chunk_size is None else _check_int("chunk_size", chunk_size, 1)
        )
        self._threads = 0 if threads is None else _check_int("threads", threads, 0)
        self._limits = _decode_limits(
            max_output_bytes, max_chunks, max_ndim, reject_nonfinite, max_abs
        )
        # The config as compact JSON, the torch operators' ``config`` argument: a plain
        # string attribute, which torch.compile reads as a constant at trace time. json.dumps
        # costs about as much as the rest of __init__, so it runs once per configuration.
        key = (self._profile, *self._settings.items(), self._chunk_size, self._threads)
        key += tuple(self._limits.items())
        text = _CONFIG_JSON.get(key)
        if text is None:
            if len(_CONFIG_JSON) >= _CONFIG_JSON_MAX:
                _CONFIG_JSON.clear()
            text = json.dumps(self.get_config(), sort_keys=True, separators=(",", ":"))
            _CONFIG_JSON[key] = text
        self._config_json = text

    @property
    def profile(self) -> str:
        return self._profile

    @property
    def mode(self) -> str:
        """``"lossless"``, ``"fixed"`` (fixed-rate quantization) or ``"bounded"``
        (error-bounded quantization)."""
        return _mode(self._settings)

    @property
    def settings(self) -> dict[str, Any]:
        """The coding settings in effect (the profile's, overridden by explicit ones)."""
        return dict(self._settings)

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def max_output_bytes(self) -> int:
        return self._limits["max_output_bytes"]

    @property
    def limits(self) -> dict[str, Any]:
        """The decoder's limits and value checks: ``max_output_bytes``, ``max_chunks``,
        ``max_ndim``, ``reject_nonfinite``, ``max_abs``."""
        return dict(self._limits)

    def encode(self, x: Any, *, dtype: Any = None, shape: Any = None) -> bytes:
        """Encodes ``x`` into a frame.

        ``x`` is a numpy array, a torch tensor, or any C-contiguous buffer given with
        ``dtype=`` (``"float32"``, ``"float16"``, ``"bfloat16"``) and optionally ``shape=``
        (default: one dimension). Non-contiguous inputs are copied once. A tensor on a CUDA
        device is copied to pinned host memory on its current stream first; with a
        fixed-rate block format it is quantized on the device and only its codes and scales
        are copied (the frame is the same; see :mod:`iota_codec.torch._device`).

        The buffer a frame is coded into (before it is copied into the returned ``bytes``)
        is kept for the next call (up to four such buffers, 512 MiB in all, per process):
        encoding a tensor of the same size every step then costs no page faults there.
        """
        if _adapt.is_tensor(x) and (x.device.type != "cpu" or device_quantize_mode() == "on"):
            from .torch._device import encode_on_device

            return encode_on_device(self, x, dtype=dtype, shape=shape)
        return self._encode_host(x, dtype=dtype, shape=shape)

    def _encode_host(self, x: Any, *, dtype: Any = None, shape: Any = None) -> bytes:
        """:meth:`encode` of an object in host memory, coded there."""
        src = _adapt.as_source(x, dtype=dtype, shape=shape)
        return _core.encode(
            src.data,
            src.dtype,
            list(src.shape),
            profile=self._profile,
            settings=self._settings,
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
        is returned (when decoding fails, ``out`` may hold partly decoded data). Lossy frames
        decode to the dtype and shape that was encoded. Reusing one ``out`` from call to call
        is faster for large tensors than a new result each time: no page faults, and from 4
        MiB on the decoder prefetches its pages for writing.

        With ``device=`` (e.g. ``"cuda:0"``) the result is a torch tensor on that device,
        whatever was encoded: the frame is decoded into pinned host memory and copied over
        on the device's current stream. ``out=`` may also be a tensor on such a device.
        """
        if device is not None or _adapt.on_accelerator(out):
            from .torch._device import decode_to_device

            return decode_to_device(self, blob, out, device)
        result, view = _adapt.decode_target(_core.header(blob, limits=self._limits), out)
        _core.decode_into(blob, view, threads=self._threads, limits=self._limits)
        return result

    def encode_stream(self, x: Any, *, dtype: Any = None, shape: Any = None) -> Iterator[bytes]:
        """Encodes ``x`` piece by piece: yields the header, then one chunk record at a time,
        each as soon as it is encoded, so that sending can start before encoding ends.
        ``b"".join(pieces) == encode(x)``. Keeps a reference to ``x`` until exhausted; do
        not modify ``x`` meanwhile. (Error-bounded modes code the whole frame before the first
        piece: their step is final only once every chunk's decoded error is known.)"""
        src = _adapt.as_source(x, dtype=dtype, shape=shape)
        return _core.StreamEncoder(
            src.data,
            src.dtype,
            list(src.shape),
            profile=self._profile,
            settings=self._settings,
            chunk_size=self._chunk_size,
            threads=self._threads,
            hint=src.hint,
        )

    def decoder(self, out: Any = None) -> StreamDecoder:
        """A :class:`StreamDecoder` that decodes a frame from pieces as they arrive, with
        this codec's threads and limits."""
        return StreamDecoder(self, out=out)

    def session(
        self,
        session_id: int = 0,
        *,
        refresh: int = 2,
        decay: float = 0.7,
        error_feedback: bool = False,
    ) -> Any:
        """One end of a shared-basis session with these settings (an ``error=`` bound): see
        :class:`iota_codec.Session`."""
        from ._session import Session

        return Session(
            self,
            session_id=session_id,
            refresh=refresh,
            decay=decay,
            error_feedback=error_feedback,
        )

    def get_config(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (numcodecs style, with ``"id"``): the profile,
        every coding setting in effect (``None`` where it does not apply), and the chunking,
        thread and limit settings."""
        return {
            "id": CONFIG_ID,
            "profile": self._profile,
            **self._settings,
            "chunk_size": self._chunk_size,
            "threads": self._threads,
            **self._limits,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        """The codec a :meth:`get_config` dict describes."""
        cfg = dict(config)
        cid = cfg.pop("id", CONFIG_ID)
        if cid != CONFIG_ID:
            raise InvalidArgumentError(f"config id {cid!r} is not {CONFIG_ID!r}")
        known = {"profile", "bits", *_SETTINGS, "chunk_size", "threads", *_LIMITS}
        unknown = set(cfg) - known
        if unknown:
            raise InvalidArgumentError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**cfg)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in self.get_config().items() if k != "id" and v is not None
        )
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
        self._core = _core.StreamDecoder(threads=c.threads, limits=c._limits)
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
            result, view = _adapt.decode_target(head, self._out)
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


#: The codecs :func:`encode` and :func:`decode` made, by their arguments: building a
#: :class:`Codec` (resolving and checking its settings) costs about as much as coding a
#: tensor of a thousand elements. Cleared when it grows past ``_CODECS_MAX`` entries.
_CODECS: dict[tuple[Any, ...], Codec] = {}
_CODECS_MAX = 256
#: The argument types a cache key may hold; anything else builds its Codec every time.
_KEY_TYPES = (str, int, bool, float, type(None))


def _codec_for(profile: Any, kwargs: dict[str, Any]) -> Codec:
    """``Codec(profile, **kwargs)``, made once per distinct set of arguments. Keys hold each
    argument's type and, for floats, its exact bits: ``True``, ``1`` and ``1.0`` compare
    equal, as do ``0.0`` and ``-0.0``, but they are not the same argument (``entropy=1`` is
    an error where ``entropy=True`` is not)."""
    items = [("profile", profile), *sorted(kwargs.items())]
    if not all(type(v) in _KEY_TYPES for _, v in items):
        return Codec(profile, **kwargs)
    key = tuple((k, type(v), v.hex() if type(v) is float else v) for k, v in items)
    codec = _CODECS.get(key)
    if codec is None:
        codec = Codec(profile, **kwargs)
        if len(_CODECS) >= _CODECS_MAX:
            _CODECS.clear()
        _CODECS[key] = codec
    return codec


def encode(
    x: Any,
    *,
    profile: str = DEFAULT_PROFILE,
    dtype: Any = None,
    shape: Any = None,
    chunk_size: int | None = None,
    threads: int | None = None,
    **settings: Any,
) -> bytes:
    """Encodes ``x`` with a :class:`Codec` of the given settings (default: lossless); any
    other keyword (``bits=``, ``error=``, ...) is a :class:`Codec` parameter."""
    settings.update(chunk_size=chunk_size, threads=threads)
    return _codec_for(profile, settings).encode(x, dtype=dtype, shape=shape)


def decode(
    blob: Any,
    out: Any = None,
    *,
    threads: int | None = None,
    max_output_bytes: int | None = None,
    max_chunks: int | None = None,
    max_ndim: int | None = None,
    reject_nonfinite: bool = False,
    max_abs: float | None = None,
    device: Any = None,
) -> Any:
    """Decodes a frame; see :meth:`Codec.decode` (and :class:`Codec` for the limits and
    value checks). Frames describe themselves, so no profile is needed."""
    codec = _codec_for(
        DEFAULT_PROFILE,
        {
            "threads": threads,
            "max_output_bytes": max_output_bytes,
            "max_chunks": max_chunks,
            "max_ndim": max_ndim,
            "reject_nonfinite": reject_nonfinite,
            "max_abs": max_abs,
        },
    )
    return codec.decode(blob, out=out, device=device)


def info(blob: Any) -> dict[str, Any]:
    """The frame's header and chunk table as a dict: ``format_version``, ``dtype``,
    ``shape``, ``container``, ``chunk_size``, ``n_chunks``, ``stages`` (each a dict with its
    ``name`` and parameters, e.g. a quantizer's format, block, scale, bound and step),
    ``chunk_bytes``, ``header_bytes``, ``frame_bytes``, ``uncompressed_bytes`` and
    ``ratio``. Every checksum is verified; nothing is decoded."""
    return _core.info(blob)
