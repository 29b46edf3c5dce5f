"""Multi-process tests of iota_codec.torch over gloo: point-to-point messages, the autograd
boundary in two- and three-stage pipelines, the DDP hook, and failing peers.

Each group of ranks runs once per module (a fixture) and the tests check its parts; every
group runs under a hard deadline (``distributed.run_ranks``), so nothing here can hang.
"""

from __future__ import annotations

import dist_workers as w
import iota_codec
import pytest
import torch
import torch.distributed as dist
from distributed import run_ranks
from helpers import assert_within_codec_bound, bits

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available in this torch build",
)

PROFILES = list(iota_codec.PROFILES)


@pytest.fixture(scope="module")
def pair():
    return run_ranks(w.pair_suite, 2, PROFILES, timeout=240)


@pytest.fixture(scope="module")
def trio():
    return run_ranks(w.trio_suite, 3, PROFILES, timeout=240)


def _expected_samples(profile: str) -> list[torch.Tensor]:
    sp = profile == "lossless"
    return [w.sample(seed, shape, dtype, sp) for seed, shape, dtype in w.SAMPLES]


# --- point-to-point ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_send_recv_isend_irecv(pair, profile):
    got = pair[1]["p2p"]["received"][profile]
    sent = _expected_samples(profile) * 2  # send/recv, then isend/irecv
    codec = iota_codec.Codec(profile)
    assert len(got) == len(sent)
    for x, y in zip(sent, got, strict=True):
        assert y.dtype == x.dtype and y.shape == x.shape and y.device.type == "cpu"
        assert_within_codec_bound(codec, x, y)


def test_channel_sequencing_out_and_stats(pair):
    ch = pair[1]["p2p"]["channel"]
    for x, y in zip(_expected_samples("lossless"), ch["first"], strict=True):
        assert (bits(x) == bits(y)).all()
    # irecv works waited on in the order 2, 0, 1 still get messages 0, 1, 2.
    want = [w.sample(12), w.sample(10), w.sample(11)]
    for x, y in zip(want, ch["out_of_order"], strict=True):
        assert (bits(x) == bits(y)).all()
    assert ch["out_is_buf"] and (bits(ch["buf"]) == bits(w.sample(20))).all()
    sent, received = pair[0]["p2p"]["stats"], pair[1]["p2p"]["stats"]
    n = len(w.SAMPLES) + 4
    assert sent["messages_sent"] == received["messages_received"] == n
    raw = sum(x.numel() * x.element_size() for x in _expected_samples("lossless"))
    raw += 4 * 150 * 4
    assert sent["raw_bytes_sent"] == received["raw_bytes_received"] == raw
    assert sent["wire_bytes_sent"] == received["wire_bytes_received"] > 32 * n
    assert sent["ratio_sent"] == pytest.approx(raw / sent["wire_bytes_sent"])


def test_protocol_errors(pair):
    errors = pair[1]["p2p"]["errors"]
    name, msg = errors[20]
    assert name == "LimitExceededError" and "max_frame_bytes" in msg  # nothing allocated
    assert errors[21][0] == "CorruptFrameError" and "header" in errors[21][1]
    assert errors[22][0] == "ChecksumMismatchError"
    assert errors[23][0] == "CorruptFrameError" and "unsequenced" in errors[23][1]
    assert "is broken" in errors["broken"]


def test_three_ranks_interleaved_and_subgroup(trio):
    r0 = trio[0]["three"]
    for sender in (1, 2):
        for i, y in enumerate(r0[f"from{sender}"]):
            assert (bits(y) == bits(w.sample(100 * sender + i))).all()
    assert (bits(r0["sub"]) == bits(w.sample(999))).all()
    assert all(s["messages_received"] == 3 for s in r0["stats"])


