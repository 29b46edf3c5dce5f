"""A DistributedDataParallel communication hook that ships gradients compressed.

Modelled on PyTorch's PowerSGD hook: a documented state object with the settings and the
statistics, and a hook function to register with it::

    state = IotaHookState(codec=iota_codec.Codec("lossless"))
    ddp_model.register_comm_hook(state, iota_hook)
    ...
    state.stats.ratio, state.stats.bytes_saved

How it reduces a bucket: every rank encodes its bucket into a frame; the ranks exchange the
frame lengths (an ``all_gather`` of one int64 each, waited for inside the hook: a
collective launched and waited for inside a future's callback can starve gloo's worker
threads), then the frames, zero-padded to the longest (an asynchronous ``all_gather``);
when that completes, every rank decodes all frames and averages them in rank order. All
ranks therefore end with bit-identical averages, as DDP needs. The length exchange costs
one small round trip per bucket during the backward pass.

When it pays: a ring all-reduce moves about ``2 (W-1)/W`` times the raw bucket through each
rank's link; the gather moves ``(W-1)`` padded frames in. With a compression ratio ``r``
the hook sends less only when ``r > W/2``: with the lossless profile (about 1.2x on float32
gradients) that is W = 2 ranks; a lossy profile at 8x pays up to W = 16. Beyond that an
all-reduce of raw gradients moves fewer bytes, and this hook is the wrong tool. The
statistics say which side of the line a run is on.

Error feedback (``error_feedback=True``): each rank adds the previous step's coding error
of a bucket to the bucket before encoding it and keeps the new error (what the frame loses)
for the next step, as PowerSGD does. It costs one extra decode per bucket and memory for one
residual per bucket, and is only useful with lossy profiles: with ``lossless`` the error is
exactly zero.

Buckets of a dtype the codec does not code (float64, say) are averaged with a plain
all-reduce, and counted as uncompressed.
"""

# No `from __future__ import annotations` here: DDP checks the hook's annotations against
# the real dist.GradBucket and torch.futures.Future classes.

from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.distributed as dist

from .._api import Codec
from .._core import LimitExceededError
from ._ops import _CODED, as_codec, decode_frame, encode_tensor
from ._p2p import _uses_cuda, default_max_frame_bytes


@dataclass
class HookStats:
    """What the hook has moved on this rank, summed over calls.

    - ``buckets``: buckets reduced;
    - ``raw_bytes``: the buckets' size in memory;
    - ``frame_bytes``: this rank's frames;
    - ``sent_bytes``: what this rank put into the collectives (padded frames and length
      words; raw bytes for uncompressed buckets);
    - ``received_bytes``: what it took out of them from the other ranks.
    """

    buckets: int = 0
    raw_bytes: int = 0
    frame_bytes: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0

    @property
    def ratio(self) -> float:
        """Raw bytes per frame byte (0 before the first bucket)."""
        return self.raw_bytes / self.frame_bytes if self.frame_bytes else 0.0

    @property
    def bytes_saved(self) -> int:
        """``raw_bytes - sent_bytes``: what sending the raw buckets once would have cost
        more (negative when padding and length words cost more than coding saved)."""
        return self.raw_bytes - self.sent_bytes

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


@dataclass
class IotaHookState:
    """Settings and statistics of :func:`iota_hook`.

    Args:
        codec: how gradient buckets are encoded (a :class:`iota_codec.Codec`, a config dict
            or a profile name; default lossless). Its ``max_output_bytes`` also limits the
            frames accepted from other ranks.
        process_group: the group to reduce over (default: the world, as DDP's).
        error_feedback: carry each bucket's coding error over to the next step (see the
            module documentation).

    Attributes:
        stats: a :class:`HookStats`.
        residuals: bucket index -> the coding error kept for error feedback.
    """

    codec: Any = None
    process_group: Any = None
    error_feedback: bool = False
    stats: HookStats = field(default_factory=HookStats)
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codec = as_codec(self.codec)

    def __getstate__(self) -> dict[str, Any]:
        # DDP pickles hook states when a model is saved; groups and residuals do not travel.
        d = dict(self.__dict__)
        d["process_group"] = None
        d["residuals"] = {}
        d["codec"] = self.codec.get_config()
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self.codec = Codec.from_config(d["codec"])


def _plain_allreduce(state: IotaHookState, group: Any, world: int, buf: torch.Tensor):
    nbytes = buf.numel() * buf.element_size()
    state.stats.buckets += 1
    state.stats.raw_bytes += nbytes
    state.stats.frame_bytes += nbytes
    state.stats.sent_bytes += nbytes
    state.stats.received_bytes += nbytes * (world - 1)
    work = dist.all_reduce(buf.div_(world), group=group, async_op=True)
    return work.get_future().then(lambda f: f.value()[0])


def iota_hook(state: IotaHookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Averages a gradient bucket over the ranks through compressed frames; register with
    ``ddp_model.register_comm_hook(state, iota_hook)``. See the module documentation."""
    group = state.process_group
    world = dist.get_world_size(group)
    buf = bucket.buffer()
    if buf.dtype not in _CODED:
        return _plain_allreduce(state, group, world, buf)
    codec: Codec = state.codec
    grad = buf
    index = bucket.index()
    if state.error_feedback:
        residual = state.residuals.get(index)
        if residual is not None and residual.shape == buf.shape:
            grad = buf + residual
    frame = encode_tensor(grad, codec)
    if state.error_feedback:
        decoded = decode_frame(frame, codec, device=grad.device)
        state.residuals[index] = grad - decoded

    wire = torch.device("cuda", torch.cuda.current_device()) if _uses_cuda(group) else None
    n = frame.numel()
    # The lengths first, waited for here (see the module documentation); frames then go
    # asynchronously.
    size = torch.tensor([n], dtype=torch.int64, device=wire)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    lens = [int(s.item()) for s in sizes]
    longest = max(lens)
    limit = default_max_frame_bytes(codec)
    if longest > limit or min(lens) <= 0:
        raise LimitExceededError(
            f"a rank announced a gradient frame of {longest} bytes (limit {limit})"
        )
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[:n] = frame
    if wire is not None:
        padded = padded.to(wire)
    frames = [torch.empty_like(padded) for _ in range(world)]
    fut = dist.all_gather(frames, padded, group=group, async_op=True).get_future()

    def average(_: torch.futures.Future) -> torch.Tensor:
        total: torch.Tensor | None = None
        for length, f in zip(lens, frames, strict=True):
            g = decode_frame(
                f[:length], codec, dtype=buf.dtype, shape=tuple(buf.shape), device=buf.device
            )
            total = g if total is None else total.add_(g)
        assert total is not None
        stats = state.stats
        stats.buckets += 1
        stats.raw_bytes += buf.numel() * buf.element_size()
        stats.frame_bytes += n
        stats.sent_bytes += longest + 8
        stats.received_bytes += (longest + 8) * (world - 1)
        return total.div_(world)

    return fut.then(average)
