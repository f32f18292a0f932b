"""Labels as the data has them: class counts of datasets, generated classes drawn from the data's label distribution
in training (or uniform), in standing statistics and in evaluation, recorded with the weights."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from PIL import Image

import scalegan
from scalegan.data import open_dataset
from scalegan.latents import class_labels, quota_labels


@pytest.fixture
def imbalanced_folder(tmp_path):
    """Class folders with 24 / 6 / 2 images (32 px grey): a long-tailed labelled folder."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imbalanced"
    for k, (name, count) in enumerate([("many", 24), ("some", 6), ("rare", 2)]):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 40, size=(32, 32), dtype=np.uint8)
            pixels[4 + 8 * k:10 + 8 * k, 4:28] = 220
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_class_counts_of_folders_and_arrays(imbalanced_folder, tiny_npz):
    assert open_dataset(str(imbalanced_folder), resolution=32).class_counts().tolist() == [24, 2, 6]  # sorted names
    assert open_dataset(str(tiny_npz), resolution=32).class_counts().tolist() == [32, 32, 32]


def test_drawn_labels_follow_the_weights_and_equal_weights_draw_as_uniform():
    weights = torch.tensor([24.0, 6.0, 2.0])
    y = class_labels(20000, None, 3, torch.Generator().manual_seed(0), weights)
    share = torch.bincount(y, minlength=3).double() / len(y)
    assert torch.allclose(share, weights.double() / weights.sum(), atol=0.01)
    uniform = class_labels(100, None, 3, torch.Generator().manual_seed(1))
    assert torch.equal(class_labels(100, None, 3, torch.Generator().manual_seed(1), torch.ones(3) * 7), uniform)


def test_quota_labels():
    assert torch.equal(quota_labels(12, None, 3), torch.arange(12) % 3)
    assert torch.equal(quota_labels(12, torch.tensor([5, 5, 5]), 3), torch.arange(12) % 3)
    assert torch.bincount(quota_labels(10, torch.tensor([6, 3, 1]), 3), minlength=3).tolist() == [6, 3, 1]
    labels = quota_labels(64, torch.tensor([24, 2, 6]), 3)
    assert torch.bincount(labels, minlength=3).tolist() == [48, 4, 12]
    assert set(labels[:16].tolist()) == {0, 1, 2}  # interleaved: every chunk sees every class in proportion


def run_and_record_labels(monkeypatch, folder, out, fake_labels):
    import scalegan.training.loop as loop
    from scalegan.training.config import TrainConfig

    seen = []
    original = loop.draw

    def recording(*args, **kwargs):
        latents, y = original(*args, **kwargs)
        if kwargs.get("class_weights") is not None or "class_weights" in kwargs:
            seen.append(y)
        return latents, y

    monkeypatch.setattr(loop, "draw", recording)
    overrides = {**tiny_overrides("biggan-fmnist"), "n_classes": 3}
    cfg = TrainConfig.from_preset("biggan-fmnist", data=str(folder), out_dir=str(out), iterations=40, batch_size=8,
                                  fake_labels=fake_labels, sample_every=0, log_every=40, precision="float32",
                                  model_overrides=overrides, standing_stats=0)
    loop.train(cfg)
    return torch.cat(seen)


def test_training_draws_classes_from_the_data_and_records_them(monkeypatch, imbalanced_folder, tmp_path):
    data = run_and_record_labels(monkeypatch, imbalanced_folder, tmp_path / "data", "data")
    share = torch.bincount(data, minlength=3).double() / len(data)
    # counts 24 / 2 / 6 (classes many, rare, some): 0.75 / 0.0625 / 0.1875
    assert abs(share[0] - 0.75) < 0.08 and share[1] < 0.15 and abs(share[2] - 0.1875) < 0.08, share
    uniform = run_and_record_labels(monkeypatch, imbalanced_folder, tmp_path / "uniform", "uniform")
    share = torch.bincount(uniform, minlength=3).double() / len(uniform)
    assert (share - 1 / 3).abs().max() < 0.08, share
    from scalegan.training.checkpoint import latest_checkpoint_name

    name = latest_checkpoint_name(tmp_path / "data")
    config = json.loads((tmp_path / "data" / "checkpoints" / name / "config.json").read_text())
    assert config["class_counts"] == [24, 2, 6] and config["fake_labels"] == "data"
    G, info = scalegan.load(tmp_path / "data")
    assert info.class_counts == (24, 2, 6)


def test_standing_statistics_draw_classes_from_the_weights(monkeypatch):
    import scalegan.objectives.biggan as objective

    torch.manual_seed(0)
    G, _ = scalegan.create_model("biggan-fmnist", **{**tiny_overrides("biggan-fmnist"), "n_classes": 3})
    seen = []
    original = objective.draw

    def recording(*args, **kwargs):
        latents, y = original(*args, **kwargs)
        seen.append(y)
        return latents, y

    monkeypatch.setattr(objective, "draw", recording)
    objective.standing_stats(G, n_batches=20, batch_size=50, class_weights=torch.tensor([0, 1, 3]))
    counts = torch.bincount(torch.cat(seen), minlength=3)
    assert counts[0] == 0 and abs(counts[2] / counts.sum() - 0.75) < 0.05


def test_evaluation_follows_the_reference_labels(imbalanced_folder):
    from scalegan.metrics.eval import data_class_weights, evaluate_generator
    from scalegan.metrics.generated import generated_batches

    torch.manual_seed(0)
    G, _ = scalegan.create_model("biggan-fmnist", **{**tiny_overrides("biggan-fmnist"), "n_classes": 3})
    G.eval()
    dataset = open_dataset(str(imbalanced_folder), resolution=32, channels=1)
    weights = data_class_weights(dataset, 3)
    labels = torch.cat([y for _, y in generated_batches(G, 64, class_weights=weights)])
    assert torch.bincount(labels, minlength=3).tolist() == [48, 4, 12]
    assert data_class_weights(dataset, 5) is None  # the data's classes are not the model's: balanced
    backbone = _tiny_backbone()
    result = evaluate_generator(G, dataset, ["fid"], 64, backbone=backbone, class_weights=weights, cache=False)
    assert "[24, 2, 6]" in result["card"]["generator"]["class_balance"]
    balanced = evaluate_generator(G, dataset, ["fid"], 64, backbone=backbone, cache=False)
    assert balanced["card"]["generator"]["class_balance"] == "i % n_classes"
    assert result["metrics"]["fd"] != balanced["metrics"]["fd"]


def _tiny_backbone():
    from scalegan.metrics.classifier import ClassifierConfig, SmallClassifier
    from scalegan.metrics.features import ClassifierBackbone

    torch.manual_seed(0)
    return ClassifierBackbone(SmallClassifier(ClassifierConfig(1, 3, 32, width=4, feature_dim=8)).eval())
