"""What the ranks of the multi-process tests run (see ``distributed.run_ranks``).

Each function runs inside a spawned rank with a gloo process group already set up and
returns plain data (tensors, numbers, dicts) for the test in the parent process to check.
"""

from __future__ import annotations

import os
import time

import iota_codec
import iota_codec.torch as it
import torch
import torch.distributed as dist
from iota_codec.torch import _p2p


def sample(seed: int, shape=(3, 50), dtype=torch.float32, specials: bool = True) -> torch.Tensor:
    """A deterministic tensor both sides can make, with specials (signed zero, NaN, inf, a
    subnormal) mixed in unless ``specials=False``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    flat = x.view(-1)
    if specials and flat.numel() >= 4:
        flat[0] = -0.0
        flat[1] = float("nan")
        flat[2] = float("inf")
        flat[3] = torch.finfo(dtype).tiny / 4  # a subnormal
    return x


SAMPLES = [
    (1, (3, 50), torch.float32),
    (2, (7, 9, 4), torch.bfloat16),
    (3, (1000,), torch.float16),
    (4, (), torch.float32),
    (5, (2, 0, 3), torch.bfloat16),
]


# --- point-to-point --------------------------------------------------------------------------


def p2p(rank: int, world: int, profiles: list[str]) -> dict:
    """rank 0 sends, rank 1 receives, through every entry point; then protocol errors."""
    peer = 1 - rank
    out: dict = {"received": {}, "errors": {}}
    for profile in profiles:
        codec = iota_codec.Codec(profile)
        sp = profile == "lossless"
        if rank == 0:
            for seed, shape, dtype in SAMPLES:
                it.send(sample(seed, shape, dtype, sp), 1, codec=codec)
            works = [it.isend(sample(seed, s, d, sp), 1, codec=codec) for seed, s, d in SAMPLES]
            for w in works:
                w.wait()
        else:
            got = []
            for _ in SAMPLES:
                got.append(it.recv(src=0))
            works = [it.irecv(src=0) for _ in SAMPLES]
            got += [w.wait() for w in works]
            out["received"][profile] = got

    # A channel: sequencing, out-of-order waits, out=, stats, per-message codec.
    ch = it.Channel(peer, "lossless", tag=7, timeout=30)
    if rank == 0:
        for seed, shape, dtype in SAMPLES:
            ch.send(sample(seed, shape, dtype))
        w = [ch.isend(sample(10 + i)) for i in range(3)]
        ch.flush()
        assert all(x.is_completed() for x in w)
        ch.send(sample(20), codec=iota_codec.Codec(chunk_size=7))
    else:
        first = [ch.recv() for _ in SAMPLES]
        works = [ch.irecv() for _ in range(3)]
        last_first = [works[2].wait(), works[0].wait(), works[1].wait()]
        buf = torch.empty(3, 50)
        res = ch.recv(out=buf)
        out["channel"] = {
            "first": first,
            "out_of_order": last_first,
            "out_is_buf": res is buf,
            "buf": buf,
        }
    out["stats"] = ch.stats.as_dict()

    # Protocol errors, each on its own tag so that the streams stay apart.
    if rank == 0:
        header = torch.tensor([_p2p.MAGIC, _p2p.TENSOR, -1, 1 << 40], dtype=torch.int64)
        dist.send(header, 1, tag=20)  # announces a 1 TiB frame and sends none
        dist.send(torch.tensor([1, 2, 3, 4], dtype=torch.int64), 1, tag=21)  # not a header
        frame = it.encode(sample(30))
        frame[len(frame) // 2] ^= 0x10  # damage a byte of the payload
        header = torch.tensor([_p2p.MAGIC, _p2p.TENSOR, -1, frame.numel()], dtype=torch.int64)
        dist.send(header, 1, tag=22)
        dist.send(frame, 1, tag=22)
        it.send(sample(31), 1, tag=23)  # unsequenced, but the receiver uses a Channel
    else:
        for tag in (20, 21, 22):
            try:
                it.recv(src=0, tag=tag)
                out["errors"][tag] = None
            except Exception as e:
                out["errors"][tag] = (type(e).__name__, str(e))
        chan = it.Channel(0, tag=23)
        try:
            chan.recv()
            out["errors"][23] = None
        except Exception as e:
            out["errors"][23] = (type(e).__name__, str(e))
        try:
            chan.recv()
        except it.TransferError as e:
            out["errors"]["broken"] = str(e)
    return out


def prefetching(rank: int, world: int) -> dict:
    """A channel with ``prefetch=True`` receives while its owner is busy elsewhere; a
    corrupt header and a silent peer surface in the waiting thread."""
    out: dict = {}
    if rank == 0:
        ch = it.Channel(1, tag=60)
        ch.send(sample(60))
        ch.send(sample(61, (64, 1024)))  # more than one socket write
        dist.send(torch.tensor([1, 2, 3, 4], dtype=torch.int64), 1, tag=61)  # not a header
        return out
    ch = it.Channel(0, tag=60, prefetch=True, timeout=30)
    works = [ch.irecv(), ch.irecv()]  # starts the reader; nothing waits on them yet
    start = time.monotonic()
    while not all(w.is_completed() for w in works) and time.monotonic() - start < 30:
        time.sleep(0.01)
    out["arrived_unasked"] = all(w.is_completed() for w in works)
    out["got"] = [w.wait() for w in works]
    out["stats"] = ch.stats.as_dict()
    try:
        it.Channel(0, tag=61, prefetch=True, timeout=30).recv()
    except Exception as e:
        out["corrupt"] = (type(e).__name__, str(e))
    silent = it.Channel(0, tag=62, prefetch=True, timeout=1.0)
    start = time.monotonic()
    try:
        silent.recv()
    except it.TransferError as e:
        out["silent"] = (time.monotonic() - start, str(e), silent.broken)
    return out


def three_ranks(rank: int, world: int) -> dict:
    """Ranks 1 and 2 both send to rank 0, interleaved; a subgroup of ranks 0 and 2."""
    sub = dist.new_group([0, 2])
    out: dict = {}
    if rank == 0:
        a, b = it.Channel(1, tag=1), it.Channel(2, tag=1)
        wa, wb = [a.irecv() for _ in range(3)], [b.irecv() for _ in range(3)]
        out["from1"] = [w.wait() for w in reversed(wa)][::-1]
        out["from2"] = [w.wait() for w in wb]
        out["sub"] = it.recv(src=2, group=sub, tag=5)
        out["stats"] = (a.stats.as_dict(), b.stats.as_dict())
    else:
        ch = it.Channel(0, tag=1)
        for i in range(3):
            ch.send(sample(100 * rank + i))
        if rank == 2:
            it.send(sample(999), 0, group=sub, tag=5)
    return out


# --- pipeline ---------------------------------------------------------------------------------

PIPE_CFG = dict(d_model=32, n_layers=2, n_heads=2, seq_len=16, vocab=256)
PIPE_BATCH = 8


def stage_modules(n_stages: int, seed: int = 0):
    """The model of the pipeline tests, cut into ``n_stages`` parts: [embed, block0],
    [block1], ..., [block_{n-1}, head] (with ``n_stages`` blocks)."""
    from iota_codec.data import GPTConfig, make_gpt

    cfg = GPTConfig(**{**PIPE_CFG, "n_layers": n_stages})
    mods = make_gpt(cfg, seed)
    parts = [torch.nn.Sequential(mods[0], mods[1])]
    parts += [torch.nn.Sequential(mods[i + 1]) for i in range(1, n_stages - 1)]
    parts.append(torch.nn.Sequential(mods[n_stages], mods[n_stages + 1]))
    return parts


def pipe_batches(steps: int, micro: int, seed: int = 0):
    """``steps`` lists of ``micro`` (input, target) micro-batches."""
    from iota_codec.data import batches

    corpus = bytes(range(256)) * 64 + b"the quick brown fox jumps over the lazy dog. " * 200
    stream = batches(corpus, PIPE_BATCH, PIPE_CFG["seq_len"], seed)
    out = []
    for _ in range(steps):
        x, y = next(stream)
        out.append(list(zip(x.chunk(micro), y.chunk(micro), strict=True)))
    return out


def schedule(kind: str, rank: int, n_stages: int, micro: int) -> list[tuple[str, int]]:
    """The order of forward ("F", m) and backward ("B", m) work of one stage."""
    if kind == "gpipe":
        # All forwards, then all backwards: the last stage goes backwards through the
        # micro-batches, the others forwards, so gradients arrive out of order.
        back = range(micro - 1, -1, -1) if rank == n_stages - 1 else range(micro)
        return [("F", m) for m in range(micro)] + [("B", m) for m in back]
    assert kind == "1f1b"
    warm = min(n_stages - rank - 1, micro)
    ops = [("F", m) for m in range(warm)]
    f, b = warm, 0
    while f < micro:
        ops += [("F", f), ("B", b)]
        f, b = f + 1, b + 1
    ops += [("B", m) for m in range(b, micro)]
    return ops


def loss_fn(logits: torch.Tensor, target: torch.Tensor, micro: int) -> torch.Tensor:
    return (
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        / micro
    )


def pipeline(
    rank: int,
    world: int,
    kind: str,
    profile: str,
    grad_profile: str,
    steps: int,
    micro: int,
    tag: int = 0,
    **channel_kw,
) -> dict:
    """Trains the model as a ``world``-stage pipeline with compressed boundaries, in the
    ``kind`` schedule ("gpipe" or "1f1b"), with SGD on each stage. ``channel_kw`` go to the
    channels (``session=``, ``error_feedback=``); ``profile`` may be a codec config."""
    part = stage_modules(world)[rank]
    opt = torch.optim.SGD(part.parameters(), lr=0.5, momentum=0.9)
    data = pipe_batches(steps, micro)
    kw = dict(grad_codec=grad_profile, timeout=60, tag=tag, **channel_kw)
    prev = it.Channel(rank - 1, profile, **kw) if rank else None
    last = rank == world - 1
    nxt = None if last else it.Channel(rank + 1, profile, **kw)
    rec: dict = {"losses": [], "sent_grads": {}, "recv_grads": {}, "sent_acts": {}, "recv_acts": {}}
    rec["act_order"], rec["grad_order"] = [], []
    for step in range(steps):
        outs, ins = {}, {}
        for op, m in schedule(kind, rank, world, micro):
            x, y = data[step][m]
            if op == "F":
                if rank == 0:
                    h = part(x)
                else:
                    inp = it.recv_activation(prev)
                    inp.retain_grad()
                    ins[m] = inp
                    rec["recv_acts"][step, m] = inp.detach().clone()
                    h = part(inp)
                if last:
                    outs[m] = loss_fn(h, y, micro)
                else:
                    rec["sent_acts"][step, m] = h.detach().clone()
                    rec["act_order"].append((step, m))
                    # h feeds only the boundary, so its gradient is exactly what was received.
                    h.register_hook(
                        lambda g, key=(step, m): rec["recv_grads"].__setitem__(
                            key, g.detach().clone()
                        )
                    )
                    outs[m] = it.send_activation(h, nxt)
            else:
                if last:
                    rec["losses"].append((step, m, float(outs[m].detach()) * micro))
                outs[m].backward()
                if rank > 0:
                    rec["sent_grads"][step, m] = ins[m].grad.detach().clone()
                    rec["grad_order"].append((step, m))
        opt.step()
        opt.zero_grad(set_to_none=True)
        for ch in (prev, nxt):
            if ch is not None:
                ch.flush()
    rec["params"] = {k: v.detach().clone() for k, v in part.state_dict().items()}
    rec["stats"] = {
        "prev": None if prev is None else prev.stats.as_dict(),
        "next": None if nxt is None else nxt.stats.as_dict(),
    }
    rec["sessions"] = {
        side: {k: s.state_hash for k, s in ch.state.items()}
        for side, ch in (("prev", prev), ("next", nxt))
        if ch is not None
    }
    return rec


def reference_pipeline(kind: str, n_stages: int, steps: int, micro: int) -> dict:
    """The same training as :func:`pipeline`, in one process with nothing compressed: the
    stages are cut apart with ``detach`` and each stage's backward passes run in the order
    its schedule gives them (so parameter gradients accumulate in the same order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parts = stage_modules(n_stages)
        opts = [torch.optim.SGD(p.parameters(), lr=0.5, momentum=0.9) for p in parts]
        data = pipe_batches(steps, micro)
        rec: dict = {"losses": [], "boundary_grads": {}, "boundary_acts": {}}
        for step in range(steps):
            outs = {}  # (stage, m) -> output of that stage (loss for the last)
            ins = {}  # (stage, m) -> detached input of that stage
            for m in range(micro):
                x, y = data[step][m]
                h = x
                for s, part in enumerate(parts):
                    if s > 0:
                        h = h.detach().requires_grad_(True)
                        ins[s, m] = h
                    h = part(h)
                    if s < n_stages - 1:
                        rec["boundary_acts"][s, step, m] = h.detach().clone()
                    outs[s, m] = h
                outs[n_stages - 1, m] = loss_fn(h, y, micro)
            for s in range(n_stages - 1, -1, -1):
                for op, m in schedule(kind, s, n_stages, micro):
                    if op != "B":
                        continue
                    if s == n_stages - 1:
                        rec["losses"].append((step, m, float(outs[s, m].detach()) * micro))
                        outs[s, m].backward()
                    else:
                        g = ins[s + 1, m].grad
                        rec["boundary_grads"][s, step, m] = g.detach().clone()
                        outs[s, m].backward(g)
            for o in opts:
                o.step()
                o.zero_grad(set_to_none=True)
        rec["params"] = [{k: v.detach().clone() for k, v in p.state_dict().items()} for p in parts]
        return rec
    finally:
        torch.set_num_threads(threads)


# --- DDP --------------------------------------------------------------------------------------


def _ddp_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(24, 64),
        torch.nn.GELU(),
        torch.nn.Linear(64, 64),
        torch.nn.GELU(),
        torch.nn.Linear(64, 8),
    )


