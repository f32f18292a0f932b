"""StyleGAN-XL network pickles -> scalegan's StyleGAN-XL, read without running anything from the file.

The fixtures write a tiny scalegan StyleGAN-XL (whose module and tensor names are the reference's) the way
stylegan_xl's training loop writes its snapshots: ``dill.dump`` of a dict whose G / G_ema are NVlabs persistent
objects (``module_src`` that would leave a marker), a stem ``Generator`` or a ``SuperresGenerator`` whose
constructor arguments are only the stage's (the architecture is in the recorded stem mapping and synthesis),
``mapping.embed`` a real ``torch.nn.Embedding`` with more rows than classes (pickled by class reference), and a
projected D made of classes from stand-in ``pg_modules`` / ``timm`` modules and torch.nn layers (by reference).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import pickletools
import sys
import types

import pytest
import torch
from test_convert_stylegan2_pkl import EasyDict, Evil, Persistent, module_src, nvlabs_modules
from test_convert_stylegan3_pkl import converts_back, record_generator, same_images

import scalegan
from scalegan.convert import ConvertError, convert, detect_format
from scalegan.convert.styleganxl_pkl import generator_from_pickle, read_xl_pickle
from scalegan.models.stylegan_xl import Generator, StyleGANXLConfig

dill = pytest.importorskip("dill")


def tiny_config(resolution: int, conditional: bool) -> StyleGANXLConfig:
    """A stem at 16 (-T, 4 layers) and 3-layer heads up to ``resolution``; a stem's pickle records no head_layers,
    so a stem keeps the default."""
    heads = {} if resolution == 16 else dict(head_layers=3)
    return StyleGANXLConfig(**heads,
        resolution=resolution, stem_resolution=16, n_classes=3 if conditional else 0, z_dim=8, w_dim=8, embed_dim=6,
        channel_base=256, channel_max=8, num_layers=4, margin_size=2, conv_clamp=256.0,
        magnitude_ema_beta=0.5 ** (32 / 20000))


def trained_like(cfg: StyleGANXLConfig, seed: int = 0):
    """(G, G_ema) in eval mode with every tensor non-trivial, G_ema != G."""
    G = Generator(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        G.synthesis.input.affine.weight.copy_(torch.randn(4, cfg.w_dim, generator=g) * 0.3)
        G.mapping.w_avg.copy_(torch.randn(G.mapping.w_avg.shape, generator=g))
        for name in G.synthesis.layer_names:
            getattr(G.synthesis, name).magnitude_ema.fill_(0.5 + torch.rand([], generator=g).item())
        G_ema = copy.deepcopy(G)
        for p in G_ema.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return G.eval(), G_ema.eval()


# ------------------------------------------------------------------------------ the writer
class ProjectedDiscriminator(torch.nn.Module):
    """Stands in for pg_modules.discriminator.ProjectedDiscriminator: not persistent, pickled by reference."""

    def __init__(self):
        super().__init__()
        self.feature_network = FeatureNet()
        self.disc = torch.nn.Conv2d(4, 1, 1)
        self.act = functools.partial(torch.nn.functional.leaky_relu, negative_slope=0.2)


class FeatureNet(torch.nn.Module):
    """Stands in for a timm backbone."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.shape, self.dtype = torch.Size([3, 4]), torch.float32  # torch values by reference


