"""Bad input gets a specific, helpful error; hostile frames never crash or over-allocate."""

from __future__ import annotations

import iota_codec as codec
import numpy as np
import pytest
import torch
from iota_codec import _core


def frame(x=None, **kw):
    if x is None:
        x = np.linspace(-3, 3, 5000, dtype=np.float32)
    return codec.encode(x, **kw)


def test_exception_tree():
    assert issubclass(codec.CodecError, ValueError)
    for cls in (
        codec.InvalidArgumentError,
        codec.CorruptFrameError,
        codec.UnsupportedVersionError,
        codec.LimitExceededError,
    ):
        assert issubclass(cls, codec.CodecError)
    assert issubclass(codec.ChecksumMismatchError, codec.CorruptFrameError)


@pytest.mark.parametrize(
    ("x", "kw", "match"),
    [
        (np.arange(4, dtype=np.int32), {}, "unsupported numpy dtype"),
        (np.arange(4, dtype=np.float64), {}, "unsupported numpy dtype"),
        (torch.arange(4), {}, "unsupported tensor dtype"),
        (torch.zeros(4), {"dtype": "float16"}, "does not match the tensor"),
        (np.zeros(4, np.float32), {"shape": (2, 3)}, "does not match"),
        ([1.0, 2.0], {}, "cannot encode list"),
        (b"\0" * 6, {}, "pass a numpy array"),
        (b"\0" * 6, {"dtype": "float32"}, "not a whole number"),
        (b"\0" * 8, {"dtype": "float32", "shape": (3,)}, "needs 12"),
        (b"\0" * 8, {"dtype": "int8"}, "unsupported dtype"),
        (np.zeros(4, np.float32), {"profile": "zip"}, "unknown profile"),
        (np.zeros(4, np.float32), {"chunk_size": 0}, "at least 1"),
        (np.zeros(4, np.float32), {"threads": -1}, "at least 0"),
    ],
)
def test_invalid_arguments(x, kw, match):
    with pytest.raises(codec.InvalidArgumentError, match=match):
        codec.encode(x, **kw)


def test_non_contiguous_raw_buffer_is_refused():
    x = np.zeros((4, 4), np.uint16)[:, ::2]
    with pytest.raises(codec.InvalidArgumentError, match="C-contiguous"):
        codec.encode(x, dtype="bfloat16")


def test_garbage_is_corrupt():
    for blob in (b"", b"\x89IOT", b"hello world" * 10, bytes(100)):
        with pytest.raises(codec.CorruptFrameError):
            codec.decode(blob)
        with pytest.raises(codec.CorruptFrameError):
            codec.info(blob)


def test_damaged_chunk_is_a_checksum_mismatch():
    blob = bytearray(frame())
    blob[-10] ^= 0x40
    with pytest.raises(codec.ChecksumMismatchError, match="damaged in transit"):
        codec.decode(bytes(blob))


def test_newer_version_is_unsupported():
    blob = bytearray(frame())
    blob[4] = codec.FORMAT_VERSION + 1
    with pytest.raises(codec.UnsupportedVersionError, match="upgrade"):
        codec.decode(bytes(blob))


def test_output_limit_is_enforced_before_allocating():
    x = np.zeros(1 << 20, np.float32)
    blob = frame(x)
    assert len(blob) < 10_000  # zeros compress to almost nothing: a "bomb"
    with pytest.raises(codec.LimitExceededError, match="max_output_bytes"):
        codec.decode(blob, max_output_bytes=(1 << 22) - 1)
    assert codec.decode(blob, max_output_bytes=1 << 22).shape == x.shape
    with pytest.raises(codec.LimitExceededError):
        codec.Codec(max_output_bytes=100).decode(blob)
    # The core refuses it too, for callers that skip the Python layer.
    out = np.empty(x.nbytes, np.uint8)
    with pytest.raises(codec.LimitExceededError):
        _core.decode_into(blob, out, limits={"max_output_bytes": 1000})


def test_huge_declared_shape_is_refused_without_allocating():
    # A forged header claiming 2^40 float32 elements, with no chunk data behind it.
    hdr = bytearray(b"\x89IOT\x01\x00\x01\x01")
    n = 1 << 40
    while n >= 0x80:
        hdr.append((n & 0x7F) | 0x80)
        n >>= 7
    hdr.append(n)
    with pytest.raises(codec.CodecError):
        codec.decode(bytes(hdr) + bytes(16), max_output_bytes=1 << 62)


