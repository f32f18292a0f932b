"""stylegan2-ada-pytorch network pickles -> scalegan, read without running anything from the file.

NVlabs' code cannot run here (its licence, and no network to fetch it or the released files), so the equality with
their generator is shown through the file format: ``write_network_pickle`` writes a pickle the way
stylegan2-ada-pytorch's training loop does, from a scalegan StyleGAN2 (whose module and tensor names and shapes are
NVlabs'): Python's ``pickle`` of ``dict(training_set_kwargs, G, D, G_ema, augment_pipe)``, every network and submodule
a ``torch_utils.persistence`` object that pickles as ``_reconstruct_persistent_obj(meta)`` with ``meta = {type:
"class", version: 6, module_src, class_name, state}``, ``state`` the torch module ``__dict__`` (``_parameters``,
``_buffers``, ``_modules``, hook dicts, ``_non_persistent_buffers_set``, numpy float64 gains, ``_init_args`` /
``_init_kwargs`` with ``dnnlib.util.EasyDict`` options as NVlabs' ``train.py`` sets them), tensors as parameters
with gradients off. Protocol 3 with numpy 1.x's names is what Python 3.7 + numpy 1.x (NVlabs' requirements) wrote;
protocol 4 with numpy 2.x's names is tested too. ``module_src`` is code that would leave a marker file and raise.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import pickle
import pickletools
import sys
import types

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

import scalegan
from scalegan.cli import main
from scalegan.convert import ConvertError, convert, detect_format
from scalegan.convert.stylegan2_pkl import (
    RecordedObject,
    convert_pickle,
    discriminator_from_pickle,
    generator_from_pickle,
    read_network_pickle,
)
from scalegan.utils import to_hwc


# ------------------------------------------------------------------------------ NVlabs' modules, as pickle sees them
def _reconstruct_persistent_obj(meta):  # pickled by reference; a reader that called it would fail loudly
    raise AssertionError("NVlabs' _reconstruct_persistent_obj must never run")


class EasyDict(dict):
    """dnnlib.util.EasyDict: a dict with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
EasyDict.__module__ = "dnnlib.util"


@contextlib.contextmanager
def nvlabs_modules():
    """``torch_utils.persistence`` and ``dnnlib.util`` in ``sys.modules`` while writing only (pickle checks that a
    global it writes can be found there); the reader never finds them."""
    persistence, util = types.ModuleType("torch_utils.persistence"), types.ModuleType("dnnlib.util")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util.EasyDict = EasyDict
    fake = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
            "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    saved = {name: sys.modules.get(name) for name in fake}
    sys.modules.update(fake)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Persistent:
    """A ``persistence.persistent_class`` instance: pickles as ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, class_name: str, state: dict, module_src: str):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name,
                    state=self.state)
        return _reconstruct_persistent_obj, (meta,), None


def _module_state(module: torch.nn.Module, children: dict, init_kwargs: dict) -> dict:
    """A torch 1.7 module ``__dict__`` of ``module`` (eval, gradients off), its numbers as NVlabs stores them."""
    hooks = ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks",
             "_load_state_dict_pre_hooks")
    state = {"training": False, **{h: collections.OrderedDict() for h in hooks},
             "_parameters": collections.OrderedDict(
                 (n, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
                 for n, p in module._parameters.items() if p is not None),
             "_buffers": collections.OrderedDict((n, b.detach().clone()) for n, b in module._buffers.items()
                                                 if n != "w_avg_class"),  # scalegan's own, not in NVlabs' files
             "_non_persistent_buffers_set": set(), "_modules": collections.OrderedDict(children)}
    for name, value in vars(module).items():  # the constructor's attributes; NVlabs' gains are numpy float64
        if not name.startswith("_") and isinstance(value, (bool, int, float, str, type(None))):
            state[name] = np.float64(value) if isinstance(value, float) else value
    state.update(_init_args=(), _init_kwargs=init_kwargs)
    return state


def record(module: torch.nn.Module, module_src: str, init_kwargs: dict | None = None) -> Persistent:
    """``module`` and its submodules as persistent objects (scalegan's class names are NVlabs')."""
    children = {name: record(child, module_src) for name, child in module._modules.items()}
    if type(module).__name__ == "DiscriminatorEpilogue":  # NVlabs' mbstd is a submodule without tensors
        children["mbstd"] = Persistent("MinibatchStdLayer", _module_state(torch.nn.Module(), {}, {}), module_src)
    return Persistent(type(module).__name__, _module_state(module, children, init_kwargs or {}), module_src)


def g_kwargs(cfg) -> dict:
    """Generator arguments as stylegan2-ada-pytorch's train.py + training_loop.py build them."""
    clamp = int(cfg.conv_clamp) if cfg.conv_clamp else None
    return dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
                synthesis_kwargs=EasyDict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                          num_fp16_res=4, conv_clamp=clamp),
                c_dim=cfg.n_classes, img_resolution=cfg.resolution, img_channels=cfg.img_channels)


