"""The lab's links: a real one shaped by the Linux kernel, and a user-space fallback.

:class:`KernelLink` puts the two pipeline stages in two network namespaces joined by a veth
pair and shapes each end's egress with ``tc``: ``tbf`` for the rate and, where the kernel
has it, ``netem`` for a one-way delay (so the round trip is twice that). Every byte the
stages exchange, torch.distributed's included, crosses that pair. It needs root, iproute2
and a kernel that allows network namespaces; :func:`kernel_link_problem` says what is
missing.

Names carry the creating process's id (``iota-lab-<pid>-a``, veth ``il<pid>a``), so labs of
several users do not collide, and :func:`remove_stale` can remove what a killed lab left
behind. :meth:`KernelLink.down` is idempotent; the lab calls it from ``finally``, ``atexit``
and its signal handlers.

:class:`PacedRelay` is the fallback where that is not possible: a user-space relay on
127.0.0.1 that forwards each direction of one TCP connection per stage at the link rate
(a token bucket over the bytes) and after the delay. The stages then talk through a
:class:`SocketTransport` instead of torch.distributed. It is a model of a link, not a
kernel link: results say so.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import heapq
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

ADDRESSES = ("10.77.0.1", "10.77.0.2")
PREFIX = "iota-lab-"
_TC = ("tc", "qdisc")


# --- the kernel link ---------------------------------------------------------------------------


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {(res.stderr or res.stdout).strip()}")
    return res


def kernel_link_problem() -> str | None:
    """Why a :class:`KernelLink` cannot be made here (``None`` when it can): not root, no
    ``ip``/``tc``, or the kernel refuses network namespaces, veth pairs or ``tbf``. Makes and
    removes a probe namespace to find out."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "it needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (it is part of iproute2)"
    probe = f"{PREFIX}{os.getpid()}-p"
    try:
        res = _run(["ip", "netns", "add", probe], check=False)
        if res.returncode != 0:
            return f"network namespaces are not permitted here: {res.stderr.strip()}"
        res = _run(
            ["ip", "-n", probe, "link", "add", "ilpa", "type", "veth", "peer", "name", "ilpb"],
            check=False,
        )
        if res.returncode != 0:
            return f"veth pairs are not available: {res.stderr.strip()}"
        tbf = ["tbf", "rate", "1mbit", "burst", "8kb", "latency", "100ms"]
        res = _run(["ip", "netns", "exec", probe, *_TC, "add", "dev", "ilpa", "root", *tbf], False)
        if res.returncode != 0:
            return f"the tbf qdisc is not available: {res.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as e:
        return f"probing network namespaces failed: {e}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def netem_available(ns: str, dev: str) -> bool:
    """Whether the kernel has the ``netem`` qdisc (tried on ``dev`` in namespace ``ns``, then
    removed)."""
    netem = ["netem", "delay", "1ms"]
    res = _run(["ip", "netns", "exec", ns, *_TC, "add", "dev", dev, "root", *netem], False)
    if res.returncode == 0:
        _run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], check=False)
    return res.returncode == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_namespaces() -> list[str]:
    """The network namespaces that labs made (by name), alive or not."""
    res = _run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX)]


def remove_stale() -> list[str]:
    """Removes the namespaces (and with them the veth ends) of labs whose process is gone;
    returns their names. Those of running labs are left alone."""
    removed = []
    for name in lab_namespaces():
        m = re.match(rf"^{PREFIX}(\d+)-", name)
        if m and not _pid_alive(int(m.group(1))):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def tbf_params(rate_bps: float) -> dict[str, int]:
    """tbf settings for a rate: a bucket of at least 5 ms of traffic (so that the kernel's
    timer granularity does not cap the rate) and never less than 5000 bytes (a few packets),
    and a queue of at least 250 ms of traffic and 100 kB, so that TCP meets a bottleneck
    with a buffer, as on a real link, rather than drops every few packets."""
    byte_rate = rate_bps / 8
    return {
        "rate_bit": int(rate_bps),
        "burst_bytes": int(max(5000, byte_rate * 0.005)),
        "limit_bytes": int(max(100_000, byte_rate * 0.25)),
    }


