"""Compressed point-to-point messages over :mod:`torch.distributed`.

Every message is two sends on the same ``(peer, tag)``: a fixed 32-byte header (four
int64: protocol magic and version, message kind, sequence number, frame length) and then
the frame as a ``uint8`` tensor. The receiver allocates the frame buffer from the header,
after checking the length against ``max_frame_bytes``, and the frame itself is checked
again when it is decoded (its own checksums and ``max_output_bytes``): a peer cannot make
the receiver allocate more than those limits allow.

:class:`Channel` is the stateful way: one per peer, holding the codec settings (one for
tensors and activations, one for gradients), byte statistics, the sequence numbers that
keep messages from being confused, and room for the session state of stateful codecs. The
free functions :func:`send`, :func:`recv`, :func:`isend` and :func:`irecv` mirror
:func:`torch.distributed.send` and friends (``dst``/``src``, ``group``, ``tag``) for
one-off messages.

Backends: gloo (CPU tensors) is what the tests run. With NCCL the header and frame are
moved to the current CUDA device before they are sent, and received there; that path has
not been exercised by the test suite (it needs two GPUs). NCCL ignores tags, so use one
channel per pair of ranks there.

Failures: a peer that dies, disconnects or stops sending makes the waiting side raise
:class:`TransferError` (after ``timeout`` at the latest, or the process group's timeout
when none is given), never hang. After a :class:`TransferError` or a corrupt header, the
channel is *broken* (a half-received message cannot be resynchronized): every later call on
it raises; destroy the process group and start again.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
import time
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.distributed as dist

from .._api import Codec
from .._core import CorruptFrameError, InvalidArgumentError, LimitExceededError
from .._session import Session
from ._device import as_device
from ._ops import as_codec, decode_frame, encode_tensor

MAGIC = 0x494F_5441_0000_0001  # "IOTA", protocol version 1
HEADER_WORDS = 4
HEADER_BYTES = 8 * HEADER_WORDS

TENSOR, ACTIVATION, GRADIENT = 0, 1, 2
_KIND_NAMES = {TENSOR: "tensor", ACTIVATION: "activation", GRADIENT: "gradient"}
# Set in a message's kind word when its frame belongs to the channel's session for that kind.
_SESSION_FLAG = 0x100
_ANY = -1  # sequence number of unsequenced messages (the free functions)
_MAX_STASHED = 4096


class TransferError(RuntimeError):
    """A compressed message could not be sent or received: the peer died, disconnected or
    timed out, or broke the protocol. The channel it happened on cannot be used again."""


@dataclass
class ChannelStats:
    """Byte counts of one :class:`Channel` (or of a DDP hook state).

    ``raw_bytes_*`` count the tensors as they are in memory; ``wire_bytes_*`` what actually
    crossed the link, frames plus the 32-byte headers.
    """

    messages_sent: int = 0
    raw_bytes_sent: int = 0
    wire_bytes_sent: int = 0
    messages_received: int = 0
    raw_bytes_received: int = 0
    wire_bytes_received: int = 0

    @property
    def ratio_sent(self) -> float:
        """Raw bytes per wire byte sent (0 before the first message)."""
        return self.raw_bytes_sent / self.wire_bytes_sent if self.wire_bytes_sent else 0.0

    @property
    def ratio_received(self) -> float:
        """Raw bytes per wire byte received (0 before the first message)."""
        return (
            self.raw_bytes_received / self.wire_bytes_received if self.wire_bytes_received else 0.0
        )

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)

    def as_dict(self) -> dict[str, float]:
        d: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        d["ratio_sent"] = self.ratio_sent
        d["ratio_received"] = self.ratio_received
        return d


def _seconds(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def _uses_cuda(group: Any) -> bool:
    """Whether the group's backend wants its tensors on a CUDA device (NCCL)."""
    try:
        backend = dist.get_backend(group)
    except (RuntimeError, ValueError):
        return False
    return str(backend).lower() == "nccl"


