"""Parity with the reference implementations: pytorch-fid and torch-fidelity, run on the same inputs with shared
random Inception weights (built here, offline; no published weights are needed or downloaded).

Both packages import torchvision, whose installed wheel cannot load its compiled ops against this torch. Their
Inception code only needs torchvision's pure-Python model definitions, so `_references()` registers a bare
`torchvision` package (its real directory, without running its `__init__`) before importing them.

Tolerances reached on a 1-thread x86 CPU are noted beside each assertion.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from scalegan.metrics import scores
from scalegan.metrics.features import InceptionBackbone
from scalegan.metrics.inception import random_inception
from scalegan.metrics.resize import resize_tf1_bilinear

INSTALL_HINT = (
    "the parity tests need pytorch-fid and torch-fidelity: run scripts/setup.sh (installs the dev extra) or "
    "`.venv/bin/pip install -c constraints.txt pytorch-fid torch-fidelity`"
)


def _references():
    """Import (pytorch_fid.inception, pytorch_fid.fid_score, torch_fidelity) behind a bare torchvision package."""
    if "torchvision" not in sys.modules or not getattr(sys.modules["torchvision"], "_scalegan_shim", False):
        spec = importlib.util.find_spec("torchvision")
        if spec is None:
            pytest.fail("torchvision is not installed; " + INSTALL_HINT)
        package = types.ModuleType("torchvision")
        package.__path__ = list(spec.submodule_search_locations)
        package.__version__ = "0.0.0"
        package._scalegan_shim = True
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = package
    package = sys.modules["torchvision"]
    try:
        from torchvision import version

        package.__version__ = version.__version__  # pytorch-fid reads it to pick an API
    except Exception:
        pass
    try:
        pf_inception = importlib.import_module("pytorch_fid.inception")
        pf_score = importlib.import_module("pytorch_fid.fid_score")
        tf = importlib.import_module("torch_fidelity")
    except ImportError as e:
        pytest.fail(f"cannot import a reference package ({e}); " + INSTALL_HINT)
    return pf_inception, pf_score, tf


@pytest.fixture(scope="module")
def shared_weights(tmp_path_factory):
    """One random state dict for all three networks, saved in the published file layout."""
    model = random_inception(seed=1)
    directory = tmp_path_factory.mktemp("inception")
    path = directory / "random-inception.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def images():
    """Two 64x64 RGB uint8 images with structure (gradients + noise), so resizing matters."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 255, 64)
    base = (ramp[None, :] + ramp[:, None]) / 2
    noise = torch.randint(0, 80, (2, 3, 64, 64), generator=g).float()
    return (base[None, None] * 0.7 + noise).clamp(0, 255).to(torch.uint8)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max())


def test_state_dict_layout_matches_references(shared_weights, tmp_path, monkeypatch):
    pf_inception, _, tf = _references()
    ours, path = shared_weights
    fidelity = tf.feature_extractor_inceptionv3.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
    )
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert ours_shapes == {k: tuple(v.shape) for k, v in fidelity.state_dict().items()}
    # pytorch-fid loads its file through torch hub's cache: put our random weights there under its name.
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(ours.state_dict(), checkpoints / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    pf_net = pf_inception.fid_inception_v3()
    assert ours_shapes == {k: tuple(v.shape) for k, v in pf_net.state_dict().items()}


def test_features_match_torch_fidelity(shared_weights, images):
    _, _, tf = _references()
    ours, path = shared_weights
    fidelity = tf.feature_extractor_inceptionv3.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased", "logits"], feature_extractor_weights_path=str(path)
    )
    ref_pool3, ref_unbiased, ref_logits = fidelity(images)
    backbone = InceptionBackbone(ours, resizer="tf1-bilinear", normalization="tf")
    out = backbone(images)
    # Reached: 0 (bit-exact) on this CPU; the bound allows other kernels' summation orders.
    assert _rel(out["features"], ref_pool3) < 1e-5
    assert _rel(out["logits"], ref_unbiased) < 1e-5
    assert _rel(ours.logits(backbone.preprocess(images)), ref_logits) < 1e-5
    assert ref_pool3.abs().max() > 1e-3  # random weights still give non-trivial features


