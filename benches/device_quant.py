"""Quantize on the device, entropy-code on the host: what crosses PCIe and what the host
still does, per fixed-rate format.

    python benches/device_quant.py [--rows 2048] [--cols 4096] [--repeat 9] [--threads 0]

For a bfloat16 activation-like tensor it prints, per format:

- the bytes per element that cross PCIe: raw (the bf16 tensor) against the device path
  (packed codes + block scales + a 1-byte NaN/Inf flag); this is arithmetic on the sizes of
  the tensors the device path copies;
- the host time of ``Codec.encode`` of the raw tensor in host memory (quantize, pack,
  checksums) against ``_core.encode_block_codes`` of the precomputed codes and scales (pack
  or rANS, checksums): the host work the device stage takes away. Medians of interleaved
  runs, measured in one process.

The torch quantizer runs on the CPU here only to produce the codes (its time on a GPU is not
measured by this script).
"""

from __future__ import annotations

import argparse
import statistics
import time

import iota_codec
import torch
from iota_codec import _core
from iota_codec.torch._device import quantize_on_device

FORMATS = [
    ("fast (int8, bf16 scale, block 64)", {"profile": "fast"}),
    ("mxint8", {"format": "mxint8"}),
    ("mxfp8 (e4m3)", {"format": "mxfp8"}),
    ("mxfp8_e5m2", {"format": "mxfp8_e5m2"}),
    ("int4, e8m0, block 32", {"format": "int4", "scale": "e8m0"}),
    ("mxfp4 (e2m1)", {"format": "mxfp4"}),
    ("int3, e8m0, block 32", {"format": "int3", "scale": "e8m0"}),
    ("int2, e8m0, block 32", {"format": "int2", "scale": "e8m0"}),
    ("int8 + rANS, bf16 scale, block 64", {"format": "int8", "entropy": True, "block": 64}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, args.cols, generator=g) * torch.exp(
        torch.randn(args.rows, 1, generator=g)
    )
    x = x.to(torch.bfloat16)
    n = x.numel()
    raw = x.element_size()
    print(
        f"bfloat16 tensor {tuple(x.shape)} ({n * raw / 2**20:.0f} MiB), threads={args.threads}, "
        f"median of {args.repeat}; simd={_core.simd_level()}\n"
    )
    print(
        "| format | PCIe bytes/elem raw | PCIe bytes/elem device path | less crossing | "
        "host ms: encode raw | host ms: encode_block_codes | host work saved |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, kw in FORMATS:
        codec = iota_codec.Codec(threads=args.threads, **kw)
        dev = quantize_on_device(x, codec)
        moved = sum(t.numel() * t.element_size() for t in dev.tensors())
        codes = dev.quant.codes.numpy()
        scales = dev.quant.scales.view(torch.uint8).numpy()

        def precoded(codec=codec, codes=codes, scales=scales):
            return _core.encode_block_codes(
                codes,
                scales,
                "bfloat16",
                list(x.shape),
                profile=codec.profile,
                settings=codec.settings,
                chunk_size=codec.chunk_size,
                threads=codec.threads,
                hint=2,
                packed=True,
            )

        assert precoded() == codec.encode(x)  # the same frame
        t_raw, t_pre = [], []
        for _ in range(args.repeat):  # interleaved, so drift affects both alike
            t0 = time.perf_counter()
            codec.encode(x)
            t1 = time.perf_counter()
            precoded()
            t2 = time.perf_counter()
            t_raw.append(t1 - t0)
            t_pre.append(t2 - t1)
        a, b = statistics.median(t_raw) * 1e3, statistics.median(t_pre) * 1e3
        print(
            f"| {name} | {raw:.3f} | {moved / n:.3f} | {raw * n / moved:.1f}x | {a:.2f} | "
            f"{b:.2f} | {a / b:.1f}x |"
        )


if __name__ == "__main__":
    main()