class _Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> datetime.timedelta | None:
        if self.end is None:
            return None
        return datetime.timedelta(seconds=max(0.001, self.end - time.monotonic()))


def default_max_frame_bytes(codec: Codec) -> int:
    """The largest frame a receiver accepts by default: a quarter more than the codec's
    ``max_output_bytes`` (lossless frames of incompressible data are slightly larger than
    the data), plus 1 MiB."""
    return codec.max_output_bytes + codec.max_output_bytes // 4 + (1 << 20)


def channel_session_id(tag: int, kind: int, sender: int, receiver: int) -> int:
    """The session id of a channel's ``kind`` messages (``TENSOR``, ``ACTIVATION`` or
    ``GRADIENT``) from global rank ``sender`` to ``receiver``: both sides compute it."""
    key = f"iota-channel/{tag}/{kind}/{sender}/{receiver}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


class _Decoded:
    """A message that was decoded on arrival (a session frame)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def place(self, dtype: Any, shape: Any, device: Any, out: Any) -> torch.Tensor:
        t = self.tensor
        if dtype is not None and t.dtype != dtype:
            raise InvalidArgumentError(f"the frame holds {t.dtype}, expected {dtype}")
        if shape is not None and tuple(t.shape) != tuple(int(d) for d in shape):
            raise InvalidArgumentError(
                f"the frame holds shape {tuple(t.shape)}, expected {tuple(shape)}"
            )
        if out is not None:
            if out.dtype != t.dtype or tuple(out.shape) != tuple(t.shape):
                raise InvalidArgumentError(
                    f"out is {out.dtype} of shape {tuple(out.shape)}; the frame holds "
                    f"{t.dtype} of shape {tuple(t.shape)}"
                )
            out.copy_(t)
            return out
        if device is not None and torch.device(device).type != "cpu":
            return t.to(device, non_blocking=True)
        return t


class SendWork:
    """What :meth:`Channel.isend` and :func:`isend` return: ``wait()`` blocks until the
    header and frame are handed to the transport (like a torch ``Work``), raising
    :class:`TransferError` if that fails or takes longer than ``timeout``."""

    def __init__(self, channel: Channel, works: list[Any], keep: tuple[Any, ...]) -> None:
        self._channel = channel
        self._works = works
        self._keep = keep  # the buffers must outlive the transfer
        self._done = False

    def is_completed(self) -> bool:
        return self._done or all(w.is_completed() for w in self._works)

    def wait(self, timeout: Any = None) -> None:
        if self._done:
            return
        deadline = _Deadline(_seconds(timeout if timeout is not None else self._channel.timeout))
        try:
            for w in self._works:
                left = deadline.left()
                w.wait() if left is None else w.wait(left)
        except RuntimeError as e:
            raise self._channel._fail(f"sending to rank {self._channel.peer} failed: {e}") from e
        self._done = True
        self._keep = ()


class RecvWork:
    """What :meth:`Channel.irecv` and :func:`irecv` return: ``wait()`` finishes receiving
    and returns the decoded tensor.

    The frame's length is only known from the header, so the frame's own receive is posted
    once the header has arrived; on a :class:`Channel`, the header's receive is posted by
    ``irecv`` itself when no other receive is in flight on the channel.
    """

    def __init__(self, channel: Channel, kind: int, seq: int, device: Any, out: Any) -> None:
        self._channel = channel
        self._key = (kind, seq)
        self._device = device
        self._out = out
        self._result: torch.Tensor | None = None

    def is_completed(self) -> bool:
        return self._result is not None or self._channel._has(self._key)

    def wait(self, timeout: Any = None) -> torch.Tensor:
        if self._result is None:
            seconds = _seconds(timeout if timeout is not None else self._channel.timeout)
            self._result = self._channel._receive(
                self._key, _Deadline(seconds), self._device, self._out
            )
        return self._result


class Channel:
    """A compressed link to one peer rank.

    Args:
        peer: the peer's global rank.
        codec: how this side encodes tensors and activations it sends (a
            :class:`iota_codec.Codec`, a config dict or a profile name; default lossless).
            Decoding needs no settings from the sender: frames describe themselves.
        grad_codec: how this side encodes the gradients it sends back through
            :func:`recv_activation` (default: ``codec``).
        group: the process group (default: the world).
        tag: the tag every message of this channel carries (gloo matches on it; NCCL
            ignores tags).
        device: where received tensors are put (default CPU); a CUDA device makes the
            receive decode into pinned host memory and copy to the device on its current
            stream.
        timeout: seconds (or a ``timedelta``) that a blocking call waits before raising
            :class:`TransferError`; default: the process group's timeout.
        max_frame_bytes: the largest frame accepted from the peer (default
            :func:`default_max_frame_bytes` of the decoding codec). The decoded size is also
            limited by the codec's ``max_output_bytes``.
        session: use a shared-basis :class:`iota_codec.Session` per kind of message and
            direction, for the codecs with an ``error=`` bound: ``True``, or a dict of
            session settings (``refresh``, ``decay``). Frames then carry only coefficients
            on a channel basis both sides learn from the decoded data. Both sides must pass
            the same ``session`` settings.
        error_feedback: with ``session``, carry each sent gradient's coding error into the
            next one (PowerSGD-style error feedback).
        prefetch: receive ahead on a background thread (default ``False``). gloo moves a
            message only once the receiver has posted its receive, and a frame's receive can
            only be posted once its header has arrived, so without prefetching a frame
            starts to cross the link when the receiver asks for it, not when it was sent.
            With ``prefetch=True`` a thread (started by the first receive) keeps the next
            header's receive posted and posts each frame's as soon as its header arrives,
            so frames stream in while the receiver computes, as raw tensors do whose
            receives were posted early; decoding still happens where the tensor is asked
            for. The thread always has a receive posted, which a process group cannot
            cancel: exit the process (or abort the group) rather than destroying the
            group cleanly while it waits.

    A channel keeps per-kind sequence numbers, so that both sides agree on which message
    is which: tensors and activations are matched in the order they were sent, and each
    gradient carries the sequence number of the activation it belongs to, so gradients may
    come back in any order (GPipe, 1F1B, or anything else) and still reach the right
    micro-batch. Messages that arrive before they are asked for are kept (as frames) until
    they are.

    ``stats`` (a :class:`ChannelStats`) counts raw and wire bytes in each direction;
    ``state`` holds the sessions of a channel made with ``session=`` (keys like
    ``"activation/send"`` and ``"gradient/recv"``, each an :class:`iota_codec.Session`,
    created at the first message), empty otherwise. Session frames are decoded in the
    order they arrive, which is the order they were encoded.

    Sends from :func:`send_activation` and :func:`recv_activation`'s backward are
    asynchronous: call :meth:`flush` before tearing the process group down (and at the end
    of a step if you want errors to surface there).
    """

    def __init__(
        self,
        peer: int,
        codec: Any = None,
        *,
        grad_codec: Any = None,
        group: Any = None,
        tag: int = 0,
        device: Any = None,
        timeout: Any = None,
        max_frame_bytes: int | None = None,
        session: Any = None,
        error_feedback: bool = False,
        prefetch: bool = False,
        _sequenced: bool = True,
    ) -> None:
        self.peer = int(peer)
        self.codec = as_codec(codec)
        self.grad_codec = self.codec if grad_codec is None else as_codec(grad_codec)
        self.group = group
        self.tag = int(tag)
        self.device = as_device(device)
        self.timeout = _seconds(timeout)
        self.max_frame_bytes = (
            default_max_frame_bytes(self.codec) if max_frame_bytes is None else max_frame_bytes
        )
        self.stats = ChannelStats()
        self.state: dict[str, Any] = {}
        self._session_opts: dict[str, Any] | None
        if session is None or session is False:
            self._session_opts = None
        elif session is True:
            self._session_opts = {}
        elif isinstance(session, dict):
            unknown = set(session) - {"refresh", "decay"}
            if unknown:
                raise InvalidArgumentError(
                    f"unknown session settings: {', '.join(sorted(unknown))} (refresh, decay)"
                )
            self._session_opts = dict(session)
        else:
            raise InvalidArgumentError("session must be True, False/None or a dict of settings")
        if error_feedback and self._session_opts is None:
            raise InvalidArgumentError(
                "error_feedback carries a gradient's coding error into the next through a "
                "session: also pass session=True"
            )
        self.error_feedback = bool(error_feedback)
        self._sequenced = _sequenced
        self._send_seq = {TENSOR: 0, ACTIVATION: 0}
        self._recv_seq = {TENSOR: 0, ACTIVATION: 0}
        self._stash: dict[tuple[int, int], Any] = {}
        self._header_in_flight: tuple[Any, torch.Tensor] | None = None
        self._pending: list[SendWork] = []
        self._broken: str | None = None
        self._cuda = _uses_cuda(group)
        self.prefetch = bool(prefetch) and _sequenced
        self._arrived = threading.Condition()
        self._reader: threading.Thread | None = None
        self._reader_error: Exception | None = None

    def __repr__(self) -> str:
        return (
            f"Channel(peer={self.peer}, codec={self.codec!r}, grad_codec={self.grad_codec!r}, "
            f"tag={self.tag})"
        )

    # --- public API -------------------------------------------------------------------------

    def send(self, tensor: torch.Tensor, *, codec: Any = None, timeout: Any = None) -> None:
        """Encodes ``tensor`` and sends it; returns once the transport has it."""
        self.isend(tensor, codec=codec).wait(timeout)

    def isend(self, tensor: torch.Tensor, *, codec: Any = None) -> SendWork:
        """Encodes ``tensor`` now and starts sending it. Keep the returned work and
        ``wait()`` on it (or :meth:`flush`)."""
        seq = self._next_send(TENSOR)
        return self._post(TENSOR, seq, tensor, self.codec if codec is None else as_codec(codec))

    def recv(
        self, *, out: torch.Tensor | None = None, device: Any = None, timeout: Any = None
    ) -> torch.Tensor:
        """Receives the next tensor sent with :meth:`send`/:meth:`isend` and decodes it, on
        ``device`` (default: the channel's) or into ``out``."""
        return self.irecv(out=out, device=device).wait(timeout)

    def irecv(self, *, out: torch.Tensor | None = None, device: Any = None) -> RecvWork:
        """Starts receiving the next tensor; ``wait()`` on the result returns it."""
        seq = self._next_recv(TENSOR)
        return self._irecv(TENSOR, seq, device, out)

    def flush(self, timeout: Any = None) -> None:
        """Waits for every send still in flight on this channel."""
        deadline = _Deadline(_seconds(timeout if timeout is not None else self.timeout))
        while self._pending:
            work = self._pending[0]
            left = deadline.left()
            work.wait(None if left is None else left.total_seconds())
            self._pending.pop(0)

    @property
    def broken(self) -> bool:
        """Whether an earlier failure has made the channel unusable."""
        return self._broken is not None

    # --- internals shared with the autograd boundary --------------------------------------

    def _next_send(self, kind: int) -> int:
        if not self._sequenced:
            return _ANY
        seq = self._send_seq[kind]
        self._send_seq[kind] = seq + 1
        return seq

    def _next_recv(self, kind: int) -> int:
        if not self._sequenced:
            return _ANY
        seq = self._recv_seq[kind]
        self._recv_seq[kind] = seq + 1
        return seq

    def _check(self) -> None:
        if self._broken is not None:
            raise TransferError(f"channel to rank {self.peer} is broken: {self._broken}")

    def _fail(self, message: str) -> TransferError:
        if self._broken is None:
            self._broken = message
        if self.prefetch:
            with self._arrived:
                self._arrived.notify_all()
        return TransferError(message)

    # The transport: the only two calls that move bytes. A subclass may carry messages some
    # other way (the link lab's paced socket does) by overriding both; what they return
    # needs ``wait(timeout=None)`` (a ``timedelta`` or ``None``; raising ``RuntimeError`` on
    # failure) and ``is_completed()``, and messages must arrive whole and in order.

    def _transport_isend(self, tensor: torch.Tensor) -> Any:
        return dist.isend(tensor, self.peer, group=self.group, tag=self.tag)

    def _transport_irecv(self, tensor: torch.Tensor) -> Any:
        return dist.irecv(tensor, self.peer, group=self.group, tag=self.tag)

    def _wire_device(self) -> torch.device:
        if self._cuda:
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _wire(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self._wire_device()) if self._cuda else t

    def _session(self, kind: int, direction: str, codec: Codec) -> Session | None:
        """The session for ``kind`` messages in ``direction`` ("send" or "recv"), or None
        when the channel has none for it."""
        if self._session_opts is None or not self._sequenced:
            return None
        key = f"{_KIND_NAMES[kind]}/{direction}"
        s = self.state.get(key)
        if s is not None:
            return s
        bounded = codec.settings.get("error") is not None and codec.settings["step"] == "global"
        if direction == "send" and not bounded:
            return None
        me = dist.get_rank()
        sender, receiver = (me, self.peer) if direction == "send" else (self.peer, me)
        settings = self._session_opts
        # A receiving session only needs the settings both sides share; its bound is unused.
        base = codec if bounded else Codec(error=0.01, **codec.limits)
        s = Session(
            base,
            session_id=channel_session_id(self.tag, kind, sender, receiver),
            error_feedback=self.error_feedback and kind == GRADIENT and direction == "send",
            **settings,
        )
        self.state[key] = s
        return s

    def _post(self, kind: int, seq: int, tensor: torch.Tensor, codec: Codec) -> SendWork:
        self._check()
        self._reap()
        session = self._session(kind, "send", codec)
        if session is None:
            frame = encode_tensor(tensor, codec)
            word = kind
        else:
            blob = session.encode(tensor.detach())
            frame = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
            word = kind | _SESSION_FLAG
        header = torch.tensor([MAGIC, word, seq, frame.numel()], dtype=torch.int64)
        header, wire_frame = self._wire(header), self._wire(frame)
        try:
            works = [self._transport_isend(header), self._transport_isend(wire_frame)]
        except RuntimeError as e:
            raise self._fail(f"sending to rank {self.peer} failed: {e}") from e
        self.stats.messages_sent += 1
        self.stats.raw_bytes_sent += tensor.numel() * tensor.element_size()
        self.stats.wire_bytes_sent += HEADER_BYTES + frame.numel()
        work = SendWork(self, works, (header, wire_frame))
        self._pending.append(work)
        return work

    def _reap(self) -> None:
        """Drops sends that have finished (surfacing their errors)."""
        while self._pending and self._pending[0].is_completed():
            self._pending.pop(0).wait()

    def _irecv(self, kind: int, seq: int, device: Any, out: Any) -> RecvWork:
        self._check()
        if self.prefetch:
            self._start_reader()
        elif self._sequenced and (kind, seq) not in self._stash:
            self._post_header()
        return RecvWork(self, kind, seq, device, out)

    # --- receiving ahead (prefetch=True) ---------------------------------------------------

    def _start_reader(self) -> None:
        if self._reader is None:
            self._reader = threading.Thread(
                target=self._read_ahead, name=f"iota-channel-{self.peer}-{self.tag}", daemon=True
            )
            self._reader.start()

    def _read_ahead(self) -> None:
        """The reader thread: receives every message as soon as the peer sends it and keeps
        its frame until it is asked for. It never gives up waiting for the next header
        (the waiting side's deadline is what raises), and stops at the first failure, which
        the waiting side then raises."""
        while self._broken is None:
            try:
                kind, seq, frame = self._read_message(_Deadline(None))
            except Exception as e:  # _read_message has marked the channel broken
                with self._arrived:
                    self._reader_error = e
                    self._arrived.notify_all()
                return
            with self._arrived:
                if len(self._stash) >= _MAX_STASHED:
                    self._reader_error = self._fail(
                        f"more than {_MAX_STASHED} messages from rank {self.peer} arrived "
                        "before they were asked for; the two sides are out of step"
                    )
                    return
                self._stash[(kind, seq)] = frame
                self._arrived.notify_all()

    def _wait_prefetched(self, key: tuple[int, int], deadline: _Deadline) -> torch.Tensor:
        self._start_reader()
        with self._arrived:
            while key not in self._stash:
                if self._reader_error is not None:
                    raise self._reader_error
                self._check()
                if deadline.end is not None and time.monotonic() >= deadline.end:
                    raise self._fail(
                        f"receiving from rank {self.peer} failed: timed out waiting for "
                        f"{_KIND_NAMES[key[0]]} message {key[1]}"
                    )
                left = deadline.left()
                self._arrived.wait(None if left is None else left.total_seconds())
            return self._stash.pop(key)

    def _post_header(self) -> None:
        if self._header_in_flight is not None:
            return
        header = torch.zeros(HEADER_WORDS, dtype=torch.int64, device=self._wire_device())
        try:
            work = self._transport_irecv(header)
        except RuntimeError as e:
            raise self._fail(f"receiving from rank {self.peer} failed: {e}") from e
        self._header_in_flight = (work, header)

    def _has(self, key: tuple[int, int]) -> bool:
        with self._arrived:
            return key in self._stash

    def _read_message(self, deadline: _Deadline) -> tuple[int, int, torch.Tensor]:
        """Receives the next whole message from the peer: (kind, seq, frame)."""
        self._post_header()
        assert self._header_in_flight is not None
        work, header = self._header_in_flight
        try:
            left = deadline.left()
            work.wait() if left is None else work.wait(left)
        except RuntimeError as e:
            raise self._fail(f"receiving from rank {self.peer} failed: {e}") from e
        self._header_in_flight = None
        magic, word, seq, nbytes = (int(v) for v in header.cpu().tolist())
        kind = word & ~_SESSION_FLAG
        if magic != MAGIC:
            raise self._corrupt(
                CorruptFrameError,
                f"message from rank {self.peer} does not start with an iota-codec header "
                f"(is the peer using iota_codec.torch with the same protocol version?)",
            )
        if kind not in _KIND_NAMES or nbytes <= 0 or word not in (kind, kind | _SESSION_FLAG):
            raise self._corrupt(CorruptFrameError, f"bad message header from rank {self.peer}")
        if nbytes > self.max_frame_bytes:
            raise self._corrupt(
                LimitExceededError,
                f"rank {self.peer} announces a frame of {nbytes} bytes, more than "
                f"max_frame_bytes={self.max_frame_bytes}",
            )
        frame = torch.empty(nbytes, dtype=torch.uint8, device=self._wire_device())
        try:
            work = self._transport_irecv(frame)
            left = deadline.left()
            work.wait() if left is None else work.wait(left)
        except RuntimeError as e:
            raise self._fail(
                f"receiving a {nbytes}-byte frame from rank {self.peer} failed: {e}"
            ) from e
        self.stats.wire_bytes_received += HEADER_BYTES + nbytes
        if word & _SESSION_FLAG:
            # Session frames are decoded as they arrive: in the order they were encoded.
            session = self._session(kind, "recv", self.codec)
            if session is None:
                raise self._corrupt(
                    CorruptFrameError,
                    f"rank {self.peer} sends session frames, but this channel has no session: "
                    "make both sides' channels with the same session= setting",
                )
            return kind, seq, _Decoded(session.decode(frame.cpu().numpy()))
        return kind, seq, frame

    def _corrupt(self, cls: type[Exception], message: str) -> Exception:
        self._fail(message)
        return cls(message)

    def _receive(
        self,
        key: tuple[int, int],
        deadline: _Deadline,
        device: Any,
        out: Any,
        expect: tuple[torch.dtype, tuple[int, ...]] | None = None,
    ) -> torch.Tensor:
        """Waits for message ``key`` (keeping others that arrive first) and decodes it."""
        self._check()
        if self.prefetch:
            frame = self._wait_prefetched(key, deadline)
        else:
            frame = self._stash.pop(key, None)
        while frame is None:
            kind, seq, got = self._read_message(deadline)
            if kind == key[0] and (seq == key[1] or not self._sequenced):
                frame = got
            elif not self._sequenced or seq == _ANY:
                what = "a sequenced" if seq != _ANY else "an unsequenced"
                raise self._corrupt(
                    CorruptFrameError,
                    f"expected a {_KIND_NAMES[key[0]]} message from rank {self.peer}, got "
                    f"{what} {_KIND_NAMES[kind]} message; use a Channel on both sides, or "
                    "the free send/recv functions on both sides",
                )
            else:
                if len(self._stash) >= _MAX_STASHED:
                    raise self._fail(
                        f"more than {_MAX_STASHED} messages from rank {self.peer} arrived "
                        "before they were asked for; the two sides are out of step"
                    )
                self._stash[(kind, seq)] = got
        dev = as_device(device) if device is not None else self.device
        dtype, shape = (None, None) if expect is None else expect
        if isinstance(frame, _Decoded):
            result = frame.place(dtype, shape, dev, out)
        else:
            result = decode_frame(frame, self.codec, dtype=dtype, shape=shape, device=dev, out=out)
        self.stats.messages_received += 1
        self.stats.raw_bytes_received += result.numel() * result.element_size()
        return result


# --- free functions mirroring torch.distributed ----------------------------------------------


def _one_off(peer: int, group: Any, tag: int, codec: Any = None, **kw: Any) -> Channel:
    return Channel(peer, codec, group=group, tag=tag, _sequenced=False, **kw)


def send(
    tensor: torch.Tensor,
    dst: int,
    group: Any = None,
    tag: int = 0,
    *,
    codec: Any = None,
    timeout: Any = None,
) -> None:
    """Like :func:`torch.distributed.send`, compressed: encodes ``tensor`` with ``codec``
    (default lossless) and sends a header and the frame to global rank ``dst``."""
    _one_off(dst, group, tag, codec).send(tensor, timeout=timeout)


def isend(
    tensor: torch.Tensor, dst: int, group: Any = None, tag: int = 0, *, codec: Any = None
) -> SendWork:
    """Like :func:`torch.distributed.isend`, compressed; the tensor is encoded before this
    returns, so it may be changed right away."""
    return _one_off(dst, group, tag, codec).isend(tensor)


def recv(
    tensor: torch.Tensor | None = None,
    src: int | None = None,
    group: Any = None,
    tag: int = 0,
    *,
    device: Any = None,
    timeout: Any = None,
    max_frame_bytes: int | None = None,
    codec: Any = None,
) -> torch.Tensor:
    """Like :func:`torch.distributed.recv`, compressed, but the tensor is optional (frames
    describe themselves) and it *returns the received tensor* (``tensor`` itself when given)
    rather than the sender's rank. ``src`` is required. ``codec`` supplies the decoding
    limits (``max_output_bytes``)."""
    return irecv(
        tensor, src, group, tag, device=device, max_frame_bytes=max_frame_bytes, codec=codec
    ).wait(timeout)


def irecv(
    tensor: torch.Tensor | None = None,
    src: int | None = None,
    group: Any = None,
    tag: int = 0,
    *,
    device: Any = None,
    max_frame_bytes: int | None = None,
    codec: Any = None,
) -> RecvWork:
    """Like :func:`torch.distributed.irecv`, compressed; ``wait()`` on the result returns
    the tensor. Receiving starts at ``wait()``, and several outstanding ``irecv`` from one
    ``(src, tag)`` complete in the order they are waited on; use a :class:`Channel` to have
    the header received early and messages matched by sequence number."""
    if src is None:
        raise ValueError("src is required: iota_codec.torch.recv does not receive from any rank")
    ch = _one_off(src, group, tag, codec, max_frame_bytes=max_frame_bytes)
    return ch._irecv(TENSOR, _ANY, device, tensor)
