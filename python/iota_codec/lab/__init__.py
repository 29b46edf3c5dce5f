"""The link lab: pipeline training over a link shaped by the Linux kernel.

Two processes, each a stage of a small byte-level GPT, train together over a veth pair
between two network namespaces, with ``tc`` setting the rate (tbf) and delay (netem):
raw bf16 boundaries against iota-codec profiles and a :class:`iota_codec.nn.ResidualBottleneck`
with a codec. ``iota-codec lab`` runs it (:mod:`.command`); :mod:`.runner` plans and runs,
:mod:`.stage` is one stage's process, :mod:`.net` the link (and the paced-socket fallback),
:mod:`.model` the model, data and evaluation, :mod:`.report` the tables and the plot.

Needs torch; the kernel link needs root and iproute2.
"""

from .runner import LabError, LabUnavailable, Options, Rate, RunConfig, regime, run_lab

__all__ = ["LabError", "LabUnavailable", "Options", "Rate", "RunConfig", "regime", "run_lab"]
