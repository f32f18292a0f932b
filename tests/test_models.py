"""Architectures: parameter counts that pin the published layouts, shapes for every preset, layer semantics."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_overrides

import scalegan
from scalegan.cli.info import preset_info
from scalegan.layers import ConditionalBatchNorm2d, SelfAttention, SNConv2d, SNLinear
from scalegan.models import build_discriminator, build_generator, config_from_dict
from scalegan.registry import count_parameters, list_models, model_config
from scalegan.sampling import sample

# Trainable parameters (G, D). The first three are REFERENCE.md's published counts; the rest pin our layouts.
EXPECTED_PARAMS = {
    "biggan-128": (70_433_988, 87_982_370),
    "biggan-32": (4_304_387, 4_207_361),
    "biggan-deep-128": (50_388_609, 34_590_210),
    "biggan-64": (70_377_348, 45_511_970),
    "biggan-256": (82_097_604, 99_225_890),
    "biggan-512": (82_296_804, 99_401_282),
    "biggan-deep-256": (55_880_833, 38_247_426),
    "biggan-deep-512": (56_163_905, 38_301_122),
    "biggan-fmnist": (633_473, 593_505),
    "biggan-deep-fmnist": (1_118_213, 339_985),
    # REFERENCE.md: NVlabs' networks built with stylegan2-ada's `cifar` and `paper256` configurations.
    "stylegan2-cifar": (20_215_315, 23_089_664),
    "stylegan2-256": (24_767_458, 24_001_089),
    "stylegan2-fmnist": (346_987, 302_048),
    # REFERENCE.md section 9: NVlabs' published StyleGAN3 configurations (G; D is StyleGAN2's at their cbase).
    "stylegan3-t-1024": (22_313_167, 29_012_513),
    "stylegan3-r-1024": (15_093_151, 29_012_513),
    "stylegan3-t-512": (24_873_519, 28_982_849),
    "stylegan3-r-512": (16_665_594, 28_982_849),
    "stylegan3-t-256": (23_320_443, 24_001_089),
    "stylegan3-r-256": (15_779_565, 24_001_089),
    "stylegan3-t-fmnist": (104_853, 302_048),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    info = preset_info(name)
    assert (info["G_params"], info["D_params"]) == EXPECTED_PARAMS[name]


def test_parameter_counts_on_real_modules_match_meta():
    G, D = scalegan.create_model("biggan-32")
    assert (count_parameters(G), count_parameters(D)) == EXPECTED_PARAMS["biggan-32"]


def test_reference_ch64_counts():
    # REFERENCE.md: the ImageNet-128 layout with ch 64 has G 31.98M and D 39.45M parameters.
    info = preset_info("biggan-128", {"ch": 64, "d_ch": 64})
    assert round(info["G_params"] / 1e6, 2) == 31.98
    assert round(info["D_params"] / 1e6, 2) == 39.45


@pytest.mark.parametrize("name", list_models())
def test_every_preset_trains_one_step(name):
    """Every registered preset (shrunk) runs forward and backward with the right shapes."""
    torch.manual_seed(0)
    cfg = model_config(name, **tiny_overrides(name))
    G, D = build_generator(cfg), build_discriminator(cfg)
    y = torch.tensor([0, 4])
    z, _ = scalegan.sampling.draw(G, 2, y)
    x = G(z, y)
    assert x.shape == (2, cfg.img_channels, cfg.resolution, cfg.resolution)
    # The class and the latent both reach the image: swapping either changes it.
    assert (G(z, y.flip(0)) - x).abs().mean() > 1e-4 and (G(z.flip(0), y) - x).abs().mean() > 1e-4
    logits = D(x, y)
    assert logits.shape == (2,)
    logits.sum().backward()
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("family", ["biggan-32", "biggan-deep-128"])
def test_unconditional_and_grayscale(family):
    cfg = model_config(family, **{**tiny_overrides(family), "n_classes": 0, "img_channels": 1, "resolution": 32})
    G, D = build_generator(cfg), build_discriminator(cfg)
    x = G(torch.randn(3, cfg.z_dim))
    assert x.shape == (3, 1, 32, 32)
    assert D(x).shape == (3,)
    with pytest.raises(ValueError, match="unconditional"):
        sample(G, 1, y=0)


@pytest.mark.parametrize("options", [dict(hier=False, shared_dim=0), dict(g_se=True, d_se=True), dict(init="N02")])
def test_biggan_variants(options):
    cfg = model_config("biggan-32", ch=4, d_ch=4, n_classes=3, **options)
    G, D = build_generator(cfg), build_discriminator(cfg)
    y = torch.tensor([0, 2])
    assert D(G(torch.randn(2, cfg.z_dim), y), y).shape == (2,)


def test_se_adds_parameters_and_is_off_in_presets():
    off = preset_info("biggan-32")
    on = preset_info("biggan-32", {"g_se": True, "d_se": True})
    assert on["G_params"] > off["G_params"] and on["D_params"] > off["D_params"]
    assert all(not model_config(n).g_se and not model_config(n).d_se for n in list_models() if "biggan" in n)


def test_wrong_shapes_are_clear_errors():
    cfg = model_config("biggan-32", ch=4, d_ch=4, n_classes=3)
    G = build_generator(cfg)
    with pytest.raises(ValueError, match="z must be"):
        G(torch.randn(2, cfg.z_dim + 1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="pass y"):
        G(torch.randn(2, cfg.z_dim))
    with pytest.raises(ValueError):
        model_config("biggan-32", resolution=48)
    with pytest.raises(ValueError, match="unknown"):
        model_config("biggan-32", chanels=4)
    with pytest.raises(KeyError, match="did you mean"):
        model_config("bigan-32")
    for name, field in (("biggan-32", "g_attn"), ("biggan-deep-128", "d_attn")):  # no block has that resolution
        with pytest.raises(ValueError, match=f"{field}: 24 is not a block resolution"):
            model_config(name, **{field: (24,)})
    assert model_config("biggan-32", g_attn=(64,)).g_attn == (64,)  # above the resolution: no attention, as before


# ----------------------------------------------------------------------------------------------- layers
def test_spectral_norm_semantics():
    torch.manual_seed(0)
    conv = SNConv2d(3, 5, 3, sn_eps=1e-6)
    x = torch.randn(2, 3, 8, 8)
    conv.eval()
    u0 = conv.u.clone()
    out1, out2 = conv(x), conv(x)
    assert torch.equal(conv.u, u0) and torch.equal(out1, out2)  # eval mode never writes u
    conv.train()
    for _ in range(50):
        conv(x)
    assert not torch.equal(conv.u, u0)
    sigma = torch.linalg.matrix_norm(conv.weight.reshape(5, -1), ord=2)
    assert torch.allclose(conv.sv, sigma, rtol=1e-4)  # power iteration converged to the top singular value
    expected = F.conv2d(x, conv.weight / sigma, conv.bias)
    conv.eval()
    assert torch.allclose(conv(x), expected, atol=1e-4)


def test_spectral_norm_runs_in_float32_under_autocast():
    lin = SNLinear(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lin(torch.randn(4, 16))
    assert out.dtype == torch.bfloat16
    assert lin.u.dtype == torch.float32 and torch.isfinite(lin.u).all()


def test_conditional_bn_has_the_one_plus():
    torch.manual_seed(0)
    bn = ConditionalBatchNorm2d(6, "linear", cond_dim=4)
    x = torch.randn(8, 6, 4, 4)
    c = torch.zeros(8, 4)  # zero conditioning -> gain 0 -> plain normalisation (identity scale)
    expected = F.batch_norm(x, None, None, training=True, eps=bn.eps)
    assert torch.allclose(bn(x, c), expected, atol=1e-5)
    emb = ConditionalBatchNorm2d(6, "embedding", n_classes=3)
    torch.nn.init.constant_(emb.gain.weight, 0.5)
    torch.nn.init.constant_(emb.bias.weight, 0.25)
    assert torch.allclose(emb(x, torch.zeros(8, dtype=torch.long)), expected * 1.5 + 0.25, atol=1e-5)


def test_self_attention_matches_the_explicit_formula():
    torch.manual_seed(0)
    att = SelfAttention(16).eval()
    att.gamma.data.fill_(0.7)
    x = torch.randn(2, 16, 8, 8)
    theta = att.theta(x).flatten(2)  # [N, C/8, HW]
    phi = F.max_pool2d(att.phi(x), 2).flatten(2)  # [N, C/8, HW/4]
    g = F.max_pool2d(att.g(x), 2).flatten(2)  # [N, C/2, HW/4]
    beta = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # [N, HW, HW/4]
    o = (g @ beta.transpose(1, 2)).reshape(2, 8, 8, 8)
    assert torch.allclose(att(x), x + 0.7 * att.o(o), atol=1e-5)


def test_channels_last_bf16_agrees_with_float32():
    """The fast path (bf16 autocast + channels_last) stays close to the float32 reference."""
    torch.manual_seed(0)
    cfg = model_config("biggan-fmnist", ch=8, d_ch=8)
    G = build_generator(cfg).eval()
    z, y = torch.randn(4, cfg.z_dim), torch.arange(4)
    ref = G(z, y)
    G_fast = build_generator(cfg).eval()
    G_fast.load_state_dict(G.state_dict())
    G_fast.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = G_fast(z, y).float()
    assert (fast - ref).abs().mean() < 0.05