def ddp(rank: int, world: int, profile: str, steps: int) -> dict:
    """Trains a small MLP with DDP and the iota hook, checking each step's averaged gradients
    against the local gradients of all ranks."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    local = _ddp_model()
    model = DDP(_ddp_model(), bucket_cap_mb=0.01)  # several buckets
    state = it.IotaHookState(codec=profile, error_feedback=True)
    calls: list = []  # (bucket index, bucket in, average out) of every hook call

    def recording_hook(state, bucket):  # unannotated: DDP checks real annotations
        entry = [bucket.index(), bucket.buffer().clone(), None]
        calls.append(entry)

        def keep(f: torch.futures.Future) -> torch.Tensor:
            entry[2] = f.value().clone()
            return f.value()

        return it.iota_hook(state, bucket).then(keep)

    model.register_comm_hook(state, recording_hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lopt = torch.optim.SGD(local.parameters(), lr=0.1)
    rec: dict = {"grads": [], "local": [], "params": None}
    for step in range(steps):
        g = torch.Generator().manual_seed(1000 * step + rank)
        x, y = torch.randn(16, 24, generator=g), torch.randn(16, 8, generator=g)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        rec["grads"].append([p.grad.detach().clone() for p in model.parameters()])
        # The same model outside DDP: this rank's own gradients.
        local.load_state_dict(model.module.state_dict())
        lopt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(local(x), y).backward()
        rec["local"].append([p.grad.detach().clone() for p in local.parameters()])
        opt.step()
    rec["params"] = [p.detach().clone() for p in model.parameters()]
    rec["calls"] = calls
    rec["stats"] = dict(
        vars(state.stats), ratio=state.stats.ratio, bytes_saved=state.stats.bytes_saved
    )
    rec["residual_max"] = max(
        (float(r.abs().max()) for r in state.residuals.values() if r.numel()), default=0.0
    )
    rec["n_residuals"] = len(state.residuals)
    return rec


# --- failures ---------------------------------------------------------------------------------


def failures(rank: int, world: int) -> dict:
    """Rank 0 talks to peers that fail, and none of it may hang:

    - rank 1 stays alive but silent on a two-rank subgroup: the receive must time out
      (gloo then closes that group's connections, which is why it has its own group);
    - rank 1 then sends a header on the world group and dies before the frame;
    - rank 2 receives an activation and dies: rank 0's backward must raise, and so must a
      large send to it.
    """
    pair = dist.new_group([0, 1])
    out: dict = {}
    if rank == 0:
        ch = it.Channel(1, group=pair, timeout=1.5)
        t = time.monotonic()
        try:
            ch.recv()
        except it.TransferError as e:
            out["silent"] = (time.monotonic() - t, str(e))
        try:
            ch.recv()
        except it.TransferError as e:
            out["silent_broken"] = str(e)
        dist.send(torch.ones(1), 1, tag=9)  # the world group still works: go on, rank 1
        t = time.monotonic()
        try:
            it.Channel(1, timeout=30).recv()
        except it.TransferError as e:
            out["mid_transfer"] = (time.monotonic() - t, str(e))
        ch = it.Channel(2, timeout=30)
        x = torch.randn(4, 8, requires_grad=True)
        y = it.send_activation(x * 2, ch)
        t = time.monotonic()
        try:
            y.backward()
        except it.TransferError as e:
            out["backward"] = (time.monotonic() - t, str(e))
        try:
            ch.send(torch.ones(1))
        except it.TransferError as e:
            out["broken"] = str(e)
        big = torch.randn(8 << 20)  # 32 MiB, more than socket buffers hold
        t = time.monotonic()
        try:
            it.send(big, 2, timeout=30)
            it.send(big, 2, timeout=30)
        except it.TransferError as e:
            out["send"] = (time.monotonic() - t, str(e))
        return out
    if rank == 1:
        dist.recv(torch.empty(1), 0, tag=9)  # silent until rank 0 has timed out
        header = torch.tensor([_p2p.MAGIC, _p2p.TENSOR, 0, 1_000_000], dtype=torch.int64)
        dist.send(header, 0)
        time.sleep(0.5)
        os._exit(3)  # dies mid-transfer: header sent, frame never
    it.recv_activation(it.Channel(0))
    time.sleep(0.5)
    os._exit(3)


# --- suites: one spawn each -------------------------------------------------------------------

PIPE_STEPS, PIPE_MICRO = 3, 4
# Shared-basis sessions on the pipeline boundary (refreshed every 3 frames).
SESSION_CODEC = {"error": 0.05}
SESSION_STEPS = 4


def pair_suite(rank: int, world: int, profiles: list[str]) -> dict:
    """Everything the two-rank tests check, in one set of processes."""
    out = {"p2p": p2p(rank, world, profiles), "pipeline": {}, "session": {}, "prefetch": {}}
    tag = 100
    for profile in profiles:
        for kind in ("gpipe", "1f1b"):
            tag += 1
            out["pipeline"][profile, kind] = pipeline(
                rank, world, kind, profile, profile, PIPE_STEPS, PIPE_MICRO, tag
            )
    for kind in ("gpipe", "1f1b"):
        tag += 1
        out["session"][kind] = pipeline(
            rank,
            world,
            kind,
            SESSION_CODEC,
            SESSION_CODEC,
            SESSION_STEPS,
            PIPE_MICRO,
            tag,
            session={"refresh": 3},
            error_feedback=True,
        )
        out["session"][kind]["tag"] = tag
        tag += 1
        out["prefetch"][kind] = pipeline(
            rank, world, kind, "lossless", "lossless", PIPE_STEPS, PIPE_MICRO, tag, prefetch=True
        )
    out["prefetching"] = prefetching(rank, world)
    return out


def trio_suite(rank: int, world: int, profiles: list[str]) -> dict:
    """Everything the three-rank tests check, in one set of processes."""
    out = {"three": three_ranks(rank, world), "ddp": {}}
    out["pipeline"] = pipeline(rank, world, "1f1b", "lossless", "lossless", 2, PIPE_MICRO, 50)
    for profile in profiles:
        out["ddp"][profile] = ddp(rank, world, profile, 3)
    return out
