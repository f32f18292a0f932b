"""Optional parity tests: scalegan's StyleGAN3 and StyleGAN-XL generators against the reference implementations.

Skipped unless environment variables name checkouts of the reference repositories, which these tests import and run
from that path (nothing of them is copied here):

    SCALEGAN_STYLEGAN3_REPO=/path/to/NVlabs/stylegan3 \
    SCALEGAN_STYLEGAN_XL_REPO=/path/to/autonomousvision/stylegan_xl \
    pytest tests/test_parity_reference.py

On CPU their custom ops (bias_act, upfirdn2d, filtered_lrelu) run their plain-PyTorch reference paths, so no plugin
is built. For small -T and -R configurations, conditional and unconditional (StyleGAN3 at 32 px; StyleGAN-XL with a
16 px stem and one head to 32 px, or two to 64 px), each test builds the reference G (seeded), loads its state dict
into scalegan's G, sets the tracked average W, the magnitude EMAs and the input's affine and transform to the same
non-trivial values in both, and compares eval-mode images on the same z and classes at truncation 1 and 0.7
(float32, max abs difference <= 1e-5 on images of magnitude ~1; observed <= 3e-6), and the parameter counts. Known
state-dict differences, asserted exactly: scalegan's conditional StyleGAN3 mapping has an extra
``mapping.w_avg_class`` buffer (per-class truncation centres; all zeros means "use w_avg", NVlabs' behaviour), and
StyleGAN-XL's reference mapping always holds the 1000 x 320 ImageNet embedding (unused when unconditional; with
fewer classes only the first rows are looked up), which scalegan keeps as n_classes rows, as its converter does.
"""

import contextlib
import importlib
import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from scalegan.models import stylegan3, stylegan_xl
from scalegan.registry import count_parameters

ATOL = 1e-5  # float32 images of magnitude ~1; the two compute the same function with differently ordered ops
_SHARED = ("training", "torch_utils", "dnnlib", "legacy")  # top-level packages both reference repositories define


def _repo(var: str) -> str:
    path = os.environ.get(var)
    if not path:
        pytest.skip(f"optional parity test: set {var} to a checkout of the reference repository to run it")
    return path


@contextlib.contextmanager
def _reference(repo: str, module: str):
    """Import ``module`` from ``repo`` and keep the repository on sys.path and its packages in sys.modules while
    the block runs (its persistence check pickles by module name at construction); afterwards put back what was
    there, so the two repositories' same-named packages never meet."""
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in _SHARED or k == "pkg_resources"}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, repo)
    try:
        try:
            import pkg_resources  # noqa: F401  (stylegan3's torch_utils wants parse_version)
        except ImportError:  # setuptools absent: packaging's parse_version is the same function
            import packaging.version
            sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=packaging.version.parse)
        yield importlib.import_module(module)
    finally:
        sys.path.remove(repo)
        for k in [k for k in sys.modules if k.split(".")[0] in _SHARED or k == "pkg_resources"]:
            del sys.modules[k]
        sys.modules.update(saved)


