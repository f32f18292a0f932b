"""StyleGAN2: resampling and modulated convolutions against explicit formulas, the fused and non-fused paths,
truncation in W, the tracked averages, minibatch standard deviation, the objective's phases and penalties, and the
sampling tools (style mixing, interpolation in W)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_overrides

import scalegan
from scalegan.models.stylegan2 import (
    conv2d_resample,
    downsample2d,
    fir_filter,
    minibatch_std,
    modulated_conv2d,
    upsample2d,
)
from scalegan.objectives import Context, Nets
from scalegan.objectives.stylegan2 import StyleGAN2Objective, StyleGAN2ObjectiveConfig
from scalegan.sampling import interpolation_sheet, sample, style_mixing_sheet


def tiny(**extra):
    torch.manual_seed(0)
    return scalegan.create_model("stylegan2-fmnist", **{**tiny_overrides("stylegan2-fmnist"), **extra})


def test_resampling_filters():
    f = fir_filter()
    assert torch.allclose(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    flat = torch.ones(1, 1, 8, 8)
    assert torch.allclose(upsample2d(flat, f)[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))  # gain 4 keeps the level
    assert torch.allclose(downsample2d(flat, f)[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2))
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    # Up-sampling conv: the transposed convolution then the filter equals a true convolution (flipped kernel) of
    # the filtered up-sampled image, away from the borders; down-sampling: a correlation, then the filter.
    up = conv2d_resample(x, w, f, up=2)
    assert up.shape == (2, 4, 16, 16)
    assert not torch.allclose(up, F.conv2d(upsample2d(x, f), w.flip([2, 3]), padding=1), atol=1e-5)  # borders
    assert torch.allclose(up[..., 2:-2, 2:-2], F.conv2d(upsample2d(x, f), w.flip([2, 3]), padding=1)[..., 2:-2, 2:-2],
                          atol=1e-5)
    down = conv2d_resample(x, w, f, down=2)
    assert down.shape == (2, 4, 4, 4)
    assert torch.allclose(down[..., 1:-1, 1:-1], downsample2d(F.conv2d(x, w, padding=1), f)[..., 1:-1, 1:-1],
                          atol=1e-5)


@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_fused_equals_non_fused_equals_explicit(up):
    x, weight, styles = torch.randn(3, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    f = fir_filter()
    fused = modulated_conv2d(x, weight, styles, up=up, f=f, fused=True)
    plain = modulated_conv2d(x, weight, styles, up=up, f=f, fused=False)
    assert (fused - plain).abs().max() <= 1e-5 * fused.abs().max()
    for i in range(3):  # per sample: the weight scaled by the styles, each output channel normalised to norm 1
        w = weight * styles[i][None, :, None, None]
        w = w / w.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        expected = conv2d_resample(x[i:i + 1], w, f, up=up)
        assert torch.allclose(fused[i:i + 1], expected, atol=1e-5)
    no_demod = modulated_conv2d(x, weight, styles, demodulate=False, fused=True)
    assert torch.allclose(no_demod[:1], F.conv2d(x[:1], weight * styles[0][None, :, None, None], padding=1), atol=1e-4)


def test_generator_paths_agree_and_eval_is_deterministic():
    G, _ = tiny()
    G.eval()
    z, y = torch.randn(4, G.config.z_dim), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        fused, plain = G(z, y, fused=True), G(z, y, fused=False)
        assert (fused - plain).abs().max() <= 1e-5 * fused.abs().max()
        assert torch.equal(G(z, y), fused)  # eval: const noise, fused
        with_noise = G(z, y, noise_mode="random")
        G.synthesis.b8.conv1.noise_strength.fill_(0.5)
        assert (G(z, y, noise_mode="random") - G(z, y, noise_mode="random")).abs().max() > 1e-4
        assert torch.equal(G(z, y, noise_mode="none"), with_noise)  # strength 0: noise changes nothing
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, y, noise_mode="loud")


def test_truncation_in_w_around_the_class_average():
    G, _ = tiny()
    G.eval()
    mapping = G.mapping
    with torch.no_grad():
        mapping.w_avg.normal_()
        mapping.w_avg_class.normal_()
    z, y = torch.randn(3, G.config.z_dim), torch.tensor([1, 1, 4])
    ws = G.map(z, y)
    assert ws.shape == (3, G.config.num_ws, G.config.w_dim)
    assert torch.allclose(G.map(z, y, truncation=0.0), mapping.w_avg_class[y][:, None].expand_as(ws))
    assert torch.allclose(G.map(z, y, truncation=0.5), mapping.w_avg_class[y][:, None].lerp(ws, 0.5), atol=1e-6)
    assert torch.equal(G.map(z, y, truncation=1.0), ws)
    unconditional, _ = tiny(n_classes=0, truncation_cutoff=2)
    with torch.no_grad():
        unconditional.mapping.w_avg.normal_()
    ws = unconditional.map(z)
    cut = unconditional.map(z, truncation=0.0)
    assert torch.allclose(cut[:, :2], unconditional.mapping.w_avg.expand(3, 2, -1)) and torch.equal(cut[:, 2:],
                                                                                                     ws[:, 2:])


def test_averages_move_in_training_only():
    G, _ = tiny()
    z, y = torch.randn(8, G.config.z_dim), torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    G.eval()
    G(z, y)
    assert G.mapping.w_avg.abs().sum() == 0 and G.mapping.w_avg_class.abs().sum() == 0
    G.train()
    with torch.no_grad():
        w = G.mapping(z, F.one_hot(y, 5).float(), track=False)
        G(z, y)
    beta = G.config.w_avg_beta
    assert torch.allclose(G.mapping.w_avg, w.mean(0) * (1 - beta), atol=1e-6)
    # A class seen for the first time starts from the global average, not from W = 0.
    assert torch.allclose(G.mapping.w_avg_class[1], w[2:5].mean(0).lerp(G.mapping.w_avg, beta), atol=1e-6)
    assert G.mapping.w_avg_class[3:].abs().sum() == 0  # classes not in the batch stay where they were
    # ... and truncation pulls a never-seen class towards the global average, never towards W = 0.
    G.eval()
    z = torch.randn(2, G.config.z_dim)
    unseen = torch.tensor([3, 4])
    assert torch.allclose(G.map(z, unseen, truncation=0.0), G.mapping.w_avg.expand(2, G.config.num_ws, -1))
    assert torch.allclose(G.map(z, torch.tensor([1, 1]), truncation=0.0)[:, 0], G.mapping.w_avg_class[1].expand(2, -1))


def test_truncation_cutoff_zero_means_no_layer():
    G, _ = tiny(truncation_cutoff=0)
    G.eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        G.mapping.w_avg_class.normal_()
    z, y = torch.randn(2, G.config.z_dim), torch.tensor([0, 1])
    assert torch.equal(G.map(z, y, truncation=0.0), G.map(z, y))
    with pytest.raises(ValueError, match="truncation_cutoff"):
        tiny(truncation_cutoff=-1)


def test_ema_copies_w_averages_and_averages_parameters():
    from scalegan.family import get_family
    from scalegan.training.ema import ema_update

    G, _ = tiny()
    G_ema, _ = tiny()
    with torch.no_grad():
        G.mapping.w_avg.fill_(1.0)
        G.mapping.fc0.weight.fill_(1.0)
        G_ema.mapping.fc0.weight.fill_(0.0)
    assert get_family(G).ema_buffers == "copy" and get_family("biggan").ema_buffers == "average"
    ema_update(G_ema, G, 0.9, buffers="copy")
    assert torch.equal(G_ema.mapping.w_avg, G.mapping.w_avg)  # copied, as stylegan2-ada's G_ema
    assert torch.allclose(G_ema.mapping.fc0.weight, torch.full_like(G.mapping.fc0.weight, 0.1))
    ema_update(G_ema, G, 0.5, buffers="average")
    assert torch.equal(G_ema.mapping.w_avg, G.mapping.w_avg)  # equal already: averaging keeps it
    with torch.no_grad():
        G.mapping.w_avg.fill_(3.0)
    ema_update(G_ema, G, 0.5, buffers="average")
    assert torch.allclose(G_ema.mapping.w_avg, torch.full_like(G.mapping.w_avg, 2.0))


def test_minibatch_std_by_hand():
    x = torch.randn(4, 2, 3, 3)
    out = minibatch_std(x, group_size=2)
    assert out.shape == (4, 3, 3, 3) and torch.equal(out[:, :2], x)
    # Groups are strided: samples {0, 2} and {1, 3}.
    for members in ([0, 2], [1, 3]):
        std = x[members].std(dim=0, unbiased=False).mean()
        assert torch.allclose(out[members, 2], std.expand(2, 3, 3), atol=1e-4)
    with pytest.raises(ValueError, match="divisible"):
        minibatch_std(torch.randn(3, 2, 3, 3), group_size=2)


class Batches:
    def __init__(self, G, n=4):
        self.x, self.y = torch.randn(n, G.config.img_channels, 32, 32), torch.arange(n) % G.config.n_classes
        self.z = torch.randn(n, G.config.z_dim)

    def real(self):
        return self.x, self.y

    def noise(self):
        return self.z, self.y


def objective(G, D, **settings):
    import contextlib

    ctx = Context(torch.device("cpu"), contextlib.nullcontext, None, 1, 4, 0)
    return StyleGAN2Objective(StyleGAN2ObjectiveConfig(**settings), Nets(G, D, G, D, D), ctx)


def test_objective_phases_and_penalties():
    G, D = tiny(mbstd_group=4)
    obj = objective(G, D, r1_gamma=2.0, pl_weight=2.0, style_mixing=0.0)
    assert [(p.name, p.network, p.interval) for p in obj.phases] == [
        ("Gmain", "G", 1), ("Greg", "G", 4), ("Dmain", "D", 1), ("Dreg", "D", 16)]
    assert [p.name for p in objective(G, D, r1_gamma=0.0, pl_weight=0.0).phases] == ["Gmain", "Dmain"]
    batches = Batches(G)
    # R1 by hand: gamma / 2 * |d sum D(x) / dx|^2 per image.
    x = batches.x.clone().requires_grad_(True)
    grads, = torch.autograd.grad(D(x, batches.y).sum(), x)
    loss, values = obj.loss(obj.phases[3], 0, batches)
    assert torch.allclose(values["r1_penalty"], grads.square().sum(dim=[1, 2, 3]).mean(), rtol=1e-4)
    assert torch.allclose(loss, grads.square().sum(dim=[1, 2, 3]).mean(), rtol=1e-4)  # gamma / 2 = 1
    # Non-saturating losses.
    G.eval()  # const noise: the same fakes as below
    with torch.no_grad():
        fake_logits, real_logits = D(G(batches.z, batches.y), batches.y), D(batches.x, batches.y)
    loss, values = obj.loss(obj.phases[2], 0, batches)
    assert torch.allclose(values["d_fake_mean"], fake_logits.mean(), atol=1e-5)
    assert torch.allclose(values["d_real_std"], real_logits.std(), atol=1e-5)
    assert torch.allclose(values["loss_d_fake"], F.softplus(fake_logits).mean(), atol=1e-5)
    assert torch.allclose(values["loss_d_real"], F.softplus(-real_logits).mean(), atol=1e-5)
    # Path length: the running mean moves by pl_decay towards the batch's mean length.
    G.train()
    before = obj.pl_mean.clone()
    loss, values = obj.loss(obj.phases[1], 0, batches)
    assert values["pl_mean"] > 0 and torch.allclose(obj.pl_mean, values["pl_mean"]) and before == 0
    loss.backward()
    assert G.mapping.fc0.weight.grad is not None  # the penalty reaches the mapping through W


def test_path_length_gradient_keeps_the_running_mean_in_the_graph():
    """As stylegan2-ada: the batch's mean length enters the lerped mean with its gradient inside the step."""
    G, D = tiny()
    G.train()
    obj = objective(G, D, pl_weight=2.0, style_mixing=0.0)
    obj.pl_mean.fill_(0.5)
    batches, params = Batches(G), [p for p in G.parameters() if p.requires_grad]
    torch.manual_seed(3)
    loss, _ = obj.loss(obj.phases[1], 0, batches)
    ours = torch.autograd.grad(loss, params, allow_unused=True)

    def by_hand(detach: bool):
        torch.manual_seed(3)
        n = len(batches.z) // 2
        img, ws = G(batches.z[:n], batches.y[:n], return_ws=True)
        noise = torch.randn_like(img) / (img.shape[2] * img.shape[3]) ** 0.5
        grads, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        mean = lengths.mean()
        mean = torch.tensor(0.5).lerp(mean.detach() if detach else mean, 0.01)
        return torch.autograd.grad(((lengths - mean).square() * 2.0).mean(), params, allow_unused=True)

    def distance(a, b):
        pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
        return max(float((x - y).norm() / y.norm().clamp_min(1e-30)) for x, y in pairs)

    assert distance(ours, by_hand(detach=False)) < 1e-5
    assert distance(ours, by_hand(detach=True)) > 1e-4  # the detached form is measurably different