@contextlib.contextmanager
def xl_modules():
    """NVlabs' modules and stand-in ``pg_modules.discriminator`` / ``timm.models.efficientnet`` while writing."""
    disc, timm = types.ModuleType("pg_modules.discriminator"), types.ModuleType("timm.models.efficientnet")
    disc.ProjectedDiscriminator, timm.FeatureNet = ProjectedDiscriminator, FeatureNet
    ProjectedDiscriminator.__module__, FeatureNet.__module__ = disc.__name__, timm.__name__
    fake = {"pg_modules": types.ModuleType("pg_modules"), disc.__name__: disc, "timm": types.ModuleType("timm"),
            "timm.models": types.ModuleType("timm.models"), timm.__name__: timm}
    saved = {name: sys.modules.get(name) for name in fake}
    sys.modules.update(fake)
    try:
        with nvlabs_modules():
            # dill looks a global up as an attribute of its parent package: link each module into its parent.
            for name in (*fake, "torch_utils.persistence", "dnnlib.util"):
                parent, _, child = name.rpartition(".")
                if parent:
                    setattr(sys.modules[parent], child, sys.modules[name])
            yield
    finally:
        ProjectedDiscriminator.__module__ = FeatureNet.__module__ = __name__
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def record_xl(G: Generator, src: str) -> Persistent:
    """G as stylegan_xl records it: a stem Generator or a SuperresGenerator around the stem's mapping and synthesis
    objects (their constructor arguments the stem's), ``mapping.embed`` a plain torch Embedding of 5 rows."""
    cfg, stem = G.config, G.config.stem_config()
    n_stem_ws = cfg.num_layers + 2
    mapping_kwargs = EasyDict(num_layers=cfg.mapping_layers, rand_embedding=False)
    synthesis_kwargs = dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_layers=cfg.num_layers,
                            margin_size=cfg.margin_size, magnitude_ema_beta=cfg.magnitude_ema_beta, conv_kernel=3,
                            use_radial_filters=False, num_fp16_res=4, conv_clamp=256)
    recorded = record_generator(G, src)
    modules = recorded.state["_modules"]
    modules["mapping"].state["_init_kwargs"] = dict(z_dim=cfg.z_dim, c_dim=cfg.n_classes, w_dim=cfg.w_dim,
                                                    num_ws=n_stem_ws, **mapping_kwargs)
    modules["synthesis"].state["_init_kwargs"] = dict(w_dim=cfg.w_dim, img_resolution=stem.resolution,
                                                      img_channels=cfg.img_channels, **synthesis_kwargs)
    embed = torch.nn.Embedding(5, cfg.embed_dim).requires_grad_(False)
    with torch.no_grad():
        if cfg.n_classes:
            embed.weight[:cfg.n_classes] = G.mapping.embed.weight
        else:
            modules["mapping"].state["embed_proj"] = None
    modules["mapping"].state["_modules"]["embed"] = embed.eval()
    if cfg.superres_stages:
        return Persistent("SuperresGenerator", {**recorded.state, "_init_kwargs": dict(
            path_stem="stem/best_model.pkl", head_layers=cfg.head_layers, up_factor=2, c_dim=cfg.n_classes,
            img_resolution=cfg.resolution, img_channels=cfg.img_channels), "path_stem": "stem/best_model.pkl"},
            src)
    recorded.state["_init_kwargs"] = dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=mapping_kwargs,
                                          c_dim=cfg.n_classes, img_resolution=cfg.resolution,
                                          img_channels=cfg.img_channels, **synthesis_kwargs)
    return recorded


def write_xl_pickle(path, G, G_ema, marker, edit=None) -> bytes:
    """G and G_ema as a stylegan_xl snapshot, written with dill as its training loop does."""
    src = module_src(marker)
    data = dict(G=record_xl(G, src), D=ProjectedDiscriminator().eval().requires_grad_(False),
                G_ema=record_xl(G_ema, src), augment_pipe=None,
                training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="data.zip",
                                         use_labels=bool(G.config.n_classes), resolution=G.config.resolution),
                progress=dict(cur_nimg=torch.tensor(64000), pl_mean=torch.zeros([])))
    if edit is not None:
        edit(data)
    with xl_modules():
        raw = dill.dumps(data)
    path.write_bytes(raw)
    return raw


