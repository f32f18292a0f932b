"""The weights format: safetensors + config.json round trips, and clear errors for broken files."""

import json

import pytest
import torch

import scalegan
from scalegan.registry import model_config
from scalegan.sampling import sample
from scalegan.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from scalegan.weights import WeightsError, load_state_dict, save_generator, save_state_dict


def load(path, **kw):
    return scalegan.load(path, **kw)[0]


@pytest.fixture
def G():
    torch.manual_seed(0)
    G, _ = scalegan.create_model("biggan-fmnist", ch=8, d_ch=8)
    return G


def test_round_trip(G, tmp_path):
    G.train()
    sample(G, 4, seed=0)  # training-mode forward: moves u and the BN statistics away from their init
    names = [f"c{i}" for i in range(10)]
    save_generator(G, tmp_path / "w", class_names=names)
    H, info = scalegan.load(tmp_path / "w")
    assert not H.training and H.config == G.config
    assert info.class_names == tuple(names) and info.family == "biggan" and info.resolution == 32
    assert info.sha256 == scalegan.utils.sha256_file(tmp_path / "w" / "model.safetensors")
    for (k, a), (_, b) in zip(G.state_dict().items(), H.state_dict().items()):
        assert torch.equal(a, b), k
    G.eval()
    assert torch.equal(sample(G, 3, y=1, seed=2), sample(H, 3, y=1, seed=2))
    assert torch.equal(sample(load(tmp_path / "w" / "model.safetensors"), 1, seed=0), sample(H, 1, seed=0))


def test_missing_and_tampered_weights(G, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no config.json"):
        load(tmp_path / "empty")
    save_generator(G, tmp_path / "w")
    weights = tmp_path / "w" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ValueError, match=r"model.safetensors is damaged: size .* \(truncated\?\)"):
        load(tmp_path / "w")  # the manifest's size
    other, _ = scalegan.create_model("biggan-fmnist", ch=16, d_ch=8)
    save_state_dict(other, weights)
    with pytest.raises(ValueError, match="model.safetensors is damaged: .*(size|altered)"):
        load(tmp_path / "w")
    # Without the manifest (a folder written before it existed): the file's own checks name the problem.
    (tmp_path / "w" / "manifest.json").unlink()
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    (tmp_path / "w" / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "weights_sha256"}))
    weights.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="no manifest.json"), pytest.raises(WeightsError, match="truncated"):
        load(tmp_path / "w")
    save_state_dict(other, weights)  # a file from another architecture: keys and shapes are named
    with pytest.warns(UserWarning, match="no manifest.json"), pytest.raises(WeightsError, match="mis-shaped"):
        load(tmp_path / "w")
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    for family, field in (("stylegan9", {}), ("biggan", {"ch": "abc"}), ("biggan", {"ch": -4}),
                          ("biggan", {"colour": 1})):
        broken = {**cfg, "family": family, "model": {**cfg["model"], "family": family, **field}}
        (tmp_path / "w" / "config.json").write_text(json.dumps(broken))
        with pytest.raises(WeightsError, match="not a valid scalegan model config"):
            load(tmp_path / "w")
    (tmp_path / "w" / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        load(tmp_path / "w")


def test_strict_keys(G, tmp_path):
    state = {k: v for k, v in G.state_dict().items() if "output_conv" not in k}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "partial.safetensors")
    with pytest.raises(WeightsError, match="missing keys output_conv"):
        load_state_dict(G, tmp_path / "partial.safetensors")


def test_checkpoints_are_atomic_and_pruned(G, tmp_path):
    cfg = model_config("biggan-fmnist", ch=8, d_ch=8)
    state = {"step": 1, "rng": torch.Generator().get_state(), "nested": {"a": [1, 2]}}
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"G": G}, {**state, "step": step}, cfg, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_0000002", "step_0000003"]  # no temporary folders left behind
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step_0000003"
    assert torch.load(ckpt / "state.pt", weights_only=True)["step"] == 3
    assert load_checkpoint(ckpt, {"G": G})["nested"] == {"a": [1, 2]}

    # A failure while writing (e.g. a full disk) leaves the previous checkpoint as `latest`.
    class Unsaveable(torch.nn.Module):
        def state_dict(self, *a, **k):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path, 4, {"G": Unsaveable()}, state, cfg)
    assert latest_checkpoint(tmp_path).name == "step_0000003"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == names
    assert load(tmp_path, weights="G").config == cfg


def test_atomic_outputs_have_normal_permissions(tmp_path):
    import os

    from scalegan.utils import write_json

    write_json(tmp_path / "a.json", {"x": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
