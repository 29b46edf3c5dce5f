"""Quantize on the device, entropy-code on the host: what crosses PCIe and what the host
still does, per fixed-rate format.

    python benches/device_quant.py [--rows 2048] [--cols 4096] [--repeat 9] [--threads 0]
                                   [--device cuda]

For a bfloat16 activation-like tensor it prints, per format:

- the bytes per element that cross PCIe: raw (the bf16 tensor) against the device path
  (packed codes + block scales + a 1-byte NaN/Inf flag); this is arithmetic on the sizes of
  the tensors the device path copies;
- the host time of ``Codec.encode`` of the raw tensor in host memory (quantize, pack,
  checksums) against ``_core.encode_block_codes`` of the precomputed codes and scales (pack
  or rANS, checksums): the host work the device stage takes away. Medians of interleaved
  runs, measured in one process.

The torch quantizer runs on the CPU for these two tables only to produce the codes. With
``--device cuda`` a second table times the whole path from and to a CUDA tensor, per format
and for the host-coded profiles (lossless, balanced), against plain torch copies measured in
the same run:

- the peer: copying the raw tensor into pinned host memory (``to_host``, what every encode
  from a GPU would do without a device stage) and back to the device from pinned memory;
- ``encode``: ``Codec.encode`` of the CUDA tensor with device quantization (quantize on the
  GPU, copy codes and scales, entropy-code on the host) and with it off (copy the raw tensor,
  code it on the host); the GPU time of the quantizer alone, from CUDA events;
- ``decode``: ``Codec.decode(..., device=)`` into a new CUDA tensor, the copy completed.

Each is the wall-clock time of the call with the device synchronized after it; frames are
checked byte for byte against the host encoder's first.
"""

from __future__ import annotations

import argparse
import statistics
import time

import iota_codec
import torch
from iota_codec import _core
from iota_codec.torch._device import (
    device_format,
    encode_on_device,
    quantize_on_device,
    to_host,
)

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
    ap.add_argument(
        "--device",
        default="cpu",
        help="a CUDA device (cuda, cuda:1) also times encode from and decode to it",
    )
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
    if args.device != "cpu":
        device_table(x, torch.device(args.device), args.threads, args.repeat)


def device_table(x: torch.Tensor, device: torch.device, threads: int, repeat: int) -> None:
    """Times encode from and decode to ``device`` (see the module's docstring)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: this table needs a CUDA device")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    xd = x.to(device)
    pinned = x.pin_memory()
    mib = x.numel() * x.element_size() / 2**20

    def sync_time(fn):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    def gpu_quantize(codec):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        quantize_on_device(xd, codec)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    print(
        f"\nFrom and to {torch.cuda.get_device_name(device)}: {mib:.0f} MiB bfloat16, "
        f"threads={threads}, wall-clock ms (device synchronized), median of {repeat}\n"
    )
    print(
        "| codec | D2H copy (peer) | encode, device quantize | encode, raw copy | "
        "GPU quantize | decode to device | H2D copy (peer) | encode speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = [*FORMATS, ("lossless", {"profile": "lossless"}), ("balanced", {"profile": "balanced"})]
    for name, kw in rows:
        codec = iota_codec.Codec(threads=threads, **kw)
        frame = codec.encode(x)
        on = encode_on_device(codec, xd, device_quantize="on")
        off = encode_on_device(codec, xd, device_quantize="off")
        assert on == frame and off == frame, f"{name}: a device path changed the frame"
        y = codec.decode(frame, device=device)
        assert y.device == device and torch.equal(y.cpu(), codec.decode(frame))
        staged = device_format(codec) is not None
        times: dict[str, list[float]] = {k: [] for k in ("d2h", "on", "off", "q", "dec", "h2d")}
        for _ in range(repeat):  # interleaved, so drift affects all alike
            times["d2h"].append(sync_time(lambda: to_host(xd)))
            times["on"].append(
                sync_time(lambda c=codec: encode_on_device(c, xd, device_quantize="on"))
            )
            times["off"].append(
                sync_time(lambda c=codec: encode_on_device(c, xd, device_quantize="off"))
            )
            times["q"].append(gpu_quantize(codec) if staged else float("nan"))
            times["dec"].append(sync_time(lambda c=codec, f=frame: c.decode(f, device=device)))
            times["h2d"].append(sync_time(lambda: pinned.to(device, non_blocking=True)))
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        q = f"{ms['q']:.2f}" if staged else "(host path)"
        print(
            f"| {name} | {ms['d2h']:.2f} | {ms['on']:.2f} | {ms['off']:.2f} | {q} | "
            f"{ms['dec']:.2f} | {ms['h2d']:.2f} | {ms['off'] / ms['on']:.1f}x |"
        )


if __name__ == "__main__":
    main()