# --- the autograd boundary --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
@pytest.mark.parametrize("profile", PROFILES)
def test_two_stage_pipeline(pair, profile, kind):
    """A byte-level transformer trained as a two-stage pipeline over gloo, activations and
    gradients compressed: the gradients stage 0 receives are what stage 1 computed, within
    the codec's bound, at every step and micro-batch; and (lossless) the whole run equals
    the uncompressed single-process run bit for bit."""
    s0, s1 = pair[0]["pipeline"][profile, kind], pair[1]["pipeline"][profile, kind]
    codec = iota_codec.Codec(profile)
    keys = [(step, m) for step in range(w.PIPE_STEPS) for m in range(w.PIPE_MICRO)]
    assert sorted(s0["recv_grads"]) == sorted(s1["sent_grads"]) == keys
    for k in keys:
        assert_within_codec_bound(codec, s0["sent_acts"][k], s1["recv_acts"][k])
        assert_within_codec_bound(codec, s1["sent_grads"][k], s0["recv_grads"][k])
    ref = w.reference_pipeline(kind, 2, w.PIPE_STEPS, w.PIPE_MICRO)
    if profile == "lossless":
        for step, m in keys:
            exact = ref["boundary_grads"][0, step, m]
            assert torch.equal(s0["recv_grads"][step, m], exact)
            assert torch.equal(s1["recv_acts"][step, m], ref["boundary_acts"][0, step, m])
        assert s1["losses"] == ref["losses"]
        for stage, rec in enumerate((s0, s1)):
            for name, p in rec["params"].items():
                assert torch.equal(p, ref["params"][stage][name]), name
    losses = [loss for _, _, loss in s1["losses"]]
    assert sum(losses[-w.PIPE_MICRO :]) < sum(losses[: w.PIPE_MICRO])  # it learns
    st0, st1 = s0["stats"]["next"], s1["stats"]["prev"]
    assert st0["messages_sent"] == st1["messages_received"] == len(keys)
    assert st1["messages_sent"] == st0["messages_received"] == len(keys)
    assert st0["raw_bytes_sent"] == len(keys) * s0["sent_acts"][0, 0].nbytes


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_two_stage_pipeline_with_sessions(pair, kind):
    """Channels with shared-basis sessions (and error feedback on gradients): what each
    side receives is exactly what a session with the channel's id reconstructs from what
    the other side sent, in the order it was sent (gradients come back out of order in
    GPipe), both ends' session states agree, and the model still learns."""
    from iota_codec.torch._p2p import ACTIVATION, GRADIENT, channel_session_id

    s0, s1 = pair[0]["session"][kind], pair[1]["session"][kind]
    tag = s0["tag"]
    codec = iota_codec.Codec(**w.SESSION_CODEC)
    acts = iota_codec.Session(
        codec, session_id=channel_session_id(tag, ACTIVATION, 0, 1), refresh=3
    )
    for k in s0["act_order"]:
        _, y = acts.encode(s0["sent_acts"][k], reconstruction=True)
        assert torch.equal(y, s1["recv_acts"][k]), k
    grads = iota_codec.Session(
        codec,
        session_id=channel_session_id(tag, GRADIENT, 1, 0),
        refresh=3,
        error_feedback=True,
    )
    for k in s1["grad_order"]:
        _, y = grads.encode(s1["sent_grads"][k], reconstruction=True)
        assert torch.equal(y, s0["recv_grads"][k]), k
    assert s0["sessions"]["next"]["activation/send"] == s1["sessions"]["prev"]["activation/recv"]
    assert s0["sessions"]["next"]["gradient/recv"] == s1["sessions"]["prev"]["gradient/send"]
    assert acts.state_hash == s0["sessions"]["next"]["activation/send"]
    losses = [loss for _, _, loss in s1["losses"]]
    assert sum(losses[-w.PIPE_MICRO :]) < sum(losses[: w.PIPE_MICRO])


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_two_stage_pipeline_prefetch(pair, kind):
    """Channels that receive ahead on a thread train the same model bit for bit."""
    s0, s1 = pair[0]["prefetch"][kind], pair[1]["prefetch"][kind]
    ref = w.reference_pipeline(kind, 2, w.PIPE_STEPS, w.PIPE_MICRO)
    assert s1["losses"] == ref["losses"]
    for stage, rec in enumerate((s0, s1)):
        for name, p in rec["params"].items():
            assert torch.equal(p, ref["params"][stage][name]), name


