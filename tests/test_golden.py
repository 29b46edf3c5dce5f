"""Golden frames: every frame of every format version keeps decoding, bit for bit, and every
truncation and single-bit flip of one is refused with a CodecError."""

from __future__ import annotations

import json
import pathlib

import iota_codec as codec
import numpy as np
import pytest
import torch
from helpers import bits

GOLDEN = pathlib.Path(__file__).parent / "golden"


def cases():
    for version_dir in sorted(GOLDEN.glob("v*")):
        for case in json.loads((version_dir / "manifest.json").read_text()):
            yield pytest.param(version_dir, case, id=f"{version_dir.name}-{case['name']}")


CASES = list(cases())


def test_every_version_has_goldens():
    versions = {p.name for p in GOLDEN.glob("v*")}
    assert {f"v{v}" for v in range(1, codec.FORMAT_VERSION + 1)} <= versions


def session_of(case: dict) -> codec.Session:
    """A receiving session with a session case's settings."""
    s = case["session"]
    return codec.Session(
        codec.Codec.from_config(case["config"]),
        session_id=s["session_id"],
        refresh=s["refresh"],
        decay=s["decay"],
    )


def session_group(version_dir, case) -> list[dict]:
    """The frames of a session case's group, in order."""
    manifest = json.loads((version_dir / "manifest.json").read_text())
    group = [c for c in manifest if c.get("session", {}).get("group") == case["session"]["group"]]
    return sorted(group, key=lambda c: c["session"]["step"])


@pytest.mark.parametrize(("version_dir", "case"), CASES)
def test_golden_decodes(version_dir, case):
    blob = (version_dir / f"{case['name']}.iota").read_bytes()
    want = np.load(version_dir / f"{case['name']}.npy")
    meta = codec.info(blob)
    assert meta["dtype"] == case["dtype"]
    assert meta["shape"] == case["shape"]
    assert meta["container"] == case["container"]
    assert meta["frame_bytes"] == len(blob) == case["frame_bytes"]
    if "session" in case:
        # Session frames decode through a session that has seen the frames before them; a
        # frame that is not a resync frame needs it.
        receiver = session_of(case)
        for earlier in session_group(version_dir, case)[: case["session"]["step"]]:
            receiver.decode((version_dir / f"{earlier['name']}.iota").read_bytes())
        y = receiver.decode(blob)
        np.testing.assert_array_equal(bits(y), want)
        if case["session"]["step"] > 0:
            with pytest.raises(codec.SessionMismatchError):
                codec.decode(blob)
            return
    y = codec.decode(blob)
    assert isinstance(y, torch.Tensor if case["container"] == "torch" else np.ndarray)
    assert tuple(y.shape) == tuple(case["shape"])
    np.testing.assert_array_equal(bits(y), want)


@pytest.mark.parametrize(("version_dir", "case"), CASES)
def test_golden_every_truncation_and_bit_flip_fails(version_dir, case):
    blob = (version_dir / f"{case['name']}.iota").read_bytes()
    for n in range(len(blob)):
        with pytest.raises(codec.CodecError):
            codec.decode(blob[:n])
    with pytest.raises(codec.CodecError):
        codec.decode(blob + b"\0")
    buf = bytearray(blob)
    for i in range(len(buf) * 8):
        buf[i // 8] ^= 1 << (i % 8)
        with pytest.raises(codec.CodecError):
            codec.decode(bytes(buf))
        buf[i // 8] ^= 1 << (i % 8)


def test_current_encoder_still_writes_the_current_goldens():
    """Not a format guarantee (a better encoder may write other valid frames), but a change
    here must be deliberate: then generate new goldens beside the old ones."""
    import ml_dtypes

    vdir = GOLDEN / f"v{codec.FORMAT_VERSION}"
    senders: dict[str, codec.Session] = {}
    for case in json.loads((vdir / "manifest.json").read_text()):
        if case["container"] != "numpy":
            continue
        # Lossy cases record their settings and keep their input beside the decoded bits.
        config = case.get("config")
        source = f"{case['name']}.input.npy" if config else f"{case['name']}.npy"
        raw = np.load(vdir / source)
        dt = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
        x = raw.view(dt[case["dtype"]]).reshape(case["shape"])
        if "session" in case:
            # The group's frames in order, through one sending session.
            s = case["session"]
            if s["group"] not in senders:
                sender = session_of(case)
                senders[s["group"]] = sender
            blob = senders[s["group"]].encode(x)
        elif config:
            blob = codec.Codec.from_config(config).encode(x)
        else:
            blob = codec.encode(x, chunk_size=case["chunk_size"])
        assert blob == (vdir / f"{case['name']}.iota").read_bytes(), case["name"]
