"""Quantize on the device, entropy-code on the host: the torch block quantizer
(``iota_codec.torch._quant``) against the Rust host quantizer, frame for frame.

The torch ops run on CPU tensors here (``device_quantize=True`` / the environment variable
send them down the device path); the same comparisons on a GPU are at the end and skip,
saying why, where CUDA is missing. Bit-exactness on CUDA is therefore only checked on a
machine with a GPU.
"""

from __future__ import annotations

import iota_codec
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from iota_codec import _core
from iota_codec.torch import _device
from iota_codec.torch._device import encode_on_device, encode_quantized, quantize_on_device
from iota_codec.torch._quant import BlockFormat, block_quantize, pack_codes

FORMATS = ["int8", "int4", "int3", "int2", "e4m3", "e5m2", "e2m1"]
SCALES = ["e8m0", "f16", "bf16"]
BLOCKS = [16, 32, 48, 64, 256]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2, "e4m3": 8, "e5m2": 8, "e2m1": 4}


def mixed(dtype: torch.dtype, block: int, seed: int, blocks: int = 23) -> torch.Tensor:
    """A 1-D tensor of ``blocks`` blocks of different kinds plus a partial block: normal,
    heavy-tailed (Cauchy), all zero (signed zeros), subnormal, near the dtype's largest
    value, a wide range of magnitudes, ties; one element short of whole blocks."""
    g = torch.Generator().manual_seed(seed)
    fi = torch.finfo(dtype)
    parts = []
    for b in range(blocks):
        kind = b % 8
        r = torch.randn(block, generator=g, dtype=torch.float64)
        if kind == 0:
            v = r
        elif kind == 1:
            v = torch.tan((torch.rand(block, generator=g, dtype=torch.float64) - 0.5) * 3.1)
        elif kind == 2:
            v = torch.where(r > 0, 0.0, -0.0)
        elif kind == 3:
            v = r * fi.tiny * 0.4  # subnormal in the dtype (or zero)
        elif kind == 4:
            v = (torch.rand(block, generator=g, dtype=torch.float64) * 2 - 1) * fi.max
        elif kind == 5:
            v = r * torch.exp2(torch.randint(-60, 60, (block,), generator=g).double())
        elif kind == 6:
            v = torch.randint(-300, 300, (block,), generator=g).double() / 2  # .5 ties
        else:
            v = r * 1e-3 + torch.where(torch.arange(block) == 3, 7.0, 0.0)
        parts.append(v)
    x = torch.cat(parts)[:-1]
    return x.clamp(-fi.max, fi.max).to(dtype)


def check_equal(codec: iota_codec.Codec, x: torch.Tensor) -> None:
    host = codec.encode(x)  # a CPU tensor: the host quantizer
    dev = encode_quantized(codec, x)  # the torch quantizer + _core.encode_block_codes
    assert dev is not None, "the device path was not taken"
    if dev != host:
        n = next(i for i, (a, b) in enumerate(zip(dev, host, strict=False)) if a != b)
        pytest.fail(f"frames differ (lengths {len(dev)} and {len(host)}; first at byte {n})")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_quantizer_frame_equals_host_frame(fmt, scale, block, dtype):
    # Chunks of 4 blocks: several chunks, codes packed from odd bit offsets for int3.
    codec = iota_codec.Codec(format=fmt, scale=scale, block=block, chunk_size=4 * block)
    x = mixed(dtype, block, seed=hash((fmt, scale, block)) % 1000)
    check_equal(codec, x)
    check_equal(codec, x.reshape(1, -1)[:, : 3 * block + 5])  # one partial chunk


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_entropy_coded_and_default_chunks(fmt, dtype):
    x = mixed(dtype, 32, seed=7, blocks=300).reshape(29, -1)
    for codec in (
        iota_codec.Codec(format=fmt, entropy=True),
        iota_codec.Codec(format=fmt, entropy=True, chunk_size=2048, threads=1),
        iota_codec.Codec(format=fmt, scale="f16", block=128, threads=2),
    ):
        check_equal(codec, x)