def _sync_state(ref: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial values for what initialisation leaves trivial, in the reference (before its state dict is
    copied): the tracked average W, each layer's magnitude EMA, the Fourier input's affine (rotation, translation)
    and its user transform."""
    with torch.no_grad():
        ref.mapping.w_avg.copy_(torch.randn(ref.mapping.w_avg.shape, generator=generator))
        for module in ref.synthesis.modules():
            if hasattr(module, "magnitude_ema"):
                module.magnitude_ema.copy_(torch.rand([], generator=generator) + 0.5)
        affine = ref.synthesis.input.affine
        affine.weight.copy_(torch.randn(affine.weight.shape, generator=generator))
        angle = 0.3
        ref.synthesis.input.transform.copy_(torch.tensor(
            [[torch.cos(torch.tensor(angle)), -torch.sin(torch.tensor(angle)), 0.1],
             [torch.sin(torch.tensor(angle)), torch.cos(torch.tensor(angle)), -0.2], [0, 0, 1]]))


def _compare(ref, G, z_dim: int, n_classes: int, generator: torch.Generator) -> None:
    z = torch.randn(4, z_dim, generator=generator)
    y = torch.tensor([0, 1, 2, n_classes - 1]) if n_classes else None
    c = F.one_hot(y, n_classes).float() if n_classes else torch.zeros(4, 0)
    for psi in (1.0, 0.7):
        with torch.no_grad():
            expected = ref(z, c, truncation_psi=psi)
            actual = G(z, y, truncation=psi)
        assert actual.shape == expected.shape
        difference = (actual - expected).abs().max().item()
        assert difference <= ATOL, f"truncation {psi}: max abs difference {difference:.3g}"
        assert expected.abs().max() > 0.05  # not a comparison of two near-zero images


def _channels(kind: str, base: int, cmax: int) -> dict:
    r = kind == "r"  # -R: 1x1 convolutions, radial filters, G's channels doubled
    return dict(channel_base=base * (2 if r else 1), channel_max=cmax * (2 if r else 1), conv_kernel=1 if r else 3,
                use_radial_filters=r)


@pytest.mark.parametrize("n_classes", [0, 5])
@pytest.mark.parametrize("kind", ["t", "r"])
def test_stylegan3_matches_nvlabs(kind, n_classes):
    with _reference(_repo("SCALEGAN_STYLEGAN3_REPO"), "training.networks_stylegan3") as net:
        _check_stylegan3(net, kind, n_classes)


def _check_stylegan3(net, kind: str, n_classes: int) -> None:
    synthesis = dict(num_layers=6, margin_size=4, **_channels(kind, 1024, 16))
    torch.manual_seed(0)
    ref = net.Generator(z_dim=16, c_dim=n_classes, w_dim=16, img_resolution=32, img_channels=3,
                        mapping_kwargs=dict(num_layers=2), num_fp16_res=0, **synthesis).eval()
    G = stylegan3.Generator(stylegan3.StyleGAN3Config(resolution=32, n_classes=n_classes, img_channels=3, z_dim=16,
                                                      w_dim=16, mapping_layers=2, **synthesis)).eval()
    generator = torch.Generator().manual_seed(1)
    _sync_state(ref, generator)
    result = G.load_state_dict(ref.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys == (["mapping.w_avg_class"] if n_classes else [])  # zeros: centre = w_avg, as NVlabs
    assert count_parameters(G) == sum(p.numel() for p in ref.parameters())
    _compare(ref, G, 16, n_classes, generator)


# (classes, resolution): 1000 loads the reference's ImageNet-sized embedding as it is; 5 keeps its first 5 rows (the
# lookups use only those, as scalegan's converter does); 64 px grows the 16 px stem by two stages, each built on the
# previous generator as the reference's progressive training does.
@pytest.mark.parametrize(("n_classes", "resolution"), [(0, 32), (1000, 32), (5, 64)])
@pytest.mark.parametrize("kind", ["t", "r"])
def test_stylegan_xl_matches_reference(kind, n_classes, resolution, monkeypatch):
    repo = _repo("SCALEGAN_STYLEGAN_XL_REPO")
    with _reference(repo, "training.networks_stylegan3_resetting") as net:
        _check_stylegan_xl(net, repo, kind, n_classes, resolution, monkeypatch)


def _check_stylegan_xl(net, repo: str, kind: str, n_classes: int, resolution: int, monkeypatch) -> None:
    monkeypatch.chdir(repo)  # the mapping reads in_embeddings/tf_efficientnet_lite0.pkl by a relative path
    synthesis = dict(num_layers=4, margin_size=4, **_channels(kind, 1024, 16))
    torch.manual_seed(0)
    ref = net.Generator(z_dim=16, c_dim=n_classes, w_dim=16, img_resolution=16, img_channels=3,
                        mapping_kwargs=dict(num_layers=2, rand_embedding=True), num_fp16_res=0, **synthesis)
    # SuperresGenerator loads the generator it grows from a pickle: hand it the one just built.
    monkeypatch.setattr(net.dnnlib.util, "open_url", lambda *args, **kwargs: contextlib.nullcontext())
    for size in range(5, resolution.bit_length()):
        monkeypatch.setattr(net.legacy, "load_network_pkl", lambda f, stem=ref: {"G_ema": stem})
        ref = net.SuperresGenerator(img_resolution=2 ** size, path_stem="stem", head_layers=3, up_factor=2,
                                    num_fp16_res=0, **synthesis)
    ref.eval()
    G = stylegan_xl.Generator(stylegan_xl.StyleGANXLConfig(
        resolution=resolution, stem_resolution=16, head_layers=3, n_classes=n_classes, img_channels=3, z_dim=16,
        w_dim=16, embed_dim=320, mapping_layers=2, **synthesis)).eval()
    assert G.synthesis.layer_names == ref.synthesis.layer_names
    generator = torch.Generator().manual_seed(1)
    _sync_state(ref, generator)
    state = ref.state_dict()
    embed = state.pop("mapping.embed.weight")
    assert tuple(embed.shape) == (1000, 320)  # the ImageNet embedding, whatever the classes (unused unconditional)
    if n_classes:
        state["mapping.embed.weight"] = embed[:n_classes]
    G.load_state_dict(state, strict=True)
    assert count_parameters(G) + (1000 - n_classes) * 320 == sum(p.numel() for p in ref.parameters())
    _compare(ref, G, 16, n_classes, generator)
