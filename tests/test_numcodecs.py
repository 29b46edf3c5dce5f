"""iota-codec as a numcodecs codec (found through the entry point) and inside Zarr."""

from __future__ import annotations

import importlib.metadata

import iota_codec
import ml_dtypes
import numpy as np
import pytest

numcodecs = pytest.importorskip("numcodecs")

from helpers import assert_within_codec_bound, bits  # noqa: E402
from iota_codec.numcodecs import IotaCodec  # noqa: E402

PROFILES = list(iota_codec.PROFILES)


def test_entry_point_is_declared():
    eps = importlib.metadata.entry_points(group="numcodecs.codecs")
    assert any(
        ep.name == "iota_codec" and ep.value == "iota_codec.numcodecs:IotaCodec" for ep in eps
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_get_codec_round_trip(profile):
    codec = numcodecs.get_codec({"id": "iota_codec", "profile": profile, "chunk_size": 500})
    assert isinstance(codec, IotaCodec)
    assert codec.get_config() == iota_codec.Codec(profile, chunk_size=500).get_config()
    assert numcodecs.get_codec(codec.get_config()) == codec
    x = np.random.default_rng(0).standard_normal((40, 33)).astype(np.float32)
    blob = codec.encode(x)
    assert blob == iota_codec.Codec(profile, chunk_size=500).encode(x)
    y = codec.decode(blob)
    assert y.shape == x.shape and y.dtype == x.dtype
    import torch

    assert_within_codec_bound(codec.codec, torch.from_numpy(x), torch.from_numpy(y))
    out = np.empty(x.size, np.float32)  # numcodecs callers may hand in a flat out
    codec.decode(blob, out=out)
    assert (out.reshape(x.shape) == y).all()


def test_dtypes_and_bad_input():
    codec = IotaCodec()
    for x in (
        np.linspace(-3, 3, 101, dtype=np.float16),
        np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2],  # non-contiguous
        np.array([np.nan, -0.0, np.inf], dtype=ml_dtypes.bfloat16),
    ):
        y = codec.decode(codec.encode(x))
        assert y.dtype == x.dtype and (bits(y) == bits(np.ascontiguousarray(x))).all()
    with pytest.raises(iota_codec.InvalidArgumentError, match="unsupported numpy dtype"):
        codec.encode(np.arange(5))
    with pytest.raises(iota_codec.InvalidArgumentError):
        IotaCodec("nope")
    assert "IotaCodec(profile='lossless'" in repr(codec)


def test_zarr_array_round_trip(tmp_path):
    zarr = pytest.importorskip("zarr")
    data = np.random.default_rng(1).standard_normal((64, 48)).astype(np.float32)
    data[3, 4] = np.nan
    arr = zarr.create_array(
        store=str(tmp_path / "a.zarr"),
        shape=data.shape,
        chunks=(16, 48),
        dtype="float32",
        zarr_format=2,
        compressors=numcodecs.get_codec({"id": "iota_codec"}),
        fill_value=0.0,
    )
    arr[:] = data
    again = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    back = again[:]
    assert (bits(back) == bits(data)).all()
    assert again.metadata.compressor.get_config()["id"] == "iota_codec"