def d_kwargs(cfg) -> dict:
    clamp = int(cfg.conv_clamp) if cfg.conv_clamp else None
    return dict(block_kwargs=EasyDict(), mapping_kwargs=EasyDict(num_layers=cfg.d_mapping_layers),
                epilogue_kwargs=EasyDict(mbstd_group_size=cfg.mbstd_group), channel_base=cfg.channel_base,
                channel_max=cfg.channel_max, num_fp16_res=4, conv_clamp=clamp, architecture=cfg.d_architecture,
                c_dim=cfg.n_classes, img_resolution=cfg.resolution, img_channels=cfg.img_channels)


def module_src(marker) -> str:
    return f"open({str(marker)!r}, 'w').write('module_src ran')\nraise SystemExit('module_src ran')\n"


def write_network_pickle(path, G, D, G_ema, protocol: int = 3, marker=None, edit=None) -> bytes:
    """Write ``G``, ``D``, ``G_ema`` as a stylegan2-ada-pytorch ``network-snapshot-*.pkl``; ``edit(data)`` may
    change the recorded objects first."""
    src = module_src(marker or path.with_suffix(".ran"))
    cfg = G.config
    data = dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="data.zip",
                                         use_labels=bool(cfg.n_classes), max_size=1000, xflip=False,
                                         resolution=cfg.resolution),
                G=record(G, src, g_kwargs(cfg)), D=record(D, src, d_kwargs(cfg)),
                G_ema=record(G_ema, src, g_kwargs(cfg)),
                augment_pipe=Persistent("AugmentPipe", _module_state(_augment_pipe(), {}, dict(xflip=1)), src))
    if edit is not None:
        edit(data)
    with nvlabs_modules():
        raw = pickle.dumps(data, protocol=protocol)
    if protocol < 4:  # as numpy 1.x names its scalars' constructor
        raw = raw.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
    path.write_bytes(raw)
    return raw


def _augment_pipe() -> torch.nn.Module:
    pipe = torch.nn.Module()
    pipe.register_buffer("p", torch.tensor(0.3))
    pipe.xflip, pipe.imgfilter_bands = 1.0, [1, 1, 1, 1]
    return pipe


def pickle_globals(raw: bytes) -> set[str]:
    return {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}


# ------------------------------------------------------------------------------ models
def trained_like(conditional: bool, seed: int = 0):
    """A tiny (G, D, G_ema) in eval mode with every tensor non-trivial (noise strengths, biases and w_avg drawn),
    G_ema != G. The writer's class centres are its w_avg, as NVlabs' truncation has them."""
    if conditional:  # 32 px grey, 5 classes, resnet D, no clamp
        G, D = scalegan.create_model("stylegan2-fmnist", **tiny_overrides("stylegan2-fmnist"))
    else:  # 32 px RGB, orig D, conv_clamp 256
        G, D = scalegan.create_model("stylegan2-cifar", **{**tiny_overrides("stylegan2-fmnist"), "n_classes": 0})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in (G, D):
            for name, p in net.named_parameters():
                if name.endswith(("noise_strength", "bias")):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        G.mapping.w_avg.copy_(torch.randn(G.mapping.w_avg.shape, generator=g))
        G_ema = copy.deepcopy(G)
        for p in G_ema.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
        for net in (G, G_ema):
            if conditional:
                net.mapping.w_avg_class.copy_(net.mapping.w_avg.expand_as(net.mapping.w_avg_class))
    return G.eval(), D.eval(), G_ema.eval()


def same_images(A, B, n: int = 4):
    cfg = A.config
    z = torch.randn(n, cfg.z_dim, generator=torch.Generator().manual_seed(1))
    y = torch.arange(n) % cfg.n_classes if cfg.n_classes else None
    with torch.no_grad():
        for psi in (None, 1.0, 0.7, 0.0):
            a, b = A(z, y, truncation=psi, noise_mode="const"), B(z, y, truncation=psi, noise_mode="const")
            assert torch.equal(a, b), (psi, (a - b).abs().max())
        assert not torch.equal(A(z, y, truncation=0.7), A(z, y))  # the checks above can tell psi apart


