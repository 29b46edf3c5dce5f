"""The autograd boundary between two pipeline stages.

A stage ends with ``y = send_activation(x, channel)`` and the next one begins with
``x = recv_activation(channel)``::

    # stage i                                  # stage i + 1
    h = stage_i(inputs)                        x = recv_activation(to_prev)
    y = send_activation(h, to_next)            loss = loss_fn(stage_ip1(x), targets)
    ...                                        ...
    y.backward()                               loss.backward()

- forward: ``send_activation`` encodes ``h`` with ``channel.codec`` and sends it;
  ``recv_activation`` receives and decodes it into a leaf-like tensor that requires grad.
- backward: when the gradient of ``x`` is known on stage i+1, ``recv_activation``'s backward
  encodes it with ``channel.grad_codec`` and sends it back; ``y.backward()`` on stage i
  receives it, decodes it and propagates it into ``stage_i`` as the gradient of ``h``.

``y`` is a zero-dimensional token (value 0, ``h``'s dtype and device): it exists so that a
stage can start its backward pass with ``y.backward()``. Do not add it to anything else.

Micro-batches: every activation gets the next sequence number of its channel and its
gradient comes back tagged with it, so any number of micro-batches may be in flight and
their backward passes may run in any order (GPipe: all forwards, then all backwards;
1F1B: interleaved). Both stages must call ``send_activation``/``recv_activation`` for a
channel in the same order, which is what a pipeline schedule does anyway. Sends are
asynchronous (a blocking send could deadlock 1F1B, where both stages send before they
receive): call ``channel.flush()`` at the end of a step.

These functions talk to another process, so they are not traced by ``torch.compile``:
compile the stage's modules and call the boundary from eager code.
"""

from __future__ import annotations

from typing import Any

import torch

from .._core import InvalidArgumentError
from ._p2p import ACTIVATION, GRADIENT, Channel, _Deadline


class _SendActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, channel: Channel, seq: int) -> torch.Tensor:
        channel._post(ACTIVATION, seq, x, channel.codec)
        ctx.channel = channel
        ctx.seq = seq
        ctx.meta = (x.dtype, tuple(x.shape), x.device)
        return torch.zeros((), dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx: Any, _token_grad: torch.Tensor) -> tuple[Any, None, None]:
        ch: Channel = ctx.channel
        dtype, shape, device = ctx.meta
        grad = ch._receive(
            (GRADIENT, ctx.seq), _Deadline(ch.timeout), device, None, expect=(dtype, shape)
        )
        return grad, None, None


class _RecvActivation(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, anchor: torch.Tensor, channel: Channel, seq: int, device: Any
    ) -> torch.Tensor:
        del anchor
        x = channel._receive((ACTIVATION, seq), _Deadline(channel.timeout), device, None)
        ctx.channel = channel
        ctx.seq = seq
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None, None]:
        ch: Channel = ctx.channel
        ch._post(GRADIENT, ctx.seq, grad.contiguous(), ch.grad_codec)
        return None, None, None, None


def send_activation(x: torch.Tensor, channel: Channel) -> torch.Tensor:
    """Sends the activation ``x`` to ``channel.peer`` (encoded with ``channel.codec``) and
    returns a zero-dimensional token whose ``backward()`` receives the gradient of ``x``
    from the peer (encoded there with its ``grad_codec``) and back-propagates it."""
    if not isinstance(channel, Channel):
        raise InvalidArgumentError(f"channel must be a Channel, not {type(channel).__name__}")
    seq = channel._next_send(ACTIVATION)
    return _SendActivation.apply(x, channel, seq)


def recv_activation(
    channel: Channel, *, device: Any = None, requires_grad: bool = True
) -> torch.Tensor:
    """Receives the next activation from ``channel.peer``, on ``device`` (default: the
    channel's). The result requires grad (unless ``requires_grad=False`` or grad mode is
    off); its gradient is sent back to the peer, encoded with ``channel.grad_codec``, when
    the backward pass reaches it."""
    if not isinstance(channel, Channel):
        raise InvalidArgumentError(f"channel must be a Channel, not {type(channel).__name__}")
    seq = channel._next_recv(ACTIVATION)
    channel._irecv(ACTIVATION, seq, device, None)  # posts the header's receive early
    anchor = torch.empty(0, requires_grad=requires_grad and torch.is_grad_enabled())
    return _RecvActivation.apply(anchor, channel, seq, device)
