"""Named pretrained models: cache lookup, SHA-256 check, the message for an absent model, scalegan.BigGAN. No
network: the cache is filled with a small converted model."""

from __future__ import annotations

import pytest
import torch

import scalegan
from scalegan import pretrained
from scalegan.convert import save_converted
from scalegan.utils import sha256_file
from scalegan.weights import ModelInfo, WeightsError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # so that no folder named like a model shadows the cache
    return tmp_path / "cache"


def tiny_deep(n_stats: int = 0):
    G, _ = scalegan.create_model("biggan-deep-128", ch=8, d_ch=8, z_dim=8, shared_dim=8, n_classes=5,
                                 n_stats=n_stats)
    return G.eval()


NAMES = ("a", "b", "c", "d", "e")


def info_of(G):
    return ModelInfo("biggan-deep", 128, 5, NAMES)


def test_table_names_and_cache_dir(cache):
    assert {"biggan-deep-128.tfhub", "biggan-deep-256.tfhub", "biggan-deep-512.tfhub", "biggan-128.bgp"} <= \
        set(pretrained.PRETRAINED)
    assert not set(pretrained.PRETRAINED) & set(scalegan.list_models())  # no name is also a preset's
    assert pretrained.cache_dir() == cache
    with pytest.raises(KeyError, match="did you mean 'biggan-deep-256.tfhub'"):
        pretrained.get("biggan-deep-265.tfhub")
    # The names before 0.2 (the presets' names) still mean the pretrained weights, with a one-line note.
    with pytest.warns(UserWarning, match="'biggan-deep-256' is now 'biggan-deep-256.tfhub'"):
        assert pretrained.get("biggan-deep-256").name == "biggan-deep-256.tfhub"


def test_absent_model_explains_where_to_get_it(cache):
    with pytest.raises(WeightsError) as info:
        scalegan.load("biggan-deep-256.tfhub")
    message = str(info.value)
    assert str(cache / "biggan-deep-256.tfhub") in message
    assert "biggan-deep-256-pytorch_model.bin" in message  # where to get it
    assert "scalegan convert" in message and "--download biggan-deep-256.tfhub" in message  # how to convert it
    with pytest.raises(WeightsError, match="BigGAN-PyTorch"):
        scalegan.load("biggan-128.bgp")


def test_cached_model_loads_and_sha256_is_checked(cache):
    G = tiny_deep()
    save_converted(G, info_of(G), cache / "biggan-deep-128.tfhub")
    H, info = scalegan.load("biggan-deep-128.tfhub")
    z, y = torch.randn(2, 8), torch.tensor([0, 4])
    with torch.no_grad():
        assert torch.equal(G(z, y), H(z, y))
    folder = cache / "biggan-deep-128.tfhub"
    assert info.class_names == NAMES and info.sha256 == sha256_file(folder / "model.safetensors")
    # a damaged file fails the SHA-256 check with a message that says what to do
    path = cache / "biggan-deep-128.tfhub" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256.*convert"):
        scalegan.load("biggan-deep-128.tfhub")


def test_biggan_class_random_and_pretrained(cache):
    model = scalegan.BigGAN(resolution=128)  # random weights, ImageNet classes
    assert model.config.n_classes == 1000 and model.class_names[207] == "golden retriever"
    assert model.labels(["golden retriever", "n02099601", 3]).tolist() == [207, 207, 3]

    G = tiny_deep(n_stats=51)
    with torch.no_grad():
        for bn in scalegan.layers.batch_norms(G):
            bn.stats_mean.copy_(torch.randn_like(bn.stats_mean) * 0.1)
    save_converted(G, info_of(G), cache / "biggan-deep-128")  # a cache folder under its name before 0.2: found
    model = scalegan.BigGAN(resolution=128, pretrained=True)
    z = 0.4 * torch.randn(3, 8)
    images = model.generate(z, y="c", truncation=0.4)
    assert images.shape == (3, 3, 128, 128) and images.abs().max() <= 1
    with torch.no_grad():
        assert torch.equal(images, G(z, torch.tensor([2, 2, 2]), truncation=0.4))
    seeded = model.generate(y=[0, 1], truncation=0.4, seed=3)
    assert torch.equal(seeded, model.generate(y=[0, 1], truncation=0.4, seed=3))
    with pytest.raises(ValueError, match="unknown class"):
        model.generate(z, y="zebra")
