"""The training loop on a tiny model and dataset: outputs, exact resume, bf16, losses, budgets."""

import json
import math

import pytest
import torch
from conftest import latest_weights, loss_lines, rms_difference

import scalegan
from scalegan.training import train
from scalegan.training.config import TrainConfig

TINY = dict(ch=8, d_ch=8, z_dim=16, shared_dim=16)


def tiny_config(npz, out, **kw):
    base = dict(data=f"npz:{npz}", out_dir=str(out), iterations=4, batch_size=16, n_d_steps=2, ema_start=2,
                log_every=2, sample_every=2, ckpt_every=0, progress=False, tensorboard=False,
                model_overrides=dict(TINY))
    return TrainConfig.from_preset("biggan-fmnist", **{**base, **kw})


weights = latest_weights


def test_train_writes_a_complete_run(tiny_npz, tmp_path):
    run = tmp_path / "run"
    summary = train(tiny_config(tiny_npz, run, tensorboard=True, standing_stats=2))
    assert summary["step"] == 4
    assert (run / "samples" / "final.png").is_file() and (run / "samples" / "iter_000002.png").is_file()
    assert list((run / "logs").glob("events.out.tfevents.*"))
    lines = loss_lines(run)
    assert [x["step"] for x in lines] == [2, 4]
    assert all(math.isfinite(x[k]) for x in lines for k in ("loss_d_real", "loss_d_fake", "loss_g", "img_per_s"))
    # Early signs of collapse: spectral norms of G's and D's layers, D's logits on reals and fakes.
    for x in lines:
        assert x["sv_G_max"] >= x["sv_G_mean"] > 0 and x["sv_D_max"] >= x["sv_D_mean"] > 0
        assert all(math.isfinite(x[k]) for k in ("d_real_mean", "d_real_std", "d_fake_mean", "d_fake_std"))
    from scalegan.layers import SpectralNorm
    from scalegan.training.loop import singular_values

    G, _ = scalegan.create_model("biggan-fmnist", **TINY)
    svs = [float(m.sv) for m in G.modules() if isinstance(m, SpectralNorm)]
    with torch.no_grad():
        next(m for m in G.modules() if isinstance(m, SpectralNorm)).sv.fill_(7.0)
    assert singular_values(G, "G") == {"sv_G_max": 7.0, "sv_G_mean": pytest.approx((sum(svs[1:]) + 7) / len(svs))}
    resolved = json.loads((run / "train_config.json").read_text())
    assert resolved["model"]["n_classes"] == 3  # follows the dataset, not the preset's 10
    assert resolved["train"]["iterations"] == 4
    state = torch.load(run / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
    assert state["step"] == 4 and set(state) >= {"opt_G", "opt_D", "noise_rng", "stream"}
    G, info = scalegan.load(run)
    assert G.config.n_classes == 3 and info.class_names == ("top", "middle", "bottom")
    assert scalegan.sample(G, 2, y=1, seed=0).shape == (2, 1, 32, 32)
    # model.safetensors is the EMA generator with standing statistics, so differs from G_ema only in BN stats.
    model, ema = weights(run, "model"), weights(run, "G_ema")
    assert all(torch.equal(model[k], ema[k]) for k in model if "running" not in k and "num_batches" not in k)
    assert any(not torch.equal(model[k], ema[k]) for k in model if "running_mean" in k)


def test_resume_is_exact(tiny_npz, tmp_path):
    full = tmp_path / "full"
    train(tiny_config(tiny_npz, full, iterations=6))
    split = tmp_path / "split"
    train(tiny_config(tiny_npz, split, iterations=3))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tiny_npz, split, iterations=6))
    summary = train(tiny_config(tiny_npz, split, iterations=6, resume=True))
    assert summary["step"] == 6 and summary["iterations_this_session"] == 3
    for name in ("G", "D", "G_ema"):
        a, b = weights(full, name), weights(split, name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    sa = torch.load(full / "checkpoints" / "step_0000006" / "state.pt", weights_only=True)
    sb = torch.load(split / "checkpoints" / "step_0000006" / "state.pt", weights_only=True)
    assert torch.equal(sa["noise_rng"], sb["noise_rng"]) and sa["stream"] == sb["stream"]


def test_resume_refuses_a_different_model(tiny_npz, tmp_path):
    train(tiny_config(tiny_npz, tmp_path, iterations=1))
    with pytest.raises(ValueError, match="model config differs"):
        train(tiny_config(tiny_npz, tmp_path, iterations=2, resume=True, model_overrides={**TINY, "ch": 16}))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tiny_npz, tmp_path / "other", resume=True))


