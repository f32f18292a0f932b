"""End to end: the full Inception pipeline on random weights, cached reference statistics, the images a generator
is measured on, the domain-classifier backbone and class accuracy, and two image sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

import scalegan
from scalegan.data import open_dataset
from scalegan.metrics import scores
from scalegan.metrics.classifier import class_consistency, load_classifier, save_classifier, train_classifier
from scalegan.metrics.eval import (
    evaluate_generator,
    evaluate_sets,
    generated_batches,
    make_backbone,
    parse_metrics,
    reference_stats,
)
from scalegan.metrics.features import InceptionBackbone
from scalegan.metrics.inception import random_inception
from scalegan.sampling import sample


def chunk_seed(seed: int, chunk: int) -> int:
    """The documented seed of chunk `chunk` of generated images: SeedSequence([seed, chunk])."""
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1, dtype=np.uint32)[0])


def tiny_generator(**overrides):
    torch.manual_seed(0)
    return scalegan.create_model("biggan-32", **{**tiny_overrides("biggan-32"), **overrides})[0].eval()


class Spy:
    """Wraps a backbone and records every output, to recompute the metrics independently."""

    def __init__(self, backbone):
        self.backbone, self.name, self.outputs = backbone, backbone.name, []

    def card(self):
        return self.backbone.card()

    def __call__(self, images):
        out = self.backbone(images)
        self.outputs.append(out)
        return out


def _npz(path, n, channels, classes, seed=0, resolution=32):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, size=(n, resolution, resolution, channels), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, 2 + 6 * k : 7 + 6 * k, 3:29] = 200 + 10 * k
    np.savez(path, x=x, y=y.astype(np.int64))
    return path


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALEGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCALEGAN_INCEPTION_WEIGHTS", raising=False)


def test_inception_pipeline_end_to_end(tmp_path):
    """48 images through resize + random-weight Inception; every reported metric equals a recomputation."""
    G = tiny_generator()  # 5 classes, RGB
    dataset = open_dataset(f"npz:{_npz(tmp_path / 'ref.npz', 24, 3, 5)}")
    spy = Spy(InceptionBackbone(random_inception(0)))
    result = evaluate_generator(
        G, dataset, "fid,is,kid,pr,dc", n=24, backbone=spy, batch_size=10, is_splits=4, kid_subsets=5,
        fid_method="eig",  # scipy's sqrtm takes ~15 s at 2048-d on one thread; the parity tests equate the two
    )
    m, card = result["metrics"], result["card"]
    assert len(spy.outputs) == 6  # 10 + 10 + 4 reference images, then as many generated ones
    real = np.concatenate([o["features"].numpy() for o in spy.outputs[:3]])
    fake = np.concatenate([o["features"].numpy() for o in spy.outputs[3:]])
    logits = np.concatenate([o["logits"].numpy() for o in spy.outputs[3:]])
    assert real.shape == fake.shape == (24, 2048) and not np.allclose(real, fake)
    assert m["fid"] == pytest.approx(scores.fid_from_features(fake, real, method="eig"), rel=1e-9) and m["fid"] > 0
    assert (m["is_mean"], m["is_std"]) == pytest.approx(scores.inception_score(logits, splits=4), rel=1e-9)
    # Kept features are float32: KID and the k-NN metrics see float32-rounded vectors.
    f32r, f32f = real.astype(np.float32), fake.astype(np.float32)
    assert m["kid_mean"] == pytest.approx(scores.kid(f32f, f32r, subsets=5, subset_size=24)[0], rel=1e-9)
    assert (m["precision"], m["recall"]) == scores.precision_recall(f32r, f32f)
    assert (m["density"], m["coverage"]) == scores.density_coverage(f32r, f32f)
    assert card["resizer"] == "tf1-bilinear" and card["n_generated"] == 24 and card["n_reference"] == 24
    assert card["fid_method"] == "eig" and card["is_splits"] == 4 and card["kid"]["subset_size"] == 24
    assert card["k_precision_recall"] == 3
    assert card["k_density_coverage"] == 5 and card["scalegan_version"] == scalegan.__version__
    assert card["reference"]["dataset"]["split"] == "train" and card["seed"] == 0
    json.dumps(result)


class CountingBackbone:
    """Cheap features (4x4 average-pooled pixels) that count the images they see."""

    name = "inception"

    def __init__(self, resizer="tf1-bilinear"):
        self.resizer, self.seen = resizer, 0

    def card(self):
        return {"backbone": "counting", "weights_sha256": "0" * 64, "resizer": self.resizer}

    def __call__(self, images):
        self.seen += len(images)
        x = images.float() if images.dtype == torch.uint8 else (images.float() + 1) * 127.5
        f = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1).double()
        return {"features": f, "logits": f[:, :3]}


def test_reference_stats_cached_and_invalidated(tmp_path):
    path = _npz(tmp_path / "ref.npz", 64, 1, 3)
    backbone = CountingBackbone()
    first = reference_stats(open_dataset(f"npz:{path}"), backbone)
    assert backbone.seen == 64 and first.info["cache"]["hit"] is False
    again = reference_stats(open_dataset(f"npz:{path}"), backbone)
    assert backbone.seen == 64 and again.info["cache"]["hit"] is True
    np.testing.assert_array_equal(again.stats.cov, first.stats.cov)
    assert sorted(again.per_class) == [0, 1, 2] and len(again.stats.features) == 64

    cached = sorted(p.name for p in (tmp_path / "cache" / "stats").iterdir())
    assert cached == [f"{first.info['key']}.npz"]  # written atomically: no temporary file left beside it
    reference_stats(open_dataset(f"npz:{path}"), backbone, n=32)  # other n
    assert backbone.seen == 96
    reference_stats(open_dataset(f"npz:{path}"), CountingBackbone(resizer="pil-bicubic"))  # other settings
    assert backbone.seen == 96
    with np.load(path) as data:
        x, y = data["x"].copy(), data["y"]
    x[0, 0, 0] += 1  # one pixel of the data changes
    np.savez(path, x=x, y=y)
    changed = reference_stats(open_dataset(f"npz:{path}"), backbone)
    assert backbone.seen == 160 and changed.info["cache"]["hit"] is False


def test_generated_images_follow_the_documented_draws():
    """Image i has class i % n_classes; chunk j of 100 images is sample(..., seed=SeedSequence([seed, j])), in eval
    mode, whatever the batch size."""
    G = tiny_generator().train()
    batches = list(generated_batches(G, 130, seed=4, batch_size=25))
    assert [len(x) for x, _ in batches] == [25] * 5 + [5] and G.training  # G's mode is restored
    images, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    assert torch.equal(labels, torch.arange(130) % 5)
    with torch.no_grad():
        G.eval()
        expected = torch.cat([sample(G, 100, y=labels[:100], seed=chunk_seed(4, 0)),
                              sample(G, 30, y=labels[100:], seed=chunk_seed(4, 1))])
    assert torch.equal(images, expected)
    whole = list(generated_batches(G, 130, seed=4, batch_size=1000))
    assert len(whole) == 1 and torch.equal(whole[0][0], images)
    assert not torch.equal(next(generated_batches(G, 130, seed=5))[0], images[:100])
    unconditional = tiny_generator(n_classes=0)
    assert next(generated_batches(unconditional, 3, seed=0))[1] is None


def test_classifier_backbone_and_class_accuracy(tmp_path):
    data = _npz(tmp_path / "fm.npz", 96, 1, 3)
    dataset = open_dataset(f"npz:{data}")
    model = train_classifier(dataset, epochs=10, batch_size=16, lr=5e-3, width=8, feature_dim=16, progress=False)
    save_classifier(model, tmp_path / "clf")
    G = tiny_generator(n_classes=3, img_channels=1)
    backbone = make_backbone(f"classifier:{tmp_path / 'clf'}")
    result = evaluate_generator(G, dataset, "fid,kid,pr,dc,ifid,acc", n=150, backbone=backbone, batch_size=40,
                                seed=3, kid_subsets=5)
    m, card = result["metrics"], result["card"]
    assert {"fd", "kid_mean", "precision", "recall", "density", "coverage", "intra_fd", "class_accuracy"} <= set(m)
    assert card["backbone"] == f"classifier:{tmp_path / 'clf'}" and len(card["weights_sha256"]) == 64
    assert card["n_generated"] == 150 and card["n_reference"] == 96 and card["seed"] == 3

    # Class accuracy recomputed by hand with the documented draws, and the same number from class_consistency.
    model = load_classifier(tmp_path / "clf")
    correct = 0
    for j, start in enumerate(range(0, 150, 100)):
        y = torch.arange(start, min(start + 100, 150)) % 3
        with torch.no_grad():
            x = sample(G, len(y), y=y, seed=chunk_seed(3, j))
            x = ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1
            correct += int((model(x).argmax(1) == y).sum())
    assert m["class_accuracy"] == correct / 150
    assert class_consistency(G, model, n_per_class=50, seed=3)["accuracy"] == m["class_accuracy"]
    # The batch size changes nothing but the summation order of the feature statistics.
    again = evaluate_generator(G, dataset, "fid,kid,pr,dc,ifid,acc", n=150, backbone=backbone, batch_size=64,
                               seed=3, kid_subsets=5)["metrics"]
    assert again["class_accuracy"] == m["class_accuracy"] and again["fd"] == pytest.approx(m["fd"], rel=1e-6)
    assert (again["precision"], again["recall"]) == (m["precision"], m["recall"])

    with pytest.raises(ValueError, match="IS is defined on the Inception"):
        evaluate_generator(G, dataset, "is", n=20, backbone=backbone)
    with pytest.raises(ValueError, match="resolution: G has 64, classifier has 32"):
        evaluate_generator(tiny_generator(n_classes=3, img_channels=1, resolution=64), dataset, "acc", n=20,
                           backbone=backbone)


def test_eval_two_sets(tmp_path):
    from PIL import Image

    data = _npz(tmp_path / "a.npz", 40, 3, 2)
    folder = tmp_path / "pngs"
    folder.mkdir()
    with np.load(data) as d:
        for i, image in enumerate(d["x"]):
            Image.fromarray(image).save(folder / f"{i:03d}.png")
    result = evaluate_sets(data, folder, "fid,pr", backbone=CountingBackbone())
    m = result["metrics"]
    # FID of a set with itself is 0 up to sqrtm's error on a singular product (48-d features, 40 images).
    assert abs(m["fid"]) < 1e-2 and m["precision"] == m["recall"] == 1.0
    assert result["card"]["n_generated"] == result["card"]["n_reference"] == 40
    shifted = evaluate_sets(data, _npz(tmp_path / "b.npz", 40, 3, 2, seed=1), "fid", backbone=CountingBackbone(),
                            fid_method="eig")
    assert shifted["metrics"]["fid"] > 1  # other pictures: the check above can fail


def test_eval_without_weights_says_where_to_get_them(tmp_path):
    data = _npz(tmp_path / "a.npz", 10, 3, 2)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        evaluate_sets(data, data, "fid")
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metrics("fid,bogus")
