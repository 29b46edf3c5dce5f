"""Shared test helpers."""

from __future__ import annotations

import ml_dtypes
import numpy as np

BITS = {"float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}
NUMPY = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def bits(a) -> np.ndarray:
    """The raw bit patterns of a float array or tensor, for bit-exact comparisons."""
    if hasattr(a, "detach"):  # a torch tensor
        import torch

        view = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
        return (
            a.detach()
            .contiguous()
            .view(view[a.dtype])
            .numpy()
            .view(np.uint32 if a.dtype == torch.float32 else np.uint16)
        )
    a = np.asarray(a)
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint16)


def assert_within_codec_bound(codec, sent, received) -> None:
    """Checks that ``received``, what crossed a link coded with ``codec``, is within the
    codec's stated bound of ``sent``: bit-exact for ``lossless``; for lossy profiles, equal
    bit for bit to the codec's own round trip of ``sent`` (the transport adds no error of
    its own; the round trip's distance from ``sent`` is what the codec's tests bound)."""
    assert received.dtype == sent.dtype and tuple(received.shape) == tuple(sent.shape)
    expected = sent if codec.profile == "lossless" else codec.decode(codec.encode(sent))
    got, want = bits(received), bits(expected)
    assert (got == want).all(), (
        f"{int((got != want).sum())} of {got.size} elements differ from the {codec.profile} bound"
    )
