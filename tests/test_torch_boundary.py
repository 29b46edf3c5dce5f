"""Channels and the autograd boundary in one process, over an in-memory loopback that
stands in for torch.distributed (the real thing is tested in test_torch_dist.py).

Both ends of a link live in this process: a :class:`Loopback` replaces the ``dist``
module that ``iota_codec.torch._p2p`` uses, and each end's ``group`` says which rank it
plays. Messages are kept in FIFO queues per (src, dst, tag), as gloo delivers them.
"""

from __future__ import annotations

import collections
import types

import iota_codec
import iota_codec.torch as it
import pytest
import torch
from helpers import assert_within_codec_bound, bits
from iota_codec.torch import _p2p

PROFILES = list(iota_codec.PROFILES)


class _Work:
    def __init__(self, fn=None):
        self._fn = fn
        self._done = fn is None

    def is_completed(self):
        return self._done

    def wait(self, timeout=None):
        if not self._done:
            self._fn()
            self._done = True
        return True


class Loopback:
    """Just enough of torch.distributed for Channel: isend, irecv, get_backend."""

    def __init__(self):
        self.queues = collections.defaultdict(collections.deque)
        self.sent: list[tuple[int, int, int, torch.Tensor]] = []

    def isend(self, tensor, dst, group=None, tag=0):
        t = tensor.detach().clone()
        self.queues[group.rank, dst, tag].append(t)
        self.sent.append((group.rank, dst, tag, t))
        return _Work()

    def irecv(self, tensor, src, group=None, tag=0):
        def fill():
            q = self.queues[src, group.rank, tag]
            if not q:
                raise RuntimeError(f"Timed out waiting for recv from {src} (nothing sent)")
            t = q.popleft()
            if t.numel() != tensor.numel() or t.dtype != tensor.dtype:
                raise RuntimeError("message size mismatch")
            tensor.copy_(t)

        return _Work(fill)

    def get_backend(self, group=None):
        return "gloo"

    def frames(self, src: int) -> list[dict]:
        """``iota_codec.info`` of every frame ``src`` sent (headers skipped)."""
        return [
            iota_codec.info(t.numpy().tobytes())
            for s, _, _, t in self.sent
            if s == src and t.dtype == torch.uint8
        ]


@pytest.fixture
def loop(monkeypatch):
    fake = Loopback()
    monkeypatch.setattr(_p2p, "dist", fake)
    return fake


def _rank(r):
    return types.SimpleNamespace(rank=r)


def _pair(act_codec=None, grad_codec=None, **kw):
    a = it.Channel(1, act_codec, grad_codec=grad_codec, group=_rank(0), **kw)
    b = it.Channel(0, act_codec, grad_codec=grad_codec, group=_rank(1), **kw)
    return a, b


def _stages(seed=0):
    torch.manual_seed(seed)
    s0 = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh())
    s1 = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return s0, s1


@pytest.mark.parametrize("order", ["same", "reversed"])
@pytest.mark.parametrize("profile", PROFILES)
def test_boundary_micro_batches(loop, profile, order):
    """Four micro-batches, all forwards then all backwards; stage 1 runs its backwards in
    the given order while stage 0 always goes 0..3, so with "reversed" every gradient
    arrives before it is wanted and has to be kept aside. Activations use one codec and
    gradients another, and the frames show it."""
    # Chunk sizes that are whole blocks of every fixed-rate profile (they round down to one).
    act, grad = iota_codec.Codec(profile, chunk_size=128), iota_codec.Codec(profile, chunk_size=64)
    c0, c1 = _pair(act, grad)
    s0, s1 = _stages()
    r0, r1 = _stages()  # an uncompressed reference
    xs = [torch.randn(5, 12, generator=torch.Generator().manual_seed(m)) for m in range(4)]
    tokens, losses, received, h_grads = [], [], [], {}
    for m, x in enumerate(xs):
        h = s0(x)
        h.register_hook(lambda g, m=m: h_grads.__setitem__(m, g))
        tokens.append(it.send_activation(h, c0))
        assert tokens[-1].shape == () and tokens[-1].requires_grad
        xin = it.recv_activation(c1)
        assert xin.requires_grad and not xin.is_leaf
        xin.retain_grad()
        received.append((h.detach(), xin))
        losses.append(s1(xin).square().mean())
    back = range(3, -1, -1) if order == "reversed" else range(4)
    for m in back:
        losses[m].backward()
    for m in range(4):
        tokens[m].backward()
    for m in range(4):
        sent_act, xin = received[m]
        assert_within_codec_bound(act, sent_act, xin.detach())
        assert_within_codec_bound(grad, xin.grad, h_grads[m])
    if profile == "lossless":
        for m in back:
            r1_out = r1(r0(xs[m]))
            r1_out.square().mean().backward()
        for p, q in zip(
            [*s0.parameters(), *s1.parameters()], [*r0.parameters(), *r1.parameters()], strict=True
        ):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)
    sizes0 = {f["chunk_size"] for f in loop.frames(0)}
    sizes1 = {f["chunk_size"] for f in loop.frames(1)}
    assert sizes0 == {128} and sizes1 == {64}  # activations vs gradients
    assert c0.stats.messages_sent == c1.stats.messages_received == 4
    assert c1.stats.messages_sent == c0.stats.messages_received == 4
    assert not c0._stash and not c1._stash


