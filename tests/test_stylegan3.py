"""StyleGAN3: the layer schedule and parameter counts against REFERENCE.md's published configurations, the filters
against scipy.signal.firwin, the fast filtered leaky ReLU against its reference, the Fourier input's transform,
a pure eval-mode forward, conditional truncation in W, and a tiny training run through the one loop."""

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from conftest import tiny_overrides

import scalegan
from scalegan.models.stylegan3 import (
    Generator,
    StyleGAN3Config,
    design_lowpass_filter,
    filtered_lrelu,
    layer_specs,
    modulated_conv2d,
)
from scalegan.registry import count_parameters, model_config


def tiny(**extra):
    torch.manual_seed(0)
    return scalegan.create_model("stylegan3-t-fmnist", **{**tiny_overrides("stylegan3-t-fmnist"), **extra})


# REFERENCE.md section 9: G parameter counts of the published pickles, worked out from the layer formulas.
EXPECTED_G_PARAMS = {
    "stylegan3-t-1024": 22_313_167, "stylegan3-r-1024": 15_093_151,
    "stylegan3-t-512": 24_873_519, "stylegan3-r-512": 16_665_594,
    "stylegan3-t-256": 23_320_443, "stylegan3-r-256": 15_779_565,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_G_PARAMS))
def test_generator_parameter_counts(name):
    with torch.device("meta"):
        G = Generator(model_config(name))
    assert count_parameters(G) == EXPECTED_G_PARAMS[name]
    if name.endswith("1024"):  # mapping / input / layers, as REFERENCE's table splits them
        layers = {"t": 21_523_659, "r": 13_517_211}[name.split("-")[1]]
        expected = (525_312, 264_196 if "-t-" in name else 1_050_628, layers)
        synthesis = count_parameters(G.synthesis)
        assert (count_parameters(G.mapping), count_parameters(G.synthesis.input),
                synthesis - count_parameters(G.synthesis.input)) == expected


def test_ffhq_1024_layer_names_and_schedule():
    names = [s.name for s in layer_specs(model_config("stylegan3-t-1024"))]
    assert names == ("L0_36_512 L1_36_512 L2_52_512 L3_52_512 L4_84_512 L5_148_512 L6_148_512 L7_276_323 L8_276_203 "
                     "L9_532_128 L10_1044_81 L11_1044_51 L12_1044_32 L13_1024_32 L14_1024_3").split()
    specs = layer_specs(model_config("stylegan3-r-1024"))
    assert [s.out_channels for s in specs] == [1024] * 7 + [645, 406, 256, 161, 102, 64, 64, 3]
    assert [s.out_size for s in specs] == [int(n.split("_")[1]) for n in names]
    assert [s.out_sampling_rate for s in specs] == [16, 16, 32, 32, 64, 128, 128, 256, 256, 512] + [1024] * 5
    cutoffs = [round(s.out_cutoff, 1) for s in specs]
    assert cutoffs[:7] == [2, 3.2, 5.0, 8, 12.7, 20.2, 32] and cutoffs[-3:] == [512] * 3
    # i >= N - num_critical: L12 (cutoff = s / 2 = 512), L13 and the toRGB
    assert [s.is_critically_sampled for s in specs] == [False] * 12 + [True] * 3 and specs[-1].is_torgb
    # The 256 pickles' --cbase=16384 -R layers named by third-party loaders.
    r256 = {s.name for s in layer_specs(model_config("stylegan3-r-256"))}
    assert {"L4_52_1024", "L9_148_362", "L12_276_128"} <= r256