class KernelLink:
    """Two network namespaces (``ns[0]``, ``ns[1]``) joined by a veth pair (``dev[0]`` in
    the first, ``dev[1]`` in the second) with the addresses :data:`ADDRESSES`.

    ``up()`` makes them, ``shape(rate_bps, delay_s)`` sets (or, with ``None``, removes) the
    shaping of both directions, ``down()`` removes everything; use it as a context manager.
    """

    def __init__(self) -> None:
        pid = os.getpid()
        self.ns = (f"{PREFIX}{pid}-a", f"{PREFIX}{pid}-b")
        self.dev = (f"il{pid}a", f"il{pid}b")
        self.addresses = ADDRESSES
        self.netem: bool | None = None
        self._up = False
        self._lock = threading.Lock()

    def __enter__(self) -> KernelLink:
        self.up()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.down()

    def up(self) -> None:
        with self._lock:
            self._up = True  # from here on, down() removes whatever was made
        atexit.register(self.down)
        a, b = self.ns
        _run(["ip", "netns", "add", a])
        _run(["ip", "netns", "add", b])
        veth = ["type", "veth", "peer", "name", self.dev[1], "netns", b]
        _run(["ip", "-n", a, "link", "add", self.dev[0], *veth])
        for ns, dev, addr in zip(self.ns, self.dev, self.addresses, strict=True):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        self.netem = netem_available(a, self.dev[0])

    def exec_prefix(self, side: int) -> list[str]:
        """The command prefix that runs a program in side ``side``'s namespace."""
        return ["ip", "netns", "exec", self.ns[side]]

    def shape(self, rate_bps: float | None, delay_s: float = 0.0) -> dict[str, Any]:
        """Shapes both directions: ``tbf`` at ``rate_bps`` and, when the kernel has
        ``netem``, ``delay_s`` of one-way delay (netem at the root, tbf under it). ``None``
        removes all shaping. Returns what was applied."""
        applied: dict[str, Any] = {"rate_bps": rate_bps, "delay_s": 0.0, "qdisc": None}
        for ns, dev in zip(self.ns, self.dev, strict=True):
            tc = ["ip", "netns", "exec", ns, "tc", "qdisc"]
            _run([*tc, "del", "dev", dev, "root"], check=False)  # none yet is fine
            if rate_bps is None:
                continue
            p = tbf_params(rate_bps)
            tbf = ["tbf", "rate", f"{p['rate_bit']}bit", "burst", str(p["burst_bytes"])]
            tbf += ["limit", str(p["limit_bytes"])]
            if delay_s > 0 and self.netem:
                netem = ["netem", "delay", f"{delay_s * 1e3:.3f}ms", "limit", "100000"]
                _run([*tc, "add", "dev", dev, "root", "handle", "1:", *netem])
                _run([*tc, "add", "dev", dev, "parent", "1:1", "handle", "10:", *tbf])
                applied.update(delay_s=delay_s, qdisc="netem+tbf")
            else:
                _run([*tc, "add", "dev", dev, "root", *tbf])
                applied["qdisc"] = "tbf"
            applied["tbf"] = p
        return applied

    def qdiscs(self) -> list[str]:
        """``tc qdisc show`` of both ends (for the record)."""
        out = []
        for ns, dev in zip(self.ns, self.dev, strict=True):
            res = _run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", dev], check=False)
            out += [f"{dev}: {line}" for line in res.stdout.splitlines()]
        return out

    def down(self) -> None:
        """Removes both namespaces (which removes the veth pair). Safe to call repeatedly
        and from signal handlers."""
        with self._lock:
            if not self._up:
                return
            self._up = False
        for ns in self.ns:
            with contextlib.suppress(Exception):
                _run(["ip", "netns", "del", ns], check=False)
        with contextlib.suppress(Exception):
            atexit.unregister(self.down)


# --- the paced-socket fallback ----------------------------------------------------------------


class _Direction:
    """One direction of the relay: reads from ``src`` as fast as it comes, lets each piece
    leave when a token bucket at ``rate_bps`` allows (so pieces queue behind each other, as
    on a link) and delivers it ``delay_s`` later."""

    PIECE = 16 * 1024

    def __init__(
        self, src: socket.socket, dst: socket.socket, relay: PacedRelay, name: str
    ) -> None:
        self.src, self.dst, self.relay, self.name = src, dst, relay, name
        self.queue: list[tuple[float, int, bytes]] = []
        self.cond = threading.Condition()
        self.eof = False
        self.bytes = 0
        self._seq = 0

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._read, name=f"relay-read-{self.name}", daemon=True),
            threading.Thread(target=self._write, name=f"relay-write-{self.name}", daemon=True),
        ]
        for t in threads:
            t.start()
        return threads

    def _read(self) -> None:
        leave = 0.0
        try:
            while True:
                data = self.src.recv(self.PIECE)
                if not data:
                    break
                now = time.monotonic()
                rate = self.relay.rate_bps
                leave = max(now, leave) + (len(data) * 8 / rate if rate else 0.0)
                with self.cond:
                    heapq.heappush(self.queue, (leave + self.relay.delay_s, self._seq, data))
                    self._seq += 1
                    self.cond.notify()
        except OSError:
            pass
        with self.cond:
            self.eof = True
            self.cond.notify()

    def _write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.eof:
                        self.cond.wait()
                    if not self.queue:
                        break
                    due, _, data = self.queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        self.cond.wait(wait)
                        continue
                    heapq.heappop(self.queue)
                self.dst.sendall(data)
                self.bytes += len(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)


