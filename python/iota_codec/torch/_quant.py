"""Fixed-rate block quantization in plain torch ops, bit for bit the host quantizer's.

This is the device half of "quantize on the GPU, entropy-code on the host": it runs on any
torch device (the tests check it on CPU tensors) and produces exactly the codes and stored
scales of the Rust reference (``src/quant/block.rs``, ``minifloat.rs``, ``rounding.rs``;
``docs/FORMAT.md``, "Block quantization"), so that
``_core.encode_block_codes`` turns them into the frame ``Codec.encode`` writes for the same
tensor. Every step is one IEEE ``float32`` operation, as there:

- ``amax``: the largest magnitude among a block's finite elements (0 when there is none).
  Padding the last, partial block with zeros does not change it.
- E8M0 scale: ``E = clamp(floor(log2(amax)) - emax + 127, 0, 254)``, ``E = 0`` for
  ``amax = 0``. For a subnormal ``amax`` the clamp gives 0 whatever its exact logarithm, so
  ``E = clamp(exponent_field(amax) - emax, 0, 254)``. The multiplier
  ``2^(E - 127 - fraction_bits)`` is built from its bits (it may be an ``f32`` subnormal).
- float16 / bfloat16 scale: ``amax / max`` rounded to the scale type (torch's conversions
  round to nearest even), then saturated (an overflow to infinity becomes the largest finite
  value). A zero multiplier codes the whole block as 0.
- ``t = x / multiplier``; integers: ``clamp(round_half_even(t), -max, max)`` in two's
  complement; minifloats: ``|t|`` rounded on the element's grid (a power-of-two scaling,
  exact, then ``round_half_even``), saturating at ``max``, the sign bit from ``t`` (``-0``
  included). Non-finite elements code as 0.

Only round-to-nearest-even is here; stochastic rounding runs on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# name: (bits, max, emax, int fraction bits, minifloat (exp bits, man bits, bias, max code))
_ELEMENTS: dict[str, tuple[int, float, int, int, tuple[int, int, int, int] | None]] = {
    "int8": (8, 127.0, 0, 6, None),
    "int4": (4, 7.0, 0, 2, None),
    "int3": (3, 3.0, 0, 1, None),
    "int2": (2, 1.0, 0, 0, None),
    "e4m3": (8, 448.0, 8, 0, (4, 3, 7, 0x7E)),
    "e5m2": (8, 57344.0, 15, 0, (5, 2, 15, 0x7B)),
    "e2m1": (4, 6.0, 2, 0, (2, 1, 1, 0x7)),
}
_SCALES = ("e8m0", "f16", "bf16")
#: The float dtypes the codec takes.
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class BlockFormat:
    """A fixed-rate format: element name, scale name, block size."""

    element: str
    scale: str
    block: int

    def __post_init__(self) -> None:
        if self.element not in _ELEMENTS:
            raise ValueError(f"unknown element format {self.element!r}")
        if self.scale not in _SCALES:
            raise ValueError(f"unknown scale format {self.scale!r}")
        if not 16 <= self.block <= 256:
            raise ValueError(f"block size {self.block} is outside 16..256")

    @property
    def bits(self) -> int:
        return _ELEMENTS[self.element][0]

    @property
    def scale_bytes(self) -> int:
        return 1 if self.scale == "e8m0" else 2


@dataclass
class BlockQuant:
    """What the device quantizer produced for a tensor of ``numel`` elements."""

    #: The codes as an LSB-first stream of ``bits``-bit values (one byte per code for 8-bit
    #: elements), ``uint8``.
    codes: torch.Tensor
    #: Each block's stored scale: ``uint8`` (E8M0) or ``int16`` holding float16/bfloat16 bits.
    scales: torch.Tensor
    #: A 0-d ``bool`` tensor: whether the tensor holds NaN or infinities (then the frame must
    #: come from the host encoder, which refuses or escapes them).
    nonfinite: torch.Tensor


def _pow2(k: torch.Tensor) -> torch.Tensor:
    """``2^k`` as float32 for integer ``k`` in ``-149..127`` (subnormals included), exact."""
    normal = (k + 127).clamp(min=0) << 23
    sub = torch.ones_like(k) << (k + 149).clamp(0, 22)
    return torch.where(k >= -126, normal, sub).view(torch.float32)


def _scales(fmt: BlockFormat, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored scales (uint8 or int16 bits) and multipliers (float32) of the blocks."""
    _, top, emax, frac, _ = _ELEMENTS[fmt.element]
    if fmt.scale == "e8m0":
        e = ((amax.view(torch.int32) >> 23) - emax).clamp(0, 254)
        return e.to(torch.uint8), _pow2(e - 127 - frac)
    dtype = torch.float16 if fmt.scale == "f16" else torch.bfloat16
    # A tensor divisor, not a Python scalar: CUDA divides by a scalar as a multiplication by
    # its reciprocal, which is not the IEEE division the host does.
    s = (amax / torch.full_like(amax, top)).to(dtype)
    s = torch.where(torch.isinf(s), torch.tensor(torch.finfo(dtype).max, dtype=dtype), s)
    return s.view(torch.int16), s.to(torch.float32)


