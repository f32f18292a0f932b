"""Generator tuning after inversion (scalegan/tune.py, `scalegan invert --tune`) and the feature losses
(scalegan/perceptual.py, `--feature-loss`).

The models are tiny and untrained (tests/conftest.py `tiny_overrides`), and the target is a real-like image that
such a G cannot draw (the tests' bar image with noise): the latent search alone stays far from it, tuning G gets
much closer. A weights folder with D beside G stands in for a run folder (``load_discriminator`` reads D from it)."""

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from PIL import Image

import scalegan
from scalegan.cli import main
from scalegan.family import PRESETS as PRESETS_TABLE
from scalegan.family import get_family
from scalegan.invert import invert, load_discriminator, psnr
from scalegan.latents import load_latents
from scalegan.manifest import write_manifest
from scalegan.metrics.classifier import ClassifierConfig, SmallClassifier, save_classifier
from scalegan.metrics.inception import random_inception
from scalegan.perceptual import discriminator_features, inception_features
from scalegan.tune import TuneConfig, tune
from scalegan.utils import read_json, to_hwc
from scalegan.weights import save_generator, save_state_dict

PRESETS = {"biggan": "biggan-fmnist", "stylegan2": "stylegan2-fmnist"}
SEARCH = dict(steps=20, restarts=1, classes=[1], seed=0)


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    G, D = scalegan.create_model(name, **tiny_overrides(name))
    return G.eval(), D.eval()


def _target(n: int = 1) -> torch.Tensor:
    """Bars on a noisy ground, [n, 1, 32, 32] in [-1, 1]: nothing an untrained tiny G draws."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 40, size=(n, 1, 32, 32)).astype(np.float32)
    for i in range(n):
        x[i, 0, 6 + 6 * i:12 + 6 * i, 4:28] = 220
    return torch.from_numpy(x) / 127.5 - 1


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A weights folder with D for each family (G, D and their manifest)."""
    out = {}
    for key, name in PRESETS.items():
        G, D = _model(name)
        folder = tmp_path_factory.mktemp(key)
        save_generator(G, folder, class_names=["a", "b", "c", "d", "e"])
        save_state_dict(D, folder / "D.safetensors")
        write_manifest(folder, ["model.safetensors", "config.json", "D.safetensors"])
        out[key] = folder
    return out


def _png(path, image) -> str:
    Image.fromarray(to_hwc(image[None])[0, :, :, 0]).save(path)
    return str(path)