def test_out_parameter_checks():
    x = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    blob = frame(x)
    out = np.empty(100, np.float32)
    assert codec.decode(blob, out=out) is out
    np.testing.assert_array_equal(out.reshape(10, 10), x)
    t = torch.empty(10, 10)
    assert codec.decode(blob, out=t) is t
    for bad, match in [
        (np.empty(99, np.float32), "elements"),
        (np.empty(100, np.float16), "dtype"),
        (np.empty(200, np.float32)[::2], "C-contiguous"),
        (torch.empty(100, dtype=torch.float16), "dtype"),
        (bytearray(400), "numpy array or torch tensor"),
    ]:
        with pytest.raises(codec.InvalidArgumentError, match=match):
            codec.decode(blob, out=bad)
    ro = np.empty(100, np.float32)
    ro.flags.writeable = False
    with pytest.raises(codec.InvalidArgumentError, match="writable"):
        codec.decode(blob, out=ro)


def test_empty_shape_beyond_array_indexing_is_refused():
    # Zero elements, so within any output limit, but no numpy array or torch tensor has
    # this shape.
    from iota_codec import _core

    stages = b"\x02" + b"\x01\x00" + b"\x02\x02\x20\x0b"  # float_split, rans(32, 11)
    head = b"\x89IOT\x01\x01\x03\x02" + bytes([0xFF] * 8 + [0x7F]) + b"\x00\x01" + stages
    blob = _core._reseal(head + bytes(4))
    with pytest.raises(codec.LimitExceededError, match="beyond what an array can index"):
        codec.decode(blob)


def test_chunk_and_dimension_limits():
    x = np.zeros((2, 3, 4, 5), np.float32)
    blob = codec.encode(x, chunk_size=10)
    assert codec.info(blob)["n_chunks"] == 12
    with pytest.raises(codec.LimitExceededError, match="max_chunks"):
        codec.decode(blob, max_chunks=11)
    assert codec.decode(blob, max_chunks=12).shape == x.shape
    with pytest.raises(codec.LimitExceededError, match="max_ndim"):
        codec.decode(blob, max_ndim=3)
    with pytest.raises(codec.LimitExceededError, match="max_chunks"):
        codec.Codec(max_chunks=1).decoder().feed(blob)
    for bad in ({"max_chunks": 0}, {"max_ndim": 33}, {"max_ndim": -1}):
        with pytest.raises(codec.InvalidArgumentError):
            codec.Codec(**bad)
    with pytest.raises(codec.InvalidArgumentError, match="unknown decoder limit"):
        _core.decode_into(blob, np.empty(x.nbytes, np.uint8), limits={"max_chunkz": 1})


def test_value_validation_for_untrusted_peers():
    x = np.linspace(-3, 3, 10_000, dtype=np.float32)
    x[7777] = np.inf
    blob = codec.encode(x, chunk_size=1000)
    np.testing.assert_array_equal(codec.decode(blob), x)  # off by default
    with pytest.raises(codec.RejectedValueError, match="non-finite value at element 7777"):
        codec.decode(blob, reject_nonfinite=True)
    with pytest.raises(codec.RejectedValueError):
        codec.decode(blob, max_abs=1e30)
    x[7777] = 0
    blob = codec.encode(x, chunk_size=1000)
    assert codec.decode(blob, max_abs=3.0, reject_nonfinite=True).shape == x.shape
    with pytest.raises(codec.RejectedValueError, match=r"above max_abs 2\.5"):
        codec.decode(blob, max_abs=2.5)
    # Streaming and torch outputs check too, and the settings round-trip through configs.
    c = codec.Codec(max_abs=2.5)
    with pytest.raises(codec.RejectedValueError):
        c.decoder().feed(blob)
    with pytest.raises(codec.RejectedValueError):
        c.decode(codec.encode(torch.from_numpy(x)))
    assert codec.Codec.from_config(c.get_config()).limits["max_abs"] == 2.5
    for bad in (-1.0, float("nan"), "big", True):
        with pytest.raises(codec.InvalidArgumentError, match="max_abs"):
            codec.Codec(max_abs=bad)
    with pytest.raises(codec.InvalidArgumentError, match="reject_nonfinite"):
        codec.Codec(reject_nonfinite=1)
