"""The family seam: the Family table, files written by scalegan 0.1.0, registry-wide round trips, determinism and
stateless generators, and one sampling path with one set of defaults."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

import scalegan
from scalegan.family import FAMILIES, Family, get_family, register
from scalegan.latents import sample_z
from scalegan.objectives import Objective
from scalegan.registry import list_models, model_config
from scalegan.sampling import sample
from scalegan.training import TrainConfig, train
from scalegan.utils import to_hwc
from scalegan.weights import save_generator

LEGACY = Path(__file__).parent / "data" / "legacy_0_1"


def test_every_family_is_a_complete_record():
    assert {"biggan", "biggan-deep"} <= set(FAMILIES)
    for name, family in FAMILIES.items():
        assert family.name == name and family.config.family == name
        assert issubclass(family.objective, Objective) and family.objective.Config is not type(None)
        assert callable(family.draw_latents) and family.truncation_mode(family.config()) in family.truncation_modes
    assert get_family("biggan-deep").fold is not None and get_family("biggan").fold is None
    with pytest.raises(ValueError, match="registered twice"):
        register(Family("biggan", *[None] * 8))
    with pytest.raises(KeyError, match="did you mean 'biggan'"):
        get_family("bigan")


# ------------------------------------------------------------------------------------------ files of scalegan 0.1.0
def test_files_written_by_0_1_load_and_give_the_same_images():
    expected = np.load(LEGACY / "expected.npz")
    z = torch.from_numpy(expected["z"])
    y = torch.tensor([0, 1, 2, 0])
    for folder, key in (("run", "run"), ("biggan_weights", "biggan")):
        G, info = scalegan.load(LEGACY / folder)
        assert info.family == "biggan" and info.n_classes == 3
        with torch.no_grad():
            assert np.abs(G(z, y).numpy() - expected[key]).max() < 1e-5, folder
    G, info = scalegan.load(LEGACY / "deep_weights")
    assert info.class_names == ("a", "b", "c", "d") and G.config.n_stats == 3
    with torch.no_grad():
        for t in (1.0, 0.5):  # 0.1.0 selected the statistics with G.set_truncation(t); now per call
            out = G(z, torch.tensor([0, 1, 2, 3]), truncation=t).numpy()
            assert np.abs(out - expected[f"deep_t{t}"]).max() < 1e-5
    assert json.loads((LEGACY / "deep_weights" / "config.json").read_text()).get("format") is None  # format 1


def test_a_0_1_run_resumes(tmp_path):
    """train_config.json with BigGAN's settings at the top level and state.pt with LeCam's anchors at the top level
    (0.1.0's layout) resume; the resumed run writes today's layout."""
    old = json.loads((LEGACY / "run" / "train_config.json").read_text())["train"]
    assert "lecam" in old and "objective" not in old
    cfg = TrainConfig.from_dict(old)
    assert cfg.objective["lecam"] == 0.1 and cfg.objective_config().n_d_steps == 1
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "run", run)
    rng = np.random.default_rng(0)  # the legacy run's dataset, remade (make.py)
    x = rng.integers(0, 255, size=(32, 32, 32, 1), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x=x, y=(np.arange(32) % 3).astype(np.int64))
    summary = train(TrainConfig.from_dict({**old, "data": f"npz:{tmp_path / 'data.npz'}", "out_dir": str(run),
                                           "iterations": 3, "resume": True, "progress": False}))
    assert summary["step"] == 3
    state = torch.load(run / "checkpoints" / "step_0000003" / "state.pt", weights_only=True)
    assert state["objective"]["lecam"]["anchor_real"] is not None
    config = json.loads((run / "checkpoints" / "step_0000003" / "config.json").read_text())
    assert config["format"] == 2 and config["family"] == "biggan"


# ------------------------------------------------------------------------------------------ registry-wide
def _tiny(name, **extra):
    torch.manual_seed(0)
    # Attention off where the family has it (BigGAN's fields; a family is asked, not guessed from its name).
    attention = {"g_attn": (), "d_attn": ()} if hasattr(model_config(name), "g_attn") else {}
    return scalegan.create_model(name, **{**tiny_overrides(name), "resolution": 32, **attention, **extra})


@pytest.mark.parametrize("name", list_models())
def test_round_trip_and_seeded_determinism(name, tmp_path):
    G, D = _tiny(name)
    G2, D2 = _tiny(name)  # the same torch seed builds the same weights
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(D.state_dict().values(), D2.state_dict().values()))
    G.train()
    sample(G, 4, seed=0)  # move u and the BN statistics away from their init
    G.eval()
    save_generator(G, tmp_path / "w", class_names=[f"c{i}" for i in range(G.config.n_classes)])
    H, info = scalegan.load(tmp_path / "w")
    assert H.config == G.config and info.class_names[1] == "c1"
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), H.state_dict().values()))
    a, b = sample(G, 3, seed=5, truncation=0.6), sample(H, 3, seed=5, truncation=0.6)
    assert torch.equal(a, b) and torch.equal(a, sample(G, 3, seed=5, truncation=0.6))
    assert (a - sample(G, 3, seed=6, truncation=0.6)).abs().mean() > 1e-4


@pytest.mark.parametrize("name", [*list_models(), "biggan-deep-128+stats"])
def test_eval_forward_is_pure(name):
    """Calls with different truncations, in any order, give the same outputs and write no buffer."""
    extra = {"n_stats": 5} if name.endswith("+stats") else {}
    G, _ = _tiny(name.removesuffix("+stats"), **extra)
    G.eval()
    if extra:
        with torch.no_grad():
            for m in G.modules():
                if hasattr(m, "stats_mean"):
                    m.stats_mean.normal_(0, 0.3)
                    m.stats_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    y = torch.tensor([0, 1])
    z, _ = scalegan.sampling.draw(G, 2, y, generator=torch.Generator().manual_seed(0))
    order = [None, 0.3, 1.0, 0.3, None, 0.7, 1.0]
    with torch.no_grad():
        outs = [G(z, y, truncation=t) for t in order]
    for t, out in zip(order, outs):
        assert torch.equal(out, outs[order.index(t)]), t
    if extra:  # the statistics of each truncation are used
        assert (outs[1] - outs[2]).abs().max() > 1e-3
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())


# ------------------------------------------------------------------------------------------ one sampling path
@pytest.fixture
def converted_deep(tmp_path):
    G, _ = _tiny("biggan-deep-128", n_stats=5, n_classes=1000, sn_eval="stored")
    with torch.no_grad():
        for m in G.modules():
            if hasattr(m, "stats_mean"):
                m.stats_mean.normal_(0, 0.3)
    save_generator(G.eval(), tmp_path / "deep")
    return tmp_path / "deep"


def test_defaults_follow_the_model(converted_deep, tmp_path):
    G, _ = scalegan.load(converted_deep)
    _, z, _ = sample(G, 2, y=0, truncation=0.4, seed=1, return_latents=True)  # converted BigGAN-deep: "scale"
    assert torch.equal(z, sample_z(2, G.config.z_dim, 0.4, "scale", torch.Generator().manual_seed(1)))
    native, _ = _tiny("biggan-deep-128")
    _, z, _ = sample(native.eval(), 2, y=0, truncation=0.4, seed=1, return_latents=True)  # trained here: resample
    assert torch.equal(z, sample_z(2, native.config.z_dim, 0.4, "resample", torch.Generator().manual_seed(1)))


def test_the_same_images_through_every_path(converted_deep, tmp_path, monkeypatch):
    """scalegan.sample, BigGAN(...).generate, `scalegan sample` and `scalegan eval` draw the same images for the same
    model, classes, seed and truncation (eval draws image i of class i % n_classes, chunk j of 100 images with seed
    SeedSequence([seed, j]): its first chunk is the call below)."""
    from scalegan.cli import main
    from scalegan.metrics import eval as metrics_eval
    from scalegan.metrics.generated import _chunk_seed

    G, _ = scalegan.load(converted_deep)
    y, seed = torch.arange(100), _chunk_seed(9, 0)
    reference = sample(G, 100, y=y, truncation=0.5, seed=seed)
    model = scalegan.BigGAN(resolution=128, pretrained=str(converted_deep))
    assert torch.equal(model.generate(y=y, truncation=0.5, seed=seed), reference)
    classes = [arg for c in range(100) for arg in ("--class", str(c))]
    assert main(["sample", str(converted_deep), *classes, "--n", "100", "--truncation", "0.5", "--seed", str(seed),
                 "--npz", str(tmp_path / "s.npz")]) == 0
    assert np.array_equal(np.load(tmp_path / "s.npz")["x"], to_hwc(reference))
    seen = []

    class Recorder:  # a backbone that records what eval feeds it
        name = "classifier"

        def __call__(self, images):
            seen.append(images)
            return {"features": torch.randn(len(images), 4), "logits": None}

        def card(self):
            return {"backbone": "recorder"}

    monkeypatch.setattr(metrics_eval, "make_backbone", lambda *a, **k: Recorder())
    monkeypatch.setattr("scalegan.cli.eval.make_backbone", lambda *a, **k: Recorder())
    ref = tmp_path / "ref.npz"
    np.savez(ref, x=np.zeros((4, 32, 32, 3), np.uint8), y=np.zeros(4, np.int64))
    assert main(["eval", str(converted_deep), "--ref", f"npz:{ref}", "--metrics", "fid", "--n", "100",
                 "--truncation", "0.5", "--seed", "9", "--no-cache"]) == 0
    generated = [x for x in seen if x.dtype != torch.uint8]  # the reference images arrive as uint8
    assert len(generated) == 1 and torch.equal(generated[0], reference)
