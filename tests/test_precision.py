"""Mixed precision per family (``scalegan.precision``): which parts run in the reduced dtype under the family scope
and under ``all``, fp16's pre-normalised modulated convolutions, BigGAN's float32 spectral norm and statistics,
float32 losses, gradients and optimizer state, and the fp16 conv_clamp default."""

import json

import pytest
import torch
from conftest import tiny_overrides

import scalegan
from scalegan import precision
from scalegan.models.stylegan2 import modulated_conv2d

BF16 = torch.bfloat16


def stylegan2(**extra):
    torch.manual_seed(0)
    return scalegan.create_model("stylegan2-fmnist", **{**tiny_overrides("stylegan2-fmnist"), **extra})


def output_dtypes(net, names, run):
    """The dtype of each named sub-module's output (a tuple's first tensor) while ``run()`` runs."""
    seen, hooks = {}, []
    for name in names:
        def hook(module, args, out, name=name):
            out = out[0] if isinstance(out, tuple) else out
            seen[name] = out.dtype
        hooks.append(net.get_submodule(name).register_forward_hook(hook))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("scope", ["family", "all"])
def test_stylegan2_reduces_only_its_highest_resolutions(scope):
    G, D = stylegan2(num_fp16_res=2)  # 32 px: 16 and 32 reduced; mapping, 4, 8, image sum and epilogue float32
    assert [r for r in (4, 8, 16, 32) if G.config.reduced(r)] == [16, 32]
    G.train()
    z, y = torch.randn(4, G.config.z_dim), torch.tensor([0, 1, 2, 3])
    g_names = ["mapping", "synthesis.b4", "synthesis.b8", "synthesis.b16", "synthesis.b32"]
    d_names = ["b32", "b16", "b8", "mapping", "b4"]
    images = {}

    def run_g():
        with precision.autocast("cpu", BF16, scope):
            images["G"] = G(z, y)

    def run_d():
        with precision.autocast("cpu", BF16, scope):
            images["D"] = D(images["G"], y)

    g, d = output_dtypes(G, g_names, run_g), output_dtypes(D, d_names, run_d)
    if scope == "family":
        assert g == {"mapping": torch.float32, "synthesis.b4": torch.float32, "synthesis.b8": torch.float32,
                     "synthesis.b16": BF16, "synthesis.b32": BF16}
        assert d == {"b32": BF16, "b16": BF16, "b8": torch.float32, "mapping": torch.float32, "b4": torch.float32}
        assert images["G"].dtype == torch.float32  # the toRGB image sum
    else:  # everything in bf16 (the image sum's additions of bf16 toRGB outputs included)
        assert set(g.values()) == {BF16} and set(d.values()) == {BF16}
    assert images["D"].dtype == (torch.float32 if scope == "family" else BF16)


def test_float32_forward_does_not_depend_on_the_policy():
    G, _ = stylegan2(num_fp16_res=2)
    G_all, _ = stylegan2(num_fp16_res=0)
    G.eval(), G_all.eval()
    z, y = torch.randn(3, G.config.z_dim), torch.tensor([0, 1, 2])
    assert torch.equal(G(z, y), G_all(z, y))


def test_fp16_modulated_convolution_pre_normalises():
    """Large weights and styles overflow fp16 without stylegan2-ada's pre-normalisation; with it the fp16 result
    follows float32 (demodulation undoes the scale)."""
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 8, 8, 8), torch.randn(4, 8, 3, 3) * 300, torch.randn(2, 8) * 300 + 600
    reference = modulated_conv2d(x, weight, styles, fused=False)
    with torch.autocast("cpu", dtype=torch.float16):
        out = modulated_conv2d(x, weight, styles, fused=False)
        raw = torch.nn.functional.conv2d((x * styles[:, :, None, None]).half(), weight.half(), padding=1)
    assert not torch.isfinite(raw).all()  # what happens without it
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (out.float() - reference).norm() / reference.norm() < 5e-3


