"""The achieved-error measure the benchmarks report (:func:`iota_codec.measure.achieved_error`)
and the timing helper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from iota_codec import measure


def test_achieved_error_exact_and_lossy():
    x = np.array([1.0, -2.0, 0.0, 4.0], np.float32)
    assert measure.achieved_error(x, x.copy()) == {
        "rel_rmse": 0.0,
        "max_abs_error": 0.0,
        "exact": True,
    }
    y = np.array([1.0, -2.0, 0.0, 3.0], np.float32)
    e = measure.achieved_error(x, y)
    assert e["exact"] is False
    assert e["rel_rmse"] == pytest.approx(1 / math.sqrt(21))
    assert e["max_abs_error"] == pytest.approx(1.0)


def test_achieved_error_skips_non_finite_inputs_and_flags_non_finite_outputs():
    x = np.array([np.nan, 3.0, np.inf, 4.0], np.float32)
    y = np.array([0.0, 3.0, 0.0, 4.0], np.float32)
    assert measure.achieved_error(x, y) == {"rel_rmse": 0.0, "max_abs_error": 0.0, "exact": False}
    z = np.array([0.0, np.nan, 0.0, 4.0], np.float32)
    assert measure.achieved_error(x, z)["rel_rmse"] == math.inf


def test_achieved_error_across_dtypes_and_containers():
    x = torch.linspace(-3, 3, 101, dtype=torch.bfloat16)
    assert measure.achieved_error(x, x.clone())["exact"]
    y = x.float().numpy() + 0.5
    e = measure.achieved_error(x, y)
    assert e["max_abs_error"] == pytest.approx(0.5)
    # -0.0 and 0.0 are equal as numbers but not bit-exact.
    assert not measure.achieved_error(np.float32([0.0]), np.float32([-0.0]))["exact"]


def test_measure_reports_error_and_every_run():
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    r = measure.measure(
        "halve", lambda: (x / 2).tobytes(), lambda b: np.frombuffer(b, np.float32) * 2,
        x.nbytes, repeat=3, reference=x,
    )  # fmt: skip
    assert r.exact and r.rel_rmse == 0 and r.max_abs_error == 0
    assert len(r.encode_times) == len(r.decode_times) == 3
    assert r.encode_s == sorted(r.encode_times)[1]
    lossy = measure.measure(
        "round", lambda: np.round(x, 1).tobytes(), lambda b: np.frombuffer(b, np.float32),
        x.nbytes, repeat=1, reference=x,
    )  # fmt: skip
    assert not lossy.exact and 0 < lossy.max_abs_error <= 0.05 + 1e-6