def test_style_mixing_in_training_and_on_sheets():
    G, _ = tiny()
    G.eval()
    z, z2, y = torch.randn(2, G.config.z_dim), torch.randn(2, G.config.z_dim), torch.tensor([0, 1])
    ws = G.map(z, y, mix=(z2, 3))
    assert torch.equal(ws[:, :3], G.map(z, y)[:, :3]) and torch.equal(ws[:, 3:], G.map(z2, y)[:, 3:])
    sheet = style_mixing_sheet(G, 3, range(0, 2), seed=1)
    assert sheet.shape == (16, 1, 32, 32)
    assert torch.all(sheet[0] == 1)  # the blank corner
    rows, cols = sheet[[4, 8, 12]], sheet[1:4]
    assert not torch.allclose(sheet[5], rows[0]) and not torch.allclose(sheet[5], cols[0])
    interp = interpolation_sheet(G, 2, 3, "z", seed=0)
    assert interp.shape == (6, 1, 32, 32)
    biggan, _ = scalegan.create_model("biggan-fmnist", **tiny_overrides("biggan-fmnist"))
    with pytest.raises(ValueError, match="style mixing needs"):
        style_mixing_sheet(biggan.eval(), 2)


def test_sampling_uses_w_truncation_and_is_seeded():
    G, _ = tiny()
    G.eval()
    a = sample(G, 3, y=2, truncation=0.7, seed=4)
    images, z, y = sample(G, 3, y=2, truncation=0.7, seed=4, return_latents=True)
    assert torch.equal(a, images) and torch.equal(z, torch.randn(3, G.config.z_dim,
                                                                generator=torch.Generator().manual_seed(4)))
    with torch.no_grad():
        assert torch.equal(a, G(z, y, truncation=0.7))
    with pytest.raises(ValueError, match="does not apply to stylegan2"):
        sample(G, 1, truncation=0.5, truncation_mode="resample")
    assert float((a - sample(G, 3, y=2, seed=4)).abs().mean()) > 1e-4  # psi 0.7 changed the images