def test_state_dict_names_follow_nvlabs():
    G, _ = tiny(n_classes=3)
    keys = set(G.state_dict())
    assert {"synthesis.input.weight", "synthesis.input.affine.weight", "synthesis.input.affine.bias",
            "synthesis.input.transform", "synthesis.input.freqs", "synthesis.input.phases",
            "mapping.fc0.weight", "mapping.fc1.bias", "mapping.w_avg", "mapping.embed.weight"} <= keys
    first, last = G.synthesis.layer_names[0], G.synthesis.layer_names[-1]
    for suffix in ("weight", "bias", "magnitude_ema", "affine.weight", "affine.bias", "up_filter", "down_filter"):
        assert f"synthesis.{first}.{suffix}" in keys
    # The toRGB resamples nothing: no filters (None buffers, absent from the state dict).
    assert f"synthesis.{last}.weight" in keys and f"synthesis.{last}.up_filter" not in keys
    assert f"synthesis.{last}.down_filter" not in keys
    assert G.synthesis.input.affine.weight.shape == (4, G.config.w_dim)
    assert torch.equal(G.synthesis.input.affine.bias, torch.tensor([1.0, 0, 0, 0]))
    assert torch.equal(G.synthesis.input.transform, torch.eye(3))
    assert G.synthesis.input.freqs.norm(dim=1).max() <= G.config.first_cutoff  # inside the band-limit disc


def test_filters_equal_scipy_firwin_and_sum_to_one():
    cfg = StyleGAN3Config(resolution=32, channel_base=256, channel_max=8, z_dim=8, w_dim=8, num_layers=6)
    G = Generator(cfg)
    n, r = cfg.num_layers, cfg.resolution
    # The schedule by hand (REFERENCE section 9) for layer i = 3, input from layer 2.
    e = np.minimum(np.arange(n + 1) / (n - 2), 1)
    f_c = 2 * (r / 4) ** e
    f_t = 2 ** 2.1 * (r / 2 * 2 ** 0.3 / 2 ** 2.1) ** e
    s = 2 ** np.ceil(np.log2(np.minimum(2 * f_t, r)))
    f_h = np.maximum(f_t, s / 2) - f_c
    checked = 0
    for i, name in enumerate(G.synthesis.layer_names[:-1]):
        layer = getattr(G.synthesis, name)
        j = max(i - 1, 0)
        rate = max(s[i], s[j]) * 2
        up, down = int(rate / s[j]), int(rate / s[i])
        expected_up = scipy.signal.firwin(6 * up, f_c[j], width=2 * f_h[j], fs=rate)
        expected_down = scipy.signal.firwin(6 * down, f_c[i], width=2 * f_h[i], fs=rate)
        assert torch.allclose(layer.up_filter.double(), torch.from_numpy(expected_up), atol=1e-7), name
        assert torch.allclose(layer.down_filter.double(), torch.from_numpy(expected_down), atol=1e-7), name
        assert abs(float(layer.up_filter.sum()) - 1) < 1e-6 and abs(float(layer.down_filter.sum()) - 1) < 1e-6
        checked += up == 4  # the layer where the sampling rate doubles upsamples by 4 with 24 taps
    assert checked == 1
    # -R: radially symmetric 2-D down filters except in critically sampled layers.
    R = Generator(StyleGAN3Config(resolution=32, channel_base=256, channel_max=8, z_dim=8, w_dim=8, num_layers=6,
                                  conv_kernel=1, use_radial_filters=True))
    names = R.synthesis.layer_names
    f = getattr(R.synthesis, names[1]).down_filter
    assert f.shape == (12, 12) and abs(float(f.sum()) - 1) < 1e-6
    assert torch.allclose(f, f.t()) and torch.allclose(f, f.flip(0)) and torch.allclose(f, f.flip(1))
    assert f[5, 5] > f[5, 0] > 0 and abs(float(f[0, 5] - f[5, 0])) < 1e-7  # low-pass: the centre weighs most
    assert getattr(R.synthesis, names[-2]).down_filter.dim() == 1  # critically sampled: separable
    assert design_lowpass_filter(1, 4, 2, 16) is None


def test_filtered_lrelu_fast_equals_reference():
    G, _ = tiny()
    torch.manual_seed(1)
    for name in G.synthesis.layer_names:
        layer = getattr(G.synthesis, name)
        x = torch.randn(2, layer.weight.shape[0], 14, 14, dtype=torch.float64)
        b = torch.randn(layer.weight.shape[0], dtype=torch.float64)
        fu = None if layer.up_filter is None else layer.up_filter.double()
        fd = None if layer.down_filter is None else layer.down_filter.double()
        args = (x, fu, fd, b, layer.up, layer.down, layer.padding)
        for gain, slope, clamp in ((math.sqrt(2), 0.2, None), (1.0, 1.0, 0.3)):
            ref = filtered_lrelu(*args, gain=gain, slope=slope, clamp=clamp, impl="ref")
            fast = filtered_lrelu(*args, gain=gain, slope=slope, clamp=clamp, impl="fast")
            assert ref.shape == fast.shape and (ref - fast).abs().max() < 1e-10, name
    with pytest.raises(ValueError, match="impl"):
        filtered_lrelu(x, None, None, None, impl="cuda")