def test_seeded_runs_are_reproducible(tiny_npz, tmp_path):
    train(tiny_config(tiny_npz, tmp_path / "a", iterations=2))
    train(tiny_config(tiny_npz, tmp_path / "b", iterations=2))
    train(tiny_config(tiny_npz, tmp_path / "c", iterations=2, seed=1))
    a, b, c = (weights(tmp_path / r, "G") for r in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bf16_channels_last(tiny_npz, tmp_path):
    summary = train(tiny_config(tiny_npz, tmp_path, iterations=3, precision="bf16", channels_last=True))
    lines = loss_lines(tmp_path)
    assert summary["step"] == 3 and all(math.isfinite(x["loss_g"]) for x in lines)
    G = weights(tmp_path, "G")
    assert all(v.dtype in (torch.float32, torch.int64) for v in G.values())  # master weights stay float32


def test_unconditional_and_no_ema(tiny_npz, tmp_path):
    summary = train(tiny_config(tiny_npz, tmp_path, iterations=2, ema=False, model_overrides={**TINY, "n_classes": 0}))
    assert summary["step"] == 2
    files = {p.stem for p in (tmp_path / "checkpoints" / "step_0000002").iterdir()}
    assert "G_ema" not in files
    G, info = scalegan.load(tmp_path)
    assert G.config.n_classes == 0 and info.n_classes == 0 and info.class_names == ()
    # Without EMA the sampling generator is G itself.
    model, G_file = weights(tmp_path, "model"), weights(tmp_path, "G")
    assert all(torch.equal(model[k], G_file[k]) for k in model)


def test_time_budget_stops_with_a_checkpoint(tiny_npz, tmp_path):
    summary = train(tiny_config(tiny_npz, tmp_path, iterations=1000, time_budget=1e-9))
    assert summary["step"] == 1 and summary["stopped_by"] == {"time_budget": 1e-9}
    assert (tmp_path / "checkpoints" / "step_0000001").is_dir()


def test_invalid_configs_are_clear(tiny_npz, tmp_path):
    with pytest.raises(ValueError, match="loss must be one of"):
        train(tiny_config(tiny_npz, tmp_path, loss="wgan"))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        train(tiny_config(tiny_npz, tmp_path, batch_size=0))
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(tiny_config(tiny_npz, tmp_path, batch_size=1000))
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"learning_rate": 1})


class FixedBatches:
    """The ``Draw`` of the loop, from fixed tensors split into ``acc`` micro-batches (taken in order)."""

    def __init__(self, x, y, z, y_fake, acc):
        self.reals = list(zip(x.chunk(acc), y.chunk(acc))) if x is not None else []
        self.noises = list(zip(z.chunk(acc), y_fake.chunk(acc)))

    def real(self):
        return self.reals.pop(0)

    def noise(self):
        return self.noises.pop(0)


