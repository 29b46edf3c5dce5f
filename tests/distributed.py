"""Runs a function on several gloo ranks in spawned processes, with a hard deadline.

``run_ranks(fn, world, *args)`` starts ``world`` processes, each of which joins a gloo
process group (a file store in a temporary folder, so nothing listens on a port), calls
``fn(rank, world, *args)`` and sends back what it returns (or its traceback). The parent
waits at most ``timeout`` seconds for all of them, kills whatever is left and fails the
test: a distributed test can fail, but it can never hang the suite.

``fn`` must be importable by the children (a top-level function of a module in ``tests/``);
spawned children get the parent's ``sys.path``.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import pathlib
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

DEFAULT_TIMEOUT = 90.0


def _entry(
    fn: Callable[..., Any],
    rank: int,
    world: int,
    folder: str,
    args: tuple[Any, ...],
    pg_timeout: float,
    barrier: bool,
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    out = pathlib.Path(folder) / f"rank{rank}.pt"
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{folder}/store",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=pg_timeout),
        )
        result: Any = ("ok", fn(rank, world, *args))
    except BaseException:
        result = ("error", traceback.format_exc())
    tmp = out.with_suffix(".tmp")
    torch.save(result, tmp)
    os.replace(tmp, out)
    if barrier and result[0] == "ok":
        # Let every rank finish before anyone exits (a closing socket must not cut off a
        # peer still receiving); bounded, so a failed peer cannot keep us here.
        try:
            dist.barrier(async_op=True).wait(datetime.timedelta(seconds=20))
        except RuntimeError:
            pass
    # Skip interpreter teardown: destroying a process group whose peer died can block.
    os._exit(0)


def run_ranks(
    fn: Callable[..., Any],
    world: int,
    *args: Any,
    timeout: float = DEFAULT_TIMEOUT,
    pg_timeout: float = 60.0,
    may_die: Iterable[int] = (),
) -> list[Any]:
    """Runs ``fn(rank, world, *args)`` on ``world`` gloo ranks; returns their results in
    rank order (``None`` for ranks in ``may_die`` that left no result; with ``may_die``,
    the ranks do not wait for each other before exiting). Raises
    ``AssertionError`` with every failing rank's traceback, or when the deadline passes."""
    import torch

    may_die = set(may_die)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="iota-dist-") as folder:
        procs = [
            ctx.Process(
                target=_entry,
                args=(fn, r, world, folder, args, pg_timeout, not may_die),
                daemon=True,
            )
            for r in range(world)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        if hung:
            raise AssertionError(
                f"{fn.__name__}: rank(s) {hung} still running after {timeout:.0f} s; killed"
            )
        results, errors = [], []
        for r in range(world):
            path = pathlib.Path(folder) / f"rank{r}.pt"
            if not path.exists():
                if r not in may_die:
                    errors.append(f"rank {r} exited ({procs[r].exitcode}) without a result")
                results.append(None)
                continue
            status, value = torch.load(path, weights_only=False)
            if status == "error":
                errors.append(f"rank {r} failed:\n{value}")
            results.append(value)
        if errors:
            raise AssertionError(f"{fn.__name__}:\n" + "\n".join(errors))
        return results