@pytest.mark.parametrize("name", ["mxint8", "mxfp8", "mxfp8_e5m2", "mxfp4"])
def test_mx_formats_and_the_fast_profile(name):
    x = torch.randn(300, 129, dtype=torch.bfloat16) * 3
    check_equal(iota_codec.Codec(format=name), x)
    check_equal(iota_codec.Codec("fast"), x)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 17, 1025])
@pytest.mark.parametrize("fmt", ["int8", "int2", "e5m2"])
def test_short_last_chunks_are_stored_from_the_raw_tail(fmt, n):
    # Chunks of 1024: the last one holds n % 1024 elements (or all n); tiny ones are stored.
    for dtype in DTYPES:
        x = torch.randn(1024 * (n > 1024) + n % 1024 or n).to(dtype)
        for entropy in (False, True):
            check_equal(iota_codec.Codec(format=fmt, entropy=entropy, chunk_size=1024), x)


def test_every_finite_bfloat16_and_float16_pattern():
    for dtype, fp in ((torch.bfloat16, 0x7F80), (torch.float16, 0x7C00)):
        pats = torch.arange(0, 1 << 16, dtype=torch.int32)
        pats = pats[(pats & fp) != fp].to(torch.int16)  # drop NaN and Inf patterns
        x = pats.view(dtype)
        for fmt in FORMATS:
            for scale in SCALES:
                check_equal(iota_codec.Codec(format=fmt, scale=scale, block=16), x)


@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=300),
    st.sampled_from(FORMATS),
    st.sampled_from(SCALES),
    st.sampled_from([16, 17, 33]),
)
def test_any_float32_values(values, fmt, scale, block):
    check_equal(iota_codec.Codec(format=fmt, scale=scale, block=block), torch.tensor(values))