# ------------------------------------------------------------------------------ conversion
@pytest.mark.parametrize("conditional", [True, False], ids=["conditional", "unconditional"])
@pytest.mark.parametrize("protocol", [3, 4])
def test_pickle_converts_to_the_generator_that_wrote_it(tmp_path, capsys, conditional, protocol):
    G, D, G_ema = trained_like(conditional)
    path, marker = tmp_path / "network-snapshot-000100.pkl", tmp_path / "module_src.ran"
    raw = write_network_pickle(path, G, D, G_ema, protocol=protocol, marker=marker)
    assert module_src(marker).encode() in raw  # the code NVlabs' loader would exec is in the file
    if protocol == 3:  # the fixture writes the globals the released files hold
        assert {"torch_utils.persistence _reconstruct_persistent_obj", "dnnlib.util EasyDict",
                "torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter", "torch.storage _load_from_bytes",
                "collections OrderedDict", "builtins set", "numpy.core.multiarray scalar",
                "numpy dtype"} == pickle_globals(raw)

    data = read_network_pickle(path)
    assert set(data) == {"training_set_kwargs", "G", "D", "G_ema", "augment_pipe"}
    assert isinstance(data["augment_pipe"], RecordedObject) and data["training_set_kwargs"]["resolution"] == 32
    assert data["G_ema"].state["_init_kwargs"]["mapping_kwargs"] == {"num_layers": G.config.mapping_layers}
    for weights, writer in (("G_ema", G_ema), ("G", G)):
        converted = generator_from_pickle(data, weights)
        assert converted.config == G.config and not converted.training
        ours, theirs = converted.state_dict(), writer.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        same_images(converted, writer)
    assert not marker.exists() and capsys.readouterr() == ("", "")  # module_src never ran


def test_discriminator_converts_too(tmp_path):
    for conditional in (True, False):
        G, D, G_ema = trained_like(conditional)
        write_network_pickle(tmp_path / "net.pkl", G, D, G_ema)
        converted = discriminator_from_pickle(read_network_pickle(tmp_path / "net.pkl"))
        ours, theirs = converted.state_dict(), D.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        images = G_ema(torch.randn(4, G.config.z_dim), torch.arange(4) % 5 if conditional else None)
        y = torch.arange(4) % 5 if conditional else None
        with torch.no_grad():
            assert torch.equal(converted(images, y), D(images, y))


def test_class_centers_mean(tmp_path):
    G, D, G_ema = trained_like(True)
    write_network_pickle(tmp_path / "net.pkl", G, D, G_ema)
    converted = convert_pickle(tmp_path / "net.pkl", class_centers="mean")
    z = torch.randn(4096, G.config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        means = torch.stack([G_ema.mapping(z, torch.eye(5)[k].expand(4096, -1), track=False).mean(0)
                             for k in range(5)])
    centers = converted.mapping.w_avg_class
    assert torch.allclose(centers, means, atol=1e-6) and not torch.allclose(centers[0], centers[1])
    assert not torch.allclose(centers, G_ema.mapping.w_avg_class)
    z, y = torch.randn(2, G.config.z_dim), torch.tensor([0, 3])
    with torch.no_grad():  # psi = 1 does not use the centres; psi < 1 pulls towards the class's own
        assert torch.equal(converted(z, y), G_ema(z, y))
        assert not torch.allclose(converted(z, y, truncation=0.5), G_ema(z, y, truncation=0.5))
    with pytest.raises(ConvertError, match="class_centers"):
        convert_pickle(tmp_path / "net.pkl", class_centers="median")


def test_load_convert_and_sample_cli(tmp_path):
    G, D, G_ema = trained_like(True)
    path = tmp_path / "cifar10.pkl"
    write_network_pickle(path, G, D, G_ema)
    assert detect_format(path) == "stylegan2-ada-pytorch"
    loaded, info = scalegan.load(path)  # converted in memory
    assert info.family == "stylegan2" and info.n_classes == 5 and info.source.startswith("stylegan2-ada-pytorch:")
    same_images(loaded, G_ema)
    same_images(scalegan.load(path, weights="G")[0], G)

    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out), "--device", "cpu"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["converted_from"]["format"] == "stylegan2-ada-pytorch"
    same_images(scalegan.load(out)[0], G_ema)
    npz = tmp_path / "s.npz"
    assert main(["sample", str(out), "--class", "3", "--n", "2", "--truncation", "0.7", "--seed", "5",
                 "--npz", str(npz)]) == 0
    expected = scalegan.sample(G_ema, 2, y=3, truncation=0.7, seed=5)
    assert np.array_equal(np.load(npz)["x"], to_hwc(expected)) and np.load(npz)["y"].tolist() == [3, 3]


