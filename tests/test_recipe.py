"""Training options of the CPU recipe: DiffAugment, LeCam, the half-life EMA, pyramid channel widths."""

import pytest
import torch
from conftest import latest_weights
from test_training import TINY, tiny_config

from scalegan import create_model
from scalegan.augment import color, cutout, diff_augment, parse_policy, translation
from scalegan.regularizers import LeCam
from scalegan.training import train
from scalegan.training.ema import ema_beta


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_augmentations_are_differentiable_and_seeded(policy):
    x = torch.randn(6, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, policy, _gen())
    assert out.shape == x.shape
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0  # gradients reach the input
    assert torch.equal(out, diff_augment(x, policy, _gen()))  # the generator decides everything
    assert not torch.equal(out, diff_augment(x, policy, _gen(1)))


def test_translation_shifts_whole_images_with_zero_fill():
    x = torch.arange(1, 1 + 2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    out = translation(x, generator=_gen(3))
    for i in range(2):
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        shifts = [(dy, dx) for dy in range(5) for dx in range(5)
                  if torch.equal(out[i], padded[:, dy:dy + 16, dx:dx + 16])]
        assert len(shifts) == 1  # a shift of at most 16/8 = 2 pixels, vacated pixels 0


def test_cutout_zeroes_one_square_of_at_most_a_quarter():
    x = torch.ones(64, 1, 16, 16)
    out = cutout(x, generator=_gen())
    zeroed = (out == 0).float().mean(dim=(1, 2, 3))
    assert zeroed.max() <= 0.25 and zeroed.min() > 0 and zeroed.mean() > 0.1
    assert torch.equal(color(torch.zeros(2, 1, 4, 4), _gen()).std(dim=(1, 2, 3)), torch.zeros(2))  # flat stays flat
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_policy("translation,flip")


def test_augmentation_is_applied_to_real_and_fake_alike_in_d_and_g_steps():
    import contextlib

    from test_training import FixedBatches

    from scalegan.objectives import Context, Nets
    from scalegan.objectives.biggan import BigGANObjective, BigGANObjectiveConfig

    G, D = create_model("biggan-fmnist", **TINY, n_classes=3, img_channels=1)
    seen = []

    def augment(images):
        seen.append(images)
        return images.flip(3)

    ctx = Context(torch.device("cpu"), contextlib.nullcontext, augment, 1, 4, 0)
    objective = BigGANObjective(BigGANObjectiveConfig(), Nets(G, D, G, D, D), ctx)
    x, y = torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0])
    z, y_fake = torch.randn(4, G.config.z_dim), torch.tensor([1, 1, 2, 0])
    D_phase, G_phase = objective.phases
    objective.loss(D_phase, 0, FixedBatches(x, y, z, y_fake, 1))
    assert len(seen) == 1 and seen[0].shape[0] == 8 and torch.equal(seen[0][4:], x)  # fakes first, then reals
    loss, _ = objective.loss(G_phase, 0, FixedBatches(None, None, z, y_fake, 1))
    assert len(seen) == 2 and seen[1].shape[0] == 4 and seen[1].requires_grad  # G's gradient goes through it
    loss.backward()
    assert G.output_conv.weight.grad is not None


@pytest.mark.parametrize("model", ["biggan-fmnist", "biggan-deep-fmnist"])
def test_projection_class_logits_are_the_class_part_of_d(model):
    G, D = create_model(model, **TINY, n_classes=3, img_channels=1)
    D.eval()  # no power iteration: every call sees the same weights
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        out, classes = D(x, y, classes=True)
        assert torch.equal(out, D(x, y)) and classes.shape == (4, 3)
        # D(x, c) - D(x, c') = the class logits' difference: the shared linear part cancels.
        per_class = torch.stack([D(x, torch.full((4,), c)) for c in range(3)], 1)
    assert torch.allclose(per_class - per_class[:, :1], classes - classes[:, :1], atol=1e-4, rtol=1e-5)


