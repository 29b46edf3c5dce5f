"""Writes the golden frames of the current format version into tests/golden/v<N>/.

Golden frames pin the wire format: the tests decode every one of them forever, so a frame
written today keeps decoding after any change. Run this only to add frames for a new format
version (or new cases); never rewrite the frames of a version that has shipped.

    python tests/golden/generate.py
"""

from __future__ import annotations

import json
import pathlib

import iota_codec as codec
import ml_dtypes
import numpy as np
import torch

HERE = pathlib.Path(__file__).parent
BITS = {"float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}


def specials_bf16() -> np.ndarray:
    rng = np.random.default_rng(1)
    normal = rng.standard_normal(200).astype(np.float32)
    bits = (normal.view(np.uint32) >> 16).astype(np.uint16)
    special = np.array(
        [
            0x7FC0,  # quiet NaN
            0x7F81,  # signalling NaN with a payload
            0xFFC1,  # negative NaN with a payload
            0x7F80,  # +inf
            0xFF80,  # -inf
            0x0000,  # +0
            0x8000,  # -0
            0x0001,  # smallest subnormal
            0x807F,  # largest negative subnormal
            0x7F7F,  # largest finite
            0x0080,  # smallest normal
            0xFF7F,  # most negative finite
        ],
        dtype=np.uint16,
    )
    out = np.concatenate([bits, special, special[::-1], bits[:32]])
    return out.view(ml_dtypes.bfloat16).reshape(4, 64)


def cases():
    rng = np.random.default_rng(0)
    yield "bf16_specials", specials_bf16(), {}
    yield "f16_vector", (rng.standard_normal(300) * 3).astype(np.float16), {}
    yield "f32_3d", rng.standard_normal((2, 3, 40)).astype(np.float32), {}
    upcast = rng.standard_normal(256).astype(ml_dtypes.bfloat16).astype(np.float32)
    yield "f32_upcast_from_bf16", upcast, {}
    yield (
        "bf16_multichunk",
        rng.standard_normal(1000).astype(ml_dtypes.bfloat16),
        {"chunk_size": 100},
    )
    yield "f16_incompressible", rng.integers(0, 1 << 16, 64, dtype=np.uint16).view(np.float16), {}
    yield "f32_empty", np.zeros((0, 7), np.float32), {}
    yield "bf16_scalar", np.array(1.5, dtype=ml_dtypes.bfloat16), {}
    yield "f32_zeros", np.zeros(5000, np.float32), {}
    yield (
        "torch_bf16",
        torch.randn(16, 33, generator=torch.Generator().manual_seed(3)).bfloat16(),
        {},
    )


def main() -> None:
    out_dir = HERE / f"v{codec.FORMAT_VERSION}"
    out_dir.mkdir(exist_ok=True)
    manifest = []
    for name, x, kw in cases():
        blob = codec.encode(x, **kw)
        (out_dir / f"{name}.iota").write_bytes(blob)
        if isinstance(x, torch.Tensor):
            x = x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        meta = codec.info(blob)
        np.save(out_dir / f"{name}.npy", x.view(BITS[meta["dtype"]]))
        manifest.append(
            {
                "name": name,
                "dtype": meta["dtype"],
                "shape": meta["shape"],
                "container": meta["container"],
                "chunk_size": meta["chunk_size"],
                "frame_bytes": meta["frame_bytes"],
            }
        )
        print(f"{name}: {meta['frame_bytes']} bytes")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
