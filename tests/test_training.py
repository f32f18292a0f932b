"""The training loop on a tiny model and dataset: outputs, exact resume, bf16, losses, budgets."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import scalegan
from scalegan.training import train
from scalegan.training.config import TrainConfig

TINY = dict(ch=8, d_ch=8, dim_z=16, shared_dim=16)


def tiny_config(npz, out, **kw):
    base = dict(data=f"npz:{npz}", out_dir=str(out), iterations=4, batch_size=16, n_d_steps=2, ema_start=2,
                log_every=2, sample_every=2, ckpt_every=0, progress=False, tensorboard=False,
                model_overrides=dict(TINY))
    return TrainConfig.from_preset("biggan-fmnist", **{**base, **kw})


def weights(run, name):
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return load_file(ckpt / f"{name}.safetensors")


def test_train_writes_a_complete_run(tiny_npz, tmp_path):
    run = tmp_path / "run"
    summary = train(tiny_config(tiny_npz, run, tensorboard=True, standing_stats=2))
    assert summary["step"] == 4
    assert (run / "samples" / "final.png").is_file() and (run / "samples" / "iter_000002.png").is_file()
    assert list((run / "logs").glob("events.out.tfevents.*"))
    lines = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    assert all(math.isfinite(x[k]) for x in lines for k in ("loss_d_real", "loss_d_fake", "loss_g", "img_per_s"))
    resolved = json.loads((run / "train_config.json").read_text())
    assert resolved["model"]["n_classes"] == 3  # follows the dataset, not the preset's 10
    assert resolved["train"]["iterations"] == 4
    state = torch.load(run / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
    assert state["step"] == 4 and set(state) >= {"opt_G", "opt_D", "noise_rng", "stream"}
    G = scalegan.load(run)
    assert G.config.n_classes == 3 and G.sample(2, y=1, seed=0).shape == (2, 1, 32, 32)
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
    summary = train(tiny_config(tiny_npz, tmp_path, iterations=3, bf16=True, channels_last=True))
    lines = [json.loads(x) for x in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert summary["step"] == 3 and all(math.isfinite(x["loss_g"]) for x in lines)
    G = weights(tmp_path, "G")
    assert all(v.dtype in (torch.float32, torch.int64) for v in G.values())  # master weights stay float32


@pytest.mark.parametrize("options", [
    dict(loss="ce", num_accumulations=2, g_ortho=1e-4, d_ortho=1e-4, ema=False),
    dict(model_overrides={**TINY, "n_classes": 0}),
])
def test_losses_accumulation_and_unconditional(tiny_npz, tmp_path, options):
    summary = train(tiny_config(tiny_npz, tmp_path, iterations=2, **options))
    assert summary["step"] == 2
    G = scalegan.load(tmp_path)
    if options.get("model_overrides"):
        assert G.config.n_classes == 0
    else:
        assert "G_ema" not in {p.stem for p in (tmp_path / "checkpoints" / "step_0000002").iterdir()}


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
