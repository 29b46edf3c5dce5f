"""The GIL is released while the core computes: a Python thread keeps running meanwhile."""

from __future__ import annotations

import threading

import iota_codec as codec
import numpy as np


def _count_while(fn) -> int:
    """Runs ``fn`` on this thread while another Python thread counts; returns the count
    reached during ``fn``. If ``fn`` held the GIL the counter could not advance."""
    start = threading.Event()
    stop = threading.Event()
    count = 0

    def counter():
        nonlocal count
        start.wait()
        while not stop.is_set():
            count += 1

    t = threading.Thread(target=counter)
    t.start()
    start.set()
    before = count
    fn()
    during = count - before
    stop.set()
    t.join()
    return during


def test_encode_and_decode_release_the_gil():
    x = np.random.default_rng(0).standard_normal(1 << 23).astype(np.float32)
    c = codec.Codec(threads=1)
    blob = c.encode(x)
    out = np.empty_like(x)
    # Each call takes tens of milliseconds; with the GIL held the counter would stand still.
    assert _count_while(lambda: c.encode(x)) > 1000
    assert _count_while(lambda: c.decode(blob, out=out)) > 1000
    np.testing.assert_array_equal(out, x)


def test_two_threads_code_concurrently_and_correctly():
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(1 << 20).astype(np.float16) for _ in range(4)]
    results = [None] * 4

    def work(i):
        results[i] = codec.decode(codec.encode(xs[i], threads=1), threads=1)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for x, y in zip(xs, results, strict=True):
        np.testing.assert_array_equal(x, y)