def globals_of(raw: bytes) -> set[str]:
    """GLOBAL and STACK_GLOBAL names ("module name"); a STACK_GLOBAL's two strings may come from the memo."""
    out, strings, memo, last = set(), [], {}, None
    for op, arg, _ in pickletools.genops(raw):
        if op.name == "GLOBAL":
            out.add(arg)
        elif op.name == "STACK_GLOBAL":
            out.add(" ".join(map(str, strings[-2:])))
        elif op.name == "MEMOIZE":
            memo[len(memo)] = last
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = last
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            strings.append(memo.get(arg))
        if isinstance(arg, str) and "UNICODE" in op.name:
            strings.append(arg)
        last = arg if "UNICODE" in op.name else None
    return out


CASES = [(16, True), (32, True), (64, False)]


@pytest.mark.parametrize("resolution, conditional", CASES, ids=[f"{r}-{'cond' if c else 'uncond'}" for r, c in CASES])
def test_dill_pickle_converts_to_the_generator_that_wrote_it(tmp_path, capsys, resolution, conditional):
    cfg = tiny_config(resolution, conditional)
    G, G_ema = trained_like(cfg)
    path, marker = tmp_path / "network-snapshot.pkl", tmp_path / "module_src.ran"
    raw = write_xl_pickle(path, G, G_ema, marker)
    names = globals_of(raw)
    assert {"torch.nn.modules.sparse Embedding", "pg_modules.discriminator ProjectedDiscriminator",
            "timm.models.efficientnet FeatureNet", "dill._dill _load_type", "torch Size", "torch float32"} <= names
    assert detect_format(path) == "stylegan-xl"
    data = read_xl_pickle(path)
    assert data["G_ema"].class_name == ("SuperresGenerator" if cfg.superres_stages else "Generator")
    assert data["D"].class_name == "pg_modules.discriminator.ProjectedDiscriminator"
    converts_back(generator_from_pickle, data, cfg, G, G_ema)
    assert not marker.exists() and capsys.readouterr() == ("", "")  # module_src never ran


def test_load_and_convert(tmp_path):
    cfg = tiny_config(32, True)
    G, G_ema = trained_like(cfg)
    path = tmp_path / "imagenet-tiny.pkl"
    write_xl_pickle(path, G, G_ema, tmp_path / "ran")
    loaded, info = scalegan.load(path)
    assert info.family == "stylegan-xl" and info.n_classes == 3
    same_images(loaded, G_ema)
    same_images(convert(path, weights="G")[0], G)


@pytest.mark.parametrize("kind", ["os.system", "dill lambda"])
def test_dangerous_globals_are_refused_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "ran"
    cfg = tiny_config(32, True)
    G, G_ema = trained_like(cfg)

    def plant(data):
        evil = Evil(__import__("os").system, f"touch {marker}") if kind == "os.system" else (lambda: open(marker, "w"))
        data["G_ema"].state["_modules"]["mapping"].state["hook"] = evil

    path = tmp_path / "evil.pkl"
    raw = write_xl_pickle(path, G, G_ema, tmp_path / "src.ran", edit=plant)
    if kind == "dill lambda":
        assert any(name.startswith("dill._dill _create_") for name in globals_of(raw))
    match = {"os.system": r"refusing the global (posix|os|nt)\.system",
             "dill lambda": r"refusing dill's .*_create"}[kind]
    with pytest.raises(ConvertError, match=match):
        read_xl_pickle(path)
    with pytest.raises(ConvertError):
        scalegan.load(path)
    assert not marker.exists()


def test_state_dict_layouts_the_reader_refuses(tmp_path):
    cfg = tiny_config(32, True)
    G, G_ema = trained_like(cfg)

    def four_fold(data):  # a stage that quadrupled the resolution
        data["G_ema"].state["_init_kwargs"]["up_factor"] = 4

    path = tmp_path / "x4.pkl"
    write_xl_pickle(path, G, G_ema, tmp_path / "ran", edit=four_fold)
    with pytest.raises(ConvertError, match="up_factor"):
        convert(path)
    assert generator_from_pickle(read_xl_pickle(path), "G").config == cfg
