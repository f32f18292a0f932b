"""The TF Inception network's weights: where they are found, how files are checked, what a missing file says."""

from __future__ import annotations

import hashlib

import pytest
import torch

from scalegan.metrics import inception
from scalegan.metrics.inception import load_inception, random_inception, resolve_weights_path


@pytest.fixture(scope="module")
def random_state():
    return random_inception(seed=2).state_dict()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(inception.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("SCALEGAN_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_shapes_and_outputs():
    model = random_inception(0)
    x = torch.randn(1, 3, 299, 299).clamp(-1, 1)
    pool3, unbiased = model(x)
    assert pool3.shape == (1, 2048) and unbiased.shape == (1, 1008)
    torch.testing.assert_close(model.logits(x), unbiased + model.fc.bias)
    # torchvision's Inception v3 without the aux head has 23,834,568; the 8 extra classes add 8 x 2049.
    assert sum(p.numel() for p in model.parameters()) == 23_834_568 + 8 * 2049
    bn = model.Mixed_5b.branch1x1.bn
    assert bn.eps == 1e-3
    with pytest.raises(ValueError, match="expects images"):
        model(torch.zeros(1, 1, 299, 299))


def test_missing_weights_message_says_where(clean_env):
    with pytest.raises(FileNotFoundError) as e:
        resolve_weights_path()
    message = str(e.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in message and "github.com" in message
    assert str(clean_env / "cache") in message and inception.ENV_WEIGHTS in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_weights_path(clean_env / "nope.pth")


def test_resolution_order(clean_env, random_state, monkeypatch):
    cached = clean_env / "cache" / "weights-inception-2015-12-05-6726825d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_weights_path() == cached
    env_file = clean_env / "env.pth"
    env_file.write_bytes(b"y")
    monkeypatch.setenv(inception.ENV_WEIGHTS, str(env_file))
    assert resolve_weights_path() == env_file
    arg_file = clean_env / "arg.pth"
    arg_file.write_bytes(b"z")
    assert resolve_weights_path(arg_file) == arg_file


def test_load_any_file_by_names_and_shapes(clean_env, random_state):
    path = clean_env / "my-inception.pth"
    # DataParallel prefix and no BN counters: both accepted.
    torch.save({f"module.{k}": v for k, v in random_state.items() if "num_batches" not in k}, path)
    model, info = load_inception(path)
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["known"] is None and info["path"] == str(path)
    for k, v in random_state.items():
        if "num_batches" not in k:
            torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    assert not any(p.requires_grad for p in model.parameters())

    broken = dict(random_state)
    broken["fc.weight"] = torch.zeros(1000, 2048)
    del broken["Mixed_7c.branch_pool.conv.weight"]
    torch.save(broken, path)
    with pytest.raises(ValueError, match=r"missing keys Mixed_7c.branch_pool.conv.weight; mis-shaped keys fc.weight: "
                       r"found \[1000, 2048\], expected \[1008, 2048\]"):
        load_inception(path)


def test_known_name_needs_the_published_sha256(clean_env, random_state):
    path = clean_env / "cache" / "pt_inception-2015-12-05-6726825d.pth"
    path.parent.mkdir(parents=True)
    torch.save(random_state, path)  # right layout, but not the published bytes
    with pytest.raises(ValueError, match="corrupt or truncated") as e:
        load_inception()
    assert inception.PUBLISHED_SHA256 in str(e.value) and len(inception.PUBLISHED_SHA256) == 64


def test_download_checks_the_published_hash(clean_env):
    """A file already in the cache is not fetched again but checked (offline): a wrong one is removed."""
    target = clean_env / "cache" / "pt_inception-2015-12-05-6726825d.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match=inception.PUBLISHED_SHA256[:16]):
        inception.download_weights()
    assert not target.exists()
    with pytest.raises(ValueError, match="unknown weights file"):
        inception.download_weights(name="inception.pth")


def test_convert_state_dict_checks_names(random_state):
    """The published layout passes (BN counters dropped, "module." prefixes stripped); anything else is named."""
    converted = inception.convert_state_dict({"state_dict": {f"module.{k}": v for k, v in random_state.items()}})
    assert set(converted) == {k for k in random_state if not k.endswith("num_batches_tracked")}
    assert all(converted[k] is random_state[k] for k in converted)
    with pytest.raises(ValueError, match="unexpected keys AuxLogits.fc.weight"):
        inception.convert_state_dict({**random_state, "AuxLogits.fc.weight": torch.zeros(1)})


def test_channels_last_fast_path_equals_reference():
    from scalegan.metrics.features import InceptionBackbone

    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    reference = InceptionBackbone(random_inception(3))(images)
    fast = InceptionBackbone(random_inception(3), channels_last=True)(images)
    for key in ("features", "logits"):
        scale = reference[key].abs().max()
        assert (fast[key] - reference[key]).abs().max() / scale < 1e-5