def test_recv_activation_without_grad(loop):
    c0, c1 = _pair()
    x = torch.randn(3, 4)
    y = it.send_activation(x, c0)
    assert not y.requires_grad
    with torch.no_grad():
        got = it.recv_activation(c1)
    assert not got.requires_grad and torch.equal(got, x)
    it.send_activation(x, c0)
    assert not it.recv_activation(c1, requires_grad=False).requires_grad


def test_unused_activation_still_sends_a_gradient(loop):
    """An activation the loss depends on only partly still gets a (zero-filled) gradient,
    so the sender's backward never waits for nothing."""
    c0, c1 = _pair()
    h = torch.randn(2, 3, requires_grad=True)
    token = it.send_activation(h * 1, c0)
    xin = it.recv_activation(c1)
    (xin[0].sum() * 0 + xin[0, 0]).backward()
    token.backward()
    want = torch.zeros(2, 3)
    want[0, 0] = 1
    assert torch.equal(h.grad, want)


def test_channel_send_recv_and_stats(loop):
    c0, c1 = _pair(timeout=5)
    xs = [torch.randn(10, 10), torch.randn(3, dtype=torch.bfloat16), torch.tensor(1.5)]
    for x in xs:
        c0.send(x)
    works = [c1.irecv() for _ in xs]
    got = [works[i].wait() for i in (2, 0, 1)]
    for x, y in zip([xs[2], xs[0], xs[1]], got, strict=True):
        assert (bits(x) == bits(y)).all()
    assert works[0].wait() is got[1]  # waiting again returns the same tensor
    raw = sum(x.numel() * x.element_size() for x in xs)
    assert c0.stats.raw_bytes_sent == c1.stats.raw_bytes_received == raw
    assert c0.stats.wire_bytes_sent == sum(32 + f["frame_bytes"] for f in loop.frames(0))
    assert c0.stats.ratio_sent == pytest.approx(raw / c0.stats.wire_bytes_sent)
    d = c0.stats.as_dict()
    assert d["messages_sent"] == 3 and "ratio_received" in d
    c0.stats.reset()
    assert c0.stats.messages_sent == 0 and c0.stats.ratio_sent == 0.0


def test_recv_into_out_and_errors(loop):
    c0, c1 = _pair()
    c0.send(torch.arange(6.0).reshape(2, 3))
    out = torch.empty(2, 3)
    assert c1.recv(out=out) is out and torch.equal(out, torch.arange(6.0).reshape(2, 3))
    c0.send(torch.ones(4))
    with pytest.raises(iota_codec.InvalidArgumentError, match="out is"):
        c1.recv(out=torch.empty(5))
    # Nothing was sent: the (loopback's) timeout surfaces as a TransferError, and the
    # channel is unusable afterwards.
    with pytest.raises(it.TransferError, match="rank 0"):
        c1.recv()
    assert c1.broken
    with pytest.raises(it.TransferError, match="broken"):
        c1.recv()


def test_free_functions_and_hostile_header(loop):
    g0, g1 = _rank(0), _rank(1)
    it.send(torch.ones(3), 1, group=g0, tag=4)
    assert torch.equal(it.recv(src=0, group=g1, tag=4), torch.ones(3))
    w = it.isend(torch.zeros(2), 1, group=g0)
    w.wait()
    assert w.is_completed()
    assert torch.equal(it.irecv(src=0, group=g1).wait(), torch.zeros(2))
    with pytest.raises(ValueError, match="src is required"):
        it.recv(group=g1)
    # A header announcing more than max_frame_bytes is refused before allocating.
    loop.isend(torch.tensor([_p2p.MAGIC, 0, -1, 10_000], dtype=torch.int64), 1, g0, 0)
    with pytest.raises(iota_codec.LimitExceededError, match="max_frame_bytes"):
        it.recv(src=0, group=g1, max_frame_bytes=1000)


def test_gradient_shape_mismatch_is_an_error(loop):
    c0, c1 = _pair()
    h = torch.randn(2, 3, requires_grad=True)
    token = it.send_activation(h, c0)
    it.recv_activation(c1)
    c1._post(_p2p.GRADIENT, 0, torch.ones(3, 2), c1.grad_codec)  # a wrong gradient
    with pytest.raises(iota_codec.InvalidArgumentError, match="shape"):
        token.backward()


def test_bad_channel_argument():
    with pytest.raises(iota_codec.InvalidArgumentError, match="Channel"):
        it.send_activation(torch.ones(1), "peer 1")
    with pytest.raises(iota_codec.InvalidArgumentError, match="Channel"):
        it.recv_activation(1)


def test_hook_state_pickles_without_group_or_residuals():
    import pickle

    state = it.IotaHookState(codec=iota_codec.Codec(chunk_size=99), error_feedback=True)
    state.residuals[0] = torch.ones(3)
    state.stats.raw_bytes, state.stats.frame_bytes, state.stats.sent_bytes = 120, 100, 110
    back = pickle.loads(pickle.dumps(state))
    assert back.codec == state.codec and back.error_feedback and back.residuals == {}
    assert back.stats.ratio == pytest.approx(1.2) and back.stats.bytes_saved == 10
