"""The family protocol, proven from outside the package: a family defined in this file (config fields named unlike
any built-in family's, a W space, and a discriminator holding a frozen "pretrained" sub-network) trains, resumes
exactly, samples, serves, exports to ONNX, inverts and edits through the generic code, with nothing registered
anywhere but here. And a scan: no generic module (outside ``models/`` and ``objectives/``) names a family's config
field."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import tokenize
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import latest_weights
from torch import nn

import scalegan
from scalegan import family as families
from scalegan.cli import main
from scalegan.latents import load_latents
from scalegan.objectives import Objective, Phase

PACKAGE = Path(scalegan.__file__).parent


# --------------------------------------------------------------------------------------------- the family
@dataclass(frozen=True)
class PlainConfig:
    """A small style-based generator; its own field names (no z_dim, w_dim, ch...)."""

    resolution: int = 16
    n_classes: int = 3
    img_channels: int = 1
    noise_size: int = 8
    style_size: int = 8
    width: int = 8
    track_beta: float = 0.9

    family = "plain-test"

    @property
    def n_layers(self) -> int:  # one style per up-sampling conv, one for the output
        return int(math.log2(self.resolution)) - 1

    def to_dict(self) -> dict:
        return {"family": self.family, **dataclasses.asdict(self)}


def _onehot(y, n_classes: int) -> torch.Tensor:
    return y.float() if y.is_floating_point() else F.one_hot(y, n_classes).float()


class PlainG(nn.Module):
    """``G(z or W+, y, truncation)``: a mapping MLP (plus a class embedding) to W, which scales each layer's
    features; the tracked mean W (``centre``, training mode only) is what truncation pulls towards."""

    def __init__(self, cfg: PlainConfig):
        super().__init__()
        self.config = cfg
        self.to_style = nn.Sequential(nn.Linear(cfg.noise_size, cfg.style_size), nn.LeakyReLU(0.2),
                                      nn.Linear(cfg.style_size, cfg.style_size))
        self.classes = nn.Linear(cfg.n_classes, cfg.style_size, bias=False) if cfg.n_classes else None
        self.register_buffer("centre", torch.zeros(cfg.style_size))
        self.const = nn.Parameter(torch.randn(1, cfg.width, 4, 4))
        self.styles = nn.ModuleList(nn.Linear(cfg.style_size, cfg.width) for _ in range(cfg.n_layers))
        self.convs = nn.ModuleList(nn.Conv2d(cfg.width, cfg.width, 3, padding=1) for _ in range(cfg.n_layers - 1))
        self.out = nn.Conv2d(cfg.width, cfg.img_channels, 1)

    def map(self, z, y=None, truncation=None) -> torch.Tensor:
        cfg = self.config
        w = self.to_style(z)
        if self.classes is not None:
            w = w + self.classes(_onehot(y, cfg.n_classes))
        if self.training:
            with torch.no_grad():
                self.centre.lerp_(w.detach().mean(0), 1 - cfg.track_beta)
        if truncation is not None and truncation != 1:
            w = self.centre.lerp(w, truncation)
        return w[:, None].repeat(1, cfg.n_layers, 1)

    def forward(self, latents, y=None, truncation=None):
        ws = latents if latents.dim() == 3 else self.map(latents, y, truncation)
        x = self.const + 0 * ws[:, :1, :1, None]  # [N, width, 4, 4]; traces with a dynamic batch
        for i, conv in enumerate(self.convs):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = F.leaky_relu(conv(x * (1 + self.styles[i](ws[:, i]))[:, :, None, None]), 0.2)
        return torch.tanh(self.out(x * (1 + self.styles[-1](ws[:, -1]))[:, :, None, None]))


def _pretrained_features(cfg: PlainConfig) -> nn.Module:
    """A fixed feature network, as a projected discriminator holds one: built from its own seed, never trained."""
    conv = nn.Conv2d(cfg.img_channels, cfg.width, 3, stride=2, padding=1)
    weights = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=weights) * 0.3)
        conv.bias.zero_()
    return nn.Sequential(conv, nn.LeakyReLU(0.2))


class PlainD(nn.Module):
    """Frozen features, a trained head, and a class projection."""

    def __init__(self, cfg: PlainConfig):
        super().__init__()
        self.config = cfg
        self.features = _pretrained_features(cfg)
        self.head = nn.Sequential(nn.Conv2d(cfg.width, cfg.width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                  nn.Flatten())
        size = cfg.width * (cfg.resolution // 4) ** 2
        self.fc = nn.Linear(size, 1)
        self.project = nn.Linear(cfg.n_classes, size, bias=False) if cfg.n_classes else None

    def forward(self, x, y=None):
        h = self.head(self.features(x))
        out = self.fc(h)[:, 0]
        if self.project is not None:
            out = out + (self.project(_onehot(y, self.config.n_classes)) * h).sum(1) / math.sqrt(h.shape[1])
        return out


@dataclass(frozen=True)
class PlainObjectiveConfig:
    plain_margin: float = dataclasses.field(default=1.0, metadata={"help": "test family: hinge margin"})


class PlainObjective(Objective):
    """Hinge losses, one D and one G step per iteration."""

    Config = PlainObjectiveConfig
    phases = (Phase("Dmain", "D"), Phase("Gmain", "G"))

    def loss(self, phase, micro_batch, draw):
        nets, m = self.nets, self.config.plain_margin
        z, y = draw.noise()
        if phase.name == "Dmain":
            x, y_real = draw.real()
            with torch.no_grad():
                fake = nets.G_train(z, y)
            loss = F.relu(m + nets.D_train(fake, y)).mean() + F.relu(m - nets.D_train(x, y_real)).mean()
            return loss, {"loss_d": loss.detach()}
        loss = -nets.D_plain(nets.G_train(z, y), y).mean()
        return loss, {"loss_g": loss.detach()}


class PlainExport(nn.Module):
    truncation_baked = True

    def __init__(self, G, truncation=None):
        super().__init__()
        self.G, self.config, self.truncation = copy.deepcopy(G).float().eval(), G.config, truncation

    def forward(self, z, y=None):
        return self.G(z, y, truncation=self.truncation)


@torch.no_grad()
def _map(G, z, y, truncation):
    device = next(G.parameters()).device
    return G.map(z.to(device), y.to(device) if y is not None else None, truncation).cpu()


PLAIN = families.Family(
    name="plain-test", config=PlainConfig, generator=PlainG, discriminator=PlainD, objective=PlainObjective,
    latent_shape=lambda c: (c.noise_size,),
    draw_latents=lambda c, n, truncation, mode, generator: torch.randn(n, c.noise_size, generator=generator),
    tiny=lambda c: {},
    w_space=families.WSpace(shape=lambda c: (c.n_layers, c.style_size), map=_map,
                            centre=lambda G, y: G.centre.expand(1 if y is None else len(y), -1).clone()),
    truncation_mode=lambda c: "w", truncation_modes=("w",),
    truncation_info=lambda c: {"meaning": "psi towards the mean style", "slider": [0.1, 1.0], "none_means": 1.0},
    export=PlainExport,
    latent_layers=lambda G: [(layer, slice(None), 0) for layer in G.styles],
    pretrained_parts=lambda net: ("features",) if isinstance(net, PlainD) else (),
    upgrade=lambda data: families.rename_fields(data, {"noise_dim": "noise_size"}),
)


@pytest.fixture
def plain(monkeypatch):
    """The family and its preset, registered for one test (the tables are put back after)."""
    monkeypatch.setitem(families.FAMILIES, PLAIN.name, PLAIN)
    monkeypatch.setattr(families, "PRESETS", dict(families.PRESETS))
    families.register_preset("plain-16", PLAIN.name, dataclasses.asdict(PlainConfig()),
                             dict(batch_size=8, lr_g=2e-3, lr_d=2e-3, beta1=0.0, beta2=0.99, ema_start=2))
    monkeypatch.setitem(scalegan.registry.PRESETS, "plain-16", families.PRESETS["plain-16"])
    return PLAIN


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(48) % 3
    x = rng.integers(0, 40, size=(48, 16, 16, 1), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, 2 + 4 * k:6 + 4 * k, 2:14] = 220
    np.savez(path, x=x, y=y, class_names=np.array(["top", "middle", "bottom"]))
    return path


def _train(npz, out, iterations, *extra) -> None:
    args = ["train", "--model", "plain-16", "--data", f"npz:{npz}", "--out-dir", str(out), "--iterations",
            str(iterations), "--log-every", "1", "--sample-every", "0", "--ckpt-every", "0", "--precision", "float32",
            "--no-progress", "--no-tensorboard", *extra]
    assert main(args) == 0


def test_a_family_from_outside_trains_resumes_samples_serves_exports_inverts_and_edits(plain, tmp_path):
    npz = _npz(tmp_path / "data.npz")
    full, split = tmp_path / "full", tmp_path / "split"
    _train(npz, full, 4)
    _train(npz, split, 2)
    _train(npz, split, 4, "--resume")
    for name in ("G", "G_ema", "D"):  # exact resume
        a, b = latest_weights(full, name), latest_weights(split, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # The frozen pretrained part: not in checkpoints, not trained, rebuilt by the constructor.
    D_saved = latest_weights(full, "D")
    assert not any(k.startswith("features.") for k in D_saved) and any(k.startswith("head.") for k in D_saved)
    fresh = PlainD(PlainConfig())
    assert any(not torch.equal(D_saved[k], fresh.state_dict()[k]) for k in D_saved)  # D's head trained
    D = PlainD(PlainConfig())
    scalegan.weights.load_state_dict(D, full / "checkpoints" / "step_0000004" / "D.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(D.features.state_dict().values(),
                                                 _pretrained_features(PlainConfig()).state_dict().values()))
    # ... and D's optimizer never held it: one Adam state per trained parameter, none for the frozen features.
    state = torch.load(full / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
    trained = [p for name, p in D.named_parameters() if not name.startswith("features.")]
    assert len(state["opt_D"]["state"]) == len(trained) < len(list(D.parameters()))

    # Sample: the loader, the one sampling function, the CLI (grid, latents file), style mixing in W.
    G, info = scalegan.load(full)
    assert info.family == "plain-test" and info.class_names == ("top", "middle", "bottom")
    images = scalegan.sample(G, 6, y=1, truncation=0.7, seed=3)
    assert images.shape == (6, 1, 16, 16) and torch.equal(images, scalegan.sample(G, 6, y=1, truncation=0.7, seed=3))
    lat = tmp_path / "lat.npz"
    assert main(["sample", str(full), "--per-class", "2", "--npz", str(lat), "--save-latents",
                 "--grid", str(tmp_path / "grid.png"), "--truncation", "0.7"]) == 0
    latents, y, _ = load_latents(lat, G.config)
    assert latents.shape == (6, 8) and y.tolist() == [0, 0, 1, 1, 2, 2]
    assert main(["sample", str(full), "--mix", "2", "--grid", str(tmp_path / "mix.png")]) == 0
    assert main(["sample", str(full), "--interp", "z", "--rows", "2", "--steps", "3",
                 "--grid", str(tmp_path / "interp.png")]) == 0

    # Edit: SeFa directions in W, edited W latents render back.
    edited = tmp_path / "edited.npz"
    assert main(["edit", str(full), "--latents", str(lat), "--direction", "0", "--strength", "2", "--npz",
                 str(edited), "--save-latents"]) == 0
    w, w_y, _ = load_latents(edited, G.config)
    assert w.shape == (6, G.config.n_layers, 8) and torch.equal(w_y, y)

    # Invert: a generated image comes back (W search, starting at the family's centre).
    from scalegan.invert import invert

    target = scalegan.sample(G, 1, y=2, seed=11)
    result = invert(G, target, classes=[2], steps=60, restarts=2, seed=0)
    assert result.latents.shape == (1, G.config.n_layers, 8) and float(result.psnr[0]) > 18
    # Tuning: a family without a ``tune_groups`` hook gets pivotal tuning (all of G, the W pivot fixed).
    tuned = invert(G, target, classes=[2], steps=5, restarts=1, seed=0, tune=5)
    assert tuned.tuning["method"] == "pivotal" and torch.equal(tuned.latents, invert(
        G, target, classes=[2], steps=5, restarts=1, seed=0).latents)
    assert torch.allclose(tuned.generators[0](tuned.latents, tuned.y), tuned.images, atol=1e-5)

    # Serve: the page's model list, truncation meaning from the family, a generated PNG and a W render.
    from fastapi.testclient import TestClient

    from scalegan.serve.app import ServeSettings, create_app

    with TestClient(create_app({"plain": (G, info)}, ServeSettings())) as client:
        models = client.get("/v1/models").json()["models"]
        assert models[0]["truncation"]["meaning"] == "psi towards the mean style"
        response = client.post("/v1/generate", json={"n": 2, "class": "middle", "seed": 1, "format": "png"})
        assert response.status_code == 200 and response.content[:4] == b"\x89PNG"
        response = client.post("/v1/render", content=edited.read_bytes(),
                               headers={"content-type": "application/octet-stream"})
        assert response.status_code == 200, response.text

    # Export: the family's traced module, run by onnxruntime, gives the torch images.
    pytest.importorskip("onnxruntime")
    from scalegan.export import export_onnx, load_onnx

    export_onnx(G, tmp_path / "g.onnx", truncation=0.7)
    z, labels = scalegan.sampling.draw(G, 3, [0, 1, 2], None, torch.Generator().manual_seed(0))
    got = load_onnx(tmp_path / "g.onnx")(z.numpy(), labels.numpy())
    with torch.no_grad():
        assert np.abs(got - G(z, labels, truncation=0.7).numpy()).max() < 1e-4


def test_old_field_names_are_upgraded_on_read(plain):
    config = families.config_from_dict({"family": "plain-test", "noise_dim": 6})
    assert config.noise_size == 6
    with pytest.raises(ValueError, match="both 'noise_dim'"):
        families.config_from_dict({"family": "plain-test", "noise_dim": 6, "noise_size": 6})


def test_biggan_dim_z_is_read_as_z_dim():
    """Files and overrides written before 0.2 say dim_z; they load as z_dim."""
    config = families.config_from_dict({"family": "biggan", "resolution": 32, "ch": 8, "d_ch": 8, "dim_z": 16,
                                        "shared_dim": 8, "n_classes": 3})
    assert config.z_dim == 16 and "dim_z" not in config.to_dict()
    assert scalegan.registry.model_config("biggan-fmnist", dim_z=32).z_dim == 32


# --------------------------------------------------------------------------------------------- the scan
COMMON = {"family", "resolution", "n_classes", "img_channels"}  # every family config has these
# Module attributes of the built-in families that generic code must not reach for either.
MODULE_FIELDS = {"mapping", "w_avg", "w_avg_class", "synthesis", "noise_mode"}


def family_field_names() -> set[str]:
    names = set(MODULE_FIELDS)
    for family in families.FAMILIES.values():
        names |= {f.name for f in dataclasses.fields(family.config)}
        names |= {k for k, v in vars(family.config).items() if isinstance(v, property)}
    return names - COMMON


def generic_modules() -> list[Path]:
    """Every module outside ``models/`` and ``objectives/``, less the layers the families build from (``layers.py``,
    a floor below ``models/``) and the converters of foreign formats (each reads one family's foreign layout, as a
    family file does)."""
    skip = {PACKAGE / "models", PACKAGE / "objectives"}
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(parent in skip for parent in path.parents) or path == PACKAGE / "layers.py":
            continue
        if path.parent == PACKAGE / "convert" and path.stem not in ("__init__", "common"):
            continue
        out.append(path)
    return out


def field_uses(path: Path, names: set[str], root: Path = PACKAGE.parent) -> list[str]:
    """``file:line name`` for every attribute access ``.name`` and every string literal ``"name"`` of a field."""
    hits, before, previous = [], None, None
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        attribute = previous is not None and previous.string == "." and (before is None or before.string != "nn")
        if tok.type == tokenize.NAME and attribute and tok.string in names:  # not torch's nn.init
            hits.append(f"{path.relative_to(root)}:{tok.start[0]} .{tok.string}")
        elif tok.type == tokenize.STRING and tok.string.strip("'\"") in names and len(tok.string) <= 32:
            hits.append(f"{path.relative_to(root)}:{tok.start[0]} {tok.string}")
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            before, previous = previous, tok
    return hits


def test_generic_modules_name_no_family_field():
    names = family_field_names()
    assert {"z_dim", "w_dim", "num_ws", "n_stats", "ch", "mbstd_group"} <= names  # the scan sees the families
    hits = [hit for path in generic_modules() for hit in field_uses(path, names)]
    assert not hits, "generic code reads family fields (ask the Family record instead):\n" + "\n".join(hits)


def test_the_scan_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(G):\n    return G.config.num_ws, getattr(G.config, "n_stats", 0), G.config.resolution\n')
    assert field_uses(bad, family_field_names(), tmp_path) == ["bad.py:2 .num_ws", 'bad.py:2 "n_stats"']