# ------------------------------------------------------------------------------ refusals: no code runs
class Evil:
    """An object whose unpickling would run ``call(*args)``: what a hostile pickle holds."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _evils(marker):
    return {
        "os.system": Evil(__import__("os").system, f"touch {marker}"),
        "builtins.eval": Evil(eval, f"open({str(marker)!r}, 'w')"),
        "io.open": Evil(open, str(marker), "w"),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "io.open", "torch.nn.Linear", "argparse.Namespace"])
def test_any_other_global_is_refused_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "ran"
    if kind == "torch.nn.Linear":  # a module without persistence: torch classes are code too
        evil = torch.nn.Linear(2, 2)
    elif kind == "argparse.Namespace":  # any other class
        evil = __import__("argparse").Namespace(a=1)
    else:
        evil = _evils(marker)[kind]
        pickle.loads(pickle.dumps(evil))  # control: an ordinary unpickler runs it
        assert marker.exists()
        marker.unlink()

    def plant(data):  # deep inside G_ema's synthesis network
        data["G_ema"].state["_modules"]["synthesis"].state["payload"] = evil

    G, D, G_ema = trained_like(False)
    write_network_pickle(tmp_path / "net.pkl", G, D, G_ema, edit=plant)
    with pytest.raises(ConvertError, match="refusing the global") as error:
        convert(tmp_path / "net.pkl")
    assert {"os.system": "posix.system", "builtins.eval": "builtins.eval", "io.open": "io.open",
            "torch.nn.Linear": "torch.nn.modules.linear.Linear", "argparse.Namespace": "argparse.Namespace"}[kind] \
        in str(error.value)
    assert not marker.exists()


def test_truncated_damaged_and_foreign_pickles_are_clear_errors(tmp_path):
    G, D, G_ema = trained_like(False)
    raw = write_network_pickle(tmp_path / "net.pkl", G, D, G_ema)
    for name, data in (("half.pkl", raw[:len(raw) // 2]), ("tail.pkl", raw[:-1]), ("empty.pkl", b""),
                       ("noise.pkl", bytes(range(256)) * 4)):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConvertError, match="truncated or damaged"):
            convert(tmp_path / name)
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ConvertError, match="not a stylegan2-ada-pytorch network pickle"):
        convert(tmp_path / "list.pkl")
    (tmp_path / "tf.pkl").write_bytes(b"\x80\x03cdnnlib.tflib.network\nNetwork\n)\x81.")  # TF StyleGAN2 pickles
    with pytest.raises(ConvertError, match="legacy.py"):
        convert(tmp_path / "tf.pkl")


def _set(path: list[str], value):
    """An edit that sets G_ema's (or D's) recorded constructor argument at ``path``."""
    def edit(data):
        net = data["D"] if path[0] == "D" else data["G_ema"]
        target = net.state["_init_kwargs"]
        for key in path[1:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize("path, value, message", [
    (["G", "synthesis_kwargs", "architecture"], "resnet", "`orig` and `resnet` generators are not implemented"),
    (["G", "synthesis_kwargs", "architecture"], "orig", "`orig` and `resnet` generators are not implemented"),
    (["G", "synthesis_kwargs", "use_noise"], False, "use_noise"),
    (["G", "mapping_kwargs", "layer_features"], 7, "layer_features"),
    (["G", "init_res"], [4, 4], "unknown arguments init_res"),
    (["G", "channel_base"], 256, "stylegan3 repository"),
])
def test_unsupported_generators_are_refused(tmp_path, path, value, message):
    G, D, G_ema = trained_like(False)
    write_network_pickle(tmp_path / "net.pkl", G, D, G_ema, edit=_set(path, value))
    with pytest.raises(ConvertError, match=message):
        convert(tmp_path / "net.pkl")


def test_unsupported_discriminator_is_refused_but_g_converts(tmp_path):
    G, D, G_ema = trained_like(False)
    write_network_pickle(tmp_path / "net.pkl", G, D, G_ema, edit=_set(["D", "architecture"], "skip"))
    data = read_network_pickle(tmp_path / "net.pkl")
    with pytest.raises(ConvertError, match="`skip` is not implemented"):
        discriminator_from_pickle(data)
    same_images(generator_from_pickle(data), G_ema)


def test_missing_and_unknown_tensors_are_named(tmp_path):
    G, D, G_ema = trained_like(True)

    def drop(data):
        del data["G_ema"].state["_modules"]["mapping"].state["_buffers"]["w_avg"]
        data["G_ema"].state["_parameters"]["extra"] = torch.nn.Parameter(torch.zeros(2), requires_grad=False)

    write_network_pickle(tmp_path / "net.pkl", G, D, G_ema, edit=drop)
    with pytest.raises(ConvertError, match=r"missing keys mapping\.w_avg.*unexpected keys extra"):
        convert(tmp_path / "net.pkl")