@pytest.mark.parametrize("radial", [False, True])
def test_layers_keep_pixel_centres_aligned(radial):
    """A sinusoid sampled at the input grid's pixel centres leaves a linear filtered layer as the same sinusoid at
    the output grid's centres (both grids centred on the origin): no shift, only the filters' passband gain."""
    G, _ = tiny(conv_kernel=1, use_radial_filters=radial, num_layers=6, margin_size=10)
    for spec in layer_specs(G.config)[:-1]:
        layer = getattr(G.synthesis, spec.name)
        f = spec.in_cutoff / 2

        def grid(n, rate):
            return (torch.arange(n, dtype=torch.float64) + 0.5 - n / 2) / rate

        x = torch.sin(2 * math.pi * f * grid(spec.in_size, spec.in_sampling_rate))
        x = x[None, None, None, :].expand(1, 1, spec.in_size, spec.in_size)
        out = filtered_lrelu(x, layer.up_filter.double(), layer.down_filter.double(), None, layer.up, layer.down,
                             layer.padding, gain=1.0, slope=1.0)[0, 0, spec.out_size // 2, 8:-8]
        phase = 2 * math.pi * f * grid(spec.out_size, spec.out_sampling_rate)[8:-8]
        fit = torch.linalg.lstsq(torch.stack([phase.sin(), phase.cos()], 1), out[:, None]).solution[:, 0]
        shift = math.atan2(float(fit[1]), float(fit[0])) / (2 * math.pi * f) * spec.out_sampling_rate  # pixels
        assert abs(shift) < 1e-3 and 0.7 < float(fit.norm()) <= 1.0, (spec.name, shift, fit)


def test_modulated_conv_by_hand():
    x, weight, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    gain = torch.tensor(0.7)
    out = modulated_conv2d(x, weight, styles, input_gain=gain, padding=2)
    assert out.shape == (3, 5, 8, 8)  # padding k - 1: the full convolution
    for i in range(3):
        w = weight * styles[i][None, :, None, None]
        w = w / w.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        assert torch.allclose(out[i:i + 1], F.conv2d(x[i:i + 1], w * gain, padding=2), atol=1e-5)
    plain = modulated_conv2d(x, weight, styles, demodulate=False)
    assert torch.allclose(plain[:1], F.conv2d(x[:1], weight * styles[0][None, :, None, None]), atol=1e-5)


def test_input_transform_translates_the_features():
    G, _ = tiny()
    G.eval()
    inp = G.synthesis.input
    w = torch.randn(2, G.config.w_dim)
    with torch.no_grad():
        inp.affine.weight.normal_()  # a w-dependent rotation and translation
        base = inp(w)
        inp.transform[0, 2] = 1 / inp.sampling_rate  # one pixel to the right in the sampled coordinates
        shifted = inp(w)
    assert base.shape == (2, inp.channels, inp.size, inp.size)
    assert torch.allclose(shifted[..., :-1], base[..., 1:], atol=1e-4)
    assert (shifted - base).abs().max() > 1e-2


def _translation_error(**overrides) -> float:
    """Relative squared error between G's output for the input translated by one output pixel (half a pixel of
    the first layers' grid) and the untranslated output shifted by one pixel, away from the borders."""
    G, _ = tiny(margin_size=10, **overrides)
    G.eval()
    with torch.no_grad():
        ws = G.map(torch.randn(4, G.config.z_dim), torch.tensor([0, 1, 2, 3]))
        base = G(ws)
        G.synthesis.input.transform[0, 2] = 1 / G.config.resolution
        shifted = G(ws)
    error = (shifted[..., 4:-4, 4:-5] - base[..., 4:-4, 5:-4]).square().mean()
    return float(error / base.square().mean())


def test_translation_equivariance_needs_the_filtered_nonlinearity():
    """The alias-free property (EQ-T) at a sub-pixel translation of the early layers: nearly exact with the
    filtered leaky ReLU, orders of magnitude worse when the nonlinearity runs at the layer's own rate."""
    assert _translation_error() < 1e-7
    assert _translation_error(lrelu_upsampling=1) > 1e-6


def test_onnx_export_matches_torch(tmp_path):
    from conftest import check_onnx_export

    check_onnx_export(tiny()[0], tmp_path)


def test_eval_forward_is_pure_and_training_tracks_magnitudes():
    G, _ = tiny()
    y = torch.tensor([0, 1, 2, 3])
    z = torch.randn(4, G.config.z_dim)
    G.eval()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with torch.no_grad():
        a, b = G(z, y), G(z, y, truncation=0.5)
        assert torch.equal(a, G(z, y)) and (a - b).abs().max() > 1e-4
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert a.shape == (4, 1, 32, 32) and a.isfinite().all() and a.abs().max() < 10
    G.train()
    G(z, y)
    layer = getattr(G.synthesis, G.synthesis.layer_names[1])
    assert float(layer.magnitude_ema) != 1.0 and not torch.equal(G.mapping.w_avg, before["mapping.w_avg"])


def test_conditional_truncation_pulls_towards_the_class_centre():
    G, _ = tiny()
    G.train()
    with torch.no_grad():
        for _ in range(3):
            G(torch.randn(16, G.config.z_dim), torch.arange(16) % 5)
    G.eval()
    z = torch.randn(4, G.config.z_dim)
    y = torch.tensor([0, 1, 1, 3])
    centres = G.mapping.centres()
    ws = G.map(z, y, truncation=0.0)
    assert ws.shape == (4, G.config.num_ws, G.config.w_dim)
    assert torch.allclose(ws, centres[y][:, None].expand_as(ws))
    assert not torch.allclose(centres[0], centres[1], atol=1e-4)
    with torch.no_grad():
        full, half = G.map(z, y), G.map(z, y, truncation=0.5)
        assert torch.allclose(half, (full + ws) / 2, atol=1e-6)
        images = G(z, y, truncation=0.0)
    assert torch.allclose(images[1], images[2], atol=1e-5) and (images[0] - images[1]).abs().max() > 1e-4
    # Sampling truncates in W: two seeds of one class at psi 0.05 differ far less than untruncated.
    near = scalegan.sampling.sample(G, 2, y=3, seed=0, truncation=0.05)
    far = scalegan.sampling.sample(G, 2, y=3, seed=0, truncation=1.0)
    assert (near[0] - near[1]).abs().mean() < 0.2 * (far[0] - far[1]).abs().mean()


def test_config_validation():
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN3Config(resolution=48)
    with pytest.raises(ValueError, match="num_critical"):
        StyleGAN3Config(num_layers=2, num_critical=2)
    with pytest.raises(ValueError, match="magnitude_ema_beta"):
        StyleGAN3Config(magnitude_ema_beta=1.0)
    with pytest.raises(ValueError, match="conv_kernel"):
        StyleGAN3Config(conv_kernel=0)
    with pytest.raises(ValueError, match="d_architecture"):
        StyleGAN3Config(d_architecture="skip")
    assert StyleGAN3Config().num_ws == 16


def test_tiny_training_run(tiny_npz, tmp_path):
    from conftest import train_tiny

    lines, G, info = train_tiny("stylegan3-t-fmnist", tiny_npz, tmp_path / "run")
    assert {"loss_d_real", "loss_d_fake", "r1_penalty"} <= set().union(*lines)
    assert info.family == "stylegan3"
    layer = getattr(G.synthesis, G.synthesis.layer_names[0])
    assert float(layer.magnitude_ema) != 1.0  # G_ema copied the tracked magnitudes
    assert scalegan.sampling.sample(G, 2, y=1, seed=0).shape == (2, 1, 32, 32)
