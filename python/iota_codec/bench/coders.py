"""The codecs a benchmark compares: iota-codec's profiles (or explicit configs) and peers.

Every coder is bound to one tensor (a numpy array of float32, float16 or ml_dtypes
bfloat16) and then exposes two calls that the benchmark times: ``encode()`` returning
bytes, and ``decode(blob)`` returning an array with the tensor's dtype and element count.
Whatever a peer needs to turn the tensor into its own input (float32 for zfp and the int8
quantizer) happens inside those calls and is timed; only zero-copy views are taken when
binding. Peers run on one thread. The same bound calls are timed by ``iota-codec bench``
and by the pytest-benchmark suites in ``benches/``, so their figures agree.

Peers (a missing package skips its peers with a note):

- ``zstd-1``, ``zstd-3``: zstandard on the tensor's bytes.
- ``lz4``: the LZ4 frame format, default (fastest) level.
- ``blosc2``: c-blosc2 with byte shuffle (typesize = the element size) and zstd level 5.
- ``pcodec``: pcodec's standalone format, default level 8; float32 and float16 natively,
  bfloat16 as its uint16 bit patterns (pcodec has no bfloat16 type; converting to float32
  first gives the same ratio at a higher cost).
- ``zfp-rate8``: zfp fixed-rate mode, 8 bits per value (the budget of int8), lossy.
- ``zfp-acc``: zfp fixed-accuracy mode, tolerance (max abs error) = 0.2 x the tensor's RMS
  (about 1% relative RMSE on the built-in tensors, like ``Codec(error=0.01)``),
  lossy. zfp takes float32: bfloat16 and float16 are converted there and back inside the
  timed calls; tensors are coded as 2-D (rows, last axis).
- ``int8+zstd``: hand-written numpy: row-wise absmax int8 quantization (one float32 scale per
  row of the last axis), then zstd-3 on the int8 values; lossy.

Byte and integer peers get no shape: like a raw transfer, the receiver is assumed to know
it. iota-codec frames carry their own dtype, shape and checksums.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._api import PROFILES, Codec


class Unsupported(Exception):
    """This coder cannot code this tensor (the message says why)."""


@dataclass
class Bound:
    """A coder bound to one tensor: the two timed calls and the settings used."""

    encode: Callable[[], bytes]
    decode: Callable[[bytes], Any]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CoderSpec:
    """A codec that can be bound to tensors."""

    name: str
    kind: str  # "iota" or "peer"
    bind: Callable[[np.ndarray], Bound]
    requires: tuple[str, ...] = ()  # the import names it needs
    describe: str = ""
    chunk_elements: int | None = None  # how it streams, if it says (iota configs do)

    def missing(self) -> str | None:
        """Why this coder is unavailable (a package is not installed), or None."""
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except ImportError as e:
                return f"{self.name} skipped: {mod} is not installed ({e})"
        return None

    def versions(self) -> dict[str, str]:
        out = {}
        for mod in self.requires:
            dist = _DIST.get(mod, mod)
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "?"
        return out


_DIST = {"lz4.frame": "lz4", "zstandard": "zstandard"}


def _bits(x: np.ndarray) -> np.ndarray:
    """The tensor's bit patterns as a flat unsigned array (a view)."""
    return x.reshape(-1).view(np.uint32 if x.dtype.itemsize == 4 else np.uint16)


def _from_bytes(buf: Any, like: np.ndarray) -> np.ndarray:
    return np.frombuffer(buf, dtype=like.dtype)


def _rows(x: np.ndarray) -> np.ndarray:
    """A 2-D view: (rows, last axis)."""
    if x.ndim == 0:
        return x.reshape(1, 1)
    return x.reshape(-1, x.shape[-1]) if x.shape[-1] else x.reshape(-1, 1)


# --- iota-codec ------------------------------------------------------------------------------