def biggan_objective(G, D, acc, **settings):
    import contextlib

    from scalegan.objectives import Context, Nets
    from scalegan.objectives.biggan import BigGANObjective, BigGANObjectiveConfig

    ctx = Context(torch.device("cpu"), contextlib.nullcontext, None, acc, 16 // acc, 0)
    return BigGANObjective(BigGANObjectiveConfig(**{"n_d_steps": 1, **settings}), Nets(G, D, G, D, D), ctx)


def _step(objective, network, batches, acc, steps=1):
    from scalegan.training.loop import phase_step

    phase = next(p for p in objective.phases if p.network == network)
    net = objective.nets.G if network == "G" else objective.nets.D
    opt = torch.optim.Adam(net.parameters(), 2e-4, betas=(0.0, 0.999), eps=1e-6)
    for _ in range(steps):
        values = phase_step(objective, phase, opt, torch.amp.GradScaler("cpu", enabled=False), acc,
                            FixedBatches(*batches, acc))
    return values


def _d_after_steps(D, G, batches, acc, per_step_power_iteration=True, steps=3):
    import copy

    D = copy.deepcopy(D).train()
    objective = biggan_objective(G, D, acc)
    objective.power_iteration["D"].enabled = per_step_power_iteration
    _step(objective, "D", batches, acc, steps)
    return D.state_dict()


_rms = rms_difference


def test_d_accumulation_is_exact():
    """D has no batch statistics, so 2 or 4 micro-batches equal one batch up to float rounding (measured: ~2e-9
    RMS, 3e-7 max after 3 Adam steps), given the same fakes (G in eval mode here) and one spectral-norm power
    iteration per step. With BigGAN-PyTorch's one iteration per forward they differ by ~2e-4 RMS."""
    torch.manual_seed(0)
    G, D = scalegan.create_model("biggan-fmnist", **TINY, n_classes=3)
    G.eval()
    batches = (torch.rand(16, 1, 32, 32) * 2 - 1, torch.randint(0, 3, (16,)), torch.randn(16, 16),
               torch.randint(0, 3, (16,)))
    whole = _d_after_steps(D, G, batches, 1)
    for acc in (2, 4):
        split = _d_after_steps(D, G, batches, acc)
        assert _rms(whole, split) < 1e-7
        assert max((whole[k] - split[k]).abs().max().item() for k in whole if whole[k].is_floating_point()) < 1e-5
        assert max((whole[k] - split[k]).abs().max().item() for k in whole if k.endswith(".u")) < 1e-6
    per_forward = _d_after_steps(D, G, batches, 2, per_step_power_iteration=False)
    assert _rms(whole, per_forward) > 1e-5


def test_g_accumulation_is_not_exact_because_of_batch_statistics():
    """G normalises each micro-batch with its own BN statistics: accumulation changes its update (documented)."""
    import copy

    torch.manual_seed(0)
    G, D = scalegan.create_model("biggan-fmnist", **TINY, n_classes=3)
    z, y = torch.randn(16, 16), torch.randint(0, 3, (16,))
    states = []
    for acc in (1, 2):
        Gc = copy.deepcopy(G).train()
        _step(biggan_objective(Gc, D, acc), "G", (None, None, z, y), acc)
        states.append(Gc.state_dict())
    assert _rms(*states) > 1e-6


@pytest.mark.parametrize("loss", ["hinge", "ce"])
def test_the_configured_loss_is_the_one_optimised(loss):
    """The D phase's logged terms are the chosen loss of D's logits on the real and generated batch."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    G, D = scalegan.create_model("biggan-fmnist", **TINY, n_classes=3)
    G.eval()
    x, y, z, y_fake = torch.rand(8, 1, 32, 32) * 2 - 1, torch.randint(0, 3, (8,)), torch.randn(8, 16), \
        torch.randint(0, 3, (8,))
    with torch.no_grad():
        d_real, d_fake = D(x, y), D(G(z, y_fake), y_fake)  # before the step: the loss is of these logits
    values = _step(biggan_objective(G, D, 1, loss=loss), "D", (x, y, z, y_fake), 1)
    expected = ((F.relu(1 - d_real).mean(), F.relu(1 + d_fake).mean()) if loss == "hinge" else
                (F.softplus(-d_real).mean(), F.softplus(d_fake).mean()))
    assert torch.allclose(values["loss_d_real"], expected[0], atol=1e-5)
    assert torch.allclose(values["loss_d_fake"], expected[1], atol=1e-5)


def test_orthogonal_regularisation_is_applied(tiny_npz, tmp_path):
    """g_ortho / d_ortho add BigGAN's penalty to the phase of their network only: after one iteration from the same
    seed, the regularised network differs from the plain run and the other is unchanged until it sees the change."""
    from scalegan.regularizers import class_embeddings, orthogonal_penalty

    torch.manual_seed(0)
    G, D = scalegan.create_model("biggan-fmnist", **TINY, n_classes=3)
    objective = biggan_objective(G, D, 1, g_ortho=1e-3)
    G_phase, D_phase = objective.phases[1], objective.phases[0]
    assert objective.penalty(D_phase) is None
    assert torch.equal(objective.penalty(G_phase), orthogonal_penalty(G, 1e-3, class_embeddings(G)))
    common = dict(iterations=1, sample_every=0, precision="float32", n_d_steps=1, ema=False)
    for name, kw in (("plain", {}), ("g", dict(g_ortho=1.0)), ("d", dict(d_ortho=1.0))):
        train(tiny_config(tiny_npz, tmp_path / name, **common, **kw))
    plain = {n: weights(tmp_path / "plain", n) for n in ("G", "D")}
    g_run = {n: weights(tmp_path / "g", n) for n in ("G", "D")}
    d_run = {n: weights(tmp_path / "d", n) for n in ("G", "D")}
    assert _rms(plain["D"], g_run["D"]) == 0 and _rms(plain["G"], g_run["G"]) > 1e-6  # D steps first
    assert _rms(plain["D"], d_run["D"]) > 1e-6


def test_bf16_tracks_float32(tiny_npz, tmp_path):
    """bf16 autocast (8-bit mantissa) against float32, same seed, 8 iterations of batch 16 (lr 5e-5: this tiny GAN
    is chaotic at larger steps, where any rounding difference soon changes its trajectory). Sized for CPUs that
    emulate bf16 (~50x slower than float32 on AVX2-only CPUs). Every loss and weight stays finite; the mean
    absolute loss difference stays under 5% of the mean loss magnitude and G's weights within 1% relative RMS
    (measured 0.4% and 0.07% on a Sapphire Rapids CPU). Another seed, in float32, is 58% and 125% off: the
    bounds detect a different run."""
    runs = {}
    common = dict(iterations=8, log_every=1, sample_every=0, batch_size=16, lr_g=5e-5, lr_d=5e-5)
    for name, kw in (("fp32", dict(precision="float32")), ("bf16", dict(precision="bf16", channels_last=True)),
                     ("seed1", dict(precision="float32", seed=1))):
        train(tiny_config(tiny_npz, tmp_path / name, **common, **kw))
        lines = loss_lines(tmp_path / name)
        losses = torch.tensor([[x["loss_d_real"], x["loss_d_fake"], x["loss_g"]] for x in lines])
        runs[name] = losses, weights(tmp_path / name, "G"), weights(tmp_path / name, "D")
    for losses, G, D in runs.values():
        assert torch.isfinite(losses).all() and len(losses) == 8
        assert all(torch.isfinite(v).all() for w in (G, D) for v in w.values() if v.is_floating_point())

    def gaps(a, b):
        (la, ga, _), (lb, gb, _) = runs[a], runs[b]
        loss_gap = ((la - lb).abs().mean() / la.abs().mean()).item()
        return loss_gap, _rms(ga, gb) / _rms(ga, {k: v * 0 for k, v in ga.items()})

    loss_gap, weight_gap = gaps("fp32", "bf16")
    other_loss, other_weights = gaps("fp32", "seed1")
    assert loss_gap < 0.05 and weight_gap < 0.01, (loss_gap, weight_gap)
    assert other_loss > 0.2 and other_weights > 0.2


def test_fp16_with_loss_scaling_trains_and_resumes(tiny_npz, tmp_path):
    summary = train(tiny_config(tiny_npz, tmp_path, iterations=3, precision="fp16"))
    lines = loss_lines(tmp_path)
    assert summary["step"] == 3 and all(math.isfinite(x["loss_g"]) for x in lines)
    state = torch.load(tmp_path / "checkpoints" / "step_0000003" / "state.pt", weights_only=True)
    assert state["scaler_G"]["scale"] > 0 and state["scaler_D"]["scale"] > 0  # the loss scales are saved
    assert train(tiny_config(tiny_npz, tmp_path, iterations=4, precision="fp16", resume=True))["step"] == 4
    with pytest.raises(ValueError, match="precision must be one of"):
        train(tiny_config(tiny_npz, tmp_path / "bad", precision="half"))
    assert TrainConfig.from_dict({"bf16": True}).precision == "bf16"  # configs written by scalegan 0.1.0


def test_periodic_evaluation_keeps_the_best_checkpoint(tiny_npz, tmp_path, monkeypatch):
    from scalegan.data import open_dataset
    from scalegan.metrics.classifier import save_classifier, train_classifier

    monkeypatch.setenv("SCALEGAN_CACHE", str(tmp_path / "cache"))
    clf = tmp_path / "clf"
    save_classifier(train_classifier(open_dataset(f"npz:{tiny_npz}"), epochs=2, width=8, progress=False), clf)
    run = tmp_path / "run"
    summary = train(tiny_config(tiny_npz, run, iterations=6, eval_every=2, eval_metrics="fid,acc", eval_n=30,
                                eval_backbone=f"classifier:{clf}", ckpt_every=0))
    evals = [json.loads(x) for x in (run / "logs" / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 4, 6]
    fd = [e["metrics"]["fd"] for e in evals]
    assert all(math.isfinite(v) for v in fd) and all(0 <= e["metrics"]["class_accuracy"] <= 1 for e in evals)
    assert evals[0]["card"]["n_generated"] == 30 and evals[0]["card"]["backbone"] == f"classifier:{clf}"
    best_step = [2, 4, 6][fd.index(min(fd))]
    assert summary["best"] == {"metric": "fd", "value": min(fd), "step": best_step}
    best = run / "checkpoints" / "best"
    config = json.loads((best / "config.json").read_text())
    assert config["step"] == best_step and config["eval"]["value"] == min(fd)
    assert (best / "state.pt").is_file() and scalegan.load(best)[0].config.n_classes == 3
    # best_metric must be one of the results; higher-is-better metrics pick the maximum.
    with pytest.raises(ValueError, match="best_metric 'is_mean'"):
        train(tiny_config(tiny_npz, tmp_path / "bad", iterations=2, eval_every=2, eval_metrics="fid", eval_n=30,
                          eval_backbone=f"classifier:{clf}", best_metric="is_mean"))
    summary = train(tiny_config(tiny_npz, tmp_path / "acc", iterations=4, eval_every=2, eval_metrics="acc",
                                eval_n=30, eval_backbone=f"classifier:{clf}"))
    accs = [json.loads(x)["metrics"]["class_accuracy"]
            for x in (tmp_path / "acc" / "logs" / "eval.jsonl").read_text().splitlines()]
    assert summary["best"]["metric"] == "class_accuracy" and summary["best"]["value"] == max(accs)


@pytest.mark.slow
def test_compiled_training_agrees_with_eager(tiny_npz, tmp_path, monkeypatch):
    """torch.compile (inductor) gives the eager result up to float reassociation in its fused kernels, which Adam
    magnifies as in the distributed test: Adam's first steps move each weight by about the learning rate, so the
    bound scales with it (measured 2e-6 RMS for G, 3e-9 for D at lr 2e-4). One iteration with one D step:
    compiling dominates (one to two minutes on 2 cores), so fewer steps prove the same for less."""
    # A private kernel cache: inductor's shared one can hold kernels built under another ISA limit (e.g. an
    # ATEN_CPU_CAPABILITY=avx2 run on the same machine), which crashed a later run.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    for name, kw in (("eager", {}), ("compiled", dict(compile=True))):
        train(tiny_config(tiny_npz, tmp_path / name, iterations=1, n_d_steps=1, precision="float32",
                          lr_g=1e-4, lr_d=1e-4, sample_every=0, **kw))
    for name in ("G", "D"):
        assert _rms(weights(tmp_path / "eager", name), weights(tmp_path / "compiled", name)) < 1e-5


def test_mirror_doubles_the_data_and_resumes_exactly(tiny_npz, tmp_path):
    # 96 images -> 192: an epoch is 12 batches of 16 instead of 6; 8 iterations of 2 D steps take 16 batches.
    kw = dict(mirror=True, iterations=8, ckpt_every=4, sample_every=0)
    summary = train(tiny_config(tiny_npz, tmp_path / "full", **kw))
    assert summary["step"] == 8
    saved = json.loads((tmp_path / "full" / "train_config.json").read_text())
    assert saved["train"]["mirror"] is True and saved["dataset"]["size"] == 192 and saved["dataset"]["mirror"]
    state = torch.load(tmp_path / "full" / "checkpoints" / "step_0000008" / "state.pt", weights_only=True)
    assert state["stream"] == {"epoch": 1, "pos": 4}  # without --mirror: epoch 2
    train(tiny_config(tiny_npz, tmp_path / "split", **{**kw, "iterations": 4}))
    train(tiny_config(tiny_npz, tmp_path / "split", resume=True, **kw))
    a, b = weights(tmp_path / "full", "G"), weights(tmp_path / "split", "G")
    assert all(torch.equal(a[k], b[k]) for k in a)
