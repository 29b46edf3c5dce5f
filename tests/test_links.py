"""The link model of ``iota-codec bench`` (:mod:`iota_codec.bench.links`) on hand-computed
numbers, and the break-even speed as the point where the transfer times cross."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iota_codec.bench import links


def test_transfer_times_by_hand():
    # 1000 raw bytes, 250 coded, encode 1 ms, decode 2 ms, over 8000 bit/s = 1000 bytes/s.
    t = links.transfer(1000, 250, 0.001, 0.002, 8000, n_chunks=1)
    assert t.raw_s == pytest.approx(1.0)
    assert t.serial_s == pytest.approx(0.253)
    assert t.overlapped_s == pytest.approx(0.253)  # one chunk: nothing overlaps
    assert t.speedup_serial == pytest.approx(1 / 0.253)
    # Four chunks: the link (0.25 s) is the slowest stage; encode and decode of one chunk
    # each add a quarter of their total as fill and drain.
    t4 = links.transfer(1000, 250, 0.001, 0.002, 8000, n_chunks=4)
    assert t4.overlapped_s == pytest.approx(0.25 + 0.003 / 4)
    assert t4.serial_s == pytest.approx(0.253)
    assert t4.effective_bps(overlapped=True) == pytest.approx(8000 * 1.0 / (0.25 + 0.003 / 4))


def test_overlapped_when_coding_is_the_bottleneck():
    # 1 MB raw, 0.5 MB coded, encode 40 ms, decode 10 ms, 10 chunks, 1 Gbit/s (125 MB/s):
    # send = 4 ms, so encode sets the pace: 40 ms + (10 + 4) / 10 ms.
    t = links.transfer(1e6, 5e5, 0.040, 0.010, 1e9, n_chunks=10)
    assert t.raw_s == pytest.approx(0.008)
    assert t.serial_s == pytest.approx(0.054)
    assert t.overlapped_s == pytest.approx(0.0414)


def test_break_even_serial_by_hand():
    # L* = (S - C) / (E + D) = 750 bytes / 3 ms = 250000 bytes/s = 2 Mbit/s.
    bps = links.break_even_bps(1000, 250, 0.001, 0.002)
    assert bps == pytest.approx(2e6)
    t = links.transfer(1000, 250, 0.001, 0.002, bps)
    assert t.serial_s == pytest.approx(t.raw_s)


def test_break_even_overlapped_by_hand():
    # Coding-bound at the crossing: M + (m + C u)/n = S u with M = 2 ms, m = 1 ms, n = 4:
    # u = 2.25 ms / 937.5 bytes = 2.4e-6 s/byte, so L* = 8 / 2.4e-6 = 3.33 Mbit/s.
    bps = links.break_even_bps(1000, 250, 0.001, 0.002, n_chunks=4, overlapped=True)
    assert bps == pytest.approx(8 / 2.4e-6)
    t = links.transfer(1000, 250, 0.001, 0.002, bps, n_chunks=4)
    assert t.overlapped_s == pytest.approx(t.raw_s) == pytest.approx(0.0024)
    # Link-bound at the crossing (C close to S): C u + (E + D)/n = S u with n = 10:
    # u = 2 ms / (10 * 100 bytes) = 2e-6 s/byte, L* = 4 Mbit/s.
    bps = links.break_even_bps(1000, 900, 0.001, 0.001, n_chunks=10, overlapped=True)
    assert bps == pytest.approx(4e6)
    t = links.transfer(1000, 900, 0.001, 0.001, bps, n_chunks=10)
    assert t.overlapped_s == pytest.approx(t.raw_s) == pytest.approx(0.002)


def test_break_even_edges():
    assert links.break_even_bps(1000, 1000, 0.001, 0.001) is None  # no smaller: never wins
    assert links.break_even_bps(1000, 1200, 0.001, 0.001, n_chunks=8, overlapped=True) is None
    assert links.break_even_bps(1000, 500, 0.0, 0.0) == math.inf
    # One chunk: overlapped is serial.
    assert links.break_even_bps(1000, 250, 0.001, 0.002, n_chunks=1, overlapped=True) == (
        pytest.approx(2e6)
    )
    assert links.chunks(10, 4) == 3
    assert links.chunks(8, 4) == 2
    assert links.chunks(0, 4) == 1


@given(
    raw=st.floats(1e3, 1e10),
    share=st.floats(0.01, 0.99),
    enc=st.floats(1e-6, 10),
    dec=st.floats(1e-6, 10),
    n=st.integers(1, 10_000),
    overlapped=st.booleans(),
)
def test_break_even_is_where_times_cross(raw, share, enc, dec, n, overlapped):
    coded = raw * share
    bps = links.break_even_bps(raw, coded, enc, dec, n_chunks=n, overlapped=overlapped)
    assert bps is not None and 0 < bps < math.inf

    def coded_minus_raw(speed):
        t = links.transfer(raw, coded, enc, dec, speed, n_chunks=n)
        return (t.overlapped_s if overlapped else t.serial_s) - t.raw_s

    at = links.transfer(raw, coded, enc, dec, bps, n_chunks=n)
    assert coded_minus_raw(bps) == pytest.approx(0.0, abs=1e-9 * at.raw_s)
    assert coded_minus_raw(bps / 2) < 0 < coded_minus_raw(bps * 2)


def test_overlapped_never_slower_than_serial_nor_faster_than_slowest_stage():
    for n in (1, 2, 16):
        for bps in links.DEFAULT_LINKS_BPS:
            t = links.transfer(8e6, 3e6, 0.02, 0.01, bps, n_chunks=n)
            assert t.overlapped_s <= t.serial_s + 1e-15
            assert t.overlapped_s >= max(0.02, 0.01, 3e6 * 8 / bps) - 1e-15