def iota_spec(config: dict[str, Any] | str, threads: int | None = 1) -> CoderSpec:
    """iota-codec with a profile name or an explicit config (``Codec.from_config`` keys; an
    optional ``"name"`` key labels it). ``threads`` applies unless the config sets it."""
    if isinstance(config, str):
        cfg: dict[str, Any] = {"profile": config}
        name = f"iota-{config}"
    else:
        cfg = dict(config)
        label = cfg.pop("name", None)
        name = label or "iota(" + ",".join(f"{k}={v}" for k, v in cfg.items()) + ")"
    if threads is not None:
        cfg.setdefault("threads", threads)
    codec = Codec.from_config(cfg)  # bad settings fail here, before any measuring

    def bind(x: np.ndarray) -> Bound:
        return Bound(lambda: codec.encode(x), codec.decode, codec.get_config())

    return CoderSpec(
        name,
        "iota",
        bind,
        describe=json.dumps(codec.get_config()),
        chunk_elements=codec.chunk_size,
    )


def parse_codec_json(text: str) -> dict[str, Any]:
    """A ``--codec`` argument: a JSON object of Codec settings."""
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--codec {text!r} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"--codec {text!r} must be a JSON object, like '{{\"profile\": ...}}'")
    return cfg


# --- peers -----------------------------------------------------------------------------------


def _zstd(level: int) -> CoderSpec:
    def bind(x: np.ndarray) -> Bound:
        import zstandard

        c = zstandard.ZstdCompressor(level=level, threads=0)
        d = zstandard.ZstdDecompressor()
        buf = _bits(x)
        return Bound(
            lambda: c.compress(buf),
            lambda blob: _from_bytes(d.decompress(blob), x),
            {"level": level, "threads": 0},
        )

    return CoderSpec(
        f"zstd-{level}", "peer", bind, ("zstandard",), f"zstd level {level}, one thread"
    )


def _lz4() -> CoderSpec:
    def bind(x: np.ndarray) -> Bound:
        import lz4.frame

        buf = _bits(x)
        return Bound(
            lambda: lz4.frame.compress(buf),
            lambda blob: _from_bytes(lz4.frame.decompress(blob), x),
            {"format": "frame", "compression_level": 0},
        )

    return CoderSpec("lz4", "peer", bind, ("lz4.frame",), "LZ4 frame, default level")


def _blosc2() -> CoderSpec:
    def bind(x: np.ndarray) -> Bound:
        import blosc2

        cparams = blosc2.CParams(
            codec=blosc2.Codec.ZSTD,
            clevel=5,
            filters=[blosc2.Filter.SHUFFLE],
            typesize=x.dtype.itemsize,
            nthreads=1,
        )
        dparams = blosc2.DParams(nthreads=1)
        buf = _bits(x)
        return Bound(
            lambda: blosc2.compress2(buf, cparams=cparams),
            lambda blob: _from_bytes(blosc2.decompress2(blob, dparams=dparams), x),
            {"codec": "zstd", "clevel": 5, "filter": "shuffle", "nthreads": 1},
        )

    return CoderSpec("blosc2", "peer", bind, ("blosc2",), "blosc2: byte shuffle + zstd level 5")


def _pcodec() -> CoderSpec:
    def bind(x: np.ndarray) -> Bound:
        from pcodec import ChunkConfig, standalone

        config = ChunkConfig(compression_level=8)
        if x.dtype.name == "bfloat16":
            flat, as_ = _bits(x), "uint16 bit patterns"
        else:
            flat, as_ = x.reshape(-1), x.dtype.name
        return Bound(
            lambda: standalone.simple_compress(flat, config),
            lambda blob: standalone.simple_decompress(blob).view(x.dtype),
            {"compression_level": 8, "coded_as": as_},
        )

    return CoderSpec("pcodec", "peer", bind, ("pcodec",), "pcodec standalone, level 8")