def test_prefetch_receives_ahead_and_fails_cleanly(pair):
    got = pair[1]["prefetching"]
    assert got["arrived_unasked"]  # both frames arrived before anyone waited for them
    for x, y in zip([w.sample(60), w.sample(61, (64, 1024))], got["got"], strict=True):
        assert (bits(x) == bits(y)).all()
    assert got["stats"]["messages_received"] == 2
    name, msg = got["corrupt"]
    assert name == "CorruptFrameError" and "header" in msg
    seconds, msg, broken = got["silent"]
    assert 0.9 <= seconds < 15 and "timed out" in msg and broken


def test_three_stage_pipeline(trio):
    """A middle stage both receives and sends: three ranks, 1F1B, lossless, equal to the
    uncompressed run."""
    ref = w.reference_pipeline("1f1b", 3, 2, w.PIPE_MICRO)
    assert trio[2]["pipeline"]["losses"] == ref["losses"]
    for stage in range(3):
        for name, p in trio[stage]["pipeline"]["params"].items():
            assert torch.equal(p, ref["params"][stage][name]), (stage, name)
    for (step, m), g in trio[1]["pipeline"]["recv_grads"].items():
        assert torch.equal(g, ref["boundary_grads"][1, step, m])


# --- DDP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_ddp_hook(trio, profile):
    """DDP with the iota hook (error feedback on) over three ranks: every bucket's result is
    the rank-order mean of the ranks' decoded frames, error feedback included, on every
    rank; with lossless, that is the exact mean of the local gradients."""
    runs = [r["ddp"][profile] for r in trio]
    codec = iota_codec.Codec(profile)
    world = len(runs)
    calls = [r["calls"] for r in runs]
    assert len({len(c) for c in calls}) == 1 and len(calls[0]) >= 3
    residuals: list[dict] = [{} for _ in runs]
    for i in range(len(calls[0])):
        total = None
        for rank in range(world):
            index, buf, _ = calls[rank][i]
            res = residuals[rank].get(index)
            coded = buf + res if res is not None and res.shape == buf.shape else buf
            decoded = codec.decode(codec.encode(coded))
            residuals[rank][index] = coded - decoded
            total = decoded.clone() if total is None else total.add_(decoded)
        mean = total.div_(world)
        for rank in range(world):
            assert torch.equal(calls[rank][i][2], mean), (rank, i)
    if profile == "lossless":
        for step in range(3):
            for i, got in enumerate(runs[0]["grads"][step]):
                local = [r["local"][step][i] for r in runs]
                mean = local[0].clone().add_(local[1]).add_(local[2]).div_(world)
                assert torch.equal(got, mean)
        assert runs[0]["residual_max"] == 0.0
    for p0, p1, p2 in zip(*(r["params"] for r in runs), strict=True):
        assert torch.equal(p0, p1) and torch.equal(p1, p2)  # the replicas stay identical
    stats = runs[0]["stats"]
    assert stats["buckets"] == len(calls[0]) and stats["raw_bytes"] > 0
    assert stats["ratio"] == pytest.approx(stats["raw_bytes"] / stats["frame_bytes"])
    assert stats["sent_bytes"] >= stats["frame_bytes"]
    assert stats["received_bytes"] == (world - 1) * stats["sent_bytes"]
    assert runs[0]["n_residuals"] > 0


# --- failures ---------------------------------------------------------------------------------


def test_failing_peers_raise_within_timeout():
    """A silent peer times out; a peer that dies mid-transfer, or while the other waits for
    its gradient, or while the other sends to it, makes that side raise TransferError
    within the channel's timeout."""
    r0 = run_ranks(w.failures, 3, may_die={1, 2}, timeout=120)[0]
    seconds, msg = r0["silent"]
    assert 1.0 <= seconds < 15 and "rank 1" in msg
    assert "broken" in r0["silent_broken"]
    for key in ("mid_transfer", "backward", "send"):
        seconds, msg = r0[key]
        assert seconds < 30, key
        assert "rank" in msg, key
    assert "broken" in r0["broken"]
