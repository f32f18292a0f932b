"""The loop runs any family's objective: phases with intervals and repeats, lazy-regularisation corrections,
logged values, and objective state that resumes exactly. Tested with a toy family registered for the test."""

import dataclasses
import json
from dataclasses import dataclass

import pytest
import torch
from conftest import latest_weights
from test_training import FixedBatches

from scalegan import family as families
from scalegan import registry
from scalegan.models.biggan import BigGANConfig, Discriminator, Generator
from scalegan.objectives import Context, Nets, Objective, Phase, lazy_ratio
from scalegan.objectives.biggan import draw_z
from scalegan.training import TrainConfig, train
from scalegan.training.loop import phase_step


@dataclass(frozen=True)
class ToyConfig(BigGANConfig):
    family = "toy"


@dataclass(frozen=True)
class ToyObjectiveConfig:
    reg_interval: int = dataclasses.field(default=2, metadata={"help": "toy: G regulariser interval"})


class ToyObjective(Objective):
    """Non-saturating losses, plus a lazy G regulariser that keeps a running mean (objective state)."""

    Config = ToyObjectiveConfig
    calls: list = []

    def __init__(self, config, nets, ctx):
        super().__init__(config, nets, ctx)
        self.phases = (Phase("Dmain", "D"), Phase("Gmain", "G"), Phase("Greg", "G", interval=config.reg_interval))
        self.running = torch.zeros(())

    def loss(self, phase, micro_batch, draw):
        ToyObjective.calls.append(phase.name)
        nets = self.nets
        z, y = draw.noise()
        if phase.name == "Dmain":
            x, y_real = draw.real()
            with torch.no_grad():
                fake = nets.G_train(z, y)
            loss = (torch.nn.functional.softplus(nets.D_train(fake, y)).mean()
                    + torch.nn.functional.softplus(-nets.D_train(x, y_real)).mean())
            return loss, {"loss_d": loss.detach()}
        fake = nets.G_train(z, y)
        if phase.name == "Gmain":
            loss = torch.nn.functional.softplus(-nets.D_plain(fake, y)).mean()
            return loss, {"loss_g": loss.detach()}
        reg = fake.square().mean()
        self.running = 0.9 * self.running + 0.1 * reg.detach()
        return 0.01 * reg, {"reg": reg.detach(), "reg_running": self.running}

    def state_dict(self):
        return {"running": self.running}

    def load_state_dict(self, state):
        self.running = state["running"]


@pytest.fixture
def toy(monkeypatch):
    family = families.Family("toy", ToyConfig, Generator, Discriminator, ToyObjective,
                             latent_shape=lambda c: (c.z_dim,), draw_latents=draw_z, tiny=lambda c: {})
    monkeypatch.setitem(families.FAMILIES, "toy", family)
    model = dict(registry.PRESETS["biggan-fmnist"]["model"], ch=8, d_ch=8, z_dim=16, shared_dim=16)
    monkeypatch.setitem(registry.PRESETS, "toy-32", dict(family="toy", model=model, train={}))
    ToyObjective.calls = []
    return family


def toy_config(npz, out, **kw):
    return TrainConfig.from_preset("toy-32", data=f"npz:{npz}", out_dir=str(out), batch_size=8, log_every=2,
                                   sample_every=0, ckpt_every=0, progress=False, tensorboard=False,
                                   precision="float32", **kw)


def test_phases_intervals_and_logged_values(toy, tiny_npz, tmp_path):
    train(toy_config(tiny_npz, tmp_path, iterations=4))
    assert ToyObjective.calls == ["Dmain", "Gmain", "Greg", "Dmain", "Gmain"] * 2  # Greg on iterations 0 and 2
    lines = [json.loads(x) for x in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()][1:]
    assert [sorted(k for k in x if k.startswith(("loss", "reg"))) for x in lines] == \
        [["loss_d", "loss_g", "reg", "reg_running"]] * 2
    state = torch.load(tmp_path / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
    assert float(state["objective"]["running"]) == pytest.approx(lines[-1]["reg_running"], rel=1e-6)
    # The stylegan2-ada correction of the lazily regularised network's Adam: lr * k/(k+1), betas ** (k/(k+1)).
    cfg = toy_config(tiny_npz, tmp_path)
    g_group, d_group = state["opt_G"]["param_groups"][0], state["opt_D"]["param_groups"][0]
    assert g_group["lr"] == pytest.approx(cfg.optim.lr_g * 2 / 3) and d_group["lr"] == cfg.optim.lr_d
    assert g_group["betas"] == pytest.approx((cfg.optim.beta1 ** (2 / 3), cfg.optim.beta2 ** (2 / 3)))
    assert tuple(d_group["betas"]) == (cfg.optim.beta1, cfg.optim.beta2)
    assert json.loads((tmp_path / "train_config.json").read_text())["objective"] == {"reg_interval": 2}


def test_objective_state_resumes_exactly(toy, tiny_npz, tmp_path):
    train(toy_config(tiny_npz, tmp_path / "full", iterations=4))
    train(toy_config(tiny_npz, tmp_path / "split", iterations=3))
    train(toy_config(tiny_npz, tmp_path / "split", iterations=4, resume=True))
    for name in ("G", "D", "G_ema"):
        a, b = latest_weights(tmp_path / "full", name), latest_weights(tmp_path / "split", name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    states = [torch.load(tmp_path / r / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
              for r in ("full", "split")]
    assert torch.equal(states[0]["objective"]["running"], states[1]["objective"]["running"])


def test_a_lazy_phase_weighs_its_loss_by_its_interval(toy):
    """phase_step multiplies the loss of a phase that runs every k iterations by k (and averages micro-batches)."""
    import contextlib

    torch.manual_seed(0)
    cfg = ToyConfig(**{**registry.PRESETS["biggan-fmnist"]["model"], "ch": 8, "d_ch": 8, "z_dim": 16,
                       "shared_dim": 16, "n_classes": 3, "img_channels": 1})
    G, D = Generator(cfg), Discriminator(cfg)

    class Linear(Objective):
        phases = (Phase("Greg", "G", interval=4),)

        def loss(self, phase, micro_batch, draw):
            return self.nets.G.output_conv.bias.sum(), {}

    ctx = Context(torch.device("cpu"), contextlib.nullcontext, None, 2, 4, 0)
    objective = Linear(None, Nets(G, D, G, D, D), ctx)
    before = G.output_conv.bias.detach().clone()
    opt = torch.optim.SGD(G.parameters(), lr=1.0)
    batches = FixedBatches(None, None, torch.randn(8, 16), torch.zeros(8, dtype=torch.long), 2)
    phase_step(objective, objective.phases[0], opt, torch.amp.GradScaler("cpu", enabled=False), 2, batches)
    assert torch.allclose(G.output_conv.bias, before - 4.0)  # d(sum)/d(bias) = 1, times the interval 4
    assert lazy_ratio(objective.phases, "G") == pytest.approx(0.8) and lazy_ratio(objective.phases, "D") == 1.0
    with pytest.raises(ValueError, match="several lazy intervals"):
        lazy_ratio((Phase("a", "G", interval=2), Phase("b", "G", interval=4)), "G")


def test_objective_settings_are_checked_by_the_family(toy, tiny_npz, tmp_path):
    with pytest.raises(ValueError, match="unknown toy objective settings \\['n_d_steps'\\]"):
        toy_config(tiny_npz, tmp_path, n_d_steps=1).validate()
    with pytest.raises(ValueError, match="reg_interval must be int"):
        toy_config(tiny_npz, tmp_path, objective={"reg_interval": "2"}).validate()
