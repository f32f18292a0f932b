"""End to end: the full Inception pipeline on random weights, cached reference statistics, the domain-classifier
backbone, and the `eval` / `train-classifier` subcommands."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

import scalegan
from scalegan.data import open_dataset
from scalegan.metrics import scores
from scalegan.metrics.cli import add_eval_parser, add_train_classifier_parser
from scalegan.metrics.eval import _chunk_seed, evaluate_generator, evaluate_sets, reference_stats
from scalegan.metrics.features import InceptionBackbone
from scalegan.metrics.inception import random_inception
from scalegan.weights import save_generator


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scalegan")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(sub)
    add_train_classifier_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


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
    """240 images through resize + random-weight Inception; every reported metric equals a recomputation."""
    torch.manual_seed(0)
    G = scalegan.create_model("biggan-32", **tiny_overrides("biggan-32"))[0].eval()  # 5 classes, RGB
    dataset = open_dataset(f"npz:{_npz(tmp_path / 'ref.npz', 120, 3, 5)}")
    spy = Spy(InceptionBackbone(random_inception(0)))
    result = evaluate_generator(
        G, dataset, "fid,is,kid,pr,dc", n=120, backbone=spy, batch_size=40, is_splits=4, kid_subsets=5,
        fid_method="eig",  # scipy's sqrtm takes ~15 s at 2048-d on one thread; the parity tests equate the two
    )
    m, card = result["metrics"], result["card"]
    real = np.concatenate([o["features"].numpy() for o in spy.outputs[:3]])
    fake = np.concatenate([o["features"].numpy() for o in spy.outputs[3:]])
    logits = np.concatenate([o["logits"].numpy() for o in spy.outputs[3:]])
    assert real.shape == fake.shape == (120, 2048)
    assert m["fid"] == pytest.approx(scores.fid_from_features(fake, real, method="eig"), rel=1e-9) and m["fid"] > 0
    assert (m["is_mean"], m["is_std"]) == pytest.approx(scores.inception_score(logits, splits=4), rel=1e-9)
    # Kept features are float32: KID and the k-NN metrics see float32-rounded vectors.
    f32r, f32f = real.astype(np.float32), fake.astype(np.float32)
    assert m["kid_mean"] == pytest.approx(scores.kid(f32f, f32r, subsets=5, subset_size=120)[0], rel=1e-9)
    assert (m["precision"], m["recall"]) == scores.precision_recall(f32r, f32f)
    assert (m["density"], m["coverage"]) == scores.density_coverage(f32r, f32f)
    assert card["resizer"] == "tf1-bilinear" and card["n_generated"] == 120 and card["n_reference"] == 120
    assert card["fid_method"] == "eig" and card["is_splits"] == 4 and card["kid"]["subset_size"] == 120
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


def test_classifier_backbone_and_cli(tmp_path, capsys):
    data = _npz(tmp_path / "fm.npz", 96, 1, 3)
    clf = tmp_path / "clf"
    assert run_cli(["train-classifier", "--data", f"npz:{data}", "--out-dir", str(clf), "--epochs", "10",
                    "--batch-size", "16", "--lr", "5e-3", "--width", "8", "--feature-dim", "16"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["train_accuracy"] > 0.9  # three bars at three heights: an easy task
    torch.manual_seed(0)
    overrides = {**tiny_overrides("biggan-32"), "n_classes": 3, "img_channels": 1}
    G = scalegan.create_model("biggan-32", **overrides)[0].eval()
    save_generator(G, tmp_path / "gen")
    out = tmp_path / "result.json"
    assert run_cli(["eval", str(tmp_path / "gen"), "--ref", f"npz:{data}", "--backbone", f"classifier:{clf}",
                    "--metrics", "fid,kid,pr,dc,ifid,acc", "--n", "60", "--batch-size", "25", "--seed", "3",
                    "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    m, card = result["metrics"], result["card"]
    assert {"fd", "kid_mean", "precision", "recall", "density", "coverage", "intra_fd", "class_accuracy"} <= set(m)
    assert card["backbone"] == f"classifier:{clf}" and len(card["weights_sha256"]) == 64
    assert card["n_generated"] == 60 and card["n_reference"] == 96 and card["seed"] == 3

    # Class accuracy recomputed by hand with the documented seeding.
    from scalegan.metrics.classifier import load_classifier

    model = load_classifier(clf)
    G = scalegan.load(tmp_path / "gen")
    correct = 0
    for i, start in enumerate(range(0, 60, 25)):
        y = torch.arange(60)[start : start + 25] % 3
        with torch.no_grad():
            x = G.sample(len(y), y=y, seed=_chunk_seed(3, i))
            x = ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1
            correct += int((model(x).argmax(1) == y).sum())
    assert m["class_accuracy"] == pytest.approx(correct / 60)

    with pytest.raises(ValueError, match="IS is defined on the Inception"):
        run_cli(["eval", str(tmp_path / "gen"), "--ref", f"npz:{data}", "--backbone", f"classifier:{clf}",
                 "--metrics", "is", "--n", "20"])


def test_eval_two_sets(tmp_path, capsys):
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


def test_eval_without_weights_says_where_to_get_them(tmp_path):
    data = _npz(tmp_path / "a.npz", 10, 3, 2)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        run_cli(["eval", str(data), str(data), "--metrics", "fid"])
    with pytest.raises(ValueError, match="unknown metric"):
        run_cli(["eval", str(data), str(data), "--metrics", "fid,bogus", "--backbone", "inception"])
