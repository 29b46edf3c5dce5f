"""Writes the golden frames of the current format version into tests/golden/v<N>/.

Golden frames pin the wire format: the tests decode every one of them forever, so a frame
written today keeps decoding after any change. Run this only to add frames for a new format
version (or new cases); never rewrite the frames of a version that has shipped. Cases whose
frame already exists are left as they are (files and manifest entry), so adding a case to
``cases()`` and running this again writes only the new one.

Each case writes ``<name>.iota`` (the frame) and ``<name>.npy`` (the bits it decodes to). A
case coded with explicit settings (a lossy one) also records its ``config`` in the manifest
and its input in ``<name>.input.npy``. Session frames (``<group>_<step>``) also record the
session settings and their step: they decode through a Session, in order.

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


def with_nonfinite(x: np.ndarray, bits: list[int]) -> np.ndarray:
    raw = x.reshape(-1).view(BITS[np.dtype(x.dtype).name]).copy()
    raw[[3, 40, 41, len(raw) - 1]] = bits
    return raw.view(x.dtype).reshape(x.shape)


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
    # Stage kinds 3 (block_quant) and 4 (uniform_quant): lossy frames.
    lossy = np.random.default_rng(10)
    act = (lossy.standard_t(4, (6, 32)) * 2).astype(ml_dtypes.bfloat16)
    yield "bf16_mxint8", act, {"format": "mxint8"}
    yield (
        "f16_mxfp4_nonfinite_kept",
        with_nonfinite(
            lossy.standard_normal((4, 40)).astype(np.float16), [0x7E01, 0xFC00, 0x7C00, 0xFE00]
        ),
        {"format": "mxfp4", "nonfinite": "keep"},
    )
    yield (
        "f32_e4m3_f16_scale_rans",
        (lossy.standard_normal(200) * 1e-3).astype(np.float32),
        {"format": "e4m3", "scale": "f16", "block": 16, "entropy": True},
    )
    yield (
        "bf16_int3_stochastic_multichunk",
        lossy.standard_normal(300).astype(ml_dtypes.bfloat16),
        {
            "bits": 3,
            "scale": "bf16",
            "block": 48,
            "rounding": "stochastic",
            "seed": 42,
            "chunk_size": 100,
        },
    )
    yield (
        "bf16_e5m2_partial_block",
        (lossy.standard_normal(300) * 100).astype(ml_dtypes.bfloat16),
        {"format": "e5m2", "scale": "e8m0", "block": 256},
    )
    yield (
        "bf16_int2_e8m0",
        lossy.standard_normal((2, 64)).astype(ml_dtypes.bfloat16),
        {"bits": 2, "scale": "e8m0", "block": 16},
    )
    yield (
        "bf16_error_global_multichunk",
        (lossy.standard_normal(600) * 3).astype(ml_dtypes.bfloat16),
        {"error": 0.02, "chunk_size": 256},
    )
    yield (
        "f16_max_abs_escapes",
        with_nonfinite(
            (lossy.standard_normal(256) * 30).astype(np.float16), [0x7C00, 0x7E00, 0xFC00, 0x7C00]
        ),
        {"max_abs_error": 0.004, "nonfinite": "keep"},
    )
    yield (
        "f32_target_bits_channel",
        (lossy.standard_normal((32, 12)) * [1, 10, 100, 1, 1, 1, 1, 1, 1, 1, 1, 0.01]).astype(
            np.float32
        ),
        {"target_bits": 5.0, "step": "channel"},
    )
    yield (
        "bf16_error_block_stochastic",
        lossy.standard_t(3, 256).astype(ml_dtypes.bfloat16),
        {"error": 0.05, "step": "block", "block": 32, "rounding": "stochastic", "seed": 7},
    )
    yield (
        "torch_bf16_balanced",
        torch.randn(8, 40, generator=torch.Generator().manual_seed(4)).bfloat16(),
        {"profile": "balanced"},
    )
    # Version 2: chunks coded with row contexts (mode 2), the second chunk starting half
    # a row into a segment (two rows of 128).
    rows = lossy.standard_normal((66, 128)) * np.exp2(lossy.integers(-4, 5, (66, 1)))
    yield (
        "bf16_error_row_contexts",
        rows.astype(ml_dtypes.bfloat16),
        {"error": 0.05, "chunk_size": 4160},
    )


def correlated(rng, shape, latent: int, dtype):
    """Rows of correlated channels (a few heavy-tailed latent factors, mixed, with offsets and
    a little noise), like activations: what transform coding is for."""
    channels = shape[-1]
    rows = int(np.prod(shape[:-1]))
    z = rng.standard_t(4, (rows, latent)) * (2.0 ** -np.arange(latent))
    x = z @ rng.standard_normal((latent, channels)) + 0.3 * np.linspace(-1, 1, channels)
    x += 0.01 * rng.standard_normal((rows, channels))
    return x.reshape(shape).astype(dtype)


def project_cases():
    """Stage kind 5 (project): transform coding, added without a version change."""
    rng = np.random.default_rng(20)
    yield (
        "bf16_project_pca",
        correlated(rng, (4, 16, 24), 4, ml_dtypes.bfloat16),
        {"error": 0.03, "transform": "pca"},
    )
    yield (
        "f32_project_identity_multichunk",
        correlated(rng, (40, 12), 3, np.float32)
        * np.array([1, 10, 100, 1, 1, 1, 1, 1, 1, 1, 1, 0.01], np.float32),
        {"error": 0.05, "transform": "identity", "chunk_size": 96},
    )
    yield (
        "f16_project_rank_stochastic_multichunk",
        correlated(rng, (64, 20), 3, np.float16),
        {
            "error": 0.2,
            "transform": "pca",
            "rank": 3,
            "rounding": "stochastic",
            "seed": 9,
            "chunk_size": 400,
        },
    )
    mix = torch.from_numpy(correlated(rng, (8, 32), 2, np.float32))
    yield (
        "torch_bf16_project_auto",
        (torch.randn(64, 8, generator=torch.Generator().manual_seed(5)) @ mix).bfloat16(),
        {
            "error": 0.1,
            "transform": "auto",
        },
    )


#: Session frames (stage kind 6): a resync frame that carries its basis, then frames on the
#: session's basis, refreshed after every frame. Decoded through a Session in order.
SESSION = {"session_id": 77, "refresh": 1, "decay": 0.5}


def session_cases():
    rng = np.random.default_rng(30)
    base = correlated(rng, (96, 16), 4, np.float32)
    frames = [base + 0.05 * rng.standard_normal(base.shape) for _ in range(3)]
    return "bf16_session", [f.astype(ml_dtypes.bfloat16) for f in frames], {"error": 0.05}


def as_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return x


def main() -> None:
    out_dir = HERE / f"v{codec.FORMAT_VERSION}"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else []
    known = {case["name"] for case in manifest}
    for name, x, kw in [*cases(), *project_cases()]:
        if (out_dir / f"{name}.iota").exists():
            if name not in known:
                raise SystemExit(f"{name}.iota exists but is not in the manifest")
            continue
        lossless = not kw or set(kw) == {"chunk_size"}
        c = codec.Codec(**kw)
        blob = c.encode(x)
        (out_dir / f"{name}.iota").write_bytes(blob)
        meta = codec.info(blob)
        width = BITS[meta["dtype"]]
        np.save(out_dir / f"{name}.npy", as_numpy(c.decode(blob)).view(width))
        entry = {
            "name": name,
            "dtype": meta["dtype"],
            "shape": meta["shape"],
            "container": meta["container"],
            "chunk_size": meta["chunk_size"],
            "frame_bytes": meta["frame_bytes"],
        }
        if not lossless:
            entry["config"] = {**c.get_config(), "threads": 0}
            np.save(out_dir / f"{name}.input.npy", as_numpy(x).view(width))
        manifest.append(entry)
        print(f"{name}: {meta['frame_bytes']} bytes")
    group, inputs, kw = session_cases()
    if not (out_dir / f"{group}_0.iota").exists():
        c = codec.Codec(**kw)
        sender = codec.Session(c, **SESSION)
        for step, x in enumerate(inputs):
            name = f"{group}_{step}"
            blob, y = sender.encode(x, reconstruction=True)
            (out_dir / f"{name}.iota").write_bytes(blob)
            meta = codec.info(blob)
            width = BITS[meta["dtype"]]
            np.save(out_dir / f"{name}.npy", as_numpy(y).view(width))
            np.save(out_dir / f"{name}.input.npy", as_numpy(x).view(width))
            manifest.append(
                {
                    "name": name,
                    "dtype": meta["dtype"],
                    "shape": meta["shape"],
                    "container": meta["container"],
                    "chunk_size": meta["chunk_size"],
                    "frame_bytes": meta["frame_bytes"],
                    "config": {**c.get_config(), "threads": 0},
                    "session": {**SESSION, "group": group, "step": step},
                }
            )
            print(f"{name}: {meta['frame_bytes']} bytes, {[s['name'] for s in meta['stages']]}")
    path.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
