# ruff: noqa: E402
"""The residual-bottleneck boundary module (as in ResBM): a learned, narrow pipeline-stage
boundary with an explicit identity path.

A pipeline cut through the residual stream ships a ``(..., d)`` tensor each way every
micro-batch. :class:`ResidualBottleneck` makes it ``(..., k)`` with ``k << d``, learned end to
end with the rest of the model. It has two halves, one on each side of the link:

- :class:`BottleneckEncoder`, at the end of the sending stage::

      z = x[..., :k] + W_e · LayerNorm(x) + b_e                 (d -> k)

- :class:`BottleneckDecoder`, at the start of the receiving stage::

      x̂ = P_k z + W_d · z + b_d                                 (k -> d, linear)
      x̂ = P_k z + W_2 · GELU(W_1 · z + b_1) + b_2               (k -> h -> d, hidden=h)

  where ``P_k z`` puts ``z`` into the first ``k`` coordinates of a ``d``-vector and zeros in
  the rest (``P_k = [I_k; 0]``, the transpose of taking the first ``k`` coordinates). A
  linear decoder can only put the stream back in a ``k``-dimensional (affine) subspace; a
  hidden layer lets it unfold the code into features the next blocks can use, for
  ``k(h) + h(d)`` weights and FLOPs per token (``h = d``: about a twelfth of a block's).

The identity path ``x[..., :k] -> z -> x̂[..., :k]`` is explicit and parameter-free: with
the learned parts at zero (``W_e``, ``b_e``, and ``W_d``, ``b_d`` or ``W_2``, ``b_2``) the
boundary passes the first ``k`` residual coordinates through
exactly and drops the rest, so the model starts from (and can always fall back on) a plain
low-rank cut of its residual stream, while ``W_e`` and ``W_d`` learn what else to pack into
those ``k`` numbers and how to spread them back over ``d``. Everything is trained end to end:
the gradient of ``z`` (also ``k`` wide) crosses the link backwards.

Only ``z`` and its gradient cross the link, so the boundary shrinks ``d/k`` times in each
direction before any codec runs; iota-codec then compresses ``z`` and its gradient further
(``iota_codec.torch.send_activation(encoder(x), channel)``), for a total compression of
``(d/k) x`` the codec's ratio, in both directions.

Needs torch. ``import iota_codec`` alone never imports this module.
"""

from __future__ import annotations

from ._adapt import require_torch

require_torch(__name__)  # before the imports below: they import torch

import torch
from torch import nn

from ._core import InvalidArgumentError

__all__ = ["BottleneckDecoder", "BottleneckEncoder", "ResidualBottleneck"]


def _check(d_model: int, k: int) -> None:
    for name, v in (("d_model", d_model), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, not {v!r}")
    if k > d_model:
        raise InvalidArgumentError(f"k={k} must be at most d_model={d_model}")


def _init(linear: nn.Linear, std: float) -> None:
    if std == 0:
        nn.init.zeros_(linear.weight)
    else:
        nn.init.normal_(linear.weight, std=std)
    nn.init.zeros_(linear.bias)


class BottleneckEncoder(nn.Module):
    """The sending half: ``(..., d) -> (..., k)``, ``z = x[..., :k] + W_e LayerNorm(x) +
    b_e``. ``init_std`` is the standard deviation of ``W_e`` at initialization (0: start as
    the bare identity path)."""

    def __init__(self, d_model: int, k: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        _check(d_model, k)
        self.d_model, self.k = d_model, k
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, k)
        _init(self.proj, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise InvalidArgumentError(
                f"expected a last dimension of {self.d_model}, got shape {tuple(x.shape)}"
            )
        return x[..., : self.k] + self.proj(self.norm(x))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, k={self.k}"


class BottleneckDecoder(nn.Module):
    """The receiving half: ``(..., k) -> (..., d)``, ``x̂ = P_k z + W_d z + b_d`` (``P_k z``:
    ``z`` in the first ``k`` coordinates, zeros elsewhere), or with ``hidden=h``
    ``x̂ = P_k z + W_2 GELU(W_1 z + b_1) + b_2``. ``init_std`` is the standard deviation of
    the output weights (``W_d`` or ``W_2``) at initialization (0: start as the bare identity
    path); ``W_1`` starts as torch's default for a linear layer."""

    def __init__(
        self, d_model: int, k: int, *, hidden: int | None = None, init_std: float = 0.02
    ) -> None:
        super().__init__()
        _check(d_model, k)
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int)):
            raise InvalidArgumentError(f"hidden must be a positive integer, not {hidden!r}")
        if hidden is not None and hidden < 1:
            raise InvalidArgumentError(f"hidden must be a positive integer, not {hidden!r}")
        self.d_model, self.k, self.hidden = d_model, k, hidden
        if hidden:
            self.up = nn.Linear(k, hidden)
            self.proj = nn.Linear(hidden, d_model)
        else:
            self.up = None
            self.proj = nn.Linear(k, d_model)
        _init(self.proj, init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.k:
            raise InvalidArgumentError(
                f"expected a last dimension of {self.k}, got shape {tuple(z.shape)}"
            )
        identity = nn.functional.pad(z, (0, self.d_model - self.k))
        h = z if self.up is None else nn.functional.gelu(self.up(z))
        return identity + self.proj(h)

    def extra_repr(self) -> str:
        return f"k={self.k}, d_model={self.d_model}, hidden={self.hidden}"


class ResidualBottleneck(nn.Module):
    """Both halves of a residual-bottleneck boundary: ``encoder`` (``d -> k``, on the sending
    stage) and ``decoder`` (``k -> d``, on the receiving stage). Calling it runs both, as a
    single-process model would; a pipeline puts ``encoder`` at the end of one stage and
    ``decoder`` at the start of the next, and ships ``encoder(x)`` between them::

        rb = ResidualBottleneck(d_model=256, k=8)
        stage0 = nn.Sequential(embed, *blocks[:2], rb.encoder)     # sends (B, T, 8)
        stage1 = nn.Sequential(rb.decoder, *blocks[2:], head)      # receives (B, T, 8)

    ``hidden`` gives the decoder a hidden layer of that width (default: linear).
    ``compression`` is ``d/k``, the shrinkage of the boundary tensor in each direction before
    any codec.
    """

    def __init__(
        self, d_model: int, k: int, *, hidden: int | None = None, init_std: float = 0.02
    ) -> None:
        super().__init__()
        self.encoder = BottleneckEncoder(d_model, k, init_std=init_std)
        self.decoder = BottleneckDecoder(d_model, k, hidden=hidden, init_std=init_std)

    @property
    def d_model(self) -> int:
        return self.encoder.d_model

    @property
    def k(self) -> int:
        return self.encoder.k

    @property
    def compression(self) -> float:
        return self.d_model / self.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