@pytest.mark.parametrize("key", PRESETS)
def test_tuning_reaches_an_image_the_search_cannot(key):
    G, _ = _model(PRESETS[key])
    before = {k: v.clone() for k, v in G.state_dict().items()}
    x = _target(2)
    plain = invert(G, x, **SEARCH)
    tuned = invert(G, x, **SEARCH, tune=TuneConfig(steps=60))
    assert torch.allclose(tuned.psnr_search, plain.psnr)  # the search is the same; tuning comes after it
    assert plain.images_search is None and torch.allclose(tuned.images_search, plain.images, atol=1e-5)
    assert (tuned.psnr > plain.psnr + 5).all(), (plain.psnr, tuned.psnr)
    assert tuned.tuning["method"] == ("progressive" if key == "biggan" else "pivotal") and tuned.tuning["steps"] == 60
    # One tuned G per image renders that image's latent; G itself is untouched.
    assert len(tuned.generators) == 2 and len({id(g) for g in (G, *tuned.generators)}) == 3
    with torch.no_grad():
        again = torch.cat([g(tuned.latents[i:i + 1], tuned.y[i:i + 1]) for i, g in enumerate(tuned.generators)])
        other = tuned.generators[1](tuned.latents[:1], tuned.y[:1])
    assert torch.allclose(again, tuned.images, atol=1e-5)
    assert psnr(other, x[:1]) < tuned.psnr[0] - 1  # image 1's G does not fit image 0 as well
    assert torch.allclose(psnr(again, x), tuned.psnr, atol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert all(p.requires_grad for p in G.parameters())


def _first_presets() -> dict[str, str]:
    out = {}
    for name, preset in PRESETS_TABLE.items():
        out.setdefault(preset["family"], name)
    return out


@pytest.mark.parametrize("name", sorted(_first_presets().values()))
def test_every_family_tunes(name):
    """Every registered family tunes (a few steps): its hook picks the method, the tuned G renders the result."""
    G, D = _model(name)
    x = torch.zeros(1, G.config.img_channels, G.config.resolution, G.config.resolution)
    result = invert(G, x, steps=2, restarts=1, classes=[0], seed=0, tune=3, features=discriminator_features(D))
    assert result.tuning["method"] == ("pivotal" if get_family(G).tune_groups is None else "progressive")
    with torch.no_grad():
        assert torch.allclose(result.generators[0](result.latents, result.y), result.images, atol=1e-5)


def test_progressive_tuning_unfreezes_the_input_side_first():
    G, _ = _model("biggan-fmnist")
    groups = get_family(G).tune_groups(G)
    names = {id(p): n for n, p in G.named_parameters()}
    group_names = [{names[id(p)] for p in g} for g in groups]
    assert "linear.weight" in group_names[0] and all(n.startswith("blocks.0.") for n in group_names[1])
    assert len(groups) == len(G.blocks) + 1
    original = dict(G.named_parameters())
    x, moved = _target(), []
    z = torch.zeros(1, G.config.z_dim)
    y = torch.tensor([1])

    def record(stage, tuned):
        moved.append({n for n, p in tuned.named_parameters() if not torch.equal(p, original[n])})

    tune(G, z, y, lambda img: (img - x).square().flatten(1).mean(1), lambda net, lat, yy: net(lat, yy), None,
         TuneConfig(steps=4 * len(groups), lr=1e-3), on_stage=record)
    assert len(moved) == len(groups)
    for stage, changed in enumerate(moved):
        unfrozen = set().union(*group_names[:stage + 1])
        assert changed <= unfrozen, sorted(changed - unfrozen)[:3]  # nothing deeper than the stage moved
        assert changed & group_names[stage]  # the stage's own group moved
    assert not any(n.startswith("output_") for n in moved[-1])  # DGP leaves the output layer alone


def _distance_at_random_w(G, tuned, y, seed=123) -> float:
    space = get_family(G).w_space
    z = torch.randn(16, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    w = space.map(G, z, y.expand(16), None)
    with torch.no_grad():
        return float((tuned(w, y.expand(16)) - G(w, y.expand(16))).square().mean())


def test_locality_regulariser_keeps_other_latents_images():
    G, _ = _model("stylegan2-fmnist")
    x = _target()
    free = invert(G, x, **SEARCH, tune=TuneConfig(steps=60, locality_weight=0.0))
    local = invert(G, x, **SEARCH, tune=TuneConfig(steps=60, locality_weight=1.0))
    y = torch.tensor([1])
    d_free, d_local = (_distance_at_random_w(G, r.generators[0], y) for r in (free, local))
    assert d_local < 0.5 * d_free, (d_local, d_free)
    assert (local.psnr > local.psnr_search + 3).all()  # it still fits the image (less closely: 60 steps)
    assert local.tuning["locality_weight"] == 1.0


@pytest.mark.parametrize("key", PRESETS)
def test_cli_saves_the_tuned_generator(folders, tmp_path, capsys, key):
    source = folders[key]
    image = _png(tmp_path / "shirt.png", _target()[0])
    out, tuned_dir = tmp_path / "out", tmp_path / "tuned"
    assert main(["invert", str(source), image, "--out-dir", str(out), "--search-steps", "10", "--restarts", "1",
                 "--class", "1", "--tune", "30", "--save-tuned", str(tuned_dir)]) == 0
    assert "then tuned" in capsys.readouterr().out
    summary = read_json(out / "summary.json")
    entry = summary["images"][0]
    assert summary["feature_loss"] == "d"  # the folder has a D: its features are the default
    assert summary["tuning"]["steps"] == 30 and entry["psnr"] > entry["psnr_search"]
    folder = tmp_path / "tuned" / "shirt"
    assert entry["tuned_generator"] == str(folder)
    assert main(["verify", str(folder)]) == 0
    G_tuned, info = scalegan.load(folder)
    assert info.class_names[:2] == ("a", "b")
    latents, y, _ = load_latents(out / "shirt.npz", G_tuned.config)
    with torch.no_grad():
        rendered = G_tuned(latents, y)
    written = np.asarray(Image.open(out / "shirt.png"))
    assert np.abs(to_hwc(rendered)[0, :, :, 0].astype(int) - written.astype(int)).max() <= 1
    assert abs(float(psnr(rendered, _target())) - entry["psnr"]) < 0.5  # the input went through an 8-bit PNG
    G, _ = scalegan.load(source)
    with torch.no_grad():
        assert float((G(latents, y) - G_tuned(latents, y)).abs().max()) > 0.05  # it is not the original G
    # Editing and re-rendering take the tuned folder like any weights folder.
    assert main(["edit", str(folder), "--latents", str(out / "shirt.npz"), "--strength", "0",
                 "--grid", str(tmp_path / "edit.png")]) == 0
    edited = np.asarray(Image.open(tmp_path / "edit.png"))  # a grid of one: the image inside a 2-px border
    edited = edited.reshape(*edited.shape[:2], -1)[2:-2, 2:-2, 0]
    assert np.abs(edited.astype(int) - written.astype(int)).max() <= 1  # strength 0: the tuned reconstruction
    assert main(["edit", str(folder), "--latents", str(out / "shirt.npz"), "--strength", "3",
                 "--grid", str(tmp_path / "edit3.png")]) == 0
    assert main(["sample", str(folder), "--latents", str(out / "shirt.npz"), "--grid", str(tmp_path / "s.png")]) == 0


def test_cli_without_save_tuned_writes_no_generator(folders, tmp_path):
    image = _png(tmp_path / "a.png", _target()[0])
    assert main(["invert", str(folders["biggan"]), image, "--out-dir", str(tmp_path / "o"), "--search-steps", "4",
                 "--restarts", "1", "--class", "0", "--tune", "2"]) == 0
    entry = read_json(tmp_path / "o" / "summary.json")["images"][0]
    assert "tuned_generator" not in entry and sorted(p.name for p in (tmp_path / "o").iterdir()) == \
        ["a.npz", "a.png", "summary.json"]


@pytest.mark.parametrize("kind", ["d", "none", "classifier", "default-weights-folder"])
def test_cli_feature_losses_run_and_are_recorded(folders, tmp_path, kind):
    source = folders["stylegan2"]
    argv = []
    expected = kind
    if kind == "classifier":
        classifier = tmp_path / "clf"
        save_classifier(SmallClassifier(ClassifierConfig(in_channels=1, num_classes=5, resolution=32, width=4,
                                                         feature_dim=8)), classifier)
        argv = ["--feature-loss", f"classifier:{classifier}"]
        expected = f"classifier:{classifier}"
    elif kind == "default-weights-folder":  # G only: no D, so no feature loss by default
        G, _ = scalegan.load(source)
        source = save_generator(G, tmp_path / "g-only")
        expected = "none"
    else:
        argv = ["--feature-loss", kind]
    image = _png(tmp_path / "a.png", _target()[0])
    assert main(["invert", str(source), image, "--out-dir", str(tmp_path / "o"), "--search-steps", "3",
                 "--restarts", "1", "--class", "2", "--tune", "2", *argv]) == 0
    summary = read_json(tmp_path / "o" / "summary.json")
    assert summary["feature_loss"] == expected and summary["tuning"]["method"] == "pivotal"
    assert summary["feature_weight"] == (None if expected == "none" else 0.1)


def test_feature_networks_and_inception_from_a_local_file(folders, tmp_path):
    """D's blocks give one feature map per block; Inception runs from a local weights file (random weights here:
    the published file is not downloaded by tests) and changes the result."""
    G, _ = scalegan.load(folders["biggan"])
    D = load_discriminator(folders["biggan"])
    maps = discriminator_features(D).features(_target())
    assert len(maps) == len(get_family(D).discriminator_blocks(D)) and all(m.shape[0] == 1 for m in maps)
    path = tmp_path / "inception.pth"
    torch.save(random_inception(seed=0).state_dict(), path)
    net = inception_features(str(path))
    search = dict(steps=2, restarts=1, classes=[0], seed=0)
    with_inception = invert(G, _target(), **search, features=net, feature_weight=1.0, tune=2)
    plain = invert(G, _target(), **search, features=False, tune=2)
    assert with_inception.feature_loss == "inception" and plain.feature_loss == "none"
    assert not torch.allclose(with_inception.latents, plain.latents)


BAD = [
    (["--tune", "0"], "--tune: expected an integer >= 1"),
    (["--tune", "many"], "--tune: expected an integer >= 1"),
    (["--save-tuned", "{tmp}/t"], "--save-tuned needs --tune"),
    (["--tune-lr", "1e-4"], "--tune-lr needs --tune"),
    (["--feature-loss", "classifier:"], "needs the folder"),
    (["--feature-loss", "classifier:{tmp}/nope"], "no such folder"),
    (["--feature-loss", "inception"], "no Inception weights file"),
    (["--feature-loss", "lpips:{tmp}/lpips.pth"], "lpips is not supported"),
    (["--feature-loss", "vgg"], "expected one of d, inception"),
]


@pytest.mark.parametrize("argv, hint", BAD, ids=["tune-0", "tune-word", "save-without-tune", "lr-without-tune",
                                                 "classifier-no-dir", "classifier-missing", "inception-absent",
                                                 "lpips", "unknown"])
def test_cli_bad_tuning_input_is_one_error_line(folders, tmp_path, capsys, monkeypatch, argv, hint):
    monkeypatch.setenv("SCALEGAN_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    image = _png(tmp_path / "x.png", _target()[0])
    args = [a.format(tmp=tmp_path) for a in argv]
    assert main(["invert", str(folders["biggan"]), image, "--out-dir", str(tmp_path / "o"), "--search-steps", "1",
                 *args]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scalegan invert: error: ") and hint in lines[0], err
    assert "Traceback" not in out + err and not (tmp_path / "o").exists()


def test_feature_loss_d_needs_a_discriminator(folders, tmp_path, capsys):
    G, _ = scalegan.load(folders["biggan"])
    source = save_generator(G, tmp_path / "g-only")
    image = _png(tmp_path / "x.png", _target()[0])
    assert main(["invert", str(source), image, "--out-dir", str(tmp_path / "o"), "--feature-loss", "d"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no discriminator" in err[0]


@pytest.mark.parametrize("task", ["inpaint", "superres"])
def test_tuning_restores_through_the_degradation(task):
    """Tuning fits what the input shows (the known pixels; the low-resolution image) and keeps the output's form."""
    G, _ = _model("biggan-fmnist")
    x = _target()
    mask = torch.ones(1, 1, 32, 32)
    mask[..., 12:20, 12:20] = 0
    observed = torch.nn.functional.avg_pool2d(x, 4) if task == "superres" else x
    kwargs = dict(task=task, mask=mask if task == "inpaint" else None, factor=4)
    result = invert(G, observed, **SEARCH, **kwargs, tune=TuneConfig(steps=40, lr=1e-3))
    assert result.images.shape == x.shape and (result.psnr > result.psnr_search + 1).all()
    if task == "inpaint":  # the known pixels come from the input
        assert torch.allclose(result.images * mask, x * mask)
