"""Shared-basis sessions: :class:`Session`."""

from __future__ import annotations

from typing import Any

from . import _adapt, _core
from ._api import Codec
from ._core import InvalidArgumentError


class Session:
    """One end of a shared-basis session: an encoder and a decoder that hold the same
    channel basis, so that frames carry only coefficients.

    A tensor's last dimension is its channels (1 to 1024); every other index makes a row,
    which is projected onto the basis, quantized with one step to meet the codec's
    ``error=`` bound (relative RMSE, guaranteed for every frame) and entropy-coded. The
    first frame (and any after :meth:`resync`) is a *resync frame*: self-contained, it
    carries its basis (the principal directions of that tensor's channels, or none) and
    decodes with plain :func:`iota_codec.decode` too. After it, both ends update the basis
    from the decoded coefficients, in the same way bit for bit, every ``refresh`` frames.

    Use one ``Session`` per end and direction, with the same ``session_id``, ``refresh``
    and ``decay``: the sender calls :meth:`encode`, the receiver :meth:`decode`, frame after
    frame in order. A frame that does not follow the receiver's state (another session, a
    dropped, duplicated or reordered frame) raises :class:`SessionMismatchError` and leaves
    the receiver as it was; call :meth:`resync` on the sender to send a resync frame, which
    any receiver of the session accepts.

    Args:
        codec: the settings: a :class:`Codec` (or config dict) with an ``error=`` bound, or
            None to build one from ``codec_settings`` (e.g. ``Session(error=0.03)``).
            ``rounding="stochastic"`` (with ``seed=``) rounds coefficients without bias.
        session_id: identifies the session in every frame (a 64-bit integer).
        refresh: frames between basis refreshes (each is an eigendecomposition of a
            ``channels x channels`` matrix on both ends: about 0.01 s for 256 channels).
        decay: weight of earlier frames' statistics, per frame (0 < decay <= 1): the basis
            follows about the last ``1 / (1 - decay)`` frames.
        error_feedback: (sender) add each tensor's coding error to the next tensor before
            coding it, as PowerSGD does for gradients; then the bound holds for the tensor
            plus the carried error, and the error does not build up over steps. Needs the
            same shape every step (a new shape starts afresh).

    ``state_bytes()`` / ``Session.from_state()`` save and restore a session (also through
    :mod:`pickle`). :attr:`state_hash` is what both ends must agree on.
    """

    __slots__ = ("_core", "_limits")

    def __init__(
        self,
        codec: Codec | dict[str, Any] | None = None,
        *,
        session_id: int = 0,
        refresh: int = 2,
        decay: float = 0.7,
        error_feedback: bool = False,
        **codec_settings: Any,
    ) -> None:
        if codec is None:
            codec = Codec(**codec_settings)
        elif codec_settings:
            raise InvalidArgumentError(
                "pass either a codec or codec settings (error=, rounding=, ...), not both"
            )
        elif isinstance(codec, dict):
            codec = Codec.from_config(codec)
        if not isinstance(codec, Codec):
            raise InvalidArgumentError(f"codec must be a Codec, not {type(codec).__name__}")
        for name, value in (("session_id", session_id), ("refresh", refresh)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"{name} must be a non-negative integer")
        if not isinstance(error_feedback, bool):
            raise InvalidArgumentError("error_feedback must be True or False")
        self._core = _core.Session(
            codec.settings,
            session_id=session_id,
            refresh=refresh,
            decay=float(decay),
            error_feedback=error_feedback,
            chunk_size=codec.chunk_size,
            threads=codec.threads,
            limits=codec.limits,
        )
        self._limits = codec.limits

    def encode(
        self, x: Any, *, dtype: Any = None, shape: Any = None, reconstruction: bool = False
    ) -> Any:
        """Encodes ``x`` (a numpy array, a torch tensor, or a buffer with ``dtype=``) as the
        session's next frame and returns it as bytes; with ``reconstruction=True`` returns
        ``(frame, y)``, where ``y`` is exactly what the receiver will decode (of the kind of
        ``x``, on the host)."""
        if _adapt.on_accelerator(x):
            x = x.detach().cpu()
        src = _adapt.as_source(x, dtype=dtype, shape=shape)
        shape_ = tuple(src.shape)
        recon = view = None
        if reconstruction:
            container = "torch" if src.hint == _adapt.HINT_TORCH else "numpy"
            recon, view = _adapt.allocate(src.dtype, shape_, container)
        frame = self._core.encode(
            src.data, src.dtype, list(shape_), hint=src.hint, reconstruction=view
        )
        return (frame, recon) if reconstruction else frame

    def decode(self, blob: Any, out: Any = None) -> Any:
        """Decodes the session's next frame: a tensor of the kind that was encoded (or into
        ``out``, as :meth:`iota_codec.Codec.decode` does). Raises
        :class:`SessionMismatchError` for a frame that does not follow this session."""
        result, view = _adapt.decode_target(_core.header(blob, limits=self._limits), out)
        self._core.decode_into(blob, view)
        return result

    def resync(self) -> None:
        """Makes the next frame a resync frame (it carries its basis and resets the
        receiver's state): what a receiver that missed frames needs."""
        self._core.resync()

    @property
    def step(self) -> int:
        """Frames encoded (or decoded) so far."""
        return self._core.step

    @property
    def channels(self) -> int | None:
        """The channel count (last dimension), once the first frame has set it."""
        return self._core.channels

    @property
    def basis(self) -> Any:
        """The current channel basis as a ``(channels, channels)`` float64 numpy array (one
        orthonormal vector per row, the largest expected variance first), or None before
        the first frame."""
        import numpy as np

        b = self._core.basis
        if b is None:
            return None
        d = self.channels
        return np.asarray(b, dtype=np.float64).reshape(d, d)

    @property
    def state_hash(self) -> int:
        """A hash of the state both ends must agree on (session id, step, basis)."""
        return self._core.state_hash

    @property
    def config(self) -> dict[str, Any]:
        """The session's settings."""
        return self._core.config()

    @property
    def session_id(self) -> int:
        return self.config["session_id"]

    def state_bytes(self) -> bytes:
        """The whole session (settings, step, basis state, error-feedback residual) as
        checksummed bytes, for :meth:`from_state`."""
        return self._core.state_bytes()

    @classmethod
    def from_state(
        cls, state: Any, *, threads: int | None = None, limits: dict[str, Any] | None = None
    ) -> Session:
        """A session restored from :meth:`state_bytes`. ``threads`` and the decoder
        ``limits`` (a :attr:`iota_codec.Codec.limits` dict) are not saved: give them here,
        or get the defaults."""
        s = cls.__new__(cls)
        s._limits = dict(limits) if limits is not None else Codec().limits
        s._core = _core.Session.from_state(state, threads=threads or 0, limits=s._limits)
        return s

    @property
    def limits(self) -> dict[str, Any]:
        """The decoder's limits and value checks (as :attr:`iota_codec.Codec.limits`)."""
        return dict(self._limits)

    def __getstate__(self) -> dict[str, Any]:
        return {"state": self.state_bytes(), "limits": self._limits}

    def __setstate__(self, d: dict[str, Any]) -> None:
        other = Session.from_state(d["state"], limits=d["limits"])
        self._core = other._core
        self._limits = other._limits

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Session(session_id={c['session_id']}, error={c['error']}, step={self.step}, "
            f"channels={self.channels}, refresh={c['refresh']}, "
            f"error_feedback={c['error_feedback']})"
        )
