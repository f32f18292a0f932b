"""ONNX export: onnxruntime's images equal PyTorch's eval-mode images (1e-4) at batch 1 and 7 from one file per
family and resolution class, the metadata round-trips, and `scalegan export` works end to end."""

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

import scalegan
from scalegan.cli import main
from scalegan.export import export_onnx, load_onnx, read_metadata
from scalegan.family import get_family
from scalegan.layers import SpectralNorm, fold_spectral_norm
from scalegan.models.biggan_deep_fold import fast_generator
from scalegan.weights import save_generator

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4


def _model(name: str, **overrides):
    """A tiny eval-mode generator whose buffers (BN statistics, attention gains, average W) are not their
    identity-like initial values, so that each of them matters to the output."""
    G = scalegan.create_model(name, **{**tiny_overrides(name), **overrides})[0].eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in G.state_dict().items():
            if key.endswith(("running_mean", "stats_mean", "w_avg", "w_avg_class")):
                value.copy_(torch.randn(value.shape, generator=g) * 0.3)
            elif key.endswith(("running_var", "stats_var")):
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
            elif key.endswith("gamma") or key.endswith(".sv"):
                value.fill_(0.7 if key.endswith("gamma") else 1.5)
    return G


def _inputs(G, n: int, seed: int):
    family = get_family(G)
    g = torch.Generator().manual_seed(seed)
    z = family.draw_latents(G.config, n, None, family.truncation_mode(G.config), g)
    y = torch.randint(0, G.config.n_classes, (n,), generator=g) if G.config.n_classes else None
    return z, y


# (preset, overrides, truncation): every family and resolution class, conditional and unconditional
CASES = [
    pytest.param("biggan-32", dict(g_attn=(16,)), None, id="biggan-32-attention"),
    pytest.param("biggan-fmnist", dict(n_classes=0, hier=False), None, id="biggan-fmnist-unconditional"),
    pytest.param("biggan-32", dict(shared_dim=0, hier=False), None, id="biggan-32-per-layer-embeddings"),
    pytest.param("biggan-64", {}, 0.5, id="biggan-64"),
    pytest.param("biggan-deep-128", {}, None, id="biggan-deep-128"),
    pytest.param("biggan-deep-128", dict(n_stats=11, sn_eval="stored"), 0.4, id="biggan-deep-128-stats"),
    pytest.param("stylegan2-fmnist", {}, 0.7, id="stylegan2-fmnist-conditional"),
    pytest.param("stylegan2-256", dict(n_classes=0, channel_base=512), 0.5, id="stylegan2-256-unconditional"),
]


@pytest.mark.parametrize("name, overrides, truncation", CASES)
def test_onnxruntime_matches_pytorch_at_batch_1_and_7(name, overrides, truncation, tmp_path):
    G = _model(name, **overrides)
    path = tmp_path / "G.onnx"
    written = export_onnx(G, path, truncation=truncation, source=name)
    gen = load_onnx(path, threads=1)
    assert gen.inputs == (["z", "y"] if G.config.n_classes else ["z"])
    for n in (1, 7):
        z, y = _inputs(G, n, seed=n)
        with torch.no_grad():
            expected = G(z, y, truncation=truncation).numpy()
            untruncated = G(z, y).numpy()
        images = gen(z.numpy(), None if y is None else y.numpy())
        assert images.shape == expected.shape == (n, G.config.img_channels, G.config.resolution, G.config.resolution)
        assert images.dtype == np.float32
        assert np.abs(images - expected).max() < TOLERANCE, (n, np.abs(images - expected).max())
        if written["truncation_baked"] == "true":  # the test can tell a file without the truncation
            assert np.abs(images - untruncated).max() > 1e-2
    baked = get_family(G).name == "stylegan2" or bool(overrides.get("n_stats"))
    assert gen.truncation_baked is baked and gen.truncation == truncation


