import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tests are small; one thread avoids oversubscription on the 2-core CI machine


def tiny_overrides(name: str) -> dict:
    """Model overrides that keep a preset's layout but make it fast enough for a unit test (the family's ``tiny``
    hook), with 5 classes."""
    from scalegan.family import PRESETS, get_family
    from scalegan.registry import model_config

    family = get_family(PRESETS[name]["family"])
    return {**family.tiny(model_config(name)), "n_classes": 5}


@pytest.fixture
def tiny_npz(tmp_path):
    """A 32x32 grayscale NPZ dataset of 96 images in 3 classes: class k is a bright bar at a k-dependent place."""
    rng = np.random.default_rng(0)
    n = 96
    y = np.arange(n) % 3
    x = rng.integers(0, 40, size=(n, 32, 32, 1), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, 4 + 8 * k:10 + 8 * k, 4:28] = 220
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x, y=y.astype(np.int64), class_names=np.array(["top", "middle", "bottom"]))
    return path


def latest_weights(run, name: str) -> dict:
    """Tensors of ``name``.safetensors in a run folder's newest checkpoint."""
    from safetensors.torch import load_file

    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return load_file(ckpt / f"{name}.safetensors")


def rms_difference(a: dict, b: dict, skip_sn: bool = False) -> float:
    """Root-mean-square difference over every float tensor of two state dicts (``skip_sn``: not the spectral-norm
    vectors ``u`` / ``sv``, which only follow the weights)."""
    assert a.keys() == b.keys()
    keys = [k for k in a if a[k].is_floating_point() and not (skip_sn and k.endswith((".u", ".sv")))]
    total = sum((a[k].double() - b[k].double()).square().sum().item() for k in keys)
    return (total / sum(a[k].numel() for k in keys)) ** 0.5


def loss_lines(run) -> list[dict]:
    """The loss records of RUN/logs/metrics.jsonl (its first line records the start: precision, layout)."""
    import json
    from pathlib import Path

    lines = [json.loads(x) for x in (Path(run) / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x.get("event") != "start"]


def check_onnx_export(G, tmp_path, truncation: float = 0.7, atol: float = 1e-4) -> None:
    """G's ONNX file (traced at the default batch) gives G's images on a batch of 3 with other classes."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from scalegan.export import export_onnx

    G.eval()
    path = tmp_path / "g.onnx"
    export_onnx(G, path, truncation=truncation)
    z, y = torch.randn(3, G.config.z_dim), torch.tensor([0, 1, 4])  # another batch size than the trace's
    out = ort.InferenceSession(str(path)).run(None, {"z": z.numpy(), "y": y.numpy()})[0]
    with torch.no_grad():
        assert np.abs(out - G(z, y, truncation=truncation).numpy()).max() < atol


def train_tiny(preset: str, npz, out, iterations: int = 3):
    """A tiny float32 run of a StyleGAN-family preset (R1 every 2 iterations) on ``npz``, then ``scalegan.load`` of
    it: (the loss lines, G, info); every logged G loss is finite."""
    import math

    import scalegan
    from scalegan.training import TrainConfig, train

    overrides = {k: v for k, v in tiny_overrides(preset).items() if k != "n_classes"}
    cfg = TrainConfig.from_preset(
        preset, data=f"npz:{npz}", out_dir=str(out), batch_size=4, iterations=iterations, log_every=1,
        sample_every=0, ckpt_every=0, progress=False, tensorboard=False, precision="float32",
        model_overrides=overrides, objective=dict(d_reg_interval=2))
    train(cfg)
    lines = loss_lines(out)
    assert len(lines) == iterations and all(math.isfinite(x["loss_g"]) for x in lines)
    G, info = scalegan.load(out)
    return lines, G, info
