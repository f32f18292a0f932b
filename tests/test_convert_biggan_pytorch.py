"""BigGAN-PyTorch generator state dicts -> scalegan: the converted model gives the output BigGAN-PyTorch's own
eval-mode forward gives.

BigGAN-PyTorch is not a package, so this file holds (1) a state dict built with exactly its key names and shapes
(ImageNet layout: ``blocks.{i}.0`` GBlocks, ``blocks.{i}.1`` attention, ``u0`` / ``sv0`` SN buffers,
``stored_mean`` / ``stored_var``, ``output_layer.{0,2}``) and (2) a small functional forward with its eval-mode
semantics: one power iteration from the stored ``u0`` per SN layer (eps 1e-6, ``u0`` not written back), ccbn
``bn(x) * (1 + gain(c)) + bias(c)`` with ``c = [shared(y), z_chunk]``, BN eps 1e-5.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import scalegan
from scalegan.convert import ConvertError, detect_format
from scalegan.convert.biggan_pytorch import convert_file, convert_state_dict

# 128 px: channel multipliers in/out per G block; attention after the block whose output is 64x64 (block 3).
G_IN, G_OUT, ATTN_BLOCK = [16, 16, 8, 4, 2], [16, 8, 4, 2, 1], 3
SN_EPS, BN_EPS = 1e-6, 1e-5


def biggan_pytorch_state(ch: int = 8, z_dim: int = 120, shared: int = 128, n_classes: int = 1000, seed: int = 0):
    """A random state dict with BigGAN-PyTorch's G key names and shapes (ImageNet 128 layout)."""
    g = torch.Generator().manual_seed(seed)
    chunk = z_dim // (len(G_IN) + 1)
    state: dict[str, torch.Tensor] = {}

    def sn(prefix, out_features, weight_shape, bias=True):
        state[f"{prefix}.weight"] = torch.randn(weight_shape, generator=g) * 0.2
        if bias:
            state[f"{prefix}.bias"] = torch.randn(out_features, generator=g) * 0.1
        state[f"{prefix}.u0"] = torch.randn(1, out_features, generator=g)
        state[f"{prefix}.sv0"] = torch.ones(1)

    state["shared.weight"] = torch.randn(n_classes, shared, generator=g)
    sn("linear", G_IN[0] * ch * 16, (G_IN[0] * ch * 16, chunk))
    for i, (cin, cout) in enumerate(zip(G_IN, G_OUT)):
        cin, cout = cin * ch, cout * ch
        for name, width in (("bn1", cin), ("bn2", cout)):
            sn(f"blocks.{i}.0.{name}.gain", width, (width, shared + chunk), bias=False)
            sn(f"blocks.{i}.0.{name}.bias", width, (width, shared + chunk), bias=False)
            state[f"blocks.{i}.0.{name}.stored_mean"] = torch.randn(width, generator=g) * 0.2
            state[f"blocks.{i}.0.{name}.stored_var"] = torch.rand(width, generator=g) + 0.5
        sn(f"blocks.{i}.0.conv1", cout, (cout, cin, 3, 3))
        sn(f"blocks.{i}.0.conv2", cout, (cout, cout, 3, 3))
        sn(f"blocks.{i}.0.conv_sc", cout, (cout, cin, 1, 1))
        if i == ATTN_BLOCK:
            sn(f"blocks.{i}.1.theta", cout // 8, (cout // 8, cout, 1, 1), bias=False)
            sn(f"blocks.{i}.1.phi", cout // 8, (cout // 8, cout, 1, 1), bias=False)
            sn(f"blocks.{i}.1.g", cout // 2, (cout // 2, cout, 1, 1), bias=False)
            sn(f"blocks.{i}.1.o", cout, (cout, cout // 2, 1, 1), bias=False)
            state[f"blocks.{i}.1.gamma"] = torch.tensor(0.8)
    width = G_OUT[-1] * ch
    state["output_layer.0.gain"] = torch.rand(width, generator=g) + 0.5
    state["output_layer.0.bias"] = torch.randn(width, generator=g) * 0.1
    state["output_layer.0.stored_mean"] = torch.randn(width, generator=g) * 0.2
    state["output_layer.0.stored_var"] = torch.rand(width, generator=g) + 0.5
    sn("output_layer.2", 3, (3, width, 3, 3))
    return state


# ------------------------------------------------------------------------------ BigGAN-PyTorch eval-mode reference
def ref_sn(state, prefix):
    """W / sigma with sigma from one power iteration starting at the stored u0 (u0 is not updated in eval)."""
    w = state[f"{prefix}.weight"]
    w_mat = w.reshape(w.shape[0], -1)
    v = F.normalize(state[f"{prefix}.u0"] @ w_mat, eps=SN_EPS)
    u = F.normalize(v @ w_mat.t(), eps=SN_EPS)
    sigma = ((v @ w_mat.t()) @ u.t()).squeeze()
    return w / sigma


def ref_conv(state, prefix, x):
    return F.conv2d(x, ref_sn(state, prefix), state.get(f"{prefix}.bias"), padding=ref_sn(state, prefix).shape[-1] // 2)


def ref_ccbn(state, prefix, x, c):
    out = F.batch_norm(x, state[f"{prefix}.stored_mean"], state[f"{prefix}.stored_var"], None, None, False, 0.1,
                       BN_EPS)
    gain = 1 + c @ ref_sn(state, f"{prefix}.gain").t()
    bias = c @ ref_sn(state, f"{prefix}.bias").t()
    return out * gain[:, :, None, None] + bias[:, :, None, None]


def ref_attention(state, prefix, x):
    n, ch, h, w = x.shape
    theta = ref_conv(state, f"{prefix}.theta", x).view(n, ch // 8, h * w)
    phi = F.max_pool2d(ref_conv(state, f"{prefix}.phi", x), 2).view(n, ch // 8, h * w // 4)
    g = F.max_pool2d(ref_conv(state, f"{prefix}.g", x), 2).view(n, ch // 2, h * w // 4)
    beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
    o = ref_conv(state, f"{prefix}.o", torch.bmm(g, beta.transpose(1, 2)).view(n, ch // 2, h, w))
    return x + state[f"{prefix}.gamma"] * o


def ref_forward(state, z, y):
    chunk = state["linear.weight"].shape[1]
    zs = torch.split(z, chunk, 1)
    embedding = state["shared.weight"][y]
    conds = [torch.cat([embedding, zc], 1) for zc in zs[1:]]
    h = F.linear(zs[0], ref_sn(state, "linear"), state["linear.bias"]).view(z.shape[0], -1, 4, 4)
    for i in range(len(G_IN)):
        pre = f"blocks.{i}.0"
        x = h
        h = F.relu(ref_ccbn(state, f"{pre}.bn1", h, conds[i]))
        h = F.interpolate(h, scale_factor=2)
        x = F.interpolate(x, scale_factor=2)
        h = ref_conv(state, f"{pre}.conv1", h)
        h = F.relu(ref_ccbn(state, f"{pre}.bn2", h, conds[i]))
        h = ref_conv(state, f"{pre}.conv2", h) + ref_conv(state, f"{pre}.conv_sc", x)
        if f"blocks.{i}.1.gamma" in state:
            h = ref_attention(state, f"blocks.{i}.1", h)
    h = F.batch_norm(h, state["output_layer.0.stored_mean"], state["output_layer.0.stored_var"],
                     state["output_layer.0.gain"], state["output_layer.0.bias"], False, 0.1, BN_EPS)
    return torch.tanh(ref_conv(state, "output_layer.2", F.relu(h)))


# ------------------------------------------------------------------------------ tests
def test_identical_to_reference_forward():
    state = biggan_pytorch_state()
    G = convert_state_dict(state)
    cfg = G.config
    assert (cfg.resolution, cfg.ch, cfg.z_dim, cfg.shared_dim, cfg.g_attn, cfg.hier) == (128, 8, 120, 128, (64,), True)
    z = torch.randn(3, 120, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([207, 0, 999])
    with torch.no_grad():
        expected = ref_forward(state, z, y)
        ours = G(z, y)
        again = G(z, y)  # eval mode: u is not written back, the output does not drift
    assert expected.abs().mean() > 0.05
    assert (ours - expected).abs().max().item() <= 1e-5
    assert torch.equal(ours, again)
    assert torch.equal(G.linear.u, state["linear.u0"])  # untouched by eval forwards


def test_full_size_parameter_count():
    state = biggan_pytorch_state(ch=96)
    G = convert_state_dict(state)
    assert scalegan.registry.count_parameters(G) == 70_433_988


def test_key_errors_name_the_keys():
    state = biggan_pytorch_state()
    broken = dict(state)
    del broken["blocks.2.0.bn2.stored_var"]
    broken["blocks.1.0.conv1.u1"] = torch.zeros(1, 64)
    broken["blocks.0.0.conv2.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(ConvertError) as info:
        convert_state_dict(broken)
    message = str(info.value)
    for key in ("blocks.2.0.bn2.stored_var", "blocks.1.0.conv1.u1", "blocks.0.0.conv2.weight: found [3, 3, 3, 3]"):
        assert key in message


def test_files_folders_and_load(tmp_path):
    state = biggan_pytorch_state()
    torch.save(state, tmp_path / "G.pth")
    assert detect_format(tmp_path) == "biggan-pytorch"
    G, info = scalegan.load(tmp_path)  # no G_ema.pth: falls back to G.pth
    assert info.class_names[207] == "golden retriever" and info.family == "biggan"
    z = torch.randn(2, 120)
    y = torch.tensor([1, 2])
    with torch.no_grad():
        assert (G(z, y) - ref_forward(state, z, y)).abs().max() <= 1e-5
    other = biggan_pytorch_state(seed=1)
    torch.save(other, tmp_path / "G_ema.pth")
    with torch.no_grad():
        assert (convert_file(tmp_path)(z, y) - ref_forward(other, z, y)).abs().max() <= 1e-5
        assert (scalegan.load(tmp_path, weights="G")[0](z, y) - ref_forward(state, z, y)).abs().max() <= 1e-5
    with pytest.raises(ConvertError, match="not a BigGAN-PyTorch"):
        convert_state_dict({"linear.weight": torch.zeros(2, 2)})
