"""Muon for the lab's CPU stages: ``torch.optim.Muon``'s update, orthogonalized in the
precision this CPU computes fastest.

``torch.optim.Muon`` runs its Newton-Schulz iteration in bfloat16, which is what a GPU
(and a CPU with AMX or AVX-512 BF16) multiplies fastest. A CPU without native bfloat16
arithmetic emulates it: on an AMD EPYC (Zen 1) core a bfloat16 matrix product ran at 0.5
GFLOP/s against 20 GFLOP/s in float32, and the optimizer took 11 s of each 12 s training
step of the lab's model, so that the lab measured the optimizer, not the pipeline.
:class:`Muon` is the same update (momentum, Nesterov, five quintic Newton-Schulz steps with
torch's coefficients, the learning rate scaled to match AdamW's update RMS) with the
iteration run in :func:`orthogonalize_dtype`: bfloat16 where this CPU multiplies it at least
as fast as float32 (the same arithmetic as ``torch.optim.Muon``), float32 elsewhere.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import torch

#: torch.optim.Muon's quintic Newton-Schulz coefficients and step count.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7


@functools.cache
def orthogonalize_dtype() -> torch.dtype:
    """``torch.bfloat16`` where this machine multiplies bfloat16 matrices (the sizes of the
    lab's model) at least as fast as float32 ones, else ``torch.float32``. Measured once per
    process, on one thread."""

    def seconds(dtype: torch.dtype) -> float:
        a = torch.randn(256, 256).to(dtype)
        a @ a  # first-call set-up
        best = math.inf
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(4):
                a @ a
            best = min(best, time.perf_counter() - t)
        return best

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bf16_s, f32_s = seconds(torch.bfloat16), seconds(torch.float32)
    finally:
        torch.set_num_threads(threads)
    return torch.bfloat16 if bf16_s <= f32_s else torch.float32


def orthogonalize(g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The approximate orthogonalization ``U S' V^T`` of the matrix ``g`` (``S'`` near 1) by
    :data:`NS_STEPS` quintic Newton-Schulz steps computed in ``dtype``, as
    ``torch.optim.Muon`` computes it in bfloat16."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype=dtype, copy=True)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=EPS))
    for _ in range(NS_STEPS):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Muon):
    """``torch.optim.Muon(params, lr, weight_decay, momentum, nesterov,
    adjust_lr_fn="match_rms_adamw")`` with the orthogonalization in ``dtype`` (default
    :func:`orthogonalize_dtype`)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            adjust_lr_fn="match_rms_adamw",
        )
        self.dtype = orthogonalize_dtype() if dtype is None else dtype

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)
                update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
                update = orthogonalize(update, self.dtype)
                # match_rms_adamw: the update's RMS is that of an AdamW step of rate lr.
                scale = 0.2 * math.sqrt(max(p.shape[0], p.shape[1]))
                p.mul_(1 - lr * decay)
                p.add_(update, alpha=-lr * scale)
        return loss
