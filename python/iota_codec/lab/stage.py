"""One pipeline stage of a lab run: ``python -m iota_codec.lab.stage SPEC.json RANK``.

Rank 0 holds the embedding and the first half of the blocks (and, with a bottleneck, its
encoder), rank 1 the rest and the head (the bottleneck's decoder first). They train with
the same seed on the same batches, in micro-batches: rank 0 runs a micro-batch forward and
sends its boundary activation, rank 1 receives it, finishes the forward pass and the loss,
and sends the gradient back, in the order of :func:`schedule` (1F1B by default, or GPipe);
after each step both step their optimizers.

The boundary crosses the link in bfloat16 in every run (as pipeline training ships it):

- ``raw``: the bf16 tensors as they are, with every receive of a step posted at its start
  (what a good uncompressed pipeline does, so that transfers overlap compute);
- ``codec``: :func:`iota_codec.torch.send_activation` / ``recv_activation`` over a
  :class:`iota_codec.torch.Channel` (receiving ahead, ``prefetch=True``), activations coded
  with the run's codec and gradients with its gradient codec.

The transport is torch.distributed (gloo) in the kernel-link lab, or a
:class:`~iota_codec.lab.net.SocketTransport` through the paced relay in the fallback.
Each rank writes ``rank<R>.json`` (step times, losses, bytes) and ``rank<R>.pt`` (its
weights) into the run's folder, then exits without tearing the process group down.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import signal
import sys
import time
import traceback
from typing import Any

import torch
import torch.nn.functional as F

import iota_codec.torch as it
from iota_codec.data import GPTConfig, batches
from iota_codec.torch._ops import as_codec

from . import model
from .net import SocketTransport

BF16 = torch.bfloat16


# --- transports ------------------------------------------------------------------------------


class GlooTransport:
    """Point-to-point over the default gloo group, one tag per message stream."""

    def __init__(self, peer: int) -> None:
        import torch.distributed as dist

        self.dist, self.peer = dist, peer

    def isend(self, t: torch.Tensor, tag: int) -> Any:
        return self.dist.isend(t, self.peer, tag=tag)

    def irecv(self, t: torch.Tensor, tag: int) -> Any:
        return self.dist.irecv(t, self.peer, tag=tag)

    def barrier(self, seconds: float) -> None:
        self.dist.barrier(async_op=True).wait(datetime.timedelta(seconds=seconds))


class PacedTransport:
    """The fallback's socket: an ordered stream, so tags are ignored (both sides go in the
    same order)."""

    def __init__(self, sock: SocketTransport) -> None:
        self.sock = sock

    def isend(self, t: torch.Tensor, tag: int) -> Any:
        return self.sock.isend(t)

    def irecv(self, t: torch.Tensor, tag: int) -> Any:
        return self.sock.irecv(t)

    def barrier(self, seconds: float) -> None:
        """Nothing to wait for: what a stage has sent is in the relay, which delivers it
        even after the sender is gone (and a channel's reader may hold the stream's next
        receive, so a token could not be told apart anyway)."""


class SocketChannel(it.Channel):
    """A :class:`iota_codec.torch.Channel` whose messages travel through the paced socket."""

    def __init__(self, sock: SocketTransport, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sock = sock

    def _transport_isend(self, tensor: torch.Tensor) -> Any:
        return self._sock.isend(tensor)

    def _transport_irecv(self, tensor: torch.Tensor) -> Any:
        return self._sock.irecv(tensor)


# --- the raw boundary ------------------------------------------------------------------------


class _Pending:
    def __init__(self, work: Any, tensor: torch.Tensor) -> None:
        self.work, self.tensor = work, tensor


class _RawSend(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, boundary: RawBoundary, m: int) -> torch.Tensor:
        boundary.send_forward(x, m)
        ctx.boundary, ctx.m = boundary, m
        return x.new_zeros(())

    @staticmethod
    def backward(ctx: Any, _g: torch.Tensor) -> tuple[Any, None, None]:
        return ctx.boundary.wait_gradient(ctx.m), None, None


class _RawRecv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, boundary: RawBoundary, m: int) -> torch.Tensor:
        del anchor
        ctx.boundary, ctx.m = boundary, m
        return boundary.wait_activation(m)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[None, None, None]:
        ctx.boundary.send_backward(g, ctx.m)
        return None, None, None


class RawBoundary:
    """Uncompressed bf16 tensors of a known shape; micro-batch ``m`` travels on tag ``m``
    forward and ``micro + m`` backward, and each step's receives are all posted when it
    starts."""

    def __init__(self, transport: Any, rank: int, micro: int, shape: tuple[int, ...]) -> None:
        self.t, self.rank, self.micro, self.shape = transport, rank, micro, shape
        self.recvs: dict[int, _Pending] = {}
        self.sends: list[_Pending] = []
        self.raw_sent = self.raw_received = 0

    def begin_step(self) -> None:
        for m in range(self.micro):
            buf = torch.empty(self.shape, dtype=BF16)
            tag = self.micro + m if self.rank == 0 else m
            self.recvs[m] = _Pending(self.t.irecv(buf, tag), buf)

    def _wait(self, m: int) -> torch.Tensor:
        p = self.recvs.pop(m)
        p.work.wait()
        self.raw_received += p.tensor.numel() * 2
        return p.tensor

    def send_forward(self, x: torch.Tensor, m: int) -> None:
        x = x.detach().contiguous()
        self.sends.append(_Pending(self.t.isend(x, m), x))
        self.raw_sent += x.numel() * 2

    def send_backward(self, g: torch.Tensor, m: int) -> None:
        g = g.detach().to(BF16).contiguous()
        self.sends.append(_Pending(self.t.isend(g, self.micro + m), g))
        self.raw_sent += g.numel() * 2

    def wait_gradient(self, m: int) -> torch.Tensor:
        return self._wait(m)

    def wait_activation(self, m: int) -> torch.Tensor:
        return self._wait(m)

    def send(self, x: torch.Tensor, m: int) -> torch.Tensor:
        return _RawSend.apply(x, self, m)

    def recv(self, m: int) -> torch.Tensor:
        return _RawRecv.apply(torch.empty(0, requires_grad=True), self, m)

    def end_step(self) -> None:
        for p in self.sends:
            p.work.wait()
        self.sends.clear()

    def stats(self) -> dict[str, int]:
        return {
            "raw_sent": self.raw_sent,
            "wire_sent": self.raw_sent,
            "raw_received": self.raw_received,
            "wire_received": self.raw_received,
        }


class CodecBoundary:
    """The iota-codec autograd boundary over a prefetching channel."""

    def __init__(self, channel: it.Channel) -> None:
        self.ch = channel

    def begin_step(self) -> None:
        pass

    def send(self, x: torch.Tensor, m: int) -> torch.Tensor:
        return it.send_activation(x, self.ch)

    def recv(self, m: int) -> torch.Tensor:
        return it.recv_activation(self.ch)

    def end_step(self) -> None:
        self.ch.flush()

    def stats(self) -> dict[str, int]:
        s = self.ch.stats
        return {
            "raw_sent": s.raw_bytes_sent,
            "wire_sent": s.wire_bytes_sent,
            "raw_received": s.raw_bytes_received,
            "wire_received": s.wire_bytes_received,
        }


# --- the run ---------------------------------------------------------------------------------

SCHEDULES = ("1f1b", "gpipe")


def schedule(kind: str, rank: int, micro: int, ahead: int = 1) -> list[tuple[str, int]]:
    """The order of forward ("F", m) and backward ("B", m) work of a stage of two.

    - ``gpipe``: every forward, then every backward (in micro-batch order);
    - ``1f1b``: rank 0 runs ``ahead`` forwards (1F1B's own is 1), then alternates forward
      and backward, so that its forwards run ``ahead`` micro-batches ahead of its
      backwards; rank 1 runs each micro-batch's backward right after its forward.
      Activations and gradients then cross the link at the same time, in opposite
      directions. With ``ahead=1`` each micro-batch's activation and gradient transfers lie
      on the step's critical path (rank 0 needs the gradient of micro-batch m before it
      can send m + 2); each further forward ahead gives the link one more micro-batch of
      rank 1's work to hide them behind, for one more micro-batch of activations kept on
      rank 0.
    """
    if kind == "gpipe":
        return [("F", m) for m in range(micro)] + [("B", m) for m in range(micro)]
    if kind != "1f1b":
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    if not 1 <= ahead <= micro:
        raise ValueError(f"ahead={ahead} must be between 1 and the {micro} micro-batches")
    warm = ahead if rank == 0 else 0
    ops = [("F", m) for m in range(warm)]
    for m in range(warm, micro):
        ops += [("F", m), ("B", m - warm)]
    ops += [("B", m) for m in range(micro - warm, micro)]
    return ops


def run(spec: dict[str, Any], rank: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    peer = 1 - rank
    timeout = float(spec["timeout_s"])
    if spec["transport"] == "gloo":
        import torch.distributed as dist

        dist.init_process_group(
            "gloo",
            init_method=f"tcp://{spec['master']}",
            rank=rank,
            world_size=2,
            timeout=datetime.timedelta(seconds=timeout),
        )
        transport: Any = GlooTransport(peer)
        sock = None
    else:
        sock = SocketTransport(spec["ports"][rank], timeout=timeout)
        transport = PacedTransport(sock)

    cfg = GPTConfig(**spec["model"])
    stages = model.build_stages(cfg, spec["bottleneck"], spec["seed"], spec.get("hidden"))
    part = stages[rank]
    opts = model.make_optimizers(
        part, spec.get("optimizer", "adamw"), spec["lr"], spec.get("muon_dtype")
    )
    train, _ = model.split_corpus()
    data = batches(train, spec["batch"], cfg.seq_len, spec["seed"])
    micro = spec["micro"]
    width = spec["bottleneck"] or cfg.d_model
    shape = (spec["batch"] // micro, cfg.seq_len, width)

    if spec["codec"] is None:
        boundary: Any = RawBoundary(transport, rank, micro, shape)
    else:
        kw = dict(
            grad_codec=as_codec(spec["grad_codec"]),
            timeout=timeout,
            prefetch=True,
        )
        codec = as_codec(spec["codec"])
        if sock is None:
            channel = it.Channel(peer, codec, **kw)
        else:
            channel = SocketChannel(sock, peer, codec, **kw)
        boundary = CodecBoundary(channel)

    ops = schedule(spec.get("schedule", "1f1b"), rank, micro, spec.get("ahead", 1))
    ends, losses = [], []
    every = spec.get("snapshot_every")
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    start = time.perf_counter()
    for step in range(spec["steps"]):
        x, y = next(data)
        xs, ys = x.chunk(micro), y.chunk(micro)
        boundary.begin_step()
        outs: dict[int, torch.Tensor] = {}
        for op, m in ops:
            if op == "F":
                if rank == 0:
                    outs[m] = boundary.send(part(xs[m]).to(BF16), m)
                else:
                    logits = part(boundary.recv(m).float())
                    loss = F.cross_entropy(logits.flatten(0, 1), ys[m].flatten()) / micro
                    outs[m] = loss
            else:
                outs[m].backward()
        if rank == 1:
            losses.append(float(sum(o.detach() for o in outs.values())))
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        boundary.end_step()
        if every and (step + 1) % every == 0 and step + 1 < spec["steps"]:
            # A copy in memory (a few MB, about a millisecond), written when the run ends.
            snapshots[step + 1] = {k: v.detach().clone() for k, v in part.state_dict().items()}
        ends.append(time.perf_counter() - start)
    transport.barrier(min(timeout, 60.0))
    return {
        "rank": rank,
        "step_ends_s": ends,
        "losses": losses,
        "bytes": boundary.stats(),
        "boundary_shape": list(shape),
        "state": part.state_dict(),
        "snapshots": snapshots if every else None,
    }


def _die_with_parent(parent: int | None) -> None:
    """Asks Linux to kill this process when the lab that started it dies, so that a lab
    killed outright leaves no stage behind (``ip netns exec`` execs, so the parent is the
    lab)."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl
        os._exit(1)


def main(argv: list[str]) -> None:
    spec_path, rank = pathlib.Path(argv[0]), int(argv[1])
    spec = json.loads(spec_path.read_text())
    _die_with_parent(spec.get("parent_pid"))
    out = pathlib.Path(spec["out_dir"])
    try:
        result = run(spec, rank)
        torch.save(result.pop("state"), out / f"rank{rank}.pt")
        snapshots = result.pop("snapshots")
        if snapshots is not None:
            torch.save(snapshots, out / f"rank{rank}-snapshots.pt")
        status = {"ok": True, **result}
    except BaseException:
        status = {"ok": False, "rank": rank, "error": traceback.format_exc()}
    tmp = out / f"rank{rank}.json.tmp"
    tmp.write_text(json.dumps(status))
    os.replace(tmp, out / f"rank{rank}.json")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: a channel's reader still has a receive posted, and
    # destroying a process group under it can block.
    os._exit(0 if status["ok"] else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
