"""Losses, orthogonal regularization and EMA against hand-computed values."""

import math

import torch
from torch import nn

from scalegan.losses import LOSSES, d_ce, d_hinge, g_ce, g_hinge
from scalegan.models import build_generator
from scalegan.registry import model_config
from scalegan.regularizers import class_embeddings, orthogonal_penalty
from scalegan.training.ema import ema_beta, ema_update


def test_hinge():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    lr, lf = d_hinge(real, fake)
    assert math.isclose(lr.item(), (0 + 0.5 + 2.0) / 3, rel_tol=1e-6)
    assert math.isclose(lf.item(), (0 + 1.0 + 2.0) / 3, rel_tol=1e-6)
    assert math.isclose(g_hinge(fake).item(), 1 / 3, rel_tol=1e-6)


def test_cross_entropy():
    real, fake = torch.tensor([1.5, -0.3]), torch.tensor([0.2, -2.0])
    sig = torch.sigmoid
    lr, lf = d_ce(real, fake)
    assert torch.allclose(lr, -torch.log(sig(real)).mean())
    assert torch.allclose(lf, -torch.log(1 - sig(fake)).mean())
    assert torch.allclose(g_ce(fake), -torch.log(sig(fake)).mean())
    assert set(LOSSES) == {"hinge", "ce"}
    # Stable for large logits, where the naive formula overflows.
    assert torch.isfinite(d_ce(torch.tensor([-200.0]), torch.tensor([200.0]))[0])


def test_orthogonal_penalty_by_hand():
    lin = nn.Linear(3, 2, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]))
    # W W^T off-diagonal: 1*0.5 + 2*(-1) + 0 = -1.5, twice -> 2 * 2.25 = 4.5; the bias is skipped.
    assert math.isclose(orthogonal_penalty(lin, 1e-4).item(), 1e-4 * 4.5, rel_tol=1e-6)
    assert orthogonal_penalty(lin, 1.0, exclude=[lin.weight]).item() == 0.0
    conv = nn.Conv2d(2, 3, 3)
    w = conv.weight.reshape(3, -1)
    gram = w @ w.t()
    expected = (gram.pow(2).sum() - gram.diagonal().pow(2).sum()) * 0.5
    assert torch.allclose(orthogonal_penalty(conv, 0.5), expected)


def test_orthogonal_penalty_skips_the_shared_embedding():
    G = build_generator(model_config("biggan-32", ch=8, shared_dim=16, hier=True, z_dim=16))
    tables = class_embeddings(G)
    assert len(tables) == 1 and tables[0] is G.shared.weight
    with_all = orthogonal_penalty(G, 1.0)
    without = orthogonal_penalty(G, 1.0, tables)
    w = G.shared.weight
    gram = w @ w.t()
    assert torch.allclose(with_all - without, gram.pow(2).sum() - gram.diagonal().pow(2).sum(), rtol=1e-4)
    # The penalty gradient reaches conv weights but never 1-D gains or biases.
    without.backward()
    assert G.output_conv.weight.grad is not None
    assert G.output_conv.bias.grad is None and G.output_bn.weight.grad is None


def test_ema_update():
    model, ema = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(1.0)
        model.num_batches_tracked.fill_(7)
    ema_update(ema, model, ema_beta(5, 16, decay=0.9, start=10))  # before start: a copy
    assert torch.equal(ema.weight, model.weight) and int(ema.num_batches_tracked) == 7
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.running_mean.fill_(2.0)
    ema_update(ema, model, ema_beta(10, 16, decay=0.9, start=10))
    assert torch.allclose(ema.weight, torch.full((2,), 0.9 * 3 + 0.1 * 5))
    assert torch.allclose(ema.running_mean, torch.full((2,), 0.9 * 1 + 0.1 * 2))  # buffers averaged too