def test_class_loss_adds_the_projection_cross_entropy_to_both_phases(capsys):
    import contextlib

    from test_training import FixedBatches

    from scalegan.objectives import Context, Nets
    from scalegan.objectives.biggan import BigGANObjective, BigGANObjectiveConfig

    G, D = create_model("biggan-fmnist", **TINY, n_classes=3, img_channels=1)
    D.eval()  # fixed spectral-norm vectors, so the two objectives see the same D
    ctx = Context(torch.device("cpu"), contextlib.nullcontext, None, 1, 4, 0)
    plain = BigGANObjective(BigGANObjectiveConfig(), Nets(G, D, G, D, D), ctx)
    with_class = BigGANObjective(BigGANObjectiveConfig(class_loss=0.5), Nets(G, D, G, D, D), ctx)
    x, y = torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0])
    z, y_fake = torch.randn(4, G.config.z_dim), torch.tensor([1, 1, 2, 0])
    G.eval()
    with torch.no_grad():
        fake = G(z, y_fake)
        real_ce = torch.nn.functional.cross_entropy(D(x, y, classes=True)[1], y)
        fake_ce = torch.nn.functional.cross_entropy(D(fake, y_fake, classes=True)[1], y_fake)
    for phase, ce, key in zip(plain.phases, (real_ce, fake_ce), ("loss_d_class", "loss_g_class")):
        loss, _ = plain.loss(phase, 0, FixedBatches(x, y, z, y_fake, 1))
        loss_class, stats = with_class.loss(phase, 0, FixedBatches(x, y, z, y_fake, 1))
        assert stats[key].item() == pytest.approx(ce.item(), rel=1e-4)  # D: reals only; G: its fakes
        assert (loss_class - loss).item() == pytest.approx(0.5 * ce.item(), rel=1e-4)
    with pytest.raises(ValueError, match="class_loss must be >= 0"):
        BigGANObjectiveConfig(class_loss=-1)
    G, D = create_model("biggan-fmnist", **TINY, n_classes=0, img_channels=1)  # unconditional: off, with a note
    assert not BigGANObjective(BigGANObjectiveConfig(class_loss=0.5), Nets(G, D, G, D, D), ctx).classes
    assert "class_loss 0.5 is off: the model is unconditional" in capsys.readouterr().err


def test_lecam_penalty_by_hand():
    reg = LeCam(weight=0.5, decay=0.9)
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    # First call: anchors = the batch means (2, -0.5). relu(real - (-0.5))^2 = 2.25, 12.25; relu(2 - fake)^2 = 9, 4.
    assert reg(d_real, d_fake).item() == pytest.approx(0.5 * (7.25 + 6.5))
    reg(torch.tensor([4.0, 4.0]), torch.tensor([0.0, 0.0]))
    assert reg.anchor_real.item() == pytest.approx(0.9 * 2 + 0.1 * 4) and reg.anchor_fake.item() == pytest.approx(-0.45)