def _element_codes(fmt: BlockFormat, t: torch.Tensor) -> torch.Tensor:
    """The codes (int32, in the low ``bits`` bits) of finite ``t`` (NaN gives garbage)."""
    bits, top, _, _, mini = _ELEMENTS[fmt.element]
    if mini is None:
        r = torch.round(t).clamp(-top, top)
        return r.to(torch.int32) & ((1 << bits) - 1)
    exp_bits, man, bias, max_code = mini
    sign = torch.signbit(t).to(torch.int32) << (exp_bits + man)
    a = t.abs()
    emin = 1 - bias
    # floor(log2(a)) for normal a; a subnormal (or zero) a is below 2^emin anyway.
    e = ((a.view(torch.int32) >> 23) - 127).clamp(min=emin)
    r = torch.round(a * _pow2((man - e).clamp(-149, 127))).to(torch.int32)
    carry = r == (2 << man)
    e = torch.where(carry, e + 1, e)
    r = torch.where(carry, 1 << man, r)
    mag = torch.where(r < (1 << man), r, ((e + bias) << man) | (r - (1 << man)))
    mag = torch.where(a >= top, max_code, mag)
    return sign | mag


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``uint8`` codes (one per byte) as an LSB-first stream of ``bits``-bit values, padded
    with zero bits to a whole byte."""
    if bits == 8:
        return codes
    n = codes.numel()
    per = 8  # 8 codes fill `bits` whole bytes
    pad = (-n) % per
    c = codes.to(torch.int64)
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.view(-1, per)
    shifts = torch.arange(per, device=codes.device, dtype=torch.int64) * bits
    v = (c << shifts).sum(dim=1)
    byte_shifts = torch.arange(bits, device=codes.device, dtype=torch.int64) * 8
    out = ((v[:, None] >> byte_shifts) & 0xFF).to(torch.uint8).view(-1)
    return out[: (n * bits + 7) // 8]


def block_quantize(x: torch.Tensor, fmt: BlockFormat, *, packed: bool = True) -> BlockQuant:
    """Quantizes ``x`` (float32, float16 or bfloat16, any shape and device; its elements in
    row-major order) in blocks of ``fmt``, rounding to nearest even, on ``x``'s device."""
    if x.dtype not in DTYPES:
        raise TypeError(f"block_quantize codes float32, float16 and bfloat16, not {x.dtype}")
    n = x.numel()
    xf = x.detach().reshape(-1).to(torch.float32)  # exact
    pad = (-n) % fmt.block
    if pad:
        xf = torch.nn.functional.pad(xf, (0, pad))
    xb = xf.view(-1, fmt.block)
    finite = torch.isfinite(xb)
    amax = torch.where(finite, xb.abs(), 0.0).amax(dim=1)
    stored, mult = _scales(fmt, amax)
    mult = mult[:, None]
    t = torch.where(finite, xb / mult, 0.0)
    codes = _element_codes(fmt, t)
    codes = torch.where(finite & (mult != 0), codes, 0).to(torch.uint8).view(-1)[:n]
    if packed:
        codes = pack_codes(codes, fmt.bits)
    return BlockQuant(codes=codes, scales=stored, nonfinite=~finite.all())
