"""``iota-codec demo``: the codec on built-in activation data, with ratio and speed next to
zstd measured in the same run."""

from __future__ import annotations

import os
import sys

import numpy as np

from . import __version__, _core, measure
from ._api import Codec


def _load(log) -> tuple[dict, str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        from .data import synthetic

        log("torch is not installed: using synthetic heavy-tailed data instead of a model")
        x = synthetic((1024, 2048))
        return {"activation": x}, "synthetic Student-t data with outlier channels"
    from .data import GPTConfig, boundary_tensors

    cfg = GPTConfig()
    steps = int(os.environ.get("IOTA_DEMO_STEPS", "150"))
    log(
        f"Data: a {cfg.n_layers}-layer byte-level GPT (d={cfg.d_model}) trained {steps} steps "
        "on the Python standard library's source (first run only; cached)."
    )
    t = boundary_tensors(steps, log=log)
    desc = (
        f"stage-boundary tensors of that model (loss {t['loss']:.2f}), "
        f"shape {tuple(t['activation'].shape)}"
    )
    return {"activation": t["activation"], "gradient": t["gradient"]}, desc


def _as(x, dtype: str):
    if hasattr(x, "to"):
        import torch

        return x.to(getattr(torch, dtype)).contiguous()
    import ml_dtypes

    return x.astype(
        {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]
    )


def main(argv: list[str] | None = None) -> int:
    def log(msg: str) -> None:
        print(msg, flush=True)

    log(
        f"iota-codec {__version__} demo  (SIMD level: {_core.simd_level()}, {os.cpu_count()} cores)"
    )
    tensors, desc = _load(log)
    log(f"Measuring on {desc}.\n")
    one = Codec("lossless", threads=1)
    zstd = measure.zstd_peer(3)
    head = (
        f"{'tensor':<11}{'dtype':<10}{'MiB':>6}{'ratio':>8}{'bound':>8}{'of bound':>10}"
        f"{'enc GB/s':>10}{'dec GB/s':>10}"
    )
    if zstd:
        head += f"  | {'zstd-3':>7}{'enc GB/s':>10}{'dec GB/s':>10}{'speedup':>14}"
    log("lossless profile, one thread, medians of 7 runs")
    log(head)
    log("-" * len(head))
    for name, x in tensors.items():
        for dtype in ("bfloat16", "float16", "float32"):
            t = _as(x, dtype)
            raw = measure.raw_bits(t)[0]
            nbytes = raw.nbytes
            ours = measure.measure(
                "iota",
                lambda t=t: one.encode(t),
                one.decode,
                nbytes,
                check=lambda y, raw=raw: np.array_equal(measure.raw_bits(y)[0], raw),
            )
            bound = measure.lossless_bound(t)
            line = (
                f"{name:<11}{dtype:<10}{nbytes / 2**20:>6.1f}{ours.ratio:>8.3f}"
                f"{bound['ratio']:>8.3f}{bound['bytes'] / ours.coded_bytes:>10.1%}"
                f"{ours.encode_gbps:>10.2f}{ours.decode_gbps:>10.2f}"
            )
            if zstd:
                buf = raw.tobytes()
                z = measure.measure("zstd-3", lambda buf=buf: zstd[0](buf), zstd[1], nbytes)
                line += (
                    f"  | {z.ratio:>7.3f}{z.encode_gbps:>10.2f}{z.decode_gbps:>10.2f}"
                    f"{ours.encode_gbps / z.encode_gbps:>6.1f}x/"
                    f"{ours.decode_gbps / z.decode_gbps:.1f}x"
                )
            log(line)
    x = _as(tensors["activation"], "bfloat16")
    nbytes = measure.raw_bits(x)[0].nbytes
    alls = Codec("lossless", threads=0)
    multi = measure.measure("iota", lambda: alls.encode(x), alls.decode, nbytes)
    log(
        f"\nAll {os.cpu_count()} cores, bfloat16 activation: encode {multi.encode_gbps:.2f} GB/s, "
        f"decode {multi.decode_gbps:.2f} GB/s"
    )
    for mbit in (100, 1000):
        link = mbit * 1e6 / 8
        raw_ms = nbytes / link * 1e3
        coded_ms = (multi.coded_bytes / link + multi.encode_s + multi.decode_s) * 1e3
        log(
            f"Over {mbit} Mbit/s this tensor takes {raw_ms:.0f} ms raw, {coded_ms:.0f} ms "
            f"encoded + sent + decoded (lossless)."
        )
    log("\nLossless is bit-exact; the lossy profiles trade a bounded error for far more.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