def test_biggan_keeps_spectral_norm_and_statistics_in_float32():
    torch.manual_seed(0)
    G, D = scalegan.create_model("biggan-fmnist", **tiny_overrides("biggan-fmnist"))
    G.train(), D.train()
    layer = next(m for m in D.modules() if hasattr(m, "sn_weight"))
    u = layer.u.clone()
    expected = layer.sn_weight()  # float32, outside autocast
    bn = next(m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              or type(m).__name__ == "ConditionalBatchNorm2d")
    inputs = {}

    def grab(module, args):
        inputs.setdefault("x", args[0].detach())

    bn.register_forward_pre_hook(grab)
    for scope, exact in (("family", True), ("all", False)):
        layer.u.copy_(u)
        with precision.autocast("cpu", BF16, scope):
            got = layer.sn_weight()
        assert got.dtype == torch.float32 and layer.u.dtype == torch.float32 and layer.sv.dtype == torch.float32
        assert torch.equal(got, expected) == exact, scope  # bf16 power iteration under "all" rounds
    z, y = torch.randn(8, G.config.z_dim), torch.arange(8) % G.config.n_classes
    with precision.autocast("cpu", BF16, "family"):
        fake = G(z, y)
        logits = D(fake, y)
    assert inputs["x"].dtype == BF16
    stats = next(b for n, b in bn.named_buffers() if n.endswith("running_mean"))
    assert stats.dtype == torch.float32
    momentum = bn.momentum if getattr(bn, "momentum", None) is not None else 0.1
    mean = inputs["x"].float().mean(dim=[0, 2, 3])
    # The statistics are accumulated in float32 from the bf16 activations (not rounded to bf16).
    assert torch.allclose(stats, mean * momentum, atol=1e-6)
    assert logits.float().dtype == torch.float32
    loss = torch.relu(1 + logits.float()).mean()
    loss.backward()
    assert {p.grad.dtype for p in D.parameters() if p.grad is not None} == {torch.float32}


def test_training_in_bf16_keeps_losses_weights_and_adam_state_float32(tiny_npz, tmp_path):
    from scalegan.training.checkpoint import latest_checkpoint_name
    from scalegan.training.config import TrainConfig
    from scalegan.training.loop import train

    cfg = TrainConfig.from_preset("stylegan2-fmnist", data=str(tiny_npz), out_dir=str(tmp_path / "run"),
                                  iterations=2, batch_size=4, precision="bf16", log_every=1, sample_every=0,
                                  model_overrides=dict(tiny_overrides("stylegan2-fmnist"), num_fp16_res=1))
    with pytest.warns(UserWarning) if not scalegan.hardware.bf16_supported("cpu") else _nothing():
        train(cfg)
    run = tmp_path / "run"
    state = torch.load(run / "checkpoints" / latest_checkpoint_name(run) / "state.pt", weights_only=True)
    for name in ("opt_G", "opt_D"):
        dtypes = {t.dtype for s in state[name]["state"].values() for t in s.values() if t.is_floating_point()}
        assert dtypes == {torch.float32}, name
    lines = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(line.get("loss_g"), float) for line in lines if "loss_g" in line)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fp16_training_clamps_stylegan2_convolutions_unless_set(tiny_npz):
    from scalegan.data import open_dataset
    from scalegan.training.config import TrainConfig
    from scalegan.training.loop import resolve_model_config

    dataset = open_dataset(str(tiny_npz), resolution=32)
    overrides = tiny_overrides("stylegan2-fmnist")

    def config(precision, **extra):
        cfg = TrainConfig.from_preset("stylegan2-fmnist", data=str(tiny_npz), precision=precision,
                                      model_overrides={**overrides, **extra})
        return resolve_model_config(cfg, dataset)

    assert config("fp16").conv_clamp == 256
    assert config("bf16").conv_clamp is None and config("float32").conv_clamp is None
    assert config("fp16", conv_clamp=64.0).conv_clamp == 64.0


def test_precision_scope_is_checked():
    from scalegan.training.config import TrainConfig

    with pytest.raises(ValueError, match="precision_scope"):
        TrainConfig.from_preset("stylegan2-fmnist", precision_scope="some").validate()
    with pytest.raises(ValueError, match="scope"):
        with precision.autocast("cpu", BF16, "some"):
            pass