class PacedRelay:
    """A user-space link between two local endpoints: each stage connects to its own port
    (``ports[0]``, ``ports[1]``) on 127.0.0.1 and what one sends reaches the other at
    ``rate_bps`` (``None``: as fast as loopback goes) after ``delay_s``, each direction on
    its own. One pair of connections at a time; call :meth:`close` when done (or use it as
    a context manager)."""

    def __init__(self, rate_bps: float | None = None, delay_s: float = 0.0) -> None:
        self.rate_bps = rate_bps
        self.delay_s = delay_s
        self._listeners = []
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            self._listeners.append(s)
        self.ports = tuple(s.getsockname()[1] for s in self._listeners)
        self._conns: list[socket.socket] = []
        self._dirs: list[_Direction] = []
        self._thread = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._thread.start()

    def __enter__(self) -> PacedRelay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _accept(self) -> None:
        try:
            a, _ = self._listeners[0].accept()
            b, _ = self._listeners[1].accept()
        except OSError:
            return
        for s in (a, b):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conns = [a, b]
        self._dirs = [_Direction(a, b, self, "0to1"), _Direction(b, a, self, "1to0")]
        for d in self._dirs:
            d.start()

    def bytes_forwarded(self) -> tuple[int, int]:
        """Bytes delivered 0 -> 1 and 1 -> 0 so far."""
        if not self._dirs:
            return (0, 0)
        return (self._dirs[0].bytes, self._dirs[1].bytes)

    def close(self) -> None:
        for s in self._listeners + self._conns:
            with contextlib.suppress(OSError):
                s.close()


class _Work:
    """What :class:`SocketTransport` returns: ``wait(timeout=None)`` and ``is_completed()``
    like a torch.distributed ``Work``; ``wait`` raises ``RuntimeError`` on failure or when
    the timeout (a ``timedelta`` or seconds) passes."""

    def __init__(self, transport: SocketTransport) -> None:
        self._transport = transport
        self._done = False

    def is_completed(self) -> bool:
        return self._done

    def wait(self, timeout: Any = None) -> bool:
        seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else timeout
        end = None if seconds is None else time.monotonic() + float(seconds)
        with self._transport._cond:
            while not self._done:
                if self._transport._error is not None:
                    raise RuntimeError(self._transport._error)
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise RuntimeError("timed out waiting for the paced-socket link")
                self._transport._cond.wait(left)
        return True


class SocketTransport:
    """One stage's end of a :class:`PacedRelay`: an ordered byte stream to the other
    stage. :meth:`isend` queues a tensor's bytes (sent by a thread, in order); :meth:`irecv`
    queues a tensor to be filled with the next ``nbytes`` that arrive (by a thread, in
    order). Both sides must receive in the order the other sent, with the same sizes: the
    stream carries no tags."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._cond = threading.Condition()
        self._sends: collections.deque[tuple[memoryview, _Work, Any]] = collections.deque()
        self._recvs: collections.deque[tuple[memoryview, _Work, Any]] = collections.deque()
        self._error: str | None = None
        for target in (self._send_loop, self._recv_loop):
            threading.Thread(target=target, daemon=True).start()

    @staticmethod
    def _bytes(tensor: Any) -> memoryview:
        return memoryview(tensor.detach().contiguous().view(-1).view(_uint8()).numpy())

    def isend(self, tensor: Any) -> _Work:
        work = _Work(self)
        keep = tensor.detach().contiguous()
        with self._cond:
            self._sends.append((self._bytes(keep), work, keep))
            self._cond.notify_all()
        return work

    def irecv(self, tensor: Any) -> _Work:
        if not tensor.is_contiguous():
            raise ValueError("irecv needs a contiguous tensor")
        work = _Work(self)
        with self._cond:
            self._recvs.append((self._bytes(tensor), work, tensor))
            self._cond.notify_all()
        return work

    def _fail(self, message: str) -> None:
        with self._cond:
            if self._error is None:
                self._error = message
            self._cond.notify_all()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._sends and self._error is None:
                    self._cond.wait()
                if self._error is not None:
                    return
                buf, work, _ = self._sends[0]
            try:
                self.sock.sendall(buf)
            except OSError as e:
                self._fail(f"sending over the paced-socket link failed: {e}")
                return
            with self._cond:
                self._sends.popleft()
                work._done = True
                self._cond.notify_all()

    def _recv_loop(self) -> None:
        while True:
            with self._cond:
                while not self._recvs and self._error is None:
                    self._cond.wait()
                if self._error is not None:
                    return
                buf, work, _ = self._recvs[0]
            got = 0
            try:
                while got < len(buf):
                    n = self.sock.recv_into(buf[got:], len(buf) - got)
                    if n == 0:
                        raise OSError("the other side closed the connection")
                    got += n
            except OSError as e:
                self._fail(f"receiving over the paced-socket link failed: {e}")
                return
            with self._cond:
                self._recvs.popleft()
                work._done = True
                self._cond.notify_all()

    def close(self) -> None:
        self._fail("closed")
        with contextlib.suppress(OSError):
            self.sock.close()


def _uint8() -> Any:
    import torch

    return torch.uint8


# --- tearing down on signals ------------------------------------------------------------------


@contextlib.contextmanager
def teardown_on_signals(cleanup: Callable[[], None]):
    """Within the block, SIGTERM, SIGHUP and SIGINT run ``cleanup`` and then exit (status
    128 + signal): a lab that is stopped still removes its namespaces and children."""
    caught = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    old = {}

    def handler(signum: int, _frame: Any) -> None:
        cleanup()
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for s in caught:
            old[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
