"""StyleGAN-XL: the stem-plus-heads layer schedule and names (the reference's naming rule, by hand), the class
embedding mapping and its state-dict names, per-class W averages tracked sample by sample in training only,
truncation towards the class's average, a pure eval forward, a tiny training run through the one loop, sampling
from the saved run, and ONNX export parity."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

import scalegan
from scalegan.models.stylegan3 import layer_specs
from scalegan.models.stylegan_xl import Generator, StyleGANXLConfig, xl_layer_specs
from scalegan.registry import count_parameters, model_config


def tiny(**extra):
    torch.manual_seed(0)
    return scalegan.create_model("stylegan-xl-fmnist", **{**tiny_overrides("stylegan-xl-fmnist"), **extra})


def test_imagenet_stem_names_and_stage_names():
    # The stem at 16 with --syn_layers 10 (-T, cbase / cmax doubled): L0_36_1024 ... L10_16_3, as listed for the
    # README's Pokemon stem in stylegan-xl issue #84.
    stem = [s.name for s in xl_layer_specs(model_config("stylegan-xl-imagenet16"))]
    assert stem[:2] == ["L0_36_1024", "L1_36_1024"] and stem[-1] == "L10_16_3" and len(stem) == 11
    # Each stage drops the last num_critical layers and the toRGB (L8, L9, L10 of the stem), then appends
    # head_layers + 1 layers numbered from (kept layers + 1): the first stage skips L8, later stages skip none.
    s32 = [s.name for s in xl_layer_specs(model_config("stylegan-xl-imagenet32"))]
    assert s32[:8] == stem[:8] and s32[8].startswith("L9_") and s32[-1] == "L16_32_3" and len(s32) == 8 + 8
    s64 = [s.name for s in xl_layer_specs(model_config("stylegan-xl-imagenet64"))]
    assert s64[:13] == s32[:13] and s64[13].startswith("L14_") and s64[-1] == "L21_64_3"
    indices = [int(n.split("_")[0][1:]) for n in s64]
    assert indices == [i for i in range(22) if i != 8]
    for name in ("stylegan-xl-imagenet32", "stylegan-xl-imagenet64", "stylegan-xl-imagenet256"):
        cfg = model_config(name)
        assert cfg.num_ws == len(xl_layer_specs(cfg)) + 1


def test_head_schedule_continues_from_the_last_kept_layer():
    cfg = model_config("stylegan-xl-imagenet32")
    stem = layer_specs(cfg.stem_config())
    last = stem[7]  # L7: the last layer the stage keeps
    head = xl_layer_specs(cfg)[8:]
    n, r = cfg.head_layers, 32
    e = np.minimum(np.arange(n + 1) / (n - 2), 1)
    f_c = last.out_cutoff * (r / 2 / last.out_cutoff) ** e
    f_t0 = last.out_cutoff + last.out_half_width
    f_t = f_t0 * (r / 2 * 2 ** 0.3 / f_t0) ** e
    s = 2 ** np.ceil(np.log2(np.minimum(2 * f_t, r)))
    s[0] = last.out_sampling_rate
    assert np.allclose([h.out_cutoff for h in head], f_c) and [h.out_sampling_rate for h in head] == list(s)
    assert np.allclose([h.out_half_width for h in head], np.maximum(f_t, s / 2) - f_c)
    first = head[0]  # takes the kept layer's output unchanged: same rate, size, channels, cutoff
    assert (first.in_sampling_rate, first.in_size, first.in_channels) == (last.out_sampling_rate, last.out_size,
                                                                          last.out_channels)
    assert first.in_cutoff == first.out_cutoff == last.out_cutoff
    assert [h.is_critically_sampled for h in head] == [False] * (n - 2) + [True] * 3 and head[-1].is_torgb
    assert head[-1].out_size == head[-2].out_size == 32 and math.isclose(head[-2].out_cutoff, 16)


def test_state_dict_names_and_mapping_shapes():
    cfg = model_config("stylegan-xl-imagenet16")
    with torch.device("meta"):
        G = Generator(cfg)
    shapes = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    assert shapes["mapping.embed.weight"] == (1000, 320)
    assert shapes["mapping.embed_proj.weight"] == (64, 320) and shapes["mapping.embed_proj.bias"] == (64,)
    assert shapes["mapping.fc0.weight"] == (512, 128) and shapes["mapping.fc1.weight"] == (512, 512)
    assert shapes["mapping.w_avg"] == (1000, 512) and "mapping.fc2.weight" not in shapes
    assert shapes["synthesis.input.weight"] == (1024, 1024) and shapes["synthesis.L10_16_3.weight"] == (3, 1024, 1, 1)
    # The mapping by hand: embedding 1000 x 320, FC 320 -> 64, fc0 128 -> 512, fc1 512 -> 512 (weights + biases).
    assert count_parameters(G.mapping) == 1000 * 320 + (320 * 64 + 64) + (128 * 512 + 512) + (512 * 512 + 512)
    G, _ = tiny()
    keys = set(G.state_dict())
    for name in G.synthesis.layer_names[:-1]:
        assert {f"synthesis.{name}.{k}" for k in ("weight", "bias", "magnitude_ema", "affine.weight")} <= keys
    unconditional = Generator(StyleGANXLConfig(**{**tiny_overrides("stylegan-xl-fmnist"), "n_classes": 0}))
    assert unconditional.mapping.w_avg.shape == (16,) and not hasattr(unconditional.mapping, "embed")
    assert unconditional.mapping.fc0.weight.shape == (16, 16)


def test_forward_shapes_and_eval_purity():
    G, D = tiny()
    assert G.config.superres_stages == 1 and G.config.num_ws == len(G.synthesis.layer_names) + 1
    z, y = torch.randn(4, G.config.z_dim), torch.tensor([0, 1, 2, 3])
    G.eval()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with torch.no_grad():
        a, b = G(z, y), G(z, y, truncation=0.5)
        assert torch.equal(a, G(z, y)) and (a - b).abs().max() > 1e-4
        img, ws = G(z, y, return_ws=True)
        assert torch.equal(G(ws), img) and ws.shape == (4, G.config.num_ws, G.config.w_dim)
        onehot = torch.nn.functional.one_hot(y, 5).float()
        assert torch.allclose(G(z, onehot), a, atol=1e-6)  # one-hot labels: the same lookup
        assert D(a, y).shape == (4,)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert a.shape == (4, 1, 32, 32) and a.isfinite().all() and a.abs().max() < 10
    with pytest.raises(ValueError, match="class-conditional"):
        G(z)
    with pytest.raises(ValueError, match="z must be"):
        G(torch.randn(2, 3), y[:2])


def test_class_averages_track_sample_by_sample_in_training_only():
    G, _ = tiny()
    G.train()
    beta = G.config.w_avg_beta
    w_avg = torch.randn_like(G.mapping.w_avg)
    G.mapping.w_avg.copy_(w_avg)
    z, y = torch.randn(7, G.config.z_dim), torch.tensor([1, 3, 1, 1, 0, 3, 1])
    with torch.no_grad():
        w = G.mapping(z, y, track=False)
        G.map(z, y)
    expected = w_avg.clone()
    for i, label in enumerate(y.tolist()):  # the reference's loop: one lerp per sample, in batch order
        expected[label] = w[i].lerp(expected[label], beta)
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)
    assert torch.equal(G.mapping.w_avg[[2, 4]], w_avg[[2, 4]])  # classes not in the batch keep their average
    tracked = G.mapping.w_avg.clone()
    G.eval()
    with torch.no_grad():
        G.map(z, y)
    assert torch.equal(G.mapping.w_avg, tracked)


def test_truncation_pulls_towards_the_class_average():
    G, _ = tiny()
    G.train()
    with torch.no_grad():
        for _ in range(3):
            G(torch.randn(16, G.config.z_dim), torch.arange(16) % 5)
    G.eval()
    z, y = torch.randn(4, G.config.z_dim), torch.tensor([0, 1, 1, 3])
    ws = G.map(z, y, truncation=0.0)
    assert torch.allclose(ws, G.mapping.w_avg[y][:, None].expand_as(ws))
    assert not torch.allclose(G.mapping.w_avg[0], G.mapping.w_avg[1], atol=1e-4)
    with torch.no_grad():
        full, half = G.map(z, y), G.map(z, y, truncation=0.5)
        assert torch.allclose(half, (full + ws) / 2, atol=1e-6)
        images = G(z, y, truncation=0.0)
    assert torch.allclose(images[1], images[2], atol=1e-5) and (images[0] - images[1]).abs().max() > 1e-4
    centre = scalegan.family.get_family("stylegan-xl").w_space.centre(G, y)
    assert torch.equal(centre, G.mapping.w_avg[y])
    near = scalegan.sampling.sample(G, 2, y=3, seed=0, truncation=0.05)
    far = scalegan.sampling.sample(G, 2, y=3, seed=0, truncation=1.0)
    assert (near[0] - near[1]).abs().mean() < 0.2 * (far[0] - far[1]).abs().mean()


def test_config_validation():
    with pytest.raises(ValueError, match="stem_resolution"):
        StyleGANXLConfig(resolution=32, stem_resolution=64)
    with pytest.raises(ValueError, match="stem_resolution"):
        StyleGANXLConfig(resolution=32, stem_resolution=8)
    with pytest.raises(ValueError, match="head_layers"):
        StyleGANXLConfig(resolution=32, head_layers=2)
    cfg = StyleGANXLConfig(resolution=256)
    assert cfg.superres_stages == 4 and cfg.num_ws == 12 + 4 * 5 and cfg.to_dict()["family"] == "stylegan-xl"


def test_onnx_export_matches_torch(tmp_path):
    from conftest import check_onnx_export

    check_onnx_export(tiny()[0], tmp_path)


def test_tiny_training_run(tiny_npz, tmp_path):
    from conftest import train_tiny

    _, G, info = train_tiny("stylegan-xl-fmnist", tiny_npz, tmp_path / "run")
    assert info.family == "stylegan-xl" and G.config.superres_stages == 1
    assert G.mapping.w_avg.abs().sum() > 0  # G_ema copied the tracked class averages
    assert scalegan.sampling.sample(G, 2, y=1, seed=0).shape == (2, 1, 32, 32)
