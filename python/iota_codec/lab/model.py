"""The lab's model, data and evaluation, shared by the stage processes and the runner.

The model is :func:`iota_codec.data.make_gpt` cut in the middle of its blocks, optionally
with a :class:`iota_codec.nn.ResidualBottleneck` at the cut. The data is the Python standard
library's own source (:func:`iota_codec.data.text_corpus`), byte-level: the first 90% for
training, the last 10% held out for validation.
"""

from __future__ import annotations

import functools
from typing import Any

VAL_FRACTION = 0.1
VAL_SEED = 12345


@functools.cache
def split_corpus() -> tuple[bytes, bytes]:
    """(training text, held-out validation text)."""
    from iota_codec.data import text_corpus

    corpus = text_corpus()
    cut = int(len(corpus) * (1 - VAL_FRACTION))
    return corpus[:cut], corpus[cut:]


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
