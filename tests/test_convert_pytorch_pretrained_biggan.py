"""pytorch-pretrained-biggan folders -> scalegan: identical outputs, truncation-indexed BN statistics, key errors,
``scalegan.load`` / ``scalegan convert`` / ``scalegan sample`` on converted weights.

The reference is the PyPI package itself (a dev dependency) in eval mode with random weights; a missing package
fails these tests instead of skipping them.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import scalegan
from scalegan.convert import ConvertError, convert, detect_format, save_converted
from scalegan.convert.pytorch_pretrained_biggan import convert_state_dict
from scalegan.layers import truncation_row

try:
    from pytorch_pretrained_biggan import BigGAN as PortBigGAN
    from pytorch_pretrained_biggan import BigGANConfig as PortConfig
except ImportError:  # pragma: no cover - the failure message below is the point
    PortBigGAN = PortConfig = None

LAYERS = {
    128: [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8), (True, 8, 4),
          (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)],
    256: [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8), (True, 8, 8),
          (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)],
}
LAYERS[512] = LAYERS[256] + [(False, 1, 1), (True, 1, 1)]
TRUNCATIONS = (0.14, 0.4, 0.58, 1.0)


def port_model(resolution: int, ch: int = 8, seed: int = 0):
    """A random pytorch-pretrained-biggan model in eval mode whose output is finite and not trivial.

    A fresh port model needs: its output BN weight/bias set (left uninitialised), and spectral-norm vectors
    u, v that match the weights (random ones give sigma ~ 0 and the output overflows), here from 30 power
    iterations. BN statistics rows and attention gamma are randomised so that every part matters.
    """
    if PortBigGAN is None:
        pytest.fail("pytorch-pretrained-biggan is not installed; it is a dev dependency: "
                    "pip install -c constraints.txt -e '.[dev]'")
    torch.manual_seed(seed)
    config = PortConfig(output_dim=resolution, channel_width=ch, layers=LAYERS[resolution],
                        attention_layer_position=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PortBigGAN(config)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_means"):
                buf.copy_(0.3 * torch.randn(buf.shape, generator=g))
            elif name.endswith("running_vars"):
                buf.uniform_(0.5, 2.0, generator=g)
        model.generator.bn.weight.uniform_(0.5, 1.5, generator=g)
        model.generator.bn.bias.normal_(0.0, 0.2, generator=g)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.7)
        for module in model.modules():
            if hasattr(module, "weight_u"):
                w = module.weight_orig.reshape(module.weight_orig.shape[0], -1)
                u = module.weight_u
                for _ in range(30):
                    v = F.normalize(w.t() @ u, dim=0)
                    u = F.normalize(w @ v, dim=0)
                module.weight_u.copy_(u)
                module.weight_v.copy_(v)
    return model.eval(), config


def save_port_folder(model, config, folder):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config.__dict__))
    return folder


def inputs(n=2, truncation=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = truncation * torch.randn(n, 128, generator=g).clamp(-2, 2)
    y = torch.tensor([207, 3, 980, 1][:n])
    return z, y


@pytest.mark.parametrize("resolution", [128, 256, 512])
def test_identical_outputs_reduced_width(resolution):
    model, config = port_model(resolution)
    G = convert_state_dict(model.state_dict(), config.__dict__)
    assert G.config.n_stats == 51 and G.config.sn_eval == "stored"
    for t in TRUNCATIONS:
        z, y = inputs(2, t, seed=int(100 * t))
        with torch.no_grad():
            expected = model(z, F.one_hot(y, 1000).float(), t)
            ours = G(z, y, truncation=t)
        assert ours.shape == expected.shape == (2, 3, resolution, resolution)
        diff = (ours - expected).abs().max().item()
        assert diff <= 1e-5, f"{resolution} px, truncation {t}: max |diff| {diff}"
        assert expected.abs().mean() > 0.05  # not a degenerate all-zero comparison


def test_identical_outputs_full_size_128():
    model, config = port_model(128, ch=128)
    G = convert_state_dict(model.state_dict(), config.__dict__)
    assert scalegan.registry.count_parameters(G) == 50_388_609  # the 51 rows of BN statistics are buffers
    z, y = inputs(1, 0.4)
    with torch.no_grad():
        diff = (G(z, y, truncation=0.4) - model(z, F.one_hot(y, 1000).float(), 0.4)).abs().max().item()
    assert diff <= 1e-5


def test_truncation_statistics_port_and_linear():
    stats = torch.randn(51, 6, dtype=torch.float32)
    # 0.415 / 0.02 = 20.75: the port weights row 20 by 0.75 (a correct lerp would weight row 21 by 0.75).
    coef, start = math.modf(0.415 / 0.02)
    assert torch.equal(truncation_row(stats, 0.415, "port"), stats[20] * coef + stats[21] * (1 - coef))
    assert torch.allclose(truncation_row(stats, 0.415, "linear"), stats[20] * 0.25 + stats[21] * 0.75, atol=1e-6)
    # 0.58 / 0.02 = 28.999999999999996 in double precision: the port ends up on row 28 (truncation 0.56).
    assert torch.allclose(truncation_row(stats, 0.58, "port"), stats[28], atol=1e-6)
    assert torch.allclose(truncation_row(stats, 0.58, "linear"), stats[29], atol=1e-6)
    assert torch.equal(truncation_row(stats, 1.0, "port"), stats[50])
    assert torch.equal(truncation_row(stats, 0.4, "port"), stats[20])


def test_truncation_selects_rows_per_call_and_linear_option():
    model, config = port_model(128)
    G = convert_state_dict(model.state_dict(), config.__dict__)
    bn = G.blocks[0].bn0
    before = {k: v.clone() for k, v in G.state_dict().items()}
    z, y = inputs(1, 0.415)
    with torch.no_grad():
        port_out = G(z, y, truncation=0.415)
        rows = []
        handle = bn.register_forward_hook(lambda m, inp, out: rows.append(inp[0]))
        G(z, y, truncation=0.415)
        handle.remove()
        G.stats_interpolation = "linear"
        linear_out = G(z, y, truncation=0.415)
        G.stats_interpolation = "port"
    # The BN normalised with the row of truncation 0.415 (checked by hand on its input), and nothing was written.
    mean, var = truncation_row(bn.stats_mean, 0.415, "port"), truncation_row(bn.stats_var, 0.415, "port")
    x = (rows[0] - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + bn.eps)
    gain, bias = bn.gain(torch.cat([z, G.class_embedding(y)], 1)), bn.bias(torch.cat([z, G.class_embedding(y)], 1))
    with torch.no_grad():
        assert torch.allclose(bn(rows[0], torch.cat([z, G.class_embedding(y)], 1), 0.415),
                              x * (1 + gain[:, :, None, None]) + bias[:, :, None, None], atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert (port_out - linear_out).abs().max() > 1e-4  # the two interpolations differ
    G.stats_interpolation = "cubic"
    with pytest.raises(ValueError, match="interpolation"):
        G(z, y, truncation=0.5)


def test_key_errors_name_the_keys():
    model, config = port_model(128)
    state = model.state_dict()
    broken = dict(state)
    del broken["generator.layers.3.conv_1.weight_orig"]
    broken["generator.extra.weight"] = torch.zeros(1)
    broken["generator.gen_z.bias"] = torch.zeros(5)
    with pytest.raises(ConvertError) as info:
        convert_state_dict(broken, config.__dict__)
    message = str(info.value)
    assert "generator.layers.3.conv_1.weight_orig" in message
    assert "generator.extra.weight" in message
    assert "generator.gen_z.bias: found [5]" in message


def test_folder_load_convert_and_save(tmp_path):
    model, config = port_model(128)
    folder = save_port_folder(model, config, tmp_path / "biggan-deep-128")
    assert detect_format(folder) == "pytorch-pretrained-biggan"
    G, info = scalegan.load(folder)  # converted on the fly
    z, y = inputs(2, 0.5)
    with torch.no_grad():
        expected = model(z, F.one_hot(y, 1000).float(), 0.5)
        assert (G(z, y, truncation=0.5) - expected).abs().max() <= 1e-5
    assert info.class_names[207] == "golden retriever" and info.class_ids[207] == "n02099601"

    # scalegan convert SRC OUT, then scalegan.load(OUT): the same outputs from safetensors + config.json.
    from scalegan.cli import main

    out = tmp_path / "converted"
    assert main(["convert", str(folder), str(out), "--device", "cpu"]) == 0
    info = json.loads((out / "config.json").read_text())
    assert info["class_ids"][207] == "n02099601" and info["model"]["n_stats"] == 51
    assert info["converted_from"]["format"] == "pytorch-pretrained-biggan"
    H, _ = scalegan.load(out)
    with torch.no_grad():
        assert (H(z, y, truncation=0.5) - expected).abs().max() <= 1e-5


def test_weights_only_loading_rejects_pickled_code(tmp_path):
    folder = tmp_path / "port"
    folder.mkdir()
    torch.save({"x": torch.zeros(1), "obj": argparse.Namespace(a=1)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConvertError, match="weights-only"):
        convert(folder)


# ------------------------------------------------------------------------------ scalegan sample on converted weights
def test_sample_cli_with_converted_model(tmp_path, capsys):
    from PIL import Image

    from scalegan.cli import main

    model, config = port_model(128)
    out = save_converted(*convert(save_port_folder(model, config, tmp_path / "port")), tmp_path / "w")
    G, info = scalegan.load(out)
    grid = tmp_path / "grid.png"
    args = ["sample", str(out), "--class", "golden retriever", "--class", "n02099601", "--class", "3",
            "--per-class", "2", "--truncation", "0.5", "--seed", "7", "--grid", str(grid), "--npz",
            str(tmp_path / "s.npz"), "--save-latents"]
    assert main(args) == 0
    data = np.load(tmp_path / "s.npz")
    assert data["x"].shape == (6, 128, 128, 3) and data["y"].tolist() == [207, 207, 207, 207, 3, 3]
    assert Image.open(grid).size[0] > 2 * 128
    # The same seed gives the same z and y as scalegan.sample: for converted BigGAN-deep, z = 0.5 * truncnorm(-2, 2)
    # (the "scale" mode its per-truncation BN statistics were computed for), and the statistics of --truncation.
    from scalegan.latents import sample_z
    from scalegan.utils import to_hwc

    z = sample_z(6, 128, 0.5, "scale", generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        again = to_hwc(G(z, torch.as_tensor(data["y"]), truncation=0.5))
    assert np.array_equal(again, data["x"]) and np.allclose(data["z"], z.numpy())
    gif = tmp_path / "interp.gif"
    assert main(["sample", str(out), "--interp", "class", "--class", "golden retriever", "--class", "tabby",
                 "--rows", "1", "--steps", "3", "--gif", str(gif)]) == 0
    assert gif.stat().st_size > 0
    with pytest.raises(ValueError, match="golden retriever"):
        scalegan.sampling.resolve_class("golden retreiver", info.class_names, 1000)


def test_sample_cli_truncation_selects_bn_statistics(tmp_path):
    from scalegan.cli import main

    model, config = port_model(128)
    out = save_converted(*convert(save_port_folder(model, config, tmp_path / "port")), tmp_path / "w")
    assert main(["sample", str(out), "--class", "207", "--n", "2", "--truncation", "0.4", "--seed", "3",
                 "--npz", str(tmp_path / "s.npz")]) == 0
    G, _ = scalegan.load(out)
    expected = scalegan.sample(G, 2, y=207, truncation=0.4, seed=3)
    from scalegan.utils import to_hwc

    assert np.array_equal(to_hwc(expected), np.load(tmp_path / "s.npz")["x"])
