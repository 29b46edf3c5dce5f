"""Built-in tensors to measure the codec on, made in-process with nothing downloaded.

:func:`boundary_tensors` trains a small byte-level GPT on the Python standard library's own
source files (real text that every Python installation has) and captures what would cross a
pipeline-stage boundary: the residual-stream activation in the middle of the model and the
gradient flowing back into it. Results are cached under ``~/.cache/iota-codec/data`` (or
``$IOTA_CODEC_CACHE``), so only the first call trains. Needs torch.

:func:`synthetic` makes heavy-tailed data with outlier channels with numpy alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def cache_dir() -> pathlib.Path:
    base = os.environ.get("IOTA_CODEC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "iota-codec"
    )
    return pathlib.Path(base) / "data"


def stdlib_sources() -> Iterator[tuple[str, bytes]]:
    """The standard library's ``.py`` sources (tests and site-packages aside) as (path
    relative to the library, contents), in path order."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    found = False
    for path in sorted(root.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found = True
        yield path.relative_to(root).as_posix(), data
    if not found:
        raise RuntimeError(f"no Python sources found under {root}")


def text_corpus(max_bytes: int = 4_000_000) -> bytes:
    """Up to ``max_bytes`` of the standard library's ``.py`` sources, in a fixed order."""
    parts, total = [], 0
    for _, data in stdlib_sources():
        parts.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    return b"".join(parts)[:max_bytes]


@dataclass(frozen=True)
class GPTConfig:
    """A small GPT-style byte-level language model."""

    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    seq_len: int = 128
    vocab: int = 256


def make_gpt(cfg: GPTConfig, seed: int = 0):
    """A pre-norm GPT as a list of modules: embedding, blocks, head (so it can be cut into
    pipeline stages anywhere)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = cfg.d_model
            self.ln1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, cfg.n_heads, batch_first=True)
            self.ln2 = nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x):
            t = x.shape[1]
            mask = torch.triu(torch.full((t, t), float("-inf"), device=x.device), 1)
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class Embed(nn.Module):
        # The model's edges (embedding and head), which optimizers may treat apart.
        is_edge = True

        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
            self.pos = nn.Parameter(torch.randn(cfg.seq_len, cfg.d_model) * 0.02)

        def forward(self, idx):
            return self.tok(idx) + self.pos[: idx.shape[1]]

    class Head(nn.Module):
        is_edge = True

        def __init__(self) -> None:
            super().__init__()
            self.ln = nn.LayerNorm(cfg.d_model)
            self.out = nn.Linear(cfg.d_model, cfg.vocab)

        def forward(self, x):
            return self.out(self.ln(x))

    return nn.ModuleList([Embed(), *[Block() for _ in range(cfg.n_layers)], Head()])


def batches(corpus: bytes, batch: int, seq_len: int, seed: int):
    """An endless stream of (input, target) byte batches from random offsets."""
    import torch

    data = torch.frombuffer(bytearray(corpus), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(seed)
    while True:
        ix = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=g)
        x = torch.stack([data[i : i + seq_len] for i in ix])
        y = torch.stack([data[i + 1 : i + seq_len + 1] for i in ix])
        yield x, y


def _key(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _boundary_params(
    steps: int, cfg: GPTConfig, batch: int, capture_batches: int, seed: int
) -> dict[str, Any]:
    import torch

    return {
        "steps": steps,
        "cfg": asdict(cfg),
        "batch": batch,
        "capture": capture_batches,
        "seed": seed,
        "torch": torch.__version__.split("+")[0],
        "v": 1,
    }


def boundary_cache_path(
    steps: int = 150,
    *,
    cfg: GPTConfig | None = None,
    batch: int = 16,
    capture_batches: int = 8,
    seed: int = 0,
) -> pathlib.Path:
    """Where :func:`boundary_tensors` caches its result for these arguments (the file exists
    once they have been computed)."""
    params = _boundary_params(steps, cfg or GPTConfig(), batch, capture_batches, seed)
    return cache_dir() / f"boundary-{_key(params)}.pt"


def boundary_tensors(
    steps: int = 150,
    *,
    cfg: GPTConfig | None = None,
    batch: int = 16,
    capture_batches: int = 8,
    seed: int = 0,
    cache: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Trains a :class:`GPTConfig` model for ``steps`` AdamW steps on :func:`text_corpus`,
    then runs ``capture_batches`` more batches and returns float32 torch tensors of shape
    ``(capture_batches * batch, seq_len, d_model)``:

    - ``"activation"``: the residual stream after the first half of the blocks (what stage 1
      of a two-stage pipeline sends forward);
    - ``"gradient"``: the gradient of the loss with respect to it (what stage 2 sends back);

    plus ``"loss"`` (the final training loss) and ``"config"``.
    """
    import torch

    cfg = cfg or GPTConfig()
    params = _boundary_params(steps, cfg, batch, capture_batches, seed)
    path = cache_dir() / f"boundary-{_key(params)}.pt"
    if cache and path.exists():
        return torch.load(path, weights_only=True)  # tensors and plain values only
    say = log or (lambda _msg: None)
    model = make_gpt(cfg, seed)
    split = 1 + cfg.n_layers // 2
    stream = batches(text_corpus(), batch, cfg.seq_len, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    t0 = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        x, y = next(stream)
        h = x
        for m in model:
            h = m(h)
        loss = torch.nn.functional.cross_entropy(h.reshape(-1, cfg.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            say(
                f"  step {step + 1}/{steps}  loss {loss.item():.3f}  "
                f"({time.perf_counter() - t0:.0f} s)"
            )
    acts, grads = [], []
    for _ in range(capture_batches):
        x, y = next(stream)
        h = x
        for m in model[:split]:
            h = m(h)
        boundary = h.detach().requires_grad_(True)
        h = boundary
        for m in model[split:]:
            h = m(h)
        out = torch.nn.functional.cross_entropy(h.reshape(-1, cfg.vocab), y.reshape(-1))
        out.backward()
        acts.append(boundary.detach())
        grads.append(boundary.grad.detach())
    result = {
        "activation": torch.cat(acts),
        "gradient": torch.cat(grads),
        "loss": float(loss.detach()),
        "config": params,
    }
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(result, tmp)
        os.replace(tmp, path)
    return result


def pooled_head_gradient(
    cfg: GPTConfig | None = None,
    *,
    batch: int = 16,
    classes: int = 16,
    seed: int = 0,
    model_seed: int = 0,
):
    """The gradient that crosses the boundary in front of a mean-pooling classification
    head: a :func:`make_gpt` model without its language-model head runs ``batch`` sequences
    of :func:`text_corpus` through all its blocks (stage 1); stage 2 averages the tokens,
    normalizes and classifies them into ``classes`` (here: the last byte of the sequence mod
    ``classes``), and the cross-entropy loss is back-propagated to the boundary. Returns the
    float32 torch tensor ``(batch, seq_len, d_model)`` of that gradient: every token of a
    sequence gets the same row (the mean spreads the gradient evenly), so each sequence's
    matrix is rank one and the whole tensor has rank at most ``batch``. Needs torch."""
    import torch
    from torch import nn

    cfg = cfg or GPTConfig()
    model = make_gpt(cfg, model_seed)
    torch.manual_seed(model_seed + 1)
    head = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, classes))
    x, _ = next(batches(text_corpus(), batch, cfg.seq_len, seed))
    with torch.no_grad():
        h = x
        for m in model[:-1]:
            h = m(h)
    boundary = h.detach().requires_grad_(True)
    logits = head(boundary.mean(dim=1))
    nn.functional.cross_entropy(logits, x[:, -1] % classes).backward()
    return boundary.grad.detach()


def synthetic(shape: tuple[int, ...] = (2048, 1024), *, seed: int = 0) -> np.ndarray:
    """Heavy-tailed float32 data with a few outlier channels, like the activations of large
    trained transformers: Student-t rows (3 degrees of freedom) with 1% of the last-axis
    channels scaled up 30x."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, size=shape).astype(np.float32)
    channels = shape[-1]
    outliers = rng.choice(channels, max(1, channels // 100), replace=False)
    x[..., outliers] *= 30
    return x
