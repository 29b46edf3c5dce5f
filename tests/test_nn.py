"""iota_codec.nn: the residual-bottleneck boundary module."""

from __future__ import annotations

import subprocess
import sys

import iota_codec
import pytest
import torch
from iota_codec.nn import BottleneckDecoder, BottleneckEncoder, ResidualBottleneck


def test_shapes_and_compression():
    rb = ResidualBottleneck(64, 8)
    x = torch.randn(3, 5, 64)
    z = rb.encoder(x)
    assert z.shape == (3, 5, 8)
    assert rb.decoder(z).shape == (3, 5, 64)
    assert rb(x).shape == (3, 5, 64)
    assert rb.d_model == 64 and rb.k == 8 and rb.compression == 8.0
    # Any leading dimensions.
    assert rb.encoder(torch.randn(64)).shape == (8,)
    assert rb.decoder(torch.randn(2, 3, 4, 8)).shape == (2, 3, 4, 64)


@pytest.mark.parametrize("hidden", [None, 16])
def test_identity_path_is_exact_when_the_learned_parts_are_zero(hidden):
    rb = ResidualBottleneck(32, 5, hidden=hidden, init_std=0)
    x = torch.randn(4, 7, 32)
    z = rb.encoder(x)
    assert torch.equal(z, x[..., :5])  # the first k coordinates, bit for bit
    y = rb.decoder(z)
    assert torch.equal(y[..., :5], x[..., :5])
    assert torch.equal(y[..., 5:], torch.zeros(4, 7, 27))
    # And only the learned parts move it away from there.
    with torch.no_grad():
        rb.encoder.proj.bias.fill_(1.0)
        rb.decoder.proj.bias.fill_(2.0)
    assert torch.equal(rb.encoder(x), x[..., :5] + 1)
    assert torch.equal(rb.decoder(z)[..., 5:], torch.full((4, 7, 27), 2.0))


def test_the_math():
    torch.manual_seed(1)
    enc, dec = BottleneckEncoder(16, 4), BottleneckDecoder(16, 4)
    x = torch.randn(10, 16, dtype=torch.float64)
    enc.double(), dec.double()
    ln = torch.nn.functional.layer_norm(x, (16,), enc.norm.weight, enc.norm.bias)
    z = x[:, :4] + ln @ enc.proj.weight.T + enc.proj.bias
    torch.testing.assert_close(enc(x), z)
    pz = torch.cat([z, torch.zeros(10, 12, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(dec(z), pz + z @ dec.proj.weight.T + dec.proj.bias)
    mlp = BottleneckDecoder(16, 4, hidden=8).double()
    h = torch.nn.functional.gelu(z @ mlp.up.weight.T + mlp.up.bias)
    torch.testing.assert_close(mlp(z), pz + h @ mlp.proj.weight.T + mlp.proj.bias)


@pytest.mark.parametrize("hidden", [None, 40])
def test_gradients_flow_through_both_halves_and_the_identity_path(hidden):
    rb = ResidualBottleneck(24, 6, hidden=hidden, init_std=0)  # even from zero weights
    x = torch.randn(2, 3, 24, requires_grad=True)
    target = torch.randn(2, 3, 24)
    loss = ((rb(x) - target) ** 2).sum()
    loss.backward()
    for name, p in rb.named_parameters():
        if name in ("encoder.norm.bias", "encoder.norm.weight", "decoder.up.weight"):
            continue  # behind a zero weight at init (W_e, W_2): nothing reaches them yet
        if name == "decoder.up.bias":
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # With zero weights the input gradient is the identity path's: nonzero only in the
    # first k coordinates, and equal to the output gradient there.
    out_grad = 2 * (rb(x) - target)
    torch.testing.assert_close(x.grad[..., :6], out_grad[..., :6])
    assert torch.equal(x.grad[..., 6:], torch.zeros(2, 3, 18))
    # After one step every parameter, the norm included, gets a gradient.
    with torch.no_grad():
        for p in rb.parameters():
            p -= 0.01 * p.grad
    rb.zero_grad()
    ((rb(x) - target) ** 2).sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in rb.parameters())


def test_trains_end_to_end():
    """A bottleneck learns to carry more than its identity path: on data living in an
    8-dim subspace of 32 dims that is not the first 8 coordinates, reconstruction error
    drops well below what the identity path alone gives."""
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 32))[0][:, 8:16]
    data = torch.randn(512, 8) @ basis.T
    rb = ResidualBottleneck(32, 8)
    base = ((ResidualBottleneck(32, 8, init_std=0)(data) - data) ** 2).mean().item()
    opt = torch.optim.Adam(rb.parameters(), lr=1e-2)
    for _ in range(300):
        loss = ((rb(data) - data) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * base


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((8, 9), "at most"),
        ((0, 1), "d_model"),
        ((8, 0), "k must"),
        ((8.0, 2), "d_model"),
        ((8, 2, 0), "hidden"),
        ((8, 2, 1.5), "hidden"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(iota_codec.InvalidArgumentError, match=match):
        ResidualBottleneck(*args[:2], hidden=args[2] if len(args) > 2 else None)


def test_wrong_width_is_a_clear_error():
    rb = ResidualBottleneck(16, 4)
    with pytest.raises(iota_codec.InvalidArgumentError, match="last dimension of 16"):
        rb.encoder(torch.randn(3, 15))
    with pytest.raises(iota_codec.InvalidArgumentError, match="last dimension of 4"):
        rb.decoder(torch.randn(3, 16))


def test_importing_iota_codec_does_not_import_nn_or_torch():
    code = "import sys, iota_codec; assert 'torch' not in sys.modules"
    code += "; assert 'iota_codec.nn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