def test_augment_and_lecam_state_resume_exactly(tiny_npz, tmp_path):
    kw = dict(augment="translation,cutout", lecam=0.3, ema_halflife_kimg=0.1, n_d_steps=1)
    train(tiny_config(tiny_npz, tmp_path / "full", iterations=4, **kw))
    train(tiny_config(tiny_npz, tmp_path / "split", iterations=2, **kw))
    # Checkpoints written before ADA kept only the augmentation generator, as "augment_rng": they resume exactly.
    path = tmp_path / "split" / "checkpoints" / "step_0000002" / "state.pt"
    state = torch.load(path, weights_only=True)
    state["augment_rng"] = state.pop("augment")["generator"]
    torch.save(state, path)
    (path.parent / "manifest.json").unlink()  # nor had they manifests
    train(tiny_config(tiny_npz, tmp_path / "split", iterations=4, resume=True, **kw))
    for name in ("G", "D", "G_ema"):
        a, b = latest_weights(tmp_path / "full", name), latest_weights(tmp_path / "split", name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    state = torch.load(tmp_path / "split" / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
    assert state["objective"]["lecam"]["anchor_real"] is not None and state["augment"]["generator"] is not None
    # The options do something: without them the weights differ.
    train(tiny_config(tiny_npz, tmp_path / "plain", iterations=4, n_d_steps=1, ema_halflife_kimg=0.1))
    plain = latest_weights(tmp_path / "plain", "D")
    full = latest_weights(tmp_path / "full", "D")
    assert any(not torch.equal(plain[k], full[k]) for k in plain)


def test_half_life_ema():
    # stylegan2-ada: beta = 0.5 ** (batch / halflife), halflife = min(kimg * 1000, rampup * images seen).
    assert ema_beta(100, 10, halflife_kimg=100, rampup=0.05) == pytest.approx(0.5 ** (10 / 50))
    assert ema_beta(10**6, 10, halflife_kimg=1, rampup=0.05) == pytest.approx(0.5 ** (10 / 1000))
    assert ema_beta(10**6, 10, halflife_kimg=1, rampup=0.0) == pytest.approx(0.5 ** (10 / 1000))
    # BigGAN-PyTorch's form from the same function: a copy before ``start``, then the constant decay.
    assert ema_beta(4, 10, decay=0.999, start=5) == 0.0 and ema_beta(5, 10, decay=0.999, start=5) == 0.999


def test_half_life_ema_in_training(tiny_npz, tmp_path):
    train(tiny_config(tiny_npz, tmp_path / "hl", iterations=3, ema_halflife_kimg=0.016, ema_rampup=0.0))
    train(tiny_config(tiny_npz, tmp_path / "copy", iterations=3, ema_halflife_kimg=1e-9, ema_rampup=0.0))
    G = latest_weights(tmp_path / "hl", "G")
    ema, copied = latest_weights(tmp_path / "hl", "G_ema"), latest_weights(tmp_path / "copy", "G_ema")
    # A tiny half-life makes the average a copy of G; 16 images (one batch) a real average that differs from G.
    copy_G = latest_weights(tmp_path / "copy", "G")
    assert all(torch.equal(copied[k], copy_G[k]) for k in copied if copied[k].is_floating_point())
    assert any(not torch.equal(ema[k], G[k]) for k in ema if ema[k].is_floating_point())


def test_pyramid_widths():
    G, D = create_model("biggan-fmnist", g_mult=(4, 2, 1), d_mult=(1, 2, 4, 4))
    assert G.output_bn.num_features == G.config.ch  # 32 px stage: ch * 1
    assert G(torch.randn(2, G.config.z_dim), torch.tensor([0, 1])).shape == (2, 1, 32, 32)
    assert D(torch.randn(2, 1, 32, 32), torch.tensor([0, 1])).shape[0] == 2
    flat = create_model("biggan-fmnist", g_mult=(), d_mult=())[0]
    assert sum(p.numel() for p in G.parameters()) < sum(p.numel() for p in flat.parameters())
    with pytest.raises(ValueError, match="g_mult needs 3 positive multipliers"):
        create_model("biggan-fmnist", g_mult=(4, 2))


def test_biggan_deep_pyramid_widths():
    G, D = create_model("biggan-deep-fmnist")
    ch, d_ch = G.config.ch, D.config.d_ch
    assert [b.out_ch for b in G.blocks] == [m * ch for m in G.config.g_mult[1:]]
    assert G.output_bn.num_features == ch and D.input_conv.out_channels == d_ch  # 32 px: the narrowest stage
    x = G(torch.randn(2, G.config.z_dim), torch.tensor([0, 1]))
    assert x.shape == (2, 1, 32, 32) and D(x, torch.tensor([0, 1])).shape == (2,)
    assert D.linear.in_features == D.config.d_mult[-1] * d_ch
    with pytest.raises(ValueError, match="d_mult needs 8 positive multipliers at 32 px"):
        create_model("biggan-deep-fmnist", d_mult=(1, 2, 4))


def test_learning_rate_schedules_by_hand():
    from scalegan.training.config import OptimConfig

    assert OptimConfig().factor(0.7) == 1.0  # constant
    linear, cosine = OptimConfig(schedule="linear", final=0.2), OptimConfig(schedule="cosine", final=0.2)
    assert [linear.factor(t) for t in (0, 0.5, 1, 2)] == pytest.approx([1.0, 0.6, 0.2, 0.2])
    assert [cosine.factor(t) for t in (0, 0.5, 1)] == pytest.approx([1.0, 0.6, 0.2])
    assert cosine.factor(0.25) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + 2 ** -0.5))
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        OptimConfig(schedule="step").validate()


def test_learning_rate_schedule_in_training_resumes_exactly(tiny_npz, tmp_path, monkeypatch):
    from scalegan.training import loop

    kw = dict(lr_schedule="linear", lr_final=0.0, lr_horizon=4, n_d_steps=1)
    seen = []
    monkeypatch.setattr(loop.Run, "_update_ema", lambda self: seen.append(
        (self.step, self.optimizers["G"].param_groups[0]["lr"], self.optimizers["D"].param_groups[0]["lr"])))
    train(tiny_config(tiny_npz, tmp_path / "full", iterations=4, **kw))
    # Set before each iteration from the steps done: 1, 3/4, 1/2, 1/4 of the preset's rates (4e-4, 8e-4).
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert [g for _, g, _ in seen] == pytest.approx([4e-4, 3e-4, 2e-4, 1e-4])
    assert [d for _, _, d in seen] == pytest.approx([8e-4, 6e-4, 4e-4, 2e-4])
    monkeypatch.undo()
    train(tiny_config(tiny_npz, tmp_path / "full2", iterations=4, **kw))
    train(tiny_config(tiny_npz, tmp_path / "split", iterations=2, **kw))
    train(tiny_config(tiny_npz, tmp_path / "split", iterations=4, resume=True, **kw))
    a, b = latest_weights(tmp_path / "full2", "G"), latest_weights(tmp_path / "split", "G")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(tiny_config(tiny_npz, tmp_path / "constant", iterations=4, n_d_steps=1))
    c = latest_weights(tmp_path / "constant", "G")
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the schedule changed the run