def test_metadata_round_trip(tmp_path):
    G = _model("biggan-deep-128", n_stats=11, sn_eval="stored")
    path = tmp_path / "deep.onnx"
    export_onnx(G, path, truncation=0.4, opset=18, source="somewhere/deep", class_names=list("abcde"))
    meta = read_metadata(path)
    assert meta["family"] == "biggan-deep" and meta["scalegan_version"] == scalegan.__version__
    assert scalegan.family.config_from_dict(meta["config"]) == G.config
    assert meta["truncation"] == 0.4 and meta["truncation_baked"] is True and meta["truncation_mode"] == "scale"
    assert meta["class_names"] == list("abcde") and meta["source"] == "somewhere/deep"
    assert meta["opset"] == 18 == meta["onnx_opset"]
    gen = load_onnx(path)
    assert gen.config == G.config and gen.class_names == list("abcde") and gen.family == "biggan-deep"


def test_fold_spectral_norm_is_the_same_function_without_power_iterations():
    G = _model("biggan-32", g_attn=(16,))
    folded = fold_spectral_norm(G)
    assert not any(isinstance(m, SpectralNorm) for m in folded.modules())
    assert any(isinstance(m, SpectralNorm) for m in G.modules())  # G itself untouched
    z, y = _inputs(G, 3, seed=0)
    with torch.no_grad():
        assert torch.allclose(folded(z, y), G(z, y), atol=1e-6)


def test_traceable_fast_path_equals_the_reference():
    G = _model("biggan-deep-128", n_stats=11, sn_eval="stored")
    z, y = _inputs(G, 3, seed=0)
    with torch.no_grad():
        expected = G(z, y, truncation=0.4)
        plain = fast_generator(G, 0.4, channels_last=False, traceable=True)(z, y)
    assert (plain - expected).abs().max() < 1e-5
    with pytest.raises(ValueError, match="channels_last=False"):
        fast_generator(G, 0.4, traceable=True)


def test_unconditional_and_conditional_inputs_are_checked(tmp_path):
    G = _model("biggan-32")
    export_onnx(G, tmp_path / "G.onnx")
    gen = load_onnx(tmp_path / "G.onnx")
    z = np.zeros((2, G.config.z_dim), np.float32)
    with pytest.raises(ValueError, match="class-conditional"):
        gen(z)
    with pytest.raises(ValueError, match="class indices in 0..4"):
        gen(z, [0, 5])
    assert gen(z, 3).shape[0] == 2  # one class for every image


def test_cli_export_end_to_end(tmp_path, capsys):
    G = _model("stylegan2-fmnist")
    folder = save_generator(G, tmp_path / "weights", class_names=[f"c{i}" for i in range(5)])
    out = tmp_path / "out" / "G.onnx"
    assert main(["export", str(folder), "--format", "onnx", str(out), "--truncation", "0.6", "--opset", "17",
                 "--threads", "1"]) == 0
    assert "wrote" in capsys.readouterr().err
    gen = load_onnx(out)
    assert gen.metadata["source"] == str(folder) and gen.class_names == [f"c{i}" for i in range(5)]
    assert gen.truncation == 0.6 and gen.metadata["config"]["family"] == "stylegan2"
    loaded, _ = scalegan.load(folder)
    z, y = _inputs(loaded, 7, seed=3)
    with torch.no_grad():
        expected = loaded(z, y, truncation=0.6).numpy()
    assert np.abs(gen(z.numpy(), y.numpy()) - expected).max() < TOLERANCE


@pytest.mark.parametrize("argv, hint", [
    (["--format", "tflite"], "invalid choice: 'tflite'"),
    (["--truncation", "-1"], "expected a finite number > 0"),
    (["--truncation", "abc"], "expected a finite number > 0"),
    (["--opset", "11"], "opset must be >= 14"),
])
def test_cli_bad_input_is_one_error_line(argv, hint, tmp_path, capsys):
    folder = save_generator(_model("biggan-32"), tmp_path / "weights")
    out = tmp_path / "G.onnx"
    assert main(["export", str(folder), str(out), *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("scalegan export: error: ") and hint in err[0], err
    assert not out.exists()
