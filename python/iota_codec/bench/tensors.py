"""The tensors a benchmark runs on: built-in sets and a user's own files.

Built-in sets (nothing is downloaded):

- ``activation``, ``gradient``: what crosses the boundary of a two-stage pipeline running
  a small byte-level GPT trained in-process on the Python standard library's source
  (:func:`iota_codec.data.boundary_tensors`; trained on the first run, ~1 minute on two
  cores, then cached): 8 micro-batches of 16 x 128 tokens x 256 channels.
- ``synthetic``: heavy-tailed Student-t data with 1% outlier channels scaled 30x
  (:func:`iota_codec.data.synthetic`), the same element count.
- ``bottleneckK`` (K from 1 to 256, e.g. ``bottleneck16``, ``bottleneck80``): residual-
  bottleneck-sized tensors with K channels, the model's activations projected onto their K
  leading principal directions (what a learned linear bottleneck of width K keeps).

Without torch the model-made sets fall back to synthetic data, with a note.

Files: ``.npy``, ``.pt``/``.pth`` (a tensor, or a dict/list of them, loaded with
``weights_only=True``), ``.safetensors`` (needs the ``safetensors`` package). Float tensors
are kept in their dtype (float64 becomes float32, the widest iota-codec codes) unless a dtype
is asked for; other tensors are skipped with a note.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_SETS = ("activation", "gradient", "synthetic", "bottleneck32")
DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class Tensor:
    """One tensor to measure: a C-contiguous numpy array of float32, float16 or bfloat16."""

    name: str
    data: np.ndarray
    source: str

    @property
    def dtype(self) -> str:
        return self.data.dtype.name

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


def _bf16():
    try:
        import ml_dtypes
    except ImportError:
        raise RuntimeError(
            "bfloat16 needs the ml_dtypes package: pip install 'iota-codec[bench]'"
        ) from None
    return ml_dtypes.bfloat16


def numpy_dtype(name: str) -> Any:
    if name == "bfloat16":
        return _bf16()
    if name in ("float16", "float32"):
        return np.dtype(name)
    raise ValueError(f"unsupported dtype {name!r}; choose from {', '.join(DTYPES)}")


def to_numpy(x: Any, dtype: str | None = None) -> np.ndarray:
    """A C-contiguous numpy copy or view of a torch tensor or array, cast to ``dtype``
    (default: its own float dtype; float64 becomes float32)."""
    if type(x).__module__.startswith("torch"):
        import torch

        x = x.detach().cpu().contiguous()
        if x.dtype == torch.bfloat16:
            x = x.view(torch.int16).numpy().view(_bf16())
        elif x.dtype.is_floating_point:
            x = x.numpy()
        else:
            raise TypeError(f"not a float tensor: {x.dtype}")
    x = np.asarray(x)
    if x.dtype.kind == "V" and x.dtype.itemsize == 2:
        x = x.view(_bf16())  # bfloat16 saved by ml_dtypes reads back as raw 2-byte records
    if x.dtype.name not in DTYPES:
        if x.dtype.kind != "f":
            raise TypeError(f"not a float array: {x.dtype}")
        x = x.astype(np.float32)
    if dtype is not None and x.dtype.name != dtype:
        x = x.astype(numpy_dtype(dtype))
    return np.ascontiguousarray(x)


def _leading_directions(x: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` leading principal directions of the rows of ``x`` (channels x k)."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    rows = rows - rows.mean(axis=0)
    cov = rows.T @ rows
    _, vecs = np.linalg.eigh(cov)
    return vecs[:, ::-1][:, :k].astype(np.float32)


def bottleneck(x: np.ndarray, channels: int) -> np.ndarray:
    """``x`` (float32, channels last) projected onto its ``channels`` leading principal
    directions: shape ``x.shape[:-1] + (channels,)``."""
    if not 1 <= channels <= x.shape[-1]:
        raise ValueError(f"bottleneck width {channels} must be in 1..{x.shape[-1]}")
    flat = x.reshape(-1, x.shape[-1]).astype(np.float32)
    return (flat @ _leading_directions(flat, channels)).reshape(*x.shape[:-1], channels)


def _model_tensors(log: Callable[[str], None]) -> tuple[dict[str, np.ndarray], str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        from ..data import synthetic

        log("torch is not installed: activation/gradient are synthetic data instead")
        return (
            {
                "activation": synthetic((4096, 1024), seed=1),
                "gradient": synthetic((4096, 1024), seed=2) * 1e-4,
            },
            "synthetic (torch missing)",
        )
    from ..data import GPTConfig, boundary_cache_path, boundary_tensors

    cfg = GPTConfig()
    steps = int(os.environ.get("IOTA_DEMO_STEPS", "150"))
    what = (
        f"the stage boundary of a {cfg.n_layers}-layer byte-level GPT (d={cfg.d_model}) "
        f"trained {steps} steps on the Python standard library's source"
    )
    path = boundary_cache_path(steps, cfg=cfg)
    if path.exists():
        log(f"data: {what} (cached in {path.parent})")
    else:
        log(
            f"data: {what}. Training it now: first run only, about a minute on two cores; "
            f"the tensors are cached in {path.parent}"
        )
    t = boundary_tensors(steps, cfg=cfg, log=log)
    src = f"GPT stage boundary, loss {t['loss']:.2f}"
    return {"activation": t["activation"].numpy(), "gradient": t["gradient"].numpy()}, src


def builtin(
    names: list[str] | tuple[str, ...] = DEFAULT_SETS,
    dtype: str = "bfloat16",
    fraction: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> list[Tensor]:
    """The named built-in tensors in ``dtype``; ``fraction`` < 1 keeps only that leading
    share of the rows (for quick runs)."""
    say = log or (lambda _m: None)
    model: dict[str, np.ndarray] | None = None
    src = ""
    out = []
    for name in names:
        m = re.fullmatch(r"bottleneck(\d+)", name)
        if name in ("activation", "gradient") or m:
            if model is None:
                model, src = _model_tensors(say)
        if name in ("activation", "gradient"):
            x, desc = model[name], src
        elif name == "synthetic":
            from ..data import synthetic

            x, desc = synthetic((4096, 1024)), "Student-t(3), 1% outlier channels x30"
        elif m:
            k = int(m.group(1))
            x = bottleneck(model["activation"], k)
            desc = f"activation projected onto its {k} leading principal directions"
        else:
            raise ValueError(
                f"unknown tensor set {name!r}; choose from activation, gradient, synthetic, "
                "bottleneckK (K channels, e.g. bottleneck16)"
            )
        x = np.asarray(x, dtype=np.float32)
        if fraction < 1.0:
            keep = max(1, int(x.shape[0] * fraction))
            x = x[:keep]
        out.append(Tensor(name, to_numpy(x, dtype), desc))
    return out


def load_file(
    path: str, dtype: str | None = None, log: Callable[[str], None] | None = None
) -> list[Tensor]:
    """The float tensors in a ``.npy``, ``.pt``/``.pth`` or ``.safetensors`` file."""
    say = log or (lambda _m: None)
    base = os.path.basename(path)
    ext = os.path.splitext(path)[1].lower()
    items: list[tuple[str, Any]]
    if ext == ".npy":
        items = [(base, np.load(path, allow_pickle=False))]
    elif ext in (".pt", ".pth"):
        try:
            import torch
        except ImportError:
            raise RuntimeError(f"reading {base} needs torch: pip install torch") from None
        items = list(_flatten(base, torch.load(path, map_location="cpu", weights_only=True)))
    elif ext == ".safetensors":
        try:
            from safetensors import safe_open
        except ImportError:
            raise RuntimeError(
                f"reading {base} needs the safetensors package: pip install 'iota-codec[bench]'"
            ) from None
        try:
            import torch

            framework = "pt"
        except ImportError:
            framework = "numpy"
        with safe_open(path, framework=framework) as f:
            items = [(f"{base}:{k}", f.get_tensor(k)) for k in f.keys()]
    else:
        raise ValueError(f"{path}: unsupported file type; use .npy, .pt or .safetensors")
    out = []
    for name, value in items:
        try:
            arr = to_numpy(value, dtype)
        except TypeError as e:
            say(f"skipped {name}: {e}")
            continue
        if arr.size == 0:
            say(f"skipped {name}: empty")
            continue
        out.append(Tensor(name, arr, f"{base}, {tuple(arr.shape)}"))
    if not out:
        raise ValueError(f"{path}: no float tensors to measure")
    return out


def _flatten(prefix: str, obj: Any):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(f"{prefix}:{k}" if ":" not in prefix else f"{prefix}.{k}", v)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flatten(f"{prefix}[{i}]", v)
    elif hasattr(obj, "dtype") and hasattr(obj, "shape"):
        yield prefix, obj