def test_features_match_pytorch_fid(shared_weights, images, tmp_path, monkeypatch):
    pf_inception, _, _ = _references()
    ours, _ = shared_weights
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(ours.state_dict(), checkpoints / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = pf_inception.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    with torch.no_grad():
        (ref_pool3,) = reference(images.float() / 255)  # pytorch-fid's loader gives [0, 1] floats
    backbone = InceptionBackbone(ours, resizer="torch-bilinear", normalization="unit")
    out = backbone(images)
    # Reached: 1.8e-7 relative (pytorch-fid resizes [0, 1] values, we resize [0, 255] ones).
    assert _rel(out["features"], ref_pool3.flatten(1)) < 1e-5
    # The full network (with logits) on already-normalised 299x299 input, against torchvision's patched graph.
    with torch.no_grad():
        x = backbone.preprocess(images)
        assert _rel(ours.logits(x), pf_inception.fid_inception_v3().eval()(x)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(32, 32), (28, 28), (64, 48), (300, 310), (17, 5)])
def test_tf1_resize_equals_torch_fidelity(shape, dtype):
    _, _, tf = _references()
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    g = torch.Generator().manual_seed(shape[0])
    x = (torch.rand(2, 3, *shape, generator=g) * 255).to(dtype)
    size = 299 if shape[0] > 20 else 11
    reference = interpolate_bilinear_2d_like_tensorflow1x(x, size=(size, size), align_corners=False)
    ours = resize_tf1_bilinear(x, size)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)  # reached: bit-exact


def _feature_sets(n1=300, n2=260, d=48, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(n1, d)) @ mix
    b = rng.normal(size=(n2, d)) @ (mix + 0.1 * rng.normal(size=(d, d))) + 0.3
    return a, b


@pytest.mark.parametrize("n1,n2", [(300, 260), (30, 25)])  # the second is rank-deficient (N < D)
def test_fid_equals_pytorch_fid_and_torch_fidelity(n1, n2):
    _, pf_score, _ = _references()
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    a, b = _feature_sets(n1, n2)
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    reference = pf_score.calculate_frechet_distance(mu1, s1, mu2, s2)
    fidelity = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)[
        "frechet_inception_distance"
    ]
    ours = scores.fid_from_stats(mu1, s1, mu2, s2)
    fast = scores.fid_from_stats(mu1, s1, mu2, s2, method="eig")
    assert reference > 0.1
    # Reached: 0 (sqrtm, same algorithm); eig route 7e-15 full rank, 7e-10 rank-deficient.
    assert ours == pytest.approx(reference, rel=1e-6)
    assert fidelity == pytest.approx(reference, rel=1e-6)
    assert fast == pytest.approx(reference, rel=1e-6)


def test_kid_is_prc_equal_torch_fidelity():
    _references()
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    fake, real = _feature_sets(240, 200, d=32, seed=3)
    kid_ref = kid_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), kid_subsets=20, kid_subset_size=150, rng_seed=2020,
        kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1,
        verbose=False,
    )
    kid_mean, kid_std = scores.kid(fake, real, subsets=20, subset_size=150, seed=2020)
    # Reached: ~1e-15 relative (same sampling order, float64 throughout).
    assert kid_mean == pytest.approx(kid_ref["kernel_inception_distance_mean"], rel=1e-6)
    assert kid_std == pytest.approx(kid_ref["kernel_inception_distance_std"], rel=1e-6)

    logits = np.random.default_rng(5).normal(size=(230, 1008)) * 3
    is_ref = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    is_mean, is_std = scores.inception_score(logits, splits=10)
    assert is_mean == pytest.approx(is_ref["inception_score_mean"], rel=1e-6)  # reached: ~1e-15
    assert is_std == pytest.approx(is_ref["inception_score_std"], rel=1e-6)

    prc = prc_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=3, prc_batch_size=10000,
        save_cpu_ram=False, verbose=False,
    )
    precision, recall = scores.precision_recall(real, fake, k=3)
    assert 0 < precision < 1 and 0 < recall < 1
    assert precision == pytest.approx(prc["precision"], abs=1e-6)  # reached: same counts (theirs is a float32 mean)
    assert recall == pytest.approx(prc["recall"], abs=1e-6)