def test_a_time_budget_fixes_the_decay_horizon_once_and_resume_stays_exact(tiny_npz, tmp_path, monkeypatch):
    import os
    import signal
    import types

    from scalegan.training import loop

    # A clock that advances 0.5 s per reading: every iteration takes 0.5 s of training time, so the 5 s budget
    # ends the run at step 10. The speed is measured over steps 1-3, and the horizon fixed then: 0.95 x 10 -> 9.
    clock = iter(range(10**6))
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: 0.5 * next(clock)))
    monkeypatch.setattr(loop, "HORIZON_WARMUP", 1)
    monkeypatch.setattr(loop, "HORIZON_SPAN", 2)
    kw = dict(lr_schedule="linear", lr_final=0.0, n_d_steps=1, time_budget=5.0)
    seen = []
    update_ema = loop.Run._update_ema
    monkeypatch.setattr(loop.Run, "_update_ema", lambda self: (
        seen.append(self.optimizers["G"].param_groups[0]["lr"]), update_ema(self)))
    summary = train(tiny_config(tiny_npz, tmp_path / "full", iterations=20, **kw))
    assert summary["step"] == 10 and summary["lr_horizon"] == 9 and summary["stopped_by"] == {"time_budget": 5.0}
    # Steps 0-2 at the full rates (nothing measured yet), steps 3-9 decaying over the fixed 9.
    expected = [1.0] * 3 + [max(1 - s / 9, 0.0) for s in range(3, 10)]
    assert seen == pytest.approx([4e-4 * f for f in expected])
    state = torch.load(tmp_path / "full" / "checkpoints" / "step_0000010" / "state.pt", weights_only=True)
    assert (state["lr_horizon"], state["lr_horizon_budget"]) == (9, 5.0)
    # Preempted at step 5 (SIGTERM, after the horizon was fixed) and resumed: the same rates, the same weights.
    monkeypatch.setattr(loop.Run, "_update_ema", lambda self: (
        update_ema(self), self.step == 5 and os.kill(os.getpid(), signal.SIGTERM)))
    summary = train(tiny_config(tiny_npz, tmp_path / "split", iterations=20, **kw))
    assert summary["step"] == 5 and "signal" in str(summary["stopped_by"])
    summary = train(tiny_config(tiny_npz, tmp_path / "split", iterations=20, resume=True, **kw))
    assert summary["step"] == 10 and summary["lr_horizon"] == 9
    a, b = latest_weights(tmp_path / "full", "G"), latest_weights(tmp_path / "split", "G")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Continued with a larger budget: measured again (steps 11-13), 0.95 x 20 iterations -> 19.
    longer = {**kw, "time_budget": 10.0}
    summary = train(tiny_config(tiny_npz, tmp_path / "split", iterations=20, resume=True, **longer))
    assert summary["step"] == 20 and summary["lr_horizon"] == 19


def test_biggan_r1_is_a_lazy_d_phase_with_the_penalty_by_hand(tiny_npz, tmp_path):
    import json

    from scalegan.regularizers import r1_loss

    D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
    x = torch.randn(3, 1, 2, 2)
    loss, penalty = r1_loss(lambda images, y: D(images), x, None, gamma=4.0)
    # D is linear: the gradient with respect to every image is D's weight; gamma / 2 * |w|^2.
    assert loss.item() == pytest.approx(2.0 * D[1].weight.square().sum().item(), rel=1e-5)
    assert penalty.item() == pytest.approx(D[1].weight.square().sum().item(), rel=1e-5)
    run = tmp_path / "r1"
    train(tiny_config(tiny_npz, run, iterations=4, n_d_steps=1, r1_gamma=0.1, d_reg_interval=2, log_every=1))
    lines = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    r1 = [line["step"] for line in lines if "r1_penalty" in line]
    assert r1 == [1, 3]  # the phase runs at steps 0 and 2 (logged after them as 1 and 3)
    from scalegan.objectives.biggan import BigGANObjectiveConfig

    with pytest.raises(ValueError, match="r1_gamma must be >= 0"):
        BigGANObjectiveConfig(r1_gamma=-1.0)


def test_ema_update_averages_floats_and_copies_the_rest():
    from scalegan.training.ema import ema_update

    model, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(4.0)
        model.num_batches_tracked.fill_(7)
    ema_update(ema, model, beta=0.75)
    assert torch.allclose(ema.weight, torch.full((3,), 0.75 * 1 + 0.25 * 2))
    assert torch.allclose(ema.running_mean, torch.full((3,), 0.25 * 4))
    assert ema.num_batches_tracked.item() == 7  # integers are copied
    ema_update(ema, model, beta=0.5, buffers="copy")
    assert torch.allclose(ema.running_mean, torch.full((3,), 4.0)) and torch.allclose(ema.weight,
                                                                                      torch.full((3,), 1.625))