def stylegan_config(npz, out, **kw):
    from scalegan.training import TrainConfig

    overrides = {k: v for k, v in tiny_overrides("stylegan2-fmnist").items() if k != "n_classes"}
    return TrainConfig.from_preset(
        "stylegan2-fmnist", data=f"npz:{npz}", out_dir=str(out), batch_size=4, log_every=1, sample_every=0,
        ckpt_every=0, progress=False, tensorboard=False, precision="float32", model_overrides=overrides,
        objective=dict(r1_gamma=1.0, pl_weight=2.0, g_reg_interval=2, d_reg_interval=2, style_mixing=0.5),
        augment="ada", ada_interval=1, ada_target=0.1, ada_kimg=0.1, **kw)


def test_training_resumes_bit_exactly(tiny_npz, tmp_path):
    """Noise inputs, style mixing, path-length noise, the path-length mean and ADA's p all continue exactly."""
    import json

    from conftest import latest_weights

    from scalegan.training import train

    train(stylegan_config(tiny_npz, tmp_path / "full", iterations=4))
    train(stylegan_config(tiny_npz, tmp_path / "split", iterations=2))
    train(stylegan_config(tiny_npz, tmp_path / "split", iterations=4, resume=True))
    for name in ("G", "D", "G_ema"):
        a, b = latest_weights(tmp_path / "full", name), latest_weights(tmp_path / "split", name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    states = [torch.load(tmp_path / r / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
              for r in ("full", "split")]
    assert torch.equal(states[0]["objective"]["pl_mean"], states[1]["objective"]["pl_mean"])
    assert states[0]["objective"]["pl_mean"] > 0 and states[0]["augment"]["p"] == states[1]["augment"]["p"]
    lines = [json.loads(x) for x in (tmp_path / "full" / "logs" / "metrics.jsonl").read_text().splitlines()][1:]
    assert {"loss_g", "loss_d_real", "loss_d_fake", "pl_penalty", "r1_penalty", "augment_p"} <= set(lines[0])
    assert [("pl_penalty" in x, "r1_penalty" in x) for x in lines] == [(True, True), (False, False)] * 2


def test_conv_clamp_bounds_every_layer_output():
    """conv_clamp limits the outputs of every conv (after the activation and its gain) to +-conv_clamp."""
    G, D = tiny(conv_clamp=0.5)
    G.eval()
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in G.modules()
             if type(m).__name__ in ("SynthesisLayer", "ToRGBLayer")]
    with torch.no_grad():
        G(torch.randn(4, G.config.z_dim) * 10, torch.tensor([0, 1, 2, 3]))
    for h in hooks:
        h.remove()
    assert max(float(o.abs().max()) for o in outputs) == pytest.approx(0.5)


def test_lecam_is_available_to_stylegan2():
    G, D = tiny(mbstd_group=4)
    G.eval()
    batches = Batches(G)
    plain, with_lecam = objective(G, D, style_mixing=0.0), objective(G, D, style_mixing=0.0, lecam=0.3)
    loss, _ = plain.loss(plain.phases[2], 0, batches)
    loss_lecam, _ = with_lecam.loss(with_lecam.phases[2], 0, batches)
    with torch.no_grad():
        d_fake, d_real = D(G(batches.z, batches.y), batches.y), D(batches.x, batches.y)
    # First step: the anchors are this batch's means.
    term = torch.relu(d_real - d_fake.mean()).pow(2).mean() + torch.relu(d_real.mean() - d_fake).pow(2).mean()
    assert torch.allclose(loss_lecam - loss, 0.3 * term, atol=1e-5)
    assert with_lecam.state_dict()["lecam"]["anchor_real"] is not None
    restored = objective(G, D, lecam=0.3)
    restored.load_state_dict(with_lecam.state_dict())
    assert torch.equal(restored.lecam.anchor_fake, with_lecam.lecam.anchor_fake)


def test_d_input_blur_by_hand_and_its_fade():
    from scalegan.objectives.stylegan2 import gaussian_blur

    impulse = torch.zeros(1, 2, 15, 15)
    impulse[:, :, 7, 7] = 1
    out = gaussian_blur(impulse, 1.0)  # radius floor(3 * 1) = 3: weights 2^-(x^2) for x in -3..3, normalised
    f = torch.tensor([2.0 ** -(x * x) for x in range(-3, 4)])
    f = f / f.sum()
    assert torch.allclose(out[0, 0, 4:11, 4:11], torch.outer(f, f), atol=1e-7) and torch.equal(out[0, 0], out[0, 1])
    assert out[0, 0].sum().item() == pytest.approx(1.0) and out[0, 0, :4].abs().max() == 0
    assert torch.equal(gaussian_blur(impulse, 0.3), impulse)  # radius 0: nothing to blur
    G, D = tiny(mbstd_group=4)
    seen = []
    D.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    obj = objective(G, D, blur_sigma=10.0, blur_fade_kimg=0.008, r1_gamma=1.0)  # 8 images: two iterations of 4
    batches = Batches(G)
    sigmas = []
    for _ in range(4):
        for phase in obj.phases:
            obj.loss(phase, 0, batches)
        sigmas.append(obj.blur_sigma())
    assert sigmas == [10.0, 5.0, 0.0, 0.0]  # from the images seen before each iteration
    # The last iteration's D passes (fake, real, then R1's real) saw the images unblurred; the first's blurred.
    assert torch.equal(seen[-1], batches.x) and torch.equal(seen[-2], batches.x)
    first_real = seen[2]  # Gmain's D pass, then Dmain's fake and real passes
    assert torch.allclose(first_real, gaussian_blur(batches.x, 10.0))
    restored = objective(G, D, blur_sigma=10.0, blur_fade_kimg=0.008)
    restored.load_state_dict(obj.state_dict())
    assert restored.steps == 4
    with pytest.raises(ValueError, match="blur_sigma"):
        StyleGAN2ObjectiveConfig(blur_sigma=-1.0)
