"""The link model: how long one tensor takes to cross a link, raw or coded.

For a tensor of ``S`` raw bytes coded into ``C`` bytes with median encode time ``E`` and
decode time ``D`` (seconds), over a link of ``L`` bytes/s:

- raw: ``S / L``;
- serial (encode all, send all, decode all): ``E + C / L + D``;
- overlapped (the tensor is cut into ``n`` equal chunks that stream through a three-stage
  pipeline, encode -> send -> decode, each stage working on a different chunk):
  ``max(E, C/L, D) + (E + C/L + D - max(E, C/L, D)) / n``: the slowest stage sets the pace
  and the other two add one chunk's worth of pipeline fill and drain.

Assumptions: sender and receiver each have the cores the codec was measured with, chunks
cost the same, the link runs at its full rate from the first byte (no latency, no protocol
overhead, no congestion: these are the same for raw and coded transfers), and the raw
transfer needs no copy. With ``n = 1`` the overlapped time is the serial time.

The break-even link speed is the speed at which coded and raw take equally long; below it
coding wins. Serial: ``L* = (S - C) / (E + D)``. Overlapped: the unique root of the
piecewise-linear equation above (see :func:`break_even`). There is none (coding never wins)
when ``C >= S``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Link speeds in bit/s reported by default: 10 Mbit/s to 400 Gbit/s.
DEFAULT_LINKS_BPS: tuple[float, ...] = (10e6, 100e6, 1e9, 10e9, 100e9, 400e9)

FORMULA = (
    "raw = S/L; serial = E + C/L + D; overlapped = max(E, C/L, D) + (E + C/L + D - max)/n "
    "(n equal chunks streamed through encode -> send -> decode); break-even: the L where "
    "coded = raw (serial: L* = (S - C)/(E + D)). S, C: raw and coded bytes; E, D: median "
    "encode and decode seconds; L: link bytes/s. Latency and protocol overhead are left out "
    "(the same for raw and coded)."
)


@dataclass(frozen=True)
class Transfer:
    """The time to move one tensor over one link, three ways (seconds)."""

    link_bps: float
    raw_s: float
    serial_s: float
    overlapped_s: float

    @property
    def speedup_serial(self) -> float:
        return self.raw_s / self.serial_s if self.serial_s else math.inf

    @property
    def speedup_overlapped(self) -> float:
        return self.raw_s / self.overlapped_s if self.overlapped_s else math.inf

    def effective_bps(self, overlapped: bool = True) -> float:
        """Raw tensor bits delivered per second of coded transfer (the link speed a raw
        transfer would need to match it)."""
        t = self.overlapped_s if overlapped else self.serial_s
        return self.link_bps * self.raw_s / t if t else math.inf


def chunks(n_elements: int, chunk_elements: int) -> int:
    """How many chunks a tensor of ``n_elements`` streams as (at least 1)."""
    if chunk_elements <= 0:
        raise ValueError("chunk_elements must be positive")
    return max(1, -(-n_elements // chunk_elements))


def overlapped_seconds(encode_s: float, send_s: float, decode_s: float, n: int) -> float:
    """A three-stage pipeline over ``n`` equal chunks whose stages take these totals."""
    slowest = max(encode_s, send_s, decode_s)
    return slowest + (encode_s + send_s + decode_s - slowest) / max(1, n)


def transfer(
    raw_bytes: float,
    coded_bytes: float,
    encode_s: float,
    decode_s: float,
    link_bps: float,
    n_chunks: int = 1,
) -> Transfer:
    """The raw, serial and overlapped times over a link of ``link_bps`` bit/s."""
    rate = link_bps / 8
    send = coded_bytes / rate
    return Transfer(
        link_bps=link_bps,
        raw_s=raw_bytes / rate,
        serial_s=encode_s + send + decode_s,
        overlapped_s=overlapped_seconds(encode_s, send, decode_s, n_chunks),
    )


def break_even_bps(
    raw_bytes: float,
    coded_bytes: float,
    encode_s: float,
    decode_s: float,
    n_chunks: int = 1,
    overlapped: bool = False,
) -> float | None:
    """The link speed in bit/s below which the coded transfer is faster than the raw one;
    ``None`` when it never is (``coded_bytes >= raw_bytes``), ``inf`` when it always is
    (coding took no time)."""
    s, c, e, d = float(raw_bytes), float(coded_bytes), float(encode_s), float(decode_s)
    if c >= s:
        return None
    if e + d <= 0:
        return math.inf
    if not overlapped or n_chunks <= 1:
        return 8 * (s - c) / (e + d)
    # With u = 1/L, coded - raw is continuous, piecewise linear and decreasing in u (both
    # slopes, c/n - s and c - s, are negative when c < s) and positive at u = 0, so it has
    # one root. While the link is not the slowest stage (c*u < M), coded = M + (m + c*u)/n;
    # once it is, coded = c*u + (e + d)/n.
    n = n_chunks
    big, small = max(e, d), min(e, d)
    u = (big + small / n) / (s - c / n)
    if c * u >= big:
        u = (e + d) / (n * (s - c))
    return 8 / u
