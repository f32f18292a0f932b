"""Tests for scalegan.metrics.classifier on a tiny synthetic dataset and stand-in generators."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scalegan.metrics.classifier import (
    ClassifierConfig,
    SmallClassifier,
    _augment,
    class_consistency,
    evaluate_accuracy,
    load_classifier,
    save_classifier,
    train_classifier,
)
from scalegan.metrics.eval import evaluate_generator
from scalegan.metrics.features import ClassifierBackbone
from scalegan.sampling import sample

RES = 16
NUM_CLASSES = 3


def _patterns(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of uint8 [n, 1, RES, RES] images: horizontal stripes, vertical stripes, a centered blob,
    each with random intensity and noise so that a classifier has to generalise a little."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    coords = torch.arange(RES, dtype=torch.float32)
    stripes_h = ((coords // 2) % 2)[:, None].expand(RES, RES)
    stripes_v = stripes_h.T
    blob = (((coords[:, None] - RES / 2) ** 2 + (coords[None, :] - RES / 2) ** 2) < (RES / 4) ** 2).float()
    base = torch.stack([stripes_h, stripes_v, blob])[labels]  # [n, RES, RES] in {0, 1}
    contrast = 0.5 + 0.5 * torch.rand(n, 1, 1, generator=g)
    noise = 0.15 * torch.randn(n, RES, RES, generator=g)
    images = ((base * contrast + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return images[:, None], labels


class PatternDataset(torch.utils.data.Dataset):
    """Mimics scalegan.data's in-memory datasets: float items in [-1, 1] plus uint8 `tensors`."""

    def __init__(self, n: int, seed: int) -> None:
        self.tensors = _patterns(n, seed)
        self.num_classes = NUM_CLASSES
        self.resolution = RES
        self.channels = 1

    def __len__(self) -> int:
        return len(self.tensors[1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors[0][i].float() / 127.5 - 1.0, self.tensors[1][i]


class ItemOnlyDataset(torch.utils.data.Dataset):
    """The same data without `tensors`: exercises the generic per-item path."""

    def __init__(self, base: PatternDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base[i]


@dataclass(frozen=True)
class FakeConfig:
    n_classes: int | None
    resolution: int = RES
    img_channels: int = 1
    z_dim: int = 4
    family: str = "biggan"  # latents drawn as for a BigGAN: z ~ N(0, 1), [n, z_dim]


class FakeG(torch.nn.Module):
    """Stand-in for a scalegan generator, a deterministic function of (z, y): `mode="real"` returns held-out images
    of the requested class, `"mixed"` the same but of the next class when z[:, 1] > 0.8 (about a fifth), `"noise"`
    a random pattern. Records every call for inspection."""

    def __init__(self, mode: str, n_classes: int | None = NUM_CLASSES, **config: int) -> None:
        super().__init__()
        self.mode = mode
        self.config = FakeConfig(n_classes, **config)
        self.pool = PatternDataset(300, seed=123)
        cfg = self.config
        pixels = cfg.img_channels * cfg.resolution**2
        self.register_buffer("mix", torch.randn(cfg.z_dim, pixels, generator=torch.Generator().manual_seed(5)))
        self.calls: list[dict] = []

    def forward(self, z, y=None, truncation=None) -> torch.Tensor:
        self.calls.append({"n": len(z), "y": y, "truncation": truncation, "training": self.training})
        cfg = self.config
        if self.mode == "noise":
            return torch.tanh(z @ self.mix).view(len(z), cfg.img_channels, cfg.resolution, cfg.resolution)
        images, labels = self.pool.tensors
        wanted = (y + (z[:, 1] > 0.8).long()) % NUM_CLASSES if self.mode == "mixed" else y
        out = []
        for c, pick in zip(wanted.tolist(), (z[:, 0].abs() * 1e4).long().tolist()):
            of_class = images[labels == c]
            out.append(of_class[pick % len(of_class)])
        return torch.stack(out).float() / 127.5 - 1.0


def _documented_accuracy(G, classifier, n_per_class: int, seed: int) -> tuple[float, list[float]]:
    """Class consistency recomputed from its documented definition: image i of class i % n_classes, chunks of 100
    images, chunk j drawn by sample(..., seed=SeedSequence([seed, j])), judged as 8-bit pictures."""
    n = n_per_class * NUM_CLASSES
    correct = torch.zeros(NUM_CLASSES, dtype=torch.long)
    for j, start in enumerate(range(0, n, 100)):
        y = torch.arange(start, min(start + 100, n)) % NUM_CLASSES
        chunk_seed = int(np.random.SeedSequence([seed, j]).generate_state(1, dtype=np.uint32)[0])
        with torch.no_grad():
            x = ((sample(G, len(y), y=y, seed=chunk_seed) + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1
            predicted = classifier.eval()(x).argmax(1)
        correct += torch.bincount(y[predicted == y], minlength=NUM_CLASSES)
    return int(correct.sum()) / n, [int(c) / n_per_class for c in correct]


def _train(**kwargs) -> SmallClassifier:
    args = {
        "epochs": 2,
        "batch_size": 16,
        "lr": 3e-3,
        "seed": 0,
        "progress": False,
        "width": 8,
        "feature_dim": 16,
    }
    args.update(kwargs)
    return train_classifier(PatternDataset(240, seed=0), **args)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These tensors are tiny: on a busy machine, OpenMP threads waiting on each other slow the file ~10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained() -> SmallClassifier:
    return _train()


def test_forward_and_feature_shapes():
    model = SmallClassifier(ClassifierConfig(3, 5, 32, width=4, feature_dim=12)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert model(x).shape == (2, 5)
    features = model.features(x)
    assert features.shape == (2, 12) and features.min() >= 0 and features.max() > 0  # after ReLU, not all dead
    torch.testing.assert_close(model(x), model.head(features))  # logits are the head of the features
    torch.testing.assert_close(model(x[1:]), model(x)[1:])  # eval mode: each image on its own
    assert not torch.allclose(model(x[:1]), model(x[1:]))
    with pytest.raises(ValueError, match="expects images"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError):
        ClassifierConfig(1, 10, 4)


def test_augment_is_a_shift_with_black_fill():
    x = torch.rand(6, 2, 8, 8) * 2 - 1
    out = _augment(x, torch.Generator().manual_seed(0), shift=2, hflip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(len(x)):
        crops = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], crop) for crop in crops), i
    assert not torch.equal(out, x)  # with 6 images, some shift is non-zero
    flipped = _augment(x, torch.Generator().manual_seed(0), shift=0, hflip=True)
    assert all(torch.equal(f, a) or torch.equal(f, a.flip(-1)) for f, a in zip(flipped, x))
    assert not torch.equal(flipped, x)


def test_training_learns_separable_classes(trained):
    assert not trained.training
    held_out = PatternDataset(150, seed=1)
    assert evaluate_accuracy(trained, held_out) >= 0.9
    # The generic per-item path must see the same data as the `tensors` fast path.
    assert evaluate_accuracy(trained, ItemOnlyDataset(held_out)) == evaluate_accuracy(trained, held_out)


def test_untrained_is_near_chance():
    """Guards the accuracy assertion above: an untrained network must not already pass it."""
    model = SmallClassifier(
        ClassifierConfig(1, NUM_CLASSES, RES, width=8, feature_dim=16),
        generator=torch.Generator().manual_seed(0),
    ).eval()
    assert evaluate_accuracy(model, PatternDataset(150, seed=1)) < 0.7


def test_training_is_deterministic_under_seed(trained):
    again = _train()
    for (name, a), (_, b) in zip(trained.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    other = _train(seed=1)
    assert not torch.equal(trained.head.weight, other.head.weight)


def test_save_load_round_trip(trained, tmp_path):
    save_classifier(trained, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_classifier(tmp_path)
    assert loaded.config == trained.config
    assert not loaded.training
    x = torch.rand(8, 1, RES, RES) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))
        assert torch.equal(loaded.features(x), trained.features(x))


def test_load_rejects_missing_files(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_classifier(tmp_path)
    save_classifier(trained, tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_classifier(tmp_path)


def test_load_rejects_tampered_weights(trained, tmp_path):
    save_classifier(trained, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["head.weight"] = torch.zeros(NUM_CLASSES + 1, trained.config.feature_dim)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"mis-shaped keys head.weight: found \[4, 16\], expected \[3, 16\]"):
        load_classifier(tmp_path)

    del state["head.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="missing keys head.weight"):
        load_classifier(tmp_path)


def test_load_rejects_config_that_disagrees_with_weights(trained, tmp_path):
    save_classifier(trained, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["width"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape"):
        load_classifier(tmp_path)


def test_class_consistency_real_images(trained):
    G = FakeG("real").train()
    result = class_consistency(G, trained, n_per_class=40, batch_size=15, seed=3)
    assert result["accuracy"] >= 0.95
    assert len(result["per_class"]) == NUM_CLASSES
    assert min(result["per_class"]) >= 0.9
    assert result["n_per_class"] == 40 and result["seed"] == 3 and result["truncation"] is None
    # 120 images: one seeded chunk of 100 and one of 20, classes i % 3, G in eval mode while sampling.
    assert [call["n"] for call in G.calls] == [100, 20]
    assert G.calls[0]["y"].tolist() == [i % NUM_CLASSES for i in range(100)]
    assert not any(call["training"] for call in G.calls) and G.training  # G's mode is restored
    # Same seed, same draws.
    assert class_consistency(FakeG("real"), trained, n_per_class=40, batch_size=15, seed=3) == result


def test_class_consistency_follows_its_documented_draws(trained):
    G = FakeG("mixed")
    result = class_consistency(G, trained, n_per_class=50, batch_size=15, seed=7)
    accuracy, per_class = _documented_accuracy(G, trained, 50, 7)
    assert 0.6 < accuracy < 0.95  # some images show another class: a number that can move either way
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert result["per_class"] == pytest.approx(per_class, abs=1e-12)
    # The batch size only sets how many images are classified at once.
    assert class_consistency(G, trained, n_per_class=50, batch_size=150, seed=7) == result
    assert class_consistency(G, trained, n_per_class=50, batch_size=15, seed=8)["accuracy"] != accuracy


def test_class_consistency_equals_evaluate_generator_acc(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEGAN_CACHE", str(tmp_path))
    G = FakeG("mixed")
    consistency = class_consistency(G, trained, n_per_class=50, batch_size=15, seed=7)
    for kwargs in ({"backbone": ClassifierBackbone(trained)}, {"backbone": CheapBackbone(), "classifier": trained}):
        result = evaluate_generator(G, PatternDataset(30, seed=2), ["acc"], n=150, batch_size=40, seed=7,
                                    cache=False, **kwargs)
        assert result["metrics"]["class_accuracy"] == consistency["accuracy"]
    assert 0.6 < consistency["accuracy"] < 0.95


class CheapBackbone:
    """Features that cost nothing: the image means."""

    name = "inception"

    def card(self):
        return {"backbone": "cheap"}

    def __call__(self, images):
        f = images.float().mean(dim=(2, 3)).double()
        return {"features": torch.cat([f, f.square()], 1), "logits": f}


def test_class_consistency_passes_truncation(trained):
    G = FakeG("real")
    result = class_consistency(G, trained, n_per_class=4, batch_size=4, truncation=0.5)
    assert result["truncation"] == 0.5
    assert G.calls and all(call["truncation"] == 0.5 for call in G.calls)


def test_class_consistency_noise_is_low(trained):
    result = class_consistency(FakeG("noise"), trained, n_per_class=60, batch_size=60)
    # Noise lands in (at most) one or two classes: the mean cannot reach the real-image level.
    assert result["accuracy"] < 0.6


def test_class_consistency_rejects_mismatched_generators(trained):
    with pytest.raises(ValueError, match="class-conditional"):
        class_consistency(FakeG("real", n_classes=None), trained, n_per_class=2)
    with pytest.raises(ValueError, match="classes"):
        class_consistency(FakeG("real", n_classes=NUM_CLASSES + 1), trained, n_per_class=2)
    with pytest.raises(ValueError, match="channels"):
        class_consistency(FakeG("real", img_channels=3), trained, n_per_class=2)
    with pytest.raises(ValueError, match="resolution"):
        class_consistency(FakeG("real", resolution=2 * RES), trained, n_per_class=2)
    # An object without a usable config at all still fails clearly rather than sampling.
    with pytest.raises(ValueError, match="class-conditional"):
        class_consistency(SimpleNamespace(config=SimpleNamespace(n_classes=0)), trained, n_per_class=2)
