"""The lab's model, data and evaluation, shared by the stage processes and the runner.

The model is :func:`iota_codec.data.make_gpt` cut in the middle of its blocks, optionally
with a :class:`iota_codec.nn.ResidualBottleneck` at the cut. The data is the Python standard
library's own source (:func:`iota_codec.data.stdlib_sources`), byte-level, whole files drawn
from across the library, one in ten held out for validation (:func:`split_corpus`).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

VAL_FRACTION = 0.1
VAL_SEED = 12345
#: Bytes of training and of validation text.
TRAIN_BYTES = 3_600_000
VAL_BYTES = 400_000
#: The optimizers a lab can train with (see :func:`make_optimizers`).
OPTIMIZERS = ("muon", "adamw")


@functools.cache
def corpus_files() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The standard library files (paths relative to it) of the training text and of the
    held-out validation text: whole files, in an order fixed by a hash of their path, a file
    going to validation when its hash says so (one in ten), until each side has its bytes
    (:data:`TRAIN_BYTES`, :data:`VAL_BYTES`).

    Both sides are drawn from across the library. (The files first in name order with the
    last 10% of them held out gave a validation set of nothing but the code-page tables of
    ``encodings/``: it measured how well a model had learned one table layout, and moved by
    over 10% from seed to seed where the training loss moved by 1%.)"""
    return tuple(tuple(path for path, _ in side) for side in _split())


@functools.cache
def split_corpus() -> tuple[bytes, bytes]:
    """(training text, held-out validation text) of :func:`corpus_files`."""
    train, val = _split()
    return (
        b"".join(d for _, d in train)[:TRAIN_BYTES],
        b"".join(d for _, d in val)[:VAL_BYTES],
    )


def corpus_digest() -> str:
    """SHA-256 of the training and validation text (which the standard library of the Python
    running the lab decides): labs whose digests match trained on the same text."""
    train, val = split_corpus()
    h = hashlib.sha256()
    for side in (train, val):
        h.update(len(side).to_bytes(8, "little"))
        h.update(side)
    return h.hexdigest()


@functools.cache
def _split() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    from iota_codec.data import stdlib_sources

    def key(path: str) -> bytes:
        return hashlib.sha256(path.encode()).digest()

    sides: tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]] = ([], [])
    sizes, limits = [0, 0], (TRAIN_BYTES, VAL_BYTES)
    for path, data in sorted(stdlib_sources(), key=lambda pd: key(pd[0])):
        side = 1 if key(path)[-1] < 256 * VAL_FRACTION else 0
        if sizes[side] < limits[side]:
            sides[side].append((path, data))
            sizes[side] += len(data)
        if sizes[0] >= limits[0] and sizes[1] >= limits[1]:
            break
    return sides


def build_stages(
    cfg: Any, bottleneck: int | None, seed: int, hidden: int | None = None
) -> list[Any]:
    """The two stages as ``nn.Sequential``: [embed, first half of the blocks, (encoder)] and
    [(decoder), second half, head], the bottleneck ``bottleneck`` wide with a decoder of
    ``hidden`` hidden units (``None``: linear). The same ``seed`` gives the same weights in
    every process."""
    import torch
    from torch import nn

    from iota_codec.data import make_gpt

    mods = make_gpt(cfg, seed)
    half = 1 + cfg.n_layers // 2
    first, second = list(mods[:half]), list(mods[half:])
    if bottleneck:
        from iota_codec.nn import ResidualBottleneck

        torch.manual_seed(seed + 1)
        rb = ResidualBottleneck(cfg.d_model, bottleneck, hidden=hidden)
        first.append(rb.encoder)
        second.insert(0, rb.decoder)
    return [nn.Sequential(*first), nn.Sequential(*second)]