def _zfp(mode: str) -> CoderSpec:
    def bind(x: np.ndarray) -> Bound:
        import zfpy

        rows = _rows(x)
        if mode == "rate":
            kw: dict[str, Any] = {"rate": 8}
        else:
            # Set from the data before timing, as a user aiming at ~1% relative RMSE would.
            rms = float(np.sqrt(np.mean(np.square(rows, dtype=np.float64))))
            kw = {"tolerance": 0.2 * rms if rms > 0 else 1e-30}
        convert = x.dtype != np.float32

        def encode() -> bytes:
            src = rows.astype(np.float32) if convert else rows
            return zfpy.compress_numpy(src, **kw)

        def decode(blob: bytes) -> np.ndarray:
            y = zfpy.decompress_numpy(blob)
            return y.astype(x.dtype) if convert else y

        return Bound(encode, decode, {**kw, "shape_2d": list(rows.shape), "input": "float32"})

    if mode == "rate":
        return CoderSpec("zfp-rate8", "peer", bind, ("zfpy",), "zfp fixed rate, 8 bits/value")
    return CoderSpec("zfp-acc", "peer", bind, ("zfpy",), "zfp fixed accuracy, tolerance 0.2 x RMS")


def _int8_zstd() -> CoderSpec:
    def bind(x: np.ndarray) -> Bound:
        import zstandard

        c = zstandard.ZstdCompressor(level=3, threads=0)
        d = zstandard.ZstdDecompressor()
        rows = _rows(x)
        n_rows = rows.shape[0]

        def encode() -> bytes:
            f = rows.astype(np.float32, copy=False)
            scale = np.abs(f).max(axis=1) / 127
            scale[scale == 0] = 1
            q = np.rint(f / scale[:, None]).astype(np.int8)
            return scale.tobytes() + c.compress(q)

        def decode(blob: bytes) -> np.ndarray:
            scale = np.frombuffer(blob, np.float32, n_rows)
            q = np.frombuffer(d.decompress(blob[4 * n_rows :]), np.int8).reshape(rows.shape)
            return (q * scale[:, None]).astype(x.dtype)

        return Bound(encode, decode, {"scale": "float32 absmax per row", "zstd_level": 3})

    return CoderSpec(
        "int8+zstd",
        "peer",
        bind,
        ("zstandard",),
        "numpy row-wise absmax int8, then zstd-3",
    )


PEERS: dict[str, Callable[[], CoderSpec]] = {
    "zstd-1": lambda: _zstd(1),
    "zstd-3": lambda: _zstd(3),
    "lz4": _lz4,
    "blosc2": _blosc2,
    "pcodec": _pcodec,
    "zfp-rate8": lambda: _zfp("rate"),
    "zfp-acc": lambda: _zfp("accuracy"),
    "int8+zstd": _int8_zstd,
}


def peer(name: str) -> CoderSpec:
    try:
        return PEERS[name]()
    except KeyError:
        raise ValueError(f"unknown peer {name!r}; choose from: {', '.join(PEERS)}") from None


def error_specs(errors: list[float], threads: int | None = 1) -> list[CoderSpec]:
    """For each relative RMSE bound: plain error-bounded coding (``iota-error-3%``) and
    transform coding (``iota-auto-3%``: the smallest of plain, identity and PCA frames)."""
    specs = []
    for e in errors:
        label = f"{e * 100:g}%"
        specs.append(iota_spec({"name": f"iota-error-{label}", "error": e}, threads))
        specs.append(
            iota_spec({"name": f"iota-auto-{label}", "error": e, "transform": "auto"}, threads)
        )
    return specs


def select(
    profiles: list[str] | None = None,
    configs: list[dict[str, Any]] | None = None,
    peers: list[str] | None = None,
    threads: int | None = 1,
    errors: list[float] | None = None,
) -> tuple[list[CoderSpec], list[str]]:
    """The coders to run (``None`` means all profiles / all peers; ``errors`` adds plain and
    transform coding at those bounds) and notes about peers that were skipped because a
    package is missing."""
    specs = [iota_spec(p, threads) for p in (PROFILES if profiles is None else profiles)]
    specs += [iota_spec(c, threads) for c in configs or []]
    specs += error_specs(errors or [], threads)
    notes = []
    for name in PEERS if peers is None else peers:
        spec = peer(name)
        why = spec.missing()
        if why:
            notes.append(why)
        else:
            specs.append(spec)
    return specs, notes
