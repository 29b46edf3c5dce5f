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


def test_reverse_water_filling_and_the_gaussian_bound():
    theta, rate = measure.reverse_water_filling(np.array([4.0, 1.0, 0.25]), 0.75)
    assert theta == pytest.approx(0.25)
    assert rate == pytest.approx(0.5 * np.log2(16) + 0.5 * np.log2(4))
    assert measure.reverse_water_filling(np.array([1.0]), 2.0)[1] == 0.0
    # Independent Gaussian channels of variances 1 and 1/16 at a total error of 1/16 of
    # the first's: the water level is 1/32, rate (log2(32) + log2(2)) / 2 bits per row.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 2)) * [1.0, 0.25]
    err = float(np.sqrt((1 / 16) / (1 + 1 / 16)))
    b = measure.gaussian_bound(x.astype(np.float32), err)
    assert b["bits_per_element"] == pytest.approx((5 + 1) / 2 / 2, rel=0.02)
    assert b["ratio"] == pytest.approx(32 / b["bits_per_element"])