def make_optimizers(
    part: Any, optimizer: str, lr: float, muon_dtype: str | None = None
) -> list[Any]:
    """The optimizers of one stage ``part`` (an ``nn.Sequential`` of
    :func:`build_stages`).

    - ``adamw``: AdamW on every parameter, learning rate ``lr``, no weight decay.
    - ``muon``: Muon (:class:`iota_codec.lab.optim.Muon`: ``torch.optim.Muon``'s update,
      orthogonalized in the precision this CPU multiplies fastest) on the 2-D weight
      matrices of the blocks and of the bottleneck (its update's RMS matched to AdamW's, so
      that ``lr`` means the same in both), and AdamW with ``lr`` on the rest: the
      embeddings, the head, biases and norms, which Muon is not meant for. On this lab's
      model it learns several times faster than AdamW at a constant rate (see the README's
      link lab), so that what a boundary costs shows in a model that learns at a realistic
      pace. ``muon_dtype`` (``"bfloat16"`` or ``"float32"``) is the precision of its
      orthogonalization; ``None``: :func:`iota_codec.lab.optim.orthogonalize_dtype`.
    """
    import torch

    from .optim import Muon

    if optimizer == "adamw":
        return [torch.optim.AdamW(part.parameters(), lr=lr, weight_decay=0.0)]
    if optimizer != "muon":
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    edge = {id(p) for m in part if getattr(m, "is_edge", False) for p in m.parameters()}
    mats = [p for p in part.parameters() if p.ndim == 2 and id(p) not in edge]
    ids = {id(p) for p in mats}
    rest = [p for p in part.parameters() if id(p) not in ids]
    dtype = None if muon_dtype is None else getattr(torch, muon_dtype)
    opts: list[Any] = [Muon(mats, lr=lr, weight_decay=0.0, dtype=dtype)]
    if rest:
        opts.append(torch.optim.AdamW(rest, lr=lr, weight_decay=0.0))
    return opts


def boundary_roundtrip(h: Any, codec_config: dict[str, Any] | None) -> Any:
    """What the second stage receives for the first stage's output ``h`` in forward: ``h``
    in bfloat16, through the codec's round trip when there is one, back in float32."""
    import torch

    x = h.to(torch.bfloat16)
    if codec_config is not None:
        from iota_codec.torch._ops import as_codec

        codec = as_codec(codec_config)
        x = codec.decode(codec.encode(x))
    return x.float()


def evaluate(
    cfg: Any,
    bottleneck: int | None,
    seed: int,
    states: list[dict[str, Any]],
    codec_config: dict[str, Any] | None,
    *,
    batch: int,
    n_batches: int,
    hidden: int | None = None,
) -> float:
    """The mean cross-entropy (nats per byte) of the trained stages on ``n_batches`` fixed
    batches of held-out text, with the boundary exactly as the pipeline's forward pass
    carries it (bf16, and the codec's round trip)."""
    import torch
    import torch.nn.functional as F

    from iota_codec.data import batches

    stages = build_stages(cfg, bottleneck, seed, hidden)
    for s, state in zip(stages, states, strict=True):
        s.load_state_dict(state)
        s.eval()
    _, val = split_corpus()
    data = batches(val, batch, cfg.seq_len, VAL_SEED)
    total = 0.0
    with torch.no_grad():
        for _ in range(n_batches):
            x, y = next(data)
            h = boundary_roundtrip(stages[0](x), codec_config)
            logits = stages[1](h)
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten()))
    return total / n_batches


def train_flops_per_token(
    d_model: int,
    n_layers: int,
    seq_len: int,
    vocab: int = 256,
    bottleneck: int | None = None,
    hidden: int | None = None,
) -> float:
    """Training FLOPs per token (forward and backward, 3x the forward's multiply-adds x 2)
    of the matrix products of the model (all stages together): per block
    ``72 d^2 + 12 T d`` (QKV, output, 4x MLP; attention scores and values without
    exploiting the causal mask), the head ``6 d V``, the bottleneck ``12 d k`` (with a hidden
    decoder layer of ``h``: ``6 d k + 6 k h + 6 h d``)."""
    d, t = d_model, seq_len
    flops = n_layers * (72 * d * d + 12 * t * d) + 6 * d * vocab
    if bottleneck:
        k = bottleneck
        flops += 6 * d * k + (6 * k * hidden + 6 * hidden * d if hidden else 6 * k * d)
    return float(flops)