def test_packing_matches_an_lsb_first_bit_stream():
    g = torch.Generator().manual_seed(1)
    for bits in (2, 3, 4, 8):
        for n in (0, 1, 7, 8, 9, 100):
            codes = torch.randint(0, 1 << bits, (n,), generator=g, dtype=torch.uint8)
            stream = 0
            for i, c in enumerate(codes.tolist()):
                stream |= c << (i * bits)
            want = stream.to_bytes((n * bits + 7) // 8, "little")
            assert bytes(pack_codes(codes, bits).numpy()) == want


def test_what_crosses_is_codes_and_scales():
    x = torch.randn(4096, 64, dtype=torch.bfloat16)
    for fmt, scale, block, per_elem in [
        ("int8", "bf16", 64, 1 + 2 / 64),
        ("int4", "e8m0", 32, 0.5 + 1 / 32),
        ("int2", "e8m0", 32, 0.25 + 1 / 32),
        ("e2m1", "e8m0", 32, 0.5 + 1 / 32),
    ]:
        dev = quantize_on_device(x, iota_codec.Codec(format=fmt, scale=scale, block=block))
        assert dev.raw_tail is None  # whole chunks: nothing raw crosses
        moved = sum(t.numel() * t.element_size() for t in dev.tensors())
        assert moved == x.numel() * per_elem + 1  # + the NaN/Inf flag


def test_paths_can_be_forced(monkeypatch):
    codec = iota_codec.Codec("fast")
    x = torch.randn(1000, 3)
    calls = []
    real = _device.encode_quantized

    def spy(c, t):
        calls.append(t.shape)
        return real(c, t)

    monkeypatch.setattr(_device, "encode_quantized", spy)
    host = codec.encode(x)
    assert calls == []  # CPU tensors are coded on the host by default
    assert encode_on_device(codec, x, device_quantize=True) == host
    assert encode_on_device(codec, x, device_quantize="off") == host
    assert len(calls) == 1
    monkeypatch.setenv(_device.DEVICE_QUANTIZE_ENV, "on")
    assert codec.encode(x) == host
    assert iota_codec.encode(x, profile="fast") == host
    assert len(calls) == 3
    assert codec.encode(x.numpy()) == codec.encode(x.numpy())  # numpy: always the host
    assert len(calls) == 3
    # A codec without a device stage takes the raw path, whatever is forced.
    lossless = iota_codec.Codec()
    assert lossless.encode(x) == iota_codec.Codec().encode(x.clone())
    with pytest.raises(iota_codec.InvalidArgumentError, match="device_quantize"):
        encode_on_device(codec, x, device_quantize="sometimes")
    # An unknown value of the variable is refused on every torch tensor, CPU ones included;
    # numpy arrays never look at it.
    host_np = codec.encode(x.numpy())
    monkeypatch.setenv(_device.DEVICE_QUANTIZE_ENV, "sometimes")
    with pytest.raises(iota_codec.InvalidArgumentError, match="sometimes"):
        codec.encode(x)
    assert codec.encode(x.numpy()) == host_np


@pytest.mark.parametrize(
    "codec",
    [
        iota_codec.Codec(),
        iota_codec.Codec("balanced"),
        iota_codec.Codec(bits=4, rounding="stochastic", seed=3),
    ],
    ids=["lossless", "balanced", "stochastic"],
)
def test_no_device_stage(codec):
    x = torch.randn(500)
    assert quantize_on_device(x, codec) is None
    assert encode_on_device(codec, x, device_quantize=True) == codec.encode(x)


def test_non_finite_values_take_the_host_path():
    x = torch.randn(1000)
    x[123] = float("nan")
    x[900] = float("-inf")
    refuse = iota_codec.Codec(bits=4)
    assert encode_quantized(refuse, x) is None
    with pytest.raises(iota_codec.NonFiniteError) as dev_err:
        encode_on_device(refuse, x, device_quantize=True)
    with pytest.raises(iota_codec.NonFiniteError) as host_err:
        refuse.encode(x)
    assert str(dev_err.value) == str(host_err.value)
    assert "element 123" in str(dev_err.value)
    keep = iota_codec.Codec(bits=4, nonfinite="keep")
    assert encode_on_device(keep, x, device_quantize=True) == keep.encode(x)
    # Kept-non-finite codecs still quantize on the device when there are none.
    check_equal(keep, torch.randn(1000))


def test_dtype_and_shape_arguments_are_checked_as_on_the_host():
    codec = iota_codec.Codec("fast")
    x = torch.randn(10, 10)
    assert encode_on_device(codec, x, shape=(10, 10), device_quantize=True) == codec.encode(x)
    with pytest.raises(iota_codec.InvalidArgumentError, match="shape"):
        encode_on_device(codec, x, shape=(100,), device_quantize=True)
    with pytest.raises(iota_codec.InvalidArgumentError, match="dtype"):
        encode_on_device(codec, x.double(), device_quantize=True)
    assert encode_on_device(codec, torch.empty(0, 5), device_quantize=True) == codec.encode(
        torch.empty(0, 5)
    )


# --- the Rust entry point with bad input ---------------------------------------------------


def host_codes(codec, x):
    s = codec.settings
    q = block_quantize(x, BlockFormat(s["format"], s["scale"], s["block"]), packed=False)
    return q.codes.numpy(), q.scales.view(torch.uint8).numpy()


def entry(codec, codes, scales, shape, dtype="float32", **kw):
    return _core.encode_block_codes(
        codes,
        scales,
        dtype,
        list(shape),
        settings=codec.settings,
        chunk_size=codec.chunk_size,
        hint=2,
        **kw,
    )


def test_entry_writes_the_host_frame_from_unpacked_codes():
    codec = iota_codec.Codec(format="int4", scale="f16", block=32)
    x = torch.randn(40, 25)
    codes, scales = host_codes(codec, x)
    assert entry(codec, codes, scales, x.shape) == codec.encode(x)
    packed = pack_codes(torch.from_numpy(codes), 4).numpy()
    assert entry(codec, packed, scales, x.shape, packed=True) == codec.encode(x)


def test_entry_refuses_bad_input():
    codec = iota_codec.Codec(format="int4", scale="f16", block=32)
    x = torch.randn(100) * 3
    codes, scales = host_codes(codec, x)
    bad = iota_codec.InvalidArgumentError
    with pytest.raises(bad, match="codes hold 99 bytes"):
        entry(codec, codes[1:], scales, x.shape)
    with pytest.raises(bad, match="scales hold 6 bytes; 4 blocks"):
        entry(codec, codes, scales[2:], x.shape)
    with pytest.raises(bad, match="packed"):
        entry(codec, codes, scales, x.shape, packed=True)
    for value in (16, 0x08, 0xFF):  # beyond 4 bits; -8 (never written); beyond
        c = codes.copy()
        c[57] = value
        with pytest.raises(bad, match="element 57"):
            entry(codec, c, scales, x.shape)
    s = scales.copy()
    s[3] = 0x80  # block 1's scale negative
    with pytest.raises(bad, match="block 1"):
        entry(codec, codes, s, x.shape)
    s[3] = 0x7C  # infinite
    with pytest.raises(bad, match="block 1"):
        entry(codec, codes, s, x.shape)
    s[2:4] = 0  # zero, but its codes are not
    with pytest.raises(bad, match="block 1 has a zero scale"):
        entry(codec, codes, s, x.shape)
    with pytest.raises(bad, match="raw_tail"):
        entry(codec, codes, scales, x.shape, raw_tail=b"abc")
    with pytest.raises(bad, match=r"buffer|bytes-like"):
        entry(codec, [1, 2, 3], scales, x.shape)
    with pytest.raises(bad, match="fixed-rate"):
        _core.encode_block_codes(codes, scales, "float32", [100])
    with pytest.raises(bad, match="dtype"):
        entry(codec, codes, scales, x.shape, dtype="float64")
    mx = iota_codec.Codec(format="mxfp8")
    c8, s8 = host_codes(mx, x)
    s8 = s8.copy()
    s8[0] = 255
    with pytest.raises(bad, match="NaN"):
        entry(mx, c8, s8, x.shape)
    c8 = c8.copy()
    c8[5] = 0x7F  # the E4M3 NaN
    with pytest.raises(bad, match="element 5"):
        entry(mx, c8, host_codes(mx, x)[1], x.shape)


def test_entry_without_the_raw_tail_makes_no_frame():
    codec = iota_codec.Codec("fast", chunk_size=1024)
    x = torch.randn(1025)
    codes, scales = host_codes(codec, x)
    assert entry(codec, codes, scales, x.shape) is None  # the 1-element chunk is stored
    tail = x[1024:].numpy().view(np.uint8)
    assert entry(codec, codes, scales, x.shape, raw_tail=tail) == codec.encode(x)


# --- on a GPU -------------------------------------------------------------------------------

cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device (torch.cuda.is_available() is false): the torch quantizer "
    "is checked on CPU tensors above, its CUDA run is not verified on this machine",
)


@cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_cuda_frames_equal_host_frames(fmt, scale, dtype):
    for block in (16, 32, 256):
        codec = iota_codec.Codec(format=fmt, scale=scale, block=block, chunk_size=4 * block)
        x = mixed(dtype, block, seed=5)
        xc = x.cuda()
        assert encode_quantized(codec, xc) is not None  # the device path is taken
        assert codec.encode(xc) == codec.encode(x)


@cuda
def test_cuda_quantization_follows_the_current_stream():
    codec = iota_codec.Codec("fast")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.zeros(1 << 22, device="cuda")
        for _ in range(20):  # keep the stream busy so a missing wait would show
            x.add_(1)
        blob = codec.encode(x)
        side.synchronize()
    # fast is lossy (20 decodes as 19.97): the frame must be that of a tensor of twenties
    assert blob == codec.encode(torch.full((1 << 22,), 20.0))


@cuda
def test_cuda_non_finite_and_forced_off():
    codec = iota_codec.Codec(bits=4)
    x = torch.randn(1000, device="cuda")
    assert encode_on_device(codec, x, device_quantize="off") == codec.encode(x.cpu())
    x[7] = float("inf")
    with pytest.raises(iota_codec.NonFiniteError, match="element 7"):
        codec.encode(x)
