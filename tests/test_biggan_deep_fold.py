"""The fast inference path gives the reference path's output (float32 <= 1e-5; bf16 close), for every truncation."""

from __future__ import annotations

import pytest
import torch

import scalegan
from scalegan.layers import batch_norms
from scalegan.models.biggan_deep_fold import fast_generator


def random_deep(resolution: int = 128, n_stats: int = 51, sn_eval: str = "stored", seed: int = 0):
    """A small BigGAN-deep G with random per-truncation BN statistics, SN sigmas and attention gamma."""
    torch.manual_seed(seed)
    G, _ = scalegan.create_model(f"biggan-deep-{resolution}", ch=8, d_ch=8, n_classes=1000, rgb_channels=8,
                                 n_stats=n_stats, sn_eval=sn_eval)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in batch_norms(G):
            if n_stats:
                bn.stats_mean.copy_(0.3 * torch.randn(bn.stats_mean.shape, generator=g))
                bn.stats_var.uniform_(0.5, 2.0, generator=g)
            else:
                bn.running_mean.copy_(0.3 * torch.randn(bn.running_mean.shape, generator=g))
                bn.running_var.uniform_(0.5, 2.0, generator=g)
        G.output_bn.weight.uniform_(0.5, 1.5, generator=g)
        for m in G.modules():
            if hasattr(m, "sv"):
                w = m.weight.reshape(m.weight.shape[0], -1)
                m.sv.fill_(torch.linalg.matrix_norm(w, ord=2).item() * 1.1)  # sigma estimates near the top one
        for attn in G.attention.values():
            attn.gamma.fill_(0.7)
    return G.eval()


@pytest.mark.parametrize("truncation", [0.14, 0.4, 0.58, 1.0])
def test_fast_equals_reference_float32(truncation):
    G = random_deep()
    fast = fast_generator(G, truncation=truncation)
    z = truncation * torch.randn(3, 128).clamp(-2, 2)
    y = torch.tensor([207, 1, 999])
    with torch.no_grad():
        expected = G(z, y, truncation=truncation)
        ours = fast(z, y)
        soft = fast(z, torch.nn.functional.one_hot(y, 1000).float())
    assert expected.abs().mean() > 0.05
    assert (ours - expected).abs().max().item() <= 1e-5
    assert (soft - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("channels_last", [True, False])
def test_fast_power_iteration_model_and_layouts(channels_last):
    G = random_deep(256, n_stats=0, sn_eval="power")  # a scalegan-trained model: one set of stats, SN by power it.
    u_before = G.linear.u.clone()
    fast = fast_generator(G, channels_last=channels_last)
    z, y = torch.randn(2, 128), torch.tensor([5, 6])
    with torch.no_grad():
        assert (fast(z, y) - G(z, y)).abs().max().item() <= 1e-5
    assert torch.equal(G.linear.u, u_before)  # building the fast copy leaves G alone


def test_fast_bf16_close_and_g_untouched():
    G = random_deep()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    fast = fast_generator(G, truncation=0.5, dtype=torch.bfloat16)
    z, y = 0.5 * torch.randn(2, 128), torch.tensor([3, 4])
    with torch.no_grad():
        out = fast(z, y)
        expected = G(z, y, truncation=0.5)
    assert out.dtype == torch.float32
    assert (out - expected).abs().max().item() < 0.1
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith(("running_mean", "running_var")))


def test_fast_biggan_wrapper_and_errors():
    G = random_deep()
    with pytest.raises(NotImplementedError):
        fast_generator(scalegan.create_model("biggan-32", ch=8, d_ch=8)[0])
    model = scalegan.BigGAN(resolution=128)
    model.G, model.fast = G, True
    z = 0.4 * torch.randn(2, 128)
    with torch.no_grad():
        assert (model.generate(z, y="golden retriever", truncation=0.4) -
                G(z, torch.tensor([207, 207]), truncation=0.4)).abs().max() <= 1e-5
